//! The linked DAAL: each user key is a chain of rows; the tail holds the
//! current value, and every row carries the write log of the writes it took,
//! so a write and its log entry commit in ONE conditional single-item update.
//!
//! A write to row R is `update R if log lacks (instance, step) ∧ R has no next
//! ∧ R.n < capacity: set value, add the entry, n += 1`. When the condition
//! fails the store hands back the row, and the row says why: the entry is
//! there (replay: return the logged outcome), `next` is set (follow it), the
//! row is full (append a row and link it with a conditional set of `next`:
//! exactly one appender wins, the loser deletes its row and follows), or the
//! user's predicate is false (record `false` under the entry).
//!
//! Where can an earlier execution of the same instance have logged this step?
//! Only in the row that was the tail when it wrote: the current tail or one of
//! its predecessors. A *fresh* execution that holds a live lease is the only
//! execution the instance has ever had (duplicates wait for the lease, the
//! collector takes over only expired leases), so the update's own condition
//! is a complete check: **one round trip**. Re-executions, and executions
//! whose lease is lost or may have expired (`careful`), scan the chain first.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::layout::{self, HEAD_ROW, InstanceId, row};
use crate::oplog::{OpKind, OpSpec};
use crate::retry::RetryPolicy;
use crate::store::eval::predicate_holds;
use crate::store::{Condition, ErrorKind, Item, Mutation, PutMode, StateStore, StateStoreExt, StoreResult, WriteOp};

/// Most rows a single operation walks before giving up as corrupt.
const MAX_HOPS: usize = 10_000;
/// Most rows a chain scan loads.
const MAX_CHAIN_ROWS: usize = 100_000;
/// Most cached tails before the cache is cleared.
const MAX_CACHED_TAILS: usize = 100_000;

/// The believed tail of a chain.
#[derive(Clone, Debug)]
struct Tail {
    row: String,
}

/// A write to apply, with everything needed to replay or verify it.
#[derive(Debug)]
pub(crate) struct WriteRequest<'a> {
    pub partition: &'a [u8],
    pub instance: &'a InstanceId,
    pub step: u32,
    pub value: &'a Value,
    /// The user condition of a `cond_write`; `None` for a plain write.
    pub predicate: Option<&'a crate::store::Predicate>,
    /// Scan the chain for an earlier log entry before writing: another
    /// execution of the instance may have run (see the module docs).
    pub careful: bool,
    /// In a re-execution, the highest step the operation log holds.
    pub high_water: Option<u32>,
    /// `[table, key]`, for divergence messages.
    pub name: &'a Value,
}

impl WriteRequest<'_> {
    fn spec(&self) -> OpSpec {
        let kind = if self.predicate.is_some() { OpKind::CondWrite } else { OpKind::Write };
        OpSpec::new(kind, self.name.clone())
    }
}

/// The result of a write: whether it took effect, and the row holding its log
/// entry (for GC).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Written {
    pub ok: bool,
    pub row: String,
    pub entry: String,
}

/// DAAL operations over a store, with a cache of chain tails.
#[derive(Debug)]
pub(crate) struct Daal {
    store: Arc<dyn StateStore>,
    clock: Arc<dyn Clock>,
    retry: RetryPolicy,
    capacity: i64,
    tails: Mutex<HashMap<Vec<u8>, Tail>>,
}

impl Daal {
    pub fn new(store: Arc<dyn StateStore>, clock: Arc<dyn Clock>, retry: RetryPolicy, capacity: i64) -> Self {
        Self { store, clock, retry, capacity: capacity.max(1), tails: Mutex::default() }
    }

    fn cached(&self, partition: &[u8]) -> Tail {
        let tails = self.tails.lock().unwrap_or_else(|e| e.into_inner());
        tails.get(partition).cloned().unwrap_or(Tail { row: HEAD_ROW.to_string() })
    }

    fn remember(&self, partition: &[u8], row_id: &str) {
        let mut tails = self.tails.lock().unwrap_or_else(|e| e.into_inner());
        if tails.len() >= MAX_CACHED_TAILS {
            tails.clear();
        }
        tails.insert(partition.to_vec(), Tail { row: row_id.to_string() });
    }

    fn forget(&self, partition: &[u8]) {
        self.tails.lock().unwrap_or_else(|e| e.into_inner()).remove(partition);
    }

    async fn get(&self, partition: &[u8], row_id: &str) -> StoreResult<Option<Item>> {
        let key = layout::row_key(partition, row_id);
        self.retry.run(|| self.store.get(&key)).await
    }

    /// The current value of a key (JSON null if never written): one consistent
    /// read of the cached tail, following `next` if the chain has grown.
    pub async fn read(&self, partition: &[u8]) -> Result<Value> {
        let mut row_id = self.cached(partition).row;
        for _ in 0..MAX_HOPS {
            match self.get(partition, &row_id).await? {
                None if row_id == HEAD_ROW => return Ok(Value::Null),
                None => {
                    // The cached row was garbage-collected: start again from the head.
                    self.forget(partition);
                    row_id = HEAD_ROW.to_string();
                }
                Some(item) => match next_of(&item)? {
                    Some(next) => row_id = next,
                    None => {
                        self.remember(partition, &row_id);
                        return Ok(item.get(row::VALUE).cloned().unwrap_or(Value::Null));
                    }
                },
            }
        }
        Err(Error::Corrupt("DAAL chain longer than any Flowstate writes (cycle?)".into()))
    }

    /// Apply a write or conditional write exactly once for `(instance, step)`.
    pub async fn write(&self, req: &WriteRequest<'_>) -> Result<Written> {
        let entry = layout::entry_name(req.instance, req.step);
        let mut row_id = self.cached(req.partition).row;
        if req.careful {
            let chain = self.load_chain(req.partition).await?;
            if let Some((found_row, logged)) = chain.find_entry(&entry) {
                return replayed(req, &entry, found_row, logged);
            }
            if req.careful && req.high_water.is_some_and(|hw| hw > req.step) {
                // The first execution got past this step, yet no row of this
                // key logged it: it wrote somewhere else.
                return Err(Error::NonDeterministic {
                    instance: req.instance.to_string(),
                    step: req.step,
                    logged: "an operation on another target".into(),
                    requested: req.spec().to_string(),
                });
            }
            row_id = chain.tail;
        }

        let mut known: Option<Item> = None;
        for _ in 0..MAX_HOPS {
            let current = match known.take() {
                Some(item) => item,
                None => match self.try_write(req, &entry, &row_id).await {
                    Ok(_) => {
                        self.remember(req.partition, &row_id);
                        return Ok(Written { ok: true, row: row_id, entry });
                    }
                    Err(e) => match e.kind() {
                        ErrorKind::ConditionFailed => match e.into_current() {
                            Some(item) => item,
                            None => match self.get(req.partition, &row_id).await? {
                                Some(item) => item,
                                None => continue, // deleted meanwhile: retry, NotFound handles it
                            },
                        },
                        ErrorKind::NotFound if row_id == HEAD_ROW => match self.create_head(req, &entry).await? {
                            None => return Ok(Written { ok: self.head_ok(req), row: row_id, entry }),
                            Some(existing) => existing,
                        },
                        ErrorKind::NotFound => {
                            // Our cached row was garbage-collected (it had been unlinked).
                            self.forget(req.partition);
                            row_id = HEAD_ROW.to_string();
                            continue;
                        }
                        ErrorKind::TooLarge => {
                            let current = self.get(req.partition, &row_id).await?.unwrap_or_default();
                            if current.get_i64(row::COUNT).unwrap_or(0) == 0 {
                                // Even an empty row cannot hold this value.
                                return Err(self.too_large(req.value));
                            }
                            self.seal(req.partition, &row_id).await?
                        }
                        _ => return Err(e.into()),
                    },
                },
            };

            // The row refused the write; it tells us why.
            if let Some(logged) = current.entry(row::LOG, &entry) {
                return replayed(req, &entry, &row_id, logged);
            }
            if let Some(next) = next_of(&current)? {
                row_id = next;
                continue;
            }
            if current.get_i64(row::COUNT).unwrap_or(0) >= self.capacity {
                row_id = self.append(req.partition, &row_id, &current).await?;
                continue;
            }
            if let Some(pred) = req.predicate
                && !predicate_holds(pred, current.get(row::VALUE).unwrap_or(&Value::Null))
            {
                match self.record_false(req, &entry, &row_id).await {
                    Ok(_) => {
                        self.remember(req.partition, &row_id);
                        return Ok(Written { ok: false, row: row_id, entry });
                    }
                    Err(e) if e.is_condition_failed() => {
                        known = e.into_current();
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            // The conditions hold now (a concurrent change came and went): try again.
        }
        Err(Error::Corrupt("DAAL write did not settle (chain cycle or endless contention)".into()))
    }

    /// Whether a just-created head took the write (false when the predicate
    /// failed on the never-written value).
    fn head_ok(&self, req: &WriteRequest<'_>) -> bool {
        req.predicate.is_none_or(|p| predicate_holds(p, &Value::Null))
    }

    /// Conditions and mutations of one write attempt on a row.
    fn write_ops(&self, req: &WriteRequest<'_>, entry: &str) -> (Vec<Condition>, Vec<Mutation>) {
        let mut conditions = vec![
            Condition::EntryAbsent { map: row::LOG.into(), entry: entry.into() },
            Condition::AttrAbsent(row::NEXT.into()),
            Condition::Below { attr: row::COUNT.into(), bound: self.capacity },
        ];
        if let Some(pred) = req.predicate {
            conditions.push(Condition::Value { attr: row::VALUE.into(), predicate: pred.clone() });
        }
        let outcome = if req.predicate.is_some() { json!({"k": "c", "ok": true}) } else { json!({"k": "w"}) };
        let mutations = vec![
            Mutation::Set(row::VALUE.into(), req.value.clone()),
            Mutation::SetEntry { map: row::LOG.into(), entry: entry.into(), value: outcome },
            Mutation::Add(row::COUNT.into(), 1),
        ];
        (conditions, mutations)
    }

    /// The write's first attempt on the cached tail as a batch op (to fold an
    /// instance's registration into its first write), and the row it targets.
    /// Success means the write took effect (a cond_write's predicate held).
    pub fn first_attempt(&self, req: &WriteRequest<'_>) -> (String, WriteOp) {
        let row_id = self.cached(req.partition).row;
        let (conditions, mutations) = self.write_ops(req, &layout::entry_name(req.instance, req.step));
        (row_id.clone(), WriteOp::Update { key: layout::row_key(req.partition, &row_id), conditions, mutations })
    }

    /// Record that a first attempt applied to `row_id`.
    pub fn applied(&self, partition: &[u8], row_id: &str) {
        self.remember(partition, row_id);
    }

    async fn try_write(&self, req: &WriteRequest<'_>, entry: &str, row_id: &str) -> StoreResult<Item> {
        let (conditions, mutations) = self.write_ops(req, entry);
        let key = layout::row_key(req.partition, row_id);
        self.retry.run(|| self.store.update(&key, &conditions, &mutations)).await
    }

    async fn record_false(&self, req: &WriteRequest<'_>, entry: &str, row_id: &str) -> StoreResult<Item> {
        let conditions = [
            Condition::EntryAbsent { map: row::LOG.into(), entry: entry.into() },
            Condition::AttrAbsent(row::NEXT.into()),
            Condition::Below { attr: row::COUNT.into(), bound: self.capacity },
            Condition::Value {
                attr: row::VALUE.into(),
                predicate: crate::store::Predicate::Not(Box::new(req.predicate.expect("cond write").clone())),
            },
        ];
        let mutations = [
            Mutation::SetEntry { map: row::LOG.into(), entry: entry.into(), value: json!({"k": "c", "ok": false}) },
            Mutation::Add(row::COUNT.into(), 1),
        ];
        let key = layout::row_key(req.partition, row_id);
        self.retry.run(|| self.store.update(&key, &conditions, &mutations)).await
    }

    /// Create the head row carrying this write. `Ok(None)`: created;
    /// `Ok(Some(item))`: a head already exists (the caller re-examines it).
    async fn create_head(&self, req: &WriteRequest<'_>, entry: &str) -> Result<Option<Item>> {
        let ok = self.head_ok(req);
        let outcome = match (req.predicate.is_some(), ok) {
            (false, _) => json!({"k": "w"}),
            (true, ok) => json!({"k": "c", "ok": ok}),
        };
        let mut item = Item::new()
            .with(row::LOG, json!({ entry: outcome }))
            .with(row::COUNT, 1)
            .with(row::COLLECTED, 0)
            .with(row::BORN, self.clock.now_ms());
        if ok {
            item.insert(row::VALUE, req.value.clone());
        }
        let key = layout::row_key(req.partition, HEAD_ROW);
        match self.retry.run(|| self.store.put(&key, item.clone(), PutMode::Create)).await {
            Ok(()) => {
                self.remember(req.partition, HEAD_ROW);
                Ok(None)
            }
            Err(e) if e.is_condition_failed() => match e.into_current() {
                Some(existing) => Ok(Some(existing)),
                None => Ok(Some(
                    self.get(req.partition, HEAD_ROW)
                        .await?
                        .ok_or_else(|| Error::Corrupt("head row reported present, then read as absent".into()))?,
                )),
            },
            Err(e) if e.kind() == ErrorKind::TooLarge => Err(self.too_large(req.value)),
            Err(e) => Err(e.into()),
        }
    }

    fn too_large(&self, value: &Value) -> Error {
        Error::TooLarge(format!(
            "value of {} bytes does not fit in one item of this store (limit {} bytes including the write log)",
            serde_json::to_vec(value).map(|v| v.len()).unwrap_or(0),
            self.store.capabilities().max_item_bytes
        ))
    }

    /// Mark a row full so that no further write lands in it (used when a
    /// write does not fit in the row's remaining bytes).
    async fn seal(&self, partition: &[u8], row_id: &str) -> Result<Item> {
        let key = layout::row_key(partition, row_id);
        let conditions = [Condition::AttrAbsent(row::NEXT.into())];
        let mutations = [Mutation::Set(row::COUNT.into(), json!(self.capacity))];
        match self.retry.run(|| self.store.update(&key, &conditions, &mutations)).await {
            Ok(item) => Ok(item),
            Err(e) if e.is_condition_failed() => match e.into_current() {
                Some(item) => Ok(item),
                None => Ok(self.get(partition, row_id).await?.unwrap_or_default()),
            },
            Err(e) => Err(e.into()),
        }
    }

    /// Append a row after the full tail `row_id`; returns the new tail (ours,
    /// or the winner's when another appender linked first).
    async fn append(&self, partition: &[u8], row_id: &str, full: &Item) -> Result<String> {
        let new_id = layout::new_row_id();
        let mut item = Item::new()
            .with(row::LOG, json!({}))
            .with(row::COUNT, 0)
            .with(row::COLLECTED, 0)
            .with(row::BORN, self.clock.now_ms());
        if let Some(v) = full.get(row::VALUE) {
            item.insert(row::VALUE, v.clone());
        }
        let new_key = layout::row_key(partition, &new_id);
        match self.retry.run(|| self.store.put(&new_key, item.clone(), PutMode::Create)).await {
            // A condition failure on a fresh random id can only be our own earlier attempt.
            Ok(()) => {}
            Err(e) if e.is_condition_failed() => {}
            Err(e) => return Err(e.into()),
        }
        let key = layout::row_key(partition, row_id);
        let conditions = [Condition::AttrAbsent(row::NEXT.into())];
        let mutations = [Mutation::Set(row::NEXT.into(), json!(new_id))];
        match self.retry.run(|| self.store.update(&key, &conditions, &mutations)).await {
            Ok(_) => {
                self.remember(partition, &new_id);
                Ok(new_id)
            }
            Err(e) if e.is_condition_failed() => {
                let current = match e.into_current() {
                    Some(c) => c,
                    None => self.get(partition, row_id).await?.unwrap_or_default(),
                };
                let winner = next_of(&current)?.ok_or_else(|| Error::Corrupt("link refused but no next row".into()))?;
                if winner != new_id {
                    // Lost the race: remove our unlinked row and follow the winner.
                    let _ = self.retry.run(|| self.store.delete(&new_key, &[])).await;
                }
                Ok(winner)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Every row of a key's chain, and its tail.
    pub async fn load_chain(&self, partition: &[u8]) -> Result<Chain> {
        let rows = self.retry.run(|| self.store.scan_all(&layout::DATA, partition, MAX_CHAIN_ROWS)).await?;
        Chain::from_rows(rows)
    }
}

fn replayed(req: &WriteRequest<'_>, entry: &str, row_id: &str, logged: &Value) -> Result<Written> {
    let (kind, ok) = match logged.get("k").and_then(Value::as_str) {
        Some("w") => (OpKind::Write, true),
        Some("c") => (OpKind::CondWrite, logged.get("ok").and_then(Value::as_bool).unwrap_or(false)),
        _ => return Err(Error::Corrupt(format!("write-log entry {entry:?} holds {logged}"))),
    };
    let spec = req.spec();
    if kind != spec.kind {
        return Err(Error::NonDeterministic {
            instance: req.instance.to_string(),
            step: req.step,
            logged: OpSpec::new(kind, req.name.clone()).to_string(),
            requested: spec.to_string(),
        });
    }
    Ok(Written { ok, row: row_id.to_string(), entry: entry.to_string() })
}

fn next_of(item: &Item) -> Result<Option<String>> {
    match item.get(row::NEXT) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(Error::Corrupt(format!("DAAL row has a non-string next pointer: {other}"))),
    }
}

/// A loaded chain: rows by id and the tail reached from the head.
#[derive(Debug, Default)]
pub(crate) struct Chain {
    pub rows: HashMap<String, Item>,
    /// Row ids from head to tail, following `next`.
    pub order: Vec<String>,
    pub tail: String,
}

impl Chain {
    fn from_rows(rows: Vec<(Vec<u8>, Item)>) -> Result<Self> {
        let mut map = HashMap::with_capacity(rows.len());
        for (sort, item) in rows {
            let id = String::from_utf8(sort).map_err(|_| Error::Corrupt("DAAL row id is not UTF-8".into()))?;
            if item.get(row::LOG).is_some_and(|l| !l.is_object()) {
                return Err(Error::Corrupt(format!("DAAL row {id:?} has a log that is not a map")));
            }
            map.insert(id, item);
        }
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        let mut cur = HEAD_ROW.to_string();
        if map.contains_key(HEAD_ROW) {
            loop {
                if !seen.insert(cur.clone()) {
                    return Err(Error::Corrupt("DAAL chain has a cycle".into()));
                }
                order.push(cur.clone());
                match next_of(&map[&cur])? {
                    Some(next) if map.contains_key(&next) => cur = next,
                    Some(next) => {
                        return Err(Error::Corrupt(format!("DAAL row {cur:?} links to missing row {next:?}")));
                    }
                    None => break,
                }
            }
        }
        Ok(Self { rows: map, order, tail: cur })
    }

    /// The row and logged outcome of a write-log entry, in any row.
    pub fn find_entry(&self, entry: &str) -> Option<(&str, &Value)> {
        self.rows.iter().find_map(|(id, item)| item.entry(row::LOG, entry).map(|v| (id.as_str(), v)))
    }
}
