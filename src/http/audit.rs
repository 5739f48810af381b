//! The audit log over HTTP: who acts (the actor every audited store change
//! takes and records in the change's own transaction), and
//! `GET /v1/audit-log` and `GET /v1/audit/verify`.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::Json;
use serde::{Deserialize, Serialize};
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
#[utoipa::path(get, path = "/v1/audit-log", operation_id = "listAuditLog", tag = "audit", responses((status = 200, description = "OK")))]
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

/// `GET /v1/audit/verify`'s query, as the reference names it.
#[derive(Debug, Deserialize)]
pub struct VerifyQuery {
    /// The organisation's public id.
    tenant_id: String,
    /// A UTC day, `YYYY-MM-DD`.
    date: String,
    /// A head hash to compare with the one found (hex).
    expected_head_hash: Option<String>,
}

/// The reference's `AuditVerifyResponse`, with whether the chain up to the
/// head recomputes (`intact`, `broken_at`).
#[derive(Debug, Serialize)]
pub struct VerifyResponse {
    /// An anchor exists for the tenant and day (always, in a 200).
    verified: bool,
    date: String,
    /// The chain's head as of the end of the day (as of now for today),
    /// hex-encoded SHA-256.
    head_hash: String,
    /// Entries in the chain up to that head.
    row_count: i64,
    /// The reference's signed manifest in object storage: this server
    /// keeps none, so it is empty.
    s3_key: String,
    /// The moment the head stands for: the end of the day, or now.
    anchored_at: Timestamp,
    /// Only when `expected_head_hash` was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    hash_matches: Option<bool>,
    /// Whether every entry up to the head recomputes from those before it.
    intact: bool,
    /// The first entry that does not, if any.
    broken_at: Option<i64>,
}

/// `GET /v1/audit/verify?tenant_id=&date=[&expected_head_hash=]`: the head
/// of an organisation's audit chain at the end of a UTC day, the anchor an
/// auditor compares with a copy kept elsewhere. No credentials, as in the
/// reference: a head hash reveals nothing of the entries. Computed from
/// the chain when asked, which is also recomputed up to it.
#[utoipa::path(get, path = "/v1/audit/verify", operation_id = "verifyAuditAnchor", tag = "audit", responses((status = 200, description = "OK")))]
pub async fn verify(
    State(state): State<AppState>,
    Query(query): Query<VerifyQuery>,
) -> Result<Json<VerifyResponse>, AppError> {
    let tenant = uuid::Uuid::parse_str(&query.tenant_id)
        .map_err(|_| AppError::bad_request("tenant_id: must be an organisation id (a UUID)"))?;
    let day = chrono::NaiveDate::parse_from_str(&query.date, "%Y-%m-%d")
        .map_err(|_| AppError::bad_request("date: must be a day such as 2026-01-02"))?;
    let expected = query
        .expected_head_hash
        .as_deref()
        .map(|h| {
            hex::decode(h.trim()).map_err(|_| {
                AppError::bad_request("expected_head_hash: must be a hex-encoded hash")
            })
        })
        .transpose()?;
    let now = crate::store::now_micros();
    let end_of_day = day
        .succ_opt()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_micros())
        .ok_or_else(|| AppError::bad_request("date: out of range"))?;
    let start_of_day = end_of_day - 86_400 * 1_000_000;
    if start_of_day > now {
        return Err(AppError::NotFound("no anchor: that day has not begun"));
    }
    let until = end_of_day.min(now);
    let anchor = state
        .store
        .audit_anchor(tenant.hyphenated().to_string(), until)
        .await?
        .ok_or(AppError::NotFound(
            "no anchor recorded for that tenant_id and date",
        ))?;
    Ok(Json(VerifyResponse {
        verified: true,
        date: day.format("%Y-%m-%d").to_string(),
        head_hash: hex::encode(&anchor.head_hash),
        row_count: anchor.verdict.entries,
        s3_key: String::new(),
        anchored_at: Timestamp(until),
        hash_matches: expected.map(|e| e == anchor.head_hash),
        intact: anchor.verdict.broken_at.is_none(),
        broken_at: anchor.verdict.broken_at,
    }))
}
