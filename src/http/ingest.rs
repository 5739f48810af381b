//! `POST /v1/ingest` and `POST /v1/ingest/batch`: the SDK's JSON ingest.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::extract::JsonBody;
use super::limits::check_monthly_quota;
use super::live::LiveTrace;
use super::{AppState, Principal};
use crate::error::AppError;
use crate::ingest::{check_batch_size, BatchRequest, TraceRequest};
use crate::model::{NewTrace, Timestamp};
use crate::store::{now_micros, InsertOutcome};

pub async fn ingest_one(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(trace): JsonBody<TraceRequest>,
) -> Result<Response, AppError> {
    let stored = store_traces(&state, &principal, vec![trace], false).await?;
    Ok(match stored.into_iter().next() {
        Some(InsertOutcome::Created { id, created_at }) => (
            StatusCode::CREATED,
            Json(json!({ "id": id, "created_at": Timestamp(created_at) })),
        )
            .into_response(),
        Some(InsertOutcome::Duplicate { id }) => (
            StatusCode::OK,
            Json(json!({ "status": "duplicate", "id": id })),
        )
            .into_response(),
        None => return Err(AppError::Internal("ingest stored nothing".into())),
    })
}

pub async fn ingest_batch(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(batch): JsonBody<BatchRequest>,
) -> Result<Response, AppError> {
    check_batch_size(batch.traces.len()).map_err(|e| AppError::unprocessable(e.to_string()))?;
    let stored = store_traces(&state, &principal, batch.traces, true).await?;
    let ingested = stored
        .iter()
        .filter(|o| matches!(o, InsertOutcome::Created { .. }))
        .count();
    let ids: Vec<&str> = stored
        .iter()
        .map(|o| match o {
            InsertOutcome::Created { id, .. } | InsertOutcome::Duplicate { id } => id.as_str(),
        })
        .collect();
    if ingested == 0 {
        return Ok((
            StatusCode::OK,
            Json(json!({ "status": "duplicate", "ingested": 0, "ids": ids })),
        )
            .into_response());
    }
    Ok((
        StatusCode::CREATED,
        Json(json!({ "ingested": ingested, "ids": ids })),
    )
        .into_response())
}

/// Validates every trace, resolves its project, and stores them all or none.
async fn store_traces(
    state: &AppState,
    principal: &Principal,
    requests: Vec<TraceRequest>,
    batch: bool,
) -> Result<Vec<InsertOutcome>, AppError> {
    state.space.check()?;
    check_monthly_quota(state, principal, requests.len() as u64).await?;
    let now = now_micros();
    let mut projects: HashMap<Option<String>, i64> = HashMap::new();
    let mut traces: Vec<(i64, NewTrace)> = Vec::with_capacity(requests.len());
    for (i, request) in requests.into_iter().enumerate() {
        let reference = request.project_id.clone();
        let at = if batch {
            format!("traces[{i}].")
        } else {
            String::new()
        };
        let trace = request
            .into_new_trace(&at, now, &state.pricing)
            .map_err(|e| AppError::unprocessable(e.to_string()))?;
        let project_id = match projects.get(&reference) {
            Some(id) => *id,
            None => {
                let id = resolve_project(state, principal, reference.as_deref()).await?;
                projects.insert(reference, id);
                id
            }
        };
        traces.push((project_id, trace));
    }
    // What the live feed will say of each trace, if it is new.
    let listening = state.live.listening();
    let summaries: Vec<(i64, Value)> = traces
        .iter()
        .filter(|_| listening)
        .map(|(project_id, t)| {
            let event = json!({
                "trace_id": t.id,
                "name": t.name.clone().unwrap_or_default(),
                "status": if t.error.is_some() { "error" } else { "ok" },
                "latency_ms": t.latency_ms.unwrap_or(0),
            });
            (*project_id, event)
        })
        .collect();
    let span_counts: Vec<u64> = traces.iter().map(|(_, t)| t.spans.len() as u64).collect();
    let outcomes = state
        .store
        .insert_traces(principal.tenant_id, traces)
        .await?;
    let (mut new_traces, mut new_spans) = (0, 0);
    for (outcome, spans) in outcomes.iter().zip(span_counts) {
        if matches!(outcome, InsertOutcome::Created { .. }) {
            new_traces += 1;
            new_spans += spans;
        }
    }
    state.metrics.record_ingest(new_traces, new_spans);
    for ((project_id, mut event), outcome) in summaries.into_iter().zip(&outcomes) {
        if let InsertOutcome::Created { created_at, .. } = outcome {
            event["created_at"] = json!(Timestamp(*created_at));
            state.live.publish(LiveTrace {
                tenant_id: principal.tenant_id,
                project_id,
                event,
            });
        }
    }
    Ok(outcomes)
}

/// The SDK sends a free-form project reference; it names a project of the
/// caller's tenant by id, slug or name, else the key's own project is used.
pub(super) async fn resolve_project(
    state: &AppState,
    principal: &Principal,
    reference: Option<&str>,
) -> Result<i64, AppError> {
    let project = state
        .store
        .project_for_ingest(
            principal.tenant_id,
            reference.filter(|r| !r.is_empty()).map(str::to_owned),
            principal.project_id,
        )
        .await?
        .ok_or(AppError::Internal(
            "the API key's project is missing".into(),
        ))?;
    if project.archived {
        return Err(AppError::Forbidden {
            message: "error.project.archived".into(),
            code: "error.project.archived",
        });
    }
    Ok(project.id)
}
