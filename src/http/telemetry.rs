//! The server's own metrics in the Prometheus text format (OpenMetrics), at
//! `GET /metrics`: requests and their latency by route and status, traces
//! and spans ingested, the writer's groups, jobs, commit time and queue,
//! the search index's backlog, and the database's size.
//!
//! It is served on the main listener when `[metrics] token` is set (the
//! scraper sends it as a bearer token), and on its own plain-HTTP listener,
//! without a token, when `[metrics] listen` is set (keep that on loopback or
//! a management network). With neither, `/metrics` is not served.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::AppState;
use crate::error::AppError;
use crate::store::Store;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

/// What the HTTP layer counts, and the registry that encodes it.
#[derive(Debug)]
pub struct ServerMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    traces: Counter,
    spans: Counter,
    /// What the listener counts of connections.
    pub connections: ConnectionMetrics,
    /// When the last request was answered, in ms since `started`.
    last_request_ms: std::sync::atomic::AtomicU64,
    started: std::time::Instant,
}

/// Connections: open now, closed at once past `server.max_connections`,
/// and accepts that failed (out of file descriptors and the like).
#[derive(Debug, Clone, Default)]
pub struct ConnectionMetrics {
    pub open: Gauge,
    pub refused: Counter,
    pub accept_errors: Counter,
}

impl ServerMetrics {
    pub fn new(
        store: Arc<Store>,
        data_dir: std::path::PathBuf,
        evals: Arc<crate::eval::queue::EvalQueue>,
        webhooks: &crate::webhooks::SenderMetrics,
    ) -> ServerMetrics {
        let mut registry = Registry::with_prefix("trulayer");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route and status",
            requests.clone(),
        );
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register(
            "http_request_duration_seconds",
            "Time to answer a request (to the response head), by method and route",
            latency.clone(),
        );
        let traces = Counter::default();
        registry.register(
            "ingested_traces",
            "Traces stored by JSON and OTLP ingest (new or merged)",
            traces.clone(),
        );
        let spans = Counter::default();
        registry.register(
            "ingested_spans",
            "Spans stored by JSON and OTLP ingest",
            spans.clone(),
        );
        let connections = ConnectionMetrics::default();
        registry.register(
            "connections_open",
            "Client connections open now",
            connections.open.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections closed as they arrived because server.max_connections were open",
            connections.refused.clone(),
        );
        registry.register(
            "accept_errors",
            "Connections the listener failed to accept (out of file descriptors and the like)",
            connections.accept_errors.clone(),
        );
        registry.register(
            "webhook_deliveries_delivered",
            "Webhook deliveries the endpoint accepted (2xx)",
            webhooks.delivered.clone(),
        );
        registry.register(
            "webhook_delivery_failures",
            "Webhook delivery attempts that failed (not 2xx, unreachable or refused)",
            webhooks.failed_attempts.clone(),
        );
        registry.register(
            "webhook_deliveries_given_up",
            "Webhook deliveries given up after webhooks.retry_for_h",
            webhooks.given_up.clone(),
        );
        registry.register(
            "webhook_deliveries_in_flight",
            "Webhook delivery attempts being sent now",
            webhooks.in_flight.clone(),
        );
        registry.register_collector(Box::new(StoreCollector { store, data_dir }));
        registry.register_collector(Box::new(EvalCollector(evals)));
        ServerMetrics {
            registry,
            requests,
            latency,
            traces,
            spans,
            connections,
            last_request_ms: Default::default(),
            started: std::time::Instant::now(),
        }
    }

    /// How long since the last request other than a probe was answered (or
    /// the server started).
    pub fn idle_for(&self) -> Duration {
        let last = self
            .last_request_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        self.started
            .elapsed()
            .saturating_sub(Duration::from_millis(last))
    }

    /// Counts one answered request. `route` is the matched route pattern,
    /// never the raw path, so ids do not make new series.
    pub fn record_request(&self, method: &str, route: &str, status: u16, took: Duration) {
        // Probes do not make the server busy.
        if !matches!(route, "/health" | "/ready" | "/metrics") {
            let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.last_request_ms
                .store(now, std::sync::atomic::Ordering::Relaxed);
        }
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                method: method.to_owned(),
                route: route.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// Counts what one ingest request stored.
    pub fn record_ingest(&self, traces: u64, spans: u64) {
        self.traces.inc_by(traces);
        self.spans.inc_by(spans);
    }

    fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Encodes each `(name, help, metric)`.
fn encode_all<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    metrics: impl IntoIterator<Item = (&'static str, &'static str, M)>,
) -> Result<(), std::fmt::Error> {
    for (name, help, metric) in metrics {
        metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)?;
    }
    Ok(())
}

/// A histogram kept as counts per bucket of fixed bounds.
struct Buckets<'a> {
    name: &'static str,
    help: &'static str,
    bounds: &'a [u64],
    /// Multiplies a bound into the histogram's unit.
    scale: f64,
    /// Per bucket, then one above every bound.
    counts: &'a [u64],
    sum: f64,
}

/// Reads the store's figures at each scrape.
struct StoreCollector {
    store: Arc<Store>,
    data_dir: std::path::PathBuf,
}

impl std::fmt::Debug for StoreCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreCollector")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let w = self.store.writer_stats();
        let counters: [(&str, &str, u64); 5] = [
            (
                "writer_groups",
                "Transactions the writer committed, each holding one or more requests' writes",
                w.groups,
            ),
            ("writer_jobs", "Requests' writes the writer ran", w.jobs),
            (
                "writer_retried_groups",
                "Groups run again one job at a time because a job failed",
                w.retried_groups,
            ),
            (
                "writer_commit_microseconds",
                "Time spent committing, in microseconds",
                w.commit_micros,
            ),
            (
                "checkpoint_passes",
                "WAL checkpoint passes copying committed pages into the database file",
                self.store.checkpoint_passes(),
            ),
        ];
        encode_all(
            &mut encoder,
            counters.map(|(name, help, v)| (name, help, ConstCounter::new(v))),
        )?;
        // Histograms of commit time (seconds) and group size (jobs).
        let histograms = [
            Buckets {
                name: "writer_commit_seconds",
                help: "Time each group's COMMIT took",
                bounds: &crate::store::COMMIT_MICROS_BOUNDS,
                scale: 1e-6,
                counts: &w.commit_buckets,
                sum: w.commit_micros as f64 * 1e-6,
            },
            Buckets {
                name: "writer_group_jobs",
                help: "Requests' writes committed together in one group",
                bounds: &crate::store::GROUP_JOBS_BOUNDS,
                scale: 1.0,
                counts: &w.group_buckets,
                sum: w.jobs as f64,
            },
        ];
        for h in histograms {
            let buckets: Vec<(f64, u64)> = h
                .bounds
                .iter()
                .map(|b| *b as f64 * h.scale)
                .chain(std::iter::once(f64::INFINITY))
                .zip(h.counts.iter().copied())
                .collect();
            let mut metric = encoder.encode_descriptor(
                h.name,
                h.help,
                None,
                prometheus_client::metrics::MetricType::Histogram,
            )?;
            metric.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                h.sum,
                h.counts.iter().sum(),
                &buckets,
                None,
            )?;
        }
        let file = |name: &str| {
            std::fs::metadata(self.data_dir.join(name))
                .map(|m| m.len() as i64)
                .unwrap_or(0)
        };
        let db = crate::store::DB_FILE;
        let gauges: [(&str, &str, i64); 4] = [
            (
                "writer_queue",
                "Writes waiting for the writer now",
                w.queued as i64,
            ),
            (
                "compression_dictionaries",
                "Dictionaries the texts of traces and spans are compressed with, over all \
                 organisations",
                self.store.dictionaries() as i64,
            ),
            ("database_bytes", "Size of the database file", file(db)),
            (
                "wal_bytes",
                "Size of the write-ahead log beside the database",
                file(&format!("{db}-wal")),
            ),
        ];
        encode_all(
            &mut encoder,
            gauges.map(|(name, help, v)| (name, help, ConstGauge::new(v))),
        )?;
        Ok(())
    }
}

/// Reads the evaluation queue's figures at each scrape.
#[derive(Debug)]
struct EvalCollector(Arc<crate::eval::queue::EvalQueue>);

impl Collector for EvalCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use std::sync::atomic::Ordering::Relaxed;
        let s = &self.0.stats;
        let counters: [(&str, &str, u64); 10] = [
            (
                "evaluations_completed",
                "Evaluations that finished with a score",
                s.completed.load(Relaxed),
            ),
            (
                "evaluations_failed",
                "Evaluations that failed (the reason is on the evaluation)",
                s.failed.load(Relaxed),
            ),
            (
                "evaluation_retries",
                "Attempts the judge's 429, 5xx or timeouts put off to retry",
                s.retried.load(Relaxed),
            ),
            (
                "auto_evaluations_queued",
                "Evaluations queued by auto-evaluation rules",
                s.auto_queued.load(Relaxed),
            ),
            (
                "auto_evaluations_over_quota",
                "Auto-evaluations not queued because a monthly cap was reached",
                s.auto_over_quota.load(Relaxed),
            ),
            (
                "judge_requests",
                "Requests sent to the LLM judge",
                s.judge_calls.load(Relaxed),
            ),
            (
                "run_items_completed",
                "Dataset run items scored",
                s.run_items_completed.load(Relaxed),
            ),
            (
                "run_items_failed",
                "Dataset run items that failed (the reason is on the item)",
                s.run_items_failed.load(Relaxed),
            ),
            (
                "run_item_retries",
                "Dataset run items a model's or judge's 429, 5xx or timeout put off to retry",
                s.run_item_retries.load(Relaxed),
            ),
            (
                "model_requests",
                "Requests sent to the model endpoint for dataset run answers",
                s.model_calls.load(Relaxed),
            ),
        ];
        encode_all(
            &mut encoder,
            counters.map(|(name, help, v)| (name, help, ConstCounter::new(v))),
        )?;
        encode_all(
            &mut encoder,
            [
                (
                    "judge_request_seconds",
                    "Time spent waiting for the LLM judge",
                    ConstCounter::new(s.judge_micros.load(Relaxed) as f64 / 1e6),
                ),
                (
                    "model_request_seconds",
                    "Time spent waiting for the model endpoint",
                    ConstCounter::new(s.model_micros.load(Relaxed) as f64 / 1e6),
                ),
            ],
        )?;
        let gauges: [(&str, &str, f64); 5] = [
            (
                "run_items_in_flight",
                "Dataset run items being worked on now",
                s.run_items_in_flight.load(Relaxed) as f64,
            ),
            (
                "eval_auto_backlog_traces",
                "Traces stored that the auto-evaluation rules have not looked at yet",
                s.auto_backlog.load(Relaxed) as f64,
            ),
            (
                "eval_queue_pending",
                "Evaluations waiting to run (including retries not yet due)",
                s.pending.load(Relaxed) as f64,
            ),
            (
                "eval_queue_running",
                "Evaluations running now",
                s.running.load(Relaxed) as f64,
            ),
            (
                "eval_queue_oldest_pending_seconds",
                "Age of the oldest waiting evaluation",
                s.oldest_pending_ms.load(Relaxed) as f64 / 1000.0,
            ),
        ];
        encode_all(
            &mut encoder,
            gauges.map(|(name, help, v)| (name, help, ConstGauge::new(v))),
        )?;
        Ok(())
    }
}

/// The server's own metrics, for Prometheus.
///
/// Served on the main listener only with `[metrics] token` set, which the
/// scraper sends as `Authorization: Bearer …`; a separate listener
/// (`[metrics] listen`) serves them without a token.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "getPrometheusMetrics",
    tag = "service",
    responses(
        (status = 200, description = "The metrics in the OpenMetrics text format.", content_type = "application/openmetrics-text"),
        (status = 401, description = "`invalid_metrics_token`: the bearer token is not `[metrics] token`.", body = crate::error::ErrorBody),
        (status = 404, description = "`not_found`: no `[metrics] token` is set, so the main listener does not serve metrics.", body = crate::error::ErrorBody),
    )
)]
pub async fn main_listener(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(expected) = state
        .config
        .metrics
        .token
        .as_deref()
        .filter(|t| !t.is_empty())
    else {
        return AppError::Status {
            status: StatusCode::NOT_FOUND,
            message: "metrics are served here only with a `[metrics] token` set".into(),
        }
        .into_response();
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let matches: bool = subtle::ConstantTimeEq::ct_eq(given.as_bytes(), expected.as_bytes()).into();
    if !matches {
        return AppError::Unauthorized("invalid_metrics_token").into_response();
    }
    exposition(&state)
}

/// `GET /metrics` on the metrics listener: no token.
pub async fn own_listener(State(state): State<AppState>) -> Response {
    exposition(&state)
}

fn exposition(state: &AppState) -> Response {
    match state.metrics.encode() {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            )],
            text,
        )
            .into_response(),
        Err(_) => AppError::Internal("encoding the metrics failed".into()).into_response(),
    }
}
