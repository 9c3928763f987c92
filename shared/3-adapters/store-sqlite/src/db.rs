//! The database handle every clone of the store shares: where the database lives, the one writer
//! connection, the idle read-only connections, the group commit's queue and the clock. The store's
//! operations (`store.rs`), the group commit (`group_commit.rs`) and the SQL (`writes.rs`) all sit on
//! it, and it depends on none of them.

use std::collections::VecDeque;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;
use vendpay_app::{Commit, StoreError};
use vendpay_domain::{Clock, Timestamp};

use crate::row_codec::Ctx;

pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle read-only connections kept open; a burst beyond this opens more and closes them after.
pub(crate) const MAX_IDLE_READERS: usize = 64;
/// Prepared statements cached per connection (the commit path alone uses about fifteen).
pub(crate) const STATEMENT_CACHE: usize = 64;

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

/// Shared by every clone; `group_commit` reaches the writer, the queue and the clock through it.
pub(crate) struct Inner {
    /// The one connection that writes. Only the group-commit drainer and the rare direct writes
    /// (`register`, `set_qrcode`, `put_product`, `write_slots`, pruning) lock it, and in memory mode
    /// the reads too.
    pub(crate) writer: Mutex<Writer>,
    /// Commits waiting for the drainer, and whether a drainer is running.
    pub(crate) queue: Mutex<Queue>,
    /// Idle read-only connections (file databases only); a read takes one or opens one.
    pub(crate) readers: Mutex<Vec<Connection>>,
    /// Decides which request rows have expired; the ledger's clock in tests, the system clock otherwise.
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) location: Location,
}

pub(crate) struct Writer {
    pub(crate) conn: Connection,
    pub(crate) last_prune: Timestamp,
}

impl Inner {
    /// The writer connection, outside any transaction. A panic while it was held may have left a
    /// batch's transaction open; rolling it back makes the connection sound again, and the callers of
    /// that batch were answered "unavailable" (their reply channels were dropped), which is true.
    pub(crate) fn lock_writer(&self) -> Result<MutexGuard<'_, Writer>, StoreError> {
        let w = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if !w.conn.is_autocommit() {
            w.conn
                .execute_batch("ROLLBACK")
                .ctx("rolling back a transaction left open")?;
        }
        Ok(w)
    }
}

/// Locks a mutex whose data stays consistent whatever a panicking holder did (a queue or a pool of
/// idle connections, changed by single calls that complete or do nothing).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A read-only connection on the database file (WAL lets it read while the writer writes).
pub(crate) fn open_reader(path: &Path, location: &Location) -> Result<Connection, StoreError> {
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

/// Commits waiting for the drainer, and whether a drainer is running.
#[derive(Default)]
pub(crate) struct Queue {
    pub(crate) jobs: VecDeque<Job>,
    pub(crate) draining: bool,
}

/// One queued commit and where its answer goes.
pub(crate) struct Job {
    pub(crate) commit: Commit,
    pub(crate) reply: oneshot::Sender<Result<(), StoreError>>,
}
