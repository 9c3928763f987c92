//! Deadline messages (SQS, partial batch failures) and the sweep.

use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::LambdaEvent;
use serde_json::{json, Value};
use tracing::Instrument;
use vendpay_app::{AppError, DeadlineMessage, Ledger};
use vendpay_lambda::sqs::{self, Record, RecordError};
use vendpay_lambda::InvocationError;

/// How many overdue sessions and pending refunds one sweep looks at (the next minute takes the rest).
pub const SWEEP_LIMIT: usize = 500;
/// A refund pending longer than this had its message lost (or is being retried): the sweep sends it
/// again. Sending twice is harmless — the same refund id and amount every time.
pub const REFUND_GRACE: Duration = Duration::from_secs(10 * 60);

pub enum Incoming {
    Queue(SqsEvent),
    Sweep,
}

/// An SQS batch, or a sweep: EventBridge Scheduler's input `{"action": "sweep", ...}`, or an
/// EventBridge rule's `"detail-type": "Scheduled Event"`.
pub fn classify(value: Value) -> Result<Incoming, String> {
    if value.get("Records").is_some() {
        return serde_json::from_value(value)
            .map(Incoming::Queue)
            .map_err(|e| format!("not an SQS event: {e}"));
    }
    let sweep = value.get("action").and_then(Value::as_str) == Some("sweep")
        || value.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event");
    if sweep {
        Ok(Incoming::Sweep)
    } else {
        Err("unrecognised event: neither SQS records nor {\"action\": \"sweep\"}".to_owned())
    }
}

pub async fn handle(ledger: &Ledger, event: LambdaEvent<Value>) -> Result<Value, InvocationError> {
    match classify(event.payload).map_err(InvocationError::UnrecognisedEvent)? {
        Incoming::Queue(batch) => Ok(serde_json::to_value(queue(ledger, &batch).await)?),
        Incoming::Sweep => {
            let report = sweep(ledger).await?;
            Ok(json!(report))
        }
    }
}

pub async fn sweep(ledger: &Ledger) -> Result<vendpay_app::SweepReport, AppError> {
    let report = ledger
        .sweep(SWEEP_LIMIT, REFUND_GRACE)
        .instrument(tracing::info_span!("sweep"))
        .await
        .inspect_err(
            |e| tracing::error!(error = %e, retryable = e.is_retryable(), "sweep failed"),
        )?;
    tracing::info!(
        deadlines_settled = report.deadlines_settled,
        refunds_resent = report.refunds_resent,
        deadlines_failed = report.deadlines_failed,
        deadlines_deferred = report.deadlines_deferred,
        "sweep done"
    );
    Ok(report)
}

pub async fn queue(ledger: &Ledger, batch: &SqsEvent) -> SqsBatchResponse {
    sqs::process(batch, |_| None, |r| message(ledger, r)).await
}

async fn message(ledger: &Ledger, r: Record<'_>) -> Result<(), RecordError> {
    let m: DeadlineMessage = serde_json::from_str(r.body).map_err(|e| RecordError::Permanent {
        alert: "deadline_message_refused",
        reason: format!("not a deadline message {{session, at}}: {e}"),
    })?;
    let span = tracing::info_span!("deadline", session = %m.session);
    async move {
        match ledger.deadline(&m.session).await {
            Ok(settled) => {
                tracing::info!(settled, "deadline message handled");
                Ok(())
            }
            Err(e) if e.is_retryable() => Err(RecordError::Retry(e.to_string())),
            Err(e) => Err(RecordError::Permanent {
                alert: "deadline_message_refused",
                reason: e.to_string(),
            }),
        }
    }
    .instrument(span)
    .await
}
