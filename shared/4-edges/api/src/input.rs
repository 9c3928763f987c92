//! Parsing request bodies into domain types, with an error that names the field and what is wrong.

use serde_json::{Map, Value};
use vendpay_domain::{Currency, Money};

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
    let obj = match m.get(field) {
        None | Some(Value::Null) => return Err(missing(field)),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(invalid(field, r#"must be an object {"minor", "currency"}"#)),
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
    if currency != expected {
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
