//! How one run of a dataset compares with another, item by item: what
//! `GET /v1/eval-runs/{id}/diff` answers and the CI gate weighs.

use serde::Serialize;
use utoipa::ToSchema;

use super::eval_params::canonical_uuid;
use super::AppState;
use crate::error::AppError;
use crate::store::RunItemResult;

/// The id of a run in a path: not a UUID is as unknown as another's.
pub(super) fn run_id(raw: &str) -> Result<String, AppError> {
    canonical_uuid(raw).ok_or(AppError::NotFound("eval run"))
}

/// Two scores closer than this are the same.
pub(super) const SAME: f64 = 1e-9;

/// How two runs compare (the reference's `DiffSummary`).
#[derive(Serialize, ToSchema)]
pub struct DiffSummary {
    /// The mean of the items' deltas (run minus baseline), over items
    /// scored in both.
    pub(super) mean_delta: f64,
    pub(super) improved_count: i64,
    pub(super) regressed_count: i64,
    pub(super) unchanged_count: i64,
    /// Items scored in only one of the two runs.
    pub(super) unpaired_count: i64,
}

/// One item in both runs (the reference's `DiffItem`).
#[derive(Serialize, ToSchema)]
pub struct DiffItem {
    #[schema(format = "uuid")]
    pub(super) item_id: Option<String>,
    #[schema(format = "uuid")]
    pub(super) trace_id: String,
    /// The item's review label, or `unlabeled`.
    pub(super) label: String,
    /// The start of the item's input (300 characters at most).
    pub(super) input: Option<String>,
    pub(super) baseline_score: Option<f64>,
    pub(super) run_score: Option<f64>,
    /// Run minus baseline; 0 when either has no score.
    pub(super) delta: f64,
    /// `improved`, `regressed`, `unchanged` or `unpaired`.
    pub(super) change: &'static str,
    pub(super) baseline_rationale: String,
    pub(super) run_rationale: String,
}

/// A run against a baseline (the reference's `EvalRunDiff`); items that
/// regressed most come first.
#[derive(Serialize, ToSchema)]
#[schema(as = EvalRunDiff)]
pub struct RunDiff {
    #[schema(format = "uuid")]
    pub(super) run_id: String,
    #[schema(format = "uuid")]
    pub(super) baseline_id: String,
    pub(super) summary: DiffSummary,
    pub(super) items: Vec<DiffItem>,
}

/// The diff of two of the tenant's runs.
pub(super) async fn compare(
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
