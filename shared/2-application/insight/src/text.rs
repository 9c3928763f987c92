//! The report for a terminal: the seven sections as aligned tables, amounts as decimals in their
//! currency's exponent beside a currency column.

use std::fmt::Write as _;

use crate::render::{grouped, item_name, totals, width, WEEKDAYS};
use crate::report::{Amount, SalesReport, Tag, TagCounts};

#[derive(Clone, Copy)]
enum Align {
    Left,
    Right,
}

use Align::{Left, Right};

fn table(out: &mut String, columns: &[(&str, Align)], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = columns.iter().map(|(h, _)| width(h)).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(width(cell));
        }
    }
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::from("  ");
        for ((cell, w), (_, align)) in cells.zip(&widths).zip(columns) {
            let pad = " ".repeat(w.saturating_sub(width(cell)));
            match align {
                Left => {
                    s.push_str(cell);
                    s.push_str(&pad);
                }
                Right => {
                    s.push_str(&pad);
                    s.push_str(cell);
                }
            }
            s.push_str("  ");
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(out, &mut columns.iter().map(|(h, _)| *h));
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    line(out, &mut rule.iter().map(String::as_str));
    for row in rows {
        line(out, &mut row.iter().map(String::as_str));
    }
}

fn money(a: Amount) -> String {
    grouped(a.minor, a.currency)
}

fn signed(a: Amount) -> String {
    let s = money(a);
    if a.minor > 0 {
        format!("+{s}")
    } else {
        s
    }
}

fn opt(s: &Option<String>) -> String {
    s.clone().unwrap_or_else(|| "-".to_owned())
}

fn heading(out: &mut String, title: &str) {
    let _ = write!(out, "\n{title}\n{}\n", "=".repeat(width(title)));
}

fn none(out: &mut String, what: &str) {
    let _ = writeln!(out, "  {what}");
}

fn tag_cells(c: &TagCounts) -> Vec<String> {
    Tag::ALL.iter().map(|t| c.get(*t).to_string()).collect()
}

impl SalesReport {
    /// A readable report for a terminal: all seven sections and the daily totals.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "vendpay sales report: {} … {} at {} ({} days)",
            self.from, self.to, self.tz, self.days
        );
        let _ = writeln!(
            out,
            "previous period:      {} … {}",
            self.previous.from, self.previous.to
        );

        heading(&mut out, "Totals");
        let totals = totals(self);
        if totals.is_empty() {
            none(&mut out, "No sales in this period.");
        } else {
            let rows: Vec<Vec<String>> = totals
                .iter()
                .map(|t| {
                    vec![
                        t.currency.to_string(),
                        t.sales.to_string(),
                        grouped(t.revenue, t.currency),
                        grouped(t.gross, t.currency),
                        grouped(t.refunds, t.currency),
                        grouped(t.net, t.currency),
                    ]
                })
                .collect();
            table(
                &mut out,
                &[
                    ("currency", Left),
                    ("sales", Right),
                    ("revenue", Right),
                    ("gross", Right),
                    ("refunds", Right),
                    ("net", Right),
                ],
                &rows,
            );
            let _ = writeln!(
                out,
                "  buyers: {} ({} new, {} regular, {} loyal, {} big spenders, {} lapsed)",
                self.tags.buyers,
                self.tags.counts.new,
                self.tags.counts.regular,
                self.tags.counts.loyal,
                self.tags.counts.big_spender,
                self.tags.counts.lapsed
            );
        }

        heading(&mut out, "1. Machines");
        if self.machines.is_empty() {
            none(&mut out, "No machine had a fact in this period.");
        } else {
            let rows: Vec<Vec<String>> = self
                .machines
                .iter()
                .map(|m| {
                    vec![
                        m.device.clone(),
                        m.district.clone(),
                        opt(&m.location),
                        m.currency.to_string(),
                        m.sales.to_string(),
                        money(m.revenue),
                        money(m.gross),
                        money(m.refunds),
                        money(m.net),
                        money(m.average_basket),
                    ]
                })
                .collect();
            table(
                &mut out,
                &[
                    ("device", Left),
                    ("district", Left),
                    ("location", Left),
                    ("cur", Left),
                    ("sales", Right),
                    ("revenue", Right),
                    ("gross", Right),
                    ("refunds", Right),
                    ("net", Right),
                    ("avg basket", Right),
                ],
                &rows,
            );
        }

        heading(&mut out, "2. Districts (hot districts)");
        if self.districts.is_empty() {
            none(&mut out, "No district had a fact in this period.");
        } else {
            let rows: Vec<Vec<String>> = self
                .districts
                .iter()
                .map(|d| {
                    vec![
                        d.rank.to_string(),
                        d.district.clone(),
                        d.currency.to_string(),
                        d.machines.to_string(),
                        money(d.net),
                        money(d.net_per_machine_day),
                        money(d.previous_net),
                        signed(d.change),
                    ]
                })
                .collect();
            table(
                &mut out,
                &[
                    ("rank", Right),
                    ("district", Left),
                    ("cur", Left),
                    ("machines", Right),
                    ("net", Right),
                    ("net/machine-day", Right),
                    ("previous net", Right),
                    ("change", Right),
                ],
                &rows,
            );
        }

        heading(&mut out, "3. Items");
        if self.items.is_empty() {
            none(&mut out, "No sales in this period.");
        } else {
            let rows: Vec<Vec<String>> = self
                .items
                .iter()
                .map(|i| {
                    vec![
                        item_name(i),
                        opt(&i.product),
                        i.currency.to_string(),
                        i.units.to_string(),
                        money(i.revenue),
                        i.slots.to_string(),
                        format!("{:.2}", i.units_per_slot_day),
                        format!("{:.1}", i.hours_sold_out),
                    ]
                })
                .collect();
            table(
                &mut out,
                &[
                    ("item", Left),
                    ("product", Left),
                    ("cur", Left),
                    ("units", Right),
                    ("revenue", Right),
                    ("slots", Right),
                    ("units/slot-day", Right),
                    ("h sold out", Right),
                ],
                &rows,
            );
        }

        heading(&mut out, "4. Hours (sales by weekday and hour)");
        if self.hours.peak.is_empty() {
            none(&mut out, "No sales in this period.");
        } else {
            let peak: Vec<String> = self
                .hours
                .peak
                .iter()
                .map(|c| {
                    format!(
                        "{} {:02}:00 ({} sales)",
                        WEEKDAYS[usize::from(c.weekday.clamp(1, 7)) - 1],
                        c.hour,
                        c.sales
                    )
                })
                .collect();
            let _ = writeln!(out, "  peak: {}", peak.join(", "));
            let mut columns: Vec<(&str, Align)> = vec![("", Left)];
            let hours: Vec<String> = (0..24).map(|h| format!("{h:02}")).collect();
            columns.extend(hours.iter().map(|h| (h.as_str(), Right)));
            let rows: Vec<Vec<String>> = (1..=7u8)
                .map(|wd| {
                    let mut row = vec![WEEKDAYS[usize::from(wd) - 1].to_owned()];
                    row.extend(
                        self.hours
                            .cells
                            .iter()
                            .filter(|c| c.weekday == wd)
                            .map(|c| c.sales.to_string()),
                    );
                    row
                })
                .collect();
            table(&mut out, &columns, &rows);
        }

        heading(&mut out, "5. Flows");
        if self.flows.flows.is_empty() {
            none(&mut out, "No payments in this period.");
        } else {
            let rows: Vec<Vec<String>> = self
                .flows
                .flows
                .iter()
                .map(|f| {
                    vec![
                        f.flow.as_str().to_owned(),
                        f.currency.to_string(),
                        f.sessions.to_string(),
                        f.payments.to_string(),
                        money(f.average_payment),
                        money(f.average_spent),
                        format!("{:.2}%", f.refund_share * 100.0),
                    ]
                })
                .collect();
            table(
                &mut out,
                &[
                    ("flow", Left),
                    ("cur", Left),
                    ("sessions", Right),
                    ("payments", Right),
                    ("avg payment", Right),
                    ("avg spent", Right),
                    ("refund share", Right),
                ],
                &rows,
            );
        }
        let e = &self.flows.exceptions;
        let map = |m: &std::collections::BTreeMap<String, u64>| {
            if m.is_empty() {
                "none".to_owned()
            } else {
                m.iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let _ = writeln!(out, "\n  exceptions");
        let _ = writeln!(out, "    failed vends:      {}", e.failed_vends);
        let _ = writeln!(out, "    unconfirmed holds: {}", e.unconfirmed_holds);
        let _ = writeln!(out, "    refused payments:  {}", map(&e.refused_payments));
        let _ = writeln!(out, "    failed refunds:    {}", e.refunds_failed);
        let _ = writeln!(out, "    anomalies:         {}", map(&e.anomalies));

        heading(&mut out, "6. Tags");
        let _ = writeln!(out, "  buyers: {}", self.tags.buyers);
        let tag_columns = [
            ("buyers", Right),
            ("new", Right),
            ("regular", Right),
            ("loyal", Right),
            ("big_spender", Right),
            ("lapsed", Right),
        ];
        if !self.tags.districts.is_empty() {
            let mut columns = vec![("district", Left)];
            columns.extend(tag_columns);
            let mut rows: Vec<Vec<String>> = self
                .tags
                .districts
                .iter()
                .map(|d| {
                    let mut row = vec![d.district.clone(), d.buyers.to_string()];
                    row.extend(tag_cells(&d.counts));
                    row
                })
                .collect();
            let mut all = vec!["(all)".to_owned(), self.tags.buyers.to_string()];
            all.extend(tag_cells(&self.tags.counts));
            rows.push(all);
            table(&mut out, &columns, &rows);
        }

        heading(&mut out, "7. Targets");
        if self.targets.is_empty() {
            none(&mut out, "No district to target in this period.");
        } else {
            let mut columns = vec![("rank", Right), ("district", Left), ("cur", Left)];
            columns.extend(tag_columns);
            columns.push(("top items (units)", Left));
            let rows: Vec<Vec<String>> = self
                .targets
                .iter()
                .map(|t| {
                    let mut row = vec![
                        t.rank.to_string(),
                        t.district.clone(),
                        t.currency.to_string(),
                        t.buyers.to_string(),
                    ];
                    row.extend(tag_cells(&t.counts));
                    let top: Vec<String> = t
                        .top_items
                        .iter()
                        .map(|i| {
                            let name = i
                                .product
                                .clone()
                                .or_else(|| i.sku.clone())
                                .or_else(|| i.slot.as_ref().map(|s| format!("slot {s}")))
                                .unwrap_or_default();
                            format!("{name} ({})", i.units)
                        })
                        .collect();
                    row.push(top.join(", "));
                    row
                })
                .collect();
            table(&mut out, &columns, &rows);
            let _ = writeln!(
                out,
                "  campaign: {} tagged buyers in these districts (--campaign FILE.csv)",
                self.campaign.len()
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::width;

    #[test]
    fn wide_characters_take_two_columns() {
        assert_eq!(width("Xuhui"), 5);
        assert_eq!(width("徐汇区"), 6);
        let mut out = String::new();
        table(
            &mut out,
            &[("district", Left), ("net", Right)],
            &[
                vec!["徐汇区".into(), "1.00".into()],
                vec!["Pudong".into(), "-12.50".into()],
            ],
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "  district     net");
        assert_eq!(lines[2], "  徐汇区      1.00");
        assert_eq!(lines[3], "  Pudong    -12.50");
    }
}
