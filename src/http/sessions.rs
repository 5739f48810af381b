//! `GET /v1/sessions` (most recently active first, cursor-paged) and
//! `GET /v1/sessions/{id}` (the session's traces in the order they started).

use axum::extract::{Path, State};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::query::{ApiQuery, Cursor, Page, ProjectParam, Sessions};
use super::{AppState, Principal};
use crate::error::{AppError, ErrorBody};
use crate::model::{Timestamp, Trace};
use crate::store::SessionSummary;

/// Lists sessions, most recently active first, with their totals.
///
/// A session is the traces that share a `session_id`.
#[utoipa::path(
    get,
    path = "/v1/sessions",
    operation_id = "listSessions",
    tag = "sessions",
    params(ProjectParam, Page<Sessions>),
    responses(
        (status = 200, description = "A page of sessions.", body = SessionListResponse),
        (status = 404, description = "`not_found`: the caller's organisation has no project `project_id`.", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(project): ApiQuery<ProjectParam>,
    ApiQuery(page): ApiQuery<Page<Sessions>>,
) -> Result<Json<SessionListResponse>, AppError> {
    let project_id = project.resolve(&state, &principal).await?;
    let found = state
        .store
        .list_sessions(principal.tenant_id, project_id, page.cursor, page.size())
        .await?;
    Ok(Json(SessionListResponse {
        sessions: found.sessions.into_iter().map(SessionItem::from).collect(),
        has_more: found.next.is_some(),
        next_cursor: found.next.map(|next| Cursor::<Sessions>::encode(&next)),
    }))
}

/// A page of the session list.
#[derive(Serialize, ToSchema)]
pub struct SessionListResponse {
    /// The sessions, the most recently active first.
    sessions: Vec<SessionItem>,
    /// Whether more sessions follow.
    has_more: bool,
    /// Where the next page starts (its `cursor`); null on the last page.
    next_cursor: Option<String>,
}

/// One session and its totals.
#[derive(Serialize, ToSchema)]
#[schema(as = Session)]
pub struct SessionItem {
    /// The session's id, as the traces carry it.
    session_id: String,
    /// How many traces it holds.
    trace_count: i64,
    /// Tokens of all its traces.
    total_tokens: i64,
    /// Cost of all its traces in USD; null when none has a cost.
    total_cost: Option<f64>,
    /// How many of its traces failed.
    error_count: i64,
    /// When its first trace started.
    #[schema(value_type = String, format = DateTime)]
    first_at: Timestamp,
    /// When its latest trace started.
    #[schema(value_type = String, format = DateTime)]
    last_at: Timestamp,
}

impl From<SessionSummary> for SessionItem {
    fn from(s: SessionSummary) -> Self {
        SessionItem {
            session_id: s.id,
            trace_count: s.traces,
            total_tokens: s.tokens,
            total_cost: s.cost,
            error_count: s.errors,
            first_at: Timestamp(s.first_at),
            last_at: Timestamp(s.last_at),
        }
    }
}

/// Gets a session's traces in the order they started.
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}",
    operation_id = "getSession",
    tag = "sessions",
    params(("id" = String, Path, description = "The session's id.")),
    responses((status = 200, description = "The session's traces.", body = SessionDetailResponse))
)]
pub async fn detail(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<SessionDetailResponse>, AppError> {
    let (traces, has_more) = state
        .store
        .session_traces(principal.tenant_id, id.clone())
        .await?;
    if traces.is_empty() {
        return Err(AppError::NotFound("session"));
    }
    Ok(Json(SessionDetailResponse {
        session_id: id,
        traces,
        has_more,
    }))
}

/// A session's traces.
#[derive(Serialize, ToSchema)]
pub struct SessionDetailResponse {
    session_id: String,
    /// Its traces in the order they started (as in the trace list: without
    /// spans and events), at most 1000.
    traces: Vec<Trace>,
    /// Whether it has more traces than the response holds.
    has_more: bool,
}
