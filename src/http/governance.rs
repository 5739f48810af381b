//! The reference's smaller governance operations, as a self-hosted server
//! answers them: a trace's remediation chain (there is no control loop
//! here yet, so it is empty), the deprecations of the API (none), the
//! sub-processor registry (an appliance has none) and its notice list (kept,
//! never mailed), members' key counts and leaving the organisation, and
//! billing (none: the operator sets plans).

use axum::extract::{Path, State};
use axum::http::header::{ACCEPT, CONTENT_TYPE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::eval_params::canonical_uuid;
use super::extract::JsonBody;
use super::principal::actor;
use super::{AppState, Principal};
use crate::auth::Email;
use crate::error::{AppError, ErrorBody};
use crate::model::Timestamp;
use crate::store::{now_micros, StoreError};

/// One step of a trace's remediation chain (the reference's
/// `TraceRemediationStep`). This server has no control loop yet, so no
/// chain has steps.
// Only the API document names these.
#[derive(Serialize, ToSchema)]
#[schema(as = TraceRemediationStep)]
#[allow(dead_code)]
pub struct RemediationStep {
    #[schema(format = "uuid")]
    action_id: String,
    /// `retry`, `fallback_model`, `prompt_modification`, `agent_action` or `escalate`.
    action_type: String,
    /// `pending`, `pending_approval`, `executed` or `failed`.
    status: String,
    intended_action_type: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
}

/// A trace's remediation chain (the reference's `TraceRemediationsResponse`).
#[derive(Serialize, ToSchema)]
#[schema(as = TraceRemediationsResponse)]
pub struct Remediations {
    /// Oldest first; always empty on this server.
    steps: Vec<RemediationStep>,
}

/// The remediation chain of a trace: the control actions taken on it.
///
/// This server has no control loop (retries, fallbacks, escalations) yet,
/// so no action is ever taken and the chain is empty. A trace the caller's
/// organisation does not hold is 404.
#[utoipa::path(
    get,
    path = "/v1/traces/{id}/remediations",
    operation_id = "getTraceRemediations",
    tag = "traces",
    params(("id" = String, Path, format = "uuid", description = "The trace's id.")),
    responses((status = 200, description = "The chain: no steps.", body = Remediations))
)]
pub async fn remediations(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Remediations>, AppError> {
    let id = canonical_uuid(&id).ok_or(AppError::NotFound("trace"))?;
    if !state.store.trace_exists(principal.tenant_id, id).await? {
        return Err(AppError::NotFound("trace"));
    }
    Ok(Json(Remediations { steps: Vec::new() }))
}

/// A deprecated field or endpoint of the v1 API (the reference's `Deprecation`).
// Only the API document names these: nothing is deprecated.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct Deprecation {
    /// The field's JSON path in the response body; empty for a whole endpoint.
    field: String,
    /// The endpoint's path template.
    endpoint: String,
    /// When the field or endpoint goes.
    #[schema(format = Date)]
    sunset_date: String,
}

/// The fields and endpoints of the v1 API that are deprecated.
///
/// None are: the list is empty until something is deprecated.
#[utoipa::path(
    get,
    path = "/v1/deprecations",
    operation_id = "listDeprecations",
    tag = "deprecations",
    responses((status = 200, description = "Deprecated fields and endpoints: none.", body = Vec<Deprecation>))
)]
pub async fn deprecations(_principal: Principal) -> Json<Vec<Deprecation>> {
    Json(Vec::new())
}

/// A sub-processor (the reference's `Subprocessor`).
// Only the API document names these: an appliance has none.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct Subprocessor {
    #[schema(format = "uuid")]
    id: String,
    vendor: String,
    purpose: String,
    region: String,
    dpa_url: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    effective_at: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    retired_at: Option<Timestamp>,
}

/// The sub-processor registry (the reference's `SubprocessorList`).
#[derive(Serialize, ToSchema)]
pub struct SubprocessorList {
    /// Always empty: this server hands no data to anyone.
    subprocessors: Vec<Subprocessor>,
    /// Since when the registry reads so: when this server was set up.
    #[schema(value_type = String, format = DateTime)]
    updated_at: Timestamp,
}

/// The sub-processor registry: empty, for a self-hosted server.
///
/// This server runs on its operator's machines and hands the data it holds
/// to no one, so it has no sub-processors. JSON by default; an RSS 2.0 feed
/// (with no items) for `Accept: application/rss+xml`, `text/xml` or
/// `application/xml`.
#[utoipa::path(
    get,
    path = "/v1/subprocessors",
    operation_id = "listSubprocessors",
    tag = "compliance",
    responses((status = 200, description = "The registry: no sub-processors.", content(
        (SubprocessorList = "application/json"),
        (String = "application/rss+xml"),
    )))
)]
pub async fn subprocessors(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let since = state
        .store
        .first_setup_at()
        .await?
        .unwrap_or_else(now_micros);
    let wants_rss = headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| {
            ["application/rss+xml", "text/xml", "application/xml"]
                .iter()
                .any(|t| accept.contains(t))
        });
    if !wants_rss {
        return Ok(Json(SubprocessorList {
            subprocessors: Vec::new(),
            updated_at: Timestamp(since),
        })
        .into_response());
    }
    let date = chrono::DateTime::from_timestamp_micros(since)
        .unwrap_or_default()
        .to_rfc2822();
    let feed = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<rss version=\"2.0\"><channel>\
         <title>Sub-processors</title><link>/v1/subprocessors</link>\
         <description>This self-hosted server has no sub-processors.</description>\
         <lastBuildDate>{date}</lastBuildDate></channel></rss>\n"
    );
    Ok((
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("application/rss+xml"),
        )],
        feed,
    )
        .into_response())
}

/// An address for sub-processor change notices (the reference's `SubscribeRequest`).
#[derive(Deserialize, ToSchema)]
#[schema(as = SubscribeRequest)]
pub struct Subscribe {
    #[schema(format = "email", example = "dpo@example.com")]
    email: String,
}

/// What became of a (un)subscription (the reference's
/// `SubprocessorSubscribeResponse`).
#[derive(Serialize, ToSchema)]
#[schema(as = SubprocessorSubscribeResponse)]
pub struct SubscribeAnswer {
    /// `subscribed` or `unsubscribed`.
    #[schema(example = "subscribed")]
    status: &'static str,
    /// That this server sends no mail.
    message: &'static str,
}

const NO_MAIL: &str = "recorded; this self-hosted server has no sub-processors and sends no \
                       mail, so no notice will come";

fn subscriber(email: &str) -> Result<String, AppError> {
    Email::parse(email)
        .map(Email::into_string)
        .map_err(|why| AppError::bad_request(format!("email: {why}")))
}

/// Asks for notice of sub-processor changes at an address.
///
/// The address is recorded, but this server has no sub-processors and
/// sends no mail: no notice will ever come. Idempotent; the answer does
/// not tell whether the address was already listed.
#[utoipa::path(
    post,
    path = "/v1/subprocessors/subscribe",
    operation_id = "subscribeSubprocessorChanges",
    tag = "compliance",
    request_body(content = Subscribe, example = json!({"email": "dpo@example.com"})),
    responses(
        (status = 200, description = "Recorded (or already).", body = SubscribeAnswer),
        (status = 400, description = "`bad_request`: `email` is not an email address.", body = ErrorBody),
        (status = 409, description = "`subscribers_full`: the list holds its most addresses (10,000).", body = ErrorBody),
    )
)]
pub async fn subscribe(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<Subscribe>,
) -> Result<Json<SubscribeAnswer>, AppError> {
    state
        .store
        .subscribe_subprocessor_notices(subscriber(&body.email)?)
        .await?;
    Ok(Json(SubscribeAnswer {
        status: "subscribed",
        message: NO_MAIL,
    }))
}

/// Withdraws an address from sub-processor change notices.
///
/// Idempotent: 200 whether or not the address was listed.
#[utoipa::path(
    post,
    path = "/v1/subprocessors/unsubscribe",
    operation_id = "unsubscribeSubprocessorChanges",
    tag = "compliance",
    request_body(content = Subscribe, example = json!({"email": "dpo@example.com"})),
    responses(
        (status = 200, description = "Withdrawn (or was not listed).", body = SubscribeAnswer),
        (status = 400, description = "`bad_request`: `email` is not an email address.", body = ErrorBody),
    )
)]
pub async fn unsubscribe(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<Subscribe>,
) -> Result<Json<SubscribeAnswer>, AppError> {
    state
        .store
        .unsubscribe_subprocessor_notices(subscriber(&body.email)?)
        .await?;
    Ok(Json(SubscribeAnswer {
        status: "unsubscribed",
        message: "removed; this server sends no mail",
    }))
}

/// How many keys a member created (the reference's `MemberKeyCountResponse`).
#[derive(Serialize, ToSchema)]
#[schema(as = MemberKeyCountResponse)]
pub struct KeyCount {
    /// Unrevoked API keys the member created from their session; keys made
    /// at the command line or before this count was kept are nobody's.
    #[schema(minimum = 0)]
    active_key_count: i64,
}

/// How many unrevoked API keys a member of the organisation created.
///
/// Shown before removing a user: their keys stay, without their name.
#[utoipa::path(
    get,
    path = "/v1/members/{id}/key-count",
    operation_id = "getMemberKeyCount",
    tag = "members",
    params(("id" = String, Path, format = "uuid", description = "The user's id.")),
    responses((status = 200, description = "The count.", body = KeyCount))
)]
pub async fn key_count(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<KeyCount>, AppError> {
    let id = canonical_uuid(&id).ok_or(AppError::NotFound("member"))?;
    let count = state
        .store
        .member_key_count(principal.tenant_id, id)
        .await?
        .ok_or(AppError::NotFound("member"))?;
    Ok(Json(KeyCount {
        active_key_count: count,
    }))
}

/// Leaving the organisation.
#[derive(Serialize, ToSchema)]
pub struct Left {
    #[schema(example = "you have left the organisation")]
    message: String,
}

/// Leaves the organisation: the caller's account and sessions end.
///
/// Any role may leave; its only owner may not (make another user an owner
/// first). The API keys the caller created stay. The departure is recorded
/// in the audit log as `user.leave`, and the session cookie is cleared.
#[utoipa::path(
    delete,
    path = "/v1/members/me",
    operation_id = "leaveOrganization",
    tag = "members",
    responses(
        (status = 200, description = "Left; the cookie is cleared.", body = Left),
        (status = 404, description = "`not_found`: the caller's account is gone already.", body = ErrorBody),
        (status = 422, description = "`at_least_one_owner_required`: the caller is the organisation's only owner.", body = ErrorBody),
    )
)]
pub async fn leave(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Response, AppError> {
    let (user, _, org_name) = principal.session()?;
    let left = state
        .store
        .leave_organisation(principal.tenant_id, user.id, actor(&principal))
        .await
        .map_err(|e| match e {
            StoreError::Refused { message, code } => AppError::Declined { message, code },
            other => other.into(),
        })?;
    if !left {
        return Err(AppError::NotFound("member"));
    }
    let mut response = Json(Left {
        message: format!("you have left {org_name}"),
    })
    .into_response();
    response.headers_mut().insert(
        SET_COOKIE,
        HeaderValue::from_static("trulayer_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    Ok(response)
}

/// What billing answers: there is none on a self-hosted server.
fn no_billing() -> AppError {
    AppError::Declined {
        message: "this self-hosted server has no billing: the operator sets each \
                  organisation's plan with `trulayer-server admin set-plan --org <name> \
                  --plan <plan>`"
            .into(),
        code: "billing_not_available",
    }
}

const NO_BILLING: &str = "`billing_not_available`: this server has no billing; the operator sets plans with `trulayer-server admin set-plan`.";

/// A plan to check out (the reference's `BillingCheckoutRequest`).
#[derive(Deserialize, ToSchema)]
#[schema(as = BillingCheckoutRequest)]
#[allow(dead_code)]
pub struct Checkout {
    /// `pro` or `team`.
    #[schema(example = "pro")]
    plan: String,
    #[schema(format = "uri")]
    success_url: String,
    #[schema(format = "uri")]
    cancel_url: String,
}

/// A payment page (the reference's `BillingCheckoutResponse`).
// Only the API document names it: no payment page exists.
#[derive(Serialize, ToSchema)]
#[schema(as = BillingCheckoutResponse)]
#[allow(dead_code)]
pub struct CheckoutPage {
    url: String,
}

/// A plan upgrade's payment page: refused, there is no billing.
///
/// The operator puts an organisation on a plan with `trulayer-server admin
/// set-plan --org <name> --plan <starter|pro|enterprise>`.
#[utoipa::path(
    post,
    path = "/v1/settings/billing/checkout",
    operation_id = "createBillingCheckout",
    tag = "billing",
    request_body(content = Checkout, example = json!({"plan": "pro", "success_url": "https://example.com/ok", "cancel_url": "https://example.com/back"})),
    responses(
        (status = 200, description = "Never: there is no billing.", body = CheckoutPage),
        (status = 422, description = NO_BILLING, body = ErrorBody),
    )
)]
pub async fn checkout(
    _principal: Principal,
    JsonBody(_body): JsonBody<Checkout>,
) -> Result<Json<CheckoutPage>, AppError> {
    Err(no_billing())
}

/// Where to come back to (the reference's `BillingPortalRequest`).
#[derive(Deserialize, ToSchema)]
#[schema(as = BillingPortalRequest)]
#[allow(dead_code)]
pub struct Portal {
    #[schema(format = "uri")]
    return_url: String,
}

/// A billing portal page (the reference's `BillingPortalResponse`).
// Only the API document names it: no portal exists.
#[derive(Serialize, ToSchema)]
#[schema(as = BillingPortalResponse)]
#[allow(dead_code)]
pub struct PortalPage {
    url: String,
}

/// The billing portal: refused, there is no subscription to manage.
///
/// The operator sets plans with `trulayer-server admin set-plan`.
#[utoipa::path(
    post,
    path = "/v1/settings/billing/portal",
    operation_id = "createBillingPortal",
    tag = "billing",
    request_body(content = Portal, example = json!({"return_url": "https://example.com/settings"})),
    responses(
        (status = 200, description = "Never: there is no billing.", body = PortalPage),
        (status = 422, description = NO_BILLING, body = ErrorBody),
    )
)]
pub async fn portal(
    _principal: Principal,
    JsonBody(_body): JsonBody<Portal>,
) -> Result<Json<PortalPage>, AppError> {
    Err(no_billing())
}

/// An invoice (the reference's `BillingInvoice`).
// Only the API document names it: no invoice exists.
#[derive(Serialize, ToSchema)]
#[schema(as = BillingInvoice)]
#[allow(dead_code)]
pub struct Invoice {
    id: String,
    number: String,
    amount_due: i64,
    currency: String,
    status: String,
    period_start: i64,
    period_end: i64,
    invoice_pdf: String,
    hosted_invoice_url: String,
}

/// The organisation's invoices (the reference's `BillingInvoicesResponse`).
#[derive(Serialize, ToSchema)]
#[schema(as = BillingInvoicesResponse)]
pub struct Invoices {
    /// Always empty: nothing is billed.
    invoices: Vec<Invoice>,
}

/// The organisation's invoices: none, nothing is billed.
///
/// As for an organisation without a billing account in the reference, the
/// list is empty rather than an error. Plans are set by the operator with
/// `trulayer-server admin set-plan`.
#[utoipa::path(
    get,
    path = "/v1/settings/invoices",
    operation_id = "listBillingInvoices",
    tag = "billing",
    responses((status = 200, description = "No invoices.", body = Invoices))
)]
pub async fn invoices(_principal: Principal) -> Json<Invoices> {
    Json(Invoices {
        invoices: Vec::new(),
    })
}
