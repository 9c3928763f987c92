//! SQS batches with partial batch failures (`ReportBatchItemFailures`).
//!
//! Each record's outcome is decided by the handler:
//! - `Ok` — done; SQS deletes it.
//! - [`RecordError::Retry`] — reported as a batch item failure: SQS makes it visible again after the
//!   visibility timeout (or sooner/later if the handler changed it), up to the queue's
//!   `maxReceiveCount`, then moves it to the dead-letter queue, whose alarm calls an operator.
//! - [`RecordError::Permanent`] — logged at error level with an `alert` field (a metric filter turns
//!   it into an alarm) and acknowledged: retrying a message that can never succeed only delays the
//!   others.
//!
//! Records that share a key (the machine, for device events) are handled one after another in the
//! batch's order, and once one of them must be retried the later ones are held back — failed without an
//! attempt, so they come back in order; records with different keys are handled concurrently and never
//! wait for each other.
//!
//! A record is never dead-lettered without having been tried: a held-back record's receive count climbs
//! with every batch its predecessor fails, so once it is near the queue's redrive limit
//! ([`MAX_RECEIVE_COUNT`]) it is tried anyway, out of order. Losing order there is the lesser harm: a
//! machine's commands are idempotent and name what they act on (request id, order id, session id), so
//! one that overtakes its predecessor is at worst refused or retried, whereas one dead-lettered untried
//! (a "delivered" vend result) lets the deadline refund an item the customer received.

use std::collections::HashMap;
use std::future::Future;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use vendpay_domain::Timestamp;

/// The `maxReceiveCount` of the queues whose records are keyed (the device events queue in
/// infra/template.yaml; tests/tests/functions.rs keeps the two equal). A held-back record delivered
/// for the second-to-last time is tried rather than held back again: the margin of one delivery covers
/// `ApproximateReceiveCount` being approximate and a delivery lost to a crashed or timed-out invocation.
pub const MAX_RECEIVE_COUNT: u32 = 5;

/// Why a record was not done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Transient: let SQS deliver it again.
    #[error("retry: {0}")]
    Retry(String),
    /// Will never succeed: record it for an operator (`alert` names the alarm) and drop it.
    #[error("{alert}: {reason}")]
    Permanent { alert: &'static str, reason: String },
}

/// What a handler sees of one record.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub message_id: &'a str,
    pub body: &'a str,
    pub receipt_handle: Option<&'a str>,
    /// `ApproximateReceiveCount`: 1 on the first delivery.
    pub receive_count: u32,
    /// `SentTimestamp`: when the queue received the message.
    pub sent_at: Option<Timestamp>,
}

impl<'a> Record<'a> {
    pub fn of(m: &'a SqsMessage) -> Record<'a> {
        let attr = |name: &str| m.attributes.get(name).map(String::as_str);
        Record {
            message_id: m.message_id.as_deref().unwrap_or_default(),
            body: m.body.as_deref().unwrap_or_default(),
            receipt_handle: m.receipt_handle.as_deref(),
            receive_count: attr("ApproximateReceiveCount")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1),
            sent_at: attr("SentTimestamp")
                .and_then(|v| v.parse::<i64>().ok())
                .map(Timestamp::from_millis),
        }
    }
}

/// Handles every record of `event` and answers the records to retry.
pub async fn process<'e, K, H, Fut>(event: &'e SqsEvent, key: K, handle: H) -> SqsBatchResponse
where
    K: Fn(&Record<'e>) -> Option<String>,
    H: Fn(Record<'e>) -> Fut,
    Fut: Future<Output = Result<(), RecordError>>,
{
    // Group by key, keeping the batch's order inside each group.
    let mut groups: Vec<Vec<Record<'e>>> = Vec::new();
    let mut by_key: HashMap<String, usize> = HashMap::new();
    for m in &event.records {
        let r = Record::of(m);
        match key(&r) {
            Some(k) => {
                let i = *by_key.entry(k).or_insert_with(|| {
                    groups.push(Vec::new());
                    groups.len() - 1
                });
                if let Some(g) = groups.get_mut(i) {
                    g.push(r);
                }
            }
            None => groups.push(vec![r]),
        }
    }
    let handle = &handle;
    let outcomes = futures_util::future::join_all(groups.into_iter().map(|group| async move {
        let mut failed: Vec<String> = Vec::new();
        for r in group {
            if !failed.is_empty() {
                if r.receive_count.saturating_add(1) < MAX_RECEIVE_COUNT {
                    tracing::info!(message_id = r.message_id, receive_count = r.receive_count, "held back behind an earlier record of the same key");
                    failed.push(r.message_id.to_owned());
                    continue;
                }
                tracing::warn!(message_id = r.message_id, receive_count = r.receive_count, "tried out of order: held back any longer it would be dead-lettered untried");
            }
            match handle(r).await {
                Ok(()) => {}
                Err(RecordError::Retry(reason)) => {
                    tracing::warn!(message_id = r.message_id, receive_count = r.receive_count, %reason, "record will be retried");
                    failed.push(r.message_id.to_owned());
                }
                Err(RecordError::Permanent { alert, reason }) => {
                    tracing::error!(alert, message_id = r.message_id, %reason, "record refused for good; an operator should look");
                }
            }
        }
        failed
    }))
    .await;
    let mut response = SqsBatchResponse::default();
    for id in outcomes.into_iter().flatten() {
        let mut failure = BatchItemFailure::default();
        failure.item_identifier = id;
        response.batch_item_failures.push(failure);
    }
    response
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn event(records: &[(&str, &str)]) -> SqsEvent {
        let counted: Vec<(&str, &str, u32)> = records.iter().map(|(i, b)| (*i, *b, 2)).collect();
        event_counted(&counted)
    }

    /// Records with their `ApproximateReceiveCount`.
    fn event_counted(records: &[(&str, &str, u32)]) -> SqsEvent {
        let records: Vec<serde_json::Value> = records
            .iter()
            .map(|(id, body, count)| {
                serde_json::json!({
                    "messageId": id, "receiptHandle": "rh", "body": body,
                    "attributes": {"ApproximateReceiveCount": count.to_string(), "SentTimestamp": "1764122400000"},
                    "messageAttributes": {}, "eventSource": "aws:sqs"
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({ "Records": records }))
            .unwrap_or_else(|e| panic!("test event: {e}"))
    }

    fn failed(r: &SqsBatchResponse) -> Vec<String> {
        let mut ids: Vec<String> = r
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.clone())
            .collect();
        ids.sort();
        ids
    }

    #[tokio::test]
    async fn retryable_records_fail_permanent_ones_do_not() {
        let ev = event(&[("1", "ok"), ("2", "retry"), ("3", "permanent"), ("4", "ok")]);
        let seen = Mutex::new(Vec::new());
        let out = process(
            &ev,
            |_| None,
            |r| {
                if let Ok(mut s) = seen.lock() {
                    s.push((r.body.to_owned(), r.receive_count, r.sent_at));
                }
                async move {
                    match r.body {
                        "retry" => Err(RecordError::Retry("later".into())),
                        "permanent" => Err(RecordError::Permanent {
                            alert: "test",
                            reason: "never".into(),
                        }),
                        _ => Ok(()),
                    }
                }
            },
        )
        .await;
        assert_eq!(failed(&out), vec!["2".to_owned()]);
        let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
        assert_eq!(seen.len(), 4);
        assert!(seen
            .iter()
            .all(|(_, n, t)| *n == 2 && *t == Some(Timestamp::from_millis(1_764_122_400_000))));
    }

    #[tokio::test]
    async fn a_retry_holds_back_the_rest_of_its_key_only() {
        // a1 retries, so a2 (same machine) is not attempted; b1 and b2 go through.
        let ev = event(&[
            ("a1", "a:retry"),
            ("b1", "b:ok"),
            ("a2", "a:ok"),
            ("b2", "b:ok"),
        ]);
        let attempted = Mutex::new(Vec::new());
        let out = process(
            &ev,
            |r| r.body.split(':').next().map(str::to_owned),
            |r| {
                if let Ok(mut a) = attempted.lock() {
                    a.push(r.message_id.to_owned());
                }
                async move {
                    if r.body.ends_with("retry") {
                        Err(RecordError::Retry("busy".into()))
                    } else {
                        Ok(())
                    }
                }
            },
        )
        .await;
        assert_eq!(failed(&out), vec!["a1".to_owned(), "a2".to_owned()]);
        let mut attempted = attempted.lock().map(|a| a.clone()).unwrap_or_default();
        attempted.sort();
        assert_eq!(attempted, vec!["a1", "b1", "b2"]);
    }

    /// Runs `ev` keyed by the body's prefix (`a:` / `b:`), a body ending in `retry` asking for a retry;
    /// answers (failed ids, attempted ids), both sorted.
    async fn run_keyed(ev: &SqsEvent) -> (Vec<String>, Vec<String>) {
        let attempted = Mutex::new(Vec::new());
        let out = process(
            ev,
            |r| r.body.split(':').next().map(str::to_owned),
            |r| {
                if let Ok(mut a) = attempted.lock() {
                    a.push(r.message_id.to_owned());
                }
                async move {
                    if r.body.ends_with("retry") {
                        Err(RecordError::Retry("busy".into()))
                    } else {
                        Ok(())
                    }
                }
            },
        )
        .await;
        let mut attempted = attempted.lock().map(|a| a.clone()).unwrap_or_default();
        attempted.sort();
        (failed(&out), attempted)
    }

    #[tokio::test]
    async fn a_held_back_record_near_the_redrive_limit_is_tried_not_dead_lettered_untried() {
        // a1 keeps failing; a2 (same machine, later) has come back with it every time. One more
        // untried failure and the queue's next receive would be its last: it must be tried now.
        let near = MAX_RECEIVE_COUNT - 1;
        let ev = event_counted(&[("a1", "a:retry", near), ("a2", "a:ok", near)]);
        let (failed, attempted) = run_keyed(&ev).await;
        assert_eq!(attempted, vec!["a1", "a2"], "a2 was failed untried");
        assert_eq!(failed, vec!["a1".to_owned()]);

        // Earlier on, a2 is still held back so the machine's records keep their order.
        let ev = event_counted(&[("a1", "a:retry", 1), ("a2", "a:ok", 1), ("b1", "b:ok", 1)]);
        let (failed, attempted) = run_keyed(&ev).await;
        assert_eq!(attempted, vec!["a1", "b1"]);
        assert_eq!(failed, vec!["a1".to_owned(), "a2".to_owned()]);

        // Tried and failing again near the limit: it goes back (it was tried), and so do the records
        // held back behind it that still have deliveries to spare.
        let ev = event_counted(&[
            ("a1", "a:retry", 1),
            ("a2", "a:retry", near),
            ("a3", "a:ok", 2),
        ]);
        let (failed, attempted) = run_keyed(&ev).await;
        assert_eq!(attempted, vec!["a1", "a2"]);
        assert_eq!(
            failed,
            vec!["a1".to_owned(), "a2".to_owned(), "a3".to_owned()]
        );
    }
}
