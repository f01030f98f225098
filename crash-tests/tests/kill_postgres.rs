//! SIGKILL test on PostgreSQL, against `FLOWSTATE_TEST_POSTGRES_URL`; without
//! it the test prints `skipping: …` and passes, unless `FLOWSTATE_TEST_REQUIRE=1`.

use conformance_tests::{env_configured, should_run};

const URL_VAR: &str = "FLOWSTATE_TEST_POSTGRES_URL";

#[test]
fn killed_postgres_workers_recover_to_exactly_once() {
    if !should_run(env_configured(URL_VAR)) {
        return;
    }
    let url = std::env::var(URL_VAR).expect("checked above");
    crash_tests::run_standard("postgres", env!("CARGO_BIN_EXE_worker"), |_| url);
}
