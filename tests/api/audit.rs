//! The audit log: what is recorded, who may read it, paging, and the hash
//! chain's verification, including a tampered row.

use serde_json::{json, Value};

use crate::common::{expect_error, TestServer, PASSWORD};

async fn login(server: &TestServer, email: &str, password: &str) -> reqwest::Response {
    server
        .client
        .post(server.url("/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("login sent")
}

async fn entries(server: &TestServer, session: &str, query: &str) -> Value {
    let resp = server
        .get_as(session, &format!("/v1/audit-log{query}"))
        .await;
    assert_eq!(resp.status().as_u16(), 200, "audit log");
    resp.json().await.expect("audit log JSON")
}

fn db_path(server: &TestServer) -> std::path::PathBuf {
    server.dir.path().join("data").join("trulayer.db")
}

#[tokio::test]
async fn administrative_actions_are_recorded_with_actor_target_and_source() {
    let server = TestServer::start().await;
    let failed = login(&server, "owner@example.com", "wrong password").await;
    assert_eq!(failed.status().as_u16(), 401);
    let owner = server.session_token().await;
    let project = server
        .post_as(&owner, "/v1/projects", &json!({"name": "Audited"}))
        .await;
    assert_eq!(project.status().as_u16(), 201);
    let project: Value = project.json().await.expect("project");
    let key = server
        .post_as(&owner, "/v1/apikeys", &json!({"name": "ci"}))
        .await;
    let key: Value = key.json().await.expect("key");
    let revoke = server
        .client
        .delete(server.url(&format!("/v1/apikeys/{}", key["id"].as_str().expect("id"))))
        .bearer_auth(&owner)
        .send()
        .await
        .expect("revoke sent");
    assert_eq!(revoke.status().as_u16(), 204);

    let log = entries(&server, &owner, "").await;
    let actions: Vec<&str> = log["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["action"].as_str().expect("action"))
        .collect();
    // Newest first.
    assert_eq!(
        actions,
        [
            "apikey.revoke",
            "apikey.create",
            "project.create",
            "auth.login",
            "auth.login_failed"
        ]
    );
    let create = &log["entries"][2];
    assert_eq!(create["actor"], "user:owner@example.com");
    assert_eq!(create["target"], project["id"]);
    assert_eq!(create["source"], "127.0.0.1");
    assert_eq!(create["details"]["name"], "Audited");
    assert!(create["at"].as_str().expect("time").ends_with('Z'));
    // No secret ever lands in the log.
    let text = log.to_string();
    assert!(!text.contains(key["key"].as_str().expect("plaintext key")));
    assert!(!text.contains(PASSWORD));
}

#[tokio::test]
async fn owners_and_viewers_read_the_log_members_and_keys_do_not() {
    let server = TestServer::start().await;
    let owner = server.session_token().await;
    for (email, role) in [("m@example.com", "member"), ("v@example.com", "viewer")] {
        let resp = server
            .post_as(
                &owner,
                "/v1/users",
                &json!({"email": email, "password": "long enough pw", "role": role}),
            )
            .await;
        assert_eq!(resp.status().as_u16(), 201);
    }
    let as_user = |email: &'static str| {
        let server = &server;
        async move {
            let resp = login(server, email, "long enough pw").await;
            let body: Value = resp.json().await.expect("login");
            body["token"].as_str().expect("token").to_owned()
        }
    };
    let member = as_user("m@example.com").await;
    let viewer = as_user("v@example.com").await;
    let path = "/v1/audit-log";
    assert_eq!(server.get_as(&viewer, path).await.status().as_u16(), 200);
    let body = expect_error(server.get_as(&member, path).await, 403).await;
    assert_eq!(body["code"], "forbidden_role");
    let body = expect_error(server.get(path).await, 403).await;
    assert_eq!(body["code"], "session_required");
}

#[tokio::test]
async fn the_log_pages_without_gaps_or_repeats() {
    let server = TestServer::start().await;
    let owner = server.session_token().await;
    for i in 0..7 {
        let resp = server
            .post_as(&owner, "/v1/projects", &json!({"name": format!("p{i}")}))
            .await;
        assert_eq!(resp.status().as_u16(), 201);
    }
    let all = entries(&server, &owner, "").await["entries"]
        .as_array()
        .expect("entries")
        .len();
    assert_eq!(all, 8, "a login and seven projects");
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let query = match &cursor {
            Some(c) => format!("?limit=3&cursor={c}"),
            None => "?limit=3".into(),
        };
        let page = entries(&server, &owner, &query).await;
        for e in page["entries"].as_array().expect("entries") {
            seen.push(e["id"].as_i64().expect("id"));
        }
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        if cursor.is_none() {
            assert_eq!(page["has_more"], false);
            break;
        }
    }
    let mut sorted = seen.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted.dedup();
    assert_eq!(seen, sorted, "newest first, no repeats");
    assert_eq!(seen.len(), all);
}

#[tokio::test]
async fn the_log_refuses_a_page_it_did_not_issue_naming_the_parameter() {
    let server = TestServer::start().await;
    let owner = server.session_token().await;
    for i in 0..3 {
        server
            .post_as(&owner, "/v1/projects", &json!({"name": format!("p{i}")}))
            .await;
    }
    let page = entries(&server, &owner, "?limit=1").await;
    let cursor = page["next_cursor"].as_str().expect("a cursor").to_owned();
    // A projects cursor, the bare entry id cursors once were, and garbage.
    let projects = server
        .get_as(&owner, "/v1/projects?limit=1")
        .await
        .json::<Value>()
        .await
        .expect("projects");
    let theirs = projects["next_cursor"].as_str().expect("projects cursor");
    let id = page["entries"][0]["id"].as_i64().expect("id").to_string();
    for (query, parameter) in [
        (format!("?cursor={theirs}"), "cursor: "),
        (format!("?cursor={id}"), "cursor: "),
        ("?limit=0".to_owned(), "limit: "),
        ("?limit=201".to_owned(), "limit: "),
    ] {
        let body = expect_error(
            server
                .get_as(&owner, &format!("/v1/audit-log{query}"))
                .await,
            400,
        )
        .await;
        assert_eq!(body["code"], "bad_request", "{query}: {body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap_or_default()
                .starts_with(parameter),
            "{query}: {body}"
        );
    }
    // The log's own cursor goes on where the page ended.
    let next = entries(&server, &owner, &format!("?limit=1&cursor={cursor}")).await;
    assert!(
        next["entries"][0]["id"].as_i64() < page["entries"][0]["id"].as_i64(),
        "{page} then {next}"
    );
}

#[tokio::test]
async fn the_daily_anchor_has_the_references_shape_without_credentials() {
    let server = TestServer::start().await;
    let owner = server.session_token().await;
    server
        .post_as(&owner, "/v1/projects", &json!({"name": "anchored"}))
        .await;
    let anchor = server.audit_verify(&owner).await;
    for field in [
        "verified",
        "date",
        "head_hash",
        "row_count",
        "s3_key",
        "anchored_at",
    ] {
        assert!(anchor.get(field).is_some(), "{field} missing: {anchor}");
    }
    assert_eq!(anchor["verified"], true);
    assert_eq!(
        anchor["row_count"], 2,
        "org.create and the project: {anchor}"
    );
    let head = anchor["head_hash"].as_str().expect("head_hash").to_owned();
    assert_eq!(head.len(), 64, "hex SHA-256: {head}");
    assert!(
        anchor.get("hash_matches").is_none(),
        "only when asked: {anchor}"
    );
    let me = server.get_json_as(&owner, "/v1/auth/me").await;
    let org = me["org_id"].as_str().expect("org_id").to_owned();
    let today = chrono::Utc::now().date_naive();
    let ask = |query: String| {
        let server = &server;
        async move {
            server
                .client
                .get(server.url(&format!("/v1/audit/verify?{query}")))
                .send()
                .await
                .expect("sent")
        }
    };
    // An auditor's copy of the head: matches, or does not.
    let upper = head.to_uppercase();
    for (expected, matches) in [
        (head.as_str(), true),
        (upper.as_str(), true),
        ("00ff", false),
    ] {
        let resp = ask(format!(
            "tenant_id={org}&date={today}&expected_head_hash={expected}"
        ))
        .await;
        assert_eq!(resp.status().as_u16(), 200);
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["hash_matches"], matches, "{expected}: {body}");
    }
    // The day before the organisation existed, a day to come, an unknown
    // organisation: no anchor.
    let yesterday = today.pred_opt().expect("yesterday");
    let tomorrow = today.succ_opt().expect("tomorrow");
    let stranger = uuid::Uuid::new_v4();
    for query in [
        format!("tenant_id={org}&date={yesterday}"),
        format!("tenant_id={org}&date={tomorrow}"),
        format!("tenant_id={stranger}&date={today}"),
    ] {
        let body = expect_error(ask(query.clone()).await, 404).await;
        assert_eq!(body["code"], "not_found", "{query}");
    }
    // The reference's required parameters, each named when wrong.
    for (query, needle) in [
        (format!("date={today}"), "tenant_id"),
        (format!("tenant_id={org}"), "date"),
        (format!("tenant_id=acme&date={today}"), "tenant_id"),
        (format!("tenant_id={org}&date=yesterday"), "date"),
        (
            format!("tenant_id={org}&date={today}&expected_head_hash=xyz"),
            "expected_head_hash",
        ),
    ] {
        let body = expect_error(ask(query.clone()).await, 400).await;
        let text = body["error"].as_str().unwrap_or_default();
        assert!(text.contains(needle), "{query}: {body}");
    }
}

#[tokio::test]
async fn verification_finds_an_edited_row_and_a_deleted_row() {
    let server = TestServer::start().await;
    let owner = server.session_token().await;
    for name in ["a", "b", "c"] {
        server
            .post_as(&owner, "/v1/projects", &json!({"name": name}))
            .await;
    }
    let verdict = server.audit_verify(&owner).await;
    assert_eq!(verdict["intact"], true, "{verdict}");
    assert_eq!(verdict["row_count"], 4, "{verdict}");
    assert_eq!(verdict["broken_at"], Value::Null, "{verdict}");

    // Someone with the database file edits an entry.
    let db = rusqlite::Connection::open(db_path(&server)).expect("open the database");
    let ids: Vec<i64> = db
        .prepare("SELECT id FROM audit_log ORDER BY id")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("ids");
    db.execute(
        "UPDATE audit_log SET target = 'someone-else' WHERE id = ?1",
        [ids[2]],
    )
    .expect("tamper");
    let verdict = server.audit_verify(&owner).await;
    assert_eq!(verdict["intact"], false);
    assert_eq!(verdict["broken_at"], ids[2]);

    // Removing the edited entry instead breaks the chain at the next one.
    db.execute("DELETE FROM audit_log WHERE id = ?1", [ids[2]])
        .expect("delete");
    let verdict = server.audit_verify(&owner).await;
    assert_eq!(verdict["intact"], false);
    assert_eq!(verdict["broken_at"], ids[3], "the entry after the gap");
}

/// Makes the audit log refuse entries matching `condition` (SQL on the new
/// row, `NEW`), as anyone with the database file could; returns the
/// connection, which can drop the trigger again.
fn refuse_entries(server: &TestServer, condition: &str) -> rusqlite::Connection {
    let db = rusqlite::Connection::open(db_path(server)).expect("open the database");
    db.busy_timeout(std::time::Duration::from_secs(10))
        .expect("busy timeout");
    db.execute_batch(&format!(
        "CREATE TRIGGER refuse_entries BEFORE INSERT ON audit_log WHEN {condition} \
         BEGIN SELECT RAISE(ABORT, 'the audit log refuses this entry'); END;"
    ))
    .expect("trigger");
    db
}

fn actions(log: &Value) -> Vec<String> {
    log["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["action"].as_str().expect("action").to_owned())
        .collect()
}

async fn project_names(server: &TestServer, session: &str) -> Vec<String> {
    server.get_json_as(session, "/v1/projects").await["projects"]
        .as_array()
        .expect("projects")
        .iter()
        .map(|p| p["name"].as_str().expect("name").to_owned())
        .collect()
}

#[tokio::test]
async fn a_change_and_its_entry_commit_together_or_not_at_all() {
    let server = TestServer::start().await;
    let owner = server.session_token().await;
    let key: Value = server
        .post_as(&owner, "/v1/apikeys", &json!({"name": "ci"}))
        .await
        .json()
        .await
        .expect("key");
    let key_id = key["id"].as_str().expect("id");
    let secret = key["key"].as_str().expect("secret");
    let db = refuse_entries(
        &server,
        &format!("instr(NEW.details, 'doomed') > 0 OR NEW.target = '{key_id}'"),
    );

    // The entry cannot be written, so the change is not made either.
    let resp = server
        .post_as(&owner, "/v1/projects", &json!({"name": "doomed"}))
        .await;
    expect_error(resp, 500).await;
    assert_eq!(project_names(&server, &owner).await, ["default"]);
    let resp = server
        .client
        .delete(server.url(&format!("/v1/apikeys/{key_id}")))
        .bearer_auth(&owner)
        .send()
        .await
        .expect("revoke sent");
    expect_error(resp, 500).await;
    assert_eq!(
        server.get_as(secret, "/v1/traces").await.status().as_u16(),
        200,
        "a revoke that was not recorded did not happen"
    );
    // Other changes go on, each with its entry.
    let resp = server
        .post_as(&owner, "/v1/projects", &json!({"name": "kept"}))
        .await;
    assert_eq!(resp.status().as_u16(), 201);
    let log = entries(&server, &owner, "").await;
    assert_eq!(
        actions(&log),
        ["project.create", "apikey.create", "auth.login"]
    );
    assert_eq!(log["entries"][0]["details"]["name"], "kept");

    // Once entries can be written again, the same changes are made and recorded.
    db.execute_batch("DROP TRIGGER refuse_entries")
        .expect("drop trigger");
    let resp = server
        .client
        .delete(server.url(&format!("/v1/apikeys/{key_id}")))
        .bearer_auth(&owner)
        .send()
        .await
        .expect("revoke sent");
    assert_eq!(resp.status().as_u16(), 204);
    assert_eq!(
        server.get_as(secret, "/v1/traces").await.status().as_u16(),
        401
    );
    let resp = server
        .post_as(&owner, "/v1/projects", &json!({"name": "doomed"}))
        .await;
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(
        project_names(&server, &owner).await,
        ["default", "kept", "doomed"]
    );
    let log = entries(&server, &owner, "").await;
    assert_eq!(
        actions(&log),
        [
            "project.create",
            "apikey.revoke",
            "project.create",
            "apikey.create",
            "auth.login"
        ]
    );
    assert_eq!(log["entries"][1]["target"], key_id);
    let verdict = server.audit_verify(&owner).await;
    assert_eq!(
        (
            &verdict["intact"],
            &verdict["row_count"],
            &verdict["broken_at"]
        ),
        (&json!(true), &json!(5), &Value::Null),
        "{verdict}"
    );
}

#[tokio::test]
async fn the_chain_holds_under_concurrent_changes_from_the_api_and_the_operator() {
    const PROJECTS: usize = 60;
    const OPERATOR_USERS: usize = 6;
    let server = TestServer::start().await;
    let owner = server.session_token().await;

    let operator: Vec<_> = (0..OPERATOR_USERS)
        .map(|i| {
            let config = server.dir.path().join("trulayer.toml");
            tokio::task::spawn_blocking(move || {
                crate::admin_cli::admin_at(
                    &config,
                    &[
                        "create-user",
                        "--org",
                        "default",
                        "--email",
                        &format!("op{i}@example.com"),
                        "--password",
                        "long enough pw",
                        "--role",
                        "viewer",
                    ],
                )
            })
        })
        .collect();
    let api: Vec<_> = (0..PROJECTS)
        .map(|i| {
            let (client, url, owner) = (
                server.client.clone(),
                server.url("/v1/projects"),
                owner.clone(),
            );
            tokio::spawn(async move {
                client
                    .post(url)
                    .bearer_auth(owner)
                    .json(&json!({"name": format!("p{i}")}))
                    .send()
                    .await
                    .expect("request sent")
                    .status()
                    .as_u16()
            })
        })
        .collect();
    for status in api {
        assert_eq!(status.await.expect("task"), 201);
    }
    for user in operator {
        user.await.expect("task");
    }

    let log = entries(&server, &owner, "?limit=200").await;
    let all = actions(&log);
    let count = |action: &str| all.iter().filter(|a| *a == action).count();
    assert_eq!(count("project.create"), PROJECTS);
    assert_eq!(count("user.create"), OPERATOR_USERS);
    assert_eq!(all.len(), PROJECTS + OPERATOR_USERS + 1, "and the login");
    let verdict = server.audit_verify(&owner).await;
    assert_eq!(
        (
            &verdict["intact"],
            &verdict["row_count"],
            &verdict["broken_at"]
        ),
        (
            &json!(true),
            &json!(PROJECTS + OPERATOR_USERS + 1),
            &Value::Null
        ),
        "{verdict}"
    );
}
