//! A fact as one row of the Glue table `facts`: a JSON object whose fields are exactly the table's
//! columns, in its order (`docs/sales.md`, "Facts"), newline-terminated.
//!
//! Written out field by field rather than with `Fact`'s own serde form: Firehose's Parquet conversion
//! reads the JSON by column name, so a field added to `Fact` must not slip into the export unnoticed,
//! and a column must never go missing (an absent value is an explicit null). `at` stays Unix
//! milliseconds (`bigint`); the partition `dt` is Firehose's delivery day, not a field.

use serde::Serialize;
use vendpay_domain::facts::Fact;

/// The Glue table's columns, in order (`docs/sales.md`; a test compares the two).
pub const COLUMNS: [&str; 20] = [
    "id",
    "kind",
    "at",
    "device",
    "district",
    "location",
    "session",
    "flow",
    "buyer_key",
    "currency",
    "amount",
    "trade_no",
    "request_id",
    "refund_id",
    "slot",
    "sku",
    "product",
    "stock_after",
    "reason",
    "status",
];

/// One row; the field order is [`COLUMNS`].
#[derive(Debug, Serialize)]
pub struct Row<'a> {
    pub id: &'a str,
    pub kind: &'static str,
    pub at: i64,
    pub device: &'a str,
    pub district: &'a str,
    pub location: Option<&'a str>,
    pub session: &'a str,
    pub flow: &'static str,
    pub buyer_key: Option<&'a str>,
    pub currency: &'static str,
    pub amount: u64,
    pub trade_no: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub refund_id: Option<&'a str>,
    pub slot: Option<&'a str>,
    pub sku: Option<&'a str>,
    pub product: Option<&'a str>,
    pub stock_after: Option<u32>,
    pub reason: Option<&'a str>,
    pub status: Option<&'a str>,
}

impl<'a> Row<'a> {
    pub fn of(f: &'a Fact) -> Row<'a> {
        Row {
            id: &f.id,
            kind: f.kind.as_str(),
            at: f.at.millis(),
            device: f.device.as_str(),
            district: &f.district,
            location: f.location.as_deref(),
            session: f.session.as_str(),
            flow: f.flow.as_str(),
            buyer_key: f.buyer_key.as_ref().map(|k| k.as_str()),
            currency: f.currency.code(),
            amount: f.amount,
            trade_no: f.trade_no.as_ref().map(|v| v.as_str()),
            request_id: f.request_id.as_ref().map(|v| v.as_str()),
            refund_id: f.refund_id.as_ref().map(|v| v.as_str()),
            slot: f.slot.as_ref().map(|v| v.as_str()),
            sku: f.sku.as_ref().map(|v| v.as_str()),
            product: f.product.as_deref(),
            stock_after: f.stock_after,
            reason: f.reason.as_deref(),
            status: f.status.as_deref(),
        }
    }
}

/// The Firehose record of a fact: its row as JSON and a newline (Firehose concatenates records as they
/// come; the OpenX JSON SerDe reads one object per line).
pub fn record(fact: &Fact) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = serde_json::to_vec(&Row::of(fact))?;
    out.push(b'\n');
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    /// The fact columns of docs/sales.md's table, in order (a row may name several columns).
    fn documented_columns() -> Vec<(String, String)> {
        let doc = include_str!("../../../docs/sales.md");
        let facts = doc
            .split("\n## ")
            .find(|s| s.starts_with("Facts"))
            .expect("docs/sales.md has a Facts section");
        let mut out = Vec::new();
        for line in facts.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let (names, ty) = (cells[1], cells[2]);
            for name in names.split(',') {
                out.push((name.trim().trim_matches('`').to_owned(), ty.to_owned()));
            }
        }
        out
    }

    fn sale() -> Fact {
        serde_json::from_value(serde_json::json!({
            "id": "sale:s-1:r-1", "kind": "sale", "at": 1_764_122_400_123_i64, "device": "vm-1",
            "district": "Xuhui", "session": "s-1", "flow": "pay_first", "currency": "CNY",
            "amount": 350, "request_id": "r-1", "slot": "A1", "sku": "cola-330",
            "product": "Cola 330ml", "stock_after": 9
        }))
        .expect("a sale fact")
    }

    #[test]
    fn the_columns_are_the_documented_ones_in_order() {
        let documented: Vec<String> = documented_columns().into_iter().map(|(n, _)| n).collect();
        assert_eq!(documented, COLUMNS);
    }

    #[test]
    fn a_record_is_one_line_with_every_column_in_order() {
        let bytes = record(&sale()).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.ends_with('\n') && text.matches('\n').count() == 1,
            "{text}"
        );
        let mut at = 0;
        for c in COLUMNS {
            let found = text[at..]
                .find(&format!("\"{c}\":"))
                .unwrap_or_else(|| panic!("{c} missing or out of order in {text}"));
            at += found;
        }
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v.as_object().map(|o| o.len()), Some(COLUMNS.len()));
        assert_eq!(v["at"], 1_764_122_400_123_i64, "milliseconds, as a number");
        assert_eq!(v["amount"], 350);
        assert_eq!(v["stock_after"], 9);
        assert_eq!(v["location"], serde_json::Value::Null);
        assert_eq!(v["buyer_key"], serde_json::Value::Null);
        assert_eq!(v["kind"], "sale");
        assert_eq!(v["flow"], "pay_first");
        assert_eq!(v["currency"], "CNY");
    }
}
