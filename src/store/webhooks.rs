//! Webhooks and the outbox of their deliveries. An event is fanned out to
//! the organisation's enabled webhooks that subscribe to its type, one
//! outbox row each, inside the transaction that produced it
//! ([`enqueue_event`]); the sender (`crate::webhooks`) works through the
//! rows that are due and records every attempt here.

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

use super::audit::{self, Actor};
use super::tenancy::new_uuid;
use super::{now_micros, Result, Store};
use crate::model::Timestamp;

/// A webhook (the reference's `Webhook`); its secret is never shown.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Webhook {
    #[schema(format = "uuid")]
    pub id: String,
    #[schema(format = "uuid")]
    pub tenant_id: String,
    #[schema(format = "uri", example = "https://alerts.internal.example/trulayer")]
    pub url: String,
    /// The event types sent to it.
    #[schema(example = json!(["eval_run.completed"]))]
    pub events: Vec<String>,
    pub enabled: bool,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
}

/// One event's delivery to a webhook, with how its attempts went.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WebhookDelivery {
    /// The delivery's id, also the event's `id` and the
    /// `X-TruLayer-Delivery` header: the same on every attempt.
    #[schema(format = "uuid")]
    pub id: String,
    #[schema(example = "eval_run.completed")]
    pub event_type: String,
    /// `pending` (waiting for its next attempt), `delivered` (the endpoint
    /// answered 2xx) or `failed` (given up).
    #[schema(example = "delivered")]
    pub status: String,
    /// Attempts made so far.
    pub attempts: i64,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<String>,
    /// The HTTP status of the last answer; null when none came.
    pub response_status: Option<i64>,
    /// When the next attempt is due, while pending.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_attempt_at: Option<Timestamp>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// When the last attempt was made, or the delivery created.
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
}

/// A webhook's secret as stored: in the clear, or sealed under the
/// operator's `[encryption]` key (see [`secret_context`]).
#[derive(Clone)]
pub enum StoredSecret {
    Plain(String),
    Sealed {
        sealed: Vec<u8>,
        key_id: String,
        context: String,
    },
}

impl std::fmt::Debug for StoredSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoredSecret::Plain(_) => "StoredSecret::Plain",
            StoredSecret::Sealed { .. } => "StoredSecret::Sealed",
        })
    }
}

/// What a webhook's sealed secret is bound to: its organisation and URL.
pub fn secret_context(tenant_id: i64, url: &str) -> String {
    format!("webhook-secret/{tenant_id}/{url}")
}

fn stored_secret(
    tenant_id: i64,
    url: &str,
    plain: String,
    sealed: Option<Vec<u8>>,
    key_id: Option<String>,
) -> StoredSecret {
    match (sealed, key_id) {
        (Some(sealed), Some(key_id)) => StoredSecret::Sealed {
            sealed,
            key_id,
            context: secret_context(tenant_id, url),
        },
        _ => StoredSecret::Plain(plain),
    }
}

/// A delivery whose attempt is due, with what sending it needs.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub id: i64,
    pub uuid: String,
    pub url: String,
    pub secret: StoredSecret,
    pub event_type: String,
    pub payload: String,
    pub attempts: i64,
    pub created_at: i64,
}

/// How an attempt went.
#[derive(Debug, Clone)]
pub enum Attempt {
    Delivered {
        status: i64,
    },
    /// Try again at `next_at` (microseconds).
    Retry {
        status: Option<i64>,
        error: String,
        next_at: i64,
    },
    GaveUp {
        status: Option<i64>,
        error: String,
    },
}

/// A webhook to create.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub url: String,
    /// Sealed under `key_id` (with [`secret_context`]), or in the clear.
    pub secret: StoredSecret,
    pub events: Vec<String>,
    pub enabled: bool,
}

const WEBHOOK_COLUMNS: &str =
    "w.uuid, t.uuid, w.url, w.events, w.enabled, w.created_at, w.updated_at";
const WEBHOOK_FROM: &str = "webhooks w JOIN tenants t ON t.id = w.tenant_id";

fn webhook_from_row(r: &Row) -> rusqlite::Result<Webhook> {
    let events: String = r.get(3)?;
    Ok(Webhook {
        id: r.get(0)?,
        tenant_id: r.get(1)?,
        url: r.get(2)?,
        events: serde_json::from_str(&events).unwrap_or_default(),
        enabled: r.get(4)?,
        created_at: Timestamp(r.get(5)?),
        updated_at: Timestamp(r.get(6)?),
    })
}

fn webhook_key(conn: &Connection, tenant_id: i64, uuid: &str) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT id FROM webhooks WHERE tenant_id = ?1 AND uuid = ?2")?
        .query_row(params![tenant_id, uuid], |r| r.get(0))
        .optional()?)
}

/// Puts an event in the outbox of each of the tenant's enabled webhooks
/// that subscribes to `event_type`, in the caller's transaction: the event
/// is delivered if and only if the change that produced it commits.
/// `data` is the event's own content; each delivery's body is
/// `{"id", "type", "created_at", "data"}`. Returns how many deliveries.
pub(crate) fn enqueue_event(
    conn: &Connection,
    tenant_id: i64,
    event_type: &str,
    data: &serde_json::Value,
) -> Result<usize> {
    let hooks: Vec<i64> = conn
        .prepare_cached(
            "SELECT id FROM webhooks WHERE tenant_id = ?1 AND enabled \
             AND EXISTS (SELECT 1 FROM json_each(events) WHERE value = ?2) ORDER BY id",
        )?
        .query_map(params![tenant_id, event_type], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let now = now_micros();
    let mut insert = conn.prepare_cached(
        "INSERT INTO webhook_deliveries (uuid, webhook_id, event_type, payload, status, \
         attempts, next_attempt_at, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, 'pending', 0, ?5, ?5, ?5)",
    )?;
    for hook in &hooks {
        let uuid = new_uuid();
        let payload = serde_json::json!({
            "id": uuid,
            "type": event_type,
            "created_at": Timestamp(now),
            "data": data,
        })
        .to_string();
        insert.execute(params![uuid, hook, event_type, payload, now])?;
    }
    Ok(hooks.len())
}

impl Store {
    /// Creates a webhook; the creation is audited (without the secret).
    pub async fn create_webhook(
        &self,
        tenant_id: i64,
        hook: NewWebhook,
        by: Actor,
    ) -> Result<Webhook> {
        self.write(move |conn| {
            let uuid = new_uuid();
            let now = now_micros();
            let events = serde_json::to_string(&hook.events).unwrap_or_else(|_| "[]".into());
            conn.prepare_cached(
                "INSERT INTO webhooks (uuid, tenant_id, url, secret, events, enabled, \
                 created_at, updated_at, secret_sealed, secret_key_id) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, ?9)",
            )?
            .execute(params![
                uuid,
                tenant_id,
                hook.url,
                match &hook.secret {
                    StoredSecret::Plain(plain) => plain.as_str(),
                    StoredSecret::Sealed { .. } => "",
                },
                events,
                hook.enabled,
                now,
                match &hook.secret {
                    StoredSecret::Sealed { sealed, .. } => Some(sealed),
                    StoredSecret::Plain(_) => None,
                },
                match &hook.secret {
                    StoredSecret::Sealed { key_id, .. } => Some(key_id),
                    StoredSecret::Plain(_) => None,
                },
            ])?;
            audit::record(
                conn,
                tenant_id,
                &by,
                "webhook.create",
                Some(&uuid),
                serde_json::json!({"url": hook.url, "events": hook.events, "enabled": hook.enabled}),
            )?;
            let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM {WEBHOOK_FROM} WHERE w.uuid = ?1");
            Ok(conn
                .prepare_cached(&sql)?
                .query_row([&uuid], webhook_from_row)?)
        })
        .await
    }

    /// The tenant's webhooks, oldest first.
    pub async fn list_webhooks(&self, tenant_id: i64) -> Result<Vec<Webhook>> {
        self.read(move |conn| {
            let sql = format!(
                "SELECT {WEBHOOK_COLUMNS} FROM {WEBHOOK_FROM} WHERE w.tenant_id = ?1 ORDER BY w.id"
            );
            Ok(conn
                .prepare_cached(&sql)?
                .query_map([tenant_id], webhook_from_row)?
                .collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    /// Deletes a webhook and its deliveries; audited. `false`: the tenant
    /// has no such webhook.
    pub async fn delete_webhook(&self, tenant_id: i64, uuid: String, by: Actor) -> Result<bool> {
        self.write(move |conn| {
            let Some(id) = webhook_key(conn, tenant_id, &uuid)? else {
                return Ok(false);
            };
            let url: String = conn
                .prepare_cached("SELECT url FROM webhooks WHERE id = ?1")?
                .query_row([id], |r| r.get(0))?;
            conn.prepare_cached("DELETE FROM webhook_deliveries WHERE webhook_id = ?1")?
                .execute([id])?;
            conn.prepare_cached("DELETE FROM webhooks WHERE id = ?1")?
                .execute([id])?;
            audit::record(
                conn,
                tenant_id,
                &by,
                "webhook.delete",
                Some(&uuid),
                serde_json::json!({"url": url}),
            )?;
            Ok(true)
        })
        .await
    }

    /// A webhook's URL and secret, for a test delivery.
    pub async fn webhook_target(
        &self,
        tenant_id: i64,
        uuid: String,
    ) -> Result<Option<(String, StoredSecret)>> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT url, secret, secret_sealed, secret_key_id FROM webhooks \
                     WHERE tenant_id = ?1 AND uuid = ?2",
                )?
                .query_row(params![tenant_id, uuid], |r| {
                    let url: String = r.get(0)?;
                    let secret = stored_secret(tenant_id, &url, r.get(1)?, r.get(2)?, r.get(3)?);
                    Ok((url, secret))
                })
                .optional()?)
        })
        .await
    }

    /// A webhook's most recent deliveries, newest first, at most `limit`.
    /// `None`: the tenant has no such webhook.
    pub async fn list_webhook_deliveries(
        &self,
        tenant_id: i64,
        uuid: String,
        limit: usize,
    ) -> Result<Option<Vec<WebhookDelivery>>> {
        self.read(move |conn| {
            let Some(id) = webhook_key(conn, tenant_id, &uuid)? else {
                return Ok(None);
            };
            let rows = conn
                .prepare_cached(
                    "SELECT uuid, event_type, status, attempts, last_error, response_status, \
                     next_attempt_at, created_at, updated_at FROM webhook_deliveries \
                     WHERE webhook_id = ?1 ORDER BY id DESC LIMIT ?2",
                )?
                .query_map(params![id, limit as i64], |r| {
                    let status: String = r.get(2)?;
                    let next: i64 = r.get(6)?;
                    Ok(WebhookDelivery {
                        id: r.get(0)?,
                        event_type: r.get(1)?,
                        next_attempt_at: (status == "pending").then_some(Timestamp(next)),
                        status,
                        attempts: r.get(3)?,
                        last_error: r.get(4)?,
                        response_status: r.get(5)?,
                        created_at: Timestamp(r.get(7)?),
                        updated_at: Timestamp(r.get(8)?),
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(Some(rows))
        })
        .await
    }

    /// Up to `limit` deliveries due at `now` of enabled webhooks, oldest
    /// due first, leaving out `busy` (attempts in flight).
    pub async fn due_webhook_deliveries(
        &self,
        now: i64,
        limit: usize,
        busy: Vec<i64>,
    ) -> Result<Vec<DueDelivery>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT d.id, d.uuid, w.url, w.secret, d.event_type, d.payload, d.attempts, \
                 d.created_at, w.tenant_id, w.secret_sealed, w.secret_key_id \
                 FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id \
                 WHERE d.status = 'pending' AND d.next_attempt_at <= ?1 AND w.enabled \
                 ORDER BY d.next_attempt_at, d.id LIMIT ?2",
            )?;
            let take = (limit + busy.len()) as i64;
            let rows = stmt.query_map(params![now, take], |r| {
                let url: String = r.get(2)?;
                Ok(DueDelivery {
                    id: r.get(0)?,
                    uuid: r.get(1)?,
                    secret: stored_secret(r.get(8)?, &url, r.get(3)?, r.get(9)?, r.get(10)?),
                    url,
                    event_type: r.get(4)?,
                    payload: r.get(5)?,
                    attempts: r.get(6)?,
                    created_at: r.get(7)?,
                })
            })?;
            let mut due = Vec::new();
            for row in rows {
                let row = row?;
                if !busy.contains(&row.id) {
                    due.push(row);
                }
                if due.len() == limit {
                    break;
                }
            }
            Ok(due)
        })
        .await
    }

    /// When the earliest pending delivery is due, if any is.
    pub async fn next_webhook_due(&self) -> Result<Option<i64>> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT min(next_attempt_at) FROM webhook_deliveries WHERE status = 'pending'",
                )?
                .query_row([], |r| r.get(0))?)
        })
        .await
    }

    /// Deletes up to 5,000 delivered or failed deliveries last attempted
    /// before `before` (microseconds); returns how many.
    pub async fn prune_webhook_deliveries(&self, before: i64) -> Result<usize> {
        self.write(move |conn| {
            Ok(conn
                .prepare_cached(
                    "DELETE FROM webhook_deliveries WHERE id IN (SELECT id FROM webhook_deliveries \
                     WHERE status != 'pending' AND updated_at < ?1 LIMIT 5000)",
                )?
                .execute([before])?)
        })
        .await
    }

    /// Records an attempt at a delivery.
    pub async fn record_webhook_attempt(&self, id: i64, attempt: Attempt) -> Result<()> {
        self.write(move |conn| {
            let now = now_micros();
            let (status, response, error, next) = match &attempt {
                Attempt::Delivered { status } => ("delivered", Some(*status), None, now),
                Attempt::Retry {
                    status,
                    error,
                    next_at,
                } => ("pending", *status, Some(error.as_str()), *next_at),
                Attempt::GaveUp { status, error } => ("failed", *status, Some(error.as_str()), now),
            };
            conn.prepare_cached(
                "UPDATE webhook_deliveries SET status = ?2, attempts = attempts + 1, \
                 response_status = ?3, last_error = ?4, next_attempt_at = ?5, updated_at = ?6 \
                 WHERE id = ?1 AND status = 'pending'",
            )?
            .execute(params![id, status, response, error, next, now])?;
            Ok(())
        })
        .await
    }
}
