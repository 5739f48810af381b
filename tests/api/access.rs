//! The access matrix, generated from the router's route table: every route
//! is called with every kind of credential that should not get through, and
//! must answer the documented status. A route added to the table is tested
//! here without anyone writing a test for it.

use reqwest::Method;
use serde_json::{json, Value};

use trulayer_server::auth::{hash_api_key, hash_password, visible_prefix};
use trulayer_server::http::router::{routes, Auth, RouteSpec};
use trulayer_server::store::NewApiKey;

use crate::common::{sample_trace, TestServer, PASSWORD};

const EXPIRED_KEY: &str = "tl_expired_key_0123456789abcdef";
const OTHER_KEY: &str = "tl_other_tenant_key_0123456789ab";
const VIEWER: (&str, &str) = ("viewer@example.com", "viewer password");
const MEMBER: (&str, &str) = ("member@example.com", "member password");
const OTHER_OWNER: (&str, &str) = ("other-owner@example.com", "other password");

/// A credential to try, and what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Nobody,
    BadToken,
    RevokedKey,
    ExpiredKey,
    /// Keys of this tenant: scoped to `query`, to `ingest`, and without scopes.
    QueryKey,
    IngestKey,
    FullKey,
    /// Sessions of this tenant, one per role.
    Viewer,
    Member,
    Owner,
    OtherTenantKey,
    OtherTenantOwner,
}

struct World {
    server: TestServer,
    revoked_key: String,
    query_key: String,
    ingest_key: String,
    /// Tenant A's ids, by the path they fill.
    ids: Vec<(&'static str, String)>,
    /// Tenant A's trace, dataset item and dataset version, for bodies.
    trace: String,
    item: String,
    version: String,
}

async fn login(server: &TestServer, (email, password): (&str, &str)) -> String {
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

async fn created(resp: reqwest::Response) -> Value {
    assert_eq!(resp.status().as_u16(), 201, "create");
    resp.json().await.expect("JSON")
}

async fn world() -> World {
    let server = TestServer::start().await;
    let owner = server.session_token().await;
    let viewer = created(
        server
            .post_as(
                &owner,
                "/v1/users",
                &json!({"email": VIEWER.0, "password": VIEWER.1, "role": "viewer"}),
            )
            .await,
    )
    .await;
    let member = created(
        server
            .post_as(
                &owner,
                "/v1/users",
                &json!({"email": MEMBER.0, "password": MEMBER.1, "role": "member"}),
            )
            .await,
    )
    .await;
    let project = created(
        server
            .post_as(&owner, "/v1/projects", &json!({"name": "second"}))
            .await,
    )
    .await;
    let ingest = created(
        server
            .post_as(
                &owner,
                "/v1/apikeys",
                &json!({"name": "i", "scopes": ["ingest"]}),
            )
            .await,
    )
    .await;
    let query = created(
        server
            .post_as(
                &owner,
                "/v1/apikeys",
                &json!({"name": "q", "scopes": ["query"]}),
            )
            .await,
    )
    .await;
    let doomed = created(
        server
            .post_as(&owner, "/v1/apikeys", &json!({"name": "doomed"}))
            .await,
    )
    .await;
    let revoke = server
        .client
        .delete(server.url(&format!(
            "/v1/apikeys/{}",
            doomed["id"].as_str().expect("id")
        )))
        .bearer_auth(&owner)
        .send()
        .await
        .expect("revoke");
    assert_eq!(revoke.status().as_u16(), 204);
    let mut traced = sample_trace("tenant-a");
    traced["session_id"] = json!("session-of-tenant-a");
    let trace = server.ingest(traced).await;
    // A dataset holding the trace, a version of it and a run.
    let dataset = created(
        server
            .post_as(&owner, "/v1/datasets", &json!({"name": "tenant a"}))
            .await,
    )
    .await;
    let dataset = dataset["id"].as_str().expect("id").to_owned();
    let item = created(
        server
            .post_as(
                &owner,
                &format!("/v1/datasets/{dataset}/items"),
                &json!({"trace_id": trace}),
            )
            .await,
    )
    .await;
    let version = created(
        server
            .post_as(
                &owner,
                &format!("/v1/datasets/{dataset}/versions"),
                &json!({"name": "v1", "judge_model": "judge"}),
            )
            .await,
    )
    .await;
    let version = version["id"].as_str().expect("id").to_owned();
    let run = server
        .post_as(
            &owner,
            &format!("/v1/datasets/{dataset}/runs"),
            &json!({"eval_version_id": version}),
        )
        .await;
    assert_eq!(run.status().as_u16(), 202, "run scheduled");
    let run: Value = run.json().await.expect("run JSON");
    let webhook = created(
        server
            .post_as(
                &owner,
                "/v1/webhooks",
                &json!({"url": "http://127.0.0.1:9/hook", "secret": "0123456789abcdef"}),
            )
            .await,
    )
    .await;
    let failure_rule = created(
        server
            .post_as(
                &owner,
                "/v1/failure-rules",
                &json!({"name": "tenant a", "metric": "error_rate", "operator": "gt", "threshold": 0.5}),
            )
            .await,
    )
    .await;
    // An anomaly of tenant A, as the detector raises them.
    server
        .running()
        .store()
        .raise_builtin_anomaly(trulayer_server::store::NewAnomaly {
            tenant_id: 1,
            project_id: Some(1),
            kind: "volume_anomaly".into(),
            severity: "medium".into(),
            description: "volume rose".into(),
            metric: "volume".into(),
            value: 1000.0,
            threshold: None,
            baseline: Some(100.0),
            metadata: json!({}),
        })
        .await
        .expect("anomaly");
    let anomalies: Value = server
        .get_as(&owner, "/v1/anomalies")
        .await
        .json()
        .await
        .expect("anomalies");
    let anomaly = anomalies["anomalies"][0]["id"]
        .as_str()
        .expect("an anomaly")
        .to_owned();
    // A saved filter of the trace list.
    let saved_filter = created(
        server
            .post_as(
                &owner,
                "/v1/saved-filters",
                &json!({"project_id": "default", "name": "tenant a", "filters": {"error": "true"}}),
            )
            .await,
    )
    .await;

    // A data subject request (an export: the matrix must erase nothing).
    let dsr = created(
        server
            .post_as(
                &owner,
                "/v1/dsr",
                &json!({"subject_id": "matrix-subject", "type": "export"}),
            )
            .await,
    )
    .await;

    // An expired key of tenant A, and a second tenant with a key and an owner.
    let store = server.running().store().clone();
    let key = |key: &str, project_id: i64, expires_at: Option<i64>| NewApiKey {
        project_id,
        name: "matrix".into(),
        prefix: visible_prefix(key).into(),
        key_hash: hash_api_key(key),
        expires_at,
        scopes: Vec::new(),
    };
    store
        .create_api_key(
            1,
            key(EXPIRED_KEY, 1, Some(1)),
            trulayer_server::store::Actor::operator(),
        )
        .await
        .expect("expired key");
    let (tenant, project_b) = store
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
            key(OTHER_KEY, project_b, None),
            trulayer_server::store::Actor::operator(),
        )
        .await
        .expect("other key");
    store
        .create_user(
            tenant,
            OTHER_OWNER.0.into(),
            hash_password(OTHER_OWNER.1).expect("hash"),
            trulayer_server::http::Role::Owner,
            trulayer_server::store::Actor::operator(),
        )
        .await
        .expect("other owner");

    World {
        revoked_key: doomed["key"].as_str().expect("key").to_owned(),
        query_key: query["key"].as_str().expect("key").to_owned(),
        ingest_key: ingest["key"].as_str().expect("key").to_owned(),
        ids: vec![
            ("/v1/traces/", trace.clone()),
            ("/v1/users/", viewer["id"].as_str().expect("id").to_owned()),
            (
                "/v1/projects/",
                project["id"].as_str().expect("id").to_owned(),
            ),
            ("/v1/apikeys/", query["id"].as_str().expect("id").to_owned()),
            ("/v1/sessions/", "session-of-tenant-a".to_owned()),
            ("/v1/datasets/", dataset),
            ("/v1/eval-runs/", run["id"].as_str().expect("id").to_owned()),
            (
                "/v1/webhooks/",
                webhook["id"].as_str().expect("id").to_owned(),
            ),
            (
                "/v1/saved-filters/",
                saved_filter["id"].as_str().expect("id").to_owned(),
            ),
            (
                "/v1/failure-rules/",
                failure_rule["id"].as_str().expect("id").to_owned(),
            ),
            ("/v1/anomalies/", anomaly),
            (
                "/v1/members/",
                member["id"].as_str().expect("id").to_owned(),
            ),
            ("/v1/dsr/", dsr["id"].as_str().expect("id").to_owned()),
        ],
        trace,
        item: item["id"].as_str().expect("id").to_owned(),
        version,
        server,
    }
}

impl World {
    /// The route's path with `{id}` filled by tenant A's id of that kind.
    fn path(&self, route: &RouteSpec) -> String {
        let id = self
            .ids
            .iter()
            .find(|(prefix, _)| route.path.starts_with(prefix));
        let mut path = match id {
            Some((_, id)) => route.path.replace("{id}", id),
            None => route.path.to_owned(),
        };
        path = path
            .replace("{itemId}", &self.item)
            .replace("{provider}", "openai");
        // A diff's baseline is required: the run itself will do.
        if route.path == "/v1/eval-runs/{id}/diff" {
            if let Some((_, run)) = id {
                path.push_str(&format!("?baseline={run}"));
            }
        }
        path
    }

    /// A body the handler accepts, so that only access decides the answer.
    fn body(&self, route: &RouteSpec) -> Option<Value> {
        if route.method == Method::GET || route.method == Method::DELETE {
            return None;
        }
        let id = |prefix: &str| {
            self.ids
                .iter()
                .find(|(p, _)| *p == prefix)
                .map(|(_, id)| id.clone())
        };
        Some(match route.path.as_str() {
            "/v1/ingest" => sample_trace("matrix"),
            "/v1/ingest/batch" => json!({"traces": [sample_trace("matrix")]}),
            "/v1/users/{id}" => json!({"role": "member"}),
            "/v1/projects/{id}" => json!({"name": "renamed"}),
            "/v1/datasets" => json!({"name": "matrix"}),
            "/v1/datasets/{id}/items" => json!({"trace_id": self.trace}),
            "/v1/datasets/{id}/items/{itemId}" => json!({"label": "pass"}),
            "/v1/datasets/{id}/versions" => json!({"name": "matrix"}),
            "/v1/datasets/{id}/runs" => json!({"eval_version_id": self.version}),
            "/v1/saved-filters" => {
                json!({"project_id": "default", "name": "matrix", "filters": {"q": "refund"}})
            }
            "/v1/saved-filters/{id}" => json!({"name": "renamed"}),
            "/v1/subprocessors/subscribe" | "/v1/subprocessors/unsubscribe" => {
                json!({"email": "dpo@example.com"})
            }
            "/v1/settings/billing/checkout" => json!({"plan": "pro",
                "success_url": "https://example.com/ok", "cancel_url": "https://example.com/back"}),
            "/v1/settings/billing/portal" => json!({"return_url": "https://example.com/back"}),
            "/v1/ci/gate" => json!({
                "dataset_id": id("/v1/datasets/"),
                "run_id": id("/v1/eval-runs/"),
                "policy": {"on_fail": "block"},
            }),
            "/v1/webhooks" => {
                json!({"url": "http://127.0.0.1:9/hook", "secret": "0123456789abcdef"})
            }
            "/v1/settings/eval-keys" => {
                json!({"provider": "openai", "key": "sk-matrix-0123456789"})
            }
            "/v1/dsr" => json!({"subject_id": "matrix-subject", "type": "export"}),
            "/v1/failure-rules" => {
                json!({"name": "matrix", "metric": "volume", "operator": "gt", "threshold": 1000})
            }
            "/v1/failure-rules/{id}" => json!({"threshold": 2000}),
            _ => json!({}),
        })
    }

    async fn token(&self, caller: Caller) -> Option<String> {
        match caller {
            Caller::Nobody => None,
            Caller::BadToken => Some("tl_not_a_real_key_000000000000".into()),
            Caller::RevokedKey => Some(self.revoked_key.clone()),
            Caller::ExpiredKey => Some(EXPIRED_KEY.into()),
            Caller::QueryKey => Some(self.query_key.clone()),
            Caller::IngestKey => Some(self.ingest_key.clone()),
            Caller::FullKey => Some(self.server.key.clone()),
            // Fresh sessions each time: logout is one of the routes.
            Caller::Viewer => Some(login(&self.server, VIEWER).await),
            Caller::Member => Some(login(&self.server, MEMBER).await),
            Caller::Owner => Some(login(&self.server, ("owner@example.com", PASSWORD)).await),
            Caller::OtherTenantKey => Some(OTHER_KEY.into()),
            Caller::OtherTenantOwner => Some(login(&self.server, OTHER_OWNER).await),
        }
    }

    /// A fresh user of `role` of tenant A, logged in: for leaving the
    /// organisation, which would take the shared viewer or member away.
    async fn leaver(&self, role: &str) -> String {
        let owner = login(&self.server, ("owner@example.com", PASSWORD)).await;
        let email = format!("leaver-{}@example.com", uuid::Uuid::new_v4().simple());
        created(
            self.server
                .post_as(
                    &owner,
                    "/v1/users",
                    &json!({"email": email, "password": "leaver password", "role": role}),
                )
                .await,
        )
        .await;
        login(&self.server, (&email, "leaver password")).await
    }

    async fn call(&self, route: &RouteSpec, caller: Caller) -> (u16, Value) {
        let url = self.server.url(&self.path(route));
        let mut request = self.server.client.request(route.method.clone(), url);
        let leaving = route.path == "/v1/members/me" && route.method == Method::DELETE;
        let token = match caller {
            Caller::Viewer if leaving => Some(self.leaver("viewer").await),
            Caller::Member if leaving => Some(self.leaver("member").await),
            _ => self.token(caller).await,
        };
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = self.body(route) {
            request = request.json(&body);
        }
        let resp = request.send().await.expect("request sent");
        let status = resp.status().as_u16();
        // A stream (the live feed) never ends: its status is the answer.
        if is_stream(&resp) {
            return (status, Value::Null);
        }
        let body = resp.json().await.unwrap_or(Value::Null);
        (status, body)
    }
}

fn is_stream(resp: &reqwest::Response) -> bool {
    resp.headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/event-stream"))
}

/// What `caller` must get from `route`: a status and, for refusals, a
/// code, from nothing but the route's row of the table.
fn expected(route: &RouteSpec, caller: Caller) -> Expect {
    use Caller::*;
    let access = route.access;
    let has_id = route.path.contains("{id}");
    if access.auth == Auth::Public {
        return Expect::Through;
    }
    let key = |scopes: &[&str]| {
        let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        match access.scope {
            Some(_) if access.auth == Auth::Session => Expect::Refused(403, "session_required"),
            None => Expect::Refused(403, "session_required"),
            Some(scope) if !scope.allows(&scopes) => Expect::Refused(403, "scope_forbidden"),
            Some(_) => Expect::Through,
        }
    };
    let session = |role| {
        if access.roles.allows(role) {
            Expect::Through
        } else {
            Expect::Refused(403, "forbidden_role")
        }
    };
    use trulayer_server::http::Role;
    match caller {
        Nobody | BadToken | RevokedKey => Expect::Refused(401, "invalid_api_key"),
        ExpiredKey => Expect::Refused(401, "api_key_expired"),
        QueryKey => key(&["query"]),
        IngestKey => key(&["ingest"]),
        FullKey => key(&[]),
        Viewer => session(Role::Viewer),
        Member => session(Role::Member),
        Owner => session(Role::Owner),
        OtherTenantKey => match key(&[]) {
            Expect::Through if has_id => Expect::Refused(404, "not_found"),
            other => other,
        },
        OtherTenantOwner if has_id => Expect::Refused(404, "not_found"),
        OtherTenantOwner => Expect::Through,
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Expect {
    /// Past authentication and authorization: anything but 401 and 403.
    Through,
    Refused(u16, &'static str),
}

#[tokio::test]
async fn every_route_answers_every_credential_as_documented() {
    let world = world().await;
    let table = routes();
    assert!(table.len() >= 27, "the route table lists every route");
    let callers = [
        Caller::Nobody,
        Caller::BadToken,
        Caller::RevokedKey,
        Caller::ExpiredKey,
        Caller::QueryKey,
        Caller::IngestKey,
        Caller::FullKey,
        Caller::Viewer,
        Caller::Member,
        Caller::OtherTenantKey,
        Caller::OtherTenantOwner,
        Caller::Owner,
    ];
    let mut wrong = Vec::new();
    // Caller by caller, the owner last: its calls get through, and some
    // (deleting the viewer, revoking the query key) would change what the
    // others are.
    for caller in callers {
        for route in &table {
            let (status, body) = world.call(route, caller).await;
            let ok = match expected(route, caller) {
                Expect::Through => status != 401 && status != 403,
                Expect::Refused(want, code) => status == want && body["code"] == code,
            };
            if !ok {
                wrong.push(format!(
                    "{} {} as {caller:?}: expected {:?}, got {status} {body}",
                    route.method,
                    route.path,
                    expected(route, caller)
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong answers:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[tokio::test]
async fn another_tenants_lists_never_show_this_tenants_ids() {
    let world = world().await;
    let other_owner = login(&world.server, OTHER_OWNER).await;
    for route in routes()
        .iter()
        .filter(|r| r.method == Method::GET && !r.path.contains("{id}"))
        .filter(|r| r.access.auth != Auth::Public)
    {
        for token in [OTHER_KEY.to_owned(), other_owner.clone()] {
            let resp = world.server.get_as(&token, &route.path).await;
            if is_stream(&resp) {
                continue;
            }
            let text = resp.text().await.expect("body");
            for (_, id) in &world.ids {
                assert!(
                    !text.contains(id.as_str()),
                    "{} shows {id}: {text}",
                    route.path
                );
            }
        }
    }
    // The owner of tenant A still sees them (the ids are real).
    let owner = login(&world.server, ("owner@example.com", PASSWORD)).await;
    let users = world.server.get_json_as(&owner, "/v1/users").await;
    assert!(users.to_string().contains(world.ids[1].1.as_str()));
}

/// A key's scopes follow the route, not the HTTP method: a key that may
/// send telemetry may not change the organisation's evaluation rules.
#[tokio::test]
async fn an_ingest_key_cannot_change_an_eval_rule() {
    let world = world().await;
    let server = &world.server;
    let resp = server
        .post(
            "/v1/eval-rules",
            &json!({"project_id": "default", "metric_name": "not_empty",
                    "evaluator_type": "rule", "config": {"rule": "not_empty"}}),
        )
        .await;
    let status = resp.status();
    let rule: Value = resp.json().await.expect("rule");
    assert_eq!(status, 201, "{rule}");
    let path = format!("/v1/eval-rules/{}", rule["id"].as_str().expect("id"));
    let resp = server
        .client
        .delete(server.url(&path))
        .bearer_auth(&world.ingest_key)
        .send()
        .await
        .expect("sent");
    let body = crate::common::expect_error(resp, 403).await;
    assert_eq!(body["code"], "scope_forbidden");
    let rules = server.get_json("/v1/eval-rules").await;
    assert!(rules.to_string().contains(rule["id"].as_str().expect("id")));
    // Sending telemetry is what it may do.
    assert_eq!(
        server
            .post_as(&world.ingest_key, "/v1/ingest", &sample_trace("ok"))
            .await
            .status(),
        201
    );
}
