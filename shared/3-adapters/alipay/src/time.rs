//! Alipay's clock: GMT+8 wall time written `yyyy-MM-dd HH:mm:ss`, with no offset in the string.

use vendpay_domain::Timestamp;

const GMT8_SECS: i64 = 8 * 3600;

/// `ts` as Alipay writes it (GMT+8).
pub fn format_gmt8(ts: Timestamp) -> String {
    let (y, m, d, h, mi, se) = ts.civil_at_offset(GMT8_SECS);
    format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02}:{se:02}")
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
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = s.get(r)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let fields = (
        i64::from(num(0..4)?),
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    Timestamp::from_civil(fields, GMT8_SECS)
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
