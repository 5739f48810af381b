//! `GET /v1/traces/live`: Server-Sent Events, one `LiveTraceEvent` per new
//! trace of the caller's tenant (optionally one project), with heartbeat
//! comments. Events go through a bounded broadcast channel: a client that
//! falls behind is told how many it missed (`event: missed`) and carries on,
//! so a slow client never makes the server buffer without bound.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Serialize;
use tokio::sync::broadcast;

use super::query::{ApiQuery, ProjectParam};
use super::{AppState, Principal};
use crate::error::{AppError, ErrorBody};
use crate::model::Timestamp;

/// Events held for slow clients before they start missing some.
const BACKLOG: usize = 1024;

/// A new trace, for the live feed.
#[derive(Debug, Clone)]
pub struct LiveTrace {
    pub tenant_id: i64,
    pub project_id: i64,
    /// The event's JSON, as sent to every listener.
    pub event: String,
}

/// A new trace, as a live feed's `data:` frame holds it.
#[derive(Serialize)]
pub struct LiveTraceEvent {
    trace_id: String,
    /// The trace's name; empty when it has none.
    name: String,
    /// `ok` or `error`.
    status: &'static str,
    /// The trace's latency; 0 when it has none.
    latency_ms: i64,
    created_at: Timestamp,
}

/// A frame of `event: missed`: the client fell behind.
#[derive(Serialize)]
struct Missed {
    /// How many events it missed.
    missed: u64,
}

impl LiveTrace {
    /// The event of a trace that ingest created.
    pub fn of(tenant_id: i64, trace: &super::intake::Created) -> LiveTrace {
        let event = LiveTraceEvent {
            trace_id: trace.id.clone(),
            name: trace.name.clone().unwrap_or_default(),
            status: if trace.error { "error" } else { "ok" },
            latency_ms: trace.latency_ms.unwrap_or(0),
            created_at: Timestamp(trace.created_at),
        };
        LiveTrace {
            tenant_id,
            project_id: trace.project_id,
            event: serde_json::to_string(&event).unwrap_or_default(),
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

/// Streams new traces as server-sent events.
///
/// Each new trace of the caller's organisation (of one project, with
/// `project_id`) is a `data:` frame holding a JSON `LiveTraceEvent`
/// (`trace_id`, `name`, `status`, `latency_ms`, `created_at`). A comment
/// line every 15 seconds keeps the connection open. A client that falls
/// behind gets an `event: missed` frame saying how many events it missed
/// (`{"missed": 3}`) and carries on. The stream stays open until the
/// client disconnects.
#[utoipa::path(
    get,
    path = "/v1/traces/live",
    operation_id = "liveTraceFeed",
    tag = "traces",
    params(ProjectParam),
    responses(
        (
            status = 200,
            description = "The stream of server-sent events: each `data:` frame a JSON `LiveTraceEvent`, each `event: missed` frame a JSON `{\"missed\": n}`.",
            content_type = "text/event-stream",
            body = String,
            example = "data: {\"trace_id\":\"0190f5c2-8a4e-7c3b-9d1e-2f6a7b8c9d0e\",\"name\":\"chat\",\"status\":\"ok\",\"latency_ms\":412,\"created_at\":\"2026-01-02T03:04:05.678901Z\"}\n\n",
        ),
        (status = 404, description = "`not_found`: the caller's organisation has no project `project_id`.", body = ErrorBody),
    )
)]
pub async fn live(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(project): ApiQuery<ProjectParam>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AppError> {
    let project_id = project.resolve(&state, &principal).await?;
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
                    let event = Event::default().data(&trace.event);
                    return Some((Ok(event), rx));
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    let event = Event::default()
                        .event("missed")
                        .data(serde_json::to_string(&Missed { missed }).unwrap_or_default());
                    return Some((Ok(event), rx));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
