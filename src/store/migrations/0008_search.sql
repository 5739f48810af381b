-- Full-text search over trace and span names, inputs, outputs and errors.
--
-- The indexes keep no copy of the text: they point at the rows of `traces`
-- (by seq) and `spans` (by rid). Spans get an explicit integer key first, since
-- VACUUM may renumber the implicit rowid the index would otherwise point at.
CREATE TABLE spans_keyed (
    rid                INTEGER PRIMARY KEY,
    trace_seq          INTEGER NOT NULL REFERENCES traces(seq) ON DELETE CASCADE,
    id                 TEXT    NOT NULL,
    parent_span_id     TEXT,
    name               TEXT    NOT NULL,
    type               TEXT    NOT NULL,
    input              TEXT,
    output             TEXT,
    model              TEXT,
    latency_ms         INTEGER,
    cost               REAL,
    error              TEXT,
    prompt_tokens      INTEGER,
    completion_tokens  INTEGER,
    metadata           TEXT    NOT NULL DEFAULT '{}',
    start_time         INTEGER,
    end_time           INTEGER,
    otel_trace_id      TEXT,
    otel_span_id       TEXT,
    created_at         INTEGER NOT NULL
);
INSERT INTO spans_keyed (rid, trace_seq, id, parent_span_id, name, type, input, output, model,
    latency_ms, cost, error, prompt_tokens, completion_tokens, metadata, start_time, end_time,
    otel_trace_id, otel_span_id, created_at)
SELECT rowid, trace_seq, id, parent_span_id, name, type, input, output, model,
    latency_ms, cost, error, prompt_tokens, completion_tokens, metadata, start_time, end_time,
    otel_trace_id, otel_span_id, created_at
FROM spans;
DROP TABLE spans;
ALTER TABLE spans_keyed RENAME TO spans;
CREATE UNIQUE INDEX spans_by_trace ON spans(trace_seq, id);

CREATE VIRTUAL TABLE traces_fts USING fts5(
    name, input, output, error,
    content = 'traces', content_rowid = 'seq',
    tokenize = 'unicode61 remove_diacritics 2'
);
CREATE VIRTUAL TABLE spans_fts USING fts5(
    name, input, output, error,
    content = 'spans', content_rowid = 'rid',
    tokenize = 'unicode61 remove_diacritics 2'
);

-- Indexing is deferred: ingest stores rows only, and the indexer (see
-- `store::search`) adds rows past these marks to the index in batches, off
-- the path of ingest requests. Changes and deletes of rows already indexed
-- are applied to the index at once by the triggers; rows not yet indexed
-- are picked up as they are by then.
CREATE TABLE search_state (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    traces_seq  INTEGER NOT NULL,
    spans_rid   INTEGER NOT NULL
);
INSERT INTO search_state (id, traces_seq, spans_rid) VALUES (
    1,
    coalesce((SELECT max(seq) FROM traces), 0),
    coalesce((SELECT max(rid) FROM spans), 0)
);

CREATE TRIGGER traces_fts_delete AFTER DELETE ON traces
WHEN old.seq <= (SELECT traces_seq FROM search_state)
BEGIN
    INSERT INTO traces_fts (traces_fts, rowid, name, input, output, error)
    VALUES ('delete', old.seq, old.name, old.input, old.output, old.error);
END;
-- OTLP merges rewrite a trace's aggregates often; only a change of its
-- text touches the index.
CREATE TRIGGER traces_fts_update AFTER UPDATE OF name, input, output, error ON traces
WHEN old.seq <= (SELECT traces_seq FROM search_state)
  AND (old.name IS NOT new.name OR old.input IS NOT new.input
       OR old.output IS NOT new.output OR old.error IS NOT new.error)
BEGIN
    INSERT INTO traces_fts (traces_fts, rowid, name, input, output, error)
    VALUES ('delete', old.seq, old.name, old.input, old.output, old.error);
    INSERT INTO traces_fts (rowid, name, input, output, error)
    VALUES (new.seq, new.name, new.input, new.output, new.error);
END;

CREATE TRIGGER spans_fts_delete AFTER DELETE ON spans
WHEN old.rid <= (SELECT spans_rid FROM search_state)
BEGIN
    INSERT INTO spans_fts (spans_fts, rowid, name, input, output, error)
    VALUES ('delete', old.rid, old.name, old.input, old.output, old.error);
END;
CREATE TRIGGER spans_fts_update AFTER UPDATE OF name, input, output, error ON spans
WHEN old.rid <= (SELECT spans_rid FROM search_state)
  AND (old.name IS NOT new.name OR old.input IS NOT new.input
       OR old.output IS NOT new.output OR old.error IS NOT new.error)
BEGIN
    INSERT INTO spans_fts (spans_fts, rowid, name, input, output, error)
    VALUES ('delete', old.rid, old.name, old.input, old.output, old.error);
    INSERT INTO spans_fts (rowid, name, input, output, error)
    VALUES (new.rid, new.name, new.input, new.output, new.error);
END;

INSERT INTO traces_fts (traces_fts) VALUES ('rebuild');
INSERT INTO spans_fts (spans_fts) VALUES ('rebuild');

-- Deleting a row takes its words out of the index there and then, instead
-- of leaving markers until segments merge: retention and the size cap must
-- free space as they delete.
INSERT INTO traces_fts (traces_fts, rank) VALUES ('secure-delete', 1);
INSERT INTO spans_fts (spans_fts, rank) VALUES ('secure-delete', 1);
