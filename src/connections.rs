//! Accepting and serving connections, with bounds on what a client that
//! sends nothing useful can hold.
//!
//! - At most `server.max_connections` are open at once; a connection past
//!   that is closed as it arrives and counted.
//! - A connection with no request in progress is closed after
//!   `server.idle_timeout_s`: before its first request (protocol detection,
//!   the TLS handshake, the HTTP/2 preface and SETTINGS) as between
//!   requests (HTTP/1.1 keep-alive, HTTP/2 streams). A request is in
//!   progress until its response has been sent whole, so long downloads
//!   and the live feed are not cut.
//! - HTTP/2 connections are pinged while they carry a request, so a peer
//!   that vanished mid-stream is noticed.
//! - When accepting fails for want of file descriptors, the loop backs off
//!   and says so in the log at most once a second.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::http::telemetry::ConnectionMetrics;

/// The TLS settings connections are accepted with; a reload swaps them.
pub type SharedTls = Arc<std::sync::RwLock<TlsAcceptor>>;

/// How long a client may take to finish a TLS handshake, at most.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection told to close may take to do so before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// HTTP/2 pings while a request is in progress, and how long an answer may take.
const H2_PING_INTERVAL: Duration = Duration::from_secs(20);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);
/// Descriptors kept back from connections for the server itself: the
/// database and its journals, log files, outgoing calls.
const FILE_HEADROOM: u64 = 128;
/// The longest pause between accepts while descriptors are exhausted.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// What bounds connections; see the module documentation.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub idle_timeout: Duration,
}

impl ConnectionLimits {
    /// From the configuration: `max_connections = 0` means the open-file
    /// limit (raised to its hard limit when the process may) less what the
    /// server keeps for itself.
    pub fn new(max_connections: usize, idle_timeout_s: u64, read_connections: u32) -> Self {
        let max_connections = if max_connections > 0 {
            max_connections
        } else {
            let files = raise_open_file_limit();
            let own = FILE_HEADROOM + 4 * u64::from(read_connections);
            usize::try_from(files.saturating_sub(own).max(16)).unwrap_or(usize::MAX)
        };
        ConnectionLimits {
            max_connections,
            idle_timeout: Duration::from_secs(idle_timeout_s),
        }
    }
}

/// Raises the soft open-file limit to the hard one, as far as allowed (a
/// hardened unit forbids it, and sets the limit itself); returns the soft
/// limit in force.
fn raise_open_file_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(u64::MAX);
    if let Some(hard) = limit.maximum {
        if hard > current {
            let raised = Rlimit {
                current: Some(hard),
                maximum: Some(hard),
            };
            if setrlimit(Resource::Nofile, raised).is_ok() {
                return hard;
            }
        }
    }
    current
}

/// The router as hyper serves it, told the peer's address.
type App = axum::Router;

/// Serves `listener` until `stop` turns true, then lets open connections
/// finish for up to `grace`.
pub async fn serve(
    listener: TcpListener,
    app: App,
    tls: Option<SharedTls>,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
    limits: ConnectionLimits,
    metrics: ConnectionMetrics,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut backoff = Duration::ZERO;
    let mut failures = LogLimiter::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stopping| *stopping) => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff = Duration::ZERO;
                accepted
            }
            Err(e) => {
                metrics.accept_errors.inc();
                if out_of_descriptors(&e) {
                    // Waiting gives open connections the time to finish;
                    // trying again at once would spin.
                    backoff = (backoff * 2).clamp(Duration::from_millis(10), MAX_ACCEPT_BACKOFF);
                    failures.warn(&e, backoff);
                    tokio::time::sleep(backoff).await;
                } else {
                    tracing::debug!(error = %e, "accept failed");
                }
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Full: closing at once costs the client a retry, not the
            // server a descriptor for as long as the client cares to wait.
            metrics.refused.inc();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        // Each connection takes the TLS settings current when it arrives.
        let tls = tls
            .as_ref()
            .map(|t| t.read().unwrap_or_else(|e| e.into_inner()).clone());
        let (stop, metrics) = (stop.clone(), metrics.clone());
        tokio::spawn(async move {
            metrics.open.inc();
            let activity = Activity::new();
            match tls {
                None => serve_connection(stream, peer, app, activity, limits, stop).await,
                Some(acceptor) => {
                    let deadline = TLS_HANDSHAKE_TIMEOUT.min(limits.idle_timeout);
                    if let Some(tls_stream) = handshake(acceptor, stream, deadline).await {
                        serve_connection(tls_stream, peer, app, activity, limits, stop).await;
                    }
                }
            }
            metrics.open.dec();
            drop(slot);
        });
    }
    drop(listener);
    // Every connection holds a slot until it ends: all slots back means
    // all connections closed.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(grace, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            grace_s = grace.as_secs(),
            "in-flight requests still running at the end of the grace period"
        );
    }
}

fn out_of_descriptors(e: &std::io::Error) -> bool {
    // EMFILE (this process) and ENFILE (the whole system).
    matches!(e.raw_os_error(), Some(24) | Some(23))
}

/// One log line a second at most for a failure that repeats, with how
/// often it happened since the last line.
#[derive(Default)]
struct LogLimiter {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    fn warn(&mut self, error: &std::io::Error, backoff: Duration) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|at| now.duration_since(at) < Duration::from_secs(1))
        {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(
            error = %error,
            failures_since_last_report = self.suppressed,
            backoff_ms = backoff.as_millis() as u64,
            "accepting connections failed: out of file descriptors; backing off \
             (raise the open-file limit or lower server.max_connections)"
        );
        self.last = Some(now);
        self.suppressed = 0;
    }
}

/// When a connection last changed between idle and busy, and how many of
/// its requests are in progress.
struct Activity {
    born: Instant,
    in_progress: AtomicUsize,
    /// Milliseconds from `born` to the last change.
    changed_ms: AtomicU64,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            born: Instant::now(),
            in_progress: AtomicUsize::new(0),
            changed_ms: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        let ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.changed_ms.store(ms, Ordering::Relaxed);
    }

    /// A request begins; it ends when the guard is dropped.
    fn begin(self: &Arc<Activity>) -> InProgress {
        self.in_progress.fetch_add(1, Ordering::Relaxed);
        self.touch();
        InProgress(self.clone())
    }

    /// When the connection will have been idle for `idle`, if it is idle now.
    fn idle_until(&self, idle: Duration) -> Option<Instant> {
        (self.in_progress.load(Ordering::Relaxed) == 0).then(|| {
            self.born + Duration::from_millis(self.changed_ms.load(Ordering::Relaxed)) + idle
        })
    }
}

/// A request in progress, until its response has been sent (or dropped).
struct InProgress(Arc<Activity>);

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_progress.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request in progress until it is done.
struct Tracked {
    body: Body,
    _request: InProgress,
}

impl hyper::body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Serves HTTP/1.1 or HTTP/2 on one connection until it ends, it has been
/// idle too long, or the server stops.
async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    app: App,
    activity: Arc<Activity>,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            let request = activity.begin();
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            let app = app.clone();
            async move {
                let response = app.oneshot(req.map(Body::new)).await?;
                Ok::<_, std::convert::Infallible>(response.map(|body| {
                    Body::new(Tracked {
                        body,
                        _request: request,
                    })
                }))
            }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A client that never finishes its headers is dropped.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_PING_INTERVAL)
        .keep_alive_timeout(H2_PING_TIMEOUT);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    // Told to close; and when to drop it if it has not by then.
    let mut closing = false;
    let mut drop_at: Option<tokio::time::Instant> = None;
    loop {
        let idle_deadline = match (closing, activity.idle_until(limits.idle_timeout)) {
            (true, _) => None,
            (false, Some(at)) => Some(tokio::time::Instant::from_std(at)),
            // Busy: look again later; a request's end moves the deadline.
            (false, None) => Some(tokio::time::Instant::now() + limits.idle_timeout),
        };
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            // In-flight requests get the server's grace period, which
            // `serve` waits out.
            _ = stop.wait_for(|stopping| *stopping), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = sleep_until(idle_deadline) => {
                if activity.idle_until(limits.idle_timeout).is_some_and(|at| at <= Instant::now()) {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                    drop_at = Some(tokio::time::Instant::now() + CLOSE_GRACE);
                }
            }
            _ = sleep_until(drop_at) => {
                // It did not close when told (an HTTP/2 handshake that never
                // completes): dropping it closes the socket.
                tracing::debug!("connection dropped: it did not close when told to");
                return;
            }
        }
    }
}

/// Sleeps until `at`, or forever.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn handshake(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    deadline: Duration,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            None
        }
    }
}
