//! LLM evaluations against a judge endpoint: a fake judge inside the test
//! records every request the server sends it and answers as the test says,
//! so each test checks both sides: what reached the judge, and what the
//! user then reads from `GET /v1/eval/{id}`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use trulayer_server::config::Config;
use trulayer_server::eval::catalog::{self, PresetRun};
use trulayer_server::server;

use crate::common::{sample_trace, write_config, TestServer};
use crate::evals::{finished, trigger};

const MODEL: &str = "judge-model";
pub(crate) const JUDGE_KEY: &str = "sk-judge-test-0123456789";
const REASONING: &str = "Polite and on topic; nothing toxic.";
const INPUT: &str = "Does the tide table for Saint-Malo list spring tides?";
const OUTPUT: &str = "Yes: the Saint-Malo table marks spring tides with a coefficient above 95.";

/// The API a fake judge speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wire {
    OpenAi,
    Anthropic,
}

impl Wire {
    /// The model's text in this API's reply shape.
    fn reply(self, text: &str) -> Value {
        match self {
            Wire::OpenAi => json!({
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop"
                }]
            }),
            Wire::Anthropic => json!({
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn"
            }),
        }
    }

    /// The (system prompt, user message) of a request body in this API.
    fn prompt(self, body: &Value) -> (String, String) {
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        match self {
            Wire::OpenAi => {
                assert_eq!(body["messages"][0]["role"], "system", "{body}");
                assert_eq!(body["messages"][1]["role"], "user", "{body}");
                (
                    text(&body["messages"][0]["content"]),
                    text(&body["messages"][1]["content"]),
                )
            }
            Wire::Anthropic => {
                assert_eq!(body["messages"][0]["role"], "user", "{body}");
                (text(&body["system"]), text(&body["messages"][0]["content"]))
            }
        }
    }
}

/// What the fake judge answers to one request.
#[derive(Debug, Clone)]
enum Reply {
    /// This text as the model's reply, in the API's reply shape.
    Text(String),
    /// An error status with a short plain body.
    Status(u16),
    /// 429 with `Retry-After` in seconds.
    RateLimited(u64),
    /// A good verdict, after this long.
    Slow(Duration),
}

fn good() -> Reply {
    Reply::Text(json!({"score": 0.9, "label": "pass", "reasoning": REASONING}).to_string())
}

fn garbage() -> Reply {
    Reply::Text("I think it's fine".into())
}

/// One request as the fake judge received it.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Value,
    at: Instant,
}

impl Received {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Debug)]
struct Script {
    /// Answered first, one per request.
    queued: VecDeque<Reply>,
    /// Answered once `queued` is empty.
    then: Reply,
    received: Vec<Received>,
}

/// A judge endpoint on a loopback port, answering as told.
#[derive(Debug, Clone)]
pub(crate) struct FakeJudge {
    wire: Wire,
    address: SocketAddr,
    script: Arc<Mutex<Script>>,
}

impl FakeJudge {
    pub(crate) async fn start(wire: Wire) -> FakeJudge {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake judge");
        let judge = FakeJudge {
            wire,
            address: listener.local_addr().expect("fake judge address"),
            script: Arc::new(Mutex::new(Script {
                queued: VecDeque::new(),
                then: good(),
                received: Vec::new(),
            })),
        };
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(judge.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        judge
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    fn script(&self) -> MutexGuard<'_, Script> {
        self.script.lock().expect("fake judge state")
    }

    /// From now on, every request is answered with `reply`.
    fn answer_always(&self, reply: Reply) {
        self.answer_in_turn([], reply);
    }

    /// The next requests are answered with `first`, one each, then all with `then`.
    fn answer_in_turn(&self, first: impl IntoIterator<Item = Reply>, then: Reply) {
        let mut script = self.script();
        script.queued = first.into_iter().collect();
        script.then = then;
    }

    pub(crate) fn received(&self) -> Vec<Received> {
        self.script().received.clone()
    }

    pub(crate) fn count(&self) -> usize {
        self.script().received.len()
    }

    /// The requests since the first `from`.
    fn received_since(&self, from: usize) -> Vec<Received> {
        self.received().split_off(from)
    }
}

async fn answer(
    State(judge): State<FakeJudge>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = {
        let mut script = judge.script();
        script.received.push(Received {
            method,
            path: uri.path().to_owned(),
            headers,
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            at: Instant::now(),
        });
        let then = script.then.clone();
        script.queued.pop_front().unwrap_or(then)
    };
    match reply {
        Reply::Text(text) => Json(judge.wire.reply(&text)).into_response(),
        Reply::Status(code) => (
            StatusCode::from_u16(code).expect("status code"),
            "the judge is having a bad day",
        )
            .into_response(),
        Reply::RateLimited(seconds) => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", seconds.to_string())],
            "slow down",
        )
            .into_response(),
        Reply::Slow(delay) => {
            tokio::time::sleep(delay).await;
            let Reply::Text(text) = good() else {
                unreachable!("a good verdict is text")
            };
            Json(judge.wire.reply(&text)).into_response()
        }
    }
}

/// `[eval]` with short retries and `[eval.judge]` for `judge`, whose
/// `base_url` is the judge's address and `base_path`; `judge_lines` are
/// added to `[eval.judge]`.
pub(crate) fn judge_toml(
    judge: &FakeJudge,
    base_path: &str,
    workers: usize,
    judge_lines: &str,
) -> String {
    let provider = match judge.wire {
        Wire::OpenAi => "openai",
        Wire::Anthropic => "anthropic",
    };
    format!(
        "[eval]\nworkers = {workers}\ntimeout_s = 30\nmax_attempts = 3\nretry_base_ms = 50\n\
         [eval.judge]\nprovider = {provider:?}\nbase_url = {base:?}\nmodel = {MODEL:?}\n\
         {judge_lines}\n",
        base = judge.url(base_path),
    )
}

/// A server whose judge is `judge` at `{address}/v1`, with `judge_lines` added.
async fn server_judged_by(judge: &FakeJudge, judge_lines: &str) -> TestServer {
    TestServer::start_with(&judge_toml(judge, "/v1", 4, judge_lines)).await
}

pub(crate) async fn ingest_trace(server: &TestServer) -> String {
    let mut trace = sample_trace("judged");
    trace["input"] = json!(INPUT);
    trace["output"] = json!(OUTPUT);
    server.ingest(trace).await
}

/// Triggers an LLM evaluation of `trace_id` and waits for it to finish.
pub(crate) async fn judged(
    server: &TestServer,
    trace_id: &str,
    metric: &str,
    config: Value,
) -> Value {
    let id = trigger(
        server,
        json!({"trace_id": trace_id, "evaluator_type": "llm", "metric_name": metric,
               "config": config}),
    )
    .await;
    let eval = finished(server, &id).await;
    assert_eq!(eval["id"], id.as_str(), "{eval}");
    eval
}

fn rubric(preset: &str) -> &'static str {
    match catalog::preset(preset).map(|p| p.run) {
        Some(PresetRun::Judge { rubric, .. }) => rubric,
        _ => panic!("{preset} is not a judged preset"),
    }
}

pub(crate) fn reasoning(eval: &Value) -> &str {
    eval["reasoning"].as_str().unwrap_or_default()
}

fn assert_failed_saying(eval: &Value, needles: &[&str]) {
    assert_eq!(eval["status"], "failed", "{eval}");
    assert!(
        eval["score"].is_null(),
        "a failed evaluation has no score: {eval}"
    );
    assert!(
        eval["label"].is_null(),
        "a failed evaluation has no label: {eval}"
    );
    for needle in needles {
        assert!(reasoning(eval).contains(needle), "{needle:?} not in {eval}");
    }
}

/// Waits up to ten seconds for `done`.
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn openai_judge_gets_the_rubric_and_the_trace_and_its_verdict_is_recorded() {
    let judge = FakeJudge::start(Wire::OpenAi).await;
    let server = server_judged_by(
        &judge,
        &format!("api_key = {JUDGE_KEY:?}\nmax_tokens = 300"),
    )
    .await;
    let trace_id = ingest_trace(&server).await;

    let eval = judged(&server, &trace_id, "toxicity", json!({})).await;
    assert_eq!(eval["status"], "complete", "{eval}");
    assert_eq!(eval["score"], 0.9);
    assert_eq!(eval["label"], "pass");
    assert_eq!(eval["reasoning"], REASONING);
    assert_eq!(eval["judge_model"], MODEL);
    assert_eq!(eval["evaluator_type"], "llm");
    assert_eq!(eval["trace_id"], trace_id.as_str());
    assert_eq!(eval["attempts"], 1);
    assert!(eval["completed_at"].is_string(), "{eval}");

    let received = judge.received();
    assert_eq!(received.len(), 1, "one judgement, one request");
    let request = &received[0];
    assert_eq!(request.method, Method::POST);
    assert_eq!(request.path, "/v1/chat/completions");
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {JUDGE_KEY}").as_str())
    );
    assert!(
        request
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "{:?}",
        request.headers
    );
    let body = &request.body;
    assert_eq!(body["model"], MODEL, "{body}");
    assert_eq!(body["temperature"], 0, "{body}");
    assert_eq!(body["max_tokens"], 300, "{body}");
    let (system, user) = Wire::OpenAi.prompt(body);
    assert!(
        system.contains(rubric("toxicity")),
        "rubric missing: {system}"
    );
    assert!(system.contains("\"toxicity\""), "{system}");
    assert!(user.contains(INPUT), "{user}");
    assert!(user.contains(OUTPUT), "{user}");
    assert!(!user.contains("<retrieved_context>"), "{user}");
    // The trace is the judge's material, not its instructions.
    assert!(!system.contains(OUTPUT), "{system}");

    // A custom rubric with its own model: both reach the judge, and the
    // evaluation says which model judged it.
    let custom = "Score 1 when the answer names the harbour town.";
    let eval = judged(
        &server,
        &trace_id,
        "names_the_town",
        json!({"prompt": custom, "model": "judge-large"}),
    )
    .await;
    assert_eq!(eval["status"], "complete", "{eval}");
    assert_eq!(eval["judge_model"], "judge-large");
    let received = judge.received_since(1);
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].body["model"], "judge-large");
    let (system, user) = Wire::OpenAi.prompt(&received[0].body);
    assert!(system.contains(custom), "{system}");
    assert!(!system.contains(rubric("toxicity")), "{system}");
    assert!(user.contains(OUTPUT), "{user}");
}

#[tokio::test]
async fn context_metrics_show_the_judge_what_the_retrieval_spans_returned() {
    let judge = FakeJudge::start(Wire::OpenAi).await;
    let server = server_judged_by(&judge, "").await;
    let retrieved = "Tide tables, page 12: Saint-Malo spring tides reach coefficient 119.";
    let not_context = "an LLM span's output is not retrieved context";
    let mut trace = sample_trace("rag");
    trace["input"] = json!(INPUT);
    trace["output"] = json!(OUTPUT);
    trace["spans"] = json!([
        {"name": "search", "type": "retrieval", "input": "saint-malo tides",
         "output": retrieved},
        {"name": "answer", "type": "llm", "model": "gpt-4o-mini", "output": not_context}
    ]);
    let trace_id = server.ingest(trace).await;

    let eval = judged(&server, &trace_id, "faithfulness", json!({})).await;
    assert_eq!(eval["status"], "complete", "{eval}");
    let (system, user) = Wire::OpenAi.prompt(&judge.received()[0].body);
    assert!(system.contains(rubric("faithfulness")), "{system}");
    assert!(user.contains("<retrieved_context>"), "{user}");
    assert!(user.contains(retrieved), "retrieved text missing: {user}");
    assert!(!user.contains(not_context), "{user}");
    assert!(user.contains(INPUT) && user.contains(OUTPUT), "{user}");

    // Toxicity does not need the sources: they are not sent.
    let eval = judged(&server, &trace_id, "toxicity", json!({})).await;
    assert_eq!(eval["status"], "complete", "{eval}");
    let received = judge.received();
    assert_eq!(received.len(), 2);
    let (_, user) = Wire::OpenAi.prompt(&received[1].body);
    assert!(!user.contains(retrieved), "{user}");
    assert!(!user.contains("<retrieved_context>"), "{user}");
    assert!(user.contains(OUTPUT), "{user}");

    // A metric judged against sources, on a trace without any, fails
    // plainly instead of asking the judge to guess.
    let bare = ingest_trace(&server).await;
    let eval = judged(&server, &bare, "groundedness", json!({})).await;
    assert_failed_saying(&eval, &["groundedness", "retrieval span"]);
    assert_eq!(judge.received().len(), 2, "nothing was sent for it");
}

#[tokio::test]
async fn replies_that_are_not_verdicts_fail_quoting_the_reply_and_fenced_verdicts_count() {
    let judge = FakeJudge::start(Wire::OpenAi).await;
    let server = server_judged_by(&judge, "").await;
    let trace_id = ingest_trace(&server).await;

    judge.answer_always(garbage());
    let eval = judged(&server, &trace_id, "toxicity", json!({})).await;
    assert_failed_saying(&eval, &["no JSON object", "I think it's fine"]);
    assert_eq!(eval["attempts"], 1, "asking again will not help: {eval}");
    assert_eq!(judge.count(), 1);

    judge.answer_always(Reply::Text(
        json!({"score": 1.7, "label": "pass", "reasoning": "Great!"}).to_string(),
    ));
    let eval = judged(&server, &trace_id, "toxicity", json!({})).await;
    assert_failed_saying(&eval, &["1.7", "outside [0, 1]"]);
    assert_eq!(eval["attempts"], 1, "{eval}");
    assert_eq!(judge.count(), 2);

    judge.answer_always(Reply::Text(
        "Sure! Here is my verdict:\n```json\n{\"score\": 0.35, \"label\": \"fail\", \
         \"reasoning\": \"Curt and a little dismissive.\"}\n```\nLet me know if you need more."
            .into(),
    ));
    let eval = judged(&server, &trace_id, "toxicity", json!({})).await;
    assert_eq!(eval["status"], "complete", "{eval}");
    assert_eq!(eval["score"], 0.35);
    assert_eq!(eval["label"], "fail");
    assert_eq!(eval["reasoning"], "Curt and a little dismissive.");
    assert_eq!(judge.count(), 3);
}

#[tokio::test]
async fn a_judge_that_errs_once_or_asks_to_wait_is_tried_again_until_it_answers() {
    let judge = FakeJudge::start(Wire::OpenAi).await;
    let server = server_judged_by(&judge, "").await;
    let trace_id = ingest_trace(&server).await;

    judge.answer_in_turn([Reply::Status(500)], good());
    let eval = judged(&server, &trace_id, "toxicity", json!({})).await;
    assert_eq!(eval["status"], "complete", "{eval}");
    assert_eq!(eval["score"], 0.9);
    assert_eq!(eval["attempts"], 2, "{eval}");
    assert_eq!(judge.count(), 2);

    judge.answer_in_turn([Reply::RateLimited(1)], good());
    let eval = judged(&server, &trace_id, "toxicity", json!({})).await;
    assert_eq!(eval["status"], "complete", "{eval}");
    assert_eq!(eval["attempts"], 2, "{eval}");
    let received = judge.received_since(2);
    assert_eq!(received.len(), 2);
    // The wait is the judge's Retry-After, not the 50 ms backoff.
    let waited = received[1].at - received[0].at;
    assert!(
        waited >= Duration::from_millis(900),
        "retried after {waited:?}"
    );
}

#[tokio::test]
async fn a_judge_that_keeps_failing_is_given_up_on_after_max_attempts() {
    let judge = FakeJudge::start(Wire::OpenAi).await;
    let server = server_judged_by(&judge, "").await;
    let trace_id = ingest_trace(&server).await;

    judge.answer_always(Reply::Status(500));
    let eval = judged(&server, &trace_id, "toxicity", json!({})).await;
    assert_failed_saying(&eval, &["gave up after 3 attempts", "500"]);
    assert_eq!(eval["attempts"], 3, "{eval}");
    // Nothing more is sent once it has failed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(judge.count(), 3, "max_attempts = 3");
}

#[tokio::test]
async fn a_judge_slower_than_its_timeout_is_retried_then_given_up_on() {
    let judge = FakeJudge::start(Wire::OpenAi).await;
    let server = server_judged_by(&judge, "timeout_s = 1").await;
    let trace_id = ingest_trace(&server).await;

    judge.answer_always(Reply::Slow(Duration::from_secs(3)));
    let id = trigger(
        &server,
        json!({"trace_id": trace_id, "evaluator_type": "llm", "metric_name": "toxicity"}),
    )
    .await;
    // While it is retried, the evaluation says why.
    let deadline = Instant::now() + Duration::from_secs(10);
    let retrying = loop {
        let eval = server.get_json(&format!("/v1/eval/{id}")).await;
        if eval["last_error"].is_string() {
            break eval;
        }
        assert!(Instant::now() < deadline, "no retry shown: {eval}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        matches!(retrying["status"].as_str(), Some("pending" | "running")),
        "{retrying}"
    );
    let last_error = retrying["last_error"].as_str().unwrap_or_default();
    assert!(last_error.contains("timed out"), "{retrying}");

    let eval = finished(&server, &id).await;
    assert_failed_saying(&eval, &["gave up after 3 attempts", "timed out"]);
    assert_eq!(judge.count(), 3);
}

#[tokio::test]
async fn anthropic_judge_gets_a_messages_request_and_is_retried_and_refused_alike() {
    let judge = FakeJudge::start(Wire::Anthropic).await;
    // The base URL of api.anthropic.com has no /v1.
    let toml = judge_toml(
        &judge,
        "",
        4,
        &format!("api_key = {JUDGE_KEY:?}\nmax_tokens = 300"),
    );
    let server = TestServer::start_with(&toml).await;
    let trace_id = ingest_trace(&server).await;

    let eval = judged(&server, &trace_id, "toxicity", json!({})).await;
    assert_eq!(eval["status"], "complete", "{eval}");
    assert_eq!(eval["score"], 0.9);
    assert_eq!(eval["label"], "pass");
    assert_eq!(eval["reasoning"], REASONING);
    assert_eq!(eval["judge_model"], MODEL);
    let received = judge.received();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.method, Method::POST);
    assert_eq!(request.path, "/v1/messages");
    assert_eq!(request.header("x-api-key"), Some(JUDGE_KEY));
    assert_eq!(request.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(
        request.header("authorization"),
        None,
        "the key goes in x-api-key"
    );
    let body = &request.body;
    assert_eq!(body["model"], MODEL, "{body}");
    assert_eq!(body["max_tokens"], 300, "{body}");
    assert_eq!(body["temperature"], 0, "{body}");
    assert_eq!(body["messages"].as_array().map(Vec::len), Some(1), "{body}");
    let (system, user) = Wire::Anthropic.prompt(body);
    assert!(system.contains(rubric("toxicity")), "{system}");
    assert!(user.contains(INPUT) && user.contains(OUTPUT), "{user}");

    judge.answer_always(garbage());
    let eval = judged(&server, &trace_id, "toxicity", json!({})).await;
    assert_failed_saying(&eval, &["I think it's fine"]);
    assert_eq!(eval["attempts"], 1, "{eval}");

    judge.answer_in_turn([Reply::Status(500)], good());
    let eval = judged(&server, &trace_id, "toxicity", json!({})).await;
    assert_eq!(eval["status"], "complete", "{eval}");
    assert_eq!(eval["attempts"], 2, "{eval}");
    assert_eq!(judge.count(), 4);
}

#[tokio::test]
async fn anthropic_base_url_ending_in_v1_is_not_given_a_second_v1() {
    let judge = FakeJudge::start(Wire::Anthropic).await;
    let server = server_judged_by(&judge, "").await;
    let trace_id = ingest_trace(&server).await;
    let eval = judged(&server, &trace_id, "toxicity", json!({})).await;
    assert_eq!(eval["status"], "complete", "{eval}");
    assert_eq!(judge.received()[0].path, "/v1/messages");
}

#[tokio::test]
async fn no_key_configured_sends_no_key_header() {
    for wire in [Wire::OpenAi, Wire::Anthropic] {
        let judge = FakeJudge::start(wire).await;
        let server = server_judged_by(&judge, "").await;
        let trace_id = ingest_trace(&server).await;
        let eval = judged(&server, &trace_id, "toxicity", json!({})).await;
        assert_eq!(eval["status"], "complete", "{wire:?}: {eval}");
        let received = judge.received();
        assert_eq!(received.len(), 1);
        let request = &received[0];
        assert_eq!(request.header("authorization"), None, "{wire:?}");
        assert_eq!(request.header("x-api-key"), None, "{wire:?}");
        server.stop().await;
    }
}

#[tokio::test]
async fn a_judge_key_variable_that_is_not_set_stops_the_server_from_starting() {
    const VARIABLE: &str = "JUDGES_TEST_KEY_VARIABLE_NEVER_SET";
    assert!(
        std::env::var_os(VARIABLE).is_none(),
        "{VARIABLE} must not be set"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let judge = format!(
        "[eval.judge]\nprovider = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\
         model = {MODEL:?}\napi_key_env = {VARIABLE:?}\n"
    );
    let path = write_config(dir.path(), &judge);
    let config = Config::load(Some(&path)).expect("the file itself is valid");
    let err = match server::start(config).await {
        Ok(running) => {
            running.stop().await.expect("stop");
            panic!("started with {VARIABLE} unset");
        }
        Err(err) => format!("{err:#}"),
    };
    assert!(err.contains(VARIABLE), "{err}");
    assert!(err.contains("api_key_env"), "{err}");
    assert!(err.contains("not set"), "{err}");

    // The refused start left nothing behind: without the judge it starts.
    let path = write_config(dir.path(), "");
    let server = TestServer::start_in(dir, &path).await;
    server.get_json("/v1/eval").await;
    server.stop().await;
}

#[tokio::test]
async fn evaluations_cut_off_by_a_stop_all_finish_once_after_the_restart() {
    let judge = FakeJudge::start(Wire::OpenAi).await;
    judge.answer_always(Reply::Slow(Duration::from_secs(60)));
    let server = TestServer::start_with(&judge_toml(&judge, "/v1", 1, "timeout_s = 60")).await;
    let trace_id = ingest_trace(&server).await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(
            trigger(
                &server,
                json!({"trace_id": trace_id, "evaluator_type": "llm",
                       "metric_name": "toxicity"}),
            )
            .await,
        );
    }
    wait_until("the first judge request", || judge.count() == 1).await;
    let list = server.get_json("/v1/eval?limit=100").await;
    // Some wait for the judge's one worker, one is being judged: none is done.
    let evals = list["evals"].as_array().expect("evals");
    assert_eq!(evals.len(), 4, "{list}");
    let status = |id: &str| {
        evals
            .iter()
            .find(|e| e["id"] == id)
            .and_then(|e| e["status"].as_str())
            .unwrap_or_default()
            .to_owned()
    };
    // Only the evaluation the judge is working on is running.
    assert_eq!(status(&ids[0]), "running", "{list}");
    for id in &ids[1..] {
        assert_eq!(status(id), "pending", "{list}");
    }
    // Rule evaluations do not wait behind the stuck judge.
    let rule = trigger(
        &server,
        json!({"trace_id": trace_id, "evaluator_type": "rule", "metric_name": "not_empty"}),
    )
    .await;
    assert_eq!(finished(&server, &rule).await["status"], "complete");

    judge.answer_always(good());
    let server = server.restart().await;
    for id in &ids {
        let eval = finished(&server, id).await;
        assert_eq!(eval["status"], "complete", "{eval}");
        assert_eq!(eval["score"], 0.9, "{eval}");
        assert_eq!(eval["judge_model"], MODEL, "{eval}");
    }
    // The cut-off attempt counts; the others were tried once.
    for (i, id) in ids.iter().enumerate() {
        let eval = server.get_json(&format!("/v1/eval/{id}")).await;
        assert_eq!(eval["attempts"], if i == 0 { 2 } else { 1 }, "{eval}");
    }
    let list = server.get_json("/v1/eval?limit=100").await;
    let mut listed: Vec<&str> = list["evals"]
        .as_array()
        .expect("evals")
        .iter()
        .filter(|e| e["evaluator_type"] == "llm")
        .map(|e| e["id"].as_str().unwrap_or_default())
        .collect();
    listed.sort_unstable();
    let mut triggered: Vec<&str> = ids.iter().map(String::as_str).collect();
    triggered.sort_unstable();
    assert_eq!(listed, triggered, "none lost, none doubled: {list}");
    // One cut-off request, then one per evaluation.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(judge.count(), 5);
}
