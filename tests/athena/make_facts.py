#!/usr/bin/env python3
"""A synthetic, deterministic set of sales facts (docs/sales.md, "Facts"), written the way Firehose
delivers them: JSON objects one a line, over several files (one gzip'd), a few facts twice.

    make_facts.py --out DIR [--seed 7] [--from 2026-11-01 --to 2026-11-30 --tz +08:00]

The facts run from ~75 days before the period to 3 days after it, so the previous period and the
buyers' history are there. Files go under `dt=<UTC delivery day>/` as the template's Firehose writes
them (delivery minutes to most of a day after the fact's `at`). What they hold, besides a few thousand ordinary sessions on 12 machines:
CNY, HKD and USD; pay-first, purchase-first and refused payments; refunds issued / succeeded / failed /
still pending, for every reason; failed vends, unconfirmed vends and other anomalies; planogram slots
that sell out (`stock_after` 0) and restock, slots outside a planogram (no sku); a machine moved to
another district mid-period; a product renamed mid-period; buyers who are new, regular, loyal, lapsing
or anonymous; and hand-made edges: facts at both ends of the period, a district whose net is negative
(floor, not truncation), ties in ranks, spend, items and "latest fact", a sale that sells a slot out
just before the end, duplicated facts.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import random
import sys

from common import COLUMNS, DAY_MS, Period

MIN_MS = 60_000
CATALOGUE = {  # sku -> (product, price, currency)
    "SKU-COLA": ("Cola 330ml", 350, "CNY"),
    "SKU-WATER": ("Mineral water", 200, "CNY"),
    "SKU-CHIPS": ("Potato chips", 600, "CNY"),
    "SKU-COFFEE": ("Iced coffee", 800, "CNY"),
    "SKU-TEA": ("Green tea", 450, "CNY"),  # renamed mid-period; sold by one machine only
    "SKU-GUM": ("Gum", 300, "CNY"),
    "SKU-LEMON-TEA": ("Lemon tea", 900, "HKD"),
    "SKU-HK-WATER": ("Water", 700, "HKD"),
    "SKU-SNACK": ("Egg roll", 1200, "HKD"),
}
RENAMED = ("SKU-TEA", "Jasmine green tea", "2026-11-15")


def device_plan():
    """device -> (currency, planogram {slot: sku}, free slots {slot: price}, places [(from_date, district, location)])."""
    plano = lambda skus: {f"A{i + 1}": s for i, s in enumerate(skus)}
    return {
        "VM-01": ("CNY", plano(["SKU-COLA", "SKU-WATER", "SKU-CHIPS"]), {"B1": 500}, [("", "Xuhui", "Metro L1 exit 3")]),
        "VM-02": ("CNY", plano(["SKU-COLA", "SKU-COFFEE", "SKU-GUM"]), {}, [("", "Xuhui", "Library")]),
        "VM-03": ("CNY", plano(["SKU-WATER", "SKU-CHIPS"]), {"B1": 400, "B2": 250}, [("", "Xuhui", "Gym")]),
        "VM-04": ("CNY", plano(["SKU-TEA", "SKU-COLA", "SKU-WATER"]), {}, [("", "Pudong", "Tower 2 lobby")]),
        "VM-05": ("CNY", plano(["SKU-COFFEE", "SKU-CHIPS"]), {"B1": 500}, [("", "Pudong", None)]),
        "VM-06": ("CNY", plano(["SKU-GUM", "SKU-WATER"]), {}, [("", "Jing'an", None)]),
        "VM-07": ("CNY", plano(["SKU-COLA", "SKU-CHIPS"]), {}, [("", "Xuhui", "Campus gate"),
                                                          ("2026-11-12", "Minhang", "Mall B1")]),
        "VM-08": ("HKD", plano(["SKU-LEMON-TEA", "SKU-HK-WATER", "SKU-SNACK"]), {}, [("", "Central", "Pier 7")]),
        "VM-09": ("HKD", plano(["SKU-LEMON-TEA", "SKU-SNACK"]), {"B1": 1000}, [("", "Central", "IFC L2")]),
    }


def key_of(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:16]


class Gen:
    def __init__(self, seed: int, period: Period):
        self.rng = random.Random(seed)
        self.period = period
        self.facts: list[dict] = []
        self.n = 0
        self.plan = device_plan()
        self.stock = {}  # (device, slot) -> items left
        self.restock_at = {}  # (device, slot) -> when a sold-out slot is refilled

    def next_id(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n:06d}"

    def place(self, device: str, at: int):
        day = _date(at + self.period.offset_minutes * MIN_MS)
        out = None
        for since, district, location in self.plan[device][3]:
            if since <= day:
                out = (district, location)
        return out

    def fact(self, base: dict, **kw) -> dict:
        f = {c: None for c in COLUMNS}
        f.update(base)
        f.update(kw)
        self.facts.append(f)
        return f

    def available(self, device: str, at: int):
        """(slot, sku, product, price) the machine can sell at `at`."""
        _, plano, free, _ = self.plan[device]
        out = []
        for slot, sku in plano.items():
            k = (device, slot)
            if self.stock.get(k, 1) == 0:
                if at < self.restock_at[k]:
                    continue
                self.stock[k] = self.rng.randint(4, 8)
            self.stock.setdefault(k, self.rng.randint(4, 8))
            product, price, _ = CATALOGUE[sku]
            if sku == RENAMED[0] and _date(at + self.period.offset_minutes * MIN_MS) >= RENAMED[2]:
                product = RENAMED[1]
            out.append((slot, sku, product, price))
        for slot, price in free.items():
            out.append((slot, None, None, price))
        return out

    def sell(self, base, at, slot, sku, product, price, request):
        device = base["device"]
        stock_after = None
        if sku is not None:
            k = (device, slot)
            self.stock[k] -= 1
            stock_after = self.stock[k]
            if stock_after == 0:
                self.restock_at[k] = at + self.rng.randint(1, 40) * 3_600_000 + self.rng.randint(0, 3_599_999)
        return self.fact(base, id=f"sale:{base['session']}:{request}", kind="sale", at=at, amount=price,
                         request_id=request, slot=slot, sku=sku, product=product, stock_after=stock_after)

    def refund(self, base, at, amount, reason):
        rid = self.next_id("rf-")
        self.fact(base, id=f"refund:{rid}:issued", kind="refund", at=at, amount=amount, refund_id=rid,
                  reason=reason, status="issued")
        r = self.rng.random()
        if r < 0.05:
            self.fact(base, id=f"refund:{rid}:failed", kind="refund", at=at + 5 * MIN_MS, amount=amount,
                      refund_id=rid, reason=reason, status="failed")
            self.fact(base, id=f"anomaly:{base['session']}:refund_failed:{rid}", kind="anomaly",
                      at=at + 5 * MIN_MS, amount=0, reason="refund_failed")
        elif r < 0.98:
            self.fact(base, id=f"refund:{rid}:succeeded", kind="refund", at=at + 5 * MIN_MS, amount=amount,
                      refund_id=rid, reason=reason, status="succeeded")
        # else: still pending (issued only)

    def session(self, device: str, at: int, buyer: str | None, flow: str | None = None):
        cur = self.plan[device][0]
        district, location = self.place(device, at)
        trade = self.next_id("T")
        r = self.rng.random()
        goods = self.available(device, at)
        flow = flow or ("refused" if r < 0.04 else "purchase_first" if r < 0.34 and goods else "pay_first")
        session = f"order-{trade}" if flow == "purchase_first" else f"pay-{trade}"
        base = {"device": device, "district": district, "location": location, "session": session,
                "flow": flow, "buyer_key": buyer, "currency": cur}
        t = at
        if flow == "refused":
            amount = self.rng.choice([500, 1000, 2000])
            self.fact(base, id=f"payment:{trade}", kind="payment", at=t, amount=amount, trade_no=trade)
            why = self.rng.choice(["machine_offline", "currency_mismatch", "session_busy"])
            self.refund(base, t + 30_000, amount, f"refused:{why}")
            return
        if flow == "purchase_first":
            slot, sku, product, price = self.rng.choice(goods)
            over = self.rng.random() < 0.04
            paid = price + (self.rng.choice([50, 100, 500]) if over else 0)
            self.fact(base, id=f"payment:{trade}", kind="payment", at=t, amount=paid, trade_no=trade)
            request = self.next_id("rq-")
            t += 20_000
            if over:
                self.refund(base, t, paid - price, "over_payment")
            self.vend(base, t, slot, sku, product, price, request)
            return
        paid = self.rng.choice([1000, 2000, 5000] if cur == "CNY" else [2000, 5000, 10000])
        self.fact(base, id=f"payment:{trade}", kind="payment", at=t, amount=paid, trade_no=trade)
        balance = paid
        for _ in range(self.rng.choice([1, 1, 1, 2, 2, 3])):
            goods = self.available(device, t)
            affordable = [g for g in goods if g[3] <= balance]
            if not affordable:
                break
            slot, sku, product, price = self.rng.choice(affordable)
            t += self.rng.randint(5_000, 40_000)
            request = self.next_id("rq-")
            balance -= price
            if not self.vend(base, t, slot, sku, product, price, request):
                balance += price
        if self.rng.random() < 0.01 and len(goods) > 0:  # a late report of an earlier vend
            self.fact(base, id=f"anomaly:{session}:late_vend_report:{self.next_id('rq-')}:true",
                      kind="anomaly", at=t + 1000, amount=0, reason="late_vend_report")
        if balance > 0:
            self.refund(base, t + 60_000, balance, "remainder")

    def vend(self, base, t, slot, sku, product, price, request) -> bool:
        """A sale, or a failed / unconfirmed vend whose price is refunded; True for a sale."""
        r = self.rng.random()
        if r < 0.04:
            self.fact(base, id=f"vend_failed:{base['session']}:{request}", kind="vend_failed", at=t,
                      amount=price, request_id=request, slot=slot, sku=sku, product=product)
            if base["flow"] == "purchase_first":
                self.refund(base, t + 10_000, price, "failed_delivery")
            return False
        if r < 0.06:
            self.fact(base, id=f"anomaly:{base['session']}:unconfirmed_vend:{request}", kind="anomaly",
                      at=t + 120_000, amount=0, request_id=request, reason="unconfirmed_vend")
            if base["flow"] == "purchase_first":
                self.refund(base, t + 130_000, price, "unconfirmed")
            return False
        if r < 0.065 and sku is not None:
            self.fact(base, id=f"anomaly:{base['session']}:stock_mismatch:{slot}:{request}", kind="anomaly",
                      at=t, amount=0, request_id=request, slot=slot, reason="stock_mismatch")
        self.sell(base, t, slot, sku, product, price, request)
        return True


def _date(ms: int) -> str:
    import datetime as dt

    return (dt.date(1970, 1, 1) + dt.timedelta(days=ms // DAY_MS)).isoformat()


HOUR_WEIGHTS = [0, 0, 0, 0, 0, 0, 1, 3, 5, 4, 3, 4, 8, 7, 4, 3, 4, 5, 8, 7, 5, 3, 2, 1]


def generate(seed: int, period: Period) -> list[dict]:
    g = Gen(seed, period)
    rng = g.rng
    first_day = period.start // DAY_MS - period.days - 45
    last_day = period.end // DAY_MS + 3
    off = period.offset_minutes * MIN_MS
    cny_devices = [d for d, p in g.plan.items() if p[0] == "CNY"]
    hkd_devices = [d for d, p in g.plan.items() if p[0] == "HKD"]

    # Buyers: (key, home devices, first day, last day, chance of a visit on a day)
    buyers = []
    for i in range(90):
        home = [rng.choice(cny_devices if i < 75 else hkd_devices)]
        home.append(rng.choice(cny_devices if i < 75 else hkd_devices))
        if i % 9 == 0:
            chance, since, until = 0.45, first_day, last_day  # loyal
        elif i % 9 in (1, 2):
            chance, since, until = 0.13, first_day, last_day  # regular
        elif i % 9 == 3:  # new in the period
            chance, since, until = 0.2, period.start // DAY_MS + rng.randint(2, 20), last_day
        elif i % 9 == 4:  # lapsing: gone before the period's last 14 days
            chance, since, until = 0.2, first_day, period.end // DAY_MS - rng.randint(15, 45)
        else:
            chance, since, until = 0.04, first_day + rng.randint(0, 60), last_day
        buyers.append((key_of(f"buyer-{seed}-{i}"), home, since, until, chance))

    def moment(day: int) -> int:
        hour = rng.choices(range(24), HOUR_WEIGHTS)[0]
        return day * DAY_MS - off + hour * 3_600_000 + rng.randint(0, 3_599_999)

    for day in range(first_day, last_day + 1):
        visits = []
        for device in g.plan:
            for _ in range(rng.randint(1, 4)):
                visits.append((moment(day), device, None))
        for key, home, since, until, chance in buyers:
            if since <= day <= until and rng.random() < chance:
                visits.append((moment(day), rng.choice(home), key))
        visits.sort()
        for at, device, key in visits:
            g.session(device, at, key)

    edges(g, period)
    return g.facts


def edges(g: Gen, p: Period):
    """Hand-made facts at the places where a rule is easy to get wrong."""
    cny = lambda device, district, location, session, flow, buyer=None: {
        "device": device, "district": district, "location": location, "session": session, "flow": flow,
        "buyer_key": buyer, "currency": "CNY"}
    # A district whose only machine saw a payment in the previous period and its reversal in this one:
    # net −1234 over 1 machine × days: floor(−1234 / 30) = −42, where truncation would say −41.
    b = cny("VM-10", "Harbour", "Ferry pier", "pay-TEDGE1", "pay_first")
    g.fact(b, id="payment:TEDGE1", kind="payment", at=p.start - 2 * DAY_MS, amount=1234, trade_no="TEDGE1")
    g.fact(b, id="refund:rf-edge-1:issued", kind="refund", at=p.start + 2 * DAY_MS, amount=1234,
           refund_id="rf-edge-1", reason="reversal", status="issued")
    g.fact(b, id="refund:rf-edge-1:succeeded", kind="refund", at=p.start + 2 * DAY_MS + MIN_MS, amount=1234,
           refund_id="rf-edge-1", reason="reversal", status="succeeded")
    # The period's ends: a sale at the first instant (in), one just before the end that sells the slot
    # out (counted until the end), one at the end (out), one just before the start (previous period).
    b = cny("VM-06", "Jing'an", None, "order-TEDGE2", "purchase_first", key_of("edge-buyer-a"))
    g.fact(b, id="payment:TEDGE2", kind="payment", at=p.start, amount=300, trade_no="TEDGE2")
    g.fact(b, id="sale:order-TEDGE2:rq-edge-2", kind="sale", at=p.start, amount=300, request_id="rq-edge-2",
           slot="C9", sku="SKU-GUM", product="Gum", stock_after=3)
    b = cny("VM-06", "Jing'an", None, "order-TEDGE3", "purchase_first", key_of("edge-buyer-b"))
    g.fact(b, id="payment:TEDGE3", kind="payment", at=p.end - 90 * MIN_MS, amount=300, trade_no="TEDGE3")
    g.fact(b, id="sale:order-TEDGE3:rq-edge-3", kind="sale", at=p.end - 90 * MIN_MS, amount=300,
           request_id="rq-edge-3", slot="C9", sku="SKU-GUM", product="Gum", stock_after=0)
    b = cny("VM-06", "Jing'an", None, "order-TEDGE4", "purchase_first", key_of("edge-buyer-b"))
    g.fact(b, id="payment:TEDGE4", kind="payment", at=p.end, amount=300, trade_no="TEDGE4")
    g.fact(b, id="sale:order-TEDGE4:rq-edge-4", kind="sale", at=p.end, amount=300, request_id="rq-edge-4",
           slot="C9", sku="SKU-GUM", product="Gum", stock_after=5)
    b = cny("VM-06", "Jing'an", None, "order-TEDGE5", "purchase_first", key_of("edge-buyer-a"))
    g.fact(b, id="payment:TEDGE5", kind="payment", at=p.start - 1, amount=300, trade_no="TEDGE5")
    g.fact(b, id="sale:order-TEDGE5:rq-edge-5", kind="sale", at=p.start - 1, amount=300, request_id="rq-edge-5",
           slot="C9", sku="SKU-GUM", product="Gum", stock_after=4)
    # The moved machine's last facts in the period share one instant: an old session's refund (Xuhui)
    # and a new session's payment (Minhang). The greatest id ("refund:…") names the machine's place.
    at = p.end - 30 * MIN_MS
    b = cny("VM-07", "Xuhui", "Campus gate", "pay-TEDGE6", "pay_first")
    g.fact(b, id="refund:rf-edge-6:issued", kind="refund", at=at, amount=150, refund_id="rf-edge-6",
           reason="remainder", status="issued")
    b = cny("VM-07", "Minhang", "Mall B1", "pay-TEDGE7", "pay_first")
    g.fact(b, id="payment:TEDGE7", kind="payment", at=at, amount=1000, trade_no="TEDGE7")
    # USD: two districts alike in every number (rank falls to the name), two buyers with the same spend
    # (big_spender falls to the key), two items with the same revenue and units (order falls to the sku).
    for device, district in (("VM-11", "Airport-B"), ("VM-12", "Airport")):
        for i, (buyer, sku) in enumerate(((key_of("usd-z"), "SKU-USD-B"), (key_of("usd-y"), "SKU-USD-A"))):
            session = f"order-TUSD{device[-2:]}{i}"
            b = {"device": device, "district": district, "location": None, "session": session,
                 "flow": "purchase_first", "buyer_key": buyer, "currency": "USD"}
            at = p.start + (5 + i) * DAY_MS + 7 * 3_600_000
            g.fact(b, id=f"payment:TUSD{device[-2:]}{i}", kind="payment", at=at, amount=250,
                   trade_no=f"TUSD{device[-2:]}{i}")
            g.fact(b, id=f"sale:{session}:rq-usd-{i}", kind="sale", at=at + 10_000, amount=250,
                   request_id=f"rq-usd-{i}", slot=f"U{i}", sku=sku, product=f"Snack {sku[-1]}", stock_after=0)


def write(facts: list[dict], out: str, seed: int) -> int:
    """As Firehose delivers them to S3: under `dt=<UTC delivery day>/`, a few files a day (some gzip'd),
    in no order. Delivery takes minutes, sometimes most of a day (stream retries); ~0.5% of the facts
    are delivered a second time, some of them on a later day."""
    import shutil

    rng = random.Random(seed + 1)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)

    def delay() -> int:
        return rng.randint(20_000, 15 * MIN_MS) if rng.random() < 0.98 else rng.randint(1, 23 * 60) * MIN_MS

    by_day: dict[str, list[dict]] = {}
    for f in facts:
        copies = 2 if rng.random() < 0.005 else 1
        for _ in range(copies):
            by_day.setdefault(_date(f["at"] + delay()), []).append(f)
    files = 0
    for day, rows in sorted(by_day.items()):
        rng.shuffle(rows)
        folder = os.path.join(out, f"dt={day}")
        os.makedirs(folder)
        parts = 3
        for i in range(parts):
            chunk = rows[i::parts]
            if not chunk:
                continue
            text = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in chunk)
            if i == 0 and rng.random() < 0.3:
                with open(os.path.join(folder, f"facts-{i}.json.gz"), "wb") as fh:
                    fh.write(gzip.compress(text.encode(), mtime=0))
            else:
                with open(os.path.join(folder, f"facts-{i}.json"), "w", encoding="utf-8") as fh:
                    fh.write(text)
            files += 1
    return files


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="directory to (re)write the record files in (emptied first)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--from", dest="frm", default="2026-11-01")
    ap.add_argument("--to", default="2026-11-30")
    ap.add_argument("--tz", default="+08:00")
    a = ap.parse_args()
    facts = generate(a.seed, Period(a.frm, a.to, a.tz))
    ids = [f["id"] for f in facts]
    if len(ids) != len(set(ids)):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise SystemExit(f"make_facts: ids not unique: {dup}")
    files = write(facts, a.out, a.seed)
    print(f"make_facts: {len(facts)} facts, {files} files in {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
