//! `GET /v1/traces/export`: the traces matching the list's filters as CSV
//! or JSONL, written to the response page by page as they are read, so
//! memory stays bounded whatever the size. Rows are capped per plan; a cut
//! export says so in `X-TruLayer-Truncated: true`.

use std::collections::HashMap;
use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::traces::ListQuery;
use super::{AppState, Principal};
use crate::error::AppError;
use crate::model::Trace;
use crate::store::now_micros;

/// Columns, in the reference's order.
const COLUMNS: [&str; 9] = [
    "id",
    "project_id",
    "model",
    "environment",
    "status",
    "duration_ms",
    "token_count",
    "cost_usd",
    "created_at",
];
/// Traces read per page.
const PAGE: usize = 500;

static TRUNCATED: HeaderName = HeaderName::from_static("x-trulayer-truncated");

/// The format of an export.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    Csv,
    Jsonl,
}

impl Format {
    /// The `format` parameter: `csv` (the default) or `jsonl`.
    pub(super) fn of(params: &HashMap<String, String>) -> Result<Format, AppError> {
        match params.get("format").map(String::as_str) {
            None | Some("csv") => Ok(Format::Csv),
            Some("jsonl") => Ok(Format::Jsonl),
            Some(_) => Err(AppError::bad_request("format: must be csv or jsonl")),
        }
    }
}

/// Exports the traces the filters select, as CSV or JSON lines, streamed.
#[utoipa::path(get, path = "/v1/traces/export", operation_id = "exportTraces", tag = "traces", responses((status = 200, description = "OK")))]
pub async fn export(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, AppError> {
    let format = Format::of(&params)?;
    let query = ListQuery::parse(&params)?;
    let mut filter = query.filter;
    if let Some(reference) = query.project {
        match state
            .store
            .find_project(principal.tenant_id, reference)
            .await?
        {
            Some(project) => filter.project_id = Some(project.id),
            None => return Err(AppError::NotFound("project")),
        }
    }
    let cap = state.config.plans.limits(principal.plan).export_max_rows;
    // The header goes out before the rows: find out first whether the cap
    // cuts the export (only capped plans pay for this).
    let truncated = cap > 0 && {
        let mut seen = 0u64;
        let mut cursor = None;
        loop {
            let page = state
                .store
                .list_traces(principal.tenant_id, filter.clone(), cursor, 1000)
                .await?;
            seen += page.traces.len() as u64;
            if seen > cap {
                break true;
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => break false,
            }
        }
    };
    let limit = if cap > 0 { cap } else { u64::MAX };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let store = state.store.clone();
    let tenant_id = principal.tenant_id;
    tokio::spawn(async move {
        if format == Format::Csv {
            let _ = tx
                .send(Bytes::from(format!("{}\n", COLUMNS.join(","))))
                .await;
        }
        let mut sent = 0u64;
        let mut cursor = None;
        while sent < limit {
            let take = PAGE.min((limit - sent) as usize);
            let page = match store
                .list_traces(tenant_id, filter.clone(), cursor, take)
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    // The status is sent; ending the body early is all that is left.
                    tracing::error!(error = %e, "trace export failed");
                    return;
                }
            };
            let mut chunk = String::with_capacity(page.traces.len() * 160);
            for trace in &page.traces {
                write_row(&mut chunk, trace, format);
            }
            sent += page.traces.len() as u64;
            // A client that went away ends the export.
            if tx.send(Bytes::from(chunk)).await.is_err() {
                return;
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => return,
            }
        }
    });
    Ok(streamed(rx, format, "traces", truncated))
}

/// The response of an export whose chunks arrive on `rx`: its type, a
/// dated file name (`<stem>-YYYY-MM-DD.<csv|jsonl>`) and, when the plan's
/// cap cut it, `X-TruLayer-Truncated: true`.
pub(super) fn streamed(
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    format: Format,
    stem: &str,
    truncated: bool,
) -> Response {
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, Infallible>(chunk), rx))
    }));
    let (content_type, extension) = match format {
        Format::Csv => ("text/csv; charset=utf-8", "csv"),
        Format::Jsonl => ("application/x-ndjson", "jsonl"),
    };
    let day = chrono::DateTime::from_timestamp_micros(now_micros())
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default();
    let disposition = format!("attachment; filename=\"{stem}-{day}.{extension}\"");
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(CONTENT_DISPOSITION, value);
    }
    if truncated {
        headers.insert(TRUNCATED.clone(), HeaderValue::from_static("true"));
    }
    response
}

/// The trace's environment: its `env` or `environment` tag, else the same
/// key of its metadata.
fn environment(trace: &Trace) -> Option<String> {
    trace
        .tag_map
        .get("env")
        .or_else(|| trace.tag_map.get("environment"))
        .cloned()
        .or_else(|| {
            let metadata: serde_json::Value = serde_json::from_str(trace.metadata.get()).ok()?;
            metadata
                .get("environment")
                .or_else(|| metadata.get("env"))
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        })
}

fn write_row(out: &mut String, t: &Trace, format: Format) {
    let status = if t.error.is_some() { "error" } else { "ok" };
    let created_at = t.created_at.to_rfc3339();
    let environment = environment(t);
    match format {
        Format::Jsonl => {
            let row = json!({
                "id": t.id,
                "project_id": t.project_id,
                "model": t.model,
                "environment": environment,
                "status": status,
                "duration_ms": t.latency_ms,
                "token_count": t.total_token_count,
                "cost_usd": t.cost,
                "created_at": created_at,
            });
            out.push_str(&row.to_string());
            out.push('\n');
        }
        Format::Csv => {
            let fields = [
                t.id.clone(),
                t.project_id.clone(),
                t.model.clone().unwrap_or_default(),
                environment.unwrap_or_default(),
                status.to_owned(),
                t.latency_ms.map(|v| v.to_string()).unwrap_or_default(),
                t.total_token_count.to_string(),
                t.cost.map(|v| v.to_string()).unwrap_or_default(),
                created_at,
            ];
            for (i, field) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                csv_field(out, field);
            }
            out.push('\n');
        }
    }
}

/// A CSV field, quoted when it holds a comma, quote or line break.
pub(super) fn csv_field(out: &mut String, field: &str) {
    if field.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&field.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(field);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        let mut out = String::new();
        super::csv_field(&mut out, "plain");
        out.push('|');
        super::csv_field(&mut out, "a,\"b\"\nc");
        assert_eq!(out, "plain|\"a,\"\"b\"\"\nc\"");
    }
}
