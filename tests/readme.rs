//! The README's set-up, sending-traces and operator commands, run as a
//! reader runs them from a source checkout, so that they cannot go stale.
//!
//! The blocks are taken from README.md as written; only what a reader's
//! machine differs in is changed: `cargo run --release --` and
//! `target/release/trulayer-server` become the binary this test was built
//! with (so `cargo build --release` is skipped), the address is a free
//! loopback port instead of 8080, and `tl_...` is the key the first start
//! wrote. The Python blocks run in a virtual environment with the `trulayer`
//! SDK and the OpenTelemetry packages from PyPI (pinned), made on first use
//! under the target directory.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const PACKAGES: [&str; 3] = [
    "trulayer==0.1.5",
    "opentelemetry-sdk==1.45.2",
    "opentelemetry-exporter-otlp-proto-http==1.45.2",
];

/// The fenced blocks of language `lang` in the README section headed
/// `## {title}`.
fn blocks(title: &str, lang: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let heading = format!("## {title}");
    let mut in_section = false;
    // Inside a block: whether it is one of those wanted, and its text.
    let mut block: Option<(bool, String)> = None;
    let mut found = Vec::new();
    for line in readme.lines() {
        if let Some((wanted, text)) = block.as_mut() {
            if line.starts_with("```") {
                if *wanted {
                    found.push(std::mem::take(text));
                }
                block = None;
            } else {
                text.push_str(line);
                text.push('\n');
            }
        } else if line.starts_with("## ") {
            in_section = line == heading;
        } else if let Some(tag) = line.strip_prefix("```") {
            block = Some((in_section && tag == lang, String::new()));
        }
    }
    found
}

/// The commands of a README block, as run here.
fn localize(text: &str, bin: &Path, addr: &str, key: &str) -> String {
    text.replace("cargo build --release", ": cargo build --release")
        .replace("cargo run --release --", &bin.display().to_string())
        .replace("target/release/trulayer-server", &bin.display().to_string())
        .replace("127.0.0.1:8080", addr)
        .replace("tl_...", key)
}

/// The Python of a virtual environment with [`PACKAGES`].
fn python() -> PathBuf {
    common::python::venv("readme-venv", &PACKAGES).join("bin/python")
}

fn run(program: &Path, args: &[&str], script: &str, dir: &Path) -> Output {
    let output = Command::new(program)
        .args(args)
        .arg(script)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    assert!(
        output.status.success(),
        "failed: {script}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The server the set-up command started; stopped when dropped.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn get(addr: &str, key: &str, path: &str) -> Option<Value> {
    let output = Command::new("curl")
        .args(["-sf", "-H", &format!("Authorization: Bearer {key}")])
        .arg(format!("http://{addr}{path}"))
        .output()
        .ok()?;
    serde_json::from_slice(&output.stdout).ok()
}

/// The traces the server lists, by name, waiting up to 10 s for `name`.
fn wait_for_trace(addr: &str, key: &str, name: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed = get(addr, key, "/v1/traces?limit=200").unwrap_or(Value::Null);
        if let Some(trace) = listed["traces"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["name"] == name))
        {
            return trace.clone();
        }
        assert!(Instant::now() < deadline, "no trace {name:?} in {listed}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_readme_commands_run_as_written() {
    let python = python();
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_trulayer-server"));
    let checkout = tempfile::tempdir().expect("tempdir");
    let dir = checkout.path();
    let addr = format!("127.0.0.1:{}", free_port());

    // Set up: the one command that runs the server (the other runs these
    // tests).
    let setup = blocks("Set up", "sh");
    assert_eq!(
        setup.iter().map(|b| b.trim()).collect::<Vec<_>>(),
        ["cargo run --release -- serve", "cargo test --locked"],
        "the README's two set-up commands"
    );
    let serve = localize(&setup[0], &bin, &addr, "");
    let _served = Served(
        Command::new("bash")
            .args(["-c", &format!("exec {serve}")])
            .current_dir(dir)
            .env("TRULAYER_SERVER__LISTEN", &addr)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the server starts"),
    );
    let credentials = dir.join("trulayer-data/initial-credentials");
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(&addr, "", "/health").is_none() || !credentials.exists() {
        assert!(Instant::now() < deadline, "the server did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let written = std::fs::read_to_string(&credentials).expect("credentials");
    let key = written
        .lines()
        .find_map(|l| l.strip_prefix("api_key = "))
        .map(|k| k.trim_matches('"').to_owned())
        .expect("an API key in the first start's credentials");

    // Sending traces: the SDK, curl, then the OpenTelemetry program.
    let python_blocks = blocks("Sending traces", "python");
    assert_eq!(python_blocks.len(), 2, "the SDK and OpenTelemetry examples");
    run(
        &python,
        &["-c"],
        &localize(&python_blocks[0], &bin, &addr, &key),
        dir,
    );
    let rag = wait_for_trace(&addr, &key, "rag-query");
    assert_eq!(rag["session_id"], "s-1", "{rag}");

    let shell = blocks("Sending traces", "sh");
    assert_eq!(shell.len(), 1, "the curl example");
    let out = run(
        Path::new("bash"),
        &["-euc"],
        &localize(&shell[0], &bin, &addr, &key),
        dir,
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    let checkout_trace = wait_for_trace(&addr, &key, "checkout");
    let id = checkout_trace["id"].as_str().expect("id");
    assert!(
        printed.matches(id).count() >= 3,
        "stored, listed by its tag and read back: {printed}"
    );
    let detail = get(&addr, &key, &format!("/v1/traces/{id}")).expect("detail");
    assert_eq!(detail["model"], "gpt-4o", "{detail}");

    run(
        &python,
        &["-c"],
        &localize(&python_blocks[1], &bin, &addr, &key),
        dir,
    );
    let otel = wait_for_trace(&addr, &key, "answer-question");
    let detail = get(
        &addr,
        &key,
        &format!("/v1/traces/{}", otel["id"].as_str().expect("id")),
    )
    .expect("detail");
    assert_eq!(detail["model"], "gpt-4o-mini", "{detail}");

    // Operator commands, from the checkout, while the server runs: each
    // prints one JSON line. (The installed-package form names a file that
    // only the package puts in place.)
    let operator = blocks("Operator commands", "sh");
    assert_eq!(operator.len(), 2, "the checkout form and the package form");
    assert!(operator[1].contains("--config /etc/trulayer/trulayer.toml"));
    let out = run(
        Path::new("bash"),
        &["-euc"],
        &localize(&operator[0], &bin, &addr, &key),
        dir,
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 5, "one JSON line per command: {lines:?}");
    let acme_key = lines[0]["api_key"].as_str().expect("create-org's key");
    // The new organisation's keys work against the running server; the
    // query-only key reads.
    assert!(get(&addr, acme_key, "/v1/traces").is_some());
    let dashboards = lines[3]["api_key"].as_str().expect("create-key's key");
    assert!(get(&addr, dashboards, "/v1/projects").is_some());
}
