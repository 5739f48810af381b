//! `GET /metrics`: the Prometheus text format, behind a token on the main
//! listener or open on a listener of its own, and absent unless configured.

use serde_json::json;

use crate::common::{expect_error, sample_trace, TestServer};

const TOKEN: &str = "scrape-token-0123456789";

/// The value of the sample line starting with `series ` (labels included).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

#[tokio::test]
async fn metrics_count_requests_ingest_and_the_store_for_a_scraper_with_the_token() {
    let server = TestServer::start_with(&format!("[metrics]\ntoken = {TOKEN:?}\n")).await;
    for i in 0..2 {
        server.ingest(sample_trace(&format!("m{i}"))).await;
    }
    let batch = json!({"traces": [sample_trace("b1"), sample_trace("b2"), sample_trace("b3")]});
    assert_eq!(server.post("/v1/ingest/batch", &batch).await.status(), 201);
    expect_error(server.get("/v1/traces/nope").await, 404).await;

    // Without the token (or with an API key) there is nothing to see.
    let anonymous = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("sent");
    assert_eq!(anonymous.status().as_u16(), 401);
    expect_error(server.get("/metrics").await, 401).await;

    let resp = server
        .client
        .get(server.url("/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status().as_u16(), 200);
    let content_type = resp.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = resp.text().await.expect("text");
    assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with EOF");
    assert_eq!(
        sample(&text, "trulayer_ingested_traces_total"),
        Some(5.0),
        "{text}"
    );
    assert_eq!(sample(&text, "trulayer_ingested_spans_total"), Some(5.0));
    assert_eq!(
        sample(
            &text,
            r#"trulayer_http_requests_total{method="POST",route="/v1/ingest",status="201"}"#
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"trulayer_http_requests_total{method="GET",route="/v1/traces/{id}",status="404"}"#
        ),
        Some(1.0),
        "routes are patterns, not paths"
    );
    assert_eq!(
        sample(
            &text,
            r#"trulayer_http_request_duration_seconds_count{method="POST",route="/v1/ingest"}"#
        ),
        Some(2.0)
    );
    assert!(text.contains(r#"trulayer_http_request_duration_seconds_bucket{le="+Inf",method="POST",route="/v1/ingest"} 2"#)
        || text.contains(r#"trulayer_http_request_duration_seconds_bucket{method="POST",route="/v1/ingest",le="+Inf"} 2"#),
        "{text}");
    // Two single ingests and a batch: three writer jobs at least.
    assert!(sample(&text, "trulayer_writer_jobs_total").is_some_and(|v| v >= 3.0));
    assert!(sample(&text, "trulayer_writer_groups_total").is_some_and(|v| v >= 1.0));
    assert!(sample(&text, "trulayer_database_bytes").is_some_and(|v| v > 0.0));
    // The writer's histograms: every commit and every group lands in +Inf.
    let groups = sample(&text, "trulayer_writer_groups_total").expect("groups");
    assert_eq!(
        sample(&text, r#"trulayer_writer_commit_seconds_bucket{le="+Inf"}"#),
        Some(groups),
        "{text}"
    );
    assert_eq!(
        sample(&text, "trulayer_writer_commit_seconds_count"),
        Some(groups)
    );
    assert_eq!(
        sample(&text, r#"trulayer_writer_group_jobs_bucket{le="+Inf"}"#),
        Some(groups)
    );
    assert_eq!(
        sample(&text, "trulayer_writer_group_jobs_sum"),
        sample(&text, "trulayer_writer_jobs_total")
    );
    assert!(sample(&text, "trulayer_writer_queue").is_some());
    assert!(
        sample(&text, "trulayer_checkpoint_passes_total").is_some(),
        "{text}"
    );
}

#[tokio::test]
async fn without_configuration_there_is_no_metrics_route() {
    let server = TestServer::start().await;
    let resp = server
        .client
        .get(server.url("/metrics"))
        .bearer_auth("anything-at-all-long-enough")
        .send()
        .await
        .expect("sent");
    expect_error(resp, 404).await;
}

#[tokio::test]
async fn a_metrics_listener_of_its_own_needs_no_token() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let server =
        TestServer::start_with(&format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n")).await;
    server.ingest(sample_trace("one")).await;
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("text");
    assert_eq!(
        sample(&text, "trulayer_ingested_traces_total"),
        Some(1.0),
        "{text}"
    );
    // Only /metrics there; and the main listener does not serve it.
    let other = reqwest::get(format!("http://127.0.0.1:{port}/v1/traces"))
        .await
        .expect("sent");
    assert_eq!(other.status().as_u16(), 404);
    expect_error(server.get("/metrics").await, 404).await;
    // Stopping the server frees the metrics port too.
    server.stop().await;
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("the port is free again");
}

#[tokio::test]
async fn the_evaluation_queue_shows_in_health_and_metrics() {
    let server = TestServer::start_with(&format!("[metrics]\ntoken = {TOKEN:?}\n")).await;
    let health = server.get_json("/health").await;
    assert_eq!(health["eval_queue"]["pending"], 0, "{health}");
    assert_eq!(health["eval_queue"]["running"], 0, "{health}");
    assert_eq!(health["eval_queue"]["auto_backlog_traces"], 0, "{health}");
    let trace_id = server.ingest(sample_trace("evaluated")).await;
    // Two rules that complete, and an LLM evaluation that fails (no judge).
    for (kind, metric) in [
        ("rule", "not_empty"),
        ("rule", "pii_leakage"),
        ("llm", "toxicity"),
    ] {
        let resp = server
            .post(
                "/v1/eval",
                &json!({"trace_id": trace_id, "evaluator_type": kind, "metric_name": metric}),
            )
            .await;
        assert_eq!(resp.status().as_u16(), 202);
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let text = loop {
        let text = server
            .client
            .get(server.url("/metrics"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("sent")
            .text()
            .await
            .expect("text");
        if sample(&text, "trulayer_evaluations_completed_total") == Some(2.0)
            && sample(&text, "trulayer_evaluations_failed_total") == Some(1.0)
        {
            break text;
        }
        assert!(tokio::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    for series in [
        "trulayer_eval_queue_pending",
        "trulayer_eval_queue_running",
        "trulayer_eval_queue_oldest_pending_seconds",
        "trulayer_eval_auto_backlog_traces",
        "trulayer_evaluation_retries_total",
        "trulayer_judge_requests_total",
    ] {
        assert!(sample(&text, series).is_some(), "{series} missing:\n{text}");
    }
    assert_eq!(sample(&text, "trulayer_judge_requests_total"), Some(0.0));
}
