//! Running out of room: the server on a small file system of its own (a
//! tmpfs, so the test runs as root, as CI does) fills it, answers 507
//! `storage_full` with `Retry-After` rather than 500, says "full" in
//! `/ready`, stores again once space returns, and loses nothing it
//! acknowledged; and `storage.max_db_size` holds however large the batch.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::Response;
use serde_json::{json, Value};
use trulayer_server::store::{Disk, DB_FILE};

use common::{expect_error, TestServer, KEY, PASSWORD};

const MIB: u64 = 1024 * 1024;

/// A tmpfs of its own size on a temporary directory; unmounted when
/// dropped, a failing test included.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(bytes: u64) -> SmallDisk {
        let dir = tempfile::tempdir().expect("tempdir");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .status();
        match mounted {
            Ok(status) if status.success() => SmallDisk { dir },
            other => panic!(
                "this test needs a small file system of its own: mounting a tmpfs of {bytes} \
                 bytes on {} failed ({other:?}). Run it as root (CI does).",
                dir.path().display()
            ),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn disk(&self) -> Disk {
        Disk::of(self.path()).expect("statvfs")
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg(self.path()).status();
        if !unmounted.is_ok_and(|s| s.success()) {
            // Still in use (a test failed with the server running): detach
            // it now; it goes once the last file is closed.
            let _ = Command::new("umount").arg("-l").arg(self.path()).status();
        }
    }
}

/// Starts a server whose data directory is `data_dir`.
async fn start_on(data_dir: &Path, storage: &str) -> TestServer {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("trulayer.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_timeout_s = 5\n\
             [storage]\ndata_dir = {data:?}\n{storage}\n\
             [log]\nlevel = \"warn\"\n\
             [init]\napi_key = {KEY:?}\nadmin_password = {PASSWORD:?}\n\
             admin_email = \"owner@example.com\"\nproject = \"default\"\n",
            data = data_dir.display().to_string(),
        ),
    )
    .expect("config");
    TestServer::start_in(dir, &config).await
}

const WORDS: &[&str] = &[
    "the",
    "customer",
    "asked",
    "about",
    "a",
    "refund",
    "for",
    "order",
    "which",
    "arrived",
    "late",
    "and",
    "damaged",
    "assistant",
    "checked",
    "policy",
    "shipping",
    "window",
    "days",
    "replied",
    "with",
    "options",
    "store",
    "credit",
    "replacement",
    "escalate",
    "agent",
    "summary",
    "tool",
    "call",
    "returned",
    "status",
    "delivered",
    "warehouse",
    "carrier",
];

/// About `bytes` of text: common words, and a token of its own every few
/// words (ids, numbers), as LLM inputs have.
fn prose(bytes: usize) -> String {
    let mut text = String::with_capacity(bytes + 64);
    let mut n = uuid::Uuid::new_v4().as_u128() as u64 | 1;
    while text.len() < bytes {
        n ^= n << 13;
        n ^= n >> 7;
        n ^= n << 17;
        if n.is_multiple_of(8) {
            text.push_str(&format!("ref{:x} ", n >> 40));
        } else {
            text.push_str(WORDS[(n % WORDS.len() as u64) as usize]);
            text.push(' ');
        }
    }
    text
}

/// `count` traces of about `bytes` of input each, with a span, tags and a
/// session, as the SDK sends them.
fn batch(count: usize, bytes: usize) -> Vec<Value> {
    (0..count)
        .map(|i| {
            json!({
                "id": uuid::Uuid::new_v4().to_string(),
                "name": "support-chat",
                "session_id": format!("session-{}", i % 7),
                "tags": {"tier": "gold", "region": format!("r{}", i % 5)},
                "input": prose(bytes),
                "output": prose(200),
                "spans": [{
                    "name": "llm-call",
                    "type": "llm",
                    "model": "gpt-4o-mini",
                    "input": prose(bytes / 4),
                    "output": prose(100),
                    "prompt_tokens": 120,
                    "completion_tokens": 40
                }]
            })
        })
        .collect()
}

fn ids(traces: &[Value]) -> Vec<String> {
    traces
        .iter()
        .map(|t| t["id"].as_str().expect("id").to_owned())
        .collect()
}

/// Sends one batch; `Ok(ids)` when stored (201), `Err(response)` when
/// refused with 507. Anything else (a 500 above all) fails the test.
async fn send(server: &TestServer, traces: Vec<Value>) -> Result<Vec<String>, Response> {
    let sent = ids(&traces);
    let resp = server
        .post("/v1/ingest/batch", &json!({ "traces": traces }))
        .await;
    match resp.status().as_u16() {
        201 => Ok(sent),
        507 => Err(resp),
        other => {
            let body = resp.text().await.unwrap_or_default();
            panic!("ingest answered {other}, not 201 or 507: {body}");
        }
    }
}

/// Checks a 507: code `storage_full` and a `Retry-After` in seconds;
/// returns the error text.
async fn expect_storage_full(resp: Response) -> String {
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = expect_error(resp, 507).await;
    assert_eq!(body["code"], "storage_full", "{body}");
    assert!(
        retry_after.is_some_and(|s| s > 0),
        "a 507 without Retry-After: {body}"
    );
    body["error"].as_str().unwrap_or_default().to_owned()
}

/// `/ready`'s status and body.
async fn ready(server: &TestServer) -> (u16, Value) {
    let resp = server
        .client
        .get(server.url("/ready"))
        .send()
        .await
        .expect("ready");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("ready body"))
}

/// Fills `path` with `bytes` of data that takes real space.
fn write_filler(path: &Path, bytes: u64) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).expect("filler");
    let chunk = vec![0x5a_u8; MIB as usize];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(MIB) as usize;
        file.write_all(&chunk[..n]).expect("filler write");
        left -= n as u64;
    }
    file.sync_all().expect("filler sync");
}

/// Stops the server and checks its database: intact, and holding exactly
/// the traces acknowledged.
async fn stop_and_check(server: &mut TestServer, db: PathBuf, acked: &HashSet<String>) {
    if let Some(running) = server.running.take() {
        running.stop().await.expect("clean stop");
    }
    let conn = rusqlite::Connection::open(&db).expect("open the database");
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity check");
    assert_eq!(check, "ok");
    let stored: i64 = conn
        .query_row("SELECT count(*) FROM traces", [], |r| r.get(0))
        .expect("count");
    assert_eq!(
        stored as usize,
        acked.len(),
        "the database holds traces that were not acknowledged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_507_and_ingest_resumes_once_space_returns() {
    let disk = SmallDisk::mount(48 * MIB);
    let data = disk.path().join("data");
    let server = start_on(&data, "").await;
    let mut acked: HashSet<String> = HashSet::new();
    for _ in 0..5 {
        let stored = send(&server, batch(20, 2000)).await;
        acked.extend(stored.unwrap_or_else(|_| panic!("an empty disk refused ingest")));
    }
    let (status, body) = ready(&server).await;
    assert_eq!((status, &body["disk"]), (200, &json!("ok")), "{body}");

    // Leave a little more than the reserve free, so that the next large
    // batch passes the check before it runs and fails as it commits.
    let filler = disk.path().join("filler");
    let free = disk.disk();
    write_filler(&filler, free.free - free.reserve() - 2 * MIB);
    let refused = send(&server, batch(60, 100_000)).await;
    let message = expect_storage_full(refused.expect_err("6 MB stored in 5 MB")).await;
    assert!(
        message.contains("disk holding the database is full"),
        "the large batch was not refused by the full disk itself: {message}"
    );
    let (status, body) = ready(&server).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["disk"], "full", "{body}");
    assert_eq!(body["database"], "ok", "{body}");

    // Small batches fit until only the reserve is left.
    let mut refusals = 0;
    for _ in 0..200 {
        match send(&server, batch(10, 2000)).await {
            Ok(stored) => acked.extend(stored),
            Err(resp) => {
                expect_storage_full(resp).await;
                refusals += 1;
                if refusals == 3 {
                    break;
                }
            }
        }
    }
    assert_eq!(refusals, 3, "the disk never filled");
    let (status, body) = ready(&server).await;
    assert_eq!((status, &body["disk"]), (503, &json!("full")), "{body}");
    // Every route that adds data says the same; reads and searches go on.
    let some_id = acked.iter().next().expect("a stored trace").clone();
    let feedback = server
        .post(
            "/v1/feedback",
            &json!({"trace_id": some_id, "label": "good"}),
        )
        .await;
    expect_storage_full(feedback).await;
    let otlp = server
        .post(
            "/v1/otlp/traces",
            &json!({"resourceSpans": [{"scopeSpans": [{"spans": [{
                "traceId": "5b8efff798038103d269b633813fc60c",
                "spanId": "eee19b7ec3c1b174",
                "name": "chat",
                "startTimeUnixNano": "1700000000000000000",
                "endTimeUnixNano": "1700000001000000000"
            }]}]}]}),
        )
        .await;
    expect_storage_full(otlp).await;
    server.get_json("/v1/traces?q=refund&limit=5").await;

    // Space returns: what waits is indexed, then ingest is taken again.
    std::fs::remove_file(&filler).expect("remove the filler");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = ready(&server).await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not ready 30 s after space returned: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..5 {
        let stored = send(&server, batch(20, 2000)).await;
        acked.extend(stored.unwrap_or_else(|_| panic!("refused after space returned")));
    }

    let listed: HashSet<String> = server.list_all("", 200).await.into_iter().collect();
    let missing = acked.difference(&listed).count();
    assert_eq!(missing, 0, "{missing} acknowledged traces are not listed");
    assert_eq!(listed.len(), acked.len(), "traces listed that were refused");
    let mut server = server;
    stop_and_check(&mut server, data.join(DB_FILE), &acked).await;
    drop(server);
    drop(disk);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_size_cap_holds_whatever_the_size_of_the_batch() {
    const CAP: u64 = 8 * MIB;
    let server = TestServer::start_with_storage(&format!("max_db_size = {CAP}"), "").await;
    let data = server.dir.path().join("data");
    let mut acked: HashSet<String> = HashSet::new();
    let used = |body: &Value| body["db_used_bytes"].as_u64().expect("db_used_bytes");
    let files = |name: &str| std::fs::metadata(data.join(name)).map_or(0, |m| m.len());
    let on_disk = || files(DB_FILE) + files(&format!("{DB_FILE}-wal"));
    let mut peak_on_disk = 0;
    // Up to three quarters of the cap, then one batch of 4 MB: taken, it
    // would end far past the cap.
    for _ in 0..200 {
        let (_, body) = ready(&server).await;
        if used(&body) > CAP / 4 * 3 {
            break;
        }
        let stored = send(&server, batch(20, 4000)).await;
        acked.extend(stored.unwrap_or_else(|_| panic!("refused below the cap: {body}")));
        peak_on_disk = on_disk().max(peak_on_disk);
    }
    let refused = send(&server, batch(40, 100_000)).await;
    let message = expect_storage_full(refused.expect_err("a 4 MB batch at 6 of 8 MiB")).await;
    assert!(message.contains("max_db_size"), "{message}");
    // Then small batches until the cap refuses them too.
    let mut refused = false;
    for _ in 0..200 {
        match send(&server, batch(5, 4000)).await {
            Ok(stored) => acked.extend(stored),
            Err(resp) => {
                expect_storage_full(resp).await;
                refused = true;
                break;
            }
        }
        peak_on_disk = on_disk().max(peak_on_disk);
    }
    assert!(refused, "the cap never refused small batches");
    let (status, body) = ready(&server).await;
    assert_eq!((status, &body["storage"]), (503, &json!("full")), "{body}");

    let listed: HashSet<String> = server.list_all("", 200).await.into_iter().collect();
    assert_eq!(listed, acked);
    // A clean stop finishes the index merges; the search index is current.
    let db = data.join(DB_FILE);
    let mut server = server;
    stop_and_check(&mut server, db.clone(), &acked).await;
    let conn = rusqlite::Connection::open(&db).expect("open");
    let pragma = |name: &str| -> u64 {
        conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0))
            .expect("pragma") as u64
    };
    let held = (pragma("page_count") - pragma("freelist_count")) * pragma("page_size");
    let unindexed: i64 = conn
        .query_row(
            "SELECT coalesce((SELECT max(seq) FROM traces), 0) - seq \
             + (SELECT count(*) FROM trace_docs_dirty) FROM trace_docs_state",
            [],
            |r| r.get(0),
        )
        .expect("search backlog");
    assert_eq!(unindexed, 0, "rows the search index has not counted yet");
    let report = format!(
        "{held} bytes held against a cap of {CAP} ({:+.1}%); database and WAL files at most \
         {peak_on_disk} while filling ({:+.1}%), database file {} after a clean stop",
        (held as f64 / CAP as f64 - 1.0) * 100.0,
        (peak_on_disk as f64 / CAP as f64 - 1.0) * 100.0,
        files(DB_FILE),
    );
    assert!(
        held <= CAP + CAP / 20,
        "over the cap by more than 5%: {report}"
    );
    assert!(held > CAP / 10 * 9, "refused far below the cap: {report}");
    eprintln!("{report}");
}
