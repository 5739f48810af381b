//! Evaluation benchmark: drives the release-built `trulayer-server` over
//! HTTP on 127.0.0.1.
//!
//! 1. Ingest with and without an auto-evaluation rule on every trace: how
//!    much the rule costs ingest, how fast its evaluations run, and how far
//!    behind they finish.
//! 2. Triggered rule evaluations: `POST /v1/eval` throughput and the time
//!    until all are complete.
//! 3. LLM evaluations on a local stand-in judge that answers after a fixed
//!    delay: throughput at `eval.workers` calls at once.
//!
//! `cargo bench --bench evals`; knobs: `BENCH_EVAL_SECONDS` (ingest window,
//! default 10), `BENCH_EVAL_TRIGGERS` (default 5000), `BENCH_JUDGE_EVALS`
//! (default 200), `BENCH_JUDGE_DELAY_MS` (default 50).

use std::fs::File;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const API_KEY: &str = "tl_bench_evals_0123456789abcdef";
const CLIENTS: usize = 8;
const BATCH: usize = 50;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(data_dir: &Path, judge: Option<&str>) -> Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = File::create(data_dir.with_extension("log")).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_trulayer-server"));
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TRULAYER_") {
                command.env_remove(key);
            }
        }
        command
            .arg("serve")
            .env("TRULAYER_SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env("TRULAYER_STORAGE__DATA_DIR", data_dir)
            .env("TRULAYER_INIT__API_KEY", API_KEY)
            .env("TRULAYER_INIT__ADMIN_PASSWORD", "benchpassword")
            .env("TRULAYER_LOG__LEVEL", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        if let Some(url) = judge {
            command
                .env("TRULAYER_EVAL__JUDGE__PROVIDER", "openai")
                .env("TRULAYER_EVAL__JUDGE__BASE_URL", url)
                .env("TRULAYER_EVAL__JUDGE__MODEL", "bench-judge");
        }
        let child = command.spawn().expect("spawn trulayer-server");
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("HTTP client")
}

fn trace(i: u64) -> Value {
    json!({
        "id": uuid::Uuid::now_v7().to_string(),
        "name": "chat.reply",
        "input": format!("Question number {i}: what is the capital of France?"),
        "output": if i.is_multiple_of(10) { String::new() } else { format!("Paris, answer {i}.") },
        "model": "gpt-4o-mini",
        "spans": [{"name": "llm", "type": "llm", "model": "gpt-4o-mini",
                   "prompt_tokens": 20, "completion_tokens": 5}],
    })
}

/// Ingests batches from `CLIENTS` clients for `window`; returns traces stored.
async fn ingest_for(base: &str, window: Duration) -> u64 {
    let stored = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + window;
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (base, stored) = (base.to_owned(), stored.clone());
        tasks.push(tokio::spawn(async move {
            let http = client();
            let mut i = c as u64 * 1_000_000_000;
            while Instant::now() < until {
                let traces: Vec<Value> = (0..BATCH as u64).map(|k| trace(i + k)).collect();
                i += BATCH as u64;
                let resp = http
                    .post(format!("{base}/v1/ingest/batch"))
                    .bearer_auth(API_KEY)
                    .json(&json!({ "traces": traces }))
                    .send()
                    .await
                    .expect("ingest sent");
                assert!(resp.status().is_success(), "ingest: {}", resp.status());
                stored.fetch_add(BATCH as u64, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.expect("client");
    }
    stored.load(Ordering::Relaxed)
}

async fn health(base: &str) -> Value {
    client()
        .get(format!("{base}/health"))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("JSON")
}

/// Waits until the queue is empty; returns how long that took. `/health`
/// shows the queue as the runner last measured it (every half second), so
/// an empty queue counts once it has been seen twice, a measurement apart.
async fn drained(base: &str) -> Duration {
    let started = Instant::now();
    let mut empty_since: Option<Instant> = None;
    loop {
        let h = health(base).await;
        let queue = &h["eval_queue"];
        if queue["pending"] == 0 && queue["running"] == 0 && queue["auto_backlog_traces"] == 0 {
            let since = *empty_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= Duration::from_millis(600) {
                return since.duration_since(started);
            }
        } else {
            empty_since = None;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the queue did not drain"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Evaluations complete, counted over the JSONL export.
async fn complete_evals(base: &str) -> usize {
    let text = client()
        .get(format!("{base}/v1/eval/export?format=jsonl"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("export")
        .text()
        .await
        .expect("text");
    text.lines()
        .filter(|l| l.contains("\"status\":\"complete\""))
        .count()
}

async fn ingest_phase(root: &Path, window: Duration) {
    for with_rule in [false, true] {
        let dir = root.join(if with_rule { "with-rule" } else { "no-rule" });
        let server = Server::start(&dir, None);
        let base = server.base.clone();
        if with_rule {
            let resp = client()
                .post(format!("{base}/v1/eval-rules"))
                .bearer_auth(API_KEY)
                .json(&json!({"project_id": "default", "metric_name": "answered",
                              "evaluator_type": "rule",
                              "config": {"rule": "not_empty", "field": "output"}}))
                .send()
                .await
                .expect("rule");
            assert_eq!(resp.status().as_u16(), 201);
        }
        // Warm up, then measure.
        let warm = ingest_for(&base, Duration::from_secs(2)).await;
        let started = Instant::now();
        let stored = ingest_for(&base, window).await;
        let took = started.elapsed();
        print!(
            "ingest {}: {:.0} traces/s",
            if with_rule {
                "with a rule on every trace"
            } else {
                "without rules"
            },
            stored as f64 / took.as_secs_f64()
        );
        if with_rule {
            let behind = health(&base).await["eval_queue"]["auto_backlog_traces"].clone();
            let lag = drained(&base).await;
            let complete = complete_evals(&base).await;
            assert_eq!(
                complete as u64,
                warm + stored,
                "every trace is evaluated once"
            );
            let total = started.elapsed();
            println!(
                "; traces not yet evaluated at the end of ingest: {behind}; all done {:.1} s later \
                 ({} evaluations, {:.0}/s from the start of the window)",
                lag.as_secs_f64(),
                warm + stored,
                (warm + stored) as f64 / total.as_secs_f64()
            );
        } else {
            println!();
        }
    }
}

async fn trigger_phase(root: &Path, n: usize) {
    let server = Server::start(&root.join("triggers"), None);
    let base = server.base.clone();
    // The traces to evaluate.
    let mut ids = Vec::new();
    let http = client();
    for chunk in 0..n.div_ceil(100).min(20) {
        let traces: Vec<Value> = (0..100).map(|k| trace((chunk * 100 + k) as u64)).collect();
        ids.extend(
            traces
                .iter()
                .map(|t| t["id"].as_str().unwrap_or_default().to_owned()),
        );
        http.post(format!("{base}/v1/ingest/batch"))
            .bearer_auth(API_KEY)
            .json(&json!({ "traces": traces }))
            .send()
            .await
            .expect("ingest");
    }
    let ids = Arc::new(ids);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (base, ids) = (base.clone(), ids.clone());
        tasks.push(tokio::spawn(async move {
            let http = client();
            let mut latencies = Vec::new();
            for i in (c..n).step_by(CLIENTS) {
                let sent = Instant::now();
                let resp = http
                    .post(format!("{base}/v1/eval"))
                    .bearer_auth(API_KEY)
                    .json(
                        &json!({"trace_id": ids[i % ids.len()], "evaluator_type": "rule",
                                  "metric_name": "pii_leakage"}),
                    )
                    .send()
                    .await
                    .expect("trigger");
                assert_eq!(resp.status().as_u16(), 202);
                latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("client"));
    }
    let accepted = started.elapsed();
    tokio::time::sleep(Duration::from_millis(600)).await;
    drained(&base).await;
    let done = started.elapsed();
    let complete = complete_evals(&base).await;
    assert_eq!(complete, n, "every triggered evaluation completes");
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    println!(
        "triggered rule evaluations: {n} accepted at {:.0}/s (p50 {:.1} ms, p99 {:.1} ms); \
         all complete after {:.1} s ({:.0}/s)",
        n as f64 / accepted.as_secs_f64(),
        pct(0.5),
        pct(0.99),
        done.as_secs_f64(),
        n as f64 / done.as_secs_f64()
    );
}

/// A stand-in judge: answers every chat completion after `delay`.
async fn judge(delay: Duration) -> String {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(move || async move {
            tokio::time::sleep(delay).await;
            axum::Json(json!({"choices": [{"message": {"role": "assistant",
                "content": "{\"score\": 0.8, \"label\": \"pass\", \"reasoning\": \"fine\"}"}}]}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/v1")
}

async fn judge_phase(root: &Path, n: usize, delay: Duration) {
    let url = judge(delay).await;
    let server = Server::start(&root.join("judge"), Some(&url));
    let base = server.base.clone();
    let http = client();
    let t = trace(1);
    http.post(format!("{base}/v1/ingest"))
        .bearer_auth(API_KEY)
        .json(&t)
        .send()
        .await
        .expect("ingest");
    let started = Instant::now();
    for _ in 0..n {
        let resp = http
            .post(format!("{base}/v1/eval"))
            .bearer_auth(API_KEY)
            .json(&json!({"trace_id": t["id"], "evaluator_type": "llm",
                          "metric_name": "answer_relevance"}))
            .send()
            .await
            .expect("trigger");
        assert_eq!(resp.status().as_u16(), 202);
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    drained(&base).await;
    let took = started.elapsed();
    let complete = complete_evals(&base).await;
    println!(
        "LLM evaluations on a judge answering in {} ms, 4 calls at once: {n} in {:.1} s \
         ({:.1}/s; {complete} complete)",
        delay.as_millis(),
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let root = tempfile::tempdir().expect("tempdir");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        ingest_phase(
            root.path(),
            Duration::from_secs(env_or("BENCH_EVAL_SECONDS", 10)),
        )
        .await;
        trigger_phase(root.path(), env_or("BENCH_EVAL_TRIGGERS", 5000)).await;
        judge_phase(
            root.path(),
            env_or("BENCH_JUDGE_EVALS", 200),
            Duration::from_millis(env_or("BENCH_JUDGE_DELAY_MS", 50)),
        )
        .await;
    });
}
