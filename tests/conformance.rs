//! Conformance with the hosted service's published API document
//! (`docs/reference/trulayer-openapi.yaml`): schemathesis (pinned, installed from
//! PyPI into a virtual environment under the target directory on first
//! use) generates requests for every operation the server shares with the
//! document, from the document's schemas, and checks every answer: no
//! server error, and a response that conforms to the document's schema for
//! its status. The operations are those of the route table whose path the
//! document has too, so a route added later is covered without a change
//! here.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use trulayer_server::http::router::routes;

use common::TestServer;

const SCHEMATHESIS: &str = "schemathesis==4.32.5";
/// Examples per operation and phase; a fixed seed keeps a run repeatable.
const MAX_EXAMPLES: &str = "20";
const SEED: &str = "20261206";

/// Routes left out: two end the session the run uses, and the live feed is
/// a stream that does not end (each example would wait for the request
/// timeout); `tests/api/live.rs` checks its events.
const LEFT_OUT: [&str; 3] = ["/v1/auth/logout", "/v1/auth/password", "/v1/traces/live"];

fn schemathesis() -> PathBuf {
    common::python::venv("schemathesis-venv", &[SCHEMATHESIS]).join("bin/schemathesis")
}

/// The hosted service's published API document, as kept in the project.
fn reference() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/reference/trulayer-openapi.yaml")
}

/// A regular expression matching the path templates of the routes the
/// server implements under `/v1`, whatever the document names their
/// parameters.
fn implemented_paths(document: &str) -> (String, usize) {
    let (regex, _) = paths_regex(|p| p.starts_with("/v1/"));
    // How many of them the document has (a template's parameter names may
    // differ: compare with the names blanked).
    let blank = |p: &str| {
        p.split('/')
            .map(|s| if s.starts_with('{') { "{}" } else { s })
            .collect::<Vec<_>>()
            .join("/")
    };
    let documented: Vec<String> = document
        .lines()
        .filter_map(|l| l.strip_prefix("  /v1/"))
        .filter_map(|l| l.strip_suffix(':'))
        .map(|p| blank(&format!("/v1/{p}")))
        .collect();
    let shared = routes()
        .into_iter()
        .filter(|r| !LEFT_OUT.contains(&r.path.as_str()))
        .map(|r| blank(&r.path))
        .filter(|p| documented.contains(p))
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    (regex, shared)
}

/// A regular expression matching the path templates of the routes `keep`
/// keeps (less those left out), and how many operations they have.
fn paths_regex(keep: impl Fn(&str) -> bool) -> (String, usize) {
    let kept: Vec<String> = routes()
        .into_iter()
        .map(|r| r.path)
        .filter(|p| keep(p) && !LEFT_OUT.contains(&p.as_str()))
        .collect();
    let operations = kept.len();
    let mut paths: Vec<String> = kept
        .into_iter()
        .map(|p| {
            p.split('/')
                .map(|part| {
                    if part.starts_with('{') {
                        r"\{[^/}]+\}".to_owned()
                    } else {
                        regex_escape(part)
                    }
                })
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect();
    paths.sort();
    paths.dedup();
    (format!("^({})$", paths.join("|")), operations)
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = r"\.+*?()|[]{}^$-".contains(c);
            special.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

/// Runs schemathesis on `document` (a file or a URL) against `server`
/// with the owner's session, for the paths `paths` matches, with `checks`;
/// its report when every check passed, and the number of operations it tested.
async fn run_schemathesis(
    server: &TestServer,
    document: String,
    paths: String,
    checks: &str,
) -> (String, usize) {
    let bin = tokio::task::spawn_blocking(schemathesis)
        .await
        .expect("venv");
    // The owner's session reaches every route, those for sessions only too.
    let token = server.session_token().await;
    let url = server.url.clone();
    let checks = checks.to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(bin)
            .arg("run")
            .arg(&document)
            .args(["--url", &url])
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .args(["--checks", &checks])
            .args(["--max-examples", MAX_EXAMPLES, "--seed", SEED])
            .args(["--include-path-regex", &paths])
            .args(["--request-timeout", "10"])
            .args(["--no-color"])
            .env("SCHEMATHESIS_HOOKS", "")
            .output()
            .expect("schemathesis runs")
    })
    .await
    .expect("schemathesis task");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "schemathesis found failures:\n{stdout}\n{stderr}"
    );
    let tested: usize = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Tested: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count of tested operations:\n{stdout}"));
    eprintln!(
        "{}",
        stdout
            .lines()
            .skip_while(|l| !l.contains("SUMMARY"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    (stdout, tested)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_operations_answer_as_the_reference_document_says() {
    let document = reference();
    let text = std::fs::read_to_string(&document).expect("the reference document");
    let (paths, shared) = implemented_paths(&text);
    assert!(shared >= 20, "only {shared} paths shared with the document");
    let server = TestServer::start().await;
    let (stdout, tested) = run_schemathesis(
        &server,
        document.display().to_string(),
        paths,
        "not_a_server_error,response_schema_conformance",
    )
    .await;
    // It ran what it was given: the operations of the shared paths.
    assert!(tested >= shared, "{tested} operations tested:\n{stdout}");
}

/// The server's own document (`GET /v1/openapi.json`), for every operation
/// it documents: no server error, every response of a documented status
/// and of the schema the document gives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_answers_as_the_servers_own_document_says() {
    let server = TestServer::start().await;
    let (paths, everything) = paths_regex(|_| true);
    let (stdout, tested) = run_schemathesis(
        &server,
        server.url("/v1/openapi.json"),
        paths,
        "not_a_server_error,response_schema_conformance,status_code_conformance,\
         content_type_conformance",
    )
    .await;
    assert_eq!(tested, everything, "operations tested:\n{stdout}");
}
