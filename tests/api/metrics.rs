//! `GET /v1/metrics` agrees with a direct computation over the stored
//! traces, for several windows (aligned to minutes or not), projects, an
//! empty window, time buckets, and traces merged from split OTLP requests.

use serde_json::{json, Value};

use crate::common::TestServer;

/// 2026-03-01T00:00:00Z in microseconds.
const T0: i64 = 1_772_323_200_000_000;

fn rfc3339(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .expect("time")
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Deterministic traces over three hours, in two projects.
fn traces() -> Vec<Value> {
    let models = ["gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet", "my-model"];
    (0..240i64)
        .map(|i| {
            // Spread unevenly, some on minute boundaries.
            let start = T0 + (i * i * 7_919 % 10_800) * 1_000_000 + (i % 3) * 333_333;
            let latency = 20 + (i * 37 % 900) + if i % 11 == 0 { 9_000 } else { 0 };
            json!({
                "name": format!("t{i}"),
                "project_id": if i % 4 == 0 { "second" } else { "default" },
                "started_at": rfc3339(start),
                "ended_at": rfc3339(start + latency * 1_000),
                "error": if i % 9 == 0 { json!("boom") } else { Value::Null },
                "spans": [{"name": "llm", "type": "llm", "model": models[i as usize % 4],
                           "prompt_tokens": 10 + i, "completion_tokens": i % 7}]
            })
        })
        .collect()
}

/// Nearest-rank quantile of the stored latencies.
fn quantile(values: &mut [i64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1] as f64)
}

/// What the metrics must say about `traces` (stored, as the list returns them).
fn expected(traces: &[&Value]) -> Value {
    let n = traces.len() as i64;
    let errors = traces.iter().filter(|t| !t["error"].is_null()).count() as i64;
    let cost: f64 = traces.iter().filter_map(|t| t["cost"].as_f64()).sum();
    let tokens: i64 = traces
        .iter()
        .map(|t| t["total_token_count"].as_i64().expect("tokens"))
        .sum();
    let mut latencies: Vec<i64> = traces
        .iter()
        .filter_map(|t| t["latency_ms"].as_i64())
        .collect();
    json!({
        "total_traces": n,
        "error_count": errors,
        "error_rate": (n > 0).then(|| errors as f64 / n as f64),
        "total_cost": cost,
        "total_tokens": tokens,
        "p50": quantile(&mut latencies, 0.50),
        "p95": quantile(&mut latencies, 0.95),
        "p99": quantile(&mut latencies, 0.99),
    })
}

fn assert_agrees(got: &Value, want: &Value, what: &str) {
    for key in ["total_traces", "error_count", "total_tokens"] {
        assert_eq!(got[key], want[key], "{what}: {key}");
    }
    // JSON floats may come back one unit in the last place apart.
    match (got["error_rate"].as_f64(), want["error_rate"].as_f64()) {
        (None, None) => {}
        (Some(g), Some(w)) => assert!((g - w).abs() < 1e-12, "{what}: error_rate {g} vs {w}"),
        (g, w) => panic!("{what}: error_rate {g:?} vs {w:?}"),
    }
    let (g, w) = (
        got["total_cost"].as_f64().expect("cost"),
        want["total_cost"].as_f64().expect("cost"),
    );
    assert!(
        (g - w).abs() <= 1e-9 * w.max(1.0),
        "{what}: cost {g} vs {w}"
    );
    for (key, q) in [
        ("p50_latency_ms", "p50"),
        ("p95_latency_ms", "p95"),
        ("p99_latency_ms", "p99"),
    ] {
        match (got[key].as_f64(), want[q].as_f64()) {
            (None, None) => {}
            (Some(g), Some(w)) => assert!(
                (g - w).abs() <= w * 0.01 + 1e-9,
                "{what}: {key} {g} vs exact {w}"
            ),
            (g, w) => panic!("{what}: {key} {g:?} vs {w:?}"),
        }
    }
}

async fn stored(server: &TestServer) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/v1/traces?limit=200".to_string();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = server.get_json(&path).await;
        all.extend(page["traces"].as_array().expect("traces").iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return all,
        }
    }
}

fn micros(t: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(t["started_at"].as_str().expect("started_at"))
        .expect("time")
        .timestamp_micros()
}

#[tokio::test]
async fn metrics_agree_with_a_full_scan() {
    let server = TestServer::start().await;
    let store = server.running().store().clone();
    let second = store
        .create_project(
            1,
            "second".into(),
            trulayer_server::store::Actor::operator(),
        )
        .await
        .expect("project");
    for chunk in traces().chunks(100) {
        let resp = server
            .post("/v1/ingest/batch", &json!({"traces": chunk}))
            .await;
        assert_eq!(resp.status().as_u16(), 201);
    }
    // A trace merged from two OTLP requests: its rollup must follow the merge.
    let span = |id: &str, parent: Option<&str>, start_s: i64, end_s: i64| {
        let mut s = json!({"traceId": "7b8efff798038103d269b633813fc60c", "spanId": id,
            "name": id, "startTimeUnixNano": ((T0 / 1_000_000 + start_s) * 1_000_000_000).to_string(),
            "endTimeUnixNano": ((T0 / 1_000_000 + end_s) * 1_000_000_000).to_string()});
        if let Some(p) = parent {
            s["parentSpanId"] = json!(p);
            s["status"] = json!({"code": 2, "message": "child failed"});
        }
        s
    };
    for spans in [
        vec![span(
            "00000000000000b2",
            Some("00000000000000b1"),
            3_700,
            3_705,
        )],
        vec![span("00000000000000b1", None, 3_600, 3_720)],
    ] {
        let resp = server
            .post(
                "/v1/otlp/traces",
                &json!({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}),
            )
            .await;
        assert_eq!(resp.status().as_u16(), 200);
    }
    // Feedback: two good, one bad.
    let all = stored(&server).await;
    for (t, label) in all.iter().take(3).zip(["good", "bad", "good"]) {
        let resp = server
            .post(
                "/v1/feedback",
                &json!({"trace_id": t["id"], "label": label}),
            )
            .await;
        assert_eq!(resp.status().as_u16(), 201);
    }
    assert_eq!(all.len(), 241);

    let windows = [
        (T0 - 60_000_000, T0 + 4 * 3_600_000_000, "everything"),
        (T0, T0 + 3_600_000_000 - 1, "the first hour, minute-aligned"),
        (
            T0 + 30_500_000,
            T0 + 95 * 60_000_000 + 12_300_000,
            "unaligned edges",
        ),
        (T0 + 61_000_000, T0 + 61_000_010, "inside one minute"),
        (T0 - 86_400_000_000, T0 - 3_600_000_000, "before any trace"),
    ];
    for (from, to, what) in windows {
        for project in [None, Some(second.uuid.as_str())] {
            let mut path = format!("/v1/metrics?from={}&to={}", rfc3339(from), rfc3339(to));
            if let Some(p) = project {
                path.push_str(&format!("&project_id={p}"));
            }
            let got = server.get_json(&path).await;
            let want: Vec<&Value> = all
                .iter()
                .filter(|t| (from..=to).contains(&micros(t)))
                .filter(|t| project.is_none_or(|p| t["project_id"] == p))
                .collect();
            assert_agrees(
                &got,
                &expected(&want),
                &format!("{what}, project {project:?}"),
            );
        }
    }

    // Everything, with hourly buckets that add up and a per-model split.
    let path = format!(
        "/v1/metrics?from={}&to={}&interval=1h",
        rfc3339(T0),
        rfc3339(T0 + 4 * 3_600_000_000)
    );
    let got = server.get_json(&path).await;
    let buckets = got["buckets"].as_array().expect("buckets");
    for b in buckets {
        let start = micros(&json!({"started_at": b["start"]}));
        let want: Vec<&Value> = all
            .iter()
            .filter(|t| (start..start + 3_600_000_000).contains(&micros(t)))
            .collect();
        assert_agrees(b, &expected(&want), "an hourly bucket");
    }
    let in_buckets: i64 = buckets
        .iter()
        .map(|b| b["total_traces"].as_i64().expect("n"))
        .sum();
    assert_eq!(in_buckets, 241);
    let models = got["models"].as_array().expect("models");
    let gpt4o = models
        .iter()
        .find(|m| m["model"] == "gpt-4o")
        .expect("gpt-4o row");
    let want = all.iter().filter(|t| t["model"] == "gpt-4o").count() as i64;
    assert_eq!(gpt4o["traces"], want);
    assert!((got["feedback_good_rate"].as_f64().expect("rate") - 2.0 / 3.0).abs() < 1e-12);

    // Defaults: the last 24 hours (none of these traces), null rates.
    let got = server.get_json("/v1/metrics").await;
    assert_eq!(got["total_traces"], 0);
    assert_eq!(got["error_rate"], Value::Null);
    assert_eq!(got["p50_latency_ms"], Value::Null);
    assert_eq!(got["feedback_good_rate"], Value::Null);
}

#[tokio::test]
async fn rollups_survive_a_restart_and_bad_parameters_are_named() {
    let server = TestServer::start().await;
    let resp = server
        .post(
            "/v1/ingest/batch",
            &json!({"traces": traces()[..50].to_vec()}),
        )
        .await;
    assert_eq!(resp.status().as_u16(), 201);
    let server = server.restart().await;
    let path = format!(
        "/v1/metrics?from={}&to={}",
        rfc3339(T0),
        rfc3339(T0 + 4 * 3_600_000_000)
    );
    let got = server.get_json(&path).await;
    let all = stored(&server).await;
    let want: Vec<&Value> = all.iter().collect();
    assert_agrees(&got, &expected(&want), "after a restart");
    for (query, name) in [
        ("interval=5m", "interval"),
        ("from=yesterday", "from"),
        ("project_id=nope", "project"),
    ] {
        let resp = server.get(&format!("/v1/metrics?{query}")).await;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.expect("JSON");
        assert!(status == 400 || status == 404, "{query}: {status}");
        assert!(
            body["error"].as_str().expect("error").contains(name),
            "{query}: {body}"
        );
    }
}

#[tokio::test]
async fn a_database_from_before_the_rollups_gets_them_built_on_upgrade() {
    let server = TestServer::start().await;
    let resp = server
        .post(
            "/v1/ingest/batch",
            &json!({"traces": traces()[..80].to_vec()}),
        )
        .await;
    assert_eq!(resp.status().as_u16(), 201);
    let dir_path = server.dir.path().to_path_buf();
    let running = server;
    // Stop, and turn the database back into schema 5: no rollups.
    let server = {
        let db = dir_path.join("data").join(trulayer_server::store::DB_FILE);
        let TestServer {
            running: r, dir, ..
        } = running;
        if let Some(r) = r {
            r.stop().await.expect("stop");
        }
        let conn = rusqlite::Connection::open(&db).expect("open");
        conn.execute_batch(
            "DROP TABLE late_spans;
             DROP TRIGGER trace_zones_insert; DROP TRIGGER trace_zones_update;
             DROP TABLE trace_zones;
             DROP TABLE text_dicts;
             DROP TRIGGER trace_docs_trace_update; DROP TRIGGER trace_docs_trace_delete;
             DROP TRIGGER trace_docs_span_insert; DROP TRIGGER trace_docs_span_update;
             DROP TRIGGER trace_docs_span_delete; DROP TABLE trace_docs_dirty;
             DROP TABLE trace_docs_state; DROP TABLE trace_docs;
             DROP TABLE ingest_health_hour; DROP TABLE ingest_refusals_hour;
             DROP INDEX evaluations_failed; DROP TABLE eval_keys;
             DROP TABLE failure_hours; DROP TABLE failure_clusters;
             DROP INDEX traces_failure_type; DROP INDEX traces_failure_cluster;
             DROP INDEX traces_failing;
             ALTER TABLE traces DROP COLUMN failure_type;
             ALTER TABLE traces DROP COLUMN error_fingerprint;
             DROP TABLE anomalies; DROP TABLE failure_rules;
             DROP TABLE dsr_requests; DROP TABLE webhook_deliveries; DROP TABLE webhooks;
             DROP TABLE saved_filters; DROP TABLE subprocessor_subscribers;
             DROP TABLE api_key_creators;
             DROP TABLE run_scores; DROP TABLE run_items; DROP TABLE eval_runs;
             DROP TABLE eval_versions; DROP TABLE dataset_items; DROP TABLE datasets;
             ALTER TABLE projects DROP COLUMN updated_at;
             DROP TRIGGER session_lookup_update; DROP TRIGGER session_lookup_delete;
             DROP TABLE session_stats; DROP TABLE session_lookup; DROP TABLE session_pending;
             CREATE INDEX traces_session ON traces(tenant_id, session_id, started_at)
                 WHERE session_id IS NOT NULL;
             DROP TRIGGER tag_lookup_insert; DROP TRIGGER tag_lookup_update;
             DROP TRIGGER tag_lookup_delete; DROP TABLE tag_lookup; DROP TABLE lookup_state;
             CREATE INDEX trace_tags_lookup ON trace_tags(tenant_id, key, value, started_at, trace_seq);
             DROP TABLE evaluations; DROP TABLE eval_rule_state; DROP TABLE eval_rules;
             ALTER TABLE usage DROP COLUMN evals;
             DROP TABLE metrics_minute; DROP TABLE metrics_second; DROP INDEX feedback_by_tenant;
             PRAGMA user_version = 5;",
        )
        .expect("downgrade");
        drop(conn);
        let config = dir.path().join("trulayer.toml");
        TestServer::start_in(dir, &config).await
    };
    let path = format!(
        "/v1/metrics?from={}&to={}",
        rfc3339(T0),
        rfc3339(T0 + 4 * 3_600_000_000)
    );
    let got = server.get_json(&path).await;
    let all = stored(&server).await;
    assert_eq!(all.len(), 80);
    let want: Vec<&Value> = all.iter().collect();
    assert_agrees(&got, &expected(&want), "rollups rebuilt on upgrade");
    // The failures of traces stored before they were clustered are too.
    let clusters = server
        .get_json(&format!(
            "/v1/failures/clusters?from={}&to={}",
            rfc3339(T0),
            rfc3339(T0 + 4 * 3_600_000_000)
        ))
        .await;
    let failing = all.iter().filter(|t| !t["error"].is_null()).count();
    assert_eq!(
        clusters["clusters"],
        json!([{
            "error_message": "boom",
            "count": failing,
            "first_seen": clusters["clusters"][0]["first_seen"],
            "last_seen": clusters["clusters"][0]["last_seen"],
            "sample_ids": clusters["clusters"][0]["sample_ids"],
            "example_message": "boom",
            "failure_type": null
        }]),
    );
    assert_eq!(
        clusters["clusters"][0]["sample_ids"]
            .as_array()
            .map(Vec::len),
        Some(5)
    );
}

#[tokio::test]
async fn absurd_numbers_are_refused_by_name_and_never_poison_the_totals() {
    let server = TestServer::start().await;
    let span = |field: &str, value: Value| {
        let mut s = json!({"name": "llm", "type": "llm", "model": "gpt-4o"});
        s[field] = value;
        s
    };
    for (field, value, named) in [
        ("cost", json!(1e308), "traces[0].spans[1].cost"),
        ("cost", json!(-0.5), "traces[0].spans[1].cost"),
        (
            "prompt_tokens",
            json!(4_000_000_000u64),
            "traces[0].spans[1].prompt_tokens",
        ),
        (
            "latency_ms",
            json!(1u64 << 62),
            "traces[0].spans[1].latency_ms",
        ),
    ] {
        let mut trace = crate::common::sample_trace("absurd");
        trace["spans"] = json!([span("cost", json!(0.25)), span(field, value)]);
        let resp = server
            .post("/v1/ingest/batch", &json!({"traces": [trace]}))
            .await;
        crate::common::expect_error_naming(resp, 422, &[named]).await;
    }
    let mut trace = crate::common::sample_trace("absurd trace cost");
    trace["cost"] = json!(1e308);
    let resp = server.post("/v1/ingest", &trace).await;
    crate::common::expect_error_naming(resp, 422, &["cost"]).await;

    // Two sane traces, then one made infinite behind the server's back, as
    // a database written before these bounds could hold.
    let mut costly = crate::common::sample_trace("costly");
    costly["spans"] = json!([span("cost", json!(1.5)), span("cost", json!(2.0))]);
    costly["started_at"] = json!("2026-03-01T11:00:00Z");
    costly["ended_at"] = json!("2026-03-01T11:00:02Z");
    server.ingest(costly).await;
    let poisoned = server.ingest(crate::common::sample_trace("poisoned")).await;
    let db = server.dir.path().join("data").join("trulayer.db");
    let conn = rusqlite::Connection::open(&db).expect("open the database");
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .expect("busy timeout");
    conn.execute("UPDATE traces SET cost = 1e999 WHERE id = ?1", [&poisoned])
        .expect("poison the trace");
    for table in ["metrics_minute", "metrics_second"] {
        conn.execute(
            &format!("UPDATE {table} SET cost = 1e999 WHERE cost < 1"),
            [],
        )
        .expect("poison the poisoned trace's rollups");
    }
    drop(conn);
    let metrics = server
        .get_json("/v1/metrics?from=2026-03-01T00:00:00Z&to=2026-03-02T00:00:00Z")
        .await;
    assert_eq!(metrics["total_cost"], json!(3.5), "{metrics}");
    let minute = server
        .get_json("/v1/metrics?from=2026-03-01T10:00:00.5Z&to=2026-03-01T10:00:01Z&interval=1m")
        .await;
    assert!(minute["total_cost"].is_number(), "{minute}");
    server.stop().await;
}
