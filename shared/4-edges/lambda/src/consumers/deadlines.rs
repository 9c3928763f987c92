//! The deadline queue's consumer and the sweep, as the `deadline` function and `vendpay serve --store
//! aws` both run them: a message names a session whose window may have passed and the ledger settles
//! it only if it is still due (a delayed message cannot be cancelled, so a stale one is a no-op); the
//! sweep settles whatever the deadline index says is overdue and re-sends refunds whose message was lost.

use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use tracing::Instrument;
use vendpay_app::{AppError, DeadlineMessage, Ledger, SweepReport};

use crate::sqs::{self, Record, RecordError};

/// How many overdue sessions and pending refunds one sweep looks at (the next minute takes the rest).
pub const SWEEP_LIMIT: usize = 500;
/// A refund pending longer than this had its message lost (or is being retried): the sweep sends it
/// again. Sending twice is harmless — the same refund id and amount every time.
pub const REFUND_GRACE: Duration = Duration::from_secs(10 * 60);

pub async fn sweep(ledger: &Ledger) -> Result<SweepReport, AppError> {
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
