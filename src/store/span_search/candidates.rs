//! Which spans a span search checks, newest first (see the parent
//! module): the matching traces read newest stored first with the spans
//! added late to older ones, or spans read by key.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use rusqlite::{Connection, OptionalExtension};

use super::super::search::{few_matches, matching, DENSE};
use super::super::Result;
use super::Budget;

/// Names the spans of trace `seq` stored with keys above `last_key` as late
/// when a later trace is stored (see `span_search`): called by
/// ingest after it adds spans to a stored trace.
pub(in crate::store) fn note_late(conn: &Connection, seq: i64, last_key: i64) -> Result<()> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO late_spans (rid, trace_seq) SELECT rid, trace_seq FROM spans \
         WHERE trace_seq = ?1 AND rid > ?2 AND ?1 < (SELECT max(seq) FROM traces)",
    )?
    .execute([seq, last_key])?;
    Ok(())
}

/// The spans that may match, by key from the highest down: those of the
/// traces whose index row holds every term.
pub(super) enum Candidates {
    /// The matching traces read newest first, their spans held until every
    /// candidate above them is known.
    Walk(Walk),
    /// Spans read by key a window at a time, kept when their trace's row
    /// matches `doc`.
    ByKey {
        doc: String,
        /// The next window ends just below this key.
        window_lo: i64,
        width: i64,
        /// Kept spans of the windows read, not yet handed out, highest
        /// first.
        pending: VecDeque<i64>,
        scanned: usize,
    },
}

/// Reading the matching traces newest stored first (see `span_search`'s
/// description).
pub(super) struct Walk {
    doc: String,
    /// The highest key a candidate may have.
    below: i64,
    /// The traces from `lo` to `top` are read; the next window ends below
    /// `lo`. Traces above `top` have no span at or below `below` but late
    /// ones.
    lo: i64,
    top: i64,
    width: i64,
    /// Every candidate from this key to `below` is known.
    floor: i64,
    /// Candidates known and not handed out yet.
    held: BTreeSet<i64>,
    /// Whether traces outside those read match, looked up for their late
    /// spans.
    looked_up: HashMap<i64, bool>,
    /// Matching traces read.
    read: usize,
    /// The most matching traces read and candidates held, together, before
    /// reading by key instead.
    most: usize,
    /// Late spans still to be read before the rest of the matching traces
    /// are gathered at once instead.
    late_left: usize,
    /// At most this many matching traces are gathered at once.
    few: i64,
}

/// What reading one more window came to.
enum Step {
    /// Every candidate from the new floor up is known.
    Read,
    /// More matching traces or spans than a request holds: read by key.
    TooMany,
    /// More late spans than a request reads: gather the rest.
    Gather,
}

impl Walk {
    /// Reads the next window of matching traces (at most `cap` of them) and
    /// the late spans above their spans.
    fn step(&mut self, conn: &Connection, cap: usize) -> Result<Step> {
        let hi = self.lo - 1;
        let lo = hi.saturating_sub(self.width - 1).max(1);
        // Spans from the floor up were known before: those of these traces
        // among them were found as late spans.
        let upto = self.below.min(self.floor - 1);
        if hi >= lo {
            let room = cap.min(self.most.saturating_sub(self.held.len() + self.read));
            let traces = matching(conn, &self.doc, (lo, hi), room.saturating_add(1))?;
            if traces.len() > room || !self.hold_spans_of(conn, &traces, upto)? {
                return Ok(Step::TooMany);
            }
        }
        self.lo = lo;
        self.width = self.width.saturating_mul(4);
        // The lowest key of the read traces' spans; a span below it but of
        // a trace not read is one stored with its trace, and every one
        // above it but of a trace not read is late. Read from the lowest
        // trace with spans: a lower key of a later trace (when that one has
        // late spans only) only makes the floor higher than it could be.
        let floor = if lo <= 1 {
            1
        } else {
            conn.prepare_cached(
                "SELECT min(rid) FROM spans WHERE trace_seq = \
                 (SELECT min(trace_seq) FROM spans WHERE trace_seq >= ?1)",
            )?
            .query_row([lo], |r| r.get::<_, Option<i64>>(0))?
            .map_or(self.floor, |key| key.min(self.floor))
        };
        if floor < self.floor && floor <= upto {
            let late: Vec<(i64, i64)> = conn
                .prepare_cached(
                    "SELECT rid, trace_seq FROM late_spans WHERE rid BETWEEN ?1 AND ?2 LIMIT ?3",
                )?
                .query_map(
                    rusqlite::params![
                        floor,
                        upto,
                        i64::try_from(self.late_left).unwrap_or(i64::MAX)
                    ],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?
                .collect::<rusqlite::Result<_>>()?;
            if late.len() >= self.late_left {
                // Spans added late to many traces (OTLP exporters sending a
                // trace in parts, as they do): reading all of them would
                // cost more than the matching traces left.
                return Ok(Step::Gather);
            }
            self.late_left -= late.len();
            // Late spans of traces not read: their traces looked up, each
            // once.
            let late: Vec<(i64, i64)> = late
                .into_iter()
                .filter(|(_, seq)| !(lo..=self.top).contains(seq))
                .collect();
            let unknown: HashSet<i64> = late
                .iter()
                .map(|(_, seq)| *seq)
                .filter(|seq| !self.looked_up.contains_key(seq))
                .collect();
            let held = matching_traces(conn, &self.doc, &unknown)?;
            for seq in unknown {
                self.looked_up.insert(seq, held.contains(&seq));
            }
            for (rid, seq) in late {
                if self.looked_up.get(&seq) == Some(&true) {
                    self.held.insert(rid);
                }
            }
        }
        self.floor = floor;
        Ok(Step::Read)
    }

    /// Holds the spans of `traces` up to `upto`; `false` when that makes
    /// too many.
    fn hold_spans_of(&mut self, conn: &Connection, traces: &[i64], upto: i64) -> Result<bool> {
        self.read += traces.len();
        let mut of_trace =
            conn.prepare_cached("SELECT rid FROM spans WHERE trace_seq = ?1 AND rid <= ?2")?;
        for seq in traces {
            for rid in of_trace.query_map([*seq, upto], |r| r.get::<_, i64>(0))? {
                self.held.insert(rid?);
            }
        }
        Ok(self.held.len() + self.read <= self.most)
    }

    /// Every candidate known at once: the spans of every matching trace
    /// below those read, when they are few. Those above the floor are late
    /// and were looked at already. `false`: too many.
    fn gather(&mut self, conn: &Connection) -> Result<bool> {
        let most = usize::try_from(self.few.saturating_add(1)).unwrap_or(usize::MAX);
        let traces = matching(conn, &self.doc, (1, self.lo - 1), most)?;
        let upto = self.below.min(self.floor - 1);
        if traces.len() >= most || !self.hold_spans_of(conn, &traces, upto)? {
            return Ok(false);
        }
        self.lo = 1;
        self.floor = 1;
        Ok(true)
    }

    /// Reads on: the next window, or the rest at once. `false`: too many
    /// to hold.
    fn advance(&mut self, conn: &Connection, cap: usize) -> Result<bool> {
        match self.step(conn, cap)? {
            Step::Read => Ok(true),
            Step::TooMany => Ok(false),
            Step::Gather => self.gather(conn),
        }
    }

    /// Every candidate is known.
    fn done(&self) -> bool {
        self.floor <= 1
    }

    /// Hands out the known candidates above the floor, highest first, into
    /// `out` up to `most`, reading windows while it is short. `false`: too
    /// many to hold, with what was handed out decided.
    fn next(&mut self, conn: &Connection, most: usize, out: &mut Vec<i64>) -> Result<bool> {
        loop {
            while out.len() < most {
                match self.held.last() {
                    Some(&key) if key >= self.floor => {
                        self.held.pop_last();
                        out.push(key);
                    }
                    _ => break,
                }
            }
            if out.len() >= most || self.done() {
                return Ok(true);
            }
            if !self.advance(conn, usize::MAX)? {
                return Ok(false);
            }
        }
    }

    fn frontier(&self) -> i64 {
        match self.held.last() {
            Some(&key) if key >= self.floor => key + 1,
            _ => self.floor,
        }
    }
}

impl Candidates {
    /// Starts with the first window of matching traces newest first; with
    /// many matches in it, reads spans by key instead.
    pub(super) fn start(
        conn: &Connection,
        doc: String,
        below: i64,
        budget: Budget,
    ) -> Result<Candidates> {
        // The trace of the highest span at or below `below` stored with its
        // trace: every other trace with spans stored with it is lower.
        let top: i64 = conn
            .prepare_cached(
                "SELECT trace_seq FROM spans s WHERE rid <= ?1 \
                 AND NOT EXISTS (SELECT 1 FROM late_spans l WHERE l.rid = s.rid) \
                 ORDER BY rid DESC LIMIT 1",
            )?
            .query_row([below], |r| r.get(0))
            .optional()?
            .unwrap_or(0);
        let width = budget.window.max(1);
        let mut walk = Walk {
            doc,
            below,
            lo: top + 1,
            top,
            width,
            floor: below.saturating_add(1),
            held: BTreeSet::new(),
            looked_up: HashMap::new(),
            read: 0,
            most: budget.gathered,
            late_left: budget.late,
            few: match budget.few {
                Some(few) => few,
                None => few_matches(conn)?,
            },
        };
        let cap = match budget.sparse {
            0 => usize::MAX,
            sparse => usize::try_from(width / sparse).unwrap_or(usize::MAX),
        };
        if walk.advance(conn, cap)? {
            Ok(Candidates::Walk(walk))
        } else {
            Candidates::by_key(conn, walk.doc, below)
        }
    }

    fn by_key(conn: &Connection, doc: String, below: i64) -> Result<Candidates> {
        // Spans of traces the indexer has not reached yet cannot be found
        // in the index: under sustained ingest they are the newest few
        // thousand, so reading starts below the first of them.
        let unindexed: Option<i64> = conn
            .prepare_cached(
                "SELECT min(rid) FROM spans WHERE trace_seq = \
                 (SELECT trace_seq FROM spans WHERE trace_seq > (SELECT seq FROM trace_docs_state) \
                  ORDER BY trace_seq LIMIT 1)",
            )?
            .query_row([], |r| r.get(0))?;
        let below = unindexed.map_or(below, |first| below.min(first - 1));
        Ok(Candidates::ByKey {
            doc,
            window_lo: below + 1,
            width: 1024,
            pending: VecDeque::new(),
            scanned: 0,
        })
    }

    /// Every span from this key up (to where the search started) is
    /// decided: handed out, or not of a matching trace.
    pub(super) fn frontier(&self) -> i64 {
        match self {
            Candidates::Walk(walk) => walk.frontier(),
            Candidates::ByKey {
                pending, window_lo, ..
            } => pending.front().map_or(*window_lo, |next| next + 1),
        }
    }

    /// Whether any span below the frontier is still to be decided.
    pub(super) fn left(&self) -> bool {
        match self {
            Candidates::Walk(walk) => !walk.done() || !walk.held.is_empty(),
            Candidates::ByKey {
                pending, window_lo, ..
            } => !pending.is_empty() || *window_lo > 1,
        }
    }

    /// Up to `most` more candidates, highest key first; none when every
    /// span is decided or `scan_limit` spans were read by key.
    pub(super) fn next(
        &mut self,
        conn: &Connection,
        most: usize,
        scan_limit: usize,
    ) -> Result<Vec<i64>> {
        let mut out = Vec::with_capacity(most.min(1024));
        if let Candidates::Walk(walk) = self {
            if walk.next(conn, most, &mut out)? {
                return Ok(out);
            }
            // Too many to hold: every span from the walk's frontier up is
            // decided, the rest is read by key.
            let doc = std::mem::take(&mut walk.doc);
            let below = walk.frontier() - 1;
            *self = Candidates::by_key(conn, doc, below)?;
        }
        match self {
            Candidates::Walk(_) => {}
            Candidates::ByKey {
                doc,
                window_lo,
                width,
                pending,
                scanned,
            } => loop {
                while out.len() < most {
                    match pending.pop_front() {
                        Some(rid) => out.push(rid),
                        None => break,
                    }
                }
                if out.len() >= most || *scanned >= scan_limit || *window_lo <= 1 {
                    break;
                }
                // The next window down: its spans, kept if their trace
                // matches.
                let hi = *window_lo - 1;
                let lo = hi.saturating_sub(*width - 1).max(1);
                let rows: Vec<(i64, i64)> = conn
                    .prepare_cached(
                        "SELECT rid, trace_seq FROM spans WHERE rid BETWEEN ?1 AND ?2 \
                         ORDER BY rid DESC",
                    )?
                    .query_map([lo, hi], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<_>>()?;
                *scanned += rows.len().max(1);
                let traces: HashSet<i64> = rows.iter().map(|(_, seq)| *seq).collect();
                let held = matching_traces(conn, doc, &traces)?;
                pending.extend(
                    rows.iter()
                        .filter(|(_, seq)| held.contains(seq))
                        .map(|(rid, _)| *rid),
                );
                *window_lo = lo;
                *width = (*width * 4).min(1 << 14);
            },
        }
        Ok(out)
    }
}

/// Which of `traces` have an index row matching `doc`: read over their
/// range of keys when close together, one by one when scattered.
fn matching_traces(conn: &Connection, doc: &str, traces: &HashSet<i64>) -> Result<HashSet<i64>> {
    let (Some(lo), Some(hi)) = (traces.iter().min(), traces.iter().max()) else {
        return Ok(HashSet::new());
    };
    if hi - lo < DENSE.saturating_mul(traces.len() as i64) {
        let in_range: HashSet<i64> = conn
            .prepare_cached(
                "SELECT rowid FROM trace_docs WHERE trace_docs MATCH ?1 AND rowid BETWEEN ?2 AND ?3",
            )?
            .query_map(rusqlite::params![doc, lo, hi], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        return Ok(in_range.intersection(traces).copied().collect());
    }
    let mut one =
        conn.prepare_cached("SELECT 1 FROM trace_docs WHERE trace_docs MATCH ?1 AND rowid = ?2")?;
    let mut held = HashSet::new();
    for seq in traces {
        if one
            .query_row(rusqlite::params![doc, seq], |_| Ok(()))
            .optional()?
            .is_some()
        {
            held.insert(*seq);
        }
    }
    Ok(held)
}

#[cfg(test)]
mod tests {
    use super::super::super::search::doc_query;
    use super::super::super::search_index::{index_batch, IndexBatch};
    use super::super::tests::{add_span, add_trace, Rng};
    use super::*;

    #[test]
    fn a_search_reads_the_traces_newest_first_and_stops_at_its_page() {
        let (_dir, conn) = crate::store::test_database();
        conn.execute_batch("BEGIN").expect("begin");
        let mut rare = Vec::new();
        for i in 0..3000 {
            let seq = add_trace(&conn, 1, &format!("t{i}"));
            let filler = add_span(&conn, seq, "a", &["common", "filler"]);
            // The word in the ten newest traces and every 100th before:
            // their spans are the candidates.
            if i >= 2990 || i % 100 == 0 {
                rare.push(filler);
                rare.push(add_span(&conn, seq, "b", &["common", "rare"]));
            }
        }
        conn.execute_batch("COMMIT").expect("commit");
        index_batch(&conn, IndexBatch::ALL).expect("index");
        let budget = Budget {
            window: 64,
            sparse: 4,
            ..Budget::DEFAULT
        };
        let top: i64 = conn
            .query_row("SELECT max(rid) FROM spans", [], |r| r.get(0))
            .expect("top");
        let doc = |word: &str| doc_query(1, &[format!("\"{word}\"")]);
        let mut walk = Candidates::start(&conn, doc("rare"), top, budget).expect("start");
        let first = walk.next(&conn, 6, usize::MAX).expect("next");
        rare.reverse();
        assert_eq!(first, rare[..6]);
        let Candidates::Walk(read) = &walk else {
            panic!("ten matches in 64 traces read by key");
        };
        assert_eq!(read.lo, 3000 - 63, "more than the first window read");
        // All of them, in order, reading on down.
        let mut all = first;
        loop {
            let more = walk.next(&conn, 7, usize::MAX).expect("next");
            if more.is_empty() {
                break;
            }
            all.extend(more);
        }
        assert_eq!(all, rare);
        // A word in every trace is read by key from the first window.
        let common = Candidates::start(&conn, doc("common"), top, budget).expect("start");
        assert!(matches!(common, Candidates::ByKey { .. }));
    }

    #[test]
    fn spans_stored_before_the_upgrade_are_named_late_as_ingest_would_have() {
        let (dir, mut conn) = crate::store::test_database_at(24);
        conn.execute_batch("BEGIN").expect("begin");
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        // (rid, trace)
        let mut stored: Vec<(i64, i64)> = Vec::new();
        let mut traces = Vec::new();
        for i in 0..500 {
            traces.push(add_trace(&conn, 1, &format!("t{i}")));
            for k in 0..3 {
                // Mostly the newest trace, now and then an older one.
                let seq = if rng.below(6) == 0 {
                    traces[rng.below(traces.len())]
                } else {
                    traces[traces.len() - 1]
                };
                conn.execute(
                    "INSERT INTO spans (trace_seq, id, name, type, created_at) \
                     VALUES (?1, ?2, 'call', 'llm', 0)",
                    rusqlite::params![seq, format!("s{i}-{k}")],
                )
                .expect("span");
                stored.push((conn.last_insert_rowid(), seq));
            }
        }
        conn.execute_batch("COMMIT").expect("commit");
        crate::store::migrations::migrate(&mut conn, dir.path()).expect("upgrade");
        // Late: a span stored after a span of a later trace.
        let expected: Vec<(i64, i64)> = stored
            .iter()
            .enumerate()
            .filter(|(i, (_, seq))| stored[..*i].iter().any(|(_, before)| before > seq))
            .map(|(_, span)| *span)
            .collect();
        let named: Vec<(i64, i64)> = conn
            .prepare("SELECT rid, trace_seq FROM late_spans ORDER BY rid")
            .expect("prepare")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows");
        assert!(expected.len() > 100, "{}", expected.len());
        assert_eq!(named, expected);
    }
}
