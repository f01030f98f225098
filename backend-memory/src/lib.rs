//! The in-memory reference [`StateStore`]: thread-safe, exact semantics,
//! evaluated with the contract's reference evaluator
//! ([`flowstate_core::store::eval`]). It is what every core test runs on, and
//! the model the other backends are compared with.
//!
//! ```
//! use backend_memory::MemoryStore;
//! use flowstate_core::store::{Item, Key, PutMode, StateStore, TableName};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let store = MemoryStore::new();
//! let key = Key::new(TableName::new("t").unwrap(), "p", "s");
//! store.put(&key, Item::new().with("v", 1), PutMode::Create).await.unwrap();
//! assert_eq!(store.get(&key).await.unwrap().unwrap().get_i64("v"), Some(1));
//! # }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use flowstate_core::store::eval::{check_size, conditions_hold, updated};
use flowstate_core::store::{
    Capabilities, Condition, Item, Key, Mutation, Page, PageRequest, PutMode, StateStore, StoreError, StoreResult,
    TableName, WriteOp,
};

/// Default item limit: DynamoDB's 400 KB, so code tested on memory fits there.
pub const DEFAULT_MAX_ITEM_BYTES: usize = 400 * 1024;

type Partition = BTreeMap<Vec<u8>, Item>;
type Tables = HashMap<(TableName, Vec<u8>), Partition>;

/// The in-memory store. Cloning shares the data.
#[derive(Clone, Debug)]
pub struct MemoryStore {
    tables: Arc<Mutex<Tables>>,
    max_item_bytes: usize,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store with the default item limit.
    pub fn new() -> Self {
        Self::with_max_item_bytes(DEFAULT_MAX_ITEM_BYTES)
    }

    /// An empty store with a custom item limit.
    pub fn with_max_item_bytes(max_item_bytes: usize) -> Self {
        Self { tables: Arc::default(), max_item_bytes }
    }

    /// Number of items in all tables (for tests).
    pub fn len(&self) -> usize {
        self.lock().values().map(BTreeMap::len).sum()
    }

    /// Whether the store holds no item.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Tables> {
        // A panic while holding the lock cannot leave a half-applied write:
        // every write below is computed on a copy and stored with one insert.
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Apply one write op to the tables; nothing changes on error.
fn apply(tables: &mut Tables, op: &WriteOp, max: usize) -> StoreResult<Option<Item>> {
    match op {
        WriteOp::Put { key, item, mode } => {
            check_size(item, max)?;
            let part = tables.entry((key.table.clone(), key.partition.clone())).or_default();
            if *mode == PutMode::Create
                && let Some(existing) = part.get(&key.sort)
            {
                return Err(StoreError::condition_failed(Some(existing.clone())));
            }
            part.insert(key.sort.clone(), item.clone());
            Ok(None)
        }
        WriteOp::Update { key, conditions, mutations } => {
            let current = tables.get(&(key.table.clone(), key.partition.clone())).and_then(|p| p.get(&key.sort));
            let next = updated(current, conditions, mutations, max)?;
            let part = tables.get_mut(&(key.table.clone(), key.partition.clone())).expect("exists");
            part.insert(key.sort.clone(), next.clone());
            Ok(Some(next))
        }
        WriteOp::Delete { key, conditions } => {
            let pk = (key.table.clone(), key.partition.clone());
            let current = tables.get(&pk).and_then(|p| p.get(&key.sort));
            if !conditions_hold(conditions, current) {
                return Err(StoreError::condition_failed(current.cloned()));
            }
            let removed = tables.get_mut(&pk).and_then(|p| p.remove(&key.sort)).is_some();
            Ok(removed.then(Item::new))
        }
    }
}

#[async_trait]
impl StateStore for MemoryStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities::new(self.max_item_bytes).with_atomic_batch(true)
    }

    async fn get(&self, key: &Key) -> StoreResult<Option<Item>> {
        let tables = self.lock();
        Ok(tables.get(&(key.table.clone(), key.partition.clone())).and_then(|p| p.get(&key.sort)).cloned())
    }

    async fn put(&self, key: &Key, item: Item, mode: PutMode) -> StoreResult<()> {
        apply(&mut self.lock(), &WriteOp::Put { key: key.clone(), item, mode }, self.max_item_bytes).map(|_| ())
    }

    async fn update(&self, key: &Key, conditions: &[Condition], mutations: &[Mutation]) -> StoreResult<Item> {
        let op = WriteOp::Update { key: key.clone(), conditions: conditions.to_vec(), mutations: mutations.to_vec() };
        let item = apply(&mut self.lock(), &op, self.max_item_bytes)?;
        Ok(item.expect("update returns the item"))
    }

    async fn delete(&self, key: &Key, conditions: &[Condition]) -> StoreResult<bool> {
        let op = WriteOp::Delete { key: key.clone(), conditions: conditions.to_vec() };
        let mut tables = self.lock();
        let removed = apply(&mut tables, &op, self.max_item_bytes)?.is_some();
        let pk = (key.table.clone(), key.partition.clone());
        if tables.get(&pk).is_some_and(BTreeMap::is_empty) {
            tables.remove(&pk);
        }
        Ok(removed)
    }

    async fn scan(&self, table: &TableName, partition: &[u8], page: PageRequest) -> StoreResult<Page> {
        let limit = page.limit.clamp(1, self.capabilities().max_page) as usize;
        let tables = self.lock();
        let Some(part) = tables.get(&(table.clone(), partition.to_vec())) else {
            return Ok(Page::default());
        };
        let start = match &page.after {
            Some(after) => std::ops::Bound::Excluded(after.clone()),
            None => std::ops::Bound::Unbounded,
        };
        let mut iter = part.range((start, std::ops::Bound::Unbounded));
        let items: Vec<(Vec<u8>, Item)> = iter.by_ref().take(limit).map(|(k, v)| (k.clone(), v.clone())).collect();
        let next = if iter.next().is_some() { items.last().map(|(k, _)| k.clone()) } else { None };
        Ok(Page { items, next })
    }

    async fn transact(&self, ops: Vec<WriteOp>) -> StoreResult<()> {
        let mut tables = self.lock();
        // All or nothing: apply in place, remembering each touched item's
        // previous state, and restore them all if any op fails.
        let mut undo: Vec<((TableName, Vec<u8>), Vec<u8>, Option<Item>)> = Vec::with_capacity(ops.len());
        let mut failure = None;
        for op in &ops {
            let key = match op {
                WriteOp::Put { key, .. } | WriteOp::Update { key, .. } | WriteOp::Delete { key, .. } => key,
            };
            let pk = (key.table.clone(), key.partition.clone());
            let previous = tables.get(&pk).and_then(|p| p.get(&key.sort)).cloned();
            undo.push((pk, key.sort.clone(), previous));
            if let Err(e) = apply(&mut tables, op, self.max_item_bytes) {
                failure = Some(e);
                break;
            }
        }
        if failure.is_some() {
            for (pk, sort, previous) in undo.iter().rev() {
                let part = tables.entry(pk.clone()).or_default();
                match previous {
                    Some(item) => part.insert(sort.clone(), item.clone()),
                    None => part.remove(sort),
                };
            }
        }
        for (pk, _, _) in &undo {
            if tables.get(pk).is_some_and(BTreeMap::is_empty) {
                tables.remove(pk);
            }
        }
        failure.map_or(Ok(()), Err)
    }
}
