-- Where a search may stop reading its matches (see `store::search`).
--
-- A search reads the traces that match it newest stored first (highest
-- `seq` first), but lists them by `started_at`. Seqs follow arrival, and
-- start times follow it closely but not exactly: a trace sent when it ends
-- started before traces stored ahead of it. This table bounds how late a
-- trace stored earlier can have started, so that a search can tell when
-- none of the matches it has not read yet could belong on its page.
--
-- A zone is 256 consecutive seqs. `upto` is the latest `started_at` of the
-- organisation's traces in that zone and in every zone below it: a bound
-- that triggers raise and never lower (a deleted trace leaves it as it
-- was, which is only less tight).
CREATE TABLE trace_zones (
    tenant_id  INTEGER NOT NULL,
    zone       INTEGER NOT NULL,
    upto       INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, zone)
) WITHOUT ROWID;

INSERT INTO trace_zones (tenant_id, zone, upto)
SELECT tenant_id, zone, max(top) OVER (PARTITION BY tenant_id ORDER BY zone)
FROM (SELECT tenant_id, seq >> 8 AS zone, max(started_at) AS top FROM traces
      GROUP BY tenant_id, seq >> 8);

-- A new trace raises its zone and those above it (there are none above
-- when it is the newest stored, as nearly always), and opens its zone
-- with the bound of the zones below.
CREATE TRIGGER trace_zones_insert AFTER INSERT ON traces
BEGIN
    UPDATE trace_zones SET upto = new.started_at
    WHERE tenant_id = new.tenant_id AND zone >= new.seq >> 8 AND upto < new.started_at;
    INSERT OR IGNORE INTO trace_zones (tenant_id, zone, upto)
    VALUES (new.tenant_id, new.seq >> 8,
            max(new.started_at, coalesce((SELECT upto FROM trace_zones
                WHERE tenant_id = new.tenant_id AND zone < new.seq >> 8
                ORDER BY zone DESC LIMIT 1), new.started_at)));
END;

-- A trace whose start moves later (spans sent after it that started
-- later) raises the bound from its zone up.
CREATE TRIGGER trace_zones_update AFTER UPDATE OF started_at ON traces
WHEN new.started_at > old.started_at
BEGIN
    UPDATE trace_zones SET upto = new.started_at
    WHERE tenant_id = new.tenant_id AND zone >= new.seq >> 8 AND upto < new.started_at;
END;
