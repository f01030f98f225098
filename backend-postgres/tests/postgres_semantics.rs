//! PostgreSQL-specific checks beyond the shared conformance suite: values
//! that `jsonb` does not hold natively (U+0000, float types, numbers near
//! `i64` limits) against the reference evaluator, the exact size limit,
//! concurrent schema creation, what a failed condition returns under
//! contention, and the error mapping against a real server.
//!
//! They run against `FLOWSTATE_TEST_POSTGRES_URL`; without it each test
//! prints `skipping: …` and passes, unless `FLOWSTATE_TEST_REQUIRE=1`.

use std::sync::Arc;
use std::time::Duration;

use backend_postgres::{PostgresConfig, PostgresStore};
use flowstate_core::store::eval::{apply_mutations, check_size, conditions_hold};
use flowstate_core::store::{
    CmpOp, Condition, ErrorKind, Item, Key, Mutation, Predicate, PutMode, StateStore, TableName, WriteOp,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const URL_VAR: &str = "FLOWSTATE_TEST_POSTGRES_URL";

/// The server URL, or `None` (after printing why) when the test is skipped.
fn server_url() -> Option<String> {
    conformance_tests::service_var(URL_VAR, &[])
}

/// A fresh identifier per call (clock nanos plus a process-wide counter).
fn random_name(prefix: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    format!("{prefix}_{nanos:016x}_{n}_{}", std::process::id())
}

async fn open(url: &str, tweak: impl FnOnce(PostgresConfig) -> PostgresConfig) -> PostgresStore {
    let config = PostgresConfig::from_url(url).expect("postgres URL").with_namespace(random_name("ns"));
    PostgresStore::open(tweak(config)).await.expect("open postgres store")
}

fn key(sort: &str) -> Key {
    Key::new(TableName::new("sem").unwrap(), "p", sort)
}

/// Values `jsonb` does not hold as-is, and neighbours that must stay distinct.
fn exotic_values() -> Vec<Value> {
    vec![
        json!(0),
        json!(1),
        json!(1.0),
        json!(-0.0),
        json!(0.1),
        json!(1e17),
        json!(1e-7),
        json!(i64::MAX),
        json!(i64::MIN),
        json!(u64::MAX),
        json!(9_223_372_036_854_775_808.0),
        json!(""),
        json!("\u{0}"),
        json!("a\u{0}"),
        json!("a\u{1}"),
        json!("a"),
        json!("B"),
        json!("ü🦀"),
        json!(null),
        json!(true),
        json!({"e": 1}),
        json!({"e": 1.0}),
        json!({"e\u{0}": "\u{1}x"}),
        json!([1, "\u{0}", [2.5]]),
    ]
}

const NAMES: [&str; 4] = ["a", "a\u{0}", "\u{1}", "m"];

fn pick<T: Clone>(rng: &mut StdRng, from: &[T]) -> T {
    from[rng.random_range(0..from.len())].clone()
}

fn random_predicate(rng: &mut StdRng, values: &[Value], depth: u32) -> Predicate {
    let path: Vec<String> = match rng.random_range(0..3) {
        0 => vec![],
        1 => vec!["e".into()],
        _ => vec!["e\u{0}".into()],
    };
    match rng.random_range(0..if depth == 0 { 3 } else { 6 }) {
        0 => Predicate::Exists(path),
        1 => Predicate::Missing(path),
        2 => {
            let op = pick(rng, &[CmpOp::Eq, CmpOp::Ne, CmpOp::Lt, CmpOp::Le, CmpOp::Gt, CmpOp::Ge]);
            Predicate::Compare { path, op, operand: pick(rng, values) }
        }
        3 => Predicate::Not(Box::new(random_predicate(rng, values, depth - 1))),
        4 => Predicate::And((0..rng.random_range(0..3)).map(|_| random_predicate(rng, values, depth - 1)).collect()),
        _ => Predicate::Or((0..rng.random_range(0..3)).map(|_| random_predicate(rng, values, depth - 1)).collect()),
    }
}

fn random_condition(rng: &mut StdRng, values: &[Value]) -> Condition {
    let a = pick(rng, &NAMES).to_owned();
    let e = pick(rng, &NAMES).to_owned();
    match rng.random_range(0..8) {
        0 => Condition::AttrExists(a),
        1 => Condition::AttrAbsent(a),
        2 => Condition::AttrEquals(a, pick(rng, values)),
        3 => Condition::EntryExists { map: a, entry: e },
        4 => Condition::EntryAbsent { map: a, entry: e },
        5 => Condition::Below { attr: a, bound: pick(rng, &[i64::MIN, -1, 0, 1, 2, i64::MAX]) },
        _ => Condition::Value { attr: a, predicate: random_predicate(rng, values, 2) },
    }
}

fn random_mutation(rng: &mut StdRng, values: &[Value]) -> Mutation {
    let a = pick(rng, &NAMES).to_owned();
    let e = pick(rng, &NAMES).to_owned();
    match rng.random_range(0..5) {
        0 => Mutation::Set(a, pick(rng, values)),
        1 => Mutation::Remove(a),
        2 => Mutation::SetEntry { map: a, entry: e, value: pick(rng, values) },
        3 => Mutation::RemoveEntry { map: a, entry: e },
        _ => Mutation::Add(a, pick(rng, &[-1, 1, i64::MAX, i64::MIN])),
    }
}

/// Random items, conditions and mutations over awkward values: the store's
/// answers (kind, returned item, stored item) equal the reference evaluator's.
#[tokio::test]
async fn awkward_values_match_the_reference_evaluator() {
    let Some(url) = server_url() else { return };
    let store = open(&url, |c| c).await;
    let values = exotic_values();
    let mut rng = StdRng::seed_from_u64(0x5eed_0002);
    let max = store.capabilities().max_item_bytes;
    for round in 0..400 {
        let k = key(&format!("r{round}"));
        let item: Item =
            (0..rng.random_range(0..4)).map(|_| (pick(&mut rng, &NAMES).to_owned(), pick(&mut rng, &values))).collect();
        store.put(&k, item.clone(), PutMode::Overwrite).await.expect("put");
        assert_eq!(store.get(&k).await.expect("get").as_ref(), Some(&item), "round {round}: round trip of {item:?}");
        let conditions: Vec<Condition> =
            (0..rng.random_range(0..3)).map(|_| random_condition(&mut rng, &values)).collect();
        let mutations: Vec<Mutation> =
            (0..rng.random_range(0..4)).map(|_| random_mutation(&mut rng, &values)).collect();
        let expected = if !conditions_hold(&conditions, Some(&item)) {
            Err((ErrorKind::ConditionFailed, Some(item.clone())))
        } else {
            let mut next = item.clone();
            match apply_mutations(&mut next, &mutations).and_then(|()| check_size(&next, max)) {
                Ok(()) => Ok(next),
                Err(e) => Err((e.kind(), None)),
            }
        };
        let got = store.update(&k, &conditions, &mutations).await;
        let got = got.map_err(|e| {
            let current = (e.kind() == ErrorKind::ConditionFailed).then(|| e.current().cloned()).flatten();
            (e.kind(), current)
        });
        assert_eq!(got, expected, "round {round}: item {item:?}\n conditions {conditions:?}\n mutations {mutations:?}");
        let stored = store.get(&k).await.expect("get").expect("item");
        assert_eq!(stored, expected.unwrap_or(item), "round {round}: stored item");
        // Deletes evaluate the same conditions.
        let condition = random_condition(&mut rng, &values);
        let should = conditions_hold(std::slice::from_ref(&condition), Some(&stored));
        let deleted = store.delete(&k, std::slice::from_ref(&condition)).await;
        match deleted {
            Ok(true) => assert!(should, "round {round}: delete with false {condition:?} on {stored:?}"),
            Err(e) if e.is_condition_failed() => {
                assert!(!should, "round {round}: delete with true {condition:?} on {stored:?}");
                assert_eq!(e.current(), Some(&stored));
            }
            other => panic!("round {round}: delete answered {other:?}"),
        }
    }
}

/// Every pair (stored value, operand) of the awkward values under every
/// comparison, equality and bound, directly and one field deep, and every
/// mutation on every stored value: the store agrees with the reference.
#[tokio::test]
async fn every_value_pair_compares_as_the_reference() {
    let Some(url) = server_url() else { return };
    let store = open(&url, |c| c).await;
    let values = exotic_values();
    let ops = [CmpOp::Eq, CmpOp::Ne, CmpOp::Lt, CmpOp::Le, CmpOp::Gt, CmpOp::Ge];
    let k = key("pairs");
    let mut checked = 0;
    for x in &values {
        let item = Item::new().with("a", x.clone()).with("d", json!({"e": x}));
        store.put(&k, item.clone(), PutMode::Overwrite).await.unwrap();
        let mut conditions = vec![
            Condition::Below { attr: "a".into(), bound: 1 },
            Condition::Below { attr: "a".into(), bound: i64::MIN },
        ];
        for y in &values {
            conditions.push(Condition::AttrEquals("a".into(), y.clone()));
            for op in ops {
                let operand = y.clone();
                conditions.push(Condition::Value {
                    attr: "a".into(),
                    predicate: Predicate::Compare { path: vec![], op, operand: operand.clone() },
                });
                conditions.push(Condition::Value {
                    attr: "d".into(),
                    predicate: Predicate::Compare { path: vec!["e".into()], op, operand },
                });
            }
        }
        for c in &conditions {
            let want = conditions_hold(std::slice::from_ref(c), Some(&item));
            let got = match store.update(&k, std::slice::from_ref(c), &[]).await {
                Ok(_) => true,
                Err(e) if e.is_condition_failed() => false,
                Err(e) => panic!("{c:?} on {item:?}: {e:?}"),
            };
            assert_eq!(got, want, "{c:?} on {item:?}");
            checked += 1;
        }
        let mutations = [
            Mutation::Add("a".into(), 1),
            Mutation::Add("a".into(), i64::MAX),
            Mutation::Add("a".into(), i64::MIN),
            Mutation::SetEntry { map: "a".into(), entry: "e".into(), value: x.clone() },
            Mutation::RemoveEntry { map: "a".into(), entry: "e".into() },
            Mutation::RemoveEntry { map: "d".into(), entry: "e".into() },
        ];
        for m in &mutations {
            let mut want = item.clone();
            let want = apply_mutations(&mut want, std::slice::from_ref(m)).map(|()| want).map_err(|e| e.kind());
            let got = store.update(&k, &[], std::slice::from_ref(m)).await.map_err(|e| e.kind());
            assert_eq!(got, want, "{m:?} on {item:?}");
            store.put(&k, item.clone(), PutMode::Overwrite).await.unwrap();
            checked += 1;
        }
    }
    assert!(checked > 6000, "{checked} checks");
}

/// An item of a given compact-JSON length, with nested containers so the
/// spaces `jsonb` adds are many.
fn item_of_len(len: usize) -> Item {
    let base = Item::new().with("nested", json!({"a": [1, 2, {"b": []}], "c": {}})).with("s", "é");
    let pad = len - base.clone().with("pad", "").encoded_len();
    base.with("pad", "x".repeat(pad))
}

/// The size limit on updates is exact: the compact JSON length, not the
/// length of `jsonb`'s spaced text.
#[tokio::test]
async fn update_size_limit_is_exact() {
    let Some(url) = server_url() else { return };
    let store = open(&url, |c| c.with_max_item_bytes(300)).await;
    let k = key("size");
    let item = item_of_len(290);
    store.put(&k, item.clone(), PutMode::Overwrite).await.expect("put within the limit");
    // "pad" grows by 10 characters: exactly 300 bytes.
    let at_limit = item_of_len(300);
    let pad = at_limit.get("pad").cloned().unwrap();
    let new =
        store.update(&k, &[], &[Mutation::Set("pad".into(), pad.clone())]).await.expect("update to exactly the limit");
    assert_eq!(new.encoded_len(), 300);
    let over = format!("{}y", pad.as_str().unwrap());
    let err = store.update(&k, &[], &[Mutation::Set("pad".into(), json!(over))]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge, "{err:?}");
    assert_eq!(store.get(&k).await.unwrap(), Some(new), "a too-large update changed nothing");
}

/// Many processes opening a fresh schema at once all succeed.
#[tokio::test]
async fn concurrent_opens_create_the_schema_once() {
    let Some(url) = server_url() else { return };
    let schema = random_name("fs_schema");
    let opens = (0..8).map(|_| {
        let (url, schema) = (url.clone(), schema.clone());
        tokio::spawn(async move { open(&url, |c| c.with_schema(schema).with_pool_max(1)).await })
    });
    let mut stores = Vec::new();
    for h in opens {
        stores.push(h.await.expect("open task"));
    }
    let k = key("s");
    stores[0].put(&k, Item::new().with("v", 1), PutMode::Overwrite).await.expect("put");
    let other = stores[1].with_namespace(stores[0].namespace().clone());
    assert_eq!(other.get(&k).await.unwrap(), Some(Item::new().with("v", 1)));
    let mut admin = driver_connection(&url).await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA \"{schema}\" CASCADE")))
        .execute(&mut admin)
        .await
        .expect("drop schema");
}

/// Under contention, a loser's `ConditionFailed` carries the row as the
/// winner left it (the locked latest version, not the statement snapshot),
/// and unconditional increments lose nothing.
#[tokio::test]
async fn contention_returns_the_latest_row_and_loses_no_update() {
    let Some(url) = server_url() else { return };
    let store = Arc::new(open(&url, |c| c.with_pool_max(16)).await);
    let k = key("hot");
    store.put(&k, Item::new().with("log", json!({})).with("n", 0), PutMode::Overwrite).await.unwrap();
    for round in 0..20 {
        let entry = format!("e{round}");
        let barrier = Arc::new(tokio::sync::Barrier::new(12));
        let tasks: Vec<_> = (0..12)
            .map(|i| {
                let (store, k, entry, barrier) = (Arc::clone(&store), k.clone(), entry.clone(), Arc::clone(&barrier));
                tokio::spawn(async move {
                    barrier.wait().await;
                    let guard = [Condition::EntryAbsent { map: "log".into(), entry: entry.clone() }];
                    let muts = [
                        Mutation::SetEntry { map: "log".into(), entry, value: json!(i) },
                        Mutation::Add("n".into(), 1),
                    ];
                    store.update(&k, &guard, &muts).await
                })
            })
            .collect();
        let mut winners = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => winners += 1,
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::ConditionFailed, "{e:?}");
                    let current = e.current().expect("current item");
                    assert!(
                        current.entry("log", &entry).is_some(),
                        "round {round}: a loser saw a row without the winner's entry"
                    );
                }
            }
        }
        assert_eq!(winners, 1, "round {round}");
    }
    let adds: Vec<_> = (0..16)
        .map(|_| {
            let (store, k) = (Arc::clone(&store), k.clone());
            tokio::spawn(async move {
                for _ in 0..10 {
                    store.update(&k, &[], &[Mutation::Add("n".into(), 1)]).await.expect("add");
                }
            })
        })
        .collect();
    for t in adds {
        t.await.unwrap();
    }
    assert_eq!(store.get(&k).await.unwrap().unwrap().get_i64("n"), Some(20 + 160));
}

/// Batches (one statement on distinct keys) that all create one key race:
/// exactly one batch applies, every other is refused as a whole with the
/// winner's item, including when the winner commits during a loser's
/// statement (the unique-violation fallback).
#[tokio::test]
async fn racing_batches_apply_all_or_nothing_with_one_winner() {
    let Some(url) = server_url() else { return };
    let store = Arc::new(open(&url, |c| c.with_pool_max(16)).await);
    for round in 0..10 {
        let shared = key(&format!("shared{round}"));
        let barrier = Arc::new(tokio::sync::Barrier::new(10));
        let tasks: Vec<_> = (0..10)
            .map(|i| {
                let (store, shared, barrier) = (Arc::clone(&store), shared.clone(), Arc::clone(&barrier));
                tokio::spawn(async move {
                    let own = key(&format!("own{round}-{i}"));
                    let ops = vec![
                        WriteOp::Put { key: own.clone(), item: Item::new().with("by", i), mode: PutMode::Overwrite },
                        WriteOp::Put { key: shared, item: Item::new().with("winner", i), mode: PutMode::Create },
                    ];
                    barrier.wait().await;
                    let mut result = store.transact(ops.clone()).await;
                    while matches!(&result, Err(e) if e.kind().is_retryable()) {
                        result = store.transact(ops.clone()).await;
                    }
                    (i, own, result)
                })
            })
            .collect();
        let mut winners = Vec::new();
        let mut losers = Vec::new();
        for t in tasks {
            let (i, own, result) = t.await.unwrap();
            match result {
                Ok(()) => {
                    assert!(store.get(&own).await.unwrap().is_some(), "a winning batch lost its other op");
                    winners.push(i);
                }
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::ConditionFailed, "{e:?}");
                    assert_eq!(store.get(&own).await.unwrap(), None, "a refused batch applied its other op");
                    losers.push(e);
                }
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        let stored = store.get(&shared).await.unwrap().expect("the shared item");
        assert_eq!(stored.get_i64("winner"), Some(winners[0]));
        for e in losers {
            assert_eq!(e.current(), Some(&stored), "round {round}: a loser must see the winner's item");
        }
    }
}

/// Native errors map to the contract's kinds.
#[tokio::test]
async fn errors_map_to_contract_kinds() {
    let Some(url) = server_url() else { return };

    // Nobody listens on port 1: nothing was sent.
    let err = PostgresStore::open(PostgresConfig::new("postgres://postgres@127.0.0.1:1/postgres")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err:?}");
    assert!(std::error::Error::source(&err).is_some(), "the native error is kept");

    // A bad schema name is InvalidInput naming it.
    let err = PostgresStore::open(PostgresConfig::new(url.clone()).with_schema("x\"; drop")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.message().contains("x\\\"; drop"), "{err}");

    // A statement that times out after it was sent may have applied.
    let store = open(&url, |c| c.with_statement_timeout(Some(Duration::from_millis(200)))).await;
    let k = key("locked");
    store.put(&k, Item::new().with("n", 0), PutMode::Overwrite).await.unwrap();
    let mut holder = driver_connection(&url).await;
    let mut tx = sqlx::Connection::begin(&mut holder).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT 1 FROM \"{}\".flowstate_items WHERE ns = $1 AND pk = $2 AND sk = $3 FOR UPDATE",
        store.schema()
    )))
    .bind(store.namespace().as_str())
    .bind(&b"p"[..])
    .bind(&b"locked"[..])
    .fetch_one(&mut *tx)
    .await
    .expect("lock the row");
    let err = store.update(&k, &[], &[Mutation::Add("n".into(), 1)]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Indeterminate, "{err:?}");
    let err = store.delete(&k, &[Condition::ItemExists]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Indeterminate, "a conditional delete is a write: {err:?}");

    // A deadlock inside `transact` is a retryable conflict: the store's
    // transaction locks b, then waits for a (held by `tx`); `tx` then waits for b.
    let store2 = open(&url, |c| c.with_statement_timeout(None)).await;
    let store2 = store2.with_namespace(store.namespace().clone());
    let b = key("b");
    store2.put(&b, Item::new().with("n", 0), PutMode::Overwrite).await.unwrap();
    let ops = vec![
        WriteOp::Update { key: b.clone(), conditions: vec![], mutations: vec![Mutation::Add("n".into(), 1)] },
        WriteOp::Update { key: k.clone(), conditions: vec![], mutations: vec![Mutation::Add("n".into(), 1)] },
    ];
    let waiter = tokio::spawn(async move { store2.transact(ops).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let other = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE \"{}\".flowstate_items SET body = body WHERE ns = $1 AND pk = $2 AND sk = $3",
        store.schema()
    )))
    .bind(store.namespace().as_str())
    .bind(&b"p"[..])
    .bind(&b"b"[..])
    .execute(&mut *tx)
    .await;
    let result = waiter.await.unwrap();
    match (&result, &other) {
        (Err(e), Ok(_)) => assert_eq!(e.kind(), ErrorKind::Conflict, "{e:?}"),
        (Ok(()), Err(_)) => {} // the server picked the other transaction as the victim
        _ => panic!("expected exactly one deadlock victim: store {result:?}, other {other:?}"),
    }
    drop(tx);

    // A closed store is unavailable: nothing was sent.
    store.close().await;
    let err = store.get(&k).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err:?}");
}

/// A plain driver connection (the store's URL parameters are not the driver's).
async fn driver_connection(url: &str) -> sqlx::PgConnection {
    let config = PostgresConfig::from_url(url).expect("url");
    <sqlx::PgConnection as sqlx::Connection>::connect(&config.url).await.expect("connect")
}
