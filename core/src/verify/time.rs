//! Signed timestamps: parsing the forms providers send and the tolerance check.
//!
//! Replayable schemes sign a timestamp so that a captured request cannot be sent
//! again later. Requests too old *and* too far in the future are refused: a future
//! timestamp within tolerance is clock skew, beyond it is a request prepared for a
//! later replay. Core reads no clock; the runtime passes `received_at`.

use crate::config::TimestampFormat;

/// Parses a timestamp in the given format to Unix seconds.
pub fn parse(text: &str, format: TimestampFormat) -> Option<i64> {
    let text = text.trim();
    match format {
        TimestampFormat::UnixSeconds => parse_int(text),
        TimestampFormat::UnixMillis => parse_int(text).map(|ms| ms.div_euclid(1000)),
        TimestampFormat::Rfc3339 => parse_rfc3339(text),
    }
}

fn parse_int(text: &str) -> Option<i64> {
    if text.is_empty() || text.len() > 18 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, as Twitch sends it.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 || b.len() > 40 {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(range)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    if b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &text[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let o = rest.as_bytes();
            let digits = |r: std::ops::Range<usize>| o[r].iter().all(u8::is_ascii_digit);
            if o.len() != 6 || o[3] != b':' || !digits(1..3) || !digits(4..6) {
                return None;
            }
            let h: i64 = rest[1..3].parse().ok()?;
            let m: i64 = rest[4..6].parse().ok()?;
            if h > 23 || m > 59 {
                return None;
            }
            sign * (h * 3600 + m * 60)
        }
    };
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Checks `timestamp` against `now`; the error is a sentence for the trace.
pub fn check(timestamp: i64, now: i64, tolerance_seconds: u64) -> Result<(), String> {
    let tolerance = i64::try_from(tolerance_seconds).unwrap_or(i64::MAX);
    let age = now.saturating_sub(timestamp);
    let ahead = timestamp.saturating_sub(now);
    if age > tolerance {
        Err(format!(
            "timestamp {timestamp} outside {tolerance_seconds} s tolerance ({age} s old)"
        ))
    } else if ahead > tolerance {
        Err(format!(
            "timestamp {timestamp} outside {tolerance_seconds} s tolerance ({ahead} s in the future)"
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_forms() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2023-07-19T10:56:26.123456789Z"),
            Some(1_689_764_186)
        );
        assert_eq!(
            parse_rfc3339("2023-07-19T12:56:26+02:00"),
            Some(1_689_764_186)
        );
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), Some(951_782_400));
        for bad in [
            "2023-07-19",
            "2023-13-01T00:00:00Z",
            "2023-07-19T10:56:26",
            "2023-07-19T10:56:26.Z",
            "x023-07-19T10:56:26Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn unix_forms() {
        assert_eq!(
            parse("1700000000", TimestampFormat::UnixSeconds),
            Some(1_700_000_000)
        );
        assert_eq!(
            parse("1700000000999", TimestampFormat::UnixMillis),
            Some(1_700_000_000)
        );
        assert_eq!(parse("-5", TimestampFormat::UnixSeconds), None);
        assert_eq!(
            parse("99999999999999999999", TimestampFormat::UnixSeconds),
            None
        );
    }

    #[test]
    fn tolerance_both_ways() {
        assert!(check(1000, 1300, 300).is_ok());
        assert!(check(1300, 1000, 300).is_ok());
        assert_eq!(
            check(1000, 1301, 300).unwrap_err(),
            "timestamp 1000 outside 300 s tolerance (301 s old)"
        );
        assert_eq!(
            check(1302, 1000, 300).unwrap_err(),
            "timestamp 1302 outside 300 s tolerance (302 s in the future)"
        );
        assert!(check(i64::MIN, i64::MAX, 300).is_err());
        assert!(check(i64::MAX, i64::MIN, 300).is_err());
    }
}
