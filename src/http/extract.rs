//! Request body extraction with the product's error shapes: a body over the
//! limit is a 413 naming the limit, a non-JSON content type a 415, broken
//! JSON a 400, and a missing or mistyped field a 422 naming its path. Every
//! body is charged against the server's budget of request memory (`budget`)
//! before and while it is read.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use serde_json::error::Category;

use super::budget::Charges;
use super::AppState;
use crate::error::AppError;

/// The largest body a route takes, when it is not `limits.json_body_max_bytes`;
/// set by the route table.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// What a chunked body is charged up front, and at least for each piece
/// after that, so that a body of many small pieces is not charged per piece.
const CHUNKED_STEP: usize = 256 * 1024;

/// Reads the whole body, up to the route's limit (413 naming it, before
/// reading when `Content-Length` says so), charged against the request
/// memory budget (503 when it has no room) for `per_byte` bytes of memory
/// per body byte: the body and what decoding it is expected to take. The
/// charge is held with the request's others, until its response is ready.
pub async fn read_body(req: Request, state: &AppState, per_byte: usize) -> Result<Bytes, AppError> {
    let limit = req
        .extensions()
        .get::<BodyLimit>()
        .map_or(state.config.limits.json_body_max_bytes, |l| l.0);
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(AppError::PayloadTooLarge { limit });
    }
    let charges = req
        .extensions()
        .get::<Charges>()
        .cloned()
        .unwrap_or_default();
    let mut charged = declared.unwrap_or(CHUNKED_STEP).min(limit);
    state
        .bodies
        .charge(&charges, charged.saturating_mul(per_byte))
        .await?;
    let mut buffer = Vec::with_capacity(declared.unwrap_or(0));
    let mut body = req.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| AppError::bad_request(format!("cannot read the request body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let size = buffer.len() + data.len();
        if size > limit {
            return Err(AppError::PayloadTooLarge { limit });
        }
        if size > charged {
            let more = (size - charged).max(CHUNKED_STEP).min(limit - charged);
            state
                .bodies
                .charge_now(&charges, more.saturating_mul(per_byte))?;
            charged += more;
        }
        buffer.extend_from_slice(&data);
    }
    Ok(Bytes::from(buffer))
}

/// A JSON body deserialized into `T`.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, AppError> {
        require_json(req.headers())?;
        // At most 5 MiB of settings and labels: their values take about
        // their size again once decoded.
        let bytes = read_body(req, state, 2).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// 415 unless the body is declared JSON.
pub fn require_json(headers: &axum::http::HeaderMap) -> Result<(), AppError> {
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim();
            mime.eq_ignore_ascii_case("application/json")
                || mime.to_ascii_lowercase().ends_with("+json")
        });
    if is_json {
        Ok(())
    } else {
        Err(AppError::UnsupportedMediaType(
            "the body must be JSON, sent with Content-Type: application/json".into(),
        ))
    }
}

/// Parses a JSON object, naming the path of the first field that does not fit `T`.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    // serde would happily read a struct from an array; every v1 body is an object.
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        Some(b'[' | b'"' | b't' | b'f' | b'n' | b'-' | b'0'..=b'9') => {
            return Err(AppError::unprocessable("the body must be a JSON object"))
        }
        _ => {
            return Err(AppError::malformed_json(
                "malformed JSON: expected an object",
            ))
        }
    }
    // Most bodies are valid: read them directly, and only for one that fails
    // read it again tracking the path, which costs as much as the parse.
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            Category::Data => {
                if path == "." {
                    AppError::unprocessable(strip_position(&inner.to_string()))
                } else {
                    AppError::unprocessable(format!(
                        "{path}: {}",
                        strip_position(&inner.to_string())
                    ))
                }
            }
            Category::Syntax | Category::Eof | Category::Io => {
                AppError::malformed_json(format!("malformed JSON: {inner}"))
            }
        }
    })?;
    de.end()
        .map_err(|e| AppError::malformed_json(format!("malformed JSON: {e}")))?;
    Ok(value)
}

/// serde_json appends " at line 1 column 42" to data errors; the field path
/// already says where, so drop it.
fn strip_position(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(i) => &message[..i],
        None => message,
    }
}
