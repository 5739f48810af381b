//! Summaries of evaluation scores: `GET /v1/eval/trends`, `/histogram`,
//! `/compare` and `/agreement`.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::eval_params::{self, summary_window, MetricParam, RequiredMetric};
use super::query::{ApiQuery, ProjectParam, TimeWindow};
use super::{AppState, Principal};
use crate::error::{AppError, ErrorBody};
use crate::model::Timestamp;

const HOUR: i64 = 3_600_000_000;
const DAY: i64 = 24 * HOUR;
/// Buckets per trends response, at most.
const MAX_TREND_BUCKETS: i64 = 10_000;

/// The project a summary is about: required.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SummaryProject {
    /// The project: its id, slug or name.
    #[param(required = true)]
    project_id: Option<String>,
}

impl SummaryProject {
    /// The project's internal id; a 400 when none is named, a 404 when the
    /// caller's organisation has no such project.
    async fn resolve(self, state: &AppState, principal: &Principal) -> Result<i64, AppError> {
        ProjectParam {
            project_id: self.project_id,
        }
        .resolve(state, principal)
        .await?
        .ok_or_else(|| AppError::bad_request("project_id: is required"))
    }
}

/// A summary's 404.
const NO_PROJECT: &str = "`not_found`: the caller's organisation has no project `project_id`.";

/// `GET /v1/eval/trends`'s parameters besides the metric.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TrendsQuery {
    /// A bucket's width: `1h`, `6h`, `1d` or `7d`. Left out, the widest
    /// that gives about a hundred buckets or fewer.
    #[serde(default, deserialize_with = "bucket")]
    #[param(value_type = Option<String>, pattern = "^(1h|6h|1d|7d)$")]
    bucket: Option<i64>,
    /// The window; left out, the last 7 days.
    #[serde(flatten)]
    #[param(ignore)]
    window: TimeWindow,
    #[serde(flatten)]
    #[param(ignore)]
    project: SummaryProject,
}

fn bucket<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let width = |raw: &str| match raw {
        "1h" => Some(HOUR),
        "6h" => Some(6 * HOUR),
        "1d" => Some(DAY),
        "7d" => Some(7 * DAY),
        _ => None,
    };
    Option::<String>::deserialize(d)?
        .map(|raw| {
            width(raw.trim()).ok_or_else(|| serde::de::Error::custom("must be 1h, 6h, 1d or 7d"))
        })
        .transpose()
}

/// One bucket of trends (the reference's `EvalTrendBucket`).
#[derive(Serialize, ToSchema)]
#[schema(as = EvalTrendBucket)]
pub struct TrendBucket {
    /// The bucket's start.
    #[schema(value_type = String, format = DateTime)]
    time: Timestamp,
    metric: String,
    /// The mean score of the bucket's complete evaluations.
    avg_score: f64,
    /// How many complete evaluations it holds.
    count: u64,
    /// The share (0 to 1) of them that scored 0.5 or more.
    pass_rate: f64,
}

/// Trends (the reference's `EvalTrendsResponse`).
#[derive(Serialize, ToSchema)]
#[schema(as = EvalTrendsResponse)]
pub struct Trends {
    /// By time, then metric; buckets without evaluations are left out.
    buckets: Vec<TrendBucket>,
}

/// Mean score, count and pass rate per time bucket and metric.
///
/// A pass is a score of 0.5 or more. Over the last 7 days unless `from`
/// and `to` say otherwise.
#[utoipa::path(
    get,
    path = "/v1/eval/trends",
    operation_id = "getEvalTrends",
    tag = "evaluations",
    params(SummaryProject, MetricParam, TimeWindow, TrendsQuery),
    responses(
        (status = 200, description = "The buckets.", body = Trends),
        (status = 404, description = NO_PROJECT, body = ErrorBody),
    )
)]
pub async fn trends(
    State(state): State<AppState>,
    principal: Principal,
    metric: MetricParam,
    ApiQuery(query): ApiQuery<TrendsQuery>,
) -> Result<Json<Trends>, AppError> {
    let project_id = query.project.resolve(&state, &principal).await?;
    let (from, to) = summary_window(query.window, Some(7 * DAY))?;
    // About a hundred buckets or fewer.
    let width = query.bucket.unwrap_or(match to - from {
        span if span <= 4 * DAY => HOUR,
        span if span <= 25 * DAY => 6 * HOUR,
        span if span <= 100 * DAY => DAY,
        _ => 7 * DAY,
    });
    if (to - from) / width > MAX_TREND_BUCKETS {
        return Err(AppError::bad_request(format!(
            "bucket: at most {MAX_TREND_BUCKETS} buckets per window"
        )));
    }
    let buckets = state
        .store
        .eval_trends(
            principal.tenant_id,
            project_id,
            metric.metric,
            from,
            to,
            width,
        )
        .await?
        .into_iter()
        .map(|b| TrendBucket {
            time: Timestamp(b.start),
            pass_rate: rate(b.passed, b.count),
            metric: b.metric,
            avg_score: b.avg_score,
            count: b.count,
        })
        .collect();
    Ok(Json(Trends { buckets }))
}

fn rate(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// `GET /v1/eval/histogram`'s parameters besides the metric.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistogramQuery {
    /// How many equal ranges of [0, 1]: 1 to 100, 10 when left out.
    #[serde(default, deserialize_with = "eval_params::whole::<_, 1, 100>")]
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100, default = 10)]
    buckets: Option<usize>,
    /// The window; left out, all time.
    #[serde(flatten)]
    #[param(ignore)]
    window: TimeWindow,
    #[serde(flatten)]
    #[param(ignore)]
    project: SummaryProject,
}

/// One range of scores (the reference's `EvalHistogramBucket`).
#[derive(Serialize, ToSchema)]
#[schema(as = EvalHistogramBucket)]
pub struct HistogramBucket {
    /// Its lowest score.
    range_start: f64,
    /// Its highest score (excluded, except 1 in the last range).
    range_end: f64,
    /// How many complete evaluations scored in it.
    count: u64,
}

/// A histogram (the reference's `EvalHistogramResponse`).
#[derive(Serialize, ToSchema)]
#[schema(as = EvalHistogramResponse)]
pub struct Histogram {
    metric: String,
    /// From the lowest scores to the highest.
    buckets: Vec<HistogramBucket>,
}

/// How a metric's scores spread over equal ranges of [0, 1].
#[utoipa::path(
    get,
    path = "/v1/eval/histogram",
    operation_id = "getEvalHistogram",
    tag = "evaluations",
    params(SummaryProject, RequiredMetric, TimeWindow, HistogramQuery),
    responses(
        (status = 200, description = "The ranges and their counts.", body = Histogram),
        (status = 404, description = NO_PROJECT, body = ErrorBody),
    )
)]
pub async fn histogram(
    State(state): State<AppState>,
    principal: Principal,
    metric: RequiredMetric,
    ApiQuery(query): ApiQuery<HistogramQuery>,
) -> Result<Json<Histogram>, AppError> {
    let project_id = query.project.resolve(&state, &principal).await?;
    let metric = metric.into_name();
    let (from, to) = summary_window(query.window, None)?;
    let counts = state
        .store
        .eval_histogram(
            principal.tenant_id,
            project_id,
            metric.clone(),
            from,
            to,
            query.buckets.unwrap_or(10),
        )
        .await?;
    let width = 1.0 / counts.len() as f64;
    let buckets = counts
        .iter()
        .enumerate()
        .map(|(i, count)| HistogramBucket {
            range_start: i as f64 * width,
            range_end: if i + 1 == counts.len() {
                1.0
            } else {
                (i + 1) as f64 * width
            },
            count: *count,
        })
        .collect();
    Ok(Json(Histogram { metric, buckets }))
}

/// `GET /v1/eval/compare`'s windows: all four times are required.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CompareQuery {
    /// Start of the baseline window, RFC 3339.
    #[serde(default, deserialize_with = "eval_params::time")]
    #[param(value_type = String, format = DateTime, required = true)]
    baseline_from: Option<i64>,
    /// End of the baseline window, RFC 3339; not before `baseline_from`.
    #[serde(default, deserialize_with = "eval_params::time")]
    #[param(value_type = String, format = DateTime, required = true)]
    baseline_to: Option<i64>,
    /// Start of the candidate window, RFC 3339.
    #[serde(default, deserialize_with = "eval_params::time")]
    #[param(value_type = String, format = DateTime, required = true)]
    candidate_from: Option<i64>,
    /// End of the candidate window, RFC 3339; not before `candidate_from`.
    #[serde(default, deserialize_with = "eval_params::time")]
    #[param(value_type = String, format = DateTime, required = true)]
    candidate_to: Option<i64>,
    #[serde(flatten)]
    #[param(ignore)]
    project: SummaryProject,
}

/// A window's side of `(from, to)`: both given, in order.
fn compare_window(
    (from_name, from): (&str, Option<i64>),
    (to_name, to): (&str, Option<i64>),
) -> Result<(i64, i64), AppError> {
    let from = from.ok_or_else(|| AppError::bad_request(format!("{from_name}: is required")))?;
    let to = to.ok_or_else(|| AppError::bad_request(format!("{to_name}: is required")))?;
    if to < from {
        return Err(AppError::bad_request(format!(
            "{to_name}: must not be before {from_name}"
        )));
    }
    Ok((from, to))
}

/// A metric in one window (the reference's `EvalCompareWindow`).
#[derive(Serialize, ToSchema)]
#[schema(as = EvalCompareWindow)]
pub struct CompareWindow {
    /// The mean score of the window's complete evaluations (0 without any).
    avg_score: f64,
    count: u64,
    /// The share (0 to 1) that scored 0.5 or more.
    pass_rate: f64,
}

impl CompareWindow {
    fn of(s: &crate::store::WindowStats) -> CompareWindow {
        CompareWindow {
            avg_score: s.avg_score,
            count: s.count,
            pass_rate: rate(s.passed, s.count),
        }
    }
}

/// The candidate's change from the baseline (the reference's `EvalCompareDelta`).
#[derive(Serialize, ToSchema)]
#[schema(as = EvalCompareDelta)]
pub struct CompareDelta {
    avg_score: f64,
    pass_rate: f64,
}

/// Two windows compared (the reference's `EvalCompareResponse`).
#[derive(Serialize, ToSchema)]
#[schema(as = EvalCompareResponse)]
pub struct Comparison {
    metric: String,
    baseline: CompareWindow,
    candidate: CompareWindow,
    delta: CompareDelta,
}

/// A metric in a baseline and a candidate window, with the candidate's change.
#[utoipa::path(
    get,
    path = "/v1/eval/compare",
    operation_id = "compareEvalWindows",
    tag = "evaluations",
    params(SummaryProject, RequiredMetric, CompareQuery),
    responses(
        (status = 200, description = "Both windows and the change.", body = Comparison),
        (status = 404, description = NO_PROJECT, body = ErrorBody),
    )
)]
pub async fn compare(
    State(state): State<AppState>,
    principal: Principal,
    metric: RequiredMetric,
    ApiQuery(query): ApiQuery<CompareQuery>,
) -> Result<Json<Comparison>, AppError> {
    let project_id = query.project.resolve(&state, &principal).await?;
    let metric = metric.into_name();
    let baseline = compare_window(
        ("baseline_from", query.baseline_from),
        ("baseline_to", query.baseline_to),
    )?;
    let candidate = compare_window(
        ("candidate_from", query.candidate_from),
        ("candidate_to", query.candidate_to),
    )?;
    let mut stats = Vec::new();
    for (from, to) in [baseline, candidate] {
        stats.push(
            state
                .store
                .eval_window(principal.tenant_id, project_id, metric.clone(), from, to)
                .await?,
        );
    }
    let (b, c) = (&stats[0], &stats[1]);
    Ok(Json(Comparison {
        baseline: CompareWindow::of(b),
        candidate: CompareWindow::of(c),
        delta: CompareDelta {
            avg_score: c.avg_score - b.avg_score,
            pass_rate: rate(c.passed, c.count) - rate(b.passed, b.count),
        },
        metric,
    }))
}

/// How evaluations and people agreed, trace by trace.
#[derive(Serialize, ToSchema)]
#[schema(as = EvalAgreementConfusion)]
pub struct Confusion {
    /// The evaluation passed and people said good.
    eval_pass_human_good: u64,
    /// The evaluation passed and people said bad.
    eval_pass_human_bad: u64,
    /// The evaluation failed and people said good.
    eval_fail_human_good: u64,
    /// The evaluation failed and people said bad.
    eval_fail_human_bad: u64,
}

/// Agreement of a metric with human feedback.
#[derive(Serialize, ToSchema)]
#[schema(as = EvalAgreementResponse)]
pub struct AgreementBody {
    metric: String,
    /// Traces with both feedback and the metric.
    traces: usize,
    /// Those whose people were not neutral: the ones compared.
    compared: u64,
    /// Those whose people were neutral (good and bad in balance).
    neutral: u64,
    /// The share of compared traces where both agreed; null with none.
    agreement_rate: Option<f64>,
    /// Cohen's kappa: agreement beyond chance; null with none compared or
    /// when chance explains everything.
    cohen_kappa: Option<f64>,
    /// Pearson's correlation of the scores with the human values over all
    /// traces; null with fewer than two or no spread.
    pearson: Option<f64>,
    confusion: Confusion,
}

/// How often a metric's evaluations agree with human feedback.
///
/// Over traces with both human feedback and the metric. A trace's human
/// value is the mean of its feedback (good 1, neutral 0.5, bad 0); its
/// score the mean of its evaluations. The evaluation says "good" at a
/// score of 0.5 or more; people say "good" above 0.5 and "bad" below (a
/// tie is neutral and left out of the agreement rate and kappa).
/// `pearson` correlates the scores with the human values over all traces.
#[utoipa::path(
    get,
    path = "/v1/eval/agreement",
    operation_id = "getEvalAgreement",
    tag = "evaluations",
    params(RequiredMetric, ProjectParam, TimeWindow),
    responses(
        (status = 200, description = "The agreement.", body = AgreementBody),
        (status = 404, description = NO_PROJECT, body = ErrorBody),
    )
)]
pub async fn agreement(
    State(state): State<AppState>,
    principal: Principal,
    metric: RequiredMetric,
    ApiQuery(query): ApiQuery<AgreementQuery>,
) -> Result<Json<AgreementBody>, AppError> {
    let metric = metric.into_name();
    let project_id = query.project.resolve(&state, &principal).await?;
    let (from, to) = summary_window(query.window, None)?;
    let pairs = state
        .store
        .eval_agreement(principal.tenant_id, project_id, metric.clone(), from, to)
        .await?;
    let summary = Agreement::of(pairs.iter().map(|p| (p.score, p.human)));
    Ok(Json(AgreementBody {
        metric,
        traces: pairs.len(),
        compared: summary.compared(),
        neutral: summary.neutral,
        agreement_rate: summary.agreement_rate(),
        cohen_kappa: summary.kappa(),
        pearson: summary.pearson,
        confusion: Confusion {
            eval_pass_human_good: summary.pass_good,
            eval_pass_human_bad: summary.pass_bad,
            eval_fail_human_good: summary.fail_good,
            eval_fail_human_bad: summary.fail_bad,
        },
    }))
}

/// `GET /v1/eval/agreement`'s parameters besides the metric.
#[derive(Deserialize)]
pub struct AgreementQuery {
    #[serde(flatten)]
    window: TimeWindow,
    #[serde(flatten)]
    project: ProjectParam,
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
