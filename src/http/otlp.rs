//! `POST /v1/otlp/traces` (and `/v1/otlp/v1/traces`, where the Collector's
//! `otlphttp` exporter lands when given `/v1/otlp` as its endpoint):
//! OTLP/HTTP trace ingest, protobuf or JSON, gzip or identity; and
//! `GET /v1/otlp/export`, the stored traces as OTLP JSON.

use std::borrow::Cow;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

use super::budget::Charges;
use super::intake;
use super::query::{ApiQuery, Cursor, Listing, ProjectParam, TimeWindow};
use super::{blocking, AppState, Principal};
use crate::error::{AppError, ErrorBody};
use crate::otlp::{self, DecodeError, Encoding};
use crate::store::{ExportCursor, ExportRange};

/// A protobuf message, in the API document: bytes.
pub struct Protobuf;

impl utoipa::PartialSchema for Protobuf {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Binary,
            )))
            .into()
    }
}

impl utoipa::ToSchema for Protobuf {}

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

/// Sends OpenTelemetry traces (OTLP/HTTP, protobuf or JSON, optionally gzipped).
#[utoipa::path(
    post,
    path = "/v1/otlp/traces",
    operation_id = "otlpIngestTraces",
    tag = "ingest",
    request_body(
        description = "An OTLP `ExportTraceServiceRequest`, optionally gzipped (`Content-Encoding: gzip`).",
        content(
            (inline(Protobuf) = "application/x-protobuf"),
            (Object = "application/json"),
        ),
    ),
    responses(
        (
            status = 200,
            description = "An OTLP `ExportTraceServiceResponse`, in the request's encoding; with `partialSuccess` when spans were refused: how many, and why the first was.",
            content(
                (inline(Protobuf) = "application/x-protobuf"),
                (Object = "application/json", example = json!({"partialSuccess": {"rejectedSpans": 1, "errorMessage": "span \"chat\": trace id is all zeros"}})),
            ),
        ),
        (status = 400, description = "`invalid_otlp`: the body is not an OTLP request in the encoding its content type names (the message says where).", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body, or the body inflated, is larger than `limits.otlp_body_max_bytes`; `too_many_spans`: it holds more spans than `limits.otlp_max_spans`.", body = ErrorBody),
        (status = 403, description = super::intake::ARCHIVED, body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: the body is not `application/x-protobuf` or `application/json`, or its `Content-Encoding` is not `gzip` or `identity`.", body = ErrorBody),
        (status = 429, description = "`rate_limited`: the organisation sent more ingest requests than its plan allows this minute; `monthly_quota_exceeded`: its plan's traces for this month are used up. `Retry-After` says when to retry.", body = ErrorBody),
    )
)]
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
        let ends: Vec<(i64, Option<i64>, usize)> = traces
            .iter()
            .map(|(project_id, t)| (*project_id, t.end(), t.spans.len()))
            .collect();
        let created = state
            .store
            .merge_otel_traces(principal.tenant_id, traces)
            .await?;
        // Spans merged into a trace stored before count as arrivals too.
        state
            .ingest_tally
            .stored(principal.tenant_id, crate::store::now_micros(), &ends);
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

/// The pages of an OTLP export; a position is a trace and how many of its
/// spans went out before.
pub struct OtlpExport;
impl Listing for OtlpExport {
    /// Pages are bounded in spans ([`EXPORT_MAX_SPANS`]), not in items.
    const DEFAULT_LIMIT: u32 = EXPORT_MAX_SPANS as u32;
    const MAX_LIMIT: u32 = EXPORT_MAX_SPANS as u32;
    const KIND: &'static str = "otlp-export";
    type Position = ExportCursor;
}

/// Where an OTLP export continues.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OtlpExportQuery {
    /// The `X-Next-Cursor` of the previous response.
    cursor: Option<String>,
    #[serde(flatten)]
    #[param(ignore)]
    window: TimeWindow,
}

/// Exports traces in OTLP/HTTP JSON format.
///
/// The traces that started in `[from, to)` as OTLP `TracesData` JSON,
/// oldest first, so OpenTelemetry tooling can read them without an
/// adapter. At most 10,000 spans per response; when more remain,
/// `X-Next-Cursor` holds the `cursor` to continue with. Sessions only.
#[utoipa::path(
    get,
    path = "/v1/otlp/export",
    operation_id = "otlpExportTraces",
    tag = "traces",
    params(
        ("from" = String, Query, format = DateTime, description = "Start of the window (inclusive), RFC 3339. Required."),
        ("to" = String, Query, format = DateTime, description = "End of the window (exclusive), RFC 3339; not before `from`. Required."),
        ProjectParam,
        OtlpExportQuery,
    ),
    responses(
        (
            status = 200,
            description = "An OTLP `TracesData` payload (JSON-encoded protobuf): `resourceSpans`, one per project, each trace's spans with their attributes.",
            headers(("X-Next-Cursor" = String, description = "The `cursor` of the next page; present only when more spans remain.")),
            content_type = "application/json",
            body = Object,
        ),
        (status = 404, description = "`not_found`: the caller's organisation has no project `project_id`.", body = ErrorBody),
    )
)]
pub async fn export(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<OtlpExportQuery>,
    ApiQuery(project): ApiQuery<ProjectParam>,
) -> Result<Response, AppError> {
    let required = |name: &str, time: Option<i64>| {
        time.ok_or_else(|| AppError::bad_request(format!("{name}: required")))
    };
    let from = required("from", query.window.from)?;
    let to = required("to", query.window.to)?;
    let cursor = query
        .cursor
        .as_deref()
        .map(Cursor::<OtlpExport>::param)
        .transpose()?;
    let range = ExportRange {
        from,
        to,
        project_id: project.resolve(&state, &principal).await?,
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
        if let Ok(value) = HeaderValue::from_str(&Cursor::<OtlpExport>::encode(&next)) {
            response.headers_mut().insert(NEXT_CURSOR.clone(), value);
        }
    }
    Ok(response)
}

static NEXT_CURSOR: HeaderName = HeaderName::from_static("x-next-cursor");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_export_cursor_round_trips_and_only_in_its_own_list() {
        let c = ExportCursor {
            started_at: 1_700_000_000_000_000,
            seq: 42,
            span_offset: 10_000,
        };
        let text = Cursor::<OtlpExport>::encode(&c);
        assert_eq!(Cursor::<OtlpExport>::decode(&text), Some(c));
        assert_eq!(Cursor::<super::super::query::Traces>::decode(&text), None);
        assert_eq!(Cursor::<OtlpExport>::decode("%%%"), None);
    }
}
