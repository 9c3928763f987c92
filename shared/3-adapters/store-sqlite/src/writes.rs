//! The SQL that changes the database: the schema and its migrations, the conditional writes of one
//! commit, and the pruning of expired request rows.
//!
//! Kept together so every statement that writes a table sits next to the `CREATE TABLE` it must
//! agree with; `store.rs`'s header lists the tables and which statement serves each access pattern.

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use vendpay_app::{Commit, RefundSend, SendCondition, StoreError};
use vendpay_domain::{Phase, Timestamp};

use crate::db::Location;
use crate::row_codec::{encode, phase_str, refund_status_str, to_i64, to_u64, Ctx};

const SCHEMA_VERSION: i64 = 2;

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

pub(crate) fn migrate(conn: &mut Connection, location: &Location) -> Result<(), StoreError> {
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
            return Err(StoreError::Permanent(
                format!("{location} has schema version {other}; this build knows {SCHEMA_VERSION}")
                    .into(),
            ))
        }
    }
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
