"""The self-test: MUTATIONS, the deliberate breakages of the template (and the manifests), each with the
message that must catch it, and self_test(), which applies each to a copy and runs check() on it."""

from __future__ import annotations

import copy

from . import check
from .model import as_list


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


def _facts_events(t):
    return _fn(t, "AnalyticsExportFunction")["Events"]["Facts"]["Properties"]


def _delivery(t):
    return t["Resources"]["AnalyticsDeliveryStream"]["Properties"]["ExtendedS3DestinationConfiguration"]


def _columns(t):
    return t["Resources"]["FactsTable"]["Properties"]["TableInput"]["StorageDescriptor"]["Columns"]


MUTATIONS = [
    (
        "an extra IAM action",
        lambda t, m: _append_action(_stmt(t, "RefundExecutorRole", "Table"), "dynamodb:DeleteItem"),
        "refund-executor: IAM actions differ",
    ),
    (
        "an action the manifest gained but the role lacks",
        lambda t, m: m["analytics-export"].append("secretsmanager:GetSecretValue"),
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
        "the GSI granted to a function that queries only the table",
        lambda t, m: _stmt(t, "QrProvisionRole", "Query").__setitem__(
            "Resource", [{"Fn::GetAtt": ["Table", "Arn"]}, {"Fn::Sub": "${Table.Arn}/index/gsi1"}]
        ),
        "qr-provision: dynamodb:Query on ['Table', 'Table/index/gsi1'], must be exactly ['Table']",
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
        lambda t, m: t["Globals"]["Function"]["Environment"]["Variables"].pop("RUST_LOG"),
        "deadline: environment lacks ['RUST_LOG']",
    ),
    (
        "a ledger setting given to the function that reads no table",
        lambda t, m: _fn(t, "AnalyticsExportFunction")["Environment"]["Variables"].__setitem__("TABLE_NAME", {"Ref": "Table"}),
        "analytics-export: environment has ['TABLE_NAME'], not in infra/function-env.json",
    ),
    (
        "a secret given as a value",
        lambda t, m: _fn(t, "DeviceApiFunction")["Environment"]["Variables"].__setitem__("DEVICE_KEY", "00" * 32),
        "device-api: DEVICE_KEY must be a reference",
    ),
    (
        "a secret referenced without the permission to read it",
        lambda t, m: _stmt(t, "QrProvisionRole", "Secrets").__setitem__("Resource", {"Ref": "AlipaySecret"}),
        "qr-provision: secretsmanager:GetSecretValue on ['AlipaySecret'], must be exactly ['AlipaySecret', 'AnalyticsKeySecret', 'DeviceKeySecret']",
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
    # ---- the sales facts: stream, mapping, Firehose, Glue, Athena
    (
        "the table's stream without the new image",
        lambda t, m: t["Resources"]["Table"]["Properties"].__setitem__("StreamSpecification", {"StreamViewType": "KEYS_ONLY"}),
        "Table: StreamSpecification must be {StreamViewType: NEW_IMAGE}",
    ),
    (
        "the table without its stream",
        lambda t, m: t["Resources"]["Table"]["Properties"].pop("StreamSpecification"),
        "Table: StreamSpecification must be {StreamViewType: NEW_IMAGE}",
    ),
    (
        "the facts filter dropped",
        lambda t, m: _facts_events(t).pop("FilterCriteria"),
        "analytics-export: event source mapping on Table's stream must filter on exactly",
    ),
    (
        "the filter letting modifications through",
        lambda t, m: _facts_events(t)["FilterCriteria"]["Filters"][0].__setitem__(
            "Pattern", '{"eventName":["INSERT","MODIFY"],"dynamodb":{"Keys":{"pk":{"S":[{"prefix":"facts#"}]}}}}'
        ),
        "analytics-export: event source mapping on Table's stream must filter on exactly",
    ),
    (
        "a stream mapping without partial batch failures",
        lambda t, m: _facts_events(t).pop("FunctionResponseTypes"),
        "analytics-export: event source mapping on Table's stream must have FunctionResponseTypes",
    ),
    (
        "a stream mapping without an on-failure destination",
        lambda t, m: _facts_events(t).pop("DestinationConfig"),
        "analytics-export: event source mapping on Table's stream must have DestinationConfig.OnFailure",
    ),
    (
        "a stream mapping retrying a poison record for a day",
        lambda t, m: _facts_events(t).__setitem__("MaximumRetryAttempts", -1),
        "analytics-export: event source mapping on Table's stream must bound MaximumRetryAttempts",
    ),
    (
        "the on-failure queue without an alarm",
        lambda t, m: t["Resources"].pop("AnalyticsExportDLQAlarm"),
        "AnalyticsExportDLQ (dead-letter queue of AnalyticsExportFunctionFacts): no alarm",
    ),
    (
        "the stream read on the table instead of its stream",
        lambda t, m: _stmt(t, "AnalyticsExportRole", "TableStream").__setitem__("Resource", {"Fn::GetAtt": ["Table", "Arn"]}),
        "analytics-export: dynamodb:DescribeStream on ['Table'], must be exactly ['Table stream']",
    ),
    (
        "PutRecordBatch on another delivery stream",
        lambda t, m: _stmt(t, "AnalyticsExportRole", "Facts").__setitem__("Resource", {"Fn::GetAtt": ["AnalyticsBucket", "Arn"]}),
        "analytics-export: firehose:PutRecordBatch on ['AnalyticsBucket'], must be exactly ['AnalyticsDeliveryStream']",
    ),
    (
        "a Firehose call the manifest gained but the role lacks",
        lambda t, m: m["analytics-export"].append("firehose:PutRecord"),
        "analytics-export: IAM actions differ from expansion(aws-calls.json) + logs/consumer extras — missing ['firehose:PutRecord']",
    ),
    (
        "Firehose writing JSON, not Parquet",
        lambda t, m: _delivery(t)["DataFormatConversionConfiguration"].__setitem__("Enabled", False),
        "AnalyticsDeliveryStream: must convert to Parquet",
    ),
    (
        "Firehose converting against another table",
        lambda t, m: _delivery(t)["DataFormatConversionConfiguration"]["SchemaConfiguration"].__setitem__("TableName", "sales"),
        "AnalyticsDeliveryStream: SchemaConfiguration must name the Glue table",
    ),
    (
        "Firehose writing outside the table's partitions",
        lambda t, m: _delivery(t).__setitem__("Prefix", "facts/!{timestamp:yyyy/MM/dd}/"),
        "AnalyticsDeliveryStream: Prefix must be 'facts/dt=!{timestamp:yyyy-MM-dd}/'",
    ),
    (
        "Firehose's role reading every table of the database",
        lambda t, m: _stmt(t, "AnalyticsDeliveryRole", "Schema")["Resource"].append(
            {"Fn::Sub": "arn:${AWS::Partition}:glue:${AWS::Region}:${AWS::AccountId}:table/${AnalyticsDatabase}/*"}
        ),
        "AnalyticsDeliveryRole: must allow exactly glue:GetTable*",
    ),
    (
        "Firehose's role writing the whole bucket",
        lambda t, m: _stmt(t, "AnalyticsDeliveryRole", "Objects").__setitem__("Resource", {"Fn::Sub": "${AnalyticsBucket.Arn}/*"}),
        "AnalyticsDeliveryRole: must allow exactly",
    ),
    (
        "a fact column missing from the Glue table",
        lambda t, m: _columns(t).pop(5),
        "FactsTable: columns differ from docs/sales.md's facts table",
    ),
    (
        "a fact column of another type",
        lambda t, m: _columns(t)[2].__setitem__("Type", "string"),
        "FactsTable: columns differ from docs/sales.md's facts table",
    ),
    (
        "a second partition key",
        lambda t, m: t["Resources"]["FactsTable"]["Properties"]["TableInput"]["PartitionKeys"].append({"Name": "device", "Type": "string"}),
        "FactsTable: PartitionKeys must be exactly [dt string]",
    ),
    (
        "partitions that need a crawler",
        lambda t, m: t["Resources"]["FactsTable"]["Properties"]["TableInput"]["Parameters"].pop("projection.enabled"),
        "FactsTable: partition projection needs Parameters projection.enabled",
    ),
    (
        "a public analytics bucket",
        lambda t, m: t["Resources"]["AnalyticsBucket"]["Properties"]["PublicAccessBlockConfiguration"].__setitem__("BlockPublicPolicy", False),
        "AnalyticsBucket: PublicAccessBlockConfiguration must block",
    ),
    (
        "a workgroup whose settings a query may override",
        lambda t, m: t["Resources"]["AnalyticsWorkGroup"]["Properties"]["WorkGroupConfiguration"].__setitem__("EnforceWorkGroupConfiguration", False),
        "AnalyticsWorkGroup: EnforceWorkGroupConfiguration must be true",
    ),
    (
        "a named query outside the workgroup",
        lambda t, m: t["Resources"]["AthenaMachinesQuery"]["Properties"].pop("WorkGroup"),
        "AthenaMachinesQuery: must be in the workgroup",
    ),
    (
        "a named query edited in the template, not in its file",
        lambda t, m: t["Resources"]["AthenaItemsQuery"]["Properties"].__setitem__(
            "QueryString", t["Resources"]["AthenaItemsQuery"]["Properties"]["QueryString"] + "-- edited\n"
        ),
        "AthenaItemsQuery: QueryString differs from infra/athena/03-items.sql",
    ),
    (
        "a report section without its named query",
        lambda t, m: t["Resources"].pop("AthenaTagsQuery"),
        "no AWS::Athena::NamedQuery for infra/athena/06-tags.sql",
    ),
    (
        "an alert filter on the wrong field",
        lambda t, m: t["Resources"]["RefundFailedPermanentlyFilter"]["Properties"].__setitem__("FilterPattern", '{ $.alert = "refund_failed_permanently" }'),
        "refund-executor: no metric filter on RefundExecutorLogGroup",
    ),
    (
        "the unreadable-fact alert without its filter",
        lambda t, m: t["Resources"].pop("UnreadableFactFilter"),
        'analytics-export: no metric filter on AnalyticsExportLogGroup for { $.fields.alert = "unreadable_fact" }',
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
