//! Inputs, outputs and metadata stored compressed with a dictionary trained
//! on the organisation's own traces: every read gives back what was sent,
//! from JSON and OTLP alike, across a restart; the file holds a fraction of
//! the text; another organisation's texts are not stored with it.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::TestServer;

/// The system prompt every call of the application repeats.
const PROMPT: &str = "You are the support assistant of Northwind Outfitters. Answer in the \
    customer's language, quote the order number, check the return policy before promising a \
    refund, never reveal internal notes, and keep every answer under one hundred and twenty \
    words. Escalate to a human when the customer asks twice.";

/// A trace as an application sends it: the prompt and a question in, an
/// answer out, metadata, and a model call repeating the prompt.
fn trace(i: usize, word: &str) -> Value {
    let input = format!("{PROMPT}\n\nCustomer: where is order NW-{i:06}? It was due {word}.");
    let output = format!(
        "Order NW-{i:06} left our warehouse on day {} and should arrive within {} days; \
         tracking code TRK{:08}.",
        i % 28 + 1,
        i % 5 + 2,
        i * 7919 % 100_000_000
    );
    json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "name": "support-answer",
        "input": input,
        "output": output,
        "started_at": "2026-03-01T10:00:00Z",
        "ended_at": "2026-03-01T10:00:02Z",
        "metadata": {"user_id": format!("customer-{}", i % 97), "channel": "email",
                     "locale": "en-GB", "app_version": "4.12.0", "region": "eu-west"},
        "spans": [{
            "name": "llm-call",
            "type": "llm",
            "model": "gpt-4o-mini",
            "input": input,
            "output": output,
            "prompt_tokens": 180,
            "completion_tokens": 40,
            "metadata": {"temperature": 0.2, "max_tokens": 400, "provider": "openai"},
            "start_time": "2026-03-01T10:00:00.2Z",
            "end_time": "2026-03-01T10:00:01.9Z"
        }]
    })
}

async fn ingest_batch(server: &TestServer, key: &str, traces: &[Value]) {
    for chunk in traces.chunks(100) {
        let resp = server
            .post_as(key, "/v1/ingest/batch", &json!({"traces": chunk}))
            .await;
        assert_eq!(
            resp.status().as_u16(),
            201,
            "{}",
            resp.text().await.unwrap_or_default()
        );
    }
}

/// What the detail gives back must be what was sent.
async fn assert_read_back(server: &TestServer, sent: &Value) {
    let id = sent["id"].as_str().expect("id");
    let got = server.get_json(&format!("/v1/traces/{id}")).await;
    for field in ["input", "output", "metadata"] {
        assert_eq!(got[field], sent[field], "{id}: {field}");
    }
    let span = &got["spans"][0];
    for field in ["input", "output", "metadata"] {
        assert_eq!(span[field], sent["spans"][0][field], "{id}: span {field}");
    }
}

/// The type SQLite stored a trace's input as, and its length in bytes.
fn stored_input(db: &std::path::Path, id: &str) -> (String, i64) {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open");
    conn.query_row(
        "SELECT typeof(input), length(CAST(input AS BLOB)) FROM traces WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .expect("stored")
}

#[tokio::test]
async fn texts_are_stored_compressed_once_trained_and_read_back_exactly() {
    let server = TestServer::start().await;
    let key = server.key.clone();
    let first: Vec<Value> = (0..1_050).map(|i| trace(i, "on monday")).collect();
    ingest_batch(&server, &key, &first).await;
    // The trainer looks every second once something was stored.
    let store = server.running().store().clone();
    for _ in 0..300 {
        if store.dictionaries() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(store.dictionaries(), 1, "no dictionary was trained");

    let later: Vec<Value> = (2_000..2_100).map(|i| trace(i, "last thursday")).collect();
    ingest_batch(&server, &key, &later).await;
    // OTLP spans of one trace over two requests, the root last.
    let trace_hex = "5bf92f3577b34da6a3ce929d0e0e4736";
    let otlp_input =
        format!("{PROMPT}\n\nCustomer: my parcel arrived damaged, a zeppelin crushed it.");
    for (span_id, parent, name) in [
        ("00f067aa0ba902b8", Some("00f067aa0ba902b7"), "llm-call"),
        ("00f067aa0ba902b7", None, "support-answer"),
    ] {
        let mut span = json!({
            "traceId": trace_hex, "spanId": span_id, "name": name, "kind": 1,
            "startTimeUnixNano": "1772359200000000000", "endTimeUnixNano": "1772359201000000000",
            "attributes": [{"key": "input.value", "value": {"stringValue": otlp_input}}]
        });
        if let Some(p) = parent {
            span["parentSpanId"] = json!(p);
        }
        let resp = server
            .post(
                "/v1/otlp/traces",
                &json!({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}),
            )
            .await;
        assert_eq!(resp.status().as_u16(), 200);
    }

    // Read back whole, before and after the dictionary existed.
    for sent in [&first[0], &first[1_049], &later[0], &later[99]] {
        assert_read_back(&server, sent).await;
    }
    let otlp_id = "5bf92f35-77b3-4da6-a3ce-929d0e0e4736";
    let otlp = server.get_json(&format!("/v1/traces/{otlp_id}")).await;
    assert_eq!(otlp["input"], json!(otlp_input), "{otlp}");
    assert_eq!(otlp["spans"].as_array().map(Vec::len), Some(2));
    assert!(otlp["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .all(|s| s["input"] == json!(otlp_input)));

    // On disk: the later traces' input is a fraction of what was sent, the
    // earlier ones' stays text.
    let db = server.dir.path().join("data").join("trulayer.db");
    let sent_len = later[0]["input"].as_str().expect("input").len() as i64;
    let (kind, len) = stored_input(&db, later[0]["id"].as_str().expect("id"));
    assert_eq!(kind, "blob");
    assert!(len * 5 < sent_len, "{len} bytes stored for {sent_len} sent");
    assert_eq!(
        stored_input(&db, first[0]["id"].as_str().expect("id")).0,
        "text"
    );

    // Lists, search and span search see text. The indexer works through
    // the 1,150 traces in the background; a search indexes 256 itself.
    let mut page = Value::Null;
    for _ in 0..300 {
        page = server.get_json("/v1/traces?q=thursday&limit=200").await;
        if page["traces"].as_array().map(Vec::len) == Some(100) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(page["traces"].as_array().map(Vec::len), Some(100));
    assert!(page["traces"][0]["input"]
        .as_str()
        .expect("input")
        .contains("last thursday"));
    assert_eq!(server.list_all("q=zeppelin", 50).await, [otlp_id]);
    let spans = server.get_json("/v1/search/spans?q=thursday&limit=5").await;
    let hits = spans["results"].as_array().expect("results");
    assert_eq!(hits.len(), 5);
    assert!(
        hits.iter().all(|h| h.to_string().contains("thursday")),
        "{spans}"
    );

    // Another organisation sending the same texts gets no dictionary of the
    // first's: its texts stay as sent until it has its own.
    let other_key = "tl_other_0123456789abcdef0123";
    server.other_tenant(other_key).await;
    let theirs = trace(5_000, "on friday");
    ingest_batch(&server, other_key, std::slice::from_ref(&theirs)).await;
    assert_eq!(
        stored_input(&db, theirs["id"].as_str().expect("id")).0,
        "text"
    );

    // The dictionary is in the file: a restarted server reads the same.
    let server = server.restart().await;
    assert_eq!(server.running().store().dictionaries(), 1);
    for sent in [&first[0], &later[0], &later[99]] {
        assert_read_back(&server, sent).await;
    }

    // An erasure finds its subject by the metadata key in packed metadata
    // as in text: customer-5's traces, before and after the dictionary.
    let subject: Vec<&Value> = first
        .iter()
        .chain(&later)
        .filter(|t| t["metadata"]["user_id"] == "customer-5")
        .collect();
    assert!(subject.len() > 5);
    let owner = server.session_token().await;
    let resp = server
        .post_as(
            &owner,
            "/v1/dsr",
            &json!({"subject_id": "customer-5", "type": "delete"}),
        )
        .await;
    assert_eq!(resp.status().as_u16(), 201);
    let request: Value = resp.json().await.expect("JSON");
    let path = format!("/v1/dsr/{}", request["id"].as_str().expect("id"));
    let mut done = Value::Null;
    for _ in 0..300 {
        done = server.get_json_as(&owner, &path).await;
        if done["status"] == "completed" || done["status"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["counts"]["traces"], json!(subject.len()), "{done}");
    for t in subject {
        let id = t["id"].as_str().expect("id");
        let resp = server.get(&format!("/v1/traces/{id}")).await;
        assert_eq!(resp.status().as_u16(), 404, "{id} is still there");
    }
}
