//! `GET /v1/search/spans?q=`: full-text search over span names, inputs,
//! outputs and errors, the on-premises stand-in for the hosted semantic
//! search. Results come most recently stored first, each with a highlighted
//! snippet; `similarity` maps the BM25 relevance onto 0..1.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use super::traces::search_terms;
use super::{project_param, AppState, Principal};
use crate::error::AppError;
use crate::ingest::parse_time;
use crate::model::Timestamp;
use crate::store::{SpanSearch, MAX_SPAN_RESULTS};

const DEFAULT_LIMIT: usize = 20;

/// Spans whose input, output or name match a search expression, newest first.
#[utoipa::path(get, path = "/v1/search/spans", operation_id = "searchSpansText", tag = "search", responses((status = 200, description = "OK")))]
pub async fn spans(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, AppError> {
    let q = params
        .get("q")
        .filter(|q| !q.trim().is_empty())
        .ok_or_else(|| AppError::bad_request("q: the text to search for is required"))?;
    let expression = search_terms(q)?.join(" AND ");
    let time = |name: &'static str| -> Result<Option<i64>, AppError> {
        params
            .get(name)
            .filter(|v| !v.is_empty())
            .map(|v| {
                parse_time(v).ok_or_else(|| {
                    AppError::bad_request(format!(
                        "{name}: must be an RFC 3339 time such as 2026-01-02T03:04:05Z"
                    ))
                })
            })
            .transpose()
    };
    let limit = match params.get("limit") {
        None => DEFAULT_LIMIT,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_SPAN_RESULTS).contains(n))
            .ok_or_else(|| {
                AppError::bad_request(format!(
                    "limit: must be an integer from 1 to {MAX_SPAN_RESULTS}"
                ))
            })?,
    };
    let before = params
        .get("cursor")
        .map(|c| {
            decode_cursor(c)
                .ok_or_else(|| AppError::bad_request("cursor: not a cursor this server issued"))
        })
        .transpose()?;
    let (from, to) = (time("from")?, time("to")?);
    if let (Some(from), Some(to)) = (from, to) {
        if to < from {
            return Err(AppError::bad_request(
                "to: must not be less than its lower bound",
            ));
        }
    }
    let search = SpanSearch {
        expression,
        project_id: project_param(&state, &principal, &params).await?,
        from,
        to,
        before,
        limit,
    };
    let found = state
        .store
        .search_spans(principal.tenant_id, search)
        .await?;
    let results: Vec<Value> = found
        .hits
        .iter()
        .map(|h| {
            json!({
                "span_id": h.span_id,
                "trace_id": h.trace_id,
                "project_id": h.project_id,
                "similarity": h.similarity,
                "span_name": h.span_name,
                "span_type": h.span_type,
                "created_at": Timestamp(h.created_at),
                "snippet": h.snippet,
            })
        })
        .collect();
    let mut body = json!({ "results": results });
    if let Some(next) = found.next {
        body["next_cursor"] = Value::String(encode_cursor(next));
    }
    Ok(Json(body))
}

fn encode_cursor(position: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("s1:{position}"))
}

fn decode_cursor(raw: &str) -> Option<i64> {
    let bytes = URL_SAFE_NO_PAD.decode(raw).ok()?;
    std::str::from_utf8(&bytes)
        .ok()?
        .strip_prefix("s1:")?
        .parse()
        .ok()
}
