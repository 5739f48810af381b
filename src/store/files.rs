//! A database file outside a running store: what the operator commands
//! (backup, restore, migrate) read from a file and the consistent copy they
//! write, while a server may be using the file or none is.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// How long a copy waits for a writer that holds the database.
const COPY_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// An existing database file, opened on its own.
pub struct DatabaseFile(Connection);

impl DatabaseFile {
    /// Opens `path` to read and write; it is not created.
    pub fn open(path: &Path) -> rusqlite::Result<DatabaseFile> {
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE).map(DatabaseFile)
    }

    /// Opens `path` to read only.
    pub fn open_read_only(path: &Path) -> rusqlite::Result<DatabaseFile> {
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map(DatabaseFile)
    }

    /// SQLite's quick check: `ok`, or what is damaged.
    pub fn quick_check(&self) -> rusqlite::Result<String> {
        self.0.query_row("PRAGMA quick_check", [], |r| r.get(0))
    }

    /// The schema version the file holds (0: none yet).
    pub fn schema_version(&self) -> rusqlite::Result<i64> {
        self.0.query_row("PRAGMA user_version", [], |r| r.get(0))
    }

    /// How many traces the file holds; an error when it has no traces table.
    pub fn trace_count(&self) -> rusqlite::Result<i64> {
        self.0
            .query_row("SELECT count(*) FROM traces", [], |r| r.get(0))
    }
}

/// Writes a consistent copy of the database `db` to the new file `out`:
/// one read transaction's snapshot, taken while a server may go on
/// writing (waiting up to 30 s for a moment it does not hold the file).
pub fn copy_database(db: &Path, out: &str) -> rusqlite::Result<()> {
    let conn = Connection::open(db)?;
    conn.busy_timeout(COPY_BUSY_TIMEOUT)?;
    conn.execute("VACUUM INTO ?1", [out])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_holds_what_the_file_held_and_checks_clean() {
        let dir = tempfile::tempdir().expect("dir");
        let db = dir.path().join("source.db");
        let conn = Connection::open(&db).expect("open");
        conn.execute_batch(
            "CREATE TABLE traces (id INTEGER PRIMARY KEY); \
             INSERT INTO traces DEFAULT VALUES; INSERT INTO traces DEFAULT VALUES; \
             PRAGMA user_version = 7;",
        )
        .expect("filled");
        let out = dir.path().join("copy.db");
        copy_database(&db, out.to_str().expect("UTF-8")).expect("copied");
        let copy = DatabaseFile::open_read_only(&out).expect("the copy opens");
        assert_eq!(copy.quick_check().expect("checked"), "ok");
        assert_eq!(copy.schema_version().expect("version"), 7);
        assert_eq!(copy.trace_count().expect("count"), 2);
        assert!(DatabaseFile::open(&dir.path().join("absent.db")).is_err());
    }
}
