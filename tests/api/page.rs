//! The admin page as the server serves it: embedded files at `/`, `/docs`
//! and `/assets/…`, with a strict Content-Security-Policy and the security
//! headers every response carries. (The page itself is driven in a real
//! browser by `tests/ui.rs`.)

use std::path::Path;

use crate::common::{expect_error, TestServer};

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Every file of the page, as in the repository.
fn asset_files() -> Vec<(String, String)> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).expect("assets dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, root, out);
            } else if let Ok(text) = std::fs::read_to_string(&path) {
                let name = path
                    .strip_prefix(root)
                    .expect("under assets")
                    .to_string_lossy()
                    .replace('\\', "/");
                out.push((name, text));
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
    let mut out = Vec::new();
    walk(&root, &root, &mut out);
    out
}

#[tokio::test]
async fn the_page_is_served_with_a_strict_policy() {
    let server = TestServer::start().await;
    let resp = server
        .client
        .get(server.url("/"))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(header(&resp, "content-type"), "text/html; charset=utf-8");
    let csp = header(&resp, "content-security-policy");
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "object-src 'none'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} missing from {csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(header(&resp, "x-content-type-options"), "nosniff");
    assert_eq!(header(&resp, "referrer-policy"), "no-referrer");
    assert_eq!(header(&resp, "x-frame-options"), "DENY");
    // Plain HTTP: no HSTS (tests/tls.rs checks it under TLS).
    assert!(resp.headers().get("strict-transport-security").is_none());
    let etag = header(&resp, "etag");
    let html = resp.text().await.expect("html");
    assert!(html.contains("/assets/"), "{html}");

    // Unchanged: 304 without a body.
    let again = server
        .client
        .get(server.url("/"))
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("sent");
    assert_eq!(again.status().as_u16(), 304);

    // Every file is served with its type; an unknown one is a JSON 404.
    for (name, text) in asset_files() {
        if name == "README.md" {
            continue;
        }
        let resp = server
            .client
            .get(server.url(&format!("/assets/{name}")))
            .send()
            .await
            .expect("sent");
        assert_eq!(resp.status().as_u16(), 200, "{name}");
        if name.ends_with(".js") {
            assert_eq!(
                header(&resp, "content-type"),
                "text/javascript; charset=utf-8"
            );
        }
        if name.ends_with(".css") {
            assert_eq!(header(&resp, "content-type"), "text/css; charset=utf-8");
        }
        assert_eq!(resp.text().await.expect("body"), text, "{name}");
    }
    expect_error(server.get("/assets/nope.js").await, 404).await;
    expect_error(server.get("/assets/../Cargo.toml").await, 404).await;

    // API responses carry the same protective headers.
    let api = server.get("/v1/traces").await;
    assert_eq!(header(&api, "x-content-type-options"), "nosniff");
    assert_eq!(header(&api, "referrer-policy"), "no-referrer");
}

#[tokio::test]
async fn the_api_reference_is_served_under_the_pages_policy() {
    let server = TestServer::start().await;
    let fetch = |path: &str| server.client.get(server.url(path)).send();
    let page = fetch("/").await.expect("sent");
    // No credentials: the reference is public, like the document it draws.
    let docs = fetch("/docs").await.expect("sent");
    assert_eq!(docs.status().as_u16(), 200);
    assert_eq!(header(&docs, "content-type"), "text/html; charset=utf-8");
    let csp = header(&docs, "content-security-policy");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert_eq!(csp, header(&page, "content-security-policy"));
    assert_eq!(header(&docs, "x-frame-options"), "DENY");
    assert_eq!(header(&docs, "x-content-type-options"), "nosniff");
    assert_eq!(header(&docs, "cache-control"), "no-cache");
    let etag = header(&docs, "etag");
    assert_ne!(
        etag,
        header(&page, "etag"),
        "another document than the page"
    );
    let html = docs.text().await.expect("html");
    assert!(html.contains("/assets/docs.js"), "{html}");

    let again = server
        .client
        .get(server.url("/docs"))
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("sent");
    assert_eq!(again.status().as_u16(), 304);
}

#[test]
fn the_page_never_renders_data_as_html_nor_runs_inline_code() {
    let files = asset_files();
    assert!(files.iter().any(|(n, _)| n == "index.html"));
    for (name, text) in &files {
        if name.ends_with(".js") {
            // Data goes into the page as text only.
            for banned in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
                "new Function",
                "window.alert",
                "window.confirm",
                "window.prompt",
            ] {
                assert!(!text.contains(banned), "{name} uses {banned}");
            }
        }
        if name.ends_with(".html") {
            let lower = text.to_lowercase();
            // Scripts only from files; no inline handlers or styles.
            for (i, _) in lower.match_indices("<script") {
                let tag = &lower[i..i + lower[i..].find('>').unwrap_or(0)];
                assert!(tag.contains("src="), "{name}: inline script {tag}");
            }
            for banned in [
                " onclick=",
                " onload=",
                " onerror=",
                " style=",
                "javascript:",
            ] {
                assert!(!lower.contains(banned), "{name} has {banned}");
            }
            for external in ["http://", "https://", "//fonts."] {
                assert!(!lower.contains(external), "{name} loads {external}");
            }
        }
        if name.ends_with(".css") {
            assert!(!text.contains("@import url(http"), "{name}");
            assert!(!text.contains("url(http"), "{name}");
        }
    }
}
