//! `GET /v1/traces/live`: a client sees each new trace of its tenant at
//! once, and only those.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{sample_trace, TestServer};

/// Reads SSE `data:` payloads until one arrives or `within` passes.
async fn next_event(
    resp: &mut reqwest::Response,
    buffer: &mut String,
    within: Duration,
) -> Option<Value> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            if let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data:")) {
                return serde_json::from_str(data.trim()).ok();
            }
            continue;
        }
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, resp.chunk()).await {
            Ok(Ok(Some(bytes))) => buffer.push_str(&String::from_utf8_lossy(&bytes)),
            _ => return None,
        }
    }
}

#[tokio::test]
async fn a_client_sees_its_new_traces_within_a_second_and_no_one_elses() {
    let server = TestServer::start().await;
    let other = "tl_live_other_tenant_0123456789";
    server.other_tenant(other).await;

    let mut resp = server
        .client
        .get(server.url("/v1/traces/live"))
        .bearer_auth(&server.key)
        .send()
        .await
        .expect("live feed");
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("text/event-stream"));

    // Another tenant's trace first: it must not reach this client.
    let theirs = server
        .post_as(other, "/v1/ingest", &sample_trace("theirs"))
        .await;
    assert_eq!(theirs.status().as_u16(), 201);
    let sent = Instant::now();
    let mine = server.ingest(sample_trace("mine")).await;
    let mut buffer = String::new();
    let event = next_event(&mut resp, &mut buffer, Duration::from_secs(5))
        .await
        .expect("an event for the new trace");
    let took = sent.elapsed();
    assert_eq!(
        event["trace_id"],
        mine.as_str(),
        "the first event is this tenant's trace"
    );
    assert_eq!(event["name"], "mine");
    assert_eq!(event["status"], "ok");
    assert_eq!(event["latency_ms"], 2500);
    assert!(event["created_at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert!(took < Duration::from_secs(1), "seen after {took:?}");
}

#[tokio::test]
async fn a_trace_created_over_otlp_is_announced_once() {
    let server = TestServer::start().await;
    let mut resp = server
        .client
        .get(server.url("/v1/traces/live"))
        .bearer_auth(&server.key)
        .send()
        .await
        .expect("live feed");
    assert_eq!(resp.status().as_u16(), 200);
    let span = |span_id: &str, parent: Option<&str>, name: &str, status: i64| {
        let mut s = serde_json::json!({
            "traceId": "4bf92f3577b34da6a3ce929d0e0e4736",
            "spanId": span_id,
            "name": name,
            "startTimeUnixNano": "1767225600000000000",
            "endTimeUnixNano": "1767225600750000000",
            "status": {"code": status, "message": "upstream timed out"}
        });
        if let Some(p) = parent {
            s["parentSpanId"] = p.into();
        }
        serde_json::json!({"resourceSpans": [{"scopeSpans": [{"spans": [s]}]}]})
    };
    let post = |body: Value| {
        let server = &server;
        async move {
            let resp = server
                .client
                .post(server.url("/v1/otlp/traces"))
                .bearer_auth(&server.key)
                .json(&body)
                .send()
                .await
                .expect("sent");
            assert_eq!(resp.status().as_u16(), 200);
        }
    };
    post(span("00f067aa0ba902b7", None, "agent-run", 2)).await;
    let mut buffer = String::new();
    let event = next_event(&mut resp, &mut buffer, Duration::from_secs(5))
        .await
        .expect("an event for the OTLP trace");
    assert_eq!(event["trace_id"], "4bf92f35-77b3-4da6-a3ce-929d0e0e4736");
    assert_eq!(event["name"], "agent-run");
    assert_eq!(event["status"], "error");
    assert_eq!(event["latency_ms"], 750);
    // A later span of the same trace adds to it: no second announcement.
    post(span(
        "b7ad6b7169203331",
        Some("00f067aa0ba902b7"),
        "tool",
        1,
    ))
    .await;
    assert!(
        next_event(&mut resp, &mut buffer, Duration::from_millis(700))
            .await
            .is_none(),
        "a merge is not a new trace"
    );
}
