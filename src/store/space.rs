//! The room the database has: the cap on the data it holds
//! (`storage.max_db_size`), and the disk under it.
//!
//! The cap counts the pages in use: tables, their indexes and the search
//! index, not the WAL nor pages freed by deletes and not yet given back. A
//! write that adds data measures them inside its own transaction, after its
//! rows, and is refused (alone: the writer rolls back only the failing job)
//! if it would take the database past the cap. Measuring beforehand, or
//! every so often, lets a single batch (up to 64 MiB) or everything stored
//! between two measurements through.
//!
//! The search index is filled after ingest (see `search_index`), so its
//! share of the space comes after the check. The check counts it ahead: the
//! rows still to index, at what a row has taken in the index so far (learnt
//! from each indexing batch). In the last tenth of the cap, a write that
//! adds data indexes whatever waits itself, its own rows included, so that
//! near the cap what is measured is what is stored rather than an estimate.
//! (Indexing in the write costs ingest about half its throughput, so it is
//! kept to that last tenth.) The tag and session indexes are still filled
//! later (see `lookup`); their entries copy each trace's tags and session
//! id, a few percent of the data.
//!
//! A full disk fails a write with `SQLITE_FULL` (short writes to the WAL or
//! the database file) or, where the file system says so only later, with an
//! I/O error on a write, a sync or the shared-memory file; both are told
//! apart from other failures as [`StoreError::DiskFull`].

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use rusqlite::Connection;

use super::search_index::{self, IndexBatch};
use super::{Result, Store, StoreError};

/// From nine tenths of the cap on, writes that add data index what waits
/// for the search index themselves, so that the cap counts it exactly.
const INDEX_INLINE_FROM_TENTHS: u64 = 9;
/// What a row is taken to add to the search index before any was measured.
const INDEX_ROW_GUESS: u64 = 1024;

/// The least room left at which the cap counts as reached: a few pages of
/// every table and index a write touches.
const CAP_MARGIN_MIN: u64 = 256 * 1024;

/// A cap on the pages in use, and what was last seen of them.
#[derive(Debug, Default)]
pub(super) struct SizeCap {
    /// In bytes; 0 means none.
    limit: AtomicU64,
    /// Seconds a client refused at the cap is told to wait.
    retry_after: AtomicU64,
    /// The pages in use, in bytes, with the search index still to come, as
    /// last measured.
    used: AtomicU64,
    /// Bytes a row has taken in the search index, a running average; 0
    /// until one batch was measured.
    index_row_bytes: AtomicU64,
}

impl SizeCap {
    /// Refuses the job's writes if they take the database past the cap.
    fn admit(&self, conn: &Connection) -> Result<()> {
        let limit = self.limit.load(Relaxed);
        if limit == 0 {
            return Ok(());
        }
        let mut used = pages_in_use(conn)? + self.index_to_come(conn)?;
        if used >= limit / 10 * INDEX_INLINE_FROM_TENTHS {
            self.index(conn, IndexBatch::ALL)?;
            used = pages_in_use(conn)?;
        }
        if used > limit {
            return Err(StoreError::CapReached {
                used,
                cap: limit,
                retry_after: self.retry_after.load(Relaxed),
            });
        }
        self.used.store(used, Relaxed);
        Ok(())
    }

    /// What the rows not yet indexed for search will add to the index
    /// (nothing counted without a cap).
    pub(super) fn index_to_come(&self, conn: &Connection) -> Result<u64> {
        if self.limit.load(Relaxed) == 0 {
            return Ok(0);
        }
        let per_row = match self.index_row_bytes.load(Relaxed) {
            0 => INDEX_ROW_GUESS,
            learnt => learnt,
        };
        Ok(search_index::unindexed_rows(conn)?.saturating_mul(per_row))
    }

    /// Adds a batch to the search index; with a cap, learns from it what a
    /// row takes there.
    pub(super) fn index(&self, conn: &Connection, batch: IndexBatch) -> Result<usize> {
        if self.limit.load(Relaxed) == 0 {
            return search_index::index_batch(conn, batch);
        }
        let before = pages_in_use(conn)?;
        let rows = search_index::index_batch(conn, batch)?;
        if rows == 0 {
            return Ok(0);
        }
        // The search index holds up to a megabyte of new entries in memory
        // until the transaction ends; opening a savepoint makes it write
        // them, so that they are measured.
        conn.execute_batch("SAVEPOINT measure; RELEASE measure")?;
        let grown = pages_in_use(conn)?.saturating_sub(before) / rows as u64;
        // A running average over some eight batches: merges of the index's
        // segments make single batches lumpy.
        let average = match self.index_row_bytes.load(Relaxed) {
            0 => grown,
            old => (old * 7 + grown) / 8,
        };
        self.index_row_bytes.store(average.max(1), Relaxed);
        Ok(rows)
    }

    /// Within a hundredth of the cap, or 256 KiB of it (but at most a
    /// twentieth, so that `purge_oldest`, which starts at nine tenths, comes
    /// first): writes are refused before they run, rather than each running
    /// its inserts only to be rolled back. Further from it, a write is
    /// refused only if it does not fit itself (a large batch is refused;
    /// smaller writes go on).
    fn reached(&self) -> bool {
        let limit = self.limit.load(Relaxed);
        let margin = (limit / 100).max(CAP_MARGIN_MIN).min(limit / 20);
        limit > 0 && self.used.load(Relaxed).saturating_add(margin) >= limit
    }
}

/// Bytes of the pages in use, as the connection sees them (its own
/// uncommitted writes included).
fn pages_in_use(conn: &Connection) -> Result<u64> {
    let pragma = |name: &str| -> rusqlite::Result<u64> {
        conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0))
            .map(|v| v.max(0) as u64)
    };
    let pages = pragma("page_count")?.saturating_sub(pragma("freelist_count")?);
    Ok(pages * pragma("page_size")?)
}

impl Store {
    /// Caps the data the database holds at `bytes` (0: no cap); a client
    /// refused at the cap is told to retry after `retry_after` seconds.
    /// The WAL is scaled to the cap, as to a small disk.
    pub fn limit_size(&self, bytes: u64, retry_after: u64) {
        self.cap.retry_after.store(retry_after, Relaxed);
        self.cap.limit.store(bytes, Relaxed);
        if bytes > 0 {
            self.checkpointer.fit_wal_to(bytes);
        }
    }

    /// Seconds a client refused at the cap is told to wait.
    pub fn size_retry_after(&self) -> u64 {
        self.cap.retry_after.load(Relaxed)
    }

    /// The cap on the data, in bytes; 0 when there is none.
    pub fn size_limit(&self) -> u64 {
        self.cap.limit.load(Relaxed)
    }

    /// The data held, in bytes, with the search index still to come, as
    /// last measured.
    pub fn used_bytes(&self) -> u64 {
        self.cap.used.load(Relaxed)
    }

    pub(super) fn note_used(&self, used: u64) {
        self.cap.used.store(used, Relaxed);
    }

    /// Whether writes that add data are refused before they run: the data
    /// is within a hundredth of the cap (see `SizeCap::reached`).
    pub fn at_size_limit(&self) -> bool {
        self.cap.reached()
    }

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
        // A write that clears it may never come (a load balancer takes the
        // server out of rotation while `/ready` says full), so it also ends
        // once more is free than then, by the reserve.
        self.path
            .parent()
            .and_then(Disk::of)
            .is_none_or(|d| d.free < free_then.saturating_add(d.reserve()))
    }

    /// Runs a job that adds data (traces, spans, feedback, evaluations):
    /// refused with [`StoreError::CapReached`] if, with its rows, the
    /// database would hold more than the cap.
    pub(crate) async fn write_data<T, F>(&self, mut f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> Result<T> + Send + 'static,
    {
        let cap = self.cap.clone();
        self.write(move |conn| {
            let done = f(conn)?;
            cap.admit(conn)?;
            Ok(done)
        })
        .await
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
    /// file system, see `checkpoint::Tuning::within`), and the deletes
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

    #[test]
    fn a_write_past_the_cap_is_refused_and_the_search_index_is_counted() {
        let (_dir, conn) = super::super::test_database();
        let cap = SizeCap::default();
        let empty = pages_in_use(&conn).expect("size");
        let limit = empty + 4 * MIB;
        cap.limit.store(limit, Relaxed);
        cap.retry_after.store(30, Relaxed);
        let mut refused = None;
        let mut most_waiting = 0;
        for i in 0..400 {
            // The background indexer, falling behind ingest.
            if i % 4 == 0 {
                let step = IndexBatch { traces: 2 };
                cap.index(&conn, step).expect("index");
            }
            conn.execute_batch("SAVEPOINT job").expect("savepoint");
            conn.execute(
                "INSERT INTO traces (tenant_id, project_id, id, name, input, started_at, \
                 created_at, content_hash) VALUES (1, 1, ?1, 'fill', ?2, 0, 0, x'00')",
                rusqlite::params![format!("t{i}"), words(i, 16 * 1024)],
            )
            .expect("trace");
            match cap.admit(&conn) {
                Ok(()) => {
                    conn.execute_batch("RELEASE job").expect("release");
                    let waiting = search_index::unindexed_rows(&conn).expect("backlog");
                    most_waiting = most_waiting.max(waiting);
                }
                Err(e) => {
                    conn.execute_batch("ROLLBACK TO job; RELEASE job")
                        .expect("rollback");
                    refused = Some(e);
                    break;
                }
            }
        }
        assert!(
            matches!(
                refused,
                Some(StoreError::CapReached {
                    retry_after: 30,
                    ..
                })
            ),
            "{refused:?}"
        );
        assert!(
            most_waiting >= 20,
            "the indexer kept up: little was estimated ({most_waiting} rows)"
        );
        // What stayed, with the index of all of it, is at the cap.
        search_index::index_batch(&conn, IndexBatch::ALL).expect("index");
        let used = pages_in_use(&conn).expect("size");
        assert!(
            used <= limit + limit / 20,
            "{used} is over {limit} by more than 5%"
        );
        assert!(used > limit - limit / 20, "{used} is far below {limit}");
        cap.used.store(limit - 200 * 1024, Relaxed);
        assert!(
            cap.reached(),
            "near the cap, writes are refused before they run"
        );
        cap.used.store(limit - 300 * 1024, Relaxed);
        assert!(!cap.reached());
    }

    /// `bytes` of words that differ from row to row, as the search index
    /// sees text.
    fn words(seed: usize, bytes: usize) -> String {
        let mut text = String::with_capacity(bytes + 16);
        let mut n = seed as u64 * 7919 + 1;
        while text.len() < bytes {
            n = n
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            text.push_str(&format!("w{:x} ", n >> 44));
        }
        text
    }
}
