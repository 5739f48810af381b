//! The admin page: `assets/index.html` at `/`, the API reference
//! `assets/docs.html` at `/docs`, and the other files of `assets/` at
//! `/assets/<path>`, compiled into the binary (see `build.rs`), so nothing
//! is read from the disk or fetched from elsewhere. The admin page uses only
//! the public `/v1` API with the session cookie; the reference's console
//! sends the token its reader types in, never the cookie.
//!
//! Every response of the server carries `X-Content-Type-Options: nosniff`
//! and `Referrer-Policy: no-referrer` (and HSTS under TLS); the page's own
//! responses add a strict Content-Security-Policy: scripts, styles and
//! connections from this origin only, nothing inline, no framing.

use axum::extract::{Path, Request, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH, REFERRER_POLICY,
    STRICT_TRANSPORT_SECURITY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::error::AppError;

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// The page's policy: everything from this origin, nothing inline.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; \
    base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The admin page.
///
/// One HTML page that uses this API with the session cookie; its files are
/// compiled into the server.
#[utoipa::path(
    get,
    path = "/",
    operation_id = "adminPage",
    tag = "admin-page",
    responses(
        (status = 200, description = "The page.", content_type = "text/html"),
        (status = 304, description = "Unchanged since the `ETag` given in `If-None-Match`; no body."),
    )
)]
pub async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

/// The API reference.
///
/// Drawn in the browser from `/v1/openapi.json`, under the same policy as
/// the admin page, with a console that sends requests with a token typed
/// into the page.
#[utoipa::path(
    get,
    path = "/docs",
    operation_id = "apiReference",
    tag = "admin-page",
    responses(
        (status = 200, description = "The page.", content_type = "text/html"),
        (status = 304, description = "Unchanged since the `ETag` given in `If-None-Match`; no body."),
    )
)]
pub async fn docs(headers: HeaderMap) -> Response {
    serve("docs.html", &headers)
}

/// One of the admin page's files.
#[utoipa::path(
    get,
    path = "/assets/{path}",
    operation_id = "adminPageAsset",
    tag = "admin-page",
    params(("path" = String, Path, description = "The file under assets/.")),
    responses(
        (status = 200, description = "The file, with its type."),
        (status = 304, description = "Unchanged since the `ETag` given in `If-None-Match`; no body."),
    )
)]
pub async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&path, &headers)
}

fn serve(path: &str, headers: &HeaderMap) -> Response {
    let Some((_, body)) = ASSETS.iter().find(|(name, _)| *name == path) else {
        return AppError::NotFound("asset").into_response();
    };
    // The build's contents name the version: a reload after an upgrade
    // fetches what changed, and nothing else.
    let etag = format!("\"{}\"", &hex::encode(sha2_digest(body))[..32]);
    let mut response = if headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag))
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (StatusCode::OK, *body).into_response()
    };
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type(path)));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(value) = HeaderValue::from_str(&etag) {
        h.insert(ETAG, value);
    }
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

fn sha2_digest(body: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(body).into()
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        Some("woff2") => "font/woff2",
        Some("txt" | "md") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Headers every response carries.
pub async fn security_headers(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if state.tls {
        h.insert(
            STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_script_are_embedded() {
        assert!(ASSETS.iter().any(|(name, _)| *name == "index.html"));
        assert!(!ASSETS.iter().any(|(name, _)| *name == "README.md"));
        assert_eq!(content_type("js/app.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("x.unknown"), "application/octet-stream");
    }
}
