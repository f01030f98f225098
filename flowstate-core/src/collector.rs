//! The intent collector: finds instances that are not done and whose lease
//! has expired (their execution crashed or stalled) and re-drives them with
//! the same instance id; replay makes this safe. Unlike Beldi's collector it
//! takes over with a conditional lease renewal, so two collectors never
//! restart one instance at once, and a restarted instance gets a fresh lease.
//!
//! Cost per pass: one paged scan of each intent shard, i.e. O(intents kept:
//! running + finished within the GC window + tombstones); the data and log
//! tables are never scanned.

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
}

impl Runtime {
    /// One collector pass: re-drive every unfinished instance whose lease expired.
    pub async fn recover(&self) -> Result<RecoveryReport> {
        let mut report = RecoveryReport::default();
        let now = self.now_ms();
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
                let mut expired = Vec::new();
                for (sort, item) in &page.items {
                    let running = item.get_str(attr::STATUS) == Some(status::RUNNING);
                    let lease = item.get(attr::LEASE_UNTIL).and_then(Value::as_u64).unwrap_or(0);
                    if running && lease <= now {
                        let id = String::from_utf8(sort.clone())
                            .map_err(|_| Error::Corrupt("intent key is not UTF-8".into()))?;
                        let function = item
                            .get_str(attr::FUNCTION)
                            .ok_or_else(|| Error::Corrupt(format!("intent {id:?} has no function")))?
                            .to_string();
                        let input = item.get(attr::INPUT).cloned().unwrap_or(Value::Null);
                        expired.push((InstanceId::from_stored(id), function, input));
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
