//! The conformance suite on Cloud Spanner, against the database named by
//! `FLOWSTATE_TEST_SPANNER_URL` (`spanner://projects/P/instances/I/databases/D`)
//! on the emulator named by `SPANNER_EMULATOR_HOST`. `scripts/test.sh` starts
//! the Cloud Spanner emulator on free loopback ports, creates the instance and
//! database through its admin API and sets both. Without them every case
//! prints why it skipped and passes, unless `FLOWSTATE_TEST_REQUIRE=1`, where
//! it fails.

use std::sync::Arc;

use backend_spanner::{SpannerConfig, SpannerStore};
use conformance_tests::{env_configured, random_namespace};
use flowstate_core::store::StateStore;
use flowstate_core::testing::Primitive;

const URL_VAR: &str = "FLOWSTATE_TEST_SPANNER_URL";
const EMULATOR_DIR: &str = "/usr/lib/google-cloud-sdk/bin/cloud_spanner_emulator";

/// Ready when the URL is set; otherwise the reason names what is missing.
fn spanner_ready() -> Result<(), String> {
    env_configured(URL_VAR).map_err(|reason| {
        if std::path::Path::new(EMULATOR_DIR).join("gateway_main").exists() {
            format!("{reason} and SPANNER_EMULATOR_HOST (scripts/test.sh starts the emulator and sets both)")
        } else {
            format!(
                "{reason}: the Cloud Spanner emulator is not installed (no {EMULATOR_DIR}/gateway_main; Debian package \
                 google-cloud-cli-spanner-emulator)"
            )
        }
    })
}

fn config() -> SpannerConfig {
    let url = std::env::var(URL_VAR).expect("checked by skip_unless");
    SpannerConfig::from_url(&url).expect("FLOWSTATE_TEST_SPANNER_URL is a spanner:// URL")
}

/// A fresh random namespace per case, so cases run in parallel against one
/// database without seeing each other's items.
async fn spanner_store() -> Arc<dyn StateStore> {
    let config = config().with_namespace(random_namespace().to_string());
    Arc::new(SpannerStore::open(config).await.expect("open Spanner store"))
}

conformance_tests::conformance_tests!(setup = spanner_store, skip_unless = spanner_ready());

/// The round-trip table counts store calls; on Spanner each call must cost
/// the requests its capabilities declare: `update`, `delete` and `transact`
/// two (read that begins the transaction, commit), everything else one, plus
/// one read for a refused create. Printed for the closing note.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_are_the_declared_spanner_requests() {
    if !conformance_tests::should_run(spanner_ready()) {
        return;
    }
    let spanner = SpannerStore::open(config().with_namespace(random_namespace().to_string())).await.expect("open");
    let counting = Arc::new(flowstate_core::testing::CountingStore::new(spanner.clone()));
    let before = (spanner.requests(), spanner.aborts());
    conformance_tests::measure::round_trips(counting.clone()).await.expect("round trips");
    let counts = counting.counts();
    let (requests, aborts) = (spanner.requests() - before.0, spanner.aborts() - before.1);
    #[allow(clippy::print_stdout, reason = "the count belongs in the test output")]
    {
        println!(
            "Spanner: {} store calls ({counts}), {requests} requests, {aborts} aborted attempts, {} background rollbacks",
            counts.total(),
            spanner.rollbacks()
        );
    }
    let two = counts.of(Primitive::Update) + counts.of(Primitive::Delete) + counts.of(Primitive::Transact);
    let expected = counts.total() + two;
    assert!(
        requests <= expected + 2 * aborts,
        "{requests} requests for {} calls: more than the declared {expected}",
        counts.total()
    );
}
