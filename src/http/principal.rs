//! Who is calling. Handlers take a `Principal`; nothing else reads the
//! Authorization header or the session cookie.
//!
//! Two kinds of token: an API key (`Bearer tl_…`) for SDKs and exporters,
//! and a user session (`Bearer tls_…`, or the `trulayer_session` cookie the
//! admin page gets at login). Scopes narrow what a key may do; a role
//! narrows what a user may do; routes that manage the organisation accept
//! sessions only.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::{AUTHORIZATION, COOKIE, HOST, ORIGIN};
use axum::http::request::Parts;
use axum::http::Method;

use super::limits::check_rate;
use super::router::{Access, Auth, KeyScope};
use super::AppState;
use crate::auth;
pub use crate::auth::Role;
use crate::config::Plan;
use crate::error::AppError;
use crate::store::{now_micros, Actor, UserRecord};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "trulayer_session";

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub tenant_id: i64,
    /// Where traces go by default: the key's project, or for a session the
    /// tenant's first active project.
    pub project_id: i64,
    pub credential: Credential,
    /// The client's address, for the audit log.
    pub source: Option<String>,
    /// The organisation's plan.
    pub plan: Plan,
}

#[derive(Debug, Clone)]
pub enum Credential {
    ApiKey {
        key_id: i64,
        scopes: Vec<String>,
    },
    Session {
        session_id: i64,
        user: UserRecord,
        org_name: String,
    },
}

impl Principal {
    /// The session's user, its session id and organisation name, on a route
    /// the table keeps to sessions; an API key gets 403 `session_required`.
    pub fn session(&self) -> Result<(&UserRecord, i64, &str), AppError> {
        match &self.credential {
            Credential::Session {
                user,
                session_id,
                org_name,
            } => Ok((user, *session_id, org_name)),
            Credential::ApiKey { .. } => Err(AppError::Forbidden {
                message: SESSION_REQUIRED.into(),
                code: "session_required",
            }),
        }
    }
}

/// Who a principal is, as the audit log names actors: what every audited
/// store change is given, so that it records itself in its own transaction.
pub fn actor(principal: &Principal) -> Actor {
    let source = principal.source.clone();
    match &principal.credential {
        Credential::Session { user, .. } => Actor::user(&user.email, source),
        Credential::ApiKey { key_id, .. } => Actor::api_key(*key_id, source),
    }
}

/// The client's address, when the connection has one: for routes that
/// record it without a `Principal` (a login).
pub struct ClientAddr(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(client_addr(parts)))
    }
}

fn client_addr(parts: &Parts) -> Option<String> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_string())
}

/// The exact 401 bodies the SDKs latch on.
const INVALID_KEY: AppError = AppError::Unauthorized("invalid_api_key");
const EXPIRED_KEY: AppError = AppError::Unauthorized("api_key_expired");
const INVALID_SESSION: AppError = AppError::Unauthorized("invalid_session");

/// How often a key's `last_used_at` is written, at most.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// When each key's use was last written.
#[derive(Default)]
pub struct KeyTouches(Mutex<HashMap<i64, Instant>>);

impl KeyTouches {
    /// True when the key's use should be written now.
    fn due(&self, key_id: i64) -> bool {
        let Ok(mut seen) = self.0.lock() else {
            return false;
        };
        let now = Instant::now();
        match seen.get(&key_id) {
            Some(at) if now.duration_since(*at) < TOUCH_EVERY => false,
            _ => {
                if seen.len() > 100_000 {
                    seen.retain(|_, at| now.duration_since(*at) < TOUCH_EVERY);
                }
                seen.insert(key_id, now);
                true
            }
        }
    }
}

enum Presented<'a> {
    Key(&'a str),
    Session { token: &'a str, cookie: bool },
}

fn presented(parts: &Parts) -> Option<Presented<'_>> {
    let bearer = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|t| t.len() <= 256);
    if let Some(token) = bearer {
        return Some(if token.starts_with(auth::SESSION_PREFIX) {
            Presented::Session {
                token,
                cookie: false,
            }
        } else {
            Presented::Key(token)
        });
    }
    parts
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, token)| Presented::Session {
            token: token.trim(),
            cookie: true,
        })
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// A cookie-authenticated unsafe request must come from this server's own
/// pages: `Sec-Fetch-Site: same-origin`, or an `Origin` naming this host.
fn same_origin(parts: &Parts) -> bool {
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    if header("sec-fetch-site") == Some("same-origin") {
        return true;
    }
    let (Some(origin), Some(host)) = (
        parts.headers.get(ORIGIN).and_then(|v| v.to_str().ok()),
        parts.headers.get(HOST).and_then(|v| v.to_str().ok()),
    ) else {
        return false;
    };
    origin
        .split_once("://")
        .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host))
}

const SESSION_REQUIRED: &str = "this route needs a user session (log in); API keys cannot use it";

impl FromRequestParts<AppState> for Principal {
    type Rejection = AppError;

    /// Authenticates the caller and holds it to the route's row of the
    /// table (`router::Access`): credential kind, key scope, session role,
    /// and the request rate of the route's family.
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        // Every route of the table carries its row; one without is refused,
        // not let through.
        let access = parts
            .extensions
            .get::<Access>()
            .copied()
            .ok_or(AppError::Internal("a route without an access rule".into()))?;
        match presented(parts).ok_or(INVALID_KEY)? {
            Presented::Key(token) => api_key(parts, state, token, access).await,
            Presented::Session { token, cookie } => {
                let token = token.to_owned();
                session(parts, state, &token, cookie, access).await
            }
        }
    }
}

/// Tells the ingest counter whose request an ingest request is.
fn note_ingest(parts: &Parts, access: Access, tenant_id: i64, project_id: i64) {
    if access.family == super::limits::Family::Ingest {
        if let Some(slot) = parts
            .extensions
            .get::<super::ingestion_health::IngestSlot>()
        {
            slot.set(tenant_id, project_id);
        }
    }
}

async fn api_key(
    parts: &Parts,
    state: &AppState,
    token: &str,
    access: Access,
) -> Result<Principal, AppError> {
    if !token.starts_with(auth::KEY_PREFIX) {
        return Err(INVALID_KEY);
    }
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
    let Some(scope) = access.scope.filter(|_| access.auth == Auth::KeyOrSession) else {
        return Err(AppError::Forbidden {
            message: SESSION_REQUIRED.into(),
            code: "session_required",
        });
    };
    if !scope.allows(&key.scopes) {
        let needed = match scope {
            KeyScope::Query => "the \"query\" scope",
            KeyScope::Ingest => "the \"ingest\" scope",
            KeyScope::Unscoped => "a key without scopes (or a session)",
        };
        return Err(AppError::Forbidden {
            message: format!(
                "this API key's scopes {:?} do not allow this route: it needs {needed}",
                key.scopes
            ),
            code: "scope_forbidden",
        });
    }
    let plan = Plan::parse(&key.plan).unwrap_or(Plan::Enterprise);
    note_ingest(parts, access, key.tenant_id, key.project_id);
    check_rate(state, parts, access.family, key.tenant_id, plan)?;
    if state.key_touches.due(key.id) {
        let store = state.store.clone();
        let key_id = key.id;
        tokio::spawn(async move {
            if let Err(e) = store.touch_api_key(key_id).await {
                tracing::debug!(error = %e, "recording an API key's use failed");
            }
        });
    }
    Ok(Principal {
        plan,
        source: client_addr(parts),
        tenant_id: key.tenant_id,
        project_id: key.project_id,
        credential: Credential::ApiKey {
            key_id: key.id,
            scopes: key.scopes,
        },
    })
}

async fn session(
    parts: &Parts,
    state: &AppState,
    token: &str,
    cookie: bool,
    access: Access,
) -> Result<Principal, AppError> {
    if !token.starts_with(auth::SESSION_PREFIX) {
        return Err(INVALID_SESSION);
    }
    let found = state
        .store
        .session_by_token(auth::hash_api_key(token))
        .await?
        .ok_or(INVALID_SESSION)?;
    let unsafe_method = !is_safe(&parts.method);
    if cookie && unsafe_method && !same_origin(parts) {
        return Err(AppError::Forbidden {
            message: "a cookie-authenticated change must come from this server's pages \
                      (Origin or Sec-Fetch-Site)"
                .into(),
            code: "csrf_rejected",
        });
    }
    if !access.roles.allows(found.user.role) {
        return Err(AppError::Forbidden {
            message: format!("the {} role cannot do this", found.user.role),
            code: "forbidden_role",
        });
    }
    let plan = Plan::parse(&found.plan).unwrap_or(Plan::Enterprise);
    check_rate(state, parts, access.family, found.user.tenant_id, plan)?;
    let project = state
        .store
        .default_project(found.user.tenant_id)
        .await?
        .ok_or(AppError::Internal("the organisation has no project".into()))?;
    note_ingest(parts, access, found.user.tenant_id, project.id);
    Ok(Principal {
        plan,
        source: client_addr(parts),
        tenant_id: found.user.tenant_id,
        project_id: project.id,
        credential: Credential::Session {
            session_id: found.id,
            user: found.user,
            org_name: found.org_name,
        },
    })
}
