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

/// The traces matching `query` with seqs from `lo` to `hi`, at most
/// `most`, lowest first. FTS5 reads a term's entries forwards: reading
/// them highest first costs several times as much for a common term.
pub(super) fn matching(
    conn: &Connection,
    query: &str,
    (lo, hi): (i64, i64),
    most: usize,
) -> Result<Vec<i64>> {
    Ok(conn
        .prepare_cached(
            "SELECT rowid FROM trace_docs WHERE trace_docs MATCH ?1 AND rowid BETWEEN ?2 AND ?3 \
             LIMIT ?4",
        )?
        .query_map(
            rusqlite::params![query, lo, hi, i64::try_from(most).unwrap_or(i64::MAX)],
            |r| r.get(0),
        )?
        .collect::<rusqlite::Result<_>>()?)
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

/// Seqs the first window of reading matches newest first covers; each
/// window after covers four times as many.
pub(super) const WINDOW: i64 = 4096;

/// Matches a search reads newest first before it turns to counting them
/// (when the start times of what it read run too far from the order traces
/// were stored in for it to know that its page is complete).
pub(super) const WALK: usize = 1024;

/// More than one match in this many seqs in the first window make the
/// search one that many traces match: checking the plain list's keys (well
/// under a microsecond each) costs less than reading matches (a trace row
/// each, some 10 µs).
pub(super) const SPARSE: i64 = 32;

/// How a search list is answered: matches are read newest first in windows
/// of seqs starting at `window` wide, `walk` of them at most (none with
/// 0), and not when the first window holds more than one in `sparse`; then
/// at most `few` matches make a search answered from its matches; `dense`
/// bounds the range a batch of the plain list is checked over at once.
/// Tests force each way.
#[derive(Debug, Clone, Copy)]
pub(super) struct Plan {
    pub window: i64,
    pub walk: usize,
    pub sparse: i64,
    pub few: i64,
    pub dense: i64,
}

/// A page of the list whose filter has full-text terms, newest first.
///
/// The index has one row per trace holding its and its spans' words, so
/// one lookup finds the traces holding every term. They are read newest
/// stored first, and the page is complete once no trace stored before the
/// last one read can have started late enough to belong on it (see
/// `trace_zones`): a search answers from about a page of matches however
/// many traces it matches, as long as start times follow the order traces
/// arrive in. When they do not, or when the first matches are dense, the
/// matches are counted: few are put in list order by the list's other
/// filters and the page taken from them; many are found by reading the
/// plain list's keys a batch at a time (from the indexes, not the rows) and
/// the index over the range of seqs they cover. Either way only the page's
/// own traces are read whole.
pub(super) fn list_text(
    conn: &Connection,
    tenant_id: i64,
    f: &super::TraceFilter,
    after: Option<super::TraceCursor>,
    limit: usize,
) -> Result<super::TracePage> {
    let plan = Plan {
        window: WINDOW,
        walk: WALK,
        sparse: SPARSE,
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
    let search = PageSearch {
        conn,
        tenant_id,
        plain: &plain,
        after,
        limit,
        query: &query,
        plan,
    };
    let walked = search.newest_first()?;
    let settled = walked.page.is_some();
    tracing::debug!(
        read = walked.read,
        settled,
        dense = walked.dense,
        "search read its matches newest first"
    );
    let found = match walked.page {
        Some(found) => found,
        None if walked.dense => search.checked()?,
        None => search.by_count()?,
    };
    super::traces::page_of(conn, &found, limit)
}

/// One page of a search: what each way of answering it reads with.
struct PageSearch<'a> {
    conn: &'a Connection,
    tenant_id: i64,
    /// The list's filters but the text.
    plain: &'a super::TraceFilter,
    after: Option<super::TraceCursor>,
    limit: usize,
    /// The index expression (see `doc_query`).
    query: &'a str,
    plan: Plan,
}

/// What reading the matches newest stored first came to.
struct Walked {
    /// The page's keys (one more than `limit` when there is more), or
    /// `None` when the matches are dense or `plan.walk` of them do not
    /// settle the page.
    page: Option<Vec<super::TraceCursor>>,
    /// The first window held more than one match in `plan.sparse` seqs.
    dense: bool,
    /// Matches read.
    read: usize,
}

impl PageSearch<'_> {
    /// The keys of `seqs` that pass the list's other filters and come after
    /// the cursor, in list order.
    fn keys_among(&self, seqs: &[i64]) -> Result<Vec<super::TraceCursor>> {
        let source = "SELECT value AS seq FROM json_each(?)";
        let seqs = serde_json::Value::from(seqs).to_string();
        super::traces::keys_of(
            self.conn,
            self.tenant_id,
            self.plain,
            self.after,
            source,
            vec![seqs.into()],
        )
    }

    /// Reads the matches newest stored first, a window of seqs at a time,
    /// until the page is settled (see `list_text`).
    fn newest_first(&self) -> Result<Walked> {
        let (conn, tenant_id, limit, plan) = (self.conn, self.tenant_id, self.limit, self.plan);
        let mut found: Vec<super::TraceCursor> = Vec::new();
        let mut hi: i64 = conn
            .prepare_cached("SELECT coalesce(max(seq), 0) FROM traces")?
            .query_row([], |r| r.get(0))?;
        let (mut width, mut read) = (plan.window.max(1), 0);
        while hi >= 1 {
            let lo = hi.saturating_sub(width - 1).max(1);
            // The first window dense, or too many to read: the page is found
            // another way.
            let budget = plan.walk.saturating_sub(read);
            let sparse = (read == 0 && plan.sparse > 0)
                .then(|| usize::try_from(width / plan.sparse).unwrap_or(0))
                .filter(|most| *most < budget);
            let room = sparse.unwrap_or(budget);
            let seqs = matching(conn, self.query, (lo, hi), room.saturating_add(1))?;
            if seqs.len() > room {
                return Ok(Walked {
                    page: None,
                    dense: sparse.is_some(),
                    read,
                });
            }
            read += seqs.len();
            if !seqs.is_empty() {
                found.extend(self.keys_among(&seqs)?);
                found.sort_unstable_by_key(|k| std::cmp::Reverse((k.started_at, k.seq)));
                found.truncate(limit + 1);
            }
            // Every match not read is stored below `lo`: none started later
            // than the bound of the zones up to there. Ties sort after the
            // page, having lower seqs.
            if let Some(last) = found.get(limit) {
                match latest_start_upto(conn, tenant_id, lo - 1)? {
                    Some(bound) if bound > last.started_at => {}
                    _ => {
                        return Ok(Walked {
                            page: Some(found),
                            dense: false,
                            read,
                        })
                    }
                }
            }
            hi = lo - 1;
            width = width.saturating_mul(4);
        }
        Ok(Walked {
            page: Some(found),
            dense: false,
            read,
        })
    }

    /// The page's keys when the matches are counted first: few are gathered
    /// and sorted, many found by checking the plain list's keys.
    fn by_count(&self) -> Result<Vec<super::TraceCursor>> {
        let most = usize::try_from(self.plan.few.saturating_add(1)).unwrap_or(usize::MAX);
        let seqs = matching(self.conn, self.query, (1, i64::MAX), most)?;
        if seqs.len() < most {
            let mut keys = self.keys_among(&seqs)?;
            keys.truncate(self.limit + 1);
            return Ok(keys);
        }
        self.checked()
    }

    /// The page's keys found by reading the plain list's keys a batch at a
    /// time and keeping those the index holds.
    fn checked(&self) -> Result<Vec<super::TraceCursor>> {
        let (conn, query, limit, plan) = (self.conn, self.query, self.limit, self.plan);
        let mut found = Vec::with_capacity(limit + 1);
        let mut after = self.after;
        let sizes = CHECK_BATCHES
            .iter()
            .chain(std::iter::repeat(&CHECK_BATCHES[CHECK_BATCHES.len() - 1]));
        for &size in sizes {
            let keys = super::traces::list_keys(conn, self.tenant_id, self.plain, after, size)?;
            let (Some(lo), Some(hi)) = (
                keys.iter().map(|k| k.seq).min(),
                keys.iter().map(|k| k.seq).max(),
            ) else {
                break;
            };
            // Keys close together are checked by reading the index over their
            // range; scattered ones one by one.
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
                        return Ok(found);
                    }
                }
            }
            if keys.len() < size {
                break;
            }
            after = keys.last().copied();
        }
        Ok(found)
    }
}

/// The latest start of the organisation's traces stored at or below `seq`
/// (and perhaps a little above: a zone is 256 seqs), or `None` when it has
/// none there.
fn latest_start_upto(conn: &Connection, tenant_id: i64, seq: i64) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached(
            "SELECT upto FROM trace_zones WHERE tenant_id = ?1 AND zone <= ?2 \
             ORDER BY zone DESC LIMIT 1",
        )?
        .query_row([tenant_id, seq >> 8], |r| r.get(0))
        .optional()?)
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

    /// How a test database's start times relate to the order its traces
    /// were stored in.
    #[derive(Clone, Copy, Debug)]
    enum Starts {
        /// No relation at all (a backfill of old traces in any order).
        Shuffled,
        /// In arrival order with a few traces of jitter, every 37th trace
        /// stored long after it started (sent when it ended) and one trace
        /// from a clock far ahead.
        Arrival,
    }

    impl Starts {
        fn of(self, i: usize) -> i64 {
            let i = i as i64;
            match self {
                Starts::Shuffled => (i * 7919) % 300,
                Starts::Arrival if i == 1300 => 1_000_000,
                Starts::Arrival if i % 37 == 0 => (i - 400) * 100,
                Starts::Arrival => i * 100 + (i * 7919) % 5 * 100,
            }
        }
    }

    /// A trace of a test database: its id, its key (start, seq) and its
    /// words and its spans'.
    type Stored = (String, (i64, i64), Vec<&'static str>);

    /// `n` traces of tenant 1 (and every tenth of tenant 2), indexed, and
    /// those of tenant 1.
    fn search_database(n: usize, starts: Starts) -> (tempfile::TempDir, Connection, Vec<Stored>) {
        let (dir, conn) = super::super::test_database();
        let words = ["alpha", "beta", "gamma", "delta"];
        let mut stored = Vec::new();
        conn.execute_batch("BEGIN").expect("begin");
        for i in 0..n {
            // Trace text and span text hold different words; a tenth of
            // the traces belong to another tenant; one word in 60 traces is
            // rare.
            let tenant = if i % 10 == 7 { 2 } else { 1 };
            let rare = if i % 5 == 0 { " zeta" } else { "" };
            let trace_text = format!("{} trace {i}{rare}", words[i % 4]);
            let span_text = format!("{} span", words[(i / 4) % 4]);
            let started = starts.of(i);
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
                stored.push((format!("t{i}"), (started, seq), text));
            }
        }
        index_batch(&conn, IndexBatch { traces: 100_000 }).expect("index");
        conn.execute_batch("COMMIT").expect("commit");
        (dir, conn, stored)
    }

    fn text_filter(terms: &[&str]) -> super::super::TraceFilter {
        super::super::TraceFilter {
            text: terms.iter().map(|t| fts_query(t).expect("term")).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn every_way_of_answering_a_search_gives_the_exact_pages() {
        for (n, starts) in [(300, Starts::Shuffled), (1500, Starts::Arrival)] {
            let (_dir, conn, stored) = search_database(n, starts);
            let all_pages = |plan: Option<Plan>, terms: &[&str]| -> Vec<String> {
                let filter = text_filter(terms);
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
            let counted = |few, dense| Plan {
                window: WINDOW,
                walk: 0,
                sparse: SPARSE,
                few,
                dense,
            };
            let plans = [
                ("the default", None),
                ("every term rare", Some(counted(i64::MAX, DENSE))),
                ("every term common", Some(counted(0, DENSE))),
                ("common, trace by trace", Some(counted(0, 0))),
                ("common, by range", Some(counted(0, i64::MAX / 1024))),
                (
                    "newest first to the end",
                    Some(Plan {
                        window: 1,
                        walk: usize::MAX,
                        sparse: 0,
                        few: 0,
                        dense: DENSE,
                    }),
                ),
                (
                    "newest first in wide windows",
                    Some(Plan {
                        window: 200,
                        walk: usize::MAX,
                        sparse: 0,
                        few: 0,
                        dense: DENSE,
                    }),
                ),
                (
                    "dense at once, so checked",
                    Some(Plan {
                        window: 64,
                        walk: usize::MAX,
                        sparse: i64::MAX,
                        few: i64::MAX,
                        dense: DENSE,
                    }),
                ),
                (
                    "newest first, then counted",
                    Some(Plan {
                        window: 16,
                        walk: 70,
                        sparse: 0,
                        few: 100,
                        dense: DENSE,
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
                let mut expected: Vec<_> = stored
                    .iter()
                    .filter(|(_, _, text)| terms.iter().all(|t| text.contains(t)))
                    .collect();
                expected.sort_by_key(|(_, key, _)| std::cmp::Reverse(*key));
                let expected: Vec<String> =
                    expected.into_iter().map(|(id, _, _)| id.clone()).collect();
                assert!(
                    terms.contains(&"nothing") || expected.len() > 20,
                    "{terms:?} matches several pages"
                );
                for (name, plan) in plans {
                    assert_eq!(
                        all_pages(plan, terms),
                        expected,
                        "{starts:?}, {name}: {terms:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_search_read_newest_first_stops_at_its_page_when_starts_follow_arrival() {
        let plan = Plan {
            window: 64,
            walk: usize::MAX,
            sparse: 0,
            few: 0,
            dense: DENSE,
        };
        let walk = |conn: &Connection, terms: &[&str]| {
            let plain = super::super::TraceFilter::default();
            let query = doc_query(1, &text_filter(terms).text);
            PageSearch {
                conn,
                tenant_id: 1,
                plain: &plain,
                after: None,
                limit: 20,
                query: &query,
                plan,
            }
            .newest_first()
            .expect("walk")
        };
        let (_dir, conn, stored) = search_database(1500, Starts::Arrival);
        let holding = |word| stored.iter().filter(|(_, _, t)| t.contains(&word)).count();
        // "span" is in two traces of three of tenant 1. The first window
        // (seqs 1437-1500) ends in the zone (1280-1535) of the trace from
        // the clock ahead, whose bound it raises; the second (1181-1436)
        // passes below that zone and settles the page, topped by that
        // trace, having read a fifth of the matches.
        let walked = walk(&conn, &["span"]);
        let page = walked.page.expect("settled");
        assert_eq!(page.len(), 21);
        assert_eq!(page[0].started_at, 1_000_000);
        let in_windows = stored
            .iter()
            .filter(|(_, (_, seq), t)| *seq >= 1181 && t.contains(&"span"))
            .count();
        assert_eq!(walked.read, in_windows);
        assert!(walked.read * 4 < holding("span"));
        // "zeta" is in one trace in five: the same two windows settle it,
        // the stragglers stored among its matches (which started long
        // before) left to later pages.
        let walked = walk(&conn, &["zeta"]);
        assert!(walked.page.is_some());
        assert!(walked.read * 4 < holding("zeta"), "{}", walked.read);
        // With no relation between the two orders, every match is read.
        let (_dir, conn, stored) = search_database(1500, Starts::Shuffled);
        let walked = walk(&conn, &["span"]);
        let holding = stored
            .iter()
            .filter(|(_, _, t)| t.contains(&"span"))
            .count();
        assert_eq!(walked.read, holding);
    }

    #[test]
    fn traces_stored_before_the_upgrade_get_their_bounds_from_it() {
        let (dir, mut conn) = super::super::test_database_at(23);
        conn.execute_batch("BEGIN").expect("begin");
        for i in 0..1000_i64 {
            // Starts late in the first zone, then following arrival.
            let started = if i == 10 { 700_000 } else { i * 100 };
            conn.execute(
                "INSERT INTO traces (tenant_id, project_id, id, started_at, created_at, \
                 content_hash) VALUES (1, 1, ?1, ?2, 0, x'00')",
                rusqlite::params![format!("t{i}"), started],
            )
            .expect("trace");
        }
        conn.execute_batch("COMMIT").expect("commit");
        super::super::migrations::migrate(&mut conn, dir.path()).expect("upgrade");
        // (tenant, seq, bound): zone 0 holds seqs 1-255 (trace 10 among
        // them), zone 3 seqs 768-1000.
        let check = |cases: &[(i64, i64, Option<i64>)]| {
            for &(tenant, seq, bound) in cases {
                let found = latest_start_upto(&conn, tenant, seq).expect("bound");
                assert_eq!(found, bound, "tenant {tenant}, seq {seq}");
            }
        };
        check(&[
            (1, 100, Some(700_000)),
            (1, 800, Some(700_000)),
            (2, 800, None),
        ]);
        conn.execute(
            "INSERT INTO traces (tenant_id, project_id, id, started_at, created_at, content_hash) \
             VALUES (1, 1, 'after', 900000, 0, x'00')",
            [],
        )
        .expect("trace after the upgrade");
        check(&[(1, 1001, Some(900_000)), (1, 767, Some(700_000))]);
    }

    #[test]
    fn the_bound_on_late_starts_covers_every_trace_stored_below_whatever_the_order() {
        let (_dir, conn) = super::super::test_database();
        let mut rng = 0x9e37_79b9_u64;
        let mut starts: Vec<(i64, i64, i64)> = Vec::new(); // (seq, tenant, started)
        conn.execute_batch("BEGIN").expect("begin");
        for i in 0..3000_i64 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let tenant = 1 + i64::from(rng.is_multiple_of(3));
            let started = i * 10 + (rng % 2000) as i64 - 1000;
            conn.execute(
                "INSERT INTO traces (tenant_id, project_id, id, started_at, created_at, \
                 content_hash) VALUES (?1, 1, ?2, ?3, 0, x'00')",
                rusqlite::params![tenant, format!("t{i}"), started],
            )
            .expect("trace");
            starts.push((conn.last_insert_rowid(), tenant, started));
            // Now and then a stored trace starts later than first sent.
            if i % 250 == 249 {
                let (seq, tenant, started) = starts[(rng % starts.len() as u64) as usize];
                let later = started + 50_000;
                conn.execute(
                    "UPDATE traces SET started_at = ?2 WHERE seq = ?1",
                    rusqlite::params![seq, later],
                )
                .expect("update");
                let k = starts.iter().position(|s| s.0 == seq).expect("stored");
                starts[k] = (seq, tenant, later);
            }
        }
        // A few are deleted: the bound may stay above what is left.
        conn.execute("DELETE FROM traces WHERE seq % 97 = 0", [])
            .expect("delete");
        conn.execute_batch("COMMIT").expect("commit");
        starts.retain(|s| s.0 % 97 != 0);
        for tenant in [1, 2, 3] {
            for seq in (0..3100).step_by(7) {
                let latest = starts
                    .iter()
                    .filter(|s| s.1 == tenant && s.0 <= seq)
                    .map(|s| s.2)
                    .max();
                let bound = latest_start_upto(&conn, tenant, seq).expect("bound");
                match (latest, bound) {
                    (Some(latest), Some(bound)) => assert!(
                        bound >= latest && bound <= latest + 60_000,
                        "tenant {tenant} seq {seq}: {bound} for {latest}"
                    ),
                    (None, None) => {}
                    // A zone opened by traces above `seq`, all deleted or
                    // of the same zone: still an upper bound.
                    (None, Some(_)) => {}
                    (Some(latest), None) => panic!("tenant {tenant} seq {seq}: none for {latest}"),
                }
            }
        }
    }
}
