//! The session index, merged in sorted batches.
//!
//! Sessions are random ids, so an index entry added the moment its trace
//! arrives lands at a random place, and every group commit rewrote hundreds
//! of the index's pages. Instead a trace's entry waits in `session_pending`
//! (in seq order: appending costs a page or two per commit) until a merge
//! moves it, thousands at a time and in key order, into `session_lookup`.
//!
//! An entry is in exactly one of the two tables: each writer job of a merge
//! adds a slice of entries to the index and takes them out of the queue in
//! the same transaction. So a query by session reads both (see
//! [`ARMS`]), and whatever step a merge is at, it finds each trace once.
//! A trace whose session or start changes goes back to the queue, and a
//! deleted one leaves both tables (triggers of migration 11).
//!
//! The queue stays small: a merge runs when ingest pauses, and under load
//! once it holds some thousands (see `upkeep`). A query reads it whole, so
//! a large queue makes queries by session slower, never wrong.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use rusqlite::{params, Connection};

use super::lookup::{write_in_slices, MergePace, TextRange, Texts, MERGE_MAX_TRACES};
use super::{Result, Store};

/// The two tables a query by session reads: the index, then the queue.
/// Both have `tenant_id`, `session_id`, `started_at`, `trace_seq` and
/// `project_id` columns.
pub(super) const ARMS: [&str; 2] = ["session_lookup", "session_pending"];

/// Entries moved per writer job: an insert and a delete each, some 5 µs,
/// so about as long as one ingest request takes the writer.
const MERGE_SLICE: usize = 1024;

/// Queues a newly stored trace's session entry for the index: run with
/// (trace_seq, tenant_id, project_id, session_id, started_at), see [`queue`].
pub(super) const QUEUE: &str = "INSERT OR REPLACE INTO session_pending \
     (trace_seq, tenant_id, project_id, session_id, started_at) VALUES (?1, ?2, ?3, ?4, ?5)";

/// Queues a newly stored trace's session entry for the index, with `stmt`
/// prepared from [`QUEUE`]; a trace without a session has none.
pub(super) fn queue(
    stmt: &mut rusqlite::Statement<'_>,
    trace_seq: i64,
    tenant_id: i64,
    project_id: i64,
    session_id: Option<&str>,
    started_at: i64,
) -> Result<()> {
    if let Some(session) = session_id {
        stmt.execute(params![
            trace_seq, tenant_id, project_id, session, started_at
        ])?;
    }
    Ok(())
}

/// One queued entry; its session is a range of the batch's text.
#[derive(Debug, Clone, Copy)]
struct Entry {
    tenant_id: i64,
    session: TextRange,
    started_at: i64,
    trace_seq: i64,
}

/// A merge's entries in the index's order.
#[derive(Debug, Default)]
struct Batch {
    text: Texts,
    entries: Vec<Entry>,
}

impl Store {
    /// Session entries waiting for the session index.
    pub async fn session_backlog(&self) -> Result<i64> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached("SELECT count(*) FROM session_pending")?
                .query_row([], |r| r.get::<_, i64>(0))?)
        })
        .await
    }

    /// Traces waiting for the tag index or entries for the session index,
    /// whichever is more.
    pub async fn index_backlog(&self) -> Result<i64> {
        Ok(self.tag_backlog().await?.max(self.session_backlog().await?))
    }

    /// One merge of each index, of at most [`MERGE_MAX_TRACES`] traces;
    /// returns how many traces each covered.
    pub async fn merge_indexes(&self, pace: MergePace) -> Result<(i64, i64)> {
        let tags = self.merge_tags(MERGE_MAX_TRACES, pace).await?;
        let sessions = self.merge_sessions(MERGE_MAX_TRACES, pace).await?;
        Ok((tags, sessions))
    }

    /// Moves up to `max` queued session entries into the session index, the
    /// oldest first; returns how many it read (0: the index is current).
    pub async fn merge_sessions(&self, max: i64, pace: MergePace) -> Result<i64> {
        let batch = Arc::new(self.read(move |conn| read_batch(conn, max)).await?);
        let len = batch.entries.len();
        write_in_slices(self, batch, len, MERGE_SLICE, pace, move_entries).await?;
        Ok(len as i64)
    }
}

/// On a reader: the oldest queued entries, sorted in the index's order.
fn read_batch(conn: &Connection, max: i64) -> Result<Batch> {
    let mut stmt = conn.prepare_cached(
        "SELECT tenant_id, session_id, started_at, trace_seq FROM session_pending \
         ORDER BY trace_seq LIMIT ?1",
    )?;
    let mut rows = stmt.query([max])?;
    let mut batch = Batch::default();
    while let Some(r) = rows.next()? {
        let session = r.get_ref(1)?.as_str().map_err(rusqlite::Error::from)?;
        let session = batch.text.push(session);
        batch.entries.push(Entry {
            tenant_id: r.get(0)?,
            session,
            started_at: r.get(2)?,
            trace_seq: r.get(3)?,
        });
    }
    let Batch { text, entries } = &mut batch;
    let order = |e: &Entry| (e.tenant_id, text.get(e.session), e.started_at, e.trace_seq);
    entries.sort_unstable_by(|a, b| order(a).cmp(&order(b)));
    Ok(batch)
}

/// A writer job: moves entries from the queue into the index, each only if
/// it is still queued as it was read (a trace changed meanwhile was queued
/// again with its new entry, which the next merge takes).
fn move_entries(conn: &Connection, batch: &Batch, range: Range<usize>) -> Result<()> {
    let mut add = conn.prepare_cached(
        "INSERT OR IGNORE INTO session_lookup \
         (tenant_id, session_id, started_at, trace_seq, project_id) \
         SELECT tenant_id, session_id, started_at, trace_seq, project_id FROM session_pending \
         WHERE trace_seq = ?1 AND session_id = ?2 AND started_at = ?3",
    )?;
    let mut take = conn.prepare_cached(
        "DELETE FROM session_pending WHERE trace_seq = ?1 AND session_id = ?2 AND started_at = ?3",
    )?;
    for e in batch.entries.get(range).unwrap_or_default() {
        let session = batch.text.get(e.session);
        add.execute(params![e.trace_seq, session, e.started_at])?;
        take.execute(params![e.trace_seq, session, e.started_at])?;
    }
    Ok(())
}

/// A session's entries waiting for the index.
#[derive(Debug, Default)]
pub(super) struct Waiting {
    /// The latest (started_at, trace_seq) among them.
    pub latest: (i64, i64),
    pub seqs: Vec<i64>,
}

/// A tenant's queued entries by session (of one project, if given), for
/// queries that probe many sessions and would otherwise scan the queue once
/// for each.
pub(super) fn pending_by_session(
    conn: &Connection,
    tenant_id: i64,
    project_id: Option<i64>,
) -> Result<HashMap<String, Waiting>> {
    let mut stmt = conn.prepare_cached(
        "SELECT session_id, started_at, trace_seq FROM session_pending \
         WHERE tenant_id = ?1 AND (?2 IS NULL OR project_id = ?2)",
    )?;
    let mut rows = stmt.query(params![tenant_id, project_id])?;
    let mut by_session: HashMap<String, Waiting> = HashMap::new();
    while let Some(r) = rows.next()? {
        let key: (i64, i64) = (r.get(1)?, r.get(2)?);
        let waiting = by_session.entry(r.get(0)?).or_insert(Waiting {
            latest: key,
            seqs: Vec::new(),
        });
        waiting.latest = waiting.latest.max(key);
        waiting.seqs.push(key.1);
    }
    Ok(by_session)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::traces::{list, TraceFilter};

    /// Stores a trace as ingest does (the trace, then its queued entry).
    fn store(conn: &Connection, id: &str, started_at: i64, session: Option<&str>) -> i64 {
        conn.execute(
            "INSERT INTO traces (tenant_id, project_id, id, session_id, started_at, created_at, \
             total_token_count, content_hash) VALUES (1, 1, ?1, ?2, ?3, 0, ?3, x'00')",
            params![id, session, started_at],
        )
        .expect("trace");
        let seq = conn.last_insert_rowid();
        let mut stmt = conn.prepare_cached(QUEUE).expect("prepare");
        queue(&mut stmt, seq, 1, 1, session, started_at).expect("queue");
        seq
    }

    /// A session's traces as `GET /v1/traces?session_id=` lists them, newest
    /// first, walking pages of `page`.
    fn filtered(conn: &Connection, session: &str, page: usize) -> Vec<String> {
        let filter = TraceFilter {
            session_id: Some(session.into()),
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

    /// Sessions as `GET /v1/sessions` lists them, in pages of `page`: each
    /// with its trace count and token total.
    fn sessions(conn: &Connection, page: usize) -> Vec<(String, i64, i64)> {
        let mut found = Vec::new();
        let mut after = None;
        loop {
            let got = crate::store::sessions::list(conn, 1, None, after, page).expect("sessions");
            found.extend(got.sessions.into_iter().map(|s| (s.id, s.traces, s.tokens)));
            match got.next {
                Some(next) => after = Some(next),
                None => return found,
            }
        }
    }

    /// Checks every query by session against `expected`: each session's
    /// traces by number, in the order they started (which is seq order
    /// here), with the most recently active session first.
    fn check(conn: &Connection, expected: &[(&str, &[i64])], step: &str) {
        for (session, traces) in expected {
            let in_order: Vec<String> = traces.iter().map(|i| format!("t{i}")).collect();
            let mut newest_first = in_order.clone();
            newest_first.reverse();
            for page in [1, 2, 50] {
                assert_eq!(
                    filtered(conn, session, page),
                    newest_first,
                    "{session}, pages of {page}, {step}"
                );
            }
            let detail: Vec<String> = crate::store::sessions::traces_of(conn, 1, session)
                .expect("detail")
                .0
                .into_iter()
                .map(|t| t.id)
                .collect();
            assert_eq!(detail, in_order, "{session} detail, {step}");
        }
        let mut by_activity: Vec<(String, i64, i64)> = expected
            .iter()
            .map(|(s, traces)| (s.to_string(), traces.len() as i64, traces.iter().sum()))
            .collect();
        let last = |s: &str| {
            expected
                .iter()
                .find(|(name, _)| *name == s)
                .and_then(|(_, t)| t.last().copied())
        };
        by_activity.sort_by_key(|(s, _, _)| std::cmp::Reverse(last(s)));
        for page in [1, 2, 50] {
            assert_eq!(
                sessions(conn, page),
                by_activity,
                "sessions, pages of {page}, {step}"
            );
        }
    }

    fn merged(conn: &Connection) -> Vec<(String, i64)> {
        let mut stmt = conn
            .prepare("SELECT session_id, trace_seq FROM session_lookup ORDER BY trace_seq")
            .expect("prepare");
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query");
        rows.collect::<rusqlite::Result<_>>().expect("rows")
    }

    fn waiting(conn: &Connection) -> i64 {
        conn.query_row("SELECT count(*) FROM session_pending", [], |r| r.get(0))
            .expect("count")
    }

    #[test]
    fn session_queries_find_every_trace_once_whatever_step_a_merge_is_at() {
        let (_dir, conn) = crate::store::test_database();
        for i in 1..=10 {
            let session = match i {
                10 => None,
                _ if i % 2 == 1 => Some("a"),
                _ => Some("b"),
            };
            store(&conn, &format!("t{i}"), i, session);
        }
        // Nothing merged yet: the queue alone answers.
        assert_eq!(waiting(&conn), 9);
        check(
            &conn,
            &[("a", &[1, 3, 5, 7, 9]), ("b", &[2, 4, 6, 8])],
            "queued",
        );

        // A merge of the four oldest, in the index's order: a1, a3, b2, b4.
        let batch = read_batch(&conn, 4).expect("read");
        let order: Vec<i64> = batch.entries.iter().map(|e| e.trace_seq).collect();
        assert_eq!(order, [1, 3, 2, 4]);
        move_entries(&conn, &batch, 0..2).expect("move");
        assert_eq!(merged(&conn), [("a".into(), 1), ("a".into(), 3)]);
        assert_eq!(waiting(&conn), 7);
        check(
            &conn,
            &[("a", &[1, 3, 5, 7, 9]), ("b", &[2, 4, 6, 8])],
            "half moved",
        );

        // Between two slices: a merged trace changes session, one read but
        // not moved yet changes too, a queued one is deleted, one arrives.
        conn.execute("UPDATE traces SET session_id = 'b' WHERE seq = 3", [])
            .expect("move a merged trace");
        conn.execute("UPDATE traces SET session_id = 'c' WHERE seq = 4", [])
            .expect("move a read trace");
        conn.execute("DELETE FROM traces WHERE seq = 5", [])
            .expect("delete a queued trace");
        store(&conn, "t11", 11, Some("a"));
        let now: &[(&str, &[i64])] = &[("a", &[1, 7, 9, 11]), ("b", &[2, 3, 6, 8]), ("c", &[4])];
        check(&conn, now, "changed between slices");
        move_entries(&conn, &batch, 2..4).expect("move");
        // b2 moved; b4 was no longer queued as read, so it waits as c4.
        assert_eq!(merged(&conn), [("a".into(), 1), ("b".into(), 2)]);
        check(&conn, now, "slices done");

        // The next merge takes the rest, the changed traces with it.
        let rest = read_batch(&conn, 100).expect("read");
        assert_eq!(rest.entries.len(), 7);
        move_entries(&conn, &rest, 0..rest.entries.len()).expect("move");
        assert_eq!(waiting(&conn), 0);
        assert_eq!(merged(&conn).len(), 9);
        check(&conn, now, "all merged");

        // A merged trace deleted or moved later leaves the index.
        conn.execute("DELETE FROM traces WHERE seq = 7", [])
            .expect("delete");
        conn.execute("UPDATE traces SET started_at = 0 WHERE seq = 8", [])
            .expect("restart a trace");
        assert!(merged(&conn).iter().all(|(_, seq)| *seq != 7 && *seq != 8));
        assert_eq!(waiting(&conn), 1);
        check(
            &conn,
            &[("b", &[8, 2, 3, 6]), ("c", &[4]), ("a", &[1, 9, 11])],
            "after the merge",
        );
    }

    #[test]
    fn a_slice_moved_twice_changes_nothing() {
        let (_dir, conn) = crate::store::test_database();
        for i in 1..=3 {
            store(&conn, &format!("t{i}"), i, Some("s"));
        }
        let batch = read_batch(&conn, 10).expect("read");
        move_entries(&conn, &batch, 0..3).expect("move");
        // A second merge that read the same entries before the first moved
        // them (the stop's merge and the background one, say).
        move_entries(&conn, &batch, 0..3).expect("move again");
        assert_eq!(merged(&conn).len(), 3);
        assert_eq!(waiting(&conn), 0);
        check(&conn, &[("s", &[1, 2, 3])], "moved twice");
    }

    #[test]
    fn an_upgraded_database_finds_its_sessions_in_the_index() {
        // A database of the schema before the session index moved.
        let (dir, mut conn) = crate::store::test_database_at(10);
        for i in 1..=4 {
            let session = (i != 3).then_some(if i == 4 { "y" } else { "x" });
            conn.execute(
                "INSERT INTO traces (tenant_id, project_id, id, session_id, started_at, \
                 created_at, total_token_count, content_hash) \
                 VALUES (1, 1, ?1, ?2, ?3, 0, ?3, x'00')",
                params![format!("t{i}"), session, i],
            )
            .expect("old trace");
        }
        crate::store::migrations::migrate(&mut conn, dir.path()).expect("upgrade");
        assert_eq!(
            merged(&conn),
            [("x".into(), 1), ("x".into(), 2), ("y".into(), 4)]
        );
        assert_eq!(waiting(&conn), 0);
        let indexes: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'traces_session'",
                [],
                |r| r.get(0),
            )
            .expect("schema");
        assert_eq!(indexes, 0, "the old index is gone");
        store(&conn, "t5", 5, Some("x"));
        check(&conn, &[("x", &[1, 2, 5]), ("y", &[4])], "upgraded");
    }
}
