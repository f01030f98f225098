//! Intents: one row per top-level or asynchronously called instance, saying
//! what to run (function, input), whether it is done (and its result), and who
//! holds the lease to run it. Creating the intent is how an instance starts;
//! finding it already there is how a duplicate or a re-execution learns it is
//! one. The collector re-drives intents whose lease expired.
//!
//! Sync-called instances have no intent of their own: their caller's
//! operation-log entry plays that part (see [`crate::invoke`]).

use std::sync::Arc;

use serde_json::{Value, json};

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::layout::{self, InstanceId};
use crate::oplog::{decode_outcome, encode_outcome};
use crate::retry::RetryPolicy;
use crate::store::{Condition, Item, Key, Mutation, PutMode, StateStore, WriteOp};

/// Attribute names of an intent.
pub mod attr {
    /// Registered function name.
    pub const FUNCTION: &str = "fn";
    /// The instance's input (removed by GC compaction).
    pub const INPUT: &str = "input";
    /// `running`, `done` or `failed`.
    pub const STATUS: &str = "status";
    /// When the intent was created (ms).
    pub const STARTED_AT: &str = "started_at";
    /// Lease expiry (ms): the collector takes over after it.
    pub const LEASE_UNTIL: &str = "lease_until";
    /// Token of the execution holding the lease ("" before the first claim).
    pub const OWNER: &str = "owner";
    /// Executions started so far (0: registered by an async caller, unclaimed).
    pub const ATTEMPTS: &str = "attempts";
    /// `[caller instance, step]` for asynchronously called instances.
    pub const CALLER: &str = "caller";
    /// The outcome: `{"ok": v}` or `{"err": msg}`.
    pub const RESULT: &str = "result";
    /// When the instance finished (ms).
    pub const FINISHED_AT: &str = "finished_at";
    /// DAAL entries written, `[[partition hex, row, entry]]`, for GC.
    pub const TOUCHED: &str = "touched";
    /// Set once GC has removed the instance's logs (the intent is a tombstone).
    pub const COMPACTED: &str = "compacted";
}

/// Intent status values.
pub mod status {
    /// Not finished.
    pub const RUNNING: &str = "running";
    /// Finished with a result.
    pub const DONE: &str = "done";
    /// Finished with a recorded handler failure.
    pub const FAILED: &str = "failed";
}

/// An instance outcome: a JSON result or a recorded failure message.
pub type Outcome = std::result::Result<Value, String>;

/// How an attempt to start an instance turned out.
#[derive(Debug)]
pub(crate) enum Begin {
    /// This execution is the first: no log to consult.
    Fresh { started_at: u64 },
    /// This execution took over an unfinished instance: replay from the log.
    Resume { started_at: u64 },
    /// The instance already finished.
    Finished(Outcome),
    /// Another execution holds a live lease.
    Busy,
}

/// Intent operations.
#[derive(Debug)]
pub(crate) struct Intents {
    /// Whether the running set and the finished queue are kept (the store
    /// has atomic batches to keep them in step with the intent).
    indexed: bool,
    store: Arc<dyn StateStore>,
    clock: Arc<dyn Clock>,
    retry: RetryPolicy,
    shards: u16,
    lease_ms: u64,
}

impl Intents {
    pub fn new(
        store: Arc<dyn StateStore>,
        clock: Arc<dyn Clock>,
        retry: RetryPolicy,
        shards: u16,
        lease_ms: u64,
    ) -> Self {
        let indexed = store.capabilities().atomic_batch;
        Self { indexed, store, clock, retry, shards, lease_ms }
    }

    pub fn key(&self, id: &InstanceId) -> Key {
        layout::intent_key(id, self.shards)
    }

    pub fn shards(&self) -> u16 {
        self.shards
    }

    /// Read an intent.
    pub async fn get(&self, id: &InstanceId) -> Result<Option<Item>> {
        let key = self.key(id);
        Ok(self.retry.run(|| self.store.get(&key)).await?)
    }

    /// Start (or join) instance `id` of `function` as execution `owner`.
    pub async fn begin(
        &self,
        id: &InstanceId,
        function: &str,
        input: &Value,
        caller: Option<(&InstanceId, u32)>,
        owner: &str,
    ) -> Result<Begin> {
        let key = self.key(id);
        let now = self.clock.now_ms();
        let mut item = self.fresh_item(function, input, owner, now);
        if let Some((c, step)) = caller {
            item.insert(attr::CALLER, json!([c.as_str(), step]));
        }
        let ops = self.with_running(id, WriteOp::Put { key: key.clone(), item, mode: PutMode::Create });
        let mut current = match self.write_all(ops).await {
            Ok(()) => return Ok(Begin::Fresh { started_at: now }),
            Err(e) if e.is_condition_failed() => match e.into_current() {
                Some(c) => c,
                None => self.get(id).await?.ok_or_else(|| Error::Corrupt("intent vanished while starting".into()))?,
            },
            Err(e) => return Err(e.into()),
        };
        for _ in 0..16 {
            match self.classify(id, function, input, owner, &current)? {
                Classified::Done(b) => return Ok(b),
                Classified::Claim(conditions, fresh) => {
                    let now = self.clock.now_ms();
                    let mutations = [
                        Mutation::Set(attr::OWNER.into(), json!(owner)),
                        Mutation::Set(attr::LEASE_UNTIL.into(), json!(now + self.lease_ms)),
                        Mutation::Add(attr::ATTEMPTS.into(), 1),
                    ];
                    let started_at = current.get(attr::STARTED_AT).and_then(Value::as_u64).unwrap_or(now);
                    match self.retry.run(|| self.store.update(&key, &conditions, &mutations)).await {
                        Ok(_) if fresh => return Ok(Begin::Fresh { started_at }),
                        Ok(_) => return Ok(Begin::Resume { started_at }),
                        Err(e) if e.is_condition_failed() => {
                            current = match e.into_current() {
                                Some(c) => c,
                                None => self.get(id).await?.ok_or_else(|| Error::Corrupt("intent vanished".into()))?,
                            };
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Ok(Begin::Busy)
    }

    fn fresh_item(&self, function: &str, input: &Value, owner: &str, now: u64) -> Item {
        Item::new()
            .with(attr::FUNCTION, function)
            .with(attr::INPUT, input.clone())
            .with(attr::STATUS, status::RUNNING)
            .with(attr::STARTED_AT, now)
            .with(attr::LEASE_UNTIL, now + self.lease_ms)
            .with(attr::OWNER, owner)
            .with(attr::ATTEMPTS, 1)
    }

    /// The create-if-absent of a fresh intent (and its running-set entry), as
    /// batch ops to fold into an instance's first write; and its start time.
    pub fn create_ops(&self, id: &InstanceId, function: &str, input: &Value, owner: &str) -> (Vec<WriteOp>, u64) {
        let now = self.clock.now_ms();
        let item = self.fresh_item(function, input, owner, now);
        (self.with_running(id, WriteOp::Put { key: self.key(id), item, mode: PutMode::Create }), now)
    }

    /// `intent_op`, plus the running-set entry where the index is kept.
    fn with_running(&self, id: &InstanceId, intent_op: WriteOp) -> Vec<WriteOp> {
        let mut ops = vec![intent_op];
        if self.indexed {
            let entry = Item::new().with("at", self.clock.now_ms());
            ops.push(WriteOp::Put { key: layout::running_key(id, self.shards), item: entry, mode: PutMode::Overwrite });
        }
        ops
    }

    /// One op as a plain call, several as one atomic batch; with retries.
    async fn write_all(&self, ops: Vec<WriteOp>) -> crate::store::StoreResult<()> {
        if let [WriteOp::Put { key, item, mode }] = ops.as_slice() {
            return self.retry.run(|| self.store.put(key, item.clone(), *mode)).await;
        }
        self.retry.run(|| self.store.transact(ops.clone())).await
    }

    /// Whether the running set and finished queue are kept.
    pub fn indexed(&self) -> bool {
        self.indexed
    }

    fn classify(&self, id: &InstanceId, function: &str, input: &Value, owner: &str, cur: &Item) -> Result<Classified> {
        let stored_fn =
            cur.get_str(attr::FUNCTION).ok_or_else(|| Error::Corrupt(format!("intent of {id} has no function")))?;
        if stored_fn != function {
            return Err(Error::InvalidInput(format!(
                "instance id {id} belongs to function {stored_fn:?}, not {function:?}"
            )));
        }
        if let Some(stored_input) = cur.get(attr::INPUT)
            && stored_input != input
        {
            return Err(Error::InvalidInput(format!("instance id {id} was already used with a different input")));
        }
        match cur.get_str(attr::STATUS) {
            Some(status::DONE) | Some(status::FAILED) => {
                let result = cur
                    .get(attr::RESULT)
                    .ok_or_else(|| Error::Corrupt(format!("finished intent of {id} has no result")))?;
                return Ok(Classified::Done(Begin::Finished(decode_outcome(result)?)));
            }
            Some(status::RUNNING) => {}
            other => return Err(Error::Corrupt(format!("intent of {id} has status {other:?}"))),
        }
        let started_at = cur.get(attr::STARTED_AT).and_then(Value::as_u64).unwrap_or(0);
        let cur_owner = cur.get_str(attr::OWNER).unwrap_or_default();
        if cur_owner == owner {
            // Our own create or claim, applied although its reply was lost.
            let attempts = cur.get_i64(attr::ATTEMPTS).unwrap_or(1);
            return Ok(Classified::Done(if attempts <= 1 {
                Begin::Fresh { started_at }
            } else {
                Begin::Resume { started_at }
            }));
        }
        let attempts = cur.get(attr::ATTEMPTS).cloned().unwrap_or(json!(0));
        if attempts == json!(0) {
            // Registered by an async caller and never claimed: the first claimer runs it fresh.
            return Ok(Classified::Claim(vec![Condition::AttrEquals(attr::ATTEMPTS.into(), attempts)], true));
        }
        let lease_until = cur.get(attr::LEASE_UNTIL).and_then(Value::as_u64).unwrap_or(0);
        if lease_until > self.clock.now_ms() {
            return Ok(Classified::Done(Begin::Busy));
        }
        Ok(Classified::Claim(
            vec![
                Condition::AttrEquals(attr::STATUS.into(), json!(status::RUNNING)),
                Condition::AttrEquals(attr::OWNER.into(), json!(cur_owner)),
                Condition::AttrEquals(attr::LEASE_UNTIL.into(), json!(lease_until)),
            ],
            false,
        ))
    }

    /// Register the intent of an asynchronously called instance, unclaimed.
    pub async fn register_async(
        &self,
        id: &InstanceId,
        function: &str,
        input: &Value,
        caller: (&InstanceId, u32),
    ) -> Result<()> {
        let key = self.key(id);
        let now = self.clock.now_ms();
        let item = Item::new()
            .with(attr::FUNCTION, function)
            .with(attr::INPUT, input.clone())
            .with(attr::STATUS, status::RUNNING)
            .with(attr::STARTED_AT, now)
            .with(attr::LEASE_UNTIL, now + self.lease_ms)
            .with(attr::OWNER, "")
            .with(attr::ATTEMPTS, 0)
            .with(attr::CALLER, json!([caller.0.as_str(), caller.1]));
        match self.write_all(self.with_running(id, WriteOp::Put { key, item, mode: PutMode::Create })).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_condition_failed() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Extend our lease; `false` if another execution took the instance over.
    pub async fn heartbeat(&self, id: &InstanceId, owner: &str) -> Result<bool> {
        let key = self.key(id);
        let conditions = [
            Condition::AttrEquals(attr::STATUS.into(), json!(status::RUNNING)),
            Condition::AttrEquals(attr::OWNER.into(), json!(owner)),
        ];
        let mutations = [Mutation::Set(attr::LEASE_UNTIL.into(), json!(self.clock.now_ms() + self.lease_ms))];
        match self.store.update(&key, &conditions, &mutations).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_condition_failed() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Record the outcome; returns the outcome that stands (the first finisher's).
    pub async fn finish(&self, id: &InstanceId, outcome: &Outcome, touched: Value) -> Result<Outcome> {
        let key = self.key(id);
        let conditions = [Condition::AttrEquals(attr::STATUS.into(), json!(status::RUNNING))];
        let st = if outcome.is_ok() { status::DONE } else { status::FAILED };
        let now = self.clock.now_ms();
        let mutations = vec![
            Mutation::Set(attr::STATUS.into(), json!(st)),
            Mutation::Set(attr::RESULT.into(), encode_outcome(outcome)),
            Mutation::Set(attr::FINISHED_AT.into(), json!(now)),
            Mutation::Set(attr::TOUCHED.into(), touched),
        ];
        let result = if self.indexed {
            // One batch: the intent is done, leaves the running set, joins the finished queue.
            let ops = vec![
                WriteOp::Update { key: key.clone(), conditions: conditions.to_vec(), mutations },
                WriteOp::Delete { key: layout::running_key(id, self.shards), conditions: vec![] },
                WriteOp::Put {
                    key: layout::finished_key(id, now),
                    item: Item::new().with("at", now),
                    mode: PutMode::Overwrite,
                },
            ];
            self.retry.run(|| self.store.transact(ops.clone())).await
        } else {
            self.retry.run(|| self.store.update(&key, &conditions, &mutations)).await.map(|_| ())
        };
        match result {
            Ok(_) => Ok(outcome.clone()),
            Err(e) if e.is_condition_failed() => {
                let cur = match e.into_current() {
                    Some(c) => c,
                    None => self.get(id).await?.ok_or_else(|| Error::Corrupt("intent vanished".into()))?,
                };
                let result = cur
                    .get(attr::RESULT)
                    .ok_or_else(|| Error::Corrupt(format!("intent of {id} refused finish but has no result")))?;
                decode_outcome(result)
            }
            Err(e) => Err(e.into()),
        }
    }
}

enum Classified {
    Done(Begin),
    /// Claim with these conditions; `true` = the claimer runs it fresh.
    Claim(Vec<Condition>, bool),
}
