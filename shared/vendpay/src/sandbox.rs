//! The customer side of the in-process Alipay sandbox, on `vendpay serve`'s own listener (sandbox mode
//! only), so a developer needs one address for everything:
//!
//! | route | what |
//! |---|---|
//! | `POST /sandbox/pay` | `{"device_id" or "qrcode", "amount": {"minor", "currency"}, "buyer_id"?}`: a customer pays the machine's QR code; the sandbox then POSTs the signed notification back to `/alipay/notify/{device}` |
//! | `POST /sandbox/faults` | the sandbox's fault switches, `{"gateway": [...], "notifications": [...]}` |
//! | `GET /sandbox/deliveries` | every notification attempt and the answer it got |
//! | `GET /sandbox/refunds` | every refund call vendpay made to the sandbox, with the sandbox's verdict |
//!
//! The sandbox's own `/sandbox/pay` takes Alipay's decimal strings and a QR code; this one takes the
//! money objects of design §4 and a device id, which is what a person testing a machine has at hand.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use axum::extract::{Request, State};
use axum::response::Response;
use http::StatusCode;
use serde::Serialize;
use serde_json::{json, Value};
use vendpay_alipay_sandbox::{FaultRequest, Sandbox};
use vendpay_api::alipay::Alipay;
use vendpay_app::{RefundGateway, RefundOrder, RefundVerdict};
use vendpay_domain::{BuyerId, Clock, Currency, DeviceId, Money};

use crate::server::{json_error, json_response, read_body, too_large, AppState, BodyError};

/// How many refund calls `/sandbox/refunds` remembers (oldest dropped first).
pub const REFUND_LOG_CAPACITY: usize = 10_000;

pub(crate) struct SandboxState {
    pub(crate) sandbox: Sandbox,
    pub(crate) refunds: RefundLog,
}

/// One refund call to the sandbox and what it answered.
#[derive(Clone, Debug, Serialize)]
pub struct SandboxRefund {
    pub refund_id: String,
    pub trade_no: String,
    pub out_trade_no: String,
    pub amount: Value,
    /// `succeeded`, `failed` or `retry`.
    pub verdict: &'static str,
    pub detail: Option<String>,
    pub at: String,
}

/// The refund calls made to the sandbox, newest last.
#[derive(Clone, Default)]
pub struct RefundLog(Arc<Mutex<VecDeque<SandboxRefund>>>);

impl RefundLog {
    fn push(&self, entry: SandboxRefund) {
        // A poisoned log only means another push panicked; the entries are still whole.
        let mut log = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if log.len() >= REFUND_LOG_CAPACITY {
            log.pop_front();
        }
        log.push_back(entry);
    }

    pub fn entries(&self) -> Vec<SandboxRefund> {
        let log = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        log.iter().cloned().collect()
    }
}

/// The refund gateway in sandbox mode: the real Alipay adapter, with every verdict written down.
pub(crate) struct Recording {
    pub(crate) inner: Arc<Alipay>,
    pub(crate) log: RefundLog,
    pub(crate) clock: Arc<dyn Clock>,
}

#[async_trait]
impl RefundGateway for Recording {
    async fn refund(&self, order: &RefundOrder) -> RefundVerdict {
        let verdict = self.inner.refund(order).await;
        let (name, detail) = match &verdict {
            RefundVerdict::Succeeded => ("succeeded", None),
            RefundVerdict::Failed(code) => ("failed", Some(code.clone())),
            RefundVerdict::Retry(reason) => ("retry", Some(reason.clone())),
        };
        self.log.push(SandboxRefund {
            refund_id: order.refund_id.as_str().to_owned(),
            trade_no: order.trade_no.as_str().to_owned(),
            out_trade_no: order.merchant_trade_no.as_str().to_owned(),
            amount: vendpay_api::views::money(order.amount),
            verdict: name,
            detail,
            at: self.clock.now().to_rfc3339(),
        });
        verdict
    }
}

/// A refused sandbox request: status, error code, message (design §4's error shape).
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Refusal {
    fn into_response(self) -> Response {
        json_error(self.status, self.code, &self.message)
    }
}

impl From<BodyError> for Refusal {
    fn from(e: BodyError) -> Refusal {
        match e {
            BodyError::TooLarge => Refusal {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                code: "body_too_large",
                message: "the body is too large".into(),
            },
            BodyError::Unreadable(reason) => bad("unreadable_body", reason),
        }
    }
}

fn refusal(status: StatusCode, code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        code,
        message: message.into(),
    }
}

fn bad(code: &'static str, message: impl Into<String>) -> Refusal {
    refusal(StatusCode::BAD_REQUEST, code, message)
}

fn sandbox_of(state: &AppState) -> Result<&SandboxState, Refusal> {
    state.sandbox.as_deref().ok_or_else(|| {
        refusal(
            StatusCode::NOT_FOUND,
            "not_found",
            "the sandbox routes exist only when no ALIPAY_GATEWAY_URL is set",
        )
    })
}

async fn json_body(req: Request) -> Result<Value, Refusal> {
    let bytes = read_body(req.into_body()).await?;
    serde_json::from_slice(&bytes).map_err(|e| bad("invalid_json", format!("invalid JSON: {e}")))
}

/// `POST /sandbox/pay`.
pub(crate) async fn pay(State(state): State<AppState>, req: Request) -> Response {
    match pay_inner(&state, req).await {
        Ok(r) => r,
        Err(TooLargeOr::TooLarge) => too_large(),
        Err(TooLargeOr::Refused(r)) => r.into_response(),
    }
}

/// A 413 must close the connection, so it keeps its own response.
enum TooLargeOr {
    TooLarge,
    Refused(Refusal),
}

impl From<Refusal> for TooLargeOr {
    fn from(r: Refusal) -> TooLargeOr {
        if r.status == StatusCode::PAYLOAD_TOO_LARGE {
            TooLargeOr::TooLarge
        } else {
            TooLargeOr::Refused(r)
        }
    }
}

async fn pay_inner(state: &AppState, req: Request) -> Result<Response, TooLargeOr> {
    let sb = sandbox_of(state)?;
    let body = json_body(req).await?;
    let text = |field: &str| -> Result<Option<String>, Refusal> {
        match body.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(bad("invalid_field", format!("{field} must be a string"))),
        }
    };
    let amount = parse_amount(body.get("amount"))?;
    let buyer = text("buyer_id")?
        .map(|b| BuyerId::parse(b).map_err(|e| bad("invalid_field", format!("buyer_id: {e}"))))
        .transpose()?;
    let (qrcode, device) = match (text("qrcode")?, text("device_id")?) {
        (Some(q), device) => (q, device),
        (None, Some(d)) => {
            let unknown = || {
                refusal(
                    StatusCode::NOT_FOUND,
                    "unknown_device",
                    format!("unknown device {d:?}"),
                )
            };
            let id = DeviceId::parse(d.as_str()).map_err(|_| unknown())?;
            let record = state
                .api
                .device
                .devices
                .device(&id)
                .await
                .map_err(|e| {
                    refusal(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        e.to_string(),
                    )
                })?
                .ok_or_else(unknown)?;
            let qr = record.qrcode.ok_or_else(|| {
                refusal(
                    StatusCode::CONFLICT,
                    "no_qrcode",
                    format!("device {d} has no QR code yet; POST /admin/devices/{d}/qrcode first"),
                )
            })?;
            (qr.qrcode, Some(d))
        }
        (None, None) => return Err(bad("missing_field", "give device_id or qrcode").into()),
    };
    let receipt = sb
        .sandbox
        .pay(&qrcode, amount, buyer)
        .map_err(|e| bad("pay_refused", e.to_string()))?;
    tracing::info!(qrcode = %qrcode, trade_no = %receipt.trade_no, amount = %amount, "sandbox: a customer paid");
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "trade_no": receipt.trade_no,
            "out_trade_no": receipt.out_trade_no,
            "notify_id": receipt.notify_id,
            "qrcode": qrcode,
            "device_id": device,
            "amount": vendpay_api::views::money(amount),
        }),
    ))
}

fn parse_amount(v: Option<&Value>) -> Result<Money, Refusal> {
    let shape = || {
        bad(
            "invalid_field",
            "amount must be {\"minor\": <positive integer>, \"currency\": \"CNY\"}",
        )
    };
    let obj = v.and_then(Value::as_object).ok_or_else(shape)?;
    let minor = obj.get("minor").and_then(Value::as_u64).ok_or_else(shape)?;
    let currency: Currency = obj
        .get("currency")
        .and_then(Value::as_str)
        .ok_or_else(shape)?
        .parse()
        .map_err(|e| bad("invalid_field", format!("amount.currency: {e}")))?;
    if minor == 0 {
        return Err(bad("invalid_field", "amount must be positive"));
    }
    Money::new(minor, currency).ok_or_else(shape)
}

/// `POST /sandbox/faults`.
pub(crate) async fn faults(State(state): State<AppState>, req: Request) -> Response {
    let sb = match sandbox_of(&state) {
        Ok(sb) => sb,
        Err(r) => return r.into_response(),
    };
    let body = match json_body(req).await {
        Ok(b) => b,
        Err(r) if r.status == StatusCode::PAYLOAD_TOO_LARGE => return too_large(),
        Err(r) => return r.into_response(),
    };
    let faults: FaultRequest = match serde_json::from_value(body) {
        Ok(f) => f,
        Err(e) => return bad("invalid_field", e.to_string()).into_response(),
    };
    for f in faults.gateway {
        sb.sandbox.push_gateway_fault(f);
    }
    for f in faults.notifications {
        sb.sandbox.push_notification_fault(f);
    }
    let mut res = Response::new(axum::body::Body::empty());
    *res.status_mut() = StatusCode::NO_CONTENT;
    res
}

/// `GET /sandbox/deliveries`.
pub(crate) async fn deliveries(State(state): State<AppState>) -> Response {
    match sandbox_of(&state) {
        Ok(sb) => json_response(StatusCode::OK, &json!(sb.sandbox.deliveries())),
        Err(r) => r.into_response(),
    }
}

/// `GET /sandbox/refunds`.
pub(crate) async fn refunds(State(state): State<AppState>) -> Response {
    match sandbox_of(&state) {
        Ok(sb) => json_response(StatusCode::OK, &json!(sb.refunds.entries())),
        Err(r) => r.into_response(),
    }
}
