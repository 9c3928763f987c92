//! Parsing request bodies into domain types, with an error that names the field and what is wrong.

use serde_json::{Map, Value};
use vendpay_domain::inventory::MAX_CAPACITY;
use vendpay_domain::{Currency, Money, Sku, Slot, SlotSpec, StockCount};

use crate::error::ApiError;

/// A JSON object body. An empty body reads as `{}` for routes whose fields are all optional.
pub fn object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad_request(
            "invalid_json",
            "the body must be a JSON object",
        )),
        Err(e) => Err(ApiError::bad_request(
            "invalid_json",
            format!("the body is not JSON: {e}"),
        )),
    }
}

fn missing(field: &str) -> ApiError {
    ApiError::bad_request("missing_field", format!("{field} is required"))
}

fn invalid(field: &str, why: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request("invalid_field", format!("{field}: {why}"))
}

pub fn string<'a>(m: &'a Map<String, Value>, field: &str) -> Result<&'a str, ApiError> {
    match m.get(field) {
        None | Some(Value::Null) => Err(missing(field)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(invalid(field, "must be a string")),
    }
}

pub fn optional_string<'a>(
    m: &'a Map<String, Value>,
    field: &str,
) -> Result<Option<&'a str>, ApiError> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(field, "must be a string")),
    }
}

/// A string field parsed into `T` (an id newtype, a currency), with the parser's message on failure.
pub fn parsed<T>(m: &Map<String, Value>, field: &str) -> Result<T, ApiError>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    string(m, field)?.parse().map_err(|e| invalid(field, e))
}

/// An optional string field parsed into `T`; absent or `null` is `None`.
pub fn optional_parsed<T>(m: &Map<String, Value>, field: &str) -> Result<Option<T>, ApiError>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    optional_string(m, field)?
        .map(|s| s.parse().map_err(|e| invalid(field, e)))
        .transpose()
}

pub fn boolean(m: &Map<String, Value>, field: &str) -> Result<bool, ApiError> {
    match m.get(field) {
        None | Some(Value::Null) => Err(missing(field)),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(invalid(field, "must be true or false")),
    }
}

/// A price: `{"minor": <positive integer>, "currency": "CNY"}`, in the machine's currency.
pub fn price(m: &Map<String, Value>, field: &str, expected: Currency) -> Result<Money, ApiError> {
    match m.get(field) {
        None | Some(Value::Null) => Err(missing(field)),
        Some(v) => money(v, field, Some(expected)),
    }
}

/// A price that may be omitted (a purchase or order naming a slot of the slot map, a slot without a
/// price of its own): absent or `null` is `None`; given, it is checked as [`price`] checks it.
pub fn optional_price(
    m: &Map<String, Value>,
    field: &str,
    expected: Currency,
) -> Result<Option<Money>, ApiError> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => money(v, field, Some(expected)).map(Some),
    }
}

/// A price in any currency vendpay knows (a catalogue product's; each machine that sells it checks it
/// against its own currency).
pub fn price_in_any_currency(m: &Map<String, Value>, field: &str) -> Result<Money, ApiError> {
    match m.get(field) {
        None | Some(Value::Null) => Err(missing(field)),
        Some(v) => money(v, field, None),
    }
}

/// `{"minor": <positive integer>, "currency": "CNY"}`, in `expected` when given.
fn money(value: &Value, field: &str, expected: Option<Currency>) -> Result<Money, ApiError> {
    let Value::Object(obj) = value else {
        return Err(invalid(field, r#"must be an object {"minor", "currency"}"#));
    };
    let currency: Currency = match obj.get("currency") {
        Some(Value::String(c)) => c.parse().map_err(|e| invalid(field, e))?,
        _ => return Err(invalid(field, "currency must be an ISO 4217 code string")),
    };
    let minor = match obj.get("minor") {
        Some(Value::Number(n)) => {
            if let Some(u) = n.as_u64() {
                u
            } else if n.as_i64().is_some_and(|i| i < 0) {
                return Err(ApiError::bad_request(
                    "invalid_price",
                    format!("{field} must be greater than zero"),
                ));
            } else {
                return Err(invalid(
                    field,
                    "minor must be a whole number of minor units",
                ));
            }
        }
        _ => {
            return Err(invalid(
                field,
                "minor must be a whole number of minor units",
            ))
        }
    };
    if let Some(expected) = expected.filter(|e| *e != currency) {
        return Err(ApiError::bad_request(
            "currency_mismatch",
            format!("{field} is in {currency} but the machine takes {expected}"),
        ));
    }
    if minor == 0 {
        return Err(ApiError::bad_request(
            "invalid_price",
            format!("{field} must be greater than zero"),
        ));
    }
    Money::new(minor, currency).ok_or_else(|| invalid(field, "minor is too large"))
}

/// A sku named in a path (`/admin/products/{sku}`): `invalid_sku` when it is not 1–64 of letters,
/// digits, `.`, `-`, `_`.
pub fn sku_in_path(raw: &str) -> Result<Sku, ApiError> {
    Sku::parse(raw).map_err(|e| ApiError::bad_request("invalid_sku", e.to_string()))
}

/// A sku field: `missing_field` when absent, `invalid_sku` when malformed.
pub fn sku(m: &Map<String, Value>, field: &str) -> Result<Sku, ApiError> {
    let raw = string(m, field)?;
    Sku::parse(raw).map_err(|e| ApiError::bad_request("invalid_sku", format!("{field}: {e}")))
}

/// The array of objects under `field` (`{"slots": [...]}`), each parsed by `each`. A refusal names the
/// element's field in full (`slots[2].capacity: ...`): every message of this module starts with the
/// field it is about.
fn objects<T>(
    m: &Map<String, Value>,
    field: &str,
    mut each: impl FnMut(&Map<String, Value>) -> Result<T, ApiError>,
) -> Result<Vec<T>, ApiError> {
    let items = match m.get(field) {
        None | Some(Value::Null) => return Err(missing(field)),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(invalid(field, "must be an array")),
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let name = format!("{field}[{i}]");
            match item {
                Value::Object(o) => each(o).map_err(|mut e| {
                    e.message = format!("{name}.{}", e.message);
                    e
                }),
                _ => Err(invalid(&name, "must be an object")),
            }
        })
        .collect()
}

/// A whole count (`capacity`, `stock`) from `min` to `max` (`range` says so in words): anything else —
/// negative, fractional, too large, not a number — is refused with `code`, never parsed by a panic.
fn count(
    m: &Map<String, Value>,
    field: &str,
    code: &'static str,
    (min, max): (u64, u64),
    range: &str,
) -> Result<u32, ApiError> {
    let refused = |shown: &dyn std::fmt::Display| {
        ApiError::bad_request(
            code,
            format!("{field}: {shown} is out of range; it must be {range}"),
        )
    };
    match m.get(field) {
        None | Some(Value::Null) => Err(missing(field)),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) if (min..=max).contains(&u) => u32::try_from(u).map_err(|_| refused(&u)),
            (Some(u), _) => Err(refused(&u)),
            (None, Some(i)) => Err(refused(&i)),
            (None, None) => Err(ApiError::bad_request(
                code,
                format!("{field}: {n} is not a whole number; it must be {range}"),
            )),
        },
        Some(_) => Err(ApiError::bad_request(
            code,
            format!("{field}: must be a whole number, {range}"),
        )),
    }
}

/// `{"slots": [{"slot", "sku", "capacity", "price"?}]}` (`PUT /admin/devices/{id}/slots`). A capacity
/// that is not a whole number from 1 to 1000 is `invalid_capacity`; the domain checks the rest (skus
/// known, slots named once, how many, prices in the machine's currency).
pub fn slot_specs(m: &Map<String, Value>) -> Result<Vec<SlotSpec>, ApiError> {
    objects(m, "slots", |o| {
        let slot = parsed::<Slot>(o, "slot")?;
        let sku = sku(o, "sku")?;
        let capacity = count(
            o,
            "capacity",
            "invalid_capacity",
            (1, u64::from(MAX_CAPACITY)),
            &format!("1 to {MAX_CAPACITY}"),
        )?;
        let price = match o.get("price") {
            None | Some(Value::Null) => None,
            Some(v) => Some(money(v, "price", None)?),
        };
        Ok(SlotSpec {
            slot,
            sku,
            capacity,
            price,
        })
    })
}

/// `{"slots": [{"slot", "stock"}]}` (a restock, or the machine's own count). A stock that is negative,
/// not a whole number or above any capacity is `invalid_stock`; the domain holds it to the slot's.
pub fn stock_counts(m: &Map<String, Value>) -> Result<Vec<StockCount>, ApiError> {
    objects(m, "slots", |o| {
        Ok(StockCount {
            slot: parsed::<Slot>(o, "slot")?,
            stock: count(
                o,
                "stock",
                "invalid_stock",
                (0, u64::from(MAX_CAPACITY)),
                "0 to the slot's capacity",
            )?,
        })
    })
}

/// `below` of `GET /admin/inventory?below=`: a share of capacity, 0 < below ≤ 1; absent: `default`.
pub fn below(query: Option<&str>, default: f64) -> Result<f64, ApiError> {
    let mut found = None;
    for pair in query.unwrap_or_default().split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name != "below" {
            continue;
        }
        if found.is_some() {
            return Err(ApiError::bad_request(
                "invalid_threshold",
                "below: given more than once",
            ));
        }
        found = Some(value);
    }
    let Some(raw) = found else {
        return Ok(default);
    };
    match raw.parse::<f64>() {
        Ok(b) if b > 0.0 && b <= 1.0 => Ok(b),
        _ => Err(ApiError::bad_request(
            "invalid_threshold",
            format!("below: {raw:?} is not a number greater than 0 and at most 1"),
        )),
    }
}
