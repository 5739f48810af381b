//! One tenant can never read, list, infer or change another's traces.

use serde_json::json;

use trulayer_server::auth::{hash_api_key, visible_prefix};
use trulayer_server::store::NewApiKey;

use crate::common::{expect_error, sample_trace, TestServer};

fn new_key(project_id: i64, key: &str, expires_at: Option<i64>) -> NewApiKey {
    NewApiKey {
        project_id,
        name: "test".into(),
        prefix: visible_prefix(key).into(),
        key_hash: hash_api_key(key),
        expires_at,
        scopes: Vec::new(),
    }
}

const OTHER_KEY: &str = "tl_other_tenant_0123456789abc";

#[tokio::test]
async fn tenants_see_only_their_own_traces() {
    let server = TestServer::start().await;
    let store = server.running().store().clone();
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
            new_key(project, OTHER_KEY, None),
            trulayer_server::store::Actor::operator(),
        )
        .await
        .expect("key");

    let mine = sample_trace("mine");
    let my_id = server.ingest(mine.clone()).await;

    // The other tenant cannot see it by id or in any listing.
    let body = expect_error(
        server
            .get_as(OTHER_KEY, &format!("/v1/traces/{my_id}"))
            .await,
        404,
    )
    .await;
    assert_eq!(body["code"], "not_found");
    let page: serde_json::Value = server
        .get_as(OTHER_KEY, "/v1/traces")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(page["traces"], json!([]));
    // Naming my project by name or id does not reach into my tenant.
    let my_project = server.get_json(&format!("/v1/traces/{my_id}")).await["project_id"].clone();
    for q in [
        format!("project_id={}", my_project.as_str().unwrap_or_default()),
        "project_id=default".into(),
    ] {
        let page: serde_json::Value = server
            .get_as(OTHER_KEY, &format!("/v1/traces?{q}"))
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(page["traces"], json!([]), "{q}");
    }

    // The same trace id in the other tenant is its own trace, not a duplicate
    // or conflict that would reveal mine.
    let mut theirs = mine.clone();
    theirs["name"] = json!("theirs");
    theirs["project_id"] = my_project.clone();
    let resp = server.post_as(OTHER_KEY, "/v1/ingest", &theirs).await;
    assert_eq!(resp.status(), 201);
    let their_view: serde_json::Value = server
        .get_as(OTHER_KEY, &format!("/v1/traces/{my_id}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(their_view["name"], "theirs");
    assert_ne!(
        their_view["project_id"], my_project,
        "landed in their own project"
    );
    let my_view = server.get_json(&format!("/v1/traces/{my_id}")).await;
    assert_eq!(my_view["name"], "mine");
    assert_eq!(server.list_all("", 50).await.len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn revoked_and_expired_keys_are_refused_with_the_sdk_codes() {
    let server = TestServer::start().await;
    let store = server.running().store().clone();
    // On a fresh store the first tenant and project both have id 1.
    let revoked = "tl_revoked_key_0123456789abc";
    let expired = "tl_expired_key_0123456789abc";
    let future = "tl_future_key_0123456789abcd";
    let now = chrono::Utc::now().timestamp_micros();
    let revoked_id = store
        .create_api_key(
            1,
            new_key(1, revoked, None),
            trulayer_server::store::Actor::operator(),
        )
        .await
        .expect("key");
    store
        .create_api_key(
            1,
            new_key(1, expired, Some(now - 1)),
            trulayer_server::store::Actor::operator(),
        )
        .await
        .expect("key");
    store
        .create_api_key(
            1,
            new_key(1, future, Some(now + 3_600_000_000)),
            trulayer_server::store::Actor::operator(),
        )
        .await
        .expect("key");
    assert_eq!(server.get_as(revoked, "/v1/traces").await.status(), 200);
    assert_eq!(server.get_as(future, "/v1/traces").await.status(), 200);

    assert!(store
        .revoke_api_key(1, revoked_id, trulayer_server::store::Actor::operator())
        .await
        .expect("revoke"));
    let body = expect_error(
        server
            .post_as(revoked, "/v1/ingest", &sample_trace("x"))
            .await,
        401,
    )
    .await;
    assert_eq!(body["error"], "invalid_api_key");
    let body = expect_error(
        server
            .post_as(expired, "/v1/ingest", &sample_trace("x"))
            .await,
        401,
    )
    .await;
    assert_eq!(body["error"], "api_key_expired");
    // Another tenant cannot revoke this tenant's key.
    let (other, _) = store
        .create_tenant(
            "other".into(),
            "p".into(),
            trulayer_server::store::Actor::operator(),
        )
        .await
        .expect("tenant");
    assert!(!store
        .revoke_api_key(other, 1, trulayer_server::store::Actor::operator())
        .await
        .expect("revoke"));
    assert_eq!(server.get("/v1/traces").await.status(), 200);
    server.stop().await;
}
