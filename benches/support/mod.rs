//! What the benches share: the release-built `trulayer-server` as a child
//! process on a free loopback port, and readings of its memory and CPU from
//! `/proc`; the generator pieces and statistics the load benches share.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use uuid::Uuid;

/// The API key every bench server is started with (headless first start).
pub const API_KEY: &str = "tl_bench_0123456789abcdef0123";

pub struct Mem {
    pub rss_kb: u64,
    pub hwm_kb: u64,
    pub anon_kb: u64,
    pub file_kb: u64,
}

impl Mem {
    pub fn describe(&self) -> String {
        format!(
            "VmRSS {:.1} MB (anon {:.1}, file {:.1}), VmHWM {:.1} MB",
            mb(self.rss_kb),
            mb(self.anon_kb),
            mb(self.file_kb),
            mb(self.hwm_kb)
        )
    }
}

pub fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

pub fn proc_mem(pid: u32) -> Mem {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    Mem {
        rss_kb: field("VmRSS:"),
        hwm_kb: field("VmHWM:"),
        anon_kb: field("RssAnon:"),
        file_kb: field("RssFile:"),
    }
}

/// User + system CPU time of a process, in seconds.
pub fn proc_cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    // Fields after the name start at field 3 (state); utime and stime are 14 and 15.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 / clock_ticks()
}

/// Busy (non-idle, non-iowait) CPU seconds of the whole machine.
pub fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy: u64 = fields
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    busy as f64 / clock_ticks()
}

pub fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// One plain HTTP/1.1 health probe; true on a 200.
pub fn health_ok(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request =
        format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    let mut got = 0;
    while got < head.len() {
        match stream.read(&mut head[got..]) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got += n,
        }
    }
    &head == b"HTTP/1.1 200"
}

pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// A running `trulayer-server serve`; stopped on drop.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub log: PathBuf,
    pub ready_after: Duration,
    pub stopped: bool,
}

/// The server binary under test: this build's, or `BENCH_SERVER`'s.
pub fn server_binary() -> PathBuf {
    std::env::var_os("BENCH_SERVER").map_or_else(
        || env!("CARGO_BIN_EXE_trulayer-server").into(),
        PathBuf::from,
    )
}

impl Server {
    /// Spawns the server on `data_dir` and waits for `/health` to answer 200.
    pub fn start(data_dir: &Path, log: PathBuf) -> Server {
        Server::start_with(data_dir, log, &[])
    }

    /// Like [`Server::start`], with more `TRULAYER_*` settings.
    pub fn start_with(data_dir: &Path, log: PathBuf, settings: &[(&str, &str)]) -> Server {
        let port = free_port();
        let log_file = File::create(&log).expect("create the server log file");
        let mut command = Command::new(server_binary());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TRULAYER_") {
                command.env_remove(key);
            }
        }
        command
            .arg("serve")
            .env("TRULAYER_SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env("TRULAYER_STORAGE__DATA_DIR", data_dir)
            .env("TRULAYER_STORAGE__SYNCHRONOUS", "normal")
            .env("TRULAYER_INIT__API_KEY", API_KEY)
            .env("TRULAYER_INIT__ADMIN_PASSWORD", "benchpassword")
            .env(
                "TRULAYER_LOG__LEVEL",
                std::env::var("BENCH_LOG_LEVEL").unwrap_or_else(|_| "warn".into()),
            )
            .envs(settings.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file));
        let spawned = Instant::now();
        let child = command.spawn().expect("spawn trulayer-server");
        let mut server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
            ready_after: Duration::ZERO,
            stopped: false,
        };
        let deadline = spawned + Duration::from_secs(60);
        loop {
            if health_ok(port) {
                break;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                server.stopped = true;
                panic!(
                    "trulayer-server exited ({status}) before it was ready; log:\n{}",
                    log_tail(&server.log)
                );
            }
            assert!(
                Instant::now() < deadline,
                "trulayer-server not ready after 60 s; log:\n{}",
                log_tail(&server.log)
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        server.ready_after = spawned.elapsed();
        server
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn mem(&self) -> Mem {
        proc_mem(self.pid())
    }

    pub fn cpu_seconds(&self) -> f64 {
        proc_cpu_seconds(&self.pid().to_string())
    }

    /// CPU seconds of the server's single SQLite writer thread.
    pub fn writer_cpu_seconds(&self) -> f64 {
        let pid = self.pid();
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return 0.0;
        };
        tasks
            .flatten()
            .map(|task| task.file_name().to_string_lossy().into_owned())
            .filter(|tid| {
                std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
                    .is_ok_and(|comm| comm.trim() == "trulayer-writer")
            })
            .map(|tid| proc_cpu_seconds(&format!("{pid}/task/{tid}")))
            .sum()
    }

    /// SIGTERM, then waits (up to `grace`) for the exit; returns how long it took.
    pub fn stop_within(&mut self, grace: Duration) -> Duration {
        let asked = Instant::now();
        if self.stopped {
            return Duration::ZERO;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.stopped = true;
                    if !status.success() {
                        eprintln!(
                            "warning: trulayer-server exited with {status}; log:\n{}",
                            log_tail(&self.log)
                        );
                    }
                    return asked.elapsed();
                }
                Ok(None) if asked.elapsed() < grace => std::thread::sleep(Duration::from_millis(5)),
                _ => {
                    eprintln!("warning: trulayer-server did not stop within {grace:?}; killing it");
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    self.stopped = true;
                    return asked.elapsed();
                }
            }
        }
    }

    pub fn stop(&mut self) -> Duration {
        self.stop_within(Duration::from_secs(180))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_within(Duration::from_secs(15));
    }
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("build the HTTP client")
}

// ------------------------------------------------- generators and stats ----

/// Kinds of error message, the first the most common; `{}` is a number
/// that varies from one trace to the next, `{x}` a hex id, `{o}` an
/// address's octet. The failure
/// clusters should come out as one per kind.
pub const ERROR_KINDS: [&str; 30] = [
    "upstream timeout after {} ms",
    "Error code: 429 - Rate limit reached for gpt-4o in organization org-{x} on tokens per min (TPM): Limit 30000, Used {}, Requested {}. Please try again in {}ms. (request id: req_{x})",
    "Request timed out after {}s",
    "This model's maximum context length is 8192 tokens. However, your messages resulted in {} tokens.",
    "connection refused 10.0.{o}.{o}:5432",
    "upstream connect error or disconnect/reset before headers, retried {} times",
    "JSONDecodeError: Expecting value: line {} column {} (char {})",
    "tool search_orders failed: order {x} not found",
    "HTTP 503 from https://api.internal.example.com/v2/embeddings?batch={}",
    "anthropic.APIStatusError: overloaded_error (request_id: req_{x})",
    "OutputParserException: Could not parse LLM output at step {}",
    "ValidationError: {} validation errors for ToolCall",
    "redis: read tcp 10.0.{o}.{o}:{}->10.0.0.9:6379: i/o timeout",
    "user u{}@example.com has no access to workspace {}",
    "KeyError: doc_{x}",
    "upstream returned 502 Bad Gateway after {} ms",
    "budget exceeded: spent ${}.{} of ${}.00",
    "retrieval returned 0 documents for index idx-{x}",
    "prompt is too long: {} tokens > 200000 maximum",
    "DEADLINE_EXCEEDED: deadline exceeded after {}.{}s",
    "ssl handshake failed with vector-db-{}.internal:443",
    "FileNotFoundError: [Errno 2] No such file or directory: /srv/models/run-{}/config.json",
    "tool calculator failed: division by zero at step {}",
    "moderation flagged output (category=violence, score=0.{})",
    "upstream stream closed after {} chunks",
    "function get_weather returned invalid JSON at position {}",
    "grpc: received message larger than max ({} vs. 4194304)",
    "Too Many Requests: retry after {} seconds",
    "embedding dimension mismatch: expected 1536, got {}",
    "sandbox process exited with code {} after {} ms",
];

pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        _ => default,
    }
}

/// SplitMix64: cheap, and seeded from the OS so runs and tasks differ.
pub struct Rng(pub u64);

impl Rng {
    pub fn seeded() -> Rng {
        let (a, b) = Uuid::new_v4().as_u64_pair();
        Rng(a ^ b.rotate_left(17))
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn index(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A random (version 4) UUID.
    pub fn uuid(&mut self) -> Uuid {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.next().to_le_bytes());
        bytes[8..].copy_from_slice(&self.next().to_le_bytes());
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
}

/// An error message of one of the kinds, the first kinds the most common.
pub fn error_message(rng: &mut Rng) -> String {
    let u = rng.below(1_000) as usize;
    let kind = ERROR_KINDS[u * u * ERROR_KINDS.len() / 1_000_000];
    let mut out = String::with_capacity(kind.len() + 32);
    let mut rest = kind;
    while let Some(at) = rest.find('{') {
        out.push_str(&rest[..at]);
        if rest[at..].starts_with("{x}") {
            let _ = write!(out, "{:012x}", rng.next() >> 16);
            rest = &rest[at + 3..];
        } else if rest[at..].starts_with("{o}") {
            let _ = write!(out, "{}", rng.below(256));
            rest = &rest[at + 3..];
        } else {
            let _ = write!(out, "{}", 1 + rng.below(30_000));
            rest = &rest[at + 2..];
        }
    }
    out.push_str(rest);
    out
}

pub fn push_time(out: &mut String, micros: i64) {
    let t = chrono::DateTime::from_timestamp_micros(micros).expect("time in range");
    let _ = write!(out, "\"{}\"", t.format("%Y-%m-%dT%H:%M:%S%.6fZ"));
}

pub fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

#[derive(Default)]
pub struct Stats {
    pub n: usize,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Stats {
    pub fn of(mut samples: Vec<f64>) -> Stats {
        if samples.is_empty() {
            return Stats::default();
        }
        samples.sort_by(f64::total_cmp);
        let n = samples.len();
        let rank = |p: f64| samples[((p / 100.0 * n as f64).ceil() as usize).clamp(1, n) - 1];
        Stats {
            n,
            p50: rank(50.0),
            p95: rank(95.0),
            p99: rank(99.0),
            max: samples[n - 1],
            mean: samples.iter().sum::<f64>() / n as f64,
        }
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ------------------------------------------------------- the trace shape ----

/// Traces per ingest request, spans per trace.
pub const BATCH: usize = 100;
pub const SPANS: usize = 4;
pub const MODELS: [&str; 4] = [
    "gpt-4o",
    "gpt-4o-mini",
    "claude-3-5-sonnet",
    "llama-3.1-70b",
];
pub const TRACE_NAMES: [&str; 4] = ["chat", "summarise", "qa", "agent_run"];
/// Each trace's spans: (name, type).
pub const SPAN_SHAPES: [(&str, &str); SPANS] = [
    ("plan", "llm"),
    ("search_docs", "retrieval"),
    ("call_tool", "tool"),
    ("answer", "llm"),
];
/// The few dozen words of prompt-like texts: each is in most traces.
pub const WORDS: [&str; 24] = [
    "the",
    "model",
    "returned",
    "a",
    "summary",
    "of",
    "customer",
    "ticket",
    "about",
    "billing",
    "latency",
    "retrieval",
    "context",
    "window",
    "tokens",
    "answer",
    "question",
    "policy",
    "refund",
    "order",
    "shipping",
    "account",
    "please",
    "explain,",
];
pub const ENVS: [&str; 3] = ["prod", "staging", "dev"];
pub const CUSTOMERS: u64 = 1_000;
pub const ERROR_PERCENT: u64 = 5;

pub fn customer_name(customer: u64) -> String {
    format!("cust-{customer:04}")
}

/// How the clients send their batches.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `POST /v1/ingest/batch`, the SDK's JSON.
    Json,
    /// `POST /v1/otlp/traces`, OTLP protobuf with GenAI attributes.
    Otlp,
}

impl Protocol {
    /// The path and content type of its requests.
    pub fn endpoint(self) -> (&'static str, &'static str) {
        match self {
            Protocol::Json => ("/v1/ingest/batch", "application/json"),
            Protocol::Otlp => ("/v1/otlp/traces", "application/x-protobuf"),
        }
    }
}

/// A 201 with all `traces` ingested (JSON), or a 200 without a partial
/// success (OTLP).
pub fn acknowledged(protocol: Protocol, status: u16, body: &[u8], traces: usize) -> bool {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
    use prost::Message;
    match protocol {
        Protocol::Json => {
            status == 201
                && serde_json::from_slice::<serde_json::Value>(body)
                    .ok()
                    .and_then(|v| v.get("ingested").and_then(serde_json::Value::as_u64))
                    == Some(traces as u64)
        }
        Protocol::Otlp => {
            status == 200
                && ExportTraceServiceResponse::decode(body)
                    .is_ok_and(|r| r.partial_success.is_none_or(|p| p.rejected_spans == 0))
        }
    }
}

/// Posts one ingest request of `traces` traces; Ok when acknowledged, else
/// what came back.
pub async fn post_batch(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    protocol: Protocol,
    body: Vec<u8>,
    traces: usize,
) -> Result<(), String> {
    let response = client
        .post(url)
        .bearer_auth(key)
        .header("content-type", protocol.endpoint().1)
        .body(body)
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = response.status();
    match response.bytes().await {
        Ok(bytes) if acknowledged(protocol, status.as_u16(), &bytes, traces) => Ok(()),
        Ok(bytes) => Err(format!(
            "{status}: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
        )),
        Err(e) => Err(format!("{status}: reading the body: {e}")),
    }
}

/// A generated trace as the OTLP encoder reads it.
pub struct OtlpTrace<'a> {
    pub id: Uuid,
    pub name: &'a str,
    pub model: &'a str,
    pub session: Option<&'a str>,
    pub customer: u64,
    pub env: &'a str,
    pub error: Option<&'a str>,
    pub spans: Vec<OtlpSpan<'a>>,
}

pub struct OtlpSpan<'a> {
    pub id: Uuid,
    pub name: &'a str,
    pub kind: &'a str,
    pub input: &'a str,
    pub output: &'a str,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub start: i64,
    pub end: i64,
}

/// The traces as an OTLP `ExportTraceServiceRequest` in protobuf: the
/// first span of each trace is its root, the others its children; GenAI
/// attributes carry model, tokens, prompt and completion.
pub fn otlp_request(traces: &[OtlpTrace<'_>]) -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
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
    let mut spans = Vec::with_capacity(traces.len() * SPANS);
    for t in traces {
        let trace_id = t.id.as_bytes().to_vec();
        let root_id = t.spans[0].id.as_bytes()[8..].to_vec();
        for (i, s) in t.spans.iter().enumerate() {
            let mut attributes = match s.kind {
                "llm" => vec![
                    text("gen_ai.operation.name", "chat"),
                    text("gen_ai.system", "openai"),
                    text("gen_ai.request.model", t.model),
                    kv("gen_ai.usage.input_tokens", Any::IntValue(s.prompt_tokens)),
                    kv(
                        "gen_ai.usage.output_tokens",
                        Any::IntValue(s.completion_tokens),
                    ),
                ],
                "tool" => vec![
                    text("gen_ai.operation.name", "execute_tool"),
                    text("gen_ai.tool.name", s.name),
                ],
                _ => vec![text("db.system", "qdrant")],
            };
            attributes.push(text("gen_ai.prompt", s.input));
            attributes.push(text("gen_ai.completion", s.output));
            if i == 0 {
                if let Some(session) = t.session {
                    attributes.push(text("session.id", session));
                }
                attributes.push(text("customer", &customer_name(t.customer)));
                attributes.push(text("env", t.env));
            }
            spans.push(Span {
                trace_id: trace_id.clone(),
                span_id: s.id.as_bytes()[8..].to_vec(),
                parent_span_id: if i == 0 { Vec::new() } else { root_id.clone() },
                name: if i == 0 { t.name.into() } else { s.name.into() },
                kind: 3,
                start_time_unix_nano: nanos(s.start),
                end_time_unix_nano: nanos(s.end),
                attributes,
                status: t.error.filter(|_| i == 0).map(|error| Status {
                    code: status::StatusCode::Error as i32,
                    message: error.into(),
                }),
                ..Default::default()
            });
        }
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![text("service.name", "bench")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "bench".into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// The directory the data directories go under: a temporary one, deleted
/// when the returned guard drops, or a new one kept under `keep` (what
/// `BENCH_KEEP_DIR` names).
pub fn data_root(keep: Option<&Path>, prefix: &str) -> (Option<tempfile::TempDir>, PathBuf) {
    match keep {
        Some(dir) => {
            std::fs::create_dir_all(dir).expect("create BENCH_KEEP_DIR");
            let kept = tempfile::Builder::new()
                .prefix(prefix)
                .tempdir_in(dir)
                .expect("create a directory in BENCH_KEEP_DIR")
                .keep();
            (None, kept)
        }
        None => {
            let temp = tempfile::Builder::new()
                .prefix(prefix)
                .tempdir()
                .expect("create a temporary directory");
            let path = temp.path().to_path_buf();
            (Some(temp), path)
        }
    }
}
