//! Sessions: the traces that share a `session_id`, most recently active
//! first. No table of its own: a session is listed at its latest trace, found
//! by walking traces newest first and keeping those with no newer trace in
//! their session (one probe of the session index each, and a look at the
//! entries waiting for it: see `session_lookup`).

use rusqlite::types::Value as SqlValue;
use rusqlite::{params, Connection};

use super::page::PageBytes;
use super::session_lookup::{pending_by_session, ARMS};
use super::traces::{listed_trace_from_row, TraceCursor, TRACE_COLUMNS};
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
        self.read(move |conn| {
            // One snapshot: the waiting entries, the index and the traces
            // are read as of one moment.
            let snapshot = conn.unchecked_transaction()?;
            let page = list(&snapshot, tenant_id, project_id, after, limit)?;
            snapshot.commit()?;
            Ok(page)
        })
        .await
    }

    /// The session's traces in the order they started, as many as one page
    /// holds (see `page`); true when more were left out.
    pub async fn session_traces(
        &self,
        tenant_id: i64,
        session_id: String,
    ) -> Result<(Vec<Trace>, bool)> {
        self.read(move |conn| traces_of(conn, tenant_id, &session_id))
            .await
    }
}

/// A session's first [`MAX_SESSION_TRACES`] traces in the order they
/// started, as many as one page holds: from the session index and the
/// entries not merged into it yet. True when more were left out.
pub(super) fn traces_of(
    conn: &Connection,
    tenant_id: i64,
    session_id: &str,
) -> Result<(Vec<Trace>, bool)> {
    let arm = |source: &str| {
        format!(
            "SELECT {TRACE_COLUMNS}, g.started_at AS k_start, g.trace_seq AS k_seq \
             FROM {source} g CROSS JOIN traces t ON t.seq = g.trace_seq \
             JOIN projects p ON p.id = t.project_id \
             WHERE g.tenant_id = ?1 AND g.session_id = ?2 AND t.tenant_id = ?1 \
             ORDER BY g.started_at, g.trace_seq LIMIT {MAX_SESSION_TRACES} + 1"
        )
    };
    let [index, rest] = ARMS;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT * FROM ({}) UNION ALL SELECT * FROM ({}) \
         ORDER BY k_start, k_seq LIMIT {MAX_SESSION_TRACES} + 1",
        arm(index),
        arm(rest)
    ))?;
    let mut rows = stmt.query(params![tenant_id, session_id])?;
    let mut traces = Vec::new();
    let mut page = PageBytes::default();
    while let Some(r) = rows.next()? {
        let trace = listed_trace_from_row(r)?;
        if !page.admit(&trace) {
            return Ok((traces, true));
        }
        traces.push(trace);
    }
    let more = traces.len() > MAX_SESSION_TRACES;
    traces.truncate(MAX_SESSION_TRACES);
    Ok((traces, more))
}

pub(super) fn list(
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
    // A trace is its session's latest if neither the session index nor the
    // entries waiting for it hold a later one. The waiting entries are read
    // once, not probed once for each trace.
    let pending = pending_by_session(conn, tenant_id, project_id)?;
    let sql = format!(
        "SELECT t.session_id, t.started_at, t.seq FROM traces t \
         WHERE t.tenant_id = ?1 AND t.session_id IS NOT NULL AND (t.started_at, t.seq) < (?2, ?3) \
         AND NOT EXISTS (SELECT 1 FROM session_lookup n WHERE n.tenant_id = t.tenant_id \
             AND n.session_id = t.session_id \
             AND (n.started_at, n.trace_seq) > (t.started_at, t.seq){project}) \
         {} ORDER BY t.started_at DESC, t.seq DESC",
        if project_id.is_some() {
            "AND t.project_id = ?4"
        } else {
            ""
        },
    );
    let mut args: Vec<SqlValue> = vec![tenant_id.into(), after.started_at.into(), after.seq.into()];
    if let Some(p) = project_id {
        args.push(p.into());
    }
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
    let mut latest: Vec<(String, i64, i64)> = Vec::with_capacity(limit + 1);
    while latest.len() <= limit {
        let Some(r) = rows.next()? else { break };
        let (id, started_at, seq): (String, i64, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
        let later = pending
            .get(&id)
            .is_some_and(|w| w.latest > (started_at, seq));
        if !later {
            latest.push((id, started_at, seq));
        }
    }
    let has_more = latest.len() > limit;
    let mut sessions = Vec::with_capacity(limit);
    let mut totals = conn.prepare_cached(&format!(
        "SELECT count(*), coalesce(sum(total_token_count), 0), sum(cost), \
         sum(error IS NOT NULL), min(started_at), max(coalesce(ended_at, started_at)) \
         FROM (SELECT trace_seq AS seq FROM session_lookup \
               WHERE tenant_id = ?1 AND session_id = ?2 \
               UNION SELECT value FROM json_each(?3)) m \
         CROSS JOIN traces t ON t.seq = m.seq WHERE t.tenant_id = ?1{}",
        if project_id.is_some() {
            " AND t.project_id = ?4"
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
        // The session's traces still waiting for the index, as a JSON array.
        let waiting = pending.get(&id).map_or_else(
            || "[]".to_string(),
            |w| {
                let seqs: Vec<String> = w.seqs.iter().map(i64::to_string).collect();
                format!("[{}]", seqs.join(","))
            },
        );
        let summary = match project_id {
            Some(p) => totals.query_row(params![tenant_id, id, waiting, p], read)?,
            None => totals.query_row(params![tenant_id, id, waiting], read)?,
        };
        sessions.push(summary);
        next = Some(TraceCursor { started_at, seq });
    }
    Ok(SessionPage {
        sessions,
        next: if has_more { next } else { None },
    })
}
