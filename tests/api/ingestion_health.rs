//! `GET /v1/ingestion-health`: an organisation sees its own ingest as it
//! went: trace error rates and texts, requests accepted and refused by
//! code, ingest lag, the last span, its evaluation dead letters and
//! backlogs; by project and window, across a restart.

use chrono::{Duration as Span, SecondsFormat, Utc};
use serde_json::{json, Value};

use crate::common::{expect_error, expect_error_naming, sample_trace, TestServer};

const OTHER_KEY: &str = "tl_other_org_key_for_health_00001";

/// A trace that started `ago_s` seconds ago and ended a second later, with
/// an error when given.
fn recent(name: &str, ago_s: i64, error: Option<&str>) -> Value {
    let start = Utc::now() - Span::seconds(ago_s);
    let mut trace = sample_trace(name);
    trace["started_at"] = json!(start.to_rfc3339_opts(SecondsFormat::Millis, true));
    trace["ended_at"] =
        json!((start + Span::seconds(1)).to_rfc3339_opts(SecondsFormat::Millis, true));
    trace["spans"][0]["start_time"] = trace["started_at"].clone();
    trace["spans"][0]["end_time"] = trace["ended_at"].clone();
    if let Some(error) = error {
        trace["error"] = json!(error);
    }
    trace
}

async fn health(server: &TestServer, key: &str, query: &str) -> Value {
    server
        .get_json_as(key, &format!("/v1/ingestion-health{query}"))
        .await
}

#[tokio::test]
async fn an_organisation_sees_its_ingest_requests_errors_lag_and_backlogs() {
    let server = TestServer::start().await;
    server.other_tenant(OTHER_KEY).await;
    let key = server.key.clone();

    // Nothing yet: a healthy, empty report in the reference's shape.
    let empty = health(&server, &key, "").await;
    assert_eq!(empty["window"], "24h", "{empty}");
    assert_eq!(empty["success_rate"], 1.0);
    assert_eq!(empty["error_rate"], 0.0);
    assert_eq!(empty["top_errors"], json!([]));
    assert_eq!(empty["dlq_depth"], json!({"traces": 0, "evals": 0}));
    assert_eq!(
        empty["ingest_lag_ms"],
        json!({"p50": 0, "p95": 0, "p99": 0})
    );
    assert!(empty["last_successful_span_at"].is_null(), "{empty}");
    assert_eq!(empty["redaction_match_count"], 0);
    assert_eq!(empty["requests"]["accepted"], 0);
    assert_eq!(empty["requests"]["success_rate"], 1.0);
    assert!(empty.get("project_id").is_none(), "{empty}");

    // Four traces in a batch (two failing alike), one alone, sent ~30 s
    // after they ended; one refused batch; one trace over OTLP.
    let batch = json!({"traces": [
        recent("ok-1", 31, None),
        recent("ok-2", 31, None),
        recent("bad-1", 31, Some("upstream timeout after 3012 ms")),
        recent("bad-2", 31, Some("upstream timeout after 3012 ms")),
    ]});
    let resp = server.post("/v1/ingest/batch", &batch).await;
    assert_eq!(
        resp.status(),
        201,
        "{}",
        resp.text().await.unwrap_or_default()
    );
    server
        .ingest(recent("ok-3", 31, Some("tool crashed: KeyError 'city'")))
        .await;
    let mut invalid = recent("invalid", 5, None);
    invalid["started_at"] = json!("not a time");
    let resp = server
        .post("/v1/ingest/batch", &json!({"traces": [invalid]}))
        .await;
    let refused = expect_error(resp, 422).await;
    assert_eq!(refused["code"], "validation_error");
    let ended = (Utc::now() - Span::seconds(2))
        .timestamp_nanos_opt()
        .unwrap_or(0);
    let otlp = json!({"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": "4bf92f3577b34da6a3ce929d0e0e4736",
        "spanId": "00f067aa0ba902b7",
        "name": "otlp-run",
        "kind": 1,
        "startTimeUnixNano": (ended - 1_000_000_000).to_string(),
        "endTimeUnixNano": ended.to_string(),
    }]}]}]});
    let resp = server
        .client
        .post(server.url("/v1/otlp/traces"))
        .bearer_auth(&key)
        .json(&otlp)
        .send()
        .await
        .expect("otlp");
    assert_eq!(resp.status(), 200);

    let report = health(&server, &key, "").await;
    assert_eq!(report["traces_received"], 6, "{report}");
    assert_eq!(report["spans_received"], 6, "{report}");
    // Three of six traces failed.
    assert_eq!(report["error_rate"], 0.5, "{report}");
    assert_eq!(report["success_rate"], 0.5, "{report}");
    assert_eq!(
        report["top_errors"][0],
        json!({"category": "upstream timeout after <n> ms", "count": 2}),
        "{report}"
    );
    assert_eq!(report["top_errors"].as_array().map(Vec::len), Some(2));
    let requests = &report["requests"];
    assert_eq!(requests["accepted"], 3, "{report}");
    assert_eq!(requests["refused"], 1, "{report}");
    assert_eq!(
        requests["refused_by_code"],
        json!([{"code": "validation_error", "count": 1}])
    );
    assert_eq!(requests["success_rate"], 0.75);
    // The JSON traces waited ~30 s after they ended, the OTLP one ~2 s.
    let lag = &report["ingest_lag_ms"];
    let (p50, p99) = (
        lag["p50"].as_i64().unwrap_or(0),
        lag["p99"].as_i64().unwrap_or(0),
    );
    assert!((29_000..=40_000).contains(&p50), "{lag}");
    assert!(p99 >= p50, "{lag}");
    let last = report["last_successful_span_at"]
        .as_str()
        .expect("last span");
    let last: chrono::DateTime<Utc> = last.parse().expect("a time");
    assert!((Utc::now() - last).num_seconds() < 60, "{last}");

    // Another organisation sees none of it; neither does another project.
    let other = health(&server, OTHER_KEY, "").await;
    assert_eq!(other["traces_received"], 0, "{other}");
    assert_eq!(other["requests"]["accepted"], 0, "{other}");
    assert_eq!(other["top_errors"], json!([]));
    let owner = server.session_token().await;
    let resp = server
        .post_as(&owner, "/v1/projects", &json!({"name": "quiet"}))
        .await;
    assert_eq!(resp.status(), 201);
    let created: Value = resp.json().await.expect("project");
    let quiet = health(&server, &key, "?project_id=quiet&window=1h").await;
    assert_eq!(quiet["project_id"], created["id"], "{quiet}");
    assert_eq!(quiet["window"], "1h");
    assert_eq!(quiet["traces_received"], 0, "{quiet}");
    assert_eq!(quiet["error_rate"], 0.0);
    let default = health(&server, &key, "?project_id=default&window=7d").await;
    assert_eq!(default["traces_received"], 6, "{default}");
    expect_error(
        server
            .get("/v1/ingestion-health?project_id=no-such-project")
            .await,
        404,
    )
    .await;
    expect_error_naming(
        server.get("/v1/ingestion-health?window=2d").await,
        400,
        &["window"],
    )
    .await;

    // An evaluation that gives up is a dead letter (no judge is configured).
    let trace = server.ingest(recent("judged", 10, None)).await;
    let resp = server
        .post(
            "/v1/eval",
            &json!({"trace_id": trace, "evaluator_type": "llm", "metric_name": "tone",
                    "config": {"prompt": "Polite?"}}),
        )
        .await;
    assert_eq!(resp.status(), 202);
    let mut dead = 0;
    for _ in 0..200 {
        dead = health(&server, &key, "").await["dlq_depth"]["evals"]
            .as_i64()
            .unwrap_or(0);
        if dead == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(dead, 1);

    // Counts are written at a stop and read back after the restart.
    let server = server.restart().await;
    let after = health(&server, &key, "").await;
    assert_eq!(after["traces_received"], 7, "{after}");
    assert_eq!(after["requests"]["accepted"], 4, "{after}");
    assert_eq!(after["requests"]["refused"], 1, "{after}");
    assert_eq!(
        after["ingest_lag_ms"]["p50"],
        report["ingest_lag_ms"]["p50"]
    );
}

#[tokio::test]
async fn refusals_before_the_body_is_read_are_counted_by_code() {
    // A tiny rate: the third ingest request in a minute is refused.
    let server =
        TestServer::start_with("[plans.enterprise]\ningest_requests_per_minute = 2\n").await;
    for i in 0..3 {
        server
            .post("/v1/ingest", &recent(&format!("t{i}"), 3, None))
            .await;
    }
    let report = server.get_json("/v1/ingestion-health").await;
    assert_eq!(report["requests"]["accepted"], 2, "{report}");
    assert_eq!(
        report["requests"]["refused_by_code"],
        json!([{"code": "rate_limited", "count": 1}]),
        "{report}"
    );
    // Requests with no valid key belong to no organisation and are not counted.
    let resp = server
        .post_as(
            "tl_not_a_real_key_000000000000",
            "/v1/ingest",
            &recent("x", 1, None),
        )
        .await;
    assert_eq!(resp.status(), 401);
    let report = server.get_json("/v1/ingestion-health").await;
    assert_eq!(report["requests"]["refused"], 1, "{report}");
}
