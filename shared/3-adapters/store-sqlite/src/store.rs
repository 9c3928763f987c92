//! [`SqliteStore`]: the `DeviceStore`, `SessionStore` and `InventoryStore` ports on one SQLite database.
//!
//! Here: opening, the reader pool and the port impls. The group commit described below is in
//! `group_commit`, the schema and a commit's SQL in `writes`, rows to port types in `row_codec`, so
//! the concurrency, the SQL and the encoding can each be checked without reading the others.
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
//!   never a group in progress. `machine` is one read transaction, so the device, its current session
//!   and its slot rows come from one snapshot. An in-memory database (tests) has a single connection,
//!   so there reads lock the writer connection.
//! - **Slot maps and restocks** (`InventoryStore::write_slots`) do not go through the group commit: each
//!   is one `BEGIN IMMEDIATE` transaction of its own on the writer connection, taken between two
//!   groups, so a sale's commit is judged either wholly before it or wholly after it.
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
//! | `products` | `sku` | `body` (JSON `Product`) | the catalogue |
//! | `slots` | `(device, slot)` | `version`, `body` (JSON `SlotStock`) | a machine's planogram with stock and reservations; `version` is the body's, the column the conditions compare |
//! | `facts` | `id` | one column per fact field (`docs/sales.md`) | written in the commit's savepoint, `ON CONFLICT DO NOTHING`; never changed |
//!
//! Indexes: `sessions_by_device (device, opened_at, id)`; the partial `sessions_by_deadline (deadline_at, id)
//! WHERE deadline_at IS NOT NULL` (the sweep and the re-arm list); `requests_by_expiry (expires_at)`;
//! the partial `refunds_pending (next_attempt_at, refund_id) WHERE status = 'pending'`;
//! `facts_by_time (at, id)` and the partial `facts_sales_by_buyer (buyer_key, at, id) WHERE kind = 'sale'`.
//! `PRAGMA user_version` holds the schema version (4; migrations in `writes` take versions 0 … 3
//! there on open: version 2 added the send schedule, version 3 `products` and `slots`, version 4
//! `facts`).
//!
//! ## Access patterns
//! | operation | SQL |
//! |---|---|
//! | `register` | `INSERT INTO devices .. ON CONFLICT DO NOTHING` |
//! | `device`, `machine` | point read of `devices` (+ the current `sessions` row and the device's `slots` rows, in one read transaction) |
//! | `set_qrcode` | `UPDATE devices SET qrcode` by key |
//! | `session`, `trade`, `refund`, `product` | point read by key |
//! | `slots` | `slots` by primary key prefix `device`, ordered by slot |
//! | `request` | point read by key, `AND expires_at > now` |
//! | `commit` | in one savepoint of a group transaction: device version check (+ `UPDATE .. version = version + 1`); per session `INSERT .. ON CONFLICT DO NOTHING` (version 1) or `UPDATE .. WHERE version = v - 1`; `INSERT .. ON CONFLICT DO NOTHING` into `trades` and `requests` (after deleting an expired row of the same key); refund upserts; a send-schedule change is one `UPDATE .. WHERE status = 'pending' AND` its condition; per stock row `UPDATE slots .. WHERE device, slot AND version = v - 1` (a row that is not there is a conflict: only a slot map creates rows) |
//! | `due` | `sessions_by_deadline`: `deadline_at <= now` ordered by deadline |
//! | `pending_deadlines` | `sessions_by_deadline`: every not-closed session with a deadline (re-arm at start) |
//! | `pending_refunds` | `refunds_pending`: `next_attempt_at <= due_by`, earliest first |
//! | `sessions_of_device` | `sessions_by_device`, newest first |
//! | `put_product` | `INSERT INTO products .. ON CONFLICT (sku) DO UPDATE` |
//! | `products` | `products` ordered by sku |
//! | `write_slots` | in one transaction: per removed row `DELETE .. WHERE version = v`; per written row `INSERT .. ON CONFLICT DO NOTHING` (version 1) or `UPDATE .. WHERE version = v - 1`; any row changing nothing rolls it all back as a conflict |
//! | `stocked_devices` | `SELECT DISTINCT device FROM slots` ordered by device (the primary key), so it is always up to date |
//! | `facts(from, to)` | `facts_by_time`: `at >= from AND at < to` ordered by `at, id` |
//! | `buyers_before(t)` | `facts_sales_by_buyer`: per buyer the first sale and the latest (a window over `at < t`) |
//! | pruning | `DELETE FROM requests WHERE expires_at <= now` on open and at most hourly after a commit |
//!
//! Nothing read from the database is trusted: a row that does not decode, or whose key disagrees with
//! its body, is `StoreError::Permanent` naming the row, never a panic.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use vendpay_app::{
    Commit, DeadlineMessage, DeviceRecord, DeviceStore, FactStore, Failure, InventoryStore,
    Machine, QrCode, RefundRecord, RequestRecord, SessionStore, StoreError,
};
use vendpay_domain::facts::{BuyerHistory, Fact};
use vendpay_domain::{
    Clock, DeviceId, PaymentOutcome, Product, RefundId, RequestId, Session, SessionId, Sku, Slot,
    SlotStock, SlotWrites, SystemClock, Timestamp, TradeNo,
};

use crate::db::Queue;
use crate::db::{
    lock, open_reader, Inner, Location, Writer, BUSY_TIMEOUT, MAX_IDLE_READERS, STATEMENT_CACHE,
};
use crate::group_commit;
use crate::row_codec::{
    decode, decode_product, decode_refund, decode_session, encode, parse_id, read_device,
    read_product, read_refund, read_session, read_slots, sql_limit, to_i64, Ctx,
};
use crate::writes::{self, migrate, prune};

/// The embedded store. Cheap to clone; clones share the writer, its commit queue and the readers.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
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
            .map_err(|e| {
                StoreError::Unavailable(Failure::caused_by("opening the database failed", e))
            })?
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

    /// Stops fsyncing each group of commits (`synchronous = OFF`): only for a store whose loss costs
    /// nothing — `vendpay simulate`'s synthetic data, a load test — never one that holds money, where
    /// an answered payment must survive a power cut (see "Durability" above).
    pub async fn without_fsync(&self) -> Result<(), StoreError> {
        self.write(|w, _| {
            w.conn
                .pragma_update(None, "synchronous", "OFF")
                .ctx("turning off fsync")
        })
        .await
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
        .map_err(|e| StoreError::Unavailable(Failure::caused_by("storage task failed", e)))?
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
        .map_err(|e| StoreError::Unavailable(Failure::caused_by("storage task failed", e)))?
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
                return Err(StoreError::Permanent(
                    format!("device {id} is not registered").into(),
                ));
            }
            Ok(())
        })
        .await
    }
}

impl SqliteStore {
    /// The machine, its session and slot rows and, for a command naming `selling`, the product that
    /// slot sells at its catalogue price: all from one read transaction.
    async fn read_machine(
        &self,
        id: &DeviceId,
        selling: Option<&Slot>,
    ) -> Result<Option<(Machine, Option<Product>)>, StoreError> {
        let id = id.clone();
        let selling = selling.cloned();
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
                    StoreError::Permanent(
                        format!(
                            "device row {id} names current session {sid}, which does not exist"
                        )
                        .into(),
                    )
                })?),
            };
            let slots = read_slots(&tx, &id)?;
            let product = match selling
                .and_then(|slot| slots.iter().find(|r| r.slot == slot && r.price.is_none()))
            {
                Some(row) => read_product(&tx, &row.sku)?,
                None => None,
            };
            tx.commit().ctx(&what)?;
            Ok(Some((
                Machine {
                    record,
                    current,
                    slots,
                },
                product,
            )))
        })
        .await
    }
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn machine(&self, id: &DeviceId) -> Result<Option<Machine>, StoreError> {
        Ok(self.read_machine(id, None).await?.map(|(m, _)| m))
    }

    async fn machine_selling(
        &self,
        id: &DeviceId,
        slot: &Slot,
    ) -> Result<Option<(Machine, Option<Product>)>, StoreError> {
        self.read_machine(id, Some(slot)).await
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
                return Err(StoreError::Permanent(
                    format!("{what} holds another request").into(),
                ));
            }
            Ok(Some(record))
        })
        .await
    }

    async fn refund(&self, refund_id: &RefundId) -> Result<Option<RefundRecord>, StoreError> {
        let refund_id = refund_id.clone();
        self.read(move |conn, _| read_refund(conn, &refund_id))
            .await
    }

    async fn slots(&self, device: &DeviceId) -> Result<Vec<SlotStock>, StoreError> {
        let device = device.clone();
        self.read(move |conn, _| read_slots(conn, &device)).await
    }

    async fn product(&self, sku: &Sku) -> Result<Option<Product>, StoreError> {
        let sku = sku.clone();
        self.read(move |conn, _| read_product(conn, &sku)).await
    }

    /// Queues the commit for the drainer (starting one if none runs) and waits for its answer, which
    /// comes once the group holding it is committed and fsynced, or rolled back.
    async fn commit(&self, commit: &Commit) -> Result<(), StoreError> {
        group_commit::submit(&self.inner, commit).await
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
                match decode_refund(&id, &body, schedule) {
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

/// Below a week, a read of facts is one query.
const FACT_SLICE_MIN_MS: i64 = 7 * 24 * 3600 * 1000;

#[async_trait]
impl FactStore for SqliteStore {
    /// A long period is read as slices of time on several reader connections at once (decoding rows
    /// is the cost of a year's report), concatenated in order.
    async fn facts(&self, from: Timestamp, to: Timestamp) -> Result<Vec<Fact>, StoreError> {
        let slices: i64 = match self.inner.location {
            Location::File(_) if to.millis().saturating_sub(from.millis()) > FACT_SLICE_MIN_MS => 4,
            _ => 1,
        };
        // Bounded to the facts that exist, so an open-ended read is not cut into empty slices.
        let (lo, hi) = match slices {
            1 => (from, to),
            _ => {
                let (first, last) = self.read(crate::facts::time_range).await?;
                match (first, last) {
                    (Some(f), Some(l)) => (
                        from.max(f),
                        to.min(l.plus(std::time::Duration::from_millis(1))),
                    ),
                    _ => return Ok(Vec::new()),
                }
            }
        };
        if slices == 1 || hi <= lo {
            return self
                .read(move |conn, _| crate::facts::read(conn, lo, hi))
                .await;
        }
        let step = (hi.millis() - lo.millis()).div_euclid(slices) + 1;
        let slice = |i: i64| {
            let a = Timestamp::from_millis(lo.millis() + i * step);
            let b = Timestamp::from_millis((lo.millis() + (i + 1) * step).min(hi.millis()));
            self.read(move |conn, _| crate::facts::read(conn, a, b))
        };
        let parts = tokio::join!(slice(0), slice(1), slice(2), slice(3));
        let mut out = parts.0?;
        for part in [parts.1, parts.2, parts.3] {
            out.extend(part?);
        }
        Ok(out)
    }

    async fn buyers_before(&self, before: Timestamp) -> Result<Vec<BuyerHistory>, StoreError> {
        self.read(move |conn, _| crate::facts::buyers_before(conn, before))
            .await
    }
}

#[async_trait]
impl InventoryStore for SqliteStore {
    async fn put_product(&self, product: &Product) -> Result<(), StoreError> {
        let product = product.clone();
        self.write(move |w, _| writes::put_product(&w.conn, &product))
            .await
    }

    async fn products(&self) -> Result<Vec<Product>, StoreError> {
        self.read(|conn, _| {
            let what = "listing products";
            let mut stmt = conn
                .prepare_cached("SELECT sku, body FROM products ORDER BY sku")
                .ctx(what)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                .ctx(what)?;
            let mut out = Vec::new();
            for row in rows {
                let (sku, body) = row.ctx(what)?;
                out.push(decode_product(&sku, &body)?);
            }
            Ok(out)
        })
        .await
    }

    /// One `BEGIN IMMEDIATE` transaction on the writer connection (between two groups of commits, so a
    /// sale's commit is judged either before it or after it): every condition holds and every row is
    /// written, or it rolls back.
    async fn write_slots(&self, device: &DeviceId, slots: &SlotWrites) -> Result<(), StoreError> {
        let (device, slots) = (device.clone(), slots.clone());
        self.write(move |w, _| {
            let what = format!("writing the slots of device {device}");
            let tx = w
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .ctx(&what)?;
            // On an error the transaction is dropped, which rolls it back.
            writes::write_slots(&tx, &device, &slots)?;
            tx.commit().ctx(&what)
        })
        .await
    }

    async fn stocked_devices(&self) -> Result<Vec<DeviceId>, StoreError> {
        self.read(|conn, _| {
            let what = "listing stocked devices";
            let mut stmt = conn
                .prepare_cached("SELECT DISTINCT device FROM slots ORDER BY device")
                .ctx(what)?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0)).ctx(what)?;
            let mut out = Vec::new();
            for row in rows {
                out.push(parse_id(row.ctx(what)?, "slot row")?);
            }
            Ok(out)
        })
        .await
    }
}
