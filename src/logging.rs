//! Structured logs to stderr (journald picks them up under systemd), as text
//! for people or JSON for collectors. Never logs keys or bodies. The level
//! can be changed while running (SIGHUP re-reads it from the config).

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Registry};

use crate::config::{LogConfig, LogFormat};

static LEVEL: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Installs the global subscriber; a second call (as in tests) is a no-op.
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_new(&config.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let ansi = std::io::stderr().is_terminal();
    let installed = match config.format {
        LogFormat::Text => tracing_subscriber::registry()
            .with(filter)
            .with(fmt::layer().with_ansi(ansi).with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Json => tracing_subscriber::registry()
            .with(filter)
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    if installed.is_ok() {
        let _ = LEVEL.set(handle);
    }
}

/// Changes the level (a level name or directives) of the installed logger.
pub fn set_level(level: &str) -> anyhow::Result<()> {
    let filter =
        EnvFilter::try_new(level).map_err(|e| anyhow::anyhow!("log.level {level:?}: {e}"))?;
    match LEVEL.get() {
        Some(handle) => handle
            .reload(filter)
            .map_err(|e| anyhow::anyhow!("changing the log level: {e}")),
        // No logger of ours (an embedding program installed its own).
        None => Ok(()),
    }
}

/// Lets a warning that repeats at every attempt (a full disk fails every
/// write until space returns) through at most once per period, with the
/// number held back since the last one, so the log keeps its other lines.
#[derive(Debug)]
pub struct Throttle {
    every: std::time::Duration,
    /// When the last one was let through.
    last: std::sync::Mutex<Option<std::time::Instant>>,
    held: std::sync::atomic::AtomicU64,
}

impl Throttle {
    pub const fn new(every: std::time::Duration) -> Throttle {
        Throttle {
            every,
            last: std::sync::Mutex::new(None),
            held: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// `Some(held back since the last one)` if this one is to be logged.
    pub fn pass(&self) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|at| at.elapsed() < self.every) {
            self.held.fetch_add(1, Relaxed);
            return None;
        }
        *last = Some(std::time::Instant::now());
        Some(self.held.swap(0, Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttle_lets_one_through_per_period_and_counts_the_rest() {
        let throttle = Throttle::new(std::time::Duration::from_secs(3600));
        assert_eq!(throttle.pass(), Some(0));
        for _ in 0..5 {
            assert_eq!(throttle.pass(), None);
        }
        let open = Throttle::new(std::time::Duration::ZERO);
        assert_eq!(open.pass(), Some(0));
        assert_eq!(open.pass(), Some(0));
    }
}
