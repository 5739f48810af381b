-- Saved filters of the trace list, shared by everyone in an organisation.
-- `filters` is a JSON object of the trace list's query parameters, checked
-- as the list checks them before it is stored; `created_by` is the user's id.
CREATE TABLE saved_filters (
    id          INTEGER PRIMARY KEY,
    uuid        TEXT    NOT NULL UNIQUE,
    tenant_id   INTEGER NOT NULL REFERENCES tenants(id),
    project_id  INTEGER NOT NULL REFERENCES projects(id),
    name        TEXT    NOT NULL,
    filters     TEXT    NOT NULL,
    created_by  TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX saved_filters_project ON saved_filters(tenant_id, project_id, id);

-- Addresses that asked to hear of changes to the sub-processor registry.
-- An appliance has no sub-processors and sends no mail; the addresses are
-- kept so that the request is honoured and can be withdrawn.
CREATE TABLE subprocessor_subscribers (
    email       TEXT    PRIMARY KEY,
    created_at  INTEGER NOT NULL
) WITHOUT ROWID;

-- Who created an API key, for keys made from a user's session. Keys made
-- before this table or from the command line have no row; a removed user's
-- rows go with them (the keys stay).
CREATE TABLE api_key_creators (
    key_id      INTEGER PRIMARY KEY REFERENCES api_keys(id) ON DELETE CASCADE,
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE
);
CREATE INDEX api_key_creators_user ON api_key_creators(user_id);
