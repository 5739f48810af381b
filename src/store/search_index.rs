//! The deferred full-text index: ingest stores rows only, and batches of
//! traces get their index rows (see `trace_docs`) later, from the indexer in
//! `upkeep` and before a search from the search itself, so words are not
//! split on the path of ingest requests.

use rusqlite::Connection;

use super::{Result, Store, StoreError};

/// How many traces one indexing job writes the rows of at most, of new
/// traces and again of changed ones. A trace of a few spans costs the
/// writer some 30 µs (its and its spans' words are split and stored), so
/// the size of a batch is how long the requests queued behind it wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexBatch {
    pub traces: usize,
}

impl IndexBatch {
    /// Everything that waits.
    pub(super) const ALL: IndexBatch = IndexBatch {
        traces: i64::MAX as usize,
    };
}

/// What a search indexes before it runs, so that a search right after
/// ingest finds what was just stored; a longer backlog (sustained heavy
/// ingest) is left to the indexer and the search sees the index as it is.
pub const CATCH_UP: IndexBatch = IndexBatch { traces: 256 };

impl Store {
    /// Writes the index rows of up to a batch of the traces not yet indexed
    /// or changed since; returns how many rows it wrote.
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

    /// Traces whose index row is still to be written: new ones (counted
    /// by key: deleted ones in between count too) and changed ones.
    pub async fn search_backlog(&self) -> Result<u64> {
        self.read(unindexed_rows).await
    }
}

/// Index rows still to be written (see `search_backlog`).
pub(super) fn unindexed_rows(conn: &Connection) -> Result<u64> {
    let n: i64 = conn
        .prepare_cached(
            "SELECT coalesce((SELECT max(seq) FROM traces), 0) - seq \
             + (SELECT count(*) FROM trace_docs_dirty) FROM trace_docs_state",
        )?
        .query_row([], |r| r.get(0))?;
    Ok(n.max(0) as u64)
}

/// One batch of deferred indexing, in the writer's transaction.
pub(super) fn index_batch(conn: &Connection, batch: IndexBatch) -> Result<usize> {
    super::trace_docs::index_docs(conn, batch.traces)
}

/// After deletes: a mark past the last trace left would let a new trace
/// reuse a deleted key below it and never be indexed, so the mark comes
/// back down.
pub(super) fn clamp_marks(conn: &Connection) -> Result<()> {
    conn.prepare_cached(
        "UPDATE trace_docs_state SET seq = min(seq, coalesce((SELECT max(seq) FROM traces), 0))",
    )?
    .execute([])?;
    Ok(())
}
