//! Deleting traces that are past their retention or that make the database
//! outgrow its cap, and giving the freed space back to the file system.
//!
//! Each call deletes one small batch in one writer job, so ingest requests
//! queued meanwhile commit between batches rather than after the whole
//! purge. A deleted trace takes its spans, events, tags, feedback and
//! search entries with it and is taken out of the metrics rollups, so the
//! metrics keep agreeing with the traces that remain.

use std::collections::BTreeMap;

use rusqlite::{params, Connection};

use super::failure_clusters::Failure;
use super::rollups::{self, Contribution};
use super::{Result, Store};

/// A project and what its retention is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionTarget {
    pub project_id: i64,
    pub tenant_id: i64,
    /// The organisation's plan name.
    pub plan: String,
    /// The project's own retention in days, when set.
    pub override_days: Option<i64>,
}

/// How much of the database file holds data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// Pages in use, in bytes: what a cap on the database size counts.
    pub used_bytes: u64,
    /// Pages freed by deletes and not yet given back, in bytes.
    pub free_bytes: u64,
}

impl Store {
    /// Every project with its tenant's plan and its retention override.
    pub async fn retention_targets(&self) -> Result<Vec<RetentionTarget>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT p.id, p.tenant_id, t.plan, p.retention_days FROM projects p \
                 JOIN tenants t ON t.id = p.tenant_id ORDER BY p.id",
            )?;
            let targets = stmt
                .query_map([], |r| {
                    Ok(RetentionTarget {
                        project_id: r.get(0)?,
                        tenant_id: r.get(1)?,
                        plan: r.get(2)?,
                        override_days: r.get(3)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(targets)
        })
        .await
    }

    /// Deletes up to `batch` traces of the project that started before
    /// `cutoff` (microseconds), oldest first; returns how many.
    pub async fn purge_expired(
        &self,
        target: &RetentionTarget,
        cutoff: i64,
        batch: usize,
    ) -> Result<usize> {
        let (tenant_id, project_id) = (target.tenant_id, target.project_id);
        self.write(move |conn| {
            let victims = select(
                conn,
                "WHERE tenant_id = ?1 AND project_id = ?2 AND started_at < ?3 \
                 ORDER BY started_at LIMIT ?4",
                params![tenant_id, project_id, cutoff, batch as i64],
            )?;
            delete(conn, victims)
        })
        .await
    }

    /// Deletes the tenant's traces of these ids (ids it does not have are
    /// passed over) in one writer job; see [`delete_traces_of_ids`]. Returns how
    /// many were deleted.
    pub async fn delete_traces_by_id(&self, tenant_id: i64, ids: Vec<String>) -> Result<usize> {
        self.write(move |conn| delete_traces_of_ids(conn, tenant_id, &ids))
            .await
    }

    /// Deletes the `batch` traces stored first, whatever their tenant.
    pub async fn purge_oldest(&self, batch: usize) -> Result<usize> {
        self.write(move |conn| {
            let victims = select(conn, "ORDER BY seq LIMIT ?1", [batch as i64])?;
            delete(conn, victims)
        })
        .await
    }

    /// How much of the database holds data and how much is free.
    pub async fn space(&self) -> Result<Space> {
        let cap = self.cap.clone();
        let (space, to_come) = self
            .read(move |conn| {
                let pragma = |name: &str| -> rusqlite::Result<u64> {
                    conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0))
                        .map(|v| v.max(0) as u64)
                };
                let page = pragma("page_size")?;
                let pages = pragma("page_count")?;
                let free = pragma("freelist_count")?;
                let space = Space {
                    used_bytes: pages.saturating_sub(free) * page,
                    free_bytes: free * page,
                };
                Ok((space, cap.index_to_come(conn)?))
            })
            .await?;
        self.note_used(space.used_bytes + to_come);
        Ok(space)
    }

    /// One step of merging the search index's segments, `pages` pages of
    /// work (negative: across all levels, which drops every deleted entry);
    /// false when there was nothing to do.
    pub async fn merge_search_index(&self, pages: i32) -> Result<bool> {
        self.write(move |conn| merge_search_index(conn, pages))
            .await
    }

    /// How many traces are stored, all tenants together.
    pub async fn trace_count(&self) -> Result<u64> {
        self.read(|conn| {
            let n: i64 = conn.query_row("SELECT count(*) FROM traces", [], |r| r.get(0))?;
            Ok(n.max(0) as u64)
        })
        .await
    }

    /// Gives up to `pages` free pages back to the file system; returns how
    /// many free pages remain.
    pub async fn reclaim(&self, pages: u32) -> Result<u64> {
        self.write(move |conn| {
            // Each step of the pragma frees one page: run it to the end.
            let mut stmt = conn.prepare(&format!("PRAGMA incremental_vacuum({pages})"))?;
            let mut rows = stmt.query([])?;
            while rows.next()?.is_some() {}
            let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
            Ok(free.max(0) as u64)
        })
        .await
    }
}

fn merge_search_index(conn: &Connection, pages: i32) -> Result<bool> {
    let before = conn.total_changes();
    conn.prepare_cached("INSERT INTO trace_docs (trace_docs, rank) VALUES ('merge', ?1)")?
        .execute([pages])?;
    // The command counts as a change itself; work writes many more.
    Ok(conn.total_changes() - before > 1)
}

/// Deletes the traces of `seqs`, as a purge deletes them: with their spans,
/// events, tags, feedback, evaluations and search entries, and out of the
/// metrics rollups. Returns how many there were. For erasure, which picks
/// its traces by their subject rather than by age.
pub(super) fn delete_traces(conn: &Connection, seqs: &[i64]) -> Result<usize> {
    if seqs.is_empty() {
        return Ok(0);
    }
    let list = serde_json::to_string(seqs).unwrap_or_else(|_| "[]".into());
    let victims = select(
        conn,
        "WHERE seq IN (SELECT value FROM json_each(?1))",
        [list],
    )?;
    delete(conn, victims)
}

/// A trace to delete: its tenant, seq and rollup contribution.
type Victim = (i64, i64, Contribution);

fn select(conn: &Connection, tail: &str, args: impl rusqlite::Params) -> Result<Vec<Victim>> {
    let sql = format!(
        "SELECT tenant_id, seq, project_id, started_at, model, error IS NOT NULL, cost, \
         total_token_count, latency_ms, error_fingerprint FROM traces {tail}"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let victims = stmt
        .query_map(args, |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                Contribution {
                    project_id: r.get(2)?,
                    started_at: r.get(3)?,
                    model: r.get(4)?,
                    error: r.get(5)?,
                    cost: r.get(6)?,
                    tokens: r.get(7)?,
                    latency_ms: r.get(8)?,
                    // Taking a trace out needs only its cluster's fingerprint.
                    failure: r.get::<_, Option<i64>>(9)?.map(|fingerprint| Failure {
                        fingerprint,
                        message: String::new(),
                    }),
                },
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(victims)
}

/// Deletes the tenant's traces of these ids (those it has), in the
/// caller's transaction, with everything kept of them: spans, events,
/// tags, feedback, search entries, and their share of the metrics rollups
/// and failure clusters. Returns how many were deleted. For erasures other
/// than retention (a data subject's traces, say).
fn delete_traces_of_ids(conn: &Connection, tenant_id: i64, ids: &[String]) -> Result<usize> {
    let mut victims = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        let marks = vec!["?"; chunk.len()].join(", ");
        let mut args: Vec<rusqlite::types::Value> = vec![tenant_id.into()];
        args.extend(chunk.iter().map(|id| id.clone().into()));
        victims.extend(select(
            conn,
            &format!("WHERE tenant_id = ? AND id IN ({marks})"),
            rusqlite::params_from_iter(args),
        )?);
    }
    delete(conn, victims)
}

fn delete(conn: &Connection, victims: Vec<Victim>) -> Result<usize> {
    let mut stmt = conn.prepare_cached("DELETE FROM traces WHERE seq = ?1")?;
    let mut removed: BTreeMap<i64, Vec<(Contribution, i64)>> = BTreeMap::new();
    for (tenant_id, seq, contribution) in victims {
        stmt.execute([seq])?;
        removed
            .entry(tenant_id)
            .or_default()
            .push((contribution, -1));
    }
    let mut count = 0;
    for (tenant_id, items) in removed {
        rollups::apply(conn, tenant_id, &items)?;
        count += items.len();
    }
    super::search_index::clamp_marks(conn)?;
    super::eval_rules::clamp_mark(conn)?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn used_bytes(conn: &Connection) -> i64 {
        let get = |p: &str| -> i64 {
            conn.query_row(&format!("PRAGMA {p}"), [], |r| r.get(0))
                .expect("pragma")
        };
        (get("page_count") - get("freelist_count")) * get("page_size")
    }

    /// Space a purge frees must be free at once: the size cap deletes until
    /// the database is small enough, and would otherwise delete everything.
    #[test]
    fn deleting_traces_frees_their_space_search_index_included() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut conn = Connection::open(dir.path().join("t.db")).expect("open");
        conn.execute_batch("PRAGMA foreign_keys = ON")
            .expect("pragma");
        super::super::add_unpack(&conn);
        super::super::migrations::migrate(&mut conn, dir.path()).expect("migrate");
        let empty = used_bytes(&conn);
        for i in 0..40_i64 {
            // Many distinct words, as real inputs and outputs have.
            let text: String = (0..600).map(|w| format!("w{i}x{w} ")).collect();
            let tx = conn.transaction().expect("tx");
            tx.execute(
                "INSERT INTO traces (tenant_id, project_id, id, name, input, started_at, \
                 created_at, content_hash) VALUES (1, 1, ?1, 't', ?2, ?3, ?3, x'00')",
                params![format!("trace-{i}"), text, i],
            )
            .expect("trace");
            let seq = tx.last_insert_rowid();
            tx.execute(
                "INSERT INTO spans (trace_seq, id, name, type, output, created_at) \
                 VALUES (?1, 's', 'llm', 'llm', ?2, ?3)",
                params![seq, text, i],
            )
            .expect("span");
            tx.commit().expect("commit");
        }
        let indexed = super::super::search_index::index_batch(
            &conn,
            super::super::search_index::IndexBatch { traces: 1000 },
        )
        .expect("index");
        assert_eq!(indexed, 40, "a row for each trace, its span included");
        let full = used_bytes(&conn);
        let victims = select(&conn, "ORDER BY seq LIMIT ?1", [1000]).expect("select");
        assert_eq!(delete(&conn, victims).expect("delete"), 40);
        let deleted = used_bytes(&conn);
        let mut steps = 0;
        while merge_search_index(&conn, -64).expect("merge") {
            steps += 1;
            assert!(steps < 100, "the merge does not finish");
        }
        let after = used_bytes(&conn);
        assert!(
            deleted > after,
            "the merge freed nothing: {deleted} -> {after}"
        );
        assert!(
            after - empty < (full - empty) / 10,
            "empty {empty}, full {full}, after deleting everything {after}"
        );
    }
}
