//! The event condition part of a bucket file: collection pattern, operations, record
//! predicates, check and window, each error naming the bucket and the field (see
//! [`super::parse`], which walks the rest of the file).
//!
//! Failure: the first problem found, as a [`BucketConfigError`](super::BucketConfigError).

use serde_json::{Map, Value};

use super::config::{
    Check, CollectionPattern, CountOperator, EventCondition, OperationKind, Predicate, Test,
};
use super::parse::{MAX_COUNT, Result, Scope, join, kind};

pub(super) fn parse_event(
    scope: &Scope,
    t: &Map<String, Value>,
    field: &str,
) -> Result<EventCondition> {
    scope.only_keys(
        t,
        field,
        &[
            "collection",
            "operation",
            "record",
            "check",
            "operator",
            "value",
            "within",
        ],
    )?;
    let cf = join(field, "collection");
    let collection =
        parse_collection(scope.string(&t["collection"], &cf)?).map_err(|m| scope.err(&cf, m))?;
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
                None => {
                    return Err(scope.err(
                        &of,
                        "missing operator for check = \"count\" (gt, gte, lt, lte or eq)",
                    ));
                }
                Some(v) => match scope.string(v, &of)? {
                    "gt" => CountOperator::Gt,
                    "gte" => CountOperator::Gte,
                    "lt" => CountOperator::Lt,
                    "lte" => CountOperator::Lte,
                    "eq" => CountOperator::Eq,
                    other => {
                        return Err(scope.err(
                            &of,
                            format!("unknown operator {other:?} (expected gt, gte, lt, lte or eq)"),
                        ));
                    }
                },
            };
            let value = match t.get("value") {
                None => return Err(scope.err(&vf, "missing value for check = \"count\"")),
                Some(v) => v.as_u64().filter(|n| *n <= MAX_COUNT).ok_or_else(|| {
                    scope.err(
                        &vf,
                        format!("expected a whole number from 0 to {MAX_COUNT}, found {v}"),
                    )
                })?,
            };
            Check::Count {
                operator: op,
                value: u32::try_from(value).unwrap_or(u32::MAX),
            }
        }
        other => {
            return Err(scope.err(
                &join(field, "check"),
                format!(
                    "unknown check {other:?} (expected \"exists\", \"not_exists\" or \"count\")"
                ),
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
            other => Err(scope.err(
                f,
                format!("unknown operation {other:?} (expected create, update or delete)"),
            )),
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
    scope.only_keys(
        t,
        field,
        &["path", "eq", "ne", "in", "contains", "exists", "gt", "lt"],
    )?;
    let pf = join(field, "path");
    let path = match t.get("path") {
        None => {
            return Err(scope.err(
                &pf,
                "missing (the record field to test, e.g. \"langs\" or \"reply.root.uri\")",
            ));
        }
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
            _ => Err(scope.err(
                &join(field, key),
                format!("expected a string, number or boolean, found {}", kind(v)),
            )),
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
                if key == "gt" {
                    Test::Gt(v)
                } else {
                    Test::Lt(v)
                }
            }
            _ => {
                let list = t[key]
                    .as_array()
                    .filter(|l| !l.is_empty())
                    .ok_or_else(|| scope.err(&kf, "expected a non-empty array of values"))?;
                if list
                    .iter()
                    .any(|x| !(x.is_string() || x.is_number() || x.is_boolean()))
                {
                    return Err(scope.err(&kf, "every value must be a string, number or boolean"));
                }
                Test::In(list.clone())
            }
        });
    }
    if tests.is_empty() {
        return Err(scope.err(
            field,
            "no test: give one of eq, ne, in, contains, exists, gt, lt",
        ));
    }
    Ok(Predicate {
        path: segments,
        tests,
    })
}
