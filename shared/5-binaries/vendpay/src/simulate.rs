//! `vendpay simulate`: fills a SQLite store with an operator's worth of realistic traffic, through the
//! real [`Ledger`] on a simulated clock, so `vendpay report` has data to answer from.
//!
//! **How it runs.** Every machine gets its own `Ledger` (its own clock, an in-memory deadline scheduler
//! and refund queue that only collect messages) over the one `SqliteStore`, and its own Alipay sandbox
//! books (`vendpay_alipay_sandbox::books`, in process: trades, refunds under Alipay's rules). The run
//! goes day by day; within a day every machine is a task working through its own event queue — customer
//! steps, the deadlines and refund sends its ledger dispatched, the nightly restock — moving its clock
//! from event to event. No sleeping and no wall clock: the machines' commits meet in the store's group
//! commit, which batches them. After the last day the queues are run dry, and the run checks that every
//! session is closed and every refund final, both from its own audit of every commit and from the store.
//!
//! **Reproducible.** Everything random is drawn from streams keyed by the seed and what they decide
//! (machine, day, visit, refund id), never from a shared stream, and the machines share no rows, so the
//! same seed, start and size write the same facts whatever the interleaving — given the same analytics
//! key, which is found as `serve` finds it: `ANALYTICS_KEY`, else derived from the device key
//! (`DEVICE_KEY`, else the key file beside the database).
//!
//! **Traffic model** (`simulate/model.rs`): 8 districts of Shanghai with per-machine demand from 1.9
//! (Xujiahui metro hub) down to 0.45 (Minhang suburbs) and their own hourly and weekday profiles
//! (office peaks at 8, 12 and 18 on weekdays and a quiet weekend; transit commute peaks; campus late
//! nights; retail weekends); a machine's own demand factor (log-normal, σ 0.35) and a daily weather
//! factor per district (0.85–1.15); Poisson arrivals of mean 24 × those factors a machine a day. A
//! catalogue of 25 products (3.00–12.00 CNY) with Zipf popularity (exponent 0.9), tastes by district and
//! hour (coffee mornings, noodles late); planograms of 24 or 30 slots (capacity 6–12), refilled at 3–5
//! a.m. every night (busy machines) or every other night. Buyers: 60 regulars a machine per district
//! (15 % loyal, 45 % regular, 40 % occasional; a quarter join during the period, a fifth leave; a fifth
//! also buy in a second district), who make 30–75 % of a district's visits; one-off buyers for the rest.
//! Machines: 70 % mixed (40 % of visits purchase first), 20 % pay first, 10 % purchase first.
//! Pay first: 1 item (68 %), 2 (24 %) or 3 (8 %); paid exactly or rounded up to 5, 10 or 20 CNY;
//! top-ups when short; sold-out slots greyed out; 90 % press end when change is left (a spent-out
//! session ends by itself), the rest walk away and the deadline refunds the remainder. Purchase first:
//! 95.5 % pay the order (3 % over-pay, 1 % under-pay and mostly pay again), 3.5 % never pay (expired),
//! 0.5 % pay after it expired (refused). Vends fail 1.3 % of the time and go unreported 0.15 %. Alipay
//! refuses 0.4 % of refunds for good and loses the answer to 1.5 % (paid; the retry learns it). Busy
//! machines refuse other buyers' payments. Buyer ids are `2088` + 12 digits; they reach the sessions'
//! ledgers (the money rules need them) and nowhere else: facts carry only the keyed hash.

mod machine;
mod model;
mod ports;
mod rng;
mod summary;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use vendpay_api::DeviceKey;
use vendpay_app::inventory::Inventory;
use vendpay_app::{DeviceRecord, DeviceStore, Ledger, QrCode, SessionStore};
use vendpay_domain::facts::AnalyticsKey;
use vendpay_domain::{
    Currency, Device, DeviceId, Money, Sku, Slot, SlotSpec, StockCount, Timestamp, Windows,
};
use vendpay_store_sqlite::{Location, SqliteStore};

use machine::{MachineSim, Parts, Stats};
use model::{World, CATALOGUE, DISTRICTS};
use ports::{Audit, Audited, Outbox, Sandbox, SimClock};
pub use summary::report;
use summary::Progress;

pub const USAGE: &str = "vendpay simulate [--machines N] [--days D] [--seed S] [--demand F] [--db FILE] [--start YYYY-MM-DD] [--append] [--list-buyers]";

/// The first day when `--start` is not given: fixed, so a seed's output is the same whenever it runs.
pub const DEFAULT_START: &str = "2026-11-01";
const MAX_MACHINES: usize = 999;
const MAX_DAYS: u32 = 3660;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct Options {
    pub machines: usize,
    pub days: u32,
    pub seed: u64,
    /// `None`: `VENDPAY_DB` (default `vendpay.sqlite`), as `serve`.
    pub db: Option<PathBuf>,
    /// `YYYY-MM-DD`, local (+08:00) midnight.
    pub start: String,
    /// Write into a database that already has sessions (the new period must start after them).
    pub append: bool,
    /// Print the buyer ids the run would use and stop.
    pub list_buyers: bool,
    /// The key buyer ids are hashed with; `None`: as `serve` — `ANALYTICS_KEY`, else derived from
    /// the device key (`DEVICE_KEY`, else `<db>.device-key`).
    pub analytics_key: Option<AnalyticsKey>,
    /// A progress line on stderr per simulated day.
    pub progress: bool,
    /// Scales the visits of every machine (1.0: about 32 sales a machine a day).
    pub demand: f64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            machines: 50,
            days: 30,
            seed: 7,
            db: None,
            start: DEFAULT_START.to_owned(),
            append: false,
            list_buyers: false,
            analytics_key: None,
            progress: false,
            demand: 1.0,
        }
    }
}

impl Options {
    /// Parses the flags after `simulate` (`--name value` or `--name=value`).
    pub fn parse(flags: &[&str]) -> Result<Options, String> {
        let mut o = Options::default();
        let mut i = 0;
        while i < flags.len() {
            match flags[i] {
                "--append" => o.append = true,
                "--list-buyers" => o.list_buyers = true,
                flag => {
                    let (name, value) = match flag.split_once('=') {
                        Some((n, v)) => (n, Some(v)),
                        None => {
                            i += 1;
                            (flag, flags.get(i).copied())
                        }
                    };
                    let value = value.ok_or_else(|| format!("{name} needs a value"))?;
                    let number = || {
                        value
                            .parse::<u64>()
                            .map_err(|_| format!("{name} {value:?}: want a whole number"))
                    };
                    match name {
                        "--machines" => {
                            o.machines = usize::try_from(number()?)
                                .ok()
                                .filter(|n| (1..=MAX_MACHINES).contains(n))
                                .ok_or_else(|| format!("--machines: 1 to {MAX_MACHINES}"))?
                        }
                        "--days" => {
                            o.days = u32::try_from(number()?)
                                .ok()
                                .filter(|n| (1..=MAX_DAYS).contains(n))
                                .ok_or_else(|| format!("--days: 1 to {MAX_DAYS}"))?
                        }
                        "--seed" => o.seed = number()?,
                        "--demand" => {
                            o.demand = value
                                .parse::<f64>()
                                .ok()
                                .filter(|d| (0.01..=10.0).contains(d))
                                .ok_or_else(|| {
                                    format!("--demand {value:?}: a multiplier from 0.01 to 10")
                                })?
                        }
                        "--db" => o.db = Some(PathBuf::from(value)),
                        "--start" => {
                            start_day(value)?;
                            o.start = value.to_owned();
                        }
                        other => return Err(format!("unknown option {other:?}; usage: {USAGE}")),
                    }
                }
            }
            i += 1;
        }
        Ok(o)
    }
}

/// Days since 1970-01-01 of a `YYYY-MM-DD`.
fn start_day(date: &str) -> Result<i64, String> {
    let bad = || format!("--start {date:?}: want a date YYYY-MM-DD");
    let mut parts = date.splitn(3, '-');
    let mut next = || {
        parts
            .next()
            .and_then(|p| p.parse::<i64>().ok())
            .ok_or_else(bad)
    };
    let (y, m, d) = (next()?, next()?, next()?);
    let (m, d) = (
        u32::try_from(m).map_err(|_| bad())?,
        u32::try_from(d).map_err(|_| bad())?,
    );
    let t = Timestamp::from_civil((y, m, d, 0, 0, 0), 0).ok_or_else(bad)?;
    if !(1970..=9000).contains(&y) {
        return Err(bad());
    }
    Ok(t.secs().div_euclid(86_400))
}

/// Why the run could not start or finish (a broken money rule is a problem in the [`Summary`]).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("{0}")]
    Options(String),
    #[error("configuration: {0}")]
    Config(#[from] crate::ConfigError),
    #[error("store {path}: {reason}")]
    Store { path: String, reason: String },
    #[error("{0}")]
    KeyFile(#[from] crate::keyfile::KeyFileError),
    #[error(
        "{path} already has sessions; give --append to add this period to them, or another --db"
    )]
    HasSessions { path: String },
    #[error("{path} already has sessions of {device} on or after {start}; --append needs a --start after the data it holds")]
    Overlaps {
        path: String,
        device: String,
        start: String,
    },
    #[error("setting up the fleet: {0}")]
    Setup(String),
    #[error("a machine's task failed: {0}")]
    Task(String),
}

/// What a run did and found.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub db: PathBuf,
    pub machines: usize,
    pub days: u32,
    pub visits: u64,
    pub sessions: u64,
    pub orders: u64,
    pub refused_payments: u64,
    /// By refusal reason (`machine_busy`, `underpaid`, ...).
    pub refused: BTreeMap<String, u64>,
    pub payments: u64,
    pub sales: u64,
    pub revenue_minor: u64,
    pub vend_failed: u64,
    pub refunds_issued: u64,
    pub refunded_minor: u64,
    pub refunds_failed: u64,
    pub anomalies: BTreeMap<String, u64>,
    pub declined: BTreeMap<String, u64>,
    pub walked_away: u64,
    pub orders_abandoned: u64,
    pub restocks: u64,
    pub facts: u64,
    pub facts_by_kind: BTreeMap<String, u64>,
    /// Order-independent digest of every fact written (equal for equal runs under one analytics key).
    pub digest: String,
    /// Sessions not closed and refunds not final at the end (both must be 0).
    pub open_sessions: u64,
    pub pending_refunds: u64,
    /// Broken rules and failed calls; empty when the run is sound.
    pub problems: Vec<String>,
    pub elapsed_secs: f64,
}

impl Summary {
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && self.open_sessions == 0 && self.pending_refunds == 0
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Every buyer id a run of `options` uses (regulars and one-off buyers), sorted; no store is touched.
pub fn buyer_ids(options: &Options) -> Result<Vec<String>, SimError> {
    let world = world(options)?;
    Ok(world.buyer_ids(options.days))
}

fn world(o: &Options) -> Result<World, SimError> {
    let day = start_day(&o.start).map_err(SimError::Options)?;
    World::new(o.seed, o.machines, o.days, day)
        .map(|w| w.with_demand(o.demand))
        .ok_or_else(|| SimError::Options(format!("--start {}: out of range", o.start)))
}

/// `simulate` from the command line: prints the buyer ids, or runs and prints the summary. `Ok(false)`
/// when a check failed.
pub async fn cli(mut options: Options) -> Result<bool, SimError> {
    if options.list_buyers {
        let mut out = std::io::stdout().lock();
        for id in buyer_ids(&options)? {
            // A closed pipe (`| head`) just ends the listing.
            if writeln!(out, "{id}").is_err() {
                break;
            }
        }
        return Ok(true);
    }
    options.progress = true;
    let summary = run(&options).await?;
    print!("{}", report(&summary, &options));
    Ok(summary.ok())
}

/// Runs the simulation into the store and checks the end state.
pub async fn run(options: &Options) -> Result<Summary, SimError> {
    let started = Instant::now();
    let world = Arc::new(world(options)?);
    // The settings `serve` reads, minus the store choice: the simulation always writes SQLite.
    let config = crate::Config::from_lookup(|n| match n {
        "VENDPAY_STORE" | "VENDPAY_SANDBOX" | "ALIPAY_GATEWAY_URL" => None,
        _ => std::env::var(n).ok(),
    })?;
    let db = options.db.clone().unwrap_or_else(|| config.db.clone());
    let path = db.display().to_string();
    let store_err = |e: vendpay_app::StoreError| SimError::Store {
        path: path.clone(),
        reason: e.to_string(),
    };
    // The store's clock only decides when idempotency rows expire: it follows the simulated days,
    // behind every machine's clock, so nothing expires early.
    let store_clock = Arc::new(SimClock::default());
    store_clock.set(world.start);
    let store = SqliteStore::open_with_clock(Location::File(db.clone()), store_clock.clone())
        .await
        .map_err(store_err)?;
    // A new store of synthetic data: a crash mid-run loses a simulation, never money, so no fsync
    // per group. Appending to a store keeps its durability (it may hold more than simulations).
    if !options.append {
        store.without_fsync().await.map_err(store_err)?;
    }
    refuse_overlap(&store, &world, options, &path).await?;
    let device_key = match &config.device_key {
        Some(k) => k.clone(),
        None => crate::keyfile::load_or_create(&db)?.0,
    };
    // As `serve` derives it, so later live traffic on this database names the same buyers alike.
    let analytics = options
        .analytics_key
        .clone()
        .or_else(|| config.analytics_key.clone())
        .unwrap_or_else(|| device_key.analytics_key());
    let mut machines = setup(&store, &world, config.windows, &device_key, &analytics)
        .await
        .map_err(SimError::Setup)?;

    let mut shown = Progress::new(options.progress);
    for day in 0..options.days {
        store_clock.set(world.day_start(day));
        machines = each(machines, move |mut m| async move {
            m.run_day(day).await;
            m
        })
        .await?;
        shown.day(&world, day, options.days, &machines, started);
    }
    // Run every queue dry: the last sessions' deadlines and refunds.
    machines = each(machines, |mut m| async move {
        m.run_until(i64::MAX).await;
        m
    })
    .await?;
    shown.done();

    let mut summary = summarise(&machines, options, &db);
    let due = store
        .due(Timestamp::FAR_FUTURE, 10)
        .await
        .map_err(store_err)?;
    let pending = store
        .pending_refunds(Timestamp::FAR_FUTURE, 10)
        .await
        .map_err(store_err)?;
    for s in &due {
        summary
            .problems
            .push(format!("session {s} still has a deadline"));
    }
    for r in &pending {
        summary
            .problems
            .push(format!("refund {} is still pending", r.refund_id));
    }
    if machines.iter().any(|m| !m.idle()) {
        summary.problems.push("an event queue is not empty".into());
    }
    summary.elapsed_secs = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Runs `f` on every machine at once, one task each, and gives them back in order.
async fn each<F, Fut>(machines: Vec<MachineSim>, f: F) -> Result<Vec<MachineSim>, SimError>
where
    F: Fn(MachineSim) -> Fut,
    Fut: std::future::Future<Output = MachineSim> + Send + 'static,
{
    let tasks: Vec<_> = machines.into_iter().map(|m| tokio::spawn(f(m))).collect();
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.map_err(|e| SimError::Task(e.to_string()))?);
    }
    Ok(out)
}

/// Refuses a database that has sessions unless `--append`, and with it one whose data reaches into the
/// new period (its order and request ids are made from the dates).
async fn refuse_overlap(
    store: &SqliteStore,
    world: &World,
    options: &Options,
    path: &str,
) -> Result<(), SimError> {
    let err = |e: vendpay_app::StoreError| SimError::Store {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let mut devices: Vec<DeviceId> = vendpay_app::InventoryStore::stocked_devices(store)
        .await
        .map_err(err)?;
    for m in &world.machines {
        if let Ok(id) = DeviceId::parse(m.device_id.as_str()) {
            devices.push(id);
        }
    }
    let mut any = !store.pending_deadlines().await.map_err(err)?.is_empty()
        || !store
            .pending_refunds(Timestamp::FAR_FUTURE, 1)
            .await
            .map_err(err)?
            .is_empty();
    for d in &devices {
        if let Some(newest) = store.sessions_of_device(d, 1).await.map_err(err)?.first() {
            any = true;
            if options.append && newest.opened_at >= world.start {
                return Err(SimError::Overlaps {
                    path: path.to_owned(),
                    device: d.to_string(),
                    start: options.start.clone(),
                });
            }
        }
    }
    if any && !options.append {
        return Err(SimError::HasSessions {
            path: path.to_owned(),
        });
    }
    Ok(())
}

/// Where a machine's trade numbers start: the first day and the machine, so a later `--append` period
/// and every machine number their own trades (Alipay's are unique forever; the ledger relies on it).
fn trade_base(start_day: i64, machine: usize) -> u64 {
    u64::try_from(start_day)
        .unwrap_or(0)
        .saturating_mul(10_000_000_000)
        .saturating_add(machine as u64 * 10_000_000)
}

/// The catalogue, then every machine registered (if new) with its QR code, planogram and full slots.
async fn setup(
    store: &SqliteStore,
    world: &Arc<World>,
    windows: Windows,
    device_key: &DeviceKey,
    analytics: &AnalyticsKey,
) -> Result<Vec<MachineSim>, String> {
    let shared = Arc::new(store.clone());
    let inventory = Inventory::new(shared.clone(), shared.clone(), shared.clone());
    for item in &CATALOGUE {
        let sku = Sku::parse(item.sku).map_err(|e| e.to_string())?;
        let price = Money::new(item.price, Currency::Cny).ok_or("a price does not fit")?;
        inventory
            .put_product(sku, item.name, price, Some(item.category.name()))
            .await
            .map_err(|e| e.to_string())?;
    }
    let mut machines = Vec::with_capacity(world.machines.len());
    for spec in &world.machines {
        let device = DeviceId::parse(spec.device_id.as_str()).map_err(|e| e.to_string())?;
        let sandbox = Sandbox::new(
            world.seed,
            &spec.device_id,
            trade_base(world.start_day, spec.index),
        );
        let (credential, _secret) = device_key
            .new_credential(&device)
            .map_err(|e| e.to_string())?;
        let record = DeviceRecord {
            device: Device {
                id: device.clone(),
                mode: spec.mode,
                currency: Currency::Cny,
            },
            name: spec.name.clone(),
            district: DISTRICTS[spec.district].name.to_owned(),
            location: Some(spec.location.clone()),
            credential,
            qrcode: None,
            created_at: world.start,
            current: None,
            version: 0,
        };
        if store.register(&record).await.map_err(|e| e.to_string())? {
            let qr = QrCode {
                qrcode: sandbox.qrcode().to_owned(),
                qrcode_img_url: format!("http://127.0.0.1/sandbox/qr/{}.png", spec.device_id),
            };
            store
                .set_qrcode(&device, &qr)
                .await
                .map_err(|e| e.to_string())?;
        }
        let mut slots = Vec::with_capacity(spec.slots.len());
        let mut plan = Vec::with_capacity(spec.slots.len());
        let mut fill = Vec::with_capacity(spec.slots.len());
        for s in &spec.slots {
            let slot = Slot::parse(s.slot.as_str()).map_err(|e| e.to_string())?;
            plan.push(SlotSpec {
                slot: slot.clone(),
                sku: Sku::parse(CATALOGUE[s.item].sku).map_err(|e| e.to_string())?,
                capacity: s.capacity,
                price: s.price.and_then(|p| Money::new(p, Currency::Cny)),
            });
            fill.push(StockCount {
                slot: slot.clone(),
                stock: s.capacity,
            });
            slots.push(slot);
        }
        inventory
            .set_slots(&device, &plan)
            .await
            .map_err(|e| format!("slot map of {device}: {e}"))?;
        inventory
            .restock(&device, &fill)
            .await
            .map_err(|e| format!("filling {device}: {e}"))?;

        let clock = Arc::new(SimClock::default());
        clock.set(world.start);
        let outbox = Arc::new(Outbox::default());
        let audited = Arc::new(Audited {
            store: store.clone(),
            audit: Mutex::new(Audit::default()),
        });
        let ledger = Ledger::new(
            audited.clone() as Arc<dyn SessionStore>,
            outbox.clone(),
            outbox.clone(),
            clock.clone(),
            windows,
        )
        .with_analytics_key(analytics.clone());
        machines.push(MachineSim::new(Parts {
            spec: spec.clone(),
            world: world.clone(),
            device,
            slots,
            ledger,
            inventory: inventory.clone(),
            clock,
            outbox,
            audited,
            sandbox: Arc::new(Mutex::new(sandbox)),
        }));
    }
    Ok(machines)
}

fn summarise(machines: &[MachineSim], options: &Options, db: &Path) -> Summary {
    let mut audit = Audit::default();
    let mut stats = Stats::default();
    let mut open = 0u64;
    let mut pending = 0u64;
    for m in machines {
        let a = m.audited.audit();
        audit.merge(&a);
        open += a.open.len() as u64;
        pending += a.pending_refunds.len() as u64;
        for s in a.open.keys().take(3) {
            audit.problem(format!("session {s} is not closed"));
        }
        for r in a.pending_refunds.iter().take(3) {
            audit.problem(format!("refund {r} is not final"));
        }
        stats.merge(&m.stats);
    }
    let count = |k: &str| audit.facts.get(k).copied().unwrap_or(0);
    Summary {
        db: db.to_path_buf(),
        machines: options.machines,
        days: options.days,
        visits: stats.visits,
        sessions: audit.sessions,
        orders: audit.orders,
        refused_payments: audit.refused_sessions,
        refused: audit.refused.clone(),
        payments: count("payment"),
        sales: count("sale"),
        revenue_minor: audit.revenue,
        vend_failed: count("vend_failed"),
        refunds_issued: audit.issued_refunds,
        refunded_minor: audit.refunded,
        refunds_failed: audit.refunds_failed,
        anomalies: audit.anomalies.clone(),
        declined: stats
            .declined
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect(),
        walked_away: stats.walked_away,
        orders_abandoned: stats.orders_abandoned,
        restocks: stats.restocks,
        facts: audit.facts.values().sum(),
        facts_by_kind: audit
            .facts
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect(),
        digest: format!("{:016x}{:016x}", audit.digest.0, audit.digest.1),
        open_sessions: open,
        pending_refunds: pending,
        problems: audit.problems.clone(),
        elapsed_secs: 0.0,
    }
}
