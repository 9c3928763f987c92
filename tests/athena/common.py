"""What the cross-check's parts share: the report's period (docs/sales.md, "Period"), the exact rounding
rules, and reading delivered fact records (JSON lines, gzip'd or not, or Parquet) from a directory."""

from __future__ import annotations

import datetime as _dt
import gzip
import json
import os
import re
from decimal import Decimal

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
EPOCH = _dt.date(1970, 1, 1)

# The fact's columns in the order of docs/sales.md and the SQLite table (the Glue table has the same).
COLUMNS = [
    "id", "kind", "at", "device", "district", "location", "session", "flow", "buyer_key", "currency",
    "amount", "trade_no", "request_id", "refund_id", "slot", "sku", "product", "stock_after", "reason",
    "status",
]


def parse_tz(tz: str) -> int:
    """`+08:00`, `-05:30` or `Z` as minutes east of UTC."""
    if tz in ("Z", "z"):
        return 0
    m = re.fullmatch(r"([+-])(\d{2}):(\d{2})", tz)
    if not m:
        raise ValueError(f"tz {tz!r} is not ±HH:MM or Z")
    minutes = int(m.group(2)) * 60 + int(m.group(3))
    if minutes > 14 * 60 or int(m.group(3)) >= 60:
        raise ValueError(f"tz {tz!r} is out of range")
    return minutes if m.group(1) == "+" else -minutes


class Period:
    """`[from 00:00, to + 1 day 00:00)` at a fixed offset, and the previous period of the same length."""

    def __init__(self, frm: str, to: str, tz: str):
        self.frm, self.to, self.tz = frm, to, tz
        d0, d1 = _dt.date.fromisoformat(frm), _dt.date.fromisoformat(to)
        if d1 < d0:
            raise ValueError(f"to ({to}) is before from ({frm})")
        self.days = (d1 - d0).days + 1
        if self.days > 366:
            raise ValueError(f"{self.days} days: at most 366")
        self.offset_minutes = parse_tz(tz)
        self.start = (d0 - EPOCH).days * DAY_MS - self.offset_minutes * 60_000
        self.end = self.start + self.days * DAY_MS
        self.prev_start = self.start - self.days * DAY_MS
        self.prev_from = (d0 - _dt.timedelta(days=self.days)).isoformat()
        self.prev_to = (d0 - _dt.timedelta(days=1)).isoformat()

    def athena_parameters(self) -> list[str]:
        """The named queries' parameters, in their documented order (infra/athena/README.md): from, to,
        REPORT_TZ. Athena takes them as SQL literals (`'2026-11-01'`); DuckDB binds the strings."""
        return [self.frm, self.to, self.tz]

    def local_day(self, at: int) -> int:
        """Days since 1970-01-01 of the date at the offset."""
        return (at + self.offset_minutes * 60_000) // DAY_MS

    def weekday_hour(self, at: int) -> tuple[int, int]:
        local = at + self.offset_minutes * 60_000
        weekday = (local // DAY_MS + 3) % 7 + 1  # 1970-01-01 was a Thursday (4)
        hour = (local // HOUR_MS) % 24
        return weekday, hour


def round_half_away(p: int, q: int, places: int) -> Decimal:
    """p / q (q > 0) rounded to `places` decimals, half away from zero, exactly."""
    if q <= 0:
        raise ValueError("q must be positive")
    scale = 10 ** places
    k = (2 * abs(p) * scale + q) // (2 * q)
    k = k if p >= 0 else -k
    return Decimal(k).scaleb(-places)


def _json_objects(text: str, where: str):
    """JSON objects one a line, or concatenated with no separator (as Firehose delivers them)."""
    dec = json.JSONDecoder()
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in " \t\r\n":
            i += 1
        if i >= n:
            return
        try:
            obj, i = dec.raw_decode(text, i)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not JSON at offset {i}: {e}") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{where}: a record is not a JSON object")
        yield obj


def record_files(directory: str) -> list[str]:
    out = []
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for f in sorted(files):
            if f.startswith(".") or f.startswith("_"):
                continue
            out.append(os.path.join(root, f))
    return out


def partition_of(path: str) -> str | None:
    """The `dt=YYYY-MM-DD` folder a delivered file sits in, if any."""
    m = re.search(r"(?:^|/)dt=(\d{4}-\d{2}-\d{2})(?:/|$)", path)
    return m.group(1) if m else None


def load_records(directory: str) -> list[dict]:
    """Every record of every file under `directory`, duplicates kept, each with `dt` (its folder's
    `dt=` partition, else the UTC date of its `at`). Parquet files (*.parquet) need pyarrow."""
    out: list[dict] = []
    files = record_files(directory)
    if not files:
        raise ValueError(f"{directory}: no record files")
    for path in files:
        rows: list[dict]
        if path.endswith(".parquet"):
            import pyarrow.parquet as pq  # only the harness's venv has it

            rows = pq.read_table(path).to_pylist()
        else:
            with open(path, "rb") as fh:
                raw = fh.read()
            if raw[:2] == b"\x1f\x8b":
                raw = gzip.decompress(raw)
            rows = list(_json_objects(raw.decode("utf-8"), path))
        dt = partition_of(os.path.relpath(path, directory))
        for r in rows:
            r = dict(r)
            if "at" not in r or not isinstance(r["at"], int):
                raise ValueError(f"{path}: record {r.get('id')!r} has no integer `at`")
            r["dt"] = r.get("dt") or dt or utc_date(r["at"])
            out.append(r)
    return out


def utc_date(at_ms: int) -> str:
    return (EPOCH + _dt.timedelta(days=at_ms // DAY_MS)).isoformat()


def dedupe(records: list[dict]) -> list[dict]:
    """One fact per id (the first seen): a fact delivered twice is one fact."""
    seen: dict[str, dict] = {}
    for r in records:
        seen.setdefault(r["id"], r)
    return list(seen.values())
