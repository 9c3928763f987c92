//! The table's vocabulary: attribute names, keys, typed attribute values, the item codec (nothing
//! read is trusted: a missing or malformed attribute, or a body that disagrees with its key, is a
//! permanent error naming the item), item sizes, and the deadline index's shards.
//!
//! Catalogue and inventory keys (the access patterns are in the module header, [`super`]):
//!
//! - a slot row lives in its machine's partition, `pk = dev#{device_id}`, `sk = slot#{slot}`, beside
//!   the device item (`sk = device`), so one `Query` of the partition reads the machine with its
//!   planogram; `body` is the JSON `SlotStock`, `version` the attribute conditions test;
//! - a product lives in the one catalogue partition, `pk = catalogue`, `sk = sku#{sku}`, `body` the
//!   JSON `Product`: `Query` lists them in sku order, `GetItem` reads one;
//! - the listing of stocked machines is one item per machine, `pk = planograms`,
//!   `sk = dev#{device_id}`, with `slots` (N), how many slot rows the machine has.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};
use vendpay_app::{DeviceRecord, RefundRecord};
use vendpay_domain::{
    DeviceId, Product, RefundId, RequestId, Session, SessionId, Sku, Slot, SlotStock, Timestamp,
    TradeNo,
};

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
/// The number of slot rows of a machine, on its planogram listing item.
pub(super) const ATTR_SLOTS: &str = "slots";

/// How many `gsi1` partitions the deadline entries are spread over.
pub const DUE_SHARDS: u32 = 8;
pub(super) const PENDING_REFUNDS: &str = "refund#pending";

pub(super) const SK_DEVICE: &str = "device";
pub(super) const SK_SESSION: &str = "session";
pub(super) const SK_TRADE: &str = "trade";
pub(super) const SK_REQUEST: &str = "request";
pub(super) const SK_REFUND: &str = "refund";
pub(super) const SESSION_PREFIX: &str = "ses#";
pub(super) const DEVICE_PREFIX: &str = "dev#";
pub(super) const SLOT_PREFIX: &str = "slot#";
pub(super) const SKU_PREFIX: &str = "sku#";
/// A decision's sales facts: one item per decision, `facts#{session}#{version}` / `facts`, holding
/// them as a JSON array in `facts`; the stream carries them to `analytics-export`.
pub const FACTS_PREFIX: &str = "facts#";
pub const SK_FACTS: &str = "facts";
pub const ATTR_FACTS: &str = "facts";
/// How long a facts item stays in the table: the stream has delivered it long before (its records
/// live 24 h), and the analytics copy in S3 is the lasting one.
pub const FACTS_TTL: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);
/// The partition of the catalogue's products.
pub(super) const CATALOGUE: &str = "catalogue";
/// The partition of the stocked machines' listing.
pub(super) const PLANOGRAMS: &str = "planograms";

/// The deadline index shard of a session: stable across processes and releases (not `std`'s hasher).
pub fn due_shard(id: &SessionId) -> u32 {
    let digest = Sha256::digest(id.as_str().as_bytes());
    let first = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    first % DUE_SHARDS
}

// ---- keys and attribute helpers -------------------------------------------------------------------

pub(super) fn device_pk(id: &DeviceId) -> String {
    format!("{DEVICE_PREFIX}{id}")
}

pub(super) fn slot_sk(slot: &Slot) -> String {
    format!("{SLOT_PREFIX}{slot}")
}

pub(super) fn product_sk(sku: &Sku) -> String {
    format!("{SKU_PREFIX}{sku}")
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

/// The item's key as the errors name it: `pk`, or `pk sk` for an item of a collection (a slot row, a
/// product, a listing entry).
pub(super) fn item_name(item: &Item) -> String {
    match (item.get(ATTR_PK), item.get(ATTR_SK)) {
        (Some(AttributeValue::S(pk)), Some(AttributeValue::S(sk)))
            if sk.contains('#') || pk == CATALOGUE || pk == PLANOGRAMS =>
        {
            format!("{pk} {sk}")
        }
        (Some(AttributeValue::S(pk)), _) => pk.clone(),
        _ => "an item without pk".to_owned(),
    }
}

fn malformed(item: &Item, what: impl std::fmt::Display) -> StoreError {
    StoreError::Permanent(format!("{}: {what}", item_name(item)).into())
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

// ---- catalogue and inventory ------------------------------------------------------------------------

/// A slot row: in its machine's partition, the JSON row with its version beside it.
pub(super) fn slot_to_item(row: &SlotStock) -> Result<Item, StoreError> {
    let mut item = key(device_pk(&row.device_id), &slot_sk(&row.slot));
    item.insert(ATTR_BODY.into(), json(row)?);
    item.insert(ATTR_VERSION.into(), n(row.version));
    Ok(item)
}

/// A slot row of `device`'s partition. Its body must name the machine and slot of its key, and carry
/// the version of its attribute.
pub(super) fn decode_slot(item: &Item, device: &DeviceId) -> Result<SlotStock, StoreError> {
    let row: SlotStock = decode_json(item, ATTR_BODY)?;
    let version = number(item, ATTR_VERSION)?;
    let sk = string(item, ATTR_SK)?;
    if row.version != version {
        return Err(malformed(
            item,
            format_args!("body has version {}, attribute {version}", row.version),
        ));
    }
    if &row.device_id != device || sk.strip_prefix(SLOT_PREFIX) != Some(row.slot.as_str()) {
        return Err(malformed(
            item,
            format_args!(
                "body is slot {} of machine {}, not the row its key names",
                row.slot, row.device_id
            ),
        ));
    }
    Ok(row)
}

pub(super) fn product_to_item(product: &Product) -> Result<Item, StoreError> {
    let mut item = key(CATALOGUE.to_owned(), &product_sk(&product.sku));
    item.insert(ATTR_BODY.into(), json(product)?);
    Ok(item)
}

/// A product of the catalogue partition; its body must be the product its key names.
pub(super) fn decode_product(item: &Item) -> Result<Product, StoreError> {
    let product: Product = decode_json(item, ATTR_BODY)?;
    let sk = string(item, ATTR_SK)?;
    if sk.strip_prefix(SKU_PREFIX) != Some(product.sku.as_str()) {
        return Err(malformed(
            item,
            format_args!("body is product {}, not the one its key names", product.sku),
        ));
    }
    Ok(product)
}

/// The machine an entry of the planogram listing names, with its count of slot rows.
pub(super) fn decode_listing(item: &Item) -> Result<(DeviceId, u64), StoreError> {
    let sk = string(item, ATTR_SK)?;
    let device = sk
        .strip_prefix(DEVICE_PREFIX)
        .and_then(|id| id.parse::<DeviceId>().ok())
        .ok_or_else(|| malformed(item, "the key does not name a machine"))?;
    Ok((device, number(item, ATTR_SLOTS)?))
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

    fn row() -> SlotStock {
        SlotStock {
            sold_at: None,
            device_id: "vm-1".parse().expect("id"),
            slot: "A1".parse().expect("slot"),
            sku: "cola".parse().expect("sku"),
            capacity: 10,
            price: None,
            stock: 4,
            reserved: 1,
            version: 3,
        }
    }

    fn permanent(r: Result<SlotStock, StoreError>) -> String {
        match r {
            Err(StoreError::Permanent(f)) => f.to_string(),
            other => panic!("expected a permanent error, got {other:?}"),
        }
    }

    #[test]
    fn a_slot_row_round_trips_and_a_malformed_one_is_named() {
        let device: DeviceId = "vm-1".parse().expect("id");
        let item = slot_to_item(&row()).expect("encode");
        assert_eq!(decode_slot(&item, &device), Ok(row()));
        assert_eq!(item_name(&item), "dev#vm-1 slot#A1");

        let mut stale = item.clone();
        stale.insert(ATTR_VERSION.into(), n(4));
        assert!(permanent(decode_slot(&stale, &device))
            .contains("dev#vm-1 slot#A1: body has version 3"));

        let mut moved = item.clone();
        moved.insert(ATTR_SK.into(), s("slot#B2"));
        assert!(permanent(decode_slot(&moved, &device)).contains("not the row its key names"));
        let other: DeviceId = "vm-2".parse().expect("id");
        assert!(permanent(decode_slot(&item, &other)).contains("not the row its key names"));

        let mut garbled = item.clone();
        garbled.insert(ATTR_BODY.into(), s(r#"{"slot":"A1"}"#));
        assert!(
            permanent(decode_slot(&garbled, &device)).contains("attribute body does not decode")
        );
        let mut negative = item;
        negative.insert(ATTR_VERSION.into(), AttributeValue::N("-1".into()));
        assert!(permanent(decode_slot(&negative, &device)).contains("is negative"));
    }

    #[test]
    fn a_product_and_a_listing_entry_must_match_their_keys() {
        let product = Product {
            sku: "cola".parse().expect("sku"),
            name: "Cola".into(),
            price: vendpay_domain::Money::new(350, vendpay_domain::Currency::Cny).expect("money"),
            category: None,
        };
        let mut item = product_to_item(&product).expect("encode");
        assert_eq!(decode_product(&item), Ok(product));
        item.insert(ATTR_SK.into(), s("sku#water"));
        assert!(
            matches!(decode_product(&item), Err(StoreError::Permanent(f)) if f.to_string().contains("catalogue sku#water"))
        );

        let mut entry = key(PLANOGRAMS.to_owned(), "dev#vm-1");
        entry.insert(ATTR_SLOTS.into(), n(3));
        assert_eq!(decode_listing(&entry), Ok(("vm-1".parse().expect("id"), 3)));
        entry.insert(ATTR_SK.into(), s("dev#not a device"));
        assert!(matches!(
            decode_listing(&entry),
            Err(StoreError::Permanent(_))
        ));
    }
}
