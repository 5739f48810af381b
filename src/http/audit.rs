//! The audit log over HTTP: who acts (the actor every audited store change
//! takes and records in the change's own transaction), and
//! `GET /v1/audit-log` and `GET /v1/audit/verify`.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::Json;
use serde_json::{json, Value};

use super::{AppState, Credential, Principal};
use crate::error::AppError;
use crate::model::Timestamp;
use crate::store::Actor;

/// The client's address, when the connection has one.
pub struct ClientAddr(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(client_addr(parts)))
    }
}

pub fn client_addr(parts: &Parts) -> Option<String> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_string())
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

const MAX_PAGE: usize = 200;

/// `GET /v1/audit-log`: newest first, `limit` (1–200, default 50), `cursor`.
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, AppError> {
    let limit = match params.get("limit") {
        None => 50,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                AppError::bad_request(format!("limit: must be an integer from 1 to {MAX_PAGE}"))
            })?,
    };
    let before = params
        .get("cursor")
        .map(|c| {
            c.parse::<i64>()
                .ok()
                .filter(|id| *id > 0)
                .ok_or_else(|| AppError::bad_request("cursor: not a cursor this server issued"))
        })
        .transpose()?;
    let mut rows = state
        .store
        .audit_page(principal.tenant_id, before, limit + 1)
        .await?;
    let has_more = rows.len() > limit;
    rows.truncate(limit);
    let next_cursor = if has_more {
        rows.last().map(|r| r.id.to_string())
    } else {
        None
    };
    let entries: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "at": Timestamp(r.at),
                "actor": r.actor,
                "action": r.action,
                "target": r.target,
                "source": r.source,
                "details": serde_json::from_str::<Value>(&r.details).unwrap_or(Value::Null),
            })
        })
        .collect();
    Ok(Json(
        json!({ "entries": entries, "next_cursor": next_cursor, "has_more": has_more }),
    ))
}

/// `GET /v1/audit/verify`: whether the tenant's chain is intact.
pub async fn verify(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Value>, AppError> {
    let verdict = state.store.verify_audit(principal.tenant_id).await?;
    Ok(Json(json!({
        "intact": verdict.broken_at.is_none(),
        "entries": verdict.entries,
        "broken_at": verdict.broken_at,
    })))
}
