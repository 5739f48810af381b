//! OTLP/HTTP trace ingest: the real OpenTelemetry Python SDK and exporters
//! against a real server, then hand-made requests for the status codes, the
//! OTLP JSON mapping, partial success, traces split across requests and a
//! protobuf round trip. The SDK tests install the packages into a virtual
//! environment under the target directory on first use.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use flate2::write::GzEncoder;
use flate2::Compression;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use prost::Message;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE};
use reqwest::Response;
use serde_json::{json, Value};

use common::{expect_error, TestServer};

/// What the export script runs on. The JSON exporter 0.66b1 requires
/// opentelemetry-exporter-otlp-common 0.66b1 while the protobuf exporter
/// 1.45.2 requires 0.66b2, so the two cannot be installed together; 1.45.1
/// is the newest protobuf exporter that installs beside the JSON one.
const OTEL_PACKAGES: [&str; 3] = [
    "opentelemetry-sdk==1.45.2",
    "opentelemetry-exporter-otlp-proto-http==1.45.1",
    "opentelemetry-exporter-otlp-json-http==0.66b1",
];

const TRACES: &str = "/v1/otlp/traces";

/// 2026-03-01T10:00:00Z in nanoseconds since the epoch.
const T0: u64 = 1_772_359_200_000_000_000;

/// The Python of a virtual environment with [`OTEL_PACKAGES`]. The tests of
/// this file run in parallel, so it is made by the first caller while the
/// others wait; it is kept for later runs.
fn otel_python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(make_venv).clone()
}

fn make_venv() -> PathBuf {
    common::python::venv("otel-venv-1.45.2", &OTEL_PACKAGES).join("bin/python")
}

/// Runs `tests/otlp/otel_export.py` in `mode` against `server`; returns
/// the script's report of what it sent.
async fn export_with_sdk(python: PathBuf, server: &TestServer, mode: &'static str) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/otlp/otel_export.py");
    let (url, key) = (server.url.clone(), server.key.clone());
    let output = tokio::task::spawn_blocking(move || {
        let mut command = Command::new(python);
        // The SDK also reads OTEL_* variables (headers, compression, resource
        // attributes): the script's own settings must be the only ones.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("OTEL_") {
                command.env_remove(name);
            }
        }
        command
            .arg(script)
            .args([url.as_str(), key.as_str(), mode])
            .output()
            .expect("script runs")
    })
    .await
    .expect("script task");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the {mode} export failed: {stderr}"
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("the {mode} script's output is not JSON ({e}): {stderr}"))
}

/// The server's id for an OTel trace: the same 32 hex digits as a UUID.
fn trace_uuid(digits: &str) -> String {
    format!(
        "{}-{}-{}-{}-{}",
        &digits[..8],
        &digits[8..12],
        &digits[12..16],
        &digits[16..20],
        &digits[20..]
    )
}

fn nanos(value: &Value) -> u64 {
    value.as_u64().expect("nanoseconds since the epoch")
}

fn rfc3339_micros(micros: u64) -> String {
    let micros = i64::try_from(micros).expect("time in range");
    chrono::DateTime::from_timestamp_micros(micros)
        .expect("time in range")
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// `got` must be `sent_ns` as RFC 3339 with microseconds and `Z`; what is
/// below a microsecond may be cut or rounded.
fn assert_time(got: &Value, sent_ns: u64, what: &str) {
    let cut = rfc3339_micros(sent_ns / 1_000);
    let rounded = rfc3339_micros((sent_ns + 500) / 1_000);
    let got = got.as_str().unwrap_or_default();
    assert!(
        got == cut || got == rounded,
        "{what}: {got:?}, sent as {cut}"
    );
}

/// `got` must be the duration `sent_ns` in milliseconds, give or take one for
/// rounding.
fn assert_millis(got: &Value, sent_ns: u64, what: &str) {
    let ms = got
        .as_i64()
        .unwrap_or_else(|| panic!("{what}: latency {got} is not an integer"));
    let sent = i64::try_from(sent_ns / 1_000_000).expect("duration in range");
    assert!(
        (ms - sent).abs() <= 1,
        "{what}: latency {ms} ms, sent {sent} ms"
    );
}

/// The spans of a stored trace by the names the script gave them, after
/// checking what every span must carry over from the SDK: its OTel ids, the
/// link to its parent, its times and where it came from.
fn stored_spans(trace: &Value, report: &Value, trace_hex: &str) -> HashMap<String, Value> {
    let stored = trace["spans"].as_array().expect("spans");
    let by_otel_id: HashMap<&str, &Value> = stored
        .iter()
        .map(|s| (s["otel_span_id"].as_str().expect("otel_span_id"), s))
        .collect();
    let ids: HashSet<&str> = stored
        .iter()
        .map(|s| s["id"].as_str().expect("span id"))
        .collect();
    assert_eq!(
        ids.len(),
        stored.len(),
        "every span has its own id: {trace}"
    );
    let sent = report["spans"].as_object().expect("reported spans");
    let mut named = HashMap::new();
    for (name, info) in sent.iter().filter(|(_, s)| s["trace_id"] == trace_hex) {
        let otel_id = info["span_id"].as_str().expect("span_id");
        let span = by_otel_id
            .get(otel_id)
            .unwrap_or_else(|| panic!("{name} ({otel_id}) was not stored: {trace}"));
        assert_eq!(span["name"], name.as_str());
        assert_eq!(span["otel_trace_id"], trace_hex, "{name}");
        assert_eq!(span["trace_id"], trace["id"], "{name}");
        let parent = match info["parent"].as_str() {
            Some(parent) => by_otel_id
                .get(parent)
                .unwrap_or_else(|| panic!("{name}'s parent {parent} was not stored"))["id"]
                .clone(),
            None => Value::Null,
        };
        assert_eq!(span["parent_span_id"], parent, "{name}'s parent");
        let (start, end) = (nanos(&info["start_ns"]), nanos(&info["end_ns"]));
        assert_time(&span["start_time"], start, name);
        assert_time(&span["end_time"], end, name);
        assert_millis(&span["latency_ms"], end - start, name);
        assert_eq!(
            span["metadata"]["scope"],
            json!({"name": "otel-export-test", "version": "1.2.3"}),
            "{name}"
        );
        assert_eq!(
            span["metadata"]["resource"]["service.name"], "otel-test-service",
            "{name}"
        );
        named.insert(name.clone(), Value::clone(span));
    }
    assert_eq!(
        named.len(),
        stored.len(),
        "only the spans the SDK sent: {trace}"
    );
    named
}

/// Trace-level times: `started_at` is the earliest span start, the latency
/// runs from there to the latest span end.
fn assert_trace_times(trace: &Value, report: &Value, trace_hex: &str) {
    let sent: Vec<&Value> = report["spans"]
        .as_object()
        .expect("reported spans")
        .values()
        .filter(|s| s["trace_id"] == trace_hex)
        .collect();
    let start = sent.iter().map(|s| nanos(&s["start_ns"])).min();
    let end = sent.iter().map(|s| nanos(&s["end_ns"])).max();
    let (start, end) = start.zip(end).expect("the trace has spans");
    assert_time(&trace["started_at"], start, "trace start");
    assert_millis(&trace["latency_ms"], end - start, "trace");
}

/// Exports with the SDK in `mode` and checks every span and both traces.
async fn sdk_round_trip(mode: &'static str) {
    let python = tokio::task::spawn_blocking(otel_python)
        .await
        .expect("venv");
    let server = TestServer::start().await;
    let report = export_with_sdk(python, &server, mode).await;
    // What makes the checks below meaningful: several spans in one request,
    // and trace B's child arriving in a request before its root's.
    assert_eq!(
        report["requests"],
        json!([
            [
                "chat gpt-4o",
                "execute_tool get_weather",
                "vector search",
                "chat claude",
                "parse",
                "agent-run"
            ],
            ["split-child"],
            ["split-root"]
        ]),
        "{report}"
    );

    // Trace A: one span of every kind the server maps.
    let a_hex = report["traces"]["a"].as_str().expect("trace a");
    let a_id = trace_uuid(a_hex);
    let a = server.get_json(&format!("/v1/traces/{a_id}")).await;
    assert_eq!(a["id"], a_id.as_str());
    assert_eq!(a["name"], "agent-run");
    assert_eq!(a["input"], "What is the weather in Paris?");
    assert_eq!(a["output"], "It is sunny.");
    assert_eq!(
        a["model"], "gpt-4o-2024-08-06",
        "the root has no model: the first LLM span's"
    );
    assert_eq!(a["total_token_count"], 120 + 45 + 10 + 5);
    assert_eq!(
        a["error"], "rate limited",
        "the root has no error: the first failing span's"
    );
    assert_eq!(a["span_count"], 6);
    assert_trace_times(&a, &report, a_hex);
    let resource = &a["metadata"]["resource"];
    assert_eq!(resource["service.name"], "otel-test-service");
    assert_eq!(resource["deployment.environment"], "test");
    assert_eq!(
        resource["telemetry.sdk.language"], "python",
        "the SDK's own resource attributes are kept"
    );
    assert_eq!(a["metadata"], json!({"resource": resource}));

    let spans = stored_spans(&a, &report, a_hex);
    let run = &spans["agent-run"];
    assert_eq!(run["type"], "other");
    assert_eq!(run["input"], "What is the weather in Paris?");
    assert_eq!(run["output"], "It is sunny.");
    assert_eq!(run["error"], Value::Null);
    assert_eq!(run["metadata"]["kind"], "internal");
    assert_eq!(
        run["metadata"]["attributes"],
        json!({"custom.flag": "on"}),
        "mapped attributes are not repeated"
    );

    let gpt = &spans["chat gpt-4o"];
    assert_eq!(gpt["type"], "llm");
    assert_eq!(gpt["model"], "gpt-4o-2024-08-06", "the response model wins");
    assert_eq!(gpt["prompt_tokens"], 120);
    assert_eq!(gpt["completion_tokens"], 45);
    assert_eq!(gpt["input"], "Weather in Paris?");
    assert_eq!(gpt["output"], "Sunny");
    assert_eq!(gpt["error"], Value::Null);
    assert_eq!(gpt["metadata"]["kind"], "client");

    let tool = &spans["execute_tool get_weather"];
    assert_eq!(tool["type"], "tool");
    assert_eq!(tool["error"], Value::Null);
    assert_eq!(spans["vector search"]["type"], "retrieval");

    let claude = &spans["chat claude"];
    assert_eq!(claude["type"], "llm");
    assert_eq!(claude["model"], "claude-3-5-sonnet");
    assert_eq!(claude["prompt_tokens"], 10);
    assert_eq!(claude["completion_tokens"], 5);
    assert_eq!(claude["error"], "rate limited");
    assert_eq!(claude["metadata"]["kind"], "client");

    let parse = &spans["parse"];
    assert_eq!(parse["type"], "other");
    assert_eq!(
        parse["error"], "ValueError: bad input",
        "no status description: the exception event"
    );

    // Trace B: its two requests came together into one trace.
    let b_hex = report["traces"]["b"].as_str().expect("trace b");
    let b = server
        .get_json(&format!("/v1/traces/{}", trace_uuid(b_hex)))
        .await;
    assert_eq!(
        b["name"], "split-root",
        "named by the root that came second"
    );
    assert_eq!(b["span_count"], 2);
    assert_eq!(b["total_token_count"], 10);
    assert_eq!(b["model"], "gpt-4o-mini");
    assert_eq!(b["error"], Value::Null);
    assert_eq!(
        b["metadata"]["resource"]["service.name"],
        "otel-test-service"
    );
    assert_trace_times(&b, &report, b_hex);
    let spans = stored_spans(&b, &report, b_hex);
    assert_eq!(spans["split-root"]["type"], "other");
    let child = &spans["split-child"];
    assert_eq!(child["type"], "llm");
    assert_eq!(child["model"], "gpt-4o-mini");
    assert_eq!(child["prompt_tokens"], 7);
    assert_eq!(child["completion_tokens"], 3);

    assert_eq!(server.list_all("", 50).await.len(), 2, "no other traces");
    server.stop().await;
}

#[tokio::test]
async fn the_otel_sdk_exports_genai_spans_as_protobuf() {
    sdk_round_trip("proto").await;
}

#[tokio::test]
async fn the_otel_sdk_exports_genai_spans_as_gzipped_protobuf() {
    sdk_round_trip("proto-gzip").await;
}

#[tokio::test]
async fn the_otel_sdk_exports_genai_spans_as_json() {
    sdk_round_trip("json").await;
}

/// POSTs a raw body to the OTLP endpoint with the test key.
async fn send(server: &TestServer, content_type: &str, gzip: bool, body: Vec<u8>) -> Response {
    let mut request = server
        .client
        .post(server.url(TRACES))
        .bearer_auth(&server.key)
        .header(CONTENT_TYPE, content_type);
    if gzip {
        request = request.header(CONTENT_ENCODING, "gzip");
    }
    request.body(body).send().await.expect("request sent")
}

fn content_type(resp: &Response) -> String {
    resp.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Asserts the status of an answer, showing its body when it is wrong.
async fn expect_status(resp: Response, status: u16, what: &str) {
    let got = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    assert_eq!(got, status, "{what}: {body}");
}

/// The status and JSON answer of an OTLP JSON request.
async fn json_answer(resp: Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let media = content_type(&resp);
    let body: Value = resp.json().await.expect("a JSON answer");
    assert!(
        media.starts_with("application/json"),
        "answered as {media:?}: {body}"
    );
    (status, body)
}

/// The protobuf answer to an OTLP request that must succeed.
async fn protobuf_answer(resp: Response) -> ExportTraceServiceResponse {
    let status = resp.status();
    let media = content_type(&resp);
    let body = resp.bytes().await.expect("answer body");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(media, "application/x-protobuf");
    ExportTraceServiceResponse::decode(&body[..])
        .expect("the answer is an ExportTraceServiceResponse")
}

/// How many spans an OTLP JSON answer says were refused; the count is an
/// int64, which the JSON mapping allows as a string or a number.
fn rejected(answer: &Value) -> i64 {
    let count = &answer["partialSuccess"]["rejectedSpans"];
    count
        .as_i64()
        .or_else(|| count.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

/// Posts an OTLP JSON request that must be accepted whole.
async fn export_json(server: &TestServer, path: &str, request: &Value) {
    let (status, answer) = json_answer(server.post(path, request).await).await;
    assert_eq!(status, 200, "{path}: {answer}");
    assert_eq!(rejected(&answer), 0, "{path}: {answer}");
}

fn attr(key: &str, value: Value) -> Value {
    json!({"key": key, "value": value})
}

fn text(key: &str, value: &str) -> Value {
    attr(key, json!({"stringValue": value}))
}

/// An integer attribute as the JSON mapping writes an int64: a string.
fn int(key: &str, value: i64) -> Value {
    attr(key, json!({"intValue": value.to_string()}))
}

/// `ms` milliseconds after [`T0`] as an OTLP JSON time (a string).
fn at(ms: u64) -> String {
    (T0 + ms * 1_000_000).to_string()
}

/// One OTLP JSON span of `trace_hex`, from `start_ms` to `end_ms` after [`T0`].
fn json_span(trace_hex: &str, span_hex: &str, name: &str, start_ms: u64, end_ms: u64) -> Value {
    json!({
        "traceId": trace_hex,
        "spanId": span_hex,
        "name": name,
        "kind": 1,
        "startTimeUnixNano": at(start_ms),
        "endTimeUnixNano": at(end_ms)
    })
}

/// An OTLP JSON request with `spans` under one resource and scope.
fn json_request(spans: Vec<Value>) -> Value {
    json!({"resourceSpans": [{
        "resource": {"attributes": [text("service.name", "handmade")]},
        "scopeSpans": [{"scope": {"name": "handmade", "version": "0.1"}, "spans": spans}]
    }]})
}

/// 64 MiB of zeros, gzipped to a few dozen KiB.
fn gzip_bomb() -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..64 {
        gz.write_all(&chunk).expect("compress");
    }
    gz.finish().expect("compress")
}

#[tokio::test]
async fn bad_requests_get_the_status_an_exporter_acts_on() {
    let server = TestServer::start().await;
    expect_status(
        send(&server, "text/plain", false, b"hello".to_vec()).await,
        415,
        "text/plain",
    )
    .await;
    expect_status(
        send(&server, "application/x-protobuf", false, vec![0xff; 4]).await,
        400,
        "protobuf garbage",
    )
    .await;
    expect_status(
        send(&server, "application/json", false, b"{not json".to_vec()).await,
        400,
        "broken JSON",
    )
    .await;
    // 20 MiB is read (and found not to be protobuf); one byte more is
    // refused for its size.
    let limit = 20 * 1024 * 1024;
    expect_status(
        send(&server, "application/x-protobuf", false, vec![0; limit]).await,
        400,
        "a body of exactly 20 MiB",
    )
    .await;
    expect_status(
        send(&server, "application/x-protobuf", false, vec![0; limit + 1]).await,
        413,
        "a body over 20 MiB",
    )
    .await;
    let bomb = gzip_bomb();
    let size = bomb.len();
    assert!(
        size < 1 << 20,
        "the bomb is small on the wire: {size} bytes"
    );
    expect_status(
        send(&server, "application/x-protobuf", true, bomb).await,
        413,
        "64 MiB once inflated",
    )
    .await;

    // No key: the string the SDKs latch on.
    let resp = server
        .client
        .post(server.url(TRACES))
        .header(CONTENT_TYPE, "application/json")
        .body("{}")
        .send()
        .await
        .expect("request sent");
    let body = expect_error(resp, 401).await;
    assert_eq!(body["error"], "invalid_api_key");

    // Empty requests are fine, each answered in its own encoding.
    let (status, answer) =
        json_answer(send(&server, "application/json", false, b"{}".to_vec()).await).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.is_object(), "{answer}");
    assert_eq!(rejected(&answer), 0, "{answer}");
    let answer =
        protobuf_answer(send(&server, "application/x-protobuf", false, Vec::new()).await).await;
    assert!(answer.partial_success.is_none_or(|p| p.rejected_spans == 0));

    assert_eq!(server.list_all("", 50).await, Vec::<String>::new());
    server.stop().await;
}

#[tokio::test]
async fn the_collector_style_path_takes_the_same_requests() {
    // The Collector's otlphttp exporter appends /v1/traces to the
    // endpoint it is given, /v1/otlp.
    let server = TestServer::start().await;
    for (path, trace_hex) in [
        (TRACES, "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1"),
        ("/v1/otlp/v1/traces", "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2"),
    ] {
        let request = json_request(vec![json_span(
            trace_hex,
            "2222222222222222",
            "aliased",
            0,
            10,
        )]);
        export_json(&server, path, &request).await;
        let trace = server
            .get_json(&format!("/v1/traces/{}", trace_uuid(trace_hex)))
            .await;
        assert_eq!(trace["name"], "aliased", "{path}");
        assert_eq!(trace["span_count"], 1, "{path}");
    }
    server.stop().await;
}

#[tokio::test]
async fn invalid_spans_are_refused_one_by_one() {
    let server = TestServer::start().await;
    let trace_hex = "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3";
    // An all-zero span id decodes, but the OTLP spec makes it invalid.
    let request = json_request(vec![
        json_span(trace_hex, "1111111111111111", "kept", 0, 100),
        json_span(trace_hex, "0000000000000000", "zero-id", 0, 100),
    ]);
    let (status, answer) = json_answer(server.post(TRACES, &request).await).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(rejected(&answer), 1, "{answer}");
    let message = answer["partialSuccess"]["errorMessage"]
        .as_str()
        .unwrap_or_default();
    assert!(!message.is_empty(), "the refusal is explained: {answer}");

    let trace = server
        .get_json(&format!("/v1/traces/{}", trace_uuid(trace_hex)))
        .await;
    assert_eq!(trace["span_count"], 1);
    assert_eq!(trace["spans"][0]["name"], "kept");
    assert_eq!(trace["spans"][0]["otel_span_id"], "1111111111111111");
    server.stop().await;
}

#[tokio::test]
async fn otlp_json_follows_the_protobuf_json_mapping() {
    let server = TestServer::start().await;
    let trace_hex = "5b8efff798038103d269b633813fc60c";
    let (root, llm) = ("eee19b7ec3c1b174", "eee19b7ec3c1b173");
    // Ids in hex, kinds as integers, times and int64 values both as strings
    // and as numbers, and fields this server does not know at every level,
    // which the mapping says to ignore.
    let request = json!({
        "resourceSpans": [{
            "resource": {
                "attributes": [text("service.name", "json-mapping")],
                "droppedAttributesCount": 0,
                "aFutureResourceField": {"x": 1}
            },
            "schemaUrl": "https://opentelemetry.io/schemas/1.26.0",
            "aFutureResourceSpansField": [1, 2, 3],
            "scopeSpans": [{
                "scope": {"name": "handmade", "version": "0.1", "aFutureScopeField": true},
                "aFutureScopeSpansField": "x",
                "spans": [
                    {
                        "traceId": trace_hex,
                        "spanId": root,
                        "parentSpanId": "",
                        "name": "json-root",
                        "kind": 2,
                        "startTimeUnixNano": "1772359200123456000",
                        "endTimeUnixNano": "1772359201623456000",
                        "attributes": [
                            text("input.value", "Q?"),
                            text("output.value", "A."),
                            {"key": "retries", "value": {"intValue": 2}, "aFutureKeyValueField": 0}
                        ],
                        "status": {"code": 1, "aFutureStatusField": "x"},
                        "aFutureSpanField": {"nested": [1]}
                    },
                    {
                        "traceId": trace_hex,
                        "spanId": llm,
                        "parentSpanId": root,
                        "name": "json-llm",
                        "kind": 3,
                        "startTimeUnixNano": 1_772_359_200_500_000_000_u64,
                        "endTimeUnixNano": 1_772_359_201_250_000_000_u64,
                        "attributes": [
                            text("gen_ai.system", "openai"),
                            text("gen_ai.request.model", "gpt-4o-mini"),
                            attr("gen_ai.usage.input_tokens", json!({"intValue": "120"})),
                            attr("gen_ai.usage.output_tokens", json!({"intValue": 30}))
                        ]
                    }
                ]
            }]
        }],
        "aFutureTopLevelField": "ignored"
    });
    export_json(&server, TRACES, &request).await;

    let trace = server
        .get_json(&format!("/v1/traces/{}", trace_uuid(trace_hex)))
        .await;
    assert_eq!(trace["name"], "json-root");
    assert_eq!(trace["input"], "Q?");
    assert_eq!(trace["output"], "A.");
    assert_eq!(trace["started_at"], "2026-03-01T10:00:00.123456Z");
    assert_eq!(trace["ended_at"], "2026-03-01T10:00:01.623456Z");
    assert_eq!(trace["latency_ms"], 1500);
    assert_eq!(trace["total_token_count"], 150);
    assert_eq!(trace["model"], "gpt-4o-mini");
    assert_eq!(trace["error"], Value::Null);
    assert_eq!(trace["span_count"], 2);
    assert_eq!(
        trace["metadata"],
        json!({"resource": {"service.name": "json-mapping"}})
    );

    let spans: HashMap<&str, &Value> = trace["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .map(|s| (s["otel_span_id"].as_str().unwrap_or_default(), s))
        .collect();
    let root_span = spans[root];
    assert_eq!(root_span["name"], "json-root");
    assert_eq!(root_span["otel_trace_id"], trace_hex);
    assert_eq!(
        root_span["parent_span_id"],
        Value::Null,
        "an empty parent id"
    );
    assert_eq!(root_span["type"], "other");
    assert_eq!(root_span["start_time"], "2026-03-01T10:00:00.123456Z");
    assert_eq!(root_span["end_time"], "2026-03-01T10:00:01.623456Z");
    assert_eq!(root_span["latency_ms"], 1500);
    assert_eq!(root_span["error"], Value::Null);
    assert_eq!(
        root_span["metadata"],
        json!({
            "kind": "server",
            "scope": {"name": "handmade", "version": "0.1"},
            "attributes": {"retries": 2},
            "resource": {"service.name": "json-mapping"}
        })
    );

    let llm_span = spans[llm];
    assert_eq!(llm_span["name"], "json-llm");
    assert_eq!(llm_span["parent_span_id"], root_span["id"]);
    assert_eq!(llm_span["type"], "llm");
    assert_eq!(llm_span["model"], "gpt-4o-mini");
    assert_eq!(llm_span["prompt_tokens"], 120, "intValue as a string");
    assert_eq!(llm_span["completion_tokens"], 30, "intValue as a number");
    assert_eq!(llm_span["start_time"], "2026-03-01T10:00:00.500000Z");
    assert_eq!(llm_span["end_time"], "2026-03-01T10:00:01.250000Z");
    assert_eq!(llm_span["latency_ms"], 750);
    assert_eq!(llm_span["metadata"]["kind"], "client");
    server.stop().await;
}

#[tokio::test]
async fn a_trace_split_across_requests_is_merged_and_a_retry_adds_nothing() {
    let server = TestServer::start().await;
    let trace_hex = "4bf92f3577b34da6a3ce929d0e0e4736";
    let (root, child) = ("00f067aa0ba902b7", "00f067aa0ba902b8");
    // The child outlives its root, as an async task may: the trace must
    // run until the child's end.
    let mut child_span = json_span(trace_hex, child, "late-child", 1_000, 3_000);
    child_span["parentSpanId"] = json!(root);
    child_span["kind"] = json!(3);
    child_span["attributes"] = json!([
        text("gen_ai.system", "openai"),
        text("gen_ai.request.model", "gpt-4o-mini"),
        int("gen_ai.usage.input_tokens", 7),
        int("gen_ai.usage.output_tokens", 3)
    ]);
    let child_request = json_request(vec![child_span]);
    let mut root_span = json_span(trace_hex, root, "merged-root", 0, 2_000);
    root_span["attributes"] = json!([text("input.value", "go")]);
    let root_request = json_request(vec![root_span]);
    let path = format!("/v1/traces/{}", trace_uuid(trace_hex));

    export_json(&server, TRACES, &child_request).await;
    let early = server.get_json(&path).await;
    assert_eq!(
        early["span_count"], 1,
        "the child is stored before its root arrives"
    );

    export_json(&server, TRACES, &root_request).await;
    let merged = server.get_json(&path).await;
    assert_eq!(merged["name"], "merged-root");
    assert_eq!(merged["input"], "go");
    assert_eq!(merged["span_count"], 2);
    assert_eq!(merged["started_at"], "2026-03-01T10:00:00.000000Z");
    assert_eq!(merged["ended_at"], "2026-03-01T10:00:03.000000Z");
    assert_eq!(merged["latency_ms"], 3000);
    assert_eq!(merged["total_token_count"], 10);
    assert_eq!(merged["model"], "gpt-4o-mini");
    let spans = merged["spans"].as_array().expect("spans");
    assert_eq!(spans.len(), 2);
    let by_otel_id = |id: &str| {
        spans
            .iter()
            .find(|s| s["otel_span_id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("span {id} stored: {merged}"))
    };
    assert_eq!(by_otel_id(child)["parent_span_id"], by_otel_id(root)["id"]);

    // An exporter retrying the first request changes nothing.
    export_json(&server, TRACES, &child_request).await;
    let retried = server.get_json(&path).await;
    assert_eq!(retried["span_count"], 2);
    assert_eq!(retried["total_token_count"], 10);
    assert_eq!(retried["latency_ms"], 3000);
    assert_eq!(retried["name"], "merged-root");
    let ids = |trace: &Value| -> HashSet<String> {
        trace["spans"]
            .as_array()
            .expect("spans")
            .iter()
            .map(|s| s["id"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(ids(&retried), ids(&merged));
    assert_eq!(server.list_all("", 50).await.len(), 1);
    server.stop().await;
}

fn string_attr(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn int_attr(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

/// A protobuf request with `spans` under one resource and scope.
fn export_request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![string_attr("service.name", "rust-built")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "handmade".into(),
                    version: "0.1".into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn id_bytes(digits: &str) -> Vec<u8> {
    hex::decode(digits).expect("hex id")
}

#[tokio::test]
async fn a_protobuf_request_gets_a_protobuf_answer() {
    let server = TestServer::start().await;
    let trace_hex = "0af7651916cd43dd8448eb211c80319c";
    let generate = Span {
        trace_id: id_bytes(trace_hex),
        span_id: id_bytes("b7ad6b7169203331"),
        name: "generate".into(),
        kind: span::SpanKind::Client as i32,
        start_time_unix_nano: T0,
        end_time_unix_nano: T0 + 750_000_000,
        attributes: vec![
            string_attr("gen_ai.operation.name", "chat"),
            string_attr("gen_ai.request.model", "gpt-4o-mini"),
            int_attr("gen_ai.usage.input_tokens", 11),
            int_attr("gen_ai.usage.output_tokens", 4),
        ],
        status: Some(Status {
            message: "upstream timeout".into(),
            code: status::StatusCode::Error as i32,
        }),
        ..Default::default()
    };
    let body = export_request(vec![generate]).encode_to_vec();
    let answer = protobuf_answer(send(&server, "application/x-protobuf", false, body).await).await;
    assert!(
        answer.partial_success.is_none_or(|p| p.rejected_spans == 0),
        "every span was accepted"
    );

    let trace = server
        .get_json(&format!("/v1/traces/{}", trace_uuid(trace_hex)))
        .await;
    assert_eq!(trace["name"], "generate");
    assert_eq!(trace["model"], "gpt-4o-mini");
    assert_eq!(trace["total_token_count"], 15);
    assert_eq!(trace["latency_ms"], 750);
    assert_eq!(trace["error"], "upstream timeout");
    assert_eq!(trace["started_at"], "2026-03-01T10:00:00.000000Z");
    assert_eq!(
        trace["metadata"],
        json!({"resource": {"service.name": "rust-built"}})
    );
    let stored = &trace["spans"][0];
    assert_eq!(stored["otel_trace_id"], trace_hex);
    assert_eq!(stored["otel_span_id"], "b7ad6b7169203331");
    assert_eq!(stored["type"], "llm");
    assert_eq!(stored["prompt_tokens"], 11);
    assert_eq!(stored["completion_tokens"], 4);
    assert_eq!(stored["error"], "upstream timeout");
    assert_eq!(stored["metadata"]["kind"], "client");
    assert_eq!(
        stored["metadata"]["scope"],
        json!({"name": "handmade", "version": "0.1"})
    );

    // A span with an all-zero trace id is refused, and said to be, in
    // protobuf; the valid span beside it is stored.
    let kept_hex = "1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c";
    let kept = Span {
        trace_id: id_bytes(kept_hex),
        span_id: id_bytes("3333333333333333"),
        name: "kept".into(),
        start_time_unix_nano: T0,
        end_time_unix_nano: T0 + 1_000_000,
        ..Default::default()
    };
    let zero = Span {
        trace_id: vec![0; 16],
        span_id: id_bytes("4444444444444444"),
        name: "zero-trace-id".into(),
        start_time_unix_nano: T0,
        end_time_unix_nano: T0 + 1_000_000,
        ..Default::default()
    };
    let body = export_request(vec![kept, zero]).encode_to_vec();
    let answer = protobuf_answer(send(&server, "application/x-protobuf", false, body).await).await;
    let partial = answer
        .partial_success
        .expect("a partial success for the refused span");
    assert_eq!(partial.rejected_spans, 1);
    assert!(
        !partial.error_message.is_empty(),
        "the refusal is explained"
    );
    let kept = server
        .get_json(&format!("/v1/traces/{}", trace_uuid(kept_hex)))
        .await;
    assert_eq!(kept["name"], "kept");
    assert_eq!(server.list_all("", 50).await.len(), 2);
    server.stop().await;
}

/// A span of `trace_hex` from `start_ms` to `end_ms` after [`T0`].
fn proto_span(
    trace_hex: &str,
    span_hex: &str,
    parent: Option<&str>,
    name: &str,
    (start_ms, end_ms): (u64, u64),
    attributes: Vec<KeyValue>,
) -> Span {
    Span {
        trace_id: id_bytes(trace_hex),
        span_id: id_bytes(span_hex),
        parent_span_id: parent.map(id_bytes).unwrap_or_default(),
        name: name.into(),
        kind: if parent.is_some() {
            span::SpanKind::Client as i32
        } else {
            span::SpanKind::Server as i32
        },
        start_time_unix_nano: T0 + start_ms * 1_000_000,
        end_time_unix_nano: T0 + end_ms * 1_000_000,
        attributes,
        ..Default::default()
    }
}

fn double_attr(key: &str, value: f64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::DoubleValue(value)),
        }),
        ..Default::default()
    }
}

/// Posts a protobuf request that must be accepted whole.
async fn export_protobuf(server: &TestServer, spans: Vec<Span>) {
    let body = export_request(spans).encode_to_vec();
    let answer = protobuf_answer(send(server, "application/x-protobuf", false, body).await).await;
    assert!(
        answer.partial_success.is_none_or(|p| p.rejected_spans == 0),
        "every span was accepted"
    );
}

/// Three traces as an SDK exports them, each span once it ends: an agent
/// run (a root and three children, the second failing), a short chat and
/// a retrieval.
fn three_traces() -> [(&'static str, Vec<Span>); 3] {
    let agent = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
    let chat = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2";
    let rag = "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3";
    let llm = |model: &str, input: i64, output: i64, prompt: &str| {
        vec![
            string_attr("gen_ai.system", "openai"),
            string_attr("gen_ai.request.model", model),
            int_attr("gen_ai.usage.input_tokens", input),
            int_attr("gen_ai.usage.output_tokens", output),
            string_attr("gen_ai.prompt", prompt),
            string_attr("gen_ai.completion", "the refund was issued"),
        ]
    };
    let root = "0a00000000000001";
    let mut failing = proto_span(
        agent,
        "0a00000000000003",
        Some(root),
        "lookup_order",
        (2_000, 5_000),
        vec![
            string_attr("gen_ai.tool.name", "lookup_order"),
            string_attr("http.request.method", "GET"),
        ],
    );
    failing.status = Some(Status {
        message: "lookup timed out after 30 s".into(),
        code: status::StatusCode::Error as i32,
    });
    failing.events = vec![span::Event {
        time_unix_nano: T0 + 4_900_000_000,
        name: "exception".into(),
        attributes: vec![string_attr("exception.type", "TimeoutError")],
        ..Default::default()
    }];
    let mut answer = llm("gpt-4o", 20, 8, "write the answer about the invoice");
    answer.push(double_attr("gen_ai.usage.cost", 0.5));
    let agent_spans = vec![
        proto_span(
            agent,
            "0a00000000000002",
            Some(root),
            "plan",
            (100, 2_000),
            llm("gpt-4o-mini", 10, 5, "plan the invoice question"),
        ),
        failing,
        proto_span(
            agent,
            "0a00000000000004",
            Some(root),
            "answer",
            (5_000, 9_000),
            answer,
        ),
        proto_span(
            agent,
            root,
            None,
            "support agent",
            (0, 10_000),
            vec![
                string_attr("session.id", "sess-split"),
                string_attr("input.value", "where is my invoice refund"),
                string_attr("output.value", "refund issued"),
            ],
        ),
    ];
    let chat_spans = vec![
        proto_span(
            chat,
            "0b00000000000002",
            Some("0b00000000000001"),
            "complete",
            (1_000, 3_000),
            llm("claude-3-5-sonnet", 7, 3, "hello walrus"),
        ),
        proto_span(chat, "0b00000000000001", None, "chat", (500, 3_500), vec![]),
    ];
    let rag_spans = vec![
        proto_span(
            rag,
            "0c00000000000002",
            Some("0c00000000000001"),
            "search_docs",
            (1_200, 1_900),
            vec![string_attr("db.system", "qdrant")],
        ),
        proto_span(
            rag,
            "0c00000000000003",
            Some("0c00000000000001"),
            "generate",
            (1_900, 4_000),
            llm("gpt-4o", 30, 12, "summarise the walrus docs"),
        ),
        proto_span(rag, "0c00000000000001", None, "rag", (1_000, 4_100), vec![]),
    ];
    [(agent, agent_spans), (chat, chat_spans), (rag, rag_spans)]
}

/// Metrics over the day of [`T0`], and the ids a search and a filter list.
async fn what_a_user_sees(server: &TestServer) -> Value {
    let mut out = json!({
        "metrics": server
            .get_json("/v1/metrics?from=2026-03-01T00:00:00Z&to=2026-03-02T00:00:00Z")
            .await,
    });
    for query in ["q=invoice", "q=walrus", "error=true", "model=gpt-4o-mini"] {
        let mut ids = server.list_all(query, 50).await;
        ids.sort();
        out[query] = json!(ids);
    }
    out
}

#[tokio::test]
async fn a_trace_exported_as_its_spans_end_reads_as_if_sent_whole() {
    let whole = TestServer::start().await;
    let split = TestServer::start().await;
    let [(agent, a), (chat, b), (rag, c)] = three_traces();
    for spans in [a.clone(), b.clone(), c.clone()] {
        export_protobuf(&whole, spans).await;
    }
    // As a batch exporter sends them: spans in the order they end, the
    // root last, three traces' spans in each request.
    let agent_path = format!("/v1/traces/{}", trace_uuid(agent));
    export_protobuf(&split, vec![a[0].clone(), a[1].clone(), b[0].clone()]).await;
    let early = split.get_json(&agent_path).await;
    assert_eq!(early["span_count"], 2, "{early}");
    assert_eq!(
        early["name"], "plan",
        "until its root arrives, the earliest span names the trace"
    );
    assert_eq!(early["error"], "lookup timed out after 30 s");
    export_protobuf(
        &split,
        vec![c[0].clone(), a[2].clone(), b[1].clone(), c[1].clone()],
    )
    .await;
    export_protobuf(&split, vec![c[2].clone(), a[3].clone()]).await;

    for trace in [agent, chat, rag] {
        let path = format!("/v1/traces/{}", trace_uuid(trace));
        assert_eq!(
            comparable(split.get_json(&path).await),
            comparable(whole.get_json(&path).await),
            "trace {trace}"
        );
    }
    let merged = split.get_json(&agent_path).await;
    assert_eq!(merged["name"], "support agent");
    assert_eq!(merged["input"], "where is my invoice refund");
    assert_eq!(merged["span_count"], 4);
    assert_eq!(merged["total_token_count"], 43);
    assert_eq!(merged["started_at"], "2026-03-01T10:00:00.000000Z");
    assert_eq!(merged["ended_at"], "2026-03-01T10:00:10.000000Z");
    assert_eq!(merged["latency_ms"], 10_000);
    assert_eq!(merged["model"], "gpt-4o-mini", "the earliest LLM span's");
    assert_eq!(merged["error"], "lookup timed out after 30 s");
    assert_eq!(merged["session_id"], "sess-split");
    assert_eq!(merged["events"].as_array().map(Vec::len), Some(1));
    let plan_cost = merged["spans"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "plan"))
        .and_then(|s| s["cost"].as_f64())
        .expect("the plan span is priced");
    assert_eq!(merged["cost"].as_f64(), Some(plan_cost + 0.5));
    let seen = what_a_user_sees(&split).await;
    assert_eq!(seen, what_a_user_sees(&whole).await);
    assert_eq!(seen["q=invoice"], json!([trace_uuid(agent)]));
    assert_eq!(seen["error=true"], json!([trace_uuid(agent)]));

    // A span sent again, changed: stored once, with its later content, in
    // the trace's aggregates too.
    let mut again = a[2].clone();
    again.attributes = vec![
        string_attr("gen_ai.system", "openai"),
        string_attr("gen_ai.request.model", "gpt-4o"),
        int_attr("gen_ai.usage.input_tokens", 30),
        int_attr("gen_ai.usage.output_tokens", 8),
        double_attr("gen_ai.usage.cost", 0.75),
        string_attr("gen_ai.completion", "the refund went out on monday"),
    ];
    for server in [&split, &whole] {
        export_protobuf(server, vec![again.clone()]).await;
    }
    let resent = split.get_json(&agent_path).await;
    assert_eq!(resent["span_count"], 4);
    assert_eq!(resent["total_token_count"], 53);
    assert_eq!(resent["cost"].as_f64(), Some(plan_cost + 0.75));
    let answers: Vec<&Value> = resent["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .filter(|s| s["name"] == "answer")
        .collect();
    assert_eq!(answers.len(), 1, "{resent}");
    assert_eq!(answers[0]["output"], "the refund went out on monday");
    assert_eq!(answers[0]["prompt_tokens"], 30);
    assert_eq!(
        comparable(resent),
        comparable(whole.get_json(&agent_path).await)
    );
    assert_eq!(
        what_a_user_sees(&split).await,
        what_a_user_sees(&whole).await
    );
    split.stop().await;
    whole.stop().await;
}

// ---------------------------------------------------------------- export

/// `GET /v1/otlp/export` over the day of [`T0`] (and of the SDK sample).
async fn export_page(server: &TestServer, cursor: Option<&str>) -> (Value, Option<String>) {
    let mut path = "/v1/otlp/export?from=2023-11-01T00:00:00Z&to=2026-12-31T00:00:00Z".to_string();
    if let Some(c) = cursor {
        path.push_str(&format!("&cursor={c}"));
    }
    let session = server.session_token().await;
    let resp = server.get_as(&session, &path).await;
    assert_eq!(resp.status().as_u16(), 200, "export");
    assert_eq!(content_type(&resp), "application/json");
    let next = resp
        .headers()
        .get("x-next-cursor")
        .map(|v| v.to_str().expect("ascii cursor").to_owned());
    (resp.json().await.expect("export is JSON"), next)
}

/// Every exported span as (trace id, span id, parent span id).
fn exported_spans(data: &Value) -> Vec<(String, String, Option<String>)> {
    let mut out = Vec::new();
    for rs in data["resourceSpans"].as_array().expect("resourceSpans") {
        for ss in rs["scopeSpans"].as_array().expect("scopeSpans") {
            for s in ss["spans"].as_array().expect("spans") {
                out.push((
                    s["traceId"].as_str().expect("traceId").to_owned(),
                    s["spanId"].as_str().expect("spanId").to_owned(),
                    s["parentSpanId"].as_str().map(str::to_owned),
                ));
            }
        }
    }
    out
}

/// A stored trace without the fields a second server assigns itself.
fn comparable(mut trace: Value) -> Value {
    let object = trace.as_object_mut().expect("trace object");
    object.remove("created_at");
    object.remove("project_id");
    for span in object
        .get_mut("spans")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        let span = span.as_object_mut().expect("span object");
        span.remove("created_at");
        span.remove("tenant_id");
    }
    for event in object
        .get_mut("events")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        event.as_object_mut().expect("event object").remove("id");
    }
    trace
}

#[tokio::test]
async fn an_export_reingested_into_a_fresh_server_reproduces_the_traces() {
    let source = TestServer::start().await;
    // One trace over OTLP: a root, an LLM child with an error and an event.
    let trace_hex = "0af7651916cd43dd8448eb211c80319c";
    let mut llm = json_span(trace_hex, "b7ad6b7169203331", "chat", 10, 400);
    llm["parentSpanId"] = json!("00f067aa0ba902b7");
    llm["attributes"] = json!([
        text("gen_ai.system", "openai"),
        text("gen_ai.request.model", "gpt-4o"),
        int("gen_ai.usage.input_tokens", 30),
        int("gen_ai.usage.output_tokens", 12),
        text("gen_ai.prompt", "hi"),
        text("custom.note", "kept")
    ]);
    llm["status"] = json!({"code": 2, "message": "rate limited"});
    llm["events"] = json!([{"timeUnixNano": at(20), "name": "retry",
                            "attributes": [int("attempt", 2)]}]);
    let mut root = json_span(trace_hex, "00f067aa0ba902b7", "agent", 0, 500);
    root["attributes"] = json!([
        text("input.value", "question"),
        text("output.value", "answer")
    ]);
    export_json(&source, "/v1/otlp/traces", &json_request(vec![root, llm])).await;
    // One trace from the SDK's JSON ingest, with tags, metadata, a nested
    // span and an event: fields OTLP has no place for.
    let mut sdk = common::sample_trace("sdk-trace");
    sdk["tags"] = json!({"env": "prod", "team": "search"});
    sdk["metadata"] = json!({"user": "u-1", "n": 3});
    sdk["session_id"] = json!("session-9");
    sdk["external_id"] = json!("ext-1");
    sdk["spans"][0]["id"] = json!("6f1f9d3e-0c57-4c2a-9a53-1f7f0b7d6a10");
    sdk["spans"][0]["metadata"] = json!({"temperature": 0.2});
    sdk["spans"].as_array_mut().expect("spans").push(json!({
        "id": "1c0b6a52-7d7e-4f0e-8a0b-4d0f4e1f2a33",
        "parent_span_id": "6f1f9d3e-0c57-4c2a-9a53-1f7f0b7d6a10",
        "name": "lookup", "type": "tool",
        "start_time": "2026-03-01T10:00:01Z", "end_time": "2026-03-01T10:00:01.5Z"
    }));
    sdk["events"] = json!([{"level": "warning", "message": "slow",
                            "span_id": "1c0b6a52-7d7e-4f0e-8a0b-4d0f4e1f2a33",
                            "timestamp": "2026-03-01T10:00:01.2Z"}]);
    let sdk_id = source.ingest(sdk).await;

    let (data, next) = export_page(&source, None).await;
    assert_eq!(next, None, "everything fits one page");
    let spans = exported_spans(&data);
    // 2 OTel spans, and for the SDK trace its 2 spans under a root span
    // standing for the trace.
    assert_eq!(spans.len(), 5, "{data}");
    let ids: HashSet<&str> = spans.iter().map(|(_, s, _)| s.as_str()).collect();
    assert_eq!(ids.len(), 5, "span ids are unique: {spans:?}");
    for (_, span, parent) in &spans {
        if let Some(parent) = parent {
            assert!(
                ids.contains(parent.as_str()),
                "{span}'s parent {parent} is exported"
            );
        }
    }

    let target = TestServer::start().await;
    export_json(&target, "/v1/otlp/traces", &data).await;
    for id in [trace_uuid(trace_hex), sdk_id] {
        let before = comparable(source.get_json(&format!("/v1/traces/{id}")).await);
        let after = comparable(target.get_json(&format!("/v1/traces/{id}")).await);
        assert_eq!(after, before, "trace {id} after export and re-ingest");
    }
    // The restored tags are filterable again.
    let tagged = target.list_all("tag_key=team&tag_value=search", 50).await;
    assert_eq!(tagged.len(), 1);
}

#[tokio::test]
async fn export_pages_hold_at_most_10000_spans_and_the_cursor_continues() {
    let server = TestServer::start().await;
    // Three traces of 4,000 spans: the first page ends inside the third.
    let mut sent = HashSet::new();
    for t in 0..3u64 {
        let trace_hex = format!("{:032x}", 0xabc000 + t);
        let spans: Vec<Value> = (0..4000u64)
            .map(|i| {
                let span_hex = format!("{:016x}", 0x100000 + i);
                sent.insert((trace_hex.clone(), span_hex.clone()));
                json_span(
                    &trace_hex,
                    &span_hex,
                    "step",
                    t * 10_000 + i,
                    t * 10_000 + i + 1,
                )
            })
            .collect();
        export_json(&server, "/v1/otlp/traces", &json_request(spans)).await;
    }
    // Pages of small spans end at 10,000 spans or at their size budget,
    // whichever comes first; the cursor carries on to the end.
    let mut got = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let (page, next) = export_page(&server, cursor.as_deref()).await;
        let spans = exported_spans(&page);
        assert!(
            !spans.is_empty() && spans.len() <= 10_000,
            "{}",
            spans.len()
        );
        assert!(page.to_string().len() <= 4 << 20);
        got.extend(spans.into_iter().map(|(t, s, _)| (t, s)));
        pages += 1;
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
        assert!(pages < 10, "the cursor does not move on");
    }
    assert!(pages >= 2);
    assert_eq!(got.len(), 12_000, "no span twice");
    let got: HashSet<(String, String)> = got.into_iter().collect();
    assert_eq!(got, sent, "every span exactly once across the pages");

    let session = server.session_token().await;
    let bad = server
        .get_as(
            &session,
            "/v1/otlp/export?from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&cursor=nope",
        )
        .await;
    expect_error(bad, 400).await;
    let missing = server
        .get_as(&session, "/v1/otlp/export?to=2026-01-02T00:00:00Z")
        .await;
    let body = expect_error(missing, 400).await;
    assert!(
        body["error"].as_str().expect("message").contains("from"),
        "{body}"
    );
    // A dashboard route: an API key is refused.
    let by_key = server
        .get("/v1/otlp/export?from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z")
        .await;
    let body = expect_error(by_key, 403).await;
    assert_eq!(body["code"], "session_required");
}

#[tokio::test]
async fn genai_events_messages_and_openinference_attributes_are_mapped() {
    let server = TestServer::start().await;
    let store = server.running().store().clone();
    let rag = store
        .create_project(
            1,
            "RAG App".into(),
            trulayer_server::store::Actor::operator(),
        )
        .await
        .expect("project");
    let trace_hex = "4bf92f3577b34da6a3ce929d0e0e4736";
    // Prompt and completion as GenAI content events.
    let mut events = json_span(trace_hex, "1000000000000001", "chat events", 0, 100);
    events["attributes"] = json!([text("gen_ai.provider.name", "anthropic")]);
    events["events"] = json!([
        {"timeUnixNano": at(1), "name": "gen_ai.system.message",
         "attributes": [text("content", "Be brief.")]},
        {"timeUnixNano": at(2), "name": "gen_ai.user.message",
         "attributes": [text("content", "Hi?")]},
        {"timeUnixNano": at(90), "name": "gen_ai.choice",
         "attributes": [text("message", "Hello!")]}
    ]);
    // Structured messages as attributes.
    let mut messages = json_span(trace_hex, "1000000000000002", "chat messages", 100, 200);
    messages["attributes"] = json!([
        text("gen_ai.operation.name", "chat"),
        text(
            "gen_ai.input.messages",
            r#"[{"role":"user","parts":[{"type":"text","content":"2+2?"}]}]"#
        ),
        text(
            "gen_ai.output.messages",
            r#"[{"role":"assistant","parts":[{"type":"text","content":"4"}]}]"#
        )
    ]);
    // OpenInference, as LlamaIndex or Arize instrumentations emit it.
    let mut oi = json_span(trace_hex, "1000000000000003", "llm", 200, 300);
    oi["attributes"] = json!([
        text("openinference.span.kind", "LLM"),
        text("llm.model_name", "mistral-large"),
        int("llm.token_count.prompt", 40),
        int("llm.token_count.completion", 8),
        text("input.value", "oi in"),
        text("output.value", "oi out")
    ]);
    let mut retriever = json_span(trace_hex, "1000000000000004", "retrieve", 300, 400);
    retriever["attributes"] = json!([
        text("openinference.span.kind", "RETRIEVER"),
        text("huge", &"x".repeat(40_000))
    ]);
    let mut request = json_request(vec![events, messages, oi, retriever]);
    request["resourceSpans"][0]["resource"]["attributes"]
        .as_array_mut()
        .expect("resource attributes")
        .push(text("trulayer.project", "rag-app"));
    export_json(&server, "/v1/otlp/traces", &request).await;

    let trace = server
        .get_json(&format!("/v1/traces/{}", trace_uuid(trace_hex)))
        .await;
    assert_eq!(
        trace["project_id"],
        rag.uuid.as_str(),
        "trulayer.project picks the project"
    );
    let by_name: HashMap<&str, &Value> = trace["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .map(|s| (s["name"].as_str().expect("name"), s))
        .collect();
    let events = by_name["chat events"];
    assert_eq!(events["type"], "llm");
    assert_eq!(
        serde_json::from_str::<Value>(events["input"].as_str().expect("input")).expect("json"),
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}])
    );
    assert_eq!(events["output"], "Hello!");
    let messages = by_name["chat messages"];
    assert_eq!(messages["type"], "llm");
    assert!(messages["input"].as_str().expect("input").contains("2+2?"));
    assert!(messages["output"]
        .as_str()
        .expect("output")
        .contains("\"4\""));
    let oi = by_name["llm"];
    assert_eq!(oi["type"], "llm");
    assert_eq!(oi["model"], "mistral-large");
    assert_eq!(oi["prompt_tokens"], 40);
    assert_eq!(oi["completion_tokens"], 8);
    assert_eq!(oi["input"], "oi in");
    assert_eq!(oi["output"], "oi out");
    let retriever = by_name["retrieve"];
    assert_eq!(retriever["type"], "retrieval");
    // The 40 KB attribute does not fit the metadata bound: it is dropped,
    // and the metadata says so.
    assert_eq!(
        retriever["metadata"]["truncated"], true,
        "{}",
        retriever["metadata"]
    );
    assert!(retriever["metadata"]["attributes"].get("huge").is_none());
    assert!(retriever["metadata"].to_string().len() <= 16 * 1024);
    assert_eq!(trace["total_token_count"], 48);
}

#[tokio::test]
async fn an_export_of_times_beyond_otlps_range_does_not_fail() {
    let server = TestServer::start().await;
    let mut far = common::sample_trace("far future");
    far["started_at"] = json!("9999-12-31T23:59:58Z");
    far["ended_at"] = json!("9999-12-31T23:59:59Z");
    far["spans"][0]["start_time"] = json!("9999-12-31T23:59:58.5Z");
    far["spans"][0]["end_time"] = json!("9999-12-31T23:59:59Z");
    server.ingest(far).await;
    let session = server.session_token().await;
    let resp = server
        .get_as(
            &session,
            "/v1/otlp/export?from=9999-12-01T00:00:00Z&to=9999-12-31T23:59:59.999Z",
        )
        .await;
    assert_eq!(resp.status().as_u16(), 200);
    let data: Value = resp.json().await.expect("JSON");
    // Nanoseconds past 2554 do not fit 64 bits: held at the largest value.
    let spans = exported_spans(&data);
    assert_eq!(spans.len(), 2, "the span and the trace's root: {data}");
    assert!(data.to_string().contains(&u64::MAX.to_string()), "{data}");
}

#[tokio::test]
async fn tags_given_later_to_a_trace_already_in_the_tag_index_are_found() {
    let server = TestServer::start().await;
    let trace_hex = "5b8efff798038103d269b633813fc60c";
    let span = json_span(trace_hex, "00f067aa0ba902b8", "llm", 0, 100);
    export_json(&server, "/v1/otlp/traces", &json_request(vec![span])).await;
    // The tag index merges in the background; wait until it covers the trace.
    let store = server.running().store().clone();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while store.index_backlog().await.expect("backlog") > 0 {
        assert!(std::time::Instant::now() < deadline, "never merged");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Then the trace's root span arrives with the trace's tags (as an export
    // from another server sends them).
    let mut root = json_span(trace_hex, "00f067aa0ba902b9", "agent", 0, 200);
    root["attributes"] = json!([
        attr("trulayer.trace", json!({"boolValue": true})),
        text("trulayer.trace.tag_map", r#"{"team":"search"}"#)
    ]);
    export_json(&server, "/v1/otlp/traces", &json_request(vec![root])).await;
    let tagged = server.list_all("tag_key=team&tag_value=search", 50).await;
    assert_eq!(tagged, [trace_uuid(trace_hex)]);
}

#[tokio::test]
async fn a_root_span_sent_again_with_fewer_tags_leaves_no_tag_behind() {
    let server = TestServer::start().await;
    let trace_hex = "6c9f00a8a9149214e37ac744924fd71d";
    let root = |tag_map: &str| {
        let mut root = json_span(trace_hex, "00f067aa0ba902c1", "agent", 0, 200);
        root["attributes"] = json!([
            attr("trulayer.trace", json!({"boolValue": true})),
            text("trulayer.trace.tag_map", tag_map)
        ]);
        root
    };
    let store = server.running().store().clone();
    let merged = || async {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while store.index_backlog().await.expect("backlog") > 0 {
            assert!(std::time::Instant::now() < deadline, "never merged");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    export_json(
        &server,
        "/v1/otlp/traces",
        &json_request(vec![root(r#"{"team":"search","tier":"gold"}"#)]),
    )
    .await;
    merged().await;
    let id = trace_uuid(trace_hex);
    assert_eq!(
        server.list_all("tag_key=tier&tag_value=gold", 50).await,
        vec![id.clone()]
    );

    // The same root again (as a later export sends it), now without `tier`
    // and with `team` changed: the trace's tags are the new ones alone.
    export_json(
        &server,
        "/v1/otlp/traces",
        &json_request(vec![root(r#"{"team":"ads"}"#)]),
    )
    .await;
    for _ in 0..2 {
        assert!(server
            .list_all("tag_key=tier&tag_value=gold", 50)
            .await
            .is_empty());
        assert!(server
            .list_all("tag_key=team&tag_value=search", 50)
            .await
            .is_empty());
        assert_eq!(
            server.list_all("tag_key=team&tag_value=ads", 50).await,
            vec![id.clone()]
        );
        merged().await;
    }
    let detail = server.get_json(&format!("/v1/traces/{id}")).await;
    assert_eq!(detail["tag_map"], json!({"team": "ads"}), "{detail}");
}

/// `spans` minimal spans, each in a trace of its own: the shape that costs
/// the most memory per byte on the wire.
fn minimal_spans(spans: u64) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: (0..spans)
                    .map(|i| Span {
                        trace_id: [i.to_be_bytes(), 7u64.to_be_bytes()].concat(),
                        span_id: (i + 1).to_be_bytes().to_vec(),
                        name: "s".into(),
                        start_time_unix_nano: T0 + i,
                        end_time_unix_nano: T0 + i + 1_000,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[tokio::test]
async fn a_request_of_more_spans_than_the_limit_is_refused_whole_with_413() {
    let server = TestServer::start_with("[limits]\notlp_max_spans = 100\n").await;
    for gzip in [false, true] {
        let mut body = minimal_spans(101).encode_to_vec();
        if gzip {
            let mut gz = GzEncoder::new(Vec::new(), Compression::default());
            gz.write_all(&body).expect("compress");
            body = gz.finish().expect("compress");
        }
        let resp = send(&server, "application/x-protobuf", gzip, body).await;
        let body = expect_error(resp, 413).await;
        assert_eq!(body["code"], "too_many_spans");
        let text = body["error"].as_str().unwrap_or_default();
        assert!(text.contains("100") && text.contains("101"), "{text}");
    }
    let json_body = serde_json::to_vec(&minimal_spans(101)).expect("JSON");
    let resp = send(&server, "application/json", false, json_body).await;
    expect_error(resp, 413).await;
    assert!(server.list_all("", 200).await.is_empty(), "nothing stored");

    let resp = send(
        &server,
        "application/x-protobuf",
        false,
        minimal_spans(100).encode_to_vec(),
    )
    .await;
    let answer = protobuf_answer(resp).await;
    assert_eq!(answer.partial_success, None);
    assert_eq!(server.list_all("", 200).await.len(), 100);
    server.stop().await;
}

#[tokio::test]
async fn spans_with_absurd_numbers_are_refused_by_name_and_the_rest_stored() {
    let server = TestServer::start().await;
    let number = |key: &str, value: any_value::Value| KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    };
    let mut request = minimal_spans(4);
    let spans = &mut request.resource_spans[0].scope_spans[0].spans;
    spans[0].attributes = vec![number(
        "gen_ai.usage.cost",
        any_value::Value::DoubleValue(1e308),
    )];
    spans[1].attributes = vec![number(
        "gen_ai.usage.input_tokens",
        any_value::Value::IntValue(-5),
    )];
    spans[2].attributes = vec![number(
        "gen_ai.usage.output_tokens",
        any_value::Value::StringValue("12".into()),
    )];
    let resp = send(
        &server,
        "application/x-protobuf",
        false,
        request.encode_to_vec(),
    )
    .await;
    let answer = protobuf_answer(resp).await;
    let partial = answer.partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 2);
    assert!(
        partial.error_message.contains("gen_ai.usage.cost"),
        "{}",
        partial.error_message
    );
    assert_eq!(server.list_all("", 50).await.len(), 2);
    let metrics = server
        .get_json("/v1/metrics?from=2026-01-01T00:00:00Z&to=2026-12-31T00:00:00Z")
        .await;
    assert_eq!(metrics["total_tokens"], 12, "{metrics}");
    server.stop().await;
}

#[tokio::test]
async fn an_export_page_holds_about_4_mib_and_every_span_comes_out_once() {
    let server = TestServer::start().await;
    let text = |n: usize, tag: &str| format!("{tag} ").repeat(n / (tag.len() + 1));
    let spans: Vec<Value> = (0..6)
        .map(|i| {
            json!({"name": format!("step {i}"), "type": "llm",
                   "input": text(1_000_000, &format!("input{i}")), "output": "ok",
                   "start_time": format!("2026-03-01T10:00:0{i}Z")})
        })
        .collect();
    let traces = json!({"traces": [
        {"name": "six large spans", "input": "q", "spans": spans,
         "started_at": "2026-03-01T10:00:00Z"},
        {"name": "large input", "input": text(1_500_000, "head"),
         "spans": [{"name": "small", "type": "tool"}], "started_at": "2026-03-01T10:01:00Z"},
        {"name": "small", "input": "hello", "started_at": "2026-03-01T10:02:00Z"},
    ]});
    let resp = server.post("/v1/ingest/batch", &traces).await;
    assert_eq!(resp.status(), 201);

    let session = server.session_token().await;
    let mut cursor: Option<String> = None;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let mut path =
            "/v1/otlp/export?from=2026-03-01T00:00:00Z&to=2026-03-02T00:00:00Z".to_string();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let resp = server.get_as(&session, &path).await;
        assert_eq!(resp.status(), 200);
        let next = resp
            .headers()
            .get("x-next-cursor")
            .map(|v| v.to_str().expect("ascii").to_owned());
        let body = resp.text().await.expect("body");
        assert!(body.len() <= 4 << 20, "a page of {} bytes", body.len());
        let data: Value = serde_json::from_str(&body).expect("JSON");
        seen.extend(exported_spans(&data));
        pages += 1;
        assert!(pages < 20, "the cursor does not move on");
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert!(pages >= 2, "pages end early: {pages}");
    let unique: HashSet<_> = seen.iter().map(|(t, s, _)| (t, s)).collect();
    assert_eq!(unique.len(), seen.len(), "a span exported twice");
    // Six spans and a root for the first trace, a span and a root for the
    // second, a root for the third.
    assert_eq!(seen.len(), 10);
    server.stop().await;
}
