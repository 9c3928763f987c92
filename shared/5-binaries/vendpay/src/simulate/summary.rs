//! How a run shows itself: the summary `simulate` prints (never a buyer id: nothing in a [`Summary`]
//! names one) and the progress line on stderr, one update per simulated day with the sales so far and
//! an estimate of the time left.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::Instant;

use super::machine::MachineSim;
use super::model::{World, LOCAL_OFFSET_SECS};
use super::{Options, Summary};

fn yuan(minor: u64) -> String {
    let whole = minor / 100;
    let mut digits = whole.to_string();
    let mut grouped = String::new();
    while digits.len() > 3 {
        let tail = digits.split_off(digits.len() - 3);
        grouped = format!(",{tail}{grouped}");
    }
    format!("CNY {digits}{grouped}.{:02}", minor % 100)
}

fn map(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The summary as printed (no buyer ids: nothing here ever names one).
pub fn report(s: &Summary, o: &Options) -> String {
    let per_day = s.sales as f64 / (s.machines.max(1) as f64 * f64::from(s.days.max(1)));
    let mut out = format!(
        "vendpay simulate: {} machines x {} days from {} (seed {}) into {}\n",
        s.machines,
        s.days,
        o.start,
        o.seed,
        s.db.display()
    );
    out += &format!(
        "  visits     {} ({} walked away with change, {} orders never paid)\n",
        s.visits, s.walked_away, s.orders_abandoned
    );
    out += &format!(
        "  sessions   {} pay first, {} orders, {} refused payments ({})\n",
        s.sessions,
        s.orders,
        s.refused_payments,
        map(&s.refused)
    );
    out += &format!(
        "  payments   {}; sales {} ({:.1} a machine a day), revenue {}\n",
        s.payments,
        s.sales,
        per_day,
        yuan(s.revenue_minor)
    );
    out += &format!(
        "  vends      {} failed; purchases declined: {}\n",
        s.vend_failed,
        map(&s.declined)
    );
    out += &format!(
        "  refunds    {} issued ({}), {} refused by Alipay\n",
        s.refunds_issued,
        yuan(s.refunded_minor),
        s.refunds_failed
    );
    out += &format!("  anomalies  {}\n", map(&s.anomalies));
    out += &format!(
        "  facts      {} written ({}); digest {}\n",
        s.facts,
        map(&s.facts_by_kind),
        s.digest
    );
    out += &format!("  restocks   {}\n", s.restocks);
    if s.ok() {
        out += "  check      ok: every session closed, every refund final, every commit's facts match its money\n";
    } else {
        out += &format!(
            "  check      FAILED: {} sessions open, {} refunds pending, {} problems\n",
            s.open_sessions,
            s.pending_refunds,
            s.problems.len()
        );
        for p in &s.problems {
            out += &format!("    {p}\n");
        }
    }
    out += &format!("  elapsed    {:.1} s wall\n", s.elapsed_secs);
    out
}

/// The progress line on stderr: rewritten in place on a terminal, one line a day otherwise.
pub(super) struct Progress {
    on: bool,
    tty: bool,
}

impl Progress {
    pub(super) fn new(on: bool) -> Progress {
        Progress {
            on,
            tty: std::io::stderr().is_terminal(),
        }
    }

    pub(super) fn day(
        &mut self,
        world: &World,
        day: u32,
        days: u32,
        machines: &[MachineSim],
        started: Instant,
    ) {
        if !self.on {
            return;
        }
        let sales: u64 = machines
            .iter()
            .map(|m| m.audited.audit().facts.get("sale").copied().unwrap_or(0))
            .sum();
        let elapsed = started.elapsed().as_secs_f64();
        let done = f64::from(day + 1);
        let eta = elapsed / done * (f64::from(days) - done);
        let (y, m, d, ..) = world.day_start(day).civil_at_offset(LOCAL_OFFSET_SECS);
        let line = format!(
            "simulate: day {}/{days} ({y:04}-{m:02}-{d:02}): {sales} sales, {:.0} s elapsed, ETA {:.0} s",
            day + 1,
            elapsed,
            eta
        );
        let mut err = std::io::stderr().lock();
        let _ = if self.tty {
            write!(err, "\r{line}\x1b[K")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    }

    pub(super) fn done(&mut self) {
        if self.on && self.tty {
            eprintln!();
        }
    }
}
