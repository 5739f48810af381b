//! Scale benchmark of the release-built `trulayer-server`: full-text search,
//! sessions and storage on a database of `BENCH_SCALE_TRACES` traces,
//! driven over HTTP on 127.0.0.1 only.
//!
//! Run: `cargo bench --bench scale` (the bench profile is `release`).
//!
//! For each corpus (`vocab`, then `prompt`, each on its own data directory):
//! 1. Three organisations: the bootstrap one ("main", sessions of a few
//!    traces each, about N/10 sessions in all), one whose traces carry no
//!    session, and one with three huge sessions holding 30 % of its traces;
//!    the other two are made with `trulayer-server admin create-org`.
//! 2. Fill: 8 clients post batches of 100 traces × 4 spans to
//!    `/v1/ingest/batch` until N traces are stored (3 batches in 5 to the
//!    main organisation); the rate of the first 10 % against the last 10 %.
//! 3. Restart and wait for the search index to catch up with the fill.
//! 4. Storage after a clean stop: database and WAL bytes per trace, and the
//!    biggest tables and indexes from SQLite's `dbstat`.
//! 5. Restart, then time each query kind (sequential requests) and check
//!    search results against what the generator sent (every listed trace
//!    holds every word; a rare word's hits over all pages are exactly the
//!    traces that carried it).
//! 6. Sustained ingest for `BENCH_SCALE_SUSTAIN_SECONDS` at 8 connections,
//!    with a trace carrying a unique word sent every second: ingest p99 and
//!    the time from its acknowledgement to the first search that finds it.
//! 7. The same traces over JSON, then over OTLP protobuf, for
//!    `BENCH_SCALE_OTLP_SECONDS` each: the ratio of their traces/s.
//!
//! Environment knobs:
//!
//! | variable                        | default | meaning                                                   |
//! |---------------------------------|---------|-----------------------------------------------------------|
//! | `BENCH_SCALE_TRACES`            | 1000000 | traces in the database after the fill (per corpus)        |
//! | `BENCH_CORPUS`                  | both    | `vocab`, `prompt`, or `both` (one after the other)        |
//! | `BENCH_CLIENTS`                 | 8       | concurrent ingest clients                                 |
//! | `BENCH_FILL_MAX_SECONDS`        | 5400    | the fill stops here even if short of N, and says so       |
//! | `BENCH_SCALE_IDLE_SECONDS`      | 0       | idle seconds between the restart and the queries          |
//! | `BENCH_SCALE_REQUESTS`          | 200     | timed requests per query kind (after 5 warm-up requests)  |
//! | `BENCH_SCALE_QUERY_MAX_SECONDS` | 15      | time limit per query kind                                 |
//! | `BENCH_SCALE_SUSTAIN_SECONDS`   | 60      | the sustained ingest with search probes                   |
//! | `BENCH_SCALE_OTLP_SECONDS`      | 20      | each of the JSON and OTLP windows                         |
//! | `BENCH_KEEP_DIR`                | unset   | put the data directories under this directory and keep them |
//! | `BENCH_LOG_LEVEL`               | warn    | the servers' log level                                    |
//! | `BENCH_SERVER`                  | unset   | run this server binary instead of this build's            |
//!
//! Every loop is bounded by a count and a deadline; servers are stopped with
//! SIGTERM (SIGKILL after a grace period) even when the bench panics. The
//! exit status is 1 when a search result is not exact.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use serde_json::Value;
use uuid::Uuid;

mod support;
use support::{
    customer_name, data_root, env_or, error_message, file_size, http_client, log_tail, ms,
    otlp_request, post_batch, push_time, server_binary, OtlpSpan, OtlpTrace, Protocol, Rng, Server,
    Stats, API_KEY, BATCH, CUSTOMERS, ENVS, ERROR_PERCENT, MODELS, SPANS, SPAN_SHAPES, TRACE_NAMES,
    WORDS,
};

const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];
const TIERS: [&str; 3] = ["free", "pro", "enterprise"];
/// The `vocab` corpus's words beyond the ingest bench's (`WORDS`); with
/// them, the words of the `prompt` corpus's system prompt.
const MORE_WORDS: [&str; 6] = ["status", "update", "request", "for", "and", "with"];
/// Words added to a trace's input (and its tool span's) now and then:
/// (word, one trace in how many). No generated text holds them otherwise.
const MID_WORDS: [(&str, u64); 2] = [("invoice", 50), ("french", 50)];
const RARE_WORDS: [(&str, u64); 2] = [("quokka", 20_000), ("kumquat", 2_000)];
/// In no trace.
const ABSENT: &str = "zanzibar";
/// Syllables of the `prompt` corpus's larger vocabulary: consonant-vowel
/// pairs only, so none of its words is one of the words above.
const CONSONANTS: &[u8] = b"bdfgklmnprstvz";
const VOWELS: &[u8] = b"aeiou";
const LARGE_VOCABULARY: usize = 2_000;
const FRAGMENTS: usize = 4_096;
const QUERY_WARMUP: usize = 5;
const SESSIONS_HUGE: u64 = 3;

// ---------------------------------------------------------------- knobs ----

struct Knobs {
    traces: u64,
    corpora: Vec<Kind>,
    clients: usize,
    fill_max: Duration,
    idle: Duration,
    requests: usize,
    query_max: Duration,
    sustain: Duration,
    otlp: Duration,
    keep_dir: Option<PathBuf>,
}

impl Knobs {
    fn from_env() -> Knobs {
        let secs = |name: &str, default: f64| Duration::from_secs_f64(env_or(name, default));
        let corpora = match std::env::var("BENCH_CORPUS").as_deref() {
            Ok("vocab") => vec![Kind::Vocab],
            Ok("prompt") => vec![Kind::Prompt],
            Ok("both") | Ok("") | Err(_) => vec![Kind::Vocab, Kind::Prompt],
            Ok(other) => panic!("BENCH_CORPUS={other:?}: use vocab, prompt or both"),
        };
        Knobs {
            traces: env_or("BENCH_SCALE_TRACES", 1_000_000u64).max(BATCH as u64),
            corpora,
            clients: env_or("BENCH_CLIENTS", 8usize).max(1),
            fill_max: secs("BENCH_FILL_MAX_SECONDS", 5400.0),
            idle: secs("BENCH_SCALE_IDLE_SECONDS", 0.0),
            requests: env_or("BENCH_SCALE_REQUESTS", 200usize).max(1),
            query_max: secs("BENCH_SCALE_QUERY_MAX_SECONDS", 15.0),
            sustain: secs("BENCH_SCALE_SUSTAIN_SECONDS", 60.0),
            otlp: secs("BENCH_SCALE_OTLP_SECONDS", 20.0),
            keep_dir: std::env::var_os("BENCH_KEEP_DIR").map(PathBuf::from),
        }
    }
}

// ------------------------------------------------------------ test data ----

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Inputs and outputs drawn from a few dozen words.
    Vocab,
    /// The same ~300-word system prompt first in every input, then a user
    /// message from a larger vocabulary.
    Prompt,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Vocab => "vocab",
            Kind::Prompt => "prompt",
        }
    }
}

/// One of the few dozen words, each in most traces.
fn vocab_word(rng: &mut Rng) -> &'static str {
    let i = rng.index(WORDS.len() + MORE_WORDS.len());
    WORDS.get(i).unwrap_or_else(|| &MORE_WORDS[i - WORDS.len()])
}

/// Text fragments of about 100 characters that texts are made of, so that
/// texts vary (4,096² pairs and more) at the cost of a copy.
struct Corpus {
    kind: Kind,
    system_prompt: String,
    fragments: Vec<String>,
}

impl Corpus {
    fn new(kind: Kind, rng: &mut Rng) -> Corpus {
        let large: Vec<String> = (0..LARGE_VOCABULARY)
            .map(|_| {
                let mut w = String::new();
                for _ in 0..2 + rng.index(3) {
                    w.push(CONSONANTS[rng.index(CONSONANTS.len())] as char);
                    w.push(VOWELS[rng.index(VOWELS.len())] as char);
                }
                w
            })
            .collect();
        let fragment = |rng: &mut Rng| {
            let mut s = String::with_capacity(120);
            while s.len() < 100 {
                match kind {
                    Kind::Vocab => s.push_str(vocab_word(rng)),
                    Kind::Prompt => s.push_str(&large[rng.index(large.len())]),
                }
                s.push(' ');
            }
            s
        };
        let fragments = (0..FRAGMENTS).map(|_| fragment(rng)).collect();
        // The system prompt: the few dozen words, "refund policy" among
        // them, ~300 words.
        let mut prompt_rng = Rng(0x5eed);
        let mut system_prompt =
            String::from("You are a support assistant. Follow the refund policy. ");
        let mut words = 8;
        while words < 300 {
            system_prompt.push_str(vocab_word(&mut prompt_rng));
            system_prompt.push(' ');
            words += 1;
        }
        Corpus {
            kind,
            system_prompt: if kind == Kind::Prompt {
                system_prompt
            } else {
                String::new()
            },
            fragments,
        }
    }

    /// A text of about `target` characters (±10 %).
    fn text(&self, rng: &mut Rng, target: usize) -> String {
        let len = target * 9 / 10 + rng.index(target / 5 + 1);
        let mut s = String::with_capacity(len + 120);
        while s.len() < len {
            s.push_str(&self.fragments[rng.index(self.fragments.len())]);
        }
        s.truncate(len);
        s.truncate(s.trim_end().len());
        s
    }

    /// A text of `low` to `high` characters.
    fn text_between(&self, rng: &mut Rng, low: usize, high: usize) -> String {
        let target = low + rng.index(high - low);
        self.text(rng, target)
    }

    /// A user's message: 200-400 characters (vocab) or 100-300 after the
    /// system prompt (prompt).
    fn input(&self, rng: &mut Rng) -> String {
        match self.kind {
            Kind::Vocab => self.text_between(rng, 200, 400),
            Kind::Prompt => {
                let mut s = self.system_prompt.clone();
                s.push_str(&self.text_between(rng, 100, 300));
                s
            }
        }
    }
}

/// The three organisations.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tenant {
    /// Sessions of a few traces each (about N/10 of them).
    Main = 0,
    /// No sessions at all.
    NoSessions = 1,
    /// Three sessions hold 30 % of the traces.
    Huge = 2,
}

const TENANTS: [Tenant; 3] = [Tenant::Main, Tenant::NoSessions, Tenant::Huge];

impl Tenant {
    /// Batches go 3 in 5 to the main organisation, 1 in 5 to each other.
    fn of_batch(n: u64) -> Tenant {
        match n % 5 {
            3 => Tenant::NoSessions,
            4 => Tenant::Huge,
            _ => Tenant::Main,
        }
    }

    fn share(self) -> f64 {
        match self {
            Tenant::Main => 0.6,
            _ => 0.2,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Tenant::Main => "main (many small sessions)",
            Tenant::NoSessions => "no sessions",
            Tenant::Huge => "3 huge sessions",
        }
    }
}

/// What the generator knows it sent: traces per tenant holding each rare
/// word.
#[derive(Default)]
struct Truth {
    rare: [[AtomicU64; RARE_WORDS.len()]; 3],
}

struct GenSpan {
    id: Uuid,
    name: &'static str,
    kind: &'static str,
    input: String,
    output: String,
    prompt_tokens: i64,
    completion_tokens: i64,
    start: i64,
    end: i64,
}

struct GenTrace {
    id: Uuid,
    name: &'static str,
    input: String,
    output: String,
    model: &'static str,
    session: Option<String>,
    env: &'static str,
    customer: u64,
    region: &'static str,
    tier: &'static str,
    error: Option<String>,
    started: i64,
    ended: i64,
    spans: Vec<GenSpan>,
}

/// Session counts for a database of `n` traces.
struct Sessions {
    main: u64,
    huge_rest: u64,
}

impl Sessions {
    fn for_traces(n: u64) -> Sessions {
        Sessions {
            // ~6 traces a session: N/10 sessions in all.
            main: (n / 10).max(1),
            huge_rest: (n / 25).max(1),
        }
    }
}

fn gen_trace(
    c: &Corpus,
    rng: &mut Rng,
    now: i64,
    tenant: Tenant,
    sessions: &Sessions,
    truth: Option<&Truth>,
) -> GenTrace {
    let started = now - 5_000_000 - rng.below(1_000_000) as i64;
    let model = MODELS[rng.index(MODELS.len())];
    let mut input = c.input(rng);
    let output = c.text_between(rng, 200, 400);
    let mut extra = String::new();
    for (word, one_in) in MID_WORDS {
        if rng.below(one_in) == 0 {
            extra.push(' ');
            extra.push_str(word);
        }
    }
    for (i, (word, one_in)) in RARE_WORDS.iter().enumerate() {
        if rng.below(*one_in) == 0 {
            extra.push(' ');
            extra.push_str(word);
            if let Some(truth) = truth {
                truth.rare[tenant as usize][i].fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    input.push_str(&extra);
    let mut at = started;
    let spans = SPAN_SHAPES
        .iter()
        .map(|(name, kind)| {
            let duration = 50_000 + rng.below(950_000) as i64;
            let (span_in, span_out) = match *name {
                "plan" => (input.clone(), c.text(rng, 300)),
                "search_docs" => (c.text(rng, 100), c.text(rng, 400)),
                "call_tool" => (c.text(rng, 100) + &extra, c.text(rng, 200)),
                _ => (
                    format!("{}{}", c.system_prompt, c.text(rng, 300)),
                    output.clone(),
                ),
            };
            let span = GenSpan {
                id: Uuid::now_v7(),
                name,
                kind,
                input: span_in,
                output: span_out,
                prompt_tokens: 100 + rng.below(900) as i64,
                completion_tokens: 20 + rng.below(400) as i64,
                start: at,
                end: at + duration,
            };
            at += duration;
            span
        })
        .collect();
    let session = match tenant {
        Tenant::Main => Some(format!("m-{}", rng.below(sessions.main))),
        Tenant::NoSessions => None,
        Tenant::Huge if rng.below(10) < 3 => Some(format!("huge-{}", rng.below(SESSIONS_HUGE))),
        Tenant::Huge => Some(format!("h-{}", rng.below(sessions.huge_rest))),
    };
    GenTrace {
        id: Uuid::now_v7(),
        name: TRACE_NAMES[rng.index(TRACE_NAMES.len())],
        input,
        output,
        model,
        session,
        env: ENVS[rng.index(ENVS.len())],
        customer: rng.below(CUSTOMERS),
        region: REGIONS[rng.index(REGIONS.len())],
        tier: TIERS[rng.index(TIERS.len())],
        error: (rng.below(100) < ERROR_PERCENT).then(|| error_message(rng)),
        started,
        ended: at,
        spans,
    }
}

/// The `/v1/ingest/batch` body for `traces`. Texts are ASCII letters,
/// spaces and commas, so they go into JSON without escaping.
fn batch_body(traces: &[GenTrace]) -> Vec<u8> {
    let mut out = String::with_capacity(traces.len() * 6_000);
    out.push_str("{\"traces\":[");
    for (i, t) in traces.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            "{{\"id\":\"{}\",\"name\":\"{}\",\"input\":\"{}\",\"output\":\"{}\",\"model\":\"{}\",",
            t.id, t.name, t.input, t.output, t.model,
        );
        if let Some(session) = &t.session {
            let _ = write!(out, "\"session_id\":\"{session}\",");
        }
        let _ = write!(
            out,
            "\"tags\":{{\"customer\":\"{}\",\"env\":\"{}\"}},\
             \"metadata\":{{\"region\":\"{}\",\"user_tier\":\"{}\",\"request_id\":\"r-{}\"}},\"started_at\":",
            customer_name(t.customer),
            t.env,
            t.region,
            t.tier,
            t.id.simple()
        );
        push_time(&mut out, t.started);
        out.push_str(",\"ended_at\":");
        push_time(&mut out, t.ended);
        if let Some(error) = &t.error {
            let _ = write!(out, ",\"error\":\"{error}\"");
        }
        out.push_str(",\"spans\":[");
        for (j, s) in t.spans.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            let _ = write!(
                out,
                "{{\"id\":\"{}\",\"name\":\"{}\",\"type\":\"{}\",\"input\":\"{}\",\"output\":\"{}\",\
                 \"model\":\"{}\",\"prompt_tokens\":{},\"completion_tokens\":{},\"start_time\":",
                s.id,
                s.name,
                s.kind,
                s.input,
                s.output,
                t.model,
                s.prompt_tokens,
                s.completion_tokens
            );
            push_time(&mut out, s.start);
            out.push_str(",\"end_time\":");
            push_time(&mut out, s.end);
            out.push('}');
        }
        out.push_str("]}");
    }
    out.push_str("]}");
    out.into_bytes()
}

/// The same traces as an OTLP `ExportTraceServiceRequest` in protobuf.
fn otlp_body(traces: &[GenTrace]) -> Vec<u8> {
    let view: Vec<OtlpTrace<'_>> = traces
        .iter()
        .map(|t| OtlpTrace {
            id: t.id,
            name: t.name,
            model: t.model,
            session: t.session.as_deref(),
            customer: t.customer,
            env: t.env,
            error: t.error.as_deref(),
            spans: t
                .spans
                .iter()
                .map(|s| OtlpSpan {
                    id: s.id,
                    name: s.name,
                    kind: s.kind,
                    input: &s.input,
                    output: &s.output,
                    prompt_tokens: s.prompt_tokens,
                    completion_tokens: s.completion_tokens,
                    start: s.start,
                    end: s.end,
                })
                .collect(),
        })
        .collect();
    otlp_request(&view)
}

// ----------------------------------------------------------- HTTP ingest ----

/// A known trace: its tenant, id and session.
#[derive(Clone)]
struct Sample {
    tenant: Tenant,
    id: Uuid,
    session: Option<String>,
}

#[derive(Default)]
struct ClientOut {
    latencies_ms: Vec<f64>,
    /// When each acknowledged batch completed.
    completions: Vec<Instant>,
    failures: u64,
    failure_samples: Vec<String>,
    samples: Vec<Sample>,
}

struct Plan {
    base: String,
    keys: [String; 3],
    corpus: Arc<Corpus>,
    sessions: Sessions,
    truth: Option<Arc<Truth>>,
    protocol: Protocol,
    /// Batches still to send, shared by the clients.
    budget: AtomicU64,
    /// Batches started so far (which tenant a batch goes to).
    started: AtomicU64,
    /// Traces acknowledged so far.
    acknowledged: AtomicU64,
    /// Batches completing in `[window.0, window.1]` count for the latency;
    /// none start after `window.1`.
    window: (Instant, Instant),
    sample_every: u64,
}

async fn ingest_client(plan: Arc<Plan>) -> ClientOut {
    let client = http_client();
    let base = &plan.base;
    let url = format!("{base}{}", plan.protocol.endpoint().0);
    let mut rng = Rng::seeded();
    let mut out = ClientOut::default();
    let mut seen = 0u64;
    let (from, until) = plan.window;
    while Instant::now() < until {
        if plan
            .budget
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1))
            .is_err()
        {
            break;
        }
        let tenant = Tenant::of_batch(plan.started.fetch_add(1, Ordering::Relaxed));
        let now = chrono::Utc::now().timestamp_micros();
        let batch: Vec<GenTrace> = (0..BATCH)
            .map(|_| {
                gen_trace(
                    &plan.corpus,
                    &mut rng,
                    now,
                    tenant,
                    &plan.sessions,
                    plan.truth.as_deref(),
                )
            })
            .collect();
        let body = match plan.protocol {
            Protocol::Json => batch_body(&batch),
            Protocol::Otlp => otlp_body(&batch),
        };
        let sent = Instant::now();
        let key = &plan.keys[tenant as usize];
        let outcome = post_batch(&client, &url, key, plan.protocol, body, BATCH).await;
        let done = Instant::now();
        match outcome {
            Ok(()) => {
                plan.acknowledged.fetch_add(BATCH as u64, Ordering::Relaxed);
                out.completions.push(done);
                if done >= from && done <= until {
                    out.latencies_ms.push(ms(done - sent));
                }
                for t in &batch {
                    seen += 1;
                    if plan.sample_every > 0 && seen.is_multiple_of(plan.sample_every) {
                        out.samples.push(Sample {
                            tenant,
                            id: t.id,
                            session: t.session.clone(),
                        });
                    }
                }
            }
            Err(message) => {
                out.failures += 1;
                if out.failure_samples.len() < 5 {
                    out.failure_samples.push(message);
                }
            }
        }
    }
    out
}

struct IngestRun {
    started: Instant,
    latency: Stats,
    completions: Vec<Instant>,
    failures: u64,
    failure_samples: Vec<String>,
    samples: Vec<Sample>,
    acknowledged: u64,
    elapsed: Duration,
}

impl IngestRun {
    fn traces_per_s(&self) -> f64 {
        self.acknowledged as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Traces/s of the first and the last `share` of the traces.
    fn ends(&self, share: f64) -> (f64, f64) {
        let n = self.completions.len();
        if n < 10 {
            return (0.0, 0.0);
        }
        let k = ((n as f64 * share).ceil() as usize).clamp(1, n - 1);
        let first = self.completions[k - 1] - self.started;
        let last = self.completions[n - 1] - self.completions[n - 1 - k];
        let traces = (k * BATCH) as f64;
        (
            traces / first.as_secs_f64().max(1e-9),
            traces / last.as_secs_f64().max(1e-9),
        )
    }
}

/// Runs `clients` ingest clients on `plan`; prints progress every 15 s when
/// `goal` is given.
async fn run_ingest(plan: Plan, clients: usize, goal: Option<u64>) -> IngestRun {
    let started = Instant::now();
    let plan = Arc::new(plan);
    let handles: Vec<_> = (0..clients)
        .map(|_| tokio::spawn(ingest_client(plan.clone())))
        .collect();
    let reporter = goal.map(|goal| {
        let plan = plan.clone();
        tokio::spawn(async move {
            let mut last = (Instant::now(), 0u64);
            while plan.budget.load(Ordering::Relaxed) > 0 && Instant::now() < plan.window.1 {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if last.0.elapsed() >= Duration::from_secs(15) {
                    let now = plan.acknowledged.load(Ordering::Relaxed);
                    let rate = (now - last.1) as f64 / last.0.elapsed().as_secs_f64();
                    println!(
                        "    fill: {now} / {goal} traces after {:.0} s ({rate:.0} traces/s over the last 15 s)",
                        started.elapsed().as_secs_f64()
                    );
                    last = (Instant::now(), now);
                }
            }
        })
    });
    let mut all = ClientOut::default();
    for handle in handles {
        let out = handle.await.expect("ingest client task");
        all.latencies_ms.extend(out.latencies_ms);
        all.completions.extend(out.completions);
        all.failures += out.failures;
        all.failure_samples.extend(out.failure_samples);
        all.failure_samples.truncate(5);
        all.samples.extend(out.samples);
    }
    let elapsed = started.elapsed();
    if let Some(reporter) = reporter {
        reporter.abort();
    }
    all.completions.sort();
    IngestRun {
        started,
        latency: Stats::of(all.latencies_ms),
        completions: all.completions,
        failures: all.failures,
        failure_samples: all.failure_samples,
        samples: all.samples,
        acknowledged: plan.acknowledged.load(Ordering::Relaxed),
        elapsed,
    }
}

// ------------------------------------------------------------- database ----

fn open_read_only(db: &Path) -> Connection {
    Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open the server database read-only")
}

/// Rows stored but not yet in the search index: traces without their
/// row, or (a server from before the row-per-trace index) traces and spans.
fn search_backlog(db: &Path) -> i64 {
    let conn = open_read_only(db);
    [
        "SELECT coalesce((SELECT max(seq) FROM traces), 0) - seq \
         + (SELECT count(*) FROM trace_docs_dirty) FROM trace_docs_state",
        "SELECT coalesce((SELECT max(seq) FROM traces), 0) - traces_seq \
         + coalesce((SELECT max(rid) FROM spans), 0) - spans_rid FROM search_state",
    ]
    .into_iter()
    .find_map(|sql| conn.query_row(sql, [], |r| r.get(0)).ok())
    .unwrap_or(-1)
}

fn count_traces(db: &Path) -> i64 {
    open_read_only(db)
        .query_row("SELECT count(*) FROM traces", [], |r| r.get(0))
        .unwrap_or(-1)
}

/// Bytes of each table and index (full-text shadow tables counted with
/// their index), biggest first, from the `dbstat` virtual table; an error
/// when this SQLite lacks it.
fn object_sizes(db: &Path) -> Result<Vec<(String, i64)>, String> {
    let conn = open_read_only(db);
    let mut stmt = conn
        .prepare("SELECT name, sum(pgsize) FROM dbstat GROUP BY name")
        .map_err(|e| e.to_string())?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .map_err(|e| e.to_string())?;
    let mut sizes: HashMap<String, i64> = HashMap::new();
    for row in rows {
        let (name, bytes) = row.map_err(|e| e.to_string())?;
        // traces_fts_data, _idx, _docsize, _config: one index.
        let group = ["trace_docs", "traces_fts", "spans_fts"]
            .into_iter()
            .find(|fts| name.starts_with(fts))
            .map_or(name, |fts| format!("{fts} (full-text index)"));
        *sizes.entry(group).or_default() += bytes;
    }
    let mut sizes: Vec<(String, i64)> = sizes.into_iter().collect();
    sizes.sort_by_key(|s| std::cmp::Reverse(s.1));
    Ok(sizes)
}

// ---------------------------------------------------------- organisations ----

/// Makes an organisation on the data directory with `admin create-org`
/// (also while the server runs); returns its API key.
fn create_org(data: &Path, name: &str) -> String {
    let mut command = Command::new(server_binary());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TRULAYER_") {
            command.env_remove(key);
        }
    }
    let out = command
        .args(["admin", "create-org", "--name", name, "--admin-email"])
        .arg(format!("{name}@example.com"))
        .args(["--admin-password", "benchpassword", "--plan", "enterprise"])
        .env("TRULAYER_STORAGE__DATA_DIR", data)
        .env("TRULAYER_STORAGE__SYNCHRONOUS", "normal")
        .output()
        .expect("run trulayer-server admin create-org");
    assert!(
        out.status.success(),
        "admin create-org {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: Value = serde_json::from_slice(&out.stdout).expect("create-org prints JSON");
    line.get("api_key")
        .and_then(Value::as_str)
        .expect("create-org answers an api_key")
        .to_string()
}

// ---------------------------------------------------------------- queries ----

struct QueryStat {
    label: String,
    stats: Stats,
    errors: usize,
    goal_ms: f64,
    /// Traces (or sessions, spans) on the first page.
    hits: usize,
}

async fn get(client: &reqwest::Client, key: &str, url: &str) -> Result<Value, String> {
    let response = client
        .get(url)
        .bearer_auth(key)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if !status.is_success() {
        return Err(format!(
            "GET {url}: {status}: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("GET {url}: {e}"))
}

fn items<'a>(page: &'a Value, field: &str) -> &'a [Value] {
    page.get(field)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn first_list_len(page: &Value) -> usize {
    ["traces", "results", "sessions"]
        .iter()
        .map(|f| items(page, f).len())
        .max()
        .unwrap_or(0)
}

/// Times `QUERY_WARMUP` + `n` sequential GETs of `url` (bounded by `max`).
async fn time_gets(
    client: &reqwest::Client,
    key: &str,
    label: String,
    url: &str,
    n: usize,
    max: Duration,
    goal_ms: f64,
) -> QueryStat {
    let hits = match get(client, key, url).await {
        Ok(page) => first_list_len(&page),
        Err(e) => {
            println!("    {label}: {e}");
            0
        }
    };
    let deadline = Instant::now() + max;
    let (mut samples, mut errors) = (Vec::with_capacity(QUERY_WARMUP + n), 0usize);
    for _ in 0..QUERY_WARMUP + n {
        if Instant::now() >= deadline {
            break;
        }
        let sent = Instant::now();
        let ok = match client.get(url).bearer_auth(key).send().await {
            Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
            _ => false,
        };
        let took = ms(sent.elapsed());
        if ok {
            samples.push(took);
        } else {
            errors += 1;
        }
    }
    // A query too slow to get past its warm-up within the time limit is
    // reported from the warm-up requests rather than not at all.
    if samples.len() > QUERY_WARMUP {
        samples.drain(..QUERY_WARMUP);
    }
    let q = QueryStat {
        label,
        stats: Stats::of(samples),
        errors,
        goal_ms,
        hits,
    };
    println!("  {}", stat_line(&q));
    q
}

fn met(q: &QueryStat) -> bool {
    q.stats.n > 0 && q.errors == 0 && q.stats.p95 <= q.goal_ms
}

fn stat_line(q: &QueryStat) -> String {
    format!(
        "{:<52} n={:<4} p50 {:>8.2} ms  p95 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms  ({} on page 1)  goal p95 <= {:.0} ms: {}{}",
        q.label,
        q.stats.n,
        q.stats.p50,
        q.stats.p95,
        q.stats.p99,
        q.stats.max,
        q.hits,
        q.goal_ms,
        if met(q) { "ok" } else { "MISSES" },
        if q.errors > 0 {
            format!("  {} ERRORS", q.errors)
        } else {
            String::new()
        }
    )
}

fn encode(q: &str) -> String {
    let mut out = String::new();
    for b in q.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The trace searches: (label, q).
fn search_queries() -> Vec<(&'static str, String)> {
    vec![
        ("common word", "refund".into()),
        ("mid-frequency word (1 in 50)", MID_WORDS[0].0.into()),
        ("rare word (1 in 20,000)", RARE_WORDS[0].0.into()),
        ("rare word (1 in 2,000)", RARE_WORDS[1].0.into()),
        ("absent word", ABSENT.into()),
        ("common + rare", format!("refund {}", RARE_WORDS[0].0)),
        (
            "two mid words (1 in 2,500)",
            format!("{} {}", MID_WORDS[0].0, MID_WORDS[1].0),
        ),
        ("two common words", "refund policy".into()),
        (
            "three words",
            format!("customer billing {}", MID_WORDS[0].0),
        ),
        ("quoted phrase", "\"refund policy\"".into()),
        ("error word (5 % of traces)", "timeout".into()),
    ]
}

/// Lower-cased alphanumeric runs, as SQLite's unicode61 tokenizer splits
/// ASCII text.
fn tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Whether one of `texts` holds `term`: a word, or a phrase (consecutive
/// words of one text).
fn holds(texts: &[Vec<String>], term: &[String]) -> bool {
    texts
        .iter()
        .any(|t| t.windows(term.len()).any(|w| w == term))
}

/// The words and phrases of a query, each as tokens.
fn query_terms(q: &str) -> Vec<Vec<String>> {
    let mut terms = Vec::new();
    for (i, part) in q.split('"').enumerate() {
        if i % 2 == 1 {
            terms.push(tokens(part));
        } else {
            terms.extend(tokens(part).into_iter().map(|t| vec![t]));
        }
    }
    terms.retain(|t| !t.is_empty());
    terms
}

/// The texts search looks at: the trace's name, input, output and error
/// and its spans'.
fn searchable(detail: &Value) -> Vec<Vec<String>> {
    let fields = ["name", "input", "output", "error"];
    let mut texts = Vec::new();
    let mut add = |v: &Value| {
        for f in fields {
            if let Some(s) = v.get(f).and_then(Value::as_str) {
                texts.push(tokens(s));
            }
        }
    };
    add(detail);
    for span in items(detail, "spans") {
        add(span);
    }
    texts
}

/// Walks up to `max_pages` pages of `q` on the main tenant and checks each
/// listed trace against its detail; returns (hits, problems).
async fn check_search(
    client: &reqwest::Client,
    base: &str,
    q: &str,
    max_pages: usize,
) -> (usize, bool, Vec<String>) {
    let terms = query_terms(q);
    let mut problems = Vec::new();
    let mut seen = HashSet::new();
    let mut cursor: Option<String> = None;
    let mut last_started: Option<String> = None;
    let mut complete = false;
    for _ in 0..max_pages {
        let mut url = format!("{base}/v1/traces?limit=50&q={}", encode(q));
        if let Some(c) = &cursor {
            let _ = write!(url, "&cursor={c}");
        }
        let page = match get(client, API_KEY, &url).await {
            Ok(page) => page,
            Err(e) => {
                problems.push(format!("q={q}: {e}"));
                return (seen.len(), false, problems);
            }
        };
        for t in items(&page, "traces") {
            let id = t.get("id").and_then(Value::as_str).unwrap_or_default();
            if !seen.insert(id.to_string()) {
                problems.push(format!("q={q}: trace {id} listed twice"));
            }
            let started = t
                .get("started_at")
                .and_then(Value::as_str)
                .map(String::from);
            if let (Some(prev), Some(now)) = (&last_started, &started) {
                if now > prev {
                    problems.push(format!("q={q}: not newest first at trace {id}"));
                }
            }
            last_started = started;
            match get(client, API_KEY, &format!("{base}/v1/traces/{id}")).await {
                Ok(detail) => {
                    let texts = searchable(&detail);
                    for term in &terms {
                        if !holds(&texts, term) {
                            problems.push(format!(
                                "q={q}: trace {id} is listed but holds no {:?}",
                                term.join(" ")
                            ));
                        }
                    }
                }
                Err(e) => problems.push(format!("q={q}: {e}")),
            }
        }
        match page.get("next_cursor").and_then(Value::as_str) {
            Some(next) => cursor = Some(next.to_string()),
            None => {
                complete = true;
                break;
            }
        }
    }
    (seen.len(), complete, problems)
}

/// Every page of a span search for `word`: the spans found (each must
/// hold the word, once each, newest first by position); whether the walk
/// reached the end; problems seen.
async fn check_span_search(
    client: &reqwest::Client,
    base: &str,
    word: &str,
    max_pages: usize,
) -> (usize, bool, Vec<String>) {
    let mut problems = Vec::new();
    let mut seen = HashSet::new();
    let mut cursor: Option<String> = None;
    for _ in 0..max_pages {
        let mut url = format!("{base}/v1/search/spans?limit=100&q={}", encode(word));
        if let Some(c) = &cursor {
            let _ = write!(url, "&cursor={c}");
        }
        let page = match get(client, API_KEY, &url).await {
            Ok(page) => page,
            Err(e) => {
                problems.push(format!("span search q={word}: {e}"));
                return (seen.len(), false, problems);
            }
        };
        for hit in items(&page, "results") {
            let trace = hit
                .get("trace_id")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let span = hit
                .get("span_id")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !seen.insert(format!("{trace}/{span}")) {
                problems.push(format!(
                    "span search q={word}: span {trace}/{span} listed twice"
                ));
            }
            let snippet = hit
                .get("snippet")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !snippet.contains(&format!("<mark>{word}</mark>")) {
                problems.push(format!(
                    "span search q={word}: span {trace}/{span} has no marked match: {snippet}"
                ));
            }
        }
        match page.get("next_cursor").and_then(Value::as_str) {
            Some(next) => cursor = Some(next.to_string()),
            None => return (seen.len(), true, problems),
        }
    }
    (seen.len(), false, problems)
}

struct QueryReport {
    stats: Vec<QueryStat>,
    problems: Vec<String>,
    checked: Vec<String>,
}

async fn run_queries(
    base: &str,
    keys: &[String; 3],
    knobs: &Knobs,
    samples: &[Sample],
    truth: &Truth,
) -> QueryReport {
    let client = http_client();
    let (n, max) = (knobs.requests, knobs.query_max);
    let main = API_KEY;
    let mut stats = Vec::new();
    let mut problems = Vec::new();
    let mut checked = Vec::new();
    let list = format!("{base}/v1/traces?limit=50");

    // Full-text search on the main tenant, first and second pages.
    for (what, q) in search_queries() {
        let url = format!("{list}&q={}", encode(&q));
        stats.push(
            time_gets(
                &client,
                main,
                format!("search: {what}: q={q}"),
                &url,
                n,
                max,
                50.0,
            )
            .await,
        );
        let cursor = get(&client, main, &url).await.ok().and_then(|p| {
            p.get("next_cursor")
                .and_then(Value::as_str)
                .map(String::from)
        });
        if let Some(cursor) = cursor {
            let url = format!("{url}&cursor={cursor}");
            stats.push(
                time_gets(
                    &client,
                    main,
                    format!("search: {what}: page 2"),
                    &url,
                    n,
                    max,
                    50.0,
                )
                .await,
            );
        }
    }
    // Exactness: every listed trace holds every word; a rare word's hits
    // over all pages are the traces that carried it.
    for (i, (word, _)) in RARE_WORDS.iter().enumerate() {
        let sent = truth.rare[Tenant::Main as usize][i].load(Ordering::Relaxed) as usize;
        let (hits, complete, found) = check_search(&client, base, word, 1_000).await;
        checked.push(format!(
            "q={word}: {hits} traces over all pages, {sent} sent with the word"
        ));
        problems.extend(found);
        if !complete || hits != sent {
            problems.push(format!(
                "q={word}: {hits} traces found over all pages{}, but {sent} were sent with the word",
                if complete { "" } else { " (walk cut short)" }
            ));
        }
    }
    for q in [
        format!("refund {}", RARE_WORDS[1].0),
        format!("{} {}", MID_WORDS[0].0, MID_WORDS[1].0),
        "\"refund policy\"".to_string(),
        format!("customer billing {}", MID_WORDS[0].0),
        "timeout".to_string(),
    ] {
        let (hits, complete, found) = check_search(&client, base, &q, 3).await;
        checked.push(format!(
            "q={q}: {hits} traces checked over {} pages",
            if complete { "all" } else { "the first 3" }
        ));
        problems.extend(found);
    }
    // Span search: a rare word is in the input of the trace's `plan` and
    // `call_tool` spans, so over all pages two spans per trace sent with it.
    for (i, (word, _)) in RARE_WORDS.iter().enumerate() {
        let sent = truth.rare[Tenant::Main as usize][i].load(Ordering::Relaxed) as usize;
        let (hits, complete, found) = check_span_search(&client, base, word, 1_000).await;
        checked.push(format!(
            "span search q={word}: {hits} spans over all pages, {} sent with the word",
            2 * sent
        ));
        problems.extend(found);
        if !complete || hits != 2 * sent {
            problems.push(format!(
                "span search q={word}: {hits} spans found{}, but {} were sent with the word",
                if complete { "" } else { " (walk cut short)" },
                2 * sent
            ));
        }
    }
    for line in &checked {
        println!("  exactness: {line}");
    }

    for (what, q) in [
        ("common word", "refund"),
        ("rare word", RARE_WORDS[0].0),
        ("absent word", ABSENT),
        // Words in many traces but seldom in one span: each request checks
        // a bounded number of spans and may answer a short page.
        ("two mid words", "invoice french"),
    ] {
        let url = format!("{base}/v1/search/spans?q={}", q.replace(' ', "%20"));
        stats.push(
            time_gets(
                &client,
                main,
                format!("span search: {what}: q={q}"),
                &url,
                n,
                max,
                50.0,
            )
            .await,
        );
    }

    // Sessions of each tenant.
    for tenant in TENANTS {
        let key = &keys[tenant as usize];
        for (suffix, query) in [("", ""), (", project_id=default", "&project_id=default")] {
            let url = format!("{base}/v1/sessions?limit=50{query}");
            stats.push(
                time_gets(
                    &client,
                    key,
                    format!("sessions: {}{suffix}", tenant.name()),
                    &url,
                    n,
                    max,
                    20.0,
                )
                .await,
            );
        }
    }
    if let Some((session, _)) = samples
        .iter()
        .find(|s| s.tenant == Tenant::Main)
        .and_then(|s| s.session.clone().map(|x| (x, s.id)))
    {
        let url = format!("{base}/v1/sessions/{session}");
        stats.push(
            time_gets(
                &client,
                main,
                "session detail: a main session (~6 traces)".into(),
                &url,
                n,
                max,
                10.0,
            )
            .await,
        );
    }
    let url = format!("{base}/v1/sessions/huge-0");
    stats.push(
        time_gets(
            &client,
            &keys[Tenant::Huge as usize],
            "session detail: a huge session (10 % of a tenant)".into(),
            &url,
            n,
            max,
            10.0,
        )
        .await,
    );

    // Lists, filters, detail, metrics.
    let model = MODELS[0];
    for (label, url, goal) in [
        ("list: first page".to_string(), list.clone(), 5.0),
        (
            format!("list: model={model}"),
            format!("{list}&model={model}"),
            5.0,
        ),
        ("list: error=true".into(), format!("{list}&error=true"), 5.0),
        (
            format!("list: model={model}&error=true"),
            format!("{list}&model={model}&error=true"),
            10.0,
        ),
        (
            "list: tag env=prod".into(),
            format!("{list}&tag_key=env&tag_value=prod"),
            5.0,
        ),
        (
            "list: tag customer=cust-0042".into(),
            format!("{list}&tag_key=customer&tag_value=cust-0042"),
            5.0,
        ),
        (
            "metrics: last 24 h".into(),
            format!("{base}/v1/metrics"),
            5.0,
        ),
        (
            "metrics: last 24 h, hourly".into(),
            format!("{base}/v1/metrics?interval=1h"),
            5.0,
        ),
    ] {
        stats.push(time_gets(&client, main, label, &url, n, max, goal).await);
    }
    let main_samples: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.tenant == Tenant::Main)
        .collect();
    if let Some(s) = main_samples.first() {
        let url = format!("{base}/v1/traces/{}", s.id);
        stats.push(
            time_gets(
                &client,
                main,
                "detail: a known trace".into(),
                &url,
                n,
                max,
                5.0,
            )
            .await,
        );
    }
    let project = get(&client, main, &format!("{base}/v1/projects"))
        .await
        .ok()
        .and_then(|p| {
            items(&p, "projects")
                .first()
                .and_then(|p| p.get("id").and_then(Value::as_str).map(String::from))
        });
    if let Some(project) = project {
        let url = format!("{base}/v1/projects/{project}/metrics?metric=p95_latency_ms&window=7d");
        stats.push(
            time_gets(
                &client,
                main,
                "metrics: project p95 latency, 7 days".into(),
                &url,
                n,
                max,
                5.0,
            )
            .await,
        );
    }
    QueryReport {
        stats,
        problems,
        checked,
    }
}

// ---------------------------------------------------- search freshness ----

struct Freshness {
    ingest: IngestRun,
    probes: usize,
    /// Ack → first search that found it, in ms; None: never found.
    delays: Vec<Option<f64>>,
}

/// One trace carrying `word`, to the main tenant; returns when acknowledged.
async fn send_probe(
    client: &reqwest::Client,
    base: &str,
    corpus: &Corpus,
    word: &str,
) -> Result<Instant, String> {
    let mut rng = Rng::seeded();
    let now = chrono::Utc::now().timestamp_micros();
    let sessions = Sessions::for_traces(1);
    let mut trace = gen_trace(corpus, &mut rng, now, Tenant::Main, &sessions, None);
    trace.input.push(' ');
    trace.input.push_str(word);
    let body = batch_body(std::slice::from_ref(&trace));
    let url = format!("{base}/v1/ingest/batch");
    post_batch(client, &url, API_KEY, Protocol::Json, body, 1).await?;
    Ok(Instant::now())
}

async fn run_freshness(base: &str, plan: Plan, clients: usize, seconds: Duration) -> Freshness {
    let corpus = plan.corpus.clone();
    let ingest = tokio::spawn(run_ingest(plan, clients, None));
    let client = http_client();
    let delays = Arc::new(Mutex::new(Vec::new()));
    let mut pollers = Vec::new();
    let until = Instant::now() + seconds;
    let mut probes = 0;
    let mut rng = Rng::seeded();
    while Instant::now() < until {
        let tick = Instant::now();
        let word = format!("fresh{:012x}", rng.next() >> 16);
        match send_probe(&client, base, &corpus, &word).await {
            Ok(acked) => {
                probes += 1;
                let base = base.to_string();
                let delays = delays.clone();
                pollers.push(tokio::spawn(async move {
                    let client = http_client();
                    let url = format!("{base}/v1/traces?limit=50&q={word}");
                    let found = loop {
                        if acked.elapsed() > Duration::from_secs(30) {
                            break None;
                        }
                        if let Ok(page) = get(&client, API_KEY, &url).await {
                            if !items(&page, "traces").is_empty() {
                                break Some(ms(acked.elapsed()));
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    };
                    if let Ok(mut d) = delays.lock() {
                        d.push(found);
                    }
                }));
            }
            Err(e) => println!("    {e}"),
        }
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed())).await;
    }
    for p in pollers {
        let _ = p.await;
    }
    let ingest = ingest.await.expect("sustained ingest task");
    let delays = delays.lock().map(|d| d.clone()).unwrap_or_default();
    Freshness {
        ingest,
        probes,
        delays,
    }
}

// ------------------------------------------------------------------ main ----

/// One line of the final table.
struct Row {
    corpus: &'static str,
    what: String,
    value: String,
    goal: String,
    ok: Option<bool>,
}

fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "ok",
        Some(false) => "MISSES",
        None => "",
    }
}

/// Whether the server has exited; if so, what it logged last.
fn exited(server: &mut Server) -> Option<String> {
    match server.child.try_wait() {
        Ok(Some(status)) => {
            server.stopped = true;
            Some(format!(
                "the server exited ({status}); its log ends:\n{}",
                log_tail(&server.log)
            ))
        }
        _ => None,
    }
}

struct CorpusRun {
    rows: Vec<Row>,
    problems: Vec<String>,
}

fn run_corpus(
    kind: Kind,
    knobs: &Knobs,
    root: &Path,
    runtime: &tokio::runtime::Runtime,
) -> CorpusRun {
    let corpus_name = kind.name();
    let mut rows = Vec::new();
    let mut row = |what: String, value: String, goal: &str, ok: Option<bool>| {
        rows.push(Row {
            corpus: corpus_name,
            what,
            value,
            goal: goal.to_string(),
            ok,
        })
    };
    let mut problems = Vec::new();
    let n = knobs.traces;
    let data = root.join(format!("data-{corpus_name}"));
    let db = data.join("trulayer.db");
    let corpus = Arc::new(Corpus::new(kind, &mut Rng::seeded()));
    let truth = Arc::new(Truth::default());
    let log = |name: &str| root.join(format!("server-{corpus_name}-{name}.log"));

    println!("\n=== corpus {corpus_name}: {n} traces ===");
    let phase = Instant::now();
    let mut phases: Vec<(&str, Duration)> = Vec::new();
    let mut lap = phase;
    let mut server = Server::start(&data, log("fill"));
    let keys = [
        API_KEY.to_string(),
        create_org(&data, "nosessions"),
        create_org(&data, "hugesessions"),
    ];
    let sample = {
        let mut b = Vec::new();
        let mut rng = Rng::seeded();
        let sessions = Sessions::for_traces(n);
        for _ in 0..BATCH {
            b.push(gen_trace(
                &corpus,
                &mut rng,
                0,
                Tenant::Main,
                &sessions,
                None,
            ));
        }
        batch_body(&b).len()
    };
    println!(
        "[1] three organisations ready; one batch = {BATCH} traces x {SPANS} spans = {:.0} KB of JSON",
        sample as f64 / 1024.0
    );

    // 2. Fill.
    println!(
        "[2] fill to {n} traces over HTTP ({} clients, at most {:?})",
        knobs.clients, knobs.fill_max
    );
    let start = Instant::now();
    let plan = Plan {
        base: server.base.clone(),
        keys: keys.clone(),
        corpus: corpus.clone(),
        sessions: Sessions::for_traces(n),
        truth: Some(truth.clone()),
        protocol: Protocol::Json,
        budget: AtomicU64::new(n.div_ceil(BATCH as u64)),
        started: AtomicU64::new(0),
        acknowledged: AtomicU64::new(0),
        window: (start, start + knobs.fill_max),
        sample_every: (n / 3_000).max(1),
    };
    let fill = runtime.block_on(run_ingest(plan, knobs.clients, Some(n)));
    let (first, last) = fill.ends(0.1);
    let wal_live = file_size(&data.join("trulayer.db-wal"));
    let db_live = file_size(&db);
    println!(
        "  {} traces in {:.1} s: {:.0} traces/s; first 10 % {first:.0} traces/s, last 10 % {last:.0} traces/s (ratio {:.2}); batch p50 {:.1} / p99 {:.1} ms; failures {}{}",
        fill.acknowledged,
        fill.elapsed.as_secs_f64(),
        fill.traces_per_s(),
        last / first.max(1e-9),
        fill.latency.p50,
        fill.latency.p99,
        fill.failures,
        fill.failure_samples
            .iter()
            .map(|s| format!("\n    {s}"))
            .collect::<String>()
    );
    println!(
        "  at the end of the fill: database {:.1} MB, WAL {:.1} MB",
        db_live as f64 / 1e6,
        wal_live as f64 / 1e6
    );
    if fill.acknowledged < n {
        println!(
            "  NOTE: the fill stopped at {} of {n} traces",
            fill.acknowledged
        );
    }
    if fill.failures > 0 {
        problems.push(format!(
            "{corpus_name}: fill: {} failed batches",
            fill.failures
        ));
    }
    row(
        "fill: traces/s (whole fill)".into(),
        format!("{:.0}", fill.traces_per_s()),
        "",
        None,
    );
    row(
        "fill: last 10 % / first 10 % traces/s".into(),
        format!("{last:.0} / {first:.0} = {:.2}", last / first.max(1e-9)),
        ">= 0.9",
        Some(last / first.max(1e-9) >= 0.9),
    );
    row(
        "fill: WAL at the end of the fill".into(),
        format!(
            "{:.1} MB (database {:.1} MB)",
            wal_live as f64 / 1e6,
            db_live as f64 / 1e6
        ),
        "",
        None,
    );

    phases.push(("fill", lap.elapsed()));
    lap = Instant::now();

    // 3. The search index catches up (the fill outruns it: it yields to
    // ingest), so that the storage counts it and the queries see it whole.
    server.stop();
    drop(server);
    let mut server = Server::start(&data, log("index"));
    let caught_up = Instant::now();
    let backlog = search_backlog(&db);
    while search_backlog(&db) > 0 && caught_up.elapsed() < Duration::from_secs(3_600) {
        std::thread::sleep(Duration::from_millis(500));
    }
    println!(
        "[3] restart: ready in {:.0} ms; search index: {backlog} rows behind, caught up in {:.1} s",
        ms(server.ready_after),
        caught_up.elapsed().as_secs_f64()
    );
    row(
        "search index catch-up after the fill".into(),
        format!(
            "{backlog} rows in {:.1} s",
            caught_up.elapsed().as_secs_f64()
        ),
        "",
        None,
    );
    phases.push(("restart and search index catch-up", lap.elapsed()));
    lap = Instant::now();

    // 4. Storage after a clean stop.
    let stop = server.stop();
    drop(server);
    let stored = count_traces(&db).max(1);
    let (db_bytes, wal_bytes) = (file_size(&db), file_size(&data.join("trulayer.db-wal")));
    println!(
        "[4] storage after a clean stop ({:.1} s): {stored} traces; database {:.1} MB, WAL {:.1} MB; {:.0} bytes per trace ({:.0} database + {:.0} WAL)",
        stop.as_secs_f64(),
        db_bytes as f64 / 1e6,
        wal_bytes as f64 / 1e6,
        (db_bytes + wal_bytes) as f64 / stored as f64,
        db_bytes as f64 / stored as f64,
        wal_bytes as f64 / stored as f64
    );
    if stored as u64 != fill.acknowledged {
        problems.push(format!(
            "{corpus_name}: {} traces acknowledged but {stored} stored",
            fill.acknowledged
        ));
    }
    row(
        "storage: bytes per trace, database + WAL".into(),
        format!(
            "{:.0} ({:.0} + {:.0})",
            (db_bytes + wal_bytes) as f64 / stored as f64,
            db_bytes as f64 / stored as f64,
            wal_bytes as f64 / stored as f64
        ),
        match kind {
            Kind::Vocab => "<= 40 % of 6,689 (the issue's)",
            Kind::Prompt => "<= 40 % of today's on this corpus",
        },
        (kind == Kind::Vocab)
            .then(|| ((db_bytes + wal_bytes) as f64 / stored as f64) <= 0.4 * 6_689.0),
    );
    row(
        "storage: database after a clean stop".into(),
        format!("{:.1} MB for {stored} traces", db_bytes as f64 / 1e6),
        "",
        None,
    );
    let measured = Instant::now();
    match object_sizes(&db) {
        Ok(sizes) => {
            let total: i64 = sizes.iter().map(|s| s.1).sum::<i64>().max(1);
            println!(
                "  biggest tables and indexes (dbstat, read in {:.1} s):",
                measured.elapsed().as_secs_f64()
            );
            for (name, bytes) in sizes.iter().take(10) {
                let share = *bytes as f64 * 100.0 / total as f64;
                println!(
                    "    {name:<40} {:>10.1} MB  {share:>5.1} %  {:>6.0} bytes/trace",
                    *bytes as f64 / 1e6,
                    *bytes as f64 / stored as f64
                );
            }
            for (name, bytes) in sizes.iter().take(5) {
                row(
                    format!("storage: {name}"),
                    format!(
                        "{:.0} bytes/trace, {:.1} %",
                        *bytes as f64 / stored as f64,
                        *bytes as f64 * 100.0 / total as f64
                    ),
                    "",
                    None,
                );
            }
        }
        Err(e) => println!("  dbstat is not available in this SQLite ({e}): no per-table sizes"),
    }

    phases.push(("stop and storage", lap.elapsed()));
    lap = Instant::now();

    // 5. Queries.
    let mut server = Server::start(&data, log("query"));
    println!("[5] restart: ready in {:.0} ms", ms(server.ready_after));
    if !knobs.idle.is_zero() {
        println!("  idle for {:?}", knobs.idle);
        std::thread::sleep(knobs.idle);
    }
    println!(
        "  queries ({} timed sequential requests each after {QUERY_WARMUP} warm-up, at most {:?} each; goals are the issue's at 10M):",
        knobs.requests, knobs.query_max
    );
    let report = runtime.block_on(run_queries(
        &server.base,
        &keys,
        knobs,
        &fill.samples,
        &truth,
    ));
    for q in &report.stats {
        row(
            format!("p95 {}", q.label),
            format!(
                "{:.2} ms (p50 {:.2}, p99 {:.2})",
                q.stats.p95, q.stats.p50, q.stats.p99
            ),
            &format!("<= {:.0} ms", q.goal_ms),
            Some(met(q)),
        );
    }
    for line in &report.checked {
        row(format!("exactness: {line}"), String::new(), "", None);
    }
    problems.extend(
        report
            .problems
            .iter()
            .map(|p| format!("{corpus_name}: {p}")),
    );

    if let Some(exit) = exited(&mut server) {
        println!("  {exit}");
        problems.push(format!("{corpus_name}: {exit}"));
    }
    phases.push(("queries and exactness", lap.elapsed()));
    lap = Instant::now();

    // 6. Sustained ingest with search probes.
    println!(
        "[6] sustained ingest for {:?} at {} connections, a trace with a unique word every second",
        knobs.sustain, knobs.clients
    );
    let base = server.base.clone();
    let sustain_plan = |protocol: Protocol, seconds: Duration| {
        let start = Instant::now();
        Plan {
            base: base.clone(),
            keys: keys.clone(),
            corpus: corpus.clone(),
            sessions: Sessions::for_traces(n),
            truth: None,
            protocol,
            budget: AtomicU64::new(u64::MAX),
            started: AtomicU64::new(0),
            acknowledged: AtomicU64::new(0),
            window: (start, start + seconds),
            sample_every: 0,
        }
    };
    let fresh = runtime.block_on(run_freshness(
        &server.base,
        sustain_plan(Protocol::Json, knobs.sustain),
        knobs.clients,
        knobs.sustain,
    ));
    let found: Vec<f64> = fresh.delays.iter().flatten().copied().collect();
    let missing = fresh.delays.len() - found.len();
    let delay = Stats::of(found);
    println!(
        "  {:.0} traces/s; batch latency p50 {:.1} / p99 {:.1} / max {:.1} ms; failures {}",
        fresh.ingest.traces_per_s(),
        fresh.ingest.latency.p50,
        fresh.ingest.latency.p99,
        fresh.ingest.latency.max,
        fresh.ingest.failures
    );
    println!(
        "  search freshness: {} probes, found after p50 {:.0} / p95 {:.0} / max {:.0} ms; {missing} not found within 30 s",
        fresh.probes, delay.p50, delay.p95, delay.max
    );
    row(
        "sustained ingest: traces/s".into(),
        format!("{:.0}", fresh.ingest.traces_per_s()),
        "",
        None,
    );
    row(
        "sustained ingest: batch p99".into(),
        format!("{:.1} ms", fresh.ingest.latency.p99),
        "<= 150 ms",
        Some(fresh.ingest.latency.p99 <= 150.0),
    );
    row(
        "search freshness: ack to found, p95 / max".into(),
        format!(
            "{:.0} / {:.0} ms ({} probes, {missing} never found)",
            delay.p95, delay.max, fresh.probes
        ),
        "<= 5 s",
        Some(missing == 0 && delay.n > 0 && delay.max <= 5_000.0),
    );

    if let Some(exit) = exited(&mut server) {
        println!("  {exit}");
        problems.push(format!("{corpus_name}: {exit}"));
    }
    phases.push(("sustained ingest", lap.elapsed()));
    lap = Instant::now();

    // 7. JSON against OTLP.
    if !knobs.otlp.is_zero() {
        println!(
            "[7] the same traces over JSON, then OTLP protobuf, {:?} each",
            knobs.otlp
        );
        let json = runtime.block_on(run_ingest(
            sustain_plan(Protocol::Json, knobs.otlp),
            knobs.clients,
            None,
        ));
        let otlp = runtime.block_on(run_ingest(
            sustain_plan(Protocol::Otlp, knobs.otlp),
            knobs.clients,
            None,
        ));
        let ratio = otlp.traces_per_s() / json.traces_per_s().max(1e-9);
        println!(
            "  JSON {:.0} traces/s (p99 {:.1} ms); OTLP {:.0} traces/s (p99 {:.1} ms); OTLP / JSON = {ratio:.2}; failures {} / {}{}",
            json.traces_per_s(),
            json.latency.p99,
            otlp.traces_per_s(),
            otlp.latency.p99,
            json.failures,
            otlp.failures,
            otlp.failure_samples
                .iter()
                .map(|s| format!("\n    {s}"))
                .collect::<String>()
        );
        row(
            "OTLP / JSON traces/s".into(),
            format!(
                "{:.0} / {:.0} = {ratio:.2}",
                otlp.traces_per_s(),
                json.traces_per_s()
            ),
            ">= 0.9",
            Some(ratio >= 0.9),
        );
    }
    server.stop();
    drop(server);
    phases.push(("JSON and OTLP", lap.elapsed()));
    let total = file_size(&db) + file_size(&data.join("trulayer.db-wal"));
    let took = phases
        .iter()
        .map(|(name, d)| format!("{name} {:.0} s", d.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "  corpus {corpus_name} done in {:.0} s ({took}); database at the end {:.1} MB for {} traces",
        phase.elapsed().as_secs_f64(),
        total as f64 / 1e6,
        count_traces(&db)
    );
    row(
        "time taken".into(),
        format!("{:.0} s: {took}", phase.elapsed().as_secs_f64()),
        "",
        None,
    );
    if knobs.keep_dir.is_none() {
        let _ = std::fs::remove_dir_all(&data);
    }
    CorpusRun { rows, problems }
}

fn main() {
    let knobs = Knobs::from_env();
    let (temp, root) = data_root(knobs.keep_dir.as_deref(), "trulayer-scale-");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build the client runtime");
    println!("TruLayer Server scale benchmark");
    println!(
        "  binary {}\n  data under {}\n  {} CPUs; {} traces per corpus; corpora {}; {} clients; {} requests per query kind",
        server_binary().display(),
        root.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        knobs.traces,
        knobs
            .corpora
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(" + "),
        knobs.clients,
        knobs.requests
    );
    for tenant in TENANTS {
        println!(
            "  organisation {:?}: {:.0} % of the traces, {}",
            tenant,
            tenant.share() * 100.0,
            tenant.name()
        );
    }
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    for kind in &knobs.corpora {
        let run = run_corpus(*kind, &knobs, &root, &runtime);
        rows.extend(run.rows);
        problems.extend(run.problems);
    }

    println!(
        "\n=============== summary ({} traces per corpus, {:.0} s in all) ===============",
        knobs.traces,
        started.elapsed().as_secs_f64()
    );
    println!("| corpus | measure | value | goal | |");
    println!("|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} |",
            r.corpus,
            r.what,
            r.value,
            r.goal,
            verdict(r.ok)
        );
    }
    let misses = rows.iter().filter(|r| r.ok == Some(false)).count();
    println!(
        "\n{misses} of {} goals missed",
        rows.iter().filter(|r| r.ok.is_some()).count()
    );
    drop(runtime);
    drop(temp);
    if problems.is_empty() {
        println!("search results exact; no correctness problems seen");
    } else {
        println!("\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!! PROBLEMS !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
        for p in &problems {
            println!("  {p}");
        }
        std::process::exit(1);
    }
}
