//! The shared storage contract (`vendpay_app::contract`) on the SQLite store: once on in-memory
//! databases (what the fast tests use) and once on database files (what `vendpay serve` uses).
//!
//! The store's clock is pinned at the suite's epoch `T0`: the suite writes request rows that expire 48 h
//! after `T0`, and a store on today's clock would rightly treat them as long expired.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code asserts by panicking

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use vendpay_app::contract::{self, ManualClock};
use vendpay_store_sqlite::{Location, SqliteStore};

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::at(contract::T0))
}

#[tokio::test]
async fn contract_in_memory() {
    contract::run(|| async {
        Arc::new(
            SqliteStore::open_with_clock(Location::Memory, clock())
                .await
                .expect("open in memory"),
        )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_on_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let n = AtomicUsize::new(0);
    contract::run(|| {
        let path = dir.path().join(format!(
            "contract-{}.sqlite",
            n.fetch_add(1, Ordering::SeqCst)
        ));
        async move {
            Arc::new(
                SqliteStore::open_with_clock(Location::File(path), clock())
                    .await
                    .expect("open file"),
            )
        }
    })
    .await;
}

#[tokio::test]
async fn facts_contract_in_memory() {
    contract::run_facts(|| async {
        Arc::new(
            SqliteStore::open_with_clock(Location::Memory, clock())
                .await
                .expect("open in memory"),
        )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facts_contract_on_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let n = AtomicUsize::new(0);
    contract::run_facts(|| {
        let path = dir
            .path()
            .join(format!("facts-{}.sqlite", n.fetch_add(1, Ordering::SeqCst)));
        async move {
            Arc::new(
                SqliteStore::open_with_clock(Location::File(path), clock())
                    .await
                    .expect("open file"),
            )
        }
    })
    .await;
}
