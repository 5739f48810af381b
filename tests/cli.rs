//! The `trulayer-server` binary: subcommands, configuration precedence and
//! refusal, first start on defaults, graceful shutdown, schema guard.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::process::{spawn_server, BIN};

fn run(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(cwd)
        .output()
        .expect("binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn version_and_default_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(&["--version"], &[], dir.path());
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("trulayer-server {}", env!("CARGO_PKG_VERSION"))
    );

    let out = run(&["config", "default"], &[], dir.path());
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    for key in [
        "listen = \"127.0.0.1:8080\"",
        "data_dir = \"./trulayer-data\"",
        "synchronous = \"normal\"",
        "[init]",
        "[server.tls]",
    ] {
        assert!(text.contains(key), "default config lacks {key}");
    }
    // The printed defaults are themselves a valid config file.
    let file = dir.path().join("default.toml");
    std::fs::write(&file, &text).expect("write");
    let out = run(
        &["check-config", "--config", file.to_str().expect("utf8")],
        &[],
        dir.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("127.0.0.1:8080"));
}

#[test]
fn bad_configuration_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: &[(&str, &[&str])] = &[
        ("[server]\nlisten_addr = \"0.0.0.0:1\"\n", &["listen_addr"]),
        (
            "[storage]\nsynchronous = \"fast\"\n",
            &["synchronous", "normal", "full"],
        ),
        ("[server]\nlisten = \"localhost\"\n", &["listen"]),
        ("[log]\nformat = \"xml\"\n", &["format", "text", "json"]),
        ("[log]\nlevel = \"loud!!\"\n", &["log.level"]),
        (
            "[server.tls]\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\n",
            &["server.tls.cert"],
        ),
        ("[server.tls]\ncert = \"/nonexistent/cert.pem\"\n", &["key"]),
        (
            "[init]\napi_key = \"sk-not-ours\"\n",
            &["init.api_key", "tl_"],
        ),
        (
            "[init]\nadmin_password = \"short\"\n",
            &["init.admin_password"],
        ),
        ("[bogus]\nx = 1\n", &["bogus"]),
        (
            "[storage]\nmax_db_size = \"ten gigs\"\n",
            &["max_db_size", "10GiB"],
        ),
        ("[storage]\nmax_db_size = 4096\n", &["max_db_size", "1MiB"]),
        (
            "[storage]\nwhen_full = \"panic\"\n",
            &["when_full", "refuse", "purge_oldest"],
        ),
        ("[storage]\npurge_interval_s = 0\n", &["purge_interval_s"]),
    ];
    for (i, (toml, needles)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&file, toml).expect("write");
        let out = run(
            &["check-config", "--config", file.to_str().expect("utf8")],
            &[],
            dir.path(),
        );
        assert_eq!(out.status.code(), Some(2), "{toml}");
        let err = stderr(&out);
        for needle in needles.iter() {
            assert!(err.contains(needle), "{toml:?}: {needle:?} not in {err:?}");
        }
        // serve refuses the same file before touching anything.
        let out = run(
            &["serve", "--config", file.to_str().expect("utf8")],
            &[],
            dir.path(),
        );
        assert_eq!(out.status.code(), Some(2), "serve accepted {toml}");
    }
    assert!(
        !dir.path().join("trulayer-data").exists(),
        "a refused config created no data"
    );

    let out = run(
        &["check-config", "--config", "/nonexistent.toml"],
        &[],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    let out = run(
        &["check-config"],
        &[("TRULAYER_SERVER__LISTEN", "nowhere")],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("listen"), "{}", stderr(&out));
    let out = run(
        &["check-config"],
        &[("TRULAYER_SERVR__LISTEN", "127.0.0.1:1")],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("TRULAYER_SERVR__LISTEN"),
        "{}",
        stderr(&out)
    );
    // The SDK's own variables are not ours and do not disturb the server.
    let out = run(
        &["check-config"],
        &[("TRULAYER_MODE", "local"), ("TRULAYER_API_KEY", "x")],
        dir.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn environment_overrides_file_which_overrides_defaults() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("c.toml");
    std::fs::write(
        &file,
        "[server]\nlisten = \"127.0.0.1:9001\"\n[storage]\ndata_dir = \"/srv/tl\"\n",
    )
    .expect("write");
    let path = file.to_str().expect("utf8");
    let out = run(&["check-config", "--config", path], &[], dir.path());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("127.0.0.1:9001") && text.contains("/srv/tl"),
        "{text}"
    );
    let out = run(
        &["check-config", "--config", path],
        &[("TRULAYER_SERVER__LISTEN", "127.0.0.1:9002")],
        dir.path(),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("127.0.0.1:9002") && text.contains("/srv/tl"),
        "{text}"
    );
}

/// The nice value of each of a process's threads, by thread name.
fn thread_priorities(pid: u32) -> Vec<(String, i32)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
        let stat = std::fs::read_to_string(task.expect("task").path().join("stat")).expect("stat");
        // "tid (name) state ppid ...": the name may hold spaces; field 19 is nice.
        let (head, rest) = stat.rsplit_once(')').expect("stat format");
        let name = head.split_once('(').expect("stat format").1.to_string();
        let nice = rest.split_whitespace().nth(16).expect("nice field");
        threads.push((name, nice.parse().expect("nice number")));
    }
    threads
}

#[test]
fn request_and_checkpoint_threads_yield_the_cpu_to_the_writer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = spawn_server(dir.path(), &["serve"], &[]);
    // A thread lowers its own priority as it starts, so one started a moment
    // ago may not have yet: look again until every thread is settled.
    let mut problems = Vec::new();
    for _ in 0..40 {
        problems = priority_problems(&thread_priorities(server.child.id()));
        if problems.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(problems.is_empty(), "{problems:?}");
}

/// What is wrong with the threads' priorities: nothing when the request
/// and checkpoint threads run below the process and the writer thread at it.
fn priority_problems(threads: &[(String, i32)]) -> Vec<String> {
    let nice_of = |prefix: &str| -> Vec<i32> {
        threads
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(_, nice)| *nice)
            .collect()
    };
    let base = nice_of("trulayer-server");
    let [base] = base[..] else {
        return vec![format!("not one main thread: {threads:?}")];
    };
    let lowered = (base + trulayer_server::priority::LOWERED_BY).min(19);
    let mut problems = Vec::new();
    for (prefix, want) in [
        ("trulayer-worker", lowered),
        ("trulayer-writer", base),
        ("trulayer-checkp", lowered),
    ] {
        let found = nice_of(prefix);
        if found.is_empty() {
            problems.push(format!("no {prefix} thread in {threads:?}"));
        } else if found.iter().any(|n| *n != want) {
            problems.push(format!(
                "{prefix} threads run at {found:?}, not {want}: {threads:?}"
            ));
        }
    }
    problems
}

fn credentials_value(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = ")))
        .map(|v| v.trim_matches('"').to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_defaults_creates_credentials_once_and_stops_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = tokio::task::block_in_place(|| spawn_server(dir.path(), &["serve"], &[]));
    let printed = server.log_text();
    let creds_path = dir.path().join("trulayer-data/initial-credentials");
    let creds = std::fs::read_to_string(&creds_path).expect("credentials file");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&creds_path)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "credentials file is private");
    }
    let key = credentials_value(&creds, "api_key").expect("generated key in file");
    let password = credentials_value(&creds, "admin_password").expect("generated password in file");
    assert!(key.starts_with("tl_") && key.len() >= 40, "{key}");
    assert!(password.len() >= 16);
    // stderr is a pipe here, as under systemd (the journal) or a log file:
    // it names the file and holds neither secret.
    assert!(
        printed.contains(creds_path.to_str().expect("utf8")),
        "the credentials file is named: {printed}"
    );
    assert!(
        !printed.contains(&key[3..]),
        "the key was printed: {printed}"
    );
    assert!(
        !printed.contains(&password),
        "the password was printed: {printed}"
    );

    let client = reqwest::Client::new();
    let health: serde_json::Value = client
        .get(format!("{}/health", server.url))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    assert_eq!(health["status"], "ok");
    let resp = client
        .post(format!("{}/v1/ingest", server.url))
        .bearer_auth(&key)
        .json(&serde_json::json!({"name": "from-cli-test"}))
        .send()
        .await
        .expect("ingest");
    assert_eq!(resp.status(), 201);
    let status = tokio::task::block_in_place(|| server.terminate());
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    // One log line per request, naming method, path and status, never the key.
    let log = server.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("path=/v1/ingest"))
        .unwrap_or_else(|| panic!("no request line in {log}"));
    for needle in ["method=POST", "status=201", "latency_ms=", "request_id="] {
        assert!(line.contains(needle), "{needle} not in {line}");
    }
    let after_start = log.split("listening on").nth(1).unwrap_or_default();
    assert!(
        !after_start.contains(&key[3..]),
        "the API key was logged while serving"
    );
    drop(server);
    // The WAL was checkpointed away at shutdown.
    let wal = dir.path().join("trulayer-data/trulayer.db-wal");
    assert!(!wal.exists() || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0) == 0);

    // A second start keeps everything and generates nothing new.
    let mut again = tokio::task::block_in_place(|| {
        spawn_server(dir.path(), &["serve"], &[("TRULAYER_LOG__FORMAT", "json")])
    });
    assert!(
        !again.log_text().contains("api_key"),
        "no credentials printed again"
    );
    assert_eq!(std::fs::read_to_string(&creds_path).expect("file"), creds);
    let list: serde_json::Value = client
        .get(format!("{}/v1/traces", again.url))
        .bearer_auth(&key)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(list["traces"][0]["name"], "from-cli-test");
    let status = tokio::task::block_in_place(|| again.terminate());
    assert!(status.success());
    // JSON logs: every line is an object with a level and a message.
    for line in again.log_text().lines().filter(|l| !l.trim().is_empty()) {
        let entry: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            entry["level"].is_string() && entry["message"].is_string(),
            "{line}"
        );
    }
}

#[test]
fn a_database_from_a_newer_version_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    {
        let conn = rusqlite::Connection::open(data.join("trulayer.db")).expect("open");
        conn.pragma_update(None, "user_version", 999)
            .expect("set version");
    }
    let out = run(
        &["serve"],
        &[
            ("TRULAYER_STORAGE__DATA_DIR", data.to_str().expect("utf8")),
            ("TRULAYER_SERVER__LISTEN", "127.0.0.1:0"),
        ],
        dir.path(),
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("999") && err.contains("newer"), "{err}");
}

/// Reads one notification from systemd's side of the socket.
fn next_notice(socket: &std::os::unix::net::UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).expect("a notification within 20 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn under_systemd_it_reports_ready_reloads_on_sighup_and_reports_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let notify = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&notify).expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let config = dir.path().join("trulayer.toml");
    std::fs::write(&config, "[log]\nlevel = \"info\"\n").expect("write");
    let mut server = spawn_server(
        dir.path(),
        &["serve", "--config", config.to_str().expect("utf8")],
        &[("NOTIFY_SOCKET", notify.to_str().expect("utf8"))],
    );
    assert_eq!(next_notice(&socket), "READY=1", "after migrations and bind");

    // A reload with a new level: systemd hears RELOADING=1 then READY=1.
    std::fs::write(&config, "[log]\nlevel = \"debug\"\n").expect("write");
    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill")
        .success());
    let reloading = next_notice(&socket);
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    assert_eq!(next_notice(&socket), "READY=1");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.log_text().contains("reloaded") {
        assert!(Instant::now() < deadline, "{}", server.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        server.log_text().contains("log level debug"),
        "{}",
        server.log_text()
    );

    // A broken configuration is refused and the server keeps running.
    std::fs::write(&config, "[log]\nlevel = \"shouty\"\n").expect("write");
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill")
        .success());
    assert!(next_notice(&socket).starts_with("RELOADING=1"));
    assert_eq!(next_notice(&socket), "READY=1");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.log_text().contains("reload refused") {
        assert!(Instant::now() < deadline, "{}", server.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }

    let status = server.terminate();
    assert!(status.success(), "{}", server.log_text());
    assert_eq!(next_notice(&socket), "STOPPING=1");
}

#[test]
fn a_self_signed_certificate_is_written_for_evaluation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = dir.path().join("tls");
    let out = run(
        &[
            "tls",
            "self-signed",
            "--out-dir",
            tls.to_str().expect("utf8"),
            "--hosts",
            "trulayer.internal,10.1.2.3",
            "--days",
            "30",
        ],
        &[],
        dir.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    assert_eq!(
        report["hosts"],
        serde_json::json!(["trulayer.internal", "10.1.2.3"])
    );
    use std::os::unix::fs::PermissionsExt;
    let key_mode = std::fs::metadata(tls.join("key.pem"))
        .expect("key")
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600, "the key is its owner's only");
    let pem = std::fs::read_to_string(tls.join("cert.pem")).expect("cert");
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    // The server accepts the pair.
    let config = dir.path().join("tls.toml");
    std::fs::write(
        &config,
        format!(
            "[server.tls]\ncert = {:?}\nkey = {:?}\n",
            tls.join("cert.pem").display().to_string(),
            tls.join("key.pem").display().to_string()
        ),
    )
    .expect("write");
    let mut server = spawn_server(
        dir.path(),
        &["serve", "--config", config.to_str().expect("utf8")],
        &[],
    );
    assert!(server.url.starts_with("https://"), "{}", server.url);
    assert!(server.terminate().success());
    // It never overwrites.
    let again = run(
        &[
            "tls",
            "self-signed",
            "--out-dir",
            tls.to_str().expect("utf8"),
        ],
        &[],
        dir.path(),
    );
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("exists"), "{}", stderr(&again));
}
