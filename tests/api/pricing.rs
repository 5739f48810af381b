//! Costs at ingest: a span's own cost, else `metadata.cost_usd`, else its
//! tokens at the price of its model; a trace without a cost sums its spans.

use serde_json::{json, Value};

use crate::common::TestServer;

fn span(model: &str, prompt: i64, completion: i64) -> Value {
    json!({"name": "call", "type": "llm", "model": model,
           "prompt_tokens": prompt, "completion_tokens": completion})
}

fn close(a: &Value, b: f64) -> bool {
    a.as_f64().is_some_and(|a| (a - b).abs() < 1e-12)
}

#[tokio::test]
async fn spans_are_priced_from_the_table_unless_a_cost_is_given() {
    let server = TestServer::start().await;
    let mut from_metadata = span("gpt-4o", 1_000, 1_000);
    from_metadata["metadata"] = json!({"cost_usd": 0.5});
    let mut explicit = span("gpt-4o", 1_000, 1_000);
    explicit["cost"] = json!(0.25);
    explicit["metadata"] = json!({"cost_usd": 9.0});
    let id = server
        .ingest(json!({
            "name": "priced",
            "spans": [
                span("gpt-4o-2024-08-06", 1_000, 500),
                span("claude-3-5-sonnet-20241022", 2_000, 100),
                span("some-private-model", 10, 10),
                from_metadata,
                explicit,
            ]
        }))
        .await;
    let trace = server.get_json(&format!("/v1/traces/{id}")).await;
    let spans = trace["spans"].as_array().expect("spans");
    // gpt-4o: $2.50 / $10 per million tokens.
    assert!(
        close(&spans[0]["cost"], (1_000.0 * 2.5 + 500.0 * 10.0) / 1e6),
        "{}",
        spans[0]
    );
    // Claude 3.5 Sonnet: $3 / $15.
    assert!(
        close(&spans[1]["cost"], (2_000.0 * 3.0 + 100.0 * 15.0) / 1e6),
        "{}",
        spans[1]
    );
    assert_eq!(spans[2]["cost"], Value::Null, "unknown model");
    assert!(
        close(&spans[3]["cost"], 0.5),
        "metadata.cost_usd wins over the table"
    );
    assert!(close(&spans[4]["cost"], 0.25), "the span's own cost wins");
    let sum = 0.0075 + 0.0075 + 0.5 + 0.25;
    assert!(
        close(&trace["cost"], sum),
        "the trace sums its spans: {}",
        trace["cost"]
    );

    // A trace that states its cost keeps it.
    let id = server
        .ingest(json!({"name": "stated", "cost": 1.0, "spans": [span("gpt-4o", 1_000, 0)]}))
        .await;
    let trace = server.get_json(&format!("/v1/traces/{id}")).await;
    assert!(close(&trace["cost"], 1.0));
}

#[tokio::test]
async fn the_configuration_overrides_and_extends_prices() {
    let server = TestServer::start_with(
        "[pricing.\"gpt-4o\"]\ninput = 1.0\noutput = 2.0\n\
         [pricing.\"acme-llm\"]\ninput = 4.0\noutput = 8.0\naliases = [\"acme-large\"]\n",
    )
    .await;
    let id = server
        .ingest(json!({"name": "t", "spans": [
            span("gpt-4o-2024-08-06", 1_000_000, 1_000_000),
            span("acme-large", 1_000_000, 0),
        ]}))
        .await;
    let trace = server.get_json(&format!("/v1/traces/{id}")).await;
    assert!(
        close(&trace["spans"][0]["cost"], 3.0),
        "{}",
        trace["spans"][0]
    );
    assert!(
        close(&trace["spans"][1]["cost"], 4.0),
        "{}",
        trace["spans"][1]
    );
}

#[tokio::test]
async fn otlp_spans_are_priced_too() {
    let server = TestServer::start().await;
    let request = json!({"resourceSpans": [{"scopeSpans": [{"spans": [{
    "traceId": "6b8efff798038103d269b633813fc60c", "spanId": "aee19b7ec3c1b174",
    "name": "chat", "startTimeUnixNano": "1700000000000000000",
    "endTimeUnixNano": "1700000001000000000",
    "attributes": [
        {"key": "gen_ai.system", "value": {"stringValue": "openai"}},
        {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o-mini"}},
        {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "1000000"}},
        {"key": "gen_ai.usage.output_tokens", "value": {"intValue": "1000000"}}
    ]}]}]}]});
    let resp = server.post("/v1/otlp/traces", &request).await;
    assert_eq!(resp.status().as_u16(), 200);
    let trace = server
        .get_json("/v1/traces/6b8efff7-9803-8103-d269-b633813fc60c")
        .await;
    // gpt-4o-mini: $0.15 + $0.60 for a million tokens each.
    assert!(
        close(&trace["spans"][0]["cost"], 0.75),
        "{}",
        trace["spans"][0]
    );
    assert!(close(&trace["cost"], 0.75));
}
