//! `GET /health`: liveness, answered without touching the database, with
//! the evaluation queue's depth as last measured.
//! `GET /ready`: whether the server can take traffic: the writer commits,
//! the schema is current, the disk is neither low nor full and the size cap
//! is not reached; each check is named in the body.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::model::Timestamp;
use crate::store::{now_micros, StoreError};

/// The server is up.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    #[schema(example = "ok")]
    status: &'static str,
    /// The server's clock.
    #[schema(value_type = String, format = DateTime)]
    time: Timestamp,
    /// The server's version.
    version: &'static str,
    /// The database schema's version.
    schema_version: i64,
    eval_queue: EvalQueue,
}

/// The evaluation queue, as last measured.
#[derive(Serialize, ToSchema)]
pub struct EvalQueue {
    /// Evaluations waiting to run.
    pending: u64,
    /// Evaluations running now.
    running: u64,
    /// How long the oldest waiting one has waited.
    oldest_pending_seconds: f64,
    /// New traces the evaluation rules have yet to look at.
    auto_backlog_traces: u64,
}

/// Liveness: the server is up, with its version.
///
/// Answered without touching the database; the evaluation queue's figures
/// are as last measured.
#[utoipa::path(
    get,
    path = "/health",
    operation_id = "getHealth",
    tag = "service",
    responses((status = 200, description = "The server is up.", body = Health))
)]
pub async fn health(State(state): State<AppState>) -> Json<Health> {
    use std::sync::atomic::Ordering::Relaxed;
    // As the runner last measured it: no database read here.
    let queue = &state.evals.stats;
    Json(Health {
        status: "ok",
        time: Timestamp(now_micros()),
        version: env!("CARGO_PKG_VERSION"),
        schema_version: state.store.schema_version(),
        eval_queue: EvalQueue {
            pending: queue.pending.load(Relaxed),
            running: queue.running.load(Relaxed),
            oldest_pending_seconds: queue.oldest_pending_ms.load(Relaxed) as f64 / 1000.0,
            auto_backlog_traces: queue.auto_backlog.load(Relaxed),
        },
    })
}

/// Whether the server can take traffic, check by check.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// Every check is `ok`.
    ready: bool,
    /// `ok`, or why the database writer cannot commit.
    #[schema(example = "ok")]
    database: String,
    /// The database schema's version.
    schema_version: i64,
    /// `ok`, `low` (less than a tenth of the file system, or 256 MiB, is
    /// free) or `full` (new data is refused).
    #[schema(example = "ok")]
    disk: &'static str,
    /// Free bytes on the database's file system, when known.
    disk_free_bytes: Option<u64>,
    /// `ok`, or `full` when the database is at `storage.max_db_size`.
    #[schema(example = "ok")]
    storage: &'static str,
    /// Bytes the database takes.
    db_used_bytes: u64,
}

/// Readiness: whether the database, the disk and the evaluation queue can take work.
///
/// 200 when every check passes; otherwise 503 with the same body, saying
/// which check fails. For load balancers and systemd.
#[utoipa::path(
    get,
    path = "/ready",
    operation_id = "getReadiness",
    tag = "service",
    responses(
        (status = 200, description = "Ready: every check passes.", body = Readiness),
        (status = 503, description = "Not ready: the checks that fail say so.", body = Readiness),
    )
)]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let writer = match tokio::time::timeout(Duration::from_secs(5), state.store.ping_writer()).await
    {
        // The writer answered; its group failed for want of space, which
        // the disk check names.
        Ok(Ok(())) | Ok(Err(StoreError::DiskFull(_))) => "ok".to_string(),
        Ok(Err(e)) => format!("the writer failed: {e}"),
        Err(_) => "the writer did not answer within 5 s".to_string(),
    };
    let disk = state.space.disk();
    // Full: new data is refused (less than the reserve is free), or the
    // last write failed for want of space. Low: less than a tenth of the
    // file system, or 256 MiB, is free.
    let disk_check = match disk {
        _ if state.store.disk_full() => "full",
        Some(d) if d.is_full() => "full",
        Some(d) if d.is_low() => "low",
        _ => "ok",
    };
    // Measured here as well: without a cap nothing else measures it.
    let used = match state.store.space().await {
        Ok(space) => space.used_bytes,
        Err(_) => state.space.used(),
    };
    let storage = if state.space.at_cap() { "full" } else { "ok" };
    let ready = writer == "ok" && disk_check == "ok" && storage == "ok";
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Readiness {
            ready,
            database: writer,
            schema_version: state.store.schema_version(),
            disk: disk_check,
            disk_free_bytes: disk.map(|d| d.free),
            storage,
            db_used_bytes: used,
        }),
    )
}
