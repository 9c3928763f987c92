//! The few HTTP helpers the server's own routes share (the contract's routes are answered by
//! `vendpay_api::Api`): reading a bounded body, the contract's error shape, JSON answers.

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{header, StatusCode};

pub use vendpay_api::MAX_BODY_BYTES;

/// Why a request body was not read.
#[derive(Debug)]
pub(crate) enum BodyError {
    TooLarge,
    Unreadable(String),
}

impl BodyError {
    pub(crate) fn into_response(self) -> Response {
        match self {
            BodyError::TooLarge => too_large(),
            BodyError::Unreadable(reason) => json_error(
                StatusCode::BAD_REQUEST,
                "unreadable_body",
                &format!("the request body could not be read: {reason}"),
            ),
        }
    }
}

/// Reads a whole body of at most [`MAX_BODY_BYTES`].
pub(crate) async fn read_body(body: Body) -> Result<Bytes, BodyError> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|e| {
            let inner = e.into_inner();
            if inner
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                BodyError::TooLarge
            } else {
                BodyError::Unreadable(inner.to_string())
            }
        })
}

/// 413, closing the connection: the rest of the body is unread, so the connection cannot carry another
/// request (a client that reused it would see its next request fail).
pub(crate) fn too_large() -> Response {
    let mut res = json_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        &format!("request bodies are limited to {MAX_BODY_BYTES} bytes"),
    );
    res.headers_mut()
        .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
    res
}

/// The error shape of the contract (see `docs/contract.md`, “Errors”).
pub(crate) fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"error": {"code": code, "message": message}});
    json_response(status, &body)
}

pub(crate) fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut res = Response::new(Body::from(Bytes::from(body.to_string())));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    res
}
