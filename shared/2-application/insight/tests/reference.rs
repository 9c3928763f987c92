//! The fast engine against a slow, literal reading of `docs/sales.md` (strings, BTreeMaps, no
//! interning, no hashing tricks) on a synthetic month with repeated facts shuffled in: every section
//! must agree exactly.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests state expectations so

use std::collections::{BTreeMap, BTreeSet, HashSet};

use vendpay_domain::facts::{BuyerHistory, Fact, FactKind};
use vendpay_insight::synthetic::{generate, Shape};
use vendpay_insight::{build, Period};

const DAY: i64 = 86_400_000;

fn floor_div(a: i64, b: i64) -> i64 {
    (a as f64 / b as f64).floor() as i64
}

fn round(x: f64, places: i32) -> f64 {
    let m = 10f64.powi(places);
    (x * m + 0.5).floor() / m
}

fn latest<'a>(facts: impl Iterator<Item = &'a Fact>) -> Option<&'a Fact> {
    facts.max_by(|a, b| a.at.cmp(&b.at).then(a.id.cmp(&b.id)))
}

#[test]
fn the_engine_agrees_with_a_literal_reading_of_the_spec() {
    let p = Period::parse("2026-11-01", "2026-11-30", "+08:00").unwrap();
    let (mut facts, history) = generate(
        &p,
        Shape {
            seed: 99,
            ..Shape::SMALL
        },
    )
    .unwrap();
    // Every 7th fact again, in reverse order, at the end: repeated ids.
    let again: Vec<Fact> = facts.iter().step_by(7).rev().cloned().collect();
    facts.extend(again);
    let r = build(&p, &facts, &history);

    let (start, end) = (p.start().millis(), p.end().millis());
    let prev = p.previous_start().millis();
    let days = i64::from(p.days());
    let mut seen = HashSet::new();
    let all: Vec<&Fact> = facts
        .iter()
        .filter(|f| seen.insert(f.id.clone()) && f.at.millis() < end)
        .collect();
    let period: Vec<&Fact> = all
        .iter()
        .copied()
        .filter(|f| f.at.millis() >= start)
        .collect();
    let issued = |f: &Fact| f.kind == FactKind::Refund && f.status.as_deref() == Some("issued");
    let net = |f: &Fact| match f.kind {
        FactKind::Payment => f.amount as i64,
        _ if issued(f) => -(f.amount as i64),
        _ => 0,
    };

    // §1
    let mut keys = BTreeSet::new();
    for f in &period {
        keys.insert((f.device.to_string(), f.currency.code()));
    }
    assert_eq!(r.machines.len(), keys.len());
    for (row, (device, cur)) in r.machines.iter().zip(&keys) {
        let mine: Vec<&Fact> = period
            .iter()
            .copied()
            .filter(|f| f.device.as_str() == device && f.currency.code() == *cur)
            .collect();
        let sales: Vec<&Fact> = mine
            .iter()
            .copied()
            .filter(|f| f.kind == FactKind::Sale)
            .collect();
        let revenue: i64 = sales.iter().map(|f| f.amount as i64).sum();
        let baskets: BTreeSet<&str> = sales.iter().map(|f| f.session.as_str()).collect();
        let last = latest(
            period
                .iter()
                .copied()
                .filter(|f| f.device.as_str() == device),
        )
        .unwrap();
        assert_eq!((&row.device, row.currency.code()), (device, *cur));
        assert_eq!(row.district, last.district);
        assert_eq!(row.location, last.location);
        assert_eq!(row.sales, sales.len() as u64);
        assert_eq!(row.revenue.minor, revenue);
        assert_eq!(
            row.net.minor,
            mine.iter().map(|f| net(f)).sum::<i64>(),
            "{device}"
        );
        let avg = if baskets.is_empty() {
            0
        } else {
            floor_div(revenue, baskets.len() as i64)
        };
        assert_eq!(row.average_basket.minor, avg);
    }

    // §2
    for row in &r.districts {
        let here = |f: &&&Fact| f.district == row.district && f.currency == row.currency;
        let n: i64 = period.iter().filter(here).map(|f| net(f)).sum();
        let before: i64 = all
            .iter()
            .filter(here)
            .filter(|f| f.at.millis() >= prev && f.at.millis() < start)
            .map(|f| net(f))
            .sum();
        let machines: BTreeSet<&str> = period
            .iter()
            .filter(here)
            .map(|f| f.device.as_str())
            .collect();
        assert_eq!(row.machines, machines.len() as u64);
        assert_eq!(row.net.minor, n);
        assert_eq!(
            row.net_per_machine_day.minor,
            floor_div(n, machines.len() as i64 * days)
        );
        assert_eq!(row.previous_net.minor, before);
    }
    let mut ranked = r.districts.clone();
    ranked.sort_by(|a, b| {
        a.currency
            .code()
            .cmp(b.currency.code())
            .then(
                b.net_per_machine_day
                    .minor
                    .cmp(&a.net_per_machine_day.minor),
            )
            .then(b.net.minor.cmp(&a.net.minor))
            .then(a.district.cmp(&b.district))
    });
    assert_eq!(ranked, r.districts);

    // §3
    let sales: Vec<&Fact> = period
        .iter()
        .copied()
        .filter(|f| f.kind == FactKind::Sale)
        .collect();
    let mut item_keys = BTreeSet::new();
    for f in &sales {
        item_keys.insert((
            f.currency.code(),
            f.sku.as_ref().map(|s| s.to_string()),
            if f.sku.is_none() {
                f.slot.as_ref().map(|s| s.to_string())
            } else {
                None
            },
        ));
    }
    assert_eq!(r.items.len(), item_keys.len());
    for row in &r.items {
        let mine: Vec<&Fact> = sales
            .iter()
            .copied()
            .filter(|f| {
                f.currency == row.currency
                    && f.sku.as_ref().map(|s| s.to_string()) == row.sku
                    && (row.sku.is_some() || f.slot.as_ref().map(|s| s.to_string()) == row.slot)
            })
            .collect();
        assert_eq!(row.units, mine.len() as u64);
        assert_eq!(
            row.revenue.minor,
            mine.iter().map(|f| f.amount as i64).sum::<i64>()
        );
        let slots: BTreeSet<(String, String)> = mine
            .iter()
            .map(|f| (f.device.to_string(), f.slot.as_ref().unwrap().to_string()))
            .collect();
        assert_eq!(row.slots, slots.len() as u64);
        assert_eq!(
            row.units_per_slot_day,
            round(mine.len() as f64 / (slots.len() as f64 * days as f64), 2)
        );
        assert_eq!(
            row.product,
            latest(mine.iter().copied()).and_then(|f| f.product.clone())
        );
        let mut sold_out_ms = 0;
        for f in mine.iter().filter(|f| f.stock_after == Some(0)) {
            let next = sales
                .iter()
                .filter(|g| g.device == f.device && g.slot == f.slot)
                .filter(|g| (g.at, &g.id) > (f.at, &f.id))
                .map(|g| (g.at, &g.id))
                .min()
                .map_or(end, |(at, _)| at.millis());
            sold_out_ms += next - f.at.millis();
        }
        assert_eq!(
            row.hours_sold_out,
            round(sold_out_ms as f64 / 3_600_000.0, 1),
            "{row:?}"
        );
    }

    // §4
    for c in &r.hours.cells {
        let n = sales
            .iter()
            .filter(|f| {
                let local = f.at.millis() / 1000 + 8 * 3600;
                let weekday = (local.div_euclid(86_400) + 3).rem_euclid(7) + 1;
                weekday == i64::from(c.weekday)
                    && local.rem_euclid(86_400) / 3600 == i64::from(c.hour)
            })
            .count();
        assert_eq!(c.sales, n as u64);
    }

    // §5
    for row in &r.flows.flows {
        let mine = |k: FactKind| {
            period
                .iter()
                .copied()
                .filter(move |f| f.kind == k && f.flow == row.flow && f.currency == row.currency)
        };
        let payments: Vec<&Fact> = mine(FactKind::Payment).collect();
        let paid: i64 = payments.iter().map(|f| f.amount as i64).sum();
        let sessions: BTreeSet<&str> = payments.iter().map(|f| f.session.as_str()).collect();
        let spent: i64 = mine(FactKind::Sale).map(|f| f.amount as i64).sum();
        let refunded: i64 = mine(FactKind::Refund)
            .filter(|f| issued(f))
            .map(|f| f.amount as i64)
            .sum();
        assert_eq!(row.sessions, sessions.len() as u64);
        assert_eq!(row.payments, payments.len() as u64);
        assert_eq!(
            row.average_payment.minor,
            floor_div(paid, payments.len() as i64)
        );
        assert_eq!(
            row.average_spent.minor,
            floor_div(spent, sessions.len() as i64)
        );
        assert_eq!(row.refund_share, round(refunded as f64 / paid as f64, 4));
    }
    assert_eq!(
        r.flows.exceptions.refunds_failed,
        period
            .iter()
            .filter(|f| f.kind == FactKind::Refund && f.status.as_deref() == Some("failed"))
            .count() as u64
    );
    assert!(r.flows.exceptions.refunds_failed > 0);

    // §6
    let cutoff = end - 14 * DAY;
    let mut buyers: BTreeMap<String, (i64, i64, String)> = BTreeMap::new();
    let hist: BTreeMap<String, &BuyerHistory> = history
        .iter()
        .map(|h| (h.buyer_key.to_string(), h))
        .collect();
    let mut keys: BTreeSet<String> = hist.keys().cloned().collect();
    for f in all.iter().filter(|f| f.kind == FactKind::Sale) {
        if let Some(k) = &f.buyer_key {
            keys.insert(k.to_string());
        }
    }
    let mut big = BTreeSet::new();
    let mut spend: BTreeMap<&str, BTreeMap<String, i64>> = BTreeMap::new();
    for f in &sales {
        if let Some(k) = &f.buyer_key {
            *spend
                .entry(f.currency.code())
                .or_default()
                .entry(k.to_string())
                .or_default() += f.amount as i64;
        }
    }
    for by in spend.values() {
        let mut v: Vec<(&String, &i64)> = by.iter().filter(|(_, s)| **s > 0).collect();
        v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let n = v.len().div_ceil(10);
        big.extend(v.iter().take(n).map(|(k, _)| (*k).clone()));
    }
    let mut kept = 0;
    let mut lapsed = 0;
    let mut new = 0;
    let mut loyal = 0;
    for k in &keys {
        let mine: Vec<&Fact> = all
            .iter()
            .copied()
            .filter(|f| {
                f.kind == FactKind::Sale && f.buyer_key.as_ref().map(|b| b.as_str()) == Some(k)
            })
            .collect();
        let h = hist.get(k);
        let first = mine
            .iter()
            .map(|f| f.at.millis())
            .chain(h.map(|h| h.first_sale.millis()))
            .min()
            .unwrap();
        let last = mine
            .iter()
            .map(|f| f.at.millis())
            .chain(h.map(|h| h.last_sale.millis()))
            .max()
            .unwrap();
        let days: BTreeSet<i64> = mine
            .iter()
            .filter(|f| f.at.millis() >= start)
            .map(|f| (f.at.millis() - start) / DAY)
            .collect();
        let district = match (latest(mine.iter().copied()), h) {
            (Some(f), Some(h)) if f.at.millis() > h.last_sale.millis() => f.district.clone(),
            (_, Some(h)) => h.last_district.clone(),
            (Some(f), None) => f.district.clone(),
            (None, None) => unreachable!(),
        };
        let is_new = first >= start;
        let is_lapsed = first < cutoff && last < cutoff;
        let tagged = is_new || days.len() >= 3 || big.contains(k) || is_lapsed;
        if tagged || !days.is_empty() {
            kept += 1;
            buyers.insert(k.clone(), (first, last, district));
        }
        new += u64::from(is_new);
        lapsed += u64::from(is_lapsed);
        loyal += u64::from(days.len() >= 8);
    }
    assert_eq!(r.tags.buyers, kept);
    assert_eq!(
        (r.tags.counts.new, r.tags.counts.loyal, r.tags.counts.lapsed),
        (new, loyal, lapsed)
    );
    assert_eq!(r.tags.counts.big_spender, big.len() as u64);
    for d in &r.tags.districts {
        let n = buyers.values().filter(|b| b.2 == d.district).count();
        assert_eq!(d.buyers, n as u64, "{}", d.district);
    }
    // The campaign: the target districts' tagged buyers, once each.
    let rows = r.campaign_csv().lines().count() - 1;
    let mut targets: Vec<&str> = r.targets.iter().map(|t| t.district.as_str()).collect();
    targets.dedup();
    let expected: u64 = r
        .tags
        .districts
        .iter()
        .filter(|d| targets.contains(&d.district.as_str()))
        .map(|d| d.buyers)
        .sum();
    assert!(rows as u64 <= expected && rows > 0);
}
