//! The one contract every storage adapter passes (SQLite and DynamoDB alike).
//!
//! An adapter's test file calls [`run`] with a factory that gives a fresh, empty store (a new SQLite
//! database, a new DynamoDB table). Each check panics with a message naming what broke; the checks use
//! only the ports, so they say what the service relies on and nothing about how an adapter does it.

// A test suite compiled as library code (behind the `contract` feature, which only dev-dependencies
// enable): it asserts like a test, so it may unwrap, expect and panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use vendpay_domain::*;

use crate::ledger::{AppError, Ledger, RefundAttempt, RefundGateway, RefundOrder, RefundVerdict};
use crate::ports::*;

/// A store for the suite: both ports on one backend.
pub trait Store: SessionStore + DeviceStore + 'static {}
impl<T: SessionStore + DeviceStore + 'static> Store for T {}

/// Runs every check, each on a fresh store from `make`.
pub async fn run<S, F, Fut>(make: F)
where
    S: Store,
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<S>>,
{
    devices_register_once_and_keep_their_qrcode(make().await).await;
    a_commit_writes_every_row_and_reads_back(make().await).await;
    a_failed_condition_writes_nothing(make().await).await;
    session_versions_are_compare_and_set(make().await).await;
    the_device_guard_serialises_device_commands(make().await).await;
    the_deadline_index_finds_overdue_sessions_only(make().await).await;
    pending_refunds_are_listed_until_final(make().await).await;
    a_refund_is_sent_by_one_sender_at_a_time(make().await).await;
    racing_commits_on_one_version_let_exactly_one_win(make().await).await;
    ledger_racing_purchases_never_overspend(make().await).await;
    ledger_duplicate_notifications_credit_once(make().await).await;
    ledger_full_pay_first_flow(make().await).await;
    ledger_a_hundred_cent_top_ups_settle_in_writes_that_fit(make().await).await;
    ledger_the_sweep_goes_on_past_a_session_that_fails(make().await).await;
    ledger_order_ids_and_purchase_ids_share_one_namespace(make().await).await;
    ledger_one_send_of_a_refund_at_a_time_and_no_resend_storm(make().await).await;
    ledger_a_first_send_refused_in_a_verified_answer_fails(make().await).await;
}

pub const T0: i64 = 1_700_000_000_000;

fn id<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().expect("valid id in the contract suite")
}

fn cny(minor: u64) -> Money {
    Money::new(minor, Currency::Cny).expect("small amount")
}

pub fn device_record(device: &str, mode: Mode) -> DeviceRecord {
    DeviceRecord {
        device: Device {
            id: id(device),
            mode,
            currency: Currency::Cny,
        },
        name: format!("Machine {device}"),
        district: "Xuhui".into(),
        location: Some("Gate 3".into()),
        credential: "test-credential".into(),
        qrcode: None,
        created_at: Timestamp::from_millis(T0),
        current: None,
        version: 0,
    }
}

fn payment(trade: &str, minor: u64) -> IncomingPayment {
    IncomingPayment {
        trade_no: id(trade),
        merchant_trade_no: id(&format!("M{trade}")),
        amount: cny(minor),
        buyer_id: None,
        paid_at: Timestamp::from_millis(T0),
    }
}

/// Opens a session on `device` by a payment, through the domain, and commits it.
async fn open_session<S: Store>(
    store: &S,
    device: &str,
    trade: &str,
    minor: u64,
    at: i64,
) -> Session {
    let m = store
        .machine(&id(device))
        .await
        .expect("machine read")
        .expect("machine exists");
    let t = receive_payment(
        &m.record.device,
        m.current.as_ref(),
        &payment(trade, minor),
        &Windows::default(),
        Timestamp::from_millis(T0 + at),
    )
    .expect("payment accepted");
    let Reply::Payment(outcome) = t.reply.clone() else {
        panic!("payment reply expected")
    };
    let commit = Commit {
        device: Some(DeviceGuard {
            device: id(device),
            expected_version: m.record.version,
            new_current: t.current.clone(),
        }),
        sessions: t.sessions.clone(),
        trade: Some((id(trade), outcome.clone())),
        request: None,
        refunds: vec![],
        send: None,
    };
    store.commit(&commit).await.expect("commit");
    t.session(&outcome.session).expect("written").clone()
}

async fn devices_register_once_and_keep_their_qrcode<S: Store>(store: Arc<S>) {
    let rec = device_record("vm-1", Mode::Mixed);
    assert!(store.register(&rec).await.expect("register"));
    let mut other = rec.clone();
    other.name = "someone else".into();
    assert!(
        !store.register(&other).await.expect("register again"),
        "a taken id must not be registered twice"
    );
    let got = store
        .device(&id("vm-1"))
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(got, rec, "the first registration stands");
    assert_eq!(store.device(&id("vm-2")).await.expect("read"), None);
    let qr = QrCode {
        qrcode: "https://qr.alipay.com/abc".into(),
        qrcode_img_url: "https://example.com/abc.png".into(),
    };
    store.set_qrcode(&id("vm-1"), &qr).await.expect("qrcode");
    store
        .set_qrcode(&id("vm-1"), &qr)
        .await
        .expect("qrcode again");
    let got = store
        .device(&id("vm-1"))
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(got.qrcode, Some(qr));
    let m = store
        .machine(&id("vm-1"))
        .await
        .expect("machine")
        .expect("exists");
    assert_eq!((m.record.version, m.current), (0, None));
}

async fn a_commit_writes_every_row_and_reads_back<S: Store>(store: Arc<S>) {
    store
        .register(&device_record("vm-1", Mode::PayFirst))
        .await
        .expect("register");
    let s = open_session(&*store, "vm-1", "T1", 1000, 0).await;
    let m = store
        .machine(&id("vm-1"))
        .await
        .expect("machine")
        .expect("exists");
    assert_eq!(
        m.record.version, 1,
        "setting current bumps the device version"
    );
    assert_eq!(m.current.as_ref(), Some(&s));
    assert_eq!(store.session(&s.id).await.expect("read"), Some(s.clone()));
    assert_eq!(
        store.trade(&id("T1")).await.expect("trade"),
        Some(PaymentOutcome {
            session: s.id.clone(),
            disposition: Disposition::Credited
        })
    );
    assert_eq!(store.trade(&id("T2")).await.expect("trade"), None);

    // A purchase with its idempotency row, then an end with its refund row.
    let now = Timestamp::from_millis(T0 + 1000);
    let t = request_purchase(
        &m.record.device,
        m.current.as_ref(),
        &PurchaseRequest {
            request_id: id("r1"),
            slot: id("A1"),
            price: cny(300),
            session: None,
        },
        &Windows::default(),
        now,
    )
    .expect("purchase");
    let record = RequestRecord {
        device: id("vm-1"),
        request_id: id("r1"),
        reply: t.reply.clone(),
        expires_at: now.plus(Duration::from_secs(48 * 3600)),
    };
    let commit = Commit {
        device: Some(DeviceGuard {
            device: id("vm-1"),
            expected_version: 1,
            new_current: None,
        }),
        sessions: t.sessions.clone(),
        request: Some(record.clone()),
        ..Commit::default()
    };
    store.commit(&commit).await.expect("purchase commit");
    assert_eq!(
        store
            .request(&id("vm-1"), &id("r1"))
            .await
            .expect("request"),
        Some(record)
    );
    assert_eq!(
        store
            .request(&id("vm-2"), &id("r1"))
            .await
            .expect("request"),
        None
    );
    let m = store
        .machine(&id("vm-1"))
        .await
        .expect("machine")
        .expect("exists");
    assert_eq!(
        m.record.version, 1,
        "a guard alone does not bump the version"
    );
    assert_eq!(m.current.as_ref().map(|s| s.version), Some(2));

    let t = end_session(&m.record.device, m.current.as_ref(), None, now).expect("end");
    let ended = t.session(&s.id).expect("written").clone();
    let refund = &ended.refunds[0];
    let row = RefundRecord {
        refund_id: refund.id.clone(),
        session: s.id.clone(),
        trade_no: refund.trade_no.clone(),
        amount: refund.amount,
        status: RefundStatus::Pending,
        issued_at: refund.issued_at,
        attempts: 0,
        generation: 0,
        in_flight_until: None,
    };
    let commit = Commit {
        device: Some(DeviceGuard {
            device: id("vm-1"),
            expected_version: 1,
            new_current: None,
        }),
        sessions: t.sessions.clone(),
        refunds: vec![row.clone()],
        ..Commit::default()
    };
    store.commit(&commit).await.expect("end commit");
    assert_eq!(store.refund(&refund.id).await.expect("refund"), Some(row));
    assert_eq!(store.session(&s.id).await.expect("read"), Some(ended));
}

async fn a_failed_condition_writes_nothing<S: Store>(store: Arc<S>) {
    store
        .register(&device_record("vm-1", Mode::PayFirst))
        .await
        .expect("register");
    let s = open_session(&*store, "vm-1", "T1", 1000, 0).await;
    // A second payment decided on a stale read of the device (version 0): every row must be refused.
    let m = store
        .machine(&id("vm-1"))
        .await
        .expect("machine")
        .expect("exists");
    let t = receive_payment(
        &m.record.device,
        None,
        &payment("T2", 500),
        &Windows::default(),
        Timestamp::from_millis(T0),
    )
    .expect("decided");
    let Reply::Payment(outcome) = t.reply.clone() else {
        panic!("payment reply")
    };
    let commit = Commit {
        device: Some(DeviceGuard {
            device: id("vm-1"),
            expected_version: 0,
            new_current: t.current.clone(),
        }),
        sessions: t.sessions.clone(),
        trade: Some((id("T2"), outcome.clone())),
        request: Some(RequestRecord {
            device: id("vm-1"),
            request_id: id("rx"),
            reply: t.reply.clone(),
            expires_at: Timestamp::from_millis(T0),
        }),
        refunds: vec![],
        send: None,
    };
    assert!(
        matches!(store.commit(&commit).await, Err(StoreError::Conflict(_))),
        "a stale device version must be a conflict"
    );
    assert_eq!(
        store.trade(&id("T2")).await.expect("trade"),
        None,
        "trade row leaked"
    );
    assert_eq!(
        store.session(&outcome.session).await.expect("session"),
        None,
        "session leaked"
    );
    assert_eq!(
        store
            .request(&id("vm-1"), &id("rx"))
            .await
            .expect("request"),
        None,
        "request leaked"
    );
    let m = store
        .machine(&id("vm-1"))
        .await
        .expect("machine")
        .expect("exists");
    assert_eq!(m.current.map(|c| c.id), Some(s.id.clone()), "current moved");

    // A trade row that exists already is a conflict too, and takes the session write down with it.
    let mut topped = s.clone();
    topped.version += 1;
    topped.balance = cny(1500);
    let commit = Commit {
        sessions: vec![topped],
        trade: Some((id("T1"), outcome)),
        ..Commit::default()
    };
    assert!(matches!(
        store.commit(&commit).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.session(&s.id).await.expect("read"), Some(s));
}

async fn session_versions_are_compare_and_set<S: Store>(store: Arc<S>) {
    store
        .register(&device_record("vm-1", Mode::PayFirst))
        .await
        .expect("register");
    let s = open_session(&*store, "vm-1", "T1", 1000, 0).await;
    let again = Commit {
        sessions: vec![s.clone()],
        ..Commit::default()
    };
    assert!(
        matches!(store.commit(&again).await, Err(StoreError::Conflict(_))),
        "creating a session that exists must conflict"
    );
    let mut skip = s.clone();
    skip.version = 3;
    let c = Commit {
        sessions: vec![skip],
        ..Commit::default()
    };
    assert!(
        matches!(store.commit(&c).await, Err(StoreError::Conflict(_))),
        "version 3 over 1"
    );
    let mut next = s.clone();
    next.version = 2;
    next.phase = Phase::Settling;
    let c = Commit {
        sessions: vec![next.clone()],
        ..Commit::default()
    };
    store.commit(&c).await.expect("version 2 over 1");
    assert!(
        matches!(store.commit(&c).await, Err(StoreError::Conflict(_))),
        "version 2 twice"
    );
    assert_eq!(store.session(&s.id).await.expect("read"), Some(next));
}

async fn the_device_guard_serialises_device_commands<S: Store>(store: Arc<S>) {
    store
        .register(&device_record("vm-1", Mode::PayFirst))
        .await
        .expect("register");
    let unknown = Commit {
        device: Some(DeviceGuard {
            device: id("vm-404"),
            expected_version: 0,
            new_current: None,
        }),
        ..Commit::default()
    };
    assert!(
        matches!(store.commit(&unknown).await, Err(StoreError::Conflict(_))),
        "a guard on a missing device cannot hold"
    );
    let guard_only = Commit {
        device: Some(DeviceGuard {
            device: id("vm-1"),
            expected_version: 0,
            new_current: None,
        }),
        ..Commit::default()
    };
    store
        .commit(&guard_only)
        .await
        .expect("the version matches");
    open_session(&*store, "vm-1", "T1", 100, 0).await;
    assert!(
        matches!(
            store.commit(&guard_only).await,
            Err(StoreError::Conflict(_))
        ),
        "the version moved when current changed"
    );
}

async fn the_deadline_index_finds_overdue_sessions_only<S: Store>(store: Arc<S>) {
    for d in ["vm-1", "vm-2", "vm-3"] {
        store
            .register(&device_record(d, Mode::PayFirst))
            .await
            .expect("register");
    }
    // Deadlines at +300 s, +310 s, +320 s.
    let a = open_session(&*store, "vm-1", "T1", 100, 0).await;
    let b = open_session(&*store, "vm-2", "T2", 100, 10_000).await;
    let c = open_session(&*store, "vm-3", "T3", 100, 20_000).await;
    let at = |s: i64| Timestamp::from_millis(T0 + s * 1000);
    assert_eq!(
        store.due(at(299), 10).await.expect("due"),
        Vec::<SessionId>::new()
    );
    assert_eq!(
        store.due(at(300), 10).await.expect("due"),
        vec![a.id.clone()]
    );
    assert_eq!(
        store.due(at(330), 10).await.expect("due"),
        vec![a.id.clone(), b.id.clone(), c.id.clone()],
        "oldest deadline first"
    );
    assert_eq!(store.due(at(330), 2).await.expect("due").len(), 2, "limit");
    // Settled sessions leave the index.
    let t = deadline_due(&a, at(300)).expect("deadline");
    let c1 = Commit {
        sessions: t.sessions.clone(),
        ..Commit::default()
    };
    store.commit(&c1).await.expect("settle");
    assert_eq!(
        store.due(at(330), 10).await.expect("due"),
        vec![b.id.clone(), c.id.clone()]
    );
}

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
    let t = end_session(&device, Some(&s), None, Timestamp::from_millis(T0 + 1000)).expect("end");
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

async fn pending_refunds_are_listed_until_final<S: Store>(store: Arc<S>) {
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

async fn a_refund_is_sent_by_one_sender_at_a_time<S: Store>(store: Arc<S>) {
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

async fn racing_commits_on_one_version_let_exactly_one_win<S: Store>(store: Arc<S>) {
    store
        .register(&device_record("vm-1", Mode::PayFirst))
        .await
        .expect("register");
    let s = open_session(&*store, "vm-1", "T1", 1000, 0).await;
    let mut tasks = Vec::new();
    for i in 0..10u64 {
        let store = store.clone();
        let mut next = s.clone();
        next.version = 2;
        next.balance = cny(1000 - i);
        next.spent = cny(i);
        tasks.push(async move {
            store
                .commit(&Commit {
                    sessions: vec![next],
                    ..Commit::default()
                })
                .await
        });
    }
    let results = join_all(tasks).await;
    let wins = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(
        wins, 1,
        "exactly one of ten racing writes may win: {results:?}"
    );
    assert!(results
        .iter()
        .all(|r| r.is_ok() || matches!(r, Err(StoreError::Conflict(_)))));
}

/// Runs futures concurrently without an executor dependency (the suite runs on the caller's runtime).
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    use std::pin::Pin;
    use std::task::{Context, Poll};
    struct JoinAll<F: Future> {
        futures: Vec<Option<Pin<Box<F>>>>,
        outputs: Vec<Option<F::Output>>,
    }
    // The futures are boxed and the outputs are never pinned, so moving JoinAll is fine.
    impl<F: Future> Unpin for JoinAll<F> {}
    impl<F: Future> Future for JoinAll<F> {
        type Output = Vec<F::Output>;
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            let this = self.get_mut();
            let mut pending = false;
            for (slot, out) in this.futures.iter_mut().zip(this.outputs.iter_mut()) {
                if let Some(f) = slot {
                    match f.as_mut().poll(cx) {
                        Poll::Ready(v) => {
                            *out = Some(v);
                            *slot = None;
                        }
                        Poll::Pending => pending = true,
                    }
                }
            }
            if pending {
                Poll::Pending
            } else {
                Poll::Ready(this.outputs.iter_mut().filter_map(Option::take).collect())
            }
        }
    }
    let n = futures.len();
    JoinAll {
        futures: futures.into_iter().map(|f| Some(Box::pin(f))).collect(),
        outputs: (0..n).map(|_| None).collect(),
    }
    .await
}

/// Records what the service dispatched.
#[derive(Default)]
pub struct Recorder {
    pub deadlines: Mutex<Vec<DeadlineMessage>>,
    pub refunds: Mutex<Vec<RefundMessage>>,
}

#[async_trait]
impl DeadlineScheduler for Recorder {
    async fn schedule(&self, m: &DeadlineMessage) -> Result<(), DispatchError> {
        self.deadlines
            .lock()
            .map_err(|_| DispatchError("poisoned".into()))?
            .push(m.clone());
        Ok(())
    }
}

#[async_trait]
impl RefundQueue for Recorder {
    async fn enqueue(&self, m: &RefundMessage) -> Result<(), DispatchError> {
        self.refunds
            .lock()
            .map_err(|_| DispatchError("poisoned".into()))?
            .push(m.clone());
        Ok(())
    }
}

/// A clock the test moves by hand.
pub struct ManualClock(pub Mutex<Timestamp>);

impl ManualClock {
    pub fn at(ms: i64) -> ManualClock {
        ManualClock(Mutex::new(Timestamp::from_millis(ms)))
    }
    pub fn advance(&self, d: Duration) {
        if let Ok(mut t) = self.0.lock() {
            *t = t.plus(d);
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        self.0
            .lock()
            .map(|t| *t)
            .unwrap_or(Timestamp::from_millis(0))
    }
}

fn ledger<S: Store>(store: Arc<S>) -> (Ledger, Arc<Recorder>, Arc<ManualClock>) {
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

async fn ledger_racing_purchases_never_overspend<S: Store>(store: Arc<S>) {
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

async fn ledger_duplicate_notifications_credit_once<S: Store>(store: Arc<S>) {
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

async fn ledger_full_pay_first_flow<S: Store>(store: Arc<S>) {
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

/// A store that counts the actions of every commit the way DynamoDB does (one per device guard,
/// session, trade row, request row and refund row) and refuses one over the 100-action limit, so the
/// suite holds every adapter to the strictest backend's limits.
struct Limited<S> {
    inner: Arc<S>,
    largest: Mutex<usize>,
}

/// DynamoDB's `TransactWriteItems` limit.
pub const MAX_WRITE_ACTIONS: usize = 100;

pub fn commit_actions(c: &Commit) -> usize {
    usize::from(c.device.is_some())
        + c.sessions.len()
        + usize::from(c.trade.is_some())
        + usize::from(c.request.is_some())
        + c.refunds.len()
        + usize::from(c.send.is_some())
}

#[async_trait]
impl<S: Store> SessionStore for Limited<S> {
    async fn machine(&self, id: &DeviceId) -> Result<Option<Machine>, StoreError> {
        self.inner.machine(id).await
    }
    async fn session(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        self.inner.session(id).await
    }
    async fn trade(&self, t: &TradeNo) -> Result<Option<PaymentOutcome>, StoreError> {
        self.inner.trade(t).await
    }
    async fn request(
        &self,
        d: &DeviceId,
        r: &RequestId,
    ) -> Result<Option<RequestRecord>, StoreError> {
        self.inner.request(d, r).await
    }
    async fn refund(&self, r: &RefundId) -> Result<Option<RefundRecord>, StoreError> {
        self.inner.refund(r).await
    }
    async fn commit(&self, c: &Commit) -> Result<(), StoreError> {
        let n = commit_actions(c);
        if let Ok(mut l) = self.largest.lock() {
            *l = (*l).max(n);
        }
        if n > MAX_WRITE_ACTIONS {
            return Err(StoreError::Permanent(format!(
                "a commit of {n} actions (over {MAX_WRITE_ACTIONS})"
            )));
        }
        self.inner.commit(c).await
    }
    async fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<SessionId>, StoreError> {
        self.inner.due(now, limit).await
    }
    async fn pending_refunds(
        &self,
        due_by: Timestamp,
        limit: usize,
    ) -> Result<Vec<RefundRecord>, StoreError> {
        self.inner.pending_refunds(due_by, limit).await
    }
}

async fn ledger_a_hundred_cent_top_ups_settle_in_writes_that_fit<S: Store>(store: Arc<S>) {
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

async fn ledger_the_sweep_goes_on_past_a_session_that_fails<S: Store>(store: Arc<S>) {
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

async fn ledger_order_ids_and_purchase_ids_share_one_namespace<S: Store>(store: Arc<S>) {
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
    let placed = ledger.order(&dev, &id("42"), &id("B2"), cny(400)).await;
    assert!(
        matches!(
            placed,
            Err(AppError::Rejected(Rejection::RequestConflict(_)))
        ),
        "{placed:?}"
    );
    // And the reverse: a purchase under an order's id.
    ledger
        .order(&dev, &id("43"), &id("B2"), cny(400))
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

/// A gateway that, during its first call, delivers a copy of the same refund message (the sweep's, or
/// a duplicate SQS delivery) and records what that copy came to; every call answers `verdict`.
struct Racing {
    ledger: Mutex<Option<(Ledger, RefundMessage)>>,
    copy: Mutex<Option<Result<RefundAttempt, AppError>>>,
    calls: std::sync::atomic::AtomicUsize,
    verdict: RefundVerdict,
}

#[async_trait]
impl RefundGateway for Racing {
    async fn refund(&self, _order: &RefundOrder) -> RefundVerdict {
        let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let ledger = self.ledger.lock().ok().and_then(|mut l| l.take());
        if let (0, Some((ledger, message))) = (n, ledger) {
            let copy = ledger
                .execute_refund(&message, self, Duration::from_secs(5))
                .await;
            if let Ok(mut c) = self.copy.lock() {
                *c = Some(copy);
            }
        }
        self.verdict.clone()
    }
}

fn answering(verdict: RefundVerdict) -> Racing {
    Racing {
        ledger: Mutex::new(None),
        copy: Mutex::new(None),
        calls: Default::default(),
        verdict,
    }
}

async fn ledger_one_send_of_a_refund_at_a_time_and_no_resend_storm<S: Store>(store: Arc<S>) {
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

async fn ledger_a_first_send_refused_in_a_verified_answer_fails<S: Store>(store: Arc<S>) {
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
