//! Crash durability, short: five `kill -9` at random moments under batch
//! ingest on one data directory, then every acknowledged trace, the
//! database's integrity and the tag and session filters are checked. The
//! long run (100 kills) is `cargo bench --bench crash`; both share
//! `durability`.

mod durability;

use std::time::Duration;

#[test]
fn acknowledged_traces_survive_kill_9_under_batch_ingest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seed = uuid::Uuid::new_v4().as_u64_pair().0;
    let plan = durability::Plan {
        binary: env!("CARGO_BIN_EXE_trulayer-server").into(),
        root: dir.path().to_path_buf(),
        kills: 5,
        clients: 4,
        batch_traces: 50..=100,
        kill_after: Duration::from_millis(500)..=Duration::from_millis(2_500),
        integrity_every: 1,
        detail_sample: 100,
        filter_checks: 10,
        seed,
        progress: true,
    };
    let report = durability::run(&plan);
    eprintln!("seed {seed}\n{}", report.summary());
    assert!(report.problems.is_empty(), "{}", report.summary());
    assert_eq!(report.kills, 5, "every cycle ended in a kill");
    assert_eq!(report.lost, 0);
    // Each cycle acknowledged a batch before its kill and sent one again.
    assert!(report.batches_acknowledged >= 5, "{}", report.summary());
    assert!(report.duplicates_sent >= 5, "{}", report.summary());
    assert!(report.traces_found >= report.traces_acknowledged);
    assert_eq!(report.integrity_checks, 5);
    assert_eq!(report.integrity_final, "ok");
    assert_eq!(report.details_checked, 100);
    // Five cycle tags, ten customers, ten sessions.
    assert_eq!(report.filter_queries, 25);
}
