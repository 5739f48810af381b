//! The binary as a service manager runs it: `trulayer-server reload` (what
//! the unit's ExecReload= runs) against a running server; and the first
//! start's credentials, shown on a terminal only (tests/cli.rs checks that a
//! pipe, like the journal, gets the file's path and no secret).

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::process::{spawn_server, ServerProcess, BIN};

fn run(args: &[&str], cwd: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Writes a self-signed certificate for 127.0.0.1 into `dir`; its PEM.
fn certificate(dir: &Path) -> String {
    let out = run(
        &[
            "tls",
            "self-signed",
            "--out-dir",
            dir.to_str().expect("utf8"),
            "--hosts",
            "127.0.0.1",
        ],
        dir.parent().expect("parent"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::fs::read_to_string(dir.join("cert.pem")).expect("cert")
}

fn write_config(path: &Path, tls_dir: &Path, cert: &str, key: &str, level: &str) {
    std::fs::write(
        path,
        format!(
            "[server.tls]\ncert = {:?}\nkey = {:?}\n[log]\nlevel = {level:?}\n",
            tls_dir.join(cert).display().to_string(),
            tls_dir.join(key).display().to_string(),
        ),
    )
    .expect("write config");
}

/// Whether a new connection to `url` verifies against `pem` alone.
async fn served_certificate_is(url: &str, pem: &str) -> bool {
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).expect("pem"))
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    client
        .get(format!("{url}/health"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

fn reload(config: &Path, server: &ServerProcess, cwd: &Path) -> Output {
    let pid = server.child.id().to_string();
    run(
        &[
            "reload",
            "--config",
            config.to_str().expect("utf8"),
            "--pid",
            &pid,
        ],
        cwd,
    )
}

fn wait_for_log(server: &ServerProcess, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !server.log_text().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "{needle:?} not logged: {}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every notification the server has sent to systemd's side so far.
fn notices(socket: &UnixDatagram) -> Vec<String> {
    socket.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 512];
    let mut seen = Vec::new();
    while let Ok(n) = socket.recv(&mut buf) {
        let notice = text(&buf[..n]);
        seen.push(notice.lines().next().unwrap_or_default().to_owned());
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_checks_the_file_then_the_running_server_applies_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (old_tls, new_tls) = (dir.path().join("old"), dir.path().join("new"));
    let old_pem = certificate(&old_tls);
    let new_pem = certificate(&new_tls);
    let config = dir.path().join("trulayer.toml");
    write_config(&config, &old_tls, "cert.pem", "key.pem", "info");
    let notify = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&notify).expect("bind");
    let mut server = tokio::task::block_in_place(|| {
        spawn_server(
            dir.path(),
            &["serve", "--config", config.to_str().expect("utf8")],
            &[("NOTIFY_SOCKET", notify.to_str().expect("utf8"))],
        )
    });
    assert!(served_certificate_is(&server.url, &old_pem).await);
    assert!(!served_certificate_is(&server.url, &new_pem).await);

    // A new certificate and level: checked, sent, applied.
    write_config(&config, &new_tls, "cert.pem", "key.pem", "debug");
    let out = reload(&config, &server, dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let sent: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    assert_eq!(sent["reload_sent_to"], server.child.id());
    tokio::task::block_in_place(|| wait_for_log(&server, "log level debug"));
    assert!(served_certificate_is(&server.url, &new_pem).await);
    assert!(!served_certificate_is(&server.url, &old_pem).await);

    // A file the server would refuse is never sent: the reload fails, the
    // server keeps what it has and hears nothing.
    std::fs::write(&config, "[log]\nlevel = \"shouty\"\n").expect("write");
    let out = reload(&config, &server, dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let refusal = text(&out.stderr);
    assert!(
        refusal.contains("log.level") && refusal.contains("not reloaded"),
        "{refusal}"
    );
    // The certificate of one pair with the key of the other: both files
    // exist, so only reading them as the server would finds the mismatch.
    std::fs::copy(old_tls.join("key.pem"), new_tls.join("other-key.pem")).expect("copy");
    write_config(&config, &new_tls, "cert.pem", "other-key.pem", "info");
    let out = reload(&config, &server, dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let refusal = text(&out.stderr);
    assert!(
        refusal.contains("server.tls") && refusal.contains("not reloaded"),
        "{refusal}"
    );
    assert!(served_certificate_is(&server.url, &new_pem).await);

    // A last good reload, so that a signal the refusals had sent would
    // have been handled (and logged as refused) before this one.
    write_config(&config, &new_tls, "cert.pem", "key.pem", "info");
    let out = reload(&config, &server, dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    tokio::task::block_in_place(|| wait_for_log(&server, "log level info"));
    let status = tokio::task::block_in_place(|| server.terminate());
    assert!(status.success(), "{}", server.log_text());
    let log = server.log_text();
    assert!(!log.contains("reload refused"), "{log}");
    assert_eq!(log.matches("reloaded").count(), 2, "{log}");
    assert_eq!(
        notices(&socket),
        [
            "READY=1",
            "RELOADING=1",
            "READY=1",
            "RELOADING=1",
            "READY=1",
            "STOPPING=1"
        ],
        "systemd heard of two reloads"
    );
}

#[test]
fn reload_needs_a_process_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    for pid in ["0", "-1", "server"] {
        let out = run(&["reload", "--pid", pid], dir.path());
        assert_eq!(out.status.code(), Some(2), "--pid {pid}");
        assert!(text(&out.stderr).contains("--pid"), "{}", text(&out.stderr));
    }
}

fn credentials_file(dir: &Path) -> PathBuf {
    dir.join("trulayer-data/initial-credentials")
}

/// The generated `(password, api_key)` in the first start's file.
fn generated_secrets(file: &Path) -> (String, String) {
    let text = std::fs::read_to_string(file).expect("credentials file");
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key} = ")))
            .map(|v| v.trim_matches('"').to_owned())
            .unwrap_or_else(|| panic!("no {key} in {text}"))
    };
    (value("admin_password"), value("api_key"))
}

#[test]
fn first_start_on_a_terminal_prints_the_credentials() {
    use rustix::fs::{Mode, OFlags};
    use std::io::Read;

    let dir = tempfile::tempdir().expect("tempdir");
    let terminal =
        rustix::pty::openpt(rustix::pty::OpenptFlags::RDWR | rustix::pty::OpenptFlags::NOCTTY)
            .expect("a pseudo-terminal");
    rustix::pty::grantpt(&terminal).expect("grantpt");
    rustix::pty::unlockpt(&terminal).expect("unlockpt");
    let name = rustix::pty::ptsname(&terminal, Vec::new()).expect("ptsname");
    let stderr = rustix::fs::open(
        name.as_c_str(),
        OFlags::RDWR | OFlags::NOCTTY,
        Mode::empty(),
    )
    .expect("open the terminal");
    let mut child = Command::new(BIN)
        .arg("serve")
        .env("TRULAYER_SERVER__LISTEN", "127.0.0.1:0")
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::from(stderr))
        .spawn()
        .expect("spawn server");
    let mut screen = std::fs::File::from(terminal);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        // Ends with EIO once the server, the terminal's last user, exits.
        while let Ok(n @ 1..) = screen.read(&mut buf) {
            if tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut printed = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !printed.contains("listening on") {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(bytes) => printed.push_str(&text(&bytes)),
            Err(_) => {
                let _ = child.kill();
                panic!("the server did not start: {printed}");
            }
        }
    }
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::TERM,
    )
    .expect("SIGTERM");
    assert!(child.wait().expect("wait").success(), "{printed}");
    let (password, key) = generated_secrets(&credentials_file(dir.path()));
    assert!(
        printed.contains(&format!("admin_password = \"{password}\"")),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("api_key = \"{key}\"")),
        "{printed}"
    );
}
