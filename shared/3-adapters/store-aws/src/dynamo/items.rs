//! The table's vocabulary: attribute names, keys, typed attribute values, the item codec (nothing
//! read is trusted: a missing or malformed attribute is a permanent error naming the item), item
//! sizes, and the deadline index's shards.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};
use vendpay_app::{DeviceRecord, RefundRecord};
use vendpay_domain::{DeviceId, RefundId, RequestId, Session, SessionId, Timestamp, TradeNo};

use crate::error::StoreError;

pub(super) type Item = HashMap<String, AttributeValue>;

pub const ATTR_PK: &str = "pk";
pub const ATTR_SK: &str = "sk";
pub const ATTR_GSI1_PK: &str = "gsi1pk";
pub const ATTR_GSI1_SK: &str = "gsi1sk";
/// The TTL attribute (epoch seconds) of request idempotency rows.
pub const ATTR_EXPIRES: &str = "expires_at";
/// The refund row's JSON, projected into `gsi1` so `pending_refunds` needs no second read.
pub const ATTR_REFUND: &str = "refund";
/// A pending refund's send lease (epoch ms): a send holds it until then.
pub const ATTR_IN_FLIGHT: &str = "in_flight_until";
/// A pending refund's count of claimed sends (absent: none).
pub const ATTR_ATTEMPTS: &str = "attempts";
/// A pending refund's generation, bumped by each sweep re-send (absent: 0).
pub const ATTR_GENERATION: &str = "generation";
pub const GSI1: &str = "gsi1";
pub(super) const ATTR_BODY: &str = "body";
pub(super) const ATTR_VERSION: &str = "version";
pub(super) const ATTR_CURRENT: &str = "current";
pub(super) const ATTR_QRCODE: &str = "qrcode";
pub(super) const ATTR_DEVICE: &str = "device";

/// How many `gsi1` partitions the deadline entries are spread over.
pub const DUE_SHARDS: u32 = 8;
pub(super) const PENDING_REFUNDS: &str = "refund#pending";

pub(super) const SK_DEVICE: &str = "device";
pub(super) const SK_SESSION: &str = "session";
pub(super) const SK_TRADE: &str = "trade";
pub(super) const SK_REQUEST: &str = "request";
pub(super) const SK_REFUND: &str = "refund";
pub(super) const SESSION_PREFIX: &str = "ses#";

/// The deadline index shard of a session: stable across processes and releases (not `std`'s hasher).
pub fn due_shard(id: &SessionId) -> u32 {
    let digest = Sha256::digest(id.as_str().as_bytes());
    let first = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    first % DUE_SHARDS
}

// ---- keys and attribute helpers -------------------------------------------------------------------

pub(super) fn device_pk(id: &DeviceId) -> String {
    format!("dev#{id}")
}

pub(super) fn session_pk(id: &SessionId) -> String {
    format!("{SESSION_PREFIX}{id}")
}

pub(super) fn trade_pk(trade_no: &TradeNo) -> String {
    format!("trade#{trade_no}")
}

pub(super) fn request_pk(device: &DeviceId, request_id: &RequestId) -> String {
    format!("req#{device}#{request_id}")
}

pub(super) fn refund_pk(id: &RefundId) -> String {
    format!("ref#{id}")
}

pub(super) fn key(pk: String, sk: &str) -> Item {
    HashMap::from([
        (ATTR_PK.to_owned(), AttributeValue::S(pk)),
        (ATTR_SK.to_owned(), s(sk)),
    ])
}

pub(super) fn names(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

pub(super) fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

pub(super) fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(super) fn json<T: Serialize>(v: &T) -> Result<AttributeValue, StoreError> {
    serde_json::to_string(v)
        .map(AttributeValue::S)
        .map_err(|e| StoreError::Permanent(format!("encoding an item: {e}").into()))
}

pub(super) fn item_name(item: &Item) -> String {
    match item.get(ATTR_PK) {
        Some(AttributeValue::S(pk)) => pk.clone(),
        _ => "an item without pk".to_owned(),
    }
}

pub(super) fn string<'a>(item: &'a Item, attr: &str) -> Result<&'a str, StoreError> {
    match item.get(attr) {
        Some(AttributeValue::S(v)) => Ok(v),
        other => Err(StoreError::Permanent(
            format!(
                "{}: attribute {attr} is {other:?}, not a string",
                item_name(item)
            )
            .into(),
        )),
    }
}

pub(super) fn signed(item: &Item, attr: &str) -> Result<i64, StoreError> {
    match item.get(attr) {
        Some(AttributeValue::N(v)) => v.parse().map_err(|_| {
            StoreError::Permanent(
                format!(
                    "{}: attribute {attr} = {v:?} is not an integer",
                    item_name(item)
                )
                .into(),
            )
        }),
        other => Err(StoreError::Permanent(
            format!(
                "{}: attribute {attr} is {other:?}, not a number",
                item_name(item)
            )
            .into(),
        )),
    }
}

pub(super) fn number(item: &Item, attr: &str) -> Result<u64, StoreError> {
    let v = signed(item, attr)?;
    u64::try_from(v).map_err(|_| {
        StoreError::Permanent(
            format!("{}: attribute {attr} = {v} is negative", item_name(item)).into(),
        )
    })
}

pub(super) fn decode_json<T: DeserializeOwned>(item: &Item, attr: &str) -> Result<T, StoreError> {
    serde_json::from_str(string(item, attr)?).map_err(|e| {
        StoreError::Permanent(
            format!("{}: attribute {attr} does not decode: {e}", item_name(item)).into(),
        )
    })
}

/// A refund item: its JSON, with the send schedule from the attributes beside it (absent: none yet).
pub(super) fn decode_refund(item: &Item) -> Result<RefundRecord, StoreError> {
    let mut record: RefundRecord = decode_json(item, ATTR_REFUND)?;
    let count = |attr: &str| -> Result<u32, StoreError> {
        if !item.contains_key(attr) {
            return Ok(0);
        }
        let v = number(item, attr)?;
        u32::try_from(v).map_err(|_| {
            StoreError::Permanent(
                format!("{}: attribute {attr} = {v} is too large", item_name(item)).into(),
            )
        })
    };
    record.attempts = count(ATTR_ATTEMPTS)?;
    record.generation = count(ATTR_GENERATION)?;
    record.in_flight_until = match item.get(ATTR_IN_FLIGHT) {
        None => None,
        Some(_) => Some(Timestamp::from_millis(signed(item, ATTR_IN_FLIGHT)?)),
    };
    Ok(record)
}

pub(super) fn decode_device(item: &Item) -> Result<DeviceRecord, StoreError> {
    let mut record: DeviceRecord = decode_json(item, ATTR_BODY)?;
    // The attributes are what conditions test and updates change; the body is as registered.
    record.version = number(item, ATTR_VERSION)?;
    record.current = match item.get(ATTR_CURRENT) {
        None => None,
        Some(_) => Some(string(item, ATTR_CURRENT)?.parse().map_err(|e| {
            StoreError::Permanent(
                format!("{}: current is not a session id: {e}", item_name(item)).into(),
            )
        })?),
    };
    if item.contains_key(ATTR_QRCODE) {
        record.qrcode = Some(decode_json(item, ATTR_QRCODE)?);
    }
    Ok(record)
}

pub(super) fn decode_session(item: &Item) -> Result<Session, StoreError> {
    let session: Session = decode_json(item, ATTR_BODY)?;
    let version = number(item, ATTR_VERSION)?;
    if session.version != version {
        return Err(StoreError::Permanent(
            format!(
                "{}: body has version {}, attribute {version}",
                item_name(item),
                session.version
            )
            .into(),
        ));
    }
    Ok(session)
}

/// DynamoDB's item size: attribute names plus values (strings as UTF-8 bytes; numbers about one byte
/// per two digits, plus one). Used to prove a commit's items fit the 400 KB limit.
pub fn item_size(item: &Item) -> usize {
    item.iter()
        .map(|(name, value)| {
            name.len()
                + match value {
                    AttributeValue::S(v) => v.len(),
                    AttributeValue::N(v) => v.len().div_ceil(2) + 1,
                    other => format!("{other:?}").len(),
                }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_spread() {
        let mut seen = [0u32; DUE_SHARDS as usize];
        for i in 0..800 {
            let id: SessionId = format!("s:T{i}").parse().expect("id");
            let shard = due_shard(&id);
            assert_eq!(shard, due_shard(&id));
            seen[shard as usize] += 1;
        }
        assert!(seen.iter().all(|&c| c > 50), "uneven shards: {seen:?}");
    }
}
