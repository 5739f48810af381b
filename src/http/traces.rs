//! `GET /v1/traces` (filtered, newest first, keyset cursor) and
//! `GET /v1/traces/{id}` (with spans and events).

use axum::extract::{Path, State};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::query::{ApiQuery, Cursor, Page, ProjectParam, TimeWindow, Traces};
use super::trace_filter::TraceQuery;
use super::{AppState, Principal};
use crate::error::AppError;
use crate::model::Trace;

/// Lists traces with cursor-based pagination, newest first.
///
/// Filtered by project, model, time, latency, tokens, tags, session,
/// feedback, errors or text; every filter narrows the result. An unknown
/// `project_id` (or another organisation's) has no traces.
#[utoipa::path(
    get,
    path = "/v1/traces",
    operation_id = "listTraces",
    tag = "traces",
    params(ProjectParam, TraceQuery, TimeWindow, Page<Traces>),
    responses(
        (status = 200, description = "A page of traces, without their spans and events.", body = TraceListResponse),
        (status = 400, description = "`bad_request`: a query parameter does not fit (the message names it); `error.tags_filter_incomplete`: `tag_key` or `tag_value` alone.", body = crate::error::ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(project): ApiQuery<ProjectParam>,
    ApiQuery(query): ApiQuery<TraceQuery>,
    ApiQuery(page): ApiQuery<Page<Traces>>,
) -> Result<Json<TraceListResponse>, AppError> {
    let mut filter = query.filter()?;
    if let Some(reference) = project.project_id {
        match state
            .store
            .find_project(principal.tenant_id, reference)
            .await?
        {
            Some(project) => filter.project_id = Some(project.id),
            // An unknown project (or another tenant's) simply has no traces.
            None => {
                return Ok(Json(TraceListResponse {
                    traces: Vec::new(),
                    next_cursor: None,
                    has_more: false,
                }))
            }
        }
    }
    let found = state
        .store
        .list_traces(principal.tenant_id, filter, page.cursor, page.size())
        .await?;
    Ok(Json(TraceListResponse {
        has_more: found.next.is_some(),
        next_cursor: found.next.map(|next| Cursor::<Traces>::encode(&next)),
        traces: found.traces,
    }))
}

/// A page of the trace list.
#[derive(Serialize, ToSchema)]
pub struct TraceListResponse {
    /// The traces, newest first, without spans, events, feedback and
    /// evaluations; long fields cut (see `truncated`).
    traces: Vec<Trace>,
    /// Where the next page starts (its `cursor`); null on the last page.
    next_cursor: Option<String>,
    /// Whether more traces follow.
    has_more: bool,
}

/// Gets a trace with its spans and events.
///
/// Also its feedback and evaluations, oldest first; its fields whole.
#[utoipa::path(
    get,
    path = "/v1/traces/{id}",
    operation_id = "getTrace",
    tag = "traces",
    params(("id" = String, Path, format = "uuid", description = "The trace's id.")),
    responses((status = 200, description = "The trace with its spans, events, feedback and evaluations.", body = Trace))
)]
pub async fn detail(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Trace>, AppError> {
    // Ids are stored in canonical UUID form; anything else cannot exist.
    let id = uuid::Uuid::parse_str(&id)
        .map_err(|_| AppError::NotFound("trace"))?
        .hyphenated()
        .to_string();
    state
        .store
        .get_trace(principal.tenant_id, id)
        .await?
        .map(Json)
        .ok_or(AppError::NotFound("trace"))
}
