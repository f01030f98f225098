//! Calls between functions, and the [`Invoker`] that carries them.
//!
//! **SyncInvoke** (caller 1 + callee 1 round trips of bookkeeping): the caller
//! creates its log entry for the step, naming the callee's deterministic
//! instance id; that entry *is* the callee's intent (Halfmoon's trick), and the
//! callee's result is written into it as its completion (the callback). A
//! re-executed caller finds the result there and never re-runs a finished
//! callee; an unfinished callee is re-driven through its caller's replay.
//!
//! **AsyncInvoke**: the caller logs the callee id, registers the callee's
//! intent, and only then dispatches, so the collector finishes the callee if
//! anything crashes after the log entry.

use std::fmt::Debug;

use async_trait::async_trait;
use serde_json::Value;

use crate::error::Result;
use crate::intent::Outcome;
use crate::layout::InstanceId;
use crate::runtime::Runtime;

/// How a call relates to its caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallKind {
    /// A top-level instance, or an asynchronously called one: it has an intent.
    Intent,
    /// A synchronously called instance: its intent is its caller's log entry.
    Sync {
        /// The calling instance.
        caller: InstanceId,
        /// The caller's step that made the call.
        step: u32,
        /// The caller's entry already existed: the callee may have run before.
        replay: bool,
        /// When the caller's entry was created (the callee's start time).
        started_at: u64,
        /// Until when the caller's lease is known to be valid (ms).
        lease_valid_until: u64,
    },
}

/// One function call to carry out.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    /// The registered function name.
    pub function: String,
    /// Its JSON input.
    pub input: Value,
    /// The callee's instance id.
    pub instance: InstanceId,
    /// Its relation to the caller.
    pub kind: CallKind,
}

/// Carries calls to wherever the callee runs: in-process now; HTTP or AWS
/// Lambda invokers implement the same trait.
#[async_trait]
pub trait Invoker: Debug + Send + Sync + 'static {
    /// Run a call to completion and return its outcome (SyncInvoke).
    async fn call(&self, runtime: &Runtime, call: Call) -> Result<Outcome>;

    /// Start a call without waiting for it (AsyncInvoke). Its intent is
    /// already registered, so a lost dispatch is recovered by the collector.
    async fn dispatch(&self, runtime: &Runtime, call: Call) -> Result<()>;
}

/// Runs callees in this process, on the calling runtime.
#[derive(Clone, Copy, Debug, Default)]
pub struct InProcessInvoker;

#[async_trait]
impl Invoker for InProcessInvoker {
    async fn call(&self, runtime: &Runtime, call: Call) -> Result<Outcome> {
        runtime.run_call(call).await
    }

    async fn dispatch(&self, runtime: &Runtime, call: Call) -> Result<()> {
        let runtime = runtime.clone();
        tokio::spawn(async move {
            let instance = call.instance.clone();
            if let Err(e) = runtime.run_call(call).await {
                tracing::warn!(%instance, error = %e, "async instance failed; the collector will retry it");
            }
        });
        Ok(())
    }
}
