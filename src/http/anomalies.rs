//! `/v1/anomalies`: what the failure rules raised and what the built-in
//! detector found (`crate::alerts`), newest first, each open until its
//! condition clears.

use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::eval_params::canonical_uuid;
use super::query::{ApiQuery, ProjectParam, TimeWindow};
use super::{AppState, Principal};
use crate::error::{AppError, ErrorBody};
use crate::store::{Anomaly, AnomalyFilter, AnomalyType, Severity};

/// The largest page.
const MAX_LIMIT: u32 = 100;
/// The furthest a page may start: older anomalies are reached with `to`.
const MAX_OFFSET: u32 = 10_000;

/// The reference's `AnomalyListResponse`, with whether more follow.
#[derive(Serialize, ToSchema)]
#[schema(as = AnomalyListResponse)]
pub struct AnomalyList {
    anomalies: Vec<Anomaly>,
    /// More anomalies match after this page (at `offset + limit`).
    has_more: bool,
}

/// A page of anomalies, and which.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct AnomalyQuery {
    /// 1 to 100; default 50.
    #[param(minimum = 1, maximum = 100, default = 50)]
    limit: Option<u32>,
    /// Anomalies to skip, 0 to 10000; default 0.
    #[param(minimum = 0, maximum = 10000, default = 0)]
    offset: Option<u32>,
    /// `open` (not recovered yet) or `recovered`.
    #[param(value_type = Option<String>, example = "open")]
    status: Option<String>,
    /// Only this type.
    #[param(value_type = Option<AnomalyType>, inline)]
    #[serde(rename = "type")]
    kind: Option<String>,
    /// Only this severity.
    #[param(value_type = Option<Severity>, inline)]
    severity: Option<String>,
    /// `rule` (raised by a failure rule) or `builtin` (the detector).
    #[param(value_type = Option<String>, example = "builtin")]
    source: Option<String>,
    /// Only anomalies of this failure rule.
    #[param(value_type = Option<String>, format = "uuid")]
    rule_id: Option<String>,
}

fn one_of(
    field: &str,
    value: Option<String>,
    allowed: &[&str],
) -> Result<Option<String>, AppError> {
    match value {
        Some(v) if !allowed.contains(&v.as_str()) => Err(AppError::bad_request(format!(
            "{field}: must be one of {}",
            allowed.join(", ")
        ))),
        other => Ok(other),
    }
}

/// List detected anomalies for the tenant.
///
/// Newest first. Besides the reference's `limit` and `offset`: `status`,
/// `type`, `severity`, `source`, `rule_id`, `project_id` and a window on
/// `detected_at` (`from`, `to`).
#[utoipa::path(
    get,
    path = "/v1/anomalies",
    operation_id = "listAnomalies",
    tag = "anomaly",
    params(AnomalyQuery, ProjectParam, TimeWindow),
    responses(
        (status = 200, description = "Anomaly list.", body = AnomalyList),
        (status = 404, description = "`not_found`: the caller's organisation has no project `project_id`.", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<AnomalyQuery>,
    ApiQuery(project): ApiQuery<ProjectParam>,
    ApiQuery(window): ApiQuery<TimeWindow>,
) -> Result<Json<AnomalyList>, AppError> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(AppError::bad_request(format!(
            "limit: must be an integer from 1 to {MAX_LIMIT}"
        )));
    }
    let offset = query.offset.unwrap_or(0);
    if offset > MAX_OFFSET {
        return Err(AppError::bad_request(format!(
            "offset: 0 to {MAX_OFFSET}; narrow the window with to= for older anomalies"
        )));
    }
    let open = match query.status.as_deref() {
        None => None,
        Some("open") => Some(true),
        Some("recovered") => Some(false),
        Some(_) => return Err(AppError::bad_request("status: must be open or recovered")),
    };
    let rule = match query.rule_id {
        None => None,
        Some(r) => Some(
            canonical_uuid(&r)
                .ok_or_else(|| AppError::bad_request("rule_id: must be a failure rule's id"))?,
        ),
    };
    let filter = AnomalyFilter {
        project_id: project.resolve(&state, &principal).await?,
        open,
        kind: one_of(
            "type",
            query.kind,
            &[
                "latency_spike",
                "error_rate_spike",
                "volume_anomaly",
                "cost_spike",
                "score_drop",
            ],
        )?,
        severity: one_of(
            "severity",
            query.severity,
            &["low", "medium", "high", "critical"],
        )?,
        source: one_of("source", query.source, &["rule", "builtin"])?,
        rule,
        from: window.from,
        to: window.to,
    };
    let (anomalies, has_more) = state
        .store
        .list_anomalies(principal.tenant_id, filter, limit as usize, offset as usize)
        .await?;
    Ok(Json(AnomalyList {
        anomalies,
        has_more,
    }))
}

/// Get a single anomaly by ID.
#[utoipa::path(
    get,
    path = "/v1/anomalies/{id}",
    operation_id = "getAnomaly",
    tag = "anomaly",
    params(("id" = String, Path, format = "uuid", description = "The anomaly's id.")),
    responses(
        (status = 200, description = "Anomaly detail.", body = Anomaly),
        (status = 404, description = "`not_found`: the caller's organisation has no anomaly `id`.", body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Anomaly>, AppError> {
    let id = canonical_uuid(&id).ok_or(AppError::NotFound("anomaly"))?;
    let anomaly = state
        .store
        .get_anomaly(principal.tenant_id, id)
        .await?
        .ok_or(AppError::NotFound("anomaly"))?;
    Ok(Json(anomaly))
}
