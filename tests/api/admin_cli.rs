//! `trulayer-server admin …` against the data directory of a running server.

use std::process::Command;

use serde_json::{json, Value};

use crate::common::{expect_error, sample_trace, TestServer};

const BIN: &str = env!("CARGO_BIN_EXE_trulayer-server");

/// Runs an admin command on the server's configuration; returns its JSON line.
fn admin(server: &TestServer, args: &[&str]) -> Value {
    admin_at(&server.dir.path().join("trulayer.toml"), args)
}

/// Runs an admin command that must succeed with configuration `config`;
/// returns its JSON line.
pub(crate) fn admin_at(config: &std::path::Path, args: &[&str]) -> Value {
    let out = Command::new(BIN)
        .arg("admin")
        .arg("--config")
        .arg(config)
        .args(args)
        .env("TRULAYER_LOG__LEVEL", "warn")
        .output()
        .expect("binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "admin {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.lines().count(), 1, "one JSON line: {stdout}");
    serde_json::from_str(stdout.trim()).expect("JSON line")
}

async fn login(server: &TestServer, email: &str, password: &str) -> reqwest::Response {
    server
        .client
        .post(server.url("/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("login sent")
}

#[tokio::test]
async fn operator_commands_work_on_a_running_servers_data() {
    let server = TestServer::start().await;
    let org = tokio::task::spawn_blocking({
        let config = server.dir.path().join("trulayer.toml");
        move || {
            let out = Command::new(BIN)
                .args(["admin", "create-org", "--name", "Acme", "--admin-email"])
                .arg("boss@acme.example")
                .args(["--admin-password", "acme password", "--plan", "starter"])
                .arg("--config")
                .arg(config)
                .output()
                .expect("binary runs");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice::<Value>(&out.stdout).expect("JSON line")
        }
    })
    .await
    .expect("create-org");
    let key = org["api_key"].as_str().expect("api_key").to_owned();
    let org_id = org["org_id"].as_str().expect("org_id").to_owned();
    assert!(org["project_id"].is_string());

    // The running server takes the new key and the new owner at once.
    let id = {
        let resp = server
            .post_as(&key, "/v1/ingest", &sample_trace("acme"))
            .await;
        assert_eq!(resp.status().as_u16(), 201);
        assert_eq!(
            resp.headers()["x-ratelimit-limit"].to_str().expect("ascii"),
            "600",
            "Starter's ingest rate"
        );
        resp.json::<Value>().await.expect("JSON")["id"]
            .as_str()
            .expect("id")
            .to_owned()
    };
    // Another organisation: the first tenant's key does not see it.
    expect_error(server.get(&format!("/v1/traces/{id}")).await, 404).await;
    let resp = login(&server, "boss@acme.example", "acme password").await;
    assert_eq!(resp.status().as_u16(), 200);
    let session = resp.json::<Value>().await.expect("JSON")["token"]
        .as_str()
        .expect("token")
        .to_owned();

    // A plan change applies to the next request.
    let plan = admin(&server, &["set-plan", "--org", &org_id, "--plan", "pro"]);
    assert_eq!(plan, json!({"org_id": org_id, "plan": "pro"}));
    let resp = server.get_as(&key, "/v1/traces").await;
    assert_eq!(
        resp.headers()["x-ratelimit-limit"].to_str().expect("ascii"),
        "36000"
    );

    // Users, by organisation name.
    let user = admin(
        &server,
        &[
            "create-user",
            "--org",
            "Acme",
            "--email",
            "ann@acme.example",
            "--password",
            "ann password",
            "--role",
            "viewer",
        ],
    );
    assert_eq!(user["role"], "viewer");
    assert_eq!(
        login(&server, "ann@acme.example", "ann password")
            .await
            .status()
            .as_u16(),
        200
    );

    // A password reset ends the user's sessions.
    admin(
        &server,
        &[
            "reset-password",
            "--email",
            "boss@acme.example",
            "--password",
            "new acme password",
        ],
    );
    assert_eq!(
        server
            .get_as(&session, "/v1/auth/me")
            .await
            .status()
            .as_u16(),
        401
    );
    assert_eq!(
        login(&server, "boss@acme.example", "new acme password")
            .await
            .status()
            .as_u16(),
        200
    );

    // A query-scoped key.
    let query = admin(
        &server,
        &[
            "create-key",
            "--org",
            &org_id,
            "--scopes",
            "query",
            "--name",
            "dash",
        ],
    );
    let query_key = query["api_key"].as_str().expect("api_key");
    assert_eq!(
        server
            .get_as(query_key, "/v1/traces")
            .await
            .status()
            .as_u16(),
        200
    );
    let body = expect_error(
        server
            .post_as(query_key, "/v1/ingest", &sample_trace("no"))
            .await,
        403,
    )
    .await;
    assert_eq!(body["code"], "scope_forbidden");

    // Every operator action is in the organisation's audit log.
    let resp = login(&server, "boss@acme.example", "new acme password").await;
    let owner = resp.json::<Value>().await.expect("JSON")["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let log = server.get_json_as(&owner, "/v1/audit-log?limit=200").await;
    let operator: Vec<&str> = log["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["actor"] == "operator")
        .map(|e| e["action"].as_str().expect("action"))
        .collect();
    assert_eq!(
        operator,
        [
            "apikey.create",
            "user.password_reset",
            "user.create",
            "org.set_plan",
            "org.create"
        ]
    );
    let verdict = server.audit_verify(&owner).await;
    assert_eq!(verdict["intact"], true);
}

#[tokio::test]
async fn operator_mistakes_are_refused_and_change_nothing() {
    let server = TestServer::start().await;
    let config = server.dir.path().join("trulayer.toml");
    let run = |args: &[&str]| {
        Command::new(BIN)
            .arg("admin")
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .expect("binary runs")
    };
    // The first-start owner's email is taken: no half-made organisation.
    let out = run(&[
        "create-org",
        "--name",
        "Dup",
        "--admin-email",
        "owner@example.com",
        "--admin-password",
        "long enough",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists"));
    let out = run(&["set-plan", "--org", "Dup", "--plan", "pro"]);
    assert!(!out.status.success(), "no organisation Dup was made");
    let out = run(&["set-plan", "--org", "default", "--plan", "gold"]);
    assert!(!out.status.success());
    let out = run(&[
        "create-user",
        "--org",
        "default",
        "--email",
        "x@example.com",
        "--password",
        "short",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 8"));
    // A role that is no role is refused with the arguments, naming the flag
    // and the roles there are, and makes no user.
    let out = run(&[
        "create-user",
        "--org",
        "default",
        "--email",
        "admin@example.com",
        "--password",
        "long enough",
        "--role",
        "admin",
    ]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--role") && stderr.contains("owner, member or viewer"),
        "{stderr}"
    );
    let out = run(&[
        "reset-password",
        "--email",
        "admin@example.com",
        "--password",
        "long enough",
    ]);
    assert!(!out.status.success(), "no user admin@example.com was made");
}

#[tokio::test]
async fn an_operator_change_whose_entry_cannot_be_written_is_not_made() {
    let server = TestServer::start().await;
    let config = server.dir.path().join("trulayer.toml");
    let run = |args: &[&str]| {
        Command::new(BIN)
            .arg("admin")
            .arg("--config")
            .arg(&config)
            .args(args)
            .env("TRULAYER_LOG__LEVEL", "warn")
            .output()
            .expect("binary runs")
    };
    // Anyone with the database file could make the log refuse entries.
    let db = rusqlite::Connection::open(server.dir.path().join("data").join("trulayer.db"))
        .expect("open the database");
    db.execute_batch(
        "CREATE TRIGGER refuse_entries BEFORE INSERT ON audit_log \
         WHEN instr(NEW.details, 'doomed') > 0 \
         BEGIN SELECT RAISE(ABORT, 'the audit log refuses this entry'); END;",
    )
    .expect("trigger");

    let out = run(&[
        "create-user",
        "--org",
        "default",
        "--email",
        "doomed@example.com",
        "--password",
        "long enough pw",
    ]);
    assert!(!out.status.success(), "the command reports the failure");
    let out = run(&[
        "create-org",
        "--name",
        "Doomed",
        "--admin-email",
        "boss@doomed.example",
        "--admin-password",
        "long enough pw",
    ]);
    assert!(!out.status.success(), "the command reports the failure");

    // Neither change was made: no such user, no such organisation.
    for email in ["doomed@example.com", "boss@doomed.example"] {
        let resp = login(&server, email, "long enough pw").await;
        assert_eq!(resp.status().as_u16(), 401, "{email} can log in");
    }
    let out = run(&["set-plan", "--org", "Doomed", "--plan", "pro"]);
    assert!(!out.status.success(), "the organisation Doomed exists");
    let owner = server.session_token().await;
    let users = server.get_json_as(&owner, "/v1/users").await;
    assert_eq!(users["users"].as_array().expect("users").len(), 1);

    // Without the trigger, the same commands work and are recorded.
    db.execute_batch("DROP TRIGGER refuse_entries")
        .expect("drop trigger");
    admin(
        &server,
        &[
            "create-user",
            "--org",
            "default",
            "--email",
            "doomed@example.com",
            "--password",
            "long enough pw",
        ],
    );
    let resp = login(&server, "doomed@example.com", "long enough pw").await;
    assert_eq!(resp.status().as_u16(), 200);
    let log = server.get_json_as(&owner, "/v1/audit-log").await;
    assert_eq!(log["entries"][1]["action"], "user.create");
    assert_eq!(log["entries"][1]["actor"], "operator");
    assert_eq!(log["entries"][1]["details"]["email"], "doomed@example.com");
    let verdict = server.audit_verify(&owner).await;
    assert_eq!(verdict["intact"], true);
}
