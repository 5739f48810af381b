//! `POST /v1/ingest` and `POST /v1/ingest/batch`: the body parsed as the
//! handlers parse it, then validated into the traces the store is given.
#![no_main]

use std::collections::HashSet;

use fuzz_support::{pricing, NOW_MICROS};
use libfuzzer_sys::fuzz_target;
use trulayer_server::error::AppError;
use trulayer_server::http::parse_json;
use trulayer_server::ingest::{check_batch_size, BatchRequest, TraceRequest, MAX_SPANS, MAX_TAGS};

fuzz_target!(|body: &[u8]| {
    match parse_json::<TraceRequest>(body) {
        Ok(request) => validate(request, ""),
        Err(e) => assert_client_error(&e),
    }
    match parse_json::<BatchRequest>(body) {
        Ok(batch) => {
            if check_batch_size(batch.traces.len()).is_ok() {
                for (i, request) in batch.traces.into_iter().enumerate() {
                    validate(request, &format!("traces[{i}]."));
                }
            }
        }
        Err(e) => assert_client_error(&e),
    }
});

/// A body the parser refuses is the client's fault: 400 or 422.
fn assert_client_error(e: &AppError) {
    assert!(
        matches!(e, AppError::BadRequest { .. } | AppError::Unprocessable(_)),
        "{e:?}"
    );
}

fn validate(request: TraceRequest, at: &str) {
    let spans_in = request.spans.as_ref().map_or(0, Vec::len);
    let events_in = request.events.as_ref().map_or(0, Vec::len);
    match request.into_new_trace(at, NOW_MICROS, pricing()) {
        Ok(trace) => {
            // Nothing is dropped or invented on the way to the store.
            assert_eq!(trace.spans.len(), spans_in);
            assert_eq!(trace.events.len(), events_in);
            assert!(spans_in <= MAX_SPANS);
            assert!(uuid::Uuid::parse_str(&trace.id).is_ok());
            let ids: HashSet<&str> = trace.spans.iter().map(|s| s.id.as_str()).collect();
            assert_eq!(ids.len(), trace.spans.len(), "span ids are unique");
            assert!(trace.tags.len() <= MAX_TAGS);
            assert!(trace.latency_ms.is_none_or(|ms| ms >= 0));
            // A sum of non-negative costs: never negative, never NaN.
            assert!(trace.cost.is_none_or(|c| c >= 0.0), "{:?}", trace.cost);
            assert!(trace.total_token_count >= 0);
            for span in &trace.spans {
                assert!(!span.name.is_empty());
                assert!(span.latency_ms.is_none_or(|ms| ms >= 0));
                assert!(span.cost.is_none_or(|c| c >= 0.0), "{:?}", span.cost);
            }
        }
        Err(invalid) => assert!(
            invalid.field.starts_with(at) && invalid.field.len() > at.len(),
            "the error names a field of the trace: {invalid}"
        ),
    }
}
