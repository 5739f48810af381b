//! Sessions: the traces that share a `session_id`, most recently active
//! first. No table of its own: a session is listed at its latest trace, found
//! by walking traces newest first and keeping those with no newer trace in
//! their session (one probe of the session index each).

use rusqlite::types::Value as SqlValue;
use rusqlite::{params, Connection};

use super::traces::{trace_from_row, TraceCursor, TRACE_COLUMNS};
use super::{Result, Store};
use crate::model::Trace;

/// One session's totals.
#[derive(Debug, Clone)]
pub struct SessionSummary {
    pub id: String,
    pub traces: i64,
    pub tokens: i64,
    pub cost: Option<f64>,
    pub errors: i64,
    pub first_at: i64,
    pub last_at: i64,
}

pub struct SessionPage {
    pub sessions: Vec<SessionSummary>,
    /// Where the next page starts: after this session's latest trace.
    pub next: Option<TraceCursor>,
}

/// The most traces a session's detail returns.
pub const MAX_SESSION_TRACES: usize = 1000;

impl Store {
    pub async fn list_sessions(
        &self,
        tenant_id: i64,
        project_id: Option<i64>,
        after: Option<TraceCursor>,
        limit: usize,
    ) -> Result<SessionPage> {
        self.read(move |conn| list(conn, tenant_id, project_id, after, limit))
            .await
    }

    /// The session's traces in the order they started.
    pub async fn session_traces(&self, tenant_id: i64, session_id: String) -> Result<Vec<Trace>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {TRACE_COLUMNS} FROM traces t JOIN projects p ON p.id = t.project_id \
                 WHERE t.tenant_id = ?1 AND t.session_id = ?2 \
                 ORDER BY t.started_at, t.seq LIMIT {MAX_SESSION_TRACES}"
            ))?;
            let mut rows = stmt.query(params![tenant_id, session_id])?;
            let mut traces = Vec::new();
            while let Some(r) = rows.next()? {
                traces.push(trace_from_row(r)?);
            }
            Ok(traces)
        })
        .await
    }
}

fn list(
    conn: &Connection,
    tenant_id: i64,
    project_id: Option<i64>,
    after: Option<TraceCursor>,
    limit: usize,
) -> Result<SessionPage> {
    let project = if project_id.is_some() {
        " AND t.project_id = ?4 AND n.project_id = ?4"
    } else {
        ""
    };
    let after = after.unwrap_or(TraceCursor {
        started_at: i64::MAX,
        seq: i64::MAX,
    });
    let sql = format!(
        "SELECT t.session_id, t.started_at, t.seq FROM traces t \
         WHERE t.tenant_id = ?1 AND t.session_id IS NOT NULL AND (t.started_at, t.seq) < (?2, ?3) \
         AND NOT EXISTS (SELECT 1 FROM traces n WHERE n.tenant_id = t.tenant_id \
             AND n.session_id = t.session_id AND (n.started_at, n.seq) > (t.started_at, t.seq){project}) \
         {} ORDER BY t.started_at DESC, t.seq DESC LIMIT {}",
        if project_id.is_some() {
            "AND t.project_id = ?4"
        } else {
            ""
        },
        limit + 1
    );
    let mut args: Vec<SqlValue> = vec![tenant_id.into(), after.started_at.into(), after.seq.into()];
    if let Some(p) = project_id {
        args.push(p.into());
    }
    let mut stmt = conn.prepare_cached(&sql)?;
    let latest: Vec<(String, i64, i64)> = stmt
        .query_map(rusqlite::params_from_iter(args), |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let has_more = latest.len() > limit;
    let mut sessions = Vec::with_capacity(limit);
    let mut totals = conn.prepare_cached(&format!(
        "SELECT count(*), coalesce(sum(total_token_count), 0), sum(cost), \
         sum(error IS NOT NULL), min(started_at), max(coalesce(ended_at, started_at)) \
         FROM traces t WHERE tenant_id = ?1 AND session_id = ?2{}",
        if project_id.is_some() {
            " AND t.project_id = ?3"
        } else {
            ""
        }
    ))?;
    let mut next = None;
    for (id, started_at, seq) in latest.into_iter().take(limit) {
        let read = |r: &rusqlite::Row<'_>| {
            Ok(SessionSummary {
                id: id.clone(),
                traces: r.get(0)?,
                tokens: r.get(1)?,
                cost: r.get(2)?,
                errors: r.get(3)?,
                first_at: r.get(4)?,
                last_at: r.get(5)?,
            })
        };
        let summary = match project_id {
            Some(p) => totals.query_row(params![tenant_id, id, p], read)?,
            None => totals.query_row(params![tenant_id, id], read)?,
        };
        sessions.push(summary);
        next = Some(TraceCursor { started_at, seq });
    }
    Ok(SessionPage {
        sessions,
        next: if has_more { next } else { None },
    })
}
