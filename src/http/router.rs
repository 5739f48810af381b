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
use axum::response::Response;
use axum::routing::{delete, get, patch, post, MethodRouter};
use axum::Router;
use tower_http::timeout::RequestBodyTimeoutLayer;

use super::extract::BodyLimit;
use super::limits::Family;
use super::principal::Role;
use super::{
    account, audit, budget, eval_rules, eval_summaries, evals, export, feedback, health, ingest,
    limits, live, metrics, otlp, projects, search, sessions, telemetry, traces, ui, AppState,
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

/// Every route with its handler: method, path, who may call it (credential,
/// key scope, session roles) and its rate family.
fn table(batch: LargeBody, otlp: LargeBody) -> Vec<(RouteSpec, MethodRouter<AppState>)> {
    use Auth::{KeyOrSession as Either, Public, Session};
    use Family::{Feedback, Ingest, Read};
    use KeyScope::{Ingest as Sends, Query as Reads, Unscoped};
    use Method as M;
    use Roles::{Any, Auditor, Member, Owner};
    let row = |method: Method,
               path: &'static str,
               auth: Auth,
               scope: Option<KeyScope>,
               roles: Roles,
               family: Family,
               handler: MethodRouter<AppState>| {
        let access = Access {
            auth,
            scope,
            roles,
            family,
        };
        (
            RouteSpec {
                method,
                path,
                access,
            },
            handler.layer::<_, std::convert::Infallible>(axum::Extension(access)),
        )
    };
    #[rustfmt::skip]
    let rows = vec![
        row(M::GET, "/", Public, None, Any, Read, get(ui::index)),
        row(M::GET, "/assets/{*path}", Public, None, Any, Read, get(ui::asset)),
        row(M::GET, "/health", Public, None, Any, Read, get(health::health)),
        row(M::GET, "/ready", Public, None, Any, Read, get(health::ready)),
        row(M::GET, "/metrics", Public, None, Any, Read, get(telemetry::main_listener)),
        row(M::POST, "/v1/ingest", Either, Some(Sends), Member, Ingest, post(ingest::ingest_one)),
        row(M::POST, "/v1/ingest/batch", Either, Some(Sends), Member, Ingest, batch.on(post(ingest::ingest_batch))),
        row(M::POST, "/v1/otlp/traces", Either, Some(Sends), Member, Ingest, otlp.on(post(otlp::traces))),
        row(M::POST, "/v1/otlp/v1/traces", Either, Some(Sends), Member, Ingest, otlp.on(post(otlp::traces))),
        row(M::GET, "/v1/otlp/export", Session, None, Any, Read, get(otlp::export)),
        row(M::POST, "/v1/auth/login", Public, None, Any, Read, post(account::login)),
        // Viewers read; they may still manage their own login.
        row(M::POST, "/v1/auth/logout", Session, None, Any, Read, post(account::logout)),
        row(M::GET, "/v1/auth/me", Session, None, Any, Read, get(account::me)),
        row(M::POST, "/v1/auth/password", Session, None, Any, Read, post(account::change_password)),
        row(M::GET, "/v1/users", Session, None, Any, Read, get(account::list_users)),
        row(M::POST, "/v1/users", Session, None, Owner, Read, post(account::create_user)),
        row(M::PATCH, "/v1/users/{id}", Session, None, Owner, Read, patch(account::update_user)),
        row(M::DELETE, "/v1/users/{id}", Session, None, Owner, Read, delete(account::delete_user)),
        row(M::GET, "/v1/projects", Either, Some(Reads), Any, Read, get(projects::list)),
        row(M::POST, "/v1/projects", Session, None, Member, Read, post(projects::create)),
        row(M::PATCH, "/v1/projects/{id}", Session, None, Member, Read, patch(projects::update)),
        row(M::POST, "/v1/projects/{id}/archive", Session, None, Owner, Read, post(projects::archive)),
        row(M::POST, "/v1/projects/{id}/unarchive", Session, None, Owner, Read, post(projects::unarchive)),
        row(M::GET, "/v1/apikeys", Session, None, Any, Read, get(projects::list_keys)),
        row(M::POST, "/v1/apikeys", Session, None, Member, Read, post(projects::create_key)),
        row(M::DELETE, "/v1/apikeys/{id}", Session, None, Owner, Read, delete(projects::revoke_key)),
        row(M::POST, "/v1/apikeys/{id}/rotate", Session, None, Owner, Read, post(projects::rotate_key)),
        row(M::GET, "/v1/audit-log", Session, None, Auditor, Read, get(audit::list)),
        row(M::GET, "/v1/audit/verify", Public, None, Any, Read, get(audit::verify)),
        row(M::POST, "/v1/feedback", Either, Some(Sends), Member, Feedback, post(feedback::create)),
        row(M::POST, "/v1/eval", Either, Some(Sends), Member, Feedback, post(evals::trigger)),
        row(M::GET, "/v1/eval", Either, Some(Reads), Any, Read, get(evals::list)),
        row(M::GET, "/v1/eval/export", Either, Some(Reads), Any, Read, get(evals::export)),
        row(M::GET, "/v1/eval/trends", Either, Some(Reads), Any, Read, get(eval_summaries::trends)),
        row(M::GET, "/v1/eval/histogram", Either, Some(Reads), Any, Read, get(eval_summaries::histogram)),
        row(M::GET, "/v1/eval/compare", Either, Some(Reads), Any, Read, get(eval_summaries::compare)),
        row(M::GET, "/v1/eval/agreement", Either, Some(Reads), Any, Read, get(eval_summaries::agreement)),
        row(M::GET, "/v1/eval/{id}", Either, Some(Reads), Any, Read, get(evals::detail)),
        row(M::GET, "/v1/eval-catalog", Public, None, Any, Read, get(evals::catalog)),
        row(M::GET, "/v1/eval-rules", Either, Some(Reads), Any, Read, get(eval_rules::list)),
        row(M::POST, "/v1/eval-rules", Either, Some(Unscoped), Member, Read, post(eval_rules::create)),
        row(M::PATCH, "/v1/eval-rules/{id}", Either, Some(Unscoped), Member, Read, patch(eval_rules::update)),
        row(M::DELETE, "/v1/eval-rules/{id}", Either, Some(Unscoped), Member, Read, delete(eval_rules::delete)),
        row(M::GET, "/v1/metrics", Either, Some(Reads), Any, Read, get(metrics::metrics)),
        row(M::GET, "/v1/search/spans", Either, Some(Reads), Any, Read, get(search::spans)),
        row(M::GET, "/v1/sessions", Either, Some(Reads), Any, Read, get(sessions::list)),
        row(M::GET, "/v1/sessions/{id}", Either, Some(Reads), Any, Read, get(sessions::detail)),
        row(M::GET, "/v1/traces", Either, Some(Reads), Any, Read, get(traces::list)),
        row(M::GET, "/v1/traces/export", Either, Some(Reads), Any, Read, get(export::export)),
        row(M::GET, "/v1/traces/live", Either, Some(Reads), Any, Read, get(live::live)),
        row(M::GET, "/v1/traces/{id}", Either, Some(Reads), Any, Read, get(traces::detail)),
    ];
    rows
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
