//! SIGKILL test on SQLite: three worker processes share one database file.

use std::time::Duration;

use crash_tests::{KillPlan, run};

#[test]
fn killed_sqlite_workers_recover_to_exactly_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plan = KillPlan {
        worker_bin: env!("CARGO_BIN_EXE_worker").into(),
        url: format!("sqlite://{}", dir.path().join("crash.db").display()),
        namespace: conformance_tests::random_namespace().to_string(),
        workers: 3,
        transfers: 5_000,
        accounts: 5,
        initial_balance: 20,
        max_kills: 12,
        max_duration: Duration::from_secs(30),
        seed: seed(),
        log_dir: dir.path().to_owned(),
    };
    let report = run(&plan);
    eprintln!("sqlite kill test (seed {}): {report:?}", plan.seed);
    assert!(report.kills > 0, "no worker was killed mid-run: {report:?}");
    assert!(report.finished > 0, "no transfer finished: {report:?}");
}

/// `FLOWSTATE_CRASH_SEED` reproduces another kill schedule.
fn seed() -> u64 {
    std::env::var("FLOWSTATE_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_c0de)
}
