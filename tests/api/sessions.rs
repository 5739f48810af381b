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
