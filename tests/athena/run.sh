#!/usr/bin/env bash
# The Athena cross-check (tests/athena/crosscheck.py): the named queries of infra/athena/, run on DuckDB
# over Parquet files of the facts, against the Python reading of docs/sales.md and/or `vendpay report`.
#
#   tests/athena/run.sh                       synthetic facts (make_facts.py); SQL vs the reference
#   tests/athena/run.sh --vendpay             the same facts also loaded into a SQLite store and reported on
#                                             by `vendpay report --format json`; SQL vs both
#   tests/athena/run.sh --simulate [--vendpay] facts of the real ledger: `vendpay simulate` (--machines N,
#                                             default 10) fills a SQLite store from 30 days before --from
#                                             to --to; its facts are dumped as records; SQL vs the reference
#                                             (and vs `vendpay report` on that store with --vendpay)
#   tests/athena/run.sh --records DIR --from 2026-11-01 --to 2026-11-30 [--tz=+08:00] [--report R.json]
#                                             delivered records (e.g. the S3 objects of the facts/ prefix);
#                                             SQL vs the reference, and vs a report of the same facts
#
# Other flags: --seed N (synthetic facts, simulation), --work DIR (default: a temporary directory, removed after).
# Exit 0 when every section is equal, 1 on a difference or a failed query, 2 on a usage error.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

records="" from="2026-11-01" to="2026-11-30" tz="+08:00" seed=7 work="" vendpay=0 simulate=0 machines=10
reports=()
while [ $# -gt 0 ]; do
    case "$1" in
        --records) records="$2"; shift 2 ;;
        --records=*) records="${1#*=}"; shift ;;
        --from) from="$2"; shift 2 ;;
        --from=*) from="${1#*=}"; shift ;;
        --to) to="$2"; shift 2 ;;
        --to=*) to="${1#*=}"; shift ;;
        --tz) tz="$2"; shift 2 ;;
        --tz=*) tz="${1#*=}"; shift ;;
        --report) reports+=("--report" "$2"); shift 2 ;;
        --report=*) reports+=("--report" "${1#*=}"); shift ;;
        --seed) seed="$2"; shift 2 ;;
        --work) work="$2"; shift 2 ;;
        --vendpay) vendpay=1; shift ;;
        --simulate) simulate=1; shift ;;
        --machines) machines="$2"; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

export PYTHONDONTWRITEBYTECODE=1  # no __pycache__ in the tree
py="$("$here/venv")"
if [ -z "$work" ]; then
    work="$(mktemp -d "${TMPDIR:-/tmp}/vendpay-athena.XXXXXX")"
    trap 'rm -rf "$work"' EXIT
fi
mkdir -p "$work"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vendpay/target}"
vendpay() { (cd "$root" && cargo run -q -p vendpay -- "$@"); }
db="$work/store.sqlite"

if [ "$simulate" = 1 ]; then
    # The real ledger's facts: a store filled by the simulation, then dumped as delivered records.
    start="$("$py" -c 'import datetime as d, sys; print(d.date.fromisoformat(sys.argv[1]) - d.timedelta(days=30))' "$from")"
    days="$("$py" -c 'import datetime as d, sys; print((d.date.fromisoformat(sys.argv[2]) - d.date.fromisoformat(sys.argv[1])).days + 1)' "$start" "$to")"
    rm -f "$db" "$db-wal" "$db-shm"
    vendpay simulate --db "$db" --machines "$machines" --days "$days" --start "$start" --seed "$seed" 2>&1 \
        | grep -v ' WARN ' | tail -n 4 >&2
    records="$work/records"
    "$py" "$here/dump_sqlite.py" --db "$db" --out "$records"
elif [ -z "$records" ]; then
    records="$work/records"
    "$py" "$here/make_facts.py" --out "$records" --seed "$seed" --from "$from" --to "$to" --tz="$tz"
fi

load_facts() {
    "$py" "$here/load_sqlite.py" --records "$records" --db "$db"
}

if [ "$vendpay" = 1 ]; then
    (cd "$root" && cargo build -q -p vendpay)
    bin="$CARGO_TARGET_DIR/debug/vendpay"
    out="$work/vendpay-report.json"
    if [ "$simulate" = 0 ]; then
        # A SQLite store holding exactly these facts: vendpay creates the schema in an empty file, then
        # the facts go into its `facts` table (one row per id, as the store keeps them).
        rm -f "$db" "$db-wal" "$db-shm"
        : >"$db"
    fi
    if [ "$simulate" = 0 ]; then
        REPORT_TZ="$tz" "$bin" report --from "$from" --to "$from" --format json --db "$db" >/dev/null
        load_facts
    fi
    REPORT_TZ="$tz" "$bin" report --from "$from" --to "$to" --format json --db "$db" --out "$out"
    reports+=("--report" "$out")
fi

"$py" "$here/crosscheck.py" --records "$records" --from "$from" --to "$to" --tz="$tz" \
    --expect reference "${reports[@]}"
