//! Every route and every layer of the server, on one screen. The route
//! table says who may call each route; the access tests are generated from
//! it, so a new route cannot escape them.
//!
//! Layers, outermost first: request context (request id, task-local id for
//! error bodies, one log line per request) → body limit and body timeout →
//! route handler, whose `Principal` extractor authenticates.

use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, patch, post, MethodRouter};
use axum::Router;
use tower_http::timeout::RequestBodyTimeoutLayer;

use super::extract::BodyLimit;
use super::{
    account, audit, budget, eval_rules, eval_summaries, evals, export, feedback, health, ingest,
    limits, live, metrics, otlp, projects, search, sessions, telemetry, traces, ui, AppState,
};
use crate::error::{json_errors, AppError, REQUEST_ID};

/// How long a client may take to send a request body.
const BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// Who may call a route; the route table states it for every route and
/// the access tests are generated from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credentials needed.
    Public,
    /// An API key (within its scopes) or a session.
    Key,
    /// A session of any role.
    Session,
    /// A session of a member or owner.
    Member,
    /// A session of an owner.
    Owner,
    /// A session of an owner or viewer (the audit log).
    AuditReader,
}

/// One route: method, path, and who may call it.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
}

/// The body limit of a route that takes more than `limits.json_body_max_bytes`:
/// hyper's own limit, and the figure the route's 413 names.
#[derive(Clone, Copy)]
struct LargeBody(usize);

impl LargeBody {
    fn on(self, route: MethodRouter<AppState>) -> MethodRouter<AppState> {
        route
            .layer::<_, std::convert::Infallible>(DefaultBodyLimit::max(self.0))
            .layer::<_, std::convert::Infallible>(axum::Extension(BodyLimit(self.0)))
    }
}

/// Every route with its handler.
fn table(batch: LargeBody, otlp: LargeBody) -> Vec<(RouteSpec, MethodRouter<AppState>)> {
    use Access::*;
    let spec = |method: Method, path: &'static str, access: Access| RouteSpec {
        method,
        path,
        access,
    };
    vec![
        (spec(Method::GET, "/", Public), get(ui::index)),
        (spec(Method::GET, "/assets/{*path}", Public), get(ui::asset)),
        (spec(Method::GET, "/health", Public), get(health::health)),
        (spec(Method::GET, "/ready", Public), get(health::ready)),
        (
            spec(Method::GET, "/metrics", Public),
            get(telemetry::main_listener),
        ),
        (
            spec(Method::POST, "/v1/ingest", Key),
            post(ingest::ingest_one),
        ),
        (
            spec(Method::POST, "/v1/ingest/batch", Key),
            batch.on(post(ingest::ingest_batch)),
        ),
        (
            spec(Method::POST, "/v1/otlp/traces", Key),
            otlp.on(post(otlp::traces)),
        ),
        (
            spec(Method::POST, "/v1/otlp/v1/traces", Key),
            otlp.on(post(otlp::traces)),
        ),
        (
            spec(Method::GET, "/v1/otlp/export", Session),
            get(otlp::export),
        ),
        (
            spec(Method::POST, "/v1/auth/login", Public),
            post(account::login),
        ),
        (
            spec(Method::POST, "/v1/auth/logout", Session),
            post(account::logout),
        ),
        (spec(Method::GET, "/v1/auth/me", Session), get(account::me)),
        (
            spec(Method::POST, "/v1/auth/password", Session),
            post(account::change_password),
        ),
        (
            spec(Method::GET, "/v1/users", Session),
            get(account::list_users),
        ),
        (
            spec(Method::POST, "/v1/users", Owner),
            post(account::create_user),
        ),
        (
            spec(Method::PATCH, "/v1/users/{id}", Owner),
            patch(account::update_user),
        ),
        (
            spec(Method::DELETE, "/v1/users/{id}", Owner),
            delete(account::delete_user),
        ),
        (spec(Method::GET, "/v1/projects", Key), get(projects::list)),
        (
            spec(Method::POST, "/v1/projects", Member),
            post(projects::create),
        ),
        (
            spec(Method::PATCH, "/v1/projects/{id}", Member),
            patch(projects::update),
        ),
        (
            spec(Method::POST, "/v1/projects/{id}/archive", Owner),
            post(projects::archive),
        ),
        (
            spec(Method::POST, "/v1/projects/{id}/unarchive", Owner),
            post(projects::unarchive),
        ),
        (
            spec(Method::GET, "/v1/apikeys", Session),
            get(projects::list_keys),
        ),
        (
            spec(Method::POST, "/v1/apikeys", Member),
            post(projects::create_key),
        ),
        (
            spec(Method::DELETE, "/v1/apikeys/{id}", Owner),
            delete(projects::revoke_key),
        ),
        (
            spec(Method::POST, "/v1/apikeys/{id}/rotate", Owner),
            post(projects::rotate_key),
        ),
        (
            spec(Method::GET, "/v1/audit-log", AuditReader),
            get(audit::list),
        ),
        (
            spec(Method::GET, "/v1/audit/verify", AuditReader),
            get(audit::verify),
        ),
        (
            spec(Method::POST, "/v1/feedback", Key),
            post(feedback::create),
        ),
        (spec(Method::POST, "/v1/eval", Key), post(evals::trigger)),
        (spec(Method::GET, "/v1/eval", Key), get(evals::list)),
        (
            spec(Method::GET, "/v1/eval/export", Key),
            get(evals::export),
        ),
        (
            spec(Method::GET, "/v1/eval/trends", Key),
            get(eval_summaries::trends),
        ),
        (
            spec(Method::GET, "/v1/eval/histogram", Key),
            get(eval_summaries::histogram),
        ),
        (
            spec(Method::GET, "/v1/eval/compare", Key),
            get(eval_summaries::compare),
        ),
        (
            spec(Method::GET, "/v1/eval/agreement", Key),
            get(eval_summaries::agreement),
        ),
        (spec(Method::GET, "/v1/eval/{id}", Key), get(evals::detail)),
        (
            spec(Method::GET, "/v1/eval-catalog", Public),
            get(evals::catalog),
        ),
        (
            spec(Method::GET, "/v1/eval-rules", Key),
            get(eval_rules::list),
        ),
        (
            spec(Method::POST, "/v1/eval-rules", Key),
            post(eval_rules::create),
        ),
        (
            spec(Method::PATCH, "/v1/eval-rules/{id}", Key),
            patch(eval_rules::update),
        ),
        (
            spec(Method::DELETE, "/v1/eval-rules/{id}", Key),
            delete(eval_rules::delete),
        ),
        (spec(Method::GET, "/v1/metrics", Key), get(metrics::metrics)),
        (
            spec(Method::GET, "/v1/search/spans", Key),
            get(search::spans),
        ),
        (spec(Method::GET, "/v1/sessions", Key), get(sessions::list)),
        (
            spec(Method::GET, "/v1/sessions/{id}", Key),
            get(sessions::detail),
        ),
        (spec(Method::GET, "/v1/traces", Key), get(traces::list)),
        (
            spec(Method::GET, "/v1/traces/export", Key),
            get(export::export),
        ),
        (spec(Method::GET, "/v1/traces/live", Key), get(live::live)),
        (
            spec(Method::GET, "/v1/traces/{id}", Key),
            get(traces::detail),
        ),
    ]
}

/// Every route the server serves, with who may call it.
pub fn routes() -> Vec<RouteSpec> {
    table(LargeBody(0), LargeBody(0))
        .into_iter()
        .map(|(spec, _)| spec)
        .collect()
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
    .fold(Router::new(), |router, (spec, handler)| {
        router.route(spec.path, handler)
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
