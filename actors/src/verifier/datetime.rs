//! The atproto `datetime` string format (RFC 3339 ∩ ISO 8601, as the atproto spec narrows
//! it): `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, upper-case `T` and `Z`, a timezone always,
//! `-00:00` refused, and values that name a real instant (month 1–12, a day the month has,
//! hour ≤ 23, minute and second ≤ 59).
//!
//! Pure: `identity.rs` calls it on the `time` of identity and account events. Returns why a
//! string is not a datetime; the caller turns that into a [`super::CheckError`].

/// Longest datetime string we look at (hostile input is refused before it is scanned).
pub const MAX_DATETIME_LEN: usize = 64;

/// Checks an atproto datetime string.
pub fn check_datetime(s: &str) -> Result<(), &'static str> {
    if s.len() > MAX_DATETIME_LEN {
        return Err("longer than 64 chars");
    }
    let b = s.as_bytes();
    // Fixed part: YYYY-MM-DDTHH:MM:SS (19 bytes), then fraction and zone.
    if b.len() < 20 {
        return Err("shorter than YYYY-MM-DDTHH:MM:SSZ");
    }
    let digits = |from: usize, n: usize| -> Option<u32> {
        b[from..from + n].iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let sep = |at: usize, want: u8| b[at] == want;
    if !(sep(4, b'-') && sep(7, b'-') && sep(10, b'T') && sep(13, b':') && sep(16, b':')) {
        return Err("not YYYY-MM-DDTHH:MM:SS (upper-case T)");
    }
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) = (
        digits(0, 4),
        digits(5, 2),
        digits(8, 2),
        digits(11, 2),
        digits(14, 2),
        digits(17, 2),
    ) else {
        return Err("date or time fields are not zero-padded digits");
    };
    if !(1..=12).contains(&month) {
        return Err("month out of range");
    }
    if day == 0 || day > days_in_month(year, month) {
        return Err("day out of range for the month");
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err("time of day out of range");
    }
    let mut rest = &b[19..];
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return Err("'.' without fraction digits");
        }
        rest = &frac[n..];
    }
    let offset_min = match rest {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let two = |a: u8, c: u8| {
                (a.is_ascii_digit() && c.is_ascii_digit())
                    .then(|| u32::from(a - b'0') * 10 + u32::from(c - b'0'))
            };
            let (Some(h), Some(m)) = (two(*h1, *h2), two(*m1, *m2)) else {
                return Err("timezone offset is not ±HH:MM");
            };
            if h > 23 || m > 59 {
                return Err("timezone offset out of range");
            }
            if *sign == b'-' && h == 0 && m == 0 {
                return Err("\"-00:00\" is not an allowed timezone");
            }
            if *sign == b'+' { h * 60 + m } else { 0 }
        }
        _ => return Err("timezone must be 'Z' or ±HH:MM"),
    };
    // Year 0000 with a positive offset can name an instant before year zero.
    if year == 0 && month == 1 && day == 1 && hour * 60 + minute < offset_min {
        return Err("before year 0000 once the offset is applied");
    }
    Ok(())
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors from the atproto interop test files (CC0), repository
    // `bluesky-social/atproto-interop-tests`, `syntax/datetime_syntax_valid.txt`,
    // `datetime_syntax_invalid.txt` and `datetime_parse_invalid.txt` (commit 056e5741).
    const VALID: &[&str] = &[
        "1985-04-12T23:20:50.123Z",
        "1985-04-12T23:20:50.000Z",
        "2000-01-01T00:00:00.000Z",
        "1985-04-12T23:20:50.123456Z",
        "1985-04-12T23:20:50.1235678912345Z",
        "1985-04-12T23:20:50Z",
        "1985-04-12T23:20:50.0Z",
        "1985-04-12T23:20:50.123+00:00",
        "1985-04-12T23:20:50.123-07:00",
        "1985-04-12T23:20:50.123+01:45",
        "0985-04-12T23:20:50.123-07:00",
        "0123-01-01T00:00:00.000Z",
        "1985-04-12T23:20:50.123456789012Z",
        "0000-01-01T00:00:00.000Z",
        "3001-12-31T23:00:00.000Z",
        "2024-02-29T00:00:00Z",
        // Real: the relay's `time` of an identity event in the production corpus.
        "2026-07-04T14:38:07.877Z",
    ];

    const INVALID: &[&str] = &[
        "",
        "1985-04-12T23:20:50.123z",
        "01985-04-12T23:20:50.123Z",
        "985-04-12T23:20:50.123Z",
        "1985-04-12T23:20:50.Z",
        "1985-04-32T23;20:50.123Z",
        "1985—04-32T23;20:50.123Z",
        " 1985-04-12T23:20:50.123Z",
        "1985-04-12T23:20:50.123Z ",
        "1985-04-12T 23:20:50.123Z",
        "1985-4-12T23:20:50.123Z",
        "1985-04-2T23:20:50.123Z",
        "1985-04-12T3:20:50.123Z",
        "1985-04-12T23:20:5.123Z",
        "1985-004-12T23:20:50.123Z",
        "1985-04-12T023:20:50.123Z",
        "1985-04-12t23:20:50.123Z",
        "1985-04-12T23:20:50.123-00:00",
        "1985-04-12_23:20:50.123Z",
        "1985-04-12 23:20:50.123Z",
        "1985-04-274T23:20:50.123Z",
        "1985-04-12T23:20:50.123",
        "1985-04-12T23:20:50",
        "1985-04-12",
        "1985-04-12T23:20Z",
        "1985-04-12T23:20:5Z",
        "+001985-04-12T23:20:50.123Z",
        "23:20:50.123Z",
        "1985-04-12T23:20:50.123+00",
        "1985-04-12T23:20:50.123+00:0",
        "1985-04-12T23:20:50.123+0:00",
        "1985-04-12T23:20:50.123+0000",
        "1985-04-12T23:20:50.123+",
        "1985-04-12T23:20:50.123-",
        "-000001-12-31T23:00:00.000Z",
        // semantically invalid (datetime_parse_invalid.txt)
        "1985-00-12T23:20:50.123Z",
        "1985-04-00T23:20:50.123Z",
        "1985-13-12T23:20:50.123Z",
        "1985-04-12T25:20:50.123Z",
        "1985-04-12T23:99:50.123Z",
        "1985-04-12T23:20:61.123Z",
        "0000-01-01T00:00:00+01:00",
        // ours
        "2023-02-29T00:00:00Z",
        "1985-04-31T00:00:00Z",
        "1985-04-12T23:20:50.123+24:00",
        "2026-07-04T14:38:07.877Z\u{0}",
    ];

    #[test]
    fn interop_vectors() {
        for s in VALID {
            assert_eq!(check_datetime(s), Ok(()), "{s:?}");
        }
        for s in INVALID {
            assert!(check_datetime(s).is_err(), "{s:?} must be refused");
        }
        let long = format!("2026-07-04T14:38:07.{}Z", "1".repeat(64));
        assert_eq!(check_datetime(&long), Err("longer than 64 chars"));
    }
}
