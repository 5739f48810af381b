//! Failure rules and anomalies against a real server: the operations and
//! their checks, isolation between organisations, a rule driven over its
//! threshold by real ingest (one anomaly and one webhook per episode,
//! through a restart, then the recovery), and the built-in detector
//! seeing an error and volume spike against a backfilled baseline.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{json, Value};

use crate::common::{expect_error, expect_error_naming, TestServer};

const OTHER_KEY: &str = "tl_other_0123456789abcdefghij";
const FAST: &str =
    "[alerts]\ninterval_ms = 100\ndetection = false\n[webhooks]\nretry_base_ms = 100\n";

fn rfc3339(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .expect("time")
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// A trace as the SDK sends it, started at `start` (microseconds).
fn trace(start: i64, error: bool) -> Value {
    json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "name": "answer",
        "input": "What is the capital of France?",
        "output": if error { Value::Null } else { json!("Paris.") },
        "started_at": rfc3339(start),
        "ended_at": rfc3339(start + 800_000),
        "error": if error { json!("upstream 503") } else { Value::Null },
        "spans": [{"name": "llm", "type": "llm", "model": "gpt-4o-mini",
                   "prompt_tokens": 12, "completion_tokens": 3}]
    })
}

async fn ingest(server: &TestServer, traces: Vec<Value>) {
    let n = traces.len();
    let resp = server
        .post("/v1/ingest/batch", &json!({ "traces": traces }))
        .await;
    let status = resp.status();
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["ingested"], n, "{body}");
}

async fn patch(server: &TestServer, key: &str, path: &str, body: &Value) -> reqwest::Response {
    server
        .client
        .patch(server.url(path))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .expect("sent")
}

async fn delete(server: &TestServer, key: &str, path: &str) -> reqwest::Response {
    server
        .client
        .delete(server.url(path))
        .bearer_auth(key)
        .send()
        .await
        .expect("sent")
}

async fn create_rule(server: &TestServer, body: Value) -> Value {
    let resp = server.post("/v1/failure-rules", &body).await;
    let status = resp.status();
    let rule: Value = resp.json().await.expect("JSON");
    assert_eq!(status, 201, "{rule}");
    rule
}

/// Polls `path` until `done` holds for its JSON, within `within`.
async fn wait_until(
    server: &TestServer,
    path: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let body = server.get_json(path).await;
        if done(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{path} never matched: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A webhook endpoint on loopback that keeps what it gets.
#[derive(Clone, Default)]
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<(String, Value)>>>,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let event = headers
        .get("x-trulayer-event")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    r.got.lock().expect("lock").push((event, body));
    StatusCode::OK
}

async fn receiver() -> Receiver {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let r = Receiver {
        url: format!("http://{}/hook", listener.local_addr().expect("addr")),
        ..Receiver::default()
    };
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(r.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    r
}

impl Receiver {
    fn events(&self, kind: &str) -> Vec<Value> {
        self.got
            .lock()
            .expect("lock")
            .iter()
            .filter(|(e, _)| e == kind)
            .map(|(_, b)| b.clone())
            .collect()
    }

    async fn wait_for(&self, kind: &str, count: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let got = self.events(kind);
            if got.len() >= count {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{count} {kind} events expected, {} came",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn rules_are_created_read_changed_deleted_and_checked() {
    let server = TestServer::start_with("[alerts]\nmax_rules = 3\n").await;
    let rule = create_rule(
        &server,
        json!({"name": "errors", "metric": "error_rate", "operator": "gt", "threshold": 0.05}),
    )
    .await;
    let id = rule["id"].as_str().expect("id").to_owned();
    // The reference's defaults, and the state.
    assert_eq!(rule["window_secs"], 300, "{rule}");
    assert_eq!(rule["severity"], "medium");
    assert_eq!(rule["enabled"], true);
    assert_eq!(rule["state"], "ok");
    assert_eq!(rule["project_id"], Value::Null);
    assert_eq!(rule["min_samples"], 1);
    assert!(rule["tenant_id"].is_string() && rule["created_at"].is_string());

    let got = server.get_json(&format!("/v1/failure-rules/{id}")).await;
    assert_eq!(got, rule);
    let list = server.get_json("/v1/failure-rules").await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");

    // One project, a score metric, every field given.
    let scored = create_rule(
        &server,
        json!({"name": "helpfulness", "metric": "score", "operator": "lt", "threshold": 0.6,
               "window_secs": 3600, "severity": "critical", "enabled": false,
               "project_id": "default", "min_samples": 10, "score_metric": "helpfulness"}),
    )
    .await;
    assert_eq!(scored["severity"], "critical");
    assert_eq!(scored["enabled"], false);
    assert!(scored["project_id"].is_string(), "{scored}");
    assert_eq!(scored["score_metric"], "helpfulness");

    // A partial change leaves the rest; null clears the project.
    let resp = patch(
        &server,
        &server.key,
        &format!("/v1/failure-rules/{}", scored["id"].as_str().expect("id")),
        &json!({"threshold": 0.5, "project_id": null, "enabled": true}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let changed: Value = resp.json().await.expect("JSON");
    assert_eq!(changed["threshold"], 0.5);
    assert_eq!(changed["project_id"], Value::Null);
    assert_eq!(changed["enabled"], true);
    assert_eq!(changed["score_metric"], "helpfulness");
    assert_eq!(changed["name"], "helpfulness");

    // What does not fit is a 400 naming the field.
    let base = json!({"name": "x", "metric": "error_rate", "operator": "gt", "threshold": 0.5});
    for (change, field) in [
        (json!({"metric": "happiness"}), "metric"),
        (json!({"operator": "eq"}), "operator"),
        (json!({"severity": "urgent"}), "severity"),
        (json!({"window_secs": 5}), "window_secs"),
        (json!({"window_secs": 900_000}), "window_secs"),
        (json!({"threshold": 1.5}), "threshold"),
        (json!({"name": "  "}), "name"),
        (json!({"min_samples": 0}), "min_samples"),
    ] {
        let mut body = base.clone();
        for (k, v) in change.as_object().expect("object") {
            body[k] = v.clone();
        }
        expect_error_naming(server.post("/v1/failure-rules", &body).await, 400, &[field]).await;
        expect_error_naming(
            patch(
                &server,
                &server.key,
                &format!("/v1/failure-rules/{id}"),
                &change,
            )
            .await,
            400,
            &[field],
        )
        .await;
    }
    // A missing or mistyped field is a 422; an unknown project a 404.
    expect_error(
        server
            .post(
                "/v1/failure-rules",
                &json!({"name": "x", "metric": "volume", "operator": "gt"}),
            )
            .await,
        422,
    )
    .await;
    let mut unknown = base.clone();
    unknown["project_id"] = json!("nowhere");
    expect_error(server.post("/v1/failure-rules", &unknown).await, 404).await;
    expect_error(server.get("/v1/failure-rules/not-a-uuid").await, 404).await;
    expect_error(
        server
            .get(&format!("/v1/failure-rules/{}", uuid::Uuid::new_v4()))
            .await,
        404,
    )
    .await;

    // The organisation's cap.
    create_rule(&server, base.clone()).await;
    expect_error_naming(
        server.post("/v1/failure-rules", &base).await,
        400,
        &["at most 3"],
    )
    .await;

    // Another organisation sees none of them and changes none.
    server.other_tenant(OTHER_KEY).await;
    let theirs: Value = server
        .get_as(OTHER_KEY, "/v1/failure-rules")
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(theirs["items"], json!([]), "{theirs}");
    let path = format!("/v1/failure-rules/{id}");
    expect_error(server.get_as(OTHER_KEY, &path).await, 404).await;
    expect_error(
        patch(&server, OTHER_KEY, &path, &json!({"threshold": 0.9})).await,
        404,
    )
    .await;
    expect_error(delete(&server, OTHER_KEY, &path).await, 404).await;

    // Deleting: 204, then gone; the changes are audited.
    let token = server.session_token().await;
    assert_eq!(delete(&server, &token, &path).await.status(), 204);
    expect_error(server.get(&path).await, 404).await;
    expect_error(delete(&server, &token, &path).await, 404).await;
    let audit = server
        .get_json_as(&token, "/v1/audit-log")
        .await
        .to_string();
    for action in [
        "failure_rule.create",
        "failure_rule.update",
        "failure_rule.delete",
    ] {
        assert!(audit.contains(action), "{action} not audited: {audit}");
    }
}

#[tokio::test]
async fn a_rule_fires_once_per_episode_with_its_webhook_and_then_recovers() {
    let hook = receiver().await;
    let server = TestServer::start_with(FAST).await;
    let resp = server
        .post(
            "/v1/webhooks",
            &json!({"url": hook.url, "secret": "whsec-0123456789abcdef",
                    "events": ["failure.detected", "failure.recovered"]}),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let rule = create_rule(
        &server,
        json!({"name": "error rate above half", "metric": "error_rate", "operator": "gt",
               "threshold": 0.5, "window_secs": 300, "severity": "high", "min_samples": 5,
               "project_id": "default"}),
    )
    .await;
    let rule_id = rule["id"].as_str().expect("id").to_owned();

    // Healthy traffic: nothing fires.
    let now = now_micros();
    ingest(
        &server,
        (0..4).map(|i| trace(now - i * 1_000_000, false)).collect(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let none = server.get_json("/v1/anomalies").await;
    assert_eq!(none["anomalies"], json!([]), "{none}");

    // Failures drive the error rate to 10/14: the rule fires.
    let now = now_micros();
    ingest(
        &server,
        (0..10).map(|i| trace(now - i * 100_000, true)).collect(),
    )
    .await;
    let open = wait_until(
        &server,
        "/v1/anomalies?status=open",
        Duration::from_secs(10),
        |b| b["anomalies"].as_array().is_some_and(|a| !a.is_empty()),
    )
    .await;
    let anomaly = &open["anomalies"][0];
    assert_eq!(anomaly["type"], "error_rate_spike", "{anomaly}");
    assert_eq!(anomaly["severity"], "high");
    assert_eq!(anomaly["source"], "rule");
    assert_eq!(anomaly["rule_id"], rule_id.as_str());
    assert_eq!(anomaly["status"], "open");
    assert_eq!(anomaly["recovered_at"], Value::Null);
    assert_eq!(anomaly["threshold"], 0.5);
    let value = anomaly["value"].as_f64().expect("value");
    assert!((value - 10.0 / 14.0).abs() < 1e-9, "{anomaly}");
    assert!(anomaly["description"]
        .as_str()
        .is_some_and(|d| d.contains("error rate above half")));
    let anomaly_id = anomaly["id"].as_str().expect("id").to_owned();
    let detail = server
        .get_json(&format!("/v1/anomalies/{anomaly_id}"))
        .await;
    assert_eq!(&detail, anomaly);
    let firing = server
        .get_json(&format!("/v1/failure-rules/{rule_id}"))
        .await;
    assert_eq!(firing["state"], "firing");
    assert_eq!(firing["open_anomaly_id"], anomaly_id.as_str());

    // The webhook hears of it once, with the anomaly and the rule.
    let detected = hook.wait_for("failure.detected", 1).await;
    assert_eq!(detected[0]["type"], "failure.detected");
    assert_eq!(detected[0]["data"]["id"], anomaly_id.as_str());
    assert_eq!(detected[0]["data"]["rule"]["id"], rule_id.as_str());

    // More failures, many evaluations, a restart: the same episode.
    ingest(
        &server,
        (0..5)
            .map(|i| trace(now_micros() - i * 1_000, true))
            .collect(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let server = server.restart().await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let all = server.get_json("/v1/anomalies").await;
    assert_eq!(all["anomalies"].as_array().map(Vec::len), Some(1), "{all}");
    assert_eq!(hook.events("failure.detected").len(), 1);
    assert!(hook.events("failure.recovered").is_empty());

    // Healthy traffic brings the rate to 15/69: the episode ends.
    let now = now_micros();
    ingest(
        &server,
        (0..50).map(|i| trace(now - i * 10_000, false)).collect(),
    )
    .await;
    let recovered = wait_until(
        &server,
        &format!("/v1/anomalies/{anomaly_id}"),
        Duration::from_secs(10),
        |a| a["status"] == "recovered",
    )
    .await;
    assert!(recovered["recovered_at"].is_string(), "{recovered}");
    let back = hook.wait_for("failure.recovered", 1).await;
    assert_eq!(back[0]["data"]["id"], anomaly_id.as_str());
    assert_eq!(back[0]["data"]["status"], "recovered");
    let ok = server
        .get_json(&format!("/v1/failure-rules/{rule_id}"))
        .await;
    assert_eq!(ok["state"], "ok");

    // And it stays recovered: no second fire, no second anomaly.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(hook.events("failure.detected").len(), 1);
    assert_eq!(hook.events("failure.recovered").len(), 1);
    let all = server.get_json("/v1/anomalies").await;
    assert_eq!(all["anomalies"].as_array().map(Vec::len), Some(1), "{all}");
    let recovered_list = server
        .get_json("/v1/anomalies?status=recovered&source=rule")
        .await;
    assert_eq!(
        recovered_list["anomalies"].as_array().map(Vec::len),
        Some(1)
    );
    let open_list = server.get_json("/v1/anomalies?status=open").await;
    assert_eq!(open_list["anomalies"], json!([]));

    // Another organisation sees none of it.
    server.other_tenant(OTHER_KEY).await;
    let theirs: Value = server
        .get_as(OTHER_KEY, "/v1/anomalies")
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(theirs["anomalies"], json!([]));
    expect_error(
        server
            .get_as(OTHER_KEY, &format!("/v1/anomalies/{anomaly_id}"))
            .await,
        404,
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn turning_a_firing_rule_off_ends_its_episode() {
    let hook = receiver().await;
    let server = TestServer::start_with(FAST).await;
    server
        .post(
            "/v1/webhooks",
            &json!({"url": hook.url, "secret": "whsec-0123456789abcdef",
                    "events": ["failure.detected", "failure.recovered"]}),
        )
        .await;
    let rule = create_rule(
        &server,
        json!({"name": "any traffic", "metric": "volume", "operator": "gte", "threshold": 1}),
    )
    .await;
    let path = format!("/v1/failure-rules/{}", rule["id"].as_str().expect("id"));
    ingest(&server, vec![trace(now_micros(), false)]).await;
    wait_until(&server, &path, Duration::from_secs(10), |r| {
        r["state"] == "firing"
    })
    .await;
    let resp = patch(&server, &server.key, &path, &json!({"enabled": false})).await;
    let off: Value = resp.json().await.expect("JSON");
    assert_eq!(off["state"], "ok", "{off}");
    let back = hook.wait_for("failure.recovered", 1).await;
    assert_eq!(
        back[0]["data"]["metadata"]["recovery"]["reason"],
        "rule_disabled"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(hook.events("failure.detected").len(), 1);
}

#[tokio::test]
async fn anomaly_lists_check_their_filters() {
    let server = TestServer::start().await;
    for (query, needle) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("offset=10001", "offset"),
        ("status=closed", "status"),
        ("type=meltdown", "type"),
        ("severity=urgent", "severity"),
        ("source=oracle", "source"),
        ("rule_id=nope", "rule_id"),
        ("from=yesterday", "from"),
    ] {
        expect_error_naming(
            server.get(&format!("/v1/anomalies?{query}")).await,
            400,
            &[needle],
        )
        .await;
    }
    expect_error(server.get("/v1/anomalies?project_id=nowhere").await, 404).await;
    expect_error(server.get("/v1/anomalies/not-a-uuid").await, 404).await;
    let empty = server
        .get_json(
            "/v1/anomalies?limit=100&offset=0&status=open&type=latency_spike&project_id=default",
        )
        .await;
    assert_eq!(empty, json!({"anomalies": [], "has_more": false}));
}

#[tokio::test]
async fn the_detector_sees_an_error_and_volume_spike_against_its_baseline() {
    let hook = receiver().await;
    let server = TestServer::start_with(
        "[alerts]\ninterval_ms = 100\ndetect_window_s = 60\nbaseline_windows = 30\n\
         min_baseline_windows = 10\nmin_traces = 5\n[webhooks]\nretry_base_ms = 100\n",
    )
    .await;
    server
        .post(
            "/v1/webhooks",
            &json!({"url": hook.url, "secret": "whsec-0123456789abcdef",
                    "events": ["anomaly.detected"]}),
        )
        .await;
    // Half an hour of steady traffic, ten healthy traces a minute, and a
    // normal latest minute: nothing is anomalous.
    let now = now_micros();
    let mut history = Vec::new();
    for minute in 2..=32 {
        for i in 0..10 {
            history.push(trace(now - minute * 60_000_000 + i * 1_000_000, false));
        }
    }
    ingest(&server, history).await;
    ingest(
        &server,
        (0..10).map(|i| trace(now - i * 2_000_000, false)).collect(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let quiet = server.get_json("/v1/anomalies").await;
    assert_eq!(quiet["anomalies"], json!([]), "{quiet}");

    // Then 40 failures in the latest minute.
    let now = now_micros();
    ingest(
        &server,
        (0..40).map(|i| trace(now - i * 100_000, true)).collect(),
    )
    .await;
    let found = wait_until(
        &server,
        "/v1/anomalies?source=builtin",
        Duration::from_secs(10),
        |b| {
            let types: Vec<&str> = b["anomalies"]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x["type"].as_str()).collect())
                .unwrap_or_default();
            types.contains(&"error_rate_spike") && types.contains(&"volume_anomaly")
        },
    )
    .await;
    for anomaly in found["anomalies"].as_array().expect("anomalies") {
        assert_eq!(anomaly["rule_id"], Value::Null, "{anomaly}");
        assert_eq!(anomaly["status"], "open");
        assert!(anomaly["project_id"].is_string());
        assert!(anomaly["baseline"].is_number(), "{anomaly}");
        assert_eq!(anomaly["metadata"]["method"], "median_mad");
        if anomaly["type"] == "error_rate_spike" {
            assert_eq!(anomaly["baseline"], 0.0);
            assert!(anomaly["value"].as_f64().expect("value") > 0.7, "{anomaly}");
        }
    }
    let events = hook.wait_for("anomaly.detected", 2).await;
    assert!(events
        .iter()
        .any(|e| e["data"]["type"] == "error_rate_spike"));
    // Once per episode: more passes raise nothing new.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let again = server.get_json("/v1/anomalies?source=builtin").await;
    assert_eq!(again["anomalies"], found["anomalies"]);
}
