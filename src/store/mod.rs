//! The embedded SQLite store. All SQL of the product lives under this module,
//! behind methods that take and return domain types and always a tenant.
//!
//! One writer thread owns the only write connection and commits concurrent
//! requests together (see `writer`); reads use a pool of read-only
//! connections, which WAL mode lets proceed while the writer commits.

mod accounts;
mod anomalies;
mod api_keys;
mod audit;
mod checkpoint;
mod codec;
mod datasets;
mod dsr;
mod eval_keys;
mod eval_rules;
mod eval_runs;
mod eval_stats;
mod evals;
mod failure_clusters;
mod failure_rules;
mod files;
mod governance;
mod ingest_health;
mod lookup;
mod metrics;
mod migrations;
mod otel;
mod page;
mod purge;
mod rollups;
mod run_queue;
mod search;
mod search_index;
mod session_lookup;
mod sessions;
mod space;
mod span_search;
mod tenancy;
mod trace_docs;
mod trace_insert;
mod traces;
mod webhooks;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::Connection;

use crate::config::Synchronous;

pub use accounts::{LoginCandidate, SessionRecord, UserRecord};
pub(crate) use anomalies::AnomalyType;
pub use anomalies::{Anomaly, AnomalyFilter, NewAnomaly, OpenBuiltin};
pub use api_keys::{ApiKeyInfo, ApiKeyRecord, NewApiKey};
pub use audit::{Actor, AuditAnchor, AuditRecord, AuditVerdict};
pub use datasets::{
    Dataset, DatasetItem, EvalVersion, ItemAdded, LabelFilter, NewItem, NewVersion,
};
pub use dsr::{metadata_path, DsrCounts, DsrOutcome, DsrRequest, DsrWork, ExportChunk};
pub use eval_keys::{EvalKey, NewEvalKey, SealedKey};
pub use eval_rules::{
    ActiveRule, AutoCandidates, AutoEval, EvalRule, EvalRuleChange, NewEvalRule, NewTraceInfo,
    RuleCreated, Scheduled,
};
pub use eval_runs::{EvalRun, RunItemResult, RunScheduled, RunScore};
pub use eval_stats::{AgreementPair, TrendBucket, WindowStats};
pub use evals::{
    ClaimedEval, EvalFilter, EvalOutcome, EvalSpan, EvalTrace, NewEvaluation, QueueDepth, Queued,
};
pub use failure_clusters::{ClusterQuery, ClusterRow};
pub use failure_rules::{
    anomaly_kind, measure, ActiveFailureRule, FailureRule, FailureRuleChange, NewFailureRule,
    Observation,
};
pub(crate) use failure_rules::{RuleMetric, RuleOperator, Severity};
pub use files::{copy_database, DatabaseFile};
pub use governance::{FilterChange, SavedFilter, MAX_SUBSCRIBERS};
pub use ingest_health::{Backlogs, HealthCounts, HealthDelta, HOUR, KEEP_HOURS};
pub use lookup::MergePace;
pub use metrics::{MetricsQuery, MetricsResult, Totals};
pub use migrations::{pending as pending_migrations, SCHEMA_VERSION};
pub use otel::{CreatedTrace, ExportCursor, ExportPage, ExportRange};
pub use page::{PAGE_MAX_BYTES, VALUE_MAX_BYTES};
pub use purge::{RetentionTarget, Space};
pub use run_queue::{ClaimedRunItem, NewRunScore, RunItemOutcome, RunWork};
pub use search::{fts_query, fts_terms};
pub use search_index::IndexBatch;
pub use sessions::{SessionPage, SessionSummary, MAX_SESSION_TRACES};
pub use space::Disk;
pub use span_search::{SpanHit, SpanHits, SpanSearch, MAX_SPAN_RESULTS};
pub use tenancy::{BootstrapResult, NewOrg, ProjectChange, ProjectRecord};
pub use trace_insert::{usage_month, InsertOutcome};
pub use traces::{NewFeedback, TraceCursor, TraceFilter, TracePage};
pub use webhooks::{
    secret_context, Attempt, DueDelivery, NewWebhook, StoredSecret, Webhook, WebhookDelivery,
};
use writer::Writer;
pub use writer::{WriterStats, COMMIT_MICROS_BOUNDS, GROUP_JOBS_BOUNDS};

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "trulayer.db";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("connection pool: {0}")]
    Pool(#[from] r2d2::Error),
    #[error("{0}")]
    Conflict(String),
    /// A change refused by a rule of the data (409 with a code).
    #[error("{message}")]
    Refused { message: String, code: &'static str },
    #[error("the store is shutting down")]
    ShuttingDown,
    #[error("commit failed: {0}")]
    Commit(String),
    /// The disk holding the database had no room for the write.
    #[error("the disk holding the database is full ({0})")]
    DiskFull(String),
    /// The write would take the data held past `storage.max_db_size`.
    #[error(
        "the database would hold {used} bytes, over its cap of {cap} bytes \
         (storage.max_db_size); nothing more is stored until retention or an operator frees space"
    )]
    CapReached {
        used: u64,
        cap: u64,
        retry_after: u64,
    },
    #[error(
        "the database schema is version {found}, newer than this binary supports ({supported}); \
         run a newer trulayer-server or restore a backup taken before the upgrade"
    )]
    NewerSchema { found: i64, supported: i64 },
    #[error(
        "upgrading the database schema copies the database to {dir} first, which needs \
         {needed} bytes free besides a reserve, and the disk has {free}: free space on it and \
         start again (nothing was changed)"
    )]
    NoRoomForBackup { dir: String, needed: u64, free: u64 },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
    #[error("background task failed: {0}")]
    Task(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl StoreError {
    /// The same failure for another job of the transaction it ended: a
    /// full disk or the cap stays what it is, anything else is a failed
    /// commit.
    pub(crate) fn again(&self) -> StoreError {
        match self {
            StoreError::DiskFull(why) => StoreError::DiskFull(why.clone()),
            StoreError::CapReached {
                used,
                cap,
                retry_after,
            } => StoreError::CapReached {
                used: *used,
                cap: *cap,
                retry_after: *retry_after,
            },
            other => StoreError::Commit(other.to_string()),
        }
    }
}

/// Page cache of the write connection: holds the upper levels of every index
/// the inserts touch. Readers get less each; the OS page cache serves the rest.
/// No mmap: mapped pages would count towards the process's resident memory.
const WRITER_CACHE_KIB: u32 = 32 * 1024;
const READER_CACHE_KIB: u32 = 8 * 1024;
/// The WAL file is cut back to this size when it starts over: the most it
/// reaches under heavy ingest (see `checkpoint`), so in running the file is
/// reused as it is. Cutting it and growing it again each time would cost the
/// writer tens of milliseconds of file-system work per restart.
const WAL_KEEP_BYTES: u64 = 1024 * 1024 * 1024;

/// Applies the write connection's settings. It never checkpoints on its own;
/// the checkpoint thread does (see `checkpoint`).
fn apply_pragmas(conn: &Connection, synchronous: Synchronous) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    let sync = match synchronous {
        Synchronous::Normal => "NORMAL",
        Synchronous::Full => "FULL",
    };
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = {sync};
         PRAGMA foreign_keys = ON;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -{WRITER_CACHE_KIB};
         PRAGMA wal_autocheckpoint = 0;
         PRAGMA journal_size_limit = {WAL_KEEP_BYTES};"
    ))
}

pub struct Store {
    writer: Writer,
    checkpointer: checkpoint::Checkpointer,
    readers: r2d2::Pool<SqliteConnectionManager>,
    /// One permit per read connection: a read waits here, on the async
    /// side, rather than parking a blocking thread on the pool.
    read_permits: Arc<tokio::sync::Semaphore>,
    path: PathBuf,
    schema_version: i64,
    /// Counts writes that stored traces, for the search indexer.
    changes: std::sync::atomic::AtomicU64,
    /// The value of `changes` when the index last had nothing left to add.
    indexed: std::sync::atomic::AtomicU64,
    /// The cap on the data held, shared with the writes that add data.
    cap: Arc<space::SizeCap>,
    /// The dictionaries texts are packed with, shared with every
    /// connection's `unpack`.
    codec: Arc<codec::Codec>,
    /// How many traces hold each term span search weighs, for a while.
    term_counts: Arc<span_search::TermCounts>,
}

impl Store {
    /// Opens (creating if needed) the database in `data_dir`, migrates it and
    /// starts the writer thread.
    pub fn open(data_dir: &Path, synchronous: Synchronous, read_connections: u32) -> Result<Store> {
        std::fs::create_dir_all(data_dir)?;
        let path = data_dir.join(DB_FILE);
        let mut conn = Connection::open(&path)?;
        // Automatic checkpoints are off before anything writes: on a
        // database a crash left with a long WAL, the next statement would
        // otherwise copy all of it into the database before the server
        // listens (hundreds of milliseconds after a kill under load).
        apply_pragmas(&conn, synchronous)?;
        let codec = Arc::new(codec::Codec::default());
        codec.register(&conn)?;
        // Takes effect on a new database only; see `reclaimable` below.
        conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL")?;
        let before: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let schema_version = migrations::migrate(&mut conn, data_dir)?;
        if before > 0 && before < 7 {
            // Traces stored before the rollups existed.
            let tx = conn.transaction()?;
            rollups::rebuild(&tx)?;
            tx.commit()?;
        }
        if before > 0 && before < 16 {
            // Traces stored before failures were classified and clustered.
            let tx = conn.transaction()?;
            failure_clusters::rebuild(&tx)?;
            tx.commit()?;
        }
        reclaimable(&conn)?;
        codec.load(&conn)?;
        let reader_codec = codec.clone();
        let manager = SqliteConnectionManager::file(&path)
            .with_flags(
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX
                    | rusqlite::OpenFlags::SQLITE_OPEN_URI,
            )
            .with_init(move |c| {
                apply_pragmas_reader(c)?;
                reader_codec.register(c)?;
                Ok(())
            });
        let readers = r2d2::Pool::builder()
            .max_size(read_connections)
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(10))
            .build(manager)?;
        let restart_wal = Arc::new(AtomicBool::new(false));
        let writer = Writer::start(conn, restart_wal.clone())?;
        // On a small disk the WAL starts over sooner, so that it does not
        // take the room the data needs.
        let tuning = Disk::of(data_dir).map_or_else(Default::default, |disk| {
            checkpoint::Tuning::default().within(disk.total)
        });
        let checkpointer = checkpoint::Checkpointer::start(&path, restart_wal, tuning)?;
        Ok(Store {
            writer,
            checkpointer,
            readers,
            read_permits: Arc::new(tokio::sync::Semaphore::new(read_connections as usize)),
            path,
            schema_version,
            changes: Default::default(),
            indexed: std::sync::atomic::AtomicU64::new(u64::MAX),
            cap: Default::default(),
            codec,
            term_counts: Default::default(),
        })
    }

    pub fn schema_version(&self) -> i64 {
        self.schema_version
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A number that changes whenever traces or spans are stored.
    pub fn stored_changes(&self) -> u64 {
        self.changes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether nothing was stored since the search index last caught up.
    pub(crate) fn index_current(&self) -> bool {
        self.indexed.load(std::sync::atomic::Ordering::Relaxed) == self.stored_changes()
    }

    pub(crate) fn note_indexed(&self, stored: u64) {
        self.indexed
            .store(stored, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn note_stored(&self) {
        self.changes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// WAL checkpoint passes the checkpoint thread has run.
    pub fn checkpoint_passes(&self) -> u64 {
        self.checkpointer.passes()
    }

    /// The writer's totals: groups committed, jobs run, commit time, queue depth.
    pub fn writer_stats(&self) -> WriterStats {
        self.writer.stats()
    }

    /// Runs `f` on a pooled read connection off the async runtime.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let permit = self
            .read_permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::ShuttingDown)?;
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let conn = pool.get()?;
            f(&conn)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// Gives the page caches of every idle connection back to the
    /// allocator (`PRAGMA shrink_memory`): what a burst of reads or writes
    /// filled them with, kept otherwise until the connection closes. Run
    /// when the server has been idle; the next queries read their first
    /// pages from the operating system's cache again.
    pub async fn release_memory(&self) -> Result<()> {
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let idle: Vec<_> = std::iter::from_fn(|| pool.try_get()).collect();
            for conn in &idle {
                conn.execute_batch("PRAGMA shrink_memory")?;
            }
            Ok::<_, StoreError>(())
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))??;
        self.write(|conn| Ok(conn.execute_batch("PRAGMA shrink_memory")?))
            .await
    }

    /// Runs `f` inside the writer's current transaction; resolves after commit.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> Result<T> + Send + 'static,
    {
        self.writer.submit(f).await
    }

    /// Runs an empty job through the writer: it is alive and can begin a
    /// transaction.
    pub async fn ping_writer(&self) -> Result<()> {
        self.write(|conn| {
            conn.query_row("SELECT 1", [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }

    /// Finishes queued writes, checkpoints the WAL and stops the writer.
    pub fn close(&self) {
        self.checkpointer.stop();
        self.writer.stop();
    }
}

/// Makes space freed by deletes returnable to the file system in small
/// steps (`PRAGMA incremental_vacuum`). A database created before this was
/// the default is rewritten once to switch it over.
fn reclaimable(conn: &Connection) -> Result<()> {
    let mode: i64 = conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?;
    if mode != 2 {
        tracing::info!("rewriting the database once so that deleted space can be reclaimed");
        conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;")?;
    }
    Ok(())
}

fn apply_pragmas_reader(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.execute_batch(&format!(
        "PRAGMA query_only = ON;
             PRAGMA temp_store = MEMORY;
             PRAGMA cache_size = -{READER_CACHE_KIB};"
    ))
}

/// Microseconds since the Unix epoch, the unit every stored time uses.
pub fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// A migrated database in a temporary directory, with foreign keys on and
/// tenant 1 owning project 1: the start of the store's SQL-level tests.
#[cfg(test)]
pub(crate) fn test_database() -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut conn = Connection::open(dir.path().join("test.db")).expect("open");
    conn.execute_batch("PRAGMA foreign_keys = ON")
        .expect("pragma");
    add_unpack(&conn);
    migrations::migrate(&mut conn, dir.path()).expect("migrate");
    add_test_tenant(&conn);
    (dir, conn)
}

/// A database at schema `version`, before the migrations after it, with
/// tenant 1 owning project 1: the start of the upgrade tests.
#[cfg(test)]
pub(crate) fn test_database_at(version: i64) -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().expect("tempdir");
    let conn = Connection::open(dir.path().join("old.db")).expect("open");
    conn.execute_batch("PRAGMA foreign_keys = ON")
        .expect("pragma");
    add_unpack(&conn);
    for (number, _, sql) in migrations::MIGRATIONS
        .iter()
        .filter(|(n, _, _)| *n <= version)
    {
        conn.execute_batch(sql).expect("old migration");
        conn.pragma_update(None, "user_version", number)
            .expect("version");
    }
    add_test_tenant(&conn);
    (dir, conn)
}

/// Gives a test's own connection `unpack`, with no dictionaries: what the
/// store's SQL needs to read texts stored as sent.
#[cfg(test)]
pub(crate) fn add_unpack(conn: &Connection) {
    Arc::new(codec::Codec::default())
        .register(conn)
        .expect("unpack");
}

/// Tenant 1 and its project 1, for tests.
#[cfg(test)]
pub(crate) fn add_test_tenant(conn: &Connection) {
    conn.execute_batch(
        "INSERT INTO tenants (id, uuid, name, created_at) VALUES (1, 't', 't', 0);
         INSERT INTO projects (id, uuid, tenant_id, name, slug, created_at)
         VALUES (1, 'p', 1, 'p', 'p', 0);",
    )
    .expect("tenant");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_keep_working_after_their_caches_are_released() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(dir.path(), Synchronous::Normal, 2).expect("open"));
        async fn count(store: &Store) -> i64 {
            store
                .read(|conn| Ok(conn.query_row("SELECT count(*) FROM tenants", [], |r| r.get(0))?))
                .await
                .expect("read")
        }
        let before = count(&store).await;
        store.release_memory().await.expect("released");
        store
            .write(|conn| {
                add_test_tenant(conn);
                Ok(())
            })
            .await
            .expect("write after release");
        assert_eq!(count(&store).await, before + 1);
        tokio::task::spawn_blocking(move || store.close())
            .await
            .expect("closed");
    }

    #[test]
    fn synchronous_follows_the_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (setting, expected) in [(Synchronous::Normal, 1), (Synchronous::Full, 2)] {
            let conn = Connection::open(dir.path().join("p.db")).expect("open");
            apply_pragmas(&conn, setting).expect("pragmas");
            let got: i64 = conn
                .query_row("PRAGMA synchronous", [], |r| r.get(0))
                .expect("read");
            assert_eq!(got, expected, "{setting:?}");
            let mode: String = conn
                .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .expect("read");
            assert_eq!(mode, "wal");
        }
    }
}
