//! HTTPS with rustls: both TLS 1.2 and 1.3 clients connect, plain HTTP does
//! not, and an unusable certificate stops the start with a clear message.

mod common;

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use trulayer_server::config::Config;

/// Writes a self-signed certificate for 127.0.0.1 and its key; returns the PEM cert.
fn self_signed(dir: &Path) -> String {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("certificate");
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).expect("write cert");
    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).expect("write key");
    cert.cert.pem()
}

fn tls_section(dir: &Path) -> String {
    format!(
        "[server.tls]\ncert = {:?}\nkey = {:?}\n",
        dir.join("cert.pem").display().to_string(),
        dir.join("key.pem").display().to_string()
    )
}

#[tokio::test]
async fn serves_https_with_tls_12_and_13() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pem = self_signed(dir.path());
    // The [init] table ends the harness's config; TLS goes in a file of its own.
    let path = common::write_config(dir.path(), "");
    let mut text = std::fs::read_to_string(&path).expect("read");
    text = format!("{}\n{text}", tls_section(dir.path()));
    std::fs::write(&path, text).expect("write");
    let server = common::TestServer::start_in(dir, &path).await;
    assert!(server.url.starts_with("https://"), "{}", server.url);
    let health = format!("{}/health", server.url);

    for version in [
        reqwest::tls::Version::TLS_1_2,
        reqwest::tls::Version::TLS_1_3,
    ] {
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).expect("pem"))
            .min_tls_version(version)
            .max_tls_version(version)
            .build()
            .expect("client");
        let resp = client.get(&health).send().await.expect("TLS request");
        assert_eq!(resp.status(), 200, "{version:?}");
    }
    // Authenticated API calls work over TLS too.
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).expect("pem"))
        .build()
        .expect("client");
    let resp = client
        .get(format!("{}/v1/traces", server.url))
        .bearer_auth(common::KEY)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    // Under TLS, browsers are told to keep to HTTPS.
    assert_eq!(
        resp.headers()
            .get("strict-transport-security")
            .and_then(|v| v.to_str().ok()),
        Some("max-age=31536000")
    );
    // Under TLS the session cookie is Secure.
    let login = client
        .post(format!("{}/v1/auth/login", server.url))
        .json(&serde_json::json!({"email": "owner@example.com", "password": common::PASSWORD}))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), 200);
    let cookie = login.headers()["set-cookie"].to_str().expect("ascii");
    assert!(
        cookie.contains("; Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = server.url.replace("https://", "http://");
    let answer = reqwest::Client::new()
        .get(format!("{plain}/health"))
        .send()
        .await;
    assert!(answer.is_err() || !answer.as_ref().is_ok_and(|r| r.status().is_success()));
    server.stop().await;
}

#[tokio::test]
async fn an_unusable_certificate_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    self_signed(dir.path());
    // A key that does not belong to the certificate.
    let other = rcgen::generate_simple_self_signed(vec!["other".into()]).expect("certificate");
    std::fs::write(
        dir.path().join("key.pem"),
        other.signing_key.serialize_pem(),
    )
    .expect("write");
    let path = common::write_config(dir.path(), "");
    let text = std::fs::read_to_string(&path).expect("read");
    std::fs::write(&path, format!("{}\n{text}", tls_section(dir.path()))).expect("write");
    let config = Config::load(Some(&path)).expect("the files exist, so the config loads");
    let error = match trulayer_server::server::start(config).await {
        Ok(_) => panic!("started with a mismatched key"),
        Err(e) => format!("{e:#}"),
    };
    assert!(error.contains("server.tls"), "{error}");

    // Garbage instead of PEM is refused the same way.
    std::fs::write(dir.path().join("cert.pem"), "not a certificate").expect("write");
    let config = Config::load(Some(&path)).expect("loads");
    let error = match trulayer_server::server::start(config).await {
        Ok(_) => panic!("started with a garbage certificate"),
        Err(e) => format!("{e:#}"),
    };
    assert!(error.contains("server.tls.cert"), "{error}");
}

/// The DER of a PEM certificate.
fn der_of(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("pem")
        .to_vec()
}

#[tokio::test]
async fn a_reload_swaps_the_certificate_under_load_without_a_failed_request() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    let dir = tempfile::tempdir().expect("tempdir");
    let first = self_signed(dir.path());
    let path = common::write_config(dir.path(), "");
    let text = std::fs::read_to_string(&path).expect("read");
    std::fs::write(&path, format!("{}\n{text}", tls_section(dir.path()))).expect("write");
    let server = common::TestServer::start_in(dir, &path).await;
    let health = format!("{}/health", server.url);
    // Each request on a new connection, so each one makes a handshake.
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .pool_max_idle_per_host(0)
        .tls_info(true)
        .build()
        .expect("client");
    let served = |resp: &reqwest::Response| -> Vec<u8> {
        resp.extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|i| i.peer_certificate())
            .expect("peer certificate")
            .to_vec()
    };
    let resp = client.get(&health).send().await.expect("request");
    assert_eq!(served(&resp), der_of(&first));

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (client, url) = (client.clone(), health.clone());
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    // A new certificate and key in the same files, then the reload.
    let second = self_signed(server.dir.path());
    let config = Config::load(Some(&path)).expect("config");
    let applied = server.running().reload(&config).expect("reload");
    assert!(applied.iter().any(|a| a.contains("TLS")), "{applied:?}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let resp = client.get(&health).send().await.expect("request");
    assert_eq!(
        served(&resp),
        der_of(&second),
        "new connections get the new certificate"
    );

    // A broken certificate is refused and the working one stays.
    std::fs::write(server.dir.path().join("cert.pem"), "not a certificate").expect("write");
    let refused = server.running().reload(&config).expect_err("refused");
    assert!(
        format!("{refused:#}").contains("server.tls.cert"),
        "{refused:#}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let resp = client.get(&health).send().await.expect("request");
    assert_eq!(served(&resp), der_of(&second));

    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.expect("load task");
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "failed requests");
    assert!(ok.load(Ordering::Relaxed) > 20, "the load ran");
}
