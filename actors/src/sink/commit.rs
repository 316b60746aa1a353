//! The atomic commit of one batch, as one Lua script (DESIGN.md §2): for every entry, add its
//! identity to the dedupe index (`ZADD NX`) and XADD it only if the identity was new; prune
//! the index below the dedupe window; store the cursor (never moving it back). Either all of
//! it lands or none (the `#!lua` shebang makes Redis refuse the whole script up front when it
//! is out of memory, instead of failing half-way).
//!
//! Pure: key names, argument layout and the script text. The writer actor runs it.

use crate::messages::{Batch, Item};
use crate::model::job::{entry_for_dead, entry_for_event, entry_for_transition};
use crate::model::{StateOp, StreamEntry};

/// Redis keys of one ingestor, all under its prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    pub prefix: String,
    pub dedupe: String,
    pub cursor: String,
    /// Token of the last committed batch: lets commits be pipelined safely.
    pub chain: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
            dedupe: format!("{prefix}dedupe"),
            cursor: format!("{prefix}cursor"),
            chain: format!("{prefix}commit:chain"),
        }
    }

    /// The key of a stream, from its name after the prefix (`records`, a route's name …).
    pub fn stream(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
}

/// KEYS: 1 dedupe zset, 2 cursor, 3 chain, 4.. the streams this batch writes to, then the
/// hashes its state operations touch.
/// ARGV: 1 prune-below score ("" = none), 2 cursor ("" = none), 3 the token the chain must
/// hold before this commit ("" = unchecked), 4 this batch's token, 5 entry count, then per
/// entry: stream number (1.. → KEYS[3 + n]), identity, score, field count n, then n
/// field/value pairs; then the state-operation count, then per operation: KEYS index,
/// field, `s` (HSET) or `d` (HDEL), value. Returns {written, skipped}.
///
/// The chain check makes pipelining safe: several commits may be in flight on one
/// connection, and each refuses to apply (before writing anything) unless its predecessor
/// landed, so a failed commit can never be overtaken by its successor (which would store a
/// cursor past events that are not in Redis). No trimming here: on Redis 7 `MAXLEN` would
/// delete entries consumer groups have not read; the retention keeper trims.
pub const COMMIT_SCRIPT: &str = r#"#!lua
if ARGV[3] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[3] then
  return redis.error_reply('CHAIN predecessor ' .. ARGV[3] .. ' is not committed')
end
local written, skipped = 0, 0
local i = 6
for _ = 1, tonumber(ARGV[5]) do
  local s = tonumber(ARGV[i])
  local nf = tonumber(ARGV[i + 3])
  local first = i + 4
  local last = first + 2 * nf - 1
  if redis.call('ZADD', KEYS[1], 'NX', ARGV[i + 2], ARGV[i + 1]) == 1 then
    redis.call('XADD', KEYS[3 + s], '*', unpack(ARGV, first, last))
    written = written + 1
  else
    skipped = skipped + 1
  end
  i = last + 1
end
local nops = tonumber(ARGV[i] or '0')
i = i + 1
for _ = 1, nops do
  local key = KEYS[tonumber(ARGV[i])]
  if ARGV[i + 2] == 's' then
    redis.call('HSET', key, ARGV[i + 1], ARGV[i + 3])
  else
    redis.call('HDEL', key, ARGV[i + 1])
  end
  i = i + 4
end
if ARGV[1] ~= '' then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
end
if ARGV[2] ~= '' then
  local old = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
  if tonumber(ARGV[2]) > old then
    redis.call('SET', KEYS[2], ARGV[2])
  end
end
redis.call('SET', KEYS[3], ARGV[4])
return {written, skipped}
"#;

/// Index in the ARGV of [`COMMIT_SCRIPT`] (0-based) of the expected predecessor token,
/// filled in when the commit is sent.
pub const EXPECTED_ARG: usize = 2;

/// Limits that shape the arguments.
#[derive(Debug, Clone, Copy)]
pub struct CommitLimits {
    pub dedupe_window_us: u64,
}

/// The stream entries of a batch, in order (state operations are taken by
/// [`state_ops_of`]).
pub fn entries_of(batch: &Batch) -> Vec<StreamEntry> {
    let fallback = batch.cursor.unwrap_or(0);
    batch
        .items
        .iter()
        .filter_map(|item| match item {
            Item::Event(e) => Some(entry_for_event(e, &batch.source)),
            Item::Dead(d) => {
                let hash = hex::encode(&d.frame_sha256[..16]);
                Some(entry_for_dead(d, &batch.source, fallback, &hash))
            }
            Item::Transition(t) => Some(entry_for_transition(t)),
            Item::State(_) => None,
        })
        .collect()
}

/// The state operations of a batch, in order.
pub fn state_ops_of(batch: &Batch) -> Vec<&StateOp> {
    batch
        .items
        .iter()
        .filter_map(|item| match item {
            Item::State(op) => Some(op),
            _ => None,
        })
        .collect()
}

/// A batch's script invocation: its KEYS and ARGV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub keys: Vec<String>,
    pub args: Vec<String>,
}

/// The KEYS and ARGV of [`COMMIT_SCRIPT`] for these entries.
pub fn invocation(
    keys: &Keys,
    entries: Vec<StreamEntry>,
    state: &[&StateOp],
    cursor: Option<u64>,
    token: &str,
    limits: CommitLimits,
) -> Invocation {
    // The distinct streams of this batch, in first-use order.
    let mut streams: Vec<&str> = Vec::new();
    let mut index = Vec::with_capacity(entries.len());
    for e in &entries {
        let name = e.stream_name();
        let at = match streams.iter().position(|n| *n == name) {
            Some(at) => at,
            None => {
                streams.push(name);
                streams.len() - 1
            }
        };
        index.push(at + 1);
    }
    let mut k = Vec::with_capacity(3 + streams.len());
    k.push(keys.dedupe.clone());
    k.push(keys.cursor.clone());
    k.push(keys.chain.clone());
    k.extend(streams.iter().map(|n| keys.stream(n)));

    let per_entry: usize = entries.iter().map(|e| 4 + 2 * e.fields.len()).sum();
    let mut args = Vec::with_capacity(3 + per_entry);
    args.push(
        cursor
            .map(|c| c.saturating_sub(limits.dedupe_window_us).to_string())
            .unwrap_or_default(),
    );
    args.push(cursor.map(|c| c.to_string()).unwrap_or_default());
    args.push(String::new());
    args.push(token.to_owned());
    args.push(entries.len().to_string());
    let mut next = index.into_iter();
    for e in entries {
        args.push(next.next().unwrap_or(1).to_string());
        args.push(e.identity);
        args.push(e.score.to_string());
        args.push(e.fields.len().to_string());
        for (name, value) in e.fields {
            args.push(name.to_owned());
            args.push(value);
        }
    }
    args.push(state.len().to_string());
    for op in state {
        let full = keys.stream(&op.key);
        let at = match k.iter().position(|existing| *existing == full) {
            Some(at) => at + 1,
            None => {
                k.push(full);
                k.len()
            }
        };
        args.push(at.to_string());
        args.push(op.field.clone());
        match &op.value {
            Some(v) => {
                args.push("s".to_owned());
                args.push(v.clone());
            }
            None => {
                args.push("d".to_owned());
                args.push(String::new());
            }
        }
    }
    Invocation { keys: k, args }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::StreamKind;

    fn entry(stream: StreamKind, route: Option<&str>, id: &str) -> StreamEntry {
        StreamEntry {
            stream,
            route: route.map(Into::into),
            identity: id.into(),
            score: 10,
            fields: vec![("a", "1".into()), ("b", "2".into())],
        }
    }

    #[test]
    fn invocation_follows_the_documented_layout() {
        let limits = CommitLimits {
            dedupe_window_us: 3,
        };
        let entries = [
            entry(StreamKind::Records, None, "x"),
            entry(StreamKind::Dead, None, "y"),
            entry(StreamKind::Records, Some("feed"), "z"),
            entry(StreamKind::Records, None, "w"),
        ];
        let set = StateOp {
            key: "bucket:b:state".into(),
            field: "did:x".into(),
            value: Some("{}".into()),
        };
        let del = StateOp {
            key: "bucket:b:state".into(),
            field: "did:y".into(),
            value: None,
        };
        let inv = invocation(
            &Keys::new("jsi:"),
            entries.to_vec(),
            &[&set, &del],
            Some(50),
            "e:7",
            limits,
        );
        assert_eq!(
            inv.keys,
            [
                "jsi:dedupe",
                "jsi:cursor",
                "jsi:commit:chain",
                "jsi:records",
                "jsi:dead",
                "jsi:feed",
                "jsi:bucket:b:state"
            ]
        );
        assert_eq!(&inv.args[..5], &["47", "50", "", "e:7", "4"]);
        assert_eq!(
            inv.args[EXPECTED_ARG], "",
            "the predecessor token is filled in at send time"
        );
        assert_eq!(&inv.args[5..13], &["1", "x", "10", "2", "a", "1", "b", "2"]);
        assert_eq!(&inv.args[13..15], &["2", "y"]);
        assert_eq!(&inv.args[21..23], &["3", "z"]);
        assert_eq!(&inv.args[29..31], &["1", "w"]);
        assert_eq!(
            &inv.args[37..],
            &["2", "7", "did:x", "s", "{}", "7", "did:y", "d", ""]
        );
        assert_eq!(inv.args.len(), 5 + 4 * 8 + 1 + 2 * 4);
    }

    #[test]
    fn no_cursor_means_no_prune_and_no_cursor_update() {
        let inv = invocation(
            &Keys::new("p:"),
            Vec::new(),
            &[],
            None,
            "t",
            CommitLimits {
                dedupe_window_us: 3,
            },
        );
        assert_eq!(inv.args, vec!["", "", "", "t", "0", "0"]);
        assert_eq!(inv.keys, ["p:dedupe", "p:cursor", "p:commit:chain"]);
    }
}
