//! The customer side of the in-process Alipay sandbox, on `vendpay serve`'s own listener (sandbox mode
//! only), so a developer needs one address for everything:
//!
//! | route | what |
//! |---|---|
//! | `POST /sandbox/pay` | `{"device_id" or "qrcode", "amount": {"minor", "currency"}, "buyer_id"?}`: a customer pays the machine's QR code; the sandbox then POSTs the signed notification back to `/alipay/notify/{device}` |
//! | `POST /sandbox/faults` | the sandbox's fault switches, `{"gateway": [...], "notifications": [...], "refunds": {"<refund id>": "<fault>"\|null}}` |
//! | `GET /sandbox/deliveries` | every notification attempt and the answer it got |
//! | `GET /sandbox/refunds` | every refund call vendpay made to the sandbox, with the sandbox's verdict (SQLite store only: with `--store aws` the refunds are in `GET /admin/sessions/{id}`) |
//!
//! The sandbox keeps its trades in memory. So that a refund decided after a restart (a deadline re-armed
//! from the store) still finds its trade, every trade paid through `POST /sandbox/pay` is also appended
//! to a journal beside the database, `<VENDPAY_DB>.sandbox-trades` ([`TradeJournal`]), and given back to
//! the sandbox at start. Only the trades are kept: QR codes and refund history are not (a machine's QR
//! code is created again with `POST /admin/devices/{id}/qrcode`).
//!
//! The sandbox's own `/sandbox/pay` takes Alipay's decimal strings and a QR code; this one takes the
//! money objects of the contract (see `docs/contract.md`, “Money JSON”) and a device id, which is
//! what a person testing a machine has at hand.

use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use http::StatusCode;
use serde::Serialize;
use serde_json::{json, Value};
use vendpay_alipay_sandbox::{FaultRequest, Sandbox};
use vendpay_api::alipay::Alipay;
use vendpay_app::{DeviceStore, RefundGateway, RefundOrder, RefundVerdict};
use vendpay_domain::{BuyerId, Clock, Currency, DeviceId, Money};

use crate::respond::{json_error, json_response, read_body, too_large, BodyError};

/// How many refund calls `/sandbox/refunds` remembers (oldest dropped first).
pub const REFUND_LOG_CAPACITY: usize = 10_000;

/// The sandbox's customer routes, merged into the server's router in sandbox mode only (elsewhere
/// `/sandbox/...` is not a route and answers the contract's 404).
pub(crate) fn routes(state: Arc<SandboxState>) -> Router {
    Router::new()
        .route("/sandbox/pay", post(pay))
        .route("/sandbox/faults", post(faults))
        .route("/sandbox/deliveries", get(deliveries))
        .route("/sandbox/refunds", get(refunds))
        .with_state(state)
}

pub(crate) struct SandboxState {
    pub(crate) sandbox: Sandbox,
    /// Where `/sandbox/pay` finds a device's QR code.
    pub(crate) devices: Arc<dyn DeviceStore>,
    /// `None` with `--store aws` (the refund executor calls Alipay itself).
    pub(crate) refunds: Option<RefundLog>,
    pub(crate) journal: TradeJournal,
}

/// The sandbox's trades, one JSON object a line (`trade_no`, `out_trade_no`, `amount`), appended and
/// flushed to disk as each payment is made, and imported into a new sandbox at start.
pub struct TradeJournal {
    path: PathBuf,
    lock: Mutex<()>,
}

#[derive(serde::Deserialize)]
struct JournalLine {
    trade_no: String,
    out_trade_no: String,
    amount: JournalMoney,
}

#[derive(serde::Deserialize)]
struct JournalMoney {
    minor: u64,
    currency: String,
}

impl TradeJournal {
    /// `<db>.sandbox-trades`.
    pub fn for_db(db: &Path) -> TradeJournal {
        let mut p = db.as_os_str().to_owned();
        p.push(".sandbox-trades");
        TradeJournal {
            path: PathBuf::from(p),
            lock: Mutex::new(()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Gives the sandbox every trade of the journal; answers how many. A missing journal is empty; an
    /// unreadable line (a write cut short by a kill) is skipped with a warning.
    pub fn restore(&self, sandbox: &Sandbox) -> Result<usize, String> {
        let file = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => {
                return Err(format!(
                    "cannot read its trade journal {}: {e}",
                    self.path.display()
                ))
            }
        };
        let mut restored = 0;
        for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|e| {
                format!("cannot read its trade journal {}: {e}", self.path.display())
            })?;
            if line.trim().is_empty() {
                continue;
            }
            let parsed = serde_json::from_str::<JournalLine>(&line)
                .ok()
                .and_then(|l| {
                    let currency: Currency = l.amount.currency.parse().ok()?;
                    Some((
                        l.trade_no,
                        l.out_trade_no,
                        Money::new(l.amount.minor, currency)?,
                    ))
                });
            match parsed {
                Some((trade_no, out_trade_no, amount)) => {
                    if sandbox
                        .import_trade(&trade_no, &out_trade_no, amount)
                        .is_ok()
                    {
                        restored += 1;
                    }
                }
                None => {
                    tracing::warn!(journal = %self.path.display(), line = n + 1, "sandbox trade journal: unreadable line skipped")
                }
            }
        }
        Ok(restored)
    }

    fn append(&self, trade_no: &str, out_trade_no: &str, amount: Money) -> std::io::Result<()> {
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let mut line = json!({
            "trade_no": trade_no,
            "out_trade_no": out_trade_no,
            "amount": vendpay_api::views::money(amount),
        })
        .to_string();
        line.push('\n');
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        f.write_all(line.as_bytes())?;
        f.sync_data()
    }
}

/// One refund call to the sandbox and what it answered.
#[derive(Clone, Debug, Serialize)]
pub struct SandboxRefund {
    pub refund_id: String,
    pub trade_no: String,
    pub out_trade_no: String,
    pub amount: Value,
    /// `succeeded`, `failed`, `failed_unless_paid` (a refusal a paid refund can also meet: final only
    /// for its first send) or `retry`.
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
            RefundVerdict::FailedUnlessPaid(code) => ("failed_unless_paid", Some(code.clone())),
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

/// A refused sandbox request: status, error code, message (the error shape of `docs/contract.md`,
/// “Errors”).
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

async fn json_body(req: Request) -> Result<Value, Refusal> {
    let bytes = read_body(req.into_body()).await?;
    serde_json::from_slice(&bytes).map_err(|e| bad("invalid_json", format!("invalid JSON: {e}")))
}

/// `POST /sandbox/pay`.
async fn pay(State(state): State<Arc<SandboxState>>, req: Request) -> Response {
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

async fn pay_inner(sb: &SandboxState, req: Request) -> Result<Response, TooLargeOr> {
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
            let record = sb
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
    if let Err(e) = sb
        .journal
        .append(&receipt.trade_no, &receipt.out_trade_no, amount)
    {
        tracing::warn!(journal = %sb.journal.path().display(), error = %e, "sandbox: the trade could not be journalled; its refunds will fail after a restart");
    }
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
async fn faults(State(sb): State<Arc<SandboxState>>, req: Request) -> Response {
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
    for (refund_id, fault) in faults.refunds {
        sb.sandbox.set_refund_fault(&refund_id, fault);
    }
    let mut res = Response::new(axum::body::Body::empty());
    *res.status_mut() = StatusCode::NO_CONTENT;
    res
}

/// `GET /sandbox/deliveries`.
async fn deliveries(State(sb): State<Arc<SandboxState>>) -> Response {
    json_response(StatusCode::OK, &json!(sb.sandbox.deliveries()))
}

/// `GET /sandbox/refunds`.
async fn refunds(State(sb): State<Arc<SandboxState>>) -> Response {
    match &sb.refunds {
        Some(log) => json_response(StatusCode::OK, &json!(log.entries())),
        None => refusal(
            StatusCode::NOT_FOUND,
            "not_found",
            "the refund log is kept with the SQLite store only; with --store aws see GET /admin/sessions/{session_id}",
        )
        .into_response(),
    }
}
