//! OTLP/HTTP on the wire: the body's encoding, gzip held to the size
//! limit, decoding an `ExportTraceServiceRequest`, and the answer in the
//! request's own encoding.

use std::borrow::Cow;
use std::io::Read;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

/// How the request body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("the decompressed body exceeds the limit of {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    Invalid(String),
}

/// Inflates a gzip body, refusing to produce more than `limit` bytes: a
/// small bomb is stopped after `limit` bytes, not after it has exploded.
pub fn gunzip(body: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    flate2::read::GzDecoder::new(body)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::Invalid(format!("invalid gzip body: {e}")))?;
    if out.len() > limit {
        return Err(DecodeError::TooLarge(limit));
    }
    Ok(out)
}

/// Decodes the (already decompressed) body.
pub fn decode(body: &[u8], encoding: Encoding) -> Result<ExportTraceServiceRequest, DecodeError> {
    match encoding {
        Encoding::Protobuf => ExportTraceServiceRequest::decode(body)
            .map_err(|e| DecodeError::Invalid(format!("invalid protobuf body: {e}"))),
        Encoding::Json => {
            if body.iter().all(u8::is_ascii_whitespace) {
                return Ok(ExportTraceServiceRequest::default());
            }
            serde_json::from_slice(body)
                .map_err(|e| DecodeError::Invalid(format!("invalid OTLP JSON body: {e}")))
        }
    }
}

/// The body the exporter gets back: `partial_success` only when spans were
/// refused.
pub fn response_body(mapped_rejected: i64, error: Option<&str>, encoding: Encoding) -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTracePartialSuccess, ExportTraceServiceResponse,
    };
    match encoding {
        Encoding::Protobuf => ExportTraceServiceResponse {
            partial_success: (mapped_rejected > 0).then(|| ExportTracePartialSuccess {
                rejected_spans: mapped_rejected,
                error_message: error.unwrap_or_default().to_owned(),
            }),
        }
        .encode_to_vec(),
        Encoding::Json => {
            let body = if mapped_rejected > 0 {
                serde_json::json!({"partialSuccess": {
                    "rejectedSpans": mapped_rejected,
                    "errorMessage": error.unwrap_or_default(),
                }})
            } else {
                serde_json::json!({})
            };
            body.to_string().into_bytes()
        }
    }
}

/// For callers holding a body that may or may not need inflating.
pub fn inflate(body: &[u8], gzip: bool, limit: usize) -> Result<Cow<'_, [u8]>, DecodeError> {
    if gzip {
        gunzip(body, limit).map(Cow::Owned)
    } else if body.len() > limit {
        Err(DecodeError::TooLarge(limit))
    } else {
        Ok(Cow::Borrowed(body))
    }
}
