//! The row codec: how port and domain values become SQLite rows and back (JSON bodies, status and
//! phase strings, ids, versions, the refund send schedule), the point reads that decode a row, and
//! how SQLite's errors become the port's.
//!
//! One codec, because nothing read from the database is trusted: decoding is where a bad row becomes
//! `StoreError::Permanent` naming it, never a panic, and sharing it keeps that uniform across reads.

use std::fmt::Display;

use rusqlite::{Connection, ErrorCode, OptionalExtension};
use serde::de::DeserializeOwned;
use serde::Serialize;
use vendpay_app::{DeviceRecord, Failure, RefundRecord, StoreError};
use vendpay_domain::{
    DeviceId, Phase, Product, RefundId, RefundStatus, Session, SessionId, Sku, SlotStock, Timestamp,
};

/// A refund row's send schedule columns: attempts, generation, in flight until (ms).
pub(crate) type Schedule = (i64, i64, Option<i64>);

pub(crate) fn with_schedule(
    mut record: RefundRecord,
    (attempts, generation, in_flight): Schedule,
    what: &str,
) -> Result<RefundRecord, StoreError> {
    let count = |n: i64, name: &str| {
        u32::try_from(n)
            .map_err(|_| StoreError::Permanent(format!("{what}: {name} {n} is not a count").into()))
    };
    record.attempts = count(attempts, "attempts")?;
    record.generation = count(generation, "generation")?;
    record.in_flight_until = in_flight.map(Timestamp::from_millis);
    Ok(record)
}

/// The refund row keyed `id`, with its send schedule; a body naming another refund is corrupt.
pub(crate) fn decode_refund(
    id: &str,
    body: &str,
    schedule: Schedule,
) -> Result<RefundRecord, StoreError> {
    let what = format!("refund row {id}");
    let record = with_schedule(decode(body, &what)?, schedule, &what)?;
    if record.refund_id.as_str() != id {
        return Err(StoreError::Permanent(
            format!("{what} holds another refund").into(),
        ));
    }
    Ok(record)
}

pub(crate) fn read_device(
    conn: &Connection,
    id: &DeviceId,
) -> Result<Option<DeviceRecord>, StoreError> {
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
        return Err(StoreError::Permanent(
            format!("{what} holds device {}", rec.device.id).into(),
        ));
    }
    rec.qrcode = qrcode.map(|q| decode(&q, &what)).transpose()?;
    rec.current = current.map(|c| parse_id(c, &what)).transpose()?;
    rec.version = to_u64(version, &what)?;
    Ok(Some(rec))
}

pub(crate) fn read_session(
    conn: &Connection,
    id: &SessionId,
) -> Result<Option<Session>, StoreError> {
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

pub(crate) fn read_refund(
    conn: &Connection,
    refund_id: &RefundId,
) -> Result<Option<RefundRecord>, StoreError> {
    let what = format!("refund row {refund_id}");
    let row: Option<(String, Schedule)> = conn
        .prepare_cached(
            "SELECT body, attempts, generation, in_flight_until FROM refunds WHERE refund_id = ?1",
        )
        .and_then(|mut s| {
            s.query_row([refund_id.as_str()], |r| {
                Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?)))
            })
            .optional()
        })
        .ctx(&what)?;
    row.map(|(body, schedule)| decode_refund(refund_id.as_str(), &body, schedule))
        .transpose()
}

/// A machine's slot rows, ordered by slot. A row that cannot be read is left out with an alert naming
/// it: one damaged slot must never stop the machine taking money or its sessions settling (its
/// stock is then simply not kept until an operator fixes the row).
pub(crate) fn read_slots(
    conn: &Connection,
    device: &DeviceId,
) -> Result<Vec<SlotStock>, StoreError> {
    let what = format!("reading the slots of device {device}");
    let mut stmt = conn
        .prepare_cached("SELECT slot, version, body FROM slots WHERE device = ?1 ORDER BY slot")
        .ctx(&what)?;
    let rows = stmt
        .query_map([device.as_str()], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .ctx(&what)?;
    let mut out = Vec::new();
    for row in rows {
        let (slot, version, body) = row.ctx(&what)?;
        match decode_slot(device, &slot, version, &body) {
            Ok(r) => out.push(r),
            Err(e) => tracing::error!(
                alert = "unreadable_row",
                device = %device,
                slot = %slot,
                error = %e,
                "slot row left out: it cannot be read"
            ),
        }
    }
    Ok(out)
}

/// The slot row keyed `(device, slot)`; a body naming another slot, or another version than the
/// column's, is corrupt.
pub(crate) fn decode_slot(
    device: &DeviceId,
    slot: &str,
    version: i64,
    body: &str,
) -> Result<SlotStock, StoreError> {
    let what = format!("slot row ({device}, {slot})");
    let row: SlotStock = decode(body, &what)?;
    if &row.device_id != device || row.slot.as_str() != slot {
        return Err(StoreError::Permanent(
            format!("{what} holds slot {} of device {}", row.slot, row.device_id).into(),
        ));
    }
    if i64::try_from(row.version).ok() != Some(version) {
        return Err(StoreError::Permanent(
            format!(
                "{what}: version column {version} disagrees with the body's {}",
                row.version
            )
            .into(),
        ));
    }
    Ok(row)
}

pub(crate) fn read_product(conn: &Connection, sku: &Sku) -> Result<Option<Product>, StoreError> {
    let what = format!("product row {sku}");
    let row: Option<String> = conn
        .prepare_cached("SELECT body FROM products WHERE sku = ?1")
        .and_then(|mut s| s.query_row([sku.as_str()], |r| r.get(0)).optional())
        .ctx(&what)?;
    row.map(|body| decode_product(sku.as_str(), &body))
        .transpose()
}

/// The product row keyed `sku`; a body naming another product is corrupt.
pub(crate) fn decode_product(sku: &str, body: &str) -> Result<Product, StoreError> {
    let what = format!("product row {sku}");
    let p: Product = decode(body, &what)?;
    if p.sku.as_str() != sku {
        return Err(StoreError::Permanent(
            format!("{what} holds product {}", p.sku).into(),
        ));
    }
    Ok(p)
}

pub(crate) fn decode_session(id: &str, version: i64, body: &str) -> Result<Session, StoreError> {
    let what = format!("session row {id}");
    let s: Session = decode(body, &what)?;
    if s.id.as_str() != id {
        return Err(StoreError::Permanent(
            format!("{what} holds session {}", s.id).into(),
        ));
    }
    if i64::try_from(s.version).ok() != Some(version) {
        return Err(StoreError::Permanent(
            format!(
                "{what}: version column {version} disagrees with the body's {}",
                s.version
            )
            .into(),
        ));
    }
    Ok(s)
}

pub(crate) fn phase_str(p: Phase) -> &'static str {
    match p {
        Phase::Open => "open",
        Phase::Settling => "settling",
        Phase::Closed => "closed",
    }
}

pub(crate) fn refund_status_str(s: RefundStatus) -> &'static str {
    match s {
        RefundStatus::Pending => "pending",
        RefundStatus::Succeeded => "succeeded",
        RefundStatus::Failed => "failed",
    }
}

pub(crate) fn encode<T: Serialize>(value: &T, what: &str) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Permanent(format!("{what} cannot be encoded: {e}").into()))
}

pub(crate) fn decode<T: DeserializeOwned>(body: &str, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(body)
        .map_err(|e| StoreError::Permanent(format!("{what} is corrupt: {e}").into()))
}

pub(crate) fn parse_id<T: TryFrom<String>>(raw: String, what: &str) -> Result<T, StoreError>
where
    T::Error: Display,
{
    T::try_from(raw.clone())
        .map_err(|e| StoreError::Permanent(format!("{what} holds a bad id {raw:?}: {e}").into()))
}

pub(crate) fn to_i64(v: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(v)
        .map_err(|_| StoreError::Permanent(format!("{what}: version {v} is too large").into()))
}

pub(crate) fn to_u64(v: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v)
        .map_err(|_| StoreError::Permanent(format!("{what}: negative version {v}").into()))
}

pub(crate) fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Maps SQLite's errors to the port's: lock waits and I/O trouble are worth retrying, anything else
/// (a corrupt file, a type mismatch in a row) is not.
pub(crate) trait Ctx<T> {
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
            let failure = Failure::caused_by(what.to_string(), e);
            if retryable {
                StoreError::Unavailable(failure)
            } else {
                StoreError::Permanent(failure)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_slot_row_is_a_permanent_error_naming_it() {
        let device = DeviceId::parse("vm-1").unwrap();
        let body = r#"{"device_id":"vm-1","slot":"A1","sku":"cola","capacity":8,"stock":8,"reserved":0,"version":2}"#;
        assert!(decode_slot(&device, "A1", 2, body).is_ok());
        for (slot, version, body, says) in [
            ("A1", 3, body, "version column 3 disagrees"),
            ("B1", 2, body, "holds slot A1"),
            ("A1", 1, "{", "slot row (vm-1, A1)"),
        ] {
            match decode_slot(&device, slot, version, body) {
                Err(StoreError::Permanent(m)) => assert!(m.to_string().contains(says), "{m}"),
                other => panic!("expected a permanent error, got {other:?}"),
            }
        }
    }
}
