//! Connections that never send a request cannot hold the server: idle ones
//! are closed at every phase before a request (plain, after the HTTP/2
//! preface, after TLS, between requests), past `server.max_connections` new
//! ones are closed at once and counted, long responses are not cut, and
//! running out of file descriptors slows the accept loop down without
//! flooding the log.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::TestServer;

/// The HTTP/2 connection preface, and an empty SETTINGS frame.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const H2_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

fn addr(server: &TestServer) -> String {
    server
        .url
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .to_owned()
}

/// Reads until the server closes the connection; panics if it is still
/// open after `within`. Returns what the server sent.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    within: Duration,
) -> Vec<u8> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the connection is still open after {within:?}"
    );
    got
}

/// The types of the HTTP/2 frames in `bytes`.
fn frame_types(mut bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while bytes.len() >= 9 {
        let len = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        types.push(bytes[3]);
        bytes = &bytes[(9 + len).min(bytes.len())..];
    }
    types
}

#[tokio::test]
async fn connections_idle_before_and_between_requests_are_closed() {
    let server = TestServer::start_with_server("idle_timeout_s = 1\n", "").await;
    let limit = Duration::from_secs(10);

    // Nothing at all.
    let mut silent = TcpStream::connect(addr(&server)).await.expect("connect");
    // The HTTP/2 preface only.
    let mut preface = TcpStream::connect(addr(&server)).await.expect("connect");
    preface.write_all(H2_PREFACE).await.expect("preface");
    // Preface and SETTINGS, then no stream.
    let mut h2 = TcpStream::connect(addr(&server)).await.expect("connect");
    h2.write_all(H2_PREFACE).await.expect("preface");
    h2.write_all(H2_SETTINGS).await.expect("settings");
    // One HTTP/1.1 request on a keep-alive connection, then nothing.
    let mut kept = TcpStream::connect(addr(&server)).await.expect("connect");
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .expect("request");

    assert!(closed_within(&mut silent, limit).await.is_empty());
    closed_within(&mut preface, limit).await;
    let h2_bytes = closed_within(&mut h2, limit).await;
    // The server's SETTINGS, then a GOAWAY frame as it closes.
    assert!(frame_types(&h2_bytes).contains(&7), "{h2_bytes:?}");
    let answer = closed_within(&mut kept, limit).await;
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");

    // The server is as good as before.
    assert_eq!(server.get("/health").await.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn a_long_response_is_not_cut_by_the_idle_timeout() {
    let server = TestServer::start_with_server("idle_timeout_s = 1\n", "").await;
    let mut live = server
        .client
        .get(server.url("/v1/traces/live"))
        .bearer_auth(&server.key)
        .send()
        .await
        .expect("live feed");
    assert_eq!(live.status(), 200);
    // Three idle periods without a byte from the feed, then a trace.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let id = server.ingest(common::sample_trace("late")).await;
    let mut seen = String::new();
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(chunk)) = live.chunk().await {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains(&id) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        found,
        Ok(true),
        "the feed ended or missed the trace: {seen}"
    );
    server.stop().await;
}

#[tokio::test]
async fn past_max_connections_new_ones_are_closed_at_once_and_counted() {
    let server = TestServer::start_with_server(
        "max_connections = 8\nidle_timeout_s = 30\n",
        "[metrics]\ntoken = \"scrape-token-0123456789\"\n",
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(TcpStream::connect(addr(&server)).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The ninth is accepted by the kernel and closed by the server at once.
    let mut ninth = TcpStream::connect(addr(&server)).await.expect("connect");
    let _ = ninth
        .write_all(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        .await;
    let answer = closed_within(&mut ninth, Duration::from_secs(5)).await;
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));

    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let resp = server
        .client
        .get(server.url("/metrics"))
        .bearer_auth("scrape-token-0123456789")
        .send()
        .await
        .expect("metrics");
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.expect("metrics text");
    let refused = text
        .lines()
        .find(|l| l.starts_with("trulayer_connections_refused_total "))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok());
    assert!(refused.is_some_and(|n| n >= 1.0), "{text}");
    assert!(text.contains("trulayer_connections_open "), "{text}");
    server.stop().await;
}

#[tokio::test]
async fn a_tls_connection_idle_after_its_handshake_or_before_it_is_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).expect("cert");
    std::fs::write(dir.path().join("cert.pem"), cert.cert.pem()).expect("cert");
    std::fs::write(dir.path().join("key.pem"), cert.signing_key.serialize_pem()).expect("key");
    let tls = format!(
        "idle_timeout_s = 1\n[server.tls]\ncert = {:?}\nkey = {:?}\n",
        dir.path().join("cert.pem").display().to_string(),
        dir.path().join("key.pem").display().to_string()
    );
    let path = common::write_config_with_sections(dir.path(), &tls, "", "");
    let server = TestServer::start_in(dir, &path).await;
    assert!(server.url.starts_with("https://"));

    // No ClientHello at all.
    let mut raw = TcpStream::connect(addr(&server)).await.expect("connect");
    closed_within(&mut raw, Duration::from_secs(15)).await;

    // A full handshake (h2 offered), then the HTTP/2 preface and nothing.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(cert.cert.der().clone())
        .expect("trust the test certificate");
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = TcpStream::connect(addr(&server)).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let mut stream = connector.connect(name, tcp).await.expect("TLS handshake");
    stream.write_all(H2_PREFACE).await.expect("preface");
    stream.flush().await.expect("flush");
    closed_within(&mut stream, Duration::from_secs(10)).await;
    server.stop().await;
}

/// The real binary with 64 file descriptors and room for more connections
/// than that: the accept loop runs out of descriptors, backs off, says so at
/// most once a second, and serves again once connections close.
#[test]
fn running_out_of_file_descriptors_is_survived_and_logged_sparingly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = common::write_config_with_sections(
        dir.path(),
        "max_connections = 4096\nidle_timeout_s = 30\n",
        "",
        "",
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port();
    let log = dir.path().join("server.log");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 64 && exec \"$0\" serve --config \"$1\"")
        .arg(env!("CARGO_BIN_EXE_trulayer-server"))
        .arg(&config)
        .env("TRULAYER_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("TRULAYER_LOG__LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start the server");
    let health = || -> bool {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = s.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        let mut head = [0u8; 12];
        s.read_exact(&mut head).is_ok() && &head == b"HTTP/1.1 200"
    };
    let ready = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        health()
    });
    assert!(
        ready,
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    // More idle connections than descriptors (within the listen backlog),
    // for three seconds.
    let mut idle = Vec::new();
    for _ in 0..100 {
        if let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            idle.push(s);
        }
    }
    std::thread::sleep(Duration::from_secs(3));
    drop(idle);
    let back = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        health()
    });
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        back,
        "no longer serving after descriptors came back:\n{text}"
    );
    let reports = text
        .lines()
        .filter(|l| l.contains("Too many open files"))
        .count();
    assert!(reports >= 1, "running out was not reported:\n{text}");
    assert!(reports <= 6, "{reports} reports in about 3 s:\n{text}");
}
