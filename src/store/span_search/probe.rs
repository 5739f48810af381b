//! The spans a span search checks, in an FTS5 table in memory: which
//! match, their snippets and how well they match.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::super::search::{doc_query, matches};
use super::super::Result;
use super::{SpanHit, Text};

/// Mark the start and end of a match in a snippet before it is escaped.
/// Control characters: one already in stored text adds a stray but harmless
/// `<mark>`, never markup of its own.
const OPEN: char = '\u{2}';
const CLOSE: char = '\u{3}';

/// The spans checked by one search, in an FTS5 table of their own in
/// memory, split into words as the index splits them.
pub(super) struct Probe {
    conn: Connection,
    expression: String,
}

impl Probe {
    pub(super) fn open(terms: &[String]) -> Result<Probe> {
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

    pub(super) fn add(&self, rid: i64, text: &Text) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO probe (rowid, name, input, output, error) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(rusqlite::params![rid, text[0], text[1], text[2], text[3]])?;
        Ok(())
    }

    /// The checked spans between `lo` and `hi` that hold every term.
    pub(super) fn matching(&self, lo: i64, hi: i64) -> Result<Vec<i64>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT rowid FROM probe WHERE probe MATCH ?1 AND rowid BETWEEN ?2 AND ?3",
            )?
            .query_map(rusqlite::params![self.expression, lo, hi], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?)
    }

    /// Fills in each hit's snippet and similarity.
    pub(super) fn describe(
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
pub(in crate::store) struct TermCounts(Mutex<HashMap<(i64, String), (i64, Instant)>>);

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
    use super::super::super::search_index::{index_batch, IndexBatch};
    use super::super::tests::{add_span, add_trace};
    use super::*;

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

    #[test]
    fn a_term_is_counted_once_a_minute_per_organisation_and_the_counts_stay_bounded() {
        let (_dir, conn) = crate::store::test_database();
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
