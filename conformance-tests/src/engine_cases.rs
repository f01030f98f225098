//! Exactly-once engine scenarios, run on every backend.
//!
//! PLACEHOLDER — owned by the engine work: add each scenario here as
//! `pub async fn name(store: Arc<dyn StateStore>)` and add its name to the
//! list in `__engine_cases!` below; [`conformance_tests!`](crate::conformance_tests)
//! already stamps out this list for every backend. The list is empty for now.

/// The engine case list (see the module docs).
#[doc(hidden)]
#[macro_export]
macro_rules! __engine_cases {
    ($factory:path) => {
        $crate::__stamp_cases!($factory; engine_cases;
            // add engine case names here, comma-separated
        );
    };
}
