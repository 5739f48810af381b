//! Background upkeep of the data: the search indexer, the tag- and
//! session-index merges, retention per project, the cap on the database's
//! size, and giving freed space back to the file system.
//!
//! The indexer adds newly stored traces and spans to the full-text index in
//! batches: a tenth of the time while ingest runs, flat out once it pauses,
//! so ingest keeps its pace under load and search catches up right after (a
//! search itself first indexes a short backlog).
//!
//! The index merger moves newly stored tags and sessions into their indexes
//! in large sorted batches (see `store::lookup` and `store::session_lookup`):
//! at once when ingest pauses, and while it runs once thousands of traces
//! wait or a few seconds have passed.
//!
//! Every `storage.purge_interval_s` (and once at start) each project loses
//! the traces older than its retention: its override, else its plan's
//! `max_retention_days`, else nothing is deleted. With a `storage.max_db_size`
//! every write that adds data is checked against the cap as it commits (see
//! `store::space`), and the size is looked at several times a second: with
//! `when_full = "purge_oldest"` the traces stored first are deleted from 90%
//! of the cap down to 80%. Deletes go in small batches through the writer,
//! so ingest commits between them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::config::{Config, Plan, WhenFull};
use crate::error::AppError;
use crate::logging::Throttle;
use crate::store::{now_micros, Disk, IndexBatch, MergePace, RetentionTarget, Store, StoreError};

/// Traces deleted per writer job.
pub const PURGE_BATCH: usize = 256;
/// Free pages given back per writer job (8 MiB of 4 KiB pages).
const RECLAIM_PAGES: u32 = 2048;
/// Pages of search-index merging per writer job.
const SEARCH_MERGE_PAGES: i32 = 256;
/// Merge steps after one purge, at most.
const MAX_MERGE_STEPS: usize = 4096;
/// How often the size is looked at when there is a cap.
const SPACE_TICK: Duration = Duration::from_millis(100);
const MICROS_PER_DAY: i64 = 86_400_000_000;
/// How often a failure that repeats at every attempt (a full disk) is logged.
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(10);
/// How long background writes wait after one failed for want of disk
/// space, rather than retrying at their usual pace.
const DISK_FULL_PAUSE: Duration = Duration::from_secs(1);

/// Whether there is room for more data: the database's cap and the disk
/// under it, as the routes that add data and `/ready` see them.
pub struct SpaceGauge {
    store: Arc<Store>,
}

/// Seconds a client refused at the cap is told to wait: with
/// `when_full = "purge_oldest"` room is made within a second or so;
/// otherwise only retention or an operator makes it.
pub fn cap_retry_after(when_full: WhenFull) -> u64 {
    match when_full {
        WhenFull::PurgeOldest => 5,
        WhenFull::Refuse => 60,
    }
}

impl SpaceGauge {
    pub fn new(store: Arc<Store>) -> SpaceGauge {
        SpaceGauge { store }
    }

    /// The data the database holds, in bytes, as last measured.
    pub fn used(&self) -> u64 {
        self.store.used_bytes()
    }

    /// Whether the database is at its cap.
    pub fn at_cap(&self) -> bool {
        self.store.at_size_limit()
    }

    /// The file system under the database, when it can be read.
    pub fn disk(&self) -> Option<Disk> {
        self.store.disk()
    }

    /// Refuses a write that would add data once the cap is reached or the
    /// disk is full. A write that passes may still be refused as it
    /// commits (its own size can take the database over).
    pub fn check(&self) -> Result<(), AppError> {
        if self.at_cap() {
            return Err(AppError::StorageFull {
                message: format!(
                    "the database holds {} bytes and has reached its cap of {} bytes \
                     (storage.max_db_size); nothing more is stored until retention or an \
                     operator frees space",
                    self.used(),
                    self.store.size_limit()
                ),
                retry_after: self.store.size_retry_after(),
            });
        }
        if let Some(disk) = self.disk().filter(Disk::is_full) {
            return Err(AppError::StorageFull {
                message: format!(
                    "the disk holding the database has {} bytes free, less than the {} bytes \
                     kept for checkpoints and deletes; nothing more is stored until space is \
                     freed on it",
                    disk.free,
                    disk.reserve()
                ),
                retry_after: crate::error::DISK_FULL_RETRY_AFTER_S,
            });
        }
        Ok(())
    }
}

/// The retention of a project in days, if it has one.
pub fn retention_days(config: &Config, target: &RetentionTarget) -> Option<i64> {
    if let Some(days) = target.override_days.filter(|d| *d > 0) {
        return Some(days);
    }
    let plan = Plan::parse(&target.plan).unwrap_or(Plan::Enterprise);
    let days = config.plans.limits(plan).max_retention_days;
    (days > 0).then_some(i64::from(days))
}

/// An indexing batch while ingest runs: about a millisecond of writer
/// time, so the requests that queue behind it hardly notice. (Batches of
/// 1,024 spans took 12-24 ms, and every request in flight waited as long.)
const BUSY_BATCH: IndexBatch = IndexBatch { traces: 16 };
/// An indexing batch once ingest pauses.
const IDLE_BATCH: IndexBatch = IndexBatch { traces: 256 };
/// The shortest pause between two batches while ingest runs.
const BUSY_PAUSE: Duration = Duration::from_millis(10);
/// How often the indexer looks for work when idle.
const INDEX_TICK: Duration = Duration::from_millis(50);
/// How long nothing must be stored before the writer's cache is released.
const RELEASE_AFTER: Duration = Duration::from_secs(5);
/// Ingest counts as running for this long after its last write.
pub(crate) const INGEST_ACTIVE: Duration = Duration::from_secs(1);

/// Starts the search indexer; abort the handle to stop it.
pub fn spawn_indexer(store: Arc<Store>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let failures = Throttle::new(FAILURE_LOG_EVERY);
        let mut seen = u64::MAX;
        let mut previous = store.stored_changes();
        let mut last_store = Instant::now();
        let mut released = false;
        loop {
            let stored = store.stored_changes();
            if stored != previous {
                previous = stored;
                last_store = Instant::now();
                released = false;
            }
            let busy = last_store.elapsed() < INGEST_ACTIVE;
            if stored != seen && disk_full(&store) {
                tokio::time::sleep(DISK_FULL_PAUSE).await;
                continue;
            }
            if stored != seen {
                let started = Instant::now();
                let batch = if busy { BUSY_BATCH } else { IDLE_BATCH };
                match store.index_search(batch).await {
                    Ok(n) if n > 0 => {
                        // While ingest runs, index a tenth of the time; once
                        // it pauses, catch up at full speed.
                        if busy {
                            tokio::time::sleep((started.elapsed() * 9).max(BUSY_PAUSE)).await;
                        } else {
                            tokio::task::yield_now().await;
                        }
                        continue;
                    }
                    Ok(_) => seen = stored,
                    Err(e) => report(&failures, &e, "indexing for search").await,
                }
            } else if !released && last_store.elapsed() >= RELEASE_AFTER {
                // Nothing stored for a while and the index is current: the
                // writer's page cache goes back to the system.
                released = true;
                if let Err(e) = store.release_write_memory().await {
                    tracing::warn!(error = %e, "releasing the writer's cache");
                }
            }
            tokio::time::sleep(INDEX_TICK).await;
        }
    })
}

/// How often the trainer looks for an organisation due a compression
/// dictionary (see `store::codec`).
const TRAIN_TICK: Duration = Duration::from_secs(1);

/// Starts the trainer of compression dictionaries; abort the handle to stop
/// it. It looks only when something was stored since it last looked.
pub fn spawn_dictionary_trainer(store: Arc<Store>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let failures = Throttle::new(FAILURE_LOG_EVERY);
        let mut seen = u64::MAX;
        loop {
            let stored = store.stored_changes();
            if stored != seen && !disk_full(&store) {
                match store.train_dictionaries().await {
                    Ok(_) => seen = stored,
                    Err(e) => report(&failures, &e, "training compression dictionaries").await,
                }
            }
            tokio::time::sleep(TRAIN_TICK).await;
        }
    })
}

/// While ingest runs, the tag and session indexes wait for this many traces
/// before a merge: the larger the batch, the more entries share each page
/// written.
const MERGE_MIN: i64 = 8 * 1024;
/// A smaller backlog is merged anyway once it has waited this long.
const MERGE_EVERY: Duration = Duration::from_secs(5);
/// A backlog over this (two merges' worth) means the merger has fallen
/// behind ingest: it then merges at `MergePace::CatchUp` until it is not.
const MERGE_BEHIND: i64 = 32 * 1024;
/// How often the index merger looks at the backlog.
const MERGE_TICK: Duration = Duration::from_millis(250);

/// Starts merging stored tags and sessions into their indexes (see
/// `store::lookup` and `store::session_lookup`); abort the handle to stop it.
/// How long without a request before the database connections' page
/// caches are given back, and how often that is looked at.
const IDLE_BEFORE_RELEASE: Duration = Duration::from_secs(20);
const RELEASE_TICK: Duration = Duration::from_secs(5);

/// Gives the connections' page caches back once requests have stopped for
/// a while, once per quiet spell: after a burst of large reads or writes
/// they hold up to 64 MiB that an idle server does not need.
pub fn spawn_memory_release(
    store: Arc<Store>,
    metrics: Arc<crate::http::telemetry::ServerMetrics>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut released = false;
        loop {
            tokio::time::sleep(RELEASE_TICK).await;
            let idle = metrics.idle_for();
            if idle < IDLE_BEFORE_RELEASE {
                released = false;
            } else if !released {
                released = true;
                if let Err(e) = store.release_memory().await {
                    tracing::debug!(error = %e, "releasing the page caches");
                }
            }
        }
    })
}

pub fn spawn_index_merger(store: Arc<Store>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut previous = store.stored_changes();
        let mut last_store = Instant::now();
        let mut last_merge = Instant::now();
        // The store's change count when the indexes were last seen current:
        // until something is stored, there is nothing to look at.
        let mut current_at = None;
        let failures = Throttle::new(FAILURE_LOG_EVERY);
        loop {
            tokio::time::sleep(MERGE_TICK).await;
            let stored = store.stored_changes();
            if stored != previous {
                previous = stored;
                last_store = Instant::now();
            }
            if current_at == Some(stored) || disk_full(&store) {
                continue;
            }
            let backlog = match store.index_backlog().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the indexes' backlog");
                    continue;
                }
            };
            if backlog == 0 {
                current_at = Some(stored);
                continue;
            }
            let busy = last_store.elapsed() < INGEST_ACTIVE;
            if busy && backlog < MERGE_MIN && last_merge.elapsed() < MERGE_EVERY {
                continue;
            }
            last_merge = Instant::now();
            let pace = if backlog > MERGE_BEHIND {
                MergePace::CatchUp
            } else {
                MergePace::Steady
            };
            match store.merge_indexes(pace).await {
                Ok((tags, sessions)) => tracing::debug!(
                    tags,
                    sessions,
                    backlog,
                    ?pace,
                    elapsed_ms = last_merge.elapsed().as_secs_f64() * 1000.0,
                    "merged tags and sessions into their indexes"
                ),
                Err(e) => report(&failures, &e, "merging the tag and session indexes").await,
            }
        }
    })
}

/// Whether the disk is so nearly full that indexing waits, as ingest
/// does, leaving the reserve to checkpoints and deletes (see
/// `Disk::reserve`); what waits is indexed once space returns.
fn disk_full(store: &Store) -> bool {
    store.disk().is_some_and(|d| d.is_full())
}

/// Logs a background write's failure, at most every few seconds: on a full
/// disk every attempt fails until space returns, and then the task also
/// waits a little before its next.
async fn report(failures: &Throttle, error: &StoreError, what: &str) {
    if let Some(held) = failures.pass() {
        tracing::warn!(%error, failures_since_last_report = held, "{what}");
    }
    if matches!(error, StoreError::DiskFull(_)) {
        tokio::time::sleep(DISK_FULL_PAUSE).await;
    }
}

/// Starts the upkeep task; abort the handle to stop it.
pub fn spawn(store: Arc<Store>, config: Arc<Config>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let interval = Duration::from_secs(config.storage.purge_interval_s);
        let mut next_pass = Instant::now();
        // On a full disk the deletes fail too, at every tick.
        let failures = Throttle::new(FAILURE_LOG_EVERY);
        let capped = store.size_limit() > 0;
        loop {
            if capped {
                if let Err(e) = keep_under_cap(&store, &config).await {
                    report(&failures, &e, "keeping the database under its cap").await;
                }
            }
            if Instant::now() >= next_pass {
                match retention_pass(&store, &config).await {
                    Ok(0) => {}
                    Ok(_) => {
                        if let Err(e) = give_back(&store, SEARCH_MERGE_PAGES).await {
                            tracing::warn!(error = %e, "reclaiming free space");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "retention pass"),
                }
                next_pass = Instant::now() + interval;
            }
            let wait = if capped {
                SPACE_TICK
            } else {
                next_pass.saturating_duration_since(Instant::now())
            };
            tokio::time::sleep(wait).await;
        }
    })
}

/// Deletes every trace past its project's retention; returns how many.
async fn retention_pass(store: &Store, config: &Config) -> crate::store::Result<usize> {
    let mut total = 0;
    for target in store.retention_targets().await? {
        let Some(days) = retention_days(config, &target) else {
            continue;
        };
        let cutoff = now_micros().saturating_sub(days.saturating_mul(MICROS_PER_DAY));
        let mut deleted = 0;
        loop {
            let n = store.purge_expired(&target, cutoff, PURGE_BATCH).await?;
            deleted += n;
            if n < PURGE_BATCH {
                break;
            }
            tokio::task::yield_now().await;
        }
        if deleted > 0 {
            tracing::info!(
                project_id = target.project_id,
                retention_days = days,
                deleted,
                "deleted traces past their retention"
            );
        }
        total += deleted;
    }
    Ok(total)
}

/// Measures the data held and, when told to, deletes the oldest traces
/// while the database is above 90% of its cap, down to 80%. Each round
/// deletes the share of traces that should free the excess, then merges
/// the search index so that its part of the space is free too, then
/// measures again; a round that frees nothing ends it, so a measurement
/// that does not move cannot empty the database.
async fn keep_under_cap(store: &Store, config: &Config) -> crate::store::Result<()> {
    let cap = store.size_limit();
    let mut used = store.space().await?.used_bytes;
    if config.storage.when_full != WhenFull::PurgeOldest || used < cap / 10 * 9 {
        return Ok(());
    }
    let low = cap / 10 * 8;
    let mut deleted = 0;
    while used > low {
        let traces = store.trace_count().await?;
        if traces == 0 {
            break;
        }
        let share = (traces as u128 * u128::from(used - low)).div_ceil(u128::from(used));
        let mut left = share as usize;
        while left > 0 {
            let n = store.purge_oldest(left.min(PURGE_BATCH)).await?;
            deleted += n;
            left = if n == 0 { 0 } else { left.saturating_sub(n) };
        }
        give_back(store, -SEARCH_MERGE_PAGES).await?;
        let now = store.space().await?.used_bytes;
        if now >= used {
            tracing::warn!(
                used_bytes = now,
                "deleting the oldest traces freed no space; stopping this round"
            );
            break;
        }
        used = now;
    }
    tracing::info!(
        deleted,
        used_bytes = used,
        cap_bytes = cap,
        "deleted the oldest traces to stay under storage.max_db_size"
    );
    Ok(())
}

/// After deletes: merges the search index (`merge_pages` per step; negative
/// merges across all its levels, which frees every deleted entry's space,
/// positive only where segments pile up) and returns free pages to the file
/// system, a few megabytes per writer job.
async fn give_back(store: &Store, merge_pages: i32) -> crate::store::Result<()> {
    let mut steps = 0;
    while store.merge_search_index(merge_pages).await? && steps < MAX_MERGE_STEPS {
        steps += 1;
        tokio::task::yield_now().await;
    }
    while store.reclaim(RECLAIM_PAGES).await? > 0 {
        tokio::task::yield_now().await;
    }
    Ok(())
}
