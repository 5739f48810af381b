//! `POST /v1/otlp/traces` (and `/v1/otlp/v1/traces`, where the Collector's
//! `otlphttp` exporter lands when given `/v1/otlp` as its endpoint):
//! OTLP/HTTP trace ingest, protobuf or JSON, gzip or identity.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::ingest::resolve_project;
use super::{AppState, Principal};
use crate::error::AppError;
use crate::otlp::{self, DecodeError, Encoding};

/// The raw body with its encoding; the content type is checked before the
/// body is read, and the body is read up to the OTLP limit.
pub struct OtlpBody {
    encoding: Encoding,
    gzip: bool,
    bytes: Bytes,
}

impl FromRequest<AppState> for OtlpBody {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, AppError> {
        let mime = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|m| m.trim().to_ascii_lowercase());
        let encoding = match mime.as_deref() {
            Some("application/x-protobuf") | Some("application/protobuf") => Encoding::Protobuf,
            Some("application/json") => Encoding::Json,
            _ => {
                return Err(AppError::UnsupportedMediaType(
                    "OTLP bodies must be sent as application/x-protobuf or application/json".into(),
                ))
            }
        };
        let gzip = match req
            .headers()
            .get(CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_ascii_lowercase())
            .as_deref()
        {
            None | Some("") | Some("identity") => false,
            Some("gzip") => true,
            Some(other) => {
                return Err(AppError::UnsupportedMediaType(format!(
                    "Content-Encoding {other} is not supported; use gzip or identity"
                )))
            }
        };
        let limit = state.config.limits.otlp_body_max_bytes;
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                AppError::PayloadTooLarge { limit }
            } else {
                AppError::bad_request(format!("cannot read the request body: {rejection}"))
            }
        })?;
        Ok(OtlpBody {
            encoding,
            gzip,
            bytes,
        })
    }
}

pub async fn traces(
    State(state): State<AppState>,
    principal: Principal,
    body: OtlpBody,
) -> Result<Response, AppError> {
    let limit = state.config.limits.otlp_body_max_bytes;
    let OtlpBody {
        encoding,
        gzip,
        bytes,
    } = body;
    // Inflating and decoding up to 20 MiB is CPU work: off the async threads.
    let mapped = tokio::task::spawn_blocking(move || {
        let body = otlp::inflate(&bytes, gzip, limit)?;
        let request = otlp::decode(&body, encoding)?;
        Ok::<_, DecodeError>(otlp::map_request(request))
    })
    .await
    .map_err(|e| AppError::Internal(format!("OTLP decoding task failed: {e}")))?
    .map_err(|e| match e {
        DecodeError::TooLarge(limit) => AppError::PayloadTooLarge { limit },
        DecodeError::Invalid(message) => AppError::bad_request(message),
    })?;

    let mut projects: HashMap<Option<String>, i64> = HashMap::new();
    let mut traces = Vec::with_capacity(mapped.traces.len());
    for (reference, trace) in mapped.traces {
        let project_id = match projects.get(&reference) {
            Some(id) => *id,
            None => {
                let id = resolve_project(&state, &principal, reference.as_deref()).await?;
                projects.insert(reference, id);
                id
            }
        };
        traces.push((project_id, trace));
    }
    if !traces.is_empty() {
        state
            .store
            .merge_otel_traces(principal.tenant_id, traces)
            .await?;
    }
    let body = otlp::response_body(mapped.rejected, mapped.first_error.as_deref(), encoding);
    let content_type = match encoding {
        Encoding::Protobuf => "application/x-protobuf",
        Encoding::Json => "application/json",
    };
    Ok((
        StatusCode::OK,
        [(CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response())
}
