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

    /// `self - d`, saturating at the far past.
    pub fn minus(self, d: Duration) -> Timestamp {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_sub(ms))
    }

    /// Later than any real time: "whenever" in a query bounded by time.
    pub const FAR_FUTURE: Timestamp = Timestamp(i64::MAX);

    /// How long from `self` until `later` (zero if `later` is not later).
    pub fn until(self, later: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(later.0.saturating_sub(self.0)).unwrap_or(0))
    }
}

impl Timestamp {
    /// RFC 3339 in UTC with millisecond precision, e.g. `2026-11-25T23:19:45.123Z`.
    pub fn to_rfc3339(self) -> String {
        let secs = self.0.div_euclid(1000);
        let ms = self.0.rem_euclid(1000);
        let days = secs.div_euclid(86_400);
        let tod = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
            tod / 3600,
            tod % 3600 / 60,
            tod % 60
        )
    }

    /// Wall-clock fields (year, month, day, hour, minute, second) at a fixed offset from UTC, as
    /// Alipay's GMT+8 timestamps and EventBridge's UTC `at()` expressions need them.
    pub fn civil_at_offset(self, offset_secs: i64) -> (i64, u32, u32, u32, u32, u32) {
        let secs = self.0.div_euclid(1000).saturating_add(offset_secs);
        let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
        let tod = secs.rem_euclid(86_400);
        (
            y,
            m,
            d,
            (tod / 3600) as u32,
            (tod % 3600 / 60) as u32,
            (tod % 60) as u32,
        )
    }

    /// The instant whose wall clock at `offset_secs` from UTC reads the given fields; `None` for a date
    /// or time that does not exist (31 February, 24:00:00).
    pub fn from_civil(
        (y, m, d, h, mi, s): (i64, u32, u32, u32, u32, u32),
        offset_secs: i64,
    ) -> Option<Timestamp> {
        if !(1..=12).contains(&m) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 59 {
            return None;
        }
        let days = days_from_civil(y, m, d);
        if civil_from_days(days) != (y, m, d) {
            return None;
        }
        let secs = days
            .checked_mul(86_400)?
            .checked_add(i64::from(h * 3600 + mi * 60 + s))?
            .checked_sub(offset_secs)?;
        Timestamp::from_secs(secs)
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar (H. Hinnant's
/// algorithms), so no crate needs a date library.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The inverse of [`civil_from_days`].
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let (m, d) = (i64::from(m), i64::from(d));
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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

/// The windows of the two flows: configuration, with the documented defaults (see
/// `docs/contract.md`, “Money rules”).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_answers() {
        // `date -u -d @0`, `@951782400` (2000-02-29) and `@1764112785` computed with GNU date.
        assert_eq!(
            Timestamp::from_millis(0).to_rfc3339(),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            Timestamp::from_millis(951_782_400_000).to_rfc3339(),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            Timestamp::from_millis(1_764_112_785_123).to_rfc3339(),
            "2025-11-25T23:19:45.123Z"
        );
        assert_eq!(
            Timestamp::from_millis(-1).to_rfc3339(),
            "1969-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn civil_round_trips_and_refuses_impossible_dates() {
        for ms in [
            0,
            951_782_400_000,
            1_764_112_785_000,
            -86_400_000,
            4_102_444_799_000,
        ] {
            let t = Timestamp::from_millis(ms);
            assert_eq!(
                Timestamp::from_civil(t.civil_at_offset(8 * 3600), 8 * 3600),
                Some(t)
            );
        }
        assert_eq!(Timestamp::from_civil((2024, 2, 30, 0, 0, 0), 0), None);
        assert_eq!(Timestamp::from_civil((2023, 2, 29, 0, 0, 0), 0), None);
        assert_eq!(Timestamp::from_civil((2024, 1, 1, 24, 0, 0), 0), None);
        assert_eq!(Timestamp::from_civil((2024, 13, 1, 0, 0, 0), 0), None);
    }

    #[test]
    fn gmt8_wall_clock() {
        // 2025-11-25T23:19:45Z is 2025-11-26 07:19:45 in Beijing.
        assert_eq!(
            Timestamp::from_millis(1_764_112_785_000).civil_at_offset(8 * 3600),
            (2025, 11, 26, 7, 19, 45)
        );
    }
}
