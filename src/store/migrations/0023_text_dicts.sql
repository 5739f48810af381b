-- Compression dictionaries (see `store::codec`). From this version the
-- input, output and metadata of traces and spans may hold a BLOB: a text
-- packed with one of these, read through the `unpack` SQL function. Values
-- stored before stay text; nothing is rewritten by the upgrade.
CREATE TABLE text_dicts (
    id          INTEGER PRIMARY KEY,
    tenant_id   INTEGER NOT NULL REFERENCES tenants(id),
    -- How values packed with it are written: 1 = zstd frames without
    -- magic number, checksum or dictionary id.
    format      INTEGER NOT NULL,
    level       INTEGER NOT NULL,
    dict        BLOB    NOT NULL,
    -- The organisation's traces sent (its usage) when it was trained.
    trained_on  INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX text_dicts_tenant ON text_dicts(tenant_id, id);
