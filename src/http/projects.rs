//! `/v1/projects` and `/v1/apikeys`: what an organisation's users manage.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::JsonBody;
use super::limits::plan_gate;
use super::principal::actor;
use super::query::{ApiQuery, Cursor, Listing, Page};
use super::{AppState, Principal};
use crate::auth;
use crate::error::{AppError, ErrorBody};
use crate::ingest::parse_time;
use crate::model::Timestamp;
use crate::store::{ApiKeyInfo, NewApiKey, ProjectChange, ProjectRecord};

/// The longest retention a project may ask for, in days.
pub const MAX_RETENTION_DAYS: i64 = 3650;

/// The projects list, oldest first; a position is the last project shown.
pub struct Projects;

impl Listing for Projects {
    const DEFAULT_LIMIT: u32 = 50;
    const MAX_LIMIT: u32 = 200;
    const KIND: &'static str = "projects";
    type Position = i64;
}

/// A project: the group traces are sent to.
#[derive(Serialize, ToSchema)]
pub struct Project {
    /// The project's id.
    id: String,
    /// Its organisation's id.
    organization_id: String,
    name: String,
    /// Unique in the organisation; traces may name the project by it.
    slug: String,
    /// Archived projects keep their traces and refuse new ones.
    archived: bool,
    #[schema(value_type = Option<String>, format = DateTime)]
    archived_at: Option<Timestamp>,
    /// Days its traces are kept, instead of the server's setting; null:
    /// the server's.
    retention_days_override: Option<i64>,
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
    /// When its name, retention or archiving last changed.
    #[schema(value_type = String, format = DateTime)]
    updated_at: Timestamp,
}

impl From<&ProjectRecord> for Project {
    fn from(p: &ProjectRecord) -> Project {
        Project {
            id: p.uuid.clone(),
            organization_id: p.organization_uuid.clone(),
            name: p.name.clone(),
            slug: p.slug.clone(),
            archived: p.archived,
            archived_at: p.archived_at.map(Timestamp),
            retention_days_override: p.retention_days,
            created_at: Timestamp(p.created_at),
            updated_at: Timestamp(p.updated_at),
        }
    }
}

/// The organisation's projects: all of them, or one page.
#[derive(Serialize, ToSchema)]
pub struct ProjectList {
    projects: Vec<Project>,
    /// Only when paging (`limit` or `cursor` given): whether more follow.
    #[serde(skip_serializing_if = "Option::is_none")]
    has_more: Option<bool>,
    /// Only when paging: where the next page starts; null on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    next_cursor: Option<Option<String>>,
}

/// `GET /v1/projects`'s query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProjectListQuery {
    /// Also archived projects: `true` or `false` (the default).
    #[param(value_type = Option<bool>)]
    include_archived: Option<String>,
    #[serde(flatten)]
    #[param(ignore)]
    page: Page<Projects>,
}

/// Lists the organisation's projects.
///
/// All of them when neither `limit` nor `cursor` is given; otherwise one
/// page (`limit`, 50 when left out), with `has_more` and `next_cursor`.
#[utoipa::path(
    get,
    path = "/v1/projects",
    operation_id = "listProjects",
    tag = "projects",
    params(ProjectListQuery, Page<Projects>),
    responses((status = 200, description = "The projects, oldest first.", body = ProjectList))
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<ProjectListQuery>,
) -> Result<Json<ProjectList>, AppError> {
    let include_archived = match query.include_archived.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(AppError::bad_request(
                "include_archived: must be true or false",
            ))
        }
    };
    let page = query.page;
    let paged = page.limit.is_some() || page.cursor.is_some();
    let take = if paged { page.size() } else { usize::MAX / 2 };
    let mut projects = state
        .store
        .list_projects(principal.tenant_id, include_archived, page.cursor, take + 1)
        .await?;
    let has_more = projects.len() > take;
    projects.truncate(take);
    let next_cursor = match (has_more, projects.last()) {
        (true, Some(last)) => Some(Cursor::<Projects>::encode(&last.id)),
        _ => None,
    };
    Ok(Json(ProjectList {
        projects: projects.iter().map(Project::from).collect(),
        has_more: paged.then_some(has_more),
        next_cursor: paged.then_some(next_cursor),
    }))
}

/// A project to create.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"name": "checkout assistant"}))]
pub struct NewProject {
    /// 1 to 200 characters.
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
#[utoipa::path(
    post,
    path = "/v1/projects",
    operation_id = "createProject",
    tag = "projects",
    request_body = NewProject,
    responses(
        (status = 201, description = "Created.", body = Project),
        (status = 409, description = "`conflict`: the organisation has a project of that name or slug.", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<NewProject>,
) -> Result<(StatusCode, Json<Project>), AppError> {
    let project = state
        .store
        .create_project(
            principal.tenant_id,
            check_name(&body.name)?,
            actor(&principal),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(Project::from(&project))))
}

/// A change to a project; a field left out stays as it is.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"retention_days_override": 30}))]
pub struct ProjectPatch {
    /// 1 to 200 characters.
    #[serde(default)]
    name: Option<String>,
    /// Days its traces are kept, 1 to 3650 (within the plan's limit); null
    /// returns it to the server's setting.
    #[serde(default, deserialize_with = "retention_days")]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 3650)]
    retention_days_override: Option<Option<i64>>,
}

/// `retention_days_override` when present: null, or a number of days.
fn retention_days<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<i64>>, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => Ok(Some(None)),
        v => v
            .as_i64()
            .filter(|days| (1..=MAX_RETENTION_DAYS).contains(days))
            .map(|days| Some(Some(days)))
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "must be null or an integer from 1 to {MAX_RETENTION_DAYS}"
                ))
            }),
    }
}

/// Renames a project or sets how long its traces are kept.
#[utoipa::path(
    patch,
    path = "/v1/projects/{id}",
    operation_id = "patchProject",
    tag = "projects",
    params(("id" = String, Path, description = "The project's id.")),
    request_body = ProjectPatch,
    responses(
        (status = 200, description = "The project as changed.", body = Project),
        (status = 402, description = "`plan_upgrade_required`: the organisation's plan keeps traces for fewer days; `required_plan` names the least plan that allows it.", body = ErrorBody),
        (status = 409, description = "`conflict`: the organisation has another project of that name or slug.", body = ErrorBody),
    )
)]
pub async fn update(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ProjectPatch>,
) -> Result<Json<Project>, AppError> {
    let mut change = ProjectChange::default();
    if let Some(name) = &body.name {
        change.name = Some(check_name(name)?);
    }
    if let Some(days) = body.retention_days_override {
        if let Some(days) = days {
            plan_gate(
                &state,
                principal.plan,
                &format!("a retention of {days} days"),
                |l| l.max_retention_days == 0 || days <= i64::from(l.max_retention_days),
            )?;
        }
        change.retention_days = Some(days);
    }
    let project = state
        .store
        .update_project(principal.tenant_id, id, change, actor(&principal))
        .await?
        .ok_or(AppError::NotFound("project"))?;
    Ok(Json(Project::from(&project)))
}

/// Archives a project: it keeps its traces and refuses new ones.
#[utoipa::path(
    post,
    path = "/v1/projects/{id}/archive",
    operation_id = "archiveProject",
    tag = "projects",
    params(("id" = String, Path, description = "The project's id.")),
    responses((status = 200, description = "The project, archived.", body = Project))
)]
pub async fn archive(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Project>, AppError> {
    set_archived(state, principal, id, true).await
}

/// Unarchives a project: it takes traces again.
#[utoipa::path(
    post,
    path = "/v1/projects/{id}/unarchive",
    operation_id = "unarchiveProject",
    tag = "projects",
    params(("id" = String, Path, description = "The project's id.")),
    responses((status = 200, description = "The project, active.", body = Project))
)]
pub async fn unarchive(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Project>, AppError> {
    set_archived(state, principal, id, false).await
}

async fn set_archived(
    state: AppState,
    principal: Principal,
    id: String,
    archived: bool,
) -> Result<Json<Project>, AppError> {
    let project = state
        .store
        .set_project_archived(principal.tenant_id, id, archived, actor(&principal))
        .await?
        .ok_or(AppError::NotFound("project"))?;
    Ok(Json(Project::from(&project)))
}

// ------------------------------------------------------------- API keys ----

/// Scopes a key may carry.
const SCOPES: &[&str] = &["query", "ingest"];

/// An API key, without its secret.
#[derive(Serialize, ToSchema)]
pub struct ApiKey {
    /// The key's id.
    id: String,
    name: String,
    /// The key's first characters, to tell keys apart.
    #[schema(example = "tl_AbCdEfGhI")]
    prefix: String,
    /// What the key may do (`ingest`, `query`); empty: everything keys may.
    scopes: Vec<String>,
    /// The project its traces go to.
    project_id: String,
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    expires_at: Option<Timestamp>,
    /// When it was last used (written at most once a minute).
    #[schema(value_type = Option<String>, format = DateTime)]
    last_used_at: Option<Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    revoked_at: Option<Timestamp>,
}

impl From<&ApiKeyInfo> for ApiKey {
    fn from(k: &ApiKeyInfo) -> ApiKey {
        ApiKey {
            id: k.uuid.clone(),
            name: k.name.clone(),
            prefix: k.prefix.clone(),
            scopes: k.scopes.clone(),
            project_id: k.project_uuid.clone(),
            created_at: Timestamp(k.created_at),
            expires_at: k.expires_at.map(Timestamp),
            last_used_at: k.last_used_at.map(Timestamp),
            revoked_at: k.revoked_at.map(Timestamp),
        }
    }
}

/// An API key with its secret, shown this once.
#[derive(Serialize, ToSchema)]
pub struct ApiKeyWithSecret {
    #[serde(flatten)]
    info: ApiKey,
    /// The key (`tl_…`): send it as `Authorization: Bearer`. It is not
    /// shown again.
    key: String,
}

/// The organisation's API keys (never the secrets).
#[utoipa::path(
    get,
    path = "/v1/apikeys",
    operation_id = "listAPIKeys",
    tag = "api-keys",
    responses((status = 200, description = "Every key of the organisation, revoked ones included: a bare array, as the reference answers.", body = Vec<ApiKey>))
)]
pub async fn list_keys(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Vec<ApiKey>>, AppError> {
    let keys = state.store.list_api_keys(principal.tenant_id).await?;
    Ok(Json(keys.iter().map(ApiKey::from).collect()))
}

/// A key to create.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"name": "production SDK", "scopes": ["ingest"]}))]
pub struct NewKey {
    /// 1 to 200 characters.
    name: String,
    /// `ingest`, `query`; none: everything keys may.
    #[serde(default)]
    scopes: Vec<String>,
    /// The project its traces go to (id, slug or name); the organisation's
    /// first project when left out.
    project_id: Option<String>,
    /// When it stops working, RFC 3339; never when left out.
    #[schema(format = DateTime)]
    expires_at: Option<String>,
}

/// Creates an API key for a project; the secret is shown in this answer only.
#[utoipa::path(
    post,
    path = "/v1/apikeys",
    operation_id = "createAPIKey",
    tag = "api-keys",
    request_body = NewKey,
    responses(
        (status = 201, description = "Created, with its secret.", body = ApiKeyWithSecret),
        (status = 404, description = "`not_found`: the organisation has no project `project_id`.", body = ErrorBody),
    )
)]
pub async fn create_key(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<NewKey>,
) -> Result<(StatusCode, Json<ApiKeyWithSecret>), AppError> {
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
    let creator = principal.session().ok().map(|(user, _, _)| user.id);
    let id = state
        .store
        .create_user_api_key(
            principal.tenant_id,
            NewApiKey {
                project_id,
                name,
                prefix: auth::visible_prefix(&key).to_owned(),
                key_hash: auth::hash_api_key(&key),
                expires_at,
                scopes: body.scopes,
            },
            creator,
            actor(&principal),
        )
        .await?;
    let info = state
        .store
        .api_key_info(principal.tenant_id, id)
        .await?
        .ok_or(AppError::Internal("the new key vanished".into()))?;
    Ok((
        StatusCode::CREATED,
        Json(ApiKeyWithSecret {
            info: ApiKey::from(&info),
            key,
        }),
    ))
}

async fn key_id(state: &AppState, principal: &Principal, id: String) -> Result<i64, AppError> {
    state
        .store
        .api_key_id(principal.tenant_id, id)
        .await?
        .ok_or(AppError::NotFound("API key"))
}

/// Revokes an API key at once.
#[utoipa::path(
    delete,
    path = "/v1/apikeys/{id}",
    operation_id = "revokeAPIKey",
    tag = "api-keys",
    params(("id" = String, Path, description = "The key's id.")),
    responses((status = 204, description = "Revoked. No body."))
)]
pub async fn revoke_key(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    let key_id = key_id(&state, &principal, id).await?;
    state
        .store
        .revoke_api_key(principal.tenant_id, key_id, actor(&principal))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replaces an API key's secret; the old one stops working.
#[utoipa::path(
    post,
    path = "/v1/apikeys/{id}/rotate",
    operation_id = "rotateAPIKey",
    tag = "api-keys",
    params(("id" = String, Path, description = "The key's id.")),
    responses(
        (status = 200, description = "The key with its new secret, shown this once.", body = ApiKeyWithSecret),
        (status = 409, description = "`conflict`: the key is revoked.", body = ErrorBody),
    )
)]
pub async fn rotate_key(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<ApiKeyWithSecret>, AppError> {
    let key_id = key_id(&state, &principal, id).await?;
    let key = auth::generate_api_key();
    let rotated = state
        .store
        .rotate_api_key(
            principal.tenant_id,
            key_id,
            auth::visible_prefix(&key).to_owned(),
            auth::hash_api_key(&key),
            actor(&principal),
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
    Ok(Json(ApiKeyWithSecret {
        info: ApiKey::from(&info),
        key,
    }))
}

// ------------------------------------------------------ project metric ----

/// The metrics `GET /v1/projects/{id}/metrics` reads.
const PROJECT_METRICS: &[&str] = &[
    "retry_cap_hit",
    "traces",
    "errors",
    "tokens",
    "p50_latency_ms",
    "p95_latency_ms",
    "p99_latency_ms",
];

/// Which metric over which window.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ProjectMetricQuery {
    /// `retry_cap_hit` (the reference's: control actions escalated for
    /// retries; this server runs no control loop, so always 0), or from the
    /// trace rollups `traces`, `errors`, `tokens`, `p50_latency_ms`,
    /// `p95_latency_ms`, `p99_latency_ms`.
    #[param(required = true, example = "traces")]
    metric: Option<String>,
    /// `7d` or `30d`, ending now.
    #[param(required = true, example = "7d")]
    window: Option<String>,
}

/// A project's metric (the reference's `ProjectMetricResponse`).
#[derive(Serialize, ToSchema)]
#[schema(as = ProjectMetricResponse)]
pub struct ProjectMetric {
    #[schema(example = "traces")]
    metric: String,
    /// A count (or milliseconds for latencies); 0, not null, when nothing matched.
    value: i64,
    #[schema(example = "7d")]
    window: String,
}

/// One metric of a project over the last 7 or 30 days.
#[utoipa::path(
    get,
    path = "/v1/projects/{id}/metrics",
    operation_id = "getProjectMetric",
    tag = "projects",
    params(("id" = String, Path, format = "uuid", description = "The project's id."), ProjectMetricQuery),
    responses(
        (status = 200, description = "The metric's value.", body = ProjectMetric),
        (status = 422, description = "`validation_error`: `metric` or `window` is missing or not one this server reads.", body = ErrorBody),
    )
)]
pub async fn metric(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<ProjectMetricQuery>,
) -> Result<Json<ProjectMetric>, AppError> {
    let project = state
        .store
        .find_project(principal.tenant_id, id)
        .await?
        .ok_or(AppError::NotFound("project"))?;
    let metric = query
        .metric
        .filter(|m| PROJECT_METRICS.contains(&m.as_str()))
        .ok_or_else(|| {
            AppError::unprocessable(format!(
                "metric: must be one of {}",
                PROJECT_METRICS.join(", ")
            ))
        })?;
    let days = match query.window.as_deref() {
        Some("7d") => 7,
        Some("30d") => 30,
        _ => return Err(AppError::unprocessable("window: must be 7d or 30d")),
    };
    let to = crate::store::now_micros();
    let from = to - days * 86_400_000_000;
    let value = if metric == "retry_cap_hit" {
        0
    } else {
        let totals = state
            .store
            .metrics(
                principal.tenant_id,
                crate::store::MetricsQuery {
                    project_id: Some(project.id),
                    from,
                    to,
                    interval: None,
                },
            )
            .await?
            .total;
        let latency = |q: f64| totals.latency.quantile(q).map_or(0, |v| v.round() as i64);
        match metric.as_str() {
            "traces" => totals.traces,
            "errors" => totals.errors,
            "tokens" => totals.tokens,
            "p50_latency_ms" => latency(0.5),
            "p95_latency_ms" => latency(0.95),
            _ => latency(0.99),
        }
    };
    Ok(Json(ProjectMetric {
        metric,
        value,
        window: format!("{days}d"),
    }))
}
