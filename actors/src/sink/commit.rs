//! The atomic commit of one batch (docs/design.md §2), in two steps on the writer's connection:
//!
//! 1. **Probe** (read-only): `ZMSCORE dedupe <ids>` tells which entries were already
//!    committed (rewind overlap, replays).
//! 2. **Commit** (one `MULTI … EXEC`): an `XADD` per new entry, then [`FINALIZE_SCRIPT`],
//!    which checks every key's type and that the chain key holds the predecessor's token,
//!    adds the new identities to the dedupe index, applies the bucket state writes, prunes the dedupe
//!    index below the window, stores the cursor (never moving it back) and this batch's
//!    token. Redis runs the transaction as one unit, so a reader never sees the cursor ahead
//!    of the entries, and a crash leaves all of it or none (AOF writes it as one block).
//!
//! Why not one Lua script per batch (the first design): every argument of a script is
//! converted into a Lua string and back into a Redis object, which made Redis spend
//! ~10–13 µs per event against ~4 µs for the same XADDs sent plainly (docs/performance.md).
//! Only the small finalize step is Lua here.
//!
//! Why it stays exactly-once with several commits in flight: `EXEC` cannot skip commands, so
//! a commit whose predecessor did not land (failed, out of memory, connection lost, another
//! writer) undoes itself inside its own transaction: the finalize script, last in it, sees the
//! chain not holding the predecessor's token, deletes the entries this transaction just added
//! (the newest `n` of each stream: nothing else can run inside a transaction), and applies
//! nothing else (its identities were never added). No client ever sees those
//! entries, and the writer retries from the first batch that did not land, in order. The same
//! undo runs when a key has the wrong type (an operator's mistake). A probe that ran before an
//! in-flight predecessor committed does not see that predecessor's identities; the writer
//! adds them from memory ([`Encoded::identity`]).
//!
//! Pure: key names, commands and reply parsing. The writer actor sends them.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::BuildHasher;
use std::sync::Arc;

use foldhash::fast::RandomState;
use redis::{Cmd, Pipeline, Value};

use crate::messages::{Batch, Item};
use crate::model::job::{EntrySink, join_into, write_dead, write_event, write_transition};
use crate::model::{StateOp, StreamKind};

/// Redis keys of one ingestor, all under its prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    pub prefix: String,
    pub dedupe: String,
    pub cursor: String,
    /// Token of the last committed batch: tells which commits landed.
    pub chain: String,
    /// The progress of a replay behind `cursor` (`Restart { from_cursor }` into the past),
    /// so a crash does not abandon it: a restart resumes the replay from here.
    pub replay: String,
    /// The fencing counter of the writer lease (`[ha]`): every acquisition raises it, and
    /// a commit lands only while it still equals the committing writer's token.
    pub fence: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
            dedupe: format!("{prefix}dedupe"),
            cursor: format!("{prefix}cursor"),
            chain: format!("{prefix}commit:chain"),
            replay: format!("{prefix}cursor:replay"),
            fence: format!("{prefix}ha:fence"),
        }
    }

    /// The key of a stream, from its name after the prefix (`records`, a route's name …).
    pub fn stream(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
}

/// The last command of every commit transaction.
///
/// KEYS: 1 dedupe zset, 2 cursor, 3 chain, 4.. every stream and hash the batch writes, then
/// the replay cursor, last the lease's fencing counter (`[ha]`).
/// ARGV: 1 prune-below score ("" = none), 2 cursor ("" = none), 3 this batch's token, 4 the
/// token the chain must hold ("" = unchecked), 5 the number `m` of new identities, 6 `1` when
/// the batch belongs to a replay (its cursor, while behind the stored one, goes to the replay
/// cursor key, which is deleted once the replay catches up; the stored cursor never moves
/// back); then per
/// key of KEYS[4..]: its type (`stream` / `hash`) and the number of entries this transaction
/// added to it; then the number of state groups and per group (one hash): its KEYS index, the
/// number of fields to set, field/value pairs, the number of fields to delete, the fields;
/// then `m` score/identity pairs for the dedupe index; last, the writer's fencing token (""
/// without `[ha]`): a commit whose token is not the counter's current value (another
/// instance took the lease since) is undone and fails with `FENCED …`. One `HSET`/`HDEL` per hash instead of
/// one per field: a call from Lua costs ~1 µs of Redis CPU, and the example buckets write
/// about one field per event. Returns 1, or an error (`CHAIN …` / `WRONGTYPE …`) after
/// undoing the transaction's writes.
///
/// The identities are added here, after the checks, not by a `ZADD` before them: an undo then
/// has nothing to take out of the index. (It once removed identities by score range, which
/// also removed other batches' identities of the same times, and later replays wrote those
/// events again.)
pub const FINALIZE_SCRIPT: &str = r#"#!lua
local nt = #KEYS - 5
local function undo(msg)
  for k = 1, nt do
    local key, n = KEYS[3 + k], tonumber(ARGV[6 + 2 * k])
    if n > 0 and redis.call('TYPE', key)['ok'] == 'stream' then
      local ids = {}
      for i, e in ipairs(redis.call('XREVRANGE', key, '+', '-', 'COUNT', n)) do ids[i] = e[1] end
      if #ids > 0 then redis.call('XDEL', key, unpack(ids)) end
    end
  end
  return redis.error_reply(msg)
end
local checks = {{KEYS[1], 'zset'}, {KEYS[2], 'string'}, {KEYS[3], 'string'}, {KEYS[#KEYS - 1], 'string'}, {KEYS[#KEYS], 'string'}}
for k = 1, nt do checks[#checks + 1] = {KEYS[3 + k], ARGV[5 + 2 * k]} end
for _, c in ipairs(checks) do
  local t = redis.call('TYPE', c[1])['ok']
  if t ~= 'none' and t ~= c[2] then
    return undo('WRONGTYPE ' .. c[1] .. ' is a ' .. t .. ', not a ' .. c[2] .. ': nothing of this batch was committed')
  end
end
local fence = ARGV[#ARGV]
if fence ~= '' then
  local holder = redis.call('GET', KEYS[#KEYS])
  if holder ~= fence then
    return undo('FENCED this writer holds fencing token ' .. fence .. ', the lease is at ' .. tostring(holder) .. ' (another instance took over); this batch was undone')
  end
end
if ARGV[4] ~= '' then
  local chain = redis.call('GET', KEYS[3])
  if chain ~= ARGV[4] then
    return undo('CHAIN predecessor ' .. ARGV[4] .. ' is not committed (chain holds ' .. tostring(chain) .. '); this batch was undone')
  end
end
-- unpack() is bounded by the Lua stack: at most 1000 values per call.
local function apply(cmd, key, from, n, width)
  local j = 0
  while j < n do
    local m = math.min(n - j, 1000 / width)
    redis.call(cmd, key, unpack(ARGV, from + width * j, from + width * (j + m) - 1))
    j = j + m
  end
end
local i = 7 + 2 * nt
local groups = tonumber(ARGV[i])
i = i + 1
for _ = 1, groups do
  local key, ns = KEYS[tonumber(ARGV[i])], tonumber(ARGV[i + 1])
  apply('HSET', key, i + 2, ns, 2)
  i = i + 2 + 2 * ns
  local nd = tonumber(ARGV[i])
  apply('HDEL', key, i + 1, nd, 1)
  i = i + 1 + nd
end
local m = tonumber(ARGV[5])
if m > 0 then
  apply('ZADD', KEYS[1], i, m, 2)
end
if ARGV[1] ~= '' then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
end
if ARGV[2] ~= '' then
  local old = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
  if ARGV[6] == '1' then
    if tonumber(ARGV[2]) < old then
      redis.call('SET', KEYS[#KEYS - 1], ARGV[2])
    else
      redis.call('DEL', KEYS[#KEYS - 1])
    end
  end
  if tonumber(ARGV[2]) > old then
    redis.call('SET', KEYS[2], ARGV[2])
  end
end
redis.call('SET', KEYS[3], ARGV[3])
return 1
"#;

/// Limits that shape the commands.
#[derive(Debug, Clone, Copy)]
pub struct CommitLimits {
    pub dedupe_window_us: u64,
}

/// A batch encoded for Redis: its probe, the commit transaction written optimistically
/// (every entry new, the predecessor known at encode time), and what is needed to rebuild
/// the commit without entries found committed or for another predecessor.
#[derive(Debug)]
pub struct Encoded {
    /// `ZMSCORE` of every identity; `None` when the batch has none (no probe needed).
    pub probe: Option<Pipeline>,
    /// `MULTI`, one `XADD` per identity, finalize (with the identities), `EXEC`.
    pub commit: Pipeline,
    /// The predecessor token `commit` checks for ("" = unchecked).
    pub expects: String,
    /// Entries left out because an earlier entry of the same batch has the same identity.
    pub repeats: usize,
    /// The identities the commit writes, one per `XADD`, in order: spans of `arena`.
    spans: Vec<(usize, usize)>,
    arena: String,
    scores: Vec<u64>,
    /// Per identity: index into `typed` of the stream its entry goes to.
    stream_of: Vec<usize>,
    keys: Keys,
    /// Streams, then hashes, the batch writes, with the type each must have.
    typed: Vec<(String, &'static str)>,
    /// The bucket state writes, one group per hash.
    state: Vec<StateGroup>,
    prune: Option<u64>,
    cursor: Option<u64>,
    /// The batch belongs to a replay behind the stored cursor.
    replay: bool,
    token: String,
    /// The writer's fencing token (`[ha]`), checked by finalize.
    fence: Option<u64>,
}

impl Encoded {
    /// Number of identities probed (= `XADD`s in the optimistic commit).
    pub fn identities(&self) -> usize {
        self.spans.len()
    }

    /// The `i`-th identity.
    pub fn identity(&self, i: usize) -> &str {
        let (a, b) = self.spans[i];
        &self.arena[a..b]
    }

    /// Entries a commit writing all identities but `skipped` adds per stream (name after
    /// the key prefix), for the per-stream job counter.
    pub fn added_per_stream(&self, skipped: &[bool]) -> Vec<(&str, u64)> {
        let mut added = vec![0u64; self.typed.len()];
        for (i, at) in self.stream_of.iter().enumerate() {
            if !skipped.get(i).copied().unwrap_or(false) {
                added[*at] += 1;
            }
        }
        self.typed
            .iter()
            .zip(added)
            .filter(|((_, kind), n)| *kind == "stream" && *n > 0)
            .map(|((key, _), n)| (key.strip_prefix(&self.keys.prefix).unwrap_or(key), n))
            .collect()
    }

    /// Which identities the probe found committed (`ZMSCORE` reply).
    pub fn parse_probe(&self, reply: &[Value]) -> Result<Vec<bool>, String> {
        let n = self.identities();
        match reply {
            [Value::Array(scores)] if scores.len() == n => {
                Ok(scores.iter().map(|v| !matches!(v, Value::Nil)).collect())
            }
            other => Err(format!(
                "probe: ZMSCORE of {n} identities answered {other:?}"
            )),
        }
    }

    /// The commit transaction without the entries `present` marks as committed, checking
    /// for predecessor `expects` ("" = unchecked).
    pub fn rebuilt(&self, present: &[bool], expects: &str) -> Pipeline {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (i, cmd) in self.commit.cmd_iter().take(self.identities()).enumerate() {
            if !present.get(i).copied().unwrap_or(false) {
                pipe.add_command(cmd.clone()).ignore();
            }
        }
        self.tail(&mut pipe, present, expects);
        pipe
    }

    /// The finalize call, which also adds the new identities to the dedupe index.
    fn tail(&self, pipe: &mut Pipeline, present: &[bool], expects: &str) {
        let is_new = |i: usize| !present.get(i).copied().unwrap_or(false);
        let mut added = vec![0usize; self.typed.len()];
        let mut new = 0usize;
        for i in (0..self.identities()).filter(|&i| is_new(i)) {
            added[self.stream_of[i]] += 1;
            new += 1;
        }
        let mut fin = redis::cmd("EVAL");
        fin.arg(FINALIZE_SCRIPT)
            .arg(5 + self.typed.len())
            .arg(&self.keys.dedupe)
            .arg(&self.keys.cursor)
            .arg(&self.keys.chain);
        for (key, _) in &self.typed {
            fin.arg(key);
        }
        fin.arg(&self.keys.replay).arg(&self.keys.fence);
        let mut num = itoa::Buffer::new();
        fin.arg(self.prune.map_or("", |p| num.format(p)));
        fin.arg(self.cursor.map_or("", |c| num.format(c)));
        fin.arg(&self.token).arg(expects);
        fin.arg(new);
        fin.arg(if self.replay { "1" } else { "0" });
        for ((_, t), n) in self.typed.iter().zip(&added) {
            fin.arg(*t).arg(*n);
        }
        fin.arg(self.state.len());
        for g in &self.state {
            // KEYS index (1-based): dedupe, cursor, chain, then `typed`.
            fin.arg(4 + g.at).arg(g.set.len());
            for (field, value) in &g.set {
                fin.arg(field).arg(value);
            }
            fin.arg(g.del.len());
            for field in &g.del {
                fin.arg(field);
            }
        }
        for i in (0..self.identities()).filter(|&i| is_new(i)) {
            fin.arg(self.scores[i]).arg(self.identity(i));
        }
        fin.arg(self.fence.map_or("", |f| num.format(f)));
        pipe.add_command(fin);
    }
}

/// The bucket state writes to one hash (`at`: index into `typed`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct StateGroup {
    at: usize,
    set: Vec<(String, String)>,
    del: Vec<String>,
}

/// Groups state operations per hash, in the order the hashes first appear. The last
/// operation on a field wins, as if they were applied one by one, so within a group every
/// field is set or deleted once and the order of `HSET` and `HDEL` does not matter.
fn group_state(ops: &[(usize, &StateOp)]) -> Vec<StateGroup> {
    let mut last: HashMap<(usize, &str), usize, RandomState> = HashMap::default();
    let mut groups: Vec<StateGroup> = Vec::new();
    let mut group_of = Vec::with_capacity(ops.len());
    for (i, (at, op)) in ops.iter().enumerate() {
        last.insert((*at, op.field.as_str()), i);
        let k = match groups.iter().position(|g| g.at == *at) {
            Some(k) => k,
            None => {
                groups.push(StateGroup {
                    at: *at,
                    set: Vec::new(),
                    del: Vec::new(),
                });
                groups.len() - 1
            }
        };
        group_of.push(k);
    }
    for (i, ((at, op), k)) in ops.iter().zip(group_of).enumerate() {
        if last.get(&(*at, op.field.as_str())) != Some(&i) {
            continue;
        }
        match &op.value {
            Some(v) => groups[k].set.push((op.field.clone(), v.clone())),
            None => groups[k].del.push(op.field.clone()),
        }
    }
    groups
}

/// Writes entries as `XADD` commands into a transaction, noting identities and scores.
struct Encoder<'a> {
    keys: &'a Keys,
    pipe: Pipeline,
    /// The `XADD` being written; `None` while skipping a repeated entry.
    current: Option<Cmd>,
    /// Stream names seen (route or kind) → index into `typed`.
    names: Vec<(String, usize)>,
    typed: Vec<(String, &'static str)>,
    arena: String,
    spans: Vec<(usize, usize)>,
    scores: Vec<u64>,
    stream_of: Vec<usize>,
    /// Identity hash → first span with it (exact comparison on a hit).
    /// foldhash (seeded per process): the identities are short and this runs per entry.
    seen: HashMap<u64, usize, RandomState>,
    hasher: RandomState,
    repeats: usize,
    scratch: String,
}

impl Encoder<'_> {
    fn flush(&mut self) {
        if let Some(cmd) = self.current.take() {
            self.pipe.add_command(cmd).ignore();
        }
    }

    /// Index into `typed` of a key, added with `kind` if new.
    fn typed_key(&mut self, key: String, kind: &'static str) -> usize {
        match self.typed.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                self.typed.push((key, kind));
                self.typed.len() - 1
            }
        }
    }

    fn stream_index(&mut self, name: &str) -> usize {
        if let Some((_, at)) = self.names.iter().find(|(n, _)| n == name) {
            return *at;
        }
        // Two names can share a key (a route named `records`): one entry per key.
        let at = self.typed_key(self.keys.stream(name), "stream");
        self.names.push((name.to_owned(), at));
        at
    }

    /// Whether the identity just appended at `start..` repeats an earlier one of the batch.
    fn is_repeat(&mut self, start: usize) -> bool {
        let id = &self.arena[start..];
        let h = self.hasher.hash_one(id);
        match self.seen.entry(h) {
            Entry::Vacant(v) => {
                v.insert(self.spans.len());
                false
            }
            Entry::Occupied(o) => {
                let arena = &self.arena;
                let same = |&(a, b): &(usize, usize)| &arena[a..b] == id;
                same(&self.spans[*o.get()]) || self.spans.iter().any(same)
            }
        }
    }
}

impl EntrySink for Encoder<'_> {
    fn begin(
        &mut self,
        stream: StreamKind,
        route: Option<&Arc<str>>,
        identity: &[&str],
        score: u64,
    ) {
        self.flush();
        let start = self.arena.len();
        join_into(&mut self.arena, identity, '|');
        if self.is_repeat(start) {
            self.arena.truncate(start);
            self.repeats += 1;
            return;
        }
        self.spans.push((start, self.arena.len()));
        self.scores.push(score);
        let at = self.stream_index(route.map_or(stream.name(), |r| &**r));
        self.stream_of.push(at);
        let mut cmd = Cmd::with_capacity(32, 1024);
        cmd.arg("XADD").arg(&self.typed[at].0).arg("*");
        self.current = Some(cmd);
    }

    fn text(&mut self, name: &'static str, value: &str) {
        if let Some(cmd) = &mut self.current {
            cmd.arg(name).arg(value);
        }
    }

    fn joined(&mut self, name: &'static str, parts: &[&str], sep: char) {
        if let Some(cmd) = &mut self.current {
            self.scratch.clear();
            join_into(&mut self.scratch, parts, sep);
            cmd.arg(name).arg(self.scratch.as_str());
        }
    }
}

/// Encodes a batch: its probe and its optimistic commit (module docs), checking for
/// predecessor `expects` ("" = unchecked) and, with `[ha]`, for the writer's fencing token.
pub fn encode(
    keys: &Keys,
    batch: &Batch,
    token: &str,
    expects: &str,
    fence: Option<u64>,
    limits: CommitLimits,
) -> Encoded {
    let n = batch.items.len();
    let mut enc = Encoder {
        keys,
        pipe: redis::pipe(),
        current: None,
        names: Vec::new(),
        typed: Vec::new(),
        arena: String::with_capacity(n * 96),
        spans: Vec::with_capacity(n),
        scores: Vec::with_capacity(n),
        stream_of: Vec::with_capacity(n),
        seen: HashMap::with_capacity_and_hasher(n, RandomState::default()),
        hasher: RandomState::default(),
        repeats: 0,
        scratch: String::new(),
    };
    enc.pipe.atomic();
    let fallback = batch.cursor.unwrap_or(0);
    let mut state = Vec::new();
    for item in &batch.items {
        match item {
            Item::Event(e) => write_event(&mut enc, e, &batch.source),
            Item::Dead(d) => write_dead(&mut enc, d, &batch.source, fallback),
            Item::Transition(t) => write_transition(&mut enc, t),
            Item::State(op) => state.push(op),
        }
    }
    enc.flush();
    let state: Vec<(usize, &StateOp)> = state
        .into_iter()
        .map(|op: &StateOp| (enc.typed_key(keys.stream(&op.key), "hash"), op))
        .collect();
    let state = group_state(&state);
    let probe = (!enc.spans.is_empty()).then(|| {
        let mut probe = redis::pipe();
        probe.cmd("ZMSCORE").arg(&keys.dedupe);
        for &(a, b) in &enc.spans {
            probe.arg(&enc.arena[a..b]);
        }
        probe
    });
    let mut encoded = Encoded {
        probe,
        commit: redis::pipe(),
        expects: expects.to_owned(),
        repeats: enc.repeats,
        spans: enc.spans,
        arena: enc.arena,
        scores: enc.scores,
        stream_of: enc.stream_of,
        keys: keys.clone(),
        typed: enc.typed,
        state,
        prune: batch
            .cursor
            .map(|c| c.saturating_sub(limits.dedupe_window_us)),
        cursor: batch.cursor,
        replay: batch.replay,
        token: token.to_owned(),
        fence,
    };
    let mut commit = enc.pipe;
    encoded.tail(&mut commit, &[], expects);
    encoded.commit = commit;
    encoded
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use serde_json::value::RawValue;

    use super::*;
    use crate::messages::Credit;
    use crate::model::{CommitEvent, DeadLetter, Event, Operation, Transition, TransitionKind};

    fn commit(rkey: &str, t: u64, route: Option<&str>) -> Item {
        Item::Event(Event::Commit(CommitEvent {
            did: "did:plc:abc".into(),
            time_us: t,
            rev: "3l3qo2vutsw2b".into(),
            operation: Operation::Create,
            collection: "app.bsky.feed.post".into(),
            rkey: rkey.into(),
            record: Some(RawValue::from_string(r#"{"text":"hi"}"#.into()).expect("json")),
            cid: Some("bafyrei".into()),
            verdict: route.map(|r| crate::model::Verdict {
                cid_check: Some("match"),
                checks: vec!["a", "b"],
                stream: Some(Arc::from(r)),
            }),
        }))
    }

    fn batch(items: Vec<Item>) -> Batch {
        let window = Arc::new(tokio::sync::Semaphore::new(1));
        Batch {
            seq: 7,
            session: 1,
            source: Arc::from("host"),
            items,
            cursor: Some(50),
            received_at: Instant::now(),
            credit: Credit::new(window.try_acquire_owned().expect("permit")),
            replay: false,
        }
    }

    fn args(cmd: &Cmd) -> Vec<String> {
        cmd.args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
                _ => "<cursor>".to_owned(),
            })
            .collect()
    }

    fn commands(p: &Pipeline) -> Vec<Vec<String>> {
        p.cmd_iter().map(args).collect()
    }

    fn sample() -> Batch {
        let mut dead = DeadLetter::new("invalid_json", "bad", b"{oops");
        dead.time_us = Some(45);
        batch(vec![
            commit("r1", 40, None),
            commit("r2", 41, Some("feed")),
            commit("r1", 40, None), // the same event again: written once
            Item::Dead(dead),
            Item::Transition(Transition {
                bucket: Arc::from("b"),
                did: "did:plc:abc".into(),
                kind: TransitionKind::Entered,
                epoch: 2,
                reason: "criteria",
                time_us: 42,
            }),
            Item::State(StateOp {
                key: "bucket:b:state".into(),
                field: "did:plc:abc".into(),
                value: Some("{}".into()),
            }),
            Item::State(StateOp {
                key: "bucket:b:state".into(),
                field: "did:plc:old".into(),
                value: None,
            }),
        ])
    }

    fn limits() -> CommitLimits {
        CommitLimits {
            dedupe_window_us: 3,
        }
    }

    #[test]
    fn the_commit_writes_every_new_entry_then_dedupe_then_finalize() {
        let enc = encode(&Keys::new("jsi:"), &sample(), "e:7", "e:6", None, limits());
        assert!(enc.commit.is_transaction());
        assert_eq!(
            (
                enc.identities() + enc.repeats,
                enc.repeats,
                enc.identities()
            ),
            (5, 1, 4),
            "5 entries: 4 identities written, 1 repeat left out"
        );
        let c = commands(&enc.commit);
        assert_eq!(
            c.len(),
            4 + 1,
            "4 XADDs then finalize: no ZADD before the checks"
        );
        assert_eq!(&c[0][..3], ["XADD", "jsi:records", "*"]);
        assert_eq!(
            &c[0][3..9],
            [
                "v",
                "1",
                "idem",
                "did:plc:abc|app.bsky.feed.post|r1|3l3qo2vutsw2b",
                "did",
                "did:plc:abc"
            ]
        );
        assert_eq!(&c[1][..2], ["XADD", "jsi:feed"]);
        assert!(c[1].ends_with(&["checks".to_owned(), "a,b".to_owned()]));
        assert_eq!(&c[2][..2], ["XADD", "jsi:dead"]);
        assert_eq!(&c[3][..2], ["XADD", "jsi:buckets"]);
        let fin = &c[4];
        assert_eq!(fin[0], "EVAL");
        assert_eq!(
            fin[2], "10",
            "dedupe, cursor, chain + 4 streams + 1 hash + replay cursor + fence"
        );
        assert_eq!(
            &fin[3..13],
            [
                "jsi:dedupe",
                "jsi:cursor",
                "jsi:commit:chain",
                "jsi:records",
                "jsi:feed",
                "jsi:dead",
                "jsi:buckets",
                "jsi:bucket:b:state",
                "jsi:cursor:replay",
                "jsi:ha:fence"
            ]
        );
        assert_eq!(&fin[13..19], ["47", "50", "e:7", "e:6", "4", "0"]);
        assert_eq!(
            &fin[19..29],
            [
                "stream", "1", "stream", "1", "stream", "1", "stream", "1", "hash", "0"
            ]
        );
        assert_eq!(
            &fin[29..36],
            ["1", "8", "1", "did:plc:abc", "{}", "1", "did:plc:old"],
            "one group: hash KEYS[8], one field set, one deleted"
        );
        assert_eq!(
            fin.len(),
            36 + 2 * 4 + 1,
            "then 4 score/identity pairs, then the fencing token"
        );
        assert_eq!(
            &fin[36..38],
            [
                "40",
                "c|did:plc:abc|app.bsky.feed.post|r1|3l3qo2vutsw2b|create"
            ]
        );
        assert_eq!(
            fin.last().map(String::as_str),
            Some(""),
            "no [ha]: unfenced"
        );
        assert_eq!(enc.expects, "e:6");
    }

    #[test]
    fn state_writes_are_grouped_per_hash_and_the_last_write_of_a_field_wins() {
        let op = |key: &str, field: &str, value: Option<&str>| StateOp {
            key: key.into(),
            field: field.into(),
            value: value.map(str::to_owned),
        };
        let ops = [
            op("a", "x", Some("1")),
            op("b", "x", None),
            op("a", "y", None),
            op("a", "x", Some("2")),
            op("a", "y", Some("3")),
            op("b", "z", Some("4")),
            op("b", "z", None),
        ];
        let at = |key: &str| usize::from(key == "b");
        let with_at: Vec<(usize, &StateOp)> = ops.iter().map(|o| (at(&o.key), o)).collect();
        let g = group_state(&with_at);
        assert_eq!(
            g,
            [
                StateGroup {
                    at: 0,
                    set: vec![("x".into(), "2".into()), ("y".into(), "3".into())],
                    del: vec![],
                },
                StateGroup {
                    at: 1,
                    set: vec![],
                    del: vec!["x".into(), "z".into()],
                },
            ]
        );
    }

    #[test]
    fn jobs_are_counted_per_stream() {
        let enc = encode(&Keys::new("jsi:"), &sample(), "t", "", None, limits());
        assert_eq!(
            enc.added_per_stream(&[]),
            [("records", 1), ("feed", 1), ("dead", 1), ("buckets", 1)]
        );
        assert_eq!(
            enc.added_per_stream(&[true, false, true, true]),
            [("feed", 1)]
        );
    }

    #[test]
    fn the_probe_asks_for_every_identity() {
        let enc = encode(&Keys::new("p:"), &sample(), "t", "", None, limits());
        let probe = enc.probe.as_ref().expect("identities to probe");
        let p = commands(probe);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0][..2], ["ZMSCORE", "p:dedupe"]);
        assert_eq!(p[0].len(), 2 + 4);
        assert_eq!(
            enc.identity(1),
            "c|did:plc:abc|app.bsky.feed.post|r2|3l3qo2vutsw2b|create"
        );
        let reply = vec![Value::Array(vec![
            Value::Nil,
            Value::BulkString(b"41".to_vec()),
            Value::Nil,
            Value::Nil,
        ])];
        assert_eq!(
            enc.parse_probe(&reply).expect("parses"),
            [false, true, false, false]
        );
        assert!(enc.parse_probe(&[]).is_err());
        assert!(
            enc.parse_probe(&[Value::Array(vec![Value::Nil])]).is_err(),
            "one score per identity"
        );
    }

    #[test]
    fn committed_entries_are_left_out_of_the_rebuilt_commit() {
        let enc = encode(&Keys::new("jsi:"), &sample(), "e:7", "e:6", None, limits());
        let c = commands(&enc.rebuilt(&[true, false, false, true], "x:1"));
        assert_eq!(c.len(), 2 + 1);
        assert_eq!(c[0][1], "jsi:feed");
        assert_eq!(c[1][1], "jsi:dead");
        let fin = &c[2];
        assert_eq!(
            &fin[15..18],
            ["e:7", "x:1", "2"],
            "new predecessor, two new identities"
        );
        assert_eq!(
            &fin[19..29],
            [
                "stream", "0", "stream", "1", "stream", "1", "stream", "0", "hash", "0"
            ],
            "entries added per stream"
        );
        assert_eq!(fin[fin.len() - 5], "41");
        assert_eq!(
            fin[fin.len() - 4],
            "c|did:plc:abc|app.bsky.feed.post|r2|3l3qo2vutsw2b|create"
        );
        assert!(
            fin[fin.len() - 2].starts_with("d|"),
            "the dead letter's identity"
        );
        assert_eq!(fin[fin.len() - 1], "", "then the fencing token (none)");

        let none = commands(&enc.rebuilt(&[true; 4], ""));
        assert_eq!(none.len(), 1, "finalize only: state writes, cursor, chain");
        assert_eq!(none[0][17], "0", "no new identity");
        assert_eq!(
            none[0].len(),
            37,
            "and no pairs (the last is the fencing token)"
        );
    }

    #[test]
    fn a_route_named_like_a_stream_shares_its_key() {
        let b = batch(vec![
            commit("r1", 40, None),
            commit("r2", 41, Some("records")),
        ]);
        let enc = encode(&Keys::new("jsi:"), &b, "t", "", None, limits());
        let fin = &commands(&enc.commit)[2];
        assert_eq!(fin[2], "6", "one stream key (+ 5 fixed)");
        assert_eq!(
            &fin[9..18],
            ["47", "50", "t", "", "2", "0", "stream", "2", "0"]
        );
    }

    #[test]
    fn an_empty_batch_still_stores_its_cursor() {
        let enc = encode(
            &Keys::new("p:"),
            &batch(Vec::new()),
            "t",
            "",
            None,
            limits(),
        );
        let c = commands(&enc.commit);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0][2], "5");
        assert_eq!(&c[0][8..], ["47", "50", "t", "", "0", "0", "0", ""]);
        assert!(enc.probe.is_none(), "nothing to probe");
    }
}
