//! Group commit: concurrent commits are written together (one transaction, one fsync), each in its own
//! savepoint. Each must still be judged exactly as if it were committed alone, in order: of racers on one
//! session exactly one wins and the losers leave nothing behind (not even the rows they wrote before
//! their failing condition), a commit that cannot be written fails alone, and independent commits in the
//! same group all stand, durably: a store reopened from the file holds every answered commit.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code asserts by panicking

mod common;

use common::*;
use vendpay_app::{Commit, RequestRecord, SessionStore, StoreError};
use vendpay_domain::{Clock, Reply, Session, SessionId, SystemClock};
use vendpay_store_sqlite::SqliteStore;

/// A new session (version 1) named `name`, otherwise a copy of `base`.
fn fresh(base: &Session, name: &str) -> Session {
    let mut s = base.clone();
    s.id = id(name);
    s.version = 1;
    s
}

#[derive(Debug)]
enum Kind {
    /// Inserts its marker session, then updates the shared session from the base version.
    Racer(usize),
    /// Inserts a session of its own.
    Independent(usize),
    /// Inserts its marker, then a session at version 0, which can never be written.
    Broken(usize),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grouped_commits_are_judged_one_by_one_and_losers_leave_nothing() {
    const N: usize = 48;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("group.sqlite");
    let store = SqliteStore::open(&path).await.expect("open");
    let base = open_session_on(&store, 10_000).await;

    let mut tasks = Vec::new();
    for i in 0..N {
        for kind in [Kind::Racer(i), Kind::Independent(i), Kind::Broken(i)] {
            let commit = match kind {
                Kind::Racer(i) => {
                    let mut next = base.clone();
                    next.version = base.version + 1;
                    next.balance = cny(base.balance.minor() - 1 - i as u64);
                    next.spent = cny(base.spent.minor() + 1 + i as u64);
                    next.anomalies.clear();
                    Commit {
                        sessions: vec![fresh(&base, &format!("M{i}")), next],
                        ..Commit::default()
                    }
                }
                Kind::Independent(i) => Commit {
                    sessions: vec![fresh(&base, &format!("I{i}"))],
                    ..Commit::default()
                },
                Kind::Broken(i) => {
                    let mut bad = fresh(&base, &format!("B{i}"));
                    bad.version = 0;
                    Commit {
                        sessions: vec![fresh(&base, &format!("X{i}")), bad],
                        ..Commit::default()
                    }
                }
            };
            let store = store.clone();
            tasks.push(tokio::spawn(
                async move { (kind, store.commit(&commit).await) },
            ));
        }
    }
    let mut winners = Vec::new();
    for t in tasks {
        match t.await.expect("task") {
            (Kind::Racer(i), Ok(())) => winners.push(i),
            (Kind::Racer(_), Err(StoreError::Conflict(_))) => {}
            (Kind::Independent(_), Ok(())) => {}
            (Kind::Broken(_), Err(StoreError::Permanent(_))) => {}
            (kind, other) => panic!("{kind:?} answered {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one racer may win: {winners:?}");
    let w = winners[0];

    // Everything answered is in the file: a fresh store on it sees exactly the answered commits.
    drop(store);
    let reopened = SqliteStore::open(&path).await.expect("reopen");
    let shared = reopened
        .session(&base.id)
        .await
        .expect("read")
        .expect("shared session");
    assert_eq!(shared.version, base.version + 1);
    assert_eq!(shared.balance, cny(base.balance.minor() - 1 - w as u64));
    for i in 0..N {
        let exists = |name: String| {
            let reopened = reopened.clone();
            async move {
                let sid: SessionId = id(&name);
                reopened.session(&sid).await.expect("read").is_some()
            }
        };
        assert_eq!(
            exists(format!("M{i}")).await,
            i == w,
            "the marker of racer {i} must exist only if it won (winner {w})"
        );
        assert!(exists(format!("I{i}")).await, "independent commit {i} lost");
        assert!(
            !exists(format!("X{i}")).await,
            "broken commit {i} left a row behind"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_request_committed_concurrently_is_answered_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path().join("requests.sqlite"))
        .await
        .expect("open");
    let expires_at = SystemClock.now().plus(std::time::Duration::from_secs(3600));
    for round in 0..10 {
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let store = store.clone();
            let commit = Commit {
                request: Some(RequestRecord {
                    device: id("vm-1"),
                    request_id: id(&format!("r{round}")),
                    reply: Reply::Session { session: id("S1") },
                    expires_at,
                }),
                ..Commit::default()
            };
            tasks.push(tokio::spawn(async move { store.commit(&commit).await }));
        }
        let mut ok = 0;
        for t in tasks {
            match t.await.expect("task") {
                Ok(()) => ok += 1,
                Err(StoreError::Conflict(_)) => {}
                Err(e) => panic!("a duplicate request must be a conflict, not {e:?}"),
            }
        }
        assert_eq!(
            ok, 1,
            "round {round}: one of 16 identical requests is written"
        );
    }
}
