-- Traces ingested per organisation and calendar month (UTC, `YYYY-MM`),
-- counted in the ingest transaction, for monthly plan quotas.
CREATE TABLE usage (
    tenant_id  INTEGER NOT NULL,
    month      TEXT    NOT NULL,
    traces     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, month)
) WITHOUT ROWID;
