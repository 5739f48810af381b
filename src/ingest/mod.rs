//! The JSON ingest wire model (`TraceRequest`, `SpanRequest`, `EventRequest`)
//! and its validation into domain types. No I/O here, so it can be fuzzed and
//! tested without a server.

use std::collections::{BTreeMap, HashSet};

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::model::{
    Aggregates, NewEvent, NewSpan, NewTrace, SpanType, MAX_COST_USD, MAX_LATENCY_MS, MAX_TOKENS,
};
use crate::pricing::Pricing;

mod shape;
pub use shape::{BatchShape, Counts, TraceShape};

pub const MAX_BATCH: usize = 10_000;
pub const MAX_TAGS: usize = 20;
pub const MAX_TAG_CHARS: usize = 64;
pub const MAX_SPANS: usize = 5_000;
pub const MAX_EVENTS: usize = 1_000;
pub const MAX_NAME_CHARS: usize = 1_024;
pub const MAX_ID_CHARS: usize = 256;

/// A batch of traces (the reference's `BatchRequest`): stored all or none.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct BatchRequest {
    /// 1 to 10,000 traces.
    #[schema(min_items = 1, max_items = 10_000)]
    pub traces: Vec<TraceRequest>,
}

/// A trace as the SDKs send it (the reference's `TraceRequest`). What it
/// leaves out (its model, times, latency, cost) comes from its spans.
#[derive(Debug, Default, Deserialize, Serialize, utoipa::ToSchema)]
pub struct TraceRequest {
    /// The trace's id, a UUID; one is made when left out. The same trace
    /// sent again is a duplicate, stored once.
    #[serde(default)]
    #[schema(format = "uuid")]
    pub id: Option<String>,
    /// The SDK's free-form project reference (an id, slug or name); left
    /// out, the API key's project.
    #[serde(default)]
    pub project_id: Option<String>,
    /// The session (conversation) the trace belongs to: at most 256 characters.
    #[serde(default)]
    pub session_id: Option<String>,
    /// The sender's own id for the trace: at most 256 characters.
    #[serde(default)]
    pub external_id: Option<String>,
    /// At most 1,024 characters.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub input: Option<String>,
    #[serde(default)]
    pub output: Option<String>,
    /// At most 1,024 characters; left out, the model of its LLM spans.
    #[serde(default)]
    pub model: Option<String>,
    /// Left out, from `started_at` to `ended_at`.
    #[serde(default)]
    pub latency_ms: Option<u64>,
    /// In USD; left out, the sum of its spans' costs.
    #[serde(default)]
    pub cost: Option<f64>,
    /// What went wrong, when an error left the trace.
    #[serde(default)]
    pub error: Option<String>,
    /// Key → value tags, or a list of strings (see [`tags_schema`]).
    #[serde(default)]
    #[schema(schema_with = tags_schema)]
    pub tags: Tags,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// At most 5,000 spans a trace (and the server's limit a request).
    #[serde(default)]
    pub spans: Option<Vec<SpanRequest>>,
    /// At most 1,000 events a trace.
    #[serde(default)]
    pub events: Option<Vec<EventRequest>>,
    /// RFC 3339; left out, the start of its first span (or the time it arrives).
    #[serde(default)]
    #[schema(format = DateTime)]
    pub started_at: Option<String>,
    /// RFC 3339; left out, the end of its last span.
    #[serde(default)]
    #[schema(format = DateTime)]
    pub ended_at: Option<String>,
}

/// One step of a trace (the reference's `SpanRequest`).
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct SpanRequest {
    /// Unique within the trace, 1 to 256 characters; one is made when left out.
    #[serde(default)]
    pub id: Option<String>,
    /// The span it is a step of.
    #[serde(default)]
    pub parent_span_id: Option<String>,
    /// 1 to 1,024 characters.
    pub name: String,
    #[serde(rename = "type")]
    #[schema(schema_with = span_type_schema)]
    pub span_type: SpanType,
    #[serde(default)]
    pub input: Option<String>,
    #[serde(default)]
    pub output: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    /// Left out, from `start_time` to `end_time`.
    #[serde(default)]
    pub latency_ms: Option<u64>,
    /// In USD; left out, `metadata.cost_usd` or the price of its tokens.
    #[serde(default)]
    pub cost: Option<f64>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub prompt_tokens: Option<u32>,
    #[serde(default)]
    pub completion_tokens: Option<u32>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// RFC 3339.
    #[serde(default)]
    #[schema(format = DateTime)]
    pub start_time: Option<String>,
    /// RFC 3339.
    #[serde(default)]
    #[schema(format = DateTime)]
    pub end_time: Option<String>,
}

/// Something that happened during a trace (the reference's `EventRequest`).
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct EventRequest {
    #[serde(default)]
    pub id: Option<String>,
    /// The span it happened in.
    #[serde(default)]
    pub span_id: Option<String>,
    /// `info` (the default), `warn` (or `warning`), `error` or `debug`.
    #[serde(default)]
    #[schema(example = "info")]
    pub level: Option<String>,
    pub message: String,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// RFC 3339; left out, the trace's start.
    #[serde(default)]
    #[schema(format = DateTime)]
    pub timestamp: Option<String>,
}

/// `tags`' schema: a list of strings or an object of string values.
fn tags_schema() -> utoipa::openapi::Schema {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
    let string = || ObjectBuilder::new().schema_type(Type::String);
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .additional_properties(Some(string().max_length(Some(MAX_TAG_CHARS))))
                .max_properties(Some(MAX_TAGS)),
        )
        .item(
            ArrayBuilder::new()
                .items(string().max_length(Some(MAX_TAG_CHARS)))
                .max_items(Some(MAX_TAGS)),
        )
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .description(Some(
            "User-defined key→value tags for the trace (or a list of strings). Maximum 20 \
             keys; keys and values are strings up to 64 characters each. Queryable via the \
             `tag_key` / `tag_value` query parameters on `GET /v1/traces`. Omit or send an \
             empty object when unused.",
        ))
        .build()
        .into()
}

/// A span's `type`.
fn span_type_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["llm", "tool", "retrieval", "other"]))
        .description(Some(
            "What the step was: `llm`, `tool`, `retrieval` or `other`.",
        ))
        .build()
}

/// Tags arrive either as a list of strings (the SDK's `tags=[...]`) or as a
/// key → value object (its `tag_map`, sent under the same name).
#[derive(Debug, Default)]
pub enum Tags {
    #[default]
    None,
    List(Vec<String>),
    Map(BTreeMap<String, String>),
}

impl<'de> Deserialize<'de> for Tags {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        const SHAPE: &str = "must be a list of strings or an object of string values";
        match Value::deserialize(d)? {
            Value::Null => Ok(Tags::None),
            Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(D::Error::custom(SHAPE)),
                })
                .collect::<Result<_, _>>()
                .map(Tags::List),
            Value::Object(map) => map
                .into_iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k, s)),
                    _ => Err(D::Error::custom(SHAPE)),
                })
                .collect::<Result<_, _>>()
                .map(Tags::Map),
            _ => Err(D::Error::custom(SHAPE)),
        }
    }
}

impl Serialize for Tags {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Tags::None => s.serialize_none(),
            Tags::List(list) => list.serialize(s),
            Tags::Map(map) => map.serialize(s),
        }
    }
}

/// A field that failed validation, named by its path in the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub reason: String,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// Where a field sits in the request, written out only for an error: most
/// requests are valid, and a path per span would cost an allocation each.
enum Path<'a> {
    /// A trace: `""` or `"traces[3]."`.
    Trace(&'a str),
    /// An item of one of a trace's lists: `"traces[3].spans[0]."`.
    Item(&'a str, &'static str, usize),
}

impl std::fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Path::Trace(at) => f.write_str(at),
            Path::Item(at, list, i) => write!(f, "{at}{list}[{i}]."),
        }
    }
}

fn invalid(field: String, reason: impl Into<String>) -> Invalid {
    Invalid {
        field,
        reason: reason.into(),
    }
}

/// Checks the number of traces in a batch.
pub fn check_batch_size(len: usize) -> Result<(), Invalid> {
    if (1..=MAX_BATCH).contains(&len) {
        Ok(())
    } else {
        Err(invalid(
            "traces".into(),
            format!("a batch holds 1 to {MAX_BATCH} traces (got {len})"),
        ))
    }
}

/// Parses an RFC 3339 time; one without an offset is taken as UTC. Years
/// outside 1–9999 are refused, so differences of two times cannot overflow.
pub fn parse_time(raw: &str) -> Option<i64> {
    let utc = match chrono::DateTime::parse_from_rfc3339(raw) {
        Ok(t) => t.with_timezone(&chrono::Utc),
        Err(_) => ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
            .iter()
            .find_map(|f| chrono::NaiveDateTime::parse_from_str(raw, f).ok())?
            .and_utc(),
    };
    (1..=9999)
        .contains(&chrono::Datelike::year(&utc))
        .then(|| utc.timestamp_micros())
}

/// Whole milliseconds from `start` to `end`, never negative.
fn millis_between(start: i64, end: i64) -> i64 {
    (end.saturating_sub(start) / 1000).max(0)
}

thread_local! {
    /// Each request thread's buffer for serializing a trace to hash it.
    static CANONICAL: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A buffer larger than this is not kept for the next trace.
const CANONICAL_KEEP: usize = 1 << 20;

/// The SHA-256 of the trace's canonical JSON, which decides whether a trace
/// sent again is the same. It is serialized whole, then hashed in one call
/// (fed to the digest piece by piece, the many small writes cost more than
/// the hashing), into a buffer each thread keeps, so that growing it costs
/// no copies once it has grown.
fn content_hash(trace: &TraceRequest) -> serde_json::Result<[u8; 32]> {
    CANONICAL.with_borrow_mut(|buffer| {
        buffer.clear();
        let written = serde_json::to_writer(&mut *buffer, trace);
        let hash = written.map(|()| Sha256::digest(&buffer[..]).into());
        if buffer.capacity() > CANONICAL_KEEP {
            *buffer = Vec::new();
        }
        hash
    })
}

impl TraceRequest {
    /// Validates the request and derives what the sender left out. `at` names
    /// the trace in error messages (`""` or `"traces[3]."`); `now` is used
    /// when no start time can be found.
    pub fn into_new_trace(
        self,
        at: &str,
        now: i64,
        pricing: &Pricing,
    ) -> Result<NewTrace, Invalid> {
        let path = Path::Trace(at);
        let content_hash =
            content_hash(&self).map_err(|e| invalid(format!("{at}body"), e.to_string()))?;
        let id = match &self.id {
            Some(raw) => uuid::Uuid::parse_str(raw)
                .map_err(|_| invalid(format!("{at}id"), "must be a UUID"))?
                .hyphenated()
                .to_string(),
            None => uuid::Uuid::now_v7().hyphenated().to_string(),
        };
        check_len(&path, "name", &self.name, MAX_NAME_CHARS)?;
        check_len(&path, "model", &self.model, MAX_NAME_CHARS)?;
        check_len(&path, "session_id", &self.session_id, MAX_ID_CHARS)?;
        check_len(&path, "external_id", &self.external_id, MAX_ID_CHARS)?;
        let latency_ms = check_latency(&path, "latency_ms", self.latency_ms)?;
        let cost = check_cost(&path, "cost", self.cost)?;
        let (tags, tag_map) = check_tags(at, self.tags)?;
        let started_at = opt_time(&path, "started_at", &self.started_at)?;
        let ended_at = opt_time(&path, "ended_at", &self.ended_at)?;

        let span_requests = self.spans.unwrap_or_default();
        if span_requests.len() > MAX_SPANS {
            return Err(invalid(
                format!("{at}spans"),
                format!(
                    "at most {MAX_SPANS} spans per trace (got {})",
                    span_requests.len()
                ),
            ));
        }
        let mut seen = HashSet::with_capacity(span_requests.len());
        let mut spans = Vec::with_capacity(span_requests.len());
        for (i, span) in span_requests.into_iter().enumerate() {
            let span = span.into_new_span(&Path::Item(at, "spans", i), pricing)?;
            if !seen.insert(span.id.clone()) {
                return Err(invalid(
                    format!("{at}spans[{i}].id"),
                    format!("span id {} appears twice in the trace", span.id),
                ));
            }
            spans.push(span);
        }
        let event_requests = self.events.unwrap_or_default();
        if event_requests.len() > MAX_EVENTS {
            return Err(invalid(
                format!("{at}events"),
                format!(
                    "at most {MAX_EVENTS} events per trace (got {})",
                    event_requests.len()
                ),
            ));
        }

        // What the trace does not state itself comes from its spans, by
        // the rule OTLP traces follow too. Its `error` is its own: the SDK
        // sets it when an exception leaves the trace and sends null when
        // one was handled inside, so a failed span does not make it fail.
        let (derived, _) = Aggregates::of_request(&spans);
        let started_at = started_at.or(derived.started).unwrap_or(now);
        let ended_at = ended_at.or(derived.ended);
        let total_token_count = derived.tokens;
        let cost = cost.or(derived.cost);
        let model = self.model.or_else(|| derived.model.map(str::to_owned));
        let events = event_requests
            .into_iter()
            .enumerate()
            .map(|(i, e)| e.into_new_event(&Path::Item(at, "events", i), started_at))
            .collect::<Result<Vec<_>, _>>()?;
        let latency_ms = latency_ms.or_else(|| ended_at.map(|end| millis_between(started_at, end)));

        Ok(NewTrace {
            id,
            session_id: self.session_id,
            external_id: self.external_id,
            name: self.name,
            input: self.input,
            output: self.output,
            model,
            latency_ms,
            cost,
            error: self.error,
            tags,
            tag_map,
            metadata: metadata_json(self.metadata),
            total_token_count,
            started_at,
            ended_at,
            spans,
            events,
            content_hash,
        })
    }
}

impl SpanRequest {
    fn into_new_span(self, at: &Path, pricing: &Pricing) -> Result<NewSpan, Invalid> {
        let id = match self.id {
            Some(id) if id.is_empty() || id.chars().count() > MAX_ID_CHARS => {
                return Err(invalid(
                    format!("{at}id"),
                    format!("must be 1 to {MAX_ID_CHARS} characters"),
                ))
            }
            Some(id) => id,
            None => uuid::Uuid::now_v7().hyphenated().to_string(),
        };
        check_len(at, "parent_span_id", &self.parent_span_id, MAX_ID_CHARS)?;
        if self.name.is_empty() || self.name.chars().count() > MAX_NAME_CHARS {
            return Err(invalid(
                format!("{at}name"),
                format!("must be 1 to {MAX_NAME_CHARS} characters"),
            ));
        }
        check_len(at, "model", &self.model, MAX_NAME_CHARS)?;
        let start_time = opt_time(at, "start_time", &self.start_time)?;
        let end_time = opt_time(at, "end_time", &self.end_time)?;
        let latency_ms = check_latency(at, "latency_ms", self.latency_ms)?.or_else(|| {
            start_time
                .zip(end_time)
                .map(|(start, end)| millis_between(start, end))
        });
        let metadata = metadata_json(self.metadata);
        let prompt_tokens = check_tokens(at, "prompt_tokens", self.prompt_tokens)?;
        let completion_tokens = check_tokens(at, "completion_tokens", self.completion_tokens)?;
        // The span's own cost, else `metadata.cost_usd`, else the price of
        // its tokens, fixed now so later price changes leave history alone.
        let cost = check_cost(at, "cost", self.cost)?
            .or_else(|| metadata_cost(&metadata))
            .or_else(|| {
                let model = self.model.as_deref()?;
                if prompt_tokens.is_none() && completion_tokens.is_none() {
                    return None;
                }
                pricing.cost(
                    model,
                    prompt_tokens.unwrap_or(0),
                    completion_tokens.unwrap_or(0),
                )
            });
        Ok(NewSpan {
            id,
            parent_span_id: self.parent_span_id,
            name: self.name,
            span_type: self.span_type,
            input: self.input,
            output: self.output,
            model: self.model,
            latency_ms,
            cost,
            error: self.error,
            prompt_tokens,
            completion_tokens,
            metadata,
            start_time,
            end_time,
            otel_trace_id: None,
            otel_span_id: None,
        })
    }
}

impl EventRequest {
    fn into_new_event(self, at: &Path, default_time: i64) -> Result<NewEvent, Invalid> {
        let level = match self.level.as_deref().unwrap_or("info") {
            "info" => "info",
            "warn" | "warning" => "warn",
            "error" => "error",
            "debug" => "debug",
            _ => {
                return Err(invalid(
                    format!("{at}level"),
                    "must be one of info, warn, error, debug",
                ))
            }
        };
        check_len(at, "id", &self.id, MAX_ID_CHARS)?;
        check_len(at, "span_id", &self.span_id, MAX_ID_CHARS)?;
        Ok(NewEvent {
            id: self
                .id
                .unwrap_or_else(|| uuid::Uuid::now_v7().hyphenated().to_string()),
            span_id: self.span_id,
            level: level.to_string(),
            message: self.message,
            metadata: metadata_json(self.metadata),
            timestamp: opt_time(at, "timestamp", &self.timestamp)?.unwrap_or(default_time),
        })
    }
}

fn metadata_json(metadata: Option<Map<String, Value>>) -> String {
    Value::Object(metadata.unwrap_or_default()).to_string()
}

fn check_len(at: &Path, field: &str, value: &Option<String>, max: usize) -> Result<(), Invalid> {
    match value {
        Some(v) if v.chars().count() > max => Err(invalid(
            format!("{at}{field}"),
            format!("at most {max} characters (got {})", v.chars().count()),
        )),
        _ => Ok(()),
    }
}

fn check_latency(at: &Path, field: &str, value: Option<u64>) -> Result<Option<i64>, Invalid> {
    value
        .map(|v| {
            i64::try_from(v)
                .ok()
                .filter(|ms| *ms <= MAX_LATENCY_MS)
                .ok_or_else(|| {
                    invalid(
                        format!("{at}{field}"),
                        format!("must be at most {MAX_LATENCY_MS} (a year in milliseconds)"),
                    )
                })
        })
        .transpose()
}

fn check_tokens(at: &Path, field: &str, value: Option<u32>) -> Result<Option<i64>, Invalid> {
    match value.map(i64::from) {
        Some(n) if n > MAX_TOKENS => Err(invalid(
            format!("{at}{field}"),
            format!("must be at most {MAX_TOKENS}"),
        )),
        other => Ok(other),
    }
}

/// `cost_usd` from a metadata object's JSON text, when it is a sane number.
pub fn metadata_cost(metadata: &str) -> Option<f64> {
    #[derive(serde::Deserialize)]
    struct Probe {
        cost_usd: Option<serde_json::Value>,
    }
    serde_json::from_str::<Probe>(metadata)
        .ok()?
        .cost_usd?
        .as_f64()
        .filter(|c| c.is_finite() && (0.0..=MAX_COST_USD).contains(c))
}

fn check_cost(at: &Path, field: &str, value: Option<f64>) -> Result<Option<f64>, Invalid> {
    match value {
        Some(c) if !c.is_finite() || !(0.0..=MAX_COST_USD).contains(&c) => Err(invalid(
            format!("{at}{field}"),
            format!("must be a number from 0 to {MAX_COST_USD} (USD)"),
        )),
        other => Ok(other),
    }
}

fn opt_time(at: &Path, field: &str, value: &Option<String>) -> Result<Option<i64>, Invalid> {
    value
        .as_deref()
        .map(|raw| {
            parse_time(raw).ok_or_else(|| {
                invalid(
                    format!("{at}{field}"),
                    "must be an RFC 3339 time such as 2026-01-02T03:04:05Z",
                )
            })
        })
        .transpose()
}

fn check_tags(at: &str, tags: Tags) -> Result<(Vec<String>, BTreeMap<String, String>), Invalid> {
    let count = match &tags {
        Tags::None => 0,
        Tags::List(list) => list.len(),
        Tags::Map(map) => map.len(),
    };
    if count > MAX_TAGS {
        return Err(invalid(
            format!("{at}tags"),
            format!("at most {MAX_TAGS} tags (got {count})"),
        ));
    }
    let too_long = |s: &str| s.is_empty() || s.chars().count() > MAX_TAG_CHARS;
    match tags {
        Tags::None => Ok((Vec::new(), BTreeMap::new())),
        Tags::List(list) => {
            if let Some(tag) = list.iter().find(|t| too_long(t)) {
                return Err(invalid(
                    format!("{at}tags"),
                    format!(
                        "each tag must be 1 to {MAX_TAG_CHARS} characters (got {:?})",
                        tag
                    ),
                ));
            }
            Ok((list, BTreeMap::new()))
        }
        Tags::Map(map) => {
            if let Some((k, v)) = map
                .iter()
                .find(|(k, v)| too_long(k) || v.chars().count() > MAX_TAG_CHARS)
            {
                return Err(invalid(
                    format!("{at}tags.{k}"),
                    format!(
                        "tag keys must be 1 to {MAX_TAG_CHARS} characters and values at most {MAX_TAG_CHARS} (key {} chars, value {} chars)",
                        k.chars().count(),
                        v.chars().count()
                    ),
                ));
            }
            let list = map.iter().map(|(k, v)| format!("{k}:{v}")).collect();
            Ok((list, map))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> TraceRequest {
        serde_json::from_str(json).expect("test JSON parses")
    }

    #[test]
    fn derives_latency_tokens_cost_and_model_from_spans() {
        let t = parse(
            r#"{"started_at":"2026-01-01T00:00:00Z","ended_at":"2026-01-01T00:00:01.5Z",
                "spans":[{"name":"a","type":"llm","model":"gpt-4o","prompt_tokens":10,"completion_tokens":5,"cost":0.25},
                         {"name":"b","type":"tool","prompt_tokens":1,"cost":0.5}]}"#,
        )
        .into_new_trace("", 0, &Pricing::default())
        .expect("valid");
        assert_eq!(t.latency_ms, Some(1500));
        assert_eq!(t.total_token_count, 16);
        assert_eq!(t.cost, Some(0.75));
        assert_eq!(t.model.as_deref(), Some("gpt-4o"));
        assert_eq!(t.span_count_for_test(), 2);
    }

    #[test]
    fn names_the_offending_field() {
        let tags: BTreeMap<String, String> = (0..21)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .collect();
        let req = TraceRequest {
            tags: Tags::Map(tags),
            ..Default::default()
        };
        let err = req
            .into_new_trace("traces[2].", 0, &Pricing::default())
            .expect_err("too many tags");
        assert_eq!(err.field, "traces[2].tags");
        let err = parse(r#"{"id":"nope"}"#)
            .into_new_trace("", 0, &Pricing::default())
            .expect_err("bad id");
        assert_eq!(err.field, "id");
        let err = parse(r#"{"spans":[{"name":"a","type":"llm","start_time":"yesterday"}]}"#)
            .into_new_trace("", 0, &Pricing::default())
            .expect_err("bad time");
        assert_eq!(err.field, "spans[0].start_time");
    }

    #[test]
    fn same_request_same_hash_and_list_tags_kept() {
        let body = r#"{"id":"0190a8c4-5f7e-7cc1-9a3b-4d2e8f6a1b2c","tags":["a","b"],"metadata":{"z":1,"a":2}}"#;
        let a = parse(body)
            .into_new_trace("", 0, &Pricing::default())
            .expect("valid");
        let b = parse(body)
            .into_new_trace("", 0, &Pricing::default())
            .expect("valid");
        assert_eq!(a.content_hash, b.content_hash);
        assert_eq!(a.tags, vec!["a", "b"]);
        let c = parse(&body.replace("\"b\"", "\"c\""))
            .into_new_trace("", 0, &Pricing::default())
            .expect("valid");
        assert_ne!(a.content_hash, c.content_hash);
    }

    #[test]
    fn the_hash_is_that_of_the_canonical_json_whatever_was_hashed_before() {
        let small = r#"{"id":"0190a8c4-5f7e-7cc1-9a3b-4d2e8f6a1b2c","name":"a"}"#;
        // The hash stored with every trace so far: SHA-256 of the JSON.
        let expected: [u8; 32] =
            Sha256::digest(serde_json::to_vec(&parse(small)).expect("json")).into();
        let hash = |body: &str| {
            parse(body)
                .into_new_trace("", 0, &Pricing::default())
                .expect("valid")
                .content_hash
        };
        assert_eq!(hash(small), expected);
        // A trace larger than the kept buffer, then the small one again: the
        // thread's buffer holds nothing of the one before.
        let big = format!(
            r#"{{"name":"a","input":"{}"}}"#,
            "x".repeat(2 * CANONICAL_KEEP)
        );
        hash(&big);
        assert_eq!(hash(small), expected);
        let medium = format!(r#"{{"name":"a","input":"{}"}}"#, "y".repeat(1000));
        hash(&medium);
        assert_eq!(hash(small), expected);
    }

    #[test]
    fn fields_of_spans_and_events_are_named_by_their_path_in_the_batch() {
        let err = parse(r#"{"spans":[{"name":"a","type":"llm"},{"name":"","type":"llm"}]}"#)
            .into_new_trace("traces[2].", 0, &Pricing::default())
            .expect_err("empty span name");
        assert_eq!(err.field, "traces[2].spans[1].name");
        let err = parse(r#"{"events":[{"message":"m","level":"loud"}]}"#)
            .into_new_trace("traces[0].", 0, &Pricing::default())
            .expect_err("bad level");
        assert_eq!(err.field, "traces[0].events[0].level");
        let err = parse(r#"{"events":[{"message":"m","timestamp":"noon"}]}"#)
            .into_new_trace("", 0, &Pricing::default())
            .expect_err("bad time");
        assert_eq!(err.field, "events[0].timestamp");
    }

    #[test]
    fn naive_times_are_utc() {
        assert_eq!(parse_time("1970-01-01T00:00:01.5"), Some(1_500_000));
        assert_eq!(parse_time("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_time("soon"), None);
        // Far-off years would let two times' difference overflow.
        assert_eq!(parse_time("+200000-01-01T00:00:00"), None);
        assert_eq!(parse_time("-200000-01-01T00:00:00"), None);
        assert_eq!(
            parse_time("9999-12-31T23:59:59Z").map(|t| t > 0),
            Some(true)
        );
    }

    impl NewTrace {
        fn span_count_for_test(&self) -> usize {
            self.spans.len()
        }
    }
}
