//! Every route and every layer of the server, on one screen. The route
//! table says who may call each route (credential, key scope, session
//! roles) and which rate family it counts against; each row is handed to
//! the `Principal` extractor, which enforces it, and the access tests are
//! generated from it, so a new route cannot escape them.
//!
//! Layers, outermost first: request context (request id, task-local id for
//! error bodies, one log line per request) → JSON error bodies for any
//! refusal → body limit and body timeout → security headers → the request's
//! memory charges → rate-limit headers → route handler, whose `Principal`
//! extractor authenticates and authorizes.

use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::Router;
use tower_http::timeout::RequestBodyTimeoutLayer;
use utoipa_axum::router::UtoipaMethodRouter;
use utoipa_axum::routes;

use super::extract::BodyLimit;
use super::limits::Family;
use super::openapi::{self, DocumentedRoute};
use super::principal::Role;
use super::{
    account, anomalies, audit, budget, ci_gate, datasets, dsr, eval_keys, eval_rules, eval_runs,
    eval_summaries, eval_versions, evals, export, failure_rules, failures, feedback, governance,
    health, ingest, ingestion_health, limits, live, metrics, otlp, projects, saved_filters, search,
    sessions, telemetry, traces, ui, webhooks, AppState,
};
use crate::error::{json_errors, AppError, REQUEST_ID};

/// How long a client may take to send a request body.
const BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// How a caller authenticates for a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// No credentials needed.
    Public,
    /// An API key (within its scopes) or a user session.
    KeyOrSession,
    /// A user session only; a key gets 403 `session_required`.
    Session,
}

/// What an API key's scopes must allow for a route. A key without scopes
/// may do all that keys may; one with scopes only what they name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyScope {
    /// Keys with the `query` scope: reads.
    Query,
    /// Keys with the `ingest` scope: sending telemetry, feedback, evaluations.
    Ingest,
    /// Keys without scopes only (configuration a key may change).
    Unscoped,
}

impl KeyScope {
    /// Whether a key with `scopes` may call a route needing this.
    pub fn allows(self, scopes: &[String]) -> bool {
        let has = |name: &str| scopes.iter().any(|s| s == name);
        scopes.is_empty()
            || match self {
                KeyScope::Query => has("query"),
                KeyScope::Ingest => has("ingest"),
                KeyScope::Unscoped => false,
            }
    }
}

/// Which user roles a session needs for a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Roles {
    /// Every role, viewers included.
    Any,
    /// Members and owners.
    Member,
    /// Owners.
    Owner,
    /// Owners and viewers (the audit log: oversight, not operation).
    Auditor,
}

impl Roles {
    pub fn allows(self, role: Role) -> bool {
        match self {
            Roles::Any => true,
            Roles::Member => role >= Role::Member,
            Roles::Owner => role == Role::Owner,
            Roles::Auditor => matches!(role, Role::Owner | Role::Viewer),
        }
    }
}

/// Who may call a route and how it is counted: its row of the table,
/// given to the `Principal` extractor, which enforces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    pub auth: Auth,
    /// What a key needs; `None`: keys may not call it.
    pub scope: Option<KeyScope>,
    pub roles: Roles,
    /// The family of endpoints whose request rate it counts against.
    pub family: Family,
}

/// One route: method, path, who may call it, and how it goes beyond the
/// hosted service's reference.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub method: Method,
    /// As the API document writes it (`/v1/traces/{id}`).
    pub path: String,
    pub access: Access,
    /// `None`: the hosted service's reference has this operation, and this
    /// server serves it as documented there. Otherwise what it adds.
    pub beyond_reference: Option<&'static str>,
    /// The route reports what of a body it refuses in its success answer
    /// (OTLP's `partial_success`) instead of a 422.
    pub refusals_in_answer: bool,
}

/// The body limit of a route that takes more than `limits.json_body_max_bytes`:
/// hyper's own limit, and the figure the route's 413 names.
#[derive(Clone, Copy)]
struct LargeBody(usize);

/// A row of the table: the route, its handler, and its documentation.
struct Row {
    route: DocumentedRoute,
    handler: MethodRouter<AppState>,
}

impl Row {
    /// The route takes bodies up to `limit`, beyond `limits.json_body_max_bytes`.
    fn large_body(mut self, limit: LargeBody) -> Row {
        self.handler = self
            .handler
            .layer::<_, std::convert::Infallible>(DefaultBodyLimit::max(limit.0))
            .layer::<_, std::convert::Infallible>(axum::Extension(BodyLimit(limit.0)));
        self
    }

    /// The route answers what of a body it refuses in its success answer.
    fn refusals_in_answer(mut self) -> Row {
        self.route.spec.refusals_in_answer = true;
        self
    }

    /// The same handler and operation served at another path too, under
    /// its own operation id.
    fn also_at(&self, path: &str, operation_id: &str) -> Row {
        let mut route = DocumentedRoute {
            spec: self.route.spec.clone(),
            operation: self.route.operation.clone(),
            schemas: Vec::new(),
        };
        route.spec.path = path.to_owned();
        route.operation.operation_id = Some(operation_id.to_owned());
        Row {
            route,
            handler: self.handler.clone(),
        }
    }

    /// The route is not in the hosted service's reference, or does more
    /// than it documents: what it adds.
    fn beyond_reference(mut self, what: &'static str) -> Row {
        self.route.spec.beyond_reference = Some(what);
        self
    }
}

/// Every route with its handler: who may call it (credential, key scope,
/// session roles) and its rate family. Method, path and the operation's
/// documentation come from the handler's `#[utoipa::path]`.
fn table(batch: LargeBody, otlp: LargeBody) -> Vec<Row> {
    use Auth::{KeyOrSession as Either, Public, Session};
    use Family::{Feedback, Ingest, Read};
    use KeyScope::{Ingest as Sends, Query as Reads, Unscoped};
    use Roles::{Any, Auditor, Member, Owner};
    let row = |auth: Auth,
               scope: Option<KeyScope>,
               roles: Roles,
               family: Family,
               (schemas, paths, handler): UtoipaMethodRouter<AppState>| {
        let access = Access {
            auth,
            scope,
            roles,
            family,
        };
        let Some((method, path, operation)) = openapi::single_operation(paths) else {
            panic!("a handler of the route table documents exactly one operation");
        };
        Row {
            route: DocumentedRoute {
                spec: RouteSpec {
                    method,
                    path,
                    access,
                    beyond_reference: None,
                    refusals_in_answer: false,
                },
                operation,
                schemas,
            },
            handler: handler.layer::<_, std::convert::Infallible>(axum::Extension(access)),
        }
    };
    #[rustfmt::skip]
    let mut rows = vec![
        row(Public, None, Any, Read, routes!(ui::index)).beyond_reference("The admin page."),
        row(Public, None, Any, Read, routes!(ui::docs)).beyond_reference("This reference, drawn in the browser from this document, with a console that sends its requests."),
        row(Public, None, Any, Read, routes!(ui::asset)).beyond_reference("The admin page's files."),
        row(Public, None, Any, Read, routes!(health::health)),
        row(Public, None, Any, Read, routes!(health::ready)).beyond_reference("Readiness for load balancers and systemd: the database, the disk and the evaluation queue."),
        row(Public, None, Any, Read, routes!(telemetry::main_listener)).beyond_reference("Prometheus metrics of the server (off unless configured)."),
        row(Public, None, Any, Read, routes!(openapi_json)).beyond_reference("This document, generated from the server's routes."),
        row(Either, Some(Sends), Member, Ingest, routes!(ingest::ingest_one)),
        row(Either, Some(Sends), Member, Ingest, routes!(ingest::ingest_batch)).large_body(batch).beyond_reference("Up to 10,000 traces a batch (the reference: 1,000), within `limits.batch_body_max_bytes`."),
        row(Session, None, Any, Read, routes!(otlp::export)),
        row(Public, None, Any, Read, routes!(account::login)).beyond_reference("Users and sessions of this server (the hosted service signs in elsewhere)."),
        // Viewers read; they may still manage their own login.
        row(Session, None, Any, Read, routes!(account::logout)).beyond_reference("Users and sessions of this server."),
        row(Session, None, Any, Read, routes!(account::me)).beyond_reference("Users and sessions of this server."),
        row(Session, None, Any, Read, routes!(account::change_password)).beyond_reference("Users and sessions of this server."),
        row(Session, None, Any, Read, routes!(account::list_users)).beyond_reference("Users of this server."),
        row(Session, None, Owner, Read, routes!(account::create_user)).beyond_reference("Users of this server."),
        row(Session, None, Owner, Read, routes!(account::update_user)).beyond_reference("Users of this server."),
        row(Session, None, Owner, Read, routes!(account::delete_user)).beyond_reference("Users of this server."),
        row(Either, Some(Reads), Any, Read, routes!(projects::list)),
        row(Session, None, Member, Read, routes!(projects::create)),
        row(Session, None, Member, Read, routes!(projects::update)),
        row(Session, None, Owner, Read, routes!(projects::archive)),
        row(Session, None, Owner, Read, routes!(projects::unarchive)),
        row(Session, None, Any, Read, routes!(projects::list_keys)),
        row(Session, None, Member, Read, routes!(projects::create_key)),
        row(Session, None, Owner, Read, routes!(projects::revoke_key)),
        row(Session, None, Owner, Read, routes!(projects::rotate_key)),
        row(Session, None, Auditor, Read, routes!(audit::list)).beyond_reference("The audit log's entries (the reference publishes only the daily anchor)."),
        row(Public, None, Any, Read, routes!(audit::verify)),
        row(Either, Some(Sends), Member, Feedback, routes!(feedback::create)),
        row(Either, Some(Sends), Member, Feedback, routes!(evals::trigger)),
        row(Either, Some(Reads), Any, Read, routes!(evals::list)),
        row(Either, Some(Reads), Any, Read, routes!(evals::export)),
        row(Either, Some(Reads), Any, Read, routes!(eval_summaries::trends)),
        row(Either, Some(Reads), Any, Read, routes!(eval_summaries::histogram)),
        row(Either, Some(Reads), Any, Read, routes!(eval_summaries::compare)),
        row(Either, Some(Reads), Any, Read, routes!(eval_summaries::agreement)).beyond_reference("How often two evaluators agree on the same traces."),
        row(Either, Some(Reads), Any, Read, routes!(evals::detail)),
        row(Public, None, Any, Read, routes!(evals::catalog)),
        row(Either, Some(Reads), Any, Read, routes!(eval_rules::list)),
        row(Either, Some(Unscoped), Member, Read, routes!(eval_rules::create)),
        row(Either, Some(Unscoped), Member, Read, routes!(eval_rules::update)),
        row(Either, Some(Unscoped), Member, Read, routes!(eval_rules::delete)),
        row(Either, Some(Reads), Any, Read, routes!(metrics::metrics)),
        row(Either, Some(Reads), Any, Read, routes!(failures::clusters)).beyond_reference("`limit` (1–200, default 50); each cluster adds the newest trace's own message and the failure class its shape names; `from` defaults to 24 hours before `to`."),
        row(Either, Some(Reads), Any, Read, routes!(projects::metric)).beyond_reference("Trace counts, errors, tokens and latency percentiles from the rollups, beside the reference's `retry_cap_hit`."),
        row(Either, Some(Reads), Any, Read, routes!(datasets::list)),
        row(Either, Some(Unscoped), Member, Read, routes!(datasets::create)).beyond_reference("`project_id` names the project whose evaluation rules score the dataset's runs; names are unique (409)."),
        row(Either, Some(Reads), Any, Read, routes!(datasets::detail)),
        row(Either, Some(Unscoped), Member, Read, routes!(datasets::delete)).beyond_reference("Runs and versions go with the dataset; the deletion is audited."),
        row(Either, Some(Reads), Any, Read, routes!(datasets::list_items)),
        row(Either, Some(Sends), Member, Feedback, routes!(datasets::add_item)).beyond_reference("Idempotent: the same trace and span again answers 200 with the item there; the item keeps the trace's input and output."),
        row(Either, Some(Sends), Member, Feedback, routes!(datasets::patch_item)),
        row(Either, Some(Unscoped), Member, Read, routes!(datasets::remove_item)).beyond_reference("Removes an item from a dataset."),
        row(Either, Some(Reads), Any, Read, routes!(datasets::export)).beyond_reference("Each row carries the item's input and output after the reference's columns."),
        row(Either, Some(Unscoped), Member, Read, routes!(eval_versions::create_version)),
        row(Either, Some(Reads), Any, Read, routes!(eval_versions::list_versions)),
        row(Either, Some(Sends), Member, Feedback, routes!(eval_runs::schedule)),
        row(Either, Some(Reads), Any, Read, routes!(eval_runs::list)),
        row(Either, Some(Reads), Any, Read, routes!(eval_runs::detail)),
        row(Either, Some(Sends), Member, Feedback, routes!(eval_runs::cancel)).beyond_reference("Cancels a run."),
        row(Either, Some(Reads), Any, Read, routes!(eval_runs::export)),
        row(Either, Some(Reads), Any, Read, routes!(eval_runs::diff)),
        row(Either, Some(Reads), Any, Read, routes!(ci_gate::gate)),
        row(Either, Some(Reads), Any, Read, routes!(search::spans)),
        row(Either, Some(Reads), Any, Read, routes!(sessions::list)).beyond_reference("Traces grouped by session."),
        row(Either, Some(Reads), Any, Read, routes!(sessions::detail)).beyond_reference("Traces grouped by session."),
        row(Either, Some(Reads), Any, Read, routes!(traces::list)),
        row(Either, Some(Reads), Any, Read, routes!(export::export)),
        row(Either, Some(Reads), Any, Read, routes!(live::live)),
        row(Either, Some(Reads), Any, Read, routes!(traces::detail)),
        row(Either, Some(Reads), Any, Read, routes!(webhooks::list)),
        row(Either, Some(Unscoped), Member, Read, routes!(webhooks::create)),
        row(Either, Some(Unscoped), Owner, Read, routes!(webhooks::delete)),
        row(Either, Some(Unscoped), Member, Read, routes!(webhooks::test)),
        row(Either, Some(Reads), Any, Read, routes!(webhooks::deliveries)).beyond_reference("Each webhook's recent deliveries with their status, attempts, last error and response status."),
        // Alerts: failure rules and the anomalies they and the detector raise.
        row(Either, Some(Reads), Any, Read, routes!(failure_rules::list)).beyond_reference("Each rule's `project_id`, `min_samples`, `score_metric`, `state` and `open_anomaly_id`."),
        row(Either, Some(Unscoped), Member, Read, routes!(failure_rules::create)).beyond_reference("Metrics `latency_p50`, `cost` and `volume` beside the reference's; `project_id` (one project, or all), `min_samples` and `score_metric`; evaluated continuously from the rollups, firing once per episode (`failure.detected`) and recovering (`failure.recovered`); at most `alerts.max_rules` rules per organisation."),
        row(Either, Some(Reads), Any, Read, routes!(failure_rules::get)).beyond_reference("Each rule's `project_id`, `min_samples`, `score_metric`, `state` and `open_anomaly_id`."),
        row(Either, Some(Unscoped), Member, Read, routes!(failure_rules::update)).beyond_reference("Turning a rule off or pointing it elsewhere ends its open episode with a `failure.recovered` event."),
        row(Either, Some(Unscoped), Owner, Read, routes!(failure_rules::delete)).beyond_reference("Ends the rule's open episode with a `failure.recovered` event; its anomalies stay."),
        row(Either, Some(Reads), Any, Read, routes!(anomalies::list)).beyond_reference("Types `cost_spike` and `score_drop` beside the reference's; each anomaly's source (a rule or the built-in detector), metric, value, threshold or baseline, status and `recovered_at`; filters `status`, `type`, `severity`, `source`, `rule_id`, `project_id`, `from`, `to`, and `has_more`."),
        row(Either, Some(Reads), Any, Read, routes!(anomalies::get)).beyond_reference("Each anomaly's source, metric, value, threshold or baseline, status and `recovered_at`."),
        // Governance: saved filters, compliance, members, billing.
        row(Session, None, Any, Read, routes!(saved_filters::list)).beyond_reference("A project's id, slug or name; an unknown project has none."),
        row(Session, None, Member, Read, routes!(saved_filters::create)).beyond_reference("`filters` holds the trace list's query parameters, checked as the list checks them (400 naming the parameter); an unknown project is 404."),
        row(Session, None, Member, Read, routes!(saved_filters::update)).beyond_reference("`filters` is checked as the trace list checks its query (400 naming the parameter)."),
        row(Session, None, Owner, Read, routes!(saved_filters::delete)),
        row(Session, None, Any, Read, routes!(governance::remediations)),
        row(Either, Some(Reads), Any, Read, routes!(governance::deprecations)),
        row(Public, None, Any, Read, routes!(governance::subprocessors)),
        row(Public, None, Any, Read, routes!(governance::subscribe)).beyond_reference("The answer's `message` says that no mail is sent; the list keeps at most 10,000 addresses (409 `subscribers_full`)."),
        row(Public, None, Any, Read, routes!(governance::unsubscribe)).beyond_reference("The answer's `message` says that no mail is sent."),
        row(Session, None, Any, Read, routes!(governance::key_count)),
        row(Session, None, Any, Read, routes!(governance::leave)).beyond_reference("Clears the session cookie; the departure is audited as `user.leave`."),
        row(Session, None, Owner, Read, routes!(governance::checkout)).beyond_reference("No billing: always 422 `billing_not_available` (the operator sets plans)."),
        row(Session, None, Owner, Read, routes!(governance::portal)),
        row(Session, None, Owner, Read, routes!(governance::invoices)),
        row(Either, Some(Reads), Any, Read, routes!(ingestion_health::report)).beyond_reference("`traces_received`, `spans_received`, `requests` (ingest requests accepted and refused, by error code) and `backlog` (evaluations waiting, traces not yet searchable); `project_id` takes an id, slug or name."),
        row(Either, Some(Reads), Any, Read, routes!(eval_keys::list)).beyond_reference("Each key's `hint`: its last four characters."),
        row(Either, Some(Unscoped), Owner, Read, routes!(eval_keys::upsert)).beyond_reference("Sealed with the operator's `[encryption]` key (409 `encryption_not_configured` without one); the answer carries the key's `hint`."),
        row(Either, Some(Unscoped), Owner, Read, routes!(eval_keys::revoke)),
        // Data subject requests: owners only (the reference lets members in too).
        row(Session, None, Owner, Read, routes!(dsr::create)).beyond_reference("Owners only. The answer also carries `counts` (what was erased or exported), `export_bytes` and `export_expires_at`; `export_url` is this server's own download route."),
        row(Session, None, Owner, Read, routes!(dsr::list)).beyond_reference("Owners only; each request carries `counts`, `export_bytes` and `export_expires_at`."),
        row(Session, None, Owner, Read, routes!(dsr::detail)).beyond_reference("Owners only; the request carries `counts`, `export_bytes` and `export_expires_at`."),
        row(Session, None, Owner, Read, routes!(dsr::download)).beyond_reference("The export file of a completed `export` request, served by this server for `privacy.export_keep_h` hours."),
    ];
    // OpenTelemetry exporters append `/v1/traces` to a base endpoint.
    let otlp_row = row(Either, Some(Sends), Member, Ingest, routes!(otlp::traces))
        .large_body(otlp)
        .refusals_in_answer();
    let standard_path = otlp_row
        .also_at("/v1/otlp/v1/traces", "otlpIngestTracesStandardPath")
        .beyond_reference(
            "`POST /v1/otlp/traces` at the path OpenTelemetry exporters append to a base \
             endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT=https://host/v1/otlp`).",
        );
    rows.extend([otlp_row, standard_path]);
    rows
}

/// Every route the server serves, with who may call it.
pub fn routes() -> Vec<RouteSpec> {
    table(LargeBody(0), LargeBody(0))
        .into_iter()
        .map(|row| row.route.spec)
        .collect()
}

/// The API's OpenAPI document, generated from the table.
pub fn api_document() -> utoipa::openapi::OpenApi {
    openapi::document(
        table(LargeBody(0), LargeBody(0))
            .into_iter()
            .map(|row| row.route)
            .collect(),
    )
}

/// This document, served as built at start-up.
#[utoipa::path(get, path = "/v1/openapi.json", operation_id = "getOpenApiDocument", tag = "service", responses((status = 200, description = "The OpenAPI 3.1 document of this server's API.", content_type = "application/json")))]
async fn openapi_json(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        state.openapi.clone(),
    )
        .into_response()
}

/// The path axum matches for a documented path: a last `{path}` takes the
/// rest of the path, slashes included.
fn axum_path(documented: &str) -> String {
    match documented.strip_suffix("{path}") {
        Some(prefix) => format!("{prefix}{{*path}}"),
        None => documented.to_owned(),
    }
}

pub fn router(state: AppState) -> Router {
    let limits = &state.config.limits;
    let body_limit = limits.json_body_max_bytes;
    table(
        LargeBody(limits.batch_body_max_bytes),
        LargeBody(limits.otlp_body_max_bytes),
    )
    .into_iter()
    // Routes on one path with different methods merge.
    .fold(Router::new(), |router, row| {
        router.route(&axum_path(&row.route.spec.path), row.handler)
    })
    .fallback(not_found)
    .method_not_allowed_fallback(method_not_allowed)
    .layer(middleware::from_fn(limits::rate_headers))
    .layer(middleware::from_fn(budget::hold_charges))
    .layer(middleware::from_fn_with_state(
        state.clone(),
        ui::security_headers,
    ))
    .layer(DefaultBodyLimit::max(body_limit))
    .layer(RequestBodyTimeoutLayer::new(BODY_TIMEOUT))
    .layer(middleware::from_fn(json_errors))
    .layer(middleware::from_fn_with_state(
        state.clone(),
        ingestion_health::count_ingest,
    ))
    .layer(middleware::from_fn_with_state(
        state.clone(),
        request_context,
    ))
    .with_state(state)
}

/// The router of the separate metrics listener (`[metrics] listen`).
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(telemetry::own_listener))
        .fallback(not_found)
        .with_state(state)
}

async fn not_found() -> AppError {
    AppError::NotFound("route")
}

async fn method_not_allowed() -> AppError {
    AppError::MethodNotAllowed
}

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Gives the request an id (the caller's, if it sent a sane one), makes it
/// available to error bodies, sets the response header and logs the request.
async fn request_context(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let id = req
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_owned();
    let mut response = REQUEST_ID.scope(id.clone(), next.run(req)).await;
    state.metrics.record_request(
        method.as_str(),
        &route,
        response.status().as_u16(),
        started.elapsed(),
    );
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(X_REQUEST_ID.clone(), value);
    }
    tracing::info!(
        target: "trulayer::http",
        method = %method,
        path = %path,
        status = response.status().as_u16(),
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        request_id = %id,
        "request"
    );
    response
}
