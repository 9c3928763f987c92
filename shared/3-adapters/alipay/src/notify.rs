//! Payment notifications: Alipay's form POST to our `notify_url`, parsed strictly, verified over every
//! received field, and turned into a typed event (see `docs/alipay.md`, “Notifications”).
//!
//! The pre-sign string joins raw values, so a parser that accepted duplicated keys or values carrying
//! `&name=` (for any name, received or not) would let two different field sets share one signature;
//! both are refused before anything is verified. A payment without `notify_id` is refused too.

use encoding_rs::Encoding;
use percent_encoding::percent_decode;
use vendpay_domain::{BuyerId, Currency, MerchantTradeNo, Money, MoneyError, TradeNo};

use crate::presign::presign_bytes;
use crate::request::NotifyId;
use crate::response::TradeStatus;
use crate::sign::{SignError, SignType, SignatureError, Signer, Verifier};

/// Why a notification was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    #[error("unknown charset {0:?}")]
    UnknownCharset(String),
    /// A charset in which `&` and `=` are not their ASCII bytes (UTF-16, ISO-2022-JP): the raw bytes
    /// that are signed could not be checked for injected fields.
    #[error("charset {0:?} is not ASCII-compatible")]
    UnsupportedCharset(String),
    #[error("_input_charset and charset disagree")]
    ConflictingCharsets,
    #[error("field {0:?} is not valid in the notification's charset")]
    BadEncoding(String),
    #[error("field name {0:?} is not a plain name")]
    BadKey(String),
    #[error("field {0:?} appears more than once")]
    DuplicateKey(String),
    #[error("value of {field:?} contains '&{name}=': it could forge the signed string")]
    Injection { field: String, name: String },
    #[error("signature: {0}")]
    Signature(#[from] SignatureError),
    #[error("missing field {0}")]
    MissingField(&'static str),
    #[error("field {field}: {reason}")]
    BadField { field: &'static str, reason: String },
    #[error("unsupported currency {0:?}")]
    UnsupportedCurrency(String),
    #[error("total_fee: {0}")]
    Amount(MoneyError),
}

/// One received field: decoded text, and the exact bytes that were signed.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Field {
    key: String,
    value: String,
    raw_value: Vec<u8>,
}

/// Every received field, in arrival order; unknown ones included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormFields {
    fields: Vec<Field>,
    charset: &'static Encoding,
}

impl FormFields {
    /// A field's value; an empty value counts as absent, as in the pre-sign string.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|f| f.key == key)
            .map(|f| f.value.as_str())
            .filter(|v| !v.is_empty())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields
            .iter()
            .map(|f| (f.key.as_str(), f.value.as_str()))
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    pub fn charset(&self) -> &'static str {
        self.charset.name()
    }

    /// The pre-sign string over the bytes as received (GBK bytes for a GBK notification).
    pub fn presign(&self) -> Vec<u8> {
        presign_bytes(
            self.fields
                .iter()
                .map(|f| (f.key.as_bytes(), f.raw_value.as_slice())),
        )
    }

    /// Checks the signature with the algorithm the received `sign_type` names.
    pub fn verify(&self, verifier: &Verifier) -> Result<SignType, SignatureError> {
        verifier.verify_str(self.get("sign_type"), &self.presign(), self.get("sign"))
    }
}

fn form_decode(bytes: &[u8]) -> Vec<u8> {
    let spaced: Vec<u8> = bytes
        .iter()
        .map(|b| if *b == b'+' { b' ' } else { *b })
        .collect();
    percent_decode(&spaced).collect()
}

fn plain_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 64
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// Parses an `application/x-www-form-urlencoded` body: UTF-8, or the charset the body names in
/// `_input_charset` / `charset` (GBK in practice).
pub fn parse_form(body: &[u8]) -> Result<FormFields, NotifyError> {
    let mut raw: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for part in body.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        let (k, v) = match part.iter().position(|b| *b == b'=') {
            Some(i) => (&part[..i], &part[i + 1..]),
            None => (part, &part[part.len()..]),
        };
        raw.push((form_decode(k), form_decode(v)));
    }
    let label_of = |name: &[u8]| {
        raw.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let charset = match (label_of(b"_input_charset"), label_of(b"charset")) {
        (Some(a), Some(b)) if !a.eq_ignore_ascii_case(&b) => {
            return Err(NotifyError::ConflictingCharsets)
        }
        (Some(l), _) | (None, Some(l)) => Encoding::for_label(l.as_bytes())
            .ok_or_else(|| NotifyError::UnknownCharset(l.chars().take(32).collect()))?,
        (None, None) => encoding_rs::UTF_8,
    };
    if !charset.is_ascii_compatible() {
        return Err(NotifyError::UnsupportedCharset(charset.name().to_owned()));
    }
    let mut fields: Vec<Field> = Vec::with_capacity(raw.len());
    for (k, v) in raw {
        let key = std::str::from_utf8(&k)
            .ok()
            .filter(|k| plain_key(k))
            .ok_or_else(|| {
                NotifyError::BadKey(String::from_utf8_lossy(&k).chars().take(64).collect())
            })?
            .to_owned();
        if fields.iter().any(|f| f.key == key) {
            return Err(NotifyError::DuplicateKey(key));
        }
        let (value, had_errors) = charset.decode_without_bom_handling(&v);
        if had_errors {
            return Err(NotifyError::BadEncoding(key));
        }
        let mut value = value.into_owned();
        let mut raw_value = v;
        if key == "sign" {
            // Form decoders turn an unescaped '+' of Base64 into a space; Base64 has no spaces.
            value = value.replace(' ', "+");
            raw_value = value.clone().into_bytes();
        }
        fields.push(Field {
            key,
            value,
            raw_value,
        });
    }
    // Every name, not only the received ones: folding a field (notify_id, seller_id) into the value
    // sorted just before it keeps the pre-sign string byte-identical while the field disappears.
    for f in &fields {
        if let Some(name) = assigned_name(&f.value) {
            return Err(NotifyError::Injection {
                field: f.key.clone(),
                name: name.chars().take(64).collect(),
            });
        }
    }
    Ok(FormFields { fields, charset })
}

/// The first `&name=` inside `value`, `name` being anything that could be a field name.
fn assigned_name(value: &str) -> Option<&str> {
    value.match_indices('&').find_map(|(i, _)| {
        let rest = &value[i + 1..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
            .unwrap_or(rest.len());
        (end > 0 && rest[end..].starts_with('=')).then(|| &rest[..end])
    })
}

/// A payment: the buyer has paid `amount` (TRADE_SUCCESS or TRADE_FINISHED).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    pub trade_no: TradeNo,
    pub out_trade_no: MerchantTradeNo,
    /// `total_fee` in `trans_currency`, or in `currency` when there is no `trans_currency`.
    pub amount: Money,
    pub status: TradeStatus,
    pub buyer_id: Option<BuyerId>,
    /// As received: the flat JSON given at QR creation.
    pub passback_parameters: Option<String>,
    pub gmt_payment: Option<String>,
}

/// A notification about a trade that moves no money to us (refund echo, closing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TradeEvent {
    pub trade_no: TradeNo,
    pub out_trade_no: Option<MerchantTradeNo>,
    pub status: TradeStatus,
    pub action: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotificationKind {
    Payment(Payment),
    RefundEcho(TradeEvent),
    Closed(TradeEvent),
    /// Anything else (WAIT_BUYER_PAY, new actions): acknowledged, never credited.
    Other {
        status: Option<TradeStatus>,
        action: Option<String>,
    },
}

/// A notification whose signature verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    pub fields: FormFields,
    pub sign_type: SignType,
    pub notify_id: Option<NotifyId>,
    pub kind: NotificationKind,
}

/// Parses, verifies and interprets a notification body.
pub fn verify_notification(body: &[u8], verifier: &Verifier) -> Result<Notification, NotifyError> {
    let fields = parse_form(body)?;
    let sign_type = fields.verify(verifier)?;
    let notify_id = fields
        .get("notify_id")
        .map(NotifyId::parse)
        .transpose()
        .map_err(|e| bad("notify_id", e))?;
    let kind = interpret(&fields)?;
    // notify_id is what notify_verify checks under our partner id: without it a notification of any
    // merchant account (all signed with the same Alipay key) could not be told from ours.
    if matches!(kind, NotificationKind::Payment(_)) && notify_id.is_none() {
        return Err(NotifyError::MissingField("notify_id"));
    }
    Ok(Notification {
        fields,
        sign_type,
        notify_id,
        kind,
    })
}

fn bad(field: &'static str, e: impl std::fmt::Display) -> NotifyError {
    NotifyError::BadField {
        field,
        reason: e.to_string(),
    }
}

fn interpret(f: &FormFields) -> Result<NotificationKind, NotifyError> {
    let status = f.get("trade_status").map(TradeStatus::parse);
    let action = f.get("notify_action_type").map(str::to_owned);
    let is_refund = action
        .as_deref()
        .is_some_and(|a| a.to_ascii_lowercase().starts_with("refund"));
    let trade_no = || -> Result<TradeNo, NotifyError> {
        TradeNo::parse(
            f.get("trade_no")
                .ok_or(NotifyError::MissingField("trade_no"))?,
        )
        .map_err(|e| bad("trade_no", e))
    };
    let out_trade_no = || -> Result<Option<MerchantTradeNo>, NotifyError> {
        f.get("out_trade_no")
            .map(MerchantTradeNo::parse)
            .transpose()
            .map_err(|e| bad("out_trade_no", e))
    };
    let event = |status: TradeStatus| -> Result<TradeEvent, NotifyError> {
        Ok(TradeEvent {
            trade_no: trade_no()?,
            out_trade_no: out_trade_no()?,
            status,
            action: action.clone(),
        })
    };
    Ok(match status {
        Some(s) if is_refund => NotificationKind::RefundEcho(event(s)?),
        Some(TradeStatus::TradeClosed) => {
            NotificationKind::Closed(event(TradeStatus::TradeClosed)?)
        }
        Some(s) if s.is_paid() => {
            let code = f
                .get("trans_currency")
                .or(f.get("currency"))
                .ok_or(NotifyError::MissingField("currency"))?;
            let currency: Currency = code
                .parse()
                .map_err(|_| NotifyError::UnsupportedCurrency(code.chars().take(16).collect()))?;
            let total = f
                .get("total_fee")
                .ok_or(NotifyError::MissingField("total_fee"))?;
            let amount = Money::parse_decimal(total, currency).map_err(NotifyError::Amount)?;
            NotificationKind::Payment(Payment {
                trade_no: trade_no()?,
                out_trade_no: out_trade_no()?.ok_or(NotifyError::MissingField("out_trade_no"))?,
                amount,
                status: s,
                buyer_id: f
                    .get("buyer_id")
                    .map(BuyerId::parse)
                    .transpose()
                    .map_err(|e| bad("buyer_id", e))?,
                passback_parameters: f.get("passback_parameters").map(str::to_owned),
                gmt_payment: f.get("gmt_payment").map(str::to_owned),
            })
        }
        status => NotificationKind::Other { status, action },
    })
}

/// Signs `fields` and encodes them as a UTF-8 form body, as Alipay sends a notification. Used by the
/// sandbox and by tests.
pub fn signed_form<'a, I>(fields: I, signer: &Signer) -> Result<String, SignError>
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let fields: Vec<(&str, &str)> = fields.into_iter().collect();
    let presign = crate::presign::presign_string(fields.iter().copied());
    let sign = signer.sign(presign.as_bytes())?;
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in &fields {
        ser.append_pair(k, v);
    }
    ser.append_pair("sign", &sign);
    ser.append_pair("sign_type", signer.sign_type().as_str());
    Ok(ser.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_plus_and_percent_and_keeps_order() {
        let f = parse_form(b"b=1+2&a=%E5%94%AE&c=&x").unwrap();
        let got: Vec<_> = f.iter().collect();
        assert_eq!(got, vec![("b", "1 2"), ("a", "售"), ("c", ""), ("x", "")]);
        assert_eq!(f.presign(), b"a=\xe5\x94\xae&b=1 2".to_vec());
    }

    #[test]
    fn gbk_is_decoded_but_signed_over_the_received_bytes() {
        // "售货机" in GBK is CA DB BB F5 BB FA.
        let f = parse_form(b"_input_charset=gbk&subject=%CA%DB%BB%F5%BB%FA").unwrap();
        assert_eq!(f.get("subject"), Some("售货机"));
        assert_eq!(f.charset(), "GBK");
        assert_eq!(
            f.presign(),
            b"_input_charset=gbk&subject=\xCA\xDB\xBB\xF5\xBB\xFA".to_vec()
        );
        let f = parse_form(b"charset=GBK&subject=%CA%DB").unwrap();
        assert_eq!(f.get("subject"), Some("售"));
    }

    #[test]
    fn refuses_ambiguous_forms() {
        assert_eq!(
            parse_form(b"a=1&a=2"),
            Err(NotifyError::DuplicateKey("a".into()))
        );
        assert_eq!(
            parse_form(b"subject=x%26total_fee%3D1&total_fee=500"),
            Err(NotifyError::Injection {
                field: "subject".into(),
                name: "total_fee".into()
            })
        );
        // '&' alone, or '&name' without '=', cannot forge a field.
        assert!(parse_form(b"subject=fish%26chips&total_fee=5").is_ok());
        assert!(parse_form(b"subject=a%26total_fee&total_fee=5").is_ok());
        assert!(matches!(
            parse_form(b"a%26b=1"),
            Err(NotifyError::BadKey(_))
        ));
        assert_eq!(
            parse_form(b"_input_charset=utf-8&charset=gbk"),
            Err(NotifyError::ConflictingCharsets)
        );
        assert!(matches!(
            parse_form(b"charset=klingon"),
            Err(NotifyError::UnknownCharset(_))
        ));
        assert_eq!(
            parse_form(b"subject=%FF"),
            Err(NotifyError::BadEncoding("subject".into()))
        );
    }

    #[test]
    fn sign_spaces_are_turned_back_into_plus() {
        let f = parse_form(b"sign=ab+cd%2Bef&x=1").unwrap();
        assert_eq!(f.get("sign"), Some("ab+cd+ef"));
    }
}
