//! Requests to the mapi gateway: the parameters of each service (see `docs/alipay.md`,
//! “Services we call”), signed over their raw values and sent URL-encoded.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use vendpay_domain::{Currency, DeviceId, MerchantTradeNo, Money, RefundId, Timestamp, TradeNo};

use crate::error::AlipayError;
use crate::sign::{SignError, Signer};
use crate::time::format_gmt8;

pub const SERVICE_QRCODE_CREATE: &str = "alipay.commerce.qrcode.create";
pub const SERVICE_QRCODE_MODIFY: &str = "alipay.commerce.qrcode.modify";
pub const SERVICE_QRCODE_MODIFY_STATUS: &str = "alipay.commerce.qrcode.modifyStatus";
pub const SERVICE_REFUND: &str = "alipay.acquire.overseas.spot.refund";
pub const SERVICE_QUERY: &str = "alipay.acquire.overseas.query";
pub const SERVICE_NOTIFY_VERIFY: &str = "notify_verify";

/// Why a value was refused before anything was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidValue {
    pub field: &'static str,
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> InvalidValue {
    InvalidValue {
        field,
        reason: reason.into(),
    }
}

macro_rules! text_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

text_newtype!(
    /// The merchant's 16-digit Alipay partner id (PID).
    PartnerId
);
text_newtype!(
    /// A merchant QR code's content (`https://qr.alipay.com/...`), as Alipay returned it.
    QrCode
);
text_newtype!(
    /// An absolute http(s) URL Alipay calls back (`notify_url`).
    NotifyUrl
);
text_newtype!(
    /// A notification's `notify_id`, checked with `notify_verify`.
    NotifyId
);

impl PartnerId {
    pub fn parse(s: &str) -> Result<PartnerId, InvalidValue> {
        if s.len() == 16 && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(PartnerId(s.to_owned()))
        } else {
            Err(invalid(
                "partner",
                "must be 16 digits (it starts with 2088)",
            ))
        }
    }
}

/// Printable, no white space or `&`, so the value can neither break the form nor the pre-sign string.
fn plain_token(field: &'static str, s: &str, max: usize) -> Result<String, InvalidValue> {
    if s.is_empty() {
        return Err(invalid(field, "is empty"));
    }
    if s.len() > max {
        return Err(invalid(field, format!("is longer than {max} bytes")));
    }
    if s.chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '&')
    {
        return Err(invalid(
            field,
            "contains white space, a control character or '&'",
        ));
    }
    Ok(s.to_owned())
}

impl QrCode {
    pub fn parse(s: &str) -> Result<QrCode, InvalidValue> {
        plain_token("qrcode", s, 512).map(QrCode)
    }
}

impl NotifyId {
    pub fn parse(s: &str) -> Result<NotifyId, InvalidValue> {
        plain_token("notify_id", s, 256).map(NotifyId)
    }
}

impl NotifyUrl {
    pub fn parse(s: &str) -> Result<NotifyUrl, InvalidValue> {
        let s = plain_token("notify_url", s, 1024)?;
        if !(s.starts_with("https://") || s.starts_with("http://")) {
            return Err(invalid("notify_url", "must be an absolute http(s) URL"));
        }
        Ok(NotifyUrl(s))
    }
}

/// A request's parameters, in the order they were added; `sign`/`sign_type` come last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params(Vec<(&'static str, String)>);

impl Params {
    fn new(service: &'static str, partner: &PartnerId) -> Params {
        Params(vec![
            ("service", service.to_owned()),
            ("partner", partner.as_str().to_owned()),
            ("_input_charset", "UTF-8".to_owned()),
        ])
    }

    fn push(&mut self, key: &'static str, value: impl Into<String>) {
        self.0.push((key, value.into()));
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (*k, v.as_str()))
    }

    pub fn presign(&self) -> String {
        crate::presign::presign_string(self.iter())
    }

    /// Adds `sign` and `sign_type`.
    pub fn sign(mut self, signer: &Signer) -> Result<Params, SignError> {
        let sign = signer.sign(self.presign().as_bytes())?;
        self.push("sign", sign);
        self.push("sign_type", signer.sign_type().as_str());
        Ok(self)
    }

    /// `application/x-www-form-urlencoded` of every parameter except `_input_charset`, which goes in
    /// the URL: some gateways read the charset before the body (see `docs/alipay.md`, “Transport”).
    pub fn form_body(&self) -> String {
        let mut ser = form_urlencoded::Serializer::new(String::new());
        for (k, v) in self.iter().filter(|(k, _)| *k != "_input_charset") {
            ser.append_pair(k, v);
        }
        ser.finish()
    }

    pub fn query_string(&self) -> String {
        let mut ser = form_urlencoded::Serializer::new(String::new());
        for (k, v) in self.iter() {
            ser.append_pair(k, v);
        }
        ser.finish()
    }
}

/// `biz_data` of `qrcode.create` / `.modify`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct QrBizData {
    pub secondary_merchant_id: String,
    pub secondary_merchant_name: String,
    /// The merchant's 4-digit MCC.
    pub secondary_merchant_industry: String,
    pub store_id: DeviceId,
    pub store_name: String,
    pub trans_currency: Currency,
    pub currency: Currency,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Flat key/value pairs Alipay returns with each payment (see `docs/alipay.md`,
    /// “Services we call”).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passback_parameters: Option<BTreeMap<String, String>>,
}

impl QrBizData {
    /// The JSON sent as `biz_data`, checked against Alipay's limits.
    pub fn to_json(&self) -> Result<String, InvalidValue> {
        let id = &self.secondary_merchant_id;
        if id.is_empty()
            || id.len() > 64
            || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(invalid(
                "secondary_merchant_id",
                "must be 1-64 letters, digits or '_'",
            ));
        }
        let name_ok = |s: &str| !s.trim().is_empty() && s.chars().count() <= 64;
        if !name_ok(&self.secondary_merchant_name) {
            return Err(invalid(
                "secondary_merchant_name",
                "must be 1-64 characters",
            ));
        }
        if !name_ok(&self.store_name) {
            return Err(invalid("store_name", "must be 1-64 characters"));
        }
        let mcc = &self.secondary_merchant_industry;
        if mcc.len() != 4 || !mcc.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(
                "secondary_merchant_industry",
                "must be a 4-digit MCC",
            ));
        }
        let json = serde_json::to_string(self).map_err(|e| invalid("biz_data", e.to_string()))?;
        if json.chars().count() > 2000 {
            return Err(invalid("biz_data", "is longer than 2000 characters"));
        }
        Ok(json)
    }
}

/// `alipay.commerce.qrcode.create`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QrCodeCreate {
    pub notify_url: NotifyUrl,
    pub biz: QrBizData,
}

/// `alipay.commerce.qrcode.modify`: the same fields for an existing code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QrCodeModify {
    pub qrcode: QrCode,
    pub notify_url: NotifyUrl,
    pub biz: QrBizData,
}

/// `status` of `alipay.commerce.qrcode.modifyStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QrCodeStatus {
    Stop,
    Restart,
    Delete,
}

impl QrCodeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            QrCodeStatus::Stop => "STOP",
            QrCodeStatus::Restart => "RESTART",
            QrCodeStatus::Delete => "DELETE",
        }
    }

    pub fn parse(s: &str) -> Option<QrCodeStatus> {
        match s {
            "STOP" => Some(QrCodeStatus::Stop),
            "RESTART" => Some(QrCodeStatus::Restart),
            "DELETE" => Some(QrCodeStatus::Delete),
            _ => None,
        }
    }
}

/// `alipay.acquire.overseas.spot.refund` (always `is_sync=Y`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundRequest {
    /// The payment's `out_trade_no`.
    pub partner_trans_id: MerchantTradeNo,
    /// The payment's `trade_no`.
    pub alipay_trans_id: Option<TradeNo>,
    /// The same for every retry of this refund.
    pub partner_refund_id: RefundId,
    /// In the payment's currency.
    pub amount: Money,
    pub reason: Option<String>,
    pub notify_url: Option<NotifyUrl>,
}

/// Which trade `alipay.acquire.overseas.query` asks about: one id or both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TradeRef {
    Merchant(MerchantTradeNo),
    Alipay(TradeNo),
    Both(MerchantTradeNo, TradeNo),
}

impl QrCodeCreate {
    pub fn params(&self, partner: &PartnerId, now: Timestamp) -> Result<Params, AlipayError> {
        let mut p = Params::new(SERVICE_QRCODE_CREATE, partner);
        qr_fields(&mut p, &self.notify_url, &self.biz, now)?;
        Ok(p)
    }
}

impl QrCodeModify {
    pub fn params(&self, partner: &PartnerId, now: Timestamp) -> Result<Params, AlipayError> {
        let mut p = Params::new(SERVICE_QRCODE_MODIFY, partner);
        p.push("qrcode", self.qrcode.as_str());
        qr_fields(&mut p, &self.notify_url, &self.biz, now)?;
        Ok(p)
    }
}

fn qr_fields(
    p: &mut Params,
    notify_url: &NotifyUrl,
    biz: &QrBizData,
    now: Timestamp,
) -> Result<(), AlipayError> {
    let json = biz
        .to_json()
        .map_err(|e| AlipayError::Request(e.to_string()))?;
    p.push("timestamp", format_gmt8(now));
    p.push("notify_url", notify_url.as_str());
    p.push("biz_type", "OVERSEASHOPQRCODE");
    p.push("biz_data", json);
    Ok(())
}

/// `alipay.commerce.qrcode.modifyStatus`.
pub fn qrcode_modify_status_params(
    partner: &PartnerId,
    qrcode: &QrCode,
    status: QrCodeStatus,
    now: Timestamp,
) -> Params {
    let mut p = Params::new(SERVICE_QRCODE_MODIFY_STATUS, partner);
    p.push("timestamp", format_gmt8(now));
    p.push("biz_type", "OVERSEASHOPQRCODE");
    p.push("qrcode", qrcode.as_str());
    p.push("status", status.as_str());
    p
}

impl RefundRequest {
    pub fn params(&self, partner: &PartnerId) -> Result<Params, AlipayError> {
        if self.amount.is_zero() {
            return Err(AlipayError::Request(
                "refund_amount must be positive".into(),
            ));
        }
        let mut p = Params::new(SERVICE_REFUND, partner);
        p.push("partner_trans_id", self.partner_trans_id.as_str());
        if let Some(t) = &self.alipay_trans_id {
            p.push("alipay_trans_id", t.as_str());
        }
        p.push("partner_refund_id", self.partner_refund_id.as_str());
        p.push("refund_amount", self.amount.to_decimal());
        p.push("currency", self.amount.currency().code());
        if let Some(r) = &self.reason {
            let r = plain_reason(r).map_err(|e| AlipayError::Request(e.to_string()))?;
            p.push("refund_reason", r);
        }
        if let Some(u) = &self.notify_url {
            p.push("notify_url", u.as_str());
        }
        p.push("is_sync", "Y");
        Ok(p)
    }
}

/// A free-text reason must not smuggle `&key=` into the signed string.
fn plain_reason(r: &str) -> Result<String, InvalidValue> {
    if r.contains(['&', '=']) || r.chars().any(char::is_control) || r.chars().count() > 128 {
        return Err(invalid(
            "refund_reason",
            "must be at most 128 characters without '&', '=' or control characters",
        ));
    }
    Ok(r.to_owned())
}

impl TradeRef {
    pub fn params(&self, partner: &PartnerId) -> Params {
        let mut p = Params::new(SERVICE_QUERY, partner);
        match self {
            TradeRef::Merchant(m) => p.push("partner_trans_id", m.as_str()),
            TradeRef::Alipay(t) => p.push("alipay_trans_id", t.as_str()),
            TradeRef::Both(m, t) => {
                p.push("partner_trans_id", m.as_str());
                p.push("alipay_trans_id", t.as_str());
            }
        }
        p
    }
}

/// `notify_verify` is unsigned: the notification id itself is the secret Alipay checks.
pub fn notify_verify_params(partner: &PartnerId, notify_id: &NotifyId) -> Params {
    let mut p = Params(vec![("service", SERVICE_NOTIFY_VERIFY.to_owned())]);
    p.push("partner", partner.as_str());
    p.push("notify_id", notify_id.as_str());
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::SignType;

    fn partner() -> PartnerId {
        PartnerId::parse("1000000000000000").unwrap()
    }

    #[test]
    fn refund_params_match_the_spec_vector() {
        let req = RefundRequest {
            partner_trans_id: MerchantTradeNo::parse("2010121000000002").unwrap(),
            alipay_trans_id: None,
            partner_refund_id: RefundId::parse("301012133000002").unwrap(),
            amount: Money::new(1, Currency::Usd).unwrap(),
            reason: None,
            notify_url: None,
        };
        let p = req.params(&partner()).unwrap();
        // The spec's vector was computed with a lower-case charset; everything else is what we send.
        let mut presign = p.presign();
        presign = presign.replace("_input_charset=UTF-8", "_input_charset=utf-8");
        assert_eq!(presign, "_input_charset=utf-8&currency=USD&is_sync=Y&partner=1000000000000000&partner_refund_id=301012133000002&partner_trans_id=2010121000000002&refund_amount=0.01&service=alipay.acquire.overseas.spot.refund");
        let signer = Signer::from_setting(
            SignType::Md5,
            "ALIPAY_MD5_KEY",
            "10000000000000000000000000000000",
        )
        .unwrap();
        let signed = p.sign(&signer).unwrap();
        assert_eq!(signed.get("sign_type"), Some("MD5"));
        assert!(!signed.form_body().contains("_input_charset"));
        assert!(signed.form_body().contains("refund_amount=0.01"));
    }

    #[test]
    fn amounts_follow_the_currency() {
        let req = |m| RefundRequest {
            partner_trans_id: MerchantTradeNo::parse("X1").unwrap(),
            alipay_trans_id: Some(TradeNo::parse("T1").unwrap()),
            partner_refund_id: RefundId::parse("R1").unwrap(),
            amount: m,
            reason: Some("change returned".into()),
            notify_url: None,
        };
        let jpy = req(Money::new(1050, Currency::Jpy).unwrap())
            .params(&partner())
            .unwrap();
        assert_eq!(jpy.get("refund_amount"), Some("1050"));
        assert_eq!(jpy.get("currency"), Some("JPY"));
        assert_eq!(jpy.get("alipay_trans_id"), Some("T1"));
        let zero = req(Money::zero(Currency::Cny)).params(&partner());
        assert!(matches!(zero, Err(AlipayError::Request(_))));
        let mut sneaky = req(Money::new(1, Currency::Cny).unwrap());
        sneaky.reason = Some("x&refund_amount=9".into());
        assert!(matches!(
            sneaky.params(&partner()),
            Err(AlipayError::Request(_))
        ));
    }

    #[test]
    fn biz_data_is_checked_and_serialised_in_field_order() {
        let biz = QrBizData {
            secondary_merchant_id: "m_1".into(),
            secondary_merchant_name: "Vending Co".into(),
            secondary_merchant_industry: "5814".into(),
            store_id: DeviceId::parse("vm-1").unwrap(),
            store_name: "Station 1".into(),
            trans_currency: Currency::Cny,
            currency: Currency::Usd,
            country_code: None,
            address: None,
            passback_parameters: Some(BTreeMap::from([("device".into(), "vm-1".into())])),
        };
        assert_eq!(
            biz.to_json().unwrap(),
            r#"{"secondary_merchant_id":"m_1","secondary_merchant_name":"Vending Co","secondary_merchant_industry":"5814","store_id":"vm-1","store_name":"Station 1","trans_currency":"CNY","currency":"USD","passback_parameters":{"device":"vm-1"}}"#
        );
        let mut bad = biz.clone();
        bad.secondary_merchant_industry = "58".into();
        assert_eq!(
            bad.to_json().map_err(|e| e.field),
            Err("secondary_merchant_industry")
        );
        let mut bad = biz;
        bad.secondary_merchant_id = "has space".into();
        assert_eq!(
            bad.to_json().map_err(|e| e.field),
            Err("secondary_merchant_id")
        );
    }

    #[test]
    fn ids_are_validated() {
        assert!(PartnerId::parse("2088123412341234").is_ok());
        assert!(PartnerId::parse("2088").is_err());
        assert!(NotifyUrl::parse("https://x.example/alipay/notify/vm-1").is_ok());
        assert!(NotifyUrl::parse("ftp://x").is_err());
        assert!(QrCode::parse("https://qr.alipay.com/a b").is_err());
    }
}
