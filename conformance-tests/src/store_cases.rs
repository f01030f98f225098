//! Store-primitive cases: get/put/update/delete/scan/transact semantics,
//! every kind of condition, races with exactly one winner, paging, binary and
//! unicode keys, size limits, and a property test against a pure model.
//!
//! Every case starts from an empty store and panics with a message naming the
//! violated rule.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::sync::Arc;

use flowstate_core::store::{
    Condition, ErrorKind, Item, Key, Mutation, PageRequest, Predicate, PutMode, StateStore, StateStoreExt, StoreError,
    StoreResult, TableName, WriteOp,
};
use serde_json::{Value, json};

/// The store-case list stamped out by [`conformance_tests!`](crate::conformance_tests).
#[doc(hidden)]
#[macro_export]
macro_rules! __store_cases {
    ($factory:path) => {
        $crate::__stamp_cases!($factory; store_cases;
            get_missing_is_none,
            create_conflict_returns_existing_item,
            overwrite_replaces_whole_item,
            update_applies_all_mutations_and_returns_new_item,
            update_of_missing_item_is_not_found,
            condition_item_exists,
            condition_item_absent,
            condition_attr_exists,
            condition_attr_absent,
            condition_attr_equals,
            condition_entry_exists,
            condition_entry_absent,
            condition_below,
            condition_value_predicate,
            conditions_are_a_conjunction,
            entry_absent_guard_admits_first_add_only,
            counter_bound_stops_exactly_at_bound,
            concurrent_versioned_increments_lose_nothing,
            racing_creates_have_exactly_one_winner,
            racing_entry_guards_have_exactly_one_winner,
            scan_orders_by_sort_key_bytes,
            scan_pages_with_limit_and_cursor,
            scan_isolates_partitions_and_tables,
            binary_keys_round_trip,
            unicode_and_separator_keys_do_not_collide,
            attribute_and_entry_names_are_data,
            oversize_put_is_too_large_and_changes_nothing,
            oversize_update_is_too_large_and_changes_nothing,
            conditional_delete_fails_then_succeeds,
            unconditional_delete_is_idempotent,
            transact_is_all_or_nothing,
            mutation_type_errors_are_invalid_input_and_change_nothing,
            model_matches_reference,
        );
    };
}

// ---------------------------------------------------------------- helpers

fn table(name: &str) -> TableName {
    TableName::new(name.to_owned()).expect("valid table name")
}

fn key(t: &str, partition: impl Into<Vec<u8>>, sort: impl Into<Vec<u8>>) -> Key {
    Key::new(table(t), partition, sort)
}

async fn get(store: &dyn StateStore, key: &Key) -> Option<Item> {
    store.get(key).await.unwrap_or_else(|e| panic!("get {key:?} failed: {e:?}"))
}

async fn put(store: &dyn StateStore, key: &Key, item: Item) {
    store.put(key, item, PutMode::Overwrite).await.unwrap_or_else(|e| panic!("put {key:?} failed: {e:?}"));
}

/// Expect an error of `kind`.
#[track_caller]
fn expect_kind<T: Debug>(result: StoreResult<T>, kind: ErrorKind, what: &str) -> StoreError {
    match result {
        Ok(v) => panic!("{what}: expected {kind:?}, got Ok({v:?})"),
        Err(e) => {
            assert_eq!(e.kind(), kind, "{what}: wrong error kind: {e:?}");
            e
        }
    }
}

/// Expect `ConditionFailed` carrying `current` where the backend says it can.
#[track_caller]
fn expect_condition_failed<T: Debug>(
    store: &dyn StateStore,
    result: StoreResult<T>,
    current: Option<&Item>,
    what: &str,
) {
    let err = expect_kind(result, ErrorKind::ConditionFailed, what);
    if store.capabilities().returns_current_on_condition_failure {
        assert_eq!(err.current(), current, "{what}: ConditionFailed must carry the current item");
    }
}

/// Run `f` until it returns something other than a retryable error.
async fn retrying<T, F, Fut>(mut f: F) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = StoreResult<T>>,
{
    for _ in 0..1_000 {
        match f().await {
            Err(e) if e.kind().is_retryable() => tokio::task::yield_now().await,
            other => return other,
        }
    }
    panic!("still a retryable error after 1000 attempts");
}

fn base_item() -> Item {
    Item::new()
        .with("n", 3)
        .with("s", "x")
        .with("m", json!({"e1": true}))
        .with("v", json!({"a": {"b": 5}}))
        .with("z", Value::Null)
}

/// Check that each of `holds` holds and each of `fails` fails on
/// [`base_item`], for both `update` and `delete`, and that failures change
/// nothing. `on_absent` lists `(condition, holds)` on a missing item (checked
/// with `delete`, the one conditional write allowed on a missing item).
async fn check_conditions(
    store: &dyn StateStore,
    holds: Vec<Condition>,
    fails: Vec<Condition>,
    on_absent: Vec<(Condition, bool)>,
) {
    let k = key("cond", "p", "item");
    let base = base_item();
    put(store, &k, base.clone()).await;
    for c in &fails {
        let what = format!("update with failing {c:?}");
        expect_condition_failed(
            store,
            store.update(&k, std::slice::from_ref(c), &[Mutation::Add("hits".into(), 1)]).await,
            Some(&base),
            &what,
        );
        assert_eq!(get(store, &k).await.as_ref(), Some(&base), "{what} changed the item");
        let what = format!("delete with failing {c:?}");
        expect_condition_failed(store, store.delete(&k, std::slice::from_ref(c)).await, Some(&base), &what);
        assert_eq!(get(store, &k).await.as_ref(), Some(&base), "{what} changed the item");
    }
    let mut hits = 0;
    for c in &holds {
        let new = store
            .update(&k, std::slice::from_ref(c), &[Mutation::Add("hits".into(), 1)])
            .await
            .unwrap_or_else(|e| panic!("update with holding {c:?} failed: {e:?}"));
        hits += 1;
        assert_eq!(new.get_i64("hits"), Some(hits), "update with {c:?} returned {new:?}");
        assert_eq!(get(store, &k).await.as_ref(), Some(&new), "update with {c:?}: returned item differs from stored");
        // Keep the item equal to the base apart from "hits" for the next check.
        assert_eq!(
            new.clone().with("hits", 0),
            base.clone().with("hits", 0),
            "update with {c:?} changed other attributes"
        );
    }
    let missing = key("cond", "p", "missing");
    for (c, expected) in on_absent {
        let result = store.delete(&missing, std::slice::from_ref(&c)).await;
        if expected {
            assert!(!result.unwrap_or_else(|e| panic!("delete of a missing item with holding {c:?}: {e:?}")));
        } else {
            expect_condition_failed(store, result, None, &format!("delete of a missing item with failing {c:?}"));
        }
        assert_eq!(get(store, &missing).await, None, "a conditional delete created an item");
    }
}

fn entry_exists(map: &str, entry: &str) -> Condition {
    Condition::EntryExists { map: map.into(), entry: entry.into() }
}

fn entry_absent(map: &str, entry: &str) -> Condition {
    Condition::EntryAbsent { map: map.into(), entry: entry.into() }
}

fn below(attr: &str, bound: i64) -> Condition {
    Condition::Below { attr: attr.into(), bound }
}

fn value(attr: &str, predicate: Predicate) -> Condition {
    Condition::Value { attr: attr.into(), predicate }
}

// ---------------------------------------------------------------- basics

/// A missing item reads as `None`, not an error.
pub async fn get_missing_is_none(store: Arc<dyn StateStore>) {
    assert_eq!(get(&*store, &key("t", "p", "s")).await, None);
    assert_eq!(get(&*store, &key("t", "", "")).await, None);
}

/// `put(Create)` on an existing item fails with `ConditionFailed` carrying
/// the existing item, and leaves it untouched.
pub async fn create_conflict_returns_existing_item(store: Arc<dyn StateStore>) {
    let k = key("t", "p", "s");
    let first = Item::new().with("who", "first");
    store.create(&k, first.clone()).await.expect("create of a missing item");
    assert_eq!(get(&*store, &k).await, Some(first.clone()));
    let second = store.create(&k, Item::new().with("who", "second")).await;
    expect_condition_failed(&*store, second, Some(&first), "conflicting create");
    assert_eq!(get(&*store, &k).await, Some(first), "conflicting create changed the item");
}

/// `put(Overwrite)` replaces the whole item: old attributes do not survive.
pub async fn overwrite_replaces_whole_item(store: Arc<dyn StateStore>) {
    let k = key("t", "p", "s");
    put(&*store, &k, Item::new().with("a", 1).with("b", 2)).await;
    put(&*store, &k, Item::new().with("c", 3)).await;
    assert_eq!(get(&*store, &k).await, Some(Item::new().with("c", 3)));
    // Overwrite of a missing item creates it.
    let k2 = key("t", "p", "s2");
    put(&*store, &k2, Item::new()).await;
    assert_eq!(get(&*store, &k2).await, Some(Item::new()), "an empty item is still an item");
}

/// Every mutation kind applies, in order, and the returned item is what a
/// read sees afterwards.
pub async fn update_applies_all_mutations_and_returns_new_item(store: Arc<dyn StateStore>) {
    let k = key("t", "p", "s");
    put(&*store, &k, Item::new().with("n", 1).with("gone", true).with("m", json!({"old": 1}))).await;
    let new = store
        .update(
            &k,
            &[Condition::ItemExists, Condition::AttrEquals("n".into(), json!(1))],
            &[
                Mutation::Add("n".into(), 41),
                Mutation::Add("fresh".into(), -2),
                Mutation::Set("s".into(), json!({"deep": [1, "two", null]})),
                Mutation::Remove("gone".into()),
                Mutation::Remove("never_there".into()),
                Mutation::SetEntry { map: "m".into(), entry: "new".into(), value: json!("v") },
                Mutation::RemoveEntry { map: "m".into(), entry: "old".into() },
                Mutation::SetEntry { map: "created".into(), entry: "e".into(), value: json!(1) },
                Mutation::RemoveEntry { map: "no_map".into(), entry: "e".into() },
                Mutation::Set("later".into(), json!(1)),
                Mutation::Set("later".into(), json!(2)),
            ],
        )
        .await
        .expect("update with holding conditions");
    let expected = Item::new()
        .with("n", 42)
        .with("fresh", -2)
        .with("s", json!({"deep": [1, "two", null]}))
        .with("m", json!({"new": "v"}))
        .with("created", json!({"e": 1}))
        .with("later", 2);
    assert_eq!(new, expected, "returned item");
    assert_eq!(get(&*store, &k).await, Some(expected), "stored item");
}

/// `update` never creates: a missing item is `NotFound`, whatever the conditions.
pub async fn update_of_missing_item_is_not_found(store: Arc<dyn StateStore>) {
    let k = key("t", "p", "missing");
    for conditions in [vec![], vec![Condition::ItemAbsent], vec![entry_absent("m", "e")]] {
        let r = store.update(&k, &conditions, &[Mutation::Set("a".into(), json!(1))]).await;
        expect_kind(r, ErrorKind::NotFound, &format!("update of a missing item with {conditions:?}"));
    }
    assert_eq!(get(&*store, &k).await, None, "update created an item");
}

// ---------------------------------------------------------------- each condition kind

/// `ItemExists` holds on any item and fails on a missing one.
pub async fn condition_item_exists(store: Arc<dyn StateStore>) {
    check_conditions(&*store, vec![Condition::ItemExists], vec![], vec![(Condition::ItemExists, false)]).await;
}

/// `ItemAbsent` fails on an existing item and holds on a missing one.
pub async fn condition_item_absent(store: Arc<dyn StateStore>) {
    check_conditions(&*store, vec![], vec![Condition::ItemAbsent], vec![(Condition::ItemAbsent, true)]).await;
}

/// `AttrExists`: null counts as present.
pub async fn condition_attr_exists(store: Arc<dyn StateStore>) {
    check_conditions(
        &*store,
        vec![Condition::AttrExists("n".into()), Condition::AttrExists("z".into()), Condition::AttrExists("m".into())],
        vec![Condition::AttrExists("missing".into()), Condition::AttrExists("e1".into())],
        vec![(Condition::AttrExists("n".into()), false)],
    )
    .await;
}

/// `AttrAbsent`: null counts as present; true on a missing item (as
/// DynamoDB's `attribute_not_exists`).
pub async fn condition_attr_absent(store: Arc<dyn StateStore>) {
    check_conditions(
        &*store,
        vec![Condition::AttrAbsent("missing".into())],
        vec![Condition::AttrAbsent("n".into()), Condition::AttrAbsent("z".into())],
        vec![(Condition::AttrAbsent("n".into()), true)],
    )
    .await;
}

/// `AttrEquals`: numbers compare by value, other JSON by equality, a missing
/// attribute equals nothing (not even null).
pub async fn condition_attr_equals(store: Arc<dyn StateStore>) {
    check_conditions(
        &*store,
        vec![
            Condition::AttrEquals("n".into(), json!(3)),
            Condition::AttrEquals("n".into(), json!(3.0)),
            Condition::AttrEquals("s".into(), json!("x")),
            Condition::AttrEquals("m".into(), json!({"e1": true})),
            Condition::AttrEquals("z".into(), Value::Null),
        ],
        vec![
            Condition::AttrEquals("n".into(), json!(4)),
            Condition::AttrEquals("n".into(), json!("3")),
            Condition::AttrEquals("s".into(), json!("X")),
            Condition::AttrEquals("m".into(), json!({"e1": false})),
            Condition::AttrEquals("missing".into(), Value::Null),
        ],
        vec![(Condition::AttrEquals("n".into(), json!(3)), false)],
    )
    .await;
}

/// `EntryExists`: the map attribute has the entry.
pub async fn condition_entry_exists(store: Arc<dyn StateStore>) {
    check_conditions(
        &*store,
        vec![entry_exists("m", "e1")],
        vec![entry_exists("m", "e2"), entry_exists("missing", "e1"), entry_exists("s", "e1")],
        vec![(entry_exists("m", "e1"), false)],
    )
    .await;
}

/// `EntryAbsent`: the map lacks the entry or is absent; holds on a missing item.
pub async fn condition_entry_absent(store: Arc<dyn StateStore>) {
    check_conditions(
        &*store,
        vec![entry_absent("m", "e2"), entry_absent("missing", "e1")],
        vec![entry_absent("m", "e1")],
        vec![(entry_absent("m", "e1"), true)],
    )
    .await;
}

/// `Below`: strictly below the bound; absent counts as 0; non-numbers fail.
pub async fn condition_below(store: Arc<dyn StateStore>) {
    check_conditions(
        &*store,
        vec![below("n", 4), below("n", i64::MAX), below("missing", 1)],
        vec![below("n", 3), below("n", -5), below("missing", 0), below("s", 100), below("z", 100)],
        vec![(below("n", 1), true), (below("n", 0), false)],
    )
    .await;
}

/// `Value`: a user predicate on the attribute's value, an absent attribute
/// being JSON null (so `Ne 1` holds on it); comparisons on missing paths (`Ne`
/// included) and ordering across JSON types are false.
pub async fn condition_value_predicate(store: Arc<dyn StateStore>) {
    check_conditions(
        &*store,
        vec![
            value("n", Predicate::value().ge(3)),
            value("n", Predicate::value().eq(3.0)),
            value("s", Predicate::value().gt("w")),
            value("v", Predicate::at(["a", "b"]).eq(5)),
            value("v", Predicate::at(["a", "b"]).exists()),
            value("v", Predicate::at(["a", "c"]).missing()),
            value("missing", Predicate::value().missing()),
            value("missing", Predicate::value().ne(1)),
            value("missing", Predicate::value().eq(Value::Null)),
            value("s", Predicate::value().ne(1)),
            value("z", Predicate::value().missing()),
            value("n", Predicate::value().gt(1).and(Predicate::value().lt(4))),
            value("n", Predicate::value().gt(10).or(Predicate::value().eq(3))),
            value("n", Predicate::value().eq(4).not()),
            value("n", Predicate::And(vec![])),
        ],
        vec![
            value("n", Predicate::value().gt(3)),
            value("n", Predicate::value().ne(3)),
            value("missing", Predicate::at(["f"]).ne(1)),
            value("missing", Predicate::value().exists()),
            value("s", Predicate::value().lt(5)),
            value("v", Predicate::at(["a", "c"]).exists()),
            value("v", Predicate::at(["a", "b"]).gt("4")),
            value("n", Predicate::value().gt(1).and(Predicate::value().lt(3))),
            value("n", Predicate::Or(vec![])),
        ],
        vec![(value("n", Predicate::value().missing()), true), (value("n", Predicate::value().exists()), false)],
    )
    .await;
}

/// A write's conditions are a conjunction: one false condition fails it.
pub async fn conditions_are_a_conjunction(store: Arc<dyn StateStore>) {
    check_conditions(&*store, vec![Condition::ItemExists], vec![], vec![(Condition::ItemAbsent, true)]).await;
    let k = key("cond", "p", "item");
    let base = get(&*store, &k).await.expect("item from check_conditions");
    let all_true = [Condition::ItemExists, Condition::AttrEquals("n".into(), json!(3)), below("n", 4)];
    let one_false = [Condition::ItemExists, Condition::AttrEquals("n".into(), json!(3)), below("n", 3)];
    expect_condition_failed(
        &*store,
        store.update(&k, &one_false, &[Mutation::Add("n".into(), 1)]).await,
        Some(&base),
        "one false condition",
    );
    let new = store.update(&k, &all_true, &[Mutation::Add("n".into(), 1)]).await.expect("all conditions hold");
    assert_eq!(new.get_i64("n"), Some(4));
}

// ---------------------------------------------------------------- DAAL patterns

/// The log-entry guard: a second add of the same entry fails, so a replayed
/// write cannot apply twice.
pub async fn entry_absent_guard_admits_first_add_only(store: Arc<dyn StateStore>) {
    let k = key("daal", "row", "0");
    put(&*store, &k, Item::new().with("log", json!({})).with("n", 0)).await;
    let guard = [entry_absent("log", "1:a")];
    let write = [
        Mutation::SetEntry { map: "log".into(), entry: "1:a".into(), value: json!(true) },
        Mutation::Add("n".into(), 1),
    ];
    let first = store.update(&k, &guard, &write).await.expect("first add");
    assert_eq!(first.get_i64("n"), Some(1));
    let second = store.update(&k, &guard, &write).await;
    expect_condition_failed(&*store, second, Some(&first), "second add of the same entry");
    assert_eq!(get(&*store, &k).await, Some(first), "the replayed write applied");
    // Another entry is still admitted.
    let other = store
        .update(
            &k,
            &[entry_absent("log", "1:b")],
            &[Mutation::SetEntry { map: "log".into(), entry: "1:b".into(), value: json!(1) }],
        )
        .await
        .expect("a different entry");
    assert_eq!(other.entry("log", "1:b"), Some(&json!(1)));
}

/// A counter guarded by `Below` stops at exactly the bound.
pub async fn counter_bound_stops_exactly_at_bound(store: Arc<dyn StateStore>) {
    let k = key("daal", "row", "counter");
    put(&*store, &k, Item::new()).await;
    let mut ok = 0;
    for i in 0..10 {
        match store.update(&k, &[below("c", 5)], &[Mutation::Add("c".into(), 1)]).await {
            Ok(item) => {
                ok += 1;
                assert_eq!(item.get_i64("c"), Some(ok), "attempt {i}");
            }
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::ConditionFailed, "attempt {i}: {e:?}");
                if store.capabilities().returns_current_on_condition_failure {
                    assert_eq!(e.current().and_then(|c| c.get_i64("c")), Some(5), "attempt {i}");
                }
            }
        }
    }
    assert_eq!(ok, 5, "successful increments");
    assert_eq!(get(&*store, &k).await.and_then(|i| i.get_i64("c")), Some(5), "final counter");
}

/// 16 tasks × 10 increments, each guarded by `AttrEquals` on a version and
/// retried on `ConditionFailed`: every increment lands exactly once.
pub async fn concurrent_versioned_increments_lose_nothing(store: Arc<dyn StateStore>) {
    const TASKS: i64 = 16;
    const PER_TASK: i64 = 10;
    let k = key("race", "p", "counter");
    put(&*store, &k, Item::new().with("version", 0).with("count", 0)).await;
    let mut handles = Vec::new();
    for _ in 0..TASKS {
        let (store, k) = (Arc::clone(&store), k.clone());
        handles.push(tokio::spawn(async move {
            let mut won = Vec::new();
            let mut version = 0;
            let mut attempts = 0;
            while (won.len() as i64) < PER_TASK {
                attempts += 1;
                assert!(attempts < 100_000, "no progress");
                let r = store
                    .update(
                        &k,
                        &[Condition::AttrEquals("version".into(), json!(version))],
                        &[Mutation::Add("version".into(), 1), Mutation::Add("count".into(), 1)],
                    )
                    .await;
                match r {
                    Ok(item) => {
                        version = item.get_i64("version").expect("version");
                        won.push(version);
                    }
                    Err(e) if e.is_condition_failed() => {
                        version = match e.current() {
                            Some(cur) => cur.get_i64("version").expect("version"),
                            None => store.get(&k).await.expect("get").expect("item").get_i64("version").expect("v"),
                        };
                    }
                    Err(e) if e.kind().is_retryable() => tokio::task::yield_now().await,
                    Err(e) => panic!("unexpected error: {e:?}"),
                }
            }
            won
        }));
    }
    let mut versions = BTreeSet::new();
    for h in handles {
        for v in h.await.expect("task") {
            assert!(versions.insert(v), "version {v} was written twice");
        }
    }
    let expected: BTreeSet<i64> = (1..=TASKS * PER_TASK).collect();
    assert_eq!(versions, expected, "every version written exactly once");
    let item = get(&*store, &k).await.expect("item");
    assert_eq!(item.get_i64("count"), Some(TASKS * PER_TASK), "final count");
    assert_eq!(item.get_i64("version"), Some(TASKS * PER_TASK), "final version");
}

/// N concurrent creates of one key: exactly one wins, the others see its item.
pub async fn racing_creates_have_exactly_one_winner(store: Arc<dyn StateStore>) {
    const N: usize = 16;
    let k = key("race", "p", "create");
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let mut handles = Vec::new();
    for i in 0..N {
        let (store, k, barrier) = (Arc::clone(&store), k.clone(), Arc::clone(&barrier));
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            let mine = Item::new().with("winner", i as i64);
            let r = retrying(|| store.create(&k, mine.clone())).await;
            (i, r)
        }));
    }
    let mut winners = Vec::new();
    let mut losers = Vec::new();
    for h in handles {
        match h.await.expect("task") {
            (i, Ok(())) => winners.push(i),
            (i, Err(e)) => {
                assert_eq!(e.kind(), ErrorKind::ConditionFailed, "creator {i}: {e:?}");
                losers.push(e);
            }
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let stored = get(&*store, &k).await.expect("item");
    assert_eq!(stored.get_i64("winner"), Some(winners[0] as i64), "the stored item is the winner's");
    if store.capabilities().returns_current_on_condition_failure {
        for e in losers {
            assert_eq!(e.current(), Some(&stored), "a loser must see the winner's item");
        }
    }
}

/// N concurrent updates guarded by the same absent entry: exactly one applies.
pub async fn racing_entry_guards_have_exactly_one_winner(store: Arc<dyn StateStore>) {
    const N: usize = 16;
    let k = key("race", "p", "guard");
    put(&*store, &k, Item::new().with("log", json!({})).with("applied", 0)).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let mut handles = Vec::new();
    for i in 0..N {
        let (store, k, barrier) = (Arc::clone(&store), k.clone(), Arc::clone(&barrier));
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            let cond = [entry_absent("log", "step:1")];
            let muts = [
                Mutation::SetEntry { map: "log".into(), entry: "step:1".into(), value: json!(i) },
                Mutation::Add("applied".into(), 1),
            ];
            (i, retrying(|| store.update(&k, &cond, &muts)).await)
        }));
    }
    let mut winners = Vec::new();
    for h in handles {
        match h.await.expect("task") {
            (i, Ok(_)) => winners.push(i),
            (i, Err(e)) => assert_eq!(e.kind(), ErrorKind::ConditionFailed, "writer {i}: {e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let item = get(&*store, &k).await.expect("item");
    assert_eq!(item.get_i64("applied"), Some(1));
    assert_eq!(item.entry("log", "step:1"), Some(&json!(winners[0])));
}

// ---------------------------------------------------------------- scans

fn sort_keys_in_byte_order() -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x00],
        vec![0x00, 0x00],
        vec![0x00, 0xff],
        vec![0x01],
        b"A".to_vec(),
        b"a".to_vec(),
        b"a\x00".to_vec(),
        b"aa".to_vec(),
        b"b".to_vec(),
        vec![0x7f],
        vec![0x80],
        vec![0xc3, 0xbc],
        vec![0xfe, 0xff],
        vec![0xff],
        vec![0xff, 0x00],
        vec![0xff, 0xff],
    ];
    let sorted = {
        let mut s = keys.clone();
        s.sort();
        s
    };
    assert_eq!(keys, sorted, "test data must be listed in byte order");
    keys.dedup();
    keys
}

/// Scans return a partition's items in ascending sort-key byte order
/// (unsigned bytes, a prefix before its extensions), whatever the insertion order.
pub async fn scan_orders_by_sort_key_bytes(store: Arc<dyn StateStore>) {
    let keys = sort_keys_in_byte_order();
    let t = table("scan");
    // Insert in a scrambled (but deterministic) order.
    let n = keys.len();
    for i in 0..n {
        let idx = (i * 7 + 3) % n;
        put(&*store, &Key::new(t.clone(), "p", keys[idx].clone()), Item::new().with("i", idx as i64)).await;
    }
    let all = store.scan_all(&t, b"p", 1000).await.expect("scan_all");
    let got: Vec<Vec<u8>> = all.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(got, keys, "scan order");
    for (i, (_, item)) in all.iter().enumerate() {
        assert_eq!(item.get_i64("i"), Some(i as i64), "item of sort key {:?}", keys[i]);
    }
}

/// Paging: at most `limit` per page, the cursor resumes strictly after the
/// last key, the last page has no cursor, and `after` may be any key
/// (present or not).
pub async fn scan_pages_with_limit_and_cursor(store: Arc<dyn StateStore>) {
    let t = table("page");
    let keys: Vec<Vec<u8>> = (0..25u8).map(|i| vec![b'k', i * 2]).collect();
    for k in &keys {
        put(&*store, &Key::new(t.clone(), "p", k.clone()), Item::new().with("k", json!(k))).await;
    }
    for limit in [1u32, 7, 25, 26, 1000] {
        let mut seen = Vec::new();
        let mut after = None;
        for pages in 1.. {
            assert!(pages <= 100, "limit {limit}: too many pages");
            let page = store.scan(&t, b"p", PageRequest { after: after.clone(), limit }).await.expect("scan");
            assert!(page.items.len() <= limit as usize, "limit {limit}: page of {} items", page.items.len());
            if let (Some(prev), Some((first, _))) = (&after, page.items.first()) {
                assert!(first > prev, "limit {limit}: page starts at {first:?}, not after {prev:?}");
            }
            seen.extend(page.items.iter().map(|(k, _)| k.clone()));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, keys, "limit {limit}: pages together");
    }
    // `after` need not be a stored key.
    let page = store.scan(&t, b"p", PageRequest { after: Some(vec![b'k', 9]), limit: 3 }).await.expect("scan");
    let got: Vec<Vec<u8>> = page.items.iter().map(|(k, _)| k.clone()).collect();
    assert!(!got.is_empty() && got.len() <= 3, "page after an absent key: {got:?}");
    assert_eq!(got, keys[5..5 + got.len()].to_vec(), "page after an absent key");
    // Past the end: empty and final.
    let page = store.scan(&t, b"p", PageRequest { after: Some(vec![b'k', 0xff]), limit: 3 }).await.expect("scan");
    assert!(page.items.is_empty() && page.next.is_none(), "scan past the end: {page:?}");
    // An empty partition.
    let page = store.scan(&t, b"nothing", PageRequest::first(10)).await.expect("scan");
    assert!(page.items.is_empty() && page.next.is_none(), "empty partition: {page:?}");
}

/// Scans and reads see only their own table and partition, including
/// partitions that are prefixes of each other.
pub async fn scan_isolates_partitions_and_tables(store: Arc<dyn StateStore>) {
    let partitions: [&[u8]; 5] = [b"p", b"pp", b"p\x00", b"", b"q"];
    for t in ["iso_a", "iso_b"] {
        for p in partitions {
            for s in [&b"1"[..], b"2"] {
                let item = Item::new().with("t", t).with("p", json!(p)).with("s", json!(s));
                put(&*store, &key(t, p, s), item).await;
            }
        }
    }
    for t in ["iso_a", "iso_b"] {
        for p in partitions {
            let all = store.scan_all(&table(t), p, 100).await.expect("scan_all");
            assert_eq!(all.len(), 2, "table {t}, partition {p:?}: {all:?}");
            for (s, item) in all {
                assert_eq!(item.get_str("t"), Some(t), "table leak into {t}/{p:?}");
                assert_eq!(item.get("p"), Some(&json!(p)), "partition leak into {t}/{p:?}");
                assert_eq!(item.get("s"), Some(&json!(s)));
            }
        }
    }
    assert!(store.delete(&key("iso_a", "p", "1"), &[]).await.expect("delete"));
    assert!(get(&*store, &key("iso_b", "p", "1")).await.is_some(), "delete reached another table");
    assert!(get(&*store, &key("iso_a", "pp", "1")).await.is_some(), "delete reached another partition");
    assert_eq!(get(&*store, &key("iso_other", "p", "1")).await, None, "a table never written is empty");
}

// ---------------------------------------------------------------- keys and names

/// Keys are bytes: non-UTF-8, NUL and empty partition/sort keys round-trip.
pub async fn binary_keys_round_trip(store: Arc<dyn StateStore>) {
    let partitions: [&[u8]; 3] = [&[0xff, 0x00, 0xc3, 0x28], &[], &[0x00]];
    let sorts: [&[u8]; 5] = [&[], &[0x00], &[0x00, 0x00], &[0xc3, 0x28], &[0xff, 0xfe, 0x00]];
    for (pi, p) in partitions.iter().enumerate() {
        for (si, s) in sorts.iter().enumerate() {
            put(&*store, &key("bin", *p, *s), Item::new().with("p", pi as i64).with("s", si as i64)).await;
        }
    }
    for (pi, p) in partitions.iter().enumerate() {
        for (si, s) in sorts.iter().enumerate() {
            let item = get(&*store, &key("bin", *p, *s)).await.unwrap_or_else(|| panic!("missing {p:?}/{s:?}"));
            assert_eq!((item.get_i64("p"), item.get_i64("s")), (Some(pi as i64), Some(si as i64)), "{p:?}/{s:?}");
        }
        let all = store.scan_all(&table("bin"), p, 100).await.expect("scan_all");
        let mut expected: Vec<Vec<u8>> = sorts.iter().map(|s| s.to_vec()).collect();
        expected.sort();
        assert_eq!(all.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(), expected, "partition {p:?}");
    }
    let k = key("bin", partitions[0], sorts[0]);
    let updated = store.update(&k, &[Condition::ItemExists], &[Mutation::Add("p".into(), 10)]).await.expect("update");
    assert_eq!(updated.get_i64("p"), Some(10));
    assert!(store.delete(&k, &[]).await.expect("delete"));
    assert_eq!(get(&*store, &k).await, None);
    assert!(get(&*store, &key("bin", partitions[0], sorts[1])).await.is_some(), "delete of the empty sort key hit [0]");
}

/// Unicode and separator-laden keys round-trip, and keys that would collide
/// under naive concatenation (`"a:b"+"c"` vs `"a"+"b:c"`) stay distinct.
pub async fn unicode_and_separator_keys_do_not_collide(store: Arc<dyn StateStore>) {
    let weird = "a-b:c/d#e\u{0}ü🦀";
    let pairs: [(&str, &str); 9] = [
        (weird, weird),
        (weird, ""),
        ("", weird),
        ("a:b", "c"),
        ("a", "b:c"),
        ("a#b", ""),
        ("a", "#b"),
        ("a\u{0}", "b"),
        ("a", "\u{0}b"),
    ];
    for (i, (p, s)) in pairs.iter().enumerate() {
        put(
            &*store,
            &key("uni", p.as_bytes(), s.as_bytes()),
            Item::new().with("i", i as i64).with("p", *p).with("s", *s),
        )
        .await;
    }
    for (i, (p, s)) in pairs.iter().enumerate() {
        let item = get(&*store, &key("uni", p.as_bytes(), s.as_bytes())).await.expect("item");
        assert_eq!(item.get_i64("i"), Some(i as i64), "key {p:?}/{s:?} collided");
        assert_eq!((item.get_str("p"), item.get_str("s")), (Some(*p), Some(*s)), "values round-trip");
    }
    let in_a = store.scan_all(&table("uni"), b"a", 100).await.expect("scan_all");
    let sorts: Vec<Vec<u8>> = in_a.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(sorts, vec![b"\x00b".to_vec(), b"#b".to_vec(), b"b:c".to_vec()], "partition \"a\"");
}

/// Attribute names, map entry names and string values are data: dots,
/// `#`, `:`, `$`, quotes, spaces and non-ASCII need no escaping by the caller.
pub async fn attribute_and_entry_names_are_data(store: Arc<dyn StateStore>) {
    let names = ["a.b", "#x", ":v", "$.c", "with space", "quo\"te", "back\\slash", "ü🦀", "[0]", "a'b"];
    let k = key("names", "p", "s");
    let mut item = Item::new();
    for (i, n) in names.iter().enumerate() {
        item.insert(*n, i as i64);
    }
    put(&*store, &k, item.clone()).await;
    assert_eq!(get(&*store, &k).await.as_ref(), Some(&item));
    for (i, n) in names.iter().enumerate() {
        let i = i as i64;
        let new = store
            .update(
                &k,
                &[
                    Condition::AttrEquals((*n).into(), json!(i)),
                    Condition::AttrExists((*n).into()),
                    below(n, i + 1),
                    value(n, Predicate::value().eq(i)),
                    entry_absent("map.x", n),
                ],
                &[
                    Mutation::Add((*n).into(), 100),
                    Mutation::SetEntry { map: "map.x".into(), entry: (*n).into(), value: json!(n) },
                ],
            )
            .await
            .unwrap_or_else(|e| panic!("update of attribute {n:?}: {e:?}"));
        assert_eq!(new.get_i64(n), Some(i + 100), "attribute {n:?}");
        assert_eq!(new.entry("map.x", n), Some(&json!(n)), "entry {n:?}");
        let guarded = store.update(&k, &[entry_absent("map.x", n)], &[Mutation::Add((*n).into(), 1)]).await;
        expect_condition_failed(&*store, guarded, Some(&new), &format!("entry {n:?} is present"));
        let new = store
            .update(
                &k,
                &[entry_exists("map.x", n)],
                &[Mutation::RemoveEntry { map: "map.x".into(), entry: (*n).into() }],
            )
            .await
            .unwrap_or_else(|e| panic!("remove entry {n:?}: {e:?}"));
        assert_eq!(new.entry("map.x", n), None);
    }
    let last = get(&*store, &k).await.expect("item");
    for (i, n) in names.iter().enumerate() {
        assert_eq!(last.get_i64(n), Some(i as i64 + 100), "attribute {n:?} at the end");
    }
}

// ---------------------------------------------------------------- size limits

/// An item whose encoding is exactly `len` bytes: `{"pad":"xx…"}` plus extras.
fn item_of_encoded_len(len: usize, extra: Item) -> Item {
    let base = extra.clone().with("pad", "").encoded_len();
    assert!(len >= base, "cannot build an item of {len} bytes");
    let item = extra.with("pad", "x".repeat(len - base));
    assert_eq!(item.encoded_len(), len);
    item
}

/// A put over the limit is `TooLarge` and changes nothing; exactly at the
/// limit is accepted.
pub async fn oversize_put_is_too_large_and_changes_nothing(store: Arc<dyn StateStore>) {
    let max = store.capabilities().max_item_bytes;
    let k = key("big", "p", "s");
    let at_limit = item_of_encoded_len(max, Item::new());
    put(&*store, &k, at_limit.clone()).await;
    assert_eq!(get(&*store, &k).await.as_ref(), Some(&at_limit), "an item of exactly max_item_bytes");
    let over = item_of_encoded_len(max + 1, Item::new());
    expect_kind(store.put(&k, over.clone(), PutMode::Overwrite).await, ErrorKind::TooLarge, "oversize overwrite");
    assert_eq!(get(&*store, &k).await.as_ref(), Some(&at_limit), "oversize overwrite changed the item");
    let missing = key("big", "p", "missing");
    expect_kind(store.put(&missing, over, PutMode::Create).await, ErrorKind::TooLarge, "oversize create");
    assert_eq!(get(&*store, &missing).await, None, "oversize create wrote an item");
}

/// An update whose result would be over the limit is `TooLarge` and changes nothing.
pub async fn oversize_update_is_too_large_and_changes_nothing(store: Arc<dyn StateStore>) {
    let max = store.capabilities().max_item_bytes;
    let k = key("big", "p", "u");
    let item = item_of_encoded_len(max - 100, Item::new().with("n", 1));
    put(&*store, &k, item.clone()).await;
    let r = store
        .update(&k, &[], &[Mutation::Set("more".into(), json!("y".repeat(200))), Mutation::Add("n".into(), 1)])
        .await;
    expect_kind(r, ErrorKind::TooLarge, "oversize update");
    assert_eq!(get(&*store, &k).await.as_ref(), Some(&item), "oversize update changed the item");
    // An update that stays within the limit still works.
    let new = store.update(&k, &[], &[Mutation::Add("n".into(), 1)]).await.expect("update within the limit");
    assert_eq!(new.get_i64("n"), Some(2));
}

// ---------------------------------------------------------------- delete

/// A conditional delete fails (item kept, current returned), then succeeds.
pub async fn conditional_delete_fails_then_succeeds(store: Arc<dyn StateStore>) {
    let k = key("del", "p", "s");
    let item = Item::new().with("v", 1);
    put(&*store, &k, item.clone()).await;
    let r = store.delete(&k, &[Condition::AttrEquals("v".into(), json!(2))]).await;
    expect_condition_failed(&*store, r, Some(&item), "delete with a false condition");
    assert_eq!(get(&*store, &k).await.as_ref(), Some(&item), "failed delete removed the item");
    assert!(store.delete(&k, &[Condition::AttrEquals("v".into(), json!(1))]).await.expect("delete"));
    assert_eq!(get(&*store, &k).await, None);
    // The key can be created again.
    store.create(&k, Item::new().with("v", 3)).await.expect("create after delete");
}

/// An unconditional delete says whether it removed an item, and repeats harmlessly.
pub async fn unconditional_delete_is_idempotent(store: Arc<dyn StateStore>) {
    let k = key("del", "p", "s");
    assert!(!store.delete(&k, &[]).await.expect("delete of a missing item"));
    put(&*store, &k, Item::new()).await;
    assert!(store.delete(&k, &[]).await.expect("delete"));
    assert!(!store.delete(&k, &[]).await.expect("second delete"));
    assert_eq!(get(&*store, &k).await, None);
}

// ---------------------------------------------------------------- transact

/// `transact` applies all ops or none where `atomic_batch`; else `Unsupported`
/// and nothing applied.
pub async fn transact_is_all_or_nothing(store: Arc<dyn StateStore>) {
    let (a, b, c, d) = (key("tx", "p", "a"), key("tx", "p", "b"), key("tx", "q", "c"), key("tx2", "p", "d"));
    let one = Item::new().with("n", 1);
    for k in [&b, &c, &d] {
        put(&*store, k, one.clone()).await;
    }
    let ops = |last: WriteOp| {
        vec![
            WriteOp::Put { key: a.clone(), item: Item::new().with("new", true), mode: PutMode::Create },
            WriteOp::Update {
                key: b.clone(),
                conditions: vec![Condition::ItemExists],
                mutations: vec![Mutation::Add("n".into(), 1)],
            },
            WriteOp::Delete { key: c.clone(), conditions: vec![] },
            last,
        ]
    };
    let unchanged = || async {
        assert_eq!(get(&*store, &a).await, None, "op on a applied");
        assert_eq!(get(&*store, &b).await, Some(one.clone()), "op on b applied");
        assert_eq!(get(&*store, &c).await, Some(one.clone()), "op on c applied");
        assert_eq!(get(&*store, &d).await, Some(one.clone()), "op on d applied");
    };
    if !store.capabilities().atomic_batch {
        let r = store.transact(ops(WriteOp::Delete { key: d.clone(), conditions: vec![] })).await;
        expect_kind(r, ErrorKind::Unsupported, "transact without atomic_batch");
        unchanged().await;
        return;
    }
    let failing: [(WriteOp, ErrorKind); 4] = [
        (
            WriteOp::Update {
                key: d.clone(),
                conditions: vec![Condition::AttrEquals("n".into(), json!(99))],
                mutations: vec![],
            },
            ErrorKind::ConditionFailed,
        ),
        (WriteOp::Put { key: d.clone(), item: Item::new(), mode: PutMode::Create }, ErrorKind::ConditionFailed),
        (
            WriteOp::Update {
                key: key("tx2", "p", "missing"),
                conditions: vec![],
                mutations: vec![Mutation::Add("n".into(), 1)],
            },
            ErrorKind::NotFound,
        ),
        (
            WriteOp::Put {
                key: d.clone(),
                item: item_of_encoded_len(store.capabilities().max_item_bytes + 1, Item::new()),
                mode: PutMode::Overwrite,
            },
            ErrorKind::TooLarge,
        ),
    ];
    for (last, kind) in failing {
        let what = format!("transact ending in a failing {kind:?} op");
        expect_kind(store.transact(ops(last)).await, kind, &what);
        unchanged().await;
    }
    let last = WriteOp::Update {
        key: d.clone(),
        conditions: vec![Condition::AttrEquals("n".into(), json!(1))],
        mutations: vec![Mutation::Set("n".into(), json!(5))],
    };
    store.transact(ops(last)).await.expect("transact with every op valid");
    assert_eq!(get(&*store, &a).await, Some(Item::new().with("new", true)));
    assert_eq!(get(&*store, &b).await, Some(Item::new().with("n", 2)));
    assert_eq!(get(&*store, &c).await, None);
    assert_eq!(get(&*store, &d).await, Some(Item::new().with("n", 5)));
    store.transact(vec![]).await.expect("an empty transact");
}

// ---------------------------------------------------------------- type errors

/// A mutation of the wrong type (`Add` on a string, an entry of a non-map,
/// overflow) is `InvalidInput`, and no mutation of that update applies.
pub async fn mutation_type_errors_are_invalid_input_and_change_nothing(store: Arc<dyn StateStore>) {
    let k = key("types", "p", "s");
    let item = Item::new().with("s", "text").with("n", 1).with("max", i64::MAX);
    put(&*store, &k, item.clone()).await;
    let bad: [Mutation; 5] = [
        Mutation::Add("s".into(), 1),
        Mutation::SetEntry { map: "n".into(), entry: "e".into(), value: json!(1) },
        Mutation::RemoveEntry { map: "s".into(), entry: "e".into() },
        Mutation::Add("max".into(), 1),
        Mutation::Add("m".into(), 1),
    ];
    // The last one is only bad after the map is set first, in the same update.
    for (i, m) in bad.into_iter().enumerate() {
        let mut muts = vec![Mutation::Set("t".into(), json!(1)), Mutation::Add("n".into(), 1)];
        if i == 4 {
            muts.push(Mutation::SetEntry { map: "m".into(), entry: "e".into(), value: json!(1) });
        }
        muts.push(m.clone());
        let r = store.update(&k, &[Condition::ItemExists], &muts).await;
        expect_kind(r, ErrorKind::InvalidInput, &format!("update with {m:?}"));
        assert_eq!(get(&*store, &k).await.as_ref(), Some(&item), "a failed update with {m:?} applied something");
    }
}

// ---------------------------------------------------------------- model

/// Random sequences of put/update/delete/get/scan/transact over a small key
/// space agree with a pure model of the contract, including error kinds.
pub async fn model_matches_reference(store: Arc<dyn StateStore>) {
    crate::model::check_against_model(store).await;
}
