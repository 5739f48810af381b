//! Users of an organisation and their login sessions. Passwords arrive
//! already hashed (argon2id) and session tokens as SHA-256 digests: the
//! store never sees a secret. Each change is recorded in the audit log in
//! its own transaction (see `audit`).

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::{params, Connection, OptionalExtension, Row, ToSql};
use serde_json::json;

use super::audit::{self, Actor};
use super::{now_micros, Result, Store, StoreError};
use crate::auth::Role;

/// A role is stored as its name.
impl ToSql for Role {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for Role {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let name = value.as_str()?;
        name.parse()
            .map_err(|why: &str| FromSqlError::Other(format!("role {name:?}: {why}").into()))
    }
}

/// A user as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: i64,
    pub uuid: String,
    pub tenant_id: i64,
    pub email: String,
    pub role: Role,
    pub created_at: i64,
}

/// A user found for a login: with the hash to verify.
#[derive(Debug, Clone)]
pub struct LoginCandidate {
    pub user: UserRecord,
    pub password_hash: String,
}

/// A live session: who it is for.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub id: i64,
    pub user: UserRecord,
    pub org_name: String,
    pub expires_at: i64,
    /// The organisation's plan name.
    pub plan: String,
}

const USER_COLUMNS: &str = "u.id, u.uuid, u.tenant_id, u.email, u.role, u.created_at";

fn user_from_row(r: &Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        id: r.get(0)?,
        uuid: r.get(1)?,
        tenant_id: r.get(2)?,
        email: r.get(3)?,
        role: r.get(4)?,
        created_at: r.get(5)?,
    })
}

impl Store {
    pub async fn user_for_login(&self, email: String) -> Result<Option<LoginCandidate>> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {USER_COLUMNS}, u.password_hash FROM users u WHERE u.email = ?1"
                ))?
                .query_row([email], |r| {
                    Ok(LoginCandidate {
                        user: user_from_row(r)?,
                        password_hash: r.get(6)?,
                    })
                })
                .optional()?)
        })
        .await
    }

    /// Starts a session (a login, by `by`); returns its id.
    pub async fn create_session(
        &self,
        user: &UserRecord,
        token_hash: [u8; 32],
        expires_at: i64,
        by: Actor,
    ) -> Result<i64> {
        let (user_id, tenant_id, uuid) = (user.id, user.tenant_id, user.uuid.clone());
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO sessions (user_id, tenant_id, token_hash, created_at, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                user_id,
                tenant_id,
                &token_hash[..],
                now_micros(),
                expires_at
            ])?;
            let session_id = conn.last_insert_rowid();
            audit::record(conn, tenant_id, &by, "auth.login", Some(&uuid), json!({}))?;
            Ok(session_id)
        })
        .await
    }

    /// Records a refused login for a known account. It changes nothing
    /// else, so it is an entry of its own.
    pub async fn record_failed_login(&self, user: &UserRecord, by: Actor) -> Result<()> {
        let (tenant_id, uuid) = (user.tenant_id, user.uuid.clone());
        self.write(move |conn| {
            audit::record(
                conn,
                tenant_id,
                &by,
                "auth.login_failed",
                Some(&uuid),
                json!({}),
            )
        })
        .await
    }

    /// The unexpired, unrevoked session whose token has this digest.
    pub async fn session_by_token(&self, token_hash: [u8; 32]) -> Result<Option<SessionRecord>> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {USER_COLUMNS}, s.id, s.expires_at, t.name, t.plan FROM sessions s \
                     JOIN users u ON u.id = s.user_id JOIN tenants t ON t.id = u.tenant_id \
                     WHERE s.token_hash = ?1 AND s.revoked_at IS NULL AND s.expires_at > ?2"
                ))?
                .query_row(params![&token_hash[..], now_micros()], |r| {
                    Ok(SessionRecord {
                        user: user_from_row(r)?,
                        id: r.get(6)?,
                        expires_at: r.get(7)?,
                        org_name: r.get(8)?,
                        plan: r.get(9)?,
                    })
                })
                .optional()?)
        })
        .await
    }

    /// Ends a session (a logout, by `by`).
    pub async fn revoke_session(&self, tenant_id: i64, session_id: i64, by: Actor) -> Result<()> {
        self.write(move |conn| {
            conn.prepare_cached(
                "UPDATE sessions SET revoked_at = ?3 \
                 WHERE id = ?1 AND tenant_id = ?2 AND revoked_at IS NULL",
            )?
            .execute(params![session_id, tenant_id, now_micros()])?;
            audit::record(conn, tenant_id, &by, "auth.logout", None, json!({}))
        })
        .await
    }

    pub async fn list_users(&self, tenant_id: i64) -> Result<Vec<UserRecord>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {USER_COLUMNS} FROM users u WHERE u.tenant_id = ?1 ORDER BY u.id"
            ))?;
            let users = stmt
                .query_map([tenant_id], user_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(users)
        })
        .await
    }

    pub async fn user(&self, tenant_id: i64, uuid: String) -> Result<Option<UserRecord>> {
        self.read(move |conn| find_user(conn, tenant_id, &uuid))
            .await
    }

    /// Adds a user; an email used by any user of any tenant is a conflict.
    pub async fn create_user(
        &self,
        tenant_id: i64,
        email: String,
        password_hash: String,
        role: Role,
        by: Actor,
    ) -> Result<UserRecord> {
        self.write(move |conn| {
            let taken = conn
                .prepare_cached("SELECT 1 FROM users WHERE email = ?1")?
                .exists([&email])?;
            if taken {
                return Err(StoreError::Conflict(format!(
                    "a user with email {email:?} exists"
                )));
            }
            let uuid = uuid::Uuid::now_v7().hyphenated().to_string();
            conn.prepare_cached(
                "INSERT INTO users (uuid, tenant_id, email, password_hash, role, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                uuid,
                tenant_id,
                email,
                password_hash,
                role,
                now_micros()
            ])?;
            let user = find_user(conn, tenant_id, &uuid)?
                .ok_or_else(|| StoreError::Conflict("the new user vanished".into()))?;
            audit::record(
                conn,
                tenant_id,
                &by,
                "user.create",
                Some(&user.uuid),
                json!({"email": user.email, "role": user.role}),
            )?;
            Ok(user)
        })
        .await
    }

    /// Changes a user's role; refuses to leave the tenant without an owner.
    pub async fn set_user_role(
        &self,
        tenant_id: i64,
        uuid: String,
        role: Role,
        by: Actor,
    ) -> Result<Option<UserRecord>> {
        self.write(move |conn| {
            let Some(user) = find_user(conn, tenant_id, &uuid)? else {
                return Ok(None);
            };
            if user.role == Role::Owner && role != Role::Owner {
                ensure_another_owner(conn, tenant_id, user.id)?;
            }
            conn.prepare_cached("UPDATE users SET role = ?2 WHERE id = ?1")?
                .execute(params![user.id, role])?;
            audit::record(
                conn,
                tenant_id,
                &by,
                "user.update",
                Some(&uuid),
                json!({"role": role}),
            )?;
            find_user(conn, tenant_id, &uuid)
        })
        .await
    }

    /// Deletes a user and their sessions; false when there is no such user.
    pub async fn delete_user(&self, tenant_id: i64, uuid: String, by: Actor) -> Result<bool> {
        self.write(move |conn| {
            let Some(user) = find_user(conn, tenant_id, &uuid)? else {
                return Ok(false);
            };
            if user.role == Role::Owner {
                ensure_another_owner(conn, tenant_id, user.id)?;
            }
            conn.prepare_cached("DELETE FROM sessions WHERE user_id = ?1")?
                .execute([user.id])?;
            conn.prepare_cached("DELETE FROM users WHERE id = ?1")?
                .execute([user.id])?;
            audit::record(conn, tenant_id, &by, "user.delete", Some(&uuid), json!({}))?;
            Ok(true)
        })
        .await
    }

    /// Sets the password of the tenant's user `uuid` (an owner or the
    /// operator resetting it) and ends the user's sessions; `None` when
    /// there is no such user.
    pub async fn reset_user_password(
        &self,
        tenant_id: i64,
        uuid: String,
        password_hash: String,
        by: Actor,
    ) -> Result<Option<UserRecord>> {
        self.write(move |conn| {
            let Some(user) = find_user(conn, tenant_id, &uuid)? else {
                return Ok(None);
            };
            conn.prepare_cached("UPDATE users SET password_hash = ?2 WHERE id = ?1")?
                .execute(params![user.id, password_hash])?;
            conn.prepare_cached(
                "UPDATE sessions SET revoked_at = ?2 WHERE user_id = ?1 AND revoked_at IS NULL",
            )?
            .execute(params![user.id, now_micros()])?;
            audit::record(
                conn,
                tenant_id,
                &by,
                "user.password_reset",
                Some(&uuid),
                json!({"email": user.email}),
            )?;
            Ok(Some(user))
        })
        .await
    }

    /// A user changing their own password; ends all of their sessions.
    pub async fn change_password(
        &self,
        user: &UserRecord,
        password_hash: String,
        by: Actor,
    ) -> Result<()> {
        let (user_id, tenant_id, uuid) = (user.id, user.tenant_id, user.uuid.clone());
        self.write(move |conn| {
            conn.prepare_cached("UPDATE users SET password_hash = ?2 WHERE id = ?1")?
                .execute(params![user_id, password_hash])?;
            conn.prepare_cached(
                "UPDATE sessions SET revoked_at = ?2 WHERE user_id = ?1 AND revoked_at IS NULL",
            )?
            .execute(params![user_id, now_micros()])?;
            audit::record(
                conn,
                tenant_id,
                &by,
                "auth.password_change",
                Some(&uuid),
                json!({}),
            )
        })
        .await
    }
}

fn find_user(conn: &Connection, tenant_id: i64, uuid: &str) -> Result<Option<UserRecord>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {USER_COLUMNS} FROM users u WHERE u.tenant_id = ?1 AND u.uuid = ?2"
        ))?
        .query_row(params![tenant_id, uuid], user_from_row)
        .optional()?)
}

fn ensure_another_owner(conn: &Connection, tenant_id: i64, user_id: i64) -> Result<()> {
    let others: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM users WHERE tenant_id = ?1 AND role = ?3 AND id != ?2",
        )?
        .query_row(params![tenant_id, user_id, Role::Owner], |r| r.get(0))?;
    if others == 0 {
        return Err(StoreError::Refused {
            message: "the organisation must keep at least one owner".into(),
            code: "last_owner",
        });
    }
    Ok(())
}
