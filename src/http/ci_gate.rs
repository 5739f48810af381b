//! `POST /v1/ci/gate`: a finished run of a dataset (and a baseline run)
//! turned into a release decision a CI pipeline can act on.

use axum::extract::State;
use axum::http::header::HOST;
use axum::http::HeaderMap;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::eval_params::canonical_uuid;
use super::extract::JsonBody;
use super::run_diff::{compare, run_id, SAME};
use super::{AppState, Principal};
use crate::error::{AppError, ErrorBody};

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
