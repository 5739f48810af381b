//! `/v1/failure-rules`: thresholds on the organisation's error rate,
//! latency, cost, volume or evaluation scores, evaluated continuously by
//! `crate::alerts` from the metric rollups. A rule that fires raises an
//! anomaly (`/v1/anomalies`) and sends a `failure.detected` webhook event,
//! once per episode; when its condition clears the anomaly is marked
//! recovered and a `failure.recovered` event is sent.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use super::eval_params::canonical_uuid;
use super::extract::JsonBody;
use super::principal::actor;
use super::{AppState, Principal};
use crate::error::{AppError, ErrorBody};
use crate::store::{
    FailureRule, FailureRuleChange, NewFailureRule, RuleMetric, RuleOperator, Severity,
};

/// The metrics a rule may watch.
pub const METRICS: &[&str] = &[
    "error_rate",
    "latency_p50",
    "latency_p95",
    "latency_p99",
    "cost",
    "volume",
    "score",
];
const OPERATORS: &[&str] = &["gt", "gte", "lt", "lte"];
const SEVERITIES: &[&str] = &["low", "medium", "high", "critical"];
/// The longest rule name, in characters.
const MAX_NAME_CHARS: usize = 200;
/// The shortest and longest window, in seconds.
const MIN_WINDOW_SECS: i64 = 10;
const MAX_WINDOW_SECS: i64 = 7 * 86_400;
/// The longest score metric name, in characters.
const MAX_SCORE_METRIC_CHARS: usize = 128;

/// A rule to create (the reference's `CreateFailureRuleRequest`).
#[derive(Deserialize, ToSchema)]
#[schema(as = CreateFailureRuleRequest)]
pub struct CreateRule {
    /// 1 to 200 characters.
    #[schema(example = "error rate above 5%")]
    name: String,
    // `error_rate` (0 to 1), `latency_p50`, `latency_p95`, `latency_p99`
    // (milliseconds), `cost` (USD over the window), `volume` (traces over
    // the window) or `score` (mean evaluation score over the window).
    #[schema(value_type = RuleMetric, inline)]
    metric: String,
    // `gt`, `gte`, `lt` or `lte`: the rule fires while `metric <operator>
    // threshold` holds.
    #[schema(value_type = RuleOperator, inline)]
    operator: String,
    /// A finite number.
    #[schema(example = 0.05)]
    threshold: f64,
    /// The trailing window, 10 s to 7 days; default 300.
    #[serde(default)]
    #[schema(default = 300, minimum = 10, maximum = 604800)]
    window_secs: Option<i64>,
    /// `low`, `medium` (the default), `high` or `critical`.
    #[serde(default)]
    #[schema(value_type = Option<Severity>, inline, default = "medium", example = "high")]
    severity: Option<String>,
    #[serde(default)]
    #[schema(default = true)]
    enabled: Option<bool>,
    /// The project watched (its id, slug or name); left out: every project
    /// of the organisation together.
    #[serde(default)]
    #[schema(example = "default")]
    project_id: Option<String>,
    /// The fewest traces (for `score`, evaluations) in the window for the
    /// rule to judge it, so one failed trace in a quiet hour is not a 100%
    /// error rate; default 1. Not applied to `volume`.
    #[serde(default)]
    #[schema(default = 1, minimum = 1, example = 20)]
    min_samples: Option<i64>,
    /// For `score`: the evaluation metric averaged; left out: every metric.
    #[serde(default)]
    #[schema(example = "helpfulness")]
    score_metric: Option<String>,
}

/// A change to a rule (the reference's `UpdateFailureRuleRequest`):
/// absent or null leaves a field as it is, except `project_id` and
/// `score_metric`, which null clears.
#[derive(Deserialize, ToSchema)]
#[schema(as = UpdateFailureRuleRequest)]
pub struct UpdateRule {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<RuleMetric>, inline)]
    metric: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<RuleOperator>, inline)]
    operator: Option<String>,
    #[serde(default)]
    threshold: Option<f64>,
    #[serde(default)]
    window_secs: Option<i64>,
    #[serde(default)]
    #[schema(value_type = Option<Severity>, inline)]
    severity: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
    /// Null: every project.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    project_id: Option<Option<String>>,
    #[serde(default)]
    min_samples: Option<i64>,
    /// Null: every metric.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    score_metric: Option<Option<String>>,
}

/// Tells a field sent as `null` (`Some(None)`) from one left out (`None`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// The organisation's rules (the reference's `FailureRuleListResponse`).
#[derive(Serialize, ToSchema)]
#[schema(as = FailureRuleListResponse)]
pub struct RuleList {
    items: Vec<FailureRule>,
}

const BAD_RULE: &str = "`bad_request`: `name`, `metric`, `operator`, `threshold`, `window_secs`, \
    `severity`, `min_samples` or `score_metric` does not fit, or the organisation has as many \
    rules as `alerts.max_rules` allows (the message says which).";
const NO_RULE: &str = "`not_found`: the caller's organisation has no failure rule `id` (or, with `project_id`, no such project).";

fn one_of(field: &str, value: &str, allowed: &[&str]) -> Result<String, AppError> {
    if allowed.contains(&value) {
        Ok(value.to_owned())
    } else {
        Err(AppError::bad_request(format!(
            "{field}: must be one of {}",
            allowed.join(", ")
        )))
    }
}

fn check_name(name: &str) -> Result<String, AppError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(AppError::bad_request(format!(
            "name: 1 to {MAX_NAME_CHARS} characters"
        )));
    }
    Ok(name.to_owned())
}

fn check_threshold(threshold: f64) -> Result<f64, AppError> {
    if threshold.is_finite() {
        Ok(threshold)
    } else {
        Err(AppError::bad_request("threshold: must be a finite number"))
    }
}

fn check_window(window: i64) -> Result<i64, AppError> {
    if (MIN_WINDOW_SECS..=MAX_WINDOW_SECS).contains(&window) {
        Ok(window)
    } else {
        Err(AppError::bad_request(format!(
            "window_secs: {MIN_WINDOW_SECS} to {MAX_WINDOW_SECS} seconds"
        )))
    }
}

fn check_min_samples(n: i64) -> Result<i64, AppError> {
    if (1..=1_000_000_000).contains(&n) {
        Ok(n)
    } else {
        Err(AppError::bad_request("min_samples: 1 to 1000000000"))
    }
}

fn check_score_metric(m: Option<&str>) -> Result<Option<String>, AppError> {
    match m.map(str::trim) {
        None | Some("") => Ok(None),
        Some(m) if m.chars().count() <= MAX_SCORE_METRIC_CHARS => Ok(Some(m.to_owned())),
        Some(_) => Err(AppError::bad_request(format!(
            "score_metric: at most {MAX_SCORE_METRIC_CHARS} characters"
        ))),
    }
}

/// An error rate is a share: a threshold outside 0..1 could never clear
/// or never fire.
fn check_fits(metric: &str, threshold: f64) -> Result<(), AppError> {
    if metric == "error_rate" && !(0.0..=1.0).contains(&threshold) {
        return Err(AppError::bad_request(
            "threshold: an error_rate is a share from 0 to 1",
        ));
    }
    Ok(())
}

fn rule_id(raw: &str) -> Result<String, AppError> {
    canonical_uuid(raw).ok_or(AppError::NotFound("failure rule"))
}

async fn project(
    state: &AppState,
    principal: &Principal,
    reference: Option<&str>,
) -> Result<Option<i64>, AppError> {
    let Some(reference) = reference.map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    let project = state
        .store
        .find_project(principal.tenant_id, reference.to_owned())
        .await?
        .ok_or(AppError::NotFound("project"))?;
    Ok(Some(project.id))
}

/// List failure detection rules for the tenant.
///
/// Oldest first, each with its `state` (`firing` while an episode is open).
#[utoipa::path(
    get,
    path = "/v1/failure-rules",
    operation_id = "listFailureRules",
    tag = "failure-rules",
    responses((status = 200, description = "Failure rules list.", body = RuleList))
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<RuleList>, AppError> {
    let items = state.store.list_failure_rules(principal.tenant_id).await?;
    Ok(Json(RuleList { items }))
}

/// Create a failure detection rule.
///
/// The rule is evaluated every `alerts.interval_ms` over its trailing
/// window. While `metric <operator> threshold` holds (with at least
/// `min_samples` in the window) it is firing: the first evaluation that
/// sees it raises an anomaly and sends a `failure.detected` webhook event;
/// the first that no longer does marks the anomaly recovered and sends
/// `failure.recovered`. The creation is audited.
#[utoipa::path(
    post,
    path = "/v1/failure-rules",
    operation_id = "createFailureRule",
    tag = "failure-rules",
    request_body(content = CreateRule, example = json!({"name": "error rate above 5%", "metric": "error_rate", "operator": "gt", "threshold": 0.05, "window_secs": 300, "severity": "high", "min_samples": 20})),
    responses(
        (status = 201, description = "Failure rule created.", body = FailureRule),
        (status = 400, description = BAD_RULE, body = ErrorBody),
        (status = 404, description = "`not_found`: the caller's organisation has no project `project_id`.", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<CreateRule>,
) -> Result<(StatusCode, Json<FailureRule>), AppError> {
    let metric = one_of("metric", &body.metric, METRICS)?;
    let threshold = check_threshold(body.threshold)?;
    check_fits(&metric, threshold)?;
    let rule = NewFailureRule {
        name: check_name(&body.name)?,
        operator: one_of("operator", &body.operator, OPERATORS)?,
        threshold,
        window_secs: check_window(body.window_secs.unwrap_or(300))?,
        severity: one_of(
            "severity",
            body.severity.as_deref().unwrap_or("medium"),
            SEVERITIES,
        )?,
        min_samples: check_min_samples(body.min_samples.unwrap_or(1))?,
        score_metric: check_score_metric(body.score_metric.as_deref())?,
        enabled: body.enabled.unwrap_or(true),
        project_id: project(&state, &principal, body.project_id.as_deref()).await?,
        metric,
    };
    let max = state.config.alerts.max_rules;
    match state
        .store
        .create_failure_rule(principal.tenant_id, rule, max, actor(&principal))
        .await?
    {
        Ok(rule) => Ok((StatusCode::CREATED, Json(rule))),
        Err(count) => Err(AppError::bad_request(format!(
            "an organisation may have at most {max} failure rules and this one has {count}"
        ))),
    }
}

/// Get a single failure detection rule.
#[utoipa::path(
    get,
    path = "/v1/failure-rules/{id}",
    operation_id = "getFailureRule",
    tag = "failure-rules",
    params(("id" = String, Path, format = "uuid", description = "The rule's id.")),
    responses(
        (status = 200, description = "Failure rule detail.", body = FailureRule),
        (status = 404, description = NO_RULE, body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<FailureRule>, AppError> {
    let rule = state
        .store
        .get_failure_rule(principal.tenant_id, rule_id(&id)?)
        .await?
        .ok_or(AppError::NotFound("failure rule"))?;
    Ok(Json(rule))
}

/// Update a failure detection rule (partial update).
///
/// Fields left out stay as they are; the rule as it ends up is checked as
/// on creation. Turning a rule off, or pointing it at another metric or
/// project, ends its open episode (a `failure.recovered` event says why).
/// The change is audited.
#[utoipa::path(
    patch,
    path = "/v1/failure-rules/{id}",
    operation_id = "updateFailureRule",
    tag = "failure-rules",
    params(("id" = String, Path, format = "uuid", description = "The rule's id.")),
    request_body(content = UpdateRule, example = json!({"threshold": 0.1, "enabled": true})),
    responses(
        (status = 200, description = "Failure rule updated.", body = FailureRule),
        (status = 400, description = BAD_RULE, body = ErrorBody),
        (status = 404, description = NO_RULE, body = ErrorBody),
    )
)]
pub async fn update(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<UpdateRule>,
) -> Result<Json<FailureRule>, AppError> {
    let id = rule_id(&id)?;
    let current = state
        .store
        .get_failure_rule(principal.tenant_id, id.clone())
        .await?
        .ok_or(AppError::NotFound("failure rule"))?;
    let metric = body
        .metric
        .as_deref()
        .map(|m| one_of("metric", m, METRICS))
        .transpose()?;
    let threshold = body.threshold.map(check_threshold).transpose()?;
    check_fits(
        metric.as_deref().unwrap_or(&current.metric),
        threshold.unwrap_or(current.threshold),
    )?;
    let project_id = match &body.project_id {
        None => None,
        Some(None) => Some(None),
        Some(Some(p)) => Some(Some(
            project(&state, &principal, Some(p))
                .await?
                .ok_or(AppError::NotFound("project"))?,
        )),
    };
    let change = FailureRuleChange {
        project_id,
        name: body.name.as_deref().map(check_name).transpose()?,
        metric,
        operator: body
            .operator
            .as_deref()
            .map(|o| one_of("operator", o, OPERATORS))
            .transpose()?,
        threshold,
        window_secs: body.window_secs.map(check_window).transpose()?,
        severity: body
            .severity
            .as_deref()
            .map(|s| one_of("severity", s, SEVERITIES))
            .transpose()?,
        min_samples: body.min_samples.map(check_min_samples).transpose()?,
        score_metric: body
            .score_metric
            .as_ref()
            .map(|m| check_score_metric(m.as_deref()))
            .transpose()?,
        enabled: body.enabled,
    };
    let rule = state
        .store
        .update_failure_rule(principal.tenant_id, id, change, actor(&principal))
        .await?
        .ok_or(AppError::NotFound("failure rule"))?;
    Ok(Json(rule))
}

/// Delete a failure detection rule (owner only).
///
/// Its open episode ends (a `failure.recovered` event says why); the
/// anomalies it raised stay. The deletion is audited.
#[utoipa::path(
    delete,
    path = "/v1/failure-rules/{id}",
    operation_id = "deleteFailureRule",
    tag = "failure-rules",
    params(("id" = String, Path, format = "uuid", description = "The rule's id.")),
    responses(
        (status = 204, description = "Failure rule deleted."),
        (status = 404, description = NO_RULE, body = ErrorBody),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    if !state
        .store
        .delete_failure_rule(principal.tenant_id, rule_id(&id)?, actor(&principal))
        .await?
    {
        return Err(AppError::NotFound("failure rule"));
    }
    Ok(StatusCode::NO_CONTENT)
}
