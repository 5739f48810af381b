//! The real Python SDK (`trulayer` 0.1.5 from PyPI) against a real server.
//! The test installs the SDK into a virtual environment under the target
//! directory on first use.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use common::TestServer;

const SDK: &str = "trulayer==0.1.5";

/// The Python of a virtual environment with the SDK installed.
fn sdk_python() -> PathBuf {
    common::python::venv("sdk-venv-trulayer-0.1.5", &[SDK]).join("bin/python")
}

#[tokio::test]
async fn the_python_sdk_round_trips_traces_and_latches_on_a_bad_key() {
    let python = tokio::task::spawn_blocking(sdk_python).await.expect("venv");
    let server = TestServer::start().await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/send_traces.py");
    let (url, key) = (server.url.clone(), server.key.clone());
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .args([&url, &key, "default", "tl_wrong_key_000000000000000000"])
            .output()
            .expect("script runs")
    })
    .await
    .expect("script task");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "SDK script failed: {stderr}");
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("SDK script output is not JSON ({e}): {stderr}"));
    let id = |name: &str| report["ids"][name].as_str().expect("id").to_string();

    // The traced RAG call, every field as the SDK set it.
    let rag = server.get_json(&format!("/v1/traces/{}", id("rag"))).await;
    assert_eq!(rag["name"], "rag-query");
    assert_eq!(rag["session_id"], "session-42");
    assert_eq!(rag["external_id"], "req-0001");
    assert_eq!(rag["tags"], json!(["rag", "prod"]));
    assert_eq!(
        rag["metadata"],
        json!({"user_id": "u-7", "attempt": 2, "flags": {"beta": true}})
    );
    assert_eq!(rag["input"], "What is the capital of France?");
    assert_eq!(rag["output"], "Paris.");
    assert_eq!(rag["model"], "gpt-4o-mini");
    assert_eq!(rag["error"], Value::Null);
    assert_eq!(rag["total_token_count"], 45);
    assert_eq!(rag["span_count"], 2);
    assert!(rag["latency_ms"].is_i64());
    assert!(rag["ended_at"].as_str() >= rag["started_at"].as_str());
    let spans = rag["spans"].as_array().expect("spans");
    assert_eq!(spans.len(), 2);
    assert_eq!(
        spans[0]["name"], "vector-search",
        "spans ordered by start time"
    );
    assert_eq!(spans[0]["type"], "retrieval");
    assert_eq!(spans[0]["input"], "capital of France");
    assert_eq!(spans[0]["output"], "[\"Paris is the capital of France.\"]");
    assert_eq!(spans[0]["metadata"], json!({"index": "geo", "k": 3}));
    let llm = &spans[1];
    assert_eq!(llm["name"], "openai.chat");
    assert_eq!(llm["type"], "llm");
    assert_eq!(llm["model"], "gpt-4o-mini");
    assert_eq!(llm["prompt_tokens"], 42);
    assert_eq!(llm["completion_tokens"], 3);
    assert_eq!(llm["cost"], 0.000123);
    assert_eq!(llm["input"], "Answer: What is the capital of France?");
    assert_eq!(llm["output"], "Paris.");
    for span in spans {
        assert_eq!(span["trace_id"], id("rag").as_str());
        assert!(span["start_time"].is_string() && span["end_time"].is_string());
        assert!(span["latency_ms"].is_i64());
    }

    // Key → value tags from tag_map and set_tag.
    let tagged = server
        .get_json(&format!("/v1/traces/{}", id("tagged")))
        .await;
    assert_eq!(
        tagged["tag_map"],
        json!({"env": "staging", "team": "search", "release": "2026.11"})
    );
    let found = server
        .list_all("tag_key=release&tag_value=2026.11", 50)
        .await;
    assert_eq!(found, [id("tagged")]);

    // The exception: the span and the trace both carry the traceback.
    let failing = server
        .get_json(&format!("/v1/traces/{}", id("failing")))
        .await;
    let trace_error = failing["error"].as_str().expect("trace error");
    assert!(
        trace_error.contains("ZeroDivisionError: division by zero"),
        "{trace_error}"
    );
    let span_error = failing["spans"][0]["error"].as_str().expect("span error");
    assert!(span_error.contains("ZeroDivisionError"), "{span_error}");
    assert_eq!(server.list_all("error=true", 50).await, [id("failing")]);
    let session = server.list_all("session_id=session-42", 50).await;
    assert_eq!(session, [id("failing"), id("rag")]);

    // `client.eval` got the queued evaluations' ids, which run to the end:
    // the rule preset on the RAG answer, and the LLM preset, which fails
    // plainly as no judge is configured. A trace never stored gives None.
    assert_eq!(report["evals"]["unknown"], Value::Null, "{report}");
    for (name, status, label) in [("pii", "complete", Some("pass")), ("judge", "failed", None)] {
        let eval_id = report["evals"][name]
            .as_str()
            .unwrap_or_else(|| panic!("client.eval gave no id for {name}: {report}"));
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        let eval = loop {
            let eval = server.get_json(&format!("/v1/eval/{eval_id}")).await;
            if eval["status"] == "complete" || eval["status"] == "failed" {
                break eval;
            }
            assert!(tokio::time::Instant::now() < deadline, "{eval}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        assert_eq!(eval["status"], status, "{eval}");
        assert_eq!(eval["label"].as_str(), label, "{eval}");
    }
    let rag_evals = server
        .get_json(&format!("/v1/eval?trace_id={}", id("rag")))
        .await;
    assert_eq!(rag_evals["evals"][0]["metric_name"], "pii_leakage");

    // The client with the wrong key disabled itself and stored nothing.
    assert_eq!(report["bad_disabled"], true, "{report}");
    assert_eq!(report["bad_error"], "InvalidAPIKeyError", "{report}");
    assert_eq!(
        server
            .get(&format!("/v1/traces/{}", id("rejected")))
            .await
            .status(),
        404
    );
    assert_eq!(server.list_all("", 50).await.len(), 3);
    server.stop().await;
}

/// The SDK drains its whole queue into one batch when it flushes and drops
/// the batch if the server refuses it: a burst of traces created in a tight
/// loop must all be stored.
#[tokio::test]
async fn a_burst_of_five_thousand_traces_through_the_sdk_is_stored_whole() {
    const BURST: usize = 5_000;
    let python = tokio::task::spawn_blocking(sdk_python).await.expect("venv");
    let server = TestServer::start().await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/burst.py");
    let (url, key) = (server.url.clone(), server.key.clone());
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .args([&url, &key, "default", &BURST.to_string()])
            .output()
            .expect("script runs")
    })
    .await
    .expect("script task");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "SDK script failed: {stderr}");
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("SDK script output is not JSON ({e}): {stderr}"));
    assert_eq!(report["warnings"], json!([]), "the SDK dropped something");
    let mut sent: Vec<String> = report["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|id| id.as_str().expect("id").to_owned())
        .collect();
    assert_eq!(sent.len(), BURST);
    let mut stored = server.list_all("", 200).await;
    sent.sort();
    stored.sort();
    assert_eq!(stored.len(), BURST, "traces stored of the {BURST} sent");
    assert_eq!(stored, sent);
    // Each is whole: its input with the repeated system prompt, and its span.
    let last = server
        .get_json(&format!(
            "/v1/traces/{}",
            report["ids"][BURST - 1].as_str().expect("id")
        ))
        .await;
    assert!(last["input"]
        .as_str()
        .is_some_and(|i| i.ends_with(&format!("Where is my order {}?", BURST - 1))));
    assert_eq!(last["span_count"], 1);
    assert_eq!(last["total_token_count"], 192);
    server.stop().await;
}
