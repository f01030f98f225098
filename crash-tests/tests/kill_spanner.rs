//! SIGKILL test on Cloud Spanner (the emulator), against
//! `FLOWSTATE_TEST_SPANNER_URL` with `SPANNER_EMULATOR_HOST` (the workers
//! inherit both); without them the test prints `skipping: …` and passes,
//! unless `FLOWSTATE_TEST_REQUIRE=1`. A killed worker can die inside a
//! read-write transaction: the row locks it held must not stall the others.

use conformance_tests::{env_configured, should_run};

const URL_VAR: &str = "FLOWSTATE_TEST_SPANNER_URL";

#[test]
fn killed_spanner_workers_recover_to_exactly_once() {
    if !should_run(env_configured(URL_VAR).and_then(|()| env_configured("SPANNER_EMULATOR_HOST"))) {
        return;
    }
    let url = std::env::var(URL_VAR).expect("checked above");
    crash_tests::run_standard("spanner", env!("CARGO_BIN_EXE_worker"), |_| url);
}
