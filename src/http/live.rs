//! `GET /v1/traces/live`: Server-Sent Events, one `LiveTraceEvent` per new
//! trace of the caller's tenant (optionally one project), with heartbeat
//! comments. Events go through a bounded broadcast channel: a client that
//! falls behind is told how many it missed (`event: missed`) and carries on,
//! so a slow client never makes the server buffer without bound.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::{project_param, AppState, Principal};
use crate::error::AppError;

/// Events held for slow clients before they start missing some.
const BACKLOG: usize = 1024;

/// A new trace, for the live feed.
#[derive(Debug, Clone)]
pub struct LiveTrace {
    pub tenant_id: i64,
    pub project_id: i64,
    /// The `LiveTraceEvent` JSON.
    pub event: Value,
}

impl LiveTrace {
    /// The event of a trace that ingest created.
    pub fn of(tenant_id: i64, trace: &super::intake::Created) -> LiveTrace {
        LiveTrace {
            tenant_id,
            project_id: trace.project_id,
            event: json!({
                "trace_id": trace.id,
                "name": trace.name.clone().unwrap_or_default(),
                "status": if trace.error { "error" } else { "ok" },
                "latency_ms": trace.latency_ms.unwrap_or(0),
                "created_at": crate::model::Timestamp(trace.created_at),
            }),
        }
    }
}

/// Where ingest announces new traces.
pub struct LiveHub {
    tx: broadcast::Sender<Arc<LiveTrace>>,
}

impl Default for LiveHub {
    fn default() -> Self {
        LiveHub {
            tx: broadcast::channel(BACKLOG).0,
        }
    }
}

impl LiveHub {
    /// Whether anyone is listening (so ingest can skip building events).
    pub fn listening(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// Announces a trace; nobody listening is fine.
    pub fn publish(&self, trace: LiveTrace) {
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(Arc::new(trace));
        }
    }
}

/// New traces as they arrive, as a stream of server-sent events.
#[utoipa::path(get, path = "/v1/traces/live", operation_id = "liveTraceFeed", tag = "traces", responses((status = 200, description = "OK")))]
pub async fn live(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AppError> {
    let project_id = project_param(&state, &principal, &params).await?;
    let tenant_id = principal.tenant_id;
    let rx = state.live.tx.subscribe();
    let stream = futures_util::stream::unfold(rx, move |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(trace) => {
                    if trace.tenant_id != tenant_id
                        || project_id.is_some_and(|p| p != trace.project_id)
                    {
                        continue;
                    }
                    let event = Event::default().data(trace.event.to_string());
                    return Some((Ok(event), rx));
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    let event = Event::default()
                        .event("missed")
                        .data(json!({ "missed": missed }).to_string());
                    return Some((Ok(event), rx));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
