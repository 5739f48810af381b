//! Logins and users: `POST /v1/auth/login`, `POST /v1/auth/logout`,
//! `GET /v1/auth/me`, `POST /v1/auth/password`, and `/v1/users`.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::JsonBody;
use super::principal::{self, ClientAddr, Role, SESSION_COOKIE};
use super::{AppState, Principal};
use crate::auth::{self, Email, Password};
use crate::error::{AppError, ErrorBody};
use crate::model::Timestamp;
use crate::store::{now_micros, Actor, UserRecord};

/// How long a session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// An email and a password to log in with.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"email": "ann@example.com", "password": "correct horse battery"}))]
pub struct Login {
    /// The account's email (case and surrounding spaces do not matter).
    email: String,
    password: String,
}

/// A user of the organisation.
#[derive(Serialize, ToSchema)]
pub struct User {
    /// The user's id.
    id: String,
    email: String,
    role: Role,
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
}

impl From<&UserRecord> for User {
    fn from(user: &UserRecord) -> User {
        User {
            id: user.uuid.clone(),
            email: user.email.clone(),
            role: user.role,
            created_at: Timestamp(user.created_at),
        }
    }
}

/// A new session.
#[derive(Serialize, ToSchema)]
pub struct LoginResponse {
    /// The session token (`tls_…`): send it as `Authorization: Bearer`, or
    /// let the cookie set with it do.
    token: String,
    #[schema(value_type = String, format = DateTime)]
    expires_at: Timestamp,
    user: LoginUser,
}

/// Who logged in.
#[derive(Serialize, ToSchema)]
pub struct LoginUser {
    /// The user's id.
    id: String,
    email: String,
    role: Role,
    /// The organisation's id.
    org_id: String,
}

const BAD_CREDENTIALS: AppError = AppError::Unauthorized("invalid_credentials");

/// Logs in with email and password.
///
/// Answers a session token, also set as the session cookie (`HttpOnly`,
/// `SameSite=Strict`). Failed attempts are counted per account and per
/// address; too many are refused for a while, even with the right password.
#[utoipa::path(
    post,
    path = "/v1/auth/login",
    operation_id = "login",
    tag = "auth",
    request_body = Login,
    responses(
        (status = 200, description = "Logged in; the `Set-Cookie` header carries the session.", body = LoginResponse),
        (status = 401, description = "`invalid_credentials`: no account has that email and password.", body = ErrorBody),
        (status = 429, description = "`too_many_attempts`: too many failed logins for this account or address; `Retry-After` says when to try again.", body = ErrorBody),
    )
)]
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
    let user = candidate.user;
    let org_id = org_uuid(&state, user.tenant_id).await?;
    let mut response = Json(LoginResponse {
        token,
        expires_at: Timestamp(expires_at),
        user: LoginUser {
            id: user.uuid,
            email: user.email,
            role: user.role,
            org_id,
        },
    })
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
#[utoipa::path(
    post,
    path = "/v1/auth/logout",
    operation_id = "logout",
    tag = "auth",
    responses((status = 204, description = "Logged out; the cookie is cleared. No body."))
)]
pub async fn logout(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Response, AppError> {
    let (_, session_id, _) = principal.session()?;
    state
        .store
        .revoke_session(
            principal.tenant_id,
            session_id,
            principal::actor(&principal),
        )
        .await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        SET_COOKIE,
        HeaderValue::from_static("trulayer_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    Ok(response)
}

/// The logged-in user and their organisation.
#[derive(Serialize, ToSchema)]
pub struct CurrentUser {
    /// The user's id.
    id: String,
    email: String,
    role: Role,
    /// The organisation's id.
    org_id: String,
    /// The organisation's name.
    org_name: String,
}

/// The logged-in user: id, email, role and organisation.
#[utoipa::path(
    get,
    path = "/v1/auth/me",
    operation_id = "getCurrentUser",
    tag = "auth",
    responses((status = 200, description = "The session's user.", body = CurrentUser))
)]
pub async fn me(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<CurrentUser>, AppError> {
    let (user, _, org_name) = principal.session()?;
    Ok(Json(CurrentUser {
        id: user.uuid.clone(),
        email: user.email.clone(),
        role: user.role,
        org_id: org_uuid(&state, user.tenant_id).await?,
        org_name: org_name.to_owned(),
    }))
}

/// One's own password, changed.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"current_password": "correct horse battery", "new_password": "staple horse battery"}))]
pub struct PasswordChange {
    /// The password now.
    current_password: String,
    /// The new one: at least 8 characters.
    new_password: String,
}

/// Changes one's own password; every session of the user ends.
#[utoipa::path(
    post,
    path = "/v1/auth/password",
    operation_id = "changePassword",
    tag = "auth",
    request_body = PasswordChange,
    responses(
        (status = 204, description = "Changed; every session of the user has ended. No body."),
        (status = 401, description = "`invalid_credentials`: `current_password` is wrong; `invalid_session`: no valid session.", body = ErrorBody),
    )
)]
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
        .change_password(user, hash, principal::actor(&principal))
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

/// The organisation's users.
#[derive(Serialize, ToSchema)]
pub struct UserList {
    /// Oldest first.
    users: Vec<User>,
}

/// The organisation's users and their roles.
#[utoipa::path(
    get,
    path = "/v1/users",
    operation_id = "listUsers",
    tag = "users",
    responses((status = 200, description = "Every user of the organisation.", body = UserList))
)]
pub async fn list_users(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<UserList>, AppError> {
    let users = state.store.list_users(principal.tenant_id).await?;
    Ok(Json(UserList {
        users: users.iter().map(User::from).collect(),
    }))
}

/// A user to add.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"email": "bob@example.com", "password": "a long password", "role": "member"}))]
pub struct NewUser {
    /// Unique across the server.
    email: String,
    /// The initial password: at least 8 characters.
    password: String,
    role: Role,
}

/// Adds a user to the organisation with a role and an initial password.
#[utoipa::path(
    post,
    path = "/v1/users",
    operation_id = "createUser",
    tag = "users",
    request_body = NewUser,
    responses(
        (status = 201, description = "Added.", body = User),
        (status = 409, description = "`conflict`: a user with that email exists (in any organisation).", body = ErrorBody),
    )
)]
pub async fn create_user(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<NewUser>,
) -> Result<(StatusCode, Json<User>), AppError> {
    let email = Email::parse(&body.email)
        .map_err(|why| AppError::unprocessable(format!("email: {why}")))?;
    let hash = hashed(new_password("password", body.password)?).await?;
    let user = state
        .store
        .create_user(
            principal.tenant_id,
            email.into_string(),
            hash,
            body.role,
            principal::actor(&principal),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(User::from(&user))))
}

/// A change to a user: a role, a new password, or both.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"role": "viewer"}))]
pub struct UserChange {
    #[serde(default)]
    role: Option<Role>,
    /// An owner setting a new password for the user (ends their sessions):
    /// at least 8 characters.
    #[serde(default)]
    password: Option<String>,
}

/// Changes a user's role, resets their password, or both.
///
/// A new password ends the user's sessions. The organisation keeps at least
/// one owner.
#[utoipa::path(
    patch,
    path = "/v1/users/{id}",
    operation_id = "updateUser",
    tag = "users",
    params(("id" = String, Path, description = "The user's id.")),
    request_body = UserChange,
    responses(
        (status = 200, description = "The user as changed.", body = User),
        (status = 409, description = "`last_owner`: the change would leave the organisation without an owner.", body = ErrorBody),
    )
)]
pub async fn update_user(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<UserChange>,
) -> Result<Json<User>, AppError> {
    if body.role.is_none() && body.password.is_none() {
        return Err(AppError::unprocessable("give role, password or both"));
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
                    principal::actor(&principal),
                )
                .await?
                .ok_or(AppError::NotFound("user"))?,
        );
    }
    if let Some(hash) = hash {
        let reset = state
            .store
            .reset_user_password(principal.tenant_id, id, hash, principal::actor(&principal))
            .await?
            .ok_or(AppError::NotFound("user"))?;
        user = user.or(Some(reset));
    }
    let user = user.ok_or(AppError::NotFound("user"))?;
    Ok(Json(User::from(&user)))
}

/// Removes a user; their sessions end. The last owner cannot be removed.
#[utoipa::path(
    delete,
    path = "/v1/users/{id}",
    operation_id = "deleteUser",
    tag = "users",
    params(("id" = String, Path, description = "The user's id.")),
    responses(
        (status = 204, description = "Removed. No body."),
        (status = 409, description = "`last_owner`: the user is the organisation's only owner.", body = ErrorBody),
    )
)]
pub async fn delete_user(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    if state
        .store
        .delete_user(principal.tenant_id, id, principal::actor(&principal))
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AppError::NotFound("user"))
    }
}
