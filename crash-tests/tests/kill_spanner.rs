//! SIGKILL test on Cloud Spanner (the emulator), against
//! `FLOWSTATE_TEST_SPANNER_URL` with `SPANNER_EMULATOR_HOST` (the workers
//! inherit both); without them the test prints `skipping: …` and passes,
//! unless `FLOWSTATE_TEST_REQUIRE=1`. A killed worker can die inside a
//! read-write transaction: the row locks it held must not stall the others.

#[test]
fn killed_spanner_workers_recover_to_exactly_once() {
    let Some(url) = conformance_tests::service_var("FLOWSTATE_TEST_SPANNER_URL", &["SPANNER_EMULATOR_HOST"]) else {
        return;
    };
    crash_tests::run_standard("spanner", env!("CARGO_BIN_EXE_worker"), |_| url);
}
