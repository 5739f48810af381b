//! Dataset runs: the release-built `trulayer-server` runs a dataset of
//! `BENCH_RUN_ITEMS` items against a version that names a model and a judge
//! model, both answered by a stand-in OpenAI-compatible endpoint inside this
//! process on 127.0.0.1, which answers every chat completion after
//! `BENCH_ENDPOINT_DELAY_MS`. Only loopback traffic; every wait is bounded.
//!
//! Run: `cargo bench --bench runs`.
//!
//! 1. Set-up, once: the traces through `POST /v1/ingest/batch` (1,000 per
//!    batch), a dataset, each trace added with `POST /v1/datasets/{id}/items`
//!    (8 clients), and a version with a system prompt, `model` and
//!    `judge_model`.
//! 2. For each `run_concurrency/tenant_run_concurrency` pair of
//!    `BENCH_RUN_SETTINGS`, the server is started on the same data directory
//!    with those settings, a run is scheduled (`POST
//!    /v1/datasets/{id}/runs`) and `GET /v1/eval-runs/{id}` is polled every
//!    250 ms until the run has finished. Every item must complete, with one
//!    model call and one judge call each, and the endpoint must never have
//!    had more calls at once than the settings allow. The run's wall time
//!    is the server's own, from its `created_at` to its `completed_at`.
//!
//! Each item holds a slot (one of the `concurrency` items the server works
//! on at once: the smaller of the two settings) from its claim until its
//! outcome is written. Per item, a slot is held `wall × concurrency ÷
//! items` on average; the endpoint accounts for the time its two calls
//! took, measured inside the stand-in from the request's arrival to its
//! answer (the delay, twice). The rest is the server's added overhead per
//! item: claiming, reading the item, keeping the answer, writing the scores,
//! the HTTP round trips. The stand-in also counts how many calls it had at
//! once (at most, and on average over the run).
//!
//! | variable                  | default    | meaning |
//! |---------------------------|------------|---------|
//! | `BENCH_RUN_ITEMS`         | 10000      | traces, dataset items and so run items |
//! | `BENCH_RUN_SETTINGS`      | `4/8,32/32`| `run_concurrency/tenant_run_concurrency` pairs, one run each |
//! | `BENCH_ENDPOINT_DELAY_MS` | 50         | the stand-in's delay before each answer |
//! | `BENCH_RUN_MAX_SECONDS`   | 600        | a run not finished by then is cancelled and the bench fails |
//! | `BENCH_LOG_LEVEL`         | `warn`     | the server's log level (logs: `server-*.log`, printed on failure) |
//! | `BENCH_SERVER`            | unset      | run this server binary instead of this build's |

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod support;
use support::{http_client, log_tail, Server, API_KEY};

/// Judge prompts start with this; anything else is a call to the model.
const JUDGE_PROMPT: &str = "You are an impartial judge";
const VERDICT_SCORE: f64 = 0.8;
const ADD_CLIENTS: usize = 8;
const INGEST_BATCH: usize = 1000;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// What the stand-in endpoint saw.
#[derive(Default)]
struct Calls {
    model: AtomicU64,
    judge: AtomicU64,
    /// Calls being answered now, and the most at once.
    in_flight: AtomicI64,
    max_in_flight: AtomicI64,
    /// Microseconds from each call's arrival to its answer, summed.
    busy_micros: AtomicU64,
    first: Mutex<Option<Instant>>,
    /// When the model answered each item (by its question's number), and
    /// the microseconds from there to the item's judge call, summed.
    answered: Mutex<HashMap<u64, Instant>>,
    gap_micros: AtomicU64,
}

/// The number of the question in a prompt ("Question 17: ...").
fn question(text: &str) -> Option<u64> {
    let rest = &text[text.find("Question ")? + "Question ".len()..];
    rest[..rest.find(':')?].parse().ok()
}

impl Calls {
    fn reset(&self) {
        self.model.store(0, Ordering::SeqCst);
        self.judge.store(0, Ordering::SeqCst);
        self.max_in_flight.store(0, Ordering::SeqCst);
        self.busy_micros.store(0, Ordering::SeqCst);
        self.gap_micros.store(0, Ordering::SeqCst);
        *self.first.lock().expect("lock") = None;
        self.answered.lock().expect("lock").clear();
    }
}

/// The stand-in OpenAI-compatible endpoint: answers every chat completion
/// after `delay`, a verdict to judge prompts and a sentence otherwise.
async fn endpoint(delay: Duration, calls: Arc<Calls>) -> String {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(move |axum::Json(body): axum::Json<Value>| {
            let calls = calls.clone();
            async move {
                let arrived = Instant::now();
                calls.first.lock().expect("lock").get_or_insert(arrived);
                let now = calls.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                calls.max_in_flight.fetch_max(now, Ordering::SeqCst);
                let message = |role: &str| {
                    body["messages"]
                        .as_array()
                        .and_then(|m| m.iter().find(|m| m["role"] == role))
                        .and_then(|m| m["content"].as_str())
                        .unwrap_or_default()
                };
                let item = question(message("user"));
                let judged = message("system").starts_with(JUDGE_PROMPT);
                let content = if judged {
                    calls.judge.fetch_add(1, Ordering::Relaxed);
                    let answered =
                        item.and_then(|q| calls.answered.lock().expect("lock").remove(&q));
                    if let Some(answered) = answered {
                        calls.gap_micros.fetch_add(
                            arrived.duration_since(answered).as_micros() as u64,
                            Ordering::Relaxed,
                        );
                    }
                    json!({"score": VERDICT_SCORE, "label": "pass",
                           "reasoning": "Agrees with the reference in substance."})
                    .to_string()
                } else {
                    calls.model.fetch_add(1, Ordering::Relaxed);
                    "Paris is the capital of France.".to_owned()
                };
                tokio::time::sleep(delay).await;
                if let (false, Some(q)) = (judged, item) {
                    calls
                        .answered
                        .lock()
                        .expect("lock")
                        .insert(q, Instant::now());
                }
                calls.in_flight.fetch_sub(1, Ordering::SeqCst);
                calls
                    .busy_micros
                    .fetch_add(arrived.elapsed().as_micros() as u64, Ordering::Relaxed);
                axum::Json(json!({
                    "id": "chatcmpl-bench",
                    "object": "chat.completion",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": content}}],
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the stand-in endpoint");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/v1")
}

fn trace(i: usize) -> Value {
    json!({
        "id": uuid::Uuid::now_v7().to_string(),
        "name": "chat.reply",
        "input": format!("Question {i}: what is the capital of France, and why is it there?"),
        "output": format!("Paris, answer {i}: it grew around an island in the Seine."),
        "model": "gpt-4o-mini",
        "spans": [{"name": "llm", "type": "llm", "model": "gpt-4o-mini",
                   "prompt_tokens": 20, "completion_tokens": 12}],
    })
}

async fn send(request: reqwest::RequestBuilder, what: &str) -> Value {
    let resp = request
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{what}: {status} {body}");
    body
}

/// Ingests `n` traces, makes a dataset of all of them and a version;
/// returns the dataset's and the version's ids.
async fn prepare(base: &str, n: usize) -> (String, String) {
    let http = http_client();
    let started = Instant::now();
    let mut ids = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(INGEST_BATCH) {
        let traces: Vec<Value> = chunk.iter().map(|&i| trace(i)).collect();
        ids.extend(
            traces
                .iter()
                .map(|t| t["id"].as_str().unwrap_or_default().to_owned()),
        );
        let body = send(
            http.post(format!("{base}/v1/ingest/batch"))
                .json(&json!({ "traces": traces })),
            "ingest",
        )
        .await;
        assert_eq!(body["ingested"], chunk.len(), "{body}");
    }
    println!(
        "  ingest: {n} traces in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let dataset = send(
        http.post(format!("{base}/v1/datasets"))
            .json(&json!({"name": "bench questions"})),
        "create the dataset",
    )
    .await;
    let dataset = dataset["id"].as_str().expect("dataset id").to_owned();

    let started = Instant::now();
    let ids = Arc::new(ids);
    let mut tasks = Vec::new();
    for c in 0..ADD_CLIENTS {
        let (base, ids, dataset) = (base.to_owned(), ids.clone(), dataset.clone());
        tasks.push(tokio::spawn(async move {
            let http = http_client();
            for i in (c..ids.len()).step_by(ADD_CLIENTS) {
                let resp = http
                    .post(format!("{base}/v1/datasets/{dataset}/items"))
                    .bearer_auth(API_KEY)
                    .json(&json!({"trace_id": ids[i], "label": "pass"}))
                    .send()
                    .await
                    .expect("add an item");
                assert_eq!(resp.status().as_u16(), 201, "add an item");
            }
        }));
    }
    for task in tasks {
        task.await.expect("adding client");
    }
    let took = started.elapsed();
    let got = send(
        http.get(format!("{base}/v1/datasets/{dataset}")),
        "the dataset",
    )
    .await;
    assert_eq!(got["item_count"], n, "{got}");
    println!(
        "  dataset: {n} items added one request each by {ADD_CLIENTS} clients in {:.1} s \
         ({:.0} items/s)",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );

    let version = send(
        http.post(format!("{base}/v1/datasets/{dataset}/versions"))
            .json(
                &json!({"name": "bench", "system_prompt": "Answer in one sentence.",
                          "model": "bench-model", "judge_model": "bench-judge"}),
            ),
        "create the version",
    )
    .await;
    (
        dataset,
        version["id"].as_str().expect("version id").to_owned(),
    )
}

/// What one run came to.
struct Measured {
    run_concurrency: usize,
    tenant_concurrency: usize,
    items: usize,
    /// From the run's `created_at` to its `completed_at`, as the server
    /// recorded them.
    wall: Duration,
    /// From before the schedule request to the poll that saw the run finished.
    seen: Duration,
    first_call_after: Duration,
    endpoint_micros_per_item: f64,
    /// From the model's answer to the judge call, per item.
    gap_micros_per_item: f64,
    mean_in_flight: f64,
    max_in_flight: i64,
    cpu_ms_per_item: f64,
    writer_cpu_ms_per_item: f64,
}

impl Measured {
    fn concurrency(&self) -> usize {
        self.run_concurrency.min(self.tenant_concurrency).min(64)
    }
    fn items_per_second(&self) -> f64 {
        self.items as f64 / self.wall.as_secs_f64()
    }
    /// Slot time per item, in ms.
    fn slot_ms(&self) -> f64 {
        self.wall.as_secs_f64() * 1000.0 * self.concurrency() as f64 / self.items as f64
    }
    fn endpoint_ms(&self) -> f64 {
        self.endpoint_micros_per_item / 1000.0
    }
    fn overhead_ms(&self) -> f64 {
        self.slot_ms() - self.endpoint_ms()
    }
    fn ideal_per_second(&self) -> f64 {
        self.concurrency() as f64 * 1000.0 / self.endpoint_ms()
    }
}

async fn run_once(
    server: &Server,
    dataset: &str,
    version: &str,
    n: usize,
    calls: &Calls,
    limit: Duration,
) -> Result<(Duration, Duration, Duration), String> {
    let http = http_client();
    let base = &server.base;
    calls.reset();
    let started = Instant::now();
    let run = send(
        http.post(format!("{base}/v1/datasets/{dataset}/runs"))
            .json(&json!({"eval_version_id": version})),
        "schedule the run",
    )
    .await;
    let id = run["id"].as_str().expect("run id").to_owned();
    let run = loop {
        let run = send(http.get(format!("{base}/v1/eval-runs/{id}")), "the run").await;
        if matches!(
            run["status"].as_str(),
            Some("completed" | "failed" | "cancelled")
        ) {
            break run;
        }
        if started.elapsed() > limit {
            let _ = http
                .post(format!("{base}/v1/eval-runs/{id}/cancel"))
                .bearer_auth(API_KEY)
                .send()
                .await;
            return Err(format!(
                "the run had not finished after {} s: {run}",
                limit.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let seen = started.elapsed();
    if run["status"] != "completed" || run["completed_count"] != n || run["failed_count"] != 0 {
        return Err(format!("the run did not complete every item: {run}"));
    }
    let mean = run["mean_score"].as_f64().unwrap_or(-1.0);
    if (mean - VERDICT_SCORE).abs() > 1e-9 {
        return Err(format!("mean score {mean}, not {VERDICT_SCORE}: {run}"));
    }
    let (model, judge) = (
        calls.model.load(Ordering::SeqCst),
        calls.judge.load(Ordering::SeqCst),
    );
    if model != n as u64 || judge != n as u64 {
        return Err(format!(
            "{model} model and {judge} judge calls for {n} items: each is asked once"
        ));
    }
    let at = |field: &str| {
        run[field]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    };
    let wall = match (at("created_at"), at("completed_at")) {
        (Some(a), Some(b)) => (b - a).to_std().unwrap_or(seen),
        _ => return Err(format!("no created_at or completed_at: {run}")),
    };
    let first = calls
        .first
        .lock()
        .expect("lock")
        .map(|f| f.duration_since(started))
        .unwrap_or_default();
    Ok((wall, seen, first))
}

fn main() {
    let n: usize = env_or("BENCH_RUN_ITEMS", 10_000);
    let delay = Duration::from_millis(env_or("BENCH_ENDPOINT_DELAY_MS", 50));
    let limit = Duration::from_secs(env_or("BENCH_RUN_MAX_SECONDS", 600));
    let settings: Vec<(usize, usize)> = std::env::var("BENCH_RUN_SETTINGS")
        .unwrap_or_else(|_| "4/8,32/32".into())
        .split(',')
        .filter_map(|pair| {
            let (run, tenant) = pair.trim().split_once('/')?;
            Some((run.trim().parse().ok()?, tenant.trim().parse().ok()?))
        })
        .collect();
    assert!(
        !settings.is_empty(),
        "BENCH_RUN_SETTINGS: pairs like 4/8,32/32"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let calls = Arc::new(Calls::default());
    let url = runtime.block_on(endpoint(delay, calls.clone()));
    let root = tempfile::tempdir().expect("temporary directory");
    let data = root.path().join("data");
    println!(
        "dataset runs: {n} items, a stand-in endpoint answering in {} ms, model and judge \
         calls per item",
        delay.as_millis()
    );

    let max_items = n.max(10_000).to_string();
    let mut prepared: Option<(String, String)> = None;
    let mut results = Vec::new();
    for (i, &(run_c, tenant_c)) in settings.iter().enumerate() {
        let (run_s, tenant_s) = (run_c.to_string(), tenant_c.to_string());
        let server = Server::start_with(
            &data,
            root.path().join(format!("server-{i}.log")),
            &[
                ("TRULAYER_EVAL__RUN_CONCURRENCY", &run_s),
                ("TRULAYER_EVAL__TENANT_RUN_CONCURRENCY", &tenant_s),
                ("TRULAYER_EVAL__MAX_RUN_ITEMS", &max_items),
                ("TRULAYER_EVAL__JUDGE__PROVIDER", "openai"),
                ("TRULAYER_EVAL__JUDGE__BASE_URL", &url),
                ("TRULAYER_EVAL__JUDGE__MODEL", "bench-judge"),
            ],
        );
        let (dataset, version) = match &prepared {
            Some(p) => p.clone(),
            None => {
                let p = runtime.block_on(prepare(&server.base, n));
                prepared = Some(p.clone());
                p
            }
        };
        let (cpu, writer) = (server.cpu_seconds(), server.writer_cpu_seconds());
        let outcome = runtime.block_on(run_once(&server, &dataset, &version, n, &calls, limit));
        let (cpu, writer) = (
            server.cpu_seconds() - cpu,
            server.writer_cpu_seconds() - writer,
        );
        let (wall, seen, first_call_after) = match outcome {
            Ok(times) => times,
            Err(e) => panic!("{e}\nserver log:\n{}", log_tail(&server.log)),
        };
        let busy = calls.busy_micros.load(Ordering::SeqCst) as f64;
        let m = Measured {
            run_concurrency: run_c,
            tenant_concurrency: tenant_c,
            items: n,
            wall,
            seen,
            first_call_after,
            endpoint_micros_per_item: busy / n as f64,
            gap_micros_per_item: calls.gap_micros.load(Ordering::SeqCst) as f64 / n as f64,
            mean_in_flight: busy / 1e6 / wall.as_secs_f64(),
            max_in_flight: calls.max_in_flight.load(Ordering::SeqCst),
            cpu_ms_per_item: cpu * 1000.0 / n as f64,
            writer_cpu_ms_per_item: writer * 1000.0 / n as f64,
        };
        assert!(
            m.max_in_flight as usize <= m.concurrency(),
            "{} calls at once with run_concurrency {run_c} and tenant_run_concurrency {tenant_c}",
            m.max_in_flight
        );
        println!(
            "  {run_c}/{tenant_c}: {n} items in {:.1} s (seen finished after {:.1} s) = {:.1} items/s, \
             ideal {:.1} ({:.0}%); slot time per item {:.1} ms = endpoint {:.1} ms + server \
             overhead {:.1} ms ({:.1} ms from the model's answer to the judge call, {:.1} ms \
             from the judge's answer to the next item's model call); endpoint calls at once: \
             mean {:.2}, max {}; first call {:.0} ms after scheduling; server CPU {:.2} ms per \
             item (writer thread {:.2})",
            wall.as_secs_f64(),
            m.seen.as_secs_f64(),
            m.items_per_second(),
            m.ideal_per_second(),
            100.0 * m.items_per_second() / m.ideal_per_second(),
            m.slot_ms(),
            m.endpoint_ms(),
            m.overhead_ms(),
            m.gap_micros_per_item / 1000.0,
            m.overhead_ms() - m.gap_micros_per_item / 1000.0,
            m.mean_in_flight,
            m.max_in_flight,
            m.first_call_after.as_secs_f64() * 1000.0,
            m.cpu_ms_per_item,
            m.writer_cpu_ms_per_item,
        );
        results.push(m);
        drop(server);
    }

    println!();
    println!(
        "| run / tenant concurrency | items/s | ideal | wall | overhead per item | \
         mean calls at once | server CPU per item |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for m in &results {
        println!(
            "| {} / {} | {:.1} | {:.1} | {:.1} s | {:.1} ms | {:.2} of {} | {:.2} ms |",
            m.run_concurrency,
            m.tenant_concurrency,
            m.items_per_second(),
            m.ideal_per_second(),
            m.wall.as_secs_f64(),
            m.overhead_ms(),
            m.mean_in_flight,
            m.concurrency(),
            m.cpu_ms_per_item,
        );
    }
}
