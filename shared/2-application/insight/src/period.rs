//! The report's period (`docs/sales.md`, “Period”): `from` and `to` dates, inclusive, at a fixed UTC
//! offset, as the instants `[start, end)`, and the previous period of the same length before it.

use vendpay_domain::Timestamp;

const DAY_MS: i64 = 86_400_000;
/// The longest period: a leap year.
pub const MAX_DAYS: u32 = 366;
/// Real offsets run from −12:00 to +14:00; anything beyond is a typo, not a place.
const MAX_OFFSET_SECS: i64 = 14 * 3600;

/// Why a period was refused (HTTP 400 `bad_period`, exit code 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeriodError {
    #[error("`{field}` is {value:?}, not a date: {why}; expected YYYY-MM-DD, e.g. 2026-11-01")]
    BadDate {
        field: &'static str,
        value: String,
        why: &'static str,
    },
    #[error(
        "`to` ({to}) is before `from` ({from}): the period runs from `from` to `to`, both included"
    )]
    Reversed { from: String, to: String },
    #[error("the period {from} … {to} spans {days} days; at most {MAX_DAYS} are allowed")]
    TooLong { from: String, to: String, days: i64 },
    #[error(
        "`tz` is {value:?}, not a fixed UTC offset: {why}; expected ±HH:MM (e.g. +08:00) or Z"
    )]
    BadTz { value: String, why: &'static str },
}

/// `[from 00:00, to + 1 day 00:00)` at a fixed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    from: (i64, u32, u32),
    to: (i64, u32, u32),
    offset_secs: i64,
    start: Timestamp,
    end: Timestamp,
    days: u32,
}

impl Period {
    /// `from` and `to` as `YYYY-MM-DD`, `tz` as `±HH:MM` or `Z`.
    pub fn parse(from: &str, to: &str, tz: &str) -> Result<Period, PeriodError> {
        let offset_secs = parse_offset(tz)?;
        let from_date = parse_date("from", from)?;
        let to_date = parse_date("to", to)?;
        let at_midnight = |field: &'static str, value: &str, (y, m, d): (i64, u32, u32)| {
            Timestamp::from_civil((y, m, d, 0, 0, 0), offset_secs).ok_or(PeriodError::BadDate {
                field,
                value: value.to_owned(),
                why: "out of range",
            })
        };
        let start = at_midnight("from", from, from_date)?;
        let last = at_midnight("to", to, to_date)?;
        if last < start {
            return Err(PeriodError::Reversed {
                from: from.to_owned(),
                to: to.to_owned(),
            });
        }
        let days = (last.millis() - start.millis()) / DAY_MS + 1;
        let days =
            u32::try_from(days)
                .ok()
                .filter(|d| *d <= MAX_DAYS)
                .ok_or(PeriodError::TooLong {
                    from: from.to_owned(),
                    to: to.to_owned(),
                    days,
                })?;
        Ok(Period {
            from: from_date,
            to: to_date,
            offset_secs,
            start,
            end: Timestamp::from_millis(last.millis() + DAY_MS),
            days,
        })
    }

    pub fn start(&self) -> Timestamp {
        self.start
    }

    pub fn end(&self) -> Timestamp {
        self.end
    }

    /// The previous period is `[previous_start, start)`: as many days, ending where this one starts.
    pub fn previous_start(&self) -> Timestamp {
        Timestamp::from_millis(self.start.millis() - i64::from(self.days) * DAY_MS)
    }

    pub fn days(&self) -> u32 {
        self.days
    }

    /// Seconds east of UTC.
    pub fn offset_secs(&self) -> i64 {
        self.offset_secs
    }

    /// `from` as `YYYY-MM-DD`.
    pub fn from_date(&self) -> String {
        ymd(self.from)
    }

    /// `to` as `YYYY-MM-DD`.
    pub fn to_date(&self) -> String {
        ymd(self.to)
    }

    /// The offset in its canonical form, `+08:00` (`Z` reads as `+00:00`).
    pub fn tz(&self) -> String {
        format_offset(self.offset_secs)
    }

    /// The date at this period's offset of an instant, as `YYYY-MM-DD`.
    pub fn date_of(&self, at: Timestamp) -> String {
        let (y, m, d, ..) = at.civil_at_offset(self.offset_secs);
        ymd((y, m, d))
    }
}

fn ymd((y, m, d): (i64, u32, u32)) -> String {
    format!("{y:04}-{m:02}-{d:02}")
}

pub(crate) fn format_offset(secs: i64) -> String {
    let sign = if secs < 0 { '-' } else { '+' };
    let abs = secs.abs();
    format!("{sign}{:02}:{:02}", abs / 3600, abs % 3600 / 60)
}

fn digits(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_date(field: &'static str, value: &str) -> Result<(i64, u32, u32), PeriodError> {
    let bad = |why| PeriodError::BadDate {
        field,
        value: value.to_owned(),
        why,
    };
    let parts: Vec<&str> = value.split('-').collect();
    let [y, m, d] = parts.as_slice() else {
        return Err(bad("not three fields separated by '-'"));
    };
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return Err(bad("the year takes 4 digits, the month and day 2 each"));
    }
    let (Some(y), Some(m), Some(d)) = (digits(y), digits(m), digits(d)) else {
        return Err(bad("only digits between the '-'"));
    };
    if !(1..=12).contains(&m) {
        return Err(bad("the month is not 01–12"));
    }
    let y = i64::from(y);
    if Timestamp::from_civil((y, m, d, 0, 0, 0), 0).is_none() {
        return Err(bad("the month has no such day"));
    }
    Ok((y, m, d))
}

/// `+08:00` → 28800 seconds east of UTC; `Z`, `+00:00` and `-00:00` → 0.
pub fn parse_offset(tz: &str) -> Result<i64, PeriodError> {
    let bad = |why| PeriodError::BadTz {
        value: tz.to_owned(),
        why,
    };
    if tz == "Z" {
        return Ok(0);
    }
    let sign = match tz.as_bytes().first() {
        Some(b'+') => 1,
        Some(b'-') => -1,
        _ => return Err(bad("it does not start with '+' or '-'")),
    };
    let rest = &tz[1..];
    let Some((h, m)) = rest.split_once(':') else {
        return Err(bad("no ':' between hours and minutes"));
    };
    if h.len() != 2 || m.len() != 2 {
        return Err(bad("hours and minutes take 2 digits each"));
    }
    let (Some(h), Some(m)) = (digits(h), digits(m)) else {
        return Err(bad("hours and minutes are digits"));
    };
    if m > 59 {
        return Err(bad("the minutes are not 00–59"));
    }
    let secs = i64::from(h) * 3600 + i64::from(m) * 60;
    if secs > MAX_OFFSET_SECS {
        return Err(bad("offsets lie between -14:00 and +14:00"));
    }
    Ok(sign * secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(from: &str, to: &str, tz: &str) -> String {
        match Period::parse(from, to, tz) {
            Ok(p) => panic!("{from}..{to} {tz} parsed as {p:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn november_at_beijing_time() {
        let p = Period::parse("2026-11-01", "2026-11-30", "+08:00").unwrap();
        assert_eq!(p.days(), 30);
        // 2026-11-01T00:00+08:00 = 2026-10-31T16:00Z = 1793462400 s (date -u -d 2026-10-31T16:00Z +%s).
        assert_eq!(p.start().millis(), 1_793_462_400_000);
        assert_eq!(p.end().millis(), 1_793_462_400_000 + 30 * DAY_MS);
        assert_eq!(p.previous_start().millis(), 1_793_462_400_000 - 30 * DAY_MS);
        assert_eq!(p.date_of(p.previous_start()), "2026-10-02");
        assert_eq!(p.date_of(p.end()), "2026-12-01");
        assert_eq!(
            (p.from_date(), p.to_date(), p.tz()),
            ("2026-11-01".into(), "2026-11-30".into(), "+08:00".into())
        );
    }

    #[test]
    fn one_day_and_a_leap_year() {
        assert_eq!(
            Period::parse("2026-11-01", "2026-11-01", "Z")
                .unwrap()
                .days(),
            1
        );
        let leap = Period::parse("2028-01-01", "2028-12-31", "-05:30").unwrap();
        assert_eq!(leap.days(), 366);
        assert_eq!(leap.offset_secs(), -(5 * 3600 + 1800));
        assert_eq!(leap.tz(), "-05:30");
    }

    #[test]
    fn offsets() {
        assert_eq!(parse_offset("+08:00"), Ok(28_800));
        assert_eq!(parse_offset("Z"), Ok(0));
        assert_eq!(parse_offset("+00:00"), Ok(0));
        assert_eq!(parse_offset("-03:30"), Ok(-12_600));
        assert_eq!(parse_offset("+14:00"), Ok(50_400));
        for bad in [
            "", "8", "+8:00", "+08", "+0800", "08:00", "+15:00", "+08:60", "UTC", "+0a:00", "z",
        ] {
            assert!(
                matches!(parse_offset(bad), Err(PeriodError::BadTz { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn refusals_say_which_field_and_what_was_expected() {
        let e = err("2026-13-01", "2026-12-31", "+08:00");
        assert!(
            e.contains("`from`") && e.contains("month is not 01–12"),
            "{e}"
        );
        let e = err("2026-02-01", "2026-02-30", "+08:00");
        assert!(e.contains("`to`") && e.contains("no such day"), "{e}");
        let e = err("yesterday", "2026-02-03", "+08:00");
        assert!(e.contains("`from`") && e.contains("YYYY-MM-DD"), "{e}");
        let e = err("2026-1-01", "2026-02-03", "+08:00");
        assert!(e.contains("4 digits"), "{e}");
        let e = err("2026-11-30", "2026-11-01", "+08:00");
        assert!(
            e.contains("`to` (2026-11-01) is before `from` (2026-11-30)"),
            "{e}"
        );
        let e = err("2026-01-01", "2027-01-02", "+08:00");
        assert!(e.contains("367 days") && e.contains("at most 366"), "{e}");
        assert!(Period::parse("2026-01-01", "2027-01-01", "+08:00").is_ok());
        let e = err("2026-01-01", "2026-01-02", "+8");
        assert!(e.contains("`tz`") && e.contains("±HH:MM"), "{e}");
        assert!(matches!(
            Period::parse("2026-11-01", "2026-11-30", "Asia/Shanghai"),
            Err(PeriodError::BadTz { .. })
        ));
    }
}
