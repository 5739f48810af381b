//! Thread priorities. Under load the writer thread is what every write
//! waits on, so it keeps the process's priority and the others yield to it:
//! the async runtime's threads (HTTP, JSON parsing, reads) and the
//! checkpoint thread, which copies the WAL into the database in the
//! background. Any thread may lower its own priority, so this needs no
//! privilege; it is best effort.

/// How much lower, in nice steps, those threads run than the writer.
pub const LOWERED_BY: i32 = 5;

/// Lowers the calling thread's priority to `LOWERED_BY` below the process's.
///
/// The offset is taken from the main thread's priority, not this thread's:
/// a thread started by a lowered one (the blocking pool's, started by a
/// runtime worker) inherits its priority and must not lower it twice.
pub fn lower_this_thread() {
    let tid = Some(rustix::thread::gettid());
    let main = Some(rustix::process::getpid());
    let lowered = rustix::process::getpriority_process(main)
        .and_then(|nice| rustix::process::setpriority_process(tid, (nice + LOWERED_BY).min(19)));
    if let Err(e) = lowered {
        tracing::debug!(error = %e, "cannot lower the priority of a thread");
    }
}
