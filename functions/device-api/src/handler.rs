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

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::LambdaEvent;
use serde_json::Value;
use tracing::Instrument;
use vendpay_api::{DeviceRoutes, QueuedRequest};
use vendpay_lambda::sqs::{self, Record, RecordError};
use vendpay_lambda::InvocationError;

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

pub async fn handle(
    routes: &DeviceRoutes,
    event: LambdaEvent<Value>,
) -> Result<Value, InvocationError> {
    match classify(event.payload).map_err(InvocationError::UnrecognisedEvent)? {
        Incoming::Http(req) => {
            let res = http(routes, *req).await;
            Ok(serde_json::to_value(
                vendpay_lambda::http::apigw_v2_response(res),
            )?)
        }
        Incoming::Queue(batch) => Ok(serde_json::to_value(queue(routes, &batch).await)?),
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

/// A batch of queued machine requests; the records of one machine are taken in order.
pub async fn queue(routes: &DeviceRoutes, batch: &SqsEvent) -> SqsBatchResponse {
    sqs::process(
        batch,
        |r| {
            QueuedRequest::parse(r.body)
                .ok()
                .and_then(|q| device_of(&q.path).map(str::to_owned))
        },
        |r| queued(routes, r),
    )
    .await
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
            Err(e) if e.status == 503 || e.code == "unknown_purchase" => {
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
