//! The one ingest service behind `POST /v1/ingest`, `/v1/ingest/batch` and
//! `/v1/otlp/traces`: whatever the wire format, traces are admitted (room on
//! the disk and under the cap, the monthly quota), given their projects,
//! stored by the caller's store call, then counted and announced on the live
//! feed, after the commit and only for traces that are new.
//!
//! A trace's model, times, latency, tokens and cost come from its spans by
//! one rule, [`crate::model::Aggregates`], for both formats; what a JSON
//! trace states itself (the SDK sends them) comes first.

use std::collections::HashMap;

use super::limits::check_monthly_quota;
use super::live::LiveTrace;
use super::{AppState, Principal};
use crate::error::AppError;

/// What the document says of the 403 a trace sent to an archived project gets.
pub(super) const ARCHIVED: &str =
    "`error.project.archived`: the project the traces are sent to is archived";

/// A trace the request created, as the counters and the live feed see it.
pub use crate::store::CreatedTrace as Created;

/// Refuses `traces` new traces before anything is decoded further or
/// stored: a full disk or database (507), the plan's monthly quota (429).
pub async fn admit(state: &AppState, principal: &Principal, traces: usize) -> Result<(), AppError> {
    state.space.check()?;
    check_monthly_quota(state, principal, traces as u64).await
}

/// Gives each trace its project: the one its reference (id, slug or name)
/// names in the caller's organisation, else the key's own; an archived
/// project refuses ingest (403). Each reference is looked up once.
pub async fn with_projects<T>(
    state: &AppState,
    principal: &Principal,
    traces: Vec<(Option<String>, T)>,
) -> Result<Vec<(i64, T)>, AppError> {
    let mut projects: HashMap<Option<String>, i64> = HashMap::new();
    let mut placed = Vec::with_capacity(traces.len());
    for (reference, trace) in traces {
        let project_id = match projects.get(&reference) {
            Some(id) => *id,
            None => {
                let id = resolve_project(state, principal, reference.as_deref()).await?;
                projects.insert(reference, id);
                id
            }
        };
        placed.push((project_id, trace));
    }
    Ok(placed)
}

/// After the commit: counts the traces the request created and the spans
/// it stored, and announces each new trace on the live feed.
pub fn committed(state: &AppState, principal: &Principal, created: &[Created], spans: u64) {
    state.metrics.record_ingest(created.len() as u64, spans);
    if state.live.listening() {
        for trace in created {
            state
                .live
                .publish(LiveTrace::of(principal.tenant_id, trace));
        }
    }
}

/// The project a reference names in the caller's organisation, else the
/// key's own.
async fn resolve_project(
    state: &AppState,
    principal: &Principal,
    reference: Option<&str>,
) -> Result<i64, AppError> {
    let project = state
        .store
        .project_for_ingest(
            principal.tenant_id,
            reference.filter(|r| !r.is_empty()).map(str::to_owned),
            principal.project_id,
        )
        .await?
        .ok_or(AppError::Internal(
            "the API key's project is missing".into(),
        ))?;
    if project.archived {
        return Err(AppError::Forbidden {
            message: "error.project.archived".into(),
            code: "error.project.archived",
        });
    }
    Ok(project.id)
}
