//! Sessions: the traces that share a `session_id`, most recently active
//! first, each listed at its latest trace with its totals.
//!
//! The totals of the traces in the session index are kept in
//! `session_stats` (a row per session and project, see migration 21), so a
//! page of the list is a range of its index by latest trace, whatever the
//! number of traces or sessions; the traces whose entries still wait for the
//! index (see `session_lookup`) are read from the queue and added. A page is
//! read in one snapshot, so it never misses or repeats a trace a merge is
//! moving meanwhile.

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
        self.read(move |conn| {
            // One snapshot: the keys and the rows they name.
            let snapshot = conn.unchecked_transaction()?;
            let found = traces_of(&snapshot, tenant_id, &session_id)?;
            snapshot.commit()?;
            Ok(found)
        })
        .await
    }
}

/// A session's first [`MAX_SESSION_TRACES`] traces in the order they
/// started, as many as one page holds: from the session index and the
/// entries not merged into it yet. True when more were left out.
///
/// The keys are put in order first and the rows read after, in that order:
/// sorting whole rows, texts and all, cost a quarter of a thousand-trace
/// answer.
pub(super) fn traces_of(
    conn: &Connection,
    tenant_id: i64,
    session_id: &str,
) -> Result<(Vec<Trace>, bool)> {
    let arm = |source: &str| {
        format!(
            "SELECT g.started_at AS k_start, g.trace_seq AS k_seq \
             FROM {source} g CROSS JOIN traces t ON t.seq = g.trace_seq \
             WHERE g.tenant_id = ?1 AND g.session_id = ?2 AND t.tenant_id = ?1 \
             ORDER BY g.started_at, g.trace_seq LIMIT {MAX_SESSION_TRACES} + 1"
        )
    };
    let [index, rest] = ARMS;
    let seqs: Vec<i64> = conn
        .prepare_cached(&format!(
            "SELECT k_seq FROM (SELECT * FROM ({}) UNION ALL SELECT * FROM ({}) \
             ORDER BY k_start, k_seq LIMIT {MAX_SESSION_TRACES} + 1)",
            arm(index),
            arm(rest)
        ))?
        .query_map(params![tenant_id, session_id], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    // The keys drive the join (CROSS JOIN keeps them the outer loop), so
    // the rows come in their order; each is checked against it (a key
    // whose row is gone is passed over).
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {TRACE_COLUMNS} FROM json_each(?1) j CROSS JOIN traces t ON t.seq = j.value \
         CROSS JOIN projects p ON p.id = t.project_id"
    ))?;
    let mut rows = stmt.query(params![serde_json::Value::from(&seqs[..]).to_string()])?;
    let mut traces = Vec::new();
    let mut page = PageBytes::default();
    let mut expected = seqs.iter();
    while let Some(r) = rows.next()? {
        let seq: i64 = r.get(0)?;
        if !expected.by_ref().any(|k| *k == seq) {
            return Err(super::StoreError::Corrupt(format!(
                "session {session_id}: trace {seq} read out of its order"
            )));
        }
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
    let before = after.map_or((i64::MAX, i64::MAX), |c| (c.started_at, c.seq));
    // The waiting entries are read once, not probed once for each session.
    let pending = pending_by_session(conn, tenant_id, project_id)?;
    let mut queued: Vec<(&str, (i64, i64))> = pending
        .iter()
        .filter(|(_, w)| w.latest < before)
        .map(|(id, w)| (id.as_str(), w.latest))
        .collect();
    queued.sort_unstable_by_key(|&(_, latest)| std::cmp::Reverse(latest));
    let mut queued = queued.into_iter().peekable();

    let mut rows = conn.prepare_cached(if project_id.is_some() {
        "SELECT session_id, latest_started, latest_seq FROM session_stats \
         WHERE tenant_id = ?1 AND project_id = ?4 AND (latest_started, latest_seq) < (?2, ?3) \
         ORDER BY latest_started DESC, latest_seq DESC"
    } else {
        "SELECT session_id, latest_started, latest_seq FROM session_stats \
         WHERE tenant_id = ?1 AND (latest_started, latest_seq) < (?2, ?3) \
         ORDER BY latest_started DESC, latest_seq DESC"
    })?;
    let mut args: Vec<SqlValue> = vec![tenant_id.into(), before.0.into(), before.1.into()];
    if let Some(p) = project_id {
        args.push(p.into());
    }
    let mut rows = rows.query(rusqlite::params_from_iter(args))?;
    // A session's rows, one a project, read by their key: ordered by latest
    // trace, SQLite would walk the tenant's rows in that order instead.
    let mut latest_indexed = conn.prepare_cached(
        "SELECT latest_started, latest_seq FROM session_stats \
         WHERE tenant_id = ?1 AND session_id = ?2 AND (?3 IS NULL OR project_id = ?3)",
    )?;
    let mut latest_indexed = |id: &str| -> Result<Option<(i64, i64)>> {
        let mut latest = None;
        let mut rows = latest_indexed.query(params![tenant_id, id, project_id])?;
        while let Some(r) = rows.next()? {
            latest = latest.max(Some((r.get(0)?, r.get(1)?)));
        }
        Ok(latest)
    };

    // Two streams, each latest first: the index's rows and the sessions
    // with waiting entries. A session is listed once, at its latest trace:
    // from the stream that holds it.
    let mut listed: Vec<(String, (i64, i64))> = Vec::with_capacity(limit + 1);
    let mut indexed = next_row(&mut rows)?;
    while listed.len() <= limit {
        let from_index = match (&indexed, queued.peek()) {
            (None, None) => break,
            (Some((_, at)), Some((_, waiting))) => at > waiting,
            (Some(_), None) => true,
            (None, Some(_)) => false,
        };
        if from_index {
            let Some((id, at)) = indexed.take() else {
                break;
            };
            indexed = next_row(&mut rows)?;
            let waits_later = pending.get(&id).is_some_and(|w| w.latest > at);
            // Unfiltered, a session spanning projects has a row for each:
            // it is listed at the one holding its latest trace.
            let later_row =
                project_id.is_none() && latest_indexed(&id)?.is_some_and(|latest| latest > at);
            if !waits_later && !later_row {
                listed.push((id, at));
            }
        } else {
            let Some((id, at)) = queued.next() else { break };
            if latest_indexed(id)?.is_none_or(|latest| latest < at) {
                listed.push((id.to_owned(), at));
            }
        }
    }
    let has_more = listed.len() > limit;
    listed.truncate(limit);

    let mut indexed_totals = conn.prepare_cached(
        "SELECT coalesce(sum(traces), 0), coalesce(sum(tokens), 0), coalesce(sum(costed), 0), \
         coalesce(sum(cost), 0.0), coalesce(sum(errors), 0), min(first_at), max(last_at) \
         FROM session_stats \
         WHERE tenant_id = ?1 AND session_id = ?2 AND (?3 IS NULL OR project_id = ?3)",
    )?;
    let mut waiting_totals = conn.prepare_cached(
        "SELECT count(*), coalesce(sum(total_token_count), 0), count(cost), \
         coalesce(sum(cost), 0.0), coalesce(sum(error IS NOT NULL), 0), min(started_at), \
         max(coalesce(ended_at, started_at)) \
         FROM traces WHERE seq IN (SELECT value FROM json_each(?1)) AND tenant_id = ?2",
    )?;
    let mut sessions = Vec::with_capacity(listed.len());
    let mut next = None;
    for (id, (started_at, seq)) in listed {
        let mut totals =
            indexed_totals.query_row(params![tenant_id, id, project_id], Totals::from_row)?;
        if let Some(w) = pending.get(&id) {
            let seqs: Vec<String> = w.seqs.iter().map(i64::to_string).collect();
            let seqs = format!("[{}]", seqs.join(","));
            totals.add(waiting_totals.query_row(params![seqs, tenant_id], Totals::from_row)?);
        }
        sessions.push(totals.summary(id));
        next = Some(TraceCursor { started_at, seq });
    }
    Ok(SessionPage {
        sessions,
        next: if has_more { next } else { None },
    })
}

/// The next session of an index range: its id and latest trace.
fn next_row(rows: &mut rusqlite::Rows<'_>) -> Result<Option<(String, (i64, i64))>> {
    Ok(match rows.next()? {
        Some(r) => Some((r.get(0)?, (r.get(1)?, r.get(2)?))),
        None => None,
    })
}

/// Totals over some of a session's traces: its rows of `session_stats`, or
/// its entries waiting for the index.
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    traces: i64,
    tokens: i64,
    /// Traces with a cost.
    costed: i64,
    cost: f64,
    errors: i64,
    first_at: Option<i64>,
    last_at: Option<i64>,
}

impl Totals {
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Totals> {
        Ok(Totals {
            traces: r.get(0)?,
            tokens: r.get(1)?,
            costed: r.get(2)?,
            cost: r.get(3)?,
            errors: r.get(4)?,
            first_at: r.get(5)?,
            last_at: r.get(6)?,
        })
    }

    fn add(&mut self, other: Totals) {
        self.traces += other.traces;
        self.tokens += other.tokens;
        self.costed += other.costed;
        self.cost += other.cost;
        self.errors += other.errors;
        self.first_at = match (self.first_at, other.first_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last_at = self.last_at.max(other.last_at);
    }

    fn summary(self, id: String) -> SessionSummary {
        SessionSummary {
            id,
            traces: self.traces,
            tokens: self.tokens,
            cost: (self.costed > 0).then_some(self.cost),
            errors: self.errors,
            first_at: self.first_at.unwrap_or_default(),
            last_at: self.last_at.unwrap_or_default(),
        }
    }
}
