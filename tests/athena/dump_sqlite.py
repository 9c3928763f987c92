#!/usr/bin/env python3
"""Writes the facts of a vendpay SQLite store (e.g. one `vendpay simulate` filled) as delivered records:
JSON lines under `dt=<UTC day of at>/`, the Glue table's columns, a few facts twice (as Firehose may
deliver them), so crosscheck.py can read them.

    dump_sqlite.py --db FILE --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import sys

from common import COLUMNS, utc_date


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", required=True)
    ap.add_argument("--out", required=True, help="directory to (re)write (emptied first)")
    a = ap.parse_args()
    con = sqlite3.connect(f"file:{a.db}?mode=ro", uri=True)
    rows = [dict(zip(COLUMNS, r)) for r in con.execute(f"SELECT {', '.join(COLUMNS)} FROM facts ORDER BY at, id")]
    con.close()
    rng = random.Random(len(rows))
    rows += [r for r in rows if rng.random() < 0.003]  # delivered twice
    shutil.rmtree(a.out, ignore_errors=True)
    by_day: dict[str, list[dict]] = {}
    for r in rows:
        by_day.setdefault(utc_date(r["at"]), []).append(r)
    for day, rs in by_day.items():
        os.makedirs(os.path.join(a.out, f"dt={day}"))
        with open(os.path.join(a.out, f"dt={day}", "facts.json"), "w", encoding="utf-8") as fh:
            for r in rs:
                fh.write(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n")
    print(f"dump_sqlite: {len(rows)} records in {len(by_day)} days into {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
