//! Criteria, compiled for evaluation: every bucket's tree is flattened into numbered leaves
//! (event conditions) and a node tree over leaf numbers. A leaf matches an event (collection,
//! operation, record predicates); a bucket's tree is evaluated from the number of matching
//! events each leaf currently counts.
//!
//! Pure: no actix, no I/O. Records are parsed only when a leaf with predicates needs them.

use std::sync::Arc;

use serde_json::Value;
use serde_json::value::RawValue;

use super::config::{
    BucketDef, Check, CollectionPattern, Criteria, EntryLimit, OperationKind, Predicate, Test,
};
use crate::model::Operation;

fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Entry limit with the period in µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Once,
    OncePerPeriod(u64),
    Unlimited,
}

/// One event condition.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub collection: CollectionPattern,
    /// Bit per operation (create 1, update 2, delete 4); 0 = any.
    ops: u8,
    pub predicates: Vec<Predicate>,
    pub check: Check,
    /// Window in µs; `None` = since tracking began.
    pub within_us: Option<u64>,
    /// Event times kept (what the check needs).
    pub cap: u16,
}

fn op_bit(op: Operation) -> u8 {
    match op {
        Operation::Create => 1,
        Operation::Update => 2,
        Operation::Delete => 4,
    }
}

impl Leaf {
    /// Operation and record predicates (the collection is checked by the router).
    pub fn matches(&self, op: Operation, record: &mut LazyRecord<'_>) -> bool {
        if self.ops != 0 && self.ops & op_bit(op) == 0 {
            return false;
        }
        if self.predicates.is_empty() {
            return true;
        }
        let Some(rec) = record.get() else {
            return false;
        };
        self.predicates.iter().all(|p| predicate_holds(p, rec))
    }
}

/// The tree over leaf numbers.
#[derive(Debug, Clone)]
pub enum Node {
    Leaf(u16),
    All(Vec<Node>),
    Any(Vec<Node>),
    Not(Box<Node>),
}

impl Node {
    /// The tree's value, given the number of events each leaf counts.
    pub fn eval(&self, leaves: &[Leaf], count: &impl Fn(usize) -> u32) -> bool {
        match self {
            Node::Leaf(i) => {
                let i = usize::from(*i);
                leaves[i].check.holds(count(i))
            }
            Node::All(v) => v.iter().all(|n| n.eval(leaves, count)),
            Node::Any(v) => v.iter().any(|n| n.eval(leaves, count)),
            Node::Not(n) => !n.eval(leaves, count),
        }
    }
}

/// A bucket ready to evaluate.
#[derive(Debug, Clone)]
pub struct CompiledBucket {
    pub id: Arc<str>,
    pub criteria_hash: String,
    pub leaves: Vec<Leaf>,
    pub tree: Node,
    pub limit: Limit,
    pub min_dwell_us: Option<u64>,
    pub max_dwell_us: Option<u64>,
    /// Redis keys after the prefix.
    pub state_key: String,
    pub members_key: String,
    pub meta_key: String,
}

impl CompiledBucket {
    pub fn compile(def: &BucketDef) -> CompiledBucket {
        let mut leaves = Vec::new();
        let tree = flatten(&def.criteria, &mut leaves);
        CompiledBucket {
            id: Arc::from(def.id.as_str()),
            criteria_hash: def.criteria_hash(),
            leaves,
            tree,
            limit: match def.entry_limit {
                EntryLimit::Once => Limit::Once,
                EntryLimit::OncePerPeriod(p) => Limit::OncePerPeriod(micros(p)),
                EntryLimit::Unlimited => Limit::Unlimited,
            },
            min_dwell_us: def.min_dwell.map(micros),
            max_dwell_us: def.max_dwell.map(micros),
            state_key: format!("bucket:{}:state", def.id),
            members_key: format!("bucket:{}:members", def.id),
            meta_key: format!("bucket:{}:meta", def.id),
        }
    }

    /// Whether the criteria hold with every leaf counting nothing.
    pub fn holds_when_empty(&self) -> bool {
        self.tree.eval(&self.leaves, &|_| 0)
    }
}

/// The leaves whose collection pattern matches `collection` (`bucket << 16 | leaf`,
/// ascending) and whether any of them tests the record.
pub fn candidate_leaves(buckets: &[CompiledBucket], collection: &str) -> (Vec<u32>, bool) {
    let mut leaves = Vec::new();
    let mut needs_record = false;
    for (bi, b) in buckets.iter().enumerate() {
        for (li, leaf) in b.leaves.iter().enumerate() {
            if leaf.collection.matches(collection) {
                leaves.push(((bi as u32) << 16) | li as u32);
                needs_record |= !leaf.predicates.is_empty();
            }
        }
    }
    (leaves, needs_record)
}

fn flatten(c: &Criteria, leaves: &mut Vec<Leaf>) -> Node {
    match c {
        Criteria::Event(e) => {
            let ops = e.operations.iter().fold(0u8, |acc, o| {
                acc | match o {
                    OperationKind::Create => 1,
                    OperationKind::Update => 2,
                    OperationKind::Delete => 4,
                }
            });
            leaves.push(Leaf {
                collection: e.collection.clone(),
                ops,
                predicates: e.record.clone(),
                check: e.check,
                within_us: e.within.map(micros),
                cap: e.check.cap(),
            });
            Node::Leaf(u16::try_from(leaves.len() - 1).unwrap_or(u16::MAX))
        }
        Criteria::All(v) => Node::All(v.iter().map(|c| flatten(c, leaves)).collect()),
        Criteria::Any(v) => Node::Any(v.iter().map(|c| flatten(c, leaves)).collect()),
        Criteria::Not(c) => Node::Not(Box::new(flatten(c, leaves))),
    }
}

/// The record of one event, parsed at most once and only if a predicate asks.
pub struct LazyRecord<'a> {
    raw: Option<&'a RawValue>,
    parsed: Option<Option<Value>>,
}

impl<'a> LazyRecord<'a> {
    pub fn new(raw: Option<&'a RawValue>) -> LazyRecord<'a> {
        LazyRecord { raw, parsed: None }
    }

    /// `None` for deletes and records that are not JSON objects.
    pub fn get(&mut self) -> Option<&Value> {
        let raw = self.raw;
        self.parsed
            .get_or_insert_with(|| raw.and_then(|r| serde_json::from_str::<Value>(r.get()).ok()))
            .as_ref()
            .filter(|v| v.is_object())
    }
}

fn lookup<'v>(rec: &'v Value, path: &[String]) -> Option<&'v Value> {
    path.iter()
        .try_fold(rec, |v, seg| match v {
            Value::Object(m) => m.get(seg),
            Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        })
        .filter(|v| !v.is_null())
}

/// Equality that treats `1` and `1.0` alike.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => x == y,
        },
        _ => a == b,
    }
}

fn order(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// A missing (or null) value satisfies only `ne` and `exists = false`.
fn predicate_holds(p: &Predicate, rec: &Value) -> bool {
    let found = lookup(rec, &p.path);
    p.tests.iter().all(|t| match (t, found) {
        (Test::Exists(want), f) => f.is_some() == *want,
        (Test::Ne(v), f) => f.is_none_or(|f| !same(f, v)),
        (_, None) => false,
        (Test::Eq(v), Some(f)) => same(f, v),
        (Test::In(list), Some(f)) => list.iter().any(|v| same(f, v)),
        (Test::Contains(v), Some(Value::Array(items))) => items.iter().any(|i| same(i, v)),
        (Test::Contains(Value::String(s)), Some(Value::String(f))) => f.contains(s.as_str()),
        (Test::Contains(_), Some(_)) => false,
        (Test::Gt(v), Some(f)) => order(f, v) == Some(std::cmp::Ordering::Greater),
        (Test::Lt(v), Some(f)) => order(f, v) == Some(std::cmp::Ordering::Less),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pred(path: &str, t: Test) -> Predicate {
        Predicate {
            path: path.split('.').map(str::to_owned).collect(),
            tests: vec![t],
        }
    }

    #[test]
    fn predicates_on_records() {
        let rec = json!({"langs": ["pt", "en"], "text": "olá mundo", "n": 3,
                         "reply": {"root": {"uri": "at://x"}}, "createdAt": "2024-05-01T00:00:00Z"});
        let holds = |p: Predicate| predicate_holds(&p, &rec);
        assert!(holds(pred("langs", Test::Contains(json!("pt")))));
        assert!(!holds(pred("langs", Test::Contains(json!("ja")))));
        assert!(holds(pred("text", Test::Contains(json!("mundo")))));
        assert!(holds(pred("langs.0", Test::Eq(json!("pt")))));
        assert!(holds(pred("n", Test::Eq(json!(3.0)))));
        assert!(holds(pred("n", Test::Gt(json!(2)))) && !holds(pred("n", Test::Lt(json!(3)))));
        assert!(holds(pred("createdAt", Test::Gt(json!("2024-01-01")))));
        assert!(holds(pred("reply.root.uri", Test::Exists(true))));
        assert!(holds(pred("embed", Test::Exists(false))));
        assert!(holds(pred("embed", Test::Ne(json!("x")))));
        assert!(!holds(pred("embed", Test::Eq(json!("x")))));
        assert!(holds(pred("n", Test::In(vec![json!(1), json!(3)]))));
        assert!(!holds(pred("n", Test::Gt(json!("a")))));
    }

    #[test]
    fn deletes_fail_predicates_but_match_plain_conditions() {
        let leaf = |predicates: Vec<Predicate>| Leaf {
            collection: CollectionPattern::Exact("a.b.c".into()),
            ops: 0,
            predicates,
            check: Check::Exists,
            within_us: None,
            cap: 1,
        };
        let mut none = LazyRecord::new(None);
        assert!(leaf(vec![]).matches(Operation::Delete, &mut none));
        assert!(!leaf(vec![pred("x", Test::Exists(false))]).matches(Operation::Delete, &mut none));
    }
}
