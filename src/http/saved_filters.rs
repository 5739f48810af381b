//! `/v1/saved-filters`: named filters of the trace list, shared by everyone
//! in the organisation. A filter is the trace list's query (`GET
//! /v1/traces`), checked as the list checks it, so a saved filter always runs.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use super::eval_params::canonical_uuid;
use super::extract::JsonBody;
use super::principal::actor;
use super::query::parse_query;
use super::trace_filter::TraceQuery;
use super::{AppState, Principal};
use crate::error::{AppError, ErrorBody};
use crate::store::{FilterChange, SavedFilter};

/// The longest name, in characters.
const MAX_NAME_CHARS: usize = 100;
/// The largest filter, as JSON.
const MAX_FILTERS_BYTES: usize = 16 * 1024;
/// The trace list's parameters a saved filter may hold: its filters, not
/// its project (the saved filter's own) nor its page.
const FILTER_PARAMS: &[&str] = &[
    "q",
    "model",
    "error",
    "failure_type",
    "latency_min",
    "latency_max",
    "token_count_min",
    "token_count_max",
    "tag_key",
    "tag_value",
    "session_id",
    "feedback",
    "from",
    "to",
];

/// A filter to save (the reference's `CreateSavedFilterRequest`).
#[derive(Deserialize, ToSchema)]
#[schema(as = CreateSavedFilterRequest)]
pub struct CreateSavedFilter {
    /// The project whose trace list it filters: its id, slug or name.
    #[schema(format = "uuid")]
    project_id: String,
    /// 1 to 100 characters.
    #[schema(example = "failing refunds", max_length = 100)]
    name: String,
    /// The trace list's query parameters by name (`q`, `model`, `error`,
    /// `failure_type`, `latency_min`, `latency_max`, `token_count_min`,
    /// `token_count_max`, `tag_key`, `tag_value`, `session_id`, `feedback`,
    /// `from`, `to`); values are strings, numbers or booleans.
    #[schema(value_type = Object)]
    filters: Map<String, Value>,
}

/// A change to a saved filter (the reference's `UpdateSavedFilterRequest`):
/// what is given is changed.
#[derive(Deserialize, ToSchema)]
#[schema(as = UpdateSavedFilterRequest)]
pub struct UpdateSavedFilter {
    #[serde(default)]
    #[schema(example = "all failures", max_length = 100)]
    name: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    filters: Option<Map<String, Value>>,
}

/// A project's saved filters (the reference's `SavedFilterListResponse`).
#[derive(Serialize, ToSchema)]
#[schema(as = SavedFilterListResponse)]
pub struct SavedFilterList {
    /// Oldest first.
    items: Vec<SavedFilter>,
}

/// Whose saved filters.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// The project: its id, slug or name. Required.
    project_id: String,
}

/// A name within its limits, trimmed, or a 400 naming it.
fn checked_name(name: &str) -> Result<String, AppError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(AppError::bad_request(format!(
            "name: must be 1 to {MAX_NAME_CHARS} characters"
        )));
    }
    Ok(name.to_owned())
}

/// The filters as JSON text, once the trace list would run them: each
/// parameter is one the list takes, with a value it accepts; a 400 names
/// the first that is not (`filters.<parameter>: …`).
pub(super) fn checked_filters(filters: &Map<String, Value>) -> Result<String, AppError> {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (key, value) in filters {
        if !FILTER_PARAMS.contains(&key.as_str()) {
            return Err(AppError::bad_request(format!(
                "filters.{key}: not a filter of the trace list (it takes {})",
                FILTER_PARAMS.join(", ")
            )));
        }
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => continue,
            Value::Array(_) | Value::Object(_) => {
                return Err(AppError::bad_request(format!(
                    "filters.{key}: must be a string, number or boolean"
                )))
            }
        };
        query.append_pair(key, &text);
    }
    parse_query::<TraceQuery>(&query.finish())
        .and_then(TraceQuery::filter)
        .map_err(|e| match e {
            AppError::BadRequest { message, code } => AppError::BadRequest {
                message: format!("filters.{message}"),
                code,
            },
            other => other,
        })?;
    let text = serde_json::to_string(filters)
        .map_err(|e| AppError::Internal(format!("filters as JSON: {e}")))?;
    if text.len() > MAX_FILTERS_BYTES {
        return Err(AppError::bad_request(format!(
            "filters: at most {MAX_FILTERS_BYTES} bytes as JSON"
        )));
    }
    Ok(text)
}

/// The id of a saved filter in a path: not a UUID is as unknown as another's.
fn filter_id(raw: &str) -> Result<String, AppError> {
    canonical_uuid(raw).ok_or(AppError::NotFound("saved filter"))
}

const BAD_FILTER: &str = "`bad_request`: `name` does not fit, or `filters` holds a parameter the trace list does not take or a value it refuses (the message names it, as `filters.<parameter>`); `error.tags_filter_incomplete`: as the trace list answers it.";

/// The project's saved filters, shared by the whole organisation.
///
/// An unknown project (or another organisation's) has none.
#[utoipa::path(
    get,
    path = "/v1/saved-filters",
    operation_id = "listSavedFilters",
    tag = "saved-filters",
    params(ListQuery),
    responses(
        (status = 200, description = "The project's saved filters, oldest first.", body = SavedFilterList),
        (status = 400, description = "`bad_request`: `project_id` is missing.", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    super::query::ApiQuery(query): super::query::ApiQuery<ListQuery>,
) -> Result<Json<SavedFilterList>, AppError> {
    let Some(project) = state
        .store
        .find_project(principal.tenant_id, query.project_id)
        .await?
    else {
        return Ok(Json(SavedFilterList { items: Vec::new() }));
    };
    let items = state
        .store
        .list_saved_filters(principal.tenant_id, project.id)
        .await?;
    Ok(Json(SavedFilterList { items }))
}

/// Saves a filter of a project's trace list for the whole organisation.
///
/// `filters` holds the trace list's query parameters and is checked as the
/// list checks them: a filter that could not run is refused.
#[utoipa::path(
    post,
    path = "/v1/saved-filters",
    operation_id = "createSavedFilter",
    tag = "saved-filters",
    request_body(content = CreateSavedFilter, example = json!({"project_id": "default", "name": "failing refunds", "filters": {"error": "true", "q": "refund"}})),
    responses(
        (status = 201, description = "The saved filter.", body = SavedFilter),
        (status = 400, description = BAD_FILTER, body = ErrorBody),
        (status = 404, description = "`not_found`: the caller's organisation has no project `project_id`.", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<CreateSavedFilter>,
) -> Result<(StatusCode, Json<SavedFilter>), AppError> {
    let (user, _, _) = principal.session()?;
    let created_by = user.uuid.clone();
    let name = checked_name(&body.name)?;
    let filters = checked_filters(&body.filters)?;
    let project = state
        .store
        .find_project(principal.tenant_id, body.project_id)
        .await?
        .ok_or(AppError::NotFound("project"))?;
    let saved = state
        .store
        .create_saved_filter(
            principal.tenant_id,
            project.id,
            name,
            filters,
            created_by,
            actor(&principal),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(saved)))
}

/// Renames a saved filter, changes its filters, or both.
#[utoipa::path(
    patch,
    path = "/v1/saved-filters/{id}",
    operation_id = "updateSavedFilter",
    tag = "saved-filters",
    params(("id" = String, Path, format = "uuid", description = "The saved filter's id.")),
    request_body(content = UpdateSavedFilter, example = json!({"name": "all failures", "filters": {"error": "true"}})),
    responses(
        (status = 200, description = "The saved filter as changed (as it was, for an empty change).", body = SavedFilter),
        (status = 400, description = BAD_FILTER, body = ErrorBody),
    )
)]
pub async fn update(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<UpdateSavedFilter>,
) -> Result<Json<SavedFilter>, AppError> {
    let id = filter_id(&id)?;
    let change = FilterChange {
        name: body.name.as_deref().map(checked_name).transpose()?,
        filters: body.filters.as_ref().map(checked_filters).transpose()?,
    };
    let saved = if change.name.is_none() && change.filters.is_none() {
        state.store.saved_filter(principal.tenant_id, id).await?
    } else {
        state
            .store
            .update_saved_filter(principal.tenant_id, id, change, actor(&principal))
            .await?
    };
    saved.map(Json).ok_or(AppError::NotFound("saved filter"))
}

/// Deletes a saved filter for everyone.
#[utoipa::path(
    delete,
    path = "/v1/saved-filters/{id}",
    operation_id = "deleteSavedFilter",
    tag = "saved-filters",
    params(("id" = String, Path, format = "uuid", description = "The saved filter's id.")),
    responses((status = 204, description = "Deleted. No body."))
)]
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    let id = filter_id(&id)?;
    if state
        .store
        .delete_saved_filter(principal.tenant_id, id, actor(&principal))
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AppError::NotFound("saved filter"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refusal(filters: Value) -> String {
        let Value::Object(map) = filters else {
            panic!("an object")
        };
        match checked_filters(&map) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_filter_the_trace_list_would_refuse_is_refused_naming_its_parameter() {
        let Value::Object(ok) =
            json!({"error": true, "latency_min": 5, "q": "refund", "tag_key": null})
        else {
            panic!("an object")
        };
        assert!(checked_filters(&ok).is_ok());
        assert!(refusal(json!({"latency_min": -1})).starts_with("filters.latency_min: "));
        assert!(refusal(json!({"error": "maybe"})).starts_with("filters.error: "));
        assert!(refusal(json!({"from": "soon"})).starts_with("filters.from: "));
        assert!(refusal(json!({"limit": 5})).starts_with("filters.limit: not a filter"));
        assert!(refusal(json!({"model": ["a"]})).starts_with("filters.model: must be"));
        assert!(refusal(json!({"tag_key": "env"})).contains("tag_value"));
    }
}
