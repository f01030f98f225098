//! SIGKILL test on PostgreSQL, against `FLOWSTATE_TEST_POSTGRES_URL`; without
//! it the test prints `skipping: …` and passes, unless `FLOWSTATE_TEST_REQUIRE=1`.

#[test]
fn killed_postgres_workers_recover_to_exactly_once() {
    let Some(url) = conformance_tests::service_var("FLOWSTATE_TEST_POSTGRES_URL", &[]) else { return };
    crash_tests::run_standard("postgres", env!("CARGO_BIN_EXE_worker"), |_| url);
}
