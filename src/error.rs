//! The one error type of the HTTP layer. Every failure becomes
//! `{"error": ..., "code"?: ..., "request_id": ...}` with the right status;
//! the detail of a server-side failure goes to the log, never to the client.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::store::StoreError;

tokio::task_local! {
    /// The id of the request being served, set by the request middleware.
    pub static REQUEST_ID: String;
}

/// The request id of the current task, or an empty string outside a request.
pub fn current_request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

/// Seconds a client refused for a full disk is told to wait.
pub const DISK_FULL_RETRY_AFTER_S: u64 = 30;

/// The body of every failure.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for a human.
    #[schema(example = "limit: must be an integer from 1 to 200")]
    pub error: String,
    /// What went wrong, for a program: stable across versions.
    #[schema(example = "bad_request")]
    pub code: &'static str,
    /// The request's id, as in the `X-Request-Id` header and the server's log.
    pub request_id: String,
    /// With `plan_upgrade_required`: the least plan that includes the feature.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required_plan: Option<&'static str>,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// 400: the request is malformed (bad JSON, bad query parameter).
    #[error("{message}")]
    BadRequest {
        message: String,
        code: Option<&'static str>,
    },
    /// 401 with the exact code the SDKs latch on.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 403 with a machine-readable code.
    #[error("{message}")]
    Forbidden { message: String, code: &'static str },
    /// 404: absent, or belonging to another tenant (indistinguishable on purpose).
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409: the request conflicts with stored state.
    #[error("{0}")]
    Conflict(String),
    /// 409 with a machine-readable code: a rule of the data refuses it.
    #[error("{message}")]
    Refused { message: String, code: &'static str },
    /// 402: the organisation's plan does not include this.
    #[error("{message}")]
    PlanUpgradeRequired {
        message: String,
        required_plan: &'static str,
    },
    /// 402: a plan's cap on evaluations or rules is reached.
    #[error("{message}")]
    QuotaExceeded { message: String, code: &'static str },
    /// 429: too many attempts; retry after the given seconds.
    #[error("{message}")]
    TooManyRequests {
        message: String,
        code: &'static str,
        retry_after: u64,
    },
    /// 413: the body exceeds the named limit.
    #[error("request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// 413: the request holds more spans than one request may.
    #[error("a request may hold at most {limit} spans (this one holds {got}); send them in smaller requests")]
    TooManySpans { limit: usize, got: usize },
    /// 415: the body is not of a supported media type.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: a field is missing, of the wrong type, or outside its limits.
    #[error("{0}")]
    Unprocessable(String),
    /// 422 with a machine-readable code: the request is understood, but the
    /// state of things (or this server) cannot carry it out.
    #[error("{message}")]
    Declined { message: String, code: &'static str },
    /// 507: the database is at its configured cap, or its disk is full;
    /// writes that add data are refused. Retry after the given seconds.
    #[error("{message}")]
    StorageFull { message: String, retry_after: u64 },
    /// 503: the server is shutting down or overloaded; retry later.
    #[error("{0}")]
    Unavailable(String),
    /// 503: the server holds as much request data as it may; retry after
    /// the given seconds.
    #[error("{message}")]
    Busy { message: String, retry_after: u64 },
    /// 500: logged in full, reported to the client only by request id.
    #[error("internal error")]
    Internal(String),
    /// Any other status, with the text of whatever refused the request (an
    /// extractor's or the router's own rejection); see [`json_errors`].
    #[error("{message}")]
    Status { status: StatusCode, message: String },
}

impl AppError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        AppError::BadRequest {
            message: message.into(),
            code: None,
        }
    }

    pub fn unprocessable(message: impl Into<String>) -> Self {
        AppError::Unprocessable(message.into())
    }

    /// 507 for a write the disk had no room for. Space comes back when an
    /// operator frees some or retention deletes old traces.
    pub fn disk_full() -> Self {
        AppError::StorageFull {
            message: "the disk holding the database is full; nothing more is stored until \
                      space is freed on it"
                .into(),
            retry_after: DISK_FULL_RETRY_AFTER_S,
        }
    }

    /// 400 for a body that is not the JSON it claims to be.
    pub fn malformed_json(message: impl Into<String>) -> Self {
        AppError::BadRequest {
            message: message.into(),
            code: Some("malformed_json"),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            AppError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AppError::Forbidden { .. } => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            AppError::Conflict(_) | AppError::Refused { .. } => StatusCode::CONFLICT,
            AppError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::PlanUpgradeRequired { .. } | AppError::QuotaExceeded { .. } => {
                StatusCode::PAYMENT_REQUIRED
            }
            AppError::PayloadTooLarge { .. } | AppError::TooManySpans { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            AppError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::Unprocessable(_) | AppError::Declined { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            AppError::StorageFull { .. } => StatusCode::INSUFFICIENT_STORAGE,
            AppError::Unavailable(_) | AppError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            AppError::Status { status, .. } => *status,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            AppError::BadRequest { code, .. } => code.unwrap_or("bad_request"),
            AppError::Unauthorized(code) => code,
            AppError::Forbidden { code, .. } => code,
            AppError::NotFound(_) => "not_found",
            AppError::MethodNotAllowed => "method_not_allowed",
            AppError::Conflict(_) => "conflict",
            AppError::Refused { code, .. } => code,
            AppError::TooManyRequests { code, .. } => code,
            AppError::PlanUpgradeRequired { .. } => "plan_upgrade_required",
            AppError::QuotaExceeded { code, .. } => code,
            AppError::PayloadTooLarge { .. } => "payload_too_large",
            AppError::TooManySpans { .. } => "too_many_spans",
            AppError::UnsupportedMediaType(_) => "unsupported_media_type",
            AppError::Unprocessable(_) => "validation_error",
            AppError::Declined { code, .. } => code,
            AppError::StorageFull { .. } => "storage_full",
            AppError::Unavailable(_) => "unavailable",
            AppError::Busy { .. } => "server_busy",
            AppError::Internal(_) => "internal_error",
            AppError::Status { status, .. } => match status.as_u16() {
                400 => "bad_request",
                404 => "not_found",
                405 => "method_not_allowed",
                408 => "request_timeout",
                413 => "payload_too_large",
                415 => "unsupported_media_type",
                422 => "validation_error",
                429 => "rate_limited",
                503 => "unavailable",
                s if s >= 500 => "internal_error",
                _ => "request_refused",
            },
        }
    }
}

/// The error code of a refused request, on its response's extensions, for
/// middleware that counts refusals.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let request_id = current_request_id();
        if let AppError::Internal(detail) = &self {
            tracing::error!(request_id = %request_id, error = %detail, "request failed");
        }
        let status = self.status();
        let body = ErrorBody {
            error: self.to_string(),
            code: self.code(),
            request_id,
            required_plan: match &self {
                AppError::PlanUpgradeRequired { required_plan, .. } => Some(required_plan),
                _ => None,
            },
        };
        let code = body.code;
        let mut response = (status, Json(body)).into_response();
        response.extensions_mut().insert(ErrorCode(code));
        if let AppError::TooManyRequests { retry_after, .. }
        | AppError::Busy { retry_after, .. }
        | AppError::StorageFull { retry_after, .. } = &self
        {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, (*retry_after).into());
        }
        response
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(msg) => AppError::Conflict(msg),
            StoreError::Refused { message, code } => AppError::Refused { message, code },
            StoreError::ShuttingDown => {
                AppError::Unavailable("the server is shutting down; retry".into())
            }
            StoreError::CapReached { retry_after, .. } => AppError::StorageFull {
                message: e.to_string(),
                retry_after,
            },
            StoreError::DiskFull(_) => AppError::disk_full(),
            StoreError::Io(io)
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
                ) =>
            {
                AppError::disk_full()
            }
            other => AppError::Internal(other.to_string()),
        }
    }
}

/// Gives every error response the JSON error shape with a code, whatever
/// produced it: a rejection of axum's own extractors (a path segment that
/// is not UTF-8, a query it cannot read) or of a layer answers in plain
/// text, which this turns into `{"error", "code", "request_id"}` with the
/// same status and headers. Responses that are JSON already pass untouched.
pub async fn json_errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    /// Rejection texts are a line or two; more is not read.
    const MAX_TEXT: usize = 16 * 1024;
    let response = next.run(req).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_TEXT)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_ascii_lowercase()
    } else {
        text
    };
    let mut fixed = AppError::Status { status, message }.into_response();
    for (name, value) in &parts.headers {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            fixed.headers_mut().insert(name.clone(), value.clone());
        }
    }
    fixed
}
