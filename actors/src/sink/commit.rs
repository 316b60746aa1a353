//! The atomic commit of one batch, as one Lua script (DESIGN.md §2): for every entry, add its
//! identity to the dedupe index (`ZADD NX`) and XADD it only if the identity was new; prune
//! the index below the dedupe window; store the cursor (never moving it back). Either all of
//! it lands or none (the `#!lua` shebang makes Redis refuse the whole script up front when it
//! is out of memory, instead of failing half-way).
//!
//! Pure: key names, argument layout and the script text. The writer actor runs it.

use sha2::{Digest, Sha256};

use crate::messages::{Batch, Item};
use crate::model::job::{entry_for_dead, entry_for_event};
use crate::model::{StreamEntry, StreamKind};

/// Redis keys of one ingestor, all under its prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    pub records: String,
    pub identity: String,
    pub dead: String,
    pub dedupe: String,
    pub cursor: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            records: format!("{prefix}records"),
            identity: format!("{prefix}identity"),
            dead: format!("{prefix}dead"),
            dedupe: format!("{prefix}dedupe"),
            cursor: format!("{prefix}cursor"),
        }
    }

    pub fn stream(&self, kind: StreamKind) -> &str {
        match kind {
            StreamKind::Records => &self.records,
            StreamKind::Identity => &self.identity,
            StreamKind::Dead => &self.dead,
        }
    }
}

/// KEYS: 1 records, 2 identity, 3 dead, 4 dedupe zset, 5 cursor.
/// ARGV: 1..3 MAXLEN per stream ("0" = untrimmed), 4 prune-below score ("" = none),
/// 5 cursor ("" = none), 6 entry count, then per entry: stream index (1..3), identity,
/// score, field count n, then n field/value pairs.
/// Returns {written, skipped}.
pub const COMMIT_SCRIPT: &str = r#"#!lua
local written, skipped = 0, 0
local i = 7
for _ = 1, tonumber(ARGV[6]) do
  local s = tonumber(ARGV[i])
  local nf = tonumber(ARGV[i + 3])
  local first = i + 4
  local last = first + 2 * nf - 1
  if redis.call('ZADD', KEYS[4], 'NX', ARGV[i + 2], ARGV[i + 1]) == 1 then
    if ARGV[s] == '0' then
      redis.call('XADD', KEYS[s], '*', unpack(ARGV, first, last))
    else
      redis.call('XADD', KEYS[s], 'MAXLEN', '~', ARGV[s], '*', unpack(ARGV, first, last))
    end
    written = written + 1
  else
    skipped = skipped + 1
  end
  i = last + 1
end
if ARGV[4] ~= '' then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. ARGV[4])
end
if ARGV[5] ~= '' then
  local old = tonumber(redis.call('GET', KEYS[5]) or '0') or 0
  if tonumber(ARGV[5]) > old then
    redis.call('SET', KEYS[5], ARGV[5])
  end
end
return {written, skipped}
"#;

/// Limits that shape the arguments.
#[derive(Debug, Clone, Copy)]
pub struct CommitLimits {
    pub max_len: u64,
    pub dead_max_len: u64,
    pub dedupe_window_us: u64,
}

/// The entries of a batch, in order.
pub fn entries_of(batch: &Batch) -> Vec<StreamEntry> {
    let fallback = batch.cursor.unwrap_or(0);
    batch
        .items
        .iter()
        .map(|item| match item {
            Item::Event(e) => entry_for_event(e, &batch.source),
            Item::Dead(d) => {
                let digest = Sha256::digest(d.raw.as_bytes());
                let hash = hex::encode(&digest[..16]);
                entry_for_dead(d, &batch.source, fallback, &hash)
            }
        })
        .collect()
}

/// The ARGV of [`COMMIT_SCRIPT`] for these entries.
pub fn script_args(
    entries: &[StreamEntry],
    cursor: Option<u64>,
    limits: CommitLimits,
) -> Vec<String> {
    let per_entry: usize = entries.iter().map(|e| 4 + 2 * e.fields.len()).sum();
    let mut args = Vec::with_capacity(6 + per_entry);
    args.push(limits.max_len.to_string());
    args.push(limits.max_len.to_string());
    args.push(limits.dead_max_len.to_string());
    args.push(
        cursor
            .map(|c| c.saturating_sub(limits.dedupe_window_us).to_string())
            .unwrap_or_default(),
    );
    args.push(cursor.map(|c| c.to_string()).unwrap_or_default());
    args.push(entries.len().to_string());
    for e in entries {
        let idx = match e.stream {
            StreamKind::Records => "1",
            StreamKind::Identity => "2",
            StreamKind::Dead => "3",
        };
        args.push(idx.to_owned());
        args.push(e.identity.clone());
        args.push(e.score.to_string());
        args.push(e.fields.len().to_string());
        for (k, v) in &e.fields {
            args.push((*k).to_owned());
            args.push(v.clone());
        }
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(stream: StreamKind, id: &str) -> StreamEntry {
        StreamEntry {
            stream,
            identity: id.into(),
            score: 10,
            fields: vec![("a", "1".into()), ("b", "2".into())],
        }
    }

    #[test]
    fn args_follow_the_documented_layout() {
        let limits = CommitLimits {
            max_len: 100,
            dead_max_len: 5,
            dedupe_window_us: 3,
        };
        let args = script_args(
            &[
                entry(StreamKind::Records, "x"),
                entry(StreamKind::Dead, "y"),
            ],
            Some(50),
            limits,
        );
        assert_eq!(&args[..6], &["100", "100", "5", "47", "50", "2"]);
        assert_eq!(&args[6..14], &["1", "x", "10", "2", "a", "1", "b", "2"]);
        assert_eq!(&args[14..16], &["3", "y"]);
        assert_eq!(args.len(), 6 + 2 * 8);
    }

    #[test]
    fn no_cursor_means_no_prune_and_no_cursor_update() {
        let limits = CommitLimits {
            max_len: 0,
            dead_max_len: 0,
            dedupe_window_us: 3,
        };
        let args = script_args(&[], None, limits);
        assert_eq!(args, vec!["0", "0", "0", "", "", "0"]);
    }

    #[test]
    fn keys_share_the_prefix() {
        let k = Keys::new("jsi:");
        assert_eq!(
            (k.records.as_str(), k.cursor.as_str()),
            ("jsi:records", "jsi:cursor")
        );
        assert_eq!(k.stream(StreamKind::Dead), "jsi:dead");
    }
}
