//! What the exports share: the format (CSV or JSON lines), CSV quoting,
//! and the streamed response with its type, file name and truncation mark.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use crate::store::now_micros;

static TRUNCATED: HeaderName = HeaderName::from_static("x-trulayer-truncated");

/// The format of an export: CSV (the default) or JSON lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Csv,
    Jsonl,
}

impl Format {
    fn parse(text: &str) -> Option<Format> {
        match text {
            "csv" => Some(Format::Csv),
            "jsonl" => Some(Format::Jsonl),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Format {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Format::parse(&text).ok_or_else(|| serde::de::Error::custom("must be csv or jsonl"))
    }
}

/// The response of an export whose chunks arrive on `rx`: its type, a
/// dated file name (`<stem>-YYYY-MM-DD.<csv|jsonl>`) and, when the plan's
/// cap cut it, `X-TruLayer-Truncated: true`.
pub fn streamed(
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    format: Format,
    stem: &str,
    truncated: bool,
) -> Response {
    let (content_type, extension) = match format {
        Format::Csv => ("text/csv; charset=utf-8", "csv"),
        Format::Jsonl => ("application/x-ndjson", "jsonl"),
    };
    let day = chrono::DateTime::from_timestamp_micros(now_micros())
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default();
    let mut response = attachment(rx, content_type, &format!("{stem}-{day}.{extension}"));
    if truncated {
        response
            .headers_mut()
            .insert(TRUNCATED.clone(), HeaderValue::from_static("true"));
    }
    response
}

/// A file whose chunks arrive on `rx`, offered for download as `filename`.
pub fn attachment(
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    content_type: &'static str,
    filename: &str,
) -> Response {
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, Infallible>(chunk), rx))
    }));
    let disposition = format!("attachment; filename=\"{filename}\"");
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(CONTENT_DISPOSITION, value);
    }
    response
}

/// A CSV field, quoted when it holds a comma, quote or line break.
pub fn csv_field(out: &mut String, field: &str) {
    if field.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&field.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(field);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        let mut out = String::new();
        super::csv_field(&mut out, "plain");
        out.push('|');
        super::csv_field(&mut out, "a,\"b\"\nc");
        assert_eq!(out, "plain|\"a,\"\"b\"\"\nc\"");
    }
}
