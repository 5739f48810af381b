-- Feedback on traces: several per trace, each with a label and optional
-- score, comment and metadata.
CREATE TABLE feedback (
    id          INTEGER PRIMARY KEY,
    uuid        TEXT    NOT NULL UNIQUE,
    tenant_id   INTEGER NOT NULL,
    trace_seq   INTEGER NOT NULL REFERENCES traces(seq) ON DELETE CASCADE,
    label       TEXT    NOT NULL CHECK (label IN ('good', 'bad', 'neutral')),
    score       REAL,
    comment     TEXT,
    metadata    TEXT    NOT NULL DEFAULT '{}',
    created_at  INTEGER NOT NULL
);
CREATE INDEX feedback_by_trace ON feedback(trace_seq, label);
