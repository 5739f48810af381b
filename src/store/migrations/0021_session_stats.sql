-- Each session's totals, kept as its traces change, so the session list is
-- a range of an index rather than a walk over the tenant's traces (a tenant
-- with no sessions walked them all) and a huge session's totals are one row
-- rather than a sum over all its traces (see `store::sessions`).
--
-- A row holds the traces of one session and one project whose entries are
-- in `session_lookup`: a session spanning projects has a row per project.
-- Entries still in `session_pending` are added by the query that reads the
-- row, and to the row by the merge that moves them into the index, in the
-- same transaction (see `store::session_lookup`). So ingest writes nothing
-- here: the rows change in sorted batches, as the index does.
--
-- `costed` counts the traces with a cost (none: the total is null);
-- `last_at` is the latest of their ends (their start when they have none);
-- `latest_started` and `latest_seq` are the latest trace's place in the
-- trace order, where the session list shows the session.
CREATE TABLE session_stats (
    tenant_id       INTEGER NOT NULL,
    session_id      TEXT    NOT NULL,
    project_id      INTEGER NOT NULL,
    traces          INTEGER NOT NULL,
    tokens          INTEGER NOT NULL,
    costed          INTEGER NOT NULL,
    cost            REAL    NOT NULL,
    errors          INTEGER NOT NULL,
    first_at        INTEGER NOT NULL,
    last_at         INTEGER NOT NULL,
    latest_started  INTEGER NOT NULL,
    latest_seq      INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, session_id, project_id)
) WITHOUT ROWID;

-- The traces are read in their stored order (through the index, in a
-- session's order, a large database would be read a page at random for
-- each trace): those with a session whose entry is not queued are the
-- traces in the index.
INSERT INTO session_stats (tenant_id, session_id, project_id, traces, tokens, costed, cost,
    errors, first_at, last_at, latest_started, latest_seq)
SELECT tenant_id, session_id, project_id, count(*), sum(total_token_count), count(cost),
    coalesce(sum(cost), 0.0), sum(error IS NOT NULL), min(started_at),
    max(coalesce(ended_at, started_at)), max(started_at), 0
FROM traces
WHERE session_id IS NOT NULL AND seq NOT IN (SELECT trace_seq FROM session_pending)
GROUP BY tenant_id, session_id, project_id;
UPDATE session_stats SET latest_seq = (SELECT max(g.trace_seq) FROM session_lookup g
    WHERE g.tenant_id = session_stats.tenant_id AND g.session_id = session_stats.session_id
    AND g.started_at = session_stats.latest_started AND g.project_id = session_stats.project_id);

CREATE INDEX session_stats_latest ON session_stats(tenant_id, latest_started, latest_seq);
CREATE INDEX session_stats_project_latest
    ON session_stats(tenant_id, project_id, latest_started, latest_seq);

-- A merged trace that changes keeps its row exact at once. The common
-- changes (more spans of an OTLP trace: its tokens, cost, error, end and
-- start) leave the trace in its session and project: its entry follows its
-- start where it is, its row takes the difference, and an extreme it held
-- and lost (its session's first start, latest trace or last end) is looked
-- up again. A trace that changes session or project leaves its row and the
-- index, and waits in the queue under its new session like a new trace. A
-- deleted trace leaves its row and both tables.
--
-- Finding the first start or the latest trace again is one step in the
-- index; finding the last end reads the session's traces, which only a
-- trace losing the last end needs (a shorter trace, a move, a delete).
DROP TRIGGER session_lookup_update;
CREATE TRIGGER session_lookup_update
AFTER UPDATE OF session_id, project_id, started_at, ended_at, total_token_count, cost, error
ON traces
WHEN (old.session_id IS NOT NULL OR new.session_id IS NOT NULL)
    AND (old.session_id IS NOT new.session_id OR old.project_id IS NOT new.project_id
        OR old.started_at IS NOT new.started_at OR old.ended_at IS NOT new.ended_at
        OR old.total_token_count IS NOT new.total_token_count OR old.cost IS NOT new.cost
        OR (old.error IS NULL) IS NOT (new.error IS NULL))
BEGIN
    -- Same session and project.
    UPDATE session_lookup SET started_at = new.started_at
    WHERE old.session_id = new.session_id AND old.project_id = new.project_id
        AND old.started_at <> new.started_at
        AND tenant_id = old.tenant_id AND session_id = old.session_id
        AND started_at = old.started_at AND trace_seq = old.seq;
    UPDATE session_pending SET started_at = new.started_at
    WHERE old.session_id = new.session_id AND old.project_id = new.project_id
        AND old.started_at <> new.started_at AND trace_seq = old.seq;
    UPDATE session_stats SET
        tokens = tokens + new.total_token_count - old.total_token_count,
        costed = costed + (new.cost IS NOT NULL) - (old.cost IS NOT NULL),
        cost = CASE WHEN costed + (new.cost IS NOT NULL) - (old.cost IS NOT NULL) = 0 THEN 0.0
            ELSE cost + coalesce(new.cost, 0.0) - coalesce(old.cost, 0.0) END,
        errors = errors + (new.error IS NOT NULL) - (old.error IS NOT NULL),
        first_at = min(first_at, new.started_at),
        last_at = max(last_at, coalesce(new.ended_at, new.started_at)),
        latest_started = CASE WHEN (new.started_at, new.seq) > (latest_started, latest_seq)
            THEN new.started_at ELSE latest_started END,
        latest_seq = CASE WHEN (new.started_at, new.seq) > (latest_started, latest_seq)
            THEN new.seq ELSE latest_seq END
    WHERE old.session_id = new.session_id AND old.project_id = new.project_id
        AND tenant_id = new.tenant_id AND session_id = new.session_id
        AND project_id = new.project_id
        AND EXISTS (SELECT 1 FROM session_lookup WHERE tenant_id = new.tenant_id
            AND session_id = new.session_id AND started_at = new.started_at
            AND trace_seq = new.seq);

    -- Another session or project.
    UPDATE session_stats SET
        traces = traces - 1,
        tokens = tokens - old.total_token_count,
        costed = costed - (old.cost IS NOT NULL),
        cost = CASE WHEN costed - (old.cost IS NOT NULL) = 0 THEN 0.0
            ELSE cost - coalesce(old.cost, 0.0) END,
        errors = errors - (old.error IS NOT NULL)
    WHERE (old.session_id IS NOT new.session_id OR old.project_id <> new.project_id)
        AND tenant_id = old.tenant_id AND session_id = old.session_id
        AND project_id = old.project_id
        AND EXISTS (SELECT 1 FROM session_lookup WHERE tenant_id = old.tenant_id
            AND session_id = old.session_id AND started_at = old.started_at
            AND trace_seq = old.seq);
    DELETE FROM session_lookup
    WHERE (old.session_id IS NOT new.session_id OR old.project_id <> new.project_id)
        AND tenant_id = old.tenant_id AND session_id = old.session_id
        AND started_at = old.started_at AND trace_seq = old.seq;
    DELETE FROM session_pending
    WHERE (old.session_id IS NOT new.session_id OR old.project_id <> new.project_id)
        AND trace_seq = old.seq;
    INSERT INTO session_pending (trace_seq, tenant_id, project_id, session_id, started_at)
    SELECT new.seq, new.tenant_id, new.project_id, new.session_id, new.started_at
    WHERE (old.session_id IS NOT new.session_id OR old.project_id <> new.project_id)
        AND new.session_id IS NOT NULL;
    DELETE FROM session_stats WHERE tenant_id = old.tenant_id AND session_id = old.session_id
        AND project_id = old.project_id AND traces = 0;

    -- Extremes the trace held and no longer does.
    UPDATE session_stats SET first_at = (SELECT g.started_at FROM session_lookup g
            WHERE g.tenant_id = old.tenant_id AND g.session_id = old.session_id
            AND g.project_id = old.project_id ORDER BY g.started_at LIMIT 1)
    WHERE tenant_id = old.tenant_id AND session_id = old.session_id
        AND project_id = old.project_id AND first_at = old.started_at
        AND (old.session_id IS NOT new.session_id OR old.project_id <> new.project_id
            OR new.started_at > old.started_at);
    UPDATE session_stats SET (latest_started, latest_seq) = (SELECT g.started_at, g.trace_seq
            FROM session_lookup g
            WHERE g.tenant_id = old.tenant_id AND g.session_id = old.session_id
            AND g.project_id = old.project_id
            ORDER BY g.started_at DESC, g.trace_seq DESC LIMIT 1)
    WHERE tenant_id = old.tenant_id AND session_id = old.session_id
        AND project_id = old.project_id
        AND latest_started = old.started_at AND latest_seq = old.seq
        AND (old.session_id IS NOT new.session_id OR old.project_id <> new.project_id
            OR new.started_at < old.started_at);
    UPDATE session_stats SET last_at = (SELECT max(coalesce(t.ended_at, t.started_at))
            FROM session_lookup g CROSS JOIN traces t ON t.seq = g.trace_seq
            WHERE g.tenant_id = old.tenant_id AND g.session_id = old.session_id
            AND g.project_id = old.project_id)
    WHERE tenant_id = old.tenant_id AND session_id = old.session_id
        AND project_id = old.project_id
        AND last_at = coalesce(old.ended_at, old.started_at)
        AND (old.session_id IS NOT new.session_id OR old.project_id <> new.project_id
            OR coalesce(new.ended_at, new.started_at) < coalesce(old.ended_at, old.started_at));
END;

DROP TRIGGER session_lookup_delete;
CREATE TRIGGER session_lookup_delete AFTER DELETE ON traces
WHEN old.session_id IS NOT NULL
BEGIN
    UPDATE session_stats SET
        traces = traces - 1,
        tokens = tokens - old.total_token_count,
        costed = costed - (old.cost IS NOT NULL),
        cost = CASE WHEN costed - (old.cost IS NOT NULL) = 0 THEN 0.0
            ELSE cost - coalesce(old.cost, 0.0) END,
        errors = errors - (old.error IS NOT NULL)
    WHERE tenant_id = old.tenant_id AND session_id = old.session_id
        AND project_id = old.project_id
        AND EXISTS (SELECT 1 FROM session_lookup WHERE tenant_id = old.tenant_id
            AND session_id = old.session_id AND started_at = old.started_at
            AND trace_seq = old.seq);
    DELETE FROM session_lookup WHERE tenant_id = old.tenant_id
        AND session_id = old.session_id AND started_at = old.started_at
        AND trace_seq = old.seq;
    DELETE FROM session_pending WHERE trace_seq = old.seq;
    DELETE FROM session_stats WHERE tenant_id = old.tenant_id AND session_id = old.session_id
        AND project_id = old.project_id AND traces = 0;
    UPDATE session_stats SET first_at = (SELECT g.started_at FROM session_lookup g
            WHERE g.tenant_id = old.tenant_id AND g.session_id = old.session_id
            AND g.project_id = old.project_id ORDER BY g.started_at LIMIT 1)
    WHERE tenant_id = old.tenant_id AND session_id = old.session_id
        AND project_id = old.project_id AND first_at = old.started_at;
    UPDATE session_stats SET (latest_started, latest_seq) = (SELECT g.started_at, g.trace_seq
            FROM session_lookup g
            WHERE g.tenant_id = old.tenant_id AND g.session_id = old.session_id
            AND g.project_id = old.project_id
            ORDER BY g.started_at DESC, g.trace_seq DESC LIMIT 1)
    WHERE tenant_id = old.tenant_id AND session_id = old.session_id
        AND project_id = old.project_id
        AND latest_started = old.started_at AND latest_seq = old.seq;
    UPDATE session_stats SET last_at = (SELECT max(coalesce(t.ended_at, t.started_at))
            FROM session_lookup g CROSS JOIN traces t ON t.seq = g.trace_seq
            WHERE g.tenant_id = old.tenant_id AND g.session_id = old.session_id
            AND g.project_id = old.project_id)
    WHERE tenant_id = old.tenant_id AND session_id = old.session_id
        AND project_id = old.project_id
        AND last_at = coalesce(old.ended_at, old.started_at);
END;
