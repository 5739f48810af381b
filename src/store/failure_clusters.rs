//! Failure clusters: failing traces grouped by the shape of their error
//! message (see `failures`), counted as traces arrive and leave.
//!
//! Each failing trace carries its cluster's fingerprint and its failure
//! class in two columns of `traces`. The counts are kept beside the metrics
//! rollups, by the same contributions (`rollups::apply`), so storing,
//! merging and deleting traces keep them exact: `failure_clusters` holds a
//! cluster's shape and total, `failure_hours` its traces per hour and
//! project. A window's ranking sums its whole hours and counts the traces
//! of the parts of hours at its edges; a cluster's first and last trace and
//! its latest traces in the window come from the index of failing traces,
//! so a deleted trace is never offered as a sample.

use std::collections::HashMap;

use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};

use super::rollups::Contribution;
use super::{Result, Store};
use crate::failures::{classify, TraceFailure};

/// Microseconds in an hour.
pub const HOUR: i64 = 3_600_000_000;
/// Latest traces named per cluster.
pub const SAMPLES: usize = 5;
/// The longest example message returned, in characters.
const EXAMPLE_MAX_CHARS: usize = 1000;

/// A failing trace's cluster: the fingerprint of its error's shape and the
/// shape (needed only when the trace is added).
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub fingerprint: i64,
    pub message: String,
}

/// What to read: the tenant's clusters in a window (microseconds, both
/// ends inclusive), of one project or all, the `limit` largest.
#[derive(Debug, Clone, Copy)]
pub struct ClusterQuery {
    pub project_id: Option<i64>,
    pub from: i64,
    pub to: i64,
    pub limit: usize,
}

/// One cluster in a window.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterRow {
    /// The shape of the message, what varies masked.
    pub message: String,
    pub count: i64,
    pub first_seen: i64,
    pub last_seen: i64,
    /// The latest traces' ids, newest first.
    pub sample_ids: Vec<String>,
    /// The newest trace's own error message (cut to 1,000 characters).
    pub example: Option<String>,
    /// The failure class of the shape, when it names one.
    pub failure_type: Option<&'static str>,
}

impl Store {
    /// The tenant's failure clusters in a window, most traces first.
    pub async fn failure_clusters(
        &self,
        tenant_id: i64,
        query: ClusterQuery,
    ) -> Result<Vec<ClusterRow>> {
        self.read(move |conn| read_clusters(conn, tenant_id, query))
            .await
    }
}

/// Adds (`sign` 1) or takes out (`sign` -1) the failing traces among
/// `items`. Called by `rollups::apply`, in the transaction that stores,
/// changes or deletes the traces.
pub(super) fn apply(
    conn: &Connection,
    tenant_id: i64,
    items: &[(Contribution, i64)],
) -> Result<()> {
    let mut hours: HashMap<(i64, i64, i64), i64> = HashMap::new();
    let mut clusters: HashMap<i64, (i64, &str)> = HashMap::new();
    for (c, sign) in items {
        let Some(f) = &c.failure else { continue };
        *hours
            .entry((c.started_at.div_euclid(HOUR), c.project_id, f.fingerprint))
            .or_default() += sign;
        let entry = clusters.entry(f.fingerprint).or_insert((0, ""));
        entry.0 += sign;
        if *sign > 0 && entry.1.is_empty() {
            entry.1 = &f.message;
        }
    }
    if hours.is_empty() {
        return Ok(());
    }
    let mut add_hour = conn.prepare_cached(
        "INSERT INTO failure_hours (tenant_id, hour, project_id, fingerprint, traces) \
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (tenant_id, hour, project_id, fingerprint) \
         DO UPDATE SET traces = traces + excluded.traces",
    )?;
    let mut drop_hour = conn.prepare_cached(
        "DELETE FROM failure_hours WHERE tenant_id = ?1 AND hour = ?2 AND project_id = ?3 \
         AND fingerprint = ?4 AND traces <= 0",
    )?;
    for ((hour, project_id, fingerprint), delta) in hours {
        if delta == 0 {
            continue;
        }
        add_hour.execute(params![tenant_id, hour, project_id, fingerprint, delta])?;
        if delta < 0 {
            drop_hour.execute(params![tenant_id, hour, project_id, fingerprint])?;
        }
    }
    let mut add_cluster = conn.prepare_cached(
        "INSERT INTO failure_clusters (tenant_id, fingerprint, message, traces) \
         VALUES (?1, ?2, ?3, ?4) ON CONFLICT (tenant_id, fingerprint) \
         DO UPDATE SET traces = traces + excluded.traces",
    )?;
    let mut drop_cluster = conn.prepare_cached(
        "DELETE FROM failure_clusters WHERE tenant_id = ?1 AND fingerprint = ?2 AND traces <= 0",
    )?;
    for (fingerprint, (delta, message)) in clusters {
        if delta == 0 {
            continue;
        }
        add_cluster.execute(params![tenant_id, fingerprint, message, delta])?;
        if delta < 0 {
            // The last trace gone, the shape (which may still name
            // someone) goes with it.
            drop_cluster.execute(params![tenant_id, fingerprint])?;
        }
    }
    Ok(())
}

/// Classifies the stored trace `seq` from its error and its spans' errors,
/// as ingest classifies a new one; for traces whose spans arrive over many
/// requests. Returns its cluster.
pub(super) fn classify_stored(conn: &Connection, seq: i64) -> Result<Option<Failure>> {
    type Stored = (Option<String>, String, Option<String>, Option<i64>);
    let Some((error, metadata, class, fingerprint)) = conn
        .prepare_cached(
            "SELECT error, unpack(metadata), failure_type, error_fingerprint FROM traces \
             WHERE seq = ?1",
        )?
        .query_row([seq], |r| -> rusqlite::Result<Stored> {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()?
    else {
        return Ok(None);
    };
    let spans: Vec<(String, String)> = conn
        .prepare_cached(
            "SELECT error, unpack(metadata) FROM spans WHERE trace_seq = ?1 AND error IS NOT NULL \
             ORDER BY start_time",
        )?
        .query_map([seq], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let failure = TraceFailure::of(
        error.as_deref(),
        Some(&metadata),
        spans
            .iter()
            .map(|(e, m)| (Some(e.as_str()), Some(m.as_str()))),
    );
    let new_fingerprint = failure.shape.as_ref().map(|s| s.fingerprint);
    if class.as_deref() != failure.class || fingerprint != new_fingerprint {
        conn.prepare_cached(
            "UPDATE traces SET failure_type = ?2, error_fingerprint = ?3 WHERE seq = ?1",
        )?
        .execute(params![seq, failure.class, new_fingerprint])?;
    }
    Ok(failure.shape.map(|s| Failure {
        fingerprint: s.fingerprint,
        message: s.text,
    }))
}

/// Classifies every trace of a database whose traces predate the failure
/// columns, and counts the clusters afresh.
pub(super) fn rebuild(conn: &Connection) -> Result<()> {
    let seqs: Vec<i64> = conn
        .prepare(
            "SELECT seq FROM traces WHERE error IS NOT NULL \
             UNION SELECT DISTINCT trace_seq FROM spans WHERE error IS NOT NULL",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for seq in seqs {
        classify_stored(conn, seq)?;
    }
    conn.execute("DELETE FROM failure_hours", [])?;
    conn.execute("DELETE FROM failure_clusters", [])?;
    let mut stmt = conn.prepare(
        "SELECT tenant_id, project_id, started_at, error_fingerprint, error FROM traces \
         WHERE error_fingerprint IS NOT NULL ORDER BY tenant_id",
    )?;
    let mut rows = stmt.query([])?;
    let mut tenant = None;
    let mut items: Vec<(Contribution, i64)> = Vec::new();
    let mut messages: HashMap<i64, String> = HashMap::new();
    while let Some(r) = rows.next()? {
        let tenant_id: i64 = r.get(0)?;
        if tenant != Some(tenant_id) || items.len() >= 50_000 {
            if let Some(t) = tenant {
                apply(conn, t, &items)?;
            }
            items.clear();
            tenant = Some(tenant_id);
        }
        let fingerprint: i64 = r.get(3)?;
        let error: Option<String> = r.get(4)?;
        let message = messages
            .entry(fingerprint)
            .or_insert_with(|| crate::failures::shape(error.as_deref().unwrap_or("")).text)
            .clone();
        items.push((
            Contribution {
                project_id: r.get(1)?,
                started_at: r.get(2)?,
                failure: Some(Failure {
                    fingerprint,
                    message,
                }),
                ..Contribution::default()
            },
            1,
        ));
    }
    if let Some(t) = tenant {
        apply(conn, t, &items)?;
    }
    Ok(())
}

fn read_clusters(conn: &Connection, tenant_id: i64, q: ClusterQuery) -> Result<Vec<ClusterRow>> {
    if q.to < q.from {
        return Ok(Vec::new());
    }
    let project = |sql: &mut String, args: &mut Vec<SqlValue>| {
        if let Some(p) = q.project_id {
            sql.push_str(" AND project_id = ?");
            args.push(p.into());
        }
    };
    let mut counts: HashMap<i64, i64> = HashMap::new();
    // Whole hours from the counts; the parts of hours at the edges from the
    // failing traces themselves.
    let first_hour = q.from.div_euclid(HOUR) + i64::from(q.from.rem_euclid(HOUR) != 0);
    let end_hour = q.to.saturating_add(1).div_euclid(HOUR); // exclusive
    let mut edges: Vec<(i64, i64)> = Vec::new(); // [from, to) in micros
    if first_hour < end_hour {
        let mut sql = "SELECT fingerprint, sum(traces) FROM failure_hours \
                       WHERE tenant_id = ? AND hour >= ? AND hour < ?"
            .to_owned();
        let mut args: Vec<SqlValue> = vec![tenant_id.into(), first_hour.into(), end_hour.into()];
        project(&mut sql, &mut args);
        sql.push_str(" GROUP BY fingerprint");
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(params_from_iter(args))?;
        while let Some(r) = rows.next()? {
            *counts.entry(r.get(0)?).or_default() += r.get::<_, i64>(1)?;
        }
        edges.push((q.from, first_hour * HOUR));
        edges.push((end_hour * HOUR, q.to.saturating_add(1)));
    } else {
        edges.push((q.from, q.to.saturating_add(1)));
    }
    for (lo, hi) in edges.into_iter().filter(|(lo, hi)| lo < hi) {
        // Counted here rather than by a GROUP BY, which would sort them.
        let mut sql = "SELECT error_fingerprint FROM traces INDEXED BY traces_failing \
                       WHERE tenant_id = ? AND error_fingerprint IS NOT NULL \
                       AND started_at >= ? AND started_at < ?"
            .to_owned();
        let mut args: Vec<SqlValue> = vec![tenant_id.into(), lo.into(), hi.into()];
        project(&mut sql, &mut args);
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(params_from_iter(args))?;
        while let Some(r) = rows.next()? {
            *counts.entry(r.get(0)?).or_default() += 1;
        }
    }
    let mut ranked: Vec<(i64, i64)> = counts.into_iter().filter(|(_, n)| *n > 0).collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.truncate(q.limit);

    let project_clause = if q.project_id.is_some() {
        " AND project_id = ?5"
    } else {
        " AND ?5 IS NULL"
    };
    let mut message = conn.prepare_cached(
        "SELECT message FROM failure_clusters WHERE tenant_id = ?1 AND fingerprint = ?2",
    )?;
    let mut first = conn.prepare_cached(&format!(
        "SELECT started_at FROM traces INDEXED BY traces_failure_cluster \
         WHERE tenant_id = ?1 AND error_fingerprint = ?2 AND started_at >= ?3 \
         AND started_at <= ?4{project_clause} ORDER BY started_at LIMIT 1"
    ))?;
    let mut latest = conn.prepare_cached(&format!(
        "SELECT id, started_at, error FROM traces INDEXED BY traces_failure_cluster \
         WHERE tenant_id = ?1 AND error_fingerprint = ?2 AND started_at >= ?3 \
         AND started_at <= ?4{project_clause} ORDER BY started_at DESC LIMIT {SAMPLES}"
    ))?;
    let mut out = Vec::with_capacity(ranked.len());
    for (fingerprint, count) in ranked {
        let args = params![tenant_id, fingerprint, q.from, q.to, q.project_id];
        let Some(text) = message
            .query_row(params![tenant_id, fingerprint], |r| r.get::<_, String>(0))
            .optional()?
        else {
            continue;
        };
        let first_seen: Option<i64> = first.query_row(args, |r| r.get(0)).optional()?;
        let samples: Vec<(String, i64, Option<String>)> = latest
            .query_map(args, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let (Some(first_seen), Some((_, last_seen, example))) = (first_seen, samples.first())
        else {
            continue;
        };
        out.push(ClusterRow {
            failure_type: classify(&text, None),
            message: text,
            count,
            first_seen,
            last_seen: *last_seen,
            example: example
                .as_deref()
                .map(|e| e.chars().take(EXAMPLE_MAX_CHARS).collect()),
            sample_ids: samples.iter().map(|(id, _, _)| id.clone()).collect(),
        });
    }
    Ok(out)
}
