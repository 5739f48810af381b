//! Webhook deliveries: which addresses they may reach, how they are signed,
//! and the sender that works through the outbox.
//!
//! Every request carries `X-TruLayer-Signature: t=<unix seconds>,v1=<hex>`,
//! where the hex is HMAC-SHA256, keyed with the webhook's secret, of
//! `"<t>.<body>"`; a receiver recomputes it, compares in constant time and
//! refuses old timestamps. The sender runs in its own task with its own
//! timeouts and at most `webhooks.concurrency` requests at once; nothing
//! that ingests or evaluates waits for it. Events are put in the outbox
//! with `store::enqueue_event`.
//!
//! Targets are checked when a webhook is created (the URL's form, address
//! literals and cloud metadata names) and at every attempt: the host is
//! resolved and every address checked, and the client connects only to
//! addresses that passed (its resolver checks again), never follows a
//! redirect and ignores proxy settings.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::task::{JoinHandle, JoinSet};

use crate::config::WebhooksConfig;
use crate::secrets::SecretBox;
use crate::store::{now_micros, secret_context, Attempt, DueDelivery, Store, StoredSecret};

/// The event types a webhook may subscribe to.
pub const EVENT_TYPES: &[&str] = &[
    "failure.detected",
    "failure.recovered",
    "anomaly.detected",
    "anomaly.recovered",
    "eval_run.completed",
];
/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-trulayer-signature";
/// The most of a destination's answer kept, in bytes.
pub const BODY_KEEP_BYTES: usize = 4096;
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// How often the sender looks for due deliveries.
const POLL: Duration = Duration::from_millis(250);
/// How long delivered and failed deliveries are kept, for the operator.
pub const KEEP_FINISHED: Duration = Duration::from_secs(30 * 86_400);
/// How often finished deliveries past [`KEEP_FINISHED`] are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
const USER_AGENT: &str = concat!("trulayer-server/", env!("CARGO_PKG_VERSION"));

/// Host names of cloud metadata services, refused whatever they resolve to.
const METADATA_NAMES: &[&str] = &[
    "metadata.google.internal",
    "metadata.goog",
    "metadata",
    "instance-data",
    "instance-data.ec2.internal",
    "metadata.azure.com",
];

/// A network, `address/prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    /// `10.0.0.0/8`, `fd00::/8`, or a single address.
    pub fn parse(text: &str) -> Option<Net> {
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (text.trim().parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Net { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Addresses refused unless `webhooks.allow` names them: link-local (where
/// cloud metadata services answer), the unspecified and broadcast
/// addresses, multicast, and metadata addresses outside link-local.
fn refused_by_default() -> Vec<Net> {
    let net = |a: IpAddr, prefix| Net { addr: a, prefix };
    vec![
        net(IpAddr::V4(Ipv4Addr::new(169, 254, 0, 0)), 16),
        net(IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0)), 10),
        net(
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
            128,
        ),
        net(IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)), 32),
        net(IpAddr::V4(Ipv4Addr::new(0, 0, 0, 0)), 8),
        net(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 128),
        net(IpAddr::V4(Ipv4Addr::new(224, 0, 0, 0)), 4),
        net(IpAddr::V4(Ipv4Addr::new(255, 255, 255, 255)), 32),
        net(IpAddr::V6(Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0)), 8),
    ]
}

/// Which addresses deliveries may reach (`[webhooks] allow`, `deny`).
#[derive(Debug, Clone)]
pub struct Policy {
    allow: Vec<Net>,
    deny: Vec<Net>,
    refused: Vec<Net>,
}

impl Policy {
    pub fn new(config: &WebhooksConfig) -> Policy {
        let nets = |list: &[String]| list.iter().filter_map(|n| Net::parse(n)).collect();
        Policy {
            allow: nets(&config.allow),
            deny: nets(&config.deny),
            refused: refused_by_default(),
        }
    }

    /// Whether a delivery may reach `ip`; the error says why not.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), String> {
        let ip = ip.to_canonical();
        if self.deny.iter().any(|n| n.contains(ip)) {
            return Err(format!("{ip} is in webhooks.deny"));
        }
        let allowed = self.allow.iter().any(|n| n.contains(ip));
        if !self.allow.is_empty() && !allowed {
            return Err(format!("{ip} is outside webhooks.allow"));
        }
        if !allowed && self.refused.iter().any(|n| n.contains(ip)) {
            return Err(format!(
                "{ip} is a link-local, metadata, multicast or unspecified address"
            ));
        }
        Ok(())
    }

    /// Checks a webhook's URL as far as can be without resolving it: an
    /// absolute `http` or `https` URL with a host, no credentials, and
    /// neither a refused address nor a metadata service's name.
    pub fn check_url(&self, text: &str) -> Result<reqwest::Url, String> {
        let url = reqwest::Url::parse(text).map_err(|e| format!("not a valid URL ({e})"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("must be an http or https URL".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not carry credentials; sign with the secret instead".into());
        }
        match host_of(&url) {
            None => Err("must name a host".into()),
            Some(Host::Ip(ip)) => self.check_ip(ip).map(|()| url.clone()),
            Some(Host::Name(name)) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                if METADATA_NAMES.contains(&name.as_str()) {
                    return Err(format!("{name} is a cloud metadata service"));
                }
                Ok(url.clone())
            }
        }
    }

    /// Resolves the URL's host and checks every address it has.
    pub async fn resolve(&self, url: &reqwest::Url) -> Result<(), Refusal> {
        let Some(Host::Name(name)) = host_of(url) else {
            return Ok(());
        };
        let port = url.port_or_known_default().unwrap_or(443);
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name, port))
            .await
            .map_err(|e| Refusal::Unreachable(format!("cannot resolve {name}: {e}")))?
            .collect();
        self.check_addrs(name, &addrs).map_err(Refusal::Refused)
    }

    fn check_addrs(&self, name: &str, addrs: &[SocketAddr]) -> Result<(), String> {
        if addrs.is_empty() {
            return Err(format!("{name} has no address"));
        }
        for addr in addrs {
            self.check_ip(addr.ip())
                .map_err(|why| format!("{name} resolves to {}: {why}", addr.ip()))?;
        }
        Ok(())
    }
}

enum Host<'a> {
    Ip(IpAddr),
    Name(&'a str),
}

fn host_of(url: &reqwest::Url) -> Option<Host<'_>> {
    let host = url.host_str().filter(|h| !h.is_empty())?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    Some(match bare.parse::<IpAddr>() {
        Ok(ip) => Host::Ip(ip),
        Err(_) => Host::Name(host),
    })
}

/// Why a request was not sent.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// The policy refuses the target.
    Refused(String),
    /// The host could not be resolved.
    Unreachable(String),
}

/// The client's resolver: connects only to names whose every address
/// the policy allows, whatever they resolve to by then.
struct CheckedResolver(Arc<Policy>);

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            policy.check_addrs(&host, &addrs)?;
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// The signature header's value for `body` sent at `t` (unix seconds).
pub fn signature(secret: &str, t: i64, body: &str) -> String {
    let mac = crate::secrets::hmac_sha256(secret.as_bytes(), format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac))
}

/// What the destination answered.
#[derive(Debug, Clone)]
pub enum Answer {
    /// An HTTP status and up to [`BODY_KEEP_BYTES`] of the body.
    Http { status: u16, body: String },
    /// No answer: why.
    Failed(String),
    /// Not sent: the target is refused.
    Refused(String),
}

/// What the sender has done, for `/metrics`.
#[derive(Debug, Default)]
pub struct SenderMetrics {
    pub delivered: prometheus_client::metrics::counter::Counter,
    pub failed_attempts: prometheus_client::metrics::counter::Counter,
    pub given_up: prometheus_client::metrics::counter::Counter,
    pub in_flight: prometheus_client::metrics::gauge::Gauge,
}

/// Sends signed requests to webhook endpoints.
pub struct Sender {
    client: Result<reqwest::Client, String>,
    pub policy: Arc<Policy>,
    /// Opens and seals webhook secrets; none without `[encryption]`.
    sealer: Option<Arc<SecretBox>>,
    config: WebhooksConfig,
    pub metrics: SenderMetrics,
}

impl Sender {
    pub fn new(config: &WebhooksConfig, sealer: Option<Arc<SecretBox>>) -> Sender {
        let policy = Arc::new(Policy::new(config));
        let client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .timeout(Duration::from_secs(config.timeout_s))
            .connect_timeout(Duration::from_secs(config.timeout_s.min(10)))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(CheckedResolver(policy.clone())))
            .build()
            .map_err(|e| format!("cannot set up the HTTP client: {e}"));
        Sender {
            client,
            policy,
            sealer,
            config: config.clone(),
            metrics: SenderMetrics::default(),
        }
    }

    /// A webhook's secret in the clear; why not, when it was sealed under
    /// another `[encryption]` key or there is none.
    pub fn secret(&self, stored: &StoredSecret) -> Result<String, String> {
        match stored {
            StoredSecret::Plain(plain) => Ok(plain.clone()),
            StoredSecret::Sealed {
                sealed,
                key_id,
                context,
            } => {
                let sealer = self.sealer.as_ref().ok_or(
                    "the webhook's secret is sealed and the server has no [encryption] key",
                )?;
                let plain = sealer
                    .open(sealed, key_id, context)
                    .map_err(|e| format!("the webhook's secret cannot be opened: {e}"))?;
                String::from_utf8(plain).map_err(|_| "the webhook's secret is not text".into())
            }
        }
    }

    /// Seals a new webhook's secret when there is an `[encryption]` key.
    pub fn seal(&self, tenant_id: i64, url: &str, secret: String) -> Result<StoredSecret, String> {
        match &self.sealer {
            None => Ok(StoredSecret::Plain(secret)),
            Some(sealer) => Ok(StoredSecret::Sealed {
                sealed: sealer.seal(secret.as_bytes(), &secret_context(tenant_id, url))?,
                key_id: sealer.key_id().to_owned(),
                context: secret_context(tenant_id, url),
            }),
        }
    }

    /// Sends `body` as event `event_type`, delivery `delivery_id`, signed
    /// with `secret`.
    pub async fn send(
        &self,
        url: &str,
        secret: &str,
        event_type: &str,
        delivery_id: &str,
        body: String,
    ) -> Answer {
        let url = match self.policy.check_url(url) {
            Ok(url) => url,
            Err(why) => return Answer::Refused(why),
        };
        match self.policy.resolve(&url).await {
            Ok(()) => {}
            Err(Refusal::Refused(why)) => return Answer::Refused(why),
            Err(Refusal::Unreachable(why)) => return Answer::Failed(why),
        }
        let client = match &self.client {
            Ok(client) => client,
            Err(why) => return Answer::Failed(why.clone()),
        };
        let t = now_micros() / 1_000_000;
        let sent = client
            .post(url)
            .header("content-type", "application/json")
            .header("x-trulayer-event", event_type)
            .header("x-trulayer-delivery", delivery_id)
            .header(SIGNATURE_HEADER, signature(secret, t, &body))
            .body(body)
            .send()
            .await;
        let mut response = match sent {
            Ok(r) => r,
            Err(e) => return Answer::Failed(describe(&e)),
        };
        let status = response.status().as_u16();
        let mut kept = Vec::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            let room = BODY_KEEP_BYTES - kept.len();
            kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if kept.len() >= BODY_KEEP_BYTES {
                break;
            }
        }
        Answer::Http {
            status,
            body: String::from_utf8_lossy(&kept).into_owned(),
        }
    }

    /// The attempt's record: delivered on 2xx, else retried with
    /// exponential backoff and jitter until `retry_for_h` has passed.
    fn outcome(&self, due: &DueDelivery, answer: Answer) -> Attempt {
        let (status, error) = match answer {
            Answer::Http { status, .. } if (200..300).contains(&status) => {
                return Attempt::Delivered {
                    status: i64::from(status),
                }
            }
            Answer::Http { status, body } => {
                let excerpt: String = body.chars().take(200).collect();
                (Some(i64::from(status)), format!("HTTP {status}: {excerpt}"))
            }
            Answer::Failed(why) => (None, why),
            Answer::Refused(why) => (None, format!("refused: {why}")),
        };
        let attempt = u32::try_from(due.attempts).unwrap_or(u32::MAX);
        let base = Duration::from_millis(self.config.retry_base_ms);
        let full = base
            .checked_mul(2u32.saturating_pow(attempt.min(30)))
            .unwrap_or(MAX_BACKOFF)
            .min(MAX_BACKOFF);
        // Equal jitter: half the wait fixed, half random.
        let half = full / 2;
        let wait = half + half.mul_f64(rand::rng().random::<f64>());
        let next_at = now_micros() + i64::try_from(wait.as_micros()).unwrap_or(i64::MAX / 2);
        let deadline = due.created_at + (self.config.retry_for_h as i64) * 3_600_000_000;
        if next_at > deadline {
            Attempt::GaveUp {
                status,
                error: format!("{error} (gave up after {} attempts)", due.attempts + 1),
            }
        } else {
            Attempt::Retry {
                status,
                error,
                next_at,
            }
        }
    }
}

fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Starts the sender: it works through due deliveries, at most
/// `webhooks.concurrency` at once, until aborted. A delivery cut off by a
/// stop is still pending and is sent again after the next start.
pub fn spawn(store: Arc<Store>, sender: Arc<Sender>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let busy: Arc<Mutex<HashSet<i64>>> = Arc::default();
        let mut tasks = JoinSet::new();
        let mut pruned_at: Option<std::time::Instant> = None;
        loop {
            if pruned_at.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                pruned_at = Some(std::time::Instant::now());
                let before = now_micros() - i64::try_from(KEEP_FINISHED.as_micros()).unwrap_or(0);
                if let Err(e) = store.prune_webhook_deliveries(before).await {
                    tracing::warn!(error = %e, "deleting old webhook deliveries");
                }
            }
            let free = sender.config.concurrency.saturating_sub(tasks.len());
            if free > 0 {
                let in_flight: Vec<i64> = busy
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .copied()
                    .collect();
                match store
                    .due_webhook_deliveries(now_micros(), free, in_flight)
                    .await
                {
                    Ok(due) => {
                        for delivery in due {
                            busy.lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .insert(delivery.id);
                            let (store, sender, busy) =
                                (store.clone(), sender.clone(), busy.clone());
                            tasks.spawn(async move {
                                sender.metrics.in_flight.inc();
                                let answer = match sender.secret(&delivery.secret) {
                                    Ok(secret) => {
                                        sender
                                            .send(
                                                &delivery.url,
                                                &secret,
                                                &delivery.event_type,
                                                &delivery.uuid,
                                                delivery.payload.clone(),
                                            )
                                            .await
                                    }
                                    Err(why) => Answer::Failed(why),
                                };
                                sender.metrics.in_flight.dec();
                                let attempt = sender.outcome(&delivery, answer);
                                match &attempt {
                                    Attempt::Delivered { .. } => sender.metrics.delivered.inc(),
                                    Attempt::Retry { .. } => sender.metrics.failed_attempts.inc(),
                                    Attempt::GaveUp { .. } => {
                                        sender.metrics.failed_attempts.inc();
                                        sender.metrics.given_up.inc()
                                    }
                                };
                                if let Err(e) =
                                    store.record_webhook_attempt(delivery.id, attempt).await
                                {
                                    tracing::warn!(error = %e, "recording a webhook delivery");
                                }
                                busy.lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .remove(&delivery.id);
                            });
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "reading due webhook deliveries"),
                }
            }
            tokio::select! {
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_refuses_link_local_and_metadata_only() {
        let policy = Policy::new(&WebhooksConfig::default());
        for ok in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "::1",
            "8.8.8.8",
            "fd12::1",
        ] {
            assert!(policy.check_ip(ok.parse().unwrap()).is_ok(), "{ok}");
        }
        for refused in [
            "169.254.169.254",
            "169.254.1.1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
            "0.0.0.0",
        ] {
            assert!(
                policy.check_ip(refused.parse().unwrap()).is_err(),
                "{refused}"
            );
        }
        assert!(policy
            .check_url("http://metadata.google.internal./x")
            .is_err());
        assert!(policy.check_url("ftp://example.com/").is_err());
        assert!(policy.check_url("http://u:p@example.com/").is_err());
        assert!(policy.check_url("http://[fe80::1]:80/").is_err());
    }

    #[test]
    fn failures_back_off_with_jitter_and_give_up_after_retry_for_h() {
        let sender = Sender::new(
            &WebhooksConfig {
                retry_base_ms: 1000,
                ..WebhooksConfig::default()
            },
            None,
        );
        let due = |attempts, age_h: i64| DueDelivery {
            id: 1,
            uuid: "d".into(),
            url: "http://127.0.0.1/".into(),
            secret: StoredSecret::Plain("s".into()),
            event_type: "eval_run.completed".into(),
            payload: "{}".into(),
            attempts,
            created_at: now_micros() - age_h * 3_600_000_000,
        };
        let failed = || Answer::Http {
            status: 503,
            body: "busy".into(),
        };
        assert!(matches!(
            sender.outcome(
                &due(0, 0),
                Answer::Http {
                    status: 204,
                    body: String::new()
                }
            ),
            Attempt::Delivered { status: 204 }
        ));
        for (attempts, full_ms) in [(0, 1000), (3, 8000), (40, 3_600_000)] {
            let before = now_micros();
            let Attempt::Retry {
                status,
                next_at,
                error,
            } = sender.outcome(&due(attempts, 0), failed())
            else {
                panic!("a retry");
            };
            assert_eq!(status, Some(503));
            assert!(error.contains("HTTP 503"), "{error}");
            let wait_ms = (next_at - before) / 1000;
            assert!(
                wait_ms >= full_ms / 2 - 1 && wait_ms <= full_ms + 50,
                "{attempts}: {wait_ms}"
            );
        }
        // Retried for at least a day by default; given up after retry_for_h.
        assert!(matches!(
            sender.outcome(&due(9, 30), failed()),
            Attempt::Retry { .. }
        ));
        assert!(matches!(
            sender.outcome(&due(20, 48), Answer::Failed("timed out".into())),
            Attempt::GaveUp { status: None, .. }
        ));
    }

    #[test]
    fn allow_narrows_and_widens_deny_wins() {
        let policy = Policy::new(&WebhooksConfig {
            allow: vec!["10.0.0.0/8".into(), "169.254.10.0/24".into()],
            deny: vec!["10.9.0.0/16".into()],
            ..WebhooksConfig::default()
        });
        assert!(policy.check_ip("10.1.1.1".parse().unwrap()).is_ok());
        assert!(policy.check_ip("169.254.10.5".parse().unwrap()).is_ok());
        assert!(policy.check_ip("10.9.1.1".parse().unwrap()).is_err());
        assert!(policy.check_ip("127.0.0.1".parse().unwrap()).is_err());
        assert!(policy.check_ip("169.254.169.254".parse().unwrap()).is_err());
        assert_eq!(Net::parse("10.0.0.0/33"), None);
        assert_eq!(Net::parse("nonsense"), None);
    }
}
