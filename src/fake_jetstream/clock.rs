//! The fake host's own clock: every `time_us` it serves is the source's shifted by
//! `clock_offset_us`. Lines are rewritten once, at load, by replacing only the digits of the
//! top-level `time_us` (found by a scan that tracks nesting and strings), so the rest of each
//! line stays byte for byte what the source holds, records included.
//!
//! Failure: none. A line without a top-level `time_us` number is left as it is.

/// `t` shifted by `offset_us`, saturating at 0 and `u64::MAX`.
pub(crate) fn shifted(t: u64, offset_us: i64) -> u64 {
    if offset_us >= 0 {
        t.saturating_add(offset_us.unsigned_abs())
    } else {
        t.saturating_sub(offset_us.unsigned_abs())
    }
}

/// The line with its top-level `time_us` number shifted, or `None` when there is nothing to
/// change (no offset, or no top-level `time_us` number).
pub(crate) fn shift_time_us(raw: &[u8], offset_us: i64) -> Option<Vec<u8>> {
    if offset_us == 0 {
        return None;
    }
    let (start, end) = top_level_time_us(raw)?;
    let t: u64 = std::str::from_utf8(&raw[start..end]).ok()?.parse().ok()?;
    let mut out = Vec::with_capacity(raw.len() + 4);
    out.extend_from_slice(&raw[..start]);
    out.extend_from_slice(shifted(t, offset_us).to_string().as_bytes());
    out.extend_from_slice(&raw[end..]);
    Some(out)
}

/// Byte range of the digits of the top-level `"time_us": N` of a JSON object, found by a
/// scan that tracks nesting and strings (a `time_us` inside a record is not touched).
fn top_level_time_us(b: &[u8]) -> Option<(usize, usize)> {
    let skip_ws = |mut i: usize| {
        while b.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        i
    };
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                let start = i + 1;
                let mut j = start;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                if j >= b.len() {
                    return None;
                }
                i = j + 1;
                if depth == 1 && &b[start..j] == b"time_us" {
                    let colon = skip_ws(i);
                    if b.get(colon) == Some(&b':') {
                        let digits = skip_ws(colon + 1);
                        let mut end = digits;
                        while b.get(end).is_some_and(u8::is_ascii_digit) {
                            end += 1;
                        }
                        if end > digits {
                            return Some((digits, end));
                        }
                    }
                }
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_offset_rewrites_only_the_top_level_time_us() {
        let line = r#"{"did":"did:plc:a","commit":{"record":{"time_us":5,"text":"\"time_us\":7"}},"time_us" : 1000,"kind":"commit"}"#;
        let lines =
            super::super::feed::lines_from_strings(&[line.to_owned(), "junk".to_owned()], -400);
        assert_eq!(lines[0].time_us, 600);
        assert_eq!(
            std::str::from_utf8(lines[0].as_bytes()).expect("utf-8"),
            line.replace("1000", "600")
        );
        assert_eq!(
            lines[1].time_us, 600,
            "a non-event line follows the shifted event"
        );
        let later = super::super::feed::lines_from_strings(&[line.to_owned()], 2_000_000);
        assert_eq!(later[0].time_us, 2_001_000);
        assert!(top_level_time_us(br#"{"a":{"time_us":1}}"#).is_none());
        assert!(top_level_time_us(br#"{"kind":"time_us","x":1}"#).is_none());
    }
}
