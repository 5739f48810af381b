//! The batches the crash run sends, and what it remembers of each trace to
//! check it back: its id, tags, session, span count and name.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::ops::RangeInclusive;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use uuid::Uuid;

/// Sessions and customers come from small pools so that each filter value
/// matches a few traces in the short run and hundreds in the long one.
pub const SESSIONS: u32 = 1_000;
pub const CUSTOMERS: u32 = 200;
const ENVS: [&str; 3] = ["prod", "staging", "dev"];
const NAMES: [&str; 4] = ["chat", "summarise", "qa", "agent_run"];
const SPAN_SHAPES: [(&str, &str); 4] = [
    ("plan", "llm"),
    ("search_docs", "retrieval"),
    ("call_tool", "tool"),
    ("answer", "llm"),
];
const TEXT_VARIANTS: usize = 32;
const WORDS: [&str; 16] = [
    "the", "model", "returned", "a", "summary", "of", "customer", "ticket", "about", "billing",
    "refund", "order", "shipping", "account", "please", "explain",
];

/// What the run remembers of a trace it sent.
#[derive(Clone, Copy, Debug)]
pub struct Sent {
    pub id: Uuid,
    /// The server run the trace was first sent in, and its `cycle` tag.
    pub cycle: u32,
    /// A tagged trace carries `cycle`, `customer` and `env`; the others none.
    pub tagged: bool,
    pub customer: u32,
    pub env: u8,
    pub session: Option<u32>,
    pub spans: u8,
    pub name: u8,
}

impl Sent {
    pub fn tag_map(&self) -> BTreeMap<String, String> {
        if !self.tagged {
            return BTreeMap::new();
        }
        BTreeMap::from([
            ("cycle".to_owned(), self.cycle.to_string()),
            ("customer".to_owned(), customer_name(self.customer)),
            ("env".to_owned(), ENVS[usize::from(self.env)].to_owned()),
        ])
    }

    pub fn session_id(&self) -> Option<String> {
        self.session.map(session_name)
    }

    pub fn name(&self) -> &'static str {
        NAMES[usize::from(self.name)]
    }
}

pub fn session_name(session: u32) -> String {
    format!("crash-session-{session:04}")
}

pub fn customer_name(customer: u32) -> String {
    format!("cust-{customer:03}")
}

/// One `POST /v1/ingest/batch` request: its traces and its exact body, kept
/// so that the same bytes can be sent again.
pub struct Batch {
    pub traces: Vec<Sent>,
    pub body: Bytes,
}

/// Makes batches from its own seeded generator, one per client.
pub struct Generator {
    rng: StdRng,
    inputs: Vec<String>,
    outputs: Vec<String>,
}

impl Generator {
    pub fn new(seed: u64) -> Generator {
        let mut rng = StdRng::seed_from_u64(seed);
        let inputs = (0..TEXT_VARIANTS).map(|_| text(&mut rng, 200)).collect();
        let outputs = (0..TEXT_VARIANTS).map(|_| text(&mut rng, 400)).collect();
        Generator {
            rng,
            inputs,
            outputs,
        }
    }

    pub fn batch(&mut self, cycle: u32, sizes: &RangeInclusive<usize>) -> Batch {
        let size = self.rng.random_range(sizes.clone());
        let traces: Vec<Sent> = (0..size).map(|_| self.trace(cycle)).collect();
        let body = self.body(&traces);
        Batch {
            traces,
            body: Bytes::from(body),
        }
    }

    fn trace(&mut self, cycle: u32) -> Sent {
        let rng = &mut self.rng;
        Sent {
            // Time-ordered, as the SDK makes them.
            id: Uuid::now_v7(),
            cycle,
            tagged: rng.random_bool(0.7),
            customer: rng.random_range(0..CUSTOMERS),
            env: rng.random_range(0..ENVS.len() as u8),
            session: rng.random_bool(0.5).then(|| rng.random_range(0..SESSIONS)),
            spans: rng.random_range(0..=SPAN_SHAPES.len() as u8),
            name: rng.random_range(0..NAMES.len() as u8),
        }
    }

    fn body(&mut self, traces: &[Sent]) -> String {
        let now = Utc::now().timestamp_micros();
        let mut out = String::with_capacity(traces.len() * 3_000);
        out.push_str("{\"traces\":[");
        for (i, t) in traces.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let started = now - 3_000_000 + self.rng.random_range(0..1_000_000);
            let _ = write!(
                out,
                "{{\"id\":\"{}\",\"name\":\"{}\",\"input\":\"{}\",\"output\":\"{}\",\"model\":\"gpt-4o-mini\"",
                t.id,
                t.name(),
                self.inputs[self.rng.random_range(0..TEXT_VARIANTS)],
                self.outputs[self.rng.random_range(0..TEXT_VARIANTS)],
            );
            if let Some(session) = t.session_id() {
                let _ = write!(out, ",\"session_id\":\"{session}\"");
            }
            if t.tagged {
                out.push_str(",\"tags\":{");
                for (j, (key, value)) in t.tag_map().iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "\"{key}\":\"{value}\"");
                }
                out.push('}');
            }
            let mut at = started;
            let _ = write!(out, ",\"started_at\":\"{}\",\"spans\":[", time(at));
            for (j, (name, kind)) in SPAN_SHAPES[..usize::from(t.spans)].iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                let end = at + self.rng.random_range(50_000..600_000);
                let _ = write!(
                    out,
                    "{{\"name\":\"{name}\",\"type\":\"{kind}\",\"input\":\"{}\",\"output\":\"{}\",\
                     \"model\":\"gpt-4o-mini\",\"prompt_tokens\":{},\"completion_tokens\":{},\
                     \"start_time\":\"{}\",\"end_time\":\"{}\"}}",
                    &self.inputs[self.rng.random_range(0..TEXT_VARIANTS)][..100],
                    &self.outputs[self.rng.random_range(0..TEXT_VARIANTS)][..200],
                    self.rng.random_range(100..1_000),
                    self.rng.random_range(20..400),
                    time(at),
                    time(end),
                );
                at = end;
            }
            let _ = write!(out, "],\"ended_at\":\"{}\"}}", time(at + 1_000));
        }
        out.push_str("]}");
        out
    }
}

fn time(micros: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(micros)
        .expect("a time in range")
        .to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Prompt-like text of about `target` characters: letters and spaces only,
/// so it goes into JSON as it is.
fn text(rng: &mut StdRng, target: usize) -> String {
    let mut s = String::with_capacity(target + 16);
    while s.len() < target {
        s.push_str(WORDS[rng.random_range(0..WORDS.len())]);
        s.push(' ');
    }
    s.truncate(target);
    s
}
