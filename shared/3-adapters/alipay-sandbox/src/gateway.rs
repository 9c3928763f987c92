//! The `gateway.do` side of the sandbox: the state every clone of [`Sandbox`] shares and how it is
//! built, the services (QR codes, refund, query) answered under Alipay's rules with real signatures,
//! and the fault switches that spoil those answers. Kept apart from the notifications and the HTTP
//! routes because this is where a request is verified, decided and signed.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use vendpay_alipay::time::{format_gmt8, parse_gmt8};
use vendpay_alipay::{parse_form, FormFields, QrCodeStatus, SignType, Signer, Verifier};
use vendpay_domain::{Clock, Currency, Money, SystemClock, Timestamp};

use crate::books::{Books, QrInput, RefundResult, Trade};
use crate::{
    lock, Delivery, GatewayFault, NotificationFault, RefundFault, Sandbox, SandboxConfig,
    SandboxError,
};

/// Where a new sandbox starts numbering: the time in units of 10 µs, so numbers keep growing across
/// restarts (at fewer than 100 trades per millisecond).
fn first_number(now: Timestamp) -> u64 {
    u64::try_from(now.millis()).unwrap_or(0).saturating_mul(100)
}

#[derive(Default)]
pub(crate) struct Faults {
    pub(crate) gateway: VecDeque<GatewayFault>,
    pub(crate) notifications: VecDeque<NotificationFault>,
    pub(crate) refunds: HashMap<String, RefundFault>,
}

pub(crate) struct Signers {
    rsa2: Signer,
    rsa: Signer,
    md5: Option<Signer>,
}

/// The state behind every clone of [`Sandbox`]; the notification half (`deliveries`, `notify_ids`,
/// `http`) is used by `notifications`.
pub(crate) struct Inner {
    pub(crate) config: SandboxConfig,
    pub(crate) signers: Signers,
    pub(crate) verifier: Verifier,
    pub(crate) books: Mutex<Books>,
    pub(crate) faults: Mutex<Faults>,
    pub(crate) deliveries: Mutex<Vec<Delivery>>,
    pub(crate) notify_ids: Mutex<HashMap<String, Timestamp>>,
    pub(crate) base_url: Mutex<String>,
    pub(crate) http: reqwest::Client,
    pub(crate) clock: Arc<dyn Clock>,
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
                books: Mutex::new(Books::numbered_from(first_number(SystemClock.now()))),
                faults: Mutex::new(Faults::default()),
                deliveries: Mutex::new(Vec::new()),
                notify_ids: Mutex::new(HashMap::new()),
                base_url: Mutex::new("http://127.0.0.1".to_owned()),
                http,
                clock,
            }),
        })
    }

    pub fn push_gateway_fault(&self, fault: GatewayFault) {
        lock(&self.inner.faults).gateway.push_back(fault);
    }

    /// Spoils every answer to refund `refund_id` from now on (`None`: answer it normally again).
    pub fn set_refund_fault(&self, refund_id: &str, fault: Option<RefundFault>) {
        let mut faults = lock(&self.inner.faults);
        match fault {
            Some(f) => faults.refunds.insert(refund_id.to_owned(), f),
            None => faults.refunds.remove(refund_id),
        };
    }

    /// Records a trade paid outside the sandbox — a committed fixture's notification — so refunds of it
    /// are answered as for any other trade. Refused for a trade number already known.
    pub fn import_trade(
        &self,
        trade_no: &str,
        out_trade_no: &str,
        amount: Money,
    ) -> Result<(), &'static str> {
        let now = self.inner.clock.now();
        lock(&self.inner.books).import(Trade {
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
        lock(&self.inner.books).trade(trade_no).map(|t| t.refunded)
    }

    pub(crate) fn signer_for(&self, sign_type: SignType) -> Option<&Signer> {
        match sign_type {
            SignType::Rsa2 => Some(&self.inner.signers.rsa2),
            SignType::Rsa => Some(&self.inner.signers.rsa),
            SignType::Md5 => self.inner.signers.md5.as_ref(),
        }
    }

    /// Handles one `gateway.do` call: `query` and `body` are the raw URL query and form body.
    pub(crate) async fn handle(&self, query: Option<String>, body: Bytes) -> Response {
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
        let mut books = lock(&self.inner.books);
        let record = if modify {
            books.modify_qr(params.get("qrcode").ok_or("ILLEGAL_ARGUMENT")?, input)?
        } else {
            books.create_qr(input, &base_url)
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
        let record = lock(&self.inner.books).set_status(qrcode, status)?;
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
        let result = lock(&self.inner.books).refund(
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
        let books = lock(&self.inner.books);
        let found = books.find_trade(
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
