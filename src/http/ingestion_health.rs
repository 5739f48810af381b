//! `GET /v1/ingestion-health`: how an organisation's ingest is going.
//!
//! Ingest requests (JSON and OTLP) are counted as they finish, by the
//! organisation and project of their key: accepted, or refused with their
//! error code; each accepted trace adds its ingest lag (how long after it
//! ended it was stored) to a sketch. The counts are kept in memory and
//! written by the hour every few seconds ([`spawn_flusher`]); a read adds
//! what is not yet written, so it is always current. A crash loses at most
//! those few seconds of counts, never a trace.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::Json;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use utoipa::{IntoParams, ToSchema};

use super::query::ApiQuery;
use super::{AppState, Principal};
use crate::error::{AppError, ErrorBody, ErrorCode};
use crate::store::{now_micros, HealthCounts, HealthDelta, Store, HOUR};

/// How often counts are written.
const FLUSH_EVERY: Duration = Duration::from_secs(5);
/// Error categories listed, at most.
const TOP_ERRORS: usize = 5;
/// A lag beyond this (a trace sent a month after it ended) counts as this.
const MAX_LAG_MS: i64 = 30 * 86_400_000;

/// Counts not yet written, by (organisation, project, hour).
#[derive(Default)]
pub struct IngestTally {
    pending: Mutex<HashMap<(i64, i64, i64), HealthCounts>>,
}

impl IngestTally {
    fn with(&self, tenant_id: i64, project_id: i64, now: i64, f: impl FnOnce(&mut HealthCounts)) {
        let hour = now - now.rem_euclid(HOUR);
        if let Ok(mut pending) = self.pending.lock() {
            f(pending.entry((tenant_id, project_id, hour)).or_default());
        }
    }

    /// An ingest request finished: accepted, or refused with `code`.
    pub fn request(&self, tenant_id: i64, project_id: i64, refused: Option<&str>) {
        self.with(tenant_id, project_id, now_micros(), |c| match refused {
            None => c.accepted += 1,
            Some(code) => *c.refused.entry(code.to_owned()).or_default() += 1,
        });
    }

    /// Traces were stored at `stored_at`: for each, its project, when it
    /// ended (microseconds), if known, and its spans.
    pub fn stored(&self, tenant_id: i64, stored_at: i64, traces: &[(i64, Option<i64>, usize)]) {
        for &(project_id, ended_at, spans) in traces {
            self.with(tenant_id, project_id, stored_at, |c| {
                c.traces += 1;
                c.spans += spans as i64;
                if let Some(ended_at) = ended_at {
                    c.lag
                        .add((stored_at.saturating_sub(ended_at) / 1000).clamp(0, MAX_LAG_MS));
                }
                c.last_span_at = c.last_span_at.max(Some(stored_at));
            });
        }
    }

    fn take(&self) -> Vec<HealthDelta> {
        let drained = match self.pending.lock() {
            Ok(mut pending) => std::mem::take(&mut *pending),
            Err(_) => return Vec::new(),
        };
        drained
            .into_iter()
            .map(|((tenant_id, project_id, hour), counts)| HealthDelta {
                tenant_id,
                project_id,
                hour,
                counts,
            })
            .collect()
    }

    /// What is not yet written for the organisation (or a project) from
    /// `from_hour` on.
    fn unwritten(&self, tenant_id: i64, project_id: Option<i64>, from_hour: i64) -> HealthCounts {
        let mut total = HealthCounts::default();
        if let Ok(pending) = self.pending.lock() {
            for ((t, p, hour), counts) in pending.iter() {
                if *t == tenant_id && *hour >= from_hour && project_id.is_none_or(|id| id == *p) {
                    total.add(counts);
                }
            }
        }
        total
    }

    /// Writes what was counted; on failure the counts are put back.
    async fn flush(&self, store: &Store) {
        let deltas = self.take();
        if deltas.is_empty() {
            return;
        }
        if let Err(e) = store.add_ingest_health(deltas.clone(), now_micros()).await {
            tracing::warn!(error = %e, "writing ingestion health failed; kept for the next try");
            if let Ok(mut pending) = self.pending.lock() {
                for d in deltas {
                    pending
                        .entry((d.tenant_id, d.project_id, d.hour))
                        .or_default()
                        .add(&d.counts);
                }
            }
        }
    }
}

/// Writes the counts every few seconds.
pub fn spawn_flusher(store: Arc<Store>, tally: Arc<IngestTally>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            tally.flush(&store).await;
        }
    })
}

/// Writes what is counted now (at a clean stop).
pub async fn flush_now(store: &Store, tally: &IngestTally) {
    tally.flush(store).await;
}

/// Filled by the `Principal` extractor on ingest routes: whose request it is.
#[derive(Clone, Default)]
pub struct IngestSlot(Arc<Mutex<Option<(i64, i64)>>>);

impl IngestSlot {
    pub fn set(&self, tenant_id: i64, project_id: i64) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some((tenant_id, project_id));
        }
    }

    fn get(&self) -> Option<(i64, i64)> {
        self.0.lock().ok().and_then(|slot| *slot)
    }
}

/// Counts each ingest request by how it ended, once its caller is known.
pub async fn count_ingest(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if !(path.starts_with("/v1/ingest") || path.starts_with("/v1/otlp/")) {
        return next.run(req).await;
    }
    let slot = IngestSlot::default();
    req.extensions_mut().insert(slot.clone());
    let response = next.run(req).await;
    if let Some((tenant_id, project_id)) = slot.get() {
        let refused = (!response.status().is_success()).then(|| {
            response
                .extensions()
                .get::<ErrorCode>()
                .map_or("request_refused", |c| c.0)
        });
        state.ingest_tally.request(tenant_id, project_id, refused);
    }
    response
}

/// A window of the report.
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
pub enum Window {
    #[serde(rename = "1h")]
    Hour,
    #[default]
    #[serde(rename = "24h")]
    Day,
    #[serde(rename = "7d")]
    Week,
}

impl Window {
    fn name(self) -> &'static str {
        match self {
            Window::Hour => "1h",
            Window::Day => "24h",
            Window::Week => "7d",
        }
    }

    fn hours(self) -> i64 {
        match self {
            Window::Hour => 1,
            Window::Day => 24,
            Window::Week => 7 * 24,
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HealthQuery {
    /// Only this project (its id, slug or name); omitted: the whole organisation.
    project_id: Option<String>,
    /// `1h`, `24h` (the default) or `7d`, ending now.
    #[param(value_type = Option<String>, example = "24h")]
    window: Option<Window>,
}

/// One error category and how many traces carried it.
#[derive(Serialize, ToSchema)]
#[schema(as = IngestionHealthTopError)]
pub struct TopError {
    /// The first 64 characters of the error's shape: its failure cluster's
    /// message, numbers, ids and quoted values masked (as in
    /// `GET /v1/failures/clusters`).
    category: String,
    count: i64,
}

/// Dead letters: what gave up waiting.
#[derive(Serialize, ToSchema)]
#[schema(as = IngestionHealthDLQDepth)]
pub struct DeadLetters {
    /// Always 0: ingest is synchronous, a trace is stored or refused (and
    /// counted under `requests.refused`), never parked.
    traces: i64,
    /// Evaluations queued in the window that gave up after their attempts.
    evals: i64,
}

/// Ingest lag percentiles, in milliseconds: how long after a trace ended
/// it was stored (an SDK's batching and the network included).
#[derive(Serialize, ToSchema)]
#[schema(as = IngestionHealthLag)]
pub struct Lag {
    p50: i64,
    p95: i64,
    p99: i64,
}

/// Ingest requests in the window.
#[derive(Serialize, ToSchema)]
pub struct IngestRequests {
    accepted: i64,
    refused: i64,
    /// Accepted ÷ all; 1.0 with no requests.
    success_rate: f64,
    /// Refusals by error code, most first (`rate_limited`,
    /// `validation_error`, `payload_too_large`, `quota_exceeded`, …).
    refused_by_code: Vec<RefusalCount>,
}

#[derive(Serialize, ToSchema)]
pub struct RefusalCount {
    code: String,
    count: i64,
}

/// Work waiting behind ingest.
#[derive(Serialize, ToSchema)]
pub struct Backlog {
    /// The organisation's evaluations waiting or running.
    evals: i64,
    /// Traces of the whole server not yet in the full-text index.
    search_index: u64,
}

/// The report (the reference's `IngestionHealthResponse`).
#[derive(Serialize, ToSchema)]
#[schema(as = IngestionHealthResponse)]
pub struct IngestionHealth {
    /// The id of the project asked for (named by id, slug or name);
    /// absent for the whole organisation.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = "uuid")]
    project_id: Option<String>,
    #[schema(example = "24h")]
    window: &'static str,
    /// Fraction 0–1 of the window's traces without an error (by start
    /// time); 1.0 with no traffic.
    success_rate: f64,
    /// Fraction 0–1 of the window's traces with an error.
    error_rate: f64,
    /// The window's most frequent failures, by failure cluster.
    top_errors: Vec<TopError>,
    dlq_depth: DeadLetters,
    ingest_lag_ms: Lag,
    #[schema(value_type = Option<String>, format = DateTime)]
    last_successful_span_at: Option<crate::model::Timestamp>,
    /// 0: this server does not redact.
    redaction_match_count: i64,
    /// Traces and spans stored in the window.
    traces_received: i64,
    spans_received: i64,
    requests: IngestRequests,
    backlog: Backlog,
}

/// The organisation's ingest health over a window.
///
/// Trace error rates and the top error texts come from the traces that
/// started in the window; requests, lag and the last span from ingest
/// requests that finished in it (counted by the hour: the window starts at
/// the top of its first hour).
#[utoipa::path(
    get,
    path = "/v1/ingestion-health",
    operation_id = "getIngestionHealth",
    tag = "metrics",
    params(HealthQuery),
    responses(
        (status = 200, description = "The report.", body = IngestionHealth),
        (status = 404, description = "`not_found`: the caller's organisation has no project `project_id`.", body = ErrorBody),
    )
)]
pub async fn report(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<HealthQuery>,
) -> Result<Json<IngestionHealth>, AppError> {
    let named = match &query.project_id {
        None => None,
        Some(reference) => Some(
            state
                .store
                .find_project(principal.tenant_id, reference.clone())
                .await?
                .ok_or(AppError::NotFound("project"))?,
        ),
    };
    let project = named.as_ref().map(|p| p.id);
    let window = query.window.unwrap_or_default();
    let to = now_micros();
    let from = to - window.hours() * HOUR;
    let from_hour = from - from.rem_euclid(HOUR);
    let tenant = principal.tenant_id;
    let store = &state.store;
    let totals = store
        .metrics(
            tenant,
            crate::store::MetricsQuery {
                project_id: project,
                from,
                to,
                interval: None,
            },
        )
        .await?
        .total;
    let mut counts = store.ingest_health(tenant, project, from_hour).await?;
    counts.add(&state.ingest_tally.unwritten(tenant, project, from_hour));
    let top_errors = store
        .top_trace_errors(tenant, project, from, to, TOP_ERRORS)
        .await?
        .into_iter()
        .map(|(category, count)| TopError { category, count })
        .collect();
    let backlogs = store.ingest_backlogs(tenant, project, from).await?;
    let error_rate = if totals.traces > 0 {
        totals.errors as f64 / totals.traces as f64
    } else {
        0.0
    };
    let refused: i64 = counts.refused.values().sum();
    let mut refused_by_code: Vec<RefusalCount> = counts
        .refused
        .into_iter()
        .map(|(code, count)| RefusalCount { code, count })
        .collect();
    refused_by_code.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.code.cmp(&b.code)));
    let all = counts.accepted + refused;
    let lag = |q: f64| counts.lag.quantile(q).map_or(0, |v| v.round() as i64);
    Ok(Json(IngestionHealth {
        project_id: named.map(|p| p.uuid),
        window: window.name(),
        success_rate: 1.0 - error_rate,
        error_rate,
        top_errors,
        dlq_depth: DeadLetters {
            traces: 0,
            evals: backlogs.evals_failed,
        },
        ingest_lag_ms: Lag {
            p50: lag(0.5),
            p95: lag(0.95),
            p99: lag(0.99),
        },
        last_successful_span_at: counts.last_span_at.map(crate::model::Timestamp),
        redaction_match_count: 0,
        traces_received: counts.traces,
        spans_received: counts.spans,
        requests: IngestRequests {
            accepted: counts.accepted,
            refused,
            success_rate: if all > 0 {
                counts.accepted as f64 / all as f64
            } else {
                1.0
            },
            refused_by_code,
        },
        backlog: Backlog {
            evals: backlogs.evals_pending,
            search_index: backlogs.search_index,
        },
    }))
}
