-- Organisations' own judge keys, one active per provider. The key is kept
-- sealed (AES-256-GCM under the operator's `[encryption]` key, bound to the
-- organisation and provider); `key_id` names the encryption key that sealed
-- it; `hint` is the key's last four characters, to tell keys apart. A
-- replaced or revoked key keeps its row with `revoked_at` set and its
-- sealed value erased.
CREATE TABLE eval_keys (
    id          INTEGER PRIMARY KEY,
    uuid        TEXT    NOT NULL UNIQUE,
    tenant_id   INTEGER NOT NULL REFERENCES tenants(id),
    provider    TEXT    NOT NULL,
    sealed      BLOB,
    key_id      TEXT    NOT NULL,
    hint        TEXT    NOT NULL,
    created_by  TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE UNIQUE INDEX eval_keys_active ON eval_keys(tenant_id, provider) WHERE revoked_at IS NULL;

-- Webhook secrets, sealed the same way when an `[encryption]` key is set
-- (bound to the organisation and the URL); `secret` is then empty. Secrets
-- stored before stay as they were.
ALTER TABLE webhooks ADD COLUMN secret_sealed BLOB;
ALTER TABLE webhooks ADD COLUMN secret_key_id TEXT;
