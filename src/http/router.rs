//! Every route and every layer of the server, on one screen.
//!
//! Layers, outermost first: request context (request id, task-local id for
//! error bodies, one log line per request) → body limit and body timeout →
//! route handler, whose `Principal` extractor authenticates.

use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use tower_http::timeout::RequestBodyTimeoutLayer;

use axum::routing::{delete, patch};

use super::{account, audit, health, ingest, limits, otlp, projects, traces, AppState};
use crate::error::{AppError, REQUEST_ID};

/// How long a client may take to send a request body.
const BODY_TIMEOUT: Duration = Duration::from_secs(60);

pub fn router(state: AppState) -> Router {
    let body_limit = state.config.limits.json_body_max_bytes;
    let otlp_limit = DefaultBodyLimit::max(state.config.limits.otlp_body_max_bytes);
    Router::new()
        .route("/health", get(health::health))
        .route("/v1/ingest", post(ingest::ingest_one))
        .route("/v1/ingest/batch", post(ingest::ingest_batch))
        .route("/v1/otlp/traces", post(otlp::traces).layer(otlp_limit))
        .route("/v1/otlp/v1/traces", post(otlp::traces).layer(otlp_limit))
        .route("/v1/otlp/export", get(otlp::export))
        .route("/v1/auth/login", post(account::login))
        .route("/v1/auth/logout", post(account::logout))
        .route("/v1/auth/me", get(account::me))
        .route("/v1/auth/password", post(account::change_password))
        .route(
            "/v1/users",
            get(account::list_users).post(account::create_user),
        )
        .route(
            "/v1/users/{id}",
            patch(account::update_user).delete(account::delete_user),
        )
        .route("/v1/projects", get(projects::list).post(projects::create))
        .route("/v1/projects/{id}", patch(projects::update))
        .route("/v1/projects/{id}/archive", post(projects::archive))
        .route("/v1/projects/{id}/unarchive", post(projects::unarchive))
        .route(
            "/v1/apikeys",
            get(projects::list_keys).post(projects::create_key),
        )
        .route("/v1/apikeys/{id}", delete(projects::revoke_key))
        .route("/v1/apikeys/{id}/rotate", post(projects::rotate_key))
        .route("/v1/audit-log", get(audit::list))
        .route("/v1/audit/verify", get(audit::verify))
        .route("/v1/traces", get(traces::list))
        .route("/v1/traces/{id}", get(traces::detail))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(limits::rate_headers))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(RequestBodyTimeoutLayer::new(BODY_TIMEOUT))
        .layer(middleware::from_fn(request_context))
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
async fn request_context(req: Request, next: Next) -> Response {
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
    let mut response = REQUEST_ID.scope(id.clone(), next.run(req)).await;
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
