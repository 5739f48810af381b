//! `/v1/settings/eval-keys`: an organisation's own judge keys are sealed at
//! rest, never shown, and sent by its evaluations and dataset runs instead
//! of the configured key; without an `[encryption]` key, or with another
//! one, they are refused or fail saying why.

use serde_json::{json, Value};

use crate::common::{expect_error, expect_error_naming, write_config, TestServer};
use crate::datasets::{create_version, dataset_of, finished, schedule};
use crate::judges::{ingest_trace, judge_toml, judged, reasoning, FakeJudge, Wire, JUDGE_KEY};

const ORG_KEY: &str = "sk-org-own-0123456789-WXYZ";
const ENCRYPTION_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const OTHER_ENCRYPTION_KEY: &str =
    "1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100";
const OTHER_KEY: &str = "tl_other_org_key_for_eval_keys_0001";

fn config(judge: &FakeJudge, encryption_key: Option<&str>) -> String {
    let mut toml = judge_toml(judge, "/v1", 4, &format!("api_key = {JUDGE_KEY:?}"));
    if let Some(key) = encryption_key {
        toml.push_str(&format!("[encryption]\nkey = {key:?}\n"));
    }
    toml
}

async fn set_key(server: &TestServer, key: &str) -> Value {
    let resp = server
        .post(
            "/v1/settings/eval-keys",
            &json!({"provider": "openai", "key": key}),
        )
        .await;
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    assert_eq!(status, 201, "{text}");
    assert!(!text.contains(key), "the key came back: {text}");
    serde_json::from_str(&text).expect("JSON")
}

/// One LLM evaluation of `trace`, finished.
async fn judge_once(server: &TestServer, trace: &str) -> Value {
    judged(server, trace, "helpfulness", json!({"prompt": "Helpful?"})).await
}

/// The bearer token the judge's last request carried.
fn last_bearer(judge: &FakeJudge) -> String {
    let received = judge.received();
    let last = received.last().expect("the judge was called");
    last.header("authorization").unwrap_or_default().to_owned()
}

#[tokio::test]
async fn an_organisations_key_is_sealed_never_shown_and_sent_instead_of_the_configured_one() {
    let judge = FakeJudge::start(Wire::OpenAi).await;
    let server = TestServer::start_with(&config(&judge, Some(ENCRYPTION_KEY))).await;
    server.other_tenant(OTHER_KEY).await;
    let listed = server.get_json("/v1/settings/eval-keys").await;
    assert_eq!(listed, json!({"items": []}));

    // Before any key: the configured one.
    let trace = ingest_trace(&server).await;
    judge_once(&server, &trace).await;
    assert_eq!(last_bearer(&judge), format!("Bearer {JUDGE_KEY}"));

    let stored = set_key(&server, ORG_KEY).await;
    assert_eq!(stored["provider"], "openai", "{stored}");
    assert_eq!(stored["hint"], "…WXYZ", "{stored}");
    assert!(stored["id"].is_string() && stored["created_at"].is_string());
    let listed = server.get_json("/v1/settings/eval-keys").await;
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    assert_eq!(listed["items"][0]["id"], stored["id"]);
    assert!(!listed.to_string().contains(ORG_KEY));
    crate::common::assert_not_on_disk(&server, ORG_KEY);

    // Our evaluations now send our key; the other organisation's still the configured one.
    let eval = judge_once(&server, &trace).await;
    assert_eq!(eval["status"], "complete", "{eval}");
    assert_eq!(last_bearer(&judge), format!("Bearer {ORG_KEY}"));
    let mut other_trace = crate::common::sample_trace("other org's");
    other_trace["output"] = json!("fine");
    let resp = server.post_as(OTHER_KEY, "/v1/ingest", &other_trace).await;
    let other_id = resp.json::<Value>().await.expect("JSON")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let resp = server
        .post_as(
            OTHER_KEY,
            "/v1/eval",
            &json!({"trace_id": other_id, "evaluator_type": "llm", "metric_name": "helpfulness",
                    "config": {"prompt": "Helpful?"}}),
        )
        .await;
    let queued: Value = resp.json().await.expect("JSON");
    let id = queued["eval_id"].as_str().expect("eval_id");
    for _ in 0..600 {
        let eval = server
            .get_json_as(OTHER_KEY, &format!("/v1/eval/{id}"))
            .await;
        if eval["status"] == "complete" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(last_bearer(&judge), format!("Bearer {JUDGE_KEY}"));
    let other_list = server
        .get_json_as(OTHER_KEY, "/v1/settings/eval-keys")
        .await;
    assert_eq!(
        other_list,
        json!({"items": []}),
        "another organisation's keys are not shown"
    );
    expect_error(
        server
            .client
            .delete(server.url("/v1/settings/eval-keys/openai"))
            .bearer_auth(OTHER_KEY)
            .send()
            .await
            .expect("delete"),
        404,
    )
    .await;

    // Replaced: one key still, the new one sent; survives a restart.
    let replaced = set_key(&server, "sk-org-second-key-ABCD").await;
    assert_ne!(replaced["id"], stored["id"]);
    let server = server.restart().await;
    let listed = server.get_json("/v1/settings/eval-keys").await;
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    assert_eq!(listed["items"][0]["hint"], "…ABCD");
    judge_once(&server, &trace).await;
    assert_eq!(last_bearer(&judge), "Bearer sk-org-second-key-ABCD");

    // A dataset run's model and judge calls carry it too.
    let dataset = dataset_of(&server, "keyed", 2).await;
    let version = create_version(
        &server,
        &dataset,
        json!({"name": "v1", "model": "answer-model", "judge_model": "judge-model"}),
    )
    .await;
    let before = judge.count();
    let run = finished(&server, &schedule(&server, &dataset, &version).await).await;
    assert_eq!(run["status"], "completed", "{run}");
    let calls = judge.received().split_off(before);
    assert_eq!(calls.len(), 4, "two answers and two judgements");
    for call in &calls {
        assert_eq!(
            call.header("authorization"),
            Some("Bearer sk-org-second-key-ABCD")
        );
    }

    // Revoked: the configured key again; a second revoke finds nothing.
    let delete = |path: &'static str| {
        let req = server
            .client
            .delete(server.url(path))
            .bearer_auth(&server.key);
        async move { req.send().await.expect("delete") }
    };
    assert_eq!(delete("/v1/settings/eval-keys/openai").await.status(), 204);
    assert_eq!(
        server.get_json("/v1/settings/eval-keys").await,
        json!({"items": []})
    );
    judge_once(&server, &trace).await;
    assert_eq!(last_bearer(&judge), format!("Bearer {JUDGE_KEY}"));
    expect_error(delete("/v1/settings/eval-keys/openai").await, 404).await;
    expect_error_naming(
        delete("/v1/settings/eval-keys/mistral").await,
        400,
        &["provider"],
    )
    .await;

    // Audited, without the key.
    let token = server.session_token().await;
    let audit = server.get_json_as(&token, "/v1/audit-log?limit=50").await;
    let text = audit.to_string();
    assert!(
        text.contains("eval_key.set") && text.contains("eval_key.revoke"),
        "{text}"
    );
    assert!(!text.contains("sk-org"), "{text}");
}

#[tokio::test]
async fn keys_are_checked_and_need_an_encryption_key() {
    let judge = FakeJudge::start(Wire::OpenAi).await;
    let server = TestServer::start_with(&config(&judge, Some(ENCRYPTION_KEY))).await;
    for (body, needle) in [
        (
            json!({"provider": "mistral", "key": "sk-1234567890"}),
            "provider",
        ),
        (json!({"provider": "openai", "key": "  "}), "key"),
        (
            json!({"provider": "openai", "key": "sk-with a space"}),
            "key",
        ),
        (
            json!({"provider": "openai", "key": "x".repeat(1025)}),
            "key",
        ),
        (json!({"provider": "openai"}), "key"),
    ] {
        let resp = server.post("/v1/settings/eval-keys", &body).await;
        let status = resp.status().as_u16();
        assert!(status == 400 || status == 422, "{body}: {status}");
        expect_error_naming(resp, status, &[needle]).await;
    }
    server.stop().await;

    let plain = TestServer::start_with(&config(&judge, None)).await;
    let refused = expect_error(
        plain
            .post(
                "/v1/settings/eval-keys",
                &json!({"provider": "openai", "key": ORG_KEY}),
            )
            .await,
        409,
    )
    .await;
    assert_eq!(refused["code"], "encryption_not_configured", "{refused}");
    assert!(refused["error"]
        .as_str()
        .unwrap_or_default()
        .contains("encryption.key_file"));
}

#[tokio::test]
async fn a_key_sealed_under_another_encryption_key_fails_evaluations_saying_so() {
    let judge = FakeJudge::start(Wire::OpenAi).await;
    let server = TestServer::start_with(&config(&judge, Some(ENCRYPTION_KEY))).await;
    set_key(&server, ORG_KEY).await;
    let trace = ingest_trace(&server).await;
    let path = write_config(
        server.dir.path(),
        &config(&judge, Some(OTHER_ENCRYPTION_KEY)),
    );
    assert!(path.exists());
    let server = server.restart().await;
    let before = judge.count();
    let eval = judge_once(&server, &trace).await;
    assert_eq!(eval["status"], "failed", "{eval}");
    assert!(
        reasoning(&eval).contains("sealed with another encryption key"),
        "{eval}"
    );
    assert_eq!(
        judge.count(),
        before,
        "nothing was sent with the wrong key or in its place"
    );
    // Set again under the new key, it works.
    set_key(&server, ORG_KEY).await;
    let eval = judge_once(&server, &trace).await;
    assert_eq!(eval["status"], "complete", "{eval}");
    assert_eq!(last_bearer(&judge), format!("Bearer {ORG_KEY}"));
}
