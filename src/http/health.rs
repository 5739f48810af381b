//! `GET /health`: liveness, answered without touching the database, with
//! the evaluation queue's depth as last measured.
//! `GET /ready`: whether the server can take traffic: the writer commits,
//! the schema is current, the disk is neither low nor full and the size cap
//! is not reached; each check is named in the body.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::AppState;
use crate::model::Timestamp;
use crate::store::{now_micros, StoreError};

/// Liveness: the server is up, with its version.
#[utoipa::path(get, path = "/health", operation_id = "getHealth", tag = "service", responses((status = 200, description = "OK")))]
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

/// Readiness: 200 when the database, the disk and the evaluation queue can take work, else 503 saying which cannot.
#[utoipa::path(get, path = "/ready", operation_id = "getReadiness", tag = "service", responses((status = 200, description = "OK")))]
pub async fn ready(State(state): State<AppState>) -> Response {
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
    let body = json!({
        "ready": ready,
        "database": writer,
        "schema_version": state.store.schema_version(),
        "disk": disk_check,
        "disk_free_bytes": disk.map(|d| d.free),
        "storage": storage,
        "db_used_bytes": used,
    });
    (status, Json(body)).into_response()
}
