//! SQLite-specific behaviour the shared suite cannot see: the file outlives
//! the store, namespaces share a file but not data, pragmas are what the
//! config says, and native failures map to the right error kinds.

use std::time::Duration;

use backend_sqlite::{SqliteConfig, SqliteStore, Synchronous};
use flowstate_core::store::{
    Condition, ErrorKind, Item, Key, Mutation, Namespace, PageRequest, PutMode, StateStore, StateStoreExt, TableName,
    WriteOp,
};
use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

fn key(sort: &str) -> Key {
    Key::new(TableName::new("t").unwrap(), "p", sort)
}

async fn raw_connection(path: &std::path::Path) -> SqliteConnection {
    SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(path)).await.expect("raw connection")
}

#[tokio::test]
async fn data_survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("durable.db");
    {
        let store = SqliteStore::open(SqliteConfig::new(&path)).await.unwrap();
        store.put(&key("a"), Item::new().with("n", 1), PutMode::Create).await.unwrap();
        store.update(&key("a"), &[Condition::ItemExists], &[Mutation::Add("n".into(), 1)]).await.unwrap();
        store
            .transact(vec![
                WriteOp::Put { key: key("b"), item: Item::new().with("n", 10), mode: PutMode::Create },
                WriteOp::Put { key: key("c"), item: Item::new(), mode: PutMode::Overwrite },
            ])
            .await
            .unwrap();
        assert!(store.delete(&key("c"), &[]).await.unwrap());
        store.close().await;
    }
    let store = SqliteStore::open(SqliteConfig::new(&path)).await.unwrap();
    assert_eq!(store.get(&key("a")).await.unwrap(), Some(Item::new().with("n", 2)));
    assert_eq!(store.get(&key("b")).await.unwrap(), Some(Item::new().with("n", 10)));
    assert_eq!(store.get(&key("c")).await.unwrap(), None);
}

#[tokio::test]
async fn namespaces_share_a_file_but_not_data() {
    let dir = tempfile::tempdir().unwrap();
    let one = SqliteStore::open(SqliteConfig::new(dir.path().join("ns.db")).with_namespace("one")).await.unwrap();
    let two = one.with_namespace(Namespace::new("two").unwrap());
    assert_eq!(two.namespace().as_str(), "two");
    one.put(&key("s"), Item::new().with("ns", "one"), PutMode::Create).await.unwrap();
    assert_eq!(two.get(&key("s")).await.unwrap(), None, "a namespace sees another's item");
    two.put(&key("s"), Item::new().with("ns", "two"), PutMode::Create).await.expect("same key, other namespace");
    assert_eq!(one.get(&key("s")).await.unwrap().unwrap().get_str("ns"), Some("one"));
    let scanned = two.scan_all(&TableName::new("t").unwrap(), b"p", 10).await.unwrap();
    assert_eq!(scanned.len(), 1);
    assert_eq!(scanned[0].1.get_str("ns"), Some("two"));
    assert!(one.delete(&key("s"), &[]).await.unwrap());
    assert!(two.get(&key("s")).await.unwrap().is_some(), "a delete crossed namespaces");
}

#[tokio::test]
async fn url_parameters_apply_and_the_file_is_wal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pragma.db");
    let url = format!("sqlite://{}?synchronous=normal&max_item_bytes=100", path.display());
    let store = SqliteStore::open_url(&url).await.unwrap();
    assert_eq!(store.capabilities().max_item_bytes, 100);
    let err = store.put(&key("big"), Item::new().with("pad", "x".repeat(100)), PutMode::Overwrite).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge);
    assert_eq!(SqliteConfig::from_url(&url).unwrap().synchronous, Synchronous::Normal);
    // WAL is a property of the file, so a fresh connection sees it.
    let mut raw = raw_connection(&path).await;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&mut raw).await.unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn a_held_write_lock_is_conflict_and_reads_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("busy.db");
    let store = SqliteStore::open(SqliteConfig::new(&path).with_busy_timeout(Duration::from_millis(50))).await.unwrap();
    store.put(&key("a"), Item::new().with("n", 1), PutMode::Create).await.unwrap();

    // Another process's writer, modelled by a second connection.
    let mut other = raw_connection(&path).await;
    sqlx::query("BEGIN IMMEDIATE").execute(&mut other).await.unwrap();
    let err = store.update(&key("a"), &[], &[Mutation::Add("n".into(), 1)]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err:?}");
    assert!(err.kind().is_retryable());
    let err = store.put(&key("b"), Item::new(), PutMode::Overwrite).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err:?}");
    assert_eq!(store.get(&key("a")).await.unwrap(), Some(Item::new().with("n", 1)), "WAL readers are not blocked");
    sqlx::query("COMMIT").execute(&mut other).await.unwrap();

    let item = store.update(&key("a"), &[], &[Mutation::Add("n".into(), 1)]).await.expect("lock released");
    assert_eq!(item.get_i64("n"), Some(2));
}

#[tokio::test]
async fn a_damaged_body_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corrupt.db");
    let store = SqliteStore::open(SqliteConfig::new(&path).with_namespace("app")).await.unwrap();
    let mut raw = raw_connection(&path).await;
    sqlx::query("INSERT INTO flowstate_items (ns, tbl, pk, sk, body) VALUES ('app', 't', x'70', x'78', x'6e6f7420a3')")
        .execute(&mut raw)
        .await
        .unwrap();
    let err = store.get(&key("x")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err:?}");
    assert!(std::error::Error::source(&err).is_some(), "the decode error is kept as the source");
    let err = store.scan(&TableName::new("t").unwrap(), b"p", PageRequest::first(10)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    let err = store.update(&key("x"), &[], &[]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt);
}

#[tokio::test]
async fn bad_configs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = SqliteStore::open(SqliteConfig::new(dir.path().join("x.db")).with_namespace("Not-Valid")).await;
    assert_eq!(err.unwrap_err().kind(), ErrorKind::InvalidInput);
    let err = SqliteStore::open(SqliteConfig::new(dir.path().join("no/such/dir/x.db"))).await;
    assert_eq!(err.unwrap_err().kind(), ErrorKind::Unavailable);
}
