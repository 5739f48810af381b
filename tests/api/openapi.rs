//! The API's own OpenAPI document (`GET /v1/openapi.json`): served without
//! credentials, it documents exactly the routes the server answers, each
//! with who may call it, its failures with the error body, and how it goes
//! beyond the hosted service's reference.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::Value;

use trulayer_server::http::router::routes;

use crate::common::TestServer;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// The operations of a document, as (METHOD, path) with parameter names blanked.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(move |m| (m.to_uppercase(), blank(path)))
        })
        .collect()
}

fn blank(path: &str) -> String {
    path.split('/')
        .map(|s| if s.starts_with('{') { "{}" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

/// The hosted service's operations, read from its published document
/// (two-space indented paths, four-space indented methods).
fn reference_operations() -> BTreeSet<(String, String)> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/reference/trulayer-openapi.yaml"
    ))
    .expect("the reference document");
    let mut path = None;
    let mut found = BTreeSet::new();
    for line in text.lines() {
        if let Some(p) = line.strip_prefix("  /").and_then(|l| l.strip_suffix(':')) {
            path = Some(blank(&format!("/{p}")));
        } else if let (Some(p), Some(m)) = (
            &path,
            line.strip_prefix("    ").and_then(|l| l.strip_suffix(':')),
        ) {
            if METHODS.contains(&m) {
                found.insert((m.to_uppercase(), p.clone()));
            }
        } else if !line.is_empty() && !line.starts_with(' ') {
            path = None;
        }
    }
    assert!(
        found.len() > 100,
        "read {} reference operations",
        found.len()
    );
    found
}

#[tokio::test]
async fn the_document_names_exactly_the_routes_the_server_answers() {
    let server = TestServer::start().await;
    let resp = server
        .client
        .get(server.url("/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "served without credentials");
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let doc: Value = resp.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");

    // The route table and the document list the same operations.
    let table: BTreeSet<(String, String)> = routes()
        .iter()
        .map(|r| (r.method.to_string(), blank(&r.path)))
        .collect();
    let documented = operations(&doc);
    assert_eq!(
        table.difference(&documented).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "routes without a documented operation"
    );
    assert_eq!(
        documented.difference(&table).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "documented operations the table lacks"
    );

    // Each documented operation is served (the router knows it), and a
    // method the document does not name on a documented path is not.
    let token = server.session_token().await;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path
            .split('/')
            .map(|s| if s.starts_with('{') { "0" } else { s })
            .collect::<Vec<_>>()
            .join("/");
        for method in METHODS {
            // Logging out would end the session the rest uses.
            if path == "/v1/auth/logout" {
                continue;
            }
            let resp = server
                .client
                .request(
                    Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                    server.url(&concrete),
                )
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            // Only a 404's body tells an unknown route from an unknown id
            // (the live feed's body never ends).
            let body: Value = if status == 404 {
                resp.json().await.unwrap_or(Value::Null)
            } else {
                Value::Null
            };
            let unrouted = status == 405 || body["error"] == "route not found";
            assert_eq!(
                unrouted,
                item.get(method).is_none(),
                "{method} {path}: {status} {body}"
            );
        }
    }

    // Every operation: a unique id, a tag the document lists, a summary, a
    // success, failures with the error body, security as its row says.
    let tags: BTreeSet<&str> = doc["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    let reference = reference_operations();
    let mut ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let name = format!("{} {path}", method.to_uppercase());
            let id = op["operationId"].as_str().unwrap_or_default();
            assert!(
                !id.is_empty() && ids.insert(id.to_owned()),
                "{name}: id {id}"
            );
            let tag = op["tags"][0].as_str().unwrap_or_default();
            assert!(tags.contains(tag), "{name}: tag {tag:?}");
            assert!(
                op["summary"].as_str().is_some_and(|s| !s.is_empty()),
                "{name}: no summary"
            );
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{name}: no success"
            );
            for (status, response) in responses {
                // Readiness answers its checks, ready or not.
                let own_body = name == "GET /ready" && status == "503";
                if (status.starts_with('4') || status.starts_with('5')) && !own_body {
                    assert_eq!(
                        response["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{name} {status}"
                    );
                    assert!(
                        response["description"].as_str().unwrap().contains('`'),
                        "{name} {status}: names no code"
                    );
                }
            }
            let access = &op["x-trulayer-access"];
            let public = access["auth"] == "public";
            assert_eq!(
                op["security"].as_array().unwrap().is_empty(),
                public,
                "{name}"
            );
            // Every authenticated route answers 401; a public one only for
            // what it checks itself (a login's password, the metrics
            // token), never for the API's credentials.
            match responses.get("401") {
                None => assert!(public, "{name}: no 401"),
                Some(r) if public => {
                    let text = r["description"].as_str().unwrap_or_default();
                    assert!(
                        !text.contains("invalid_api_key") && !text.contains("invalid_session"),
                        "{name}: a public route with the API's 401: {text}"
                    );
                }
                Some(_) => {}
            }
            // An operation the hosted service lacks says what it adds.
            let shared = reference.contains(&(method.to_uppercase(), blank(path)));
            if !shared {
                assert!(
                    op["x-trulayer-beyond-reference"].as_str().is_some(),
                    "{name} is not in the reference and does not say so"
                );
            }
        }
    }
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["api_key"]["scheme"], "bearer");
    assert_eq!(schemes["session"]["in"], "cookie");
    assert!(doc["components"]["schemas"]["ErrorBody"]["properties"]["code"].is_object());
}
