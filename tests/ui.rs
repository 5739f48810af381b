//! The admin page in a real browser: Debian's Chromium, driven by
//! playwright-core from `tests/ui/e2e.mjs`, goes through every page of the
//! UI against a real server, and through the API reference at `/docs`
//! (`tests/ui/docs.mjs`). `tests/ui/setup.sh` installs both on first use
//! (Chromium with apt-get, playwright-core pinned by `tests/ui/package-lock.json`
//! under the target directory). Screenshots of every page are left in
//! `target/tmp/ui-screenshots/`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use common::TestServer;

const EMAIL: &str = "owner@example.com";

/// Every page the script photographs.
const SCREENSHOTS: &[&str] = &[
    "login",
    "projects",
    "overview",
    "traces",
    "trace-detail",
    "trace-detail-xss",
    "evals",
    "keys",
    "sessions",
    "users",
    "audit",
    "overview-dark",
    "overview-narrow",
    "traces-narrow",
    "keys-narrow",
    "docs",
    "docs-operation",
    "docs-dark",
    "docs-narrow",
];

/// The directory holding playwright-core, installed once (with Chromium,
/// when the machine lacks it) by `tests/ui/setup.sh`.
fn install_browser() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-node");
    let setup = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui/setup.sh");
    let output = Command::new("sh")
        .arg(setup)
        .arg(&dir)
        .output()
        .expect("sh runs");
    assert!(
        output.status.success(),
        "tests/ui/setup.sh failed (it installs chromium with apt-get and playwright-core with npm):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    dir
}

/// Where the screenshots go, emptied first so none is left from a past run.
fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("emptying {}: {e}", dir.display()),
    }
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    dir
}

fn text<'a>(facts: &'a Value, name: &str) -> &'a str {
    facts[name]
        .as_str()
        .unwrap_or_else(|| panic!("fact {name} is not text: {facts}"))
}

#[tokio::test]
async fn an_operator_goes_through_every_page_of_the_admin_ui() {
    let node_dir = tokio::task::spawn_blocking(install_browser)
        .await
        .expect("setup task");
    let server = TestServer::start().await;
    let shots = screenshot_dir();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui/e2e.mjs");
    let (url, out) = (server.url.clone(), shots.clone());
    // Blocking in a task of its own: the server runs on this test's runtime.
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .arg(url)
            .arg(node_dir)
            .arg(out)
            .args([EMAIL, common::PASSWORD])
            .output()
            .expect("node runs")
    })
    .await
    .expect("browser task");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "the browser script printed no report ({e}), exit {}:\n{stderr}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout)
        )
    });
    let pretty = serde_json::to_string_pretty(&report).expect("report prints");
    std::fs::write(shots.join("report.json"), &pretty).expect("write the report");
    assert!(
        report["error"].is_null(),
        "the browser run failed; screenshots in {}\n{pretty}\n{stderr}",
        shots.display()
    );
    assert!(output.status.success(), "exit {}: {stderr}", output.status);
    for list in [
        "dialogs",
        "page_errors",
        "console_errors",
        "foreign_requests",
        "failed_requests",
        "unexpected_responses",
    ] {
        assert_eq!(
            report[list].as_array().map(Vec::len),
            Some(0),
            "{list} must stay empty: {}",
            report[list]
        );
    }

    let facts = &report["facts"];
    let names = &report["names"];
    let id = |name: &str| report["ids"][name].as_str().expect("trace id").to_owned();
    let (rag, xss, failing) = (id("rag"), id("xss"), id("failing"));
    let sorted = |mut ids: Vec<String>| {
        ids.sort();
        json!(ids)
    };

    // Logging in: the wrong password is named, the right one lets in.
    assert!(text(facts, "index_content_type").starts_with("text/html"));
    assert!(!text(facts, "login_error").is_empty(), "{facts}");
    assert_eq!(facts["nav_after_wrong_password"], 0);
    assert!(text(facts, "whoami").contains(EMAIL), "{facts}");
    let nav: Vec<&str> = facts["nav_links"]
        .as_array()
        .expect("nav links")
        .iter()
        .filter_map(|link| link[0].as_str())
        .collect();
    for page in [
        "overview", "traces", "sessions", "evals", "projects", "keys", "users", "audit",
    ] {
        assert!(nav.contains(&format!("nav-{page}").as_str()), "{nav:?}");
    }

    // The key made in the UI ingested into the project made in the UI.
    assert_eq!(facts["secret_prefix"], "tl_");
    if facts["copy_button"] != 0 {
        assert_eq!(facts["clipboard_holds_key"], true, "{facts}");
    }
    assert_eq!(
        facts["traces_listed_with_key"],
        sorted(vec![rag.clone(), xss.clone(), failing.clone()])
    );
    let projects = server.get_json("/v1/projects").await;
    let project = projects["projects"]
        .as_array()
        .expect("projects")
        .iter()
        .find(|p| p["name"] == names["project"])
        .unwrap_or_else(|| panic!("no project {} in {projects}", names["project"]));
    assert_eq!(facts["project_of_ingested"], json!([project["id"]]));

    // The spare project went to the archive and came back.
    assert_eq!(facts["spare_buttons_archived"], 0, "{facts}");
    assert_eq!(facts["spare_buttons_unarchived"], 0, "{facts}");
    let all = server.get_json("/v1/projects?include_archived=true").await;
    let spare = all["projects"]
        .as_array()
        .expect("projects")
        .iter()
        .find(|p| p["name"] == names["spare"])
        .unwrap_or_else(|| panic!("no project {} in {all}", names["spare"]));
    assert_eq!(spare["archived"], false, "{spare}");

    // Overview, list, search, filters and the live tail.
    assert!(text(facts, "card_traces").contains('3'), "{facts}");
    assert!(text(facts, "models_table").contains("gpt-4o-mini"));
    assert_eq!(facts["trace_rows"], 3);
    assert_eq!(facts["xss_img_in_list"], 0);
    assert_eq!(facts["error_filter_rows"], json!([failing]));
    assert_eq!(facts["search_rows"], json!([rag]));
    assert_eq!(facts["live_stream_status"], 200);
    assert_eq!(facts["live_row_first"], true, "{facts}");
    assert_eq!(facts["feedback_filter_rows"], json!([rag]));
    assert_eq!(
        facts["model_filter_rows"],
        sorted(vec![rag.clone(), xss.clone()])
    );
    assert!(text(facts, "failing_error").contains("ZeroDivisionError"));
    assert_eq!(facts["failing_span_rows"], 1);

    // The detail: the span tree, feedback, an evaluation.
    assert_eq!(facts["trace_name"], "ui-e2e-rag");
    assert!(text(facts, "trace_input").contains(text(names, "word")));
    assert!(text(facts, "trace_tags").contains("rag"), "{facts}");
    assert_eq!(facts["span_rows"], 2);
    assert_eq!(facts["span_bars"], 2);
    for width in facts["span_bar_widths"].as_array().expect("widths") {
        assert!(width.as_i64() > Some(0), "a span bar has no width: {facts}");
    }
    assert!(text(facts, "span_detail").contains("openai.chat"));
    assert!(text(facts, "feedback_item").contains(text(names, "feedback")));
    assert!(text(facts, "eval_item").contains("not_empty"));
    let detail = server.get_json(&format!("/v1/traces/{rag}")).await;
    let feedback = &detail["feedback"][0];
    assert_eq!(feedback["label"], "good", "{detail}");
    assert_eq!(feedback["comment"], names["feedback"], "{detail}");
    let evaluation = &detail["evaluations"][0];
    assert_eq!(evaluation["metric_name"], "not_empty", "{detail}");
    assert_eq!(evaluation["status"], "complete", "{detail}");
    assert_eq!(evaluation["label"], "pass", "{detail}");

    // Hostile text stays text.
    assert!(text(facts, "xss_input").contains("<img src=x onerror=alert(1)>"));
    assert!(text(facts, "xss_metadata").contains("<script>alert(2)</script>"));
    assert!(text(facts, "xss_output").contains("<b>not bold</b>"));
    assert_eq!(facts["xss_img"], 0);
    assert_eq!(facts["xss_script"], 0);
    assert_eq!(facts["xss_svg_onload"], 0);
    assert_eq!(facts["xss_bold"], 0);

    // The API reference: linked from the admin page, served under its
    // policy, and its console sends what the reader typed, nothing else.
    let admin_page = server.get("/").await;
    let csp = admin_page
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .expect("the admin page's policy");
    assert_eq!(facts["docs_path"], "/docs");
    assert!(text(facts, "docs_content_type").starts_with("text/html"));
    assert_eq!(text(facts, "docs_csp"), csp);
    assert!(facts["docs_operations"].as_u64() > Some(20), "{facts}");
    assert!(facts["docs_groups"].as_u64() > Some(1), "{facts}");
    assert_eq!(facts["docs_slash_focuses_filter"], true);
    let filtered = facts["docs_filtered"].as_array().expect("filtered");
    assert!(
        filtered.len() < facts["docs_operations"].as_u64().unwrap_or(0) as usize,
        "{facts}"
    );
    for listed in filtered {
        let listed = listed.as_str().unwrap_or_default();
        assert!(listed.starts_with("get /v1/traces"), "{listed}");
    }
    assert!(text(facts, "docs_op_title").starts_with("GET"), "{facts}");
    assert!(text(facts, "docs_op_title").ends_with("/v1/traces"));
    assert!(!text(facts, "docs_op_access").is_empty());
    assert!(
        facts["docs_op_statuses"].to_string().contains("\"200\""),
        "{facts}"
    );
    assert_eq!(facts["docs_session_cookie_present"], true);
    assert!(text(facts, "docs_status_without_token").starts_with("401"));
    assert!(text(facts, "docs_status_with_key").starts_with("200"));
    for id in [&rag, &xss, &failing] {
        assert!(text(facts, "docs_response").contains(id.as_str()), "{id}");
    }
    assert!(text(facts, "docs_response").contains("<img src=x onerror=alert(1)>"));
    assert_eq!(facts["docs_response_markup"], 0);
    assert!(text(facts, "docs_response_headers").contains("x-request-id"));
    assert!(text(facts, "docs_curl").contains("Bearer $TRULAYER_API_KEY"));
    assert!(text(facts, "docs_curl").contains("/v1/traces"));
    assert_eq!(facts["docs_curl_shows_key"], false);
    assert_eq!(facts["docs_token_kept"], true);
    assert!(text(facts, "docs_detail_status").starts_with("200"));
    assert!(text(facts, "docs_detail_response").contains("ui-e2e-rag"));
    assert!(text(facts, "docs_detail_curl").contains(rag.as_str()));
    for (place, kept) in facts["docs_key_kept_in"].as_object().expect("places") {
        assert_eq!(kept, false, "the key is kept in {place}");
    }
    assert_eq!(facts["docs_token_after_reload"], "");
    assert_ne!(
        facts["docs_background_dark"],
        facts["docs_background_light"]
    );
    assert!(facts["docs_narrow_overflow"]
        .as_i64()
        .is_some_and(|o| o <= 0));

    // The evaluation rule made in the UI, switched off in the UI.
    assert_eq!(facts["rule_enabled_before"], true);
    assert_eq!(facts["rule_enabled_after"], false);
    let rules = server
        .get_json(&format!(
            "/v1/eval-rules?project_id={}",
            project["id"].as_str().expect("id")
        ))
        .await;
    let rule = rules["items"]
        .as_array()
        .expect("rules")
        .iter()
        .find(|r| r["metric_name"] == names["rule"])
        .unwrap_or_else(|| panic!("no rule {} in {rules}", names["rule"]));
    assert_eq!(rule["enabled"], false, "{rule}");
    assert_eq!(rule["evaluator_type"], "rule", "{rule}");

    // Rotation replaces the secret; revocation ends the key.
    assert_eq!(facts["old_key_after_rotate"], 401);
    assert_eq!(facts["new_key_after_rotate"], 200);
    assert_eq!(facts["rotated_key_after_revoke"], 401);
    assert!(text(facts, "key_status").to_lowercase().contains("revoked"));
    let token = server.session_token().await;
    let keys = server.get_json_as(&token, "/v1/apikeys").await;
    let key = keys
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["name"] == names["key"])
        .unwrap_or_else(|| panic!("no key {} in {keys}", names["key"]));
    assert!(key["revoked_at"].is_string(), "{key}");
    assert_eq!(key["project_id"], project["id"], "{key}");

    // The other pages.
    assert!(text(facts, "sessions_table").contains(text(names, "session")));
    assert!(text(facts, "session_hash").ends_with(text(names, "session")));
    assert_eq!(facts["session_trace_rows"], sorted(vec![rag.clone(), xss]));
    assert!(text(facts, "users_table").contains(EMAIL));
    assert!(text(facts, "new_user_row").contains(text(names, "user")));
    // A wrong current password is refused in the dialog, nothing changed.
    assert!(
        text(facts, "password_error").contains("not right"),
        "{facts}"
    );
    // Nothing is wider than a narrow window (tables scroll in their box).
    for (page, overflow) in facts["narrow_overflow"].as_object().expect("narrow") {
        assert!(
            overflow.as_i64().is_some_and(|o| o <= 0),
            "{page} overflows: {overflow}"
        );
    }
    // The password reset from the users page took: old refused, new accepted.
    assert_eq!(facts["reset_old_login"], 401, "{facts}");
    assert_eq!(facts["reset_new_login"], 200, "{facts}");
    let users = server.get_json_as(&token, "/v1/users").await;
    assert!(users.to_string().contains(text(names, "user")), "{users}");
    let audit = text(facts, "audit_table");
    for action in [
        "project.archive",
        "project.unarchive",
        "apikey.rotate",
        "apikey.revoke",
    ] {
        assert!(
            audit.contains(action),
            "{action} not in the audit page: {audit}"
        );
    }
    assert!(text(facts, "audit_verify").contains("Intact"), "{facts}");
    assert_ne!(
        facts["theme_after"]["background"], facts["theme_before"]["background"],
        "{facts}"
    );
    assert_eq!(
        facts["theme_after_reload"], facts["theme_after"],
        "the theme is kept"
    );

    // Logging out ends the session, in the page and for the cookie.
    assert!(
        text(facts, "hash_after_logout").contains("login"),
        "{facts}"
    );
    assert_eq!(facts["nav_after_reload"], 0);
    assert_eq!(facts["me_before_logout"], 200);
    assert_eq!(facts["me_after_logout"], 401);
    assert_eq!(facts["traces_with_old_cookie"], 401);
    assert_eq!(facts["traces_table_logged_out"], 0);
    assert_eq!(facts["trace_rows_logged_out"], 0);

    for name in SCREENSHOTS {
        let file = shots.join(format!("{name}.png"));
        let bytes =
            std::fs::read(&file).unwrap_or_else(|e| panic!("screenshot {}: {e}", file.display()));
        assert!(
            bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 2_000,
            "{} is no screenshot",
            file.display()
        );
    }
    eprintln!("screenshots of every page: {}", shots.display());
    server.stop().await;
}
