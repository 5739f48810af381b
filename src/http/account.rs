//! Logins and users: `POST /v1/auth/login`, `POST /v1/auth/logout`,
//! `GET /v1/auth/me`, `POST /v1/auth/password`, and `/v1/users`.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::audit::{self, ClientAddr};
use super::extract::JsonBody;
use super::principal::{Role, SESSION_COOKIE};
use super::{AppState, Principal};
use crate::auth::{self, Email, Password};
use crate::error::AppError;
use crate::model::Timestamp;
use crate::store::{now_micros, Actor, UserRecord};

/// How long a session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
#[derive(Deserialize)]
pub struct Login {
    email: String,
    password: String,
}

fn user_json(user: &UserRecord) -> Value {
    json!({
        "id": user.uuid,
        "email": user.email,
        "role": user.role,
        "created_at": Timestamp(user.created_at),
    })
}

const BAD_CREDENTIALS: AppError = AppError::Unauthorized("invalid_credentials");

/// Logs in with email and password: a session token, also set as the session cookie.
#[utoipa::path(post, path = "/v1/auth/login", operation_id = "login", tag = "auth", responses((status = 200, description = "OK")))]
pub async fn login(
    State(state): State<AppState>,
    ClientAddr(source): ClientAddr,
    JsonBody(body): JsonBody<Login>,
) -> Result<Response, AppError> {
    let email = body.email.trim().to_lowercase();
    // Counted before the password is checked: see `login_guard`.
    let attempt = state
        .logins
        .begin(&email, source.as_deref())
        .map_err(|refused| AppError::TooManyRequests {
            message: "too many failed logins for this account or address; try again later".into(),
            code: "too_many_attempts",
            retry_after: refused.retry_after,
        })?;
    let candidate = state.store.user_for_login(email.clone()).await?;
    // Verify against a real hash even for an unknown email, so the answer
    // takes as long either way.
    let stored = candidate
        .as_ref()
        .map(|c| c.password_hash.clone())
        .unwrap_or_else(|| DUMMY_HASH.clone());
    let password = body.password;
    let ok = tokio::task::spawn_blocking(move || auth::verify_password(&password, &stored))
        .await
        .map_err(|e| AppError::Internal(format!("password check failed: {e}")))?;
    let candidate = match candidate {
        Some(c) if ok => c,
        known => {
            state.logins.failed(attempt);
            // Only a known account has a tenant whose log can hold the
            // attempt. A refused login changes nothing that could stand
            // without its record, and its answer must not depend on whether
            // the email exists: were a failure to record it answered with an
            // error, a stranger could tell known emails from unknown ones
            // whenever the store cannot write. So it is still 401, and the
            // limiter above has counted the attempt either way.
            if let Some(c) = &known {
                let by = Actor::user(&c.user.email, source);
                if let Err(e) = state.store.record_failed_login(&c.user, by).await {
                    tracing::error!(error = %e, user = %c.user.uuid, "recording a failed login failed");
                }
            }
            return Err(BAD_CREDENTIALS);
        }
    };
    state.logins.succeeded(attempt, source.as_deref());
    let token = auth::generate_session_token();
    let expires_at = now_micros() + SESSION_TTL.as_micros() as i64;
    let by = Actor::user(&candidate.user.email, source);
    state
        .store
        .create_session(&candidate.user, auth::hash_api_key(&token), expires_at, by)
        .await?;
    let secure = if state.tls { "; Secure" } else { "" };
    let cookie = format!(
        "{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
        SESSION_TTL.as_secs()
    );
    let user = &candidate.user;
    let mut response = Json(json!({
        "token": token,
        "expires_at": Timestamp(expires_at),
        "user": {"id": user.uuid, "email": user.email, "role": user.role, "org_id": org_uuid(&state, user.tenant_id).await?},
    }))
    .into_response();
    let cookie = HeaderValue::from_str(&cookie)
        .map_err(|e| AppError::Internal(format!("cookie header: {e}")))?;
    response.headers_mut().insert(SET_COOKIE, cookie);
    Ok(response)
}

/// An argon2 hash of a random password, checked when the email is unknown.
static DUMMY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    auth::hash_password(&auth::generate_password()).unwrap_or_default()
});

async fn org_uuid(state: &AppState, tenant_id: i64) -> Result<String, AppError> {
    state
        .store
        .tenant_uuid(tenant_id)
        .await?
        .ok_or(AppError::Internal(
            "the user's organisation is missing".into(),
        ))
}

/// Ends the caller's session and clears its cookie.
#[utoipa::path(post, path = "/v1/auth/logout", operation_id = "logout", tag = "auth", responses((status = 204, description = "Done; no body")))]
pub async fn logout(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Response, AppError> {
    let (_, session_id, _) = principal.session()?;
    state
        .store
        .revoke_session(principal.tenant_id, session_id, audit::actor(&principal))
        .await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        SET_COOKIE,
        HeaderValue::from_static("trulayer_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    Ok(response)
}

/// The logged-in user: id, email, role and organisation.
#[utoipa::path(get, path = "/v1/auth/me", operation_id = "getCurrentUser", tag = "auth", responses((status = 200, description = "OK")))]
pub async fn me(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Value>, AppError> {
    let (user, _, org_name) = principal.session()?;
    Ok(Json(json!({
        "id": user.uuid,
        "email": user.email,
        "role": user.role,
        "org_id": org_uuid(&state, user.tenant_id).await?,
        "org_name": org_name,
    })))
}

#[derive(Deserialize)]
pub struct PasswordChange {
    current_password: String,
    new_password: String,
}

/// Changes one's own password; every session of the user ends.
#[utoipa::path(post, path = "/v1/auth/password", operation_id = "changePassword", tag = "auth", responses((status = 204, description = "Done; no body")))]
pub async fn change_password(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<PasswordChange>,
) -> Result<StatusCode, AppError> {
    let (user, _, _) = principal.session()?;
    let new = new_password("new_password", body.new_password)?;
    let candidate = state
        .store
        .user_for_login(user.email.clone())
        .await?
        .ok_or(AppError::Unauthorized("invalid_session"))?;
    let (current, stored) = (body.current_password, candidate.password_hash);
    let verified = tokio::task::spawn_blocking(move || auth::verify_password(&current, &stored))
        .await
        .map_err(|e| AppError::Internal(format!("password check failed: {e}")))?;
    if !verified {
        return Err(BAD_CREDENTIALS);
    }
    let hash = hashed(new).await?;
    state
        .store
        .change_password(user, hash, audit::actor(&principal))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A chosen password, refused (422 naming `field`) when too short.
fn new_password(field: &str, raw: String) -> Result<Password, AppError> {
    Password::parse(raw).map_err(|why| AppError::unprocessable(format!("{field}: {why}")))
}

/// A chosen password's hash.
async fn hashed(password: Password) -> Result<String, AppError> {
    password.hash().await.map_err(AppError::Internal)
}

/// The organisation's users and their roles.
#[utoipa::path(get, path = "/v1/users", operation_id = "listUsers", tag = "users", responses((status = 200, description = "OK")))]
pub async fn list_users(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Value>, AppError> {
    let users = state.store.list_users(principal.tenant_id).await?;
    Ok(Json(
        json!({ "users": users.iter().map(user_json).collect::<Vec<_>>() }),
    ))
}

#[derive(Deserialize)]
pub struct NewUser {
    email: String,
    password: String,
    role: String,
}

/// Adds a user to the organisation with a role and an initial password.
#[utoipa::path(post, path = "/v1/users", operation_id = "createUser", tag = "users", responses((status = 201, description = "Created")))]
pub async fn create_user(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<NewUser>,
) -> Result<Response, AppError> {
    let email = Email::parse(&body.email)
        .map_err(|why| AppError::unprocessable(format!("email: {why}")))?;
    check_role(&body.role)?;
    let hash = hashed(new_password("password", body.password)?).await?;
    let user = state
        .store
        .create_user(
            principal.tenant_id,
            email.into_string(),
            hash,
            body.role,
            audit::actor(&principal),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(user_json(&user))).into_response())
}

fn check_role(role: &str) -> Result<(), AppError> {
    Role::parse(role)
        .map(|_| ())
        .ok_or_else(|| AppError::unprocessable("role: must be owner, member or viewer"))
}

#[derive(Deserialize)]
pub struct UserChange {
    #[serde(default)]
    role: Option<String>,
    /// An owner setting a new password for the user (ends their sessions).
    #[serde(default)]
    password: Option<String>,
}

/// `PATCH /v1/users/{id}`: `role`, and/or `password` to reset it.
#[utoipa::path(patch, path = "/v1/users/{id}", operation_id = "updateUser", tag = "users", params(("id" = String, Path, description = "The id.")), responses((status = 200, description = "OK")))]
pub async fn update_user(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<UserChange>,
) -> Result<Json<Value>, AppError> {
    if body.role.is_none() && body.password.is_none() {
        return Err(AppError::unprocessable("give role, password or both"));
    }
    if let Some(role) = &body.role {
        check_role(role)?;
    }
    let hash = match body.password {
        Some(password) => Some(hashed(new_password("password", password)?).await?),
        None => None,
    };
    let mut user = None;
    if let Some(role) = body.role {
        user = Some(
            state
                .store
                .set_user_role(
                    principal.tenant_id,
                    id.clone(),
                    role,
                    audit::actor(&principal),
                )
                .await?
                .ok_or(AppError::NotFound("user"))?,
        );
    }
    if let Some(hash) = hash {
        let reset = state
            .store
            .reset_user_password(principal.tenant_id, id, hash, audit::actor(&principal))
            .await?
            .ok_or(AppError::NotFound("user"))?;
        user = user.or(Some(reset));
    }
    let user = user.ok_or(AppError::NotFound("user"))?;
    Ok(Json(user_json(&user)))
}

/// Removes a user; their sessions end. The last owner cannot be removed.
#[utoipa::path(delete, path = "/v1/users/{id}", operation_id = "deleteUser", tag = "users", params(("id" = String, Path, description = "The id.")), responses((status = 204, description = "Done; no body")))]
pub async fn delete_user(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    if state
        .store
        .delete_user(principal.tenant_id, id, audit::actor(&principal))
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AppError::NotFound("user"))
    }
}
