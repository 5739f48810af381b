//! Summaries of evaluation scores: `GET /v1/eval/trends`, `/histogram`,
//! `/compare` and `/agreement`.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::Json;
use serde_json::{json, Value};

use super::evals::{metric, param, required_metric, window};
use super::{project_param, AppState, Principal};
use crate::error::AppError;
use crate::model::Timestamp;

const HOUR: i64 = 3_600_000_000;
const DAY: i64 = 24 * HOUR;
/// Buckets per trends response, at most.
const MAX_TREND_BUCKETS: i64 = 10_000;

/// The project a summary is about: `project_id` is required.
async fn required_project(
    state: &AppState,
    principal: &Principal,
    params: &HashMap<String, String>,
) -> Result<i64, AppError> {
    project_param(state, principal, params)
        .await?
        .ok_or_else(|| AppError::bad_request("project_id: is required"))
}

/// `GET /v1/eval/trends`: mean score, count and pass rate (score ≥ 0.5)
/// per bucket and metric, over the last 7 days unless `from`/`to` say.
#[utoipa::path(get, path = "/v1/eval/trends", operation_id = "getEvalTrends", tag = "evaluations", responses((status = 200, description = "OK")))]
pub async fn trends(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, AppError> {
    let project_id = required_project(&state, &principal, &params).await?;
    let metric = metric(&params)?;
    let (from, to) = window(&params, ("from", "to"), Some(7 * DAY))?;
    let width = match params.get("bucket").map(String::as_str) {
        Some("1h") => HOUR,
        Some("6h") => 6 * HOUR,
        Some("1d") => DAY,
        Some("7d") => 7 * DAY,
        Some(_) => return Err(AppError::bad_request("bucket: must be 1h, 6h, 1d or 7d")),
        // About a hundred buckets or fewer.
        None => match to - from {
            span if span <= 4 * DAY => HOUR,
            span if span <= 25 * DAY => 6 * HOUR,
            span if span <= 100 * DAY => DAY,
            _ => 7 * DAY,
        },
    };
    if (to - from) / width > MAX_TREND_BUCKETS {
        return Err(AppError::bad_request(format!(
            "bucket: at most {MAX_TREND_BUCKETS} buckets per window"
        )));
    }
    let buckets = state
        .store
        .eval_trends(principal.tenant_id, project_id, metric, from, to, width)
        .await?;
    let buckets: Vec<Value> = buckets
        .iter()
        .map(|b| {
            json!({
                "time": Timestamp(b.start),
                "metric": b.metric,
                "avg_score": b.avg_score,
                "count": b.count,
                "pass_rate": rate(b.passed, b.count),
            })
        })
        .collect();
    Ok(Json(json!({ "buckets": buckets })))
}

fn rate(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// `GET /v1/eval/histogram`: how a metric's scores spread over `buckets`
/// equal ranges of [0, 1].
#[utoipa::path(get, path = "/v1/eval/histogram", operation_id = "getEvalHistogram", tag = "evaluations", responses((status = 200, description = "OK")))]
pub async fn histogram(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, AppError> {
    let project_id = required_project(&state, &principal, &params).await?;
    let metric = required_metric(&params)?;
    let (from, to) = window(&params, ("from", "to"), None)?;
    let buckets = param(&params, "buckets", "a whole number from 1 to 100", |raw| {
        raw.parse::<usize>().ok().filter(|b| (1..=100).contains(b))
    })?
    .unwrap_or(10);
    let counts = state
        .store
        .eval_histogram(
            principal.tenant_id,
            project_id,
            metric.clone(),
            from,
            to,
            buckets,
        )
        .await?;
    let width = 1.0 / counts.len() as f64;
    let buckets: Vec<Value> = counts
        .iter()
        .enumerate()
        .map(|(i, count)| {
            json!({
                "range_start": i as f64 * width,
                "range_end": if i + 1 == counts.len() { 1.0 } else { (i + 1) as f64 * width },
                "count": count,
            })
        })
        .collect();
    Ok(Json(json!({ "metric": metric, "buckets": buckets })))
}

/// `GET /v1/eval/compare`: a metric in a baseline and a candidate window,
/// with the candidate's change.
#[utoipa::path(get, path = "/v1/eval/compare", operation_id = "compareEvalWindows", tag = "evaluations", responses((status = 200, description = "OK")))]
pub async fn compare(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, AppError> {
    let project_id = required_project(&state, &principal, &params).await?;
    let metric = required_metric(&params)?;
    for name in [
        "baseline_from",
        "baseline_to",
        "candidate_from",
        "candidate_to",
    ] {
        if !params.contains_key(name) {
            return Err(AppError::bad_request(format!("{name}: is required")));
        }
    }
    let baseline = window(&params, ("baseline_from", "baseline_to"), None)?;
    let candidate = window(&params, ("candidate_from", "candidate_to"), None)?;
    let mut stats = Vec::new();
    for (from, to) in [baseline, candidate] {
        stats.push(
            state
                .store
                .eval_window(principal.tenant_id, project_id, metric.clone(), from, to)
                .await?,
        );
    }
    let side = |s: &crate::store::WindowStats| {
        json!({
            "avg_score": s.avg_score,
            "count": s.count,
            "pass_rate": rate(s.passed, s.count),
        })
    };
    let (b, c) = (&stats[0], &stats[1]);
    Ok(Json(json!({
        "metric": metric,
        "baseline": side(b),
        "candidate": side(c),
        "delta": {
            "avg_score": c.avg_score - b.avg_score,
            "pass_rate": rate(c.passed, c.count) - rate(b.passed, b.count),
        },
    })))
}

/// `GET /v1/eval/agreement?metric=`: over traces with both human feedback
/// and the metric, how often the evaluation agrees with the people.
///
/// A trace's human value is the mean of its feedback (good 1, neutral 0.5,
/// bad 0); its score the mean of its evaluations. The evaluation says
/// "good" at a score of 0.5 or more; people say "good" above 0.5 and "bad"
/// below (a tie is neutral and left out of the agreement rate and kappa).
/// `pearson` correlates the scores with the human values over all traces.
#[utoipa::path(get, path = "/v1/eval/agreement", operation_id = "getEvalAgreement", tag = "evaluations", responses((status = 200, description = "OK")))]
pub async fn agreement(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, AppError> {
    let metric = required_metric(&params)?;
    let project_id = project_param(&state, &principal, &params).await?;
    let (from, to) = window(&params, ("from", "to"), None)?;
    let pairs = state
        .store
        .eval_agreement(principal.tenant_id, project_id, metric.clone(), from, to)
        .await?;
    let summary = Agreement::of(pairs.iter().map(|p| (p.score, p.human)));
    Ok(Json(json!({
        "metric": metric,
        "traces": pairs.len(),
        "compared": summary.compared(),
        "neutral": summary.neutral,
        "agreement_rate": summary.agreement_rate(),
        "cohen_kappa": summary.kappa(),
        "pearson": summary.pearson,
        "confusion": {
            "eval_pass_human_good": summary.pass_good,
            "eval_pass_human_bad": summary.pass_bad,
            "eval_fail_human_good": summary.fail_good,
            "eval_fail_human_bad": summary.fail_bad,
        },
    })))
}

/// Agreement between scores and human values.
#[derive(Debug, Default, PartialEq)]
struct Agreement {
    pass_good: u64,
    pass_bad: u64,
    fail_good: u64,
    fail_bad: u64,
    neutral: u64,
    pearson: Option<f64>,
}

impl Agreement {
    fn of(pairs: impl Iterator<Item = (f64, f64)> + Clone) -> Agreement {
        let mut a = Agreement::default();
        for (score, human) in pairs.clone() {
            let pass = score >= 0.5;
            if human == 0.5 {
                a.neutral += 1;
                continue;
            }
            match (pass, human > 0.5) {
                (true, true) => a.pass_good += 1,
                (true, false) => a.pass_bad += 1,
                (false, true) => a.fail_good += 1,
                (false, false) => a.fail_bad += 1,
            }
        }
        a.pearson = pearson(pairs);
        a
    }

    fn compared(&self) -> u64 {
        self.pass_good + self.pass_bad + self.fail_good + self.fail_bad
    }

    fn agreement_rate(&self) -> Option<f64> {
        let n = self.compared();
        (n > 0).then(|| (self.pass_good + self.fail_bad) as f64 / n as f64)
    }

    /// Cohen's kappa: agreement beyond what the two sides' rates of "good"
    /// would give by chance.
    fn kappa(&self) -> Option<f64> {
        let n = self.compared() as f64;
        if n == 0.0 {
            return None;
        }
        let observed = (self.pass_good + self.fail_bad) as f64 / n;
        let eval_pass = (self.pass_good + self.pass_bad) as f64 / n;
        let human_good = (self.pass_good + self.fail_good) as f64 / n;
        let chance = eval_pass * human_good + (1.0 - eval_pass) * (1.0 - human_good);
        (chance < 1.0).then(|| (observed - chance) / (1.0 - chance))
    }
}

/// Pearson's correlation; none with fewer than two pairs or no spread.
fn pearson(pairs: impl Iterator<Item = (f64, f64)>) -> Option<f64> {
    let (mut n, mut sx, mut sy, mut sxx, mut syy, mut sxy) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for (x, y) in pairs {
        n += 1.0;
        sx += x;
        sy += y;
        sxx += x * x;
        syy += y * y;
        sxy += x * y;
    }
    if n < 2.0 {
        return None;
    }
    let cov = sxy - sx * sy / n;
    let vx = sxx - sx * sx / n;
    let vy = syy - sy * sy / n;
    (vx > 1e-12 && vy > 1e-12).then(|| (cov / (vx * vy).sqrt()).clamp(-1.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agreement_counts_kappa_and_correlation() {
        // Eval and people agree on 3 of 4 decided traces; one is neutral.
        let pairs = [(0.9, 1.0), (0.2, 0.0), (0.8, 0.0), (0.1, 0.0), (0.7, 0.5)];
        let a = Agreement::of(pairs.iter().copied());
        assert_eq!(
            (a.pass_good, a.pass_bad, a.fail_good, a.fail_bad, a.neutral),
            (1, 1, 0, 2, 1)
        );
        assert_eq!(a.agreement_rate(), Some(0.75));
        // p_o = .75, p_e = .5*.25 + .5*.75 = .5 → kappa .5
        let kappa = a.kappa().expect("kappa");
        assert!((kappa - 0.5).abs() < 1e-9, "{kappa}");
        let r = a.pearson.expect("pearson");
        assert!(r > 0.4 && r < 1.0, "{r}");
        assert_eq!(Agreement::of(std::iter::empty()).agreement_rate(), None);
        assert_eq!(pearson([(0.5, 1.0), (0.5, 0.0)].into_iter()), None);
        let perfect = pearson([(0.0, 0.0), (0.5, 0.5), (1.0, 1.0)].into_iter());
        assert!((perfect.expect("r") - 1.0).abs() < 1e-9);
    }
}
