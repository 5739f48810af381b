//! WAL checkpoints on a thread of their own. The writer only appends to the
//! WAL (its auto-checkpoint is off); this thread copies committed pages into
//! the database file in the background, so the writer's commits never wait
//! for that I/O. Under constant writing a passive checkpoint never catches
//! the WAL's end, so past a size limit a restarting checkpoint briefly holds
//! the writer back and lets the WAL start over.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use super::Result;

/// How often to look for committed pages to copy.
const INTERVAL: Duration = Duration::from_millis(100);
/// WAL frames (pages) past which the WAL is made to start over.
const RESTART_FRAMES: i64 = 16 * 1024;

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
    pub(super) fn start(path: &Path) -> Result<Checkpointer> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        let signal = Arc::new(Signal::default());
        let shared = signal.clone();
        let thread = std::thread::Builder::new()
            .name("trulayer-checkpoint".into())
            .spawn(move || run(&conn, &shared))?;
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

fn run(conn: &Connection, signal: &Signal) {
    loop {
        {
            let Ok(stop) = signal.stop.lock() else { return };
            let Ok((stop, _)) = signal.wake.wait_timeout(stop, INTERVAL) else {
                return;
            };
            if *stop {
                return;
            }
        }
        match checkpoint(conn, "PASSIVE") {
            Ok(frames) if frames > RESTART_FRAMES => {
                if let Err(e) = checkpoint(conn, "RESTART") {
                    tracing::warn!(error = %e, "restarting WAL checkpoint failed");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
        }
    }
}

/// Runs a checkpoint; returns the number of frames in the WAL.
fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<i64> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        r.get::<_, i64>(1)
    })
}
