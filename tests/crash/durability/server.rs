//! The server under test as a child process of the run: started from a
//! config file on a loopback port of its own choosing, then killed with
//! SIGKILL or stopped with SIGTERM.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

pub const KEY: &str = "tl_crash_0123456789abcdefghij";
const PASSWORD: &str = "crash-durability-password";
/// How long a start may take before the run gives up on it.
const START_LIMIT: Duration = Duration::from_secs(120);
/// A graceful stop merges the indexes and checkpoints a WAL of up to 1 GiB.
const STOP_LIMIT: Duration = Duration::from_secs(180);

/// Writes the config the server runs on: loopback port 0, the data
/// directory, and a headless first start through `[init]`.
pub fn write_config(root: &Path, data_dir: &Path) -> PathBuf {
    let path = root.join("trulayer.toml");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\
         [storage]\ndata_dir = {data:?}\n\
         [log]\nlevel = \"warn,trulayer_server::server=info\"\n\
         [init]\napi_key = {KEY:?}\nadmin_password = {PASSWORD:?}\n\
         admin_email = \"owner@example.com\"\nproject = \"default\"\n",
        data = data_dir.display().to_string(),
    );
    std::fs::write(&path, text).expect("write the server config");
    path
}

pub struct Server {
    child: Child,
    pub base: String,
    /// From spawn to the first 200 on `/health`.
    pub ready_after: Duration,
    log: PathBuf,
    reaped: bool,
}

impl Server {
    /// Spawns `binary serve` and waits until `/health` answers 200.
    pub async fn start(binary: &Path, config: &Path, log: PathBuf) -> Result<Server, String> {
        let log_file = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut command = Command::new(binary);
        // The config file alone decides; the caller's environment does not.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TRULAYER_") {
                command.env_remove(key);
            }
        }
        command
            .arg("serve")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file));
        let spawned = Instant::now();
        let child = command
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", binary.display()))?;
        let mut server = Server {
            child,
            base: String::new(),
            ready_after: Duration::ZERO,
            log,
            reaped: false,
        };
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| e.to_string())?;
        loop {
            if server.base.is_empty() {
                server.base = server.listening_url().unwrap_or_default();
            }
            if !server.base.is_empty() {
                let health = http.get(format!("{}/health", server.base)).send().await;
                if health.is_ok_and(|r| r.status() == 200) {
                    server.ready_after = spawned.elapsed();
                    return Ok(server);
                }
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                server.reaped = true;
                return Err(format!(
                    "the server exited ({status}) before it was ready; log:\n{}",
                    server.log_tail()
                ));
            }
            if spawned.elapsed() > START_LIMIT {
                return Err(format!(
                    "the server was not ready after {START_LIMIT:?}; log:\n{}",
                    server.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// The address the server logged once it had bound its port.
    fn listening_url(&self) -> Option<String> {
        let text = std::fs::read_to_string(&self.log).ok()?;
        text.lines().find_map(|line| {
            let rest = line.split("listening on ").nth(1)?;
            let url = rest.split(|c: char| c.is_whitespace() || c == '"').next()?;
            Some(url.to_owned())
        })
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// `kill -9`: no signal handler runs, nothing is flushed or merged.
    pub fn kill(mut self) {
        self.reap_killed();
    }

    fn reap_killed(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.reaped = true;
        }
    }

    /// SIGTERM, then waits for a clean exit.
    pub async fn stop(mut self) -> Result<(), String> {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)
            .map_err(|e| format!("SIGTERM: {e}"))?;
        let asked = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.reaped = true;
                    return if status.success() {
                        Ok(())
                    } else {
                        Err(format!(
                            "the server exited with {status} on SIGTERM; log:\n{}",
                            self.log_tail()
                        ))
                    };
                }
                Ok(None) if asked.elapsed() < STOP_LIMIT => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                _ => {
                    self.reap_killed();
                    return Err(format!("the server did not stop within {STOP_LIMIT:?}"));
                }
            }
        }
    }
}

impl Drop for Server {
    /// A failed run must not leave a server behind.
    fn drop(&mut self) {
        self.reap_killed();
    }
}

/// `PRAGMA integrity_check` through a read-only connection, which leaves
/// the database and its WAL as the server will find them; "ok" when sound.
pub fn integrity_check(db: &Path) -> String {
    let check = || -> rusqlite::Result<Vec<String>> {
        let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let mut statement = conn.prepare("PRAGMA integrity_check")?;
        let rows = statement.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect()
    };
    match check() {
        Ok(rows) => rows.join("; "),
        Err(e) => format!("could not run the check: {e}"),
    }
}

/// How far the tag and session indexes were merged, read off a stopped
/// server's database: which of the filters' two paths (the merged index, or
/// the rows stored since the last merge) the final checks go through.
pub fn index_state(db: &Path) -> String {
    let read = || -> rusqlite::Result<(i64, i64, i64, i64)> {
        let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        conn.query_row(
            "SELECT (SELECT count(*) FROM tag_lookup), \
             (SELECT coalesce(max(seq), 0) FROM traces) - tags_seq, \
             (SELECT count(*) FROM session_lookup), \
             (SELECT count(*) FROM session_pending) FROM lookup_state",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
    };
    match read() {
        Ok((tags, tags_waiting, sessions, sessions_waiting)) => format!(
            "tag index {tags} entries, {tags_waiting} traces waiting; \
             session index {sessions} entries, {sessions_waiting} waiting"
        ),
        Err(e) => format!("not read: {e}"),
    }
}
