//! OTLP/HTTP trace ingest: decoding an `ExportTraceServiceRequest`
//! (protobuf or the OTLP JSON mapping, gzip or identity) and mapping its
//! spans onto TruLayer traces and spans, following the OpenTelemetry GenAI
//! semantic conventions and the OpenInference attributes many
//! instrumentations emit.
//!
//! One OTel trace is one TruLayer trace: its id is the 16-byte OTel trace id
//! read as a UUID, so spans of one trace that arrive in separate requests
//! land in the same trace. A span's own id is a UUID made of the first half
//! of the trace id and the 8-byte span id, so a re-sent span replaces itself.

use std::collections::HashMap;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::Span as OtelSpan;
use serde_json::Value;

use crate::model::{
    NewEvent, NewOtelTrace, NewSpan, SpanType, TraceFields, MAX_COST_USD, MAX_LATENCY_MS,
    MAX_TOKENS,
};
use crate::pricing::Pricing;

mod attrs;
mod export;
mod wire;

use attrs::{any_to_json, attributes_json, bounded_json, scope_json, truncate_chars, Attrs};

pub use export::traces_data;
pub use wire::{count_spans, decode, gunzip, inflate, response_body, DecodeError, Encoding};

/// The most bytes a span's metadata (its unmapped attributes) may take.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Span names are cut to this many characters, as JSON ingest allows.
const MAX_NAME_CHARS: usize = 1024;

/// Memory a decoded span takes besides its text, at most: a minimal span
/// alone in its trace becomes a trace and a span of its own, mapped and
/// stored (3.5-3.7 KiB above the idle process, measured on requests of
/// 50,000 of them, the limit; see BENCHMARKS.md).
const DECODED_SPAN_BYTES: usize = 3_840;

/// About the memory decoding a request takes beyond the body as received:
/// the inflated body when it came compressed, its text twice more (the
/// decoded request, then the traces mapped from it), and each span's own
/// structures.
pub fn decoded_bytes(decompressed: usize, gzip: bool, spans: usize) -> usize {
    let inflated = if gzip { decompressed } else { 0 };
    inflated
        .saturating_add(decompressed.saturating_mul(2))
        .saturating_add(spans.saturating_mul(DECODED_SPAN_BYTES))
}

/// The request's spans grouped into traces, and what had to be refused.
#[derive(Debug, Default)]
pub struct Mapped {
    /// Each trace with the project its resource names (`trulayer.project`).
    pub traces: Vec<(Option<String>, NewOtelTrace)>,
    pub rejected: i64,
    /// Why the first refused span was refused.
    pub first_error: Option<String>,
}

/// Maps every span of the request; invalid spans are counted, not fatal.
pub fn map_request(request: ExportTraceServiceRequest, pricing: &Pricing) -> Mapped {
    let mut mapped = Mapped::default();
    let mut index: HashMap<(Option<String>, [u8; 16]), usize> = HashMap::new();
    // Spans that kept an id given by `trulayer.span.id`: their children
    // name them by OTel span id, so their parent links are rewritten.
    let mut renamed: HashMap<String, String> = HashMap::new();
    for resource_spans in request.resource_spans {
        let resource_attrs = resource_spans
            .resource
            .map(|r| r.attributes)
            .unwrap_or_default();
        let project = Attrs(&resource_attrs)
            .str("trulayer.project")
            .filter(|p| !p.is_empty())
            .map(str::to_owned);
        let resource = Value::Object(attributes_json(&resource_attrs, &[]));
        // The metadata of each trace the resource's spans start.
        let trace_metadata = bounded_json(&[("resource", &resource)], MAX_METADATA_BYTES);
        for scope_spans in resource_spans.scope_spans {
            let scope = scope_json(scope_spans.scope.as_ref());
            for span in scope_spans.spans {
                let trace_id = match valid_ids(&span).and_then(|id| {
                    sane_numbers(&span)?;
                    Ok(id)
                }) {
                    Ok(id) => id,
                    Err(reason) => {
                        mapped.rejected += 1;
                        mapped.first_error.get_or_insert(reason);
                        continue;
                    }
                };
                let derived_id = native_span_id(&trace_id, &span.span_id);
                let key = (project.clone(), trace_id);
                let fields = Attrs(&span.attributes)
                    .bool(TRACE_ROOT_ATTR)
                    .then(|| trace_fields(&span));
                let (new_span, events, session) = if fields.is_some() {
                    // The trace itself, not a span: its children are top level.
                    renamed.insert(derived_id, String::new());
                    (
                        None,
                        Vec::new(),
                        Attrs(&span.attributes).str("session.id").map(str::to_owned),
                    )
                } else {
                    let (new_span, events, session) =
                        map_span(span, trace_id, &scope, &resource, pricing);
                    if new_span.id != derived_id {
                        renamed.insert(derived_id, new_span.id.clone());
                    }
                    (Some(new_span), events, session)
                };
                let slot = *index.entry(key).or_insert_with(|| {
                    mapped.traces.push((
                        project.clone(),
                        NewOtelTrace {
                            id: uuid::Uuid::from_bytes(trace_id).hyphenated().to_string(),
                            session_id: None,
                            metadata: trace_metadata.clone(),
                            spans: Vec::new(),
                            events: Vec::new(),
                            fields: None,
                        },
                    ));
                    mapped.traces.len() - 1
                });
                let trace = &mut mapped.traces[slot].1;
                if trace.session_id.is_none() {
                    trace.session_id = session;
                }
                if let Some(fields) = fields {
                    trace.fields = Some(fields);
                }
                trace.spans.extend(new_span);
                trace.events.extend(events);
            }
        }
    }
    if !renamed.is_empty() {
        for (_, trace) in &mut mapped.traces {
            for span in &mut trace.spans {
                if let Some(id) = span.parent_span_id.as_ref().and_then(|p| renamed.get(p)) {
                    span.parent_span_id = (!id.is_empty()).then(|| id.clone());
                }
            }
        }
    }
    mapped
}

/// The span's trace id, if its ids are what OTLP requires.
fn valid_ids(span: &OtelSpan) -> Result<[u8; 16], String> {
    let trace_id: [u8; 16] = span
        .trace_id
        .as_slice()
        .try_into()
        .map_err(|_| format!("span {:?}: trace id must be 16 bytes", span.name))?;
    if trace_id == [0; 16] {
        return Err(format!("span {:?}: trace id is all zeros", span.name));
    }
    if span.span_id.len() != 8 || span.span_id.iter().all(|b| *b == 0) {
        return Err(format!(
            "span {:?}: span id must be 8 bytes, not all zeros",
            span.name
        ));
    }
    if !span.parent_span_id.is_empty() && span.parent_span_id.len() != 8 {
        return Err(format!(
            "span {:?}: parent span id must be 8 bytes",
            span.name
        ));
    }
    if span.start_time_unix_nano == 0 {
        return Err(format!("span {:?}: start time is missing", span.name));
    }
    if span.end_time_unix_nano != 0 && span.end_time_unix_nano < span.start_time_unix_nano {
        return Err(format!("span {:?}: ends before it starts", span.name));
    }
    Ok(trace_id)
}

/// Token counts, costs and latencies within the bounds JSON ingest holds
/// them to (`model::MAX_*`): a span reporting a cost of 1e308 or a negative
/// token count is refused by name, not summed into every total.
fn sane_numbers(span: &OtelSpan) -> Result<(), String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Kind;
    let attrs = Attrs(&span.attributes);
    const TOKENS: f64 = MAX_TOKENS as f64;
    for (key, max) in [
        ("gen_ai.usage.input_tokens", TOKENS),
        ("gen_ai.usage.output_tokens", TOKENS),
        ("gen_ai.usage.prompt_tokens", TOKENS),
        ("gen_ai.usage.completion_tokens", TOKENS),
        ("llm.token_count.prompt", TOKENS),
        ("llm.token_count.completion", TOKENS),
        ("gen_ai.usage.cost", MAX_COST_USD),
        (TRACE_COST_ATTR, MAX_COST_USD),
        (TRACE_LATENCY_ATTR, MAX_LATENCY_MS as f64),
    ] {
        // A value that is no number at all is ignored, as before; a number
        // out of bounds (NaN and infinities included) refuses the span.
        let number = match attrs.get(key).and_then(|v| v.value.as_ref()) {
            Some(Kind::IntValue(i)) => *i as f64,
            Some(Kind::DoubleValue(d)) => *d,
            Some(Kind::StringValue(s)) => match s.trim().parse::<f64>() {
                Ok(n) => n,
                Err(_) => continue,
            },
            _ => continue,
        };
        if !(0.0..=max).contains(&number) {
            return Err(format!(
                "span {:?}: {key} must be a number from 0 to {max} (got {number})",
                span.name
            ));
        }
    }
    Ok(())
}

/// The native id of an OTel span: the trace id's first 8 bytes and the span
/// id, read as a UUID (span ids are unique within their trace).
pub fn native_span_id(trace_id: &[u8; 16], span_id: &[u8]) -> String {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&trace_id[..8]);
    let n = span_id.len().min(8);
    bytes[8..8 + n].copy_from_slice(&span_id[..n]);
    uuid::Uuid::from_bytes(bytes).hyphenated().to_string()
}

/// Attributes the export adds so that re-ingesting it restores traces that
/// did not come from OpenTelemetry: the SDK's own span ids and types, and a
/// root span standing for the trace itself, with the trace's own fields.
const SPAN_ID_ATTR: &str = "trulayer.span.id";
const SPAN_TYPE_ATTR: &str = "trulayer.span.type";
const SPAN_METADATA_ATTR: &str = "trulayer.span.metadata";
const EVENT_LEVEL_ATTR: &str = "trulayer.event.level";
const TRACE_ROOT_ATTR: &str = "trulayer.trace";
const TRACE_EXTERNAL_ID_ATTR: &str = "trulayer.trace.external_id";
const TRACE_LATENCY_ATTR: &str = "trulayer.trace.latency_ms";
const TRACE_COST_ATTR: &str = "trulayer.trace.cost";
const TRACE_TAGS_ATTR: &str = "trulayer.trace.tags";
const TRACE_TAG_MAP_ATTR: &str = "trulayer.trace.tag_map";
const TRACE_METADATA_ATTR: &str = "trulayer.trace.metadata";

/// The fields of a trace-root span (see `TRACE_ROOT_ATTR`).
fn trace_fields(span: &OtelSpan) -> TraceFields {
    let attrs = Attrs(&span.attributes);
    let json_attr = |key: &str| {
        attrs
            .str(key)
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
    };
    TraceFields {
        name: (!span.name.is_empty()).then(|| truncate_chars(span.name.clone())),
        input: attrs.text("input.value"),
        output: attrs.text("output.value"),
        model: attrs.str("gen_ai.request.model").map(str::to_owned),
        error: span_error(span),
        external_id: attrs.str(TRACE_EXTERNAL_ID_ATTR).map(str::to_owned),
        latency_ms: attrs.int(TRACE_LATENCY_ATTR),
        cost: attrs.double(TRACE_COST_ATTR),
        tags: json_attr(TRACE_TAGS_ATTR)
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default(),
        tag_map: json_attr(TRACE_TAG_MAP_ATTR)
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default(),
        metadata: json_attr(TRACE_METADATA_ATTR)
            .filter(Value::is_object)
            .map(|v| v.to_string()),
        started_at: nanos_to_micros(span.start_time_unix_nano),
        ended_at: (span.end_time_unix_nano != 0).then(|| nanos_to_micros(span.end_time_unix_nano)),
    }
}

/// Attributes moved into native span fields, so not repeated in metadata.
const MAPPED_KEYS: &[&str] = &[
    "gen_ai.request.model",
    "gen_ai.response.model",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.prompt_tokens",
    "gen_ai.usage.completion_tokens",
    "gen_ai.prompt",
    "gen_ai.completion",
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "input.value",
    "output.value",
    "llm.model_name",
    "llm.token_count.prompt",
    "llm.token_count.completion",
    "session.id",
    "gen_ai.usage.cost",
    SPAN_ID_ATTR,
    SPAN_TYPE_ATTR,
    SPAN_METADATA_ATTR,
];

fn map_span(
    span: OtelSpan,
    trace_id: [u8; 16],
    scope: &Value,
    resource: &Value,
    pricing: &Pricing,
) -> (NewSpan, Vec<NewEvent>, Option<String>) {
    let attrs = Attrs(&span.attributes);
    // A span this server exported that it had not received over OTLP
    // keeps its id and metadata, and gets no OTel ids.
    let given_id = attrs
        .str(SPAN_ID_ATTR)
        .filter(|id| !id.is_empty() && id.len() <= 256)
        .map(str::to_owned);
    let native = given_id.is_some();
    let id = given_id.unwrap_or_else(|| native_span_id(&trace_id, &span.span_id));
    let parent_span_id =
        (!span.parent_span_id.is_empty()).then(|| native_span_id(&trace_id, &span.parent_span_id));
    let start_ns = span.start_time_unix_nano;
    let end_ns = (span.end_time_unix_nano != 0).then_some(span.end_time_unix_nano);
    let model = attrs
        .str("gen_ai.response.model")
        .or_else(|| attrs.str("gen_ai.request.model"))
        .or_else(|| attrs.str("llm.model_name"))
        .map(str::to_owned);
    let prompt_tokens = attrs
        .int("gen_ai.usage.input_tokens")
        .or_else(|| attrs.int("gen_ai.usage.prompt_tokens"))
        .or_else(|| attrs.int("llm.token_count.prompt"));
    let completion_tokens = attrs
        .int("gen_ai.usage.output_tokens")
        .or_else(|| attrs.int("gen_ai.usage.completion_tokens"))
        .or_else(|| attrs.int("llm.token_count.completion"));
    let input = attrs
        .text("gen_ai.prompt")
        .or_else(|| attrs.text("gen_ai.input.messages"))
        .or_else(|| attrs.text("input.value"))
        .or_else(|| messages_from_events(&span, INPUT_EVENTS));
    let output = attrs
        .text("gen_ai.completion")
        .or_else(|| attrs.text("gen_ai.output.messages"))
        .or_else(|| attrs.text("output.value"))
        .or_else(|| messages_from_events(&span, &["gen_ai.choice"]));
    let error = span_error(&span);
    let session = attrs
        .str("session.id")
        .or_else(|| attrs.str("gen_ai.conversation.id"))
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let kind = SpanKind::try_from(span.kind)
        .map(|k| {
            k.as_str_name()
                .trim_start_matches("SPAN_KIND_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| "unspecified".into());
    let given_metadata = attrs
        .str(SPAN_METADATA_ATTR)
        .filter(|_| native)
        .and_then(|t| serde_json::from_str::<Value>(t).ok())
        .filter(|v| v.is_object() && v.to_string().len() <= MAX_METADATA_BYTES)
        .map(|v| v.to_string());
    let metadata = given_metadata.unwrap_or_else(|| {
        bounded_json(
            &[
                ("kind", &Value::String(kind)),
                ("scope", scope),
                (
                    "attributes",
                    &Value::Object(attributes_json(&span.attributes, MAPPED_KEYS)),
                ),
                ("resource", resource),
            ],
            MAX_METADATA_BYTES,
        )
    });
    let events = span
        .events
        .iter()
        .map(|e| NewEvent {
            id: uuid::Uuid::now_v7().hyphenated().to_string(),
            span_id: Some(id.clone()),
            level: match Attrs(&e.attributes).str(EVENT_LEVEL_ATTR) {
                Some(level @ ("debug" | "info" | "warn" | "error")) => level.into(),
                _ if e.name == "exception" => "error".into(),
                _ => "info".into(),
            },
            message: e.name.clone(),
            metadata: Value::Object(attributes_json(&e.attributes, &[EVENT_LEVEL_ATTR]))
                .to_string(),
            timestamp: nanos_to_micros(if e.time_unix_nano == 0 {
                start_ns
            } else {
                e.time_unix_nano
            }),
        })
        .collect();
    // A reported cost, else the price of the tokens, fixed now.
    let cost = attrs.double("gen_ai.usage.cost").or_else(|| {
        let model = model.as_deref()?;
        if prompt_tokens.is_none() && completion_tokens.is_none() {
            return None;
        }
        pricing.cost(
            model,
            prompt_tokens.unwrap_or(0),
            completion_tokens.unwrap_or(0),
        )
    });
    let span_type = attrs
        .str(SPAN_TYPE_ATTR)
        .and_then(|t| serde_json::from_value(Value::String(t.to_owned())).ok())
        .unwrap_or_else(|| span_type(&attrs));
    let new_span = NewSpan {
        span_type,
        id,
        parent_span_id,
        name: truncate_chars(if span.name.is_empty() {
            "unknown".into()
        } else {
            span.name
        }),
        input,
        output,
        model,
        latency_ms: end_ns.map(|end| ((end - start_ns) / 1_000_000) as i64),
        cost,
        error,
        prompt_tokens,
        completion_tokens,
        metadata,
        start_time: Some(nanos_to_micros(start_ns)),
        end_time: end_ns.map(nanos_to_micros),
        otel_trace_id: (!native).then(|| hex(&trace_id)),
        otel_span_id: (!native).then(|| hex(&span.span_id)),
    };
    (new_span, events, session)
}

/// GenAI content events that carry the prompt, in the order they occur.
const INPUT_EVENTS: &[&str] = &[
    "gen_ai.system.message",
    "gen_ai.user.message",
    "gen_ai.assistant.message",
    "gen_ai.tool.message",
];

/// The content of the span's GenAI message events: the text of a single
/// message, or a JSON list of `{role, content}` for a conversation.
fn messages_from_events(span: &OtelSpan, names: &[&str]) -> Option<String> {
    let messages: Vec<(String, Value)> = span
        .events
        .iter()
        .filter(|e| names.contains(&e.name.as_str()))
        .filter_map(|e| {
            let attrs = Attrs(&e.attributes);
            let role = attrs.str("role").map(str::to_owned).unwrap_or_else(|| {
                e.name
                    .trim_start_matches("gen_ai.")
                    .trim_end_matches(".message")
                    .to_owned()
            });
            let content = attrs
                .get("content")
                .or_else(|| attrs.get("message"))
                .map(any_to_json)?;
            Some((role, content))
        })
        .collect();
    match messages.as_slice() {
        [] => None,
        [(_, Value::String(text))] => Some(text.clone()),
        _ => Some(
            Value::Array(
                messages
                    .into_iter()
                    .map(|(role, content)| serde_json::json!({"role": role, "content": content}))
                    .collect(),
            )
            .to_string(),
        ),
    }
}

/// A span with status ERROR gets its status message, else the first
/// exception event as "Type: message".
fn span_error(span: &OtelSpan) -> Option<String> {
    let status = span.status.as_ref()?;
    if status.code != StatusCode::Error as i32 {
        return None;
    }
    if !status.message.is_empty() {
        return Some(status.message.clone());
    }
    let exception = span.events.iter().find(|e| e.name == "exception");
    let described = exception.and_then(|e| {
        let attrs = Attrs(&e.attributes);
        match (attrs.str("exception.type"), attrs.str("exception.message")) {
            (Some(t), Some(m)) if !m.is_empty() => Some(format!("{t}: {m}")),
            (Some(t), _) => Some(t.to_owned()),
            (None, Some(m)) => Some(m.to_owned()),
            (None, None) => None,
        }
    });
    Some(described.unwrap_or_else(|| "error".into()))
}

/// Vector stores whose `db.system` marks a span as retrieval.
const VECTOR_STORES: &[&str] = &[
    "chroma",
    "chromadb",
    "pinecone",
    "qdrant",
    "weaviate",
    "milvus",
    "pgvector",
    "lancedb",
    "faiss",
    "vespa",
    "marqo",
    "opensearch",
    "elasticsearch",
    "redis",
    "mongodb_atlas",
];

fn span_type(attrs: &Attrs) -> SpanType {
    let operation = attrs.str("gen_ai.operation.name");
    let openinference = attrs
        .str("openinference.span.kind")
        .map(str::to_ascii_uppercase);
    if operation == Some("execute_tool")
        || attrs.get("gen_ai.tool.name").is_some()
        || openinference.as_deref() == Some("TOOL")
    {
        return SpanType::Tool;
    }
    if matches!(
        operation,
        Some("chat" | "text_completion" | "generate_content" | "embeddings")
    ) || attrs.get("gen_ai.system").is_some()
        || attrs.get("gen_ai.provider.name").is_some()
        || matches!(openinference.as_deref(), Some("LLM" | "EMBEDDING"))
    {
        return SpanType::Llm;
    }
    let db_system = attrs
        .str("db.system.name")
        .or_else(|| attrs.str("db.system"));
    if matches!(operation, Some("retrieval" | "retrieve" | "search"))
        || openinference.as_deref() == Some("RETRIEVER")
        || db_system.is_some_and(|s| VECTOR_STORES.contains(&s.to_ascii_lowercase().as_str()))
    {
        return SpanType::Retrieval;
    }
    SpanType::Other
}

fn nanos_to_micros(nanos: u64) -> i64 {
    (nanos / 1_000) as i64
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    #[test]
    fn a_gzip_bomb_stops_at_the_limit() {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(&vec![0u8; 8 << 20]).expect("compress");
        let bomb = encoder.finish().expect("finish");
        assert!(bomb.len() < 64 * 1024, "{} bytes", bomb.len());
        assert!(matches!(
            gunzip(&bomb, 1 << 20),
            Err(DecodeError::TooLarge(_))
        ));
        assert_eq!(gunzip(&bomb, 8 << 20).expect("fits").len(), 8 << 20);
    }

    #[test]
    fn metadata_is_bounded_and_marked() {
        let big: Map<String, Value> = (0..100)
            .map(|i| (format!("k{i}"), Value::String("x".repeat(500))))
            .collect();
        let text = bounded_json(
            &[
                ("kind", &"client".into()),
                ("attributes", &Value::Object(big)),
            ],
            4096,
        );
        assert!(text.len() <= 4096, "{}", text.len());
        let v: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["truncated"], true);
        assert_eq!(v["kind"], "client");
    }

    #[test]
    fn very_many_attributes_are_bounded_too() {
        let many: Map<String, Value> = (0..50_000)
            .map(|i| (format!("attribute.{i}"), Value::from(i)))
            .collect();
        let text = bounded_json(&[("attributes", &Value::Object(many))], MAX_METADATA_BYTES);
        assert!(text.len() <= MAX_METADATA_BYTES, "{}", text.len());
        let v: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["truncated"], true);
        assert!(v["attributes"].as_object().is_some_and(|a| a.len() > 100));
    }

    #[test]
    fn span_ids_are_stable_uuids() {
        let trace = [7u8; 16];
        let a = native_span_id(&trace, &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(a, "07070707-0707-0707-0102-030405060708");
        assert_eq!(a, native_span_id(&trace, &[1, 2, 3, 4, 5, 6, 7, 8]));
    }
}
