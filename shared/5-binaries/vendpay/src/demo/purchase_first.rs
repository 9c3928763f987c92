//! The purchase-first scenarios: an over-paid order, an order whose vend fails, and a payment that
//! comes after its order expired.

use std::time::Instant;

use vendpay_client::MachineKeys;

use super::checks::Expect;
use super::view::{list, minor, money, text};
use super::{Demo, Step};

/// Registers a purchase-first machine and places order `o-1` for `slot` at `price`. Returns the
/// machine and the order's session id.
async fn ordered(d: &Demo, id: &str, slot: &str, price: u64) -> Step<(MachineKeys, String)> {
    let m = d.register(id, "purchase_first").await?;
    let o = d.place_order(&m, "o-1", slot, price).await?;
    Ok((m, text(&o, "session_id").to_owned()))
}

pub(super) async fn overpaid(d: &mut Demo) -> Step<()> {
    let (m, session) = ordered(d, "vm-order", "C1", 400).await?;
    let trade = d.pay(&m, 500).await?;
    let paid_at = Instant::now();
    let s = d
        .wait_status(&m, "the order to be paid", d.soon(), |s| {
            s["state"] == "paid"
        })
        .await?;
    d.say(format!(
        "machine sees order {} paid ({} for a {} item): it vends now",
        text(&s, "order_id"),
        money(&s["paid"]),
        money(&s["price"])
    ));
    let detail = d.session(&session).await?;
    d.check(
        list(&detail, "refunds")
            .iter()
            .any(|r| minor(&r["amount"]) == 100 && r["reason"] == "overpayment"),
        "the 1.00 over-payment refund was recorded with the payment",
    );
    d.watch_session(&session, "the over-payment refund", d.soon(), |s| {
        list(s, "refunds")
            .iter()
            .any(|r| r["status"] == "succeeded")
    })
    .await?;
    d.say(format!(
        "over-payment refunded {:.2} s after the customer paid, before the machine vended",
        paid_at.elapsed().as_secs_f64()
    ));
    d.vend(&m, "o-1", true).await?;
    d.watch_session(&session, "the order to close", d.soon(), |s| {
        s["phase"] == "closed"
    })
    .await?;
    d.verify(
        &session,
        &trade,
        Expect::closed(400, &[(100, "overpayment")]),
    )
    .await
}

pub(super) async fn vend_failed(d: &mut Demo) -> Step<()> {
    let (m, session) = ordered(d, "vm-jammed", "D1", 400).await?;
    let trade = d.pay(&m, 400).await?;
    d.wait_status(&m, "the order to be paid", d.soon(), |s| {
        s["state"] == "paid"
    })
    .await?;
    d.say("machine sees the order paid and tries to vend; the item jams");
    d.vend(&m, "o-1", false).await?;
    let soon = d.soon();
    d.settle(
        &session,
        &trade,
        "the full refund",
        soon,
        Expect::closed(0, &[(400, "vend_failed")]),
    )
    .await
}

pub(super) async fn late_payment(d: &mut Demo) -> Step<()> {
    let (m, order_session) = ordered(d, "vm-late", "E1", 200).await?;
    d.say(format!(
        "the customer walks away; waiting for the order to expire ({} s)",
        d.windows.order_payment.as_secs()
    ));
    let wait = d.windows.order_payment + d.soon();
    d.wait_status(&m, "the order to expire", wait, |s| s["state"] == "idle")
        .await?;
    let expired = d.session(&order_session).await?;
    d.say(format!(
        "order {}: {}",
        text(&expired, "order_id"),
        text(&expired, "order_status")
    ));
    d.check(
        expired["order_status"] == "expired",
        format!("the order expired ({})", text(&expired, "order_status")),
    );
    let trade = d.pay(&m, 200).await?;
    let refused = format!("r:{trade}");
    d.watch_session(&refused, "the late payment's refund", d.soon(), |s| {
        !list(s, "refunds").is_empty() && super::view::settled(s)
    })
    .await?;
    let status = d.status(&m).await?;
    d.check(
        status["state"] == "idle",
        format!("the machine stays idle ({})", text(&status, "state")),
    );
    d.verify(&refused, &trade, Expect::closed(0, &[(200, "refused_*")]))
        .await
}
