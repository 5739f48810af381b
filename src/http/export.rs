//! `GET /v1/traces/export`: the traces matching the list's filters as CSV
//! or JSONL, written to the response page by page as they are read, so
//! memory stays bounded whatever the size. Rows are capped per plan; a cut
//! export says so in `X-TruLayer-Truncated: true`.

use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

use super::download::{csv_field, streamed, Format};
use super::query::{ApiQuery, ProjectParam, TimeWindow};
use super::trace_filter::TraceQuery;
use super::{AppState, Principal};
use crate::error::AppError;
use crate::model::Trace;

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

/// The export's own parameter.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ExportQuery {
    /// `csv` (the default) or `jsonl`.
    #[param(inline, default = "csv")]
    format: Option<Format>,
}

/// Streams traces as CSV or JSONL.
///
/// The traces the same filters as `GET /v1/traces` select, newest first,
/// written to the response as they are read, never buffered. Rows are
/// capped per plan; a cut export says so in `X-TruLayer-Truncated: true`
/// and is complete up to that row.
///
/// CSV columns (in order): `id, project_id, model, environment, status,
/// duration_ms, token_count, cost_usd, created_at`. JSONL: one JSON object
/// per line with the same keys.
#[utoipa::path(
    get,
    path = "/v1/traces/export",
    operation_id = "exportTraces",
    tag = "traces",
    params(ExportQuery, ProjectParam, TraceQuery, TimeWindow),
    responses(
        (
            status = 200,
            description = "The traces as CSV (`text/csv; charset=utf-8`) or JSON lines (`application/x-ndjson`), streamed.",
            headers(
                ("X-TruLayer-Truncated" = bool, description = "Present and `true` when the plan's row cap cut the export and more rows exist."),
                ("Content-Disposition" = String, description = "A file name of `traces-YYYY-MM-DD.csv` or `.jsonl`."),
            ),
            content(
                (String = "text/csv", example = "id,project_id,model,environment,status,duration_ms,token_count,cost_usd,created_at\n"),
                (String = "application/x-ndjson"),
            ),
        ),
        (status = 400, description = "`bad_request`: a query parameter does not fit (the message names it); `error.tags_filter_incomplete`: `tag_key` or `tag_value` alone.", body = crate::error::ErrorBody),
        (status = 404, description = "`not_found`: the caller's organisation has no project `project_id`.", body = crate::error::ErrorBody),
    )
)]
pub async fn export(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(ExportQuery { format }): ApiQuery<ExportQuery>,
    ApiQuery(project): ApiQuery<ProjectParam>,
    ApiQuery(query): ApiQuery<TraceQuery>,
) -> Result<Response, AppError> {
    let format = format.unwrap_or_default();
    let mut filter = query.filter()?;
    filter.project_id = project.resolve(&state, &principal).await?;
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

/// One line of a JSONL export (a CSV row has the same columns).
#[derive(Serialize)]
struct ExportRow<'a> {
    id: &'a str,
    project_id: &'a str,
    model: Option<&'a str>,
    environment: Option<&'a str>,
    /// `ok` or `error`.
    status: &'a str,
    duration_ms: Option<i64>,
    token_count: i64,
    cost_usd: Option<f64>,
    created_at: &'a str,
}

fn write_row(out: &mut String, t: &Trace, format: Format) {
    let status = if t.error.is_some() { "error" } else { "ok" };
    let created_at = t.created_at.to_rfc3339();
    let environment = environment(t);
    match format {
        Format::Jsonl => {
            let row = ExportRow {
                id: &t.id,
                project_id: &t.project_id,
                model: t.model.as_deref(),
                environment: environment.as_deref(),
                status,
                duration_ms: t.latency_ms,
                token_count: t.total_token_count,
                cost_usd: t.cost,
                created_at: &created_at,
            };
            if let Ok(line) = serde_json::to_string(&row) {
                out.push_str(&line);
                out.push('\n');
            }
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
