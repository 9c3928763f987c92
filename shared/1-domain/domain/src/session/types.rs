//! The session's records, what a decision produces (effects, replies, transitions, rejections) and the
//! limits that keep every decision within one storage write.

use serde::{Deserialize, Serialize};

use crate::device::Mode;
use crate::ids::{
    BuyerId, DeviceId, MerchantTradeNo, OrderId, RefundId, RequestId, SessionId, Slot, TradeNo,
};
use crate::inventory::{SlotStock, StockChange};
use crate::money::{Currency, Money, MoneyError};
use crate::time::Timestamp;

// ---------------------------------------------------------------------------------------------------
// Limits: every stored list of a session is bounded, so one decision always fits one storage write
// (DynamoDB: 100 actions and 400 KB per item in one transaction).
// ---------------------------------------------------------------------------------------------------

/// Payments one session takes; a further payment is refused and refunded in full (`session_full`).
pub const MAX_PAYMENTS: usize = 50;
/// Approved purchases one session records; a further purchase is declined (`session_full`).
pub const MAX_APPROVED_PURCHASES: usize = 100;
/// Declined purchases kept in a session for operators; later declines are answered (the answer is kept
/// in the request's idempotency record) but not added to the session.
pub const MAX_RECORDED_DECLINES: usize = 20;
/// The most purchases a session can hold, approved and declined.
pub const MAX_PURCHASES: usize = MAX_APPROVED_PURCHASES + MAX_RECORDED_DECLINES;
/// Anomalies kept in a session; later ones are still emitted as effects (logged, alerted), not stored.
pub const MAX_ANOMALIES: usize = 200;
/// How long a refund may go without a verified verdict before it is raised as stuck.
pub const REFUND_STUCK_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);
/// Refund rows one decision may create. A refund split across more payments than this (only a session
/// stored before [`MAX_PAYMENTS`] existed can need it) leaves the rest in the balance and makes the
/// session due at once, so the next deadline run issues the next part: split, never dropped.
pub const MAX_REFUNDS_PER_WRITE: usize = 60;

/// A payment as Alipay's notification reports it, already verified and parsed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncomingPayment {
    pub trade_no: TradeNo,
    pub merchant_trade_no: MerchantTradeNo,
    pub amount: Money,
    pub buyer_id: Option<BuyerId>,
    pub paid_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRecord {
    pub trade_no: TradeNo,
    pub merchant_trade_no: MerchantTradeNo,
    pub amount: Money,
    pub buyer_id: Option<BuyerId>,
    pub paid_at: Timestamp,
    pub received_at: Timestamp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Pay first: the balance may be spent. Order: awaiting payment or paid and being delivered.
    Open,
    /// Ended or past its deadline; refunds or a hold still outstanding. Does not block the machine.
    Settling,
    /// Nothing left: no balance, no hold, every refund final.
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalReason {
    /// Another buyer's session is open, or an order is paid and being delivered.
    MachineBusy,
    /// Paid in another currency than the machine's.
    CurrencyMismatch,
    /// Purchase first and no order awaits payment.
    NoOrder,
    /// The order it was meant for expired before the payment arrived.
    OrderExpired,
    /// Less than the order's price.
    Underpaid,
    /// The open session already holds [`MAX_PAYMENTS`] payments.
    SessionFull,
}

impl RefusalReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::MachineBusy => "machine_busy",
            RefusalReason::CurrencyMismatch => "currency_mismatch",
            RefusalReason::NoOrder => "no_order",
            RefusalReason::OrderExpired => "order_expired",
            RefusalReason::Underpaid => "underpaid",
            RefusalReason::SessionFull => "session_full",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    AwaitingPayment,
    Paid,
    Delivered,
    /// The machine reported a failed vend; refunded in full.
    Failed,
    /// No vend result within the window; refunded in full and flagged.
    Unconfirmed,
    /// No (sufficient) payment before it expired.
    Expired,
    /// Replaced by a newer order or ended on the machine before payment.
    Cancelled,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderTerms {
    pub order_id: OrderId,
    pub slot: Slot,
    pub price: Money,
    pub placed_at: Timestamp,
    pub expires_at: Timestamp,
    pub status: OrderStatus,
    /// Placing the order reserved an item of its slot (a slot of the planogram); its end gives it back
    /// or, once paid, the order's purchase carries the reservation.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reserved: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SessionKind {
    PayFirst,
    Order(OrderTerms),
    Refused { reason: RefusalReason },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeclineReason {
    InsufficientBalance,
    NoSession,
    /// The session is settling or closed, or the purchase named a session that is not the open one.
    SessionClosed,
    /// The session already holds [`MAX_APPROVED_PURCHASES`] approved purchases (or
    /// [`crate::inventory::MAX_RESERVED_HOLDS`] unreported ones of planogram slots).
    SessionFull,
    /// Nothing available in the slot: every item is sold or promised.
    SoldOut,
}

impl DeclineReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeclineReason::InsufficientBalance => "insufficient_balance",
            DeclineReason::NoSession => "no_session",
            DeclineReason::SessionClosed => "session_closed",
            DeclineReason::SessionFull => "session_full",
            DeclineReason::SoldOut => "sold_out",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "status", content = "reason", rename_all = "snake_case")]
pub enum PurchaseStatus {
    Declined(DeclineReason),
    /// Approved; the price is held until the machine reports the vend.
    Held,
    Delivered,
    /// The machine reported a failed vend: the hold went back to the balance (or was refunded).
    Failed,
    /// No vend result by the deadline: the hold was refunded and flagged.
    Unconfirmed,
}

impl PurchaseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PurchaseStatus::Declined(_) => "declined",
            PurchaseStatus::Held => "held",
            PurchaseStatus::Delivered => "delivered",
            PurchaseStatus::Failed => "failed",
            PurchaseStatus::Unconfirmed => "unconfirmed",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purchase {
    pub request_id: RequestId,
    pub slot: Slot,
    pub price: Money,
    pub requested_at: Timestamp,
    pub status: PurchaseStatus,
    /// The balance the approval (or decline) answered with; a retry answers the same.
    pub balance_after: Money,
    /// A vend result that arrived after the hold was already refunded at the deadline.
    pub late_report: Option<bool>,
    /// The approval reserved an item of its slot (a slot of the planogram); the vend result or the
    /// deadline ends the reservation.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reserved: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundReason {
    /// What was left at the deadline or when the customer ended the session (unconfirmed holds included).
    Settlement,
    /// Purchase first: paid more than the price.
    Overpayment,
    /// The machine reported a failed vend after the balance had been settled, or of a paid order.
    VendFailed,
    /// A paid order whose delivery was never confirmed.
    VendUnconfirmed,
    Refused(RefusalReason),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    /// Recorded; being sent to Alipay (retried with the same id and amount until final).
    Pending,
    Succeeded,
    /// Alipay refused it for good; an operator must act.
    Failed,
}

impl RefundStatus {
    pub fn is_final(self) -> bool {
        !matches!(self, RefundStatus::Pending)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    pub id: RefundId,
    pub trade_no: TradeNo,
    pub merchant_trade_no: MerchantTradeNo,
    pub amount: Money,
    pub reason: RefundReason,
    pub issued_at: Timestamp,
    pub status: RefundStatus,
    /// Raised as stuck: no verified verdict [`REFUND_STUCK_AFTER`] after it was issued (once).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stuck: bool,
}

/// Alipay's verdict on one attempt of a refund.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundOutcome {
    Succeeded,
    FailedPermanently,
    /// Timeout, `UNKNOW`, a system error: try again later with the same id and amount.
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AnomalyKind {
    /// A hold was still unconfirmed at the deadline; it was refunded.
    UnconfirmedVend { request_id: RequestId },
    /// A vend result for a hold already refunded at the deadline (`delivered`: the goods went out free).
    LateVendReport {
        request_id: RequestId,
        delivered: bool,
    },
    /// A payment in another currency than the machine's; refunded in full.
    CurrencyMismatch {
        trade_no: TradeNo,
        paid: Currency,
        expected: Currency,
    },
    /// Alipay refused a refund for good (a verified answer to that very request).
    RefundFailed { refund_id: RefundId },
    /// A verified success for a refund already recorded failed: success wins (Alipay paid), and an
    /// operator who acted on the failure must check the customer was not paid twice.
    RefundSucceededAfterFailure { refund_id: RefundId },
    /// No verified verdict [`REFUND_STUCK_AFTER`] after the refund was issued. It stays pending and is
    /// still retried; a person settles it through reconciliation with Alipay, never by paying by hand
    /// while Alipay may have paid.
    RefundStuck { refund_id: RefundId },
    /// A delivery was reported for a slot whose stock was already 0: the count was wrong (restock
    /// missed, items added by hand). The stock stays 0.
    StockMismatch { slot: Slot, request_id: RequestId },
    /// A kind a newer build wrote: kept readable, so a rolling deploy or a rollback never makes a
    /// session unreadable (its details are dropped on the next write).
    #[serde(other)]
    Unrecognised,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomaly {
    pub at: Timestamp,
    #[serde(flatten)]
    pub kind: AnomalyKind,
}

/// One session or order on one machine, with its whole ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub id: SessionId,
    pub device_id: DeviceId,
    pub currency: Currency,
    pub kind: SessionKind,
    pub phase: Phase,
    pub opened_at: Timestamp,
    /// When the window ends (pay first), the order expires (awaiting payment) or the vend must be
    /// confirmed (paid order). `None` once nothing is due.
    pub deadline_at: Option<Timestamp>,
    pub balance: Money,
    pub held: Money,
    pub spent: Money,
    pub payments: Vec<PaymentRecord>,
    pub purchases: Vec<Purchase>,
    pub refunds: Vec<Refund>,
    pub anomalies: Vec<Anomaly>,
    /// Where the machine stood when the session opened (stamped by the service from the machine's
    /// record; the rules never read it): every fact of the session carries it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub place: Option<crate::device::Place>,
    /// Bumped by every transition; storage writes conditionally on the version it read.
    pub version: u64,
}

/// What the caller must do after persisting a transition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// A trade was credited to a session (refused sessions included): record it as seen, forever.
    Credit {
        session: SessionId,
        trade_no: TradeNo,
        amount: Money,
    },
    /// The machine may vend: `price` is held. Also emitted when an order is paid.
    Approve {
        session: SessionId,
        request_id: RequestId,
        price: Money,
    },
    Decline {
        request_id: RequestId,
        reason: DeclineReason,
    },
    /// A hold ended: spent (`delivered`) or given back (to the balance, or refunded).
    HoldSettled {
        session: SessionId,
        request_id: RequestId,
        delivered: bool,
    },
    ScheduleDeadline {
        session: SessionId,
        at: Timestamp,
    },
    /// Send this refund to Alipay (`spot.refund`, `is_sync=Y`) within two seconds.
    IssueRefund {
        session: SessionId,
        refund_id: RefundId,
        trade_no: TradeNo,
        merchant_trade_no: MerchantTradeNo,
        amount: Money,
    },
    Close {
        session: SessionId,
    },
    Anomaly {
        session: SessionId,
        anomaly: Anomaly,
    },
    /// An item of a planogram slot is reserved, released or delivered; written with the session.
    Stock {
        device: DeviceId,
        slot: Slot,
        change: StockChange,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "disposition", content = "reason", rename_all = "snake_case")]
pub enum Disposition {
    /// Opened or topped up a pay-first session.
    Credited,
    /// Paid an awaiting order (any over-payment refunded at once).
    OrderPaid,
    /// Refunded in full at once.
    Refused(RefusalReason),
}

/// The answer to a payment notification; storage keeps it with the trade so a duplicate gets it again.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PaymentOutcome {
    pub session: SessionId,
    pub disposition: Disposition,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseAnswer {
    pub request_id: RequestId,
    /// What was asked, so a retry with another body can be told apart from a true retry.
    pub slot: Slot,
    pub price: Money,
    /// `None` when approved.
    pub declined: Option<DeclineReason>,
    pub balance: Money,
    /// The session that holds the purchase, if any (a decline with no session has none).
    pub session: Option<SessionId>,
}

impl PurchaseAnswer {
    pub fn approved(&self) -> bool {
        self.declined.is_none()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Payment(PaymentOutcome),
    Purchase(PurchaseAnswer),
    Vend {
        session: SessionId,
        request_id: RequestId,
        status: PurchaseStatus,
    },
    /// Order placed (or the same order again); also the answer to ending a session.
    Session {
        session: SessionId,
    },
    /// A deadline was looked at. Whether anything was due shows in the transition, not here, so a
    /// repeated delivery gets the same answer.
    Deadline {
        session: SessionId,
    },
    Refund {
        session: SessionId,
        refund_id: RefundId,
        status: RefundStatus,
    },
}

/// What one command decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// Sessions to write, each with `version` one above what was read (`1` for a new session).
    /// Empty when the command changed nothing.
    pub sessions: Vec<Session>,
    /// The device's new current session, when it changes.
    pub current: Option<SessionId>,
    pub effects: Vec<Effect>,
    pub reply: Reply,
    /// Slot rows whose stock or reservations change, each with `version` one above what was read;
    /// written in the same write as the sessions.
    pub stock: Vec<SlotStock>,
}

impl Transition {
    pub fn is_noop(&self) -> bool {
        self.sessions.is_empty() && self.current.is_none() && self.stock.is_empty()
    }

    /// The written session with this id.
    pub fn session(&self, id: &SessionId) -> Option<&Session> {
        self.sessions.iter().find(|s| &s.id == id)
    }
}

/// Why a command was refused without changing anything. The HTTP layer maps these to 4xx answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("price is in {got} but the machine takes {expected}")]
    CurrencyMismatch { expected: Currency, got: Currency },
    #[error("price must be greater than zero")]
    NonPositivePrice,
    #[error("slot {slot} sells at {price}, not {asked}; omit the price to use the slot's")]
    PriceMismatch {
        slot: Slot,
        asked: Money,
        price: Money,
    },
    #[error("slot {0} is not in the machine's slot map, so the request must give a price")]
    MissingPrice(Slot),
    #[error("slot {0} is sold out")]
    SoldOut(Slot),
    #[error("no open session or order on this machine")]
    NoSession,
    #[error("machine is in {mode} mode and does not take {flow}")]
    ModeNotSupported { mode: Mode, flow: &'static str },
    #[error("machine is busy: {0}")]
    Busy(&'static str),
    #[error("request {0} was already used with a different body")]
    RequestConflict(String),
    #[error("no purchase {0} in this session")]
    UnknownPurchase(RequestId),
    #[error("purchase {0} was declined; there is nothing to vend")]
    PurchaseNotApproved(RequestId),
    #[error("order {0} is not paid; there is nothing to vend")]
    OrderNotPaid(OrderId),
    #[error("no refund {0} in this session")]
    UnknownRefund(RefundId),
    #[error("session {session} belongs to {actual}, not {expected}")]
    WrongDevice {
        session: SessionId,
        expected: DeviceId,
        actual: DeviceId,
    },
    /// The stored state cannot be right (sums do not add up); nothing was changed.
    #[error("inconsistent session state: {0}")]
    Inconsistent(String),
}

impl From<MoneyError> for Rejection {
    fn from(e: MoneyError) -> Self {
        Rejection::Inconsistent(e.to_string())
    }
}

pub type Decision = Result<Transition, Rejection>;
