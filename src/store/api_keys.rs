//! API keys: creating, listing, rotating and revoking them, and finding a
//! presented key by its visible prefix. Keys arrive as prefix and SHA-256
//! digest; the store never sees one whole. Each change made on someone's
//! behalf is recorded in the audit log in its own transaction (see `audit`).

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::json;

use super::audit::{self, Actor};
use super::tenancy::new_uuid;
use super::{now_micros, Result, Store, StoreError};

/// An API key as listed: never its secret.
#[derive(Debug, Clone)]
pub struct ApiKeyInfo {
    pub id: i64,
    pub uuid: String,
    pub name: String,
    pub prefix: String,
    pub scopes: Vec<String>,
    pub project_uuid: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// A key to store: its project, a label, and the key as prefix and digest.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub project_id: i64,
    pub name: String,
    pub prefix: String,
    pub key_hash: [u8; 32],
    /// Microseconds since the epoch after which the key answers `api_key_expired`.
    pub expires_at: Option<i64>,
    pub scopes: Vec<String>,
}

/// A candidate API key found by prefix; the caller compares the hash.
#[derive(Debug, Clone)]
pub struct ApiKeyRecord {
    pub id: i64,
    pub tenant_id: i64,
    pub project_id: i64,
    pub key_hash: Vec<u8>,
    pub scopes: Vec<String>,
    pub expires_at: Option<i64>,
    pub revoked: bool,
    /// The tenant's plan name.
    pub plan: String,
}

impl Store {
    pub async fn list_api_keys(&self, tenant_id: i64) -> Result<Vec<ApiKeyInfo>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "{API_KEY_INFO} WHERE k.tenant_id = ?1 ORDER BY k.id"
            ))?;
            let rows = stmt
                .query_map([tenant_id], api_key_info_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    pub async fn api_key_info(&self, tenant_id: i64, key_id: i64) -> Result<Option<ApiKeyInfo>> {
        self.read(move |conn| key_info(conn, tenant_id, key_id))
            .await
    }

    /// The tenant's key with this public id.
    pub async fn api_key_id(&self, tenant_id: i64, uuid: String) -> Result<Option<i64>> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached("SELECT id FROM api_keys WHERE tenant_id = ?1 AND uuid = ?2")?
                .query_row(params![tenant_id, uuid], |r| r.get(0))
                .optional()?)
        })
        .await
    }

    /// Gives an unrevoked key a new secret; the old one stops working at once.
    pub async fn rotate_api_key(
        &self,
        tenant_id: i64,
        key_id: i64,
        prefix: String,
        key_hash: [u8; 32],
        by: Actor,
    ) -> Result<bool> {
        self.write(move |conn| {
            let Some(uuid) = conn
                .prepare_cached(
                    "UPDATE api_keys SET prefix = ?3, key_hash = ?4 \
                     WHERE tenant_id = ?1 AND id = ?2 AND revoked_at IS NULL RETURNING uuid",
                )?
                .query_row(params![tenant_id, key_id, prefix, &key_hash[..]], |r| {
                    r.get::<_, String>(0)
                })
                .optional()?
            else {
                return Ok(false);
            };
            audit::record(
                conn,
                tenant_id,
                &by,
                "apikey.rotate",
                Some(&uuid),
                json!({}),
            )?;
            Ok(true)
        })
        .await
    }

    /// Records that a key was used now.
    pub async fn touch_api_key(&self, key_id: i64) -> Result<()> {
        self.write(move |conn| {
            conn.prepare_cached("UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1")?
                .execute(params![key_id, now_micros()])?;
            Ok(())
        })
        .await
    }

    /// Stores a new API key, given as its visible prefix and digest.
    pub async fn create_api_key(&self, tenant_id: i64, key: NewApiKey, by: Actor) -> Result<i64> {
        self.create_user_api_key(tenant_id, key, None, by).await
    }

    /// Stores a new API key as [`Store::create_api_key`] does, noting the
    /// user who created it (their key count).
    pub async fn create_user_api_key(
        &self,
        tenant_id: i64,
        key: NewApiKey,
        creator: Option<i64>,
        by: Actor,
    ) -> Result<i64> {
        self.write(move |conn| {
            let (id, uuid) = insert_api_key(conn, tenant_id, &key, now_micros())?;
            if let Some(user_id) = creator {
                conn.prepare_cached(
                    "INSERT INTO api_key_creators (key_id, user_id) VALUES (?1, ?2)",
                )?
                .execute(params![id, user_id])?;
            }
            audit::record(
                conn,
                tenant_id,
                &by,
                "apikey.create",
                Some(&uuid),
                json!({"name": key.name, "scopes": key.scopes}),
            )?;
            Ok(id)
        })
        .await
    }

    /// Revokes one of the tenant's keys; false when the tenant has no such
    /// unrevoked key.
    pub async fn revoke_api_key(&self, tenant_id: i64, key_id: i64, by: Actor) -> Result<bool> {
        self.write(move |conn| {
            let Some(uuid) = conn
                .prepare_cached(
                    "UPDATE api_keys SET revoked_at = ?3 \
                     WHERE tenant_id = ?1 AND id = ?2 AND revoked_at IS NULL RETURNING uuid",
                )?
                .query_row(params![tenant_id, key_id, now_micros()], |r| {
                    r.get::<_, String>(0)
                })
                .optional()?
            else {
                return Ok(false);
            };
            audit::record(
                conn,
                tenant_id,
                &by,
                "apikey.revoke",
                Some(&uuid),
                json!({}),
            )?;
            Ok(true)
        })
        .await
    }

    /// API keys whose visible prefix is `prefix`.
    pub async fn api_keys_by_prefix(&self, prefix: String) -> Result<Vec<ApiKeyRecord>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT k.id, k.tenant_id, k.project_id, k.key_hash, k.scopes, k.expires_at, \
                 k.revoked_at, t.plan FROM api_keys k JOIN tenants t ON t.id = k.tenant_id \
                 WHERE k.prefix = ?1",
            )?;
            let rows = stmt.query_map([prefix], |r| {
                let scopes: String = r.get(4)?;
                Ok(ApiKeyRecord {
                    id: r.get(0)?,
                    tenant_id: r.get(1)?,
                    project_id: r.get(2)?,
                    key_hash: r.get(3)?,
                    scopes: serde_json::from_str(&scopes).unwrap_or_default(),
                    expires_at: r.get(5)?,
                    revoked: r.get::<_, Option<i64>>(6)?.is_some(),
                    plan: r.get(7)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }
}

const API_KEY_INFO: &str = "SELECT k.id, k.uuid, k.name, k.prefix, k.scopes, p.uuid, k.created_at, \
     k.expires_at, k.last_used_at, k.revoked_at FROM api_keys k JOIN projects p ON p.id = k.project_id";

fn api_key_info_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApiKeyInfo> {
    let scopes: String = r.get(4)?;
    Ok(ApiKeyInfo {
        id: r.get(0)?,
        uuid: r.get(1)?,
        name: r.get(2)?,
        prefix: r.get(3)?,
        scopes: serde_json::from_str(&scopes).unwrap_or_default(),
        project_uuid: r.get(5)?,
        created_at: r.get(6)?,
        expires_at: r.get(7)?,
        last_used_at: r.get(8)?,
        revoked_at: r.get(9)?,
    })
}

fn key_info(conn: &Connection, tenant_id: i64, key_id: i64) -> Result<Option<ApiKeyInfo>> {
    Ok(conn
        .prepare_cached(&format!(
            "{API_KEY_INFO} WHERE k.tenant_id = ?1 AND k.id = ?2"
        ))?
        .query_row(params![tenant_id, key_id], api_key_info_from_row)
        .optional()?)
}

/// Inserts a key; returns its id and UUID.
pub(super) fn insert_api_key(
    conn: &Connection,
    tenant_id: i64,
    key: &NewApiKey,
    now: i64,
) -> Result<(i64, String)> {
    let project_exists = conn
        .prepare_cached("SELECT 1 FROM projects WHERE tenant_id = ?1 AND id = ?2")?
        .exists(params![tenant_id, key.project_id])?;
    if !project_exists {
        return Err(StoreError::Conflict(
            "the key's project is not in its tenant".into(),
        ));
    }
    let uuid = new_uuid();
    conn.prepare_cached(
        "INSERT INTO api_keys (uuid, tenant_id, project_id, name, prefix, key_hash, created_at, \
         expires_at, scopes) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        uuid.as_str(),
        tenant_id,
        key.project_id,
        key.name,
        key.prefix,
        &key.key_hash[..],
        now,
        key.expires_at,
        serde_json::to_string(&key.scopes).unwrap_or_else(|_| "[]".into())
    ])?;
    Ok((conn.last_insert_rowid(), uuid))
}
