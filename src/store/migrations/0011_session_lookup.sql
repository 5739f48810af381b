-- The session index moves out of `traces`, as the tag index did in 10 (see
-- `store::session_lookup`). Sessions are random ids: kept as an index of
-- `traces`, every trace added its entry at a random place, and each group
-- commit rewrote hundreds of its pages, a fifth of all WAL frames.
--
-- A trace's session entry is in exactly one of two tables: `session_pending`
-- (in seq order, appended to at ingest) until a merge moves it, in sorted
-- batches, into `session_lookup`.
CREATE TABLE session_lookup (
    tenant_id   INTEGER NOT NULL,
    session_id  TEXT    NOT NULL,
    started_at  INTEGER NOT NULL,
    trace_seq   INTEGER NOT NULL,
    project_id  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, session_id, started_at, trace_seq)
) WITHOUT ROWID;
INSERT INTO session_lookup (tenant_id, session_id, started_at, trace_seq, project_id)
SELECT tenant_id, session_id, started_at, seq, project_id FROM traces
WHERE session_id IS NOT NULL
ORDER BY tenant_id, session_id, started_at, seq;
DROP INDEX traces_session;

CREATE TABLE session_pending (
    trace_seq   INTEGER PRIMARY KEY,
    tenant_id   INTEGER NOT NULL,
    project_id  INTEGER NOT NULL,
    session_id  TEXT    NOT NULL,
    started_at  INTEGER NOT NULL
);

-- Ingest queues a new trace's entry itself (a trigger on insert would make
-- every trace insert keep a statement journal). A trace whose session or
-- start changes goes back to the queue with its new entry; a deleted trace
-- leaves both tables.
CREATE TRIGGER session_lookup_update AFTER UPDATE OF session_id, started_at ON traces
WHEN old.session_id IS NOT new.session_id OR old.started_at IS NOT new.started_at
BEGIN
    DELETE FROM session_lookup WHERE tenant_id = old.tenant_id
        AND session_id = old.session_id AND started_at = old.started_at
        AND trace_seq = old.seq;
    DELETE FROM session_pending WHERE trace_seq = old.seq;
    INSERT INTO session_pending (trace_seq, tenant_id, project_id, session_id, started_at)
    SELECT new.seq, new.tenant_id, new.project_id, new.session_id, new.started_at
    WHERE new.session_id IS NOT NULL;
END;
CREATE TRIGGER session_lookup_delete AFTER DELETE ON traces
WHEN old.session_id IS NOT NULL
BEGIN
    DELETE FROM session_lookup WHERE tenant_id = old.tenant_id
        AND session_id = old.session_id AND started_at = old.started_at
        AND trace_seq = old.seq;
    DELETE FROM session_pending WHERE trace_seq = old.seq;
END;
