//! Metrics over a window: whole minutes come from the minute rollups, whole
//! seconds of the partial minutes at the edges from the second rollups, and
//! the partial seconds at the very ends from the traces themselves, so the
//! answer is the same as a scan of every trace (percentiles within the
//! sketch's 1%).

use std::collections::BTreeMap;

use rusqlite::types::Value as SqlValue;
use rusqlite::Connection;

use super::rollups::TABLES;
use super::{Result, Store};
use crate::model::summable_cost;
use crate::sketch::Sketch;

/// Totals of a set of traces.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    pub traces: i64,
    pub errors: i64,
    pub cost: f64,
    pub tokens: i64,
    pub latency: Sketch,
}

impl Totals {
    fn add(&mut self, other: &Totals) {
        self.traces += other.traces;
        self.errors += other.errors;
        self.cost += other.cost;
        self.tokens += other.tokens;
        self.latency.merge(&other.latency);
    }
}

/// What a metrics query asks.
#[derive(Debug, Clone, Copy)]
pub struct MetricsQuery {
    pub project_id: Option<i64>,
    /// Inclusive bounds on `started_at`, microseconds.
    pub from: i64,
    pub to: i64,
    /// Bucket width in microseconds, for charts.
    pub interval: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct MetricsResult {
    pub total: Totals,
    pub by_model: BTreeMap<String, Totals>,
    /// Bucket start (microseconds) → totals.
    pub buckets: BTreeMap<i64, Totals>,
    pub feedback_good: i64,
    pub feedback_total: i64,
}

impl Store {
    pub async fn metrics(&self, tenant_id: i64, q: MetricsQuery) -> Result<MetricsResult> {
        self.read(move |conn| metrics(conn, tenant_id, q)).await
    }
}

pub(super) fn metrics(conn: &Connection, tenant_id: i64, q: MetricsQuery) -> Result<MetricsResult> {
    let mut out = MetricsResult::default();
    let record = |out: &mut MetricsResult, at: i64, model: String, t: Totals| {
        out.total.add(&t);
        out.by_model.entry(model).or_default().add(&t);
        if let Some(width) = q.interval {
            out.buckets
                .entry(at.div_euclid(width) * width)
                .or_default()
                .add(&t);
        }
    };
    let project = |sql: &mut String, args: &mut Vec<SqlValue>, column: &str| {
        if let Some(p) = q.project_id {
            sql.push_str(&format!(" AND {column} = ?"));
            args.push(p.into());
        }
    };
    // Whole minutes, then whole seconds of the partial minutes, from the
    // rollups; the partial seconds at the very ends from the traces.
    let mut ranges = vec![(q.from, q.to)];
    for (table, column, width) in TABLES {
        let mut rest = Vec::new();
        for (from, to) in ranges {
            let first = from.div_euclid(width) + i64::from(from.rem_euclid(width) != 0);
            let last = (to + 1).div_euclid(width) - 1;
            if first > last {
                rest.push((from, to));
                continue;
            }
            let mut sql = format!(
                "SELECT {column}, model, traces, errors, cost, tokens, latency \
                 FROM {table} WHERE tenant_id = ? AND {column} BETWEEN ? AND ?"
            );
            let mut args: Vec<SqlValue> = vec![tenant_id.into(), first.into(), last.into()];
            project(&mut sql, &mut args, "project_id");
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
            while let Some(r) = rows.next()? {
                let slot: i64 = r.get(0)?;
                let blob: Vec<u8> = r.get(6)?;
                let t = Totals {
                    traces: r.get(2)?,
                    errors: r.get(3)?,
                    cost: summable_cost(r.get(4)?),
                    tokens: r.get(5)?,
                    latency: Sketch::from_bytes(&blob),
                };
                record(&mut out, slot * width, r.get(1)?, t);
            }
            if from < first * width {
                rest.push((from, first * width - 1));
            }
            if (last + 1) * width <= to {
                rest.push(((last + 1) * width, to));
            }
        }
        ranges = rest;
    }
    for (from, to) in ranges {
        let mut sql = "SELECT started_at, coalesce(model, ''), error IS NOT NULL, \
                       coalesce(cost, 0), total_token_count, latency_ms FROM traces \
                       WHERE tenant_id = ? AND started_at BETWEEN ? AND ?"
            .to_string();
        let mut args: Vec<SqlValue> = vec![tenant_id.into(), from.into(), to.into()];
        project(&mut sql, &mut args, "project_id");
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
        while let Some(r) = rows.next()? {
            let mut latency = Sketch::default();
            if let Some(ms) = r.get::<_, Option<i64>>(5)? {
                latency.add(ms);
            }
            let t = Totals {
                traces: 1,
                errors: i64::from(r.get::<_, bool>(2)?),
                cost: summable_cost(r.get(3)?),
                tokens: r.get(4)?,
                latency,
            };
            record(&mut out, r.get(0)?, r.get(1)?, t);
        }
    }
    // Feedback on the window's traces.
    let mut sql = "SELECT f.label = 'good', count(*) FROM feedback f \
                   JOIN traces t ON t.seq = f.trace_seq \
                   WHERE f.tenant_id = ? AND t.started_at BETWEEN ? AND ?"
        .to_string();
    let mut args: Vec<SqlValue> = vec![tenant_id.into(), q.from.into(), q.to.into()];
    project(&mut sql, &mut args, "t.project_id");
    sql.push_str(" GROUP BY 1");
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
    while let Some(r) = rows.next()? {
        let n: i64 = r.get(1)?;
        out.feedback_total += n;
        if r.get::<_, bool>(0)? {
            out.feedback_good += n;
        }
    }
    Ok(out)
}
