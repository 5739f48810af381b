//! Runs of a dataset against a version: `POST /v1/datasets/{id}/runs`
//! schedules one on the durable queue (202), `GET` lists them, and
//! `/v1/eval-runs/{id}` shows one's progress, exports its results, diffs
//! it against a baseline run (`run_diff`) and cancels it. The CI gate is in
//! `ci_gate`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::download::attachment;
use super::eval_params::canonical_uuid;
use super::extract::JsonBody;
use super::query::ApiQuery;
use super::run_diff::{self, run_id, RunDiff};
use super::{AppState, Principal};
use crate::error::{AppError, ErrorBody};
use crate::model::Timestamp;
use crate::store::{EvalRun, RunItemResult, RunScheduled, RunScore};

/// Items read per step of an export.
const EXPORT_PAGE: usize = 200;

/// A run to schedule (the reference's `ScheduleEvalRunRequest`).
#[derive(Deserialize, ToSchema)]
#[schema(as = ScheduleEvalRunRequest)]
pub struct ScheduleRun {
    /// The version of the dataset to run.
    #[schema(format = "uuid")]
    eval_version_id: String,
}

/// A dataset's runs (the reference's `EvalRunListResponse`).
#[derive(Serialize, ToSchema)]
#[schema(as = EvalRunListResponse)]
pub struct RunList {
    runs: Vec<EvalRun>,
}

/// Which runs of the list.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct RunListQuery {
    /// Runs to return, 1 to 100.
    #[param(default = 20, minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// Runs to skip, newest first.
    #[param(default = 0, minimum = 0)]
    offset: Option<u32>,
}

/// The baseline of a diff.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct DiffQuery {
    /// The run to compare with: a run of the same dataset.
    #[param(format = "uuid")]
    baseline: String,
}

/// One score of a run (the reference's `EvalRunExportItem`): an evaluation
/// linked to the run and its item.
#[derive(Serialize, ToSchema)]
pub struct EvalRunExportItem {
    #[schema(format = "uuid")]
    id: String,
    /// The dataset item scored; null once it was removed from the dataset.
    #[schema(format = "uuid")]
    item_id: Option<String>,
    #[schema(format = "uuid")]
    trace_id: String,
    #[schema(example = "correctness")]
    metric_name: String,
    /// `llm` or `rule`.
    evaluator_type: String,
    /// `complete` or `failed`.
    status: String,
    score: Option<f64>,
    label: Option<String>,
    /// The evaluator's reasoning, or why it failed.
    reasoning: Option<String>,
    judge_model: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
}

/// One item of a run as it came out.
#[derive(Serialize, ToSchema)]
pub struct EvalRunResult {
    #[schema(format = "uuid")]
    item_id: Option<String>,
    #[schema(format = "uuid")]
    trace_id: String,
    /// `pending`, `running`, `complete`, `failed` or `cancelled`.
    status: String,
    /// The item's review label.
    label: Option<String>,
    input: Option<String>,
    /// What was scored: the model's answer, or the item's own output.
    output: Option<String>,
    /// The mean of the item's scores.
    score: Option<f64>,
    /// Why the item failed.
    error: Option<String>,
}

/// A run with its results (the reference's `EvalRunExportResponse`).
#[derive(Serialize, ToSchema)]
#[schema(as = EvalRunExportResponse)]
pub struct RunExport {
    run: EvalRun,
    /// Every score, one per evaluator and item.
    items: Vec<EvalRunExportItem>,
    /// Every item: its answer, mean score and failure.
    results: Vec<EvalRunResult>,
}

/// Schedules a run of a dataset's items against one of its versions.
///
/// The run is durable work: it survives a restart and resumes where it
/// stopped. `GET /v1/eval-runs/{id}` shows its progress. Each item counts
/// as one evaluation against the plan's monthly cap.
#[utoipa::path(
    post,
    path = "/v1/datasets/{id}/runs",
    operation_id = "scheduleEvalRun",
    tag = "eval-runs",
    params(("id" = String, Path, format = "uuid", description = "The dataset's id.")),
    request_body(content = ScheduleRun, example = json!({"eval_version_id": "0190f1c2-7d1e-7a4b-9c3d-2e5f6a7b8c9d"})),
    responses(
        (status = 202, description = "The run, scheduled.", body = EvalRun),
        (status = 402, description = "`eval_quota_exceeded`: the run's items would pass the plan's monthly evaluations.", body = ErrorBody),
        (status = 404, description = "`not_found`: the caller's organisation has no dataset `id`, or the dataset no version `eval_version_id`.", body = ErrorBody),
        (status = 409, description = "`dataset_empty`: the dataset has no items; `run_too_large`: it has more than `eval.max_run_items`; `nothing_to_score`: the version names no judge model and the dataset's project has no enabled evaluation rule.", body = ErrorBody),
    )
)]
pub async fn schedule(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ScheduleRun>,
) -> Result<(StatusCode, Json<EvalRun>), AppError> {
    let dataset = canonical_uuid(&id).ok_or(AppError::NotFound("dataset"))?;
    let version =
        canonical_uuid(&body.eval_version_id).ok_or(AppError::NotFound("eval version"))?;
    let max_items = state.config.eval.max_run_items;
    let quota = state.config.plans.limits(principal.plan).evals_per_month;
    let scheduled = state
        .store
        .schedule_run(principal.tenant_id, dataset, version, max_items, quota)
        .await?;
    let run = match scheduled {
        RunScheduled::Run(run) => *run,
        RunScheduled::NoDataset => return Err(AppError::NotFound("dataset")),
        RunScheduled::NoVersion => return Err(AppError::NotFound("eval version")),
        RunScheduled::Empty => {
            return Err(AppError::Refused {
                message: "the dataset has no items: add traces to it first".into(),
                code: "dataset_empty",
            })
        }
        RunScheduled::TooMany { count } => {
            return Err(AppError::Refused {
                message: format!(
                    "the dataset has {count} items and a run may take {max_items} \
                     (eval.max_run_items); split the dataset or raise the cap"
                ),
                code: "run_too_large",
            })
        }
        RunScheduled::NothingScores => {
            return Err(AppError::Refused {
                message: "nothing would score this run: give the version a judge_model, or \
                          the dataset's project an enabled evaluation rule (/v1/eval-rules)"
                    .into(),
                code: "nothing_to_score",
            })
        }
        RunScheduled::OverQuota { used, count } => {
            return Err(AppError::QuotaExceeded {
                message: format!(
                    "the {} plan allows {quota} evaluations a month; {used} were queued this \
                     month and the run would add {count}",
                    principal.plan.as_str()
                ),
                code: "eval_quota_exceeded",
            })
        }
    };
    state.evals.wake_runs();
    Ok((StatusCode::ACCEPTED, Json(run)))
}

/// A dataset's runs, newest first.
#[utoipa::path(
    get,
    path = "/v1/datasets/{id}/runs",
    operation_id = "listEvalRuns",
    tag = "eval-runs",
    params(("id" = String, Path, format = "uuid", description = "The dataset's id."), RunListQuery),
    responses(
        (status = 200, description = "The runs.", body = RunList),
        (status = 404, description = "`not_found`: the caller's organisation has no dataset `id`.", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<RunListQuery>,
) -> Result<Json<RunList>, AppError> {
    let dataset = canonical_uuid(&id).ok_or(AppError::NotFound("dataset"))?;
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(AppError::bad_request("limit: must be 1 to 100"));
    }
    let runs = state
        .store
        .list_runs(
            principal.tenant_id,
            dataset,
            limit as usize,
            query.offset.unwrap_or(0) as usize,
        )
        .await?
        .ok_or(AppError::NotFound("dataset"))?;
    Ok(Json(RunList { runs }))
}

/// A run's status and progress.
#[utoipa::path(
    get,
    path = "/v1/eval-runs/{id}",
    operation_id = "getEvalRun",
    tag = "eval-runs",
    params(("id" = String, Path, format = "uuid", description = "The run's id.")),
    responses((status = 200, description = "The run.", body = EvalRun))
)]
pub async fn detail(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<EvalRun>, AppError> {
    let run = state
        .store
        .get_run(principal.tenant_id, run_id(&id)?)
        .await?
        .ok_or(AppError::NotFound("eval run"))?;
    Ok(Json(run))
}

/// Cancels a run: items not started are not run; those in flight finish.
#[utoipa::path(
    post,
    path = "/v1/eval-runs/{id}/cancel",
    operation_id = "cancelEvalRun",
    tag = "eval-runs",
    params(("id" = String, Path, format = "uuid", description = "The run's id.")),
    responses(
        (status = 200, description = "The run, cancelled.", body = EvalRun),
        (status = 409, description = "`run_finished`: the run has finished (or was cancelled) already.", body = ErrorBody),
    )
)]
pub async fn cancel(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<EvalRun>, AppError> {
    let run = state
        .store
        .cancel_run(principal.tenant_id, run_id(&id)?)
        .await?
        .ok_or(AppError::NotFound("eval run"))?;
    if run.status != "cancelled" {
        return Err(AppError::Refused {
            message: format!("the run is {} already", run.status),
            code: "run_finished",
        });
    }
    Ok(Json(run))
}

/// A run with every score it produced, as a JSON file.
#[utoipa::path(
    get,
    path = "/v1/eval-runs/{id}/export",
    operation_id = "exportEvalRun",
    tag = "eval-runs",
    params(("id" = String, Path, format = "uuid", description = "The run's id.")),
    responses((
        status = 200,
        description = "The run, its scores and its items' results.",
        body = RunExport,
        headers(("Content-Disposition" = String, description = "`attachment; filename=\"eval-run-{id}.json\"`.")),
    ))
)]
pub async fn export(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let id = run_id(&id)?;
    let run = state
        .store
        .get_run(principal.tenant_id, id.clone())
        .await?
        .ok_or(AppError::NotFound("eval run"))?;
    let head = serde_json::to_string(&run)
        .map_err(|e| AppError::Internal(format!("writing the run: {e}")))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let (store, tenant_id, uuid) = (state.store.clone(), principal.tenant_id, id.clone());
    // Written as it is read, in two passes over the items: their scores,
    // then their results, so a run of any size takes bounded memory.
    tokio::spawn(async move {
        let mut chunk = format!("{{\"run\":{head},\"items\":[");
        for pass in [Pass::Scores, Pass::Results] {
            let (mut after, mut first) = (0, true);
            loop {
                let page = store
                    .run_result_page(tenant_id, uuid.clone(), after, EXPORT_PAGE)
                    .await;
                let (rows, more) = match page {
                    Ok(Some(page)) => page,
                    Ok(None) => return,
                    Err(e) => {
                        // The status is sent; ending the body early is all that is left.
                        tracing::error!(error = %e, "eval run export failed");
                        return;
                    }
                };
                for (key, result) in &rows {
                    after = *key;
                    pass.write(&mut chunk, result, &mut first);
                }
                if tx
                    .send(Bytes::from(std::mem::take(&mut chunk)))
                    .await
                    .is_err()
                {
                    return;
                }
                if !more {
                    break;
                }
            }
            chunk.push_str(match pass {
                Pass::Scores => "],\"results\":[",
                Pass::Results => "]}",
            });
        }
        let _ = tx.send(Bytes::from(chunk)).await;
    });
    Ok(attachment(
        rx,
        "application/json",
        &format!("eval-run-{id}.json"),
    ))
}

/// The two arrays of a run's export.
#[derive(Clone, Copy)]
enum Pass {
    Scores,
    Results,
}

impl Pass {
    /// Appends what this pass writes of `result`, comma-separated.
    fn write(self, out: &mut String, result: &RunItemResult, first: &mut bool) {
        let mut push = |json: serde_json::Result<String>| {
            if let Ok(json) = json {
                if !std::mem::take(first) {
                    out.push(',');
                }
                out.push_str(&json);
            }
        };
        match self {
            Pass::Scores => {
                for score in &result.scores {
                    push(serde_json::to_string(&export_item(result, score)));
                }
            }
            Pass::Results => push(serde_json::to_string(&EvalRunResult {
                item_id: result.item_id.clone(),
                trace_id: result.trace_id.clone(),
                status: result.status.clone(),
                label: result.label.clone(),
                input: result.input.clone(),
                output: result.output.clone(),
                score: result.score,
                error: result.error.clone(),
            })),
        }
    }
}

fn export_item(result: &RunItemResult, score: &RunScore) -> EvalRunExportItem {
    EvalRunExportItem {
        id: score.id.clone(),
        item_id: result.item_id.clone(),
        trace_id: result.trace_id.clone(),
        metric_name: score.metric_name.clone(),
        evaluator_type: score.evaluator_type.clone(),
        status: score.status.clone(),
        score: score.score,
        label: score.label.clone(),
        reasoning: score.reasoning.clone(),
        judge_model: score.judge_model.clone(),
        created_at: score.created_at,
    }
}

/// A run's scores against a baseline run of the same dataset, item by item.
///
/// Items are paired by dataset item; each item's score is the mean of its
/// scores. Items that regressed most come first.
#[utoipa::path(
    get,
    path = "/v1/eval-runs/{id}/diff",
    operation_id = "getEvalRunDiff",
    tag = "eval-runs",
    params(("id" = String, Path, format = "uuid", description = "The run's id."), DiffQuery),
    responses(
        (status = 200, description = "The diff.", body = RunDiff),
        (status = 400, description = "`bad_request`: `baseline` is missing, or a run of another dataset.", body = ErrorBody),
        (status = 404, description = "`not_found`: the caller's organisation has no run `id` or `baseline`.", body = ErrorBody),
    )
)]
pub async fn diff(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<DiffQuery>,
) -> Result<Json<RunDiff>, AppError> {
    let run = run_id(&id)?;
    let baseline = run_id(&query.baseline)?;
    Ok(Json(
        run_diff::compare(&state, principal.tenant_id, run, baseline).await?,
    ))
}
