"""The offline checks of infra/template.yaml, split out of infra/tests/check_template.py (the entry point):

- model.py      constants, loading, helpers on intrinsic functions, _Template / _Function
- functions.py  functions <-> crates and the per-function checks, IAM included
- resources.py  table, queues / DLQs / alarms, Scheduler, secrets, HTTP routes, outputs
- analytics.py  the sales facts' bucket, Glue table (= docs/sales.md), Firehose (Parquet), Athena workgroup and
                named queries (= infra/athena/*.sql)
- mutations.py  the self-test's deliberate breakages

check() here runs them all, in a fixed order.
"""

from __future__ import annotations

from .functions import (
    check_function,
    check_function_builds,
    check_functions_match_crates,
    check_log_retention_parameter,
    check_no_foreign_lambdas,
    event_sources_by_function,
)
from .analytics import (
    check_analytics_bucket,
    check_delivery_role,
    check_delivery_stream,
    check_glue_table,
    check_named_queries,
    check_workgroup,
)
from .model import _Template, code_alerts, transform
from .resources import (
    check_alarm_actions,
    check_api_permissions,
    check_dead_letter_queues,
    check_dlq_alarms,
    check_generated_secrets,
    check_no_standalone_iam,
    check_outputs,
    on_failure_queues,
    check_redrive_policies,
    check_refund_queue_age_alarm,
    check_routes,
    check_scheduler_roles,
    check_secret_specs,
    check_sweep_schedule,
    check_table,
)


# --------------------------------------------------------------------------------------------------------
# The checks
#
# check() runs one function per concern, always in the same order (the order of the error messages). Each
# appends its errors to the _Template it is given; what a later check needs from an earlier one (the
# function of each binary, a function's log group, queue, role statements ...) is returned, or kept on the
# _Function being checked.


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
    dlqs = check_redrive_policies(t) | on_failure_queues(t)
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
    # analytics: bucket, Glue table, Firehose, Athena
    glue_table = check_glue_table(t)
    firehose = check_delivery_stream(t, glue_table)
    check_delivery_role(t, firehose, glue_table)
    check_analytics_bucket(t)
    workgroup = check_workgroup(t)
    check_named_queries(t, workgroup, glue_table)
    # outputs
    check_outputs(t)
    return t.errors, t.notes
