//! Time as the domain sees it: milliseconds since the Unix epoch, handed in by the caller.
//!
//! The domain never reads a clock; adapters do (through [`Clock`]), so deadlines are tested without
//! sleeping and the simulation runs thousands of sessions a second on virtual time.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_millis(ms: i64) -> Timestamp {
        Timestamp(ms)
    }

    pub fn from_secs(secs: i64) -> Option<Timestamp> {
        secs.checked_mul(1000).map(Timestamp)
    }

    pub const fn millis(self) -> i64 {
        self.0
    }

    /// Whole seconds, rounded down.
    pub const fn secs(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// `self + d`, saturating at the far future rather than wrapping.
    pub fn plus(self, d: Duration) -> Timestamp {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_add(ms))
    }

    /// How long from `self` until `later` (zero if `later` is not later).
    pub fn until(self, later: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(later.0.saturating_sub(self.0)).unwrap_or(0))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:03}s",
            self.0.div_euclid(1000),
            self.0.rem_euclid(1000)
        )
    }
}

/// Where time comes from. Adapters provide the system clock; tests and the simulation move time by hand.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Timestamp(ms)
    }
}

/// The windows of design §1, configuration with the design's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    /// Pay first: how long after the latest payment the balance stays spendable (300 s).
    pub pay_first: Duration,
    /// Purchase first: how long after payment the machine has to confirm delivery (25 s).
    pub purchase_first: Duration,
    /// Purchase first: how long an order waits for its payment (120 s).
    pub order_payment: Duration,
}

impl Default for Windows {
    fn default() -> Self {
        Windows {
            pay_first: Duration::from_secs(300),
            purchase_first: Duration::from_secs(25),
            order_payment: Duration::from_secs(120),
        }
    }
}
