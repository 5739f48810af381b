//! `GET /v1/sessions` (most recently active first, cursor-paged) and
//! `GET /v1/sessions/{id}` (the session's traces in the order they started).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::Json;
use serde_json::{json, Value};

use super::traces::{decode_cursor, encode_cursor, DEFAULT_LIMIT, MAX_LIMIT};
use super::{project_param, AppState, Principal};
use crate::error::AppError;
use crate::model::Timestamp;

/// Sessions (traces sharing a session id), most recently active first, with their totals.
#[utoipa::path(get, path = "/v1/sessions", operation_id = "listSessions", tag = "sessions", responses((status = 200, description = "OK")))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, AppError> {
    let limit = match params.get("limit") {
        None => DEFAULT_LIMIT,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                AppError::bad_request(format!("limit: must be an integer from 1 to {MAX_LIMIT}"))
            })?,
    };
    let after = params
        .get("cursor")
        .map(|c| {
            decode_cursor(c)
                .ok_or_else(|| AppError::bad_request("cursor: not a cursor this server issued"))
        })
        .transpose()?;
    let project_id = project_param(&state, &principal, &params).await?;
    let page = state
        .store
        .list_sessions(principal.tenant_id, project_id, after, limit)
        .await?;
    let sessions: Vec<Value> = page
        .sessions
        .iter()
        .map(|s| {
            json!({
                "session_id": s.id,
                "trace_count": s.traces,
                "total_tokens": s.tokens,
                "total_cost": s.cost,
                "error_count": s.errors,
                "first_at": Timestamp(s.first_at),
                "last_at": Timestamp(s.last_at),
            })
        })
        .collect();
    Ok(Json(json!({
        "sessions": sessions,
        "has_more": page.next.is_some(),
        "next_cursor": page.next.map(encode_cursor),
    })))
}

/// A session's traces in the order they started.
#[utoipa::path(get, path = "/v1/sessions/{id}", operation_id = "getSession", tag = "sessions", params(("id" = String, Path, description = "The id.")), responses((status = 200, description = "OK")))]
pub async fn detail(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    let (traces, has_more) = state
        .store
        .session_traces(principal.tenant_id, id.clone())
        .await?;
    if traces.is_empty() {
        return Err(AppError::NotFound("session"));
    }
    Ok(Json(
        json!({ "session_id": id, "traces": traces, "has_more": has_more }),
    ))
}
