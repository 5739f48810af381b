-- When a project last changed (name, retention, archive), as the
-- reference's Project carries it. Projects made before: the later of their
-- creation and their archiving.
ALTER TABLE projects ADD COLUMN updated_at INTEGER;
UPDATE projects SET updated_at = max(created_at, coalesce(archived_at, created_at));
