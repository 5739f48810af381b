//! Evaluations through the API: triggering, the rule evaluators end to end,
//! reading results, the summaries, the catalog, quotas, and auto-evaluation
//! rules with filters and sampling.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{expect_error, expect_error_naming, sample_trace, TestServer};

/// Polls an evaluation until it is complete or failed.
pub async fn finished(server: &TestServer, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let eval = server.get_json(&format!("/v1/eval/{id}")).await;
        if matches!(eval["status"].as_str(), Some("complete" | "failed")) {
            return eval;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "evaluation {id} did not finish: {eval}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Triggers an evaluation, which must be accepted; returns its id.
pub async fn trigger(server: &TestServer, body: Value) -> String {
    let resp = server.post("/v1/eval", &body).await;
    let status = resp.status().as_u16();
    let answer: Value = resp.json().await.expect("JSON");
    assert_eq!(status, 202, "{body}: {answer}");
    assert_eq!(answer["status"], "pending");
    answer["eval_id"].as_str().expect("eval_id").to_owned()
}

fn trace_with(output: &str, extra: Value) -> Value {
    let mut trace = sample_trace("evaluated");
    trace["output"] = json!(output);
    if let (Some(t), Some(e)) = (trace.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            t.insert(k.clone(), v.clone());
        }
    }
    trace
}

#[tokio::test]
async fn every_rule_kind_passes_and_fails_through_the_queue() {
    let server = TestServer::start().await;
    // (rule config, passing trace, failing trace)
    let cases = [
        (
            json!({"rule": "regex", "pattern": "^Paris"}),
            trace_with("Paris.", json!({})),
            trace_with("Lyon.", json!({})),
        ),
        (
            json!({"rule": "not_regex", "pattern": "(?i)as an ai"}),
            trace_with("Paris.", json!({})),
            trace_with("As an AI, I think Paris.", json!({})),
        ),
        (
            json!({"rule": "contains", "value": "paris"}),
            trace_with("PARIS, of course", json!({})),
            trace_with("Lyon", json!({})),
        ),
        (
            json!({"rule": "not_contains", "values": ["lorem", "TODO"]}),
            trace_with("Paris.", json!({})),
            trace_with("todo: answer", json!({})),
        ),
        (
            json!({"rule": "equals", "value": "Paris."}),
            trace_with(" Paris. ", json!({})),
            trace_with("paris.", json!({})),
        ),
        (
            json!({"rule": "json_valid"}),
            trace_with("{\"city\": \"Paris\"}", json!({})),
            trace_with("{city: Paris}", json!({})),
        ),
        (
            json!({"rule": "json_schema", "schema": {"type": "object", "required": ["city"]}}),
            trace_with("{\"city\": \"Paris\"}", json!({})),
            trace_with("{\"town\": \"Paris\"}", json!({})),
        ),
        (
            json!({"rule": "latency_max_ms", "max": 5000}),
            trace_with("Paris.", json!({"latency_ms": 1200})),
            trace_with("Paris.", json!({"latency_ms": 9000})),
        ),
        (
            json!({"rule": "cost_max", "max": 0.01}),
            trace_with("Paris.", json!({"cost": 0.001})),
            trace_with("Paris.", json!({"cost": 0.5})),
        ),
        (
            json!({"rule": "tokens_max", "max": 100}),
            trace_with("Paris.", json!({})),
            trace_with(
                "Paris.",
                json!({"spans": [{"name": "big", "type": "llm", "prompt_tokens": 900,
                                  "completion_tokens": 100}]}),
            ),
        ),
        (
            json!({"rule": "length", "min": 2, "max": 50}),
            trace_with("Paris is the capital.", json!({})),
            trace_with("P", json!({})),
        ),
        (
            json!({"rule": "not_empty", "field": "input"}),
            trace_with("Paris.", json!({})),
            trace_with("Paris.", json!({"input": "   "})),
        ),
        (
            json!({"rule": "pii"}),
            trace_with("Paris.", json!({})),
            trace_with(
                "Write to jane.doe@example.com or call +1 415 555 0100",
                json!({}),
            ),
        ),
        (
            json!({"rule": "refusal"}),
            trace_with("Paris is the capital of France.", json!({})),
            trace_with("I'm sorry, but I can't help with that request.", json!({})),
        ),
    ];
    let mut queued = Vec::new();
    for (config, pass, fail) in &cases {
        for (trace, expect) in [(pass, "pass"), (fail, "fail")] {
            let trace_id = server.ingest(trace.clone()).await;
            let id = trigger(
                &server,
                json!({"trace_id": trace_id, "evaluator_type": "rule",
                       "metric_name": config["rule"], "config": config}),
            )
            .await;
            queued.push((id, trace_id, config.clone(), expect));
        }
    }
    for (id, trace_id, config, expect) in &queued {
        let eval = finished(&server, id).await;
        assert_eq!(eval["status"], "complete", "{config}: {eval}");
        assert_eq!(eval["label"], *expect, "{config}: {eval}");
        assert_eq!(eval["trace_id"], trace_id.as_str());
        assert_eq!(eval["evaluator_type"], "rule");
        assert_eq!(eval["context"], "fresh");
        let score = eval["score"].as_f64().expect("score");
        assert_eq!(score, if *expect == "pass" { 1.0 } else { 0.0 }, "{eval}");
        let reasoning = eval["reasoning"].as_str().expect("reasoning");
        assert!(!reasoning.is_empty(), "{eval}");
        assert!(eval["completed_at"].is_string());
        assert_eq!(eval["attempts"], 1);
    }
    // The PII failure says what it found; the trace shows its evaluation.
    let (pii_id, pii_trace, _, _) = &queued[25];
    let eval = server.get_json(&format!("/v1/eval/{pii_id}")).await;
    let reasoning = eval["reasoning"].as_str().expect("reasoning");
    assert!(reasoning.contains("email"), "{reasoning}");
    let trace = server.get_json(&format!("/v1/traces/{pii_trace}")).await;
    let evaluations = trace["evaluations"].as_array().expect("evaluations");
    assert_eq!(evaluations.len(), 1);
    assert_eq!(evaluations[0]["id"], pii_id.as_str());
    assert_eq!(evaluations[0]["label"], "fail");
}

#[tokio::test]
async fn presets_and_metric_names_pick_the_evaluator_without_a_config() {
    let server = TestServer::start().await;
    let leaky = server
        .ingest(trace_with("Card: 4111 1111 1111 1111", json!({})))
        .await;
    // The SDK sends no config: the metric name picks the preset.
    let by_metric = trigger(
        &server,
        json!({"trace_id": leaky, "evaluator_type": "rule", "metric_name": "pii_leakage"}),
    )
    .await;
    let by_preset = trigger(
        &server,
        json!({"trace_id": leaky, "evaluator_type": "llm", "metric_name": "leaks",
               "config": {"preset": "pii_leakage"}}),
    )
    .await;
    let kind = trigger(
        &server,
        json!({"trace_id": leaky, "evaluator_type": "rule", "metric_name": "not_empty"}),
    )
    .await;
    for (id, label) in [(by_metric, "fail"), (by_preset, "fail"), (kind, "pass")] {
        let eval = finished(&server, &id).await;
        assert_eq!(eval["status"], "complete", "{eval}");
        assert_eq!(eval["label"], label, "{eval}");
    }
}

#[tokio::test]
async fn llm_evaluations_fail_clearly_when_no_judge_is_configured() {
    let server = TestServer::start().await;
    let trace_id = server.ingest(sample_trace("judged")).await;
    let id = trigger(
        &server,
        json!({"trace_id": trace_id, "evaluator_type": "llm", "metric_name": "toxicity"}),
    )
    .await;
    let eval = finished(&server, &id).await;
    assert_eq!(eval["status"], "failed");
    assert_eq!(eval["score"], Value::Null);
    let reason = eval["reasoning"].as_str().expect("reason");
    assert!(reason.contains("no judge configured"), "{reason}");
    assert_eq!(eval["attempts"], 1, "no retries for a missing judge");
}

#[tokio::test]
async fn triggers_that_cannot_run_are_refused() {
    let server = TestServer::start().await;
    let trace_id = server.ingest(sample_trace("t")).await;
    // Unknown trace, non-UUID trace id, and another tenant's trace: 404.
    expect_error(
        server
            .post(
                "/v1/eval",
                &json!({"trace_id": uuid::Uuid::new_v4(), "evaluator_type": "rule",
                    "metric_name": "not_empty"}),
            )
            .await,
        404,
    )
    .await;
    expect_error(
        server
            .post(
                "/v1/eval",
                &json!({"trace_id": "nope", "evaluator_type": "rule", "metric_name": "not_empty"}),
            )
            .await,
        404,
    )
    .await;
    let other_key = "tl_other_evals_0123456789abcd";
    server.other_tenant(other_key).await;
    expect_error(
        server
            .post_as(
                other_key,
                "/v1/eval",
                &json!({"trace_id": trace_id, "evaluator_type": "rule",
                        "metric_name": "not_empty"}),
            )
            .await,
        404,
    )
    .await;
    // Nothing to run, or a config that cannot: 422 naming the field.
    for (body, needle) in [
        (
            json!({"trace_id": trace_id, "evaluator_type": "rule", "metric_name": "quality"}),
            "config.rule",
        ),
        (
            json!({"trace_id": trace_id, "evaluator_type": "llm", "metric_name": "quality"}),
            "config.prompt",
        ),
        (
            json!({"trace_id": trace_id, "evaluator_type": "llm", "metric_name": "q",
                   "config": {"preset": "made_up"}}),
            "config.preset",
        ),
        (
            json!({"trace_id": trace_id, "evaluator_type": "rule", "metric_name": "q",
                   "config": {"rule": "regex", "pattern": "(unclosed"}}),
            "pattern",
        ),
        (
            json!({"trace_id": trace_id, "evaluator_type": "heuristic", "metric_name": "q"}),
            "evaluator_type",
        ),
        (
            json!({"trace_id": trace_id, "evaluator_type": "rule", "metric_name": ""}),
            "metric_name",
        ),
        (
            json!({"trace_id": trace_id, "evaluator_type": "rule", "metric_name": "q",
                   "config": "not_empty"}),
            "config",
        ),
        (
            json!({"evaluator_type": "rule", "metric_name": "not_empty"}),
            "trace_id",
        ),
    ] {
        expect_error_naming(server.post("/v1/eval", &body).await, 422, &[needle]).await;
    }
    // Nothing was queued by the refusals.
    let list = server.get_json("/v1/eval").await;
    assert_eq!(list["evals"], json!([]));
    // An unknown evaluation, or another tenant's, is not found.
    expect_error(
        server
            .get(&format!("/v1/eval/{}", uuid::Uuid::new_v4()))
            .await,
        404,
    )
    .await;
    let mine = trigger(
        &server,
        json!({"trace_id": trace_id, "evaluator_type": "rule", "metric_name": "not_empty"}),
    )
    .await;
    expect_error(
        server.get_as(other_key, &format!("/v1/eval/{mine}")).await,
        404,
    )
    .await;
    let theirs = server.get_json_as(other_key, "/v1/eval").await;
    assert_eq!(theirs["evals"], json!([]));
}

#[tokio::test]
async fn the_list_filters_and_validates_its_parameters() {
    let server = TestServer::start().await;
    let good = server.ingest(trace_with("Paris.", json!({}))).await;
    let bad = server.ingest(trace_with("", json!({}))).await;
    let mut ids = Vec::new();
    for trace_id in [&good, &bad] {
        for metric in ["not_empty", "json_valid"] {
            ids.push(
                trigger(
                    &server,
                    json!({"trace_id": trace_id, "evaluator_type": "rule", "metric_name": metric}),
                )
                .await,
            );
        }
    }
    for id in &ids {
        finished(&server, id).await;
    }
    let count = |body: &Value| body["evals"].as_array().expect("evals").len();
    let all = server.get_json("/v1/eval").await;
    assert_eq!(count(&all), 4);
    // Newest first.
    assert_eq!(all["evals"][0]["id"], ids[3].as_str());
    let of_good = server.get_json(&format!("/v1/eval?trace_id={good}")).await;
    assert_eq!(count(&of_good), 2);
    assert!(of_good["evals"]
        .as_array()
        .expect("evals")
        .iter()
        .all(|e| e["trace_id"] == good.as_str()));
    let metric = server.get_json("/v1/eval?metric=not_empty").await;
    assert_eq!(count(&metric), 2);
    // "Paris." passes not_empty and fails json_valid; "" fails both.
    let passing = server.get_json("/v1/eval?score_min=0.9").await;
    assert_eq!(count(&passing), 1);
    assert_eq!(passing["evals"][0]["metric_name"], "not_empty");
    assert_eq!(passing["evals"][0]["trace_id"], good.as_str());
    let failing = server
        .get_json("/v1/eval?score_max=0.1&metric=not_empty")
        .await;
    assert_eq!(count(&failing), 1);
    let limited = server.get_json("/v1/eval?limit=3").await;
    assert_eq!(count(&limited), 3);
    let project = server.get_json("/v1/eval?project_id=default").await;
    assert_eq!(count(&project), 4);
    let future = server.get_json("/v1/eval?from=2099-01-01T00:00:00Z").await;
    assert_eq!(count(&future), 0);
    for (query, needle) in [
        ("metric=", "metric"),
        ("score_min=1.5", "score_min"),
        ("score_min=0.8&score_max=0.2", "score_max"),
        ("from=yesterday", "from"),
        ("from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z", "to"),
        ("limit=0", "limit"),
        ("trace_id=abc", "trace_id"),
    ] {
        expect_error_naming(
            server.get(&format!("/v1/eval?{query}")).await,
            400,
            &[needle],
        )
        .await;
    }
    expect_error(server.get("/v1/eval?project_id=nope").await, 404).await;
}

#[tokio::test]
async fn the_catalog_is_public_and_lists_the_fifteen_presets() {
    let server = TestServer::start().await;
    let resp = server
        .client
        .get(server.url("/v1/eval-catalog"))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers().get("cache-control").is_some());
    let body: Value = resp.json().await.expect("JSON");
    let names: Vec<&str> = body["evaluators"]
        .as_array()
        .expect("evaluators")
        .iter()
        .map(|e| e["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        [
            "faithfulness",
            "answer_relevance",
            "groundedness",
            "retrieval_precision",
            "retrieval_recall",
            "citation_correctness",
            "refusal_appropriateness",
            "toxicity",
            "pii_leakage",
            "hallucination",
            "jailbreak",
            "prompt_injection",
            "factual_accuracy",
            "function_call_correctness",
            "json_schema_conformance",
        ]
    );
    for entry in body["evaluators"].as_array().expect("evaluators") {
        for field in ["description", "example_input", "example_output"] {
            assert!(
                entry[field].as_str().is_some_and(|s| !s.is_empty()),
                "{field}: {entry}"
            );
        }
        assert!(["low", "medium", "high"].contains(&entry["cost_tier"].as_str().expect("tier")));
        let tags = entry["tags"].as_array().expect("tags");
        assert!(!tags.is_empty());
        for tag in tags {
            assert!(["quality", "safety", "retrieval", "tool-use"]
                .contains(&tag.as_str().expect("tag")));
        }
    }
}

#[tokio::test]
async fn summaries_trend_spread_compare_export_and_agree_with_people() {
    let server = TestServer::start().await;
    // Three good answers, two empty ones; people agree on four of them.
    let mut traces = Vec::new();
    for output in ["Paris.", "Berlin.", "Rome.", "", ""] {
        let id = server.ingest(trace_with(output, json!({}))).await;
        let eval = trigger(
            &server,
            json!({"trace_id": id, "evaluator_type": "rule", "metric_name": "answered",
                   "config": {"rule": "not_empty"}}),
        )
        .await;
        finished(&server, &eval).await;
        traces.push(id);
    }
    for (trace, label) in [
        (&traces[0], "good"),
        (&traces[1], "good"),
        (&traces[2], "bad"),
        (&traces[3], "bad"),
        (&traces[4], "neutral"),
    ] {
        let resp = server
            .post("/v1/feedback", &json!({"trace_id": trace, "label": label}))
            .await;
        assert_eq!(resp.status().as_u16(), 201);
    }
    // The trace list shows each trace's feedback counts and mean scores.
    let list = server.get_json("/v1/traces?limit=10").await;
    let row = |id: &str| {
        list["traces"]
            .as_array()
            .expect("traces")
            .iter()
            .find(|t| t["id"] == id)
            .cloned()
            .expect("listed")
    };
    assert_eq!(row(&traces[0])["eval_scores"], json!({"answered": 1.0}));
    assert_eq!(row(&traces[0])["feedback_summary"], json!({"good": 1}));
    assert_eq!(row(&traces[3])["eval_scores"], json!({"answered": 0.0}));
    let bare = server.ingest(sample_trace("unrated")).await;
    let list = server.get_json("/v1/traces?limit=10").await;
    let unrated = list["traces"]
        .as_array()
        .expect("traces")
        .iter()
        .find(|t| t["id"] == bare.as_str())
        .cloned()
        .expect("listed");
    assert!(unrated.get("eval_scores").is_none() && unrated.get("feedback_summary").is_none());

    let trends = server
        .get_json("/v1/eval/trends?project_id=default&metric=answered&bucket=1d")
        .await;
    let buckets = trends["buckets"].as_array().expect("buckets");
    assert_eq!(buckets.len(), 1, "{trends}");
    assert_eq!(buckets[0]["metric"], "answered");
    assert_eq!(buckets[0]["count"], 5);
    assert!((buckets[0]["avg_score"].as_f64().expect("avg") - 0.6).abs() < 1e-9);
    assert!((buckets[0]["pass_rate"].as_f64().expect("rate") - 0.6).abs() < 1e-9);
    assert!(buckets[0]["time"]
        .as_str()
        .expect("time")
        .ends_with("T00:00:00.000000Z"));

    let histogram = server
        .get_json("/v1/eval/histogram?project_id=default&metric=answered&buckets=4")
        .await;
    let counts: Vec<u64> = histogram["buckets"]
        .as_array()
        .expect("buckets")
        .iter()
        .map(|b| b["count"].as_u64().expect("count"))
        .collect();
    assert_eq!(counts, [2, 0, 0, 3], "{histogram}");
    assert_eq!(histogram["buckets"][3]["range_end"], 1.0);
    assert_eq!(histogram["buckets"][1]["range_start"], 0.25);

    let compare = server
        .get_json(
            "/v1/eval/compare?project_id=default&metric=answered\
             &baseline_from=2020-01-01T00:00:00Z&baseline_to=2020-02-01T00:00:00Z\
             &candidate_from=2020-01-01T00:00:00Z&candidate_to=2099-01-01T00:00:00Z",
        )
        .await;
    assert_eq!(compare["baseline"]["count"], 0);
    assert_eq!(compare["candidate"]["count"], 5);
    assert!((compare["delta"]["avg_score"].as_f64().expect("delta") - 0.6).abs() < 1e-9);
    assert!((compare["delta"]["pass_rate"].as_f64().expect("delta") - 0.6).abs() < 1e-9);

    let agreement = server.get_json("/v1/eval/agreement?metric=answered").await;
    assert_eq!(agreement["traces"], 5);
    assert_eq!(agreement["compared"], 4);
    assert_eq!(agreement["neutral"], 1);
    // Agree on Paris, Berlin (good/pass) and the empty one (bad/fail);
    // Rome passed but people said bad.
    assert_eq!(agreement["agreement_rate"], 0.75);
    assert_eq!(agreement["confusion"]["eval_pass_human_bad"], 1);
    assert!(agreement["pearson"].as_f64().expect("pearson") > 0.3);
    assert!(agreement["cohen_kappa"].is_number());

    let csv = server
        .get("/v1/eval/export?format=csv&include_reasoning=true")
        .await;
    assert_eq!(csv.status().as_u16(), 200);
    assert!(csv
        .headers()
        .get("content-disposition")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|d| d.contains("evals-") && d.ends_with(".csv\"")));
    let text = csv.text().await.expect("csv");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "id,trace_id,metric,score,label,evaluator_type,model_tier,created_at,reasoning"
    );
    assert_eq!(lines.len(), 6, "{text}");
    let jsonl = server
        .get(&format!(
            "/v1/eval/export?format=jsonl&trace_id={}",
            traces[0]
        ))
        .await
        .text()
        .await
        .expect("jsonl");
    let rows: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["metric"], "answered");
    assert_eq!(rows[0]["score"], 1.0);
    assert!(rows[0].get("reasoning").is_none());

    for (path, needle) in [
        ("/v1/eval/trends?metric=answered", "project_id"),
        ("/v1/eval/trends?project_id=default&bucket=2h", "bucket"),
        ("/v1/eval/histogram?project_id=default", "metric"),
        (
            "/v1/eval/histogram?project_id=default&metric=a&buckets=101",
            "buckets",
        ),
        (
            "/v1/eval/compare?project_id=default&metric=a",
            "baseline_from",
        ),
        ("/v1/eval/agreement", "metric"),
        ("/v1/eval/export?format=xml", "format"),
    ] {
        expect_error_naming(server.get(path).await, 400, &[needle]).await;
    }
}

/// A Starter organisation with small eval caps.
const STARTER: &str = "plan = \"starter\"\n\
    [plans.starter]\n\
    evals_per_month = 2\n\
    max_eval_rules = 3\n";

#[tokio::test]
async fn plans_cap_evaluations_per_month_and_rules() {
    let server = TestServer::start_with(STARTER).await;
    // Recent traces: Starter keeps traces for 30 days.
    let recent = |name: &str| {
        let mut trace = sample_trace(name);
        let now = chrono::Utc::now();
        trace["started_at"] = json!(now.to_rfc3339());
        trace["ended_at"] = json!(now.to_rfc3339());
        trace["spans"] = json!([]);
        trace
    };
    let trace_id = server.ingest(recent("capped")).await;
    let body = json!({"trace_id": trace_id, "evaluator_type": "rule", "metric_name": "not_empty"});
    trigger(&server, body.clone()).await;
    trigger(&server, body.clone()).await;
    let refused = expect_error(server.post("/v1/eval", &body).await, 402).await;
    assert_eq!(refused["code"], "eval_quota_exceeded");
    assert!(refused["error"].as_str().expect("text").contains("2"));

    for i in 0..3 {
        let resp = server
            .post(
                "/v1/eval-rules",
                &json!({"project_id": "default", "metric_name": format!("m{i}"),
                        "evaluator_type": "rule", "config": {"rule": "not_empty"}}),
            )
            .await;
        assert_eq!(resp.status().as_u16(), 201);
    }
    let refused = expect_error(
        server
            .post(
                "/v1/eval-rules",
                &json!({"project_id": "default", "metric_name": "m4",
                        "evaluator_type": "rule", "config": {"rule": "not_empty"}}),
            )
            .await,
        402,
    )
    .await;
    assert_eq!(refused["code"], "eval_rules_quota_exceeded");
    // The cap held across a restart, and rules did not go over it either:
    // new traces queue nothing once the month's evaluations are used up.
    let server = server.restart().await;
    expect_error(server.post("/v1/eval", &body).await, 402).await;
    server.ingest(recent("after the cap")).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let list = server.get_json("/v1/eval?limit=100").await;
    assert_eq!(list["evals"].as_array().expect("evals").len(), 2);
}

#[tokio::test]
async fn eval_rules_have_the_reference_shapes_and_are_checked() {
    let server = TestServer::start().await;
    let resp = server
        .post(
            "/v1/eval-rules",
            &json!({"project_id": "default", "metric_name": "answered",
                    "evaluator_type": "rule",
                    "config": {"rule": "not_empty", "sample_rate": 0.5,
                               "filter": {"name": "chat*"}}}),
        )
        .await;
    assert_eq!(resp.status().as_u16(), 201);
    let rule: Value = resp.json().await.expect("JSON");
    for field in [
        "id",
        "tenant_id",
        "project_id",
        "metric_name",
        "evaluator_type",
        "enabled",
        "model_tier",
        "created_at",
        "updated_at",
    ] {
        assert!(!rule[field].is_null(), "{field}: {rule}");
    }
    assert_eq!(rule["enabled"], true);
    assert_eq!(rule["model_tier"], "cheap");
    assert_eq!(rule["config"]["sample_rate"], 0.5);
    let id = rule["id"].as_str().expect("id");

    let list = server.get_json("/v1/eval-rules").await;
    assert_eq!(list["items"].as_array().expect("items").len(), 1);
    let list = server.get_json("/v1/eval-rules?project_id=default").await;
    assert_eq!(list["items"][0]["id"], id);

    let patch = |body: Value| {
        server
            .client
            .patch(server.url(&format!("/v1/eval-rules/{id}")))
            .bearer_auth(&server.key)
            .json(&body)
            .send()
    };
    let resp = patch(json!({"enabled": false, "model_tier": "premium"}))
        .await
        .expect("sent");
    assert_eq!(resp.status().as_u16(), 200);
    let updated: Value = resp.json().await.expect("JSON");
    assert_eq!(updated["enabled"], false);
    assert_eq!(updated["model_tier"], "premium");
    assert_eq!(updated["config"], rule["config"], "config kept");
    // A change that would leave the rule unable to run is refused.
    expect_error_naming(
        patch(json!({"config": {"rule": "regex"}}))
            .await
            .expect("sent"),
        400,
        &["pattern"],
    )
    .await;
    expect_error_naming(
        patch(json!({"config": {"rule": "not_empty", "sample_rate": 2}}))
            .await
            .expect("sent"),
        400,
        &["sample_rate"],
    )
    .await;
    for (body, needle) in [
        (
            json!({"project_id": "default", "metric_name": "x", "evaluator_type": "rule"}),
            "config.rule",
        ),
        (
            json!({"project_id": "default", "metric_name": "x", "evaluator_type": "rule",
                   "config": {"rule": "not_empty", "filter": {"colour": "red"}}}),
            "config.filter.colour",
        ),
        (
            json!({"project_id": "default", "metric_name": "x", "evaluator_type": "rule",
                   "config": {"rule": "not_empty"}, "model_tier": "gold"}),
            "model_tier",
        ),
    ] {
        expect_error_naming(server.post("/v1/eval-rules", &body).await, 400, &[needle]).await;
    }
    expect_error(
        server
            .post(
                "/v1/eval-rules",
                &json!({"project_id": "elsewhere", "metric_name": "x",
                        "evaluator_type": "rule", "config": {"rule": "not_empty"}}),
            )
            .await,
        404,
    )
    .await;
    let delete = |id: String| {
        server
            .client
            .delete(server.url(&format!("/v1/eval-rules/{id}")))
            .bearer_auth(&server.key)
            .send()
    };
    assert_eq!(
        delete(id.to_owned()).await.expect("sent").status().as_u16(),
        204
    );
    expect_error(delete(id.to_owned()).await.expect("sent"), 404).await;
    expect_error(patch(json!({"enabled": true})).await.expect("sent"), 404).await;
    let list = server.get_json("/v1/eval-rules").await;
    assert_eq!(list["items"], json!([]));
}

#[tokio::test]
async fn rules_evaluate_new_matching_traces_sampled() {
    let server = TestServer::start().await;
    // Traces stored before the rule are not evaluated by it.
    let before = server
        .ingest(trace_with("old", json!({"name": "chat"})))
        .await;
    let everything = server
        .post(
            "/v1/eval-rules",
            &json!({"project_id": "default", "metric_name": "answered",
                                   "evaluator_type": "rule",
                                   "config": {"rule": "not_empty"}}),
        )
        .await;
    assert_eq!(everything.status().as_u16(), 201);
    let sampled = server
        .post(
            "/v1/eval-rules",
            &json!({"project_id": "default", "metric_name": "sampled",
                                "evaluator_type": "rule",
                                "config": {"rule": "not_empty", "sample_rate": 0.5,
                                           "filter": {"name": "chat*", "tags": {"env": "prod"}}}}),
        )
        .await;
    assert_eq!(sampled.status().as_u16(), 201);
    let disabled = server
        .post(
            "/v1/eval-rules",
            &json!({"project_id": "default", "metric_name": "off",
                                 "evaluator_type": "rule", "enabled": false,
                                 "config": {"rule": "not_empty"}}),
        )
        .await;
    assert_eq!(disabled.status().as_u16(), 201);

    let mut batch = Vec::new();
    let mut prod_chat = 0;
    for i in 0..200 {
        let mut trace = sample_trace(if i % 2 == 0 { "chat.reply" } else { "search" });
        trace["tags"] = json!({"env": if i % 4 == 0 { "prod" } else { "dev" }});
        if i % 2 == 0 && i % 4 == 0 {
            prod_chat += 1;
        }
        batch.push(trace);
    }
    for chunk in batch.chunks(100) {
        let resp = server
            .post("/v1/ingest/batch", &json!({"traces": chunk}))
            .await;
        assert!(resp.status().is_success(), "{}", resp.status());
    }
    // Wait for every evaluation of the "answered" rule to finish.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let evals = loop {
        let list = server.get_json("/v1/eval?limit=1000").await;
        let evals = list["evals"].as_array().expect("evals").clone();
        let answered = evals
            .iter()
            .filter(|e| e["metric_name"] == "answered" && e["status"] == "complete")
            .count();
        if answered == 200 {
            break evals;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {answered} of 200 auto-evaluations finished"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(evals.iter().all(|e| e["trace_id"] != before.as_str()));
    assert!(evals.iter().all(|e| e["metric_name"] != "off"));
    assert!(evals.iter().all(|e| e["rule_id"].is_string()));
    let sampled: Vec<&Value> = evals
        .iter()
        .filter(|e| e["metric_name"] == "sampled")
        .collect();
    // 50 prod chat traces, about half sampled.
    assert_eq!(prod_chat, 50);
    assert!(
        (12..=38).contains(&sampled.len()),
        "{} of 50 sampled at 0.5",
        sampled.len()
    );
    for eval in &sampled {
        let trace = server
            .get_json(&format!(
                "/v1/traces/{}",
                eval["trace_id"].as_str().expect("id")
            ))
            .await;
        assert_eq!(trace["name"], "chat.reply");
        assert_eq!(trace["tag_map"]["env"], "prod");
    }
    // A restart does not evaluate the same traces again.
    let server = server.restart().await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let list = server.get_json("/v1/eval?limit=1000").await;
    assert_eq!(list["evals"].as_array().expect("evals").len(), evals.len());
}

#[tokio::test]
async fn rules_that_need_the_judge_are_queued_for_it() {
    let server = TestServer::start().await;
    let resp = server
        .post(
            "/v1/eval-rules",
            &json!({"project_id": "default", "metric_name": "toxicity",
                    "evaluator_type": "llm", "config": {"preset": "toxicity"}}),
        )
        .await;
    assert_eq!(resp.status().as_u16(), 201);
    let rule: Value = resp.json().await.expect("JSON");
    let trace_id = server.ingest(sample_trace("judged by a rule")).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let eval = loop {
        let list = server
            .get_json(&format!("/v1/eval?trace_id={trace_id}"))
            .await;
        if let Some(eval) = list["evals"]
            .as_array()
            .and_then(|e| e.first())
            .filter(|e| e["status"] == "failed")
        {
            break eval.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "{list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // It went through the queue to the (missing) judge.
    assert_eq!(eval["rule_id"], rule["id"]);
    assert_eq!(eval["evaluator_type"], "llm");
    assert_eq!(eval["attempts"], 1);
    assert!(eval["reasoning"]
        .as_str()
        .is_some_and(|r| r.contains("no judge configured")));
}

/// The names of a documented schema's properties.
pub fn documented_fields(doc: &Value, schema: &str) -> Vec<String> {
    let mut fields: Vec<String> = doc["components"]["schemas"][schema]["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("schema {schema} has no properties"))
        .keys()
        .cloned()
        .collect();
    fields.sort();
    fields
}

/// The names of a body's fields.
pub fn fields_of(body: &Value) -> Vec<String> {
    let mut fields: Vec<String> = body
        .as_object()
        .unwrap_or_else(|| panic!("{body} is not an object"))
        .keys()
        .cloned()
        .collect();
    fields.sort();
    fields
}

/// The documented operation `method path`.
pub fn operation<'a>(doc: &'a Value, method: &str, path: &str) -> &'a Value {
    let op = &doc["paths"][path][method];
    assert!(op.is_object(), "{method} {path} is not documented");
    op
}

/// The schema a response's JSON body refers to.
fn response_schema(op: &Value, status: &str) -> String {
    op["responses"][status]["content"]["application/json"]["schema"]["$ref"]
        .as_str()
        .and_then(|r| r.strip_prefix("#/components/schemas/"))
        .unwrap_or_else(|| panic!("{status} has no schema: {op}"))
        .to_owned()
}

#[tokio::test]
async fn the_evaluation_routes_answer_what_the_document_says() {
    let server = TestServer::start().await;
    let doc = server.get_json("/v1/openapi.json").await;
    let trace = server.ingest(sample_trace("documented")).await;

    // Each body has exactly the fields its documented schema names.
    let trigger = operation(&doc, "post", "/v1/eval");
    let queued = server
        .post(
            "/v1/eval",
            &json!({"trace_id": trace, "evaluator_type": "rule", "metric_name": "not_empty"}),
        )
        .await;
    assert_eq!(queued.status().as_u16(), 202);
    let queued: Value = queued.json().await.expect("JSON");
    assert_eq!(
        fields_of(&queued),
        documented_fields(&doc, &response_schema(trigger, "202"))
    );
    let eval = finished(&server, queued["eval_id"].as_str().expect("id")).await;
    let detail = operation(&doc, "get", "/v1/eval/{id}");
    assert_eq!(
        fields_of(&eval),
        documented_fields(&doc, &response_schema(detail, "200"))
    );
    let list = server.get_json("/v1/eval?metric=not_empty").await;
    assert_eq!(
        fields_of(&list),
        documented_fields(
            &doc,
            &response_schema(operation(&doc, "get", "/v1/eval"), "200")
        )
    );
    for (path, query) in [
        ("/v1/eval/trends", "project_id=default"),
        ("/v1/eval/histogram", "project_id=default&metric=not_empty"),
        (
            "/v1/eval/compare",
            "project_id=default&metric=not_empty&baseline_from=2020-01-01T00:00:00Z\
             &baseline_to=2020-02-01T00:00:00Z&candidate_from=2020-01-01T00:00:00Z\
             &candidate_to=2099-01-01T00:00:00Z",
        ),
        ("/v1/eval/agreement", "metric=not_empty"),
    ] {
        let body = server.get_json(&format!("{path}?{query}")).await;
        let schema = response_schema(operation(&doc, "get", path), "200");
        assert_eq!(fields_of(&body), documented_fields(&doc, &schema), "{path}");
    }
    let rule = server
        .post(
            "/v1/eval-rules",
            &json!({"project_id": "default", "metric_name": "documented",
                    "evaluator_type": "rule", "config": {"rule": "not_empty"}}),
        )
        .await;
    assert_eq!(rule.status().as_u16(), 201);
    let rule: Value = rule.json().await.expect("JSON");
    let create = operation(&doc, "post", "/v1/eval-rules");
    assert_eq!(
        fields_of(&rule),
        documented_fields(&doc, &response_schema(create, "201"))
    );
    let catalog = server.get_json("/v1/eval-catalog").await;
    let listed = response_schema(operation(&doc, "get", "/v1/eval-catalog"), "200");
    assert_eq!(fields_of(&catalog), documented_fields(&doc, &listed));
    assert_eq!(
        fields_of(&catalog["evaluators"][0]),
        documented_fields(&doc, "EvalCatalogEntry")
    );

    // The plan's caps are documented where they refuse.
    for (op, code) in [
        (trigger, "eval_quota_exceeded"),
        (create, "eval_rules_quota_exceeded"),
    ] {
        let text = op["responses"]["402"]["description"].as_str().expect("402");
        assert!(text.contains(code), "{text}");
    }
    assert!(trigger["responses"]["202"].is_object());
    assert!(operation(&doc, "delete", "/v1/eval-rules/{id}")["responses"]["204"].is_object());

    // Parameters: required ones say so, bounds are stated.
    let params = |method: &str, path: &str| -> Vec<(String, bool)> {
        operation(&doc, method, path)["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().expect("name").to_owned(),
                    p["required"].as_bool().unwrap_or(false),
                )
            })
            .collect()
    };
    let histogram = params("get", "/v1/eval/histogram");
    for required in ["project_id", "metric"] {
        assert!(
            histogram.contains(&(required.into(), true)),
            "{histogram:?}"
        );
    }
    assert!(histogram.contains(&("buckets".into(), false)));
    let compare = params("get", "/v1/eval/compare");
    for name in [
        "baseline_from",
        "baseline_to",
        "candidate_from",
        "candidate_to",
    ] {
        assert!(compare.contains(&(name.into(), true)), "{compare:?}");
    }
    let listed = params("get", "/v1/eval");
    for name in [
        "trace_id",
        "metric",
        "score_min",
        "score_max",
        "from",
        "to",
        "project_id",
        "limit",
    ] {
        assert!(listed.contains(&(name.into(), false)), "{name}: {listed:?}");
    }
    let limit = operation(&doc, "get", "/v1/eval")["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .find(|p| p["name"] == "limit")
        .expect("limit");
    assert_eq!(limit["schema"]["maximum"], 1000);

    // Every schema these routes refer to is in the document.
    let text = serde_json::to_string(&doc["paths"]).expect("paths");
    for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().expect("name");
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "{name} is referred to but not defined"
        );
    }
}

#[tokio::test]
async fn evaluation_parameters_that_do_not_fit_are_named() {
    let server = TestServer::start().await;
    for (path, needle) in [
        (
            "/v1/eval/compare?project_id=default&metric=a&baseline_from=yesterday",
            "baseline_from",
        ),
        (
            "/v1/eval/compare?project_id=default&metric=a&baseline_from=2020-02-01T00:00:00Z\
             &baseline_to=2020-01-01T00:00:00Z&candidate_from=2020-01-01T00:00:00Z\
             &candidate_to=2020-02-01T00:00:00Z",
            "baseline_to",
        ),
        (
            "/v1/eval/export?include_reasoning=maybe",
            "include_reasoning",
        ),
        ("/v1/eval/export?score_max=2", "score_max"),
        ("/v1/eval/histogram?project_id=default&metric=", "metric"),
        ("/v1/eval/trends?project_id=default&metric=", "metric"),
        (
            "/v1/eval/trends?project_id=default&from=2099-01-01T00:00:00Z",
            "to",
        ),
        ("/v1/eval/agreement?metric=a&to=soon", "to"),
        ("/v1/eval/histogram?metric=a", "project_id"),
    ] {
        expect_error_naming(server.get(path).await, 400, &[needle]).await;
    }
    for path in [
        "/v1/eval-rules?project_id=nope",
        "/v1/eval/trends?project_id=nope",
        "/v1/eval/agreement?metric=a&project_id=nope",
        "/v1/eval/export?project_id=nope",
    ] {
        expect_error(server.get(path).await, 404).await;
    }
    // An empty value of another parameter filters nothing.
    let all = server.get_json("/v1/eval?trace_id=&limit=").await;
    assert!(all["evals"].is_array());
}
