//! The report as one self-contained HTML page: inline CSS, hand-written inline SVG charts (no script,
//! no external URL, no web font), tables for the rest. Every text from operators or facts (district,
//! location, product names) goes through [`esc`].
//!
//! Charts carry `data-chart` = `daily`, `districts`, `heatmap`, `items`, `tags` (the browser check
//! `scripts/check-html` looks for them), a `viewBox`, `role="img"` and an `aria-label`; bars and cells
//! have `<title>` tooltips. A chart with nothing to draw says so in its place instead.

use std::fmt::Write as _;

use vendpay_domain::Currency;

use crate::render::{count, item_name, money, totals, Totals, WEEKDAYS};
use crate::report::{Amount, DistrictRow, ItemRow, SalesReport, Tag, TagCounts};

const NO_SALES: &str = "No sales in this period";
/// One colour per currency, in currency order; the first is the page's accent.
const CURRENCY_COLORS: [&str; 6] = [
    "#2563eb", "#ea580c", "#059669", "#9333ea", "#db2777", "#0891b2",
];
const UP: &str = "#15803d";
const DOWN: &str = "#b91c1c";
const MUTED: &str = "#64748b";
const GRID: &str = "#e2e8f0";

fn tag_color(tag: Tag) -> &'static str {
    match tag {
        Tag::New => "#10b981",
        Tag::Regular => "#3b82f6",
        Tag::Loyal => "#8b5cf6",
        Tag::BigSpender => "#f59e0b",
        Tag::Lapsed => "#94a3b8",
    }
}

/// Escapes text for element content and quoted attribute values alike.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// At most `max` characters, an ellipsis marking the cut (SVG text does not wrap or clip itself).
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

fn amount(a: Amount) -> String {
    money(a.minor, a.currency)
}

fn signed(a: Amount) -> String {
    let s = amount(a);
    if a.minor > 0 {
        format!("+{s}")
    } else {
        s
    }
}

/// Grid steps of 1, 2 or 5 × 10ⁿ, about four of them up to `max`.
fn ticks(max: f64) -> (f64, f64) {
    if max <= 0.0 {
        return (1.0, 1.0);
    }
    let raw = max / 4.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
        .max(1.0);
    (step, (max / step).ceil() * step)
}

fn compact(n: u64) -> String {
    match n {
        0..=999 => n.to_string(),
        1_000..=9_999 => format!("{:.1}k", n as f64 / 1000.0),
        10_000..=999_999 => format!("{}k", n / 1000),
        _ => format!("{:.1}M", n as f64 / 1_000_000.0),
    }
}

struct Palette(Vec<Currency>);

impl Palette {
    fn color(&self, c: Currency) -> &'static str {
        let k = self.0.iter().position(|x| *x == c).unwrap_or(0);
        CURRENCY_COLORS[k % CURRENCY_COLORS.len()]
    }
}

fn svg_open(out: &mut String, name: &str, w: u32, h: u32, label: &str) {
    let _ = write!(
        out,
        r#"<svg data-chart="{name}" viewBox="0 0 {w} {h}" width="100%" role="img" aria-label="{}" xmlns="http://www.w3.org/2000/svg">"#,
        esc(label)
    );
}

fn empty(out: &mut String, name: &str, message: &str) {
    let _ = write!(
        out,
        r#"<p class="empty" data-chart-empty="{name}">{}</p>"#,
        esc(message)
    );
}

impl SalesReport {
    /// One self-contained HTML page: headline numbers, five charts, and the tables.
    pub fn to_html(&self) -> String {
        let totals = totals(self);
        let palette = Palette(totals.iter().map(|t| t.currency).collect());
        let mut h = String::with_capacity(64 * 1024);
        let title = format!("Sales {} – {}", self.from, self.to);
        let _ = write!(
            h,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <title>vendpay · {}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n",
            esc(&title)
        );
        let _ = writeln!(
            h,
            "<header><h1>{}</h1><p class=\"sub\">{} days at UTC{} · compared with the previous period {} – {}</p></header>",
            esc(&title),
            self.days,
            esc(&self.tz),
            esc(&self.previous.from),
            esc(&self.previous.to)
        );
        self.headline(&mut h, &totals, &palette);

        section(
            &mut h,
            "Sales per day",
            "Stacked by currency; hover a bar for revenue and net.",
        );
        self.daily_chart(&mut h, &palette);
        h.push_str("</section>\n");

        section(
            &mut h,
            "Hot districts",
            "Ranked by net per machine-day; the change is the district's net against the previous period.",
        );
        self.districts_chart(&mut h, &palette);
        self.districts_table(&mut h);
        h.push_str("</section>\n");

        section(
            &mut h,
            "When machines sell",
            "Sales by weekday and hour; the three peak hours are outlined.",
        );
        self.heatmap(&mut h);
        h.push_str("</section>\n");

        section(&mut h, "Items", "Top items by revenue.");
        self.items_chart(&mut h, &palette);
        self.items_table(&mut h);
        h.push_str("</section>\n");

        section(
            &mut h,
            "Buyers",
            "Buyers by tag (a buyer may have several); buyers are keyed, never named.",
        );
        self.tags_chart(&mut h);
        self.tags_table(&mut h);
        h.push_str("</section>\n");

        section(
            &mut h,
            "Targets",
            "The five best district rows, their buyers and their best sellers.",
        );
        self.targets_table(&mut h);
        h.push_str("</section>\n");

        section(&mut h, "Machines", "");
        self.machines_table(&mut h);
        h.push_str("</section>\n");

        section(&mut h, "Payment flows and exceptions", "");
        self.flows_table(&mut h);
        h.push_str("</section>\n");

        h.push_str("<footer>vendpay · amounts in each currency's major unit; ratios rounded half away from zero.</footer>\n</main>\n</body>\n</html>\n");
        h
    }

    fn headline(&self, h: &mut String, totals: &[Totals], palette: &Palette) {
        h.push_str("<div class=\"cards\">\n");
        for t in totals {
            let c = t.currency;
            let _ = write!(
                h,
                "<div class=\"card\" style=\"border-top-color:{}\"><div class=\"k\">Gross {c}</div><div class=\"v\">{}</div><div class=\"s\">refunds {}</div></div>\n\
                 <div class=\"card\" style=\"border-top-color:{}\"><div class=\"k\">Net {c}</div><div class=\"v\">{}</div><div class=\"s\">revenue {}</div></div>\n",
                palette.color(c),
                esc(&crate::render::grouped(t.gross, c)),
                esc(&money(t.refunds, c)),
                palette.color(c),
                esc(&crate::render::grouped(t.net, c)),
                esc(&money(t.revenue, c)),
            );
        }
        let sales: u64 = totals.iter().map(|t| t.sales).sum();
        let machines = {
            let mut d: Vec<&str> = self.machines.iter().map(|m| m.device.as_str()).collect();
            d.dedup();
            d.len()
        };
        let _ = write!(
            h,
            "<div class=\"card\"><div class=\"k\">Sales</div><div class=\"v\">{}</div><div class=\"s\">{} machines</div></div>\n\
             <div class=\"card\"><div class=\"k\">Buyers</div><div class=\"v\">{}</div><div class=\"s\">{} new · {} lapsed</div></div>\n</div>\n",
            count(sales),
            count(machines as u64),
            count(self.tags.buyers),
            count(self.tags.counts.new),
            count(self.tags.counts.lapsed),
        );
    }

    fn daily_chart(&self, h: &mut String, palette: &Palette) {
        let total: u64 = self.daily.iter().map(|d| d.sales).sum();
        if total == 0 {
            return empty(h, "daily", NO_SALES);
        }
        // One column per date, the rows of that date stacked in currency order.
        let mut dates: Vec<(&str, Vec<&crate::report::DailyRow>)> = Vec::new();
        for d in &self.daily {
            match dates.last_mut() {
                Some((date, rows)) if *date == d.date.as_str() => rows.push(d),
                _ => dates.push((d.date.as_str(), vec![d])),
            }
        }
        let (w, ht) = (960.0, 300.0);
        let (ml, mr, mt, mb) = (64.0, 16.0, 34.0, 48.0);
        let (pw, ph) = (w - ml - mr, ht - mt - mb);
        let max = dates
            .iter()
            .map(|(_, rows)| rows.iter().map(|r| r.sales).sum::<u64>())
            .max()
            .unwrap_or(0) as f64;
        let (step, top) = ticks(max);
        svg_open(
            h,
            "daily",
            w as u32,
            ht as u32,
            &format!("Sales per day from {} to {}", self.from, self.to),
        );
        grid_y(h, ml, mt, pw, ph, step, top);
        let n = dates.len().max(1) as f64;
        let slot = pw / n;
        let bar = (slot * 0.8).max(0.6);
        let label_every = (dates.len() as f64 / 12.0).ceil().max(1.0) as usize;
        for (k, (date, rows)) in dates.iter().enumerate() {
            let x = ml + k as f64 * slot + (slot - bar) / 2.0;
            let mut y = mt + ph;
            for r in rows {
                if r.sales == 0 {
                    continue;
                }
                let bh = r.sales as f64 / top * ph;
                y -= bh;
                let _ = write!(
                    h,
                    r#"<rect x="{x:.1}" y="{y:.1}" width="{bar:.1}" height="{bh:.1}" fill="{}"><title>{} · {}: {} sales, revenue {}, net {}</title></rect>"#,
                    palette.color(r.currency),
                    esc(date),
                    r.currency,
                    count(r.sales),
                    esc(&amount(r.revenue)),
                    esc(&amount(r.net)),
                );
            }
            if k % label_every == 0 {
                let _ = write!(
                    h,
                    r#"<text x="{:.1}" y="{:.1}" class="tick" text-anchor="middle">{}</text>"#,
                    ml + (k as f64 + 0.5) * slot,
                    mt + ph + 16.0,
                    esc(date.get(5..).unwrap_or(date)),
                );
            }
        }
        axis_titles(h, ml, mt, pw, ph, "date", "sales");
        legend(h, ml, 16.0, &palette.0, palette);
        h.push_str("</svg>\n");
    }

    fn districts_chart(&self, h: &mut String, palette: &Palette) {
        if self.districts.is_empty() {
            return empty(h, "districts", NO_SALES);
        }
        const SHOWN: usize = 20;
        let rows: Vec<&DistrictRow> = self.districts.iter().take(SHOWN).collect();
        let row_h = 28.0;
        let top = 40.0;
        let ht = top + rows.len() as f64 * row_h + 12.0;
        let (x0, x1) = (250.0, 620.0);
        svg_open(
            h,
            "districts",
            960,
            ht.ceil() as u32,
            "Districts ranked by net per machine-day, with the change against the previous period",
        );
        let _ = write!(
            h,
            r#"<text x="8" y="20" class="head">district (rank)</text><text x="{x0}" y="20" class="head">net per machine-day</text><text x="952" y="20" class="head" text-anchor="end">net vs previous period</text>"#
        );
        for (k, d) in rows.iter().enumerate() {
            // Each currency is scaled on its own: amounts in two currencies do not compare.
            let same: Vec<i64> = self
                .districts
                .iter()
                .filter(|o| o.currency == d.currency)
                .map(|o| o.net_per_machine_day.minor)
                .collect();
            let lo = same.iter().copied().min().unwrap_or(0).min(0) as f64;
            let hi = same.iter().copied().max().unwrap_or(0).max(0) as f64;
            let span = if hi > lo { hi - lo } else { 1.0 };
            let zero = x0 + (0.0 - lo) / span * (x1 - x0);
            let v = d.net_per_machine_day.minor as f64;
            let end = x0 + (v - lo) / span * (x1 - x0);
            let (bx, bw) = if v >= 0.0 {
                (zero, end - zero)
            } else {
                (end, zero - end)
            };
            let y = top + k as f64 * row_h;
            let label = format!("{}. {}", d.rank, clip(&d.district, 24));
            let _ = write!(
                h,
                r#"<text x="8" y="{:.1}" class="label">{}</text><text x="{:.1}" y="{:.1}" class="tick" text-anchor="end">{}</text>"#,
                y + 17.0,
                esc(&label),
                x0 - 8.0,
                y + 17.0,
                d.currency
            );
            let _ = write!(
                h,
                r#"<rect x="{bx:.1}" y="{:.1}" width="{:.1}" height="18" rx="2" fill="{}"><title>{} ({}): rank {}, {} machines, net {}, {} per machine-day; previous period {}, change {}</title></rect>"#,
                y + 4.0,
                bw.max(1.0),
                palette.color(d.currency),
                esc(&d.district),
                d.currency,
                d.rank,
                d.machines,
                esc(&amount(d.net)),
                esc(&amount(d.net_per_machine_day)),
                esc(&amount(d.previous_net)),
                esc(&signed(d.change)),
            );
            let _ = write!(
                h,
                r#"<line x1="{zero:.1}" x2="{zero:.1}" y1="{:.1}" y2="{:.1}" stroke="{MUTED}" stroke-width="1"/>"#,
                y + 2.0,
                y + 24.0
            );
            let _ = write!(
                h,
                r#"<text x="{:.1}" y="{:.1}" class="value">{}</text>"#,
                x1 + 10.0,
                y + 17.0,
                esc(&amount(d.net_per_machine_day))
            );
            let (arrow, color) = match d.change.minor {
                c if c > 0 => ("▲", UP),
                c if c < 0 => ("▼", DOWN),
                _ => ("●", MUTED),
            };
            let pct = if d.previous_net.minor > 0 {
                format!(
                    " ({:+.1}%)",
                    d.change.minor as f64 / d.previous_net.minor as f64 * 100.0
                )
            } else {
                " (new)".to_owned()
            };
            let pct = if d.previous_net.minor == 0 && d.change.minor == 0 {
                String::new()
            } else {
                pct
            };
            let _ = write!(
                h,
                r#"<text x="952" y="{:.1}" class="value" text-anchor="end" fill="{color}">{arrow} {}{}</text>"#,
                y + 17.0,
                esc(&signed(d.change)),
                pct
            );
        }
        h.push_str("</svg>\n");
        if self.districts.len() > SHOWN {
            let _ = writeln!(
                h,
                "<p class=\"note\">The chart shows the first {SHOWN} of {} district rows; the table lists all.</p>",
                self.districts.len()
            );
        }
    }

    fn heatmap(&self, h: &mut String) {
        let max = self.hours.cells.iter().map(|c| c.sales).max().unwrap_or(0);
        if max == 0 {
            return empty(h, "heatmap", NO_SALES);
        }
        let (ml, mt, cw, ch) = (52.0, 28.0, 36.0, 28.0);
        let w = ml + 24.0 * cw + 12.0;
        let grid_bottom = mt + 7.0 * ch;
        let ht = grid_bottom + 60.0;
        svg_open(
            h,
            "heatmap",
            w as u32,
            ht as u32,
            "Sales by weekday and hour of day",
        );
        h.push_str(r##"<defs><linearGradient id="heat-scale"><stop offset="0" stop-color="#dbeafe"/><stop offset="1" stop-color="#1e3a8a"/></linearGradient></defs>"##);
        for hour in 0..24 {
            let _ = write!(
                h,
                r#"<text x="{:.1}" y="{:.1}" class="tick" text-anchor="middle">{hour:02}</text>"#,
                ml + (f64::from(hour) + 0.5) * cw,
                mt - 8.0
            );
        }
        for (k, name) in WEEKDAYS.iter().enumerate() {
            let _ = write!(
                h,
                r#"<text x="{:.1}" y="{:.1}" class="label" text-anchor="end">{name}</text>"#,
                ml - 8.0,
                mt + k as f64 * ch + ch / 2.0 + 4.0
            );
        }
        for c in &self.hours.cells {
            let (wd, hr) = (
                f64::from(c.weekday.clamp(1, 7) - 1),
                f64::from(c.hour.min(23)),
            );
            let (x, y) = (ml + hr * cw, mt + wd * ch);
            let t = (c.sales as f64 / max as f64).sqrt();
            let fill = if c.sales == 0 {
                "#f8fafc".to_owned()
            } else {
                mix((219, 234, 254), (30, 58, 138), t)
            };
            let peak = self
                .hours
                .peak
                .iter()
                .any(|p| p.weekday == c.weekday && p.hour == c.hour);
            let stroke = if peak {
                r##" stroke="#f59e0b" stroke-width="2.5""##
            } else {
                r##" stroke="#ffffff" stroke-width="1""##
            };
            let _ = write!(
                h,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{cw:.1}" height="{ch:.1}" fill="{fill}"{stroke}><title>{} {:02}:00–{:02}:00 · {} sales{}</title></rect>"#,
                WEEKDAYS[wd as usize],
                c.hour,
                c.hour + 1,
                count(c.sales),
                if peak { " (peak)" } else { "" }
            );
            if c.sales > 0 {
                let ink = if t > 0.55 { "#ffffff" } else { "#1e293b" };
                let _ = write!(
                    h,
                    r#"<text x="{:.1}" y="{:.1}" class="cell" text-anchor="middle" fill="{ink}">{}</text>"#,
                    x + cw / 2.0,
                    y + ch / 2.0 + 3.5,
                    compact(c.sales)
                );
            }
        }
        let ly = grid_bottom + 22.0;
        let _ = write!(
            h,
            r#"<text x="{ml}" y="{:.1}" class="tick">0</text><rect x="{:.1}" y="{:.1}" width="240" height="12" fill="url(#heat-scale)"/><text x="{:.1}" y="{:.1}" class="tick">{} sales per hour</text><text x="{:.1}" y="{:.1}" class="axis" text-anchor="end">hour of day at UTC{} →</text>"#,
            ly + 10.0,
            ml + 14.0,
            ly,
            ml + 262.0,
            ly + 10.0,
            count(max),
            w - 12.0,
            ly + 10.0,
            esc(&self.tz)
        );
        h.push_str("</svg>\n");
        let peak: Vec<String> = self
            .hours
            .peak
            .iter()
            .map(|c| {
                format!(
                    "{} {:02}:00 ({} sales)",
                    WEEKDAYS[usize::from(c.weekday.clamp(1, 7)) - 1],
                    c.hour,
                    count(c.sales)
                )
            })
            .collect();
        let _ = writeln!(h, "<p class=\"note\">Peak hours: {}.</p>", peak.join(", "));
    }

    fn items_chart(&self, h: &mut String, palette: &Palette) {
        if self.items.is_empty() {
            return empty(h, "items", NO_SALES);
        }
        const SHOWN: usize = 12;
        let rows: Vec<&ItemRow> = self.items.iter().take(SHOWN).collect();
        let row_h = 26.0;
        let top = 36.0;
        let ht = top + rows.len() as f64 * row_h + 10.0;
        let (x0, x1) = (260.0, 660.0);
        svg_open(h, "items", 960, ht.ceil() as u32, "Top items by revenue");
        let _ = write!(
            h,
            r#"<text x="8" y="20" class="head">item</text><text x="{x0}" y="20" class="head">revenue · units</text>"#
        );
        for (k, i) in rows.iter().enumerate() {
            let max = self
                .items
                .iter()
                .filter(|o| o.currency == i.currency)
                .map(|o| o.revenue.minor)
                .max()
                .unwrap_or(0)
                .max(1) as f64;
            let bw = (i.revenue.minor.max(0) as f64 / max * (x1 - x0)).max(1.0);
            let y = top + k as f64 * row_h;
            let _ = write!(
                h,
                r#"<text x="8" y="{:.1}" class="label">{}</text><rect x="{x0}" y="{:.1}" width="{bw:.1}" height="16" rx="2" fill="{}"><title>{} ({}): {} units, revenue {}, {} slots, {:.2} units per slot-day, {:.1} h sold out</title></rect><text x="{:.1}" y="{:.1}" class="value">{} · {} units</text>"#,
                y + 15.0,
                esc(&clip(i.label(), 30)),
                y + 3.0,
                palette.color(i.currency),
                esc(i.label()),
                esc(&item_name(i)),
                count(i.units),
                esc(&amount(i.revenue)),
                i.slots,
                i.units_per_slot_day,
                i.hours_sold_out,
                x0 + bw + 8.0,
                y + 15.0,
                esc(&amount(i.revenue)),
                count(i.units),
            );
        }
        h.push_str("</svg>\n");
    }

    fn tags_chart(&self, h: &mut String) {
        if self.tags.buyers == 0 {
            let message = if self.items.is_empty() {
                NO_SALES
            } else {
                "No buyers with a buyer key in this period"
            };
            return empty(h, "tags", message);
        }
        let row_h = 30.0;
        let top = 36.0;
        let ht = top + 5.0 * row_h + 10.0;
        let (x0, x1) = (150.0, 700.0);
        let buyers = self.tags.buyers as f64;
        svg_open(h, "tags", 960, ht as u32, "Buyers by tag");
        let _ = write!(
            h,
            r#"<text x="8" y="20" class="head">tag</text><text x="{x0}" y="20" class="head">buyers (share of the {} buyers kept)</text>"#,
            count(self.tags.buyers)
        );
        for (k, tag) in Tag::ALL.iter().enumerate() {
            let n = self.tags.counts.get(*tag);
            let y = top + k as f64 * row_h;
            let bw = (n as f64 / buyers * (x1 - x0)).max(1.0);
            let share = n as f64 / buyers * 100.0;
            let _ = write!(
                h,
                r#"<text x="8" y="{:.1}" class="label">{}</text><rect x="{x0}" y="{:.1}" width="{x1w:.1}" height="20" rx="2" fill="{GRID}"/><rect x="{x0}" y="{:.1}" width="{bw:.1}" height="20" rx="2" fill="{}"><title>{}: {} buyers ({share:.1}% of {})</title></rect><text x="{:.1}" y="{:.1}" class="value">{} ({share:.1}%)</text>"#,
                y + 16.0,
                tag.as_str(),
                y + 2.0,
                y + 2.0,
                tag_color(*tag),
                tag.as_str(),
                count(n),
                count(self.tags.buyers),
                x1 + 10.0,
                y + 16.0,
                count(n),
                x1w = x1 - x0,
            );
        }
        h.push_str("</svg>\n");
    }

    fn districts_table(&self, h: &mut String) {
        if self.districts.is_empty() {
            return;
        }
        h.push_str("<details><summary>All districts</summary><table><thead><tr><th class=\"n\">rank</th><th>district</th><th>currency</th><th class=\"n\">machines</th><th class=\"n\">net</th><th class=\"n\">net / machine-day</th><th class=\"n\">previous net</th><th class=\"n\">change</th></tr></thead><tbody>\n");
        for d in &self.districts {
            let _ = writeln!(
                h,
                "<tr><td class=\"n\">{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n {}\">{}</td></tr>",
                d.rank,
                esc(&d.district),
                d.currency,
                d.machines,
                esc(&amount(d.net)),
                esc(&amount(d.net_per_machine_day)),
                esc(&amount(d.previous_net)),
                change_class(d.change.minor),
                esc(&signed(d.change)),
            );
        }
        h.push_str("</tbody></table></details>\n");
    }

    fn items_table(&self, h: &mut String) {
        if self.items.is_empty() {
            return;
        }
        h.push_str("<details><summary>All items</summary><table><thead><tr><th>item</th><th>product</th><th class=\"n\">units</th><th class=\"n\">revenue</th><th class=\"n\">slots</th><th class=\"n\">units / slot-day</th><th class=\"n\">hours sold out</th></tr></thead><tbody>\n");
        for i in &self.items {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{:.2}</td><td class=\"n\">{:.1}</td></tr>",
                esc(&item_name(i)),
                esc(i.product.as_deref().unwrap_or("–")),
                count(i.units),
                esc(&amount(i.revenue)),
                i.slots,
                i.units_per_slot_day,
                i.hours_sold_out,
            );
        }
        h.push_str("</tbody></table></details>\n");
    }

    fn tags_table(&self, h: &mut String) {
        if self.tags.districts.is_empty() {
            return;
        }
        h.push_str("<details><summary>Buyers by district</summary><table><thead><tr><th>district</th><th class=\"n\">buyers</th>");
        tag_heads(h);
        h.push_str("</tr></thead><tbody>\n");
        for d in &self.tags.districts {
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=\"n\">{}</td>",
                esc(&d.district),
                count(d.buyers)
            );
            tag_cells(h, &d.counts);
            h.push_str("</tr>\n");
        }
        h.push_str("</tbody></table></details>\n");
    }

    fn targets_table(&self, h: &mut String) {
        if self.targets.is_empty() {
            return empty(h, "targets", "No district to target in this period");
        }
        h.push_str("<table><thead><tr><th class=\"n\">rank</th><th>district</th><th>currency</th><th class=\"n\">buyers</th>");
        tag_heads(h);
        h.push_str("<th>top items (units)</th></tr></thead><tbody>\n");
        for t in &self.targets {
            let _ = write!(
                h,
                "<tr><td class=\"n\">{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td>",
                t.rank,
                esc(&t.district),
                t.currency,
                count(t.buyers)
            );
            tag_cells(h, &t.counts);
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
                    format!("{} ({})", esc(&name), count(i.units))
                })
                .collect();
            let _ = writeln!(h, "<td>{}</td></tr>", top.join(", "));
        }
        let _ = write!(
            h,
            "</tbody></table>\n<p class=\"note\">Campaign: {} tagged buyers in these districts (<code>--campaign FILE.csv</code>).</p>\n",
            count(self.campaign.len() as u64)
        );
    }

    fn machines_table(&self, h: &mut String) {
        if self.machines.is_empty() {
            return empty(h, "machines", "No machine had a fact in this period");
        }
        h.push_str("<table><thead><tr><th>device</th><th>district</th><th>location</th><th class=\"n\">sales</th><th class=\"n\">revenue</th><th class=\"n\">gross</th><th class=\"n\">refunds</th><th class=\"n\">net</th><th class=\"n\">average basket</th></tr></thead><tbody>\n");
        for m in &self.machines {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                esc(&m.device),
                esc(&m.district),
                esc(m.location.as_deref().unwrap_or("–")),
                count(m.sales),
                esc(&amount(m.revenue)),
                esc(&amount(m.gross)),
                esc(&amount(m.refunds)),
                esc(&amount(m.net)),
                esc(&amount(m.average_basket)),
            );
        }
        h.push_str("</tbody></table>\n");
    }

    fn flows_table(&self, h: &mut String) {
        if self.flows.flows.is_empty() {
            empty(h, "flows", "No payments in this period");
        } else {
            h.push_str("<table><thead><tr><th>flow</th><th>currency</th><th class=\"n\">sessions</th><th class=\"n\">payments</th><th class=\"n\">average payment</th><th class=\"n\">average spent</th><th class=\"n\">refund share</th></tr></thead><tbody>\n");
            for f in &self.flows.flows {
                let _ = writeln!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{:.2}%</td></tr>",
                    f.flow.as_str().replace('_', " "),
                    f.currency,
                    count(f.sessions),
                    count(f.payments),
                    esc(&amount(f.average_payment)),
                    esc(&amount(f.average_spent)),
                    f.refund_share * 100.0,
                );
            }
            h.push_str("</tbody></table>\n");
        }
        let e = &self.flows.exceptions;
        let map = |m: &std::collections::BTreeMap<String, u64>| {
            if m.is_empty() {
                "none".to_owned()
            } else {
                m.iter()
                    .map(|(k, v)| format!("{} {}", esc(k), count(*v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let _ = writeln!(
            h,
            "<table class=\"kv\"><tbody><tr><th>failed vends</th><td class=\"n\">{}</td></tr><tr><th>unconfirmed holds</th><td class=\"n\">{}</td></tr><tr><th>refused payments</th><td>{}</td></tr><tr><th>failed refunds</th><td class=\"n\">{}</td></tr><tr><th>anomalies</th><td>{}</td></tr></tbody></table>",
            count(e.failed_vends),
            count(e.unconfirmed_holds),
            map(&e.refused_payments),
            count(e.refunds_failed),
            map(&e.anomalies),
        );
    }
}

fn change_class(minor: i64) -> &'static str {
    match minor {
        m if m > 0 => "up",
        m if m < 0 => "down",
        _ => "",
    }
}

fn tag_heads(h: &mut String) {
    for t in Tag::ALL {
        let _ = write!(h, "<th class=\"n\">{}</th>", t.as_str().replace('_', " "));
    }
}

fn tag_cells(h: &mut String, c: &TagCounts) {
    for t in Tag::ALL {
        let _ = write!(h, "<td class=\"n\">{}</td>", count(c.get(t)));
    }
}

fn section(h: &mut String, title: &str, note: &str) {
    let _ = write!(h, "<section><h2>{}</h2>", esc(title));
    if !note.is_empty() {
        let _ = write!(h, "<p class=\"note\">{}</p>", esc(note));
    }
    h.push('\n');
}

fn mix(a: (u8, u8, u8), b: (u8, u8, u8), t: f64) -> String {
    let t = t.clamp(0.0, 1.0);
    let m = |x: u8, y: u8| (f64::from(x) + (f64::from(y) - f64::from(x)) * t).round() as u8;
    format!("#{:02x}{:02x}{:02x}", m(a.0, b.0), m(a.1, b.1), m(a.2, b.2))
}

fn grid_y(h: &mut String, ml: f64, mt: f64, pw: f64, ph: f64, step: f64, top: f64) {
    let mut v = 0.0;
    while v <= top + step / 2.0 {
        let y = mt + ph - v / top * ph;
        let _ = write!(
            h,
            r#"<line x1="{ml:.1}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="{GRID}" stroke-width="1"/><text x="{:.1}" y="{:.1}" class="tick" text-anchor="end">{}</text>"#,
            ml + pw,
            ml - 6.0,
            y + 4.0,
            count(v as u64)
        );
        v += step;
    }
    let _ = write!(
        h,
        r#"<line x1="{ml:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="{MUTED}" stroke-width="1"/>"#,
        ml + pw,
        mt + ph,
        mt + ph
    );
}

fn axis_titles(h: &mut String, ml: f64, mt: f64, pw: f64, ph: f64, x: &str, y: &str) {
    let _ = write!(
        h,
        r#"<text x="{:.1}" y="{:.1}" class="axis" text-anchor="middle">{}</text><text x="14" y="{:.1}" class="axis" text-anchor="middle" transform="rotate(-90 14 {:.1})">{}</text>"#,
        ml + pw / 2.0,
        mt + ph + 38.0,
        esc(x),
        mt + ph / 2.0,
        mt + ph / 2.0,
        esc(y)
    );
}

fn legend(h: &mut String, x: f64, y: f64, currencies: &[Currency], palette: &Palette) {
    let mut x = x;
    for c in currencies {
        let _ = write!(
            h,
            r#"<rect x="{x:.1}" y="{:.1}" width="12" height="12" rx="2" fill="{}"/><text x="{:.1}" y="{:.1}" class="label">{c}</text>"#,
            y - 10.0,
            palette.color(*c),
            x + 16.0,
            y
        );
        x += 70.0;
    }
}

const CSS: &str = r#"
:root{--ink:#0f172a;--muted:#64748b;--line:#e2e8f0;--bg:#f8fafc;--card:#ffffff;--accent:#2563eb}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans","PingFang SC","Microsoft YaHei",sans-serif}
main{max-width:1040px;margin:0 auto;padding:24px 20px 40px}
header h1{margin:0;font-size:26px}
.sub{margin:4px 0 18px;color:var(--muted)}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(140px,1fr));gap:12px;margin-bottom:18px}
.card{background:var(--card);border:1px solid var(--line);border-top:4px solid var(--accent);border-radius:8px;padding:10px 14px}
.card .k{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card .v{font-size:22px;font-weight:650;font-variant-numeric:tabular-nums}
.card .s{color:var(--muted);font-size:12px}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:14px 18px;margin:14px 0}
h2{font-size:17px;margin:0 0 2px}
.note{color:var(--muted);margin:2px 0 10px;font-size:13px}
.empty{padding:28px;text-align:center;color:var(--muted);background:var(--bg);border:1px dashed var(--line);border-radius:6px}
svg{display:block;max-width:100%;height:auto;margin:6px 0}
svg text{font-family:inherit;fill:var(--ink)}
svg .tick{font-size:11px;fill:var(--muted)}
svg .label{font-size:13px}
svg .head{font-size:12px;fill:var(--muted);font-weight:600}
svg .value{font-size:12px;font-variant-numeric:tabular-nums}
svg .axis{font-size:12px;fill:var(--muted)}
svg .cell{font-size:10px;font-variant-numeric:tabular-nums}
svg rect:hover{opacity:.8}
table{border-collapse:collapse;width:100%;margin:8px 0;font-size:13px}
th,td{padding:4px 8px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{color:var(--muted);font-weight:600}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.up{color:#15803d}td.down{color:#b91c1c}
table.kv{width:auto}table.kv th{font-weight:500}
details summary{cursor:pointer;color:var(--accent);margin:6px 0}
footer{color:var(--muted);font-size:12px;text-align:center;margin-top:20px}
code{font-size:12px}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(esc("徐汇"), "徐汇");
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(ticks(37.0), (10.0, 40.0));
        assert_eq!(ticks(4000.0), (1000.0, 4000.0));
        assert_eq!(ticks(3.0), (1.0, 3.0));
        assert_eq!(ticks(0.0), (1.0, 1.0));
    }

    #[test]
    fn clipping_marks_the_cut() {
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("abc", 4), "abc");
    }
}
