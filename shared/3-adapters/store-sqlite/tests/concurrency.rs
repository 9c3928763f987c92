//! Racing writers on one database file: every money move is one transaction, so of N commits computed
//! from the same version exactly one wins, whether the racers share a connection or each has its own
//! (as separate processes on the same file would).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code asserts by panicking

mod common;

use common::*;
use vendpay_app::{AppError, Commit, SessionStore, StoreError};
use vendpay_domain::{DeviceId, PurchaseStatus, Session};
use vendpay_store_sqlite::SqliteStore;

/// Races `stores.len()` writers of `version` (one per store handle) and returns how many won.
async fn race(stores: &[SqliteStore], base: &Session) -> usize {
    let mut tasks = Vec::new();
    for store in stores {
        let store = store.clone();
        let mut next = base.clone();
        next.version = base.version + 1;
        next.balance = cny(base.balance.minor() - 1);
        next.spent = cny(base.spent.minor() + 1);
        next.anomalies.clear();
        tasks.push(tokio::spawn(async move {
            store
                .commit(&Commit {
                    sessions: vec![next],
                    ..Commit::default()
                })
                .await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(()) => wins += 1,
            Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("a lost race must be a conflict, not {e:?}"),
        }
    }
    wins
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writes_through_separate_connections_let_exactly_one_win() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("race.sqlite");
    let mut stores = Vec::new();
    for _ in 0..8 {
        stores.push(SqliteStore::open(&path).await.expect("open"));
    }
    let s = open_session_on(&stores[0], 1000).await;
    let mut current = s.clone();
    for round in 0..20 {
        let wins = race(&stores, &current).await;
        assert_eq!(
            wins, 1,
            "round {round}: exactly one of 8 racing writes may win"
        );
        current = stores[round % 8]
            .session(&s.id)
            .await
            .expect("read")
            .expect("session");
        assert_eq!(current.version, s.version + round as u64 + 1);
    }
    assert_eq!(
        current.balance,
        cny(1000 - 20),
        "one unit per round, no lost or doubled write"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writes_through_one_shared_store_let_exactly_one_win() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path().join("shared.sqlite"))
        .await
        .expect("open");
    let s = open_session_on(&store, 1000).await;
    let handles = vec![store.clone(); 10];
    assert_eq!(race(&handles, &s).await, 1);
}

/// 50 concurrent purchases against a balance that covers 10 → exactly 10 approved. The racers
/// use 5 connections to one file; a machine retries a `Contention` answer with the same request id.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_purchases_approve_exactly_what_the_balance_covers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("purchases.sqlite");
    let mut stores = Vec::new();
    for _ in 0..5 {
        stores.push(SqliteStore::open(&path).await.expect("open"));
    }
    let s = open_session_on(&stores[0], 1000).await;
    let dev: DeviceId = id("vm-1");
    let mut tasks = Vec::new();
    for i in 0..50 {
        let ledger = ledger(&stores[i % stores.len()]);
        let dev = dev.clone();
        tasks.push(tokio::spawn(async move {
            let request = id(&format!("r{i}"));
            loop {
                match ledger.purchase(&dev, &request, &id("A1"), cny(100)).await {
                    Err(AppError::Contention(_)) => tokio::task::yield_now().await,
                    other => return other,
                }
            }
        }));
    }
    let mut approved = 0;
    for t in tasks {
        let answer = t.await.expect("task").expect("purchase answered");
        approved += usize::from(answer.approved());
    }
    assert_eq!(approved, 10);
    let after = stores[1]
        .session(&s.id)
        .await
        .expect("read")
        .expect("session");
    assert_eq!((after.balance, after.held), (cny(0), cny(1000)));
    let held = after
        .purchases
        .iter()
        .filter(|p| p.status == PurchaseStatus::Held)
        .count();
    assert_eq!(held, 10);
    after.check_invariant().expect("invariant");
}
