-- The audit log: every administrative action, hash-chained per tenant.
-- `hash` = SHA-256 over the previous entry's hash and this entry's fields,
-- so a changed or removed row breaks the chain from there on.
CREATE TABLE audit_log (
    id         INTEGER PRIMARY KEY,
    tenant_id  INTEGER NOT NULL,
    at         INTEGER NOT NULL,
    actor      TEXT    NOT NULL,
    action     TEXT    NOT NULL,
    target     TEXT,
    source     TEXT,
    details    TEXT    NOT NULL DEFAULT '{}',
    prev_hash  BLOB    NOT NULL,
    hash       BLOB    NOT NULL
);
CREATE INDEX audit_by_tenant ON audit_log(tenant_id, id);
