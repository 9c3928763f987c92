//! Two triggers, one set of routes: an API Gateway HTTP API event is answered like the local server
//! answers it; an SQS batch of queued requests is answered with partial batch failures.
//!
//! A queued request is verified against the time the queue received it (`SentTimestamp`), and a
//! command is refused for good (`too_late`) when processed more than a minute after that: by then the
//! customer it was meant for may have gone and another one paid (`vendpay_api::queued`). A vend result
//! is exempt: it names its purchase, so it can only ever land on that purchase's session. Otherwise its outcome is
//! decided by the answer the route gives: 2xx done; 503 (contention, storage unavailable) retried;
//! `unknown_purchase` retried too — the purchase it reports on may still be on its way through the
//! queue; any other refusal is permanent (logged with `alert = "device_event_refused"`) because
//! resending the same bytes gets the same answer.
//!
//! A retried record would come back only after the queue's visibility timeout (60 s), when the minute
//! is over and it would be refused `too_late`: so the records that go back are made visible again after
//! a short [`backoff`] instead (`ChangeMessageVisibility`, [`retry_plan`]), never later than leaves
//! time to process them within the minute. A vend result keeps the queue's timeout: it is never late,
//! and its five deliveries then span minutes, not seconds, before it is dead-lettered.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::LambdaEvent;
use serde_json::Value;
use tracing::Instrument;
use vendpay_api::queued::MAX_QUEUED_AGE_SECS;
use vendpay_api::{DeviceRoutes, QueuedRequest};
use vendpay_domain::Timestamp;
use vendpay_lambda::sqs::{self, Record, RecordError};
use vendpay_lambda::InvocationError;

use crate::{DeviceApi, RetryDelay};

/// What the function was invoked with.
pub enum Incoming {
    Queue(SqsEvent),
    Http(Box<lambda_http::Request>),
}

pub fn classify(value: Value) -> Result<Incoming, String> {
    if value.get("Records").is_some() {
        return serde_json::from_value(value)
            .map(Incoming::Queue)
            .map_err(|e| format!("not an SQS event: {e}"));
    }
    vendpay_lambda::http::parse_event(value).map(|r| Incoming::Http(Box::new(r)))
}

pub async fn handle(api: &DeviceApi, event: LambdaEvent<Value>) -> Result<Value, InvocationError> {
    match classify(event.payload).map_err(InvocationError::UnrecognisedEvent)? {
        Incoming::Http(req) => {
            let res = http(&api.routes, *req).await;
            Ok(serde_json::to_value(
                vendpay_lambda::http::apigw_v2_response(res),
            )?)
        }
        Incoming::Queue(batch) => Ok(serde_json::to_value(queue(api, &batch).await)?),
    }
}

/// One machine request over HTTP.
pub async fn http(
    routes: &DeviceRoutes,
    event: lambda_http::Request,
) -> http::Response<bytes::Bytes> {
    let device = device_of(event.uri().path()).unwrap_or_default().to_owned();
    let span = tracing::info_span!("device_request", device = %device, method = %event.method());
    async move {
        match vendpay_lambda::http::request(event) {
            Ok(req) => routes.handle(&req).await,
            Err(e) => e.into_response(),
        }
    }
    .instrument(span)
    .await
}

/// A batch of queued machine requests; the records of one machine are taken in order. The records that
/// go back (retried, or held back behind one of their machine's) are brought back after a backoff.
pub async fn queue(api: &DeviceApi, batch: &SqsEvent) -> SqsBatchResponse {
    let routes = &api.routes;
    let response = sqs::process(
        batch,
        |r| {
            QueuedRequest::parse(r.body)
                .ok()
                .and_then(|q| device_of(&q.path).map(str::to_owned))
        },
        |r| queued(routes, r),
    )
    .await;
    delay(
        &api.retries,
        &retry_plan(batch, &response, routes.ledger.now()),
    )
    .await;
    response
}

/// What is left of the minute when a retry becomes visible: the poller's pick-up and the handler's
/// start before the age check.
const RETRY_MARGIN_MS: i64 = 2_000;
/// The longest the visibility changes may hold up the batch's answer (Lambda's timeout is 10 s).
const DELAY_BUDGET: Duration = Duration::from_secs(2);

/// The wait before the `receive_count`-th delivery of a queued command, failed, comes back: 2, 4, 8,
/// then 16 s. Five deliveries (the queue's `maxReceiveCount`) span 30 s plus their processing.
pub fn backoff(receive_count: u32) -> Duration {
    let exp = receive_count.saturating_sub(1).min(3);
    Duration::from_secs(2u64 << exp)
}

/// One record to bring back sooner: after `secs` seconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delay<'a> {
    pub message_id: &'a str,
    pub receipt_handle: &'a str,
    pub secs: i32,
}

/// The visibility to give each record of `batch` that `response` sends back. The records of one machine
/// that go back all wait the longest backoff among them, so the first is not overtaken by those held
/// back behind it; each is capped by what is left of its own minute (`SentTimestamp` + 60 s, less a
/// margin). Vend results keep the queue's visibility timeout (see the module's documentation).
pub fn retry_plan<'a>(
    batch: &'a SqsEvent,
    response: &SqsBatchResponse,
    now: Timestamp,
) -> Vec<Delay<'a>> {
    let failed: HashSet<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    let mut back: Vec<(Record<'a>, &'a str, Option<String>, Duration)> = Vec::new();
    let mut longest: HashMap<String, Duration> = HashMap::new();
    for m in &batch.records {
        let r = Record::of(m);
        if !failed.contains(r.message_id) {
            continue;
        }
        let (Some(receipt), Ok(q)) = (r.receipt_handle, QueuedRequest::parse(r.body)) else {
            continue;
        };
        if is_vend_result(&q.path) {
            continue;
        }
        let wait = backoff(r.receive_count);
        let key = device_of(&q.path).map(str::to_owned);
        if let Some(k) = &key {
            let w = longest.entry(k.clone()).or_default();
            *w = (*w).max(wait);
        }
        back.push((r, receipt, key, wait));
    }
    back.into_iter()
        .map(|(r, receipt_handle, key, wait)| {
            let wait = key.and_then(|k| longest.get(&k).copied()).unwrap_or(wait);
            Delay {
                message_id: r.message_id,
                receipt_handle,
                secs: within_the_minute(wait, r.sent_at, now),
            }
        })
        .collect()
}

/// `wait` in whole seconds, at most what is left of the minute of a record the queue received at
/// `sent_at` (less [`RETRY_MARGIN_MS`]); 0 once that is spent.
fn within_the_minute(wait: Duration, sent_at: Option<Timestamp>, now: Timestamp) -> i32 {
    let wait_ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
    let left_ms = match sent_at {
        Some(sent) => {
            let age_ms = now.millis().saturating_sub(sent.millis()).max(0);
            MAX_QUEUED_AGE_SECS
                .saturating_mul(1000)
                .saturating_sub(age_ms)
                .saturating_sub(RETRY_MARGIN_MS)
        }
        None => wait_ms,
    };
    i32::try_from(wait_ms.min(left_ms).max(0) / 1000).unwrap_or(0)
}

/// Applies `plan`. A change that fails (or does not finish within the budget) leaves that record to come
/// back after the queue's visibility timeout.
pub async fn delay(retries: &RetryDelay, plan: &[Delay<'_>]) {
    if plan.is_empty() {
        return;
    }
    let changes = plan.iter().map(|d| async move {
        match retries
            .sqs
            .change_message_visibility()
            .queue_url(&retries.queue_url)
            .receipt_handle(d.receipt_handle)
            .visibility_timeout(d.secs)
            .send()
            .await
        {
            Ok(_) => tracing::info!(
                message_id = d.message_id,
                retry_in_secs = d.secs,
                "queued device request retry brought forward"
            ),
            Err(e) => tracing::warn!(
                message_id = d.message_id,
                error = %aws_sdk_sqs::error::DisplayErrorContext(&e),
                "could not bring the retry forward; it comes back after the queue's visibility timeout"
            ),
        }
    });
    if tokio::time::timeout(DELAY_BUDGET, futures_util::future::join_all(changes))
        .await
        .is_err()
    {
        tracing::warn!(
            budget_secs = DELAY_BUDGET.as_secs(),
            "visibility changes unfinished; those retries come back after the queue's visibility timeout"
        );
    }
}

/// `/devices/{id}/purchases/{request_id}/result`.
fn is_vend_result(path: &str) -> bool {
    let path = path.split('?').next().unwrap_or(path);
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    matches!(segs.as_slice(), ["devices", _, "purchases", _, "result"])
}

async fn queued(routes: &DeviceRoutes, r: Record<'_>) -> Result<(), RecordError> {
    let refused = |e: vendpay_api::ApiError| RecordError::Permanent {
        alert: "device_event_refused",
        reason: format!("{} {}: {}", e.status, e.code, e.message),
    };
    let q = QueuedRequest::parse(r.body).map_err(refused)?;
    let device = device_of(&q.path).unwrap_or_default().to_owned();
    let span = tracing::info_span!("device_event", device = %device, message_id = r.message_id);
    async move {
        let now = routes.ledger.now();
        let received_at = r.sent_at.unwrap_or(now);
        // Checked before anything else: a retry would only be later still. A vend result is exempt:
        // it reports a fact about one purchase (its id names the session), never acts on whatever
        // session is current, and refusing a late "delivered" would refund an item the customer got.
        if !is_vend_result(&q.path) {
            vendpay_api::queued::check_age(received_at, now).map_err(refused)?;
        }
        let req = q.into_request().map_err(refused)?;
        let res = match routes.route(&req, received_at).await {
            Ok(res) => res,
            Err(e) if e.may_succeed_later() => {
                return Err(RecordError::Retry(format!("{}: {}", e.code, e.message)))
            }
            Err(e) => return Err(refused(e)),
        };
        tracing::info!(
            path = %req.uri().path(),
            answer = %String::from_utf8_lossy(res.body()),
            "queued device request answered"
        );
        Ok(())
    }
    .instrument(span)
    .await
}

/// `/devices/{id}/...` → `id`.
fn device_of(path: &str) -> Option<&str> {
    let mut segs = path.trim_start_matches('/').split('/');
    match (segs.next(), segs.next()) {
        (Some("devices"), Some(id)) if !id.is_empty() => Some(id),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use aws_lambda_events::event::sqs::BatchItemFailure;

    use super::*;

    const NOW: i64 = 1_764_122_400_000;

    #[test]
    fn backoff_is_2_4_8_then_16_s_so_five_deliveries_fit_in_the_minute() {
        let secs: Vec<u64> = (1..=6).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, vec![2, 4, 8, 16, 16, 16]);
        assert_eq!(backoff(0).as_secs(), 2);
        assert_eq!(backoff(u32::MAX).as_secs(), 16);
        // The waits before deliveries 2 to 5 (the queue's maxReceiveCount) leave half the minute.
        let waited: u64 = (1..sqs::MAX_RECEIVE_COUNT)
            .map(|n| backoff(n).as_secs())
            .sum();
        assert_eq!(waited, 30);
        assert!(waited < MAX_QUEUED_AGE_SECS as u64);
    }

    /// (message id, path, receive count, age in seconds at `NOW`, with a receipt handle).
    type Rec<'a> = (&'a str, &'a str, u32, i64, bool);

    fn batch(records: &[Rec<'_>]) -> SqsEvent {
        let records: Vec<Value> = records
            .iter()
            .map(|(id, path, count, age, receipt)| {
                let body =
                    serde_json::json!({"method": "POST", "path": path, "headers": {}, "body": ""});
                let mut r = serde_json::json!({
                    "messageId": id, "body": body.to_string(),
                    "attributes": {
                        "ApproximateReceiveCount": count.to_string(),
                        "SentTimestamp": (NOW - age * 1000).to_string()
                    },
                    "messageAttributes": {}, "eventSource": "aws:sqs"
                });
                if *receipt {
                    r["receiptHandle"] = serde_json::json!(format!("rh-{id}"));
                }
                r
            })
            .collect();
        serde_json::from_value(serde_json::json!({ "Records": records }))
            .unwrap_or_else(|e| panic!("test event: {e}"))
    }

    fn failing(ids: &[&str]) -> SqsBatchResponse {
        let mut response = SqsBatchResponse::default();
        for id in ids {
            let mut f = BatchItemFailure::default();
            f.item_identifier = (*id).to_owned();
            response.batch_item_failures.push(f);
        }
        response
    }

    fn plan(records: &[Rec<'_>], failed: &[&str]) -> Vec<(String, String, i32)> {
        let ev = batch(records);
        retry_plan(&ev, &failing(failed), Timestamp::from_millis(NOW))
            .into_iter()
            .map(|d| (d.message_id.to_owned(), d.receipt_handle.to_owned(), d.secs))
            .collect()
    }

    fn d(id: &str, secs: i32) -> (String, String, i32) {
        (id.to_owned(), format!("rh-{id}"), secs)
    }

    #[test]
    fn a_retried_command_comes_back_after_its_backoff_not_the_queues_minute() {
        let first = [("p1", "/devices/vm-1/purchases", 1, 0, true)];
        assert_eq!(plan(&first, &["p1"]), vec![d("p1", 2)]);
        let third = [("e1", "/devices/vm-1/session/end", 3, 10, true)];
        assert_eq!(plan(&third, &["e1"]), vec![d("e1", 8)]);
        // Done, or refused for good: not sent back, nothing to change.
        assert_eq!(plan(&first, &[]), vec![]);
    }

    #[test]
    fn the_wait_leaves_time_to_land_within_the_minute() {
        // 16 s due, but sent 50 s ago: back after 8 s (60 - 50 - 2 s margin).
        let late = [("o1", "/devices/vm-1/orders", 4, 50, true)];
        assert_eq!(plan(&late, &["o1"]), vec![d("o1", 8)]);
        // Past the minute already: back at once, to be refused too_late (and alerted) now.
        let over = [("o2", "/devices/vm-1/orders", 2, 70, true)];
        assert_eq!(plan(&over, &["o2"]), vec![d("o2", 0)]);
        // SentTimestamp ahead of our clock (skew) is no age.
        let ahead = [("o3", "/devices/vm-1/orders", 1, -5, true)];
        assert_eq!(plan(&ahead, &["o3"]), vec![d("o3", 2)]);
    }

    #[test]
    fn one_machines_records_come_back_together_after_the_longest_backoff() {
        // p1 failed on its first delivery; p2 (same machine) was held back on its third; vm-2's q1 is
        // unrelated. p1 must not come back before p2 is due: both wait p2's 8 s.
        let records = [
            ("p1", "/devices/vm-1/purchases", 1, 5, true),
            ("q1", "/devices/vm-2/purchases", 1, 5, true),
            ("p2", "/devices/vm-1/session/end", 3, 5, true),
        ];
        assert_eq!(
            plan(&records, &["p1", "p2", "q1"]),
            vec![d("p1", 8), d("q1", 2), d("p2", 8)]
        );
    }

    #[test]
    fn vend_results_and_records_without_a_receipt_keep_the_queues_timeout() {
        let records = [
            ("v1", "/devices/vm-1/purchases/r-1/result", 1, 0, true),
            ("p1", "/devices/vm-1/purchases", 1, 0, false),
            ("p2", "/devices/vm-1/purchases", 2, 0, true),
        ];
        assert_eq!(plan(&records, &["v1", "p1", "p2"]), vec![d("p2", 4)]);
    }
}
