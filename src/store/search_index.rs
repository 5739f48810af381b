//! The deferred full-text index: ingest stores rows only, and batches of
//! them are added to the FTS5 tables later (by the indexer in `upkeep`, and
//! before a search by the search itself), so words are not split on the
//! path of ingest requests.

use rusqlite::Connection;

use super::{Result, Store, StoreError};

/// How many rows one indexing job adds at most, of each kind. A row costs
/// the writer some 10-20 µs (its words are split and stored), so the size
/// of a batch is how long the requests queued behind it wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexBatch {
    pub traces: usize,
    pub spans: usize,
}

impl IndexBatch {
    /// Everything that waits.
    pub(super) const ALL: IndexBatch = IndexBatch {
        traces: i64::MAX as usize,
        spans: i64::MAX as usize,
    };
}

/// What a search indexes before it runs, so that a search right after
/// ingest finds what was just stored; a longer backlog (sustained heavy
/// ingest) is left to the indexer and the search sees the index as it is.
pub const CATCH_UP: IndexBatch = IndexBatch {
    traces: 256,
    spans: 4096,
};

impl Store {
    /// Adds up to a batch of the traces and spans not yet indexed to the
    /// search index; returns how many rows it indexed.
    pub async fn index_search(&self, batch: IndexBatch) -> Result<usize> {
        let stored = self.stored_changes();
        let cap = self.cap.clone();
        let indexed = self.write(move |conn| cap.index(conn, batch)).await?;
        if indexed == 0 {
            self.note_indexed(stored);
        }
        Ok(indexed)
    }

    /// Before a search: indexes a short backlog, or nothing at all (and
    /// without a trip through the writer) when nothing was stored since the
    /// index last caught up.
    pub(super) async fn catch_up_search(&self) -> Result<()> {
        if !self.index_current() {
            match self.index_search(CATCH_UP).await {
                // On a full disk the search finds what is indexed already.
                Ok(_) | Err(StoreError::DiskFull(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Lets the write connection give its page cache back to the system,
    /// for a server that has gone quiet.
    pub async fn release_write_memory(&self) -> Result<()> {
        self.write(|conn| Ok(conn.execute_batch("PRAGMA shrink_memory")?))
            .await
    }

    /// Rows stored but not yet in the search index (traces and spans,
    /// counted by key: deleted rows in between count too).
    pub async fn search_backlog(&self) -> Result<u64> {
        self.read(unindexed_rows).await
    }
}

/// Rows stored but not yet in the search index (see `search_backlog`),
/// traces whose row must be written again included.
pub(super) fn unindexed_rows(conn: &Connection) -> Result<u64> {
    let n: i64 = conn
        .prepare_cached(
            "SELECT coalesce((SELECT max(seq) FROM traces), 0) - traces_seq \
             + (SELECT count(*) FROM trace_docs_dirty) \
             + coalesce((SELECT max(rid) FROM spans), 0) - spans_rid FROM search_state",
        )?
        .query_row([], |r| r.get(0))?;
    Ok(n.max(0) as u64)
}

/// One batch of deferred indexing, in the writer's transaction.
pub(super) fn index_batch(conn: &Connection, batch: IndexBatch) -> Result<usize> {
    let (done_seq, done_rid): (i64, i64) = conn
        .prepare_cached("SELECT traces_seq, spans_rid FROM search_state")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let mut indexed = 0;
    let mut marks = (done_seq, done_rid);
    // Traces are indexed one row each with their spans' text (see
    // `trace_docs`); `traces_seq` follows that index's mark, so the backlog
    // counts them as before.
    indexed += super::trace_docs::index_docs(conn, batch.traces)?;
    marks.0 = conn
        .prepare_cached("SELECT seq FROM trace_docs_state")?
        .query_row([], |r| r.get(0))?;
    for (table, fts, key, done, limit, mark) in [(
        "spans",
        "spans_fts",
        "rid",
        done_rid,
        batch.spans,
        &mut marks.1,
    )] {
        let upto: Option<i64> = conn
            .prepare_cached(&format!(
                "SELECT max({key}) FROM (SELECT {key} FROM {table} WHERE {key} > ?1 \
                 ORDER BY {key} LIMIT ?2)"
            ))?
            .query_row(rusqlite::params![done, limit as i64], |r| r.get(0))?;
        let Some(upto) = upto else {
            continue;
        };
        indexed += conn
            .prepare_cached(&format!(
                "INSERT INTO {fts} (rowid, name, input, output, error) \
                 SELECT {key}, name, input, output, error FROM {table} \
                 WHERE {key} > ?1 AND {key} <= ?2"
            ))?
            .execute([done, upto])?;
        *mark = upto;
    }
    if marks != (done_seq, done_rid) {
        conn.prepare_cached("UPDATE search_state SET traces_seq = ?1, spans_rid = ?2")?
            .execute([marks.0, marks.1])?;
    }
    Ok(indexed)
}

/// After deletes: a mark past the last row left would let a new row reuse
/// a deleted key below it and never be indexed, so marks come back down.
pub(super) fn clamp_marks(conn: &Connection) -> Result<()> {
    conn.prepare_cached(
        "UPDATE search_state SET \
         traces_seq = min(traces_seq, coalesce((SELECT max(seq) FROM traces), 0)), \
         spans_rid = min(spans_rid, coalesce((SELECT max(rid) FROM spans), 0))",
    )?
    .execute([])?;
    conn.prepare_cached(
        "UPDATE trace_docs_state SET seq = min(seq, coalesce((SELECT max(seq) FROM traces), 0))",
    )?
    .execute([])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_indexes_at_most_its_traces_and_spans_and_the_next_goes_on() {
        let (_dir, conn) = super::super::test_database();
        // Ten traces of twenty spans each: the spans far outnumber the
        // traces, as in agent runs.
        for i in 0..10 {
            conn.execute(
                "INSERT INTO traces (tenant_id, project_id, id, name, started_at, created_at, \
                 content_hash) VALUES (1, 1, ?1, 'refund', 0, 0, x'00')",
                [format!("t{i}")],
            )
            .expect("trace");
            let seq = conn.last_insert_rowid();
            for k in 0..20 {
                conn.execute(
                    "INSERT INTO spans (trace_seq, id, name, type, created_at) \
                     VALUES (?1, ?2, 'refund', 'tool', 0)",
                    rusqlite::params![seq, format!("s{k}")],
                )
                .expect("span");
            }
        }
        let indexed = |table: &str| -> i64 {
            let column = if table == "trace_docs" { "body : " } else { "" };
            conn.query_row(
                &format!("SELECT count(*) FROM {table} WHERE {table} MATCH '{column}refund'"),
                [],
                |r| r.get(0),
            )
            .expect("count")
        };
        let small = IndexBatch {
            traces: 2,
            spans: 8,
        };
        assert_eq!(index_batch(&conn, small).expect("index"), 10);
        assert_eq!((indexed("trace_docs"), indexed("spans_fts")), (2, 8));
        assert_eq!(index_batch(&conn, small).expect("index"), 10);
        assert_eq!((indexed("trace_docs"), indexed("spans_fts")), (4, 16));
        // Then the rest, each row once.
        let rest = IndexBatch {
            traces: 100,
            spans: 1000,
        };
        assert_eq!(index_batch(&conn, rest).expect("index"), 6 + 184);
        assert_eq!((indexed("trace_docs"), indexed("spans_fts")), (10, 200));
        assert_eq!(index_batch(&conn, rest).expect("index"), 0);
    }
}
