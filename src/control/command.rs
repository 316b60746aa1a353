//! One entry of the control stream → a [`Command`], or the reason it is not one
//! ([`Rejected`]: a metric label and a message naming the field and the problem). Pure: the
//! reader in `control.rs` acks and counts.

/// A parsed command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Restart { cursor: Option<u64> },
    Pause,
    Resume,
}

/// Why an entry is not a command: `reason` labels the metric, `message` goes into the ack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub reason: &'static str,
    pub message: String,
}

fn rejected(reason: &'static str, message: String) -> Rejected {
    Rejected { reason, message }
}

/// Bytes that are not text, for a message: the first 16 in hex and the length.
fn hex_preview(bytes: &[u8]) -> String {
    let head: Vec<String> = bytes.iter().take(16).map(|b| format!("{b:02x}")).collect();
    let more = if bytes.len() > 16 { " …" } else { "" };
    format!("bytes {}{more}, {} in all", head.join(" "), bytes.len())
}

impl Command {
    /// From an entry's fields, as Redis stores them (any bytes): `cmd` (case-insensitive
    /// value) and, for `restart` only, `cursor`. Anything else is refused with the field and
    /// the problem named: a value or name that is not UTF-8, an unknown or repeated field, a
    /// missing or unknown `cmd`, a `cursor` that is not a `time_us`.
    pub fn parse(fields: &[(Vec<u8>, Vec<u8>)]) -> Result<Command, Rejected> {
        let mut cmd: Option<&str> = None;
        let mut cursor: Option<&str> = None;
        for (name, value) in fields {
            let name = std::str::from_utf8(name).map_err(|_| {
                rejected(
                    "not_utf8",
                    format!("a field name is not UTF-8 ({})", hex_preview(name)),
                )
            })?;
            let value = std::str::from_utf8(value).map_err(|_| {
                rejected(
                    "not_utf8",
                    format!("field {name:?} is not UTF-8 ({})", hex_preview(value)),
                )
            })?;
            let slot = match name {
                "cmd" => &mut cmd,
                "cursor" => &mut cursor,
                other => {
                    return Err(rejected(
                        "unknown_field",
                        format!("unknown field {other:?} (fields: cmd, cursor)"),
                    ));
                }
            };
            if slot.replace(value.trim()).is_some() {
                return Err(rejected(
                    "duplicate_field",
                    format!("field {name:?} appears twice"),
                ));
            }
        }
        let command = match cmd.map(str::to_ascii_lowercase).as_deref() {
            Some("restart") => {
                let cursor = match cursor {
                    None | Some("") => None,
                    Some(c) => Some(c.parse::<u64>().map_err(|_| {
                        rejected(
                            "bad_cursor",
                            format!("field \"cursor\" {c:?} is not a time_us"),
                        )
                    })?),
                };
                return Ok(Command::Restart { cursor });
            }
            Some("pause") => Command::Pause,
            Some("resume") => Command::Resume,
            Some(other) => {
                return Err(rejected(
                    "unknown_cmd",
                    format!("unknown cmd {other:?} (restart, pause, resume)"),
                ));
            }
            None => return Err(rejected("missing_cmd", "missing field \"cmd\"".into())),
        };
        if cursor.is_some() {
            return Err(rejected(
                "unknown_field",
                format!(
                    "field \"cursor\" only goes with cmd restart, not {}",
                    command.name()
                ),
            ));
        }
        Ok(command)
    }

    pub(super) fn name(&self) -> &'static str {
        match self {
            Command::Restart { .. } => "restart",
            Command::Pause => "pause",
            Command::Resume => "resume",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(pairs: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    fn reason(fields: &[(Vec<u8>, Vec<u8>)]) -> &'static str {
        Command::parse(fields).expect_err("refused").reason
    }

    #[test]
    fn commands_parse_and_bad_ones_say_why() {
        assert_eq!(Command::parse(&f(&[("cmd", "pause")])), Ok(Command::Pause));
        assert_eq!(
            Command::parse(&f(&[("cmd", "RESUME")])),
            Ok(Command::Resume)
        );
        assert_eq!(
            Command::parse(&f(&[("cmd", "restart")])),
            Ok(Command::Restart { cursor: None })
        );
        assert_eq!(
            Command::parse(&f(&[("cmd", "restart"), ("cursor", "1700000000000000")])),
            Ok(Command::Restart {
                cursor: Some(1_700_000_000_000_000)
            })
        );
        let e = Command::parse(&f(&[("cmd", "restart"), ("cursor", "soon")])).expect_err("bad");
        assert_eq!(e.reason, "bad_cursor");
        assert!(e.message.contains("\"cursor\" \"soon\""), "{}", e.message);
        assert_eq!(reason(&f(&[("cmd", "drop-tables")])), "unknown_cmd");
        assert_eq!(reason(&f(&[])), "missing_cmd");
        assert_eq!(reason(&f(&[("verb", "pause")])), "unknown_field");
        assert_eq!(
            reason(&f(&[("cmd", "pause"), ("cursor", "1")])),
            "unknown_field"
        );
        assert_eq!(
            reason(&f(&[("cmd", "pause"), ("cmd", "resume")])),
            "duplicate_field"
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_are_refused_with_the_field_named() {
        let e = Command::parse(&[(b"cmd".to_vec(), vec![0xff, 0xfe, b'p'])]).expect_err("bad");
        assert_eq!(e.reason, "not_utf8");
        assert_eq!(
            e.message,
            "field \"cmd\" is not UTF-8 (bytes ff fe 70, 3 in all)"
        );
        let e = Command::parse(&[(vec![0xc3], b"pause".to_vec())]).expect_err("bad");
        assert_eq!(e.reason, "not_utf8");
        assert!(e.message.contains("field name"), "{}", e.message);
        let long = vec![0xffu8; 40];
        let e = Command::parse(&[(b"cmd".to_vec(), long)]).expect_err("bad");
        assert!(e.message.ends_with("…, 40 in all)"), "{}", e.message);
    }
}
