//! Flowstate core: exactly-once stateful serverless functions on your own
//! database, after the Beldi method (OSDI 2020).
//!
//! - [`store`]: the `StateStore` contract every backend implements.
//! - [`runtime`]: register handlers, invoke instances, recover, collect.
//! - [`context`]: what a handler does through: `read`, `write`,
//!   `cond_write`, `step`, `invoke`, `invoke_async`, `now`, `uuid`, `random`.
//! - [`daal`], [`oplog`], [`intent`], [`invoke`], [`collector`], [`gc`]:
//!   how exactly-once is achieved, one concept per module.
//! - [`url_params`]: the `?key=value` part of store URLs, parsed alike by every backend.
#![cfg_attr(feature = "testing", doc = "- [`testing`]: round-trip counting and fault-injecting store wrappers.")]

pub mod clock;
pub mod collector;
pub mod context;
pub mod daal;
pub mod error;
pub mod gc;
pub mod intent;
pub mod invoke;
pub mod layout;
pub mod oplog;
pub mod retry;
pub mod runtime;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod url_params;

pub use clock::{Clock, ManualClock, SystemClock};
pub use collector::{BackgroundTask, RecoveryReport};
pub use context::{Context, StepKey};
pub use error::{Error, Result};
pub use gc::GcReport;
pub use intent::Outcome;
pub use invoke::{Call, CallKind, InProcessInvoker, Invoker};
pub use layout::InstanceId;
pub use retry::RetryPolicy;
pub use runtime::{Config, InstanceReport, RowInfo, Runtime, RuntimeBuilder};
pub use store::{Predicate, StateStore};
