//! Checks on the store's refund rows: listed while pending, and a send schedule that lets one
//! sender at a time hold a refund (claims, leases, releases and the sweep's re-sends).

use std::sync::Arc;

use vendpay_domain::*;

use super::{device_record, id, join_all, open_session, Store, T0};
use crate::ports::*;

/// A session of 700 ended at `T0 + 1000`, its one refund pending and written: the ended session and
/// the refund's row in a given status (schedule reset, as a status change writes it).
async fn one_pending_refund<S: Store>(
    store: &S,
) -> (Session, impl Fn(RefundStatus) -> RefundRecord) {
    store
        .register(&device_record("vm-1", Mode::PayFirst))
        .await
        .expect("register");
    let s = open_session(store, "vm-1", "T1", 700, 0).await;
    let device = store
        .device(&id("vm-1"))
        .await
        .expect("read")
        .expect("exists")
        .device;
    let t = end_session(
        &device,
        Some(&s),
        None,
        &Shelves::NONE,
        Timestamp::from_millis(T0 + 1000),
    )
    .expect("end");
    let ended = t.session(&s.id).expect("written").clone();
    let r = ended.refunds[0].clone();
    let session = s.id.clone();
    let row = move |status| RefundRecord {
        refund_id: r.id.clone(),
        session: session.clone(),
        trade_no: r.trade_no.clone(),
        amount: r.amount,
        status,
        issued_at: r.issued_at,
        attempts: 0,
        generation: 0,
        in_flight_until: None,
    };
    store
        .commit(&Commit {
            sessions: vec![ended.clone()],
            refunds: vec![row(RefundStatus::Pending)],
            ..Commit::default()
        })
        .await
        .expect("end commit");
    (ended, row)
}

pub(super) async fn pending_refunds_are_listed_until_final<S: Store>(store: Arc<S>) {
    let (ended, row) = one_pending_refund(&*store).await;
    let r = ended.refunds[0].clone();
    let now = Timestamp::from_millis(T0 + 1000);
    assert_eq!(
        store
            .pending_refunds(Timestamp::FAR_FUTURE, 10)
            .await
            .expect("pending"),
        vec![row(RefundStatus::Pending)]
    );
    let t = settle_refund(&ended, &r.id, RefundOutcome::Succeeded, now).expect("settle");
    store
        .commit(&Commit {
            sessions: t.sessions.clone(),
            refunds: vec![row(RefundStatus::Succeeded)],
            ..Commit::default()
        })
        .await
        .expect("settle commit");
    assert_eq!(
        store
            .pending_refunds(Timestamp::FAR_FUTURE, 10)
            .await
            .expect("pending"),
        vec![]
    );
    assert_eq!(
        store.refund(&r.id).await.expect("refund"),
        Some(row(RefundStatus::Succeeded))
    );
}

fn send(refund_id: &RefundId, when: SendCondition, until: Option<i64>, next: i64) -> Commit {
    Commit {
        send: Some(RefundSend {
            refund_id: refund_id.clone(),
            when,
            in_flight_until: until.map(Timestamp::from_millis),
            next_attempt_at: Timestamp::from_millis(next),
        }),
        ..Commit::default()
    }
}

fn claim(now: i64, generation: u32, attempts: u32) -> SendCondition {
    SendCondition::Claim {
        now: Timestamp::from_millis(now),
        generation,
        attempts,
    }
}

fn resend(now: i64, due_by: i64, generation: u32) -> SendCondition {
    SendCondition::Resend {
        now: Timestamp::from_millis(now),
        due_by: Timestamp::from_millis(due_by),
        generation,
    }
}

pub(super) async fn a_refund_is_sent_by_one_sender_at_a_time<S: Store>(store: Arc<S>) {
    let (ended, row) = one_pending_refund(&*store).await;
    let r = ended.refunds[0].clone();
    let issued = T0 + 1000;
    let pending = |due_by: i64| {
        let store = store.clone();
        async move {
            store
                .pending_refunds(Timestamp::from_millis(due_by), 10)
                .await
                .expect("pending")
                .len()
        }
    };
    let read = || {
        let store = store.clone();
        let id = r.id.clone();
        async move { store.refund(&id).await.expect("read").expect("row") }
    };
    let conflict = |r: Result<(), StoreError>| matches!(r, Err(StoreError::Conflict(_)));
    // A new refund's next attempt is its issue; nothing sent, generation 0.
    assert_eq!(pending(issued - 1).await, 0);
    assert_eq!(pending(issued).await, 1);
    assert_eq!(read().await, row(RefundStatus::Pending));

    // Ten senders race for it: exactly one holds it, and one attempt is counted.
    let now = issued + 10;
    let lease = now + 60_000;
    let racers = (0..10).map(|_| {
        let store = store.clone();
        let c = send(&r.id, claim(now, 0, 0), Some(lease), lease);
        async move { store.commit(&c).await }
    });
    let results = join_all(racers.collect()).await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "one send at a time: {results:?}"
    );
    assert!(results.iter().all(|r| r.is_ok() || conflict(r.clone())));
    let held = read().await;
    assert_eq!(
        (held.attempts, held.in_flight_until),
        (1, Some(Timestamp::from_millis(lease)))
    );
    // While held it is not due for the sweep, and the sweep cannot take it.
    assert_eq!(pending(lease - 1).await, 0);
    assert!(conflict(
        store
            .commit(&send(&r.id, resend(now + 1, now + 1, 0), None, now + 1))
            .await
    ));
    // A lease that ran out (its sender crashed) can be taken over, by a claim that knows the count;
    // the old holder then releases nothing.
    let lease2 = lease + 60_000;
    assert!(conflict(
        store
            .commit(&send(&r.id, claim(lease, 0, 0), Some(lease2), lease2))
            .await
    ));
    store
        .commit(&send(&r.id, claim(lease, 0, 1), Some(lease2), lease2))
        .await
        .expect("expired lease taken over");
    assert_eq!(read().await.attempts, 2);
    assert!(conflict(
        store
            .commit(&send(
                &r.id,
                SendCondition::HeldUntil(Timestamp::from_millis(lease)),
                None,
                lease + 5
            ))
            .await
    ));
    // The holder releases it with its next attempt; then it is free and due at that time.
    let next = lease + 5_000;
    store
        .commit(&send(
            &r.id,
            SendCondition::HeldUntil(Timestamp::from_millis(lease2)),
            None,
            next,
        ))
        .await
        .expect("release");
    assert_eq!(read().await.in_flight_until, None);
    assert_eq!(pending(next - 1).await, 0);
    assert_eq!(pending(next).await, 1);
    // The sweep takes it only while still overdue and of the generation it read: two sweeps, one
    // re-send, and the messages of the old generation can no longer claim it.
    let sweep_at = next + 70_000;
    let take = send(&r.id, resend(sweep_at, next, 0), None, sweep_at);
    store.commit(&take).await.expect("sweep takes it");
    assert!(conflict(store.commit(&take).await));
    assert_eq!(read().await.generation, 1);
    let lease3 = sweep_at + 60_000;
    assert!(conflict(
        store
            .commit(&send(
                &r.id,
                claim(sweep_at + 1, 0, 2),
                Some(lease3),
                lease3
            ))
            .await
    ));
    store
        .commit(&send(
            &r.id,
            claim(sweep_at + 1, 1, 2),
            Some(lease3),
            lease3,
        ))
        .await
        .expect("the new generation's message claims it");
    // A final refund is never claimed again; its row is rewritten, schedule reset.
    let t = settle_refund(
        &ended,
        &r.id,
        RefundOutcome::Succeeded,
        Timestamp::from_millis(sweep_at),
    )
    .expect("settle");
    store
        .commit(&Commit {
            sessions: t.sessions.clone(),
            refunds: vec![row(RefundStatus::Succeeded)],
            ..Commit::default()
        })
        .await
        .expect("settle commit");
    assert!(conflict(
        store
            .commit(&send(
                &r.id,
                claim(lease3 + 1, 0, 0),
                Some(lease3 * 2),
                lease3 * 2
            ))
            .await
    ));
    assert_eq!(pending(i64::MAX).await, 0);
    assert_eq!(read().await, row(RefundStatus::Succeeded));
}
