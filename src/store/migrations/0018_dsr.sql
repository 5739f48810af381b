-- Data subject requests: erasure (`delete`) or export of everything stored
-- of one subject, matched against the traces' external id, session id and
-- one metadata key. A row is the durable work item: the privacy worker
-- moves it from `pending` through `processing` to `completed` or `failed`.
-- `cursor_seq` is how far through `traces.seq` an erasure has looked; each
-- batch advances it in the transaction that deletes, so a restart resumes
-- where the last commit left off. `counts` is a JSON object of what was
-- erased (or exported) so far.
CREATE TABLE dsr_requests (
    id              INTEGER PRIMARY KEY,
    uuid            TEXT    NOT NULL UNIQUE,
    tenant_id       INTEGER NOT NULL REFERENCES tenants(id),
    requested_by    TEXT    NOT NULL,
    subject_id      TEXT    NOT NULL,
    type            TEXT    NOT NULL CHECK (type IN ('delete', 'export')),
    status          TEXT    NOT NULL
        CHECK (status IN ('pending', 'processing', 'completed', 'failed')),
    cursor_seq      INTEGER NOT NULL DEFAULT 0,
    counts          TEXT    NOT NULL DEFAULT '{}',
    -- The export's file name inside the data directory's `dsr-exports`,
    -- its size, and when it is deleted.
    export_file     TEXT,
    export_bytes    INTEGER,
    export_expires_at INTEGER,
    error_msg       TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    completed_at    INTEGER
);
CREATE INDEX dsr_requests_by_tenant ON dsr_requests(tenant_id, id);
CREATE INDEX dsr_requests_open ON dsr_requests(id) WHERE status IN ('pending', 'processing');
CREATE INDEX dsr_requests_exports ON dsr_requests(export_expires_at) WHERE export_file IS NOT NULL;

-- Copies of a trace's text kept outside it: found by the trace's id when
-- the trace is erased.
CREATE INDEX dataset_items_by_trace ON dataset_items(tenant_id, trace_id);
CREATE INDEX run_items_by_trace ON run_items(trace_id);
