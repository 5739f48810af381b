//! Evaluations: `POST /v1/eval` queues one (202), `GET /v1/eval` lists,
//! `GET /v1/eval/{id}` shows one and `GET /v1/eval/export` streams them
//! (the summaries are in `eval_summaries`). `GET /v1/eval-catalog` lists
//! the presets, without credentials.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header::CACHE_CONTROL;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::download::{csv_field, streamed, Format};
use super::eval_params::{self, canonical_uuid, check_eval, MetricParam};
use super::extract::JsonBody;
use super::query::{ApiQuery, ProjectParam, TimeWindow};
use super::{AppState, Principal};
use crate::error::{AppError, ErrorBody};
use crate::eval::catalog::Catalog;
use crate::model::Evaluation;
use crate::store::{EvalFilter, NewEvaluation, Queued};

/// Evaluations per `GET /v1/eval` page: default and most.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 1000;
/// Rows read per step of an export.
const EXPORT_PAGE: usize = 500;
/// Reasoning in an export is cut to this many characters.
const EXPORT_REASONING_CHARS: usize = 500;

/// What to evaluate (the reference's `EvalTriggerRequest`).
#[derive(Deserialize, ToSchema)]
#[schema(as = EvalTriggerRequest)]
pub struct TriggerRequest {
    /// The trace to evaluate.
    #[schema(format = "uuid")]
    trace_id: String,
    /// `llm` (a judge model) or `rule` (checks the server runs).
    #[schema(example = "rule")]
    evaluator_type: String,
    /// The metric the score is filed under: 1 to 128 characters. For a
    /// rule without `config.rule`, the name of a preset or a rule.
    #[schema(example = "not_empty")]
    metric_name: String,
    /// The evaluator's settings, an object of at most 64 KiB of JSON:
    /// `preset` (a name from `GET /v1/eval-catalog`), `rule` and its
    /// parameters, `prompt` (a judge's rubric), `model`, `model_tier`
    /// (`cheap` or `premium`).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    config: Option<Value>,
}

/// An evaluation queued (the reference's `EvalTriggerResponse`).
#[derive(Serialize, ToSchema)]
#[schema(as = EvalTriggerResponse)]
pub struct Triggered {
    /// The evaluation's id; `GET /v1/eval/{id}` shows it.
    #[schema(format = "uuid")]
    eval_id: String,
    /// Always `pending`: the evaluation runs after the answer.
    #[schema(value_type = String, example = "pending")]
    status: &'static str,
}

/// Queues an evaluation of a trace.
///
/// The evaluation runs in the background; `GET /v1/eval/{id}` shows its
/// status and, once complete, its score.
#[utoipa::path(
    post,
    path = "/v1/eval",
    operation_id = "triggerEval",
    tag = "evaluations",
    request_body(
        content = TriggerRequest,
        example = json!({"trace_id": "0190f1c2-7d1e-7a4b-9c3d-2e5f6a7b8c9d", "evaluator_type": "rule", "metric_name": "not_empty"})
    ),
    responses(
        (status = 202, description = "Queued.", body = Triggered,
            example = json!({"eval_id": "0190f1c2-8a2b-7c3d-8e4f-5a6b7c8d9e0f", "status": "pending"})),
        (status = 402, description = "`eval_quota_exceeded`: the plan's evaluations for this month are used up.", body = ErrorBody),
        (status = 404, description = "`not_found`: the caller's organisation has no such trace.", body = ErrorBody),
        (status = 422, description = "`validation_error`: a field is missing or of the wrong type, `evaluator_type` is neither `llm` nor `rule`, `metric_name` is empty or too long, or `config` is not an object that names something to run (the message names the field).", body = ErrorBody),
    )
)]
pub async fn trigger(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<TriggerRequest>,
) -> Result<(StatusCode, Json<Triggered>), AppError> {
    let config = check_eval(
        &body.evaluator_type,
        &body.metric_name,
        body.config.as_ref(),
    )
    .map_err(AppError::unprocessable)?;
    // A trace id that is not a UUID cannot name a stored trace.
    let trace_id = canonical_uuid(&body.trace_id).ok_or(AppError::NotFound("trace"))?;
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
                Json(Triggered {
                    eval_id: id,
                    status: "pending",
                }),
            ))
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

/// The filters of `GET /v1/eval` and its export, besides `metric`, the
/// window and the project.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EvalFilterQuery {
    /// Only evaluations of this trace.
    #[serde(default, deserialize_with = "eval_params::trace_id")]
    #[param(value_type = Option<String>, format = "uuid")]
    trace_id: Option<String>,
    /// Only scores of at least this, from 0 to 1.
    #[serde(default, deserialize_with = "eval_params::score")]
    #[param(value_type = Option<f64>, minimum = 0, maximum = 1)]
    score_min: Option<f64>,
    /// Only scores of at most this, from 0 to 1; not below `score_min`.
    #[serde(default, deserialize_with = "eval_params::score")]
    #[param(value_type = Option<f64>, minimum = 0, maximum = 1)]
    score_max: Option<f64>,
    /// Queued within this window (`created_at`).
    #[serde(flatten)]
    #[param(ignore)]
    window: TimeWindow,
    #[serde(flatten)]
    #[param(ignore)]
    project: ProjectParam,
}

/// How many evaluations `GET /v1/eval` lists.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListLimit {
    /// How many evaluations, newest first: 1 to 1000, 50 when left out.
    #[serde(default, deserialize_with = "eval_params::whole::<_, 1, MAX_LIMIT>")]
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000, default = 50)]
    limit: Option<usize>,
}

impl EvalFilterQuery {
    /// The store's filter, with the project resolved.
    async fn filter(
        self,
        state: &AppState,
        principal: &Principal,
        metric: MetricParam,
        limit: usize,
    ) -> Result<EvalFilter, AppError> {
        if let (Some(min), Some(max)) = (self.score_min, self.score_max) {
            if max < min {
                return Err(AppError::bad_request(
                    "score_max: must not be below score_min",
                ));
            }
        }
        Ok(EvalFilter {
            trace_id: self.trace_id,
            project_id: self.project.resolve(state, principal).await?,
            metric: metric.metric,
            from: self.window.from,
            to: self.window.to,
            score_min: self.score_min,
            score_max: self.score_max,
            before: None,
            limit,
        })
    }
}

/// A list of evaluations (the reference's `EvalListResponse`).
#[derive(Serialize, ToSchema)]
#[schema(as = EvalListResponse)]
pub struct EvalList {
    /// Newest first.
    evals: Vec<Evaluation>,
}

/// Lists evaluations, newest first.
///
/// The filters combine: all must hold.
#[utoipa::path(
    get,
    path = "/v1/eval",
    operation_id = "listEvals",
    tag = "evaluations",
    params(EvalFilterQuery, MetricParam, TimeWindow, ProjectParam, ListLimit),
    responses(
        (status = 200, description = "The evaluations.", body = EvalList),
        (status = 404, description = "`not_found`: the caller's organisation has no project `project_id`.", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    metric: MetricParam,
    ApiQuery(query): ApiQuery<EvalFilterQuery>,
    ApiQuery(limit): ApiQuery<ListLimit>,
) -> Result<Json<EvalList>, AppError> {
    let limit = limit.limit.unwrap_or(DEFAULT_LIMIT);
    let filter = query.filter(&state, &principal, metric, limit).await?;
    let evals: Vec<Evaluation> = state
        .store
        .list_evals(principal.tenant_id, filter)
        .await?
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    Ok(Json(EvalList { evals }))
}

/// Shows one evaluation: its status and, once complete, its score.
#[utoipa::path(
    get,
    path = "/v1/eval/{id}",
    operation_id = "getEval",
    tag = "evaluations",
    params(("id" = String, Path, format = "uuid", description = "The evaluation's id.")),
    responses((status = 200, description = "The evaluation.", body = Evaluation))
)]
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

/// How `GET /v1/eval/export` writes its rows.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportOptions {
    /// `csv` (the default) or `jsonl`.
    #[param(inline)]
    format: Option<Format>,
    /// With `true`, each row has `reasoning`, cut to 500 characters.
    #[serde(default, deserialize_with = "eval_params::flag")]
    #[param(value_type = Option<bool>, default = false)]
    include_reasoning: Option<bool>,
}

/// Streams evaluations as CSV or JSON lines.
///
/// CSV columns, in order: `id, trace_id, metric, score, label,
/// evaluator_type, model_tier, created_at` (and `reasoning` with
/// `include_reasoning=true`); JSON lines have the same fields and
/// `status`. Newest first, up to the plan's export cap.
#[utoipa::path(
    get,
    path = "/v1/eval/export",
    operation_id = "exportEvals",
    tag = "evaluations",
    params(ExportOptions, EvalFilterQuery, MetricParam, TimeWindow, ProjectParam),
    responses(
        (status = 200, description = "The rows, streamed.",
            content((String = "text/csv"), (String = "application/x-ndjson")),
            headers(
                ("X-TruLayer-Truncated" = bool, description = "`true` when the plan's export cap cut the rows short."),
                ("Content-Disposition" = String, description = "A file name: `evals-YYYY-MM-DD.csv` or `.jsonl`."),
            )),
        (status = 404, description = "`not_found`: the caller's organisation has no project `project_id`.", body = ErrorBody),
    )
)]
pub async fn export(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(options): ApiQuery<ExportOptions>,
    metric: MetricParam,
    ApiQuery(query): ApiQuery<EvalFilterQuery>,
) -> Result<Response, AppError> {
    let format = options.format.unwrap_or_default();
    let reasoning = options.include_reasoning.unwrap_or(false);
    let mut filter = query
        .filter(&state, &principal, metric, DEFAULT_LIMIT)
        .await?;
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

/// A JSON line of the evaluations export.
#[derive(Serialize)]
struct ExportRow<'a> {
    id: &'a str,
    trace_id: &'a str,
    metric: &'a str,
    score: Option<f64>,
    label: Option<&'a str>,
    evaluator_type: &'a str,
    model_tier: Option<&'a str>,
    status: &'a str,
    created_at: crate::model::Timestamp,
    /// Only with `include_reasoning=true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning: Option<&'a str>,
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
            let row = ExportRow {
                id: &e.id,
                trace_id: &e.trace_id,
                metric: &e.metric_name,
                score: e.score,
                label: e.label.as_deref(),
                evaluator_type: &e.evaluator_type,
                model_tier: e.model_tier.as_deref(),
                status: &e.status,
                created_at: e.created_at,
                reasoning: reasoning.as_deref(),
            };
            let row = serde_json::to_string(&row).unwrap_or_default();
            out.push_str(&row);
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

/// Lists the preset evaluators.
///
/// Public and cacheable: a client can show the presets before anyone logs
/// in. A preset runs when its name is passed as `config.preset`.
#[utoipa::path(
    get,
    path = "/v1/eval-catalog",
    operation_id = "listEvalCatalog",
    tag = "evaluations",
    responses((status = 200, description = "The presets, in the catalog's order.", body = Catalog,
        headers(("Cache-Control" = String, description = "`public, max-age=3600`."))))
)]
pub async fn catalog() -> Response {
    let mut response = Json(crate::eval::catalog::catalog()).into_response();
    response.headers_mut().insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    response
}
