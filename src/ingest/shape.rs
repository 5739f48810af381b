//! A body's shape before it is decoded: how many traces, spans and events
//! it holds, read without building them, and the memory decoding it will
//! take, so the request budget is charged before the work is done.

use serde::Deserialize;

/// The lists of a single trace's body, read without building them: how
/// much decoding the body will take is known before it is decoded.
#[derive(Debug, Default, Deserialize)]
pub struct TraceShape {
    // IgnoredAny takes no space: these lists cost nothing per item.
    #[serde(default)]
    spans: Option<Vec<serde::de::IgnoredAny>>,
    #[serde(default)]
    events: Option<Vec<serde::de::IgnoredAny>>,
}

/// The traces of a batch's body, read as [`TraceShape`]s.
#[derive(Debug, Default, Deserialize)]
pub struct BatchShape {
    #[serde(default)]
    traces: Option<Vec<TraceShape>>,
}

impl BatchShape {
    /// Whether the body names `traces` at all.
    pub fn has_traces(&self) -> bool {
        self.traces.is_some()
    }
}

/// How many traces, spans and events a body holds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub traces: usize,
    pub spans: usize,
    pub events: usize,
}

impl From<&TraceShape> for Counts {
    fn from(t: &TraceShape) -> Counts {
        Counts {
            traces: 1,
            spans: t.spans.as_ref().map_or(0, Vec::len),
            events: t.events.as_ref().map_or(0, Vec::len),
        }
    }
}

impl From<&BatchShape> for Counts {
    fn from(b: &BatchShape) -> Counts {
        b.traces
            .iter()
            .flatten()
            .map(Counts::from)
            .fold(Counts::default(), |a, c| Counts {
                traces: a.traces + c.traces,
                spans: a.spans + c.spans,
                events: a.events + c.events,
            })
    }
}

/// Memory a decoded trace takes besides its text, measured on the
/// request types and the stored form they become (see BENCHMARKS.md).
const DECODED_TRACE_BYTES: usize = 1_536;
const DECODED_SPAN_BYTES: usize = 640;
const DECODED_EVENT_BYTES: usize = 384;

impl Counts {
    /// About the memory decoding a JSON body of `body_bytes` with these
    /// items takes beyond the body itself: its text once more, and each
    /// item's own structures.
    pub fn decoded_bytes(&self, body_bytes: usize) -> usize {
        body_bytes
            .saturating_add(self.traces.saturating_mul(DECODED_TRACE_BYTES))
            .saturating_add(self.spans.saturating_mul(DECODED_SPAN_BYTES))
            .saturating_add(self.events.saturating_mul(DECODED_EVENT_BYTES))
    }
}
