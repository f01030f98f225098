//! PostgreSQL [`StateStore`] for Flowstate: every primitive is **one SQL
//! statement** (one round trip once the statement is prepared on the
//! connection), including the conditional update the linked DAAL lives on.
//!
//! Layout (see `docs/adr/0002-postgres-layout.md`): one table per schema for
//! every namespace and logical table,
//!
//! ```sql
//! "<schema>".flowstate_items(ns text COLLATE "C", tbl text COLLATE "C",
//!                            pk bytea, sk bytea, body jsonb,
//!                            PRIMARY KEY (ns, tbl, pk, sk))
//! ```
//!
//! An item is one `jsonb` body. Conditions, predicates and mutations are
//! translated into SQL over that body with every name and value bound as a
//! parameter; `bytea` compares like `memcmp`, which is the contract's
//! sort-key order. The schema (created on first use) is the only identifier
//! in SQL text: it is validated and quoted.
//!
//! ```no_run
//! use backend_postgres::{PostgresConfig, PostgresStore};
//! use flowstate_core::store::{Condition, Item, Key, Mutation, PutMode, StateStore, TableName};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let config = PostgresConfig::from_url("postgres://postgres@127.0.0.1:5432/postgres?schema=app").unwrap();
//! let store = PostgresStore::open(config).await.unwrap();
//! let key = Key::new(TableName::new("accounts").unwrap(), "alice", "");
//! store.put(&key, Item::new().with("balance", 10), PutMode::Overwrite).await.unwrap();
//! let item = store
//!     .update(&key, &[Condition::Below { attr: "balance".into(), bound: 100 }], &[Mutation::Add("balance".into(), 5)])
//!     .await
//!     .unwrap();
//! assert_eq!(item.get_i64("balance"), Some(15));
//! # }
//! ```

mod codec;
mod config;
mod error;
mod sql;

use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use flowstate_core::store::eval::{check_mutations, check_size, conditions_hold};
use flowstate_core::store::{
    Capabilities, Condition, ErrorKind, Item, Key, Mutation, Namespace, Page, PageRequest, PutMode, StateStore,
    StoreError, StoreResult, TableName, WriteOp, validate_identifier,
};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Connection, Row};

pub use config::{DEFAULT_MAX_ITEM_BYTES, ENV_NAMESPACE, ENV_URL, PostgresConfig, redact};
use error::{Phase, map_err};
use sql::Stmt;

/// The one physical table, inside the configured schema.
const TABLE: &str = "flowstate_items";
const KEY_MATCH: &str = "ns = $1 AND tbl = $2 AND pk = $3 AND sk = $4";

/// Statements whose text depends only on the schema, built once at open.
#[derive(Debug)]
struct Statements {
    get: String,
    upsert: String,
    create: String,
    delete: String,
    scan_first: String,
    scan_after: String,
    /// The quoted, schema-qualified table, for the dynamic statements.
    table: String,
}

impl Statements {
    fn new(schema: &str) -> Self {
        let t = format!("\"{schema}\".{TABLE}");
        Self {
            get: format!("SELECT body::text FROM {t} WHERE {KEY_MATCH}"),
            upsert: format!(
                "INSERT INTO {t} (ns, tbl, pk, sk, body) VALUES ($1, $2, $3, $4, $5::jsonb) \
                 ON CONFLICT (ns, tbl, pk, sk) DO UPDATE SET body = EXCLUDED.body"
            ),
            // The sibling SELECT sees the statement's snapshot: the existing
            // row when it was committed before the statement started.
            create: format!(
                "WITH ins AS (INSERT INTO {t} (ns, tbl, pk, sk, body) VALUES ($1, $2, $3, $4, $5::jsonb) \
                 ON CONFLICT (ns, tbl, pk, sk) DO NOTHING RETURNING 1) \
                 SELECT (SELECT count(*) FROM ins), (SELECT body::text FROM {t} WHERE {KEY_MATCH})"
            ),
            delete: format!("DELETE FROM {t} WHERE {KEY_MATCH}"),
            scan_first: format!(
                "SELECT sk, body::text FROM {t} WHERE ns = $1 AND tbl = $2 AND pk = $3 ORDER BY sk LIMIT $4"
            ),
            scan_after: format!(
                "SELECT sk, body::text FROM {t} WHERE ns = $1 AND tbl = $2 AND pk = $3 AND sk > $5 ORDER BY sk LIMIT $4"
            ),
            table: t,
        }
    }
}

/// Shared by every namespace view of one opened store.
#[derive(Debug)]
struct Shared {
    pool: PgPool,
    sql: Statements,
    schema: String,
    max_item_bytes: usize,
}

/// A [`StateStore`] on PostgreSQL. Cloning is cheap and shares the pool.
#[derive(Clone, Debug)]
pub struct PostgresStore {
    shared: Arc<Shared>,
    ns: Namespace,
}

/// What one write statement answered, before it becomes a contract result.
enum Written {
    /// An update applied: the new item.
    Updated(Item),
    /// A delete applied (`true`) or found nothing to delete (`false`).
    Deleted(bool),
    /// A put applied.
    Put,
}

impl PostgresStore {
    /// Connect, and create the schema and table if they do not exist yet.
    ///
    /// Creation runs in one transaction holding a transaction-scoped advisory
    /// lock derived from the schema name, so processes starting at once do
    /// not race on `CREATE … IF NOT EXISTS` (which is not safe against a
    /// concurrent creator by itself). When the table already exists nothing
    /// is locked or created, so a role without `CREATE` rights can open it.
    pub async fn open(config: PostgresConfig) -> StoreResult<Self> {
        config.validate()?;
        let ns = Namespace::new(config.namespace.clone())?;
        validate_identifier("postgres schema", &config.schema)?;
        let mut options = PgConnectOptions::from_str(&config.url).map_err(|e| map_err(e, Phase::Connect))?;
        if let Some(timeout) = config.statement_timeout() {
            options = options.options([("statement_timeout", timeout.as_millis().to_string())]);
        }
        // One direct connection first: a refused or failed connect surfaces its
        // real cause here, where the pool would retry until its acquire timeout.
        let probe = tokio::time::timeout(config.acquire_timeout(), PgConnection::connect_with(&options))
            .await
            .map_err(|_| {
                StoreError::new(
                    ErrorKind::Unavailable,
                    format!("no answer from postgres within {:?}", config.acquire_timeout()),
                )
            })?
            .map_err(|e| map_err(e, Phase::Connect))?;
        let _ = probe.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(config.pool_max.max(1))
            .acquire_timeout(config.acquire_timeout())
            // A health check before every acquire would cost a round trip per call.
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(|e| map_err(e, Phase::Connect))?;
        let shared = Shared {
            pool,
            sql: Statements::new(&config.schema),
            schema: config.schema.clone(),
            max_item_bytes: config.max_item_bytes,
        };
        let store = Self { shared: Arc::new(shared), ns };
        store.ensure_schema().await?;
        tracing::debug!(url = %redact(&config.url), schema = %config.schema, namespace = %store.ns, "opened postgres store");
        Ok(store)
    }

    /// [`PostgresStore::open`] with [`PostgresConfig::from_url`].
    pub async fn open_url(url: &str) -> StoreResult<Self> {
        Self::open(PostgresConfig::from_url(url)?).await
    }

    /// A view of another namespace in the same table, sharing the pool.
    pub fn with_namespace(&self, ns: Namespace) -> Self {
        Self { shared: Arc::clone(&self.shared), ns }
    }

    /// This view's namespace.
    pub fn namespace(&self) -> &Namespace {
        &self.ns
    }

    /// The schema holding the table.
    pub fn schema(&self) -> &str {
        &self.shared.schema
    }

    /// Close every pooled connection; calls on this store or its views fail
    /// with `Unavailable` after.
    pub async fn close(&self) {
        self.shared.pool.close().await;
    }

    async fn ensure_schema(&self) -> StoreResult<()> {
        let mut conn = self.conn().await?;
        let qualified = format!("\"{}\".{TABLE}", self.shared.schema);
        let exists: bool = sqlx::query("SELECT to_regclass($1) IS NOT NULL")
            .bind(&qualified)
            .fetch_one(&mut *conn)
            .await
            .and_then(|row| row.try_get(0))
            .map_err(|e| map_err(e, Phase::Read))?;
        if exists {
            return Ok(());
        }
        let schema = &self.shared.schema;
        let create_schema = format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"");
        let create_table = format!(
            "CREATE TABLE IF NOT EXISTS {qualified} (\
                 ns text COLLATE \"C\" NOT NULL, \
                 tbl text COLLATE \"C\" NOT NULL, \
                 pk bytea NOT NULL, \
                 sk bytea NOT NULL, \
                 body jsonb NOT NULL, \
                 PRIMARY KEY (ns, tbl, pk, sk))"
        );
        let mut tx = conn.begin().await.map_err(|e| map_err(e, Phase::Connect))?;
        let step = async {
            sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(advisory_key(schema)).execute(&mut *tx).await?;
            sqlx::query(AssertSqlSafe(create_schema)).execute(&mut *tx).await?;
            sqlx::query(AssertSqlSafe(create_table)).execute(&mut *tx).await?;
            Ok::<_, sqlx::Error>(())
        };
        step.await.map_err(|e| map_err(e, Phase::InTransaction))?;
        tx.commit().await.map_err(|e| map_err(e, Phase::Commit))?;
        tracing::info!(schema = %schema, "created the flowstate table");
        Ok(())
    }

    async fn conn(&self) -> StoreResult<sqlx::pool::PoolConnection<sqlx::Postgres>> {
        self.shared.pool.acquire().await.map_err(|e| map_err(e, Phase::Connect))
    }

    fn stmt(&self, key: &Key) -> StoreResult<Stmt> {
        Stmt::with_key(self.ns.as_str(), key.table.as_str(), &key.partition, &key.sort)
    }

    async fn read_item(&self, conn: &mut PgConnection, key: &Key, phase: Phase) -> StoreResult<Option<Item>> {
        let row = sqlx::query(AssertSqlSafe(self.shared.sql.get.as_str()))
            .bind(self.ns.as_str())
            .bind(key.table.as_str())
            .bind(key.partition.as_slice())
            .bind(key.sort.as_slice())
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| map_err(e, phase))?;
        match row {
            None => Ok(None),
            Some(row) => decode_column(&row, 0).map(Some),
        }
    }

    /// One write as one statement on `conn`; `phase` is `Write` when
    /// autocommitted, `InTransaction` inside `transact`.
    async fn apply(&self, conn: &mut PgConnection, op: &WriteOp, phase: Phase) -> StoreResult<Written> {
        match op {
            WriteOp::Put { key, item, mode } => {
                check_size(item, self.shared.max_item_bytes)?;
                match mode {
                    PutMode::Overwrite => self.overwrite(conn, key, item, phase).await,
                    PutMode::Create => self.create(conn, key, item, phase).await,
                }
            }
            WriteOp::Update { key, conditions, mutations } => {
                self.update_one(conn, key, conditions, mutations, phase).await
            }
            WriteOp::Delete { key, conditions } if conditions.is_empty() => {
                let done = sqlx::query(AssertSqlSafe(self.shared.sql.delete.as_str()))
                    .bind(self.ns.as_str())
                    .bind(key.table.as_str())
                    .bind(key.partition.as_slice())
                    .bind(key.sort.as_slice())
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| map_err(e, phase))?;
                Ok(Written::Deleted(done.rows_affected() > 0))
            }
            WriteOp::Delete { key, conditions } => self.delete_if(conn, key, conditions, phase).await,
        }
    }

    async fn overwrite(&self, conn: &mut PgConnection, key: &Key, item: &Item, phase: Phase) -> StoreResult<Written> {
        sqlx::query(AssertSqlSafe(self.shared.sql.upsert.as_str()))
            .bind(self.ns.as_str())
            .bind(key.table.as_str())
            .bind(key.partition.as_slice())
            .bind(key.sort.as_slice())
            .bind(codec::encode_item(item))
            .execute(&mut *conn)
            .await
            .map_err(|e| map_err(e, phase))?;
        Ok(Written::Put)
    }

    /// `INSERT … ON CONFLICT DO NOTHING` with the existing row read in the
    /// same statement. That read sees the statement's snapshot, so when the
    /// conflicting row was committed by a racing creator *during* the
    /// statement it is not visible: only then a second statement reads it.
    async fn create(&self, conn: &mut PgConnection, key: &Key, item: &Item, phase: Phase) -> StoreResult<Written> {
        let body = codec::encode_item(item);
        for _ in 0..3 {
            let row = sqlx::query(AssertSqlSafe(self.shared.sql.create.as_str()))
                .bind(self.ns.as_str())
                .bind(key.table.as_str())
                .bind(key.partition.as_slice())
                .bind(key.sort.as_slice())
                .bind(&body)
                .fetch_one(&mut *conn)
                .await
                .map_err(|e| map_err(e, phase))?;
            let inserted: i64 = row.try_get(0).map_err(|e| map_err(e, phase))?;
            if inserted > 0 {
                return Ok(Written::Put);
            }
            let existing = match decode_optional(&row, 1)? {
                Some(existing) => Some(existing),
                None => self.read_item(conn, key, if phase == Phase::Write { Phase::Read } else { phase }).await?,
            };
            if let Some(existing) = existing {
                return Err(StoreError::condition_failed(Some(existing)));
            }
            // The row we conflicted with was deleted again: try once more.
        }
        Err(StoreError::condition_failed(None))
    }

    /// The conditional update, one statement:
    ///
    /// ```sql
    /// WITH cur AS MATERIALIZED (SELECT body FROM t WHERE <key> FOR UPDATE),
    ///      ev  AS MATERIALIZED (SELECT body AS b0, <conditions on body> AS ok FROM cur),
    ///      m0  AS MATERIALIZED (SELECT CASE WHEN ok THEN b0 END AS b FROM ev),
    ///      m1  AS MATERIALIZED (SELECT <mutation 1 of m0.b> AS b FROM m0), …
    ///      fin AS MATERIALIZED (SELECT ev.b0, ev.ok, mN.b AS new, <fits(mN.b)> AS fits FROM ev, mN),
    ///      upd AS (UPDATE t SET body = fin.new FROM fin
    ///              WHERE <key> AND fin.ok AND fin.new IS NOT NULL AND fin.fits RETURNING t.body)
    /// SELECT fin.ok, fin.new IS NOT NULL, fin.fits, (SELECT body::text FROM upd),
    ///        <fin.b0::text unless the update applied> FROM fin
    /// ```
    ///
    /// No row: `NotFound`. `ok` false: `ConditionFailed` with the current
    /// item. `new` NULL: a mutation type error (`InvalidInput`, its message
    /// from the reference evaluator run on the returned item). Not `fits`:
    /// `TooLarge`. The order of these checks is the reference's.
    async fn update_one(
        &self,
        conn: &mut PgConnection,
        key: &Key,
        conditions: &[Condition],
        mutations: &[Mutation],
        phase: Phase,
    ) -> StoreResult<Written> {
        let t = &self.shared.sql.table;
        let mut st = self.stmt(key)?;
        let cond = st.conditions(conditions, "body")?;
        let max = st.int(i64::try_from(self.shared.max_item_bytes).unwrap_or(i64::MAX))?;
        let mut sql = format!(
            "WITH cur AS MATERIALIZED (SELECT body FROM {t} WHERE {KEY_MATCH} FOR UPDATE), \
             ev AS MATERIALIZED (SELECT body AS b0, {cond} AS ok FROM cur), \
             m0 AS MATERIALIZED (SELECT CASE WHEN ok THEN b0 END AS b FROM ev)"
        );
        for (i, m) in mutations.iter().enumerate() {
            let expr = st.mutation(m, &format!("m{i}.b"))?;
            sql.push_str(&format!(", m{} AS MATERIALIZED (SELECT {expr} AS b FROM m{i})", i + 1));
        }
        let last = format!("m{}", mutations.len());
        let fits = sql::fits(&format!("{last}.b"), &max);
        sql.push_str(&format!(
            ", fin AS MATERIALIZED (SELECT ev.b0, ev.ok, {last}.b AS new, {fits} AS fits FROM ev, {last}), \
             upd AS (UPDATE {t} AS t SET body = fin.new FROM fin \
                 WHERE t.ns = $1 AND t.tbl = $2 AND t.pk = $3 AND t.sk = $4 AND fin.ok AND fin.new IS NOT NULL AND fin.fits \
                 RETURNING t.body) \
             SELECT fin.ok, fin.new IS NOT NULL, fin.fits, (SELECT body::text FROM upd), \
                 CASE WHEN fin.ok AND fin.new IS NOT NULL AND fin.fits THEN NULL ELSE fin.b0::text END \
             FROM fin"
        ));
        st.sql = sql;
        let row = run_optional(conn, st, phase).await?;
        let Some(row) = row else {
            return Err(StoreError::new(ErrorKind::NotFound, "update of a missing item"));
        };
        let get_bool = |i: usize| row.try_get::<bool, _>(i).map_err(|e| map_err(e, phase));
        let (ok, typed, fits) = (get_bool(0)?, get_bool(1)?, get_bool(2)?);
        if let Some(new) = decode_optional(&row, 3)? {
            return Ok(Written::Updated(new));
        }
        let current = decode_optional(&row, 4)?
            .ok_or_else(|| StoreError::corrupt("update returned neither the new nor the current item"))?;
        if !ok {
            return Err(StoreError::condition_failed(Some(current)));
        }
        if !typed {
            // The reference evaluator names the offending mutation.
            check_mutations(&current, mutations)?;
            return Err(StoreError::invalid("a mutation does not fit the item's attribute types"));
        }
        if !fits {
            return Err(StoreError::new(
                ErrorKind::TooLarge,
                format!("the updated item would exceed the store's limit of {} bytes", self.shared.max_item_bytes),
            ));
        }
        // The row was locked by this statement, so the update cannot have missed it.
        Err(StoreError::new(ErrorKind::Conflict, "the locked row was not updated; retry"))
    }

    /// A conditional delete, one statement: lock the row, evaluate, delete.
    /// An absent item is decided here with the reference evaluator (the
    /// conditions on `None`), with no further round trip.
    async fn delete_if(
        &self,
        conn: &mut PgConnection,
        key: &Key,
        conditions: &[Condition],
        phase: Phase,
    ) -> StoreResult<Written> {
        let t = &self.shared.sql.table;
        let mut st = self.stmt(key)?;
        let cond = st.conditions(conditions, "body")?;
        st.sql = format!(
            "WITH cur AS MATERIALIZED (SELECT body FROM {t} WHERE {KEY_MATCH} FOR UPDATE), \
             ev AS MATERIALIZED (SELECT body AS b0, {cond} AS ok FROM cur), \
             del AS (DELETE FROM {t} AS t USING ev \
                 WHERE t.ns = $1 AND t.tbl = $2 AND t.pk = $3 AND t.sk = $4 AND ev.ok RETURNING 1) \
             SELECT ev.ok, (SELECT count(*) FROM del), CASE WHEN ev.ok THEN NULL ELSE ev.b0::text END FROM ev"
        );
        let row = run_optional(conn, st, phase).await?;
        let Some(row) = row else {
            return if conditions_hold(conditions, None) {
                Ok(Written::Deleted(false))
            } else {
                Err(StoreError::condition_failed(None))
            };
        };
        let ok: bool = row.try_get(0).map_err(|e| map_err(e, phase))?;
        let deleted: i64 = row.try_get(1).map_err(|e| map_err(e, phase))?;
        if !ok {
            return Err(StoreError::condition_failed(decode_optional(&row, 2)?));
        }
        if deleted == 0 {
            return Err(StoreError::new(ErrorKind::Conflict, "the locked row was not deleted; retry"));
        }
        Ok(Written::Deleted(true))
    }

    /// `transact` of ops on distinct keys as **one** statement (one round
    /// trip, atomic as any single statement): per op, lock and evaluate as the
    /// single-op statements do, into a status code (0 passes, 1 not found,
    /// 2 condition failed, 3 mutation type error, 4 too large) and the
    /// current body; one `go` flag is the conjunction of all; every write is
    /// gated on `go`. On distinct keys the ops are independent, so evaluating
    /// all of them on the state before the statement answers exactly as
    /// applying them in order would, and the first failing op (by index) is
    /// the error. `None`: not eligible (a repeated key, or a put that is too
    /// large, whose error must be ordered after the server-side checks of the
    /// ops before it); the caller uses `BEGIN … COMMIT`.
    fn batch_statement(&self, ops: &[WriteOp]) -> StoreResult<Option<Stmt>> {
        let mut keys = std::collections::HashSet::new();
        for op in ops {
            let key = match op {
                WriteOp::Put { key, item, .. } => {
                    if item.encoded_len() > self.shared.max_item_bytes {
                        return Ok(None);
                    }
                    key
                }
                WriteOp::Update { key, .. } | WriteOp::Delete { key, .. } => key,
            };
            if !keys.insert(key) {
                return Ok(None);
            }
        }
        let t = &self.shared.sql.table;
        let ns = self.ns.as_str();
        let mut st = Stmt::empty();
        // Bound on first use: only updates check the size in SQL.
        let mut max: Option<String> = None;
        let mut ctes = Vec::new();
        let mut writes = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            match op {
                WriteOp::Update { key, conditions, mutations } => {
                    let km = st.key(ns, key.table.as_str(), &key.partition, &key.sort)?;
                    let cond = st.conditions(conditions, "body")?;
                    ctes.push(format!("c{i} AS MATERIALIZED (SELECT body FROM {t} WHERE {km} FOR UPDATE)"));
                    ctes.push(format!("e{i} AS MATERIALIZED (SELECT body AS b0, {cond} AS ok FROM c{i})"));
                    ctes.push(format!("m{i}_0 AS MATERIALIZED (SELECT CASE WHEN ok THEN b0 END AS b FROM e{i})"));
                    for (j, m) in mutations.iter().enumerate() {
                        let expr = st.mutation(m, &format!("m{i}_{j}.b"))?;
                        ctes.push(format!("m{i}_{} AS MATERIALIZED (SELECT {expr} AS b FROM m{i}_{j})", j + 1));
                    }
                    let last = format!("m{i}_{}", mutations.len());
                    let max = match &max {
                        Some(max) => max.clone(),
                        None => {
                            max.insert(st.int(i64::try_from(self.shared.max_item_bytes).unwrap_or(i64::MAX))?).clone()
                        }
                    };
                    let fits = sql::fits(&format!("{last}.b"), &max);
                    ctes.push(format!(
                        "f{i} AS MATERIALIZED (SELECT e{i}.b0, e{i}.ok, {last}.b AS new, {fits} AS fits FROM e{i}, {last})"
                    ));
                    ctes.push(format!(
                        "s{i} AS MATERIALIZED (SELECT CASE WHEN f.b0 IS NULL THEN 1 WHEN NOT f.ok THEN 2 \
                         WHEN f.new IS NULL THEN 3 WHEN NOT f.fits THEN 4 ELSE 0 END AS st, \
                         CASE WHEN f.ok AND f.new IS NOT NULL AND f.fits THEN NULL ELSE f.b0::text END AS cur \
                         FROM (SELECT 1) AS one LEFT JOIN f{i} AS f ON true)"
                    ));
                    writes.push(format!(
                        "w{i} AS (UPDATE {t} SET body = f{i}.new FROM f{i}, g WHERE {km} AND g.go RETURNING 1)"
                    ));
                }
                WriteOp::Delete { key, conditions } if !conditions.is_empty() => {
                    let km = st.key(ns, key.table.as_str(), &key.partition, &key.sort)?;
                    let cond = st.conditions(conditions, "body")?;
                    // An absent item is decided by the reference evaluator here.
                    let absent = if conditions_hold(conditions, None) { 0 } else { 2 };
                    ctes.push(format!("c{i} AS MATERIALIZED (SELECT body FROM {t} WHERE {km} FOR UPDATE)"));
                    ctes.push(format!("e{i} AS MATERIALIZED (SELECT body AS b0, {cond} AS ok FROM c{i})"));
                    ctes.push(format!(
                        "s{i} AS MATERIALIZED (SELECT CASE WHEN e.b0 IS NULL THEN {absent} WHEN NOT e.ok THEN 2 ELSE 0 END AS st, \
                         CASE WHEN e.ok THEN NULL ELSE e.b0::text END AS cur FROM (SELECT 1) AS one LEFT JOIN e{i} AS e ON true)"
                    ));
                    writes.push(format!("w{i} AS (DELETE FROM {t} USING g WHERE {km} AND g.go RETURNING 1)"));
                }
                WriteOp::Delete { key, .. } => {
                    let km = st.key(ns, key.table.as_str(), &key.partition, &key.sort)?;
                    ctes.push(format!("s{i} AS MATERIALIZED (SELECT 0 AS st, NULL::text AS cur)"));
                    writes.push(format!("w{i} AS (DELETE FROM {t} USING g WHERE {km} AND g.go RETURNING 1)"));
                }
                WriteOp::Put { key, item, mode } => {
                    let values = st.key_values(ns, key.table.as_str(), &key.partition, &key.sort)?;
                    let body = st.body(codec::encode_item(item))?;
                    let insert =
                        format!("INSERT INTO {t} (ns, tbl, pk, sk, body) SELECT {values}, {body} FROM g WHERE g.go");
                    match mode {
                        PutMode::Overwrite => {
                            ctes.push(format!("s{i} AS MATERIALIZED (SELECT 0 AS st, NULL::text AS cur)"));
                            writes.push(format!(
                                "w{i} AS ({insert} ON CONFLICT (ns, tbl, pk, sk) DO UPDATE SET body = EXCLUDED.body RETURNING 1)"
                            ));
                        }
                        PutMode::Create => {
                            let km = st.key(ns, key.table.as_str(), &key.partition, &key.sort)?;
                            ctes.push(format!("c{i} AS MATERIALIZED (SELECT body FROM {t} WHERE {km} FOR UPDATE)"));
                            ctes.push(format!(
                                "s{i} AS MATERIALIZED (SELECT CASE WHEN c.body IS NULL THEN 0 ELSE 2 END AS st, c.body::text AS cur \
                                 FROM (SELECT 1) AS one LEFT JOIN c{i} AS c ON true)"
                            ));
                            // No ON CONFLICT: a row committed by a racing creator
                            // after our snapshot fails the whole statement (23505).
                            writes.push(format!("w{i} AS ({insert} RETURNING 1)"));
                        }
                    }
                }
            }
        }
        let all: Vec<String> = (0..ops.len()).map(|i| format!("s{i}.st = 0")).collect();
        let from: Vec<String> = (0..ops.len()).map(|i| format!("s{i}")).collect();
        ctes.push(format!("g AS MATERIALIZED (SELECT {} AS go FROM {})", all.join(" AND "), from.join(", ")));
        ctes.extend(writes);
        let mut columns = vec!["g.go".to_owned()];
        for i in 0..ops.len() {
            columns.push(format!("s{i}.st, s{i}.cur, (SELECT count(*) FROM w{i})"));
        }
        st.sql = format!("WITH {} SELECT {} FROM g, {}", ctes.join(", "), columns.join(", "), from.join(", "));
        Ok(Some(st))
    }

    /// Run [`PostgresStore::batch_statement`]; `Ok(false)`: run the batch as a transaction instead.
    async fn transact_in_one_statement(&self, ops: &[WriteOp]) -> StoreResult<bool> {
        let Some(st) = self.batch_statement(ops)? else {
            return Ok(false);
        };
        let mut conn = self.conn().await?;
        let row = match run_optional(&mut conn, st, Phase::Write).await {
            Ok(row) => row.ok_or_else(|| StoreError::corrupt("the batch statement returned no row"))?,
            // A unique violation: a create raced a creator that committed
            // during the statement. The statement applied nothing.
            Err(e) if e.kind() == ErrorKind::ConditionFailed => return Ok(false),
            Err(e) => return Err(e),
        };
        let go: bool = row.try_get(0).map_err(|e| map_err(e, Phase::Write))?;
        for (i, op) in ops.iter().enumerate() {
            let st: i32 = row.try_get(1 + 3 * i).map_err(|e| map_err(e, Phase::Write))?;
            let written: i64 = row.try_get(3 + 3 * i).map_err(|e| map_err(e, Phase::Write))?;
            if go {
                if matches!(op, WriteOp::Update { .. }) && written != 1 {
                    return Err(StoreError::new(ErrorKind::Conflict, "a locked row was not updated; retry"));
                }
                continue;
            }
            let current = decode_optional(&row, 2 + 3 * i)?;
            match (st, op) {
                (0, _) => continue,
                (1, _) => return Err(StoreError::new(ErrorKind::NotFound, "update of a missing item")),
                (2, _) => return Err(StoreError::condition_failed(current)),
                (3, WriteOp::Update { mutations, .. }) => {
                    if let Some(current) = &current {
                        check_mutations(current, mutations)?;
                    }
                    return Err(StoreError::invalid("a mutation does not fit the item's attribute types"));
                }
                (4, _) => {
                    return Err(StoreError::new(
                        ErrorKind::TooLarge,
                        format!(
                            "an updated item would exceed the store's limit of {} bytes",
                            self.shared.max_item_bytes
                        ),
                    ));
                }
                (code, _) => return Err(StoreError::corrupt(format!("unexpected batch status {code}"))),
            }
        }
        if go { Ok(true) } else { Err(StoreError::corrupt("the batch was refused but no op failed")) }
    }

    async fn write_one(&self, op: WriteOp) -> StoreResult<Written> {
        let mut conn = self.conn().await?;
        self.apply(&mut conn, &op, Phase::Write).await
    }
}

async fn run_optional(conn: &mut PgConnection, st: Stmt, phase: Phase) -> StoreResult<Option<PgRow>> {
    debug_assert!(st.all_params_referenced(), "a bound parameter is not referenced: {}", st.sql);
    sqlx::query_with(AssertSqlSafe(st.sql), st.args).fetch_optional(&mut *conn).await.map_err(|e| map_err(e, phase))
}

fn decode_optional(row: &PgRow, i: usize) -> StoreResult<Option<Item>> {
    let text: Option<String> = row.try_get(i).map_err(|e| map_err(e, Phase::Read))?;
    text.as_deref().map(codec::decode_item).transpose()
}

fn decode_column(row: &PgRow, i: usize) -> StoreResult<Item> {
    decode_optional(row, i)?.ok_or_else(|| StoreError::corrupt("stored body is NULL"))
}

/// A stable 64-bit key for the schema-creation advisory lock (FNV-1a).
fn advisory_key(schema: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in "flowstate-schema:".bytes().chain(schema.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

#[async_trait]
impl StateStore for PostgresStore {
    /// Native one-statement updates returning the current item on a failed
    /// condition, consistent scans, and atomic batches (one transaction).
    fn capabilities(&self) -> Capabilities {
        Capabilities::new(self.shared.max_item_bytes).with_atomic_batch(true)
    }

    async fn get(&self, key: &Key) -> StoreResult<Option<Item>> {
        let mut conn = self.conn().await?;
        self.read_item(&mut conn, key, Phase::Read).await
    }

    async fn put(&self, key: &Key, item: Item, mode: PutMode) -> StoreResult<()> {
        self.write_one(WriteOp::Put { key: key.clone(), item, mode }).await.map(|_| ())
    }

    async fn update(&self, key: &Key, conditions: &[Condition], mutations: &[Mutation]) -> StoreResult<Item> {
        let mut conn = self.conn().await?;
        match self.update_one(&mut conn, key, conditions, mutations, Phase::Write).await? {
            Written::Updated(item) => Ok(item),
            _ => Err(StoreError::corrupt("update answered something other than an item")),
        }
    }

    async fn delete(&self, key: &Key, conditions: &[Condition]) -> StoreResult<bool> {
        match self.write_one(WriteOp::Delete { key: key.clone(), conditions: conditions.to_vec() }).await? {
            Written::Deleted(removed) => Ok(removed),
            _ => Err(StoreError::corrupt("delete answered something other than a count")),
        }
    }

    async fn scan(&self, table: &TableName, partition: &[u8], page: PageRequest) -> StoreResult<Page> {
        let limit = page.limit.clamp(1, self.capabilities().max_page);
        // One row more than asked tells whether another page follows.
        let fetch = i64::from(limit) + 1;
        let sql = match &page.after {
            None => self.shared.sql.scan_first.as_str(),
            Some(_) => self.shared.sql.scan_after.as_str(),
        };
        let query =
            sqlx::query(AssertSqlSafe(sql)).bind(self.ns.as_str()).bind(table.as_str()).bind(partition).bind(fetch);
        let query = match &page.after {
            None => query,
            Some(after) => query.bind(after.as_slice()),
        };
        let mut conn = self.conn().await?;
        let rows = query.fetch_all(&mut *conn).await.map_err(|e| map_err(e, Phase::Read))?;
        let more = rows.len() > limit as usize;
        let mut items = Vec::with_capacity(rows.len().min(limit as usize));
        for row in rows.iter().take(limit as usize) {
            let sk: Vec<u8> = row.try_get(0).map_err(|e| map_err(e, Phase::Read))?;
            items.push((sk, decode_column(row, 1)?));
        }
        let next = if more { items.last().map(|(sk, _)| sk.clone()) } else { None };
        Ok(Page { items, next })
    }

    /// Ops on distinct keys: one statement (see
    /// `PostgresStore::batch_statement`), one round trip. Otherwise (a key
    /// repeated, an oversize put, or a create that raced another creator):
    /// `BEGIN`, one statement per op, `COMMIT` (n + 2 round trips with sqlx,
    /// which does not pipeline). A failed op rolls everything back and its
    /// error is returned; a connection lost before `COMMIT` was sent rolls
    /// back on the server (`Unavailable`), one lost during `COMMIT` is
    /// `Indeterminate`.
    async fn transact(&self, ops: Vec<WriteOp>) -> StoreResult<()> {
        match ops.len() {
            0 => return Ok(()),
            // One statement is atomic by itself.
            1 => return self.write_one(ops.into_iter().next().expect("one op")).await.map(|_| ()),
            _ => {}
        }
        if self.transact_in_one_statement(&ops).await? {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        let mut tx = conn.begin().await.map_err(|e| map_err(e, Phase::Connect))?;
        for op in &ops {
            if let Err(e) = self.apply(&mut tx, op, Phase::InTransaction).await {
                // If this rollback fails, sqlx rolls back before reusing the connection.
                let _ = tx.rollback().await;
                return Err(e);
            }
        }
        tx.commit().await.map_err(|e| map_err(e, Phase::Commit))
    }
}
