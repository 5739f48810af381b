-- Per-minute metrics rollups, maintained in the ingest transaction. The
-- latency sketch is little-endian (bucket i32, count i64) pairs.
CREATE TABLE metrics_minute (
    tenant_id   INTEGER NOT NULL,
    minute      INTEGER NOT NULL,
    project_id  INTEGER NOT NULL,
    model       TEXT    NOT NULL,
    traces      INTEGER NOT NULL,
    errors      INTEGER NOT NULL,
    cost        REAL    NOT NULL,
    tokens      INTEGER NOT NULL,
    latency     BLOB    NOT NULL,
    PRIMARY KEY (tenant_id, minute, project_id, model)
) WITHOUT ROWID;

-- Feedback of a tenant, for the metrics' good-feedback rate.
CREATE INDEX feedback_by_tenant ON feedback(tenant_id, trace_seq);
