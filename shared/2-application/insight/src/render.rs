//! What the text and HTML renderings share: names of weekdays and items, terminal widths, and the
//! per-currency totals of the headline.

use vendpay_domain::Currency;

use crate::report::{ItemRow, SalesReport};

pub(crate) const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// Columns of a terminal count East Asian wide characters (district and product names are often
/// Chinese) as two.
pub(crate) fn width(s: &str) -> usize {
    s.chars()
        .map(|c| match c as u32 {
            0x1100..=0x115F
            | 0x2E80..=0xA4CF
            | 0xAC00..=0xD7A3
            | 0xF900..=0xFAFF
            | 0xFE30..=0xFE4F
            | 0xFF00..=0xFF60
            | 0xFFE0..=0xFFE6
            | 0x1F300..=0x1FAFF
            | 0x20000..=0x3FFFD => 2,
            _ => 1,
        })
        .sum()
}

pub(crate) fn item_name(i: &ItemRow) -> String {
    match (&i.sku, &i.slot) {
        (Some(sku), _) => sku.clone(),
        (None, Some(slot)) => format!("slot {slot}"),
        (None, None) => "-".to_owned(),
    }
}

/// The period's totals in one currency, summed over the machines.
pub(crate) struct Totals {
    pub currency: Currency,
    pub sales: u64,
    pub revenue: i64,
    pub gross: i64,
    pub refunds: i64,
    pub net: i64,
}

/// One row per currency with a machine row, in currency order.
pub(crate) fn totals(report: &SalesReport) -> Vec<Totals> {
    let mut out: Vec<Totals> = Vec::new();
    for m in &report.machines {
        let t = match out.iter_mut().find(|t| t.currency == m.currency) {
            Some(t) => t,
            None => {
                out.push(Totals {
                    currency: m.currency,
                    sales: 0,
                    revenue: 0,
                    gross: 0,
                    refunds: 0,
                    net: 0,
                });
                let last = out.len() - 1;
                &mut out[last]
            }
        };
        t.sales += m.sales;
        t.revenue += m.revenue.minor;
        t.gross += m.gross.minor;
        t.refunds += m.refunds.minor;
        t.net += m.net.minor;
    }
    out.sort_by(|a, b| a.currency.code().cmp(b.currency.code()));
    out
}

/// Minor units as a decimal with thousands separators: `12,345.67`, `-1,050` (JPY).
pub(crate) fn grouped(minor: i64, currency: Currency) -> String {
    let plain = crate::report::decimal(minor, currency);
    let (sign, rest) = match plain.strip_prefix('-') {
        Some(r) => ("-", r),
        None => ("", plain.as_str()),
    };
    let (int, frac) = match rest.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (rest, None),
    };
    let mut out = String::from(sign);
    for (k, ch) in int.chars().enumerate() {
        if k > 0 && (int.len() - k) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if let Some(f) = frac {
        out.push('.');
        out.push_str(f);
    }
    out
}

/// `1,234.50 CNY`.
pub(crate) fn money(minor: i64, currency: Currency) -> String {
    format!("{} {currency}", grouped(minor, currency))
}

/// A count with thousands separators.
pub(crate) fn count(n: u64) -> String {
    grouped(i64::try_from(n).unwrap_or(i64::MAX), Currency::Jpy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouping() {
        assert_eq!(grouped(123_456_789, Currency::Cny), "1,234,567.89");
        assert_eq!(grouped(-100_000, Currency::Cny), "-1,000.00");
        assert_eq!(grouped(-1_050, Currency::Jpy), "-1,050");
        assert_eq!(grouped(5, Currency::Cny), "0.05");
        assert_eq!(count(1_000_000), "1,000,000");
        assert_eq!(money(-5, Currency::Usd), "-0.05 USD");
    }
}
