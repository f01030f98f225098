//! Backend-specific behaviour the shared conformance suite does not see:
//! request counts of the fallback paths, DynamoDB's own 400 KB limit, table
//! creation races, and the error kinds of unreachable or silent servers.
//!
//! Server-backed tests use `FLOWSTATE_TEST_DYNAMODB_ENDPOINT` (moto from
//! `scripts/test.sh`); without it they print `skipping: ...` and pass, unless
//! `FLOWSTATE_TEST_REQUIRE=1`.

#![allow(clippy::print_stdout, reason = "skips are reported on stdout")]

use backend_dynamodb::{DynamoDbConfig, DynamoDbStore};
use flowstate_core::store::{Condition, ErrorKind, Item, Key, Mutation, PutMode, StateStore, TableName};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ENDPOINT_VAR: &str = "FLOWSTATE_TEST_DYNAMODB_ENDPOINT";

fn endpoint() -> Option<String> {
    conformance_tests::service_var(ENDPOINT_VAR, &[])
}

fn namespace() -> String {
    format!("be_{}", uuid::Uuid::new_v4().simple())
}

async fn store_with(config: impl FnOnce(DynamoDbConfig) -> DynamoDbConfig) -> Option<DynamoDbStore> {
    let endpoint = endpoint()?;
    let config = config(DynamoDbConfig::new("us-east-1").with_endpoint(endpoint).with_namespace(namespace()));
    Some(DynamoDbStore::open(config).await.expect("open DynamoDB store"))
}

/// moto parses a 400 KB item (a list of 130 000 numbers at worst) in seconds,
/// and serializes requests, so the tests that send such items allow more
/// than the default 10 s per request: they check sizes, not latency.
const MOTO_BIG_ITEM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

fn key(sort: &str) -> Key {
    Key::new(TableName::new("t").unwrap(), "p", sort)
}

/// Requests sent by `f`.
async fn requests<T>(store: &DynamoDbStore, f: impl Future<Output = T>) -> (T, u64) {
    let before = store.requests();
    let out = f.await;
    (out, store.requests() - before)
}

#[tokio::test]
async fn set_entry_on_an_absent_map_costs_one_compare_and_swap() {
    let Some(store) = store_with(|c| c).await else { return };
    let k = key("s");
    store.put(&k, Item::new().with("n", 1), PutMode::Create).await.unwrap();
    let set = |e: &str| vec![Mutation::SetEntry { map: "log".into(), entry: e.into(), value: json!(e) }];
    let (item, n) = requests(&store, store.update(&k, &[], &set("a"))).await;
    assert_eq!(item.unwrap(), Item::new().with("n", 1).with("log", json!({"a": "a"})));
    assert_eq!((n, store.fallbacks()), (2, 1), "refused update + compare-and-swap put");
    let (item, n) = requests(&store, store.update(&k, &[], &set("b"))).await;
    assert_eq!(item.unwrap().entry("log", "b"), Some(&json!("b")));
    assert_eq!((n, store.fallbacks()), (1, 1), "the map exists now: one native update");
}

#[tokio::test]
async fn a_coarse_size_bound_is_rejudged_exactly() {
    let Some(store) = store_with(|c| c.with_max_item_bytes(2_000)).await else { return };
    let k = key("s");
    store.put(&k, Item::new().with("pad", "x".repeat(1_000)), PutMode::Overwrite).await.unwrap();
    // Each Set replaces the value, but the stored bound counts it as growth:
    // after two, the bound (1000 + 2 x 410) no longer proves the third fits.
    let mut total = 0;
    for i in 0..6 {
        let v = format!("{i}").repeat(400);
        let (item, n) = requests(&store, store.update(&k, &[], &[Mutation::Set("v".into(), json!(v))])).await;
        assert_eq!(item.unwrap().get_str("v"), Some(v.as_str()));
        total += n;
    }
    let fallbacks = store.fallbacks();
    assert!((1..=3).contains(&fallbacks), "fallbacks: {fallbacks}");
    assert_eq!(total, 6 + fallbacks, "each fallback costs exactly one more request");
    // A real overflow is TooLarge in one request, and changes nothing.
    let before = store.get(&k).await.unwrap();
    let (r, n) = requests(&store, store.update(&k, &[], &[Mutation::Set("w".into(), json!("y".repeat(600)))])).await;
    assert_eq!(r.unwrap_err().kind(), ErrorKind::TooLarge);
    assert_eq!(n, 1);
    assert_eq!(store.get(&k).await.unwrap(), before);
}

#[tokio::test]
async fn static_type_errors_cost_one_read() {
    let Some(store) = store_with(|c| c).await else { return };
    let k = key("s");
    let bad = [Mutation::Set("a".into(), json!("x")), Mutation::Add("a".into(), 1)];
    let (r, n) = requests(&store, store.update(&k, &[], &bad)).await;
    assert_eq!((r.unwrap_err().kind(), n), (ErrorKind::NotFound, 1));
    store.put(&k, Item::new().with("b", 1), PutMode::Overwrite).await.unwrap();
    let (r, n) = requests(&store, store.update(&k, &[], &bad)).await;
    assert_eq!((r.unwrap_err().kind(), n), (ErrorKind::InvalidInput, 1));
    let (r, n) = requests(&store, store.update(&k, &[Condition::AttrEquals("b".into(), json!(2))], &bad)).await;
    assert_eq!((r.unwrap_err().kind(), n), (ErrorKind::ConditionFailed, 1), "the condition is checked first");
}

#[tokio::test]
async fn dynamodb_own_size_limit_is_too_large() {
    // A limit above DynamoDB's: DynamoDB's own refusal must still be TooLarge.
    let Some(store) =
        store_with(|c| c.with_max_item_bytes(2 * 1024 * 1024).with_request_timeout(MOTO_BIG_ITEM_TIMEOUT)).await
    else {
        return;
    };
    let k = key("big");
    let r = store.put(&k, Item::new().with("pad", "x".repeat(500 * 1024)), PutMode::Overwrite).await;
    assert_eq!(r.unwrap_err().kind(), ErrorKind::TooLarge);
    store.put(&k, Item::new().with("pad", "x".repeat(300 * 1024)), PutMode::Overwrite).await.unwrap();
    let r = store.update(&k, &[], &[Mutation::Set("more".into(), json!("y".repeat(200 * 1024)))]).await;
    assert_eq!(r.unwrap_err().kind(), ErrorKind::TooLarge);
    assert_eq!(store.get(&k).await.unwrap().unwrap().get("more"), None);
}

#[tokio::test]
async fn dense_items_at_the_default_limit_are_accepted() {
    let Some(store) = store_with(|c| c.with_request_timeout(MOTO_BIG_ITEM_TIMEOUT)).await else { return };
    let max = store.capabilities().max_item_bytes;
    // A list of single digits: the most DynamoDB bytes per JSON byte.
    let empty = Item::new().with("l", json!([])).with("p", "");
    let n = (max - empty.encoded_len()) / 2;
    let list = Item::new().with("l", serde_json::Value::Array(vec![json!(1); n])).with("p", "");
    let item = list.clone().with("p", "x".repeat(max - list.encoded_len()));
    assert_eq!(item.encoded_len(), max);
    store.put(&key("dense"), item.clone(), PutMode::Create).await.unwrap();
    assert_eq!(store.get(&key("dense")).await.unwrap(), Some(item));
}

#[tokio::test]
async fn racing_opens_of_a_new_namespace_both_succeed() {
    let Some(endpoint) = endpoint() else { return };
    let config = DynamoDbConfig::new("us-east-1").with_endpoint(endpoint).with_namespace(namespace());
    let (a, b) = tokio::join!(DynamoDbStore::open(config.clone()), DynamoDbStore::open(config));
    let (a, b) = (a.expect("first open"), b.expect("second open"));
    a.put(&key("x"), Item::new().with("v", 1), PutMode::Create).await.unwrap();
    assert_eq!(b.get(&key("x")).await.unwrap(), Some(Item::new().with("v", 1)));
}

#[tokio::test]
async fn an_unreachable_endpoint_is_unavailable() {
    // Nothing listens on a port we just bound and released.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = DynamoDbConfig::new("us-east-1").with_endpoint(format!("http://127.0.0.1:{port}"));
    let err = DynamoDbStore::open(config).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err:?}");
}

/// A server that answers `DescribeTable` (an ACTIVE Flowstate table) and
/// drops every other request without an answer, as a connection lost after
/// sending would.
async fn silent_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut seen = Vec::new();
                loop {
                    let Ok(n) = socket.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&seen).to_lowercase();
                    let Some(head_end) = text.find("\r\n\r\n") else { continue };
                    let length: usize = text[..head_end]
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
                        .unwrap_or(0);
                    if seen.len() < head_end + 4 + length {
                        continue;
                    }
                    if !text.contains("dynamodb_20120810.describetable") {
                        return; // drop the connection: no answer
                    }
                    let body = r#"{"Table":{"TableName":"t","TableStatus":"ACTIVE","KeySchema":[{"AttributeName":"pk","KeyType":"HASH"},{"AttributeName":"sk","KeyType":"RANGE"}]}}"#;
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if socket.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                    seen.clear();
                }
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_lost_answer_is_indeterminate_for_writes_and_unavailable_for_reads() {
    let endpoint = silent_server().await;
    let store = DynamoDbStore::open(DynamoDbConfig::new("us-east-1").with_endpoint(endpoint)).await.unwrap();
    let err = store.put(&key("s"), Item::new(), PutMode::Overwrite).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Indeterminate, "{err:?}");
    assert!(err.kind().may_have_applied());
    let err = store.update(&key("s"), &[], &[Mutation::Add("n".into(), 1)]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Indeterminate, "{err:?}");
    let err = store.get(&key("s")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err:?}");
}
