//! Operations on a data directory from the command line: online backup,
//! restore, schema migration, and the lock that keeps two servers (or a
//! server and a restore) off one directory; asking a running server to
//! reload its configuration.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::store::{copy_database, pending_migrations, DatabaseFile, DB_FILE, SCHEMA_VERSION};

/// The lock file's name inside the data directory.
pub const LOCK_FILE: &str = "trulayer.lock";

/// An exclusive lock on a data directory, held for as long as this lives.
#[derive(Debug)]
pub struct DataLock {
    _file: File,
}

impl DataLock {
    /// Takes the lock, or says who holds it.
    pub fn acquire(data_dir: &Path) -> anyhow::Result<DataLock> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let path = data_dir.join(LOCK_FILE);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(DataLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => bail!(
                "a trulayer-server is running on {} (it holds {}); stop it first",
                data_dir.display(),
                path.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("locking {}", path.display()))
            }
        }
    }
}

/// What a database file holds, checked.
struct Checked {
    schema_version: i64,
    traces: i64,
}

/// Opens `path` and checks it is a whole TruLayer database this binary can
/// use: SQLite's quick check passes and the schema is not newer.
fn check(path: &Path) -> anyhow::Result<Checked> {
    let file = DatabaseFile::open(path).with_context(|| format!("opening {}", path.display()))?;
    let verdict = file
        .quick_check()
        .with_context(|| format!("{} is not a SQLite database", path.display()))?;
    if verdict != "ok" {
        bail!("{} is damaged: {verdict}", path.display());
    }
    let schema_version = file.schema_version()?;
    if schema_version < 1 {
        bail!("{} is not a TruLayer database", path.display());
    }
    if schema_version > SCHEMA_VERSION {
        bail!(
            "{} has schema version {schema_version}, newer than this binary supports \
             ({SCHEMA_VERSION}); use a newer trulayer-server",
            path.display()
        );
    }
    let traces = file
        .trace_count()
        .with_context(|| format!("{} holds no traces table", path.display()))?;
    Ok(Checked {
        schema_version,
        traces,
    })
}

fn path_text(path: &Path) -> anyhow::Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not valid UTF-8", path.display()))
}

/// A file beside `path` with `suffix` appended to its name.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// Writes a consistent copy of the database to `out` while the server may
/// go on ingesting: one read transaction's snapshot, written to a file
/// beside `out` and renamed into place once checked.
pub fn backup(data_dir: &Path, out: &Path) -> anyhow::Result<Value> {
    let db = data_dir.join(DB_FILE);
    if !db.is_file() {
        bail!("there is no database at {}", db.display());
    }
    if out.exists() {
        bail!("{} exists; give a new file name", out.display());
    }
    let started = Instant::now();
    let partial = beside(out, ".partial");
    let _ = std::fs::remove_file(&partial);
    copy_database(&db, path_text(&partial)?)
        .with_context(|| format!("writing {}", partial.display()))?;
    let checked = match check(&partial) {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e.context("the copy failed its check"));
        }
    };
    std::fs::rename(&partial, out)
        .with_context(|| format!("renaming {} to {}", partial.display(), out.display()))?;
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    Ok(json!({
        "backup": out.display().to_string(),
        "bytes": bytes,
        "schema_version": checked.schema_version,
        "traces": checked.traces,
        "took_ms": started.elapsed().as_millis() as u64,
    }))
}

/// Replaces the database with the backup `from`; the server must be
/// stopped. The database it replaces is kept under `backups/`.
pub fn restore(data_dir: &Path, from: &Path) -> anyhow::Result<Value> {
    let _lock = DataLock::acquire(data_dir)?;
    let checked = check(from).context("the backup cannot be restored")?;
    let db = data_dir.join(DB_FILE);
    let mut kept = None;
    if db.exists() {
        let dir = data_dir.join("backups");
        std::fs::create_dir_all(&dir)?;
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
        let target = dir.join(format!("replaced-{stamp}.db"));
        for suffix in ["", "-wal", "-shm"] {
            let source = beside(&db, suffix);
            if source.exists() {
                std::fs::rename(&source, beside(&target, suffix))
                    .with_context(|| format!("moving {} aside", source.display()))?;
            }
        }
        kept = Some(target.display().to_string());
    }
    let incoming = beside(&db, ".restoring");
    std::fs::copy(from, &incoming)
        .with_context(|| format!("copying {} into {}", from.display(), data_dir.display()))?;
    File::open(&incoming)?.sync_all()?;
    std::fs::rename(&incoming, &db)?;
    Ok(json!({
        "restored_from": from.display().to_string(),
        "schema_version": checked.schema_version,
        "traces": checked.traces,
        "replaced": kept,
        "pending_migrations": pending_migrations(checked.schema_version).len(),
    }))
}

/// The migrations the database still needs, as JSON.
pub fn migration_plan(data_dir: &Path) -> anyhow::Result<Value> {
    let db = data_dir.join(DB_FILE);
    let current = if db.is_file() {
        DatabaseFile::open_read_only(&db)
            .with_context(|| format!("opening {}", db.display()))?
            .schema_version()?
    } else {
        0
    };
    if current > SCHEMA_VERSION {
        bail!(
            "the database has schema version {current}, newer than this binary supports \
             ({SCHEMA_VERSION}); run a newer trulayer-server or restore a backup taken before \
             the upgrade"
        );
    }
    let pending: Vec<Value> = pending_migrations(current)
        .into_iter()
        .map(|(version, name)| json!({"version": version, "name": name}))
        .collect();
    Ok(json!({
        "database": db.display().to_string(),
        "schema_version": current,
        "target_version": SCHEMA_VERSION,
        "pending": pending,
    }))
}

/// Asks the running server whether it is ready (`GET /ready` on the
/// configured address; an unspecified address is asked on loopback).
/// Returns the status and body. Over TLS the certificate is not verified:
/// this is the server checking itself, as `curl -k` would.
pub async fn healthcheck(config: &crate::config::Config) -> anyhow::Result<(u16, Value)> {
    use http_body_util::BodyExt;
    use hyper_util::rt::TokioIo;

    let mut addr = config.server.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let timeout = std::time::Duration::from_secs(10);
    let tcp = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
        .await
        .with_context(|| format!("connecting to {addr}: timed out"))?
        .with_context(|| format!("connecting to {addr}"))?;
    let request = hyper::Request::get("/ready")
        .header(hyper::header::HOST, addr.to_string())
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let exchange = async {
        let response = if config.server.tls.is_some() {
            let tls = tls_connector()?
                .connect(
                    rustls::pki_types::ServerName::IpAddress(addr.ip().into()),
                    tcp,
                )
                .await
                .context("TLS handshake")?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
            tokio::spawn(conn);
            sender.send_request(request).await?
        } else {
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
            tokio::spawn(conn);
            sender.send_request(request).await?
        };
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        anyhow::Ok((status, body))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .context("the server did not answer within 10 s")?
}

/// A TLS client for [`healthcheck`]: checks the handshake's signatures but
/// not who signed the certificate.
fn tls_connector() -> anyhow::Result<tokio_rustls::TlsConnector> {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};

    #[derive(Debug)]
    struct OwnServer(rustls::crypto::WebPkiSupportedAlgorithms);

    impl ServerCertVerifier for OwnServer {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_schemes()
        }
    }

    let provider = rustls::crypto::ring::default_provider();
    let verifier = OwnServer(provider.signature_verification_algorithms);
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.dangerous()
                .with_custom_certificate_verifier(std::sync::Arc::new(verifier))
                .with_no_client_auth()
        });
    let config = config.context("TLS client settings")?;
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        config,
    )))
}

/// Asks the server running as process `pid` to reload its configuration
/// (SIGHUP), once `config` has passed the checks the server makes on a
/// reload: loaded and validated by the caller, and here its TLS
/// certificate and key read and paired as the server will. A configuration
/// that would be refused is never sent, so the server keeps its own.
///
/// It returns when the signal is sent: the server applies the reload at once
/// and logs `reloaded` with what it applied (or `reload refused` if a file
/// changed in between), telling systemd `RELOADING=1` then `READY=1`.
pub fn signal_reload(config: &crate::config::Config, pid: i32) -> anyhow::Result<Value> {
    if let Some(tls) = &config.server.tls {
        crate::server::tls_acceptor(tls).context("not reloaded")?;
    }
    let process = rustix::process::Pid::from_raw(pid)
        .with_context(|| format!("--pid {pid}: not a process id"))?;
    rustix::process::kill_process(process, rustix::process::Signal::HUP)
        .with_context(|| format!("sending SIGHUP to process {pid}"))?;
    Ok(json!({ "reload_sent_to": pid }))
}

/// Writes a self-signed certificate and its key (`cert.pem`, `key.pem`,
/// the key readable by its owner only) for evaluation set-ups: valid for
/// `days` from today, for `hosts` (names or IP addresses).
pub fn self_signed_certificate(
    out_dir: &Path,
    hosts: &[String],
    days: u32,
) -> anyhow::Result<Value> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    if hosts.is_empty() {
        bail!("give at least one host name or address");
    }
    if !(1..=3650).contains(&days) {
        bail!("--days must be between 1 and 3650");
    }
    let (cert, key) = (out_dir.join("cert.pem"), out_dir.join("key.pem"));
    for path in [&cert, &key] {
        if path.exists() {
            bail!(
                "{} exists; remove it or choose another directory",
                path.display()
            );
        }
    }
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let mut params = rcgen::CertificateParams::new(hosts.to_vec())
        .context("a host is neither a DNS name nor an IP address")?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, hosts[0].as_str());
    params.distinguished_name.push(
        rcgen::DnType::OrganizationName,
        "TruLayer Server (self-signed)",
    );
    let ymd = |t: chrono::DateTime<chrono::Utc>| {
        use chrono::Datelike;
        rcgen::date_time_ymd(t.year(), t.month() as u8, t.day() as u8)
    };
    let today = chrono::Utc::now();
    params.not_before = ymd(today - chrono::Duration::days(1));
    params.not_after = ymd(today + chrono::Duration::days(i64::from(days)));
    let signing_key = rcgen::KeyPair::generate().context("generating a key")?;
    let certificate = params.self_signed(&signing_key).context("signing")?;
    let mut key_file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key)
        .with_context(|| format!("creating {}", key.display()))?;
    key_file.write_all(signing_key.serialize_pem().as_bytes())?;
    key_file.sync_all()?;
    std::fs::write(&cert, certificate.pem())
        .with_context(|| format!("writing {}", cert.display()))?;
    Ok(json!({
        "cert": cert.display().to_string(),
        "key": key.display().to_string(),
        "hosts": hosts,
        "not_after": (today + chrono::Duration::days(i64::from(days))).format("%Y-%m-%d").to_string(),
    }))
}
