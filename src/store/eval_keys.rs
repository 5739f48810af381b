//! Organisations' own judge keys: one active key per provider, kept sealed
//! (the caller seals and opens them with `crate::secrets::SecretBox`; the
//! store never sees a key in the clear). Setting a key replaces the active
//! one in the same transaction; a replaced or revoked key's sealed value is
//! erased and its row kept for the record.

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::audit::{self, Actor};
use super::tenancy::new_uuid;
use super::{now_micros, Result, Store};
use crate::model::Timestamp;

/// An active key as the API shows it (the reference's `EvalKey`): never
/// the key itself.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = EvalKey)]
pub struct EvalKey {
    #[schema(format = "uuid")]
    pub id: String,
    #[schema(example = "openai")]
    pub provider: String,
    /// The key's last four characters, to tell keys apart.
    #[schema(example = "…x7Qa")]
    pub hint: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

/// An active key, still sealed.
#[derive(Debug, Clone)]
pub struct SealedKey {
    pub sealed: Vec<u8>,
    /// The id of the encryption key that sealed it.
    pub key_id: String,
}

/// A key to set, already sealed.
#[derive(Debug, Clone)]
pub struct NewEvalKey {
    pub provider: String,
    pub sealed: Vec<u8>,
    pub key_id: String,
    pub hint: String,
}

fn key_from_row(r: &rusqlite::Row) -> rusqlite::Result<EvalKey> {
    Ok(EvalKey {
        id: r.get(0)?,
        provider: r.get(1)?,
        hint: r.get(2)?,
        created_at: Timestamp(r.get(3)?),
    })
}

impl Store {
    /// The organisation's active keys, by provider.
    pub async fn eval_keys(&self, tenant_id: i64) -> Result<Vec<EvalKey>> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT uuid, provider, hint, created_at FROM eval_keys \
                     WHERE tenant_id = ?1 AND revoked_at IS NULL ORDER BY provider",
                )?
                .query_map([tenant_id], key_from_row)?
                .collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    /// Sets the organisation's key for a provider, replacing (revoking) the
    /// active one; audited without the key.
    pub async fn set_eval_key(
        &self,
        tenant_id: i64,
        key: NewEvalKey,
        by: Actor,
    ) -> Result<EvalKey> {
        self.write(move |conn| {
            let now = now_micros();
            let replaced = conn
                .prepare_cached(
                    "UPDATE eval_keys SET revoked_at = ?3, sealed = NULL \
                     WHERE tenant_id = ?1 AND provider = ?2 AND revoked_at IS NULL",
                )?
                .execute(params![tenant_id, key.provider, now])?;
            let uuid = new_uuid();
            conn.prepare_cached(
                "INSERT INTO eval_keys (uuid, tenant_id, provider, sealed, key_id, hint, \
                 created_by, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                uuid,
                tenant_id,
                key.provider,
                key.sealed,
                key.key_id,
                key.hint,
                by.name,
                now
            ])?;
            audit::record(
                conn,
                tenant_id,
                &by,
                "eval_key.set",
                Some(&uuid),
                serde_json::json!({"provider": key.provider, "replaced": replaced > 0}),
            )?;
            Ok(EvalKey {
                id: uuid,
                provider: key.provider.clone(),
                hint: key.hint.clone(),
                created_at: Timestamp(now),
            })
        })
        .await
    }

    /// Revokes the organisation's key for a provider; false when it has none.
    pub async fn revoke_eval_key(
        &self,
        tenant_id: i64,
        provider: String,
        by: Actor,
    ) -> Result<bool> {
        self.write(move |conn| {
            let revoked: Option<String> = conn
                .prepare_cached(
                    "UPDATE eval_keys SET revoked_at = ?3, sealed = NULL \
                     WHERE tenant_id = ?1 AND provider = ?2 AND revoked_at IS NULL RETURNING uuid",
                )?
                .query_row(params![tenant_id, provider, now_micros()], |r| r.get(0))
                .optional()?;
            if let Some(uuid) = &revoked {
                audit::record(
                    conn,
                    tenant_id,
                    &by,
                    "eval_key.revoke",
                    Some(uuid),
                    serde_json::json!({"provider": provider}),
                )?;
            }
            Ok(revoked.is_some())
        })
        .await
    }

    /// The organisation's active key for a provider, sealed.
    pub async fn sealed_eval_key(
        &self,
        tenant_id: i64,
        provider: &'static str,
    ) -> Result<Option<SealedKey>> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT sealed, key_id FROM eval_keys \
                     WHERE tenant_id = ?1 AND provider = ?2 AND revoked_at IS NULL",
                )?
                .query_row(params![tenant_id, provider], |r| {
                    Ok(SealedKey {
                        sealed: r.get(0)?,
                        key_id: r.get(1)?,
                    })
                })
                .optional()?)
        })
        .await
    }

    /// How many active keys were sealed under another encryption key than
    /// `key_id`, or under any when there is none: they no longer open.
    pub async fn eval_keys_sealed_elsewhere(&self, key_id: Option<String>) -> Result<i64> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT count(*) FROM eval_keys WHERE revoked_at IS NULL \
                     AND (?1 IS NULL OR key_id <> ?1)",
                )?
                .query_row([key_id], |r| r.get(0))?)
        })
        .await
    }
}
