//! Full-text search (SQLite FTS5) over trace and span names, inputs,
//! outputs and errors: the `q=` filter of trace lists and the span search.
//!
//! What a user types is never handed to FTS5 as query syntax: it is split
//! into words and quoted phrases, each quoted for FTS5, and all must match.
//! A word ending in `*` matches as a prefix.

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

/// A term matching at most this many traces and spans together is rare:
/// the list is read from its matches. A query of common terms only is
/// answered by checking the plain list against the index a batch at a time.
///
/// Gathering costs about 4 µs a match; checking costs about 25 µs a trace,
/// and a page of 50 needs 50·N/M traces checked when M of N traces match.
/// The two meet near M = √(300·N), which this follows within bounds.
pub(super) fn few_matches(conn: &Connection) -> Result<i64> {
    let traces: i64 =
        conn.query_row("SELECT coalesce(max(seq), 0) FROM traces", [], |r| r.get(0))?;
    Ok(((300.0 * traces.max(0) as f64).sqrt() as i64).clamp(1_000, 50_000))
}

/// Traces checked per batch when every term is common.
const CHECK_BATCH: usize = 256;

/// How many traces and spans match `term`, counted up to just past `few`.
pub(super) fn matches(conn: &Connection, term: &str, few: i64) -> Result<i64> {
    let mut total = 0;
    for table in ["traces_fts", "spans_fts"] {
        total += conn
            .prepare_cached(&format!(
                "SELECT count(*) FROM (SELECT 1 FROM {table} WHERE {table} MATCH ?1 LIMIT ?2)"
            ))?
            .query_row(rusqlite::params![term, few + 1], |r| r.get::<_, i64>(0))?;
        if total > few {
            break;
        }
    }
    Ok(total)
}

/// The traces `term` matches, itself or through a span, as a query of one
/// column `seq`, with its arguments.
pub(super) fn matching_seqs(term: &str) -> (&'static str, Vec<SqlValue>) {
    (
        "SELECT rowid AS seq FROM traces_fts WHERE traces_fts MATCH ? \
         UNION SELECT s.trace_seq FROM spans_fts JOIN spans s ON s.rid = spans_fts.rowid \
         WHERE spans_fts MATCH ?",
        vec![term.to_owned().into(), term.to_owned().into()],
    )
}

/// The SQL condition "trace `t` or one of its spans matches `term`", for a
/// term beside the one that drives the query, with its arguments. A trace
/// matches a search when each term is in it or in one of its spans, not
/// necessarily the same.
pub(super) fn trace_matches(term: &str) -> (&'static str, Vec<SqlValue>) {
    let (_, args) = matching_seqs(term);
    (
        "t.seq IN (SELECT rowid FROM traces_fts WHERE traces_fts MATCH ? \
         UNION SELECT s.trace_seq FROM spans_fts JOIN spans s ON s.rid = spans_fts.rowid \
         WHERE spans_fts MATCH ?)",
        args,
    )
}

/// A page of the list when every term is common: the list without the
/// terms is read a batch at a time and each batch checked against the
/// index over the range of keys it covers, until the page is full.
pub(super) fn list_common(
    conn: &Connection,
    tenant_id: i64,
    f: &super::TraceFilter,
    mut after: Option<super::TraceCursor>,
    limit: usize,
) -> Result<super::TracePage> {
    let plain = super::TraceFilter {
        text: Vec::new(),
        ..f.clone()
    };
    let mut traces = Vec::new();
    let mut keys = Vec::new();
    let mut page = super::page::PageBytes::default();
    loop {
        let batch = super::traces::list(conn, tenant_id, &plain, after, CHECK_BATCH)?;
        let (Some(lo), Some(hi)) = (
            batch.keys.iter().map(|k| k.seq).min(),
            batch.keys.iter().map(|k| k.seq).max(),
        ) else {
            break;
        };
        let mut wanted: std::collections::HashSet<i64> = batch.keys.iter().map(|k| k.seq).collect();
        for term in &f.text {
            let found = matches_between(conn, term, lo, hi)?;
            wanted.retain(|seq| found.contains(seq));
            if wanted.is_empty() {
                break;
            }
        }
        for (trace, key) in batch.traces.into_iter().zip(batch.keys) {
            if wanted.contains(&key.seq) {
                if !page.admit(&trace) {
                    // Full: the page ends at the last trace it holds.
                    return Ok(super::TracePage {
                        next: keys.last().copied(),
                        traces,
                        keys,
                    });
                }
                traces.push(trace);
                keys.push(key);
            }
        }
        if traces.len() > limit || batch.next.is_none() {
            break;
        }
        after = batch.next;
    }
    let next = if traces.len() > limit {
        traces.truncate(limit);
        keys.truncate(limit);
        keys.last().copied()
    } else {
        None
    };
    Ok(super::TracePage { traces, next, keys })
}

/// The traces with a seq in `lo..=hi` that `term` matches, itself or
/// through a span.
fn matches_between(
    conn: &Connection,
    term: &str,
    lo: i64,
    hi: i64,
) -> Result<std::collections::HashSet<i64>> {
    let mut found: std::collections::HashSet<i64> = conn
        .prepare_cached(
            "SELECT rowid FROM traces_fts WHERE traces_fts MATCH ?1 AND rowid BETWEEN ?2 AND ?3",
        )?
        .query_map(rusqlite::params![term, lo, hi], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let span_range: (Option<i64>, Option<i64>) = conn
        .prepare_cached("SELECT min(rid), max(rid) FROM spans WHERE trace_seq BETWEEN ?1 AND ?2")?
        .query_row([lo, hi], |r| Ok((r.get(0)?, r.get(1)?)))?;
    if let (Some(rlo), Some(rhi)) = span_range {
        let mut stmt = conn.prepare_cached(
            "SELECT s.trace_seq FROM spans_fts CROSS JOIN spans s ON s.rid = spans_fts.rowid \
             WHERE spans_fts MATCH ?1 AND spans_fts.rowid BETWEEN ?2 AND ?3",
        )?;
        let seqs = stmt.query_map(rusqlite::params![term, rlo, rhi], |r| r.get::<_, i64>(0))?;
        for seq in seqs {
            let seq = seq?;
            if (lo..=hi).contains(&seq) {
                found.insert(seq);
            }
        }
    }
    Ok(found)
}

/// A span search: the FTS5 expression and what narrows it.
#[derive(Debug, Clone, Default)]
pub struct SpanSearch {
    pub expression: String,
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

fn spans(conn: &Connection, tenant_id: i64, q: &SpanSearch) -> Result<SpanHits> {
    let limit = q.limit.clamp(1, MAX_SPAN_RESULTS);
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
            .query_map(rusqlite::params![q.expression, lo, hi], |r| r.get(0))?
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
        let mut detail = conn.prepare_cached(&format!(
            "SELECT rowid, bm25(spans_fts), snippet(spans_fts, -1, '{OPEN}', '{CLOSE}', '…', 24) \
             FROM spans_fts WHERE spans_fts MATCH ?1 AND rowid BETWEEN ?2 AND ?3"
        ))?;
        let wanted: std::collections::HashSet<i64> = hits.iter().map(|h| h.position).collect();
        let mut found = std::collections::HashMap::with_capacity(hits.len());
        let mut rows = detail.query(rusqlite::params![q.expression, lo, hi])?;
        while let Some(row) = rows.next()? {
            let rid: i64 = row.get(0)?;
            if wanted.contains(&rid) {
                found.insert(rid, (row.get::<_, f64>(1)?, row.get::<_, String>(2)?));
            }
        }
        for hit in &mut hits {
            if let Some((rank, snippet)) = found.remove(&hit.position) {
                hit.similarity = similarity(rank);
                hit.snippet = highlight(&snippet);
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
    fn common_term_pages_equal_rare_term_pages() {
        let (_dir, conn) = super::super::test_database();
        let words = ["alpha", "beta", "gamma", "delta"];
        for i in 0..300_usize {
            // Trace text and span text hold different words; start times
            // run against insertion order in places.
            let trace_text = format!("{} trace {i}", words[i % 4]);
            let span_text = format!("{} span", words[(i / 4) % 4]);
            let started = ((i * 7919) % 300) as i64;
            conn.execute(
                "INSERT INTO traces (tenant_id, project_id, id, name, output, started_at, \
                 created_at, content_hash) VALUES (1, 1, ?1, 'n', ?2, ?3, ?3, x'00')",
                rusqlite::params![format!("t{i}"), trace_text, started],
            )
            .expect("trace");
            let seq = conn.last_insert_rowid();
            for k in 0..(i % 3) {
                conn.execute(
                    "INSERT INTO spans (trace_seq, id, name, type, error, created_at) \
                     VALUES (?1, ?2, 'call', 'llm', ?3, 0)",
                    rusqlite::params![seq, format!("s{k}"), span_text],
                )
                .expect("span");
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
        let all_pages = |common: bool, terms: &[&str]| -> Vec<String> {
            let filter = super::super::TraceFilter {
                text: terms.iter().map(|t| fts_query(t).expect("term")).collect(),
                ..Default::default()
            };
            let mut ids = Vec::new();
            let mut after = None;
            loop {
                let page = if common {
                    list_common(&conn, 1, &filter, after, 20)
                } else {
                    super::super::traces::list(&conn, 1, &filter, after, 20)
                }
                .expect("page");
                ids.extend(page.traces.iter().map(|t| t.id.clone()));
                match page.next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
            ids
        };
        for terms in [
            &["alpha"][..],
            &["span"],
            &["alpha", "beta"],
            &["gamma", "span"],
            &["trace", "delta"],
            &["nothing"],
        ] {
            let rare = all_pages(false, terms);
            assert_eq!(rare, all_pages(true, terms), "{terms:?}");
            assert!(
                terms == ["nothing"] || rare.len() > 20,
                "{terms:?} matches several pages"
            );
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
