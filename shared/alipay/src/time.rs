//! Alipay's clock: GMT+8 wall time written `yyyy-MM-dd HH:mm:ss`, with no offset in the string.

use vendpay_domain::Timestamp;

const GMT8_SECS: i64 = 8 * 3600;

/// `ts` as Alipay writes it (GMT+8).
pub fn format_gmt8(ts: Timestamp) -> String {
    let secs = ts.secs().saturating_add(GMT8_SECS);
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        tod / 3600,
        (tod / 60) % 60,
        tod % 60
    )
}

/// Parses Alipay's GMT+8 `yyyy-MM-dd HH:mm:ss`; `None` for anything else.
pub fn parse_gmt8(s: &str) -> Option<Timestamp> {
    let b = s.as_bytes();
    if b.len() != 19
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b' '
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 59 {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    if civil_from_days(days) != (y, mo, d) {
        return None; // 31 February and friends
    }
    Timestamp::from_secs(days * 86_400 + h * 3600 + mi * 60 + se - GMT8_SECS)
}

// Howard Hinnant's civil-calendar algorithms (public domain), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_in_gmt8() {
        // 2024-01-01T19:05:00Z is 2024-01-02 03:05:00 in Beijing (date(1) -d @1704135900).
        assert_eq!(
            format_gmt8(Timestamp::from_millis(1_704_135_900_999)),
            "2024-01-02 03:05:00"
        );
        assert_eq!(
            format_gmt8(Timestamp::from_millis(0)),
            "1970-01-01 08:00:00"
        );
        // Leap day: 2024-02-29T00:00:00+08:00 = 1709136000.
        assert_eq!(
            format_gmt8(Timestamp::from_millis(1_709_136_000_000)),
            "2024-02-29 00:00:00"
        );
    }

    #[test]
    fn parses_what_it_formats_and_nothing_else() {
        assert_eq!(
            parse_gmt8("2024-01-02 03:05:00"),
            Timestamp::from_secs(1_704_135_900)
        );
        for bad in [
            "2024-02-30 00:00:00",
            "2024-1-02 03:05:00",
            "2024-01-02T03:05:00",
            "2024-01-02 24:00:00",
            "2024-01-02 03:05:00Z",
            "",
        ] {
            assert_eq!(parse_gmt8(bad), None, "{bad}");
        }
    }
}
