//! `vendpay load`: a load benchmark of the device routes, over real HTTP, on the embedded store.
//!
//! It starts its own [`Server`] (a temporary SQLite database, the in-process Alipay sandbox, an
//! ephemeral port) through the same configuration path as `vendpay serve` and `vendpay demo`,
//! registers `--machines` machines and drives each through pay-first sessions, all at once:
//! a customer pays 100.00 through `POST /sandbox/pay` (the sandbox POSTs the signed notification back),
//! the machine polls until the session is open, then repeats `--rounds` times: purchase request
//! (1.00), vend result (every 7th vend fails), `GET /devices/{id}/session`; then ends the session, whose
//! change is refunded through the sandbox. It stops after `--seconds` or `--events`.
//!
//! With `--planogram` every machine first gets a slot map (`A1`: one catalogue product at 1.00,
//! capacity `--capacity`, default 1000, filled), and its purchases omit the price: the server reads the slot and the product,
//! reserves an item with the approval and moves stock with the vend result, all in the same writes as
//! the money. A slot that runs out is refilled by the operator (`POST /admin/devices/{id}/restock`,
//! not an event). At the end each machine's inventory is read back: nothing reserved, and the stock
//! down by exactly the items delivered.
//!
//! **CPU** is the process's own (server, in-process sandbox and load client together: user + system
//! time from `/proc/self/stat`) over the driving phase, divided by the events and by the purchases.
//!
//! **Events** are the signed device requests of those loops: purchase, vend result, session read and
//! session end. The polls while a payment is on its way are counted apart and left out of the events
//! and the latencies. A latency is the time of one HTTP request (send to last byte of the answer), taken
//! once the request holds one of the `--concurrency` permits: at most that many are in flight, and
//! waiting for a permit is not counted.
//!
//! At the end every session touched is read through `GET /admin/sessions/{id}` (once its change has been
//! refunded, or after a timeout) and checked: Σ payments = spent + held + balance + Σ refunds, a closed
//! session holds no balance, every session closed with its refunds succeeded. [`run`] returns
//! `Ok(false)` if any check fails or any request went wrong.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Semaphore;
use vendpay_client::{cny, Client, ClientError, MachineKeys, NewDevice, SlotPlan};

use crate::local::{self, LocalError, WindowSecs};

const ADMIN_TOKEN: &str = "vendpay-load-admin-token";
/// What each customer pays to open a session, in minor units (100.00 CNY).
const PAYMENT: u64 = 10_000;
/// The price of every item (1.00 CNY).
const PRICE: u64 = 100;
/// Every this many vends, one fails (its hold goes back to the balance).
const FAIL_EVERY: u64 = 7;
/// With `--planogram`: the slot every purchase names and its product.
const SLOT: &str = "A1";
const SKU: &str = "load-item";
/// How long to wait for a payment's notification, and for the final refunds.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The command line of `vendpay load`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub machines: usize,
    /// Stop after this long (default 20 s unless `events` is given).
    pub seconds: Option<u64>,
    /// Stop after this many events.
    pub events: Option<u64>,
    /// At most this many requests in flight.
    pub concurrency: usize,
    /// Purchase rounds per session.
    pub rounds: u64,
    /// Give every machine a slot map and buy from it without a price.
    pub planogram: bool,
    /// With `planogram`: the slot's capacity, filled at the start and at each refill.
    pub capacity: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            machines: 200,
            seconds: None,
            events: None,
            concurrency: 32,
            rounds: 10,
            planogram: false,
            capacity: vendpay_domain::inventory::MAX_CAPACITY,
        }
    }
}

pub const USAGE: &str = "vendpay load [--machines N] [--seconds S | --events E] [--concurrency C] [--rounds R] [--planogram [--capacity N]]";

impl Options {
    /// Parses the flags after `load` (`--name value` or `--name=value`).
    pub fn parse(flags: &[&str]) -> Result<Options, String> {
        let mut o = Options::default();
        let mut i = 0;
        while i < flags.len() {
            if flags[i] == "--planogram" {
                o.planogram = true;
                i += 1;
                continue;
            }
            let (name, value) = match flags[i].split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => {
                    i += 1;
                    (flags[i - 1], flags.get(i).copied())
                }
            };
            let value = value.ok_or_else(|| format!("{name} needs a value"))?;
            let number = |what: &str| -> Result<u64, String> {
                match value.parse::<u64>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => Err(format!("{what} {value:?}: want a whole number above 0")),
                }
            };
            match name {
                "--machines" => o.machines = to_usize(number(name)?)?,
                "--seconds" => o.seconds = Some(number(name)?),
                "--events" => o.events = Some(number(name)?),
                "--concurrency" => o.concurrency = to_usize(number(name)?)?,
                "--rounds" => o.rounds = number(name)?,
                "--capacity" => {
                    o.capacity = u32::try_from(number(name)?)
                        .ok()
                        .filter(|c| *c <= vendpay_domain::inventory::MAX_CAPACITY)
                        .ok_or_else(|| {
                            format!(
                                "--capacity {value:?}: at most {}",
                                vendpay_domain::inventory::MAX_CAPACITY
                            )
                        })?
                }
                other => return Err(format!("unknown option {other:?}; usage: {USAGE}")),
            }
            i += 1;
        }
        if !o.planogram && flags.iter().any(|f| f.starts_with("--capacity")) {
            return Err("--capacity goes with --planogram".to_owned());
        }
        if o.seconds.is_none() && o.events.is_none() {
            o.seconds = Some(20);
        }
        Ok(o)
    }
}

fn to_usize(n: u64) -> Result<usize, String> {
    usize::try_from(n).map_err(|_| format!("{n} is too large"))
}

/// The benchmark could not run at all (a request or check that goes wrong is a failure, not this).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Local(#[from] LocalError),
    #[error("registering the machines: {0}")]
    Register(String),
}

type Step<T> = Result<T, String>;

/// What every machine task shares.
struct Shared {
    client: Client,
    permits: Semaphore,
    stop: AtomicBool,
    events: AtomicU64,
    max_events: Option<u64>,
    rounds: u64,
    planogram: bool,
    capacity: u32,
}

/// What one machine task brings back.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    events: u64,
    polls: u64,
    sessions: Vec<String>,
    purchases: u64,
    declined: u64,
    /// With `--planogram`: refills of a sold-out slot, and what the machine's stock should be now.
    restocks: u64,
    expected_stock: u64,
    error: Option<String>,
}

/// Runs the benchmark and prints its report; `Ok(true)` when every check passed.
pub async fn run(options: Options) -> Result<bool, LoadError> {
    // Windows short next to the real ones but longer than any session here: sessions end because the
    // machine ends them, not because a deadline fires mid-loop.
    let windows = WindowSecs {
        pay_first: "60",
        purchase_first: "5",
        order_payment: "10",
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(options.concurrency.max(options.machines))
        .tcp_nodelay(true);
    let local = local::start("load.sqlite", windows, ADMIN_TOKEN, http).await?;
    let shared = Arc::new(Shared {
        client: local.client.clone(),
        permits: Semaphore::new(options.concurrency),
        stop: AtomicBool::new(false),
        events: AtomicU64::new(0),
        max_events: options.events,
        rounds: options.rounds,
        planogram: options.planogram,
        capacity: options.capacity,
    });
    println!(
        "vendpay load: server {} on a temporary SQLite database; Alipay sandbox in-process",
        shared.client.base()
    );

    if options.planogram {
        shared
            .client
            .put_product(SKU, "Load item", &cny(PRICE), None)
            .await
            .map_err(|e| LoadError::Register(e.to_string()))?;
    }
    let machines = register_all(&shared, options.machines)
        .await
        .map_err(LoadError::Register)?;
    println!(
        "registered {} machines{}; running {}, {} requests in flight at most, {} purchase rounds a session",
        machines.len(),
        if options.planogram {
            format!(
                ", each with slot {SLOT} of {} items (purchases name no price)",
                options.capacity
            )
        } else {
            String::new()
        },
        match (options.seconds, options.events) {
            (Some(s), Some(e)) => format!("{s} s or {e} events"),
            (Some(s), None) => format!("{s} s"),
            (None, Some(e)) => format!("{e} events"),
            (None, None) => "until stopped".to_owned(),
        },
        options.concurrency,
        options.rounds
    );

    let started = Instant::now();
    let cpu_before = process_cpu();
    let mut tasks = Vec::with_capacity(machines.len());
    for m in machines {
        let shared = Arc::clone(&shared);
        tasks.push(tokio::spawn(async move { drive(&shared, &m).await }));
    }
    if let Some(s) = options.seconds {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(s)).await;
            shared.stop.store(true, Ordering::Relaxed);
        });
    }
    let mut all = Tally::default();
    let mut errors = Vec::new();
    let mut stock_expected = Vec::new();
    for t in tasks {
        match t.await {
            Ok((id, t)) => {
                all.latencies_us.extend(t.latencies_us);
                all.events += t.events;
                all.polls += t.polls;
                all.sessions.extend(t.sessions);
                all.purchases += t.purchases;
                all.declined += t.declined;
                all.restocks += t.restocks;
                stock_expected.push((id, t.expected_stock));
                errors.extend(t.error);
            }
            Err(e) => errors.push(format!("a machine task failed: {e}")),
        }
    }
    let elapsed = started.elapsed();
    let cpu = match (cpu_before, process_cpu()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };

    let mut findings = check_sessions(&shared, &all.sessions).await;
    if options.planogram {
        findings.extend(check_stock(&shared, &stock_expected).await);
    }
    local.server.shutdown().await;

    all.latencies_us.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.latencies_us.is_empty() {
            return 0.0;
        }
        let rank = (p * all.latencies_us.len() as f64).ceil() as usize;
        let i = rank.clamp(1, all.latencies_us.len()) - 1;
        f64::from(all.latencies_us[i]) / 1000.0
    };
    let secs = elapsed.as_secs_f64();
    println!();
    println!("machines        {}", options.machines);
    println!("concurrency     {}", options.concurrency);
    println!(
        "sessions        {} (payments through the sandbox; change refunded)",
        all.sessions.len()
    );
    println!(
        "events          {} (purchase, vend result, session read, end); {} payment polls not counted",
        all.events, all.polls
    );
    println!("duration        {secs:.2} s");
    println!(
        "events/s        {:.0}",
        if secs > 0.0 {
            all.events as f64 / secs
        } else {
            0.0
        }
    );
    println!(
        "latency         p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pct(0.50),
        pct(0.99),
        pct(1.0)
    );
    println!(
        "purchases       {}{}",
        all.purchases,
        if options.planogram {
            format!(
                " from slot {SLOT} at the server's price; {} refill(s) of a sold-out slot",
                all.restocks
            )
        } else {
            " at the machine's price".to_owned()
        }
    );
    match cpu {
        Some(cpu) => {
            let per = |n: u64| {
                if n == 0 {
                    0.0
                } else {
                    cpu.as_secs_f64() * 1e6 / n as f64
                }
            };
            println!(
                "cpu             {:.2} s (user + system, whole process, while driving): {:.0} µs per event, {:.0} µs per purchase",
                cpu.as_secs_f64(),
                per(all.events),
                per(all.purchases)
            );
        }
        None => println!("cpu             unknown (no /proc/self/stat)"),
    }
    if all.declined > 0 {
        println!(
            "declined        {} purchase(s) (the session then ends)",
            all.declined
        );
    }
    let ok = errors.is_empty() && findings.is_empty();
    if findings.is_empty() {
        println!(
            "invariant       ok for all {} sessions (payments = spent + held + balance + refunds; closed, no balance, refunds succeeded){}",
            all.sessions.len(),
            if options.planogram {
                format!("; stock of all {} machines = filled − delivered, none reserved", stock_expected.len())
            } else {
                String::new()
            }
        );
    } else {
        println!(
            "invariant       FAILED for {} of {} sessions:",
            findings.len(),
            all.sessions.len()
        );
        for f in findings.iter().take(20) {
            println!("  - {f}");
        }
    }
    if !errors.is_empty() {
        println!("{} machine(s) stopped on an error:", errors.len());
        for e in errors.iter().take(20) {
            println!("  - {e}");
        }
    }
    Ok(ok)
}

/// Registers the machines, a few at a time, each with its QR code (and with `--planogram` its slot
/// map, filled).
async fn register_all(shared: &Arc<Shared>, n: usize) -> Step<Vec<MachineKeys>> {
    let gate = Arc::new(Semaphore::new(16));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let shared = Arc::clone(shared);
        let gate = Arc::clone(&gate);
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.map_err(|e| e.to_string())?;
            register(&shared, &format!("vm-load-{i:05}")).await
        }));
    }
    let mut machines = Vec::with_capacity(n);
    for t in tasks {
        machines.push(t.await.map_err(|e| e.to_string())??);
    }
    Ok(machines)
}

async fn register(shared: &Shared, id: &str) -> Step<MachineKeys> {
    let name = format!("Load {id}");
    let device = NewDevice {
        id,
        name: &name,
        district: "Xuhui",
        location: Some("Lobby"),
        currency: "CNY",
        mode: "pay_first",
    };
    let client = &shared.client;
    let m = client.register(&device).await.map_err(|e| e.to_string())?;
    if shared.planogram {
        let plan = [SlotPlan {
            slot: SLOT,
            sku: SKU,
            capacity: shared.capacity,
            price: None,
        }];
        client
            .set_slots(id, &plan)
            .await
            .map_err(|e| e.to_string())?;
        client
            .restock(id, &[(SLOT, shared.capacity)])
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(m)
}

/// The CPU time (user + system) of this whole process so far, from `/proc/self/stat` (in clock ticks
/// of 10 ms: Linux's fixed `USER_HZ` of 100).
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces, so split after its closing parenthesis):
    // state is field 3, utime 14 and stime 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// One request to the server, holding a permit; returns the answer and its latency in µs.
async fn timed<T>(
    shared: &Shared,
    request: impl Future<Output = Result<T, ClientError>>,
) -> Step<(T, u32)> {
    let _permit = shared
        .permits
        .acquire()
        .await
        .map_err(|e| format!("permits: {e}"))?;
    let t = Instant::now();
    let v = request.await.map_err(|e| e.to_string())?;
    let us = u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX);
    Ok((v, us))
}

fn text<'a>(v: &'a Value, field: &str) -> &'a str {
    v.get(field).and_then(Value::as_str).unwrap_or("?")
}

fn minor(v: &Value) -> u64 {
    v.get("minor").and_then(Value::as_u64).unwrap_or(0)
}

impl Shared {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Counts one event; sets the stop flag when the event budget is used up.
    fn count(&self, tally: &mut Tally, latency_us: u32) {
        tally.events += 1;
        tally.latencies_us.push(latency_us);
        let n = self.events.fetch_add(1, Ordering::Relaxed) + 1;
        if self.max_events.is_some_and(|max| n >= max) {
            self.stop.store(true, Ordering::Relaxed);
        }
    }
}

/// One machine: sessions back to back until the stop flag is set. Returns the machine's id with its
/// tally.
async fn drive(shared: &Shared, m: &MachineKeys) -> (String, Tally) {
    let mut tally = Tally {
        expected_stock: u64::from(shared.capacity),
        ..Tally::default()
    };
    let mut n: u64 = 0;
    while !shared.stopped() {
        if let Err(e) = session(shared, m, &mut tally, &mut n).await {
            tally.error = Some(format!("{}: {e}", m.id));
            break;
        }
    }
    (m.id.clone(), tally)
}

/// One pay-first session: pay, wait for it to open, `rounds` purchases, end.
async fn session(shared: &Shared, m: &MachineKeys, tally: &mut Tally, n: &mut u64) -> Step<()> {
    let client = &shared.client;
    timed(shared, client.pay(&m.id, &cny(PAYMENT))).await?;
    let until = Instant::now() + SETTLE_TIMEOUT;
    let id = loop {
        let (s, _) = timed(shared, client.session(m)).await?;
        tally.polls += 1;
        if s["state"] == "open" && minor(&s["balance"]) >= PAYMENT {
            break text(&s, "session_id").to_owned();
        }
        if Instant::now() >= until {
            return Err(format!("the payment did not open a session; last seen {s}"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    tally.sessions.push(id.clone());
    for _ in 0..shared.rounds {
        if shared.stopped() {
            break;
        }
        *n += 1;
        let request_id = format!("p{n}");
        let price = cny(PRICE);
        // With a slot map the server knows the price: the machine names none.
        let price = (!shared.planogram).then_some(&price);
        let (a, us) = timed(shared, client.purchase(m, &request_id, SLOT, price)).await?;
        shared.count(tally, us);
        tally.purchases += 1;
        if shared.planogram && a["decision"] == "declined" && a["reason"] == "sold_out" {
            // The operator refills the slot (not an event); the machine tries the next round.
            timed(shared, client.restock(&m.id, &[(SLOT, shared.capacity)])).await?;
            tally.restocks += 1;
            tally.expected_stock = u64::from(shared.capacity);
            continue;
        }
        if a["decision"] != "approved" {
            tally.declined += 1;
            break;
        }
        if text(&a, "session_id") != id {
            return Err(format!(
                "purchase {request_id} landed in another session: {a}"
            ));
        }
        let delivered = !n.is_multiple_of(FAIL_EVERY);
        let (_, us) = timed(shared, client.vend(m, &request_id, delivered)).await?;
        shared.count(tally, us);
        if delivered {
            tally.expected_stock = tally.expected_stock.saturating_sub(1);
        }
        let (_, us) = timed(shared, client.session(m)).await?;
        shared.count(tally, us);
    }
    let (_, us) = timed(shared, client.end_session(m, None)).await?;
    shared.count(tally, us);
    Ok(())
}

/// Reads every session once its refunds are done (or the timeout passed) and checks the money.
async fn check_sessions(shared: &Arc<Shared>, ids: &[String]) -> Vec<String> {
    let findings = Arc::new(Mutex::new(Vec::new()));
    let gate = Arc::new(Semaphore::new(16));
    let until = Instant::now() + SETTLE_TIMEOUT;
    let mut tasks = Vec::with_capacity(ids.len());
    for id in ids {
        let (shared, gate, findings, id) = (
            Arc::clone(shared),
            Arc::clone(&gate),
            Arc::clone(&findings),
            id.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let Ok(_permit) = gate.acquire().await else {
                return;
            };
            if let Some(f) = check_session(&shared, &id, until).await {
                if let Ok(mut v) = findings.lock() {
                    v.push(f);
                }
            }
        }));
    }
    for t in tasks {
        if let Err(e) = t.await {
            if let Ok(mut v) = findings.lock() {
                v.push(format!("a check task failed: {e}"));
            }
        }
    }
    let mut out = findings.lock().map(|v| v.clone()).unwrap_or_default();
    out.sort();
    out
}

/// With `--planogram`: each machine's slot holds what was filled less what was delivered, and nothing
/// is reserved (every approved purchase was reported).
async fn check_stock(shared: &Shared, expected: &[(String, u64)]) -> Vec<String> {
    let mut findings = Vec::new();
    for (id, want) in expected {
        let inventory = match shared.client.inventory(id).await {
            Ok(v) => v,
            Err(e) => {
                findings.push(format!("inventory of {id}: {e}"));
                continue;
            }
        };
        let slot = inventory
            .get("slots")
            .and_then(Value::as_array)
            .and_then(|s| s.iter().find(|s| s["slot"] == SLOT));
        let Some(slot) = slot else {
            findings.push(format!("inventory of {id}: no slot {SLOT}: {inventory}"));
            continue;
        };
        let (stock, reserved) = (slot["stock"].as_u64(), slot["reserved"].as_u64());
        if stock != Some(*want) || reserved != Some(0) {
            findings.push(format!(
                "inventory of {id}: slot {SLOT} stock {stock:?}, reserved {reserved:?} (want stock {want}, reserved 0)"
            ));
        }
    }
    findings
}

/// `None` when the session is right.
async fn check_session(shared: &Shared, id: &str, until: Instant) -> Option<String> {
    let s = loop {
        let s = match shared.client.admin_session(id).await {
            Ok(s) => s,
            Err(e) => return Some(format!("session {id}: {e}")),
        };
        let refunds = s
            .get("refunds")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let settled = s["phase"] == "closed" && refunds.iter().all(|r| r["status"] != "pending");
        if settled || Instant::now() >= until {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let sum = |field: &str| -> u64 {
        s.get(field)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|x| minor(&x["amount"]))
            .sum()
    };
    let (paid, refunded) = (sum("payments"), sum("refunds"));
    let (spent, held, balance) = (minor(&s["spent"]), minor(&s["held"]), minor(&s["balance"]));
    let mut wrong = Vec::new();
    if paid != spent + held + balance + refunded {
        wrong.push(format!(
            "payments {paid} != spent {spent} + held {held} + balance {balance} + refunds {refunded}"
        ));
    }
    if s["phase"] != "closed" {
        wrong.push(format!("phase {} (want closed)", text(&s, "phase")));
    } else if balance != 0 || held != 0 {
        wrong.push(format!("closed with balance {balance}, held {held}"));
    }
    let unsettled: Vec<&str> = s
        .get("refunds")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|r| text(r, "status"))
        .filter(|st| *st != "succeeded")
        .collect();
    if !unsettled.is_empty() {
        wrong.push(format!("refunds not succeeded: {unsettled:?}"));
    }
    if wrong.is_empty() {
        None
    } else {
        Some(format!("session {id}: {}", wrong.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flags() {
        let o = Options::parse(&["--machines", "5", "--seconds=3", "--concurrency", "4"]).unwrap();
        assert_eq!(o.machines, 5);
        assert_eq!(o.seconds, Some(3));
        assert_eq!(o.concurrency, 4);
        assert_eq!(o.events, None);
        let o = Options::parse(&["--events", "100"]).unwrap();
        assert_eq!((o.seconds, o.events), (None, Some(100)));
        assert_eq!(Options::parse(&[]).unwrap().seconds, Some(20));
        assert!(Options::parse(&["--machines"]).is_err());
        assert!(Options::parse(&["--machines", "0"]).is_err());
        assert!(Options::parse(&["--bogus", "1"]).is_err());
        assert!(!Options::parse(&[]).unwrap().planogram);
        let o = Options::parse(&["--planogram", "--machines", "3"]).unwrap();
        assert!(o.planogram);
        assert_eq!((o.machines, o.capacity), (3, 1000));
        let o = Options::parse(&["--planogram", "--capacity=5"]).unwrap();
        assert_eq!(o.capacity, 5);
        assert!(Options::parse(&["--planogram", "--capacity", "1001"]).is_err());
        assert!(Options::parse(&["--capacity", "5"]).is_err());
    }
}
