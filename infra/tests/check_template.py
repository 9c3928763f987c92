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
  configured with (see RESOURCES); no wildcard actions, no wildcard resources except a schedule group's
  `schedule/<group>/*` and a log group's `log-stream:*`;
- every SQS event source mapping reports batch item failures, its queue has a dead-letter queue with a
  redrive policy and a visibility timeout >= 6 x the consumer's timeout; every DLQ has an alarm;
- the alarms, the scheduler roles, the sweep schedule, the HTTP routes and the generated DEVICE_KEY.

Then the self-test breaks the template (and the manifests) in a dozen ways and asserts each is caught.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import logging
import os
import re
import string
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra" / "template.yaml"
TABLE_JSON = ROOT / "infra" / "table.json"
FUNCTION_ENV = ROOT / "infra" / "function-env.json"
FUNCTIONS_DIR = ROOT / "functions"

# --------------------------------------------------------------------------------------------------------
# IAM: from the operations a function's code calls (its aws-calls.json) to the IAM actions it needs.
#
# Most AWS API operations are authorised by the IAM action of the same name. The exceptions the functions
# use are here: a DynamoDB transaction has no IAM action of its own; each of its parts is authorised by the
# item-level action of that part, on the part's table. Our transactions are made of Put, Update and
# ConditionCheck parts (shared/store-aws/src/dynamo.rs); a Delete part would need dynamodb:DeleteItem added
# below — deliberately absent: nothing deletes money records.
#
#   operation called                 IAM actions needed
#   dynamodb:TransactWriteItems  ->  dynamodb:PutItem, dynamodb:UpdateItem, dynamodb:ConditionCheckItem
#   dynamodb:TransactGetItems    ->  dynamodb:GetItem
#   scheduler:CreateSchedule     ->  scheduler:CreateSchedule, iam:PassRole (the schedule's target role,
#                                    i.e. SCHEDULER_ROLE_ARN, and only that role)
EXPANSION: dict[str, list[str]] = {
    "dynamodb:TransactWriteItems": [
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:ConditionCheckItem",
    ],
    "dynamodb:TransactGetItems": ["dynamodb:GetItem"],
    "scheduler:CreateSchedule": ["scheduler:CreateSchedule", "iam:PassRole"],
}
# What every function needs beyond its own calls: Lambda writes its logs with the function's role.
LOGS_ACTIONS = ["logs:CreateLogStream", "logs:PutLogEvents"]
# What the Lambda service's poller needs, with the function's role, for an SQS event source mapping.
SQS_CONSUMER_ACTIONS = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"]
# Actions on the consumer's own queue (the mapping's, plus the backoff of refund-executor).
OWN_QUEUE_ACTIONS = set(SQS_CONSUMER_ACTIONS) | {"sqs:ChangeMessageVisibility"}

# Queue URLs a consumer reads only to change the visibility of the messages it consumes (a retry's
# backoff), never to send to: each must name the function's own queue, and grants no sqs:SendMessage.
OWN_QUEUE_URL_VARS = {"device-api": "DEVICE_EVENTS_QUEUE_URL"}

# Who consumes which queue (logical ids), and the queues whose messages must leave at once (refunds
# within 2 s, deadlines on time): no batching window there.
CONSUMERS = {
    "deadline": "DeadlineQueue",
    "refund-executor": "RefundQueue",
    "device-api": "DeviceEventsQueue",
}
NO_BATCHING_WINDOW = {"DeadlineQueue", "RefundQueue"}

# Permanent failures the functions log as `alert = "<name>"` (tracing field -> $.fields.alert in JSON logs).
# Every alert found in a function crate's code (ALERT_IN_CODE) needs a metric filter and an alarm; these are
# the ones the scan must at least find, so a scan that silently finds nothing fails too.
ALERTS = {
    # refund_stuck and refund_succeeded_after_failure are logged by vendpay-app's ledger when the
    # executor records them.
    "refund-executor": {
        "refund_failed_permanently",
        "refund_message_refused",
        "refund_stuck",
        "refund_succeeded_after_failure",
    },
    "device-api": {"device_event_refused"},
    # deadline_failed is logged by the sweep in vendpay-app, which the deadline function runs.
    # ... and unreadable_row by the stores when the sweep lists pending refunds.
    "deadline": {"deadline_message_refused", "deadline_failed", "unreadable_row"},
}
ALERT_IN_CODE = re.compile(r'\balert\s*[:=]\s*"([a-z0-9_]+)"')


def code_alerts(crates: dict[str, Path] | None) -> dict[str, set[str]]:
    """binary -> the alert names its crate's sources log (plus ALERTS' minimum)."""
    found = {b: set(names) for b, names in ALERTS.items()}
    for binary, crate in (crates or {}).items():
        for source in sorted((crate / "src").rglob("*.rs")):
            found.setdefault(binary, set()).update(ALERT_IN_CODE.findall(source.read_text()))
    return found

# The HTTP contract (docs/contract.md): route key -> (function binary, API Gateway authorisation).
ROUTES = {
    "POST /alipay/notify/{device_id}": ("alipay-notify", "NONE"),
    "GET /devices/{device_id}/session": ("device-api", "NONE"),
    "POST /devices/{device_id}/purchases": ("device-api", "NONE"),
    "POST /devices/{device_id}/purchases/{request_id}/result": ("device-api", "NONE"),
    "POST /devices/{device_id}/orders": ("device-api", "NONE"),
    "POST /devices/{device_id}/session/end": ("device-api", "NONE"),
    "POST /admin/devices": ("qr-provision", "AWS_IAM"),
    "GET /admin/devices/{device_id}": ("qr-provision", "AWS_IAM"),
    "POST /admin/devices/{device_id}/qrcode": ("qr-provision", "AWS_IAM"),
    "GET /admin/devices/{device_id}/label.svg": ("qr-provision", "AWS_IAM"),
    "GET /admin/sessions/{session_id}": ("qr-provision", "AWS_IAM"),
}

REQUIRED_OUTPUTS = [
    "ApiUrl",
    "NotifyUrlPattern",
    "DeadlineQueueUrl",
    "RefundQueueUrl",
    "DeviceEventsQueueUrl",
    "AlipaySecretArn",
    "DeviceKeySecretArn",
]

SWEEP_INPUT = {"action": "sweep", "scheduled_time": "<aws.scheduler.scheduled-time>"}

PSEUDO = r"arn:\$\{AWS::Partition\}:(?P<svc>[a-z0-9-]+):\$\{AWS::Region\}:\$\{AWS::AccountId\}:"
SUB_INDEX = re.compile(r"^\$\{(?P<res>\w+)\.Arn\}/index/(?P<index>[\w.-]+)$")
SUB_SCHEDULES = re.compile(PSEUDO + r"schedule/\$\{(?P<res>\w+)\}/\*$")
SUB_LOG_STREAMS = re.compile(PSEUDO + r"log-group:\$\{(?P<res>\w+)\}:log-stream:\*$")
SECRET_REF = re.compile(r"^secretsmanager:\$\{(?P<res>\w+)\}(?:#(?P<field>[\w.-]+))?$")


# --------------------------------------------------------------------------------------------------------
# Loading


def load_yaml(path: Path) -> dict:
    """The template with CloudFormation's short-form tags turned into their long forms (cfn-lint's loader)."""
    from cfnlint.decode import cfn_yaml

    return json.loads(json.dumps(cfn_yaml.load(str(path))))


@functools.cache
def iam_action_list() -> dict[str, set[str]] | None:
    """service -> lower-case action names, from cfn-lint's copy of the IAM reference (None: not installed)."""
    try:
        from cfnlint.data import AdditionalSpecs
        from cfnlint.helpers import load_resource
    except ImportError:
        return None
    spec = load_resource(AdditionalSpecs, "Policies.json")
    return {svc: set(v.get("Actions", {})) for svc, v in spec.items()}


def transform(raw: dict) -> dict:
    """The CloudFormation template SAM makes of `raw` (Globals merged, SQS events as mappings)."""
    from samtranslator.translator.transform import transform as sam_transform

    # The translator asks boto for a region (for ARNs it builds); any will do offline.
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    logging.getLogger("samtranslator").setLevel(logging.ERROR)

    class NoManagedPolicies:
        def load(self):  # only SAM policy templates / managed policy names need it; we use neither
            return {}

    t = copy.deepcopy(raw)
    # SAM wants an S3 location; the local CodeUri is checked on the raw template.
    globals_fn = t.get("Globals", {}).get("Function", {})
    if "CodeUri" in globals_fn:
        globals_fn["CodeUri"] = "s3://bucket/vendpay.zip"
    for res in t.get("Resources", {}).values():
        if res.get("Type") == "AWS::Serverless::Function" and "CodeUri" in res.get("Properties", {}):
            res["Properties"]["CodeUri"] = "s3://bucket/vendpay.zip"
    return sam_transform(t, {}, NoManagedPolicies(), passthrough_metadata=True)


def crate_binaries(functions_dir: Path) -> dict[str, Path]:
    """binary name -> crate directory, for every functions/*/Cargo.toml."""
    out: dict[str, Path] = {}
    for manifest in sorted(functions_dir.glob("*/Cargo.toml")):
        data = tomllib.loads(manifest.read_text())
        bins = [b["name"] for b in data.get("bin", []) if "name" in b]
        if not bins and "package" in data:
            bins = [data["package"]["name"]]
        for b in bins:
            out[b] = manifest.parent
    return out


def load_manifests(functions_dir: Path, binaries: list[str], crates: dict[str, Path]) -> dict[str, object]:
    """binary -> list of calls (or an error string)."""
    out: dict[str, object] = {}
    for b in binaries:
        path = (crates.get(b) or functions_dir / b) / "aws-calls.json"
        try:
            calls = json.loads(path.read_text())["calls"]
            if not isinstance(calls, list) or not all(isinstance(c, str) for c in calls):
                raise ValueError('"calls" must be a list of strings')
            out[b] = calls
        except FileNotFoundError:
            out[b] = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} is missing"
        except (ValueError, KeyError, json.JSONDecodeError) as e:
            out[b] = f"{path}: not {{\"calls\": [...]}}: {e}"
    return out


# --------------------------------------------------------------------------------------------------------
# Helpers on intrinsic functions


def ref_of(v) -> str | None:
    return v["Ref"] if isinstance(v, dict) and set(v) == {"Ref"} and isinstance(v["Ref"], str) else None


def getatt_of(v) -> tuple[str, str] | None:
    if isinstance(v, dict) and set(v) == {"Fn::GetAtt"}:
        g = v["Fn::GetAtt"]
        if isinstance(g, str):
            g = g.split(".", 1)
        if isinstance(g, list) and len(g) == 2 and all(isinstance(x, str) for x in g):
            return g[0], g[1]
    return None


def sub_of(v) -> str | None:
    return v["Fn::Sub"] if isinstance(v, dict) and set(v) == {"Fn::Sub"} and isinstance(v["Fn::Sub"], str) else None


def as_list(v) -> list:
    return v if isinstance(v, list) else [v]


def norm(v):
    """Key order and list-vs-scalar noise removed, for equality of JSON-ish values."""
    return json.loads(json.dumps(v, sort_keys=True))


def show(v) -> str:
    return json.dumps(v, sort_keys=True)


def classify_resource(v) -> tuple:
    """An IAM Resource value -> what it names: ('arn', Logical) | ('index', Table, name) |
    ('schedules', Group) | ('log-streams', LogGroup) | ('bad', reason)."""
    ga = getatt_of(v)
    if ga and ga[1] == "Arn":
        return ("arn", ga[0])
    r = ref_of(v)
    if r:
        return ("arn", r)  # Ref of a secret is its ARN (the only Ref the checks accept as a resource)
    s = sub_of(v)
    if s is not None:
        for pattern, kind in ((SUB_INDEX, "index"), (SUB_SCHEDULES, "schedules"), (SUB_LOG_STREAMS, "log-streams")):
            m = pattern.match(s)
            if m:
                if kind == "index":
                    return ("index", m["res"], m["index"])
                if kind == "schedules" and m["svc"] != "scheduler" or kind == "log-streams" and m["svc"] != "logs":
                    break
                return (kind, m["res"])
        if "*" in s:
            return ("bad", f"wildcard resource {s!r}")
        return ("bad", f"resource {s!r} is not one of the template's resources")
    if isinstance(v, str):
        if "*" in v:
            return ("bad", f"wildcard resource {v!r}")
        return ("bad", f"hard-coded resource {v!r} (use !GetAtt/!Ref of the template's resource)")
    return ("bad", f"resource {show(v)} not understood")


def fmt_res(r: tuple) -> str:
    return {
        "arn": lambda: r[1],
        "index": lambda: f"{r[1]}/index/{r[2]}",
        "schedules": lambda: f"schedule/{r[1]}/*",
        "log-streams": lambda: f"{r[1]}:log-stream:*",
    }.get(r[0], lambda: str(r))()


def statements_of(role: dict) -> tuple[list[dict], list[str]]:
    """All statements of a role's inline policies, and problems with the role's shape."""
    problems = []
    props = role.get("Properties", {})
    if props.get("ManagedPolicyArns"):
        problems.append(f"has managed policies {show(props['ManagedPolicyArns'])} (inline least-privilege policies only)")
    stmts = []
    for pol in props.get("Policies", []):
        doc = pol.get("PolicyDocument", {})
        stmts += as_list(doc.get("Statement", []))
    return stmts, problems


def trust_services(role: dict) -> set:
    out = set()
    for st in as_list(role.get("Properties", {}).get("AssumeRolePolicyDocument", {}).get("Statement", [])):
        principal = st.get("Principal", {})
        if not isinstance(principal, dict) or set(principal) != {"Service"}:
            out.add(f"non-service principal {show(principal)}")
            continue
        out |= set(as_list(principal["Service"]))
    return out


# --------------------------------------------------------------------------------------------------------
# The checks


def check(raw: dict, manifests: dict, env_spec: dict, table_def: dict, crates: dict | None) -> tuple[list[str], list[str]]:
    """Returns (errors, notes)."""
    alerts = code_alerts(crates)
    errors: list[str] = []
    notes: list[str] = []
    err = errors.append

    try:
        cfn = transform(raw)
    except Exception as e:  # noqa: BLE001 - the translator's own message is the useful one
        return [f"SAM could not transform the template: {e}"], notes
    res = cfn.get("Resources", {})
    raw_res = raw.get("Resources", {})
    params = raw.get("Parameters", {})
    iam_actions = iam_action_list()
    if iam_actions is None:
        notes.append("cfn-lint not importable: IAM action names not checked against the IAM reference")

    def of_type(t):
        return {k: v for k, v in res.items() if v.get("Type") == t}

    def props(logical):
        return res.get(logical, {}).get("Properties", {})

    # ---------------------------------------------------------------- functions <-> crates
    raw_functions = {k: v for k, v in raw_res.items() if v.get("Type") == "AWS::Serverless::Function"}
    globals_fn = raw.get("Globals", {}).get("Function", {})
    fn_by_bin: dict[str, str] = {}
    for logical, r in raw_functions.items():
        meta = r.get("Metadata", {})
        binary = meta.get("BuildProperties", {}).get("Binary")
        if meta.get("BuildMethod") != "rust-cargolambda" or not isinstance(binary, str):
            err(f"{logical}: Metadata must be BuildMethod rust-cargolambda with BuildProperties.Binary")
            continue
        if binary in fn_by_bin:
            err(f"{logical}: binary {binary!r} is also built by {fn_by_bin[binary]}")
        fn_by_bin[binary] = logical
        p = {**globals_fn, **r.get("Properties", {})}
        if p.get("CodeUri") != "..":
            err(f"{binary}: CodeUri must be '..' (the workspace root seen from infra/), is {show(p.get('CodeUri'))}")
    for logical, r in res.items():
        if r.get("Type") == "AWS::Lambda::Function" and logical not in raw_functions:
            err(f"{logical}: a Lambda function that is not one of the Rust crates' AWS::Serverless::Function")

    spec_fns = env_spec.get("functions", {})
    if set(spec_fns) != set(fn_by_bin):
        err(f"infra/function-env.json names {sorted(spec_fns)} but the template builds {sorted(fn_by_bin)}")
    if crates:
        missing = sorted(set(crates) - set(fn_by_bin))
        extra = sorted(set(fn_by_bin) - set(crates))
        for b in missing:
            err(f"crate {crates[b].relative_to(ROOT) if crates[b].is_relative_to(ROOT) else crates[b]} (binary {b!r}) has no function in the template")
        for b in extra:
            err(f"function {fn_by_bin[b]} builds binary {b!r}, which no functions/*/Cargo.toml defines")
    else:
        notes.append("no functions/*/Cargo.toml yet: functions checked against infra/function-env.json only")

    # ---------------------------------------------------------------- table
    tables = of_type("AWS::DynamoDB::Table")
    if len(tables) != 1:
        err(f"expected one AWS::DynamoDB::Table, found {sorted(tables)}")
    for logical, t in tables.items():
        if norm(t.get("Properties", {})) != norm(table_def):
            want, got = norm(table_def), norm(t.get("Properties", {}))
            diff = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
            err(f"{logical}: Properties differ from infra/table.json in {diff}")
        if t.get("DeletionPolicy") != "Retain":
            err(f"{logical}: DeletionPolicy must be Retain (it holds the money)")

    queues = of_type("AWS::SQS::Queue")
    secrets = of_type("AWS::SecretsManager::Secret")
    log_groups = of_type("AWS::Logs::LogGroup")
    groups = of_type("AWS::Scheduler::ScheduleGroup")
    roles = of_type("AWS::IAM::Role")
    esms = of_type("AWS::Lambda::EventSourceMapping")
    alarms = of_type("AWS::CloudWatch::Alarm")

    for logical, r in res.items():
        if r.get("Type") in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::IAM::User", "AWS::IAM::Group"):
            err(f"{logical}: {r['Type']} — the functions' permissions live in their roles' inline policies only")

    # ---------------------------------------------------------------- per function
    retention = params.get("LogRetentionDays", {})
    if retention.get("Default") != 30:
        err(f"parameter LogRetentionDays must default to 30, is {show(retention.get('Default'))}")

    esm_by_fn: dict[str, list[str]] = {}
    for e_logical, e in esms.items():
        esm_by_fn.setdefault(ref_of(e["Properties"].get("FunctionName")) or "?", []).append(e_logical)

    for binary, logical in sorted(fn_by_bin.items()):
        fp = props(logical)
        who = binary
        # runtime
        if fp.get("Runtime") != "provided.al2023":
            err(f"{who}: Runtime must be provided.al2023, is {show(fp.get('Runtime'))}")
        if fp.get("Architectures") != ["arm64"]:
            err(f"{who}: Architectures must be [arm64], is {show(fp.get('Architectures'))}")
        if fp.get("Handler") != "bootstrap":
            err(f"{who}: Handler must be bootstrap")
        # The functions that settle and refund keep capacity of their own: a flood of machine requests
        # must not throttle them (as a parameter, so a low-quota account can set 0).
        if binary in ("deadline", "refund-executor") and "ReservedConcurrentExecutions" not in fp:
            err(f"{who}: set ReservedConcurrentExecutions (MoneyFunctionsReservedConcurrency)")
        timeout = fp.get("Timeout")
        if not isinstance(timeout, int) or not isinstance(fp.get("MemorySize"), int):
            err(f"{who}: set Timeout and MemorySize explicitly")
            timeout = 3
        # logs
        lc = fp.get("LoggingConfig", {})
        own_log_group = ref_of(lc.get("LogGroup"))
        if lc.get("LogFormat") != "JSON":
            err(f"{who}: LoggingConfig.LogFormat must be JSON (the alert metric filters read $.fields.alert)")
        if own_log_group not in log_groups:
            err(f"{who}: LoggingConfig.LogGroup must be !Ref of its own AWS::Logs::LogGroup")
        elif ref_of(log_groups[own_log_group]["Properties"].get("RetentionInDays")) != "LogRetentionDays":
            err(f"{who}: log group {own_log_group} must have RetentionInDays !Ref LogRetentionDays")
        sharing = [b for b, lg in fn_by_bin.items() if b != binary and ref_of(props(lg).get("LoggingConfig", {}).get("LogGroup")) == own_log_group]
        if own_log_group and sharing:
            err(f"{who}: log group {own_log_group} is shared with {sharing} (one per function: alerts are per function)")

        # environment
        env = fp.get("Environment", {}).get("Variables", {})
        want_env = spec_fns.get(binary, [])
        missing = sorted(set(want_env) - set(env))
        extra = sorted(set(env) - set(want_env))
        if missing:
            err(f"{who}: environment lacks {missing} (infra/function-env.json)")
        if extra:
            err(f"{who}: environment has {extra}, not in infra/function-env.json")
        env_secrets: set[str] = set()
        for var, spec in env_spec.get("secret_references", {}).items():
            if var not in env:
                continue
            sres, _, sfield = spec.partition("#")
            s = sub_of(env[var])
            m = SECRET_REF.match(s) if s is not None else None
            if not m:
                err(f"{who}: {var} must be a reference !Sub \"secretsmanager:${{{sres}}}{'#' + sfield if sfield else ''}\", is {show(env[var])}")
                continue
            if m["res"] not in secrets:
                err(f"{who}: {var} names {m['res']}, which is no AWS::SecretsManager::Secret of the template")
            if m["res"] != sres or (m["field"] or "") != sfield:
                err(f"{who}: {var} must reference {spec}, references {m['res']}{'#' + m['field'] if m['field'] else ''}")
            env_secrets.add(m["res"])
        for var, v in env.items():
            s = sub_of(v) or (v if isinstance(v, str) else "")
            if s.startswith("secretsmanager:") and var not in env_spec.get("secret_references", {}):
                err(f"{who}: {var} is a secret reference but infra/function-env.json does not list it in secret_references")

        def env_ref(var, kind):
            v = env.get(var)
            if v is None:
                return None
            r = ref_of(v)
            if r is None or r not in kind:
                err(f"{who}: {var} must be !Ref of the template's resource, is {show(v)}")
                return None
            return r

        table = env_ref("TABLE_NAME", tables)
        own_url_var = OWN_QUEUE_URL_VARS.get(binary)
        send_queues = {
            q for var in env if var.endswith("_QUEUE_URL") and var != own_url_var for q in [env_ref(var, queues)] if q
        }
        group = env_ref("SCHEDULE_GROUP_NAME", groups)
        scheduler_role = None
        if "SCHEDULER_ROLE_ARN" in env:
            ga = getatt_of(env["SCHEDULER_ROLE_ARN"])
            if not ga or ga[1] != "Arn" or ga[0] not in roles:
                err(f"{who}: SCHEDULER_ROLE_ARN must be !GetAtt <role>.Arn")
            else:
                scheduler_role = ga[0]
        if "DEADLINE_QUEUE_ARN" in env:
            ga = getatt_of(env["DEADLINE_QUEUE_ARN"])
            want = ref_of(env.get("DEADLINE_QUEUE_URL"))
            if not ga or ga != (want, "Arn"):
                err(f"{who}: DEADLINE_QUEUE_ARN must be !GetAtt {want}.Arn (the queue of DEADLINE_QUEUE_URL)")

        # event sources
        own_queue = None
        mappings = esm_by_fn.get(logical, [])
        for e_logical in mappings:
            ep = props(e_logical)
            ga = getatt_of(ep.get("EventSourceArn"))
            q = ga[0] if ga and ga[1] == "Arn" and ga[0] in queues else None
            if q is None:
                err(f"{who}: event source {e_logical} is not one of the template's SQS queues")
                continue
            own_queue = q
            if ep.get("FunctionResponseTypes") != ["ReportBatchItemFailures"]:
                err(f"{who}: event source mapping on {q} must have FunctionResponseTypes [ReportBatchItemFailures]")
            if not isinstance(ep.get("BatchSize"), int) or not 1 <= ep["BatchSize"] <= 10:
                err(f"{who}: event source mapping on {q} must set BatchSize between 1 and 10")
            window = ep.get("MaximumBatchingWindowInSeconds", 0)
            if q in NO_BATCHING_WINDOW and ep.get("MaximumBatchingWindowInSeconds") != 0:
                err(f"{who}: event source mapping on {q} must set MaximumBatchingWindowInSeconds 0 (messages leave at once)")
            vis = queues[q]["Properties"].get("VisibilityTimeout", 30)
            if not isinstance(vis, int) or vis < 6 * timeout + (window if isinstance(window, int) else 0):
                err(f"{who}: {q} VisibilityTimeout {vis} < 6 x Timeout {timeout} (+ batching window)")
        want_queue = CONSUMERS.get(binary)
        if len(mappings) > 1:
            err(f"{who}: more than one event source mapping ({mappings})")
        if want_queue != own_queue:
            err(f"{who}: must consume {want_queue or 'no queue'}, consumes {own_queue or 'no queue'}")
        if own_url_var in env:
            named = env_ref(own_url_var, queues)
            if named and named != own_queue:
                err(f"{who}: {own_url_var} must be !Ref {own_queue or 'the queue it consumes'}, is !Ref {named}")

        # IAM
        role_ga = getatt_of(fp.get("Role"))
        if not role_ga or role_ga[1] != "Arn" or role_ga[0] not in roles:
            err(f"{who}: Role must be !GetAtt of its own AWS::IAM::Role (SAM's generated role adds AWSLambdaBasicExecutionRole, logs on *)")
            continue
        role_logical = role_ga[0]
        others = [b for b, lg in fn_by_bin.items() if b != binary and getatt_of(props(lg).get("Role")) == role_ga]
        if others:
            err(f"{who}: role {role_logical} is shared with {others} (one role per function)")
        role = roles[role_logical]
        if trust_services(role) != {"lambda.amazonaws.com"}:
            err(f"{who}: role {role_logical} must be assumable by lambda.amazonaws.com only, is {sorted(trust_services(role))}")
        stmts, problems = statements_of(role)
        for p_ in problems:
            err(f"{who}: role {role_logical} {p_}")

        calls = manifests.get(binary)
        if isinstance(calls, str):
            err(f"{who}: {calls}")
            continue
        calls = calls or []
        expected: set[str] = set(LOGS_ACTIONS)
        for c in calls:
            if not re.fullmatch(r"[a-z0-9-]+:[A-Za-z0-9]+", c):
                err(f"{who}: aws-calls.json entry {c!r} is not service:Operation")
                continue
            expected |= set(EXPANSION.get(c, [c]))
        if own_queue:
            expected |= set(SQS_CONSUMER_ACTIONS)

        granted: dict[str, set[tuple]] = {}
        bad_resources: set[str] = set()  # actions already reported for a wildcard / unknown resource
        for st in stmts:
            if "NotAction" in st or "NotResource" in st or "NotPrincipal" in st:
                err(f"{who}: statement {st.get('Sid', '?')} uses NotAction/NotResource")
                continue
            if st.get("Effect") != "Allow":
                continue
            for a in as_list(st.get("Action", [])):
                if not isinstance(a, str) or "*" in a or "?" in a:
                    err(f"{who}: wildcard action {a!r}")
                    continue
                svc, _, op = a.partition(":")
                if iam_actions is not None and op.lower() not in iam_actions.get(svc.lower(), set()):
                    err(f"{who}: {a!r} is not an IAM action (IAM reference as shipped with cfn-lint)")
                if a == "iam:PassRole":
                    cond = st.get("Condition", {}).get("StringEquals", {}).get("iam:PassedToService")
                    if cond != "scheduler.amazonaws.com":
                        err(f"{who}: iam:PassRole needs Condition StringEquals iam:PassedToService scheduler.amazonaws.com")
                granted.setdefault(a, set())
                for r in as_list(st.get("Resource", [])):
                    c_ = classify_resource(r)
                    if c_[0] == "bad":
                        err(f"{who}: {a}: {c_[1]}")
                        bad_resources.add(a)
                        continue
                    granted[a].add(c_)
        actions = set(granted)
        missing = sorted(expected - actions)
        extra = sorted(actions - expected)
        if missing or extra:
            err(f"{who}: IAM actions differ from expansion(aws-calls.json) + logs/consumer extras — missing {missing}, extra {extra}")

        # which resources each granted action may name: exactly those the function is configured with
        gsi = [g["IndexName"] for g in table_def.get("GlobalSecondaryIndexes", [])]
        for a, got in sorted(granted.items()):
            svc = a.split(":", 1)[0]
            if a in LOGS_ACTIONS:
                allowed = {("log-streams", own_log_group)}
            elif a == "dynamodb:Query":
                allowed = {("arn", table)} | {("index", table, g) for g in gsi}
            elif svc == "dynamodb":
                allowed = {("arn", table)}
            elif a in OWN_QUEUE_ACTIONS and own_queue:
                allowed = {("arn", own_queue)}
            elif a == "sqs:SendMessage":
                allowed = {("arn", q) for q in send_queues}
            elif a == "secretsmanager:GetSecretValue":
                allowed = {("arn", s) for s in env_secrets}
            elif a == "scheduler:CreateSchedule":
                allowed = {("schedules", group)} if group else set()
            elif a == "iam:PassRole":
                allowed = {("arn", scheduler_role)} if scheduler_role else set()
            else:
                allowed = set()
            if got != allowed and a not in bad_resources:
                err(
                    f"{who}: {a} on {sorted(fmt_res(x) for x in got)}, must be exactly "
                    f"{sorted(fmt_res(x) for x in allowed) or 'nothing (the function is configured with no such resource)'}"
                )
        # permanent-failure alerts
        for alert in sorted(alerts.get(binary, ())):
            filters = [
                f
                for f in of_type("AWS::Logs::MetricFilter").values()
                if ref_of(f["Properties"].get("LogGroupName")) == own_log_group
                and re.search(r'\$\.fields\.alert\s*=\s*"' + re.escape(alert) + '"', f["Properties"].get("FilterPattern", ""))
            ]
            if not filters:
                err(f"{who}: no metric filter on {own_log_group} for {{ $.fields.alert = \"{alert}\" }}")
            for f in filters:
                for mt in f["Properties"].get("MetricTransformations", []):
                    if not any(
                        norm(a_["Properties"].get("Namespace")) == norm(mt.get("MetricNamespace"))
                        and a_["Properties"].get("MetricName") == mt.get("MetricName")
                        and a_["Properties"].get("Threshold") == 0
                        and a_["Properties"].get("ComparisonOperator") == "GreaterThanThreshold"
                        for a_ in alarms.values()
                    ):
                        err(f"{who}: no alarm (> 0) on metric {mt.get('MetricName')} of the {alert} filter")
        # function errors
        if not any(
            a_["Properties"].get("Namespace") == "AWS/Lambda"
            and a_["Properties"].get("MetricName") == "Errors"
            and any(ref_of(d.get("Value")) == logical for d in a_["Properties"].get("Dimensions", []))
            and a_["Properties"].get("Threshold") == 0
            for a_ in alarms.values()
        ):
            err(f"{who}: no AWS/Lambda Errors > 0 alarm")

    # ---------------------------------------------------------------- queues, DLQs, alarms
    dlqs: dict[str, str] = {}
    for q, qr in queues.items():
        rp = qr["Properties"].get("RedrivePolicy")
        if rp is None:
            continue
        target = getatt_of(rp.get("deadLetterTargetArn"))
        if not target or target[1] != "Arn" or target[0] not in queues:
            err(f"{q}: RedrivePolicy.deadLetterTargetArn must be !GetAtt <queue>.Arn")
            continue
        if not isinstance(rp.get("maxReceiveCount"), int) or not 1 <= rp["maxReceiveCount"] <= 1000:
            err(f"{q}: RedrivePolicy.maxReceiveCount must be an integer 1..1000")
        dlqs[target[0]] = q
        src_ret = qr["Properties"].get("MessageRetentionPeriod", 345600)
        dlq_ret = queues[target[0]]["Properties"].get("MessageRetentionPeriod", 345600)
        if dlq_ret < src_ret:
            err(f"{target[0]}: retention {dlq_ret} s is shorter than its source {q}'s {src_ret} s")
    for q in queues:
        if q not in dlqs and "RedrivePolicy" not in queues[q]["Properties"]:
            err(f"{q}: no dead-letter queue (RedrivePolicy)")
        if q in dlqs and "RedrivePolicy" in queues[q]["Properties"]:
            err(f"{q}: a dead-letter queue must not redrive further")
    for dlq, src in dlqs.items():
        if not any(
            a_["Properties"].get("Namespace") == "AWS/SQS"
            and a_["Properties"].get("MetricName") == "ApproximateNumberOfMessagesVisible"
            and any(getatt_of(d.get("Value")) == (dlq, "QueueName") for d in a_["Properties"].get("Dimensions", []))
            and a_["Properties"].get("Threshold") == 0
            and a_["Properties"].get("ComparisonOperator") == "GreaterThanThreshold"
            for a_ in alarms.values()
        ):
            err(f"{dlq} (dead-letter queue of {src}): no alarm on ApproximateNumberOfMessagesVisible > 0")
    refund_q = CONSUMERS["refund-executor"]
    if not any(
        a_["Properties"].get("Namespace") == "AWS/SQS"
        and a_["Properties"].get("MetricName") == "ApproximateAgeOfOldestMessage"
        and any(getatt_of(d.get("Value")) == (refund_q, "QueueName") for d in a_["Properties"].get("Dimensions", []))
        and isinstance(a_["Properties"].get("Threshold"), (int, float))
        and a_["Properties"]["Threshold"] <= 300
        for a_ in alarms.values()
    ):
        err(f"{refund_q}: no alarm on ApproximateAgeOfOldestMessage > 300 s (oldest unsettled refund)")
    for a_logical, a_ in alarms.items():
        if not a_["Properties"].get("AlarmActions"):
            err(f"{a_logical}: no AlarmActions (notify the alarm topic)")

    # ---------------------------------------------------------------- Scheduler
    deadline_fn = fn_by_bin.get("deadline")
    sched_roles = {
        getatt_of(props(lg).get("Environment", {}).get("Variables", {}).get("SCHEDULER_ROLE_ARN"))
        for lg in fn_by_bin.values()
    } - {None}
    for ga in sched_roles:
        r_logical = ga[0]
        if r_logical not in roles:
            continue
        role = roles[r_logical]
        if trust_services(role) != {"scheduler.amazonaws.com"}:
            err(f"{r_logical}: the deadline scheduler role must be assumable by scheduler.amazonaws.com only")
        stmts, problems = statements_of(role)
        for p_ in problems:
            err(f"{r_logical}: {p_}")
        got = {(a, classify_resource(r)) for st in stmts for a in as_list(st.get("Action", [])) for r in as_list(st.get("Resource", []))}
        want = {("sqs:SendMessage", ("arn", CONSUMERS["deadline"]))}
        if got != want:
            err(f"{r_logical}: must allow exactly sqs:SendMessage on {CONSUMERS['deadline']}, allows {sorted((a, fmt_res(r)) for a, r in got)}")
    if not sched_roles:
        err("no function names a SCHEDULER_ROLE_ARN")

    schedules = of_type("AWS::Scheduler::Schedule")
    sweeps = [
        (k, s)
        for k, s in schedules.items()
        if getatt_of(s["Properties"].get("Target", {}).get("Arn")) == (deadline_fn, "Arn")
    ]
    if len(sweeps) != 1:
        err(f"expected one AWS::Scheduler::Schedule invoking the deadline function (the sweep), found {[k for k, _ in sweeps]}")
    for k, s in sweeps:
        sp = s["Properties"]
        if sp.get("ScheduleExpression") != "rate(1 minute)":
            err(f"{k}: ScheduleExpression must be rate(1 minute)")
        if sp.get("FlexibleTimeWindow") != {"Mode": "OFF"}:
            err(f"{k}: FlexibleTimeWindow must be {{Mode: OFF}}")
        if sp.get("State", "ENABLED") != "ENABLED":
            err(f"{k}: must be ENABLED")
        try:
            if json.loads(sp["Target"].get("Input", "")) != SWEEP_INPUT:
                raise ValueError
        except ValueError:
            err(f"{k}: Target.Input must be {json.dumps(SWEEP_INPUT)}")
        rga = getatt_of(sp["Target"].get("RoleArn"))
        if not rga or rga[0] not in roles:
            err(f"{k}: Target.RoleArn must be !GetAtt of its own role")
            continue
        if rga in sched_roles:
            err(f"{k}: the sweep must have its own role, not the deadline queue's")
        role = roles[rga[0]]
        if trust_services(role) != {"scheduler.amazonaws.com"}:
            err(f"{rga[0]}: must be assumable by scheduler.amazonaws.com only")
        stmts, problems = statements_of(role)
        for p_ in problems:
            err(f"{rga[0]}: {p_}")
        got = {(a, classify_resource(r)) for st in stmts for a in as_list(st.get("Action", [])) for r in as_list(st.get("Resource", []))}
        want = {("lambda:InvokeFunction", ("arn", deadline_fn))}
        if got != want:
            err(f"{rga[0]}: must allow exactly lambda:InvokeFunction on {deadline_fn}, allows {sorted((a, fmt_res(r)) for a, r in got)}")

    # ---------------------------------------------------------------- secrets
    for logical, s in secrets.items():
        gen = s["Properties"].get("GenerateSecretString")
        if gen is None:
            continue
        alphabet = set()
        if not gen.get("ExcludeLowercase"):
            alphabet |= set(string.ascii_lowercase)
        if not gen.get("ExcludeUppercase"):
            alphabet |= set(string.ascii_uppercase)
        if not gen.get("ExcludeNumbers"):
            alphabet |= set(string.digits)
        if not gen.get("ExcludePunctuation"):
            alphabet |= set(string.punctuation)
        if gen.get("IncludeSpace"):
            alphabet.add(" ")
        alphabet -= set(gen.get("ExcludeCharacters", ""))
        exclude = set(gen.get("ExcludeCharacters", ""))
        printable_but_hex = {chr(c) for c in range(0x21, 0x7F)} - set("0123456789abcdef")
        if alphabet != set("0123456789abcdef") or gen.get("PasswordLength") != 64 or exclude != printable_but_hex:
            err(
                f"{logical}: must generate 64 lowercase hex characters (PasswordLength 64, ExcludeCharacters = every "
                f"printable character but 0-9a-f); generates {gen.get('PasswordLength')} of {''.join(sorted(alphabet))!r}"
            )
    for var, spec in env_spec.get("secret_references", {}).items():
        if spec.partition("#")[0] not in secrets:
            err(f"infra/function-env.json: {var} refers to {spec}, not a secret of the template")

    # ---------------------------------------------------------------- HTTP routes
    routes = {r["Properties"].get("RouteKey"): (k, r["Properties"]) for k, r in of_type("AWS::ApiGatewayV2::Route").items()}
    integrations = of_type("AWS::ApiGatewayV2::Integration")
    for key, (binary, auth) in ROUTES.items():
        if key not in routes:
            err(f"route {key!r} missing")
            continue
        k, rp = routes[key]
        if rp.get("AuthorizationType", "NONE") != auth:
            err(f"route {key!r}: AuthorizationType must be {auth}")
        m = re.fullmatch(r"integrations/\$\{(\w+)\}", sub_of(rp.get("Target")) or "")
        target_fn = getatt_of(integrations.get(m[1], {}).get("Properties", {}).get("IntegrationUri")) if m else None
        if not target_fn or target_fn[0] != fn_by_bin.get(binary):
            err(f"route {key!r}: must integrate {binary}")
    for key in set(routes) - set(ROUTES):
        err(f"route {key!r} is not in the HTTP contract")
    for binary in {b for b, _ in ROUTES.values()}:
        lg = fn_by_bin.get(binary)
        if lg and not any(
            ref_of(p["Properties"].get("FunctionName")) == lg and p["Properties"].get("Principal") == "apigateway.amazonaws.com"
            for p in of_type("AWS::Lambda::Permission").values()
        ):
            err(f"{binary}: no AWS::Lambda::Permission for API Gateway")

    # ---------------------------------------------------------------- outputs
    for o in REQUIRED_OUTPUTS:
        if o not in raw.get("Outputs", {}):
            err(f"output {o} missing")

    return errors, notes


# --------------------------------------------------------------------------------------------------------
# Self-test: each breakage must be caught, with a message that names it.


def _fn(t, logical):
    return t["Resources"][logical]["Properties"]


def _stmt(t, role, sid):
    for st in t["Resources"][role]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]:
        if st.get("Sid") == sid:
            return st
    raise KeyError(f"{role}/{sid}")


def _append_action(st, action):
    st["Action"] = as_list(st["Action"]) + [action]


MUTATIONS = [
    (
        "an extra IAM action",
        lambda t, m: _append_action(_stmt(t, "RefundExecutorRole", "Table"), "dynamodb:DeleteItem"),
        "refund-executor: IAM actions differ",
    ),
    (
        "an action the manifest gained but the role lacks",
        lambda t, m: m["deadline"].append("secretsmanager:GetSecretValue"),
        "missing ['secretsmanager:GetSecretValue']",
    ),
    (
        "a wildcard resource",
        lambda t, m: _stmt(t, "QrProvisionRole", "Table").__setitem__("Resource", "*"),
        "qr-provision: dynamodb:GetItem: wildcard resource '*'",
    ),
    (
        "a wildcard action",
        lambda t, m: _stmt(t, "DeviceApiRole", "Queues").__setitem__("Action", "sqs:*"),
        "device-api: wildcard action 'sqs:*'",
    ),
    (
        "the GSI granted to a function that does not Query",
        lambda t, m: _stmt(t, "DeviceApiRole", "Table").__setitem__(
            "Resource", [{"Fn::GetAtt": ["Table", "Arn"]}, {"Fn::Sub": "${Table.Arn}/index/gsi1"}]
        ),
        "device-api: dynamodb:GetItem on ['Table', 'Table/index/gsi1']",
    ),
    (
        "SendMessage to a queue the function is not configured with",
        lambda t, m: _stmt(t, "AlipayNotifyRole", "Queues")["Resource"].append({"Fn::GetAtt": ["DeviceEventsQueue", "Arn"]}),
        "alipay-notify: sqs:SendMessage on",
    ),
    (
        "the queue URL of a consumer's backoff naming another queue",
        lambda t, m: _fn(t, "DeviceApiFunction")["Environment"]["Variables"].__setitem__("DEVICE_EVENTS_QUEUE_URL", {"Ref": "RefundQueue"}),
        "device-api: DEVICE_EVENTS_QUEUE_URL must be !Ref DeviceEventsQueue",
    ),
    (
        "PassRole on another role",
        lambda t, m: _stmt(t, "DeadlineRole", "PassSchedulerRole").__setitem__("Resource", {"Fn::GetAtt": ["SweepSchedulerRole", "Arn"]}),
        "deadline: iam:PassRole on ['SweepSchedulerRole']",
    ),
    (
        "a batch without partial failures",
        lambda t, m: _fn(t, "DeadlineFunction")["Events"]["Deadlines"]["Properties"].pop("FunctionResponseTypes"),
        "deadline: event source mapping on DeadlineQueue must have FunctionResponseTypes",
    ),
    (
        "a batching window on the refund queue",
        lambda t, m: _fn(t, "RefundExecutorFunction")["Events"]["Refunds"]["Properties"].__setitem__("MaximumBatchingWindowInSeconds", 5),
        "must set MaximumBatchingWindowInSeconds 0",
    ),
    (
        "refund-executor without reserved concurrency",
        lambda t, m: _fn(t, "RefundExecutorFunction").pop("ReservedConcurrentExecutions"),
        "refund-executor: set ReservedConcurrentExecutions",
    ),
    (
        "a visibility timeout below 6 x the timeout",
        lambda t, m: t["Resources"]["RefundQueue"]["Properties"].__setitem__("VisibilityTimeout", 60),
        "RefundQueue VisibilityTimeout 60 < 6 x Timeout 30",
    ),
    (
        "a queue without a DLQ",
        lambda t, m: t["Resources"]["DeviceEventsQueue"]["Properties"].pop("RedrivePolicy"),
        "DeviceEventsQueue: no dead-letter queue",
    ),
    (
        "a DLQ without an alarm",
        lambda t, m: t["Resources"].pop("RefundDLQAlarm"),
        "RefundDLQ (dead-letter queue of RefundQueue): no alarm",
    ),
    (
        "the table drifting from infra/table.json",
        lambda t, m: t["Resources"]["Table"]["Properties"].__setitem__("BillingMode", "PROVISIONED"),
        "Table: Properties differ from infra/table.json in ['BillingMode']",
    ),
    (
        "a missing environment variable",
        lambda t, m: _fn(t, "RefundExecutorFunction")["Environment"]["Variables"].pop("ALIPAY_MD5_KEY"),
        "refund-executor: environment lacks ['ALIPAY_MD5_KEY']",
    ),
    (
        "a common variable dropped from Globals",
        lambda t, m: t["Globals"]["Function"]["Environment"]["Variables"].pop("ORDER_PAYMENT_WINDOW_SECS"),
        "deadline: environment lacks ['ORDER_PAYMENT_WINDOW_SECS']",
    ),
    (
        "a secret given as a value",
        lambda t, m: _fn(t, "DeviceApiFunction")["Environment"]["Variables"].__setitem__("DEVICE_KEY", "00" * 32),
        "device-api: DEVICE_KEY must be a reference",
    ),
    (
        "a secret referenced without the permission to read it",
        lambda t, m: _stmt(t, "QrProvisionRole", "Secrets").__setitem__("Resource", {"Ref": "AlipaySecret"}),
        "qr-provision: secretsmanager:GetSecretValue on ['AlipaySecret'], must be exactly ['AlipaySecret', 'DeviceKeySecret']",
    ),
    (
        "a DEVICE_KEY alphabet wider than hex",
        lambda t, m: t["Resources"]["DeviceKeySecret"]["Properties"]["GenerateSecretString"].__setitem__(
            "ExcludeCharacters", t["Resources"]["DeviceKeySecret"]["Properties"]["GenerateSecretString"]["ExcludeCharacters"].replace("g", "")
        ),
        "DeviceKeySecret: must generate 64 lowercase hex characters",
    ),
    (
        "a flexible sweep",
        lambda t, m: t["Resources"]["SweepSchedule"]["Properties"].__setitem__("FlexibleTimeWindow", {"Mode": "FLEXIBLE", "MaximumWindowInMinutes": 5}),
        "SweepSchedule: FlexibleTimeWindow must be {Mode: OFF}",
    ),
    (
        "the sweep role allowed more",
        lambda t, m: _append_action(t["Resources"]["SweepSchedulerRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"][0], "lambda:GetFunction"),
        "SweepSchedulerRole: must allow exactly lambda:InvokeFunction",
    ),
    (
        "an admin route without IAM",
        lambda t, m: t["Resources"]["AdminLabelRoute"]["Properties"].__setitem__("AuthorizationType", "NONE"),
        "route 'GET /admin/devices/{device_id}/label.svg': AuthorizationType must be AWS_IAM",
    ),
    (
        "SAM's generated role instead of an own one",
        lambda t, m: _fn(t, "DeadlineFunction").pop("Role"),
        "deadline: role DeadlineFunctionRole has managed policies",
    ),
    (
        "a missing manifest",
        lambda t, m: m.__setitem__("qr-provision", "functions/qr-provision/aws-calls.json is missing"),
        "qr-provision: functions/qr-provision/aws-calls.json is missing",
    ),
    (
        "a function building another binary than its crate",
        lambda t, m: t["Resources"]["QrProvisionFunction"]["Metadata"]["BuildProperties"].__setitem__("Binary", "qr-provisioner"),
        "qr-provisioner",
    ),
    (
        "an alert the code logs without a metric filter",
        lambda t, m: t["Resources"].pop("RefundMessageRefusedFilter"),
        'refund-executor: no metric filter on RefundExecutorLogGroup for { $.fields.alert = "refund_message_refused" }',
    ),
    (
        "an alert filter on the wrong field",
        lambda t, m: t["Resources"]["RefundFailedPermanentlyFilter"]["Properties"].__setitem__("FilterPattern", '{ $.alert = "refund_failed_permanently" }'),
        "refund-executor: no metric filter on RefundExecutorLogGroup",
    ),
]


def self_test(raw, manifests, env_spec, table_def, crates) -> int:
    failures = 0
    for name, mutate, expect in MUTATIONS:
        t, m = copy.deepcopy(raw), copy.deepcopy(manifests)
        try:
            mutate(t, m)
        except (KeyError, IndexError, TypeError) as e:
            failures += 1
            print(f"  NOT APPLIED: {name}: the template no longer has what this breakage edits ({e!r}); update MUTATIONS")
            continue
        errors, _ = check(t, m, env_spec, table_def, crates)
        if any(expect in e for e in errors):
            print(f"  caught: {name}")
        else:
            failures += 1
            print(f"  NOT CAUGHT: {name}: expected an error containing {expect!r}; got:")
            for e in errors or ["(no errors)"]:
                print(f"      {e}")
    return failures


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
