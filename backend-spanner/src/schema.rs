//! The one table, created on first use.
//!
//! `open` probes the table with a one-row `Read` of the columns the store
//! uses. Only when Spanner answers that the table does not exist is the DDL
//! sent (through the database admin API), and `open` waits for the schema
//! change to finish. Two processes opening a fresh database at once both
//! send it; `IF NOT EXISTS` makes the second a no-op, and a refused
//! concurrent schema change is followed by a fresh probe. A table of that
//! name with other columns is reported, never altered.

use std::sync::Arc;
use std::time::Duration;

use flowstate_core::store::{ErrorKind, StoreError, StoreResult};
use gcloud_gax::conn::Environment;
use gcloud_gax::grpc::Code;
use gcloud_googleapis::spanner::admin::database::v1::UpdateDatabaseDdlRequest;
use gcloud_googleapis::spanner::v1::{KeySet, ReadRequest};
use gcloud_spanner::admin::AdminClientConfig;
use gcloud_spanner::admin::client::Client as AdminClient;

use crate::config::SpannerConfig;
use crate::error::{Phase, from_setup, from_status};
use crate::session::{SessionPool, no_retry};
use crate::wire;

/// How many probe / create rounds `open` makes before giving up.
const ROUNDS: u32 = 5;

/// The table's DDL. `table` is a validated identifier (`^[a-z][a-z0-9_]*$`),
/// the only name ever placed in text sent to Spanner.
pub(crate) fn create_table_ddl(table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (\n  ns STRING(MAX) NOT NULL,\n  tbl STRING(MAX) NOT NULL,\n  \
         pk BYTES(MAX) NOT NULL,\n  sk BYTES(MAX) NOT NULL,\n  body BYTES(MAX) NOT NULL,\n) PRIMARY KEY (ns, tbl, pk, sk)"
    )
}

/// Make sure the table exists with the store's columns.
pub(crate) async fn ensure_table(
    pool: &Arc<SessionPool>,
    config: &SpannerConfig,
    emulator: Option<&str>,
) -> StoreResult<()> {
    for round in 0..ROUNDS {
        match probe(pool, config).await {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        tracing::info!(database = %config.database, table = %config.table, "creating the spanner table");
        match create(config, emulator).await {
            Ok(()) => {}
            // Another process's schema change ran at the same time: probe again.
            Err(e) if e.kind() == ErrorKind::Conflict && round + 1 < ROUNDS => {
                tokio::time::sleep(Duration::from_millis(200 * u64::from(round + 1))).await;
            }
            Err(e) => return Err(e),
        }
    }
    probe(pool, config).await
}

/// A one-row strong read of the store's columns: `NotFound` if the table is
/// missing, `InvalidInput` if it has other columns.
async fn probe(pool: &Arc<SessionPool>, config: &SpannerConfig) -> StoreResult<()> {
    let lease = pool.lease().await.map_err(|s| from_status(s, Phase::Setup))?;
    let request = ReadRequest {
        session: lease.name().to_owned(),
        transaction: wire::strong_single_use(),
        table: config.table.clone(),
        columns: wire::columns(&wire::ALL_COLUMNS),
        key_set: Some(KeySet { all: true, ..KeySet::default() }),
        limit: 1,
        ..ReadRequest::default()
    };
    match pool.client().read(request, true, Some(no_retry())).await {
        Ok(_) => Ok(()),
        Err(status) if status.code() == Code::NotFound && status.message().contains("Table not found") => {
            Err(StoreError::new(ErrorKind::NotFound, format!("spanner table {} does not exist", config.table)))
        }
        Err(status) if status.code() == Code::NotFound && status.message().contains("Column") => Err(StoreError::new(
            ErrorKind::InvalidInput,
            format!(
                "spanner table {} exists but is not a Flowstate table ({}); choose another with `table`",
                config.table,
                status.message()
            ),
        )),
        Err(status) => Err(from_status(status, Phase::Setup)),
    }
}

/// Send the DDL and wait for the schema change.
async fn create(config: &SpannerConfig, emulator: Option<&str>) -> StoreResult<()> {
    let admin_config = AdminClientConfig { timeout: config.timeout(), ..AdminClientConfig::default() };
    let admin_config = match emulator {
        Some(host) => AdminClientConfig { environment: Environment::Emulator(host.to_owned()), ..admin_config },
        None => admin_config.with_auth().await.map_err(|e| from_setup(e, "admin credentials"))?,
    };
    let admin = AdminClient::new(admin_config).await.map_err(|e| from_setup(e, "admin connect"))?;
    let request = UpdateDatabaseDdlRequest {
        database: config.database.clone(),
        statements: vec![create_table_ddl(&config.table)],
        ..UpdateDatabaseDdlRequest::default()
    };
    let result = match admin.database().update_database_ddl(request, None).await {
        Ok(mut operation) => operation.wait(None).await.map(|_| ()),
        Err(status) => Err(status),
    };
    match result {
        Ok(()) => Ok(()),
        Err(status) if matches!(status.code(), Code::Aborted | Code::FailedPrecondition) => {
            Err(StoreError::new(ErrorKind::Conflict, format!("spanner schema change refused: {}", status.message())))
        }
        Err(status) => Err(from_status(status, Phase::Setup)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddl_names_only_the_validated_table() {
        let ddl = create_table_ddl("flowstate_items");
        assert!(ddl.starts_with("CREATE TABLE IF NOT EXISTS flowstate_items ("));
        assert!(ddl.ends_with("PRIMARY KEY (ns, tbl, pk, sk)"));
    }
}
