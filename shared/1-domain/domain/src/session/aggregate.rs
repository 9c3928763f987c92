//! The session aggregate's own rules (settling, refunding, closing, flagging), shared by every command,
//! and the `Builder` that turns one command's changes into a [`Transition`].

use super::shelves::Shelves;
use super::types::*;
use crate::device::Device;
use crate::ids::{BuyerId, DeviceId, RefundId, RequestId, SessionId, Slot};
use crate::inventory::StockChange;
use crate::money::{Currency, Money, MoneyError};
use crate::time::Timestamp;

// ---------------------------------------------------------------------------------------------------
// Session helpers
// ---------------------------------------------------------------------------------------------------

impl Session {
    pub(crate) fn new(
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
            place: None,
            version: 0,
        }
    }

    pub fn order(&self) -> Option<&OrderTerms> {
        match &self.kind {
            SessionKind::Order(o) => Some(o),
            _ => None,
        }
    }

    pub(crate) fn order_mut(&mut self) -> Option<&mut OrderTerms> {
        match &mut self.kind {
            SessionKind::Order(o) => Some(o),
            _ => None,
        }
    }

    pub fn is_pay_first(&self) -> bool {
        matches!(self.kind, SessionKind::PayFirst)
    }

    /// An open pay-first session whose window has not passed.
    pub(crate) fn spendable(&self, now: Timestamp) -> bool {
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
    pub(crate) fn buyer(&self) -> Option<&BuyerId> {
        self.payments.iter().find_map(|p| p.buyer_id.as_ref())
    }

    pub(crate) fn unrefunded(&self, payment: &PaymentRecord) -> Result<Money, MoneyError> {
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
    pub(crate) fn issue_refund(
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

    pub(crate) fn flag(&mut self, kind: AnomalyKind, now: Timestamp, effects: &mut Vec<Effect>) {
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
    pub(crate) fn schedule_remainder(&mut self, now: Timestamp, effects: &mut Vec<Effect>) {
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
    pub(crate) fn close_if_done(&mut self, effects: &mut Vec<Effect>) {
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
    pub(crate) fn settle_if_due(
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
                self.end_unpaid_order(OrderStatus::Expired, effects);
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
    pub(crate) fn release_unconfirmed_holds(
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
            flagged.push((p.request_id.clone(), p.reserved.then(|| p.slot.clone())));
        }
        self.held = self.held.checked_sub(released)?;
        for (request_id, reserved) in flagged {
            if let Some(slot) = reserved {
                self.stock(&slot, StockChange::Release, effects);
            }
            effects.push(Effect::HoldSettled {
                session: self.id.clone(),
                request_id: request_id.clone(),
                delivered: false,
            });
            self.flag(AnomalyKind::UnconfirmedVend { request_id }, now, effects);
        }
        Ok(released)
    }

    pub(crate) fn set_order_status(&mut self, status: OrderStatus) {
        if let Some(o) = self.order_mut() {
            o.status = status;
        }
    }

    /// An order that was never paid ends (expired, cancelled): the item it reserved is available again.
    pub(crate) fn end_unpaid_order(&mut self, status: OrderStatus, effects: &mut Vec<Effect>) {
        let reserved = self
            .order()
            .filter(|o| o.reserved && o.status == OrderStatus::AwaitingPayment)
            .map(|o| o.slot.clone());
        self.set_order_status(status);
        if let Some(slot) = reserved {
            self.stock(&slot, StockChange::Release, effects);
        }
    }

    /// One item of a planogram slot of this session's machine is reserved, released or delivered.
    pub(crate) fn stock(&self, slot: &Slot, change: StockChange, effects: &mut Vec<Effect>) {
        effects.push(Effect::Stock {
            device: self.device_id.clone(),
            slot: slot.clone(),
            change,
        });
    }

    /// Whether any purchase or the order of this session reserved an item: a command on it may then
    /// change slot rows, and must read them.
    pub fn reserves_stock(&self) -> bool {
        self.purchases.iter().any(|p| p.reserved) || self.order().is_some_and(|o| o.reserved)
    }

    /// Purchases held now that reserved an item (each a slot row a deadline may have to release).
    pub(crate) fn reserved_holds(&self) -> usize {
        self.purchases
            .iter()
            .filter(|p| p.reserved && p.status == PurchaseStatus::Held)
            .count()
    }

    pub(crate) fn record_payment(
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

    pub(crate) fn disposition(&self) -> Disposition {
        match &self.kind {
            SessionKind::PayFirst => Disposition::Credited,
            SessionKind::Order(_) => Disposition::OrderPaid,
            SessionKind::Refused { reason } => Disposition::Refused(*reason),
        }
    }
}

/// Collects the sessions a command touches and bumps each one's version once; at the end, folds the
/// command's stock effects into the slot rows it read.
pub(crate) struct Builder<'a> {
    pub(crate) shelves: &'a Shelves,
    /// When the command is decided: the time an item leaving a slot is stamped with.
    pub(crate) now: Timestamp,
    pub(crate) sessions: Vec<Session>,
    pub(crate) current: Option<SessionId>,
    pub(crate) effects: Vec<Effect>,
}

impl<'a> Builder<'a> {
    pub(crate) fn new(shelves: &'a Shelves, now: Timestamp) -> Builder<'a> {
        Builder {
            shelves,
            now,
            sessions: Vec::new(),
            current: None,
            effects: Vec::new(),
        }
    }

    pub(crate) fn write(&mut self, mut s: Session) {
        s.version += 1;
        self.sessions.push(s);
    }

    pub(crate) fn finish(self, reply: Reply) -> Decision {
        let stock = self.shelves.apply(&self.effects, self.now);
        Ok(Transition {
            sessions: self.sessions,
            current: self.current,
            effects: self.effects,
            reply,
            stock,
        })
    }
}

pub(crate) fn noop(reply: Reply) -> Decision {
    Ok(Transition {
        sessions: Vec::new(),
        current: None,
        effects: Vec::new(),
        reply,
        stock: Vec::new(),
    })
}

pub(crate) fn check_price(device: &Device, price: Money) -> Result<(), Rejection> {
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
pub(crate) fn live<'a>(
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
