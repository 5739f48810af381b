//! Shared test harness: a real server on a real port (port 0) with a
//! temporary data directory, configured through a real TOML file.
#![allow(dead_code)]

pub mod process;
pub mod python;

use std::path::{Path, PathBuf};

use reqwest::{Client, Response};
use serde_json::{json, Value};
use trulayer_server::config::Config;
use trulayer_server::server::{self, Running};

pub const KEY: &str = "tl_test_0123456789abcdefghij";
pub const PASSWORD: &str = "correct-horse-battery";

pub struct TestServer {
    pub running: Option<Running>,
    pub url: String,
    pub key: String,
    pub dir: tempfile::TempDir,
    pub client: Client,
}

/// A config file for `data_dir` listening on an ephemeral loopback port.
pub fn write_config(dir: &Path, extra: &str) -> PathBuf {
    write_config_with_storage(dir, "", extra)
}

/// A config file with `storage` lines added to its `[storage]` section.
pub fn write_config_with_storage(dir: &Path, storage: &str, extra: &str) -> PathBuf {
    write_config_with_sections(dir, "", storage, extra)
}

/// A config file with `server` lines in `[server]` and `storage` lines in
/// `[storage]`, and `extra` TOML after `[init]`.
pub fn write_config_with_sections(dir: &Path, server: &str, storage: &str, extra: &str) -> PathBuf {
    let path = dir.join("trulayer.toml");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_timeout_s = 5\n{server}\n\
         [storage]\ndata_dir = {data:?}\n{storage}\n\
         [log]\nlevel = \"warn\"\n\
         [init]\napi_key = {KEY:?}\nadmin_password = {PASSWORD:?}\nadmin_email = \"owner@example.com\"\n\
         project = \"default\"\n{extra}",
        data = dir.join("data").display().to_string(),
    );
    std::fs::write(&path, text).expect("write config");
    path
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with("").await
    }

    /// Starts with extra TOML appended to the `[init]` section's file.
    pub async fn start_with(extra: &str) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_config(dir.path(), extra);
        Self::start_in(dir, &path).await
    }

    /// Starts with `server` lines in `[server]` and `extra` TOML after `[init]`.
    pub async fn start_with_server(server: &str, extra: &str) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_config_with_sections(dir.path(), server, "", extra);
        Self::start_in(dir, &path).await
    }

    /// Starts with `storage` lines in `[storage]` and `extra` TOML after `[init]`.
    pub async fn start_with_storage(storage: &str, extra: &str) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_config_with_storage(dir.path(), storage, extra);
        Self::start_in(dir, &path).await
    }

    pub async fn start_in(dir: tempfile::TempDir, config: &Path) -> TestServer {
        let config = Config::load(Some(config)).expect("valid test config");
        let running = server::start(config).await.expect("server starts");
        TestServer {
            url: running.url(),
            running: Some(running),
            key: KEY.to_string(),
            dir,
            client: Client::new(),
        }
    }

    /// Stops the server and starts it again on the same data directory.
    pub async fn restart(mut self) -> TestServer {
        if let Some(r) = self.running.take() {
            r.stop().await.expect("clean stop");
        }
        let path = self.dir.path().join("trulayer.toml");
        Self::start_in(self.dir, &path).await
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("server running")
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await.expect("clean stop");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.post_as(&self.key, path, body).await
    }

    pub async fn post_as(&self, key: &str, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn get(&self, path: &str) -> Response {
        self.get_as(&self.key, path).await
    }

    pub async fn get_as(&self, key: &str, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .expect("request sent")
    }

    /// Logs the first-start owner in; returns the session token.
    pub async fn session_token(&self) -> String {
        let resp = self
            .client
            .post(self.url("/v1/auth/login"))
            .json(&serde_json::json!({"email": "owner@example.com", "password": PASSWORD}))
            .send()
            .await
            .expect("login sent");
        assert_eq!(resp.status().as_u16(), 200, "owner login");
        let body: Value = resp.json().await.expect("login answer");
        body["token"].as_str().expect("session token").to_owned()
    }

    /// `GET /v1/audit/verify` for the organisation of the session `token`
    /// and today (UTC), without credentials, as an auditor calls it; must
    /// answer 200.
    pub async fn audit_verify(&self, token: &str) -> Value {
        let me = self.get_json_as(token, "/v1/auth/me").await;
        let org = me["org_id"].as_str().expect("org_id");
        let today = chrono::Utc::now().date_naive();
        let resp = self
            .client
            .get(self.url(&format!("/v1/audit/verify?tenant_id={org}&date={today}")))
            .send()
            .await
            .expect("sent");
        assert_eq!(resp.status().as_u16(), 200, "GET /v1/audit/verify");
        resp.json().await.expect("JSON body")
    }

    /// GET as `token` that must answer 200; returns the JSON body.
    pub async fn get_json_as(&self, token: &str, path: &str) -> Value {
        let resp = self.get_as(token, path).await;
        assert_eq!(resp.status().as_u16(), 200, "GET {path}");
        resp.json().await.expect("JSON body")
    }

    /// GET that must answer 200; returns the JSON body.
    pub async fn get_json(&self, path: &str) -> Value {
        let resp = self.get(path).await;
        let status = resp.status();
        let body: Value = resp.json().await.expect("JSON body");
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// A second organisation with one project and the API key `key`;
    /// returns the project's internal id.
    pub async fn other_tenant(&self, key: &str) -> i64 {
        let store = self.running().store().clone();
        let (tenant, project) = store
            .create_tenant(
                "other org".into(),
                "default".into(),
                trulayer_server::store::Actor::operator(),
            )
            .await
            .expect("tenant");
        store
            .create_api_key(
                tenant,
                trulayer_server::store::NewApiKey {
                    project_id: project,
                    name: "other".into(),
                    prefix: trulayer_server::auth::visible_prefix(key).into(),
                    key_hash: trulayer_server::auth::hash_api_key(key),
                    expires_at: None,
                    scopes: Vec::new(),
                },
                trulayer_server::store::Actor::operator(),
            )
            .await
            .expect("key");
        project
    }

    /// Ingests one trace, which must be created; returns its id.
    pub async fn ingest(&self, trace: Value) -> String {
        let resp = self.post("/v1/ingest", &trace).await;
        let status = resp.status();
        let body: Value = resp.json().await.expect("JSON body");
        assert_eq!(status, 201, "ingest: {body}");
        body["id"].as_str().expect("id").to_string()
    }

    /// Every trace id the list returns for `query`, following cursors.
    pub async fn list_all(&self, query: &str, limit: usize) -> Vec<String> {
        let mut ids = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/traces?limit={limit}&{query}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = self.get_json(&path).await;
            for t in page["traces"].as_array().expect("traces") {
                ids.push(t["id"].as_str().expect("id").to_string());
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => {
                    assert_eq!(page["has_more"], false);
                    break;
                }
            }
        }
        ids
    }
}

/// A trace as the SDK would send it, with a fresh id.
pub fn sample_trace(name: &str) -> Value {
    json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "name": name,
        "input": "What is the capital of France?",
        "output": "Paris.",
        "started_at": "2026-03-01T10:00:00Z",
        "ended_at": "2026-03-01T10:00:02.5Z",
        "spans": [{
            "name": "llm-call",
            "type": "llm",
            "model": "gpt-4o-mini",
            "prompt_tokens": 12,
            "completion_tokens": 3,
            "start_time": "2026-03-01T10:00:00.5Z",
            "end_time": "2026-03-01T10:00:02Z"
        }]
    })
}

/// Asserts that no file of the server's data directory holds `secret`
/// in the clear.
pub fn assert_not_on_disk(server: &TestServer, secret: &str) {
    let data = server.dir.path().join("data");
    let mut read = 0;
    for entry in std::fs::read_dir(&data).expect("data dir") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            let bytes = std::fs::read(&path).expect("read");
            read += bytes.len();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{} holds the secret in the clear",
                path.display()
            );
        }
    }
    assert!(read > 0, "no database files found");
}

/// Asserts an error response: status, JSON body with `error`, the request
/// id in both header and body; returns the body.
pub async fn expect_error(resp: Response, status: u16) -> Value {
    let got = resp.status().as_u16();
    let header = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: Value = resp.json().await.expect("JSON error body");
    assert_eq!(got, status, "body: {body}");
    assert!(body["error"].is_string(), "no error text: {body}");
    let header = header.expect("X-Request-Id header");
    assert_eq!(
        body["request_id"],
        header.as_str(),
        "request id mismatch: {body}"
    );
    body
}

/// Like [`expect_error`], and the error text must contain every one of `needles`.
pub async fn expect_error_naming(resp: Response, status: u16, needles: &[&str]) -> Value {
    let body = expect_error(resp, status).await;
    let text = body["error"].as_str().unwrap_or_default();
    for needle in needles {
        assert!(text.contains(needle), "{needle:?} not in {body}");
    }
    body
}
