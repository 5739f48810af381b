//! `GET /v1/search/spans?q=`: full-text search over span names, inputs,
//! outputs and errors, the on-premises stand-in for the hosted semantic
//! search. Results come most recently stored first, each with a highlighted
//! snippet; `similarity` maps a BM25 score onto 0..1.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::query::{ApiQuery, Cursor, Listing, Page, ProjectParam, TimeWindow};
use super::trace_filter::search_terms;
use super::{AppState, Principal};
use crate::error::{AppError, ErrorBody};
use crate::model::Timestamp;
use crate::store::{SpanHit, SpanSearch, MAX_SPAN_RESULTS};

/// The span search's results; a position is the span's key, higher for
/// spans stored later.
pub struct Spans;
impl Listing for Spans {
    const DEFAULT_LIMIT: u32 = 20;
    const MAX_LIMIT: u32 = MAX_SPAN_RESULTS as u32;
    const KIND: &'static str = "spans";
    type Position = i64;
}

/// What to search for, and where.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SpanSearchQuery {
    /// The text to search for: every word or quoted phrase must appear in
    /// the span's name, input, output or error (a word ending in `*`
    /// matches as a prefix). At most 1024 bytes and 32 words or phrases.
    #[param(required = true, value_type = String, min_length = 1)]
    q: Option<String>,
    #[serde(flatten)]
    #[param(ignore)]
    window: TimeWindow,
    #[serde(flatten)]
    #[param(ignore)]
    page: Page<Spans>,
}

/// Searches spans by text, newest first.
///
/// Full-text search over span names, inputs, outputs and errors (the
/// hosted service embeds `q` and searches by similarity). `from` and `to`
/// bound when the span was stored.
#[utoipa::path(
    get,
    path = "/v1/search/spans",
    operation_id = "searchSpansText",
    tag = "search",
    params(SpanSearchQuery, ProjectParam, TimeWindow, Page<Spans>),
    responses(
        (status = 200, description = "The matching spans, most recently stored first.", body = SpanTextSearchResponse),
        (status = 404, description = "`not_found`: the caller's organisation has no project `project_id`.", body = ErrorBody),
    )
)]
pub async fn spans(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<SpanSearchQuery>,
    ApiQuery(project): ApiQuery<ProjectParam>,
) -> Result<Json<SpanTextSearchResponse>, AppError> {
    let q = query
        .q
        .filter(|q| !q.trim().is_empty())
        .ok_or_else(|| AppError::bad_request("q: the text to search for is required"))?;
    let search = SpanSearch {
        terms: search_terms(&q)?,
        project_id: project.resolve(&state, &principal).await?,
        from: query.window.from,
        to: query.window.to,
        before: query.page.cursor,
        limit: query.page.size(),
    };
    let found = state
        .store
        .search_spans(principal.tenant_id, search)
        .await?;
    Ok(Json(SpanTextSearchResponse {
        results: found.hits.into_iter().map(SpanSearchResult::from).collect(),
        next_cursor: found.next.map(|next| Cursor::<Spans>::encode(&next)),
    }))
}

/// A page of span search results.
#[derive(Serialize, ToSchema)]
pub struct SpanTextSearchResponse {
    /// The matching spans, most recently stored first.
    results: Vec<SpanSearchResult>,
    /// Where the next page starts (its `cursor`); omitted on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// One span that matched.
#[derive(Serialize, ToSchema)]
pub struct SpanSearchResult {
    span_id: String,
    #[schema(format = "uuid")]
    trace_id: String,
    #[schema(format = "uuid")]
    project_id: String,
    /// How well the span matched, from 0 (barely) towards 1.
    similarity: f64,
    span_name: String,
    /// `llm`, `tool`, `retrieval` or `other`.
    span_type: String,
    /// When this server stored the span.
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
    /// An HTML fragment: the text around the best match, escaped, with
    /// every matched word inside `<mark>`.
    #[schema(example = "the <mark>refund</mark> was issued")]
    snippet: String,
}

impl From<SpanHit> for SpanSearchResult {
    fn from(h: SpanHit) -> Self {
        SpanSearchResult {
            span_id: h.span_id,
            trace_id: h.trace_id,
            project_id: h.project_id,
            similarity: h.similarity,
            span_name: h.span_name,
            span_type: h.span_type,
            created_at: Timestamp(h.created_at),
            snippet: h.snippet,
        }
    }
}
