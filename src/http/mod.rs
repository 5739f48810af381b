//! The HTTP API and the admin page (`ui`). `router` lists every route and
//! layer; each resource has its own file; handlers take the `Principal`
//! extractor and call the store.

mod account;
mod anomalies;
mod audit;
pub mod budget;
mod ci_gate;
mod datasets;
mod download;
mod dsr;
mod eval_keys;
mod eval_params;
mod eval_rules;
mod eval_runs;
mod eval_summaries;
mod eval_versions;
mod evals;
mod export;
mod extract;
mod failure_rules;
mod failures;
mod feedback;
mod governance;
mod health;
mod ingest;
pub mod ingestion_health;
mod intake;
mod limits;
mod live;
mod login_guard;
mod metrics;
pub mod openapi;
mod otlp;
mod principal;
mod projects;
pub mod query;
pub mod router;
mod run_diff;
mod saved_filters;
mod search;
mod sessions;
pub mod telemetry;
mod trace_filter;
mod traces;
mod ui;
mod webhooks;

use std::sync::Arc;

use crate::config::Config;
use crate::pricing::Pricing;
use crate::store::Store;

pub use extract::parse_json;
pub use principal::{Credential, Principal, Role};
pub use trace_filter::ListQuery;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    pub config: Arc<Config>,
    /// Served over TLS: session cookies are `Secure`.
    pub tls: bool,
    pub logins: Arc<login_guard::LoginGuard>,
    pub key_touches: Arc<principal::KeyTouches>,
    pub rates: Arc<limits::RateLimiter>,
    /// Model prices, for spans with tokens but no cost.
    pub pricing: Arc<Pricing>,
    /// New traces, for `GET /v1/traces/live`.
    pub live: Arc<live::LiveHub>,
    /// Room for more data: the cap (`storage.max_db_size`) and the disk.
    pub space: Arc<crate::upkeep::SpaceGauge>,
    /// What `/metrics` reports.
    pub metrics: Arc<telemetry::ServerMetrics>,
    /// The evaluation queue's runner and figures.
    pub evals: Arc<crate::eval::queue::EvalQueue>,
    /// Request bodies in memory, against `limits.request_memory_max_bytes`.
    pub bodies: Arc<budget::BodyBudget>,
    /// The API's OpenAPI document, serialized once.
    pub openapi: axum::body::Bytes,
    /// Sends webhook deliveries and test pings.
    pub webhooks: Arc<crate::webhooks::Sender>,
    /// Ingest requests counted by how they ended, not yet written.
    pub ingest_tally: Arc<ingestion_health::IngestTally>,
    /// Seals organisations' judge keys; none without `[encryption]`.
    pub sealer: Option<Arc<crate::secrets::SecretBox>>,
    /// Wakes the privacy worker when a data subject request is made.
    pub dsr: Arc<tokio::sync::Notify>,
}

impl AppState {
    pub fn new(store: Arc<Store>, config: Arc<Config>, tls: bool) -> AppState {
        let evals = Arc::new(crate::eval::queue::EvalQueue::default());
        // The key was read and checked with the rest of the configuration.
        let sealer = config.encryption.secret_box().ok().flatten().map(Arc::new);
        let webhooks = Arc::new(crate::webhooks::Sender::new(
            &config.webhooks,
            sealer.clone(),
        ));
        AppState {
            sealer,
            ingest_tally: Arc::default(),
            metrics: Arc::new(telemetry::ServerMetrics::new(
                store.clone(),
                config.storage.data_dir.clone(),
                evals.clone(),
                &webhooks.metrics,
            )),
            webhooks,
            evals,
            bodies: Arc::new(budget::BodyBudget::new(
                config.limits.request_memory_max_bytes,
            )),
            pricing: Arc::new(Pricing::new(&config.pricing)),
            space: Arc::new(crate::upkeep::SpaceGauge::new(store.clone())),
            store,
            config,
            tls,
            logins: Arc::default(),
            key_touches: Arc::default(),
            rates: Arc::default(),
            live: Arc::default(),
            dsr: Arc::default(),
            openapi: serde_json::to_vec(&router::api_document())
                .map(Into::into)
                .unwrap_or_default(),
        }
    }
}

/// Runs CPU-bound request work (decoding or encoding megabytes of JSON) on
/// the blocking pool, so the async threads stay free to answer.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, crate::error::AppError> + Send + 'static,
) -> Result<T, crate::error::AppError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| crate::error::AppError::Internal(format!("request task failed: {e}")))?
}
