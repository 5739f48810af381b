//! Full-text search (SQLite FTS5) over trace and span names, inputs,
//! outputs and errors: the `q=` filter of trace lists (span search, which
//! reads the same index, is in `span_search`).
//!
//! What a user types is never handed to FTS5 as query syntax: it is split
//! into words and quoted phrases, each quoted for FTS5, and all must match.
//! A word ending in `*` matches as a prefix.

use std::collections::HashSet;

use rusqlite::{Connection, OptionalExtension};

use super::Result;

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
pub(super) const DENSE: i64 = 64;

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
        index_batch(&conn, IndexBatch { traces: 10_000 }).expect("index");
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
}
