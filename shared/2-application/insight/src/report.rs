//! The report document of `docs/sales.md` as Rust types: field names and order are the JSON's.
//!
//! Beyond the spec's seven sections the document carries `daily`: one row per (date, currency) for
//! every date of the period and every currency with any fact in it (zeros included, so a chart has no
//! gaps), ordered by date then currency:
//! `{"date": "YYYY-MM-DD", "currency", "sales", "revenue", "net"}` — `sales` = count of sales that
//! day, `revenue` = Σ their amounts, `net` = Σ payments − Σ issued refunds that day (days at
//! `REPORT_TZ`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vendpay_domain::facts::Flow;
use vendpay_domain::Currency;

/// A money object: minor units (negative for a loss or a drop) in one currency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Amount {
    pub minor: i64,
    pub currency: Currency,
}

impl Amount {
    pub fn new(minor: i64, currency: Currency) -> Amount {
        Amount { minor, currency }
    }

    /// `-12.30 CNY`, `1050 JPY`: the currency's exponent, no grouping.
    pub fn to_decimal(self) -> String {
        format!("{} {}", decimal(self.minor, self.currency), self.currency)
    }
}

/// Minor units as a decimal in the currency's major unit, without the code.
pub fn decimal(minor: i64, currency: Currency) -> String {
    let exp = currency.exponent();
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    if exp == 0 {
        return format!("{sign}{abs}");
    }
    let unit = 10u64.pow(exp);
    format!(
        "{sign}{}.{:0width$}",
        abs / unit,
        abs % unit,
        width = exp as usize
    )
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PreviousPeriod {
    pub from: String,
    pub to: String,
}

/// The whole report. `campaign` is not part of the JSON: it is the campaign CSV's rows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SalesReport {
    pub from: String,
    pub to: String,
    pub tz: String,
    pub days: u32,
    pub previous: PreviousPeriod,
    pub machines: Vec<MachineRow>,
    pub districts: Vec<DistrictRow>,
    pub items: Vec<ItemRow>,
    pub hours: Hours,
    pub flows: Flows,
    pub tags: Tags,
    pub targets: Vec<Target>,
    pub daily: Vec<DailyRow>,
    #[serde(skip)]
    pub campaign: Vec<CampaignRow>,
}

/// §1: one (device, currency).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MachineRow {
    pub device: String,
    pub district: String,
    pub location: Option<String>,
    pub currency: Currency,
    pub sales: u64,
    pub revenue: Amount,
    pub gross: Amount,
    pub refunds: Amount,
    pub net: Amount,
    pub average_basket: Amount,
}

/// §2: one (district, currency).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DistrictRow {
    pub district: String,
    pub currency: Currency,
    pub machines: u64,
    pub net: Amount,
    pub net_per_machine_day: Amount,
    pub previous_net: Amount,
    pub change: Amount,
    pub rank: u32,
}

/// §3: one (item, currency); the item is the `sku`, or the `slot` when the sale had no sku.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ItemRow {
    pub sku: Option<String>,
    pub slot: Option<String>,
    pub product: Option<String>,
    pub currency: Currency,
    pub units: u64,
    pub revenue: Amount,
    pub slots: u64,
    pub units_per_slot_day: f64,
    pub hours_sold_out: f64,
}

impl ItemRow {
    /// What an operator calls the item: its product, else its sku, else its slot.
    pub fn label(&self) -> &str {
        self.product
            .as_deref()
            .or(self.sku.as_deref())
            .or(self.slot.as_deref())
            .unwrap_or("")
    }
}

/// §4.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Hours {
    pub cells: Vec<HourCell>,
    pub peak: Vec<HourCell>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HourCell {
    /// ISO: 1 = Monday … 7 = Sunday.
    pub weekday: u8,
    pub hour: u8,
    pub sales: u64,
}

/// §5.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Flows {
    pub flows: Vec<FlowRow>,
    pub exceptions: Exceptions,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowRow {
    pub flow: Flow,
    pub currency: Currency,
    pub sessions: u64,
    pub payments: u64,
    pub average_payment: Amount,
    pub average_spent: Amount,
    pub refund_share: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exceptions {
    pub failed_vends: u64,
    pub unconfirmed_holds: u64,
    pub refused_payments: BTreeMap<String, u64>,
    pub refunds_failed: u64,
    pub anomalies: BTreeMap<String, u64>,
}

/// §6.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tags {
    pub buyers: u64,
    pub counts: TagCounts,
    pub districts: Vec<TagDistrict>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagCounts {
    pub new: u64,
    pub regular: u64,
    pub loyal: u64,
    pub big_spender: u64,
    pub lapsed: u64,
}

impl TagCounts {
    pub fn get(&self, tag: Tag) -> u64 {
        match tag {
            Tag::New => self.new,
            Tag::Regular => self.regular,
            Tag::Loyal => self.loyal,
            Tag::BigSpender => self.big_spender,
            Tag::Lapsed => self.lapsed,
        }
    }

    pub(crate) fn add(&mut self, tag: Tag) {
        match tag {
            Tag::New => self.new += 1,
            Tag::Regular => self.regular += 1,
            Tag::Loyal => self.loyal += 1,
            Tag::BigSpender => self.big_spender += 1,
            Tag::Lapsed => self.lapsed += 1,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagDistrict {
    pub district: String,
    pub buyers: u64,
    pub counts: TagCounts,
}

/// A buyer's tag, in the order `docs/sales.md` lists them (the campaign CSV joins them so).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tag {
    New,
    Regular,
    Loyal,
    BigSpender,
    Lapsed,
}

impl Tag {
    pub const ALL: [Tag; 5] = [
        Tag::New,
        Tag::Regular,
        Tag::Loyal,
        Tag::BigSpender,
        Tag::Lapsed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Tag::New => "new",
            Tag::Regular => "regular",
            Tag::Loyal => "loyal",
            Tag::BigSpender => "big_spender",
            Tag::Lapsed => "lapsed",
        }
    }
}

/// §7: one of the five best district rows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub district: String,
    pub currency: Currency,
    pub rank: u32,
    pub buyers: u64,
    pub counts: TagCounts,
    pub top_items: Vec<TopItem>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopItem {
    pub sku: Option<String>,
    pub slot: Option<String>,
    pub product: Option<String>,
    pub units: u64,
}

/// The extra `daily` section (see the module header).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DailyRow {
    pub date: String,
    pub currency: Currency,
    pub sales: u64,
    pub revenue: Amount,
    pub net: Amount,
}

/// A row of the campaign CSV: a tagged buyer of a target district.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CampaignRow {
    pub district: String,
    pub buyer_key: String,
    pub tags: Vec<Tag>,
}

impl SalesReport {
    /// `district,buyer_key,tags`: every tagged buyer of the target districts, tags joined with `;`,
    /// ordered by the district's place in `targets`, then buyer_key. Fields are quoted as RFC 4180
    /// asks when a district name holds a comma, quote or line break.
    pub fn campaign_csv(&self) -> String {
        let mut out = String::from("district,buyer_key,tags\n");
        for row in &self.campaign {
            let tags: Vec<&str> = row.tags.iter().map(|t| t.as_str()).collect();
            out.push_str(&csv_field(&row.district));
            out.push(',');
            out.push_str(&csv_field(&row.buyer_key));
            out.push(',');
            out.push_str(&tags.join(";"));
            out.push('\n');
        }
        out
    }
}

fn csv_field(s: &str) -> String {
    // A spreadsheet evaluates a cell starting with = + - @ (or a tab / CR) as a formula; district names
    // come from operators' input, so such a cell is made text with a leading apostrophe.
    let guarded;
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        guarded = format!("'{s}");
        guarded.as_str()
    } else {
        s
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_follow_the_exponent() {
        assert_eq!(decimal(1050, Currency::Cny), "10.50");
        assert_eq!(decimal(-5, Currency::Cny), "-0.05");
        assert_eq!(decimal(-1050, Currency::Jpy), "-1050");
        assert_eq!(decimal(0, Currency::Usd), "0.00");
        assert_eq!(
            Amount::new(-123_456, Currency::Cny).to_decimal(),
            "-1234.56 CNY"
        );
    }

    #[test]
    fn csv_quotes_what_needs_it() {
        assert_eq!(csv_field("Xuhui"), "Xuhui");
        assert_eq!(csv_field("A, \"B\""), "\"A, \"\"B\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("@cmd"), "'@cmd");
    }
}
