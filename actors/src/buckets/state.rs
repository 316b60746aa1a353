//! The stored form of one (bucket, DID) state: the value of field `<did>` in
//! `<prefix>bucket:<id>:state`, written in the same atomic commit as the batch that changed
//! it, read back at start.
//!
//! `1|<epoch>|<last_left>|<entered_at>|<flags>|<leaves>`: times in unix µs (empty = none);
//! flags `h` (criteria held at the last evaluation), `s` (suppressed membership), `c` / `w`
//! (a leave deferred by `min_dwell`, reason `criteria` / `window_expired`); leaves are the
//! kept event times of each condition, `,`-separated, conditions `/`-separated, empty when
//! none is kept. A DID without a membership and without kept events is stored as
//! `1|<epoch>|<last_left>|||`.
//!
//! Failure: a value this version cannot read is an error naming the field; the caller
//! refuses to start (guessing would repeat or lose transitions).

use super::criteria::CompiledBucket;
use super::membership::{Active, Cause, Member, Slot};

const VERSION: &str = "1";

fn opt(t: Option<u64>) -> String {
    t.map(|t| t.to_string()).unwrap_or_default()
}

/// The stored text of a slot.
pub fn encode(slot: &Slot) -> String {
    match slot {
        Slot::Rest { epoch, last_left } => format!("{VERSION}|{epoch}|{}|||", opt(*last_left)),
        Slot::Active(a) => {
            let mut flags = String::new();
            if a.holds {
                flags.push('h');
            }
            if a.member.is_some_and(|m| m.suppressed) {
                flags.push('s');
            }
            match a.pending {
                Some(Cause::Criteria) => flags.push('c'),
                Some(Cause::WindowExpired) => flags.push('w'),
                None => {}
            }
            let leaves = if a.times.is_empty() {
                String::new()
            } else {
                let mut parts = Vec::with_capacity(a.lens.len());
                let mut start = 0usize;
                for len in a.lens.iter() {
                    let end = start + usize::from(*len);
                    let times: Vec<String> =
                        a.times[start..end].iter().map(u64::to_string).collect();
                    parts.push(times.join(","));
                    start = end;
                }
                parts.join("/")
            };
            format!(
                "{VERSION}|{}|{}|{}|{flags}|{leaves}",
                a.epoch,
                opt(a.last_left),
                opt(a.member.map(|m| m.entered_at)),
            )
        }
    }
}

fn number(s: &str, what: &str) -> Result<Option<u64>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|_| format!("{what} {s:?} is not a number"))
}

/// Reads a stored slot of bucket `b`.
pub fn decode(text: &str, b: &CompiledBucket) -> Result<Slot, String> {
    let parts: Vec<&str> = text.split('|').collect();
    let [version, epoch, last_left, entered_at, flags, leaves] = parts.as_slice() else {
        return Err(format!(
            "expected 6 '|'-separated parts, found {}",
            parts.len()
        ));
    };
    if *version != VERSION {
        return Err(format!(
            "unknown state version {version:?} (this build reads {VERSION:?})"
        ));
    }
    let epoch: u32 = epoch
        .parse()
        .map_err(|_| format!("epoch {epoch:?} is not a number"))?;
    let last_left = number(last_left, "last_left")?;
    let entered_at = number(entered_at, "entered_at")?;
    if entered_at.is_none() && flags.is_empty() && leaves.is_empty() {
        return Ok(Slot::Rest { epoch, last_left });
    }
    let mut a = Active::new(b, epoch, last_left);
    for f in flags.chars() {
        match f {
            'h' => a.holds = true,
            's' | 'c' | 'w' => {}
            other => return Err(format!("unknown flag {other:?}")),
        }
    }
    a.member = entered_at.map(|t| Member {
        entered_at: t,
        suppressed: flags.contains('s'),
    });
    a.pending = if flags.contains('c') {
        Some(Cause::Criteria)
    } else if flags.contains('w') {
        Some(Cause::WindowExpired)
    } else {
        None
    };
    if a.pending.is_some() && a.member.is_none() {
        return Err("a deferred leave without a membership".to_owned());
    }
    if !leaves.is_empty() {
        let lists: Vec<&str> = leaves.split('/').collect();
        if lists.len() != b.leaves.len() {
            return Err(format!(
                "{} condition lists for {} conditions",
                lists.len(),
                b.leaves.len()
            ));
        }
        for (i, list) in lists.iter().enumerate() {
            if list.is_empty() {
                continue;
            }
            let times = list
                .split(',')
                .map(|t| {
                    t.parse::<u64>()
                        .map_err(|_| format!("event time {t:?} is not a number"))
                })
                .collect::<Result<Vec<u64>, String>>()?;
            if times.len() > usize::from(b.leaves[i].cap) || times.windows(2).any(|w| w[0] > w[1]) {
                return Err(format!(
                    "condition {i}: more times than it keeps, or out of order"
                ));
            }
            a.lens[i] = u16::try_from(times.len()).unwrap_or(u16::MAX);
            a.times.extend(times);
        }
    }
    Ok(Slot::Active(Box::new(a)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buckets::config::{
        BucketDef, Check, CollectionPattern, CountOperator, Criteria, EntryLimit, EventCondition,
    };
    use std::time::Duration;

    fn bucket() -> CompiledBucket {
        let leaf = |check| {
            Criteria::Event(EventCondition {
                collection: CollectionPattern::Exact("a.b.c".into()),
                operations: vec![],
                record: vec![],
                check,
                within: Some(Duration::from_secs(1)),
            })
        };
        CompiledBucket::compile(&BucketDef {
            id: "b".into(),
            enabled: true,
            criteria: Criteria::All(vec![
                leaf(Check::Count {
                    operator: CountOperator::Gte,
                    value: 2,
                }),
                leaf(Check::NotExists),
            ]),
            entry_limit: EntryLimit::Unlimited,
            min_dwell: None,
            max_dwell: None,
        })
    }

    #[test]
    fn round_trips() {
        let b = bucket();
        let rest = Slot::Rest {
            epoch: 3,
            last_left: Some(99),
        };
        assert_eq!(encode(&rest), "1|3|99|||");
        assert_eq!(decode(&encode(&rest), &b), Ok(rest));
        let mut a = Active::new(&b, 2, None);
        a.times = vec![10, 20, 15];
        a.lens = vec![2, 1].into_boxed_slice();
        a.holds = true;
        a.member = Some(Member {
            entered_at: 20,
            suppressed: true,
        });
        a.pending = Some(Cause::WindowExpired);
        let slot = Slot::Active(Box::new(a));
        let text = encode(&slot);
        assert_eq!(text, "1|2||20|hsw|10,20/15");
        assert_eq!(decode(&text, &b), Ok(slot));
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        let b = bucket();
        for bad in [
            "2|1||||",
            "1|x||||",
            "1|1|||h|1/2/3",
            "1|1|||q|",
            "1|1|||c|",
            "1|1|||h|1,2,3,4/",
            "1|1|||h|2,1/",
        ] {
            assert!(decode(bad, &b).is_err(), "{bad}");
        }
    }
}
