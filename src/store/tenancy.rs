//! Tenants (organisations), projects, users and API keys.

use rusqlite::{params, Connection, OptionalExtension};

use super::{now_micros, Result, Store, StoreError};

/// What an empty database is given on first start. Secrets arrive already
/// hashed; the store never sees a plaintext password or key.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    pub org: String,
    pub project: String,
    pub admin_email: String,
    pub password_hash: String,
    pub key_prefix: String,
    pub key_hash: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootstrapResult {
    Created {
        tenant_uuid: String,
        project_uuid: String,
    },
    AlreadyInitialised,
}

#[derive(Debug, Clone)]
pub struct ProjectRecord {
    pub id: i64,
    pub uuid: String,
    pub tenant_id: i64,
    pub name: String,
    pub slug: String,
    pub archived: bool,
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
}

impl Store {
    pub async fn is_initialised(&self) -> Result<bool> {
        self.read(has_tenant).await
    }

    /// Creates the first organisation, project, owner and API key, unless
    /// any organisation exists already (then changes nothing).
    pub async fn bootstrap(&self, b: Bootstrap) -> Result<BootstrapResult> {
        self.write(move |conn| {
            if has_tenant(conn)? {
                return Ok(BootstrapResult::AlreadyInitialised);
            }
            let now = now_micros();
            let (tenant_id, tenant_uuid) = insert_tenant(conn, &b.org, now)?;
            let (project_id, project_uuid) = insert_project(conn, tenant_id, &b.project, now)?;
            conn.execute(
                "INSERT INTO users (uuid, tenant_id, email, password_hash, role, created_at) \
                 VALUES (?1, ?2, ?3, ?4, 'owner', ?5)",
                params![new_uuid(), tenant_id, b.admin_email, b.password_hash, now],
            )?;
            let key = NewApiKey {
                project_id,
                name: "initial key".into(),
                prefix: b.key_prefix.clone(),
                key_hash: b.key_hash,
                expires_at: None,
            };
            insert_api_key(conn, tenant_id, &key, now)?;
            Ok(BootstrapResult::Created {
                tenant_uuid,
                project_uuid,
            })
        })
        .await
    }

    /// Creates an organisation with its first project; returns their ids.
    pub async fn create_tenant(&self, org: String, project: String) -> Result<(i64, i64)> {
        self.write(move |conn| {
            let now = now_micros();
            let (tenant_id, _) = insert_tenant(conn, &org, now)?;
            let (project_id, _) = insert_project(conn, tenant_id, &project, now)?;
            Ok((tenant_id, project_id))
        })
        .await
    }

    /// Adds a project to a tenant; a name already used in the tenant conflicts.
    pub async fn create_project(&self, tenant_id: i64, name: String) -> Result<ProjectRecord> {
        self.write(move |conn| {
            let (id, uuid) = insert_project(conn, tenant_id, &name, now_micros())?;
            Ok(ProjectRecord {
                id,
                uuid,
                tenant_id,
                slug: slugify(&name),
                name: name.clone(),
                archived: false,
            })
        })
        .await
    }

    /// Stores a new API key, given as its visible prefix and digest.
    pub async fn create_api_key(&self, tenant_id: i64, key: NewApiKey) -> Result<i64> {
        self.write(move |conn| insert_api_key(conn, tenant_id, &key, now_micros()))
            .await
    }

    /// Revokes one of the tenant's keys; false when the tenant has no such key.
    pub async fn revoke_api_key(&self, tenant_id: i64, key_id: i64) -> Result<bool> {
        self.write(move |conn| {
            let changed = conn
                .prepare_cached(
                    "UPDATE api_keys SET revoked_at = ?3 \
                     WHERE tenant_id = ?1 AND id = ?2 AND revoked_at IS NULL",
                )?
                .execute(params![tenant_id, key_id, now_micros()])?;
            Ok(changed == 1)
        })
        .await
    }

    /// API keys whose visible prefix is `prefix`.
    pub async fn api_keys_by_prefix(&self, prefix: String) -> Result<Vec<ApiKeyRecord>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, tenant_id, project_id, key_hash, scopes, expires_at, revoked_at \
                 FROM api_keys WHERE prefix = ?1",
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
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    /// The tenant's project named by `reference`: its UUID, slug or name, in
    /// that order of preference.
    pub async fn find_project(
        &self,
        tenant_id: i64,
        reference: String,
    ) -> Result<Option<ProjectRecord>> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT id, uuid, tenant_id, name, slug, archived_at IS NOT NULL FROM projects \
                     WHERE tenant_id = ?1 AND (uuid = ?2 OR slug = ?2 OR name = ?2) \
                     ORDER BY uuid = ?2 DESC, slug = ?2 DESC LIMIT 1",
                )?
                .query_row(params![tenant_id, reference], project_from_row)
                .optional()?)
        })
        .await
    }

    /// The tenant's project named by `reference` (UUID, slug or name), or
    /// else the project with id `fallback`: one read for the ingest path.
    pub async fn project_for_ingest(
        &self,
        tenant_id: i64,
        reference: Option<String>,
        fallback: i64,
    ) -> Result<Option<ProjectRecord>> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT id, uuid, tenant_id, name, slug, archived_at IS NOT NULL FROM projects \
                     WHERE tenant_id = ?1 AND (uuid = ?2 OR slug = ?2 OR name = ?2 OR id = ?3) \
                     ORDER BY uuid = ?2 DESC, slug = ?2 DESC, name = ?2 DESC LIMIT 1",
                )?
                .query_row(params![tenant_id, reference, fallback], project_from_row)
                .optional()?)
        })
        .await
    }
}

fn project_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ProjectRecord> {
    Ok(ProjectRecord {
        id: r.get(0)?,
        uuid: r.get(1)?,
        tenant_id: r.get(2)?,
        name: r.get(3)?,
        slug: r.get(4)?,
        archived: r.get(5)?,
    })
}

fn insert_tenant(conn: &Connection, name: &str, now: i64) -> Result<(i64, String)> {
    let uuid = new_uuid();
    conn.prepare_cached("INSERT INTO tenants (uuid, name, created_at) VALUES (?1, ?2, ?3)")?
        .execute(params![uuid, name, now])?;
    Ok((conn.last_insert_rowid(), uuid))
}

fn insert_project(
    conn: &Connection,
    tenant_id: i64,
    name: &str,
    now: i64,
) -> Result<(i64, String)> {
    let uuid = new_uuid();
    let slug = slugify(name);
    let taken: bool = conn
        .prepare_cached("SELECT 1 FROM projects WHERE tenant_id = ?1 AND (name = ?2 OR slug = ?3)")?
        .exists(params![tenant_id, name, slug])?;
    if taken {
        return Err(StoreError::Conflict(format!(
            "a project named {name:?} (or with slug {slug:?}) already exists"
        )));
    }
    conn.prepare_cached(
        "INSERT INTO projects (uuid, tenant_id, name, slug, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![uuid, tenant_id, name, slug, now])?;
    Ok((conn.last_insert_rowid(), uuid))
}

fn insert_api_key(conn: &Connection, tenant_id: i64, key: &NewApiKey, now: i64) -> Result<i64> {
    let project_exists = conn
        .prepare_cached("SELECT 1 FROM projects WHERE tenant_id = ?1 AND id = ?2")?
        .exists(params![tenant_id, key.project_id])?;
    if !project_exists {
        return Err(StoreError::Conflict(
            "the key's project is not in its tenant".into(),
        ));
    }
    conn.prepare_cached(
        "INSERT INTO api_keys (uuid, tenant_id, project_id, name, prefix, key_hash, created_at, \
         expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        new_uuid(),
        tenant_id,
        key.project_id,
        key.name,
        key.prefix,
        &key.key_hash[..],
        now,
        key.expires_at
    ])?;
    Ok(conn.last_insert_rowid())
}

fn has_tenant(conn: &Connection) -> Result<bool> {
    Ok(conn
        .query_row("SELECT 1 FROM tenants LIMIT 1", [], |_| Ok(()))
        .optional()?
        .is_some())
}

fn new_uuid() -> String {
    uuid::Uuid::now_v7().hyphenated().to_string()
}

/// A URL-friendly form of a name: lowercase ASCII letters and digits joined
/// by single hyphens (`"RAG App v2"` → `"rag-app-v2"`).
pub fn slugify(name: &str) -> String {
    let mut slug = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
    }
    let slug = slug.trim_end_matches('-');
    if slug.is_empty() {
        "project".to_string()
    } else {
        slug.to_string()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn slugs() {
        assert_eq!(super::slugify("RAG App v2"), "rag-app-v2");
        assert_eq!(super::slugify("  --x__y-- "), "x-y");
        assert_eq!(super::slugify("日本"), "project");
    }
}
