//! Memory per request is bounded by design: the SDK's largest batches are
//! taken whole, requests past the span limits are refused before they are
//! decoded, request data in flight has a budget (503 past it), and a list
//! page holds a bounded amount of JSON however large the traces are.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{expect_error, expect_error_naming, sample_trace, TestServer};

/// A realistic trace of about `input_bytes` of input: a system prompt
/// repeated in every call, then the user's question.
fn trace_with_input(i: usize, input_bytes: usize) -> Value {
    let mut trace = sample_trace(&format!("big-{i}"));
    let prompt = "You are a careful assistant for an insurance company. ";
    let mut input = prompt.repeat(input_bytes / prompt.len() + 1);
    input.truncate(input_bytes - 32);
    input.push_str(&format!(" Claim number {i:>17}?"));
    trace["input"] = json!(input);
    trace
}

async fn post_batch(server: &TestServer, traces: &[Value]) -> (u16, Value) {
    let body = serde_json::to_vec(&json!({ "traces": traces })).expect("JSON");
    let resp = server
        .client
        .post(server.url("/v1/ingest/batch"))
        .bearer_auth(&server.key)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("sent");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON answer"))
}

#[tokio::test]
async fn batches_of_ten_thousand_traces_and_of_64_mib_are_stored_whole() {
    let server = TestServer::start().await;
    // Ten thousand traces, as the SDK sends a burst's queue in one batch.
    let many: Vec<Value> = (0..10_000)
        .map(|i| sample_trace(&format!("burst {i}")))
        .collect();
    let (status, answer) = post_batch(&server, &many).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["ingested"], 10_000);
    assert_eq!(answer["ids"].as_array().map(Vec::len), Some(10_000));
    let metrics = server
        .get_json("/v1/metrics?from=2026-03-01T00:00:00Z&to=2026-03-02T00:00:00Z")
        .await;
    assert_eq!(metrics["total_traces"], 10_000);

    // A body just under 64 MiB: a hundred traces of large inputs.
    let large: Vec<Value> = (0..100).map(|i| trace_with_input(i, 668_000)).collect();
    let size = serde_json::to_vec(&json!({ "traces": &large }))
        .expect("JSON")
        .len();
    assert!(size > 63 << 20 && size <= 64 << 20, "{size} bytes");
    let (status, answer) = post_batch(&server, &large).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["ingested"], 100);
    let last = large[99]["id"].as_str().expect("id");
    let stored = server.get_json(&format!("/v1/traces/{last}")).await;
    assert_eq!(stored["input"], large[99]["input"]);

    // One byte over 64 MiB is refused for its size, naming the limit.
    let mut over = br#"{"traces": [], "pad": ""#.to_vec();
    over.resize((64 << 20) + 1 - 2, b'x');
    over.extend_from_slice(b"\"}");
    let resp = server
        .client
        .post(server.url("/v1/ingest/batch"))
        .bearer_auth(&server.key)
        .header("content-type", "application/json")
        .body(over)
        .send()
        .await
        .expect("sent");
    let body = expect_error_naming(resp, 413, &["67108864"]).await;
    assert_eq!(body["code"], "payload_too_large");
    // The single-trace route keeps its own, smaller limit.
    let resp = server
        .post("/v1/ingest", &trace_with_input(0, 6 << 20))
        .await;
    expect_error_naming(resp, 413, &["5242880"]).await;
    server.stop().await;
}

#[tokio::test]
async fn spans_past_the_request_limit_are_refused_before_anything_is_stored() {
    let server = TestServer::start_with("[limits]\nbatch_max_spans = 1000\n").await;
    let trace = |spans: usize| {
        let mut t = sample_trace("many spans");
        t["spans"] = json!((0..spans)
            .map(|i| json!({"name": format!("step {i}"), "type": "tool"}))
            .collect::<Vec<_>>());
        t
    };
    let resp = server
        .post(
            "/v1/ingest/batch",
            &json!({"traces": [trace(600), trace(401)]}),
        )
        .await;
    let body = expect_error_naming(resp, 413, &["1000", "1001"]).await;
    assert_eq!(body["code"], "too_many_spans");
    let resp = server.post("/v1/ingest", &trace(1001)).await;
    expect_error_naming(resp, 413, &["1000"]).await;
    assert!(server.list_all("", 50).await.is_empty());
    let resp = server
        .post(
            "/v1/ingest/batch",
            &json!({"traces": [trace(600), trace(400)]}),
        )
        .await;
    assert_eq!(resp.status(), 201);
    assert_eq!(server.list_all("", 50).await.len(), 2);
    server.stop().await;
}

/// Starts a request whose body is `declared` bytes long, sends `sent` of
/// them and leaves it hanging: its charge stays held.
async fn stalled_upload(
    server: &TestServer,
    declared: usize,
    sent: usize,
) -> tokio::net::TcpStream {
    let addr = server.url.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /v1/ingest HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n",
        server.key
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    stream.write_all(&vec![b' '; sent]).await.expect("part");
    stream
}

#[tokio::test]
async fn request_data_past_its_budget_is_answered_503_with_retry_after() {
    let server = TestServer::start_with(
        "[limits]\njson_body_max_bytes = 1048576\nbatch_body_max_bytes = 1048576\n\
         otlp_body_max_bytes = 1048576\nrequest_memory_max_bytes = 4194304\n",
    )
    .await;
    // One upload of 1 MiB in progress holds three quarters of the budget:
    // its body and what decoding it is expected to take.
    let mut first = stalled_upload(&server, 1 << 20, 1000).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let big = {
        let mut t = sample_trace("waits for room");
        t["input"] = json!("y".repeat(900_000));
        t
    };
    let resp = server.post("/v1/ingest", &big).await;
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = expect_error(resp, 503).await;
    assert_eq!(body["code"], "server_busy");
    assert_eq!(retry_after.as_deref(), Some("1"));
    // Small requests still fit beside it.
    assert_eq!(
        server
            .post("/v1/ingest", &sample_trace("small"))
            .await
            .status(),
        201
    );
    // Once the stalled upload finishes (and is refused as not JSON), its
    // charge is given back and the large request goes through.
    first
        .write_all(&vec![b'x'; (1 << 20) - 1000])
        .await
        .expect("rest of the body");
    let mut answer = vec![0; 12];
    first.read_exact(&mut answer).await.expect("answer");
    assert_eq!(&answer, b"HTTP/1.1 400");
    drop(first);
    let resp = server.post("/v1/ingest", &big).await;
    assert_eq!(resp.status(), 201);
    server.stop().await;
}

#[tokio::test]
async fn a_list_page_holds_at_most_4_mib_and_cuts_only_huge_values() {
    let server = TestServer::start().await;
    let mut ids = Vec::new();
    for i in 0..12 {
        let mut trace = trace_with_input(i, 1_500_000);
        trace["session_id"] = json!("long-session");
        ids.push(server.ingest(trace).await);
    }
    let small = server.ingest(sample_trace("small")).await;

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/traces?limit=200&cursor={c}"),
            None => "/v1/traces?limit=200".to_owned(),
        };
        let resp = server.get(&path).await;
        assert_eq!(resp.status(), 200);
        let text = resp.text().await.expect("body");
        assert!(
            text.len() <= 4 << 20,
            "a page of {} bytes passes 4 MiB",
            text.len()
        );
        let page: Value = serde_json::from_str(&text).expect("JSON page");
        pages += 1;
        for trace in page["traces"].as_array().expect("traces") {
            let id = trace["id"].as_str().expect("id").to_owned();
            let input = trace["input"].as_str().expect("input");
            if id == small {
                assert!(trace.get("truncated").is_none(), "{}", trace["truncated"]);
                assert_eq!(input, "What is the capital of France?");
            } else {
                assert_eq!(trace["truncated"], json!(["input"]));
                assert!(input.len() <= 512 << 10 && input.len() > 500 << 10);
                assert!(input.starts_with("You are a careful assistant"));
            }
            seen.push(id);
        }
        match page["next_cursor"].as_str() {
            Some(c) => {
                assert_eq!(page["has_more"], true);
                cursor = Some(c.to_owned());
            }
            None => break,
        }
        assert!(pages < 20, "the cursor does not move on");
    }
    assert!(pages >= 2, "the page ended early and a cursor carried on");
    let mut expected = ids.clone();
    expected.push(small);
    expected.sort();
    seen.sort();
    assert_eq!(seen, expected, "every trace listed exactly once");

    // The detail has the input whole.
    let detail = server.get_json(&format!("/v1/traces/{}", ids[3])).await;
    assert_eq!(detail["input"].as_str().map(str::len), Some(1_500_000));
    assert!(detail.get("truncated").is_none());

    // A session's page is bounded the same way, and says more were left out.
    let resp = server.get("/v1/sessions/long-session").await;
    let text = resp.text().await.expect("body");
    assert!(text.len() <= 4 << 20, "{} bytes", text.len());
    let session: Value = serde_json::from_str(&text).expect("JSON");
    let listed = session["traces"].as_array().expect("traces").len();
    assert!((1..12).contains(&listed), "{listed} traces");
    assert_eq!(session["has_more"], true);
    server.stop().await;
}
