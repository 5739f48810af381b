-- Login sessions for users (the admin page and the management API). The
-- token is stored as a SHA-256 digest only.
CREATE TABLE sessions (
    id          INTEGER PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    tenant_id   INTEGER NOT NULL,
    token_hash  BLOB    NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE INDEX sessions_user ON sessions(user_id);

-- When a key was last seen, to the minute (written at most once a minute).
ALTER TABLE api_keys ADD COLUMN last_used_at INTEGER;
