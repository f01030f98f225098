//! Property test: a store against a pure model of the contract.
//!
//! The model is a `BTreeMap` plus the contract's reference evaluator
//! ([`flowstate_core::store::eval`]), written here rather than reusing
//! `MemoryStore`: comparing the memory backend with itself could never fail,
//! while this model checks it too (key isolation, ordering, the order of
//! checks, all-or-nothing batches). Backends that translate conditions into a
//! native language are checked against the evaluator's semantics this way.
//!
//! Parameters: 32 cases of 3 filling puts plus up to 40 random ops, ChaCha
//! with a fixed seed, so a failure reproduces; `FLOWSTATE_MODEL_CASES` and
//! `FLOWSTATE_MODEL_SEED` override them for longer exploratory runs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use flowstate_core::store::eval::{apply_mutations, check_size, conditions_hold};
use flowstate_core::store::{
    CmpOp, Condition, ErrorKind, Item, Key, Mutation, PageRequest, Predicate, PutMode, StateStore, StoreError,
    StoreResult, TableName, WriteOp,
};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, RngAlgorithm, RngSeed, TestCaseError, TestRunner};
use serde_json::{Value, json};

const DEFAULT_CASES: u32 = 32;
const MAX_OPS: usize = 40;
const DEFAULT_SEED: u64 = 0x0f10_57a7_e5ee_d001;

const TABLES: usize = 2;
const PARTITIONS: [&[u8]; 2] = [b"p", b"p\x00"];
const SORTS: [&[u8]; 4] = [b"", b"\x00", b"a", b"\xff"];
/// Scan cursors: stored sort keys and keys between them.
const AFTERS: [&[u8]; 6] = [b"", b"\x00", b"\x00\x00", b"a", b"b", b"\xff\xff"];
const ATTRS: [&str; 3] = ["n", "s", "m"];
const ENTRIES: [&str; 2] = ["e1", "e2"];

/// An item address in the small key space: (table, partition, sort) indexes.
type Slot = (usize, usize, usize);

#[derive(Clone, Debug)]
enum Op {
    Get(Slot),
    Put(Slot, Item, PutMode),
    Update(Slot, Vec<Condition>, Vec<Mutation>),
    Delete(Slot, Vec<Condition>),
    Scan { table: usize, partition: usize, after: Option<usize>, limit: u32 },
    Transact(Vec<TxOp>),
}

#[derive(Clone, Debug)]
enum TxOp {
    Put(Slot, Item, PutMode),
    Update(Slot, Vec<Condition>, Vec<Mutation>),
    Delete(Slot, Vec<Condition>),
}

impl TxOp {
    fn slot(&self) -> Slot {
        match self {
            Self::Put(s, ..) | Self::Update(s, ..) | Self::Delete(s, ..) => *s,
        }
    }
}

// ---------------------------------------------------------------- strategies

/// Mostly three hot keys of one partition, so updates and conditions meet
/// existing items; sometimes any key, for isolation and scans.
fn slot() -> impl Strategy<Value = Slot> {
    prop_oneof![
        3 => (Just(0), Just(0), 0..3usize),
        1 => (0..TABLES, 0..PARTITIONS.len(), 0..SORTS.len()),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    select(vec![
        json!(0),
        json!(1),
        json!(2),
        json!(-1),
        json!(1.5),
        json!("x"),
        json!("y"),
        json!(true),
        Value::Null,
        json!({"e1": 1}),
        json!({"e1": "x", "e2": {"e1": 2}}),
    ])
}

fn attr() -> impl Strategy<Value = String> {
    select(ATTRS.to_vec()).prop_map(str::to_owned)
}

fn entry() -> impl Strategy<Value = String> {
    select(ENTRIES.to_vec()).prop_map(str::to_owned)
}

fn item() -> impl Strategy<Value = Item> {
    btree_map(attr(), json_value(), 0..=3).prop_map(|m| m.into_iter().collect())
}

fn predicate() -> impl Strategy<Value = Predicate> {
    let path = select(vec![vec![], vec!["e1".to_owned()], vec!["e2".to_owned(), "e1".to_owned()]]);
    let op = select(vec![CmpOp::Eq, CmpOp::Ne, CmpOp::Lt, CmpOp::Le, CmpOp::Gt, CmpOp::Ge]);
    let leaf = prop_oneof![
        path.clone().prop_map(Predicate::Exists),
        path.clone().prop_map(Predicate::Missing),
        (path, op, json_value()).prop_map(|(path, op, operand)| Predicate::Compare { path, op, operand }),
    ];
    leaf.prop_recursive(2, 6, 2, |inner| {
        prop_oneof![
            inner.clone().prop_map(|p| Predicate::Not(Box::new(p))),
            vec(inner.clone(), 0..=2).prop_map(Predicate::And),
            vec(inner, 0..=2).prop_map(Predicate::Or),
        ]
    })
}

fn condition() -> impl Strategy<Value = Condition> {
    prop_oneof![
        Just(Condition::ItemExists),
        Just(Condition::ItemAbsent),
        attr().prop_map(Condition::AttrExists),
        attr().prop_map(Condition::AttrAbsent),
        (attr(), json_value()).prop_map(|(a, v)| Condition::AttrEquals(a, v)),
        (attr(), entry()).prop_map(|(map, entry)| Condition::EntryExists { map, entry }),
        (attr(), entry()).prop_map(|(map, entry)| Condition::EntryAbsent { map, entry }),
        (attr(), -1i64..=3).prop_map(|(attr, bound)| Condition::Below { attr, bound }),
        (attr(), predicate()).prop_map(|(attr, predicate)| Condition::Value { attr, predicate }),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (attr(), json_value()).prop_map(|(a, v)| Mutation::Set(a, v)),
        attr().prop_map(Mutation::Remove),
        (attr(), entry(), json_value()).prop_map(|(map, entry, value)| Mutation::SetEntry { map, entry, value }),
        (attr(), entry()).prop_map(|(map, entry)| Mutation::RemoveEntry { map, entry }),
        (attr(), -2i64..=2).prop_map(|(a, d)| Mutation::Add(a, d)),
    ]
}

fn put_mode() -> impl Strategy<Value = PutMode> {
    select(vec![PutMode::Create, PutMode::Overwrite])
}

fn tx_op() -> impl Strategy<Value = TxOp> {
    prop_oneof![
        (slot(), item(), put_mode()).prop_map(|(s, i, m)| TxOp::Put(s, i, m)),
        (slot(), vec(condition(), 0..=2), vec(mutation(), 0..=3)).prop_map(|(s, c, m)| TxOp::Update(s, c, m)),
        (slot(), vec(condition(), 0..=1)).prop_map(|(s, c)| TxOp::Delete(s, c)),
    ]
}

fn op(with_transact: bool) -> impl Strategy<Value = Op> {
    let transact = if with_transact { 1 } else { 0 };
    prop_oneof![
        2 => slot().prop_map(Op::Get),
        3 => (slot(), item(), put_mode()).prop_map(|(s, i, m)| Op::Put(s, i, m)),
        5 => (slot(), vec(condition(), 0..=2), vec(mutation(), 0..=3)).prop_map(|(s, c, m)| Op::Update(s, c, m)),
        2 => (slot(), vec(condition(), 0..=1)).prop_map(|(s, c)| Op::Delete(s, c)),
        2 => (0..TABLES, 0..PARTITIONS.len(), proptest::option::of(0..AFTERS.len()), 1u32..=3)
            .prop_map(|(table, partition, after, limit)| Op::Scan { table, partition, after, limit }),
        // Distinct keys only: stores with native batches (DynamoDB) refuse
        // two ops on one item in a batch.
        transact => vec(tx_op(), 1..=3).prop_map(|ops| {
            let mut seen = Vec::new();
            Op::Transact(ops.into_iter().filter(|o| {
                let fresh = !seen.contains(&o.slot());
                seen.push(o.slot());
                fresh
            }).collect())
        }),
    ]
}

// ---------------------------------------------------------------- the model

/// What a call answered, in a comparable form. Errors keep their kind and,
/// for `ConditionFailed` where the store returns it, the current item.
#[derive(Clone, Debug, PartialEq)]
enum Answer<T> {
    Ok(T),
    Err(ErrorKind, Option<Option<Item>>),
}

type ModelResult<T> = Result<T, StoreError>;

#[derive(Clone, Debug, Default)]
struct Model {
    items: BTreeMap<Slot, Item>,
    max_item_bytes: usize,
}

impl Model {
    fn get(&self, s: Slot) -> Option<Item> {
        self.items.get(&s).cloned()
    }

    fn apply(&mut self, op: &TxOp) -> ModelResult<Option<Item>> {
        match op {
            TxOp::Put(s, item, mode) => {
                check_size(item, self.max_item_bytes)?;
                if *mode == PutMode::Create
                    && let Some(existing) = self.items.get(s)
                {
                    return Err(StoreError::condition_failed(Some(existing.clone())));
                }
                self.items.insert(*s, item.clone());
                Ok(None)
            }
            TxOp::Update(s, conditions, mutations) => {
                let Some(current) = self.items.get(s) else {
                    return Err(StoreError::new(ErrorKind::NotFound, "missing"));
                };
                if !conditions_hold(conditions, Some(current)) {
                    return Err(StoreError::condition_failed(Some(current.clone())));
                }
                let mut next = current.clone();
                apply_mutations(&mut next, mutations)?;
                check_size(&next, self.max_item_bytes)?;
                self.items.insert(*s, next.clone());
                Ok(Some(next))
            }
            TxOp::Delete(s, conditions) => {
                let current = self.items.get(s);
                if !conditions_hold(conditions, current) {
                    return Err(StoreError::condition_failed(current.cloned()));
                }
                Ok(self.items.remove(s))
            }
        }
    }

    fn transact(&mut self, ops: &[TxOp]) -> ModelResult<()> {
        let before = self.items.clone();
        for op in ops {
            if let Err(e) = self.apply(op) {
                self.items = before;
                return Err(e);
            }
        }
        Ok(())
    }

    /// The partition's items in sort-key byte order, strictly after `after`.
    fn partition(&self, table: usize, partition: usize, after: Option<&[u8]>) -> Vec<(Vec<u8>, Item)> {
        let mut out: Vec<(Vec<u8>, Item)> = self
            .items
            .iter()
            .filter(|((t, p, _), _)| *t == table && *p == partition)
            .map(|((_, _, s), item)| (SORTS[*s].to_vec(), item.clone()))
            .filter(|(sk, _)| after.is_none_or(|a| sk.as_slice() > a))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

// ---------------------------------------------------------------- the runner

struct Run<'a> {
    store: &'a dyn StateStore,
    tables: Vec<TableName>,
    current_on_failure: bool,
}

impl Run<'_> {
    fn key(&self, (t, p, s): Slot) -> Key {
        Key::new(self.tables[t].clone(), PARTITIONS[p], SORTS[s])
    }

    fn write_op(&self, op: &TxOp) -> WriteOp {
        match op {
            TxOp::Put(s, item, mode) => WriteOp::Put { key: self.key(*s), item: item.clone(), mode: *mode },
            TxOp::Update(s, c, m) => WriteOp::Update { key: self.key(*s), conditions: c.clone(), mutations: m.clone() },
            TxOp::Delete(s, c) => WriteOp::Delete { key: self.key(*s), conditions: c.clone() },
        }
    }

    fn answer<T>(&self, r: StoreResult<T>) -> Answer<T> {
        match r {
            Ok(v) => Answer::Ok(v),
            Err(e) => {
                let current =
                    (e.kind() == ErrorKind::ConditionFailed && self.current_on_failure).then(|| e.current().cloned());
                Answer::Err(e.kind(), current)
            }
        }
    }

    /// Follow cursors from `after` to the end of the partition.
    async fn scan_rest(
        &self,
        table: usize,
        partition: usize,
        mut after: Option<Vec<u8>>,
        limit: u32,
    ) -> Result<Vec<(Vec<u8>, Item)>, TestCaseError> {
        let mut out = Vec::new();
        for _ in 0..=SORTS.len() + 1 {
            let page = self.store.scan(&self.tables[table], PARTITIONS[partition], PageRequest { after, limit }).await;
            let page = page.map_err(|e| TestCaseError::fail(format!("scan failed: {e:?}")))?;
            if page.items.len() > limit as usize {
                return Err(TestCaseError::fail(format!("scan page of {} items, limit {limit}", page.items.len())));
            }
            out.extend(page.items);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(out),
            }
        }
        Err(TestCaseError::fail("scan cursors do not reach the end of a 4-item partition"))
    }

    async fn step(&self, model: &mut Model, op: &Op) -> Result<(), TestCaseError> {
        let mismatch = |store: String, model: String| {
            Err(TestCaseError::fail(format!("{op:?}:\n  store answered {store}\n  model answered {model}")))
        };
        match op {
            Op::Get(s) => {
                let got = self.answer(self.store.get(&self.key(*s)).await);
                let want = Answer::Ok(model.get(*s));
                if got != want {
                    return mismatch(format!("{got:?}"), format!("{want:?}"));
                }
            }
            Op::Put(s, item, mode) => {
                let got = self.answer(self.store.put(&self.key(*s), item.clone(), *mode).await);
                let want = self.answer(model.apply(&TxOp::Put(*s, item.clone(), *mode)).map(|_| ()));
                if got != want {
                    return mismatch(format!("{got:?}"), format!("{want:?}"));
                }
            }
            Op::Update(s, c, m) => {
                let got = self.answer(self.store.update(&self.key(*s), c, m).await);
                let want = self.answer(
                    model.apply(&TxOp::Update(*s, c.clone(), m.clone())).map(|i| i.expect("update returns the item")),
                );
                if got != want {
                    return mismatch(format!("{got:?}"), format!("{want:?}"));
                }
            }
            Op::Delete(s, c) => {
                let got = self.answer(self.store.delete(&self.key(*s), c).await);
                let want = self.answer(model.apply(&TxOp::Delete(*s, c.clone())).map(|i| i.is_some()));
                if got != want {
                    return mismatch(format!("{got:?}"), format!("{want:?}"));
                }
            }
            Op::Transact(ops) => {
                let got = self.answer(self.store.transact(ops.iter().map(|o| self.write_op(o)).collect()).await);
                let want = self.answer(model.transact(ops));
                if got != want {
                    return mismatch(format!("{got:?}"), format!("{want:?}"));
                }
            }
            Op::Scan { table, partition, after, limit } => {
                let after = after.map(|a| AFTERS[a].to_vec());
                let want = model.partition(*table, *partition, after.as_deref());
                // One page: a prefix of what follows `after`, at most `limit`
                // long (a backend may return fewer, never more).
                let page = self
                    .store
                    .scan(
                        &self.tables[*table],
                        PARTITIONS[*partition],
                        PageRequest { after: after.clone(), limit: *limit },
                    )
                    .await
                    .map_err(|e| TestCaseError::fail(format!("{op:?}: {e:?}")))?;
                let n = page.items.len();
                if n > *limit as usize
                    || want.get(..n) != Some(&page.items[..])
                    || (page.next.is_none() && n != want.len())
                {
                    return mismatch(format!("page {page:?}"), format!("items {want:?}"));
                }
                // All pages from `after` on: exactly the model's items.
                let all = self.scan_rest(*table, *partition, after, *limit).await?;
                if all != want {
                    return mismatch(format!("pages together {all:?}"), format!("{want:?}"));
                }
            }
        }
        Ok(())
    }

    /// After the ops: every partition holds exactly the model's items.
    async fn check_final(&self, model: &Model) -> Result<(), TestCaseError> {
        for table in 0..TABLES {
            for partition in 0..PARTITIONS.len() {
                let all = self.scan_rest(table, partition, None, 1000).await?;
                let want = model.partition(table, partition, None);
                if all != want {
                    return Err(TestCaseError::fail(format!(
                        "final state of table {table} partition {partition}: store {all:?}, model {want:?}"
                    )));
                }
            }
        }
        Ok(())
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Run the property test on `store`. Each generated case (and each shrinking
/// step) uses tables of its own, so cases start empty on one store.
pub(crate) async fn check_against_model(store: Arc<dyn StateStore>) {
    let caps = store.capabilities();
    let config = Config {
        cases: env_or("FLOWSTATE_MODEL_CASES", DEFAULT_CASES),
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(env_or("FLOWSTATE_MODEL_SEED", DEFAULT_SEED)),
        failure_persistence: None,
        max_shrink_iters: 512,
        ..Config::default()
    };
    let handle = tokio::runtime::Handle::current();
    let outcome = tokio::task::spawn_blocking(move || {
        let mut runner = TestRunner::new(config);
        let runs = AtomicUsize::new(0);
        // The hot keys start filled, so most updates meet an item.
        let strategy = (vec(item(), 3), vec(op(caps.atomic_batch), 1..=MAX_OPS)).prop_map(|(seed, ops)| {
            let fill = seed.into_iter().enumerate().map(|(i, item)| Op::Put((0, 0, i), item, PutMode::Overwrite));
            fill.chain(ops).collect::<Vec<_>>()
        });
        let result = runner.run(&strategy, |ops| {
            let n = runs.fetch_add(1, Ordering::SeqCst);
            let tables = (0..TABLES).map(|t| TableName::new(format!("model_{n}_{t}")).expect("valid table")).collect();
            let run = Run { store: &*store, tables, current_on_failure: caps.returns_current_on_condition_failure };
            let mut model = Model { items: BTreeMap::new(), max_item_bytes: caps.max_item_bytes };
            handle.block_on(async {
                for op in &ops {
                    run.step(&mut model, op).await?;
                }
                run.check_final(&model).await
            })
        });
        result.map_err(|e| e.to_string())
    })
    .await
    .expect("the model runner panicked");
    if let Err(e) = outcome {
        panic!("the store disagrees with the model of the contract: {e}");
    }
}
