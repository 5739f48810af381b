//! The single writer. One thread owns the write connection and drains a
//! bounded queue: every job found waiting is run inside one transaction, each
//! job in its own savepoint so a failing job rolls back alone, and every
//! job's caller is answered only after the shared COMMIT. While one group
//! commits, the next group gathers in the queue, so under load the commit
//! cost is spread over many requests (group commit).

use std::sync::Mutex;
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
}

impl Writer {
    pub(super) fn start(conn: Connection) -> Result<Writer> {
        let (queue, rx) = mpsc::channel(QUEUE_CAPACITY);
        let thread = std::thread::Builder::new()
            .name("trulayer-writer".into())
            .spawn(move || run(conn, rx))?;
        Ok(Writer {
            queue,
            thread: Mutex::new(Some(thread)),
        })
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

fn run(conn: Connection, mut rx: mpsc::Receiver<Message>) {
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
            commit_group(&conn, group);
        }
    }
    // Answer anything that raced with Stop, then leave a compact WAL behind.
    rx.close();
    while let Ok(message) = rx.try_recv() {
        if let Message::Job(job) = message {
            commit_group(&conn, vec![job]);
        }
    }
    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
        tracing::warn!(error = %e, "WAL checkpoint at shutdown failed");
    }
    tracing::debug!("writer stopped");
}

fn commit_group(conn: &Connection, group: Vec<Job>) {
    let size = group.len();
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
    match conn.execute_batch("COMMIT") {
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
