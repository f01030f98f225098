//! The handler's view of its instance: every external operation goes through
//! the [`Context`], takes the next step number, and is logged under
//! `(instance, step)` so that a re-execution replays it instead of repeating it.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::daal::WriteRequest;
use crate::error::{Error, Result};
use crate::intent::{Begin, Outcome};
use crate::invoke::{Call, CallKind};
use crate::layout::{self, InstanceId};
use crate::oplog::{self, LoadedLog, OpKind, OpSpec, attr, check_entry, decode_outcome, new_entry};
use crate::runtime::Runtime;
use crate::store::{Item, Predicate, PutMode, WriteOp};

/// What an execution knows about its right to run: until when its lease is
/// valid, and whether another execution has taken the instance over.
#[derive(Debug)]
pub(crate) struct LeaseState {
    pub valid_until: AtomicU64,
    pub fenced: AtomicBool,
}

impl LeaseState {
    pub fn new(valid_until: u64) -> Arc<Self> {
        Arc::new(Self { valid_until: AtomicU64::new(valid_until), fenced: AtomicBool::new(false) })
    }
}

/// A stable idempotency key for one side-effect step, to hand to external
/// APIs (payment providers, mailers) so that they, too, apply it once.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StepKey {
    /// The instance.
    pub instance: InstanceId,
    /// The step number.
    pub step: u32,
}

impl fmt::Display for StepKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.instance, self.step)
    }
}

/// Per-execution state, behind a lock that also enforces sequential use.
#[derive(Debug)]
struct State {
    next_step: u32,
    /// A re-execution: the log may already hold our steps.
    replay: bool,
    log: LoadedLog,
    /// DAAL entries written, for GC: `[partition hex, row, entry]`.
    touched: Vec<Value>,
    /// The intent is not written yet: the first write carries it.
    pending: bool,
    /// Another execution finished the instance first: its outcome.
    superseded: Option<Outcome>,
    /// The lease renewal task, once registered.
    heartbeat: Option<Heartbeat>,
}

/// The lease-renewal task of an execution. Aborted when dropped: if the
/// handler panics and its context is dropped mid-way, the lease must lapse so
/// the collector can take the instance over.
#[derive(Debug)]
struct Heartbeat(tokio::task::JoinHandle<()>);

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What an instance with an intent needs to (re)register it.
#[derive(Clone, Debug)]
pub(crate) struct Registration {
    pub function: String,
    pub input: Value,
    /// This execution's lease token.
    pub owner: String,
    /// Whether a duplicate of a live execution waits for it.
    pub wait: bool,
}

struct Inner {
    rt: Runtime,
    instance: InstanceId,
    started_at: AtomicU64,
    lease: Arc<LeaseState>,
    /// `None` for sync-called instances (their intent is the caller's entry).
    registration: Option<Registration>,
    state: tokio::sync::Mutex<State>,
}

/// The context of one running instance. Cheap to clone; operations must be
/// awaited one at a time (step numbers follow program order), and using it
/// from two tasks at once is an error rather than a silent reordering.
#[derive(Clone)]
pub struct Context {
    inner: Arc<Inner>,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context").field("instance", &self.inner.instance).finish_non_exhaustive()
    }
}

impl Context {
    /// A context; `pending`: the intent is written with the first write
    /// (otherwise it already exists and its lease is renewed from now on).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        rt: Runtime,
        instance: InstanceId,
        started_at: u64,
        replay: bool,
        log: LoadedLog,
        lease: Arc<LeaseState>,
        registration: Option<Registration>,
        pending: bool,
    ) -> Self {
        let heartbeat = match (&registration, pending) {
            (Some(reg), false) => {
                Some(Heartbeat(rt.spawn_heartbeat(instance.clone(), reg.owner.clone(), lease.clone())))
            }
            _ => None,
        };
        let pending = pending && registration.is_some();
        let state = State { next_step: 0, replay, log, touched: Vec::new(), pending, superseded: None, heartbeat };
        Self {
            inner: Arc::new(Inner {
                rt,
                instance,
                started_at: AtomicU64::new(started_at),
                lease,
                registration,
                state: tokio::sync::Mutex::new(state),
            }),
        }
    }

    /// Write the intent if it is still pending: folded into `piggyback` (one
    /// atomic batch) when given, else on its own. `Ok(true)`: the batch
    /// applied, `piggyback` included. `Ok(false)`: registered without it (now
    /// fresh, or a replay with the log loaded). Another execution's finish
    /// ends this one with [`Error::AlreadyFinished`].
    async fn register(&self, st: &mut State, piggyback: Option<WriteOp>) -> Result<bool> {
        if !st.pending {
            return Ok(false);
        }
        let reg = self.inner.registration.as_ref().expect("a pending context has a registration");
        let rt = &self.inner.rt;
        let id = &self.inner.instance;
        if let Some(op) = piggyback {
            let (mut ops, now) = rt.intents().create_ops(id, &reg.function, &reg.input, &reg.owner);
            ops.push(op);
            match rt.store().transact(ops).await {
                Ok(()) => {
                    self.registered(st, now, None);
                    return Ok(true);
                }
                // Refused (the intent exists, or the write's condition failed) or
                // unknown: register on its own, which also recognizes our own intent.
                Err(e) => tracing::debug!(instance = %id, error = %e, "first write could not carry the intent"),
            }
        }
        match rt.begin_waiting(&reg.function, &reg.input, id, &reg.owner, reg.wait).await? {
            Begin::Fresh { started_at } => self.registered(st, started_at, None),
            Begin::Resume { started_at } => {
                let log = rt.load_log(id).await?;
                self.registered(st, started_at, Some(log));
            }
            Begin::Finished(outcome) => {
                st.pending = false;
                st.superseded = Some(outcome);
                return Err(Error::AlreadyFinished(id.to_string()));
            }
            Begin::Busy => return Err(Error::InstanceBusy(id.to_string())),
        }
        Ok(false)
    }

    fn registered(&self, st: &mut State, started_at: u64, replay_log: Option<LoadedLog>) {
        let rt = &self.inner.rt;
        st.pending = false;
        self.inner.started_at.store(started_at, Ordering::SeqCst);
        if let Some(log) = replay_log {
            st.replay = true;
            st.log = log;
        }
        let lease_ms = rt.config().lease.as_millis() as u64;
        self.inner.lease.valid_until.store(rt.now_ms() + lease_ms, Ordering::SeqCst);
        let reg = self.inner.registration.as_ref().expect("registered contexts have a registration");
        st.heartbeat = Some(Heartbeat(rt.spawn_heartbeat(
            self.inner.instance.clone(),
            reg.owner.clone(),
            self.inner.lease.clone(),
        )));
    }

    /// Register now if no write did (a handler without effects).
    pub(crate) async fn ensure_registered(&self) -> Result<()> {
        let mut st = self.inner.state.lock().await;
        self.register(&mut st, None).await.map(|_| ())
    }

    /// Stop renewing the lease.
    pub(crate) async fn stop_heartbeat(&self) {
        drop(self.inner.state.lock().await.heartbeat.take());
    }

    /// The outcome of another execution that finished the instance first.
    pub(crate) async fn superseded(&self) -> Option<Outcome> {
        self.inner.state.lock().await.superseded.clone()
    }

    /// This instance's id.
    pub fn instance_id(&self) -> &InstanceId {
        &self.inner.instance
    }

    /// When the instance was first started (ms since the epoch; the same in
    /// every re-execution).
    pub fn started_at(&self) -> u64 {
        self.inner.started_at.load(Ordering::SeqCst)
    }

    /// The DAAL entries this execution wrote or replayed, for the intent.
    pub(crate) async fn touched(&self) -> Value {
        Value::Array(self.inner.state.lock().await.touched.clone())
    }

    async fn begin_step(&self) -> Result<tokio::sync::MutexGuard<'_, State>> {
        let mut st = self.inner.state.try_lock().map_err(|_| {
            Error::InvalidInput("context used by two operations at once; await each operation before the next".into())
        })?;
        if st.superseded.is_some() {
            // Another execution finished the instance: nothing more may run,
            // even if the handler ignored the first AlreadyFinished.
            return Err(Error::AlreadyFinished(self.inner.instance.to_string()));
        }
        st.next_step = st
            .next_step
            .checked_add(1)
            .ok_or_else(|| Error::InvalidInput("instance exceeded u32::MAX steps".into()))?;
        Ok(st)
    }

    /// Whether this execution must assume another execution of the same
    /// instance may be running: a re-execution, one that lost its lease, or
    /// one whose lease may have expired.
    fn careful(&self, st: &State) -> bool {
        let rt = &self.inner.rt;
        let margin = rt.config().clock_skew.as_millis() as u64;
        st.replay
            || self.inner.lease.fenced.load(Ordering::SeqCst)
            || rt.now_ms().saturating_add(margin) >= self.inner.lease.valid_until.load(Ordering::SeqCst)
    }

    /// The logged entry for `step`, if known: from the loaded log, or (when
    /// `careful`) from one point read.
    async fn logged(&self, st: &State, step: u32, spec: &OpSpec) -> Result<Option<Item>> {
        if let Some(item) = st.log.entries.get(&step) {
            check_entry(&self.inner.instance, step, item, spec)?;
            return Ok(Some(item.clone()));
        }
        if self.careful(st) {
            let rt = &self.inner.rt;
            let key = layout::oplog_key(&self.inner.instance, step);
            if let Some(item) = rt.retry().run(|| rt.store().get(&key)).await? {
                check_entry(&self.inner.instance, step, &item, spec)?;
                return Ok(Some(item));
            }
        }
        Ok(None)
    }

    /// Create the entry for `step` unless one exists; the logged entry wins.
    async fn record(&self, step: u32, spec: &OpSpec, item: Item) -> Result<Item> {
        let rt = &self.inner.rt;
        let key = layout::oplog_key(&self.inner.instance, step);
        match rt.retry().run(|| rt.store().put(&key, item.clone(), PutMode::Create)).await {
            Ok(()) => Ok(item),
            Err(e) if e.is_condition_failed() => {
                let current = match e.into_current() {
                    Some(c) => c,
                    None => rt.retry().run(|| rt.store().get(&key)).await?.ok_or_else(|| {
                        Error::Corrupt("operation-log entry reported present, then read as absent".into())
                    })?,
                };
                check_entry(&self.inner.instance, step, &current, spec)?;
                Ok(current)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// [`Context::record`], carrying the pending intent in the same batch.
    async fn record_first(&self, st: &mut State, step: u32, spec: &OpSpec, item: Item) -> Result<Item> {
        if st.pending {
            let op = WriteOp::Put {
                key: layout::oplog_key(&self.inner.instance, step),
                item: item.clone(),
                mode: PutMode::Create,
            };
            if self.register(st, Some(op)).await? {
                return Ok(item);
            }
            if let Some(logged) = st.log.entries.get(&step) {
                check_entry(&self.inner.instance, step, logged, spec)?;
                return Ok(logged.clone());
            }
        }
        self.record(step, spec, item).await
    }

    /// Log `value` for a new step of `spec` (or return the logged value).
    async fn log_value(&self, spec: OpSpec, make: impl FnOnce() -> Value) -> Result<Value> {
        let mut st = self.begin_step().await?;
        let step = st.next_step;
        if let Some(item) = self.logged(&st, step, &spec).await? {
            return Ok(item.get(attr::VALUE).cloned().unwrap_or(Value::Null));
        }
        let item = new_entry(&spec, make(), self.inner.rt.now_ms());
        let item = self.record_first(&mut st, step, &spec, item).await?;
        Ok(item.get(attr::VALUE).cloned().unwrap_or(Value::Null))
    }

    /// Read the current value of `key` in `table` (None if never written).
    /// Logged: a replay returns the value the first execution read.
    pub async fn read<T: DeserializeOwned>(&self, table: &str, key: &str) -> Result<Option<T>> {
        layout::check_user_key(table, key)?;
        let spec = OpSpec::new(OpKind::Read, json!([table, key]));
        let mut st = self.begin_step().await?;
        let step = st.next_step;
        let value = match self.logged(&st, step, &spec).await? {
            Some(item) => item.get(attr::VALUE).cloned().unwrap_or(Value::Null),
            None => {
                let partition = layout::data_partition(table, key);
                let value = self.inner.rt.daal().read(&partition).await?;
                let entry = new_entry(&spec, value, self.inner.rt.now_ms());
                let item = self.record_first(&mut st, step, &spec, entry).await?;
                item.get(attr::VALUE).cloned().unwrap_or(Value::Null)
            }
        };
        Ok(match value {
            Value::Null => None,
            v => Some(serde_json::from_value(v)?),
        })
    }

    /// Set `key` in `table` to `value`, exactly once for this step.
    pub async fn write<T: Serialize + ?Sized>(&self, table: &str, key: &str, value: &T) -> Result<()> {
        self.write_inner(table, key, serde_json::to_value(value)?, None).await.map(|_| ())
    }

    /// Set `key` to `value` only if `condition` holds on the current value
    /// (JSON null if never written). The outcome is logged and replayed.
    pub async fn cond_write<T: Serialize + ?Sized>(
        &self,
        table: &str,
        key: &str,
        value: &T,
        condition: Predicate,
    ) -> Result<bool> {
        self.write_inner(table, key, serde_json::to_value(value)?, Some(condition)).await
    }

    async fn write_inner(&self, table: &str, key: &str, value: Value, predicate: Option<Predicate>) -> Result<bool> {
        layout::check_user_key(table, key)?;
        let name = json!([table, key]);
        let kind = if predicate.is_some() { OpKind::CondWrite } else { OpKind::Write };
        let mut st = self.begin_step().await?;
        let step = st.next_step;
        if let Some(item) = st.log.entries.get(&step) {
            // Writes are logged in the data row, never in the operation log.
            return Err(self.diverged(step, item, kind, name));
        }
        let partition = layout::data_partition(table, key);
        if st.pending {
            let req = WriteRequest {
                partition: &partition,
                instance: &self.inner.instance,
                step,
                value: &value,
                predicate: predicate.as_ref(),
                careful: false,
                high_water: None,
                name: &name,
            };
            let (row, op) = self.inner.rt.daal().first_attempt(&req);
            if self.register(&mut st, Some(op)).await? {
                self.inner.rt.daal().applied(&partition, &row);
                let entry = layout::entry_name(&self.inner.instance, step);
                st.touched.push(json!([layout::hex(&partition), row, entry]));
                return Ok(true);
            }
            if let Some(item) = st.log.entries.get(&step) {
                return Err(self.diverged(step, item, kind, name));
            }
        }
        let req = WriteRequest {
            partition: &partition,
            instance: &self.inner.instance,
            step,
            value: &value,
            predicate: predicate.as_ref(),
            careful: self.careful(&st),
            high_water: if st.replay { st.log.high_water() } else { None },
            name: &name,
        };
        let written = self.inner.rt.daal().write(&req).await?;
        st.touched.push(json!([layout::hex(&partition), written.row, written.entry]));
        Ok(written.ok)
    }

    /// Run a side effect once: after its result is logged, no execution of
    /// this instance runs `f` again for this step — replays return the logged
    /// result. `f` gets a [`StepKey`] to pass to external APIs as their
    /// idempotency key (a crash between the effect and the log can repeat `f`).
    /// An `Err` from `f` fails the instance (recorded as its outcome).
    pub async fn step<T, E, F, Fut>(&self, name: &str, f: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        E: fmt::Display,
        F: FnOnce(StepKey) -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
    {
        let spec = OpSpec::new(OpKind::Step, name);
        let mut st = self.begin_step().await?;
        let step = st.next_step;
        // Register before the closure runs: a duplicate of a finished instance
        // must learn it before it repeats an effect.
        self.register(&mut st, None).await?;
        let value = match self.logged(&st, step, &spec).await? {
            Some(item) => item.get(attr::VALUE).cloned().unwrap_or(Value::Null),
            None => {
                let key = StepKey { instance: self.inner.instance.clone(), step };
                let result = f(key).await.map_err(|e| Error::Handler(format!("step {name:?} failed: {e}")))?;
                let value = serde_json::to_value(result)?;
                let item = self.record(step, &spec, new_entry(&spec, value, self.inner.rt.now_ms())).await?;
                item.get(attr::VALUE).cloned().unwrap_or(Value::Null)
            }
        };
        Ok(serde_json::from_value(value)?)
    }

    /// The current time in ms since the epoch, logged (replays see the same).
    pub async fn now(&self) -> Result<u64> {
        let now = self.inner.rt.now_ms();
        let v = self.log_value(OpSpec::new(OpKind::Now, Value::Null), || json!(now)).await?;
        v.as_u64().ok_or_else(|| Error::Corrupt(format!("logged time is not a number: {v}")))
    }

    /// A random UUID (v4), logged.
    pub async fn uuid(&self) -> Result<uuid::Uuid> {
        let v =
            self.log_value(OpSpec::new(OpKind::Uuid, Value::Null), || json!(uuid::Uuid::new_v4().to_string())).await?;
        v.as_str().and_then(|s| s.parse().ok()).ok_or_else(|| Error::Corrupt(format!("logged uuid is invalid: {v}")))
    }

    /// A random `u64`, logged.
    pub async fn random(&self) -> Result<u64> {
        let fresh = uuid::Uuid::new_v4().as_u64_pair().0;
        let v = self.log_value(OpSpec::new(OpKind::Random, Value::Null), || json!(fresh)).await?;
        v.as_u64().ok_or_else(|| Error::Corrupt(format!("logged random is not a number: {v}")))
    }

    /// Call `function` synchronously and return its output. The callee runs
    /// exactly once in effect however often this instance is re-executed.
    pub async fn invoke<I: Serialize + ?Sized, O: DeserializeOwned>(&self, function: &str, input: &I) -> Result<O> {
        let input = serde_json::to_value(input)?;
        self.inner.rt.check_input_size(&input)?;
        let spec = OpSpec::new(OpKind::Invoke, function);
        let mut st = self.begin_step().await?;
        let step = st.next_step;
        let callee = self.inner.instance.child(step);
        let rt = &self.inner.rt;
        let (entry, replay) = self.invoke_entry(&mut st, step, &spec, &callee, &input).await?;
        let outcome = match entry.get(attr::RESULT) {
            Some(result) => decode_outcome(result)?,
            None => {
                let call = Call {
                    function: function.to_string(),
                    input,
                    instance: callee,
                    kind: CallKind::Sync {
                        caller: self.inner.instance.clone(),
                        step,
                        replay,
                        started_at: entry.get(attr::AT).and_then(Value::as_u64).unwrap_or(0),
                        lease_valid_until: if self.inner.lease.fenced.load(Ordering::SeqCst) {
                            0
                        } else {
                            self.inner.lease.valid_until.load(Ordering::SeqCst)
                        },
                    },
                };
                rt.invoker().call(rt, call).await?
            }
        };
        match outcome {
            Ok(v) => Ok(serde_json::from_value(v)?),
            Err(msg) => Err(Error::Handler(format!("{function} failed: {msg}"))),
        }
    }

    /// Start `function` asynchronously; returns the callee's instance id. The
    /// callee's intent is registered before dispatch, so it runs exactly once
    /// in effect even if this instance or the dispatch crashes.
    pub async fn invoke_async<I: Serialize + ?Sized>(&self, function: &str, input: &I) -> Result<InstanceId> {
        let input = serde_json::to_value(input)?;
        self.inner.rt.check_input_size(&input)?;
        let spec = OpSpec::new(OpKind::InvokeAsync, function);
        let mut st = self.begin_step().await?;
        let step = st.next_step;
        let callee = self.inner.instance.child(step);
        let rt = &self.inner.rt;
        self.invoke_entry(&mut st, step, &spec, &callee, &input).await?;
        rt.intents().register_async(&callee, function, &input, (&self.inner.instance, step)).await?;

        let call = Call { function: function.to_string(), input, instance: callee.clone(), kind: CallKind::Intent };
        if let Err(e) = rt.invoker().dispatch(rt, call).await {
            tracing::warn!(instance = %callee, error = %e, "dispatch failed; the collector will start the instance");
        }
        Ok(callee)
    }

    /// The caller's log entry of an invocation at `step`: the logged one, or a
    /// new one naming the callee and its input. `true` when it already existed
    /// (the callee may have run). A logged entry with another input diverges.
    async fn invoke_entry(
        &self,
        st: &mut State,
        step: u32,
        spec: &OpSpec,
        callee: &InstanceId,
        input: &Value,
    ) -> Result<(Item, bool)> {
        let (entry, existed) = match self.logged(st, step, spec).await? {
            Some(item) => (item, true),
            None => {
                let item = new_entry(spec, Value::Null, self.inner.rt.now_ms())
                    .with(attr::CALLEE, callee.as_str())
                    .with(attr::INPUT, input.clone());
                let logged = self.record_first(st, step, spec, item.clone()).await?;
                let existed = logged != item;
                (logged, existed)
            }
        };
        self.check_input(step, spec, &entry, input)?;
        Ok((entry, existed))
    }

    /// A write met an operation-log entry at its step: the replay asks for
    /// something other than what the log holds (or the entry is damaged).
    fn diverged(&self, step: u32, entry: &Item, kind: OpKind, name: Value) -> Error {
        match oplog::entry_spec(entry) {
            Ok(logged) => Error::NonDeterministic {
                instance: self.inner.instance.to_string(),
                step,
                logged: logged.to_string(),
                requested: OpSpec::new(kind, name).to_string(),
            },
            Err(damaged) => damaged,
        }
    }

    fn check_input(&self, step: u32, spec: &OpSpec, entry: &Item, input: &Value) -> Result<()> {
        match entry.get(attr::INPUT) {
            Some(logged) if logged != input => Err(Error::NonDeterministic {
                instance: self.inner.instance.to_string(),
                step,
                logged: format!("{spec} with input {logged}"),
                requested: format!("{spec} with input {input}"),
            }),
            _ => Ok(()),
        }
    }
}
