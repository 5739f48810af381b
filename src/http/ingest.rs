//! `POST /v1/ingest` and `POST /v1/ingest/batch`: the SDK's JSON ingest.

use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Serialize;
use utoipa::ToSchema;

use super::budget::Charges;
use super::extract::{parse_json, read_body, require_json};
use super::intake::{self, Created};
use super::{blocking, AppState, Principal};
use crate::error::{AppError, ErrorBody};
use crate::ingest::{check_batch_size, BatchRequest, BatchShape, Counts, TraceRequest, TraceShape};

/// Memory an ingest body usually takes per byte until its response: the
/// body, its decoded copy, and the traces and spans made of it (a batch of
/// realistic traces measured 3.1; see BENCHMARKS.md).
pub(super) const DECODED_PER_BYTE: usize = 3;

/// An ingest body (`T`, whose lists `T::Shape` reads): counted before it is
/// decoded, refused past the request's span limit, and charged against the
/// request memory budget for what decoding it takes.
pub struct IngestBody<T>(pub T);

/// A body whose items can be counted without decoding it.
pub trait Shaped {
    type Shape: DeserializeOwned + Send;
    /// What the body holds; refuses a shape the request type does not
    /// allow.
    fn counts(shape: &Self::Shape) -> Result<Counts, AppError>;
}

impl Shaped for TraceRequest {
    type Shape = TraceShape;
    fn counts(shape: &TraceShape) -> Result<Counts, AppError> {
        Ok(Counts::from(shape))
    }
}

impl Shaped for BatchRequest {
    type Shape = BatchShape;
    /// Without `traces`, a required field is missing (422, as decoding
    /// says); a batch outside its limits is the reference's 400.
    fn counts(shape: &BatchShape) -> Result<Counts, AppError> {
        if !shape.has_traces() {
            return Err(AppError::unprocessable("missing field `traces`"));
        }
        let counts = Counts::from(shape);
        check_batch_size(counts.traces).map_err(|e| AppError::bad_request(e.to_string()))?;
        Ok(counts)
    }
}

impl<T: DeserializeOwned + Shaped + Send + 'static> FromRequest<AppState> for IngestBody<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, AppError> {
        require_json(req.headers())?;
        let charges = req
            .extensions()
            .get::<Charges>()
            .cloned()
            .unwrap_or_default();
        let bytes = read_body(req, state, DECODED_PER_BYTE).await?;
        // A body that does not even have the shape is refused here, with the
        // same errors the full decoding would give. Reading up to 64 MiB of
        // JSON is CPU work: off the async threads, which answer `/health`.
        let (bytes, counts) = blocking(move || {
            let counts = T::counts(&parse_json::<T::Shape>(&bytes)?)?;
            Ok((bytes, counts))
        })
        .await?;
        let limit = state.config.limits.batch_max_spans;
        if counts.spans > limit {
            return Err(AppError::TooManySpans {
                limit,
                got: counts.spans,
            });
        }
        // A body of many tiny items takes more than the usual share.
        state
            .bodies
            .top_up(&charges, bytes.len() + counts.decoded_bytes(bytes.len()))?;
        blocking(move || parse_json(&bytes)).await.map(IngestBody)
    }
}

use crate::model::{NewTrace, Timestamp};
use crate::store::{now_micros, InsertOutcome};

/// A trace stored (the reference's `IngestResponse`).
#[derive(Serialize, ToSchema)]
#[schema(as = IngestResponse)]
pub struct Ingested {
    /// The trace's id: as sent, or the one made for it.
    #[schema(format = "uuid")]
    id: String,
    /// When it was stored.
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
}

/// A trace stored before (the reference's `DuplicateResponse`): nothing changed.
#[derive(Serialize, ToSchema)]
#[schema(as = DuplicateResponse)]
pub struct Duplicate {
    /// Always `duplicate`.
    #[schema(value_type = String, example = "duplicate")]
    status: &'static str,
    /// The stored trace's id.
    #[schema(format = "uuid")]
    id: String,
}

/// A batch stored (the reference's `BatchIngestResponse`).
#[derive(Serialize, ToSchema)]
#[schema(as = BatchIngestResponse)]
pub struct BatchIngested {
    /// How many of its traces were new.
    ingested: usize,
    /// Every trace's id, in the batch's order (new or stored before).
    ids: Vec<String>,
}

/// A batch every trace of which was stored before: nothing changed.
#[derive(Serialize, ToSchema)]
#[schema(as = BatchDuplicateResponse)]
pub struct BatchDuplicate {
    /// Always `duplicate`.
    #[schema(value_type = String, example = "duplicate")]
    status: &'static str,
    /// Always 0.
    ingested: usize,
    /// Every trace's id, in the batch's order.
    ids: Vec<String>,
}

/// An ingest route's 413.
const TOO_LARGE: &str = "`payload_too_large`: the body is larger than the route takes (the \
    message names the limit); `too_many_spans`: the request holds more spans than one request may \
    (`limits.batch_max_spans`; the message names it): send them in smaller requests.";

/// An ingest route's 429.
const OVER_QUOTA: &str = "`rate_limited`: the organisation sent more ingest requests than its \
    plan allows this minute; `monthly_quota_exceeded`: the traces would take the organisation past \
    its plan's traces this month. `Retry-After` says when to retry.";

/// An ingest route's 422.
const INVALID_TRACE: &str = "`validation_error`: a field is missing, of the wrong type or outside \
    its limits (the message names its path, e.g. `traces[3].spans[0].name`); nothing is stored.";

/// The trace of the examples: what an SDK sends.
fn example_trace() -> serde_json::Value {
    serde_json::json!({
        "id": "0190f1c2-7d1e-7a4b-9c3d-2e5f6a7b8c9d",
        "name": "answer-question",
        "session_id": "chat-42",
        "input": "What is the capital of France?",
        "output": "Paris.",
        "tags": {"env": "prod"},
        "metadata": {"user_id": "u-17"},
        "spans": [
            {
                "id": "retrieve-1",
                "name": "search documents",
                "type": "retrieval",
                "input": "capital of France",
                "output": "Paris is the capital and largest city of France.",
                "start_time": "2026-01-02T03:04:05.010Z",
                "end_time": "2026-01-02T03:04:05.200Z"
            },
            {
                "id": "llm-1",
                "name": "chat completion",
                "type": "llm",
                "model": "gpt-4o-mini",
                "input": "Answer from the context: What is the capital of France?",
                "output": "Paris.",
                "prompt_tokens": 42,
                "completion_tokens": 3,
                "start_time": "2026-01-02T03:04:05.210Z",
                "end_time": "2026-01-02T03:04:06.250Z"
            }
        ],
        "events": [
            {"span_id": "retrieve-1", "level": "info", "message": "2 documents found"}
        ]
    })
}

/// Sends one trace with its spans, as the SDKs do.
///
/// A trace sent again (same id, same content) is stored once: the second
/// answer is 200 `duplicate`.
#[utoipa::path(
    post,
    path = "/v1/ingest",
    operation_id = "ingestTrace",
    tag = "ingest",
    request_body(content = TraceRequest, example = json!(example_trace())),
    responses(
        (status = 201, description = "Stored.", body = Ingested,
            example = json!({"id": "0190f1c2-7d1e-7a4b-9c3d-2e5f6a7b8c9d", "created_at": "2026-01-02T03:04:06.301234Z"})),
        (status = 200, description = "Stored before: nothing changed.", body = Duplicate,
            example = json!({"status": "duplicate", "id": "0190f1c2-7d1e-7a4b-9c3d-2e5f6a7b8c9d"})),
        (status = 413, description = TOO_LARGE, body = ErrorBody),
        (status = 403, description = super::intake::ARCHIVED, body = ErrorBody),
        (status = 409, description = "`conflict`: a trace with this id is stored with other content (the same trace again is a 200 duplicate).", body = ErrorBody),
        (status = 422, description = INVALID_TRACE, body = ErrorBody),
        (status = 429, description = OVER_QUOTA, body = ErrorBody),
    )
)]
pub async fn ingest_one(
    State(state): State<AppState>,
    principal: Principal,
    IngestBody(trace): IngestBody<TraceRequest>,
) -> Result<Response, AppError> {
    let stored = store_traces(&state, &principal, vec![trace], false).await?;
    Ok(match stored.into_iter().next() {
        Some(InsertOutcome::Created { id, created_at }) => (
            StatusCode::CREATED,
            Json(Ingested {
                id,
                created_at: Timestamp(created_at),
            }),
        )
            .into_response(),
        Some(InsertOutcome::Duplicate { id }) => (
            StatusCode::OK,
            Json(Duplicate {
                status: "duplicate",
                id,
            }),
        )
            .into_response(),
        None => return Err(AppError::Internal("ingest stored nothing".into())),
    })
}

/// Sends a batch of traces with their spans, as the SDKs do.
///
/// The batch is stored all or none. Traces stored before are not stored
/// again; when every trace was, the answer is 200 `duplicate`.
#[utoipa::path(
    post,
    path = "/v1/ingest/batch",
    operation_id = "ingestBatch",
    tag = "ingest",
    request_body(content = BatchRequest, example = json!({"traces": [example_trace()]})),
    responses(
        (status = 201, description = "Stored (at least one trace was new).", body = BatchIngested,
            example = json!({"ingested": 1, "ids": ["0190f1c2-7d1e-7a4b-9c3d-2e5f6a7b8c9d"]})),
        (status = 200, description = "Every trace was stored before: nothing changed.", body = BatchDuplicate,
            example = json!({"status": "duplicate", "ingested": 0, "ids": ["0190f1c2-7d1e-7a4b-9c3d-2e5f6a7b8c9d"]})),
        (status = 400, description = "`malformed_json`: the body is not JSON; `bad_request`: the batch holds fewer than 1 or more than 10,000 traces.", body = ErrorBody),
        (status = 413, description = TOO_LARGE, body = ErrorBody),
        (status = 403, description = super::intake::ARCHIVED, body = ErrorBody),
        (status = 409, description = "`conflict`: a trace with this id is stored with other content (the same trace again is a 200 duplicate).", body = ErrorBody),
        (status = 422, description = INVALID_TRACE, body = ErrorBody),
        (status = 429, description = OVER_QUOTA, body = ErrorBody),
    )
)]
pub async fn ingest_batch(
    State(state): State<AppState>,
    principal: Principal,
    IngestBody(batch): IngestBody<BatchRequest>,
) -> Result<Response, AppError> {
    let stored = store_traces(&state, &principal, batch.traces, true).await?;
    let ingested = stored
        .iter()
        .filter(|o| matches!(o, InsertOutcome::Created { .. }))
        .count();
    let ids: Vec<String> = stored
        .into_iter()
        .map(|o| match o {
            InsertOutcome::Created { id, .. } | InsertOutcome::Duplicate { id } => id,
        })
        .collect();
    if ingested == 0 {
        return Ok((
            StatusCode::OK,
            Json(BatchDuplicate {
                status: "duplicate",
                ingested: 0,
                ids,
            }),
        )
            .into_response());
    }
    Ok((StatusCode::CREATED, Json(BatchIngested { ingested, ids })).into_response())
}

/// Validates every trace, resolves its project, and stores them all or none.
async fn store_traces(
    state: &AppState,
    principal: &Principal,
    requests: Vec<TraceRequest>,
    batch: bool,
) -> Result<Vec<InsertOutcome>, AppError> {
    intake::admit(state, principal, requests.len()).await?;
    let now = now_micros();
    // Validating and hashing up to 10,000 traces is CPU work.
    let pricing = state.pricing.clone();
    let validated = blocking(move || {
        requests
            .into_iter()
            .enumerate()
            .map(|(i, request)| {
                let reference = request.project_id.clone();
                let at = if batch {
                    format!("traces[{i}].")
                } else {
                    String::new()
                };
                let trace = request
                    .into_new_trace(&at, now, &pricing)
                    .map_err(|e| AppError::unprocessable(e.to_string()))?;
                Ok((reference, trace))
            })
            .collect::<Result<Vec<_>, AppError>>()
    })
    .await?;
    let traces: Vec<(i64, NewTrace)> = intake::with_projects(state, principal, validated).await?;
    // What the counters and the live feed will say of each trace, if new.
    let summaries: Vec<(Created, u64)> = traces
        .iter()
        .map(|(project_id, t)| {
            let trace = Created {
                project_id: *project_id,
                id: t.id.clone(),
                name: t.name.clone(),
                error: t.error.is_some(),
                latency_ms: t.latency_ms,
                created_at: 0,
            };
            (trace, t.spans.len() as u64)
        })
        .collect();
    let ends: Vec<(i64, Option<i64>, usize)> = traces
        .iter()
        .map(|(project_id, t)| (*project_id, Some(t.end()), t.spans.len()))
        .collect();
    let outcomes = state
        .store
        .insert_traces(principal.tenant_id, traces)
        .await?;
    let stored: Vec<(i64, Option<i64>, usize)> = ends
        .into_iter()
        .zip(&outcomes)
        .filter(|(_, o)| matches!(o, InsertOutcome::Created { .. }))
        .map(|(end, _)| end)
        .collect();
    state
        .ingest_tally
        .stored(principal.tenant_id, now_micros(), &stored);
    let mut spans = 0;
    let created: Vec<Created> = summaries
        .into_iter()
        .zip(&outcomes)
        .filter_map(|((trace, span_count), outcome)| match outcome {
            InsertOutcome::Created { created_at, .. } => {
                spans += span_count;
                Some(Created {
                    created_at: *created_at,
                    ..trace
                })
            }
            InsertOutcome::Duplicate { .. } => None,
        })
        .collect();
    intake::committed(state, principal, &created, spans);
    Ok(outcomes)
}
