//! The `StateStore` contract: the few storage primitives the linked DAAL needs.
//!
//! A backend implements [`StateStore`] once, natively (DynamoDB `UpdateItem`
//! with a `ConditionExpression`, SQL `UPDATE … WHERE … RETURNING`, a Cosmos
//! conditional patch, ...). Everything else in Flowstate is written against this
//! trait. The exact semantics every backend must share are written down in
//! [`eval`] (the reference evaluator) and checked by the conformance suite.
//!
//! Data model: a namespace (chosen when the store is opened) holds tables; a
//! table holds items addressed by `(partition, sort)` byte strings; an item is
//! a map of named JSON attributes. Scans are ordered by `sort` bytes within one
//! partition.

mod error;
pub mod eval;
mod names;
mod value;

use std::fmt::Debug;

use async_trait::async_trait;

pub use error::{ErrorKind, StoreError, StoreResult};
pub use names::{Namespace, TableName, validate_identifier};
pub use value::{CmpOp, Condition, Item, Mutation, Path, Predicate};

/// The address of one item.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// Logical table within the store's namespace.
    pub table: TableName,
    /// Partition key: items of one partition can be scanned in `sort` order.
    pub partition: Vec<u8>,
    /// Sort key within the partition.
    pub sort: Vec<u8>,
}

impl Key {
    /// A key from its three parts.
    pub fn new(table: TableName, partition: impl Into<Vec<u8>>, sort: impl Into<Vec<u8>>) -> Self {
        Self { table, partition: partition.into(), sort: sort.into() }
    }
}

/// How `put` treats an item that already exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutMode {
    /// Fail with [`ErrorKind::ConditionFailed`] (carrying the existing item) if it exists.
    Create,
    /// Replace whatever is there.
    Overwrite,
}

/// One page request of a scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageRequest {
    /// Resume strictly after this sort key (a previous page's [`Page::next`]).
    pub after: Option<Vec<u8>>,
    /// At most this many items (a backend may return fewer, never more).
    pub limit: u32,
}

impl PageRequest {
    /// The first page, with at most `limit` items.
    pub fn first(limit: u32) -> Self {
        Self { after: None, limit }
    }
}

/// One page of a scan, in ascending `sort` order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Page {
    /// `(sort key, item)` pairs.
    pub items: Vec<(Vec<u8>, Item)>,
    /// Cursor for the next page; `None` when the partition is exhausted.
    pub next: Option<Vec<u8>>,
}

/// One write of an atomic multi-item [`StateStore::transact`].
#[derive(Clone, Debug, PartialEq)]
pub enum WriteOp {
    /// As [`StateStore::put`].
    Put { key: Key, item: Item, mode: PutMode },
    /// As [`StateStore::update`].
    Update { key: Key, conditions: Vec<Condition>, mutations: Vec<Mutation> },
    /// As [`StateStore::delete`].
    Delete { key: Key, conditions: Vec<Condition> },
}

/// How a backend performs a conditional update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpdateStrategy {
    /// The store evaluates the condition and applies the mutations in one request.
    Native,
    /// One transaction of several requests (read, evaluate, write, commit) that
    /// the store runs atomically; `round_trips` is what one update costs.
    Transaction { round_trips: u8 },
    /// Client-side compare-and-swap on a version (ETag): one request when the
    /// cached version is current, more on a miss.
    CompareAndSwap,
}

/// What a backend can do; the engine and the conformance suite read this.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Largest encoded item (see [`Item::encoded_len`]) the store accepts.
    pub max_item_bytes: usize,
    /// Whether [`StateStore::transact`] is atomic across items.
    pub atomic_batch: bool,
    /// How conditional updates are performed.
    pub update: UpdateStrategy,
    /// Whether a failed condition returns the current item in the same round trip.
    pub returns_current_on_condition_failure: bool,
    /// Whether scans observe every write acknowledged before the scan started.
    pub consistent_scan: bool,
    /// Largest page a single scan request returns.
    pub max_page: u32,
}

impl Capabilities {
    /// Capabilities with the given item limit and the strictest defaults
    /// (native update, current item returned, consistent scans, no batch).
    pub fn new(max_item_bytes: usize) -> Self {
        Self {
            max_item_bytes,
            atomic_batch: false,
            update: UpdateStrategy::Native,
            returns_current_on_condition_failure: true,
            consistent_scan: true,
            max_page: 1000,
        }
    }

    /// Set [`Capabilities::atomic_batch`].
    pub fn with_atomic_batch(mut self, yes: bool) -> Self {
        self.atomic_batch = yes;
        self
    }

    /// Set [`Capabilities::update`].
    pub fn with_update(mut self, strategy: UpdateStrategy) -> Self {
        self.update = strategy;
        self
    }

    /// Set [`Capabilities::returns_current_on_condition_failure`].
    pub fn with_current_on_failure(mut self, yes: bool) -> Self {
        self.returns_current_on_condition_failure = yes;
        self
    }

    /// Set [`Capabilities::max_page`].
    pub fn with_max_page(mut self, max_page: u32) -> Self {
        self.max_page = max_page;
        self
    }
}

/// The storage contract. Every method is one round trip to the store unless
/// [`Capabilities::update`] says otherwise; every method is required.
///
/// Semantics (the conformance suite checks each):
/// - `get` is strongly consistent.
/// - `put` with [`PutMode::Create`] fails with `ConditionFailed` carrying the
///   existing item.
/// - `update` applies *all* `mutations` atomically iff *all* `conditions` hold
///   on the current item, and returns the item as written. A missing item is
///   [`ErrorKind::NotFound`] (update never creates). A false condition is
///   `ConditionFailed`, carrying the current item where the capability says so.
/// - `delete` with no conditions is idempotent and says whether it removed an
///   item; with conditions, a false one is `ConditionFailed`.
/// - `scan` returns a partition's items in ascending sort-key order, paged.
/// - `transact` applies all ops or none, where [`Capabilities::atomic_batch`];
///   elsewhere it returns [`ErrorKind::Unsupported`].
/// - Any write whose encoded item would exceed [`Capabilities::max_item_bytes`]
///   fails with [`ErrorKind::TooLarge`] and changes nothing.
#[async_trait]
pub trait StateStore: Debug + Send + Sync + 'static {
    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;

    /// Requests sent to the server so far, where the backend counts them: the
    /// round trips on the wire, which differ from store calls where a call
    /// takes several (a Spanner transaction) or a fallback. `None` (the
    /// default) where every call is one request by construction, or there is
    /// no server. Wrappers forward it, so benchmarks can print both.
    fn requests_sent(&self) -> Option<u64> {
        None
    }

    /// Strongly consistent point read.
    async fn get(&self, key: &Key) -> StoreResult<Option<Item>>;

    /// Write a whole item, unconditionally or only if absent.
    async fn put(&self, key: &Key, item: Item, mode: PutMode) -> StoreResult<()>;

    /// Conditional multi-mutation update of one existing item; returns the new item.
    async fn update(&self, key: &Key, conditions: &[Condition], mutations: &[Mutation]) -> StoreResult<Item>;

    /// Conditional delete; `Ok(true)` if an item was removed.
    async fn delete(&self, key: &Key, conditions: &[Condition]) -> StoreResult<bool>;

    /// One page of a partition, ascending by sort key.
    async fn scan(&self, table: &TableName, partition: &[u8], page: PageRequest) -> StoreResult<Page>;

    /// All-or-nothing multi-item write (see [`Capabilities::atomic_batch`]).
    async fn transact(&self, ops: Vec<WriteOp>) -> StoreResult<()>;
}

/// Conveniences built on the required primitives, for every store.
#[async_trait]
pub trait StateStoreExt: StateStore {
    /// `put` with [`PutMode::Create`].
    async fn create(&self, key: &Key, item: Item) -> StoreResult<()> {
        self.put(key, item, PutMode::Create).await
    }

    /// Every item of a partition, following cursors; stops with
    /// [`ErrorKind::InvalidInput`] past `max_items` so a runaway partition
    /// cannot exhaust memory.
    async fn scan_all(
        &self,
        table: &TableName,
        partition: &[u8],
        max_items: usize,
    ) -> StoreResult<Vec<(Vec<u8>, Item)>> {
        let mut out = Vec::new();
        let mut after = None;
        let limit = self.capabilities().max_page.max(1);
        loop {
            let page = self.scan(table, partition, PageRequest { after, limit }).await?;
            out.extend(page.items);
            if out.len() > max_items {
                return Err(StoreError::invalid(format!(
                    "partition of table {table} holds more than {max_items} items"
                )));
            }
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(out),
            }
        }
    }
}

impl<S: StateStore + ?Sized> StateStoreExt for S {}

#[async_trait]
impl<S: StateStore + ?Sized> StateStore for std::sync::Arc<S> {
    fn capabilities(&self) -> Capabilities {
        (**self).capabilities()
    }
    fn requests_sent(&self) -> Option<u64> {
        (**self).requests_sent()
    }
    async fn get(&self, key: &Key) -> StoreResult<Option<Item>> {
        (**self).get(key).await
    }
    async fn put(&self, key: &Key, item: Item, mode: PutMode) -> StoreResult<()> {
        (**self).put(key, item, mode).await
    }
    async fn update(&self, key: &Key, conditions: &[Condition], mutations: &[Mutation]) -> StoreResult<Item> {
        (**self).update(key, conditions, mutations).await
    }
    async fn delete(&self, key: &Key, conditions: &[Condition]) -> StoreResult<bool> {
        (**self).delete(key, conditions).await
    }
    async fn scan(&self, table: &TableName, partition: &[u8], page: PageRequest) -> StoreResult<Page> {
        (**self).scan(table, partition, page).await
    }
    async fn transact(&self, ops: Vec<WriteOp>) -> StoreResult<()> {
        (**self).transact(ops).await
    }
}
