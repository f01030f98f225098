//! [`Intercept`]: one store wrapper for every test double. A double states
//! only the calls it changes (its [`Hooks`]); every other call goes to the
//! inner store unchanged.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use flowstate_core::store::{
    Capabilities, Condition, Item, Key, Mutation, Page, PageRequest, PutMode, StateStore, StoreResult, TableName,
    WriteOp,
};

/// What a test double does instead of a plain call; each hook receives the
/// inner store and forwards to it unless overridden.
#[async_trait]
pub trait Hooks: Debug + Send + Sync + 'static {
    /// [`StateStore::capabilities`].
    fn capabilities(&self, inner: &dyn StateStore) -> Capabilities {
        inner.capabilities()
    }
    /// [`StateStore::get`].
    async fn get(&self, inner: &dyn StateStore, key: &Key) -> StoreResult<Option<Item>> {
        inner.get(key).await
    }
    /// [`StateStore::put`].
    async fn put(&self, inner: &dyn StateStore, key: &Key, item: Item, mode: PutMode) -> StoreResult<()> {
        inner.put(key, item, mode).await
    }
    /// [`StateStore::update`].
    async fn update(
        &self,
        inner: &dyn StateStore,
        key: &Key,
        conditions: &[Condition],
        mutations: &[Mutation],
    ) -> StoreResult<Item> {
        inner.update(key, conditions, mutations).await
    }
    /// [`StateStore::delete`].
    async fn delete(&self, inner: &dyn StateStore, key: &Key, conditions: &[Condition]) -> StoreResult<bool> {
        inner.delete(key, conditions).await
    }
    /// [`StateStore::scan`].
    async fn scan(
        &self,
        inner: &dyn StateStore,
        table: &TableName,
        partition: &[u8],
        page: PageRequest,
    ) -> StoreResult<Page> {
        inner.scan(table, partition, page).await
    }
    /// [`StateStore::transact`].
    async fn transact(&self, inner: &dyn StateStore, ops: Vec<WriteOp>) -> StoreResult<()> {
        inner.transact(ops).await
    }
}

/// A store that runs every call through `hooks` on its way to `inner`.
#[derive(Debug)]
pub struct Intercept<H> {
    inner: Arc<dyn StateStore>,
    hooks: H,
}

impl<H: Hooks> Intercept<H> {
    /// Wrap `inner`.
    pub fn new(inner: Arc<dyn StateStore>, hooks: H) -> Self {
        Self { inner, hooks }
    }

    /// The hooks (to arm a fault, or read what it saw).
    pub fn hooks(&self) -> &H {
        &self.hooks
    }
}

#[async_trait]
impl<H: Hooks> StateStore for Intercept<H> {
    fn capabilities(&self) -> Capabilities {
        self.hooks.capabilities(&*self.inner)
    }
    fn requests_sent(&self) -> Option<u64> {
        self.inner.requests_sent()
    }
    async fn get(&self, key: &Key) -> StoreResult<Option<Item>> {
        self.hooks.get(&*self.inner, key).await
    }
    async fn put(&self, key: &Key, item: Item, mode: PutMode) -> StoreResult<()> {
        self.hooks.put(&*self.inner, key, item, mode).await
    }
    async fn update(&self, key: &Key, conditions: &[Condition], mutations: &[Mutation]) -> StoreResult<Item> {
        self.hooks.update(&*self.inner, key, conditions, mutations).await
    }
    async fn delete(&self, key: &Key, conditions: &[Condition]) -> StoreResult<bool> {
        self.hooks.delete(&*self.inner, key, conditions).await
    }
    async fn scan(&self, table: &TableName, partition: &[u8], page: PageRequest) -> StoreResult<Page> {
        self.hooks.scan(&*self.inner, table, partition, page).await
    }
    async fn transact(&self, ops: Vec<WriteOp>) -> StoreResult<()> {
        self.hooks.transact(&*self.inner, ops).await
    }
}

/// Hooks that change nothing and keep `G` (a temporary directory, an
/// emulator handle, ...) alive exactly as long as the store.
#[derive(Debug)]
pub struct KeepAlive<G>(pub G);

impl<G: Debug + Send + Sync + 'static> Hooks for KeepAlive<G> {}

/// `store`, keeping `guard` alive as long as it, for factories that must
/// return only `Arc<dyn StateStore>`.
pub fn guarded<G: Debug + Send + Sync + 'static>(store: impl StateStore, guard: G) -> Intercept<KeepAlive<G>> {
    Intercept::new(Arc::new(store), KeepAlive(guard))
}
