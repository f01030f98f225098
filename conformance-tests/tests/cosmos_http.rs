//! Smoke lane over real HTTPS: `CosmosStore` against the Cosmos-compatible
//! server `@vercel/cosmosdb-server` behind Flowstate's rewriting wrapper
//! (`tools/cosmos-server/server.js`), which `scripts/test.sh` starts on a
//! free loopback port and names in `FLOWSTATE_TEST_COSMOS_ENDPOINT` (a
//! `cosmos://127.0.0.1:PORT?key=…&accept_invalid_certs=true&http2=false` URL).
//! Without it every case prints `skipping: set FLOWSTATE_TEST_COSMOS_ENDPOINT`
//! and passes, unless `FLOWSTATE_TEST_REQUIRE=1`, where it fails.
//!
//! The full suite runs on the SDK's in-process emulator (`cosmos_emulator.rs`);
//! this lane checks what only a real server and the real transport show:
//! TLS, headers, status codes (409, 412, 404), the query path, and one engine
//! scenario end to end. Nothing here depends on batch atomicity (that server's
//! batches are not atomic, and the store does not use batches).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use backend_cosmos::{CosmosConfig, CosmosStore};
use conformance_tests::random_namespace;
use flowstate_core::store::{
    Condition, ErrorKind, Item, Key, Mutation, PageRequest, PutMode, StateStore, StateStoreExt, TableName,
};
use flowstate_core::{Context, Runtime};
use serde_json::json;

const ENDPOINT_VAR: &str = "FLOWSTATE_TEST_COSMOS_ENDPOINT";

/// A store on a fresh random namespace (its own container), or `None` when skipped.
async fn http_store() -> Option<CosmosStore> {
    let url = conformance_tests::service_var(ENDPOINT_VAR, &[])?;
    let config = CosmosConfig::from_url(&url)
        .expect("FLOWSTATE_TEST_COSMOS_ENDPOINT is a cosmos:// URL")
        .with_namespace(random_namespace().to_string());
    Some(CosmosStore::open(config).await.expect("open cosmos store over HTTPS"))
}

fn table(name: &str) -> TableName {
    TableName::new(name.to_owned()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_create_read_replace_delete_with_409_and_412() {
    let Some(store) = http_store().await else { return };
    let key = Key::new(table("items"), b"p\x00/1".to_vec(), b"a/b?#\\".to_vec());
    assert_eq!(store.get(&key).await.unwrap(), None, "a missing item reads as None (404)");

    let first = Item::new().with("n", 1).with("log", json!({}));
    store.create(&key, first.clone()).await.unwrap();
    assert_eq!(store.get(&key).await.unwrap(), Some(first.clone()));

    // 409: the create conflict carries the existing item.
    let err = store.create(&key, Item::new().with("n", 99)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConditionFailed);
    assert_eq!(err.current(), Some(&first));

    // Conditional replace on the cached ETag.
    let next = store
        .update(
            &key,
            &[Condition::EntryAbsent { map: "log".into(), entry: "i-1".into() }],
            &[
                Mutation::Add("n".into(), 1),
                Mutation::SetEntry { map: "log".into(), entry: "i-1".into(), value: json!(true) },
            ],
        )
        .await
        .unwrap();
    assert_eq!(next.get_i64("n"), Some(2));

    // 412: a second store (its own ETag cache) changes the item; the first
    // one's If-Match replace fails, it re-reads and applies on the new version.
    let other = CosmosStore::open(
        CosmosConfig::from_url(&std::env::var(ENDPOINT_VAR).unwrap())
            .unwrap()
            .with_namespace(store.namespace().to_string()),
    )
    .await
    .unwrap();
    other.update(&key, &[], &[Mutation::Add("n".into(), 10)]).await.unwrap();
    let after = store.update(&key, &[], &[Mutation::Add("n".into(), 100)]).await.unwrap();
    assert_eq!(after.get_i64("n"), Some(112), "no update lost across the 412");

    // A false condition: ConditionFailed with the current item.
    let err = store.update(&key, &[Condition::AttrEquals("n".into(), json!(0))], &[]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConditionFailed);
    assert_eq!(err.current().and_then(|c| c.get_i64("n")), Some(112));

    // Update of a missing item is NotFound.
    let missing = Key::new(table("items"), "p", "nope");
    assert_eq!(
        store.update(&missing, &[], &[Mutation::Add("n".into(), 1)]).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );

    // Conditional delete: false, then true with If-Match; then idempotent.
    let err = store.delete(&key, &[Condition::Below { attr: "n".into(), bound: 5 }]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConditionFailed);
    assert!(store.delete(&key, &[Condition::AttrExists("log".into())]).await.unwrap());
    assert_eq!(store.get(&key).await.unwrap(), None);
    assert!(!store.delete(&key, &[]).await.unwrap(), "deleting a missing item says false (404)");

    store.put(&key, Item::new().with("n", 7), PutMode::Overwrite).await.unwrap();
    assert_eq!(store.get(&key).await.unwrap().and_then(|i| i.get_i64("n")), Some(7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_scan_is_partition_scoped_ordered_and_paged() {
    let Some(store) = http_store().await else { return };
    let t = table("rows");
    let sorts: Vec<Vec<u8>> = vec![vec![0xff], vec![], vec![0x00], b"a".to_vec(), vec![0x00, 0x01], b"B".to_vec()];
    for (i, s) in sorts.iter().enumerate() {
        store.put(&Key::new(t.clone(), "p1", s.clone()), Item::new().with("i", i), PutMode::Overwrite).await.unwrap();
    }
    // Neighbours that must not show up: another partition, another table.
    store.put(&Key::new(t.clone(), "p2", "a"), Item::new(), PutMode::Overwrite).await.unwrap();
    store.put(&Key::new(table("other"), "p1", "a"), Item::new(), PutMode::Overwrite).await.unwrap();

    let mut expected = sorts.clone();
    expected.sort();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.scan(&t, b"p1", PageRequest { after, limit: 2 }).await.unwrap();
        assert!(page.items.len() <= 2);
        seen.extend(page.items.into_iter().map(|(sk, _)| sk));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, expected, "byte order, every item once, nothing from other partitions or tables");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_engine_write_read_and_replay() {
    let Some(store) = http_store().await else { return };
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    let rt = Runtime::builder(Arc::new(store))
        .register("bump", move |ctx: Context, by: i64| {
            let counted = Arc::clone(&counted);
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                let now: i64 = ctx.read("counters", "c").await?.unwrap_or(0);
                ctx.write("counters", "c", &(now + by)).await?;
                ctx.read::<i64>("counters", "c").await.map(|v| v.unwrap_or(0))
            }
        })
        .build();
    let first: i64 = rt.invoke("bump", &5, Some("bump-1")).await.unwrap();
    assert_eq!(first, 5);
    let replayed: i64 = rt.invoke("bump", &5, Some("bump-1")).await.unwrap();
    assert_eq!(replayed, 5, "the same instance returns its logged result");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "a finished instance is not run again");
    let second: i64 = rt.invoke("bump", &5, Some("bump-2")).await.unwrap();
    assert_eq!(second, 10, "a new instance sees the first one's write");
    assert_eq!(rt.peek("counters", "c").await.unwrap(), Some(json!(10)));
}
