//! `/v1/projects` and `/v1/apikeys`: what an organisation's users manage.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

use super::audit;
use super::extract::JsonBody;
use super::limits::plan_gate;
use super::{AppState, Principal};
use crate::auth;
use crate::error::AppError;
use crate::ingest::parse_time;
use crate::model::Timestamp;
use crate::store::{ApiKeyInfo, NewApiKey, ProjectChange, ProjectRecord};

/// The longest retention a project may ask for, in days.
pub const MAX_RETENTION_DAYS: i64 = 3650;
const MAX_PAGE: usize = 200;

fn project_json(p: &ProjectRecord) -> Value {
    json!({
        "id": p.uuid,
        "organization_id": p.organization_uuid,
        "name": p.name,
        "slug": p.slug,
        "archived": p.archived,
        "archived_at": p.archived_at.map(Timestamp),
        "retention_days_override": p.retention_days,
        "created_at": Timestamp(p.created_at),
        "updated_at": Timestamp(p.updated_at),
    })
}

/// `GET /v1/projects`: all of them, or one page with `limit`/`cursor`.
#[utoipa::path(get, path = "/v1/projects", operation_id = "listProjects", tag = "projects", responses((status = 200, description = "OK")))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, AppError> {
    let include_archived = match params.get("include_archived").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(AppError::bad_request(
                "include_archived: must be true or false",
            ))
        }
    };
    let after = params
        .get("cursor")
        .map(|c| {
            decode_cursor(c)
                .ok_or_else(|| AppError::bad_request("cursor: not a cursor this server issued"))
        })
        .transpose()?;
    let limit = params
        .get("limit")
        .map(|l| {
            l.parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_PAGE).contains(n))
                .ok_or_else(|| {
                    AppError::bad_request(format!("limit: must be an integer from 1 to {MAX_PAGE}"))
                })
        })
        .transpose()?;
    let paged = limit.is_some() || after.is_some();
    let take = limit.unwrap_or(if paged { 50 } else { usize::MAX / 2 });
    let mut projects = state
        .store
        .list_projects(principal.tenant_id, include_archived, after, take + 1)
        .await?;
    let has_more = projects.len() > take;
    projects.truncate(take);
    let mut body = json!({ "projects": projects.iter().map(project_json).collect::<Vec<_>>() });
    if paged {
        body["has_more"] = has_more.into();
        body["next_cursor"] = match (has_more, projects.last()) {
            (true, Some(last)) => encode_cursor(last.id).into(),
            _ => Value::Null,
        };
    }
    Ok(Json(body))
}

fn encode_cursor(id: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("p1:{id}"))
}

fn decode_cursor(raw: &str) -> Option<i64> {
    let bytes = URL_SAFE_NO_PAD.decode(raw).ok()?;
    std::str::from_utf8(&bytes)
        .ok()?
        .strip_prefix("p1:")?
        .parse()
        .ok()
}

#[derive(Deserialize)]
pub struct NewProject {
    name: String,
}

fn check_name(name: &str) -> Result<String, AppError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(AppError::unprocessable("name: must be 1 to 200 characters"));
    }
    Ok(name.to_owned())
}

/// Creates a project.
#[utoipa::path(post, path = "/v1/projects", operation_id = "createProject", tag = "projects", responses((status = 201, description = "Created")))]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<NewProject>,
) -> Result<Response, AppError> {
    let project = state
        .store
        .create_project(
            principal.tenant_id,
            check_name(&body.name)?,
            audit::actor(&principal),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(project_json(&project))).into_response())
}

/// `PATCH /v1/projects/{id}`: `name`, `retention_days_override` (null clears).
#[utoipa::path(patch, path = "/v1/projects/{id}", operation_id = "patchProject", tag = "projects", params(("id" = String, Path, description = "The id.")), responses((status = 200, description = "OK")))]
pub async fn update(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<serde_json::Map<String, Value>>,
) -> Result<Json<Value>, AppError> {
    let mut change = ProjectChange::default();
    if let Some(name) = body.get("name") {
        let name = name
            .as_str()
            .ok_or_else(|| AppError::unprocessable("name: must be a string"))?;
        change.name = Some(check_name(name)?);
    }
    if let Some(days) = body.get("retention_days_override") {
        change.retention_days = Some(match days {
            Value::Null => None,
            v => {
                let days = v
                    .as_i64()
                    .filter(|d| (1..=MAX_RETENTION_DAYS).contains(d))
                    .ok_or_else(|| {
                        AppError::unprocessable(format!(
                            "retention_days_override: must be null or an integer from 1 to {MAX_RETENTION_DAYS}"
                        ))
                    })?;
                plan_gate(
                    &state,
                    principal.plan,
                    &format!("a retention of {days} days"),
                    |l| l.max_retention_days == 0 || days <= i64::from(l.max_retention_days),
                )?;
                Some(days)
            }
        });
    }
    let project = state
        .store
        .update_project(principal.tenant_id, id, change, audit::actor(&principal))
        .await?
        .ok_or(AppError::NotFound("project"))?;
    Ok(Json(project_json(&project)))
}

/// Archives a project: it keeps its traces and refuses new ones.
#[utoipa::path(post, path = "/v1/projects/{id}/archive", operation_id = "archiveProject", tag = "projects", params(("id" = String, Path, description = "The id.")), responses((status = 200, description = "OK")))]
pub async fn archive(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    set_archived(state, principal, id, true).await
}

/// Unarchives a project: it takes traces again.
#[utoipa::path(post, path = "/v1/projects/{id}/unarchive", operation_id = "unarchiveProject", tag = "projects", params(("id" = String, Path, description = "The id.")), responses((status = 200, description = "OK")))]
pub async fn unarchive(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    set_archived(state, principal, id, false).await
}

async fn set_archived(
    state: AppState,
    principal: Principal,
    id: String,
    archived: bool,
) -> Result<Json<Value>, AppError> {
    let project = state
        .store
        .set_project_archived(principal.tenant_id, id, archived, audit::actor(&principal))
        .await?
        .ok_or(AppError::NotFound("project"))?;
    Ok(Json(project_json(&project)))
}

// ------------------------------------------------------------- API keys ----

/// Scopes a key may carry.
const SCOPES: &[&str] = &["query", "ingest"];

fn key_json(k: &ApiKeyInfo) -> Value {
    json!({
        "id": k.uuid,
        "name": k.name,
        "prefix": k.prefix,
        "scopes": k.scopes,
        "project_id": k.project_uuid,
        "created_at": Timestamp(k.created_at),
        "expires_at": k.expires_at.map(Timestamp),
        "last_used_at": k.last_used_at.map(Timestamp),
        "revoked_at": k.revoked_at.map(Timestamp),
    })
}

/// The organisation's API keys (never the secrets).
#[utoipa::path(get, path = "/v1/apikeys", operation_id = "listAPIKeys", tag = "api-keys", responses((status = 200, description = "OK")))]
pub async fn list_keys(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Value>, AppError> {
    let keys = state.store.list_api_keys(principal.tenant_id).await?;
    // A bare array of APIKey, as the reference answers.
    Ok(Json(Value::Array(keys.iter().map(key_json).collect())))
}

#[derive(Deserialize)]
pub struct NewKey {
    name: String,
    #[serde(default)]
    scopes: Vec<String>,
    project_id: Option<String>,
    expires_at: Option<String>,
}

/// Creates an API key for a project; the secret is shown in this answer only.
#[utoipa::path(post, path = "/v1/apikeys", operation_id = "createAPIKey", tag = "api-keys", responses((status = 201, description = "Created")))]
pub async fn create_key(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<NewKey>,
) -> Result<Response, AppError> {
    let name = check_name(&body.name)?;
    if let Some(bad) = body.scopes.iter().find(|s| !SCOPES.contains(&s.as_str())) {
        return Err(AppError::unprocessable(format!(
            "scopes: {bad:?} is not one of {SCOPES:?}"
        )));
    }
    let project_id = match &body.project_id {
        None => principal.project_id,
        Some(reference) => {
            state
                .store
                .find_project(principal.tenant_id, reference.clone())
                .await?
                .ok_or(AppError::NotFound("project"))?
                .id
        }
    };
    let expires_at = body
        .expires_at
        .as_deref()
        .map(|t| {
            parse_time(t)
                .ok_or_else(|| AppError::unprocessable("expires_at: must be an RFC 3339 time"))
        })
        .transpose()?;
    let key = auth::generate_api_key();
    let id = state
        .store
        .create_api_key(
            principal.tenant_id,
            NewApiKey {
                project_id,
                name,
                prefix: auth::visible_prefix(&key).to_owned(),
                key_hash: auth::hash_api_key(&key),
                expires_at,
                scopes: body.scopes,
            },
            audit::actor(&principal),
        )
        .await?;
    let info = state
        .store
        .api_key_info(principal.tenant_id, id)
        .await?
        .ok_or(AppError::Internal("the new key vanished".into()))?;
    let mut out = key_json(&info);
    out["key"] = key.into();
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

async fn key_id(state: &AppState, principal: &Principal, id: String) -> Result<i64, AppError> {
    state
        .store
        .api_key_id(principal.tenant_id, id)
        .await?
        .ok_or(AppError::NotFound("API key"))
}

/// Revokes an API key at once.
#[utoipa::path(delete, path = "/v1/apikeys/{id}", operation_id = "revokeAPIKey", tag = "api-keys", params(("id" = String, Path, description = "The id.")), responses((status = 204, description = "Done; no body")))]
pub async fn revoke_key(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    let key_id = key_id(&state, &principal, id).await?;
    state
        .store
        .revoke_api_key(principal.tenant_id, key_id, audit::actor(&principal))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replaces an API key's secret; the old one stops working.
#[utoipa::path(post, path = "/v1/apikeys/{id}/rotate", operation_id = "rotateAPIKey", tag = "api-keys", params(("id" = String, Path, description = "The id.")), responses((status = 200, description = "OK")))]
pub async fn rotate_key(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    let key_id = key_id(&state, &principal, id).await?;
    let key = auth::generate_api_key();
    let rotated = state
        .store
        .rotate_api_key(
            principal.tenant_id,
            key_id,
            auth::visible_prefix(&key).to_owned(),
            auth::hash_api_key(&key),
            audit::actor(&principal),
        )
        .await?;
    if !rotated {
        return Err(AppError::Conflict("a revoked key cannot be rotated".into()));
    }
    let info = state
        .store
        .api_key_info(principal.tenant_id, key_id)
        .await?
        .ok_or(AppError::NotFound("API key"))?;
    let mut out = key_json(&info);
    out["key"] = key.into();
    Ok(Json(out))
}
