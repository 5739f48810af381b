//! Domain types: what the store keeps and returns, independent of any wire
//! format. Wire formats (the JSON ingest model, later OTLP) convert into
//! `NewTrace`; the read side returns `Trace` and friends, which serialize to
//! the v1 API's JSON shapes.

use std::collections::BTreeMap;

use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

/// The largest cost (USD) one trace or span may carry. Past it a number is
/// a bug or an attack, and sums of many such would leave the finite range
/// and poison every total they enter.
pub const MAX_COST_USD: f64 = 1_000_000.0;
/// The most prompt or completion tokens one span may count.
pub const MAX_TOKENS: i64 = 100_000_000;
/// The longest latency one trace or span may report: a year, in ms.
pub const MAX_LATENCY_MS: i64 = 366 * 86_400_000;

/// A cost as it may enter a sum: finite and not negative. Ingest holds
/// every cost within [`MAX_COST_USD`]; a row stored before it did, with an
/// infinite cost, adds nothing rather than turning every total it enters
/// infinite (and `null` in JSON).
pub fn summable_cost(cost: Option<f64>) -> f64 {
    cost.filter(|c| c.is_finite() && *c >= 0.0).unwrap_or(0.0)
}

/// A point in time, kept as microseconds since the Unix epoch (UTC) and
/// written as RFC 3339 with microseconds, e.g. `2026-01-02T03:04:05.678901Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn to_rfc3339(self) -> String {
        match chrono::DateTime::from_timestamp_micros(self.0) {
            Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            None => String::new(),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpanType {
    Llm,
    Tool,
    Retrieval,
    Other,
}

impl SpanType {
    pub fn as_str(self) -> &'static str {
        match self {
            SpanType::Llm => "llm",
            SpanType::Tool => "tool",
            SpanType::Retrieval => "retrieval",
            SpanType::Other => "other",
        }
    }
}

/// A validated trace ready to be stored. Derived values (latency, token
/// total, cost and model fallbacks) are already filled in.
#[derive(Debug, Clone)]
pub struct NewTrace {
    pub id: String,
    pub session_id: Option<String>,
    pub external_id: Option<String>,
    pub name: Option<String>,
    pub input: Option<String>,
    pub output: Option<String>,
    pub model: Option<String>,
    pub latency_ms: Option<i64>,
    pub cost: Option<f64>,
    pub error: Option<String>,
    /// Tags sent as a list of strings.
    pub tags: Vec<String>,
    /// Tags sent as key → value pairs; filterable with `tag_key`/`tag_value`.
    pub tag_map: BTreeMap<String, String>,
    /// The metadata object as JSON text.
    pub metadata: String,
    pub total_token_count: i64,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub spans: Vec<NewSpan>,
    pub events: Vec<NewEvent>,
    /// Digest of the request as sent, to tell a retry from a conflict.
    pub content_hash: [u8; 32],
}

impl NewTrace {
    /// When the trace ended (microseconds): its end, else its start plus
    /// its latency, else its start.
    pub fn end(&self) -> i64 {
        self.ended_at.unwrap_or_else(|| {
            self.started_at
                .saturating_add(self.latency_ms.unwrap_or(0).saturating_mul(1000))
        })
    }
}

/// Spans of one OpenTelemetry trace, to be merged into the trace of that id
/// (created if absent); the trace's aggregates are recomputed from all of
/// its spans.
#[derive(Debug, Clone)]
pub struct NewOtelTrace {
    pub id: String,
    pub session_id: Option<String>,
    /// JSON object, set when the trace is created.
    pub metadata: String,
    pub spans: Vec<NewSpan>,
    pub events: Vec<NewEvent>,
    /// The trace's own fields, carried by the root span an OTLP export of a
    /// trace not received over OTLP adds; they win over the aggregates.
    pub fields: Option<TraceFields>,
}

impl NewOtelTrace {
    /// When the latest of its spans ended (microseconds), if they say.
    pub fn end(&self) -> Option<i64> {
        self.spans
            .iter()
            .filter_map(|s| s.end_time.or(s.start_time))
            .max()
    }
}

/// Trace fields that spans cannot express.
#[derive(Debug, Clone, Default)]
pub struct TraceFields {
    pub name: Option<String>,
    pub input: Option<String>,
    pub output: Option<String>,
    pub model: Option<String>,
    pub error: Option<String>,
    pub external_id: Option<String>,
    pub latency_ms: Option<i64>,
    pub cost: Option<f64>,
    pub tags: Vec<String>,
    pub tag_map: BTreeMap<String, String>,
    /// JSON object text.
    pub metadata: Option<String>,
    pub started_at: i64,
    pub ended_at: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct NewSpan {
    pub id: String,
    pub parent_span_id: Option<String>,
    pub name: String,
    pub span_type: SpanType,
    pub input: Option<String>,
    pub output: Option<String>,
    pub model: Option<String>,
    pub latency_ms: Option<i64>,
    pub cost: Option<f64>,
    pub error: Option<String>,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub metadata: String,
    pub start_time: Option<i64>,
    pub end_time: Option<i64>,
    pub otel_trace_id: Option<String>,
    pub otel_span_id: Option<String>,
}

/// A span as a trace's aggregates need it: stored or arriving, without
/// its text.
#[derive(Debug, Clone, Copy)]
pub struct SpanView<'a> {
    pub id: &'a str,
    /// No parent.
    pub root: bool,
    pub llm: bool,
    pub model: Option<&'a str>,
    pub error: Option<&'a str>,
    /// Prompt and completion tokens.
    pub tokens: i64,
    pub cost: Option<f64>,
    pub start: Option<i64>,
    pub end: Option<i64>,
}

impl<'a> SpanView<'a> {
    pub fn of(s: &'a NewSpan) -> SpanView<'a> {
        SpanView {
            id: &s.id,
            root: s.parent_span_id.is_none(),
            llm: s.span_type == SpanType::Llm,
            model: s.model.as_deref(),
            error: s.error.as_deref(),
            tokens: s
                .prompt_tokens
                .unwrap_or(0)
                .saturating_add(s.completion_tokens.unwrap_or(0)),
            cost: s.cost,
            start: s.start_time,
            end: s.end_time,
        }
    }
}

/// A trace's aggregates over its spans, the one rule for JSON and OTLP
/// ingest (a JSON trace's own fields come first; see `ingest`), and for
/// OTLP spans merged into a stored trace (`store::otel`).
#[derive(Debug)]
pub struct Aggregates<'a> {
    /// The earliest start and the latest end.
    pub started: Option<i64>,
    pub ended: Option<i64>,
    /// Prompt and completion tokens of every span.
    pub tokens: i64,
    /// The sum of the costs the spans have; `None` when none has one.
    pub cost: Option<f64>,
    pub count: i64,
    /// The root span (no parent), else the earliest span.
    pub root_id: Option<&'a str>,
    /// The root's model, else the earliest LLM span's, else the earliest
    /// span's that names one.
    pub model: Option<&'a str>,
    /// The root's error, else the earliest failing span's.
    pub error: Option<&'a str>,
}

impl<'a> Aggregates<'a> {
    /// `spans` holds each span once.
    pub fn of(spans: impl Iterator<Item = SpanView<'a>>) -> Aggregates<'a> {
        let mut spans: Vec<SpanView<'a>> = spans.collect();
        // Stable: spans without a start keep their order, first.
        spans.sort_by_key(|s| s.start);
        let root = spans.iter().find(|s| s.root).or_else(|| spans.first());
        let costs: Vec<f64> = spans.iter().filter_map(|s| s.cost).collect();
        let model_of = |llm_only: bool| {
            spans
                .iter()
                .filter(|s| !llm_only || s.llm)
                .find_map(|s| s.model)
        };
        Aggregates {
            started: spans.iter().filter_map(|s| s.start).min(),
            ended: spans.iter().filter_map(|s| s.end).max(),
            tokens: spans.iter().map(|s| s.tokens).fold(0, i64::saturating_add),
            cost: (!costs.is_empty()).then(|| costs.iter().sum()),
            count: spans.len() as i64,
            root_id: root.map(|r| r.id),
            model: root
                .and_then(|r| r.model)
                .or_else(|| model_of(true))
                .or_else(|| model_of(false)),
            error: root
                .and_then(|r| r.error)
                .or_else(|| spans.iter().find_map(|s| s.error)),
        }
    }

    /// Milliseconds from the earliest start to the latest end (none when
    /// the difference does not fit).
    pub fn latency_ms(&self) -> Option<i64> {
        Some(self.ended?.checked_sub(self.started?)? / 1000)
    }
}

/// The spans of a request, a span sent twice in it once: its last copy,
/// in the place of its first, as it is stored.
pub fn last_copies(all: &[NewSpan]) -> Vec<&NewSpan> {
    let mut spans: Vec<&NewSpan> = Vec::with_capacity(all.len());
    let mut at: std::collections::HashMap<&str, usize> =
        std::collections::HashMap::with_capacity(all.len());
    for span in all {
        match at.get(span.id.as_str()) {
            Some(&i) => spans[i] = span,
            None => {
                at.insert(&span.id, spans.len());
                spans.push(span);
            }
        }
    }
    spans
}

impl<'a> Aggregates<'a> {
    /// The aggregates of the spans of one request (a span sent twice in it
    /// counts once, as stored), and its root span itself.
    pub fn of_request(all: &'a [NewSpan]) -> (Aggregates<'a>, Option<&'a NewSpan>) {
        let spans = last_copies(all);
        let aggregates = Aggregates::of(spans.iter().map(|s| SpanView::of(s)));
        // Ids are unique among the last copies.
        let root = aggregates
            .root_id
            .and_then(|id| spans.iter().find(|s| s.id == id).copied());
        (aggregates, root)
    }
}

#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: String,
    pub span_id: Option<String>,
    pub level: String,
    pub message: String,
    pub metadata: String,
    pub timestamp: i64,
}

/// A stored trace as the API returns it: in a list without its spans and
/// events, in its detail with them, its feedback and its evaluations.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Trace {
    /// The trace's id, a UUID.
    #[schema(format = "uuid")]
    pub id: String,
    /// The project's id, a UUID.
    #[schema(format = "uuid")]
    pub project_id: String,
    /// The session the trace belongs to.
    pub session_id: Option<String>,
    /// The caller's own id for the trace.
    pub external_id: Option<String>,
    pub name: Option<String>,
    pub input: Option<String>,
    pub output: Option<String>,
    /// The trace's model: its own, else its root span's, else its first LLM span's.
    pub model: Option<String>,
    /// Milliseconds from start to end.
    pub latency_ms: Option<i64>,
    /// Cost in USD: the trace's own, else the sum of its spans'.
    pub cost: Option<f64>,
    /// Sum of prompt_tokens + completion_tokens across every span of the
    /// trace, computed at ingest. Zero when no span reports token usage.
    /// Queryable with `token_count_min` / `token_count_max` on `GET /v1/traces`.
    pub total_token_count: i64,
    /// The error message; null when the trace succeeded.
    pub error: Option<String>,
    pub tags: Vec<String>,
    /// The key → value tag map; filterable with `tag_key` / `tag_value`.
    /// Omitted when the trace has no such tags.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tag_map: BTreeMap<String, String>,
    /// The trace's metadata object, as sent.
    #[schema(value_type = Object)]
    pub metadata: Box<RawValue>,
    /// How many spans the trace has.
    pub span_count: i64,
    #[schema(value_type = String, format = DateTime)]
    pub started_at: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ended_at: Option<Timestamp>,
    /// When this server stored the trace.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// The trace's spans, in the order they started (detail only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spans: Option<Vec<Span>>,
    /// The trace's events, in time order (detail only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<Event>>,
    /// Feedback on the trace, oldest first (detail only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feedback: Option<Vec<Feedback>>,
    /// Evaluations of the trace, oldest first (detail only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evaluations: Option<Vec<Evaluation>>,
    /// Feedback counts by label (`good`, `bad`, `neutral`), when there is any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feedback_summary: Option<BTreeMap<String, i64>>,
    /// The mean score of each metric's complete evaluations, when there are any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_scores: Option<BTreeMap<String, f64>>,
    /// In a list: the fields cut for size (`input`, `output`, `error`,
    /// `metadata`); the trace's detail has them whole. Omitted when none was cut.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<String>)]
    pub truncated: Vec<&'static str>,
}

/// An evaluation as the API shows it (the reference's `Evaluation`, plus
/// when it was queued, run and finished, and how often it was tried).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Evaluation {
    #[schema(format = "uuid")]
    pub id: String,
    #[schema(format = "uuid")]
    pub trace_id: String,
    /// The project of the trace.
    #[schema(format = "uuid")]
    pub project_id: String,
    #[schema(example = "faithfulness")]
    pub metric_name: String,
    /// `llm` (a judge model) or `rule` (checks the server runs).
    #[schema(example = "rule")]
    pub evaluator_type: String,
    /// `pending`, `running`, `complete` or `failed`.
    #[schema(example = "complete")]
    pub status: String,
    /// From 0 (fails) to 1 (passes); null until complete.
    pub score: Option<f64>,
    /// The verdict in a word (a rule's: `pass`, `warn` or `fail`); null until complete.
    pub label: Option<String>,
    /// Why the evaluator gave the score.
    pub reasoning: Option<String>,
    /// Always `fresh`: this server does not re-score remediated traces.
    #[schema(value_type = String, example = "fresh")]
    pub context: &'static str,
    /// Always null (no remediations here).
    pub source_action_id: Option<String>,
    /// Always null (no remediations here).
    pub original_evaluation_id: Option<String>,
    /// The evaluator's config, as sent.
    #[schema(value_type = Object)]
    pub config: Box<RawValue>,
    /// `cheap` or `premium`: the judge model's tier (LLM evaluations).
    pub model_tier: Option<String>,
    /// The auto-evaluation rule that queued it, if one did.
    pub rule_id: Option<String>,
    /// The judge model that gave the verdict (LLM evaluations).
    pub judge_model: Option<String>,
    /// How often it was run.
    pub attempts: i64,
    /// Why the last attempt failed, while a retry is pending.
    pub last_error: Option<String>,
    /// When it was queued.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub completed_at: Option<Timestamp>,
}

/// One piece of feedback on a trace.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Feedback {
    #[schema(format = "uuid")]
    pub id: String,
    /// `good`, `bad` or `neutral`.
    pub label: String,
    pub score: Option<f64>,
    pub comment: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: Box<RawValue>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

/// One step of a trace: an LLM call, a tool call, a retrieval or other work.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Span {
    /// The span's id: as sent, else a UUID.
    pub id: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// The organisation's id, a UUID.
    #[schema(format = "uuid")]
    pub tenant_id: String,
    #[schema(format = "uuid")]
    pub trace_id: String,
    pub parent_span_id: Option<String>,
    pub name: String,
    /// Span type: `llm`, `tool`, `retrieval` or `other`.
    #[serde(rename = "type")]
    pub span_type: String,
    pub input: Option<String>,
    pub output: Option<String>,
    pub model: Option<String>,
    pub latency_ms: Option<i64>,
    /// Cost in USD.
    pub cost: Option<f64>,
    /// The error message; null when the span succeeded.
    pub error: Option<String>,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    /// The span's metadata object, as sent.
    #[schema(value_type = Object)]
    pub metadata: Box<RawValue>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub start_time: Option<Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub end_time: Option<Timestamp>,
    /// The OpenTelemetry trace id (hex), for spans received over OTLP.
    pub otel_trace_id: Option<String>,
    /// The OpenTelemetry span id (hex), for spans received over OTLP.
    pub otel_span_id: Option<String>,
}

/// Something that happened during a trace: a log line of it or of one of its spans.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Event {
    pub id: String,
    /// The span it belongs to; null for the trace itself.
    pub span_id: Option<String>,
    /// `debug`, `info`, `warn` or `error`.
    pub level: String,
    pub message: String,
    #[schema(value_type = Object)]
    pub metadata: Box<RawValue>,
    #[schema(value_type = String, format = DateTime)]
    pub timestamp: Timestamp,
}
