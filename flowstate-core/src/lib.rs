//! Flowstate core: exactly-once stateful serverless functions on your own database.
//!
//! - [`store`]: the `StateStore` contract every backend implements.
#![cfg_attr(feature = "testing", doc = "- [`testing`]: round-trip counting and fault-injecting store wrappers.")]

pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
