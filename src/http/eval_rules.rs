//! `/v1/eval-rules`: auto-evaluation rules (the reference's `EvalRule`).
//! Each trace stored in a rule's project after the rule was made queues the
//! rule's evaluation, filtered and sampled by its `config` (see
//! `eval::auto`). A plan may cap how many rules an organisation has.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::eval_params::check_eval;
use super::extract::JsonBody;
use super::principal::actor;
use super::query::{ApiQuery, ProjectParam};
use super::{AppState, Principal};
use crate::error::{AppError, ErrorBody};
use crate::eval::auto::RuleFilter;
use crate::store::{EvalRule, EvalRuleChange, NewEvalRule, RuleCreated};

/// A rule to create (the reference's `CreateEvalRuleRequest`).
#[derive(Deserialize, ToSchema)]
#[schema(as = CreateEvalRuleRequest)]
pub struct CreateRule {
    /// The project whose new traces the rule evaluates: its id, slug or name.
    #[schema(example = "default")]
    project_id: String,
    /// The metric its scores are filed under: 1 to 128 characters.
    #[schema(example = "not_empty")]
    metric_name: String,
    /// `llm` (a judge model) or `rule` (checks the server runs).
    #[schema(example = "rule")]
    evaluator_type: String,
    /// What `POST /v1/eval` takes as `config`, plus `sample_rate` (0 to 1:
    /// the share of new traces evaluated) and `filter` (`name`, `model`,
    /// `error`, `tags`: which traces).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    config: Option<Value>,
    /// On (the default) or off.
    #[serde(default)]
    #[schema(default = true)]
    enabled: Option<bool>,
    /// `cheap` (the default) or `premium`: the judge model's tier.
    #[serde(default)]
    #[schema(example = "cheap")]
    model_tier: Option<String>,
}

/// A change to a rule (the reference's `UpdateEvalRuleRequest`): absent or
/// null leaves a field as it is, except `config`, which null clears.
#[derive(Deserialize, ToSchema)]
#[schema(as = UpdateEvalRuleRequest)]
pub struct UpdateRule {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    metric_name: Option<String>,
    /// The new config, checked as on creation; null clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Object>)]
    config: Option<Option<Value>>,
    /// `cheap` or `premium`.
    #[serde(default)]
    model_tier: Option<String>,
}

/// Tells a field sent as `null` (`Some(None)`) from one left out (`None`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<Value>>, D::Error> {
    Option::<Value>::deserialize(d).map(Some)
}

/// A rule's config: what any evaluation accepts, plus its filter and
/// sample rate. Returns the JSON to store (none for an empty config).
fn check_rule(
    evaluator_type: &str,
    metric_name: &str,
    config: Option<&Value>,
) -> Result<Option<String>, AppError> {
    let config: Map<String, Value> =
        check_eval(evaluator_type, metric_name, config).map_err(AppError::bad_request)?;
    let value = Value::Object(config);
    RuleFilter::parse(&value).map_err(AppError::bad_request)?;
    Ok(value
        .as_object()
        .is_some_and(|m| !m.is_empty())
        .then(|| value.to_string()))
}

fn check_tier(tier: Option<&str>) -> Result<String, AppError> {
    match tier {
        None => Ok("cheap".into()),
        Some(t @ ("cheap" | "premium")) => Ok(t.into()),
        Some(_) => Err(AppError::bad_request(
            "model_tier: must be cheap or premium",
        )),
    }
}

/// The rules of an organisation (the reference's `EvalRuleListResponse`).
#[derive(Serialize, ToSchema)]
#[schema(as = EvalRuleListResponse)]
pub struct RuleList {
    items: Vec<EvalRule>,
}

/// A rule's 400.
const BAD_RULE: &str = "`malformed_json`: the body is not JSON; `bad_request`: `evaluator_type`, \
    `metric_name`, `config` (its evaluator, `sample_rate` or `filter`) or `model_tier` does not fit \
    (the message names it).";

/// The rules that evaluate new traces automatically.
#[utoipa::path(
    get,
    path = "/v1/eval-rules",
    operation_id = "listEvalRules",
    tag = "eval-rules",
    params(ProjectParam),
    responses(
        (status = 200, description = "The rules.", body = RuleList),
        (status = 404, description = "`not_found`: the caller's organisation has no project `project_id`.", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(project): ApiQuery<ProjectParam>,
) -> Result<Json<RuleList>, AppError> {
    let project_id = project.resolve(&state, &principal).await?;
    let items = state
        .store
        .list_eval_rules(principal.tenant_id, project_id)
        .await?;
    Ok(Json(RuleList { items }))
}

/// Creates a rule: which traces (a sample rate and filters) get which evaluation.
///
/// The rule applies to traces stored after it was made.
#[utoipa::path(
    post,
    path = "/v1/eval-rules",
    operation_id = "createEvalRule",
    tag = "eval-rules",
    request_body(
        content = CreateRule,
        example = json!({"project_id": "default", "metric_name": "not_empty", "evaluator_type": "rule", "config": {"rule": "not_empty", "sample_rate": 0.5, "filter": {"error": false}}})
    ),
    responses(
        (status = 201, description = "The rule.", body = EvalRule),
        (status = 400, description = BAD_RULE, body = ErrorBody),
        (status = 402, description = "`eval_rules_quota_exceeded`: the organisation has as many rules as its plan allows.", body = ErrorBody),
        (status = 404, description = "`not_found`: the caller's organisation has no project `project_id`.", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<CreateRule>,
) -> Result<(StatusCode, Json<EvalRule>), AppError> {
    let config = check_rule(
        &body.evaluator_type,
        &body.metric_name,
        body.config.as_ref(),
    )?;
    let model_tier = check_tier(body.model_tier.as_deref())?;
    let project = state
        .store
        .find_project(principal.tenant_id, body.project_id)
        .await?
        .ok_or(AppError::NotFound("project"))?;
    let max_rules = state.config.plans.limits(principal.plan).max_eval_rules;
    let created = state
        .store
        .create_eval_rule(
            principal.tenant_id,
            NewEvalRule {
                project_id: project.id,
                metric_name: body.metric_name,
                evaluator_type: body.evaluator_type,
                config,
                enabled: body.enabled.unwrap_or(true),
                model_tier,
            },
            max_rules,
            actor(&principal),
        )
        .await?;
    let rule = match created {
        RuleCreated::Created(rule) => rule,
        RuleCreated::OverQuota { count } => {
            return Err(AppError::QuotaExceeded {
                message: format!(
                    "the {} plan allows {max_rules} evaluation rules and this organisation \
                     has {count}; delete one or upgrade",
                    principal.plan.as_str()
                ),
                code: "eval_rules_quota_exceeded",
            })
        }
    };
    Ok((StatusCode::CREATED, Json(rule)))
}

/// Changes a rule's filters, sample rate or evaluator, or turns it on or off.
///
/// Fields left out stay as they are; the rule as it ends up is checked as
/// on creation.
#[utoipa::path(
    patch,
    path = "/v1/eval-rules/{id}",
    operation_id = "updateEvalRule",
    tag = "eval-rules",
    params(("id" = String, Path, format = "uuid", description = "The rule's id.")),
    request_body(content = UpdateRule, example = json!({"enabled": false})),
    responses(
        (status = 200, description = "The rule as changed.", body = EvalRule),
        (status = 400, description = BAD_RULE, body = ErrorBody),
    )
)]
pub async fn update(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<UpdateRule>,
) -> Result<Json<EvalRule>, AppError> {
    let id = canonical(&id)?;
    let current = state
        .store
        .get_eval_rule(principal.tenant_id, id.clone())
        .await?
        .ok_or(AppError::NotFound("eval rule"))?;
    let metric_name = body
        .metric_name
        .clone()
        .unwrap_or_else(|| current.metric_name.clone());
    // The rule as it will be must still run: check the config it ends with.
    let kept: Option<Value> = current
        .config
        .as_ref()
        .and_then(|c| serde_json::from_str(c.get()).ok());
    let config = match &body.config {
        Some(new) => new.as_ref(),
        None => kept.as_ref(),
    };
    let checked = check_rule(&current.evaluator_type, &metric_name, config)?;
    let model_tier = body
        .model_tier
        .as_deref()
        .map(|t| check_tier(Some(t)))
        .transpose()?;
    let change = EvalRuleChange {
        enabled: body.enabled,
        metric_name: body.metric_name,
        config: body.config.is_some().then_some(checked),
        model_tier,
    };
    let rule = state
        .store
        .update_eval_rule(principal.tenant_id, id, change, actor(&principal))
        .await?
        .ok_or(AppError::NotFound("eval rule"))?;
    Ok(Json(rule))
}

/// Deletes a rule; evaluations it made stay.
#[utoipa::path(
    delete,
    path = "/v1/eval-rules/{id}",
    operation_id = "deleteEvalRule",
    tag = "eval-rules",
    params(("id" = String, Path, format = "uuid", description = "The rule's id.")),
    responses((status = 204, description = "Deleted; no body."))
)]
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    let id = canonical(&id)?;
    if !state
        .store
        .delete_eval_rule(principal.tenant_id, id, actor(&principal))
        .await?
    {
        return Err(AppError::NotFound("eval rule"));
    }
    Ok(StatusCode::NO_CONTENT)
}

fn canonical(id: &str) -> Result<String, AppError> {
    uuid::Uuid::parse_str(id)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| AppError::NotFound("eval rule"))
}
