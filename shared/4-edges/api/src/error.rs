//! Errors as the HTTP contract shows them: `{"error": {"code", "message"}}` with a 4xx/5xx status,
//! never a stack trace. Retryable failures are 503 with `Retry-After`, so machines and Alipay try again.

use bytes::Bytes;
use http::{header, Response, StatusCode};
use serde_json::json;
use vendpay_app::AppError;
use vendpay_domain::Rejection;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// Only from [`Rejection::UnknownPurchase`]: the purchase a vend result names is not (yet) known.
    unknown_purchase: bool,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            unknown_purchase: false,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(400, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(404, "not_found", message)
    }

    pub fn retryable(&self) -> bool {
        self.status == 503
    }

    /// Whether the same queued machine event, processed again later, may be answered otherwise: a
    /// retryable failure, or a vend result for a purchase that is still on its way through the queue
    /// (its approval not yet written). A malformed purchase id is not: it never parses.
    pub fn may_succeed_later(&self) -> bool {
        self.retryable() || self.unknown_purchase
    }

    pub fn into_response(self) -> Response<Bytes> {
        let body = json!({"error": {"code": self.code, "message": self.message}}).to_string();
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut builder = Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/json");
        if self.retryable() {
            builder = builder.header(header::RETRY_AFTER, "1");
        }
        builder
            .body(Bytes::from(body))
            .unwrap_or_else(|_| Response::new(Bytes::from_static(b"{}")))
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        let message = r.to_string();
        let (status, code) = match r {
            Rejection::CurrencyMismatch { .. } => (400, "currency_mismatch"),
            Rejection::NonPositivePrice => (400, "invalid_price"),
            Rejection::PriceMismatch { .. } => (400, "price_mismatch"),
            Rejection::MissingPrice(_) => (400, "missing_price"),
            // Only an order is refused so; a purchase of a sold-out slot is a `sold_out` decline (200).
            Rejection::SoldOut(_) => (409, "sold_out"),
            Rejection::NoSession => (409, "no_session"),
            Rejection::ModeNotSupported { .. } => (409, "mode_not_supported"),
            Rejection::Busy(_) => (409, "machine_busy"),
            Rejection::RequestConflict(_) => (409, "idempotency_conflict"),
            Rejection::UnknownPurchase(_) => {
                return ApiError {
                    unknown_purchase: true,
                    ..ApiError::new(404, "unknown_purchase", message)
                }
            }
            Rejection::PurchaseNotApproved(_) => (409, "purchase_not_approved"),
            Rejection::OrderNotPaid(_) => (409, "order_not_paid"),
            Rejection::UnknownRefund(_) => (404, "unknown_refund"),
            Rejection::WrongDevice { .. } | Rejection::Inconsistent(_) => {
                tracing::error!(error = %message, "inconsistent state");
                return ApiError::new(
                    500,
                    "internal",
                    "internal error; the operator has been alerted",
                );
            }
        };
        ApiError::new(status, code, message)
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::Rejected(r) => r.into(),
            // A slot with items promised can be dropped once they are vended: a conflict, not a bad body.
            AppError::Inventory(e) if e.may_succeed_later() => {
                ApiError::new(409, e.code(), e.to_string())
            }
            AppError::Inventory(e) => ApiError::bad_request(e.code(), e.to_string()),
            AppError::UnknownDevice(d) => {
                ApiError::new(404, "unknown_device", format!("unknown device {d}"))
            }
            AppError::UnknownSession(s) => {
                ApiError::new(404, "unknown_session", format!("unknown session {s}"))
            }
            AppError::UnknownRefund(r) => {
                ApiError::new(404, "unknown_refund", format!("unknown refund {r}"))
            }
            e if e.is_retryable() => {
                tracing::warn!(error = %e, "retryable failure");
                ApiError::new(503, "unavailable", e.to_string())
            }
            e => {
                tracing::error!(error = %e, "permanent failure");
                ApiError::new(
                    500,
                    "internal",
                    "internal error; the operator has been alerted",
                )
            }
        }
    }
}
