//! Deterministic made-up sales for the benchmark, the browser check and demos: machines in districts
//! selling a catalogue through both flows, with refunds, failed vends, refused payments and
//! anomalies, at busier hours on busier days. A simple LCG drives it, so the same shape gives the
//! same facts everywhere.

use vendpay_domain::facts::{BuyerHistory, BuyerKey, Fact, FactKind, Flow};
use vendpay_domain::{Currency, DeviceId, IdError, SessionId, Sku, Slot, Timestamp};

use crate::period::Period;

const DAY_MS: i64 = 86_400_000;

/// Twenty districts; one apostrophe keeps escaping honest.
const DISTRICTS: [&str; 20] = [
    "Huangpu",
    "Xuhui",
    "Changning",
    "Jing'an",
    "Putuo",
    "Hongkou",
    "Yangpu",
    "Minhang",
    "Baoshan",
    "Jiading",
    "Pudong",
    "Jinshan",
    "Songjiang",
    "Qingpu",
    "Fengxian",
    "Chongming",
    "Lujiazui",
    "Zhangjiang",
    "Hongqiao",
    "Wujiaochang",
];

const PRODUCTS: [&str; 20] = [
    "Cola",
    "Green tea",
    "Oolong tea",
    "Mineral water",
    "Orange juice",
    "Iced coffee",
    "Soy milk",
    "Sparkling water",
    "Lemon tea",
    "Energy drink",
    "Salt & Vinegar <crisps>",
    "Chocolate bar",
    "Peanuts",
    "Instant noodles",
    "Rice crackers",
    "Yogurt",
    "Sandwich",
    "Gum",
    "Sponge cake",
    "乌龙茶 (Oolong)",
];

/// Relative traffic per hour of day: breakfast, lunch and the evening commute.
const HOUR_WEIGHTS: [u32; 24] = [
    2, 1, 1, 1, 1, 2, 4, 9, 12, 8, 6, 8, 12, 10, 6, 6, 8, 11, 13, 10, 8, 6, 4, 3,
];

/// The size of a synthetic data set.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub machines: u32,
    pub districts: u32,
    pub skus: u32,
    /// Sessions (payments); about 1.2 sales each.
    pub sessions: u64,
    /// Distinct buyers in the pool.
    pub buyers: u32,
    /// The share of sessions (percent) that fall in the previous period instead.
    pub previous_percent: u64,
    pub seed: u64,
}

impl Shape {
    /// A year of 200 machines: about 1 M sales and 2.5 M facts.
    pub const YEAR: Shape = Shape {
        machines: 200,
        districts: 20,
        skus: 40,
        sessions: 950_000,
        buyers: 60_000,
        previous_percent: 5,
        seed: 42,
    };

    /// About 10 000 facts.
    pub const SMALL: Shape = Shape {
        machines: 40,
        districts: 12,
        skus: 24,
        sessions: 3_500,
        buyers: 900,
        previous_percent: 45,
        seed: 7,
    };
}

struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    /// Uniform in `0..n` (`n` > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True with probability `percent` / 100.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn buyer_key(n: u64) -> Option<BuyerKey> {
    // A fixed odd multiplier spreads small numbers over 16 hex digits.
    BuyerKey::parse(&format!("{:016x}", n.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
}

struct Machine {
    device: DeviceId,
    district: &'static str,
    location: Option<String>,
    currency: Currency,
    slots: Vec<(Slot, Option<Sku>, Option<String>, u64)>,
}

/// Facts of `period` and its previous period (`previous_percent` of the sessions), and the history
/// of the buyers who bought before the previous period.
pub fn generate(period: &Period, shape: Shape) -> Result<(Vec<Fact>, Vec<BuyerHistory>), IdError> {
    let mut rng = Lcg(shape.seed ^ 0x5eed);
    let district_count = (shape.districts as usize).clamp(1, DISTRICTS.len());
    let mut machines = Vec::new();
    for m in 0..shape.machines {
        let district = DISTRICTS[m as usize % district_count];
        // The last few machines take dollars: a second currency in every section.
        let currency = if shape.machines >= 20 && m >= shape.machines - shape.machines / 40 {
            Currency::Usd
        } else {
            Currency::Cny
        };
        let mut slots = Vec::new();
        for s in 0..10u32 {
            let slot = Slot::parse(format!("{}{}", ['A', 'B'][(s / 5) as usize], s % 5 + 1))?;
            let k = (m * 7 + s * 3) % shape.skus.max(1);
            // Slot B5 is outside the planogram on every tenth machine: sold as a slot, no sku.
            let (sku, product) = if s == 9 && m % 10 == 0 {
                (None, None)
            } else {
                let name = PRODUCTS[k as usize % PRODUCTS.len()];
                let product = if k as usize >= PRODUCTS.len() {
                    format!("{name} (large)")
                } else {
                    name.to_owned()
                };
                (Some(Sku::parse(format!("sku-{k:02}"))?), Some(product))
            };
            let price = match currency {
                Currency::Usd => 100 + u64::from(k % 7) * 25,
                _ => 300 + u64::from(k % 9) * 50,
            };
            slots.push((slot, sku, product, price));
        }
        machines.push(Machine {
            device: DeviceId::parse(format!("vm-{m:03}"))?,
            district,
            location: (m % 3 != 0).then(|| format!("Station exit {}", m % 7 + 1)),
            currency,
            slots,
        });
    }

    let start = period.start().millis();
    let previous_start = period.previous_start().millis();
    let days = i64::from(period.days());
    let hour_total: u32 = HOUR_WEIGHTS.iter().sum();
    let mut facts = Vec::with_capacity(shape.sessions as usize * 3);
    let mut seq = 0u64;
    for n in 0..shape.sessions {
        let m = &machines[rng.below(u64::from(shape.machines)) as usize];
        // Busier machines: the first districts sell more (a ranking worth reading).
        let day_base = if rng.chance(shape.previous_percent) {
            previous_start
        } else {
            start
        };
        let mut day = rng.below(days as u64) as i64;
        // Weekends are a little busier: redraw a weekday once in five.
        let weekday =
            ((day_base + period.offset_secs() * 1000).div_euclid(DAY_MS) + day + 3).rem_euclid(7);
        if weekday < 5 && rng.chance(20) {
            day = rng.below(days as u64) as i64;
        }
        let mut pick = rng.below(u64::from(hour_total)) as u32;
        let mut hour = 0;
        for (h, w) in HOUR_WEIGHTS.iter().enumerate() {
            if pick < *w {
                hour = h as i64;
                break;
            }
            pick -= w;
        }
        let at0 = day_base + day * DAY_MS + hour * 3_600_000 + rng.below(3_600_000 - 60_000) as i64;
        let session = SessionId::parse(format!("{}:{n}", m.device))?;
        let flow = match rng.below(100) {
            0..=79 => Flow::PayFirst,
            80..=95 => Flow::PurchaseFirst,
            _ => Flow::Refused,
        };
        let buyer = if rng.chance(85) {
            // Squaring a uniform draw favours low numbers: some buyers come back often.
            let u = rng.below(1 << 16);
            buyer_key((u * u * u64::from(shape.buyers)) >> 32)
        } else {
            None
        };
        let base = Fact {
            id: String::new(),
            kind: FactKind::Payment,
            at: Timestamp::from_millis(at0),
            device: m.device.clone(),
            district: m.district.to_owned(),
            location: m.location.clone(),
            session: session.clone(),
            flow,
            buyer_key: buyer,
            currency: m.currency,
            amount: 0,
            trade_no: None,
            request_id: None,
            refund_id: None,
            slot: None,
            sku: None,
            product: None,
            stock_after: None,
            reason: None,
            status: None,
        };
        let at = |ms: i64| Timestamp::from_millis(at0 + ms);
        let mut refund = |facts: &mut Vec<Fact>, amount: u64, reason: String, ms: i64| {
            seq += 1;
            // One refund in fifty fails at Alipay.
            let last = if seq.is_multiple_of(50) {
                "failed"
            } else {
                "succeeded"
            };
            for (status, later) in [("issued", 0), (last, 2_000)] {
                facts.push(Fact {
                    id: format!("refund:R{seq}:{status}"),
                    kind: FactKind::Refund,
                    at: at(ms + later),
                    amount,
                    reason: Some(reason.clone()),
                    status: Some(status.to_owned()),
                    ..base.clone()
                });
            }
        };
        let pay = |facts: &mut Vec<Fact>, amount: u64| {
            facts.push(Fact {
                id: format!("payment:T{n}"),
                kind: FactKind::Payment,
                amount,
                ..base.clone()
            });
        };
        let (slot, sku, product, price) = &m.slots[rng.below(10) as usize];
        let sale = |kind: FactKind, r: u32, ms: i64, stock: u64| Fact {
            id: format!("{}:{session}:q{r}", kind.as_str()),
            kind,
            at: at(ms),
            amount: *price,
            slot: Some(slot.clone()),
            sku: sku.clone(),
            product: product.clone(),
            stock_after: (kind == FactKind::Sale && sku.is_some()).then_some(stock as u32),
            ..base.clone()
        };
        match flow {
            Flow::Refused => {
                pay(&mut facts, *price);
                let why = if rng.chance(70) {
                    "device_offline"
                } else {
                    "currency"
                };
                refund(&mut facts, *price, format!("refused:{why}"), 1_000);
            }
            Flow::PurchaseFirst => {
                pay(&mut facts, *price);
                if rng.chance(3) {
                    facts.push(sale(FactKind::VendFailed, 1, 5_000, 0));
                    refund(&mut facts, *price, "failed_delivery".to_owned(), 6_000);
                } else {
                    let stock = if rng.chance(6) { 0 } else { 1 + rng.below(9) };
                    facts.push(sale(FactKind::Sale, 1, 5_000, stock));
                }
            }
            Flow::PayFirst => {
                let items = if rng.chance(22) { 2 } else { 1 };
                let spent = price * items;
                let paid = if rng.chance(70) {
                    spent
                } else {
                    spent + 100 * (1 + rng.below(5))
                };
                pay(&mut facts, paid);
                for r in 0..items as u32 {
                    let stock = if rng.chance(6) { 0 } else { 1 + rng.below(9) };
                    facts.push(sale(
                        FactKind::Sale,
                        r,
                        20_000 + i64::from(r) * 15_000,
                        stock,
                    ));
                }
                if paid > spent {
                    refund(&mut facts, paid - spent, "remainder".to_owned(), 300_000);
                }
                if rng.chance(1) {
                    let kind = if rng.chance(70) {
                        "unconfirmed_vend"
                    } else {
                        "late_vend_report"
                    };
                    facts.push(Fact {
                        id: format!("anomaly:{session}:{kind}:q9"),
                        kind: FactKind::Anomaly,
                        at: at(60_000),
                        reason: Some(kind.to_owned()),
                        ..base.clone()
                    });
                }
            }
        }
    }

    // Half the pool bought before the previous period.
    let mut history = Vec::new();
    for b in (0..u64::from(shape.buyers)).step_by(2) {
        let Some(buyer_key) = buyer_key(b) else {
            continue;
        };
        let last = previous_start - 1 - rng.below(200) as i64 * DAY_MS;
        let first = last - rng.below(400) as i64 * DAY_MS;
        history.push(BuyerHistory {
            buyer_key,
            first_sale: Timestamp::from_millis(first),
            last_sale: Timestamp::from_millis(last),
            last_district: DISTRICTS[b as usize % district_count].to_owned(),
        });
    }
    Ok((facts, history))
}
