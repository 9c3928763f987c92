#!/usr/bin/env python3
"""A plain-Python reading of docs/sales.md: the report's seven sections over a list of facts, as the
JSON of `vendpay report --format json`. No SQL, no cleverness: a second opinion for the Athena queries
(tests/athena/crosscheck.py --expect reference) written from the text alone.

    reference.py --records DIR --from 2026-11-01 --to 2026-11-30 [--tz +08:00] [--out FILE]

Where docs/sales.md leaves room, the choices are those listed in infra/athena/README.md ("Readings").
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from decimal import Decimal

from common import DAY_MS, Period, dedupe, load_records, round_half_away

FLOW_ORDER = ["pay_first", "purchase_first", "refused"]
TAGS = ["new", "regular", "loyal", "big_spender", "lapsed"]


def money(minor: int, currency: str) -> dict:
    return {"minor": minor, "currency": currency}


def latest(facts):
    """The latest fact: greatest `at`, ties by greatest id."""
    return max(facts, key=lambda f: (f["at"], f["id"]))


def is_issued_refund(f) -> bool:
    return f["kind"] == "refund" and f.get("status") == "issued"


def net_of(facts) -> int:
    return sum(f["amount"] for f in facts if f["kind"] == "payment") - sum(
        f["amount"] for f in facts if is_issued_refund(f)
    )


def item_key(f):
    """(sku, slot): the sku, or the slot when the sale had none."""
    return (f["sku"], None) if f.get("sku") is not None else (None, f.get("slot"))


def item_name(key) -> str:
    return key[0] if key[0] is not None else (key[1] or "")


def report(records: list[dict], period: Period) -> dict:
    facts = dedupe(records)
    start, end, days = period.start, period.end, period.days
    cur = [f for f in facts if start <= f["at"] < end]
    prev = [f for f in facts if period.prev_start <= f["at"] < start]

    # 1. machines
    by_device = defaultdict(list)
    for f in cur:
        by_device[f["device"]].append(f)
    machines = []
    for device in sorted(by_device):
        where = latest(by_device[device])
        by_cur = defaultdict(list)
        for f in by_device[device]:
            by_cur[f["currency"]].append(f)
        for c in sorted(by_cur):
            fs = by_cur[c]
            sales = [f for f in fs if f["kind"] == "sale"]
            revenue = sum(f["amount"] for f in sales)
            gross = sum(f["amount"] for f in fs if f["kind"] == "payment")
            refunds = sum(f["amount"] for f in fs if is_issued_refund(f))
            baskets = len({f["session"] for f in sales})
            machines.append({
                "device": device, "district": where["district"], "location": where.get("location"),
                "currency": c, "sales": len(sales), "revenue": money(revenue, c),
                "gross": money(gross, c), "refunds": money(refunds, c),
                "net": money(gross - refunds, c),
                "average_basket": money(revenue // baskets if baskets else 0, c),
            })

    # 2. districts
    by_dc = defaultdict(list)
    for f in cur:
        by_dc[(f["district"], f["currency"])].append(f)
    prev_dc = defaultdict(list)
    for f in prev:
        prev_dc[(f["district"], f["currency"])].append(f)
    districts = []
    for (d, c), fs in by_dc.items():
        n_machines = len({f["device"] for f in fs})
        net = net_of(fs)
        previous_net = net_of(prev_dc.get((d, c), []))
        districts.append({
            "district": d, "currency": c, "machines": n_machines, "net": money(net, c),
            "net_per_machine_day": money(net // (n_machines * days), c),
            "previous_net": money(previous_net, c), "change": money(net - previous_net, c),
        })
    for c in {r["currency"] for r in districts}:
        rows = [r for r in districts if r["currency"] == c]
        rows.sort(key=lambda r: (-r["net_per_machine_day"]["minor"], -r["net"]["minor"], r["district"]))
        for i, r in enumerate(rows):
            r["rank"] = i + 1
    districts.sort(key=lambda r: (r["currency"], r["rank"]))
    districts = [{k: r[k] for k in ("district", "currency", "machines", "net", "net_per_machine_day",
                                    "previous_net", "change", "rank")} for r in districts]

    # 3. items
    sales = [f for f in cur if f["kind"] == "sale"]
    by_slot = defaultdict(list)  # (device, slot) -> its sales in the period, any item
    for f in sales:
        by_slot[(f["device"], f.get("slot"))].append(f)
    sold_out_ms = defaultdict(int)  # (item, currency) -> ms
    for fs in by_slot.values():
        fs.sort(key=lambda f: (f["at"], f["id"]))
        for i, f in enumerate(fs):
            if f.get("stock_after") == 0:
                until = fs[i + 1]["at"] if i + 1 < len(fs) else end
                sold_out_ms[(item_key(f), f["currency"])] += until - f["at"]
    by_item = defaultdict(list)
    for f in sales:
        by_item[(item_key(f), f["currency"])].append(f)
    items = []
    for (key, c), fs in by_item.items():
        units = len(fs)
        slots = len({(f["device"], f.get("slot")) for f in fs})
        items.append({
            "sku": key[0], "slot": key[1], "product": latest(fs).get("product"), "currency": c,
            "units": units, "revenue": money(sum(f["amount"] for f in fs), c), "slots": slots,
            "units_per_slot_day": round_half_away(units, slots * days, 2),
            "hours_sold_out": round_half_away(sold_out_ms[(key, c)], 3_600_000, 1),
        })
    items.sort(key=lambda r: (r["currency"], -r["revenue"]["minor"], -r["units"],
                              item_name((r["sku"], r["slot"])), r["sku"] is None))

    # 4. hours
    counts = defaultdict(int)
    for f in sales:
        counts[period.weekday_hour(f["at"])] += 1
    cells = [{"weekday": w, "hour": h, "sales": counts[(w, h)]} for w in range(1, 8) for h in range(24)]
    peak = sorted((c for c in cells if c["sales"] > 0), key=lambda c: (-c["sales"], c["weekday"], c["hour"]))[:3]

    # 5. flows
    pay = defaultdict(list)
    for f in cur:
        if f["kind"] == "payment":
            pay[(f["flow"], f["currency"])].append(f)
    flow_rows = []
    for (fl, c) in sorted(pay, key=lambda k: (FLOW_ORDER.index(k[0]), k[1])):
        ps = pay[(fl, c)]
        total = sum(f["amount"] for f in ps)
        sessions = len({f["session"] for f in ps})
        spent = sum(f["amount"] for f in cur if f["kind"] == "sale" and f["flow"] == fl and f["currency"] == c)
        refunded = sum(f["amount"] for f in cur if is_issued_refund(f) and f["flow"] == fl and f["currency"] == c)
        flow_rows.append({
            "flow": fl, "currency": c, "sessions": sessions, "payments": len(ps),
            "average_payment": money(total // len(ps), c),
            "average_spent": money(spent // sessions, c),
            "refund_share": round_half_away(refunded, total, 4) if total > 0 else Decimal("0.0000"),
        })
    refused = defaultdict(int)
    anomalies = defaultdict(int)
    for f in cur:
        if is_issued_refund(f) and (f.get("reason") or "").startswith("refused:"):
            refused[f["reason"][len("refused:"):]] += 1
        if f["kind"] == "anomaly":
            anomalies[f.get("reason")] += 1
    exceptions = {
        "failed_vends": sum(1 for f in cur if f["kind"] == "vend_failed"),
        "unconfirmed_holds": sum(1 for f in cur if f["kind"] == "anomaly" and f.get("reason") == "unconfirmed_vend"),
        "refused_payments": dict(sorted(refused.items())),
        "refunds_failed": sum(1 for f in cur if f["kind"] == "refund" and f.get("status") == "failed"),
        "anomalies": dict(sorted(anomalies.items())),
    }

    # 6. tags
    tagged, buyer_district = buyer_tags(facts, period)
    kept = sorted(tagged)
    tags = {"buyers": len(kept), "counts": tag_counts(tagged[b] for b in kept), "districts": []}
    per_district = defaultdict(list)
    for b in kept:
        per_district[buyer_district[b]].append(b)
    for d in sorted(per_district):
        bs = per_district[d]
        tags["districts"].append({"district": d, "buyers": len(bs), "counts": tag_counts(tagged[b] for b in bs)})

    # 7. targets
    by_district_tags = {t["district"]: t for t in tags["districts"]}
    targets = []
    for r in sorted(districts, key=lambda r: (r["rank"], r["currency"]))[:5]:
        d, c = r["district"], r["currency"]
        t = by_district_tags.get(d, {"buyers": 0, "counts": tag_counts([])})
        units = defaultdict(list)
        for f in sales:
            if f["district"] == d and f["currency"] == c:
                units[item_key(f)].append(f)
        top = sorted(units, key=lambda k: (-len(units[k]), item_name(k), k[0] is None))[:3]
        targets.append({
            "district": d, "currency": c, "rank": r["rank"], "buyers": t["buyers"], "counts": t["counts"],
            "top_items": [{"sku": k[0], "slot": k[1], "product": latest(units[k]).get("product"),
                           "units": len(units[k])} for k in top],
        })

    return {
        "from": period.frm, "to": period.to, "tz": period.tz, "days": days,
        "previous": {"from": period.prev_from, "to": period.prev_to},
        "machines": machines, "districts": districts, "items": items,
        "hours": {"cells": cells, "peak": peak},
        "flows": {"flows": flow_rows, "exceptions": exceptions},
        "tags": tags, "targets": targets,
    }


def buyer_tags(facts, period: Period):
    """{buyer_key: set of tags} of the buyers kept (a tag or a sale in the period), and each buyer's
    district (that of their latest sale up to the period's end)."""
    start, end = period.start, period.end
    last14 = end - 14 * DAY_MS
    sales = defaultdict(list)
    for f in facts:
        if f["kind"] == "sale" and f.get("buyer_key") is not None and f["at"] < end:
            sales[f["buyer_key"]].append(f)
    spend = defaultdict(lambda: defaultdict(int))  # currency -> buyer -> spend in the period
    tags: dict[str, set] = {}
    district = {}
    in_period = set()
    for b, fs in sales.items():
        t = set()
        here = [f for f in fs if f["at"] >= start]
        if here:
            in_period.add(b)
        days = len({period.local_day(f["at"]) for f in here})
        if min(f["at"] for f in fs) >= start:
            t.add("new")
        if days >= 3:
            t.add("regular")
        if days >= 8:
            t.add("loyal")
        if any(f["at"] < last14 for f in fs) and not any(f["at"] >= last14 for f in fs):
            t.add("lapsed")
        for f in here:
            spend[f["currency"]][b] += f["amount"]
        tags[b] = t
        district[b] = latest(fs)["district"]
    for c, per_buyer in spend.items():
        ranked = sorted((b for b, s in per_buyer.items() if s > 0), key=lambda b: (-per_buyer[b], b))
        n = len(ranked)
        for b in ranked[: (n + 9) // 10]:
            tags[b].add("big_spender")
    kept = {b: t for b, t in tags.items() if t or b in in_period}
    return kept, district


def tag_counts(tag_sets) -> dict:
    out = {t: 0 for t in TAGS}
    for ts in tag_sets:
        for t in ts:
            out[t] += 1
    return out


class DecimalEncoder(json.JSONEncoder):
    def default(self, o):
        if isinstance(o, Decimal):
            return float(o)  # the report's JSON numbers; the harness compares them as decimals
        return super().default(o)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", required=True)
    ap.add_argument("--from", dest="frm", required=True)
    ap.add_argument("--to", required=True)
    ap.add_argument("--tz", default="+08:00")
    ap.add_argument("--out")
    a = ap.parse_args()
    doc = report(load_records(a.records), Period(a.frm, a.to, a.tz))
    text = json.dumps(doc, cls=DecimalEncoder, ensure_ascii=False, indent=1)
    if a.out:
        with open(a.out, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    else:
        sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
