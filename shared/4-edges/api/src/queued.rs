//! Machine requests that arrive through a queue instead of HTTP (machines publishing through a broker,
//! e.g. an IoT rule into SQS): the very same signed request, carried as JSON.
//!
//! ```json
//! {"method": "POST", "path": "/devices/vm-1/purchases",
//!  "headers": {"x-device-id": "vm-1", "x-timestamp": "1764122400", "x-signature": "<hex>"},
//!  "body": "{\"request_id\":\"p-1\",\"slot\":\"A1\",\"price\":{\"minor\":350,\"currency\":\"CNY\"}}"}
//! ```
//!
//! `body` is the request body as text, byte for byte as signed. The signature is checked exactly as
//! over HTTP, except that the timestamp window is measured from when the queue received the message
//! (`SentTimestamp`). A queue redelivers for minutes and keeps messages for days, and a command acted on
//! that late would meet a later customer's session: so a message processed more than
//! [`MAX_QUEUED_AGE_SECS`] after the queue received it is refused for good (`too_late`, see
//! [`check_age`]) and changes nothing. Within that minute a repeat is harmless only where the command
//! says what it is for: purchases, vend results and orders are idempotent on their request or order id,
//! and a purchase or end-session that names its `session_id` acts on that session only. An end-session
//! without `session_id` acts on whatever session is current when it is processed — machines should
//! always send the id.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{Method, Request};
use serde::Deserialize;

use vendpay_domain::Timestamp;

use crate::error::ApiError;

/// How long after the queue received it a queued command may still act (see `docs/contract.md`,
/// “Queued machine requests”).
pub const MAX_QUEUED_AGE_SECS: i64 = 60;

/// Refuses (`too_late`) a queued command processed more than [`MAX_QUEUED_AGE_SECS`] after `sent_at`,
/// the queue's `SentTimestamp`. A `sent_at` ahead of `now` is clock skew between SQS and us, not age.
pub fn check_age(sent_at: Timestamp, now: Timestamp) -> Result<(), ApiError> {
    let age_ms = now.millis().saturating_sub(sent_at.millis());
    if age_ms > MAX_QUEUED_AGE_SECS.saturating_mul(1000) {
        return Err(ApiError::new(
            408,
            "too_late",
            format!(
                "processed {} s after the queue received it (at most {MAX_QUEUED_AGE_SECS} s)",
                age_ms / 1000
            ),
        ));
    }
    Ok(())
}

/// The largest message accepted (SQS's own limit is 256 KiB; a machine request is a few hundred bytes).
pub const MAX_QUEUED_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueuedRequest {
    pub method: String,
    pub path: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: String,
}

impl QueuedRequest {
    /// Parses a queue message body; every refusal is a 400 naming what is wrong.
    pub fn parse(message: &str) -> Result<QueuedRequest, ApiError> {
        if message.len() > MAX_QUEUED_BYTES {
            return Err(ApiError::new(
                413,
                "body_too_large",
                format!("a queued request is at most {MAX_QUEUED_BYTES} bytes"),
            ));
        }
        serde_json::from_str(message).map_err(|e| {
            ApiError::bad_request(
                "malformed_message",
                format!("not a queued device request {{method, path, headers, body}}: {e}"),
            )
        })
    }

    /// The HTTP request it stands for, to be answered by [`crate::DeviceRoutes::route`].
    pub fn into_request(self) -> Result<Request<Bytes>, ApiError> {
        let method = Method::from_bytes(self.method.as_bytes()).map_err(|_| {
            ApiError::bad_request("malformed_message", format!("method {:?}", self.method))
        })?;
        if !self.path.starts_with("/devices/") {
            return Err(ApiError::not_found(format!(
                "no route {:?} (queued requests are machine requests, /devices/...)",
                self.path
            )));
        }
        let mut builder = Request::builder().method(method).uri(self.path.as_str());
        for (name, value) in &self.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        builder
            .body(Bytes::from(self.body))
            .map_err(|e| ApiError::bad_request("malformed_message", format!("{e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queued_request_becomes_the_same_http_request() {
        let q = QueuedRequest::parse(
            r#"{"method":"POST","path":"/devices/vm-1/purchases?x=1","headers":{"X-Device-Id":"vm-1"},"body":"{}"}"#,
        )
        .and_then(QueuedRequest::into_request);
        let Ok(req) = q else { panic!("refused: {q:?}") };
        assert_eq!(req.method(), Method::POST);
        assert_eq!(
            req.uri().path_and_query().map(|p| p.as_str()),
            Some("/devices/vm-1/purchases?x=1")
        );
        assert_eq!(
            req.headers().get("x-device-id").map(|v| v.as_bytes()),
            Some(&b"vm-1"[..])
        );
        assert_eq!(req.body().as_ref(), b"{}");
    }

    #[test]
    fn malformed_messages_are_refused_with_a_reason() {
        for (message, code) in [
            ("not json", "malformed_message"),
            (r#"{"method":"POST"}"#, "malformed_message"),
            (
                r#"{"method":"POST","path":"/devices/a/b","extra":1}"#,
                "malformed_message",
            ),
            (
                r#"{"method":"PO ST","path":"/devices/a/b"}"#,
                "malformed_message",
            ),
            (r#"{"method":"POST","path":"/admin/devices"}"#, "not_found"),
            (
                r#"{"method":"POST","path":"/devices/a","headers":{"x":"a\nb"}}"#,
                "malformed_message",
            ),
        ] {
            let got = QueuedRequest::parse(message).and_then(QueuedRequest::into_request);
            match got {
                Err(e) => assert_eq!(e.code, code, "{message}"),
                Ok(_) => panic!("accepted {message}"),
            }
        }
        let big = format!(
            r#"{{"method":"POST","path":"/devices/a","body":"{}"}}"#,
            "x".repeat(70_000)
        );
        assert_eq!(
            QueuedRequest::parse(&big).map(|_| ()).map_err(|e| e.status),
            Err(413)
        );
    }

    #[test]
    fn a_command_older_than_a_minute_is_too_late() {
        let sent = Timestamp::from_millis(1_764_122_400_000);
        let at = |ms: i64| check_age(sent, Timestamp::from_millis(sent.millis() + ms));
        assert_eq!(at(60_000).map_err(|e| e.code), Ok(()));
        assert_eq!(at(-5_000).map_err(|e| e.code), Ok(()));
        assert_eq!(at(60_001).map_err(|e| e.code), Err("too_late"));
        assert_eq!(
            check_age(Timestamp::from_millis(i64::MIN), sent).map_err(|e| e.code),
            Err("too_late")
        );
    }
}
