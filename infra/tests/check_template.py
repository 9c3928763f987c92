#!/usr/bin/env python3
"""Offline checks of infra/template.yaml against the rest of the repository.

Run by scripts/check-infra with the Python of its virtualenv (it needs cfn-lint's YAML loader and IAM
action list, and aws-sam-translator, both installed there):

    python infra/tests/check_template.py            # check the real template, then the self-test
    python infra/tests/check_template.py --no-self-test

What it asserts (each failure is printed as one line naming the function/resource and what is wrong):

- every crate functions/*/Cargo.toml is a function of the template with `BuildProperties.Binary` = its
  binary, and every function is such a crate (until the crates exist, infra/function-env.json names them);
  Runtime provided.al2023, arm64, Handler bootstrap, CodeUri the workspace root, JSON logs into its own log
  group with the retention parameter;
- each function's environment is exactly its list in infra/function-env.json; the secret settings are
  `secretsmanager:<secret>[#field]` references to the template's secrets, never values;
- the table's Properties equal infra/table.json (key order ignored);
- each function's IAM actions are exactly expansion(functions/<name>/aws-calls.json) plus the extras below,
  every action exists (cfn-lint's IAM action list), and every resource is the specific one the function is
  configured with (see RESOURCES) — `dynamodb:Query` on the table, and on an index only when the manifest's
  `indexes` name it; no wildcard actions, no wildcard resources except a schedule group's
  `schedule/<group>/*` and a log group's `log-stream:*`;
- every SQS event source mapping reports batch item failures, its queue has a dead-letter queue with a
  redrive policy and a visibility timeout >= 6 x the consumer's timeout; every DLQ has an alarm;
- the table has a NEW_IMAGE stream, read by analytics-export's mapping: batch item failures, bisection,
  bounded retries into an on-failure queue (a DLQ with its alarm), filtered to inserts of facts items; its
  role reads that stream and puts records into the delivery stream of FIREHOSE_STREAM_NAME only;
- the sales analytics: the Glue table's columns are docs/sales.md's fact columns in order, partitioned by
  `dt` only (projected); Firehose converts to Parquet against it and writes where it reads, with a role
  limited to that table's schema and the two prefixes; the bucket is encrypted and private; the Athena
  workgroup enforces its configuration and a scan cutoff; one named query per report section, in the
  workgroup, equal to its infra/athena/NN-<section>.sql;
- the alarms, the scheduler roles, the sweep schedule, the HTTP routes and the generated DEVICE_KEY.

Then the self-test breaks the template (and the manifests) in many ways (MUTATIONS) and asserts each is caught.

The checks live in the package template_checks/ beside this file (model, functions, resources, mutations);
this script is its command line. check_build.py imports TEMPLATE and load_yaml from here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# template_checks/ sits beside this file: importable however the script is started (from the repository
# root as scripts/check-infra does, from infra/tests/, or imported by check_build.py).
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from template_checks import check  # noqa: E402
from template_checks.model import (  # noqa: E402 - TEMPLATE and load_yaml are also check_build.py's
    FUNCTION_ENV,
    FUNCTIONS_DIR,
    ROOT,
    TABLE_JSON,
    TEMPLATE,
    crate_binaries,
    load_manifests,
    load_yaml,
)
from template_checks.mutations import MUTATIONS, self_test  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--template", type=Path, default=TEMPLATE)
    ap.add_argument("--no-self-test", action="store_true", help="skip the mutation self-test")
    args = ap.parse_args()

    raw = load_yaml(args.template)
    env_spec = json.loads(FUNCTION_ENV.read_text())
    table_def = json.loads(TABLE_JSON.read_text())
    crates = crate_binaries(FUNCTIONS_DIR)
    binaries = sorted(set(env_spec.get("functions", {})) | set(crates))
    manifests = load_manifests(FUNCTIONS_DIR, binaries, crates)

    errors, notes = check(raw, manifests, env_spec, table_def, crates)
    for n in notes:
        print(f"note: {n}")
    if errors:
        print(f"check_template: {len(errors)} problem(s) in {args.template}:")
        for e in errors:
            print(f"  - {e}")
        return 1
    print(f"check_template: {args.template.relative_to(ROOT) if args.template.is_relative_to(ROOT) else args.template} ok "
          f"({len(binaries)} functions, manifests {', '.join(b for b in binaries)})")

    if args.no_self_test:
        return 0
    print(f"check_template: self-test, {len(MUTATIONS)} deliberate breakages:")
    failures = self_test(raw, manifests, env_spec, table_def, crates)
    if failures:
        print(f"check_template: self-test FAILED: {failures} breakage(s) not caught")
        return 1
    print(f"{len(MUTATIONS)} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
