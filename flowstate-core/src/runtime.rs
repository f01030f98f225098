//! The runtime: a store, a registry of named handlers and an invoker. It
//! starts instances (`invoke`), re-drives crashed ones ([`Runtime::recover`],
//! see [`crate::collector`]) and collects finished ones ([`Runtime::gc`], see
//! [`crate::gc`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::clock::{Clock, SystemClock};
use crate::context::{Context, LeaseState, Registration};
use crate::daal::Daal;
use crate::error::{Error, Result};
use crate::intent::{Begin, Intents, Outcome};
use crate::invoke::{Call, CallKind, InProcessInvoker, Invoker};
use crate::layout::{self, InstanceId};
use crate::oplog::{self, LoadedLog, attr, decode_outcome, encode_outcome};
use crate::retry::RetryPolicy;
use crate::store::{Condition, Mutation, StateStore, StateStoreExt};

/// Most operation-log entries one instance may have (bounds replay memory).
pub const MAX_STEPS_LOADED: usize = 1_000_000;

/// Engine settings. Defaults suit functions that finish within seconds.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// How long an execution's claim on an instance lasts without renewal;
    /// the collector re-drives instances whose lease expired. Renewed every third.
    pub lease: Duration,
    /// Write-log entries per DAAL row before a new row is chained;
    /// `None` derives it from the store's item size limit.
    pub row_capacity: Option<usize>,
    /// Bound on clock differences between processes, used by lease and
    /// row-age reasoning (see [`crate::daal`]).
    pub clock_skew: Duration,
    /// Partitions the intents are spread over (collector and GC scan them all).
    pub intent_shards: u16,
    /// Retries of transient store errors.
    pub retry: RetryPolicy,
    /// How long a duplicate invocation waits for a live execution to finish
    /// before returning [`Error::InstanceBusy`].
    pub duplicate_wait: Duration,
    /// Finished instances are collected this long after they finish; must
    /// exceed the longest time a delayed duplicate can still be executing.
    pub gc_window: Duration,
    /// How long the result of a collected instance is kept (its tombstone);
    /// `None` keeps it forever. Duplicates arriving later run anew.
    pub tombstone_retention: Option<Duration>,
    /// Instances the collector re-drives at once.
    pub recovery_concurrency: usize,
    /// Fold the intent's creation into the instance's first write, in one
    /// atomic batch, where the store has them (`Capabilities::atomic_batch`):
    /// saves a round trip per instance. Steps (`ctx.step`) still register
    /// before their closure runs, so a duplicate never repeats an effect.
    pub lazy_intent: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(30),
            row_capacity: None,
            clock_skew: Duration::from_secs(2),
            intent_shards: 16,
            retry: RetryPolicy::default(),
            duplicate_wait: Duration::from_secs(60),
            gc_window: Duration::from_secs(15 * 60),
            tombstone_retention: Some(Duration::from_secs(7 * 24 * 3600)),
            recovery_concurrency: 8,
            lazy_intent: true,
        }
    }
}

impl Config {
    /// Set [`Config::lease`].
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }
    /// Set [`Config::row_capacity`].
    pub fn row_capacity(mut self, entries: usize) -> Self {
        self.row_capacity = Some(entries);
        self
    }
    /// Set [`Config::clock_skew`].
    pub fn clock_skew(mut self, skew: Duration) -> Self {
        self.clock_skew = skew;
        self
    }
    /// Set [`Config::intent_shards`].
    pub fn intent_shards(mut self, shards: u16) -> Self {
        self.intent_shards = shards.max(1);
        self
    }
    /// Set [`Config::retry`].
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
    /// Set [`Config::duplicate_wait`].
    pub fn duplicate_wait(mut self, wait: Duration) -> Self {
        self.duplicate_wait = wait;
        self
    }
    /// Set [`Config::gc_window`].
    pub fn gc_window(mut self, window: Duration) -> Self {
        self.gc_window = window;
        self
    }
    /// Set [`Config::lazy_intent`].
    pub fn lazy_intent(mut self, lazy: bool) -> Self {
        self.lazy_intent = lazy;
        self
    }
    /// Set [`Config::tombstone_retention`].
    pub fn tombstone_retention(mut self, retention: Option<Duration>) -> Self {
        self.tombstone_retention = retention;
        self
    }
}

/// Default entries per DAAL row. Every write rewrites (and on DynamoDB, is
/// billed for) the whole row, so a row's log is kept to a few KB: 32 entries
/// of ~60 bytes. A new row every 32 writes costs 3 extra round trips, under
/// 0.1 per write amortized. (Beldi used 1000, i.e. rows of ~60 KB.)
pub const DEFAULT_ROW_CAPACITY: usize = 32;

/// The default capacity, lowered for stores whose items are small: the log
/// may use at most a quarter of an item at ~96 bytes an entry.
fn derived_capacity(max_item_bytes: usize) -> usize {
    (max_item_bytes / 4 / 96).clamp(4, DEFAULT_ROW_CAPACITY)
}

type Handler = Arc<dyn Fn(Context, Value) -> BoxFuture<'static, Result<Value>> + Send + Sync>;

/// Builds a [`Runtime`].
pub struct RuntimeBuilder {
    store: Arc<dyn StateStore>,
    handlers: HashMap<String, Handler>,
    clock: Arc<dyn Clock>,
    invoker: Arc<dyn Invoker>,
    config: Config,
}

impl fmt::Debug for RuntimeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.handlers.keys().collect();
        names.sort();
        f.debug_struct("RuntimeBuilder").field("store", &self.store).field("functions", &names).finish_non_exhaustive()
    }
}

impl RuntimeBuilder {
    /// Register a handler under `name`: an async function of the context and a
    /// deserialized input, returning a serializable output.
    pub fn register<I, O, F, Fut>(mut self, name: &str, handler: F) -> Self
    where
        I: DeserializeOwned + Send + 'static,
        O: Serialize + Send + 'static,
        F: Fn(Context, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let erased: Handler = Arc::new(move |ctx, input| {
            let handler = handler.clone();
            Box::pin(async move {
                let input: I = serde_json::from_value(input)?;
                let output = handler(ctx, input).await?;
                Ok(serde_json::to_value(output)?)
            })
        });
        self.handlers.insert(name.to_string(), erased);
        self
    }

    /// Use another clock (tests move time by hand).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Use another invoker (default: in-process).
    pub fn invoker(mut self, invoker: Arc<dyn Invoker>) -> Self {
        self.invoker = invoker;
        self
    }

    /// Use these settings.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Build the runtime.
    pub fn build(self) -> Runtime {
        let caps = self.store.capabilities();
        let capacity = self.config.row_capacity.unwrap_or_else(|| derived_capacity(caps.max_item_bytes));
        let daal = Daal::new(self.store.clone(), self.clock.clone(), self.config.retry, capacity as i64);
        let intents = Intents::new(
            self.store.clone(),
            self.clock.clone(),
            self.config.retry,
            self.config.intent_shards,
            self.config.lease.as_millis() as u64,
        );
        Runtime {
            shared: Arc::new(Shared {
                store: self.store,
                clock: self.clock,
                invoker: self.invoker,
                handlers: self.handlers,
                config: self.config,
                daal,
                intents,
            }),
        }
    }
}

struct Shared {
    store: Arc<dyn StateStore>,
    clock: Arc<dyn Clock>,
    invoker: Arc<dyn Invoker>,
    handlers: HashMap<String, Handler>,
    config: Config,
    daal: Daal,
    intents: Intents,
}

/// Runs registered functions exactly once in effect. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    shared: Arc<Shared>,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.shared.handlers.keys().collect();
        names.sort();
        f.debug_struct("Runtime")
            .field("store", &self.shared.store)
            .field("functions", &names)
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Start building a runtime on `store`.
    pub fn builder(store: Arc<dyn StateStore>) -> RuntimeBuilder {
        RuntimeBuilder {
            store,
            handlers: HashMap::new(),
            clock: Arc::new(SystemClock),
            invoker: Arc::new(InProcessInvoker),
            config: Config::default(),
        }
    }

    pub(crate) fn store(&self) -> &Arc<dyn StateStore> {
        &self.shared.store
    }
    pub(crate) fn daal(&self) -> &Daal {
        &self.shared.daal
    }
    pub(crate) fn intents(&self) -> &Intents {
        &self.shared.intents
    }
    pub(crate) fn invoker(&self) -> &Arc<dyn Invoker> {
        &self.shared.invoker
    }
    pub(crate) fn retry(&self) -> &RetryPolicy {
        &self.shared.config.retry
    }
    pub(crate) fn now_ms(&self) -> u64 {
        self.shared.clock.now_ms()
    }

    /// The settings in force.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Names of the registered functions, sorted.
    pub fn functions(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.shared.handlers.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// Run instance `instance_id` (minted if `None`) of `function` with
    /// `input`, exactly once in effect: a finished instance returns its
    /// recorded output; an unfinished one is replayed from its log.
    /// A recorded handler failure comes back as [`Error::Handler`].
    pub async fn invoke<I: Serialize + ?Sized, O: DeserializeOwned>(
        &self,
        function: &str,
        input: &I,
        instance_id: Option<&str>,
    ) -> Result<O> {
        let id = match instance_id {
            Some(id) => InstanceId::new(id)?,
            None => InstanceId::mint(),
        };
        let input = serde_json::to_value(input)?;
        match self.run_instance(function, input, &id, true).await? {
            Ok(v) => Ok(serde_json::from_value(v)?),
            Err(msg) => Err(Error::Handler(msg)),
        }
    }

    /// Like [`Runtime::invoke`] with JSON in and the raw outcome out.
    pub async fn invoke_json(&self, function: &str, input: Value, instance_id: &InstanceId) -> Result<Outcome> {
        self.run_instance(function, input, instance_id, true).await
    }

    /// Carry out a call (what an [`Invoker`] does on the callee's side).
    pub async fn run_call(&self, call: Call) -> Result<Outcome> {
        match call.kind {
            CallKind::Intent => self.run_instance(&call.function, call.input, &call.instance, false).await,
            CallKind::Sync { caller, step, replay, started_at, lease_valid_until } => {
                self.run_sync_child(
                    &call.function,
                    call.input,
                    call.instance,
                    (caller, step),
                    replay,
                    started_at,
                    lease_valid_until,
                )
                .await
            }
        }
    }

    /// The input is stored in the intent (and a callee's in its caller's log
    /// entry): refuse inputs that cannot fit with room to spare.
    pub(crate) fn check_input_size(&self, input: &Value) -> Result<()> {
        let len = serde_json::to_vec(input).map(|v| v.len()).unwrap_or(usize::MAX);
        let limit = self.shared.store.capabilities().max_item_bytes / 2;
        if len > limit {
            return Err(Error::TooLarge(format!(
                "input of {len} bytes exceeds half the store's item limit ({limit} bytes)"
            )));
        }
        Ok(())
    }

    /// Whether `function` is registered here.
    pub fn is_registered(&self, function: &str) -> bool {
        self.shared.handlers.contains_key(function)
    }

    fn handler(&self, function: &str) -> Result<Handler> {
        self.shared.handlers.get(function).cloned().ok_or_else(|| Error::UnknownFunction(function.to_string()))
    }

    /// Start (or join) an instance's intent; a duplicate of a live execution
    /// waits (when `wait`) until it finishes or its lease expires.
    pub(crate) async fn begin_waiting(
        &self,
        function: &str,
        input: &Value,
        id: &InstanceId,
        owner: &str,
        wait: bool,
    ) -> Result<Begin> {
        let deadline = self.now_ms() + self.shared.config.duplicate_wait.as_millis() as u64;
        let mut pause = Duration::from_millis(5);
        loop {
            match self.shared.intents.begin(id, function, input, None, owner).await? {
                Begin::Busy if wait && self.now_ms() < deadline => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(250));
                }
                Begin::Busy => return Err(Error::InstanceBusy(id.to_string())),
                other => return Ok(other),
            }
        }
    }

    /// Run an instance that has (or gets) an intent. `wait`: a duplicate
    /// waits for a live execution to finish instead of returning Busy.
    pub(crate) fn run_instance<'a>(
        &'a self,
        function: &'a str,
        input: Value,
        id: &'a InstanceId,
        wait: bool,
    ) -> BoxFuture<'a, Result<Outcome>> {
        Box::pin(async move {
            let handler = self.handler(function)?;
            self.check_input_size(&input)?;
            let owner = uuid::Uuid::new_v4().to_string();
            let lazy = self.shared.config.lazy_intent && self.shared.store.capabilities().atomic_batch;
            let lease_ms = self.shared.config.lease.as_millis() as u64;
            let registration = Registration { function: function.to_string(), input: input.clone(), owner, wait };
            let ctx = if lazy {
                let now = self.now_ms();
                let lease = LeaseState::new(now + lease_ms);
                Context::new(
                    self.clone(),
                    id.clone(),
                    now,
                    false,
                    LoadedLog::default(),
                    lease,
                    Some(registration),
                    true,
                )
            } else {
                let (started_at, replay) =
                    match self.begin_waiting(function, &input, id, &registration.owner, wait).await? {
                        Begin::Finished(outcome) => return Ok(outcome),
                        Begin::Fresh { started_at } => (started_at, false),
                        Begin::Resume { started_at } => (started_at, true),
                        Begin::Busy => return Err(Error::InstanceBusy(id.to_string())),
                    };
                let log = if replay { self.load_log(id).await? } else { LoadedLog::default() };
                let lease = LeaseState::new(self.now_ms() + lease_ms);
                Context::new(self.clone(), id.clone(), started_at, replay, log, lease, Some(registration), false)
            };
            let result = self.execute(handler, input, &ctx).await;
            ctx.stop_heartbeat().await;
            if let Some(outcome) = ctx.superseded().await {
                return Ok(outcome);
            }
            let (outcome, touched) = result?;
            // A handler that made no write registers only now.
            if let Err(e) = ctx.ensure_registered().await {
                return match ctx.superseded().await {
                    Some(outcome) => Ok(outcome),
                    None => Err(e),
                };
            }
            self.shared.intents.finish(id, &outcome, touched).await
        })
    }

    /// Run a synchronously called instance whose intent is its caller's log entry.
    #[allow(clippy::too_many_arguments)]
    fn run_sync_child<'a>(
        &'a self,
        function: &'a str,
        input: Value,
        id: InstanceId,
        caller: (InstanceId, u32),
        replay: bool,
        started_at: u64,
        lease_valid_until: u64,
    ) -> BoxFuture<'a, Result<Outcome>> {
        Box::pin(async move {
            let handler = self.handler(function)?;
            let lease = LeaseState::new(lease_valid_until);
            let log = if replay { self.load_log(&id).await? } else { LoadedLog::default() };
            let ctx = Context::new(self.clone(), id, started_at, replay, log, lease, None, false);
            let (outcome, touched) = self.execute(handler, input, &ctx).await?;
            // The callback: the callee's result completes the caller's entry.
            let key = layout::oplog_key(&caller.0, caller.1);
            let conditions = [Condition::ItemExists, Condition::AttrAbsent(attr::RESULT.into())];
            let mutations = [
                Mutation::Set(attr::RESULT.into(), encode_outcome(&outcome)),
                Mutation::Set(attr::TOUCHED.into(), touched),
                Mutation::Set(attr::DONE_AT.into(), Value::from(self.now_ms())),
            ];
            match self.retry().run(|| self.store().update(&key, &conditions, &mutations)).await {
                Ok(_) => Ok(outcome),
                Err(e) if e.is_condition_failed() => {
                    let current =
                        e.into_current().ok_or_else(|| Error::Corrupt("caller entry refused the result".into()))?;
                    let result =
                        current.get(attr::RESULT).ok_or_else(|| Error::Corrupt("caller entry has no result".into()))?;
                    decode_outcome(result)
                }
                Err(e) => Err(e.into()),
            }
        })
    }

    /// Run the handler; final errors become a recorded failure, transient ones
    /// propagate (the instance stays unfinished).
    async fn execute(&self, handler: Handler, input: Value, ctx: &Context) -> Result<(Outcome, Value)> {
        let outcome = match handler(ctx.clone(), input).await {
            Ok(v) => Ok(v),
            Err(e) if e.is_final() => Err(e.to_string()),
            Err(e) => return Err(e),
        };
        Ok((outcome, ctx.touched().await))
    }

    /// Load an instance's operation log (the start of a re-execution).
    pub(crate) async fn load_log(&self, id: &InstanceId) -> Result<LoadedLog> {
        let partition = id.as_str().as_bytes();
        let rows = self.retry().run(|| self.store().scan_all(&layout::OPLOG, partition, MAX_STEPS_LOADED)).await?;
        let mut log = LoadedLog::default();
        for (sort, item) in rows {
            let step = layout::oplog_step(&sort)
                .ok_or_else(|| Error::Corrupt(format!("operation-log key of {id} is not a step number")))?;
            oplog::entry_spec(&item)?;
            log.entries.insert(step, item);
        }
        Ok(log)
    }

    pub(crate) fn spawn_heartbeat(
        &self,
        id: InstanceId,
        owner: String,
        lease: Arc<LeaseState>,
    ) -> tokio::task::JoinHandle<()> {
        let rt = self.clone();
        let every = (self.shared.config.lease / 3).max(Duration::from_millis(10));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match rt.shared.intents.heartbeat(&id, &owner).await {
                    Ok(true) => {
                        let until = rt.now_ms() + rt.shared.config.lease.as_millis() as u64;
                        lease.valid_until.store(until, Ordering::SeqCst);
                    }
                    Ok(false) => {
                        tracing::info!(instance = %id, "lease lost to another execution; continuing carefully");
                        lease.fenced.store(true, Ordering::SeqCst);
                        return;
                    }
                    Err(e) => tracing::warn!(instance = %id, error = %e, "lease renewal failed"),
                }
            }
        })
    }
}

/// One row of a key's DAAL chain, for inspection.
#[derive(Clone, Debug, PartialEq)]
pub struct RowInfo {
    /// Row id (`h` for the head).
    pub id: String,
    /// Whether the row is on the chain from the head (false: unlinked or orphaned).
    pub linked: bool,
    /// The row's value.
    pub value: Value,
    /// Write-log entries: `step:instance` → outcome.
    pub entries: serde_json::Map<String, Value>,
    /// Entries ever added.
    pub count: i64,
    /// Entries removed by GC.
    pub collected: i64,
    /// The next row, if linked.
    pub next: Option<String>,
}

/// An instance's intent and operation log, for inspection.
#[derive(Clone, Debug, PartialEq)]
pub struct InstanceReport {
    /// The intent row (`None` for sync-called instances and unknown ids).
    pub intent: Option<crate::store::Item>,
    /// Operation-log entries by step.
    pub steps: Vec<(u32, crate::store::Item)>,
}

impl Runtime {
    /// The current value of a key, read outside any instance (not logged).
    pub async fn peek(&self, table: &str, key: &str) -> Result<Option<Value>> {
        layout::check_user_key(table, key)?;
        let v = self.daal().read(&layout::data_partition(table, key)).await?;
        Ok((!v.is_null()).then_some(v))
    }

    /// All rows stored for a key, chain order first, then rows off the chain.
    pub async fn key_rows(&self, table: &str, key: &str) -> Result<Vec<RowInfo>> {
        layout::check_user_key(table, key)?;
        let chain = self.daal().load_chain(&layout::data_partition(table, key)).await?;
        let mut out = Vec::with_capacity(chain.rows.len());
        let mut ids: Vec<&String> = chain.order.iter().collect();
        let mut rest: Vec<&String> = chain.rows.keys().filter(|id| !chain.order.contains(id)).collect();
        rest.sort();
        ids.extend(rest);
        for id in ids {
            let item = &chain.rows[id];
            out.push(RowInfo {
                id: id.clone(),
                linked: chain.order.contains(id),
                value: item.get(layout::row::VALUE).cloned().unwrap_or(Value::Null),
                entries: item.get(layout::row::LOG).and_then(Value::as_object).cloned().unwrap_or_default(),
                count: item.get_i64(layout::row::COUNT).unwrap_or(0),
                collected: item.get_i64(layout::row::COLLECTED).unwrap_or(0),
                next: item.get_str(layout::row::NEXT).map(str::to_string),
            });
        }
        Ok(out)
    }

    /// An instance's intent and its operation log.
    pub async fn inspect(&self, instance: &InstanceId) -> Result<InstanceReport> {
        let intent = self.intents().get(instance).await?;
        let steps = self.load_log(instance).await?.entries.into_iter().collect();
        Ok(InstanceReport { intent, steps })
    }
}
