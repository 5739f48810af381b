//! WAL checkpoints on a thread of their own. The writer only appends to the
//! WAL (its auto-checkpoint is off); this thread copies committed pages into
//! the database file in the background, so the writer's commits never wait
//! for that I/O.
//!
//! Passes keep to an interval rather than running back to back: under heavy
//! ingest the same index pages are rewritten by commit after commit, and a
//! pass copies only each page's latest version, so copying a tenth of a
//! second at a time copies far fewer pages (and syncs far less often) than
//! chasing every commit.
//!
//! Under constant writing a passive checkpoint never reaches the WAL's end,
//! so the WAL would never start over; and a restarting checkpoint from this
//! thread would wait forever for the writer's lock. So past a size limit this
//! thread asks the writer, which between two groups holds no lock, to run
//! the restart itself, and the next group writes the WAL from its beginning.
//! Requests wait while the writer copies the tail not yet copied and syncs
//! the database file, so once a restart is due this thread first catches up
//! with passes back to back, and asks after a quick one (the tail is short)
//! or after `catch_up_passes` of them. Restarts are what stall ingest, so
//! after one the next waits `restart_every`, or until the WAL is three
//! quarters of `force_frames` (where the writer is asked anyway:
//! back-pressure, not a growing file); under light ingest it starts over at
//! `restart_frames`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::Result;
use crate::logging::Throttle;

/// How long the checkpoint connection waits for a lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// When to checkpoint and when to ask for the WAL to start over.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tuning {
    /// How often to look for committed pages to copy.
    pub interval: Duration,
    /// WAL frames (pages) past which the WAL is made to start over once the
    /// checkpoint has caught up.
    pub restart_frames: i64,
    /// WAL frames past which it is made to start over even if not.
    pub force_frames: i64,
    /// Restarts stall writes, so a caught-up WAL waits this long after the
    /// last one: under heavy ingest the WAL grows longer and restarts seldom.
    pub restart_every: Duration,
    /// Passes run back to back once a restart is due, so the tail the
    /// writer copies is short; after this many the writer is asked even if
    /// none was quick (under heavy ingest none is: each copies what was
    /// written during the one before).
    pub catch_up_passes: u32,
    /// A WAL that has not grown for this long and is all copied is cut to
    /// nothing, so its file shrinks back once heavy ingest stops.
    pub idle_truncate: Duration,
    /// A checkpoint pass at least this short shows the uncopied tail is
    /// short (it was written during the pass); then the writer, which copies
    /// the tail while requests wait, is asked to restart at once rather than
    /// after `catch_up_passes`.
    pub restart_lag: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            interval: Duration::from_millis(100),
            // 64 MiB and 1 GiB of 4 KiB pages.
            restart_frames: 16 * 1024,
            force_frames: 256 * 1024,
            restart_every: Duration::from_secs(5),
            restart_lag: Duration::from_millis(10),
            catch_up_passes: 2,
            idle_truncate: Duration::from_secs(30),
        }
    }
}

impl Tuning {
    /// This tuning, scaled to `room` bytes (a small file system, or the cap
    /// on the data): the WAL starts over past a sixteenth of it and is made
    /// to past a quarter, so that it leaves the data room (and a
    /// checkpoint, which grows the database file by what the WAL holds,
    /// finds it). Never more than this tuning's own limits.
    pub(super) fn within(self, room: u64) -> Tuning {
        /// SQLite's page, the size of a WAL frame's content.
        const PAGE: u64 = 4096;
        let frames = |share: u64, least: i64| {
            i64::try_from(room / share / PAGE)
                .unwrap_or(i64::MAX)
                .max(least)
        };
        Tuning {
            restart_frames: self.restart_frames.min(frames(16, 64)),
            force_frames: self.force_frames.min(frames(4, 256)),
            ..self
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
    /// Checkpoint passes run so far.
    passes: Arc<AtomicU64>,
    /// The bytes the WAL is scaled to (see `Tuning::within`).
    room: Arc<AtomicU64>,
}

impl Checkpointer {
    /// Starts checkpointing `path`; sets `restart_wanted` when the WAL is long.
    pub(super) fn start(
        path: &Path,
        restart_wanted: Arc<AtomicBool>,
        tuning: Tuning,
    ) -> Result<Checkpointer> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let db_file = std::fs::File::open(path)?;
        let signal = Arc::new(Signal::default());
        let shared = signal.clone();
        let passes = Arc::new(AtomicU64::new(0));
        let counted = passes.clone();
        let room = Arc::new(AtomicU64::new(u64::MAX));
        let scaled = room.clone();
        let thread = std::thread::Builder::new()
            .name("trulayer-checkpoint".into())
            .spawn(move || {
                crate::priority::lower_this_thread();
                run(
                    &conn,
                    &db_file,
                    &shared,
                    &restart_wanted,
                    &counted,
                    tuning,
                    &scaled,
                )
            })?;
        Ok(Checkpointer {
            signal,
            thread: Mutex::new(Some(thread)),
            passes,
            room,
        })
    }

    /// Scales the WAL to `bytes` from now on (see `Tuning::within`).
    pub(super) fn fit_wal_to(&self, bytes: u64) {
        self.room.store(bytes, Ordering::Relaxed);
    }

    /// Checkpoint passes run so far.
    pub(super) fn passes(&self) -> u64 {
        self.passes.load(Ordering::Relaxed)
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

fn run(
    conn: &Connection,
    db_file: &std::fs::File,
    signal: &Signal,
    restart_wanted: &AtomicBool,
    passes: &AtomicU64,
    base: Tuning,
    room: &AtomicU64,
) {
    let mut hurry = false;
    // Passes run back to back since the restart became due.
    let mut catching_up = 0;
    let mut last = Progress::default();
    let mut last_restart = Instant::now();
    let mut quiet_since: Option<Instant> = None;
    // A failure that repeats every pass (a full disk, no file descriptors
    // left) is logged every few seconds, not ten times a second.
    let failures = Throttle::new(FAILURE_LOG_EVERY);
    loop {
        let tuning = base.within(room.load(Ordering::Relaxed));
        {
            let Ok(stop) = signal.stop.lock() else { return };
            let pause = if hurry {
                Duration::ZERO
            } else {
                tuning.interval
            };
            let Ok((stop, _)) = signal.wake.wait_timeout(stop, pause) else {
                return;
            };
            if *stop {
                return;
            }
        }
        // While the writer is asked to restart, stay out of its way: a
        // checkpoint running here would make its restart wait for our lock.
        if restart_wanted.load(Ordering::Relaxed) {
            hurry = false;
            continue;
        }
        let before = last;
        let started = Instant::now();
        let result = checkpoint(conn);
        let pass = started.elapsed();
        passes.fetch_add(1, Ordering::Relaxed);
        if let Ok(progress) = result {
            // A pass that does not reach the WAL's end leaves the pages it
            // copied unsynced (the WAL still holds them). Sync them here, so
            // the restart, which syncs the database file, finds little to do.
            if progress.copied > 0 && progress != last {
                if let Err(e) = db_file.sync_data() {
                    tracing::warn!(error = %e, "syncing the database file failed");
                }
            }
            last = progress;
        }
        let idle = result
            .as_ref()
            .is_ok_and(|p| p.frames > 0 && p.copied == p.frames && p.frames == before.frames);
        if !idle {
            quiet_since = None;
        } else if quiet_since.get_or_insert_with(Instant::now).elapsed() >= tuning.idle_truncate {
            quiet_since = None;
            truncate(conn);
        }
        hurry = match result {
            Ok(Progress { frames, .. }) if frames > tuning.restart_frames => {
                // What this pass copied was written while the previous pass
                // ran: a quick pass means the uncopied tail is short now.
                let caught_up = pass <= tuning.restart_lag;
                let due = last_restart.elapsed() >= tuning.restart_every
                    || frames > tuning.force_frames / 4 * 3;
                if frames > tuning.force_frames
                    || (due && (caught_up || catching_up >= tuning.catch_up_passes))
                {
                    last_restart = Instant::now();
                    catching_up = 0;
                    tracing::debug!(frames, caught_up, "asking the writer to restart the WAL");
                    restart_wanted.store(true, Ordering::Relaxed);
                    false
                } else if due {
                    catching_up += 1;
                    true
                } else {
                    false
                }
            }
            Ok(_) => false,
            Err(e) => {
                if let Some(held) = failures.pass() {
                    tracing::warn!(
                        error = %e,
                        failures_since_last_report = held,
                        "WAL checkpoint failed"
                    );
                }
                false
            }
        };
    }
}

/// How often a checkpoint failure that keeps happening is logged.
pub(super) const FAILURE_LOG_EVERY: Duration = Duration::from_secs(10);

/// What a checkpoint pass reports.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Progress {
    /// Frames in the WAL when the pass began.
    frames: i64,
    /// Of those, frames now copied into the database file.
    copied: i64,
}

/// Runs a passive checkpoint.
fn checkpoint(conn: &Connection) -> rusqlite::Result<Progress> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok(Progress {
            frames: r.get(1)?,
            copied: r.get(2)?,
        })
    })
}

/// Cuts an idle WAL to nothing. Writers wait while this runs, so it gives
/// up at once if a reader or the writer is busy; it is tried again later.
fn truncate(conn: &Connection) {
    let quick = Duration::from_millis(20);
    let result = conn.busy_timeout(quick).and_then(|()| {
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            r.get::<_, i64>(0)
        })
    });
    if let Err(e) = conn.busy_timeout(BUSY_TIMEOUT) {
        tracing::warn!(error = %e, "cannot reset the checkpoint's busy timeout");
    }
    match result {
        Ok(0) => tracing::debug!("cut the idle WAL back"),
        Ok(_) => tracing::debug!("the idle WAL was in use; cutting it back later"),
        Err(e) => tracing::debug!(error = %e, "cutting the idle WAL back failed"),
    }
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
            // On a full disk this fails between every two groups.
            static FAILURES: Throttle = Throttle::new(FAILURE_LOG_EVERY);
            if let Some(held) = FAILURES.pass() {
                tracing::warn!(error = %e, failures_since_last_report = held, "restarting the WAL failed");
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wal_is_scaled_to_a_small_room_and_never_past_its_own_limits() {
        let base = Tuning::default();
        let small = base.within(64 * 1024 * 1024);
        // 4 MiB and 16 MiB of 4 KiB pages.
        assert_eq!((small.restart_frames, small.force_frames), (1024, 4096));
        let tiny = base.within(256 * 1024);
        assert_eq!((tiny.restart_frames, tiny.force_frames), (64, 256));
        let large = base.within(u64::MAX);
        assert_eq!(
            (large.restart_frames, large.force_frames),
            (base.restart_frames, base.force_frames)
        );
        assert_eq!(small.interval, base.interval);
    }
}
