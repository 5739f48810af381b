-- Failure rules: a threshold on one metric of an organisation's traffic
-- (all its projects, or one), evaluated over a trailing window from the
-- metric rollups. `open_anomaly_id` is the rule's open episode: set when
-- the rule fires (with its anomaly), cleared when the condition clears, so
-- a rule fires once per episode and a restart resumes where it was.
CREATE TABLE failure_rules (
    id               INTEGER PRIMARY KEY,
    uuid             TEXT    NOT NULL UNIQUE,
    tenant_id        INTEGER NOT NULL REFERENCES tenants(id),
    -- Null: every project of the organisation together.
    project_id       INTEGER REFERENCES projects(id),
    name             TEXT    NOT NULL,
    metric           TEXT    NOT NULL,
    operator         TEXT    NOT NULL CHECK (operator IN ('gt', 'gte', 'lt', 'lte')),
    threshold        REAL    NOT NULL,
    window_secs      INTEGER NOT NULL,
    severity         TEXT    NOT NULL CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    -- The fewest traces (or, for `score`, evaluations) in the window for
    -- the rule to judge it.
    min_samples      INTEGER NOT NULL DEFAULT 1,
    -- For `score`: the evaluation metric averaged; null: every metric.
    score_metric     TEXT,
    enabled          INTEGER NOT NULL DEFAULT 1,
    open_anomaly_id  INTEGER,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX failure_rules_by_tenant ON failure_rules(tenant_id, id);
CREATE INDEX failure_rules_enabled ON failure_rules(id) WHERE enabled;

-- What the rules raised and what the built-in detector found. An anomaly
-- is open until `recovered_at` is set.
CREATE TABLE anomalies (
    id             INTEGER PRIMARY KEY,
    uuid           TEXT    NOT NULL UNIQUE,
    tenant_id      INTEGER NOT NULL REFERENCES tenants(id),
    project_id     INTEGER REFERENCES projects(id),
    -- The rule that raised it; null for the built-in detector (or once the
    -- rule is deleted: `rule_uuid` keeps its id).
    rule_id        INTEGER REFERENCES failure_rules(id) ON DELETE SET NULL,
    rule_uuid      TEXT,
    source         TEXT    NOT NULL CHECK (source IN ('rule', 'builtin')),
    type           TEXT    NOT NULL,
    severity       TEXT    NOT NULL CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    description    TEXT    NOT NULL,
    metric         TEXT    NOT NULL,
    value          REAL    NOT NULL,
    -- The rule's threshold, or the detector's baseline.
    threshold      REAL,
    baseline       REAL,
    metadata       TEXT,
    detected_at    INTEGER NOT NULL,
    recovered_at   INTEGER,
    created_at     INTEGER NOT NULL
);
CREATE INDEX anomalies_by_tenant ON anomalies(tenant_id, detected_at, id);
CREATE INDEX anomalies_by_project ON anomalies(tenant_id, project_id, detected_at, id);
-- A list filtered by type reads only that type's anomalies.
CREATE INDEX anomalies_by_type ON anomalies(tenant_id, type, detected_at, id);
-- The detector's open episodes, one per project and type.
CREATE INDEX anomalies_open_builtin ON anomalies(tenant_id, project_id, type)
    WHERE recovered_at IS NULL AND source = 'builtin';

-- `score` rules over every metric of an organisation read its evaluations
-- of a window.
CREATE INDEX evaluations_by_time ON evaluations(tenant_id, created_at);
