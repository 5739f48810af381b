//! The real `trulayer-server` binary as a child process, its stderr
//! collected line by line.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_trulayer-server");

/// A server process whose stderr is collected line by line.
pub struct ServerProcess {
    pub child: Child,
    pub url: String,
    log: Arc<Mutex<Vec<String>>>,
}

pub fn spawn_server(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> ServerProcess {
    let mut child = Command::new(BIN)
        .args(args)
        .env("TRULAYER_SERVER__LISTEN", "127.0.0.1:0")
        .envs(env.iter().copied())
        .current_dir(cwd)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn server");
    let stderr = child.stderr.take();
    // From here on, Drop kills the process if anything below panics.
    let mut server = ServerProcess {
        child,
        url: String::new(),
        log: Arc::new(Mutex::new(Vec::new())),
    };
    let mut reader = BufReader::new(stderr.expect("stderr"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut line = String::new();
        let read = reader.read_line(&mut line).unwrap_or(0);
        assert!(
            read > 0 && Instant::now() < deadline,
            "server exited before listening: {}",
            server.log_text()
        );
        let url = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| c.is_whitespace() || c == '"').next())
            .map(str::to_owned);
        server.log.lock().expect("log").push(line);
        if let Some(url) = url {
            // Keep collecting so the server never blocks on a full pipe.
            let sink = server.log.clone();
            std::thread::spawn(move || {
                for line in reader.lines().map_while(Result::ok) {
                    sink.lock().expect("log").push(line);
                }
            });
            server.url = url;
            return server;
        }
    }
}

impl ServerProcess {
    pub fn log_text(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // A failed test must not leave a server running.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
