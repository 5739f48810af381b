-- Auto-evaluation rules: each new trace in the rule's project queues the
-- rule's evaluation (sampled and filtered by `config`).
CREATE TABLE eval_rules (
    id              INTEGER PRIMARY KEY,
    uuid            TEXT    NOT NULL UNIQUE,
    tenant_id       INTEGER NOT NULL REFERENCES tenants(id),
    project_id      INTEGER NOT NULL REFERENCES projects(id),
    metric_name     TEXT    NOT NULL,
    evaluator_type  TEXT    NOT NULL CHECK (evaluator_type IN ('llm', 'rule')),
    config          TEXT,
    enabled         INTEGER NOT NULL DEFAULT 1,
    model_tier      TEXT    NOT NULL DEFAULT 'cheap' CHECK (model_tier IN ('cheap', 'premium')),
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX eval_rules_by_tenant ON eval_rules(tenant_id, project_id);

-- Evaluations, and the durable queue they wait in: a `pending` row is run
-- once `run_after` has passed; `running` rows found at start were cut off
-- by a stop and run again. Times are microseconds since the Unix epoch.
CREATE TABLE evaluations (
    id              INTEGER PRIMARY KEY,
    uuid            TEXT    NOT NULL UNIQUE,
    tenant_id       INTEGER NOT NULL,
    project_id      INTEGER NOT NULL,
    trace_seq       INTEGER NOT NULL REFERENCES traces(seq) ON DELETE CASCADE,
    rule_id         INTEGER REFERENCES eval_rules(id) ON DELETE SET NULL,
    metric_name     TEXT    NOT NULL,
    evaluator_type  TEXT    NOT NULL CHECK (evaluator_type IN ('llm', 'rule')),
    config          TEXT    NOT NULL DEFAULT '{}',
    model_tier      TEXT,
    status          TEXT    NOT NULL CHECK (status IN ('pending', 'running', 'complete', 'failed')),
    score           REAL,
    label           TEXT,
    reasoning       TEXT,
    judge_model     TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    run_after       INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    started_at      INTEGER,
    finished_at     INTEGER
);
CREATE INDEX evaluations_queue ON evaluations(evaluator_type, run_after, id) WHERE status = 'pending';
CREATE INDEX evaluations_running ON evaluations(id) WHERE status = 'running';
CREATE INDEX evaluations_by_trace ON evaluations(trace_seq);
CREATE INDEX evaluations_by_rule ON evaluations(rule_id) WHERE rule_id IS NOT NULL;
-- Lists and exports page newest first by id; summaries read one metric's
-- window in a project.
CREATE INDEX evaluations_by_tenant ON evaluations(tenant_id, id);
CREATE INDEX evaluations_by_metric ON evaluations(tenant_id, project_id, metric_name, created_at);

-- How far the auto-evaluation scheduler has looked through `traces.seq`.
-- Traces stored before this migration are not evaluated by rules.
CREATE TABLE eval_rule_state (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    traces_seq  INTEGER NOT NULL
);
INSERT INTO eval_rule_state (id, traces_seq) SELECT 1, coalesce(max(seq), 0) FROM traces;

-- Evaluations queued per organisation and month, for the plan's cap.
ALTER TABLE usage ADD COLUMN evals INTEGER NOT NULL DEFAULT 0;
