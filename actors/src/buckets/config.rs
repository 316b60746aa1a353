//! Typed, validated bucket definitions (`[[buckets]]` of the file named by `buckets.file`),
//! the `[buckets]` settings, and the stable `criteria_hash` of a bucket.
//!
//! Settings (the edge) reads the file and hands its TOML tree to [`super::parse`], which
//! builds these types or fails naming the bucket and the field. Nothing here fails: a value
//! of these types is valid by construction.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// `[buckets]` of the main config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BucketsSection {
    /// Path of the bucket definitions file; "" = no buckets.
    pub file: String,
    /// Shard actors (threads) evaluating buckets; 0 = one per core.
    pub shards: usize,
}

/// What the pipeline needs: the shard count and the definitions (parsed from the file).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BucketsConfig {
    pub shards: usize,
    pub buckets: Vec<BucketDef>,
}

impl BucketsConfig {
    pub fn shard_count(&self) -> usize {
        if self.shards == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            self.shards
        }
    }
}

/// One `[[buckets]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BucketDef {
    /// Letters, digits, `_`, `-`, `.`; unique; part of Redis keys and of `idem`.
    pub id: String,
    /// A disabled bucket is not evaluated; its keys in Redis are left as they are.
    pub enabled: bool,
    pub criteria: Criteria,
    pub entry_limit: EntryLimit,
    /// A leave is deferred until the membership is this old.
    #[serde(with = "crate::model::duration::option")]
    pub min_dwell: Option<Duration>,
    /// A membership this old is ended (reason `max_dwell`).
    #[serde(with = "crate::model::duration::option")]
    pub max_dwell: Option<Duration>,
}

impl BucketDef {
    /// Stable hash of the canonical criteria (first 16 bytes of sha-256, hex). Policies
    /// (entry limit, dwell rules) are not part of it: changing them keeps the state valid.
    pub fn criteria_hash(&self) -> String {
        let digest = Sha256::digest(self.criteria.canonical().as_bytes());
        hex::encode(&digest[..16])
    }
}

/// How often a DID may (visibly) enter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryLimit {
    /// Enter at most once, ever.
    Once,
    /// The `entered` (and matching `left`) job is suppressed unless this long has passed
    /// since the DID's last leave.
    OncePerPeriod(#[serde(with = "crate::model::duration")] Duration),
    Unlimited,
}

/// The criteria tree.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Criteria {
    Event(EventCondition),
    All(Vec<Criteria>),
    Any(Vec<Criteria>),
    Not(Box<Criteria>),
}

impl Criteria {
    /// A canonical text of the tree: same meaning, same text (durations in µs, operation
    /// sets sorted, defaults spelled out).
    pub fn canonical(&self) -> String {
        match self {
            Criteria::Event(e) => e.canonical(),
            Criteria::All(v) => format!(
                "all({})",
                v.iter()
                    .map(Criteria::canonical)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Criteria::Any(v) => format!(
                "any({})",
                v.iter()
                    .map(Criteria::canonical)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Criteria::Not(c) => format!("not({})", c.canonical()),
        }
    }
}

/// A condition on a DID's own commit events.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventCondition {
    pub collection: CollectionPattern,
    /// Empty = any operation.
    pub operations: Vec<OperationKind>,
    /// Every predicate must hold on the event's record (deletes have no record: they match
    /// only conditions without predicates).
    pub record: Vec<Predicate>,
    pub check: Check,
    /// Count only events this recent; `None` = since tracking began.
    #[serde(with = "crate::model::duration::option")]
    pub within: Option<Duration>,
}

impl EventCondition {
    fn canonical(&self) -> String {
        let mut ops: Vec<&str> = self.operations.iter().map(|o| o.as_str()).collect();
        ops.sort_unstable();
        ops.dedup();
        let record: Vec<String> = self.record.iter().map(Predicate::canonical).collect();
        format!(
            "event(collection={},operations=[{}],record=[{}],check={},within={})",
            self.collection.as_str(),
            ops.join(","),
            record.join(","),
            self.check.canonical(),
            self.within
                .map_or_else(|| "-".to_owned(), |d| d.as_micros().to_string()),
        )
    }
}

/// `app.bsky.feed.post` or `app.bsky.graph.*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum CollectionPattern {
    Exact(String),
    /// The part before `.*`, with its trailing dot (`app.bsky.graph.`).
    Prefix(String),
}

impl CollectionPattern {
    pub fn matches(&self, collection: &str) -> bool {
        match self {
            CollectionPattern::Exact(c) => c == collection,
            CollectionPattern::Prefix(p) => collection.starts_with(p.as_str()),
        }
    }

    pub fn as_str(&self) -> String {
        match self {
            CollectionPattern::Exact(c) => c.clone(),
            CollectionPattern::Prefix(p) => format!("{p}*"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationKind {
    Create,
    Update,
    Delete,
}

impl OperationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OperationKind::Create => "create",
            OperationKind::Update => "update",
            OperationKind::Delete => "delete",
        }
    }
}

/// `exists`, `not_exists`, or `count` compared with a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    Exists,
    NotExists,
    Count { operator: CountOperator, value: u32 },
}

impl Check {
    fn canonical(&self) -> String {
        match self {
            Check::Exists => "exists".to_owned(),
            Check::NotExists => "not_exists".to_owned(),
            Check::Count { operator, value } => format!("count_{}_{value}", operator.as_str()),
        }
    }

    /// Event times that must be kept to decide the check: enough to tell every count the
    /// check distinguishes.
    pub fn cap(&self) -> u16 {
        match self {
            Check::Exists | Check::NotExists => 1,
            Check::Count { value, .. } => {
                u16::try_from(value.saturating_add(1)).unwrap_or(u16::MAX)
            }
        }
    }

    /// Whether `n` matching events satisfy the check.
    pub fn holds(&self, n: u32) -> bool {
        match self {
            Check::Exists => n >= 1,
            Check::NotExists => n == 0,
            Check::Count { operator, value } => operator.compare(n, *value),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CountOperator {
    Gt,
    Gte,
    Lt,
    Lte,
    Eq,
}

impl CountOperator {
    pub fn as_str(self) -> &'static str {
        match self {
            CountOperator::Gt => "gt",
            CountOperator::Gte => "gte",
            CountOperator::Lt => "lt",
            CountOperator::Lte => "lte",
            CountOperator::Eq => "eq",
        }
    }

    pub fn compare(self, n: u32, value: u32) -> bool {
        match self {
            CountOperator::Gt => n > value,
            CountOperator::Gte => n >= value,
            CountOperator::Lt => n < value,
            CountOperator::Lte => n <= value,
            CountOperator::Eq => n == value,
        }
    }
}

/// A test on the record value at `path` (dot-separated keys; a numeric segment indexes an
/// array). All tests of a predicate must hold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Predicate {
    pub path: Vec<String>,
    pub tests: Vec<Test>,
}

impl Predicate {
    fn canonical(&self) -> String {
        let tests: Vec<String> = self.tests.iter().map(Test::canonical).collect();
        format!("{}:{}", self.path.join("."), tests.join("&"))
    }
}

/// Values are scalars (string, number, bool) or, for `in`, a list of them.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Test {
    Eq(Value),
    Ne(Value),
    In(Vec<Value>),
    Contains(Value),
    Exists(bool),
    Gt(Value),
    Lt(Value),
}

impl Test {
    fn canonical(&self) -> String {
        let j = |v: &Value| v.to_string();
        match self {
            Test::Eq(v) => format!("eq={}", j(v)),
            Test::Ne(v) => format!("ne={}", j(v)),
            Test::In(vs) => format!("in=[{}]", vs.iter().map(j).collect::<Vec<_>>().join(",")),
            Test::Contains(v) => format!("contains={}", j(v)),
            Test::Exists(b) => format!("exists={b}"),
            Test::Gt(v) => format!("gt={}", j(v)),
            Test::Lt(v) => format!("lt={}", j(v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(within: Option<u64>) -> Criteria {
        Criteria::Event(EventCondition {
            collection: CollectionPattern::Exact("app.bsky.feed.post".into()),
            operations: vec![OperationKind::Update, OperationKind::Create],
            record: vec![],
            check: Check::Exists,
            within: within.map(Duration::from_secs),
        })
    }

    fn def(criteria: Criteria, limit: EntryLimit) -> BucketDef {
        BucketDef {
            id: "b".into(),
            enabled: true,
            criteria,
            entry_limit: limit,
            min_dwell: None,
            max_dwell: None,
        }
    }

    #[test]
    fn hash_depends_on_criteria_only() {
        let a = def(leaf(Some(60)), EntryLimit::Unlimited);
        let b = def(leaf(Some(60)), EntryLimit::Once);
        let c = def(leaf(Some(61)), EntryLimit::Unlimited);
        assert_eq!(a.criteria_hash(), b.criteria_hash());
        assert_ne!(a.criteria_hash(), c.criteria_hash());
        assert_eq!(a.criteria_hash().len(), 32);
    }

    #[test]
    fn canonical_sorts_operations() {
        let Criteria::Event(mut e) = leaf(None) else {
            unreachable!()
        };
        let one = e.canonical();
        e.operations.reverse();
        assert_eq!(one, e.canonical());
        assert!(one.contains("operations=[create,update]"), "{one}");
    }

    #[test]
    fn caps_are_what_the_check_needs() {
        assert_eq!(Check::Exists.cap(), 1);
        assert_eq!(Check::NotExists.cap(), 1);
        let c = Check::Count {
            operator: CountOperator::Gte,
            value: 3,
        };
        assert_eq!(c.cap(), 4);
        assert!(c.holds(3) && !c.holds(2));
    }
}
