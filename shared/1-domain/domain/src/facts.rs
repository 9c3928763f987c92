//! Sales facts: what each money decision tells the analysts, derived from the decision itself and
//! written in the same write (an outbox: nothing to catch up later). See `docs/contract.md`, “Sales
//! data”.
//!
//! A fact is flat (one row of the analytics table: no joins needed) and immutable. Its id is derived
//! from what it describes — the trade, the purchase, the refund and its status, the anomaly — so
//! re-applying a decision, or writing its facts twice, adds none. Buyers appear only as a
//! [`BuyerKey`]: the first 16 hex digits of HMAC-SHA256(analytics key, Alipay buyer id), stable per buyer
//! across machines and meaningless without the key. The raw buyer id never enters a fact.
//!
//! Kinds:
//! - `payment`: a trade credited to a session, an order or a refused session (amount, trade).
//! - `sale`: a delivered vend (slot, sku and product when the slot is in the planogram, price, the
//!   stock left in the slot).
//! - `vend_failed`: the machine reported a failed vend (its price went back to the customer).
//! - `refund`: one per refund with `status: "issued"` (the amount left the session) and one more when
//!   Alipay's verified answer is final (`succeeded` / `failed`). Reasons: `remainder`, `over_payment`,
//!   `failed_delivery`, `unconfirmed`, `refused:<reason>`, `reversal`.
//! - `anomaly`: the anomaly's kind as `reason` (`unconfirmed_vend`, `late_vend_report`, ...).

use std::collections::{BTreeMap, HashMap};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

pub use crate::device::Place;
use crate::ids::{BuyerId, DeviceId, RefundId, RequestId, SessionId, Sku, Slot, TradeNo};
use crate::money::Currency;
use crate::session::{
    AnomalyKind, Effect, PurchaseStatus, RefundReason, RefundStatus, Session, SessionKind,
    Transition,
};
use crate::time::Timestamp;

/// What a fact records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FactKind {
    Payment,
    Sale,
    VendFailed,
    Refund,
    Anomaly,
}

impl FactKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FactKind::Payment => "payment",
            FactKind::Sale => "sale",
            FactKind::VendFailed => "vend_failed",
            FactKind::Refund => "refund",
            FactKind::Anomaly => "anomaly",
        }
    }

    pub fn parse(s: &str) -> Option<FactKind> {
        Some(match s {
            "payment" => FactKind::Payment,
            "sale" => FactKind::Sale,
            "vend_failed" => FactKind::VendFailed,
            "refund" => FactKind::Refund,
            "anomaly" => FactKind::Anomaly,
            _ => return None,
        })
    }
}

/// Which flow a fact belongs to: the session's kind. A refused payment (and its refund) belongs to
/// neither flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flow {
    PayFirst,
    PurchaseFirst,
    Refused,
}

impl Flow {
    pub fn as_str(self) -> &'static str {
        match self {
            Flow::PayFirst => "pay_first",
            Flow::PurchaseFirst => "purchase_first",
            Flow::Refused => "refused",
        }
    }

    pub fn parse(s: &str) -> Option<Flow> {
        Some(match s {
            "pay_first" => Flow::PayFirst,
            "purchase_first" => Flow::PurchaseFirst,
            "refused" => Flow::Refused,
            _ => return None,
        })
    }

    pub fn of(session: &Session) -> Flow {
        match session.kind {
            SessionKind::PayFirst => Flow::PayFirst,
            SessionKind::Order(_) => Flow::PurchaseFirst,
            SessionKind::Refused { .. } => Flow::Refused,
        }
    }
}

/// The key buyer ids are hashed with (`ANALYTICS_KEY`). Its bytes never leave this type.
#[derive(Clone)]
pub struct AnalyticsKey(Vec<u8>);

impl std::fmt::Debug for AnalyticsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AnalyticsKey(..)")
    }
}

impl AnalyticsKey {
    pub fn new(bytes: impl Into<Vec<u8>>) -> AnalyticsKey {
        AnalyticsKey(bytes.into())
    }

    /// `buyer_key` = the first 16 hex digits of HMAC-SHA256(key, buyer id).
    pub fn buyer_key(&self, buyer: &BuyerId) -> BuyerKey {
        // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
        let digest = match Hmac::<Sha256>::new_from_slice(&self.0) {
            Ok(mut mac) => {
                mac.update(buyer.as_str().as_bytes());
                mac.finalize().into_bytes()
            }
            Err(_) => Default::default(),
        };
        let mut hex = String::with_capacity(16);
        for b in &digest[..8] {
            hex.push_str(&format!("{b:02x}"));
        }
        BuyerKey(hex)
    }
}

/// A buyer as analytics see them: 16 lowercase hex digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BuyerKey(String);

impl BuyerKey {
    /// Accepts exactly 16 lowercase hex digits (a stored or exported key).
    pub fn parse(s: &str) -> Option<BuyerKey> {
        (s.len() == 16
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| BuyerKey(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for BuyerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One fact: a flat row (the columns of the analytics table, in this order).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fact {
    /// Unique per thing described, e.g. `sale:{session}:{request}`, `refund:{refund}:issued`.
    pub id: String,
    pub kind: FactKind,
    /// When the decision was made (Unix milliseconds).
    pub at: Timestamp,
    pub device: DeviceId,
    pub district: String,
    #[serde(default)]
    pub location: Option<String>,
    pub session: SessionId,
    pub flow: Flow,
    #[serde(default)]
    pub buyer_key: Option<BuyerKey>,
    pub currency: Currency,
    /// Minor units: the payment, the sale's or failed vend's price, the refund; 0 for anomalies.
    pub amount: u64,
    #[serde(default)]
    pub trade_no: Option<TradeNo>,
    #[serde(default)]
    pub request_id: Option<RequestId>,
    #[serde(default)]
    pub refund_id: Option<RefundId>,
    #[serde(default)]
    pub slot: Option<Slot>,
    #[serde(default)]
    pub sku: Option<Sku>,
    #[serde(default)]
    pub product: Option<String>,
    /// A sale of a planogram slot: the items left in the slot after it.
    #[serde(default)]
    pub stock_after: Option<u32>,
    /// Refund reason, anomaly kind.
    #[serde(default)]
    pub reason: Option<String>,
    /// Refund: `issued`, `succeeded`, `failed`.
    #[serde(default)]
    pub status: Option<String>,
}

/// A buyer's sales before a period, for the tags that look back (`new`, `lapsed`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuyerHistory {
    pub buyer_key: BuyerKey,
    pub first_sale: Timestamp,
    pub last_sale: Timestamp,
    /// The district of the latest sale (ties: the greatest fact id).
    pub last_district: String,
}

/// The analytics name of a refund's reason.
pub fn refund_reason(reason: RefundReason) -> String {
    match reason {
        RefundReason::Settlement => "remainder".to_owned(),
        RefundReason::Overpayment => "over_payment".to_owned(),
        RefundReason::VendFailed => "failed_delivery".to_owned(),
        RefundReason::VendUnconfirmed => "unconfirmed".to_owned(),
        RefundReason::Refused(why) => format!("refused:{}", why.as_str()),
    }
}

fn refund_status(status: RefundStatus) -> &'static str {
    match status {
        RefundStatus::Pending => "issued",
        RefundStatus::Succeeded => "succeeded",
        RefundStatus::Failed => "failed",
    }
}

/// An anomaly's analytics name and the id that makes its fact unique within the session.
fn anomaly_name(kind: &AnomalyKind) -> (&'static str, String) {
    match kind {
        AnomalyKind::UnconfirmedVend { request_id } => ("unconfirmed_vend", request_id.to_string()),
        AnomalyKind::LateVendReport {
            request_id,
            delivered,
        } => ("late_vend_report", format!("{request_id}:{delivered}")),
        AnomalyKind::CurrencyMismatch { trade_no, .. } => {
            ("currency_mismatch", trade_no.to_string())
        }
        AnomalyKind::RefundFailed { refund_id } => ("refund_failed", refund_id.to_string()),
        AnomalyKind::RefundSucceededAfterFailure { refund_id } => {
            ("refund_succeeded_after_failure", refund_id.to_string())
        }
        AnomalyKind::RefundStuck { refund_id } => ("refund_stuck", refund_id.to_string()),
        AnomalyKind::StockMismatch { slot, request_id } => {
            ("stock_mismatch", format!("{slot}:{request_id}"))
        }
        AnomalyKind::Unrecognised => ("unrecognised", String::new()),
    }
}

/// What a decision's facts need besides the decision: the key for buyer ids, the place of sessions
/// that do not carry one (stored before places were kept), and product names by sku.
pub struct FactContext<'a> {
    pub key: &'a AnalyticsKey,
    pub place: Option<&'a Place>,
    pub products: &'a BTreeMap<Sku, String>,
}

/// The facts of one decision: each session it writes compared with the same session as read
/// (`prior`; absent for a new session), plus the anomalies among its effects.
pub fn facts_of(
    t: &Transition,
    prior: &HashMap<SessionId, &Session>,
    ctx: &FactContext<'_>,
    now: Timestamp,
) -> Vec<Fact> {
    let mut out = Vec::new();
    for s in &t.sessions {
        let old = prior.get(&s.id).copied();
        let place = s.place.as_ref().or(ctx.place).cloned().unwrap_or_default();
        let base = Fact {
            id: String::new(),
            kind: FactKind::Anomaly,
            at: now,
            device: s.device_id.clone(),
            district: place.district,
            location: place.location,
            session: s.id.clone(),
            flow: Flow::of(s),
            buyer_key: s
                .payments
                .iter()
                .find_map(|p| p.buyer_id.as_ref())
                .map(|b| ctx.key.buyer_key(b)),
            currency: s.currency,
            amount: 0,
            trade_no: None,
            request_id: None,
            refund_id: None,
            slot: None,
            sku: None,
            product: None,
            stock_after: None,
            reason: None,
            status: None,
        };
        for p in &s.payments {
            if old.is_some_and(|o| o.payments.iter().any(|q| q.trade_no == p.trade_no)) {
                continue;
            }
            out.push(Fact {
                id: format!("payment:{}", p.trade_no),
                kind: FactKind::Payment,
                amount: p.amount.minor(),
                trade_no: Some(p.trade_no.clone()),
                ..base.clone()
            });
        }
        for p in &s.purchases {
            let was = old
                .and_then(|o| o.purchase(&p.request_id))
                .map(|q| q.status);
            if was == Some(p.status) {
                continue;
            }
            let kind = match p.status {
                PurchaseStatus::Delivered => FactKind::Sale,
                PurchaseStatus::Failed => FactKind::VendFailed,
                _ => continue,
            };
            let row = t
                .stock
                .iter()
                .find(|r| r.device_id == s.device_id && r.slot == p.slot);
            let sku = row.map(|r| r.sku.clone());
            out.push(Fact {
                id: format!("{}:{}:{}", kind.as_str(), s.id, p.request_id),
                kind,
                amount: p.price.minor(),
                request_id: Some(p.request_id.clone()),
                slot: Some(p.slot.clone()),
                product: sku.as_ref().and_then(|k| ctx.products.get(k).cloned()),
                sku,
                stock_after: row.filter(|_| kind == FactKind::Sale).map(|r| r.stock),
                ..base.clone()
            });
        }
        for r in &s.refunds {
            let was = old.and_then(|o| o.refund(&r.id)).map(|q| q.status);
            let reason = Some(refund_reason(r.reason));
            let refund = |status: RefundStatus| Fact {
                id: format!("refund:{}:{}", r.id, refund_status(status)),
                kind: FactKind::Refund,
                amount: r.amount.minor(),
                trade_no: Some(r.trade_no.clone()),
                refund_id: Some(r.id.clone()),
                reason: reason.clone(),
                status: Some(refund_status(status).to_owned()),
                ..base.clone()
            };
            if was.is_none() {
                out.push(refund(RefundStatus::Pending));
            }
            if r.status.is_final() && was != Some(r.status) {
                out.push(refund(r.status));
            }
        }
        for e in &t.effects {
            let Effect::Anomaly { session, anomaly } = e else {
                continue;
            };
            if session != &s.id {
                continue;
            }
            let (name, key) = anomaly_name(&anomaly.kind);
            let (request_id, refund_id, slot, trade_no) = match &anomaly.kind {
                AnomalyKind::UnconfirmedVend { request_id }
                | AnomalyKind::LateVendReport { request_id, .. } => {
                    (Some(request_id.clone()), None, None, None)
                }
                AnomalyKind::StockMismatch { slot, request_id } => {
                    (Some(request_id.clone()), None, Some(slot.clone()), None)
                }
                AnomalyKind::RefundFailed { refund_id }
                | AnomalyKind::RefundSucceededAfterFailure { refund_id }
                | AnomalyKind::RefundStuck { refund_id } => {
                    (None, Some(refund_id.clone()), None, None)
                }
                AnomalyKind::CurrencyMismatch { trade_no, .. } => {
                    (None, None, None, Some(trade_no.clone()))
                }
                AnomalyKind::Unrecognised => (None, None, None, None),
            };
            out.push(Fact {
                id: format!("anomaly:{}:{name}:{key}", s.id),
                kind: FactKind::Anomaly,
                reason: Some(name.to_owned()),
                request_id,
                refund_id,
                slot,
                trade_no,
                ..base.clone()
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buyer_key_known_answer() {
        // python3 -c "import hmac,hashlib;print(hmac.new(b'k',b'2088000000000001',hashlib.sha256).hexdigest()[:16])"
        let key = AnalyticsKey::new(b"k".to_vec());
        let buyer = BuyerId::parse("2088000000000001").expect("a buyer id");
        assert_eq!(key.buyer_key(&buyer).as_str(), "2f69a753a103b675");
    }
}
