//! SIGKILL test on SQLite: three worker processes share one database file.

#[test]
fn killed_sqlite_workers_recover_to_exactly_once() {
    crash_tests::run_standard("sqlite", env!("CARGO_BIN_EXE_worker"), |dir| {
        format!("sqlite://{}", dir.join("crash.db").display())
    });
}
