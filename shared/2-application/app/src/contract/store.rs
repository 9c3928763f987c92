//! Checks on the store ports: registration, commits that write all or nothing, session versions,
//! the device guard, the deadline index, and racing commits on one version.

use std::sync::Arc;
use std::time::Duration;

use vendpay_domain::*;

use super::{cny, device_record, id, join_all, open_session, payment, Store, T0};
use crate::ports::*;

pub(super) async fn devices_register_once_and_keep_their_qrcode<S: Store>(store: Arc<S>) {
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

pub(super) async fn a_commit_writes_every_row_and_reads_back<S: Store>(store: Arc<S>) {
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
            price: Some(cny(300)),
            session: None,
        },
        &Shelves::NONE,
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

    let t = end_session(
        &m.record.device,
        m.current.as_ref(),
        None,
        &Shelves::NONE,
        now,
    )
    .expect("end");
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

pub(super) async fn a_failed_condition_writes_nothing<S: Store>(store: Arc<S>) {
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
        &Shelves::NONE,
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
        stock: vec![],
        facts: vec![],
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

pub(super) async fn session_versions_are_compare_and_set<S: Store>(store: Arc<S>) {
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

pub(super) async fn the_device_guard_serialises_device_commands<S: Store>(store: Arc<S>) {
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

pub(super) async fn the_deadline_index_finds_overdue_sessions_only<S: Store>(store: Arc<S>) {
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
    let t = deadline_due(&a, &Shelves::NONE, at(300)).expect("deadline");
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

pub(super) async fn racing_commits_on_one_version_let_exactly_one_win<S: Store>(store: Arc<S>) {
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
