//! The shared suite every Flowstate [`StateStore`] backend runs.
//!
//! A case is a plain `pub async fn case_name(store: Arc<dyn StateStore>)` that
//! panics on a violation of the contract. [`conformance_tests!`] stamps out one
//! `#[tokio::test]` per case for a backend's store factory, so a failure names
//! both the backend (the test file) and the case:
//!
//! ```
//! // tests/memory.rs
//! use std::sync::Arc;
//! use flowstate_core::store::StateStore;
//!
//! /// A fresh, empty store (fresh random namespace) on every call.
//! async fn memory_store() -> Arc<dyn StateStore> {
//!     Arc::new(backend_memory::MemoryStore::new())
//! }
//!
//! conformance_tests::conformance_tests!(setup = memory_store);
//! # fn main() {}
//! ```
//!
//! Cases read [`Capabilities`] to decide
//! what to expect (batch support, current item on a failed condition, ...).
//!
//! - [`store_cases`]: the storage primitives, including a property test
//!   against a pure model of the contract.
//! - [`engine_cases`]: exactly-once engine scenarios on top of a store.

use flowstate_core::store::{Namespace, StateStore};

pub mod engine_cases;
pub mod intercept;
pub mod measure;
mod model;
pub mod store_cases;
pub mod workflows;

#[doc(hidden)]
pub use intercept::{Hooks, Intercept, KeepAlive, guarded};
pub use tokio as __tokio;

/// A fresh random namespace (`ns_` + 32 hex digits), so runs and cases never
/// share data even on one server.
pub fn random_namespace() -> Namespace {
    Namespace::new(format!("ns_{}", uuid::Uuid::new_v4().simple())).expect("valid namespace")
}

/// Stamp out the whole suite for one backend.
///
/// `setup` names an `async fn() -> Arc<dyn StateStore>` (in scope where the
/// macro is invoked) returning a fresh, empty store (a fresh random
/// namespace) on every call. Expands to a module `conformance` with one
/// submodule per case list (`store_cases`, `engine_cases`) holding one
/// multi-threaded `#[tokio::test]` per case.
///
/// `skip_unless = expr` (optional, for service-backed backends): `expr` is a
/// `Result<(), String>` evaluated in each case before the factory; `Err(reason)`
/// prints `skipping: reason` and passes, or fails when `FLOWSTATE_TEST_REQUIRE=1`
/// (see [`should_run`] and [`env_configured`]).
#[macro_export]
macro_rules! conformance_tests {
    (setup = $factory:path) => {
        #[allow(unused_imports)]
        mod conformance {
            use super::*;
            $crate::__store_cases!($factory);
            $crate::__engine_cases!($factory);
        }
    };
    (setup = $factory:path, skip_unless = $ready:expr $(,)?) => {
        #[allow(unused_imports)]
        mod conformance {
            use super::*;
            /// The factory, or `None` when the case is skipped.
            async fn __factory_unless_skipped() -> ::std::option::Option<$crate::__CaseArc> {
                if $crate::should_run($ready) {
                    ::std::option::Option::Some($factory().await)
                } else {
                    ::std::option::Option::None
                }
            }
            $crate::__store_cases!(__factory_unless_skipped);
            $crate::__engine_cases!(__factory_unless_skipped);
        }
    };
}

/// Whether a service-backed case runs: `Ok` runs it; `Err(reason)` prints
/// `skipping: reason` and returns `false`, or panics when
/// `FLOWSTATE_TEST_REQUIRE=1` (the test script sets it, so a missing server
/// fails there instead of passing silently).
pub fn should_run(ready: Result<(), String>) -> bool {
    match ready {
        Ok(()) => true,
        Err(reason) if std::env::var("FLOWSTATE_TEST_REQUIRE").as_deref() == Ok("1") => {
            panic!("{reason} (FLOWSTATE_TEST_REQUIRE=1: service-backed tests must run)")
        }
        Err(reason) => {
            #[allow(clippy::print_stdout)]
            {
                println!("skipping: {reason}");
            }
            false
        }
    }
}

/// `Ok` when environment variable `var` is set and not empty, else
/// `Err("set VAR")`: the usual `skip_unless` for a server URL.
pub fn env_configured(var: &str) -> Result<(), String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(()),
        _ => Err(format!("set {var}")),
    }
}

/// The value of `var` (a server URL or endpoint) when a service-backed test
/// should run: `None` after printing `skipping: set VAR` when it is unset,
/// and a panic instead under `FLOWSTATE_TEST_REQUIRE=1` (see [`should_run`]).
/// `also` names further variables that must be set too.
pub fn service_var(var: &str, also: &[&str]) -> Option<String> {
    let ready = also.iter().try_fold((), |(), v| env_configured(v)).and_then(|()| env_configured(var));
    should_run(ready).then(|| std::env::var(var).expect("checked by env_configured"))
}

/// The store a case runs on.
#[doc(hidden)]
pub type __CaseArc = std::sync::Arc<dyn StateStore>;

/// What a factory may return: a store, or `None` for a skipped case.
#[doc(hidden)]
pub trait __CaseStore {
    fn __into_case_store(self) -> Option<std::sync::Arc<dyn StateStore>>;
}

impl __CaseStore for std::sync::Arc<dyn StateStore> {
    fn __into_case_store(self) -> Option<std::sync::Arc<dyn StateStore>> {
        Some(self)
    }
}

impl __CaseStore for Option<std::sync::Arc<dyn StateStore>> {
    fn __into_case_store(self) -> Option<std::sync::Arc<dyn StateStore>> {
        self
    }
}

/// One `#[tokio::test]` per listed case of module `$crate::$module`. The
/// tokio re-export is named by path (`crate = ...` takes a string, not
/// `$crate`), so callers must depend on this crate as `conformance_tests`.
#[doc(hidden)]
#[macro_export]
macro_rules! __stamp_cases {
    ($factory:path; $module:ident; $($case:ident),* $(,)?) => {
        #[allow(unused_imports)]
        mod $module {
            use super::*;
            $(
                #[$crate::__tokio::test(flavor = "multi_thread", worker_threads = 2, crate = "::conformance_tests::__tokio")]
                async fn $case() {
                    let ::std::option::Option::Some(store) = $crate::__CaseStore::__into_case_store($factory().await) else {
                        return;
                    };
                    $crate::$module::$case(store).await;
                }
            )*
        }
    };
}
