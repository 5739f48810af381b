-- Tenancy: organisations, their projects, users and API keys.
CREATE TABLE tenants (
    id          INTEGER PRIMARY KEY,
    uuid        TEXT    NOT NULL UNIQUE,
    name        TEXT    NOT NULL,
    plan        TEXT    NOT NULL DEFAULT 'enterprise',
    created_at  INTEGER NOT NULL
);

CREATE TABLE projects (
    id              INTEGER PRIMARY KEY,
    uuid            TEXT    NOT NULL UNIQUE,
    tenant_id       INTEGER NOT NULL REFERENCES tenants(id),
    name            TEXT    NOT NULL,
    slug            TEXT    NOT NULL,
    retention_days  INTEGER,
    archived_at     INTEGER,
    created_at      INTEGER NOT NULL,
    UNIQUE (tenant_id, name),
    UNIQUE (tenant_id, slug)
);

CREATE TABLE users (
    id             INTEGER PRIMARY KEY,
    uuid           TEXT    NOT NULL UNIQUE,
    tenant_id      INTEGER NOT NULL REFERENCES tenants(id),
    email          TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    password_hash  TEXT    NOT NULL,
    role           TEXT    NOT NULL CHECK (role IN ('owner', 'member', 'viewer')),
    created_at     INTEGER NOT NULL
);

-- Keys are stored as a SHA-256 digest; `prefix` (the first characters of
-- the key, shown in listings) finds the candidate row.
CREATE TABLE api_keys (
    id            INTEGER PRIMARY KEY,
    uuid          TEXT    NOT NULL UNIQUE,
    tenant_id     INTEGER NOT NULL REFERENCES tenants(id),
    project_id    INTEGER NOT NULL REFERENCES projects(id),
    name          TEXT    NOT NULL,
    prefix        TEXT    NOT NULL,
    key_hash      BLOB    NOT NULL,
    scopes        TEXT    NOT NULL DEFAULT '[]',
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER,
    revoked_at    INTEGER
);
CREATE INDEX api_keys_prefix ON api_keys(prefix);

-- Traces. Times are microseconds since the Unix epoch (UTC). `seq` orders
-- ingestion and breaks ties in the keyset cursor; `id` is the client's UUID,
-- unique within a tenant only, so one tenant cannot probe another's ids.
CREATE TABLE traces (
    seq                INTEGER PRIMARY KEY,
    tenant_id          INTEGER NOT NULL,
    project_id         INTEGER NOT NULL,
    id                 TEXT    NOT NULL,
    session_id         TEXT,
    external_id        TEXT,
    name               TEXT,
    input              TEXT,
    output             TEXT,
    model              TEXT,
    latency_ms         INTEGER,
    cost               REAL,
    error              TEXT,
    tags               TEXT,
    tag_map            TEXT,
    metadata           TEXT    NOT NULL DEFAULT '{}',
    total_token_count  INTEGER NOT NULL DEFAULT 0,
    span_count         INTEGER NOT NULL DEFAULT 0,
    started_at         INTEGER NOT NULL,
    ended_at           INTEGER,
    created_at         INTEGER NOT NULL,
    content_hash       BLOB    NOT NULL,
    UNIQUE (tenant_id, id)
);
CREATE INDEX traces_tenant_time  ON traces(tenant_id, started_at, seq);
CREATE INDEX traces_project_time ON traces(tenant_id, project_id, started_at, seq);
CREATE INDEX traces_session      ON traces(tenant_id, session_id, started_at) WHERE session_id IS NOT NULL;
CREATE INDEX traces_model        ON traces(tenant_id, model, started_at) WHERE model IS NOT NULL;

CREATE TABLE trace_tags (
    trace_seq   INTEGER NOT NULL REFERENCES traces(seq) ON DELETE CASCADE,
    tenant_id   INTEGER NOT NULL,
    key         TEXT    NOT NULL,
    value       TEXT    NOT NULL,
    started_at  INTEGER NOT NULL,
    PRIMARY KEY (trace_seq, key)
) WITHOUT ROWID;
CREATE INDEX trace_tags_lookup ON trace_tags(tenant_id, key, value, started_at, trace_seq);

CREATE TABLE spans (
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
CREATE UNIQUE INDEX spans_by_trace ON spans(trace_seq, id);

CREATE TABLE events (
    trace_seq   INTEGER NOT NULL REFERENCES traces(seq) ON DELETE CASCADE,
    id          TEXT    NOT NULL,
    span_id     TEXT,
    level       TEXT    NOT NULL,
    message     TEXT    NOT NULL,
    metadata    TEXT    NOT NULL DEFAULT '{}',
    timestamp   INTEGER NOT NULL
);
CREATE INDEX events_by_trace ON events(trace_seq);
