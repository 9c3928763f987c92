//! What the simulated operator's world looks like: districts, the catalogue, the fleet with its
//! planograms, the buyers, and each machine's arrivals day by day.
//!
//! Everything here is a pure function of the seed (and the fleet size and period): no ledger outcome
//! feeds back into it, so the list of buyer ids (`simulate --list-buyers`) can be produced without
//! running the ledger, and a day's plan does not depend on how the runtime interleaved the machines.
//! The numbers are the traffic model the module header of `simulate.rs` describes. One file because it
//! is one model: most of its length is the tables (districts, catalogue, hourly profiles) beside the
//! few functions that draw from them.

use std::sync::Arc;

use vendpay_domain::{BuyerId, Mode, Timestamp};

use super::rng::Rng;

/// Stream tags, so no two decisions share a random stream.
pub(crate) const TAG_MACHINE: u64 = 1;
pub(crate) const TAG_BUYERS: u64 = 2;
pub(crate) const TAG_DAY: u64 = 3;
pub(crate) const TAG_WEATHER: u64 = 4;
pub(crate) const TAG_VISIT: u64 = 5;
pub(crate) const TAG_REFUND: u64 = 6;
pub(crate) const TAG_ONE_OFF: u64 = 7;
pub(crate) const TAG_RESTOCK: u64 = 99;

/// China Standard Time: days, hours and restocks are local.
pub(crate) const LOCAL_OFFSET_SECS: i64 = 8 * 3600;
pub(crate) const DAY_MS: i64 = 86_400_000;

/// Visits per machine and day before the district's, the machine's, the weekday's and the weather's
/// factors (tuned so the fleet averages about 30 sales a machine a day).
const BASE_VISITS: f64 = 24.0;
/// Regular buyers kept per machine of a district.
const REGULARS_PER_MACHINE: usize = 60;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Office,
    Transit,
    Campus,
    Retail,
    Residential,
}

pub(crate) struct District {
    pub name: &'static str,
    pub code: &'static str,
    pub kind: Kind,
    /// Demand of one machine relative to the fleet.
    pub demand: f64,
    /// Share of the fleet standing here.
    pub share: f64,
    pub places: &'static [&'static str],
}

/// Eight districts of Shanghai, demand per machine falling off roughly as a power law from the metro
/// hubs to the suburbs.
pub(crate) const DISTRICTS: [District; 8] = [
    District {
        name: "Xujiahui Metro Hub",
        code: "xj",
        kind: Kind::Transit,
        demand: 1.9,
        share: 0.10,
        places: &[
            "Line 1 Concourse",
            "Line 9 Exit 4",
            "Line 11 Transfer Hall",
            "Grand Gateway B2",
            "Metro City L1",
        ],
    },
    District {
        name: "Hongqiao Transport Hub",
        code: "hq",
        kind: Kind::Transit,
        demand: 1.6,
        share: 0.08,
        places: &[
            "Terminal 2 Departures",
            "Railway Station Gate B",
            "T2 Arrivals Hall",
            "Line 2 Platform",
            "Coach Terminal",
        ],
    },
    District {
        name: "Pudong Lujiazui",
        code: "lj",
        kind: Kind::Office,
        demand: 1.45,
        share: 0.16,
        places: &[
            "IFC Mall L1",
            "Jinmao Tower Lobby",
            "SWFC B1 Food Court",
            "Lujiazui Metro Exit 6",
            "HSBC Building Lobby",
            "Citigroup Tower L2",
            "Super Brand Mall B2",
        ],
    },
    District {
        name: "Jing'an",
        code: "ja",
        kind: Kind::Retail,
        demand: 1.25,
        share: 0.14,
        places: &[
            "Kerry Centre B1",
            "Jing'an Temple Metro Hall",
            "Plaza 66 L3",
            "Reel Mall B1",
            "Wheelock Square Lobby",
            "Sculpture Park Gate",
        ],
    },
    District {
        name: "Yangpu University Campus",
        code: "yp",
        kind: Kind::Campus,
        demand: 1.1,
        share: 0.14,
        places: &[
            "Guanghua Tower",
            "Library Ground Floor",
            "Dormitory 12 Lobby",
            "Canteen 2",
            "Sports Centre",
            "Teaching Building 3",
        ],
    },
    District {
        name: "Zhangjiang Hi-Tech Park",
        code: "zj",
        kind: Kind::Office,
        demand: 0.85,
        share: 0.14,
        places: &[
            "Building 1 Lobby",
            "Innovation Park Canteen",
            "Zhangjiang Metro Exit 1",
            "Chip Valley Block C",
            "Biotech Centre L1",
            "Software Park Gate 2",
        ],
    },
    District {
        name: "Songjiang University Town",
        code: "sj",
        kind: Kind::Campus,
        demand: 0.6,
        share: 0.10,
        places: &[
            "Wenhui Road Metro Exit",
            "Library Plaza",
            "Dormitory 5",
            "Canteen 1",
            "Stadium Gate",
        ],
    },
    District {
        name: "Minhang Suburbs",
        code: "mh",
        kind: Kind::Residential,
        demand: 0.45,
        share: 0.14,
        places: &[
            "Xinzhuang Estate Gate",
            "Community Clinic",
            "Xinzhuang Metro Exit 2",
            "Wanda Plaza B1",
            "Primary School Gate",
            "Neighbourhood Gym",
        ],
    },
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Category {
    Water,
    Soda,
    Energy,
    Coffee,
    Tea,
    Dairy,
    Juice,
    Snack,
    Sweet,
    Noodle,
}

impl Category {
    fn is_drink(self) -> bool {
        !matches!(self, Category::Snack | Category::Sweet | Category::Noodle)
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Category::Water => "water",
            Category::Soda => "soda",
            Category::Energy => "energy",
            Category::Coffee => "coffee",
            Category::Tea => "tea",
            Category::Dairy => "dairy",
            Category::Juice => "juice",
            Category::Snack => "snack",
            Category::Sweet => "sweet",
            Category::Noodle => "noodle",
        }
    }
}

pub(crate) struct Item {
    pub sku: &'static str,
    pub name: &'static str,
    /// CNY fen.
    pub price: u64,
    pub category: Category,
}

/// The catalogue in order of national popularity (Zipf rank 1 first).
pub(crate) const CATALOGUE: [Item; 25] = [
    Item {
        sku: "NFS-WATER-550",
        name: "Nongfu Spring 550ml",
        price: 300,
        category: Category::Water,
    },
    Item {
        sku: "COKE-330",
        name: "Coca-Cola 330ml",
        price: 350,
        category: Category::Soda,
    },
    Item {
        sku: "MK-ICETEA-500",
        name: "Master Kong Iced Tea 500ml",
        price: 400,
        category: Category::Tea,
    },
    Item {
        sku: "GENKI-480",
        name: "Genki Forest Sparkling 480ml",
        price: 550,
        category: Category::Soda,
    },
    Item {
        sku: "NESCAFE-LATTE-268",
        name: "Nescafe Smoovlatte 268ml",
        price: 700,
        category: Category::Coffee,
    },
    Item {
        sku: "REDBULL-250",
        name: "Red Bull 250ml",
        price: 650,
        category: Category::Energy,
    },
    Item {
        sku: "SUNTORY-OOLONG-500",
        name: "Suntory Oolong Tea 500ml",
        price: 550,
        category: Category::Tea,
    },
    Item {
        sku: "LAYS-70",
        name: "Lay's Original 70g",
        price: 750,
        category: Category::Snack,
    },
    Item {
        sku: "SPRITE-330",
        name: "Sprite 330ml",
        price: 350,
        category: Category::Soda,
    },
    Item {
        sku: "ASSAM-MILKTEA-500",
        name: "Assam Milk Tea 500ml",
        price: 500,
        category: Category::Tea,
    },
    Item {
        sku: "SNICKERS-51",
        name: "Snickers 51g",
        price: 600,
        category: Category::Sweet,
    },
    Item {
        sku: "MK-CUPNOODLE",
        name: "Master Kong Cup Noodles",
        price: 600,
        category: Category::Noodle,
    },
    Item {
        sku: "VITA-LEMONTEA-250",
        name: "Vita Lemon Tea 250ml",
        price: 450,
        category: Category::Tea,
    },
    Item {
        sku: "OREO-97",
        name: "Oreo 97g",
        price: 800,
        category: Category::Sweet,
    },
    Item {
        sku: "MONSTER-355",
        name: "Monster Energy 355ml",
        price: 800,
        category: Category::Energy,
    },
    Item {
        sku: "YAKULT-5",
        name: "Yakult 5-pack",
        price: 1100,
        category: Category::Dairy,
    },
    Item {
        sku: "MINUTEMAID-OJ-420",
        name: "Minute Maid Orange 420ml",
        price: 500,
        category: Category::Juice,
    },
    Item {
        sku: "UCC-BLACK-185",
        name: "UCC Black Coffee 185g",
        price: 650,
        category: Category::Coffee,
    },
    Item {
        sku: "WEILONG-LATIAO-106",
        name: "Weilong Latiao 106g",
        price: 500,
        category: Category::Snack,
    },
    Item {
        sku: "KITKAT-4F",
        name: "KitKat 4 Finger",
        price: 650,
        category: Category::Sweet,
    },
    Item {
        sku: "COCONUT-245",
        name: "Coconut Palm Juice 245ml",
        price: 600,
        category: Category::Juice,
    },
    Item {
        sku: "MANKATTAN-BREAD",
        name: "Mankattan Milk Bread",
        price: 650,
        category: Category::Snack,
    },
    Item {
        sku: "MENGNIU-MILK-250",
        name: "Mengniu Pure Milk 250ml",
        price: 450,
        category: Category::Dairy,
    },
    Item {
        sku: "PRINGLES-110",
        name: "Pringles Sour Cream 110g",
        price: 1200,
        category: Category::Snack,
    },
    Item {
        sku: "EXTRA-MINT",
        name: "Extra Mint Gum",
        price: 400,
        category: Category::Sweet,
    },
];

/// How much more (or less) a district kind buys of a category than the nation does.
fn affinity(kind: Kind, c: Category) -> f64 {
    use Category as C;
    match (kind, c) {
        (Kind::Office, C::Coffee) => 2.2,
        (Kind::Office, C::Tea) => 1.3,
        (Kind::Office, C::Noodle) => 0.6,
        (Kind::Transit, C::Water) => 1.7,
        (Kind::Transit, C::Coffee | C::Soda) => 1.2,
        (Kind::Campus, C::Energy) => 1.7,
        (Kind::Campus, C::Noodle) => 2.0,
        (Kind::Campus, C::Snack | C::Sweet) => 1.4,
        (Kind::Retail, C::Soda | C::Juice | C::Sweet) => 1.3,
        (Kind::Residential, C::Dairy) => 1.8,
        (Kind::Residential, C::Noodle | C::Water) => 1.2,
        (Kind::Residential, C::Coffee | C::Energy) => 0.6,
        _ => 1.0,
    }
}

/// Coffee in the morning, energy drinks in the afternoon slump, noodles at lunch and late at night.
fn hour_affinity(c: Category, hour: usize) -> f64 {
    match (c, hour) {
        (Category::Coffee, 6..=9) => 2.5,
        (Category::Coffee, 18..=23) => 0.4,
        (Category::Energy, 14..=16) => 1.5,
        (Category::Noodle, 11..=13 | 21..=23 | 0..=2) => 1.8,
        (Category::Dairy, 6..=9) => 1.6,
        _ => 1.0,
    }
}

/// Arrivals by local hour, (weekday, weekend) per kind; relative weights.
fn hours(kind: Kind, weekend: bool) -> &'static [f64; 24] {
    const OFFICE: [f64; 24] = [
        0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.2, 1.2, 2.6, 1.8, 1.0, 1.6, 3.0, 2.0, 1.1, 1.5, 1.3, 1.2,
        1.6, 0.9, 0.5, 0.3, 0.1, 0.05,
    ];
    const OFFICE_WE: [f64; 24] = [
        0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.6, 0.5, 0.5, 0.4, 0.4,
        0.3, 0.2, 0.1, 0.05, 0.0, 0.0,
    ];
    const TRANSIT: [f64; 24] = [
        0.05, 0.0, 0.0, 0.0, 0.0, 0.2, 1.0, 2.8, 3.2, 1.6, 0.9, 1.0, 1.3, 1.0, 0.9, 1.0, 1.3, 2.4,
        2.9, 1.8, 1.1, 0.8, 0.5, 0.2,
    ];
    const TRANSIT_WE: [f64; 24] = [
        0.1, 0.0, 0.0, 0.0, 0.0, 0.1, 0.4, 0.8, 1.1, 1.3, 1.5, 1.6, 1.7, 1.6, 1.5, 1.5, 1.6, 1.7,
        1.7, 1.5, 1.2, 0.9, 0.6, 0.3,
    ];
    const CAMPUS: [f64; 24] = [
        0.3, 0.1, 0.0, 0.0, 0.0, 0.0, 0.2, 1.4, 1.8, 1.2, 1.6, 1.2, 2.2, 1.4, 1.0, 1.4, 1.8, 1.3,
        1.2, 1.0, 1.2, 1.6, 1.4, 0.7,
    ];
    const CAMPUS_WE: [f64; 24] = [
        0.4, 0.2, 0.05, 0.0, 0.0, 0.0, 0.05, 0.2, 0.5, 0.8, 1.0, 1.1, 1.3, 1.1, 1.0, 1.0, 1.1, 1.0,
        1.0, 1.0, 1.1, 1.3, 1.1, 0.6,
    ];
    const RETAIL: [f64; 24] = [
        0.05, 0.0, 0.0, 0.0, 0.0, 0.0, 0.1, 0.4, 0.8, 0.8, 1.0, 1.4, 2.2, 1.6, 1.2, 1.2, 1.3, 1.6,
        2.0, 2.2, 1.8, 1.2, 0.6, 0.2,
    ];
    const RETAIL_WE: [f64; 24] = [
        0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.1, 0.2, 0.4, 0.8, 1.3, 1.7, 2.1, 2.0, 1.9, 1.9, 2.0, 2.0,
        2.2, 2.2, 1.8, 1.2, 0.6, 0.2,
    ];
    const HOME: [f64; 24] = [
        0.05, 0.0, 0.0, 0.0, 0.0, 0.1, 0.6, 1.6, 1.2, 0.6, 0.5, 0.6, 0.8, 0.6, 0.5, 0.6, 1.0, 1.6,
        1.9, 1.8, 1.4, 0.9, 0.4, 0.1,
    ];
    const HOME_WE: [f64; 24] = [
        0.05, 0.0, 0.0, 0.0, 0.0, 0.0, 0.2, 0.5, 0.9, 1.2, 1.3, 1.3, 1.3, 1.2, 1.2, 1.3, 1.4, 1.5,
        1.6, 1.6, 1.3, 0.9, 0.4, 0.1,
    ];
    match (kind, weekend) {
        (Kind::Office, false) => &OFFICE,
        (Kind::Office, true) => &OFFICE_WE,
        (Kind::Transit, false) => &TRANSIT,
        (Kind::Transit, true) => &TRANSIT_WE,
        (Kind::Campus, false) => &CAMPUS,
        (Kind::Campus, true) => &CAMPUS_WE,
        (Kind::Retail, false) => &RETAIL,
        (Kind::Retail, true) => &RETAIL_WE,
        (Kind::Residential, false) => &HOME,
        (Kind::Residential, true) => &HOME_WE,
    }
}

/// Demand by ISO weekday (Monday first) per kind.
fn weekday_factor(kind: Kind, weekday: usize) -> f64 {
    let f: [f64; 7] = match kind {
        Kind::Office => [1.0, 1.05, 1.05, 1.0, 0.95, 0.30, 0.22],
        Kind::Transit => [1.0, 0.95, 0.95, 1.0, 1.15, 0.85, 0.85],
        Kind::Campus => [1.0, 1.0, 1.0, 0.95, 0.85, 0.6, 0.65],
        Kind::Retail => [0.85, 0.85, 0.9, 0.95, 1.1, 1.35, 1.3],
        Kind::Residential => [0.9, 0.9, 0.9, 0.9, 0.95, 1.25, 1.3],
    };
    f[weekday % 7]
}

/// Share of a district's visits made by its regular buyers.
fn regular_share(kind: Kind) -> f64 {
    match kind {
        Kind::Office => 0.7,
        Kind::Campus => 0.75,
        Kind::Residential => 0.65,
        Kind::Retail => 0.4,
        Kind::Transit => 0.3,
    }
}

/// One slot of a machine's planogram.
#[derive(Clone, Debug)]
pub(crate) struct SlotPlan {
    pub slot: String,
    /// Index into [`CATALOGUE`].
    pub item: usize,
    pub capacity: u32,
    /// The slot's own price (fen) when it differs from the catalogue's.
    pub price: Option<u64>,
}

pub(crate) struct MachineSpec {
    pub index: usize,
    pub device_id: String,
    pub name: String,
    pub district: usize,
    pub location: String,
    pub mode: Mode,
    /// This machine's demand relative to its district's.
    pub demand: f64,
    pub slots: Vec<SlotPlan>,
    /// Refilled every this many nights.
    pub restock_every: u32,
}

impl MachineSpec {
    pub(crate) fn price(&self, slot: usize) -> u64 {
        let s = &self.slots[slot];
        s.price.unwrap_or(CATALOGUE[s.item].price)
    }
}

/// A regular buyer: where they buy, how often, and when they are around.
struct Regular {
    id: BuyerId,
    /// Relative visit frequency (loyal ones much higher).
    weight: f64,
    first_day: u32,
    /// Exclusive; `u32::MAX` for buyers who never leave.
    last_day: u32,
}

struct Pool {
    members: Vec<usize>,
    /// Running sums of the members' weights.
    cumulative: Vec<f64>,
}

/// The world of one run: fleet, buyers, and the calendar.
pub(crate) struct World {
    pub seed: u64,
    pub machines: Vec<Arc<MachineSpec>>,
    regulars: Vec<Regular>,
    pools: Vec<Pool>,
    /// Local midnight of the first day.
    pub start: Timestamp,
    /// Days since 1970-01-01 of the first day (the weekday and ids come from it).
    pub start_day: i64,
    /// The multiplier of every machine's visits (`--demand`).
    demand: f64,
}

/// One arrival at a machine.
pub(crate) struct PlannedVisit {
    pub at: Timestamp,
    pub buyer: BuyerId,
    /// A purchase-first order (else pay first).
    pub order: bool,
    /// The stream of this visit's choices.
    pub rng: Rng,
}

impl World {
    /// Scales every machine's visits by `demand` (1.0: the model's own rates).
    pub(crate) fn with_demand(mut self, demand: f64) -> World {
        self.demand = demand;
        self
    }

    pub(crate) fn new(seed: u64, machines: usize, days: u32, start_day: i64) -> Option<World> {
        let start = Timestamp::from_secs(start_day.checked_mul(86_400)? - LOCAL_OFFSET_SECS)?;
        let specs: Vec<Arc<MachineSpec>> = (0..machines)
            .map(|i| Arc::new(machine(seed, i, machines)))
            .collect();
        let (regulars, pools) = buyers(seed, &specs, days);
        Some(World {
            seed,
            machines: specs,
            regulars,
            pools,
            start,
            start_day,
            demand: 1.0,
        })
    }

    /// Local midnight starting day `day` of the run.
    pub(crate) fn day_start(&self, day: u32) -> Timestamp {
        Timestamp::from_millis(self.start.millis() + i64::from(day) * DAY_MS)
    }

    /// `YYYYMMDD` of day `day`, for ids.
    pub(crate) fn date_tag(&self, day: u32) -> String {
        let (y, m, d, ..) = self.day_start(day).civil_at_offset(LOCAL_OFFSET_SECS);
        format!("{y:04}{m:02}{d:02}")
    }

    /// The arrivals at machine `m` on day `day`, in time order.
    pub(crate) fn plan(&self, m: usize, day: u32) -> Vec<PlannedVisit> {
        let spec = &self.machines[m];
        let district = &DISTRICTS[spec.district];
        let epoch_day = self.start_day + i64::from(day);
        let weekday = (epoch_day + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
        let weekend = weekday >= 5;
        let weather = {
            let mut w = Rng::keyed(&[self.seed, TAG_WEATHER, spec.district as u64, u64::from(day)]);
            0.85 + 0.3 * w.unit()
        };
        let lambda = BASE_VISITS
            * self.demand
            * district.demand
            * spec.demand
            * weekday_factor(district.kind, weekday)
            * weather;
        let mut rng = Rng::keyed(&[self.seed, TAG_DAY, m as u64, u64::from(day)]);
        let n = rng.poisson(lambda);
        let profile = hours(district.kind, weekend);
        let mut times: Vec<i64> = (0..n)
            .map(|_| {
                let hour = rng.weighted(profile) as i64;
                hour * 3_600_000 + rng.between(0, 3_599_999)
            })
            .collect();
        times.sort_unstable();
        let day_start = self.day_start(day).millis();
        times
            .into_iter()
            .enumerate()
            .map(|(v, offset)| {
                let mut visit =
                    Rng::keyed(&[self.seed, TAG_VISIT, m as u64, u64::from(day), v as u64]);
                let buyer = self.buyer_for(spec.district, day, &mut visit, m, v);
                let order = match spec.mode {
                    Mode::PayFirst => false,
                    Mode::PurchaseFirst => true,
                    Mode::Mixed => visit.chance(0.4),
                };
                PlannedVisit {
                    at: Timestamp::from_millis(day_start + offset),
                    buyer,
                    order,
                    rng: visit,
                }
            })
            .collect()
    }

    /// A regular of the district who is around that day, or a one-off buyer.
    fn buyer_for(&self, district: usize, day: u32, rng: &mut Rng, m: usize, v: usize) -> BuyerId {
        let pool = &self.pools[district];
        let total = pool.cumulative.last().copied().unwrap_or(0.0);
        if total > 0.0 && rng.chance(regular_share(DISTRICTS[district].kind)) {
            for _ in 0..4 {
                let x = rng.unit() * total;
                let i = pool.cumulative.partition_point(|c| *c <= x);
                if let Some(r) = pool.members.get(i).map(|&r| &self.regulars[r]) {
                    if (r.first_day..r.last_day).contains(&day) {
                        return r.id.clone();
                    }
                }
            }
        }
        let mut one = Rng::keyed(&[self.seed, TAG_ONE_OFF, m as u64, u64::from(day), v as u64]);
        alipay_buyer_id(&mut one)
    }

    /// Every buyer id the run uses, sorted (regulars and one-offs).
    pub(crate) fn buyer_ids(&self, days: u32) -> Vec<String> {
        let mut out: Vec<String> = self.regulars.iter().map(|r| r.id.to_string()).collect();
        for m in 0..self.machines.len() {
            for day in 0..days {
                out.extend(self.plan(m, day).into_iter().map(|v| v.buyer.to_string()));
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// `2088` and twelve digits, as Alipay numbers its users.
fn alipay_buyer_id(rng: &mut Rng) -> BuyerId {
    loop {
        // Digits only, so it always parses; the loop just keeps this total without a panic.
        let digits = rng.below(1_000_000_000_000);
        if let Ok(id) = BuyerId::parse(format!("2088{digits:012}")) {
            return id;
        }
    }
}

/// Machine `i` of `n`: its district (the fleet split by the districts' shares), place, mode, demand
/// and planogram.
fn machine(seed: u64, i: usize, n: usize) -> MachineSpec {
    let mut rng = Rng::keyed(&[seed, TAG_MACHINE, i as u64]);
    let district = district_of(i, n);
    let dist = &DISTRICTS[district];
    // The n-th machine of its district, for a readable id.
    let nth = (0..i).filter(|&j| district_of(j, n) == district).count() + 1;
    let place = dist.places[(nth - 1) % dist.places.len()];
    let location = if nth > dist.places.len() {
        format!("{place} #{}", (nth - 1) / dist.places.len() + 1)
    } else {
        place.to_owned()
    };
    let mode = match rng.unit() {
        x if x < 0.7 => Mode::Mixed,
        x if x < 0.9 => Mode::PayFirst,
        _ => Mode::PurchaseFirst,
    };
    let demand = (0.35 * rng.normal()).exp().clamp(0.4, 2.5);
    let slots = planogram(&mut rng, dist);
    let restock_every = if dist.demand * demand >= 0.8 { 1 } else { 2 };
    MachineSpec {
        index: i,
        device_id: format!("vm-{}-{nth:03}", dist.code),
        name: format!("{} {nth:03}", dist.name),
        district,
        location,
        mode,
        demand,
        slots,
        restock_every,
    }
}

fn district_of(i: usize, n: usize) -> usize {
    let position = (i as f64 + 0.5) / n.max(1) as f64;
    let mut acc = 0.0;
    for (d, dist) in DISTRICTS.iter().enumerate() {
        acc += dist.share;
        if position < acc {
            return d;
        }
    }
    DISTRICTS.len() - 1
}

/// The weight of an item for a district kind at an hour: Zipf by national rank, times the district's
/// and the hour's taste.
pub(crate) fn appeal(item: usize, kind: Kind, hour: usize) -> f64 {
    let c = CATALOGUE[item].category;
    (1.0 / (item as f64 + 1.0).powf(0.9)) * affinity(kind, c) * hour_affinity(c, hour)
}

/// 24 or 30 slots (rows A–D or A–E of six): the district's best sellers first, the top ones twice when
/// there is room, a few of the weakest left out at random.
fn planogram(rng: &mut Rng, dist: &District) -> Vec<SlotPlan> {
    let rows = if rng.chance(0.5) { 4 } else { 5 };
    let count = rows * 6;
    let mut ranked: Vec<usize> = (0..CATALOGUE.len()).collect();
    ranked.sort_by(|a, b| appeal(*b, dist.kind, 12).total_cmp(&appeal(*a, dist.kind, 12)));
    let dropped = rng.below(4) as usize;
    ranked.truncate(CATALOGUE.len() - dropped);
    let mut items: Vec<usize> = ranked.iter().copied().take(count).collect();
    let mut extra = 0;
    while items.len() < count {
        items.push(ranked[extra % ranked.len()]);
        extra += 1;
    }
    items
        .into_iter()
        .enumerate()
        .map(|(k, item)| {
            let c = CATALOGUE[item].category;
            let capacity = match c {
                Category::Noodle => 6,
                c if c.is_drink() => 10 + rng.below(3) as u32,
                _ => 8 + rng.below(3) as u32,
            };
            // Airport pricing: a yuan more for drinks at the railway and airport terminals.
            let price = (dist.code == "hq" && c.is_drink()).then(|| CATALOGUE[item].price + 100);
            let row = (b'A' + (k / 6) as u8) as char;
            SlotPlan {
                slot: format!("{row}{}", k % 6 + 1),
                item,
                capacity,
                price,
            }
        })
        .collect()
}

/// The regular buyers and each district's pool of them. A quarter join during the period, a fifth of
/// them stop coming before its end; some commute and buy in a second district.
fn buyers(seed: u64, machines: &[Arc<MachineSpec>], days: u32) -> (Vec<Regular>, Vec<Pool>) {
    let mut rng = Rng::keyed(&[seed, TAG_BUYERS]);
    let mut per_district = [0usize; DISTRICTS.len()];
    for m in machines {
        per_district[m.district] += 1;
    }
    let mut regulars = Vec::new();
    let mut pools: Vec<Pool> = (0..DISTRICTS.len())
        .map(|_| Pool {
            members: Vec::new(),
            cumulative: Vec::new(),
        })
        .collect();
    let mut seen = std::collections::HashSet::new();
    for (d, &count) in per_district.iter().enumerate() {
        for _ in 0..count * REGULARS_PER_MACHINE {
            let id = loop {
                let id = alipay_buyer_id(&mut rng);
                if seen.insert(id.clone()) {
                    break id;
                }
            };
            let weight = match rng.unit() {
                x if x < 0.15 => 8.0,
                x if x < 0.60 => 2.0,
                _ => 0.6,
            };
            let first_day = if rng.chance(0.25) {
                rng.below(u64::from(days)) as u32
            } else {
                0
            };
            let last_day = if rng.chance(0.2) {
                first_day + 1 + rng.below(u64::from(days.saturating_sub(first_day).max(1))) as u32
            } else {
                u32::MAX
            };
            let r = regulars.len();
            regulars.push(Regular {
                id,
                weight,
                first_day,
                last_day,
            });
            pools[d].members.push(r);
            if rng.chance(0.2) {
                let other = rng.below(DISTRICTS.len() as u64) as usize;
                if other != d && per_district[other] > 0 {
                    pools[other].members.push(r);
                }
            }
        }
    }
    for pool in &mut pools {
        let mut sum = 0.0;
        pool.cumulative = pool
            .members
            .iter()
            .map(|&r| {
                sum += regulars[r].weight;
                sum
            })
            .collect();
    }
    (regulars, pools)
}
