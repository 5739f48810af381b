//! `GET /v1/traces` (filtered, newest first, keyset cursor) and
//! `GET /v1/traces/{id}` (with spans and events).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Serialize;

use super::{AppState, Principal};
use crate::error::AppError;
use crate::ingest::parse_time;
use crate::model::Trace;
use crate::store::{TraceCursor, TraceFilter};

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 200;

/// Traces, newest first, filtered by project, model, time, latency, tokens, tags, session, feedback, errors or text.
#[utoipa::path(get, path = "/v1/traces", operation_id = "listTraces", tag = "traces", responses((status = 200, description = "OK")))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<TraceList>, AppError> {
    let q = ListQuery::parse(&params)?;
    let mut filter = q.filter;
    if let Some(reference) = q.project {
        match state
            .store
            .find_project(principal.tenant_id, reference)
            .await?
        {
            Some(project) => filter.project_id = Some(project.id),
            // An unknown project (or another tenant's) simply has no traces.
            None => {
                return Ok(Json(TraceList {
                    traces: Vec::new(),
                    next_cursor: None,
                    has_more: false,
                }))
            }
        }
    }
    let page = state
        .store
        .list_traces(principal.tenant_id, filter, q.cursor, q.limit)
        .await?;
    Ok(Json(TraceList {
        has_more: page.next.is_some(),
        next_cursor: page.next.map(encode_cursor),
        traces: page.traces,
    }))
}

#[derive(Serialize)]
pub struct TraceList {
    traces: Vec<Trace>,
    next_cursor: Option<String>,
    has_more: bool,
}

/// One trace with its spans, events, feedback and evaluations.
#[utoipa::path(get, path = "/v1/traces/{id}", operation_id = "getTrace", tag = "traces", params(("id" = String, Path, description = "The id.")), responses((status = 200, description = "OK")))]
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

/// The longest search text accepted, in bytes.
pub const MAX_SEARCH_TEXT: usize = 1024;
/// The most words and phrases one search may hold.
pub const MAX_SEARCH_TERMS: usize = 32;

/// The full-text terms of the `q` parameter, refused when it is too long or
/// holds no word to search for.
pub(super) fn search_terms(q: &str) -> Result<Vec<String>, AppError> {
    if q.len() > MAX_SEARCH_TEXT {
        return Err(AppError::bad_request(format!(
            "q: must be at most {MAX_SEARCH_TEXT} bytes"
        )));
    }
    let terms = crate::store::fts_terms(q);
    if terms.is_empty() {
        return Err(AppError::bad_request(
            "q: must contain a word or number to search for",
        ));
    }
    // Each term is its own index query: bound the work one request can ask for.
    if terms.len() > MAX_SEARCH_TERMS {
        return Err(AppError::bad_request(format!(
            "q: at most {MAX_SEARCH_TERMS} words or phrases"
        )));
    }
    Ok(terms)
}

/// The list parameters, each checked with an error naming it. Public so
/// that the parser can be fuzzed; nothing outside the API builds one.
pub struct ListQuery {
    pub filter: TraceFilter,
    /// The project reference (id, slug or name), resolved by the handler.
    pub project: Option<String>,
    pub cursor: Option<TraceCursor>,
    pub limit: usize,
}

impl ListQuery {
    pub fn parse(params: &HashMap<String, String>) -> Result<ListQuery, AppError> {
        let text = |name: &str| params.get(name).filter(|v| !v.is_empty()).cloned();
        let count = |name: &'static str| -> Result<Option<i64>, AppError> {
            text(name)
                .map(|v| {
                    v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                        AppError::bad_request(format!("{name}: must be a non-negative integer"))
                    })
                })
                .transpose()
        };
        let time = |name: &'static str| -> Result<Option<i64>, AppError> {
            text(name)
                .map(|v| {
                    parse_time(&v).ok_or_else(|| {
                        AppError::bad_request(format!(
                            "{name}: must be an RFC 3339 time such as 2026-01-02T03:04:05Z"
                        ))
                    })
                })
                .transpose()
        };
        // The reference's filter by failure class: this server does not
        // classify failures yet, and a filter is never silently ignored.
        if let Some(kind) = text("failure_type") {
            return Err(match kind.as_str() {
                "timeout" | "rate_limit" | "invalid_response" | "context_length" => {
                    AppError::BadRequest {
                        message: "failure_type: not supported by this server yet (traces are \
                                  not classified by failure); filter with error=true instead"
                            .into(),
                        code: Some("filter_not_supported"),
                    }
                }
                _ => AppError::bad_request(
                    "failure_type: must be one of timeout, rate_limit, invalid_response, \
                     context_length",
                ),
            });
        }
        let error = match text("error").as_deref() {
            None => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(_) => return Err(AppError::bad_request("error: must be true or false")),
        };
        let filter = TraceFilter {
            project_id: None,
            model: text("model"),
            error,
            from: time("from")?,
            to: time("to")?,
            latency_min: count("latency_min")?,
            latency_max: count("latency_max")?,
            token_count_min: count("token_count_min")?,
            token_count_max: count("token_count_max")?,
            tag: match (text("tag_key"), text("tag_value")) {
                (Some(k), Some(v)) => Some((k, v)),
                (None, None) => None,
                _ => {
                    return Err(AppError::BadRequest {
                        message: "tag_key and tag_value must be given together".into(),
                        code: Some("error.tags_filter_incomplete"),
                    })
                }
            },
            session_id: text("session_id"),
            feedback: match text("feedback").as_deref() {
                None => None,
                Some(label @ ("good" | "bad" | "neutral")) => Some(label.to_owned()),
                Some(_) => {
                    return Err(AppError::bad_request(
                        "feedback: must be good, bad or neutral",
                    ))
                }
            },
            text: match text("q") {
                Some(q) => search_terms(&q)?,
                None => Vec::new(),
            },
        };
        for (min, max, name) in [
            (filter.latency_min, filter.latency_max, "latency_max"),
            (
                filter.token_count_min,
                filter.token_count_max,
                "token_count_max",
            ),
            (filter.from, filter.to, "to"),
        ] {
            if let (Some(lo), Some(hi)) = (min, max) {
                if hi < lo {
                    return Err(AppError::bad_request(format!(
                        "{name}: must not be less than its lower bound"
                    )));
                }
            }
        }
        let limit = match text("limit") {
            None => DEFAULT_LIMIT,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    AppError::bad_request(format!(
                        "limit: must be an integer from 1 to {MAX_LIMIT}"
                    ))
                })?,
        };
        let cursor = text("cursor")
            .map(|c| {
                decode_cursor(&c)
                    .ok_or_else(|| AppError::bad_request("cursor: not a cursor this server issued"))
            })
            .transpose()?;
        Ok(ListQuery {
            filter,
            project: text("project_id"),
            cursor,
            limit,
        })
    }
}

pub(super) fn encode_cursor(c: TraceCursor) -> String {
    URL_SAFE_NO_PAD.encode(format!("v1:{}:{}", c.started_at, c.seq))
}

pub(super) fn decode_cursor(raw: &str) -> Option<TraceCursor> {
    let bytes = URL_SAFE_NO_PAD.decode(raw).ok()?;
    let text = std::str::from_utf8(&bytes).ok()?;
    let mut parts = text.strip_prefix("v1:")?.split(':');
    let started_at = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    parts
        .next()
        .is_none()
        .then_some(TraceCursor { started_at, seq })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let c = TraceCursor {
            started_at: 1_700_000_000_000_000,
            seq: 42,
        };
        assert_eq!(decode_cursor(&encode_cursor(c)), Some(c));
        assert_eq!(decode_cursor("bm9wZQ"), None);
        assert_eq!(decode_cursor("%%%"), None);
    }
}
