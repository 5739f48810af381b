//! Full-text search (SQLite FTS5) over trace and span names, inputs,
//! outputs and errors: the `q=` filter of trace lists and the span search.
//!
//! What a user types is never handed to FTS5 as query syntax: it is split
//! into words and quoted phrases, each quoted for FTS5, and all must match.
//! A word ending in `*` matches as a prefix.

use rusqlite::types::Value as SqlValue;
use rusqlite::Connection;

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

/// The SQL condition "trace `t` or one of its spans matches", with its
/// arguments (the FTS5 expression, once per `?`). A trace matches a search
/// when each term is in it or in one of its spans, not necessarily the same.
pub(super) fn trace_matches(expression: &str) -> (&'static str, Vec<SqlValue>) {
    (
        "t.seq IN (SELECT rowid FROM traces_fts WHERE traces_fts MATCH ? \
         UNION SELECT s.trace_seq FROM spans_fts JOIN spans s ON s.rid = spans_fts.rowid \
         WHERE spans_fts MATCH ?)",
        vec![expression.to_owned().into(), expression.to_owned().into()],
    )
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
        self.read(move |conn| spans(conn, tenant_id, &search)).await
    }
}

fn spans(conn: &Connection, tenant_id: i64, q: &SpanSearch) -> Result<SpanHits> {
    let limit = q.limit.clamp(1, MAX_SPAN_RESULTS);
    // The index yields matches newest first, so a page costs the matches it
    // shows (and those the filters pass over), not every match there is.
    let mut sql = format!(
        "SELECT spans_fts.rowid, s.id, t.id, p.uuid, s.name, s.type, s.created_at, \
         bm25(spans_fts), snippet(spans_fts, -1, '{OPEN}', '{CLOSE}', '…', 24) \
         FROM spans_fts JOIN spans s ON s.rid = spans_fts.rowid \
         JOIN traces t ON t.seq = s.trace_seq JOIN projects p ON p.id = t.project_id \
         WHERE spans_fts MATCH ?1 AND t.tenant_id = ?2"
    );
    let mut args: Vec<SqlValue> = vec![q.expression.clone().into(), tenant_id.into()];
    let mut clause = |condition: &str, value: i64| {
        args.push(value.into());
        sql.push_str(&format!(" AND {condition} ?{}", args.len()));
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
    if let Some(before) = q.before {
        clause("spans_fts.rowid <", before);
    }
    sql.push_str(&format!(
        " ORDER BY spans_fts.rowid DESC LIMIT {}",
        limit + 1
    ));
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut hits = stmt
        .query_map(rusqlite::params_from_iter(args), |r| {
            let rank: f64 = r.get(7)?;
            let snippet: String = r.get(8)?;
            Ok(SpanHit {
                position: r.get(0)?,
                span_id: r.get(1)?,
                trace_id: r.get(2)?,
                project_id: r.get(3)?,
                span_name: r.get(4)?,
                span_type: r.get(5)?,
                created_at: r.get(6)?,
                similarity: similarity(rank),
                snippet: highlight(&snippet),
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let next = if hits.len() > limit {
        hits.truncate(limit);
        hits.last().map(|h| h.position)
    } else {
        None
    };
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
