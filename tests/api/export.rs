//! `GET /v1/traces/export`: CSV and JSONL with the list's filters, and the
//! per-plan row cap.

use serde_json::{json, Value};

use crate::common::{expect_error, sample_trace, TestServer};

async fn export(server: &TestServer, query: &str) -> (reqwest::header::HeaderMap, String) {
    let resp = server.get(&format!("/v1/traces/export{query}")).await;
    assert_eq!(resp.status().as_u16(), 200, "export {query}");
    let headers = resp.headers().clone();
    (headers, resp.text().await.expect("body"))
}

fn traced(name: &str, model: &str, env: &str, error: bool) -> Value {
    let mut t = sample_trace(name);
    t["model"] = json!(model);
    t["tags"] = json!({"env": env});
    if error {
        t["error"] = json!("boom, with a comma");
    }
    t
}

#[tokio::test]
async fn csv_and_jsonl_hold_the_filtered_traces_in_the_reference_columns() {
    let server = TestServer::start().await;
    let a = server.ingest(traced("a", "gpt-4o", "prod", true)).await;
    let b = server.ingest(traced("b", "gpt-4o", "dev", false)).await;
    server
        .ingest(traced("c", "claude, the model", "prod", false))
        .await;

    let (headers, csv) = export(&server, "").await;
    assert!(headers["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("text/csv"));
    assert!(headers["content-disposition"]
        .to_str()
        .expect("ascii")
        .contains("traces-"));
    assert!(headers.get("x-trulayer-truncated").is_none());
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "id,project_id,model,environment,status,duration_ms,token_count,cost_usd,created_at"
    );
    assert_eq!(lines.len(), 4);
    // A field with a comma is quoted.
    assert!(csv.contains("\"claude, the model\""), "{csv}");
    let row_a = lines.iter().find(|l| l.starts_with(&a)).expect("row a");
    let fields: Vec<&str> = row_a.split(',').collect();
    assert_eq!(fields[2], "gpt-4o");
    assert_eq!(fields[3], "prod");
    assert_eq!(fields[4], "error");
    assert_eq!(fields[5], "2500");
    assert_eq!(fields[6], "15");

    // JSONL, filtered like the list.
    let (headers, jsonl) = export(&server, "?format=jsonl&model=gpt-4o&error=false").await;
    assert_eq!(headers["content-type"], "application/x-ndjson");
    let rows: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["id"], b.as_str());
    assert_eq!(rows[0]["status"], "ok");
    assert_eq!(rows[0]["environment"], "dev");
    assert_eq!(rows[0]["token_count"], 15);
    let keys: Vec<&String> = rows[0].as_object().expect("object").keys().collect();
    assert_eq!(keys.len(), 9);

    expect_error(server.get("/v1/traces/export?format=xml").await, 400).await;
    expect_error(
        server.get("/v1/traces/export?limit=0&error=maybe").await,
        400,
    )
    .await;
}

#[tokio::test]
async fn a_capped_plan_cuts_the_export_and_says_so() {
    // Starter keeps traces 30 days and the sample traces are older: without
    // a retention of its own, the pass at start could delete them under
    // the test.
    let server = TestServer::start_with(
        "plan = \"starter\"\n[plans.starter]\nexport_max_rows = 3\nmax_retention_days = 0\n",
    )
    .await;
    for i in 0..3 {
        server.ingest(sample_trace(&format!("t{i}"))).await;
    }
    // Exactly at the cap: complete, not truncated.
    let (headers, csv) = export(&server, "").await;
    assert_eq!(csv.lines().count(), 1 + 3);
    assert!(headers.get("x-trulayer-truncated").is_none());
    for i in 3..10 {
        server.ingest(sample_trace(&format!("t{i}"))).await;
    }
    let (headers, csv) = export(&server, "").await;
    assert_eq!(csv.lines().count(), 1 + 3, "three rows, the cap");
    assert_eq!(headers["x-trulayer-truncated"], "true");
    let (headers, jsonl) = export(&server, "?format=jsonl").await;
    assert_eq!(jsonl.lines().count(), 3);
    assert_eq!(headers["x-trulayer-truncated"], "true");
}

#[tokio::test]
async fn a_large_export_streams_every_row() {
    let server = TestServer::start().await;
    let traces: Vec<Value> = (0..100)
        .map(|i| sample_trace(&format!("bulk {i}")))
        .collect();
    for _ in 0..12 {
        let batch: Vec<Value> = traces
            .iter()
            .map(|t| {
                let mut t = t.clone();
                t["id"] = json!(uuid::Uuid::new_v4().to_string());
                t
            })
            .collect();
        let resp = server
            .post("/v1/ingest/batch", &json!({"traces": batch}))
            .await;
        assert_eq!(resp.status().as_u16(), 201);
    }
    let (_, csv) = export(&server, "").await;
    let ids: std::collections::HashSet<&str> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().expect("id"))
        .collect();
    assert_eq!(ids.len(), 1_200, "every trace once, across several pages");
}
