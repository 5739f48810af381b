//! Evaluations: `POST /v1/eval` queues one (202), `GET /v1/eval` lists,
//! `GET /v1/eval/{id}` shows one, `GET /v1/eval/export` streams them, and
//! `trends`, `histogram`, `compare` and `agreement` summarise scores.
//! `GET /v1/eval-catalog` lists the presets, without credentials.

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
use crate::model::{Evaluation, Timestamp};
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
const HOUR: i64 = 3_600_000_000;
const DAY: i64 = 24 * HOUR;
/// Buckets per trends response, at most.
const MAX_TREND_BUCKETS: i64 = 10_000;

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
fn param<T>(
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

fn time(params: &HashMap<String, String>, name: &str) -> Result<Option<i64>, AppError> {
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

/// A required, non-empty metric name.
fn metric(params: &HashMap<String, String>, required: bool) -> Result<Option<String>, AppError> {
    match params.get("metric") {
        Some(m) if m.is_empty() => Err(AppError::bad_request("metric: must not be empty")),
        Some(m) => Ok(Some(m.clone())),
        None if required => Err(AppError::bad_request("metric: is required")),
        None => Ok(None),
    }
}

/// `from` and `to`, in order, with defaults.
fn window(
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
        metric: metric(params, false)?,
        from,
        to,
        score_min,
        score_max,
        before: None,
        limit,
    })
}

/// `GET /v1/eval`: `{"evals": [...]}`, newest first.
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
pub async fn trends(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, AppError> {
    let project_id = required_project(&state, &principal, &params).await?;
    let metric = metric(&params, false)?;
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
pub async fn histogram(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, AppError> {
    let project_id = required_project(&state, &principal, &params).await?;
    let Some(metric) = metric(&params, true)? else {
        return Err(AppError::bad_request("metric: is required"));
    };
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
pub async fn compare(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, AppError> {
    let project_id = required_project(&state, &principal, &params).await?;
    let Some(metric) = metric(&params, true)? else {
        return Err(AppError::bad_request("metric: is required"));
    };
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
pub async fn agreement(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, AppError> {
    let Some(metric) = metric(&params, true)? else {
        return Err(AppError::bad_request("metric: is required"));
    };
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

/// `GET /v1/eval-catalog`: the presets; public and cacheable.
pub async fn catalog() -> Response {
    let mut response = Json(crate::eval::catalog::catalog_json()).into_response();
    response.headers_mut().insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    response
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
