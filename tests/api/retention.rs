//! Retention and the database's size cap: the background purge deletes
//! exactly the traces past each project's window (its override, else its
//! plan's), everything hanging off them goes too, metrics follow, freed
//! space is given back, and a full database refuses ingest with 507 or
//! makes room by deleting the oldest traces.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{expect_error, TestServer};

const DAY_SECS: i64 = 86_400;

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A trace that started `age_secs` ago in `project`, with one span whose
/// output carries `word` (so search can find it) and `padding` bytes.
fn trace_aged(project: &str, age_secs: i64, word: &str, padding: usize) -> Value {
    let start = chrono::Utc::now() - chrono::Duration::seconds(age_secs);
    let end = start + chrono::Duration::milliseconds(1500);
    json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "project_id": project,
        "name": format!("aged {age_secs}s"),
        "input": "x".repeat(padding),
        "output": "done",
        "started_at": rfc3339(start),
        "ended_at": rfc3339(end),
        "spans": [{
            "name": "llm-call",
            "type": "llm",
            "model": "gpt-4o-mini",
            "output": format!("the answer mentions {word}"),
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "cost": 0.25,
            "start_time": rfc3339(start),
            "end_time": rfc3339(end)
        }]
    })
}

async fn ids_in(server: &TestServer, project: &str) -> Vec<String> {
    let mut ids = server.list_all(&format!("project_id={project}"), 200).await;
    ids.sort();
    ids
}

/// Polls until the project holds exactly `want` (sorted) or 15 s pass.
async fn wait_for_ids(server: &TestServer, project: &str, want: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = ids_in(server, project).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "project {project}: still {} traces, want {}",
            got.len(),
            want.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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

async fn set_retention(server: &TestServer, session: &str, project: &str, days: Value) {
    let resp = server
        .client
        .patch(server.url(&format!("/v1/projects/{project}")))
        .bearer_auth(session)
        .json(&json!({ "retention_days_override": days }))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status().as_u16(), 200, "retention {days}");
}

async fn ingest_all(server: &TestServer, traces: &[Value]) -> Vec<String> {
    let resp = server
        .post("/v1/ingest/batch", &json!({ "traces": traces }))
        .await;
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(status, 201, "{body}");
    body["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_str().expect("id").to_owned())
        .collect()
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

#[tokio::test]
async fn retention_deletes_exactly_the_traces_past_each_projects_window() {
    let server = TestServer::start_with_storage("purge_interval_s = 1", "").await;
    let session = server.session_token().await;
    let short = create_project(&server, &session, "short").await;
    let forever = create_project(&server, &session, "forever").await;

    // Just inside and just outside a 7-day window, and well on each side.
    let ages = [
        8 * DAY_SECS,
        7 * DAY_SECS + 3_600,
        7 * DAY_SECS - 3_600,
        DAY_SECS,
    ];
    let short_ids = ingest_all(
        &server,
        &ages
            .iter()
            .map(|age| trace_aged(&short, *age, "zebra", 0))
            .collect::<Vec<_>>(),
    )
    .await;
    // Enterprise keeps traces without limit unless a project says otherwise.
    let forever_ids = ingest_all(
        &server,
        &[
            trace_aged(&forever, 400 * DAY_SECS, "zebra", 0),
            trace_aged(&forever, 8 * DAY_SECS, "zebra", 0),
        ],
    )
    .await;
    let expired = short_ids[0].clone();
    let feedback = server
        .post(
            "/v1/feedback",
            &json!({"trace_id": expired, "label": "bad", "comment": "old"}),
        )
        .await;
    assert_eq!(feedback.status().as_u16(), 201);
    // Both projects appear in the metrics before the purge.
    let window = format!(
        "from={}&to={}",
        rfc3339(chrono::Utc::now() - chrono::Duration::days(30)),
        rfc3339(chrono::Utc::now())
    );
    let before = server.get_json(&format!("/v1/metrics?{window}")).await;
    assert_eq!(before["total_traces"], 5, "{before}");

    set_retention(&server, &session, &short, json!(7)).await;
    wait_for_ids(&server, &short, &sorted(short_ids[2..].to_vec())).await;
    // The other project lost nothing.
    assert_eq!(ids_in(&server, &forever).await, sorted(forever_ids.clone()));

    // A purged trace is gone with what hung off it.
    expect_error(server.get(&format!("/v1/traces/{expired}")).await, 404).await;
    let bad = server.get_json("/v1/traces?feedback=bad").await;
    assert_eq!(bad["traces"].as_array().map(Vec::len), Some(0), "{bad}");
    let found = server.get_json("/v1/search/spans?q=zebra&limit=100").await;
    let mut hit_traces: Vec<String> = found["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["trace_id"].as_str().expect("trace id").to_owned())
        .collect();
    hit_traces.sort();
    let mut kept: Vec<String> = short_ids[2..].to_vec();
    kept.extend(forever_ids.iter().cloned());
    kept.sort();
    assert_eq!(hit_traces, kept, "search finds only what remains");

    // The metrics agree with what remains: 3 traces at $0.25 each.
    let after = server.get_json(&format!("/v1/metrics?{window}")).await;
    assert_eq!(after["total_traces"], 3, "{after}");
    let cost = after["total_cost"].as_f64().expect("cost");
    assert!((cost - 0.75).abs() < 1e-9, "{after}");
    let everything = server
        .get_json(&format!(
            "/v1/metrics?from={}&to={}",
            rfc3339(chrono::Utc::now() - chrono::Duration::days(500)),
            rfc3339(chrono::Utc::now())
        ))
        .await;
    assert_eq!(everything["total_traces"], 4, "{everything}");
}

#[tokio::test]
async fn without_an_override_a_project_keeps_its_plans_retention() {
    let server = TestServer::start_with_storage(
        "purge_interval_s = 1",
        "plan = \"starter\"\n[plans.starter]\nmax_retention_days = 30\n",
    )
    .await;
    let ids = ingest_all(
        &server,
        &[
            trace_aged("default", 31 * DAY_SECS, "old", 0),
            trace_aged("default", 29 * DAY_SECS, "recent", 0),
        ],
    )
    .await;
    wait_for_ids(&server, "default", &ids[1..]).await;

    // Clearing the override after setting one goes back to the plan's.
    let session = server.session_token().await;
    let projects = server.get_json_as(&session, "/v1/projects").await;
    let id = projects["projects"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    set_retention(&server, &session, &id, json!(10)).await;
    wait_for_ids(&server, "default", &[]).await;
    set_retention(&server, &session, &id, Value::Null).await;
    let fresh = ingest_all(&server, &[trace_aged("default", 20 * DAY_SECS, "fresh", 0)]).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(ids_in(&server, "default").await, fresh);
    // The new trace may reuse the key of a deleted one; search still finds it.
    assert_eq!(server.list_all("q=fresh", 50).await, fresh);
}

#[tokio::test]
async fn a_purge_gives_the_space_back_to_the_file_system() {
    let server = TestServer::start_with_storage("purge_interval_s = 1", "").await;
    let db = server
        .dir
        .path()
        .join("data")
        .join(trulayer_server::store::DB_FILE);
    let pages = || -> i64 {
        let conn =
            rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .expect("open");
        conn.query_row("PRAGMA page_count", [], |r| r.get(0))
            .expect("pages")
    };
    let empty = pages();
    for _ in 0..8 {
        let batch: Vec<Value> = (0..25)
            .map(|_| trace_aged("default", 10 * DAY_SECS, "bulk", 20_000))
            .collect();
        ingest_all(&server, &batch).await;
    }
    let full = pages();
    assert!(
        full > empty + 800,
        "200 traces of 20 KB: {empty} -> {full} pages"
    );

    let session = server.session_token().await;
    let projects = server.get_json_as(&session, "/v1/projects").await;
    let id = projects["projects"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    set_retention(&server, &session, &id, json!(1)).await;
    wait_for_ids(&server, "default", &[]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while pages() > empty + (full - empty) / 4 {
        assert!(
            Instant::now() < deadline,
            "the file still has {} pages (empty {empty}, full {full})",
            pages()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_full_database_refuses_ingest_with_507_until_space_is_freed() {
    let server = TestServer::start_with_storage(
        "max_db_size = \"1MiB\"\nwhen_full = \"refuse\"\npurge_interval_s = 1",
        "",
    )
    .await;
    // Fill it with week-old traces of 40 KB until it refuses one, then
    // with smaller ones until it refuses even those: a write is refused
    // when it would not fit, so a smaller one may still fit after a larger
    // one was refused.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut refused = None;
    for size in [40_000, 4_000, 400] {
        refused = Some(loop {
            assert!(Instant::now() < deadline, "never refused");
            let resp = server
                .post(
                    "/v1/ingest",
                    &trace_aged("default", 7 * DAY_SECS, "fill", size),
                )
                .await;
            match resp.status().as_u16() {
                201 => tokio::time::sleep(Duration::from_millis(20)).await,
                507 => break resp,
                other => panic!("unexpected status {other}"),
            }
        });
    }
    let refused = refused.expect("refused");
    let body = expect_error(refused, 507).await;
    assert_eq!(body["code"], "storage_full");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|m| m.contains("max_db_size")),
        "{body}"
    );
    // Reads go on; OTLP and feedback are refused the same way.
    let stored = server.list_all("", 200).await;
    assert!(!stored.is_empty());
    expect_error(
        server
            .post(
                "/v1/feedback",
                &json!({"trace_id": stored[0], "label": "good"}),
            )
            .await,
        507,
    )
    .await;
    let otlp = server
        .client
        .post(server.url("/v1/otlp/traces"))
        .bearer_auth(&server.key)
        .json(&json!({"resourceSpans": [{"scopeSpans": [{"spans": [{
            "traceId": "5b8efff798038103d269b633813fc60c",
            "spanId": "eee19b7ec3c1b174",
            "name": "chat",
            "startTimeUnixNano": "1700000000000000000",
            "endTimeUnixNano": "1700000001000000000"
        }]}]}]}))
        .send()
        .await
        .expect("sent");
    expect_error(otlp, 507).await;

    // A retention that expires them frees the space and ingest resumes.
    let session = server.session_token().await;
    let projects = server.get_json_as(&session, "/v1/projects").await;
    let id = projects["projects"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    set_retention(&server, &session, &id, json!(1)).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let resp = server
            .post("/v1/ingest", &trace_aged("default", 60, "fresh", 100))
            .await;
        match resp.status().as_u16() {
            201 => break,
            507 => {
                assert!(Instant::now() < deadline, "still refused after the purge");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("unexpected status {other}"),
        }
    }
}

#[tokio::test]
async fn purge_oldest_makes_room_by_deleting_the_traces_stored_first() {
    let server =
        TestServer::start_with_storage("max_db_size = 1048576\nwhen_full = \"purge_oldest\"", "")
            .await;
    let mut ids = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ids.len() < 80 {
        assert!(Instant::now() < deadline, "ingest did not keep going");
        let trace = trace_aged("default", 60, "ring", 30_000);
        let resp = server.post("/v1/ingest", &trace).await;
        match resp.status().as_u16() {
            201 => ids.push(trace["id"].as_str().expect("id").to_owned()),
            // The purge runs a few times a second; a burst may outpace it.
            507 => tokio::time::sleep(Duration::from_millis(100)).await,
            other => panic!("unexpected status {other}"),
        }
    }
    // 80 traces of 30 KB do not fit in 1 MiB: the first ones made room.
    // The size is looked at ten times a second, so the last burst may sit
    // above the cap until the next look purges it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let kept = loop {
        let kept = server.list_all("", 200).await;
        if kept.len() < 40 || Instant::now() > deadline {
            break kept;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(kept.len() < 40, "{} traces kept", kept.len());
    expect_error(server.get(&format!("/v1/traces/{}", ids[0])).await, 404).await;
    let last = server.get_json(&format!("/v1/traces/{}", ids[79])).await;
    assert_eq!(last["id"], ids[79].as_str());
    // What remains is the newest ones, without gaps.
    let newest: Vec<String> = ids[ids.len() - kept.len()..].to_vec();
    assert_eq!(sorted(kept), sorted(newest));
}
