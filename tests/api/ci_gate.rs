//! The CI recipe, `docs/ci-gate.sh`, run as a CI job runs it: `sh` with
//! curl and jq against a real server, judged by its exit status and what it
//! prints. The datasets are scored by an evaluation rule of their project,
//! so no model endpoint is needed.

use std::process::{Command, Output};

use serde_json::{json, Value};

use crate::common::{sample_trace, TestServer};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/ci-gate.sh");
/// Every variable the script reads: none is taken from the test's own
/// environment.
const SETTINGS: [&str; 11] = [
    "TRULAYER_URL",
    "TRULAYER_API_KEY",
    "DATASET_ID",
    "VERSION_ID",
    "BASELINE_RUN_ID",
    "SCORE_FLOOR",
    "DELTA_TOLERANCE",
    "ON_FAIL",
    "TIMEOUT",
    "POLL_INTERVAL",
    "CURL_OPTS",
];

/// A dataset of one trace per output, and a version of it; their ids.
async fn dataset(
    server: &TestServer,
    name: &str,
    outputs: &[&str],
    judge_model: Option<&str>,
) -> (String, String) {
    let resp = server.post("/v1/datasets", &json!({"name": name})).await;
    assert_eq!(resp.status().as_u16(), 201, "create the dataset");
    let dataset: Value = resp.json().await.expect("JSON");
    let id = dataset["id"].as_str().expect("id").to_owned();
    for output in outputs {
        let mut trace = sample_trace("answered");
        trace["output"] = json!(output);
        let trace_id = server.ingest(trace).await;
        let resp = server
            .post(
                &format!("/v1/datasets/{id}/items"),
                &json!({"trace_id": trace_id}),
            )
            .await;
        assert_eq!(resp.status().as_u16(), 201, "add an item");
    }
    let resp = server
        .post(
            &format!("/v1/datasets/{id}/versions"),
            &json!({"name": "v1", "judge_model": judge_model}),
        )
        .await;
    assert_eq!(resp.status().as_u16(), 201, "create the version");
    let version: Value = resp.json().await.expect("JSON");
    (id, version["id"].as_str().expect("id").to_owned())
}

/// Runs the script against `server` for a dataset and version, with more
/// settings; waits for it to exit.
/// Installs curl and jq from Debian's packages when the machine lacks
/// them, once: what a CI job does before it runs the script.
fn tools() {
    static TOOLS: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    TOOLS.get_or_init(|| {
        let script = "command -v curl >/dev/null && command -v jq >/dev/null && exit 0; \
            export DEBIAN_FRONTEND=noninteractive; \
            install='apt-get install -y --no-install-recommends curl jq'; \
            $install >&2 || { apt-get update >&2 && $install >&2; }";
        let status = Command::new("sh")
            .args(["-c", script])
            .status()
            .expect("sh runs");
        assert!(status.success(), "curl and jq could not be installed");
    });
}

async fn gate(
    server: &TestServer,
    (dataset, version): &(String, String),
    settings: &[(&str, &str)],
) -> Output {
    tools();
    let mut command = Command::new("sh");
    command.arg(SCRIPT);
    for name in SETTINGS {
        command.env_remove(name);
    }
    command
        .env("TRULAYER_URL", &server.url)
        .env("TRULAYER_API_KEY", &server.key)
        .env("DATASET_ID", dataset)
        .env("VERSION_ID", version)
        .env("POLL_INTERVAL", "0.1")
        .envs(settings.iter().copied());
    tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("the script's thread")
        .expect("sh runs the script")
}

/// The value of a `name: value` line the script printed.
fn printed(output: &Output, name: &str) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} in: {}", describe(output)))
        .to_owned()
}

/// A number the script printed (jq writes 1.0 as `1` or `1.0` by version).
fn number(output: &Output, name: &str) -> f64 {
    let text = printed(output, name);
    text.parse()
        .unwrap_or_else(|_| panic!("{name}: {text:?} is not a number: {}", describe(output)))
}

fn describe(output: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test]
async fn the_ci_recipe_passes_a_good_run_blocks_a_bad_one_and_compares_with_a_baseline() {
    let server = TestServer::start().await;
    let resp = server
        .post(
            "/v1/eval-rules",
            &json!({"project_id": "default", "metric_name": "names_paris",
                    "evaluator_type": "rule",
                    "config": {"rule": "contains", "value": "Paris"}}),
        )
        .await;
    assert_eq!(resp.status().as_u16(), 201, "create the rule");
    let rule: Value = resp.json().await.expect("JSON");
    let rule_id = rule["id"].as_str().expect("rule id").to_owned();
    let good = dataset(
        &server,
        "good answers",
        &["Paris.", "Paris, on the Seine.", "It is Paris."],
        None,
    )
    .await;
    let bad = dataset(
        &server,
        "bad answers",
        &["Lyon.", "Marseille.", "Paris."],
        None,
    )
    .await;

    // A run that meets the floor passes.
    let out = gate(&server, &good, &[("SCORE_FLOOR", "0.7")]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(printed(&out, "decision"), "pass");
    assert_eq!(number(&out, "mean_score"), 1.0);
    assert!(
        printed(&out, "reason").contains("meets the floor 0.700"),
        "{}",
        describe(&out)
    );
    let baseline = printed(&out, "run_id");
    assert_eq!(
        printed(&out, "run_url"),
        format!("{}/#/runs/{baseline}", server.url)
    );
    let run = server.get_json(&format!("/v1/eval-runs/{baseline}")).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["completed_count"], 3, "{run}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("completed, 3 of 3 items done, 0 failed"),
        "the progress: {stderr}"
    );

    // A key with the scopes ingest and query is enough; query alone is not.
    let token = server.session_token().await;
    let mut keys = Vec::new();
    for scopes in [json!(["ingest", "query"]), json!(["query"])] {
        let resp = server
            .post_as(
                &token,
                "/v1/apikeys",
                &json!({"name": format!("ci {scopes}"), "scopes": scopes}),
            )
            .await;
        assert_eq!(resp.status().as_u16(), 201, "create a key");
        let key: Value = resp.json().await.expect("JSON");
        keys.push(key["key"].as_str().expect("the key").to_owned());
    }
    let out = gate(&server, &good, &[("TRULAYER_API_KEY", &keys[0])]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(printed(&out, "decision"), "pass");
    let out = gate(&server, &good, &[("TRULAYER_API_KEY", &keys[1])]).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("answered HTTP 403")
            && String::from_utf8_lossy(&out.stderr).contains("scope_forbidden"),
        "{}",
        describe(&out)
    );

    // One that does not is blocked, saying why; or only warned about.
    let out = gate(&server, &bad, &[("SCORE_FLOOR", "0.7")]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(printed(&out, "decision"), "block");
    assert!(
        printed(&out, "reason").contains("the mean score 0.333 is below the floor 0.700"),
        "{}",
        describe(&out)
    );
    let out = gate(
        &server,
        &bad,
        &[("SCORE_FLOOR", "0.7"), ("ON_FAIL", "warn")],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(printed(&out, "decision"), "warn");

    // Against the baseline: the same scores pass.
    let out = gate(
        &server,
        &good,
        &[("BASELINE_RUN_ID", &baseline), ("DELTA_TOLERANCE", "0.1")],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(printed(&out, "decision"), "pass");
    assert_eq!(number(&out, "mean_delta"), 0.0);
    assert!(
        printed(&out, "reason").contains("within the tolerance 0.100"),
        "{}",
        describe(&out)
    );

    // The rule now wants another city: the same answers score 0, which
    // passes without a baseline (no floor) and is blocked against it.
    let resp = server
        .client
        .patch(server.url(&format!("/v1/eval-rules/{rule_id}")))
        .bearer_auth(&server.key)
        .json(&json!({"config": {"rule": "contains", "value": "Lyon"}}))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status().as_u16(), 200, "change the rule");
    let out = gate(&server, &good, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(number(&out, "mean_score"), 0.0);
    assert_eq!(printed(&out, "mean_delta"), "none (no baseline)");
    let out = gate(
        &server,
        &good,
        &[("BASELINE_RUN_ID", &baseline), ("DELTA_TOLERANCE", "0.1")],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(printed(&out, "decision"), "block");
    assert_eq!(number(&out, "mean_delta"), -1.0);
    assert!(
        printed(&out, "reason").contains(
            "the mean score fell by 1.000 against the baseline, more than the tolerance 0.100: \
             3 items regressed"
        ),
        "{}",
        describe(&out)
    );
}

#[tokio::test]
async fn the_ci_recipe_fails_on_errors_and_cancels_a_run_past_its_timeout() {
    // A judge endpoint that takes connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let judge = format!("http://{}/v1", silent.local_addr().expect("address"));
    let server = TestServer::start_with(&format!(
        "[eval.judge]\nprovider = \"openai\"\nbase_url = {judge:?}\nmodel = \"judge\"\n"
    ))
    .await;
    let waiting = dataset(&server, "waiting", &["Paris."], Some("judge")).await;

    // A missing setting.
    let out = gate(&server, &waiting, &[("VERSION_ID", "")]).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("VERSION_ID is not set"),
        "{}",
        describe(&out)
    );

    // The server's refusal, with its error body.
    let unknown = (uuid::Uuid::new_v4().to_string(), waiting.1.clone());
    let out = gate(&server, &unknown, &[]).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "POST /v1/datasets/{}/runs answered HTTP 404",
            unknown.0
        )) && stderr.contains("\"code\":\"not_found\""),
        "{}",
        describe(&out)
    );
    // A policy out of bounds, before any run is made.
    let out = gate(&server, &waiting, &[("SCORE_FLOOR", "2")]).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("SCORE_FLOOR must be a number from 0 to 1, not '2'"),
        "{}",
        describe(&out)
    );
    let runs = server
        .get_json(&format!("/v1/datasets/{}/runs", waiting.0))
        .await;
    assert_eq!(runs["runs"], json!([]), "no run was made: {runs}");

    // A run that does not finish in time fails the job and is cancelled.
    let out = gate(&server, &waiting, &[("TIMEOUT", "1")]).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let run_id = printed(&out, "run_id");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "run {run_id} has not finished after 1 s (TIMEOUT); cancelling it answered HTTP 200"
        )),
        "{}",
        describe(&out)
    );
    let run = server.get_json(&format!("/v1/eval-runs/{run_id}")).await;
    assert_eq!(run["status"], "cancelled", "{run}");
    drop(silent);
}
