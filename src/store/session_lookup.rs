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
//! A deleted trace leaves both tables, and one whose session changes goes
//! back to the queue (triggers of migration 11, then 21).
//!
//! Each session's totals over its entries in the index are kept in
//! `session_stats` (see `sessions`): a merge adds the traces it moves, in
//! the same writer jobs, and the triggers apply any later change of a
//! merged trace at once. Ingest itself writes nothing there.
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

/// Adds a trace that has just entered the session index to its session's
/// totals (see migration 21), run with its seq. In a merge's key order,
/// a session's traces follow one another and update one row.
const COUNT: &str = "INSERT INTO session_stats (tenant_id, session_id, project_id, traces, \
     tokens, costed, cost, errors, first_at, last_at, latest_started, latest_seq) \
     SELECT tenant_id, session_id, project_id, 1, total_token_count, cost IS NOT NULL, \
     coalesce(cost, 0.0), error IS NOT NULL, started_at, coalesce(ended_at, started_at), \
     started_at, seq FROM traces WHERE seq = ?1 AND session_id IS NOT NULL \
     ON CONFLICT (tenant_id, session_id, project_id) DO UPDATE SET traces = traces + 1, \
     tokens = tokens + excluded.tokens, costed = costed + excluded.costed, \
     cost = cost + excluded.cost, errors = errors + excluded.errors, \
     first_at = min(first_at, excluded.first_at), last_at = max(last_at, excluded.last_at), \
     latest_started = CASE WHEN (excluded.latest_started, excluded.latest_seq) \
         > (latest_started, latest_seq) THEN excluded.latest_started ELSE latest_started END, \
     latest_seq = CASE WHEN (excluded.latest_started, excluded.latest_seq) \
         > (latest_started, latest_seq) THEN excluded.latest_seq ELSE latest_seq END";

/// A writer job: moves entries from the queue into the index, each only if
/// it is still queued as it was read (a trace changed meanwhile was queued
/// again with its new entry, which the next merge takes), and adds their
/// traces to their sessions' totals in the same transaction.
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
    let mut count = conn.prepare_cached(COUNT)?;
    for e in batch.entries.get(range).unwrap_or_default() {
        let session = batch.text.get(e.session);
        if add.execute(params![e.trace_seq, session, e.started_at])? > 0 {
            count.execute([e.trace_seq])?;
        }
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

        // A merged trace deleted later leaves the index; one that starts
        // earlier stays in it, at its new place.
        conn.execute("DELETE FROM traces WHERE seq = 7", [])
            .expect("delete");
        conn.execute("UPDATE traces SET started_at = 0 WHERE seq = 8", [])
            .expect("restart a trace");
        assert!(merged(&conn).iter().all(|(_, seq)| *seq != 7));
        assert!(merged(&conn).contains(&("b".into(), 8)));
        assert_eq!(waiting(&conn), 0);
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

    /// A session's totals as the list shows them: id, traces, tokens, cost
    /// (in quarters: the tests' costs are exact in binary), errors, first
    /// start, last end.
    type Totals = (String, i64, i64, Option<i64>, i64, i64, i64);

    fn quarters(cost: Option<f64>) -> Option<i64> {
        cost.map(|c| (c * 4.0).round() as i64)
    }

    /// Every session's totals recomputed from the traces (only those with an
    /// entry in the index, with `merged_only`), of one project if given, the
    /// most recently active first.
    fn recomputed(conn: &Connection, project: Option<i64>, merged_only: bool) -> Vec<Totals> {
        let mut stmt = conn
            .prepare(
                "SELECT seq, session_id, started_at, coalesce(ended_at, started_at), \
                 total_token_count, cost, error IS NOT NULL FROM traces \
                 WHERE session_id IS NOT NULL AND (?1 IS NULL OR project_id = ?1) \
                 AND (NOT ?2 OR seq IN (SELECT trace_seq FROM session_lookup)) ORDER BY seq",
            )
            .expect("prepare");
        let mut by_session: HashMap<String, (Totals, (i64, i64))> = HashMap::new();
        let rows = stmt
            .query_map(params![project, merged_only], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, Option<f64>>(5)?,
                    r.get::<_, bool>(6)?,
                ))
            })
            .expect("query");
        for row in rows {
            let (seq, id, start, end, tokens, cost, error) = row.expect("row");
            let (t, latest) = by_session
                .entry(id.clone())
                .or_insert(((id, 0, 0, None, 0, start, end), (start, seq)));
            t.1 += 1;
            t.2 += tokens;
            if let Some(c) = quarters(cost) {
                t.3 = Some(t.3.unwrap_or(0) + c);
            }
            t.4 += i64::from(error);
            t.5 = t.5.min(start);
            t.6 = t.6.max(end);
            *latest = (*latest).max((start, seq));
        }
        let mut all: Vec<(Totals, (i64, i64))> = by_session.into_values().collect();
        all.sort_by_key(|(_, latest)| std::cmp::Reverse(*latest));
        all.into_iter().map(|(t, _)| t).collect()
    }

    /// The session list of one project or all, walked in pages of `page`.
    fn listed(conn: &Connection, project: Option<i64>, page: usize) -> Vec<Totals> {
        let mut found = Vec::new();
        let mut after = None;
        loop {
            let got =
                crate::store::sessions::list(conn, 1, project, after, page).expect("sessions");
            found.extend(got.sessions.into_iter().map(|s| {
                (
                    s.id,
                    s.traces,
                    s.tokens,
                    quarters(s.cost),
                    s.errors,
                    s.first_at,
                    s.last_at,
                )
            }));
            match got.next {
                Some(next) => after = Some(next),
                None => return found,
            }
        }
    }

    /// A row of `session_stats`: session, project, latest trace, traces,
    /// tokens, cost in quarters, errors, first start, last end.
    type Row = (String, i64, i64, i64, i64, Option<i64>, i64, i64, i64);

    /// The rows of `session_stats` as totals, each session and project once.
    fn stored_rows(conn: &Connection) -> Vec<Row> {
        let mut stmt = conn
            .prepare(
                "SELECT session_id, project_id, latest_seq, traces, tokens, costed, cost, errors, \
                 first_at, last_at FROM session_stats ORDER BY session_id, project_id",
            )
            .expect("prepare");
        let rows = stmt
            .query_map([], |r| {
                let costed: i64 = r.get(5)?;
                let cost: f64 = r.get(6)?;
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    (costed > 0).then(|| (cost * 4.0).round() as i64),
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                ))
            })
            .expect("query");
        rows.collect::<rusqlite::Result<_>>().expect("rows")
    }

    /// What `session_stats` must hold: the totals of the traces in the
    /// index, by session and project.
    fn expected_rows(conn: &Connection) -> Vec<Row> {
        let mut rows = Vec::new();
        for project in [1, 2] {
            for t in recomputed(conn, Some(project), true) {
                let latest: i64 = conn
                    .query_row(
                        "SELECT seq FROM traces WHERE session_id = ?1 AND project_id = ?2 \
                         AND seq IN (SELECT trace_seq FROM session_lookup) \
                         ORDER BY started_at DESC, seq DESC LIMIT 1",
                        params![t.0, project],
                        |r| r.get(0),
                    )
                    .expect("latest");
                rows.push((t.0, project, latest, t.1, t.2, t.3, t.4, t.5, t.6));
            }
        }
        rows.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        rows
    }

    fn check_totals(conn: &Connection, step: &str) {
        assert_eq!(
            stored_rows(conn),
            expected_rows(conn),
            "stored totals, {step}"
        );
        for project in [None, Some(1), Some(2)] {
            let want = recomputed(conn, project, false);
            for page in [1, 3, 100] {
                assert_eq!(
                    listed(conn, project, page),
                    want,
                    "project {project:?}, pages of {page}, {step}"
                );
            }
        }
    }

    /// A small deterministic generator: the same steps on every run.
    struct Steps(u64);

    impl Steps {
        fn below(&mut self, n: u64) -> i64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n) as i64
        }
    }

    #[test]
    fn session_totals_stay_exact_through_merges_changes_moves_and_deletes() {
        let (_dir, conn) = crate::store::test_database();
        let mut rng = Steps(0x9e37_79b9_7f4a_7c15);
        let sessions = [None, Some("a"), Some("b"), Some("c"), Some("d")];
        let mut next_id = 0;
        for step in 0..400 {
            let seqs: Vec<i64> = {
                let mut stmt = conn.prepare("SELECT seq FROM traces").expect("prepare");
                let rows = stmt.query_map([], |r| r.get(0)).expect("query");
                rows.collect::<rusqlite::Result<_>>().expect("seqs")
            };
            let pick = |rng: &mut Steps| seqs[rng.below(seqs.len() as u64) as usize];
            let what = match rng.below(10) {
                _ if seqs.len() < 5 => 0,
                n => n,
            };
            let cost = |rng: &mut Steps| (rng.below(3) > 0).then(|| rng.below(8) as f64 * 0.25);
            let done = match what {
                0..=3 => {
                    next_id += 1;
                    let session = sessions[rng.below(5) as usize];
                    let project = 1 + rng.below(2);
                    let started_at = rng.below(60);
                    let ended_at = (rng.below(3) > 0).then(|| started_at + rng.below(30));
                    let error = (rng.below(4) == 0).then_some("boom");
                    conn.execute(
                        "INSERT INTO traces (tenant_id, project_id, id, session_id, started_at, \
                         ended_at, total_token_count, cost, error, created_at, content_hash) \
                         VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, x'00')",
                        params![
                            project,
                            format!("t{next_id}"),
                            session,
                            started_at,
                            ended_at,
                            rng.below(100),
                            cost(&mut rng),
                            error
                        ],
                    )
                    .expect("trace");
                    let seq = conn.last_insert_rowid();
                    let mut stmt = conn.prepare_cached(QUEUE).expect("prepare");
                    queue(&mut stmt, seq, 1, project, session, started_at).expect("queue");
                    "stored"
                }
                4 | 5 => {
                    let batch = read_batch(&conn, 1 + rng.below(12)).expect("read");
                    let len = batch.entries.len();
                    let from = rng.below(len as u64 + 1) as usize;
                    move_entries(&conn, &batch, from..len).expect("move");
                    "merged"
                }
                6 | 7 => {
                    // As an OTLP merge does: a trace's totals, end and start.
                    let started_at = rng.below(60);
                    conn.execute(
                        "UPDATE traces SET total_token_count = ?2, cost = ?3, \
                         error = CASE WHEN ?4 THEN 'failed' END, started_at = ?5, \
                         ended_at = CASE WHEN ?6 THEN ?5 + ?7 END WHERE seq = ?1",
                        params![
                            pick(&mut rng),
                            rng.below(100),
                            cost(&mut rng),
                            rng.below(3) == 0,
                            if rng.below(2) == 0 { started_at } else { 30 },
                            rng.below(3) > 0,
                            rng.below(40)
                        ],
                    )
                    .expect("update");
                    "changed"
                }
                8 => {
                    conn.execute(
                        "UPDATE traces SET session_id = ?2, project_id = ?3 WHERE seq = ?1",
                        params![
                            pick(&mut rng),
                            sessions[rng.below(5) as usize],
                            1 + rng.below(2)
                        ],
                    )
                    .expect("move");
                    "moved"
                }
                _ => {
                    conn.execute("DELETE FROM traces WHERE seq = ?1", [pick(&mut rng)])
                        .expect("delete");
                    "deleted"
                }
            };
            check_totals(&conn, &format!("step {step}, {done}"));
        }
        // Everything merged in the end: the rows alone answer.
        let rest = read_batch(&conn, 10_000).expect("read");
        move_entries(&conn, &rest, 0..rest.entries.len()).expect("move");
        assert_eq!(waiting(&conn), 0);
        check_totals(&conn, "all merged");
        assert!(!stored_rows(&conn).is_empty());
    }

    #[test]
    fn an_upgraded_database_has_the_totals_of_its_sessions() {
        // A database of the schema before the totals were kept.
        let (dir, mut conn) = crate::store::test_database_at(20);
        // Session, project, start, end, cost, error.
        type Old<'a> = (&'a str, i64, i64, Option<i64>, Option<f64>, Option<&'a str>);
        let traces: [Old<'_>; 6] = [
            ("x", 1, 10, Some(15), Some(0.5), None),
            ("x", 2, 20, None, None, Some("boom")),
            ("x", 1, 30, Some(31), Some(0.25), None),
            ("y", 1, 5, Some(50), None, None),
            ("x", 1, 40, Some(41), Some(1.0), None),
            ("y", 2, 45, Some(46), Some(0.75), Some("failed")),
        ];
        for (i, (session, project, start, end, cost, error)) in traces.into_iter().enumerate() {
            conn.execute(
                "INSERT INTO traces (tenant_id, project_id, id, session_id, started_at, ended_at, \
                 total_token_count, cost, error, created_at, content_hash) \
                 VALUES (1, ?1, ?2, ?3, ?4, ?5, ?4, ?6, ?7, 0, x'00')",
                params![project, format!("t{i}"), session, start, end, cost, error],
            )
            .expect("old trace");
            let seq = conn.last_insert_rowid();
            // The last one still waits for the index.
            let table = if i == 5 {
                "session_pending"
            } else {
                "session_lookup"
            };
            conn.execute(
                &format!(
                    "INSERT INTO {table} (tenant_id, session_id, started_at, trace_seq, project_id) \
                     VALUES (1, ?1, ?2, ?3, ?4)"
                ),
                params![session, start, seq, project],
            )
            .expect("entry");
        }
        crate::store::migrations::migrate(&mut conn, dir.path()).expect("upgrade");
        assert_eq!(
            stored_rows(&conn),
            [
                ("x".into(), 1, 5, 3, 80, Some(7), 0, 10, 41),
                ("x".into(), 2, 2, 1, 20, None, 1, 20, 20),
                ("y".into(), 1, 4, 1, 5, None, 0, 5, 50),
            ]
        );
        assert_eq!(stored_rows(&conn), expected_rows(&conn));
        check_totals(&conn, "upgraded");
        // And they follow the traces from then on.
        conn.execute("DELETE FROM traces WHERE id = 't4'", [])
            .expect("delete");
        let batch = read_batch(&conn, 10).expect("read");
        move_entries(&conn, &batch, 0..batch.entries.len()).expect("move");
        check_totals(&conn, "upgraded, then changed");
    }
}
