//! The SQL that changes the database: the schema and its migrations, the conditional writes of one
//! commit and of a planogram change, and the pruning of expired request rows.
//!
//! Kept together so every statement that writes a table sits next to the `CREATE TABLE` it must
//! agree with; `store.rs`'s header lists the tables and which statement serves each access pattern.

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use vendpay_app::{Commit, RefundSend, SendCondition, StoreError};
use vendpay_domain::{DeviceId, Phase, Product, SlotStock, SlotWrites, Timestamp};

use crate::db::Location;
use crate::row_codec::{encode, phase_str, refund_status_str, to_i64, to_u64, Ctx};

/// The schema version a database is migrated to: one per migration below.
const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

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

/// Version 3: the catalogue and the machines' slot rows (planograms with stock and reservations).
/// The primary key of `slots` also serves the per-machine reads and the list of stocked machines.
const SCHEMA_3: &str = "
CREATE TABLE products (
    sku  TEXT PRIMARY KEY NOT NULL,
    body TEXT NOT NULL
) STRICT;

CREATE TABLE slots (
    device  TEXT NOT NULL,
    slot    TEXT NOT NULL,
    version INTEGER NOT NULL,
    body    TEXT NOT NULL,
    PRIMARY KEY (device, slot)
) STRICT;
";

/// Version 4 (`facts::SCHEMA_4`): the sales facts.
/// The migrations, in order: `MIGRATIONS[v]` takes a database at schema version `v` to `v + 1`.
const MIGRATIONS: [&str; 4] = [SCHEMA, SCHEMA_2, SCHEMA_3, crate::facts::SCHEMA_4];

pub(crate) fn migrate(conn: &mut Connection, location: &Location) -> Result<(), StoreError> {
    let what = format!("preparing the schema of {location}");
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .ctx(&what)?;
    let version: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .ctx(&what)?;
    let Some(pending) = usize::try_from(version)
        .ok()
        .and_then(|v| MIGRATIONS.get(v..))
    else {
        return Err(StoreError::Permanent(
            format!("{location} has schema version {version}; this build knows {SCHEMA_VERSION}")
                .into(),
        ));
    };
    if pending.is_empty() {
        return Ok(());
    }
    for step in pending {
        tx.execute_batch(step).ctx(&what)?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .ctx(&what)?;
    tx.commit().ctx(&what)
}

pub(crate) fn prune(conn: &Connection, now: Timestamp) -> Result<usize, StoreError> {
    conn.prepare_cached("DELETE FROM requests WHERE expires_at <= ?1")
        .and_then(|mut s| s.execute([now.millis()]))
        .ctx("pruning expired request rows")
}

/// Checks every condition of `commit` and writes every row, inside the caller's transaction; any `Err`
/// leaves rows written so far for the caller to roll back.
pub(crate) fn apply_commit(
    conn: &Connection,
    commit: &Commit,
    now: Timestamp,
) -> Result<(), StoreError> {
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
            return Err(StoreError::Permanent(
                format!("{what}: version 0 cannot be written").into(),
            ));
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
    for row in &commit.stock {
        // Only a planogram creates slot rows: a money decision changes rows that exist.
        if update_slot(conn, row)? != 1 {
            return Err(StoreError::Conflict(format!(
                "slot {} of device {} is not at version {}",
                row.slot,
                row.device_id,
                row.version.saturating_sub(1)
            )));
        }
    }
    crate::facts::insert(conn, &commit.facts)
}

/// Creates or replaces a product.
pub(crate) fn put_product(conn: &Connection, product: &Product) -> Result<(), StoreError> {
    let what = format!("product row {}", product.sku);
    let body = encode(product, &what)?;
    conn.prepare_cached(
        "INSERT INTO products (sku, body) VALUES (?1, ?2) \
         ON CONFLICT (sku) DO UPDATE SET body = excluded.body",
    )
    .and_then(|mut s| s.execute(params![product.sku.as_str(), body]))
    .ctx(&what)?;
    Ok(())
}

/// Removes and writes one machine's slot rows, each under its condition (see
/// `InventoryStore::write_slots`), inside the caller's transaction; any `Err` leaves rows written so
/// far for the caller to roll back.
pub(crate) fn write_slots(
    conn: &Connection,
    device: &DeviceId,
    writes: &SlotWrites,
) -> Result<(), StoreError> {
    for row in writes.remove.iter().chain(&writes.write) {
        if &row.device_id != device {
            return Err(StoreError::Permanent(
                format!(
                    "slot {} of device {} cannot be written with the slot map of {device}",
                    row.slot, row.device_id
                )
                .into(),
            ));
        }
    }
    for row in &writes.remove {
        let what = format!("slot row ({device}, {})", row.slot);
        let version = to_i64(row.version, &what)?;
        let n = conn
            .prepare_cached("DELETE FROM slots WHERE device = ?1 AND slot = ?2 AND version = ?3")
            .and_then(|mut s| s.execute(params![device.as_str(), row.slot.as_str(), version]))
            .ctx(&what)?;
        if n != 1 {
            return Err(StoreError::Conflict(format!(
                "slot {} of device {device} is not at version {}",
                row.slot, row.version
            )));
        }
    }
    for row in &writes.write {
        let n = if row.version == 1 {
            let what = format!("slot row ({device}, {})", row.slot);
            let body = encode(row, &what)?;
            conn.prepare_cached(
                "INSERT INTO slots (device, slot, version, body) VALUES (?1, ?2, 1, ?3) \
                 ON CONFLICT (device, slot) DO NOTHING",
            )
            .and_then(|mut s| s.execute(params![device.as_str(), row.slot.as_str(), body]))
            .ctx(&what)?
        } else {
            update_slot(conn, row)?
        };
        if n != 1 {
            return Err(StoreError::Conflict(if row.version == 1 {
                format!("slot {} of device {device} exists already", row.slot)
            } else {
                format!(
                    "slot {} of device {device} is not at version {}",
                    row.slot,
                    row.version - 1
                )
            }));
        }
    }
    Ok(())
}

/// Writes a slot row over the stored one at `version - 1`; the number of rows written (0: the
/// condition failed).
fn update_slot(conn: &Connection, row: &SlotStock) -> Result<usize, StoreError> {
    let what = format!("slot row ({}, {})", row.device_id, row.slot);
    if row.version < 2 {
        // Version 1 is a new row (absent before), which only `write_slots` creates; 0 is never valid.
        return if row.version == 0 {
            Err(StoreError::Permanent(
                format!("{what}: version 0 cannot be written").into(),
            ))
        } else {
            Ok(0)
        };
    }
    let body = encode(row, &what)?;
    let version = to_i64(row.version, &what)?;
    conn.prepare_cached(
        "UPDATE slots SET version = ?3, body = ?4 \
         WHERE device = ?1 AND slot = ?2 AND version = ?5",
    )
    .and_then(|mut s| {
        s.execute(params![
            row.device_id.as_str(),
            row.slot.as_str(),
            version,
            body,
            version - 1
        ])
    })
    .ctx(&what)
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
