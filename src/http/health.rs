//! Liveness: answers without touching the database.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::AppState;
use crate::model::Timestamp;
use crate::store::now_micros;

pub async fn health(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "time": Timestamp(now_micros()),
        "version": env!("CARGO_PKG_VERSION"),
        "schema_version": state.store.schema_version(),
    }))
}
