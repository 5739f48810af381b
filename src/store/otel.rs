//! OpenTelemetry spans merged into traces. OTel has no trace object: a
//! trace is whatever spans share a trace id, and they may arrive in any
//! order over many requests. So each request's spans are added to (or
//! replace their earlier copies in) the trace of that id, and the trace's
//! aggregates are recomputed from all of its stored spans.

use rusqlite::{params, Connection, OptionalExtension};

use super::traces::{write_events, write_spans};
use super::{now_micros, Result, Store};
use crate::model::NewOtelTrace;

impl Store {
    /// Merges every trace's spans in one transaction.
    pub async fn merge_otel_traces(
        &self,
        tenant_id: i64,
        traces: Vec<(i64, NewOtelTrace)>,
    ) -> Result<()> {
        self.write(move |conn| {
            let now = now_micros();
            for (project_id, trace) in &traces {
                merge(conn, tenant_id, *project_id, trace, now)?;
            }
            Ok(())
        })
        .await
    }
}

fn merge(
    conn: &Connection,
    tenant_id: i64,
    project_id: i64,
    trace: &NewOtelTrace,
    now: i64,
) -> Result<()> {
    let existing: Option<i64> = conn
        .prepare_cached("SELECT seq FROM traces WHERE tenant_id = ?1 AND id = ?2")?
        .query_row(params![tenant_id, trace.id], |r| r.get(0))
        .optional()?;
    let seq = match existing {
        Some(seq) => seq,
        None => {
            let started_at = trace
                .spans
                .iter()
                .filter_map(|s| s.start_time)
                .min()
                .unwrap_or(now);
            // No JSON content hash: a JSON ingest of this id is a conflict.
            conn.prepare_cached(
                "INSERT INTO traces (tenant_id, project_id, id, session_id, metadata, \
                 started_at, created_at, content_hash) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, zeroblob(32)) RETURNING seq",
            )?
            .query_row(
                params![
                    tenant_id,
                    project_id,
                    trace.id,
                    trace.session_id,
                    trace.metadata,
                    started_at,
                    now
                ],
                |r| r.get(0),
            )?
        }
    };
    write_spans(conn, seq, &trace.spans, now, true)?;
    // A re-sent span brings its events again: replace, do not repeat them.
    let mut clear =
        conn.prepare_cached("DELETE FROM events WHERE trace_seq = ?1 AND span_id = ?2")?;
    for span in &trace.spans {
        clear.execute(params![seq, span.id])?;
    }
    write_events(conn, seq, &trace.events)?;
    // The root span (no parent) names the trace; until it arrives, the
    // earliest span stands in for it.
    conn.prepare_cached(
        "WITH s AS (SELECT * FROM spans WHERE trace_seq = ?1), \
         root AS (SELECT name, input, output, model, error FROM s \
                  ORDER BY parent_span_id IS NULL DESC, start_time LIMIT 1), \
         agg AS (SELECT min(start_time) AS started, max(end_time) AS ended, \
                 sum(coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0)) AS tokens, \
                 sum(cost) AS cost, count(*) AS n FROM s) \
         UPDATE traces SET \
           started_at = coalesce((SELECT started FROM agg), started_at), \
           ended_at = (SELECT ended FROM agg), \
           latency_ms = ((SELECT ended FROM agg) - (SELECT started FROM agg)) / 1000, \
           total_token_count = coalesce((SELECT tokens FROM agg), 0), \
           cost = (SELECT cost FROM agg), \
           span_count = (SELECT n FROM agg), \
           name = (SELECT name FROM root), \
           input = (SELECT input FROM root), \
           output = (SELECT output FROM root), \
           model = coalesce((SELECT model FROM root), \
                    (SELECT model FROM s WHERE type = 'llm' AND model IS NOT NULL \
                     ORDER BY start_time LIMIT 1)), \
           error = coalesce((SELECT error FROM root), \
                    (SELECT error FROM s WHERE error IS NOT NULL ORDER BY start_time LIMIT 1)), \
           session_id = coalesce(session_id, ?2) \
         WHERE seq = ?1",
    )?
    .execute(params![seq, trace.session_id])?;
    Ok(())
}
