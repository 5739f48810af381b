//! `/v1/webhooks`: the organisation's webhooks, a test ping, and the
//! deliveries of each. Deliveries are sent by `crate::webhooks` from the
//! outbox events are put in (`store::enqueue_event`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::eval_params::canonical_uuid;
use super::extract::JsonBody;
use super::limits::plan_gate;
use super::principal::actor;
use super::query::ApiQuery;
use super::{AppState, Principal};
use crate::error::{AppError, ErrorBody};
use crate::store::{now_micros, NewWebhook, Webhook, WebhookDelivery};
use crate::webhooks::{Answer, EVENT_TYPES};

/// The longest URL, in bytes.
const MAX_URL_BYTES: usize = 2048;
/// The shortest and longest secret, in characters.
const MIN_SECRET_CHARS: usize = 16;
const MAX_SECRET_CHARS: usize = 256;
/// Webhooks an organisation may have.
const MAX_WEBHOOKS: usize = 50;

const NO_WEBHOOK: &str = "`not_found`: the caller's organisation has no webhook `id`.";
const PLAN_GATE: &str =
    "`plan_upgrade_required`: webhooks need the Pro plan or above (`required_plan` says which).";

/// A webhook to create (the reference's `CreateWebhookRequest`).
#[derive(Deserialize, ToSchema)]
#[schema(as = CreateWebhookRequest)]
pub struct CreateWebhook {
    /// Where deliveries are POSTed: an `http` or `https` URL. Link-local
    /// and cloud metadata addresses are refused, and `[webhooks] allow` /
    /// `deny` may narrow or widen what is reached.
    #[schema(format = "uri", example = "https://alerts.internal.example/trulayer")]
    url: String,
    /// The HMAC key that signs every delivery; 16 to 256 characters.
    #[schema(min_length = 16, max_length = 256, example = "whsec-0123456789abcdef")]
    secret: String,
    /// Event types to send: `failure.detected`, `failure.recovered`,
    /// `anomaly.detected`, `anomaly.recovered`, `eval_run.completed`.
    #[serde(default = "default_events")]
    #[schema(default = json!(["failure.detected"]), example = json!(["eval_run.completed"]))]
    events: Vec<String>,
    #[serde(default = "enabled")]
    #[schema(default = true)]
    enabled: bool,
}

fn default_events() -> Vec<String> {
    vec!["failure.detected".to_owned()]
}

fn enabled() -> bool {
    true
}

/// The organisation's webhooks (the reference's `WebhookListResponse`).
#[derive(Serialize, ToSchema)]
#[schema(as = WebhookListResponse)]
pub struct WebhookList {
    webhooks: Vec<Webhook>,
}

/// What a test delivery's destination answered (the reference's
/// `TestWebhookResponse`).
#[derive(Serialize, ToSchema)]
#[schema(as = TestWebhookResponse)]
pub struct TestAnswer {
    /// The destination's HTTP status, or 0 when it could not be reached.
    status: u16,
    /// The destination's body, truncated at 4 KiB; when it could not be
    /// reached, why.
    body: String,
}

/// A webhook's recent deliveries, newest first.
#[derive(Serialize, ToSchema)]
#[schema(as = WebhookDeliveryList)]
pub struct DeliveryList {
    deliveries: Vec<WebhookDelivery>,
}

/// How many deliveries.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct DeliveryQuery {
    /// 1 to 200; default 50.
    #[param(minimum = 1, maximum = 200, default = 50)]
    limit: Option<u32>,
}

fn webhook_id(raw: &str) -> Result<String, AppError> {
    canonical_uuid(raw).ok_or(AppError::NotFound("webhook"))
}

fn gate(state: &AppState, principal: &Principal) -> Result<(), AppError> {
    plan_gate(state, principal.plan, "Webhooks", |limits| limits.webhooks)
}

/// The organisation's webhooks.
#[utoipa::path(
    get,
    path = "/v1/webhooks",
    operation_id = "listWebhooks",
    tag = "webhooks",
    responses((status = 200, description = "Every webhook of the organisation, oldest first; secrets are never shown.", body = WebhookList))
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<WebhookList>, AppError> {
    let webhooks = state.store.list_webhooks(principal.tenant_id).await?;
    Ok(Json(WebhookList { webhooks }))
}

/// Creates a webhook.
///
/// Event types: `eval_run.completed` (a dataset run finished: completed,
/// failed or cancelled), `failure.detected` (a failure rule fired),
/// `failure.recovered` (its condition cleared, or the rule was turned off,
/// changed or deleted), `anomaly.detected` and `anomaly.recovered` (the
/// built-in detector); test deliveries are of type `ping`. Every delivery is signed:
/// `X-TruLayer-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`
/// keyed with the secret. The URL is checked now (its form, address
/// literals, metadata names) and its every resolved address at each
/// delivery. The creation is audited, without the secret.
#[utoipa::path(
    post,
    path = "/v1/webhooks",
    operation_id = "createWebhook",
    tag = "webhooks",
    request_body(content = CreateWebhook, example = json!({"url": "https://alerts.internal.example/trulayer", "secret": "whsec-0123456789abcdef", "events": ["eval_run.completed"]})),
    responses(
        (status = 201, description = "The webhook.", body = Webhook),
        (status = 400, description = "`bad_request`: the URL is not an http(s) URL or its target is refused, the secret is shorter than 16 or longer than 256 characters, an event type is unknown, or the organisation has 50 webhooks (the message says which).", body = ErrorBody),
        (status = 402, description = PLAN_GATE, body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<CreateWebhook>,
) -> Result<(StatusCode, Json<Webhook>), AppError> {
    gate(&state, &principal)?;
    let url = body.url.trim().to_owned();
    if url.len() > MAX_URL_BYTES {
        return Err(AppError::bad_request(format!(
            "url: at most {MAX_URL_BYTES} bytes"
        )));
    }
    state
        .webhooks
        .policy
        .check_url(&url)
        .map_err(|why| AppError::bad_request(format!("url: {why}")))?;
    let secret_chars = body.secret.chars().count();
    if !(MIN_SECRET_CHARS..=MAX_SECRET_CHARS).contains(&secret_chars) {
        return Err(AppError::bad_request(format!(
            "secret: {MIN_SECRET_CHARS} to {MAX_SECRET_CHARS} characters"
        )));
    }
    let mut events: Vec<String> = Vec::new();
    for event in body.events {
        if !EVENT_TYPES.contains(&event.as_str()) {
            return Err(AppError::bad_request(format!(
                "events: unknown event type {event:?} (known: {})",
                EVENT_TYPES.join(", ")
            )));
        }
        if !events.contains(&event) {
            events.push(event);
        }
    }
    if events.is_empty() {
        return Err(AppError::bad_request(
            "events: name at least one event type",
        ));
    }
    if state.store.list_webhooks(principal.tenant_id).await?.len() >= MAX_WEBHOOKS {
        return Err(AppError::bad_request(format!(
            "an organisation may have at most {MAX_WEBHOOKS} webhooks"
        )));
    }
    let webhook = state
        .store
        .create_webhook(
            principal.tenant_id,
            NewWebhook {
                secret: state
                    .webhooks
                    .seal(principal.tenant_id, &url, body.secret)
                    .map_err(AppError::Internal)?,
                url,
                events,
                enabled: body.enabled,
            },
            actor(&principal),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(webhook)))
}

/// Deletes a webhook (owner only).
///
/// Its pending deliveries go with it; the deletion is audited.
#[utoipa::path(
    delete,
    path = "/v1/webhooks/{id}",
    operation_id = "deleteWebhook",
    tag = "webhooks",
    params(("id" = String, Path, format = "uuid", description = "The webhook's id.")),
    responses((status = 204, description = "Deleted; no body."))
)]
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    if !state
        .store
        .delete_webhook(principal.tenant_id, webhook_id(&id)?, actor(&principal))
        .await?
    {
        return Err(AppError::NotFound("webhook"));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Sends a synthetic ping event to verify a webhook endpoint.
///
/// Sends a `{type: "ping", webhook_id, sent_at}` payload to the webhook's
/// endpoint, signed as live deliveries are, and answers the destination's
/// HTTP status and (truncated) body; status 0 when it could not be reached,
/// with the reason as the body. The ping is not written to the delivery log.
#[utoipa::path(
    post,
    path = "/v1/webhooks/{id}/test",
    operation_id = "testWebhook",
    tag = "webhooks",
    params(("id" = String, Path, format = "uuid", description = "The webhook's id.")),
    responses(
        (status = 200, description = "Test delivery completed; the destination's answer.", body = TestAnswer),
        (status = 402, description = PLAN_GATE, body = ErrorBody),
        (status = 404, description = NO_WEBHOOK, body = ErrorBody),
        (status = 422, description = "`validation_error`: the endpoint's address is refused (`[webhooks] allow`/`deny`, link-local or metadata); nothing was sent.", body = ErrorBody),
    )
)]
pub async fn test(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<TestAnswer>, AppError> {
    gate(&state, &principal)?;
    let id = webhook_id(&id)?;
    let (url, secret) = state
        .store
        .webhook_target(principal.tenant_id, id.clone())
        .await?
        .ok_or(AppError::NotFound("webhook"))?;
    let body = serde_json::json!({
        "type": "ping",
        "webhook_id": id,
        "sent_at": crate::model::Timestamp(now_micros()),
    })
    .to_string();
    let delivery = uuid::Uuid::now_v7().hyphenated().to_string();
    let answer = match state.webhooks.secret(&secret) {
        Ok(secret) => {
            state
                .webhooks
                .send(&url, &secret, "ping", &delivery, body)
                .await
        }
        Err(why) => Answer::Failed(why),
    };
    match answer {
        Answer::Http { status, body } => Ok(Json(TestAnswer { status, body })),
        Answer::Failed(why) => Ok(Json(TestAnswer {
            status: 0,
            body: why,
        })),
        Answer::Refused(why) => Err(AppError::unprocessable(format!(
            "the webhook's endpoint is refused: {why}"
        ))),
    }
}

/// A webhook's recent deliveries.
///
/// Newest first, with each one's status (`pending`, `delivered`, `failed`),
/// attempts, last error and the last HTTP status the endpoint answered.
#[utoipa::path(
    get,
    path = "/v1/webhooks/{id}/deliveries",
    operation_id = "listWebhookDeliveries",
    tag = "webhooks",
    params(("id" = String, Path, format = "uuid", description = "The webhook's id."), DeliveryQuery),
    responses(
        (status = 200, description = "The most recent deliveries.", body = DeliveryList),
        (status = 404, description = NO_WEBHOOK, body = ErrorBody),
    )
)]
pub async fn deliveries(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<DeliveryQuery>,
) -> Result<Json<DeliveryList>, AppError> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(AppError::bad_request("limit: 1 to 200"));
    }
    let deliveries = state
        .store
        .list_webhook_deliveries(principal.tenant_id, webhook_id(&id)?, limit as usize)
        .await?
        .ok_or(AppError::NotFound("webhook"))?;
    Ok(Json(DeliveryList { deliveries }))
}
