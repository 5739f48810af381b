//! Rollups for metrics, kept in the same transaction as the traces they
//! count: per tenant, minute (and, for window edges, second) of
//! `started_at`, project and model, the number of traces and errors, cost,
//! tokens and a latency sketch. A metrics query over a day reads 1,440 rows
//! per project and model instead of every trace.

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension};

use super::failure_clusters::{self, Failure};
use super::Result;
use crate::model::summable_cost;
use crate::sketch::Sketch;

/// Microseconds in a minute.
pub const MINUTE: i64 = 60_000_000;
/// Microseconds in a second.
pub const SECOND: i64 = 1_000_000;

/// The two rollup tables: (table, the time column, its width).
pub const TABLES: [(&str, &str, i64); 2] = [
    ("metrics_minute", "minute", MINUTE),
    ("metrics_second", "second", SECOND),
];

/// What one trace adds to (or, taken out, removes from) its rollup row.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Contribution {
    pub project_id: i64,
    pub started_at: i64,
    pub model: Option<String>,
    pub error: bool,
    pub cost: Option<f64>,
    pub tokens: i64,
    pub latency_ms: Option<i64>,
    /// The failure cluster of a failing trace (see `failure_clusters`).
    pub failure: Option<Failure>,
}

#[derive(Default)]
struct Delta {
    traces: i64,
    errors: i64,
    cost: f64,
    tokens: i64,
    added: Vec<i64>,
    removed: Vec<i64>,
}

/// Adds (`sign` 1) or takes out (`sign` -1) contributions, in every table.
pub(super) fn apply(
    conn: &Connection,
    tenant_id: i64,
    items: &[(Contribution, i64)],
) -> Result<()> {
    for (table, column, width) in TABLES {
        apply_to(conn, tenant_id, items, table, column, width)?;
    }
    failure_clusters::apply(conn, tenant_id, items)
}

fn apply_to(
    conn: &Connection,
    tenant_id: i64,
    items: &[(Contribution, i64)],
    table: &str,
    column: &str,
    width: i64,
) -> Result<()> {
    let mut deltas: HashMap<(i64, i64, String), Delta> = HashMap::new();
    for (c, sign) in items {
        let key = (
            c.started_at.div_euclid(width),
            c.project_id,
            c.model.clone().unwrap_or_default(),
        );
        let d = deltas.entry(key).or_default();
        d.traces += sign;
        d.errors += sign * i64::from(c.error);
        d.cost += *sign as f64 * summable_cost(c.cost);
        d.tokens += sign * c.tokens;
        if let Some(latency) = c.latency_ms {
            if *sign > 0 {
                d.added.push(latency);
            } else {
                d.removed.push(latency);
            }
        }
    }
    let mut read = conn.prepare_cached(&format!(
        "SELECT traces, errors, cost, tokens, latency FROM {table} \
         WHERE tenant_id = ?1 AND {column} = ?2 AND project_id = ?3 AND model = ?4"
    ))?;
    let mut write = conn.prepare_cached(&format!(
        "INSERT OR REPLACE INTO {table} \
         (tenant_id, {column}, project_id, model, traces, errors, cost, tokens, latency) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
    ))?;
    let mut delete = conn.prepare_cached(&format!(
        "DELETE FROM {table} \
         WHERE tenant_id = ?1 AND {column} = ?2 AND project_id = ?3 AND model = ?4"
    ))?;
    for ((slot, project_id, model), d) in deltas {
        let old: Option<(i64, i64, f64, i64, Vec<u8>)> = read
            .query_row(params![tenant_id, slot, project_id, model], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .optional()?;
        let (traces, errors, cost, tokens, mut sketch) = match old {
            Some((t, e, c, k, s)) => (t, e, summable_cost(Some(c)), k, Sketch::from_bytes(&s)),
            None => (0, 0, 0.0, 0, Sketch::default()),
        };
        for v in &d.added {
            sketch.add(*v);
        }
        for v in &d.removed {
            sketch.remove(*v);
        }
        let traces = traces + d.traces;
        if traces <= 0 {
            delete.execute(params![tenant_id, slot, project_id, model])?;
            continue;
        }
        write.execute(params![
            tenant_id,
            slot,
            project_id,
            model,
            traces,
            errors + d.errors,
            // Never below zero: removing what rounding left adds no debt.
            (cost + d.cost).max(0.0),
            tokens + d.tokens,
            sketch.to_bytes()
        ])?;
    }
    Ok(())
}

/// A stored trace's contribution, as it is now.
pub(super) fn stored(conn: &Connection, seq: i64) -> Result<Option<Contribution>> {
    Ok(conn
        .prepare_cached(
            "SELECT project_id, started_at, model, error IS NOT NULL, cost, total_token_count, \
             latency_ms, error_fingerprint, error FROM traces WHERE seq = ?1",
        )?
        .query_row([seq], |r| {
            let mut c = contribution_from_row(r)?;
            if let Some(fingerprint) = r.get::<_, Option<i64>>(7)? {
                let error: Option<String> = r.get(8)?;
                c.failure = Some(Failure {
                    fingerprint,
                    message: crate::failures::shape(error.as_deref().unwrap_or("")).text,
                });
            }
            Ok(c)
        })
        .optional()?)
}

fn contribution_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Contribution> {
    Ok(Contribution {
        project_id: r.get(0)?,
        started_at: r.get(1)?,
        model: r.get(2)?,
        error: r.get(3)?,
        cost: r.get(4)?,
        tokens: r.get(5)?,
        latency_ms: r.get(6)?,
        failure: None,
    })
}

/// Builds the metrics rollups of a database whose traces predate them
/// (the failure clusters have their own rebuild).
pub(super) fn rebuild(conn: &Connection) -> Result<()> {
    for (table, _, _) in TABLES {
        conn.execute(&format!("DELETE FROM {table}"), [])?;
    }
    let mut tenants = conn.prepare("SELECT DISTINCT tenant_id FROM traces")?;
    let tenant_ids = tenants
        .query_map([], |r| r.get::<_, i64>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for tenant_id in tenant_ids {
        let mut stmt = conn.prepare(
            "SELECT project_id, started_at, model, error IS NOT NULL, cost, total_token_count, \
             latency_ms FROM traces WHERE tenant_id = ?1",
        )?;
        let items = stmt
            .query_map([tenant_id], contribution_from_row)?
            .map(|c| c.map(|c| (c, 1)))
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for chunk in items.chunks(50_000) {
            apply(conn, tenant_id, chunk)?;
        }
    }
    Ok(())
}
