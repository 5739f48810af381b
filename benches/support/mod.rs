//! What the benches share: the release-built `trulayer-server` as a child
//! process on a free loopback port, and readings of its memory and CPU from
//! `/proc`.
#![allow(dead_code)]

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The API key every bench server is started with (headless first start).
pub const API_KEY: &str = "tl_bench_0123456789abcdef0123";

pub struct Mem {
    pub rss_kb: u64,
    pub hwm_kb: u64,
    pub anon_kb: u64,
    pub file_kb: u64,
}

impl Mem {
    pub fn describe(&self) -> String {
        format!(
            "VmRSS {:.1} MB (anon {:.1}, file {:.1}), VmHWM {:.1} MB",
            mb(self.rss_kb),
            mb(self.anon_kb),
            mb(self.file_kb),
            mb(self.hwm_kb)
        )
    }
}

pub fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

pub fn proc_mem(pid: u32) -> Mem {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    Mem {
        rss_kb: field("VmRSS:"),
        hwm_kb: field("VmHWM:"),
        anon_kb: field("RssAnon:"),
        file_kb: field("RssFile:"),
    }
}

/// User + system CPU time of a process, in seconds.
pub fn proc_cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    // Fields after the name start at field 3 (state); utime and stime are 14 and 15.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 / clock_ticks()
}

/// Busy (non-idle, non-iowait) CPU seconds of the whole machine.
pub fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy: u64 = fields
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    busy as f64 / clock_ticks()
}

pub fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// One plain HTTP/1.1 health probe; true on a 200.
pub fn health_ok(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request =
        format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    let mut got = 0;
    while got < head.len() {
        match stream.read(&mut head[got..]) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got += n,
        }
    }
    &head == b"HTTP/1.1 200"
}

pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// A running `trulayer-server serve`; stopped on drop.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub log: PathBuf,
    pub ready_after: Duration,
    pub stopped: bool,
}

/// The server binary under test: this build's, or `BENCH_SERVER`'s.
pub fn server_binary() -> PathBuf {
    std::env::var_os("BENCH_SERVER").map_or_else(
        || env!("CARGO_BIN_EXE_trulayer-server").into(),
        PathBuf::from,
    )
}

impl Server {
    /// Spawns the server on `data_dir` and waits for `/health` to answer 200.
    pub fn start(data_dir: &Path, log: PathBuf) -> Server {
        Server::start_with(data_dir, log, &[])
    }

    /// Like [`Server::start`], with more `TRULAYER_*` settings.
    pub fn start_with(data_dir: &Path, log: PathBuf, settings: &[(&str, &str)]) -> Server {
        let port = free_port();
        let log_file = File::create(&log).expect("create the server log file");
        let mut command = Command::new(server_binary());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TRULAYER_") {
                command.env_remove(key);
            }
        }
        command
            .arg("serve")
            .env("TRULAYER_SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env("TRULAYER_STORAGE__DATA_DIR", data_dir)
            .env("TRULAYER_STORAGE__SYNCHRONOUS", "normal")
            .env("TRULAYER_INIT__API_KEY", API_KEY)
            .env("TRULAYER_INIT__ADMIN_PASSWORD", "benchpassword")
            .env(
                "TRULAYER_LOG__LEVEL",
                std::env::var("BENCH_LOG_LEVEL").unwrap_or_else(|_| "warn".into()),
            )
            .envs(settings.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file));
        let spawned = Instant::now();
        let child = command.spawn().expect("spawn trulayer-server");
        let mut server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
            ready_after: Duration::ZERO,
            stopped: false,
        };
        let deadline = spawned + Duration::from_secs(60);
        loop {
            if health_ok(port) {
                break;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                server.stopped = true;
                panic!(
                    "trulayer-server exited ({status}) before it was ready; log:\n{}",
                    log_tail(&server.log)
                );
            }
            assert!(
                Instant::now() < deadline,
                "trulayer-server not ready after 60 s; log:\n{}",
                log_tail(&server.log)
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        server.ready_after = spawned.elapsed();
        server
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn mem(&self) -> Mem {
        proc_mem(self.pid())
    }

    pub fn cpu_seconds(&self) -> f64 {
        proc_cpu_seconds(&self.pid().to_string())
    }

    /// CPU seconds of the server's single SQLite writer thread.
    pub fn writer_cpu_seconds(&self) -> f64 {
        let pid = self.pid();
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return 0.0;
        };
        tasks
            .flatten()
            .map(|task| task.file_name().to_string_lossy().into_owned())
            .filter(|tid| {
                std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
                    .is_ok_and(|comm| comm.trim() == "trulayer-writer")
            })
            .map(|tid| proc_cpu_seconds(&format!("{pid}/task/{tid}")))
            .sum()
    }

    /// SIGTERM, then waits (up to `grace`) for the exit; returns how long it took.
    pub fn stop_within(&mut self, grace: Duration) -> Duration {
        let asked = Instant::now();
        if self.stopped {
            return Duration::ZERO;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.stopped = true;
                    if !status.success() {
                        eprintln!(
                            "warning: trulayer-server exited with {status}; log:\n{}",
                            log_tail(&self.log)
                        );
                    }
                    return asked.elapsed();
                }
                Ok(None) if asked.elapsed() < grace => std::thread::sleep(Duration::from_millis(5)),
                _ => {
                    eprintln!("warning: trulayer-server did not stop within {grace:?}; killing it");
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    self.stopped = true;
                    return asked.elapsed();
                }
            }
        }
    }

    pub fn stop(&mut self) -> Duration {
        self.stop_within(Duration::from_secs(180))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_within(Duration::from_secs(15));
    }
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("build the HTTP client")
}
