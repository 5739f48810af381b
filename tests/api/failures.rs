//! Failure clusters (`GET /v1/failures/clusters`) and the trace list's
//! `failure_type` filter: error messages that differ only in numbers, ids
//! and addresses are one cluster; counts, first and last seen and samples
//! agree with the traces in any window, of any project, after OTLP merges
//! and after retention deletes traces; another tenant's failures never show.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{expect_error, expect_error_naming, TestServer};

/// 2026-03-01T00:00:00Z, in microseconds.
const T0: i64 = 1_772_323_200_000_000;
const HOUR: i64 = 3_600_000_000;

fn rfc3339(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .expect("time")
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn clusters_path(query: &str) -> String {
    format!("/v1/failures/clusters?{query}")
}

fn window(from: i64, to: i64) -> String {
    format!("from={}&to={}", rfc3339(from), rfc3339(to))
}

/// A trace of `project` started at `start` failing with `error` (or not).
fn trace(project: &str, start: i64, error: Option<&str>) -> Value {
    json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "project_id": project,
        "name": "agent",
        "started_at": rfc3339(start),
        "ended_at": rfc3339(start + 1_500_000),
        "error": error,
        "spans": [{"name": "llm", "type": "llm", "model": "gpt-4o"}]
    })
}

async fn ingest_all(server: &TestServer, traces: &[Value]) {
    for chunk in traces.chunks(200) {
        let resp = server
            .post("/v1/ingest/batch", &json!({"traces": chunk}))
            .await;
        let status = resp.status().as_u16();
        assert_eq!(status, 201, "{}", resp.text().await.unwrap_or_default());
    }
}

/// A cluster as an operator reads it: shape, count, first and last seen,
/// samples.
fn summary(c: &Value) -> (String, i64, String, String, Vec<String>) {
    (
        c["error_message"].as_str().expect("message").to_owned(),
        c["count"].as_i64().expect("count"),
        c["first_seen"].as_str().expect("first").to_owned(),
        c["last_seen"].as_str().expect("last").to_owned(),
        c["sample_ids"]
            .as_array()
            .expect("samples")
            .iter()
            .map(|v| v.as_str().expect("id").to_owned())
            .collect(),
    )
}

#[tokio::test]
async fn messages_differing_in_numbers_ids_and_addresses_are_one_ranked_cluster() {
    let server = TestServer::start().await;
    let mut traces = Vec::new();
    for (i, ms) in [3012, 2990, 4100, 1].iter().enumerate() {
        traces.push(trace(
            "default",
            T0 + i as i64 * 60_000_000,
            Some(&format!("timeout after {ms} ms")),
        ));
    }
    for (i, (req, used)) in [("req_8f2a9c0d1e3b", 29876), ("req_77aa00bb11cc", 29990)]
        .iter()
        .enumerate()
    {
        traces.push(trace(
            "default",
            T0 + 600_000_000 + i as i64 * 1_000_000,
            Some(&format!(
                "Error code: 429 - Rate limit reached for gpt-4o on tokens per min (TPM): \
                 Limit 30000, Used {used}. (request id: {req})"
            )),
        ));
    }
    traces.push(trace(
        "default",
        T0 + 5_000_000,
        Some("connection refused 10.0.0.4:5432"),
    ));
    traces.push(trace("default", T0 + 7_000_000, None));
    traces.push(trace("default", T0 + 8_000_000, None));
    ingest_all(&server, &traces).await;

    let body = server
        .get_json(&clusters_path(&window(T0 - HOUR, T0 + HOUR)))
        .await;
    let clusters = body["clusters"].as_array().expect("clusters");
    let got: Vec<(String, i64)> = clusters
        .iter()
        .map(|c| {
            (
                c["error_message"].as_str().expect("m").to_owned(),
                c["count"].as_i64().expect("n"),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("timeout after <n> ms".to_owned(), 4),
            (
                "Error code: <n> - Rate limit reached for gpt-4o on tokens per min (TPM): \
                 Limit <n>, Used <n>. (request id: <id>)"
                    .to_owned(),
                2
            ),
            ("connection refused <ip>".to_owned(), 1),
        ],
        "{body}"
    );
    let timeout = &clusters[0];
    let (_, _, first, last, samples) = summary(timeout);
    assert_eq!(first, rfc3339(T0));
    assert_eq!(last, rfc3339(T0 + 3 * 60_000_000));
    // Newest first; they are the cluster's own traces.
    let ids: Vec<String> = traces[..4]
        .iter()
        .rev()
        .map(|t| t["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(samples, ids);
    assert_eq!(timeout["example_message"], "timeout after 1 ms");
    assert_eq!(timeout["failure_type"], "timeout");
    assert_eq!(clusters[1]["failure_type"], "rate_limit");
    assert_eq!(clusters[2]["failure_type"], Value::Null);

    // `limit` keeps the largest.
    let body = server
        .get_json(&clusters_path(&format!(
            "{}&limit=1",
            window(T0 - HOUR, T0 + HOUR)
        )))
        .await;
    assert_eq!(body["clusters"].as_array().expect("c").len(), 1);
    assert_eq!(body["clusters"][0]["count"], 4);

    // Parameters that do not fit are named.
    for (query, needle) in [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=many", "limit"),
        ("from=yesterday", "from"),
        ("from=2026-03-02T00:00:00Z&to=2026-03-01T00:00:00Z", "to"),
    ] {
        expect_error_naming(server.get(&clusters_path(query)).await, 400, &[needle]).await;
    }
    let body = expect_error(server.get(&clusters_path("project_id=nowhere")).await, 404).await;
    assert_eq!(body["code"], "not_found");
    // The default window is the last 24 hours: these traces are older.
    let body = server.get_json("/v1/failures/clusters").await;
    assert_eq!(body, json!({"clusters": []}));
    server.stop().await;
}

/// What a full scan of `traces` says a window's clusters are, keyed by the
/// raw message's template: (count, first, last).
fn expected_counts(
    traces: &[(String, i64, &'static str, usize)],
    from: i64,
    to: i64,
    project: Option<&str>,
) -> BTreeMap<usize, (i64, i64, i64)> {
    let mut out: BTreeMap<usize, (i64, i64, i64)> = BTreeMap::new();
    for (_, start, p, template) in traces {
        if *start < from || *start > to || project.is_some_and(|want| want != *p) {
            continue;
        }
        let e = out.entry(*template).or_insert((0, i64::MAX, i64::MIN));
        e.0 += 1;
        e.1 = e.1.min(*start);
        e.2 = e.2.max(*start);
    }
    out
}

const TEMPLATES: [&str; 4] = [
    "timeout after {} ms",
    "tool search failed: HTTP {} from https://search.internal/q?id={}",
    "context_length_exceeded: {} tokens > 8192",
    "user {}@example.com not found",
];
const SHAPES: [&str; 4] = [
    "timeout after <n> ms",
    "tool search failed: HTTP <n> from <url>",
    "context_length_exceeded: <n> tokens > <n>",
    "user <email> not found",
];

#[tokio::test]
async fn any_window_and_project_agrees_with_a_scan_of_the_traces() {
    let server = TestServer::start().await;
    let session = server.session_token().await;
    create_project(&server, &session, "second").await;
    let mut all: Vec<(String, i64, &'static str, usize)> = Vec::new();
    let mut traces = Vec::new();
    for i in 0..300i64 {
        // Spread unevenly over five hours, some on hour boundaries.
        let start = T0 + (i * i * 7_919 % (5 * 3_600)) * 1_000_000 + (i % 3) * 333_333;
        let start = if i % 50 == 0 {
            T0 + (i / 50) * HOUR
        } else {
            start
        };
        let project = if i % 3 == 0 { "second" } else { "default" };
        let template = (i * 7 % 4) as usize;
        let message = TEMPLATES[template].replace("{}", &(i * 37 % 1000).to_string());
        let t = trace(project, start, Some(&message));
        all.push((
            t["id"].as_str().expect("id").to_owned(),
            start,
            project,
            template,
        ));
        traces.push(t);
        if i % 5 == 0 {
            traces.push(trace(project, start, None));
        }
    }
    ingest_all(&server, &traces).await;

    let windows = [
        (T0 - HOUR, T0 + 6 * HOUR, "everything"),
        (T0, T0 + HOUR - 1, "one whole hour"),
        (T0 + HOUR, T0 + 3 * HOUR, "whole hours and an instant"),
        (
            T0 + 30_500_000,
            T0 + 3 * HOUR + 12_300_000,
            "unaligned edges",
        ),
        (T0 + 61_000_000, T0 + 1_900_000_000, "inside one hour"),
        (T0 - 86_400_000_000, T0 - HOUR, "before any trace"),
    ];
    for (from, to, what) in windows {
        for project in [None, Some("second"), Some("default")] {
            let mut query = window(from, to);
            if let Some(p) = project {
                query.push_str(&format!("&project_id={p}"));
            }
            let body = server.get_json(&clusters_path(&query)).await;
            let clusters = body["clusters"].as_array().expect("clusters");
            let want = expected_counts(&all, from, to, project);
            let mut got = BTreeMap::new();
            let mut last_count = i64::MAX;
            for c in clusters {
                let (message, count, first, last, samples) = summary(c);
                assert!(count <= last_count, "{what}: not ranked: {body}");
                last_count = count;
                let template = SHAPES
                    .iter()
                    .position(|s| *s == message)
                    .unwrap_or_else(|| panic!("{what}: unexpected shape {message}"));
                got.insert(template, (count, first, last));
                // Samples: the cluster's latest traces in the window.
                let mut mine: Vec<&(String, i64, &str, usize)> = all
                    .iter()
                    .filter(|(_, s, p, t)| {
                        *t == template
                            && *s >= from
                            && *s <= to
                            && project.is_none_or(|want| want == *p)
                    })
                    .collect();
                mine.sort_by_key(|(_, s, _, _)| -*s);
                assert_eq!(samples.len(), mine.len().min(5), "{what}");
                for id in &samples {
                    assert!(
                        mine.iter().any(|(i, _, _, _)| i == id),
                        "{what}: {id} is not a trace of {message} in the window"
                    );
                }
                let newest = mine.first().expect("one at least").1;
                let sample_start = all
                    .iter()
                    .find(|(i, _, _, _)| *i == samples[0])
                    .expect("sample")
                    .1;
                assert_eq!(
                    sample_start, newest,
                    "{what}: the first sample is the newest"
                );
            }
            let want: BTreeMap<usize, (i64, String, String)> = want
                .into_iter()
                .map(|(k, (n, a, b))| (k, (n, rfc3339(a), rfc3339(b))))
                .collect();
            assert_eq!(got, want, "{what}, project {project:?}");
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn another_tenants_failures_never_show() {
    let server = TestServer::start().await;
    let other_key = "tl_other_tenant_failures_key_000000000001";
    server.other_tenant(other_key).await;
    // The other tenant is empty: an empty list, not an error.
    let resp = server
        .get_as(other_key, &clusters_path(&window(T0 - HOUR, T0 + HOUR)))
        .await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.json::<Value>().await.expect("json"),
        json!({"clusters": []})
    );

    ingest_all(
        &server,
        &[
            trace("default", T0, Some("timeout after 5 ms")),
            trace("default", T0 + 1, Some("timeout after 6 ms")),
        ],
    )
    .await;
    let resp = server
        .client
        .post(server.url("/v1/ingest"))
        .bearer_auth(other_key)
        .json(&trace(
            "default",
            T0 + 2,
            Some("secret failure of org b 42"),
        ))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status().as_u16(), 201);

    let mine = server
        .get_json(&clusters_path(&window(T0 - HOUR, T0 + HOUR)))
        .await;
    assert_eq!(mine["clusters"].as_array().expect("c").len(), 1, "{mine}");
    assert_eq!(mine["clusters"][0]["count"], 2);
    let theirs: Value = server
        .get_as(other_key, &clusters_path(&window(T0 - HOUR, T0 + HOUR)))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        theirs["clusters"].as_array().expect("c").len(),
        1,
        "{theirs}"
    );
    assert_eq!(
        theirs["clusters"][0]["error_message"],
        "secret failure of org b <n>"
    );
    assert_eq!(theirs["clusters"][0]["count"], 1);
    // The same shape in both tenants is still counted apart.
    server
        .client
        .post(server.url("/v1/ingest"))
        .bearer_auth(other_key)
        .json(&trace("default", T0 + 3, Some("timeout after 7 ms")))
        .send()
        .await
        .expect("sent");
    let mine = server
        .get_json(&clusters_path(&window(T0 - HOUR, T0 + HOUR)))
        .await;
    assert_eq!(mine["clusters"][0]["count"], 2);
    server.stop().await;
}

async fn create_project(server: &TestServer, session: &str, name: &str) -> String {
    let resp = server
        .client
        .post(server.url("/v1/projects"))
        .bearer_auth(session)
        .json(&json!({ "name": name }))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status().as_u16(), 201, "create project {name}");
    let body: Value = resp.json().await.expect("project");
    body["id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn retention_takes_purged_traces_out_of_the_clusters() {
    let server = TestServer::start_with_storage("purge_interval_s = 1", "").await;
    let session = server.session_token().await;
    let project = create_project(&server, &session, "short").await;
    let now = chrono::Utc::now().timestamp_micros();
    const DAY: i64 = 86_400_000_000;
    // Ten days old and two days old, in the same cluster and in one of its own.
    let old: Vec<Value> = (0..4)
        .map(|i| {
            trace(
                &project,
                now - 10 * DAY + i,
                Some(&format!("timeout after {i} ms")),
            )
        })
        .collect();
    let gone = trace(&project, now - 10 * DAY + 9, Some("quota of 12 exhausted"));
    let recent: Vec<Value> = (0..2)
        .map(|i| {
            trace(
                &project,
                now - 2 * DAY + i,
                Some(&format!("timeout after {i} ms")),
            )
        })
        .collect();
    let mut all = old.clone();
    all.push(gone.clone());
    all.extend(recent.clone());
    ingest_all(&server, &all).await;
    let query = clusters_path(&format!(
        "{}&project_id={project}",
        window(now - 30 * DAY, now)
    ));
    let before = server.get_json(&query).await;
    let counts: Vec<i64> = before["clusters"]
        .as_array()
        .expect("c")
        .iter()
        .map(|c| c["count"].as_i64().expect("n"))
        .collect();
    assert_eq!(counts, vec![6, 1], "{before}");

    let resp = server
        .client
        .patch(server.url(&format!("/v1/projects/{project}")))
        .bearer_auth(&session)
        .json(&json!({ "retention_days_override": 7 }))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status().as_u16(), 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    let after = loop {
        let body = server.get_json(&query).await;
        if body["clusters"].as_array().expect("c").len() == 1 && body["clusters"][0]["count"] == 2 {
            break body;
        }
        assert!(Instant::now() < deadline, "not purged: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (message, count, first, last, samples) = summary(&after["clusters"][0]);
    assert_eq!((message.as_str(), count), ("timeout after <n> ms", 2));
    let recent_ids: Vec<String> = recent
        .iter()
        .rev()
        .map(|t| t["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(
        samples, recent_ids,
        "no purged trace is offered as a sample"
    );
    assert_eq!(first, rfc3339(now - 2 * DAY));
    assert_eq!(last, rfc3339(now - 2 * DAY + 1));
    // The counts survive a restart as they are.
    let server = server.restart().await;
    assert_eq!(server.get_json(&query).await, after);
    server.stop().await;
}

fn otlp_span(trace_id: &str, span_id: &str, parent: Option<&str>, status: Option<&str>) -> Value {
    let start = T0 + 10_000_000;
    let mut s = json!({
        "traceId": trace_id,
        "spanId": span_id,
        "name": span_id,
        "startTimeUnixNano": (start * 1_000).to_string(),
        "endTimeUnixNano": ((start + 500_000) * 1_000).to_string(),
    });
    if let Some(p) = parent {
        s["parentSpanId"] = json!(p);
    }
    if let Some(message) = status {
        s["status"] = json!({"code": 2, "message": message});
    }
    s
}

fn otlp_id(hex: &str) -> String {
    let bytes: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).expect("hex"))
        .collect();
    uuid::Uuid::from_slice(&bytes)
        .expect("uuid")
        .hyphenated()
        .to_string()
}

async fn send_otlp(server: &TestServer, spans: Vec<Value>) {
    let resp = server
        .post(
            "/v1/otlp/traces",
            &json!({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}),
        )
        .await;
    assert_eq!(resp.status().as_u16(), 200);
}

#[tokio::test]
async fn failure_type_lists_exactly_the_traces_of_that_class_from_json_and_otlp() {
    let server = TestServer::start().await;
    let mut want: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut sdk = |class: Option<&'static str>, t: Value| {
        if let Some(c) = class {
            want.entry(c)
                .or_default()
                .push(t["id"].as_str().expect("id").to_owned());
        }
        t
    };
    let span_failing = |error: &str, metadata: Value| {
        let mut t = trace("default", T0, None);
        t["spans"] = json!([
            {"name": "retrieve", "type": "retrieval"},
            {"name": "llm", "type": "llm", "error": error, "metadata": metadata}
        ]);
        t
    };
    let traces = vec![
        sdk(Some("timeout"), trace("default", T0, Some("Request timed out."))),
        sdk(Some("timeout"), trace("default", T0 + 1, Some("timeout after 3012 ms"))),
        sdk(
            Some("rate_limit"),
            trace("default", T0 + 2, Some("Error code: 429 - Rate limit reached (request id: req_1a2b3c4d)")),
        ),
        sdk(
            Some("context_length"),
            trace(
                "default",
                T0 + 3,
                Some("This model's maximum context length is 8192 tokens. However, your messages resulted in 9021 tokens."),
            ),
        ),
        sdk(
            Some("invalid_response"),
            trace("default", T0 + 4, Some("JSONDecodeError: Expecting value: line 1 column 1 (char 0)")),
        ),
        sdk(None, trace("default", T0 + 5, Some("connection refused 10.0.0.4:5432"))),
        sdk(None, trace("default", T0 + 6, None)),
        // A handled failure in a span: the trace did not fail, but it has
        // a span of that class.
        sdk(Some("rate_limit"), span_failing("upstream error", json!({"http.status_code": 429}))),
        sdk(Some("timeout"), span_failing("boom", json!({"error.type": "APITimeoutError"}))),
        sdk(None, span_failing("boom", json!({}))),
    ];
    ingest_all(&server, &traces).await;

    // OTLP: a span's status message, and an exception event.
    let a = "0af7651916cd43dd8448eb211c80319c";
    send_otlp(
        &server,
        vec![
            otlp_span(a, "b7ad6b7169203331", None, None),
            otlp_span(
                a,
                "00f067aa0ba902b7",
                Some("b7ad6b7169203331"),
                Some("DEADLINE_EXCEEDED: deadline exceeded after 30s"),
            ),
        ],
    )
    .await;
    want.entry("timeout").or_default().push(otlp_id(a));
    let b = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut span = otlp_span(b, "53995c3f42cd8ad8", None, None);
    span["status"] = json!({"code": 2});
    span["events"] = json!([{
        "name": "exception",
        "timeUnixNano": span["startTimeUnixNano"],
        "attributes": [
            {"key": "exception.type", "value": {"stringValue": "openai.RateLimitError"}},
            {"key": "exception.message", "value": {"stringValue": "You exceeded your current quota"}}
        ]
    }]);
    send_otlp(&server, vec![span]).await;
    want.entry("rate_limit").or_default().push(otlp_id(b));

    for class in [
        "timeout",
        "rate_limit",
        "invalid_response",
        "context_length",
    ] {
        let mut got = server.list_all(&format!("failure_type={class}"), 3).await;
        got.sort();
        let mut expected = want.get(class).cloned().unwrap_or_default();
        expected.sort();
        assert_eq!(got, expected, "failure_type={class}");
    }
    // With the other filters: failing traces of a class only.
    let got = server
        .list_all("failure_type=rate_limit&error=true", 50)
        .await;
    assert_eq!(
        got.len(),
        2,
        "the trace whose span alone failed is left out"
    );
    // The export and a saved filter take it too; an unknown class is named.
    let resp = server
        .get("/v1/traces/export?format=jsonl&failure_type=context_length")
        .await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.text().await.expect("text").lines().count(), 1);
    for path in [
        "/v1/traces?failure_type=gremlins",
        "/v1/traces/export?format=jsonl&failure_type=gremlins",
    ] {
        let body = expect_error_naming(server.get(path).await, 400, &["failure_type"]).await;
        assert_eq!(body["code"], "bad_request");
    }

    // A later OTLP request changes what the trace failed with: its class
    // and its cluster follow.
    send_otlp(
        &server,
        vec![{
            let mut s = otlp_span(
                a,
                "b7ad6b7169203331",
                None,
                Some("Too Many Requests (429) from api.example.com:443"),
            );
            s["name"] = json!("root");
            s
        }],
    )
    .await;
    let timeouts = server.list_all("failure_type=timeout", 50).await;
    assert!(!timeouts.contains(&otlp_id(a)));
    assert!(server
        .list_all("failure_type=rate_limit", 50)
        .await
        .contains(&otlp_id(a)));
    let body = server
        .get_json(&clusters_path(&window(T0 - HOUR, T0 + HOUR)))
        .await;
    let shapes: Vec<(&str, i64)> = body["clusters"]
        .as_array()
        .expect("c")
        .iter()
        .map(|c| {
            (
                c["error_message"].as_str().expect("m"),
                c["count"].as_i64().expect("n"),
            )
        })
        .collect();
    assert!(
        shapes.contains(&("Too Many Requests (<n>) from <host>", 1)),
        "{body}"
    );
    assert!(
        !shapes
            .iter()
            .any(|(m, _)| m.starts_with("DEADLINE_EXCEEDED")),
        "the trace left its old cluster: {body}"
    );
    server.stop().await;
}

#[tokio::test]
async fn an_erasure_takes_its_traces_out_of_the_clusters_and_the_metrics() {
    let server = TestServer::start().await;
    let store = server.running().store().clone();
    let traces: Vec<Value> = (0..6)
        .map(|i| {
            trace(
                "default",
                T0 + i * 1_000_000,
                Some(&format!("timeout after {i} ms")),
            )
        })
        .chain([trace(
            "default",
            T0 + 9_000_000,
            Some("user ann@example.com not found"),
        )])
        .collect();
    ingest_all(&server, &traces).await;
    let id = |i: usize| traces[i]["id"].as_str().expect("id").to_owned();
    // The first tenant of a fresh store; an id it does not have is passed over.
    let erased = store
        .delete_traces_by_id(
            1,
            vec![id(5), id(4), id(6), uuid::Uuid::new_v4().to_string()],
        )
        .await
        .expect("erase");
    assert_eq!(erased, 3);
    let body = server
        .get_json(&clusters_path(&window(T0 - HOUR, T0 + HOUR)))
        .await;
    let clusters = body["clusters"].as_array().expect("c");
    assert_eq!(
        clusters.len(),
        1,
        "the erased email's cluster is gone: {body}"
    );
    let (message, count, _, last, samples) = summary(&clusters[0]);
    assert_eq!((message.as_str(), count), ("timeout after <n> ms", 4));
    assert_eq!(last, rfc3339(T0 + 3_000_000));
    assert_eq!(samples, vec![id(3), id(2), id(1), id(0)]);
    let metrics = server
        .get_json(&format!("/v1/metrics?{}", window(T0 - HOUR, T0 + HOUR)))
        .await;
    assert_eq!(metrics["error_count"], 4, "{metrics}");
    server.stop().await;
}
