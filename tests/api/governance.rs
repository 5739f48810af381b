//! Saved filters of the trace list, a trace's remediation chain, the API's
//! deprecations, the sub-processor registry and its notice list, members'
//! key counts and leaving the organisation, and billing (none).

use reqwest::Method;
use serde_json::{json, Value};

use trulayer_server::auth::hash_password;
use trulayer_server::http::Role;
use trulayer_server::store::Actor;

use crate::common::{expect_error, expect_error_naming, sample_trace, TestServer};

async fn login(server: &TestServer, email: &str, password: &str) -> String {
    let resp = server
        .client
        .post(server.url("/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("login sent");
    assert_eq!(resp.status().as_u16(), 200, "login {email}");
    let body: Value = resp.json().await.expect("login JSON");
    body["token"].as_str().expect("token").to_owned()
}

/// A user of the first organisation with `role`, logged in: id and token.
async fn user(server: &TestServer, owner: &str, email: &str, role: &str) -> (String, String) {
    let resp = server
        .post_as(
            owner,
            "/v1/users",
            &json!({"email": email, "password": "a long password", "role": role}),
        )
        .await;
    assert_eq!(resp.status().as_u16(), 201, "create {email}");
    let created: Value = resp.json().await.expect("user");
    let id = created["id"].as_str().expect("id").to_owned();
    (id, login(server, email, "a long password").await)
}

/// The owner of a second organisation, logged in.
async fn other_owner(server: &TestServer) -> String {
    let store = server.running().store().clone();
    let (tenant, _) = store
        .create_tenant("other org".into(), "theirs".into(), Actor::operator())
        .await
        .expect("tenant");
    store
        .create_user(
            tenant,
            "boss@other.example".into(),
            hash_password("other password").expect("hash"),
            Role::Owner,
            Actor::operator(),
        )
        .await
        .expect("other owner");
    login(server, "boss@other.example", "other password").await
}

async fn send(
    server: &TestServer,
    method: Method,
    token: &str,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = server
        .client
        .request(method, server.url(path))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("sent")
}

#[tokio::test]
async fn saved_filters_are_shared_checked_and_kept_to_their_organisation() {
    let server = TestServer::start().await;
    let owner = server.session_token().await;
    let (member_id, member) = user(&server, &owner, "mia@example.com", "member").await;
    let (_, viewer) = user(&server, &owner, "vic@example.com", "viewer").await;
    let projects = server.get_json("/v1/projects").await;
    let project = projects["projects"][0]["id"]
        .as_str()
        .expect("project id")
        .to_owned();

    // A member saves a filter; the owner sees it in the same list.
    let resp = server
        .post_as(
            &member,
            "/v1/saved-filters",
            &json!({"project_id": project, "name": "  failing refunds ",
                    "filters": {"error": "true", "q": "refund", "latency_min": 5}}),
        )
        .await;
    assert_eq!(resp.status().as_u16(), 201);
    let saved: Value = resp.json().await.expect("saved filter");
    assert_eq!(saved["name"], "failing refunds");
    assert_eq!(saved["project_id"], project.as_str());
    assert_eq!(saved["created_by"], member_id.as_str());
    assert_eq!(
        saved["filters"],
        json!({"error": "true", "q": "refund", "latency_min": 5})
    );
    let me = server.get_json_as(&owner, "/v1/auth/me").await;
    assert_eq!(saved["tenant_id"], me["org_id"]);
    assert!(saved["created_at"].is_string() && saved["updated_at"].is_string());
    let id = saved["id"].as_str().expect("id").to_owned();
    for token in [&owner, &viewer] {
        let list = server
            .get_json_as(token, &format!("/v1/saved-filters?project_id={project}"))
            .await;
        assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");
        assert_eq!(list["items"][0]["id"], id.as_str());
    }
    // By slug too; another project has none.
    let list = server
        .get_json_as(&owner, "/v1/saved-filters?project_id=default")
        .await;
    assert_eq!(list["items"][0]["id"], id.as_str());
    let resp = server
        .post_as(&owner, "/v1/projects", &json!({"name": "elsewhere"}))
        .await;
    assert_eq!(resp.status().as_u16(), 201);
    let list = server
        .get_json_as(&owner, "/v1/saved-filters?project_id=elsewhere")
        .await;
    assert_eq!(list["items"], json!([]));
    let list = server
        .get_json_as(&owner, "/v1/saved-filters?project_id=nowhere")
        .await;
    assert_eq!(list["items"], json!([]));
    expect_error_naming(
        server.get_as(&owner, "/v1/saved-filters").await,
        400,
        &["project_id"],
    )
    .await;

    // A filter the trace list would refuse is refused, naming the parameter.
    let create = |filters: Value| json!({"project_id": project, "name": "bad", "filters": filters});
    for (filters, needle, code) in [
        (
            json!({"latency_min": -1}),
            "filters.latency_min",
            "bad_request",
        ),
        (json!({"error": "maybe"}), "filters.error", "bad_request"),
        (json!({"from": "soon"}), "filters.from", "bad_request"),
        (json!({"limit": 5}), "filters.limit", "bad_request"),
        (json!({"model": ["a", "b"]}), "filters.model", "bad_request"),
        (
            json!({"failure_type": "gremlins"}),
            "filters.failure_type",
            "bad_request",
        ),
        (
            json!({"tag_key": "env"}),
            "tag_value",
            "error.tags_filter_incomplete",
        ),
    ] {
        let body = expect_error_naming(
            server
                .post_as(&member, "/v1/saved-filters", &create(filters.clone()))
                .await,
            400,
            &[needle],
        )
        .await;
        assert_eq!(body["code"], code, "{filters}: {body}");
    }
    for name in ["", &"x".repeat(101)] {
        expect_error_naming(
            server
                .post_as(
                    &member,
                    "/v1/saved-filters",
                    &json!({"project_id": project, "name": name, "filters": {}}),
                )
                .await,
            400,
            &["name"],
        )
        .await;
    }
    expect_error(
        server
            .post_as(
                &member,
                "/v1/saved-filters",
                &json!({"project_id": project, "name": "x", "filters": "error=true"}),
            )
            .await,
        422,
    )
    .await;
    expect_error(
        server
            .post_as(
                &member,
                "/v1/saved-filters",
                &json!({"project_id": "nowhere", "name": "x", "filters": {}}),
            )
            .await,
        404,
    )
    .await;
    // Viewers read them only; API keys not at all.
    let body = expect_error(
        server
            .post_as(&viewer, "/v1/saved-filters", &create(json!({})))
            .await,
        403,
    )
    .await;
    assert_eq!(body["code"], "forbidden_role");
    let body = expect_error(
        server
            .get(&format!("/v1/saved-filters?project_id={project}"))
            .await,
        403,
    )
    .await;
    assert_eq!(body["code"], "session_required");

    // Changing it: the name, the filters (checked), both kept otherwise.
    let path = format!("/v1/saved-filters/{id}");
    let resp = send(
        &server,
        Method::PATCH,
        &member,
        &path,
        Some(json!({"name": "refunds"})),
    )
    .await;
    assert_eq!(resp.status().as_u16(), 200);
    let changed: Value = resp.json().await.expect("changed");
    assert_eq!(changed["name"], "refunds");
    assert_eq!(changed["filters"], saved["filters"]);
    let resp = send(
        &server,
        Method::PATCH,
        &member,
        &path,
        Some(json!({"filters": {"feedback": "bad"}})),
    )
    .await;
    assert_eq!(resp.status().as_u16(), 200);
    let changed: Value = resp.json().await.expect("changed");
    assert_eq!(changed["name"], "refunds");
    assert_eq!(changed["filters"], json!({"feedback": "bad"}));
    expect_error_naming(
        send(
            &server,
            Method::PATCH,
            &member,
            &path,
            Some(json!({"filters": {"feedback": "meh"}})),
        )
        .await,
        400,
        &["filters.feedback"],
    )
    .await;
    let unchanged: Value = send(&server, Method::PATCH, &member, &path, Some(json!({})))
        .await
        .json()
        .await
        .expect("unchanged");
    assert_eq!(unchanged["filters"], json!({"feedback": "bad"}));

    // Another organisation cannot see, change or delete it.
    let other = other_owner(&server).await;
    let list = server
        .get_json_as(&other, &format!("/v1/saved-filters?project_id={project}"))
        .await;
    assert_eq!(list["items"], json!([]));
    expect_error(
        send(
            &server,
            Method::PATCH,
            &other,
            &path,
            Some(json!({"name": "mine"})),
        )
        .await,
        404,
    )
    .await;
    expect_error(
        send(&server, Method::DELETE, &other, &path, None).await,
        404,
    )
    .await;
    for missing in [
        "/v1/saved-filters/not-a-uuid",
        "/v1/saved-filters/01890000-0000-7000-8000-000000000000",
    ] {
        expect_error(
            send(
                &server,
                Method::PATCH,
                &member,
                missing,
                Some(json!({"name": "x"})),
            )
            .await,
            404,
        )
        .await;
    }

    // Only owners delete; then it is gone for everyone.
    let body = expect_error(
        send(&server, Method::DELETE, &member, &path, None).await,
        403,
    )
    .await;
    assert_eq!(body["code"], "forbidden_role");
    let resp = send(&server, Method::DELETE, &owner, &path, None).await;
    assert_eq!(resp.status().as_u16(), 204);
    expect_error(
        send(&server, Method::DELETE, &owner, &path, None).await,
        404,
    )
    .await;
    let list = server
        .get_json_as(&member, &format!("/v1/saved-filters?project_id={project}"))
        .await;
    assert_eq!(list["items"], json!([]));
    let log = server.get_json_as(&owner, "/v1/audit-log?limit=50").await;
    let log = log.to_string();
    for action in [
        "saved_filter.create",
        "saved_filter.update",
        "saved_filter.delete",
    ] {
        assert!(log.contains(action), "{action} not audited");
    }
}

#[tokio::test]
async fn a_traces_remediation_chain_is_empty_and_only_its_organisations() {
    let server = TestServer::start().await;
    let owner = server.session_token().await;
    let trace = server.ingest(sample_trace("remediated")).await;
    let path = format!("/v1/traces/{trace}/remediations");
    assert_eq!(
        server.get_json_as(&owner, &path).await,
        json!({"steps": []})
    );
    for missing in [
        "/v1/traces/not-a-uuid/remediations".to_owned(),
        format!("/v1/traces/{}/remediations", uuid::Uuid::new_v4()),
    ] {
        expect_error(server.get_as(&owner, &missing).await, 404).await;
    }
    let other = other_owner(&server).await;
    expect_error(server.get_as(&other, &path).await, 404).await;
    let body = expect_error(server.get(&path).await, 403).await;
    assert_eq!(body["code"], "session_required");
}

#[tokio::test]
async fn nothing_is_deprecated_and_an_appliance_has_no_subprocessors() {
    let server = TestServer::start().await;
    assert_eq!(server.get_json("/v1/deprecations").await, json!([]));
    let resp = server
        .client
        .get(server.url("/v1/deprecations"))
        .send()
        .await
        .expect("sent");
    expect_error(resp, 401).await;

    // The registry needs no credentials and is empty, as JSON or RSS.
    let resp = server
        .client
        .get(server.url("/v1/subprocessors"))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status().as_u16(), 200);
    let registry: Value = resp.json().await.expect("registry");
    assert_eq!(registry["subprocessors"], json!([]));
    let updated = registry["updated_at"].as_str().expect("updated_at");
    assert!(
        chrono::DateTime::parse_from_rfc3339(updated).is_ok(),
        "{updated}"
    );
    let resp = server
        .client
        .get(server.url("/v1/subprocessors"))
        .header("accept", "application/rss+xml")
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/rss+xml")
    );
    let feed = resp.text().await.expect("feed");
    assert!(
        feed.contains("<rss version=\"2.0\">") && !feed.contains("<item>"),
        "{feed}"
    );

    // Subscribing records the address (idempotently) and says no mail comes.
    let store = server.running().store().clone();
    for _ in 0..2 {
        let resp = server
            .client
            .post(server.url("/v1/subprocessors/subscribe"))
            .json(&json!({"email": " DPO@Example.com "}))
            .send()
            .await
            .expect("sent");
        assert_eq!(resp.status().as_u16(), 200);
        let answer: Value = resp.json().await.expect("answer");
        assert_eq!(answer["status"], "subscribed");
        assert!(
            answer["message"]
                .as_str()
                .is_some_and(|m| m.contains("no mail")),
            "{answer}"
        );
    }
    assert!(store
        .is_subprocessor_subscriber("dpo@example.com".into())
        .await
        .expect("read"));
    let resp = server
        .client
        .post(server.url("/v1/subprocessors/subscribe"))
        .json(&json!({"email": "not an address"}))
        .send()
        .await
        .expect("sent");
    expect_error_naming(resp, 400, &["email"]).await;
    for _ in 0..2 {
        let resp = server
            .client
            .post(server.url("/v1/subprocessors/unsubscribe"))
            .json(&json!({"email": "dpo@example.com"}))
            .send()
            .await
            .expect("sent");
        assert_eq!(resp.status().as_u16(), 200);
        let answer: Value = resp.json().await.expect("answer");
        assert_eq!(answer["status"], "unsubscribed");
    }
    assert!(!store
        .is_subprocessor_subscriber("dpo@example.com".into())
        .await
        .expect("read"));
}

#[tokio::test]
async fn a_members_key_count_and_leaving_the_organisation() {
    let server = TestServer::start().await;
    let owner = server.session_token().await;
    let (member_id, member) = user(&server, &owner, "mia@example.com", "member").await;
    let me = server.get_json_as(&owner, "/v1/auth/me").await;
    let owner_id = me["id"].as_str().expect("id").to_owned();
    let count = |id: &str| format!("/v1/members/{id}/key-count");

    // Keys the member made from their session, unrevoked.
    let mut keys = Vec::new();
    for name in ["one", "two"] {
        let resp = server
            .post_as(&member, "/v1/apikeys", &json!({"name": name}))
            .await;
        assert_eq!(resp.status().as_u16(), 201);
        keys.push(resp.json::<Value>().await.expect("key"));
    }
    let resp = send(
        &server,
        Method::DELETE,
        &owner,
        &format!("/v1/apikeys/{}", keys[1]["id"].as_str().expect("id")),
        None,
    )
    .await;
    assert_eq!(resp.status().as_u16(), 204);
    assert_eq!(
        server.get_json_as(&owner, &count(&member_id)).await,
        json!({"active_key_count": 1})
    );
    // The first-start key was made at the command line: nobody's.
    assert_eq!(
        server.get_json_as(&member, &count(&owner_id)).await,
        json!({"active_key_count": 0})
    );
    expect_error(server.get_as(&owner, &count("not-a-uuid")).await, 404).await;
    expect_error(
        server
            .get_as(&owner, &count(&uuid::Uuid::new_v4().to_string()))
            .await,
        404,
    )
    .await;
    let other = other_owner(&server).await;
    expect_error(server.get_as(&other, &count(&member_id)).await, 404).await;
    let body = expect_error(server.get(&count(&member_id)).await, 403).await;
    assert_eq!(body["code"], "session_required");

    // The only owner cannot leave.
    let body = expect_error(
        send(&server, Method::DELETE, &owner, "/v1/members/me", None).await,
        422,
    )
    .await;
    assert_eq!(body["code"], "at_least_one_owner_required");
    let body = expect_error(
        send(&server, Method::DELETE, &other, "/v1/members/me", None).await,
        422,
    )
    .await;
    assert_eq!(body["code"], "at_least_one_owner_required");

    // A member leaves: their session ends, their key stays.
    let resp = send(&server, Method::DELETE, &member, "/v1/members/me", None).await;
    assert_eq!(resp.status().as_u16(), 200);
    let cookie = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(cookie.contains("Max-Age=0"), "{cookie}");
    let left: Value = resp.json().await.expect("answer");
    assert!(left["message"].is_string());
    expect_error(server.get_as(&member, "/v1/auth/me").await, 401).await;
    let users = server.get_json_as(&owner, "/v1/users").await;
    assert!(!users.to_string().contains("mia@example.com"), "{users}");
    let key = keys[0]["key"].as_str().expect("secret");
    assert_eq!(server.get_as(key, "/v1/projects").await.status(), 200);
    expect_error(server.get_as(&owner, &count(&member_id)).await, 404).await;
    let log = server.get_json_as(&owner, "/v1/audit-log?limit=50").await;
    assert!(log.to_string().contains("user.leave"), "{log}");

    // With a second owner, the first may leave.
    let (_, second) = user(&server, &owner, "otto@example.com", "owner").await;
    let resp = send(&server, Method::DELETE, &owner, "/v1/members/me", None).await;
    assert_eq!(resp.status().as_u16(), 200);
    let users = server.get_json_as(&second, "/v1/users").await;
    assert!(!users.to_string().contains("owner@example.com"), "{users}");
}

#[tokio::test]
async fn billing_is_refused_with_where_plans_are_set() {
    let server = TestServer::start().await;
    let owner = server.session_token().await;
    let (_, member) = user(&server, &owner, "mia@example.com", "member").await;
    for (path, body) in [
        (
            "/v1/settings/billing/checkout",
            json!({"plan": "pro", "success_url": "https://example.com/ok",
                   "cancel_url": "https://example.com/back"}),
        ),
        (
            "/v1/settings/billing/portal",
            json!({"return_url": "https://example.com/settings"}),
        ),
    ] {
        let refused = expect_error_naming(
            server.post_as(&owner, path, &body).await,
            422,
            &["admin set-plan"],
        )
        .await;
        assert_eq!(refused["code"], "billing_not_available");
        let refused = expect_error(server.post_as(&member, path, &body).await, 403).await;
        assert_eq!(refused["code"], "forbidden_role");
    }
    assert_eq!(
        server.get_json_as(&owner, "/v1/settings/invoices").await,
        json!({"invoices": []})
    );
    let refused = expect_error(server.get_as(&member, "/v1/settings/invoices").await, 403).await;
    assert_eq!(refused["code"], "forbidden_role");
}
