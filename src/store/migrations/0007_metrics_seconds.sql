-- Per-second rollups beside the per-minute ones: a metrics window whose
-- edges fall inside a minute reads whole seconds from here and scans only
-- the traces of the partial seconds at its very ends.
CREATE TABLE metrics_second (
    tenant_id   INTEGER NOT NULL,
    second      INTEGER NOT NULL,
    project_id  INTEGER NOT NULL,
    model       TEXT    NOT NULL,
    traces      INTEGER NOT NULL,
    errors      INTEGER NOT NULL,
    cost        REAL    NOT NULL,
    tokens      INTEGER NOT NULL,
    latency     BLOB    NOT NULL,
    PRIMARY KEY (tenant_id, second, project_id, model)
) WITHOUT ROWID;
