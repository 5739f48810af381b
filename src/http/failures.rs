//! `GET /v1/failures/clusters`: failing traces grouped by the shape of
//! their error message (numbers, ids, quoted values and addresses masked),
//! ranked by how many traces each group has in a window.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::query::{ApiQuery, ProjectParam, TimeWindow};
use super::{AppState, Principal};
use crate::error::{AppError, ErrorBody};
use crate::model::Timestamp;
use crate::store::{now_micros, ClusterQuery};

const DAY: i64 = 86_400_000_000;
/// Clusters returned when `limit` is not given, and at most.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 200;

/// How many clusters to return.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ClusterParams {
    /// The most clusters to return, the largest first: 1 to 200 (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 200)]
    limit: Option<String>,
    #[serde(flatten)]
    #[param(ignore)]
    window: TimeWindow,
}

/// A group of failing traces whose error messages differ only in what
/// varies from one occurrence to the next.
#[derive(Serialize, ToSchema)]
#[schema(as = FailureCluster)]
pub struct FailureCluster {
    /// The messages' shape: numbers (`<n>`), ids (`<id>`), quoted
    /// values (`<str>`), addresses (`<ip>`, `<host>`), URLs (`<url>`), paths
    /// (`<path>`) and emails (`<email>`) masked; the first line of the
    /// message, or a Python traceback's last.
    #[schema(example = "timeout after <n> ms")]
    error_message: String,
    /// Failing traces of the cluster in the window.
    count: i64,
    /// The cluster's earliest trace in the window (its start).
    #[schema(value_type = String, format = DateTime)]
    first_seen: Timestamp,
    /// The cluster's latest trace in the window (its start).
    #[schema(value_type = String, format = DateTime)]
    last_seen: Timestamp,
    /// Up to five of the cluster's latest traces in the window, newest first.
    #[schema(value_type = Vec<String>, format = "uuid")]
    sample_ids: Vec<String>,
    /// The newest trace's own error message, its first 1,000 characters.
    #[schema(example = "timeout after 3012 ms")]
    example_message: Option<String>,
    /// The failure class the shape names, if any: what the trace list's
    /// `failure_type` filter takes.
    #[schema(example = "timeout")]
    failure_type: Option<&'static str>,
}

/// The clusters of a window.
#[derive(Serialize, ToSchema)]
#[schema(as = FailureClustersResponse)]
pub struct FailureClustersResponse {
    /// Most traces first.
    clusters: Vec<FailureCluster>,
}

/// Group error traces by message prefix and return failure clusters.
///
/// Failing traces (those with an `error`) of the window (`from` defaults to
/// 24 hours before `to`, `to` to now; by each trace's start) of the
/// organisation or one project, grouped by the shape of their error
/// message, the largest groups first, each with its count, first and last
/// trace and latest trace ids. Counted as traces arrive, so the answer
/// does not grow with the number of traces stored.
#[utoipa::path(
    get,
    path = "/v1/failures/clusters",
    operation_id = "getFailureClusters",
    tag = "failures",
    params(ClusterParams, ProjectParam, TimeWindow),
    responses(
        (status = 200, description = "Failure clusters", body = FailureClustersResponse,
         example = json!({"clusters": [{
             "error_message": "timeout after <n> ms",
             "count": 42,
             "first_seen": "2026-01-02T03:04:05.000000Z",
             "last_seen": "2026-01-02T09:14:00.000000Z",
             "sample_ids": ["0190d4a0-7a1e-7c3b-8f00-2a4c6e8b0d12"],
             "example_message": "timeout after 3012 ms",
             "failure_type": "timeout"
         }]})),
        (status = 404, description = "`not_found`: the caller's organisation has no project `project_id`.", body = ErrorBody),
    )
)]
pub async fn clusters(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<ClusterParams>,
    ApiQuery(project): ApiQuery<ProjectParam>,
) -> Result<Json<FailureClustersResponse>, AppError> {
    let to = params.window.to.unwrap_or_else(now_micros);
    let from = params.window.from.unwrap_or(to.saturating_sub(DAY));
    if to < from {
        return Err(AppError::bad_request("to: must not be before from"));
    }
    let limit = match params.limit {
        None => DEFAULT_LIMIT,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                AppError::bad_request(format!("limit: must be an integer from 1 to {MAX_LIMIT}"))
            })?,
    };
    let project_id = project.resolve(&state, &principal).await?;
    let rows = state
        .store
        .failure_clusters(
            principal.tenant_id,
            ClusterQuery {
                project_id,
                from,
                to,
                limit,
            },
        )
        .await?;
    Ok(Json(FailureClustersResponse {
        clusters: rows
            .into_iter()
            .map(|r| FailureCluster {
                error_message: r.message,
                count: r.count,
                first_seen: Timestamp(r.first_seen),
                last_seen: Timestamp(r.last_seen),
                sample_ids: r.sample_ids,
                example_message: r.example,
                failure_type: r.failure_type,
            })
            .collect(),
    }))
}
