//! Crash durability, long: `kill -9` at random moments under batch ingest,
//! 100 times on one data directory, against the release-built
//! `trulayer-server` on 127.0.0.1; then every acknowledged trace, the
//! database's `PRAGMA integrity_check` and the tag and session filters are
//! checked. The driver is shared with the short test (`tests/crash/`).
//!
//! Run: `cargo bench --bench crash`. Exits non-zero on any problem.
//!
//! | variable                | default | meaning                                                 |
//! |-------------------------|---------|---------------------------------------------------------|
//! | `CRASH_KILLS`           | 100     | kills, each followed by a restart on the same directory |
//! | `CRASH_CLIENTS`         | 4       | concurrent ingest clients                               |
//! | `CRASH_BATCH_MIN`/`MAX` | 50/100  | traces per batch, drawn per batch                       |
//! | `CRASH_KILL_MIN_MS`/`MAX_MS` | 100/2000 | the kill comes this long after `/health` answered |
//! | `CRASH_INTEGRITY_EVERY` | 10      | `integrity_check` of the crashed database every n kills (and after the last) |
//! | `CRASH_DETAILS`         | 1000    | acknowledged traces read back in full                   |
//! | `CRASH_FILTERS`         | 20      | values checked per filter (cycle tag, customer tag, session) |
//! | `CRASH_SEED`            | random  | seed of the kill moments and the generated traces       |
//! | `CRASH_KEEP_DIR`        | unset   | put the data directory (and the server logs) under this directory and keep it |
//! | `CRASH_SERVER`          | unset   | run this server binary instead of this build's          |

#[path = "../tests/crash/durability/mod.rs"]
mod durability;

use std::path::PathBuf;
use std::time::Duration;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        _ => default,
    }
}

fn main() {
    let keep = std::env::var_os("CRASH_KEEP_DIR").map(PathBuf::from);
    let mut builder = tempfile::Builder::new();
    builder.prefix("trulayer-crash-");
    let temp = match &keep {
        Some(dir) => {
            std::fs::create_dir_all(dir).expect("create CRASH_KEEP_DIR");
            builder.tempdir_in(dir)
        }
        None => builder.tempdir(),
    }
    .expect("create a temporary directory");
    let millis = |name: &str, default: u64| Duration::from_millis(env_or(name, default));
    let seed = env_or("CRASH_SEED", uuid::Uuid::new_v4().as_u64_pair().0);
    let plan = durability::Plan {
        binary: std::env::var_os("CRASH_SERVER").map_or_else(
            || env!("CARGO_BIN_EXE_trulayer-server").into(),
            PathBuf::from,
        ),
        root: temp.path().to_path_buf(),
        kills: env_or("CRASH_KILLS", 100usize).max(1),
        clients: env_or("CRASH_CLIENTS", 4usize).max(1),
        batch_traces: env_or("CRASH_BATCH_MIN", 50usize).max(1)
            ..=env_or("CRASH_BATCH_MAX", 100usize).max(1),
        kill_after: millis("CRASH_KILL_MIN_MS", 100)..=millis("CRASH_KILL_MAX_MS", 2_000),
        integrity_every: env_or("CRASH_INTEGRITY_EVERY", 10usize).max(1),
        detail_sample: env_or("CRASH_DETAILS", 1_000usize),
        filter_checks: env_or("CRASH_FILTERS", 20usize),
        seed,
        progress: true,
    };
    assert!(
        !plan.batch_traces.is_empty() && !plan.kill_after.is_empty(),
        "CRASH_*_MIN must not be above CRASH_*_MAX"
    );
    println!("TruLayer Server crash-durability benchmark");
    println!(
        "  binary {}\n  data under {}\n  {} CPUs; {} kills; {} clients; batches of {}–{} traces; \
         kill {:?}–{:?} after ready; seed {seed}",
        plan.binary.display(),
        plan.root.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        plan.kills,
        plan.clients,
        plan.batch_traces.start(),
        plan.batch_traces.end(),
        plan.kill_after.start(),
        plan.kill_after.end(),
    );
    let report = durability::run(&plan);
    println!("\n{}", report.summary());
    if keep.is_some() {
        println!("kept {}", temp.keep().display());
    }
    if !report.problems.is_empty() {
        std::process::exit(1);
    }
}
