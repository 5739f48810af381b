//! POST /v1/ingest and /v1/ingest/batch: round trips, idempotency,
//! atomic batches and every validation error.

use serde_json::{json, Value};

use crate::common::{expect_error, expect_error_naming, sample_trace, TestServer};

#[tokio::test]
async fn every_field_round_trips_through_ingest_and_detail() {
    let server = TestServer::start().await;
    let trace_id = uuid::Uuid::new_v4().to_string();
    let root = uuid::Uuid::new_v4().to_string();
    let child = uuid::Uuid::new_v4().to_string();
    let body = json!({
        "id": trace_id,
        "project_id": "default",
        "session_id": "sess-1",
        "external_id": "ext-9",
        "name": "rag-query",
        "input": "question",
        "output": "answer",
        "model": "claude-sonnet-4",
        "latency_ms": 1234,
        "cost": 0.5,
        "error": null,
        "tags": ["rag", "beta"],
        "metadata": {"user": "u1", "nested": {"n": [1, 2]}},
        "started_at": "2026-03-01T10:00:00.123456Z",
        "ended_at": "2026-03-01T10:00:01.357456Z",
        "unknown_field": "ignored",
        "spans": [
            {"id": child, "parent_span_id": root, "name": "generate", "type": "llm",
             "input": "prompt", "output": "completion", "model": "claude-sonnet-4",
             "latency_ms": 700, "cost": 0.25, "error": "rate limited once",
             "prompt_tokens": 100, "completion_tokens": 50, "metadata": {"temperature": 0.2},
             "start_time": "2026-03-01T10:00:00.500Z", "end_time": "2026-03-01T10:00:01.200Z"},
            {"id": root, "name": "retrieve", "type": "retrieval",
             "start_time": "2026-03-01T10:00:00.200Z", "end_time": "2026-03-01T10:00:00.400Z"}
        ],
        "events": [{"level": "warn", "message": "slow retrieval", "span_id": root, "metadata": {"ms": 200}}]
    });
    let resp = server.post("/v1/ingest", &body).await;
    assert_eq!(resp.status(), 201);
    let created: Value = resp.json().await.expect("json");
    assert_eq!(created["id"], trace_id.as_str());
    assert!(created["created_at"].is_string());

    let t = server.get_json(&format!("/v1/traces/{trace_id}")).await;
    for field in [
        "session_id",
        "external_id",
        "name",
        "input",
        "output",
        "model",
        "latency_ms",
        "cost",
        "metadata",
        "tags",
    ] {
        assert_eq!(t[field], body[field], "trace field {field}");
    }
    assert_eq!(t["error"], Value::Null);
    assert_eq!(t["started_at"], "2026-03-01T10:00:00.123456Z");
    assert_eq!(t["ended_at"], "2026-03-01T10:00:01.357456Z");
    assert_eq!(t["total_token_count"], 150);
    assert_eq!(t["span_count"], 2);
    assert!(t["project_id"]
        .as_str()
        .is_some_and(|p| uuid::Uuid::parse_str(p).is_ok()));
    assert!(t.get("unknown_field").is_none());

    let spans = t["spans"].as_array().expect("spans");
    assert_eq!(spans.len(), 2);
    // Ordered by start time: the retrieval span started first.
    assert_eq!(spans[0]["id"], root.as_str());
    assert_eq!(spans[0]["latency_ms"], 200, "derived from the span's times");
    let s = &spans[1];
    let sent = &body["spans"][0];
    for field in [
        "id",
        "parent_span_id",
        "name",
        "type",
        "input",
        "output",
        "model",
        "latency_ms",
        "cost",
        "error",
        "prompt_tokens",
        "completion_tokens",
        "metadata",
    ] {
        assert_eq!(s[field], sent[field], "span field {field}");
    }
    assert_eq!(s["start_time"], "2026-03-01T10:00:00.500000Z");
    assert_eq!(s["trace_id"], trace_id.as_str());
    assert!(s["tenant_id"]
        .as_str()
        .is_some_and(|p| uuid::Uuid::parse_str(p).is_ok()));

    let events = t["events"].as_array().expect("events");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["level"], "warn");
    assert_eq!(events[0]["message"], "slow retrieval");
    assert_eq!(events[0]["span_id"], root.as_str());
    assert_eq!(events[0]["metadata"], json!({"ms": 200}));
    server.stop().await;
}

#[tokio::test]
async fn missing_values_are_derived() {
    let server = TestServer::start().await;
    // No id, no trace times, no latency, no model, no cost: all derived.
    let id = server
        .ingest(json!({
            "name": "derived",
            "tags": {"env": "prod", "team": "search"},
            "spans": [
                {"name": "a", "type": "llm", "model": "gpt-4o", "prompt_tokens": 7, "completion_tokens": 5, "cost": 0.125,
                 "start_time": "2026-03-01T10:00:00Z", "end_time": "2026-03-01T10:00:01Z"},
                {"name": "b", "type": "tool", "cost": 0.25,
                 "start_time": "2026-03-01T10:00:01Z", "end_time": "2026-03-01T10:00:03Z"}
            ]
        }))
        .await;
    let parsed = uuid::Uuid::parse_str(&id).expect("a UUID was assigned");
    assert_eq!(parsed.get_version_num(), 7, "assigned ids are UUIDv7");
    let t = server.get_json(&format!("/v1/traces/{id}")).await;
    assert_eq!(t["started_at"], "2026-03-01T10:00:00.000000Z");
    assert_eq!(t["ended_at"], "2026-03-01T10:00:03.000000Z");
    assert_eq!(t["latency_ms"], 3000);
    assert_eq!(t["total_token_count"], 12);
    assert_eq!(t["cost"], 0.375);
    assert_eq!(t["model"], "gpt-4o");
    assert_eq!(t["tag_map"], json!({"env": "prod", "team": "search"}));
    assert_eq!(t["tags"], json!(["env:prod", "team:search"]));
    server.stop().await;
}

#[tokio::test]
async fn resending_a_trace_is_a_duplicate_and_changing_it_is_a_conflict() {
    let server = TestServer::start().await;
    let trace = sample_trace("once");
    let id = server.ingest(trace.clone()).await;

    let resp = server.post("/v1/ingest", &trace).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["status"], "duplicate");

    let mut changed = trace.clone();
    changed["output"] = json!("Lyon.");
    expect_error_naming(server.post("/v1/ingest", &changed).await, 409, &[&id]).await;

    let t = server.get_json(&format!("/v1/traces/{id}")).await;
    assert_eq!(
        t["output"], "Paris.",
        "the conflicting write changed nothing"
    );
    assert_eq!(server.list_all("", 50).await.len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_batch_is_all_or_nothing() {
    let server = TestServer::start().await;
    let existing = sample_trace("existing");
    server.ingest(existing.clone()).await;

    let mut conflicting = existing.clone();
    conflicting["name"] = json!("changed");
    let fresh = sample_trace("fresh");
    let batch = json!({"traces": [fresh.clone(), conflicting]});
    expect_error(server.post("/v1/ingest/batch", &batch).await, 409).await;
    let resp = server
        .get(&format!("/v1/traces/{}", fresh["id"].as_str().expect("id")))
        .await;
    assert_eq!(
        resp.status(),
        404,
        "the valid trace of a failed batch was not stored"
    );

    // An invalid trace late in a batch also stores nothing.
    let mut bad = sample_trace("bad");
    bad["spans"][0]["type"] = json!("banana");
    let batch = json!({"traces": [fresh.clone(), bad]});
    expect_error_naming(
        server.post("/v1/ingest/batch", &batch).await,
        422,
        &["traces[1].spans[0].type"],
    )
    .await;
    assert_eq!(server.list_all("", 50).await.len(), 1);

    // A retried batch with one new trace: the new one is ingested, the rest are duplicates.
    let batch = json!({"traces": [existing.clone(), fresh.clone()]});
    let resp = server.post("/v1/ingest/batch", &batch).await;
    assert_eq!(resp.status(), 201);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["ingested"], 1);
    assert_eq!(body["ids"], json!([existing["id"], fresh["id"]]));
    // The whole batch again: nothing new.
    let resp = server.post("/v1/ingest/batch", &batch).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["ingested"], 0);
    assert_eq!(body["status"], "duplicate");
    assert_eq!(server.list_all("", 50).await.len(), 2);
    server.stop().await;
}

#[tokio::test]
async fn batch_sizes_are_enforced() {
    let server = TestServer::start().await;
    expect_error_naming(
        server
            .post("/v1/ingest/batch", &json!({"traces": []}))
            .await,
        400,
        &["traces", "10000"],
    )
    .await;
    let many: Vec<Value> = (0..10_001)
        .map(|i| sample_trace(&format!("t{i}")))
        .collect();
    expect_error_naming(
        server
            .post("/v1/ingest/batch", &json!({"traces": many}))
            .await,
        400,
        &["got 10001"],
    )
    .await;
    assert_eq!(server.list_all("", 200).await.len(), 0);
    // A required field missing is a validation error.
    expect_error_naming(
        server.post("/v1/ingest/batch", &json!({"nope": []})).await,
        422,
        &["traces"],
    )
    .await;

    let hundred: Vec<Value> = (0..100).map(|i| sample_trace(&format!("t{i}"))).collect();
    let resp = server
        .post("/v1/ingest/batch", &json!({"traces": hundred}))
        .await;
    assert_eq!(resp.status(), 201);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["ingested"], 100);
    assert_eq!(body["ids"].as_array().map(Vec::len), Some(100));
    server.stop().await;
}

/// Sends `trace` and expects `status` with an error naming `needle`.
async fn rejects(server: &TestServer, trace: Value, status: u16, needle: &str) {
    expect_error_naming(server.post("/v1/ingest", &trace).await, status, &[needle]).await;
}

#[tokio::test]
async fn each_invalid_field_is_named() {
    let server = TestServer::start().await;
    let with = |f: &dyn Fn(&mut Value)| {
        let mut t = sample_trace("v");
        f(&mut t);
        t
    };
    rejects(
        &server,
        with(&|t| t["spans"][0]["type"] = json!("database")),
        422,
        "spans[0].type",
    )
    .await;
    rejects(
        &server,
        with(&|t| {
            t["spans"][0].as_object_mut().map(|s| s.remove("name"));
        }),
        422,
        "name",
    )
    .await;
    rejects(
        &server,
        with(&|t| t["spans"][0]["name"] = json!(42)),
        422,
        "spans[0].name",
    )
    .await;
    rejects(
        &server,
        with(&|t| t["spans"][0]["prompt_tokens"] = json!(-1)),
        422,
        "spans[0].prompt_tokens",
    )
    .await;
    rejects(
        &server,
        with(&|t| t["latency_ms"] = json!("slow")),
        422,
        "latency_ms",
    )
    .await;
    rejects(&server, with(&|t| t["cost"] = json!(-0.5)), 422, "cost").await;
    rejects(&server, with(&|t| t["id"] = json!("not-a-uuid")), 422, "id").await;
    rejects(
        &server,
        with(&|t| t["started_at"] = json!("yesterday")),
        422,
        "started_at",
    )
    .await;
    rejects(
        &server,
        with(&|t| t["metadata"] = json!([1, 2])),
        422,
        "metadata",
    )
    .await;
    let many_tags: serde_json::Map<String, Value> =
        (0..21).map(|i| (format!("k{i}"), json!("v"))).collect();
    rejects(
        &server,
        with(&|t| t["tags"] = Value::Object(many_tags.clone())),
        422,
        "at most 20 tags",
    )
    .await;
    rejects(
        &server,
        with(&|t| t["tags"] = json!({"k".repeat(65): "v"})),
        422,
        "64",
    )
    .await;
    rejects(
        &server,
        with(&|t| t["tags"] = json!({"k": "v".repeat(65)})),
        422,
        "64",
    )
    .await;
    rejects(
        &server,
        with(&|t| t["tags"] = json!(["x".repeat(65)])),
        422,
        "64",
    )
    .await;
    rejects(&server, with(&|t| t["tags"] = json!({"k": 1})), 422, "tags").await;
    let dup = uuid::Uuid::new_v4().to_string();
    rejects(
        &server,
        with(&|t| t["spans"] = json!([{"id": dup, "name": "a", "type": "llm"}, {"id": dup, "name": "b", "type": "tool"}])),
        422,
        "appears twice",
    )
    .await;
    // Exactly 20 tags of 64 characters is fine.
    let ok_tags: serde_json::Map<String, Value> = (0..20)
        .map(|i| (format!("{i:0>64}"), json!("v".repeat(64))))
        .collect();
    server
        .ingest(with(&|t| t["tags"] = Value::Object(ok_tags.clone())))
        .await;
    assert_eq!(
        server.list_all("", 50).await.len(),
        1,
        "only the valid trace was stored"
    );
    server.stop().await;
}

#[tokio::test]
async fn malformed_bodies_wrong_types_and_oversize_are_refused() {
    let server = TestServer::start_with("[limits]\njson_body_max_bytes = 65536\n").await;
    let send = |body: Vec<u8>, content_type: &'static str| {
        server
            .client
            .post(server.url("/v1/ingest"))
            .bearer_auth(&server.key)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    expect_error_naming(
        send(b"{\"name\": ".to_vec(), "application/json")
            .await
            .expect("sent"),
        400,
        &["malformed JSON"],
    )
    .await;
    expect_error(
        send(b"{} trailing".to_vec(), "application/json")
            .await
            .expect("sent"),
        400,
    )
    .await;
    expect_error(
        send(b"[]".to_vec(), "application/json")
            .await
            .expect("sent"),
        422,
    )
    .await;
    let body = expect_error(
        send(b"name=x".to_vec(), "application/x-www-form-urlencoded")
            .await
            .expect("sent"),
        415,
    )
    .await;
    assert_eq!(body["code"], "unsupported_media_type");
    let mut big = sample_trace("big");
    big["input"] = json!("x".repeat(70_000));
    expect_error_naming(
        send(big.to_string().into_bytes(), "application/json")
            .await
            .expect("sent"),
        413,
        &["65536"],
    )
    .await;
    // Deeply nested JSON is refused cleanly, not with a crash.
    let deep = format!(
        "{{\"metadata\":{}{}}}",
        "{\"a\":".repeat(200),
        "1".to_string() + &"}".repeat(200)
    );
    let resp = send(deep.into_bytes(), "application/json")
        .await
        .expect("sent");
    assert!(resp.status().is_client_error(), "got {}", resp.status());
    // The server is still healthy after all of that.
    server.ingest(sample_trace("after")).await;
    server.stop().await;
}

#[tokio::test]
async fn project_references_resolve_by_name_slug_or_id_and_fall_back_to_the_keys_project() {
    let server = TestServer::start().await;
    let store = server.running().store().clone();
    let probe = server.ingest(sample_trace("probe")).await;
    let default_project = server.get_json(&format!("/v1/traces/{probe}")).await["project_id"]
        .as_str()
        .expect("project id")
        .to_string();
    // A second project in the first (and only) tenant of a fresh store.
    let rag = store
        .create_project(
            1,
            "RAG App".into(),
            trulayer_server::store::Actor::operator(),
        )
        .await
        .expect("project");
    for reference in ["RAG App", "rag-app", rag.uuid.as_str()] {
        let mut t = sample_trace("to-rag");
        t["project_id"] = json!(reference);
        let id = server.ingest(t).await;
        let got = server.get_json(&format!("/v1/traces/{id}")).await;
        assert_eq!(
            got["project_id"],
            rag.uuid.as_str(),
            "reference {reference:?}"
        );
    }
    let mut t = sample_trace("unknown-project");
    t["project_id"] = json!("no-such-project");
    let id = server.ingest(t).await;
    let got = server.get_json(&format!("/v1/traces/{id}")).await;
    assert_eq!(got["project_id"], default_project.as_str());

    assert_eq!(
        server
            .list_all(&format!("project_id={}", rag.uuid), 50)
            .await
            .len(),
        3
    );
    assert_eq!(server.list_all("project_id=rag-app", 50).await.len(), 3);
    assert_eq!(
        server
            .list_all(&format!("project_id={default_project}"), 50)
            .await
            .len(),
        2
    );
    server.stop().await;
}

#[tokio::test]
async fn concurrent_writers_all_commit() {
    let server = TestServer::start().await;
    let mut tasks = Vec::new();
    for c in 0..16 {
        let client = server.client.clone();
        let url = server.url("/v1/ingest/batch");
        let key = server.key.clone();
        tasks.push(tokio::spawn(async move {
            let traces: Vec<Value> = (0..25)
                .map(|i| sample_trace(&format!("c{c}-{i}")))
                .collect();
            let resp = client
                .post(url)
                .bearer_auth(key)
                .json(&json!({"traces": traces}))
                .send()
                .await
                .expect("sent");
            resp.status().as_u16()
        }));
    }
    // A conflicting request in the middle of the group fails alone.
    let dup = sample_trace("dup");
    server.ingest(dup.clone()).await;
    let mut changed = dup.clone();
    changed["name"] = json!("other");
    let conflict = server.post("/v1/ingest", &changed).await;
    assert_eq!(conflict.status(), 409);
    for t in tasks {
        assert_eq!(t.await.expect("task"), 201);
    }
    assert_eq!(server.list_all("", 200).await.len(), 16 * 25 + 1);
    server.stop().await;
}

#[tokio::test]
async fn the_documented_examples_are_accepted_and_answered_as_documented() {
    use crate::evals::{documented_fields, fields_of, operation};
    let server = TestServer::start().await;
    let doc = server.get_json("/v1/openapi.json").await;
    let one = operation(&doc, "post", "/v1/ingest");
    let batch = operation(&doc, "post", "/v1/ingest/batch");
    let example = |op: &Value| op["requestBody"]["content"]["application/json"]["example"].clone();

    // The batch's example stores its trace; the single trace's example is
    // the same trace, so it is a duplicate.
    let resp = server.post("/v1/ingest/batch", &example(batch)).await;
    assert_eq!(resp.status().as_u16(), 201);
    let stored: Value = resp.json().await.expect("JSON");
    assert_eq!(
        fields_of(&stored),
        documented_fields(&doc, "BatchIngestResponse")
    );
    assert_eq!(stored["ingested"], 1);
    let resp = server.post("/v1/ingest", &example(one)).await;
    assert_eq!(resp.status().as_u16(), 200);
    let duplicate: Value = resp.json().await.expect("JSON");
    assert_eq!(
        fields_of(&duplicate),
        documented_fields(&doc, "DuplicateResponse")
    );
    assert_eq!(duplicate["id"], stored["ids"][0]);
    let resp = server.post("/v1/ingest/batch", &example(batch)).await;
    assert_eq!(resp.status().as_u16(), 200);
    let again: Value = resp.json().await.expect("JSON");
    assert_eq!(
        fields_of(&again),
        documented_fields(&doc, "BatchDuplicateResponse")
    );

    // A new trace of the same shape is stored, as documented.
    let mut fresh = example(one);
    fresh["id"] = json!(uuid::Uuid::new_v4().to_string());
    let resp = server.post("/v1/ingest", &fresh).await;
    assert_eq!(resp.status().as_u16(), 201);
    let created: Value = resp.json().await.expect("JSON");
    assert_eq!(
        fields_of(&created),
        documented_fields(&doc, "IngestResponse")
    );
    let trace = server
        .get_json(&format!(
            "/v1/traces/{}",
            created["id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(trace["spans"].as_array().expect("spans").len(), 2);

    // The request body's schema names the SDK's fields.
    let fields = documented_fields(&doc, "TraceRequest");
    for name in [
        "id", "name", "input", "output", "tags", "metadata", "spans", "events",
    ] {
        assert!(fields.contains(&name.to_owned()), "{fields:?}");
    }
    let span = &doc["components"]["schemas"]["SpanRequest"];
    assert_eq!(span["required"], json!(["name", "type"]));
    assert_eq!(
        span["properties"]["type"]["enum"],
        json!(["llm", "tool", "retrieval", "other"])
    );

    // The failures particular to ingest are documented.
    let says = |op: &Value, status: &str, code: &str| {
        let text = op["responses"][status]["description"]
            .as_str()
            .unwrap_or_default();
        assert!(text.contains(code), "{status}: {text}");
    };
    for op in [one, batch] {
        says(op, "413", "too_many_spans");
        says(op, "413", "payload_too_large");
        says(op, "429", "monthly_quota_exceeded");
        says(op, "429", "rate_limited");
        says(op, "422", "validation_error");
    }
    says(batch, "400", "10,000");
    let bad = server
        .post("/v1/ingest/batch", &json!({"traces": []}))
        .await;
    let body = expect_error(bad, 400).await;
    assert_eq!(body["code"], "bad_request");
}
