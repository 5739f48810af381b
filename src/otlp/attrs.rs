//! Reading OTel attributes, and turning them (and a span's scope and
//! resource) into bounded JSON for a span's metadata.

use base64::Engine;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValueKind;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use serde_json::{Map, Value};

use super::MAX_NAME_CHARS;

/// Looks up OTel attributes by key.
pub(super) struct Attrs<'a>(pub(super) &'a [KeyValue]);

impl<'a> Attrs<'a> {
    pub(super) fn get(&self, key: &str) -> Option<&'a AnyValue> {
        self.0
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
    }

    pub(super) fn str(&self, key: &str) -> Option<&'a str> {
        match self.get(key)?.value.as_ref()? {
            AnyValueKind::StringValue(s) => Some(s),
            _ => None,
        }
    }

    /// A string as it is; any other value as its JSON text.
    pub(super) fn text(&self, key: &str) -> Option<String> {
        match any_to_json(self.get(key)?) {
            Value::String(s) => Some(s),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }

    pub(super) fn bool(&self, key: &str) -> bool {
        matches!(
            self.get(key).and_then(|v| v.value.as_ref()),
            Some(AnyValueKind::BoolValue(true))
        )
    }

    pub(super) fn double(&self, key: &str) -> Option<f64> {
        match self.get(key)?.value.as_ref()? {
            AnyValueKind::DoubleValue(d) if d.is_finite() => Some(*d),
            AnyValueKind::IntValue(i) => Some(*i as f64),
            _ => None,
        }
    }

    /// An integer, also when sent as a double or a numeric string.
    pub(super) fn int(&self, key: &str) -> Option<i64> {
        match self.get(key)?.value.as_ref()? {
            AnyValueKind::IntValue(i) => Some(*i),
            AnyValueKind::DoubleValue(d) if d.is_finite() => Some(*d as i64),
            AnyValueKind::StringValue(s) => s.trim().parse().ok(),
            _ => None,
        }
    }
}

pub(super) fn any_to_json(value: &AnyValue) -> Value {
    match &value.value {
        None => Value::Null,
        Some(AnyValueKind::StringValue(s)) => Value::String(s.clone()),
        Some(AnyValueKind::BoolValue(b)) => Value::Bool(*b),
        Some(AnyValueKind::IntValue(i)) => Value::from(*i),
        Some(AnyValueKind::DoubleValue(d)) => {
            serde_json::Number::from_f64(*d).map_or(Value::Null, Value::Number)
        }
        Some(AnyValueKind::ArrayValue(a)) => {
            Value::Array(a.values.iter().map(any_to_json).collect())
        }
        Some(AnyValueKind::KvlistValue(kv)) => Value::Object(attributes_json(&kv.values, &[])),
        Some(AnyValueKind::BytesValue(b)) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        // An index into a profile's string table: meaningless in a trace.
        Some(AnyValueKind::StringValueStrindex(_)) => Value::Null,
    }
}

/// Attributes as a JSON object, leaving out `skip`.
pub(super) fn attributes_json(attrs: &[KeyValue], skip: &[&str]) -> Map<String, Value> {
    attrs
        .iter()
        .filter(|kv| !skip.contains(&kv.key.as_str()))
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().map_or(Value::Null, any_to_json),
            )
        })
        .collect()
}

pub(super) fn scope_json(scope: Option<&InstrumentationScope>) -> Value {
    let mut out = Map::new();
    if let Some(scope) = scope.filter(|s| !s.name.is_empty()) {
        out.insert("name".into(), Value::String(scope.name.clone()));
        if !scope.version.is_empty() {
            out.insert("version".into(), Value::String(scope.version.clone()));
        }
    }
    Value::Object(out)
}

/// Serializes `fields` as one JSON object of at most `limit` bytes: when
/// too large, object members are dropped from the end of the largest
/// objects and `"truncated": true` is added.
pub(super) fn bounded_json(fields: &[(&str, &Value)], limit: usize) -> String {
    // The common case, a span that fits, is serialized from the fields as
    // they are, in the order a JSON object keeps its keys, without a copy.
    let text = ObjectOf(fields).to_string();
    if text.len() <= limit {
        return text;
    }
    let mut object: Map<String, Value> = fields
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).clone()))
        .collect();
    object.insert("truncated".into(), Value::Bool(true));
    // Each member of the nested objects is measured once, then the largest
    // go until the estimate fits: a span with very many attributes costs
    // one sort, not one serialization per dropped member.
    let mut members: Vec<(usize, String, String)> = object
        .iter()
        .filter_map(|(field, v)| v.as_object().map(|inner| (field, inner)))
        .flat_map(|(field, inner)| {
            inner.iter().map(move |(key, v)| {
                // `"key":value,`
                let size = key.len() + v.to_string().len() + 4;
                (size, field.clone(), key.clone())
            })
        })
        .collect();
    members.sort_unstable_by_key(|m| std::cmp::Reverse(m.0));
    let mut excess = text.len() + r#","truncated":true"#.len() - limit;
    for (size, field, key) in members {
        if excess == 0 {
            break;
        }
        if let Some(Value::Object(inner)) = object.get_mut(&field) {
            inner.remove(&key);
        }
        excess = excess.saturating_sub(size);
    }
    let mut text = Value::Object(object.clone()).to_string();
    // Whatever is still too large (a field that is not an object) goes whole.
    while text.len() > limit {
        let largest = object
            .iter()
            .filter(|(k, _)| k.as_str() != "truncated")
            .max_by_key(|(_, v)| v.to_string().len())
            .map(|(k, _)| k.clone());
        let Some(key) = largest else { break };
        object.remove(&key);
        text = Value::Object(object.clone()).to_string();
    }
    text
}

/// Borrowed fields written as the JSON object a `Map` of them would be:
/// keys sorted, a repeated key's last value.
struct ObjectOf<'a>(&'a [(&'a str, &'a Value)]);

impl std::fmt::Display for ObjectOf<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut fields: Vec<&(&str, &Value)> = self.0.iter().collect();
        // Stable, so that of equal keys the last stays last.
        fields.sort_by_key(|(k, _)| *k);
        f.write_str("{")?;
        let mut first = true;
        for (i, (key, value)) in fields.iter().enumerate() {
            if fields.get(i + 1).is_some_and(|(next, _)| next == key) {
                continue;
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            let key = serde_json::to_string(key).map_err(|_| std::fmt::Error)?;
            write!(f, "{key}:{value}")?;
        }
        f.write_str("}")
    }
}

pub(super) fn truncate_chars(s: String) -> String {
    match s.char_indices().nth(MAX_NAME_CHARS) {
        Some((at, _)) => s[..at].to_owned(),
        None => s,
    }
}
