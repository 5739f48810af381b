-- Webhooks: where an organisation's events are sent, and the durable
-- outbox of deliveries. An event is put in the outbox in the transaction
-- that produced it, one row per subscribed webhook; the sender works
-- through due rows, so a restart loses nothing. The secret is kept as
-- given: every delivery is signed with it.
CREATE TABLE webhooks (
    id              INTEGER PRIMARY KEY,
    uuid            TEXT    NOT NULL UNIQUE,
    tenant_id       INTEGER NOT NULL REFERENCES tenants(id),
    url             TEXT    NOT NULL,
    secret          TEXT    NOT NULL,
    -- A JSON array of event types.
    events          TEXT    NOT NULL,
    enabled         INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX webhooks_by_tenant ON webhooks(tenant_id, id);

CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY,
    uuid            TEXT    NOT NULL UNIQUE,
    webhook_id      INTEGER NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    event_type      TEXT    NOT NULL,
    -- The exact body sent, the same on every attempt.
    payload         TEXT    NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    -- When the next attempt is due (pending rows).
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    response_status INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries(webhook_id, id);
