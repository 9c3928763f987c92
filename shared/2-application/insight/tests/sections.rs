//! Each section's rules of `docs/sales.md` on small hand-made fact sets; every expected number is
//! worked out by hand in the comment beside it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests state expectations so

mod common;

use common::*;
use vendpay_domain::facts::{FactKind, Flow};
use vendpay_domain::{Currency, Timestamp};
use vendpay_insight::report::{Amount, HourCell, TagCounts};
use vendpay_insight::{build, Period, Tag};

fn cny(minor: i64) -> Amount {
    Amount::new(minor, Currency::Cny)
}

#[test]
fn machines_sum_per_device_and_currency() {
    let facts = vec![
        pay("p1", "2026-11-03 10:00", "m1", "s1", 1000).location("Gate 1"),
        sale("s1:r1", "2026-11-03 10:01", "m1", "s1", 350),
        sale("s1:r2", "2026-11-03 10:02", "m1", "s1", 300),
        refund("rf1", "issued", "2026-11-03 10:10", "m1", "s1", 350),
        // The final status of the same refund: not counted again.
        refund("rf1", "succeeded", "2026-11-03 10:11", "m1", "s1", 350),
        pay("p2", "2026-11-04 09:00", "m1", "s2", 500),
        sale("s2:r1", "2026-11-04 09:01", "m1", "s2", 500),
        // Written twice: counted once.
        sale("s2:r1", "2026-11-04 09:01", "m1", "s2", 500),
        pay("p3", "2026-11-05 09:00", "m1", "s3", 1).flow(Flow::PurchaseFirst),
        sale("s3:r1", "2026-11-05 09:00", "m1", "s3", 1).flow(Flow::PurchaseFirst),
        // The machine's latest facts tie on time: the greater id ("vend_failed:…") names the place.
        anomaly(
            "s9:late_vend_report:a",
            "late_vend_report",
            "2026-11-20 12:00",
            "m1",
        )
        .location("Gate 2"),
        fact(
            FactKind::VendFailed,
            "vend_failed:s9:r1",
            "2026-11-20 12:00",
            "m1",
            "s9",
        )
        .district("Jingan"),
        // A machine with only an anomaly still has a row.
        anomaly(
            "s0:unconfirmed_vend:x",
            "unconfirmed_vend",
            "2026-11-01 00:00",
            "m0",
        ),
        // Previous period and the period's end: no rows.
        pay("p4", "2026-10-31 23:59", "m2", "s4", 100),
        pay("p5", "2026-12-01 00:00", "m2", "s5", 100),
    ];
    let r = build(&november(), &facts, &[]);
    assert_eq!(r.machines.len(), 2);
    let m0 = &r.machines[0];
    assert_eq!((m0.device.as_str(), m0.sales), ("m0", 0));
    assert_eq!(
        (m0.gross, m0.net, m0.average_basket),
        (cny(0), cny(0), cny(0))
    );
    let m1 = &r.machines[1];
    assert_eq!(m1.device, "m1");
    assert_eq!(
        (m1.district.as_str(), m1.location.as_deref()),
        ("Jingan", None)
    );
    assert_eq!(m1.currency, Currency::Cny);
    // 350 + 300 + 500 + 1
    assert_eq!((m1.sales, m1.revenue), (4, cny(1151)));
    // 1000 + 500 + 1; refunds: the issued 350 only.
    assert_eq!(
        (m1.gross, m1.refunds, m1.net),
        (cny(1501), cny(350), cny(1151))
    );
    // floor(1151 / 3 sessions) = 383
    assert_eq!(m1.average_basket, cny(383));
}

#[test]
fn districts_rank_floor_and_compare_with_the_previous_period() {
    let facts = vec![
        // A: 2 machines, net 6000 -> floor(6000 / (2 × 30)) = 100.
        pay("a1", "2026-11-02 10:00", "a1", "sa1", 6000).district("A"),
        anomaly("sa2:x:1", "unconfirmed_vend", "2026-11-02 11:00", "a2").district("A"),
        // A's previous period: 500 − 200 issued (the succeeded fact is not counted) = 300.
        pay("a0", "2026-10-10 10:00", "a1", "sa0", 500).district("A"),
        refund("ra0", "issued", "2026-10-10 10:05", "a1", "sa0", 200).district("A"),
        refund("ra0", "succeeded", "2026-10-10 10:06", "a1", "sa0", 200).district("A"),
        // Before the previous period (2026-10-02 at +08:00): ignored.
        pay("a00", "2026-10-01 23:59", "a1", "sa00", 999).district("A"),
        // B and C: 1 machine, net 3000 -> 100 each; ties on net too, so by name.
        pay("c1", "2026-11-02 10:00", "c1", "sc1", 3000).district("C"),
        pay("b1", "2026-11-02 10:00", "b1", "sb1", 3000).district("B"),
        // D: 10 − 17 = −7 -> floor(−7 / 30) = −1 (truncation would say 0).
        pay("d1", "2026-11-02 10:00", "d1", "sd1", 10).district("D"),
        refund("rd1", "issued", "2026-11-02 10:01", "d1", "sd1", 17).district("D"),
        refund("rd1", "failed", "2026-11-02 10:02", "d1", "sd1", 17).district("D"),
        pay("d0", "2026-10-31 23:59", "d1", "sd0", 100).district("D"),
        // E: only in the previous period: no row.
        pay("e0", "2026-10-20 10:00", "e1", "se0", 100).district("E"),
        // A in dollars: its own rank.
        pay("u1", "2026-11-02 10:00", "u1", "su1", 100)
            .district("A")
            .currency(Currency::Usd),
    ];
    let r = build(&november(), &facts, &[]);
    let got: Vec<_> = r
        .districts
        .iter()
        .map(|d| {
            (
                d.district.as_str(),
                d.currency,
                d.rank,
                d.machines,
                d.net.minor,
                d.net_per_machine_day.minor,
                d.previous_net.minor,
                d.change.minor,
            )
        })
        .collect();
    use Currency::{Cny, Usd};
    assert_eq!(
        got,
        vec![
            ("A", Cny, 1, 2, 6000, 100, 300, 5700),
            ("B", Cny, 2, 1, 3000, 100, 0, 3000),
            ("C", Cny, 3, 1, 3000, 100, 0, 3000),
            ("D", Cny, 4, 1, -7, -1, 100, -107),
            ("A", Usd, 1, 1, 100, 3, 0, 100),
        ]
    );
    assert_eq!(r.districts[4].net.currency, Usd);
}

#[test]
fn items_units_slots_products_and_sold_out_hours() {
    // 8 days, 2026-11-02 … 2026-11-09; the end is 2026-11-10 00:00.
    let p = Period::parse("2026-11-02", "2026-11-09", "+08:00").unwrap();
    let facts = vec![
        // cola sells out of m1/A1 at 10:00; the slot's next sale (tea) is at 13:30: 3.5 h.
        sale("m1:1", "2026-11-02 10:00", "m1", "s1", 300)
            .sku("cola", Some("Cola"))
            .stock(0),
        sale("m1:2", "2026-11-02 13:30", "m1", "s2", 200)
            .sku("tea", Some("Tea"))
            .stock(5),
        // cola sells out of m2/A1 at 23:00 on the last day, no next sale: 1 h to the end.
        sale("m2:1", "2026-11-09 23:00", "m2", "s3", 300)
            .sku("cola", Some("Cola"))
            .stock(0),
        // Same instant on m3: the greater id ("sale:m3:1") names the product.
        sale("m3:1", "2026-11-09 23:00", "m3", "s4", 300)
            .sku("cola", Some("Cola Zero"))
            .stock(2),
        // A previous-period cola: not counted.
        sale("m1:0", "2026-11-01 10:00", "m1", "s0", 300).sku("cola", Some("Cola")),
        // gum sells out of m4/D1 at 10:00, refilled and sold at 10:03: 0.05 h -> 0.1.
        sale("m4:1", "2026-11-03 10:00", "m4", "s5", 50)
            .sku("gum", None)
            .slot("D1")
            .stock(0),
        sale("m4:2", "2026-11-03 10:03", "m4", "s6", 50)
            .sku("gum", None)
            .slot("D1")
            .stock(9),
        // Revenue ties at 100 with gum (more units first), then by name: slot Z1, sku Z5, slot Z9.
        sale("m5:1", "2026-11-04 10:00", "m5", "s7", 100).slot("Z9"),
        sale("m5:2", "2026-11-04 10:00", "m5", "s8", 100).sku("Z5", None),
        sale("m5:3", "2026-11-04 10:00", "m5", "s9", 100).slot("Z1"),
    ];
    let r = build(&p, &facts, &[]);
    let got: Vec<_> = r
        .items
        .iter()
        .map(|i| {
            (
                i.sku.as_deref(),
                i.slot.as_deref(),
                i.product.as_deref(),
                i.units,
                i.revenue.minor,
                i.slots,
                i.units_per_slot_day,
                i.hours_sold_out,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            // 3 / (3 slots × 8 days) = 0.125 -> 0.13 (half away from zero); 3.5 + 1 = 4.5 h.
            (Some("cola"), None, Some("Cola Zero"), 3, 900, 3, 0.13, 4.5),
            // 1 / (1 × 8) = 0.125 -> 0.13; the tea did not sell out.
            (Some("tea"), None, Some("Tea"), 1, 200, 1, 0.13, 0.0),
            // 2 / (1 × 8) = 0.25
            (Some("gum"), None, None, 2, 100, 1, 0.25, 0.1),
            (None, Some("Z1"), None, 1, 100, 1, 0.13, 0.0),
            (Some("Z5"), None, None, 1, 100, 1, 0.13, 0.0),
            (None, Some("Z9"), None, 1, 100, 1, 0.13, 0.0),
        ]
    );
    let json = serde_json::to_value(&r.items[0]).unwrap();
    assert_eq!(json["slot"], serde_json::Value::Null);
    assert_eq!(json["units_per_slot_day"].to_string(), "0.13");
}

#[test]
fn hours_use_the_report_offset_across_midnight_utc() {
    let utc = |y, m, d, h, mi| Timestamp::from_civil((y, m, d, h, mi, 0), 0).unwrap();
    let mut facts = Vec::new();
    for (n, t) in [
        // 17:30Z = 01:30 on Tuesday 2026-11-03 at +08:00 (twice).
        utc(2026, 11, 2, 17, 30),
        utc(2026, 11, 2, 17, 45),
        // 15:59Z = 23:59 on Monday 2026-11-02 (twice).
        utc(2026, 11, 2, 15, 59),
        utc(2026, 11, 9, 15, 0),
        // 16:00Z = 00:00 on Monday 2026-11-02.
        utc(2026, 11, 1, 16, 0),
        // The period's first instant: 00:00 on Sunday 2026-11-01.
        utc(2026, 10, 31, 16, 0),
    ]
    .into_iter()
    .enumerate()
    {
        facts.push(vendpay_domain::facts::Fact {
            at: t,
            ..sale(&format!("h{n}"), "2026-11-02 00:00", "m1", "s1", 1)
        });
    }
    // Payments are not sales.
    facts.push(pay("p", "2026-11-03 01:00", "m1", "s1", 5));
    let r = build(&november(), &facts, &[]);
    assert_eq!(r.hours.cells.len(), 168);
    let cell = |weekday: u8, hour: u8| r.hours.cells[(weekday as usize - 1) * 24 + hour as usize];
    assert_eq!(cell(2, 1).sales, 2);
    assert_eq!(cell(1, 23).sales, 2);
    assert_eq!(cell(1, 0).sales, 1);
    assert_eq!(cell(7, 0).sales, 1);
    assert_eq!(r.hours.cells.iter().map(|c| c.sales).sum::<u64>(), 6);
    assert_eq!((cell(3, 5).weekday, cell(3, 5).hour), (3, 5));
    // Ties: earlier weekday, then earlier hour; Sunday's single sale loses to Monday's.
    let c = |weekday, hour, sales| HourCell {
        weekday,
        hour,
        sales,
    };
    assert_eq!(r.hours.peak, vec![c(1, 23, 2), c(2, 1, 2), c(1, 0, 1)]);
}

#[test]
fn flows_and_exceptions() {
    let pf = |f: vendpay_domain::facts::Fact| f.flow(Flow::PurchaseFirst);
    let rf = |f: vendpay_domain::facts::Fact| f.flow(Flow::Refused);
    let facts = vec![
        // pay_first CNY: s1 pays twice, s2 once: 3 payments, 2 sessions, Σ 1833.
        pay("t1", "2026-11-03 10:00", "m1", "s1", 1000),
        pay("t2", "2026-11-03 10:01", "m1", "s1", 500),
        pay("t3", "2026-11-03 11:00", "m1", "s2", 333),
        sale("s1:r1", "2026-11-03 10:02", "m1", "s1", 700),
        sale("s2:r1", "2026-11-03 11:01", "m1", "s2", 333),
        refund("f1", "issued", "2026-11-03 10:10", "m1", "s1", 800),
        refund("f1", "succeeded", "2026-11-03 10:11", "m1", "s1", 800),
        // pay_first USD.
        pay("t4", "2026-11-03 10:00", "u1", "s3", 100).currency(Currency::Usd),
        // purchase_first: 1 / 20000 = 0.00005 -> 0.0001.
        pf(pay("t5", "2026-11-04 10:00", "m1", "o1", 20000)),
        pf(sale("o1:r1", "2026-11-04 10:00", "m1", "o1", 19999)),
        pf(refund("f2", "issued", "2026-11-04 10:01", "m1", "o1", 1)),
        pf(refund("f2", "failed", "2026-11-04 10:30", "m1", "o1", 1)),
        // refused: everything refunded.
        rf(pay("t6", "2026-11-05 10:00", "m1", "x1", 100)),
        rf(refund("f3", "issued", "2026-11-05 10:00", "m1", "x1", 100)
            .reason("refused:device_offline")),
        rf(pay("t7", "2026-11-05 11:00", "m1", "x2", 50)),
        rf(refund("f4", "issued", "2026-11-05 11:00", "m1", "x2", 50)
            .reason("refused:device_offline")),
        rf(pay("t8", "2026-11-05 12:00", "m1", "x3", 70)),
        rf(refund("f5", "issued", "2026-11-05 12:00", "m1", "x3", 70).reason("refused:currency")),
        // A refused refund's final status is not a second refused payment.
        rf(
            refund("f5", "succeeded", "2026-11-05 12:01", "m1", "x3", 70)
                .reason("refused:currency"),
        ),
        // A JPY sale without a payment in the period: no row.
        sale("j1:r1", "2026-11-05 10:00", "m9", "j1", 100).currency(Currency::Jpy),
        fact(
            FactKind::VendFailed,
            "vend_failed:s1:r9",
            "2026-11-03 10:03",
            "m1",
            "s1",
        ),
        fact(
            FactKind::VendFailed,
            "vend_failed:s2:r9",
            "2026-11-03 11:03",
            "m1",
            "s2",
        ),
        anomaly(
            "s1:unconfirmed_vend:r7",
            "unconfirmed_vend",
            "2026-11-03 10:04",
            "m1",
        ),
        anomaly(
            "s2:unconfirmed_vend:r7",
            "unconfirmed_vend",
            "2026-11-03 11:04",
            "m1",
        ),
        anomaly(
            "s2:late_vend_report:r7:true",
            "late_vend_report",
            "2026-11-03 11:05",
            "m1",
        ),
        // Previous period: not counted.
        fact(
            FactKind::VendFailed,
            "vend_failed:s0:r1",
            "2026-10-20 10:00",
            "m1",
            "s0",
        ),
    ];
    let r = build(&november(), &facts, &[]);
    let got: Vec<_> = r
        .flows
        .flows
        .iter()
        .map(|f| {
            (
                f.flow,
                f.currency,
                f.sessions,
                f.payments,
                f.average_payment.minor,
                f.average_spent.minor,
                f.refund_share,
            )
        })
        .collect();
    use Currency::{Cny, Usd};
    assert_eq!(
        got,
        vec![
            // floor(1833 / 3) = 611; floor(1033 / 2) = 516; 800 / 1833 = 0.43644… -> 0.4364.
            (Flow::PayFirst, Cny, 2, 3, 611, 516, 0.4364),
            (Flow::PayFirst, Usd, 1, 1, 100, 0, 0.0),
            (Flow::PurchaseFirst, Cny, 1, 1, 20000, 19999, 0.0001),
            // floor(220 / 3) = 73; all refunded.
            (Flow::Refused, Cny, 3, 3, 73, 0, 1.0),
        ]
    );
    let e = &r.flows.exceptions;
    assert_eq!(
        (e.failed_vends, e.unconfirmed_holds, e.refunds_failed),
        (2, 2, 1)
    );
    let map = |pairs: &[(&str, u64)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    assert_eq!(
        e.refused_payments,
        map(&[("currency", 1), ("device_offline", 2)])
    );
    assert_eq!(
        e.anomalies,
        map(&[("late_vend_report", 1), ("unconfirmed_vend", 2)])
    );
    let json = serde_json::to_value(&r.flows).unwrap();
    assert_eq!(json["flows"][0]["flow"], "pay_first");
    assert_eq!(json["flows"][0]["refund_share"].to_string(), "0.4364");
}

fn counts(new: u64, regular: u64, loyal: u64, big_spender: u64, lapsed: u64) -> TagCounts {
    TagCounts {
        new,
        regular,
        loyal,
        big_spender,
        lapsed,
    }
}

#[test]
fn tags_combine_history_and_both_periods() {
    // November: the last 14 days start 2026-11-17 00:00.
    let mut facts = vec![
        // b1: 3 days at +08:00 (23:30 and 00:10 are different days), an earlier buyer.
        sale("b1:1", "2026-11-03 10:00", "m1", "s1", 100).buyer(1),
        sale("b1:2", "2026-11-03 23:30", "m1", "s2", 100).buyer(1),
        sale("b1:3", "2026-11-04 00:10", "m1", "s3", 100).buyer(1),
        sale("b1:4", "2026-11-20 09:00", "m1", "s4", 100).buyer(1),
        // b4: a previous-period sale only: not new, lapsed; district from the fact.
        sale("b4:1", "2026-10-15 09:00", "m4", "s40", 100)
            .buyer(4)
            .district("Minhang"),
        // b5: history, and one sale late in the period: kept with no tag.
        sale("b5:0", "2026-10-10 09:00", "m1", "s50", 100).buyer(5),
        sale("b5:1", "2026-11-25 09:00", "m1", "s51", 100).buyer(5),
        // b6, b7, b8 tie at the top spend; 11 CNY spenders (b1 b2 b5 … b13) -> ceil(11/10) = 2 big spenders: b6, b7.
        sale("b6:1", "2026-11-26 09:00", "m1", "s60", 5000).buyer(6),
        sale("b7:1", "2026-11-26 09:00", "m1", "s70", 5000).buyer(7),
        sale("b8:1", "2026-11-26 09:00", "m1", "s80", 5000).buyer(8),
        // b9: the only USD spender is a big spender in USD; also a small CNY spender.
        sale("b9:1", "2026-11-26 09:00", "u1", "s90", 10)
            .buyer(9)
            .currency(Currency::Usd),
        sale("b9:2", "2026-11-26 10:00", "m1", "s91", 10).buyer(9),
        sale("b10:1", "2026-11-26 09:00", "m1", "s100", 10).buyer(10),
        sale("b11:1", "2026-11-26 09:00", "m1", "s110", 10).buyer(11),
        sale("b12:1", "2026-11-26 09:00", "m1", "s120", 10).buyer(12),
        sale("b13:1", "2026-11-26 09:00", "m1", "s121", 10).buyer(13),
        // No buyer key: not tagged.
        sale("nokey", "2026-11-26 09:00", "m1", "s130", 99_999),
    ];
    // b2: new, 8 days (2 … 9 November) -> regular and loyal, and nothing since 17 November -> lapsed.
    for d in 2..=9 {
        facts.push(
            sale(
                &format!("b2:{d}"),
                &format!("2026-11-{d:02} 12:00"),
                "j1",
                &format!("s2{d}"),
                10,
            )
            .buyer(2)
            .district("Jingan"),
        );
    }
    let history = vec![
        history(1, "2026-05-01 10:00", "2026-10-20 10:00", "Old"),
        // b3: history only, long ago -> lapsed, in the district of its last sale.
        history(3, "2026-01-01 10:00", "2026-10-25 10:00", "Pudong"),
        history(5, "2026-10-01 10:00", "2026-10-10 09:00", "Xuhui"),
    ];
    let r = build(&november(), &facts, &history);
    // Kept: b1 (regular), b2 (new regular loyal lapsed), b3 (lapsed), b4 (lapsed), b5 (none, sold),
    // b6 b7 (big), b8 (none, sold), b9 (big in USD), b10 … b13 (none, sold) = 13.
    assert_eq!(r.tags.buyers, 13);
    // new: b2 and b6 … b13 (no history, first sale in the period).
    assert_eq!(r.tags.counts, counts(9, 2, 1, 3, 3));
    let districts: Vec<_> = r
        .tags
        .districts
        .iter()
        .map(|d| (d.district.as_str(), d.buyers, d.counts))
        .collect();
    assert_eq!(
        districts,
        vec![
            ("Jingan", 1, counts(1, 1, 1, 0, 1)),
            ("Minhang", 1, counts(0, 0, 0, 0, 1)),
            ("Pudong", 1, counts(0, 0, 0, 0, 1)),
            // b1 (latest sale 20 Nov in Xuhui, not the history's "Old"), b5 … b13.
            ("Xuhui", 10, counts(8, 1, 0, 3, 0)),
        ]
    );
}

#[test]
fn lapsed_reaches_into_history_when_the_period_is_short() {
    // 7 days 2026-11-20 … 26: the last 14 days start 2026-11-13, inside the previous period.
    let p = Period::parse("2026-11-20", "2026-11-26", "+08:00").unwrap();
    let facts = vec![
        sale("r1", "2026-11-15 10:00", "m1", "s1", 100).buyer(1),
        sale("r2", "2026-11-21 10:00", "m1", "s2", 100).buyer(4),
    ];
    let history = vec![
        // b1 bought on 15 November (in the last 14 days): not lapsed, no sale in the period: left out.
        history(1, "2026-10-01 10:00", "2026-11-15 10:00", "Xuhui"),
        // b2 last bought on 10 November: lapsed.
        history(2, "2026-10-01 10:00", "2026-11-10 10:00", "Xuhui"),
        // b3's last sale is exactly the cutoff: not lapsed.
        history(3, "2026-10-01 10:00", "2026-11-13 00:00", "Xuhui"),
    ];
    let r = build(&p, &facts, &history);
    // b2 (lapsed) and b4 (new, its only sale in the period; big spender, the only one).
    assert_eq!(r.tags.buyers, 2);
    assert_eq!(r.tags.counts, counts(1, 0, 0, 1, 1));
}

#[test]
fn targets_and_the_campaign() {
    let mut facts = Vec::new();
    // Six CNY districts P1 … P6 (net 600 … 100, one machine each) and one USD district.
    for n in 1..=6u64 {
        let d = format!("P{n}");
        facts.push(
            pay(
                &format!("p{n}"),
                "2026-11-02 10:00",
                &format!("m{n}"),
                "s",
                (7 - n) * 100,
            )
            .district(&d),
        );
    }
    facts.push(
        pay("u", "2026-11-02 10:00", "u1", "su", 100)
            .district("U")
            .currency(Currency::Usd),
    );
    // P1's items: a × 2, b × 2, slot C1 × 2, d × 1 -> the ties go by name: C1 (a slot), a, b.
    for (n, (sku, slot)) in [
        (Some("a"), "A1"),
        (Some("a"), "A1"),
        (Some("b"), "B1"),
        (Some("b"), "B1"),
        (None, "C1"),
        (None, "C1"),
        (Some("d"), "D1"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut f = sale(
            &format!("x{n}"),
            "2026-11-03 10:00",
            "m1",
            &format!("sx{n}"),
            10,
        )
        .district("P1")
        .slot(slot)
        .buyer(100 - n as u32);
        if let Some(sku) = sku {
            f = f.sku(sku, Some(&sku.to_uppercase()));
        }
        facts.push(f);
    }
    let r = build(&november(), &facts, &[]);
    let got: Vec<_> = r
        .targets
        .iter()
        .map(|t| (t.district.as_str(), t.currency, t.rank))
        .collect();
    assert_eq!(
        got,
        vec![
            ("P1", Currency::Cny, 1),
            ("U", Currency::Usd, 1),
            ("P2", Currency::Cny, 2),
            ("P3", Currency::Cny, 3),
            ("P4", Currency::Cny, 4),
        ]
    );
    let top: Vec<_> = r.targets[0]
        .top_items
        .iter()
        .map(|i| {
            (
                i.sku.as_deref(),
                i.slot.as_deref(),
                i.product.as_deref(),
                i.units,
            )
        })
        .collect();
    assert_eq!(
        top,
        vec![
            (None, Some("C1"), None, 2),
            (Some("a"), None, Some("A"), 2),
            (Some("b"), None, Some("B"), 2),
        ]
    );
    // 7 new buyers in P1 (keys 94 … 100), one sale each; 7 spenders -> 1 big spender: the biggest
    // spend ties, so the smallest key (0x5e = 94). Their only sale (3 November) lies before the
    // last 14 days, so they are lapsed too.
    assert_eq!(r.targets[0].buyers, 7);
    assert_eq!(r.targets[0].counts, counts(7, 0, 0, 1, 7));
    assert_eq!(r.targets[1].buyers, 0);
    assert!(r.targets[1].top_items.is_empty());
    let csv = r.campaign_csv();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("district,buyer_key,tags"));
    assert_eq!(
        lines.next(),
        Some("P1,000000000000005e,new;big_spender;lapsed")
    );
    assert_eq!(lines.next(), Some("P1,000000000000005f,new;lapsed"));
    assert_eq!(csv.lines().count(), 8);
    assert!(csv.ends_with("P1,0000000000000064,new;lapsed\n"));
}

#[test]
fn campaign_csv_quotes_operator_text() {
    let facts = vec![
        pay("p", "2026-11-02 10:00", "m1", "s1", 100).district("North, \"Old\" town"),
        sale("s1:r1", "2026-11-02 10:00", "m1", "s1", 100)
            .district("North, \"Old\" town")
            .buyer(7),
    ];
    let r = build(&november(), &facts, &[]);
    assert_eq!(
        r.campaign_csv(),
        "district,buyer_key,tags\n\"North, \"\"Old\"\" town\",0000000000000007,new;big_spender;lapsed\n"
    );
}

#[test]
fn duplicate_ids_count_once_everywhere() {
    let once = vec![
        pay("t1", "2026-11-02 10:00", "m1", "s1", 500),
        sale("s1:r1", "2026-11-02 10:01", "m1", "s1", 300)
            .buyer(1)
            .sku("cola", Some("Cola"))
            .stock(0),
        refund("f1", "issued", "2026-11-02 10:02", "m1", "s1", 200),
        anomaly(
            "s1:unconfirmed_vend:r2",
            "unconfirmed_vend",
            "2026-11-02 10:03",
            "m1",
        ),
    ];
    let mut twice = once.clone();
    twice.extend(once.iter().rev().cloned());
    let a = build(&november(), &once, &[]);
    let b = build(&november(), &twice, &[]);
    assert_eq!(a, b);
    assert_eq!(a.machines[0].net, cny(300));
    assert_eq!(a.items[0].units, 1);
    assert_eq!(a.flows.exceptions.unconfirmed_holds, 1);
}

#[test]
fn daily_rows_cover_every_date_and_currency() {
    let p = Period::parse("2026-11-02", "2026-11-04", "+08:00").unwrap();
    let facts = vec![
        pay("t1", "2026-11-02 23:59", "m1", "s1", 500),
        sale("s1:r1", "2026-11-03 00:00", "m1", "s1", 300),
        refund("f1", "issued", "2026-11-03 00:01", "m1", "s1", 200),
        pay("t2", "2026-11-04 10:00", "u1", "s2", 7).currency(Currency::Usd),
    ];
    let r = build(&p, &facts, &[]);
    let got: Vec<_> = r
        .daily
        .iter()
        .map(|d| {
            (
                d.date.as_str(),
                d.currency,
                d.sales,
                d.revenue.minor,
                d.net.minor,
            )
        })
        .collect();
    use Currency::{Cny, Usd};
    assert_eq!(
        got,
        vec![
            ("2026-11-02", Cny, 0, 0, 500),
            ("2026-11-02", Usd, 0, 0, 0),
            ("2026-11-03", Cny, 1, 300, -200),
            ("2026-11-03", Usd, 0, 0, 0),
            ("2026-11-04", Cny, 0, 0, 0),
            ("2026-11-04", Usd, 0, 0, 7),
        ]
    );
}

#[test]
fn an_empty_period_is_a_report_with_empty_sections() {
    let r = build(&november(), &[], &[]);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["from"], "2026-11-01");
    assert_eq!(json["to"], "2026-11-30");
    assert_eq!(json["tz"], "+08:00");
    assert_eq!(json["days"], 30);
    assert_eq!(json["previous"]["from"], "2026-10-02");
    assert_eq!(json["previous"]["to"], "2026-10-31");
    for section in ["machines", "districts", "items", "targets", "daily"] {
        assert_eq!(json[section], serde_json::json!([]), "{section}");
    }
    assert_eq!(json["hours"]["cells"].as_array().unwrap().len(), 168);
    assert_eq!(json["hours"]["peak"], serde_json::json!([]));
    assert_eq!(
        json["flows"],
        serde_json::json!({"flows": [], "exceptions": {"failed_vends": 0, "unconfirmed_holds": 0,
            "refused_payments": {}, "refunds_failed": 0, "anomalies": {}}})
    );
    assert_eq!(
        json["tags"],
        serde_json::json!({"buyers": 0, "counts": {"new": 0, "regular": 0, "loyal": 0,
            "big_spender": 0, "lapsed": 0}, "districts": []})
    );
    assert!(json.get("campaign").is_none());
    assert_eq!(r.campaign_csv(), "district,buyer_key,tags\n");
    let text = r.to_text();
    assert!(text.contains("2026-11-01"), "{text}");
    let html = r.to_html();
    assert_eq!(html.matches("No sales in this period").count(), 5, "{html}");
}

#[test]
fn json_field_order_is_the_documents() {
    let facts = vec![
        pay("t1", "2026-11-02 10:00", "m1", "s1", 500),
        sale("s1:r1", "2026-11-02 10:01", "m1", "s1", 300).buyer(1),
    ];
    let json = serde_json::to_string(&build(&november(), &facts, &[])).unwrap();
    let order = [
        "\"from\"",
        "\"to\"",
        "\"tz\"",
        "\"days\"",
        "\"previous\"",
        "\"machines\"",
        "\"districts\"",
        "\"items\"",
        "\"hours\"",
        "\"flows\"",
        "\"tags\"",
        "\"targets\"",
        "\"daily\"",
    ];
    let places: Vec<usize> = order.iter().map(|k| json.find(k).unwrap()).collect();
    assert!(places.windows(2).all(|w| w[0] < w[1]), "{json}");
    assert!(json.contains(
        r#"{"device":"m1","district":"Xuhui","location":null,"currency":"CNY","sales":1,"revenue":{"minor":300,"currency":"CNY"},"gross":{"minor":500,"currency":"CNY"},"refunds":{"minor":0,"currency":"CNY"},"net":{"minor":500,"currency":"CNY"},"average_basket":{"minor":300,"currency":"CNY"}}"#
    ), "{json}");
    // The document reads back.
    let back: vendpay_insight::SalesReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back.machines.len(), 1);
    let _ = Tag::ALL;
}

#[test]
fn html_escapes_operator_text_and_stays_self_contained() {
    let evil = "<script>alert('x')</script> & \"Co\"";
    let facts = vec![
        pay("t1", "2026-11-02 10:00", "m1", "s1", 500)
            .district(evil)
            .location("<b>gate</b>"),
        sale("s1:r1", "2026-11-02 10:01", "m1", "s1", 300)
            .district(evil)
            .location("<b>gate</b>")
            .sku("x", Some("<img src=x onerror=alert(1)>"))
            .buyer(1),
    ];
    let html = build(&november(), &facts, &[]).to_html();
    assert!(!html.contains("<script"), "{html}");
    assert!(!html.contains("<img"), "{html}");
    assert!(!html.contains("<b>gate"), "{html}");
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;Co&quot;"));
    assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
    // Self-contained: no URL to fetch, no script, no web font.
    for banned in [
        "http://",
        "https://",
        "<script",
        "@font-face",
        "<link",
        "src=\"",
    ] {
        let rest = html.replace("http://www.w3.org/2000/svg", "");
        assert!(!rest.contains(banned), "{banned}");
    }
    for chart in ["daily", "districts", "heatmap", "items", "tags"] {
        let tag = format!("data-chart=\"{chart}\"");
        let at = html.find(&tag).unwrap_or_else(|| panic!("{chart} missing"));
        let open = &html[html[..at].rfind("<svg").unwrap()..];
        let open = &open[..open.find('>').unwrap()];
        assert!(open.contains("viewBox=\"0 0 "), "{open}");
        assert!(open.contains("role=\"img\""), "{open}");
        assert!(open.contains("aria-label=\""), "{open}");
    }
    assert!(html.contains("<title>"));
}

#[test]
fn text_report_has_every_section() {
    let facts = vec![
        pay("t1", "2026-11-02 10:00", "m1", "s1", 123_456),
        sale("s1:r1", "2026-11-02 10:01", "m1", "s1", 300)
            .sku("cola", Some("可乐 Cola"))
            .buyer(1),
        refund("f1", "issued", "2026-11-02 10:02", "m1", "s1", 100),
    ];
    let text = build(&november(), &facts, &[]).to_text();
    for heading in [
        "1. Machines",
        "2. Districts",
        "3. Items",
        "4. Hours",
        "5. Flows",
        "6. Tags",
        "7. Targets",
    ] {
        assert!(text.contains(heading), "{heading}\n{text}");
    }
    // 123 456 − 100 minor units, with the currency's two decimals.
    assert!(text.contains("1,233.56"), "{text}");
    assert!(text.contains("可乐 Cola"), "{text}");
    assert!(text.contains("peak: Mon 10:00 (1 sales)"), "{text}");
}
