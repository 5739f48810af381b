//! The room the database has: the disk under it.
//!
//! A full disk fails a write with `SQLITE_FULL` (short writes to the WAL or
//! the database file) or, where the file system says so only later, with an
//! I/O error on a write, a sync or the shared-memory file; both are told
//! apart from other failures as [`StoreError::DiskFull`].

use super::{Store, StoreError};
use std::path::Path;

impl Store {
    /// The file system the database is on, its free space less what the
    /// database file grows by when the pages in the WAL are copied into
    /// it: otherwise a burst of writes would seem to fit until the next
    /// checkpoint found no room.
    pub fn disk(&self) -> Option<Disk> {
        let mut disk = Disk::of(self.path.parent()?)?;
        let file = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        let growth = self.writer.db_bytes().saturating_sub(file);
        disk.free = disk.free.saturating_sub(growth);
        Some(disk)
    }

    /// Whether the last write that failed or changed anything failed for
    /// want of disk space, and no more space is free since.
    pub fn disk_full(&self) -> bool {
        let Some(free_then) = self.writer.full_at() else {
            return false;
        };
        // Until space returns: nothing may write (the server may be out of
        // a load balancer's rotation while `/ready` says full), so more
        // free than then, by the reserve, says so.
        self.disk()
            .is_none_or(|d| d.free < free_then.saturating_add(d.reserve()))
    }
}

/// The file system a directory is on, as `statvfs` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disk {
    /// Bytes an unprivileged process may still write.
    pub free: u64,
    /// Bytes of the whole file system.
    pub total: u64,
}

/// The most kept in reserve, and the least.
const RESERVE_MAX: u64 = 64 * 1024 * 1024;
const RESERVE_MIN: u64 = 2 * 1024 * 1024;
/// Free space below which the disk counts as low, at most.
const LOW_MAX: u64 = 256 * 1024 * 1024;

impl Disk {
    pub fn of(dir: &Path) -> Option<Disk> {
        let stat = rustix::fs::statvfs(dir).ok()?;
        Some(Disk {
            free: stat.f_bavail.saturating_mul(stat.f_frsize),
            total: stat.f_blocks.saturating_mul(stat.f_frsize),
        })
    }

    /// Free space kept, once new data is refused, for the writes that
    /// must still succeed: checkpoints, which grow the database file by
    /// what the WAL holds (the WAL starts over at a sixteenth of a small
    /// file system, see `checkpoint::Tuning::for_disk`), and the deletes
    /// that free space. A sixteenth of the file system, between 2 and
    /// 64 MiB.
    pub fn reserve(&self) -> u64 {
        (self.total / 16).clamp(RESERVE_MIN, RESERVE_MAX)
    }

    /// Free space below which the disk counts as low: a tenth of the file
    /// system or 256 MiB, whichever is smaller, and above the reserve.
    pub fn low_mark(&self) -> u64 {
        (self.total / 10).min(LOW_MAX).max(self.reserve() * 2)
    }

    /// Whether new data is refused: less than the reserve is free.
    pub fn is_full(&self) -> bool {
        self.free < self.reserve()
    }

    pub fn is_low(&self) -> bool {
        self.free < self.low_mark()
    }
}

/// A failed write's error, as [`StoreError::DiskFull`] when the disk had no
/// room for it. `dir` is the database's directory: an I/O error counts as a
/// full disk only if its file system is (nearly) full.
pub(super) fn classify(e: rusqlite::Error, dir: Option<&Path>) -> StoreError {
    use rusqlite::ffi;
    let rusqlite::Error::SqliteFailure(failure, _) = &e else {
        return StoreError::Sqlite(e);
    };
    let full = match failure.code {
        rusqlite::ErrorCode::DiskFull => true,
        rusqlite::ErrorCode::SystemIoFailure => {
            matches!(
                failure.extended_code,
                ffi::SQLITE_IOERR_WRITE
                    | ffi::SQLITE_IOERR_FSYNC
                    | ffi::SQLITE_IOERR_DATA
                    | ffi::SQLITE_IOERR_TRUNCATE
                    | ffi::SQLITE_IOERR_SHMSIZE
                    | ffi::SQLITE_IOERR_SHMMAP
            ) && dir.and_then(Disk::of).is_some_and(|d| d.is_full())
        }
        _ => false,
    };
    if full {
        StoreError::DiskFull(e.to_string())
    } else {
        StoreError::Sqlite(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn a_small_disk_is_low_and_full_in_proportion_and_a_large_one_in_bounds() {
        let small = Disk {
            free: 10 * MIB,
            total: 64 * MIB,
        };
        assert_eq!((small.reserve(), small.low_mark()), (4 * MIB, 8 * MIB));
        assert!(!small.is_low() && !small.is_full());
        assert!(Disk {
            free: 7 * MIB,
            ..small
        }
        .is_low());
        assert!(Disk {
            free: 3 * MIB,
            ..small
        }
        .is_full());
        let medium = Disk {
            free: 100 * MIB,
            total: 10 * 1024 * MIB,
        };
        assert_eq!((medium.reserve(), medium.low_mark()), (64 * MIB, 256 * MIB));
        assert!(medium.is_low());
        let large = Disk {
            free: 300 * MIB,
            total: 500 * 1024 * MIB,
        };
        assert_eq!((large.reserve(), large.low_mark()), (64 * MIB, 256 * MIB));
        assert!(!large.is_low());
    }

    #[test]
    fn sqlite_full_is_a_full_disk_and_other_failures_are_not() {
        let failure = |code: i32| {
            rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), Some("x".into()))
        };
        assert!(matches!(
            classify(failure(rusqlite::ffi::SQLITE_FULL), None),
            StoreError::DiskFull(_)
        ));
        assert!(matches!(
            classify(failure(rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE), None),
            StoreError::Sqlite(_)
        ));
        // An I/O error with room on the disk is an I/O error.
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            classify(failure(rusqlite::ffi::SQLITE_IOERR_WRITE), Some(dir.path())),
            StoreError::Sqlite(_)
        ));
    }
}
