//! Bucket file → validated [`BucketDef`]s. The file arrives as a JSON-shaped tree (settings
//! decodes the TOML; it is the only place reading files) and is walked by hand rather than
//! through serde derives, so every error names the bucket (`id`, or its position when the id
//! itself is wrong) and the exact field (`criteria.all[1].value`).
//!
//! Failure: the first problem found, as a [`BucketConfigError`]; the process refuses to start.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Map, Value};

use super::config::{BucketDef, Criteria, EntryLimit};

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

pub(super) type Result<T> = std::result::Result<T, BucketConfigError>;

/// Errors of one bucket carry its display name.
pub(super) struct Scope {
    pub(super) bucket: String,
}

impl Scope {
    pub(super) fn err(&self, field: &str, message: impl Into<String>) -> BucketConfigError {
        BucketConfigError {
            bucket: self.bucket.clone(),
            field: field.to_owned(),
            message: message.into(),
        }
    }

    pub(super) fn table<'v>(&self, v: &'v Value, field: &str) -> Result<&'v Map<String, Value>> {
        v.as_object()
            .ok_or_else(|| self.err(field, format!("expected a table, found {}", kind(v))))
    }

    pub(super) fn only_keys(
        &self,
        t: &Map<String, Value>,
        field: &str,
        allowed: &[&str],
    ) -> Result<()> {
        match t.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(k) => Err(self.err(
                &join(field, k),
                format!("unknown key (expected one of: {})", allowed.join(", ")),
            )),
            None => Ok(()),
        }
    }

    pub(super) fn string<'v>(&self, v: &'v Value, field: &str) -> Result<&'v str> {
        v.as_str()
            .ok_or_else(|| self.err(field, format!("expected a string, found {}", kind(v))))
    }

    pub(super) fn duration(&self, v: &Value, field: &str) -> Result<Duration> {
        let s = self.string(v, field)?;
        let d = humantime::parse_duration(s.trim()).map_err(|e| {
            self.err(
                field,
                format!("invalid duration {s:?}: {e} (use e.g. \"90s\", \"1h\", \"7d\")"),
            )
        })?;
        if d.is_zero() {
            return Err(self.err(field, "must be longer than zero"));
        }
        Ok(d)
    }

    pub(super) fn opt_duration(
        &self,
        t: &Map<String, Value>,
        key: &str,
    ) -> Result<Option<Duration>> {
        t.get(key).map(|v| self.duration(v, key)).transpose()
    }
}

pub(super) fn join(field: &str, key: &str) -> String {
    if field.is_empty() {
        key.to_owned()
    } else {
        format!("{field}.{key}")
    }
}

pub(super) fn kind(v: &Value) -> &'static str {
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
        file.err(
            "buckets",
            "expected [[buckets]] entries (an array of tables)",
        )
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
        &[
            "id",
            "enabled",
            "criteria",
            "entry_limit",
            "entry_period",
            "min_dwell",
            "max_dwell",
        ],
    )?;
    let enabled = match t.get("enabled") {
        None => true,
        Some(v) => v.as_bool().ok_or_else(|| {
            scope.err(
                "enabled",
                format!("expected true or false, found {}", kind(v)),
            )
        })?,
    };
    let period = scope.opt_duration(t, "entry_period")?;
    let limit = match t
        .get("entry_limit")
        .map(|v| scope.string(v, "entry_limit"))
        .transpose()?
    {
        None | Some("unlimited") => EntryLimit::Unlimited,
        Some("once") => EntryLimit::Once,
        Some("once_per_period") => EntryLimit::OncePerPeriod(period.ok_or_else(|| {
            scope.err(
                "entry_period",
                "missing: entry_limit = \"once_per_period\" needs an entry_period (e.g. \"7d\")",
            )
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
        return super::parse_condition::parse_event(scope, t, field).map(Criteria::Event);
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
                format!(
                    "give only one of `all`, `any`, `not` per table (found {})",
                    composite.join(", ")
                ),
            ));
        }
    };
    scope.only_keys(t, field, &[key])?;
    let at = join(field, key);
    let inner = &t[key];
    if key == "not" {
        return Ok(Criteria::Not(Box::new(parse_node(
            scope,
            inner,
            &at,
            depth + 1,
        )?)));
    }
    let list = inner.as_array().ok_or_else(|| {
        scope.err(
            &at,
            format!("expected an array of conditions, found {}", kind(inner)),
        )
    })?;
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
