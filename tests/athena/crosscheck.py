#!/usr/bin/env python3
"""Proves that the Athena named queries (infra/athena/*.sql) give the numbers of `vendpay report`.

    crosscheck.py --records DIR --from YYYY-MM-DD --to YYYY-MM-DD [--tz +08:00]
                  [--report REPORT.json] [--expect reference] [--work DIR] [--sql-dir DIR]

1. Reads the delivered fact records under DIR (JSON objects one a line or concatenated, `.gz` or not,
   or Parquet; several files; duplicates kept, as Firehose may deliver them) and writes them as Parquet
   with the Glue table's schema (the `AWS::Glue::Table` of infra/template.yaml; docs/sales.md's table
   when the template has none), partitioned by `dt` (the file's `dt=` folder, else the UTC date of `at`).
2. Parses each infra/athena/NN-*.sql as Trino (a parse error fails the check), checks it keeps to the
   constructs that mean the same in Trino and DuckDB (infra/athena/README.md, "Portability"),
   transpiles it to DuckDB, binds the five parameters of the period and runs it over a view `facts`
   of the Parquet files.
3. Reshapes each result into its section of the report's JSON and compares it with `--report` (the
   JSON of `vendpay report --format json`) and/or the Python reading of docs/sales.md
   (`--expect reference`, tests/athena/reference.py): integers and money to the minor unit, decimals
   exactly as rounded. Prints one line per section and exits 1 on any difference or failure.

Needs duckdb, sqlglot, pyarrow and PyYAML: run it with the python that tests/athena/venv prints.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import sys
import tempfile
from collections import defaultdict
from decimal import Decimal

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import COLUMNS, Period, load_records, parse_tz  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
SECTIONS = ["machines", "districts", "items", "hours", "flows", "tags", "targets"]
TAGS = ["new", "regular", "loyal", "big_spender", "lapsed"]
PARAMETERS = ["from", "to", "tz"]  # Athena execution parameters, in order (infra/athena/README.md)
PARAMS_COLUMNS = ["from_day", "days", "offset_min"]  # what the `params` CTE makes of them


class Failure(Exception):
    pass


# ---------------------------------------------------------------------------------------------------
# The Glue table's schema


def _cfn_loader():
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def any_tag(loader, suffix, node):  # !Ref, !Sub, !GetAtt ...: kept as {"!Tag": value}
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {"!" + suffix: value}

    Loader.add_multi_constructor("!", any_tag)
    return Loader


def schema_from_template(path: str):
    """[(column, glue type)], [(partition key, glue type)] of the Glue table, or None."""
    if not os.path.exists(path):
        return None
    import yaml

    with open(path, encoding="utf-8") as fh:
        doc = yaml.load(fh, Loader=_cfn_loader())
    tables = []
    for name, res in (doc.get("Resources") or {}).items():
        if isinstance(res, dict) and res.get("Type") == "AWS::Glue::Table":
            ti = (res.get("Properties") or {}).get("TableInput") or {}
            sd = ti.get("StorageDescriptor") or {}
            cols = sd.get("Columns")
            if isinstance(cols, list) and cols:
                tables.append((name, ti, cols, ti.get("PartitionKeys") or []))
    if not tables:
        return None
    # The table named `facts` if several (its Name may be a !Sub: compare the text).
    tables.sort(key=lambda t: 0 if "facts" in json.dumps(t[1].get("Name", "")).lower() or "fact" in t[0].lower() else 1)
    _, _, cols, parts = tables[0]
    return ([(c["Name"], str(c["Type"]).lower()) for c in cols],
            [(c["Name"], str(c["Type"]).lower()) for c in parts])


def schema_from_docs(path: str):
    """The `## Facts` table of docs/sales.md: | `col`, `col` | type | meaning |."""
    cols = []
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    section = text.split("## Facts", 1)[1].split("\n## ", 1)[0]
    for line in section.splitlines():
        m = re.match(r"\|\s*((?:`[a-z_]+`\s*,?\s*)+)\|\s*([a-z]+)\s*\|", line)
        if m:
            for name in re.findall(r"`([a-z_]+)`", m.group(1)):
                cols.append((name, m.group(2)))
    if not cols:
        raise Failure(f"{path}: no column table under '## Facts'")
    return cols, [("dt", "string")]


def arrow_type(glue: str):
    import pyarrow as pa

    simple = {"string": pa.string(), "varchar": pa.string(), "bigint": pa.int64(), "int": pa.int32(),
              "integer": pa.int32(), "smallint": pa.int16(), "tinyint": pa.int8(), "double": pa.float64(),
              "float": pa.float32(), "boolean": pa.bool_(), "date": pa.date32(), "timestamp": pa.timestamp("ms")}
    if glue in simple:
        return simple[glue]
    raise Failure(f"Glue type {glue!r} is not handled by the cross-check")


def load_schema(template: str, docs: str):
    found = schema_from_template(template)
    source = template
    if found is None:
        found, source = schema_from_docs(docs), docs
    cols, parts = found
    if [p for p, _ in parts] != ["dt"]:
        raise Failure(f"{source}: the facts table must be partitioned by `dt` alone, not {parts}")
    names = [c for c, _ in cols]
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise Failure(f"{source}: the facts table lacks the columns {missing} of docs/sales.md")
    return cols, source


# ---------------------------------------------------------------------------------------------------
# Records -> Parquet


def write_parquet(records: list[dict], cols, out: str) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(c, arrow_type(t)) for c, t in cols])
    names = [c for c, _ in cols]
    extra = sorted({k for r in records for k in r} - set(names) - {"dt"})
    if extra:
        print(f"records: fields not in the table, dropped: {', '.join(extra)}")
    by_dt = defaultdict(list)
    for r in records:
        by_dt[r["dt"]].append({c: r.get(c) for c in names})
    files = 0
    for dt, rows in sorted(by_dt.items()):
        d = os.path.join(out, f"dt={dt}")
        os.makedirs(d, exist_ok=True)
        try:
            table = pa.Table.from_pylist(rows, schema=schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as e:
            raise Failure(f"records of dt={dt} do not fit the table's schema: {e}") from None
        # Two files a partition when there is enough: the queries must not care how rows are split.
        half = len(rows) // 2 if len(rows) > 1 else len(rows)
        for i, part in enumerate([table.slice(0, half), table.slice(half)]):
            if part.num_rows:
                pq.write_table(part, os.path.join(d, f"part-{i}.parquet"))
                files += 1
    return files


# ---------------------------------------------------------------------------------------------------
# The queries


# sqlglot expression classes whose meaning differs between Trino and DuckDB, or that need a time zone.
FORBIDDEN = {
    "Round": "round(): Trino rounds half away from zero on decimals, DuckDB's double rounding differs; "
             "round in exact integers (README, Rounding)",
    "UnixToTime": "from_unixtime(): session time zones differ; use integer arithmetic on `at`",
    "UnixToStr": "from_unixtime(): session time zones differ",
    "TimeToStr": "date_format(): format strings differ between engines",
    "DayOfWeek": "day_of_week(): Trino is ISO (Monday 1), DuckDB's dayofweek is Sunday 0",
    "DayOfWeekIso": "day_of_week(): compute the ISO weekday in integers",
    "AtTimeZone": "AT TIME ZONE: time zones differ between engines",
    "CurrentTimestamp": "now(): the report depends on its parameters only",
    "CurrentDate": "current_date: the report depends on its parameters only",
    "IntDiv": "integer division: see README, Integer division",
    "StrToTime": "parsing time strings differs between engines",
    "TimeStrToTime": "parsing time strings differs between engines",
}


def check_portable(tree, name: str):
    """The rules of infra/athena/README.md, "Portability", that a machine can check."""
    from sqlglot import exp

    problems = []
    for node in tree.walk():
        cls = type(node).__name__
        if cls in FORBIDDEN:
            problems.append(f"{node.sql(dialect='trino')[:60]!r}: {FORBIDDEN[cls]}")
        if isinstance(node, exp.Div):
            left = node.this
            if not (isinstance(left, exp.Cast) and left.to.is_type("double")):
                problems.append(f"{node.sql(dialect='trino')[:80]!r}: a division's dividend must be "
                                "CAST(... AS DOUBLE) (Trino divides integers by truncation, DuckDB in floats)")
        if isinstance(node, exp.Anonymous):
            problems.append(f"{node.sql(dialect='trino')[:60]!r}: a function sqlglot does not know "
                            "cannot be checked for the same meaning in DuckDB")
    placeholders = list(tree.find_all(exp.Placeholder))
    if len(placeholders) != len(PARAMETERS):
        problems.append(f"{len(placeholders)} parameters (?), not {len(PARAMETERS)}")
    for ph in placeholders:
        cte = ph.find_ancestor(exp.CTE)
        if cte is None or cte.alias != "params":
            problems.append("a parameter (?) outside the `params` CTE")
        elif not isinstance(ph.find_ancestor(exp.Where, exp.Select), exp.Where):
            problems.append("a parameter (?) outside a WHERE clause (Athena takes them nowhere else)")
    params = next((c for c in tree.find_all(exp.CTE) if c.alias == "params"), None)
    if params is None:
        problems.append("no `params` CTE")
    else:
        got = [e.alias_or_name for e in params.this.expressions]
        if got != PARAMS_COLUMNS:
            problems.append(f"`params` makes {got}, not {PARAMS_COLUMNS} (README, Parameters)")
    tables = {t.name for t in tree.find_all(exp.Table)} - {c.alias for c in tree.find_all(exp.CTE)}
    tables.discard("")
    if tables != {"facts"}:
        problems.append(f"reads {sorted(tables)}: the queries read the table `facts` only")
    if problems:
        raise Failure(f"{name}: " + "; ".join(problems))


def run_query(con, path: str, params: list[int], show_sql: bool):
    import sqlglot
    from sqlglot.errors import ParseError

    name = os.path.basename(path)
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    try:
        trees = [t for t in sqlglot.parse(text, read="trino") if t is not None]
    except ParseError as e:
        raise Failure(f"{name}: does not parse as Trino SQL: {e}") from None
    if len(trees) != 1:
        raise Failure(f"{name}: {len(trees)} statements; a named query is one statement")
    check_portable(trees[0], name)
    duck = trees[0].sql(dialect="duckdb")
    if show_sql:
        print(f"-- {name} as DuckDB\n{sqlglot.transpile(text, read='trino', write='duckdb', pretty=True)[0]}\n")
    try:
        cur = con.execute(duck, params)
        columns = [d[0] for d in cur.description]
        return [dict(zip(columns, row)) for row in cur.fetchall()]
    except Exception as e:  # duckdb's errors have no common base worth naming
        raise Failure(f"{name}: DuckDB refused the transpiled query: {e}") from None


# ---------------------------------------------------------------------------------------------------
# Rows -> the report's JSON


def integer(v, what="value"):
    if v is None:
        return None
    if isinstance(v, bool):
        raise Failure(f"{what}: a boolean where an integer belongs")
    if isinstance(v, int):
        return v
    if isinstance(v, Decimal) and v == v.to_integral_value():
        return int(v)
    raise Failure(f"{what}: {v!r} is not an integer (a division left unfloored?)")


def decimal(v):
    if v is None:
        return None
    if isinstance(v, float):
        raise Failure(f"{v!r}: a float where an exact decimal belongs (README, Rounding)")
    return Decimal(v)


def money(row, field):
    return {"minor": integer(row[f"{field}_minor"], field), "currency": row["currency"]}


def shape_machines(rows):
    return [{"device": r["device"], "district": r["district"], "location": r["location"],
             "currency": r["currency"], "sales": integer(r["sales"]), "revenue": money(r, "revenue"),
             "gross": money(r, "gross"), "refunds": money(r, "refunds"), "net": money(r, "net"),
             "average_basket": money(r, "average_basket")} for r in rows]


def shape_districts(rows):
    return [{"district": r["district"], "currency": r["currency"], "machines": integer(r["machines"]),
             "net": money(r, "net"), "net_per_machine_day": money(r, "net_per_machine_day"),
             "previous_net": money(r, "previous_net"), "change": money(r, "change"),
             "rank": integer(r["rank"])} for r in rows]


def shape_items(rows):
    return [{"sku": r["sku"], "slot": r["slot"], "product": r["product"], "currency": r["currency"],
             "units": integer(r["units"]), "revenue": money(r, "revenue"), "slots": integer(r["slots"]),
             "units_per_slot_day": decimal(r["units_per_slot_day"]),
             "hours_sold_out": decimal(r["hours_sold_out"])} for r in rows]


def shape_hours(rows):
    out = {"cells": [], "peak": []}
    for r in rows:
        if r["part"] not in out:
            raise Failure(f"04-hours: unknown part {r['part']!r}")
        out[r["part"]].append({"weekday": integer(r["weekday"]), "hour": integer(r["hour"]),
                               "sales": integer(r["sales"])})
    return out


def shape_flows(rows):
    flows, exceptions = [], {"failed_vends": 0, "unconfirmed_holds": 0, "refused_payments": {},
                             "refunds_failed": 0, "anomalies": {}}
    for r in rows:
        part = r["part"]
        if part == "flows":
            flows.append({"flow": r["flow"], "currency": r["currency"], "sessions": integer(r["sessions"]),
                          "payments": integer(r["payments"]),
                          "average_payment": money(r, "average_payment"),
                          "average_spent": money(r, "average_spent"),
                          "refund_share": decimal(r["refund_share"])})
        elif part in ("refused_payments", "anomalies"):
            exceptions[part][r["key"]] = integer(r["n"])
        elif part in exceptions:
            exceptions[part] = integer(r["n"])
        else:
            raise Failure(f"05-flows: unknown part {part!r}")
    return {"flows": flows, "exceptions": exceptions}


def counts_of(r):
    return {t: integer(r[t]) for t in TAGS}


def shape_tags(rows):
    alls = [r for r in rows if r["level"] == "all"]
    if len(alls) != 1:
        raise Failure(f"06-tags: {len(alls)} rows of level 'all', not 1")
    return {"buyers": integer(alls[0]["buyers"]), "counts": counts_of(alls[0]),
            "districts": [{"district": r["district"], "buyers": integer(r["buyers"]), "counts": counts_of(r)}
                          for r in rows if r["level"] == "district"]}


def shape_targets(rows):
    out, by_place = [], {}
    for r in rows:
        place = integer(r["place"])
        if place not in by_place:
            by_place[place] = {"district": r["district"], "currency": r["currency"], "rank": integer(r["rank"]),
                               "buyers": integer(r["buyers"]), "counts": counts_of(r), "top_items": []}
            out.append(by_place[place])
        if r["item_place"] is not None:
            by_place[place]["top_items"].append({"sku": r["sku"], "slot": r["slot"], "product": r["product"],
                                                 "units": integer(r["units"])})
    return out


SHAPES = {"machines": shape_machines, "districts": shape_districts, "items": shape_items,
          "hours": shape_hours, "flows": shape_flows, "tags": shape_tags, "targets": shape_targets}


# ---------------------------------------------------------------------------------------------------
# Comparison


def normalise(section: str, v):
    """Exact values: floats (a JSON number of the report) as the decimal they print as; maps of counts
    without their zero keys (absent keys are 0); tag counts with all five keys."""
    def walk(x, key=None):
        if isinstance(x, bool) or x is None or isinstance(x, str):
            return x
        if isinstance(x, int):
            return x
        if isinstance(x, float):
            return Decimal(repr(x))
        if isinstance(x, Decimal):
            return x
        if isinstance(x, list):
            return [walk(e) for e in x]
        if isinstance(x, dict):
            d = {k: walk(e, k) for k, e in x.items()}
            if key in ("refused_payments", "anomalies"):
                d = {k: e for k, e in d.items() if e != 0}
            if key == "counts":
                d = {t: d.get(t, 0) for t in TAGS} | {k: e for k, e in d.items() if k not in TAGS}
            return d
        return x
    return walk(v)


def differences(a, b, path: str, out: list, limit=8):
    if len(out) >= limit:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            if k not in a:
                out.append(f"{path}.{k}: absent from the SQL result, {b[k]!r} in the other")
            elif k not in b:
                out.append(f"{path}.{k}: {a[k]!r} from SQL, absent from the other")
            else:
                differences(a[k], b[k], f"{path}.{k}", out, limit)
            if len(out) >= limit:
                return
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{path}: {len(a)} rows from SQL, {len(b)} in the other")
        for i, (x, y) in enumerate(zip(a, b)):
            differences(x, y, f"{path}[{i}]", out, limit)
            if len(out) >= limit:
                return
    else:
        same = (a == b) and (type(a) is type(b) or {type(a), type(b)} <= {int, Decimal})
        if not same or (isinstance(a, bool) != isinstance(b, bool)):
            out.append(f"{path}: {a!r} from SQL, {b!r} in the other")


def describe(section: str, doc) -> str:
    if section == "hours":
        return f"{len(doc['cells'])} cells + {len(doc['peak'])} peak"
    if section == "flows":
        return f"{len(doc['flows'])} rows + exceptions"
    if section == "tags":
        return f"{doc['buyers']} buyers in {len(doc['districts'])} districts"
    return f"{len(doc)} rows"


def compare(sql_doc: dict, other: dict, label: str, period: Period) -> bool:
    print(f"== SQL (DuckDB) vs {label}")
    ok = True
    head = []
    for k, want in (("from", period.frm), ("to", period.to), ("days", period.days),
                    ("previous", {"from": period.prev_from, "to": period.prev_to})):
        if other.get(k) != want:
            head.append(f"{k}: {other.get(k)!r}, the period asked is {want!r}")
    try:
        if parse_tz(str(other.get("tz"))) != period.offset_minutes:
            head.append(f"tz: {other.get('tz')!r}, the period asked is {period.tz!r}")
    except ValueError as e:
        head.append(f"tz: {e}")
    if head:
        ok = False
        print("period: DIFFERENT\n  " + "\n  ".join(head))
    else:
        print(f"period: {period.frm} .. {period.to} at {period.tz}, {period.days} days, equal")
    for s in SECTIONS:
        if s not in sql_doc:
            continue  # its query failed; said already
        if s not in other:
            print(f"{s}: absent from {label}")
            ok = False
            continue
        a, b = normalise(s, sql_doc[s]), normalise(s, other[s])
        diffs: list[str] = []
        differences(a, b, s, diffs)
        if diffs:
            ok = False
            print(f"{s}: {describe(s, a)} from SQL, DIFFERENT:")
            for d in diffs:
                print(f"  {d}")
        else:
            print(f"{s}: {describe(s, a)}, equal")
    extra = [k for k in other if k not in SECTIONS and k not in ("from", "to", "tz", "days", "previous")]
    for k in extra:
        print(f"{k}: not an Athena section, not checked")
    return ok


# ---------------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", required=True, help="directory of delivered fact records")
    ap.add_argument("--from", dest="frm", required=True, help="first day, YYYY-MM-DD (REPORT_TZ)")
    ap.add_argument("--to", required=True, help="last day, YYYY-MM-DD, included")
    ap.add_argument("--tz", default="+08:00", help="REPORT_TZ, ±HH:MM or Z (default +08:00)")
    ap.add_argument("--report", action="append", default=[],
                    help="the JSON of `vendpay report --format json` for the same period (repeatable)")
    ap.add_argument("--expect", action="append", default=[], choices=["reference"],
                    help="also compare with tests/athena/reference.py")
    ap.add_argument("--sql-dir", default=os.path.join(ROOT, "infra", "athena"))
    ap.add_argument("--template", default=os.path.join(ROOT, "infra", "template.yaml"))
    ap.add_argument("--docs", default=os.path.join(ROOT, "docs", "sales.md"))
    ap.add_argument("--work", help="where to write the Parquet files (default: a temporary directory)")
    ap.add_argument("--sql-json", help="write the SQL results, shaped as the report's JSON, to this file")
    ap.add_argument("--show-sql", action="store_true", help="print each query as transpiled to DuckDB")
    a = ap.parse_args()
    if not a.report and not a.expect:
        ap.error("nothing to compare with: give --report FILE and/or --expect reference")

    import duckdb

    try:
        period = Period(a.frm, a.to, a.tz)
    except ValueError as e:
        print(f"crosscheck: bad period: {e}", file=sys.stderr)
        return 2
    failed = False
    work = a.work or tempfile.mkdtemp(prefix="vendpay-athena-")
    try:
        cols, source = load_schema(a.template, a.docs)
        records = load_records(a.records)
        parquet = os.path.join(work, "facts")
        shutil.rmtree(parquet, ignore_errors=True)
        files = write_parquet(records, cols, parquet)
        ids = len({r["id"] for r in records})
        print(f"records: {len(records)} delivered ({len(records) - ids} duplicates), {ids} facts, "
              f"{files} Parquet files; schema from {os.path.relpath(source, ROOT)}")
        params = period.athena_parameters()
        print(f"parameters: {dict(zip(PARAMETERS, params))}")

        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        pattern = os.path.join(parquet, "*", "*.parquet").replace("'", "''")
        con.execute(f"CREATE VIEW facts AS SELECT * FROM read_parquet('{pattern}', "
                    "hive_partitioning = true, hive_types = {'dt': 'VARCHAR'})")
        sql_doc = {}
        queries = sorted(glob.glob(os.path.join(a.sql_dir, "[0-9][0-9]-*.sql")))
        names = {s: [q for q in queries if re.fullmatch(rf"\d\d-{s}\.sql", os.path.basename(q))] for s in SECTIONS}
        for s in SECTIONS:
            if len(names[s]) != 1:
                print(f"{s}: FAILED: {len(names[s])} files NN-{s}.sql in {a.sql_dir}")
                failed = True
                continue
            try:
                rows = run_query(con, names[s][0], params, a.show_sql)
                sql_doc[s] = SHAPES[s](rows)
            except Failure as e:
                print(f"{s}: FAILED: {e}")
                failed = True
        if a.sql_json:
            from reference import DecimalEncoder

            with open(a.sql_json, "w", encoding="utf-8") as fh:
                json.dump(sql_doc, fh, cls=DecimalEncoder, ensure_ascii=False, indent=1)

        others = []
        if "reference" in a.expect:
            import reference

            others.append(("the Python reference", reference.report(records, period)))
        for path in a.report:
            with open(path, encoding="utf-8") as fh:
                label = os.path.relpath(path) if not os.path.relpath(path).startswith("..") else path
                others.append((label, json.load(fh, parse_float=Decimal)))
        for label, doc in others:
            if not compare(sql_doc, doc, label, period):
                failed = True
    except Failure as e:
        print(f"crosscheck: FAILED: {e}")
        failed = True
    finally:
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)
    print("crosscheck: " + ("FAILED: a query failed or a section differs (see above)" if failed else "every section equal"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
