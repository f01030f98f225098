//! HTTP requests per primitive, counted at the wire on the SDK's in-process
//! emulator (every request the SDK sends passes its request observer): the
//! round-trip claims of the compare-and-swap strategy, checked below the
//! store API rather than by counting store calls.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use azure_core::http::Request;
use azure_data_cosmos::CosmosRuntimeBuilder;
use azure_data_cosmos_driver::in_memory_emulator::{
    ConsistencyLevel, InMemoryEmulatorHttpClient, RequestObserver, VirtualAccountConfig, VirtualRegion,
};
use backend_cosmos::{CosmosConfig, CosmosStore};
use flowstate_core::store::{Condition, ErrorKind, Item, Key, Mutation, PageRequest, PutMode, StateStore, TableName};
use serde_json::json;

const GATEWAY: &str = "https://eastus.emulator.local";

/// Counts data-plane requests on documents (`/docs`), ignoring metadata reads.
#[derive(Debug, Default)]
struct DocRequests(AtomicUsize);

impl RequestObserver for DocRequests {
    fn on_request(&self, request: &Request) {
        if request.url().path().contains("/docs") {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl DocRequests {
    fn take(&self) -> usize {
        self.0.swap(0, Ordering::SeqCst)
    }
}

/// Two stores on one emulated account (separate ETag caches, like two
/// processes) and the request counter.
async fn setup() -> (CosmosStore, CosmosStore, Arc<DocRequests>, Arc<InMemoryEmulatorHttpClient>) {
    let counter = Arc::new(DocRequests::default());
    let region = VirtualRegion::new("East US", GATEWAY.parse().unwrap());
    let account = VirtualAccountConfig::new(vec![region]).unwrap().with_consistency(ConsistencyLevel::Strong);
    let emulator = Arc::new(
        InMemoryEmulatorHttpClient::new(account)
            .with_request_observer(Arc::clone(&counter) as Arc<dyn RequestObserver>),
    );
    let config = CosmosConfig::new(format!("{GATEWAY}/"), "dGVzdGtleQ==").with_namespace("wire");
    let mut stores = Vec::new();
    for _ in 0..2 {
        let runtime = CosmosRuntimeBuilder::from(emulator.runtime_builder()).build().await.unwrap();
        stores.push(CosmosStore::open_with_runtime(config.clone(), runtime).await.unwrap());
    }
    let b = stores.pop().unwrap();
    let a = stores.pop().unwrap();
    counter.take();
    (a, b, counter, emulator)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_swap_costs_one_request_on_a_current_etag() {
    let (a, b, wire, _emulator) = setup().await;
    let key = Key::new(TableName::new("t").unwrap(), "p", "s");
    let absent = |e: &str| Condition::EntryAbsent { map: "log".into(), entry: e.into() };
    let log = |e: &str| Mutation::SetEntry { map: "log".into(), entry: e.into(), value: json!(true) };

    a.put(&key, Item::new().with("n", 0).with("log", json!({})), PutMode::Create).await.unwrap();
    assert_eq!(wire.take(), 1, "create: one request");

    a.update(&key, &[absent("1")], &[Mutation::Add("n".into(), 1), log("1")]).await.unwrap();
    assert_eq!(wire.take(), 1, "update on the ETag of our own write: one If-Match replace");

    a.update(&key, &[absent("2")], &[Mutation::Add("n".into(), 1), log("2")]).await.unwrap();
    assert_eq!(wire.take(), 1, "steady state: still one");

    b.update(&key, &[absent("3")], &[log("3")]).await.unwrap();
    assert_eq!(wire.take(), 2, "a store that never saw the item: read + replace");

    a.update(&key, &[absent("4")], &[log("4")]).await.unwrap();
    assert_eq!(wire.take(), 3, "a stale ETag: replace (412) + read + replace");

    let err = a.update(&key, &[absent("4")], &[log("4")]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConditionFailed);
    assert!(err.current().is_some_and(|c| c.entry("log", "4").is_some()));
    assert_eq!(wire.take(), 1, "a condition false on the cache is confirmed by one read, which the error carries");

    let err = a.put(&key, Item::new(), PutMode::Create).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConditionFailed);
    assert_eq!(wire.take(), 2, "create conflict: create (409) + read of the existing item");

    assert_eq!(a.get(&key).await.unwrap().and_then(|i| i.get_i64("n")), Some(2));
    assert_eq!(wire.take(), 1, "get: one point read");

    assert!(a.delete(&key, &[Condition::AttrExists("log".into())]).await.unwrap());
    assert_eq!(wire.take(), 1, "conditional delete on a current ETag: one If-Match delete");

    assert!(!a.delete(&key, &[]).await.unwrap());
    assert_eq!(wire.take(), 1, "unconditional delete: one request (404 = false)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_page_is_one_query_request() {
    let (a, _b, wire, _emulator) = setup().await;
    let t = TableName::new("rows").unwrap();
    for i in 0u8..5 {
        a.put(&Key::new(t.clone(), "p", vec![i]), Item::new(), PutMode::Overwrite).await.unwrap();
    }
    wire.take();
    let page = a.scan(&t, b"p", PageRequest::first(3)).await.unwrap();
    assert_eq!(page.items.len(), 3);
    assert_eq!(page.next, Some(vec![2]));
    assert_eq!(wire.take(), 1, "one page: one query request (TOP n+1 tells whether more follow)");
}
