//! `POST /v1/feedback`: a label (good, bad, neutral) on a trace, with an
//! optional score, comment and metadata. A trace keeps every feedback.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::extract::JsonBody;
use super::{AppState, Principal};
use crate::error::{AppError, ErrorBody};
use crate::model::Timestamp;
use crate::store::NewFeedback;

const MAX_COMMENT_CHARS: usize = 10_000;
const MAX_METADATA_BYTES: usize = 16 * 1024;

/// A rating of a trace (the reference's `FeedbackRequest`).
#[derive(Deserialize, ToSchema)]
pub struct FeedbackRequest {
    /// The trace rated: its id as sent.
    #[schema(example = "0190f1c2-7d1e-7a4b-9c3d-2e5f6a7b8c9d")]
    trace_id: String,
    /// `good`, `bad` or `neutral`.
    #[schema(example = "good")]
    label: String,
    /// A number of the sender's own scale.
    score: Option<f64>,
    /// At most 10,000 characters.
    comment: Option<String>,
    /// Any JSON object, at most 16 KiB.
    #[schema(value_type = Option<Object>)]
    metadata: Option<Map<String, Value>>,
}

/// The feedback recorded.
#[derive(Serialize, ToSchema)]
#[schema(as = FeedbackResponse)]
pub struct FeedbackCreated {
    /// The feedback's id.
    #[schema(format = "uuid")]
    id: String,
    trace_id: String,
    label: String,
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
}

/// Records a rating (good, bad or neutral) and an optional comment on a trace.
///
/// A trace keeps every feedback it is given.
#[utoipa::path(
    post,
    path = "/v1/feedback",
    operation_id = "submitFeedback",
    tag = "feedback",
    request_body(
        content = FeedbackRequest,
        example = json!({"trace_id": "0190f1c2-7d1e-7a4b-9c3d-2e5f6a7b8c9d", "label": "good", "comment": "Right answer, well sourced."})
    ),
    responses(
        (status = 201, description = "Recorded.", body = FeedbackCreated),
        (status = 400, description = "`malformed_json`: the body is not JSON; `bad_request`: a value is out of bounds: `label` not good, bad or neutral, `trace_id` empty or over 256 characters, `score` not finite, `comment` or `metadata` too long (the message names the field).", body = ErrorBody),
        (status = 404, description = "`not_found`: the caller's organisation has no such trace.", body = ErrorBody),
        (status = 422, description = "`validation_error`: a field is missing (`trace_id`, `label`) or of the wrong type (the message names it).", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<FeedbackRequest>,
) -> Result<(StatusCode, Json<FeedbackCreated>), AppError> {
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
        Json(FeedbackCreated {
            id,
            trace_id,
            label: body.label,
            created_at: Timestamp(created_at),
        }),
    ))
}
