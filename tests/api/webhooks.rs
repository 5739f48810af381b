//! Webhooks against a real server: their operations, the plan gate, the
//! targets refused, and deliveries to a receiver inside the test that
//! checks each signature with the README's own snippets, through failures
//! and a restart.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{json, Value};

use crate::common::{expect_error, sample_trace, TestServer};

const SECRET: &str = "whsec-test-0123456789";
const METRICS_TOKEN: &str = "metrics-token-for-webhooks";

/// A request the receiver got.
#[derive(Clone, Debug)]
struct Received {
    signature: String,
    event: String,
    delivery: String,
    body: Bytes,
}

/// A webhook endpoint on loopback: answers 500 while `down` or while
/// `fail_next` is above zero, else 200 "thanks".
#[derive(Clone, Default)]
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
    down: Arc<AtomicBool>,
    fail_next: Arc<AtomicUsize>,
    /// Answers only after a minute.
    hang: Arc<AtomicBool>,
}

async fn receive(
    State(r): State<Receiver>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    r.got.lock().expect("lock").push(Received {
        signature: header("x-trulayer-signature"),
        event: header("x-trulayer-event"),
        delivery: header("x-trulayer-delivery"),
        body,
    });
    if r.hang.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    let failing = r.down.load(Ordering::SeqCst)
        || r.fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
    if failing {
        (StatusCode::INTERNAL_SERVER_ERROR, "not now".into())
    } else {
        (StatusCode::OK, "thanks".into())
    }
}

async fn receiver() -> Receiver {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mut r = Receiver {
        url: format!("http://{}/hook", listener.local_addr().expect("addr")),
        ..Receiver::default()
    };
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        // A judge that never answers in time: a run stays running.
        .route(
            "/v1/chat/completions",
            axum::routing::post(|| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                StatusCode::SERVICE_UNAVAILABLE
            }),
        )
        .with_state(r.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    r.url = r.url.clone();
    r
}

impl Receiver {
    fn got(&self) -> Vec<Received> {
        self.got.lock().expect("lock").clone()
    }

    async fn wait_for(&self, count: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.got();
            if got.len() >= count {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{count} requests expected, {} came",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The fenced blocks of language `lang` in the README's `## Webhooks`.
fn readme_blocks(lang: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let (mut in_section, mut block, mut found) = (false, None::<(bool, String)>, Vec::new());
    for line in readme.lines() {
        if let Some((wanted, text)) = block.as_mut() {
            if line.starts_with("```") {
                if *wanted {
                    found.push(std::mem::take(text));
                }
                block = None;
            } else {
                text.push_str(line);
                text.push('\n');
            }
        } else if line.starts_with("## ") {
            in_section = line == "## Webhooks";
        } else if let Some(tag) = line.strip_prefix("```") {
            block = Some((in_section && tag == lang, String::new()));
        }
    }
    found
}

/// Checks a delivery's signature with the README's Python and shell snippets.
fn verified_by_readme(secret: &str, got: &Received) -> bool {
    let dir = tempfile::tempdir().expect("tempdir");
    let body = dir.path().join("body.json");
    std::fs::write(&body, &got.body).expect("body");
    let python = readme_blocks("python");
    assert_eq!(python.len(), 1, "one Python snippet");
    let script = format!(
        "{}\nimport sys\nok = verify(sys.argv[1], sys.argv[2], open(sys.argv[3], 'rb').read())\nsys.exit(0 if ok else 1)\n",
        python[0]
    );
    let by_python = std::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .arg(secret)
        .arg(&got.signature)
        .arg(&body)
        .status()
        .expect("python3 runs")
        .success();
    let shell = readme_blocks("sh");
    assert_eq!(shell.len(), 1, "one shell snippet");
    let parts: Vec<(&str, &str)> = got
        .signature
        .split(',')
        .filter_map(|p| p.split_once('='))
        .collect();
    let part = |k: &str| {
        parts
            .iter()
            .find(|(name, _)| *name == k)
            .map(|(_, v)| v.to_string())
            .unwrap_or_default()
    };
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(&shell[0])
        .current_dir(dir.path())
        .env("t", part("t"))
        .env("secret", secret)
        .output()
        .expect("sh runs");
    let by_shell = String::from_utf8_lossy(&out.stdout).trim() == part("v1");
    assert_eq!(by_python, by_shell, "the snippets agree on {got:?}");
    by_python
}

async fn json_of(resp: reqwest::Response, status: u16) -> Value {
    let got = resp.status().as_u16();
    let body: Value = resp.json().await.expect("JSON body");
    assert_eq!(got, status, "{body}");
    body
}

async fn create(server: &TestServer, body: Value) -> reqwest::Response {
    server.post("/v1/webhooks", &body).await
}

async fn create_ok(server: &TestServer, url: &str, events: Value) -> String {
    let hook = json_of(
        create(
            server,
            json!({"url": url, "secret": SECRET, "events": events}),
        )
        .await,
        201,
    )
    .await;
    hook["id"].as_str().expect("id").to_owned()
}

async fn deliveries(server: &TestServer, hook: &str) -> Vec<Value> {
    let list = server
        .get_json(&format!("/v1/webhooks/{hook}/deliveries"))
        .await;
    list["deliveries"].as_array().expect("deliveries").clone()
}

/// A dataset of one item scored by a rule, run once; returns the run's id.
async fn finished_run(server: &TestServer) -> String {
    json_of(
        server
            .post(
                "/v1/eval-rules",
                &json!({"project_id": "default", "metric_name": "says_a",
                        "evaluator_type": "rule", "config": {"rule": "contains", "value": "a"}}),
            )
            .await,
        201,
    )
    .await;
    let dataset = json_of(
        server.post("/v1/datasets", &json!({"name": "hooks"})).await,
        201,
    )
    .await;
    let dataset = dataset["id"].as_str().expect("id").to_owned();
    let mut trace = sample_trace("qa");
    trace["input"] = json!("q");
    trace["output"] = json!("a");
    let trace = server.ingest(trace).await;
    json_of(
        server
            .post(
                &format!("/v1/datasets/{dataset}/items"),
                &json!({"trace_id": trace}),
            )
            .await,
        201,
    )
    .await;
    let version = json_of(
        server
            .post(
                &format!("/v1/datasets/{dataset}/versions"),
                &json!({"name": "v1"}),
            )
            .await,
        201,
    )
    .await;
    let run = json_of(
        server
            .post(
                &format!("/v1/datasets/{dataset}/runs"),
                &json!({"eval_version_id": version["id"]}),
            )
            .await,
        202,
    )
    .await;
    let run = run["id"].as_str().expect("id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = server.get_json(&format!("/v1/eval-runs/{run}")).await;
        if got["status"] == "completed" {
            return run;
        }
        assert!(Instant::now() < deadline, "run never finished: {got}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn webhooks_are_created_listed_tested_and_deleted() {
    let server = TestServer::start().await;
    let r = receiver().await;
    let hook = json_of(
        create(&server, json!({"url": r.url, "secret": SECRET})).await,
        201,
    )
    .await;
    assert_eq!(hook["events"], json!(["failure.detected"]), "{hook}");
    assert_eq!(hook["enabled"], true);
    assert!(
        hook["secret"].is_null(),
        "the secret is never shown: {hook}"
    );
    let id = hook["id"].as_str().expect("id").to_owned();
    let list = server.get_json("/v1/webhooks").await;
    assert_eq!(list["webhooks"].as_array().map(Vec::len), Some(1));
    assert_eq!(list["webhooks"][0]["url"], r.url.as_str());
    assert!(!list.to_string().contains(SECRET), "{list}");

    // A test ping: signed, answered with the endpoint's status and body,
    // not in the delivery log.
    let answer = json_of(
        server
            .post(&format!("/v1/webhooks/{id}/test"), &json!({}))
            .await,
        200,
    )
    .await;
    assert_eq!(answer, json!({"status": 200, "body": "thanks"}));
    let got = r.got();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].event, "ping");
    let ping: Value = serde_json::from_slice(&got[0].body).expect("ping JSON");
    assert_eq!(ping["type"], "ping");
    assert_eq!(ping["webhook_id"], id.as_str());
    assert!(ping["sent_at"].is_string(), "{ping}");
    assert!(verified_by_readme(SECRET, &got[0]));
    assert!(!verified_by_readme("another-secret-of-16", &got[0]));
    assert!(deliveries(&server, &id).await.is_empty());
    r.fail_next.store(1, Ordering::SeqCst);
    let answer = json_of(
        server
            .post(&format!("/v1/webhooks/{id}/test"), &json!({}))
            .await,
        200,
    )
    .await;
    assert_eq!(answer, json!({"status": 500, "body": "not now"}));

    // An endpoint nobody listens on: status 0 and why.
    let closed = create_ok(
        &server,
        "http://127.0.0.1:9/hook",
        json!(["eval_run.completed"]),
    )
    .await;
    let answer = json_of(
        server
            .post(&format!("/v1/webhooks/{closed}/test"), &json!({}))
            .await,
        200,
    )
    .await;
    assert_eq!(answer["status"], 0, "{answer}");
    assert!(
        answer["body"].as_str().is_some_and(|b| !b.is_empty()),
        "{answer}"
    );

    // Bad bodies.
    for (body, needle) in [
        (
            json!({"url": "ftp://example.com/", "secret": SECRET}),
            "http",
        ),
        (json!({"url": "not a url", "secret": SECRET}), "url"),
        (json!({"url": r.url, "secret": "short"}), "secret"),
        (
            json!({"url": r.url, "secret": SECRET, "events": ["trace.created"]}),
            "trace.created",
        ),
        (
            json!({"url": r.url, "secret": SECRET, "events": []}),
            "events",
        ),
    ] {
        let err = expect_error(create(&server, body.clone()).await, 400).await;
        assert!(
            err["error"].as_str().is_some_and(|m| m.contains(needle)),
            "{body} → {err}"
        );
    }
    expect_error(create(&server, json!({"secret": SECRET})).await, 422).await;

    // Deleting: 204, then 404; the others stay.
    let delete = server
        .client
        .delete(server.url(&format!("/v1/webhooks/{id}")))
        .bearer_auth(&server.key)
        .send()
        .await
        .expect("delete");
    assert_eq!(delete.status().as_u16(), 204);
    let again = server
        .client
        .delete(server.url(&format!("/v1/webhooks/{id}")))
        .bearer_auth(&server.key)
        .send()
        .await
        .expect("delete");
    expect_error(again, 404).await;
    expect_error(
        server
            .post(&format!("/v1/webhooks/{id}/test"), &json!({}))
            .await,
        404,
    )
    .await;
    expect_error(
        server.get(&format!("/v1/webhooks/{id}/deliveries")).await,
        404,
    )
    .await;
    expect_error(server.get("/v1/webhooks/not-a-uuid/deliveries").await, 404).await;
    let list = server.get_json("/v1/webhooks").await;
    assert_eq!(list["webhooks"].as_array().map(Vec::len), Some(1));

    // Creation and deletion are audited, without the secret.
    let token = server.session_token().await;
    let audit = server.get_json_as(&token, "/v1/audit-log").await;
    let text = audit.to_string();
    assert!(
        text.contains("webhook.create") && text.contains("webhook.delete"),
        "{text}"
    );
    assert!(!text.contains(SECRET), "{text}");
}

#[tokio::test]
async fn link_local_and_metadata_targets_are_refused_and_config_narrows() {
    let server =
        TestServer::start_with("[webhooks]\ndeny = [\"127.0.0.0/8\", \"::1/128\"]\n").await;
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://169.254.1.2:8080/",
        "http://[fe80::1]/",
        "http://[fd00:ec2::254]/",
        "http://[::ffff:169.254.169.254]/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://METADATA.google.internal./",
        "http://0.0.0.0:8080/",
        "http://127.0.0.1:9/",
    ] {
        let err = expect_error(
            create(&server, json!({"url": url, "secret": SECRET})).await,
            400,
        )
        .await;
        assert!(
            err["error"].as_str().is_some_and(|m| m.starts_with("url:")),
            "{url}: {err}"
        );
    }
    // A name is checked where it resolves, at each delivery: `localhost`
    // passes creation and is refused when sent to.
    let r = receiver().await;
    let port = r.url.rsplit(':').next().expect("port").to_owned();
    let hook = create_ok(
        &server,
        &format!("http://localhost:{port}"),
        json!(["eval_run.completed"]),
    )
    .await;
    let err = expect_error(
        server
            .post(&format!("/v1/webhooks/{hook}/test"), &json!({}))
            .await,
        422,
    )
    .await;
    assert!(
        err["error"]
            .as_str()
            .is_some_and(|m| m.contains("localhost resolves to")),
        "{err}"
    );
    finished_run(&server).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = deliveries(&server, &hook).await;
        if let Some(d) = list.first().filter(|d| d["attempts"].as_i64() >= Some(1)) {
            assert_eq!(d["status"], "pending", "{d}");
            assert!(
                d["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("refused")),
                "{d}"
            );
            assert!(d["response_status"].is_null(), "{d}");
            break;
        }
        assert!(Instant::now() < deadline, "no attempt recorded: {list:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(r.got().is_empty(), "nothing reached the refused address");
}

#[tokio::test]
async fn starter_gets_402_for_creating_and_testing() {
    let server = TestServer::start_with("plan = \"starter\"\n").await;
    let body = expect_error(
        create(
            &server,
            json!({"url": "http://127.0.0.1:9/", "secret": SECRET}),
        )
        .await,
        402,
    )
    .await;
    assert_eq!(body["code"], "plan_upgrade_required");
    assert_eq!(body["required_plan"], "pro");
    assert_eq!(server.get_json("/v1/webhooks").await["webhooks"], json!([]));
    let body = expect_error(
        server
            .post(
                &format!("/v1/webhooks/{}/test", uuid::Uuid::now_v7()),
                &json!({}),
            )
            .await,
        402,
    )
    .await;
    assert_eq!(body["required_plan"], "pro");
}

#[tokio::test]
async fn another_tenants_webhooks_are_not_found() {
    let server = TestServer::start().await;
    let hook = create_ok(
        &server,
        "http://127.0.0.1:9/",
        json!(["eval_run.completed"]),
    )
    .await;
    let other = "tl_other_tenant_for_webhooks_0123";
    server.other_tenant(other).await;
    let list = server
        .client
        .get(server.url("/v1/webhooks"))
        .bearer_auth(other)
        .send()
        .await
        .expect("list");
    assert_eq!(json_of(list, 200).await["webhooks"], json!([]));
    for resp in [
        server
            .post_as(other, &format!("/v1/webhooks/{hook}/test"), &json!({}))
            .await,
        server
            .get_as(other, &format!("/v1/webhooks/{hook}/deliveries"))
            .await,
        server
            .client
            .delete(server.url(&format!("/v1/webhooks/{hook}")))
            .bearer_auth(other)
            .send()
            .await
            .expect("delete"),
    ] {
        expect_error(resp, 404).await;
    }
    assert_eq!(
        server.get_json("/v1/webhooks").await["webhooks"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

#[tokio::test]
async fn a_finished_run_is_delivered_signed_through_failures_and_a_restart() {
    let server = TestServer::start_with(&format!(
        "[metrics]\ntoken = \"{METRICS_TOKEN}\"\n[webhooks]\nretry_base_ms = 100\n"
    ))
    .await;
    let r = receiver().await;
    r.down.store(true, Ordering::SeqCst);
    let hook = create_ok(&server, &r.url, json!(["eval_run.completed"])).await;
    // Subscribed to something else: gets nothing.
    let other = create_ok(&server, &r.url, json!(["failure.detected"])).await;
    let run = finished_run(&server).await;

    // Two refusals, then a restart while the delivery waits in the outbox.
    r.wait_for(2, Duration::from_secs(10)).await;
    let list = deliveries(&server, &hook).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["status"], "pending");
    assert_eq!(list[0]["response_status"], 500);
    assert!(
        list[0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("HTTP 500")),
        "{list:?}"
    );
    let server = server.restart().await;
    let before = r.got().len();
    r.down.store(false, Ordering::SeqCst);

    let deadline = Instant::now() + Duration::from_secs(20);
    let delivered = loop {
        let list = deliveries(&server, &hook).await;
        if list[0]["status"] == "delivered" {
            break list[0].clone();
        }
        assert!(Instant::now() < deadline, "never delivered: {list:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let got = r.got();
    assert!(got.len() > before, "delivered after the restart");
    assert_eq!(delivered["response_status"], 200);
    assert_eq!(delivered["event_type"], "eval_run.completed");
    assert_eq!(
        delivered["attempts"].as_u64(),
        Some(got.len() as u64),
        "{delivered}"
    );
    assert!(delivered["attempts"].as_u64() >= Some(3));

    // Every attempt: the same delivery, the same body, a valid signature.
    for attempt in &got {
        assert_eq!(attempt.event, "eval_run.completed");
        assert_eq!(attempt.delivery, delivered["id"].as_str().expect("id"));
        assert_eq!(attempt.body, got[0].body);
        assert!(verified_by_readme(SECRET, attempt), "{attempt:?}");
    }
    let event: Value = serde_json::from_slice(&got[0].body).expect("event JSON");
    assert_eq!(event["type"], "eval_run.completed");
    assert_eq!(event["id"], delivered["id"]);
    // Finished deliveries are kept for a while, then deleted.
    let store = server.running().store().clone();
    let an_hour_ago = trulayer_server::store::now_micros() - 3_600_000_000;
    assert_eq!(
        store
            .prune_webhook_deliveries(an_hour_ago)
            .await
            .expect("prune"),
        0
    );
    let now = trulayer_server::store::now_micros() + 1;
    assert_eq!(store.prune_webhook_deliveries(now).await.expect("prune"), 1);
    assert!(deliveries(&server, &hook).await.is_empty());
    assert_eq!(event["data"]["id"], run.as_str());
    assert_eq!(event["data"]["status"], "completed");
    assert_eq!(event["data"]["completed_count"], 1);
    assert_eq!(event["data"]["mean_score"], 1.0);
    assert!(deliveries(&server, &other).await.is_empty());
    // Since the restart: the failures after it and the delivery.
    let metrics = server
        .client
        .get(server.url("/metrics"))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for line in [
        "trulayer_webhook_deliveries_delivered_total 1",
        "trulayer_webhook_deliveries_given_up_total 0",
        "trulayer_webhook_deliveries_in_flight 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    let failures: usize = metrics
        .lines()
        .find_map(|l| l.strip_prefix("trulayer_webhook_delivery_failures_total "))
        .and_then(|n| n.parse().ok())
        .expect("failures counted");
    assert!(failures < got.len(), "{failures} of {} attempts", got.len());
}

#[tokio::test]
async fn a_hanging_endpoint_holds_up_neither_ingest_nor_a_stop() {
    let server = TestServer::start_with("[webhooks]\ntimeout_s = 120\nconcurrency = 1\n").await;
    let r = receiver().await;
    r.hang.store(true, Ordering::SeqCst);
    let hook = create_ok(&server, &r.url, json!(["eval_run.completed"])).await;
    finished_run(&server).await;
    r.wait_for(1, Duration::from_secs(10)).await;
    // The delivery hangs; traces still go in at once.
    let started = Instant::now();
    for i in 0..20 {
        server
            .ingest(sample_trace(&format!("while hanging {i}")))
            .await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let list = deliveries(&server, &hook).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["status"], "pending");
    assert_eq!(list[0]["attempts"], 0, "still in flight: {list:?}");
    // A stop does not wait for it either; it is sent again after a start.
    let started = Instant::now();
    let server = server.restart().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    r.hang.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    while deliveries(&server, &hook).await[0]["status"] != "delivered" {
        assert!(Instant::now() < deadline, "never delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_cancelled_run_is_delivered_too() {
    let r = receiver().await;
    let judge = r.url.trim_end_matches("/hook").to_owned();
    let server = TestServer::start_with(&format!(
        "[eval.judge]\nprovider = \"openai\"\nbase_url = \"{judge}/v1\"\nmodel = \"m\"\n"
    ))
    .await;
    let hook = create_ok(&server, &r.url, json!(["eval_run.completed"])).await;
    let dataset = json_of(
        server.post("/v1/datasets", &json!({"name": "cut"})).await,
        201,
    )
    .await;
    let dataset = dataset["id"].as_str().expect("id").to_owned();
    let trace = server.ingest(sample_trace("to cancel")).await;
    json_of(
        server
            .post(
                &format!("/v1/datasets/{dataset}/items"),
                &json!({"trace_id": trace}),
            )
            .await,
        201,
    )
    .await;
    let version = json_of(
        server
            .post(
                &format!("/v1/datasets/{dataset}/versions"),
                &json!({"name": "judged", "judge_model": "m"}),
            )
            .await,
        201,
    )
    .await;
    let run = json_of(
        server
            .post(
                &format!("/v1/datasets/{dataset}/runs"),
                &json!({"eval_version_id": version["id"]}),
            )
            .await,
        202,
    )
    .await;
    let run = run["id"].as_str().expect("id").to_owned();
    assert!(
        deliveries(&server, &hook).await.is_empty(),
        "nothing before the end"
    );
    let cancelled = server
        .post(&format!("/v1/eval-runs/{run}/cancel"), &json!({}))
        .await;
    assert_eq!(cancelled.status().as_u16(), 200);
    let got = r.wait_for(1, Duration::from_secs(10)).await;
    let event: Value = serde_json::from_slice(&got[0].body).expect("event JSON");
    assert_eq!(event["type"], "eval_run.completed");
    assert_eq!(event["data"]["id"], run.as_str());
    assert_eq!(event["data"]["status"], "cancelled");
    assert!(verified_by_readme(SECRET, &got[0]));
}

#[tokio::test]
async fn with_an_encryption_key_secrets_are_sealed_and_still_sign() {
    let key = "[encryption]\nkey = \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"\n";
    let server = TestServer::start_with(key).await;
    let r = receiver().await;
    let id = create_ok(&server, &r.url, json!(["failure.detected"])).await;
    assert_eq!(
        ping(&server, &id).await,
        json!({"status": 200, "body": "thanks"})
    );
    let got = r.got();
    assert!(verified_by_readme(SECRET, &got[0]));
    crate::common::assert_not_on_disk(&server, SECRET);
    // Under another key it no longer opens: nothing is sent, and the answer says why.
    let other = "[encryption]\nkey = \"1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100\"\n";
    crate::common::write_config(server.dir.path(), other);
    let server = server.restart().await;
    let answer = ping(&server, &id).await;
    assert_eq!(answer["status"], 0, "{answer}");
    assert!(
        answer["body"]
            .as_str()
            .unwrap_or_default()
            .contains("another encryption key"),
        "{answer}"
    );
    assert_eq!(
        r.got().len(),
        1,
        "nothing was sent unsigned or wrongly signed"
    );
}

async fn ping(server: &TestServer, id: &str) -> Value {
    let resp = server
        .post(&format!("/v1/webhooks/{id}/test"), &json!({}))
        .await;
    json_of(resp, 200).await
}
