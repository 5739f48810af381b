//! Datasets, versions, runs and the CI gate against a real server. Runs
//! that need a model or a judge use stand-in OpenAI-compatible endpoints
//! inside the test, which record what the server sent them.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::common::{expect_error, expect_error_naming, sample_trace, TestServer};

const METRICS_TOKEN: &str = "metrics-token-for-dataset-runs";
const SYSTEM_PROMPT: &str = "You are the tide clerk of Saint-Malo. Answer in one sentence.";

/// How a stand-in endpoint answers.
#[derive(Clone, Default)]
struct Behaviour {
    /// Model calls answer this status instead of a completion.
    model_status: Option<u16>,
    /// Every answer waits this long first.
    delay: Duration,
}

/// A stand-in OpenAI-compatible endpoint: judge calls (their system prompt
/// says so) get a verdict scoring 0.9 when the output says "good" and 0.2
/// otherwise; model calls get "good: <input>", or "bad: <input>" from a
/// model whose name holds "bad".
#[derive(Clone)]
struct Endpoint {
    url: String,
    received: Arc<Mutex<Vec<Value>>>,
    behaviour: Arc<Mutex<Behaviour>>,
    /// Calls being answered now, and the most there ever were at once.
    in_flight: Arc<Mutex<(usize, usize)>>,
}

fn is_judge(body: &Value) -> bool {
    body["messages"][0]["content"]
        .as_str()
        .is_some_and(|s| s.starts_with("You are an impartial judge"))
}

fn completion(text: &str) -> Value {
    json!({"id": "c", "object": "chat.completion",
           "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop"}]})
}

async fn answer(State(endpoint): State<Endpoint>, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    endpoint.received.lock().unwrap().push(body.clone());
    let behaviour = endpoint.behaviour.lock().unwrap().clone();
    {
        let mut in_flight = endpoint.in_flight.lock().unwrap();
        in_flight.0 += 1;
        in_flight.1 = in_flight.1.max(in_flight.0);
    }
    tokio::time::sleep(behaviour.delay).await;
    endpoint.in_flight.lock().unwrap().0 -= 1;
    let user = body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_owned();
    if is_judge(&body) {
        let output = user.split("<output>").nth(1).unwrap_or_default();
        let score = if output.contains("good") { 0.9 } else { 0.2 };
        let verdict = json!({"score": score, "label": if score > 0.5 {"pass"} else {"fail"},
                             "reasoning": format!("scored {score}")});
        return Json(completion(&verdict.to_string())).into_response();
    }
    if let Some(status) = behaviour.model_status {
        let status = StatusCode::from_u16(status).unwrap();
        return (status, "the model is down").into_response();
    }
    let model = body["model"].as_str().unwrap_or_default();
    let word = if model.contains("bad") { "bad" } else { "good" };
    Json(completion(&format!("{word}: {user}"))).into_response()
}

impl Endpoint {
    async fn start() -> Endpoint {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = Endpoint {
            url: format!("http://{}/v1", listener.local_addr().unwrap()),
            received: Arc::default(),
            behaviour: Arc::default(),
            in_flight: Arc::default(),
        };
        let app = axum::Router::new()
            .route("/v1/chat/completions", axum::routing::post(answer))
            .with_state(endpoint.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        endpoint
    }

    fn set(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    /// The most calls it answered at once.
    fn most_at_once(&self) -> usize {
        self.in_flight.lock().unwrap().1
    }

    fn received(&self) -> Vec<Value> {
        self.received.lock().unwrap().clone()
    }

    fn model_calls(&self) -> Vec<Value> {
        self.received()
            .into_iter()
            .filter(|b| !is_judge(b))
            .collect()
    }

    fn judge_calls(&self) -> Vec<Value> {
        self.received().into_iter().filter(is_judge).collect()
    }
}

/// `[eval]` with quick retries and `judge` as the judge (and so the model)
/// endpoint; `extra` is added to `[eval]`.
fn judged_by(judge: &Endpoint, extra: &str) -> String {
    format!(
        "[eval]\ntimeout_s = 30\nmax_attempts = 3\nretry_base_ms = 50\n{extra}\n\
         [eval.judge]\nprovider = \"openai\"\nbase_url = {url:?}\nmodel = \"judge-default\"\n",
        url = judge.url
    )
}

async fn json_of(resp: reqwest::Response, status: u16) -> Value {
    let got = resp.status().as_u16();
    let body: Value = resp.json().await.expect("JSON body");
    assert_eq!(got, status, "{body}");
    body
}

async fn create_dataset(server: &TestServer, name: &str) -> String {
    let resp = server.post("/v1/datasets", &json!({"name": name})).await;
    json_of(resp, 201).await["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

async fn add_item(server: &TestServer, dataset: &str, body: Value) -> reqwest::Response {
    server
        .post(&format!("/v1/datasets/{dataset}/items"), &body)
        .await
}

async fn ingest_qa(server: &TestServer, input: &str, output: &str) -> String {
    let mut trace = sample_trace("qa");
    trace["input"] = json!(input);
    trace["output"] = json!(output);
    server.ingest(trace).await
}

/// A dataset of `items` traces, asked `q0`, `q1`… and answered `a`.
pub(crate) async fn dataset_of(server: &TestServer, name: &str, items: usize) -> String {
    let dataset = create_dataset(server, name).await;
    for i in 0..items {
        let trace = ingest_qa(server, &format!("q{i}"), "a").await;
        json_of(
            add_item(server, &dataset, json!({"trace_id": trace})).await,
            201,
        )
        .await;
    }
    dataset
}

pub(crate) async fn create_version(server: &TestServer, dataset: &str, body: Value) -> String {
    let resp = server
        .post(&format!("/v1/datasets/{dataset}/versions"), &body)
        .await;
    json_of(resp, 201).await["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

pub(crate) async fn schedule(server: &TestServer, dataset: &str, version: &str) -> String {
    let resp = server
        .post(
            &format!("/v1/datasets/{dataset}/runs"),
            &json!({"eval_version_id": version}),
        )
        .await;
    let run = json_of(resp, 202).await;
    assert_eq!(run["eval_version_id"], version, "{run}");
    run["id"].as_str().expect("id").to_owned()
}

/// Polls a run until it has finished (up to 30 s).
pub(crate) async fn finished(server: &TestServer, run: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let run = server.get_json(&format!("/v1/eval-runs/{run}")).await;
        if !matches!(run["status"].as_str(), Some("pending" | "running")) {
            return run;
        }
        assert!(Instant::now() < deadline, "run never finished: {run}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An enabled rule evaluator on the default project: outputs holding `word` pass.
async fn rule_contains(server: &TestServer, word: &str) {
    let resp = server
        .post(
            "/v1/eval-rules",
            &json!({"project_id": "default", "metric_name": format!("says_{word}"),
                    "evaluator_type": "rule", "config": {"rule": "contains", "value": word}}),
        )
        .await;
    json_of(resp, 201).await;
}

#[tokio::test]
async fn datasets_are_created_listed_read_and_deleted_with_everything_in_them() {
    let server = TestServer::start().await;
    let trace = ingest_qa(&server, "When is high tide?", "At 14:02.").await;
    let dataset = create_dataset(&server, "tides").await;
    expect_error_naming(
        server.post("/v1/datasets", &json!({"name": "tides"})).await,
        409,
        &["tides"],
    )
    .await;
    expect_error_naming(
        server.post("/v1/datasets", &json!({"name": "  "})).await,
        400,
        &["name"],
    )
    .await;
    expect_error(
        server
            .post("/v1/datasets", &json!({"name": "x", "project_id": "nope"}))
            .await,
        404,
    )
    .await;

    json_of(
        add_item(&server, &dataset, json!({"trace_id": trace})).await,
        201,
    )
    .await;
    let version =
        create_version(&server, &dataset, json!({"name": "v1", "judge_model": "j"})).await;
    schedule(&server, &dataset, &version).await;

    let list = server.get_json("/v1/datasets").await;
    let listed = &list["datasets"][0];
    assert_eq!(listed["id"], dataset.as_str(), "{list}");
    assert_eq!(listed["name"], "tides");
    assert_eq!(listed["item_count"], 1);
    assert!(listed["tenant_id"].is_string() && listed["project_id"].is_string());
    let one = server.get_json(&format!("/v1/datasets/{dataset}")).await;
    assert_eq!(one["name"], "tides");
    expect_error(server.get("/v1/datasets/not-a-uuid").await, 404).await;
    expect_error(
        server
            .get(&format!("/v1/datasets/{}", uuid::Uuid::new_v4()))
            .await,
        404,
    )
    .await;

    let resp = server
        .client
        .delete(server.url(&format!("/v1/datasets/{dataset}")))
        .bearer_auth(&server.key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    expect_error(server.get(&format!("/v1/datasets/{dataset}")).await, 404).await;
    expect_error(
        server
            .get(&format!("/v1/datasets/{dataset}/versions"))
            .await,
        404,
    )
    .await;
    let list = server.get_json("/v1/datasets").await;
    assert_eq!(list["datasets"], json!([]), "{list}");
    // The name is free again, and the deletion is in the audit log.
    create_dataset(&server, "tides").await;
    let owner = server.session_token().await;
    let audit = server.get_json_as(&owner, "/v1/audit-log").await;
    let deleted = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "dataset.delete")
        .cloned()
        .unwrap_or_else(|| panic!("no dataset.delete in {audit}"));
    assert_eq!(deleted["target"], dataset.as_str());
    assert_eq!(deleted["details"]["items"], 1, "{deleted}");
    assert_eq!(deleted["details"]["runs"], 1, "{deleted}");
}

#[tokio::test]
async fn items_keep_their_trace_text_are_added_once_labelled_and_paged() {
    let server = TestServer::start().await;
    let dataset = create_dataset(&server, "hard cases").await;
    let mut traces = Vec::new();
    for i in 0..5 {
        traces.push(ingest_qa(&server, &format!("question {i}"), &format!("answer {i}")).await);
    }
    let first = json_of(
        add_item(
            &server,
            &dataset,
            json!({"trace_id": traces[0], "label": "fail"}),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(first["input"], "question 0", "{first}");
    assert_eq!(first["expected_output"], "answer 0");
    assert_eq!(first["label"], "fail");
    assert_eq!(first["dataset_id"], dataset.as_str());
    // The same trace again: the same item (200), not a second one; a label
    // given with it is applied.
    let again = json_of(
        add_item(&server, &dataset, json!({"trace_id": traces[0]})).await,
        200,
    )
    .await;
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["label"], "fail", "no label given: kept");
    let relabelled = json_of(
        add_item(
            &server,
            &dataset,
            json!({"trace_id": traces[0], "label": "pass"}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(relabelled["id"], first["id"]);
    assert_eq!(relabelled["label"], "pass");
    for trace in &traces[1..] {
        json_of(
            add_item(&server, &dataset, json!({"trace_id": trace})).await,
            201,
        )
        .await;
    }
    let one = server.get_json(&format!("/v1/datasets/{dataset}")).await;
    assert_eq!(one["item_count"], 5, "{one}");

    // Unknown traces, spans and feedback, and bad labels.
    expect_error_naming(
        add_item(
            &server,
            &dataset,
            json!({"trace_id": uuid::Uuid::new_v4().to_string()}),
        )
        .await,
        404,
        &["trace"],
    )
    .await;
    expect_error_naming(
        add_item(
            &server,
            &dataset,
            json!({"trace_id": traces[1], "span_id": "nope"}),
        )
        .await,
        404,
        &["span"],
    )
    .await;
    expect_error_naming(
        add_item(
            &server,
            &dataset,
            json!({"trace_id": traces[1], "label": "maybe"}),
        )
        .await,
        400,
        &["label"],
    )
    .await;
    expect_error(
        add_item(
            &server,
            &uuid::Uuid::new_v4().to_string(),
            json!({"trace_id": traces[1]}),
        )
        .await,
        404,
    )
    .await;

    // Pages of two, newest first, following the cursor.
    let mut seen = Vec::new();
    let mut path = format!("/v1/datasets/{dataset}/items?limit=2");
    loop {
        let page = server.get_json(&path).await;
        for item in page["items"].as_array().unwrap() {
            seen.push(item["trace_id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                assert_eq!(page["has_more"], true);
                path = format!("/v1/datasets/{dataset}/items?limit=2&cursor={cursor}");
            }
            None => break,
        }
    }
    let mut newest_first = traces.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);
    expect_error_naming(
        server
            .get(&format!("/v1/datasets/{dataset}/items?cursor=bogus"))
            .await,
        400,
        &["cursor"],
    )
    .await;

    // Labels: set, filter, clear.
    let items = server
        .get_json(&format!("/v1/datasets/{dataset}/items?label=unlabeled"))
        .await;
    assert_eq!(items["items"].as_array().unwrap().len(), 4, "{items}");
    let target = items["items"][0]["id"].as_str().unwrap().to_owned();
    let patch = |body: Value| {
        server
            .client
            .patch(server.url(&format!("/v1/datasets/{dataset}/items/{target}")))
            .bearer_auth(&server.key)
            .json(&body)
            .send()
    };
    let patched = json_of(patch(json!({"label": "fail"})).await.unwrap(), 200).await;
    assert_eq!(patched["label"], "fail");
    let fails = server
        .get_json(&format!("/v1/datasets/{dataset}/items?label=fail"))
        .await;
    assert_eq!(fails["items"].as_array().unwrap().len(), 1, "{fails}");
    let cleared = json_of(patch(json!({"label": null})).await.unwrap(), 200).await;
    assert!(cleared["label"].is_null(), "{cleared}");
    let cleared = json_of(patch(json!({"label": "unlabeled"})).await.unwrap(), 200).await;
    assert!(cleared["label"].is_null(), "{cleared}");
    expect_error(patch(json!({"label": "great"})).await.unwrap(), 400).await;
    expect_error_naming(
        server
            .get(&format!("/v1/datasets/{dataset}/items?label=great"))
            .await,
        400,
        &["label"],
    )
    .await;

    // Removing an item.
    let resp = server
        .client
        .delete(server.url(&format!("/v1/datasets/{dataset}/items/{target}")))
        .bearer_auth(&server.key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    let one = server.get_json(&format!("/v1/datasets/{dataset}")).await;
    assert_eq!(one["item_count"], 4, "{one}");
}

#[tokio::test]
async fn an_item_from_a_span_or_with_feedback_takes_their_text_and_label() {
    let server = TestServer::start().await;
    let mut trace = sample_trace("spanned");
    trace["spans"][0]["id"] = json!("retrieval-1");
    trace["spans"][0]["input"] = json!("lookup: spring tides");
    trace["spans"][0]["output"] = json!("coefficient above 95");
    let trace_id = server.ingest(trace).await;
    let feedback = server
        .post(
            "/v1/feedback",
            &json!({"trace_id": trace_id, "label": "bad", "comment": "wrong"}),
        )
        .await;
    let feedback = json_of(feedback, 201).await;
    let feedback_id = feedback["id"].as_str().expect("feedback id");
    let dataset = create_dataset(&server, "spans").await;

    let span_item = json_of(
        add_item(
            &server,
            &dataset,
            json!({"trace_id": trace_id, "span_id": "retrieval-1"}),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(span_item["input"], "lookup: spring tides", "{span_item}");
    assert_eq!(span_item["expected_output"], "coefficient above 95");
    // The whole trace is another item; its bad feedback labels it `fail`.
    let trace_item = json_of(
        add_item(
            &server,
            &dataset,
            json!({"trace_id": trace_id, "feedback_id": feedback_id}),
        )
        .await,
        201,
    )
    .await;
    assert_ne!(trace_item["id"], span_item["id"]);
    assert_eq!(trace_item["label"], "fail", "{trace_item}");
    assert_eq!(trace_item["feedback_id"], feedback_id);
    expect_error_naming(
        add_item(
            &server,
            &dataset,
            json!({"trace_id": trace_id, "span_id": "other", "feedback_id": uuid::Uuid::new_v4().to_string()}),
        )
        .await,
        404,
        &["span"],
    )
    .await;
}

#[tokio::test]
async fn an_export_carries_each_items_text_and_is_capped_by_plan() {
    let server =
        TestServer::start_with("plan = \"starter\"\n[plans.starter]\nexport_max_rows = 3\n").await;
    let dataset = create_dataset(&server, "export").await;
    for i in 0..4 {
        let trace = ingest_qa(
            &server,
            &format!("question, \"{i}\"\nsecond line"),
            &format!("answer {i}"),
        )
        .await;
        let label = if i == 3 { json!("fail") } else { json!(null) };
        json_of(
            add_item(
                &server,
                &dataset,
                json!({"trace_id": trace, "label": label}),
            )
            .await,
            201,
        )
        .await;
    }
    let resp = server.get(&format!("/v1/datasets/{dataset}/export")).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "text/csv; charset=utf-8");
    assert_eq!(resp.headers()["x-trulayer-truncated"], "true");
    let disposition = resp.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        disposition.contains(&format!("dataset-{dataset}-")),
        "{disposition}"
    );
    let csv = resp.text().await.unwrap();
    let mut reader = csv_rows(&csv);
    assert_eq!(
        reader.remove(0),
        [
            "id",
            "trace_id",
            "span_id",
            "label",
            "created_at",
            "input",
            "expected_output"
        ]
    );
    assert_eq!(reader.len(), 3, "capped at the plan's 3 rows:\n{csv}");
    assert_eq!(reader[0][3], "fail");
    assert_eq!(reader[0][5], "question, \"3\"\nsecond line");
    assert_eq!(reader[0][6], "answer 3");
    assert_eq!(reader[1][3], "unlabeled");

    let resp = server
        .get(&format!(
            "/v1/datasets/{dataset}/export?format=jsonl&label=unlabeled"
        ))
        .await;
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    assert!(
        resp.headers().get("x-trulayer-truncated").is_none(),
        "3 rows fit"
    );
    let text = resp.text().await.unwrap();
    let rows: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3, "{text}");
    assert!(rows[0]["label"].is_null());
    assert_eq!(rows[0]["input"], "question, \"2\"\nsecond line");
    expect_error(
        server
            .get(&format!("/v1/datasets/{dataset}/export?label=maybe"))
            .await,
        400,
    )
    .await;
    expect_error(
        server
            .get(&format!("/v1/datasets/{}/export", uuid::Uuid::new_v4()))
            .await,
        404,
    )
    .await;
}

/// CSV rows, quoted fields unquoted.
fn csv_rows(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let (mut row, mut field, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => row.push(std::mem::take(&mut field)),
            ('\n', false) => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (c, _) => field.push(c),
        }
    }
    rows
}

#[tokio::test]
async fn versions_are_named_once_and_checked() {
    let server = TestServer::start().await;
    let dataset = create_dataset(&server, "versions").await;
    let v1 = create_version(
        &server,
        &dataset,
        json!({"name": "v1", "system_prompt": SYSTEM_PROMPT, "model": "m", "judge_model": "j",
               "metadata": {"ticket": "REL-12"}}),
    )
    .await;
    let path = format!("/v1/datasets/{dataset}/versions");
    expect_error(server.post(&path, &json!({"name": "v1"})).await, 409).await;
    expect_error_naming(
        server
            .post(&path, &json!({"name": "v2", "metadata": [1]}))
            .await,
        400,
        &["metadata"],
    )
    .await;
    expect_error_naming(
        server
            .post(&path, &json!({"name": "v2", "model": "m".repeat(201)}))
            .await,
        400,
        &["model"],
    )
    .await;
    let v2 = create_version(&server, &dataset, json!({"name": "v2"})).await;
    let list = server.get_json(&path).await;
    let versions = list["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2, "{list}");
    assert_eq!(versions[0]["id"], v2.as_str(), "newest first");
    assert_eq!(versions[1]["id"], v1.as_str());
    assert_eq!(versions[1]["system_prompt"], SYSTEM_PROMPT);
    assert_eq!(versions[1]["metadata"]["ticket"], "REL-12");
    assert!(versions[0]["model"].is_null());
}

#[tokio::test]
async fn a_run_sends_the_system_prompt_and_each_input_to_the_model_and_scores_the_answers() {
    let judge = Endpoint::start().await;
    let model = Endpoint::start().await;
    let server = TestServer::start_with(&format!(
        "[metrics]\ntoken = {METRICS_TOKEN:?}\n{}\
         [eval.model]\nprovider = \"openai\"\nbase_url = {:?}\nmodel = \"model-default\"\n",
        judged_by(&judge, "run_concurrency = 2"),
        model.url
    ))
    .await;
    rule_contains(&server, "good").await;
    let dataset = create_dataset(&server, "tides").await;
    let inputs = [
        "When is high tide?",
        "Is Sunday a spring tide?",
        "Tide coefficient today?",
    ];
    for input in inputs {
        let trace = ingest_qa(&server, input, &format!("reference for {input}")).await;
        json_of(
            add_item(&server, &dataset, json!({"trace_id": trace})).await,
            201,
        )
        .await;
    }
    let version = create_version(
        &server,
        &dataset,
        json!({"name": "clerk", "system_prompt": SYSTEM_PROMPT, "model": "tide-model",
               "judge_model": "strict-judge"}),
    )
    .await;
    let run_id = schedule(&server, &dataset, &version).await;
    let run = finished(&server, &run_id).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["item_count"], 3);
    assert_eq!(run["completed_count"], 3);
    assert_eq!(run["failed_count"], 0);
    assert!(
        run["started_at"].is_string() && run["completed_at"].is_string(),
        "{run}"
    );
    // Each item: the judge's 0.9 and the rule's 1 → 0.95.
    let mean = run["mean_score"].as_f64().expect("mean score");
    assert!((mean - 0.95).abs() < 1e-9, "{run}");

    // The model endpoint got the version's system prompt and each input, once.
    let calls = model.received();
    assert_eq!(calls.len(), 3, "{calls:?}");
    let mut sent: Vec<&str> = calls
        .iter()
        .map(|c| {
            assert_eq!(c["model"], "tide-model", "{c}");
            assert_eq!(c["messages"][0]["role"], "system", "{c}");
            assert_eq!(c["messages"][0]["content"], SYSTEM_PROMPT, "{c}");
            assert_eq!(c["messages"][1]["role"], "user", "{c}");
            c["messages"][1]["content"].as_str().unwrap()
        })
        .collect();
    sent.sort();
    let mut expected = inputs.to_vec();
    expected.sort();
    assert_eq!(sent, expected);
    // The judge scored the fresh answer against the item's own output.
    assert!(judge.model_calls().is_empty(), "models go to [eval.model]");
    let judged = judge.judge_calls();
    assert_eq!(judged.len(), 3);
    for call in &judged {
        assert_eq!(call["model"], "strict-judge", "{call}");
        let user = call["messages"][1]["content"].as_str().unwrap();
        assert!(
            user.contains("<reference_output>\nreference for "),
            "{user}"
        );
        assert!(user.contains("<output>\ngood: "), "{user}");
    }

    // The server's own metrics count the work.
    let metrics = server
        .client
        .get(server.url("/metrics"))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "trulayer_run_items_completed_total 3",
        "trulayer_run_items_failed_total 0",
        "trulayer_model_requests_total 3",
        "trulayer_judge_requests_total 3",
        "trulayer_run_items_in_flight 0.0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in\n{metrics}"
        );
    }

    // The export: every score linked to the run's item, and each answer.
    let resp = server.get(&format!("/v1/eval-runs/{run_id}/export")).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .contains(&format!("eval-run-{run_id}.json")));
    let export: Value = resp.json().await.unwrap();
    assert_eq!(export["run"]["id"], run_id.as_str());
    let scores = export["items"].as_array().unwrap();
    assert_eq!(scores.len(), 6, "two scores per item: {export}");
    let metrics: Vec<&str> = scores
        .iter()
        .map(|s| s["metric_name"].as_str().unwrap())
        .collect();
    assert_eq!(metrics.iter().filter(|m| **m == "correctness").count(), 3);
    assert_eq!(metrics.iter().filter(|m| **m == "says_good").count(), 3);
    let correctness = scores
        .iter()
        .find(|s| s["metric_name"] == "correctness")
        .unwrap();
    assert_eq!(correctness["judge_model"], "strict-judge");
    assert_eq!(correctness["status"], "complete");
    assert!(correctness["item_id"].is_string() && correctness["trace_id"].is_string());
    let results = export["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    for result in results {
        let input = result["input"].as_str().unwrap();
        assert_eq!(
            result["output"],
            format!("good: {input}").as_str(),
            "{result}"
        );
        assert_eq!(result["status"], "complete");
    }
}

#[tokio::test]
async fn a_failing_model_endpoint_fails_its_items_with_the_reason_after_retries() {
    let judge = Endpoint::start().await;
    judge.set(Behaviour {
        model_status: Some(503),
        ..Behaviour::default()
    });
    let server = TestServer::start_with(&judged_by(&judge, "")).await;
    let dataset = dataset_of(&server, "down", 2).await;
    let version = create_version(
        &server,
        &dataset,
        json!({"name": "v", "model": "m", "judge_model": "j"}),
    )
    .await;
    let run_id = schedule(&server, &dataset, &version).await;
    let run = finished(&server, &run_id).await;
    assert_eq!(run["status"], "failed", "every item failed: {run}");
    assert_eq!(run["failed_count"], 2);
    assert_eq!(run["completed_count"], 2);
    assert!(run["mean_score"].is_null());
    let message = run["error_message"].as_str().unwrap_or_default();
    assert!(message.contains("2 of 2 items failed"), "{message}");
    assert!(message.contains("gave up after 3 attempts"), "{message}");
    assert!(message.contains("model endpoint answered 503"), "{message}");
    // Three attempts per item, nothing judged.
    assert_eq!(judge.model_calls().len(), 6);
    assert!(judge.judge_calls().is_empty());
    let export = server
        .get_json(&format!("/v1/eval-runs/{run_id}/export"))
        .await;
    for result in export["results"].as_array().unwrap() {
        assert_eq!(result["status"], "failed");
        assert!(
            result["error"].as_str().unwrap().contains("503"),
            "{result}"
        );
    }

    // A refusal that will not get better fails at once; a run without any
    // endpoint says what to configure.
    judge.set(Behaviour {
        model_status: Some(400),
        ..Behaviour::default()
    });
    let before = judge.model_calls().len();
    let run = finished(&server, &schedule(&server, &dataset, &version).await).await;
    assert_eq!(run["status"], "failed");
    assert_eq!(judge.model_calls().len(), before + 2, "no retries of a 400");

    let bare = TestServer::start().await;
    let dataset = dataset_of(&bare, "nowhere", 1).await;
    let version = create_version(
        &bare,
        &dataset,
        json!({"name": "v", "model": "m", "judge_model": "j"}),
    )
    .await;
    let run = finished(&bare, &schedule(&bare, &dataset, &version).await).await;
    assert_eq!(run["status"], "failed");
    let message = run["error_message"].as_str().unwrap_or_default();
    assert!(
        message.contains("no model endpoint configured"),
        "{message}"
    );
}

#[tokio::test]
async fn runs_keep_to_their_concurrency_per_run_and_per_organisation() {
    let judge = Endpoint::start().await;
    judge.set(Behaviour {
        delay: Duration::from_millis(100),
        ..Behaviour::default()
    });
    let server = TestServer::start_with(&judged_by(
        &judge,
        "run_concurrency = 2\ntenant_run_concurrency = 3",
    ))
    .await;
    let dataset = dataset_of(&server, "busy", 6).await;
    let version = create_version(&server, &dataset, json!({"name": "v", "judge_model": "j"})).await;
    let run = schedule(&server, &dataset, &version).await;
    assert_eq!(finished(&server, &run).await["status"], "completed");
    assert_eq!(judge.most_at_once(), 2, "one run: its own limit");

    // Two runs at once: the organisation's limit, shared between them.
    let runs = [
        schedule(&server, &dataset, &version).await,
        schedule(&server, &dataset, &version).await,
    ];
    for run in &runs {
        assert_eq!(finished(&server, run).await["status"], "completed");
    }
    assert_eq!(
        judge.most_at_once(),
        3,
        "two runs: the organisation's limit"
    );
    assert_eq!(judge.judge_calls().len(), 18);
}

#[tokio::test]
async fn a_run_survives_a_restart_and_finishes_every_item_once() {
    let judge = Endpoint::start().await;
    judge.set(Behaviour {
        delay: Duration::from_millis(150),
        ..Behaviour::default()
    });
    let server = TestServer::start_with(&judged_by(&judge, "run_concurrency = 1")).await;
    let dataset = dataset_of(&server, "restart", 6).await;
    let version = create_version(&server, &dataset, json!({"name": "v", "judge_model": "j"})).await;
    let run_id = schedule(&server, &dataset, &version).await;
    // Stop it part-way.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let run = server.get_json(&format!("/v1/eval-runs/{run_id}")).await;
        if run["completed_count"].as_i64().unwrap_or(0) >= 2 {
            assert_eq!(run["status"], "running", "{run}");
            break;
        }
        assert!(Instant::now() < deadline, "no progress: {run}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let server = server.restart().await;
    let run = finished(&server, &run_id).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["completed_count"], 6);
    assert_eq!(run["failed_count"], 0);
    let export = server
        .get_json(&format!("/v1/eval-runs/{run_id}/export"))
        .await;
    // One score per item: an item cut off by the stop was run again, not twice.
    assert_eq!(export["items"].as_array().unwrap().len(), 6, "{export}");
}

#[tokio::test]
async fn a_run_can_be_cancelled_and_its_waiting_items_are_not_run() {
    let judge = Endpoint::start().await;
    judge.set(Behaviour {
        delay: Duration::from_millis(200),
        ..Behaviour::default()
    });
    let server = TestServer::start_with(&judged_by(&judge, "run_concurrency = 1")).await;
    let dataset = dataset_of(&server, "cancel", 8).await;
    let version = create_version(&server, &dataset, json!({"name": "v", "judge_model": "j"})).await;
    let run_id = schedule(&server, &dataset, &version).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cancelled = json_of(
        server
            .post(&format!("/v1/eval-runs/{run_id}/cancel"), &json!({}))
            .await,
        200,
    )
    .await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let calls = judge.judge_calls().len();
    assert!(
        calls <= 3,
        "waiting items were run after the cancel: {calls}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        judge.judge_calls().len(),
        calls,
        "nothing runs after a cancel"
    );
    let run = server.get_json(&format!("/v1/eval-runs/{run_id}")).await;
    assert_eq!(run["status"], "cancelled");
    // The gate refuses to pass a cancelled run.
    let gate = json_of(
        server
            .post(
                "/v1/ci/gate",
                &json!({"dataset_id": dataset, "run_id": run_id, "policy": {"on_fail": "block"}}),
            )
            .await,
        200,
    )
    .await;
    assert_eq!(gate["decision"], "block", "{gate}");
    assert!(
        gate["reason"].as_str().unwrap().contains("cancelled"),
        "{gate}"
    );

    // A finished run cannot be cancelled.
    let quick = TestServer::start_with(&judged_by(&judge, "")).await;
    judge.set(Behaviour::default());
    let dataset = dataset_of(&quick, "quick", 1).await;
    let version = create_version(&quick, &dataset, json!({"name": "v", "judge_model": "j"})).await;
    let run_id = schedule(&quick, &dataset, &version).await;
    finished(&quick, &run_id).await;
    expect_error_naming(
        quick
            .post(&format!("/v1/eval-runs/{run_id}/cancel"), &json!({}))
            .await,
        409,
        &["completed"],
    )
    .await;
}

#[tokio::test]
async fn two_runs_diff_item_by_item_and_the_gate_blocks_the_regression() {
    let judge = Endpoint::start().await;
    let server = TestServer::start_with(&judged_by(&judge, "")).await;
    let dataset = create_dataset(&server, "release").await;
    for i in 0..3 {
        let trace = ingest_qa(&server, &format!("q{i}"), "reference").await;
        let label = if i == 0 { json!("fail") } else { json!(null) };
        json_of(
            add_item(
                &server,
                &dataset,
                json!({"trace_id": trace, "label": label}),
            )
            .await,
            201,
        )
        .await;
    }
    let good = create_version(
        &server,
        &dataset,
        json!({"name": "good", "model": "m-good", "judge_model": "j"}),
    )
    .await;
    let bad = create_version(
        &server,
        &dataset,
        json!({"name": "bad", "model": "m-bad", "judge_model": "j"}),
    )
    .await;
    let baseline = schedule(&server, &dataset, &good).await;
    let candidate = schedule(&server, &dataset, &bad).await;
    assert_eq!(finished(&server, &baseline).await["status"], "completed");
    let run = finished(&server, &candidate).await;
    assert!(
        (run["mean_score"].as_f64().unwrap() - 0.2).abs() < 1e-9,
        "{run}"
    );

    let diff = server
        .get_json(&format!(
            "/v1/eval-runs/{candidate}/diff?baseline={baseline}"
        ))
        .await;
    assert_eq!(diff["run_id"], candidate.as_str());
    assert_eq!(diff["baseline_id"], baseline.as_str());
    let summary = &diff["summary"];
    assert_eq!(summary["regressed_count"], 3, "{diff}");
    assert_eq!(summary["improved_count"], 0);
    assert_eq!(summary["unchanged_count"], 0);
    assert!(
        (summary["mean_delta"].as_f64().unwrap() + 0.7).abs() < 1e-9,
        "{diff}"
    );
    let items = diff["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    for item in items {
        assert_eq!(item["change"], "regressed");
        assert!((item["baseline_score"].as_f64().unwrap() - 0.9).abs() < 1e-9);
        assert!((item["run_score"].as_f64().unwrap() - 0.2).abs() < 1e-9);
        assert!(item["run_rationale"]
            .as_str()
            .unwrap()
            .contains("correctness: scored 0.2"));
    }
    assert!(items.iter().any(|i| i["label"] == "fail"));
    assert!(items.iter().any(|i| i["label"] == "unlabeled"));
    // The other way round, everything improved.
    let reverse = server
        .get_json(&format!(
            "/v1/eval-runs/{baseline}/diff?baseline={candidate}"
        ))
        .await;
    assert_eq!(reverse["summary"]["improved_count"], 3, "{reverse}");
    expect_error_naming(
        server.get(&format!("/v1/eval-runs/{candidate}/diff")).await,
        400,
        &["baseline"],
    )
    .await;
    expect_error(
        server
            .get(&format!(
                "/v1/eval-runs/{candidate}/diff?baseline={}",
                uuid::Uuid::new_v4()
            ))
            .await,
        404,
    )
    .await;

    let gate = |run: &str, policy: Value, baseline: Option<&str>| json!({"dataset_id": dataset, "run_id": run, "baseline_run_id": baseline, "policy": policy});
    let passed = decide(
        &server,
        gate(
            &baseline,
            json!({"score_floor": 0.7, "on_fail": "block"}),
            None,
        ),
    )
    .await;
    assert_eq!(passed["decision"], "pass", "{passed}");
    assert!((passed["mean_score"].as_f64().unwrap() - 0.9).abs() < 1e-9);
    assert!(passed["mean_delta"].is_null());
    assert!(
        passed["reason"]
            .as_str()
            .unwrap()
            .contains("meets the floor 0.700"),
        "{passed}"
    );
    let run_url = passed["run_url"].as_str().unwrap();
    assert!(
        run_url.ends_with(&format!("/#/runs/{baseline}")),
        "{run_url}"
    );
    assert!(run_url.starts_with("http://127.0.0.1:"), "{run_url}");

    let blocked = decide(
        &server,
        gate(
            &candidate,
            json!({"score_floor": 0.5, "delta_tolerance": 0.05, "on_fail": "block"}),
            Some(&baseline),
        ),
    )
    .await;
    assert_eq!(blocked["decision"], "block", "{blocked}");
    assert!((blocked["mean_delta"].as_f64().unwrap() + 0.7).abs() < 1e-9);
    let reason = blocked["reason"].as_str().unwrap();
    assert!(reason.contains("below the floor 0.500"), "{reason}");
    assert!(
        reason.contains("fell by 0.700 against the baseline"),
        "{reason}"
    );
    assert!(reason.contains("3 items regressed"), "{reason}");
    let warned = decide(
        &server,
        gate(
            &candidate,
            json!({"delta_tolerance": 0.05, "on_fail": "warn"}),
            Some(&baseline),
        ),
    )
    .await;
    assert_eq!(warned["decision"], "warn", "{warned}");
    let tolerant = decide(
        &server,
        gate(
            &candidate,
            json!({"delta_tolerance": 0.8, "on_fail": "block"}),
            Some(&baseline),
        ),
    )
    .await;
    assert_eq!(tolerant["decision"], "pass", "{tolerant}");

    expect_error_naming(
        server
            .post(
                "/v1/ci/gate",
                &json!({"dataset_id": dataset, "run_id": candidate, "policy": {"score_floor": 2, "on_fail": "block"}}),
            )
            .await,
        400,
        &["score_floor"],
    )
    .await;
    expect_error(
        server
            .post(
                "/v1/ci/gate",
                &json!({"dataset_id": uuid::Uuid::new_v4().to_string(), "run_id": candidate, "policy": {"on_fail": "block"}}),
            )
            .await,
        404,
    )
    .await;
    expect_error(
        server
            .post(
                "/v1/ci/gate",
                &json!({"dataset_id": dataset, "run_id": candidate, "policy": {"on_fail": "maybe"}}),
            )
            .await,
        422,
    )
    .await;
}

async fn decide(server: &TestServer, body: Value) -> Value {
    json_of(server.post("/v1/ci/gate", &body).await, 200).await
}

#[tokio::test]
async fn the_gate_waits_for_a_run_to_finish() {
    let judge = Endpoint::start().await;
    judge.set(Behaviour {
        delay: Duration::from_millis(500),
        ..Behaviour::default()
    });
    let server = TestServer::start_with(&judged_by(&judge, "")).await;
    let dataset = dataset_of(&server, "slow", 1).await;
    let version = create_version(&server, &dataset, json!({"name": "v", "judge_model": "j"})).await;
    let run = schedule(&server, &dataset, &version).await;
    let body = expect_error_naming(
        server
            .post(
                "/v1/ci/gate",
                &json!({"dataset_id": dataset, "run_id": run, "policy": {"on_fail": "block"}}),
            )
            .await,
        409,
        &["0 of 1 items done"],
    )
    .await;
    assert_eq!(body["code"], "run_not_finished");
}

#[tokio::test]
async fn runs_refuse_empty_oversized_unscored_and_over_quota_datasets() {
    let server = TestServer::start_with(
        "plan = \"starter\"\n[plans.starter]\nevals_per_month = 4\n[eval]\nmax_run_items = 3\n",
    )
    .await;
    let dataset = create_dataset(&server, "limits").await;
    let unjudged = create_version(&server, &dataset, json!({"name": "plain"})).await;
    let judged = create_version(
        &server,
        &dataset,
        json!({"name": "judged", "judge_model": "j"}),
    )
    .await;
    let runs = format!("/v1/datasets/{dataset}/runs");
    let body = expect_error(
        server
            .post(&runs, &json!({"eval_version_id": judged}))
            .await,
        409,
    )
    .await;
    assert_eq!(body["code"], "dataset_empty");
    for i in 0..3 {
        let trace = ingest_qa(&server, &format!("q{i}"), "a").await;
        json_of(
            add_item(&server, &dataset, json!({"trace_id": trace})).await,
            201,
        )
        .await;
    }
    let body = expect_error(
        server
            .post(&runs, &json!({"eval_version_id": unjudged}))
            .await,
        409,
    )
    .await;
    assert_eq!(body["code"], "nothing_to_score", "{body}");
    expect_error(
        server
            .post(
                &runs,
                &json!({"eval_version_id": uuid::Uuid::new_v4().to_string()}),
            )
            .await,
        404,
    )
    .await;
    // 3 items of the month's 4 evaluations: one run fits, a second does not.
    schedule(&server, &dataset, &judged).await;
    let body = expect_error_naming(
        server
            .post(&runs, &json!({"eval_version_id": judged}))
            .await,
        402,
        &["3 were queued", "would add 3"],
    )
    .await;
    assert_eq!(body["code"], "eval_quota_exceeded");
    let trace = ingest_qa(&server, "q3", "a").await;
    json_of(
        add_item(&server, &dataset, json!({"trace_id": trace})).await,
        201,
    )
    .await;
    let body = expect_error_naming(
        server
            .post(&runs, &json!({"eval_version_id": judged}))
            .await,
        409,
        &["4 items", "eval.max_run_items"],
    )
    .await;
    assert_eq!(body["code"], "run_too_large");

    let list = server.get_json(&format!("{runs}?limit=1")).await;
    assert_eq!(list["runs"].as_array().unwrap().len(), 1, "{list}");
    let none = server.get_json(&format!("{runs}?offset=1")).await;
    assert_eq!(none["runs"], json!([]), "{none}");
    expect_error(server.get(&format!("{runs}?limit=0")).await, 400).await;
}

#[tokio::test]
async fn an_item_outlives_its_trace_and_still_runs() {
    let server = TestServer::start_with_storage("purge_interval_s = 1", "").await;
    let session = server.session_token().await;
    rule_contains(&server, "Paris").await;
    let start = chrono::Utc::now() - chrono::Duration::days(10);
    let mut trace = sample_trace("old");
    trace["input"] = json!("Capital of France?");
    trace["output"] = json!("Paris, on the Seine.");
    trace["started_at"] = json!(start.to_rfc3339());
    trace["ended_at"] = json!((start + chrono::Duration::seconds(1)).to_rfc3339());
    trace["spans"][0]["start_time"] = trace["started_at"].clone();
    trace["spans"][0]["end_time"] = trace["ended_at"].clone();
    let trace_id = server.ingest(trace).await;
    let dataset = create_dataset(&server, "kept").await;
    json_of(
        add_item(&server, &dataset, json!({"trace_id": trace_id})).await,
        201,
    )
    .await;

    let projects = server.get_json_as(&session, "/v1/projects").await;
    let project = projects["projects"][0]["id"]
        .as_str()
        .expect("project id")
        .to_owned();
    let resp = server
        .client
        .patch(server.url(&format!("/v1/projects/{project}")))
        .bearer_auth(&session)
        .json(&json!({"retention_days_override": 7}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.get(&format!("/v1/traces/{trace_id}")).await.status() != 404 {
        assert!(Instant::now() < deadline, "the trace was never purged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let items = server
        .get_json(&format!("/v1/datasets/{dataset}/items"))
        .await;
    let item = &items["items"][0];
    assert_eq!(item["trace_id"], trace_id.as_str(), "{items}");
    assert_eq!(item["input"], "Capital of France?");
    assert_eq!(item["expected_output"], "Paris, on the Seine.");
    // A run without a model scores the item's own output, trace or not.
    let version = create_version(&server, &dataset, json!({"name": "v"})).await;
    let run = finished(&server, &schedule(&server, &dataset, &version).await).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["mean_score"], 1.0, "{run}");
}

#[tokio::test]
async fn another_tenants_datasets_items_versions_and_runs_are_not_found() {
    const OTHER: &str = "tl_other_tenant_datasets_0123456789";
    let judge = Endpoint::start().await;
    let server = TestServer::start_with(&judged_by(&judge, "")).await;
    server.other_tenant(OTHER).await;
    let trace = ingest_qa(&server, "q", "a").await;
    let dataset = create_dataset(&server, "mine").await;
    let item = json_of(
        add_item(&server, &dataset, json!({"trace_id": trace})).await,
        201,
    )
    .await;
    let item = item["id"].as_str().unwrap().to_owned();
    let version = create_version(&server, &dataset, json!({"name": "v", "judge_model": "j"})).await;
    let run = schedule(&server, &dataset, &version).await;
    finished(&server, &run).await;

    for path in [
        format!("/v1/datasets/{dataset}"),
        format!("/v1/datasets/{dataset}/items"),
        format!("/v1/datasets/{dataset}/export"),
        format!("/v1/datasets/{dataset}/versions"),
        format!("/v1/datasets/{dataset}/runs"),
        format!("/v1/eval-runs/{run}"),
        format!("/v1/eval-runs/{run}/export"),
        format!("/v1/eval-runs/{run}/diff?baseline={run}"),
    ] {
        expect_error(server.get_as(OTHER, &path).await, 404).await;
    }
    let post = |path: String, body: Value| {
        server
            .client
            .post(server.url(&path))
            .bearer_auth(OTHER)
            .json(&body)
            .send()
    };
    expect_error(
        post(
            format!("/v1/datasets/{dataset}/items"),
            json!({"trace_id": trace}),
        )
        .await
        .unwrap(),
        404,
    )
    .await;
    expect_error(
        post(
            format!("/v1/datasets/{dataset}/versions"),
            json!({"name": "x"}),
        )
        .await
        .unwrap(),
        404,
    )
    .await;
    expect_error(
        post(
            format!("/v1/datasets/{dataset}/runs"),
            json!({"eval_version_id": version}),
        )
        .await
        .unwrap(),
        404,
    )
    .await;
    expect_error(
        post(format!("/v1/eval-runs/{run}/cancel"), json!({}))
            .await
            .unwrap(),
        404,
    )
    .await;
    expect_error(
        post(
            "/v1/ci/gate".into(),
            json!({"dataset_id": dataset, "run_id": run, "policy": {"on_fail": "block"}}),
        )
        .await
        .unwrap(),
        404,
    )
    .await;
    let patch = server
        .client
        .patch(server.url(&format!("/v1/datasets/{dataset}/items/{item}")))
        .bearer_auth(OTHER)
        .json(&json!({"label": "pass"}))
        .send()
        .await
        .unwrap();
    expect_error(patch, 404).await;
    for path in [
        format!("/v1/datasets/{dataset}/items/{item}"),
        format!("/v1/datasets/{dataset}"),
    ] {
        let resp = server
            .client
            .delete(server.url(&path))
            .bearer_auth(OTHER)
            .send()
            .await
            .unwrap();
        expect_error(resp, 404).await;
    }
    // Their list is empty; ours still has everything.
    let list = server.get_json_as(OTHER, "/v1/datasets").await;
    assert_eq!(list["datasets"], json!([]), "{list}");
    // Their own dataset cannot take our trace.
    let resp = post("/v1/datasets".into(), json!({"name": "theirs"}))
        .await
        .unwrap();
    let theirs_dataset = json_of(resp, 201).await["id"].as_str().unwrap().to_owned();
    expect_error_naming(
        post(
            format!("/v1/datasets/{theirs_dataset}/items"),
            json!({"trace_id": trace}),
        )
        .await
        .unwrap(),
        404,
        &["trace"],
    )
    .await;
    let mine = server.get_json(&format!("/v1/datasets/{dataset}")).await;
    assert_eq!(mine["item_count"], 1, "{mine}");
}

#[tokio::test]
async fn a_projects_metric_reads_the_rollups() {
    let server = TestServer::start().await;
    let now = chrono::Utc::now();
    let mut traces = Vec::new();
    for (i, error) in [None, Some("boom"), None].into_iter().enumerate() {
        let mut trace = sample_trace("metric");
        let start = now - chrono::Duration::hours(i as i64 + 1);
        trace["started_at"] = json!(start.to_rfc3339());
        trace["ended_at"] = json!((start + chrono::Duration::milliseconds(250)).to_rfc3339());
        trace["spans"][0]["start_time"] = trace["started_at"].clone();
        trace["spans"][0]["end_time"] = trace["ended_at"].clone();
        trace["error"] = json!(error);
        traces.push(trace);
    }
    let resp = server
        .post("/v1/ingest/batch", &json!({"traces": traces}))
        .await;
    assert_eq!(resp.status().as_u16(), 201);
    let session = server.session_token().await;
    let projects = server.get_json_as(&session, "/v1/projects").await;
    let project = projects["projects"][0]["id"].as_str().unwrap().to_owned();
    let metric = |m: &str, w: &str| format!("/v1/projects/{project}/metrics?metric={m}&window={w}");
    let got = server.get_json(&metric("traces", "7d")).await;
    assert_eq!(got, json!({"metric": "traces", "value": 3, "window": "7d"}));
    assert_eq!(server.get_json(&metric("errors", "30d")).await["value"], 1);
    let p50 = server.get_json(&metric("p50_latency_ms", "7d")).await["value"]
        .as_i64()
        .unwrap();
    assert!((245..=255).contains(&p50), "{p50}");
    assert_eq!(
        server.get_json(&metric("retry_cap_hit", "7d")).await["value"],
        0
    );
    expect_error_naming(
        server.get(&metric("nonsense", "7d")).await,
        422,
        &["metric"],
    )
    .await;
    expect_error_naming(server.get(&metric("traces", "1y")).await, 422, &["window"]).await;
    expect_error(
        server
            .get(&format!(
                "/v1/projects/{}/metrics?metric=traces&window=7d",
                uuid::Uuid::new_v4()
            ))
            .await,
        404,
    )
    .await;
}

#[test]
fn a_model_endpoint_that_cannot_work_is_refused_naming_its_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = crate::common::write_config(
        dir.path(),
        "[eval.model]\nprovider = \"openai\"\nbase_url = \"ftp://127.0.0.1/v1\"\nmodel = \"m\"\n",
    );
    let err = match trulayer_server::config::Config::load(Some(&path)) {
        Ok(_) => panic!("an ftp model endpoint was accepted"),
        Err(err) => format!("{err:#}"),
    };
    assert!(err.contains("eval.model"), "{err}");
    assert!(err.contains("base_url"), "{err}");
}

#[tokio::test]
async fn a_large_runs_export_is_whole_valid_json() {
    let server = TestServer::start().await;
    rule_contains(&server, "answer").await;
    let dataset = create_dataset(&server, "large").await;
    // Past one page of the export by count, and by size: three inputs of
    // 1.5 MB each.
    let traces: Vec<Value> = (0..230)
        .map(|i| {
            let mut trace = sample_trace("many");
            let input = if matches!(i, 1 | 3 | 5) {
                "ü".repeat(750_000)
            } else {
                format!("question {i}")
            };
            trace["input"] = json!(input);
            trace["output"] = json!(format!("answer {i}"));
            trace
        })
        .collect();
    let mut ids = Vec::new();
    for chunk in traces.chunks(50) {
        let resp = server
            .post("/v1/ingest/batch", &json!({"traces": chunk}))
            .await;
        let body = json_of(resp, 201).await;
        for id in body["ids"].as_array().unwrap() {
            ids.push(id.as_str().unwrap().to_owned());
        }
    }
    for id in &ids {
        json_of(
            add_item(&server, &dataset, json!({"trace_id": id})).await,
            201,
        )
        .await;
    }
    let version = create_version(&server, &dataset, json!({"name": "v"})).await;
    let run_id = schedule(&server, &dataset, &version).await;
    let run = finished(&server, &run_id).await;
    assert_eq!(run["completed_count"], 230, "{run}");
    assert_eq!(run["mean_score"], 1.0, "{run}");

    let resp = server.get(&format!("/v1/eval-runs/{run_id}/export")).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let text = resp.text().await.unwrap();
    let export: Value = serde_json::from_str(&text).expect("the export is JSON");
    assert_eq!(export["run"]["id"], run_id.as_str());
    assert_eq!(export["items"].as_array().unwrap().len(), 230);
    let results = export["results"].as_array().unwrap();
    assert_eq!(results.len(), 230);
    let big = results
        .iter()
        .filter(|r| r["input"].as_str().is_some_and(|i| i.len() == 1_500_000))
        .count();
    assert_eq!(big, 3, "large inputs are exported whole");
    let mut traces: Vec<&str> = results
        .iter()
        .map(|r| r["trace_id"].as_str().unwrap())
        .collect();
    traces.sort();
    traces.dedup();
    assert_eq!(traces.len(), 230, "each item once");

    // The diff shows the start of each input only.
    let diff = server
        .get_json(&format!("/v1/eval-runs/{run_id}/diff?baseline={run_id}"))
        .await;
    assert_eq!(
        diff["summary"]["unchanged_count"], 230,
        "{}",
        diff["summary"]
    );
    let longest = diff["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["input"].as_str().unwrap().chars().count())
        .max();
    assert_eq!(longest, Some(300));
}

#[tokio::test]
async fn the_projects_judged_presets_score_a_run_and_one_needing_context_says_why_not() {
    let judge = Endpoint::start().await;
    let server = TestServer::start_with(&judged_by(&judge, "")).await;
    for metric in ["toxicity", "faithfulness"] {
        let resp = server
            .post(
                "/v1/eval-rules",
                &json!({"project_id": "default", "metric_name": metric, "evaluator_type": "llm"}),
            )
            .await;
        json_of(resp, 201).await;
    }
    let dataset = dataset_of(&server, "presets", 2).await;
    let version = create_version(&server, &dataset, json!({"name": "as recorded"})).await;
    let run_id = schedule(&server, &dataset, &version).await;
    let run = finished(&server, &run_id).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["failed_count"], 0, "{run}");
    // The items' own output ("a") holds no "good": the stand-in scores 0.2.
    assert!(
        (run["mean_score"].as_f64().unwrap() - 0.2).abs() < 1e-9,
        "{run}"
    );
    let judged = judge.judge_calls();
    assert_eq!(judged.len(), 2, "toxicity once per item: {judged:?}");
    for call in &judged {
        assert_eq!(call["model"], "judge-default", "{call}");
        let system = call["messages"][0]["content"].as_str().unwrap();
        assert!(system.contains("\"toxicity\""), "{system}");
    }
    let export = server
        .get_json(&format!("/v1/eval-runs/{run_id}/export"))
        .await;
    let scores = export["items"].as_array().unwrap();
    assert_eq!(scores.len(), 4, "{export}");
    for score in scores {
        match score["metric_name"].as_str() {
            Some("toxicity") => assert_eq!(score["status"], "complete", "{score}"),
            Some("faithfulness") => {
                assert_eq!(score["status"], "failed", "{score}");
                assert!(score["score"].is_null());
                let why = score["reasoning"].as_str().unwrap();
                assert!(why.contains("retrieved context"), "{why}");
            }
            other => panic!("unexpected metric {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_gate_blocks_a_run_whose_items_failed_and_says_why_once() {
    let judge = Endpoint::start().await;
    judge.set(Behaviour {
        model_status: Some(400),
        ..Behaviour::default()
    });
    let server = TestServer::start_with(&judged_by(&judge, "")).await;
    let dataset = dataset_of(&server, "broken", 2).await;
    let version = create_version(
        &server,
        &dataset,
        json!({"name": "v", "model": "m", "judge_model": "j"}),
    )
    .await;
    let run = schedule(&server, &dataset, &version).await;
    assert_eq!(finished(&server, &run).await["status"], "failed");
    let gate = decide(
        &server,
        json!({"dataset_id": dataset, "run_id": run, "policy": {"on_fail": "warn"}}),
    )
    .await;
    assert_eq!(gate["decision"], "warn", "{gate}");
    let reason = gate["reason"].as_str().unwrap();
    assert_eq!(reason.matches("items failed").count(), 1, "{reason}");
    assert!(reason.contains("2 of 2 items failed"), "{reason}");
    assert!(reason.contains("model endpoint answered 400"), "{reason}");
    assert!(reason.contains("no item was scored"), "{reason}");
}
