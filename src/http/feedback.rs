//! `POST /v1/feedback`: a label (good, bad, neutral) on a trace, with an
//! optional score, comment and metadata. A trace keeps every feedback.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::extract::JsonBody;
use super::{AppState, Principal};
use crate::error::AppError;
use crate::model::Timestamp;
use crate::store::NewFeedback;

const MAX_COMMENT_CHARS: usize = 10_000;
const MAX_METADATA_BYTES: usize = 16 * 1024;

/// The reference's `FeedbackRequest`.
#[derive(Deserialize)]
pub struct FeedbackRequest {
    trace_id: String,
    label: String,
    score: Option<f64>,
    comment: Option<String>,
    metadata: Option<Map<String, Value>>,
}

/// Records a rating (good, bad or neutral) and an optional comment on a trace.
#[utoipa::path(post, path = "/v1/feedback", operation_id = "submitFeedback", tag = "feedback", responses((status = 201, description = "Created")))]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<FeedbackRequest>,
) -> Result<Response, AppError> {
    // A field missing or of the wrong type is a 422 (the body's decoder);
    // a value out of bounds is the 400 the reference documents.
    if !matches!(body.label.as_str(), "good" | "bad" | "neutral") {
        return Err(AppError::bad_request("label: must be good, bad or neutral"));
    }
    if body.trace_id.is_empty() || body.trace_id.len() > 256 {
        return Err(AppError::bad_request("trace_id: must be a trace's id"));
    }
    if body.score.is_some_and(|s| !s.is_finite()) {
        return Err(AppError::bad_request("score: must be a finite number"));
    }
    if body
        .comment
        .as_ref()
        .is_some_and(|c| c.chars().count() > MAX_COMMENT_CHARS)
    {
        return Err(AppError::bad_request(format!(
            "comment: at most {MAX_COMMENT_CHARS} characters"
        )));
    }
    state.space.check()?;
    let metadata = Value::Object(body.metadata.unwrap_or_default()).to_string();
    if metadata.len() > MAX_METADATA_BYTES {
        return Err(AppError::bad_request(format!(
            "metadata: at most {MAX_METADATA_BYTES} bytes"
        )));
    }
    let trace_id = body.trace_id.clone();
    let (id, created_at) = state
        .store
        .add_feedback(
            principal.tenant_id,
            NewFeedback {
                trace_id: body.trace_id,
                label: body.label.clone(),
                score: body.score,
                comment: body.comment,
                metadata,
            },
        )
        .await?
        // Another tenant's trace is as absent as one that never was.
        .ok_or(AppError::NotFound("trace"))?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": id,
            "trace_id": trace_id,
            "label": body.label,
            "created_at": Timestamp(created_at),
        })),
    )
        .into_response())
}
