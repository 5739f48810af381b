//! End-to-end benchmark of the release-built `trulayer-server`, driven over
//! HTTP on 127.0.0.1 only.
//!
//! Run: `cargo bench --bench ingest` (the bench profile is `release`).
//!
//! Phases, all in one run:
//! 1. Start to ready (spawn → first 200 on `/health`, polled every 2 ms) on a
//!    fresh data directory (database creation + argon2 password hash), then on
//!    a restart of the same directory; idle RSS after a short settle.
//! 2. Ingest load: `BENCH_CLIENTS` tasks, each with its own keep-alive client,
//!    post `/v1/ingest/batch` requests of 100 traces × 4 spans (~200-character
//!    inputs, ~400-character outputs, unique ids) built on the fly; traces/s,
//!    spans/s, batch latency percentiles, server CPU and peak RSS (VmHWM).
//! 3. Ceiling: the same rows inserted straight into a fresh SQLite file with
//!    rusqlite (the server's schema; WAL, synchronous=NORMAL, foreign keys on,
//!    SQLite's defaults otherwise), 100 traces per transaction, one thread;
//!    the ratio server ÷ ceiling. For context the same is run once more with
//!    `wal_autocheckpoint = 0`: no checkpoint I/O at all, the insert cost alone.
//! 4. Queries at scale: a fresh server is filled to `BENCH_QUERY_TRACES` traces
//!    over HTTP (a long sustained-ingest figure), restarted on the same data,
//!    then `GET /v1/traces` (first page, filtered pages, a deep cursor page)
//!    and `GET /v1/traces/{id}` are timed sequentially.
//!
//! Environment knobs (the defaults give the full run):
//!
//! | variable                  | default | meaning                                                   |
//! |---------------------------|---------|-----------------------------------------------------------|
//! | `BENCH_CLIENTS`           | 8       | concurrent ingest clients (load and fill)                 |
//! | `BENCH_WARMUP_SECONDS`    | 2       | un-measured seconds before the load and ceiling windows   |
//! | `BENCH_SECONDS`           | 20      | measured seconds of HTTP ingest load                      |
//! | `BENCH_CEILING_SECONDS`   | 10      | measured seconds of each direct-SQLite ceiling run        |
//! | `BENCH_QUERY_TRACES`      | 1000000 | traces in the query database; 0 skips phase 4             |
//! | `BENCH_FILL_MAX_SECONDS`  | 420     | the fill stops here even if short of the goal, and says so|
//! | `BENCH_QUERY_REQUESTS`    | 300     | timed requests per query kind (after 20 warm-up requests) |
//! | `BENCH_QUERY_MAX_SECONDS` | 30      | time limit per query kind                                 |
//! | `BENCH_DEEP_PAGES`        | 200     | pages of 50 walked to reach the deep cursor               |
//! | `BENCH_KEEP_DIR`          | unset   | put the data directories under this directory and keep them |
//! | `BENCH_SHAPE`             | sdk     | `sdk`: ids are UUIDv7 and traces start seconds before they are sent, as the `trulayer` SDK makes them; `random`: UUIDv4 ids and start times spread over the last 24 h, the worst case for the indexes |
//! | `BENCH_OTLP`              | 1       | 0 skips phase 2b, the same load over OTLP protobuf        |
//! | `BENCH_OTLP_SHAPE`        | whole   | phase 2b's requests: `whole`, each trace's spans in one request; `split`, as an OpenTelemetry SDK's batch exporter sends them: each trace over 2-3 requests in the order its spans end (the root last), mixed with other traces, with resource and GenAI attributes; `both`, one after the other |
//! | `BENCH_LOG_LEVEL`         | warn    | the servers' log level (logs are `server-*.log` in the data root) |
//! | `BENCH_SERVER`            | unset   | run this server binary instead of this build's (to compare two builds on one machine) |
//!
//! Every loop is bounded by a count and a deadline; servers are stopped with
//! SIGTERM (SIGKILL after a grace period) even when the bench panics.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OpenFlags, TransactionBehavior};
use serde_json::Value;
use uuid::Uuid;

mod support;
use support::{
    customer_name, data_root, env_or, error_message, file_size, http_client, machine_busy_seconds,
    mb, ms, otlp_request, post_batch, proc_cpu_seconds, push_time, server_binary, Mem, OtlpSpan,
    OtlpTrace, Protocol, Rng, Server, Stats, API_KEY, BATCH, CUSTOMERS, ENVS, ERROR_KINDS,
    ERROR_PERCENT, MODELS, SPANS, SPAN_SHAPES, TRACE_NAMES, WORDS,
};

const SESSIONS: u64 = 100_000;
const DAY_MICROS: u64 = 86_400_000_000;
const TEXT_VARIANTS: usize = 64;
const QUERY_WARMUP: usize = 20;
const METRICS_24H: &str = "metrics: last 24 h";
const SCHEMA: &str = include_str!("../src/store/migrations/0001_init.sql");
/// The ceiling's connection settings: what the issue names, SQLite's defaults
/// otherwise (so the ceiling does not follow the server's own tuning).
const CEILING_PRAGMAS: &str = "PRAGMA journal_mode = WAL;
     PRAGMA synchronous = NORMAL;
     PRAGMA foreign_keys = ON;";
/// The context variant: the WAL is never checkpointed while inserting.
const NO_CHECKPOINT: &str = "PRAGMA wal_autocheckpoint = 0;";

// ---------------------------------------------------------------- knobs ----

struct Knobs {
    clients: usize,
    warmup: Duration,
    seconds: Duration,
    ceiling_seconds: Duration,
    query_traces: u64,
    fill_max: Duration,
    query_requests: usize,
    query_max: Duration,
    deep_pages: usize,
    keep_dir: Option<PathBuf>,
    otlp: bool,
    otlp_shapes: Vec<OtlpShape>,
}

impl Knobs {
    fn from_env() -> Knobs {
        let secs = |name: &str, default: f64| Duration::from_secs_f64(env_or(name, default));
        Knobs {
            clients: env_or("BENCH_CLIENTS", 8usize).max(1),
            warmup: secs("BENCH_WARMUP_SECONDS", 2.0),
            seconds: secs("BENCH_SECONDS", 20.0),
            ceiling_seconds: secs("BENCH_CEILING_SECONDS", 10.0),
            query_traces: env_or("BENCH_QUERY_TRACES", 1_000_000u64),
            fill_max: secs("BENCH_FILL_MAX_SECONDS", 420.0),
            query_requests: env_or("BENCH_QUERY_REQUESTS", 300usize).max(1),
            query_max: secs("BENCH_QUERY_MAX_SECONDS", 30.0),
            deep_pages: env_or("BENCH_DEEP_PAGES", 200usize).max(1),
            keep_dir: std::env::var_os("BENCH_KEEP_DIR").map(PathBuf::from),
            otlp: env_or("BENCH_OTLP", 1u8) != 0,
            otlp_shapes: match std::env::var("BENCH_OTLP_SHAPE").as_deref() {
                Ok("whole") | Err(_) => vec![OtlpShape::Whole],
                Ok("split") => vec![OtlpShape::Split],
                Ok("both") => vec![OtlpShape::Whole, OtlpShape::Split],
                Ok(other) => panic!("BENCH_OTLP_SHAPE={other:?}: use whole, split or both"),
            },
        }
    }
}

// ------------------------------------------------------------ test data ----

/// Pre-made prompt-like texts; ASCII letters, spaces and punctuation only, so
/// they go into JSON without escaping.
struct Corpus {
    inputs: Vec<String>,
    outputs: Vec<String>,
}

impl Corpus {
    fn new(rng: &mut Rng) -> Corpus {
        Corpus {
            inputs: (0..TEXT_VARIANTS).map(|_| text(rng, 200)).collect(),
            outputs: (0..TEXT_VARIANTS).map(|_| text(rng, 400)).collect(),
        }
    }
}

fn text(rng: &mut Rng, target: usize) -> String {
    let len = target * 9 / 10 + rng.index(target / 5 + 1);
    let mut s = String::with_capacity(len + 16);
    while s.len() < len {
        s.push_str(WORDS[rng.index(WORDS.len())]);
        s.push(' ');
    }
    s.truncate(len);
    s
}

struct GenSpan {
    id: Uuid,
    name: &'static str,
    kind: &'static str,
    input: usize,
    output: usize,
    model: &'static str,
    prompt_tokens: i64,
    completion_tokens: i64,
    start: i64,
    end: i64,
}

struct GenTrace {
    id: Uuid,
    name: &'static str,
    input: usize,
    output: usize,
    model: &'static str,
    session: u64,
    env: &'static str,
    customer: u64,
    error: Option<String>,
    started: i64,
    ended: i64,
    spans: [GenSpan; SPANS],
}

/// How generated traces look; see `BENCH_SHAPE`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Sdk,
    Random,
}

fn shape() -> Shape {
    static SHAPE: std::sync::OnceLock<Shape> = std::sync::OnceLock::new();
    *SHAPE.get_or_init(|| match std::env::var("BENCH_SHAPE").as_deref() {
        Ok("random") => Shape::Random,
        Ok("sdk") | Err(_) => Shape::Sdk,
        Ok(other) => panic!("BENCH_SHAPE={other:?}: use sdk or random"),
    })
}

impl Rng {
    /// An id as the chosen shape makes them: UUIDv7 (time-ordered, as the
    /// SDK's) or UUIDv4.
    fn id(&mut self) -> Uuid {
        match shape() {
            Shape::Sdk => Uuid::now_v7(),
            Shape::Random => self.uuid(),
        }
    }
}

/// A trace that started seconds ago (`sdk` shape) or at a random point of
/// the last 24 hours (`random` shape).
fn gen_trace(rng: &mut Rng, now: i64) -> GenTrace {
    let started = match shape() {
        Shape::Sdk => now - 5_000_000 - rng.below(1_000_000) as i64,
        Shape::Random => now - rng.below(DAY_MICROS) as i64,
    };
    let model = MODELS[rng.index(MODELS.len())];
    let mut at = started;
    let spans = std::array::from_fn(|i| {
        let duration = 50_000 + rng.below(950_000) as i64;
        let span = GenSpan {
            id: rng.id(),
            name: SPAN_SHAPES[i].0,
            kind: SPAN_SHAPES[i].1,
            input: rng.index(TEXT_VARIANTS),
            output: rng.index(TEXT_VARIANTS),
            model,
            prompt_tokens: 100 + rng.below(900) as i64,
            completion_tokens: 20 + rng.below(400) as i64,
            start: at,
            end: at + duration,
        };
        at += duration;
        span
    });
    GenTrace {
        id: rng.id(),
        name: TRACE_NAMES[rng.index(TRACE_NAMES.len())],
        input: rng.index(TEXT_VARIANTS),
        output: rng.index(TEXT_VARIANTS),
        model,
        session: rng.below(SESSIONS),
        env: ENVS[rng.index(ENVS.len())],
        customer: rng.below(CUSTOMERS),
        error: (rng.below(100) < ERROR_PERCENT).then(|| error_message(rng)),
        started,
        ended: at,
        spans,
    }
}

fn gen_batch(rng: &mut Rng, out: &mut Vec<GenTrace>) {
    out.clear();
    let now = chrono::Utc::now().timestamp_micros();
    out.extend((0..BATCH).map(|_| gen_trace(rng, now)));
}

fn session_name(session: u64) -> String {
    format!("sess-{session:06}")
}

/// The `/v1/ingest/batch` body for `traces`.
fn batch_body(c: &Corpus, traces: &[GenTrace]) -> Vec<u8> {
    let mut out = String::with_capacity(traces.len() * 4_200);
    out.push_str("{\"traces\":[");
    for (i, t) in traces.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            "{{\"id\":\"{}\",\"name\":\"{}\",\"input\":\"{}\",\"output\":\"{}\",\"model\":\"{}\",\
             \"session_id\":\"{}\",\"tags\":{{\"customer\":\"{}\",\"env\":\"{}\"}},\
             \"metadata\":{{}},\"started_at\":",
            t.id,
            t.name,
            c.inputs[t.input],
            c.outputs[t.output],
            t.model,
            session_name(t.session),
            customer_name(t.customer),
            t.env
        );
        push_time(&mut out, t.started);
        out.push_str(",\"ended_at\":");
        push_time(&mut out, t.ended);
        if let Some(error) = &t.error {
            let _ = write!(out, ",\"error\":\"{error}\"");
        } else {
            out.push_str(",\"error\":null");
        }
        out.push_str(",\"spans\":[");
        for (j, s) in t.spans.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            let _ = write!(
                out,
                "{{\"id\":\"{}\",\"name\":\"{}\",\"type\":\"{}\",\"input\":\"{}\",\"output\":\"{}\",\
                 \"model\":\"{}\",\"prompt_tokens\":{},\"completion_tokens\":{},\"start_time\":",
                s.id,
                s.name,
                s.kind,
                c.inputs[s.input],
                c.outputs[s.output],
                s.model,
                s.prompt_tokens,
                s.completion_tokens
            );
            push_time(&mut out, s.start);
            out.push_str(",\"end_time\":");
            push_time(&mut out, s.end);
            out.push('}');
        }
        out.push_str("]}");
    }
    out.push_str("]}");
    out.into_bytes()
}

/// The same traces as an OTLP `ExportTraceServiceRequest` in protobuf.
fn otlp_body(c: &Corpus, traces: &[GenTrace]) -> Vec<u8> {
    let sessions: Vec<String> = traces.iter().map(|t| session_name(t.session)).collect();
    let view: Vec<OtlpTrace<'_>> = traces
        .iter()
        .zip(&sessions)
        .map(|(t, session)| OtlpTrace {
            id: t.id,
            name: t.name,
            model: t.model,
            session: Some(session),
            customer: t.customer,
            env: t.env,
            error: t.error.as_deref(),
            spans: t
                .spans
                .iter()
                .map(|s| OtlpSpan {
                    id: s.id,
                    name: s.name,
                    kind: s.kind,
                    input: &c.inputs[s.input],
                    output: &c.outputs[s.output],
                    prompt_tokens: s.prompt_tokens,
                    completion_tokens: s.completion_tokens,
                    start: s.start,
                    end: s.end,
                })
                .collect(),
        })
        .collect();
    otlp_request(&view)
}

/// How phase 2b sends a batch's traces over OTLP; see `BENCH_OTLP_SHAPE`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum OtlpShape {
    Whole,
    Split,
}

/// Part of a trace's spans sent in one request (`split` shape): indexes
/// into its spans, 0 being the root.
type Part = (Arc<GenTrace>, Vec<usize>);

/// How a client's OpenTelemetry SDK would export a batch of traces: spans
/// go out as they end, so a trace's children leave before its root, in 2
/// or 3 requests, each request mixing the parts of traces of three
/// batches. Returns this request's parts and pushes the rest onto `later`
/// (`later[0]` goes with the next request, `later[1]` with the one after).
fn split_batch(rng: &mut Rng, batch: Vec<GenTrace>, later: &mut [Vec<Part>; 2]) -> Vec<Part> {
    let mut now = std::mem::take(&mut later[0]);
    later[0] = std::mem::take(&mut later[1]);
    for t in batch {
        let t = Arc::new(t);
        if rng.below(10) < 6 {
            // Three requests: two children, the third child, the root.
            now.push((t.clone(), vec![1, 2]));
            later[0].push((t.clone(), vec![3]));
            later[1].push((t, vec![0]));
        } else {
            // Two requests: the children, then the root.
            now.push((t.clone(), vec![1, 2, 3]));
            later[0].push((t, vec![0]));
        }
    }
    now
}

/// The parts as one OTLP protobuf request of the `split` shape: one
/// resource with the attributes an SDK sets, spans in two scopes (the
/// application's root spans, the GenAI instrumentation's children), the
/// root covering the whole trace, and GenAI, HTTP and database
/// attributes as instrumentations set them.
fn otlp_split_body(c: &Corpus, parts: &[Part], client: u64) -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use opentelemetry_proto::tonic::common::v1::{
        AnyValue, ArrayValue, InstrumentationScope, KeyValue,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{status, ResourceSpans, ScopeSpans, Span, Status};
    use prost::Message;
    let kv = |key: &str, value: Any| KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    };
    let text = |key: &str, value: &str| kv(key, Any::StringValue(value.into()));
    let nanos = |micros: i64| micros as u64 * 1_000;
    let mut roots = Vec::new();
    let mut children = Vec::new();
    for (t, indexes) in parts {
        let trace_id = t.id.as_bytes().to_vec();
        let root_id = t.spans[0].id.as_bytes()[8..].to_vec();
        for &i in indexes {
            let s = &t.spans[i];
            let span_hex = &s.id.simple().to_string()[16..];
            let mut attributes = match s.kind {
                "llm" => vec![
                    text("gen_ai.operation.name", "chat"),
                    text("gen_ai.system", "openai"),
                    text("gen_ai.request.model", s.model),
                    text("gen_ai.response.model", s.model),
                    kv("gen_ai.request.temperature", Any::DoubleValue(0.2)),
                    kv("gen_ai.request.max_tokens", Any::IntValue(1024)),
                    text("gen_ai.response.id", &format!("chatcmpl-{span_hex}")),
                    kv(
                        "gen_ai.response.finish_reasons",
                        Any::ArrayValue(ArrayValue {
                            values: vec![AnyValue {
                                value: Some(Any::StringValue("stop".into())),
                            }],
                        }),
                    ),
                    kv("gen_ai.usage.input_tokens", Any::IntValue(s.prompt_tokens)),
                    kv(
                        "gen_ai.usage.output_tokens",
                        Any::IntValue(s.completion_tokens),
                    ),
                    text("server.address", "api.openai.com"),
                    kv("server.port", Any::IntValue(443)),
                ],
                "tool" => vec![
                    text("gen_ai.operation.name", "execute_tool"),
                    text("gen_ai.tool.name", s.name),
                    text("gen_ai.tool.call.id", &format!("call_{span_hex}")),
                    text("http.request.method", "POST"),
                    text(
                        "url.full",
                        "https://tools.internal.example.com/v1/call_tool",
                    ),
                    kv("http.response.status_code", Any::IntValue(200)),
                    text("server.address", "tools.internal.example.com"),
                ],
                _ => vec![
                    text("db.system", "qdrant"),
                    text("db.operation.name", "search"),
                    text("db.collection.name", "support_docs"),
                    kv("db.vector.query.top_k", Any::IntValue(8)),
                    text("server.address", "qdrant.internal.example.com"),
                    kv("server.port", Any::IntValue(6333)),
                ],
            };
            attributes.push(text("gen_ai.prompt", &c.inputs[s.input]));
            attributes.push(text("gen_ai.completion", &c.outputs[s.output]));
            let root = i == 0;
            if root {
                attributes.push(text("session.id", &session_name(t.session)));
                attributes.push(text("customer", &customer_name(t.customer)));
                attributes.push(text("env", t.env));
            }
            let span = Span {
                trace_id: trace_id.clone(),
                span_id: s.id.as_bytes()[8..].to_vec(),
                parent_span_id: if root { Vec::new() } else { root_id.clone() },
                name: if root { t.name.into() } else { s.name.into() },
                kind: if root { 2 } else { 3 },
                // The root spans the trace; its children run inside it.
                start_time_unix_nano: nanos(if root { t.started } else { s.start }),
                end_time_unix_nano: nanos(if root { t.ended } else { s.end }),
                attributes,
                status: t.error.as_ref().filter(|_| root).map(|error| Status {
                    code: status::StatusCode::Error as i32,
                    message: error.clone(),
                }),
                ..Default::default()
            };
            if root {
                roots.push(span);
            } else {
                children.push(span);
            }
        }
    }
    let scope = |name: &str, version: &str, spans| ScopeSpans {
        scope: Some(InstrumentationScope {
            name: name.into(),
            version: version.into(),
            ..Default::default()
        }),
        spans,
        schema_url: "https://opentelemetry.io/schemas/1.28.0".into(),
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    text("service.name", "support-agent"),
                    text("service.version", "2.14.1"),
                    text("service.instance.id", &format!("support-agent-{client}")),
                    text("deployment.environment.name", "prod"),
                    text("telemetry.sdk.name", "opentelemetry"),
                    text("telemetry.sdk.language", "python"),
                    text("telemetry.sdk.version", "1.28.2"),
                    text("host.name", &format!("worker-{client}.internal")),
                    text("os.type", "linux"),
                    text("process.runtime.name", "cpython"),
                    text("process.runtime.version", "3.12.7"),
                    kv("process.pid", Any::IntValue(4_000 + client as i64)),
                ],
                ..Default::default()
            }),
            scope_spans: vec![
                scope("support_agent", "2.14.1", roots),
                scope("opentelemetry.instrumentation.openai_v2", "2.1b0", children),
            ],
            schema_url: String::new(),
        }],
    }
    .encode_to_vec()
}

/// Rows in a stopped server's database: (traces, spans, trace_tags).
fn count_rows(db: &Path) -> (i64, i64, i64) {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open the server database read-only");
    let count = |table: &str| -> i64 {
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .expect("count rows")
    };
    (count("traces"), count("spans"), count("trace_tags"))
}

/// Rows stored but not yet in the search index.
fn search_backlog(db: &Path) -> i64 {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open the server database read-only");
    conn.query_row(
        "SELECT coalesce((SELECT max(seq) FROM traces), 0) - seq \
         + (SELECT count(*) FROM trace_docs_dirty) FROM trace_docs_state",
        [],
        |r| r.get(0),
    )
    .expect("search backlog")
}

/// Traces not yet in the tag index and session entries not yet in the
/// session index: merge work left for later, which a run must not count
/// as done. The merger keeps both to some tens of thousands under load.
fn index_backlog(db: &Path) -> (i64, i64) {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open the server database read-only");
    conn.query_row(
        "SELECT (SELECT coalesce(max(seq), 0) FROM traces) - tags_seq, \
         (SELECT count(*) FROM session_pending) FROM lookup_state",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .expect("index backlog")
}

// ------------------------------------------------------------ statistics ----

// ----------------------------------------------------------- HTTP ingest ----

#[derive(Default)]
struct ClientOut {
    latencies_ms: Vec<f64>,
    traces: u64,
    failures: u64,
    failure_samples: Vec<String>,
    /// Every `sample_every`-th trace ingested: its id and session.
    samples: Vec<(Uuid, u64)>,
}

struct IngestPlan {
    /// Batches completing in `[window.0, window.1]` count; none start after `window.1`.
    window: (Instant, Instant),
    /// Batches still to send, shared by the clients.
    budget: Arc<AtomicU64>,
    sample_every: u64,
    /// Traces acknowledged so far (for progress lines).
    acknowledged: Arc<AtomicU64>,
    sending: Sending,
}

/// How the clients send their batches: the protocol, and over OTLP whether
/// each trace's spans go in one request or, as an OpenTelemetry SDK's batch
/// exporter sends them, in several.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sending {
    Json,
    Otlp,
    OtlpSplit,
}

impl Sending {
    fn protocol(self) -> Protocol {
        match self {
            Sending::Json => Protocol::Json,
            Sending::Otlp | Sending::OtlpSplit => Protocol::Otlp,
        }
    }
}

async fn ingest_client(base: String, corpus: Arc<Corpus>, plan: Arc<IngestPlan>) -> ClientOut {
    let client = http_client();
    let url = format!("{base}{}", plan.sending.protocol().endpoint().0);
    let mut rng = Rng::seeded();
    let client_no = rng.below(1_000);
    // Parts of traces still to send (`split` shape).
    let mut later: [Vec<Part>; 2] = [Vec::new(), Vec::new()];
    let mut out = ClientOut::default();
    let mut batch = Vec::with_capacity(BATCH);
    let mut traces_seen = 0u64;
    let (from, until) = plan.window;
    while Instant::now() < until {
        if plan
            .budget
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1))
            .is_err()
        {
            break;
        }
        gen_batch(&mut rng, &mut batch);
        // Traces this request completes: a split trace counts with its root.
        let mut completes = BATCH as u64;
        let body = match plan.sending {
            Sending::Json => batch_body(&corpus, &batch),
            Sending::Otlp => otlp_body(&corpus, &batch),
            Sending::OtlpSplit => {
                let parts = split_batch(&mut rng, std::mem::take(&mut batch), &mut later);
                completes = parts.iter().filter(|(_, ix)| ix.contains(&0)).count() as u64;
                otlp_split_body(&corpus, &parts, client_no)
            }
        };
        let sent = Instant::now();
        let outcome =
            post_batch(&client, &url, API_KEY, plan.sending.protocol(), body, BATCH).await;
        let done = Instant::now();
        match outcome {
            Ok(()) => {
                plan.acknowledged.fetch_add(completes, Ordering::Relaxed);
                if done >= from && done <= until {
                    out.latencies_ms.push(ms(done - sent));
                    out.traces += completes;
                }
                if plan.sample_every > 0 {
                    for t in &batch {
                        traces_seen += 1;
                        if traces_seen.is_multiple_of(plan.sample_every) {
                            out.samples.push((t.id, t.session));
                        }
                    }
                }
            }
            Err(message) => {
                out.failures += 1;
                if out.failure_samples.len() < 5 {
                    out.failure_samples.push(message);
                }
            }
        }
    }
    // The spans an SDK would still flush at shutdown: outside the window,
    // but stored, so every generated trace is whole in the database.
    for parts in later {
        if parts.is_empty() {
            continue;
        }
        let completes = parts.iter().filter(|(_, ix)| ix.contains(&0)).count() as u64;
        let body = otlp_split_body(&corpus, &parts, client_no);
        let ok = post_batch(&client, &url, API_KEY, Protocol::Otlp, body, 0)
            .await
            .is_ok();
        if ok {
            plan.acknowledged.fetch_add(completes, Ordering::Relaxed);
        } else {
            out.failures += 1;
        }
    }
    out
}

struct IngestResult {
    traces: u64,
    window: Duration,
    latency: Stats,
    failures: u64,
    failure_samples: Vec<String>,
    samples: Vec<(Uuid, u64)>,
    /// Traces acknowledged in total, including warm-up.
    acknowledged: u64,
    elapsed: Duration,
}

impl IngestResult {
    fn traces_per_s(&self) -> f64 {
        self.traces as f64 / self.window.as_secs_f64()
    }
}

/// Runs `clients` ingest clients; `progress` prints a line every 15 s.
async fn run_ingest(
    base: &str,
    corpus: &Arc<Corpus>,
    clients: usize,
    plan: IngestPlan,
    progress: Option<u64>,
) -> IngestResult {
    let started = Instant::now();
    let plan = Arc::new(plan);
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            tokio::spawn(ingest_client(
                base.to_string(),
                corpus.clone(),
                plan.clone(),
            ))
        })
        .collect();
    let finished = Arc::new(AtomicBool::new(false));
    let reporter = progress.map(|goal| {
        let acknowledged = plan.acknowledged.clone();
        let finished = finished.clone();
        let until = plan.window.1;
        tokio::spawn(async move {
            let mut last = (Instant::now(), 0u64);
            while !finished.load(Ordering::Relaxed) && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if last.0.elapsed() >= Duration::from_secs(15) {
                    let now = acknowledged.load(Ordering::Relaxed);
                    let rate = (now - last.1) as f64 / last.0.elapsed().as_secs_f64();
                    println!(
                        "  fill: {now} / {goal} traces after {:.0} s ({rate:.0} traces/s over the last 15 s)",
                        started.elapsed().as_secs_f64()
                    );
                    last = (Instant::now(), now);
                }
            }
        })
    });
    let mut all = ClientOut::default();
    for handle in handles {
        let out = handle.await.expect("ingest client task");
        all.latencies_ms.extend(out.latencies_ms);
        all.traces += out.traces;
        all.failures += out.failures;
        all.failure_samples.extend(out.failure_samples);
        all.failure_samples.truncate(5);
        all.samples.extend(out.samples);
    }
    let elapsed = started.elapsed();
    finished.store(true, Ordering::Relaxed);
    if let Some(reporter) = reporter {
        let _ = reporter.await;
    }
    let (from, until) = plan.window;
    // A count-bounded run ends before its deadline: measure up to the end.
    let window_end = until.min(Instant::now());
    IngestResult {
        traces: all.traces,
        window: window_end.saturating_duration_since(from),
        latency: Stats::of(all.latencies_ms),
        failures: all.failures,
        failure_samples: all.failure_samples,
        samples: all.samples,
        acknowledged: plan.acknowledged.load(Ordering::Relaxed),
        elapsed,
    }
}

// --------------------------------------------------------------- ceiling ----

const TRACE_INSERT: &str =
    "INSERT INTO traces (tenant_id, project_id, id, session_id, external_id, \
     name, input, output, model, latency_ms, cost, error, tags, tag_map, metadata, \
     total_token_count, span_count, started_at, ended_at, created_at, content_hash) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, \
     ?19, ?20, ?21)";
const TAG_INSERT: &str = "INSERT INTO trace_tags (trace_seq, tenant_id, key, value, started_at) \
     VALUES (?1, ?2, ?3, ?4, ?5)";
const SPAN_INSERT: &str = "INSERT INTO spans (trace_seq, id, parent_span_id, name, type, input, \
     output, model, latency_ms, cost, error, prompt_tokens, completion_tokens, metadata, \
     start_time, end_time, otel_trace_id, otel_span_id, created_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)";

/// The rows the server would store for `batch`, in one transaction.
fn insert_batch(conn: &mut Connection, c: &Corpus, batch: &[GenTrace]) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut trace_stmt = tx.prepare_cached(TRACE_INSERT)?;
        let mut tag_stmt = tx.prepare_cached(TAG_INSERT)?;
        let mut span_stmt = tx.prepare_cached(SPAN_INSERT)?;
        let created = chrono::Utc::now().timestamp_micros();
        for t in batch {
            let customer = customer_name(t.customer);
            let tags = format!("[\"customer:{customer}\",\"env:{}\"]", t.env);
            let tag_map = format!("{{\"customer\":\"{customer}\",\"env\":\"{}\"}}", t.env);
            let mut hash = [0u8; 32];
            hash[..16].copy_from_slice(t.id.as_bytes());
            hash[16..].copy_from_slice(t.spans[0].id.as_bytes());
            let tokens: i64 = t
                .spans
                .iter()
                .map(|s| s.prompt_tokens + s.completion_tokens)
                .sum();
            trace_stmt.execute(params![
                1i64,
                1i64,
                t.id.to_string(),
                session_name(t.session),
                None::<String>,
                t.name,
                c.inputs[t.input],
                c.outputs[t.output],
                t.model,
                (t.ended - t.started) / 1000,
                None::<f64>,
                t.error.as_deref(),
                tags,
                tag_map,
                "{}",
                tokens,
                SPANS as i64,
                t.started,
                t.ended,
                created,
                &hash[..],
            ])?;
            let seq = tx.last_insert_rowid();
            tag_stmt.execute(params![seq, 1i64, "customer", customer, t.started])?;
            tag_stmt.execute(params![seq, 1i64, "env", t.env, t.started])?;
            for s in &t.spans {
                span_stmt.execute(params![
                    seq,
                    s.id.to_string(),
                    None::<String>,
                    s.name,
                    s.kind,
                    c.inputs[s.input],
                    c.outputs[s.output],
                    s.model,
                    (s.end - s.start) / 1000,
                    None::<f64>,
                    None::<String>,
                    s.prompt_tokens,
                    s.completion_tokens,
                    "{}",
                    s.start,
                    s.end,
                    None::<String>,
                    None::<String>,
                    created,
                ])?;
            }
        }
    }
    tx.commit()
}

struct CeilingResult {
    traces: u64,
    window: Duration,
    tx_ms: Stats,
    generate_share: f64,
    /// CPU used by the inserting process during the window, in cores.
    cpu: f64,
    /// CPU used by everything else on the machine during the window, in cores.
    other_cpu: f64,
    rows: i64,
    db_bytes: u64,
}

impl CeilingResult {
    fn traces_per_s(&self) -> f64 {
        self.traces as f64 / self.window.as_secs_f64()
    }
}

fn run_ceiling(
    dir: &Path,
    extra_pragmas: &str,
    corpus: &Corpus,
    warmup: Duration,
    measure: Duration,
) -> CeilingResult {
    std::fs::create_dir_all(dir).expect("create the ceiling directory");
    let path = dir.join("ceiling.db");
    let mut conn = Connection::open(&path).expect("open the ceiling database");
    conn.execute_batch(CEILING_PRAGMAS)
        .expect("ceiling pragmas");
    conn.execute_batch(extra_pragmas)
        .expect("extra ceiling pragmas");
    conn.execute_batch(SCHEMA).expect("ceiling schema");
    let now = chrono::Utc::now().timestamp_micros();
    conn.execute(
        "INSERT INTO tenants (id, uuid, name, created_at) VALUES (1, ?1, 'bench', ?2)",
        params![Uuid::new_v4().to_string(), now],
    )
    .expect("ceiling tenant");
    conn.execute(
        "INSERT INTO projects (id, uuid, tenant_id, name, slug, created_at) \
         VALUES (1, ?1, 1, 'default', 'default', ?2)",
        params![Uuid::new_v4().to_string(), now],
    )
    .expect("ceiling project");
    let mut rng = Rng::seeded();
    let mut batch = Vec::with_capacity(BATCH);
    let from = Instant::now() + warmup;
    let until = from + measure;
    let (mut traces, mut generating, mut tx_ms) = (0u64, Duration::ZERO, Vec::new());
    let mut cpu_from = None;
    while Instant::now() < until {
        let generated = Instant::now();
        gen_batch(&mut rng, &mut batch);
        let began = Instant::now();
        insert_batch(&mut conn, corpus, &batch).expect("ceiling insert");
        let done = Instant::now();
        if done >= from && done <= until {
            if cpu_from.is_none() {
                cpu_from = Some((
                    proc_cpu_seconds("self"),
                    machine_busy_seconds(),
                    Instant::now(),
                ));
            }
            traces += BATCH as u64;
            generating += began - generated;
            tx_ms.push(ms(done - began));
        }
    }
    let (cpu, other_cpu) = cpu_from.map_or((0.0, 0.0), |(cpu, busy, at)| {
        let secs = at.elapsed().as_secs_f64();
        let cpu = (proc_cpu_seconds("self") - cpu) / secs;
        (cpu, ((machine_busy_seconds() - busy) / secs - cpu).max(0.0))
    });
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM traces", [], |r| r.get(0))
        .expect("count ceiling rows");
    drop(conn);
    CeilingResult {
        traces,
        window: measure,
        tx_ms: Stats::of(tx_ms),
        generate_share: generating.as_secs_f64() / measure.as_secs_f64(),
        cpu,
        other_cpu,
        rows,
        db_bytes: file_size(&path) + file_size(&dir.join("ceiling.db-wal")),
    }
}

fn ceiling_line(c: &CeilingResult) -> String {
    format!(
        "{} traces in {:.1} s: {:.0} traces/s, {:.0} spans/s; transaction p50 {:.2} / p99 {:.2} ms; \
         {:.1}% of the time generating rows; CPU {:.2} cores (everything else {:.2}); {} rows, {:.1} MB",
        c.traces,
        c.window.as_secs_f64(),
        c.traces_per_s(),
        c.traces_per_s() * SPANS as f64,
        c.tx_ms.p50,
        c.tx_ms.p99,
        c.generate_share * 100.0,
        c.cpu,
        c.other_cpu,
        c.rows,
        c.db_bytes as f64 / 1e6
    )
}

// ---------------------------------------------------------------- queries ----

struct QueryStat {
    label: String,
    stats: Stats,
    bytes: usize,
    errors: usize,
}

async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    let response = client
        .get(url)
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status();
    let bytes = response.bytes().await.expect("read a response body");
    assert!(
        status.is_success(),
        "GET {url}: {status}: {}",
        String::from_utf8_lossy(&bytes)
    );
    serde_json::from_slice(&bytes).expect("a JSON response")
}

/// Times `QUERY_WARMUP` + `n` sequential GETs (bounded by `max`).
async fn time_gets(
    client: &reqwest::Client,
    label: &str,
    url: &mut dyn FnMut(usize) -> String,
    n: usize,
    max: Duration,
) -> QueryStat {
    let deadline = Instant::now() + max;
    let (mut samples, mut bytes, mut errors) = (Vec::with_capacity(n), 0usize, 0usize);
    for i in 0..QUERY_WARMUP + n {
        if Instant::now() >= deadline {
            break;
        }
        let url = url(i);
        let sent = Instant::now();
        let body = match client.get(&url).bearer_auth(API_KEY).send().await {
            Ok(r) if r.status().is_success() => r.bytes().await.ok(),
            _ => None,
        };
        let took = ms(sent.elapsed());
        match body {
            Some(body) if i >= QUERY_WARMUP => {
                samples.push(took);
                bytes += body.len();
            }
            Some(_) => {}
            None => errors += 1,
        }
    }
    let stats = Stats::of(samples);
    QueryStat {
        label: label.to_string(),
        bytes: bytes / stats.n.max(1),
        errors,
        stats,
    }
}

fn traces_of(page: &Value) -> &[Value] {
    page.get("traces")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Checks a page against what its filter promises; returns problems found.
fn check_page(label: &str, page: &Value, keep: &dyn Fn(&Value) -> bool) -> Vec<String> {
    let traces = traces_of(page);
    let mut problems = Vec::new();
    if traces.is_empty() {
        problems.push(format!("{label}: the page is empty"));
    }
    if let Some(bad) = traces.iter().find(|t| !keep(t)) {
        problems.push(format!(
            "{label}: a trace does not match the filter: {}",
            bad.get("id").unwrap_or(&Value::Null)
        ));
    }
    let times: Vec<&str> = traces
        .iter()
        .filter_map(|t| t.get("started_at").and_then(Value::as_str))
        .collect();
    if times.windows(2).any(|w| w[0] < w[1]) {
        problems.push(format!("{label}: not newest first"));
    }
    problems
}

/// What every trace of a filtered page must satisfy.
type PageCheck = Box<dyn Fn(&Value) -> bool>;

struct QueryReport {
    stats: Vec<QueryStat>,
    problems: Vec<String>,
}

/// Times the query kinds over a database of `stored` traces.
async fn run_queries(
    base: &str,
    knobs: &Knobs,
    samples: &[(Uuid, u64)],
    stored: u64,
) -> QueryReport {
    let client = http_client();
    let list = format!("{base}/v1/traces?limit=50");
    let n = knobs.query_requests;
    let max = knobs.query_max;
    let mut stats = Vec::new();
    let mut problems = Vec::new();
    let field = |t: &Value, name: &str| t.get(name).cloned().unwrap_or(Value::Null);

    let (session_id, session) = samples
        .first()
        .map(|(id, s)| (*id, session_name(*s)))
        .expect("at least one sampled trace");
    let filters: Vec<(String, String, PageCheck)> = vec![
        (
            "list: first page".into(),
            list.clone(),
            Box::new(|_: &Value| true),
        ),
        (
            format!("list: model={}&error=true", MODELS[0]),
            format!("{list}&model={}&error=true", MODELS[0]),
            Box::new(move |t: &Value| {
                field(t, "model") == MODELS[0] && !field(t, "error").is_null()
            }),
        ),
        (
            "list: tag env=prod (1 in 3)".into(),
            format!("{list}&tag_key=env&tag_value=prod"),
            Box::new(move |t: &Value| t.pointer("/tag_map/env") == Some(&Value::from("prod"))),
        ),
        (
            "list: tag customer=cust-0042 (1 in 1000)".into(),
            format!("{list}&tag_key=customer&tag_value=cust-0042"),
            Box::new(move |t: &Value| {
                t.pointer("/tag_map/customer") == Some(&Value::from("cust-0042"))
            }),
        ),
        (
            "list: session_id (~10 traces)".into(),
            format!("{list}&session_id={session}"),
            Box::new({
                let session = session.clone();
                move |t: &Value| field(t, "session_id") == session.as_str()
            }),
        ),
        (
            "search: q=refund (a word of every trace)".into(),
            format!("{list}&q=refund"),
            Box::new(|_: &Value| true),
        ),
        (
            "search: q=timeout (error traces only)".into(),
            format!("{list}&q=timeout"),
            Box::new(move |t: &Value| !field(t, "error").is_null()),
        ),
        (
            "search: q=qa upstream (both, 1 in 4 errors)".into(),
            format!("{list}&q=qa%20upstream"),
            Box::new(move |t: &Value| field(t, "name") == "qa" && !field(t, "error").is_null()),
        ),
    ];
    for (label, url, keep) in &filters {
        let page = get_json(&client, url).await;
        problems.extend(check_page(label, &page, keep.as_ref()));
        stats.push(time_gets(&client, label, &mut |_: usize| url.clone(), n, max).await);
        println!("  {}", stat_line(stats.last().expect("just pushed")));
    }
    if !traces_of(&get_json(&client, &format!("{list}&session_id={session}")).await)
        .iter()
        .any(|t| field(t, "id") == session_id.to_string().as_str())
    {
        problems.push(format!(
            "session {session}: trace {session_id} missing from its page"
        ));
    }

    // Deep cursor: follow next_cursor page by page, timing the walk.
    let walk_deadline = Instant::now() + max;
    let mut cursor: Option<String> = None;
    let mut walk = Vec::new();
    let mut seen_pages = 0;
    while seen_pages < knobs.deep_pages && Instant::now() < walk_deadline {
        let url = match &cursor {
            Some(c) => format!("{list}&cursor={c}"),
            None => list.clone(),
        };
        let sent = Instant::now();
        let page = get_json(&client, &url).await;
        walk.push(ms(sent.elapsed()));
        seen_pages += 1;
        match page.get("next_cursor").and_then(Value::as_str) {
            Some(next) => cursor = Some(next.to_string()),
            None => {
                problems.push(format!("cursor walk ended after {seen_pages} pages"));
                break;
            }
        }
    }
    let walk = Stats::of(walk);
    stats.push(QueryStat {
        label: format!("list: cursor walk, pages 1-{seen_pages}"),
        stats: walk,
        bytes: 0,
        errors: 0,
    });
    println!("  {}", stat_line(stats.last().expect("just pushed")));
    if let Some(cursor) = cursor {
        let url = format!("{list}&cursor={cursor}");
        let page = get_json(&client, &url).await;
        problems.extend(check_page("deep page", &page, &|_| true));
        let label = format!("list: deep cursor (page {})", seen_pages + 1);
        stats.push(time_gets(&client, &label, &mut |_: usize| url.clone(), n, max).await);
        println!("  {}", stat_line(stats.last().expect("just pushed")));
    }

    // Detail of random known traces.
    let (id, _) = samples[0];
    let trace = get_json(&client, &format!("{base}/v1/traces/{id}")).await;
    let spans = trace
        .get("spans")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    if spans != SPANS {
        problems.push(format!("detail of {id}: {spans} spans, expected {SPANS}"));
    }
    let mut rng = Rng::seeded();
    let mut detail_url = |_: usize| {
        let (id, _) = samples[rng.index(samples.len())];
        format!("{base}/v1/traces/{id}")
    };
    stats.push(time_gets(&client, "detail: random known id", &mut detail_url, n, max).await);
    println!("  {}", stat_line(stats.last().expect("just pushed")));
    // Metrics over the last 24 hours: every trace of the fill.
    let metrics = get_json(&client, &format!("{base}/v1/metrics")).await;
    let counted = metrics
        .get("total_traces")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    if counted != stored {
        problems.push(format!(
            "metrics: total_traces {counted}, but {stored} traces are stored"
        ));
    }
    for (label, query) in [
        (METRICS_24H, "/v1/metrics"),
        ("metrics: 24 h, hourly buckets", "/v1/metrics?interval=1h"),
        (
            "search: q=zanzibar (no trace)",
            "/v1/traces?limit=50&q=zanzibar",
        ),
        ("span search: q=refund", "/v1/search/spans?q=refund"),
        ("span search: q=timeout", "/v1/search/spans?q=timeout"),
        (
            "span search: q=zanzibar (none)",
            "/v1/search/spans?q=zanzibar",
        ),
        ("sessions: first page", "/v1/sessions?limit=50"),
    ] {
        let url = format!("{base}{query}");
        stats.push(time_gets(&client, label, &mut |_: usize| url.clone(), n, max).await);
        println!("  {}", stat_line(stats.last().expect("just pushed")));
    }
    // Failure clusters: the clusters of the window must account for every
    // failing trace the metrics count, one cluster per kind of message.
    let errors = metrics
        .get("error_count")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let clusters = get_json(&client, &format!("{base}/v1/failures/clusters?limit=200")).await;
    let listed = clusters
        .get("clusters")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let clustered: i64 = listed
        .iter()
        .filter_map(|c| c.get("count").and_then(Value::as_i64))
        .sum();
    if clustered != errors {
        problems.push(format!(
            "failures: the clusters count {clustered} failing traces, the metrics {errors}"
        ));
    }
    if listed.len() > ERROR_KINDS.len() || listed.len() < ERROR_KINDS.len() / 2 {
        problems.push(format!(
            "failures: {} clusters of {} kinds of message",
            listed.len(),
            ERROR_KINDS.len()
        ));
    }
    let week_ago = (chrono::Utc::now() - chrono::Duration::days(7))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let hour_ago = (chrono::Utc::now() - chrono::Duration::hours(1))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    for (label, query) in [
        (
            "failures: clusters, last 24 h",
            "/v1/failures/clusters".to_owned(),
        ),
        (
            "failures: clusters, last 7 days",
            format!("/v1/failures/clusters?from={week_ago}"),
        ),
        (
            "failures: clusters, last hour",
            format!("/v1/failures/clusters?from={hour_ago}"),
        ),
        (
            "failures: clusters, one project",
            "/v1/failures/clusters?project_id=default".to_owned(),
        ),
    ] {
        let url = format!("{base}{query}");
        stats.push(time_gets(&client, label, &mut |_: usize| url.clone(), n, max).await);
        println!("  {}", stat_line(stats.last().expect("just pushed")));
    }
    // Ingestion health: every trace of the fill was counted (the counts
    // were written at the stop), and its reads stay in budget.
    let health = get_json(&client, &format!("{base}/v1/ingestion-health?window=7d")).await;
    let received = health
        .get("traces_received")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let total = metrics
        .get("total_traces")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if received != total {
        problems.push(format!(
            "ingestion health: {received} traces received, the metrics count {total}"
        ));
    }
    for (label, query) in [
        ("ingestion health: last 24 h", "/v1/ingestion-health"),
        (
            "ingestion health: last 7 days",
            "/v1/ingestion-health?window=7d",
        ),
        (
            "ingestion health: last hour",
            "/v1/ingestion-health?window=1h",
        ),
        (
            "ingestion health: one project",
            "/v1/ingestion-health?project_id=default",
        ),
    ] {
        let url = format!("{base}{query}");
        stats.push(time_gets(&client, label, &mut |_: usize| url.clone(), n, max).await);
        println!("  {}", stat_line(stats.last().expect("just pushed")));
    }
    let label = "list: failure_type=rate_limit";
    let url = format!("{list}&failure_type=rate_limit");
    let page = get_json(&client, &url).await;
    problems.extend(check_page(label, &page, &|t: &Value| {
        !field(t, "error").is_null()
    }));
    stats.push(time_gets(&client, label, &mut |_: usize| url.clone(), n, max).await);
    println!("  {}", stat_line(stats.last().expect("just pushed")));
    QueryReport { stats, problems }
}

fn stat_line(q: &QueryStat) -> String {
    format!(
        "{:<44} n={:<4} mean {:>7.2} ms  p50 {:>7.2} ms  p95 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms{}{}",
        q.label,
        q.stats.n,
        q.stats.mean,
        q.stats.p50,
        q.stats.p95,
        q.stats.p99,
        q.stats.max,
        if q.bytes > 0 {
            format!("  {:.1} KB/response", q.bytes as f64 / 1024.0)
        } else {
            String::new()
        },
        if q.errors > 0 {
            format!("  {} ERRORS", q.errors)
        } else {
            String::new()
        }
    )
}

// ------------------------------------------------------------------ main ----

struct QueryPhase {
    goal: u64,
    fill: IngestResult,
    fill_mem: Mem,
    fill_cpu: f64,
    fill_stop: Duration,
    /// WAL and database file sizes at the end of the fill, before the stop.
    fill_files: (u64, u64),
    rows: (i64, i64, i64),
    db_bytes: u64,
    ready_after: Duration,
    idle: Mem,
    report: QueryReport,
    after: Mem,
}

fn otlp_name(shape: OtlpShape) -> &'static str {
    match shape {
        OtlpShape::Whole => "whole",
        OtlpShape::Split => "split",
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "MISS"
    }
}

fn main() {
    let knobs = Knobs::from_env();
    let (_temp, root) = data_root(knobs.keep_dir.as_deref(), "trulayer-bench-");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build the client runtime");
    let corpus = Arc::new(Corpus::new(&mut Rng::seeded()));
    let probe = batch_body(&corpus, &{
        let mut b = Vec::new();
        gen_batch(&mut Rng::seeded(), &mut b);
        b
    });
    println!("TruLayer Server ingest/query benchmark");
    println!(
        "  binary {}\n  data under {}\n  {} CPUs; clients {}; warm-up {:?}; load {:?}; ceiling {:?}; query DB {} traces",
        server_binary().display(),
        root.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        knobs.clients,
        knobs.warmup,
        knobs.seconds,
        knobs.ceiling_seconds,
        knobs.query_traces
    );
    println!(
        "  one batch = {BATCH} traces x {SPANS} spans = {:.0} KB of JSON; shape {}",
        probe.len() as f64 / 1024.0,
        match shape() {
            Shape::Sdk => "sdk (UUIDv7 ids, traces started seconds ago)",
            Shape::Random => "random (UUIDv4 ids, start times over 24 h)",
        }
    );

    // 1. Start to ready, idle memory.
    println!("\n[1] start to ready");
    let data = root.join("ingest-data");
    let mut server = Server::start(&data, root.join("server-fresh.log"));
    let ready_fresh = server.ready_after;
    std::thread::sleep(Duration::from_secs(1));
    let idle_fresh = server.mem();
    let stop_fresh = server.stop();
    drop(server);
    println!(
        "  fresh data dir: ready in {:.1} ms; idle {}; stop took {:.0} ms",
        ms(ready_fresh),
        idle_fresh.describe(),
        ms(stop_fresh)
    );
    let mut server = Server::start(&data, root.join("server-load.log"));
    let ready_restart = server.ready_after;
    std::thread::sleep(Duration::from_secs(1));
    let idle = server.mem();
    println!(
        "  restart:        ready in {:.1} ms; idle {}",
        ms(ready_restart),
        idle.describe()
    );

    // 2. Ingest load.
    println!(
        "\n[2] ingest load: {} clients, {:?} warm-up + {:?} measured",
        knobs.clients, knobs.warmup, knobs.seconds
    );
    let (server_cpu0, writer_cpu0, self_cpu0, machine0) = (
        server.cpu_seconds(),
        server.writer_cpu_seconds(),
        proc_cpu_seconds("self"),
        machine_busy_seconds(),
    );
    let from = Instant::now() + knobs.warmup;
    let plan = IngestPlan {
        window: (from, from + knobs.seconds),
        budget: Arc::new(AtomicU64::new(u64::MAX)),
        sample_every: 0,
        acknowledged: Arc::new(AtomicU64::new(0)),
        sending: Sending::Json,
    };
    let load = runtime.block_on(run_ingest(&server.base, &corpus, knobs.clients, plan, None));
    let load_server_cpu = (server.cpu_seconds() - server_cpu0) / load.elapsed.as_secs_f64();
    let load_writer_cpu = (server.writer_cpu_seconds() - writer_cpu0) / load.elapsed.as_secs_f64();
    let load_self_cpu = (proc_cpu_seconds("self") - self_cpu0) / load.elapsed.as_secs_f64();
    let load_other_cpu = ((machine_busy_seconds() - machine0) / load.elapsed.as_secs_f64()
        - load_server_cpu
        - load_self_cpu)
        .max(0.0);
    let load_mem = server.mem();
    let load_wal = file_size(&data.join("trulayer.db-wal"));
    let load_db_live = file_size(&data.join("trulayer.db"));
    let load_backlog = index_backlog(&data.join("trulayer.db"));
    std::thread::sleep(Duration::from_secs(2));
    let after_load = server.mem();
    let load_stop = server.stop();
    drop(server);
    let load_db = data.join("trulayer.db");
    let load_rows = count_rows(&load_db);
    println!(
        "  {} traces in {:.1} s: {:.0} traces/s, {:.0} spans/s; batch latency p50 {:.1} / p95 {:.1} / p99 {:.1} / max {:.1} ms (n={})",
        load.traces,
        load.window.as_secs_f64(),
        load.traces_per_s(),
        load.traces_per_s() * SPANS as f64,
        load.latency.p50,
        load.latency.p95,
        load.latency.p99,
        load.latency.max,
        load.latency.n
    );
    println!(
        "  failures: {}{}",
        load.failures,
        load.failure_samples
            .iter()
            .map(|s| format!("\n    {s}"))
            .collect::<String>()
    );
    println!(
        "  CPU: server {load_server_cpu:.2} cores (its writer thread {load_writer_cpu:.2}), bench client {load_self_cpu:.2}, everything else {load_other_cpu:.2} (of {})",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "  memory at the end of the load: {}; WAL file {:.1} MB beside a {:.1} MB database",
        load_mem.describe(),
        load_wal as f64 / 1e6,
        load_db_live as f64 / 1e6
    );
    println!("  memory 2 s after the load:     {}", after_load.describe());
    println!(
        "  index merges behind at the end of the load: {} traces for tags, {} session entries",
        load_backlog.0, load_backlog.1
    );
    println!(
        "  stop took {:.0} ms; database: {} traces, {} spans, {} tags ({} acknowledged), {:.1} MB",
        ms(load_stop),
        load_rows.0,
        load_rows.1,
        load_rows.2,
        load.acknowledged,
        file_size(&load_db) as f64 / 1e6
    );
    let mut problems = Vec::new();
    if load_wal > load_db_live {
        problems.push(format!(
            "load: the WAL ({:.0} MB) outgrew the database ({:.0} MB): checkpoints are not keeping up",
            load_wal as f64 / 1e6,
            load_db_live as f64 / 1e6
        ));
    }
    if load_rows.0 != load.acknowledged as i64 || load_rows.1 != load_rows.0 * SPANS as i64 {
        problems.push(format!(
            "load: {} traces acknowledged but {} traces / {} spans stored",
            load.acknowledged, load_rows.0, load_rows.1
        ));
    }

    // 2b. The same load over OTLP protobuf, on a fresh server.
    let shapes = if knobs.otlp {
        knobs.otlp_shapes.clone()
    } else {
        Vec::new()
    };
    let otlp: Vec<_> = shapes.into_iter().map(|shape| {
        let (name, protocol) = match shape {
            OtlpShape::Whole => ("otlp", Sending::Otlp),
            OtlpShape::Split => ("otlp-split", Sending::OtlpSplit),
        };
        println!(
            "\n[2b] OTLP ingest load, shape {}: {} clients, the same traces as ExportTraceServiceRequest protobuf{}, {:?} warm-up + {:?} measured",
            otlp_name(shape),
            knobs.clients,
            if shape == OtlpShape::Split {
                ", each trace over 2-3 requests, root last"
            } else {
                ""
            },
            knobs.warmup,
            knobs.seconds
        );
        let data = root.join(format!("{name}-data"));
        let mut server = Server::start(&data, root.join(format!("server-{name}.log")));
        let cpu0 = server.cpu_seconds();
        let from = Instant::now() + knobs.warmup;
        let plan = IngestPlan {
            window: (from, from + knobs.seconds),
            budget: Arc::new(AtomicU64::new(u64::MAX)),
            sample_every: 0,
            acknowledged: Arc::new(AtomicU64::new(0)),
            sending: protocol,
        };
        let run = runtime.block_on(run_ingest(&server.base, &corpus, knobs.clients, plan, None));
        let cpu = (server.cpu_seconds() - cpu0) / run.elapsed.as_secs_f64();
        let mem = server.mem();
        server.stop();
        drop(server);
        let rows = count_rows(&data.join("trulayer.db"));
        println!(
            "  {} traces in {:.1} s: {:.0} traces/s, {:.0} spans/s; request latency p50 {:.1} / p95 {:.1} / p99 {:.1} / max {:.1} ms (n={})",
            run.traces,
            run.window.as_secs_f64(),
            run.traces_per_s(),
            run.traces_per_s() * SPANS as f64,
            run.latency.p50,
            run.latency.p95,
            run.latency.p99,
            run.latency.max,
            run.latency.n
        );
        println!(
            "  failures: {}{}",
            run.failures,
            run.failure_samples
                .iter()
                .map(|s| format!("\n    {s}"))
                .collect::<String>()
        );
        println!(
            "  server CPU {cpu:.2} cores; {}; stored {} traces, {} spans ({} acknowledged)",
            mem.describe(),
            rows.0,
            rows.1,
            run.acknowledged
        );
        (shape, run, cpu, rows)
    }).collect();
    for (shape, run, _, rows) in &otlp {
        let name = otlp_name(*shape);
        if rows.0 != run.acknowledged as i64 || rows.1 != rows.0 * SPANS as i64 {
            problems.push(format!(
                "{name}: {} traces acknowledged but {} traces / {} spans stored",
                run.acknowledged, rows.0, rows.1
            ));
        }
        if run.failures > 0 {
            problems.push(format!("{name}: {} failed requests", run.failures));
        }
    }

    // 3. Ceiling.
    println!(
        "\n[3] ceiling: direct rusqlite inserts, {BATCH} traces per transaction, {:?} warm-up + {:?} measured",
        knobs.warmup, knobs.ceiling_seconds
    );
    let ceiling = run_ceiling(
        &root.join("ceiling"),
        "",
        &corpus,
        knobs.warmup,
        knobs.ceiling_seconds,
    );
    let ratio = load.traces_per_s() / ceiling.traces_per_s();
    println!("  WAL, synchronous=NORMAL, default auto-checkpoint:");
    println!("  {}", ceiling_line(&ceiling));
    let unchecked = run_ceiling(
        &root.join("ceiling-no-checkpoint"),
        NO_CHECKPOINT,
        &corpus,
        knobs.warmup,
        knobs.ceiling_seconds,
    );
    let unchecked_ratio = load.traces_per_s() / unchecked.traces_per_s();
    println!("  the same with wal_autocheckpoint = 0 (no checkpoint I/O; context only):");
    println!("  {}", ceiling_line(&unchecked));
    println!(
        "  server / ceiling = {ratio:.2}; server / no-checkpoint ceiling = {unchecked_ratio:.2}"
    );

    // 4. Queries at scale.
    let query = (knobs.query_traces > 0).then(|| {
        let goal = knobs.query_traces;
        println!(
            "\n[4] query database: fill to {goal} traces over HTTP ({} clients, at most {:?})",
            knobs.clients, knobs.fill_max
        );
        let data = root.join("query-data");
        let mut server = Server::start(&data, root.join("server-fill.log"));
        let (cpu0, writer0) = (server.cpu_seconds(), server.writer_cpu_seconds());
        let start = Instant::now();
        let plan = IngestPlan {
            window: (start, start + knobs.fill_max),
            budget: Arc::new(AtomicU64::new(goal.div_ceil(BATCH as u64))),
            sample_every: (goal / 10_000).max(1),
            acknowledged: Arc::new(AtomicU64::new(0)),
            sending: Sending::Json,
        };
        let fill = runtime.block_on(run_ingest(
            &server.base,
            &corpus,
            knobs.clients,
            plan,
            Some(goal),
        ));
        let fill_cpu = (server.cpu_seconds() - cpu0) / fill.elapsed.as_secs_f64();
        let fill_writer_cpu =
            (server.writer_cpu_seconds() - writer0) / fill.elapsed.as_secs_f64();
        let fill_mem = server.mem();
        let fill_wal = file_size(&data.join("trulayer.db-wal"));
        let fill_db_live = file_size(&data.join("trulayer.db"));
        let fill_backlog = index_backlog(&data.join("trulayer.db"));
        let fill_stop = server.stop();
        drop(server);
        let db = data.join("trulayer.db");
        let rows = count_rows(&db);
        let db_bytes = file_size(&db) + file_size(&data.join("trulayer.db-wal"));
        println!(
            "  {} traces in {:.1} s: {:.0} traces/s; batch p50 {:.1} / p99 {:.1} ms; server CPU {fill_cpu:.2} cores (writer thread {fill_writer_cpu:.2}); failures {}{}",
            fill.traces,
            fill.window.as_secs_f64(),
            fill.traces_per_s(),
            fill.latency.p50,
            fill.latency.p99,
            fill.failures,
            fill.failure_samples
                .iter()
                .map(|s| format!("\n    {s}"))
                .collect::<String>()
        );
        if fill.traces < goal {
            println!(
                "  NOTE: the fill stopped at {} of {goal} traces (BENCH_FILL_MAX_SECONDS or failures); queries run on that",
                fill.traces
            );
        }
        println!(
            "  memory at the end of the fill: {}; WAL file {:.1} MB beside a {:.1} MB database",
            fill_mem.describe(),
            fill_wal as f64 / 1e6,
            fill_db_live as f64 / 1e6
        );
        println!(
            "  index merges behind at the end of the fill: {} traces for tags, {} session entries",
            fill_backlog.0, fill_backlog.1
        );
        println!(
            "  stop (with WAL checkpoint) took {:.0} ms; database: {} traces, {} spans, {} tags; {:.1} MB on disk",
            ms(fill_stop),
            rows.0,
            rows.1,
            rows.2,
            db_bytes as f64 / 1e6
        );
        let mut server = Server::start(&data, root.join("server-query.log"));
        let ready_after = server.ready_after;
        std::thread::sleep(Duration::from_secs(1));
        let idle = server.mem();
        println!(
            "  restart on {} traces: ready in {:.1} ms; idle {}",
            rows.0,
            ms(ready_after),
            idle.describe()
        );
        // The fill outran the search indexer (it yields to ingest); time
        // how long it takes to catch up, then query a complete index.
        let caught_up = Instant::now();
        let backlog_at_start = search_backlog(&db);
        while search_backlog(&db) > 0 && caught_up.elapsed() < Duration::from_secs(1800) {
            std::thread::sleep(Duration::from_millis(500));
        }
        let index_catch_up = caught_up.elapsed();
        println!(
            "  search index: {backlog_at_start} rows waiting after the restart, indexed in {:.1} s ({:.0} rows/s); {} left",
            index_catch_up.as_secs_f64(),
            backlog_at_start as f64 / index_catch_up.as_secs_f64().max(0.001),
            search_backlog(&db)
        );
        println!(
            "  queries ({} timed sequential requests each after {QUERY_WARMUP} warm-up, at most {:?} each):",
            knobs.query_requests, knobs.query_max
        );
        let report = runtime.block_on(run_queries(
            &server.base,
            &knobs,
            &fill.samples,
            rows.0 as u64,
        ));
        let after = server.mem();
        println!("  memory after the queries: {}", after.describe());
        server.stop();
        QueryPhase {
            goal,
            fill,
            fill_mem,
            fill_cpu,
            fill_stop,
            fill_files: (fill_wal, fill_db_live),
            rows,
            db_bytes,
            ready_after,
            idle,
            report,
            after,
        }
    });

    // Summary.
    println!("\n================================ summary ================================");
    println!(
        "ingest  {:>8.0} traces/s  {:>8.0} spans/s  ({} clients, {:.0} s, {} failures; server CPU {:.2} cores, writer thread {:.2})",
        load.traces_per_s(),
        load.traces_per_s() * SPANS as f64,
        knobs.clients,
        load.window.as_secs_f64(),
        load.failures,
        load_server_cpu,
        load_writer_cpu
    );
    println!(
        "        batch latency p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms; index merges behind at the end {} / {}",
        load.latency.p50, load.latency.p95, load.latency.p99, load.latency.max, load_backlog.0, load_backlog.1
    );
    println!(
        "ceiling {:>8.0} traces/s  (direct SQLite, 100 traces/transaction, CPU {:.2} cores); server/ceiling = {ratio:.2}",
        ceiling.traces_per_s(),
        ceiling.cpu
    );
    println!(
        "        {:>8.0} traces/s  without checkpoints (CPU {:.2} cores; context only); server/that = {unchecked_ratio:.2}",
        unchecked.traces_per_s(),
        unchecked.cpu
    );
    println!(
        "ready   fresh {:.1} ms, restart {:.1} ms{}",
        ms(ready_fresh),
        ms(ready_restart),
        query.as_ref().map_or(String::new(), |q| format!(
            ", restart on {} traces {:.1} ms",
            q.rows.0,
            ms(q.ready_after)
        ))
    );
    for (shape, run, cpu, _) in &otlp {
        println!(
            "otlp    {:>8.0} traces/s {:>9.0} spans/s  ({} protobuf, server CPU {cpu:.2} cores); p50 {:.1} ms, p99 {:.1} ms; OTLP / JSON traces/s = {:.2}",
            run.traces_per_s(),
            run.traces_per_s() * SPANS as f64,
            otlp_name(*shape),
            run.latency.p50,
            run.latency.p99,
            run.traces_per_s() / load.traces_per_s()
        );
    }
    println!(
        "memory  idle {:.1} MB (fresh {:.1} MB); load peak (VmHWM) {:.1} MB [anon {:.1} + file {:.1} at end]",
        mb(idle.rss_kb),
        mb(idle_fresh.rss_kb),
        mb(load_mem.hwm_kb),
        mb(load_mem.anon_kb),
        mb(load_mem.file_kb)
    );
    if let Some(q) = &query {
        println!(
            "fill    {:>8.0} traces/s to {} traces in {:.0} s (server CPU {:.2} cores); peak {:.1} MB; WAL at the end {:.1} MB; stop {:.0} ms; DB after stop {:.1} MB",
            q.fill.traces_per_s(),
            q.rows.0,
            q.fill.window.as_secs_f64(),
            q.fill_cpu,
            mb(q.fill_mem.hwm_kb),
            q.fill_files.0 as f64 / 1e6,
            ms(q.fill_stop),
            q.db_bytes as f64 / 1e6
        );
        println!(
            "        idle after restart {:.1} MB; peak while querying {:.1} MB",
            mb(q.idle.rss_kb),
            mb(q.after.hwm_kb)
        );
        for s in &q.report.stats {
            println!("query   {}", stat_line(s));
        }
        problems.extend(q.report.problems.iter().cloned());
        if q.fill_files.0 > q.fill_files.1 {
            problems.push(format!(
                "fill: the WAL ({:.0} MB) outgrew the database ({:.0} MB): checkpoints are not keeping up",
                q.fill_files.0 as f64 / 1e6,
                q.fill_files.1 as f64 / 1e6
            ));
        }
        if q.fill.failures > 0 {
            problems.push(format!("fill: {} failed batches", q.fill.failures));
        }
        if q.rows.0 as u64 != q.fill.acknowledged {
            problems.push(format!(
                "fill: {} traces acknowledged but {} stored",
                q.fill.acknowledged, q.rows.0
            ));
        }
    }
    if load.failures > 0 {
        problems.push(format!("load: {} failed batches", load.failures));
    }

    println!("\n---------------------------------- targets ----------------------------------");
    let target = |ok: bool, what: String| println!("{}  {what}", verdict(ok));
    target(
        ratio >= 0.7,
        format!("sustained ingest >= 0.7 x ceiling: {ratio:.2}"),
    );
    target(
        load.traces_per_s() >= 8_000.0,
        format!("ingest >= 8,000 traces/s: {:.0}", load.traces_per_s()),
    );
    target(
        load.latency.p99 <= 100.0,
        format!(
            "p99 batch latency <= 100 ms at {} clients{}: {:.1} ms",
            knobs.clients,
            if knobs.clients == 8 {
                ""
            } else {
                " (target is at 8)"
            },
            load.latency.p99
        ),
    );
    for (shape, run, _, _) in &otlp {
        let r = run.traces_per_s() / load.traces_per_s();
        match shape {
            OtlpShape::Whole => target(
                r >= 0.8,
                format!("OTLP protobuf spans/s within 20% of the JSON path: {r:.2}"),
            ),
            OtlpShape::Split => target(
                r >= 0.9,
                format!(
                    "OTLP protobuf, traces split over requests, >= 0.9 x JSON traces/s: {r:.2}"
                ),
            ),
        }
    }
    if let Some(q) = &query {
        let scale = if q.rows.0 as u64 >= q.goal && q.goal >= 1_000_000 {
            String::new()
        } else {
            format!(" (measured at {} traces, not 1M)", q.rows.0)
        };
        for s in q.report.stats.iter().filter(|s| !s.label.contains("walk")) {
            // Metrics and failure clusters have their own target: p95 <= 50
            // ms at 1M.
            let limit = if s.label.starts_with("metrics") || s.label.starts_with("failures") {
                50.0
            } else {
                10.0
            };
            target(
                s.stats.n > 0 && s.stats.p95 <= limit && s.errors == 0,
                format!(
                    "p95 <= {limit:.0} ms{scale}: {}: {:.2} ms",
                    s.label, s.stats.p95
                ),
            );
        }
    }
    let mut peaks = vec![("load", load_mem.hwm_kb)];
    if let Some(q) = &query {
        peaks.push(("fill", q.fill_mem.hwm_kb));
        peaks.push(("queries", q.after.hwm_kb));
    }
    for (phase, kb) in peaks {
        target(
            mb(kb) <= 150.0,
            format!(
                "RSS <= 150 MB under load ({phase} peak VmHWM): {:.1} MB",
                mb(kb)
            ),
        );
    }
    let mut idles = vec![("fresh", idle_fresh.rss_kb), ("restart", idle.rss_kb)];
    if let Some(q) = &query {
        idles.push(("restart on the query DB", q.idle.rss_kb));
    }
    for (when, kb) in idles {
        target(
            mb(kb) <= 30.0,
            format!("RSS <= 30 MB idle ({when}): {:.1} MB", mb(kb)),
        );
    }
    let mut readies = vec![("fresh", ready_fresh), ("restart", ready_restart)];
    if let Some(q) = &query {
        readies.push(("restart on the query DB", q.ready_after));
    }
    for (when, d) in readies {
        target(
            ms(d) <= 200.0,
            format!("start to ready <= 200 ms ({when}): {:.1} ms", ms(d)),
        );
    }
    if problems.is_empty() {
        println!("\nno correctness problems seen");
    } else {
        println!("\nPROBLEMS:");
        for p in &problems {
            println!("  {p}");
        }
    }
}
