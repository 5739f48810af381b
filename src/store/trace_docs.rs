//! The full-text index as one row per trace (`trace_docs`, migration 22):
//! the trace's organisation, and the text of the trace and of its spans
//! joined, so that the index itself intersects the words of a search.
//!
//! Written in batches by the writer like the index it is to replace: new
//! traces past a mark, and traces whose text or spans changed once indexed
//! (queued by triggers in `trace_docs_dirty`) written again whole.

use rusqlite::{params, Connection};

use super::Result;

/// What a trace's texts are joined with: a private-use character (U+E000)
/// between spaces, which the tokenizer keeps as a token of its own, so that
/// a phrase cannot run from one text into the next.
const SEPARATOR: &str = " \u{e000} ";

/// The organisation's token in the `tenant` column.
pub(super) fn tenant_token(tenant_id: i64) -> String {
    format!("t{tenant_id}")
}

/// Indexes up to `traces` new traces and up to `traces` changed ones;
/// returns how many rows were written.
pub(super) fn index_docs(conn: &Connection, traces: usize) -> Result<usize> {
    let mark: i64 = conn
        .prepare_cached("SELECT seq FROM trace_docs_state")?
        .query_row([], |r| r.get(0))?;
    let mut written = 0;
    let upto: Option<i64> = conn
        .prepare_cached(
            "SELECT max(seq) FROM (SELECT seq FROM traces WHERE seq > ?1 ORDER BY seq LIMIT ?2)",
        )?
        .query_row(params![mark, traces as i64], |r| r.get(0))?;
    if let Some(upto) = upto {
        written += write_rows(conn, mark, upto)?;
        conn.prepare_cached("UPDATE trace_docs_state SET seq = ?1")?
            .execute([upto])?;
    }
    let dirty: Vec<i64> = conn
        .prepare_cached("SELECT seq FROM trace_docs_dirty ORDER BY seq LIMIT ?1")?
        .query_map([traces as i64], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut forget = conn.prepare_cached("DELETE FROM trace_docs WHERE rowid = ?1")?;
    let mut done = conn.prepare_cached("DELETE FROM trace_docs_dirty WHERE seq = ?1")?;
    for seq in dirty {
        forget.execute([seq])?;
        // A trace deleted since leaves nothing to write.
        written += write_rows(conn, seq - 1, seq)?;
        done.execute([seq])?;
    }
    Ok(written)
}

/// Writes the rows of the traces with `after < seq <= upto`: each the
/// trace's name, input, output and error and those of its spans in key
/// order, every distinct text once (a system prompt that the trace and
/// each of its model calls repeat is one text; a word matches the same
/// whether it is there once or thrice). Returns how many were written.
fn write_rows(conn: &Connection, after: i64, upto: i64) -> Result<usize> {
    let mut traces = conn.prepare_cached(
        "SELECT seq, tenant_id, name, unpack(input), unpack(output), error FROM traces \
         WHERE seq > ?1 AND seq <= ?2 ORDER BY seq",
    )?;
    let mut spans = conn.prepare_cached(
        "SELECT trace_seq, name, unpack(input), unpack(output), error FROM spans \
         WHERE trace_seq > ?1 AND trace_seq <= ?2 ORDER BY trace_seq, id",
    )?;
    let mut insert =
        conn.prepare_cached("INSERT INTO trace_docs (rowid, tenant, body) VALUES (?1, ?2, ?3)")?;
    let mut span_rows = spans.query([after, upto])?;
    let mut next_span = span_rows.next()?;
    let mut trace_rows = traces.query([after, upto])?;
    let mut written = 0;
    while let Some(t) = trace_rows.next()? {
        let seq: i64 = t.get(0)?;
        let mut body = Body::default();
        for i in 2..6 {
            body.add(t.get(i)?);
        }
        // Both are in key order: the spans of traces before this one
        // (none, unless a span outlived its trace) are passed over.
        while let Some(s) = next_span {
            let of: i64 = s.get(0)?;
            if of > seq {
                break;
            }
            if of == seq {
                for i in 1..5 {
                    body.add(s.get(i)?);
                }
            }
            next_span = span_rows.next()?;
        }
        let tenant_id: i64 = t.get(1)?;
        insert.execute(params![seq, tenant_token(tenant_id), body.text])?;
        written += 1;
    }
    Ok(written)
}

/// A trace's row as it is built: its distinct texts, joined.
#[derive(Default)]
struct Body {
    text: String,
    seen: std::collections::HashSet<String>,
}

impl Body {
    fn add(&mut self, text: Option<String>) {
        let Some(text) = text else { return };
        if self.seen.contains(&text) {
            return;
        }
        if !self.text.is_empty() {
            self.text.push_str(SEPARATOR);
        }
        self.text.push_str(&text);
        self.seen.insert(text);
    }
}

#[cfg(test)]
mod tests {
    use super::super::search_index::unindexed_rows;
    use super::*;

    fn add_trace(conn: &Connection, tenant: i64, id: &str, input: &str) -> i64 {
        conn.execute(
            "INSERT INTO traces (tenant_id, project_id, id, name, input, started_at, created_at, \
             content_hash) VALUES (?1, 1, ?2, 'chat', ?3, 0, 0, x'00')",
            rusqlite::params![tenant, id, input],
        )
        .expect("trace");
        conn.last_insert_rowid()
    }

    fn add_span(conn: &Connection, seq: i64, id: &str, output: &str) {
        conn.execute(
            "INSERT INTO spans (trace_seq, id, name, type, output, created_at) \
             VALUES (?1, ?2, 'tool call', 'tool', ?3, 0)",
            rusqlite::params![seq, id, output],
        )
        .expect("span");
    }

    /// The traces of `tenant` holding every term, newest first.
    fn search(conn: &Connection, tenant: i64, body: &str) -> Vec<i64> {
        conn.prepare("SELECT rowid FROM trace_docs WHERE trace_docs MATCH ?1 ORDER BY rowid DESC")
            .expect("prepare")
            .query_map(
                [format!(
                    "tenant : {} AND body : ({body})",
                    tenant_token(tenant)
                )],
                |r| r.get(0),
            )
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows")
    }

    #[test]
    fn a_trace_matches_words_spread_over_it_and_its_spans_in_its_own_organisation() {
        let (_dir, conn) = crate::store::test_database();
        conn.execute_batch(
            "INSERT INTO tenants (id, uuid, name, created_at) VALUES (2, 'u2', 'other', 0);",
        )
        .expect("tenant");
        let a = add_trace(&conn, 1, "a", "invoice for the customer");
        add_span(&conn, a, "s1", "answered in French");
        let b = add_trace(&conn, 1, "b", "invoice again");
        let c = add_trace(&conn, 2, "c", "invoice french");
        assert_eq!(index_docs(&conn, 100).expect("index"), 3);
        assert_eq!(unindexed_rows(&conn).expect("backlog"), 0);
        assert_eq!(search(&conn, 1, "\"invoice\" AND \"french\""), [a]);
        assert_eq!(search(&conn, 1, "\"invoice\""), [b, a]);
        assert_eq!(search(&conn, 2, "\"invoice\""), [c]);
        // The organisation's token is not a word of the text.
        assert!(search(&conn, 1, "\"t1\"").is_empty());
        // A phrase stays within one text: "customer answered" spans two.
        assert!(search(&conn, 1, "\"customer answered\"").is_empty());
        assert_eq!(search(&conn, 1, "\"in french\""), [a]);
    }

    #[test]
    fn a_text_the_trace_and_its_spans_repeat_is_indexed_once() {
        let (_dir, conn) = crate::store::test_database();
        let prompt = "You are a terse assistant. Answer in French.";
        let a = add_trace(&conn, 1, "a", prompt);
        add_span(&conn, a, "s1", prompt);
        add_span(&conn, a, "s2", "Bonjour");
        add_span(&conn, a, "s3", prompt);
        index_docs(&conn, 10).expect("index");
        conn.execute_batch(
            "CREATE VIRTUAL TABLE temp.words USING fts5vocab(main, trace_docs, 'row')",
        )
        .expect("vocab");
        let count = |word: &str| -> i64 {
            conn.query_row("SELECT cnt FROM temp.words WHERE term = ?1", [word], |r| {
                r.get(0)
            })
            .expect("count")
        };
        // Once for the prompt (input, and the outputs of s1 and s3), once
        // for the span's name shared by three spans.
        assert_eq!(count("terse"), 1);
        assert_eq!(count("tool"), 1);
        assert_eq!(count("bonjour"), 1);
        assert_eq!(search(&conn, 1, "\"terse\" AND \"bonjour\""), [a]);
        assert_eq!(search(&conn, 1, "\"answer in french\""), [a]);
        // Kept apart from the next text as before.
        assert!(search(&conn, 1, "\"french tool\"").is_empty());
    }

    #[test]
    fn a_changed_trace_is_written_again_and_a_deleted_one_leaves_the_index() {
        let (_dir, conn) = crate::store::test_database();
        let a = add_trace(&conn, 1, "a", "refund request");
        let b = add_trace(&conn, 1, "b", "refund policy");
        index_docs(&conn, 100).expect("index");
        // A span arriving later (OTLP), a changed input: both are queued
        // and written again whole.
        add_span(&conn, a, "s1", "quokka sighted");
        conn.execute("UPDATE traces SET input = 'kumquat' WHERE seq = ?1", [b])
            .expect("update");
        assert_eq!(unindexed_rows(&conn).expect("backlog"), 2);
        assert!(search(&conn, 1, "\"quokka\"").is_empty());
        assert_eq!(index_docs(&conn, 100).expect("index"), 2);
        assert_eq!(search(&conn, 1, "\"quokka\" AND \"refund\""), [a]);
        assert_eq!(search(&conn, 1, "\"kumquat\""), [b]);
        assert_eq!(search(&conn, 1, "\"refund\""), [a]);
        // Deleted (retention, erasure): its words go at once.
        conn.execute("DELETE FROM traces WHERE seq = ?1", [a])
            .expect("delete");
        assert!(search(&conn, 1, "\"quokka\"").is_empty());
        assert_eq!(index_docs(&conn, 100).expect("index"), 0);
        assert_eq!(unindexed_rows(&conn).expect("backlog"), 0);
    }

    #[test]
    fn an_upgraded_database_finds_what_it_had_indexed_and_indexes_the_rest_later() {
        let (dir, mut conn) = crate::store::test_database_at(21);
        let a = add_trace(&conn, 1, "a", "invoice sent");
        add_span(&conn, a, "s1", "in french");
        let b = add_trace(&conn, 1, "b", "invoice again");
        // `a` was indexed before the upgrade, `b` not yet.
        conn.execute("UPDATE search_state SET traces_seq = ?1", [a])
            .expect("mark");
        crate::store::migrations::migrate(&mut conn, dir.path()).expect("upgrade");
        assert_eq!(search(&conn, 1, "\"invoice\" AND \"french\""), [a]);
        assert_eq!(search(&conn, 1, "\"invoice\""), [a]);
        assert_eq!(unindexed_rows(&conn).expect("backlog"), 1);
        index_docs(&conn, 100).expect("index");
        assert_eq!(search(&conn, 1, "\"invoice\""), [b, a]);
    }

    #[test]
    fn a_batch_indexes_at_most_its_traces_and_the_next_goes_on() {
        let (_dir, conn) = crate::store::test_database();
        let seqs: Vec<i64> = (0..10)
            .map(|i| add_trace(&conn, 1, &format!("t{i}"), "refund"))
            .collect();
        assert_eq!(index_docs(&conn, 4).expect("index"), 4);
        assert_eq!(search(&conn, 1, "\"refund\"").len(), 4);
        assert_eq!(unindexed_rows(&conn).expect("backlog"), 6);
        index_docs(&conn, 100).expect("index");
        let mut all = search(&conn, 1, "\"refund\"");
        all.reverse();
        assert_eq!(all, seqs);
    }
}
