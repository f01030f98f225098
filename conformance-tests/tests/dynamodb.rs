//! The conformance suite on DynamoDB, against the server named by
//! `FLOWSTATE_TEST_DYNAMODB_ENDPOINT` (`scripts/test.sh` starts moto's server
//! mode and sets it; LocalStack works the same). Without it every case prints
//! `skipping: set FLOWSTATE_TEST_DYNAMODB_ENDPOINT` and passes, unless
//! `FLOWSTATE_TEST_REQUIRE=1`, where it fails.

use std::sync::Arc;

use backend_dynamodb::{DynamoDbConfig, DynamoDbStore};
use conformance_tests::{env_configured, random_namespace};
use flowstate_core::store::StateStore;

const ENDPOINT_VAR: &str = "FLOWSTATE_TEST_DYNAMODB_ENDPOINT";

/// A fresh random namespace (its own DynamoDB table) per case, so cases run
/// in parallel against one server without seeing each other's items.
async fn dynamodb_store() -> Arc<dyn StateStore> {
    let endpoint = std::env::var(ENDPOINT_VAR).expect("checked by skip_unless");
    let config = DynamoDbConfig::new("us-east-1")
        .with_endpoint(endpoint)
        .with_table_prefix("fs_test_")
        .with_namespace(random_namespace().to_string());
    Arc::new(DynamoDbStore::open(config).await.expect("open DynamoDB store"))
}

conformance_tests::conformance_tests!(setup = dynamodb_store, skip_unless = env_configured(ENDPOINT_VAR));

/// The round-trip table counts store calls; on DynamoDB each must also be
/// exactly one request (no hidden fallback in the steady state).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_are_single_dynamodb_requests() {
    let Some(endpoint) = conformance_tests::service_var(ENDPOINT_VAR, &[]) else { return };
    let config = DynamoDbConfig::new("us-east-1")
        .with_endpoint(endpoint)
        .with_table_prefix("fs_test_")
        .with_namespace(random_namespace().to_string());
    let dynamo = DynamoDbStore::open(config).await.expect("open DynamoDB store");
    let counting = Arc::new(flowstate_core::testing::CountingStore::new(dynamo.clone()));
    let before = dynamo.requests();
    conformance_tests::measure::round_trips(counting.clone()).await.expect("round trips");
    let (calls, requests) = (counting.counts().total(), dynamo.requests() - before);
    #[allow(clippy::print_stdout, reason = "the count belongs in the test output")]
    {
        println!("DynamoDB: {calls} store calls, {requests} requests, {} fallbacks", dynamo.fallbacks());
    }
    assert_eq!(requests, calls, "store calls that cost more than one DynamoDB request");
}
