//! One function per command: (state, command, now) → [`Decision`]. Device-level commands act on the
//! machine's current session (or open one); session-level ones on the session they name.
//!
//! This file holds the device-level commands; the session-level ones (vend results, deadlines,
//! refund verdicts) are in `session_commands.rs`.

use super::aggregate::*;
use super::shelves::Shelves;
use super::types::*;
use crate::device::Device;
use crate::ids::{OrderId, RequestId, SessionId, Slot};
use crate::inventory::{StockChange, MAX_RESERVED_HOLDS};
use crate::money::Money;
use crate::time::{Timestamp, Windows};

// ---------------------------------------------------------------------------------------------------
// Device-level commands: they act on the machine's current session (or open a new one).
// ---------------------------------------------------------------------------------------------------

/// A verified payment notification for `device`. The caller has checked that the trade was never seen
/// before (a seen trade is answered with its stored [`PaymentOutcome`] without calling this).
pub fn receive_payment(
    device: &Device,
    current: Option<&Session>,
    payment: &IncomingPayment,
    shelves: &Shelves,
    windows: &Windows,
    now: Timestamp,
) -> Decision {
    let mut b = Builder::new(shelves, now);
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
                let reserved = o.reserved;
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
                    reserved,
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
pub(crate) fn refused_session(
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

pub(crate) fn finish_refused(
    mut b: Builder<'_>,
    refused: Session,
    reason: RefusalReason,
) -> Decision {
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
    /// May be omitted for a slot of the planogram (its price is used); must be given for any other.
    pub price: Option<Money>,
    /// The session the machine means (see `docs/contract.md`, “Machine routes”). When it is not the
    /// open session the purchase is declined `session_closed`: a late retry never holds the next
    /// customer's money.
    pub session: Option<SessionId>,
}

/// The machine asks to sell `price` from the open session's balance (pay first). The caller answers a
/// `request_id` it has already answered from its idempotency record.
///
/// Approval holds the price and moves the deadline to at least now + the purchase-first window, so a
/// purchase approved in the last second still has its full vend time. For a slot of the planogram the
/// price is the slot's (a different one is refused), and approval reserves one of its items in the
/// same write; with none available the purchase is declined `sold_out`.
pub fn request_purchase(
    device: &Device,
    current: Option<&Session>,
    req: &PurchaseRequest,
    shelves: &Shelves,
    windows: &Windows,
    now: Timestamp,
) -> Decision {
    let (request_id, slot) = (&req.request_id, &req.slot);
    if let Some(asked) = req.price {
        check_price(device, asked)?;
    }
    let current = live(device, current)?;
    let mut b = Builder::new(shelves, now);
    if let Some(s) = current {
        if let Some(p) = s.purchase(request_id) {
            if req.price.is_some_and(|asked| asked != p.price) || &p.slot != slot {
                return Err(Rejection::RequestConflict(request_id.to_string()));
            }
            return noop(Reply::Purchase(answer(s, p)));
        }
    }
    let price = settle_price(slot, req.price, shelves)?;
    // A catalogue price changed to another currency since the slot map was set is refused, not mixed in.
    check_price(device, price)?;
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
    let available = shelves.available_after(slot, &b.effects);
    let reason = if !s.spendable(now) {
        Some(DeclineReason::SessionClosed)
    } else if approved >= MAX_APPROVED_PURCHASES
        || (available.is_some() && s.reserved_holds() >= MAX_RESERVED_HOLDS)
    {
        Some(DeclineReason::SessionFull)
    } else if available == Some(0) {
        Some(DeclineReason::SoldOut)
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
            if available.is_some() {
                s.stock(slot, StockChange::Reserve, &mut b.effects);
            }
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
        reserved: status == PurchaseStatus::Held && available.is_some(),
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

/// The price of a purchase or order: the slot's for a slot of the planogram (a request naming another
/// is refused), else the one the machine gives, which it then must.
fn settle_price(slot: &Slot, asked: Option<Money>, shelves: &Shelves) -> Result<Money, Rejection> {
    match (asked, shelves.price(slot)?) {
        (Some(asked), Some(price)) if asked != price => Err(Rejection::PriceMismatch {
            slot: slot.clone(),
            asked,
            price,
        }),
        (_, Some(price)) => Ok(price),
        (Some(asked), None) => Ok(asked),
        (None, None) => Err(Rejection::MissingPrice(slot.clone())),
    }
}

pub(crate) fn answer(s: &Session, p: &Purchase) -> PurchaseAnswer {
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

/// Purchase first: the machine registers an order and waits for its payment. For a slot of the
/// planogram the price is the slot's and placing the order reserves one of its items (none available:
/// [`Rejection::SoldOut`]).
#[allow(clippy::too_many_arguments)]
pub fn place_order(
    device: &Device,
    current: Option<&Session>,
    order_id: &OrderId,
    slot: &Slot,
    asked: Option<Money>,
    shelves: &Shelves,
    windows: &Windows,
    now: Timestamp,
) -> Decision {
    if !device.mode.takes_orders() {
        return Err(Rejection::ModeNotSupported {
            mode: device.mode,
            flow: "orders (purchase first)",
        });
    }
    if let Some(asked) = asked {
        check_price(device, asked)?;
    }
    let id = SessionId::for_order(&device.id, order_id);
    // The same order again, whatever became of it since, is answered as before.
    if let Some(s) = current.filter(|s| s.id == id && s.device_id == device.id) {
        return match s.order() {
            Some(o) if asked.is_none_or(|p| p == o.price) && &o.slot == slot => {
                noop(Reply::Session {
                    session: s.id.clone(),
                })
            }
            _ => Err(Rejection::RequestConflict(order_id.to_string())),
        };
    }
    let price = settle_price(slot, asked, shelves)?;
    check_price(device, price)?;
    let current = live(device, current)?;
    let mut b = Builder::new(shelves, now);
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
                s.end_unpaid_order(OrderStatus::Cancelled, &mut b.effects);
                s.phase = Phase::Settling;
                s.deadline_at = None;
                s.close_if_done(&mut b.effects);
                b.write(s);
            }
            _ if changed => b.write(s),
            _ => {}
        }
    }
    let available = shelves.available_after(slot, &b.effects);
    if available == Some(0) {
        return Err(Rejection::SoldOut(slot.clone()));
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
            reserved: available.is_some(),
        }),
        now,
    );
    if available.is_some() {
        s.stock(slot, StockChange::Reserve, &mut b.effects);
    }
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
    shelves: &Shelves,
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
    let mut b = Builder::new(shelves, now);
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
                s.end_unpaid_order(OrderStatus::Cancelled, &mut b.effects);
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
