//! Evaluations: `POST /v1/eval` queues one (202), `GET /v1/eval` lists,
//! `GET /v1/eval/{id}` shows one and `GET /v1/eval/export` streams them
//! (the summaries are in `eval_summaries`). `GET /v1/eval-catalog` lists
//! the presets, without credentials.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::header::CACHE_CONTROL;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::export::{csv_field, streamed, Format};
use super::extract::JsonBody;
use super::{project_param, AppState, Principal};
use crate::error::AppError;
use crate::eval::evaluator::resolve;
use crate::ingest::parse_time;
use crate::model::Evaluation;
use crate::store::{now_micros, EvalFilter, NewEvaluation, Queued};

/// The longest metric name, in characters.
pub const MAX_METRIC_CHARS: usize = 128;
/// The largest `config`, as JSON.
pub const MAX_CONFIG_BYTES: usize = 64 * 1024;
/// Evaluations per `GET /v1/eval` page: default and most.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 1000;
/// Rows read per step of an export.
const EXPORT_PAGE: usize = 500;
/// Reasoning in an export is cut to this many characters.
const EXPORT_REASONING_CHARS: usize = 500;

/// The reference's `EvalTriggerRequest`.
#[derive(Deserialize)]
pub struct TriggerRequest {
    trace_id: String,
    evaluator_type: String,
    metric_name: String,
    #[serde(default)]
    config: Option<Value>,
}

/// Checks what every evaluation and rule needs: the type, the metric name,
/// and a config (an object, within its size) that resolves to something to
/// run. Returns the config as stored.
pub(super) fn check_eval(
    evaluator_type: &str,
    metric_name: &str,
    config: Option<&Value>,
) -> Result<Map<String, Value>, String> {
    if !matches!(evaluator_type, "llm" | "rule") {
        return Err("evaluator_type: must be llm or rule".into());
    }
    let chars = metric_name.chars().count();
    if metric_name.trim().is_empty() || chars > MAX_METRIC_CHARS {
        return Err(format!(
            "metric_name: must be 1 to {MAX_METRIC_CHARS} characters"
        ));
    }
    let config = match config {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map.clone(),
        Some(_) => return Err("config: must be an object".into()),
    };
    let value = Value::Object(config);
    if value.to_string().len() > MAX_CONFIG_BYTES {
        return Err(format!("config: at most {MAX_CONFIG_BYTES} bytes of JSON"));
    }
    if let Some(tier) = value.get("model_tier") {
        if !matches!(tier.as_str(), Some("cheap" | "premium")) {
            return Err("config.model_tier: must be cheap or premium".into());
        }
    }
    resolve(evaluator_type, metric_name, &value)?;
    match value {
        Value::Object(map) => Ok(map),
        _ => Ok(Map::new()),
    }
}

/// `POST /v1/eval`: 202 `{eval_id, status: "pending"}`.
#[utoipa::path(post, path = "/v1/eval", operation_id = "triggerEval", tag = "evaluations", responses((status = 202, description = "Accepted")))]
pub async fn trigger(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<TriggerRequest>,
) -> Result<Response, AppError> {
    let config = check_eval(
        &body.evaluator_type,
        &body.metric_name,
        body.config.as_ref(),
    )
    .map_err(AppError::unprocessable)?;
    // A trace id that is not a UUID cannot name a stored trace.
    let trace_id = uuid::Uuid::parse_str(&body.trace_id)
        .map_err(|_| AppError::NotFound("trace"))?
        .hyphenated()
        .to_string();
    state.space.check()?;
    let quota = state.config.plans.limits(principal.plan).evals_per_month;
    let model_tier = config
        .get("model_tier")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let queued = state
        .store
        .queue_eval(
            principal.tenant_id,
            NewEvaluation {
                trace_id,
                metric_name: body.metric_name,
                evaluator_type: body.evaluator_type,
                config: Value::Object(config).to_string(),
                model_tier,
            },
            quota,
        )
        .await?;
    match queued {
        Queued::Queued { id } => {
            state.evals.wake();
            Ok((
                StatusCode::ACCEPTED,
                Json(json!({"eval_id": id, "status": "pending"})),
            )
                .into_response())
        }
        Queued::NoTrace => Err(AppError::NotFound("trace")),
        Queued::OverQuota { used } => Err(AppError::QuotaExceeded {
            message: format!(
                "the {} plan's quota of {quota} evaluations this month is used up ({used} queued)",
                principal.plan.as_str()
            ),
            code: "eval_quota_exceeded",
        }),
    }
}

/// A query parameter read by `parse`, with a 400 naming it when it does not.
pub(super) fn param<T>(
    params: &HashMap<String, String>,
    name: &str,
    what: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Option<T>, AppError> {
    params
        .get(name)
        .map(|raw| {
            parse(raw).ok_or_else(|| AppError::bad_request(format!("{name}: must be {what}")))
        })
        .transpose()
}

pub(super) fn time(params: &HashMap<String, String>, name: &str) -> Result<Option<i64>, AppError> {
    param(
        params,
        name,
        "an RFC 3339 time such as 2026-01-02T03:04:05Z",
        parse_time,
    )
}

fn score(params: &HashMap<String, String>, name: &str) -> Result<Option<f64>, AppError> {
    param(params, name, "a number from 0 to 1", |raw| {
        raw.parse::<f64>().ok().filter(|s| (0.0..=1.0).contains(s))
    })
}

/// The `metric` parameter, if given; an empty one is refused.
pub(super) fn metric(params: &HashMap<String, String>) -> Result<Option<String>, AppError> {
    match params.get("metric") {
        Some(m) if m.is_empty() => Err(AppError::bad_request("metric: must not be empty")),
        m => Ok(m.cloned()),
    }
}

/// The `metric` parameter, which must be given.
pub(super) fn required_metric(params: &HashMap<String, String>) -> Result<String, AppError> {
    metric(params)?.ok_or_else(|| AppError::bad_request("metric: is required"))
}

/// `from` and `to`, in order, with defaults.
pub(super) fn window(
    params: &HashMap<String, String>,
    (from_name, to_name): (&str, &str),
    default_span: Option<i64>,
) -> Result<(i64, i64), AppError> {
    let to = time(params, to_name)?.unwrap_or_else(now_micros);
    let from = time(params, from_name)?.unwrap_or(match default_span {
        Some(span) => to - span,
        None => 0,
    });
    if to < from {
        return Err(AppError::bad_request(format!(
            "{to_name}: must not be before {from_name}"
        )));
    }
    Ok((from, to))
}

fn canonical_uuid(raw: &str) -> Option<String> {
    uuid::Uuid::parse_str(raw)
        .ok()
        .map(|u| u.hyphenated().to_string())
}

/// The filters of `GET /v1/eval` (and its export).
async fn filter(
    state: &AppState,
    principal: &Principal,
    params: &HashMap<String, String>,
) -> Result<EvalFilter, AppError> {
    let trace_id = param(params, "trace_id", "a trace id (UUID)", canonical_uuid)?;
    let (from, to) = (time(params, "from")?, time(params, "to")?);
    if let (Some(from), Some(to)) = (from, to) {
        if to < from {
            return Err(AppError::bad_request("to: must not be before from"));
        }
    }
    let (score_min, score_max) = (score(params, "score_min")?, score(params, "score_max")?);
    if let (Some(min), Some(max)) = (score_min, score_max) {
        if max < min {
            return Err(AppError::bad_request(
                "score_max: must not be below score_min",
            ));
        }
    }
    let limit = param(
        params,
        "limit",
        &format!("a whole number from 1 to {MAX_LIMIT}"),
        |raw| {
            raw.parse::<usize>()
                .ok()
                .filter(|l| (1..=MAX_LIMIT).contains(l))
        },
    )?
    .unwrap_or(DEFAULT_LIMIT);
    Ok(EvalFilter {
        trace_id,
        project_id: project_param(state, principal, params).await?,
        metric: metric(params)?,
        from,
        to,
        score_min,
        score_max,
        before: None,
        limit,
    })
}

/// `GET /v1/eval`: `{"evals": [...]}`, newest first.
#[utoipa::path(get, path = "/v1/eval", operation_id = "listEvals", tag = "evaluations", responses((status = 200, description = "OK")))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, AppError> {
    let filter = filter(&state, &principal, &params).await?;
    let evals: Vec<Evaluation> = state
        .store
        .list_evals(principal.tenant_id, filter)
        .await?
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    Ok(Json(json!({ "evals": evals })))
}

/// `GET /v1/eval/{id}`.
#[utoipa::path(get, path = "/v1/eval/{id}", operation_id = "getEval", tag = "evaluations", params(("id" = String, Path, description = "The id.")), responses((status = 200, description = "OK")))]
pub async fn detail(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Evaluation>, AppError> {
    let id = canonical_uuid(&id).ok_or(AppError::NotFound("evaluation"))?;
    state
        .store
        .get_eval(principal.tenant_id, id)
        .await?
        .map(Json)
        .ok_or(AppError::NotFound("evaluation"))
}

/// `GET /v1/eval/export`: CSV columns `id, trace_id, metric, score, label,
/// evaluator_type, model_tier, created_at` (and `reasoning` with
/// `include_reasoning=true`), or the same fields as JSON lines.
#[utoipa::path(get, path = "/v1/eval/export", operation_id = "exportEvals", tag = "evaluations", responses((status = 200, description = "OK")))]
pub async fn export(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, AppError> {
    let format = Format::of(&params)?;
    let reasoning = param(
        &params,
        "include_reasoning",
        "true or false",
        |raw| match raw {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        },
    )?
    .unwrap_or(false);
    let mut filter = filter(&state, &principal, &params).await?;
    let cap = state.config.plans.limits(principal.plan).export_max_rows;
    // The header goes out before the rows: count first whether the cap cuts.
    let truncated = cap > 0 && {
        let mut probe = filter.clone();
        probe.limit = (cap + 1).min(usize::MAX as u64) as usize;
        state
            .store
            .list_evals(principal.tenant_id, probe)
            .await?
            .len() as u64
            > cap
    };
    let limit = if cap > 0 { cap } else { u64::MAX };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let store = state.store.clone();
    let tenant_id = principal.tenant_id;
    tokio::spawn(async move {
        let mut columns = vec![
            "id",
            "trace_id",
            "metric",
            "score",
            "label",
            "evaluator_type",
            "model_tier",
            "created_at",
        ];
        if reasoning {
            columns.push("reasoning");
        }
        if format == Format::Csv
            && tx
                .send(Bytes::from(format!("{}\n", columns.join(","))))
                .await
                .is_err()
        {
            return;
        }
        let mut sent = 0u64;
        while sent < limit {
            filter.limit = EXPORT_PAGE.min((limit - sent) as usize);
            let page = match store.list_evals(tenant_id, filter.clone()).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(error = %e, "evaluation export failed");
                    return;
                }
            };
            let Some((last, _)) = page.last() else {
                return;
            };
            filter.before = Some(*last);
            let mut chunk = String::with_capacity(page.len() * 160);
            for (_, eval) in &page {
                write_row(&mut chunk, eval, format, reasoning);
            }
            sent += page.len() as u64;
            if tx.send(Bytes::from(chunk)).await.is_err() {
                return;
            }
            if page.len() < filter.limit {
                return;
            }
        }
    });
    Ok(streamed(rx, format, "evals", truncated))
}

fn write_row(out: &mut String, e: &Evaluation, format: Format, with_reasoning: bool) {
    let reasoning = with_reasoning.then(|| {
        e.reasoning
            .as_deref()
            .unwrap_or("")
            .chars()
            .take(EXPORT_REASONING_CHARS)
            .collect::<String>()
    });
    match format {
        Format::Jsonl => {
            let mut row = json!({
                "id": e.id,
                "trace_id": e.trace_id,
                "metric": e.metric_name,
                "score": e.score,
                "label": e.label,
                "evaluator_type": e.evaluator_type,
                "model_tier": e.model_tier,
                "status": e.status,
                "created_at": e.created_at,
            });
            if let Some(reasoning) = reasoning {
                row["reasoning"] = json!(reasoning);
            }
            out.push_str(&row.to_string());
            out.push('\n');
        }
        Format::Csv => {
            let mut fields = vec![
                e.id.clone(),
                e.trace_id.clone(),
                e.metric_name.clone(),
                e.score.map(|s| s.to_string()).unwrap_or_default(),
                e.label.clone().unwrap_or_default(),
                e.evaluator_type.clone(),
                e.model_tier.clone().unwrap_or_default(),
                e.created_at.to_rfc3339(),
            ];
            fields.extend(reasoning);
            for (i, field) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                csv_field(out, field);
            }
            out.push('\n');
        }
    }
}

/// `GET /v1/eval-catalog`: the presets; public and cacheable.
#[utoipa::path(get, path = "/v1/eval-catalog", operation_id = "listEvalCatalog", tag = "evaluations", responses((status = 200, description = "OK")))]
pub async fn catalog() -> Response {
    let mut response = Json(crate::eval::catalog::catalog_json()).into_response();
    response.headers_mut().insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    response
}
