//! `GET /v1/sessions` and `GET /v1/sessions/{id}`.

use serde_json::{json, Value};

use crate::common::{expect_error, expect_error_naming, TestServer};

fn trace(session: Option<&str>, minute: i64, error: bool, project: &str) -> Value {
    let start = format!("2026-03-01T10:{minute:02}:00Z");
    let end = format!("2026-03-01T10:{minute:02}:30Z");
    json!({
        "name": format!("at {minute}"),
        "session_id": session,
        "project_id": project,
        "started_at": start,
        "ended_at": end,
        "cost": 0.5,
        "error": if error { json!("boom") } else { Value::Null },
        "spans": [{"name": "llm", "type": "llm", "prompt_tokens": 10, "completion_tokens": minute}]
    })
}

#[tokio::test]
async fn sessions_are_listed_by_last_activity_with_their_totals() {
    let server = TestServer::start().await;
    let store = server.running().store().clone();
    store
        .create_project(
            1,
            "second".into(),
            trulayer_server::store::Actor::operator(),
        )
        .await
        .expect("project");
    let s1 = [
        server.ingest(trace(Some("s1"), 0, false, "default")).await,
        server.ingest(trace(Some("s1"), 5, true, "default")).await,
        server.ingest(trace(Some("s1"), 1, false, "default")).await,
    ];
    server.ingest(trace(Some("s2"), 3, false, "second")).await;
    server.ingest(trace(Some("s3"), 2, false, "default")).await;
    server.ingest(trace(Some("s3"), 10, false, "default")).await;
    server.ingest(trace(None, 20, false, "default")).await;

    // Sessions are merged into their index in the background (see
    // `store::session_lookup`): the same answers as stored, and once merged.
    for round in ["waiting", "merged"] {
        if round == "merged" {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while store.session_backlog().await.expect("backlog") > 0 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "sessions never merged"
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        } else {
            assert!(store.session_backlog().await.expect("backlog") > 0);
        }
        check_sessions(&server, &s1, round).await;
    }
    expect_error(server.get("/v1/sessions/nope").await, 404).await;
    expect_error(server.get("/v1/sessions?limit=0").await, 400).await;
}

/// The sessions of the test above, listed, paged, filtered and opened.
async fn check_sessions(server: &TestServer, s1: &[String], round: &str) {
    let page = server.get_json("/v1/sessions").await;
    let sessions = page["sessions"].as_array().expect("sessions");
    let order: Vec<&str> = sessions
        .iter()
        .map(|s| s["session_id"].as_str().expect("id"))
        .collect();
    assert_eq!(
        order,
        ["s3", "s1", "s2"],
        "most recently active first ({round})"
    );
    let one = &sessions[1];
    assert_eq!(one["trace_count"], 3);
    assert_eq!(one["error_count"], 1);
    assert_eq!(one["total_tokens"], 30 + 6);
    assert!((one["total_cost"].as_f64().expect("cost") - 1.5).abs() < 1e-12);
    assert_eq!(one["first_at"], "2026-03-01T10:00:00.000000Z");
    assert_eq!(one["last_at"], "2026-03-01T10:05:30.000000Z");
    assert_eq!(page["has_more"], false);

    // Pages of one: each session once, in the same order.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..5 {
        let path = match &cursor {
            Some(c) => format!("/v1/sessions?limit=1&cursor={c}"),
            None => "/v1/sessions?limit=1".into(),
        };
        let page = server.get_json(&path).await;
        for s in page["sessions"].as_array().expect("sessions") {
            seen.push(s["session_id"].as_str().expect("id").to_owned());
        }
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(seen, ["s3", "s1", "s2"], "{round}");
    // A cursor of the trace list is not one of this list's.
    let traces = server.get_json("/v1/traces?limit=1").await;
    let cursor = traces["next_cursor"].as_str().expect("a trace cursor");
    expect_error_naming(
        server.get(&format!("/v1/sessions?cursor={cursor}")).await,
        400,
        &["cursor"],
    )
    .await;

    // One project's sessions.
    let page = server.get_json("/v1/sessions?project_id=second").await;
    assert_eq!(page["sessions"].as_array().map(Vec::len), Some(1));
    assert_eq!(page["sessions"][0]["session_id"], "s2");

    // A session's traces, in the order they started.
    let detail = server.get_json("/v1/sessions/s1").await;
    let ids: Vec<&str> = detail["traces"]
        .as_array()
        .expect("traces")
        .iter()
        .map(|t| t["id"].as_str().expect("id"))
        .collect();
    assert_eq!(
        ids,
        [s1[0].as_str(), s1[2].as_str(), s1[1].as_str()],
        "{round}"
    );
    // The trace list's session filter, newest first, in pages of two.
    let listed = server.list_all("session_id=s1", 2).await;
    assert_eq!(
        listed,
        [s1[1].clone(), s1[2].clone(), s1[0].clone()],
        "{round}"
    );
}

const DAY_SECS: i64 = 86_400;

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A trace of `session` in `project` that started `age_secs` ago, with
/// `tokens` tokens, a cost of `quarters` quarters of a dollar, an error or
/// not, and an end or not.
fn aged(session: &str, project: &str, age_secs: i64, tokens: i64, quarters: i64) -> Value {
    let start = chrono::Utc::now() - chrono::Duration::seconds(age_secs);
    let mut t = json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "name": format!("{session} at -{age_secs}s"),
        "session_id": session,
        "project_id": project,
        "started_at": rfc3339(start),
        "spans": [{"name": "llm", "type": "llm", "prompt_tokens": tokens, "completion_tokens": 0}]
    });
    if quarters > 0 {
        t["cost"] = json!(quarters as f64 * 0.25);
    }
    if age_secs % 3 == 0 {
        t["ended_at"] = json!(rfc3339(start + chrono::Duration::seconds(age_secs % 7 + 1)));
    }
    if age_secs % 5 == 0 {
        t["error"] = json!("boom");
    }
    t
}

async fn ingest_all(server: &TestServer, traces: &[Value]) {
    for chunk in traces.chunks(500) {
        let resp = server
            .post("/v1/ingest/batch", &json!({ "traces": chunk }))
            .await;
        assert_eq!(resp.status().as_u16(), 201);
    }
}

/// Every trace the list returns for `query` (newest first), whole.
async fn all_traces(server: &TestServer, query: &str) -> Vec<Value> {
    let mut traces = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/traces?limit=200&{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = server.get_json(&path).await;
        traces.extend(page["traces"].as_array().expect("traces").iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return traces,
        }
    }
}

/// The session list recomputed from the trace list (newest first): each
/// session at its latest trace, with its totals (cost in quarters).
fn recompute(traces: &[Value]) -> Vec<Value> {
    let mut sessions: Vec<Value> = Vec::new();
    for t in traces {
        let Some(id) = t["session_id"].as_str() else {
            continue;
        };
        let start = t["started_at"].as_str().expect("start").to_owned();
        let end = t["ended_at"].as_str().map_or(start.clone(), str::to_owned);
        let cost = t["cost"].as_f64().map(|c| (c * 4.0).round() as i64);
        let error = i64::from(!t["error"].is_null());
        let tokens = t["total_token_count"].as_i64().expect("tokens");
        match sessions.iter_mut().find(|s| s["session_id"] == id) {
            None => sessions.push(json!({
                "session_id": id, "trace_count": 1, "total_tokens": tokens,
                "total_cost": cost, "error_count": error, "first_at": start, "last_at": end,
            })),
            Some(s) => {
                let add = |v: &Value, n: i64| json!(v.as_i64().expect("count") + n);
                s["trace_count"] = add(&s["trace_count"], 1);
                s["total_tokens"] = add(&s["total_tokens"], tokens);
                s["error_count"] = add(&s["error_count"], error);
                if let Some(c) = cost {
                    s["total_cost"] = json!(s["total_cost"].as_i64().unwrap_or(0) + c);
                }
                // Older traces come later: the first start only goes down.
                s["first_at"] = json!(start);
                if end.as_str() > s["last_at"].as_str().expect("last") {
                    s["last_at"] = json!(end);
                }
            }
        }
    }
    sessions
}

/// The session list walked in pages of `limit`, costs in quarters.
async fn listed(server: &TestServer, query: &str, limit: usize) -> Vec<Value> {
    let mut sessions = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/sessions?limit={limit}&{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = server.get_json(&path).await;
        for s in page["sessions"].as_array().expect("sessions") {
            let mut s = s.clone();
            s["total_cost"] = json!(s["total_cost"].as_f64().map(|c| (c * 4.0).round() as i64));
            sessions.push(s);
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => {
                assert_eq!(page["has_more"], false);
                return sessions;
            }
        }
    }
}

/// The session list, whole and of each project, in pages of 2 and of 100,
/// equals its recomputation from the trace list.
async fn check_against_traces(server: &TestServer, projects: &[&str], step: &str) {
    let mut filters = vec![String::new()];
    filters.extend(projects.iter().map(|p| format!("project_id={p}")));
    for filter in &filters {
        let want = recompute(&all_traces(server, filter).await);
        for limit in [2, 100] {
            assert_eq!(
                listed(server, filter, limit).await,
                want,
                "{step}: sessions of '{filter}' in pages of {limit}"
            );
        }
    }
}

async fn merged(server: &TestServer) {
    let store = server.running().store().clone();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while store.session_backlog().await.expect("backlog") > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "sessions never merged"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// An OTLP span: its id, its parent, how long ago it started in ms, its
/// tokens, its cost in quarters and its session.
type OtlpSpan<'a> = (&'a str, Option<&'a str>, i64, i64, i64, Option<&'a str>);

/// OTLP spans of trace `trace_hex`.
fn otlp(trace_hex: &str, spans: &[OtlpSpan<'_>]) -> Value {
    let now = chrono::Utc::now().timestamp() * 1_000_000_000;
    let spans: Vec<Value> = spans
        .iter()
        .map(|(id, parent, ago_ms, tokens, cost_quarters, session)| {
            let start = now - ago_ms * 1_000_000;
            let mut attributes = vec![
                json!({"key": "gen_ai.usage.input_tokens", "value": {"intValue": tokens.to_string()}}),
                json!({"key": "gen_ai.usage.cost", "value": {"doubleValue": *cost_quarters as f64 * 0.25}}),
            ];
            if let Some(s) = session {
                attributes.push(json!({"key": "session.id", "value": {"stringValue": s}}));
            }
            let mut span = json!({
                "traceId": trace_hex, "spanId": id, "name": id,
                "startTimeUnixNano": start.to_string(),
                "endTimeUnixNano": (start + 200_000_000).to_string(),
                "attributes": attributes,
            });
            if let Some(p) = parent {
                span["parentSpanId"] = json!(p);
                span["status"] = json!({"code": 2, "message": "child failed"});
            }
            span
        })
        .collect();
    json!({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]})
}

async fn send_otlp(server: &TestServer, body: &Value) {
    let resp = server.post("/v1/otlp/traces", body).await;
    assert_eq!(resp.status().as_u16(), 200);
}

#[tokio::test]
async fn session_totals_follow_ingest_merges_moves_purges_erasures_and_restarts() {
    let server = TestServer::start_with_storage("purge_interval_s = 1", "").await;
    let owner = server.session_token().await;
    let resp = server
        .client
        .post(server.url("/v1/projects"))
        .bearer_auth(&owner)
        .json(&json!({ "name": "second" }))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status().as_u16(), 201);
    let second: Value = resp.json().await.expect("project");
    let second = second["id"].as_str().expect("id").to_owned();
    let projects = ["default", "second"];

    // Sessions in one project or both, some with traces past a week.
    let mut traces = Vec::new();
    for i in 0..60_i64 {
        let session = format!("chat-{}", i % 7);
        let project = if i % 7 < 3 || i % 3 == 0 {
            "default"
        } else {
            "second"
        };
        let age = if i % 4 == 0 {
            9 * DAY_SECS + i
        } else {
            600 + i * 37
        };
        traces.push(aged(&session, project, age, i, i % 4));
    }
    // One of them belongs to a data subject.
    traces[10]["external_id"] = json!("alice");
    ingest_all(&server, &traces).await;
    check_against_traces(&server, &projects, "ingested, waiting").await;
    merged(&server).await;
    check_against_traces(&server, &projects, "ingested, merged").await;

    // An OTLP trace joins chat-1, is merged, then more spans arrive: more
    // tokens and cost, an error, an earlier start and a later end.
    let hex = "5b8efff798038103d269b633813fc60c";
    let child = (
        "00000000000000c2",
        Some("00000000000000c1"),
        50,
        7,
        1,
        Some("chat-1"),
    );
    send_otlp(&server, &otlp(hex, &[child])).await;
    check_against_traces(&server, &projects, "OTLP trace stored").await;
    merged(&server).await;
    send_otlp(
        &server,
        &otlp(
            hex,
            &[("00000000000000c1", None, 30_000, 11, 2, Some("chat-1"))],
        ),
    )
    .await;
    check_against_traces(&server, &projects, "OTLP spans merged into a stored trace").await;

    // A trace without a session moves into one when a span names it.
    let hex = "6b8efff798038103d269b633813fc60c";
    send_otlp(
        &server,
        &otlp(hex, &[("00000000000000d1", None, 20, 3, 0, None)]),
    )
    .await;
    merged(&server).await;
    send_otlp(
        &server,
        &otlp(
            hex,
            &[(
                "00000000000000d2",
                Some("00000000000000d1"),
                10,
                5,
                3,
                Some("chat-5"),
            )],
        ),
    )
    .await;
    check_against_traces(&server, &projects, "a trace moved into a session").await;
    merged(&server).await;
    check_against_traces(&server, &projects, "moved, merged").await;

    // Retention takes the second project's traces past a week: some
    // sessions lose their oldest traces, some their traces there.
    let resp = server
        .client
        .patch(server.url(&format!("/v1/projects/{second}")))
        .bearer_auth(&owner)
        .json(&json!({ "retention_days_override": 7 }))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status().as_u16(), 200);
    let old = chrono::Utc::now() - chrono::Duration::days(8);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let left = all_traces(&server, &format!("project_id=second&to={}", rfc3339(old))).await;
        if left.is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never purged");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    check_against_traces(&server, &projects, "purged").await;

    // An erasure: a whole session (the subject's id is its session id) and
    // one trace of another (by external id).
    for subject in ["chat-2", "alice"] {
        let resp = server
            .post_as(
                &owner,
                "/v1/dsr",
                &json!({"subject_id": subject, "type": "delete"}),
            )
            .await;
        assert_eq!(resp.status().as_u16(), 201);
        let request: Value = resp.json().await.expect("request");
        let id = request["id"].as_str().expect("id").to_owned();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let r = server.get_json_as(&owner, &format!("/v1/dsr/{id}")).await;
            if r["status"] == "completed" {
                break;
            }
            assert_ne!(r["status"], "failed", "{r}");
            assert!(std::time::Instant::now() < deadline, "erasure never ended");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    let after = listed(&server, "", 100).await;
    assert!(after.iter().all(|s| s["session_id"] != "chat-2"));
    check_against_traces(&server, &projects, "erased").await;

    // Stopped with entries waiting (a trace moved to another session while
    // the server was down is queued again), then started again.
    let TestServer { running, dir, .. } = server;
    running.expect("running").stop().await.expect("clean stop");
    let db = dir
        .path()
        .join("data")
        .join(trulayer_server::store::DB_FILE);
    {
        let conn = rusqlite::Connection::open(&db).expect("open");
        let moved = conn
            .execute(
                "UPDATE traces SET session_id = 'chat-6' WHERE seq = \
                 (SELECT max(seq) FROM traces WHERE session_id = 'chat-3')",
                [],
            )
            .expect("move");
        assert_eq!(moved, 1);
        let waiting: i64 = conn
            .query_row("SELECT count(*) FROM session_pending", [], |r| r.get(0))
            .expect("count");
        assert_eq!(waiting, 1);
    }
    let config = dir.path().join("trulayer.toml");
    let server = TestServer::start_in(dir, &config).await;
    check_against_traces(&server, &projects, "restarted with an entry waiting").await;
    merged(&server).await;
    check_against_traces(&server, &projects, "restarted, merged").await;
    server.stop().await;
}

#[tokio::test]
async fn a_tenant_without_sessions_lists_none() {
    const OTHER: &str = "tl_other_tenant_sessions_0123456789";
    let server = TestServer::start().await;
    server.other_tenant(OTHER).await;
    let traces: Vec<Value> = (0..30)
        .map(|i| aged("theirs", "default", 60 + i, 1, 1))
        .collect();
    ingest_all(&server, &traces).await;
    let mut mine = crate::common::sample_trace("no session");
    mine["session_id"] = Value::Null;
    let resp = server.post_as(OTHER, "/v1/ingest", &mine).await;
    assert_eq!(resp.status().as_u16(), 201);
    for round in ["waiting", "merged"] {
        if round == "merged" {
            merged(&server).await;
        }
        for path in ["/v1/sessions", "/v1/sessions?project_id=default"] {
            let page = server.get_json_as(OTHER, path).await;
            assert_eq!(
                page,
                json!({"sessions": [], "has_more": false, "next_cursor": null}),
                "{round}"
            );
        }
        expect_error(server.get_as(OTHER, "/v1/sessions/theirs").await, 404).await;
        assert_eq!(listed(&server, "", 100).await.len(), 1, "{round}");
    }
    server.stop().await;
}

#[tokio::test]
async fn paging_over_many_sessions_lists_each_once_in_order() {
    let server = TestServer::start().await;
    let store = server.running().store().clone();
    store
        .create_project(
            1,
            "second".into(),
            trulayer_server::store::Actor::operator(),
        )
        .await
        .expect("project");
    let traces: Vec<Value> = (0..600_i64)
        .map(|i| {
            let project = if i % 3 == 0 { "second" } else { "default" };
            aged(
                &format!("s-{}", i % 250),
                project,
                60 + (i * 7919) % 5000,
                i,
                i % 3,
            )
        })
        .collect();
    ingest_all(&server, &traces[..400]).await;
    merged(&server).await;
    // Some sessions have entries merged and entries waiting.
    ingest_all(&server, &traces[400..]).await;
    for round in ["partly waiting", "merged"] {
        if round == "merged" {
            merged(&server).await;
        }
        for filter in ["", "project_id=second"] {
            let want = recompute(&all_traces(&server, filter).await);
            let got = listed(&server, filter, 7).await;
            let mut ids: Vec<&str> = got
                .iter()
                .map(|s| s["session_id"].as_str().expect("id"))
                .collect();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(
                ids.len(),
                got.len(),
                "each session once ({round}, '{filter}')"
            );
            assert_eq!(got, want, "{round}, '{filter}'");
        }
        assert_eq!(listed(&server, "", 7).await.len(), 250);
    }
    server.stop().await;
}
