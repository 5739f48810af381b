//! Full-text search (SQLite FTS5) over trace and span names, inputs,
//! outputs and errors: the `q=` filter of trace lists and the span search.
//!
//! What a user types is never handed to FTS5 as query syntax: it is split
//! into words and quoted phrases, each quoted for FTS5, and all must match.
//! A word ending in `*` matches as a prefix.

use std::collections::{HashMap, HashSet};

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension};

use super::{Result, Store};

/// The most spans one page of search results holds.
pub const MAX_SPAN_RESULTS: usize = 100;

/// Mark the start and end of a match in a snippet before it is escaped.
/// Control characters: one already in stored text adds a stray but harmless
/// `<mark>`, never markup of its own.
const OPEN: char = '\u{2}';
const CLOSE: char = '\u{3}';

/// The FTS5 expression for a user's search text, or `None` when it holds
/// nothing to search for.
pub fn fts_query(text: &str) -> Option<String> {
    let terms = fts_terms(text);
    (!terms.is_empty()).then(|| terms.join(" AND "))
}

/// Each word or quoted phrase of a user's search text as an FTS5 term.
/// Control characters separate words: FTS5 would read a NUL as the end of
/// the expression.
pub fn fts_terms(text: &str) -> Vec<String> {
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut terms = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (term, prefix, tail) = if let Some(quoted) = rest.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], false, &quoted[end + 1..]),
                None => (quoted, false, ""),
            }
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            let word = &rest[..end];
            match word.strip_suffix('*') {
                Some(stem) => (stem, true, &rest[end..]),
                None => (word, false, &rest[end..]),
            }
        };
        rest = tail.trim_start();
        let cleaned: String = term.chars().filter(|c| *c != '"').collect();
        if cleaned.chars().any(char::is_alphanumeric) {
            let star = if prefix { "*" } else { "" };
            terms.push(format!("\"{cleaned}\"{star}"));
        }
    }
    terms
}

/// A search matching at most this many traces is answered from its
/// matches: they are read from the index, put in list order and the page
/// taken from them. One matching more is answered by reading the plain
/// list's keys a batch at a time and keeping those the index holds.
///
/// Gathering costs about 9 µs a match (each match's trace row is read for
/// where it sorts); checking costs well under a microsecond a trace read
/// by range, and a page of 50 needs 50·N/M traces checked when M of N
/// traces match. The two meet near M = √(5·N), which this follows within
/// bounds.
pub(super) fn few_matches(conn: &Connection) -> Result<i64> {
    let traces: i64 =
        conn.query_row("SELECT coalesce(max(seq), 0) FROM traces", [], |r| r.get(0))?;
    Ok(((5.0 * traces.max(0) as f64).sqrt() as i64).clamp(500, 20_000))
}

/// Traces whose keys the first batch reads when a search matches many;
/// each batch that leaves the page short reads four times as many, up to
/// the last size.
const CHECK_BATCHES: [usize; 4] = [256, 1024, 4096, 16_384];

/// A batch whose keys spread over more than this many times as many seqs
/// (traces stored in another order than they started) is checked a trace at
/// a time instead of by reading the index over its whole range. Reading a
/// match costs well under a microsecond and checking one trace some 100:
/// traces that arrive a second or two out of order still read by range.
const DENSE: i64 = 64;

/// The index expression for a trace search in `tenant_id`'s organisation:
/// its token, and every term in the row of the trace (which holds its
/// spans' text too).
pub(super) fn doc_query(tenant_id: i64, terms: &[String]) -> String {
    format!(
        "tenant : {} AND body : ({})",
        super::trace_docs::tenant_token(tenant_id),
        terms.join(" AND ")
    )
}

/// How many traces match `query`, counted up to just past `few`.
pub(super) fn matches(conn: &Connection, query: &str, few: i64) -> Result<i64> {
    Ok(conn
        .prepare_cached(
            "SELECT count(*) FROM (SELECT 1 FROM trace_docs WHERE trace_docs MATCH ?1 LIMIT ?2)",
        )?
        .query_row(rusqlite::params![query, few.saturating_add(1)], |r| {
            r.get::<_, i64>(0)
        })?)
}

/// How a search list is answered: at most `few` matches make a search
/// answered from its matches; `dense` bounds the range a batch of the plain
/// list is checked over at once. Tests force either way.
#[derive(Debug, Clone, Copy)]
pub(super) struct Plan {
    pub few: i64,
    pub dense: i64,
}

/// A page of the list whose filter has full-text terms, newest first.
///
/// The index has one row per trace holding its and its spans' words, so
/// one lookup finds the traces holding every term. When they are few, they
/// are put in list order by the list's other filters and the page taken
/// from them; when many, the plain list's keys are read a batch at a time
/// (from the indexes, not the rows) and the index is read over the range of
/// seqs they cover. Either way only the page's own traces are read whole.
pub(super) fn list_text(
    conn: &Connection,
    tenant_id: i64,
    f: &super::TraceFilter,
    after: Option<super::TraceCursor>,
    limit: usize,
) -> Result<super::TracePage> {
    let plan = Plan {
        few: few_matches(conn)?,
        dense: DENSE,
    };
    list_text_with(conn, tenant_id, f, after, limit, plan)
}

pub(super) fn list_text_with(
    conn: &Connection,
    tenant_id: i64,
    f: &super::TraceFilter,
    after: Option<super::TraceCursor>,
    limit: usize,
    plan: Plan,
) -> Result<super::TracePage> {
    let query = doc_query(tenant_id, &f.text);
    let plain = super::TraceFilter {
        text: Vec::new(),
        ..f.clone()
    };
    let mut found = Vec::with_capacity(limit + 1);
    match matches(conn, &query, plan.few)? {
        0 => {}
        n if n <= plan.few => {
            let source = "SELECT rowid AS seq FROM trace_docs WHERE trace_docs MATCH ?";
            let keys =
                super::traces::keys_of(conn, tenant_id, &plain, after, source, vec![query.into()])?;
            found.extend(keys.into_iter().take(limit + 1));
        }
        _ => {
            let mut after = after;
            let sizes = CHECK_BATCHES
                .iter()
                .chain(std::iter::repeat(&CHECK_BATCHES[CHECK_BATCHES.len() - 1]));
            'batches: for &size in sizes {
                let keys = super::traces::list_keys(conn, tenant_id, &plain, after, size)?;
                let (Some(lo), Some(hi)) = (
                    keys.iter().map(|k| k.seq).min(),
                    keys.iter().map(|k| k.seq).max(),
                ) else {
                    break;
                };
                // Keys close together are checked by reading the index over
                // their range; scattered ones one by one.
                let held: HashSet<i64> = if hi - lo < plan.dense.saturating_mul(keys.len() as i64) {
                    conn.prepare_cached(
                        "SELECT rowid FROM trace_docs WHERE trace_docs MATCH ?1 \
                         AND rowid BETWEEN ?2 AND ?3",
                    )?
                    .query_map(rusqlite::params![query, lo, hi], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?
                } else {
                    let mut held = HashSet::with_capacity(keys.len());
                    let mut one = conn.prepare_cached(
                        "SELECT 1 FROM trace_docs WHERE trace_docs MATCH ?1 AND rowid = ?2",
                    )?;
                    for key in &keys {
                        if one
                            .query_row(rusqlite::params![query, key.seq], |_| Ok(()))
                            .optional()?
                            .is_some()
                        {
                            held.insert(key.seq);
                        }
                    }
                    held
                };
                for key in &keys {
                    if held.contains(&key.seq) {
                        found.push(*key);
                        if found.len() > limit {
                            break 'batches;
                        }
                    }
                }
                if keys.len() < size {
                    break;
                }
                after = keys.last().copied();
            }
        }
    }
    super::traces::page_of(conn, &found, limit)
}

/// A span search: its terms and what narrows it.
#[derive(Debug, Clone, Default)]
pub struct SpanSearch {
    /// FTS5 terms (see [`fts_terms`]), each of which a span must match.
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
    /// Position of the span in the index; the next page starts below it.
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
    /// Present when more spans match after the last one.
    pub next: Option<i64>,
}

impl Store {
    /// Spans of the tenant matching a search, the most recently stored first.
    pub async fn search_spans(&self, tenant_id: i64, search: SpanSearch) -> Result<SpanHits> {
        self.catch_up_search().await?;
        self.read(move |conn| spans(conn, tenant_id, &search)).await
    }
}

/// Index entries read per step of a span search.
const SPAN_CHUNK: i64 = 256;
/// Entries one span search reads at most before it answers with what it has
/// (and a cursor to go on from), so a search whose filters exclude nearly
/// every match still answers promptly.
const SPAN_SCAN_LIMIT: usize = 20_000;
/// The most spans a term may match and still weigh in a span's similarity.
const SCORED: i64 = 10_000;

/// How many spans match `term`, counted up to just past `most`.
fn span_matches(conn: &Connection, term: &str, most: i64) -> Result<i64> {
    Ok(conn
        .prepare_cached(
            "SELECT count(*) FROM (SELECT 1 FROM spans_fts WHERE spans_fts MATCH ?1 LIMIT ?2)",
        )?
        .query_row(rusqlite::params![term, most.saturating_add(1)], |r| {
            r.get(0)
        })?)
}

fn spans(conn: &Connection, tenant_id: i64, q: &SpanSearch) -> Result<SpanHits> {
    let limit = q.limit.clamp(1, MAX_SPAN_RESULTS);
    let expression = q.terms.join(" AND ");
    // The index yields matches newest first, a chunk at a time; each is
    // checked against the filters by its key, so a page costs the matches
    // it reads, not every match there is.
    let mut check = String::from(
        "SELECT s.id, t.id, p.uuid, s.name, s.type, s.created_at FROM spans s \
         JOIN traces t ON t.seq = s.trace_seq JOIN projects p ON p.id = t.project_id \
         WHERE s.rid = ?1 AND t.tenant_id = ?2",
    );
    let mut args: Vec<SqlValue> = vec![SqlValue::Null, tenant_id.into()];
    let mut clause = |condition: &str, value: i64| {
        args.push(value.into());
        check.push_str(&format!(" AND {condition} ?{}", args.len()));
    };
    if let Some(project) = q.project_id {
        clause("t.project_id =", project);
    }
    if let Some(from) = q.from {
        clause("s.created_at >=", from);
    }
    if let Some(to) = q.to {
        clause("s.created_at <=", to);
    }
    let mut check = conn.prepare_cached(&check)?;
    // Windows of keys below the cursor, read in ascending order (FTS5 seeks
    // straight to a window's start; reading a long list of matches backwards
    // is slow) and taken newest first. A window grows each time it finds too
    // little, so a rare word costs a few steps, not one per key.
    let mut window = conn.prepare_cached(
        "SELECT rowid FROM spans_fts WHERE spans_fts MATCH ?1 AND rowid BETWEEN ?2 AND ?3",
    )?;
    let top: i64 = conn.query_row("SELECT coalesce(max(rid), 0) FROM spans", [], |r| r.get(0))?;
    let mut hi = q.before.map_or(top, |b| b.saturating_sub(1).min(top));
    let mut width = SPAN_CHUNK * 4;
    let mut hits: Vec<SpanHit> = Vec::new();
    let mut read = 0;
    'windows: while hi >= 1 {
        let lo = hi.saturating_sub(width - 1).max(1);
        let keys: Vec<i64> = window
            .query_map(rusqlite::params![expression, lo, hi], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for rid in keys.iter().rev() {
            read += 1;
            args[0] = (*rid).into();
            let found = check
                .query_row(rusqlite::params_from_iter(args.iter()), |r| {
                    Ok(SpanHit {
                        position: *rid,
                        span_id: r.get(0)?,
                        trace_id: r.get(1)?,
                        project_id: r.get(2)?,
                        span_name: r.get(3)?,
                        span_type: r.get(4)?,
                        created_at: r.get(5)?,
                        similarity: 0.0,
                        snippet: String::new(),
                    })
                })
                .optional()?;
            if let Some(hit) = found {
                hits.push(hit);
                if hits.len() > limit {
                    break 'windows;
                }
            }
        }
        hi = lo - 1;
        if read >= SPAN_SCAN_LIMIT {
            break;
        }
        width = (width * 4).min(1 << 22);
    }
    let more = hi >= 1;
    let below = hi + 1;
    let next = if hits.len() > limit {
        hits.truncate(limit);
        hits.last().map(|h| h.position)
    } else if more && read >= SPAN_SCAN_LIMIT {
        // Stopped early: go on from the last entry read.
        Some(below)
    } else {
        None
    };
    // Relevance and snippets for the page only, in one pass over the range
    // of the index the page covers (a lookup by a single key would read the
    // term's whole list of matches each time).
    if let (Some(lo), Some(hi)) = (
        hits.iter().map(|h| h.position).min(),
        hits.iter().map(|h| h.position).max(),
    ) {
        let wanted: HashSet<i64> = hits.iter().map(|h| h.position).collect();
        let mut snippets = HashMap::with_capacity(hits.len());
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT rowid, snippet(spans_fts, -1, '{OPEN}', '{CLOSE}', '…', 24) \
             FROM spans_fts WHERE spans_fts MATCH ?1 AND rowid BETWEEN ?2 AND ?3"
        ))?;
        let mut rows = stmt.query(rusqlite::params![expression, lo, hi])?;
        while let Some(row) = rows.next()? {
            let rid: i64 = row.get(0)?;
            if wanted.contains(&rid) {
                snippets.insert(rid, row.get::<_, String>(1)?);
            }
        }
        // BM25 weighs each term by the number of spans it matches, which
        // FTS5 counts by reading the term's whole list of matches on every
        // query: for a word in most spans, hundreds of milliseconds. So the
        // score weighs the terms matching at most `SCORED` spans, and a
        // search of common words only scores 0, as BM25 all but does when a
        // word is in half the spans or more.
        let mut scored = Vec::new();
        for term in &q.terms {
            if span_matches(conn, term, SCORED)? <= SCORED {
                scored.push(term.as_str());
            }
        }
        let mut scores = HashMap::with_capacity(hits.len());
        if !scored.is_empty() {
            let mut stmt = conn.prepare_cached(
                "SELECT rowid, bm25(spans_fts) FROM spans_fts \
                 WHERE spans_fts MATCH ?1 AND rowid BETWEEN ?2 AND ?3",
            )?;
            let mut rows = stmt.query(rusqlite::params![scored.join(" AND "), lo, hi])?;
            while let Some(row) = rows.next()? {
                let rid: i64 = row.get(0)?;
                if wanted.contains(&rid) {
                    scores.insert(rid, row.get::<_, f64>(1)?);
                }
            }
        }
        for hit in &mut hits {
            if let Some(snippet) = snippets.remove(&hit.position) {
                hit.snippet = highlight(&snippet);
            }
            if let Some(rank) = scores.remove(&hit.position) {
                hit.similarity = similarity(rank);
            }
        }
    }
    Ok(SpanHits { hits, next })
}

/// BM25 scores are negative, better the lower; this maps them onto [0, 1).
fn similarity(bm25: f64) -> f64 {
    let score = (-bm25).max(0.0);
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

    #[test]
    fn user_text_becomes_quoted_terms_that_must_all_match() {
        assert_eq!(
            fts_query("refund policy").as_deref(),
            Some("\"refund\" AND \"policy\"")
        );
        assert_eq!(
            fts_query("  \"exact phrase\" more ").as_deref(),
            Some("\"exact phrase\" AND \"more\"")
        );
        assert_eq!(fts_query("refun*").as_deref(), Some("\"refun\"*"));
        // Query syntax is taken literally, never as operators.
        assert_eq!(
            fts_query("a OR b NOT c)").as_deref(),
            Some("\"a\" AND \"OR\" AND \"b\" AND \"NOT\" AND \"c)\"")
        );
        assert_eq!(fts_query("say \"hi").as_deref(), Some("\"say\" AND \"hi\""));
        assert_eq!(fts_query("   "), None);
        assert_eq!(fts_query("*** \"\" !!"), None);
        assert_eq!(
            fts_query("ca\0ts\u{1}x").as_deref(),
            Some("\"ca\" AND \"ts\" AND \"x\"")
        );
    }

    #[test]
    fn every_expression_built_is_valid_fts5() {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch(
            "CREATE VIRTUAL TABLE f USING fts5(body);
             INSERT INTO f VALUES ('the refund was approved'), ('NOT a refund: \"quoted\"');",
        )
        .expect("schema");
        for text in [
            "refund",
            "refun*",
            "\"refund was\"",
            "NOT",
            "a OR (b",
            "NEAR(x y)",
            "col:value",
            "^start",
            "'single' \"double",
            "x* y**",
            "\u{1F600} emoji",
            "nul\0inside",
        ] {
            let Some(expr) = fts_query(text) else {
                continue;
            };
            let counted: rusqlite::Result<i64> =
                conn.query_row("SELECT count(*) FROM f WHERE f MATCH ?1", [&expr], |r| {
                    r.get(0)
                });
            assert!(counted.is_ok(), "{text:?} gave {expr:?}: {counted:?}");
        }
        let hits: i64 = conn
            .query_row(
                "SELECT count(*) FROM f WHERE f MATCH ?1",
                [fts_query("refun*").expect("expr")],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(hits, 2);
    }

    #[test]
    fn every_way_of_answering_a_search_gives_the_exact_pages() {
        let (_dir, conn) = super::super::test_database();
        let words = ["alpha", "beta", "gamma", "delta"];
        // (id, started_at, words of the trace and its spans)
        let mut stored: Vec<(String, i64, Vec<&str>)> = Vec::new();
        for i in 0..300_usize {
            // Trace text and span text hold different words; start times
            // run against insertion order in places; a tenth of the traces
            // belong to another tenant; one word in 60 traces is rare.
            let tenant = if i % 10 == 7 { 2 } else { 1 };
            let rare = if i % 5 == 0 { " zeta" } else { "" };
            let trace_text = format!("{} trace {i}{rare}", words[i % 4]);
            let span_text = format!("{} span", words[(i / 4) % 4]);
            let started = ((i * 7919) % 300) as i64;
            conn.execute(
                "INSERT INTO traces (tenant_id, project_id, id, name, output, started_at, \
                 created_at, content_hash) VALUES (?4, 1, ?1, 'n', ?2, ?3, ?3, x'00')",
                rusqlite::params![format!("t{i}"), trace_text, started, tenant],
            )
            .expect("trace");
            let seq = conn.last_insert_rowid();
            let mut text: Vec<&str> = vec![words[i % 4], "trace"];
            if !rare.is_empty() {
                text.push("zeta");
            }
            for k in 0..(i % 3) {
                conn.execute(
                    "INSERT INTO spans (trace_seq, id, name, type, error, created_at) \
                     VALUES (?1, ?2, 'call', 'llm', ?3, 0)",
                    rusqlite::params![seq, format!("s{k}"), span_text],
                )
                .expect("span");
                text.extend([words[(i / 4) % 4], "span"]);
            }
            if tenant == 1 {
                stored.push((format!("t{i}"), started * 1000 + i as i64, text));
            }
        }
        index_batch(
            &conn,
            IndexBatch {
                traces: 10_000,
                spans: 160_000,
            },
        )
        .expect("index");
        let all_pages = |plan: Option<Plan>, terms: &[&str]| -> Vec<String> {
            let filter = super::super::TraceFilter {
                text: terms.iter().map(|t| fts_query(t).expect("term")).collect(),
                ..Default::default()
            };
            let mut ids = Vec::new();
            let mut after = None;
            loop {
                let page = match plan {
                    Some(plan) => list_text_with(&conn, 1, &filter, after, 20, plan),
                    None => super::super::traces::list(&conn, 1, &filter, after, 20),
                }
                .expect("page");
                assert!(page.traces.len() <= 20);
                ids.extend(page.traces.iter().map(|t| t.id.clone()));
                match page.next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
            ids
        };
        let plans = [
            ("the default", None),
            (
                "every term rare",
                Some(Plan {
                    few: i64::MAX,
                    dense: DENSE,
                }),
            ),
            (
                "every term common",
                Some(Plan {
                    few: 0,
                    dense: DENSE,
                }),
            ),
            ("common, trace by trace", Some(Plan { few: 0, dense: 0 })),
            (
                "common, by range",
                Some(Plan {
                    few: 0,
                    dense: i64::MAX / 1024,
                }),
            ),
        ];
        for terms in [
            &["alpha"][..],
            &["span"],
            &["zeta"],
            &["alpha", "beta"],
            &["gamma", "span"],
            &["trace", "delta"],
            &["zeta", "span", "trace"],
            &["beta", "span", "trace"],
            &["nothing"],
            &["alpha", "nothing"],
        ] {
            let mut expected: Vec<&(String, i64, Vec<&str>)> = stored
                .iter()
                .filter(|(_, _, text)| terms.iter().all(|t| text.contains(t)))
                .collect();
            expected.sort_by_key(|(_, key, _)| std::cmp::Reverse(*key));
            let expected: Vec<String> = expected.into_iter().map(|(id, _, _)| id.clone()).collect();
            assert!(
                terms.contains(&"nothing") || expected.len() > 20,
                "{terms:?} matches several pages"
            );
            for (name, plan) in plans {
                assert_eq!(all_pages(plan, terms), expected, "{name}: {terms:?}");
            }
        }
    }

    #[test]
    fn snippets_are_escaped_and_marked() {
        assert_eq!(
            highlight("a <b> & \u{2}refund\u{3} \"x\""),
            "a &lt;b&gt; &amp; <mark>refund</mark> &quot;x&quot;"
        );
        assert!(similarity(-3.0) > similarity(-1.0));
        assert!((0.0..1.0).contains(&similarity(-1e9)));
        assert_eq!(similarity(0.5), 0.0);
    }
}
