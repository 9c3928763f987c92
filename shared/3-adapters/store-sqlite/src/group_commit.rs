//! The group commit behind [`SessionStore::commit`](vendpay_app::SessionStore::commit): the queue of
//! jobs, the one drainer that owns the writer, and the batching of queued commits into one
//! transaction with a savepoint each.
//!
//! It is kept apart from the SQL because its correctness is about concurrency (one drainer, every
//! caller answered exactly once, only after `COMMIT`) rather than about rows; the design is described
//! under "Durability and threading" in `store.rs`.

use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::oneshot;
use vendpay_app::{Commit, StoreError};
use vendpay_domain::Clock;

use crate::db::{lock, Inner, Job};
use crate::row_codec::Ctx;
use crate::writes::{apply_commit, prune};

/// Expired request rows only cost disk space, so pruning them hourly is plenty.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// The most commits written as one group (one transaction, one fsync).
const MAX_BATCH: usize = 512;

/// Queues `commit` for the drainer (starting one if none runs) and waits for its answer, which comes
/// once the group holding it is committed and fsynced, or rolled back.
pub(crate) async fn submit(inner: &Arc<Inner>, commit: &Commit) -> Result<(), StoreError> {
    let (reply, answer) = oneshot::channel();
    let start = {
        let mut q = lock(&inner.queue);
        q.jobs.push_back(Job {
            commit: commit.clone(),
            reply,
        });
        !std::mem::replace(&mut q.draining, true)
    };
    if start {
        // On a blocking thread, like every SQLite call; and while it runs, a paused tokio clock
        // does not jump ahead under a caller waiting for its answer.
        let guard = DrainGuard {
            inner: inner.clone(),
            finished: false,
        };
        drop(tokio::task::spawn_blocking(move || guard.drain()));
    }
    answer.await.map_err(|_| {
        StoreError::Unavailable("the commit was not answered: the writer stopped".into())
    })?
}
/// The right to drain the queue, held by at most one drainer. If the drainer ends other than by finding
/// the queue empty (a panic, or a runtime shutting down before the task ran), dropping this clears the
/// "draining" mark and answers the commits still queued "unavailable" (their reply channels are
/// dropped) rather than leaving them, and every later commit, waiting forever.
struct DrainGuard {
    inner: Arc<Inner>,
    finished: bool,
}

impl DrainGuard {
    /// The drainer: takes every queued commit (up to `MAX_BATCH`, 512) and writes them as one group, then
    /// the next group, until the queue is empty. Runs on a blocking thread; at most one at a time.
    fn drain(mut self) {
        loop {
            let batch: Vec<Job> = {
                let mut q = lock(&self.inner.queue);
                if q.jobs.is_empty() {
                    q.draining = false;
                    self.finished = true;
                    return;
                }
                let n = q.jobs.len().min(MAX_BATCH);
                q.jobs.drain(..n).collect()
            };
            let results = match self.inner.lock_writer() {
                Ok(mut w) => {
                    let commits: Vec<&Commit> = batch.iter().map(|j| &j.commit).collect();
                    let started = std::time::Instant::now();
                    let results = write_group(&w.conn, &commits, &*self.inner.clock);
                    tracing::trace!(
                        commits = commits.len(),
                        micros = started.elapsed().as_micros() as u64,
                        "group committed"
                    );
                    let now = self.inner.clock.now();
                    if w.last_prune.plus(PRUNE_EVERY) <= now {
                        // The commits stand whatever happens here; a failed prune is retried later.
                        match prune(&w.conn, now) {
                            Ok(n) => tracing::debug!(pruned = n, "expired request rows pruned"),
                            Err(e) => {
                                tracing::warn!(error = %e, "pruning expired request rows failed")
                            }
                        }
                        w.last_prune = now;
                    }
                    results
                }
                Err(e) => vec![Err(e); batch.len()],
            };
            for (job, result) in batch.into_iter().zip(results) {
                // A caller that went away no longer needs its answer; its commit stands all the same.
                let _ = job.reply.send(result);
            }
        }
    }
}

impl Drop for DrainGuard {
    fn drop(&mut self) {
        if !self.finished {
            let mut q = lock(&self.inner.queue);
            q.draining = false;
            q.jobs.clear();
        }
    }
}

/// Writes `commits` in order as one group: one `BEGIN IMMEDIATE` transaction, each commit inside its
/// own savepoint, one `COMMIT` (so one fsync) for all of them. A commit whose condition fails (or that
/// cannot be written) rolls back its savepoint only and gets its own error; the others are unaffected,
/// and each is judged against the state its predecessors in the group left, exactly as if they had
/// been committed one by one. If the group as a whole cannot be committed (the transaction is lost, or
/// `COMMIT` fails), nothing of it is written and every commit is tried again on its own.
fn write_group(
    conn: &Connection,
    commits: &[&Commit],
    clock: &dyn Clock,
) -> Vec<Result<(), StoreError>> {
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE", "starting a commit") {
        // Nothing was judged: every commit gets the (retryable, when it is a lock wait) error.
        return vec![Err(e); commits.len()];
    }
    let outcome = group_body(conn, commits, clock)
        .and_then(|results| exec(conn, "COMMIT", "committing").map(|()| results));
    match outcome {
        Ok(results) => results,
        Err(e) => {
            rollback(conn);
            if commits.len() == 1 {
                return vec![Err(e)];
            }
            tracing::warn!(error = %e, commits = commits.len(), "a group commit failed; committing one by one");
            commits
                .iter()
                .flat_map(|c| write_group(conn, std::slice::from_ref(c), clock))
                .collect()
        }
    }
}

/// Each commit of the group inside its own savepoint; `Err` when the group as a whole is lost.
fn group_body(
    conn: &Connection,
    commits: &[&Commit],
    clock: &dyn Clock,
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    let mut results = Vec::with_capacity(commits.len());
    for commit in commits {
        exec(conn, "SAVEPOINT one", "starting a commit")?;
        let result = apply_commit(conn, commit, clock.now());
        if conn.is_autocommit() {
            // SQLite rolled the whole transaction back (disk full, I/O error): the group is lost.
            return Err(match result {
                Err(e) => e,
                Ok(()) => StoreError::Unavailable("the transaction was rolled back".into()),
            });
        }
        if result.is_err() {
            exec(conn, "ROLLBACK TO one", "rolling back a commit")?;
        }
        exec(conn, "RELEASE one", "finishing a commit")?;
        results.push(result);
    }
    Ok(results)
}

fn exec(conn: &Connection, sql: &str, what: &str) -> Result<(), StoreError> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .map(|_| ())
        .ctx(what)
}

/// Ends a failed group's transaction; if even that fails, the next use of the writer rolls it back.
fn rollback(conn: &Connection) {
    if !conn.is_autocommit() {
        if let Err(e) = conn.execute_batch("ROLLBACK") {
            tracing::warn!(error = %e, "rolling back a failed group commit failed");
        }
    }
}
