-- Ingestion health per organisation, project and hour: ingest requests
-- accepted, the traces and spans they brought, a sketch of ingest lag (how
-- long after a trace ended it was stored, in ms) and when spans last
-- arrived; and the ingest requests refused, by error code. Counted in
-- memory as requests finish and written every few seconds; a read adds
-- what is not yet written.
CREATE TABLE ingest_health_hour (
    tenant_id     INTEGER NOT NULL,
    project_id    INTEGER NOT NULL,
    hour          INTEGER NOT NULL,
    accepted      INTEGER NOT NULL,
    traces        INTEGER NOT NULL,
    spans         INTEGER NOT NULL,
    lag           BLOB    NOT NULL,
    last_span_at  INTEGER,
    PRIMARY KEY (tenant_id, project_id, hour)
) WITHOUT ROWID;

CREATE TABLE ingest_refusals_hour (
    tenant_id     INTEGER NOT NULL,
    project_id    INTEGER NOT NULL,
    hour          INTEGER NOT NULL,
    code          TEXT    NOT NULL,
    count         INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, project_id, hour, code)
) WITHOUT ROWID;

-- Evaluations that gave up (the dead letters of the evaluation queue), by
-- when they were queued.
CREATE INDEX evaluations_failed ON evaluations(tenant_id, created_at) WHERE status = 'failed';
