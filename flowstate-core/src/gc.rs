//! Garbage collection: once an instance has been finished for longer than
//! [`Config::gc_window`](crate::runtime::Config::gc_window) (longer than any
//! execution of it can still be running), remove its operation-log entries
//! and its write-log entries from data rows, and shrink its intent to a
//! tombstone that still answers duplicates with the recorded result. Rows
//! whose entries have all been collected are unlinked from their chain (never
//! the head or the tail) and deleted one window later, when no cached pointer
//! can still reach them.
//!
//! One pass runs at a time per namespace (a lease row in the meta table).
//! Finding the garbage: where the store has atomic batches, an instance's
//! finish also enters it, in the same batch, into a finished queue bucketed
//! by minute; a pass walks the buckets that have aged past the window, from a
//! cursor, so its cost is O(instances to collect) plus one read per elapsed
//! minute. Elsewhere a pass scans the intent shards (O(intents kept);
//! [`Runtime::gc_full`]). Per collected instance: one scan of its log
//! partition, one delete per log entry, one update per data row it wrote.
//! The data table is never scanned (Beldi scanned it whole every minute).

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::intent::{attr, status};
use crate::layout::{self, HEAD_ROW, InstanceId, row};
use crate::oplog::{self, OpKind};
use crate::runtime::Runtime;
use crate::store::{Condition, Item, Key, Mutation, PageRequest, PutMode, StateStoreExt};

/// What one GC pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Another GC pass held the lease; nothing was done.
    pub skipped: bool,
    /// Intents looked at.
    pub scanned: usize,
    /// Finished instances whose logs were collected (sync callees included).
    pub instances_collected: usize,
    /// Operation-log entries deleted.
    pub log_entries_deleted: usize,
    /// Write-log entries removed from data rows.
    pub write_entries_removed: usize,
    /// Fully collected rows unlinked from their chains.
    pub rows_unlinked: usize,
    /// Unlinked rows deleted.
    pub rows_deleted: usize,
    /// Tombstones deleted after their retention.
    pub tombstones_deleted: usize,
}

/// How far back (in finished-queue buckets of a minute) the first pass in a
/// namespace looks; older backlogs need one [`Runtime::gc_full`] pass.
pub const INITIAL_LOOKBACK_BUCKETS: u64 = 120;
/// Most finished-queue buckets one pass walks (a long-idle GC catches up over
/// several passes).
pub const MAX_BUCKETS_PER_PASS: usize = 1440;

/// Most operation-log entries of one instance collected per pass.
const MAX_LOG: usize = crate::runtime::MAX_STEPS_LOADED;

impl Runtime {
    /// One GC pass (see the module docs).
    pub async fn gc(&self) -> Result<GcReport> {
        let mut report = GcReport::default();
        let owner = uuid::Uuid::new_v4().to_string();
        if !self.acquire_gc_lease(&owner).await? {
            report.skipped = true;
            return Ok(report);
        }
        let result = self.gc_pass(&mut report).await;
        self.release_gc_lease(&owner).await;
        result.map(|()| report)
    }

    /// A GC pass that scans every intent shard instead of the finished queue:
    /// O(intents kept). The only pass for stores without atomic batches; for
    /// others, a repair tool for instances that finished before the queue's
    /// reach (see [`INITIAL_LOOKBACK_BUCKETS`]).
    pub async fn gc_full(&self) -> Result<GcReport> {
        let mut report = GcReport::default();
        let owner = uuid::Uuid::new_v4().to_string();
        if !self.acquire_gc_lease(&owner).await? {
            report.skipped = true;
            return Ok(report);
        }
        let result = self.scan_intents_pass(&mut report).await;
        self.release_gc_lease(&owner).await;
        result.map(|()| report)
    }

    async fn gc_pass(&self, report: &mut GcReport) -> Result<()> {
        if !self.intents().indexed() {
            return self.scan_intents_pass(report).await;
        }
        let now = self.now_ms();
        let cutoff = now.saturating_sub(self.config().gc_window.as_millis() as u64);
        // Collect every instance in the buckets wholly before the cutoff.
        self.walk_finished_queue("collect", cutoff, report, false).await?;
        if let Some(retention) = self.config().tombstone_retention {
            let tomb_cutoff = now.saturating_sub(retention.as_millis() as u64).min(cutoff);
            self.walk_finished_queue("tombstones", tomb_cutoff, report, true).await?;
        }
        self.delete_unlinked_rows(cutoff, report).await
    }

    /// Process the finished-queue entries after the named cursor that finished
    /// at or before `cutoff`: collect each instance, or (`tombstones`) delete
    /// its tombstone and queue entry. The cursor advances past whole buckets
    /// only; the bucket holding `cutoff` is re-read by the next pass.
    async fn walk_finished_queue(
        &self,
        cursor: &str,
        cutoff: u64,
        report: &mut GcReport,
        tombstones: bool,
    ) -> Result<()> {
        let last = cutoff / layout::FINISHED_BUCKET_MS;
        let cursor_key = layout::gc_cursor_key(cursor);
        let done_through = self
            .retry()
            .run(|| self.store().get(&cursor_key))
            .await?
            .and_then(|c| c.get("bucket").and_then(Value::as_u64));
        let first = match done_through {
            Some(b) => b + 1,
            None => last.saturating_sub(INITIAL_LOOKBACK_BUCKETS),
        };
        let keep_queue = !tombstones && self.config().tombstone_retention.is_some();
        for bucket in (first..=last).take(MAX_BUCKETS_PER_PASS) {
            let partition = layout::finished_partition(bucket);
            let entries = self.retry().run(|| self.store().scan_all(&layout::INDEX, &partition, MAX_LOG)).await?;
            let partial = bucket == last;
            for (sort, queued) in entries {
                if partial && queued.get("at").and_then(Value::as_u64).is_none_or(|at| at > cutoff) {
                    continue;
                }
                report.scanned += 1;
                let id = InstanceId::from_stored(
                    String::from_utf8(sort.clone())
                        .map_err(|_| Error::Corrupt("queued instance id is not UTF-8".into()))?,
                );
                let key = self.intents().key(&id);
                if let Some(intent) = self.intents().get(&id).await? {
                    if tombstones {
                        // Normally compacted long ago; if the collect walk never reached it, collect now.
                        self.collect_intent(&key, &id, &intent, report).await?;
                        let cond = [Condition::AttrExists(attr::COMPACTED.into())];
                        match self.retry().run(|| self.store().delete(&key, &cond)).await {
                            Ok(true) => report.tombstones_deleted += 1,
                            Ok(false) => {}
                            Err(e) if e.is_condition_failed() => {}
                            Err(e) => return Err(e.into()),
                        }
                    } else {
                        self.collect_intent(&key, &id, &intent, report).await?;
                    }
                }
                if !keep_queue {
                    let qkey = Key::new(layout::INDEX.clone(), partition.clone(), sort);
                    self.retry().run(|| self.store().delete(&qkey, &[])).await?;
                }
            }
            if !partial {
                let mark = Item::new().with("bucket", bucket);
                self.retry().run(|| self.store().put(&cursor_key, mark.clone(), PutMode::Overwrite)).await?;
            }
        }
        Ok(())
    }

    /// Collect one finished, not yet compacted intent and compact it.
    async fn collect_intent(&self, key: &Key, id: &InstanceId, intent: &Item, report: &mut GcReport) -> Result<()> {
        let st = intent.get_str(attr::STATUS);
        if (st != Some(status::DONE) && st != Some(status::FAILED)) || intent.get(attr::COMPACTED).is_some() {
            return Ok(());
        }
        let touched = intent.get(attr::TOUCHED).cloned().unwrap_or(Value::Null);
        self.collect_instance(id, &touched, report).await?;
        let cond = [Condition::AttrEquals(attr::STATUS.into(), json!(st))];
        let muts = [
            Mutation::Remove(attr::INPUT.into()),
            Mutation::Remove(attr::TOUCHED.into()),
            Mutation::Set(attr::COMPACTED.into(), json!(true)),
        ];
        self.retry().run(|| self.store().update(key, &cond, &muts)).await?;
        Ok(())
    }

    async fn scan_intents_pass(&self, report: &mut GcReport) -> Result<()> {
        let now = self.now_ms();
        let cutoff = now.saturating_sub(self.config().gc_window.as_millis() as u64);
        let tombstone_cutoff = self.config().tombstone_retention.map(|r| now.saturating_sub(r.as_millis() as u64));
        for shard in 0..self.intents().shards() {
            let partition = layout::intent_partition(shard);
            let mut after = None;
            loop {
                let store = self.store();
                let page = self
                    .retry()
                    .run(|| store.scan(&layout::INTENTS, &partition, PageRequest { after: after.clone(), limit: 500 }))
                    .await?;
                report.scanned += page.items.len();
                for (sort, item) in &page.items {
                    let st = item.get_str(attr::STATUS);
                    if st != Some(status::DONE) && st != Some(status::FAILED) {
                        continue;
                    }
                    let finished = item.get(attr::FINISHED_AT).and_then(Value::as_u64).unwrap_or(u64::MAX);
                    let key = Key::new(layout::INTENTS.clone(), partition.clone(), sort.clone());
                    if item.get(attr::COMPACTED).is_some() {
                        if tombstone_cutoff.is_some_and(|c| finished <= c) {
                            let cond = [Condition::AttrExists(attr::COMPACTED.into())];
                            if self.retry().run(|| self.store().delete(&key, &cond)).await.is_ok() {
                                report.tombstones_deleted += 1;
                            }
                        }
                        continue;
                    }
                    if finished > cutoff {
                        continue;
                    }
                    let id = InstanceId::from_stored(
                        String::from_utf8(sort.clone())
                            .map_err(|_| Error::Corrupt("intent key is not UTF-8".into()))?,
                    );
                    self.collect_intent(&key, &id, item, report).await?;
                }
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
        }
        self.delete_unlinked_rows(cutoff, report).await
    }

    /// Remove an instance's write-log entries and operation log, and those of
    /// the instances it called synchronously.
    fn collect_instance<'a>(
        &'a self,
        id: &'a InstanceId,
        touched: &'a Value,
        report: &'a mut GcReport,
    ) -> futures_util::future::BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            for t in touched.as_array().map(Vec::as_slice).unwrap_or_default() {
                let (Some(p), Some(row_id), Some(entry)) = (
                    t.get(0).and_then(Value::as_str).and_then(layout::unhex),
                    t.get(1).and_then(Value::as_str),
                    t.get(2).and_then(Value::as_str),
                ) else {
                    return Err(Error::Corrupt(format!("touched entry of {id} is malformed: {t}")));
                };
                self.remove_write_entry(&p, row_id, entry, report).await?;
            }
            let partition = id.as_str().as_bytes();
            let entries = self.retry().run(|| self.store().scan_all(&layout::OPLOG, partition, MAX_LOG)).await?;
            for (sort, item) in entries {
                if matches!(oplog::entry_spec(&item), Ok(spec) if spec.kind == OpKind::Invoke)
                    && let Some(callee) = item.get(oplog::attr::CALLEE).and_then(Value::as_str)
                {
                    let callee = InstanceId::from_stored(callee.to_string());
                    let touched = item.get(oplog::attr::TOUCHED).cloned().unwrap_or(Value::Null);
                    self.collect_instance(&callee, &touched, report).await?;
                }
                let key = Key::new(layout::OPLOG.clone(), partition.to_vec(), sort);
                if self.retry().run(|| self.store().delete(&key, &[])).await? {
                    report.log_entries_deleted += 1;
                }
            }
            report.instances_collected += 1;
            Ok(())
        })
    }

    async fn remove_write_entry(
        &self,
        partition: &[u8],
        row_id: &str,
        entry: &str,
        report: &mut GcReport,
    ) -> Result<()> {
        let key = layout::row_key(partition, row_id);
        let cond = [Condition::EntryExists { map: row::LOG.into(), entry: entry.into() }];
        let muts = [
            Mutation::RemoveEntry { map: row::LOG.into(), entry: entry.into() },
            Mutation::Add(row::COLLECTED.into(), 1),
        ];
        let item = match self.retry().run(|| self.store().update(&key, &cond, &muts)).await {
            Ok(item) => item,
            Err(e) if e.is_condition_failed() || e.kind() == crate::store::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        report.write_entries_removed += 1;
        let fully_collected = item.get_i64(row::COLLECTED).unwrap_or(0) >= item.get_i64(row::COUNT).unwrap_or(i64::MAX)
            && item.get(row::LOG).and_then(Value::as_object).is_none_or(|m| m.is_empty());
        if row_id != HEAD_ROW && item.get(row::NEXT).is_some() && fully_collected {
            self.unlink(partition, row_id, &item, report).await?;
        }
        Ok(())
    }

    /// Bypass a fully collected middle row: its predecessor points past it.
    async fn unlink(&self, partition: &[u8], row_id: &str, item: &Item, report: &mut GcReport) -> Result<()> {
        let Some(next) = item.get(row::NEXT).cloned() else { return Ok(()) };
        let chain = self.daal().load_chain(partition).await?;
        let Some(pos) = chain.order.iter().position(|r| r == row_id) else { return Ok(()) };
        let Some(prev) = pos.checked_sub(1).map(|p| chain.order[p].clone()) else { return Ok(()) };
        let prev_key = layout::row_key(partition, &prev);
        let cond = [Condition::AttrEquals(row::NEXT.into(), json!(row_id))];
        let muts = [Mutation::Set(row::NEXT.into(), next)];
        match self.retry().run(|| self.store().update(&prev_key, &cond, &muts)).await {
            Ok(_) => {}
            Err(e) if e.is_condition_failed() => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let now = self.now_ms();
        let key = layout::row_key(partition, row_id);
        let mark = [Mutation::Set(row::UNLINKED_AT.into(), json!(now))];
        self.retry().run(|| self.store().update(&key, &[], &mark)).await?;
        let mut sort = layout::hex(partition).into_bytes();
        sort.push(b'/');
        sort.extend_from_slice(row_id.as_bytes());
        let queued = Item::new().with("p", layout::hex(partition)).with("r", row_id).with("at", now);
        let qkey = Key::new(layout::META.clone(), layout::UNLINKED_QUEUE.to_vec(), sort);
        self.retry().run(|| self.store().put(&qkey, queued.clone(), PutMode::Overwrite)).await?;
        report.rows_unlinked += 1;
        Ok(())
    }

    async fn delete_unlinked_rows(&self, cutoff: u64, report: &mut GcReport) -> Result<()> {
        let queued = self.retry().run(|| self.store().scan_all(&layout::META, layout::UNLINKED_QUEUE, MAX_LOG)).await?;
        for (sort, item) in queued {
            if item.get("at").and_then(Value::as_u64).unwrap_or(u64::MAX) > cutoff {
                continue;
            }
            let (Some(p), Some(r)) = (item.get_str("p").and_then(layout::unhex), item.get_str("r")) else {
                return Err(Error::Corrupt("malformed unlinked-row queue entry".into()));
            };
            let key = layout::row_key(&p, r);
            let cond = [Condition::AttrExists(row::UNLINKED_AT.into())];
            if self.retry().run(|| self.store().delete(&key, &cond)).await.is_ok() {
                report.rows_deleted += 1;
            }
            let qkey = Key::new(layout::META.clone(), layout::UNLINKED_QUEUE.to_vec(), sort);
            self.retry().run(|| self.store().delete(&qkey, &[])).await?;
        }
        Ok(())
    }

    async fn release_gc_lease(&self, owner: &str) {
        let lease = layout::gc_lease_key();
        let _ = self.store().delete(&lease, &[Condition::AttrEquals("owner".into(), json!(owner))]).await;
    }

    async fn acquire_gc_lease(&self, owner: &str) -> Result<bool> {
        let key = layout::gc_lease_key();
        let now = self.now_ms();
        let until = now + self.config().lease.as_millis() as u64 * 10;
        let item = Item::new().with("owner", owner).with("until", until);
        let current = match self.retry().run(|| self.store().put(&key, item.clone(), PutMode::Create)).await {
            Ok(()) => return Ok(true),
            Err(e) if e.is_condition_failed() => match e.into_current() {
                Some(c) => c,
                None => match self.store().get(&key).await? {
                    Some(c) => c,
                    None => return Ok(false),
                },
            },
            Err(e) => return Err(e.into()),
        };
        if current.get_str("owner") == Some(owner) {
            return Ok(true);
        }
        let held_until = current.get("until").cloned().unwrap_or(Value::Null);
        if held_until.as_u64().is_some_and(|u| u > now) {
            return Ok(false);
        }
        let cond = [Condition::AttrEquals("until".into(), held_until)];
        let muts = [Mutation::Set("owner".into(), json!(owner)), Mutation::Set("until".into(), json!(until))];
        match self.retry().run(|| self.store().update(&key, &cond, &muts)).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_condition_failed() => Ok(e.current().and_then(|c| c.get_str("owner")) == Some(owner)),
            Err(e) => Err(e.into()),
        }
    }
}
