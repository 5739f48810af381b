//! OTLP export: stored traces as OTLP `TracesData` JSON. Spans received
//! over OTLP go back with their resource, scope, kind, attributes, events
//! and status; traces sent with the SDK go under a root span standing for
//! the trace, with `trulayer.*` attributes for what OTLP has no field for,
//! so that ingesting the export reproduces them.

use std::collections::HashMap;

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use serde_json::{Map, Value};

use super::{
    hex, EVENT_LEVEL_ATTR, SPAN_ID_ATTR, SPAN_METADATA_ATTR, SPAN_TYPE_ATTR, TRACE_COST_ATTR,
    TRACE_EXTERNAL_ID_ATTR, TRACE_LATENCY_ATTR, TRACE_METADATA_ATTR, TRACE_ROOT_ATTR,
    TRACE_TAGS_ATTR, TRACE_TAG_MAP_ATTR,
};
use crate::model::Trace;

/// OTLP `TracesData` JSON for `traces` (each with the spans to send), with
/// spans grouped by the resource and scope they were received with. When
/// `continues_first`, the first trace began on an earlier page, which
/// carried the root span standing for it.
pub fn traces_data(traces: &[Trace], continues_first: bool) -> Value {
    let mut groups: Vec<(Value, Value, Vec<Value>)> = Vec::new();
    for (i, trace) in traces.iter().enumerate() {
        let trace_bytes = uuid_bytes(&trace.id);
        let events = trace.events.as_deref().unwrap_or_default();
        let spans = trace.spans.as_deref().unwrap_or_default();
        // OTel span ids: kept from OTLP, else made from the native ids.
        let ids: HashMap<&str, String> = spans
            .iter()
            .map(|s| {
                let id = s
                    .otel_span_id
                    .clone()
                    .unwrap_or_else(|| hex(&short_id(&s.id)));
                (s.id.as_str(), id)
            })
            .collect();
        let native = spans.iter().all(|s| s.otel_span_id.is_none());
        let root = native.then(|| hex(&short_id(&format!("trace:{}", trace.id))));
        // A trace continued from the previous page had its root span there;
        // its spans still name it as their parent.
        let continued = i == 0 && continues_first;
        let mut exported: Vec<(Value, Value, Value)> = Vec::new();
        if let Some(root) = root.as_ref().filter(|_| !continued) {
            exported.push((
                trace_resource(trace),
                serde_json::json!({}),
                trace_root_span(trace, &trace_bytes, root),
            ));
        }
        for span in spans {
            // Only spans received over OTLP hold OTel structure in metadata.
            let meta: Value = match span.otel_span_id {
                Some(_) => serde_json::from_str(span.metadata.get()).unwrap_or(Value::Null),
                None => Value::Null,
            };
            let resource = meta
                .get("resource")
                .cloned()
                .unwrap_or_else(|| trace_resource(trace));
            let scope = meta
                .get("scope")
                .cloned()
                .unwrap_or_else(|| serde_json::json!({}));
            let mut otel = export_span(trace, &trace_bytes, span, &meta, events);
            let parent = match &span.parent_span_id {
                Some(p) => Some(
                    ids.get(p.as_str())
                        .cloned()
                        .unwrap_or_else(|| absent_parent_id(span, p)),
                ),
                None => root.clone(),
            };
            if let Some(parent) = parent {
                otel["parentSpanId"] = parent.into();
            }
            exported.push((resource, scope, otel));
        }
        for (resource, scope, otel) in exported {
            match groups
                .iter_mut()
                .find(|(r, s, _)| *r == resource && *s == scope)
            {
                Some((_, _, spans)) => spans.push(otel),
                None => groups.push((resource, scope, vec![otel])),
            }
        }
    }
    let resource_spans: Vec<Value> = groups
        .into_iter()
        .map(|(resource, scope, spans)| {
            serde_json::json!({
                "resource": {"attributes": key_values(&resource)},
                "scopeSpans": [{"scope": scope, "spans": spans}],
            })
        })
        .collect();
    serde_json::json!({ "resourceSpans": resource_spans })
}

/// A trace received as JSON keeps its resource in the trace's metadata.
fn trace_resource(trace: &Trace) -> Value {
    serde_json::from_str::<Value>(trace.metadata.get())
        .ok()
        .and_then(|m| m.get("resource").cloned())
        .filter(Value::is_object)
        .unwrap_or_else(|| serde_json::json!({"service.name": "trulayer"}))
}

fn export_span(
    trace: &Trace,
    trace_bytes: &[u8; 16],
    span: &crate::model::Span,
    meta: &Value,
    events: &[crate::model::Event],
) -> Value {
    let trace_id = span
        .otel_trace_id
        .clone()
        .unwrap_or_else(|| hex(trace_bytes));
    let span_id = span
        .otel_span_id
        .clone()
        .unwrap_or_else(|| hex(&short_id(&span.id)));
    let mut attributes = meta
        .get("attributes")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut put = |key: &str, value: Value| {
        attributes.entry(key.to_owned()).or_insert(value);
    };
    if let Some(model) = &span.model {
        put("gen_ai.request.model", model.clone().into());
    }
    if let Some(n) = span.prompt_tokens {
        put("gen_ai.usage.input_tokens", n.into());
    }
    if let Some(n) = span.completion_tokens {
        put("gen_ai.usage.output_tokens", n.into());
    }
    if let Some(cost) = span.cost {
        put("gen_ai.usage.cost", cost.into());
    }
    if let Some(text) = &span.input {
        put("input.value", text.clone().into());
    }
    if let Some(text) = &span.output {
        put("output.value", text.clone().into());
    }
    if let Some(session) = &trace.session_id {
        put("session.id", session.clone().into());
    }
    if span.otel_span_id.is_none() {
        put(SPAN_ID_ATTR, span.id.clone().into());
        put(SPAN_METADATA_ATTR, span.metadata.get().to_owned().into());
    }
    put(SPAN_TYPE_ATTR, span.span_type.clone().into());
    let kind = match meta.get("kind").and_then(Value::as_str) {
        Some("internal") => 1,
        Some("server") => 2,
        Some("client") => 3,
        Some("producer") => 4,
        Some("consumer") => 5,
        _ => 0,
    };
    let mut out = serde_json::json!({
        "traceId": trace_id,
        "spanId": span_id,
        "name": span.name,
        "kind": kind,
        "attributes": key_values(&Value::Object(attributes)),
    });
    if let Some(start) = span.start_time {
        out["startTimeUnixNano"] = unix_nanos(start).into();
    }
    if let Some(end) = span.end_time {
        out["endTimeUnixNano"] = unix_nanos(end).into();
    }
    let span_events: Vec<Value> = events
        .iter()
        .filter(|e| e.span_id.as_deref() == Some(span.id.as_str()))
        .map(|e| {
            let mut attrs: Value = serde_json::from_str(e.metadata.get()).unwrap_or(Value::Null);
            if let Some(attrs) = attrs.as_object_mut() {
                attrs.insert(EVENT_LEVEL_ATTR.into(), e.level.clone().into());
            }
            serde_json::json!({
                "timeUnixNano": unix_nanos(e.timestamp),
                "name": e.message,
                "attributes": key_values(&attrs),
            })
        })
        .collect();
    if !span_events.is_empty() {
        out["events"] = Value::Array(span_events);
    }
    if let Some(error) = &span.error {
        out["status"] = serde_json::json!({"code": StatusCode::Error as i32, "message": error});
    }
    out
}

/// A root span standing for a trace that was not received over OTLP, with
/// the trace's own fields, so other tools see the trace and a re-ingest
/// restores it.
fn trace_root_span(trace: &Trace, trace_bytes: &[u8; 16], span_id: &str) -> Value {
    let mut attributes = Map::new();
    attributes.insert(TRACE_ROOT_ATTR.into(), true.into());
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            attributes.insert(key.into(), value);
        }
    };
    put("input.value", trace.input.clone().map(Value::from));
    put("output.value", trace.output.clone().map(Value::from));
    put("gen_ai.request.model", trace.model.clone().map(Value::from));
    put("session.id", trace.session_id.clone().map(Value::from));
    put(
        TRACE_EXTERNAL_ID_ATTR,
        trace.external_id.clone().map(Value::from),
    );
    put(TRACE_LATENCY_ATTR, trace.latency_ms.map(Value::from));
    put(TRACE_COST_ATTR, trace.cost.map(Value::from));
    put(
        TRACE_TAGS_ATTR,
        (!trace.tags.is_empty()).then(|| {
            serde_json::to_string(&trace.tags)
                .unwrap_or_default()
                .into()
        }),
    );
    put(
        TRACE_TAG_MAP_ATTR,
        (!trace.tag_map.is_empty()).then(|| {
            serde_json::to_string(&trace.tag_map)
                .unwrap_or_default()
                .into()
        }),
    );
    put(
        TRACE_METADATA_ATTR,
        Some(trace.metadata.get().to_owned().into()),
    );
    let mut out = serde_json::json!({
        "traceId": hex(trace_bytes),
        "spanId": span_id,
        "name": trace.name.clone().unwrap_or_else(|| "trace".into()),
        "kind": SpanKind::Internal as i32,
        "startTimeUnixNano": unix_nanos(trace.started_at),
        "attributes": key_values(&Value::Object(attributes)),
    });
    if let Some(end) = trace.ended_at {
        out["endTimeUnixNano"] = unix_nanos(end).into();
    }
    if let Some(error) = &trace.error {
        out["status"] = serde_json::json!({"code": StatusCode::Error as i32, "message": error});
    }
    out
}

/// The OTel id of a parent span not stored (yet): for a span received over
/// OTLP, the parent's id is the second half of its native id.
fn absent_parent_id(span: &crate::model::Span, parent: &str) -> String {
    match uuid::Uuid::parse_str(parent) {
        Ok(u) if span.otel_span_id.is_some() => hex(&u.as_bytes()[8..]),
        _ => hex(&short_id(parent)),
    }
}

/// An 8-byte OTel span id for a span not received over OTLP: the start of
/// the SHA-256 of its native id (SDK ids may share their last bytes).
fn short_id(id: &str) -> [u8; 8] {
    use sha2::Digest;
    let mut out = [0u8; 8];
    out.copy_from_slice(&sha2::Sha256::digest(id.as_bytes())[..8]);
    out
}

fn uuid_bytes(id: &str) -> [u8; 16] {
    match uuid::Uuid::parse_str(id) {
        Ok(u) => *u.as_bytes(),
        Err(_) => {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(id.as_bytes());
            let mut out = [0u8; 16];
            out.copy_from_slice(&digest[..16]);
            out
        }
    }
}

/// A JSON object as OTLP `KeyValue`s.
fn key_values(object: &Value) -> Value {
    let Some(map) = object.as_object() else {
        return Value::Array(Vec::new());
    };
    Value::Array(
        map.iter()
            .map(|(k, v)| serde_json::json!({"key": k, "value": json_to_any(v)}))
            .collect(),
    )
}

fn json_to_any(value: &Value) -> Value {
    match value {
        Value::Null => serde_json::json!({}),
        Value::Bool(b) => serde_json::json!({"boolValue": b}),
        Value::Number(n) => match n.as_i64() {
            Some(i) => serde_json::json!({"intValue": i.to_string()}),
            None => serde_json::json!({"doubleValue": n.as_f64()}),
        },
        Value::String(s) => serde_json::json!({"stringValue": s}),
        Value::Array(items) => {
            serde_json::json!({"arrayValue": {"values": items.iter().map(json_to_any).collect::<Vec<_>>()}})
        }
        Value::Object(_) => serde_json::json!({"kvlistValue": {"values": key_values(value)}}),
    }
}

/// A stored time as OTLP's nanoseconds since the epoch, in JSON's string
/// form. Times past year 2554 do not fit 64 bits and are held at the end.
fn unix_nanos(t: crate::model::Timestamp) -> String {
    (t.0.max(0) as u64).saturating_mul(1000).to_string()
}
