//! Ingestion health by organisation, project and hour: what the HTTP layer
//! counted in memory (`crate::http::ingestion_health`), written every few
//! seconds, and read back over a window together with the queues' backlogs.

use std::collections::BTreeMap;

use rusqlite::{params, OptionalExtension};

use super::{Result, Store};
use crate::sketch::Sketch;

/// Microseconds in an hour.
pub const HOUR: i64 = 3_600_000_000;
/// Hours of health kept: the longest window (7 days) and a day more.
pub const KEEP_HOURS: i64 = 8 * 24;

/// What one organisation's project did in one hour.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HealthCounts {
    /// Ingest requests accepted (JSON and OTLP).
    pub accepted: i64,
    /// Ingest requests refused, by error code.
    pub refused: BTreeMap<String, i64>,
    pub traces: i64,
    pub spans: i64,
    /// Ingest lag in milliseconds: how long after a trace ended it was stored.
    pub lag: Sketch,
    /// When spans last arrived (microseconds).
    pub last_span_at: Option<i64>,
}

impl HealthCounts {
    pub fn add(&mut self, other: &HealthCounts) {
        self.accepted += other.accepted;
        for (code, n) in &other.refused {
            *self.refused.entry(code.clone()).or_default() += n;
        }
        self.traces += other.traces;
        self.spans += other.spans;
        self.lag.merge(&other.lag);
        self.last_span_at = self.last_span_at.max(other.last_span_at);
    }
}

/// Counts of one (organisation, project, hour).
#[derive(Debug, Clone)]
pub struct HealthDelta {
    pub tenant_id: i64,
    pub project_id: i64,
    /// The hour's start, microseconds.
    pub hour: i64,
    pub counts: HealthCounts,
}

/// The queues an organisation's data waits in.
#[derive(Debug, Clone, Copy, Default)]
pub struct Backlogs {
    /// Its evaluations waiting or running.
    pub evals_pending: i64,
    /// Its evaluations that gave up, queued in the window.
    pub evals_failed: i64,
    /// Traces of the whole server not yet in the full-text index.
    pub search_index: u64,
}

impl Store {
    /// Adds counted deltas to the hourly rows, and drops rows past
    /// [`KEEP_HOURS`] before `now`.
    pub async fn add_ingest_health(&self, deltas: Vec<HealthDelta>, now: i64) -> Result<()> {
        self.write(move |conn| {
            let mut read_lag = conn.prepare_cached(
                "SELECT lag FROM ingest_health_hour \
                 WHERE tenant_id = ?1 AND project_id = ?2 AND hour = ?3",
            )?;
            let mut upsert = conn.prepare_cached(
                "INSERT INTO ingest_health_hour (tenant_id, project_id, hour, accepted, traces, \
                 spans, lag, last_span_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                 ON CONFLICT (tenant_id, project_id, hour) DO UPDATE SET \
                 accepted = accepted + excluded.accepted, traces = traces + excluded.traces, \
                 spans = spans + excluded.spans, lag = excluded.lag, \
                 last_span_at = max(coalesce(last_span_at, 0), coalesce(excluded.last_span_at, 0))",
            )?;
            let mut refusal = conn.prepare_cached(
                "INSERT INTO ingest_refusals_hour (tenant_id, project_id, hour, code, count) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (tenant_id, project_id, hour, code) \
                 DO UPDATE SET count = count + excluded.count",
            )?;
            for d in &deltas {
                let key = params![d.tenant_id, d.project_id, d.hour];
                let mut lag = read_lag
                    .query_row(key, |r| r.get::<_, Vec<u8>>(0))
                    .optional()?
                    .map(|bytes| Sketch::from_bytes(&bytes))
                    .unwrap_or_default();
                lag.merge(&d.counts.lag);
                let c = &d.counts;
                upsert.execute(params![
                    d.tenant_id,
                    d.project_id,
                    d.hour,
                    c.accepted,
                    c.traces,
                    c.spans,
                    lag.to_bytes(),
                    c.last_span_at
                ])?;
                for (code, n) in &c.refused {
                    refusal.execute(params![d.tenant_id, d.project_id, d.hour, code, n])?;
                }
            }
            let horizon = now - KEEP_HOURS * HOUR;
            conn.prepare_cached("DELETE FROM ingest_health_hour WHERE hour < ?1")?
                .execute([horizon])?;
            conn.prepare_cached("DELETE FROM ingest_refusals_hour WHERE hour < ?1")?
                .execute([horizon])?;
            Ok(())
        })
        .await
    }

    /// The organisation's (or one project's) health from hour `from_hour` on.
    pub async fn ingest_health(
        &self,
        tenant_id: i64,
        project_id: Option<i64>,
        from_hour: i64,
    ) -> Result<HealthCounts> {
        self.read(move |conn| {
            let mut total = HealthCounts::default();
            let mut rows = conn.prepare_cached(
                "SELECT accepted, traces, spans, lag, last_span_at FROM ingest_health_hour \
                 WHERE tenant_id = ?1 AND hour >= ?2 AND (?3 IS NULL OR project_id = ?3)",
            )?;
            let mut found = rows.query(params![tenant_id, from_hour, project_id])?;
            while let Some(r) = found.next()? {
                total.add(&HealthCounts {
                    accepted: r.get(0)?,
                    traces: r.get(1)?,
                    spans: r.get(2)?,
                    lag: Sketch::from_bytes(&r.get::<_, Vec<u8>>(3)?),
                    last_span_at: r.get(4)?,
                    refused: BTreeMap::new(),
                });
            }
            let mut refusals = conn.prepare_cached(
                "SELECT code, sum(count) FROM ingest_refusals_hour \
                 WHERE tenant_id = ?1 AND hour >= ?2 AND (?3 IS NULL OR project_id = ?3) \
                 GROUP BY code",
            )?;
            for row in refusals.query_map(params![tenant_id, from_hour, project_id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })? {
                let (code, n) = row?;
                total.refused.insert(code, n);
            }
            Ok(total)
        })
        .await
    }

    /// The organisation's evaluation backlog and dead letters since `from`
    /// (microseconds), and the server's search-index backlog.
    pub async fn ingest_backlogs(
        &self,
        tenant_id: i64,
        project_id: Option<i64>,
        from: i64,
    ) -> Result<Backlogs> {
        let search_index = self.search_backlog().await?;
        self.read(move |conn| {
            let pending: i64 = conn
                .prepare_cached(
                    "SELECT (SELECT count(*) FROM evaluations INDEXED BY evaluations_queue \
                     WHERE status = 'pending' AND tenant_id = ?1 AND (?2 IS NULL OR project_id = ?2)) \
                     + (SELECT count(*) FROM evaluations INDEXED BY evaluations_running \
                     WHERE status = 'running' AND tenant_id = ?1 AND (?2 IS NULL OR project_id = ?2))",
                )?
                .query_row(params![tenant_id, project_id], |r| r.get(0))?;
            let failed: i64 = conn
                .prepare_cached(
                    "SELECT count(*) FROM evaluations INDEXED BY evaluations_failed \
                     WHERE status = 'failed' AND tenant_id = ?1 AND created_at >= ?3 \
                     AND (?2 IS NULL OR project_id = ?2)",
                )?
                .query_row(params![tenant_id, project_id, from], |r| r.get(0))?;
            Ok(Backlogs {
                evals_pending: pending,
                evals_failed: failed,
                search_index,
            })
        })
        .await
    }

    /// The organisation's (or a project's) most frequent failures among
    /// the traces that started in `[from, to]`: their failure cluster's
    /// shape cut to 64 characters, and how many traces. Read from the
    /// clusters' hourly counts, not from the traces.
    pub async fn top_trace_errors(
        &self,
        tenant_id: i64,
        project_id: Option<i64>,
        from: i64,
        to: i64,
        limit: usize,
    ) -> Result<Vec<(String, i64)>> {
        let clusters = self
            .failure_clusters(
                tenant_id,
                super::ClusterQuery {
                    project_id,
                    from,
                    to,
                    limit,
                },
            )
            .await?;
        Ok(clusters
            .into_iter()
            .map(|c| (c.message.chars().take(64).collect(), c.count))
            .collect())
    }
}
