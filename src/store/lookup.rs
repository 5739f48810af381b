//! The tag index, merged in sorted batches.
//!
//! A trace's tags are stored with it (`trace_tags`, in seq order), but the
//! index that finds traces by tag (`tag_lookup`, by tenant, key, value and
//! time) is filled later: an entry added the moment its trace arrives lands
//! at a random place in the index, so every group commit rewrote hundreds
//! of its pages. Merged thousands at a time and in key order, many entries
//! share each page, and the pages are written far less often.
//!
//! A merge runs in steps, each a short writer job, so ingest commits between
//! them:
//! 1. the writer fixes the batch: the traces after `tags_seq` up to
//!    `tags_upto`; from then on the triggers apply any change to their tags
//!    to the index at once;
//! 2. a reader takes the batch's tags in key order;
//! 3. writer jobs add them a slice at a time, each entry only if its row is
//!    still as it was read (a trigger has dealt with any that changed);
//! 4. the writer moves `tags_seq` up to `tags_upto`.
//!
//! A query by tag reads the index up to `tags_seq` and `trace_tags` after
//! it (see `traces::list`), so it never misses a trace nor counts one twice,
//! whatever step a merge is at. A merge cut short by a stop is simply run
//! again: adding an entry twice is a no-op.

use std::ops::Range;
use std::sync::Arc;

use rusqlite::{params, Connection};

use super::{Result, Store};

/// The most traces one merge takes. A trace has at most 20 tags of at most
/// 64 characters a key or value, so a batch holds at most 320k entries and
/// 40 MiB of text; common tags make it a few MiB.
pub(super) const MERGE_MAX_TRACES: i64 = 16 * 1024;
/// Index entries added per writer job: about as long as one ingest request
/// of 100 traces takes the writer (some 3 µs an entry).
const MERGE_SLICE: usize = 2048;

/// How many of a merge's slices wait in the writer's queue at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergePace {
    /// Two: under load each waits its turn behind the requests.
    Steady,
    /// Four, for a merger that has fallen behind ingest: it takes a larger
    /// share of the writer until it has caught up.
    CatchUp,
}

impl MergePace {
    fn in_flight(self) -> usize {
        match self {
            MergePace::Steady => 2,
            MergePace::CatchUp => 4,
        }
    }
}

/// The text of a merge's entries, in one buffer: an entry holds ranges of
/// it, so a batch of tens of thousands is two allocations, not two per
/// entry (small allocations freed on another thread leave the allocator's
/// arenas fragmented). Shared with the session merge.
#[derive(Debug, Default)]
pub(super) struct Texts(String);

/// A range of a batch's `Texts`.
pub(super) type TextRange = (u32, u32);

impl Texts {
    pub(super) fn push(&mut self, s: &str) -> TextRange {
        let start = self.0.len() as u32;
        self.0.push_str(s);
        (start, self.0.len() as u32)
    }

    pub(super) fn get(&self, (start, end): TextRange) -> &str {
        self.0.get(start as usize..end as usize).unwrap_or_default()
    }
}

/// One tag of one trace, as the index orders them; its key and value are
/// ranges of the batch's text.
#[derive(Debug, Clone, Copy)]
struct Entry {
    tenant_id: i64,
    started_at: i64,
    trace_seq: i64,
    key: TextRange,
    value: TextRange,
}

/// A merge's tags, sorted in the index's order.
#[derive(Debug, Default)]
struct Batch {
    text: Texts,
    entries: Vec<Entry>,
}

impl Batch {
    fn push(&mut self, tenant_id: i64, key: &str, value: &str, started_at: i64, trace_seq: i64) {
        let key = self.text.push(key);
        let value = self.text.push(value);
        self.entries.push(Entry {
            tenant_id,
            started_at,
            trace_seq,
            key,
            value,
        });
    }
}

impl Store {
    /// Traces stored whose tags are not yet in the tag index.
    pub async fn tag_backlog(&self) -> Result<i64> {
        self.read(|conn| {
            Ok(conn.query_row(
                "SELECT coalesce((SELECT max(seq) FROM traces), 0) - tags_seq FROM lookup_state",
                [],
                |r| r.get::<_, i64>(0),
            )?)
        })
        .await
        .map(|n| n.max(0))
    }

    /// Merges the tags of up to `max_traces` traces into the tag index;
    /// returns how many traces the merge covered (0: the index is current).
    pub async fn merge_tags(&self, max_traces: i64, pace: MergePace) -> Result<i64> {
        let (from, upto) = self
            .write(move |conn| begin_merge(conn, max_traces))
            .await?;
        if upto <= from {
            return Ok(0);
        }
        let batch = Arc::new(self.read(move |conn| read_batch(conn, from, upto)).await?);
        let len = batch.entries.len();
        write_in_slices(self, batch, len, MERGE_SLICE, pace, add_entries).await?;
        self.write(move |conn| finish_merge(conn, upto)).await?;
        Ok(upto - from)
    }
}

/// Runs `apply` over a merge's `len` entries, `slice` at a time, each slice
/// a writer job of its own so that ingest commits between them; `pace` says
/// how many wait in the writer's queue at a time. One at a time, the merge
/// fell behind ingest (6,000 traces/s against 16,000).
pub(super) async fn write_in_slices<B: Send + Sync + 'static>(
    store: &Store,
    batch: Arc<B>,
    len: usize,
    slice: usize,
    pace: MergePace,
    apply: fn(&Connection, &B, Range<usize>) -> Result<()>,
) -> Result<()> {
    let slices: Vec<Range<usize>> = (0..len)
        .step_by(slice.max(1))
        .map(|at| at..(at + slice).min(len))
        .collect();
    for together in slices.chunks(pace.in_flight()) {
        let jobs = together.iter().map(|range| {
            let (batch, range) = (batch.clone(), range.clone());
            store.write(move |conn| apply(conn, &batch, range.clone()))
        });
        futures_util::future::try_join_all(jobs).await?;
    }
    Ok(())
}

/// Step 1: fixes the batch; returns its bounds (`from`, `upto`].
fn begin_merge(conn: &Connection, max_traces: i64) -> Result<(i64, i64)> {
    let (done, upto): (i64, i64) = conn
        .prepare_cached("SELECT tags_seq, tags_upto FROM lookup_state")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let last: i64 = conn
        .prepare_cached("SELECT coalesce(max(seq), 0) FROM traces")?
        .query_row([], |r| r.get(0))?;
    // A merge cut short keeps its end; a new one takes the next traces, up
    // to the last stored.
    let end = upto.max(done.saturating_add(max_traces).min(last));
    if end != upto {
        conn.prepare_cached("UPDATE lookup_state SET tags_upto = ?1")?
            .execute([end])?;
    }
    Ok((done, end))
}

/// Step 2, on a reader: the batch's tags in the index's order.
fn read_batch(conn: &Connection, from: i64, upto: i64) -> Result<Batch> {
    // Read in the table's order and sorted here: SQLite's sorter would hold
    // as much again in its own memory.
    let mut stmt = conn.prepare_cached(
        "SELECT tenant_id, key, value, started_at, trace_seq FROM trace_tags \
         WHERE trace_seq > ?1 AND trace_seq <= ?2",
    )?;
    let mut rows = stmt.query([from, upto])?;
    let mut batch = Batch::default();
    while let Some(r) = rows.next()? {
        batch.push(
            r.get(0)?,
            r.get_ref(1)?.as_str().map_err(rusqlite::Error::from)?,
            r.get_ref(2)?.as_str().map_err(rusqlite::Error::from)?,
            r.get(3)?,
            r.get(4)?,
        );
    }
    let Batch { text, entries } = &mut batch;
    let order = |e: &Entry| {
        (
            e.tenant_id,
            text.get(e.key),
            text.get(e.value),
            e.started_at,
            e.trace_seq,
        )
    };
    entries.sort_unstable_by(|a, b| order(a).cmp(&order(b)));
    Ok(batch)
}

/// Step 4: the batch is in the index.
fn finish_merge(conn: &Connection, upto: i64) -> Result<()> {
    conn.prepare_cached("UPDATE lookup_state SET tags_seq = ?1 WHERE tags_upto = ?1")?
        .execute([upto])?;
    Ok(())
}

/// Step 3: adds entries read from `trace_tags`, each only if its row still
/// holds it: a row changed or deleted since was dealt with by the triggers.
fn add_entries(conn: &Connection, batch: &Batch, range: Range<usize>) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT OR IGNORE INTO tag_lookup (tenant_id, key, value, started_at, trace_seq) \
         SELECT tenant_id, key, value, started_at, trace_seq FROM trace_tags \
         WHERE trace_seq = ?1 AND key = ?2 AND tenant_id = ?3 AND value = ?4 AND started_at = ?5",
    )?;
    for e in batch.entries.get(range).unwrap_or_default() {
        stmt.execute(params![
            e.trace_seq,
            batch.text.get(e.key),
            e.tenant_id,
            batch.text.get(e.value),
            e.started_at
        ])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::traces::{list, TraceFilter};

    /// Stores a trace as ingest does (the trace, then its tags); its seq.
    fn store(conn: &Connection, id: &str, started_at: i64, tags: &[(&str, &str)]) -> i64 {
        conn.execute(
            "INSERT INTO traces (tenant_id, project_id, id, started_at, created_at, content_hash) \
             VALUES (1, 1, ?1, ?2, 0, x'00')",
            params![id, started_at],
        )
        .expect("trace");
        let seq = conn.last_insert_rowid();
        for (key, value) in tags {
            conn.execute(
                "INSERT INTO trace_tags (trace_seq, tenant_id, key, value, started_at) \
                 VALUES (?1, 1, ?2, ?3, ?4)",
                params![seq, key, value, started_at],
            )
            .expect("tag");
        }
        seq
    }

    /// Every trace a tag filter lists, walking pages of `page` traces.
    fn tagged(conn: &Connection, key: &str, value: &str, page: usize) -> Vec<String> {
        let filter = TraceFilter {
            tag: Some((key.into(), value.into())),
            ..Default::default()
        };
        let mut ids = Vec::new();
        let mut after = None;
        loop {
            let found = list(conn, 1, &filter, after, page).expect("list");
            ids.extend(found.traces.into_iter().map(|t| t.id));
            match found.next {
                Some(next) => after = Some(next),
                None => return ids,
            }
        }
    }

    fn indexed(conn: &Connection) -> Vec<(String, String, i64)> {
        let mut stmt = conn
            .prepare("SELECT key, value, trace_seq FROM tag_lookup ORDER BY trace_seq, key")
            .expect("prepare");
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("query");
        rows.collect::<rusqlite::Result<_>>().expect("rows")
    }

    fn ids(range: impl Iterator<Item = i64>) -> Vec<String> {
        // Newest first: the traces start in the order they are stored.
        let mut ids: Vec<String> = range.map(|i| format!("t{i}")).collect();
        ids.reverse();
        ids
    }

    #[test]
    fn tag_queries_find_every_trace_once_whatever_step_a_merge_is_at() {
        let (_dir, conn) = super::super::test_database();
        for i in 1..=10 {
            let customer = if i % 2 == 0 { "even" } else { "odd" };
            store(
                &conn,
                &format!("t{i}"),
                i,
                &[("env", "prod"), ("customer", customer)],
            );
        }
        let all = ids(1..=10);
        // Nothing merged yet: the stored tags alone answer.
        assert!(indexed(&conn).is_empty());
        assert_eq!(tagged(&conn, "env", "prod", 3), all);

        // A merge of the first six, step by step, with ingest, a change of
        // tag and a delete in between.
        assert_eq!(begin_merge(&conn, 6).expect("begin"), (0, 6));
        let batch = read_batch(&conn, 0, 6).expect("read");
        assert_eq!(batch.entries.len(), 12);
        add_entries(&conn, &batch, 0..5).expect("add");
        assert_eq!(tagged(&conn, "env", "prod", 3), all);
        assert_eq!(tagged(&conn, "env", "prod", 50), all);
        store(&conn, "t11", 11, &[("env", "prod")]);
        conn.execute(
            "UPDATE trace_tags SET value = 'staging' WHERE trace_seq = 2 AND key = 'env'",
            [],
        )
        .expect("change a tag");
        conn.execute("DELETE FROM traces WHERE seq = 3", [])
            .expect("delete a trace");
        add_entries(&conn, &batch, 5..12).expect("add");
        let prod = ids([1, 4, 5, 6, 7, 8, 9, 10, 11].into_iter());
        assert_eq!(tagged(&conn, "env", "prod", 4), prod);
        finish_merge(&conn, 6).expect("finish");
        assert_eq!(tagged(&conn, "env", "prod", 4), prod);
        assert_eq!(tagged(&conn, "env", "staging", 4), ["t2"]);
        assert_eq!(
            tagged(&conn, "customer", "odd", 2),
            ids([1, 5, 7, 9].into_iter())
        );
        // The index holds the merged traces' tags as they are now: not the
        // value read before the change, nothing of the deleted trace.
        let expected: Vec<(String, String, i64)> = [1, 2, 4, 5, 6]
            .into_iter()
            .flat_map(|seq| {
                let customer = if seq % 2 == 0 { "even" } else { "odd" };
                let env = if seq == 2 { "staging" } else { "prod" };
                [
                    ("customer".to_string(), customer.to_string(), seq),
                    ("env".to_string(), env.to_string(), seq),
                ]
            })
            .collect();
        assert_eq!(indexed(&conn), expected);

        // The next merge takes the rest; the answers stay the same.
        assert_eq!(begin_merge(&conn, 100).expect("begin"), (6, 11));
        let rest = read_batch(&conn, 6, 11).expect("read");
        add_entries(&conn, &rest, 0..rest.entries.len()).expect("add");
        finish_merge(&conn, 11).expect("finish");
        assert_eq!(tagged(&conn, "env", "prod", 4), prod);
        // Nine traces of two tags, t11 of one.
        assert_eq!(indexed(&conn).len(), 2 * 9 + 1);
        // Deleting a merged trace takes its entries out of the index.
        conn.execute("DELETE FROM traces WHERE seq = 10", [])
            .expect("delete");
        assert!(indexed(&conn).iter().all(|(_, _, seq)| *seq != 10));
        assert_eq!(
            tagged(&conn, "env", "prod", 4),
            ids([1, 4, 5, 6, 7, 8, 9, 11].into_iter())
        );
        assert_eq!(begin_merge(&conn, 100).expect("begin"), (11, 11));
    }

    #[test]
    fn an_upgraded_database_finds_its_tags_in_the_index() {
        // A database of the schema before the tag index moved.
        let (dir, mut conn) = super::super::test_database_at(9);
        for i in 1..=3 {
            store(&conn, &format!("t{i}"), i, &[("env", "prod")]);
        }
        super::super::migrations::migrate(&mut conn, dir.path()).expect("upgrade");
        let state: (i64, i64) = conn
            .query_row("SELECT tags_seq, tags_upto FROM lookup_state", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .expect("state");
        assert_eq!(state, (3, 3));
        assert_eq!(indexed(&conn).len(), 3);
        assert_eq!(begin_merge(&conn, 100).expect("begin"), (3, 3));
        store(&conn, "t4", 4, &[("env", "prod")]);
        assert_eq!(tagged(&conn, "env", "prod", 2), ids(1..=4));
    }

    #[test]
    fn a_merge_cut_short_is_run_again_to_the_same_end() {
        let (_dir, conn) = super::super::test_database();
        for i in 1..=4 {
            store(&conn, &format!("t{i}"), i, &[("env", "prod")]);
        }
        assert_eq!(begin_merge(&conn, 3).expect("begin"), (0, 3));
        let batch = read_batch(&conn, 0, 3).expect("read");
        add_entries(&conn, &batch, 0..2).expect("add");
        // Stopped here. Meanwhile a trace of the batch gets a new tag.
        conn.execute(
            "INSERT INTO trace_tags (trace_seq, tenant_id, key, value, started_at) \
             VALUES (3, 1, 'team', 'a', 3)",
            [],
        )
        .expect("tag");
        // Started again: the same batch, whatever the new limit.
        assert_eq!(begin_merge(&conn, 1).expect("begin"), (0, 3));
        let batch = read_batch(&conn, 0, 3).expect("read");
        assert_eq!(batch.entries.len(), 4);
        add_entries(&conn, &batch, 0..4).expect("add");
        finish_merge(&conn, 3).expect("finish");
        let seqs: Vec<i64> = indexed(&conn).into_iter().map(|(_, _, seq)| seq).collect();
        assert_eq!(seqs, [1, 2, 3, 3]);
        assert_eq!(tagged(&conn, "team", "a", 10), ["t3"]);
        assert_eq!(tagged(&conn, "env", "prod", 10), ids(1..=4));
    }
}
