//! The conformance suite on the in-memory reference store.

use std::sync::Arc;

use backend_memory::MemoryStore;
use flowstate_core::store::StateStore;

/// A fresh, empty store per case.
async fn memory_store() -> Arc<dyn StateStore> {
    Arc::new(MemoryStore::new())
}

conformance_tests::conformance_tests!(setup = memory_store);
