//! Operations: readiness and the health check, online backup during ingest
//! and restore, migration planning, and one server per data directory.

#[path = "common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::{expect_error, sample_trace, write_config, write_config_with_storage, TestServer};

const BIN: &str = env!("CARGO_BIN_EXE_trulayer-server");

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("binary runs")
}

fn stdout_json(o: &Output) -> Value {
    let text = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text:?}"))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[tokio::test]
async fn ready_reports_each_check_and_the_health_check_follows_it() {
    let server = TestServer::start().await;
    let resp = server
        .client
        .get(server.url("/ready"))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["ready"], true, "{body}");
    assert_eq!(body["database"], "ok");
    assert_eq!(body["disk"], "ok");
    assert_eq!(body["storage"], "ok");
    assert_eq!(
        body["schema_version"],
        trulayer_server::store::SCHEMA_VERSION
    );
    assert!(body["disk_free_bytes"].as_u64().is_some_and(|b| b > 0));

    // The command reads the address from the same configuration; the test
    // server listens on an ephemeral port, so point a config at it.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("check.toml");
    std::fs::write(
        &config,
        format!("[server]\nlisten = \"{}\"\n", server.running().local_addr),
    )
    .expect("write");
    // The server runs on this test's runtime: run the command off it.
    let check = |config: std::path::PathBuf| {
        tokio::task::spawn_blocking(move || run(&["healthcheck", "--config", path_str(&config)]))
    };
    let out = check(config.clone()).await.expect("healthcheck");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout_json(&out)["ready"], true);

    server.stop().await;
    let out = check(config.clone()).await.expect("healthcheck");
    assert_eq!(out.status.code(), Some(1), "a stopped server is not ready");
    assert!(stderr(&out).contains("connecting"), "{}", stderr(&out));
}

#[tokio::test]
async fn a_full_database_is_not_ready() {
    let server =
        TestServer::start_with_storage("max_db_size = \"1MiB\"\nwhen_full = \"refuse\"", "").await;
    // A write is refused when it would not fit, and a smaller one may
    // still fit: fill until even small traces are refused.
    let deadline = Instant::now() + Duration::from_secs(20);
    for size in [40_000, 4_000, 400] {
        loop {
            let mut trace = sample_trace("fill");
            trace["input"] = json!("y".repeat(size));
            let status = server.post("/v1/ingest", &trace).await.status().as_u16();
            if status == 507 {
                break;
            }
            assert_eq!(status, 201);
            assert!(Instant::now() < deadline, "never full");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let resp = server
        .client
        .get(server.url("/ready"))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status().as_u16(), 503);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["ready"], false);
    assert_eq!(body["storage"], "full", "{body}");
    assert_eq!(body["database"], "ok");
}

#[tokio::test]
async fn a_second_server_on_the_same_data_directory_is_refused() {
    let server = TestServer::start().await;
    let config =
        trulayer_server::config::Config::load(Some(&server.dir.path().join("trulayer.toml")))
            .expect("config");
    let second = trulayer_server::server::start(config).await;
    let message = format!("{:#}", second.err().expect("refused"));
    assert!(message.contains("trulayer.lock"), "{message}");
    assert!(message.contains("stop it first"), "{message}");
    // The first goes on serving.
    assert_eq!(server.get("/v1/traces").await.status().as_u16(), 200);
    // Once it stops, the directory is free again.
    let server = server.restart().await;
    assert_eq!(server.get("/v1/traces").await.status().as_u16(), 200);
}

#[tokio::test]
async fn a_backup_taken_during_ingest_restores_every_trace_acknowledged_before_it() {
    let server = TestServer::start().await;
    let config = server.dir.path().join("trulayer.toml");
    let acknowledged: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    // Two clients ingest batches without pause for the whole test.
    let mut clients = Vec::new();
    for _ in 0..2 {
        let (url, key) = (server.url("/v1/ingest/batch"), server.key.clone());
        let (acknowledged, stop) = (acknowledged.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<Value> = (0..20).map(|i| sample_trace(&format!("b{i}"))).collect();
                let resp = client
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&json!({ "traces": batch }))
                    .send()
                    .await
                    .expect("sent");
                assert_eq!(resp.status().as_u16(), 201);
                let at = Instant::now();
                let mut list = acknowledged.lock().expect("lock");
                for t in &batch {
                    list.push((at, t["id"].as_str().expect("id").to_owned()));
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let out_dir = tempfile::tempdir().expect("tempdir");
    let backup = out_dir.path().join("copy.db");
    let began = Instant::now();
    let out = tokio::task::spawn_blocking({
        let (config, backup) = (config.clone(), backup.clone());
        move || {
            run(&[
                "backup",
                "--config",
                path_str(&config),
                "--out",
                path_str(&backup),
            ])
        }
    })
    .await
    .expect("backup task");
    assert!(out.status.success(), "{}", stderr(&out));
    let report = stdout_json(&out);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client");
    }
    let before: Vec<String> = acknowledged
        .lock()
        .expect("lock")
        .iter()
        .filter(|(at, _)| *at < began)
        .map(|(_, id)| id.clone())
        .collect();
    let all = acknowledged.lock().expect("lock").len();
    assert!(
        before.len() >= 40,
        "ingest ran before the backup: {}",
        before.len()
    );
    assert!(all > before.len(), "ingest went on during the backup");
    let in_backup = report["traces"].as_u64().expect("traces") as usize;
    assert!(in_backup >= before.len(), "{report}");
    assert_eq!(
        report["schema_version"],
        trulayer_server::store::SCHEMA_VERSION
    );

    // A backup file is never overwritten.
    let again = run(&[
        "backup",
        "--config",
        path_str(&config),
        "--out",
        path_str(&backup),
    ]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("exists"), "{}", stderr(&again));
    // Restore refuses while the server runs.
    let refused = run(&[
        "restore",
        "--config",
        path_str(&config),
        "--from",
        path_str(&backup),
    ]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("stop it first"),
        "{}",
        stderr(&refused)
    );

    let TestServer { running, dir, .. } = server;
    running.expect("running").stop().await.expect("stop");
    let restored = run(&[
        "restore",
        "--config",
        path_str(&config),
        "--from",
        path_str(&backup),
    ]);
    assert!(restored.status.success(), "{}", stderr(&restored));
    let restored = stdout_json(&restored);
    assert_eq!(restored["traces"].as_u64(), Some(in_backup as u64));
    let replaced = restored["replaced"]
        .as_str()
        .expect("the old database was kept");
    assert!(Path::new(replaced).is_file(), "{replaced}");

    let server = TestServer::start_in(dir, &config).await;
    let listed = server.list_all("", 200).await;
    assert_eq!(listed.len(), in_backup);
    let listed: std::collections::HashSet<String> = listed.into_iter().collect();
    let missing: Vec<&String> = before.iter().filter(|id| !listed.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged traces missing",
        missing.len()
    );
}

#[test]
fn restore_refuses_what_is_not_a_whole_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "");
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, b"not a database at all").expect("write");
    let out = run(&[
        "restore",
        "--config",
        path_str(&config),
        "--from",
        path_str(&junk),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot be restored"),
        "{}",
        stderr(&out)
    );
    let newer = dir.path().join("newer.db");
    let conn = rusqlite::Connection::open(&newer).expect("open");
    conn.execute_batch("CREATE TABLE traces (seq INTEGER PRIMARY KEY); PRAGMA user_version = 999;")
        .expect("schema");
    drop(conn);
    let out = run(&[
        "restore",
        "--config",
        path_str(&config),
        "--from",
        path_str(&newer),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("newer"), "{}", stderr(&out));
    assert!(
        !dir.path()
            .join("data")
            .join(trulayer_server::store::DB_FILE)
            .exists(),
        "nothing was put in place"
    );
}

#[tokio::test]
async fn migrate_dry_run_lists_what_would_run_and_migrate_runs_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config_with_storage(dir.path(), "", "");
    let plan = run(&["migrate", "--dry-run", "--config", path_str(&config)]);
    assert!(plan.status.success(), "{}", stderr(&plan));
    let plan = stdout_json(&plan);
    assert_eq!(plan["schema_version"], 0);
    let pending = plan["pending"].as_array().expect("pending");
    assert_eq!(
        pending.len() as i64,
        trulayer_server::store::SCHEMA_VERSION,
        "{plan}"
    );
    assert_eq!(pending[0]["name"], "0001_init");

    let applied = run(&["migrate", "--config", path_str(&config)]);
    assert!(applied.status.success(), "{}", stderr(&applied));
    let applied = stdout_json(&applied);
    assert_eq!(
        applied["schema_version"],
        trulayer_server::store::SCHEMA_VERSION
    );
    assert_eq!(applied["applied"], plan["pending"]);
    let plan = stdout_json(&run(&[
        "migrate",
        "--dry-run",
        "--config",
        path_str(&config),
    ]));
    assert_eq!(plan["pending"], json!([]));

    // A running server holds the directory: migrate waits for it to stop.
    let server = TestServer::start_in(dir, &config).await;
    let busy = run(&["migrate", "--config", path_str(&config)]);
    assert_eq!(busy.status.code(), Some(1));
    assert!(stderr(&busy).contains("stop it first"), "{}", stderr(&busy));
    // The dry run only reads.
    assert!(
        run(&["migrate", "--dry-run", "--config", path_str(&config)])
            .status
            .success()
    );
    expect_error(server.get("/v1/traces/not-a-trace").await, 404).await;
}
