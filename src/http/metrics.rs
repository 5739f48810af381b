//! `GET /v1/metrics`: counts, error rate, latency percentiles, cost and
//! tokens for a window (default: the last 24 hours), for the tenant or one
//! project, with a per-model breakdown, the good-feedback rate, and time
//! buckets for charts (`interval=1m|1h|1d`).

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::query::{ApiQuery, ProjectParam, TimeWindow};
use super::{AppState, Principal};
use crate::error::{AppError, ErrorBody};
use crate::model::Timestamp;
use crate::store::{now_micros, MetricsQuery, Totals};

const DAY: i64 = 86_400_000_000;
/// Buckets per response, at most.
const MAX_BUCKETS: i64 = 10_000;

/// The width of the time buckets: a minute, an hour or a day.
#[derive(Clone, Copy, ToSchema)]
pub enum Interval {
    #[schema(rename = "1m")]
    Minute,
    #[schema(rename = "1h")]
    Hour,
    #[schema(rename = "1d")]
    Day,
}

impl Interval {
    fn micros(self) -> i64 {
        match self {
            Interval::Minute => 60_000_000,
            Interval::Hour => 3_600_000_000,
            Interval::Day => DAY,
        }
    }
}

impl<'de> Deserialize<'de> for Interval {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match String::deserialize(d)?.as_str() {
            "1m" => Ok(Interval::Minute),
            "1h" => Ok(Interval::Hour),
            "1d" => Ok(Interval::Day),
            _ => Err(serde::de::Error::custom("must be 1m, 1h or 1d")),
        }
    }
}

/// The window and the buckets.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MetricsParams {
    /// Adds `buckets`, one per interval of the window (at most 10,000).
    #[param(inline)]
    interval: Option<Interval>,
    #[serde(flatten)]
    #[param(ignore)]
    window: TimeWindow,
}

/// Aggregate metrics: volume, error rate, latency percentiles, cost and tokens.
///
/// For a window (`from` defaults to 24 hours before `to`, `to` to now), of
/// the organisation or one project, with a per-model breakdown, the rate
/// of good feedback, and with `interval` time buckets for charts.
#[utoipa::path(
    get,
    path = "/v1/metrics",
    operation_id = "getMetrics",
    tag = "metrics",
    params(MetricsParams, ProjectParam, TimeWindow),
    responses(
        (status = 200, description = "The window's figures.", body = MetricsResponse),
        (status = 404, description = "`not_found`: the caller's organisation has no project `project_id`.", body = ErrorBody),
    )
)]
pub async fn metrics(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<MetricsParams>,
    ApiQuery(project): ApiQuery<ProjectParam>,
) -> Result<Json<MetricsResponse>, AppError> {
    let to = params.window.to.unwrap_or_else(now_micros);
    let from = params.window.from.unwrap_or(to - DAY);
    if to < from {
        return Err(AppError::bad_request("to: must not be before from"));
    }
    let interval = params.interval.map(Interval::micros);
    if let Some(width) = interval {
        if (to - from) / width > MAX_BUCKETS {
            return Err(AppError::bad_request(format!(
                "interval: at most {MAX_BUCKETS} buckets per window"
            )));
        }
    }
    let project_id = project.resolve(&state, &principal).await?;
    let result = state
        .store
        .metrics(
            principal.tenant_id,
            MetricsQuery {
                project_id,
                from,
                to,
                interval,
            },
        )
        .await?;
    Ok(Json(MetricsResponse {
        totals: MetricsTotals::of(&result.total),
        from: Timestamp(from),
        to: Timestamp(to),
        models: result
            .by_model
            .iter()
            .map(|(model, t)| ModelMetrics {
                model: (!model.is_empty()).then(|| model.clone()),
                traces: t.traces,
                errors: t.errors,
                cost: t.cost,
                tokens: t.tokens,
            })
            .collect(),
        feedback_good_rate: (result.feedback_total > 0)
            .then(|| result.feedback_good as f64 / result.feedback_total as f64),
        buckets: interval.map(|_| {
            result
                .buckets
                .iter()
                .map(|(start, t)| MetricsBucket {
                    totals: MetricsTotals::of(t),
                    start: Timestamp(*start),
                })
                .collect()
        }),
    }))
}

/// The figures of a window.
#[derive(Serialize, ToSchema)]
pub struct MetricsResponse {
    #[serde(flatten)]
    totals: MetricsTotals,
    /// The window's start.
    #[schema(value_type = String, format = DateTime)]
    from: Timestamp,
    /// The window's end.
    #[schema(value_type = String, format = DateTime)]
    to: Timestamp,
    /// The figures of each model.
    models: Vec<ModelMetrics>,
    /// The share of the window's feedback labelled `good`, 0–1; null
    /// when there is none.
    feedback_good_rate: Option<f64>,
    /// With `interval`: the figures of each interval that has traces,
    /// oldest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    buckets: Option<Vec<MetricsBucket>>,
}

/// The figures of one model.
#[derive(Serialize, ToSchema)]
pub struct ModelMetrics {
    /// The model; null for traces without one.
    model: Option<String>,
    traces: i64,
    errors: i64,
    /// Cost in USD.
    cost: f64,
    tokens: i64,
}

/// The figures of one interval.
#[derive(Serialize, ToSchema)]
pub struct MetricsBucket {
    #[serde(flatten)]
    totals: MetricsTotals,
    /// The interval's start.
    #[schema(value_type = String, format = DateTime)]
    start: Timestamp,
}

/// Counts, error rate, latency percentiles, cost and tokens.
#[derive(Serialize, ToSchema)]
pub struct MetricsTotals {
    total_traces: i64,
    error_count: i64,
    /// Fraction 0–1; null when total_traces = 0.
    error_rate: Option<f64>,
    /// Latency percentiles in milliseconds; null when there are no traces.
    p50_latency_ms: Option<f64>,
    p95_latency_ms: Option<f64>,
    p99_latency_ms: Option<f64>,
    /// Cost in USD.
    total_cost: f64,
    total_tokens: i64,
}

impl MetricsTotals {
    fn of(t: &Totals) -> MetricsTotals {
        MetricsTotals {
            total_traces: t.traces,
            error_count: t.errors,
            error_rate: (t.traces > 0).then(|| t.errors as f64 / t.traces as f64),
            p50_latency_ms: t.latency.quantile(0.50),
            p95_latency_ms: t.latency.quantile(0.95),
            p99_latency_ms: t.latency.quantile(0.99),
            total_cost: t.cost,
            total_tokens: t.tokens,
        }
    }
}
