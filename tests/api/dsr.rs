//! Data subject requests (`/v1/dsr`) against a real server: the statuses,
//! an erasure after which nothing of the subject can be read anywhere while
//! everything of another subject stays, an export's file, and an erasure
//! cut off by a stop that finishes after the restart.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};

use trulayer_server::auth::hash_password;
use trulayer_server::config::Synchronous;
use trulayer_server::store::{metadata_path, Actor, Store};

use crate::common::{expect_error, expect_error_naming, sample_trace, TestServer};

const WINDOW: &str = "from=2026-03-01T00:00:00Z&to=2026-03-02T00:00:00Z";

/// A trace of the sample's shape with `input`, a span output, and `extra`
/// fields over it.
fn trace(input: &str, span_output: &str, extra: Value) -> Value {
    let mut t = sample_trace("subject");
    t["input"] = json!(input);
    t["spans"][0]["output"] = json!(span_output);
    if let (Some(t), Some(e)) = (t.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            t.insert(k.clone(), v.clone());
        }
    }
    t
}

async fn create(server: &TestServer, token: &str, body: Value) -> Value {
    let resp = server.post_as(token, "/v1/dsr", &body).await;
    let status = resp.status().as_u16();
    let answer: Value = resp.json().await.expect("JSON");
    assert_eq!(status, 201, "{body}: {answer}");
    answer
}

/// Polls a request until it is completed (or failed); returns it.
async fn finished(server: &TestServer, token: &str, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let request = server.get_json_as(token, &format!("/v1/dsr/{id}")).await;
        match request["status"].as_str() {
            Some("completed") | Some("failed") => return request,
            _ => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "request {id} did not finish: {request}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn text(server: &TestServer, token: &str, path: &str) -> (u16, String) {
    let resp = server.get_as(token, path).await;
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body"))
}

fn ids_of(list: &Value, key: &str) -> HashSet<String> {
    list[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} in {list}"))
        .iter()
        .map(|t| t["id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test]
async fn requests_are_created_listed_and_refused_as_documented() {
    let server = TestServer::start().await;
    let owner = server.session_token().await;

    let made = create(
        &server,
        &owner,
        json!({"subject_id": " customer-4711 ", "type": "export"}),
    )
    .await;
    assert_eq!(made["status"], "pending");
    assert_eq!(made["type"], "export");
    assert_eq!(made["subject_id"], "customer-4711", "trimmed");
    assert_eq!(made["requested_by"], "user:owner@example.com");
    assert!(made["export_url"].is_null());
    assert!(made["completed_at"].is_null());
    let me = server.get_json_as(&owner, "/v1/auth/me").await;
    assert_eq!(made["tenant_id"], me["org_id"]);
    let id = made["id"].as_str().expect("id").to_owned();
    let second = create(
        &server,
        &owner,
        json!({"subject_id": "customer-4712", "type": "delete"}),
    )
    .await;

    // Bad bodies.
    for (body, needle) in [
        (json!({"subject_id": "x", "type": "erase"}), "type"),
        (json!({"subject_id": "   ", "type": "delete"}), "subject_id"),
        (json!({"subject_id": "", "type": "export"}), "subject_id"),
        (
            json!({"subject_id": "x".repeat(257), "type": "export"}),
            "subject_id",
        ),
    ] {
        expect_error_naming(
            server.post_as(&owner, "/v1/dsr", &body).await,
            400,
            &[needle],
        )
        .await;
    }

    // Newest first, in pages, `items` the same as `requests`.
    let page = server.get_json_as(&owner, "/v1/dsr?limit=1").await;
    assert_eq!(page["requests"][0]["id"], second["id"]);
    assert_eq!(page["items"], page["requests"]);
    let cursor = page["next_cursor"].as_str().expect("a next page");
    let page = server
        .get_json_as(&owner, &format!("/v1/dsr?limit=1&cursor={cursor}"))
        .await;
    assert_eq!(page["requests"][0]["id"], id.as_str());
    assert!(page.get("next_cursor").is_none(), "{page}");
    expect_error(server.get_as(&owner, "/v1/dsr?limit=0").await, 400).await;

    // Unknown ids, and members and keys.
    expect_error(
        server
            .get_as(&owner, &format!("/v1/dsr/{}", uuid::Uuid::new_v4()))
            .await,
        404,
    )
    .await;
    expect_error(server.get_as(&owner, "/v1/dsr/not-a-uuid").await, 404).await;
    let body = expect_error(server.get(&format!("/v1/dsr/{id}")).await, 403).await;
    assert_eq!(body["code"], "session_required");
    server
        .post_as(
            &owner,
            "/v1/users",
            &json!({"email": "member@example.com", "password": "member password", "role": "member"}),
        )
        .await;
    let member = login(&server, "member@example.com", "member password").await;
    let body = expect_error(
        server
            .post_as(
                &member,
                "/v1/dsr",
                &json!({"subject_id": "x", "type": "delete"}),
            )
            .await,
        403,
    )
    .await;
    assert_eq!(body["code"], "forbidden_role");

    // Another organisation's owner sees none of it.
    let store = server.running().store().clone();
    let (tenant, _) = store
        .create_tenant("other org".into(), "theirs".into(), Actor::operator())
        .await
        .expect("tenant");
    store
        .create_user(
            tenant,
            "other@example.com".into(),
            hash_password("other password").expect("hash"),
            trulayer_server::http::Role::Owner,
            Actor::operator(),
        )
        .await
        .expect("other owner");
    let other = login(&server, "other@example.com", "other password").await;
    expect_error(server.get_as(&other, &format!("/v1/dsr/{id}")).await, 404).await;
    let theirs = server.get_json_as(&other, "/v1/dsr").await;
    assert_eq!(theirs["requests"], json!([]));

    // The export (which matched nothing) completes and can be downloaded;
    // another organisation cannot.
    let done = finished(&server, &owner, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["counts"]["traces"], 0);
    let url = done["export_url"].as_str().expect("export_url");
    assert_eq!(url, format!("/v1/dsr/{id}/export"));
    expect_error(server.get_as(&other, url).await, 404).await;
    let (status, _) = text(&server, &owner, url).await;
    assert_eq!(status, 200);
    // An erasure has no file.
    let erased = finished(&server, &owner, second["id"].as_str().expect("id")).await;
    assert!(erased["export_url"].is_null());
    expect_error(
        server
            .get_as(
                &owner,
                &format!("/v1/dsr/{}/export", second["id"].as_str().expect("id")),
            )
            .await,
        404,
    )
    .await;
}

async fn login(server: &TestServer, email: &str, password: &str) -> String {
    let resp = server
        .client
        .post(server.url("/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("login sent");
    assert_eq!(resp.status().as_u16(), 200, "login {email}");
    let body: Value = resp.json().await.expect("login JSON");
    body["token"].as_str().expect("token").to_owned()
}

/// The two subjects' data: alice's traces (matched by external id, by
/// session id and by the metadata key), bob's, and one that only mentions
/// alice under another metadata key; feedback, an evaluation and a dataset
/// item on one trace of each.
struct Subjects {
    alice: Vec<String>,
    bob: Vec<String>,
    bystander: String,
    dataset: String,
}

async fn two_subjects(server: &TestServer) -> Subjects {
    let a1 = server
        .ingest(trace(
            "alice asks about marmalade",
            "marmalade answer",
            json!({"external_id": "alice", "session_id": "chat-a"}),
        ))
        .await;
    let a2 = server
        .ingest(trace(
            "more marmalade",
            "marmalade again",
            json!({"session_id": "alice"}),
        ))
        .await;
    let a3 = server
        .ingest(trace(
            "marmalade by metadata",
            "marmalade thrice",
            json!({"session_id": "chat-a", "metadata": {"user_id": "alice", "plan": "gold"}}),
        ))
        .await;
    let b1 = server
        .ingest(trace(
            "bob asks about quince",
            "quince answer",
            json!({"external_id": "bob", "session_id": "chat-b"}),
        ))
        .await;
    let b2 = server
        .ingest(trace(
            "quince by metadata",
            "quince again",
            json!({"metadata": {"user_id": "bob"}}),
        ))
        .await;
    let bystander = server
        .ingest(trace(
            "a bystander's damson",
            "damson answer",
            json!({"metadata": {"reviewer": "alice"}}),
        ))
        .await;
    for t in [&a1, &b1] {
        let resp = server
            .post(
                "/v1/feedback",
                &json!({"trace_id": t, "label": "bad", "comment": "wrong"}),
            )
            .await;
        assert_eq!(resp.status().as_u16(), 201, "feedback");
        let resp = server
            .post(
                "/v1/eval",
                &json!({"trace_id": t, "evaluator_type": "rule", "metric_name": "not_empty"}),
            )
            .await;
        assert_eq!(resp.status().as_u16(), 202, "evaluation");
    }
    let dataset = server
        .post("/v1/datasets", &json!({"name": "hard cases"}))
        .await;
    assert_eq!(dataset.status().as_u16(), 201);
    let dataset: Value = dataset.json().await.expect("JSON");
    let dataset = dataset["id"].as_str().expect("id").to_owned();
    for t in [&a1, &b1] {
        let resp = server
            .post(
                &format!("/v1/datasets/{dataset}/items"),
                &json!({"trace_id": t, "label": "fail"}),
            )
            .await;
        assert_eq!(resp.status().as_u16(), 201, "dataset item");
    }
    Subjects {
        alice: vec![a1, a2, a3],
        bob: vec![b1, b2],
        bystander,
        dataset,
    }
}

#[tokio::test]
async fn an_erasure_leaves_nothing_of_the_subject_where_a_query_reaches() {
    let server = TestServer::start().await;
    let owner = server.session_token().await;
    let s = two_subjects(&server).await;
    let before = server.get_json(&format!("/v1/metrics?{WINDOW}")).await;
    assert_eq!(before["total_traces"], 6);
    // Each sample trace has 15 tokens.
    let tokens = before["total_tokens"].as_i64().expect("tokens");
    // The search index has the subject's text before the erasure.
    let hits = server.get_json("/v1/traces?q=marmalade").await;
    assert_eq!(ids_of(&hits, "traces").len(), 3);

    let request = create(
        &server,
        &owner,
        json!({"subject_id": "alice", "type": "delete"}),
    )
    .await;
    let id = request["id"].as_str().expect("id");
    let done = finished(&server, &owner, id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert!(done["completed_at"].is_string());
    assert!(done["export_url"].is_null());
    let counts = &done["counts"];
    assert_eq!(counts["traces"], 3, "{done}");
    assert_eq!(counts["spans"], 3, "{done}");
    assert_eq!(counts["feedback"], 1, "{done}");
    assert_eq!(counts["evaluations"], 1, "{done}");
    assert_eq!(counts["dataset_items"], 1, "{done}");

    // Detail and list.
    for t in &s.alice {
        expect_error(server.get(&format!("/v1/traces/{t}")).await, 404).await;
    }
    let left: HashSet<String> = server.list_all("", 50).await.into_iter().collect();
    let mut want: HashSet<String> = s.bob.iter().cloned().collect();
    want.insert(s.bystander.clone());
    assert_eq!(
        left, want,
        "the list holds bob's and the bystander's traces"
    );
    for filter in ["session_id=chat-a", "session_id=alice"] {
        assert!(server.list_all(filter, 50).await.is_empty(), "{filter}");
    }

    // Full-text and span search.
    let hits = server.get_json("/v1/traces?q=marmalade").await;
    assert!(ids_of(&hits, "traces").is_empty(), "{hits}");
    let hits = server.get_json("/v1/traces?q=quince").await;
    assert_eq!(ids_of(&hits, "traces").len(), 2);
    let spans = server.get_json("/v1/search/spans?q=marmalade").await;
    assert_eq!(spans["results"], json!([]), "{spans}");
    let spans = server.get_json("/v1/search/spans?q=quince").await;
    assert_eq!(spans["results"].as_array().map(Vec::len), Some(2));

    // The trace export.
    let (status, export) = text(&server, &server.key, "/v1/traces/export?format=jsonl").await;
    assert_eq!(status, 200);
    assert_eq!(export.lines().count(), 3, "{export}");
    for t in &s.alice {
        assert!(!export.contains(t.as_str()), "{t} exported");
    }
    assert!(!export.contains("marmalade"));

    // Sessions.
    let sessions = server.get_json("/v1/sessions").await;
    let names: HashSet<&str> = sessions["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .map(|s| s["session_id"].as_str().expect("id"))
        .collect();
    assert_eq!(names, HashSet::from(["chat-b"]));
    for gone in ["chat-a", "alice"] {
        expect_error(server.get(&format!("/v1/sessions/{gone}")).await, 404).await;
    }

    // Metrics count what is left.
    let after = server.get_json(&format!("/v1/metrics?{WINDOW}")).await;
    assert_eq!(after["total_traces"], 3, "{after}");
    assert_eq!(after["total_tokens"], tokens / 2, "{after}");

    // Evaluations, the dataset's items and the dataset itself.
    let evals = server.get_json("/v1/eval?limit=1000").await;
    let evaluated: Vec<&str> = evals["evals"]
        .as_array()
        .expect("evals")
        .iter()
        .map(|e| e["trace_id"].as_str().expect("trace_id"))
        .collect();
    assert_eq!(evaluated, [s.bob[0].as_str()]);
    let items = server
        .get_json(&format!("/v1/datasets/{}/items", s.dataset))
        .await;
    let traced: Vec<&str> = items["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["trace_id"].as_str().expect("trace_id"))
        .collect();
    assert_eq!(traced, [s.bob[0].as_str()]);
    let dataset = server
        .get_json(&format!("/v1/datasets/{}", s.dataset))
        .await;
    assert_eq!(dataset["item_count"], 1);

    // Bob's trace keeps everything.
    let kept = server.get_json(&format!("/v1/traces/{}", s.bob[0])).await;
    assert_eq!(kept["feedback"].as_array().map(Vec::len), Some(1));
    assert_eq!(kept["evaluations"].as_array().map(Vec::len), Some(1));
    assert_eq!(kept["spans"].as_array().map(Vec::len), Some(1));

    // The audit log has the request and its completion with the counts,
    // and not the subject.
    let log = server.get_json_as(&owner, "/v1/audit-log").await;
    let entries = log["entries"].as_array().expect("entries");
    let of_request: Vec<&Value> = entries.iter().filter(|e| e["target"] == id).collect();
    let actions: HashSet<&str> = of_request
        .iter()
        .map(|e| e["action"].as_str().expect("action"))
        .collect();
    assert_eq!(actions, HashSet::from(["dsr.create", "dsr.complete"]));
    let text = serde_json::to_string(&of_request).expect("JSON");
    assert!(!text.contains("alice"), "{text}");
    assert!(text.contains("\"traces\":3"), "{text}");
    assert_eq!(server.audit_verify(&owner).await["intact"], true);

    // The subject's data stays gone after a restart.
    let server = server.restart().await;
    assert_eq!(server.list_all("", 50).await.len(), 3);
    let hits = server.get_json("/v1/traces?q=marmalade").await;
    assert!(ids_of(&hits, "traces").is_empty());
}

#[tokio::test]
async fn an_export_holds_every_trace_of_the_subject_whole() {
    let server = TestServer::start().await;
    let owner = server.session_token().await;
    let s = two_subjects(&server).await;
    let request = create(
        &server,
        &owner,
        json!({"subject_id": "bob", "type": "export"}),
    )
    .await;
    let id = request["id"].as_str().expect("id");
    let done = finished(&server, &owner, id).await;
    assert_eq!(done["status"], "completed", "{done}");
    let counts = &done["counts"];
    assert_eq!(counts["traces"], 2, "{done}");
    assert_eq!(counts["spans"], 2, "{done}");
    assert_eq!(counts["feedback"], 1, "{done}");
    assert_eq!(counts["evaluations"], 1, "{done}");
    assert_eq!(counts["dataset_items"], 1, "{done}");
    assert!(done["export_expires_at"].is_string());

    let url = done["export_url"].as_str().expect("export_url");
    let resp = server.get_as(&owner, url).await;
    assert_eq!(resp.status().as_u16(), 200);
    let disposition = resp
        .headers()
        .get("content-disposition")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        disposition.contains(&format!("dsr-export-{id}.jsonl")),
        "{disposition}"
    );
    let body = resp.text().await.expect("body");
    assert_eq!(
        done["export_bytes"].as_u64(),
        Some(body.len() as u64),
        "the size"
    );
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines[0]["type"], "export");
    assert_eq!(lines[0]["subject_id"], "bob");
    assert_eq!(lines[0]["request_id"], id);
    assert_eq!(
        lines[0]["matched_on"],
        json!(["external_id", "session_id", "metadata.user_id"])
    );
    let traces: Vec<&Value> = lines.iter().filter(|l| l["type"] == "trace").collect();
    let ids: HashSet<&str> = traces
        .iter()
        .map(|l| l["trace"]["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, s.bob.iter().map(String::as_str).collect());
    let first = traces
        .iter()
        .find(|l| l["trace"]["id"] == s.bob[0].as_str())
        .expect("bob's first trace");
    // As the trace's detail shows it.
    let detail = server.get_json(&format!("/v1/traces/{}", s.bob[0])).await;
    assert_eq!(first["trace"]["input"], detail["input"]);
    assert_eq!(first["trace"]["spans"], detail["spans"]);
    assert_eq!(first["trace"]["feedback"], detail["feedback"]);
    assert_eq!(first["trace"]["feedback"][0]["comment"], "wrong");
    assert_eq!(
        first["trace"]["evaluations"].as_array().map(Vec::len),
        Some(1)
    );
    let items: Vec<&Value> = lines
        .iter()
        .filter(|l| l["type"] == "dataset_item")
        .collect();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["item"]["trace_id"], s.bob[0].as_str());
    assert_eq!(items[0]["item"]["input"], "bob asks about quince");
    assert!(!body.contains("marmalade"), "nothing of alice");

    // Exporting erased nothing.
    assert_eq!(server.list_all("", 50).await.len(), 6);
}

#[tokio::test]
async fn an_erasure_cut_off_by_a_stop_resumes_at_the_next_start() {
    let mut server = TestServer::start().await;
    let owner = server.session_token().await;
    let s = two_subjects(&server).await;
    // Stop, then do the first step of an erasure as the worker would and
    // stop there: a request `processing` half way.
    if let Some(running) = server.running.take() {
        running.stop().await.expect("clean stop");
    }
    let data = server.dir.path().join("data");
    let store = Store::open(&data, Synchronous::Normal, 2).expect("open");
    let made = store
        .create_dsr(1, "alice".into(), "delete", Actor::operator())
        .await
        .expect("request");
    let mut work = store.next_dsr().await.expect("next").expect("work");
    assert_eq!(work.uuid, made.id);
    let done = store
        .erase_step(&mut work, metadata_path("user_id"), 2, 1)
        .await
        .expect("one step");
    assert!(!done);
    assert_eq!(work.counts.traces, 1, "the first trace only");
    let half = store
        .get_dsr(1, made.id.clone())
        .await
        .expect("read")
        .expect("request");
    assert_eq!(half.status, "processing");
    tokio::task::spawn_blocking(move || store.close())
        .await
        .expect("closed");

    let path = server.dir.path().join("trulayer.toml");
    let server = TestServer::start_in(server.dir, &path).await;
    let done = finished(&server, &owner_again(&server, &owner).await, &made.id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["counts"]["traces"], 3, "{done}");
    assert_eq!(done["counts"]["spans"], 3, "{done}");
    assert_eq!(done["counts"]["feedback"], 1, "{done}");
    assert_eq!(done["counts"]["dataset_items"], 1, "{done}");
    for t in &s.alice {
        expect_error(server.get(&format!("/v1/traces/{t}")).await, 404).await;
    }
    assert_eq!(server.list_all("", 50).await.len(), 3);
}

/// A session of the owner on a restarted server (sessions survive).
async fn owner_again(server: &TestServer, token: &str) -> String {
    let resp = server.get_as(token, "/v1/auth/me").await;
    if resp.status().as_u16() == 200 {
        token.to_owned()
    } else {
        server.session_token().await
    }
}

#[tokio::test]
async fn the_document_describes_the_requests_as_the_reference_does() {
    let server = TestServer::start().await;
    let doc = server.get_json("/v1/openapi.json").await;
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["CreateDsrRequest"]["properties"]["type"]["$ref"], "#/components/schemas/DsrType",
        "{}",
        schemas["CreateDsrRequest"]
    );
    let kinds: HashSet<&str> = schemas["DsrType"]["enum"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert_eq!(
        kinds,
        HashSet::from(["delete", "export"]),
        "{}",
        schemas["DsrType"]
    );
    let request = &schemas["DsrRequest"]["properties"];
    for field in [
        "id",
        "created_at",
        "updated_at",
        "tenant_id",
        "requested_by",
        "subject_id",
        "type",
        "status",
        "completed_at",
        "export_url",
        "error_msg",
        "counts",
    ] {
        assert!(
            request.get(field).is_some(),
            "DsrRequest.{field}: {request}"
        );
    }
    let list = &schemas["DsrRequestList"];
    assert_eq!(list["required"], json!(["items", "requests"]), "{list}");
    for op in [
        "createDsrRequest",
        "listDsrRequests",
        "getDsrRequest",
        "downloadDsrExport",
    ] {
        assert!(doc.to_string().contains(op), "{op}");
    }
}

#[tokio::test]
async fn an_export_file_is_deleted_after_its_keep_time() {
    let mut server = TestServer::start().await;
    let owner = server.session_token().await;
    server
        .ingest(trace("bob's", "quince", json!({"external_id": "bob"})))
        .await;
    let made = create(
        &server,
        &owner,
        json!({"subject_id": "bob", "type": "export"}),
    )
    .await;
    let id = made["id"].as_str().expect("id").to_owned();
    let done = finished(&server, &owner, &id).await;
    let url = done["export_url"].as_str().expect("export_url").to_owned();
    let file = server
        .dir
        .path()
        .join("data")
        .join("dsr-exports")
        .join(format!("{id}.jsonl"));
    assert!(file.exists(), "{}", file.display());

    // Its keep time ends while the server is stopped; the next start
    // deletes it.
    if let Some(running) = server.running.take() {
        running.stop().await.expect("clean stop");
    }
    let db = rusqlite::Connection::open(server.dir.path().join("data").join("trulayer.db"))
        .expect("open");
    db.execute(
        "UPDATE dsr_requests SET export_expires_at = 1 WHERE uuid = ?1",
        [&id],
    )
    .expect("expire");
    drop(db);
    let path = server.dir.path().join("trulayer.toml");
    let server = TestServer::start_in(server.dir, &path).await;
    let token = owner_again(&server, &owner).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let request = server.get_json_as(&token, &format!("/v1/dsr/{id}")).await;
        if request["export_url"].is_null() {
            assert_eq!(request["status"], "completed");
            assert_eq!(request["export_expires_at"], "1970-01-01T00:00:00.000001Z");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not deleted: {request}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!file.exists(), "{}", file.display());
    expect_error(server.get_as(&token, &url).await, 404).await;
}
