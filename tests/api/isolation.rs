//! One tenant can never read, list, infer or change another's traces.

use serde_json::json;

use crate::common::{expect_error, sample_trace, TestServer};

const OTHER_KEY: &str = "tl_other_tenant_0123456789abc";

#[tokio::test]
async fn tenants_see_only_their_own_traces() {
    let server = TestServer::start().await;
    let store = server.running().store().clone();
    let (tenant, project) = store
        .create_tenant("other org".into(), "default".into())
        .await
        .expect("tenant");
    store
        .create_api_key(
            tenant,
            project,
            "other".into(),
            trulayer_server::auth::visible_prefix(OTHER_KEY).into(),
            trulayer_server::auth::hash_api_key(OTHER_KEY),
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
