"""The checks of the functions: functions <-> crates (each crate's binary built by one function, no other
Lambda) and, per function, runtime, sizing, logs, environment, secret references, event source mapping,
role and IAM actions/resources (aws-calls.json expanded), alert and Errors alarms."""

from __future__ import annotations

import json
import re

from .model import (
    CONSUMERS,
    EXPANSION,
    FACTS_FILTER,
    STREAM_CONSUMER_ACTIONS,
    STREAM_CONSUMERS,
    LOGS_ACTIONS,
    NO_BATCHING_WINDOW,
    OWN_QUEUE_ACTIONS,
    ROOT,
    SECRET_REF,
    SQS_CONSUMER_ACTIONS,
    _Function,
    _Template,
    as_list,
    classify_resource,
    fmt_res,
    getatt_of,
    norm,
    ref_of,
    show,
    statements_of,
    sub_of,
    trust_services,
)


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
    f.firehose = _env_ref(t, f, "FIREHOSE_STREAM_NAME", t.firehoses)
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
    """The function consumes exactly the queue CONSUMERS / the table stream STREAM_CONSUMERS gives it (one mapping at most), and its own queue URL names that queue."""
    who = f.who
    for e_logical in mappings:
        ga = getatt_of(t.props(e_logical).get("EventSourceArn"))
        if ga and ga[1] == "StreamArn":
            f.stream_table = check_stream_mapping(t, f, e_logical)
            continue
        q = check_event_source_mapping(t, f, e_logical)
        if q is not None:
            f.own_queue = q
    want_queue = CONSUMERS.get(f.binary)
    if len(mappings) > 1:
        t.err(f"{who}: more than one event source mapping ({mappings})")
    if want_queue != f.own_queue:
        t.err(f"{who}: must consume {want_queue or 'no queue'}, consumes {f.own_queue or 'no queue'}")
    want_stream = STREAM_CONSUMERS.get(f.binary)
    if want_stream != f.stream_table:
        t.err(f"{who}: must read {f'{want_stream} stream' if want_stream else 'no table stream'}, reads {f'{f.stream_table} stream' if f.stream_table else 'none'}")
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


def check_stream_mapping(t: _Template, f: _Function, e_logical: str) -> str | None:
    """A mapping on a template table's stream: from the start (TRIM_HORIZON), batch item failures, bisection, bounded
    retries into an SQS on-failure destination, and only the inserts of facts items (FACTS_FILTER); returns the table."""
    who = f.who
    ep = t.props(e_logical)
    ga = getatt_of(ep.get("EventSourceArn"))
    table = ga[0] if ga and ga[0] in t.tables else None
    if table is None:
        t.err(f"{who}: event source {e_logical} is not the stream of one of the template's tables")
        return None
    on = f"event source mapping on {table}'s stream"
    if ep.get("FunctionResponseTypes") != ["ReportBatchItemFailures"]:
        t.err(f"{who}: {on} must have FunctionResponseTypes [ReportBatchItemFailures]")
    if ep.get("StartingPosition") != "TRIM_HORIZON":
        t.err(f"{who}: {on} must start at TRIM_HORIZON (a new mapping must not skip the facts already on the stream)")
    if not isinstance(ep.get("BatchSize"), int) or not 1 <= ep["BatchSize"] <= 10000:
        t.err(f"{who}: {on} must set BatchSize between 1 and 10000")
    if ep.get("BisectBatchOnFunctionError") is not True:
        t.err(f"{who}: {on} must set BisectBatchOnFunctionError true (a failing record is isolated)")
    retries = ep.get("MaximumRetryAttempts")
    if not isinstance(retries, int) or not 0 <= retries <= 10000:
        t.err(f"{who}: {on} must bound MaximumRetryAttempts (0..10000; unbounded blocks the shard for a day)")
    dest = getatt_of(ep.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination"))
    if not dest or dest[1] != "Arn" or dest[0] not in t.queues:
        t.err(f"{who}: {on} must have DestinationConfig.OnFailure on one of the template's queues (batches given up on)")
    else:
        f.on_failure = dest[0]
    filters = ep.get("FilterCriteria", {}).get("Filters", [])
    try:
        patterns = [json.loads(x.get("Pattern", "")) for x in filters]
    except (ValueError, AttributeError, TypeError):
        patterns = None
    if patterns != [FACTS_FILTER]:
        t.err(f"{who}: {on} must filter on exactly {json.dumps(FACTS_FILTER, separators=(',', ':'))} (inserts of facts items), has {show(filters)}")
    return table


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
    gsi = {g["IndexName"] for g in t.table_def.get("GlobalSecondaryIndexes", [])}
    for i in getattr(calls, "indexes", []):
        if i not in gsi:
            t.err(f"{f.who}: aws-calls.json queries index {i!r}, which infra/table.json does not define")
        if "dynamodb:Query" not in calls:
            t.err(f"{f.who}: aws-calls.json names index {i!r} but no dynamodb:Query")
    expected: set[str] = set(LOGS_ACTIONS)
    for c in calls:
        if not re.fullmatch(r"[a-z0-9-]+:[A-Za-z0-9]+", c):
            t.err(f"{f.who}: aws-calls.json entry {c!r} is not service:Operation")
            continue
        expected |= set(EXPANSION.get(c, [c]))
    if f.own_queue:
        expected |= set(SQS_CONSUMER_ACTIONS)
    if f.stream_table:
        expected |= set(STREAM_CONSUMER_ACTIONS)
    if f.on_failure:
        expected.add("sqs:SendMessage")
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
        elif a in STREAM_CONSUMER_ACTIONS and f.stream_table:
            allowed = {("stream", f.stream_table)}
        elif a == "dynamodb:Query":
            # The table, and an index only for a function whose manifest says it queries that index.
            queried = getattr(t.manifests.get(f.binary), "indexes", [])
            allowed = {("arn", f.table)} | {("index", f.table, g) for g in gsi if g in queried}
        elif svc == "dynamodb":
            allowed = {("arn", f.table)}
        elif a in OWN_QUEUE_ACTIONS and f.own_queue:
            allowed = {("arn", f.own_queue)}
        elif a == "sqs:SendMessage":
            allowed = {("arn", q) for q in f.send_queues | ({f.on_failure} if f.on_failure else set())}
        elif a == "firehose:PutRecordBatch":
            allowed = {("arn", f.firehose)} if f.firehose else set()
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
