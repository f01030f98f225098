//! Google Cloud Spanner [`StateStore`] for Flowstate, on the `gcloud-spanner`
//! client's gRPC layer.
//!
//! Layout (see `docs/adr/0006-spanner-layout.md`): one table (default
//! `flowstate_items`, created on first use) keyed `(ns, tbl, pk, sk)`; an item
//! is its compact JSON in a `BYTES` column. No SQL text is ever sent for data:
//! every request is a key-based `Read` or a `Commit` of mutations, so names and
//! values are data, never code.
//!
//! Spanner has no single request that checks a condition and writes, so a
//! conditional update is a **read-write transaction of two requests**
//! ([`UpdateStrategy::Transaction`] with 2 round trips): a `Read` of the row
//! that also *begins* the transaction (inline begin: no separate
//! `BeginTransaction` request, which the client library's own transactions
//! always send), the conditions and mutations evaluated here by the reference
//! evaluator ([`flowstate_core::store::eval`]) on the locked row, and a `Commit`
//! carrying the new row. A failed condition costs the one read: the
//! transaction is rolled back in the background. `transact` reads every key in
//! that first request, so a batch is also two requests, atomically.
//! `put` is one single-use `Commit` (`insert` for `Create`, where
//! `ALREADY_EXISTS` costs one more read to return the existing item);
//! `get` and `scan` are one strong single-use `Read`.
//!
//! Spanner aborts a transaction that loses a lock conflict (and the emulator
//! aborts any second concurrent read-write transaction): the backend retries
//! the whole transaction, up to [`SpannerConfig::abort_retries`] times with
//! jittered backoff, and then fails with the retryable `Conflict` kind. A
//! `Commit` whose answer is lost is `Indeterminate`; it is never resent.
//!
//! ```no_run
//! use backend_spanner::{SpannerConfig, SpannerStore};
//! use flowstate_core::store::{Condition, Item, Key, Mutation, PutMode, StateStore, TableName};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let config = SpannerConfig::from_url("spanner://projects/p/instances/i1/databases/app").unwrap();
//! let store = SpannerStore::open(config).await.unwrap();
//! let key = Key::new(TableName::new("accounts").unwrap(), "alice", "");
//! store.put(&key, Item::new().with("balance", 10), PutMode::Overwrite).await.unwrap();
//! let item = store
//!     .update(&key, &[Condition::Below { attr: "balance".into(), bound: 100 }], &[Mutation::Add("balance".into(), 5)])
//!     .await
//!     .unwrap();
//! assert_eq!(item.get_i64("balance"), Some(15));
//! # }
//! ```

mod config;
mod error;
mod schema;
mod session;
mod wire;

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use flowstate_core::store::eval::{check_size, conditions_hold, updated};
use flowstate_core::store::{
    Capabilities, Condition, ErrorKind, Item, Key, Mutation, Namespace, Page, PageRequest, PutMode, StateStore,
    StoreError, StoreResult, TableName, UpdateStrategy, WriteOp,
};
use gcloud_gax::conn::{ConnectionOptions, Environment};
use gcloud_gax::grpc::{Code, Status};
use gcloud_googleapis::spanner::v1::commit_request::Transaction as CommitTransaction;
use gcloud_googleapis::spanner::v1::key_range::{EndKeyType, StartKeyType};
use gcloud_googleapis::spanner::v1::mutation::{Delete, Operation, Write};
use gcloud_googleapis::spanner::v1::transaction_selector::Selector;
use gcloud_googleapis::spanner::v1::{
    CommitRequest, KeyRange, KeySet, Mutation as SpannerMutation, ReadRequest, ResultSet, RollbackRequest,
    TransactionSelector,
};
use gcloud_spanner::apiv1::conn_pool::ConnectionManager;
use gcloud_spanner::client::ClientConfig;

pub use crate::config::{
    DEFAULT_MAX_ITEM_BYTES, DEFAULT_TABLE, ENV_EMULATOR_HOST, MAX_ITEM_BYTES_LIMIT, SpannerConfig,
};
use crate::error::{Phase, from_setup, from_status, is_aborted, is_session_gone};
use crate::session::{Lease, SessionPool, no_retry};

/// Most rows one scan request returns.
const MAX_PAGE: u32 = 1000;

/// First and largest pause between attempts of an aborted transaction.
const BACKOFF_FIRST: Duration = Duration::from_millis(2);
const BACKOFF_MAX: Duration = Duration::from_millis(200);

/// A [`StateStore`] on Cloud Spanner. Cloning is cheap and shares the
/// connection and the session pool.
#[derive(Clone, Debug)]
pub struct SpannerStore {
    shared: Arc<Shared>,
    ns: Namespace,
}

#[derive(Debug)]
struct Shared {
    pool: Arc<SessionPool>,
    database: String,
    table: String,
    max_item_bytes: usize,
    abort_retries: u32,
    /// `Read` and `Commit` requests on a caller's path (the round trips).
    requests: AtomicU64,
    /// Transactions rolled back in the background (a failed condition).
    rollbacks: AtomicU64,
    /// Transactions Spanner aborted and the backend retried.
    aborts: AtomicU64,
}

/// One key's row inside a read-write transaction: as read, and as the
/// transaction's ops have left it so far.
struct Slot {
    key: Key,
    before: Option<Item>,
    after: Option<Item>,
}

/// A read-write transaction that has begun and not been committed: dropping
/// it rolls it back (in the background), whatever the way out.
struct OpenTxn<'a> {
    store: &'a SpannerStore,
    lease: Option<Lease>,
    txn: Vec<u8>,
}

impl OpenTxn<'_> {
    /// Hand the session and transaction to the commit (no rollback then).
    fn into_commit(mut self) -> (Lease, Vec<u8>) {
        let lease = self.lease.take().expect("an open transaction holds its session");
        (lease, std::mem::take(&mut self.txn))
    }
}

impl Drop for OpenTxn<'_> {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            self.store.rollback_later(lease, std::mem::take(&mut self.txn));
        }
    }
}

/// What one attempt of a transaction came to.
enum Attempt<T> {
    Done(StoreResult<T>),
    /// Aborted, or the session vanished before anything applied: run it again.
    Retry(Status),
}

impl SpannerStore {
    /// Connect (to the emulator named by the config or `SPANNER_EMULATOR_HOST`,
    /// otherwise to Spanner with Google's standard credential chain), and
    /// create the table if the database does not have it yet.
    pub async fn open(config: SpannerConfig) -> StoreResult<Self> {
        config.validate()?;
        let ns = Namespace::new(config.namespace.clone())?;
        let emulator = config.effective_emulator_host();
        let client_config = match &emulator {
            Some(host) => ClientConfig { environment: Environment::Emulator(host.clone()), ..ClientConfig::default() },
            None => ClientConfig::default().with_auth().await.map_err(|e| from_setup(e, "credentials"))?,
        };
        let options = ConnectionOptions {
            timeout: Some(config.timeout()),
            connect_timeout: Some(config.timeout().min(Duration::from_secs(10))),
            ..ConnectionOptions::default()
        };
        let channels = if emulator.is_some() { 1 } else { 4 };
        let conns = ConnectionManager::new(channels, &client_config.environment, &client_config.endpoint, &options)
            .await
            .map_err(|e| from_setup(e, "connect"))?;
        let pool = Arc::new(SessionPool::new(conns, config.database.clone(), config.sessions));
        schema::ensure_table(&pool, &config, emulator.as_deref()).await?;
        let shared = Shared {
            pool,
            database: config.database.clone(),
            table: config.table.clone(),
            max_item_bytes: config.max_item_bytes,
            abort_retries: config.abort_retries,
            requests: AtomicU64::new(0),
            rollbacks: AtomicU64::new(0),
            aborts: AtomicU64::new(0),
        };
        tracing::debug!(database = %config.database, table = %config.table, namespace = %ns, emulator = emulator.is_some(), "opened spanner store");
        Ok(Self { shared: Arc::new(shared), ns })
    }

    /// [`SpannerStore::open`] with [`SpannerConfig::from_url`].
    pub async fn open_url(url: &str) -> StoreResult<Self> {
        Self::open(SpannerConfig::from_url(url)?).await
    }

    /// A view of another namespace, sharing the connection and sessions.
    pub fn with_namespace(&self, ns: Namespace) -> Self {
        Self { shared: Arc::clone(&self.shared), ns }
    }

    /// This view's namespace.
    pub fn namespace(&self) -> &Namespace {
        &self.ns
    }

    /// The database (`projects/P/instances/I/databases/D`).
    pub fn database(&self) -> &str {
        &self.shared.database
    }

    /// `Read` and `Commit` requests made on callers' paths so far (shared by
    /// every view): the round trips. Background rollbacks and session
    /// creation are counted apart.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// Transactions rolled back in the background after a failed condition.
    pub fn rollbacks(&self) -> u64 {
        self.shared.rollbacks.load(Ordering::Relaxed)
    }

    /// Transactions Spanner aborted and the backend ran again.
    pub fn aborts(&self) -> u64 {
        self.shared.aborts.load(Ordering::Relaxed)
    }

    /// `BatchCreateSessions` requests made so far.
    pub fn session_batches(&self) -> u64 {
        self.shared.pool.created.load(Ordering::Relaxed)
    }

    /// Delete the idle sessions (the service would expire them after an hour).
    pub async fn close(&self) {
        self.shared.pool.close().await;
    }

    fn count_request(&self) {
        self.shared.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// A strong single-use read of `key_set` with the given columns.
    async fn read_strong(&self, columns: &[&str], key_set: KeySet, limit: i64) -> StoreResult<ResultSet> {
        let mut attempt = 0;
        loop {
            let lease = self.lease().await?;
            let request = ReadRequest {
                session: lease.name().to_owned(),
                transaction: wire::strong_single_use(),
                table: self.shared.table.clone(),
                columns: wire::columns(columns),
                key_set: Some(key_set.clone()),
                limit,
                ..ReadRequest::default()
            };
            self.count_request();
            match wire::read(&mut self.shared.pool.client(), request, false).await {
                Ok(rs) => return Ok(rs),
                // A vanished session, or a read the service could not serve
                // (reads change nothing, so repeating one is safe).
                Err(status) if is_session_gone(&status) && attempt < 3 => lease.discard(),
                Err(status) if status.code() == Code::Unavailable && attempt < 3 => {
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(status) => return Err(from_status(status, Phase::Read)),
            }
            attempt += 1;
        }
    }

    async fn lease(&self) -> StoreResult<Lease> {
        self.shared.pool.lease().await.map_err(|s| from_status(s, Phase::Read))
    }

    /// Run `apply` in a read-write transaction over `keys`: one `Read` that
    /// begins the transaction and locks the rows, `apply` on them, and one
    /// `Commit` of the rows it changed (none changed: no commit). An error
    /// from `apply` rolls back. Aborted transactions run again, bounded.
    async fn read_write<T>(
        &self,
        keys: Vec<Key>,
        apply: impl Fn(&mut [Slot]) -> StoreResult<T> + Send + Sync,
    ) -> StoreResult<T>
    where
        T: Send,
    {
        let mut last = None;
        for attempt in 0..=self.shared.abort_retries {
            match self.read_write_once(&keys, &apply).await? {
                Attempt::Done(result) => return result,
                Attempt::Retry(status) => {
                    self.shared.aborts.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(backoff(attempt)).await;
                    last = Some(status);
                }
            }
        }
        let status = last.unwrap_or_else(|| Status::new(Code::Aborted, "transaction aborted"));
        Err(StoreError::new(
            ErrorKind::Conflict,
            format!("spanner transaction aborted {} times: {}", self.shared.abort_retries + 1, status.message()),
        )
        .with_source(status))
    }

    async fn read_write_once<T>(
        &self,
        keys: &[Key],
        apply: &(impl Fn(&mut [Slot]) -> StoreResult<T> + Send + Sync),
    ) -> StoreResult<Attempt<T>> {
        let lease = self.lease().await?;
        let request = ReadRequest {
            session: lease.name().to_owned(),
            transaction: Some(TransactionSelector { selector: Some(Selector::Begin(wire::read_write())) }),
            table: self.shared.table.clone(),
            columns: wire::columns(&wire::READ_COLUMNS),
            key_set: Some(KeySet {
                keys: keys.iter().map(|k| wire::primary_key(&self.ns, k)).collect(),
                ..KeySet::default()
            }),
            ..ReadRequest::default()
        };
        self.count_request();
        let rs = match wire::read(&mut self.shared.pool.client(), request, true).await {
            Ok(rs) => rs,
            Err(status) if is_aborted(&status) => return Ok(Attempt::Retry(status)),
            Err(status) if is_session_gone(&status) => {
                lease.discard();
                return Ok(Attempt::Retry(status));
            }
            Err(status) => return Err(from_status(status, Phase::Read)),
        };
        let txn = rs.metadata.as_ref().and_then(|m| m.transaction.as_ref()).map(|t| t.id.clone()).unwrap_or_default();
        if txn.is_empty() {
            return Err(StoreError::new(ErrorKind::Unavailable, "spanner read did not begin a transaction"));
        }
        // From here on, leaving without a commit (an error, nothing to write,
        // or the caller dropping this future) rolls the transaction back.
        let open = OpenTxn { store: self, lease: Some(lease), txn };
        let mut slots = self.slots(keys, &rs)?;
        let result = match apply(&mut slots) {
            Ok(value) => value,
            Err(e) => return Ok(Attempt::Done(Err(e))),
        };
        let mutations = self.mutations(&slots);
        if mutations.is_empty() {
            return Ok(Attempt::Done(Ok(result)));
        }
        let (lease, txn) = open.into_commit();
        let commit = CommitRequest {
            session: lease.name().to_owned(),
            transaction: Some(CommitTransaction::TransactionId(txn)),
            mutations,
            ..CommitRequest::default()
        };
        self.count_request();
        match self.shared.pool.client().commit(commit, false, Some(no_retry())).await {
            Ok(_) => Ok(Attempt::Done(Ok(result))),
            // Nothing applied: an aborted commit, or a session that is gone
            // (its transaction went with it).
            Err(status) if is_aborted(&status) => Ok(Attempt::Retry(status)),
            Err(status) if is_session_gone(&status) => {
                lease.discard();
                Ok(Attempt::Retry(status))
            }
            Err(status) => Err(from_status(status, Phase::Commit)),
        }
    }

    /// The rows read for `keys`, one slot per distinct key (in `keys` order).
    fn slots(&self, keys: &[Key], rs: &ResultSet) -> StoreResult<Vec<Slot>> {
        let mut slots: Vec<Slot> = keys.iter().map(|k| Slot { key: k.clone(), before: None, after: None }).collect();
        for row in &rs.rows {
            let (tbl, pk, sk) =
                (wire::column_string(row, 0)?, wire::column_bytes(row, 1)?, wire::column_bytes(row, 2)?);
            let item = wire::item(&wire::column_bytes(row, 3)?)?;
            let slot = slots
                .iter_mut()
                .find(|s| s.key.table.as_str() == tbl && s.key.partition == pk && s.key.sort == sk)
                .ok_or_else(|| StoreError::corrupt("spanner returned a row that was not asked for"))?;
            slot.before = Some(item.clone());
            slot.after = Some(item);
        }
        Ok(slots)
    }

    /// The mutations that take every slot from `before` to `after`.
    fn mutations(&self, slots: &[Slot]) -> Vec<SpannerMutation> {
        let mut out = Vec::new();
        for slot in slots {
            let op = match (&slot.before, &slot.after) {
                (before, after) if before == after => continue,
                (_, Some(item)) => {
                    let write = self.write_op(&slot.key, item);
                    if slot.before.is_some() { Operation::Update(write) } else { Operation::Insert(write) }
                }
                (Some(_), None) => Operation::Delete(Delete {
                    table: self.shared.table.clone(),
                    key_set: Some(KeySet { keys: vec![wire::primary_key(&self.ns, &slot.key)], ..KeySet::default() }),
                }),
                (None, None) => continue,
            };
            out.push(SpannerMutation { operation: Some(op) });
        }
        out
    }

    /// Roll a transaction back without making the caller wait; the session
    /// returns to the pool when the rollback is done (until then its
    /// transaction holds its locks, and the emulator admits no other).
    fn rollback_later(&self, lease: Lease, txn: Vec<u8>) {
        // No runtime (the process is shutting down): the service aborts the
        // transaction once it idles, and the session is not reused.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        self.shared.rollbacks.fetch_add(1, Ordering::Relaxed);
        let mut client = self.shared.pool.client();
        let request = RollbackRequest { session: lease.name().to_owned(), transaction_id: txn };
        runtime.spawn(async move {
            if let Err(e) = client.rollback(request, false, Some(no_retry())).await {
                tracing::debug!(error = %e, "spanner rollback failed (the transaction expires on its own)");
            }
            drop(lease);
        });
    }

    /// One single-use `Commit` of blind mutations, atomically (1 round trip).
    /// `ALREADY_EXISTS` (an `insert` of an existing row) is `ConditionFailed`
    /// without the item; a lost answer is `Indeterminate`.
    async fn commit_single_use(&self, ops: Vec<Operation>) -> StoreResult<()> {
        let options = wire::read_write();
        let mut attempt = 0u32;
        loop {
            let lease = self.lease().await?;
            let request = CommitRequest {
                session: lease.name().to_owned(),
                transaction: Some(CommitTransaction::SingleUseTransaction(options.clone())),
                mutations: ops.iter().map(|op| SpannerMutation { operation: Some(op.clone()) }).collect(),
                ..CommitRequest::default()
            };
            self.count_request();
            match self.shared.pool.client().commit(request, false, Some(no_retry())).await {
                Ok(_) => return Ok(()),
                Err(status)
                    if (is_aborted(&status) || is_session_gone(&status)) && attempt < self.shared.abort_retries =>
                {
                    if is_session_gone(&status) {
                        lease.discard();
                    }
                    self.shared.aborts.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(status) => return Err(from_status(status, Phase::Commit)),
            }
            attempt += 1;
        }
    }

    fn write_op(&self, key: &Key, item: &Item) -> Write {
        Write {
            table: self.shared.table.clone(),
            columns: wire::columns(&wire::ALL_COLUMNS),
            values: vec![wire::row(&self.ns, key, &item.to_json())],
        }
    }
}

/// Jittered exponential pause before attempt `attempt + 1`.
fn backoff(attempt: u32) -> Duration {
    let ceiling = BACKOFF_FIRST.saturating_mul(1 << attempt.min(10)).min(BACKOFF_MAX);
    // Uniform in [ceiling/2, ceiling): a fresh random hash per call.
    let random = RandomState::new().hash_one(attempt);
    let half = ceiling / 2;
    half + Duration::from_nanos(random % (half.as_nanos().max(1) as u64))
}

/// Apply one batch op to the transaction's slots, as the reference store
/// would (later ops see earlier ops' effects on the same key).
fn apply_op(slots: &mut [Slot], op: &WriteOp, max: usize) -> StoreResult<()> {
    let key = match op {
        WriteOp::Put { key, .. } | WriteOp::Update { key, .. } | WriteOp::Delete { key, .. } => key,
    };
    let slot = slots.iter_mut().find(|s| &s.key == key).expect("every op's key was read");
    match op {
        WriteOp::Put { item, mode, .. } => {
            check_size(item, max)?;
            if *mode == PutMode::Create
                && let Some(existing) = &slot.after
            {
                return Err(StoreError::condition_failed(Some(existing.clone())));
            }
            slot.after = Some(item.clone());
        }
        WriteOp::Update { conditions, mutations, .. } => {
            slot.after = Some(updated(slot.after.as_ref(), conditions, mutations, max)?);
        }
        WriteOp::Delete { conditions, .. } => {
            if !conditions_hold(conditions, slot.after.as_ref()) {
                return Err(StoreError::condition_failed(slot.after.clone()));
            }
            slot.after = None;
        }
    }
    Ok(())
}

#[async_trait]
impl StateStore for SpannerStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities::new(self.shared.max_item_bytes)
            .with_atomic_batch(true)
            .with_update(UpdateStrategy::Transaction { round_trips: 2 })
            .with_max_page(MAX_PAGE)
    }

    fn requests_sent(&self) -> Option<u64> {
        Some(self.requests())
    }

    async fn get(&self, key: &Key) -> StoreResult<Option<Item>> {
        let key_set = KeySet { keys: vec![wire::primary_key(&self.ns, key)], ..KeySet::default() };
        let rs = self.read_strong(&["body"], key_set, 0).await?;
        match rs.rows.first() {
            Some(row) => Ok(Some(wire::item(&wire::column_bytes(row, 0)?)?)),
            None => Ok(None),
        }
    }

    async fn put(&self, key: &Key, item: Item, mode: PutMode) -> StoreResult<()> {
        check_size(&item, self.shared.max_item_bytes)?;
        let write = self.write_op(key, &item);
        match mode {
            PutMode::Overwrite => self.commit_single_use(vec![Operation::InsertOrUpdate(write)]).await,
            PutMode::Create => {
                // A single-use insert; ALREADY_EXISTS carries no row, so the
                // existing item costs one more read. If that item is gone by
                // then, the insert is tried again (bounded).
                for _ in 0..3 {
                    match self.commit_single_use(vec![Operation::Insert(write.clone())]).await {
                        Ok(()) => return Ok(()),
                        Err(e) if e.kind() == ErrorKind::ConditionFailed => {
                            if let Some(existing) = self.get(key).await? {
                                return Err(StoreError::condition_failed(Some(existing)));
                            }
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(StoreError::new(ErrorKind::Conflict, "spanner create kept racing a delete of the same item"))
            }
        }
    }

    async fn update(&self, key: &Key, conditions: &[Condition], mutations: &[Mutation]) -> StoreResult<Item> {
        let max = self.shared.max_item_bytes;
        self.read_write(vec![key.clone()], |slots| {
            let next = updated(slots[0].before.as_ref(), conditions, mutations, max)?;
            slots[0].after = Some(next.clone());
            Ok(next)
        })
        .await
    }

    async fn delete(&self, key: &Key, conditions: &[Condition]) -> StoreResult<bool> {
        self.read_write(vec![key.clone()], |slots| {
            let current = slots[0].before.as_ref();
            if !conditions_hold(conditions, current) {
                return Err(StoreError::condition_failed(current.cloned()));
            }
            slots[0].after = None;
            Ok(current.is_some())
        })
        .await
    }

    async fn scan(&self, table: &TableName, partition: &[u8], page: PageRequest) -> StoreResult<Page> {
        let limit = page.limit.clamp(1, MAX_PAGE);
        let prefix = wire::partition_prefix(&self.ns, table, partition);
        let start = match &page.after {
            Some(after) => {
                let mut after_key = prefix.clone();
                after_key.values.push(wire::bytes(after));
                StartKeyType::StartOpen(after_key)
            }
            None => StartKeyType::StartClosed(prefix.clone()),
        };
        let range = KeyRange { start_key_type: Some(start), end_key_type: Some(EndKeyType::EndClosed(prefix)) };
        let key_set = KeySet { ranges: vec![range], ..KeySet::default() };
        let rs = self.read_strong(&wire::SCAN_COLUMNS, key_set, i64::from(limit) + 1).await?;
        let mut items = Vec::with_capacity(rs.rows.len());
        for row in &rs.rows {
            items.push((wire::column_bytes(row, 0)?, wire::item(&wire::column_bytes(row, 1)?)?));
        }
        let next = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|(sort, _)| sort.clone())
        } else {
            None
        };
        Ok(Page { items, next })
    }

    async fn transact(&self, ops: Vec<WriteOp>) -> StoreResult<()> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut keys: Vec<Key> = Vec::new();
        for op in &ops {
            let key = match op {
                WriteOp::Put { key, .. } | WriteOp::Update { key, .. } | WriteOp::Delete { key, .. } => key,
            };
            if !keys.contains(key) {
                keys.push(key.clone());
            }
        }
        let max = self.shared.max_item_bytes;
        // Puts only, on distinct keys (an instance's intent with its index
        // entries): no read is needed, so one single-use commit of inserts and
        // upserts, atomic like any commit. A create that meets an existing row
        // fails the whole commit; the read-write path then finds the exact
        // answer (which op, and the item it met).
        if keys.len() == ops.len() && ops.iter().all(|op| matches!(op, WriteOp::Put { .. })) {
            let mut writes = Vec::with_capacity(ops.len());
            for op in &ops {
                if let WriteOp::Put { key, item, mode } = op {
                    check_size(item, max)?;
                    let write = self.write_op(key, item);
                    writes.push(match mode {
                        PutMode::Create => Operation::Insert(write),
                        PutMode::Overwrite => Operation::InsertOrUpdate(write),
                    });
                }
            }
            match self.commit_single_use(writes).await {
                Err(e) if e.kind() == ErrorKind::ConditionFailed => {}
                done => return done,
            }
        }
        self.read_write(keys, |slots| ops.iter().try_for_each(|op| apply_op(slots, op, max))).await
    }
}
