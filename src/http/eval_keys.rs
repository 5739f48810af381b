//! `/v1/settings/eval-keys`: an organisation's own keys for the judge and
//! model endpoints. A key is sealed at once (AES-256-GCM under the
//! operator's `[encryption]` key, bound to the organisation and provider),
//! never returned, and sent by the judges and dataset runs of the
//! organisation instead of the configured key of that provider.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::JsonBody;
use super::principal::actor;
use super::{AppState, Principal};
use crate::error::{AppError, ErrorBody};
use crate::eval::judge::Provider;
use crate::eval::keys::context;
use crate::store::{EvalKey, NewEvalKey};

/// The longest key, in characters.
const MAX_KEY_CHARS: usize = 1024;
/// A key shorter than this shows no hint.
const HINT_MIN_CHARS: usize = 12;

const NOT_CONFIGURED: &str = "`encryption_not_configured`: the server has no `[encryption]` key to seal it with; the operator sets `encryption.key_file` in the configuration.";

/// A key to set (the reference's `UpsertEvalKeyRequest`).
#[derive(Deserialize, ToSchema)]
#[schema(as = UpsertEvalKeyRequest)]
pub struct UpsertEvalKey {
    /// `openai` (OpenAI-compatible endpoints) or `anthropic`.
    #[schema(example = "openai")]
    provider: String,
    /// The provider's API key; sealed at rest, never returned.
    #[schema(example = "sk-proj-0123456789abcdef")]
    key: String,
}

/// The organisation's active keys (the reference's `EvalKeyListResponse`).
#[derive(Serialize, ToSchema)]
#[schema(as = EvalKeyListResponse)]
pub struct EvalKeyList {
    items: Vec<EvalKey>,
}

fn provider(name: &str) -> Result<Provider, AppError> {
    Provider::parse(name).ok_or_else(|| {
        AppError::bad_request(format!(
            "provider: {name:?} is not a provider (openai, anthropic)"
        ))
    })
}

/// The organisation's active judge keys, by provider.
///
/// Only the provider, when it was set, and its last four characters are
/// shown; the key itself never leaves the server.
#[utoipa::path(
    get,
    path = "/v1/settings/eval-keys",
    operation_id = "listEvalKeys",
    tag = "eval-keys",
    responses((status = 200, description = "The active keys, one per provider at most.", body = EvalKeyList))
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<EvalKeyList>, AppError> {
    let items = state.store.eval_keys(principal.tenant_id).await?;
    Ok(Json(EvalKeyList { items }))
}

/// Sets the organisation's key for a provider (owner only).
///
/// The key is sealed before it is stored, and replaces the provider's
/// active key in the same change. From then on the organisation's
/// evaluations and dataset runs send it to the configured endpoint of that
/// provider instead of the configured key. Audited, without the key.
#[utoipa::path(
    post,
    path = "/v1/settings/eval-keys",
    operation_id = "upsertEvalKey",
    tag = "eval-keys",
    request_body(content = UpsertEvalKey, example = json!({"provider": "openai", "key": "sk-proj-0123456789abcdef"})),
    responses(
        (status = 201, description = "The key is stored.", body = EvalKey),
        (status = 400, description = "`bad_request`: an unknown provider, or a key that is empty, longer than 1024 characters or holds spaces or control characters (the message says which).", body = ErrorBody),
        (status = 409, description = NOT_CONFIGURED, body = ErrorBody),
    )
)]
pub async fn upsert(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<UpsertEvalKey>,
) -> Result<(StatusCode, Json<EvalKey>), AppError> {
    let provider = provider(body.provider.trim())?;
    let key = body.key.trim();
    let chars = key.chars().count();
    if chars == 0 || chars > MAX_KEY_CHARS {
        return Err(AppError::bad_request(format!(
            "key: 1 to {MAX_KEY_CHARS} characters"
        )));
    }
    if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(AppError::bad_request(
            "key: must not hold spaces or control characters",
        ));
    }
    let Some(sealer) = &state.sealer else {
        return Err(AppError::Refused {
            message: "the server has no [encryption] key to seal judge keys with; the operator \
                      sets encryption.key_file in the configuration"
                .into(),
            code: "encryption_not_configured",
        });
    };
    let sealed = sealer
        .seal(key.as_bytes(), &context(principal.tenant_id, provider))
        .map_err(AppError::Internal)?;
    let hint = if chars >= HINT_MIN_CHARS {
        let tail: String = key.chars().skip(chars - 4).collect();
        format!("…{tail}")
    } else {
        "…".to_owned()
    };
    let stored = state
        .store
        .set_eval_key(
            principal.tenant_id,
            NewEvalKey {
                provider: provider.as_str().to_owned(),
                sealed,
                key_id: sealer.key_id().to_owned(),
                hint,
            },
            actor(&principal),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(stored)))
}

/// Revokes the organisation's key for a provider (owner only).
///
/// Its sealed value is erased; the configured key is used again. Audited.
#[utoipa::path(
    delete,
    path = "/v1/settings/eval-keys/{provider}",
    operation_id = "revokeEvalKey",
    tag = "eval-keys",
    params(("provider" = String, Path, description = "`openai` or `anthropic`.")),
    responses(
        (status = 204, description = "Revoked; no body."),
        (status = 400, description = "`bad_request`: not a provider.", body = ErrorBody),
    )
)]
pub async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<StatusCode, AppError> {
    let provider = provider(&name)?;
    if !state
        .store
        .revoke_eval_key(
            principal.tenant_id,
            provider.as_str().to_owned(),
            actor(&principal),
        )
        .await?
    {
        return Err(AppError::NotFound("eval key"));
    }
    Ok(StatusCode::NO_CONTENT)
}
