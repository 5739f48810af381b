//! Crash durability: `kill -9` at random moments under concurrent batch
//! ingest, many times on one data directory, then a check that nothing
//! acknowledged was lost and that the database and its filters are sound.
//!
//! Shared by the short test (`tests/crash/main.rs`) and the long bench
//! (`benches/crash.rs`). Each cycle starts the real binary on the same data
//! directory, lets `clients` tasks post `/v1/ingest/batch` until a random
//! moment after the server became healthy (and after at least one batch was
//! acknowledged), then sends SIGKILL. A batch is acknowledged when its answer
//! arrived whole: a 201 naming every id. A batch cut off by the kill may or
//! may not be stored; the next cycle sends it again, as the SDK retries, and
//! its answer says which (201 if it was not stored, 200 `duplicate` if it
//! was, anything else breaks all-or-nothing). Each client also sends one
//! acknowledged batch a second time per cycle, which must be a 200
//! `duplicate`, never a 409. After the last kill the server starts once more
//! and `verify` checks what it serves.

mod client;
mod server;
mod traffic;
mod verify;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use uuid::Uuid;

use client::{client, ClientJob, ClientOut};
use server::Server;
use traffic::{Batch, Generator, Sent};

/// How long a cycle waits for its first acknowledged batch before it counts
/// as a failure (a healthy server answers in well under a second).
const FIRST_ACK_LIMIT: Duration = Duration::from_secs(120);
/// Problems beyond this many are counted, not listed.
const MAX_LISTED_PROBLEMS: usize = 40;

pub struct Plan {
    pub binary: PathBuf,
    /// Holds the data directory, the config and one log per server start.
    pub root: PathBuf,
    pub kills: usize,
    pub clients: usize,
    pub batch_traces: RangeInclusive<usize>,
    /// The kill comes this long after the server answered `/health`.
    pub kill_after: RangeInclusive<Duration>,
    /// Check the crashed database's integrity after every this many kills
    /// (and always after the last one).
    pub integrity_every: usize,
    /// Acknowledged traces read back in full through `GET /v1/traces/{id}`.
    pub detail_sample: usize,
    /// Values checked of each filter: the `cycle` tag, the `customer` tag,
    /// `session_id`.
    pub filter_checks: usize,
    pub seed: u64,
    /// A line per kill on stderr.
    pub progress: bool,
}

#[derive(Default)]
pub struct Report {
    pub kills: usize,
    pub batches_acknowledged: usize,
    pub traces_acknowledged: usize,
    pub traces_sent: usize,
    /// Batches whose request was cut off by a kill.
    pub batches_cut_off: usize,
    /// Of those sent again after the restart: already stored / not stored.
    pub cut_off_were_stored: usize,
    pub cut_off_were_not_stored: usize,
    /// Acknowledged batches sent again, every one answered `duplicate`.
    pub duplicates_sent: usize,
    pub traces_found: usize,
    pub lost: usize,
    /// Traces stored though never acknowledged (cut off by the last kill).
    pub stored_unacknowledged: usize,
    pub ready_after_kill: Vec<Duration>,
    pub ready_final: Duration,
    pub integrity_checks: usize,
    pub integrity_final: String,
    /// The indexes as the last kill left them.
    pub index_at_last_kill: String,
    pub details_checked: usize,
    pub filter_queries: usize,
    pub db_bytes: u64,
    /// Where the time went, in order.
    pub times: Vec<(&'static str, Duration)>,
    /// Every broken promise; the run passes when this is empty.
    pub problems: Vec<String>,
    problems_unlisted: usize,
}

impl Report {
    fn problem(&mut self, message: String) {
        if self.problems.len() < MAX_LISTED_PROBLEMS {
            self.problems.push(message);
        } else {
            self.problems_unlisted += 1;
        }
    }

    pub fn summary(&self) -> String {
        let ready = Ranks::of(self.ready_after_kill.iter().map(ms).collect());
        let mut s = String::new();
        let _ = writeln!(
            s,
            "kills {}; acknowledged {} traces in {} batches ({} traces sent); lost {}",
            self.kills,
            self.traces_acknowledged,
            self.batches_acknowledged,
            self.traces_sent,
            self.lost
        );
        let _ = writeln!(
            s,
            "batches cut off by a kill: {} (sent again: {} were stored, {} were not); \
             acknowledged batches sent again: {} (all duplicate)",
            self.batches_cut_off,
            self.cut_off_were_stored,
            self.cut_off_were_not_stored,
            self.duplicates_sent
        );
        let _ = writeln!(
            s,
            "found {} traces, {} of them stored though cut off by the last kill; \
             {} read in full, {} filter queries",
            self.traces_found,
            self.stored_unacknowledged,
            self.details_checked,
            self.filter_queries
        );
        let _ = writeln!(
            s,
            "ready after a kill: p50 {:.1} / p95 {:.1} / max {:.1} ms (n={}); final start {:.1} ms",
            ready.at(0.5),
            ready.at(0.95),
            ready.at(1.0),
            ready.0.len(),
            ms(&self.ready_final)
        );
        let _ = writeln!(
            s,
            "integrity_check: {} crashed states, then after a clean stop: {}; database {:.1} MB",
            self.integrity_checks,
            self.integrity_final,
            self.db_bytes as f64 / 1e6
        );
        let _ = writeln!(s, "at the last kill: {}", self.index_at_last_kill);
        let times: Vec<String> = self
            .times
            .iter()
            .map(|(what, d)| format!("{what} {:.1} s", d.as_secs_f64()))
            .collect();
        let _ = writeln!(s, "time: {}", times.join(", "));
        if self.problems.is_empty() {
            s.push_str("no problems");
        } else {
            let _ = writeln!(
                s,
                "{} problems:",
                self.problems.len() + self.problems_unlisted
            );
            for p in &self.problems {
                let _ = writeln!(s, "  - {p}");
            }
            if self.problems_unlisted > 0 {
                let _ = writeln!(s, "  … and {} more", self.problems_unlisted);
            }
        }
        s
    }
}

fn ms(d: &Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Sorted samples, for percentiles.
struct Ranks(Vec<f64>);

impl Ranks {
    fn of(mut samples: Vec<f64>) -> Ranks {
        samples.sort_by(f64::total_cmp);
        Ranks(samples)
    }

    fn at(&self, p: f64) -> f64 {
        match self.0.len() {
            0 => 0.0,
            n => self.0[((p * n as f64).ceil() as usize).clamp(1, n) - 1],
        }
    }
}

/// Every trace the run sent, whether it was acknowledged, and the batches
/// that never were (cut off by the last kill, or refused).
#[derive(Default)]
struct Ledger {
    traces: HashMap<Uuid, (Sent, bool)>,
    unacknowledged: Vec<Vec<Uuid>>,
}

impl Ledger {
    fn acknowledge(&mut self, traces: &[Sent]) {
        for t in traces {
            self.traces.insert(t.id, (*t, true));
        }
    }

    fn leave_unacknowledged(&mut self, traces: &[Sent]) {
        for t in traces {
            self.traces.insert(t.id, (*t, false));
        }
        self.unacknowledged
            .push(traces.iter().map(|t| t.id).collect());
    }
}

pub fn run(plan: &Plan) -> Report {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build the client runtime");
    runtime.block_on(run_cycles(plan))
}

async fn run_cycles(plan: &Plan) -> Report {
    let started = Instant::now();
    let mut report = Report::default();
    let mut ledger = Ledger::default();
    let data_dir = plan.root.join("data");
    let db = data_dir.join("trulayer.db");
    let config = server::write_config(&plan.root, &data_dir);
    let mut rng = StdRng::seed_from_u64(plan.seed);
    let mut generators: Vec<Option<Generator>> = (0..plan.clients)
        .map(|i| {
            Some(Generator::new(
                plan.seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9),
            ))
        })
        .collect();
    let mut cut_off: Vec<Option<Batch>> = (0..plan.clients).map(|_| None).collect();
    let mut final_server = None;
    let mut acknowledged_so_far = 0;
    let mut integrity_time = Duration::ZERO;
    // A kill's progress line waits for the restart after it, whose time
    // to ready grows with what the killed run wrote.
    let mut kill_line: Option<String> = None;
    for cycle in 0..=plan.kills {
        let log = plan.root.join(format!("server-{cycle:03}.log"));
        let server = match Server::start(&plan.binary, &config, log).await {
            Ok(server) => server,
            Err(e) => {
                report.problem(format!("start {cycle}: {e}"));
                break;
            }
        };
        if cycle > 0 {
            report.ready_after_kill.push(server.ready_after);
        }
        if let Some(line) = kill_line.take() {
            eprintln!("{line}; ready again in {:.1} ms", ms(&server.ready_after));
        }
        if cycle == plan.kills {
            report.ready_final = server.ready_after;
            final_server = Some(server);
            break;
        }
        let killed = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..plan.clients)
            .map(|i| {
                let job = ClientJob {
                    url: format!("{}/v1/ingest/batch", server.base),
                    cycle: cycle as u32,
                    sizes: plan.batch_traces.clone(),
                    retry: cut_off[i].take(),
                    killed: killed.clone(),
                    acknowledged: acknowledged.clone(),
                };
                let generator = generators[i].take().expect("a generator per client");
                tokio::spawn(client(job, generator))
            })
            .collect();
        let delay = rng.random_range(plan.kill_after.clone());
        tokio::time::sleep(delay).await;
        let waiting = Instant::now();
        while acknowledged.load(Ordering::SeqCst) == 0 && waiting.elapsed() < FIRST_ACK_LIMIT {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if acknowledged.load(Ordering::SeqCst) == 0 {
            report.problem(format!(
                "cycle {cycle}: no batch acknowledged within {FIRST_ACK_LIMIT:?}; log:\n{}",
                server.log_tail()
            ));
        }
        killed.store(true, Ordering::SeqCst);
        server.kill();
        report.kills += 1;
        if report.kills == plan.kills {
            report.index_at_last_kill = server::index_state(&db);
        }
        let mut cycle_traces = 0;
        for (i, task) in tasks.into_iter().enumerate() {
            let out = match tokio::time::timeout(Duration::from_secs(60), task).await {
                Ok(Ok(out)) => out,
                Ok(Err(e)) => panic!("client {i} panicked: {e}"),
                Err(_) => panic!("client {i} still running 60 s after the kill"),
            };
            cycle_traces += take_in(&out, &mut ledger, &mut report, cycle, i);
            cut_off[i] = out.cut_off;
            generators[i] = Some(out.generator);
        }
        acknowledged_so_far += cycle_traces;
        let kill = cycle + 1;
        let checking = Instant::now();
        let integrity = (kill % plan.integrity_every.max(1) == 0 || kill == plan.kills)
            .then(|| server::integrity_check(&db));
        integrity_time += checking.elapsed();
        if let Some(result) = &integrity {
            report.integrity_checks += 1;
            if result != "ok" {
                report.problem(format!("integrity_check after kill {kill}: {result}"));
            }
        }
        if plan.progress {
            kill_line = Some(format!(
                "kill {kill:>3}/{} after {:>5.0} ms: {cycle_traces:>6} traces acknowledged \
                 in this run, {acknowledged_so_far:>8} in all{}",
                plan.kills,
                ms(&delay),
                integrity.map_or(String::new(), |r| format!("; integrity_check {r}")),
            ));
        }
    }
    // The batches cut off by the last kill are never sent again: the
    // check finds each either whole or not at all.
    for batch in cut_off.into_iter().flatten() {
        ledger.leave_unacknowledged(&batch.traces);
    }
    report.times.push((
        "ingest, kills and restarts",
        started.elapsed() - integrity_time,
    ));
    report
        .times
        .push(("integrity_check of crashed states", integrity_time));
    report.traces_sent = ledger.traces.len();
    report.traces_acknowledged = ledger.traces.values().filter(|(_, a)| *a).count();
    let Some(server) = final_server else {
        report.times.push(("all", started.elapsed()));
        return report;
    };
    verify::check(&server.base, &ledger, plan, &mut rng, &mut report).await;
    let stopping = Instant::now();
    if let Err(e) = server.stop().await {
        report.problem(format!("final stop: {e}"));
    }
    report.times.push(("clean stop", stopping.elapsed()));
    let checking = Instant::now();
    report.integrity_final = server::integrity_check(&db);
    report
        .times
        .push(("integrity_check after it", checking.elapsed()));
    if report.integrity_final != "ok" {
        report.problem(format!(
            "integrity_check after the final stop: {}",
            report.integrity_final
        ));
    }
    report.db_bytes = ["trulayer.db", "trulayer.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(data_dir.join(f)).ok())
        .map(|m| m.len())
        .sum();
    report.times.push(("all", started.elapsed()));
    report
}

/// Adds what a client saw in a cycle to the ledger and the report; returns
/// the traces it had acknowledged.
fn take_in(
    out: &ClientOut,
    ledger: &mut Ledger,
    report: &mut Report,
    cycle: usize,
    client: usize,
) -> usize {
    let mut traces_acknowledged = 0;
    for traces in &out.acknowledged {
        ledger.acknowledge(traces);
        report.batches_acknowledged += 1;
        traces_acknowledged += traces.len();
    }
    for traces in &out.refused {
        ledger.leave_unacknowledged(traces);
    }
    report.batches_cut_off += usize::from(out.cut_off.is_some());
    report.cut_off_were_stored += out.retry_was_stored;
    report.cut_off_were_not_stored += out.retry_was_not_stored;
    report.duplicates_sent += out.duplicates;
    for p in &out.problems {
        report.problem(format!("cycle {cycle}, client {client}: {p}"));
    }
    traces_acknowledged
}
