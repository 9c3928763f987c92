//! The session-level commands: addressed to one session (found by request id, refund id or
//! deadline) — the machine's vend result, the deadline, a refund's verdict or its absence. Each is
//! (session, command, now) → [`Decision`], as the device-level commands in `commands.rs`.

use super::aggregate::*;
use super::shelves::Shelves;
use super::types::*;
use crate::ids::{RefundId, RequestId};
use crate::inventory::StockChange;
use crate::time::Timestamp;

/// Refund verdicts never touch stock.
static NO_SHELVES: Shelves = Shelves::NONE;

// ---------------------------------------------------------------------------------------------------
// Session-level commands: addressed to one session (found by request id, refund id or deadline).
// ---------------------------------------------------------------------------------------------------

/// The machine reports the vend of a purchase (or of a paid order, whose id is the request id). A
/// purchase that reserved an item ends its reservation: delivered → one item fewer in the slot
/// (already 0: flagged `stock_mismatch`, stays 0); failed → the item is available again.
pub fn report_vend(
    session: &Session,
    request_id: &RequestId,
    delivered: bool,
    shelves: &Shelves,
    now: Timestamp,
) -> Decision {
    let mut b = Builder::new(shelves, now);
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
            if purchase.reserved {
                let change = if delivered {
                    StockChange::Deliver
                } else {
                    StockChange::Release
                };
                vend_stock(&mut s, &purchase, change, shelves, now, &mut b.effects);
            }
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
            if purchase.reserved && delivered {
                // Its reservation ended at the deadline, but the item did go out.
                vend_stock(
                    &mut s,
                    &purchase,
                    StockChange::Remove,
                    shelves,
                    now,
                    &mut b.effects,
                );
            }
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

/// Applies a vend's stock change to the purchase's slot; an item reported out of a slot whose stock
/// is already 0 is flagged (`stock_mismatch`): the count was wrong, and it stays 0.
fn vend_stock(
    s: &mut Session,
    purchase: &Purchase,
    change: StockChange,
    shelves: &Shelves,
    now: Timestamp,
    effects: &mut Vec<Effect>,
) {
    let takes_an_item = matches!(change, StockChange::Deliver | StockChange::Remove);
    if takes_an_item && shelves.row(&purchase.slot).is_some_and(|r| r.stock == 0) {
        s.flag(
            AnomalyKind::StockMismatch {
                slot: purchase.slot.clone(),
                request_id: purchase.request_id.clone(),
            },
            now,
            effects,
        );
    }
    s.stock(&purchase.slot, change, effects);
}

/// A deadline message (delayed SQS message, schedule or sweep) for this session. Late, early, stale and
/// repeated deliveries are harmless: only a deadline that has really passed is acted on, once.
pub fn deadline_due(session: &Session, shelves: &Shelves, now: Timestamp) -> Decision {
    let mut b = Builder::new(shelves, now);
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
    let mut b = Builder::new(&NO_SHELVES, now);
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
    let mut b = Builder::new(&NO_SHELVES, now);
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
