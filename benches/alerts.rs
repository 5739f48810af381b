//! Alerts: drives the release-built `trulayer-server` over HTTP on
//! 127.0.0.1.
//!
//! 1. Ingest throughput with and without alerting work: each round starts
//!    a fresh server twice, once bare and once with 10 failure rules (every
//!    metric; some fire) and 5 webhooks subscribed to every alert event,
//!    their endpoints stand-ins inside this process on 127.0.0.1, and the
//!    rules evaluated every `BENCH_ALERT_INTERVAL_MS` (default 1000, fifteen
//!    times the default pace). Both runs have the built-in detector on (it
//!    is on by default). 8 clients post batches of 100 traces for
//!    `BENCH_SECONDS`; odd rounds run the alerting server first, so drift
//!    in the machine's load falls on both.
//! 2. `GET /v1/anomalies` at `BENCH_QUERY_TRACES` traces (default
//!    1,000,000, started over the last 24 hours, so the rollups and the
//!    detector's baselines are full) and `BENCH_ANOMALIES` anomalies
//!    (default 10,000, written into the stopped server's database, half
//!    recovered): the default page, filters, a deep offset, and one
//!    anomaly, `BENCH_QUERY_REQUESTS` timed requests each after 20 warm-up
//!    requests.
//!
//! `cargo bench --bench alerts`; `BENCH_ROUNDS` (default 4) rounds of phase 1.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod support;
use support::{http_client, log_tail, Server, API_KEY};

const CLIENTS: usize = 8;
const BATCH: usize = 100;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn rfc3339(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A trace as the SDK sends it: 5% errors, latency 200–1,200 ms.
fn trace(i: u64, start: i64) -> Value {
    let latency = 200_000 + (i * 7_919 % 1_000) as i64 * 1_000;
    json!({
        "id": uuid::Uuid::now_v7().to_string(),
        "name": "chat.reply",
        "input": format!("Question number {i}: what is the capital of France?"),
        "output": format!("Paris, answer {i}."),
        "started_at": rfc3339(start),
        "ended_at": rfc3339(start + latency),
        "error": if i.is_multiple_of(20) { json!("upstream 503") } else { Value::Null },
        "spans": [{"name": "llm", "type": "llm", "model": "gpt-4o-mini",
                   "prompt_tokens": 20, "completion_tokens": 5}],
    })
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// Posts batches from `CLIENTS` clients until `until`; `start_of` gives each
/// trace's start. Returns traces stored and batch latencies (ms).
async fn ingest_until(
    base: &str,
    until: Instant,
    limit: u64,
    start_of: fn(u64) -> i64,
) -> (u64, Vec<f64>) {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (base, next) = (base.to_owned(), next.clone());
        tasks.push(tokio::spawn(async move {
            let client = http_client();
            let mut stored = 0u64;
            let mut latencies = Vec::new();
            while Instant::now() < until {
                let first = next.fetch_add(BATCH as u64, Ordering::Relaxed);
                if first >= limit {
                    break;
                }
                let traces: Vec<Value> = (first..first + BATCH as u64)
                    .map(|i| trace(i, start_of(i)))
                    .collect();
                let sent = Instant::now();
                let resp = client
                    .post(format!("{base}/v1/ingest/batch"))
                    .bearer_auth(API_KEY)
                    .json(&json!({ "traces": traces }))
                    .send()
                    .await
                    .expect("ingest request");
                let status = resp.status();
                let body: Value = resp.json().await.unwrap_or(Value::Null);
                assert_eq!(status, 201, "ingest: {body}");
                latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                stored += body["ingested"].as_u64().unwrap_or(0);
            }
            (stored, latencies)
        }));
    }
    let mut stored = 0;
    let mut latencies = Vec::new();
    for task in tasks {
        let (s, l) = task.await.expect("client");
        stored += s;
        latencies.extend(l);
    }
    (stored, latencies)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Stand-in webhook endpoints: count what they get.
async fn endpoints(n: usize, got: Arc<AtomicU64>) -> Vec<String> {
    let mut urls = Vec::new();
    for _ in 0..n {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        urls.push(format!(
            "http://{}/hook",
            listener.local_addr().expect("address")
        ));
        let got = got.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move || {
                let got = got.clone();
                async move {
                    got.fetch_add(1, Ordering::Relaxed);
                    "ok"
                }
            }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
    }
    urls
}

/// The 10 rules: every metric, one project or all; the error-rate,
/// volume and latency ones fire under the load.
fn rules() -> Vec<Value> {
    let rule = |name: &str, metric: &str, op: &str, threshold: f64, window: i64| {
        json!({"name": name, "metric": metric, "operator": op, "threshold": threshold,
               "window_secs": window, "min_samples": 20})
    };
    vec![
        rule("errors above 1%", "error_rate", "gt", 0.01, 60),
        rule("errors above 50%", "error_rate", "gt", 0.5, 300),
        rule("p95 above 1 s", "latency_p95", "gt", 1000.0, 300),
        rule("p99 above 30 s", "latency_p99", "gt", 30_000.0, 300),
        rule("p50 above 10 s", "latency_p50", "gt", 10_000.0, 60),
        rule("cost above $1000", "cost", "gt", 1000.0, 3600),
        rule("busy", "volume", "gt", 1000.0, 60),
        rule("silent", "volume", "lt", 1.0, 300),
        rule("scores low", "score", "lt", 0.5, 3600),
        {
            let mut r = rule("default errors", "error_rate", "gte", 0.02, 120);
            r["project_id"] = json!("default");
            r
        },
    ]
}

async fn setup_alerts(base: &str, urls: &[String]) {
    let client = http_client();
    for url in urls {
        let resp = client
            .post(format!("{base}/v1/webhooks"))
            .bearer_auth(API_KEY)
            .json(&json!({"url": url, "secret": "whsec-bench-0123456789",
                          "events": ["failure.detected", "failure.recovered",
                                     "anomaly.detected", "anomaly.recovered"]}))
            .send()
            .await
            .expect("webhook");
        assert_eq!(resp.status(), 201, "webhook");
    }
    for rule in rules() {
        let resp = client
            .post(format!("{base}/v1/failure-rules"))
            .bearer_auth(API_KEY)
            .json(&rule)
            .send()
            .await
            .expect("rule");
        assert_eq!(resp.status(), 201, "rule {rule}");
    }
}

async fn count_anomalies(base: &str) -> usize {
    let client = http_client();
    let body: Value = client
        .get(format!("{base}/v1/anomalies?limit=100"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("anomalies")
        .json()
        .await
        .unwrap_or(Value::Null);
    body["anomalies"].as_array().map_or(0, Vec::len)
}

fn live_start(_: u64) -> i64 {
    now_micros() - 2_000_000
}

/// Phase 1: returns (bare, alerting) traces/s per round.
fn phase_ingest(runtime: &tokio::runtime::Runtime, root: &std::path::Path) -> Vec<(f64, f64)> {
    let seconds: u64 = env_or("BENCH_SECONDS", 20);
    let rounds: usize = env_or("BENCH_ROUNDS", 4);
    let interval: u64 = env_or("BENCH_ALERT_INTERVAL_MS", 1000);
    let got = Arc::new(AtomicU64::new(0));
    let urls = runtime.block_on(endpoints(5, got.clone()));
    let mut results = Vec::new();
    for round in 0..rounds {
        let mut pair = [0.0; 2];
        // Odd rounds run the alerting server first.
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for alerting in order {
            let k = usize::from(alerting);
            let dir = root.join(format!("ingest-{round}-{k}"));
            let interval_s = interval.to_string();
            let mut server = Server::start_with(
                &dir,
                root.join(format!("server-ingest-{round}-{k}.log")),
                &[("TRULAYER_ALERTS__INTERVAL_MS", &interval_s)],
            );
            if alerting {
                runtime.block_on(setup_alerts(&server.base, &urls));
            }
            let before = got.load(Ordering::Relaxed);
            // Two seconds of warm-up, then the measured window.
            runtime.block_on(ingest_until(
                &server.base,
                Instant::now() + Duration::from_secs(2),
                u64::MAX,
                live_start,
            ));
            let began = Instant::now();
            let (stored, mut latencies) = runtime.block_on(ingest_until(
                &server.base,
                began + Duration::from_secs(seconds),
                u64::MAX,
                live_start,
            ));
            let rate = stored as f64 / began.elapsed().as_secs_f64();
            latencies.sort_by(f64::total_cmp);
            // Let the last evaluations and deliveries land.
            std::thread::sleep(Duration::from_millis(interval * 2 + 500));
            let anomalies = runtime.block_on(count_anomalies(&server.base));
            let delivered = got.load(Ordering::Relaxed) - before;
            println!(
                "  round {} {:9}: {:>8.0} traces/s; batch p50 / p95 / p99 {:.1} / {:.1} / {:.1} ms; \
                 {anomalies} anomalies, {delivered} webhook deliveries",
                round + 1,
                if alerting { "alerting" } else { "bare" },
                rate,
                percentile(&latencies, 0.50),
                percentile(&latencies, 0.95),
                percentile(&latencies, 0.99),
            );
            if alerting {
                assert!(anomalies > 0, "the firing rules raised no anomaly");
                assert!(delivered > 0, "no webhook delivery arrived");
            }
            server.stop();
            pair[k] = rate;
        }
        results.push((pair[0], pair[1]));
    }
    results
}

fn fill_start(i: u64) -> i64 {
    // Spread over the last 24 hours, newest last.
    let total: u64 = env_or("BENCH_QUERY_TRACES", 1_000_000u64).max(1);
    let day = 86_400_000_000i64;
    now_micros() - day + (i.min(total) as i64 * (day / total as i64)) - 5_000_000
}

/// Writes `n` anomalies for the first project: mixed types, severities and
/// sources, half recovered, over the last week.
fn write_anomalies(db: &std::path::Path, n: usize) {
    let mut conn = rusqlite::Connection::open(db).expect("open the database");
    let (tenant, project): (i64, i64) = conn
        .query_row(
            "SELECT tenant_id, id FROM projects ORDER BY id LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("a project");
    let tx = conn.transaction().expect("transaction");
    {
        let mut insert = tx
            .prepare(
                "INSERT INTO anomalies (uuid, tenant_id, project_id, source, type, severity, \
                 description, metric, value, baseline, metadata, detected_at, recovered_at, \
                 created_at) VALUES (?1, ?2, ?3, 'builtin', ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?11)",
            )
            .expect("prepare");
        let kinds = [
            ("error_rate_spike", "error_rate"),
            ("latency_spike", "latency_p95"),
            ("cost_spike", "cost"),
            ("volume_anomaly", "volume"),
        ];
        let severities = ["low", "medium", "high", "critical"];
        let week = 7 * 86_400_000_000i64;
        let now = now_micros();
        for i in 0..n {
            let (kind, metric) = kinds[i % 4];
            let at = now - week + (i as i64) * (week / n as i64);
            insert
                .execute(rusqlite::params![
                    uuid::Uuid::now_v7().to_string(),
                    tenant,
                    project,
                    kind,
                    severities[i * 7 % 4],
                    format!("{metric} rose to {i} against a baseline median of 1"),
                    metric,
                    i as f64,
                    1.0,
                    json!({"window_secs": 300, "samples": 100, "method": "median_mad"}).to_string(),
                    at,
                    if i % 2 == 0 {
                        Some(at + 600_000_000)
                    } else {
                        None
                    },
                ])
                .expect("insert");
        }
    }
    tx.commit().expect("commit");
}

async fn time_gets(base: &str, path: &str, requests: usize) -> (f64, f64, f64) {
    let client = http_client();
    let url = format!("{base}{path}");
    let mut times = Vec::new();
    for i in 0..requests + 20 {
        let sent = Instant::now();
        let resp = client
            .get(&url)
            .bearer_auth(API_KEY)
            .send()
            .await
            .expect("request");
        let status = resp.status();
        let body = resp.bytes().await.expect("body");
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
        if i >= 20 {
            times.push(sent.elapsed().as_secs_f64() * 1000.0);
        }
    }
    times.sort_by(f64::total_cmp);
    (
        percentile(&times, 0.50),
        percentile(&times, 0.95),
        percentile(&times, 0.99),
    )
}

fn phase_queries(runtime: &tokio::runtime::Runtime, root: &std::path::Path) -> bool {
    let total: u64 = env_or("BENCH_QUERY_TRACES", 1_000_000);
    if total == 0 {
        return true;
    }
    let anomalies: usize = env_or("BENCH_ANOMALIES", 10_000);
    let requests: usize = env_or("BENCH_QUERY_REQUESTS", 300);
    let dir = root.join("queries");
    let mut server = Server::start(&dir, root.join("server-fill.log"));
    let began = Instant::now();
    let (stored, _) = runtime.block_on(ingest_until(
        &server.base,
        began + Duration::from_secs(900),
        total,
        fill_start,
    ));
    println!(
        "  fill: {stored} traces over the last 24 h in {:.0} s ({:.0} traces/s)",
        began.elapsed().as_secs_f64(),
        stored as f64 / began.elapsed().as_secs_f64()
    );
    server.stop();
    write_anomalies(&dir.join("trulayer.db"), anomalies);
    let mut server = Server::start_with(
        &dir,
        root.join("server-queries.log"),
        &[("TRULAYER_ALERTS__INTERVAL_MS", "1000")],
    );
    runtime.block_on(setup_alerts(&server.base, &[]));
    let one = runtime.block_on(async {
        let body: Value = http_client()
            .get(format!("{}/v1/anomalies?limit=1&offset=4000", server.base))
            .bearer_auth(API_KEY)
            .send()
            .await
            .expect("anomalies")
            .json()
            .await
            .expect("JSON");
        body["anomalies"][0]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    });
    let mut ok = true;
    for path in [
        "/v1/anomalies".to_owned(),
        "/v1/anomalies?limit=100".to_owned(),
        "/v1/anomalies?status=open".to_owned(),
        "/v1/anomalies?type=latency_spike&severity=high".to_owned(),
        "/v1/anomalies?project_id=default&source=builtin&limit=100".to_owned(),
        "/v1/anomalies?status=recovered&offset=2000&limit=100".to_owned(),
        "/v1/anomalies?offset=9900&limit=100".to_owned(),
        format!("/v1/anomalies/{one}"),
    ] {
        let (p50, p95, p99) = runtime.block_on(time_gets(&server.base, &path, requests));
        let pass = p95 <= 50.0;
        ok &= pass;
        println!(
            "  GET {path:60} p50 / p95 / p99 {p50:6.2} / {p95:6.2} / {p99:6.2} ms {}",
            if pass { "ok" } else { "OVER 50 ms" }
        );
    }
    if !ok {
        println!("{}", log_tail(&server.log));
    }
    server.stop();
    ok
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let root = tempfile::tempdir().expect("temporary directory");
    println!("alerts: ingest with 10 failure rules and 5 webhooks against none");
    let rounds = phase_ingest(&runtime, root.path());
    if !rounds.is_empty() {
        report_rounds(&rounds);
    }
    println!("alerts: anomaly queries");
    let ok = phase_queries(&runtime, root.path());
    assert!(ok, "an anomaly query's p95 is over 50 ms");
}

fn report_rounds(rounds: &[(f64, f64)]) {
    let bare: f64 = rounds.iter().map(|r| r.0).sum::<f64>() / rounds.len() as f64;
    let alerting: f64 = rounds.iter().map(|r| r.1).sum::<f64>() / rounds.len() as f64;
    let ratio = alerting / bare.max(1.0);
    println!(
        "  mean: bare {bare:.0} traces/s, alerting {alerting:.0} traces/s: {ratio:.3} × ({})",
        if ratio >= 0.9 {
            "ok, ≥ 0.9"
        } else {
            "UNDER 0.9"
        }
    );
}
