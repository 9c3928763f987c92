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
from dataclasses import dataclass, field
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
# ConditionCheck parts (shared/3-adapters/store-aws/src/dynamo.rs); a Delete part would need dynamodb:DeleteItem added
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
#
# check() runs one function per concern, always in the same order (the order of the error messages). Each
# appends its errors to the _Template it is given; what a later check needs from an earlier one (the
# function of each binary, a function's log group, queue, role statements ...) is returned, or kept on the
# _Function being checked.


class _Template:
    """The transformed template and the repository's specs it is held to; collects the errors and notes."""

    def __init__(self, raw: dict, cfn: dict, manifests: dict, env_spec: dict, table_def: dict, alerts: dict[str, set[str]]):
        self.raw = raw
        self.res = cfn.get("Resources", {})
        self.raw_res = raw.get("Resources", {})
        self.params = raw.get("Parameters", {})
        self.manifests = manifests
        self.env_spec = env_spec
        self.table_def = table_def
        self.alerts = alerts
        self.errors: list[str] = []
        self.notes: list[str] = []
        self.err = self.errors.append
        self.iam_actions = iam_action_list()
        if self.iam_actions is None:
            self.notes.append("cfn-lint not importable: IAM action names not checked against the IAM reference")
        self.tables = self.of_type("AWS::DynamoDB::Table")
        self.queues = self.of_type("AWS::SQS::Queue")
        self.secrets = self.of_type("AWS::SecretsManager::Secret")
        self.log_groups = self.of_type("AWS::Logs::LogGroup")
        self.groups = self.of_type("AWS::Scheduler::ScheduleGroup")
        self.roles = self.of_type("AWS::IAM::Role")
        self.esms = self.of_type("AWS::Lambda::EventSourceMapping")
        self.alarms = self.of_type("AWS::CloudWatch::Alarm")

    def of_type(self, t: str) -> dict:
        return {k: v for k, v in self.res.items() if v.get("Type") == t}

    def props(self, logical: str) -> dict:
        return self.res.get(logical, {}).get("Properties", {})


@dataclass
class _Function:
    """One function of the template, and the resources its checks found it configured with."""

    binary: str
    logical: str
    fp: dict
    timeout: object = None
    own_log_group: str | None = None
    env_secrets: set[str] = field(default_factory=set)
    table: str | None = None
    send_queues: set[str] = field(default_factory=set)
    group: str | None = None
    scheduler_role: str | None = None
    own_queue: str | None = None

    @property
    def who(self) -> str:
        return self.binary

    @property
    def env(self) -> dict:
        return self.fp.get("Environment", {}).get("Variables", {})

    @property
    def own_url_var(self) -> str | None:
        return OWN_QUEUE_URL_VARS.get(self.binary)


def check(raw: dict, manifests: dict, env_spec: dict, table_def: dict, crates: dict | None) -> tuple[list[str], list[str]]:
    """Returns (errors, notes)."""
    alerts = code_alerts(crates)
    try:
        cfn = transform(raw)
    except Exception as e:  # noqa: BLE001 - the translator's own message is the useful one
        return [f"SAM could not transform the template: {e}"], []
    t = _Template(raw, cfn, manifests, env_spec, table_def, alerts)

    # functions <-> crates
    fn_by_bin = check_function_builds(t)
    check_no_foreign_lambdas(t)
    check_functions_match_crates(t, fn_by_bin, crates)
    # table
    check_table(t)
    check_no_standalone_iam(t)
    # per function
    check_log_retention_parameter(t)
    esm_by_fn = event_sources_by_function(t)
    for binary, logical in sorted(fn_by_bin.items()):
        check_function(t, binary, logical, fn_by_bin, esm_by_fn)
    # queues, DLQs, alarms
    dlqs = check_redrive_policies(t)
    check_dead_letter_queues(t, dlqs)
    check_dlq_alarms(t, dlqs)
    check_refund_queue_age_alarm(t)
    check_alarm_actions(t)
    # Scheduler
    sched_roles = check_scheduler_roles(t, fn_by_bin)
    check_sweep_schedule(t, fn_by_bin, sched_roles)
    # secrets
    check_generated_secrets(t)
    check_secret_specs(t)
    # HTTP routes
    check_routes(t, fn_by_bin)
    check_api_permissions(t, fn_by_bin)
    # outputs
    check_outputs(t)
    return t.errors, t.notes


# ---------------------------------------------------------------- functions <-> crates


def check_function_builds(t: _Template) -> dict[str, str]:
    """Each AWS::Serverless::Function builds its own binary with cargo-lambda from CodeUri '..'; returns binary -> logical id."""
    raw_functions = {k: v for k, v in t.raw_res.items() if v.get("Type") == "AWS::Serverless::Function"}
    globals_fn = t.raw.get("Globals", {}).get("Function", {})
    fn_by_bin: dict[str, str] = {}
    for logical, r in raw_functions.items():
        meta = r.get("Metadata", {})
        binary = meta.get("BuildProperties", {}).get("Binary")
        if meta.get("BuildMethod") != "rust-cargolambda" or not isinstance(binary, str):
            t.err(f"{logical}: Metadata must be BuildMethod rust-cargolambda with BuildProperties.Binary")
            continue
        if binary in fn_by_bin:
            t.err(f"{logical}: binary {binary!r} is also built by {fn_by_bin[binary]}")
        fn_by_bin[binary] = logical
        p = {**globals_fn, **r.get("Properties", {})}
        if p.get("CodeUri") != "..":
            t.err(f"{binary}: CodeUri must be '..' (the workspace root seen from infra/), is {show(p.get('CodeUri'))}")
    return fn_by_bin


def check_no_foreign_lambdas(t: _Template) -> None:
    """Every Lambda function of the transformed template is one of the raw template's AWS::Serverless::Function."""
    raw_functions = {k: v for k, v in t.raw_res.items() if v.get("Type") == "AWS::Serverless::Function"}
    for logical, r in t.res.items():
        if r.get("Type") == "AWS::Lambda::Function" and logical not in raw_functions:
            t.err(f"{logical}: a Lambda function that is not one of the Rust crates' AWS::Serverless::Function")


def check_functions_match_crates(t: _Template, fn_by_bin: dict[str, str], crates: dict | None) -> None:
    """The functions built are exactly those of infra/function-env.json and of the functions/*/Cargo.toml binaries."""
    spec_fns = t.env_spec.get("functions", {})
    if set(spec_fns) != set(fn_by_bin):
        t.err(f"infra/function-env.json names {sorted(spec_fns)} but the template builds {sorted(fn_by_bin)}")
    if crates:
        missing = sorted(set(crates) - set(fn_by_bin))
        extra = sorted(set(fn_by_bin) - set(crates))
        for b in missing:
            t.err(f"crate {crates[b].relative_to(ROOT) if crates[b].is_relative_to(ROOT) else crates[b]} (binary {b!r}) has no function in the template")
        for b in extra:
            t.err(f"function {fn_by_bin[b]} builds binary {b!r}, which no functions/*/Cargo.toml defines")
    else:
        t.notes.append("no functions/*/Cargo.toml yet: functions checked against infra/function-env.json only")


# ---------------------------------------------------------------- table


def check_table(t: _Template) -> None:
    """One AWS::DynamoDB::Table, its Properties those of infra/table.json, with DeletionPolicy Retain."""
    if len(t.tables) != 1:
        t.err(f"expected one AWS::DynamoDB::Table, found {sorted(t.tables)}")
    for logical, tb in t.tables.items():
        if norm(tb.get("Properties", {})) != norm(t.table_def):
            want, got = norm(t.table_def), norm(tb.get("Properties", {}))
            diff = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
            t.err(f"{logical}: Properties differ from infra/table.json in {diff}")
        if tb.get("DeletionPolicy") != "Retain":
            t.err(f"{logical}: DeletionPolicy must be Retain (it holds the money)")


def check_no_standalone_iam(t: _Template) -> None:
    """No IAM policies, managed policies, users or groups: permissions live in the roles' inline policies only."""
    for logical, r in t.res.items():
        if r.get("Type") in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::IAM::User", "AWS::IAM::Group"):
            t.err(f"{logical}: {r['Type']} — the functions' permissions live in their roles' inline policies only")


# ---------------------------------------------------------------- per function


def check_log_retention_parameter(t: _Template) -> None:
    """The LogRetentionDays parameter defaults to 30."""
    retention = t.params.get("LogRetentionDays", {})
    if retention.get("Default") != 30:
        t.err(f"parameter LogRetentionDays must default to 30, is {show(retention.get('Default'))}")


def event_sources_by_function(t: _Template) -> dict[str, list[str]]:
    """The event source mappings of each function (logical ids), in template order; checks nothing itself."""
    esm_by_fn: dict[str, list[str]] = {}
    for e_logical, e in t.esms.items():
        esm_by_fn.setdefault(ref_of(e["Properties"].get("FunctionName")) or "?", []).append(e_logical)
    return esm_by_fn


def check_function(t: _Template, binary: str, logical: str, fn_by_bin: dict[str, str], esm_by_fn: dict[str, list[str]]) -> None:
    """Holds one function to its runtime, logs, environment, event source, role, IAM grants and alarms, in that order."""
    f = _Function(binary, logical, t.props(logical))
    check_runtime(t, f)
    check_reserved_concurrency(t, f)
    check_sizing(t, f)
    check_logging(t, f, fn_by_bin)
    check_environment(t, f)
    check_secret_references(t, f)
    check_environment_resources(t, f)
    check_event_sources(t, f, esm_by_fn.get(logical, []))
    stmts = check_role(t, f, fn_by_bin)
    if stmts is None:
        return
    grants = check_iam_actions(t, f, stmts)
    if grants is None:
        return
    check_iam_resources(t, f, *grants)
    check_alert_alarms(t, f)
    check_errors_alarm(t, f)


def check_runtime(t: _Template, f: _Function) -> None:
    """Runtime provided.al2023 on arm64, Handler bootstrap."""
    fp, who = f.fp, f.who
    if fp.get("Runtime") != "provided.al2023":
        t.err(f"{who}: Runtime must be provided.al2023, is {show(fp.get('Runtime'))}")
    if fp.get("Architectures") != ["arm64"]:
        t.err(f"{who}: Architectures must be [arm64], is {show(fp.get('Architectures'))}")
    if fp.get("Handler") != "bootstrap":
        t.err(f"{who}: Handler must be bootstrap")


def check_reserved_concurrency(t: _Template, f: _Function) -> None:
    """The functions that settle and refund (deadline, refund-executor) have ReservedConcurrentExecutions set."""
    # The functions that settle and refund keep capacity of their own: a flood of machine requests
    # must not throttle them (as a parameter, so a low-quota account can set 0).
    if f.binary in ("deadline", "refund-executor") and "ReservedConcurrentExecutions" not in f.fp:
        t.err(f"{f.who}: set ReservedConcurrentExecutions (MoneyFunctionsReservedConcurrency)")


def check_sizing(t: _Template, f: _Function) -> None:
    """Timeout and MemorySize set explicitly; keeps the timeout (3 when not set right) for the queue checks."""
    timeout = f.fp.get("Timeout")
    if not isinstance(timeout, int) or not isinstance(f.fp.get("MemorySize"), int):
        t.err(f"{f.who}: set Timeout and MemorySize explicitly")
        timeout = 3
    f.timeout = timeout


def check_logging(t: _Template, f: _Function, fn_by_bin: dict[str, str]) -> None:
    """JSON logs into the function's own log group (shared with no other), kept RetentionInDays !Ref LogRetentionDays."""
    who, binary = f.who, f.binary
    lc = f.fp.get("LoggingConfig", {})
    own_log_group = ref_of(lc.get("LogGroup"))
    f.own_log_group = own_log_group
    if lc.get("LogFormat") != "JSON":
        t.err(f"{who}: LoggingConfig.LogFormat must be JSON (the alert metric filters read $.fields.alert)")
    if own_log_group not in t.log_groups:
        t.err(f"{who}: LoggingConfig.LogGroup must be !Ref of its own AWS::Logs::LogGroup")
    elif ref_of(t.log_groups[own_log_group]["Properties"].get("RetentionInDays")) != "LogRetentionDays":
        t.err(f"{who}: log group {own_log_group} must have RetentionInDays !Ref LogRetentionDays")
    sharing = [b for b, lg in fn_by_bin.items() if b != binary and ref_of(t.props(lg).get("LoggingConfig", {}).get("LogGroup")) == own_log_group]
    if own_log_group and sharing:
        t.err(f"{who}: log group {own_log_group} is shared with {sharing} (one per function: alerts are per function)")


def check_environment(t: _Template, f: _Function) -> None:
    """The function's environment variables are exactly its list in infra/function-env.json."""
    env = f.env
    want_env = t.env_spec.get("functions", {}).get(f.binary, [])
    missing = sorted(set(want_env) - set(env))
    extra = sorted(set(env) - set(want_env))
    if missing:
        t.err(f"{f.who}: environment lacks {missing} (infra/function-env.json)")
    if extra:
        t.err(f"{f.who}: environment has {extra}, not in infra/function-env.json")


def check_secret_references(t: _Template, f: _Function) -> None:
    """Secret settings are the `secretsmanager:<secret>[#field]` references of secret_references to the template's secrets, never values."""
    env, who = f.env, f.who
    for var, spec in t.env_spec.get("secret_references", {}).items():
        if var not in env:
            continue
        sres, _, sfield = spec.partition("#")
        s = sub_of(env[var])
        m = SECRET_REF.match(s) if s is not None else None
        if not m:
            t.err(f"{who}: {var} must be a reference !Sub \"secretsmanager:${{{sres}}}{'#' + sfield if sfield else ''}\", is {show(env[var])}")
            continue
        if m["res"] not in t.secrets:
            t.err(f"{who}: {var} names {m['res']}, which is no AWS::SecretsManager::Secret of the template")
        if m["res"] != sres or (m["field"] or "") != sfield:
            t.err(f"{who}: {var} must reference {spec}, references {m['res']}{'#' + m['field'] if m['field'] else ''}")
        f.env_secrets.add(m["res"])
    for var, v in env.items():
        s = sub_of(v) or (v if isinstance(v, str) else "")
        if s.startswith("secretsmanager:") and var not in t.env_spec.get("secret_references", {}):
            t.err(f"{who}: {var} is a secret reference but infra/function-env.json does not list it in secret_references")


def _env_ref(t: _Template, f: _Function, var: str, kind: dict) -> str | None:
    """The variable, if set, is !Ref of one of the template's resources of that kind; returns its logical id."""
    v = f.env.get(var)
    if v is None:
        return None
    r = ref_of(v)
    if r is None or r not in kind:
        t.err(f"{f.who}: {var} must be !Ref of the template's resource, is {show(v)}")
        return None
    return r


def check_environment_resources(t: _Template, f: _Function) -> None:
    """TABLE_NAME, the queue URLs, SCHEDULE_GROUP_NAME, SCHEDULER_ROLE_ARN and DEADLINE_QUEUE_ARN name the template's resources."""
    env, who = f.env, f.who
    f.table = _env_ref(t, f, "TABLE_NAME", t.tables)
    f.send_queues = {
        q for var in env if var.endswith("_QUEUE_URL") and var != f.own_url_var for q in [_env_ref(t, f, var, t.queues)] if q
    }
    f.group = _env_ref(t, f, "SCHEDULE_GROUP_NAME", t.groups)
    if "SCHEDULER_ROLE_ARN" in env:
        ga = getatt_of(env["SCHEDULER_ROLE_ARN"])
        if not ga or ga[1] != "Arn" or ga[0] not in t.roles:
            t.err(f"{who}: SCHEDULER_ROLE_ARN must be !GetAtt <role>.Arn")
        else:
            f.scheduler_role = ga[0]
    if "DEADLINE_QUEUE_ARN" in env:
        ga = getatt_of(env["DEADLINE_QUEUE_ARN"])
        want = ref_of(env.get("DEADLINE_QUEUE_URL"))
        if not ga or ga != (want, "Arn"):
            t.err(f"{who}: DEADLINE_QUEUE_ARN must be !GetAtt {want}.Arn (the queue of DEADLINE_QUEUE_URL)")


def check_event_sources(t: _Template, f: _Function, mappings: list[str]) -> None:
    """The function consumes exactly the queue CONSUMERS gives it (one mapping at most), and its own queue URL names that queue."""
    who = f.who
    for e_logical in mappings:
        q = check_event_source_mapping(t, f, e_logical)
        if q is not None:
            f.own_queue = q
    want_queue = CONSUMERS.get(f.binary)
    if len(mappings) > 1:
        t.err(f"{who}: more than one event source mapping ({mappings})")
    if want_queue != f.own_queue:
        t.err(f"{who}: must consume {want_queue or 'no queue'}, consumes {f.own_queue or 'no queue'}")
    if f.own_url_var in f.env:
        named = _env_ref(t, f, f.own_url_var, t.queues)
        if named and named != f.own_queue:
            t.err(f"{who}: {f.own_url_var} must be !Ref {f.own_queue or 'the queue it consumes'}, is !Ref {named}")


def check_event_source_mapping(t: _Template, f: _Function, e_logical: str) -> str | None:
    """A mapping on a template queue reports batch item failures, BatchSize 1..10, no window where due, visibility >= 6 x timeout; returns the queue."""
    who = f.who
    ep = t.props(e_logical)
    ga = getatt_of(ep.get("EventSourceArn"))
    q = ga[0] if ga and ga[1] == "Arn" and ga[0] in t.queues else None
    if q is None:
        t.err(f"{who}: event source {e_logical} is not one of the template's SQS queues")
        return None
    if ep.get("FunctionResponseTypes") != ["ReportBatchItemFailures"]:
        t.err(f"{who}: event source mapping on {q} must have FunctionResponseTypes [ReportBatchItemFailures]")
    if not isinstance(ep.get("BatchSize"), int) or not 1 <= ep["BatchSize"] <= 10:
        t.err(f"{who}: event source mapping on {q} must set BatchSize between 1 and 10")
    window = ep.get("MaximumBatchingWindowInSeconds", 0)
    if q in NO_BATCHING_WINDOW and ep.get("MaximumBatchingWindowInSeconds") != 0:
        t.err(f"{who}: event source mapping on {q} must set MaximumBatchingWindowInSeconds 0 (messages leave at once)")
    vis = t.queues[q]["Properties"].get("VisibilityTimeout", 30)
    if not isinstance(vis, int) or vis < 6 * f.timeout + (window if isinstance(window, int) else 0):
        t.err(f"{who}: {q} VisibilityTimeout {vis} < 6 x Timeout {f.timeout} (+ batching window)")
    return q


def check_role(t: _Template, f: _Function, fn_by_bin: dict[str, str]) -> list[dict] | None:
    """The function has a role of its own, assumable by Lambda only, with well-formed inline policies; returns its statements (None: no own role)."""
    who, binary = f.who, f.binary
    role_ga = getatt_of(f.fp.get("Role"))
    if not role_ga or role_ga[1] != "Arn" or role_ga[0] not in t.roles:
        t.err(f"{who}: Role must be !GetAtt of its own AWS::IAM::Role (SAM's generated role adds AWSLambdaBasicExecutionRole, logs on *)")
        return None
    role_logical = role_ga[0]
    others = [b for b, lg in fn_by_bin.items() if b != binary and getatt_of(t.props(lg).get("Role")) == role_ga]
    if others:
        t.err(f"{who}: role {role_logical} is shared with {others} (one role per function)")
    role = t.roles[role_logical]
    if trust_services(role) != {"lambda.amazonaws.com"}:
        t.err(f"{who}: role {role_logical} must be assumable by lambda.amazonaws.com only, is {sorted(trust_services(role))}")
    stmts, problems = statements_of(role)
    for p_ in problems:
        t.err(f"{who}: role {role_logical} {p_}")
    return stmts


def check_iam_actions(t: _Template, f: _Function, stmts: list[dict]) -> tuple[dict[str, set[tuple]], set[str]] | None:
    """The role's actions are exactly expansion(aws-calls.json) + logs/consumer extras; returns (granted, bad_resources) (None: no manifest)."""
    expected = expected_actions(t, f)
    if expected is None:
        return None
    granted, bad_resources = granted_actions(t, f, stmts)
    actions = set(granted)
    missing = sorted(expected - actions)
    extra = sorted(actions - expected)
    if missing or extra:
        t.err(f"{f.who}: IAM actions differ from expansion(aws-calls.json) + logs/consumer extras — missing {missing}, extra {extra}")
    return granted, bad_resources


def expected_actions(t: _Template, f: _Function) -> set[str] | None:
    """The function has an aws-calls.json of service:Operation entries; returns the IAM actions it calls for (None: no manifest)."""
    calls = t.manifests.get(f.binary)
    if isinstance(calls, str):
        t.err(f"{f.who}: {calls}")
        return None
    calls = calls or []
    expected: set[str] = set(LOGS_ACTIONS)
    for c in calls:
        if not re.fullmatch(r"[a-z0-9-]+:[A-Za-z0-9]+", c):
            t.err(f"{f.who}: aws-calls.json entry {c!r} is not service:Operation")
            continue
        expected |= set(EXPANSION.get(c, [c]))
    if f.own_queue:
        expected |= set(SQS_CONSUMER_ACTIONS)
    return expected


def granted_actions(t: _Template, f: _Function, stmts: list[dict]) -> tuple[dict[str, set[tuple]], set[str]]:
    """No Not*, wildcard or unknown actions, PassRole only to Scheduler, no wildcard resources; returns (action -> resources, bad_resources)."""
    who = f.who
    granted: dict[str, set[tuple]] = {}
    bad_resources: set[str] = set()  # actions already reported for a wildcard / unknown resource
    for st in stmts:
        if "NotAction" in st or "NotResource" in st or "NotPrincipal" in st:
            t.err(f"{who}: statement {st.get('Sid', '?')} uses NotAction/NotResource")
            continue
        if st.get("Effect") != "Allow":
            continue
        for a in as_list(st.get("Action", [])):
            if not isinstance(a, str) or "*" in a or "?" in a:
                t.err(f"{who}: wildcard action {a!r}")
                continue
            svc, _, op = a.partition(":")
            if t.iam_actions is not None and op.lower() not in t.iam_actions.get(svc.lower(), set()):
                t.err(f"{who}: {a!r} is not an IAM action (IAM reference as shipped with cfn-lint)")
            if a == "iam:PassRole":
                cond = st.get("Condition", {}).get("StringEquals", {}).get("iam:PassedToService")
                if cond != "scheduler.amazonaws.com":
                    t.err(f"{who}: iam:PassRole needs Condition StringEquals iam:PassedToService scheduler.amazonaws.com")
            granted.setdefault(a, set())
            for r in as_list(st.get("Resource", [])):
                c_ = classify_resource(r)
                if c_[0] == "bad":
                    t.err(f"{who}: {a}: {c_[1]}")
                    bad_resources.add(a)
                    continue
                granted[a].add(c_)
    return granted, bad_resources


def check_iam_resources(t: _Template, f: _Function, granted: dict[str, set[tuple]], bad_resources: set[str]) -> None:
    """Each granted action is on exactly the resources the function is configured with (log group, table, queues, secrets, group, role)."""
    # which resources each granted action may name: exactly those the function is configured with
    gsi = [g["IndexName"] for g in t.table_def.get("GlobalSecondaryIndexes", [])]
    for a, got in sorted(granted.items()):
        svc = a.split(":", 1)[0]
        if a in LOGS_ACTIONS:
            allowed = {("log-streams", f.own_log_group)}
        elif a == "dynamodb:Query":
            allowed = {("arn", f.table)} | {("index", f.table, g) for g in gsi}
        elif svc == "dynamodb":
            allowed = {("arn", f.table)}
        elif a in OWN_QUEUE_ACTIONS and f.own_queue:
            allowed = {("arn", f.own_queue)}
        elif a == "sqs:SendMessage":
            allowed = {("arn", q) for q in f.send_queues}
        elif a == "secretsmanager:GetSecretValue":
            allowed = {("arn", s) for s in f.env_secrets}
        elif a == "scheduler:CreateSchedule":
            allowed = {("schedules", f.group)} if f.group else set()
        elif a == "iam:PassRole":
            allowed = {("arn", f.scheduler_role)} if f.scheduler_role else set()
        else:
            allowed = set()
        if got != allowed and a not in bad_resources:
            t.err(
                f"{f.who}: {a} on {sorted(fmt_res(x) for x in got)}, must be exactly "
                f"{sorted(fmt_res(x) for x in allowed) or 'nothing (the function is configured with no such resource)'}"
            )


def check_alert_alarms(t: _Template, f: _Function) -> None:
    """Every alert the function's code logs has a $.fields.alert metric filter on its log group and an alarm > 0 on the filter's metric."""
    for alert in sorted(t.alerts.get(f.binary, ())):
        filters = [
            mf
            for mf in t.of_type("AWS::Logs::MetricFilter").values()
            if ref_of(mf["Properties"].get("LogGroupName")) == f.own_log_group
            and re.search(r'\$\.fields\.alert\s*=\s*"' + re.escape(alert) + '"', mf["Properties"].get("FilterPattern", ""))
        ]
        if not filters:
            t.err(f"{f.who}: no metric filter on {f.own_log_group} for {{ $.fields.alert = \"{alert}\" }}")
        for mf in filters:
            for mt in mf["Properties"].get("MetricTransformations", []):
                if not any(
                    norm(a_["Properties"].get("Namespace")) == norm(mt.get("MetricNamespace"))
                    and a_["Properties"].get("MetricName") == mt.get("MetricName")
                    and a_["Properties"].get("Threshold") == 0
                    and a_["Properties"].get("ComparisonOperator") == "GreaterThanThreshold"
                    for a_ in t.alarms.values()
                ):
                    t.err(f"{f.who}: no alarm (> 0) on metric {mt.get('MetricName')} of the {alert} filter")


def check_errors_alarm(t: _Template, f: _Function) -> None:
    """The function has an AWS/Lambda Errors > 0 alarm."""
    if not any(
        a_["Properties"].get("Namespace") == "AWS/Lambda"
        and a_["Properties"].get("MetricName") == "Errors"
        and any(ref_of(d.get("Value")) == f.logical for d in a_["Properties"].get("Dimensions", []))
        and a_["Properties"].get("Threshold") == 0
        for a_ in t.alarms.values()
    ):
        t.err(f"{f.who}: no AWS/Lambda Errors > 0 alarm")


# ---------------------------------------------------------------- queues, DLQs, alarms


def check_redrive_policies(t: _Template) -> dict[str, str]:
    """A RedrivePolicy targets a template queue, maxReceiveCount 1..1000, that retains as long as its source; returns DLQ -> source queue."""
    dlqs: dict[str, str] = {}
    for q, qr in t.queues.items():
        rp = qr["Properties"].get("RedrivePolicy")
        if rp is None:
            continue
        target = getatt_of(rp.get("deadLetterTargetArn"))
        if not target or target[1] != "Arn" or target[0] not in t.queues:
            t.err(f"{q}: RedrivePolicy.deadLetterTargetArn must be !GetAtt <queue>.Arn")
            continue
        if not isinstance(rp.get("maxReceiveCount"), int) or not 1 <= rp["maxReceiveCount"] <= 1000:
            t.err(f"{q}: RedrivePolicy.maxReceiveCount must be an integer 1..1000")
        dlqs[target[0]] = q
        src_ret = qr["Properties"].get("MessageRetentionPeriod", 345600)
        dlq_ret = t.queues[target[0]]["Properties"].get("MessageRetentionPeriod", 345600)
        if dlq_ret < src_ret:
            t.err(f"{target[0]}: retention {dlq_ret} s is shorter than its source {q}'s {src_ret} s")
    return dlqs


def check_dead_letter_queues(t: _Template, dlqs: dict[str, str]) -> None:
    """Every queue but a dead-letter queue has a DLQ; a dead-letter queue redrives no further."""
    for q in t.queues:
        if q not in dlqs and "RedrivePolicy" not in t.queues[q]["Properties"]:
            t.err(f"{q}: no dead-letter queue (RedrivePolicy)")
        if q in dlqs and "RedrivePolicy" in t.queues[q]["Properties"]:
            t.err(f"{q}: a dead-letter queue must not redrive further")


def check_dlq_alarms(t: _Template, dlqs: dict[str, str]) -> None:
    """Every dead-letter queue has an alarm on ApproximateNumberOfMessagesVisible > 0."""
    for dlq, src in dlqs.items():
        if not any(
            a_["Properties"].get("Namespace") == "AWS/SQS"
            and a_["Properties"].get("MetricName") == "ApproximateNumberOfMessagesVisible"
            and any(getatt_of(d.get("Value")) == (dlq, "QueueName") for d in a_["Properties"].get("Dimensions", []))
            and a_["Properties"].get("Threshold") == 0
            and a_["Properties"].get("ComparisonOperator") == "GreaterThanThreshold"
            for a_ in t.alarms.values()
        ):
            t.err(f"{dlq} (dead-letter queue of {src}): no alarm on ApproximateNumberOfMessagesVisible > 0")


def check_refund_queue_age_alarm(t: _Template) -> None:
    """The refund queue has an alarm on ApproximateAgeOfOldestMessage at a threshold of at most 300 s."""
    refund_q = CONSUMERS["refund-executor"]
    if not any(
        a_["Properties"].get("Namespace") == "AWS/SQS"
        and a_["Properties"].get("MetricName") == "ApproximateAgeOfOldestMessage"
        and any(getatt_of(d.get("Value")) == (refund_q, "QueueName") for d in a_["Properties"].get("Dimensions", []))
        and isinstance(a_["Properties"].get("Threshold"), (int, float))
        and a_["Properties"]["Threshold"] <= 300
        for a_ in t.alarms.values()
    ):
        t.err(f"{refund_q}: no alarm on ApproximateAgeOfOldestMessage > 300 s (oldest unsettled refund)")


def check_alarm_actions(t: _Template) -> None:
    """Every alarm has AlarmActions (it notifies the alarm topic)."""
    for a_logical, a_ in t.alarms.items():
        if not a_["Properties"].get("AlarmActions"):
            t.err(f"{a_logical}: no AlarmActions (notify the alarm topic)")


# ---------------------------------------------------------------- Scheduler


def check_scheduler_roles(t: _Template, fn_by_bin: dict[str, str]) -> set[tuple]:
    """A SCHEDULER_ROLE_ARN role is assumable by Scheduler only and may only send to the deadline queue; returns the roles named."""
    sched_roles = {
        getatt_of(t.props(lg).get("Environment", {}).get("Variables", {}).get("SCHEDULER_ROLE_ARN"))
        for lg in fn_by_bin.values()
    } - {None}
    for ga in sched_roles:
        r_logical = ga[0]
        if r_logical not in t.roles:
            continue
        role = t.roles[r_logical]
        if trust_services(role) != {"scheduler.amazonaws.com"}:
            t.err(f"{r_logical}: the deadline scheduler role must be assumable by scheduler.amazonaws.com only")
        stmts, problems = statements_of(role)
        for p_ in problems:
            t.err(f"{r_logical}: {p_}")
        got = {(a, classify_resource(r)) for st in stmts for a in as_list(st.get("Action", [])) for r in as_list(st.get("Resource", []))}
        want = {("sqs:SendMessage", ("arn", CONSUMERS["deadline"]))}
        if got != want:
            t.err(f"{r_logical}: must allow exactly sqs:SendMessage on {CONSUMERS['deadline']}, allows {sorted((a, fmt_res(r)) for a, r in got)}")
    if not sched_roles:
        t.err("no function names a SCHEDULER_ROLE_ARN")
    return sched_roles


def check_sweep_schedule(t: _Template, fn_by_bin: dict[str, str], sched_roles: set[tuple]) -> None:
    """Exactly one AWS::Scheduler::Schedule invokes the deadline function (the sweep)."""
    deadline_fn = fn_by_bin.get("deadline")
    schedules = t.of_type("AWS::Scheduler::Schedule")
    sweeps = [
        (k, s)
        for k, s in schedules.items()
        if getatt_of(s["Properties"].get("Target", {}).get("Arn")) == (deadline_fn, "Arn")
    ]
    if len(sweeps) != 1:
        t.err(f"expected one AWS::Scheduler::Schedule invoking the deadline function (the sweep), found {[k for k, _ in sweeps]}")
    for k, s in sweeps:
        check_sweep(t, k, s["Properties"], deadline_fn, sched_roles)


def check_sweep(t: _Template, k: str, sp: dict, deadline_fn: str | None, sched_roles: set[tuple]) -> None:
    """The sweep runs rate(1 minute), on time, enabled, with SWEEP_INPUT, under its own role that may only invoke the deadline function."""
    if sp.get("ScheduleExpression") != "rate(1 minute)":
        t.err(f"{k}: ScheduleExpression must be rate(1 minute)")
    if sp.get("FlexibleTimeWindow") != {"Mode": "OFF"}:
        t.err(f"{k}: FlexibleTimeWindow must be {{Mode: OFF}}")
    if sp.get("State", "ENABLED") != "ENABLED":
        t.err(f"{k}: must be ENABLED")
    try:
        if json.loads(sp["Target"].get("Input", "")) != SWEEP_INPUT:
            raise ValueError
    except ValueError:
        t.err(f"{k}: Target.Input must be {json.dumps(SWEEP_INPUT)}")
    rga = getatt_of(sp["Target"].get("RoleArn"))
    if not rga or rga[0] not in t.roles:
        t.err(f"{k}: Target.RoleArn must be !GetAtt of its own role")
        return
    if rga in sched_roles:
        t.err(f"{k}: the sweep must have its own role, not the deadline queue's")
    role = t.roles[rga[0]]
    if trust_services(role) != {"scheduler.amazonaws.com"}:
        t.err(f"{rga[0]}: must be assumable by scheduler.amazonaws.com only")
    stmts, problems = statements_of(role)
    for p_ in problems:
        t.err(f"{rga[0]}: {p_}")
    got = {(a, classify_resource(r)) for st in stmts for a in as_list(st.get("Action", [])) for r in as_list(st.get("Resource", []))}
    want = {("lambda:InvokeFunction", ("arn", deadline_fn))}
    if got != want:
        t.err(f"{rga[0]}: must allow exactly lambda:InvokeFunction on {deadline_fn}, allows {sorted((a, fmt_res(r)) for a, r in got)}")


# ---------------------------------------------------------------- secrets


def check_generated_secrets(t: _Template) -> None:
    """A generated secret (DEVICE_KEY) is 64 lowercase hex characters: PasswordLength 64, every other printable character excluded."""
    for logical, s in t.secrets.items():
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
            t.err(
                f"{logical}: must generate 64 lowercase hex characters (PasswordLength 64, ExcludeCharacters = every "
                f"printable character but 0-9a-f); generates {gen.get('PasswordLength')} of {''.join(sorted(alphabet))!r}"
            )


def check_secret_specs(t: _Template) -> None:
    """Every secret infra/function-env.json's secret_references refer to is a secret of the template."""
    for var, spec in t.env_spec.get("secret_references", {}).items():
        if spec.partition("#")[0] not in t.secrets:
            t.err(f"infra/function-env.json: {var} refers to {spec}, not a secret of the template")


# ---------------------------------------------------------------- HTTP routes


def check_routes(t: _Template, fn_by_bin: dict[str, str]) -> None:
    """The HTTP API has exactly the routes of the contract (ROUTES), each with its authorisation, integrating its function."""
    routes = {r["Properties"].get("RouteKey"): (k, r["Properties"]) for k, r in t.of_type("AWS::ApiGatewayV2::Route").items()}
    integrations = t.of_type("AWS::ApiGatewayV2::Integration")
    for key, (binary, auth) in ROUTES.items():
        if key not in routes:
            t.err(f"route {key!r} missing")
            continue
        k, rp = routes[key]
        if rp.get("AuthorizationType", "NONE") != auth:
            t.err(f"route {key!r}: AuthorizationType must be {auth}")
        m = re.fullmatch(r"integrations/\$\{(\w+)\}", sub_of(rp.get("Target")) or "")
        target_fn = getatt_of(integrations.get(m[1], {}).get("Properties", {}).get("IntegrationUri")) if m else None
        if not target_fn or target_fn[0] != fn_by_bin.get(binary):
            t.err(f"route {key!r}: must integrate {binary}")
    for key in set(routes) - set(ROUTES):
        t.err(f"route {key!r} is not in the HTTP contract")


def check_api_permissions(t: _Template, fn_by_bin: dict[str, str]) -> None:
    """Every function behind a route has an AWS::Lambda::Permission for API Gateway."""
    for binary in {b for b, _ in ROUTES.values()}:
        lg = fn_by_bin.get(binary)
        if lg and not any(
            ref_of(p["Properties"].get("FunctionName")) == lg and p["Properties"].get("Principal") == "apigateway.amazonaws.com"
            for p in t.of_type("AWS::Lambda::Permission").values()
        ):
            t.err(f"{binary}: no AWS::Lambda::Permission for API Gateway")


# ---------------------------------------------------------------- outputs


def check_outputs(t: _Template) -> None:
    """The template has every output of REQUIRED_OUTPUTS."""
    for o in REQUIRED_OUTPUTS:
        if o not in t.raw.get("Outputs", {}):
            t.err(f"output {o} missing")


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
