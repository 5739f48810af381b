//! `GET /v1/metrics`: counts, error rate, latency percentiles, cost and
//! tokens for a window (default: the last 24 hours), for the tenant or one
//! project, with a per-model breakdown, the good-feedback rate, and time
//! buckets for charts (`interval=1m|1h|1d`).

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::Json;
use serde_json::{json, Value};

use super::{project_param, AppState, Principal};
use crate::error::AppError;
use crate::ingest::parse_time;
use crate::model::Timestamp;
use crate::store::{now_micros, MetricsQuery, Totals};

const DAY: i64 = 86_400_000_000;
/// Buckets per response, at most.
const MAX_BUCKETS: i64 = 10_000;

/// Trace volume, latency percentiles, cost, tokens and errors per interval over a time window.
#[utoipa::path(get, path = "/v1/metrics", operation_id = "getMetrics", tag = "metrics", responses((status = 200, description = "OK")))]
pub async fn metrics(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, AppError> {
    let time = |name: &str| -> Result<Option<i64>, AppError> {
        params
            .get(name)
            .map(|raw| {
                parse_time(raw).ok_or_else(|| {
                    AppError::bad_request(format!(
                        "{name}: must be an RFC 3339 time such as 2026-01-02T03:04:05Z"
                    ))
                })
            })
            .transpose()
    };
    let to = time("to")?.unwrap_or_else(now_micros);
    let from = time("from")?.unwrap_or(to - DAY);
    if to < from {
        return Err(AppError::bad_request("to: must not be before from"));
    }
    let interval = match params.get("interval").map(String::as_str) {
        None => None,
        Some("1m") => Some(60_000_000),
        Some("1h") => Some(3_600_000_000),
        Some("1d") => Some(DAY),
        Some(_) => return Err(AppError::bad_request("interval: must be 1m, 1h or 1d")),
    };
    if let Some(width) = interval {
        if (to - from) / width > MAX_BUCKETS {
            return Err(AppError::bad_request(format!(
                "interval: at most {MAX_BUCKETS} buckets per window"
            )));
        }
    }
    let project_id = project_param(&state, &principal, &params).await?;
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
    let mut body = totals_json(&result.total);
    body["from"] = json!(Timestamp(from));
    body["to"] = json!(Timestamp(to));
    body["models"] = result
        .by_model
        .iter()
        .map(|(model, t)| {
            json!({
                "model": (!model.is_empty()).then_some(model),
                "traces": t.traces,
                "errors": t.errors,
                "cost": t.cost,
                "tokens": t.tokens,
            })
        })
        .collect();
    body["feedback_good_rate"] = if result.feedback_total > 0 {
        json!(result.feedback_good as f64 / result.feedback_total as f64)
    } else {
        Value::Null
    };
    if interval.is_some() {
        body["buckets"] = result
            .buckets
            .iter()
            .map(|(start, t)| {
                let mut b = totals_json(t);
                b["start"] = json!(Timestamp(*start));
                b
            })
            .collect();
    }
    Ok(Json(body))
}

fn totals_json(t: &Totals) -> Value {
    json!({
        "total_traces": t.traces,
        "error_count": t.errors,
        "error_rate": (t.traces > 0).then(|| t.errors as f64 / t.traces as f64),
        "p50_latency_ms": t.latency.quantile(0.50),
        "p95_latency_ms": t.latency.quantile(0.95),
        "p99_latency_ms": t.latency.quantile(0.99),
        "total_cost": t.cost,
        "total_tokens": t.tokens,
    })
}
