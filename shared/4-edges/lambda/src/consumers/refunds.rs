//! The refund queue's consumer, as the `refund-executor` function and `vendpay serve --store aws` both
//! run it: each message names a refund whose id and amount were fixed when it was decided; the ledger
//! sends it (one send in flight at a time) and records only a verified answer; anything uncertain is
//! retried with exponential backoff by stretching the message's visibility timeout.

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use tracing::Instrument;
use vendpay_api::alipay::Alipay;
use vendpay_app::{Ledger, RefundAttempt, RefundMessage};
use vendpay_domain::RefundStatus;

use crate::sqs::{self, Record, RecordError};

/// What the consumer needs.
pub struct Executor {
    pub ledger: Ledger,
    pub alipay: Arc<Alipay>,
    /// Stretches a message's visibility for backoff.
    pub sqs: aws_sdk_sqs::Client,
    pub queue_url: String,
}

/// Backoff after the `n`-th uncertain attempt: 5 s, 10 s, 20 s, ... capped at 15 minutes (SQS allows
/// 12 hours; a refund should not wait longer than the sweep's grace).
pub fn backoff(receive_count: u32) -> Duration {
    let exp = receive_count.saturating_sub(1).min(16);
    Duration::from_secs((5u64 << exp).min(900))
}

pub async fn handle(executor: &Executor, batch: &SqsEvent) -> SqsBatchResponse {
    sqs::process(batch, |_| None, |r| message(executor, r)).await
}

async fn message(executor: &Executor, r: Record<'_>) -> Result<(), RecordError> {
    let m: RefundMessage = serde_json::from_str(r.body).map_err(|e| RecordError::Permanent {
        alert: "refund_message_refused",
        reason: format!("not a refund message {{refund_id, session}}: {e}"),
    })?;
    let span = tracing::info_span!("refund", refund_id = %m.refund_id, session = %m.session);
    async move {
        // The next attempt is this message's return after the backoff `delay` gives it.
        let retry_in = backoff(r.receive_count);
        match executor
            .ledger
            .execute_refund(&m, &*executor.alipay, retry_in)
            .await
        {
            Ok(RefundAttempt::Settled(RefundStatus::Failed)) => {
                tracing::error!(
                    alert = "refund_failed_permanently",
                    "Alipay refused the refund in a verified answer to this very request; reconcile the trade with Alipay before paying the customer any other way"
                );
                Ok(())
            }
            Ok(RefundAttempt::Settled(status)) => {
                tracing::info!(?status, "refund settled");
                Ok(())
            }
            Ok(RefundAttempt::InFlight) => {
                tracing::info!("another send holds this refund; this copy of the message is dropped");
                Ok(())
            }
            Ok(RefundAttempt::Superseded) => {
                tracing::info!("a newer message (the sweep's re-send) carries this refund; this one is dropped");
                Ok(())
            }
            Err(e) if e.is_retryable() => {
                delay(executor, &r).await;
                Err(RecordError::Retry(e.to_string()))
            }
            Err(e) => Err(RecordError::Permanent {
                alert: "refund_message_refused",
                reason: e.to_string(),
            }),
        }
    }
    .instrument(span)
    .await
}

/// Makes the message come back after [`backoff`] instead of the queue's visibility timeout. If this
/// fails the message simply comes back sooner.
async fn delay(executor: &Executor, r: &Record<'_>) {
    let Some(receipt) = r.receipt_handle else {
        return;
    };
    let wait = backoff(r.receive_count);
    let secs = i32::try_from(wait.as_secs()).unwrap_or(900);
    if let Err(e) = executor
        .sqs
        .change_message_visibility()
        .queue_url(&executor.queue_url)
        .receipt_handle(receipt)
        .visibility_timeout(secs)
        .send()
        .await
    {
        tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "could not delay the retry");
    } else {
        tracing::info!(retry_in_secs = secs, "refund retry delayed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_then_caps() {
        let secs: Vec<u64> = (1..=10).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, vec![5, 10, 20, 40, 80, 160, 320, 640, 900, 900]);
        assert_eq!(backoff(0).as_secs(), 5);
        assert_eq!(backoff(u32::MAX).as_secs(), 900);
    }
}
