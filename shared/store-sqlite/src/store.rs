//! [`SqliteStore`]: the `DeviceStore` and `SessionStore` ports on one SQLite database.
//!
//! ## Durability and threading
//! - WAL journal with `synchronous = FULL`: every commit fsyncs the WAL before it returns, and a caller
//!   is answered only after the fsync of the transaction holding its commit. `NORMAL` would survive a
//!   crash of the process but may lose the last commits on power loss, and a lost commit here can be
//!   money: once a payment is answered `success`, Alipay stops resending it, so a credit that vanishes
//!   leaves the customer's money with no session and no refund.
//! - **Group commit.** [`SessionStore::commit`] queues the `Commit` and waits for its answer on a
//!   oneshot channel. One drainer at a time (a `spawn_blocking` task, started by the first commit that
//!   finds none running, ending when the queue is empty) owns the writer connection: it takes every
//!   queued commit (up to `MAX_BATCH`, 512), opens one `BEGIN IMMEDIATE` transaction, applies each commit
//!   in queue order inside its own `SAVEPOINT` — checking every condition and writing every row, or
//!   rolling back that savepoint alone and answering `StoreError::Conflict` naming the failed condition
//!   (or the error that stopped it) — then `COMMIT`s once and only then answers every caller. Each
//!   commit is thus judged against exactly the state its predecessors left, as if committed one by
//!   one, but many decisions share one fsync. If the group as a whole cannot be committed (`COMMIT`
//!   fails, or SQLite rolled the transaction back), nothing of it is written and its commits are retried
//!   one transaction each, so one bad commit cannot fail its neighbours. A caller that goes away does
//!   not cancel its commit, as before.
//! - **Reads** run on a pool of read-only connections (file databases; WAL lets them read while the
//!   writer writes and fsyncs), each inside `spawn_blocking`; up to `MAX_IDLE_READERS` (64) idle ones are
//!   kept. A read sees every commit answered before it started (commits are answered after `COMMIT`),
//!   never a group in progress. `machine` is one read transaction, so the device and its current session
//!   come from one snapshot. An in-memory database (tests) has a single connection, so there reads lock
//!   the writer connection.
//! - No SQLite call ever runs on an async worker thread. The queue and the reader pool are behind
//!   `std::sync::Mutex`es held only for a push or a pop; a poisoned one is still consistent and is used
//!   as is. A writer connection found inside a transaction (left by a panic) is rolled back before use.
//! - `busy_timeout` of 5 s on every connection, so a second process (or a second `SqliteStore` on the
//!   same file) waits for the write lock instead of failing; a wait beyond that is
//!   `StoreError::Unavailable` (retryable). Separate stores on one file each group their own commits and
//!   serialise through SQLite's write lock, so racing writers still see exactly one winner.

//! ## Tables (all `STRICT`; JSON bodies are the serde form of the domain and port types)
//! | table | key | columns | notes |
//! |---|---|---|---|
//! | `devices` | `id` | `record` (JSON `DeviceRecord`), `qrcode` (JSON), `current`, `version` | `qrcode`, `current` and `version` columns override the JSON, which keeps the registration |
//! | `sessions` | `id` | `device`, `phase`, `version`, `opened_at`, `deadline_at`, `body` (JSON `Session`) | `deadline_at` is NULL once the session is closed or nothing is due |
//! | `trades` | `trade_no` | `outcome` (JSON `PaymentOutcome`) | permanent dedupe |
//! | `requests` | `(device, request_id)` | `expires_at`, `body` (JSON `RequestRecord`) | expired rows are never returned and are pruned |
//! | `refunds` | `refund_id` | `session`, `status`, `issued_at`, `body` (JSON `RefundRecord`), `next_attempt_at`, `in_flight_until`, `attempts`, `generation` | the last four are the send schedule (`RefundSend`), kept beside the JSON |
//!
//! Indexes: `sessions_by_device (device, opened_at, id)`; the partial `sessions_by_deadline (deadline_at, id)
//! WHERE deadline_at IS NOT NULL` (the sweep and the re-arm list); `requests_by_expiry (expires_at)`;
//! the partial `refunds_pending (next_attempt_at, refund_id) WHERE status = 'pending'`.
//! `PRAGMA user_version` holds the schema version.
//!
//! ## Access patterns
//! | operation | SQL |
//! |---|---|
//! | `register` | `INSERT INTO devices .. ON CONFLICT DO NOTHING` |
//! | `device`, `machine` | point read of `devices` (+ the current `sessions` row, in one read transaction) |
//! | `set_qrcode` | `UPDATE devices SET qrcode` by key |
//! | `session`, `trade`, `refund` | point read by key |
//! | `request` | point read by key, `AND expires_at > now` |
//! | `commit` | in one savepoint of a group transaction: device version check (+ `UPDATE .. version = version + 1`); per session `INSERT .. ON CONFLICT DO NOTHING` (version 1) or `UPDATE .. WHERE version = v - 1`; `INSERT .. ON CONFLICT DO NOTHING` into `trades` and `requests` (after deleting an expired row of the same key); refund upserts; a send-schedule change is one `UPDATE .. WHERE status = 'pending' AND` its condition |
//! | `due` | `sessions_by_deadline`: `deadline_at <= now` ordered by deadline |
//! | `pending_deadlines` | `sessions_by_deadline`: every not-closed session with a deadline (re-arm at start) |
//! | `pending_refunds` | `refunds_pending`: `next_attempt_at <= due_by`, earliest first |
//! | `sessions_of_device` | `sessions_by_device`, newest first |
//! | pruning | `DELETE FROM requests WHERE expires_at <= now` on open and at most hourly after a commit |
//!
//! Nothing read from the database is trusted: a row that does not decode, or whose key disagrees with
//! its body, is `StoreError::Permanent` naming the row, never a panic.

use std::collections::VecDeque;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::oneshot;
use vendpay_app::{
    Commit, DeadlineMessage, DeviceRecord, DeviceStore, Machine, QrCode, RefundRecord, RefundSend,
    RequestRecord, SendCondition, SessionStore, StoreError,
};
use vendpay_domain::{
    Clock, DeviceId, PaymentOutcome, Phase, RefundId, RefundStatus, RequestId, Session, SessionId,
    SystemClock, Timestamp, TradeNo,
};

const SCHEMA_VERSION: i64 = 2;
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Expired request rows only cost disk space, so pruning them hourly is plenty.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// The most commits written as one group (one transaction, one fsync).
const MAX_BATCH: usize = 512;
/// Idle read-only connections kept open; a burst beyond this opens more and closes them after.
const MAX_IDLE_READERS: usize = 64;
/// Prepared statements cached per connection (the commit path alone uses about fifteen).
const STATEMENT_CACHE: usize = 64;

const SCHEMA: &str = "
CREATE TABLE devices (
    id       TEXT PRIMARY KEY NOT NULL,
    record   TEXT NOT NULL,
    qrcode   TEXT,
    current  TEXT,
    version  INTEGER NOT NULL
) STRICT;

CREATE TABLE sessions (
    id          TEXT PRIMARY KEY NOT NULL,
    device      TEXT NOT NULL,
    phase       TEXT NOT NULL,
    version     INTEGER NOT NULL,
    opened_at   INTEGER NOT NULL,
    deadline_at INTEGER,
    body        TEXT NOT NULL
) STRICT;
CREATE INDEX sessions_by_device ON sessions (device, opened_at, id);
CREATE INDEX sessions_by_deadline ON sessions (deadline_at, id) WHERE deadline_at IS NOT NULL;

CREATE TABLE trades (
    trade_no TEXT PRIMARY KEY NOT NULL,
    outcome  TEXT NOT NULL
) STRICT;

CREATE TABLE requests (
    device     TEXT NOT NULL,
    request_id TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    body       TEXT NOT NULL,
    PRIMARY KEY (device, request_id)
) STRICT;
CREATE INDEX requests_by_expiry ON requests (expires_at);

CREATE TABLE refunds (
    refund_id TEXT PRIMARY KEY NOT NULL,
    session   TEXT NOT NULL,
    status    TEXT NOT NULL,
    issued_at INTEGER NOT NULL,
    body      TEXT NOT NULL
) STRICT;
CREATE INDEX refunds_pending ON refunds (issued_at, refund_id) WHERE status = 'pending';
";

/// Version 2: a pending refund's send schedule (at most one send in flight; the sweep re-sends only
/// what is overdue), indexed by the next attempt instead of the issue time.
const SCHEMA_2: &str = "
ALTER TABLE refunds ADD COLUMN next_attempt_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE refunds ADD COLUMN in_flight_until INTEGER;
ALTER TABLE refunds ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE refunds ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
UPDATE refunds SET next_attempt_at = issued_at;
DROP INDEX refunds_pending;
CREATE INDEX refunds_pending ON refunds (next_attempt_at, refund_id) WHERE status = 'pending';
";

/// Where the database lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    File(PathBuf),
    /// A private in-memory database, gone when the store is dropped (tests).
    Memory,
}

impl Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::File(p) => write!(f, "{}", p.display()),
            Location::Memory => f.write_str(":memory:"),
        }
    }
}

/// The embedded store. Cheap to clone; clones share the writer, its commit queue and the readers.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// The one connection that writes. Only the group-commit drainer and the rare direct writes
    /// (`register`, `set_qrcode`, pruning) lock it, and in memory mode the reads too.
    writer: Mutex<Writer>,
    /// Commits waiting for the drainer, and whether a drainer is running.
    queue: Mutex<Queue>,
    /// Idle read-only connections (file databases only); a read takes one or opens one.
    readers: Mutex<Vec<Connection>>,
    /// Decides which request rows have expired; the ledger's clock in tests, the system clock otherwise.
    clock: Arc<dyn Clock>,
    location: Location,
}

struct Writer {
    conn: Connection,
    last_prune: Timestamp,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    draining: bool,
}

/// One queued commit and where its answer goes.
struct Job {
    commit: Commit,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("location", &self.inner.location)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path`, on the system clock.
    pub async fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        let location = Location::File(path.as_ref().to_path_buf());
        SqliteStore::open_with_clock(location, Arc::new(SystemClock)).await
    }

    /// A fresh private in-memory database, on the system clock.
    pub async fn open_in_memory() -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with_clock(Location::Memory, Arc::new(SystemClock)).await
    }

    /// Opens `location` with `clock` deciding when request rows expire.
    pub async fn open_with_clock(
        location: Location,
        clock: Arc<dyn Clock>,
    ) -> Result<SqliteStore, StoreError> {
        tokio::task::spawn_blocking(move || SqliteStore::open_blocking(location, clock))
            .await
            .map_err(|e| StoreError::Unavailable(format!("opening the database failed: {e}")))?
    }

    /// Opens the database on the calling thread (for callers outside an async runtime).
    pub fn open_blocking(
        location: Location,
        clock: Arc<dyn Clock>,
    ) -> Result<SqliteStore, StoreError> {
        let what = format!("opening {location}");
        let mut conn = match &location {
            Location::File(p) => Connection::open(p),
            Location::Memory => Connection::open_in_memory(),
        }
        .ctx(&what)?;
        conn.busy_timeout(BUSY_TIMEOUT).ctx(&what)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .ctx(&what)?;
        if matches!(location, Location::File(_)) && !mode.eq_ignore_ascii_case("wal") {
            // Some file systems (network mounts) refuse WAL; the store stays correct, only slower.
            tracing::warn!(%location, journal_mode = %mode, "SQLite did not switch to WAL");
        }
        conn.pragma_update(None, "synchronous", "FULL").ctx(&what)?;
        migrate(&mut conn, &location)?;
        let now = clock.now();
        prune(&conn, now)?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                writer: Mutex::new(Writer {
                    conn,
                    last_prune: now,
                }),
                queue: Mutex::new(Queue::default()),
                readers: Mutex::new(Vec::new()),
                clock,
                location,
            }),
        })
    }

    pub fn location(&self) -> &Location {
        &self.inner.location
    }

    /// Runs `f` on the writer connection on a blocking thread, with the store's current time.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Writer, Timestamp) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut w = inner.lock_writer()?;
            let now = inner.clock.now();
            f(&mut w, now)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("storage task failed: {e}")))?
    }

    /// Runs the read `f` on a blocking thread, on a read-only connection of the pool (a file database)
    /// or on the writer connection (in memory), with the store's current time. Every committed write
    /// is visible to it: a commit is answered only once it is committed.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, Timestamp) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let path = match &inner.location {
                Location::Memory => {
                    let mut w = inner.lock_writer()?;
                    let now = inner.clock.now();
                    return f(&mut w.conn, now);
                }
                Location::File(p) => p,
            };
            let idle = lock(&inner.readers).pop();
            let mut conn = match idle {
                Some(c) => c,
                None => open_reader(path, &inner.location)?,
            };
            let now = inner.clock.now();
            let result = f(&mut conn, now);
            // A connection left inside a transaction (a failed rollback) is closed, not reused.
            if conn.is_autocommit() {
                let mut idle = lock(&inner.readers);
                if idle.len() < MAX_IDLE_READERS {
                    idle.push(conn);
                }
            }
            result
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("storage task failed: {e}")))?
    }

    /// Every not-closed session with a deadline, soonest first: what `vendpay serve` re-arms at start.
    pub async fn pending_deadlines(&self) -> Result<Vec<DeadlineMessage>, StoreError> {
        self.read(|conn, _| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, deadline_at FROM sessions WHERE deadline_at IS NOT NULL \
                     ORDER BY deadline_at, id",
                )
                .ctx("listing deadlines")?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .ctx("listing deadlines")?;
            let mut out = Vec::new();
            for row in rows {
                let (id, at) = row.ctx("listing deadlines")?;
                out.push(DeadlineMessage {
                    session: parse_id(id, "session row")?,
                    at: Timestamp::from_millis(at),
                });
            }
            Ok(out)
        })
        .await
    }

    /// A machine's sessions and orders, newest first (operator views).
    pub async fn sessions_of_device(
        &self,
        device: &DeviceId,
        limit: usize,
    ) -> Result<Vec<Session>, StoreError> {
        let device = device.clone();
        self.read(move |conn, _| {
            let what = format!("listing sessions of device {device}");
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, version, body FROM sessions WHERE device = ?1 \
                     ORDER BY opened_at DESC, id DESC LIMIT ?2",
                )
                .ctx(&what)?;
            let rows = stmt
                .query_map(params![device.as_str(), sql_limit(limit)], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })
                .ctx(&what)?;
            let mut out = Vec::new();
            for row in rows {
                let (id, version, body) = row.ctx(&what)?;
                out.push(decode_session(&id, version, &body)?);
            }
            Ok(out)
        })
        .await
    }

    /// Deletes expired request rows now; returns how many. (Also done on open and hourly on commit.)
    pub async fn prune_expired(&self) -> Result<usize, StoreError> {
        self.write(|w, now| {
            let n = prune(&w.conn, now)?;
            w.last_prune = now;
            Ok(n)
        })
        .await
    }
}

impl Inner {
    /// The writer connection, outside any transaction. A panic while it was held may have left a
    /// batch's transaction open; rolling it back makes the connection sound again, and the callers of
    /// that batch were answered "unavailable" (their reply channels were dropped), which is true.
    fn lock_writer(&self) -> Result<MutexGuard<'_, Writer>, StoreError> {
        let w = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if !w.conn.is_autocommit() {
            w.conn
                .execute_batch("ROLLBACK")
                .ctx("rolling back a transaction left open")?;
        }
        Ok(w)
    }
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

/// Locks a mutex whose data stays consistent whatever a panicking holder did (a queue or a pool of
/// idle connections, changed by single calls that complete or do nothing).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A read-only connection on the database file (WAL lets it read while the writer writes).
fn open_reader(path: &Path, location: &Location) -> Result<Connection, StoreError> {
    let what = format!("opening a reader on {location}");
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )
    .ctx(&what)?;
    conn.busy_timeout(BUSY_TIMEOUT).ctx(&what)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

#[async_trait]
impl DeviceStore for SqliteStore {
    async fn register(&self, record: &DeviceRecord) -> Result<bool, StoreError> {
        let record = record.clone();
        self.write(move |w, _| {
            let conn = &w.conn;
            let id = &record.device.id;
            let what = format!("device row {id}");
            let body = encode(&record, &what)?;
            let qrcode = record
                .qrcode
                .as_ref()
                .map(|q| encode(q, &what))
                .transpose()?;
            let version = to_i64(record.version, &what)?;
            let n = conn
                .prepare_cached(
                    "INSERT INTO devices (id, record, qrcode, current, version) \
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (id) DO NOTHING",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        id.as_str(),
                        body,
                        qrcode,
                        record.current.as_ref().map(|c| c.as_str()),
                        version,
                    ])
                })
                .ctx(&what)?;
            Ok(n == 1)
        })
        .await
    }

    async fn device(&self, id: &DeviceId) -> Result<Option<DeviceRecord>, StoreError> {
        let id = id.clone();
        self.read(move |conn, _| read_device(conn, &id)).await
    }

    async fn set_qrcode(&self, id: &DeviceId, qrcode: &QrCode) -> Result<(), StoreError> {
        let (id, qrcode) = (id.clone(), qrcode.clone());
        self.write(move |w, _| {
            let conn = &w.conn;
            let what = format!("device row {id}");
            let body = encode(&qrcode, &what)?;
            let n = conn
                .prepare_cached("UPDATE devices SET qrcode = ?1 WHERE id = ?2")
                .and_then(|mut s| s.execute(params![body, id.as_str()]))
                .ctx(&what)?;
            if n == 0 {
                return Err(StoreError::Permanent(format!(
                    "device {id} is not registered"
                )));
            }
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn machine(&self, id: &DeviceId) -> Result<Option<Machine>, StoreError> {
        let id = id.clone();
        self.read(move |conn, _| {
            let what = format!("reading machine {id}");
            // One read transaction, so the device and its session come from the same snapshot even
            // when another process writes the file.
            let tx = conn.transaction().ctx(&what)?;
            let Some(record) = read_device(&tx, &id)? else {
                return Ok(None);
            };
            let current = match &record.current {
                None => None,
                Some(sid) => Some(read_session(&tx, sid)?.ok_or_else(|| {
                    StoreError::Permanent(format!(
                        "device row {id} names current session {sid}, which does not exist"
                    ))
                })?),
            };
            tx.commit().ctx(&what)?;
            Ok(Some(Machine { record, current }))
        })
        .await
    }

    async fn session(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        let id = id.clone();
        self.read(move |conn, _| read_session(conn, &id)).await
    }

    async fn trade(&self, trade_no: &TradeNo) -> Result<Option<PaymentOutcome>, StoreError> {
        let trade_no = trade_no.clone();
        self.read(move |conn, _| {
            let what = format!("trade row {trade_no}");
            let row: Option<String> = conn
                .prepare_cached("SELECT outcome FROM trades WHERE trade_no = ?1")
                .and_then(|mut s| s.query_row([trade_no.as_str()], |r| r.get(0)).optional())
                .ctx(&what)?;
            row.map(|body| decode(&body, &what)).transpose()
        })
        .await
    }

    async fn request(
        &self,
        device: &DeviceId,
        request_id: &RequestId,
    ) -> Result<Option<RequestRecord>, StoreError> {
        let (device, request_id) = (device.clone(), request_id.clone());
        self.read(move |conn, now| {
            let what = format!("request row ({device}, {request_id})");
            let row: Option<String> = conn
                .prepare_cached(
                    "SELECT body FROM requests \
                     WHERE device = ?1 AND request_id = ?2 AND expires_at > ?3",
                )
                .and_then(|mut s| {
                    s.query_row(
                        params![device.as_str(), request_id.as_str(), now.millis()],
                        |r| r.get(0),
                    )
                    .optional()
                })
                .ctx(&what)?;
            let Some(body) = row else { return Ok(None) };
            let record: RequestRecord = decode(&body, &what)?;
            if record.device != device || record.request_id != request_id {
                return Err(StoreError::Permanent(format!(
                    "{what} holds another request"
                )));
            }
            Ok(Some(record))
        })
        .await
    }

    async fn refund(&self, refund_id: &RefundId) -> Result<Option<RefundRecord>, StoreError> {
        let refund_id = refund_id.clone();
        self.read(move |conn, _| {
            let what = format!("refund row {refund_id}");
            let row: Option<(String, Schedule)> = conn
                .prepare_cached(
                    "SELECT body, attempts, generation, in_flight_until FROM refunds \
                     WHERE refund_id = ?1",
                )
                .and_then(|mut s| {
                    s.query_row([refund_id.as_str()], |r| {
                        Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?)))
                    })
                    .optional()
                })
                .ctx(&what)?;
            let Some((body, schedule)) = row else {
                return Ok(None);
            };
            let record = with_schedule(decode(&body, &what)?, schedule, &what)?;
            if record.refund_id != refund_id {
                return Err(StoreError::Permanent(format!(
                    "{what} holds another refund"
                )));
            }
            Ok(Some(record))
        })
        .await
    }

    /// Queues the commit for the drainer (starting one if none runs) and waits for its answer, which
    /// comes once the group holding it is committed and fsynced, or rolled back.
    async fn commit(&self, commit: &Commit) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut q = lock(&self.inner.queue);
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
                inner: self.inner.clone(),
                finished: false,
            };
            drop(tokio::task::spawn_blocking(move || guard.drain()));
        }
        answer.await.map_err(|_| {
            StoreError::Unavailable("the commit was not answered: the writer stopped".into())
        })?
    }

    async fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<SessionId>, StoreError> {
        self.read(move |conn, _| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id FROM sessions WHERE deadline_at IS NOT NULL AND deadline_at <= ?1 \
                     ORDER BY deadline_at, id LIMIT ?2",
                )
                .ctx("listing due sessions")?;
            let rows = stmt
                .query_map(params![now.millis(), sql_limit(limit)], |r| {
                    r.get::<_, String>(0)
                })
                .ctx("listing due sessions")?;
            let mut out = Vec::new();
            for row in rows {
                out.push(parse_id(row.ctx("listing due sessions")?, "session row")?);
            }
            Ok(out)
        })
        .await
    }

    async fn pending_refunds(
        &self,
        due_by: Timestamp,
        limit: usize,
    ) -> Result<Vec<RefundRecord>, StoreError> {
        self.read(move |conn, _| {
            let what = "listing pending refunds";
            let mut stmt = conn
                .prepare_cached(
                    "SELECT refund_id, body, attempts, generation, in_flight_until FROM refunds \
                     WHERE status = 'pending' AND next_attempt_at <= ?2 \
                     ORDER BY next_attempt_at, refund_id LIMIT ?1",
                )
                .ctx(what)?;
            let rows = stmt
                .query_map(params![sql_limit(limit), due_by.millis()], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        (r.get(2)?, r.get(3)?, r.get(4)?),
                    ))
                })
                .ctx(what)?;
            let mut out = Vec::new();
            for row in rows {
                let (id, body, schedule) = row.ctx(what)?;
                // One unreadable row is skipped with an alert, never allowed to hide the others from
                // the sweep and the start-up re-arming (its session still holds the refund).
                let what = format!("refund row {id}");
                let record = decode::<RefundRecord>(&body, &what)
                    .and_then(|r| with_schedule(r, schedule, &what))
                    .and_then(|r| {
                        if r.refund_id.as_str() == id {
                            Ok(r)
                        } else {
                            Err(StoreError::Permanent(format!(
                                "refund row {id} holds another refund"
                            )))
                        }
                    });
                match record {
                    Ok(r) => out.push(r),
                    Err(e) => tracing::error!(
                        alert = "unreadable_row",
                        row = %id,
                        error = %e,
                        "pending refund row skipped: it cannot be read"
                    ),
                }
            }
            Ok(out)
        })
        .await
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

/// Checks every condition of `commit` and writes every row, inside the caller's transaction; any `Err`
/// leaves rows written so far for the caller to roll back.
fn apply_commit(conn: &Connection, commit: &Commit, now: Timestamp) -> Result<(), StoreError> {
    if let Some(guard) = &commit.device {
        let id = &guard.device;
        let what = format!("device row {id}");
        let stored: Option<i64> = conn
            .prepare_cached("SELECT version FROM devices WHERE id = ?1")
            .and_then(|mut s| s.query_row([id.as_str()], |r| r.get(0)).optional())
            .ctx(&what)?;
        let Some(stored) = stored else {
            return Err(StoreError::Conflict(format!(
                "device {id} is not registered"
            )));
        };
        let stored = to_u64(stored, &what)?;
        if stored != guard.expected_version {
            return Err(StoreError::Conflict(format!(
                "device {id} is at version {stored}, not {}",
                guard.expected_version
            )));
        }
        if let Some(current) = &guard.new_current {
            conn.prepare_cached(
                "UPDATE devices SET current = ?1, version = version + 1 WHERE id = ?2",
            )
            .and_then(|mut s| s.execute(params![current.as_str(), id.as_str()]))
            .ctx(&what)?;
        }
    }

    for s in &commit.sessions {
        let what = format!("session row {}", s.id);
        if s.version == 0 {
            return Err(StoreError::Permanent(format!(
                "{what}: version 0 cannot be written"
            )));
        }
        let body = encode(s, &what)?;
        let version = to_i64(s.version, &what)?;
        // The sparse deadline index holds only sessions that still have something due.
        let deadline = match s.phase {
            Phase::Closed => None,
            Phase::Open | Phase::Settling => s.deadline_at.map(Timestamp::millis),
        };
        let phase = phase_str(s.phase);
        let n = if s.version == 1 {
            conn.prepare_cached(
                "INSERT INTO sessions (id, device, phase, version, opened_at, deadline_at, body) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (id) DO NOTHING",
            )
            .and_then(|mut st| {
                st.execute(params![
                    s.id.as_str(),
                    s.device_id.as_str(),
                    phase,
                    version,
                    s.opened_at.millis(),
                    deadline,
                    body
                ])
            })
            .ctx(&what)?
        } else {
            conn.prepare_cached(
                "UPDATE sessions SET device = ?2, phase = ?3, version = ?4, opened_at = ?5, \
                 deadline_at = ?6, body = ?7 WHERE id = ?1 AND version = ?8",
            )
            .and_then(|mut st| {
                st.execute(params![
                    s.id.as_str(),
                    s.device_id.as_str(),
                    phase,
                    version,
                    s.opened_at.millis(),
                    deadline,
                    body,
                    version - 1
                ])
            })
            .ctx(&what)?
        };
        if n != 1 {
            return Err(StoreError::Conflict(if s.version == 1 {
                format!("session {} exists already", s.id)
            } else {
                format!("session {} is not at version {}", s.id, s.version - 1)
            }));
        }
    }

    if let Some((trade_no, outcome)) = &commit.trade {
        let what = format!("trade row {trade_no}");
        let body = encode(outcome, &what)?;
        let n = conn
            .prepare_cached(
                "INSERT INTO trades (trade_no, outcome) VALUES (?1, ?2) \
                 ON CONFLICT (trade_no) DO NOTHING",
            )
            .and_then(|mut s| s.execute(params![trade_no.as_str(), body]))
            .ctx(&what)?;
        if n != 1 {
            return Err(StoreError::Conflict(format!(
                "trade {trade_no} was seen already"
            )));
        }
    }

    if let Some(r) = &commit.request {
        let what = format!("request row ({}, {})", r.device, r.request_id);
        let body = encode(r, &what)?;
        // An expired row reads as absent, so it must not block a new one either.
        conn.prepare_cached(
            "DELETE FROM requests WHERE device = ?1 AND request_id = ?2 AND expires_at <= ?3",
        )
        .and_then(|mut s| {
            s.execute(params![
                r.device.as_str(),
                r.request_id.as_str(),
                now.millis()
            ])
        })
        .ctx(&what)?;
        let n = conn
            .prepare_cached(
                "INSERT INTO requests (device, request_id, expires_at, body) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (device, request_id) DO NOTHING",
            )
            .and_then(|mut s| {
                s.execute(params![
                    r.device.as_str(),
                    r.request_id.as_str(),
                    r.expires_at.millis(),
                    body
                ])
            })
            .ctx(&what)?;
        if n != 1 {
            return Err(StoreError::Conflict(format!(
                "request {} of device {} was answered already",
                r.request_id, r.device
            )));
        }
    }

    if let Some(send) = &commit.send {
        write_send(conn, send)?;
    }

    for r in &commit.refunds {
        let what = format!("refund row {}", r.refund_id);
        let body = encode(r, &what)?;
        // A new row's next attempt is its issue (the message goes out at once). A status change
        // rewrites the row and resets its send schedule, as a DynamoDB `Put` of the item does.
        conn.prepare_cached(
            "INSERT INTO refunds (refund_id, session, status, issued_at, body, next_attempt_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?4) ON CONFLICT (refund_id) DO UPDATE SET \
             session = excluded.session, status = excluded.status, \
             issued_at = excluded.issued_at, body = excluded.body, \
             next_attempt_at = excluded.next_attempt_at, in_flight_until = NULL, \
             attempts = 0, generation = 0",
        )
        .and_then(|mut s| {
            s.execute(params![
                r.refund_id.as_str(),
                r.session.as_str(),
                refund_status_str(r.status),
                r.issued_at.millis(),
                body
            ])
        })
        .ctx(&what)?;
    }
    Ok(())
}

/// A change to a pending refund's send schedule, under its condition (see `RefundSend`).
fn write_send(conn: &Connection, send: &RefundSend) -> Result<(), StoreError> {
    let what = format!("refund row {} (send schedule)", send.refund_id);
    let id = send.refund_id.as_str();
    let until = send.in_flight_until.map(Timestamp::millis);
    let next = send.next_attempt_at.millis();
    let n = match send.when {
        SendCondition::Claim {
            now,
            generation,
            attempts,
        } => conn
            .prepare_cached(
                "UPDATE refunds SET in_flight_until = ?2, next_attempt_at = ?3, \
                 attempts = attempts + 1 \
                 WHERE refund_id = ?1 AND status = 'pending' AND generation = ?5 \
                 AND attempts = ?6 AND (in_flight_until IS NULL OR in_flight_until <= ?4)",
            )
            .and_then(|mut st| {
                st.execute(params![id, until, next, now.millis(), generation, attempts])
            })
            .ctx(&what)?,
        SendCondition::Resend {
            now,
            due_by,
            generation,
        } => conn
            .prepare_cached(
                "UPDATE refunds SET in_flight_until = ?2, next_attempt_at = ?3, \
                 generation = generation + 1 \
                 WHERE refund_id = ?1 AND status = 'pending' AND generation = ?6 \
                 AND next_attempt_at <= ?5 \
                 AND (in_flight_until IS NULL OR in_flight_until <= ?4)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    id,
                    until,
                    next,
                    now.millis(),
                    due_by.millis(),
                    generation
                ])
            })
            .ctx(&what)?,
        SendCondition::HeldUntil(held) => conn
            .prepare_cached(
                "UPDATE refunds SET in_flight_until = ?2, next_attempt_at = ?3 \
                 WHERE refund_id = ?1 AND status = 'pending' AND in_flight_until = ?4",
            )
            .and_then(|mut st| st.execute(params![id, until, next, held.millis()]))
            .ctx(&what)?,
    };
    if n != 1 {
        return Err(StoreError::Conflict(format!(
            "refund {id} is not pending, or its send schedule has moved on"
        )));
    }
    Ok(())
}

/// A refund row's send schedule columns: attempts, generation, in flight until (ms).
type Schedule = (i64, i64, Option<i64>);

fn with_schedule(
    mut record: RefundRecord,
    (attempts, generation, in_flight): Schedule,
    what: &str,
) -> Result<RefundRecord, StoreError> {
    let count = |n: i64, name: &str| {
        u32::try_from(n)
            .map_err(|_| StoreError::Permanent(format!("{what}: {name} {n} is not a count")))
    };
    record.attempts = count(attempts, "attempts")?;
    record.generation = count(generation, "generation")?;
    record.in_flight_until = in_flight.map(Timestamp::from_millis);
    Ok(record)
}

fn migrate(conn: &mut Connection, location: &Location) -> Result<(), StoreError> {
    let what = format!("preparing the schema of {location}");
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .ctx(&what)?;
    let version: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .ctx(&what)?;
    match version {
        0 => {
            tx.execute_batch(SCHEMA).ctx(&what)?;
            tx.execute_batch(SCHEMA_2).ctx(&what)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                .ctx(&what)?;
        }
        1 => {
            tx.execute_batch(SCHEMA_2).ctx(&what)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                .ctx(&what)?;
        }
        SCHEMA_VERSION => {}
        other => {
            return Err(StoreError::Permanent(format!(
                "{location} has schema version {other}; this build knows {SCHEMA_VERSION}"
            )))
        }
    }
    tx.commit().ctx(&what)
}

fn prune(conn: &Connection, now: Timestamp) -> Result<usize, StoreError> {
    conn.prepare_cached("DELETE FROM requests WHERE expires_at <= ?1")
        .and_then(|mut s| s.execute([now.millis()]))
        .ctx("pruning expired request rows")
}

fn read_device(conn: &Connection, id: &DeviceId) -> Result<Option<DeviceRecord>, StoreError> {
    let what = format!("device row {id}");
    type Row = (String, Option<String>, Option<String>, i64);
    let row: Option<Row> = conn
        .prepare_cached("SELECT record, qrcode, current, version FROM devices WHERE id = ?1")
        .and_then(|mut s| {
            s.query_row([id.as_str()], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()
        })
        .ctx(&what)?;
    let Some((record, qrcode, current, version)) = row else {
        return Ok(None);
    };
    let mut rec: DeviceRecord = decode(&record, &what)?;
    if &rec.device.id != id {
        return Err(StoreError::Permanent(format!(
            "{what} holds device {}",
            rec.device.id
        )));
    }
    rec.qrcode = qrcode.map(|q| decode(&q, &what)).transpose()?;
    rec.current = current.map(|c| parse_id(c, &what)).transpose()?;
    rec.version = to_u64(version, &what)?;
    Ok(Some(rec))
}

fn read_session(conn: &Connection, id: &SessionId) -> Result<Option<Session>, StoreError> {
    let what = format!("session row {id}");
    let row: Option<(i64, String)> = conn
        .prepare_cached("SELECT version, body FROM sessions WHERE id = ?1")
        .and_then(|mut s| {
            s.query_row([id.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .ctx(&what)?;
    row.map(|(version, body)| decode_session(id.as_str(), version, &body))
        .transpose()
}

fn decode_session(id: &str, version: i64, body: &str) -> Result<Session, StoreError> {
    let what = format!("session row {id}");
    let s: Session = decode(body, &what)?;
    if s.id.as_str() != id {
        return Err(StoreError::Permanent(format!(
            "{what} holds session {}",
            s.id
        )));
    }
    if i64::try_from(s.version).ok() != Some(version) {
        return Err(StoreError::Permanent(format!(
            "{what}: version column {version} disagrees with the body's {}",
            s.version
        )));
    }
    Ok(s)
}

fn phase_str(p: Phase) -> &'static str {
    match p {
        Phase::Open => "open",
        Phase::Settling => "settling",
        Phase::Closed => "closed",
    }
}

fn refund_status_str(s: RefundStatus) -> &'static str {
    match s {
        RefundStatus::Pending => "pending",
        RefundStatus::Succeeded => "succeeded",
        RefundStatus::Failed => "failed",
    }
}

fn encode<T: Serialize>(value: &T, what: &str) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Permanent(format!("{what} cannot be encoded: {e}")))
}

fn decode<T: DeserializeOwned>(body: &str, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(body).map_err(|e| StoreError::Permanent(format!("{what} is corrupt: {e}")))
}

fn parse_id<T: TryFrom<String>>(raw: String, what: &str) -> Result<T, StoreError>
where
    T::Error: Display,
{
    T::try_from(raw.clone())
        .map_err(|e| StoreError::Permanent(format!("{what} holds a bad id {raw:?}: {e}")))
}

fn to_i64(v: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Permanent(format!("{what}: version {v} is too large")))
}

fn to_u64(v: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Permanent(format!("{what}: negative version {v}")))
}

fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Maps SQLite's errors to the port's: lock waits and I/O trouble are worth retrying, anything else
/// (a corrupt file, a type mismatch in a row) is not.
trait Ctx<T> {
    fn ctx(self, what: impl Display) -> Result<T, StoreError>;
}

impl<T> Ctx<T> for Result<T, rusqlite::Error> {
    fn ctx(self, what: impl Display) -> Result<T, StoreError> {
        self.map_err(|e| {
            let retryable = matches!(
                e.sqlite_error_code(),
                Some(
                    ErrorCode::DatabaseBusy
                        | ErrorCode::DatabaseLocked
                        | ErrorCode::SystemIoFailure
                        | ErrorCode::DiskFull
                        | ErrorCode::OutOfMemory
                )
            );
            if retryable {
                StoreError::Unavailable(format!("{what}: {e}"))
            } else {
                StoreError::Permanent(format!("{what}: {e}"))
            }
        })
    }
}
