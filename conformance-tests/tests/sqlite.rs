//! The conformance suite on SQLite, with the default (durable) settings.

use std::sync::Arc;

use backend_sqlite::{SqliteConfig, SqliteStore};
use conformance_tests::{guarded, random_namespace};
use flowstate_core::store::StateStore;

/// A fresh database file in its own temporary directory and a random
/// namespace per case; the directory lives as long as the store.
async fn sqlite_store() -> Arc<dyn StateStore> {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = SqliteConfig::new(dir.path().join("flowstate.db")).with_namespace(random_namespace().to_string());
    let store = SqliteStore::open(config).await.expect("open sqlite store");
    Arc::new(guarded(store, dir))
}

conformance_tests::conformance_tests!(setup = sqlite_store);
