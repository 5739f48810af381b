//! What holds on every route: error shape, request ids, 404/405, health,
//! authentication, persistence across restarts.

use serde_json::{json, Value};

use crate::common::{expect_error, sample_trace, TestServer};

#[tokio::test]
async fn health_reports_ok_and_schema_version_without_auth() {
    let server = TestServer::start().await;
    let resp = server
        .client
        .get(server.url("/health"))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-request-id"));
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["status"], "ok");
    assert_eq!(
        body["schema_version"],
        trulayer_server::store::SCHEMA_VERSION
    );
    assert!(body["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    server.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let server = TestServer::start().await;
    let body = expect_error(server.get("/v1/nothing-here").await, 404).await;
    assert_eq!(body["code"], "not_found");
    let resp = server
        .client
        .delete(server.url("/v1/ingest"))
        .send()
        .await
        .expect("sent");
    let body = expect_error(resp, 405).await;
    assert_eq!(body["code"], "method_not_allowed");
    server.stop().await;
}

#[tokio::test]
async fn a_sane_caller_request_id_is_kept() {
    let server = TestServer::start().await;
    let resp = server
        .client
        .get(server.url("/v1/traces"))
        .header("x-request-id", "caller-chosen-42")
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.headers()["x-request-id"], "caller-chosen-42");
    let body = expect_error(resp, 401).await;
    assert_eq!(body["request_id"], "caller-chosen-42");
    // A hostile one is replaced, not echoed.
    let resp = server
        .client
        .get(server.url("/health"))
        .header("x-request-id", "<script>alert(1)</script>")
        .send()
        .await
        .expect("sent");
    assert_ne!(resp.headers()["x-request-id"], "<script>alert(1)</script>");
    server.stop().await;
}

#[tokio::test]
async fn missing_or_wrong_keys_get_the_sdk_latch_string() {
    let server = TestServer::start().await;
    let no_auth = server
        .client
        .post(server.url("/v1/ingest"))
        .json(&sample_trace("x"))
        .send()
        .await
        .expect("sent");
    let body = expect_error(no_auth, 401).await;
    assert_eq!(body["error"], "invalid_api_key");
    for key in ["tl_test_0123456789abcdefghiX", "tl_", "not-a-key"] {
        let body = expect_error(
            server.post_as(key, "/v1/ingest", &sample_trace("x")).await,
            401,
        )
        .await;
        assert_eq!(body["error"], "invalid_api_key", "key {key:?}");
    }
    let basic = server
        .client
        .get(server.url("/v1/traces"))
        .basic_auth("user", Some("pass"))
        .send()
        .await
        .expect("sent");
    expect_error(basic, 401).await;
    // Nothing was stored by any of them.
    let page = server.get_json("/v1/traces").await;
    assert_eq!(page["traces"], json!([]));
    server.stop().await;
}

#[tokio::test]
async fn data_survives_a_restart_and_first_start_runs_once() {
    let server = TestServer::start().await;
    assert!(
        server.running().credentials.is_some(),
        "first start reports what it created"
    );
    let id = server.ingest(sample_trace("kept")).await;
    let server = server.restart().await;
    assert!(
        server.running().credentials.is_none(),
        "a second start creates nothing"
    );
    let trace = server.get_json(&format!("/v1/traces/{id}")).await;
    assert_eq!(trace["name"], "kept");
    assert_eq!(trace["spans"].as_array().map(Vec::len), Some(1));
    server.stop().await;
}

#[tokio::test]
async fn first_start_secrets_can_come_from_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = "tl_from_a_file_0123456789abcdef";
    std::fs::write(dir.path().join("key"), format!("{key}\n")).expect("write key");
    std::fs::write(dir.path().join("password"), "from-a-file-pass\n").expect("write password");
    let path = dir.path().join("trulayer.toml");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\ndata_dir = {data:?}\n[log]\nlevel = \"warn\"\n\
         [init]\napi_key_file = {key_file:?}\nadmin_password_file = {pw_file:?}\n",
        data = dir.path().join("data").display().to_string(),
        key_file = dir.path().join("key").display().to_string(),
        pw_file = dir.path().join("password").display().to_string(),
    );
    std::fs::write(&path, text).expect("write config");
    let mut server = TestServer::start_in(dir, &path).await;
    let credentials = server.running().credentials.clone().expect("first start");
    assert!(
        credentials.generated_api_key.is_none(),
        "the key came from the file"
    );
    assert!(
        credentials.generated_password.is_none(),
        "the password came from the file"
    );
    assert!(
        credentials.file.is_none(),
        "nothing generated, nothing written"
    );
    server.key = key.to_string();
    let id = server.ingest(sample_trace("file-key")).await;
    assert_eq!(
        server.get_json(&format!("/v1/traces/{id}")).await["name"],
        "file-key"
    );
    server.stop().await;
}

/// Every refusal carries the JSON error shape with a machine-readable code,
/// also those of the router and of its extractors, which answer plain text
/// by themselves.
#[tokio::test]
async fn every_error_has_the_json_shape_with_a_code() {
    let server = TestServer::start().await;
    let raw = |method: reqwest::Method, path: &str, content_type: &str, body: &'static [u8]| {
        server
            .client
            .request(method, server.url(path))
            .bearer_auth(&server.key)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let cases: Vec<(reqwest::Response, u16, &str)> = vec![
        (
            raw(
                reqwest::Method::POST,
                "/v1/ingest",
                "application/json",
                b"{\"name\": ",
            )
            .await
            .expect("sent"),
            400,
            "malformed_json",
        ),
        (server.get("/v1/traces?limit=abc").await, 400, "bad_request"),
        (
            raw(
                reqwest::Method::POST,
                "/v1/otlp/traces",
                "application/x-protobuf",
                b"\xff\xff\xff",
            )
            .await
            .expect("sent"),
            400,
            "invalid_otlp",
        ),
        (server.get("/v1/sessions/%ff").await, 400, "bad_request"),
        (server.get("/v1/traces/%ff%fe").await, 400, "bad_request"),
        (server.get("/v1/traces?limit=%ff").await, 400, "bad_request"),
        (server.get("/v1/nothing-here").await, 404, "not_found"),
        (
            raw(
                reqwest::Method::PUT,
                "/v1/traces",
                "application/json",
                b"{}",
            )
            .await
            .expect("sent"),
            405,
            "method_not_allowed",
        ),
    ];
    for (resp, status, code) in cases {
        let url = resp.url().to_string();
        let media = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(media.starts_with("application/json"), "{url}: {media}");
        let body = expect_error(resp, status).await;
        assert_eq!(body["code"], code, "{url}: {body}");
    }
    server.stop().await;
}
