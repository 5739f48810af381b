-- Failures. Each trace's failure class (what the trace list's
-- `failure_type` filter matches) and the fingerprint of its error
-- message's shape (its failure cluster; see `failures`). Only failing
-- traces have them, so the partial indexes below hold only those.
ALTER TABLE traces ADD COLUMN failure_type TEXT;
ALTER TABLE traces ADD COLUMN error_fingerprint INTEGER;

-- The trace list filtered by class, newest first.
CREATE INDEX traces_failure_type ON traces(tenant_id, failure_type, started_at, seq)
    WHERE failure_type IS NOT NULL;
-- A cluster's first, last and latest traces in a window.
CREATE INDEX traces_failure_cluster ON traces(tenant_id, error_fingerprint, started_at, project_id)
    WHERE error_fingerprint IS NOT NULL;
-- The failing traces of a part of an hour, at the edges of a window.
CREATE INDEX traces_failing ON traces(tenant_id, started_at, project_id, error_fingerprint)
    WHERE error_fingerprint IS NOT NULL;

-- Kept as traces arrive and leave, in the transaction that stores or
-- deletes them: each cluster's shape and number of traces (the row goes
-- when the last one does) ...
CREATE TABLE failure_clusters (
    tenant_id    INTEGER NOT NULL,
    fingerprint  INTEGER NOT NULL,
    message      TEXT    NOT NULL,
    traces       INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, fingerprint)
) WITHOUT ROWID;

-- ... and its traces per hour (of `started_at`) and project, so that a
-- window's ranking sums hours instead of reading traces.
CREATE TABLE failure_hours (
    tenant_id    INTEGER NOT NULL,
    hour         INTEGER NOT NULL,
    project_id   INTEGER NOT NULL,
    fingerprint  INTEGER NOT NULL,
    traces       INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, hour, project_id, fingerprint)
) WITHOUT ROWID;
