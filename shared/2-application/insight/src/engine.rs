//! The report computed from facts (`docs/sales.md`, “The report”).
//!
//! One pass over the facts folds each into aggregates keyed by small interned indices (devices,
//! districts, items, buyers) so a year of millions of facts allocates no String per fact; the
//! sections' rules — floors, ranks, ties — are applied afterwards to the few thousand aggregates.
//! Ties on "latest" compare the fact id only when the instants are equal.
//!
//! Millions of distinct ids and sessions would make hash tables the bottleneck (a cache miss per
//! fact), so both are counted by sorting `(hash, fact)` pairs instead and comparing the strings
//! only where hashes meet: exact, and sequential in memory. Repeated ids are found on a second
//! thread while the fold runs; only when there are some (rare) is the fold run again without them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use vendpay_domain::facts::{BuyerHistory, Fact, FactKind, Flow};
use vendpay_domain::{Currency, Timestamp};

use crate::period::Period;
use crate::report::{
    Amount, CampaignRow, DailyRow, DistrictRow, Exceptions, FlowRow, Flows, HourCell, Hours,
    ItemRow, MachineRow, PreviousPeriod, SalesReport, Tag, TagCounts, TagDistrict, Tags, Target,
    TopItem,
};

const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;
/// `lapsed` looks at the last 14 days of the period.
const LAPSE_MS: i64 = 14 * DAY_MS;
/// Marks an item key as a slot (a sale outside the planogram) rather than a sku.
const SLOT_ITEM: u32 = 1 << 31;
const NONE: u32 = u32::MAX;

/// The Firefox/rustc multiply-rotate hash: the keys are our own small integers and short strings
/// (nothing an attacker picks to collide), and SipHash would be a third of the pass.
#[derive(Default, Clone, Copy)]
struct Fx(u64);

const FX_K: u64 = 0xf135_7aea_2e62_a9c5;

impl Fx {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0 ^ word).wrapping_mul(FX_K);
    }
}

impl Hasher for Fx {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        // The multiply leaves the low bits weak and hashbrown indexes with them (and tags with the
        // top 7 bits): murmur3's finaliser spreads every input bit over both.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<Fx>>;
type FxSet<K> = HashSet<K, BuildHasherDefault<Fx>>;

/// Strings borrowed from the facts, numbered in order of first sight.
#[derive(Default)]
struct Interner<'a> {
    ids: FxMap<&'a str, u32>,
    names: Vec<&'a str>,
}

impl<'a> Interner<'a> {
    #[inline]
    fn get(&mut self, s: &'a str) -> u32 {
        if let Some(&i) = self.ids.get(s) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(s);
        self.ids.insert(s, i);
        i
    }

    fn name(&self, i: u32) -> &'a str {
        self.names.get(i as usize).copied().unwrap_or("")
    }
}

/// Index of a currency in `Currency::ALL` (declaration order, which is also code order).
fn cur_index(c: Currency) -> usize {
    c as usize
}

/// `(at, fact index)` of the latest fact seen so far; `at == i64::MIN` when none.
#[derive(Clone, Copy)]
struct Latest {
    at: i64,
    idx: u32,
}

impl Latest {
    const NONE: Latest = Latest {
        at: i64::MIN,
        idx: NONE,
    };

    /// Keeps `(at, idx)` if it is later, ties going to the greatest fact id.
    #[inline]
    fn offer(&mut self, facts: &[Fact], at: i64, idx: u32) {
        let later = at > self.at
            || (at == self.at
                && self.idx != NONE
                && facts[idx as usize].id > facts[self.idx as usize].id);
        if later || self.idx == NONE {
            *self = Latest { at, idx };
        }
    }
}

struct MachineAgg {
    device: u32,
    currency: Currency,
    sales: u64,
    revenue: i64,
    gross: i64,
    refunds: i64,
    /// The districts it had facts in (almost always one).
    districts: Vec<u32>,
}

#[derive(Default)]
struct DistrictAgg {
    in_period: bool,
    net: i64,
    previous_net: i64,
}

struct ItemAgg {
    item: u32,
    currency: Currency,
    units: u64,
    revenue: i64,
    latest: Latest,
    sold_out_ms: i64,
}

#[derive(Default)]
struct FlowAgg {
    payments: u64,
    paid: i64,
    spent: i64,
    refunded: i64,
}

#[derive(Clone, Copy, Default)]
struct DayAgg {
    sales: u64,
    revenue: i64,
    net: i64,
}

/// A sale of a slot in the period, for `hours_sold_out`.
struct SlotSale {
    at: i64,
    idx: u32,
    /// The item row it sold out, or `NONE` when the slot still had stock.
    sold_out_item: u32,
}

/// The sales of one (device, slot) in the period.
#[derive(Default)]
struct SlotRun {
    sales: Vec<SlotSale>,
    sold_out: bool,
}

/// A session seen in a group (a machine row's sales, a flow row's payments), for distinct counts.
struct SessionRef {
    group: u32,
    hash: u64,
    idx: u32,
}

struct BuyerAgg {
    first: i64,
    latest: Latest,
    in_period: bool,
    history: Option<(i64, i64, u32)>,
}

impl BuyerAgg {
    const EMPTY: BuyerAgg = BuyerAgg {
        first: i64::MAX,
        latest: Latest::NONE,
        in_period: false,
        history: None,
    };
}

fn minor(amount: u64) -> i64 {
    i64::try_from(amount).unwrap_or(i64::MAX)
}

/// `num / den` rounded half away from zero to `scale` (100 → 2 decimals), for non-negative `num`.
fn ratio(num: i64, den: i64, scale: i64) -> f64 {
    if den <= 0 || num <= 0 {
        return 0.0;
    }
    let (num, den, scale) = (i128::from(num), i128::from(den), i128::from(scale));
    let units = (2 * num * scale + den) / (2 * den);
    units as f64 / scale as f64
}

fn flow_order(flow: Flow) -> u8 {
    match flow {
        Flow::PayFirst => 0,
        Flow::PurchaseFirst => 1,
        Flow::Refused => 2,
    }
}

fn hash_str(s: &str) -> u64 {
    let mut h = Fx::default();
    h.write(s.as_bytes());
    h.finish()
}

/// Distinct sessions per group. Equal hashes are rare, so comparing every pair within a run of them
/// costs nothing and keeps the count exact.
fn distinct_sessions(facts: &[Fact], mut refs: Vec<SessionRef>, groups: usize) -> Vec<u64> {
    refs.sort_unstable_by_key(|r| (r.group, r.hash));
    let mut counts = vec![0u64; groups];
    let session = |r: &SessionRef| facts[r.idx as usize].session.as_str();
    for run in refs.chunk_by(|a, b| a.group == b.group && a.hash == b.hash) {
        let distinct = run
            .iter()
            .enumerate()
            .filter(|(k, r)| !run[..*k].iter().any(|e| session(e) == session(r)))
            .count();
        if let Some(c) = run.first().and_then(|r| counts.get_mut(r.group as usize)) {
            *c += distinct as u64;
        }
    }
    counts
}

/// Indices of facts whose id an earlier fact (lower index) already has, ascending. The `(hash,
/// index)` pairs are bucketed by their hash's top bits in one counting pass, then each bucket (a
/// few dozen pairs) is sorted in cache: equal ids end up side by side.
fn repeated_ids(facts: &[Fact]) -> Vec<u32> {
    let hashes: Vec<u64> = facts.iter().map(|f| hash_str(&f.id)).collect();
    let bits = (usize::BITS - (facts.len() / 32).leading_zeros()).clamp(1, 20);
    let shift = 64 - bits;
    let mut starts = vec![0usize; (1 << bits) + 1];
    for h in &hashes {
        starts[(h >> shift) as usize + 1] += 1;
    }
    for k in 1..starts.len() {
        starts[k] += starts[k - 1];
    }
    let mut next = starts.clone();
    let mut pairs = vec![(0u64, 0u32); hashes.len()];
    for (i, h) in hashes.iter().enumerate() {
        let slot = &mut next[(h >> shift) as usize];
        pairs[*slot] = (*h, i as u32);
        *slot += 1;
    }
    let mut repeated = Vec::new();
    for bucket in starts.windows(2) {
        let bucket = &mut pairs[bucket[0]..bucket[1]];
        bucket.sort_unstable();
        for run in bucket.chunk_by(|a, b| a.0 == b.0) {
            for (k, (_, i)) in run.iter().enumerate().skip(1) {
                let id = &facts[*i as usize].id;
                if run[..k].iter().any(|(_, e)| facts[*e as usize].id == *id) {
                    repeated.push(*i);
                }
            }
        }
    }
    repeated.sort_unstable();
    repeated
}

fn pair(group: usize, member: u32) -> u64 {
    ((group as u64) << 32) | u64::from(member)
}

/// Counts, for each group, the distinct second halves of `(group, member)` pairs.
fn distinct_per_group(mut pairs: Vec<u64>, groups: usize) -> Vec<u64> {
    pairs.sort_unstable();
    pairs.dedup();
    let mut counts = vec![0u64; groups];
    for p in pairs {
        if let Some(c) = counts.get_mut((p >> 32) as usize) {
            *c += 1;
        }
    }
    counts
}

/// Everything one pass over the facts learns.
struct Fold<'a> {
    devices: Interner<'a>,
    district_names: Interner<'a>,
    skus: Interner<'a>,
    slots: Interner<'a>,
    buyer_keys: Interner<'a>,
    device_latest: Vec<Latest>,
    machines: Vec<MachineAgg>,
    baskets: Vec<SessionRef>,
    district_of: FxMap<(u32, Currency), DistrictAgg>,
    item_of: FxMap<(u32, Currency), usize>,
    items: Vec<ItemAgg>,
    item_slots: FxSet<(u32, u32, u32)>,
    slot_runs: Vec<SlotRun>,
    district_items: FxMap<(u32, Currency, u32), u64>,
    hours: [u64; 168],
    daily: Vec<DayAgg>,
    currencies_seen: [bool; Currency::ALL.len()],
    flows: FxMap<(Flow, Currency), FlowAgg>,
    flow_index: FxMap<(Flow, Currency), usize>,
    flow_sessions: Vec<SessionRef>,
    exceptions_refused: BTreeMap<&'a str, u64>,
    exceptions_anomalies: BTreeMap<&'a str, u64>,
    failed_vends: u64,
    unconfirmed_holds: u64,
    refunds_failed: u64,
    buyers: Vec<BuyerAgg>,
    buyer_days: Vec<u64>,
    spend: FxMap<(u32, Currency), i64>,
}

/// The report of `period`. `facts`: every fact with `previous_start <= at < end`, in any order, ids
/// possibly repeated (each id counts once; earlier sales are used only for the buyers' first and
/// latest sale). `history`: buyers with a sale before `period.start()`.
/// Folds the facts (but those at `skip`, ascending) into aggregates.
fn fold<'a>(period: &Period, facts: &'a [Fact], skip: &[u32]) -> Fold<'a> {
    let start = period.start().millis();
    let end = period.end().millis();
    let previous_start = period.previous_start().millis();
    let offset = period.offset_secs();
    let first_weekday = ((start.div_euclid(1000) + offset).div_euclid(86_400) + 3).rem_euclid(7);

    let mut devices = Interner::default();
    let mut district_names = Interner::default();
    let mut skus = Interner::default();
    let mut slots = Interner::default();
    let mut buyer_keys = Interner::default();

    let mut device_latest: Vec<Latest> = Vec::new();
    let mut machine_of: FxMap<(u32, Currency), usize> = FxMap::default();
    let mut machines: Vec<MachineAgg> = Vec::new();
    let mut baskets: Vec<SessionRef> = Vec::new();

    let mut district_of: FxMap<(u32, Currency), DistrictAgg> = FxMap::default();

    let mut item_of: FxMap<(u32, Currency), usize> = FxMap::default();
    let mut items: Vec<ItemAgg> = Vec::new();
    let mut item_slots: FxSet<(u32, u32, u32)> = FxSet::default();
    let mut slot_of: FxMap<(u32, u32), usize> = FxMap::default();
    let mut slot_runs: Vec<SlotRun> = Vec::new();
    let mut district_items: FxMap<(u32, Currency, u32), u64> = FxMap::default();

    let mut hours = [0u64; 168];
    let mut daily = vec![DayAgg::default(); period.days() as usize * Currency::ALL.len()];
    let mut currencies_seen = [false; Currency::ALL.len()];

    let mut flows: FxMap<(Flow, Currency), FlowAgg> = FxMap::default();
    let mut flow_index: FxMap<(Flow, Currency), usize> = FxMap::default();
    let mut flow_sessions: Vec<SessionRef> = Vec::new();
    let mut exceptions_refused: BTreeMap<&str, u64> = BTreeMap::new();
    let mut exceptions_anomalies: BTreeMap<&str, u64> = BTreeMap::new();
    let mut failed_vends = 0u64;
    let mut unconfirmed_holds = 0u64;
    let mut refunds_failed = 0u64;

    let mut buyers: Vec<BuyerAgg> = Vec::new();
    let mut buyer_days: Vec<u64> = Vec::new();
    let mut spend: FxMap<(u32, Currency), i64> = FxMap::default();

    let mut skip = skip.iter().peekable();
    for (i, f) in facts.iter().enumerate() {
        let idx = i as u32;
        if skip.next_if(|s| **s == idx).is_some() {
            continue;
        }
        let at = f.at.millis();
        if at >= end {
            continue;
        }
        let amount = minor(f.amount);
        let issued = f.kind == FactKind::Refund && f.status.as_deref() == Some("issued");
        if at < start {
            if f.kind == FactKind::Sale {
                if let Some(key) = &f.buyer_key {
                    let b = buyer_keys.get(key.as_str()) as usize;
                    if b == buyers.len() {
                        buyers.push(BuyerAgg::EMPTY);
                    }
                    let agg = &mut buyers[b];
                    agg.first = agg.first.min(at);
                    agg.latest.offer(facts, at, idx);
                }
            } else if at >= previous_start && (f.kind == FactKind::Payment || issued) {
                let d = district_names.get(&f.district);
                let agg = district_of.entry((d, f.currency)).or_default();
                agg.previous_net += if issued { -amount } else { amount };
            }
            continue;
        }

        // In the period.
        let device = devices.get(f.device.as_str());
        if device as usize == device_latest.len() {
            device_latest.push(Latest::NONE);
        }
        device_latest[device as usize].offer(facts, at, idx);
        let district = district_names.get(&f.district);
        let cur = f.currency;
        let rel = at - start;
        let day = rel / DAY_MS;
        let day_agg = &mut daily[day as usize * Currency::ALL.len() + cur_index(cur)];
        currencies_seen[cur_index(cur)] = true;

        let m = *machine_of.entry((device, cur)).or_insert_with(|| {
            machines.push(MachineAgg {
                device,
                currency: cur,
                sales: 0,
                revenue: 0,
                gross: 0,
                refunds: 0,
                districts: Vec::new(),
            });
            machines.len() - 1
        });
        let machine = &mut machines[m];
        let d_agg = district_of.entry((district, cur)).or_default();
        d_agg.in_period = true;
        if !machine.districts.contains(&district) {
            machine.districts.push(district);
        }

        match f.kind {
            FactKind::Payment => {
                machine.gross += amount;
                d_agg.net += amount;
                day_agg.net += amount;
                let fl = flows.entry((f.flow, cur)).or_default();
                fl.payments += 1;
                fl.paid += amount;
                let next = flow_index.len();
                let g = *flow_index.entry((f.flow, cur)).or_insert(next);
                flow_sessions.push(SessionRef {
                    group: g as u32,
                    hash: hash_str(f.session.as_str()),
                    idx,
                });
            }
            FactKind::Refund => {
                if issued {
                    machine.refunds += amount;
                    d_agg.net -= amount;
                    day_agg.net -= amount;
                    flows.entry((f.flow, cur)).or_default().refunded += amount;
                    if let Some(why) = f.reason.as_deref().and_then(|r| r.strip_prefix("refused:"))
                    {
                        *exceptions_refused.entry(why).or_default() += 1;
                    }
                } else if f.status.as_deref() == Some("failed") {
                    refunds_failed += 1;
                }
            }
            FactKind::VendFailed => failed_vends += 1,
            FactKind::Anomaly => {
                let kind = f.reason.as_deref().unwrap_or("");
                if kind == "unconfirmed_vend" {
                    unconfirmed_holds += 1;
                }
                *exceptions_anomalies.entry(kind).or_default() += 1;
            }
            FactKind::Sale => {
                machine.sales += 1;
                machine.revenue += amount;
                day_agg.sales += 1;
                day_agg.revenue += amount;
                baskets.push(SessionRef {
                    group: m as u32,
                    hash: hash_str(f.session.as_str()),
                    idx,
                });
                flows.entry((f.flow, cur)).or_default().spent += amount;
                let hour = (rel % DAY_MS) / HOUR_MS;
                let weekday = (first_weekday + day) % 7;
                hours[(weekday * 24 + hour) as usize] += 1;

                let slot = slots.get(f.slot.as_ref().map_or("", |s| s.as_str()));
                let item = match &f.sku {
                    Some(sku) => skus.get(sku.as_str()),
                    None => slot | SLOT_ITEM,
                };
                let it = *item_of.entry((item, cur)).or_insert_with(|| {
                    items.push(ItemAgg {
                        item,
                        currency: cur,
                        units: 0,
                        revenue: 0,
                        latest: Latest::NONE,
                        sold_out_ms: 0,
                    });
                    items.len() - 1
                });
                let item_agg = &mut items[it];
                item_agg.units += 1;
                item_agg.revenue += amount;
                item_agg.latest.offer(facts, at, idx);
                item_slots.insert((it as u32, device, slot));
                *district_items.entry((district, cur, item)).or_default() += 1;
                let sold_out = f.stock_after == Some(0);
                let run = *slot_of.entry((device, slot)).or_insert_with(|| {
                    slot_runs.push(SlotRun::default());
                    slot_runs.len() - 1
                });
                let run = &mut slot_runs[run];
                run.sold_out |= sold_out;
                run.sales.push(SlotSale {
                    at,
                    idx,
                    sold_out_item: if sold_out { it as u32 } else { NONE },
                });

                if let Some(key) = &f.buyer_key {
                    let b = buyer_keys.get(key.as_str());
                    if b as usize == buyers.len() {
                        buyers.push(BuyerAgg::EMPTY);
                    }
                    let agg = &mut buyers[b as usize];
                    agg.first = agg.first.min(at);
                    agg.latest.offer(facts, at, idx);
                    agg.in_period = true;
                    buyer_days.push(pair(b as usize, day as u32));
                    *spend.entry((b, cur)).or_default() += amount;
                }
            }
        }
    }
    Fold {
        devices,
        district_names,
        skus,
        slots,
        buyer_keys,
        device_latest,
        machines,
        baskets,
        district_of,
        item_of,
        items,
        item_slots,
        slot_runs,
        district_items,
        hours,
        daily,
        currencies_seen,
        flows,
        flow_index,
        flow_sessions,
        exceptions_refused,
        exceptions_anomalies,
        failed_vends,
        unconfirmed_holds,
        refunds_failed,
        buyers,
        buyer_days,
        spend,
    }
}

pub fn build(period: &Period, facts: &[Fact], history: &[BuyerHistory]) -> SalesReport {
    let start = period.start().millis();
    let end = period.end().millis();
    let days = i64::from(period.days());

    let (repeated, first) = std::thread::scope(|s| {
        let finder = s.spawn(|| repeated_ids(facts));
        let first = fold(period, facts, &[]);
        (finder.join().unwrap_or_else(|_| repeated_ids(facts)), first)
    });
    let folded = if repeated.is_empty() {
        first
    } else {
        drop(first);
        fold(period, facts, &repeated)
    };
    let Fold {
        devices,
        mut district_names,
        skus,
        slots,
        mut buyer_keys,
        device_latest,
        machines,
        baskets,
        district_of,
        item_of,
        mut items,
        item_slots,
        slot_runs,
        district_items,
        hours,
        daily,
        currencies_seen,
        flows,
        flow_index,
        flow_sessions,
        exceptions_refused,
        exceptions_anomalies,
        failed_vends,
        unconfirmed_holds,
        refunds_failed,
        mut buyers,
        buyer_days,
        spend,
    } = folded;

    for h in history {
        let b = buyer_keys.get(h.buyer_key.as_str());
        if b as usize == buyers.len() {
            buyers.push(BuyerAgg::EMPTY);
        }
        let d = district_names.get(&h.last_district);
        let agg = &mut buyers[b as usize];
        let (first, last) = (h.first_sale.millis(), h.last_sale.millis());
        agg.history = Some(match agg.history {
            None => (first, last, d),
            Some((f0, l0, d0)) => {
                let (l, d) = if last > l0 { (last, d) } else { (l0, d0) };
                (f0.min(first), l, d)
            }
        });
    }

    // §1 machines.
    let basket_counts = distinct_sessions(facts, baskets, machines.len());
    let mut machine_rows: Vec<MachineRow> = machines
        .iter()
        .zip(&basket_counts)
        .map(|(m, &n)| {
            let latest = device_latest
                .get(m.device as usize)
                .and_then(|l| facts.get(l.idx as usize));
            let c = m.currency;
            let average = if n == 0 {
                0
            } else {
                m.revenue.div_euclid(n as i64)
            };
            MachineRow {
                device: devices.name(m.device).to_owned(),
                district: latest.map(|f| f.district.clone()).unwrap_or_default(),
                location: latest.and_then(|f| f.location.clone()),
                currency: c,
                sales: m.sales,
                revenue: Amount::new(m.revenue, c),
                gross: Amount::new(m.gross, c),
                refunds: Amount::new(m.refunds, c),
                net: Amount::new(m.gross - m.refunds, c),
                average_basket: Amount::new(average, c),
            }
        })
        .collect();
    machine_rows.sort_by(|a, b| {
        (a.device.as_str(), a.currency.code()).cmp(&(b.device.as_str(), b.currency.code()))
    });

    // §2 districts.
    let mut machine_counts: FxMap<(u32, Currency), u64> = FxMap::default();
    for m in &machines {
        for d in &m.districts {
            *machine_counts.entry((*d, m.currency)).or_default() += 1;
        }
    }
    let mut district_rows: Vec<(u32, DistrictRow)> = district_of
        .iter()
        .filter(|(_, agg)| agg.in_period)
        .map(|(&(d, c), agg)| {
            let n = machine_counts.get(&(d, c)).copied().unwrap_or(0) as i64;
            let per = if n == 0 {
                0
            } else {
                agg.net.div_euclid(n * days)
            };
            let row = DistrictRow {
                district: district_names.name(d).to_owned(),
                currency: c,
                machines: n as u64,
                net: Amount::new(agg.net, c),
                net_per_machine_day: Amount::new(per, c),
                previous_net: Amount::new(agg.previous_net, c),
                change: Amount::new(agg.net - agg.previous_net, c),
                rank: 0,
            };
            (d, row)
        })
        .collect();
    district_rows.sort_by(|(_, a), (_, b)| {
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
    let mut rank = 0;
    let mut last_currency = None;
    for (_, row) in &mut district_rows {
        rank = if last_currency == Some(row.currency) {
            rank + 1
        } else {
            1
        };
        last_currency = Some(row.currency);
        row.rank = rank;
    }

    // §3 items.
    for run in slot_runs.into_iter().filter(|r| r.sold_out) {
        let mut sales = run.sales;
        sales.sort_unstable_by(|a, b| {
            a.at.cmp(&b.at)
                .then_with(|| facts[a.idx as usize].id.cmp(&facts[b.idx as usize].id))
        });
        for (k, s) in sales.iter().enumerate() {
            if s.sold_out_item == NONE {
                continue;
            }
            let until = sales.get(k + 1).map_or(end, |n| n.at);
            if let Some(agg) = items.get_mut(s.sold_out_item as usize) {
                agg.sold_out_ms += until - s.at;
            }
        }
    }
    let mut slot_counts = vec![0u64; items.len()];
    for (it, _, _) in &item_slots {
        slot_counts[*it as usize] += 1;
    }
    let item_name = |item: u32| -> (Option<String>, Option<String>) {
        if item & SLOT_ITEM == 0 {
            (Some(skus.name(item).to_owned()), None)
        } else {
            (None, Some(slots.name(item & !SLOT_ITEM).to_owned()))
        }
    };
    let sort_name = |item: u32| -> (&str, bool) {
        if item & SLOT_ITEM == 0 {
            (skus.name(item), false)
        } else {
            (slots.name(item & !SLOT_ITEM), true)
        }
    };
    let product_of = |agg: &ItemAgg| -> Option<String> {
        facts
            .get(agg.latest.idx as usize)
            .and_then(|f| f.product.clone())
    };
    let mut item_order: Vec<usize> = (0..items.len()).collect();
    item_order.sort_by(|&a, &b| {
        let (a, b) = (&items[a], &items[b]);
        a.currency
            .code()
            .cmp(b.currency.code())
            .then(b.revenue.cmp(&a.revenue))
            .then(b.units.cmp(&a.units))
            .then_with(|| sort_name(a.item).cmp(&sort_name(b.item)))
    });
    let item_rows: Vec<ItemRow> = item_order
        .iter()
        .map(|&k| {
            let agg = &items[k];
            let (sku, slot) = item_name(agg.item);
            let c = agg.currency;
            let slots_n = slot_counts[k];
            ItemRow {
                sku,
                slot,
                product: product_of(agg),
                currency: c,
                units: agg.units,
                revenue: Amount::new(agg.revenue, c),
                slots: slots_n,
                units_per_slot_day: ratio(agg.units as i64, slots_n as i64 * days, 100),
                hours_sold_out: ratio(agg.sold_out_ms, HOUR_MS, 10),
            }
        })
        .collect();

    // §4 hours.
    let cells: Vec<HourCell> = (0..168)
        .map(|k| HourCell {
            weekday: (k / 24 + 1) as u8,
            hour: (k % 24) as u8,
            sales: hours[k],
        })
        .collect();
    let mut peak: Vec<HourCell> = cells.iter().copied().filter(|c| c.sales > 0).collect();
    peak.sort_by(|a, b| {
        b.sales
            .cmp(&a.sales)
            .then(a.weekday.cmp(&b.weekday))
            .then(a.hour.cmp(&b.hour))
    });
    peak.truncate(3);

    // §5 flows.
    let session_counts = distinct_sessions(facts, flow_sessions, flow_index.len());
    let mut flow_rows: Vec<FlowRow> = flow_index
        .iter()
        .filter_map(|(&(flow, c), &g)| {
            let agg = flows.get(&(flow, c))?;
            let sessions_n = session_counts.get(g).copied().unwrap_or(0);
            Some(FlowRow {
                flow,
                currency: c,
                sessions: sessions_n,
                payments: agg.payments,
                average_payment: Amount::new(agg.paid.div_euclid(agg.payments.max(1) as i64), c),
                average_spent: Amount::new(agg.spent.div_euclid(sessions_n.max(1) as i64), c),
                refund_share: ratio(agg.refunded, agg.paid, 10_000),
            })
        })
        .collect();
    flow_rows.sort_by(|a, b| {
        (flow_order(a.flow), a.currency.code()).cmp(&(flow_order(b.flow), b.currency.code()))
    });
    let exceptions = Exceptions {
        failed_vends,
        unconfirmed_holds,
        refused_payments: exceptions_refused
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        refunds_failed,
        anomalies: exceptions_anomalies
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    };

    // §6 tags.
    let day_counts = distinct_per_group(buyer_days, buyers.len());
    let mut big: FxSet<u32> = FxSet::default();
    let mut by_currency: Vec<(Currency, i64, u32)> = spend
        .iter()
        .filter(|(_, &s)| s > 0)
        .map(|(&(b, c), &s)| (c, s, b))
        .collect();
    by_currency.sort_by(|a, b| {
        a.0.code()
            .cmp(b.0.code())
            .then(b.1.cmp(&a.1))
            .then_with(|| buyer_keys.name(a.2).cmp(buyer_keys.name(b.2)))
    });
    for group in by_currency.chunk_by(|a, b| a.0 == b.0) {
        let top = group.len().div_ceil(10);
        big.extend(group.iter().take(top).map(|g| g.2));
    }
    let cutoff = end - LAPSE_MS;
    // Each kept buyer: (district, tags).
    let mut kept: Vec<(u32, u32, Vec<Tag>)> = Vec::new();
    for (b, agg) in buyers.iter().enumerate() {
        let b = b as u32;
        let (h_first, h_last, h_district) = match agg.history {
            Some((f, l, d)) => (f, l, d),
            None => (i64::MAX, i64::MIN, NONE),
        };
        let first_ever = agg.first.min(h_first);
        let last_ever = agg.latest.at.max(h_last);
        // History covers every sale before the period, so on a tie it already chose by fact id.
        let district = if h_district != NONE && (agg.latest.idx == NONE || h_last >= agg.latest.at)
        {
            h_district
        } else {
            match facts.get(agg.latest.idx as usize) {
                Some(f) => district_names.get(&f.district),
                None => NONE,
            }
        };
        let days_n = day_counts.get(b as usize).copied().unwrap_or(0);
        let mut tags = Vec::new();
        if first_ever >= start && first_ever < end {
            tags.push(Tag::New);
        }
        if days_n >= 3 {
            tags.push(Tag::Regular);
        }
        if days_n >= 8 {
            tags.push(Tag::Loyal);
        }
        if big.contains(&b) {
            tags.push(Tag::BigSpender);
        }
        if first_ever < cutoff && last_ever < cutoff {
            tags.push(Tag::Lapsed);
        }
        if !tags.is_empty() || agg.in_period {
            kept.push((b, district, tags));
        }
    }
    let mut totals = TagCounts::default();
    let mut per_district: FxMap<u32, (u64, TagCounts)> = FxMap::default();
    for (_, d, tags) in &kept {
        let entry = per_district.entry(*d).or_default();
        entry.0 += 1;
        for t in tags {
            totals.add(*t);
            entry.1.add(*t);
        }
    }
    let district_label = |d: u32| -> &str { district_names.name(d) };
    let mut tag_districts: Vec<TagDistrict> = per_district
        .iter()
        .map(|(&d, &(n, counts))| TagDistrict {
            district: district_label(d).to_owned(),
            buyers: n,
            counts,
        })
        .collect();
    tag_districts.sort_by(|a, b| a.district.cmp(&b.district));
    let tags = Tags {
        buyers: kept.len() as u64,
        counts: totals,
        districts: tag_districts,
    };

    // §7 targets.
    let mut best: Vec<&(u32, DistrictRow)> = district_rows.iter().collect();
    best.sort_by(|(_, a), (_, b)| {
        a.rank
            .cmp(&b.rank)
            .then(a.currency.code().cmp(b.currency.code()))
    });
    best.truncate(5);
    let targets: Vec<Target> = best
        .iter()
        .map(|(d, row)| {
            let (buyers_n, counts) = per_district.get(d).copied().unwrap_or_default();
            let mut top: Vec<(u32, u64)> = district_items
                .iter()
                .filter(|((dd, c, _), _)| dd == d && *c == row.currency)
                .map(|(&(_, _, item), &units)| (item, units))
                .collect();
            top.sort_by(|a, b| {
                b.1.cmp(&a.1)
                    .then_with(|| sort_name(a.0).cmp(&sort_name(b.0)))
            });
            top.truncate(3);
            let top_items = top
                .into_iter()
                .map(|(item, units)| {
                    let (sku, slot) = item_name(item);
                    let product = item_of
                        .get(&(item, row.currency))
                        .and_then(|&k| items.get(k))
                        .and_then(product_of);
                    TopItem {
                        sku,
                        slot,
                        product,
                        units,
                    }
                })
                .collect();
            Target {
                district: row.district.clone(),
                currency: row.currency,
                rank: row.rank,
                buyers: buyers_n,
                counts,
                top_items,
            }
        })
        .collect();
    let mut campaign = Vec::new();
    let mut done: Vec<u32> = Vec::new();
    for (d, _) in &best {
        if done.contains(d) {
            continue;
        }
        done.push(*d);
        let mut rows: Vec<CampaignRow> = kept
            .iter()
            .filter(|(_, bd, tags)| bd == d && !tags.is_empty())
            .map(|(b, _, tags)| CampaignRow {
                district: district_label(*d).to_owned(),
                buyer_key: buyer_keys.name(*b).to_owned(),
                tags: tags.clone(),
            })
            .collect();
        rows.sort_by(|a, b| a.buyer_key.cmp(&b.buyer_key));
        campaign.extend(rows);
    }

    // Daily.
    let mut daily_rows = Vec::new();
    for day in 0..period.days() as usize {
        let date = period.date_of(Timestamp::from_millis(start + day as i64 * DAY_MS));
        for (k, c) in Currency::ALL.iter().enumerate() {
            if !currencies_seen[k] {
                continue;
            }
            let agg = daily[day * Currency::ALL.len() + k];
            daily_rows.push(DailyRow {
                date: date.clone(),
                currency: *c,
                sales: agg.sales,
                revenue: Amount::new(agg.revenue, *c),
                net: Amount::new(agg.net, *c),
            });
        }
    }

    SalesReport {
        from: period.from_date(),
        to: period.to_date(),
        tz: period.tz(),
        days: period.days(),
        previous: PreviousPeriod {
            from: period.date_of(period.previous_start()),
            to: period.date_of(Timestamp::from_millis(start - DAY_MS)),
        },
        machines: machine_rows,
        districts: district_rows.into_iter().map(|(_, r)| r).collect(),
        items: item_rows,
        hours: Hours { cells, peak },
        flows: Flows {
            flows: flow_rows,
            exceptions,
        },
        tags,
        targets,
        daily: daily_rows,
        campaign,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currency_index_is_its_place_in_all() {
        for (k, c) in Currency::ALL.iter().enumerate() {
            assert_eq!(cur_index(*c), k, "{c}");
        }
    }

    #[test]
    fn repeated_ids_keep_the_first_copy() {
        let p = Period::parse("2026-11-01", "2026-11-30", "+08:00").unwrap();
        let (mut facts, _) =
            crate::synthetic::generate(&p, crate::synthetic::Shape::SMALL).unwrap();
        let n = facts.len() as u32;
        facts.push(facts[3].clone());
        facts.push(facts[0].clone());
        facts.push(facts[3].clone());
        assert_eq!(repeated_ids(&facts), vec![n, n + 1, n + 2]);
    }
}
