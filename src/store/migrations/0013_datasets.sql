-- Datasets of hard cases, the versions (configurations) they are run
-- against, and the runs. An item keeps what a run needs (the input, the
-- output it is judged against, its label) so it stays meaningful after
-- retention purges its trace; `trace_id` is kept as text, not a key.
CREATE TABLE datasets (
    id              INTEGER PRIMARY KEY,
    uuid            TEXT    NOT NULL UNIQUE,
    tenant_id       INTEGER NOT NULL REFERENCES tenants(id),
    project_id      INTEGER NOT NULL REFERENCES projects(id),
    name            TEXT    NOT NULL,
    description     TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE dataset_items (
    id              INTEGER PRIMARY KEY,
    uuid            TEXT    NOT NULL UNIQUE,
    dataset_id      INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
    tenant_id       INTEGER NOT NULL,
    trace_id        TEXT    NOT NULL,
    span_id         TEXT,
    feedback_id     TEXT,
    -- NULL: not labelled yet.
    label           TEXT    CHECK (label IN ('pass', 'fail')),
    input           TEXT,
    -- The output the trace (or span) gave: what a run without a model
    -- judges, and the reference a fresh answer is compared with.
    expected_output TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
-- The same trace (and span) once per dataset: adding it again is a no-op.
CREATE UNIQUE INDEX dataset_items_once ON dataset_items(dataset_id, trace_id, coalesce(span_id, ''));
CREATE INDEX dataset_items_by_dataset ON dataset_items(dataset_id, id);
CREATE INDEX dataset_items_by_label ON dataset_items(dataset_id, label, id);

-- A named, immutable configuration a dataset is run against.
CREATE TABLE eval_versions (
    id              INTEGER PRIMARY KEY,
    uuid            TEXT    NOT NULL UNIQUE,
    dataset_id      INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
    tenant_id       INTEGER NOT NULL,
    name            TEXT    NOT NULL,
    system_prompt   TEXT,
    model           TEXT,
    judge_model     TEXT,
    metadata        TEXT,
    created_at      INTEGER NOT NULL,
    UNIQUE (dataset_id, name)
);

CREATE TABLE eval_runs (
    id              INTEGER PRIMARY KEY,
    uuid            TEXT    NOT NULL UNIQUE,
    tenant_id       INTEGER NOT NULL,
    dataset_id      INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
    version_id      INTEGER NOT NULL REFERENCES eval_versions(id) ON DELETE CASCADE,
    status          TEXT    NOT NULL
        CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    item_count      INTEGER NOT NULL,
    error_message   TEXT,
    created_at      INTEGER NOT NULL,
    started_at      INTEGER,
    completed_at    INTEGER
);
CREATE INDEX eval_runs_by_dataset ON eval_runs(dataset_id, id);
CREATE INDEX eval_runs_active ON eval_runs(id) WHERE status IN ('pending', 'running');

-- A run's work, one row per item, and the durable queue it waits in, as
-- `evaluations` is for single evaluations: `running` rows found at start
-- were cut off by a stop and run again. `trace_id` outlives the item.
CREATE TABLE run_items (
    id              INTEGER PRIMARY KEY,
    run_id          INTEGER NOT NULL REFERENCES eval_runs(id) ON DELETE CASCADE,
    item_id         INTEGER REFERENCES dataset_items(id) ON DELETE SET NULL,
    trace_id        TEXT    NOT NULL,
    status          TEXT    NOT NULL
        CHECK (status IN ('pending', 'running', 'complete', 'failed', 'cancelled')),
    -- The model's answer, kept as soon as it comes so a retry of the
    -- scoring does not ask again.
    output          TEXT,
    -- The mean of the item's scores.
    score           REAL,
    error           TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    run_after       INTEGER NOT NULL,
    started_at      INTEGER,
    finished_at     INTEGER
);
CREATE INDEX run_items_queue ON run_items(run_id, run_after, id) WHERE status = 'pending';
CREATE INDEX run_items_by_status ON run_items(run_id, status);
CREATE INDEX run_items_by_item ON run_items(item_id);

-- Each score of a run's item: one per evaluator.
CREATE TABLE run_scores (
    id              INTEGER PRIMARY KEY,
    uuid            TEXT    NOT NULL UNIQUE,
    run_item_id     INTEGER NOT NULL REFERENCES run_items(id) ON DELETE CASCADE,
    metric_name     TEXT    NOT NULL,
    evaluator_type  TEXT    NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('complete', 'failed')),
    score           REAL,
    label           TEXT,
    reasoning       TEXT,
    judge_model     TEXT,
    created_at      INTEGER NOT NULL
);
CREATE INDEX run_scores_by_item ON run_scores(run_item_id);
