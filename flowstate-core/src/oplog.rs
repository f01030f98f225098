//! The operation log: one entry per `(instance, step)` for reads, side-effect
//! steps, deterministic values and invocations. An entry is created
//! put-if-absent, so the first execution to record a step wins and every other
//! execution (a replay, or a concurrent duplicate) adopts the logged result.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::layout::InstanceId;
use crate::store::Item;

/// Attribute names of an operation-log entry.
pub mod attr {
    /// The operation kind ([`super::OpKind::as_str`]).
    pub const KIND: &str = "k";
    /// What the operation targeted: `[table, key]`, a step name or a callee.
    pub const NAME: &str = "name";
    /// The logged value (read value, step result, now/uuid/random).
    pub const VALUE: &str = "v";
    /// When the entry was created (ms since epoch).
    pub const AT: &str = "at";
    /// Invoke: the callee's instance id.
    pub const CALLEE: &str = "callee";
    /// Invoke: the callee's input.
    pub const INPUT: &str = "input";
    /// Invoke: the callee's outcome, `{"ok": v}` or `{"err": msg}`.
    pub const RESULT: &str = "result";
    /// Invoke: DAAL entries the callee wrote, for GC.
    pub const TOUCHED: &str = "touched";
    /// Invoke: when the callee finished.
    pub const DONE_AT: &str = "done_at";
}

/// The kind of a logged operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// `ctx.read`
    Read,
    /// `ctx.write` (logged in the data row)
    Write,
    /// `ctx.cond_write` (logged in the data row)
    CondWrite,
    /// `ctx.step`
    Step,
    /// `ctx.invoke`
    Invoke,
    /// `ctx.invoke_async`
    InvokeAsync,
    /// `ctx.now`
    Now,
    /// `ctx.uuid`
    Uuid,
    /// `ctx.random`
    Random,
}

impl OpKind {
    const ALL: [OpKind; 9] = [
        Self::Read,
        Self::Write,
        Self::CondWrite,
        Self::Step,
        Self::Invoke,
        Self::InvokeAsync,
        Self::Now,
        Self::Uuid,
        Self::Random,
    ];

    /// The stored name of the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::CondWrite => "cond_write",
            Self::Step => "step",
            Self::Invoke => "invoke",
            Self::InvokeAsync => "invoke_async",
            Self::Now => "now",
            Self::Uuid => "uuid",
            Self::Random => "random",
        }
    }

    /// Parse a stored kind name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an operation is: its kind and its target. Replays compare these.
#[derive(Clone, Debug, PartialEq)]
pub struct OpSpec {
    /// The kind.
    pub kind: OpKind,
    /// The target (`[table, key]`, step name, callee name, or null).
    pub name: Value,
}

impl OpSpec {
    /// A spec from a kind and a target.
    pub fn new(kind: OpKind, name: impl Into<Value>) -> Self {
        Self { kind, name: name.into() }
    }
}

impl fmt::Display for OpSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Value::Null => write!(f, "{}", self.kind),
            name => write!(f, "{} {}", self.kind, name),
        }
    }
}

/// A new entry recording `spec` with `value`.
pub(crate) fn new_entry(spec: &OpSpec, value: Value, at: u64) -> Item {
    Item::new()
        .with(attr::KIND, spec.kind.as_str())
        .with(attr::NAME, spec.name.clone())
        .with(attr::VALUE, value)
        .with(attr::AT, at)
}

/// The spec an entry recorded; `Corrupt` if it is not a Flowstate entry.
pub(crate) fn entry_spec(item: &Item) -> Result<OpSpec> {
    let kind = item.get_str(attr::KIND).and_then(OpKind::parse).ok_or_else(|| {
        Error::Corrupt(format!("operation-log entry without a valid kind: {:?}", item.get(attr::KIND)))
    })?;
    Ok(OpSpec { kind, name: item.get(attr::NAME).cloned().unwrap_or(Value::Null) })
}

/// Fail with `NonDeterministic` unless `item` recorded `expected`.
pub(crate) fn check_entry(instance: &InstanceId, step: u32, item: &Item, expected: &OpSpec) -> Result<()> {
    let logged = entry_spec(item)?;
    if &logged == expected {
        Ok(())
    } else {
        Err(Error::NonDeterministic {
            instance: instance.to_string(),
            step,
            logged: logged.to_string(),
            requested: expected.to_string(),
        })
    }
}

/// The log of one instance as loaded at the start of a re-execution.
#[derive(Clone, Debug, Default)]
pub(crate) struct LoadedLog {
    pub entries: BTreeMap<u32, Item>,
}

impl LoadedLog {
    /// Highest logged step, if any: a re-execution below it must find every
    /// one of its operations already recorded somewhere.
    pub fn high_water(&self) -> Option<u32> {
        self.entries.keys().next_back().copied()
    }
}

/// An invocation outcome as stored: `{"ok": value}` or `{"err": message}`.
pub(crate) fn encode_outcome(outcome: &std::result::Result<Value, String>) -> Value {
    match outcome {
        Ok(v) => serde_json::json!({ "ok": v }),
        Err(e) => serde_json::json!({ "err": e }),
    }
}

/// Inverse of [`encode_outcome`].
pub(crate) fn decode_outcome(v: &Value) -> Result<std::result::Result<Value, String>> {
    if let Some(ok) = v.get("ok") {
        Ok(Ok(ok.clone()))
    } else if let Some(err) = v.get("err").and_then(Value::as_str) {
        Ok(Err(err.to_string()))
    } else {
        Err(Error::Corrupt(format!("stored outcome is neither ok nor err: {v}")))
    }
}
