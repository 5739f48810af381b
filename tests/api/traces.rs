//! GET /v1/traces filters and paging, GET /v1/traces/{id}.

use std::collections::HashSet;

use serde_json::{json, Value};

use crate::common::{expect_error, expect_error_naming, sample_trace, TestServer};

/// A trace started `minute` minutes after 2026-03-01T10:00Z.
fn at_minute(name: &str, minute: u32) -> Value {
    let mut t = sample_trace(name);
    t["started_at"] = json!(format!(
        "2026-03-01T{:02}:{:02}:00Z",
        10 + minute / 60,
        minute % 60
    ));
    t["ended_at"] = Value::Null;
    t
}

async fn names(server: &TestServer, query: &str) -> Vec<String> {
    let page = server.get_json(&format!("/v1/traces?{query}")).await;
    page["traces"]
        .as_array()
        .expect("traces")
        .iter()
        .map(|t| t["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn every_filter_narrows_the_list() {
    let server = TestServer::start().await;
    let mut a = at_minute("a", 0);
    a["model"] = json!("gpt-4o");
    a["latency_ms"] = json!(100);
    a["session_id"] = json!("s1");
    a["tags"] = json!({"env": "prod"});
    let mut b = at_minute("b", 10);
    b["model"] = json!("claude-3-5-haiku");
    b["latency_ms"] = json!(2000);
    b["error"] = json!("Traceback: boom");
    b["tags"] = json!({"env": "staging"});
    let mut c = at_minute("c", 20);
    c["latency_ms"] = json!(500);
    c["session_id"] = json!("s1");
    c["spans"][0]["prompt_tokens"] = json!(1000);
    c["spans"][0]["model"] = json!("gpt-4o");
    for t in [a, b, c] {
        server.ingest(t).await;
    }
    assert_eq!(names(&server, "").await, ["c", "b", "a"], "newest first");
    assert_eq!(names(&server, "model=gpt-4o").await, ["c", "a"]);
    assert_eq!(names(&server, "error=true").await, ["b"]);
    assert_eq!(names(&server, "error=false").await, ["c", "a"]);
    assert_eq!(
        names(&server, "from=2026-03-01T10:05:00Z").await,
        ["c", "b"]
    );
    assert_eq!(names(&server, "to=2026-03-01T10:10:00Z").await, ["b", "a"]);
    assert_eq!(
        names(&server, "from=2026-03-01T10:05:00Z&to=2026-03-01T10:15:00Z").await,
        ["b"]
    );
    assert_eq!(names(&server, "latency_min=500").await, ["c", "b"]);
    assert_eq!(names(&server, "latency_max=500").await, ["c", "a"]);
    assert_eq!(names(&server, "token_count_min=100").await, ["c"]);
    assert_eq!(names(&server, "token_count_max=100").await, ["b", "a"]);
    assert_eq!(names(&server, "tag_key=env&tag_value=prod").await, ["a"]);
    assert_eq!(
        names(&server, "tag_key=env&tag_value=dev").await,
        Vec::<String>::new()
    );
    assert_eq!(names(&server, "session_id=s1").await, ["c", "a"]);
    assert_eq!(names(&server, "session_id=s1&latency_min=200").await, ["c"]);
    assert_eq!(names(&server, "limit=1").await, ["c"]);
    server.stop().await;
}

#[tokio::test]
async fn invalid_parameters_are_named() {
    let server = TestServer::start().await;
    for (query, needle) in [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=ten", "limit"),
        ("latency_min=-1", "latency_min"),
        ("latency_max=abc", "latency_max"),
        ("latency_min=10&latency_max=5", "latency_max"),
        ("token_count_min=1.5", "token_count_min"),
        ("token_count_min=9&token_count_max=3", "token_count_max"),
        ("from=tomorrow", "from"),
        ("to=2026-13-01", "to"),
        ("error=maybe", "error"),
        ("cursor=garbage", "cursor"),
        ("tag_key=env", "tag_key"),
        ("failure_type=gremlins", "failure_type"),
        // A parameter given twice is ambiguous: refused, not guessed at.
        ("limit=1&limit=2", "limit"),
        ("model=a&model=b", "model"),
    ] {
        expect_error_naming(
            server.get(&format!("/v1/traces?{query}")).await,
            400,
            &[needle],
        )
        .await;
    }
    let body = expect_error(server.get("/v1/traces?tag_value=prod").await, 400).await;
    assert_eq!(body["code"], "error.tags_filter_incomplete");
    // An unknown failure class is named, on the list and on its export.
    for path in [
        "/v1/traces?failure_type=gremlins",
        "/v1/traces/export?format=jsonl&failure_type=gremlins",
    ] {
        let resp = server.get(path).await;
        let body = expect_error_naming(resp, 400, &["failure_type"]).await;
        assert_eq!(body["code"], "bad_request", "{path}");
    }
    assert_eq!(server.get("/v1/traces?limit=200").await.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn detail_of_an_unknown_or_malformed_id_is_404() {
    let server = TestServer::start().await;
    let unknown = uuid::Uuid::new_v4();
    let body = expect_error(server.get(&format!("/v1/traces/{unknown}")).await, 404).await;
    assert_eq!(body["code"], "not_found");
    expect_error(server.get("/v1/traces/not-a-uuid").await, 404).await;
    // Ids are matched in canonical form whatever case the caller uses.
    let id = server.ingest(sample_trace("case")).await;
    let upper = server
        .get_json(&format!("/v1/traces/{}", id.to_uppercase()))
        .await;
    assert_eq!(upper["id"], id.as_str());
    server.stop().await;
}

#[tokio::test]
async fn cursor_paging_neither_skips_nor_repeats_during_concurrent_ingest() {
    let server = TestServer::start().await;
    // 150 traces, several sharing a start time so the tie-break matters.
    let mut expected = Vec::new();
    for chunk in 0..3 {
        let traces: Vec<Value> = (0..50)
            .map(|i| at_minute(&format!("old-{chunk}-{i}"), (chunk * 50 + i) / 3))
            .collect();
        for t in &traces {
            expected.push(t["id"].as_str().expect("id").to_string());
        }
        let resp = server
            .post("/v1/ingest/batch", &json!({"traces": traces}))
            .await;
        assert_eq!(resp.status(), 201);
    }

    // Writers keep adding traces both newer and older than the ones paged.
    let writer = {
        let client = server.client.clone();
        let url = server.url("/v1/ingest/batch");
        let key = server.key.clone();
        tokio::spawn(async move {
            for round in 0..20 {
                let mut newer = at_minute(&format!("new-{round}"), 0);
                newer["started_at"] = json!(format!("2026-03-02T00:00:{round:02}Z"));
                let mut older = at_minute(&format!("older-{round}"), 0);
                older["started_at"] = json!(format!("2026-02-01T00:00:{round:02}Z"));
                let resp = client
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&json!({"traces": [newer, older]}))
                    .send()
                    .await
                    .expect("sent");
                assert_eq!(resp.status(), 201);
                tokio::task::yield_now().await;
            }
        })
    };

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut previous_start: Option<String> = None;
    for _ in 0..100 {
        let mut path =
            "/v1/traces?limit=7&to=2026-03-01T23:59:59Z&from=2026-03-01T00:00:00Z".to_string();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = server.get_json(&path).await;
        for t in page["traces"].as_array().expect("traces") {
            let started = t["started_at"].as_str().expect("started").to_string();
            if let Some(prev) = &previous_start {
                assert!(started <= *prev, "newest first across pages");
            }
            previous_start = Some(started);
            seen.push(t["id"].as_str().expect("id").to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    writer.await.expect("writer");
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no trace repeated");
    let expected: HashSet<&String> = expected.iter().collect();
    assert_eq!(unique, expected, "every trace seen exactly once");
    // Without the time window the new traces are all there too.
    assert_eq!(server.list_all("", 200).await.len(), 150 + 40);
    server.stop().await;
}

#[tokio::test]
async fn a_stop_merges_the_tags_and_sessions_still_waiting_for_their_indexes() {
    let server = TestServer::start().await;
    let traces: Vec<Value> = (0..50)
        .map(|i| {
            let mut t = at_minute(&format!("s{i}"), i);
            t["tags"] = json!({"env": "prod", "n": i.to_string()});
            if i % 5 != 0 {
                t["session_id"] = json!(format!("session-{}", i % 3));
            }
            t
        })
        .collect();
    let resp = server
        .post("/v1/ingest/batch", &json!({ "traces": traces }))
        .await;
    assert_eq!(resp.status(), 201);
    // While ingest runs the merge waits for thousands of traces, so these
    // are still waiting when the stop comes.
    let TestServer { running, dir, .. } = server;
    running.expect("running").stop().await.expect("clean stop");
    let db = dir
        .path()
        .join("data")
        .join(trulayer_server::store::DB_FILE);
    let conn = rusqlite::Connection::open(&db).expect("open");
    let (merged, last, entries): (i64, i64, i64) = conn
        .query_row(
            "SELECT tags_seq, (SELECT max(seq) FROM traces), (SELECT count(*) FROM tag_lookup) \
             FROM lookup_state",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("state");
    assert_eq!((merged, entries), (last, 100));
    let (sessions, waiting): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM session_lookup), (SELECT count(*) FROM session_pending)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("sessions");
    assert_eq!((sessions, waiting), (40, 0));
}

#[tokio::test]
async fn tag_filtered_pages_combine_with_other_filters_and_cursors() {
    let server = TestServer::start().await;
    let mut expected_prod = Vec::new();
    let mut in_session_0 = Vec::new();
    let traces: Vec<Value> = (0..60)
        .map(|i| {
            let mut t = at_minute(&format!("t{i}"), i / 2);
            let env = if i % 2 == 0 { "prod" } else { "dev" };
            t["tags"] = json!({"env": env, "n": i.to_string()});
            t["session_id"] = json!(format!("session-{}", i % 3));
            if i % 4 == 0 {
                t["error"] = json!("failed");
            }
            if env == "prod" {
                expected_prod.push(t["id"].as_str().expect("id").to_string());
            }
            if i % 3 == 0 {
                in_session_0.push(t["id"].as_str().expect("id").to_string());
            }
            t
        })
        .collect();
    // The tag index is merged in the background (see `store::lookup`): the
    // first half is merged before the second is sent, so pages run across
    // the index and the tags stored after it; then all of it is merged.
    let store = server.running().store().clone();
    let merged = || async {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while store.index_backlog().await.expect("backlog") > 0 {
            assert!(std::time::Instant::now() < deadline, "tags never merged");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    for half in traces.chunks(30) {
        let resp = server
            .post("/v1/ingest/batch", &json!({ "traces": half }))
            .await;
        assert_eq!(resp.status(), 201);
        if half[0]["id"] == traces[0]["id"] {
            merged().await;
        }
    }
    let mut newest_first = expected_prod.clone();
    newest_first.reverse();
    for round in ["partly merged", "merged"] {
        if round == "merged" {
            merged().await;
        }
        let prod = server.list_all("tag_key=env&tag_value=prod", 7).await;
        assert_eq!(prod, newest_first, "{round}");
        let prod_errors = server
            .list_all("tag_key=env&tag_value=prod&error=true", 4)
            .await;
        assert_eq!(prod_errors.len(), 15, "{round}");
        let window = server
            .list_all(
                "tag_key=env&tag_value=prod&from=2026-03-01T10:05:00Z&to=2026-03-01T10:09:00Z",
                2,
            )
            .await;
        assert_eq!(
            window.len(),
            5,
            "minutes 5 to 9, one prod trace each ({round})"
        );
        assert_eq!(server.list_all("tag_key=n&tag_value=17", 50).await.len(), 1);
        assert_eq!(server.list_all("tag_key=n&tag_value=45", 50).await.len(), 1);
        // With a session too, the session's index drives and the tag is
        // checked on each of its traces: traces 54, 48, ..., 0.
        let prod_in_session: Vec<String> = newest_first
            .iter()
            .filter(|id| in_session_0.contains(id))
            .cloned()
            .collect();
        assert_eq!(prod_in_session.len(), 10);
        assert_eq!(
            server
                .list_all("tag_key=env&tag_value=prod&session_id=session-0", 3)
                .await,
            prod_in_session,
            "{round}"
        );
    }
    server.stop().await;
}

/// The keys of a JSON object that its schema in the API document does not
/// name, and the properties the schema requires that the object lacks.
fn undocumented(doc: &Value, schema: &str, object: &Value) -> Vec<String> {
    let schema = &doc["components"]["schemas"][schema];
    let properties = schema["properties"].as_object().expect("properties");
    let mut wrong: Vec<String> = object
        .as_object()
        .expect("an object")
        .keys()
        .filter(|k| !properties.contains_key(*k))
        .map(|k| format!("undocumented {k}"))
        .collect();
    for required in schema["required"].as_array().into_iter().flatten() {
        let name = required.as_str().expect("name");
        if object.get(name).is_none() {
            wrong.push(format!("missing {name}"));
        }
    }
    wrong
}

#[tokio::test]
async fn the_api_document_describes_traces_as_they_are_returned() {
    let server = TestServer::start().await;
    let mut trace = sample_trace("documented");
    trace["tags"] = json!({"env": "prod"});
    trace["metadata"] = json!({"user": "u-1"});
    trace["events"] = json!([{"message": "retrieved 3 chunks", "level": "info"}]);
    let id = server.ingest(trace).await;
    let resp = server
        .post(
            "/v1/feedback",
            &json!({"trace_id": id, "label": "good", "score": 1.0}),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let resp = server
        .post(
            "/v1/eval",
            &json!({"trace_id": id, "evaluator_type": "rule", "metric_name": "pii_leakage"}),
        )
        .await;
    assert_eq!(resp.status(), 202);
    let doc: Value = server
        .client
        .get(server.url("/v1/openapi.json"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("JSON");

    let detail = server.get_json(&format!("/v1/traces/{id}")).await;
    let paths = &doc["paths"];
    assert_eq!(
        paths["/v1/traces/{id}"]["get"]["responses"]["200"]["content"]["application/json"]
            ["schema"]["$ref"],
        "#/components/schemas/Trace"
    );
    assert_eq!(undocumented(&doc, "Trace", &detail), Vec::<String>::new());
    for (field, schema) in [
        ("spans", "Span"),
        ("events", "Event"),
        ("feedback", "Feedback"),
        ("evaluations", "Evaluation"),
    ] {
        let items = detail[field].as_array().expect(field);
        assert!(!items.is_empty(), "{field}: {detail}");
        assert_eq!(
            doc["components"]["schemas"]["Trace"]["properties"][field]["items"]["$ref"],
            format!("#/components/schemas/{schema}").as_str()
        );
        for item in items {
            assert_eq!(
                undocumented(&doc, schema, item),
                Vec::<String>::new(),
                "{field}"
            );
        }
    }
    let list = server.get_json("/v1/traces?limit=1").await;
    assert_eq!(
        paths["/v1/traces"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
            ["$ref"],
        "#/components/schemas/TraceListResponse"
    );
    assert_eq!(
        undocumented(&doc, "TraceListResponse", &list),
        Vec::<String>::new()
    );
    assert_eq!(
        undocumented(&doc, "Trace", &list["traces"][0]),
        Vec::<String>::new()
    );
    // Every filter of the list is a documented parameter, and the export
    // takes the same ones.
    let names = |path: &str| -> HashSet<String> {
        paths[path]["get"]["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .map(|p| p["name"].as_str().expect("name").to_owned())
            .collect()
    };
    let listed = names("/v1/traces");
    for name in [
        "project_id",
        "model",
        "error",
        "failure_type",
        "from",
        "to",
        "latency_min",
        "latency_max",
        "token_count_min",
        "token_count_max",
        "tag_key",
        "tag_value",
        "session_id",
        "feedback",
        "q",
        "limit",
        "cursor",
    ] {
        assert!(listed.contains(name), "{name}");
    }
    let exported = names("/v1/traces/export");
    let mut filters = listed.clone();
    filters.remove("limit");
    filters.remove("cursor");
    filters.insert("format".into());
    assert_eq!(exported, filters);

    // Streams say what they stream.
    let export = &paths["/v1/traces/export"]["get"]["responses"]["200"];
    assert!(export["content"]["text/csv"].is_object(), "{export}");
    assert!(export["content"]["application/x-ndjson"].is_object());
    assert!(export["headers"]["X-TruLayer-Truncated"].is_object());
    let live = &paths["/v1/traces/live"]["get"]["responses"]["200"];
    assert!(live["content"]["text/event-stream"].is_object(), "{live}");
    let otlp = &paths["/v1/otlp/export"]["get"]["responses"]["200"];
    assert!(otlp["headers"]["X-Next-Cursor"].is_object(), "{otlp}");
    server.stop().await;
}
