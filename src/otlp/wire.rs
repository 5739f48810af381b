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

/// How many spans the (already decompressed) body holds, read without
/// decoding it, so that a request of too many spans is refused before it
/// is built in memory. `None` when the body is malformed: decoding it then
/// says how.
pub fn count_spans(body: &[u8], encoding: Encoding) -> Option<usize> {
    match encoding {
        Encoding::Protobuf => {
            // ExportTraceServiceRequest.resource_spans = 1 →
            // ResourceSpans.scope_spans = 2 → ScopeSpans.spans = 2.
            let mut spans = 0usize;
            for resource in fields(body, 1) {
                for scope in fields(resource?, 2) {
                    for span in fields(scope?, 2) {
                        span?;
                        spans += 1;
                    }
                }
            }
            Some(spans)
        }
        Encoding::Json => {
            use serde::de::IgnoredAny;
            #[derive(serde::Deserialize)]
            struct Request {
                #[serde(rename = "resourceSpans", alias = "resource_spans", default)]
                resource_spans: Option<Vec<Resource>>,
            }
            #[derive(serde::Deserialize)]
            struct Resource {
                #[serde(rename = "scopeSpans", alias = "scope_spans", default)]
                scope_spans: Option<Vec<Scope>>,
            }
            #[derive(serde::Deserialize)]
            struct Scope {
                // IgnoredAny takes no space: the list costs nothing per span.
                #[serde(default)]
                spans: Option<Vec<IgnoredAny>>,
            }
            if body.iter().all(u8::is_ascii_whitespace) {
                return Some(0);
            }
            let request: Request = serde_json::from_slice(body).ok()?;
            Some(
                request
                    .resource_spans
                    .unwrap_or_default()
                    .iter()
                    .flat_map(|r| r.scope_spans.iter().flatten())
                    .map(|s| s.spans.as_ref().map_or(0, Vec::len))
                    .sum(),
            )
        }
    }
}

/// The length-delimited values of field `wanted` in a protobuf message;
/// an item is `None` where the message is malformed.
fn fields(message: &[u8], wanted: u64) -> impl Iterator<Item = Option<&[u8]>> {
    let mut rest = message;
    let mut broken = false;
    std::iter::from_fn(move || {
        while !rest.is_empty() && !broken {
            let Some(key) = varint(&mut rest) else {
                broken = true;
                return Some(None);
            };
            let (field, wire_type) = (key >> 3, key & 7);
            let skipped = match wire_type {
                0 => varint(&mut rest).map(|_| None),
                1 => take(&mut rest, 8).map(|_| None),
                5 => take(&mut rest, 4).map(|_| None),
                2 => varint(&mut rest)
                    .and_then(|len| usize::try_from(len).ok())
                    .and_then(|len| take(&mut rest, len))
                    .map(|value| (field == wanted).then_some(value)),
                _ => None,
            };
            match skipped {
                Some(Some(value)) => return Some(Some(value)),
                Some(None) => {}
                None => {
                    broken = true;
                    return Some(None);
                }
            }
        }
        None
    })
}

fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = buf.split_first()?;
        *buf = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(value);
        }
    }
    None
}

fn take<'a>(buf: &mut &'a [u8], len: usize) -> Option<&'a [u8]> {
    if buf.len() < len {
        return None;
    }
    let (value, rest) = buf.split_at(len);
    *buf = rest;
    Some(value)
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

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    /// Resources and scopes of uneven sizes, with attributes and events
    /// around the spans, as exporters send them.
    fn request(shape: &[&[usize]]) -> ExportTraceServiceRequest {
        let attribute = |key: &str| KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue("x".repeat(300))),
            }),
            ..Default::default()
        };
        ExportTraceServiceRequest {
            resource_spans: shape
                .iter()
                .map(|scopes| ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![attribute("service.name")],
                        ..Default::default()
                    }),
                    scope_spans: scopes
                        .iter()
                        .map(|&n| ScopeSpans {
                            spans: (0..n)
                                .map(|i| Span {
                                    trace_id: vec![7; 16],
                                    span_id: (i as u64 + 1).to_be_bytes().to_vec(),
                                    name: format!("span {i}"),
                                    start_time_unix_nano: 1,
                                    end_time_unix_nano: 2,
                                    attributes: vec![attribute("gen_ai.prompt")],
                                    ..Default::default()
                                })
                                .collect(),
                            schema_url: "https://opentelemetry.io/schemas/1.30.0".into(),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect(),
        }
    }

    #[test]
    fn spans_are_counted_without_decoding_in_both_encodings() {
        for shape in [&[][..], &[&[0][..]], &[&[3, 0, 2], &[1], &[]], &[&[200]]] {
            let request = request(shape);
            let expected: usize = shape.iter().flat_map(|s| s.iter()).sum();
            let protobuf = request.encode_to_vec();
            assert_eq!(
                count_spans(&protobuf, Encoding::Protobuf),
                Some(expected),
                "{shape:?}"
            );
            let json = serde_json::to_vec(&request).expect("OTLP JSON");
            assert_eq!(
                count_spans(&json, Encoding::Json),
                Some(expected),
                "{shape:?}"
            );
            let decoded = decode(&json, Encoding::Json).expect("decodes");
            assert_eq!(decoded, request, "the JSON is what the server decodes");
        }
        assert_eq!(count_spans(b"  ", Encoding::Json), Some(0));
    }

    #[test]
    fn a_malformed_body_is_left_for_the_decoder_to_name() {
        let protobuf = request(&[&[5]]).encode_to_vec();
        let cut = &protobuf[..protobuf.len() - 7];
        assert_eq!(count_spans(cut, Encoding::Protobuf), None);
        assert!(decode(cut, Encoding::Protobuf).is_err());
        // A group wire type and an endless varint.
        assert_eq!(count_spans(&[0x0b, 0x00], Encoding::Protobuf), None);
        let endless = [[0x08].as_slice(), &[0xff; 11]].concat();
        assert_eq!(count_spans(&endless, Encoding::Protobuf), None);
        assert_eq!(count_spans(b"{\"resourceSpans\": [", Encoding::Json), None);
    }
}
