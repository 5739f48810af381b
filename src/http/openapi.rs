//! The OpenAPI 3.1 document of the API, served at `GET /v1/openapi.json`
//! and rendered by the reference page at `/docs`. It is generated, never
//! written by hand: each handler's `#[utoipa::path]` gives its operation
//! (parameters, body, success responses and their schemas), and the
//! handler's row of the route table adds who may call it (security schemes
//! and `x-trulayer-access`), the failures every route of its kind can
//! answer, and how it goes beyond the hosted service's reference
//! (`x-trulayer-beyond-reference`).

use axum::http::Method;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, Ref, RefOr,
    ResponseBuilder, Schema,
};
use utoipa::PartialSchema;

use super::router::{Auth, KeyScope, Roles, RouteSpec};
use super::Role;
use crate::error::ErrorBody;

/// One documented route: its row of the table and its operation.
pub struct DocumentedRoute {
    pub spec: RouteSpec,
    pub operation: Operation,
    pub schemas: Vec<(String, RefOr<Schema>)>,
}

/// The tags, in the order the reference page lists them.
const TAGS: &[(&str, &str)] = &[
    (
        "ingest",
        "Sending traces: the SDKs' JSON and OpenTelemetry (OTLP/HTTP).",
    ),
    (
        "traces",
        "Reading traces: lists, filters, full-text search, details, the live feed and exports.",
    ),
    ("sessions", "Traces grouped by the session they belong to."),
    ("search", "Searching spans by text."),
    (
        "metrics",
        "Volume, latency, cost and error figures over time.",
    ),
    ("feedback", "Ratings and comments on traces."),
    (
        "failures",
        "Failing traces grouped by the shape of their error message.",
    ),
    (
        "evaluations",
        "Scores of traces: triggering, listing, summaries and exports.",
    ),
    (
        "eval-rules",
        "Rules that evaluate new traces automatically.",
    ),
    (
        "datasets",
        "Datasets of hard cases: traces kept with their input, output and a review label.",
    ),
    (
        "eval-runs",
        "Versions (a system prompt, a model, a judge) and runs of a dataset against them, with their exports and diffs.",
    ),
    ("ci", "Release decisions from a dataset run, for CI pipelines."),
    ("projects", "Projects: the groups traces are sent to."),
    ("api-keys", "API keys for SDKs and exporters."),
    ("users", "The organisation's users and their roles."),
    (
        "auth",
        "Logging in and out of the admin page, and one's own account.",
    ),
    ("audit", "The tamper-evident audit log."),
    (
        "failure-rules",
        "Thresholds on an organisation's error rate, latency, cost, volume or evaluation scores, evaluated continuously \
         from the metric rollups. A rule fires once per episode: it raises an anomaly and sends `failure.detected`; when \
         its condition clears the anomaly is marked recovered and `failure.recovered` is sent.",
    ),
    (
        "anomaly",
        "What the failure rules raised, and what the built-in detector found: sudden changes in each project's error \
         rate, p95 latency, cost and volume against a baseline of the median and median absolute deviation of the \
         windows before (`anomaly.detected`, `anomaly.recovered`).",
    ),
    (
        "webhooks",
        "Signed event deliveries to the organisation's endpoints, from a durable outbox retried for up to two days. \
         Event types: `eval_run.completed` (a dataset run finished: completed, failed or cancelled; `data` is the run), \
         `failure.detected` (a failure rule fired; `data` is the anomaly, with `rule`), `failure.recovered` (its \
         condition cleared, or the rule was turned off, changed or deleted), `anomaly.detected` and `anomaly.recovered` \
         (the built-in detector; `data` is the anomaly), and `ping` (test deliveries only). \
         Each request is a POST of `{\"id\", \"type\", \"created_at\", \"data\"}` with `X-TruLayer-Event`, \
         `X-TruLayer-Delivery` (the same on every attempt) and `X-TruLayer-Signature: t=<unix seconds>,v1=<hex>`, \
         the hex being HMAC-SHA256 keyed with the webhook's secret over `<t>.<body>`.",
    ),
    (
        "saved-filters",
        "Named filters of the trace list, shared by the organisation.",
    ),
    (
        "members",
        "Members of the organisation: their API keys, and leaving it.",
    ),
    (
        "dsr",
        "Data subject requests: erasure or export of everything stored of one person, owners only.",
    ),
    (
        "compliance",
        "The sub-processor registry (empty: a self-hosted server has none).",
    ),
    (
        "deprecations",
        "Deprecated fields and endpoints of the API.",
    ),
    (
        "eval-keys",
        "The organisation's own keys for the judge and model endpoints, sealed at rest and never returned.",
    ),
    (
        "billing",
        "Billing (none: the operator sets plans with `trulayer-server admin set-plan`).",
    ),
    (
        "service",
        "Health, readiness, Prometheus metrics and this document.",
    ),
    (
        "admin-page",
        "The admin page, the API reference, and their files.",
    ),
];

/// The document of `routes`.
pub fn document(routes: Vec<DocumentedRoute>) -> OpenApi {
    let mut paths = utoipa::openapi::path::Paths::new();
    let mut components = ComponentsBuilder::new()
        .schema("ErrorBody", ErrorBody::schema())
        .security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("tl_…")
                    .description(Some(
                        "An API key (`Authorization: Bearer tl_…`), created in the admin page or \
                         with `POST /v1/apikeys`. A key's scopes (`ingest`, `query`) limit what \
                         it may call; a key without scopes may call every route keys may.",
                    ))
                    .build(),
            ),
        )
        .security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                super::principal::SESSION_COOKIE,
                "A user session: the cookie `POST /v1/auth/login` sets (changes through it \
                 must come from this server's own pages), or its token sent as \
                 `Authorization: Bearer tls_…`.",
            ))),
        );
    for route in routes {
        let DocumentedRoute {
            spec,
            mut operation,
            schemas,
        } = route;
        for (name, schema) in schemas {
            components = components.schema(name, schema);
        }
        complete(&spec, &mut operation);
        let method = match spec.method {
            Method::GET => utoipa::openapi::HttpMethod::Get,
            Method::POST => utoipa::openapi::HttpMethod::Post,
            Method::PATCH => utoipa::openapi::HttpMethod::Patch,
            Method::PUT => utoipa::openapi::HttpMethod::Put,
            Method::DELETE => utoipa::openapi::HttpMethod::Delete,
            _ => continue,
        };
        paths.add_path_operation(spec.path.clone(), vec![method], operation);
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("TruLayer Server API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "The TruLayer v1 API as this self-hosted server implements it. It follows \
                     the hosted service's published document: the same paths, fields and \
                     statuses. Where this server goes further (routes the hosted service does \
                     not have, larger limits, extra fields), the operation says so in \
                     `x-trulayer-beyond-reference`. Clients ignore fields they do not know. \
                     Every failure answers `ErrorBody` with a machine-readable `code`.",
                ))
                .build(),
        )
        .paths(paths)
        .components(Some(components.build()))
        .tags(Some(
            TAGS.iter()
                .map(|(name, description)| {
                    TagBuilder::new()
                        .name(*name)
                        .description(Some(*description))
                        .build()
                })
                .collect::<Vec<_>>(),
        ))
        .build()
}

/// Adds to a handler's operation what its row of the table says: security,
/// access, and the failures its kind of route can answer (unless the
/// handler documents them itself).
fn complete(spec: &RouteSpec, op: &mut Operation) {
    let access = spec.access;
    op.security = Some(match access.auth {
        Auth::Public => Vec::new(),
        Auth::KeyOrSession => vec![
            SecurityRequirement::new("api_key", Vec::<String>::new()),
            SecurityRequirement::new("session", Vec::<String>::new()),
        ],
        Auth::Session => vec![SecurityRequirement::new("session", Vec::<String>::new())],
    });
    let mut extensions = utoipa::openapi::extensions::Extensions::default();
    extensions.insert("x-trulayer-access".into(), access_json(spec));
    if let Some(beyond) = spec.beyond_reference {
        extensions.insert("x-trulayer-beyond-reference".into(), beyond.into());
    }
    op.extensions
        .get_or_insert_with(Default::default)
        .merge(extensions);

    let takes_body = op.request_body.is_some();
    let has_path_params = spec.path.contains('{');
    let has_query = op.parameters.iter().flatten().any(|p| match p {
        RefOr::T(p) => matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Query),
        RefOr::Ref(_) => true,
    });
    let writes = spec.method != Method::GET && access.auth != Auth::Public;
    let mut failures: Vec<(u16, String)> = Vec::new();
    let mut bad_request = Vec::new();
    if has_query {
        bad_request.push("`bad_request`: a query parameter does not fit (the message names it)");
    }
    if takes_body {
        bad_request.push("`malformed_json`: the body is not JSON");
    }
    if !bad_request.is_empty() {
        failures.push((400, bad_request.join("; ")));
    }
    if access.auth != Auth::Public {
        failures.push((
            401,
            "No credentials, or not valid ones: `invalid_api_key`, `api_key_expired`, \
             `invalid_session`."
                .into(),
        ));
        failures.push((403, forbidden(spec)));
        failures.push((
            429,
            format!(
                "`rate_limited`: the organisation sent more {} requests than its plan allows \
                 this minute; `Retry-After` says when to retry.",
                access.family.name()
            ),
        ));
    }
    if has_path_params {
        failures.push((
            404,
            "`not_found`: there is no such resource in the caller's organisation (another \
             organisation's is not found either)."
                .into(),
        ));
    }
    if takes_body {
        failures.push((
            413,
            "`payload_too_large`: the body is larger than the route takes (the message names \
             the limit)."
                .into(),
        ));
        failures.push((
            415,
            "`unsupported_media_type`: the body is not sent as `application/json`.".into(),
        ));
    }
    if takes_body && !spec.refusals_in_answer {
        failures.push((
            422,
            "`validation_error`: a field is missing, of the wrong type or outside its limits \
             (the message names its path)."
                .into(),
        ));
    }
    failures.push((
        500,
        "`internal_error`: the server failed; the log has the detail under the `request_id`."
            .into(),
    ));
    failures.push((
        503,
        if takes_body {
            "`server_busy`: the server holds as much request data as it may (`Retry-After: 1`); \
             `unavailable`: it is shutting down."
        } else {
            "`unavailable`: the server is shutting down; retry."
        }
        .into(),
    ));
    if writes {
        failures.push((
            507,
            "`storage_full`: the database is at its configured cap or its disk is full; \
             `Retry-After` says when to retry."
                .into(),
        ));
    }
    // A status the handler documents itself keeps its words, followed by
    // what every route of its kind may also answer with it.
    for (status, description) in failures {
        match op.responses.responses.entry(status.to_string()) {
            std::collections::btree_map::Entry::Vacant(entry) => {
                entry.insert(error_response(&description).into());
            }
            std::collections::btree_map::Entry::Occupied(mut entry) => {
                if let RefOr::T(response) = entry.get_mut() {
                    if !response.description.contains(&description) {
                        response.description = format!("{}; {description}", response.description);
                    }
                }
            }
        }
    }
}

/// A failure's response: its description and the error body.
pub fn error_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
}

fn forbidden(spec: &RouteSpec) -> String {
    let access = spec.access;
    let mut reasons = Vec::new();
    match (access.auth, access.scope) {
        (Auth::Session, _) | (_, None) => {
            reasons.push("`session_required`: API keys may not call this route")
        }
        (_, Some(KeyScope::Query)) => {
            reasons.push("`scope_forbidden`: the key's scopes do not include `query`")
        }
        (_, Some(KeyScope::Ingest)) => {
            reasons.push("`scope_forbidden`: the key's scopes do not include `ingest`")
        }
        (_, Some(KeyScope::Unscoped)) => {
            reasons.push("`scope_forbidden`: only keys without scopes may call this route")
        }
    }
    match access.roles {
        Roles::Any => {}
        Roles::Member => reasons.push("`forbidden_role`: viewers may not call this route"),
        Roles::Owner => reasons.push("`forbidden_role`: only owners may call this route"),
        Roles::Auditor => {
            reasons.push("`forbidden_role`: only owners and viewers may call this route")
        }
    }
    if spec.method != Method::GET {
        reasons.push(
            "`csrf_rejected`: a change sent with the session cookie did not come from this \
             server's pages",
        );
    }
    reasons.join("; ")
}

fn access_json(spec: &RouteSpec) -> serde_json::Value {
    let access = spec.access;
    serde_json::json!({
        "auth": match access.auth {
            Auth::Public => "public",
            Auth::KeyOrSession => "api_key_or_session",
            Auth::Session => "session",
        },
        "key_scope": match access.scope {
            None => None,
            Some(KeyScope::Query) => Some("query"),
            Some(KeyScope::Ingest) => Some("ingest"),
            Some(KeyScope::Unscoped) => Some("unscoped"),
        },
        "roles": Role::ALL
            .into_iter()
            .filter(|r| access.roles.allows(*r))
            .map(Role::as_str)
            .collect::<Vec<_>>(),
        "rate_family": access.family.name(),
    })
}

/// The one operation of a handler's `Paths`, with its method and path.
pub fn single_operation(
    paths: utoipa::openapi::path::Paths,
) -> Option<(Method, String, Operation)> {
    let mut entries = paths.paths.into_iter();
    let (path, item) = entries.next()?;
    if entries.next().is_some() {
        return None;
    }
    let PathItem {
        get,
        put,
        post,
        delete,
        patch,
        ..
    } = item;
    let mut operations = [
        (Method::GET, get),
        (Method::PUT, put),
        (Method::POST, post),
        (Method::DELETE, delete),
        (Method::PATCH, patch),
    ]
    .into_iter()
    .filter_map(|(method, op)| op.map(|op| (method, op)));
    let (method, operation) = operations.next()?;
    if operations.next().is_some() {
        return None;
    }
    Some((method, path, operation))
}
