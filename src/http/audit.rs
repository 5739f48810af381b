//! The audit log over HTTP: `GET /v1/audit-log` (its entries, newest
//! first) and `GET /v1/audit/verify` (the daily anchor of an organisation's
//! hash chain). Who acts is named by `principal::actor`.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::query::{ApiQuery, Cursor, Listing, Page};
use super::{AppState, Principal};
use crate::error::{AppError, ErrorBody};
use crate::model::Timestamp;
use crate::store::AuditRecord;

/// The audit log, newest first; a position is the id of the last entry
/// shown (the next page starts before it).
pub struct AuditLog;

impl Listing for AuditLog {
    const DEFAULT_LIMIT: u32 = 50;
    const MAX_LIMIT: u32 = 200;
    const KIND: &'static str = "audit";
    type Position = i64;
}

/// One change, as recorded in the same transaction as the change itself.
#[derive(Serialize, ToSchema)]
pub struct AuditEntry {
    /// The entry's place in the organisation's chain.
    id: i64,
    #[schema(value_type = String, format = DateTime)]
    at: Timestamp,
    /// Who acted: `user:<email>`, `key:<id>` (an API key's internal id) or `operator`.
    #[schema(example = "user:ann@example.com")]
    actor: String,
    /// What was done.
    #[schema(example = "project.create")]
    action: String,
    /// The id of what it was done to, if anything.
    target: Option<String>,
    /// The client's address, when there was one.
    source: Option<String>,
    /// What changed, as the action records it.
    #[schema(value_type = Object)]
    details: serde_json::Value,
}

impl From<AuditRecord> for AuditEntry {
    fn from(r: AuditRecord) -> AuditEntry {
        AuditEntry {
            details: serde_json::from_str(&r.details).unwrap_or(serde_json::Value::Null),
            id: r.id,
            at: Timestamp(r.at),
            actor: r.actor,
            action: r.action,
            target: r.target,
            source: r.source,
        }
    }
}

/// A page of the audit log.
#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    entries: Vec<AuditEntry>,
    /// Where the next page starts; null on the last page.
    next_cursor: Option<String>,
    has_more: bool,
}

/// The organisation's audit log, newest first.
///
/// Every change to users, sessions, projects, keys, rules and plans, with
/// who made it and from where.
#[utoipa::path(
    get,
    path = "/v1/audit-log",
    operation_id = "listAuditLog",
    tag = "audit",
    params(Page<AuditLog>),
    responses((status = 200, description = "A page of entries.", body = AuditPage))
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(page): ApiQuery<Page<AuditLog>>,
) -> Result<Json<AuditPage>, AppError> {
    let limit = page.size();
    let mut rows = state
        .store
        .audit_page(principal.tenant_id, page.cursor, limit + 1)
        .await?;
    let has_more = rows.len() > limit;
    rows.truncate(limit);
    let next_cursor = if has_more {
        rows.last().map(|r| Cursor::<AuditLog>::encode(&r.id))
    } else {
        None
    };
    Ok(Json(AuditPage {
        entries: rows.into_iter().map(AuditEntry::from).collect(),
        next_cursor,
        has_more,
    }))
}

/// `GET /v1/audit/verify`'s query, as the reference names it.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VerifyQuery {
    /// The organisation's public id (a UUID).
    #[param(required = true)]
    tenant_id: String,
    /// A UTC day, `YYYY-MM-DD`.
    #[param(required = true, format = Date)]
    date: String,
    /// A head hash to compare with the one found (hex).
    expected_head_hash: Option<String>,
}

/// The reference's `AuditVerifyResponse`, with whether the chain up to the
/// head recomputes (`intact`, `broken_at`).
#[derive(Debug, Serialize, ToSchema)]
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
    #[schema(value_type = String, format = DateTime)]
    anchored_at: Timestamp,
    /// Only when `expected_head_hash` was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    hash_matches: Option<bool>,
    /// Whether every entry up to the head recomputes from those before it.
    intact: bool,
    /// The first entry that does not, if any.
    broken_at: Option<i64>,
}

/// The head of an organisation's audit chain at the end of a UTC day.
///
/// The anchor an auditor compares with a copy kept elsewhere. No
/// credentials, as in the reference: a head hash reveals nothing of the
/// entries. Computed from the chain when asked, which is also recomputed up
/// to it (`intact`, `broken_at`).
#[utoipa::path(
    get,
    path = "/v1/audit/verify",
    operation_id = "verifyAuditAnchor",
    tag = "audit",
    params(VerifyQuery),
    responses(
        (status = 200, description = "The anchor of that organisation and day.", body = VerifyResponse),
        (status = 400, description = "`bad_request`: `tenant_id` is missing or not a UUID, `date` is missing or not a day, or `expected_head_hash` is not hex (the message names the parameter).", body = ErrorBody),
        (status = 404, description = "`not_found`: no such organisation, or no anchor for that day (before the organisation existed, or a day to come).", body = ErrorBody),
    )
)]
pub async fn verify(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<VerifyQuery>,
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
