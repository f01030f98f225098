//! SIGKILL test on Cloud Spanner (the emulator), against
//! `FLOWSTATE_TEST_SPANNER_URL` with `SPANNER_EMULATOR_HOST` (the workers
//! inherit both); without them the test prints `skipping: …` and passes,
//! unless `FLOWSTATE_TEST_REQUIRE=1`. A killed worker can die inside a
//! read-write transaction: the row locks it held must not stall the others.

use std::time::Duration;

use conformance_tests::{env_configured, should_run};
use crash_tests::{KillPlan, run};

const URL_VAR: &str = "FLOWSTATE_TEST_SPANNER_URL";

#[test]
fn killed_spanner_workers_recover_to_exactly_once() {
    if !should_run(env_configured(URL_VAR)) {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let plan = KillPlan {
        worker_bin: env!("CARGO_BIN_EXE_worker").into(),
        url: std::env::var(URL_VAR).expect("checked above"),
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
    eprintln!("spanner kill test (seed {}): {report:?}", plan.seed);
    assert!(report.kills > 0, "no worker was killed mid-run: {report:?}");
    assert!(report.finished > 0, "no transfer finished: {report:?}");
}

/// `FLOWSTATE_CRASH_SEED` reproduces another kill schedule.
fn seed() -> u64 {
    std::env::var("FLOWSTATE_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_c0de)
}
