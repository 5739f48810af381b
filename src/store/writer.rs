//! The single writer. One thread owns the write connection and drains a
//! bounded queue: the jobs found waiting run inside one transaction, and
//! every job's caller is answered only after the shared COMMIT. While one
//! group runs, the next gathers in the queue, so under load the commit cost
//! is spread over many requests (group commit). A group takes jobs until it
//! has run for `GROUP_BUDGET`: the first callers of a large group would
//! otherwise wait for all the others, and the WAL tail a restart must copy
//! (see `checkpoint`) is one group.
//!
//! A failing job must roll back alone. Savepoints would give that, but each
//! one copies every page it touches into a sub-journal, about a fifth of the
//! writer's time under ingest load. So a group first runs without them; only
//! if one of its jobs fails is the transaction rolled back and the group run
//! again with a savepoint per job. Jobs are therefore `FnMut`: a job may run
//! twice, and only its last run's writes are committed.
//!
//! A full disk (or an I/O error) can end the whole transaction rather than
//! the failing statement; then what the jobs before it wrote is gone too,
//! and every job of the group is answered with the failure: nothing is
//! acknowledged that was not committed. The writer goes on with the next
//! group, so writing resumes as soon as space returns.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::{Result, StoreError};
use crate::logging::Throttle;

/// How many jobs wait before callers feel back-pressure.
const QUEUE_CAPACITY: usize = 1024;
/// The most jobs committed in one transaction.
const MAX_GROUP: usize = 256;
/// A group stops taking jobs once it has run this long. In WAL mode a commit
/// costs little beyond writing the pages, so short groups lose almost no
/// throughput and answer sooner.
const GROUP_BUDGET: Duration = Duration::from_millis(10);

/// One caller's writes, type-erased so jobs of any result type share a queue.
trait WriteJob: Send {
    /// Runs the statements and keeps the outcome; says whether they succeeded.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller: the kept outcome, unless the commit failed.
    fn finish(self: Box<Self>, commit_error: Option<&StoreError>);
    /// Answers the caller without running anything.
    fn abort(self: Box<Self>, error: StoreError);
    /// The error of its last run, if it failed.
    fn failure(&self) -> Option<&StoreError>;
}

type Job = Box<dyn WriteJob>;

/// The caller gets its closure back with the answer, so whatever the closure
/// owns (a request's traces) is freed on the caller's thread, not the writer's.
type Reply<F, T> = oneshot::Sender<(Result<T>, F)>;

struct Pending<F, T> {
    work: F,
    outcome: Option<Result<T>>,
    reply: Reply<F, T>,
}

impl<F, T> WriteJob for Pending<F, T>
where
    T: Send + 'static,
    F: FnMut(&Connection) -> Result<T> + Send + 'static,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let outcome = (self.work)(conn).map_err(|e| match e {
            StoreError::Sqlite(e) => classify(e, conn),
            other => other,
        });
        let ok = outcome.is_ok();
        self.outcome = Some(outcome);
        ok
    }

    fn failure(&self) -> Option<&StoreError> {
        self.outcome.as_ref().and_then(|o| o.as_ref().err())
    }

    fn finish(self: Box<Self>, commit_error: Option<&StoreError>) {
        let Pending {
            work,
            outcome,
            reply,
        } = *self;
        let outcome = outcome.unwrap_or(Err(StoreError::ShuttingDown));
        let answer = match (commit_error, outcome) {
            (None, outcome) => outcome,
            (Some(e), Ok(_)) => Err(e.again()),
            (Some(_), Err(e)) => Err(e),
        };
        // The caller may have gone away; its data is committed anyway.
        let _ = reply.send((answer, work));
    }

    fn abort(self: Box<Self>, error: StoreError) {
        let _ = self.reply.send((Err(error), self.work));
    }
}

enum Message {
    Job(Job),
    Stop,
}

pub(super) struct Writer {
    queue: mpsc::Sender<Message>,
    thread: Mutex<Option<JoinHandle<()>>>,
    stats: Arc<Counters>,
}

/// Upper bounds of the commit-time buckets, in microseconds.
pub const COMMIT_MICROS_BOUNDS: [u64; 11] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
];
/// Upper bounds of the group-size buckets, in jobs.
pub const GROUP_JOBS_BOUNDS: [u64; 8] = [1, 2, 4, 8, 16, 32, 64, 128];

/// Running totals of the writer's work.
#[derive(Default)]
struct Counters {
    groups: AtomicU64,
    retried_groups: AtomicU64,
    jobs: AtomicU64,
    commit_micros: AtomicU64,
    /// Commits per time bucket; the last counts those above every bound.
    commit_buckets: [AtomicU64; COMMIT_MICROS_BOUNDS.len() + 1],
    /// Groups per size bucket; the last counts those above every bound.
    group_buckets: [AtomicU64; GROUP_JOBS_BOUNDS.len() + 1],
    /// Set when a write fails for want of disk space, cleared when one
    /// that changed something commits.
    disk_full: AtomicBool,
    /// The free bytes on the disk when a write last failed for want of it.
    free_when_full: AtomicU64,
    /// The database's size in bytes as of the last commit that changed
    /// something, WAL included: what the file will hold once checkpointed.
    db_bytes: AtomicU64,
}

/// The bucket of `value` among `bounds` (the last if above them all).
fn bucket(bounds: &[u64], value: u64) -> usize {
    bounds
        .iter()
        .position(|b| value <= *b)
        .unwrap_or(bounds.len())
}

fn snapshot<const N: usize>(buckets: &[AtomicU64; N]) -> [u64; N] {
    std::array::from_fn(|i| buckets[i].load(Ordering::Relaxed))
}

/// A snapshot of the writer's totals since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterStats {
    /// Transactions committed (or attempted).
    pub groups: u64,
    /// Groups run a second time, with savepoints, because a job failed.
    pub retried_groups: u64,
    /// Requests' jobs run inside them.
    pub jobs: u64,
    /// Time spent in COMMIT, in microseconds.
    pub commit_micros: u64,
    /// Jobs waiting for the writer right now.
    pub queued: u64,
    /// Commits per bucket of [`COMMIT_MICROS_BOUNDS`] (then above them all).
    pub commit_buckets: [u64; COMMIT_MICROS_BOUNDS.len() + 1],
    /// Groups per bucket of [`GROUP_JOBS_BOUNDS`] (then above them all).
    pub group_buckets: [u64; GROUP_JOBS_BOUNDS.len() + 1],
}

impl Writer {
    /// Starts the writer thread; when `restart_wal` is set it restarts the
    /// WAL between two groups (see `checkpoint`).
    pub(super) fn start(conn: Connection, restart_wal: Arc<AtomicBool>) -> Result<Writer> {
        Writer::start_with_budget(conn, restart_wal, GROUP_BUDGET)
    }

    /// Like `start`, with groups that take jobs for `budget`.
    fn start_with_budget(
        conn: Connection,
        restart_wal: Arc<AtomicBool>,
        budget: Duration,
    ) -> Result<Writer> {
        let (queue, rx) = mpsc::channel(QUEUE_CAPACITY);
        let stats = Arc::new(Counters::default());
        let counters = stats.clone();
        let thread = std::thread::Builder::new()
            .name("trulayer-writer".into())
            .spawn(move || run(conn, rx, &counters, &restart_wal, budget))?;
        Ok(Writer {
            queue,
            thread: Mutex::new(Some(thread)),
            stats,
        })
    }

    /// The free bytes on the disk when the last write that failed or
    /// changed anything failed for want of space; `None` if it did not.
    pub(super) fn full_at(&self) -> Option<u64> {
        self.stats
            .disk_full
            .load(Ordering::Relaxed)
            .then(|| self.stats.free_when_full.load(Ordering::Relaxed))
    }

    /// The database's size in bytes as of the last commit, its pages in
    /// the WAL included.
    pub(super) fn db_bytes(&self) -> u64 {
        self.stats.db_bytes.load(Ordering::Relaxed)
    }

    pub(super) fn stats(&self) -> WriterStats {
        WriterStats {
            groups: self.stats.groups.load(Ordering::Relaxed),
            retried_groups: self.stats.retried_groups.load(Ordering::Relaxed),
            jobs: self.stats.jobs.load(Ordering::Relaxed),
            commit_micros: self.stats.commit_micros.load(Ordering::Relaxed),
            queued: (QUEUE_CAPACITY - self.queue.capacity()) as u64,
            commit_buckets: snapshot(&self.stats.commit_buckets),
            group_buckets: snapshot(&self.stats.group_buckets),
        }
    }

    pub(super) async fn submit<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> Result<T> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job: Job = Box::new(Pending {
            work: f,
            outcome: None,
            reply,
        });
        self.queue
            .send(Message::Job(job))
            .await
            .map_err(|_| StoreError::ShuttingDown)?;
        let (answer, work) = rx.await.map_err(|_| StoreError::ShuttingDown)?;
        drop(work);
        answer
    }

    /// Lets queued jobs finish, checkpoints, and joins the thread.
    pub(super) fn stop(&self) {
        let handle = match self.thread.lock() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(handle) = handle {
            // A full queue drains by itself; the Stop message waits its turn.
            let _ = self.queue.blocking_send(Message::Stop);
            let _ = handle.join();
        }
    }
}

fn run(
    conn: Connection,
    mut rx: mpsc::Receiver<Message>,
    stats: &Counters,
    restart_wal: &AtomicBool,
    budget: Duration,
) {
    // True between a restart and the next group, whose first write is what
    // starts the WAL over.
    let mut restarted = false;
    while let Some(Message::Job(first)) = rx.blocking_recv() {
        let stop = run_group(&conn, first, &mut rx, stats, budget);
        // The flag is cleared only once the WAL has started over, so the
        // checkpoint thread stays out of the way until then (and does not
        // take the old WAL's length for a new request to restart).
        if restarted {
            restarted = false;
            restart_wal.store(false, Ordering::Relaxed);
        } else if restart_wal.load(Ordering::Relaxed) {
            restarted = super::checkpoint::restart_wal(&conn);
        }
        if stop {
            break;
        }
    }
    // Answer anything that raced with Stop, then leave a compact WAL behind.
    rx.close();
    while let Ok(message) = rx.try_recv() {
        if let Message::Job(job) = message {
            run_group(&conn, job, &mut rx, stats, budget);
        }
    }
    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
        tracing::warn!(error = %e, "WAL checkpoint at shutdown failed");
    }
    tracing::debug!("writer stopped");
}

/// Runs `first` and the jobs waiting behind it, until the group's budget is
/// spent, in one transaction, and commits. True if the queue said Stop.
fn run_group(
    conn: &Connection,
    mut first: Job,
    rx: &mut mpsc::Receiver<Message>,
    stats: &Counters,
    budget: Duration,
) -> bool {
    let started = Instant::now();
    let changes_before = conn.total_changes();
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let error = classify(e, conn);
        log_failure(&error, 1, "cannot begin a write transaction");
        first.abort(error.again());
        return false;
    }
    let mut all_ok = first.run(conn);
    let mut group = vec![first];
    let mut stop = false;
    while all_ok && group.len() < MAX_GROUP && started.elapsed() < budget {
        match rx.try_recv() {
            Ok(Message::Job(mut job)) => {
                all_ok = job.run(conn);
                group.push(job);
            }
            Ok(Message::Stop) => {
                stop = true;
                break;
            }
            Err(_) => break,
        }
    }
    stats.groups.fetch_add(1, Ordering::Relaxed);
    stats.jobs.fetch_add(group.len() as u64, Ordering::Relaxed);
    stats.group_buckets[bucket(&GROUP_JOBS_BOUNDS, group.len() as u64)]
        .fetch_add(1, Ordering::Relaxed);
    if !all_ok {
        if let Some(failure) = group.last().and_then(|job| job.failure()) {
            note_failure(failure, conn, stats);
        }
        if conn.is_autocommit() {
            fail_group(conn, group, stats);
            return stop;
        }
        // Undo the whole attempt and run every job again, each alone.
        stats.retried_groups.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = conn.execute_batch("ROLLBACK; BEGIN IMMEDIATE") {
            let error = classify(e, conn);
            log_failure(&error, group.len(), "cannot restart a write transaction");
            let _ = conn.execute_batch("ROLLBACK");
            for job in group {
                job.finish(Some(&error));
            }
            return stop;
        }
        group = match run_each_in_savepoint(conn, group) {
            Ok(ran) => ran,
            Err(group) => {
                fail_group(conn, group, stats);
                return stop;
            }
        };
    }
    commit(conn, group, stats, changes_before);
    stop
}

/// Answers every job of a group whose transaction a failure ended (the
/// last job run is the one that failed): none of their writes are stored.
fn fail_group(conn: &Connection, group: Vec<Job>, stats: &Counters) {
    let cause = group
        .iter()
        .rev()
        .find_map(|job| job.failure())
        .map_or_else(
            || StoreError::Commit("the transaction was rolled back".into()),
            StoreError::again,
        );
    note_failure(&cause, conn, stats);
    log_failure(&cause, group.len(), "a failed write rolled back its group");
    for job in group {
        job.finish(Some(&cause));
    }
}

/// Remembers a failure for want of disk space, with the free space then.
fn note_failure(error: &StoreError, conn: &Connection, stats: &Counters) {
    if matches!(error, StoreError::DiskFull(_)) {
        let free = database_dir(conn)
            .and_then(|dir| super::space::Disk::of(&dir))
            .map_or(0, |d| d.free);
        stats.free_when_full.store(free, Ordering::Relaxed);
        stats.disk_full.store(true, Ordering::Relaxed);
    }
}

/// Logs a failure of the writer's own statements. A full disk fails every
/// write until space returns, so it is logged at most every few seconds.
fn log_failure(error: &StoreError, jobs: usize, what: &str) {
    static FULL: Throttle = Throttle::new(super::checkpoint::FAILURE_LOG_EVERY);
    match error {
        StoreError::DiskFull(_) => {
            if let Some(held) = FULL.pass() {
                tracing::warn!(%error, jobs, failures_since_last_report = held, "{what}");
            }
        }
        _ => tracing::error!(%error, jobs, "{what}"),
    }
}

/// A failed statement's error, as [`StoreError::DiskFull`] when the disk
/// had no room for it.
fn classify(e: rusqlite::Error, conn: &Connection) -> StoreError {
    super::space::classify(e, database_dir(conn).as_deref())
}

fn database_dir(conn: &Connection) -> Option<std::path::PathBuf> {
    let path = std::path::Path::new(conn.path()?);
    Some(path.parent()?.to_path_buf())
}

fn commit(conn: &Connection, group: Vec<Job>, stats: &Counters, changes_before: u64) {
    let started = Instant::now();
    let committed = conn.execute_batch("COMMIT");
    let micros = started.elapsed().as_micros() as u64;
    stats.commit_micros.fetch_add(micros, Ordering::Relaxed);
    stats.commit_buckets[bucket(&COMMIT_MICROS_BOUNDS, micros)].fetch_add(1, Ordering::Relaxed);
    match committed {
        Ok(()) => {
            tracing::trace!(jobs = group.len(), commit_us = micros, "group committed");
            if conn.total_changes() != changes_before {
                stats.disk_full.store(false, Ordering::Relaxed);
                if let Ok(bytes) = database_bytes(conn) {
                    stats.db_bytes.store(bytes, Ordering::Relaxed);
                }
            }
            for job in group {
                job.finish(None);
            }
        }
        Err(e) => {
            let error = match classify(e, conn) {
                StoreError::Sqlite(e) => StoreError::Commit(e.to_string()),
                full => full,
            };
            note_failure(&error, conn, stats);
            log_failure(&error, group.len(), "group commit failed");
            let _ = conn.execute_batch("ROLLBACK");
            for job in group {
                job.finish(Some(&error));
            }
        }
    }
}

/// The database's size in pages, as this connection sees it, in bytes.
fn database_bytes(conn: &Connection) -> rusqlite::Result<u64> {
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let page: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    Ok((pages.max(0) as u64).saturating_mul(page.max(0) as u64))
}

/// Runs each job in its own savepoint, so a failing job leaves no writes;
/// returns the jobs that ran (the others have been answered), or, if a
/// failure ended the transaction, every job, the one that failed last.
fn run_each_in_savepoint(
    conn: &Connection,
    group: Vec<Job>,
) -> std::result::Result<Vec<Job>, Vec<Job>> {
    let mut ran = Vec::with_capacity(group.len());
    let mut waiting = group.into_iter();
    while let Some(mut job) = waiting.next() {
        if let Err(e) = conn.execute_batch("SAVEPOINT job") {
            job.abort(classify(e, conn));
            continue;
        }
        let ok = job.run(conn);
        if !ok && conn.is_autocommit() {
            // Jobs not run yet go first: the last is the one that failed.
            let mut lost: Vec<Job> = waiting.collect();
            lost.extend(ran);
            lost.push(job);
            return Err(lost);
        }
        let end = if ok {
            "RELEASE job"
        } else {
            "ROLLBACK TO job; RELEASE job"
        };
        if let Err(e) = conn.execute_batch(end) {
            tracing::error!(error = %e, "savepoint end failed");
        }
        ran.push(job);
    }
    Ok(ran)
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc as std_mpsc;
    use std::time::Duration;

    use super::*;

    fn open() -> (tempfile::TempDir, Arc<Writer>, std::path::PathBuf) {
        open_with_budget(GROUP_BUDGET)
    }

    fn open_with_budget(budget: Duration) -> (tempfile::TempDir, Arc<Writer>, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("w.db");
        let conn = Connection::open(&path).expect("open");
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x INTEGER UNIQUE);")
            .expect("schema");
        let writer = Writer::start_with_budget(conn, Arc::new(AtomicBool::new(false)), budget)
            .expect("writer");
        (dir, Arc::new(writer), path)
    }

    fn rows(path: &std::path::Path) -> i64 {
        Connection::open(path)
            .expect("open")
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("count")
    }

    async fn stop(writer: &Arc<Writer>) {
        let w = writer.clone();
        tokio::task::spawn_blocking(move || w.stop())
            .await
            .expect("stop");
    }

    async fn wait_until(mut f: impl FnMut() -> bool) {
        for _ in 0..2000 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("condition not reached in 10 s");
    }

    /// Holds the writer inside a job until the returned sender is dropped.
    async fn block_writer(
        writer: &Arc<Writer>,
    ) -> (std_mpsc::Sender<()>, tokio::task::JoinHandle<Result<()>>) {
        let (release_tx, release_rx) = std_mpsc::channel::<()>();
        let (started_tx, started_rx) = oneshot::channel::<()>();
        let w = writer.clone();
        let blocked = tokio::spawn(async move {
            let mut started_tx = Some(started_tx);
            w.submit(move |c| {
                c.execute("INSERT INTO t VALUES (0)", [])?;
                if let Some(started) = started_tx.take() {
                    let _ = started.send(());
                }
                let _ = release_rx.recv();
                Ok(())
            })
            .await
        });
        started_rx.await.expect("job started");
        (release_tx, blocked)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiting_jobs_commit_together_and_a_failing_one_fails_alone() {
        // No time budget: on a slow machine ten debug-built inserts and the
        // group's rerun may take longer than the real one, which would end
        // the group early; what this test asserts is the grouping.
        let (_dir, writer, path) = open_with_budget(Duration::from_secs(3600));
        let (release, blocked) = block_writer(&writer).await;
        let mut jobs = Vec::new();
        for i in 1..=10 {
            let w = writer.clone();
            jobs.push(tokio::spawn(async move {
                w.submit(move |c| {
                    // Job 5 breaks the unique constraint: only it must fail.
                    let x = if i == 5 { 0 } else { i };
                    c.execute("INSERT INTO t VALUES (?1)", [x])?;
                    Ok(i)
                })
                .await
            }));
        }
        wait_until(|| writer.stats().queued == 10).await;
        drop(release);
        blocked.await.expect("task").expect("first job commits");
        let mut failed = Vec::new();
        for job in jobs {
            if let Err(e) = job.await.expect("task") {
                failed.push(e.to_string());
            }
        }
        assert_eq!(failed.len(), 1, "{failed:?}");
        let stats = writer.stats();
        assert_eq!(stats.jobs, 11);
        assert_eq!(stats.groups, 2, "ten waiting jobs shared one commit");
        assert_eq!(
            stats.retried_groups, 1,
            "the failure made the group run again"
        );
        let count = rows(&path);
        assert_eq!(count, 10);
        stop(&writer).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failure_that_ends_the_transaction_fails_its_whole_group() {
        // What SQLite may do on a full disk: the failing statement rolls
        // the whole transaction back. Job 5 fails alone, so the group runs
        // again with savepoints; in that run job 2 ends the transaction.
        let (_dir, writer, path) = open_with_budget(Duration::from_secs(3600));
        let (release, blocked) = block_writer(&writer).await;
        let mut jobs = Vec::new();
        for i in 1..=5 {
            let w = writer.clone();
            let mut runs = 0;
            jobs.push(tokio::spawn(async move {
                w.submit(move |c| {
                    runs += 1;
                    if i == 2 && runs == 2 {
                        c.execute_batch("ROLLBACK")?;
                        return Err(StoreError::DiskFull("database or disk is full".into()));
                    }
                    let x = if i == 5 { 0 } else { i };
                    c.execute("INSERT INTO t VALUES (?1)", [x])?;
                    Ok(i)
                })
                .await
            }));
            // One at a time, so they queue in order.
            wait_until(|| writer.stats().queued == i as u64).await;
        }
        drop(release);
        // The blocking job and the five share one group, whatever the
        // machine's load (the group's budget is long).
        let mut answers = vec![blocked.await.expect("task").map(|()| 0)];
        for job in jobs {
            answers.push(job.await.expect("task"));
        }
        assert!(
            answers.iter().all(Result::is_err),
            "a job was acknowledged though its transaction was lost: {answers:?}"
        );
        let full = answers
            .iter()
            .filter(|a| matches!(a, Err(StoreError::DiskFull(_))))
            .count();
        assert_eq!(full, 5, "all but the constraint failure: {answers:?}");
        assert_eq!(rows(&path), 0, "nothing of the group is stored");
        assert!(writer.full_at().is_some());
        // The writer goes on, and a write that succeeds clears the flag.
        writer
            .submit(|c| Ok(c.execute("INSERT INTO t VALUES (42)", [])?))
            .await
            .expect("a later write commits");
        assert!(writer.full_at().is_none());
        assert_eq!(rows(&path), 1);
        stop(&writer).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readers_do_not_wait_for_an_open_write() {
        let (_dir, writer, path) = open();
        let (release, blocked) = block_writer(&writer).await;
        // The writer holds an open transaction; a reader sees the last commit at once.
        let count: i64 = tokio::task::spawn_blocking(move || {
            let conn = Connection::open(&path).expect("open");
            conn.busy_timeout(Duration::from_millis(0))
                .expect("timeout");
            conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                .expect("read")
        })
        .await
        .expect("reader");
        assert_eq!(count, 0);
        drop(release);
        blocked.await.expect("task").expect("commit");
        stop(&writer).await;
    }

    /// Checkpoint settings for the tests: passes every 5 ms, restarts only
    /// when a test says, and no idle truncation.
    fn quick_tuning() -> super::super::checkpoint::Tuning {
        super::super::checkpoint::Tuning {
            interval: Duration::from_millis(5),
            restart_frames: 256,
            force_frames: 2048,
            restart_every: Duration::from_secs(3600),
            restart_lag: Duration::from_millis(5),
            catch_up_passes: 2,
            idle_truncate: Duration::from_secs(3600),
        }
    }

    /// A writer and a checkpoint thread on a fresh WAL database of one
    /// table; the WAL file's path.
    fn with_checkpoints(
        tuning: super::super::checkpoint::Tuning,
    ) -> (
        tempfile::TempDir,
        Arc<Writer>,
        super::super::checkpoint::Checkpointer,
        std::path::PathBuf,
    ) {
        use super::super::checkpoint::Checkpointer;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("w.db");
        let conn = Connection::open(&path).expect("open");
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;
             PRAGMA journal_size_limit = 1048576; CREATE TABLE t (b BLOB);",
        )
        .expect("schema");
        let restart = Arc::new(AtomicBool::new(false));
        let writer = Arc::new(Writer::start(conn, restart.clone()).expect("writer"));
        let checkpointer = Checkpointer::start(&path, restart, tuning).expect("checkpointer");
        let wal = dir.path().join("w.db-wal");
        (dir, writer, checkpointer, wal)
    }

    fn wal_len(wal: &std::path::Path) -> u64 {
        std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0)
    }

    /// `writers` tasks each write `jobs` rows of 8 KiB; returns the largest
    /// the WAL grew meanwhile.
    async fn write_rows(
        writer: &Arc<Writer>,
        wal: &std::path::Path,
        writers: usize,
        jobs: usize,
    ) -> u64 {
        let mut largest = 0;
        let mut tasks = Vec::new();
        for _ in 0..writers {
            let w = writer.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..jobs {
                    w.submit(|c| Ok(c.execute("INSERT INTO t VALUES (zeroblob(8192))", [])?))
                        .await
                        .expect("write");
                }
            }));
        }
        while tasks.iter().any(|t| !t.is_finished()) {
            largest = largest.max(wal_len(wal));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        for t in tasks {
            t.await.expect("task");
        }
        largest
    }

    /// The largest the WAL grows while eight writers keep the queue full
    /// with 4,000 jobs of 8 KiB, 32 MiB in all.
    async fn largest_wal(tuning: super::super::checkpoint::Tuning) -> u64 {
        let (_dir, writer, checkpointer, wal) = with_checkpoints(tuning);
        let largest = write_rows(&writer, &wal, 8, 500).await;
        checkpointer.stop();
        stop(&writer).await;
        assert!(largest > 0, "the WAL was observed");
        largest
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_stays_bounded_under_constant_writing() {
        let largest = largest_wal(super::super::checkpoint::Tuning {
            force_frames: 512,
            restart_every: Duration::ZERO,
            ..quick_tuning()
        })
        .await;
        assert!(
            largest < 12 * 1024 * 1024,
            "the WAL grew to {largest} bytes while 32 MiB were written"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn restarts_wait_their_turn_but_the_wal_stays_bounded() {
        // A caught-up WAL is never due to restart here before three
        // quarters of the forced limit of 2,048 frames (8 MiB). Restarting
        // when caught up, it stays under about 2 MiB (see the test above).
        let largest = largest_wal(quick_tuning()).await;
        assert!(
            largest > 5 * 1024 * 1024,
            "the WAL restarted at {largest} bytes, before its turn"
        );
        assert!(
            largest < 20 * 1024 * 1024,
            "the WAL grew to {largest} bytes while 32 MiB were written"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn checkpoints_keep_to_their_interval_while_writes_pour_in() {
        // No restart is due, so no pass is hurried: however fast commits
        // come, the pages they rewrite are copied once per interval.
        let interval = Duration::from_millis(50);
        let (dir, writer, checkpointer, wal) = with_checkpoints(super::super::checkpoint::Tuning {
            interval,
            restart_frames: 1 << 30,
            force_frames: 1 << 31,
            ..quick_tuning()
        });
        let started = std::time::Instant::now();
        write_rows(&writer, &wal, 8, 250).await;
        let elapsed = started.elapsed();
        let passes = checkpointer.passes();
        checkpointer.stop();
        stop(&writer).await;
        let allowed = (elapsed.as_millis() / interval.as_millis()) as u64 + 2;
        assert!(
            passes <= allowed,
            "{passes} checkpoint passes in {elapsed:?}; at most {allowed} expected"
        );
        assert!(passes > 0, "the checkpoint thread never ran");
        assert_eq!(rows(&dir.path().join("w.db")), 2000, "every row is stored");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_wal_is_cut_back() {
        let (_dir, writer, checkpointer, wal) =
            with_checkpoints(super::super::checkpoint::Tuning {
                restart_frames: 16 * 1024,
                force_frames: 64 * 1024,
                idle_truncate: Duration::from_millis(200),
                ..quick_tuning()
            });
        // On a loaded machine a pause between commits may already count as
        // idle: what matters is that the WAL grew and ends cut back.
        let largest = write_rows(&writer, &wal, 2, 200).await;
        assert!(largest > 2 * 1024 * 1024, "3 MiB went through the WAL");
        let deadline = Instant::now() + Duration::from_secs(10);
        while wal_len(&wal) > 0 {
            assert!(Instant::now() < deadline, "the idle WAL was not cut back");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Writing goes on as before.
        write_rows(&writer, &wal, 1, 10).await;
        checkpointer.stop();
        stop(&writer).await;
        let reader = Connection::open(wal.with_file_name("w.db")).expect("reader");
        let rows: i64 = reader
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("count");
        assert_eq!(rows, 410);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stop_finishes_queued_jobs_then_refuses_new_ones() {
        let (_dir, writer, path) = open();
        let (release, blocked) = block_writer(&writer).await;
        let w = writer.clone();
        let queued = tokio::spawn(async move {
            w.submit(|c| Ok(c.execute("INSERT INTO t VALUES (1)", [])?))
                .await
        });
        wait_until(|| writer.stats().queued == 1).await;
        let w = writer.clone();
        let stopper = tokio::task::spawn_blocking(move || w.stop());
        drop(release);
        stopper.await.expect("stop");
        blocked.await.expect("task").expect("first commits");
        queued
            .await
            .expect("task")
            .expect("queued job commits before stop");
        let late = writer.submit(|_| Ok(())).await;
        assert!(matches!(late, Err(StoreError::ShuttingDown)), "{late:?}");
        let count = rows(&path);
        assert_eq!(count, 2);
    }
}
