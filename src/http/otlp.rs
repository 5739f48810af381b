//! `POST /v1/otlp/traces` (and `/v1/otlp/v1/traces`, where the Collector's
//! `otlphttp` exporter lands when given `/v1/otlp` as its endpoint):
//! OTLP/HTTP trace ingest, protobuf or JSON, gzip or identity; and
//! `GET /v1/otlp/export`, the stored traces as OTLP JSON.

use std::borrow::Cow;
use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, Query, Request, State};
use axum::http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::budget::Charges;
use super::intake;
use super::{blocking, project_param, AppState, Principal};
use crate::error::AppError;
use crate::ingest::parse_time;
use crate::otlp::{self, DecodeError, Encoding};
use crate::store::{ExportCursor, ExportRange};

/// The raw body with its encoding; the content type is checked before the
/// body is read, and the body is read up to the OTLP limit.
pub struct OtlpBody {
    encoding: Encoding,
    gzip: bool,
    bytes: Bytes,
    /// Where the charges for decoding the body are held.
    charges: Charges,
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
        let charges = req
            .extensions()
            .get::<Charges>()
            .cloned()
            .unwrap_or_default();
        let bytes = super::extract::read_body(req, state, super::ingest::DECODED_PER_BYTE).await?;
        Ok(OtlpBody {
            encoding,
            gzip,
            bytes,
            charges,
        })
    }
}

/// The same as `POST /v1/otlp/traces`, at the path OpenTelemetry exporters
/// add to a base endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT=https://host/v1/otlp`).
#[utoipa::path(post, path = "/v1/otlp/v1/traces", operation_id = "otlpIngestTracesStandardPath", tag = "ingest", responses((status = 200, description = "OK")))]
pub async fn traces_standard_path(
    state: State<AppState>,
    principal: Principal,
    body: OtlpBody,
) -> Result<Response, AppError> {
    traces(state, principal, body).await
}

/// Sends OpenTelemetry traces (OTLP/HTTP, protobuf or JSON, optionally gzipped).
#[utoipa::path(post, path = "/v1/otlp/traces", operation_id = "otlpIngestTraces", tag = "ingest", responses((status = 200, description = "OK")))]
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
        charges,
    } = body;
    let decode_error = |e| match e {
        DecodeError::TooLarge(limit) => AppError::PayloadTooLarge { limit },
        DecodeError::Invalid(message) => AppError::BadRequest {
            message,
            code: Some("invalid_otlp"),
        },
    };
    let bytes_received = bytes.len();
    // Inflating, counting and decoding up to 20 MiB is CPU work: off the
    // async threads.
    let (body, spans) = blocking(move || {
        // A body sent uncompressed is used as it is, not copied.
        let body = match otlp::inflate(&bytes, gzip, limit).map_err(decode_error)? {
            Cow::Owned(inflated) => Bytes::from(inflated),
            Cow::Borrowed(_) => bytes.clone(),
        };
        let spans = otlp::count_spans(&body, encoding);
        Ok((body, spans))
    })
    .await?;
    // A malformed body has no count; decoding it says what is wrong.
    if let Some(spans) = spans {
        let max_spans = state.config.limits.otlp_max_spans;
        if spans > max_spans {
            return Err(AppError::TooManySpans {
                limit: max_spans,
                got: spans,
            });
        }
        // A body of many tiny spans, or a compressed one, takes more.
        state.bodies.top_up(
            &charges,
            bytes_received + otlp::decoded_bytes(body.len(), gzip, spans),
        )?;
    }
    let pricing = state.pricing.clone();
    let mapped = blocking(move || {
        let request = otlp::decode(&body, encoding).map_err(decode_error)?;
        drop(body);
        Ok(otlp::map_request(request, &pricing))
    })
    .await?;

    if !mapped.traces.is_empty() {
        // The quota counts every trace of the request, also those that
        // only add spans to one stored before.
        intake::admit(&state, &principal, mapped.traces.len()).await?;
        let traces = intake::with_projects(&state, &principal, mapped.traces).await?;
        let spans: usize = traces.iter().map(|(_, t)| t.spans.len()).sum();
        let created = state
            .store
            .merge_otel_traces(principal.tenant_id, traces)
            .await?;
        intake::committed(&state, &principal, &created, spans as u64);
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

/// Spans per export response, at most.
pub const EXPORT_MAX_SPANS: usize = 10_000;

/// `GET /v1/otlp/export?from=&to=[&project_id=][&cursor=]`: the traces that
/// started in `[from, to)` as OTLP `TracesData` JSON, oldest first; when
/// more remain, `X-Next-Cursor` says where to continue. Sessions only.
#[utoipa::path(get, path = "/v1/otlp/export", operation_id = "otlpExportTraces", tag = "traces", responses((status = 200, description = "OK")))]
pub async fn export(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, AppError> {
    let time = |name: &str| -> Result<i64, AppError> {
        let raw = params
            .get(name)
            .ok_or_else(|| AppError::bad_request(format!("{name}: required")))?;
        parse_time(raw).ok_or_else(|| {
            AppError::bad_request(format!(
                "{name}: must be an RFC 3339 time such as 2026-01-02T03:04:05Z"
            ))
        })
    };
    let (from, to) = (time("from")?, time("to")?);
    if to < from {
        return Err(AppError::bad_request("to: must not be before from"));
    }
    let cursor = params
        .get("cursor")
        .map(|c| {
            decode_export_cursor(c)
                .ok_or_else(|| AppError::bad_request("cursor: not a cursor this server issued"))
        })
        .transpose()?;
    let project_id = project_param(&state, &principal, &params).await?;
    let range = ExportRange {
        from,
        to,
        project_id,
    };
    let page = state
        .store
        .export_page(principal.tenant_id, range, cursor, EXPORT_MAX_SPANS)
        .await?;
    // Building a few MiB of JSON is CPU work: off the async threads.
    let (body, next) = blocking(move || {
        Ok((
            otlp::traces_data(&page.traces, page.continues_first).to_string(),
            page.next,
        ))
    })
    .await?;
    let mut response = (
        StatusCode::OK,
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        body,
    )
        .into_response();
    if let Some(next) = next {
        if let Ok(value) = HeaderValue::from_str(&encode_export_cursor(next)) {
            response.headers_mut().insert(NEXT_CURSOR.clone(), value);
        }
    }
    Ok(response)
}

static NEXT_CURSOR: HeaderName = HeaderName::from_static("x-next-cursor");

fn encode_export_cursor(c: ExportCursor) -> String {
    URL_SAFE_NO_PAD.encode(format!("x1:{}:{}:{}", c.started_at, c.seq, c.span_offset))
}

fn decode_export_cursor(raw: &str) -> Option<ExportCursor> {
    let bytes = URL_SAFE_NO_PAD.decode(raw).ok()?;
    let text = std::str::from_utf8(&bytes).ok()?;
    let mut parts = text.strip_prefix("x1:")?.split(':');
    let cursor = ExportCursor {
        started_at: parts.next()?.parse().ok()?,
        seq: parts.next()?.parse().ok()?,
        span_offset: parts.next()?.parse().ok()?,
    };
    parts.next().is_none().then_some(cursor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_cursor_round_trips_and_rejects_garbage() {
        let c = ExportCursor {
            started_at: 1_700_000_000_000_000,
            seq: 42,
            span_offset: 10_000,
        };
        assert_eq!(decode_export_cursor(&encode_export_cursor(c)), Some(c));
        assert_eq!(decode_export_cursor("%%%"), None);
        assert_eq!(
            decode_export_cursor(&URL_SAFE_NO_PAD.encode("x1:1:2")),
            None
        );
    }
}
