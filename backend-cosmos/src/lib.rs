//! Azure Cosmos DB [`StateStore`] for Flowstate, on the official
//! `azure_data_cosmos` SDK.
//!
//! Layout (see `docs/adr/0005-cosmos-layout.md` and the `codec` module): one container
//! per namespace (`{container_prefix}{namespace}`, partition key path `/pk`,
//! created on first use); an item is one document
//! `{"id": "k<hex sort>", "pk": "<table>.<hex partition>", "v": {…}}`.
//!
//! Conditional updates are an **ETag compare-and-swap**
//! ([`UpdateStrategy::CompareAndSwap`]): the conditions and mutations are
//! evaluated client-side with the reference evaluator
//! ([`flowstate_core::store::eval`]) on the last version this process read or
//! wrote, and the result is written with `replace` + `If-Match`. That is one
//! round trip when the cached version is current; otherwise a `412` (or a
//! cache miss) costs a point read and another attempt (bounded). A condition
//! that fails on a cached version is re-checked on a fresh read, and the
//! `ConditionFailed` then carries that current item.
//!
//! ```no_run
//! use backend_cosmos::{CosmosConfig, CosmosStore};
//! use flowstate_core::store::{Condition, Item, Key, Mutation, PutMode, StateStore, TableName};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let config = CosmosConfig::from_url("cosmos://myaccount.documents.azure.com:443?key=KEY&database=app").unwrap();
//! let store = CosmosStore::open(config).await.unwrap();
//! let key = Key::new(TableName::new("accounts").unwrap(), "alice", "");
//! store.put(&key, Item::new().with("balance", 10), PutMode::Overwrite).await.unwrap();
//! let item = store
//!     .update(&key, &[Condition::Below { attr: "balance".into(), bound: 100 }], &[Mutation::Add("balance".into(), 5)])
//!     .await
//!     .unwrap();
//! assert_eq!(item.get_i64("balance"), Some(15));
//! # }
//! ```

mod cache;
mod codec;
mod config;
mod error;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use azure_core::credentials::Secret;
use azure_data_cosmos::clients::{ContainerClient, DatabaseClient};
use azure_data_cosmos::models::{ContainerProperties, ItemResponse};
use azure_data_cosmos::options::{
    BinaryEncodingOptions, ConnectionPoolOptionsBuilder, ItemWriteOptions, Precondition, Region,
    ServerCertificateValidation,
};
use azure_data_cosmos::{
    AccountEndpoint, AccountReference, CosmosClient, CosmosClientBuilder, CosmosError, CosmosRuntime, FeedScope, Query,
    RoutingStrategy,
};
use flowstate_core::store::eval::{apply_mutations, check_size, conditions_hold};
use flowstate_core::store::{
    Capabilities, Condition, ErrorKind, Item, Key, Mutation, Namespace, Page, PageRequest, PutMode, StateStore,
    StoreError, StoreResult, TableName, UpdateStrategy, WriteOp,
};
use futures_util::StreamExt;
use serde_json::Value;

use cache::{CacheKey, Cached, EtagCache};
pub use config::{CosmosConfig, DEFAULT_MAX_ITEM_BYTES, ENV_ENDPOINT, ENV_KEY, ENV_NAMESPACE, redact};
use error::{Op, map_err};

/// Compare-and-swap attempts of one `update` or conditional `delete` before
/// it gives up with the retryable [`ErrorKind::Conflict`].
const MAX_CAS_ATTEMPTS: usize = 32;
/// Largest page one `scan` returns.
const MAX_PAGE: u32 = 1000;
/// ETag cache bounds (per opened store, shared by its namespace views).
const CACHE_ENTRIES: usize = 4096;
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Shared by every namespace view of one opened store.
struct Shared {
    client: CosmosClient,
    database: DatabaseClient,
    database_name: String,
    container_prefix: String,
    max_item_bytes: usize,
    containers: Mutex<HashMap<String, ContainerClient>>,
    cache: Mutex<EtagCache>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("endpoint", &self.client.endpoint().as_str())
            .field("database", &self.database_name)
            .field("container_prefix", &self.container_prefix)
            .field("max_item_bytes", &self.max_item_bytes)
            .finish_non_exhaustive()
    }
}

/// A [`StateStore`] on Azure Cosmos DB. Cloning is cheap and shares the
/// client and the ETag cache.
#[derive(Clone, Debug)]
pub struct CosmosStore {
    shared: Arc<Shared>,
    ns: Namespace,
    container: String,
}

/// The outcome of one compare-and-swap write attempt.
enum Swap<T> {
    Done(T),
    /// The version changed (412) or the cached one was stale: read and retry.
    Retry,
}

impl<T> Swap<T> {
    /// A refusal computed on `known`: the answer if that version was just
    /// read, otherwise a reason to read it afresh and try again (the cached
    /// version may be stale).
    fn refused(fresh: bool, e: StoreError) -> StoreResult<Self> {
        if fresh { Err(e) } else { Ok(Swap::Retry) }
    }
}

impl CosmosStore {
    /// Connect to the account, and create the database and this namespace's
    /// container if they do not exist.
    ///
    /// The transport is the SDK's (reqwest + rustls) on a runtime of its own:
    /// HTTP/2 per [`CosmosConfig::http2`], certificate validation relaxed only
    /// for loopback hosts and only with [`CosmosConfig::accept_invalid_certs`].
    pub async fn open(config: CosmosConfig) -> StoreResult<Self> {
        config.validate()?;
        let validation = if config.accept_invalid_certs {
            // The SDK relaxes validation only for localhost / 127.0.0.1 / [::1]
            // hosts; `validate` has already refused the option elsewhere.
            ServerCertificateValidation::RequiredUnlessEmulator
        } else {
            ServerCertificateValidation::Required
        };
        let pool = ConnectionPoolOptionsBuilder::new()
            .with_is_http2_allowed(config.http2)
            .with_server_certificate_validation(validation)
            .build()
            .map_err(|e| map_err(e, Op::Setup))?;
        let runtime =
            CosmosRuntime::builder().with_connection_pool(pool).build().await.map_err(|e| map_err(e, Op::Setup))?;
        Self::open_with_runtime(config, runtime).await
    }

    /// [`CosmosStore::open`] on a runtime the caller built: to share one
    /// transport between stores, or to run on a custom transport such as the
    /// SDK's in-process emulator in tests.
    pub async fn open_with_runtime(config: CosmosConfig, runtime: CosmosRuntime) -> StoreResult<Self> {
        config.validate()?;
        let ns = Namespace::new(config.namespace.clone())?;
        let endpoint: AccountEndpoint = config
            .endpoint
            .parse()
            .map_err(|_| StoreError::invalid(format!("cosmos endpoint {:?} is not a URL", config.endpoint)))?;
        let account = AccountReference::with_authentication_key(endpoint, Secret::new(config.key.clone()));
        let routing = if config.region.is_empty() {
            RoutingStrategy::PreferredRegions(Vec::new())
        } else {
            RoutingStrategy::ProximityTo(Region::from(config.region.clone()))
        };
        let client = CosmosClientBuilder::new()
            .with_runtime(runtime)
            // Text JSON on the wire: what the item limit is measured on, and
            // what every Cosmos-compatible server speaks.
            .with_binary_encoding_options(BinaryEncodingOptions::new().with_enabled(false))
            .build(account, routing)
            .await
            .map_err(|e| map_err(e, Op::Setup))?;
        match client.create_database(&config.database, None).await {
            Ok(_) => tracing::info!(database = %config.database, "created the cosmos database"),
            Err(e) if e.status().is_conflict() => {}
            Err(e) => return Err(map_err(e, Op::Setup)),
        }
        let database = client.database_client(config.database.as_str());
        let shared = Shared {
            client,
            database,
            database_name: config.database.clone(),
            container_prefix: config.container_prefix.clone(),
            max_item_bytes: config.max_item_bytes,
            containers: Mutex::new(HashMap::new()),
            cache: Mutex::new(EtagCache::new(CACHE_ENTRIES, CACHE_BYTES)),
        };
        let store = Self::view(Arc::new(shared), ns);
        store.container().await?;
        tracing::debug!(endpoint = %config.endpoint, database = %config.database, namespace = %store.ns, "opened cosmos store");
        Ok(store)
    }

    /// [`CosmosStore::open`] with [`CosmosConfig::from_url`].
    pub async fn open_url(url: &str) -> StoreResult<Self> {
        Self::open(CosmosConfig::from_url(url)?).await
    }

    fn view(shared: Arc<Shared>, ns: Namespace) -> Self {
        let container = format!("{}{ns}", shared.container_prefix);
        Self { shared, ns, container }
    }

    /// A view of another namespace (its own container, created on first
    /// use), sharing the client and the ETag cache.
    pub fn with_namespace(&self, ns: Namespace) -> Self {
        Self::view(Arc::clone(&self.shared), ns)
    }

    /// This view's namespace.
    pub fn namespace(&self) -> &Namespace {
        &self.ns
    }

    /// The container holding this namespace.
    pub fn container_name(&self) -> &str {
        &self.container
    }

    /// The container client, creating the container on first use.
    async fn container(&self) -> StoreResult<ContainerClient> {
        if let Some(c) = lock(&self.shared.containers).get(&self.container) {
            return Ok(c.clone());
        }
        let properties = ContainerProperties::new(self.container.clone(), "/pk".into());
        match self.shared.database.create_container(properties, None).await {
            Ok(_) => tracing::info!(container = %self.container, "created a cosmos container"),
            Err(e) if e.status().is_conflict() => {}
            Err(e) => return Err(map_err(e, Op::Setup)),
        }
        let client = self
            .shared
            .database
            .container_client(self.container.as_str(), None)
            .await
            .map_err(|e| map_err(e, Op::Setup))?;
        lock(&self.shared.containers).insert(self.container.clone(), client.clone());
        Ok(client)
    }

    fn cache_key(&self, pk: &str, id: &str) -> CacheKey {
        (self.container.clone(), pk.to_owned(), id.to_owned())
    }

    fn cached(&self, ck: &CacheKey) -> Option<Cached> {
        lock(&self.shared.cache).get(ck)
    }

    fn remember(&self, ck: CacheKey, response: &ItemResponse, item: Arc<Item>, bytes: usize) {
        match response.headers().etag() {
            Some(etag) => lock(&self.shared.cache).put(ck, etag.to_string(), item, bytes),
            None => self.forget(&ck),
        }
    }

    fn forget(&self, ck: &CacheKey) {
        lock(&self.shared.cache).remove(ck);
    }

    /// Strong point read; caches the version.
    async fn read(&self, container: &ContainerClient, pk: &str, id: &str) -> StoreResult<Option<Cached>> {
        let ck = self.cache_key(pk, id);
        match container.read_item(pk.to_owned(), id, None).await {
            Ok(response) => {
                let etag = response.headers().etag().map(|e| e.to_string());
                let doc: Value = response.into_model().map_err(|e| map_err(e, Op::Read))?;
                let item = Arc::new(codec::item_of(doc)?);
                match etag {
                    Some(etag) => {
                        let bytes = item.encoded_len();
                        lock(&self.shared.cache).put(ck, etag.clone(), Arc::clone(&item), bytes);
                        Ok(Some(Cached { etag, item }))
                    }
                    None => Err(StoreError::corrupt("cosmos db returned an item without an ETag")),
                }
            }
            Err(e) if e.status().is_not_found() => {
                self.forget(&ck);
                Ok(None)
            }
            Err(e) => Err(map_err(e, Op::Read)),
        }
    }

    fn too_large(&self, item: &Item) -> StoreResult<usize> {
        let bytes = item.encoded_len();
        check_size(item, self.shared.max_item_bytes)?;
        Ok(bytes)
    }

    /// `replace` with `If-Match: etag`.
    async fn replace_if(
        &self,
        container: &ContainerClient,
        pk: &str,
        id: &str,
        etag: &str,
        next: Item,
        bytes: usize,
    ) -> StoreResult<Swap<Item>> {
        let ck = self.cache_key(pk, id);
        let options = ItemWriteOptions::default().with_precondition(Precondition::if_match(etag.to_owned()));
        let doc = codec::document(pk, id, &next);
        match container.replace_item(pk.to_owned(), id, &doc, Some(options)).await {
            Ok(response) => {
                let next = Arc::new(next);
                self.remember(ck, &response, Arc::clone(&next), bytes);
                Ok(Swap::Done(Arc::unwrap_or_clone(next)))
            }
            Err(e) => {
                self.forget(&ck);
                self.swap_failed(e)
            }
        }
    }

    /// A failed `If-Match` write: `412` means retry; `404` means the item is
    /// gone (re-read to decide); the rest is mapped.
    fn swap_failed<T>(&self, e: CosmosError) -> StoreResult<Swap<T>> {
        let status = e.status();
        if status.is_precondition_failed() || status.is_not_found() {
            let mapped = map_err(e, Op::Write);
            return if mapped.kind() == ErrorKind::Indeterminate { Err(mapped) } else { Ok(Swap::Retry) };
        }
        Err(map_err(e, Op::Write))
    }

    /// One CAS attempt of `update` on `known` (`fresh`: just read).
    async fn try_update(
        &self,
        container: &ContainerClient,
        (pk, id): (&str, &str),
        known: &Cached,
        fresh: bool,
        conditions: &[Condition],
        mutations: &[Mutation],
    ) -> StoreResult<Swap<Item>> {
        let current = &*known.item;
        if !conditions_hold(conditions, Some(current)) {
            return Swap::refused(fresh, StoreError::condition_failed(Some(current.clone())));
        }
        let mut next = current.clone();
        let bytes = match apply_mutations(&mut next, mutations).and_then(|()| self.too_large(&next)) {
            Ok(bytes) => bytes,
            // Type errors and sizes are answers only on a version known to be current.
            Err(e) => return Swap::refused(fresh, e),
        };
        self.replace_if(container, pk, id, &known.etag, next, bytes).await
    }

    /// One CAS attempt of a conditional `delete` on `known`.
    async fn try_delete(
        &self,
        container: &ContainerClient,
        (pk, id): (&str, &str),
        known: &Cached,
        fresh: bool,
        conditions: &[Condition],
    ) -> StoreResult<Swap<bool>> {
        if !conditions_hold(conditions, Some(&known.item)) {
            return Swap::refused(fresh, StoreError::condition_failed(Some((*known.item).clone())));
        }
        let ck = self.cache_key(pk, id);
        let options = ItemWriteOptions::default().with_precondition(Precondition::if_match(known.etag.clone()));
        let result = container.delete_item(pk.to_owned(), id, Some(options)).await;
        self.forget(&ck);
        match result {
            Ok(_) => Ok(Swap::Done(true)),
            Err(e) => self.swap_failed(e),
        }
    }

    async fn create(&self, key: &Key, item: Item) -> StoreResult<()> {
        let (pk, id) = codec::key_parts(key)?;
        let bytes = self.too_large(&item)?;
        let container = self.container().await?;
        let doc = codec::document(&pk, &id, &item);
        let item = Arc::new(item);
        for _ in 0..3 {
            match container.create_item(pk.clone(), &id, &doc, None).await {
                Ok(response) => {
                    self.remember(self.cache_key(&pk, &id), &response, item, bytes);
                    return Ok(());
                }
                Err(e) if e.status().is_conflict() => {
                    let mapped = map_err(e, Op::Write);
                    if mapped.kind() != ErrorKind::ConditionFailed {
                        return Err(mapped);
                    }
                    // 409 has no body: one more round trip for the existing item.
                    if let Some(existing) = self.read(&container, &pk, &id).await? {
                        return Err(StoreError::condition_failed(Some((*existing.item).clone())).with_source(mapped));
                    }
                    // Deleted again in between: try once more.
                }
                Err(e) => return Err(map_err(e, Op::Write)),
            }
        }
        Err(StoreError::new(ErrorKind::Conflict, "the item was created and deleted concurrently; retry"))
    }

    async fn overwrite(&self, key: &Key, item: Item) -> StoreResult<()> {
        let (pk, id) = codec::key_parts(key)?;
        let bytes = self.too_large(&item)?;
        let container = self.container().await?;
        let doc = codec::document(&pk, &id, &item);
        let ck = self.cache_key(&pk, &id);
        match container.upsert_item(pk.clone(), &id, &doc, None).await {
            Ok(response) => {
                self.remember(ck, &response, Arc::new(item), bytes);
                Ok(())
            }
            Err(e) => {
                self.forget(&ck);
                Err(map_err(e, Op::Write))
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[async_trait]
impl StateStore for CosmosStore {
    /// ETag compare-and-swap updates (no native conditional update in one
    /// request for the whole vocabulary), the current item on a failed
    /// condition (from the read the CAS did), no cross-partition atomic
    /// batch (Cosmos batches are single-partition), consistent scans under
    /// the account's Strong (or this client's Session) consistency.
    fn capabilities(&self) -> Capabilities {
        Capabilities::new(self.shared.max_item_bytes)
            .with_update(UpdateStrategy::CompareAndSwap)
            .with_current_on_failure(true)
            .with_atomic_batch(false)
            .with_max_page(MAX_PAGE)
    }

    async fn get(&self, key: &Key) -> StoreResult<Option<Item>> {
        let (pk, id) = codec::key_parts(key)?;
        let container = self.container().await?;
        Ok(self.read(&container, &pk, &id).await?.map(|c| Arc::unwrap_or_clone(c.item)))
    }

    async fn put(&self, key: &Key, item: Item, mode: PutMode) -> StoreResult<()> {
        match mode {
            PutMode::Create => self.create(key, item).await,
            PutMode::Overwrite => self.overwrite(key, item).await,
        }
    }

    async fn update(&self, key: &Key, conditions: &[Condition], mutations: &[Mutation]) -> StoreResult<Item> {
        let (pk, id) = codec::key_parts(key)?;
        let container = self.container().await?;
        let ck = self.cache_key(&pk, &id);
        let mut known = self.cached(&ck).map(|c| (c, false));
        for _ in 0..MAX_CAS_ATTEMPTS {
            let (version, fresh) = match known.take() {
                Some(k) => k,
                None => match self.read(&container, &pk, &id).await? {
                    Some(c) => (c, true),
                    None => return Err(StoreError::new(ErrorKind::NotFound, "update of a missing item")),
                },
            };
            match self.try_update(&container, (&pk, &id), &version, fresh, conditions, mutations).await? {
                Swap::Done(item) => return Ok(item),
                Swap::Retry => {}
            }
        }
        Err(StoreError::new(ErrorKind::Conflict, "the item kept changing under concurrent writers; retry"))
    }

    async fn delete(&self, key: &Key, conditions: &[Condition]) -> StoreResult<bool> {
        let (pk, id) = codec::key_parts(key)?;
        let container = self.container().await?;
        let ck = self.cache_key(&pk, &id);
        if conditions.is_empty() {
            let result = container.delete_item(pk.clone(), &id, None).await;
            self.forget(&ck);
            return match result {
                Ok(_) => Ok(true),
                Err(e) if e.status().is_not_found() => match map_err(e, Op::Write) {
                    e if e.kind() == ErrorKind::NotFound => Ok(false),
                    e => Err(e),
                },
                Err(e) => Err(map_err(e, Op::Write)),
            };
        }
        let mut known = self.cached(&ck).map(|c| (c, false));
        for _ in 0..MAX_CAS_ATTEMPTS {
            let (version, fresh) = match known.take() {
                Some(k) => k,
                None => match self.read(&container, &pk, &id).await? {
                    Some(c) => (c, true),
                    None if conditions_hold(conditions, None) => return Ok(false),
                    None => return Err(StoreError::condition_failed(None)),
                },
            };
            match self.try_delete(&container, (&pk, &id), &version, fresh, conditions).await? {
                Swap::Done(removed) => return Ok(removed),
                Swap::Retry => {}
            }
        }
        Err(StoreError::new(ErrorKind::Conflict, "the item kept changing under concurrent writers; retry"))
    }

    /// `SELECT TOP n+1 c.id, c.v FROM c WHERE c.pk = @pk [AND c.id > @after]
    /// ORDER BY c.id`, scoped to the partition **and** filtered on it (a
    /// server that ignores the scope still answers correctly). The extra row
    /// tells whether another page follows; continuations are followed until
    /// the `TOP` is reached or the partition ends.
    async fn scan(&self, table: &TableName, partition: &[u8], page: PageRequest) -> StoreResult<Page> {
        let limit = page.limit.clamp(1, MAX_PAGE);
        let pk = codec::partition_key(table, partition)?;
        let after = page.after.as_deref().map(codec::id).transpose()?;
        let container = self.container().await?;
        let top = limit + 1;
        let text = match after {
            None => format!("SELECT TOP {top} c.id, c.v FROM c WHERE c.pk = @pk ORDER BY c.id"),
            Some(_) => format!("SELECT TOP {top} c.id, c.v FROM c WHERE c.pk = @pk AND c.id > @after ORDER BY c.id"),
        };
        let mut query = Query::from(text).with_parameter("@pk", &pk).map_err(|e| map_err(e, Op::Read))?;
        if let Some(after) = &after {
            query = query.with_parameter("@after", after).map_err(|e| map_err(e, Op::Read))?;
        }
        let mut rows = container
            .query_items::<Value>(query, FeedScope::partition(pk.clone()), None)
            .await
            .map_err(|e| map_err(e, Op::Read))?;
        let mut items = Vec::new();
        let mut more = false;
        while let Some(row) = rows.next().await {
            let row = row.map_err(|e| map_err(e, Op::Read))?;
            if items.len() == limit as usize {
                more = true;
                break;
            }
            let id = match row.get("id") {
                Some(Value::String(id)) => id.clone(),
                _ => return Err(StoreError::corrupt("a query row has no string id")),
            };
            items.push((codec::sort_of_id(&id)?, codec::item_of(row)?));
        }
        let next = if more { items.last().map(|(sk, _)| sk.clone()) } else { None };
        Ok(Page { items, next })
    }

    /// Cosmos transactional batches are atomic within one partition key
    /// only, so there is no all-or-nothing batch across arbitrary keys:
    /// `Unsupported`, and the engine uses its non-batch paths.
    async fn transact(&self, ops: Vec<WriteOp>) -> StoreResult<()> {
        Err(StoreError::new(
            ErrorKind::Unsupported,
            format!("cosmos db has no atomic batch across partitions ({} ops refused)", ops.len()),
        ))
    }
}
