//! The organisation's smaller governance records: saved filters of the
//! trace list (shared by everyone in the organisation), addresses that asked
//! to hear of sub-processor changes, who created each API key, and a user
//! leaving their organisation. Changes made on someone's behalf are recorded
//! in the audit log in their own transaction (see `audit`).

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;
use serde_json::{json, Value};

use super::audit::{self, Actor};
use super::tenancy::new_uuid;
use super::{now_micros, Result, Store, StoreError};
use crate::auth::Role;
use crate::model::Timestamp;

/// The most addresses the sub-processor notice list keeps: the route that
/// adds to it needs no credentials, so it must not grow without bound.
pub const MAX_SUBSCRIBERS: i64 = 10_000;

/// A saved filter of the trace list (the reference's `SavedFilter`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = SavedFilter)]
pub struct SavedFilter {
    #[schema(format = "uuid")]
    pub id: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
    /// The organisation's id.
    #[schema(format = "uuid")]
    pub tenant_id: String,
    /// The project whose trace list it filters.
    #[schema(format = "uuid")]
    pub project_id: String,
    #[schema(example = "failing refunds")]
    pub name: String,
    /// The trace list's query parameters (`GET /v1/traces`), by name.
    #[schema(value_type = Object, example = json!({"error": "true", "q": "refund"}))]
    pub filters: Value,
    /// The id of the user who saved it.
    pub created_by: String,
}

const FILTER_COLUMNS: &str = "f.uuid, f.created_at, f.updated_at, t.uuid, p.uuid, f.name, \
     f.filters, f.created_by";
const FILTER_FROM: &str = "saved_filters f JOIN tenants t ON t.id = f.tenant_id \
     JOIN projects p ON p.id = f.project_id";

fn filter_from_row(r: &Row<'_>) -> rusqlite::Result<SavedFilter> {
    let filters: String = r.get(6)?;
    Ok(SavedFilter {
        id: r.get(0)?,
        created_at: Timestamp(r.get(1)?),
        updated_at: Timestamp(r.get(2)?),
        tenant_id: r.get(3)?,
        project_id: r.get(4)?,
        name: r.get(5)?,
        filters: serde_json::from_str(&filters).unwrap_or_else(|_| json!({})),
        created_by: r.get(7)?,
    })
}

fn find_filter(conn: &Connection, tenant_id: i64, uuid: &str) -> Result<Option<SavedFilter>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {FILTER_COLUMNS} FROM {FILTER_FROM} WHERE f.tenant_id = ?1 AND f.uuid = ?2"
        ))?
        .query_row(params![tenant_id, uuid], filter_from_row)
        .optional()?)
}

/// A change to a saved filter: what is `Some` is set.
#[derive(Debug, Clone, Default)]
pub struct FilterChange {
    pub name: Option<String>,
    /// The filters as JSON text.
    pub filters: Option<String>,
}

impl Store {
    /// Saves a filter of a project's trace list; `filters` is JSON text.
    pub async fn create_saved_filter(
        &self,
        tenant_id: i64,
        project_id: i64,
        name: String,
        filters: String,
        created_by: String,
        by: Actor,
    ) -> Result<SavedFilter> {
        self.write_data(move |conn| {
            let now = now_micros();
            let uuid = new_uuid();
            conn.prepare_cached(
                "INSERT INTO saved_filters (uuid, tenant_id, project_id, name, filters, \
                 created_by, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
            )?
            .execute(params![
                uuid, tenant_id, project_id, name, filters, created_by, now
            ])?;
            let saved = find_filter(conn, tenant_id, &uuid)?
                .ok_or_else(|| StoreError::Corrupt("a saved filter vanished".into()))?;
            audit::record(
                conn,
                tenant_id,
                &by,
                "saved_filter.create",
                Some(&saved.id),
                json!({"name": saved.name, "project_id": saved.project_id}),
            )?;
            Ok(saved)
        })
        .await
    }

    /// One of the tenant's saved filters.
    pub async fn saved_filter(&self, tenant_id: i64, uuid: String) -> Result<Option<SavedFilter>> {
        self.read(move |conn| find_filter(conn, tenant_id, &uuid))
            .await
    }

    /// When the server's first organisation was set up, in microseconds.
    pub async fn first_setup_at(&self) -> Result<Option<i64>> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached("SELECT min(created_at) FROM tenants")?
                .query_row([], |r| r.get(0))?)
        })
        .await
    }

    /// A project's saved filters, oldest first.
    pub async fn list_saved_filters(
        &self,
        tenant_id: i64,
        project_id: i64,
    ) -> Result<Vec<SavedFilter>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {FILTER_COLUMNS} FROM {FILTER_FROM} \
                 WHERE f.tenant_id = ?1 AND f.project_id = ?2 ORDER BY f.id"
            ))?;
            let rows = stmt.query_map(params![tenant_id, project_id], filter_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    /// Changes a saved filter; `None` when the tenant has no such filter.
    pub async fn update_saved_filter(
        &self,
        tenant_id: i64,
        uuid: String,
        change: FilterChange,
        by: Actor,
    ) -> Result<Option<SavedFilter>> {
        self.write_data(move |conn| {
            let changed = conn
                .prepare_cached(
                    "UPDATE saved_filters SET name = coalesce(?3, name), \
                     filters = coalesce(?4, filters), updated_at = ?5 \
                     WHERE tenant_id = ?1 AND uuid = ?2",
                )?
                .execute(params![
                    tenant_id,
                    uuid,
                    change.name,
                    change.filters,
                    now_micros()
                ])?;
            if changed == 0 {
                return Ok(None);
            }
            audit::record(
                conn,
                tenant_id,
                &by,
                "saved_filter.update",
                Some(&uuid),
                json!({"name": change.name, "filters_changed": change.filters.is_some()}),
            )?;
            find_filter(conn, tenant_id, &uuid)
        })
        .await
    }

    /// Deletes a saved filter; false when the tenant has no such filter.
    pub async fn delete_saved_filter(
        &self,
        tenant_id: i64,
        uuid: String,
        by: Actor,
    ) -> Result<bool> {
        self.write(move |conn| {
            let Some(name) = conn
                .prepare_cached(
                    "DELETE FROM saved_filters WHERE tenant_id = ?1 AND uuid = ?2 RETURNING name",
                )?
                .query_row(params![tenant_id, uuid], |r| r.get::<_, String>(0))
                .optional()?
            else {
                return Ok(false);
            };
            audit::record(
                conn,
                tenant_id,
                &by,
                "saved_filter.delete",
                Some(&uuid),
                json!({"name": name}),
            )?;
            Ok(true)
        })
        .await
    }

    /// Adds an address to the sub-processor notice list (again is no
    /// change). Refused when the list holds [`MAX_SUBSCRIBERS`].
    pub async fn subscribe_subprocessor_notices(&self, email: String) -> Result<()> {
        self.write(move |conn| {
            let known = conn
                .prepare_cached("SELECT 1 FROM subprocessor_subscribers WHERE email = ?1")?
                .exists([&email])?;
            if known {
                return Ok(());
            }
            let count: i64 = conn
                .prepare_cached("SELECT count(*) FROM subprocessor_subscribers")?
                .query_row([], |r| r.get(0))?;
            if count >= MAX_SUBSCRIBERS {
                return Err(StoreError::Refused {
                    message: format!(
                        "the notice list holds its most addresses ({MAX_SUBSCRIBERS}); ask the \
                         operator"
                    ),
                    code: "subscribers_full",
                });
            }
            conn.prepare_cached(
                "INSERT INTO subprocessor_subscribers (email, created_at) VALUES (?1, ?2)",
            )?
            .execute(params![email, now_micros()])?;
            Ok(())
        })
        .await
    }

    /// Removes an address from the sub-processor notice list, if there.
    pub async fn unsubscribe_subprocessor_notices(&self, email: String) -> Result<()> {
        self.write(move |conn| {
            conn.prepare_cached("DELETE FROM subprocessor_subscribers WHERE email = ?1")?
                .execute([&email])?;
            Ok(())
        })
        .await
    }

    /// Whether an address is on the sub-processor notice list.
    pub async fn is_subprocessor_subscriber(&self, email: String) -> Result<bool> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached("SELECT 1 FROM subprocessor_subscribers WHERE email = ?1")?
                .exists([&email])?)
        })
        .await
    }

    /// Whether the tenant holds the trace `id` (canonical UUID text).
    pub async fn trace_exists(&self, tenant_id: i64, id: String) -> Result<bool> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached("SELECT 1 FROM traces WHERE tenant_id = ?1 AND id = ?2")?
                .exists(params![tenant_id, id])?)
        })
        .await
    }

    /// How many unrevoked keys the tenant's user `uuid` created; `None`
    /// when the tenant has no such user.
    pub async fn member_key_count(&self, tenant_id: i64, uuid: String) -> Result<Option<i64>> {
        self.read(move |conn| {
            let Some(user_id) = conn
                .prepare_cached("SELECT id FROM users WHERE tenant_id = ?1 AND uuid = ?2")?
                .query_row(params![tenant_id, uuid], |r| r.get::<_, i64>(0))
                .optional()?
            else {
                return Ok(None);
            };
            let count: i64 = conn
                .prepare_cached(
                    "SELECT count(*) FROM api_key_creators c JOIN api_keys k ON k.id = c.key_id \
                     WHERE c.user_id = ?1 AND k.tenant_id = ?2 AND k.revoked_at IS NULL",
                )?
                .query_row(params![user_id, tenant_id], |r| r.get(0))?;
            Ok(Some(count))
        })
        .await
    }

    /// The user `user_id` leaves the tenant: their account and sessions
    /// go; the keys they created stay. Refused when they are its only
    /// owner; false when there is no such user.
    pub async fn leave_organisation(
        &self,
        tenant_id: i64,
        user_id: i64,
        by: Actor,
    ) -> Result<bool> {
        self.write(move |conn| {
            let Some((uuid, role)) = conn
                .prepare_cached("SELECT uuid, role FROM users WHERE tenant_id = ?1 AND id = ?2")?
                .query_row(params![tenant_id, user_id], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, Role>(1)?))
                })
                .optional()?
            else {
                return Ok(false);
            };
            if role == Role::Owner {
                let others: i64 = conn
                    .prepare_cached(
                        "SELECT count(*) FROM users WHERE tenant_id = ?1 AND role = ?3 AND id != ?2",
                    )?
                    .query_row(params![tenant_id, user_id, Role::Owner], |r| r.get(0))?;
                if others == 0 {
                    return Err(StoreError::Refused {
                        message: "the organisation's only owner cannot leave it: make another \
                                  user an owner first"
                            .into(),
                        code: "at_least_one_owner_required",
                    });
                }
            }
            conn.prepare_cached("DELETE FROM sessions WHERE user_id = ?1")?
                .execute([user_id])?;
            conn.prepare_cached("DELETE FROM users WHERE id = ?1")?
                .execute([user_id])?;
            audit::record(conn, tenant_id, &by, "user.leave", Some(&uuid), json!({}))?;
            Ok(true)
        })
        .await
    }
}
