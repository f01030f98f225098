//! The intent collector: finds instances that are not done and whose lease
//! has expired (their execution crashed or stalled) and re-drives them with
//! the same instance id; replay makes this safe. Unlike Beldi's collector it
//! takes over with a conditional lease renewal, so two collectors never
//! restart one instance at once, and a restarted instance gets a fresh lease.
//!
//! Cost per pass: where the store has atomic batches, the engine keeps a
//! running set (entered and left in the same batch as the intent's start and
//! finish), and a pass walks it: O(running instances), one intent read each.
//! Elsewhere a pass scans the intent shards: O(intents kept). The data and
//! log tables are never scanned.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::intent::{attr, status};
use crate::layout::{self, InstanceId};
use crate::runtime::Runtime;
use crate::store::{PageRequest, StateStore};

/// What one collector pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Intents looked at.
    pub scanned: usize,
    /// Unfinished intents whose lease had expired.
    pub expired: usize,
    /// Of those, re-driven to completion (success or recorded failure).
    pub completed: usize,
    /// Of those, taken over by someone else first.
    pub busy: usize,
    /// Of those, that failed again transiently (retried next pass).
    pub errors: usize,
    /// Expired instances of functions this runtime does not register, by
    /// function name: left for a runtime that does.
    pub unknown_functions: std::collections::BTreeMap<String, usize>,
}

impl Runtime {
    /// One collector pass: re-drive every unfinished instance whose lease expired.
    pub async fn recover(&self) -> Result<RecoveryReport> {
        let mut report = RecoveryReport::default();
        let now = self.now_ms();
        let indexed = self.intents().indexed();
        for shard in 0..self.intents().shards() {
            // With the index, walk the running set (O(running)); without it,
            // the intent shard itself (O(intents kept)).
            let (table, partition) = if indexed {
                (&*layout::INDEX, layout::running_partition(shard))
            } else {
                (&*layout::INTENTS, layout::intent_partition(shard))
            };
            let mut after = None;
            loop {
                let store = self.store();
                let page = self
                    .retry()
                    .run(|| store.scan(table, &partition, PageRequest { after: after.clone(), limit: 500 }))
                    .await?;
                report.scanned += page.items.len();
                let mut expired = Vec::new();
                for (sort, item) in &page.items {
                    let id = InstanceId::from_stored(
                        String::from_utf8(sort.clone())
                            .map_err(|_| Error::Corrupt("intent key is not UTF-8".into()))?,
                    );
                    let intent = if indexed {
                        match self.intents().get(&id).await? {
                            Some(intent) => intent,
                            None => {
                                self.drop_running_entry(table, &partition, sort).await?;
                                continue;
                            }
                        }
                    } else {
                        item.clone()
                    };
                    let status = intent.get_str(attr::STATUS);
                    if indexed && status != Some(status::RUNNING) {
                        self.drop_running_entry(table, &partition, sort).await?;
                        continue;
                    }
                    let lease = intent.get(attr::LEASE_UNTIL).and_then(Value::as_u64).unwrap_or(0);
                    if status == Some(status::RUNNING) && lease <= now {
                        let function = intent
                            .get_str(attr::FUNCTION)
                            .ok_or_else(|| Error::Corrupt(format!("intent of {id} has no function")))?
                            .to_string();
                        if !self.is_registered(&function) {
                            *report.unknown_functions.entry(function).or_default() += 1;
                            continue;
                        }
                        let input = intent.get(attr::INPUT).cloned().unwrap_or(Value::Null);
                        expired.push((id, function, input));
                    }
                }
                report.expired += expired.len();
                let results: Vec<Result<_>> = futures_util::stream::iter(expired)
                    .map(|(id, function, input)| {
                        let rt = self.clone();
                        async move { rt.run_instance(&function, input, &id, false).await }
                    })
                    .buffer_unordered(self.config().recovery_concurrency.max(1))
                    .collect()
                    .await;
                for r in results {
                    match r {
                        Ok(_) => report.completed += 1,
                        Err(Error::InstanceBusy(_)) => report.busy += 1,
                        Err(e) => {
                            tracing::warn!(error = %e, "recovery of an instance failed; next pass retries");
                            report.errors += 1;
                        }
                    }
                }
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
        }
        Ok(report)
    }

    /// Remove a running-set entry whose instance is finished or gone.
    async fn drop_running_entry(&self, table: &crate::store::TableName, partition: &[u8], sort: &[u8]) -> Result<()> {
        let key = crate::store::Key::new(table.clone(), partition.to_vec(), sort.to_vec());
        self.retry().run(|| self.store().delete(&key, &[])).await?;
        Ok(())
    }

    /// Run [`Runtime::recover`] every `every` in the background until the
    /// returned handle is dropped or stopped.
    pub fn spawn_collector(&self, every: Duration) -> BackgroundTask {
        let rt = self.clone();
        BackgroundTask(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match rt.recover().await {
                    Ok(r) if r.expired > 0 => tracing::info!(?r, "collector pass"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "collector pass failed"),
                }
            }
        }))
    }
}

impl Runtime {
    /// Run [`Runtime::gc`] every `every` in the background until the returned
    /// handle is dropped or stopped.
    pub fn spawn_gc(&self, every: Duration) -> BackgroundTask {
        let rt = self.clone();
        BackgroundTask(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match rt.gc().await {
                    Ok(r) if r.instances_collected > 0 || r.rows_deleted > 0 => tracing::info!(?r, "gc pass"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "gc pass failed"),
                }
            }
        }))
    }
}

/// A background loop; stops when dropped.
#[derive(Debug)]
pub struct BackgroundTask(tokio::task::JoinHandle<()>);

impl BackgroundTask {
    /// Stop the loop now.
    pub fn stop(self) {}
}

impl Drop for BackgroundTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}
