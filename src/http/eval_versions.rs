//! `/v1/datasets/{id}/versions`: the named, immutable configurations (a
//! system prompt, a model, a judge model) a dataset's runs are made against.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::eval_params::{bounded, dataset_id};
use super::extract::JsonBody;
use super::{AppState, Principal};
use crate::error::{AppError, ErrorBody};
use crate::store::{EvalVersion, NewVersion};

/// The longest version name, in characters.
const MAX_NAME_CHARS: usize = 200;
/// The longest system prompt, in characters.
const MAX_PROMPT_CHARS: usize = 100_000;
/// The longest model name, in characters.
const MAX_MODEL_CHARS: usize = 200;
/// The largest version metadata, as JSON.
const MAX_METADATA_BYTES: usize = 64 * 1024;
const NO_DATASET: &str = "`not_found`: the caller's organisation has no dataset `id`.";

/// A version to create (the reference's `CreateEvalVersionRequest`).
#[derive(Deserialize, ToSchema)]
#[schema(as = CreateEvalVersionRequest)]
pub struct CreateVersion {
    /// 1 to 200 characters, unique in the dataset; a version never changes.
    #[schema(example = "v2-shorter-prompt")]
    name: String,
    /// Sent as the system message before each item's input (with `model`).
    #[serde(default)]
    system_prompt: Option<String>,
    /// The model that answers each item, on the operator's model endpoint;
    /// none: each item's own output is scored.
    #[serde(default)]
    model: Option<String>,
    /// The judge model that scores each answer (`correctness`), on the
    /// operator's judge endpoint; none: only the project's rules score.
    #[serde(default)]
    judge_model: Option<String>,
    /// Anything to remember about the version: an object, at most 64 KiB.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
}

/// A dataset's versions (the reference's `EvalVersionListResponse`).
#[derive(Serialize, ToSchema)]
#[schema(as = EvalVersionListResponse)]
pub struct VersionList {
    versions: Vec<EvalVersion>,
}

/// Creates a version of a dataset: a named, immutable configuration runs
/// are made against.
#[utoipa::path(
    post,
    path = "/v1/datasets/{id}/versions",
    operation_id = "createEvalVersion",
    tag = "eval-runs",
    params(("id" = String, Path, format = "uuid", description = "The dataset's id.")),
    request_body(content = CreateVersion, example = json!({"name": "v2-shorter-prompt", "system_prompt": "Answer in one sentence.", "model": "llama3.1:8b", "judge_model": "llama3.1:70b"})),
    responses(
        (status = 201, description = "The version.", body = EvalVersion),
        (status = 400, description = "`bad_request`: `name`, `system_prompt`, `model`, `judge_model` or `metadata` does not fit (the message names it).", body = ErrorBody),
        (status = 404, description = NO_DATASET, body = ErrorBody),
        (status = 409, description = "`conflict`: the dataset has a version of that name.", body = ErrorBody),
    )
)]
pub async fn create_version(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<CreateVersion>,
) -> Result<(StatusCode, Json<EvalVersion>), AppError> {
    let dataset = dataset_id(&id)?;
    bounded("name", &body.name, MAX_NAME_CHARS)?;
    let optional = |field: &str, text: Option<String>, max: usize| -> Result<_, AppError> {
        match text.filter(|t| !t.trim().is_empty()) {
            Some(text) => {
                bounded(field, &text, max)?;
                Ok(Some(text))
            }
            None => Ok(None),
        }
    };
    let system_prompt = optional("system_prompt", body.system_prompt, MAX_PROMPT_CHARS)?;
    let model = optional("model", body.model, MAX_MODEL_CHARS)?;
    let judge_model = optional("judge_model", body.judge_model, MAX_MODEL_CHARS)?;
    let metadata = match body.metadata {
        None | Some(Value::Null) => None,
        Some(value @ Value::Object(_)) => {
            let text = value.to_string();
            if text.len() > MAX_METADATA_BYTES {
                return Err(AppError::bad_request(format!(
                    "metadata: at most {MAX_METADATA_BYTES} bytes of JSON"
                )));
            }
            Some(text)
        }
        Some(_) => return Err(AppError::bad_request("metadata: must be an object")),
    };
    let version = state
        .store
        .create_eval_version(
            principal.tenant_id,
            dataset,
            NewVersion {
                name: body.name.trim().to_owned(),
                system_prompt,
                model: model.map(|m| m.trim().to_owned()),
                judge_model: judge_model.map(|m| m.trim().to_owned()),
                metadata,
            },
        )
        .await?
        .ok_or(AppError::NotFound("dataset"))?;
    Ok((StatusCode::CREATED, Json(version)))
}

/// A dataset's versions, newest first.
#[utoipa::path(
    get,
    path = "/v1/datasets/{id}/versions",
    operation_id = "listEvalVersions",
    tag = "eval-runs",
    params(("id" = String, Path, format = "uuid", description = "The dataset's id.")),
    responses(
        (status = 200, description = "The versions.", body = VersionList),
        (status = 404, description = NO_DATASET, body = ErrorBody),
    )
)]
pub async fn list_versions(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<VersionList>, AppError> {
    let versions = state
        .store
        .list_eval_versions(principal.tenant_id, dataset_id(&id)?)
        .await?
        .ok_or(AppError::NotFound("dataset"))?;
    Ok(Json(VersionList { versions }))
}
