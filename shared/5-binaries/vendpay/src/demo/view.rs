//! How the demo prints what the server answers: money as `10.00 CNY`, times as clock times, a
//! session as one line.

use serde_json::Value;
use vendpay_domain::{Currency, Money};

/// `{"minor", "currency"}` as `10.00 CNY`.
pub(super) fn money(v: &Value) -> String {
    let minor = v.get("minor").and_then(Value::as_u64);
    let currency = v
        .get("currency")
        .and_then(Value::as_str)
        .and_then(|c| c.parse::<Currency>().ok());
    match (minor, currency) {
        (Some(m), Some(c)) => Money::new(m, c).map_or_else(|| v.to_string(), |m| m.to_string()),
        _ => v.to_string(),
    }
}

/// `minor` fen as `0.00 CNY`.
pub(super) fn fen(minor: u64) -> String {
    money(&vendpay_client::cny(minor))
}

pub(super) fn minor(v: &Value) -> u64 {
    v.get("minor").and_then(Value::as_u64).unwrap_or(0)
}

pub(super) fn text<'a>(v: &'a Value, field: &str) -> &'a str {
    v.get(field).and_then(Value::as_str).unwrap_or("?")
}

pub(super) fn list(v: &Value, field: &str) -> Vec<Value> {
    v.get(field)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// The clock time of an RFC 3339 timestamp (`…T01:02:03.456Z` → `01:02:03.456`).
pub(super) fn clock_time(v: &Value, field: &str) -> String {
    let t = text(v, field);
    t.get(11..23).unwrap_or(t).to_owned()
}

/// Closed, with every refund succeeded: a session that is done.
pub(super) fn settled(s: &Value) -> bool {
    s["phase"] == "closed"
        && list(s, "refunds")
            .iter()
            .all(|r| r["status"] == "succeeded")
}

/// One line describing an operator's view of a session.
pub(super) fn summary(s: &Value) -> String {
    let refunds: Vec<String> = list(s, "refunds")
        .iter()
        .map(|r| {
            format!(
                "{} {} {}",
                money(&r["amount"]),
                text(r, "reason"),
                text(r, "status")
            )
        })
        .collect();
    format!(
        "{}, balance {}, held {}, spent {}, refunds [{}]",
        text(s, "phase"),
        money(&s["balance"]),
        money(&s["held"]),
        money(&s["spent"]),
        refunds.join("; ")
    )
}

/// A machine's inventory (`{"slots": [...]}`) as one line: `A1 Cola 3.50 CNY 0/6 (low); …`.
pub(super) fn shelf(inventory: &Value) -> String {
    let slots: Vec<String> = list(inventory, "slots")
        .iter()
        .map(|s| {
            let mut notes = Vec::new();
            let reserved = s["reserved"].as_u64().unwrap_or(0);
            if reserved > 0 {
                notes.push(format!("{reserved} reserved"));
            }
            if s["low"] == true {
                notes.push("low".to_owned());
            }
            format!(
                "{} {} {} {}/{}{}",
                text(s, "slot"),
                text(s, "name"),
                money(&s["price"]),
                s["stock"],
                s["capacity"],
                if notes.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", notes.join(", "))
                }
            )
        })
        .collect();
    if slots.is_empty() {
        "no slots".to_owned()
    } else {
        slots.join("; ")
    }
}

/// One slot of a machine's inventory, `Value::Null` when it has no such slot.
pub(super) fn slot<'a>(inventory: &'a Value, name: &str) -> &'a Value {
    inventory
        .get("slots")
        .and_then(Value::as_array)
        .and_then(|slots| slots.iter().find(|s| s["slot"] == name))
        .unwrap_or(&Value::Null)
}
