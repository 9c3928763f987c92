"""What the checks work on: the repository's paths, the constants the template is held to (IAM expansion,
consumers, alerts, routes, outputs, ARN patterns), loading (the template via cfn-lint's YAML loader, the SAM
transform, the crates and their aws-calls.json), helpers on CloudFormation intrinsic functions and IAM
policies, and `_Template` / `_Function`, on which the checks collect their errors and findings."""

from __future__ import annotations

import copy
import functools
import json
import logging
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
TEMPLATE = ROOT / "infra" / "template.yaml"
TABLE_JSON = ROOT / "infra" / "table.json"
FUNCTION_ENV = ROOT / "infra" / "function-env.json"
FUNCTIONS_DIR = ROOT / "functions"
SALES_MD = ROOT / "docs" / "sales.md"
ATHENA_DIR = ROOT / "infra" / "athena"

# --------------------------------------------------------------------------------------------------------
# IAM: from the operations a function's code calls (its aws-calls.json) to the IAM actions it needs.
#
# Most AWS API operations are authorised by the IAM action of the same name. The exceptions the functions
# use are here: a DynamoDB transaction has no IAM action of its own; each of its parts is authorised by the
# item-level action of that part, on the part's table. Our transactions are made of Put, Update and
# ConditionCheck parts (shared/3-adapters/store-aws/src/dynamo/actions.rs), and — only in qr-provision's
# slot map replacements — Delete parts: the recording proxy (tests/tests/lambda/mod.rs) records a
# transaction with a Delete part as dynamodb:DeleteItem too, so only a function whose manifest lists it is
# granted dynamodb:DeleteItem (qr-provision's, restricted to slot rows and the stocked-machines listing by
# a dynamodb:LeadingKeys condition). No money record is ever deleted.
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

# Who reads which table's stream (logical ids), what the mapping's poller needs for it (with the function's
# role, on the table's stream ARN), and the one filter: inserts of facts items (docs/sales.md; the store
# writes them as pk = facts#{session}#{version}). Everything else on the stream -- sessions, devices,
# refunds, and the TTL's removals of expired facts items -- must not invoke the function.
STREAM_CONSUMERS = {"analytics-export": "Table"}
STREAM_CONSUMER_ACTIONS = [
    "dynamodb:DescribeStream",
    "dynamodb:GetRecords",
    "dynamodb:GetShardIterator",
    "dynamodb:ListStreams",
]
STREAM_VIEW = {"StreamViewType": "NEW_IMAGE"}
FACTS_FILTER = {"eventName": ["INSERT"], "dynamodb": {"Keys": {"pk": {"S": [{"prefix": "facts#"}]}}}}

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
    # stock_mismatch is logged by vendpay-app's ledger when a vend result (device-api) reports a
    # delivery from a slot whose stock was already 0.
    # unreadable_row: every function that reads a machine leaves an unreadable slot row out, alerting.
    "device-api": {"device_event_refused", "stock_mismatch", "unreadable_row"},
    "alipay-notify": {"unreadable_row"},
    "qr-provision": {"unreadable_row"},
    # deadline_failed is logged by the sweep in vendpay-app, which the deadline function runs.
    # ... and unreadable_row by the stores when the sweep lists pending refunds.
    "deadline": {"deadline_message_refused", "deadline_failed", "unreadable_row"},
    # A facts item whose facts cannot be read: skipped, so the report misses them.
    "analytics-export": {"unreadable_fact"},
}
ALERT_IN_CODE = re.compile(r'\balert\s*[:=]\s*"([a-z0-9_]+)"')


def documented_fact_columns(text: str) -> list[tuple[str, str]]:
    """(column, type) of the facts table of docs/sales.md ("## Facts"), in order; a row may name several."""
    section = next((s for s in text.split("\n## ") if s.startswith("Facts")), "")
    out = []
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.split("|")]
        for name in cells[1].split(","):
            out.append((name.strip().strip("`"), cells[2]))
    return out


def report_sections(text: str) -> list[tuple[int, str]]:
    """(number, name) of the report's sections in docs/sales.md ("### 1. `machines`" ...)."""
    return [(int(n), name) for n, name in re.findall(r"^### (\d+)\. `([a-z_]+)`", text, re.M)]


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
    "POST /devices/{device_id}/inventory": ("device-api", "NONE"),
    "POST /admin/devices": ("qr-provision", "AWS_IAM"),
    "GET /admin/devices/{device_id}": ("qr-provision", "AWS_IAM"),
    "POST /admin/devices/{device_id}/qrcode": ("qr-provision", "AWS_IAM"),
    "GET /admin/devices/{device_id}/label.svg": ("qr-provision", "AWS_IAM"),
    "GET /admin/sessions/{session_id}": ("qr-provision", "AWS_IAM"),
    "PUT /admin/products/{sku}": ("qr-provision", "AWS_IAM"),
    "GET /admin/products": ("qr-provision", "AWS_IAM"),
    "PUT /admin/devices/{device_id}/slots": ("qr-provision", "AWS_IAM"),
    "GET /admin/devices/{device_id}/inventory": ("qr-provision", "AWS_IAM"),
    "POST /admin/devices/{device_id}/restock": ("qr-provision", "AWS_IAM"),
    "GET /admin/inventory": ("qr-provision", "AWS_IAM"),
}

REQUIRED_OUTPUTS = [
    "ApiUrl",
    "NotifyUrlPattern",
    "DeadlineQueueUrl",
    "RefundQueueUrl",
    "DeviceEventsQueueUrl",
    "AlipaySecretArn",
    "DeviceKeySecretArn",
    "AnalyticsBucketName",
    "AnalyticsWorkGroupName",
    "AnalyticsDatabaseName",
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


class Manifest(list):
    """A function's aws-calls.json: the operations its code calls ("calls", this list) and the table's
    secondary indexes it queries ("indexes", optional; a dynamodb:Query names the table otherwise)."""

    def __init__(self, calls=(), indexes=()):
        super().__init__(calls)
        self.indexes = list(indexes)


def load_manifests(functions_dir: Path, binaries: list[str], crates: dict[str, Path]) -> dict[str, object]:
    """binary -> Manifest (or an error string)."""
    out: dict[str, object] = {}
    for b in binaries:
        path = (crates.get(b) or functions_dir / b) / "aws-calls.json"
        try:
            data = json.loads(path.read_text())
            calls, indexes = data["calls"], data.get("indexes", [])
            if not isinstance(calls, list) or not all(isinstance(c, str) for c in calls):
                raise ValueError('"calls" must be a list of strings')
            if not isinstance(indexes, list) or not all(isinstance(i, str) for i in indexes):
                raise ValueError('"indexes" must be a list of strings')
            out[b] = Manifest(calls, indexes)
        except FileNotFoundError:
            out[b] = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} is missing"
        except (ValueError, KeyError, json.JSONDecodeError) as e:
            out[b] = f"{path}: not {{\"calls\": [...], \"indexes\"?: [...]}}: {e}"
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
    """An IAM Resource value -> what it names: ('arn', Logical) | ('stream', Table) | ('index', Table, name) |
    ('schedules', Group) | ('log-streams', LogGroup) | ('bad', reason)."""
    ga = getatt_of(v)
    if ga and ga[1] == "Arn":
        return ("arn", ga[0])
    if ga and ga[1] == "StreamArn":
        return ("stream", ga[0])
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
        "stream": lambda: f"{r[1]} stream",
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
# What the checks hold: the template being checked, and the function being checked


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
        self.firehoses = self.of_type("AWS::KinesisFirehose::DeliveryStream")

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
    stream_table: str | None = None  # the table whose stream it reads
    on_failure: str | None = None  # the queue its stream mapping gives failed batches to
    firehose: str | None = None  # the delivery stream of FIREHOSE_STREAM_NAME

    @property
    def who(self) -> str:
        return self.binary

    @property
    def env(self) -> dict:
        return self.fp.get("Environment", {}).get("Variables", {})

    @property
    def own_url_var(self) -> str | None:
        return OWN_QUEUE_URL_VARS.get(self.binary)
