//! A local Alipay mapi gateway for development and tests (see `docs/alipay.md`, “Sandbox”).
//!
//! - [`ledger`]: QR codes, trades and refunds under Alipay's rules (no I/O).
//! - This module: [`Sandbox`] — `gateway.do` over HTTP with real signatures both ways (it verifies the
//!   merchant's signature with the merchant's public key and signs its answers with its own key), the
//!   "pay" operation that sends signed notifications on Alipay's resend schedule, and fault switches.

pub mod ledger;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use vendpay_alipay::time::{format_gmt8, parse_gmt8};
use vendpay_alipay::{
    parse_form, signed_form, FormFields, KeyError, PartnerId, QrCodeStatus, SignType, Signer,
    Verifier,
};
use vendpay_domain::{BuyerId, Clock, Currency, Money, SystemClock, Timestamp};

use crate::ledger::{Ledger, QrInput, RefundResult, Trade};

/// The built-in test keys (shared/alipay/tests/fixtures): for local runs and tests only.
pub const TEST_ALIPAY_PRIVATE_KEY: &str =
    include_str!("../../alipay/tests/fixtures/test-alipay-private-key.pem");
pub const TEST_ALIPAY_PUBLIC_KEY: &str =
    include_str!("../../alipay/tests/fixtures/test-alipay-public-key.pem");
pub const TEST_MERCHANT_PRIVATE_KEY: &str =
    include_str!("../../alipay/tests/fixtures/test-merchant-private-key.pem");
pub const TEST_MERCHANT_PUBLIC_KEY: &str =
    include_str!("../../alipay/tests/fixtures/test-merchant-public-key.pem");

/// Alipay's resend schedule after a first attempt: 2m, 10m, 10m, 1h, 2h, 6h, 15h (see
/// `docs/alipay.md`, “Sandbox”).
pub const RESEND_SCHEDULE_SECS: [u64; 7] = [120, 600, 600, 3600, 7200, 21_600, 54_000];

/// A request a gateway fault switch turns into a failure (one switch per gateway call, in order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GatewayFault {
    /// Refunds are made but answered `result_code=UNKNOW`; other services answer `<error>UNKNOW`.
    Unknow,
    /// Answers only after [`SandboxConfig::timeout_delay`].
    Timeout,
    /// Answers an HTML error page with status 200.
    Html,
}

/// How the answer to one refund is spoiled. Set per `partner_refund_id` and kept until cleared, so a
/// retry meets it too; the refund itself is still made, because the hard case for a client is a refund
/// that went through while its answer cannot be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundFault {
    /// The answer shows `SUCCESS` but its signature covers other field values.
    BadSignature,
    /// A correctly signed `<qrcodeinfo>` node (another service's) carrying the refund's fields.
    UnexpectedNode,
    /// HTTP 408 with an empty body.
    RequestTimeout,
    /// `FAIL` / `REPEATED_REFUNDMENT_REQUEST` without `refund_amount` and `currency`.
    RepeatedWithoutAmount,
}

/// What happens to the next notification (one switch per payment, in order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationFault {
    Drop,
    Duplicate,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("{0}")]
    Config(String),
    #[error("pay refused: {0}")]
    Pay(&'static str),
    #[error("HTTP client: {0}")]
    Http(String),
}

/// Where a new sandbox starts numbering: the time in units of 10 µs, so numbers keep growing across
/// restarts (at fewer than 100 trades per millisecond).
fn first_number(now: Timestamp) -> u64 {
    u64::try_from(now.millis()).unwrap_or(0).saturating_mul(100)
}

/// How the sandbox is set up.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    pub partner: PartnerId,
    /// The key the sandbox signs answers and notifications with ("Alipay's" private key).
    pub alipay_private_key: String,
    /// The merchant's public key, to verify RSA / RSA2 requests.
    pub merchant_public_key: String,
    /// The shared MD5 key, if MD5 requests are to be accepted.
    pub md5_key: Option<String>,
    /// The sign type of notifications.
    pub notify_sign_type: SignType,
    /// Multiplies every resend delay (1.0 = Alipay's real schedule; tests use ~0.0001).
    pub time_scale: f64,
    /// How long a `timeout` fault holds the answer.
    pub timeout_delay: Duration,
    /// How long a `notify_id` stays valid for `notify_verify`.
    pub notify_id_ttl: Duration,
    /// Answer a repeated refund with `REPEATED_REFUNDMENT_REQUEST` (as some Alipay versions do)
    /// instead of the first `SUCCESS`.
    pub repeated_refund_as_error: bool,
}

impl SandboxConfig {
    /// The built-in test keys, real time.
    pub fn with_test_keys(partner: PartnerId) -> SandboxConfig {
        SandboxConfig {
            partner,
            alipay_private_key: TEST_ALIPAY_PRIVATE_KEY.to_owned(),
            merchant_public_key: TEST_MERCHANT_PUBLIC_KEY.to_owned(),
            md5_key: None,
            notify_sign_type: SignType::Rsa2,
            time_scale: 1.0,
            timeout_delay: Duration::from_secs(20),
            notify_id_ttl: Duration::from_secs(60),
            repeated_refund_as_error: false,
        }
    }
}

/// One attempt to deliver a notification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Delivery {
    pub trade_no: String,
    pub notify_id: String,
    pub attempt: u32,
    /// `None` when the POST failed; else the answer body.
    pub answer: Option<String>,
    pub dropped: bool,
}

/// The trade a "pay" created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PaymentReceipt {
    pub trade_no: String,
    pub out_trade_no: String,
    pub notify_id: String,
}

#[derive(Default)]
struct Faults {
    gateway: VecDeque<GatewayFault>,
    notifications: VecDeque<NotificationFault>,
    refunds: HashMap<String, RefundFault>,
}

struct Signers {
    rsa2: Signer,
    rsa: Signer,
    md5: Option<Signer>,
}

struct Inner {
    config: SandboxConfig,
    signers: Signers,
    verifier: Verifier,
    ledger: Mutex<Ledger>,
    faults: Mutex<Faults>,
    deliveries: Mutex<Vec<Delivery>>,
    notify_ids: Mutex<HashMap<String, Timestamp>>,
    base_url: Mutex<String>,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
}

/// The sandbox; cheap to clone, all clones share one state.
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

/// Poisoning only follows a panic in another handler; the books are still consistent (every change is
/// a single insert), so keep serving.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sandbox {
    pub fn new(config: SandboxConfig) -> Result<Sandbox, SandboxError> {
        Sandbox::with_clock(config, Arc::new(SystemClock))
    }

    /// A sandbox on `clock`: it stamps trades and decides when a `notify_id` has expired, so a test can
    /// move it past [`SandboxConfig::notify_id_ttl`] instead of waiting for it. (Trade numbers still
    /// follow the real time: they must stay unique across restarts whatever the clock says.)
    pub fn with_clock(
        config: SandboxConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Sandbox, SandboxError> {
        if !(config.time_scale.is_finite() && config.time_scale >= 0.0) {
            return Err(SandboxError::Config(
                "time scale must be a non-negative number".into(),
            ));
        }
        let key = &config.alipay_private_key;
        let signers = Signers {
            rsa2: Signer::from_setting(SignType::Rsa2, "SANDBOX_ALIPAY_PRIVATE_KEY", key)?,
            rsa: Signer::from_setting(SignType::Rsa, "SANDBOX_ALIPAY_PRIVATE_KEY", key)?,
            md5: config
                .md5_key
                .as_deref()
                .map(|k| Signer::from_setting(SignType::Md5, "SANDBOX_MD5_KEY", k))
                .transpose()?,
        };
        let mut verifier = Verifier::new()
            .with_public_key("SANDBOX_MERCHANT_PUBLIC_KEY", &config.merchant_public_key)?;
        if let Some(k) = &config.md5_key {
            verifier = verifier.with_md5_key("SANDBOX_MD5_KEY", k)?;
        }
        if config.notify_sign_type == SignType::Md5 && signers.md5.is_none() {
            return Err(SandboxError::Config(
                "MD5 notifications need SANDBOX_MD5_KEY".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| SandboxError::Http(e.to_string()))?;
        Ok(Sandbox {
            inner: Arc::new(Inner {
                config,
                signers,
                verifier,
                ledger: Mutex::new(Ledger::numbered_from(first_number(SystemClock.now()))),
                faults: Mutex::new(Faults::default()),
                deliveries: Mutex::new(Vec::new()),
                notify_ids: Mutex::new(HashMap::new()),
                base_url: Mutex::new("http://127.0.0.1".to_owned()),
                http,
                clock,
            }),
        })
    }

    /// `gateway.do` plus the sandbox's own routes (`POST /sandbox/pay`, `POST /sandbox/faults`,
    /// `GET /sandbox/deliveries`).
    pub fn router(&self) -> Router {
        Router::new()
            .route("/gateway.do", get(gateway).post(gateway))
            .route("/sandbox/pay", post(pay_route))
            .route("/sandbox/faults", post(faults_route))
            .route("/sandbox/deliveries", get(deliveries_route))
            .with_state(self.clone())
    }

    /// Binds `addr` (port 0 for an ephemeral one) and serves in a background task.
    pub async fn serve(&self, addr: SocketAddr) -> std::io::Result<RunningSandbox> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        *lock(&self.inner.base_url) = format!("http://{addr}");
        let router = self.router();
        let task = tokio::spawn(async move {
            // The server only stops when the task is aborted.
            let _ = axum::serve(listener, router).await;
        });
        Ok(RunningSandbox { addr, task })
    }

    pub fn push_gateway_fault(&self, fault: GatewayFault) {
        lock(&self.inner.faults).gateway.push_back(fault);
    }

    pub fn push_notification_fault(&self, fault: NotificationFault) {
        lock(&self.inner.faults).notifications.push_back(fault);
    }

    /// Spoils every answer to refund `refund_id` from now on (`None`: answer it normally again).
    pub fn set_refund_fault(&self, refund_id: &str, fault: Option<RefundFault>) {
        let mut faults = lock(&self.inner.faults);
        match fault {
            Some(f) => faults.refunds.insert(refund_id.to_owned(), f),
            None => faults.refunds.remove(refund_id),
        };
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        lock(&self.inner.deliveries).clone()
    }

    /// A buyer pays `amount` on `qrcode`: the trade is recorded and its signed notification is POSTed
    /// to the code's `notify_url` in the background, resent until the answer is `success`. Call it
    /// inside a Tokio runtime (the delivery is a spawned task).
    /// Records a trade paid outside the sandbox — a committed fixture's notification — so refunds of it
    /// are answered as for any other trade. Refused for a trade number already known.
    pub fn import_trade(
        &self,
        trade_no: &str,
        out_trade_no: &str,
        amount: Money,
    ) -> Result<(), &'static str> {
        let now = self.inner.clock.now();
        lock(&self.inner.ledger).import(Trade {
            trade_no: trade_no.to_owned(),
            out_trade_no: out_trade_no.to_owned(),
            qrcode: String::new(),
            amount,
            refunded: Money::zero(amount.currency()),
            buyer_id: None,
            paid_at: now,
        })
    }

    /// How much of a trade has been refunded (`None`: unknown trade).
    pub fn refunded(&self, trade_no: &str) -> Option<Money> {
        lock(&self.inner.ledger).trade(trade_no).map(|t| t.refunded)
    }

    pub fn pay(
        &self,
        qrcode: &str,
        amount: Money,
        buyer_id: Option<BuyerId>,
    ) -> Result<PaymentReceipt, SandboxError> {
        let now = self.inner.clock.now();
        let (trade, qr) = {
            let mut ledger = lock(&self.inner.ledger);
            let trade = ledger
                .pay(qrcode, amount, buyer_id.map(String::from), now)
                .map_err(SandboxError::Pay)?;
            let qr = ledger
                .qr(qrcode)
                .cloned()
                .ok_or(SandboxError::Pay("QRCODE_NOT_EXIST"))?;
            (trade, qr)
        };
        let notify_id = format!("sbxn{}{}", now.millis(), trade.trade_no);
        lock(&self.inner.notify_ids).insert(notify_id.clone(), now);
        let body = self.notification_body(&trade, &qr.input, &notify_id, now)?;
        let fault = lock(&self.inner.faults).notifications.pop_front();
        let receipt = PaymentReceipt {
            trade_no: trade.trade_no.clone(),
            out_trade_no: trade.out_trade_no.clone(),
            notify_id: notify_id.clone(),
        };
        let sandbox = self.clone();
        let url = qr.input.notify_url.clone();
        tokio::spawn(async move {
            sandbox
                .deliver(url, body, trade.trade_no, notify_id, fault)
                .await;
        });
        Ok(receipt)
    }

    fn notification_body(
        &self,
        trade: &Trade,
        qr: &QrInput,
        notify_id: &str,
        now: Timestamp,
    ) -> Result<String, SandboxError> {
        let time = format_gmt8(now);
        let total = trade.amount.to_decimal();
        let mut fields: Vec<(&str, &str)> = vec![
            ("notify_id", notify_id),
            ("notify_time", &time),
            ("notify_type", "trade_status_sync"),
            ("notify_action_type", "payByAccountAction"),
            ("out_trade_no", &trade.out_trade_no),
            ("trade_no", &trade.trade_no),
            ("trade_status", "TRADE_SUCCESS"),
            ("total_fee", &total),
            ("trans_currency", trade.amount.currency().code()),
            ("currency", qr.currency.code()),
            ("subject", &qr.store_name),
            ("gmt_payment", &time),
        ];
        if let Some(b) = &trade.buyer_id {
            fields.push(("buyer_id", b));
        }
        if let Some(p) = &qr.passback {
            fields.push(("passback_parameters", p));
        }
        let signer = self.signer_for(self.inner.config.notify_sign_type);
        let signer = signer.ok_or_else(|| SandboxError::Config("no notification signer".into()))?;
        signed_form(fields, signer).map_err(|e| SandboxError::Config(e.to_string()))
    }

    fn signer_for(&self, sign_type: SignType) -> Option<&Signer> {
        match sign_type {
            SignType::Rsa2 => Some(&self.inner.signers.rsa2),
            SignType::Rsa => Some(&self.inner.signers.rsa),
            SignType::Md5 => self.inner.signers.md5.as_ref(),
        }
    }

    async fn deliver(
        &self,
        url: String,
        body: String,
        trade_no: String,
        notify_id: String,
        fault: Option<NotificationFault>,
    ) {
        let log = |attempt: u32, answer: Option<String>, dropped: bool| {
            lock(&self.inner.deliveries).push(Delivery {
                trade_no: trade_no.clone(),
                notify_id: notify_id.clone(),
                attempt,
                answer,
                dropped,
            });
        };
        if fault == Some(NotificationFault::Drop) {
            log(0, None, true);
            return;
        }
        let scale = self.inner.config.time_scale;
        let delays = std::iter::once(0).chain(RESEND_SCHEDULE_SECS);
        for (attempt, delay) in (1u32..).zip(delays) {
            tokio::time::sleep(Duration::from_secs_f64(delay as f64 * scale)).await;
            let answer = self.post_notification(&url, &body).await;
            let ok = answer.as_deref() == Some("success");
            log(attempt, answer, false);
            if ok {
                if fault == Some(NotificationFault::Duplicate) {
                    let again = self.post_notification(&url, &body).await;
                    log(attempt + 1, again, false);
                }
                return;
            }
        }
    }

    async fn post_notification(&self, url: &str, body: &str) -> Option<String> {
        let resp = self
            .inner
            .http
            .post(url)
            .header(
                header::CONTENT_TYPE,
                "application/x-www-form-urlencoded; charset=UTF-8",
            )
            .body(body.to_owned())
            .send()
            .await
            .ok()?;
        let status = resp.status();
        let text = resp.text().await.ok()?;
        Some(if status.is_success() {
            text
        } else {
            format!("HTTP {status}")
        })
    }

    /// Handles one `gateway.do` call: `query` and `body` are the raw URL query and form body.
    async fn handle(&self, query: Option<String>, body: Bytes) -> Response {
        let mut raw = query.unwrap_or_default().into_bytes();
        if !body.is_empty() {
            if !raw.is_empty() {
                raw.push(b'&');
            }
            raw.extend_from_slice(&body);
        }
        let fault = lock(&self.inner.faults).gateway.pop_front();
        match fault {
            Some(GatewayFault::Html) => {
                return (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                    "<html><head><title>502 Bad Gateway</title></head><body>busy</body></html>",
                )
                    .into_response()
            }
            Some(GatewayFault::Timeout) => {
                tokio::time::sleep(self.inner.config.timeout_delay).await;
            }
            _ => {}
        }
        let unknow = fault == Some(GatewayFault::Unknow);
        let params = match parse_form(&raw) {
            Ok(p) => p,
            Err(_) => return xml(rejected("ILLEGAL_ARGUMENT")),
        };
        let service = params.get("service").unwrap_or("");
        if params.get("partner") != Some(self.inner.config.partner.as_str()) {
            return xml(rejected("ILLEGAL_PARTNER"));
        }
        if service == "notify_verify" {
            return self.notify_verify(&params);
        }
        let sign_type = match params.verify(&self.inner.verifier) {
            Ok(t) => t,
            Err(_) => return xml(rejected("ILLEGAL_SIGN")),
        };
        if unknow && service != "alipay.acquire.overseas.spot.refund" {
            return xml(rejected("UNKNOW"));
        }
        let refund_fault = match (service, params.get("partner_refund_id")) {
            ("alipay.acquire.overseas.spot.refund", Some(id)) => {
                lock(&self.inner.faults).refunds.get(id).copied()
            }
            _ => None,
        };
        let answer = match service {
            "alipay.commerce.qrcode.create" | "alipay.commerce.qrcode.modify" => {
                self.qrcode(&params, service == "alipay.commerce.qrcode.modify")
            }
            "alipay.commerce.qrcode.modifyStatus" => self.modify_status(&params),
            "alipay.acquire.overseas.spot.refund" => self.refund(&params, unknow),
            "alipay.acquire.overseas.query" => self.query(&params),
            _ => Err("ILLEGAL_SERVICE"),
        };
        match (answer, refund_fault) {
            (Ok((node, fields)), None) => xml(self.signed_answer(sign_type, node, &fields)),
            (Ok((node, fields)), Some(fault)) => {
                self.spoiled_refund_answer(fault, sign_type, node, fields)
            }
            (Err(code), _) => xml(rejected(code)),
        }
    }

    fn spoiled_refund_answer(
        &self,
        fault: RefundFault,
        sign_type: SignType,
        node: &str,
        mut fields: Vec<(&'static str, String)>,
    ) -> Response {
        match fault {
            RefundFault::RequestTimeout => StatusCode::REQUEST_TIMEOUT.into_response(),
            RefundFault::UnexpectedNode => {
                xml(self.signed_answer(sign_type, "qrcodeinfo", &fields))
            }
            RefundFault::RepeatedWithoutAmount => {
                fields.retain(|(k, _)| {
                    !matches!(*k, "result_code" | "error" | "refund_amount" | "currency")
                });
                fields.push(("result_code", "FAIL".to_owned()));
                fields.push(("error", "REPEATED_REFUNDMENT_REQUEST".to_owned()));
                xml(self.signed_answer(sign_type, node, &fields))
            }
            RefundFault::BadSignature => {
                fields.retain(|(k, _)| *k != "result_code" && *k != "error");
                let mut signed = fields.clone();
                signed.push(("result_code", "FAIL".to_owned()));
                fields.push(("result_code", "SUCCESS".to_owned()));
                xml(self.answer_signed_over(sign_type, node, &fields, &signed))
            }
        }
    }

    fn notify_verify(&self, params: &FormFields) -> Response {
        let now = self.inner.clock.now();
        let ttl = self.inner.config.notify_id_ttl;
        let valid = params
            .get("notify_id")
            .and_then(|id| lock(&self.inner.notify_ids).get(id).copied())
            .is_some_and(|issued| issued.plus(ttl) >= now);
        (StatusCode::OK, if valid { "true" } else { "false" }).into_response()
    }

    fn check_timestamp(&self, params: &FormFields) -> Result<(), &'static str> {
        let ts = params
            .get("timestamp")
            .and_then(parse_gmt8)
            .ok_or("ILLEGAL_ARGUMENT")?;
        let now = self.inner.clock.now();
        let skew = Duration::from_secs(30 * 60);
        if ts.plus(skew) < now || now.plus(skew) < ts {
            return Err("ILLEGAL_ARGUMENT");
        }
        Ok(())
    }

    fn qrcode(&self, params: &FormFields, modify: bool) -> Result<Answer, &'static str> {
        self.check_timestamp(params)?;
        if params.get("biz_type") != Some("OVERSEASHOPQRCODE") {
            return Err("ILLEGAL_ARGUMENT");
        }
        let notify_url = params.get("notify_url").ok_or("ILLEGAL_ARGUMENT")?;
        let input = qr_input(
            params.get("biz_data").ok_or("ILLEGAL_ARGUMENT")?,
            notify_url,
        )?;
        let base_url = lock(&self.inner.base_url).clone();
        let mut ledger = lock(&self.inner.ledger);
        let record = if modify {
            ledger.modify_qr(params.get("qrcode").ok_or("ILLEGAL_ARGUMENT")?, input)?
        } else {
            ledger.create_qr(input, &base_url)
        };
        Ok((
            "qrcodeinfo",
            vec![
                ("qrcode", record.qrcode),
                ("qrcode_img_url", record.img_url),
            ],
        ))
    }

    fn modify_status(&self, params: &FormFields) -> Result<Answer, &'static str> {
        self.check_timestamp(params)?;
        let status = params
            .get("status")
            .and_then(QrCodeStatus::parse)
            .ok_or("ILLEGAL_ARGUMENT")?;
        let qrcode = params.get("qrcode").ok_or("ILLEGAL_ARGUMENT")?;
        let record = lock(&self.inner.ledger).set_status(qrcode, status)?;
        Ok((
            "qrcodeinfo",
            vec![
                ("qrcode", record.qrcode),
                ("status", status.as_str().to_owned()),
            ],
        ))
    }

    fn refund(&self, params: &FormFields, unknow: bool) -> Result<Answer, &'static str> {
        if params.get("is_sync") != Some("Y") {
            return Err("ILLEGAL_ARGUMENT");
        }
        let currency: Currency = params
            .get("currency")
            .ok_or("ILLEGAL_ARGUMENT")?
            .parse()
            .map_err(|_| "ILLEGAL_ARGUMENT")?;
        let amount = Money::parse_decimal(
            params.get("refund_amount").ok_or("ILLEGAL_ARGUMENT")?,
            currency,
        )
        .map_err(|_| "ILLEGAL_ARGUMENT")?;
        let trans_id = params.get("partner_trans_id").ok_or("ILLEGAL_ARGUMENT")?;
        let refund_id = params.get("partner_refund_id").ok_or("ILLEGAL_ARGUMENT")?;
        let result = lock(&self.inner.ledger).refund(
            trans_id,
            params.get("alipay_trans_id"),
            refund_id,
            amount,
        );
        let mut fields = vec![
            ("partner_trans_id", trans_id.to_owned()),
            ("partner_refund_id", refund_id.to_owned()),
        ];
        match result {
            Ok(RefundResult::Repeat(r)) if self.inner.config.repeated_refund_as_error => {
                fields.push(("result_code", "FAIL".to_owned()));
                fields.push(("error", "REPEATED_REFUNDMENT_REQUEST".to_owned()));
                fields.push(("refund_amount", r.amount.to_decimal()));
                fields.push(("currency", r.amount.currency().code().to_owned()));
            }
            Ok(RefundResult::Done(r) | RefundResult::Repeat(r)) => {
                let code = if unknow { "UNKNOW" } else { "SUCCESS" };
                fields.push(("result_code", code.to_owned()));
                fields.push(("refund_amount", r.amount.to_decimal()));
                fields.push(("currency", r.amount.currency().code().to_owned()));
            }
            Err((code, recorded)) => {
                fields.push(("result_code", "FAIL".to_owned()));
                fields.push(("error", code.to_owned()));
                if let Some(a) = recorded {
                    fields.push(("refund_amount", a.to_decimal()));
                    fields.push(("currency", a.currency().code().to_owned()));
                }
            }
        }
        Ok(("alipay", fields))
    }

    fn query(&self, params: &FormFields) -> Result<Answer, &'static str> {
        let ledger = lock(&self.inner.ledger);
        let found = ledger.find_trade(
            params.get("partner_trans_id"),
            params.get("alipay_trans_id"),
        );
        let fields = match found {
            Err(code) => vec![
                ("result_code", "FAIL".to_owned()),
                ("error", code.to_owned()),
            ],
            Ok(t) => {
                let paid = format_gmt8(t.paid_at);
                let compact: String = paid.chars().filter(char::is_ascii_digit).collect();
                let mut f = vec![
                    ("result_code", "SUCCESS".to_owned()),
                    ("alipay_trans_status", "TRADE_SUCCESS".to_owned()),
                    ("trans_amount", t.amount.to_decimal()),
                    ("currency", t.amount.currency().code().to_owned()),
                    ("out_trade_no", t.out_trade_no.clone()),
                    ("partner_trans_id", t.out_trade_no.clone()),
                    ("alipay_trans_id", t.trade_no.clone()),
                    ("alipay_pay_time", compact),
                ];
                if let Some(b) = &t.buyer_id {
                    f.push(("alipay_buyer_user_id", b.clone()));
                }
                f
            }
        };
        Ok(("alipay", fields))
    }

    fn signed_answer(&self, sign_type: SignType, node: &str, fields: &[(&str, String)]) -> String {
        self.answer_signed_over(sign_type, node, fields, fields)
    }

    /// An answer showing `fields` with the signature of `signed` (the same, unless forging one).
    fn answer_signed_over(
        &self,
        sign_type: SignType,
        node: &str,
        fields: &[(&str, String)],
        signed: &[(&str, String)],
    ) -> String {
        let presign = vendpay_alipay::presign_string(signed.iter().map(|(k, v)| (*k, v.as_str())));
        let signed = self
            .signer_for(sign_type)
            .map(|s| (s.sign(presign.as_bytes()), sign_type));
        let (sign, sign_type) = match signed {
            Some((Ok(sign), t)) => (sign, t),
            _ => return rejected("SYSTEM_ERROR"),
        };
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?><alipay><is_success>T</is_success><response>");
        out.push_str(&format!("<{node}>"));
        for (k, v) in fields {
            out.push_str(&format!("<{k}>{}</{k}>", escape(v)));
        }
        out.push_str(&format!(
            "</{node}></response><sign>{}</sign><sign_type>{}</sign_type></alipay>",
            escape(&sign),
            sign_type
        ));
        out
    }
}

type Answer = (&'static str, Vec<(&'static str, String)>);

fn qr_input(biz_data: &str, notify_url: &str) -> Result<QrInput, &'static str> {
    let biz: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(biz_data).map_err(|_| "ILLEGAL_ARGUMENT")?;
    let text = |k: &str| -> Result<String, &'static str> {
        biz.get(k)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or("ILLEGAL_ARGUMENT")
    };
    for required in [
        "secondary_merchant_id",
        "secondary_merchant_name",
        "secondary_merchant_industry",
    ] {
        text(required)?;
    }
    let currency = |k: &str| -> Result<Currency, &'static str> {
        text(k)?.parse().map_err(|_| "ILLEGAL_ARGUMENT")
    };
    let store_id = text("store_id")?;
    if store_id.len() > 32
        || !store_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err("ILLEGAL_ARGUMENT");
    }
    Ok(QrInput {
        store_id,
        store_name: text("store_name")?,
        notify_url: notify_url.to_owned(),
        trans_currency: currency("trans_currency")?,
        currency: currency("currency")?,
        passback: biz.get("passback_parameters").map(|v| v.to_string()),
        biz_key: serde_json::Value::Object(biz.clone()).to_string(),
    })
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn rejected(code: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><alipay><is_success>F</is_success><error>{}</error></alipay>",
        escape(code)
    )
}

fn xml(body: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn gateway(State(sb): State<Sandbox>, RawQuery(query): RawQuery, body: Bytes) -> Response {
    sb.handle(query, body).await
}

/// `POST /sandbox/pay` body.
#[derive(Debug, Deserialize)]
pub struct PayRequest {
    pub qrcode: String,
    /// Alipay's decimal form, e.g. `"3.50"`.
    pub amount: String,
    pub currency: String,
    #[serde(default)]
    pub buyer_id: Option<String>,
}

fn bad_request(msg: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({"error": {"code": "bad_request", "message": msg}})),
    )
        .into_response()
}

async fn pay_route(State(sb): State<Sandbox>, Json(req): Json<PayRequest>) -> Response {
    let currency: Currency = match req.currency.parse() {
        Ok(c) => c,
        Err(e) => return bad_request(format!("{e}")),
    };
    let amount = match Money::parse_decimal(&req.amount, currency) {
        Ok(a) => a,
        Err(e) => return bad_request(e.to_string()),
    };
    let buyer = match req.buyer_id.map(BuyerId::parse).transpose() {
        Ok(b) => b,
        Err(e) => return bad_request(e.to_string()),
    };
    match sb.pay(&req.qrcode, amount, buyer) {
        Ok(receipt) => Json(receipt).into_response(),
        Err(e) => bad_request(e.to_string()),
    }
}

/// `POST /sandbox/faults` body: switches queued in order.
#[derive(Debug, Default, Deserialize)]
pub struct FaultRequest {
    #[serde(default)]
    pub gateway: Vec<GatewayFault>,
    #[serde(default)]
    pub notifications: Vec<NotificationFault>,
    /// Per `partner_refund_id`: a fault to set, or `null` to clear it.
    #[serde(default)]
    pub refunds: HashMap<String, Option<RefundFault>>,
}

async fn faults_route(State(sb): State<Sandbox>, Json(req): Json<FaultRequest>) -> StatusCode {
    for f in req.gateway {
        sb.push_gateway_fault(f);
    }
    for f in req.notifications {
        sb.push_notification_fault(f);
    }
    for (id, f) in req.refunds {
        sb.set_refund_fault(&id, f);
    }
    StatusCode::NO_CONTENT
}

async fn deliveries_route(State(sb): State<Sandbox>) -> Json<Vec<Delivery>> {
    Json(sb.deliveries())
}

/// A sandbox serving in the background; dropping it stops the server.
pub struct RunningSandbox {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl RunningSandbox {
    pub fn gateway_url(&self) -> String {
        format!("http://{}/gateway.do", self.addr)
    }
}

impl Drop for RunningSandbox {
    fn drop(&mut self) {
        self.task.abort();
    }
}
