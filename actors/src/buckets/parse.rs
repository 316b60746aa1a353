//! Bucket file → validated [`BucketDef`]s. The file arrives as a JSON-shaped tree (settings
//! decodes the TOML; it is the only place reading files) and is walked by hand rather than
//! through serde derives, so every error names the bucket (`id`, or its position when the id
//! itself is wrong) and the exact field (`criteria.all[1].value`).
//!
//! Failure: the first problem found, as a [`BucketConfigError`]; the process refuses to start.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Map, Value};

use super::config::{
    BucketDef, Check, CollectionPattern, CountOperator, Criteria, EntryLimit, EventCondition,
    OperationKind, Predicate, Test,
};

/// Largest `value` of a `count` check: event times kept per condition are bounded by it.
pub const MAX_COUNT: u64 = 1000;
/// Deepest nesting of `all` / `any` / `not`.
const MAX_DEPTH: usize = 16;

/// A bucket definition that cannot be used, naming the bucket and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bucket {bucket}: {field}: {message}")]
pub struct BucketConfigError {
    /// `"posters" (buckets[0])`, or `buckets[3]` while the id is unknown.
    pub bucket: String,
    pub field: String,
    pub message: String,
}

type Result<T> = std::result::Result<T, BucketConfigError>;

/// Errors of one bucket carry its display name.
struct Scope {
    bucket: String,
}

impl Scope {
    fn err(&self, field: &str, message: impl Into<String>) -> BucketConfigError {
        BucketConfigError {
            bucket: self.bucket.clone(),
            field: field.to_owned(),
            message: message.into(),
        }
    }

    fn table<'v>(&self, v: &'v Value, field: &str) -> Result<&'v Map<String, Value>> {
        v.as_object()
            .ok_or_else(|| self.err(field, format!("expected a table, found {}", kind(v))))
    }

    fn only_keys(&self, t: &Map<String, Value>, field: &str, allowed: &[&str]) -> Result<()> {
        match t.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(k) => Err(self.err(
                &join(field, k),
                format!("unknown key (expected one of: {})", allowed.join(", ")),
            )),
            None => Ok(()),
        }
    }

    fn string<'v>(&self, v: &'v Value, field: &str) -> Result<&'v str> {
        v.as_str()
            .ok_or_else(|| self.err(field, format!("expected a string, found {}", kind(v))))
    }

    fn duration(&self, v: &Value, field: &str) -> Result<Duration> {
        let s = self.string(v, field)?;
        let d = humantime::parse_duration(s.trim()).map_err(|e| {
            self.err(field, format!("invalid duration {s:?}: {e} (use e.g. \"90s\", \"1h\", \"7d\")"))
        })?;
        if d.is_zero() {
            return Err(self.err(field, "must be longer than zero"));
        }
        Ok(d)
    }

    fn opt_duration(&self, t: &Map<String, Value>, key: &str) -> Result<Option<Duration>> {
        t.get(key).map(|v| self.duration(v, key)).transpose()
    }
}

fn join(field: &str, key: &str) -> String {
    if field.is_empty() {
        key.to_owned()
    } else {
        format!("{field}.{key}")
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a table",
    }
}

/// The whole file: `[[buckets]]` entries and nothing else.
pub fn parse_bucket_file(root: &Value) -> Result<Vec<BucketDef>> {
    let file = Scope {
        bucket: "(file)".to_owned(),
    };
    let t = file.table(root, "")?;
    file.only_keys(t, "", &["buckets"])?;
    let Some(list) = t.get("buckets") else {
        return Ok(Vec::new());
    };
    let list = list.as_array().ok_or_else(|| {
        file.err("buckets", "expected [[buckets]] entries (an array of tables)")
    })?;
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(list.len());
    for (i, v) in list.iter().enumerate() {
        let def = parse_bucket(i, v)?;
        if !seen.insert(def.id.clone()) {
            return Err(BucketConfigError {
                bucket: format!("{:?} (buckets[{i}])", def.id),
                field: "id".to_owned(),
                message: "duplicate id (ids must be unique)".to_owned(),
            });
        }
        out.push(def);
    }
    Ok(out)
}

fn parse_bucket(i: usize, v: &Value) -> Result<BucketDef> {
    let mut scope = Scope {
        bucket: format!("buckets[{i}]"),
    };
    let t = scope.table(v, "")?;
    let id = match t.get("id") {
        None => return Err(scope.err("id", "missing (every bucket needs an id)")),
        Some(v) => scope.string(v, "id")?,
    };
    check_id(id).map_err(|m| scope.err("id", m))?;
    scope.bucket = format!("{id:?} (buckets[{i}])");
    scope.only_keys(
        t,
        "",
        &["id", "enabled", "criteria", "entry_limit", "entry_period", "min_dwell", "max_dwell"],
    )?;
    let enabled = match t.get("enabled") {
        None => true,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| scope.err("enabled", format!("expected true or false, found {}", kind(v))))?,
    };
    let period = scope.opt_duration(t, "entry_period")?;
    let limit = match t.get("entry_limit").map(|v| scope.string(v, "entry_limit")).transpose()? {
        None | Some("unlimited") => EntryLimit::Unlimited,
        Some("once") => EntryLimit::Once,
        Some("once_per_period") => EntryLimit::OncePerPeriod(period.ok_or_else(|| {
            scope.err("entry_period", "missing: entry_limit = \"once_per_period\" needs an entry_period (e.g. \"7d\")")
        })?),
        Some(other) => {
            return Err(scope.err(
                "entry_limit",
                format!("unknown value {other:?} (expected \"once\", \"once_per_period\" or \"unlimited\")"),
            ));
        }
    };
    if period.is_some() && !matches!(limit, EntryLimit::OncePerPeriod(_)) {
        return Err(scope.err(
            "entry_period",
            "only used with entry_limit = \"once_per_period\"",
        ));
    }
    let min_dwell = scope.opt_duration(t, "min_dwell")?;
    let max_dwell = scope.opt_duration(t, "max_dwell")?;
    if let (Some(min), Some(max)) = (min_dwell, max_dwell)
        && max <= min
    {
        return Err(scope.err("max_dwell", "must be longer than min_dwell"));
    }
    let criteria = match t.get("criteria") {
        None => return Err(scope.err("criteria", "missing (every bucket needs criteria)")),
        Some(c) => parse_node(&scope, c, "criteria", 0)?,
    };
    Ok(BucketDef {
        id: id.to_owned(),
        enabled,
        criteria,
        entry_limit: limit,
        min_dwell,
        max_dwell,
    })
}

fn check_id(id: &str) -> std::result::Result<(), String> {
    if id.is_empty() || id.len() > 64 {
        return Err("must be 1 to 64 characters".to_owned());
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(format!(
            "{id:?} contains {c:?}; use letters, digits, '_', '-' and '.' (ids are part of Redis keys and of `idem`)"
        ));
    }
    Ok(())
}

fn parse_node(scope: &Scope, v: &Value, field: &str, depth: usize) -> Result<Criteria> {
    if depth > MAX_DEPTH {
        return Err(scope.err(field, format!("nested deeper than {MAX_DEPTH} levels")));
    }
    let t = scope.table(v, field)?;
    if t.contains_key("collection") {
        return parse_event(scope, t, field).map(Criteria::Event);
    }
    let composite: Vec<&str> = ["all", "any", "not"]
        .into_iter()
        .filter(|k| t.contains_key(*k))
        .collect();
    let key = match composite.as_slice() {
        [one] => *one,
        [] => {
            return Err(scope.err(
                field,
                "expected `collection` (an event condition) or one of `all`, `any`, `not`",
            ));
        }
        _ => {
            return Err(scope.err(
                field,
                format!("give only one of `all`, `any`, `not` per table (found {})", composite.join(", ")),
            ));
        }
    };
    scope.only_keys(t, field, &[key])?;
    let at = join(field, key);
    let inner = &t[key];
    if key == "not" {
        return Ok(Criteria::Not(Box::new(parse_node(scope, inner, &at, depth + 1)?)));
    }
    let list = inner
        .as_array()
        .ok_or_else(|| scope.err(&at, format!("expected an array of conditions, found {}", kind(inner))))?;
    if list.is_empty() {
        return Err(scope.err(&at, "empty: give at least one condition"));
    }
    let children = list
        .iter()
        .enumerate()
        .map(|(i, c)| parse_node(scope, c, &format!("{at}[{i}]"), depth + 1))
        .collect::<Result<Vec<_>>>()?;
    Ok(if key == "all" {
        Criteria::All(children)
    } else {
        Criteria::Any(children)
    })
}

fn parse_event(scope: &Scope, t: &Map<String, Value>, field: &str) -> Result<EventCondition> {
    scope.only_keys(
        t,
        field,
        &["collection", "operation", "record", "check", "operator", "value", "within"],
    )?;
    let cf = join(field, "collection");
    let collection = parse_collection(scope.string(&t["collection"], &cf)?)
        .map_err(|m| scope.err(&cf, m))?;
    let operations = match t.get("operation") {
        None => Vec::new(),
        Some(v) => parse_operations(scope, v, &join(field, "operation"))?,
    };
    let record = match t.get("record") {
        None => Vec::new(),
        Some(v) => {
            let rf = join(field, "record");
            let list = v
                .as_array()
                .ok_or_else(|| scope.err(&rf, "expected an array of predicates like [{ path = \"langs\", contains = \"pt\" }]"))?;
            list.iter()
                .enumerate()
                .map(|(i, p)| parse_predicate(scope, p, &format!("{rf}[{i}]")))
                .collect::<Result<Vec<_>>>()?
        }
    };
    let check_name = match t.get("check") {
        None => "exists",
        Some(v) => scope.string(v, &join(field, "check"))?,
    };
    let (of, vf) = (join(field, "operator"), join(field, "value"));
    let check = match check_name {
        "exists" | "not_exists" => {
            for k in ["operator", "value"] {
                if t.contains_key(k) {
                    return Err(scope.err(&join(field, k), "only used with check = \"count\""));
                }
            }
            if check_name == "exists" {
                Check::Exists
            } else {
                Check::NotExists
            }
        }
        "count" => {
            let op = match t.get("operator") {
                None => return Err(scope.err(&of, "missing operator for check = \"count\" (gt, gte, lt, lte or eq)")),
                Some(v) => match scope.string(v, &of)? {
                    "gt" => CountOperator::Gt,
                    "gte" => CountOperator::Gte,
                    "lt" => CountOperator::Lt,
                    "lte" => CountOperator::Lte,
                    "eq" => CountOperator::Eq,
                    other => return Err(scope.err(&of, format!("unknown operator {other:?} (expected gt, gte, lt, lte or eq)"))),
                },
            };
            let value = match t.get("value") {
                None => return Err(scope.err(&vf, "missing value for check = \"count\"")),
                Some(v) => v
                    .as_u64()
                    .filter(|n| *n <= MAX_COUNT)
                    .ok_or_else(|| scope.err(&vf, format!("expected a whole number from 0 to {MAX_COUNT}, found {v}")))?,
            };
            Check::Count {
                operator: op,
                value: u32::try_from(value).unwrap_or(u32::MAX),
            }
        }
        other => {
            return Err(scope.err(
                &join(field, "check"),
                format!("unknown check {other:?} (expected \"exists\", \"not_exists\" or \"count\")"),
            ));
        }
    };
    let within = t
        .get("within")
        .map(|v| scope.duration(v, &join(field, "within")))
        .transpose()?;
    Ok(EventCondition {
        collection,
        operations,
        record,
        check,
        within,
    })
}

fn parse_operations(scope: &Scope, v: &Value, field: &str) -> Result<Vec<OperationKind>> {
    let one = |s: &Value, f: &str| -> Result<OperationKind> {
        match scope.string(s, f)? {
            "create" => Ok(OperationKind::Create),
            "update" => Ok(OperationKind::Update),
            "delete" => Ok(OperationKind::Delete),
            other => Err(scope.err(f, format!("unknown operation {other:?} (expected create, update or delete)"))),
        }
    };
    match v {
        Value::Array(list) if list.is_empty() => {
            Err(scope.err(field, "empty list (leave `operation` out to match any)"))
        }
        Value::Array(list) => list
            .iter()
            .enumerate()
            .map(|(i, s)| one(s, &format!("{field}[{i}]")))
            .collect(),
        other => Ok(vec![one(other, field)?]),
    }
}

/// `app.bsky.feed.post` (an NSID: 3+ dot-separated segments) or `app.bsky.graph.*`.
fn parse_collection(s: &str) -> std::result::Result<CollectionPattern, String> {
    let hint = "expected an NSID (\"app.bsky.feed.post\") or a prefix ending in \".*\" (\"app.bsky.graph.*\")";
    let (body, prefix) = match s.strip_suffix(".*") {
        Some(p) => (p, true),
        None => (s, false),
    };
    let segments: Vec<&str> = body.split('.').collect();
    let ok_segment = |seg: &&str| {
        !seg.is_empty()
            && seg.len() <= 63
            && seg.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !seg.starts_with('-')
            && !seg.ends_with('-')
    };
    if body.len() > 317 || !segments.iter().all(ok_segment) || (!prefix && segments.len() < 3) {
        return Err(format!("unknown collection syntax {s:?}: {hint}"));
    }
    Ok(if prefix {
        CollectionPattern::Prefix(format!("{body}."))
    } else {
        CollectionPattern::Exact(body.to_owned())
    })
}

fn parse_predicate(scope: &Scope, v: &Value, field: &str) -> Result<Predicate> {
    let t = scope.table(v, field)?;
    scope.only_keys(t, field, &["path", "eq", "ne", "in", "contains", "exists", "gt", "lt"])?;
    let pf = join(field, "path");
    let path = match t.get("path") {
        None => return Err(scope.err(&pf, "missing (the record field to test, e.g. \"langs\" or \"reply.root.uri\")")),
        Some(p) => scope.string(p, &pf)?,
    };
    let segments: Vec<String> = path.split('.').map(str::to_owned).collect();
    if segments.iter().any(String::is_empty) {
        return Err(scope.err(&pf, format!("{path:?} has an empty segment")));
    }
    let scalar = |key: &str| -> Result<Value> {
        let v = &t[key];
        match v {
            Value::String(_) | Value::Number(_) | Value::Bool(_) => Ok(v.clone()),
            _ => Err(scope.err(&join(field, key), format!("expected a string, number or boolean, found {}", kind(v)))),
        }
    };
    let mut tests = Vec::new();
    for key in ["eq", "ne", "in", "contains", "exists", "gt", "lt"] {
        if !t.contains_key(key) {
            continue;
        }
        let kf = join(field, key);
        tests.push(match key {
            "eq" => Test::Eq(scalar(key)?),
            "ne" => Test::Ne(scalar(key)?),
            "contains" => Test::Contains(scalar(key)?),
            "exists" => Test::Exists(
                t[key]
                    .as_bool()
                    .ok_or_else(|| scope.err(&kf, "expected true or false"))?,
            ),
            "gt" | "lt" => {
                let v = scalar(key)?;
                if v.is_boolean() {
                    return Err(scope.err(&kf, "expected a number or a string"));
                }
                if key == "gt" { Test::Gt(v) } else { Test::Lt(v) }
            }
            _ => {
                let list = t[key]
                    .as_array()
                    .filter(|l| !l.is_empty())
                    .ok_or_else(|| scope.err(&kf, "expected a non-empty array of values"))?;
                if list.iter().any(|x| !(x.is_string() || x.is_number() || x.is_boolean())) {
                    return Err(scope.err(&kf, "every value must be a string, number or boolean"));
                }
                Test::In(list.clone())
            }
        });
    }
    if tests.is_empty() {
        return Err(scope.err(field, "no test: give one of eq, ne, in, contains, exists, gt, lt"));
    }
    Ok(Predicate {
        path: segments,
        tests,
    })
}
