//! Checks through the `Ledger` service: racing purchases and notifications, a full pay-first flow,
//! commits that fit the write limit, the sweep, one id namespace, and sending refunds.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use vendpay_domain::*;

use super::fakes::{answering, ManualClock, Recorder};
use super::limited::{Limited, MAX_WRITE_ACTIONS};
use super::{cny, device_record, id, join_all, open_session, payment, Store, T0};
use crate::ledger::{AppError, Ledger, RefundAttempt, RefundVerdict};
use crate::ports::*;

pub(super) fn ledger<S: Store>(store: Arc<S>) -> (Ledger, Arc<Recorder>, Arc<ManualClock>) {
    let rec = Arc::new(Recorder::default());
    let clock = Arc::new(ManualClock::at(T0));
    let ledger = Ledger::new(
        store,
        rec.clone(),
        rec.clone(),
        clock.clone(),
        Windows::default(),
    );
    (ledger, rec, clock)
}

pub(super) async fn ledger_racing_purchases_never_overspend<S: Store>(store: Arc<S>) {
    store
        .register(&device_record("vm-1", Mode::PayFirst))
        .await
        .expect("register");
    let (ledger, _, _) = ledger(store.clone());
    ledger
        .payment(&id("vm-1"), &payment("T1", 1000))
        .await
        .expect("pay");
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let ledger = ledger.clone();
            async move {
                ledger
                    .purchase(&id("vm-1"), &id(&format!("r{i}")), &id("A1"), cny(300))
                    .await
            }
        })
        .collect();
    let answers = join_all(tasks).await;
    let approved = answers
        .iter()
        .filter(|a| matches!(a, Ok(a) if a.approved()))
        .count();
    assert_eq!(
        approved, 3,
        "10.00 buys exactly three 3.00 items: {answers:?}"
    );
    let s = ledger
        .current(&id("vm-1"))
        .await
        .expect("read")
        .expect("session");
    assert_eq!((s.balance, s.held), (cny(100), cny(900)));
    s.check_invariant().expect("invariant");
}

pub(super) async fn ledger_duplicate_notifications_credit_once<S: Store>(store: Arc<S>) {
    store
        .register(&device_record("vm-1", Mode::PayFirst))
        .await
        .expect("register");
    let (ledger, rec, _) = ledger(store.clone());
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let ledger = ledger.clone();
            async move { ledger.payment(&id("vm-1"), &payment("T1", 1000)).await }
        })
        .collect();
    let outcomes = join_all(tasks).await;
    let first = outcomes[0].clone().expect("credited");
    assert!(
        outcomes.iter().all(|o| o.as_ref() == Ok(&first)),
        "{outcomes:?}"
    );
    let s = ledger
        .current(&id("vm-1"))
        .await
        .expect("read")
        .expect("session");
    assert_eq!(s.balance, cny(1000), "credited exactly once");
    assert_eq!(s.payments.len(), 1);
    let scheduled = rec.deadlines.lock().map(|d| d.len()).unwrap_or(0);
    assert_eq!(scheduled, 1, "one deadline for one payment");
}

pub(super) async fn ledger_full_pay_first_flow<S: Store>(store: Arc<S>) {
    store
        .register(&device_record("vm-1", Mode::Mixed))
        .await
        .expect("register");
    let (ledger, rec, clock) = ledger(store.clone());
    let dev: DeviceId = id("vm-1");
    let outcome = ledger
        .payment(&dev, &payment("T1", 1000))
        .await
        .expect("pay");
    for (r, delivered) in [("r1", true), ("r2", false)] {
        let a = ledger
            .purchase(&dev, &id(r), &id("A1"), cny(350))
            .await
            .expect("buy");
        assert!(a.approved());
        ledger.vend(&dev, &id(r), delivered).await.expect("vend");
    }
    // A retried purchase gets the same answer and holds nothing more.
    let again = ledger
        .purchase(&dev, &id("r1"), &id("A1"), cny(350))
        .await
        .expect("retry");
    assert!(again.approved());
    assert_eq!(
        ledger
            .sweep(100, Duration::from_secs(60))
            .await
            .expect("sweep")
            .deadlines_settled,
        0
    );
    clock.advance(Duration::from_secs(301));
    let report = ledger
        .sweep(100, Duration::from_secs(60))
        .await
        .expect("sweep");
    assert_eq!(report.deadlines_settled, 1);
    assert!(
        !ledger
            .deadline(&outcome.session)
            .await
            .expect("late deadline"),
        "settled once"
    );
    let refunds = rec.refunds.lock().map(|r| r.clone()).unwrap_or_default();
    assert_eq!(refunds.len(), 1);
    let row = store
        .refund(&refunds[0].refund_id)
        .await
        .expect("read")
        .expect("row");
    assert_eq!(row.amount, cny(650));
    assert_eq!(
        ledger
            .refund_result(&row.refund_id, RefundOutcome::Unknown)
            .await,
        Ok(RefundStatus::Pending)
    );
    // Still pending after the grace period: the sweep re-sends it.
    clock.advance(Duration::from_secs(120));
    let report = ledger
        .sweep(100, Duration::from_secs(60))
        .await
        .expect("sweep");
    assert_eq!(report.refunds_resent, 1);
    assert_eq!(
        ledger
            .refund_result(&row.refund_id, RefundOutcome::Succeeded)
            .await,
        Ok(RefundStatus::Succeeded)
    );
    let s = store
        .session(&outcome.session)
        .await
        .expect("read")
        .expect("session");
    assert_eq!(s.phase, Phase::Closed);
    assert_eq!(
        store
            .pending_refunds(Timestamp::FAR_FUTURE, 10)
            .await
            .expect("pending"),
        vec![]
    );
}

pub(super) async fn ledger_a_hundred_cent_top_ups_settle_in_writes_that_fit<S: Store>(
    store: Arc<S>,
) {
    store
        .register(&device_record("vm-1", Mode::PayFirst))
        .await
        .expect("register");
    let limited = Arc::new(Limited {
        inner: store.clone(),
        largest: Mutex::new(0),
    });
    let rec = Arc::new(Recorder::default());
    let clock = Arc::new(ManualClock::at(T0));
    let ledger = Ledger::new(
        limited.clone(),
        rec.clone(),
        rec.clone(),
        clock.clone(),
        Windows::default(),
    );
    let dev: DeviceId = id("vm-1");
    let mut refused = 0;
    for i in 0..100 {
        let o = ledger
            .payment(&dev, &payment(&format!("T{i}"), 1))
            .await
            .expect("every top-up is answered");
        if matches!(o.disposition, Disposition::Refused(_)) {
            refused += 1;
        }
        clock.advance(Duration::from_millis(500));
    }
    clock.advance(Duration::from_secs(301));
    let report = ledger
        .sweep(100, Duration::from_secs(60))
        .await
        .expect("the settlement commits");
    assert_eq!(report.deadlines_settled, 1, "{report:?}");
    let largest = limited.largest.lock().map(|l| *l).unwrap_or(usize::MAX);
    assert!(
        largest <= MAX_WRITE_ACTIONS,
        "largest commit {largest} actions"
    );
    // Every cent is on its way back: the session's refunds plus the refused top-ups (the sweep may
    // have re-sent some of the latter: count each refund once).
    let sent: std::collections::BTreeSet<RefundId> = rec
        .refunds
        .lock()
        .map(|r| r.iter().map(|m| m.refund_id.clone()).collect())
        .unwrap_or_default();
    let mut total = 0;
    for refund_id in &sent {
        let row = store.refund(refund_id).await.expect("read").expect("row");
        total += row.amount.minor();
    }
    assert_eq!(
        refused,
        100 - MAX_PAYMENTS,
        "the top-ups past the 50th are refused"
    );
    assert_eq!(total, 100, "{} refunds", sent.len());
    // The machine takes the next customer.
    let o = ledger
        .payment(&dev, &payment("NEXT", 500))
        .await
        .expect("next customer");
    assert_eq!(o.disposition, Disposition::Credited);
}

pub(super) async fn ledger_the_sweep_goes_on_past_a_session_that_fails<S: Store>(store: Arc<S>) {
    for d in ["vm-1", "vm-2"] {
        store
            .register(&device_record(d, Mode::PayFirst))
            .await
            .expect("register");
    }
    // vm-1's session is corrupt (its balance is not covered by its payments) and due first.
    let mut bad = open_session(&*store, "vm-1", "BAD", 500, 0).await;
    bad.balance = cny(900);
    bad.version += 1;
    store
        .commit(&Commit {
            sessions: vec![bad.clone()],
            ..Commit::default()
        })
        .await
        .expect("corrupt row written");
    let good = open_session(&*store, "vm-2", "GOOD", 500, 1000).await;
    let (ledger, rec, clock) = ledger(store.clone());
    clock.advance(Duration::from_secs(400));
    // A page of one: the bad session fills it, and the sweep must still reach past it.
    let report = ledger.sweep(1, Duration::from_secs(60)).await;
    let report = report.expect("one bad session does not stop the sweep");
    assert_eq!(report.deadlines_settled, 1, "{report:?}");
    let s = store.session(&good.id).await.expect("read").expect("row");
    assert_ne!(s.phase, Phase::Open, "vm-2 was settled after vm-1 failed");
    let refunds = rec.refunds.lock().map(|r| r.len()).unwrap_or(0);
    assert_eq!(refunds, 1);
    // A sweep out of time for deadlines still re-sends the refunds that are due again.
    clock.advance(Duration::from_secs(120));
    let report = ledger
        .sweep_within(100, Duration::from_secs(60), Duration::ZERO)
        .await
        .expect("sweep");
    assert_eq!(
        (
            report.deadlines_settled,
            report.deadlines_deferred,
            report.refunds_resent
        ),
        (0, 1, 1),
        "{report:?}"
    );
    // The bad one is still due, to be retried by the next sweep.
    let due = store.due(clock.now(), 10).await.expect("due");
    assert!(due.contains(&bad.id), "{due:?}");
}

pub(super) async fn ledger_order_ids_and_purchase_ids_share_one_namespace<S: Store>(store: Arc<S>) {
    store
        .register(&device_record("vm-1", Mode::Mixed))
        .await
        .expect("register");
    let (ledger, _, clock) = ledger(store.clone());
    let dev: DeviceId = id("vm-1");
    ledger
        .payment(&dev, &payment("T1", 1000))
        .await
        .expect("pay");
    let a = ledger
        .purchase(&dev, &id("42"), &id("A1"), cny(300))
        .await
        .expect("buy");
    assert!(a.approved());
    ledger.vend(&dev, &id("42"), true).await.expect("vend");
    ledger.end(&dev).await.expect("end");
    clock.advance(Duration::from_secs(1));
    // An order under the id purchase 42 used: refused, so its delivery report cannot land on 42.
    let placed = ledger
        .order(&dev, &id("42"), &id("B2"), Some(cny(400)))
        .await;
    assert!(
        matches!(
            placed,
            Err(AppError::Rejected(Rejection::RequestConflict(_)))
        ),
        "{placed:?}"
    );
    // And the reverse: a purchase under an order's id.
    ledger
        .order(&dev, &id("43"), &id("B2"), Some(cny(400)))
        .await
        .expect("order");
    let bought = ledger.purchase(&dev, &id("43"), &id("A1"), cny(300)).await;
    assert!(
        matches!(
            bought,
            Err(AppError::Rejected(Rejection::RequestConflict(_)))
        ),
        "{bought:?}"
    );
    // The order itself is still paid and confirmed under its id.
    let o = ledger
        .payment(&dev, &payment("T2", 400))
        .await
        .expect("pay order");
    assert_eq!(o.disposition, Disposition::OrderPaid);
    let s = ledger
        .vend(&dev, &id("43"), true)
        .await
        .expect("vend order");
    assert_eq!(s.order().map(|o| o.status), Some(OrderStatus::Delivered));
}

pub(super) async fn ledger_one_send_of_a_refund_at_a_time_and_no_resend_storm<S: Store>(
    store: Arc<S>,
) {
    store
        .register(&device_record("vm-1", Mode::PayFirst))
        .await
        .expect("register");
    let (ledger, rec, clock) = ledger(store.clone());
    let dev: DeviceId = id("vm-1");
    let outcome = ledger
        .payment(&dev, &payment("T1", 500))
        .await
        .expect("pay");
    ledger.end(&dev).await.expect("end");
    let issued = rec
        .refunds
        .lock()
        .map(|r| r[0].clone())
        .expect("one refund issued");
    assert_eq!(issued.generation, 0);
    let refund_id = issued.refund_id.clone();
    let unknown = || answering(RefundVerdict::Retry("an answer we cannot verify".into()));
    let retry_in = Duration::from_secs(5);

    // A copy delivered while the first send is in flight never reaches Alipay.
    let gw = unknown();
    if let Ok(mut l) = gw.ledger.lock() {
        *l = Some((ledger.clone(), issued.clone()));
    }
    let first = ledger.execute_refund(&issued, &gw, retry_in).await;
    assert!(
        matches!(first, Err(AppError::RefundPending(..))),
        "{first:?}"
    );
    assert_eq!(gw.calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(
        gw.copy.lock().map(|c| c.clone()).expect("copy ran"),
        Some(Ok(RefundAttempt::InFlight))
    );

    // The sweep re-sends only a refund whose next attempt is overdue by its grace, once.
    let grace = Duration::from_secs(60);
    let resent = |ledger: Ledger| async move {
        ledger
            .sweep(100, grace)
            .await
            .expect("sweep")
            .refunds_resent
    };
    clock.advance(Duration::from_secs(30));
    assert_eq!(resent(ledger.clone()).await, 0, "its retry is on its way");
    clock.advance(Duration::from_secs(40));
    assert_eq!(resent(ledger.clone()).await, 1, "its retry is overdue");
    clock.advance(Duration::from_secs(10));
    assert_eq!(resent(ledger.clone()).await, 0, "re-sent a moment ago");
    clock.advance(Duration::from_secs(60));
    assert_eq!(resent(ledger.clone()).await, 1, "that message was lost too");
    let messages = rec.refunds.lock().map(|r| r.clone()).expect("messages");
    let generations: Vec<u32> = messages.iter().map(|m| m.generation).collect();
    assert_eq!(generations, vec![0, 1, 2]);

    // The first message, arriving late from a backlog, is dropped: the sweep's newest carries it.
    assert_eq!(
        ledger
            .execute_refund(&issued, &answering(RefundVerdict::Succeeded), retry_in)
            .await,
        Ok(RefundAttempt::Superseded)
    );
    let newest = messages[2].clone();

    // After sends whose answers were lost, a refusal a paid refund also meets decides nothing.
    let closed = answering(RefundVerdict::FailedUnlessPaid("TRADE_HAS_CLOSE".into()));
    let r = ledger.execute_refund(&newest, &closed, retry_in).await;
    assert!(matches!(r, Err(AppError::RefundPending(..))), "{r:?}");
    assert_eq!(closed.calls.load(std::sync::atomic::Ordering::SeqCst), 1);

    // An hour without a verified verdict: raised stuck, once, and still pending.
    clock.advance(Duration::from_secs(3600));
    for _ in 0..2 {
        let r = ledger.execute_refund(&newest, &unknown(), retry_in).await;
        assert!(matches!(r, Err(AppError::RefundPending(..))), "{r:?}");
        clock.advance(Duration::from_secs(10));
    }
    let s = store
        .session(&outcome.session)
        .await
        .expect("read")
        .expect("session");
    assert!(s.refund_is_stuck(&refund_id));
    let raised = s
        .anomalies
        .iter()
        .filter(|a| matches!(a.kind, AnomalyKind::RefundStuck { .. }))
        .count();
    assert_eq!(raised, 1);
    assert_eq!(
        s.refund(&refund_id).map(|r| r.status),
        Some(RefundStatus::Pending)
    );
    assert_eq!(s.phase, Phase::Settling);

    // A late verified success settles it.
    assert_eq!(
        ledger
            .execute_refund(&newest, &answering(RefundVerdict::Succeeded), retry_in)
            .await,
        Ok(RefundAttempt::Settled(RefundStatus::Succeeded))
    );
    let s = store
        .session(&outcome.session)
        .await
        .expect("read")
        .expect("session");
    assert_eq!(s.phase, Phase::Closed);
    assert_eq!(
        store
            .pending_refunds(Timestamp::FAR_FUTURE, 10)
            .await
            .expect("pending"),
        vec![]
    );
}

pub(super) async fn ledger_a_first_send_refused_in_a_verified_answer_fails<S: Store>(
    store: Arc<S>,
) {
    store
        .register(&device_record("vm-1", Mode::PayFirst))
        .await
        .expect("register");
    let (ledger, rec, _) = ledger(store.clone());
    let dev: DeviceId = id("vm-1");
    ledger
        .payment(&dev, &payment("T1", 500))
        .await
        .expect("pay");
    ledger.end(&dev).await.expect("end");
    let issued = rec
        .refunds
        .lock()
        .map(|r| r[0].clone())
        .expect("one refund issued");
    // Nothing was sent before, so Alipay's refusal is about this refund.
    let closed = answering(RefundVerdict::FailedUnlessPaid("TRADE_HAS_CLOSE".into()));
    assert_eq!(
        ledger
            .execute_refund(&issued, &closed, Duration::from_secs(5))
            .await,
        Ok(RefundAttempt::Settled(RefundStatus::Failed))
    );
    // A verified success that arrives later still wins.
    assert_eq!(
        ledger
            .refund_result(&issued.refund_id, RefundOutcome::Succeeded)
            .await,
        Ok(RefundStatus::Succeeded)
    );
}
