-- The tag index moves out of `trace_tags` into a table of its own, filled
-- in sorted batches (see `store::lookup`). Kept as an index, every trace
-- added one entry per tag at a random place in it, and each group commit
-- rewrote hundreds of its pages: at 8 clients, 30% of all WAL frames.
CREATE TABLE tag_lookup (
    tenant_id   INTEGER NOT NULL,
    key         TEXT    NOT NULL,
    value       TEXT    NOT NULL,
    started_at  INTEGER NOT NULL,
    trace_seq   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, key, value, started_at, trace_seq)
) WITHOUT ROWID;
INSERT INTO tag_lookup (tenant_id, key, value, started_at, trace_seq)
SELECT tenant_id, key, value, started_at, trace_seq FROM trace_tags
ORDER BY tenant_id, key, value, started_at, trace_seq;
DROP INDEX trace_tags_lookup;

-- `tags_seq`: the tags of every trace up to this seq are in `tag_lookup`;
-- a query reads the rest from `trace_tags` itself. `tags_upto`: the batch
-- being merged ends here, and from the moment it is chosen the triggers
-- below apply every change to the tags of those traces to `tag_lookup`.
CREATE TABLE lookup_state (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    tags_seq   INTEGER NOT NULL,
    tags_upto  INTEGER NOT NULL
);
INSERT INTO lookup_state (id, tags_seq, tags_upto) VALUES (
    1,
    coalesce((SELECT max(seq) FROM traces), 0),
    coalesce((SELECT max(seq) FROM traces), 0)
);

CREATE TRIGGER tag_lookup_insert AFTER INSERT ON trace_tags
WHEN new.trace_seq <= (SELECT tags_upto FROM lookup_state)
BEGIN
    INSERT OR IGNORE INTO tag_lookup (tenant_id, key, value, started_at, trace_seq)
    VALUES (new.tenant_id, new.key, new.value, new.started_at, new.trace_seq);
END;
CREATE TRIGGER tag_lookup_update AFTER UPDATE ON trace_tags
WHEN (old.trace_seq <= (SELECT tags_upto FROM lookup_state)
      OR new.trace_seq <= (SELECT tags_upto FROM lookup_state))
  AND (old.tenant_id IS NOT new.tenant_id OR old.key IS NOT new.key
       OR old.value IS NOT new.value OR old.started_at IS NOT new.started_at
       OR old.trace_seq IS NOT new.trace_seq)
BEGIN
    DELETE FROM tag_lookup WHERE tenant_id = old.tenant_id AND key = old.key
        AND value = old.value AND started_at = old.started_at AND trace_seq = old.trace_seq;
    INSERT OR IGNORE INTO tag_lookup (tenant_id, key, value, started_at, trace_seq)
    SELECT new.tenant_id, new.key, new.value, new.started_at, new.trace_seq
    WHERE new.trace_seq <= (SELECT tags_upto FROM lookup_state);
END;
-- Deletes apply whatever the seq: a merged entry may sit above `tags_seq`.
CREATE TRIGGER tag_lookup_delete AFTER DELETE ON trace_tags
BEGIN
    DELETE FROM tag_lookup WHERE tenant_id = old.tenant_id AND key = old.key
        AND value = old.value AND started_at = old.started_at AND trace_seq = old.trace_seq;
END;
