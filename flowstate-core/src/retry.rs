//! Bounded retries of store calls.
//!
//! Every call the engine makes is idempotent by its own condition (an entry
//! that must be absent, an owner that must match, ...), so retrying after an
//! `Indeterminate` reply is safe: if the first attempt applied, the retry's
//! condition fails and the call site reads the outcome from the current item.

use std::time::Duration;

use crate::store::{StoreError, StoreResult};

/// How often and how patiently transient store errors are retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all (1 = no retry).
    pub attempts: u32,
    /// Pause before the first retry; doubled each time.
    pub base_delay: Duration,
    /// Longest pause.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { attempts: 5, base_delay: Duration::from_millis(5), max_delay: Duration::from_millis(500) }
    }
}

impl RetryPolicy {
    /// No retries.
    pub fn none() -> Self {
        Self { attempts: 1, ..Self::default() }
    }

    /// Run `op`, retrying transient and indeterminate failures.
    pub async fn run<T, F, Fut>(&self, mut op: F) -> StoreResult<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = StoreResult<T>>,
    {
        let mut delay = self.base_delay;
        let mut attempt = 1;
        loop {
            match op().await {
                Err(e) if attempt < self.attempts && retryable(&e) => {
                    tracing::debug!(error = %e, attempt, "retrying store call");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.max_delay);
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

fn retryable(e: &StoreError) -> bool {
    e.kind().is_retryable() || e.kind().may_have_applied()
}
