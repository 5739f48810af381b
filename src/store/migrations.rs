//! Numbered schema migrations, embedded in the binary. Each runs in its own
//! transaction and records its number in `PRAGMA user_version`. Before an
//! existing database is upgraded, a consistent copy is written beside it.

use std::path::Path;

use rusqlite::Connection;

use super::{Result, StoreError};

/// Migrations in order: number, name, SQL. The schema version is the
/// number of the last one.
macro_rules! migrations {
    ($(($n:literal, $file:literal)),* $(,)?) => {
        &[$(($n, $file, include_str!(concat!("migrations/", $file, ".sql")))),*]
    };
}
pub(super) const MIGRATIONS: &[(i64, &str, &str)] = migrations![
    (1, "0001_init"),
    (2, "0002_sessions"),
    (3, "0003_audit"),
    (4, "0004_usage"),
    (5, "0005_feedback"),
    (6, "0006_metrics"),
    (7, "0007_metrics_seconds"),
    (8, "0008_search"),
    (9, "0009_evals"),
    (10, "0010_tag_lookup"),
    (11, "0011_session_lookup"),
    (12, "0012_project_updated_at"),
    (13, "0013_datasets"),
    (14, "0014_webhooks"),
    (15, "0015_governance"),
    (16, "0016_failure_clusters"),
    (17, "0017_failure_rules"),
    (18, "0018_dsr"),
    (19, "0019_eval_keys"),
    (20, "0020_ingestion_health"),
    (21, "0021_session_stats"),
    (22, "0022_trace_docs"),
    (23, "0023_text_dicts"),
    (24, "0024_trace_zones"),
];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// The migrations a database at `version` still needs: number and name.
pub fn pending(version: i64) -> Vec<(i64, &'static str)> {
    MIGRATIONS
        .iter()
        .filter(|(n, _, _)| *n > version)
        .map(|(n, name, _)| (*n, *name))
        .collect()
}

/// Brings the database to [`SCHEMA_VERSION`]; returns the version.
pub(super) fn migrate(conn: &mut Connection, data_dir: &Path) -> Result<i64> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            found: current,
            supported: SCHEMA_VERSION,
        });
    }
    if current == SCHEMA_VERSION {
        return Ok(current);
    }
    if current > 0 {
        backup_before_upgrade(conn, data_dir, current)?;
    }
    for (number, _, sql) in MIGRATIONS.iter().filter(|(n, _, _)| *n > current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", number)?;
        tx.commit()?;
        tracing::info!(version = number, "applied schema migration");
    }
    Ok(SCHEMA_VERSION)
}

fn backup_before_upgrade(conn: &Connection, data_dir: &Path, from: i64) -> Result<()> {
    let dir = data_dir.join("backups");
    std::fs::create_dir_all(&dir)?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let target = dir.join(format!("pre-upgrade-v{from}-{stamp}.db"));
    let target = target
        .to_str()
        .ok_or_else(|| StoreError::Corrupt("backup path is not UTF-8".into()))?
        .to_string();
    conn.execute("VACUUM INTO ?1", [target.as_str()])?;
    tracing::info!(path = %target, "backed up the database before upgrading its schema");
    Ok(())
}
