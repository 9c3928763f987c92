//! What the SQLite store promises beyond the shared contract: request rows expire and are pruned,
//! per-device listing, older databases are migrated, a database from a newer build is refused rather
//! than misread, and unreadable rows are errors naming them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code asserts by panicking

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use vendpay_app::contract::ManualClock;
use vendpay_app::{Commit, DeviceStore, InventoryStore, RequestRecord, SessionStore, StoreError};
use vendpay_domain::{
    receive_payment, Mode, Product, Reply, Shelves, SlotStock, SlotWrites, Timestamp, Windows,
};
use vendpay_store_sqlite::{Location, SqliteStore};

fn record(request: &str, expires_ms: i64) -> RequestRecord {
    RequestRecord {
        device: id("vm-1"),
        request_id: id(request),
        reply: Reply::Session { session: id("S1") },
        expires_at: Timestamp::from_millis(expires_ms),
    }
}

fn count_requests(path: &std::path::Path) -> i64 {
    let conn = rusqlite::Connection::open(path).expect("raw open");
    conn.query_row("SELECT count(*) FROM requests", [], |r| r.get(0))
        .expect("count")
}

#[tokio::test]
async fn request_rows_expire_are_replaceable_and_pruned() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("requests.sqlite");
    let clock = Arc::new(ManualClock::at(T0));
    let store = SqliteStore::open_with_clock(Location::File(path.clone()), clock.clone())
        .await
        .expect("open");
    let with = |r: RequestRecord| Commit {
        request: Some(r),
        ..Commit::default()
    };
    store
        .commit(&with(record("r1", T0 + 10_000)))
        .await
        .expect("r1");
    store
        .commit(&with(record("r2", T0 + 20_000)))
        .await
        .expect("r2");
    assert!(matches!(
        store.commit(&with(record("r1", T0 + 99_000))).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(store
        .request(&id("vm-1"), &id("r1"))
        .await
        .expect("read")
        .is_some());

    clock.advance(Duration::from_secs(10));
    assert_eq!(
        store.request(&id("vm-1"), &id("r1")).await.expect("read"),
        None,
        "an expired row is never returned"
    );
    // An expired row no longer blocks the key.
    let fresh = record("r1", T0 + 100_000);
    store.commit(&with(fresh.clone())).await.expect("r1 again");
    assert_eq!(
        store.request(&id("vm-1"), &id("r1")).await.expect("read"),
        Some(fresh)
    );

    clock.advance(Duration::from_secs(15));
    assert_eq!(store.prune_expired().await.expect("prune"), 1, "r2 expired");
    assert_eq!(count_requests(&path), 1);
    drop(store);

    // Opening prunes too.
    clock.advance(Duration::from_secs(100));
    let _store = SqliteStore::open_with_clock(Location::File(path.clone()), clock.clone())
        .await
        .expect("reopen");
    assert_eq!(count_requests(&path), 0);
}

#[tokio::test]
async fn a_device_lists_its_sessions_newest_first() {
    let store = SqliteStore::open_in_memory().await.expect("open");
    store
        .register(&device_record("vm-1", Mode::PayFirst))
        .await
        .expect("register");
    let device = device_record("vm-1", Mode::PayFirst).device;
    let mut written = Vec::new();
    for (i, trade) in ["T1", "T2", "T3"].iter().enumerate() {
        let now = Timestamp::from_millis(T0 + i as i64 * 1000);
        let t = receive_payment(
            &device,
            None,
            &payment(trade, 100, now),
            &Shelves::NONE,
            &Windows::default(),
            now,
        )
        .expect("payment");
        let s = t.sessions[0].clone();
        store
            .commit(&Commit {
                sessions: vec![s.clone()],
                ..Commit::default()
            })
            .await
            .expect("commit");
        written.push(s);
    }
    let listed = store
        .sessions_of_device(&id("vm-1"), 2)
        .await
        .expect("list");
    assert_eq!(listed, vec![written[2].clone(), written[1].clone()]);
    assert!(store
        .sessions_of_device(&id("vm-2"), 10)
        .await
        .expect("list")
        .is_empty());
}

#[tokio::test]
async fn a_database_from_a_newer_build_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("future.sqlite");
    drop(SqliteStore::open(&path).await.expect("open"));
    rusqlite::Connection::open(&path)
        .and_then(|c| c.pragma_update(None, "user_version", 99))
        .expect("bump the schema version");
    match SqliteStore::open(&path).await {
        Err(StoreError::Permanent(m)) => {
            assert!(m.to_string().contains("schema version 99"), "{m}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_version_1_database_gains_the_refund_send_schedule() {
    // Version 1 had no send schedule: its pending refunds become due at their issue time and free.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("v1.sqlite");
    let row = vendpay_app::RefundRecord {
        refund_id: id("T1-r1"),
        session: id("s:T1"),
        trade_no: id("T1"),
        amount: vendpay_domain::Money::new(300, vendpay_domain::Currency::Cny).expect("money"),
        status: vendpay_domain::RefundStatus::Pending,
        issued_at: Timestamp::from_millis(T0 + 1000),
        attempts: 0,
        generation: 0,
        in_flight_until: None,
    };
    {
        let store = SqliteStore::open(&path).await.expect("open");
        store
            .commit(&Commit {
                refunds: vec![row.clone()],
                ..Commit::default()
            })
            .await
            .expect("commit");
    }
    rusqlite::Connection::open(&path)
        .and_then(|c| {
            c.execute_batch(
                "DROP INDEX refunds_pending;
                 ALTER TABLE refunds DROP COLUMN in_flight_until;
                 ALTER TABLE refunds DROP COLUMN attempts;
                 ALTER TABLE refunds DROP COLUMN generation;
                 ALTER TABLE refunds DROP COLUMN next_attempt_at;
                 CREATE INDEX refunds_pending ON refunds (issued_at, refund_id) WHERE status = 'pending';
                 DROP TABLE products;
                 DROP TABLE slots;
                 DROP TABLE facts;
                 PRAGMA user_version = 1;",
            )
        })
        .expect("turn the database back into version 1");
    let store = SqliteStore::open(&path).await.expect("migrated");
    let due = |ms: i64| store.pending_refunds(Timestamp::from_millis(ms), 10);
    assert_eq!(due(T0 + 999).await, Ok(vec![]));
    assert_eq!(due(T0 + 1000).await, Ok(vec![row.clone()]));
    let claim = Commit {
        send: Some(vendpay_app::RefundSend {
            refund_id: row.refund_id.clone(),
            when: vendpay_app::SendCondition::Claim {
                now: Timestamp::from_millis(T0 + 2000),
                generation: 0,
                attempts: 0,
            },
            in_flight_until: Some(Timestamp::from_millis(T0 + 62_000)),
            next_attempt_at: Timestamp::from_millis(T0 + 62_000),
        }),
        ..Commit::default()
    };
    store.commit(&claim).await.expect("claimed once");
    assert!(matches!(
        store.commit(&claim).await,
        Err(StoreError::Conflict(_))
    ));
    drop(store);
    assert_eq!(schema_version(&path), fresh_schema_version().await);
}

fn schema_version(path: &std::path::Path) -> i64 {
    rusqlite::Connection::open(path)
        .and_then(|c| c.query_row("PRAGMA user_version", [], |r| r.get(0)))
        .expect("version")
}

/// The schema version of a database this build creates.
async fn fresh_schema_version() -> i64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fresh.sqlite");
    drop(SqliteStore::open(&path).await.expect("open"));
    schema_version(&path)
}

#[tokio::test]
async fn a_version_2_database_gains_the_catalogue_and_the_slot_rows() {
    // Version 2 had no inventory: it opens with its sessions as they were, and an empty catalogue and
    // no slot maps, which it then takes.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("v2.sqlite");
    let session = {
        let store = SqliteStore::open(&path).await.expect("open");
        store
            .register(&device_record("vm-1", Mode::PayFirst))
            .await
            .expect("register");
        let device = device_record("vm-1", Mode::PayFirst).device;
        let now = Timestamp::from_millis(T0);
        let t = receive_payment(
            &device,
            None,
            &payment("T1", 100, now),
            &Shelves::NONE,
            &Windows::default(),
            now,
        )
        .expect("payment");
        let s = t.sessions[0].clone();
        store
            .commit(&Commit {
                sessions: vec![s.clone()],
                ..Commit::default()
            })
            .await
            .expect("commit");
        s
    };
    rusqlite::Connection::open(&path)
        .and_then(|c| {
            c.execute_batch(
                "DROP TABLE products;
                 DROP TABLE slots;
                 DROP TABLE facts;
                 PRAGMA user_version = 2;",
            )
        })
        .expect("turn the database back into version 2");
    let store = SqliteStore::open(&path).await.expect("migrated");
    assert_eq!(store.session(&session.id).await, Ok(Some(session)));
    assert_eq!(store.products().await, Ok(vec![]));
    assert_eq!(store.stocked_devices().await, Ok(vec![]));
    // Version 4 too: the facts table, empty.
    assert_eq!(
        vendpay_app::FactStore::facts(&store, Timestamp::from_millis(0), Timestamp::FAR_FUTURE)
            .await,
        Ok(vec![])
    );
    let product = Product {
        sku: id("cola"),
        name: "Cola".into(),
        price: cny(350),
        category: None,
    };
    store.put_product(&product).await.expect("put");
    let row = SlotStock {
        sold_at: None,
        device_id: id("vm-1"),
        slot: id("A1"),
        sku: id("cola"),
        capacity: 8,
        price: None,
        stock: 8,
        reserved: 0,
        version: 1,
    };
    store
        .write_slots(
            &id("vm-1"),
            &SlotWrites {
                write: vec![row.clone()],
                remove: vec![],
            },
        )
        .await
        .expect("slots");
    drop(store);
    let store = SqliteStore::open(&path).await.expect("reopen");
    assert_eq!(store.products().await, Ok(vec![product]));
    assert_eq!(store.slots(&id("vm-1")).await, Ok(vec![row]));
    drop(store);
    assert_eq!(schema_version(&path), fresh_schema_version().await);
}

#[tokio::test]
async fn unreadable_slot_rows_are_left_out_and_named_and_a_bad_product_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad-slots.sqlite");
    drop(SqliteStore::open(&path).await.expect("open"));
    let good = SlotStock {
        sold_at: None,
        device_id: id("vm-1"),
        slot: id("A1"),
        sku: id("cola"),
        capacity: 8,
        price: None,
        stock: 8,
        reserved: 0,
        version: 2,
    };
    let body = serde_json::to_string(&good).expect("json");
    let cola = serde_json::to_string(&Product {
        sku: id("cola"),
        name: "Cola".into(),
        price: cny(350),
        category: None,
    })
    .expect("json");
    {
        let conn = rusqlite::Connection::open(&path).expect("raw open");
        // A row whose version column disagrees with its body, one filed under another slot, one that
        // is not JSON, and a product filed under another sku.
        conn.execute(
            "INSERT INTO slots (device, slot, version, body) VALUES ('vm-1', 'A1', 3, ?1)",
            [&body],
        )
        .expect("insert");
        conn.execute(
            "INSERT INTO slots (device, slot, version, body) VALUES ('vm-2', 'A1', 2, ?1)",
            [&body],
        )
        .expect("insert");
        conn.execute(
            "INSERT INTO slots (device, slot, version, body) VALUES ('vm-3', 'A1', 1, '{')",
            [],
        )
        .expect("insert");
        conn.execute(
            "INSERT INTO products (sku, body) VALUES ('tea', ?1)",
            [&cola],
        )
        .expect("insert");
    }
    let store = SqliteStore::open(&path).await.expect("reopen");
    // Each unreadable slot row is left out (with an alert naming it), never an error: one damaged
    // slot must not stop its machine taking money or its sessions settling.
    for device in ["vm-1", "vm-2", "vm-3"] {
        assert_eq!(
            store.slots(&id(device)).await.expect("read"),
            vec![],
            "{device}"
        );
    }
    match store.product(&id("tea")).await {
        Err(StoreError::Permanent(m)) => assert!(m.to_string().contains("product row tea"), "{m}"),
        other => panic!("expected a permanent error, got {other:?}"),
    }
}

#[tokio::test]
async fn one_unreadable_refund_row_does_not_hide_the_others() {
    // A row written by a damaged disk, a bad migration or a hand edit must be skipped (with an alert
    // naming it), never stop the listing that the sweep and the start-up re-arming depend on.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("v.sqlite");
    let store = SqliteStore::open(&path).await.expect("open");
    let good = vendpay_app::RefundRecord {
        refund_id: id("T2-r1"),
        session: id("s:T2"),
        trade_no: id("T2"),
        amount: vendpay_domain::Money::new(300, vendpay_domain::Currency::Cny).expect("money"),
        status: vendpay_domain::RefundStatus::Pending,
        issued_at: Timestamp::from_millis(T0 + 1000),
        attempts: 0,
        generation: 0,
        in_flight_until: None,
    };
    store
        .commit(&Commit {
            refunds: vec![good.clone()],
            ..Commit::default()
        })
        .await
        .expect("commit");
    let conn = rusqlite::Connection::open(&path).expect("raw open");
    conn.execute(
        "INSERT INTO refunds (refund_id, session, status, issued_at, body) \
         VALUES ('T1-r1', 's:T1', 'pending', ?1, '{not json')",
        [T0],
    )
    .expect("raw insert");
    drop(conn);
    let listed = store.pending_refunds(Timestamp::FAR_FUTURE, 10).await;
    assert_eq!(listed, Ok(vec![good]), "the readable row is listed");
}
