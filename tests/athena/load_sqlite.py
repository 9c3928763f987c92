#!/usr/bin/env python3
"""Loads delivered fact records into the `facts` table of a vendpay SQLite store (one row per id, as the
store keeps them), so `vendpay report --db FILE` reports on exactly the facts the Athena queries read.

    load_sqlite.py --records DIR --db FILE

The store's schema must exist already (`vendpay report --db FILE` on an empty file creates it); facts
already in the table are replaced.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys

from common import COLUMNS, dedupe, load_records


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", required=True)
    ap.add_argument("--db", required=True)
    a = ap.parse_args()
    facts = dedupe(load_records(a.records))
    con = sqlite3.connect(a.db)
    with con:
        con.execute("DELETE FROM facts")
        con.executemany(
            f"INSERT OR IGNORE INTO facts ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})",
            [tuple(f.get(c) for c in COLUMNS) for f in facts],
        )
    n = con.execute("SELECT count(*) FROM facts").fetchone()[0]
    con.close()
    print(f"load_sqlite: {n} facts in {a.db}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
