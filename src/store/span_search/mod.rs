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
use std::collections::HashMap;

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension};

use super::search::{doc_query, SPARSE, WINDOW};
use super::{Result, Store};

mod candidates;
mod probe;

pub(super) use candidates::note_late;
use candidates::Candidates;
use probe::Probe;
pub(super) use probe::TermCounts;

/// The most spans one page of search results holds.
pub const MAX_SPAN_RESULTS: usize = 100;

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

    /// A span of `words` for trace `seq`, stored as ingest stores it: named
    /// late when the trace is not the newest. Its key.
    pub(super) fn add_span(conn: &Connection, seq: i64, id: &str, words: &[&str]) -> i64 {
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

    pub(super) fn add_trace(conn: &Connection, tenant: i64, id: &str) -> i64 {
        conn.execute(
            "INSERT INTO traces (tenant_id, project_id, id, name, started_at, created_at, \
             content_hash) VALUES (?1, ?1, ?2, 'n', 0, 0, x'00')",
            rusqlite::params![tenant, id],
        )
        .expect("trace");
        conn.last_insert_rowid()
    }

    /// A little generator of pseudo-random numbers, the same every run.
    pub(super) struct Rng(pub(super) u64);

    impl Rng {
        pub(super) fn below(&mut self, n: usize) -> usize {
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
}
