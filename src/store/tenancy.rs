//! Tenants (organisations) and their projects. Each change made
//! on someone's behalf is recorded in the audit log in its own transaction
//! (see `audit`).

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::json;

use super::api_keys::{insert_api_key, NewApiKey};
use super::audit::{self, Actor};
use super::{now_micros, Result, Store, StoreError};

/// An organisation with its first project, owner and API key: what an empty
/// database is given on first start, and what an operator creates. Secrets
/// arrive already hashed; the store never sees a plaintext password or key.
#[derive(Debug, Clone)]
pub struct NewOrg {
    pub org: String,
    pub project: String,
    pub admin_email: String,
    pub password_hash: String,
    pub key_prefix: String,
    pub key_hash: [u8; 32],
    /// The organisation's plan name.
    pub plan: String,
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
    pub archived_at: Option<i64>,
    pub retention_days: Option<i64>,
    pub created_at: i64,
    /// When its name, retention or archiving last changed.
    pub updated_at: i64,
    /// Its organisation's public id.
    pub organization_uuid: String,
}

/// A change to a project; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ProjectChange {
    pub name: Option<String>,
    /// `Some(None)` clears the override.
    pub retention_days: Option<Option<i64>>,
}

const PROJECT_COLUMNS: &str = "id, uuid, tenant_id, name, slug, archived_at, retention_days, \
     created_at, coalesce(updated_at, created_at), \
     (SELECT uuid FROM tenants WHERE tenants.id = projects.tenant_id)";

impl Store {
    pub async fn is_initialised(&self) -> Result<bool> {
        self.read(has_tenant).await
    }

    /// Creates the first organisation, project, owner and API key, unless
    /// any organisation exists already (then changes nothing).
    pub async fn bootstrap(&self, org: NewOrg) -> Result<BootstrapResult> {
        self.write(move |conn| {
            if has_tenant(conn)? {
                return Ok(BootstrapResult::AlreadyInitialised);
            }
            let created = insert_org(conn, &org, "initial key")?;
            Ok(BootstrapResult::Created {
                tenant_uuid: created.tenant_uuid,
                project_uuid: created.project_uuid,
            })
        })
        .await
    }

    /// Creates an organisation with its project, owner and API key, all or
    /// nothing; an owner email used by any user is a conflict. Returns the
    /// organisation's and the project's UUIDs.
    pub async fn create_org(&self, org: NewOrg, by: Actor) -> Result<(String, String)> {
        self.write(move |conn| {
            let created = insert_org(conn, &org, "operator key")?;
            audit::record(
                conn,
                created.tenant_id,
                &by,
                "org.create",
                Some(&created.tenant_uuid),
                json!({"name": org.org, "admin_email": org.admin_email, "plan": org.plan}),
            )?;
            Ok((created.tenant_uuid, created.project_uuid))
        })
        .await
    }

    /// Creates an organisation with its first project only; returns their ids.
    pub async fn create_tenant(
        &self,
        org: String,
        project: String,
        by: Actor,
    ) -> Result<(i64, i64)> {
        self.write(move |conn| {
            let now = now_micros();
            let (tenant_id, tenant_uuid) = insert_tenant(conn, &org, now)?;
            let (project_id, _) = insert_project(conn, tenant_id, &project, now)?;
            audit::record(
                conn,
                tenant_id,
                &by,
                "org.create",
                Some(&tenant_uuid),
                json!({"name": org}),
            )?;
            Ok((tenant_id, project_id))
        })
        .await
    }

    /// An organisation by its UUID or its name: `(id, uuid, name)`.
    pub async fn find_tenant(&self, reference: String) -> Result<Option<(i64, String, String)>> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT id, uuid, name FROM tenants WHERE uuid = ?1 OR name = ?1 \
                     ORDER BY uuid = ?1 DESC, id LIMIT 1",
                )?
                .query_row([reference], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?)
        })
        .await
    }

    /// Adds a project to a tenant; a name already used in the tenant conflicts.
    pub async fn create_project(
        &self,
        tenant_id: i64,
        name: String,
        by: Actor,
    ) -> Result<ProjectRecord> {
        self.write(move |conn| {
            let (id, uuid) = insert_project(conn, tenant_id, &name, now_micros())?;
            audit::record(
                conn,
                tenant_id,
                &by,
                "project.create",
                Some(&uuid),
                json!({"name": name}),
            )?;
            project_by_id(conn, id)
        })
        .await
    }

    /// The tenant's projects in creation order, after project `after` (an
    /// internal id) when paging; archived ones only when asked.
    pub async fn list_projects(
        &self,
        tenant_id: i64,
        include_archived: bool,
        after: Option<i64>,
        limit: usize,
    ) -> Result<Vec<ProjectRecord>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {PROJECT_COLUMNS} FROM projects WHERE tenant_id = ?1 \
                 AND (?2 OR archived_at IS NULL) AND id > ?3 ORDER BY id LIMIT ?4"
            ))?;
            let rows = stmt
                .query_map(
                    params![
                        tenant_id,
                        include_archived,
                        after.unwrap_or(0),
                        limit as i64
                    ],
                    project_from_row,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    /// Renames a project or sets its retention override.
    pub async fn update_project(
        &self,
        tenant_id: i64,
        uuid: String,
        change: ProjectChange,
        by: Actor,
    ) -> Result<Option<ProjectRecord>> {
        self.write(move |conn| {
            let Some(project) = project_by_uuid(conn, tenant_id, &uuid)? else {
                return Ok(None);
            };
            if let Some(name) = &change.name {
                let slug = slugify(name);
                let taken = conn
                    .prepare_cached(
                        "SELECT 1 FROM projects WHERE tenant_id = ?1 AND id != ?2 \
                         AND (name = ?3 OR slug = ?4)",
                    )?
                    .exists(params![tenant_id, project.id, name, slug])?;
                if taken {
                    return Err(StoreError::Conflict(format!(
                        "a project named {name:?} (or with slug {slug:?}) already exists"
                    )));
                }
                conn.prepare_cached(
                    "UPDATE projects SET name = ?2, slug = ?3, updated_at = ?4 WHERE id = ?1",
                )?
                .execute(params![project.id, name, slug, now_micros()])?;
            }
            if let Some(days) = change.retention_days {
                conn.prepare_cached(
                    "UPDATE projects SET retention_days = ?2, updated_at = ?3 WHERE id = ?1",
                )?
                .execute(params![project.id, days, now_micros()])?;
            }
            // Named as the API names them; only what the change sets.
            let mut details = serde_json::Map::new();
            if let Some(name) = &change.name {
                details.insert("name".into(), name.as_str().into());
            }
            if let Some(days) = change.retention_days {
                details.insert("retention_days_override".into(), days.into());
            }
            audit::record(
                conn,
                tenant_id,
                &by,
                "project.update",
                Some(&uuid),
                details.into(),
            )?;
            project_by_id(conn, project.id).map(Some)
        })
        .await
    }

    /// Archives or unarchives a project; the tenant's last active project
    /// cannot be archived.
    pub async fn set_project_archived(
        &self,
        tenant_id: i64,
        uuid: String,
        archived: bool,
        by: Actor,
    ) -> Result<Option<ProjectRecord>> {
        self.write(move |conn| {
            let Some(project) = project_by_uuid(conn, tenant_id, &uuid)? else {
                return Ok(None);
            };
            if archived && !project.archived {
                let others: i64 = conn
                    .prepare_cached(
                        "SELECT count(*) FROM projects WHERE tenant_id = ?1 AND id != ?2 \
                         AND archived_at IS NULL",
                    )?
                    .query_row(params![tenant_id, project.id], |r| r.get(0))?;
                if others == 0 {
                    return Err(StoreError::Refused {
                        message: "error.project.cannot_archive_last: the organisation's last \
                                  active project cannot be archived"
                            .into(),
                        code: "error.project.cannot_archive_last",
                    });
                }
            }
            let at = archived.then(now_micros);
            if archived != project.archived {
                conn.prepare_cached(
                    "UPDATE projects SET archived_at = ?2, updated_at = ?3 WHERE id = ?1",
                )?
                .execute(params![project.id, at, now_micros()])?;
            }
            let action = if archived {
                "project.archive"
            } else {
                "project.unarchive"
            };
            audit::record(conn, tenant_id, &by, action, Some(&uuid), json!({}))?;
            project_by_id(conn, project.id).map(Some)
        })
        .await
    }

    /// The tenant's first active project: where a session's writes go.
    pub async fn default_project(&self, tenant_id: i64) -> Result<Option<ProjectRecord>> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {PROJECT_COLUMNS} FROM projects WHERE tenant_id = ?1 \
                     ORDER BY archived_at IS NOT NULL, id LIMIT 1"
                ))?
                .query_row([tenant_id], project_from_row)
                .optional()?)
        })
        .await
    }

    /// Puts an organisation on a plan; false when there is no such tenant.
    pub async fn set_plan(&self, tenant_id: i64, plan: String, by: Actor) -> Result<bool> {
        self.write(move |conn| {
            let Some(tenant_uuid) = conn
                .prepare_cached("UPDATE tenants SET plan = ?2 WHERE id = ?1 RETURNING uuid")?
                .query_row(params![tenant_id, plan], |r| r.get::<_, String>(0))
                .optional()?
            else {
                return Ok(false);
            };
            audit::record(
                conn,
                tenant_id,
                &by,
                "org.set_plan",
                Some(&tenant_uuid),
                json!({"plan": plan}),
            )?;
            Ok(true)
        })
        .await
    }

    /// Traces ingested by the tenant in `month` (`YYYY-MM`).
    pub async fn monthly_usage(&self, tenant_id: i64, month: String) -> Result<u64> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached("SELECT traces FROM usage WHERE tenant_id = ?1 AND month = ?2")?
                .query_row(params![tenant_id, month], |r| r.get::<_, i64>(0))
                .optional()?
                .unwrap_or(0)
                .max(0) as u64)
        })
        .await
    }

    pub async fn tenant_uuid(&self, tenant_id: i64) -> Result<Option<String>> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached("SELECT uuid FROM tenants WHERE id = ?1")?
                .query_row([tenant_id], |r| r.get(0))
                .optional()?)
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
                .prepare_cached(&format!(
                    "SELECT {PROJECT_COLUMNS} FROM projects \
                     WHERE tenant_id = ?1 AND (uuid = ?2 OR slug = ?2 OR name = ?2) \
                     ORDER BY uuid = ?2 DESC, slug = ?2 DESC LIMIT 1"
                ))?
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
                .prepare_cached(&format!(
                    "SELECT {PROJECT_COLUMNS} FROM projects \
                     WHERE tenant_id = ?1 AND (uuid = ?2 OR slug = ?2 OR name = ?2 OR id = ?3) \
                     ORDER BY uuid = ?2 DESC, slug = ?2 DESC, name = ?2 DESC LIMIT 1"
                ))?
                .query_row(params![tenant_id, reference, fallback], project_from_row)
                .optional()?)
        })
        .await
    }
}

fn project_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ProjectRecord> {
    let archived_at: Option<i64> = r.get(5)?;
    Ok(ProjectRecord {
        id: r.get(0)?,
        uuid: r.get(1)?,
        tenant_id: r.get(2)?,
        name: r.get(3)?,
        slug: r.get(4)?,
        archived: archived_at.is_some(),
        archived_at,
        retention_days: r.get(6)?,
        created_at: r.get(7)?,
        updated_at: r.get(8)?,
        organization_uuid: r.get(9)?,
    })
}

fn project_by_id(conn: &Connection, id: i64) -> Result<ProjectRecord> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {PROJECT_COLUMNS} FROM projects WHERE id = ?1"
        ))?
        .query_row([id], project_from_row)?)
}

fn project_by_uuid(conn: &Connection, tenant_id: i64, uuid: &str) -> Result<Option<ProjectRecord>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {PROJECT_COLUMNS} FROM projects WHERE tenant_id = ?1 AND uuid = ?2"
        ))?
        .query_row(params![tenant_id, uuid], project_from_row)
        .optional()?)
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
        "INSERT INTO projects (uuid, tenant_id, name, slug, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
    )?
    .execute(params![uuid, tenant_id, name, slug, now])?;
    Ok((conn.last_insert_rowid(), uuid))
}

/// What `insert_org` made.
struct CreatedOrg {
    tenant_id: i64,
    tenant_uuid: String,
    project_uuid: String,
}

/// Inserts an organisation on its plan, its project, its owner and a key
/// named `key_name`.
fn insert_org(conn: &Connection, org: &NewOrg, key_name: &str) -> Result<CreatedOrg> {
    let taken = conn
        .prepare_cached("SELECT 1 FROM users WHERE email = ?1")?
        .exists([&org.admin_email])?;
    if taken {
        return Err(StoreError::Conflict(format!(
            "a user with email {:?} exists",
            org.admin_email
        )));
    }
    let now = now_micros();
    let (tenant_id, tenant_uuid) = insert_tenant(conn, &org.org, now)?;
    conn.prepare_cached("UPDATE tenants SET plan = ?2 WHERE id = ?1")?
        .execute(params![tenant_id, org.plan])?;
    let (project_id, project_uuid) = insert_project(conn, tenant_id, &org.project, now)?;
    conn.prepare_cached(
        "INSERT INTO users (uuid, tenant_id, email, password_hash, role, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        new_uuid(),
        tenant_id,
        org.admin_email,
        org.password_hash,
        crate::auth::Role::Owner,
        now
    ])?;
    let key = NewApiKey {
        project_id,
        name: key_name.into(),
        prefix: org.key_prefix.clone(),
        key_hash: org.key_hash,
        expires_at: None,
        scopes: Vec::new(),
    };
    insert_api_key(conn, tenant_id, &key, now)?;
    Ok(CreatedOrg {
        tenant_id,
        tenant_uuid,
        project_uuid,
    })
}

fn has_tenant(conn: &Connection) -> Result<bool> {
    Ok(conn
        .query_row("SELECT 1 FROM tenants LIMIT 1", [], |_| Ok(()))
        .optional()?
        .is_some())
}

pub(super) fn new_uuid() -> String {
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
