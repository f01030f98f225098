//! Flowstate: exactly-once stateful serverless functions on your own database.
//!
//! Write a handler as an async function of a [`Context`] and a serde input;
//! do its state access and side effects through the context; every effect
//! then happens once, even when the function is retried, killed mid-way or
//! delivered twice. The logs live in the store you choose by URL.
//!
//! ```rust,standalone_crate
//! use flowstate::{Context, Predicate, Result};
//!
//! // Move `amount` between accounts: exactly once per instance id, however
//! // often the call is retried, killed mid-way or delivered twice.
//! async fn transfer(ctx: Context, (from, to, amount): (String, String, i64)) -> Result<bool> {
//!     let balance: i64 = ctx.read("accounts", &from).await?.unwrap_or(0);
//!     let enough = Predicate::value().eq(balance).and(Predicate::value().ge(amount));
//!     if !ctx.cond_write("accounts", &from, &(balance - amount), enough).await? {
//!         return Ok(false); // insufficient funds: recorded, and replayed on every retry
//!     }
//!     let credit: i64 = ctx.read("accounts", &to).await?.unwrap_or(0);
//!     ctx.write("accounts", &to, &(credit + amount)).await?;
//!     // A side effect runs once; `key` is an idempotency key for the external API.
//!     ctx.step("email", |key| async move { send_receipt(&from, &key.to_string()).await }).await?;
//!     Ok(true)
//! }
//! # async fn send_receipt(_to: &str, _idempotency_key: &str) -> std::result::Result<(), String> { Ok(()) }
//! # async fn deposit(ctx: Context, (account, amount): (String, i64)) -> Result<()> {
//! #     ctx.write("accounts", &account, &amount).await
//! # }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! #   let dir = tempfile::tempdir()?;
//! #   std::env::set_current_dir(dir.path())?;
//!     let runtime = flowstate::open("sqlite://bank.db").await?
//! #       .register("deposit", deposit)
//!         .register("transfer", transfer)
//!         .build();
//! #   runtime.invoke::<_, ()>("deposit", &("alice", 100), Some("deposit-1")).await?;
//!     let moved: bool = runtime.invoke("transfer", &("alice", "bob", 30), Some("transfer-42")).await?;
//! #   assert!(moved);
//! #   // A duplicate delivery returns the recorded result and moves nothing.
//! #   let again: bool = runtime.invoke("transfer", &("alice", "bob", 30), Some("transfer-42")).await?;
//! #   assert!(again);
//! #   assert_eq!(runtime.peek("accounts", "alice").await?, Some(serde_json::json!(70)));
//! #   assert_eq!(runtime.peek("accounts", "bob").await?, Some(serde_json::json!(30)));
//!     Ok(())
//! }
//! ```
//!
//! # Choosing a store
//!
//! One Cargo feature per backend; the URL scheme picks one at run time:
//!
//! | feature | URL | store |
//! |---|---|---|
//! | `sqlite` (default) | `sqlite://PATH?synchronous=full&busy_timeout_ms=5000&namespace=NAME` | embedded SQLite file (WAL) |
//! | `postgres` | `postgres://user:password@host:5432/db?schema=flowstate&namespace=NAME&sslmode=...` | PostgreSQL |
//! | `dynamodb` | `dynamodb://?endpoint=http://127.0.0.1:8000&region=us-east-1&prefix=fs_` | Amazon DynamoDB (or LocalStack, moto) |
//! | `cosmos` | `cosmos://host:443?key=...&database=...&namespace=NAME` | Azure Cosmos DB |
//! | `spanner` | `spanner://projects/P/instances/I/databases/D?table=flowstate_items&namespace=NAME` (emulator: `SPANNER_EMULATOR_HOST`) | Google Cloud Spanner |
//! | `memory` | `memory://` | in-process, gone at exit (tests) |
//!
//! [`open_store`] returns an `Arc<dyn StateStore>`, [`open`] a
//! [`RuntimeBuilder`] on it; [`Settings`] adds engine settings and reads them
//! from the environment (`FLOWSTATE_STORE`, `FLOWSTATE_CONFIG`) or a TOML file.
//! A URL naming a backend this build lacks fails with
//! [`OpenError::NotCompiled`], which names the feature to enable. Secrets in
//! URLs never appear in `Debug`, `Display` or errors ([`StoreUrl`]).
//!
//! The `flowstate` binary (feature `cli`, on by default) runs the demo and
//! the operations commands: `flowstate demo`, `flowstate recover --store URL`,
//! `flowstate gc --store URL`, `flowstate inspect --store URL INSTANCE`.

mod error;
mod settings;
mod url;

pub use error::OpenError;
pub use settings::{DEFAULT_CONNECT_TIMEOUT, ENV_CONFIG, ENV_STORE, Settings, open, open_store, parse_duration};
pub use url::{Backend, StoreUrl, redact};

// The core's public API.
/// The engine crate itself, for everything not re-exported here.
pub use flowstate_core as core;
/// The `StateStore` contract, for writing or wrapping backends.
pub use flowstate_core::store;
/// Round-trip counting and fault-injecting store wrappers.
#[cfg(feature = "testing")]
pub use flowstate_core::testing;
pub use flowstate_core::{
    BackgroundTask, Call, CallKind, Clock, Config, Context, Error, GcReport, InProcessInvoker, InstanceId,
    InstanceReport, Invoker, ManualClock, Outcome, Predicate, RecoveryReport, Result, RetryPolicy, RowInfo, Runtime,
    RuntimeBuilder, StateStore, StepKey, SystemClock,
};

#[cfg(feature = "cosmos")]
pub use backend_cosmos::{CosmosConfig, CosmosStore};
#[cfg(feature = "dynamodb")]
pub use backend_dynamodb::{DynamoDbConfig, DynamoDbStore};
/// The in-memory reference store.
#[cfg(feature = "memory")]
pub use backend_memory::MemoryStore;
/// The PostgreSQL store and its settings.
#[cfg(feature = "postgres")]
pub use backend_postgres::{PostgresConfig, PostgresStore};
#[cfg(feature = "spanner")]
pub use backend_spanner::{SpannerConfig, SpannerStore};
/// The embedded SQLite store and its settings.
#[cfg(feature = "sqlite")]
pub use backend_sqlite::{SqliteConfig, SqliteStore, Synchronous};
