//! Timers, the refund channel and the worker, on tokio's paused clock (no real sleeping).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code asserts by panicking

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::sync::mpsc::error::TryRecvError;
use vendpay_app::{
    DeadlineMessage, DeadlineScheduler, DeviceStore, Ledger, RefundMessage, RefundQueue,
    RefundVerdict, SessionStore,
};
use vendpay_domain::{Mode, Phase, RefundStatus, SessionId, Timestamp, Windows};
use vendpay_store_sqlite::{
    channels, ChannelRefundQueue, Location, SqliteStore, TimerScheduler, Worker,
};

fn at(secs: i64) -> Timestamp {
    Timestamp::from_millis(T0 + secs * 1000)
}

#[tokio::test(start_paused = true)]
async fn a_deadline_fires_when_due_and_not_before() {
    let clock = TokioClock::at(T0);
    let (scheduler, mut rx) = TimerScheduler::new(clock);
    let message = DeadlineMessage {
        session: id("S1"),
        at: at(25),
    };
    scheduler.schedule(&message).await.expect("scheduled");
    tokio::time::sleep(Duration::from_millis(24_900)).await;
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty), "fired early");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.try_recv(), Ok(message));
}

#[tokio::test(start_paused = true)]
async fn an_overdue_deadline_fires_at_once_and_several_keep_their_order() {
    let clock = TokioClock::at(T0);
    let (scheduler, mut rx) = TimerScheduler::new(clock);
    let late = DeadlineMessage {
        session: id("S-late"),
        at: at(-10),
    };
    let soon = DeadlineMessage {
        session: id("S-soon"),
        at: at(5),
    };
    let later = DeadlineMessage {
        session: id("S-later"),
        at: at(300),
    };
    for m in [&later, &soon, &late] {
        scheduler.schedule(m).await.expect("scheduled");
    }
    let start = tokio::time::Instant::now();
    let mut got = Vec::new();
    for _ in 0..3 {
        let m = rx.recv().await.expect("message");
        got.push((m.session.clone(), start.elapsed().as_secs()));
    }
    let s = |x: &str| -> SessionId { id(x) };
    assert_eq!(
        got,
        vec![(s("S-late"), 0), (s("S-soon"), 5), (s("S-later"), 300)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_stopped_worker_makes_dispatch_fail_loudly() {
    let (scheduler, rx) = TimerScheduler::new(TokioClock::at(T0));
    drop(rx);
    let m = DeadlineMessage {
        session: id("S1"),
        at: at(1),
    };
    assert!(scheduler.schedule(&m).await.is_err());
    let (queue, rx) = ChannelRefundQueue::new();
    let r = RefundMessage {
        refund_id: id("R1"),
        session: id("S1"),
        generation: 0,
    };
    let mut rx = rx;
    queue.enqueue(&r).await.expect("enqueued");
    assert_eq!(rx.recv().await, Some(r.clone()));
    drop(rx);
    assert!(queue.enqueue(&r).await.is_err());
}

/// Pay 10.00, buy 3.50, wait: the timer settles the session at +300 s, the worker sends the 6.50 refund,
/// Alipay answers "try again" twice, and the worker retries after 1 s and 2 s until it succeeds.
#[tokio::test(start_paused = true)]
async fn the_worker_settles_a_due_session_and_retries_its_refund_with_backoff() {
    let clock = TokioClock::at(T0);
    let store = Arc::new(
        SqliteStore::open_with_clock(Location::Memory, clock.clone())
            .await
            .expect("open"),
    );
    store
        .register(&device_record("vm-1", Mode::PayFirst))
        .await
        .expect("register");
    let (scheduler, queue, receivers) = channels(clock.clone());
    let ledger = Ledger::new(
        store.clone(),
        Arc::new(scheduler),
        Arc::new(queue),
        clock.clone(),
        Windows::default(),
    );
    let gateway = ScriptedGateway::new(vec![
        RefundVerdict::Retry("SYSTEM_ERROR".into()),
        RefundVerdict::Retry("UNKNOW".into()),
    ]);
    let start = tokio::time::Instant::now();
    let worker = Worker::new(ledger.clone(), gateway.clone())
        .with_sweep(None)
        .spawn(receivers);

    let dev = id("vm-1");
    let outcome = ledger
        .payment(&dev, &payment("T1", 1000, at(0)))
        .await
        .expect("pay");
    let answer = ledger
        .purchase(&dev, &id("r1"), &id("A1"), cny(350))
        .await
        .expect("buy");
    assert!(answer.approved());
    ledger.vend(&dev, &id("r1"), true).await.expect("vend");

    tokio::time::sleep(Duration::from_secs(299)).await;
    assert!(
        gateway.calls().is_empty(),
        "nothing may happen before the deadline"
    );
    let s = store
        .session(&outcome.session)
        .await
        .expect("read")
        .expect("session");
    assert_eq!(s.phase, Phase::Open);

    let closed = eventually(120, || async {
        store
            .session(&outcome.session)
            .await
            .ok()
            .flatten()
            .is_some_and(|s| s.phase == Phase::Closed)
    })
    .await;
    assert!(closed, "the session must close once its refund succeeded");
    let calls = gateway.calls();
    let times: Vec<u64> = calls
        .iter()
        .map(|(_, t)| t.duration_since(start).as_secs())
        .collect();
    assert_eq!(
        times,
        vec![300, 301, 303],
        "deadline at 300 s, then backoff 1 s, 2 s"
    );
    assert!(
        calls.iter().all(|(o, _)| o == &calls[0].0),
        "same id and amount every time"
    );
    assert_eq!(calls[0].0.amount, cny(650));
    let row = store
        .refund(&calls[0].0.refund_id)
        .await
        .expect("read")
        .expect("row");
    assert_eq!(row.status, RefundStatus::Succeeded);
    assert!(store
        .pending_refunds(Timestamp::FAR_FUTURE, 10)
        .await
        .expect("pending")
        .is_empty());
    worker.abort();
}

/// A refund message repeated while its first delivery is still retrying is not executed twice.
#[tokio::test(start_paused = true)]
async fn a_duplicate_refund_message_does_not_race_the_one_in_flight() {
    let clock = TokioClock::at(T0);
    let store = Arc::new(
        SqliteStore::open_with_clock(Location::Memory, clock.clone())
            .await
            .expect("open"),
    );
    store
        .register(&device_record("vm-1", Mode::PayFirst))
        .await
        .expect("register");
    let (scheduler, queue, receivers) = channels(clock.clone());
    let queue = Arc::new(queue);
    let ledger = Ledger::new(
        store.clone(),
        Arc::new(scheduler),
        queue.clone(),
        clock.clone(),
        Windows::default(),
    );
    let gateway = ScriptedGateway::new(vec![
        RefundVerdict::Retry("UNKNOW".into()),
        RefundVerdict::Retry("UNKNOW".into()),
        RefundVerdict::Retry("UNKNOW".into()),
    ]);
    let worker = Worker::new(ledger.clone(), gateway.clone())
        .with_sweep(None)
        .spawn(receivers);
    let dev = id("vm-1");
    ledger
        .payment(&dev, &payment("T1", 500, at(0)))
        .await
        .expect("pay");
    let ended = ledger.end(&dev).await.expect("end");
    let refund = ended.refunds[0].clone();
    // Retries at +1 s, +2 s, +4 s; duplicates arrive in between.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        queue
            .enqueue(&RefundMessage {
                refund_id: refund.id.clone(),
                session: ended.id.clone(),
                generation: 0,
            })
            .await
            .expect("duplicate");
    }
    let done = eventually(30, || async {
        store
            .refund(&refund.id)
            .await
            .ok()
            .flatten()
            .is_some_and(|r| r.status == RefundStatus::Succeeded)
    })
    .await;
    assert!(done);
    assert_eq!(
        gateway.calls().len(),
        4,
        "three retries and the success, no parallel sends"
    );
    worker.abort();
}
