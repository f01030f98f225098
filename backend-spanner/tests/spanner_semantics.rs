//! Spanner-specific checks beyond the shared conformance suite, against the
//! emulator: the requests each primitive costs on the wire, the table created
//! on first use (also by racing opens, and a foreign table refused), sessions
//! that vanish server-side, a transaction abandoned by a dead client, and
//! clear errors for a missing database or an unreachable server.
//!
//! They run against `FLOWSTATE_TEST_SPANNER_URL` on the emulator named by
//! `SPANNER_EMULATOR_HOST` (`scripts/test.sh` sets both); without them each
//! test prints `skipping: …` and passes, unless `FLOWSTATE_TEST_REQUIRE=1`.

use std::time::{Duration, Instant};

use backend_spanner::{SpannerConfig, SpannerStore};
use flowstate_core::store::{
    Condition, ErrorKind, Item, Key, Mutation, PageRequest, PutMode, StateStore, TableName, WriteOp,
};
use gcloud_gax::conn::{ConnectionOptions, Environment};
use gcloud_googleapis::spanner::admin::database::v1::{CreateDatabaseRequest, UpdateDatabaseDdlRequest};
use gcloud_googleapis::spanner::v1::transaction_options::{Mode, ReadWrite};
use gcloud_googleapis::spanner::v1::transaction_selector::Selector;
use gcloud_googleapis::spanner::v1::{
    CreateSessionRequest, DeleteSessionRequest, KeySet, ListSessionsRequest, ReadRequest, TransactionOptions,
    TransactionSelector,
};
use gcloud_spanner::admin::AdminClientConfig;
use gcloud_spanner::admin::client::Client as AdminClient;
use gcloud_spanner::apiv1::conn_pool::ConnectionManager;
use gcloud_spanner::apiv1::spanner_client::Client as GrpcClient;

const URL_VAR: &str = "FLOWSTATE_TEST_SPANNER_URL";

/// The database URL, or `None` (after printing why) when the test is skipped.
fn server_url() -> Option<String> {
    conformance_tests::service_var(URL_VAR, &["SPANNER_EMULATOR_HOST"])
}

/// A fresh identifier per call.
fn random_name(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

async fn open(url: &str) -> SpannerStore {
    let config = SpannerConfig::from_url(url).expect("spanner URL").with_namespace(random_name("ns"));
    SpannerStore::open(config).await.expect("open spanner store")
}

fn key(sort: &str) -> Key {
    Key::new(TableName::new("sem").unwrap(), "p", sort)
}

/// A raw gRPC client to the emulator, for what a well-behaved store never
/// does (abandon a transaction, delete sessions under a pool).
async fn raw_client() -> GrpcClient {
    let host = std::env::var("SPANNER_EMULATOR_HOST").expect("checked by server_url");
    let conns = ConnectionManager::new(1, &Environment::Emulator(host), "", &ConnectionOptions::default())
        .await
        .expect("connect to the emulator");
    conns.conn()
}

fn database(url: &str) -> String {
    SpannerConfig::from_url(url).expect("spanner URL").database
}

async fn admin() -> AdminClient {
    let host = std::env::var("SPANNER_EMULATOR_HOST").expect("checked by server_url");
    AdminClient::new(AdminClientConfig { environment: Environment::Emulator(host), ..AdminClientConfig::default() })
        .await
        .expect("admin client")
}

/// The URL of a new, empty database in the instance of `url`, for a test
/// that disturbs a whole database (its sessions, its locks).
async fn fresh_database(url: &str) -> String {
    let db = database(url);
    let instance = db.rsplit_once("/databases/").expect("database path").0.to_owned();
    let id = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
    let request = CreateDatabaseRequest {
        parent: instance.clone(),
        create_statement: format!("CREATE DATABASE `{id}`"),
        ..CreateDatabaseRequest::default()
    };
    admin().await.database().create_database(request, None).await.unwrap().wait(None).await.unwrap();
    format!("spanner://{instance}/databases/{id}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_primitive_costs_its_declared_requests() {
    let Some(url) = server_url() else { return };
    let store = open(&url).await;
    let t = TableName::new("sem").unwrap();
    store.put(&key("warm"), Item::new().with("n", 0), PutMode::Overwrite).await.unwrap();
    let check = async |what: &str, expected: u64, op: std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>>| {
        let (before, aborts) = (store.requests(), store.aborts());
        op.await;
        let spent = store.requests() - before;
        let retried = store.aborts() - aborts;
        assert!(
            spent == expected || (retried > 0 && spent <= expected * (retried + 1)),
            "{what}: {spent} requests, declared {expected} ({retried} aborted attempts)"
        );
    };
    let s = &store;
    check(
        "put overwrite",
        1,
        Box::pin(async { s.put(&key("a"), Item::new().with("n", 1), PutMode::Overwrite).await.unwrap() }),
    )
    .await;
    check(
        "put create",
        1,
        Box::pin(async { s.put(&key("b"), Item::new().with("n", 1), PutMode::Create).await.unwrap() }),
    )
    .await;
    check(
        "refused create (insert + read of the existing item)",
        2,
        Box::pin(async {
            let e = s.put(&key("b"), Item::new(), PutMode::Create).await.unwrap_err();
            assert_eq!(e.current().and_then(|i| i.get_i64("n")), Some(1));
        }),
    )
    .await;
    check("get", 1, Box::pin(async { assert!(s.get(&key("a")).await.unwrap().is_some()) })).await;
    check(
        "update (read that begins + commit)",
        2,
        Box::pin(async {
            s.update(&key("a"), &[Condition::ItemExists], &[Mutation::Add("n".into(), 1)]).await.unwrap();
        }),
    )
    .await;
    check(
        "failed update (the read; the rollback goes in the background)",
        1,
        Box::pin(async {
            let e = s.update(&key("a"), &[Condition::AttrAbsent("n".into())], &[]).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::ConditionFailed);
            assert_eq!(e.current().and_then(|i| i.get_i64("n")), Some(2), "the current item comes with the refusal");
        }),
    )
    .await;
    check(
        "scan page",
        1,
        Box::pin(async { assert_eq!(s.scan(&t, b"p", PageRequest::first(10)).await.unwrap().items.len(), 3) }),
    )
    .await;
    check(
        "transact of three ops (one read of all keys + commit)",
        2,
        Box::pin(async {
            s.transact(vec![
                WriteOp::Put { key: key("c"), item: Item::new(), mode: PutMode::Create },
                WriteOp::Update { key: key("a"), conditions: vec![], mutations: vec![Mutation::Add("n".into(), 1)] },
                WriteOp::Delete { key: key("b"), conditions: vec![] },
            ])
            .await
            .unwrap()
        }),
    )
    .await;
    check(
        "transact of puts only (one single-use commit)",
        1,
        Box::pin(async {
            s.transact(vec![
                WriteOp::Put { key: key("p1"), item: Item::new(), mode: PutMode::Create },
                WriteOp::Put { key: key("p2"), item: Item::new().with("n", 7), mode: PutMode::Overwrite },
            ])
            .await
            .unwrap()
        }),
    )
    .await;
    check(
        "refused transact of puts (the commit, then the read-write path names the op)",
        2,
        Box::pin(async {
            let e = s
                .transact(vec![
                    WriteOp::Put { key: key("p3"), item: Item::new(), mode: PutMode::Create },
                    WriteOp::Put { key: key("p2"), item: Item::new(), mode: PutMode::Create },
                ])
                .await
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::ConditionFailed);
            assert_eq!(e.current().and_then(|i| i.get_i64("n")), Some(7), "the item the create met");
        }),
    )
    .await;
    assert_eq!(store.get(&key("p3")).await.unwrap(), None, "a refused batch writes nothing");
    check("delete", 2, Box::pin(async { assert!(s.delete(&key("c"), &[]).await.unwrap()) })).await;
    check(
        "delete of a missing item (read only)",
        1,
        Box::pin(async { assert!(!s.delete(&key("c"), &[]).await.unwrap()) }),
    )
    .await;
    assert_eq!(store.get(&key("a")).await.unwrap().and_then(|i| i.get_i64("n")), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_opens_create_one_table_and_a_foreign_table_is_refused() {
    let Some(url) = server_url() else { return };
    let table = random_name("race").to_lowercase();
    let table = &table[..table.len().min(40)];
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let config = SpannerConfig::from_url(&url).unwrap().with_table(table.to_owned());
            tokio::spawn(async move { SpannerStore::open(config).await.map(|_| ()) })
        })
        .collect();
    for open in opens {
        open.await.unwrap().expect("every racing open succeeds");
    }
    let store = SpannerStore::open(SpannerConfig::from_url(&url).unwrap().with_table(table.to_owned())).await.unwrap();
    store.put(&key("x"), Item::new().with("v", 1), PutMode::Create).await.unwrap();

    // A table of the chosen name with other columns: reported, never altered.
    let foreign = format!("foreign_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let host = std::env::var("SPANNER_EMULATOR_HOST").unwrap();
    let admin = AdminClient::new(AdminClientConfig {
        environment: Environment::Emulator(host),
        ..AdminClientConfig::default()
    })
    .await
    .unwrap();
    let ddl = UpdateDatabaseDdlRequest {
        database: database(&url),
        statements: vec![format!("CREATE TABLE {foreign} (id INT64 NOT NULL, note STRING(MAX)) PRIMARY KEY (id)")],
        ..UpdateDatabaseDdlRequest::default()
    };
    admin.database().update_database_ddl(ddl, None).await.unwrap().wait(None).await.unwrap();
    let err = SpannerStore::open(SpannerConfig::from_url(&url).unwrap().with_table(foreign.clone())).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.message().contains("not a Flowstate table"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_deleted_under_the_pool_are_replaced() {
    let Some(url) = server_url() else { return };
    let url = fresh_database(&url).await;
    let store = open(&url).await;
    for i in 0..4 {
        store.put(&key(&format!("s{i}")), Item::new().with("n", i), PutMode::Overwrite).await.unwrap();
    }
    // Delete every session of the database, as the service does after an
    // hour idle: the pool's idle sessions are now unknown to the server.
    let mut raw = raw_client().await;
    let sessions = raw
        .list_sessions(ListSessionsRequest { database: database(&url), ..ListSessionsRequest::default() }, false, None)
        .await
        .unwrap()
        .into_inner()
        .sessions;
    assert!(!sessions.is_empty());
    for s in sessions {
        let _ = raw.delete_session(DeleteSessionRequest { name: s.name }, false, None).await;
    }
    assert_eq!(store.get(&key("s1")).await.unwrap().and_then(|i| i.get_i64("n")), Some(1));
    let item = store.update(&key("s2"), &[Condition::ItemExists], &[Mutation::Add("n".into(), 10)]).await.unwrap();
    assert_eq!(item.get_i64("n"), Some(12));
    store.put(&key("s9"), Item::new(), PutMode::Create).await.unwrap();
    assert_eq!(
        store.scan(&TableName::new("sem").unwrap(), b"p", PageRequest::first(100)).await.unwrap().items.len(),
        5
    );
}

/// A client that dies inside a read-write transaction leaves it open on the
/// server. Spanner (and the emulator) abort such a transaction in favour of
/// others, so the store's next transaction on the same row gets through
/// (retrying aborts) instead of waiting forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_abandoned_by_a_dead_client_does_not_block_the_row() {
    let Some(url) = server_url() else { return };
    let url = fresh_database(&url).await;
    let store = open(&url).await;
    let k = key("abandoned");
    store.put(&k, Item::new().with("n", 1), PutMode::Overwrite).await.unwrap();

    let mut raw = raw_client().await;
    let session = raw
        .create_session(CreateSessionRequest { database: database(&url), session: None }, false, None)
        .await
        .unwrap()
        .into_inner();
    let begin = TransactionOptions { mode: Some(Mode::ReadWrite(ReadWrite::default())), ..Default::default() };
    let table = SpannerConfig::from_url(&url).unwrap().table;
    // Read (and lock) the row in a transaction that is never finished.
    raw.read(
        ReadRequest {
            session: session.name.clone(),
            transaction: Some(TransactionSelector { selector: Some(Selector::Begin(begin)) }),
            table,
            columns: vec!["body".into()],
            key_set: Some(KeySet { all: true, ..KeySet::default() }),
            ..ReadRequest::default()
        },
        false,
        None,
    )
    .await
    .unwrap();

    let started = Instant::now();
    let item = store.update(&k, &[Condition::ItemExists], &[Mutation::Add("n".into(), 1)]).await.unwrap();
    let waited = started.elapsed();
    eprintln!("update after an abandoned transaction: {waited:?}, {} aborted attempts", store.aborts());
    assert_eq!(item.get_i64("n"), Some(2));
    assert!(waited < Duration::from_secs(20), "waited {waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_database_and_unreachable_server_are_clear_errors() {
    let Some(url) = server_url() else { return };
    let missing = SpannerConfig::from_url(&url).unwrap();
    let missing = SpannerConfig::new(missing.database.replace("/databases/", "/databases/missing_"));
    let err = SpannerStore::open(missing).await.unwrap_err();
    assert!(err.message().contains("not found") || err.message().contains("Not found"), "{err}");
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");

    // Nothing listens on port 1 of the loopback: refused at once, not hung.
    let started = Instant::now();
    let config = SpannerConfig::new(database(&url)).with_emulator_host("127.0.0.1:1");
    let err = SpannerStore::open(config).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

/// A `Read` answers with at most 10 MiB; a page of large items must still
/// come back whole (the store shrinks the page and the cursor continues).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_of_large_items_pages_under_the_reply_limit() {
    let Some(url) = server_url() else { return };
    let store = open(&url).await;
    let big = "x".repeat(store.capabilities().max_item_bytes - 100);
    let n = 12;
    for i in 0..n {
        store.put(&key(&format!("big{i:02}")), Item::new().with("b", big.as_str()), PutMode::Overwrite).await.unwrap();
    }
    let (mut seen, mut after, mut pages) = (0, None, 0);
    loop {
        let page = store.scan(&TableName::new("sem").unwrap(), b"p", PageRequest { after, limit: 100 }).await.unwrap();
        pages += 1;
        seen += page.items.len();
        assert!(page.items.iter().all(|(_, item)| item.get_str("b").map(str::len) == Some(big.len())));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    eprintln!("{n} items of {} bytes in {pages} pages", big.len());
    assert_eq!(seen, n);
}
