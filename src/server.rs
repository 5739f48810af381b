//! Starting and stopping the server: open the store, run first start, bind,
//! serve HTTP or HTTPS, and on shutdown stop accepting, let in-flight
//! requests finish, flush the writer and checkpoint the WAL.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::bootstrap::{self, InitialCredentials};
use crate::config::{Config, TlsConfig};
use crate::connections::{serve, ConnectionLimits, SharedTls};
use crate::http::router::router;
use crate::http::AppState;
use crate::store::{MergePace, Store};

/// A started server. Dropping it does not stop it; call [`Running::stop`].
pub struct Running {
    pub local_addr: SocketAddr,
    pub tls: bool,
    acceptor: Option<SharedTls>,
    /// Set on the very first start of a data directory.
    pub credentials: Option<InitialCredentials>,
    store: Arc<Store>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// The base URL clients use, e.g. `http://127.0.0.1:8080`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.local_addr)
    }

    /// The server's store, for administration in-process (and tests).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Applies what can change while running: the TLS certificate and key
    /// (read again from their files) and the log level. Nothing changes if
    /// the new certificate cannot be used; the error says why. Returns what
    /// was applied.
    pub fn reload(&self, config: &Config) -> anyhow::Result<Vec<String>> {
        let mut applied = Vec::new();
        match (&self.acceptor, &config.server.tls) {
            (Some(shared), Some(tls)) => {
                let fresh = tls_acceptor(tls).context("keeping the current certificate")?;
                *shared.write().unwrap_or_else(|e| e.into_inner()) = fresh;
                applied.push(format!("TLS certificate from {}", tls.cert.display()));
            }
            (None, Some(_)) | (Some(_), None) => {
                tracing::warn!("turning TLS on or off needs a restart");
            }
            (None, None) => {}
        }
        crate::logging::set_level(&config.log.level)?;
        applied.push(format!("log level {}", config.log.level));
        Ok(applied)
    }

    /// Stops accepting, finishes in-flight requests and writes, closes the store.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.send_replace(true);
        self.task.await.context("server task")?
    }
}

/// Opens the store, initialises it on first start, binds the listener and
/// starts serving in the background.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let lock = crate::ops::DataLock::acquire(&config.storage.data_dir)?;
    let storage = config.storage.clone();
    // A thread of its own rather than the blocking pool: the writer thread
    // the store starts inherits this thread's priority, and the pool's
    // threads have lowered theirs (`priority`).
    let (opened, open_result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("trulayer-open".into())
        .spawn(move || {
            let _ = opened.send(Store::open(
                &storage.data_dir,
                storage.synchronous,
                storage.read_connections,
            ));
        })
        .context("starting the store")?;
    let store = open_result
        .await
        .context("opening the store")?
        .with_context(|| {
            format!(
                "opening the database in {}",
                config.storage.data_dir.display()
            )
        })?;
    store.limit_size(
        config.storage.max_db_size.0,
        crate::upkeep::cap_retry_after(config.storage.when_full),
    );
    let store = Arc::new(store);
    let credentials = match bootstrap::first_start(&store, &config).await {
        Ok(c) => c,
        Err(e) => {
            close_store(store).await;
            return Err(e.context("first start"));
        }
    };
    let tls = match config.server.tls.as_ref().map(tls_acceptor).transpose() {
        Ok(t) => t.map(|a| Arc::new(std::sync::RwLock::new(a))),
        Err(e) => {
            close_store(store).await;
            return Err(e);
        }
    };
    let listener = match TcpListener::bind(config.server.listen).await {
        Ok(l) => l,
        Err(e) => {
            close_store(store).await;
            return Err(anyhow::Error::new(e).context(format!("binding {}", config.server.listen)));
        }
    };
    let local_addr = listener.local_addr()?;
    let grace = Duration::from_secs(config.server.shutdown_timeout_s);
    let is_tls = tls.is_some();
    let state = AppState::new(store.clone(), Arc::new(config), is_tls);
    let key_id = state.sealer.as_ref().map(|s| s.key_id().to_owned());
    match store.eval_keys_sealed_elsewhere(key_id).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            keys = n,
            "organisations' judge keys were sealed with another [encryption] key than the one \
             configured (or there is none): they cannot be used until they are set again"
        ),
        Err(e) => tracing::warn!(error = %e, "could not check the stored judge keys"),
    }
    let evals = match crate::eval::queue::start(
        store.clone(),
        state.config.clone(),
        state.evals.clone(),
        state.sealer.clone(),
    ) {
        Ok(tasks) => tasks,
        Err(e) => {
            close_store(store).await;
            return Err(e);
        }
    };
    let mut upkeep = vec![
        crate::upkeep::spawn(store.clone(), state.config.clone()),
        crate::upkeep::spawn_indexer(store.clone()),
        crate::upkeep::spawn_index_merger(store.clone()),
        crate::upkeep::spawn_dictionary_trainer(store.clone()),
        crate::upkeep::spawn_memory_release(store.clone(), state.metrics.clone()),
        crate::webhooks::spawn(store.clone(), state.webhooks.clone()),
        crate::http::ingestion_health::spawn_flusher(store.clone(), state.ingest_tally.clone()),
        crate::privacy::spawn(store.clone(), state.config.clone(), state.dsr.clone()),
        crate::alerts::spawn(store.clone(), state.config.alerts.clone()),
    ];
    upkeep.extend(evals);
    let metrics_listener = match state.config.metrics.listen {
        Some(addr) => match TcpListener::bind(addr).await {
            Ok(l) => Some((l, crate::http::router::metrics_router(state.clone()))),
            Err(e) => {
                for task in &upkeep {
                    task.abort();
                }
                close_store(store).await;
                return Err(anyhow::Error::new(e).context(format!("binding metrics.listen {addr}")));
            }
        },
        None => None,
    };
    let limits = ConnectionLimits::new(
        state.config.server.max_connections,
        state.config.server.idle_timeout_s,
        state.config.storage.read_connections,
    );
    let connection_metrics = state.metrics.connections.clone();
    let ingest_tally = state.ingest_tally.clone();
    let app = router(state);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let metrics_server = metrics_listener.map(|(listener, app)| {
        let scrapers = ConnectionLimits {
            max_connections: METRICS_CONNECTIONS,
            ..limits
        };
        let stop = shutdown_rx.clone();
        tokio::spawn(async move {
            serve(
                listener,
                app,
                None,
                stop,
                grace,
                scrapers,
                Default::default(),
            )
            .await
        })
    });
    let served_store = store.clone();
    let acceptor = tls.clone();
    let task = tokio::spawn(async move {
        serve(
            listener,
            app,
            tls,
            shutdown_rx,
            grace,
            limits,
            connection_metrics,
        )
        .await;
        if let Some(task) = metrics_server {
            let _ = task.await;
        }
        for task in upkeep {
            task.abort();
            let _ = task.await;
        }
        crate::http::ingestion_health::flush_now(&served_store, &ingest_tally).await;
        // The tags and sessions still waiting for their indexes (a few
        // thousand traces under load) go in now, so that a restart starts
        // with nothing to merge; a stop that cannot leaves them for the
        // next start.
        let merging = async {
            while served_store.merge_indexes(MergePace::CatchUp).await? != (0, 0) {}
            Ok::<_, crate::store::StoreError>(())
        };
        match tokio::time::timeout(STOP_MERGE_LIMIT, merging).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "merging the tag and session indexes at stop"),
            Err(_) => tracing::warn!("the tag and session indexes are merged at the next start"),
        }
        close_store(served_store).await;
        drop(lock);
        Ok(())
    });
    tracing::info!(
        addr = %local_addr,
        tls = is_tls,
        schema_version = crate::store::SCHEMA_VERSION,
        "listening on {}://{local_addr}",
        if is_tls { "https" } else { "http" }
    );
    Ok(Running {
        local_addr,
        tls: is_tls,
        acceptor,
        credentials,
        store,
        shutdown: shutdown_tx,
        task,
    })
}

/// Runs until `signal` resolves, then shuts down gracefully.
pub async fn run_until(config: Config, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
    let running = start(config).await?;
    signal.await;
    tracing::info!("shutting down");
    running.stop().await?;
    tracing::info!("stopped");
    Ok(())
}

/// Runs as a service: tells systemd when it is ready, reloads on SIGHUP
/// (the configuration file is read again; see [`Running::reload`]), and
/// stops gracefully on SIGTERM or SIGINT.
pub async fn run_service(
    config: Config,
    config_path: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let running = start(config).await?;
    crate::systemd::notify("READY=1");
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            _ = hangup.recv() => {
                crate::systemd::reloading();
                match Config::load(config_path.as_deref()) {
                    Ok(config) => match running.reload(&config) {
                        Ok(applied) => tracing::info!(?applied, "reloaded"),
                        Err(e) => tracing::error!("reload refused: {e:#}"),
                    },
                    Err(e) => tracing::error!("reload refused: {e}"),
                }
                crate::systemd::notify("READY=1");
            }
        }
    }
    crate::systemd::notify("STOPPING=1");
    tracing::info!("shutting down");
    running.stop().await?;
    tracing::info!("stopped");
    Ok(())
}

/// Connections the separate metrics listener takes at once: scrapers.
const METRICS_CONNECTIONS: usize = 64;

/// How long a stop may spend merging the tag and session indexes.
const STOP_MERGE_LIMIT: Duration = Duration::from_secs(5);

async fn close_store(store: Arc<Store>) {
    // Stopping the writer blocks until queued writes commit.
    let _ = tokio::task::spawn_blocking(move || store.close()).await;
}

/// Builds the TLS acceptor from PEM files (TLS 1.2 and 1.3; h2 and http/1.1).
pub fn tls_acceptor(tls: &TlsConfig) -> anyhow::Result<TlsAcceptor> {
    let certs = CertificateDer::pem_file_iter(&tls.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("server.tls.cert: reading {}", tls.cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!(
            "server.tls.cert: {} holds no certificate",
            tls.cert.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .with_context(|| format!("server.tls.key: reading {}", tls.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("server.tls: the certificate and key do not form a usable pair")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
