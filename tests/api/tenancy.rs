//! Tenancy over HTTP: logins and sessions (bearer and cookie), CSRF on the
//! cookie, users and roles, projects (paging, archiving, retention), API keys
//! (scopes, expiry, revocation, rotation) and the walls between tenants.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use reqwest::header::{COOKIE, RETRY_AFTER, SET_COOKIE};
use reqwest::{Method, Response};
use serde_json::{json, Value};

use trulayer_server::auth::{hash_api_key, hash_password, visible_prefix};
use trulayer_server::store::{NewApiKey, DB_FILE};

use crate::common::{sample_trace, TestServer, PASSWORD};

/// The first-start owner the harness configures (`[init] admin_email`).
const OWNER: &str = "owner@example.com";
const USER_PASSWORD: &str = "member-password-42";
const NEW_PASSWORD: &str = "a-brand-new-password";
const SESSION_COOKIE: &str = "trulayer_session";

const OTHER_KEY: &str = "tl_tenancy_other_0123456789abc";
const OTHER_OWNER: &str = "owner@other.example";
const OTHER_PASSWORD: &str = "other-tenant-password";

/// How a request authenticates.
#[derive(Clone, Copy)]
enum As<'a> {
    Anonymous,
    Bearer(&'a str),
    Cookie(&'a str),
}

async fn call(
    server: &TestServer,
    method: &str,
    path: &str,
    auth: As<'_>,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Response {
    let method = Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = server.client.request(method, server.url(path));
    match auth {
        As::Anonymous => {}
        As::Bearer(token) => req = req.bearer_auth(token),
        As::Cookie(token) => req = req.header(COOKIE, format!("{SESSION_COOKIE}={token}")),
    }
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    if let Some(body) = body {
        req = req.json(body);
    }
    req.send().await.expect("request sent")
}

async fn get(server: &TestServer, token: &str, path: &str) -> Response {
    call(server, "GET", path, As::Bearer(token), &[], None).await
}

async fn post(server: &TestServer, token: &str, path: &str, body: &Value) -> Response {
    call(server, "POST", path, As::Bearer(token), &[], Some(body)).await
}

/// A POST without a body (logout, archive, rotate).
async fn post_empty(server: &TestServer, token: &str, path: &str) -> Response {
    call(server, "POST", path, As::Bearer(token), &[], None).await
}

async fn patch(server: &TestServer, token: &str, path: &str, body: &Value) -> Response {
    call(server, "PATCH", path, As::Bearer(token), &[], Some(body)).await
}

async fn delete(server: &TestServer, token: &str, path: &str) -> Response {
    call(server, "DELETE", path, As::Bearer(token), &[], None).await
}

/// The status must be `status`; returns the JSON body (`Null` when empty).
async fn expect_status(resp: Response, status: u16, what: &str) -> Value {
    let got = resp.status().as_u16();
    let text = resp.text().await.expect("body read");
    assert_eq!(got, status, "{what}: answered {got} with {text}");
    if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"))
    }
}

/// An error of `status` in the shape `{"error","code","request_id"}`, the
/// request id matching the header; returns the body.
async fn expect_failure(resp: Response, status: u16, what: &str) -> Value {
    let header = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = expect_status(resp, status, what).await;
    assert!(body["error"].is_string(), "{what}: no error text: {body}");
    assert!(body["code"].is_string(), "{what}: no code: {body}");
    assert_eq!(
        body["request_id"].as_str(),
        header.as_deref(),
        "{what}: request id of body and header: {body}"
    );
    body
}

/// Like [`expect_failure`], with the given `code`.
async fn expect_code(resp: Response, status: u16, code: &str, what: &str) -> Value {
    let body = expect_failure(resp, status, what).await;
    assert_eq!(body["code"], code, "{what}: {body}");
    body
}

/// An object's `id` as it goes into a path or a reference.
fn id(v: &Value) -> String {
    match &v["id"] {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => panic!("no id in {v}"),
    }
}

fn assert_fields(v: &Value, fields: &[&str], what: &str) {
    for field in fields {
        assert!(v.get(*field).is_some(), "{what}: no {field:?} in {v}");
    }
}

fn assert_rfc3339(v: &Value, what: &str) -> chrono::DateTime<chrono::FixedOffset> {
    let text = v
        .as_str()
        .unwrap_or_else(|| panic!("{what}: not a string: {v}"));
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{what}: not RFC 3339 ({e}): {text}"))
}

async fn login(server: &TestServer, email: &str, password: &str) -> Response {
    let body = json!({"email": email, "password": password});
    call(
        server,
        "POST",
        "/v1/auth/login",
        As::Anonymous,
        &[],
        Some(&body),
    )
    .await
}

/// Logs in, which must succeed; returns the session token.
async fn session(server: &TestServer, email: &str, password: &str) -> String {
    let body = expect_status(login(server, email, password).await, 200, "login").await;
    let token = body["token"].as_str().expect("token").to_owned();
    assert!(token.starts_with("tls_"), "session token: {body}");
    token
}

async fn owner_session(server: &TestServer) -> String {
    session(server, OWNER, PASSWORD).await
}

/// Has `owner` create a user with [`USER_PASSWORD`]; returns the user.
async fn add_user(server: &TestServer, owner: &str, email: &str, role: &str) -> Value {
    let body = json!({"email": email, "password": USER_PASSWORD, "role": role});
    expect_status(
        post(server, owner, "/v1/users", &body).await,
        201,
        "create user",
    )
    .await
}

/// Creates a user of `role` and logs them in; returns the user and session.
async fn user_session(
    server: &TestServer,
    owner: &str,
    email: &str,
    role: &str,
) -> (Value, String) {
    let user = add_user(server, owner, email, role).await;
    let token = session(server, email, USER_PASSWORD).await;
    (user, token)
}

async fn add_project(server: &TestServer, token: &str, name: &str) -> Value {
    expect_status(
        post(server, token, "/v1/projects", &json!({"name": name})).await,
        201,
        "create project",
    )
    .await
}

async fn add_key(server: &TestServer, token: &str, body: &Value) -> Value {
    expect_status(
        post(server, token, "/v1/apikeys", body).await,
        201,
        "create key",
    )
    .await
}

fn secret(key: &Value) -> String {
    let secret = key["key"].as_str().expect("key secret").to_owned();
    assert!(secret.starts_with("tl_"), "key: {key}");
    secret
}

/// The projects listed by `path` (which must answer 200).
async fn projects(server: &TestServer, token: &str, path: &str) -> Vec<Value> {
    let body = expect_status(get(server, token, path).await, 200, path).await;
    body["projects"]
        .as_array()
        .unwrap_or_else(|| panic!("{path}: no projects in {body}"))
        .clone()
}

async fn users(server: &TestServer, token: &str) -> Vec<Value> {
    let body = expect_status(get(server, token, "/v1/users").await, 200, "list users").await;
    body["users"]
        .as_array()
        .unwrap_or_else(|| panic!("no users in {body}"))
        .clone()
}

async fn api_keys(server: &TestServer, token: &str) -> (Vec<Value>, String) {
    let resp = get(server, token, "/v1/apikeys").await;
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    assert_eq!(status, 200, "list keys: {text}");
    let body: Value = serde_json::from_str(&text).expect("JSON");
    // The reference answers a bare array of APIKey.
    let keys = body
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {body}"))
        .clone();
    (keys, text)
}

fn emails(users: &[Value]) -> HashSet<String> {
    users
        .iter()
        .map(|u| u["email"].as_str().expect("email").to_owned())
        .collect()
}

async fn me_status(server: &TestServer, auth: As<'_>) -> u16 {
    call(server, "GET", "/v1/auth/me", auth, &[], None)
        .await
        .status()
        .as_u16()
}

/// A second tenant with its own project, API key ([`OTHER_KEY`]) and owner
/// ([`OTHER_OWNER`] / [`OTHER_PASSWORD`]). The store has no user method, so
/// the owner is inserted into the database directly.
async fn other_tenant(server: &TestServer) {
    let store = server.running().store().clone();
    let (tenant, project) = store
        .create_tenant(
            "other org".into(),
            "theirs".into(),
            trulayer_server::store::Actor::operator(),
        )
        .await
        .expect("tenant");
    store
        .create_api_key(
            tenant,
            NewApiKey {
                project_id: project,
                name: "other".into(),
                prefix: visible_prefix(OTHER_KEY).into(),
                key_hash: hash_api_key(OTHER_KEY),
                expires_at: None,
                scopes: Vec::new(),
            },
            trulayer_server::store::Actor::operator(),
        )
        .await
        .expect("key");
    let db = server.dir.path().join("data").join(DB_FILE);
    tokio::task::spawn_blocking(move || {
        let hash = hash_password(OTHER_PASSWORD).expect("hash");
        let conn = rusqlite::Connection::open(db).expect("open the database");
        conn.busy_timeout(Duration::from_secs(10))
            .expect("busy timeout");
        conn.execute(
            "INSERT INTO users (uuid, tenant_id, email, password_hash, role, created_at) \
             VALUES (?1, ?2, ?3, ?4, 'owner', ?5)",
            rusqlite::params![
                uuid::Uuid::now_v7().to_string(),
                tenant,
                OTHER_OWNER,
                hash,
                chrono::Utc::now().timestamp_micros()
            ],
        )
        .expect("insert the other tenant's owner");
    })
    .await
    .expect("insert task");
}

/// A one-span OTLP JSON request for `trace_hex`.
fn otlp_request(trace_hex: &str) -> Value {
    json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "tenancy"}}]},
        "scopeSpans": [{"scope": {"name": "tenancy"}, "spans": [{
            "traceId": trace_hex,
            "spanId": "1111111111111111",
            "name": "otlp-span",
            "kind": 1,
            "startTimeUnixNano": "1772359200000000000",
            "endTimeUnixNano": "1772359201000000000"
        }]}]
    }]})
}

fn trace_in(project: &str, name: &str) -> Value {
    let mut t = sample_trace(name);
    t["project_id"] = json!(project);
    t
}

// ---------------------------------------------------------------- auth

#[tokio::test]
async fn login_sets_a_strict_httponly_cookie_and_the_token_works_as_bearer() {
    let server = TestServer::start().await;
    let resp = login(&server, OWNER, PASSWORD).await;
    let cookies: Vec<String> = resp
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_owned)
        .collect();
    let body = expect_status(resp, 200, "login").await;
    let token = body["token"].as_str().expect("token").to_owned();
    assert!(token.starts_with("tls_"), "{body}");
    let expires = assert_rfc3339(&body["expires_at"], "expires_at");
    assert!(
        expires > chrono::Utc::now(),
        "expires in the future: {body}"
    );
    let user = &body["user"];
    assert_fields(user, &["id", "email", "role", "org_id"], "login user");
    assert_eq!(user["email"], OWNER);
    assert_eq!(user["role"], "owner");
    assert!(!user["id"].is_null() && !user["org_id"].is_null(), "{body}");
    assert!(user.get("password_hash").is_none(), "{body}");

    let cookie = cookies
        .iter()
        .find(|c| c.starts_with(&format!("{SESSION_COOKIE}=")))
        .unwrap_or_else(|| panic!("no session cookie in {cookies:?}"));
    let mut parts = cookie.split(';').map(str::trim);
    assert_eq!(
        parts.next(),
        Some(format!("{SESSION_COOKIE}={token}").as_str()),
        "the cookie carries the token: {cookie}"
    );
    let attributes: Vec<String> = parts.map(str::to_ascii_lowercase).collect();
    for wanted in ["httponly", "samesite=strict", "path=/"] {
        assert!(
            attributes.iter().any(|a| a == wanted),
            "{wanted} missing: {cookie}"
        );
    }
    assert!(
        !attributes.iter().any(|a| a == "secure"),
        "Secure over plain HTTP: {cookie}"
    );

    for (what, auth) in [
        ("bearer", As::Bearer(&token)),
        ("cookie", As::Cookie(&token)),
    ] {
        let me = expect_status(
            call(&server, "GET", "/v1/auth/me", auth, &[], None).await,
            200,
            what,
        )
        .await;
        assert_fields(&me, &["id", "email", "role", "org_id", "org_name"], what);
        assert_eq!(me["email"], OWNER, "{what}");
        assert_eq!(me["role"], "owner", "{what}");
        assert_eq!(me["id"], user["id"], "{what}");
        assert_eq!(me["org_id"], user["org_id"], "{what}");
        assert_eq!(me["org_name"], "default", "{what}");
    }
    server.stop().await;
}

#[tokio::test]
async fn wrong_password_and_unknown_email_get_the_same_401() {
    let server = TestServer::start().await;
    let wrong = expect_code(
        login(&server, OWNER, "not-the-password").await,
        401,
        "invalid_credentials",
        "wrong password",
    )
    .await;
    let unknown = expect_code(
        login(&server, "nobody@example.com", PASSWORD).await,
        401,
        "invalid_credentials",
        "unknown email",
    )
    .await;
    let without_id = |mut v: Value| {
        v.as_object_mut().expect("object").remove("request_id");
        v
    };
    assert_eq!(without_id(wrong), without_id(unknown));
    server.stop().await;
}

#[tokio::test]
async fn five_failed_logins_lock_the_email_with_429_and_retry_after() {
    let server = TestServer::start().await;
    let owner = owner_session(&server).await;
    add_user(&server, &owner, "member@example.com", "member").await;
    for i in 0..5 {
        expect_code(
            login(&server, OWNER, &format!("wrong-password-{i}")).await,
            401,
            "invalid_credentials",
            &format!("failed login {}", i + 1),
        )
        .await;
    }
    let resp = login(&server, OWNER, PASSWORD).await;
    let retry = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    expect_code(
        resp,
        429,
        "too_many_attempts",
        "sixth login, right password",
    )
    .await;
    let retry = retry.expect("Retry-After header");
    match retry.trim().parse::<u64>() {
        Ok(seconds) => assert!((1..=900).contains(&seconds), "Retry-After: {retry}"),
        Err(_) => assert!(!retry.trim().is_empty(), "Retry-After: {retry:?}"),
    }
    // Only that email is locked.
    session(&server, "member@example.com", USER_PASSWORD).await;
    server.stop().await;
}

#[tokio::test]
async fn me_needs_a_session_not_an_api_key() {
    let server = TestServer::start().await;
    expect_code(
        get(&server, &server.key, "/v1/auth/me").await,
        403,
        "session_required",
        "me with an API key",
    )
    .await;
    expect_failure(
        call(&server, "GET", "/v1/auth/me", As::Anonymous, &[], None).await,
        401,
        "me without credentials",
    )
    .await;
    expect_code(
        get(&server, "tls_not_a_session_0123456789abcdef", "/v1/auth/me").await,
        401,
        "invalid_session",
        "me with a made-up session",
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn logout_ends_that_session_for_bearer_and_cookie() {
    let server = TestServer::start().await;
    let token = owner_session(&server).await;
    let other = owner_session(&server).await;
    assert_ne!(token, other, "each login is its own session");
    assert_eq!(me_status(&server, As::Cookie(&token)).await, 200);
    expect_status(
        post_empty(&server, &token, "/v1/auth/logout").await,
        204,
        "logout",
    )
    .await;
    expect_code(
        get(&server, &token, "/v1/auth/me").await,
        401,
        "invalid_session",
        "bearer after logout",
    )
    .await;
    expect_code(
        call(&server, "GET", "/v1/auth/me", As::Cookie(&token), &[], None).await,
        401,
        "invalid_session",
        "cookie after logout",
    )
    .await;
    assert_eq!(
        me_status(&server, As::Bearer(&other)).await,
        200,
        "the other session lives on"
    );
    server.stop().await;
}

#[tokio::test]
async fn changing_the_password_ends_every_session_and_the_new_one_logs_in() {
    let server = TestServer::start().await;
    let a = owner_session(&server).await;
    let b = owner_session(&server).await;
    expect_code(
        post(
            &server,
            &a,
            "/v1/auth/password",
            &json!({"current_password": "not-the-password", "new_password": NEW_PASSWORD}),
        )
        .await,
        401,
        "invalid_credentials",
        "wrong current password",
    )
    .await;
    expect_failure(
        post(
            &server,
            &a,
            "/v1/auth/password",
            &json!({"current_password": PASSWORD, "new_password": "short"}),
        )
        .await,
        422,
        "a new password of 5 characters",
    )
    .await;
    assert_eq!(
        me_status(&server, As::Bearer(&a)).await,
        200,
        "refusals change nothing"
    );

    expect_status(
        post(
            &server,
            &a,
            "/v1/auth/password",
            &json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD}),
        )
        .await,
        204,
        "password change",
    )
    .await;
    for (what, token) in [("the changing session", &a), ("another session", &b)] {
        expect_failure(get(&server, token, "/v1/auth/me").await, 401, what).await;
    }
    expect_code(
        login(&server, OWNER, PASSWORD).await,
        401,
        "invalid_credentials",
        "the old password",
    )
    .await;
    let c = session(&server, OWNER, NEW_PASSWORD).await;
    assert_eq!(me_status(&server, As::Bearer(&c)).await, 200);
    server.stop().await;
}

#[tokio::test]
async fn cookie_requests_that_change_state_need_a_same_origin_signal() {
    let server = TestServer::start().await;
    let token = owner_session(&server).await;
    let origin = server.url.clone();
    let cookie = As::Cookie(&token);

    let refused: [(&str, Vec<(&str, &str)>); 3] = [
        ("no Origin", vec![]),
        ("a foreign Origin", vec![("origin", "http://evil.example")]),
        (
            "Sec-Fetch-Site cross-site",
            vec![("sec-fetch-site", "cross-site")],
        ),
    ];
    for (what, headers) in &refused {
        let body = json!({"name": format!("refused {what}")});
        expect_code(
            call(
                &server,
                "POST",
                "/v1/projects",
                cookie,
                headers,
                Some(&body),
            )
            .await,
            403,
            "csrf_rejected",
            what,
        )
        .await;
    }
    let names: Vec<Value> = projects(&server, &server.key, "/v1/projects")
        .await
        .iter()
        .map(|p| p["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("default")], "nothing refused was made");

    // (what, extra headers, how authenticated)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, As<'a>);
    let accepted: [Case<'_>; 3] = [
        (
            "the server's Origin",
            vec![("origin", origin.as_str())],
            cookie,
        ),
        (
            "Sec-Fetch-Site same-origin",
            vec![("sec-fetch-site", "same-origin")],
            cookie,
        ),
        ("a bearer token alone", vec![], As::Bearer(&token)),
    ];
    for (i, (what, headers, auth)) in accepted.iter().enumerate() {
        let body = json!({"name": format!("accepted {i}")});
        expect_status(
            call(&server, "POST", "/v1/projects", *auth, headers, Some(&body)).await,
            201,
            what,
        )
        .await;
    }
    // Reading with the cookie alone is fine.
    expect_status(
        call(&server, "GET", "/v1/projects", cookie, &[], None).await,
        200,
        "GET with the cookie",
    )
    .await;

    // PATCH and DELETE are held to the same rule.
    let member = add_user(&server, &token, "member@example.com", "member").await;
    let path = format!("/v1/users/{}", id(&member));
    let role = json!({"role": "viewer"});
    expect_code(
        call(&server, "PATCH", &path, cookie, &[], Some(&role)).await,
        403,
        "csrf_rejected",
        "PATCH with the cookie alone",
    )
    .await;
    expect_code(
        call(&server, "DELETE", &path, cookie, &[], None).await,
        403,
        "csrf_rejected",
        "DELETE with the cookie alone",
    )
    .await;
    let listed = users(&server, &token).await;
    let still = listed
        .iter()
        .find(|u| u["email"] == "member@example.com")
        .expect("the member survives");
    assert_eq!(still["role"], "member");
    let same_origin = [("origin", origin.as_str())];
    let changed = expect_status(
        call(&server, "PATCH", &path, cookie, &same_origin, Some(&role)).await,
        200,
        "PATCH with the server's Origin",
    )
    .await;
    assert_eq!(changed["role"], "viewer");
    expect_status(
        call(&server, "DELETE", &path, cookie, &same_origin, None).await,
        204,
        "DELETE with the server's Origin",
    )
    .await;

    // Logging out is a state change too.
    expect_code(
        call(&server, "POST", "/v1/auth/logout", cookie, &[], None).await,
        403,
        "csrf_rejected",
        "logout with the cookie alone",
    )
    .await;
    assert_eq!(me_status(&server, cookie).await, 200, "still logged in");
    server.stop().await;
}

// ---------------------------------------------------------------- users

#[tokio::test]
async fn users_are_listed_for_their_own_tenant_only() {
    let server = TestServer::start().await;
    other_tenant(&server).await;
    let owner = owner_session(&server).await;
    add_user(&server, &owner, "member@example.com", "member").await;
    let (_, viewer) = user_session(&server, &owner, "viewer@example.com", "viewer").await;

    let mine = users(&server, &owner).await;
    assert_eq!(
        emails(&mine),
        HashSet::from([
            OWNER.to_string(),
            "member@example.com".to_string(),
            "viewer@example.com".to_string()
        ])
    );
    for u in &mine {
        assert_fields(u, &["id", "email", "role", "created_at"], "listed user");
        assert_rfc3339(&u["created_at"], "created_at");
        assert!(
            u.get("password_hash").is_none() && u.get("password").is_none(),
            "{u}"
        );
    }
    let owner_row = mine.iter().find(|u| u["email"] == OWNER).expect("owner");
    assert_eq!(owner_row["role"], "owner");

    // Any session may list; a viewer sees the same tenant.
    assert_eq!(emails(&users(&server, &viewer).await), emails(&mine));
    let theirs = session(&server, OTHER_OWNER, OTHER_PASSWORD).await;
    assert_eq!(
        emails(&users(&server, &theirs).await),
        HashSet::from([OTHER_OWNER.to_string()])
    );
    expect_code(
        get(&server, &server.key, "/v1/users").await,
        403,
        "session_required",
        "list users with an API key",
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn owners_create_users_and_duplicates_bad_roles_and_non_owners_are_refused() {
    let server = TestServer::start().await;
    let owner = owner_session(&server).await;
    let body = json!({"email": "member@example.com", "password": USER_PASSWORD, "role": "member"});
    let resp = post(&server, &owner, "/v1/users", &body).await;
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    assert_eq!(status, 201, "{text}");
    assert!(
        !text.contains(USER_PASSWORD),
        "the password is echoed: {text}"
    );
    let created: Value = serde_json::from_str(&text).expect("JSON");
    assert_fields(
        &created,
        &["id", "email", "role", "created_at"],
        "created user",
    );
    assert_eq!(created["email"], "member@example.com");
    assert_eq!(created["role"], "member");
    assert!(created.get("password_hash").is_none(), "{created}");
    let member = session(&server, "member@example.com", USER_PASSWORD).await;

    expect_failure(
        post(&server, &owner, "/v1/users", &body).await,
        409,
        "duplicate email",
    )
    .await;
    expect_failure(
        post(
            &server,
            &owner,
            "/v1/users",
            &json!({"email": "admin@example.com", "password": USER_PASSWORD, "role": "admin"}),
        )
        .await,
        422,
        "role admin",
    )
    .await;
    let (_, viewer) = user_session(&server, &owner, "viewer@example.com", "viewer").await;

    let another =
        json!({"email": "third@example.com", "password": USER_PASSWORD, "role": "viewer"});
    for (what, token) in [("member", &member), ("viewer", &viewer)] {
        expect_code(
            post(&server, token, "/v1/users", &another).await,
            403,
            "forbidden_role",
            what,
        )
        .await;
    }
    expect_code(
        post(&server, &server.key, "/v1/users", &another).await,
        403,
        "session_required",
        "create user with an API key",
    )
    .await;
    assert_eq!(users(&server, &owner).await.len(), 3, "no third user");
    server.stop().await;
}

#[tokio::test]
async fn roles_change_and_the_last_owner_cannot_be_demoted_or_deleted() {
    let server = TestServer::start().await;
    let a = owner_session(&server).await;
    let me: Value = expect_status(get(&server, &a, "/v1/auth/me").await, 200, "me").await;
    let a_path = format!("/v1/users/{}", id(&me));
    let (b_user, b) = user_session(&server, &a, "second@example.com", "member").await;
    let b_path = format!("/v1/users/{}", id(&b_user));

    let changed = expect_status(
        patch(&server, &a, &b_path, &json!({"role": "viewer"})).await,
        200,
        "member to viewer",
    )
    .await;
    assert_eq!(changed["role"], "viewer");
    assert_eq!(changed["email"], "second@example.com");
    expect_failure(
        patch(&server, &a, &b_path, &json!({"role": "superuser"})).await,
        422,
        "role superuser",
    )
    .await;
    expect_code(
        patch(&server, &a, &a_path, &json!({"role": "member"})).await,
        409,
        "last_owner",
        "demote the only owner",
    )
    .await;
    expect_code(
        delete(&server, &a, &a_path).await,
        409,
        "last_owner",
        "delete the only owner",
    )
    .await;
    expect_code(
        patch(&server, &b, &a_path, &json!({"role": "viewer"})).await,
        403,
        "forbidden_role",
        "a viewer changes a role",
    )
    .await;

    // With a second owner the first may step down; then the second is last.
    let promoted = expect_status(
        patch(&server, &a, &b_path, &json!({"role": "owner"})).await,
        200,
        "viewer to owner",
    )
    .await;
    assert_eq!(promoted["role"], "owner");
    let stepped_down = expect_status(
        patch(&server, &a, &a_path, &json!({"role": "member"})).await,
        200,
        "an owner steps down beside another",
    )
    .await;
    assert_eq!(stepped_down["role"], "member");
    expect_code(
        patch(&server, &b, &b_path, &json!({"role": "viewer"})).await,
        409,
        "last_owner",
        "demote the new last owner",
    )
    .await;
    expect_code(
        delete(&server, &b, &b_path).await,
        409,
        "last_owner",
        "delete the new last owner",
    )
    .await;
    let listed = users(&server, &b).await;
    let owners: Vec<&Value> = listed.iter().filter(|u| u["role"] == "owner").collect();
    assert_eq!(owners.len(), 1, "{listed:?}");
    assert_eq!(owners[0]["email"], "second@example.com");
    server.stop().await;
}

#[tokio::test]
async fn deleting_a_user_ends_their_sessions_and_other_tenants_users_are_not_found() {
    let server = TestServer::start().await;
    other_tenant(&server).await;
    let owner = owner_session(&server).await;
    let (member, token) = user_session(&server, &owner, "leaving@example.com", "member").await;
    assert_eq!(me_status(&server, As::Bearer(&token)).await, 200);
    let path = format!("/v1/users/{}", id(&member));
    expect_status(delete(&server, &owner, &path).await, 204, "delete user").await;
    expect_failure(
        get(&server, &token, "/v1/auth/me").await,
        401,
        "a deleted user's session",
    )
    .await;
    assert!(!emails(&users(&server, &owner).await).contains("leaving@example.com"));
    expect_code(
        login(&server, "leaving@example.com", USER_PASSWORD).await,
        401,
        "invalid_credentials",
        "a deleted user logs in",
    )
    .await;

    let theirs = session(&server, OTHER_OWNER, OTHER_PASSWORD).await;
    let their_user = users(&server, &theirs).await.remove(0);
    let their_path = format!("/v1/users/{}", id(&their_user));
    expect_code(
        delete(&server, &owner, &their_path).await,
        404,
        "not_found",
        "delete another tenant's user",
    )
    .await;
    expect_code(
        patch(&server, &owner, &their_path, &json!({"role": "viewer"})).await,
        404,
        "not_found",
        "change another tenant's user",
    )
    .await;
    assert_eq!(me_status(&server, As::Bearer(&theirs)).await, 200);
    assert_eq!(users(&server, &theirs).await[0]["role"], "owner");
    server.stop().await;
}

// ---------------------------------------------------------------- projects

#[tokio::test]
async fn projects_are_listed_for_keys_and_sessions_with_every_field() {
    let server = TestServer::start().await;
    let owner = owner_session(&server).await;
    let (_, viewer) = user_session(&server, &owner, "viewer@example.com", "viewer").await;
    let by_key = projects(&server, &server.key, "/v1/projects").await;
    assert_eq!(by_key.len(), 1, "{by_key:?}");
    let p = &by_key[0];
    assert_fields(
        p,
        &[
            "id",
            "name",
            "slug",
            "archived",
            "archived_at",
            "retention_days_override",
            "created_at",
            "organization_id",
            "updated_at",
        ],
        "project",
    );
    assert_eq!(p["name"], "default");
    // The reference's Project names its organisation and when it changed.
    let me = server.get_json_as(&owner, "/v1/auth/me").await;
    assert_eq!(p["organization_id"], me["org_id"], "{me}");
    assert_eq!(p["updated_at"], p["created_at"]);
    assert_eq!(p["slug"], "default");
    assert_eq!(p["archived"], false);
    assert_eq!(p["archived_at"], Value::Null);
    assert_eq!(p["retention_days_override"], Value::Null);
    assert_rfc3339(&p["created_at"], "created_at");
    // Traces name their project by the same id.
    let trace = server.ingest(sample_trace("where")).await;
    let trace = server.get_json(&format!("/v1/traces/{trace}")).await;
    assert_eq!(trace["project_id"], p["id"], "{trace}");

    for (what, token) in [("owner", &owner), ("viewer", &viewer)] {
        assert_eq!(
            projects(&server, token, "/v1/projects").await,
            by_key,
            "{what}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn creating_a_project_derives_its_slug_and_refuses_duplicates_keys_and_viewers() {
    let server = TestServer::start().await;
    let owner = owner_session(&server).await;
    let created = add_project(&server, &owner, "RAG App").await;
    assert_eq!(created["name"], "RAG App");
    assert_eq!(created["slug"], "rag-app");
    assert_eq!(created["archived"], false);
    assert_eq!(created["archived_at"], Value::Null);
    assert_eq!(created["retention_days_override"], Value::Null);
    assert_rfc3339(&created["created_at"], "created_at");
    assert!(!created["id"].is_null(), "{created}");
    expect_failure(
        post(&server, &owner, "/v1/projects", &json!({"name": "RAG App"})).await,
        409,
        "duplicate name",
    )
    .await;

    let (_, member) = user_session(&server, &owner, "member@example.com", "member").await;
    let (_, viewer) = user_session(&server, &owner, "viewer@example.com", "viewer").await;
    add_project(&server, &member, "Member Made").await;
    expect_code(
        post(
            &server,
            &viewer,
            "/v1/projects",
            &json!({"name": "Viewer Made"}),
        )
        .await,
        403,
        "forbidden_role",
        "a viewer creates a project",
    )
    .await;
    expect_code(
        post(
            &server,
            &server.key,
            "/v1/projects",
            &json!({"name": "Key Made"}),
        )
        .await,
        403,
        "session_required",
        "an API key creates a project",
    )
    .await;
    let mut names: Vec<String> = projects(&server, &server.key, "/v1/projects")
        .await
        .iter()
        .map(|p| p["name"].as_str().expect("name").to_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["Member Made", "RAG App", "default"]);
    // The new project takes traces by id and by slug.
    server.ingest(trace_in(&id(&created), "by id")).await;
    server.ingest(trace_in("rag-app", "by slug")).await;
    let listed = server
        .list_all(&format!("project_id={}", id(&created)), 50)
        .await;
    assert_eq!(listed.len(), 2);
    server.stop().await;
}

#[tokio::test]
async fn patching_a_project_renames_it_and_bounds_its_retention() {
    let server = TestServer::start().await;
    let owner = owner_session(&server).await;
    let project = add_project(&server, &owner, "Old Name").await;
    let path = format!("/v1/projects/{}", id(&project));

    let renamed = expect_status(
        patch(&server, &owner, &path, &json!({"name": "New Name"})).await,
        200,
        "rename",
    )
    .await;
    assert_eq!(renamed["name"], "New Name");
    assert_eq!(renamed["id"], project["id"]);
    assert_eq!(renamed["created_at"], project["created_at"]);
    let at = |p: &Value| {
        chrono::DateTime::parse_from_rfc3339(p["updated_at"].as_str().expect("updated_at"))
            .expect("RFC 3339")
    };
    assert!(
        at(&renamed) > at(&project),
        "a rename moves updated_at: {project} then {renamed}"
    );

    let set = expect_status(
        patch(
            &server,
            &owner,
            &path,
            &json!({"retention_days_override": 30}),
        )
        .await,
        200,
        "retention 30",
    )
    .await;
    assert_eq!(set["retention_days_override"], 30);
    for bad in [json!(0), json!(3651), json!(-1)] {
        expect_failure(
            patch(
                &server,
                &owner,
                &path,
                &json!({"retention_days_override": bad}),
            )
            .await,
            422,
            &format!("retention {bad}"),
        )
        .await;
    }
    // Leaving the field out keeps it; null clears it.
    let kept = expect_status(
        patch(&server, &owner, &path, &json!({"name": "Newer Name"})).await,
        200,
        "rename again",
    )
    .await;
    assert_eq!(kept["retention_days_override"], 30, "{kept}");
    let (_, member) = user_session(&server, &owner, "member@example.com", "member").await;
    let max = expect_status(
        patch(
            &server,
            &member,
            &path,
            &json!({"retention_days_override": 3650}),
        )
        .await,
        200,
        "a member sets retention 3650",
    )
    .await;
    assert_eq!(max["retention_days_override"], 3650);
    let cleared = expect_status(
        patch(
            &server,
            &owner,
            &path,
            &json!({"retention_days_override": null}),
        )
        .await,
        200,
        "clear retention",
    )
    .await;
    assert_eq!(cleared["retention_days_override"], Value::Null);

    let (_, viewer) = user_session(&server, &owner, "viewer@example.com", "viewer").await;
    expect_code(
        patch(&server, &viewer, &path, &json!({"name": "Viewer Name"})).await,
        403,
        "forbidden_role",
        "a viewer patches",
    )
    .await;
    expect_code(
        patch(&server, &server.key, &path, &json!({"name": "Key Name"})).await,
        403,
        "session_required",
        "an API key patches",
    )
    .await;
    let listed = projects(&server, &owner, "/v1/projects").await;
    let p = listed
        .iter()
        .find(|p| p["id"] == project["id"])
        .expect("listed");
    assert_eq!(p["name"], "Newer Name");
    assert_eq!(p["retention_days_override"], Value::Null);
    server.stop().await;
}

#[tokio::test]
async fn archiving_hides_a_project_unless_asked_and_keeps_one_active() {
    let server = TestServer::start().await;
    let owner = owner_session(&server).await;
    let default = projects(&server, &owner, "/v1/projects").await.remove(0);
    let second = add_project(&server, &owner, "Second").await;
    let (_, member) = user_session(&server, &owner, "member@example.com", "member").await;
    let archive = |p: &Value| format!("/v1/projects/{}/archive", id(p));
    let unarchive = |p: &Value| format!("/v1/projects/{}/unarchive", id(p));

    expect_code(
        post_empty(&server, &member, &archive(&second)).await,
        403,
        "forbidden_role",
        "a member archives",
    )
    .await;
    expect_code(
        post_empty(&server, &server.key, &archive(&second)).await,
        403,
        "session_required",
        "an API key archives",
    )
    .await;

    let archived = expect_status(
        post_empty(&server, &owner, &archive(&second)).await,
        200,
        "archive",
    )
    .await;
    assert_eq!(archived["archived"], true);
    assert_eq!(archived["id"], second["id"]);
    assert_rfc3339(&archived["archived_at"], "archived_at");

    let active = projects(&server, &owner, "/v1/projects").await;
    assert_eq!(active, vec![default.clone()], "the archived one is hidden");
    let everything = projects(&server, &owner, "/v1/projects?include_archived=true").await;
    assert_eq!(everything.len(), 2, "{everything:?}");
    let listed = everything
        .iter()
        .find(|p| p["id"] == second["id"])
        .expect("archived project listed on request");
    assert_eq!(listed["archived"], true);

    expect_code(
        post_empty(&server, &owner, &archive(&default)).await,
        409,
        "error.project.cannot_archive_last",
        "archive the last active project",
    )
    .await;

    expect_code(
        post_empty(&server, &member, &unarchive(&second)).await,
        403,
        "forbidden_role",
        "a member unarchives",
    )
    .await;
    let back = expect_status(
        post_empty(&server, &owner, &unarchive(&second)).await,
        200,
        "unarchive",
    )
    .await;
    assert_eq!(back["archived"], false);
    assert_eq!(back["archived_at"], Value::Null);
    assert_eq!(projects(&server, &owner, "/v1/projects").await.len(), 2);

    // Now the default may go, and the second is the last.
    expect_status(
        post_empty(&server, &owner, &archive(&default)).await,
        200,
        "archive the default beside another",
    )
    .await;
    expect_code(
        post_empty(&server, &owner, &archive(&second)).await,
        409,
        "error.project.cannot_archive_last",
        "archive the new last active project",
    )
    .await;
    let active = projects(&server, &owner, "/v1/projects").await;
    assert_eq!(active.len(), 1);
    assert_eq!(active[0]["id"], second["id"]);
    server.stop().await;
}

#[tokio::test]
async fn ingest_into_an_archived_project_is_refused_but_its_traces_stay_readable() {
    let server = TestServer::start().await;
    let owner = owner_session(&server).await;
    let project = add_project(&server, &owner, "Archived Soon").await;
    let pid = id(&project);
    let bound = secret(
        &add_key(
            &server,
            &owner,
            &json!({"name": "bound", "project_id": project["id"]}),
        )
        .await,
    );

    let before = server.ingest(trace_in(&pid, "before")).await;
    let by_key = sample_trace("bound before");
    expect_status(
        server.post_as(&bound, "/v1/ingest", &by_key).await,
        201,
        "ingest with the bound key",
    )
    .await;
    expect_status(
        post(
            &server,
            &bound,
            "/v1/otlp/traces",
            &otlp_request("d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4"),
        )
        .await,
        200,
        "OTLP with the bound key",
    )
    .await;
    assert_eq!(
        server
            .list_all(&format!("project_id={pid}"), 50)
            .await
            .len(),
        3
    );

    expect_status(
        post_empty(&server, &owner, &format!("/v1/projects/{pid}/archive")).await,
        200,
        "archive",
    )
    .await;

    let refusals = [
        (
            "ingest naming the project",
            server.post("/v1/ingest", &trace_in(&pid, "after")).await,
        ),
        (
            "ingest with the bound key",
            server
                .post_as(&bound, "/v1/ingest", &sample_trace("after"))
                .await,
        ),
        (
            "batch naming the project",
            server
                .post(
                    "/v1/ingest/batch",
                    &json!({"traces": [trace_in(&pid, "after")]}),
                )
                .await,
        ),
        (
            "OTLP with the bound key",
            post(
                &server,
                &bound,
                "/v1/otlp/traces",
                &otlp_request("e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5"),
            )
            .await,
        ),
    ];
    for (what, resp) in refusals {
        let body = expect_code(resp, 403, "error.project.archived", what).await;
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("error.project.archived")),
            "{what}: {body}"
        );
    }

    // What it held stays readable, by id and in the list.
    let listed = server.list_all(&format!("project_id={pid}"), 50).await;
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(listed.contains(&before));
    let trace = server.get_json(&format!("/v1/traces/{before}")).await;
    assert_eq!(trace["name"], "before");
    expect_status(
        get(&server, &bound, "/v1/traces").await,
        200,
        "read with the bound key",
    )
    .await;

    expect_status(
        post_empty(&server, &owner, &format!("/v1/projects/{pid}/unarchive")).await,
        200,
        "unarchive",
    )
    .await;
    server.ingest(trace_in(&pid, "after unarchive")).await;
    server.stop().await;
}

#[tokio::test]
async fn project_pages_neither_skip_nor_repeat() {
    let server = TestServer::start().await;
    let owner = owner_session(&server).await;
    for i in 0..7 {
        add_project(&server, &owner, &format!("Paged {i}")).await;
    }
    let all: HashSet<String> = projects(&server, &server.key, "/v1/projects")
        .await
        .iter()
        .map(id)
        .collect();
    assert_eq!(all.len(), 8);

    async fn walk(server: &TestServer, query: &str) -> Vec<String> {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..20 {
            let mut path = format!("/v1/projects?limit=3{query}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = expect_status(get(server, &server.key, &path).await, 200, &path).await;
            let items = page["projects"].as_array().expect("projects");
            assert!(items.len() <= 3, "{path}: {page}");
            seen.extend(items.iter().map(id));
            let more = page["has_more"]
                .as_bool()
                .unwrap_or_else(|| panic!("{path}: has_more: {page}"));
            if more {
                let next = page["next_cursor"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{path}: next_cursor: {page}"));
                cursor = Some(next.to_owned());
            } else {
                assert!(page["next_cursor"].is_null(), "{path}: {page}");
                return seen;
            }
        }
        panic!("paging never ended: {seen:?}");
    }

    let paged = walk(&server, "").await;
    let distinct: HashSet<String> = paged.iter().cloned().collect();
    assert_eq!(distinct.len(), paged.len(), "repeated: {paged:?}");
    assert_eq!(distinct, all, "skipped");

    // Archived ones join the pages only when asked for.
    let gone = paged[4].clone();
    expect_status(
        post_empty(&server, &owner, &format!("/v1/projects/{gone}/archive")).await,
        200,
        "archive",
    )
    .await;
    let active = walk(&server, "").await;
    assert_eq!(active.len(), 7);
    assert!(!active.contains(&gone));
    let with_archived = walk(&server, "&include_archived=true").await;
    assert_eq!(with_archived.iter().cloned().collect::<HashSet<_>>(), all);
    assert_eq!(with_archived.len(), 8);

    for bad in ["0", "201", "many"] {
        let resp = get(&server, &server.key, &format!("/v1/projects?limit={bad}")).await;
        let status = resp.status().as_u16();
        assert!(
            status == 400 || status == 422,
            "limit={bad}: {status} {}",
            resp.text().await.unwrap_or_default()
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn the_projects_list_pages_only_when_asked_and_names_a_parameter_that_does_not_fit() {
    let server = TestServer::start().await;
    let all = expect_status(get(&server, &server.key, "/v1/projects").await, 200, "all").await;
    assert_eq!(
        all.as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>()),
        Some(vec!["projects".to_owned()]),
        "no paging fields without limit or cursor: {all}"
    );
    let page = expect_status(
        get(&server, &server.key, "/v1/projects?limit=5").await,
        200,
        "a page",
    )
    .await;
    assert_eq!(page["has_more"], false, "{page}");
    assert!(page["next_cursor"].is_null(), "present, null: {page}");
    assert!(page.get("next_cursor").is_some(), "{page}");
    let owner = owner_session(&server).await;
    add_project(&server, &owner, "second").await;
    let audit = expect_status(
        get(&server, &owner, "/v1/audit-log?limit=1").await,
        200,
        "audit log",
    )
    .await;
    let theirs = audit["next_cursor"].as_str().expect("an audit cursor");
    for (query, parameter) in [
        ("include_archived=maybe".to_owned(), "include_archived: "),
        ("limit=0".to_owned(), "limit: "),
        (format!("cursor={theirs}"), "cursor: "),
    ] {
        let body = expect_code(
            get(&server, &server.key, &format!("/v1/projects?{query}")).await,
            400,
            "bad_request",
            &query,
        )
        .await;
        assert!(
            body["error"]
                .as_str()
                .unwrap_or_default()
                .starts_with(parameter),
            "{query}: {body}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn a_user_body_with_no_such_role_names_the_roles_there_are() {
    let server = TestServer::start().await;
    let owner = owner_session(&server).await;
    let body = expect_code(
        post(
            &server,
            &owner,
            "/v1/users",
            &json!({"email": "x@example.com", "password": USER_PASSWORD, "role": "Owner"}),
        )
        .await,
        422,
        "validation_error",
        "role Owner",
    )
    .await;
    assert_eq!(
        body["error"], "role: must be owner, member or viewer",
        "{body}"
    );
    assert_eq!(users(&server, &owner).await.len(), 1, "no user was made");
    server.stop().await;
}

#[tokio::test]
async fn the_document_describes_users_projects_keys_and_the_audit_log_field_by_field() {
    let server = TestServer::start().await;
    let doc = server.get_json("/v1/openapi.json").await;
    let schemas = &doc["components"]["schemas"];
    // As sets: the document's order is not the body's.
    let fields = |name: &str| -> BTreeSet<String> {
        schemas[name]["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("{name}: {}", schemas[name]))
            .keys()
            .cloned()
            .collect()
    };
    let set =
        |names: &[&str]| -> BTreeSet<String> { names.iter().map(|n| n.to_string()).collect() };
    assert_eq!(fields("User"), set(&["id", "email", "role", "created_at"]));
    assert_eq!(
        fields("CurrentUser"),
        set(&["id", "email", "role", "org_id", "org_name"])
    );
    assert_eq!(
        fields("LoginResponse"),
        set(&["token", "expires_at", "user"])
    );
    assert_eq!(
        fields("Project"),
        set(&[
            "id",
            "organization_id",
            "name",
            "slug",
            "archived",
            "archived_at",
            "retention_days_override",
            "created_at",
            "updated_at"
        ])
    );
    assert_eq!(
        fields("ProjectList"),
        set(&["projects", "has_more", "next_cursor"])
    );
    assert_eq!(
        fields("AuditPage"),
        set(&["entries", "next_cursor", "has_more"])
    );
    assert_eq!(
        fields("ApiKey"),
        set(&[
            "id",
            "name",
            "prefix",
            "scopes",
            "project_id",
            "created_at",
            "expires_at",
            "last_used_at",
            "revoked_at"
        ])
    );
    assert_eq!(
        schemas["Role"]["enum"],
        json!(["viewer", "member", "owner"])
    );
    let op = |method: &str, path: &str| doc["paths"][path][method].clone();
    let login = op("post", "/v1/auth/login");
    for (status, code) in [("401", "invalid_credentials"), ("429", "too_many_attempts")] {
        let text = login["responses"][status]["description"]
            .as_str()
            .unwrap_or_default();
        assert!(
            text.contains(&format!("`{code}`")),
            "login {status}: {text}"
        );
    }
    for (method, path, status, code) in [
        ("post", "/v1/users", "409", "conflict"),
        ("patch", "/v1/users/{id}", "409", "last_owner"),
        ("delete", "/v1/users/{id}", "409", "last_owner"),
        ("post", "/v1/apikeys/{id}/rotate", "409", "conflict"),
        ("patch", "/v1/projects/{id}", "402", "plan_upgrade_required"),
        ("get", "/v1/audit/verify", "400", "bad_request"),
        ("get", "/v1/audit/verify", "404", "not_found"),
    ] {
        let text = op(method, path)["responses"][status]["description"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            text.contains(&format!("`{code}`")),
            "{method} {path} {status}: {text}"
        );
    }
    let list = op("get", "/v1/projects");
    let listed: Vec<&str> = list["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(listed, ["include_archived", "limit", "cursor"]);
    // The keys list is a bare array, as the reference answers.
    let keys =
        &op("get", "/v1/apikeys")["responses"]["200"]["content"]["application/json"]["schema"];
    assert_eq!(keys["type"], "array", "{keys}");
    server.stop().await;
}

#[tokio::test]
async fn another_tenants_projects_keys_and_users_are_not_found() {
    let server = TestServer::start().await;
    other_tenant(&server).await;
    let owner = owner_session(&server).await;
    let theirs = session(&server, OTHER_OWNER, OTHER_PASSWORD).await;
    let their_project = projects(&server, OTHER_KEY, "/v1/projects").await.remove(0);
    let their_pid = id(&their_project);
    let (their_keys, _) = api_keys(&server, &theirs).await;
    assert_eq!(their_keys.len(), 1, "{their_keys:?}");
    let their_kid = id(&their_keys[0]);

    // Not listed to me.
    let mine = projects(&server, &owner, "/v1/projects?include_archived=true").await;
    assert!(mine.iter().all(|p| p["id"] != their_project["id"]));
    let (my_keys, _) = api_keys(&server, &owner).await;
    assert!(my_keys.iter().all(|k| k["id"] != their_keys[0]["id"]));

    let path = format!("/v1/projects/{their_pid}");
    expect_code(
        patch(&server, &owner, &path, &json!({"name": "mine now"})).await,
        404,
        "not_found",
        "patch their project",
    )
    .await;
    for action in ["archive", "unarchive"] {
        expect_code(
            post_empty(&server, &owner, &format!("{path}/{action}")).await,
            404,
            "not_found",
            action,
        )
        .await;
    }
    expect_code(
        delete(&server, &owner, &format!("/v1/apikeys/{their_kid}")).await,
        404,
        "not_found",
        "revoke their key",
    )
    .await;
    expect_code(
        post_empty(&server, &owner, &format!("/v1/apikeys/{their_kid}/rotate")).await,
        404,
        "not_found",
        "rotate their key",
    )
    .await;
    let resp = post(
        &server,
        &owner,
        "/v1/apikeys",
        &json!({"name": "into theirs", "project_id": their_project["id"]}),
    )
    .await;
    let status = resp.status().as_u16();
    assert!(
        status == 404 || status == 422,
        "a key for their project: {status} {}",
        resp.text().await.unwrap_or_default()
    );

    // Everything of theirs is as it was.
    assert_eq!(get(&server, OTHER_KEY, "/v1/traces").await.status(), 200);
    let after = projects(&server, OTHER_KEY, "/v1/projects").await;
    assert_eq!(after, vec![their_project]);
    assert_eq!(after[0]["archived"], false);
    server.stop().await;
}

// ---------------------------------------------------------------- API keys

#[tokio::test]
async fn created_keys_work_at_once_and_are_listed_without_their_secret() {
    let server = TestServer::start().await;
    let owner = owner_session(&server).await;
    let project = add_project(&server, &owner, "Keyed").await;
    let plain = add_key(&server, &owner, &json!({"name": "ci"})).await;
    assert_fields(
        &plain,
        &[
            "id",
            "name",
            "key",
            "prefix",
            "scopes",
            "project_id",
            "created_at",
            "expires_at",
        ],
        "created key",
    );
    assert_eq!(plain["name"], "ci");
    assert_eq!(plain["expires_at"], Value::Null);
    assert_rfc3339(&plain["created_at"], "created_at");
    let plain_secret = secret(&plain);
    let prefix = plain["prefix"].as_str().expect("prefix");
    assert!(
        !prefix.is_empty() && prefix.len() < plain_secret.len() && plain_secret.starts_with(prefix),
        "{plain}"
    );

    let expires = (chrono::Utc::now() + chrono::Duration::days(30))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let reader = json!({
        "name": "reader",
        "scopes": ["query"],
        "project_id": project["id"],
        "expires_at": expires
    });
    let scoped = add_key(&server, &owner, &reader).await;
    assert_eq!(scoped["scopes"], json!(["query"]));
    assert_eq!(scoped["project_id"], project["id"]);
    assert_eq!(
        assert_rfc3339(&scoped["expires_at"], "expires_at").timestamp(),
        assert_rfc3339(&json!(expires), "sent").timestamp()
    );
    let scoped_secret = secret(&scoped);
    assert_ne!(plain_secret, scoped_secret);

    // Both work at once.
    expect_status(
        get(&server, &plain_secret, "/v1/traces").await,
        200,
        "new key reads",
    )
    .await;
    expect_status(
        server
            .post_as(&plain_secret, "/v1/ingest", &sample_trace("new key"))
            .await,
        201,
        "new key ingests",
    )
    .await;
    expect_status(
        get(&server, &scoped_secret, "/v1/traces").await,
        200,
        "scoped key reads",
    )
    .await;

    let (keys, text) = api_keys(&server, &owner).await;
    assert_eq!(keys.len(), 3, "the initial key and two new ones: {keys:?}");
    for k in &keys {
        assert_fields(
            k,
            &[
                "id",
                "name",
                "prefix",
                "scopes",
                "project_id",
                "created_at",
                "expires_at",
                "last_used_at",
                "revoked_at",
            ],
            "listed key",
        );
        assert!(k.get("key").is_none(), "a key field in the list: {k}");
        assert_eq!(k["revoked_at"], Value::Null, "{k}");
    }
    for s in [
        plain_secret.as_str(),
        scoped_secret.as_str(),
        server.key.as_str(),
    ] {
        assert!(!text.contains(s), "the secret {s} is in the list: {text}");
    }
    let listed = keys
        .iter()
        .find(|k| k["id"] == scoped["id"])
        .expect("listed");
    assert_eq!(listed["prefix"], scoped["prefix"]);
    assert_eq!(listed["scopes"], json!(["query"]));

    // A member may make keys; a viewer may not; scopes are checked.
    let (_, member) = user_session(&server, &owner, "member@example.com", "member").await;
    add_key(&server, &member, &json!({"name": "member's"})).await;
    let (_, viewer) = user_session(&server, &owner, "viewer@example.com", "viewer").await;
    expect_code(
        post(
            &server,
            &viewer,
            "/v1/apikeys",
            &json!({"name": "viewer's"}),
        )
        .await,
        403,
        "forbidden_role",
        "a viewer makes a key",
    )
    .await;
    expect_failure(
        post(
            &server,
            &owner,
            "/v1/apikeys",
            &json!({"name": "bad", "scopes": ["admin"]}),
        )
        .await,
        422,
        "unknown scope",
    )
    .await;
    assert_eq!(api_keys(&server, &owner).await.0.len(), 4);
    server.stop().await;
}

#[tokio::test]
async fn revoked_keys_are_refused_and_show_revoked_at() {
    let server = TestServer::start().await;
    let owner = owner_session(&server).await;
    let key = add_key(&server, &owner, &json!({"name": "doomed"})).await;
    let key_secret = secret(&key);
    let path = format!("/v1/apikeys/{}", id(&key));
    expect_status(get(&server, &key_secret, "/v1/traces").await, 200, "before").await;

    let (_, member) = user_session(&server, &owner, "member@example.com", "member").await;
    expect_code(
        delete(&server, &member, &path).await,
        403,
        "forbidden_role",
        "a member revokes",
    )
    .await;
    expect_status(
        get(&server, &key_secret, "/v1/traces").await,
        200,
        "still valid",
    )
    .await;

    expect_status(delete(&server, &owner, &path).await, 204, "revoke").await;
    expect_code(
        get(&server, &key_secret, "/v1/traces").await,
        401,
        "invalid_api_key",
        "a revoked key reads",
    )
    .await;
    expect_code(
        server
            .post_as(&key_secret, "/v1/ingest", &sample_trace("x"))
            .await,
        401,
        "invalid_api_key",
        "a revoked key ingests",
    )
    .await;
    let (keys, _) = api_keys(&server, &owner).await;
    let listed = keys
        .iter()
        .find(|k| k["id"] == key["id"])
        .expect("still listed");
    assert_rfc3339(&listed["revoked_at"], "revoked_at");
    let initial = keys
        .iter()
        .find(|k| k["id"] != key["id"])
        .expect("initial key");
    assert_eq!(initial["revoked_at"], Value::Null);
    expect_status(
        get(&server, &server.key, "/v1/traces").await,
        200,
        "others unaffected",
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn rotation_replaces_the_secret_at_once() {
    let server = TestServer::start().await;
    let owner = owner_session(&server).await;
    let key = add_key(&server, &owner, &json!({"name": "rotating"})).await;
    let old = secret(&key);
    let path = format!("/v1/apikeys/{}/rotate", id(&key));

    let (_, member) = user_session(&server, &owner, "member@example.com", "member").await;
    expect_code(
        post_empty(&server, &member, &path).await,
        403,
        "forbidden_role",
        "a member rotates",
    )
    .await;

    let rotated = expect_status(post_empty(&server, &owner, &path).await, 200, "rotate").await;
    let new = secret(&rotated);
    assert_ne!(old, new);
    expect_code(
        get(&server, &old, "/v1/traces").await,
        401,
        "invalid_api_key",
        "the old secret",
    )
    .await;
    expect_status(
        get(&server, &new, "/v1/traces").await,
        200,
        "the new secret reads",
    )
    .await;
    expect_status(
        server
            .post_as(&new, "/v1/ingest", &sample_trace("rotated"))
            .await,
        201,
        "the new secret ingests",
    )
    .await;
    let (_, text) = api_keys(&server, &owner).await;
    assert!(!text.contains(&new), "the new secret is listed: {text}");
    server.stop().await;
}

#[tokio::test]
async fn a_key_past_its_expiry_answers_api_key_expired() {
    let server = TestServer::start().await;
    let owner = owner_session(&server).await;
    let at = chrono::Utc::now() + chrono::Duration::seconds(2);
    let at = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let key = add_key(&server, &owner, &json!({"name": "brief", "expires_at": at})).await;
    let key_secret = secret(&key);
    let expires = assert_rfc3339(&key["expires_at"], "expires_at");
    let wait =
        expires.signed_duration_since(chrono::Utc::now()) + chrono::Duration::milliseconds(500);
    if let Ok(wait) = wait.to_std() {
        tokio::time::sleep(wait).await;
    }
    expect_code(
        get(&server, &key_secret, "/v1/traces").await,
        401,
        "api_key_expired",
        "an expired key reads",
    )
    .await;
    expect_code(
        server
            .post_as(&key_secret, "/v1/ingest", &sample_trace("late"))
            .await,
        401,
        "api_key_expired",
        "an expired key ingests",
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn query_scoped_keys_read_but_cannot_ingest() {
    let server = TestServer::start().await;
    let owner = owner_session(&server).await;
    let existing = server.ingest(sample_trace("existing")).await;
    let reader = secret(
        &add_key(
            &server,
            &owner,
            &json!({"name": "reader", "scopes": ["query"]}),
        )
        .await,
    );

    for path in [
        "/v1/traces",
        "/v1/projects",
        &format!("/v1/traces/{existing}"),
    ] {
        expect_status(get(&server, &reader, path).await, 200, path).await;
    }
    let refusals = [
        (
            "/v1/ingest",
            server
                .post_as(&reader, "/v1/ingest", &sample_trace("no"))
                .await,
        ),
        (
            "/v1/ingest/batch",
            server
                .post_as(
                    &reader,
                    "/v1/ingest/batch",
                    &json!({"traces": [sample_trace("no")]}),
                )
                .await,
        ),
        (
            "/v1/otlp/traces",
            post(
                &server,
                &reader,
                "/v1/otlp/traces",
                &otlp_request("f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6"),
            )
            .await,
        ),
    ];
    for (what, resp) in refusals {
        expect_code(resp, 403, "scope_forbidden", what).await;
    }
    assert_eq!(
        server.list_all("", 50).await,
        vec![existing],
        "nothing stored"
    );
    server.stop().await;
}

#[tokio::test]
async fn management_routes_refuse_api_keys_with_session_required() {
    let server = TestServer::start().await;
    let owner = owner_session(&server).await;
    let member = add_user(&server, &owner, "member@example.com", "member").await;
    let project = add_project(&server, &owner, "Managed").await;
    let key = add_key(&server, &owner, &json!({"name": "managed"})).await;
    let (uid, pid, kid) = (id(&member), id(&project), id(&key));
    let cases: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", "/v1/auth/me".into(), None),
        (
            "POST",
            "/v1/auth/password".into(),
            Some(json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD})),
        ),
        ("GET", "/v1/users".into(), None),
        (
            "POST",
            "/v1/users".into(),
            Some(json!({"email": "x@example.com", "password": USER_PASSWORD, "role": "viewer"})),
        ),
        (
            "PATCH",
            format!("/v1/users/{uid}"),
            Some(json!({"role": "viewer"})),
        ),
        ("DELETE", format!("/v1/users/{uid}"), None),
        (
            "POST",
            "/v1/projects".into(),
            Some(json!({"name": "By Key"})),
        ),
        (
            "PATCH",
            format!("/v1/projects/{pid}"),
            Some(json!({"name": "By Key"})),
        ),
        ("POST", format!("/v1/projects/{pid}/archive"), None),
        ("POST", format!("/v1/projects/{pid}/unarchive"), None),
        ("GET", "/v1/apikeys".into(), None),
        (
            "POST",
            "/v1/apikeys".into(),
            Some(json!({"name": "by key"})),
        ),
        ("DELETE", format!("/v1/apikeys/{kid}"), None),
        ("POST", format!("/v1/apikeys/{kid}/rotate"), None),
    ];
    // Every kind of key: unscoped (the initial one) and each single scope.
    // All mismatches are gathered, then reported together.
    let query_key = json!({"name": "q", "scopes": ["query"]});
    let query = secret(&add_key(&server, &owner, &query_key).await);
    let ingest_key = json!({"name": "i", "scopes": ["ingest"]});
    let ingest = secret(&add_key(&server, &owner, &ingest_key).await);
    let mut wrong = Vec::new();
    for (kind, token) in [
        ("an unscoped key", server.key.as_str()),
        ("a query key", query.as_str()),
        ("an ingest key", ingest.as_str()),
    ] {
        for (method, path, body) in &cases {
            let what = format!("{method} {path} with {kind}");
            let resp = call(&server, method, path, As::Bearer(token), &[], body.as_ref()).await;
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            if status != 403 || body["code"] != "session_required" {
                wrong.push(format!("{what}: {status} {}", body["code"]));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "expected 403 session_required:\n{}",
        wrong.join("\n")
    );
    // Nothing changed.
    assert_eq!(users(&server, &owner).await.len(), 2);
    assert_eq!(projects(&server, &owner, "/v1/projects").await.len(), 2);
    let (keys, _) = api_keys(&server, &owner).await;
    assert_eq!(keys.len(), 4);
    assert!(keys.iter().all(|k| k["revoked_at"].is_null()));
    expect_status(
        get(&server, &secret(&key), "/v1/traces").await,
        200,
        "the key survives",
    )
    .await;
    session(&server, OWNER, PASSWORD).await;
    server.stop().await;
}

#[tokio::test]
async fn twenty_failed_logins_from_one_address_lock_that_address() {
    let server = TestServer::start().await;
    let owner = owner_session(&server).await;
    add_user(&server, &owner, "member@example.com", "member").await;
    // Four failures for each of five emails: no single account reaches five.
    for n in 0..20 {
        let email = format!("nobody-{}@example.com", n % 5);
        expect_code(
            login(&server, &email, "guess").await,
            401,
            "invalid_credentials",
            &format!("failure {}", n + 1),
        )
        .await;
    }
    // The address is locked now, even for an account with no failures.
    let resp = login(&server, "member@example.com", USER_PASSWORD).await;
    assert!(resp.headers().contains_key(RETRY_AFTER));
    expect_code(
        resp,
        429,
        "too_many_attempts",
        "21st attempt from 127.0.0.1",
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn an_expired_session_is_refused() {
    let server = TestServer::start().await;
    let token = owner_session(&server).await;
    assert_eq!(
        get(&server, &token, "/v1/auth/me").await.status().as_u16(),
        200
    );
    // Twelve hours pass for this session.
    let db = rusqlite::Connection::open(server.dir.path().join("data").join(DB_FILE))
        .expect("open the database");
    db.execute("UPDATE sessions SET expires_at = 1", [])
        .expect("age the session");
    expect_code(
        get(&server, &token, "/v1/auth/me").await,
        401,
        "invalid_session",
        "expired session",
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn a_keys_use_shows_as_last_used_at() {
    let server = TestServer::start().await;
    let owner = owner_session(&server).await;
    let before = server.get_json_as(&owner, "/v1/apikeys").await;
    assert_eq!(before[0]["last_used_at"], Value::Null);
    assert_eq!(server.get("/v1/traces").await.status().as_u16(), 200);
    let mut seen = Value::Null;
    for _ in 0..100 {
        let keys = server.get_json_as(&owner, "/v1/apikeys").await;
        seen = keys[0]["last_used_at"].clone();
        if !seen.is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let at = seen.as_str().expect("last_used_at is set after a use");
    assert!(at.ends_with('Z'), "{at}");
    server.stop().await;
}

#[tokio::test]
async fn an_owner_resets_a_users_password_which_ends_their_sessions() {
    let server = TestServer::start().await;
    let owner = owner_session(&server).await;
    let (member, member_token) =
        user_session(&server, &owner, "member@example.com", "member").await;
    let path = format!("/v1/users/{}", member["id"].as_str().expect("id"));
    // Only owners reset, and only to a password long enough.
    expect_failure(
        patch(
            &server,
            &member_token,
            &path,
            &json!({"password": "another-secret"}),
        )
        .await,
        403,
        "member resets",
    )
    .await;
    expect_failure(
        patch(&server, &owner, &path, &json!({"password": "short"})).await,
        422,
        "short password",
    )
    .await;
    expect_failure(
        patch(&server, &owner, &path, &json!({})).await,
        422,
        "nothing to change",
    )
    .await;
    expect_failure(
        patch(
            &server,
            &owner,
            &format!("/v1/users/{}", uuid::Uuid::new_v4()),
            &json!({"password": "another-secret"}),
        )
        .await,
        404,
        "unknown user",
    )
    .await;

    let body = expect_status(
        patch(
            &server,
            &owner,
            &path,
            &json!({"password": "another-secret"}),
        )
        .await,
        200,
        "reset",
    )
    .await;
    assert_eq!(body["role"], "member");
    // The member's session ended; the old password no longer works.
    assert_eq!(me_status(&server, As::Bearer(&member_token)).await, 401);
    expect_failure(
        login(&server, "member@example.com", USER_PASSWORD).await,
        401,
        "old password",
    )
    .await;
    session(&server, "member@example.com", "another-secret").await;
    // Role and password together.
    let body = expect_status(
        patch(
            &server,
            &owner,
            &path,
            &json!({"role": "viewer", "password": "third-secret-x"}),
        )
        .await,
        200,
        "both",
    )
    .await;
    assert_eq!(body["role"], "viewer");
    session(&server, "member@example.com", "third-secret-x").await;
}
