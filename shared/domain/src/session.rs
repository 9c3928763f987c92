//! The session (pay first) and order (purchase first) state machine (see `docs/contract.md`,
//! “Money rules”).
//!
//! Both flows share one aggregate, [`Session`]: an order is a session of kind [`SessionKind::Order`]
//! whose single purchase is the order itself, and a payment that is refused (machine busy, wrong
//! currency, no order, under-paid) is kept in a session of its own, [`SessionKind::Refused`], that
//! refunds it in full. Every payment therefore belongs to exactly one session and every refund names one
//! of that session's trades, so the invariant
//! `Σ payments = spent + held + balance + Σ refunds` holds per session.
//!
//! Each operation is a function from (state, command, now) to a [`Transition`]: the sessions to write
//! (each with its version bumped, so storage can make the write conditional on the version it read), the
//! device's new current session if it changes, the effects to carry out and the reply. A command that
//! changes nothing yields no sessions to write, so applying a command twice changes nothing the second
//! time. Lookups that span sessions (has this trade been seen, which session holds this request or
//! refund) are the caller's, through storage; the functions here only decide.

use serde::{Deserialize, Serialize};

use crate::device::{Device, Mode};
use crate::ids::{
    BuyerId, DeviceId, MerchantTradeNo, OrderId, RefundId, RequestId, SessionId, Slot, TradeNo,
};
use crate::money::{Currency, Money, MoneyError};
use crate::time::{Timestamp, Windows};

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
    /// The session already holds [`MAX_APPROVED_PURCHASES`] approved purchases.
    SessionFull,
}

impl DeclineReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeclineReason::InsufficientBalance => "insufficient_balance",
            DeclineReason::NoSession => "no_session",
            DeclineReason::SessionClosed => "session_closed",
            DeclineReason::SessionFull => "session_full",
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
}

impl Transition {
    pub fn is_noop(&self) -> bool {
        self.sessions.is_empty() && self.current.is_none()
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

// ---------------------------------------------------------------------------------------------------
// Session helpers
// ---------------------------------------------------------------------------------------------------

impl Session {
    fn new(
        id: SessionId,
        device_id: DeviceId,
        currency: Currency,
        kind: SessionKind,
        now: Timestamp,
    ) -> Session {
        Session {
            id,
            device_id,
            currency,
            kind,
            phase: Phase::Open,
            opened_at: now,
            deadline_at: None,
            balance: Money::zero(currency),
            held: Money::zero(currency),
            spent: Money::zero(currency),
            payments: Vec::new(),
            purchases: Vec::new(),
            refunds: Vec::new(),
            anomalies: Vec::new(),
            version: 0,
        }
    }

    pub fn order(&self) -> Option<&OrderTerms> {
        match &self.kind {
            SessionKind::Order(o) => Some(o),
            _ => None,
        }
    }

    fn order_mut(&mut self) -> Option<&mut OrderTerms> {
        match &mut self.kind {
            SessionKind::Order(o) => Some(o),
            _ => None,
        }
    }

    pub fn is_pay_first(&self) -> bool {
        matches!(self.kind, SessionKind::PayFirst)
    }

    /// An open pay-first session whose window has not passed.
    fn spendable(&self, now: Timestamp) -> bool {
        self.is_pay_first() && self.phase == Phase::Open && !self.due(now)
    }

    /// Something is due: the deadline has passed and not yet been acted on.
    pub fn due(&self, now: Timestamp) -> bool {
        self.phase != Phase::Closed && self.deadline_at.is_some_and(|d| now >= d)
    }

    pub fn purchase(&self, request_id: &RequestId) -> Option<&Purchase> {
        self.purchases.iter().find(|p| &p.request_id == request_id)
    }

    pub fn refund(&self, refund_id: &RefundId) -> Option<&Refund> {
        self.refunds.iter().find(|r| &r.id == refund_id)
    }

    /// Whether the refund was raised as stuck (no verified verdict within [`REFUND_STUCK_AFTER`]).
    pub fn refund_is_stuck(&self, refund_id: &RefundId) -> bool {
        self.refund(refund_id).is_some_and(|r| r.stuck)
    }

    pub fn total_paid(&self) -> Result<Money, MoneyError> {
        Money::sum(self.currency, self.payments.iter().map(|p| p.amount))
    }

    pub fn total_refunded(&self) -> Result<Money, MoneyError> {
        Money::sum(self.currency, self.refunds.iter().map(|r| r.amount))
    }

    /// The buyer of the session, if any of its payments named one.
    fn buyer(&self) -> Option<&BuyerId> {
        self.payments.iter().find_map(|p| p.buyer_id.as_ref())
    }

    fn unrefunded(&self, payment: &PaymentRecord) -> Result<Money, MoneyError> {
        let refunded = Money::sum(
            self.currency,
            self.refunds
                .iter()
                .filter(|r| r.trade_no == payment.trade_no)
                .map(|r| r.amount),
        )?;
        payment.amount.checked_sub(refunded)
    }

    /// `Σ payments = spent + held + balance + Σ refunds`; every term is a non-negative `Money`.
    pub fn check_invariant(&self) -> Result<(), String> {
        let lhs = self.total_paid().map_err(|e| e.to_string())?;
        let rhs = [self.spent, self.held, self.balance]
            .into_iter()
            .try_fold(
                self.total_refunded().map_err(|e| e.to_string())?,
                Money::checked_add,
            )
            .map_err(|e| e.to_string())?;
        if lhs != rhs {
            return Err(format!(
                "session {}: payments {lhs} != spent {} + held {} + balance {} + refunds {}",
                self.id,
                self.spent,
                self.held,
                self.balance,
                self.total_refunded().map_err(|e| e.to_string())?
            ));
        }
        if self.phase == Phase::Closed && !(self.balance.is_zero() && self.held.is_zero()) {
            return Err(format!(
                "session {} is closed with balance {} and held {}",
                self.id, self.balance, self.held
            ));
        }
        Ok(())
    }

    /// Refunds `amount` from the balance, split across payments newest first, each part at most that
    /// payment's unrefunded amount. The refunds are recorded here, in the same write that decides them.
    ///
    /// One decision creates at most [`MAX_REFUNDS_PER_WRITE`] refund rows (counted over its effects, all
    /// sessions included). Whatever does not fit stays in the balance and the session is made due at once
    /// (see [`Session::schedule_remainder`]), so the next deadline run refunds the next part.
    fn issue_refund(
        &mut self,
        amount: Money,
        reason: RefundReason,
        now: Timestamp,
        effects: &mut Vec<Effect>,
    ) -> Result<(), Rejection> {
        let issued_already = effects
            .iter()
            .filter(|e| matches!(e, Effect::IssueRefund { .. }))
            .count();
        let budget = MAX_REFUNDS_PER_WRITE.saturating_sub(issued_already);
        let mut left = amount;
        let mut parts = Vec::new();
        for payment in self.payments.iter().rev() {
            if left.is_zero() || parts.len() == budget {
                break;
            }
            let part = self.unrefunded(payment)?.min(left)?;
            if part.is_zero() {
                continue;
            }
            left = left.checked_sub(part)?;
            parts.push((
                payment.trade_no.clone(),
                payment.merchant_trade_no.clone(),
                part,
            ));
        }
        // What the payments can still cover decides consistency, whether or not the budget ran out.
        let coverable = Money::sum(
            self.currency,
            self.payments
                .iter()
                .map(|p| self.unrefunded(p))
                .collect::<Result<Vec<_>, _>>()?,
        )?;
        if amount.minor() > coverable.minor() {
            return Err(Rejection::Inconsistent(format!(
                "session {}: a refund of {amount} but only {coverable} of its payments is unrefunded",
                self.id
            )));
        }
        self.balance = self.balance.checked_sub(amount.checked_sub(left)?)?;
        if !left.is_zero() {
            self.schedule_remainder(now, effects);
        }
        for (trade_no, merchant_trade_no, part) in parts {
            let seq = self
                .refunds
                .iter()
                .filter(|r| r.trade_no == trade_no)
                .count()
                + 1;
            let id = RefundId::for_trade(&trade_no, u32::try_from(seq).unwrap_or(u32::MAX));
            effects.push(Effect::IssueRefund {
                session: self.id.clone(),
                refund_id: id.clone(),
                trade_no: trade_no.clone(),
                merchant_trade_no: merchant_trade_no.clone(),
                amount: part,
            });
            self.refunds.push(Refund {
                id,
                trade_no,
                merchant_trade_no,
                amount: part,
                reason,
                issued_at: now,
                status: RefundStatus::Pending,
                stuck: false,
            });
        }
        Ok(())
    }

    fn flag(&mut self, kind: AnomalyKind, now: Timestamp, effects: &mut Vec<Effect>) {
        let anomaly = Anomaly { at: now, kind };
        effects.push(Effect::Anomaly {
            session: self.id.clone(),
            anomaly: anomaly.clone(),
        });
        if self.anomalies.len() < MAX_ANOMALIES {
            self.anomalies.push(anomaly);
        }
    }

    /// A settling session that still has a balance to refund (a refund split over several writes) is
    /// due at once, unless a hold is outstanding: then its own deadline (or vend result) comes first and
    /// the settlement at that deadline refunds the rest with it.
    fn schedule_remainder(&mut self, now: Timestamp, effects: &mut Vec<Effect>) {
        if self.phase == Phase::Open || self.balance.is_zero() || !self.held.is_zero() {
            return;
        }
        if self.deadline_at.is_some_and(|d| d <= now) {
            return;
        }
        self.deadline_at = Some(now);
        effects.push(Effect::ScheduleDeadline {
            session: self.id.clone(),
            at: now,
        });
    }

    /// Closes the session when nothing is left: no balance, no hold, every refund final. An open
    /// pay-first session whose money ran out closes at once, without a refund.
    fn close_if_done(&mut self, effects: &mut Vec<Effect>) {
        let can_close = match self.phase {
            Phase::Closed => false,
            Phase::Settling => true,
            Phase::Open => self.is_pay_first() && !self.payments.is_empty(),
        };
        if !can_close || !self.balance.is_zero() || !self.held.is_zero() {
            return;
        }
        if self.refunds.iter().all(|r| r.status.is_final()) {
            self.phase = Phase::Closed;
            self.deadline_at = None;
            effects.push(Effect::Close {
                session: self.id.clone(),
            });
        } else {
            self.phase = Phase::Settling;
        }
    }

    /// Acts on a passed deadline: the window of a pay-first session, the expiry of an unpaid order, the
    /// vend confirmation of a paid one. Unconfirmed holds are refunded and flagged. Returns whether
    /// anything was due.
    fn settle_if_due(
        &mut self,
        now: Timestamp,
        effects: &mut Vec<Effect>,
    ) -> Result<bool, Rejection> {
        if !self.due(now) {
            return Ok(false);
        }
        self.deadline_at = None;
        let order_status = self.order().map(|o| o.status);
        match order_status {
            None => {
                let unconfirmed = self.release_unconfirmed_holds(now, effects)?;
                let total = self.balance.checked_add(unconfirmed)?;
                self.balance = total;
                self.phase = Phase::Settling;
                if !total.is_zero() {
                    self.issue_refund(total, RefundReason::Settlement, now, effects)?;
                }
            }
            Some(OrderStatus::AwaitingPayment) => {
                self.set_order_status(OrderStatus::Expired);
                self.phase = Phase::Settling;
            }
            Some(OrderStatus::Paid) => {
                let unconfirmed = self.release_unconfirmed_holds(now, effects)?;
                self.balance = self.balance.checked_add(unconfirmed)?;
                self.set_order_status(OrderStatus::Unconfirmed);
                self.phase = Phase::Settling;
                if !unconfirmed.is_zero() {
                    self.issue_refund(unconfirmed, RefundReason::VendUnconfirmed, now, effects)?;
                }
            }
            Some(_) => {
                // Already settled once; only the rest of a split refund can be left.
                self.phase = Phase::Settling;
                let left = self.balance;
                if !left.is_zero() {
                    self.issue_refund(left, RefundReason::Settlement, now, effects)?;
                }
            }
        }
        self.close_if_done(effects);
        Ok(true)
    }

    /// Marks every held purchase unconfirmed and takes its price off `held`; returns the total released.
    fn release_unconfirmed_holds(
        &mut self,
        now: Timestamp,
        effects: &mut Vec<Effect>,
    ) -> Result<Money, Rejection> {
        let mut released = Money::zero(self.currency);
        let mut flagged = Vec::new();
        for p in self
            .purchases
            .iter_mut()
            .filter(|p| p.status == PurchaseStatus::Held)
        {
            p.status = PurchaseStatus::Unconfirmed;
            released = released.checked_add(p.price)?;
            flagged.push(p.request_id.clone());
        }
        self.held = self.held.checked_sub(released)?;
        for request_id in flagged {
            effects.push(Effect::HoldSettled {
                session: self.id.clone(),
                request_id: request_id.clone(),
                delivered: false,
            });
            self.flag(AnomalyKind::UnconfirmedVend { request_id }, now, effects);
        }
        Ok(released)
    }

    fn set_order_status(&mut self, status: OrderStatus) {
        if let Some(o) = self.order_mut() {
            o.status = status;
        }
    }

    fn record_payment(
        &mut self,
        p: &IncomingPayment,
        now: Timestamp,
        effects: &mut Vec<Effect>,
    ) -> Result<(), Rejection> {
        self.balance = self.balance.checked_add(p.amount)?;
        self.payments.push(PaymentRecord {
            trade_no: p.trade_no.clone(),
            merchant_trade_no: p.merchant_trade_no.clone(),
            amount: p.amount,
            buyer_id: p.buyer_id.clone(),
            paid_at: p.paid_at,
            received_at: now,
        });
        effects.push(Effect::Credit {
            session: self.id.clone(),
            trade_no: p.trade_no.clone(),
            amount: p.amount,
        });
        Ok(())
    }

    fn disposition(&self) -> Disposition {
        match &self.kind {
            SessionKind::PayFirst => Disposition::Credited,
            SessionKind::Order(_) => Disposition::OrderPaid,
            SessionKind::Refused { reason } => Disposition::Refused(*reason),
        }
    }
}

/// Collects the sessions a command touches and bumps each one's version once.
struct Builder {
    sessions: Vec<Session>,
    current: Option<SessionId>,
    effects: Vec<Effect>,
}

impl Builder {
    fn new() -> Builder {
        Builder {
            sessions: Vec::new(),
            current: None,
            effects: Vec::new(),
        }
    }

    fn write(&mut self, mut s: Session) {
        s.version += 1;
        self.sessions.push(s);
    }

    fn finish(self, reply: Reply) -> Decision {
        Ok(Transition {
            sessions: self.sessions,
            current: self.current,
            effects: self.effects,
            reply,
        })
    }
}

fn noop(reply: Reply) -> Decision {
    Ok(Transition {
        sessions: Vec::new(),
        current: None,
        effects: Vec::new(),
        reply,
    })
}

fn check_price(device: &Device, price: Money) -> Result<(), Rejection> {
    if price.currency() != device.currency {
        return Err(Rejection::CurrencyMismatch {
            expected: device.currency,
            got: price.currency(),
        });
    }
    if price.is_zero() {
        return Err(Rejection::NonPositivePrice);
    }
    Ok(())
}

/// The device's current session, if it belongs to the device and is not closed.
fn live<'a>(
    device: &Device,
    current: Option<&'a Session>,
) -> Result<Option<&'a Session>, Rejection> {
    match current {
        Some(s) if s.device_id != device.id => Err(Rejection::WrongDevice {
            session: s.id.clone(),
            expected: device.id.clone(),
            actual: s.device_id.clone(),
        }),
        Some(s) if s.phase != Phase::Closed => Ok(Some(s)),
        _ => Ok(None),
    }
}

// ---------------------------------------------------------------------------------------------------
// Device-level commands: they act on the machine's current session (or open a new one).
// ---------------------------------------------------------------------------------------------------

/// A verified payment notification for `device`. The caller has checked that the trade was never seen
/// before (a seen trade is answered with its stored [`PaymentOutcome`] without calling this).
pub fn receive_payment(
    device: &Device,
    current: Option<&Session>,
    payment: &IncomingPayment,
    windows: &Windows,
    now: Timestamp,
) -> Decision {
    let mut b = Builder::new();
    let current = live(device, current)?;
    if let Some(s) = current {
        if s.payments.iter().any(|p| p.trade_no == payment.trade_no) {
            return noop(Reply::Payment(PaymentOutcome {
                session: s.id.clone(),
                disposition: s.disposition(),
            }));
        }
    }
    if payment.amount.currency() != device.currency {
        let reason = RefusalReason::CurrencyMismatch;
        let mut refused = refused_session(device, payment, reason, now, &mut b.effects)?;
        refused.flag(
            AnomalyKind::CurrencyMismatch {
                trade_no: payment.trade_no.clone(),
                paid: payment.amount.currency(),
                expected: device.currency,
            },
            now,
            &mut b.effects,
        );
        return finish_refused(b, refused, reason);
    }

    // Judge the machine as of now: a deadline that has passed but not been acted on yet is acted on first.
    let mut cur = current.cloned();
    let mut settled = false;
    if let Some(s) = cur.as_mut() {
        settled = s.settle_if_due(now, &mut b.effects)?;
    }
    let expired_order = settled
        && cur
            .as_ref()
            .and_then(Session::order)
            .is_some_and(|o| o.status == OrderStatus::Expired);
    let active = cur.as_ref().filter(|s| s.phase == Phase::Open);

    let refusal = match active.map(|s| (&s.kind, s)) {
        Some((SessionKind::PayFirst, s)) => {
            let other_buyer = match (s.buyer(), payment.buyer_id.as_ref()) {
                (Some(a), Some(b)) => a != b,
                _ => false,
            };
            if other_buyer {
                Some(RefusalReason::MachineBusy)
            } else if s.payments.len() >= MAX_PAYMENTS {
                Some(RefusalReason::SessionFull)
            } else {
                let mut s = s.clone();
                s.record_payment(payment, now, &mut b.effects)?;
                // The window restarts, but never ends before a held purchase's vend time.
                let at = now
                    .plus(windows.pay_first)
                    .max(s.deadline_at.unwrap_or(now));
                s.deadline_at = Some(at);
                b.effects.push(Effect::ScheduleDeadline {
                    session: s.id.clone(),
                    at,
                });
                let reply = PaymentOutcome {
                    session: s.id.clone(),
                    disposition: Disposition::Credited,
                };
                b.write(s);
                return b.finish(Reply::Payment(reply));
            }
        }
        Some((SessionKind::Order(o), s)) if o.status == OrderStatus::AwaitingPayment => {
            if payment.amount.minor() < o.price.minor() {
                Some(RefusalReason::Underpaid)
            } else {
                let mut s = s.clone();
                let price = o.price;
                let order_id = o.order_id.clone();
                let slot = o.slot.clone();
                s.record_payment(payment, now, &mut b.effects)?;
                s.balance = s.balance.checked_sub(price)?;
                s.held = s.held.checked_add(price)?;
                s.purchases.push(Purchase {
                    request_id: RequestId::for_order(&order_id),
                    slot,
                    price,
                    requested_at: now,
                    status: PurchaseStatus::Held,
                    balance_after: Money::zero(s.currency),
                    late_report: None,
                });
                s.set_order_status(OrderStatus::Paid);
                b.effects.push(Effect::Approve {
                    session: s.id.clone(),
                    request_id: RequestId::for_order(&order_id),
                    price,
                });
                let over = s.balance;
                if !over.is_zero() {
                    s.issue_refund(over, RefundReason::Overpayment, now, &mut b.effects)?;
                }
                let at = now.plus(windows.purchase_first);
                s.deadline_at = Some(at);
                b.effects.push(Effect::ScheduleDeadline {
                    session: s.id.clone(),
                    at,
                });
                let reply = PaymentOutcome {
                    session: s.id.clone(),
                    disposition: Disposition::OrderPaid,
                };
                b.write(s);
                return b.finish(Reply::Payment(reply));
            }
        }
        Some(_) => Some(RefusalReason::MachineBusy),
        None if device.mode.takes_sessions() => None,
        None if expired_order => Some(RefusalReason::OrderExpired),
        None => Some(RefusalReason::NoOrder),
    };

    // Whatever the outcome, a session changed by an overdue deadline is written too.
    if let Some(s) = cur.filter(|_| settled) {
        b.write(s);
    }

    if let Some(reason) = refusal {
        let refused = refused_session(device, payment, reason, now, &mut b.effects)?;
        return finish_refused(b, refused, reason);
    }

    let mut s = Session::new(
        SessionId::for_payment(&payment.trade_no),
        device.id.clone(),
        device.currency,
        SessionKind::PayFirst,
        now,
    );
    s.record_payment(payment, now, &mut b.effects)?;
    let at = now.plus(windows.pay_first);
    s.deadline_at = Some(at);
    b.effects.push(Effect::ScheduleDeadline {
        session: s.id.clone(),
        at,
    });
    b.current = Some(s.id.clone());
    let reply = PaymentOutcome {
        session: s.id.clone(),
        disposition: Disposition::Credited,
    };
    b.write(s);
    b.finish(Reply::Payment(reply))
}

/// A session that holds a refused payment and refunds it in full at once.
fn refused_session(
    device: &Device,
    payment: &IncomingPayment,
    reason: RefusalReason,
    now: Timestamp,
    effects: &mut Vec<Effect>,
) -> Result<Session, Rejection> {
    let mut s = Session::new(
        SessionId::for_refused(&payment.trade_no),
        device.id.clone(),
        payment.amount.currency(),
        SessionKind::Refused { reason },
        now,
    );
    s.phase = Phase::Settling;
    s.record_payment(payment, now, effects)?;
    s.issue_refund(payment.amount, RefundReason::Refused(reason), now, effects)?;
    Ok(s)
}

fn finish_refused(mut b: Builder, refused: Session, reason: RefusalReason) -> Decision {
    let reply = PaymentOutcome {
        session: refused.id.clone(),
        disposition: Disposition::Refused(reason),
    };
    b.write(refused);
    b.finish(Reply::Payment(reply))
}

/// What a machine asks for when it wants to sell from the open session's balance (pay first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PurchaseRequest {
    pub request_id: RequestId,
    pub slot: Slot,
    pub price: Money,
    /// The session the machine means (see `docs/contract.md`, “Machine routes”). When it is not the
    /// open session the purchase is declined `session_closed`: a late retry never holds the next
    /// customer's money.
    pub session: Option<SessionId>,
}

/// The machine asks to sell `price` from the open session's balance (pay first). The caller answers a
/// `request_id` it has already answered from its idempotency record.
///
/// Approval holds the price and moves the deadline to at least now + the purchase-first window, so a
/// purchase approved in the last second still has its full vend time.
pub fn request_purchase(
    device: &Device,
    current: Option<&Session>,
    req: &PurchaseRequest,
    windows: &Windows,
    now: Timestamp,
) -> Decision {
    let (request_id, slot, price) = (&req.request_id, &req.slot, req.price);
    check_price(device, price)?;
    let current = live(device, current)?;
    let mut b = Builder::new();
    if let Some(s) = current {
        if let Some(p) = s.purchase(request_id) {
            if p.price != price || &p.slot != slot {
                return Err(Rejection::RequestConflict(request_id.to_string()));
            }
            return noop(Reply::Purchase(answer(s, p)));
        }
    }
    let unrecorded = |b: &mut Builder, reason: DeclineReason| {
        b.effects.push(Effect::Decline {
            request_id: request_id.clone(),
            reason,
        });
        PurchaseAnswer {
            request_id: request_id.clone(),
            slot: slot.clone(),
            price,
            declined: Some(reason),
            balance: Money::zero(device.currency),
            session: None,
        }
    };
    if let Some(expected) = &req.session {
        if current.map(|s| &s.id) != Some(expected) {
            let reply = unrecorded(&mut b, DeclineReason::SessionClosed);
            return b.finish(Reply::Purchase(reply));
        }
    }
    let Some(mut s) = current.cloned() else {
        let reply = unrecorded(&mut b, DeclineReason::NoSession);
        return b.finish(Reply::Purchase(reply));
    };
    if !s.is_pay_first() {
        // An order is not a balance to spend from; nothing is recorded against it.
        let reply = unrecorded(&mut b, DeclineReason::NoSession);
        return b.finish(Reply::Purchase(reply));
    }
    let mut changed = s.settle_if_due(now, &mut b.effects)?;
    let approved = s
        .purchases
        .iter()
        .filter(|p| !matches!(p.status, PurchaseStatus::Declined(_)))
        .count();
    let reason = if !s.spendable(now) {
        Some(DeclineReason::SessionClosed)
    } else if approved >= MAX_APPROVED_PURCHASES {
        Some(DeclineReason::SessionFull)
    } else if s.balance.minor() >= price.minor() {
        None
    } else {
        Some(DeclineReason::InsufficientBalance)
    };
    let status = match reason {
        Some(reason) => {
            b.effects.push(Effect::Decline {
                request_id: request_id.clone(),
                reason,
            });
            PurchaseStatus::Declined(reason)
        }
        None => {
            s.balance = s.balance.checked_sub(price)?;
            s.held = s.held.checked_add(price)?;
            b.effects.push(Effect::Approve {
                session: s.id.clone(),
                request_id: request_id.clone(),
                price,
            });
            let vend_by = now.plus(windows.purchase_first);
            if s.deadline_at.is_none_or(|d| d < vend_by) {
                s.deadline_at = Some(vend_by);
                b.effects.push(Effect::ScheduleDeadline {
                    session: s.id.clone(),
                    at: vend_by,
                });
            }
            PurchaseStatus::Held
        }
    };
    let purchase = Purchase {
        request_id: request_id.clone(),
        slot: slot.clone(),
        price,
        requested_at: now,
        status,
        balance_after: s.balance,
        late_report: None,
    };
    let reply = answer(&s, &purchase);
    // Kept in the session so operators see it (declines only up to a bound: the request's idempotency
    // record answers a retry either way).
    let declines = s.purchases.len() - approved;
    let keep = s.phase != Phase::Closed && (reason.is_none() || declines < MAX_RECORDED_DECLINES);
    if keep {
        s.purchases.push(purchase);
        changed = true;
    }
    if changed {
        b.write(s);
    }
    b.finish(Reply::Purchase(reply))
}

fn answer(s: &Session, p: &Purchase) -> PurchaseAnswer {
    PurchaseAnswer {
        request_id: p.request_id.clone(),
        slot: p.slot.clone(),
        price: p.price,
        declined: match p.status {
            PurchaseStatus::Declined(r) => Some(r),
            _ => None,
        },
        balance: p.balance_after,
        session: Some(s.id.clone()),
    }
}

/// Purchase first: the machine registers an order and waits for its payment.
pub fn place_order(
    device: &Device,
    current: Option<&Session>,
    order_id: &OrderId,
    slot: &Slot,
    price: Money,
    windows: &Windows,
    now: Timestamp,
) -> Decision {
    if !device.mode.takes_orders() {
        return Err(Rejection::ModeNotSupported {
            mode: device.mode,
            flow: "orders (purchase first)",
        });
    }
    check_price(device, price)?;
    let id = SessionId::for_order(&device.id, order_id);
    // The same order again, whatever became of it since, is answered as before.
    if let Some(s) = current.filter(|s| s.id == id && s.device_id == device.id) {
        return match s.order() {
            Some(o) if o.price == price && &o.slot == slot => noop(Reply::Session {
                session: s.id.clone(),
            }),
            _ => Err(Rejection::RequestConflict(order_id.to_string())),
        };
    }
    let current = live(device, current)?;
    let mut b = Builder::new();
    if let Some(s) = current {
        let mut s = s.clone();
        let changed = s.settle_if_due(now, &mut b.effects)?;
        match (&s.kind, s.phase) {
            (SessionKind::PayFirst, Phase::Open) => {
                return Err(Rejection::Busy(
                    "a pay-first session is open on this machine",
                ))
            }
            (SessionKind::Order(o), Phase::Open) if o.status == OrderStatus::Paid => {
                return Err(Rejection::Busy("an order is paid and being delivered"))
            }
            (SessionKind::Order(o), Phase::Open) if o.status == OrderStatus::AwaitingPayment => {
                // The customer picked something else: the unpaid order gives way to the new one.
                s.set_order_status(OrderStatus::Cancelled);
                s.phase = Phase::Settling;
                s.deadline_at = None;
                s.close_if_done(&mut b.effects);
                b.write(s);
            }
            _ if changed => b.write(s),
            _ => {}
        }
    }
    let expires_at = now.plus(windows.order_payment);
    let mut s = Session::new(
        id,
        device.id.clone(),
        device.currency,
        SessionKind::Order(OrderTerms {
            order_id: order_id.clone(),
            slot: slot.clone(),
            price,
            placed_at: now,
            expires_at,
            status: OrderStatus::AwaitingPayment,
        }),
        now,
    );
    s.deadline_at = Some(expires_at);
    b.effects.push(Effect::ScheduleDeadline {
        session: s.id.clone(),
        at: expires_at,
    });
    b.current = Some(s.id.clone());
    let reply = Reply::Session {
        session: s.id.clone(),
    };
    b.write(s);
    b.finish(reply)
}

/// The customer ends the session on the machine ("return change"): the free balance is refunded at once;
/// a held purchase is settled by its vend result or the deadline. An unpaid order is cancelled.
///
/// With `expected` (the session the machine means) only that session is ended: a repeat, a retry after
/// a lost answer or a replay after the next customer paid changes nothing and answers that session.
pub fn end_session(
    device: &Device,
    current: Option<&Session>,
    expected: Option<&SessionId>,
    now: Timestamp,
) -> Decision {
    if let Some(expected) = expected {
        if current.map(|s| &s.id) != Some(expected) {
            return noop(Reply::Session {
                session: expected.clone(),
            });
        }
    }
    let Some(s) = current else {
        return Err(Rejection::NoSession);
    };
    if live(device, Some(s))?.is_none() {
        // Already closed (ended before, or settled): ending again changes nothing.
        return noop(Reply::Session {
            session: s.id.clone(),
        });
    }
    let mut b = Builder::new();
    let mut s = s.clone();
    let mut changed = s.settle_if_due(now, &mut b.effects)?;
    if s.phase == Phase::Open {
        match s.order().map(|o| o.status) {
            None => {
                s.phase = Phase::Settling;
                if s.held.is_zero() {
                    s.deadline_at = None;
                }
                let free = s.balance;
                if !free.is_zero() {
                    s.issue_refund(free, RefundReason::Settlement, now, &mut b.effects)?;
                }
                s.close_if_done(&mut b.effects);
                changed = true;
            }
            Some(OrderStatus::AwaitingPayment) => {
                s.set_order_status(OrderStatus::Cancelled);
                s.phase = Phase::Settling;
                s.deadline_at = None;
                s.close_if_done(&mut b.effects);
                changed = true;
            }
            // A paid order is settled by its vend result or its deadline.
            Some(_) => {}
        }
    }
    let reply = Reply::Session {
        session: s.id.clone(),
    };
    if changed {
        b.write(s);
    }
    b.finish(reply)
}

// ---------------------------------------------------------------------------------------------------
// Session-level commands: addressed to one session (found by request id, refund id or deadline).
// ---------------------------------------------------------------------------------------------------

/// The machine reports the vend of a purchase (or of a paid order, whose id is the request id).
pub fn report_vend(
    session: &Session,
    request_id: &RequestId,
    delivered: bool,
    now: Timestamp,
) -> Decision {
    let mut b = Builder::new();
    let mut s = session.clone();
    let Some(idx) = s.purchases.iter().position(|p| &p.request_id == request_id) else {
        return match s.order() {
            Some(o) if RequestId::for_order(&o.order_id) == *request_id => {
                Err(Rejection::OrderNotPaid(o.order_id.clone()))
            }
            _ => Err(Rejection::UnknownPurchase(request_id.clone())),
        };
    };
    if matches!(s.purchases[idx].status, PurchaseStatus::Declined(_)) {
        return Err(Rejection::PurchaseNotApproved(request_id.clone()));
    }
    let mut changed = s.settle_if_due(now, &mut b.effects)?;
    let purchase = s.purchases[idx].clone();
    match purchase.status {
        PurchaseStatus::Held => {
            let price = purchase.price;
            s.held = s.held.checked_sub(price)?;
            b.effects.push(Effect::HoldSettled {
                session: s.id.clone(),
                request_id: request_id.clone(),
                delivered,
            });
            if delivered {
                s.spent = s.spent.checked_add(price)?;
                s.purchases[idx].status = PurchaseStatus::Delivered;
                if s.order().is_some() {
                    s.set_order_status(OrderStatus::Delivered);
                    s.phase = Phase::Settling;
                    s.deadline_at = None;
                }
            } else {
                s.purchases[idx].status = PurchaseStatus::Failed;
                s.balance = s.balance.checked_add(price)?;
                if s.order().is_some() {
                    s.set_order_status(OrderStatus::Failed);
                    s.phase = Phase::Settling;
                    s.deadline_at = None;
                    s.issue_refund(price, RefundReason::VendFailed, now, &mut b.effects)?;
                } else if s.phase != Phase::Open {
                    // The balance was already settled: the returned hold goes back to the customer now.
                    s.issue_refund(price, RefundReason::VendFailed, now, &mut b.effects)?;
                }
            }
            if s.phase == Phase::Settling && s.held.is_zero() {
                s.deadline_at = None;
            }
            s.schedule_remainder(now, &mut b.effects);
            s.close_if_done(&mut b.effects);
            changed = true;
        }
        PurchaseStatus::Unconfirmed if s.purchases[idx].late_report.is_none() => {
            s.purchases[idx].late_report = Some(delivered);
            s.flag(
                AnomalyKind::LateVendReport {
                    request_id: request_id.clone(),
                    delivered,
                },
                now,
                &mut b.effects,
            );
            changed = true;
        }
        _ => {}
    }
    let reply = Reply::Vend {
        session: s.id.clone(),
        request_id: request_id.clone(),
        status: s.purchases[idx].status,
    };
    if changed {
        b.write(s);
    }
    b.finish(reply)
}

/// A deadline message (delayed SQS message, schedule or sweep) for this session. Late, early, stale and
/// repeated deliveries are harmless: only a deadline that has really passed is acted on, once.
pub fn deadline_due(session: &Session, now: Timestamp) -> Decision {
    let mut b = Builder::new();
    let mut s = session.clone();
    let settled = s.settle_if_due(now, &mut b.effects)?;
    let reply = Reply::Deadline {
        session: s.id.clone(),
    };
    if settled {
        b.write(s);
    }
    b.finish(reply)
}

/// Alipay's verdict on a refund. `Unknown` changes nothing (the executor retries); a final verdict is
/// recorded once and the session closes when nothing else is outstanding. The one exception: a verified
/// success for a refund recorded failed is recorded (success wins, Alipay paid) and flagged.
pub fn settle_refund(
    session: &Session,
    refund_id: &RefundId,
    outcome: RefundOutcome,
    now: Timestamp,
) -> Decision {
    let mut b = Builder::new();
    let mut s = session.clone();
    let Some(idx) = s.refunds.iter().position(|r| &r.id == refund_id) else {
        return Err(Rejection::UnknownRefund(refund_id.clone()));
    };
    let changed = match (s.refunds[idx].status, outcome) {
        (RefundStatus::Pending, RefundOutcome::Succeeded) => {
            s.refunds[idx].status = RefundStatus::Succeeded;
            true
        }
        (RefundStatus::Pending, RefundOutcome::FailedPermanently) => {
            s.refunds[idx].status = RefundStatus::Failed;
            s.flag(
                AnomalyKind::RefundFailed {
                    refund_id: refund_id.clone(),
                },
                now,
                &mut b.effects,
            );
            true
        }
        (RefundStatus::Failed, RefundOutcome::Succeeded) => {
            s.refunds[idx].status = RefundStatus::Succeeded;
            s.flag(
                AnomalyKind::RefundSucceededAfterFailure {
                    refund_id: refund_id.clone(),
                },
                now,
                &mut b.effects,
            );
            true
        }
        _ => false,
    };
    if changed {
        s.close_if_done(&mut b.effects);
    }
    let reply = Reply::Refund {
        session: s.id.clone(),
        refund_id: refund_id.clone(),
        status: s.refunds[idx].status,
    };
    if changed {
        b.write(s);
    }
    b.finish(reply)
}

/// A refund attempt ended without a verified verdict. Nothing changes within [`REFUND_STUCK_AFTER`] of
/// the refund's issue; after it, the refund is raised once as [`AnomalyKind::RefundStuck`] and stays
/// pending (still retried with the same id and amount) until a verified answer or reconciliation.
pub fn refund_unresolved(session: &Session, refund_id: &RefundId, now: Timestamp) -> Decision {
    let mut b = Builder::new();
    let mut s = session.clone();
    let Some(refund) = s.refund(refund_id) else {
        return Err(Rejection::UnknownRefund(refund_id.clone()));
    };
    let status = refund.status;
    let raise = status == RefundStatus::Pending
        && refund.issued_at.plus(REFUND_STUCK_AFTER) <= now
        && !s.refund_is_stuck(refund_id);
    if raise {
        if let Some(r) = s.refunds.iter_mut().find(|r| &r.id == refund_id) {
            r.stuck = true;
        }
        s.flag(
            AnomalyKind::RefundStuck {
                refund_id: refund_id.clone(),
            },
            now,
            &mut b.effects,
        );
    }
    let reply = Reply::Refund {
        session: s.id.clone(),
        refund_id: refund_id.clone(),
        status,
    };
    if raise {
        b.write(s);
    }
    b.finish(reply)
}
