//! What the fuzz targets share: the price table the server builds from its
//! default configuration, and the checks on a mapped OTLP request that both
//! OTLP encodings must pass.

use std::sync::OnceLock;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use serde_json::Value;
use trulayer_server::config::Config;
use trulayer_server::otlp::{map_request, MAX_METADATA_BYTES};
use trulayer_server::pricing::Pricing;

/// The prices a server started with the default configuration uses, built
/// once per process as the server builds them once.
pub fn pricing() -> &'static Pricing {
    static PRICING: OnceLock<Pricing> = OnceLock::new();
    PRICING.get_or_init(|| {
        let config = Config::from_toml_str("").expect("the default configuration is valid");
        Pricing::new(&config.pricing)
    })
}

/// A fixed "now" (2026-01-01T00:00:00Z in microseconds), so a run depends
/// on its input alone.
pub const NOW_MICROS: i64 = 1_767_225_600_000_000;

/// Maps a decoded request as the OTLP endpoint does and checks what no
/// request, however hostile, may produce.
pub fn map_and_check(request: ExportTraceServiceRequest) {
    let spans_in: usize = request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    let mapped = map_request(request, pricing());
    let rejected = usize::try_from(mapped.rejected).expect("a count of spans is not negative");
    let spans_out: usize = mapped.traces.iter().map(|(_, t)| t.spans.len()).sum();
    // Each span is refused, or becomes one span, or stands for its trace.
    assert!(
        spans_out + rejected <= spans_in,
        "{spans_in} spans in, {spans_out} out and {rejected} refused"
    );
    assert!(mapped.traces.len() <= spans_in - rejected);
    assert_eq!(rejected > 0, mapped.first_error.is_some());
    for (_, trace) in &mapped.traces {
        assert!(uuid::Uuid::parse_str(&trace.id).is_ok(), "{:?}", trace.id);
        assert_bounded_object(&trace.metadata);
        if let Some(fields) = &trace.fields {
            if let Some(metadata) = &fields.metadata {
                assert_object(metadata);
            }
        }
        for span in &trace.spans {
            assert_bounded_object(&span.metadata);
            let name_chars = span.name.chars().count();
            assert!((1..=1024).contains(&name_chars), "{name_chars} chars");
            assert!(span.latency_ms.is_none_or(|ms| ms >= 0));
            if let (Some(start), Some(end)) = (span.start_time, span.end_time) {
                assert!(start <= end, "span ends before it starts");
            }
            assert!(span.cost.is_none_or(f64::is_finite));
        }
        for event in &trace.events {
            assert!(event.span_id.is_some());
            assert!(["debug", "info", "warn", "error"].contains(&event.level.as_str()));
        }
    }
}

fn assert_object(text: &str) {
    let value: Value = serde_json::from_str(text).expect("metadata is JSON");
    assert!(value.is_object(), "metadata is not an object: {text}");
}

/// Metadata is a JSON object of at most `MAX_METADATA_BYTES`.
fn assert_bounded_object(text: &str) {
    assert!(text.len() <= MAX_METADATA_BYTES, "{} bytes", text.len());
    assert_object(text);
}
