"""The checks of the template's other resources: the table (= infra/table.json) and no standalone IAM,
queues / dead-letter queues / alarms, the Scheduler roles and the sweep schedule, the secrets, the HTTP
routes and their API Gateway permissions, and the outputs."""

from __future__ import annotations

import json
import re
import string

from .model import (
    CONSUMERS,
    REQUIRED_OUTPUTS,
    STREAM_CONSUMERS,
    STREAM_VIEW,
    ROUTES,
    SWEEP_INPUT,
    _Template,
    as_list,
    classify_resource,
    fmt_res,
    getatt_of,
    norm,
    ref_of,
    statements_of,
    sub_of,
    trust_services,
)


# ---------------------------------------------------------------- table


def check_table(t: _Template) -> None:
    """One AWS::DynamoDB::Table, its Properties those of infra/table.json, with DeletionPolicy Retain; a table whose
    stream a function reads (STREAM_CONSUMERS) has StreamSpecification NEW_IMAGE."""
    if len(t.tables) != 1:
        t.err(f"expected one AWS::DynamoDB::Table, found {sorted(t.tables)}")
    for logical, tb in t.tables.items():
        props = dict(tb.get("Properties", {}))
        if "StreamSpecification" not in t.table_def:
            # The adapter's table definition (shared/3-adapters/store-aws/src/table.rs) reads table.json
            # strictly and has no stream; until it does, the stream is the template's alone.
            props.pop("StreamSpecification", None)
        if logical in STREAM_CONSUMERS.values() and tb.get("Properties", {}).get("StreamSpecification") != STREAM_VIEW:
            t.err(f"{logical}: StreamSpecification must be {{StreamViewType: NEW_IMAGE}} (analytics-export reads the facts items' inserts), is {json.dumps(tb.get('Properties', {}).get('StreamSpecification'))}")
        if norm(props) != norm(t.table_def):
            want, got = norm(t.table_def), norm(props)
            diff = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
            t.err(f"{logical}: Properties differ from infra/table.json in {diff}")
        if tb.get("DeletionPolicy") != "Retain":
            t.err(f"{logical}: DeletionPolicy must be Retain (it holds the money)")


def check_no_standalone_iam(t: _Template) -> None:
    """No IAM policies, managed policies, users or groups: permissions live in the roles' inline policies only."""
    for logical, r in t.res.items():
        if r.get("Type") in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::IAM::User", "AWS::IAM::Group"):
            t.err(f"{logical}: {r['Type']} — the functions' permissions live in their roles' inline policies only")


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


def on_failure_queues(t: _Template) -> dict[str, str]:
    """The queues stream mappings give failed batches to (their dead-letter queues): queue -> the mapping."""
    out = {}
    for e_logical, e in t.esms.items():
        dest = getatt_of(e["Properties"].get("DestinationConfig", {}).get("OnFailure", {}).get("Destination"))
        if dest and dest[1] == "Arn" and dest[0] in t.queues:
            out[dest[0]] = e_logical
    return out


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
