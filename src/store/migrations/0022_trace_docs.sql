-- The full-text index of traces as one row per trace: its organisation in
-- one column, and in the other the name, input, output and error of the
-- trace and of each of its spans. A trace matches `q` when it or one of its
-- spans holds each word, so with every word of a trace in one row the index
-- intersects the words itself, and a word repeated over a trace's texts is
-- one entry rather than one per text (see BENCHMARKS.md, Findings, "What a
-- full-text entry costs": half the work and 43 % of the space of a row per
-- trace and per span).
--
-- Contentless: the text stays in `traces` and `spans` only. Texts are
-- joined with a private-use character between them, which the tokenizer
-- keeps as a token of its own, so that a phrase never runs from one text
-- into the next.
--
-- It replaces `traces_fts` and `spans_fts`: span search checks the spans
-- of the traces this index returns, one by one (see `store::span_search`).
CREATE VIRTUAL TABLE trace_docs USING fts5(
    tenant, body,
    content = '', contentless_delete = 1,
    tokenize = 'unicode61 remove_diacritics 2'
);
INSERT INTO trace_docs (trace_docs, rank) VALUES ('secure-delete', 1);

-- Indexing is deferred as before: traces past `seq` wait for the indexer,
-- and a trace at or below it whose text or spans change waits in
-- `trace_docs_dirty` to have its row written again.
CREATE TABLE trace_docs_state (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL
);
-- The traces indexed before the upgrade get their rows now, so that search
-- finds them as before (91 s for a million traces with the copy taken
-- before an upgrade, on the machine of BENCHMARKS.md); the rest wait
-- for the indexer as they did. The pages of the indexes dropped below
-- (1.2 GB for a million traces) stay in the file, free, and new rows
-- reuse them.
INSERT INTO trace_docs_state (id, seq) VALUES (1, (SELECT traces_seq FROM search_state));
INSERT INTO trace_docs (rowid, tenant, body)
SELECT t.seq, 't' || t.tenant_id,
    concat_ws(' ' || char(57344) || ' ', t.name, t.input, t.output, t.error,
        (SELECT group_concat(concat_ws(' ' || char(57344) || ' ', s.name, s.input, s.output,
            s.error), ' ' || char(57344) || ' ') FROM spans s WHERE s.trace_seq = t.seq))
FROM traces t WHERE t.seq <= (SELECT seq FROM trace_docs_state);
CREATE TABLE trace_docs_dirty (seq INTEGER PRIMARY KEY) WITHOUT ROWID;

CREATE TRIGGER trace_docs_trace_update AFTER UPDATE OF name, input, output, error ON traces
WHEN old.seq <= (SELECT seq FROM trace_docs_state)
  AND (old.name IS NOT new.name OR old.input IS NOT new.input
       OR old.output IS NOT new.output OR old.error IS NOT new.error)
BEGIN
    INSERT OR IGNORE INTO trace_docs_dirty (seq) VALUES (old.seq);
END;
CREATE TRIGGER trace_docs_trace_delete AFTER DELETE ON traces
WHEN old.seq <= (SELECT seq FROM trace_docs_state)
BEGIN
    DELETE FROM trace_docs WHERE rowid = old.seq;
    DELETE FROM trace_docs_dirty WHERE seq = old.seq;
END;
CREATE TRIGGER trace_docs_span_insert AFTER INSERT ON spans
WHEN new.trace_seq <= (SELECT seq FROM trace_docs_state)
BEGIN
    INSERT OR IGNORE INTO trace_docs_dirty (seq) VALUES (new.trace_seq);
END;
CREATE TRIGGER trace_docs_span_update AFTER UPDATE OF name, input, output, error ON spans
WHEN old.trace_seq <= (SELECT seq FROM trace_docs_state)
  AND (old.name IS NOT new.name OR old.input IS NOT new.input
       OR old.output IS NOT new.output OR old.error IS NOT new.error)
BEGIN
    INSERT OR IGNORE INTO trace_docs_dirty (seq) VALUES (old.trace_seq);
END;
-- A span deleted with its trace leaves an entry the indexer drops, as it
-- finds no trace.
CREATE TRIGGER trace_docs_span_delete AFTER DELETE ON spans
WHEN old.trace_seq <= (SELECT seq FROM trace_docs_state)
BEGIN
    INSERT OR IGNORE INTO trace_docs_dirty (seq) VALUES (old.trace_seq);
END;

DROP TRIGGER traces_fts_delete;
DROP TRIGGER traces_fts_update;
DROP TABLE traces_fts;
DROP TRIGGER spans_fts_delete;
DROP TRIGGER spans_fts_update;
DROP TABLE spans_fts;
DROP TABLE search_state;
