//! Request body extraction with the product's error shapes: a body over the
//! limit is a 413 naming the limit, a non-JSON content type a 415, broken
//! JSON a 400, and a missing or mistyped field a 422 naming its path.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::error::Category;

use super::AppState;
use crate::error::AppError;

/// A JSON body deserialized into `T`.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, AppError> {
        let is_json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| {
                let mime = mime.trim();
                mime.eq_ignore_ascii_case("application/json")
                    || mime.to_ascii_lowercase().ends_with("+json")
            });
        if !is_json {
            return Err(AppError::UnsupportedMediaType(
                "the body must be JSON, sent with Content-Type: application/json".into(),
            ));
        }
        let limit = state.config.limits.json_body_max_bytes;
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                AppError::PayloadTooLarge { limit }
            } else {
                AppError::bad_request(rejection.body_text())
            }
        })?;
        parse_json(&bytes).map(JsonBody)
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
