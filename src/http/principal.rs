//! Who is calling. Handlers take a `Principal`; nothing else reads the
//! Authorization header.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::AppState;
use crate::auth;
use crate::error::AppError;
use crate::store::now_micros;

/// An authenticated caller: its tenant, default project and scopes.
#[derive(Debug, Clone)]
pub struct Principal {
    pub tenant_id: i64,
    /// The project the API key is bound to: where traces go by default.
    pub project_id: i64,
    pub key_id: i64,
    pub scopes: Vec<String>,
}

/// The exact 401 bodies the SDKs latch on.
const INVALID_KEY: AppError = AppError::Unauthorized("invalid_api_key");
const EXPIRED_KEY: AppError = AppError::Unauthorized("api_key_expired");

impl FromRequestParts<AppState> for Principal {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| t.starts_with(auth::KEY_PREFIX) && t.len() <= 256)
            .ok_or(INVALID_KEY)?;
        let candidates = state
            .store
            .api_keys_by_prefix(auth::visible_prefix(token).to_string())
            .await?;
        let key = candidates
            .into_iter()
            .find(|k| auth::api_key_matches(token, &k.key_hash))
            .ok_or(INVALID_KEY)?;
        if key.revoked {
            return Err(INVALID_KEY);
        }
        if key.expires_at.is_some_and(|at| at <= now_micros()) {
            return Err(EXPIRED_KEY);
        }
        Ok(Principal {
            tenant_id: key.tenant_id,
            project_id: key.project_id,
            key_id: key.id,
            scopes: key.scopes,
        })
    }
}
