//! Synchronous XML answers: parsed with roxmltree, the business node's signature checked, and turned
//! into typed results or a classified [`AlipayError`].

use vendpay_domain::{BuyerId, Currency, MerchantTradeNo, Money, RefundId, TradeNo};

use crate::error::{AlipayError, ErrorCode};
use crate::presign::presign_string;
use crate::request::{QrCode, TradeRef};
use crate::sign::Verifier;

/// The node under `<response>`: its element name and its children as (name, text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusinessNode {
    pub name: String,
    pub fields: Vec<(String, String)>,
}

impl BusinessNode {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    fn require(&self, key: &str) -> Result<&str, AlipayError> {
        self.get(key)
            .ok_or_else(|| AlipayError::Malformed(format!("<{}> lacks <{key}>", self.name)))
    }

    /// A correctly signed node of another service, replayed on-path, must not pass for this one's.
    fn expect_name(self, name: &str) -> Result<BusinessNode, AlipayError> {
        if self.name == name {
            Ok(self)
        } else {
            Err(AlipayError::Unverified(format!(
                "answer node is <{}>, not <{name}>",
                self.name
            )))
        }
    }
}

/// An accepted (`is_success=T`) answer whose business node, if any, carried a valid signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub business: Option<BusinessNode>,
}

const SNIPPET: usize = 120;

fn snippet(s: &str) -> String {
    s.chars().take(SNIPPET).collect()
}

/// Decodes the body by its XML declaration (UTF-8 unless it names another charset).
fn decode(body: &[u8]) -> Result<String, AlipayError> {
    let head = &body[..body.len().min(100)];
    let head = String::from_utf8_lossy(head);
    let label = head
        .strip_prefix("<?xml")
        .and_then(|d| d.split_once("?>"))
        .and_then(|(decl, _)| decl.split_once("encoding="))
        .and_then(|(_, rest)| {
            let q = rest.chars().next()?;
            rest.get(q.len_utf8()..)?.split(q).next()
        });
    let encoding = label
        .and_then(|l| encoding_rs::Encoding::for_label(l.as_bytes()))
        .unwrap_or(encoding_rs::UTF_8);
    let (text, _, had_errors) = encoding.decode(body);
    if had_errors {
        return Err(AlipayError::NotXml(format!(
            "body is not valid {}",
            encoding.name()
        )));
    }
    Ok(text.into_owned())
}

/// Parses an answer: `is_success=F` becomes [`AlipayError::Rejected`], anything that is not Alipay's
/// XML becomes the retryable [`AlipayError::NotXml`].
pub fn parse_answer(body: &[u8], verifier: &Verifier) -> Result<Answer, AlipayError> {
    let text = decode(body)?;
    let doc = roxmltree::Document::parse(text.trim())
        .map_err(|e| AlipayError::NotXml(format!("{e}: {}", snippet(text.trim()))))?;
    let root = doc.root_element();
    if root.tag_name().name() != "alipay" {
        return Err(AlipayError::NotXml(snippet(text.trim())));
    }
    let child = |name: &str| root.children().find(|n| n.has_tag_name(name));
    let child_text = |name: &str| child(name).and_then(|n| n.text()).map(str::trim);
    match child_text("is_success") {
        Some("T") => {}
        Some("F") => {
            return Err(AlipayError::Rejected(ErrorCode::parse(
                child_text("error").unwrap_or(""),
            )))
        }
        other => {
            return Err(AlipayError::Malformed(format!(
                "is_success is {other:?}, not T or F"
            )))
        }
    }
    let Some(response) = child("response") else {
        return Ok(Answer { business: None });
    };
    let mut nodes = response.children().filter(|n| n.is_element());
    let (Some(node), None) = (nodes.next(), nodes.next()) else {
        return Err(AlipayError::Malformed(
            "<response> must hold exactly one element".into(),
        ));
    };
    let mut fields: Vec<(String, String)> = Vec::new();
    for f in node.children().filter(|n| n.is_element()) {
        let key = f.tag_name().name().to_owned();
        if fields.iter().any(|(k, _)| *k == key) {
            return Err(AlipayError::Malformed(format!("<{key}> appears twice")));
        }
        fields.push((key, f.text().unwrap_or("").to_owned()));
    }
    let presign = presign_string(fields.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    verifier.verify_str(
        child_text("sign_type"),
        presign.as_bytes(),
        child_text("sign"),
    )?;
    Ok(Answer {
        business: Some(BusinessNode {
            name: node.tag_name().name().to_owned(),
            fields,
        }),
    })
}

fn business(answer: Answer) -> Result<BusinessNode, AlipayError> {
    answer
        .business
        .ok_or_else(|| AlipayError::Malformed("accepted answer has no <response>".into()))
}

/// A merchant QR code as `qrcode.create` / `.modify` returned it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QrCodeInfo {
    pub qrcode: QrCode,
    pub qrcode_img_url: Option<String>,
}

pub fn qrcode_info(answer: Answer) -> Result<QrCodeInfo, AlipayError> {
    let node = business(answer)?.expect_name("qrcodeinfo")?;
    let qrcode = QrCode::parse(node.require("qrcode")?)
        .map_err(|e| AlipayError::Malformed(e.to_string()))?;
    Ok(QrCodeInfo {
        qrcode,
        qrcode_img_url: node.get("qrcode_img_url").map(str::to_owned),
    })
}

/// Interprets an `alipay.commerce.qrcode.modifyStatus` answer: only a signed node of the QR services
/// (`<qrcodeinfo>`) counts; another service's signed node, replayed, or an accepted answer without
/// any signed node says nothing about this request.
pub fn qrcode_status_answer(answer: Answer) -> Result<(), AlipayError> {
    business(answer)?.expect_name("qrcodeinfo")?;
    Ok(())
}

/// A refund Alipay has made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundOutcome {
    pub partner_refund_id: RefundId,
    pub amount: Money,
    pub exchange_rate: Option<String>,
    pub refund_amount_cny: Option<String>,
    /// Alipay said `REPEATED_REFUNDMENT_REQUEST`: an earlier attempt already went through.
    pub repeated: bool,
}

fn currency_of(node: &BusinessNode, fallback: Currency) -> Result<Currency, AlipayError> {
    match node.get("currency") {
        Some(c) => c
            .parse()
            .map_err(|e: vendpay_domain::money::UnknownCurrency| {
                AlipayError::Malformed(e.to_string())
            }),
        None => Ok(fallback),
    }
}

/// Parses and interprets a `spot.refund` answer body. An answer we cannot verify says nothing about
/// whether Alipay paid, so its failure is an unknown outcome (retryable), never a permanent one.
pub fn refund_answer(
    body: &[u8],
    verifier: &Verifier,
    refund_id: &RefundId,
    requested: Money,
) -> Result<RefundOutcome, AlipayError> {
    parse_answer(body, verifier)
        .and_then(|answer| refund_outcome(answer, refund_id, requested))
        .map_err(|e| match e {
            AlipayError::AnswerSignature(_) | AlipayError::Malformed(_) => {
                AlipayError::Unverified(e.to_string())
            }
            e => e,
        })
}

/// Interprets a `spot.refund` answer for the refund of `requested` under `refund_id`. Only the
/// refund's own node echoing `refund_id` counts, whatever its result: a permanent error code from
/// an answer not tied to this request would close a refund Alipay may have made.
pub fn refund_outcome(
    answer: Answer,
    refund_id: &RefundId,
    requested: Money,
) -> Result<RefundOutcome, AlipayError> {
    let node = business(answer)?.expect_name("alipay")?;
    match node.get("partner_refund_id") {
        Some(id) if id == refund_id.as_str() => {}
        Some(id) => {
            return Err(AlipayError::Unverified(format!(
                "answer is for refund {id:?}, not {refund_id}"
            )))
        }
        None => {
            return Err(AlipayError::Unverified(format!(
                "answer does not echo partner_refund_id {refund_id}"
            )))
        }
    }
    let answered_amount = |node: &BusinessNode| -> Result<Option<Money>, AlipayError> {
        let currency = currency_of(node, requested.currency())?;
        node.get("refund_amount")
            .map(|a| {
                Money::parse_decimal(a, currency)
                    .map_err(|e| AlipayError::Malformed(format!("refund_amount: {e}")))
            })
            .transpose()
    };
    let mismatch = |recorded: Money| AlipayError::RefundAmountMismatch {
        refund_id: refund_id.to_string(),
        requested: requested.to_string(),
        recorded: recorded.to_string(),
    };
    let repeated = match node.get("result_code") {
        Some("SUCCESS") => false,
        Some("FAIL") => {
            let code = ErrorCode::parse(node.get("error").unwrap_or(""));
            if code != ErrorCode::RepeatedRefundmentRequest {
                return Err(AlipayError::Failed(code));
            }
            true
        }
        other => return Err(AlipayError::Unknown(other.unwrap_or("").to_owned())),
    };
    let amount = match answered_amount(&node)? {
        Some(a) if a != requested => return Err(mismatch(a)),
        Some(a) => a,
        None if !repeated => requested,
        // "Already done" is only evidence that *this* refund went through when Alipay says for how
        // much: the id might have been spent on another amount, or the echo been cut.
        None => {
            return Err(AlipayError::Unverified(format!(
                "REPEATED_REFUNDMENT_REQUEST for {refund_id} without refund_amount"
            )))
        }
    };
    if repeated && node.get("currency").is_none() {
        return Err(AlipayError::Unverified(format!(
            "REPEATED_REFUNDMENT_REQUEST for {refund_id} without currency"
        )));
    }
    Ok(RefundOutcome {
        partner_refund_id: refund_id.clone(),
        amount,
        exchange_rate: node.get("exchange_rate").map(str::to_owned),
        refund_amount_cny: node.get("refund_amount_cny").map(str::to_owned),
        repeated,
    })
}

/// A trade's status, in notifications and `query` answers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TradeStatus {
    WaitBuyerPay,
    TradeSuccess,
    TradeFinished,
    TradeClosed,
    Other(String),
}

impl TradeStatus {
    pub fn parse(s: &str) -> TradeStatus {
        match s {
            "WAIT_BUYER_PAY" => TradeStatus::WaitBuyerPay,
            "TRADE_SUCCESS" => TradeStatus::TradeSuccess,
            "TRADE_FINISHED" => TradeStatus::TradeFinished,
            "TRADE_CLOSED" => TradeStatus::TradeClosed,
            other => TradeStatus::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            TradeStatus::WaitBuyerPay => "WAIT_BUYER_PAY",
            TradeStatus::TradeSuccess => "TRADE_SUCCESS",
            TradeStatus::TradeFinished => "TRADE_FINISHED",
            TradeStatus::TradeClosed => "TRADE_CLOSED",
            TradeStatus::Other(s) => s,
        }
    }

    /// Money has moved from the buyer.
    pub fn is_paid(&self) -> bool {
        matches!(self, TradeStatus::TradeSuccess | TradeStatus::TradeFinished)
    }
}

/// The answer of `alipay.acquire.overseas.query`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TradeQuery {
    pub status: TradeStatus,
    pub amount: Money,
    pub out_trade_no: Option<MerchantTradeNo>,
    pub trade_no: Option<TradeNo>,
    pub buyer_id: Option<BuyerId>,
    /// `YYYYMMDDHHMMSS`, GMT+8, as Alipay wrote it.
    pub pay_time: Option<String>,
}

/// Interprets an `alipay.acquire.overseas.query` answer to the query about `trade`. A trade's answer
/// counts only when it names the trade asked about: every trade id it echoes (`out_trade_no` /
/// `partner_trans_id`, `alipay_trans_id`) that we asked by must be ours, and at least one must be. An
/// answer about another trade (a signed answer replayed on-path) is unverifiable, never a fact about
/// this one. A `FAIL` names no trade and is taken as Alipay's answer.
pub fn trade_query(answer: Answer, trade: &TradeRef) -> Result<TradeQuery, AlipayError> {
    let node = business(answer)?.expect_name("alipay")?;
    match node.get("result_code") {
        Some("SUCCESS") => {}
        Some("FAIL") => {
            return Err(AlipayError::Failed(ErrorCode::parse(
                node.get("error")
                    .or(node.get("detail_error_code"))
                    .unwrap_or(""),
            )))
        }
        other => return Err(AlipayError::Unknown(other.unwrap_or("").to_owned())),
    }
    check_trade_echo(&node, trade)?;
    let bad =
        |field: &str, e: &dyn std::fmt::Display| AlipayError::Malformed(format!("{field}: {e}"));
    let currency: Currency = node
        .require("currency")?
        .parse()
        .map_err(|e| bad("currency", &e))?;
    let amount = Money::parse_decimal(node.require("trans_amount")?, currency)
        .map_err(|e| bad("trans_amount", &e))?;
    Ok(TradeQuery {
        status: TradeStatus::parse(node.require("alipay_trans_status")?),
        amount,
        // Alipay's docs name it `out_trade_no` in one place and `partner_trans_id` in another.
        out_trade_no: node
            .get("out_trade_no")
            .or_else(|| node.get("partner_trans_id"))
            .map(MerchantTradeNo::parse)
            .transpose()
            .map_err(|e| bad("out_trade_no", &e))?,
        trade_no: node
            .get("alipay_trans_id")
            .map(TradeNo::parse)
            .transpose()
            .map_err(|e| bad("alipay_trans_id", &e))?,
        buyer_id: node
            .get("alipay_buyer_user_id")
            .map(BuyerId::parse)
            .transpose()
            .map_err(|e| bad("alipay_buyer_user_id", &e))?,
        pay_time: node.get("alipay_pay_time").map(str::to_owned),
    })
}

/// The trade ids a query answer echoes, against the ones we asked by (see [`trade_query`]).
fn check_trade_echo(node: &BusinessNode, trade: &TradeRef) -> Result<(), AlipayError> {
    let (asked_out, asked_trade) = match trade {
        TradeRef::Merchant(m) => (Some(m.as_str()), None),
        TradeRef::Alipay(t) => (None, Some(t.as_str())),
        TradeRef::Both(m, t) => (Some(m.as_str()), Some(t.as_str())),
    };
    let echoed = [
        ("out_trade_no", asked_out),
        ("partner_trans_id", asked_out),
        ("alipay_trans_id", asked_trade),
    ];
    let mut tied = false;
    for (field, asked) in echoed {
        match (node.get(field), asked) {
            (Some(got), Some(asked)) if got == asked => tied = true,
            (Some(got), Some(asked)) => {
                return Err(AlipayError::Unverified(format!(
                    "answer is for {field} {got:?}, not {asked}"
                )))
            }
            _ => {}
        }
    }
    // Asked by trade_no only: our out_trade_no is unknown here, but both spellings must agree.
    if let (Some(a), Some(b)) = (node.get("out_trade_no"), node.get("partner_trans_id")) {
        if a != b {
            return Err(AlipayError::Unverified(format!(
                "answer names out_trade_no {a:?} and partner_trans_id {b:?}"
            )));
        }
    }
    if !tied {
        return Err(AlipayError::Unverified(format!(
            "answer does not echo the trade asked about ({})",
            trade_ref_text(trade)
        )));
    }
    Ok(())
}

fn trade_ref_text(trade: &TradeRef) -> String {
    match trade {
        TradeRef::Merchant(m) => format!("out_trade_no {m}"),
        TradeRef::Alipay(t) => format!("trade_no {t}"),
        TradeRef::Both(m, t) => format!("out_trade_no {m}, trade_no {t}"),
    }
}

/// `notify_verify` answers a bare `true` / `false`, not XML.
pub fn notify_verify_answer(body: &[u8]) -> Result<bool, AlipayError> {
    match std::str::from_utf8(body).map(str::trim) {
        Ok("true") => Ok(true),
        Ok("false") => Ok(false),
        _ => Err(AlipayError::NotXml(snippet(&String::from_utf8_lossy(body)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md5() -> Verifier {
        Verifier::new()
            .with_md5_key("K", "10000000000000000000000000000000")
            .unwrap()
    }

    #[test]
    fn non_xml_bodies_are_retryable_gateway_errors() {
        for body in [
            &b"<html><body>502</body></html>"[..],
            b"",
            b"Service Unavailable",
            b"<?xml version=\"1.0\" encoding=\"\xc3\xa9x\"?><alipay>",
            b"<alipay><is_success>T</is_success>",
            b"\xff\xfe",
        ] {
            let err = parse_answer(body, &md5()).unwrap_err();
            assert!(matches!(err, AlipayError::NotXml(_)), "{body:?}: {err:?}");
            assert!(err.is_retryable());
        }
    }

    #[test]
    fn refusals_and_unsigned_answers() {
        let refused = parse_answer(
            b"<alipay><is_success>F</is_success><error>ILLEGAL_PARTNER</error></alipay>",
            &md5(),
        );
        assert!(matches!(
            refused,
            Err(AlipayError::Rejected(ErrorCode::IllegalPartner))
        ));
        let unsigned = parse_answer(
            b"<alipay><is_success>T</is_success><response><alipay><result_code>SUCCESS</result_code></alipay></response></alipay>",
            &md5(),
        );
        assert!(matches!(
            unsigned,
            Err(AlipayError::AnswerSignature(SignatureError::MissingSign))
        ));
        // MD5 of "result_code=SUCCESS" + key, computed independently:
        // printf 'result_code=SUCCESS10000000000000000000000000000000' | md5sum
        let signed = format!(
            "<alipay><is_success>T</is_success><response><alipay><result_code>SUCCESS</result_code></alipay></response><sign>{}</sign><sign_type>MD5</sign_type></alipay>",
            MD5_RESULT_SUCCESS
        );
        let answer = parse_answer(signed.as_bytes(), &md5()).unwrap();
        assert_eq!(
            answer
                .business
                .and_then(|b| b.get("result_code").map(str::to_owned)),
            Some("SUCCESS".to_owned())
        );
    }

    use crate::sign::SignatureError;
    const MD5_RESULT_SUCCESS: &str = "2fc5547d0cfd70c06cdae8f65d3dd5d2";
}
