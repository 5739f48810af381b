//! Span search (`GET /v1/search/spans`): the spans holding every word of a
//! search, the most recently stored first.
//!
//! Spans have no index of their own. The row-per-trace index
//! (`trace_docs`) holds each trace's spans' words with its own, so only the
//! traces it returns can have a matching span; their spans are read in key
//! order and checked in a small FTS5 table in memory with the index's
//! tokenizer, which says exactly which spans match and gives their
//! snippets. A page costs the spans it checks, not every span a word is in.
//!
//! The matching traces are read newest stored first, a window of seqs at a
//! time, as trace search reads them. A trace's spans stored with it come
//! after every span stored with an earlier trace, so once the traces from
//! some seq up are read, every matching span above the lowest key of their
//! spans is known, but for spans added to a trace after a later one was
//! stored (OTLP spans sent in several requests): ingest names those in
//! `late_spans`, and the search looks their traces up on their own.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension};

use super::search::{doc_query, few_matches, matches, matching, DENSE, SPARSE, WINDOW};
use super::{Result, Store};

/// The most spans one page of search results holds.
pub const MAX_SPAN_RESULTS: usize = 100;

/// Mark the start and end of a match in a snippet before it is escaped.
/// Control characters: one already in stored text adds a stray but harmless
/// `<mark>`, never markup of its own.
const OPEN: char = '\u{2}';
const CLOSE: char = '\u{3}';

/// A span search: its terms and what narrows it.
#[derive(Debug, Clone, Default)]
pub struct SpanSearch {
    /// FTS5 terms (see [`super::fts_terms`]), each of which a span must
    /// match.
    pub terms: Vec<String>,
    pub project_id: Option<i64>,
    /// Bounds on the span's `created_at`, microseconds, inclusive.
    pub from: Option<i64>,
    pub to: Option<i64>,
    /// Only spans stored before this one (the cursor of the last page).
    pub before: Option<i64>,
    pub limit: usize,
}

/// One span that matched.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanHit {
    /// The span's key; the next page starts below it.
    pub position: i64,
    pub span_id: String,
    pub trace_id: String,
    pub project_id: String,
    pub span_name: String,
    pub span_type: String,
    pub created_at: i64,
    /// How well the span matched, from 0 (barely) towards 1.
    pub similarity: f64,
    /// An HTML fragment: the text around the best match, escaped, with
    /// every matched word inside `<mark>`.
    pub snippet: String,
}

pub struct SpanHits {
    pub hits: Vec<SpanHit>,
    /// Present when more spans may match after the last one.
    pub next: Option<i64>,
}

impl Store {
    /// Spans of the tenant matching a search, the most recently stored first.
    pub async fn search_spans(&self, tenant_id: i64, search: SpanSearch) -> Result<SpanHits> {
        self.catch_up_search().await?;
        let counts = self.term_counts.clone();
        self.read(move |conn| spans(conn, tenant_id, &search, Budget::DEFAULT, &counts))
            .await
    }
}

/// Names the spans of trace `seq` stored with keys above `last_key` as late
/// when a later trace is stored (see the module's description): called by
/// ingest after it adds spans to a stored trace.
pub(super) fn note_late(conn: &Connection, seq: i64, last_key: i64) -> Result<()> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO late_spans (rid, trace_seq) SELECT rid, trace_seq FROM spans \
         WHERE trace_seq = ?1 AND rid > ?2 AND ?1 < (SELECT max(seq) FROM traces)",
    )?
    .execute([seq, last_key])?;
    Ok(())
}

/// What one request does at most before it answers with what it found
/// and a cursor to go on from, so that a search whose words are in many
/// traces but rarely in one span still answers promptly.
#[derive(Debug, Clone, Copy)]
struct Budget {
    /// Spans whose text is checked: each costs reading its row, unpacking
    /// and tokenizing its text, some 60 µs for a span of a few hundred
    /// words (measured at 10 million traces), so that a page whose words
    /// are rarely in one span answers within some 50 ms.
    checked: usize,
    /// Bytes of text checked, for spans with huge inputs.
    bytes: usize,
    /// Spans of matching traces looked up (for their text, or to find that
    /// the search's project or time window leaves them out).
    looked: usize,
    /// Spans read by key while looking for those of matching traces (a
    /// span row is read whole, some 1-2 µs each).
    scanned: usize,
    /// The first window of matching traces read newest first covers this
    /// many seqs; each after it four times as many.
    window: i64,
    /// More than one match in this many seqs of the first window make the
    /// search one that many traces match: spans are read by key and their
    /// traces looked up in the index instead (0: never).
    sparse: i64,
    /// The most matching traces read newest first and span keys gathered
    /// from them, together; past this (traces of many spans each, or many
    /// traces matching with words in none of their spans) spans are read
    /// by key instead, which bounds what one request holds and reads.
    gathered: usize,
    /// Spans added late to their traces read while reading the matching
    /// traces newest first (each some 0.3 µs); past this the rest of the
    /// matching traces are gathered at once.
    late: usize,
    /// At most this many matching traces are gathered at once; with more,
    /// spans are read by key. `None`: as trace search decides.
    few: Option<i64>,
}

impl Budget {
    const DEFAULT: Budget = Budget {
        checked: 640,
        bytes: 4 << 20,
        looked: 8192,
        scanned: 16_384,
        window: WINDOW,
        sparse: SPARSE,
        gathered: 65_536,
        late: 16_384,
        few: None,
    };
}

fn spans(
    conn: &Connection,
    tenant_id: i64,
    q: &SpanSearch,
    budget: Budget,
    counts: &TermCounts,
) -> Result<SpanHits> {
    let limit = q.limit.clamp(1, MAX_SPAN_RESULTS);
    let doc = doc_query(tenant_id, &q.terms);
    let top: i64 = conn
        .prepare_cached("SELECT coalesce(max(rid), 0) FROM spans")?
        .query_row([], |r| r.get(0))?;
    let below = q.before.map_or(top, |b| b.saturating_sub(1).min(top));
    let mut candidates = Candidates::start(conn, doc, below, budget)?;
    let probe = Probe::open(&q.terms)?;
    let mut details = Details::prepare(conn, tenant_id, q)?;
    let mut hits: Vec<SpanHit> = Vec::new();
    let (mut checked, mut bytes, mut looked) = (0, 0, 0);
    let mut step = (limit + 1) * 2;
    let full = loop {
        let batch = candidates.next(conn, step, budget.scanned)?;
        let (Some(&hi), Some(&lo)) = (batch.first(), batch.last()) else {
            break false;
        };
        looked += batch.len();
        let mut drafts = HashMap::with_capacity(batch.len());
        for rid in &batch {
            if let Some((hit, text)) = details.of(*rid)? {
                bytes += text.iter().flatten().map(String::len).sum::<usize>();
                checked += 1;
                probe.add(*rid, &text)?;
                drafts.insert(*rid, hit);
            }
        }
        // The batch's matches, newest first, after the earlier batches'
        // (whose keys are all higher).
        let start = hits.len();
        for rid in probe.matching(lo, hi)? {
            if let Some(hit) = drafts.remove(&rid) {
                hits.push(hit);
            }
        }
        hits[start..].sort_unstable_by_key(|h| Reverse(h.position));
        if hits.len() > limit {
            break true;
        }
        if checked >= budget.checked || bytes >= budget.bytes || looked >= budget.looked {
            break false;
        }
        step = (step * 4).min(budget.checked - checked).max(1);
    };
    let next = if full {
        hits.truncate(limit);
        hits.last().map(|h| h.position)
    } else {
        // Stopped with a budget spent, or nothing left: go on below the
        // last span decided, if any is left.
        candidates.left().then(|| candidates.frontier())
    };
    probe.describe(conn, (tenant_id, counts), &q.terms, &mut hits)?;
    Ok(SpanHits { hits, next })
}

/// The spans that may match, by key from the highest down: those of the
/// traces whose index row holds every term.
enum Candidates {
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

/// Reading the matching traces newest stored first (see the module's
/// description).
struct Walk {
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
    fn start(conn: &Connection, doc: String, below: i64, budget: Budget) -> Result<Candidates> {
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
    fn frontier(&self) -> i64 {
        match self {
            Candidates::Walk(walk) => walk.frontier(),
            Candidates::ByKey {
                pending, window_lo, ..
            } => pending.front().map_or(*window_lo, |next| next + 1),
        }
    }

    /// Whether any span below the frontier is still to be decided.
    fn left(&self) -> bool {
        match self {
            Candidates::Walk(walk) => !walk.done() || !walk.held.is_empty(),
            Candidates::ByKey {
                pending, window_lo, ..
            } => !pending.is_empty() || *window_lo > 1,
        }
    }

    /// Up to `most` more candidates, highest key first; none when every
    /// span is decided or `scan_limit` spans were read by key.
    fn next(&mut self, conn: &Connection, most: usize, scan_limit: usize) -> Result<Vec<i64>> {
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

/// A candidate span's details and text, when it passes the search's other
/// filters.
struct Details<'c> {
    stmt: rusqlite::CachedStatement<'c>,
    args: Vec<SqlValue>,
}

/// A span's name, input, output and error.
type Text = [Option<String>; 4];

impl<'c> Details<'c> {
    fn prepare(conn: &'c Connection, tenant_id: i64, q: &SpanSearch) -> Result<Details<'c>> {
        let mut sql = String::from(
            "SELECT s.id, t.id, p.uuid, s.name, s.type, s.created_at, unpack(s.input), \
             unpack(s.output), s.error \
             FROM spans s JOIN traces t ON t.seq = s.trace_seq \
             JOIN projects p ON p.id = t.project_id \
             WHERE s.rid = ?1 AND t.tenant_id = ?2",
        );
        let mut args: Vec<SqlValue> = vec![SqlValue::Null, tenant_id.into()];
        for (condition, value) in [
            ("t.project_id =", q.project_id),
            ("s.created_at >=", q.from),
            ("s.created_at <=", q.to),
        ] {
            if let Some(value) = value {
                args.push(value.into());
                sql.push_str(&format!(" AND {condition} ?{}", args.len()));
            }
        }
        Ok(Details {
            stmt: conn.prepare_cached(&sql)?,
            args,
        })
    }

    fn of(&mut self, rid: i64) -> Result<Option<(SpanHit, Text)>> {
        self.args[0] = rid.into();
        Ok(self
            .stmt
            .query_row(rusqlite::params_from_iter(self.args.iter()), |r| {
                let name: String = r.get(3)?;
                let text = [Some(name.clone()), r.get(6)?, r.get(7)?, r.get(8)?];
                let hit = SpanHit {
                    position: rid,
                    span_id: r.get(0)?,
                    trace_id: r.get(1)?,
                    project_id: r.get(2)?,
                    span_name: name,
                    span_type: r.get(4)?,
                    created_at: r.get(5)?,
                    similarity: 0.0,
                    snippet: String::new(),
                };
                Ok((hit, text))
            })
            .optional()?)
    }
}

/// The spans checked by one search, in an FTS5 table of their own in
/// memory, split into words as the index splits them.
struct Probe {
    conn: Connection,
    expression: String,
}

impl Probe {
    fn open(terms: &[String]) -> Result<Probe> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(
            "CREATE VIRTUAL TABLE probe USING fts5(name, input, output, error, \
             tokenize = 'unicode61 remove_diacritics 2')",
        )?;
        Ok(Probe {
            conn,
            expression: terms.join(" AND "),
        })
    }

    fn add(&self, rid: i64, text: &Text) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO probe (rowid, name, input, output, error) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(rusqlite::params![rid, text[0], text[1], text[2], text[3]])?;
        Ok(())
    }

    /// The checked spans between `lo` and `hi` that hold every term.
    fn matching(&self, lo: i64, hi: i64) -> Result<Vec<i64>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT rowid FROM probe WHERE probe MATCH ?1 AND rowid BETWEEN ?2 AND ?3",
            )?
            .query_map(rusqlite::params![self.expression, lo, hi], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?)
    }

    /// Fills in each hit's snippet and similarity.
    fn describe(
        &self,
        conn: &Connection,
        (tenant_id, counts): (i64, &TermCounts),
        terms: &[String],
        hits: &mut [SpanHit],
    ) -> Result<()> {
        let (Some(lo), Some(hi)) = (
            hits.iter().map(|h| h.position).min(),
            hits.iter().map(|h| h.position).max(),
        ) else {
            return Ok(());
        };
        let mut snippets: HashMap<i64, String> = self
            .conn
            .prepare_cached(&format!(
                "SELECT rowid, snippet(probe, -1, '{OPEN}', '{CLOSE}', '…', 24) FROM probe \
                 WHERE probe MATCH ?1 AND rowid BETWEEN ?2 AND ?3"
            ))?
            .query_map(rusqlite::params![self.expression, lo, hi], |r| {
                Ok((
                    r.get(0)?,
                    r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                ))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let scores = self.scores(conn, (tenant_id, counts), terms, lo, hi)?;
        for hit in hits {
            if let Some(snippet) = snippets.remove(&hit.position) {
                hit.snippet = highlight(&snippet);
            }
            hit.similarity = similarity(scores.get(&hit.position).copied().unwrap_or(0.0));
        }
        Ok(())
    }

    /// BM25 over the spans checked between `lo` and `hi`, each term weighed
    /// by how many of the organisation's traces hold it (never another's:
    /// the score would tell what their traces say).
    ///
    /// Counting a term's traces reads its whole list of matches, for a word
    /// in most traces hundreds of milliseconds at a million; so terms in
    /// more than `SCORED` traces weigh nothing, as BM25 all but does for a
    /// word in half the documents or more. A span's score does not depend
    /// on which other spans a page holds.
    fn scores(
        &self,
        conn: &Connection,
        (tenant_id, counts): (i64, &TermCounts),
        terms: &[String],
        lo: i64,
        hi: i64,
    ) -> Result<HashMap<i64, f64>> {
        let traces: i64 = conn
            .prepare_cached("SELECT coalesce(max(seq), 0) FROM traces")?
            .query_row([], |r| r.get(0))?;
        let mut scores: HashMap<i64, f64> = HashMap::new();
        for term in terms {
            let holding = counts.of(conn, tenant_id, term)?;
            if holding > SCORED {
                continue;
            }
            let weight = idf(traces, holding);
            let mut stmt = self.conn.prepare_cached(&format!(
                "SELECT rowid, concat(highlight(probe, 0, '{OPEN}', ''), \
                 highlight(probe, 1, '{OPEN}', ''), highlight(probe, 2, '{OPEN}', ''), \
                 highlight(probe, 3, '{OPEN}', '')) FROM probe WHERE probe MATCH ?1 AND rowid BETWEEN ?2 AND ?3"
            ))?;
            let mut rows = stmt.query(rusqlite::params![term, lo, hi])?;
            while let Some(row) = rows.next()? {
                let rid: i64 = row.get(0)?;
                let marked: String = row.get(1)?;
                let count = marked.chars().filter(|c| *c == OPEN).count();
                *scores.entry(rid).or_default() += weight * saturate(count as f64);
            }
        }
        Ok(scores)
    }
}

/// Terms in more traces than this weigh nothing in a span's similarity.
const SCORED: i64 = 10_000;

/// How long a term's count of traces stands for it.
const COUNTED_FOR: Duration = Duration::from_secs(60);

/// The most counts kept; past this the stale ones are dropped, then all.
const COUNTS_KEPT: usize = 4096;

/// How many of an organisation's traces hold each term weighed, counted
/// once a minute at most: counting a word in some thousands of traces
/// reads its whole list of matches with the organisation's (10 ms at 10
/// million traces), and a weight a minute old ranks the same.
#[derive(Default)]
pub(super) struct TermCounts(Mutex<HashMap<(i64, String), (i64, Instant)>>);

impl TermCounts {
    /// How many of `tenant_id`'s traces hold `term`, up to just past
    /// [`SCORED`].
    fn of(&self, conn: &Connection, tenant_id: i64, term: &str) -> Result<i64> {
        let key = (tenant_id, term.to_owned());
        let now = Instant::now();
        if let Some((count, at)) = self.lock().get(&key) {
            if now.duration_since(*at) < COUNTED_FOR {
                return Ok(*count);
            }
        }
        let count = matches(
            conn,
            &doc_query(tenant_id, std::slice::from_ref(&key.1)),
            SCORED,
        )?;
        let mut kept = self.lock();
        if kept.len() >= COUNTS_KEPT {
            kept.retain(|_, (_, at)| now.duration_since(*at) < COUNTED_FOR);
            if kept.len() >= COUNTS_KEPT {
                kept.clear();
            }
        }
        kept.insert(key, (count, now));
        Ok(count)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(i64, String), (i64, Instant)>> {
        // A panic elsewhere with the lock held leaves counts that are
        // still counts.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
/// BM25's term-frequency saturation.
const K1: f64 = 1.2;

/// How much a term in `holding` of `traces` traces says about a match:
/// BM25's inverse document frequency, never negative.
fn idf(traces: i64, holding: i64) -> f64 {
    let (n, h) = (traces.max(holding) as f64, holding as f64);
    (1.0 + (n - h + 0.5) / (h + 0.5)).ln()
}

/// A term found `count` times counts for more than once, but less each
/// time.
fn saturate(count: f64) -> f64 {
    count * (K1 + 1.0) / (count + K1)
}

/// A score of 0 or more mapped onto [0, 1).
fn similarity(score: f64) -> f64 {
    let score = score.max(0.0);
    score / (1.0 + score)
}

/// Escapes a snippet for HTML and turns the match markers into `<mark>`.
fn highlight(snippet: &str) -> String {
    let mut out = String::with_capacity(snippet.len() + 16);
    for c in snippet.chars() {
        match c {
            OPEN => out.push_str("<mark>"),
            CLOSE => out.push_str("</mark>"),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::search_index::{index_batch, IndexBatch};
    use super::*;

    /// Every page of a search, one after the other, and their cursors.
    fn all_pages(conn: &Connection, tenant: i64, q: &SpanSearch, budget: Budget) -> Vec<i64> {
        let mut q = q.clone();
        let mut got = Vec::new();
        for _ in 0..10_000 {
            let page = spans(conn, tenant, &q, budget, &TermCounts::default()).expect("page");
            assert!(page.hits.len() <= q.limit);
            got.extend(page.hits.iter().map(|h| h.position));
            match page.next {
                Some(next) => q.before = Some(next),
                None => return got,
            }
        }
        panic!("a search that never ends");
    }

    /// Every way of reading the candidates: each must give the same pages.
    fn budgets() -> [(&'static str, Budget); 9] {
        [
            ("the default", Budget::DEFAULT),
            (
                "every trace in one window",
                Budget {
                    window: i64::MAX,
                    sparse: 0,
                    ..Budget::DEFAULT
                },
            ),
            (
                "by key",
                Budget {
                    window: i64::MAX,
                    sparse: i64::MAX,
                    ..Budget::DEFAULT
                },
            ),
            (
                "a trace per window",
                Budget {
                    window: 1,
                    sparse: 0,
                    ..Budget::DEFAULT
                },
            ),
            (
                "a trace per window, small steps",
                Budget {
                    window: 1,
                    sparse: 0,
                    checked: 3,
                    looked: 4,
                    ..Budget::DEFAULT
                },
            ),
            (
                "windows until too many spans, then by key",
                Budget {
                    window: 2,
                    sparse: 0,
                    gathered: 5,
                    ..Budget::DEFAULT
                },
            ),
            (
                "a trace per window, few late spans read, then the rest gathered",
                Budget {
                    window: 1,
                    sparse: 0,
                    late: 3,
                    ..Budget::DEFAULT
                },
            ),
            (
                "few late spans read, too many traces to gather, then by key",
                Budget {
                    window: 1,
                    sparse: 0,
                    late: 3,
                    few: Some(2),
                    ..Budget::DEFAULT
                },
            ),
            (
                "by key, small steps",
                Budget {
                    window: i64::MAX,
                    sparse: i64::MAX,
                    checked: 3,
                    looked: 4,
                    scanned: 10,
                    ..Budget::DEFAULT
                },
            ),
        ]
    }

    /// Every page of `q` for organisation 1, read each way (first windows
    /// at most `window` wide), holds `expected` in order.
    fn every_way_gives(
        conn: &Connection,
        q: &SpanSearch,
        expected: &[i64],
        window: i64,
        what: &str,
    ) {
        for (name, budget) in budgets() {
            let budget = Budget {
                window: budget.window.min(window),
                ..budget
            };
            assert_eq!(all_pages(conn, 1, q, budget), expected, "{name}, {what}");
        }
    }

    #[test]
    fn every_way_of_answering_a_span_search_gives_every_match_once_newest_first() {
        let (_dir, conn) = super::super::test_database();
        conn.execute_batch(
            "INSERT INTO tenants (id, uuid, name, created_at) VALUES (2, 'u2', 'other', 0);
             INSERT INTO projects (id, tenant_id, uuid, name, slug, created_at)
                 VALUES (2, 1, 'p2', 'second', 'second', 0), (3, 2, 'p3', 'theirs', 'theirs', 0);",
        )
        .expect("tenant");
        let words = ["alpha", "beta", "gamma", "delta"];
        // (rid, tenant, project, created_at, words of the span)
        let mut stored: Vec<(i64, i64, i64, i64, Vec<&str>)> = Vec::new();
        let span = |conn: &Connection, seq: i64, k: usize, text: Vec<&'static str>, at: i64| {
            conn.execute(
                "INSERT INTO spans (trace_seq, id, name, type, output, created_at) \
                 VALUES (?1, ?2, 'call', 'llm', ?3, ?4)",
                rusqlite::params![seq, format!("s{k}"), text.join(" "), at],
            )
            .expect("span");
            conn.last_insert_rowid()
        };
        let mut traces = Vec::new();
        for i in 0..200_usize {
            // A tenth of the traces in another organisation, a fifth in a
            // second project; the trace's own text holds `trace` and a
            // word its spans may lack, so many traces match a search
            // without a span that does.
            let (tenant, project) = match i % 10 {
                7 => (2, 3),
                1 | 4 => (1, 2),
                _ => (1, 1),
            };
            conn.execute(
                "INSERT INTO traces (tenant_id, project_id, id, name, output, started_at, \
                 created_at, content_hash) VALUES (?1, ?2, ?3, 'n', ?4, 0, 0, x'00')",
                rusqlite::params![
                    tenant,
                    project,
                    format!("t{i}"),
                    format!("trace {}", words[i % 4])
                ],
            )
            .expect("trace");
            let seq = conn.last_insert_rowid();
            traces.push((seq, tenant, project));
            for k in 0..(i % 4) {
                let mut text = vec![words[(i + k) % 4], "span"];
                if (i + k) % 9 == 0 {
                    text.push("zeta");
                }
                let at = (i * 10 + k) as i64;
                let rid = span(&conn, seq, k, text.clone(), at);
                stored.push((rid, tenant, project, at, text));
            }
        }
        index_batch(&conn, IndexBatch { traces: 10_000 }).expect("index");
        // Spans arriving later for traces indexed long ago (OTLP): their
        // keys are the highest, their traces among the oldest. Ingest names
        // them, as `otel::merge` does.
        for (n, &(seq, tenant, project)) in traces.iter().take(30).enumerate() {
            let text = vec!["alpha", "late", "span"];
            let at = 5_000 + n as i64;
            let last_key: i64 = conn
                .query_row("SELECT max(rid) FROM spans", [], |r| r.get(0))
                .expect("last key");
            let rid = span(&conn, seq, 10 + n, text.clone(), at);
            note_late(&conn, seq, last_key).expect("late");
            stored.push((rid, tenant, project, at, text));
        }
        index_batch(&conn, IndexBatch { traces: 10_000 }).expect("index");

        for (terms, project, from, to) in [
            (&["alpha"][..], None, None, None),
            (&["span"], None, None, None),
            (&["zeta"], None, None, None),
            (&["alpha", "span"], None, None, None),
            (&["alpha", "beta"], None, None, None),
            (&["trace"], None, None, None),
            (&["late"], None, None, None),
            (&["alpha"], Some(2), None, None),
            (&["span"], None, Some(500), Some(1200)),
            (&["span"], Some(1), Some(900), None),
            (&["nothing"], None, None, None),
        ] {
            let mut expected: Vec<i64> = stored
                .iter()
                .filter(|(_, tenant, p, at, text)| {
                    *tenant == 1
                        && project.is_none_or(|want| want == *p)
                        && from.is_none_or(|f| *at >= f)
                        && to.is_none_or(|t| *at <= t)
                        && terms.iter().all(|w| text.contains(w))
                })
                .map(|(rid, ..)| *rid)
                .collect();
            expected.sort_unstable_by_key(|rid| Reverse(*rid));
            for limit in [1, 7, 100] {
                let q = SpanSearch {
                    terms: terms.iter().map(|t| format!("\"{t}\"")).collect(),
                    project_id: project,
                    from,
                    to,
                    before: None,
                    limit,
                };
                let what = format!("pages of {limit}: {terms:?} {project:?} {from:?} {to:?}");
                every_way_gives(&conn, &q, &expected, i64::MAX, &what);
            }
        }
    }

    #[test]
    fn a_hit_has_its_details_a_marked_snippet_and_a_similarity_that_rewards_rare_words() {
        let (_dir, conn) = super::super::test_database();
        conn.execute(
            "INSERT INTO traces (tenant_id, project_id, id, name, started_at, created_at, \
             content_hash) VALUES (1, 1, 'trace-1', 'chat', 0, 0, x'00')",
            [],
        )
        .expect("trace");
        let seq = conn.last_insert_rowid();
        for (id, output) in [
            ("common", "the answer <b>was</b> refund"),
            ("rare", "the answer was ocelot"),
            ("twice", "ocelot, and ocelot again"),
        ] {
            conn.execute(
                "INSERT INTO spans (trace_seq, id, name, type, output, created_at) \
                 VALUES (?1, ?2, 'reply', 'llm', ?3, 42)",
                rusqlite::params![seq, id, output],
            )
            .expect("span");
        }
        for i in 0..20 {
            conn.execute(
                "INSERT INTO traces (tenant_id, project_id, id, name, input, started_at, \
                 created_at, content_hash) VALUES (1, 1, ?1, 'chat', 'refund answer', 0, 0, x'00')",
                [format!("filler-{i}")],
            )
            .expect("filler");
        }
        index_batch(&conn, IndexBatch { traces: 100 }).expect("index");
        let search = |terms: &[&str]| {
            let q = SpanSearch {
                terms: terms.iter().map(|t| format!("\"{t}\"")).collect(),
                limit: 10,
                ..Default::default()
            };
            spans(&conn, 1, &q, Budget::DEFAULT, &TermCounts::default())
                .expect("search")
                .hits
        };
        let hits = search(&["refund"]);
        assert_eq!(hits.len(), 1);
        let hit = &hits[0];
        assert_eq!(
            (
                hit.span_id.as_str(),
                hit.trace_id.as_str(),
                hit.span_name.as_str()
            ),
            ("common", "trace-1", "reply")
        );
        assert_eq!((hit.span_type.as_str(), hit.created_at), ("llm", 42));
        assert_eq!(hit.project_id, "p");
        assert_eq!(
            hit.snippet,
            "the answer &lt;b&gt;was&lt;/b&gt; <mark>refund</mark>"
        );
        let common = hit.similarity;
        let ocelot = search(&["ocelot"]);
        let by_id = |id: &str| {
            ocelot
                .iter()
                .find(|h| h.span_id == id)
                .map(|h| h.similarity)
                .expect("hit")
        };
        // A word in one trace of 21 weighs more than one in all of them;
        // found twice, more than once; never 1.
        assert!(by_id("rare") > common, "{ocelot:?} {common}");
        assert!(by_id("twice") > by_id("rare"), "{ocelot:?}");
        assert!(ocelot.iter().all(|h| (0.0..1.0).contains(&h.similarity)));
        assert_eq!(
            ocelot
                .iter()
                .find(|h| h.span_id == "twice")
                .map(|h| h.snippet.as_str()),
            Some("<mark>ocelot</mark>, and <mark>ocelot</mark> again")
        );
        // Another organisation's traces full of the word leave the weight
        // it has here as it was: a score says nothing of their text.
        conn.execute(
            "INSERT INTO tenants (id, uuid, name, created_at) VALUES (2, 'u2', 'other', 0)",
            [],
        )
        .expect("tenant");
        conn.execute(
            "INSERT INTO projects (id, uuid, tenant_id, name, slug, created_at) \
             VALUES (2, 'p2', 2, 'theirs', 'theirs', 0)",
            [],
        )
        .expect("project");
        for i in 0..20 {
            conn.execute(
                "INSERT INTO traces (tenant_id, project_id, id, name, input, started_at, \
                 created_at, content_hash) VALUES (2, 2, ?1, 'chat', 'ocelot', 0, 0, x'00')",
                [format!("theirs-{i}")],
            )
            .expect("theirs");
        }
        index_batch(&conn, IndexBatch { traces: 100 }).expect("index");
        let again = search(&["ocelot"]);
        let rare_again = again
            .iter()
            .find(|h| h.span_id == "rare")
            .map(|h| h.similarity)
            .expect("hit");
        // The count of all traces grows by 20 (idf moves a little); the
        // word's own count here does not, so it stays far above `common`.
        assert!(rare_again > common, "{again:?}");
        assert!((rare_again - by_id("rare")).abs() < 0.05, "{rare_again}");
    }

    #[test]
    fn snippets_are_escaped_and_marked() {
        assert_eq!(
            highlight("a <b> & \u{2}refund\u{3} \"x\""),
            "a &lt;b&gt; &amp; <mark>refund</mark> &quot;x&quot;"
        );
        assert_eq!(similarity(0.0), 0.0);
        assert!(similarity(3.0) > similarity(1.0));
        assert!((0.0..1.0).contains(&similarity(1e9)));
        assert!(idf(1_000, 1) > idf(1_000, 500));
        assert!(idf(1_000, 1_000) > 0.0);
        assert!(saturate(2.0) > saturate(1.0) && saturate(2.0) < 2.0 * saturate(1.0));
    }

    /// A span of `words` for trace `seq`, stored as ingest stores it: named
    /// late when the trace is not the newest. Its key.
    fn add_span(conn: &Connection, seq: i64, id: &str, words: &[&str]) -> i64 {
        let last_key: i64 = conn
            .query_row("SELECT coalesce(max(rid), 0) FROM spans", [], |r| r.get(0))
            .expect("last key");
        conn.execute(
            "INSERT INTO spans (trace_seq, id, name, type, output, created_at) \
             VALUES (?1, ?2, 'call', 'llm', ?3, 0)",
            rusqlite::params![seq, id, words.join(" ")],
        )
        .expect("span");
        let rid = conn.last_insert_rowid();
        note_late(conn, seq, last_key).expect("late");
        rid
    }

    fn add_trace(conn: &Connection, tenant: i64, id: &str) -> i64 {
        conn.execute(
            "INSERT INTO traces (tenant_id, project_id, id, name, started_at, created_at, \
             content_hash) VALUES (?1, ?1, ?2, 'n', 0, 0, x'00')",
            rusqlite::params![tenant, id],
        )
        .expect("trace");
        conn.last_insert_rowid()
    }

    /// A little generator of pseudo-random numbers, the same every run.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    #[test]
    fn spans_added_to_older_traces_at_any_time_are_found_in_their_place() {
        let (_dir, conn) = super::super::test_database();
        conn.execute_batch(
            "INSERT INTO tenants (id, uuid, name, created_at) VALUES (2, 'u2', 'other', 0);
             INSERT INTO projects (id, tenant_id, uuid, name, slug, created_at)
                 VALUES (2, 2, 'p2', 'theirs', 'theirs', 0);
             BEGIN;",
        )
        .expect("tenant");
        let words = ["alpha", "beta", "gamma", "delta", "epsilon"];
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        // (rid, trace, tenant, words)
        let mut stored: Vec<(i64, i64, i64, Vec<&str>)> = Vec::new();
        let mut traces: Vec<(i64, i64)> = Vec::new();
        let mut n = 0;
        for i in 0..800 {
            let tenant = if rng.below(5) == 0 { 2 } else { 1 };
            let seq = add_trace(&conn, tenant, &format!("t{i}"));
            traces.push((seq, tenant));
            // Spans with the trace (none for some), then now and then spans
            // for a trace stored before (the last one too, which is not
            // late), a burst of them at times.
            let with = rng.below(4);
            let later = match rng.below(40) {
                0 => 12,
                1..=6 => 1,
                _ => 0,
            };
            for k in 0..with + later {
                let (seq, tenant) = if k < with {
                    (seq, tenant)
                } else {
                    traces[traces.len() - 1 - rng.below(traces.len().min(300))]
                };
                let mut text = vec!["span", words[rng.below(words.len())]];
                if rng.below(3) == 0 {
                    text.push(words[rng.below(words.len())]);
                }
                n += 1;
                let rid = add_span(&conn, seq, &format!("s{n}"), &text);
                stored.push((rid, seq, tenant, text));
            }
        }
        // Some traces are deleted, late spans and all.
        conn.execute("DELETE FROM traces WHERE seq % 29 = 0", [])
            .expect("delete");
        conn.execute_batch("COMMIT").expect("commit");
        stored.retain(|(_, seq, ..)| seq % 29 != 0);
        index_batch(&conn, IndexBatch::ALL).expect("index");
        let named: i64 = conn
            .query_row(
                "SELECT count(*) FROM late_spans WHERE rid NOT IN (SELECT rid FROM spans)",
                [],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(named, 0, "a deleted span's name stays");
        for terms in [
            &["alpha"][..],
            &["span"],
            &["beta", "gamma"],
            &["epsilon", "span"],
            &["absent"],
        ] {
            let mut expected: Vec<i64> = stored
                .iter()
                .filter(|(_, _, tenant, text)| {
                    *tenant == 1 && terms.iter().all(|w| text.contains(w))
                })
                .map(|(rid, ..)| *rid)
                .collect();
            expected.sort_unstable_by_key(|rid| Reverse(*rid));
            for limit in [5, 60] {
                let q = SpanSearch {
                    terms: terms.iter().map(|t| format!("\"{t}\"")).collect(),
                    limit,
                    ..Default::default()
                };
                let what = format!("pages of {limit}: {terms:?}");
                every_way_gives(&conn, &q, &expected, 64, &what);
            }
        }
    }

    #[test]
    fn a_search_reads_the_traces_newest_first_and_stops_at_its_page() {
        let (_dir, conn) = super::super::test_database();
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
        let (dir, mut conn) = super::super::test_database_at(24);
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
        super::super::migrations::migrate(&mut conn, dir.path()).expect("upgrade");
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

    #[test]
    fn a_term_is_counted_once_a_minute_per_organisation_and_the_counts_stay_bounded() {
        let (_dir, conn) = super::super::test_database();
        conn.execute_batch("BEGIN").expect("begin");
        for i in 0..3 {
            let seq = add_trace(&conn, 1, &format!("t{i}"));
            add_span(&conn, seq, "a", &["heron"]);
        }
        conn.execute_batch("COMMIT").expect("commit");
        index_batch(&conn, IndexBatch::ALL).expect("index");
        let counts = TermCounts::default();
        assert_eq!(counts.of(&conn, 1, "\"heron\"").expect("count"), 3);
        let seq = add_trace(&conn, 1, "t3");
        add_span(&conn, seq, "a", &["heron"]);
        index_batch(&conn, IndexBatch::ALL).expect("index");
        // Within the minute, the count read before; another organisation's
        // is its own.
        assert_eq!(counts.of(&conn, 1, "\"heron\"").expect("count"), 3);
        assert_eq!(counts.of(&conn, 2, "\"heron\"").expect("count"), 0);
        assert_eq!(
            TermCounts::default()
                .of(&conn, 1, "\"heron\"")
                .expect("count"),
            4
        );
        for i in 0..COUNTS_KEPT + 10 {
            counts.of(&conn, 1, &format!("\"w{i}\"")).expect("count");
        }
        assert!(counts.lock().len() <= COUNTS_KEPT);
    }
}
