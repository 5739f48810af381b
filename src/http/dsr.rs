//! `/v1/dsr`: data subject requests. An owner asks for everything stored of
//! one subject to be erased (`delete`) or exported (`export`); the request
//! is stored `pending` and the privacy worker (`crate::privacy`) carries it
//! out. A finished export is downloaded from `/v1/dsr/{id}/export`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::download::attachment;
use super::eval_params::canonical_uuid;
use super::extract::JsonBody;
use super::principal::actor;
use super::query::{ApiQuery, Cursor, Listing, Page};
use super::{AppState, Principal};
use crate::error::{AppError, ErrorBody};
use crate::store::DsrRequest;

/// The longest subject id, in characters (as a trace's external and
/// session ids).
const MAX_SUBJECT_CHARS: usize = 256;
/// Bytes read from an export file per chunk of its download.
const DOWNLOAD_CHUNK: usize = 64 * 1024;

const NO_REQUEST: &str = "`not_found`: the caller's organisation has no request `id`.";

/// The organisation's requests, newest first; a position is the internal
/// id of the last request shown.
pub struct DsrRequests;

impl Listing for DsrRequests {
    const DEFAULT_LIMIT: u32 = 50;
    const MAX_LIMIT: u32 = 200;
    const KIND: &'static str = "dsr";
    type Position = i64;
}

/// What a request asks for.
#[derive(ToSchema)]
#[allow(dead_code)]
pub enum DsrType {
    /// Erasure (GDPR Art. 17, CCPA right to delete).
    #[schema(rename = "delete")]
    Delete,
    /// Export (GDPR Art. 15, CCPA right to know).
    #[schema(rename = "export")]
    Export,
}

/// A request to make (the reference's `CreateDsrRequest`).
#[derive(Deserialize, ToSchema)]
#[schema(as = CreateDsrRequest)]
pub struct CreateDsr {
    /// The subject's id as the traces carry it: their `external_id`, their
    /// `session_id`, or the metadata key `privacy.subject_metadata_key`
    /// (default `user_id`). 1 to 256 characters.
    #[schema(example = "customer-4711")]
    subject_id: String,
    /// `delete` erases everything of the subject; `export` writes it to a
    /// file to download.
    #[serde(rename = "type")]
    #[schema(value_type = DsrType)]
    kind: String,
}

/// A page of requests (the reference's `DsrRequestList`).
#[derive(Serialize, ToSchema)]
#[schema(as = DsrRequestList)]
pub struct DsrRequestList {
    /// The same page as `requests`, for older clients.
    #[schema(deprecated)]
    items: Vec<DsrRequest>,
    requests: Vec<DsrRequest>,
    /// Present when there are more requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

fn request_id(raw: &str) -> Result<String, AppError> {
    canonical_uuid(raw).ok_or(AppError::NotFound("request"))
}

/// Submits a data subject request.
///
/// The request is stored `pending` and carried out in the background:
/// `processing`, then `completed` (or `failed` with `error_msg`). The
/// subject is found in every project of the organisation by the traces'
/// `external_id`, `session_id` and the metadata key
/// `privacy.subject_metadata_key` (default `user_id`). A `delete` erases
/// those traces with their spans, events, feedback, evaluations, search
/// and index entries, the dataset items copied from them, the dataset run
/// results scored from those, and webhook deliveries naming them; the
/// metrics stop counting them. An `export` writes them whole (spans,
/// events, feedback, evaluations) with the dataset items made of them as
/// JSON lines, downloadable from `export_url` for
/// `privacy.export_keep_h` hours. Owners only; creation and completion are
/// audited with counts, never the subject's id or data.
#[utoipa::path(
    post,
    path = "/v1/dsr",
    operation_id = "createDsrRequest",
    tag = "dsr",
    request_body(content = CreateDsr, example = json!({"subject_id": "customer-4711", "type": "delete"})),
    responses(
        (status = 201, description = "The request, pending.", body = DsrRequest),
        (status = 400, description = "`bad_request`: `type` is not `delete` or `export`, or `subject_id` is empty or longer than 256 characters.", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<CreateDsr>,
) -> Result<(StatusCode, Json<DsrRequest>), AppError> {
    let kind = match body.kind.as_str() {
        "delete" => "delete",
        "export" => "export",
        other => {
            return Err(AppError::bad_request(format!(
                "type: must be delete or export, not {other:?}"
            )))
        }
    };
    let subject = body.subject_id.trim();
    if subject.is_empty() || subject.chars().count() > MAX_SUBJECT_CHARS {
        return Err(AppError::bad_request(format!(
            "subject_id: must be 1 to {MAX_SUBJECT_CHARS} characters"
        )));
    }
    let request = state
        .store
        .create_dsr(
            principal.tenant_id,
            subject.to_owned(),
            kind,
            actor(&principal),
        )
        .await?;
    state.dsr.notify_one();
    Ok((StatusCode::CREATED, Json(request)))
}

/// Lists the organisation's data subject requests, newest first.
#[utoipa::path(
    get,
    path = "/v1/dsr",
    operation_id = "listDsrRequests",
    tag = "dsr",
    params(Page<DsrRequests>),
    responses((status = 200, description = "A page of requests.", body = DsrRequestList))
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(page): ApiQuery<Page<DsrRequests>>,
) -> Result<Json<DsrRequestList>, AppError> {
    let (rows, more) = state
        .store
        .list_dsr(principal.tenant_id, page.cursor, page.size())
        .await?;
    let next_cursor = if more {
        rows.last()
            .map(|(key, _)| Cursor::<DsrRequests>::encode(key))
    } else {
        None
    };
    let requests: Vec<DsrRequest> = rows.into_iter().map(|(_, r)| r).collect();
    Ok(Json(DsrRequestList {
        items: requests.clone(),
        requests,
        next_cursor,
    }))
}

/// One data subject request, with what it erased or exported so far.
#[utoipa::path(
    get,
    path = "/v1/dsr/{id}",
    operation_id = "getDsrRequest",
    tag = "dsr",
    params(("id" = String, Path, format = "uuid", description = "The request's id.")),
    responses(
        (status = 200, description = "The request.", body = DsrRequest),
        (status = 404, description = NO_REQUEST, body = ErrorBody),
    )
)]
pub async fn detail(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<DsrRequest>, AppError> {
    state
        .store
        .get_dsr(principal.tenant_id, request_id(&id)?)
        .await?
        .map(Json)
        .ok_or(AppError::NotFound("request"))
}

/// Downloads a completed export.
///
/// JSON lines: first `{"type": "export", "request_id", "subject_id",
/// "matched_on", "created_at"}`, then one `{"type": "trace", "trace": …}`
/// per trace of the subject (as `GET /v1/traces/{id}` shows it, with
/// spans, events, feedback and evaluations) and one
/// `{"type": "dataset_item", "item": …}` per dataset item made of them.
/// The file is kept `privacy.export_keep_h` hours after it is written.
#[utoipa::path(
    get,
    path = "/v1/dsr/{id}/export",
    operation_id = "downloadDsrExport",
    tag = "dsr",
    params(("id" = String, Path, format = "uuid", description = "The request's id.")),
    responses(
        (
            status = 200,
            description = "The export file (`application/x-ndjson`), streamed.",
            headers(("Content-Disposition" = String, description = "A file name of `dsr-export-{id}.jsonl`.")),
            content((String = "application/x-ndjson")),
        ),
        (status = 404, description = "`not_found`: the caller's organisation has no request `id`, or it is not a completed export, or its file was deleted after its keep time.", body = ErrorBody),
    )
)]
pub async fn download(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let uuid = request_id(&id)?;
    let file = state
        .store
        .dsr_export_file(principal.tenant_id, uuid.clone())
        .await?
        .ok_or(AppError::NotFound("export"))?;
    let path = crate::privacy::export_path(&state.config.storage.data_dir, &file);
    let opened = tokio::task::spawn_blocking(move || std::fs::File::open(path))
        .await
        .map_err(|e| AppError::Internal(format!("opening the export file: {e}")))?;
    let mut reader = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(AppError::NotFound("export"))
        }
        Err(e) => return Err(AppError::Internal(format!("opening the export file: {e}"))),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut buf = vec![0u8; DOWNLOAD_CHUNK];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if tx.blocking_send(Bytes::copy_from_slice(&buf[..n])).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    // The status is sent; ending the body early is all that is left.
                    tracing::error!(error = %e, "reading an export file");
                    return;
                }
            }
        }
    });
    Ok(attachment(
        rx,
        "application/x-ndjson",
        &format!("dsr-export-{uuid}.jsonl"),
    ))
}
