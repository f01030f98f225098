//! Embedded SQLite [`StateStore`] for Flowstate: one database file in WAL
//! mode with `synchronous=FULL` by default, so every acknowledged write
//! survives a process crash (and, with FULL, a power loss).
//!
//! Layout: one physical table for every namespace and logical table,
//!
//! ```sql
//! flowstate_items(ns TEXT, tbl TEXT, pk BLOB, sk BLOB, body BLOB,
//!                 PRIMARY KEY (ns, tbl, pk, sk)) WITHOUT ROWID
//! ```
//!
//! so no SQL identifier is ever built from a user string: names and keys are
//! bound values. `body` is the item's JSON ([`Item::to_json`]). BLOBs compare
//! with `memcmp`, which is exactly the contract's sort-key byte order.
//!
//! Conditional writes run as one `BEGIN IMMEDIATE` transaction on one pooled
//! connection: read the row, evaluate with the contract's reference evaluator
//! ([`flowstate_core::store::eval`]), write, commit. The database is
//! in-process, so that transaction is one store call with no network hop.
//!
//! ```
//! use backend_sqlite::{SqliteConfig, SqliteStore};
//! use flowstate_core::store::{Condition, Item, Key, Mutation, PutMode, StateStore, TableName};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let dir = tempfile::tempdir().unwrap();
//! let store = SqliteStore::open(SqliteConfig::new(dir.path().join("app.db"))).await.unwrap();
//! let key = Key::new(TableName::new("accounts").unwrap(), "alice", "");
//! store.put(&key, Item::new().with("balance", 10), PutMode::Create).await.unwrap();
//! let item = store
//!     .update(&key, &[Condition::Below { attr: "balance".into(), bound: 100 }], &[Mutation::Add("balance".into(), 5)])
//!     .await
//!     .unwrap();
//! assert_eq!(item.get_i64("balance"), Some(15));
//! # }
//! ```

mod config;
mod error;

use std::sync::Arc;

use async_trait::async_trait;
use flowstate_core::store::eval::{check_size, conditions_hold, updated};
use flowstate_core::store::{
    Capabilities, Condition, Item, Key, Mutation, Namespace, Page, PageRequest, PutMode, StateStore, StoreError,
    StoreResult, TableName, UpdateStrategy, WriteOp,
};
use sqlx::Row;
use sqlx::query::Query;
use sqlx::sqlite::{Sqlite, SqliteArguments};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

pub use config::{DEFAULT_MAX_ITEM_BYTES, ENV_NAMESPACE, ENV_PATH, SqliteConfig, Synchronous};
use error::{commit_err, decode_body, map_err};

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS flowstate_items (
    ns TEXT NOT NULL,
    tbl TEXT NOT NULL,
    pk BLOB NOT NULL,
    sk BLOB NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (ns, tbl, pk, sk)
) WITHOUT ROWID";
const SELECT_BODY: &str = "SELECT body FROM flowstate_items WHERE ns = ?1 AND tbl = ?2 AND pk = ?3 AND sk = ?4";
const UPSERT: &str = "INSERT INTO flowstate_items (ns, tbl, pk, sk, body) VALUES (?1, ?2, ?3, ?4, ?5)
    ON CONFLICT (ns, tbl, pk, sk) DO UPDATE SET body = excluded.body";
const INSERT_NEW: &str = "INSERT INTO flowstate_items (ns, tbl, pk, sk, body) VALUES (?1, ?2, ?3, ?4, ?5)
    ON CONFLICT (ns, tbl, pk, sk) DO NOTHING";
const DELETE: &str = "DELETE FROM flowstate_items WHERE ns = ?1 AND tbl = ?2 AND pk = ?3 AND sk = ?4";
const SCAN_FIRST: &str =
    "SELECT sk, body FROM flowstate_items WHERE ns = ?1 AND tbl = ?2 AND pk = ?3 ORDER BY sk LIMIT ?4";
const SCAN_AFTER: &str =
    "SELECT sk, body FROM flowstate_items WHERE ns = ?1 AND tbl = ?2 AND pk = ?3 AND sk > ?5 ORDER BY sk LIMIT ?4";

/// A query on the items table with its arguments bound so far.
type SqliteQuery<'q> = Query<'q, Sqlite, SqliteArguments>;

/// Shared by every namespace view of one opened file.
#[derive(Debug)]
struct Shared {
    pool: SqlitePool,
    /// Serializes this process's writers before they reach SQLite, so they
    /// queue fairly on an async lock instead of spinning in SQLite's busy
    /// handler; other processes are still arbitrated by the busy timeout.
    write_gate: tokio::sync::Mutex<()>,
    max_item_bytes: usize,
}

/// A [`StateStore`] on one SQLite file. Cloning is cheap and shares the pool.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    shared: Arc<Shared>,
    ns: Namespace,
}

impl SqliteStore {
    /// Open (creating if missing) the database file of `config` in WAL mode
    /// and create the items table if needed.
    pub async fn open(config: SqliteConfig) -> StoreResult<Self> {
        let ns = Namespace::new(config.namespace.clone())?;
        let options = SqliteConnectOptions::new()
            .filename(&config.path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match config.synchronous {
                Synchronous::Off => sqlx::sqlite::SqliteSynchronous::Off,
                Synchronous::Normal => sqlx::sqlite::SqliteSynchronous::Normal,
                Synchronous::Full => sqlx::sqlite::SqliteSynchronous::Full,
                Synchronous::Extra => sqlx::sqlite::SqliteSynchronous::Extra,
            })
            .busy_timeout(config.busy_timeout());
        let pool = SqlitePoolOptions::new()
            .max_connections(config.pool_size.max(1))
            .connect_with(options)
            .await
            .map_err(map_err)?;
        sqlx::query(CREATE_TABLE).execute(&pool).await.map_err(map_err)?;
        tracing::debug!(path = %config.path.display(), namespace = %ns, "opened sqlite store");
        let shared = Shared { pool, write_gate: tokio::sync::Mutex::new(()), max_item_bytes: config.max_item_bytes };
        Ok(Self { shared: Arc::new(shared), ns })
    }

    /// [`SqliteStore::open`] with [`SqliteConfig::from_url`].
    pub async fn open_url(url: &str) -> StoreResult<Self> {
        Self::open(SqliteConfig::from_url(url)?).await
    }

    /// A view of another namespace of the same file, sharing the pool.
    pub fn with_namespace(&self, ns: Namespace) -> Self {
        Self { shared: Arc::clone(&self.shared), ns }
    }

    /// This view's namespace.
    pub fn namespace(&self) -> &Namespace {
        &self.ns
    }

    /// Close every pooled connection (checkpointing the WAL when it is the
    /// last one). Calls on this store or its views fail with `Unavailable` after.
    pub async fn close(&self) {
        self.shared.pool.close().await;
    }

    /// Apply `ops` in order in one `BEGIN IMMEDIATE` transaction, all or
    /// none; returns what the last op returned (see [`SqliteStore::apply`]).
    ///
    /// IMMEDIATE takes the write lock up front, so the read inside cannot be
    /// invalidated by another writer before our write (a deferred transaction
    /// would have to upgrade its lock and could fail with `SQLITE_BUSY`
    /// instead of waiting).
    async fn write_tx(&self, ops: &[WriteOp]) -> StoreResult<Option<Item>> {
        let _gate = self.shared.write_gate.lock().await;
        let mut tx = self.shared.pool.begin_with("BEGIN IMMEDIATE").await.map_err(map_err)?;
        let mut last = None;
        for op in ops {
            match self.apply(&mut tx, op).await {
                Ok(out) => last = out,
                Err(e) => {
                    // Nothing written must survive; if this rollback fails,
                    // sqlx finishes it before the connection is reused.
                    let _ = tx.rollback().await;
                    return Err(e);
                }
            }
        }
        tx.commit().await.map_err(commit_err)?;
        Ok(last)
    }

    /// `sql` with the item's key bound as `?1..?4` (namespace, table, partition, sort).
    fn keyed<'q>(&'q self, sql: &'static str, key: &'q Key) -> SqliteQuery<'q> {
        sqlx::query(sql)
            .bind(self.ns.as_str())
            .bind(key.table.as_str())
            .bind(key.partition.as_slice())
            .bind(key.sort.as_slice())
    }

    async fn read_item(&self, conn: &mut SqliteConnection, key: &Key) -> StoreResult<Option<Item>> {
        let row = self.keyed(SELECT_BODY, key).fetch_optional(&mut *conn).await.map_err(map_err)?;
        match row {
            None => Ok(None),
            Some(row) => {
                let body: Vec<u8> = row.try_get(0).map_err(map_err)?;
                decode_body(&body).map(Some)
            }
        }
    }

    async fn write_item(&self, conn: &mut SqliteConnection, key: &Key, item: &Item) -> StoreResult<()> {
        self.keyed(UPSERT, key).bind(item.to_json()).execute(&mut *conn).await.map_err(map_err)?;
        Ok(())
    }

    async fn delete_item(&self, conn: &mut SqliteConnection, key: &Key) -> StoreResult<bool> {
        let done = self.keyed(DELETE, key).execute(&mut *conn).await.map_err(map_err)?;
        Ok(done.rows_affected() > 0)
    }

    /// Apply one write inside an open transaction, with the reference
    /// evaluator's semantics (the same order of checks as the memory store).
    /// `Ok(Some(item))` is an update's new item; for a delete, `Some` means
    /// an item was removed.
    async fn apply(&self, conn: &mut SqliteConnection, op: &WriteOp) -> StoreResult<Option<Item>> {
        let max = self.shared.max_item_bytes;
        match op {
            WriteOp::Put { key, item, mode: PutMode::Overwrite } => {
                check_size(item, max)?;
                self.write_item(conn, key, item).await?;
                Ok(None)
            }
            WriteOp::Put { key, item, mode: PutMode::Create } => {
                check_size(item, max)?;
                // Insert-if-absent in one statement; read only when it refused.
                let done =
                    self.keyed(INSERT_NEW, key).bind(item.to_json()).execute(&mut *conn).await.map_err(map_err)?;
                if done.rows_affected() == 0 {
                    let existing = self.read_item(conn, key).await?;
                    return Err(StoreError::condition_failed(existing));
                }
                Ok(None)
            }
            WriteOp::Update { key, conditions, mutations } => {
                let current = self.read_item(conn, key).await?;
                let next = updated(current.as_ref(), conditions, mutations, max)?;
                self.write_item(conn, key, &next).await?;
                Ok(Some(next))
            }
            WriteOp::Delete { key, conditions } if conditions.is_empty() => {
                // Unconditional: no need to read first.
                let removed = self.delete_item(conn, key).await?;
                Ok(removed.then(Item::new))
            }
            WriteOp::Delete { key, conditions } => {
                let current = self.read_item(conn, key).await?;
                if !conditions_hold(conditions, current.as_ref()) {
                    return Err(StoreError::condition_failed(current));
                }
                let removed = current.is_some() && self.delete_item(conn, key).await?;
                Ok(removed.then(Item::new))
            }
        }
    }
}

#[async_trait]
impl StateStore for SqliteStore {
    /// Atomic batches (one SQLite transaction) and conditional updates as
    /// [`UpdateStrategy::Transaction`] with `round_trips: 1`: the read,
    /// evaluation and write are separate statements, but the database is
    /// embedded, so the whole transaction is one in-process store call.
    fn capabilities(&self) -> Capabilities {
        Capabilities::new(self.shared.max_item_bytes)
            .with_atomic_batch(true)
            .with_update(UpdateStrategy::Transaction { round_trips: 1 })
    }

    async fn get(&self, key: &Key) -> StoreResult<Option<Item>> {
        let mut conn = self.shared.pool.acquire().await.map_err(map_err)?;
        self.read_item(&mut conn, key).await
    }

    async fn put(&self, key: &Key, item: Item, mode: PutMode) -> StoreResult<()> {
        if mode == PutMode::Overwrite {
            // A single upsert statement is atomic on its own.
            check_size(&item, self.shared.max_item_bytes)?;
            let _gate = self.shared.write_gate.lock().await;
            let mut conn = self.shared.pool.acquire().await.map_err(map_err)?;
            return self.write_item(&mut conn, key, &item).await;
        }
        self.write_tx(&[WriteOp::Put { key: key.clone(), item, mode }]).await.map(|_| ())
    }

    async fn update(&self, key: &Key, conditions: &[Condition], mutations: &[Mutation]) -> StoreResult<Item> {
        let op = WriteOp::Update { key: key.clone(), conditions: conditions.to_vec(), mutations: mutations.to_vec() };
        let item = self.write_tx(&[op]).await?;
        Ok(item.expect("update returns the item"))
    }

    async fn delete(&self, key: &Key, conditions: &[Condition]) -> StoreResult<bool> {
        if conditions.is_empty() {
            let _gate = self.shared.write_gate.lock().await;
            let mut conn = self.shared.pool.acquire().await.map_err(map_err)?;
            return self.delete_item(&mut conn, key).await;
        }
        let op = WriteOp::Delete { key: key.clone(), conditions: conditions.to_vec() };
        let removed = self.write_tx(&[op]).await?;
        Ok(removed.is_some())
    }

    async fn scan(&self, table: &TableName, partition: &[u8], page: PageRequest) -> StoreResult<Page> {
        let limit = page.limit.clamp(1, self.capabilities().max_page);
        // One row more than asked tells whether another page follows.
        let fetch = i64::from(limit) + 1;
        let query = match &page.after {
            None => sqlx::query(SCAN_FIRST),
            Some(_) => sqlx::query(SCAN_AFTER),
        };
        let query = query.bind(self.ns.as_str()).bind(table.as_str()).bind(partition).bind(fetch);
        let query = match &page.after {
            None => query,
            Some(after) => query.bind(after.as_slice()),
        };
        let mut conn = self.shared.pool.acquire().await.map_err(map_err)?;
        let rows = query.fetch_all(&mut *conn).await.map_err(map_err)?;
        let more = rows.len() > limit as usize;
        let mut items = Vec::with_capacity(rows.len().min(limit as usize));
        for row in rows.into_iter().take(limit as usize) {
            let sk: Vec<u8> = row.try_get(0).map_err(map_err)?;
            let body: Vec<u8> = row.try_get(1).map_err(map_err)?;
            items.push((sk, decode_body(&body)?));
        }
        let next = if more { items.last().map(|(sk, _)| sk.clone()) } else { None };
        Ok(Page { items, next })
    }

    async fn transact(&self, ops: Vec<WriteOp>) -> StoreResult<()> {
        self.write_tx(&ops).await.map(|_| ())
    }
}
