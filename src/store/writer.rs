//! The single writer. One thread owns the write connection and drains a
//! bounded queue: every job found waiting is run inside one transaction, each
//! job in its own savepoint so a failing job rolls back alone, and every
//! job's caller is answered only after the shared COMMIT. While one group
//! commits, the next group gathers in the queue, so under load the commit
//! cost is spread over many requests (group commit).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::{Result, StoreError};

/// How many jobs wait before callers feel back-pressure.
const QUEUE_CAPACITY: usize = 1024;
/// The most jobs committed in one transaction.
const MAX_GROUP: usize = 256;

/// Called once with the outcome of the job's transaction.
type Finish = Box<dyn FnOnce(Option<&StoreError>) + Send>;

/// One caller's writes, type-erased so jobs of any result type share a queue.
trait WriteJob: Send {
    /// Runs the statements; says whether they succeeded and how to answer.
    fn run(self: Box<Self>, conn: &Connection) -> (bool, Finish);
    /// Answers the caller without running anything.
    fn abort(self: Box<Self>, error: StoreError);
}

type Job = Box<dyn WriteJob>;

struct Pending<F, T> {
    work: F,
    reply: oneshot::Sender<Result<T>>,
}

impl<F, T> WriteJob for Pending<F, T>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection) -> (bool, Finish) {
        let Pending { work, reply } = *self;
        let outcome = work(conn);
        let ok = outcome.is_ok();
        let finish: Finish = Box::new(move |commit_error| {
            let answer = match (commit_error, outcome) {
                (None, outcome) => outcome,
                (Some(e), Ok(_)) => Err(StoreError::Commit(e.to_string())),
                (Some(_), Err(e)) => Err(e),
            };
            // The caller may have gone away; its data is committed anyway.
            let _ = reply.send(answer);
        });
        (ok, finish)
    }

    fn abort(self: Box<Self>, error: StoreError) {
        let _ = self.reply.send(Err(error));
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

/// Running totals of the writer's work.
#[derive(Default)]
struct Counters {
    groups: AtomicU64,
    jobs: AtomicU64,
    commit_micros: AtomicU64,
}

/// A snapshot of the writer's totals since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterStats {
    /// Transactions committed (or attempted).
    pub groups: u64,
    /// Requests' jobs run inside them.
    pub jobs: u64,
    /// Time spent in COMMIT, in microseconds.
    pub commit_micros: u64,
    /// Jobs waiting for the writer right now.
    pub queued: u64,
}

impl Writer {
    /// Starts the writer thread; when `restart_wal` is set it restarts the
    /// WAL between two groups (see `checkpoint`).
    pub(super) fn start(conn: Connection, restart_wal: Arc<AtomicBool>) -> Result<Writer> {
        let (queue, rx) = mpsc::channel(QUEUE_CAPACITY);
        let stats = Arc::new(Counters::default());
        let counters = stats.clone();
        let thread = std::thread::Builder::new()
            .name("trulayer-writer".into())
            .spawn(move || run(conn, rx, &counters, &restart_wal))?;
        Ok(Writer {
            queue,
            thread: Mutex::new(Some(thread)),
            stats,
        })
    }

    pub(super) fn stats(&self) -> WriterStats {
        WriterStats {
            groups: self.stats.groups.load(Ordering::Relaxed),
            jobs: self.stats.jobs.load(Ordering::Relaxed),
            commit_micros: self.stats.commit_micros.load(Ordering::Relaxed),
            queued: (QUEUE_CAPACITY - self.queue.capacity()) as u64,
        }
    }

    pub(super) async fn submit<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel::<Result<T>>();
        let job: Job = Box::new(Pending { work: f, reply });
        self.queue
            .send(Message::Job(job))
            .await
            .map_err(|_| StoreError::ShuttingDown)?;
        rx.await.map_err(|_| StoreError::ShuttingDown)?
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
) {
    let mut stopping = false;
    while !stopping {
        let Some(first) = rx.blocking_recv() else {
            break;
        };
        let mut group = Vec::with_capacity(16);
        match first {
            Message::Job(job) => group.push(job),
            Message::Stop => stopping = true,
        }
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(Message::Job(job)) => group.push(job),
                Ok(Message::Stop) => stopping = true,
                Err(_) => break,
            }
        }
        if !group.is_empty() {
            commit_group(&conn, group, stats);
        }
        if restart_wal.swap(false, Ordering::Relaxed) && !super::checkpoint::restart_wal(&conn) {
            restart_wal.store(true, Ordering::Relaxed);
        }
    }
    // Answer anything that raced with Stop, then leave a compact WAL behind.
    rx.close();
    while let Ok(message) = rx.try_recv() {
        if let Message::Job(job) = message {
            commit_group(&conn, vec![job], stats);
        }
    }
    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
        tracing::warn!(error = %e, "WAL checkpoint at shutdown failed");
    }
    tracing::debug!("writer stopped");
}

fn commit_group(conn: &Connection, group: Vec<Job>, stats: &Counters) {
    let size = group.len();
    stats.groups.fetch_add(1, Ordering::Relaxed);
    stats.jobs.fetch_add(size as u64, Ordering::Relaxed);
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        tracing::error!(error = %e, "cannot begin a write transaction");
        for job in group {
            job.abort(StoreError::Commit(e.to_string()));
        }
        return;
    }
    let mut finishers = Vec::with_capacity(size);
    for job in group {
        if let Err(e) = conn.execute_batch("SAVEPOINT job") {
            job.abort(StoreError::Commit(e.to_string()));
            continue;
        }
        let (ok, finish) = job.run(conn);
        let end = if ok {
            "RELEASE job"
        } else {
            "ROLLBACK TO job; RELEASE job"
        };
        if let Err(e) = conn.execute_batch(end) {
            tracing::error!(error = %e, "savepoint end failed");
        }
        finishers.push(finish);
    }
    let started = std::time::Instant::now();
    let committed = conn.execute_batch("COMMIT");
    stats
        .commit_micros
        .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    match committed {
        Ok(()) => {
            tracing::trace!(
                jobs = size,
                commit_us = started.elapsed().as_micros() as u64,
                "group committed"
            );
            for finish in finishers {
                finish(None);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, jobs = size, "group commit failed");
            let _ = conn.execute_batch("ROLLBACK");
            let error = StoreError::Commit(e.to_string());
            for finish in finishers {
                finish(Some(&error));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc as std_mpsc;
    use std::time::Duration;

    use super::*;

    fn open() -> (tempfile::TempDir, Arc<Writer>, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("w.db");
        let conn = Connection::open(&path).expect("open");
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x INTEGER UNIQUE);")
            .expect("schema");
        let writer = Writer::start(conn, Arc::new(AtomicBool::new(false))).expect("writer");
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
            w.submit(move |c| {
                c.execute("INSERT INTO t VALUES (0)", [])?;
                let _ = started_tx.send(());
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
        let (_dir, writer, path) = open();
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
        let count = rows(&path);
        assert_eq!(count, 10);
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_stays_bounded_under_constant_writing() {
        use super::super::checkpoint::{Checkpointer, Tuning};
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
        let tuning = Tuning {
            interval: Duration::from_millis(5),
            restart_frames: 256,
        };
        let checkpointer = Checkpointer::start(&path, restart, tuning).expect("checkpointer");
        let wal = dir.path().join("w.db-wal");
        let mut largest = 0;
        // Eight writers keep the queue full: 4,000 jobs of 8 KiB, 32 MiB in all.
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let w = writer.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..500 {
                    w.submit(|c| Ok(c.execute("INSERT INTO t VALUES (zeroblob(8192))", [])?))
                        .await
                        .expect("write");
                }
            }));
        }
        while tasks.iter().any(|t| !t.is_finished()) {
            largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        for t in tasks {
            t.await.expect("task");
        }
        checkpointer.stop();
        stop(&writer).await;
        assert!(largest > 0, "the WAL was observed");
        assert!(
            largest < 12 * 1024 * 1024,
            "the WAL grew to {largest} bytes while 32 MiB were written"
        );
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
