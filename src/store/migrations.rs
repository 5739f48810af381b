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
    (25, "0025_late_spans"),
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

/// Copies the database to `backups/` before its schema changes. The copy
/// takes about the space the data takes: without that much free (and the
/// disk's reserve beside it) the upgrade stops before writing anything and
/// says how much it needs, and a copy cut short by a full disk is removed
/// rather than left to fill it.
fn backup_before_upgrade(conn: &Connection, data_dir: &Path, from: i64) -> Result<()> {
    let dir = data_dir.join("backups");
    std::fs::create_dir_all(&dir)?;
    let needed: u64 = conn
        .query_row(
            "SELECT (page_count - freelist_count) * page_size \
         FROM pragma_page_count(), pragma_freelist_count(), pragma_page_size()",
            [],
            |r| r.get::<_, i64>(0),
        )?
        .try_into()
        .unwrap_or(0);
    room_for_copy(needed, super::space::Disk::of(&dir), &dir)?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let target = dir.join(format!("pre-upgrade-v{from}-{stamp}.db"));
    let name = target
        .to_str()
        .ok_or_else(|| StoreError::Corrupt("backup path is not UTF-8".into()))?
        .to_string();
    if let Err(e) = conn.execute("VACUUM INTO ?1", [name.as_str()]) {
        for cut in [
            target.clone(),
            dir.join(format!("pre-upgrade-v{from}-{stamp}.db-journal")),
        ] {
            if let Err(gone) = std::fs::remove_file(&cut) {
                if gone.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %cut.display(), error = %gone, "could not remove a backup cut short");
                }
            }
        }
        return Err(e.into());
    }
    tracing::info!(path = %name, "backed up the database before upgrading its schema");
    Ok(())
}

/// Whether `disk` (where `dir` is) holds a copy of `needed` bytes and its
/// reserve beside it. A disk that cannot be asked is tried.
fn room_for_copy(needed: u64, disk: Option<super::space::Disk>, dir: &Path) -> Result<()> {
    match disk {
        Some(disk) if disk.free < needed.saturating_add(disk.reserve()) => {
            Err(StoreError::NoRoomForBackup {
                dir: dir.display().to_string(),
                needed,
                free: disk.free,
            })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::space::Disk;
    use super::*;

    #[test]
    fn an_upgrade_copies_the_database_before_changing_it() {
        let (dir, mut conn) = super::super::test_database_at(SCHEMA_VERSION - 1);
        conn.execute(
            "INSERT INTO traces (tenant_id, project_id, id, started_at, created_at, content_hash) \
             VALUES (1, 1, 'kept', 1, 1, x'00')",
            [],
        )
        .expect("trace");
        assert_eq!(
            migrate(&mut conn, dir.path()).expect("migrate"),
            SCHEMA_VERSION
        );
        let copies: Vec<_> = std::fs::read_dir(dir.path().join("backups"))
            .expect("backups")
            .map(|e| e.expect("entry").path())
            .collect();
        assert_eq!(copies.len(), 1, "{copies:?}");
        let name = copies[0]
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        assert!(
            name.starts_with(&format!("pre-upgrade-v{}-", SCHEMA_VERSION - 1)),
            "{name}"
        );
        let copy = Connection::open(&copies[0]).expect("open the copy");
        let (version, id): (i64, String) = copy
            .query_row(
                "SELECT (SELECT user_version FROM pragma_user_version), id FROM traces",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("read the copy");
        assert_eq!((version, id.as_str()), (SCHEMA_VERSION - 1, "kept"));
    }

    #[test]
    fn an_upgrade_without_room_for_its_copy_says_what_it_needs() {
        let dir = Path::new("/data/backups");
        let disk = Disk {
            free: 100 << 20,
            total: 10 << 30,
        };
        // The copy and the disk's reserve (64 MiB here) must both fit.
        assert!(room_for_copy(30 << 20, Some(disk), dir).is_ok());
        let refused = room_for_copy(40 << 20, Some(disk), dir).expect_err("no room");
        let message = refused.to_string();
        assert!(matches!(refused, StoreError::NoRoomForBackup { .. }));
        assert!(message.contains("/data/backups"), "{message}");
        assert!(message.contains(&(40_u64 << 20).to_string()), "{message}");
        assert!(message.contains(&(100_u64 << 20).to_string()), "{message}");
        // A file system that cannot be asked is tried.
        assert!(room_for_copy(u64::MAX, None, dir).is_ok());
    }
}
