//! The admin page in a real browser: Debian's Chromium, driven by
//! playwright-core from `tests/ui/e2e.mjs`, goes through every page of the
//! UI against a real server, and through the API reference at `/docs`
//! (`tests/ui/docs.mjs`). `tests/ui/setup.sh` installs both on first use
//! (Chromium with apt-get, playwright-core pinned by `tests/ui/package-lock.json`
//! under the target directory). The server's judge endpoint is a loopback
//! one that answers slowly, so a dataset run that names a judge model is
//! seen running and can be cancelled; nothing leaves the machine.
//! Screenshots of every page are left in `target/tmp/ui-screenshots/`.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use common::TestServer;

const EMAIL: &str = "owner@example.com";
/// The judge model a version names, as the judge endpoint is configured.
const JUDGE_MODEL: &str = "ui-e2e-judge";
/// What the judge says of every answer.
const JUDGE_REASONING: &str = "Answers what was asked, in one sentence.";
/// How long the judge takes per answer: long enough for a run to be seen
/// running, and cancelled, in the page.
const JUDGE_DELAY: Duration = Duration::from_secs(2);

/// Every page the script photographs.
const SCREENSHOTS: &[&str] = &[
    "login",
    "projects",
    "overview",
    "traces",
    "traces-saved-filter",
    "trace-detail",
    "trace-detail-xss",
    "evals",
    "datasets",
    "dataset",
    "run",
    "run-diff",
    "run-gate",
    "run-judged",
    "keys",
    "sessions",
    "failures",
    "users",
    "audit",
    "overview-dark",
    "overview-narrow",
    "traces-narrow",
    "failures-narrow",
    "keys-narrow",
    "datasets-narrow",
    "dataset-narrow",
    "run-narrow",
    "run-dark",
    "docs",
    "docs-operation",
    "docs-dark",
    "docs-narrow",
];

/// The directory holding playwright-core, installed once (with Chromium,
/// when the machine lacks it) by `tests/ui/setup.sh`.
fn install_browser() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-node");
    let setup = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui/setup.sh");
    let output = Command::new("sh")
        .arg(setup)
        .arg(&dir)
        .output()
        .expect("sh runs");
    assert!(
        output.status.success(),
        "tests/ui/setup.sh failed (it installs chromium with apt-get and playwright-core with npm):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    dir
}

/// A judge endpoint on a loopback port speaking the OpenAI chat API: a
/// good verdict for every answer, after `JUDGE_DELAY`.
async fn slow_judge() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the judge");
    let address = listener.local_addr().expect("judge address");
    let verdict = json!({"score": 0.9, "label": "pass", "reasoning": JUDGE_REASONING}).to_string();
    let app = axum::Router::new().fallback(move || {
        let verdict = verdict.clone();
        async move {
            tokio::time::sleep(JUDGE_DELAY).await;
            axum::Json(json!({
                "id": "chatcmpl-ui",
                "object": "chat.completion",
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": verdict},
                    "finish_reason": "stop"
                }]
            }))
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

/// Where the screenshots go, emptied first so none is left from a past run.
fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("emptying {}: {e}", dir.display()),
    }
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    dir
}

fn text<'a>(facts: &'a Value, name: &str) -> &'a str {
    facts[name]
        .as_str()
        .unwrap_or_else(|| panic!("fact {name} is not text: {facts}"))
}

#[tokio::test]
async fn an_operator_goes_through_every_page_of_the_admin_ui() {
    let node_dir = tokio::task::spawn_blocking(install_browser)
        .await
        .expect("setup task");
    // One item of a run at a time, each judged slowly: a judged run is seen
    // going, and a cancelled one leaves an item not run.
    let judge = slow_judge().await;
    let server = TestServer::start_with(&format!(
        "[alerts]\ninterval_ms = 200\n\
         [eval]\nrun_concurrency = 1\n\
         [eval.judge]\nprovider = \"openai\"\nbase_url = \"http://{judge}/v1\"\nmodel = {JUDGE_MODEL:?}\n\
         [encryption]\nkey = \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"\n"
    ))
    .await;
    let shots = screenshot_dir();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui/e2e.mjs");
    let (url, out) = (server.url.clone(), shots.clone());
    // Blocking in a task of its own: the server runs on this test's runtime.
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .arg(url)
            .arg(node_dir)
            .arg(out)
            .args([EMAIL, common::PASSWORD, JUDGE_MODEL])
            .output()
            .expect("node runs")
    })
    .await
    .expect("browser task");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "the browser script printed no report ({e}), exit {}:\n{stderr}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout)
        )
    });
    let pretty = serde_json::to_string_pretty(&report).expect("report prints");
    std::fs::write(shots.join("report.json"), &pretty).expect("write the report");
    assert!(
        report["error"].is_null(),
        "the browser run failed; screenshots in {}\n{pretty}\n{stderr}",
        shots.display()
    );
    assert!(output.status.success(), "exit {}: {stderr}", output.status);
    for list in [
        "dialogs",
        "page_errors",
        "console_errors",
        "foreign_requests",
        "failed_requests",
        "unexpected_responses",
    ] {
        assert_eq!(
            report[list].as_array().map(Vec::len),
            Some(0),
            "{list} must stay empty: {}",
            report[list]
        );
    }

    let facts = &report["facts"];
    let names = &report["names"];
    let id = |name: &str| report["ids"][name].as_str().expect("trace id").to_owned();
    let (rag, xss, failing) = (id("rag"), id("xss"), id("failing"));
    let sorted = |mut ids: Vec<String>| {
        ids.sort();
        json!(ids)
    };

    // Logging in: the wrong password is named, the right one lets in.
    assert!(text(facts, "index_content_type").starts_with("text/html"));
    assert!(!text(facts, "login_error").is_empty(), "{facts}");
    assert_eq!(facts["nav_after_wrong_password"], 0);
    assert!(text(facts, "whoami").contains(EMAIL), "{facts}");
    let nav: Vec<&str> = facts["nav_links"]
        .as_array()
        .expect("nav links")
        .iter()
        .filter_map(|link| link[0].as_str())
        .collect();
    for page in [
        "overview",
        "ingestion",
        "traces",
        "sessions",
        "failures",
        "evals",
        "datasets",
        "projects",
        "keys",
        "users",
        "audit",
        "webhooks",
        "eval-keys",
        "privacy",
        "alerts",
    ] {
        assert!(nav.contains(&format!("nav-{page}").as_str()), "{nav:?}");
    }

    // The key made in the UI ingested into the project made in the UI.
    assert_eq!(facts["secret_prefix"], "tl_");
    if facts["copy_button"] != 0 {
        assert_eq!(facts["clipboard_holds_key"], true, "{facts}");
    }
    assert_eq!(
        facts["traces_listed_with_key"],
        sorted(vec![rag.clone(), xss.clone(), failing.clone()])
    );
    let projects = server.get_json("/v1/projects").await;
    let project = projects["projects"]
        .as_array()
        .expect("projects")
        .iter()
        .find(|p| p["name"] == names["project"])
        .unwrap_or_else(|| panic!("no project {} in {projects}", names["project"]));
    assert_eq!(facts["project_of_ingested"], json!([project["id"]]));

    // The spare project went to the archive and came back.
    assert_eq!(facts["spare_buttons_archived"], 0, "{facts}");
    assert_eq!(facts["spare_buttons_unarchived"], 0, "{facts}");
    let all = server.get_json("/v1/projects?include_archived=true").await;
    let spare = all["projects"]
        .as_array()
        .expect("projects")
        .iter()
        .find(|p| p["name"] == names["spare"])
        .unwrap_or_else(|| panic!("no project {} in {all}", names["spare"]));
    assert_eq!(spare["archived"], false, "{spare}");

    // Overview, list, search, filters and the live tail.
    assert!(text(facts, "card_traces").contains('3'), "{facts}");
    assert!(text(facts, "models_table").contains("gpt-4o-mini"));
    assert_eq!(facts["trace_rows"], 3);
    assert_eq!(facts["xss_img_in_list"], 0);
    assert_eq!(facts["error_filter_rows"], json!([failing]));
    assert_eq!(facts["search_rows"], json!([rag]));
    assert_eq!(facts["live_stream_status"], 200);
    assert_eq!(facts["live_row_first"], true, "{facts}");
    assert_eq!(facts["feedback_filter_rows"], json!([rag]));
    assert_eq!(
        facts["model_filter_rows"],
        sorted(vec![rag.clone(), xss.clone()])
    );
    assert!(text(facts, "failing_error").contains("ZeroDivisionError"));
    assert_eq!(facts["failing_span_rows"], 1);

    // The detail: the span tree, feedback, an evaluation.
    assert_eq!(facts["trace_name"], "ui-e2e-rag");
    assert!(text(facts, "trace_input").contains(text(names, "word")));
    assert!(text(facts, "trace_tags").contains("rag"), "{facts}");
    assert_eq!(facts["span_rows"], 2);
    assert_eq!(facts["span_bars"], 2);
    for width in facts["span_bar_widths"].as_array().expect("widths") {
        assert!(width.as_i64() > Some(0), "a span bar has no width: {facts}");
    }
    assert!(text(facts, "span_detail").contains("openai.chat"));
    assert!(text(facts, "feedback_item").contains(text(names, "feedback")));
    assert!(text(facts, "eval_item").contains("not_empty"));
    let detail = server.get_json(&format!("/v1/traces/{rag}")).await;
    let feedback = &detail["feedback"][0];
    assert_eq!(feedback["label"], "good", "{detail}");
    assert_eq!(feedback["comment"], names["feedback"], "{detail}");
    let evaluation = &detail["evaluations"][0];
    assert_eq!(evaluation["metric_name"], "not_empty", "{detail}");
    assert_eq!(evaluation["status"], "complete", "{detail}");
    assert_eq!(evaluation["label"], "pass", "{detail}");

    // Hostile text stays text.
    assert!(text(facts, "xss_input").contains("<img src=x onerror=alert(1)>"));
    assert!(text(facts, "xss_metadata").contains("<script>alert(2)</script>"));
    assert!(text(facts, "xss_output").contains("<b>not bold</b>"));
    assert_eq!(facts["xss_img"], 0);
    assert_eq!(facts["xss_script"], 0);
    assert_eq!(facts["xss_svg_onload"], 0);
    assert_eq!(facts["xss_bold"], 0);

    // The API reference: linked from the admin page, served under its
    // policy, and its console sends what the reader typed, nothing else.
    let admin_page = server.get("/").await;
    let csp = admin_page
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .expect("the admin page's policy");
    assert_eq!(facts["docs_path"], "/docs");
    assert!(text(facts, "docs_content_type").starts_with("text/html"));
    assert_eq!(text(facts, "docs_csp"), csp);
    assert!(facts["docs_operations"].as_u64() > Some(20), "{facts}");
    assert!(facts["docs_groups"].as_u64() > Some(1), "{facts}");
    assert_eq!(facts["docs_slash_focuses_filter"], true);
    let filtered = facts["docs_filtered"].as_array().expect("filtered");
    assert!(
        filtered.len() < facts["docs_operations"].as_u64().unwrap_or(0) as usize,
        "{facts}"
    );
    for listed in filtered {
        let listed = listed.as_str().unwrap_or_default();
        assert!(listed.starts_with("get /v1/traces"), "{listed}");
    }
    assert!(text(facts, "docs_op_title").starts_with("GET"), "{facts}");
    assert!(text(facts, "docs_op_title").ends_with("/v1/traces"));
    assert!(!text(facts, "docs_op_access").is_empty());
    assert!(
        facts["docs_op_statuses"].to_string().contains("\"200\""),
        "{facts}"
    );
    assert_eq!(facts["docs_session_cookie_present"], true);
    assert!(text(facts, "docs_status_without_token").starts_with("401"));
    assert!(text(facts, "docs_status_with_key").starts_with("200"));
    for id in [&rag, &xss, &failing] {
        assert!(text(facts, "docs_response").contains(id.as_str()), "{id}");
    }
    assert!(text(facts, "docs_response").contains("<img src=x onerror=alert(1)>"));
    assert_eq!(facts["docs_response_markup"], 0);
    assert!(text(facts, "docs_response_headers").contains("x-request-id"));
    assert!(text(facts, "docs_curl").contains("Bearer $TRULAYER_API_KEY"));
    assert!(text(facts, "docs_curl").contains("/v1/traces"));
    assert_eq!(facts["docs_curl_shows_key"], false);
    assert_eq!(facts["docs_token_kept"], true);
    assert!(text(facts, "docs_detail_status").starts_with("200"));
    assert!(text(facts, "docs_detail_response").contains("ui-e2e-rag"));
    assert!(text(facts, "docs_detail_curl").contains(rag.as_str()));
    for (place, kept) in facts["docs_key_kept_in"].as_object().expect("places") {
        assert_eq!(kept, false, "the key is kept in {place}");
    }
    assert_eq!(facts["docs_token_after_reload"], "");
    assert_ne!(
        facts["docs_background_dark"],
        facts["docs_background_light"]
    );
    assert!(facts["docs_narrow_overflow"]
        .as_i64()
        .is_some_and(|o| o <= 0));

    // The evaluation rule made in the UI, switched off in the UI.
    assert_eq!(facts["rule_enabled_before"], true);
    assert_eq!(facts["rule_enabled_after"], false);
    let rules = server
        .get_json(&format!(
            "/v1/eval-rules?project_id={}",
            project["id"].as_str().expect("id")
        ))
        .await;
    let rule = rules["items"]
        .as_array()
        .expect("rules")
        .iter()
        .find(|r| r["metric_name"] == names["rule"])
        .unwrap_or_else(|| panic!("no rule {} in {rules}", names["rule"]));
    assert_eq!(rule["enabled"], false, "{rule}");
    assert_eq!(rule["evaluator_type"], "rule", "{rule}");

    // A dataset made in the UI; a second one deleted only once confirmed.
    let dataset_id = id("dataset");
    assert!(text(facts, "dataset_row").contains(text(names, "dataset")));
    assert!(text(facts, "dataset_delete_question").contains(text(names, "spareDataset")));
    assert_eq!(facts["spare_dataset_after_cancel"], 1, "{facts}");
    assert_eq!(facts["spare_dataset_after_delete"], 0, "{facts}");
    let datasets = server.get_json("/v1/datasets").await;
    let listed: Vec<&str> = datasets["datasets"]
        .as_array()
        .expect("datasets")
        .iter()
        .filter_map(|d| d["name"].as_str())
        .collect();
    assert!(listed.contains(&text(names, "dataset")), "{datasets}");
    assert!(!listed.contains(&text(names, "spareDataset")), "{datasets}");

    // Traces added from their pages: once each, with the label chosen.
    assert_eq!(facts["add_rag"]["result"], "added", "{facts}");
    assert!(text(&facts["add_rag"], "text").contains(text(names, "dataset")));
    assert_eq!(facts["add_rag_again"]["result"], "existing", "{facts}");
    assert!(text(&facts["add_rag_again"], "text").starts_with("Already in"));
    assert_eq!(facts["add_failing"]["result"], "added", "{facts}");
    assert!(text(&facts["add_failing"], "text").contains("labelled fail"));
    assert_eq!(facts["add_xss"]["result"], "added", "{facts}");
    assert_eq!(facts["dataset_xss_img"], 0, "the XSS input stays text");

    // Labelled by keyboard, filtered by label, exported, one item removed.
    assert_eq!(
        facts["labels_before"],
        json!({"rag": "unlabeled", "failing": "fail"})
    );
    assert!(facts["tabs_to_pass"].as_u64() > Some(0), "{facts}");
    assert_eq!(facts["rag_label_after"], "pass");
    assert_eq!(facts["label_filter_rows"]["pass"], json!([rag]));
    assert_eq!(facts["label_filter_rows"]["fail"], json!([failing]));
    assert_eq!(facts["label_filter_rows"]["unlabeled"], json!([xss]));
    let csv = text(facts, "export_csv");
    assert!(
        text(facts, "export_csv_href").contains("format=csv")
            && text(facts, "export_csv_href").contains("label=pass"),
        "{facts}"
    );
    assert!(csv.starts_with("id,trace_id,span_id,label,"), "{csv}");
    assert_eq!(
        csv.lines().count(),
        2,
        "the header and the pass item: {csv}"
    );
    assert!(
        csv.contains(rag.as_str()) && csv.contains(",pass,"),
        "{csv}"
    );
    let jsonl: Vec<Value> = text(facts, "export_jsonl")
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    assert_eq!(jsonl.len(), 3, "{jsonl:?}");
    assert!(jsonl
        .iter()
        .any(|row| row["trace_id"] == xss && row["input"] == "<img src=x onerror=alert(1)>"));
    assert_eq!(facts["dataset_item_count"], "2");
    let items = server
        .get_json(&format!("/v1/datasets/{dataset_id}/items"))
        .await;
    let labels: std::collections::BTreeMap<&str, &Value> = items["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| (i["trace_id"].as_str().unwrap_or_default(), &i["label"]))
        .collect();
    assert_eq!(labels.len(), 2, "{items}");
    assert_eq!(labels.get(rag.as_str()), Some(&&json!("pass")), "{items}");
    assert_eq!(
        labels.get(failing.as_str()),
        Some(&&json!("fail")),
        "{items}"
    );

    // With nothing to score it, a run is refused with the way out.
    assert!(
        text(facts, "run_refused").contains("nothing would score this run"),
        "{facts}"
    );
    assert_eq!(facts["run_refused_link"], "#/evals");
    assert_eq!(facts["runs_after_refusal"], 0);

    // Two runs, each followed to its end in the page.
    let (run1, run2) = (id("run1"), id("run2"));
    for run in ["first_run", "second_run"] {
        assert_eq!(facts[run]["done"], "2", "{facts}");
        assert_eq!(facts[run]["total"], "2", "{facts}");
        assert!(text(&facts[run], "row").contains("completed"), "{facts}");
    }
    let runs = server
        .get_json(&format!("/v1/datasets/{dataset_id}/runs"))
        .await;
    let mean = |run: &str| {
        runs["runs"]
            .as_array()
            .expect("runs")
            .iter()
            .find(|r| r["id"] == run)
            .unwrap_or_else(|| panic!("no run {run} in {runs}"))["mean_score"]
            .as_f64()
    };
    assert_eq!(mean(&run1), Some(0.5), "{runs}");
    assert_eq!(mean(&run2), Some(0.25), "{runs}");

    // The run page: its mean, and each item's answer, score and reasoning.
    assert_eq!(facts["run1_status"], "completed");
    assert!(text(facts, "run1_title").contains(text(names, "firstVersion")));
    assert_eq!(facts["run1_mean"], "0.50");
    let results = facts["run1_results"].as_array().expect("results");
    let result = |trace: &str| {
        results
            .iter()
            .find(|r| r["trace_id"] == trace)
            .unwrap_or_else(|| panic!("no result for {trace}: {facts}"))
    };
    let passed = result(&rag);
    assert!(text(passed, "score").contains("1.00"), "{passed}");
    assert!(text(passed, "output").contains("Rottnest"), "{passed}");
    assert_eq!(passed["label"], "pass", "{passed}");
    assert_eq!(passed["metrics"], json!([names["runRule"]]), "{passed}");
    assert!(!passed["reasoning"][0]
        .as_str()
        .unwrap_or_default()
        .is_empty());
    let failed = result(&failing);
    assert!(text(failed, "score").contains("0.00"), "{failed}");
    assert_eq!(failed["label"], "fail", "{failed}");
    assert!(
        failed["reasoning"][0]
            .as_str()
            .unwrap_or_default()
            .contains("empty"),
        "{failed}"
    );

    // The comparison: the regression first, with both rationales.
    assert_eq!(facts["run2_mean"], "0.25");
    let diff = facts["diff_rows"].as_array().expect("diff rows");
    assert_eq!(diff.len(), 2, "{facts}");
    assert_eq!(diff[0]["change"], "regressed", "{facts}");
    assert_eq!(diff[0]["trace_id"], json!(rag), "{facts}");
    assert_eq!(diff[1]["change"], "unchanged", "{facts}");
    let cells = diff[0]["cells"].to_string();
    assert!(cells.contains("1.00") && cells.contains("0.50"), "{cells}");
    assert!(cells.contains(text(names, "jsonRule")), "{cells}");
    assert!(text(facts, "diff_regressed").ends_with('1'), "{facts}");
    assert!(text(facts, "diff_unchanged").ends_with('1'), "{facts}");
    assert!(text(facts, "diff_summary").contains("0.25"), "{facts}");
    assert!(
        text(facts, "diff_hash").ends_with(&format!("?baseline={run1}")),
        "{facts}"
    );

    // The gate: blocked by the regression, warned below a floor, passed
    // above it; its link opens the run's page.
    assert_eq!(facts["gate_baseline"], json!(run1), "{facts}");
    let gate = |name: &str, decision: &str, reason: &str| {
        let shown = &facts[name];
        assert_eq!(shown["decision"], decision, "{shown}");
        assert_eq!(text(shown, "badge").to_lowercase(), decision, "{shown}");
        assert!(text(shown, "reason").contains(reason), "{shown}");
    };
    gate("gate_block", "block", "fell by 0.250");
    gate("gate_warn", "warn", "below the floor 0.900");
    gate("gate_pass", "pass", "meets the floor 0.200");
    assert_eq!(
        facts["gate_block"]["run_url"],
        format!("{}/#/runs/{run2}", server.url)
    );
    assert_eq!(facts["gate_link_run"], json!(run2));
    assert_eq!(facts["gate_link_hash"], format!("#/runs/{run2}"));
    // A run judged slowly is seen going, then done, without a reload; the
    // judge's score and reasoning show beside the rules'.
    assert!(text(facts, "judged_version_row").contains(JUDGE_MODEL));
    let seen: Vec<&str> = facts["judged_run"]["seen"]
        .as_array()
        .expect("statuses seen")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        seen.first()
            .is_some_and(|s| s.starts_with("pending") || s.starts_with("running")),
        "{seen:?}"
    );
    assert_eq!(seen.last(), Some(&"completed 2/2"), "{seen:?}");
    let judged = facts["judged_results"].as_array().expect("score lines");
    let correctness: Vec<&Value> = judged
        .iter()
        .filter(|line| line["metric"] == "correctness")
        .collect();
    assert_eq!(correctness.len(), 2, "{judged:?}");
    for line in correctness {
        let shown = text(line, "text");
        assert!(
            shown.contains(JUDGE_REASONING) && shown.contains(JUDGE_MODEL),
            "{shown}"
        );
    }
    let judged_run = server
        .get_json(&format!("/v1/eval-runs/{}", id("run3")))
        .await;
    assert_eq!(judged_run["status"], "completed", "{judged_run}");

    // Cancelled from the list, after asking: its waiting item is not run.
    assert!(text(facts, "cancel_question").contains(text(names, "judgedVersion")));
    assert!(
        text(facts, "cancelled_row").contains("cancelled"),
        "{facts}"
    );
    assert_eq!(facts["cancel_buttons_after"], 0);
    let cancelled = server
        .get_json(&format!("/v1/eval-runs/{}", id("cancelled")))
        .await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert!(
        cancelled["completed_count"].as_i64() < cancelled["item_count"].as_i64(),
        "{cancelled}"
    );

    // Webhooks: one made in the UI answered its test ping (the server's
    // /health refuses a POST with 405); a second deleted only once
    // confirmed; the runs that finished since were delivered to it, each
    // attempt recorded with the endpoint's answer.
    assert!(
        text(facts, "webhook_row").contains("eval_run.completed"),
        "{facts}"
    );
    assert!(
        text(facts, "webhook_test_answer").starts_with("HTTP 405"),
        "{facts}"
    );
    assert!(
        text(facts, "webhook_delete_question").contains("/health?spare"),
        "{facts}"
    );
    assert_eq!(facts["spare_webhook_after_cancel"], 1, "{facts}");
    assert_eq!(facts["spare_webhook_after_delete"], 0, "{facts}");
    // Ingestion health counts the ingest the walk-through made.
    let shown = text(facts, "health_requests");
    let accepted: i64 = shown
        .split(" accepted")
        .next()
        .and_then(|head| head.split_whitespace().last())
        .map(|n| n.replace(',', ""))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(accepted > 0, "{facts}");
    let health = server.get_json("/v1/ingestion-health").await;
    assert!(
        health["requests"]["accepted"].as_i64().unwrap_or(0) >= accepted,
        "{health}"
    );
    assert!(!text(facts, "health_traces").starts_with('0'), "{facts}");
    assert!(text(facts, "health_lag").contains("p50"), "{facts}");
    // A judge key is shown by its last four characters only, and revoked after asking.
    assert_eq!(text(facts, "eval_key_hint"), "…7Q2x", "{facts}");
    assert_eq!(facts["eval_key_input_after"], "", "{facts}");
    assert_eq!(facts["eval_key_secret_on_page"], false, "{facts}");
    assert!(
        text(facts, "eval_key_revoke_question").contains("configured key"),
        "{facts}"
    );
    assert!(
        text(facts, "eval_key_row_after_revoke").contains("not set"),
        "{facts}"
    );
    assert_eq!(
        server.get_json("/v1/settings/eval-keys").await,
        serde_json::json!({"items": []})
    );
    let hooks = server.get_json("/v1/webhooks").await;
    assert_eq!(
        hooks["webhooks"].as_array().map(Vec::len),
        Some(1),
        "{hooks}"
    );
    assert_eq!(hooks["webhooks"][0]["id"], id("webhook").as_str());
    let shown = facts["webhook_deliveries"]
        .as_array()
        .expect("delivery rows");
    assert!(shown.len() >= 3, "{shown:?}");
    assert!(
        shown.iter().all(|row| row
            .as_str()
            .is_some_and(|r| r.contains("eval_run.completed") && r.contains("HTTP 405"))),
        "{shown:?}"
    );

    // Privacy requests: an export downloaded through the page, an erasure
    // confirmed before it is made, and its trace gone.
    assert_eq!(facts["dsr_download_status"], 200, "{facts}");
    assert_eq!(
        facts["dsr_download_traces"],
        json!([id("subject_keep")]),
        "{facts}"
    );
    assert!(
        text(facts, "dsr_download_subject").starts_with("ui-e2e-subject-keep-"),
        "{facts}"
    );
    assert!(
        text(facts, "dsr_export_counts").contains("1 trace"),
        "{facts}"
    );
    assert!(
        text(facts, "dsr_delete_question").contains("cannot be undone"),
        "{facts}"
    );
    assert_eq!(facts["dsr_rows_after_cancel"], 0, "{facts}");
    assert!(
        text(facts, "dsr_erase_counts").contains("1 trace"),
        "{facts}"
    );
    assert_eq!(facts["dsr_erase_downloads"], 0, "{facts}");
    assert_eq!(facts["dsr_gone_trace_status"], 404, "{facts}");
    assert_eq!(facts["dsr_kept_trace_status"], 200, "{facts}");
    // Alerts: a rule made in the UI fired (its state and its open
    // anomaly shown), was turned off from the list, which ended the
    // episode; a second was deleted only once confirmed.
    assert_eq!(facts["alert_rule_firing"], "firing", "{facts}");
    assert!(
        text(facts, "alert_rule_row").contains("volume < 1000000 over 604800 s"),
        "{facts}"
    );
    let open = facts["alert_anomaly_open"]
        .as_array()
        .expect("anomaly rows");
    assert!(
        open.iter().any(|r| r
            .as_str()
            .is_some_and(|r| r.contains("volume_anomaly") && r.contains("open"))),
        "{open:?}"
    );
    assert_eq!(facts["alert_rule_state_after_off"], "ok", "{facts}");
    assert!(
        text(facts, "alert_delete_question").contains("spare alert"),
        "{facts}"
    );
    assert_eq!(facts["spare_alert_rule_after_cancel"], 1, "{facts}");
    assert_eq!(facts["spare_alert_rule_after_delete"], 0, "{facts}");
    let rules = server.get_json("/v1/failure-rules").await;
    assert_eq!(rules["items"].as_array().map(Vec::len), Some(1), "{rules}");
    assert_eq!(rules["items"][0]["id"], id("alertRule").as_str());
    assert_eq!(rules["items"][0]["enabled"], false);
    let anomalies = server.get_json("/v1/anomalies?source=rule").await;
    assert_eq!(
        anomalies["anomalies"][0]["metadata"]["recovery"]["reason"], "rule_disabled",
        "{anomalies}"
    );

    assert_ne!(facts["run_dark_panel"], facts["run_light_panel"], "{facts}");
    assert_eq!(facts["run_dark_compare"], json!(run1));

    // Rotation replaces the secret; revocation ends the key.
    assert_eq!(facts["old_key_after_rotate"], 401);
    assert_eq!(facts["new_key_after_rotate"], 200);
    assert_eq!(facts["rotated_key_after_revoke"], 401);
    assert!(text(facts, "key_status").to_lowercase().contains("revoked"));
    let token = server.session_token().await;
    let keys = server.get_json_as(&token, "/v1/apikeys").await;
    let key = keys
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["name"] == names["key"])
        .unwrap_or_else(|| panic!("no key {} in {keys}", names["key"]));
    assert!(key["revoked_at"].is_string(), "{key}");
    assert_eq!(key["project_id"], project["id"], "{key}");

    // The other pages.
    assert!(text(facts, "sessions_table").contains(text(names, "session")));
    assert!(text(facts, "session_hash").ends_with(text(names, "session")));
    assert_eq!(facts["session_trace_rows"], sorted(vec![rag.clone(), xss]));
    // Failures: the failing trace's message makes one cluster, its sample
    // links to the trace, and the cluster's link lists the failing traces.
    assert_eq!(
        facts["failure_rows"],
        json!([["ZeroDivisionError: division by zero", "1"]]),
        "{facts}"
    );
    assert_eq!(
        facts["failure_samples"],
        json!([format!("#/traces/{failing}")])
    );
    assert_eq!(facts["failure_list_rows"], json!([failing]), "{facts}");
    assert_eq!(facts["failure_list_status"], "true");
    assert!(
        text(facts, "failure_list_extra").contains("from="),
        "{facts}"
    );
    assert_eq!(facts["timeout_rows"], 0);
    assert!(text(facts, "users_table").contains(EMAIL));
    // Key counts: the viewer made none; the owner one that is not revoked.
    assert_eq!(facts["counted_key_status"], 201, "{facts}");
    assert_eq!(facts["new_user_key_count"], "0", "{facts}");
    assert_eq!(facts["owner_key_count"], "1", "{facts}");
    // The only owner's attempt to leave is refused, saying why.
    assert!(text(facts, "leave_error").contains("only owner"), "{facts}");
    assert!(
        facts["users_after_refused_leave"].as_i64() >= Some(2),
        "{facts}"
    );
    // Saved filters: saved from the controls, listed, applied, deleted.
    let saved_name = text(names, "savedFilter");
    assert!(
        facts["saved_filter_options"]
            .as_array()
            .is_some_and(|o| o.iter().any(|l| l == saved_name)),
        "{facts}"
    );
    assert!(
        text(facts, "saved_filter_intro").contains("error=true"),
        "{facts}"
    );
    let stored = &facts["saved_filter_api"]["items"];
    assert!(
        stored.as_array().is_some_and(|items| items
            .iter()
            .any(|f| f["name"] == saved_name && f["filters"] == json!({"error": "true"}))),
        "{stored}"
    );
    assert_eq!(facts["saved_filter_rows"], json!([failing.clone()]));
    assert_eq!(facts["saved_filter_error_control"], "true");
    assert!(
        facts["saved_filter_options_after"]
            .as_array()
            .is_some_and(|o| !o.iter().any(|l| l == saved_name)),
        "{facts}"
    );
    assert!(text(facts, "new_user_row").contains(text(names, "user")));
    // A wrong current password is refused in the dialog, nothing changed.
    assert!(
        text(facts, "password_error").contains("not right"),
        "{facts}"
    );
    // Nothing is wider than a narrow window (tables scroll in their box).
    let narrow = facts["narrow_overflow"].as_object().expect("narrow");
    assert!(narrow.contains_key("failures"), "{facts}");
    for (page, overflow) in narrow {
        assert!(
            overflow.as_i64().is_some_and(|o| o <= 0),
            "{page} overflows: {overflow}"
        );
    }
    // The password reset from the users page took: old refused, new accepted.
    assert_eq!(facts["reset_old_login"], 401, "{facts}");
    assert_eq!(facts["reset_new_login"], 200, "{facts}");
    let users = server.get_json_as(&token, "/v1/users").await;
    assert!(users.to_string().contains(text(names, "user")), "{users}");
    let audit = text(facts, "audit_table");
    for action in [
        "project.archive",
        "project.unarchive",
        "apikey.rotate",
        "apikey.revoke",
    ] {
        assert!(
            audit.contains(action),
            "{action} not in the audit page: {audit}"
        );
    }
    assert!(text(facts, "audit_verify").contains("Intact"), "{facts}");
    assert_ne!(
        facts["theme_after"]["background"], facts["theme_before"]["background"],
        "{facts}"
    );
    assert_eq!(
        facts["theme_after_reload"], facts["theme_after"],
        "the theme is kept"
    );

    // Logging out ends the session, in the page and for the cookie.
    assert!(
        text(facts, "hash_after_logout").contains("login"),
        "{facts}"
    );
    assert_eq!(facts["nav_after_reload"], 0);
    assert_eq!(facts["me_before_logout"], 200);
    assert_eq!(facts["me_after_logout"], 401);
    assert_eq!(facts["traces_with_old_cookie"], 401);
    assert_eq!(facts["traces_table_logged_out"], 0);
    assert_eq!(facts["trace_rows_logged_out"], 0);

    for name in SCREENSHOTS {
        let file = shots.join(format!("{name}.png"));
        let bytes =
            std::fs::read(&file).unwrap_or_else(|e| panic!("screenshot {}: {e}", file.display()));
        assert!(
            bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 2_000,
            "{} is no screenshot",
            file.display()
        );
    }
    eprintln!("screenshots of every page: {}", shots.display());
    server.stop().await;
}
