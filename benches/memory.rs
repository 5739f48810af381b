//! Memory under hostile but authenticated load: the release-built
//! `trulayer-server`, driven over HTTP on 127.0.0.1 only.
//!
//! Run: `cargo bench --bench memory`.
//!
//! The server is seeded with traces whose inputs are 4.9 MB each, then for
//! each kind of worst-case request, `MEM_CONCURRENCY` of them are sent at
//! once, `MEM_ROUNDS` times over:
//!
//! - `otlp`: a 19 MB OTLP protobuf body of ~390,000 minimal spans, each its
//!   own trace (refused: over `limits.otlp_max_spans`);
//! - `otlp-limit`: 50,000 such spans, the most one OTLP request may hold
//!   (about 2.5 MB), each request with traces of its own;
//! - `batch`: a JSON batch of 10,000 traces × 4 spans close to 64 MiB;
//! - `list`: `GET /v1/traces?limit=200` over the big traces;
//! - `otlp-export`: `GET /v1/otlp/export` over the big traces (a session);
//! - `detail`: `GET /v1/traces/{id}` of a big trace.
//!
//! Throughout, `/health` is asked every 20 ms on a fresh connection and its
//! latency kept; the server's RSS is sampled every 10 ms and its peak read
//! from `VmHWM` (reset before each burst). Each kind starts once RSS is back
//! within 1.5× of its level before the first burst (or after 30 s). After
//! the last kind the bench waits `MEM_SETTLE_SECONDS` and reads RSS again,
//! against that level.
//!
//! | variable             | default | meaning                                         |
//! |----------------------|---------|-------------------------------------------------|
//! | `MEM_CONCURRENCY`    | 8       | requests of one kind sent at once               |
//! | `MEM_ROUNDS`         | 2       | bursts per kind                                 |
//! | `MEM_BIG_TRACES`     | 48      | seeded traces with a 4.9 MB input each          |
//! | `MEM_SETTLE_SECONDS` | 60      | wait after the bursts before RSS is read again  |
//! | `MEM_KINDS`          | all     | comma-separated subset of the kinds above       |
//! | `BENCH_SERVER`       | unset   | run this server binary instead of this build's  |

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod support;
use support::{health_ok, http_client, mb, proc_mem, Server, API_KEY};

const BIG_INPUT_BYTES: usize = 4_900_000;
const ADMIN_EMAIL: &str = "bench@example.com";
const ADMIN_PASSWORD: &str = "benchpassword";
const KINDS: [&str; 6] = [
    "otlp",
    "otlp-limit",
    "batch",
    "list",
    "otlp-export",
    "detail",
];

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A 4.9 MB text that does not compress to nothing.
fn big_text(seed: u64) -> String {
    let words = [
        "invoice",
        "refund",
        "latency",
        "gateway",
        "customer",
        "french",
        "pipeline",
        "token",
        "retrieval",
        "vector",
        "prompt",
        "answer",
        "policy",
        "upstream",
        "ledger",
        "summary",
    ];
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    let mut out = String::with_capacity(BIG_INPUT_BYTES + 16);
    while out.len() < BIG_INPUT_BYTES {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        out.push_str(words[(state >> 60) as usize]);
        out.push(' ');
    }
    out.truncate(BIG_INPUT_BYTES);
    out
}

/// OTLP protobuf of `count` minimal spans, each in a trace of its own
/// (trace ids told apart by `seed`): 390,646 make ~19 MB.
fn otlp_minimal_spans(count: u64, seed: u64) -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;
    let spans = (0..count)
        .map(|i| {
            let mut trace_id = [0u8; 16];
            trace_id[..8].copy_from_slice(&i.to_be_bytes());
            trace_id[8..].copy_from_slice(&(0x5eed_u64 + seed).to_be_bytes());
            Span {
                trace_id: trace_id.to_vec(),
                span_id: (i + 1).to_be_bytes().to_vec(),
                name: "s".into(),
                start_time_unix_nano: 1_767_000_000_000_000_000 + i,
                end_time_unix_nano: 1_767_000_000_000_000_000 + i + 1_000,
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// A JSON batch of 10,000 traces × 4 spans, close to 64 MiB.
fn batch_worst_case(round: u64) -> Vec<u8> {
    let text = big_text(round).chars().take(1_400).collect::<String>();
    let traces: Vec<Value> = (0..10_000u64)
        .map(|i| {
            let spans: Vec<Value> = (0..4)
                .map(|s| {
                    json!({"name": format!("span-{s}"), "type": "llm", "model": "gpt-4o-mini",
                           "input": &text[..300], "output": &text[300..600],
                           "prompt_tokens": 40, "completion_tokens": 12,
                           "metadata": {"k": s, "route": "a/b/c"}})
                })
                .collect();
            json!({
                "id": uuid::Uuid::new_v4().to_string(),
                "name": "batch-trace",
                "session_id": format!("s-{}", i % 100),
                "input": &text[..700], "output": &text[700..1400],
                "tags": {"env": "prod", "round": round.to_string()},
                "metadata": {"user": i, "flags": {"beta": true}},
                "spans": spans,
            })
        })
        .collect();
    serde_json::to_vec(&json!({ "traces": traces })).unwrap_or_default()
}

/// `/health` latencies, from a thread of their own.
struct HealthProbe {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Duration>>>,
    failures: Arc<Mutex<u64>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HealthProbe {
    fn start(base: &str) -> HealthProbe {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(Mutex::new(0));
        let port: u16 = base
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("the server's port");
        let thread = {
            let (stop, samples, failures) = (stop.clone(), samples.clone(), failures.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let asked = Instant::now();
                    if health_ok(port) {
                        samples.lock().expect("samples").push(asked.elapsed());
                    } else {
                        *failures.lock().expect("failures") += 1;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        HealthProbe {
            stop,
            samples,
            failures,
            thread: Some(thread),
        }
    }

    /// (requests, p99 ms, max ms, over 100 ms, failures) since the last call.
    fn take(&self) -> (usize, f64, f64, usize, u64) {
        let mut samples = std::mem::take(&mut *self.samples.lock().expect("samples"));
        let failures = std::mem::take(&mut *self.failures.lock().expect("failures"));
        samples.sort();
        let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
        let p99 = samples
            .get((samples.len() * 99 / 100).min(samples.len().saturating_sub(1)))
            .map_or(0.0, ms);
        let max = samples.last().map_or(0.0, ms);
        let slow = samples
            .iter()
            .filter(|d| **d > Duration::from_millis(100))
            .count();
        (samples.len(), p99, max, slow, failures)
    }
}

impl Drop for HealthProbe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Clears the process's peak RSS (`VmHWM`), so the next reading is this burst's.
fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// Samples RSS every 10 ms while `f` runs; returns its result and the
/// largest sample in kB.
async fn sampling_rss<F: std::future::Future>(pid: u32, f: F) -> (F::Output, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(proc_mem(pid).rss_kb);
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        })
    };
    let out = f.await;
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.join().unwrap_or(0);
    (out, peak)
}

struct Request {
    method: reqwest::Method,
    path: String,
    token: String,
    content_type: &'static str,
    body: Option<Arc<Vec<u8>>>,
}

/// Sends the requests at once; returns "status × count" and the largest body.
async fn burst(base: &str, requests: Vec<Request>) -> (String, usize) {
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|r| {
            let url = format!("{base}{}", r.path);
            tokio::spawn(async move {
                let client = http_client();
                let mut builder = client
                    .request(r.method, url)
                    .bearer_auth(&r.token)
                    .timeout(Duration::from_secs(300));
                if let Some(body) = r.body {
                    builder = builder
                        .header("content-type", r.content_type)
                        .body((*body).clone());
                }
                match builder.send().await {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        let len = resp.bytes().await.map_or(0, |b| b.len());
                        (status, len)
                    }
                    Err(_) => (0, 0),
                }
            })
        })
        .collect();
    let mut statuses = std::collections::BTreeMap::new();
    let mut largest = 0;
    for task in tasks {
        let (status, len) = task.await.unwrap_or((0, 0));
        *statuses.entry(status).or_insert(0) += 1;
        largest = largest.max(len);
    }
    let text = statuses
        .iter()
        .map(|(s, n)| format!("{s}×{n}"))
        .collect::<Vec<_>>()
        .join(" ");
    (text, largest)
}

async fn seed_big_traces(base: &str, count: usize) -> Vec<String> {
    let client = http_client();
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        let id = uuid::Uuid::now_v7().to_string();
        let body = json!({
            "id": id, "name": "big", "input": big_text(i as u64), "output": "short",
            "spans": [{"name": "llm", "type": "llm", "input": "x", "output": "y"}],
        });
        let resp = client
            .post(format!("{base}/v1/ingest"))
            .bearer_auth(API_KEY)
            .json(&body)
            .send()
            .await
            .expect("seed a big trace");
        assert!(
            resp.status().is_success(),
            "seeding a big trace: {}",
            resp.status()
        );
        ids.push(id);
    }
    ids
}

async fn session_token(base: &str) -> String {
    let resp = http_client()
        .post(format!("{base}/v1/auth/login"))
        .json(&json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
        .send()
        .await
        .expect("login");
    let body: Value = resp.json().await.expect("login body");
    body["token"].as_str().unwrap_or_default().to_owned()
}

fn main() {
    let concurrency: usize = env_or("MEM_CONCURRENCY", 8);
    let rounds: usize = env_or("MEM_ROUNDS", 2);
    let big_traces: usize = env_or("MEM_BIG_TRACES", 48);
    let settle = Duration::from_secs(env_or("MEM_SETTLE_SECONDS", 60));
    let kinds: Vec<String> = std::env::var("MEM_KINDS")
        .map(|k| k.split(',').map(|s| s.trim().to_owned()).collect())
        .unwrap_or_else(|_| KINDS.iter().map(|k| k.to_string()).collect());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let root = tempfile::tempdir().expect("temporary directory");
    let data = root.path().join("data");
    let mut server = Server::start_with(
        &data,
        root.path().join("server.log"),
        &[
            ("TRULAYER_INIT__ADMIN_EMAIL", ADMIN_EMAIL),
            ("TRULAYER_INIT__ADMIN_PASSWORD", ADMIN_PASSWORD),
        ],
    );
    let pid = server.pid();
    let base = server.base.clone();
    println!("memory bench: {concurrency} at once, {rounds} rounds, {big_traces} traces of 4.9 MB");
    println!("  idle after start: {}", server.mem().describe());

    let seeded = Instant::now();
    let ids = runtime.block_on(seed_big_traces(&base, big_traces));
    let token = runtime.block_on(session_token(&base));
    let otlp = Arc::new(otlp_minimal_spans(390_646, 0));
    println!(
        "  seeded in {:.1} s; OTLP body {:.1} MB; after seeding: {}",
        seeded.elapsed().as_secs_f64(),
        otlp.len() as f64 / 1e6,
        server.mem().describe()
    );
    std::thread::sleep(Duration::from_secs(5));
    let before = server.mem().rss_kb;
    println!(
        "  before the bursts (5 s later): VmRSS {:.1} MB",
        mb(before)
    );

    let probe = HealthProbe::start(&base);
    println!(
        "\n  {:<12} {:>10} {:>10} {:>12} {:>10} {:>10} {:>6}  statuses",
        "kind", "peak MB", "sampled", "largest MB", "health p99", "max ms", ">100"
    );
    let mut worst_peak = 0;
    for kind in &kinds {
        // Each kind starts from a settled process: what the previous kind
        // freed has gone back to the system, or 30 s have passed.
        let settling = Instant::now();
        while server.mem().rss_kb > before * 3 / 2 && settling.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(250));
        }
        probe.take();
        for round in 0..rounds {
            let requests: Vec<Request> = (0..concurrency)
                .map(|i| {
                    let get = |path: String, token: &str| Request {
                        method: reqwest::Method::GET,
                        path,
                        token: token.to_owned(),
                        content_type: "",
                        body: None,
                    };
                    match kind.as_str() {
                        "otlp" => Request {
                            method: reqwest::Method::POST,
                            path: "/v1/otlp/traces".into(),
                            token: API_KEY.into(),
                            content_type: "application/x-protobuf",
                            body: Some(otlp.clone()),
                        },
                        "otlp-limit" => Request {
                            method: reqwest::Method::POST,
                            path: "/v1/otlp/traces".into(),
                            token: API_KEY.into(),
                            content_type: "application/x-protobuf",
                            body: Some(Arc::new(otlp_minimal_spans(
                                50_000,
                                (round * 100 + i + 1) as u64,
                            ))),
                        },
                        "batch" => Request {
                            method: reqwest::Method::POST,
                            path: "/v1/ingest/batch".into(),
                            token: API_KEY.into(),
                            content_type: "application/json",
                            body: Some(Arc::new(batch_worst_case((round * 100 + i) as u64))),
                        },
                        "list" => get("/v1/traces?limit=200".into(), API_KEY),
                        // From 2026 on: the big traces, not the minimal
                        // spans of `otlp-limit` (which start in 2025).
                        "otlp-export" => get(
                            "/v1/otlp/export?from=2026-01-01T00:00:00Z&to=2100-01-01T00:00:00Z"
                                .into(),
                            &token,
                        ),
                        "detail" => get(format!("/v1/traces/{}", ids[i % ids.len()]), API_KEY),
                        other => panic!("MEM_KINDS: unknown kind {other:?}"),
                    }
                })
                .collect();
            reset_peak(pid);
            let ((statuses, largest), sampled) =
                runtime.block_on(sampling_rss(pid, burst(&base, requests)));
            let peak = proc_mem(pid).hwm_kb;
            worst_peak = worst_peak.max(peak);
            let (_, p99, max, slow, failures) = probe.take();
            println!(
                "  {:<12} {:>10.1} {:>10.1} {:>12.1} {:>10.1} {:>10.1} {:>6}  {statuses}{}",
                format!("{kind} #{}", round + 1),
                mb(peak),
                mb(sampled),
                largest as f64 / 1e6,
                p99,
                max,
                slow,
                if failures > 0 {
                    format!(" (health failures {failures})")
                } else {
                    String::new()
                }
            );
        }
    }
    drop(probe);
    let after_burst = server.mem().rss_kb;
    std::thread::sleep(settle);
    let settled = server.mem().rss_kb;
    println!(
        "\n  worst peak {:.1} MB (target ≤ 512); RSS right after {:.1} MB, {}s later {:.1} MB = {:.2}× the pre-burst {:.1} MB (target ≤ 2×)",
        mb(worst_peak),
        mb(after_burst),
        settle.as_secs(),
        mb(settled),
        settled as f64 / before.max(1) as f64,
        mb(before)
    );
    server.stop();
    let _ = std::fs::remove_dir_all(Path::new(&data));
}
