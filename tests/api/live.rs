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

/// The Prometheus sample `series` of `/metrics` (behind `token`).
async fn metric(server: &TestServer, token: &str, series: &str) -> f64 {
    let text = server
        .client
        .get(server.url("/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in {text}"))
}

#[tokio::test]
async fn one_trace_sent_as_json_and_as_otlp_is_stored_counted_and_announced_alike() {
    const TOKEN: &str = "scrape-token-0123456789";
    let server = TestServer::start_with(&format!("[metrics]\ntoken = {TOKEN:?}\n")).await;
    let mut feed = server
        .client
        .get(server.url("/v1/traces/live"))
        .bearer_auth(&server.key)
        .send()
        .await
        .expect("live feed");
    assert_eq!(feed.status().as_u16(), 200);

    // The same three spans: an agent run, a retrieval tool naming the
    // embedding model it used, and the LLM call. The trace itself states
    // nothing, so everything comes from the spans.
    const T0: i64 = 1_767_225_600_000_000_000;
    let spans = [
        ("run", None, "agent-run", "other", None, 0, 900, 0, 0, None),
        (
            "retrieve",
            Some("run"),
            "retrieve",
            "tool",
            Some("text-embedding-3-small"),
            10,
            200,
            7,
            0,
            Some(0.00001),
        ),
        (
            "llm",
            Some("run"),
            "openai.chat",
            "llm",
            Some("gpt-4o-mini"),
            300,
            850,
            42,
            3,
            Some(0.0002),
        ),
    ];
    let at = |ms: i64| T0 + ms * 1_000_000;
    let rfc3339 = |nanos: i64| {
        chrono::DateTime::from_timestamp_nanos(nanos)
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    };
    let json_trace = serde_json::json!({
        "id": "0194a5b6-c7d8-7e9f-8a0b-1c2d3e4f5a6b",
        "name": "agent-run",
        "spans": spans.iter().map(|(id, parent, name, kind, model, start, end, prompt, completion, cost)| {
            serde_json::json!({
                "id": format!("json-{id}"),
                "parent_span_id": parent.map(|p| format!("json-{p}")),
                "name": name, "type": kind, "model": model,
                "start_time": rfc3339(at(*start)), "end_time": rfc3339(at(*end)),
                "prompt_tokens": prompt, "completion_tokens": completion, "cost": cost,
            })
        }).collect::<Vec<_>>(),
    });
    let span_id = |id: &str| format!("{:0>16}", hex_of(id));
    let otlp_trace = serde_json::json!({"resourceSpans": [{"scopeSpans": [{"spans":
        spans.iter().map(|(id, parent, name, kind, model, start, end, prompt, completion, cost)| {
            let mut attributes = vec![
                serde_json::json!({"key": "gen_ai.usage.input_tokens", "value": {"intValue": prompt.to_string()}}),
                serde_json::json!({"key": "gen_ai.usage.output_tokens", "value": {"intValue": completion.to_string()}}),
                serde_json::json!({"key": "trulayer.span.type", "value": {"stringValue": kind}}),
            ];
            if let Some(model) = model {
                attributes.push(serde_json::json!({"key": "gen_ai.request.model", "value": {"stringValue": model}}));
            }
            if let Some(cost) = cost {
                attributes.push(serde_json::json!({"key": "gen_ai.usage.cost", "value": {"doubleValue": cost}}));
            }
            let mut span = serde_json::json!({
                "traceId": "4bf92f3577b34da6a3ce929d0e0e4737",
                "spanId": span_id(id),
                "name": name,
                "startTimeUnixNano": at(*start).to_string(),
                "endTimeUnixNano": at(*end).to_string(),
                "attributes": attributes,
            });
            if let Some(p) = parent {
                span["parentSpanId"] = span_id(p).into();
            }
            span
        }).collect::<Vec<_>>()
    }]}]});

    assert_eq!(server.post("/v1/ingest", &json_trace).await.status(), 201);
    let resp = server
        .client
        .post(server.url("/v1/otlp/traces"))
        .bearer_auth(&server.key)
        .json(&otlp_trace)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status().as_u16(), 200);

    let from_json = server
        .get_json("/v1/traces/0194a5b6-c7d8-7e9f-8a0b-1c2d3e4f5a6b")
        .await;
    let from_otlp = server
        .get_json("/v1/traces/4bf92f35-77b3-4da6-a3ce-929d0e0e4737")
        .await;
    for field in [
        "name",
        "model",
        "latency_ms",
        "total_token_count",
        "cost",
        "error",
        "span_count",
        "started_at",
        "ended_at",
    ] {
        assert_eq!(
            from_json[field], from_otlp[field],
            "{field}: JSON {from_json}\nOTLP {from_otlp}"
        );
    }
    // The root names no model: the LLM span's, not the tool's that came
    // first.
    assert_eq!(from_json["model"], "gpt-4o-mini");
    assert_eq!(from_json["total_token_count"], 52);
    assert_eq!(from_json["latency_ms"], 900);

    // Both announced, in the order they were stored.
    let mut buffer = String::new();
    let mut announced = Vec::new();
    for _ in 0..2 {
        let event = next_event(&mut feed, &mut buffer, Duration::from_secs(5))
            .await
            .expect("an event per new trace");
        announced.push((event["trace_id"].clone(), event["latency_ms"].clone()));
    }
    assert_eq!(
        announced,
        [
            (from_json["id"].clone(), Value::from(900)),
            (from_otlp["id"].clone(), Value::from(900))
        ]
    );

    // Counted once each, after the commit: sent again (a duplicate, and
    // spans merged into the stored trace), neither is a new trace.
    assert_eq!(
        metric(&server, TOKEN, "trulayer_ingested_traces_total").await,
        2.0
    );
    assert_eq!(server.post("/v1/ingest", &json_trace).await.status(), 200);
    let resp = server
        .client
        .post(server.url("/v1/otlp/traces"))
        .bearer_auth(&server.key)
        .json(&otlp_trace)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        metric(&server, TOKEN, "trulayer_ingested_traces_total").await,
        2.0,
        "a duplicate and a merge add no trace"
    );
    assert!(
        next_event(&mut feed, &mut buffer, Duration::from_millis(500))
            .await
            .is_none(),
        "nor an announcement"
    );
}

/// A short name as hex digits, for a span id.
fn hex_of(name: &str) -> String {
    name.bytes().map(|b| format!("{b:02x}")).collect()
}
