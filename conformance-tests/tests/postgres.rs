//! The conformance suite on PostgreSQL, against the server named by
//! `FLOWSTATE_TEST_POSTGRES_URL` (`scripts/test.sh` starts a throwaway
//! cluster and sets it). Without it every case prints
//! `skipping: set FLOWSTATE_TEST_POSTGRES_URL` and passes, unless
//! `FLOWSTATE_TEST_REQUIRE=1`, where it fails.

use std::sync::Arc;

use backend_postgres::{PostgresConfig, PostgresStore};
use conformance_tests::{env_configured, random_namespace};
use flowstate_core::store::StateStore;

const URL_VAR: &str = "FLOWSTATE_TEST_POSTGRES_URL";

/// A fresh random namespace per case in one shared schema: cases run in
/// parallel against one server without seeing each other's rows.
async fn postgres_store() -> Arc<dyn StateStore> {
    let url = std::env::var(URL_VAR).expect("checked by skip_unless");
    let config = PostgresConfig::from_url(&url)
        .expect("FLOWSTATE_TEST_POSTGRES_URL is a postgres URL")
        .with_namespace(random_namespace().to_string())
        .with_pool_max(8);
    Arc::new(PostgresStore::open(config).await.expect("open postgres store"))
}

conformance_tests::conformance_tests!(setup = postgres_store, skip_unless = env_configured(URL_VAR));
