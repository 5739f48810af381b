//! Runs of a dataset against a version: `POST /v1/datasets/{id}/runs`
//! schedules one on the durable queue (202), `GET` lists them, and
//! `/v1/eval-runs/{id}` shows one's progress, exports its results, diffs
//! it against a baseline run and cancels it. `POST /v1/ci/gate` turns a
//! finished run (and a baseline) into a release decision.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header::HOST;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::download::attachment;
use super::eval_params::canonical_uuid;
use super::extract::JsonBody;
use super::query::ApiQuery;
use super::{AppState, Principal};
use crate::error::{AppError, ErrorBody};
use crate::model::Timestamp;
use crate::store::{EvalRun, RunItemResult, RunScheduled, RunScore};

/// Two scores closer than this are the same.
const SAME: f64 = 1e-9;
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

/// How two runs compare (the reference's `DiffSummary`).
#[derive(Serialize, ToSchema)]
pub struct DiffSummary {
    /// The mean of the items' deltas (run minus baseline), over items
    /// scored in both.
    mean_delta: f64,
    improved_count: i64,
    regressed_count: i64,
    unchanged_count: i64,
    /// Items scored in only one of the two runs.
    unpaired_count: i64,
}

/// One item in both runs (the reference's `DiffItem`).
#[derive(Serialize, ToSchema)]
pub struct DiffItem {
    #[schema(format = "uuid")]
    item_id: Option<String>,
    #[schema(format = "uuid")]
    trace_id: String,
    /// The item's review label, or `unlabeled`.
    label: String,
    /// The start of the item's input (300 characters at most).
    input: Option<String>,
    baseline_score: Option<f64>,
    run_score: Option<f64>,
    /// Run minus baseline; 0 when either has no score.
    delta: f64,
    /// `improved`, `regressed`, `unchanged` or `unpaired`.
    change: &'static str,
    baseline_rationale: String,
    run_rationale: String,
}

/// A run against a baseline (the reference's `EvalRunDiff`); items that
/// regressed most come first.
#[derive(Serialize, ToSchema)]
#[schema(as = EvalRunDiff)]
pub struct RunDiff {
    #[schema(format = "uuid")]
    run_id: String,
    #[schema(format = "uuid")]
    baseline_id: String,
    summary: DiffSummary,
    items: Vec<DiffItem>,
}

/// What a gate does when the policy fails.
#[derive(Deserialize, ToSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnFail {
    Warn,
    Block,
}

/// A CI policy (the reference's `CIPolicy`).
#[derive(Deserialize, ToSchema)]
#[schema(as = CIPolicy)]
pub struct Policy {
    /// The lowest mean score that passes, 0 to 1.
    #[serde(default)]
    score_floor: Option<f64>,
    /// How far the mean score may fall below the baseline's and still pass.
    #[serde(default)]
    delta_tolerance: Option<f64>,
    /// `warn` or `block`: the decision when the policy fails.
    on_fail: OnFail,
}

/// A gate to decide (the reference's `CIGateRequest`).
#[derive(Deserialize, ToSchema)]
#[schema(as = CIGateRequest)]
pub struct GateRequest {
    #[schema(format = "uuid")]
    dataset_id: String,
    /// The run of the change under test; it must have finished.
    #[schema(format = "uuid")]
    run_id: String,
    /// A run to compare with, of the same dataset.
    #[serde(default)]
    #[schema(format = "uuid")]
    baseline_run_id: Option<String>,
    policy: Policy,
}

/// The gate's decision (the reference's `CIGateResponse`).
#[derive(Serialize, ToSchema)]
#[schema(as = CIGateResponse)]
pub struct GateDecision {
    /// `pass`, or the policy's `on_fail` (`warn` or `block`).
    #[schema(example = "block")]
    decision: &'static str,
    /// The run's mean score; 0 when nothing was scored.
    mean_score: f64,
    /// The run's mean delta against the baseline.
    mean_delta: Option<f64>,
    /// The run in the admin page.
    run_url: String,
    /// What decided it, in words a person can act on.
    reason: String,
}

fn run_id(raw: &str) -> Result<String, AppError> {
    canonical_uuid(raw).ok_or(AppError::NotFound("eval run"))
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
        compare(&state, principal.tenant_id, run, baseline).await?,
    ))
}

/// The diff of two of the tenant's runs.
async fn compare(
    state: &AppState,
    tenant_id: i64,
    run: String,
    baseline: String,
) -> Result<RunDiff, AppError> {
    let (run, results) = state
        .store
        .run_scores(tenant_id, run)
        .await?
        .ok_or(AppError::NotFound("eval run"))?;
    let (base, base_results) = state
        .store
        .run_scores(tenant_id, baseline)
        .await?
        .ok_or(AppError::NotFound("eval run"))?;
    if run.dataset_id != base.dataset_id {
        return Err(AppError::bad_request(
            "baseline: a run of another dataset; compare runs of the same dataset",
        ));
    }
    let mut base_by_item: std::collections::HashMap<&str, &RunItemResult> = base_results
        .iter()
        .filter_map(|r| r.item_id.as_deref().map(|id| (id, r)))
        .collect();
    let mut items = Vec::new();
    let (mut sum, mut paired) = (0.0, 0i64);
    let mut summary = DiffSummary {
        mean_delta: 0.0,
        improved_count: 0,
        regressed_count: 0,
        unchanged_count: 0,
        unpaired_count: 0,
    };
    for result in &results {
        let before = result
            .item_id
            .as_deref()
            .and_then(|id| base_by_item.remove(id));
        let baseline_score = before.and_then(|b| b.score);
        let (delta, change) = match (baseline_score, result.score) {
            (Some(b), Some(r)) => {
                let delta = r - b;
                sum += delta;
                paired += 1;
                if delta > SAME {
                    summary.improved_count += 1;
                    (delta, "improved")
                } else if delta < -SAME {
                    summary.regressed_count += 1;
                    (delta, "regressed")
                } else {
                    summary.unchanged_count += 1;
                    (0.0, "unchanged")
                }
            }
            (None, None) => continue,
            _ => {
                summary.unpaired_count += 1;
                (0.0, "unpaired")
            }
        };
        items.push(DiffItem {
            item_id: result.item_id.clone(),
            trace_id: result.trace_id.clone(),
            label: result
                .label
                .clone()
                .unwrap_or_else(|| "unlabeled".to_owned()),
            input: result.input.clone(),
            baseline_score,
            run_score: result.score,
            delta,
            change,
            baseline_rationale: before.map(rationale).unwrap_or_default(),
            run_rationale: rationale(result),
        });
    }
    summary.unpaired_count += base_by_item.values().filter(|b| b.score.is_some()).count() as i64;
    if paired > 0 {
        summary.mean_delta = sum / paired as f64;
    }
    // Regressions first, the worst first; then unchanged, then improvements.
    items.sort_by(|a, b| a.delta.total_cmp(&b.delta));
    Ok(RunDiff {
        run_id: run.id,
        baseline_id: base.id,
        summary,
        items,
    })
}

/// An item's scores' reasoning, one line per metric.
fn rationale(result: &RunItemResult) -> String {
    let mut text = String::new();
    if let Some(error) = &result.error {
        text.push_str(error);
    }
    for score in &result.scores {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&score.metric_name);
        text.push_str(": ");
        text.push_str(score.reasoning.as_deref().unwrap_or_default());
    }
    text
}

/// Decides whether a finished run may ship.
///
/// The policy fails when items failed, when the mean score is below
/// `score_floor`, or when it fell more than `delta_tolerance` below the
/// baseline's; the decision is then `on_fail` (`warn` or `block`), else
/// `pass`. `reason` says which and by how much.
#[utoipa::path(
    post,
    path = "/v1/ci/gate",
    operation_id = "ciGate",
    tag = "ci",
    request_body(content = GateRequest, example = json!({"dataset_id": "0190f1c2-7d1e-7a4b-9c3d-2e5f6a7b8c9d", "run_id": "0190f1c2-8e2f-7b5c-8d4e-3f6a7b8c9d0e", "policy": {"score_floor": 0.7, "delta_tolerance": 0.05, "on_fail": "block"}})),
    responses(
        (status = 200, description = "The decision.", body = GateDecision),
        (status = 400, description = "`bad_request`: `score_floor` or `delta_tolerance` is outside 0 to 1, or the baseline is a run of another dataset.", body = ErrorBody),
        (status = 404, description = "`not_found`: the caller's organisation has no dataset `dataset_id`, or it has no run `run_id` or `baseline_run_id`.", body = ErrorBody),
        (status = 409, description = "`run_not_finished`: the run is still pending or running; wait for it (`GET /v1/eval-runs/{id}`).", body = ErrorBody),
    )
)]
pub async fn gate(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    JsonBody(body): JsonBody<GateRequest>,
) -> Result<Json<GateDecision>, AppError> {
    let policy = &body.policy;
    for (field, value) in [
        ("policy.score_floor", policy.score_floor),
        ("policy.delta_tolerance", policy.delta_tolerance),
    ] {
        if value.is_some_and(|v| !(0.0..=1.0).contains(&v)) {
            return Err(AppError::bad_request(format!("{field}: must be 0 to 1")));
        }
    }
    let dataset = canonical_uuid(&body.dataset_id).ok_or(AppError::NotFound("dataset"))?;
    let run = state
        .store
        .get_run(principal.tenant_id, run_id(&body.run_id)?)
        .await?
        .filter(|run| run.dataset_id == dataset)
        .ok_or(AppError::NotFound("eval run"))?;
    if matches!(run.status.as_str(), "pending" | "running") {
        return Err(AppError::Refused {
            message: format!(
                "the run is {} ({} of {} items done); decide once it has finished",
                run.status, run.completed_count, run.item_count
            ),
            code: "run_not_finished",
        });
    }
    let diff = match &body.baseline_run_id {
        Some(baseline) => Some(
            compare(
                &state,
                principal.tenant_id,
                run.id.clone(),
                run_id(baseline)?,
            )
            .await?,
        ),
        None => None,
    };
    let mean_score = run.mean_score.unwrap_or(0.0);
    let mut failures = Vec::new();
    if run.status == "cancelled" {
        failures.push(format!(
            "the run was cancelled after {} of {} items",
            run.completed_count, run.item_count
        ));
    }
    if run.failed_count > 0 {
        // The run's message counts the failures and gives the first reason.
        failures.push(run.error_message.clone().unwrap_or_else(|| {
            format!(
                "{} of {} items failed (see the run's export)",
                run.failed_count, run.item_count
            )
        }));
    }
    if run.mean_score.is_none() {
        failures.push("no item was scored".to_owned());
    }
    let mut passed = Vec::new();
    if let Some(floor) = policy.score_floor {
        if run.mean_score.is_some() && mean_score < floor {
            failures.push(format!(
                "the mean score {mean_score:.3} is below the floor {floor:.3}"
            ));
        } else if run.mean_score.is_some() {
            passed.push(format!(
                "the mean score {mean_score:.3} meets the floor {floor:.3}"
            ));
        }
    }
    let mean_delta = diff.as_ref().map(|d| d.summary.mean_delta);
    if let (Some(diff), Some(delta)) = (&diff, mean_delta) {
        let tolerance = policy.delta_tolerance.unwrap_or(0.0);
        let regressed = diff.summary.regressed_count;
        if delta < -tolerance - SAME {
            let worst = diff
                .items
                .first()
                .filter(|i| i.change == "regressed")
                .map(|i| format!("; the worst, trace {}, fell by {:.3}", i.trace_id, -i.delta))
                .unwrap_or_default();
            failures.push(format!(
                "the mean score fell by {:.3} against the baseline, more than the tolerance \
                 {tolerance:.3}: {regressed} items regressed{worst}",
                -delta
            ));
        } else {
            passed.push(format!(
                "the mean delta {delta:+.3} against the baseline is within the tolerance \
                 {tolerance:.3} ({regressed} items regressed)"
            ));
        }
    }
    let (decision, reason) = if failures.is_empty() {
        let reason = if passed.is_empty() {
            format!("the run scored {mean_score:.3} and the policy sets no floor or tolerance")
        } else {
            passed.join("; ")
        };
        ("pass", reason)
    } else {
        let decision = match policy.on_fail {
            OnFail::Warn => "warn",
            OnFail::Block => "block",
        };
        (decision, failures.join("; "))
    };
    Ok(Json(GateDecision {
        decision,
        mean_score,
        mean_delta,
        run_url: run_url(&state, &headers, &run.id),
        reason,
    }))
}

/// The run's page in the admin page, at the address the caller used.
fn run_url(state: &AppState, headers: &HeaderMap, run: &str) -> String {
    let scheme = if state.config.server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| state.config.server.listen.to_string());
    format!("{scheme}://{host}/#/runs/{run}")
}
