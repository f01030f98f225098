//! The conformance suite on Cosmos DB through the SDK's in-process emulator
//! (`azure_data_cosmos` feature `__internal_in_memory_emulator`, pinned with
//! the SDK at `=1.0.0`, dev-only): the whole SDK pipeline (auth, routing,
//! retries, session tokens, query execution) runs; only the HTTP I/O is
//! replaced by an in-memory account. No server, no port: it runs in plain
//! `cargo test`.

use std::sync::Arc;

use azure_data_cosmos::CosmosRuntimeBuilder;
use azure_data_cosmos_driver::in_memory_emulator::{
    ConsistencyLevel, InMemoryEmulatorHttpClient, VirtualAccountConfig, VirtualRegion,
};
use backend_cosmos::{CosmosConfig, CosmosStore};
use conformance_tests::{guarded, random_namespace};
use flowstate_core::store::StateStore;

/// The emulated account's gateway (never resolved: the emulator answers).
const GATEWAY: &str = "https://eastus.emulator.local";

/// A fresh emulated account (Strong consistency, one region) per case, with
/// the store's database and container created through the SDK's control
/// plane like on a real account. The emulator lives as long as the store.
async fn cosmos_emulator_store() -> Arc<dyn StateStore> {
    let region = VirtualRegion::new("East US", GATEWAY.parse().expect("gateway URL"));
    let account =
        VirtualAccountConfig::new(vec![region]).expect("emulator account").with_consistency(ConsistencyLevel::Strong);
    let emulator = Arc::new(InMemoryEmulatorHttpClient::new(account));
    let runtime = CosmosRuntimeBuilder::from(emulator.runtime_builder()).build().await.expect("emulator runtime");
    let config =
        CosmosConfig::new(format!("{GATEWAY}/"), "dGVzdGtleQ==").with_namespace(random_namespace().to_string());
    let store = CosmosStore::open_with_runtime(config, runtime).await.expect("open cosmos store on the emulator");
    Arc::new(guarded(store, EmulatorGuard(emulator)))
}

/// Keeps the emulated account alive with the store.
struct EmulatorGuard(#[allow(dead_code)] Arc<InMemoryEmulatorHttpClient>);

impl std::fmt::Debug for EmulatorGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmulatorGuard")
    }
}

conformance_tests::conformance_tests!(setup = cosmos_emulator_store);
