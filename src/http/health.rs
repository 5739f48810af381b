//! `GET /health`: liveness, answered without touching the database, with
//! the evaluation queue's depth as last measured.
//! `GET /ready`: whether the server can take traffic: the writer commits,
//! the schema is current, the disk has room and the size cap is not reached.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::AppState;
use crate::model::Timestamp;
use crate::store::now_micros;

pub async fn health(State(state): State<AppState>) -> Json<Value> {
    use std::sync::atomic::Ordering::Relaxed;
    // As the runner last measured it: no database read here.
    let queue = &state.evals.stats;
    Json(json!({
        "status": "ok",
        "time": Timestamp(now_micros()),
        "version": env!("CARGO_PKG_VERSION"),
        "schema_version": state.store.schema_version(),
        "eval_queue": {
            "pending": queue.pending.load(Relaxed),
            "running": queue.running.load(Relaxed),
            "oldest_pending_seconds": queue.oldest_pending_ms.load(Relaxed) as f64 / 1000.0,
            "auto_backlog_traces": queue.auto_backlog.load(Relaxed),
        },
    }))
}

/// Free space below which the server is not ready: room for the WAL to
/// grow to its bound and a checkpoint to follow.
pub const MIN_FREE_DISK: u64 = 256 * 1024 * 1024;

pub async fn ready(State(state): State<AppState>) -> Response {
    let writer = match tokio::time::timeout(Duration::from_secs(5), state.store.ping_writer()).await
    {
        Ok(Ok(())) => "ok".to_string(),
        Ok(Err(e)) => format!("the writer failed: {e}"),
        Err(_) => "the writer did not answer within 5 s".to_string(),
    };
    let free = disk_free(&state.config.storage.data_dir);
    let disk = match free {
        Some(f) if f < MIN_FREE_DISK => "low",
        _ => "ok",
    };
    let storage = if state.space.check().is_err() {
        "full"
    } else {
        "ok"
    };
    let ready = writer == "ok" && disk == "ok" && storage == "ok";
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "ready": ready,
        "database": writer,
        "schema_version": state.store.schema_version(),
        "disk": disk,
        "disk_free_bytes": free,
        "storage": storage,
        "db_used_bytes": state.space.used(),
    });
    (status, Json(body)).into_response()
}

/// Bytes an unprivileged process may still write where `dir` lives.
fn disk_free(dir: &std::path::Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(dir).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}
