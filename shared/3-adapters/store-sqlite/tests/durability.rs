//! A store closed in the middle of sessions and reopened from its file holds everything it held, and
//! `rearm` puts the deadlines and pending refunds back in motion, so a killed `vendpay serve` loses
//! nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code asserts by panicking

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use vendpay_app::{DeviceStore, Ledger, QrCode, SessionStore, StoreError};
use vendpay_domain::{DeviceId, Mode, Phase, RefundStatus, Timestamp, Windows};
use vendpay_store_sqlite::{channels, rearm, Location, SqliteStore, Worker};

fn at(secs: i64) -> Timestamp {
    Timestamp::from_millis(T0 + secs * 1000)
}

#[tokio::test(start_paused = true)]
async fn a_reopened_store_holds_everything_and_rearms_its_deadlines() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("vendpay.sqlite");
    let clock = TokioClock::at(T0);
    let vm1: DeviceId = id("vm-1");
    let vm2: DeviceId = id("vm-2");
    let qr = QrCode {
        qrcode: "https://qr.alipay.com/x1".into(),
        qrcode_img_url: "https://example.com/x1.png".into(),
    };

    // First life: a pay-first session mid-way (a purchase held, one delivered) and an ended session
    // whose refund was recorded but never sent (the process dies before the worker runs).
    let (before, open_id, ended_id) = {
        let store = Arc::new(
            SqliteStore::open_with_clock(Location::File(path.clone()), clock.clone())
                .await
                .expect("open"),
        );
        for d in ["vm-1", "vm-2"] {
            store
                .register(&device_record(d, Mode::PayFirst))
                .await
                .expect("register");
        }
        store.set_qrcode(&vm1, &qr).await.expect("qrcode");
        let (scheduler, queue, _receivers) = channels(clock.clone());
        let ledger = Ledger::new(
            store.clone(),
            Arc::new(scheduler),
            Arc::new(queue),
            clock.clone(),
            Windows::default(),
        );
        let open = ledger
            .payment(&vm1, &payment("T1", 1000, at(0)))
            .await
            .expect("pay");
        for (r, delivered) in [("r1", Some(true)), ("r2", None)] {
            let a = ledger
                .purchase(&vm1, &id(r), &id("A1"), cny(200))
                .await
                .expect("buy");
            assert!(a.approved());
            if let Some(d) = delivered {
                ledger.vend(&vm1, &id(r), d).await.expect("vend");
            }
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
        ledger
            .payment(&vm2, &payment("T2", 500, at(10)))
            .await
            .expect("pay");
        let ended = ledger.end(&vm2).await.expect("end");
        assert_eq!(ended.refunds.len(), 1);

        let snapshot = Snapshot::read(&store, &[&vm1, &vm2]).await;
        (snapshot, open.session, ended.id)
        // The store, the ledger and the channels are dropped here: the timers' messages go nowhere.
    };
    assert_eq!(
        before.deadlines.len(),
        1,
        "the open session has its deadline: {:?}",
        before.deadlines
    );
    assert_eq!(before.deadlines[0].session, open_id);
    assert_eq!(before.deadlines[0].at, at(300));
    assert_eq!(before.pending.len(), 1);

    // Second life, on the same file.
    let store = Arc::new(
        SqliteStore::open_with_clock(Location::File(path.clone()), clock.clone())
            .await
            .expect("reopen"),
    );
    let after = Snapshot::read(&store, &[&vm1, &vm2]).await;
    assert_eq!(
        after, before,
        "everything written before the restart is there after it"
    );
    assert_eq!(
        after.devices[0].as_ref().and_then(|d| d.qrcode.clone()),
        Some(qr)
    );
    let s = store
        .session(&open_id)
        .await
        .expect("read")
        .expect("session");
    assert_eq!((s.balance, s.held, s.spent), (cny(600), cny(200), cny(200)));
    let r1 = store
        .request(&vm1, &id("r1"))
        .await
        .expect("read")
        .expect("the purchase's idempotency row survives");
    assert!(r1.expires_at > at(48 * 3600));
    assert!(store.trade(&id("T1")).await.expect("read").is_some());
    assert!(store.trade(&id("T2")).await.expect("read").is_some());

    // Re-arm, run the worker, let the window pass: both sessions settle and close.
    let (scheduler, queue, receivers) = channels(clock.clone());
    let report = rearm(&store, &scheduler, &queue).await.expect("rearm");
    assert_eq!((report.deadlines, report.refunds), (1, 1));
    let ledger = Ledger::new(
        store.clone(),
        Arc::new(scheduler),
        Arc::new(queue),
        clock.clone(),
        Windows::default(),
    );
    let gateway = ScriptedGateway::new(vec![]);
    let worker = Worker::new(ledger, gateway.clone())
        .with_sweep(None)
        .spawn(receivers);
    let ended_closed = eventually(5, || async {
        phase(&store, &ended_id).await == Some(Phase::Closed)
    })
    .await;
    assert!(
        ended_closed,
        "the pending refund is sent right after the restart"
    );
    assert_eq!(
        phase(&store, &open_id).await,
        Some(Phase::Open),
        "not due yet"
    );
    let open_closed = eventually(300, || async {
        phase(&store, &open_id).await == Some(Phase::Closed)
    })
    .await;
    assert!(
        open_closed,
        "the re-armed deadline settles the open session"
    );
    let s = store
        .session(&open_id)
        .await
        .expect("read")
        .expect("session");
    assert_eq!((s.balance, s.held), (cny(0), cny(0)));
    assert_eq!(s.refunds.len(), 1);
    assert_eq!(
        s.refunds[0].amount,
        cny(800),
        "the free balance and the unconfirmed hold"
    );
    assert_eq!(s.refunds[0].status, RefundStatus::Succeeded);
    assert_eq!(gateway.calls().len(), 2);
    assert!(store
        .pending_deadlines()
        .await
        .expect("deadlines")
        .is_empty());
    assert!(store
        .pending_refunds(Timestamp::FAR_FUTURE, 10)
        .await
        .expect("pending")
        .is_empty());
    worker.abort();
}

async fn phase(store: &SqliteStore, id: &vendpay_domain::SessionId) -> Option<Phase> {
    store.session(id).await.ok().flatten().map(|s| s.phase)
}

/// What a restart must preserve, read through the ports.
#[derive(Debug, PartialEq)]
struct Snapshot {
    devices: Vec<Option<vendpay_app::DeviceRecord>>,
    machines: Vec<Option<vendpay_app::Machine>>,
    deadlines: Vec<vendpay_app::DeadlineMessage>,
    pending: Vec<vendpay_app::RefundRecord>,
}

impl Snapshot {
    async fn read(store: &SqliteStore, devices: &[&DeviceId]) -> Snapshot {
        let mut snap = Snapshot {
            devices: vec![],
            machines: vec![],
            deadlines: store.pending_deadlines().await.expect("deadlines"),
            pending: store
                .pending_refunds(Timestamp::FAR_FUTURE, 100)
                .await
                .expect("pending"),
        };
        for d in devices {
            snap.devices.push(store.device(d).await.expect("device"));
            snap.machines.push(store.machine(d).await.expect("machine"));
        }
        snap
    }
}

/// Rows that do not decode are reported as permanent errors naming the row, not panics.
#[tokio::test]
async fn a_corrupt_row_is_a_permanent_error_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("corrupt.sqlite");
    let store = SqliteStore::open(&path).await.expect("open");
    store
        .register(&device_record("vm-1", Mode::PayFirst))
        .await
        .expect("register");
    drop(store);
    {
        let conn = rusqlite::Connection::open(&path).expect("raw open");
        conn.execute("UPDATE devices SET record = '{\"nope\":1}'", [])
            .expect("corrupt the row");
        conn.execute(
            "INSERT INTO sessions (id, device, phase, version, opened_at, deadline_at, body) \
             VALUES ('S-bad', 'vm-1', 'open', 1, 0, 5, 'not json')",
            [],
        )
        .expect("insert a bad session");
    }
    let store = SqliteStore::open(&path).await.expect("reopen");
    match store.device(&id("vm-1")).await {
        Err(StoreError::Permanent(m)) => assert!(m.to_string().contains("device row vm-1"), "{m}"),
        other => panic!("expected a permanent error, got {other:?}"),
    }
    match store.session(&id("S-bad")).await {
        Err(StoreError::Permanent(m)) => {
            assert!(m.to_string().contains("session row S-bad"), "{m}")
        }
        other => panic!("expected a permanent error, got {other:?}"),
    }
}
