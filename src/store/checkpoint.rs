//! WAL checkpoints on a thread of their own. The writer only appends to the
//! WAL (its auto-checkpoint is off); this thread copies committed pages into
//! the database file in the background, so the writer's commits never wait
//! for that I/O.
//!
//! Under constant writing a passive checkpoint never reaches the WAL's end,
//! so the WAL would never start over; and a restarting checkpoint from this
//! thread would wait forever for the writer's lock. So past a size limit this
//! thread asks the writer, which between two groups holds no lock, to run
//! the restart itself: only the tail not yet copied remains, and the next
//! group writes the WAL from its beginning. If the disk falls behind, that
//! tail grows and the writer waits longer: back-pressure, not a growing file.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use super::Result;

/// When to checkpoint and when to ask for the WAL to start over.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tuning {
    /// How often to look for committed pages to copy.
    pub interval: Duration,
    /// WAL frames (pages) past which the WAL is made to start over.
    pub restart_frames: i64,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            interval: Duration::from_millis(100),
            // 64 MiB of 4 KiB pages.
            restart_frames: 16 * 1024,
        }
    }
}

#[derive(Default)]
struct Signal {
    stop: Mutex<bool>,
    wake: Condvar,
}

pub(super) struct Checkpointer {
    signal: Arc<Signal>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Checkpointer {
    /// Starts checkpointing `path`; sets `restart_wanted` when the WAL is long.
    pub(super) fn start(
        path: &Path,
        restart_wanted: Arc<AtomicBool>,
        tuning: Tuning,
    ) -> Result<Checkpointer> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        let signal = Arc::new(Signal::default());
        let shared = signal.clone();
        let thread = std::thread::Builder::new()
            .name("trulayer-checkpoint".into())
            .spawn(move || run(&conn, &shared, &restart_wanted, tuning))?;
        Ok(Checkpointer {
            signal,
            thread: Mutex::new(Some(thread)),
        })
    }

    pub(super) fn stop(&self) {
        if let Ok(mut stop) = self.signal.stop.lock() {
            *stop = true;
        }
        self.signal.wake.notify_all();
        let handle = match self.thread.lock() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

fn run(conn: &Connection, signal: &Signal, restart_wanted: &AtomicBool, tuning: Tuning) {
    loop {
        {
            let Ok(stop) = signal.stop.lock() else { return };
            let Ok((stop, _)) = signal.wake.wait_timeout(stop, tuning.interval) else {
                return;
            };
            if *stop {
                return;
            }
        }
        match checkpoint(conn, "PASSIVE") {
            Ok(frames) if frames > tuning.restart_frames => {
                restart_wanted.store(true, Ordering::Relaxed)
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
        }
    }
}

/// Runs a passive checkpoint; returns the number of frames in the WAL.
fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<i64> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        r.get::<_, i64>(1)
    })
}

/// Called by the writer between groups: copies what is left and makes the
/// next transaction start the WAL over. False if readers kept it from
/// finishing (it is asked again later).
pub(super) fn restart_wal(conn: &Connection) -> bool {
    let started = std::time::Instant::now();
    let result = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get::<_, i64>(0));
    // Writes wait meanwhile: this is where ingest latency spikes come from.
    tracing::debug!(
        elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
        "restarted the WAL"
    );
    match result {
        Ok(busy) => busy == 0,
        Err(e) => {
            tracing::warn!(error = %e, "restarting the WAL failed");
            false
        }
    }
}
