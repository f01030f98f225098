//! Amazon DynamoDB [`StateStore`] for Flowstate, on the official
//! `aws-sdk-dynamodb`. Works unchanged against LocalStack or moto through an
//! endpoint override.
//!
//! Each primitive is one DynamoDB request: `get` a consistent `GetItem`,
//! `put` a `PutItem` (`attribute_not_exists(#pk)` for `Create`), `update` one
//! `UpdateItem` whose `ConditionExpression` carries the contract's conditions
//! and whose `UpdateExpression` applies the mutations, `delete` a conditional
//! `DeleteItem`, `scan` a consistent `Query`, `transact` one
//! `TransactWriteItems`. A refused write returns the old item in the same
//! request (`ReturnValuesOnConditionCheckFailure=ALL_OLD`), and the
//! contract's reference evaluator ([`flowstate_core::store::eval`]) decides
//! from it which error to report (`NotFound`, `ConditionFailed`,
//! `InvalidInput` or `TooLarge`), without another request.
//!
//! Two rare cases cost one more request, a compare-and-swap `PutItem` of the
//! item the reference evaluator computed: `SetEntry`/`RemoveEntry` on an
//! absent map (DynamoDB cannot address `#m.#e` under a missing `#m`), and an
//! item whose stored size bound (`sz`) is too coarse to prove the update
//! stays under the limit. [`DynamoDbStore::fallbacks`] counts them. Layout,
//! translations and costs: `docs/adr/0004-dynamodb-layout.md`.
//!
//! ```no_run
//! use backend_dynamodb::{DynamoDbConfig, DynamoDbStore};
//! use flowstate_core::store::{Condition, Item, Key, Mutation, PutMode, StateStore, TableName};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // moto or LocalStack on loopback; for AWS, leave out the endpoint.
//! let config = DynamoDbConfig::from_url("dynamodb://?endpoint=http://127.0.0.1:5000&region=us-east-1").unwrap();
//! let store = DynamoDbStore::open(config).await.unwrap();
//! let key = Key::new(TableName::new("accounts").unwrap(), "alice", "");
//! store.put(&key, Item::new().with("balance", 10), PutMode::Create).await.unwrap();
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
mod expr;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, CancellationReason, ConditionCheck, Delete, KeySchemaElement,
    KeyType, Put, ReturnValue, ReturnValuesOnConditionCheckFailure, ScalarAttributeType, TableStatus,
    TransactWriteItem, Update,
};
use flowstate_core::store::eval::{check_size, conditions_hold, updated};
use flowstate_core::store::{
    Capabilities, Condition, ErrorKind, Item, Key, Mutation, Page, PageRequest, PutMode, StateStore, StoreError,
    StoreResult, TableName, UpdateStrategy, WriteOp,
};

pub use crate::codec::dynamodb_item_size;
use crate::codec::{Attrs, PK, SK, Stored, VER};
pub use crate::config::{
    DEFAULT_MAX_ITEM_BYTES, DEFAULT_TABLE_PREFIX, DynamoDbConfig, ENV_NAMESPACE, ENV_URL, StaticCredentials,
};
use crate::error::{Op, code_kind, kind_of, map_err};
use crate::expr::{Cond, Expr, UpdatePlan, always_false, item_absent, item_exists, plan_update};

/// Largest page one `scan` returns (DynamoDB also stops a page at 1 MB).
pub const MAX_PAGE: u32 = 1000;

/// Most operations in one `transact` (DynamoDB's `TransactWriteItems` limit).
pub const MAX_TRANSACT_OPS: usize = 100;

/// Compare-and-swap attempts of a fallback before giving up with `Conflict`.
const CAS_ATTEMPTS: usize = 16;

/// Attempts of one `transact` (refusals the reference evaluator overrules,
/// throttled items) before giving up with `Conflict`.
const TRANSACT_ATTEMPTS: u32 = 16;

/// The DynamoDB store of one namespace (one DynamoDB table). Cheap to clone.
#[derive(Clone, Debug)]
pub struct DynamoDbStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: Client,
    table: String,
    max_item_bytes: usize,
    throttle_retries: u32,
    requests: AtomicU64,
    fallbacks: AtomicU64,
}

impl DynamoDbStore {
    /// Build a client from `config` (static or environment credentials,
    /// region, endpoint; SDK retries off, timeouts on) and open the
    /// namespace's table, creating it on first use.
    pub async fn open(config: DynamoDbConfig) -> StoreResult<Self> {
        config.validate()?;
        let client = Client::from_conf(sdk_config(&config)?);
        Self::from_client(client, config).await
    }

    /// Open the namespace's table with a client you built, e.g. from
    /// `aws-config`'s standard credential chain:
    ///
    /// ```text
    /// let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    /// let store = DynamoDbStore::from_client(aws_sdk_dynamodb::Client::new(&sdk), DynamoDbConfig::default()).await?;
    /// ```
    ///
    /// Only the table, namespace and limit fields of `config` are used. Turn
    /// the client's retries off (`RetryConfig::disabled()`): the SDK would
    /// resend a write whose answer timed out, which this store reports as
    /// `Indeterminate` instead so the engine re-reads before acting.
    pub async fn from_client(client: Client, config: DynamoDbConfig) -> StoreResult<Self> {
        config.validate()?;
        let store = Self {
            inner: Arc::new(Inner {
                client,
                table: config.table_name(),
                max_item_bytes: config.max_item_bytes,
                throttle_retries: config.throttle_retries,
                requests: AtomicU64::new(0),
                fallbacks: AtomicU64::new(0),
            }),
        };
        store.ensure_table(config.create_table, config.table_wait()).await?;
        Ok(store)
    }

    /// The DynamoDB table of this namespace.
    pub fn table_name(&self) -> &str {
        &self.inner.table
    }

    /// The SDK client.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// DynamoDB requests sent so far (retries of throttled requests included).
    pub fn requests(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// Writes that needed the compare-and-swap fallback so far (see the crate docs).
    pub fn fallbacks(&self) -> u64 {
        self.inner.fallbacks.load(Ordering::Relaxed)
    }

    fn client_(&self) -> &Client {
        &self.inner.client
    }

    fn table(&self) -> &str {
        &self.inner.table
    }

    /// Run one request, retrying throttled ones with exponential backoff.
    async fn send<T, E, F, Fut>(&self, op: Op, mut request: F) -> Result<T, SdkError<E, HttpResponse>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let mut attempt = 0;
        loop {
            self.inner.requests.fetch_add(1, Ordering::Relaxed);
            match request().await {
                Err(e) if attempt < self.inner.throttle_retries && kind_of(&e, op) == ErrorKind::Throttled => {
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn ensure_table(&self, create: bool, wait: Duration) -> StoreResult<()> {
        let deadline = Instant::now() + wait;
        let table = self.table().to_owned();
        loop {
            let described = self.send(Op::Read, || self.client_().describe_table().table_name(&table).send()).await;
            match described {
                Ok(out) => {
                    let desc = out.table().ok_or_else(|| StoreError::corrupt("DescribeTable returned no table"))?;
                    check_key_schema(&table, desc.key_schema())?;
                    if desc.table_status() == Some(&TableStatus::Active) {
                        return Ok(());
                    }
                }
                Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => {
                    if !create {
                        return Err(StoreError::invalid(format!(
                            "DynamoDB table {table:?} does not exist and create_table is off"
                        )));
                    }
                    let created = self
                        .send(Op::Write, || {
                            self.client_()
                                .create_table()
                                .table_name(&table)
                                .billing_mode(BillingMode::PayPerRequest)
                                .key_schema(key_element(PK, KeyType::Hash))
                                .key_schema(key_element(SK, KeyType::Range))
                                .attribute_definitions(attr_definition(PK))
                                .attribute_definitions(attr_definition(SK))
                                .send()
                        })
                        .await;
                    match created {
                        Ok(_) => tracing::info!(table, "created DynamoDB table"),
                        // Another process created it first: wait for it like ours.
                        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_in_use_exception()) => {}
                        Err(e) => return Err(map_err(e, Op::Write)),
                    }
                    continue;
                }
                Err(e) => return Err(map_err(e, Op::Read)),
            }
            if Instant::now() >= deadline {
                return Err(StoreError::new(
                    ErrorKind::Unavailable,
                    format!("DynamoDB table {table:?} did not become ACTIVE within {wait:?}"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn get_stored(&self, key: &Key) -> StoreResult<Option<Stored>> {
        let out = self
            .send(Op::Read, || {
                self.client_()
                    .get_item()
                    .table_name(self.table())
                    .set_key(Some(codec::key_attrs(key)))
                    .consistent_read(true)
                    .send()
            })
            .await
            .map_err(|e| map_err(e, Op::Read))?;
        codec::decode_opt(out.item())
    }

    /// The reference outcome of an update on `current`: the new item, or the
    /// error the contract names (in its order: NotFound, ConditionFailed,
    /// InvalidInput, TooLarge).
    fn judge(&self, conditions: &[Condition], mutations: &[Mutation], current: Option<&Item>) -> StoreResult<Item> {
        updated(current, conditions, mutations, self.inner.max_item_bytes)
    }

    /// Conditional `PutItem` of a whole item at a known version: `Ok(None)`
    /// when written, `Ok(Some(current))` when the item had changed.
    async fn cas_put(
        &self,
        key: &Key,
        item: &Item,
        ver: Option<&AttributeValue>,
    ) -> StoreResult<Option<Option<Stored>>> {
        let attrs = codec::encode(key, item).map_err(StoreError::invalid)?;
        let mut e = Expr::default();
        let condition = version_condition(&mut e, ver);
        let (names, values) = e.into_parts(&[&condition]);
        let result = self
            .send(Op::Write, || {
                self.client_()
                    .put_item()
                    .table_name(self.table())
                    .set_item(Some(attrs.clone()))
                    .condition_expression(&condition)
                    .set_expression_attribute_names(names.clone())
                    .set_expression_attribute_values(values.clone())
                    .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                    .send()
            })
            .await;
        match result {
            Ok(_) => Ok(None),
            Err(e) => match put_refused(&e) {
                Some(old) => Ok(Some(codec::decode_opt(old)?)),
                None => Err(map_err(e, Op::Write)),
            },
        }
    }

    /// The fallback of an update: compute the new item from `current` with the
    /// reference evaluator and write it if the item is still that version.
    async fn cas_update(
        &self,
        key: &Key,
        conditions: &[Condition],
        mutations: &[Mutation],
        mut current: Option<Stored>,
    ) -> StoreResult<Item> {
        self.inner.fallbacks.fetch_add(1, Ordering::Relaxed);
        for _ in 0..CAS_ATTEMPTS {
            let next = self.judge(conditions, mutations, current.as_ref().map(|s| &s.item))?;
            let ver = current.as_ref().and_then(|s| s.ver.clone());
            match self.cas_put(key, &next, ver.as_ref()).await? {
                None => return Ok(next),
                Some(now) => current = now,
            }
        }
        Err(StoreError::new(ErrorKind::Conflict, "the item kept changing during a compare-and-swap update"))
    }

    /// The fallback of a delete whose conditions hold on `current` by the reference.
    async fn cas_delete(&self, key: &Key, conditions: &[Condition], mut current: Option<Stored>) -> StoreResult<bool> {
        self.inner.fallbacks.fetch_add(1, Ordering::Relaxed);
        for _ in 0..CAS_ATTEMPTS {
            if !conditions_hold(conditions, current.as_ref().map(|s| &s.item)) {
                return Err(StoreError::condition_failed(current.map(|s| s.item)));
            }
            let Some(stored) = &current else { return Ok(false) };
            let mut e = Expr::default();
            let condition = version_condition(&mut e, stored.ver.as_ref());
            let (names, values) = e.into_parts(&[&condition]);
            let result = self
                .send(Op::Write, || {
                    self.client_()
                        .delete_item()
                        .table_name(self.table())
                        .set_key(Some(codec::key_attrs(key)))
                        .condition_expression(&condition)
                        .set_expression_attribute_names(names.clone())
                        .set_expression_attribute_values(values.clone())
                        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                        .send()
                })
                .await;
            match result {
                Ok(_) => return Ok(true),
                Err(e) => match delete_refused(&e) {
                    Some(old) => current = codec::decode_opt(old)?,
                    None => return Err(map_err(e, Op::Write)),
                },
            }
        }
        Err(StoreError::new(ErrorKind::Conflict, "the item kept changing during a compare-and-swap delete"))
    }

    /// One `TransactWriteItem` for op `i`, and how to judge its refusal.
    fn tx_item(&self, op: &WriteOp, fallback: Option<&TxFallback>) -> StoreResult<(TransactWriteItem, TxJudge)> {
        let on_fail = ReturnValuesOnConditionCheckFailure::AllOld;
        // An optional condition as the builder's three optional parts.
        let optional_parts = |condition: Option<(String, Expr)>| match condition {
            Some((c, e)) => {
                let (n, v) = e.into_parts(&[&c]);
                (Some(c), n, v)
            }
            None => (None, None, None),
        };
        let probe = |key: &Key| -> StoreResult<TransactWriteItem> {
            let mut e = Expr::default();
            let condition = always_false(&mut e);
            let (names, values) = e.into_parts(&[&condition]);
            let check = ConditionCheck::builder()
                .table_name(self.table())
                .set_key(Some(codec::key_attrs(key)))
                .condition_expression(condition)
                .set_expression_attribute_names(names)
                .set_expression_attribute_values(values)
                .return_values_on_condition_check_failure(on_fail.clone())
                .build()
                .map_err(build_err)?;
            Ok(TransactWriteItem::builder().condition_check(check).build())
        };
        let put = |key: &Key, item: &Item, condition: Option<(String, Expr)>| -> StoreResult<TransactWriteItem> {
            let attrs = codec::encode(key, item).map_err(StoreError::invalid)?;
            let (condition, names, values) = optional_parts(condition);
            let put = Put::builder()
                .table_name(self.table())
                .set_item(Some(attrs))
                .set_condition_expression(condition)
                .set_expression_attribute_names(names)
                .set_expression_attribute_values(values)
                .return_values_on_condition_check_failure(on_fail.clone())
                .build()
                .map_err(build_err)?;
            Ok(TransactWriteItem::builder().put(put).build())
        };
        let delete = |key: &Key, condition: Option<(String, Expr)>| -> StoreResult<TransactWriteItem> {
            let (condition, names, values) = optional_parts(condition);
            let delete = Delete::builder()
                .table_name(self.table())
                .set_key(Some(codec::key_attrs(key)))
                .set_condition_expression(condition)
                .set_expression_attribute_names(names)
                .set_expression_attribute_values(values)
                .return_values_on_condition_check_failure(on_fail.clone())
                .build()
                .map_err(build_err)?;
            Ok(TransactWriteItem::builder().delete(delete).build())
        };
        let cas = |ver: Option<&AttributeValue>| {
            let mut e = Expr::default();
            (version_condition(&mut e, ver), e)
        };

        Ok(match (op, fallback) {
            (WriteOp::Put { key, item, mode }, _) => {
                if let Err(too_large) = check_size(item, self.inner.max_item_bytes) {
                    return Ok((probe(key)?, TxJudge::Local(too_large)));
                }
                let condition = (*mode == PutMode::Create).then(|| {
                    let mut e = Expr::default();
                    (item_absent(&mut e).render(), e)
                });
                match put(key, item, condition) {
                    Ok(twi) => (twi, TxJudge::Put { create: *mode == PutMode::Create }),
                    Err(unencodable) => (probe(key)?, TxJudge::Local(unencodable)),
                }
            }
            (WriteOp::Update { key, .. }, Some(TxFallback::Put { item, ver })) => {
                (put(key, item, Some(cas(ver.as_ref())))?, TxJudge::Update { unencodable: None })
            }
            (WriteOp::Update { key, conditions, mutations }, _) => {
                match plan_update(conditions, mutations, self.inner.max_item_bytes) {
                    UpdatePlan::Native { condition, update, expr } => {
                        let (names, values) = expr.into_parts(&[&condition, &update]);
                        let update = Update::builder()
                            .table_name(self.table())
                            .set_key(Some(codec::key_attrs(key)))
                            .condition_expression(condition)
                            .update_expression(update)
                            .set_expression_attribute_names(names)
                            .set_expression_attribute_values(values)
                            .return_values_on_condition_check_failure(on_fail.clone())
                            .build()
                            .map_err(build_err)?;
                        (TransactWriteItem::builder().update(update).build(), TxJudge::Update { unencodable: None })
                    }
                    UpdatePlan::Probe { unencodable } => (probe(key)?, TxJudge::Update { unencodable }),
                }
            }
            (WriteOp::Delete { key, .. }, Some(TxFallback::Delete { ver })) => {
                (delete(key, Some(cas(ver.as_ref())))?, TxJudge::Delete)
            }
            (WriteOp::Delete { key, .. }, Some(TxFallback::StillAbsent)) => {
                let mut e = Expr::default();
                let condition = item_absent(&mut e).render();
                let (names, values) = e.into_parts(&[&condition]);
                let check = ConditionCheck::builder()
                    .table_name(self.table())
                    .set_key(Some(codec::key_attrs(key)))
                    .condition_expression(condition)
                    .set_expression_attribute_names(names)
                    .set_expression_attribute_values(values)
                    .return_values_on_condition_check_failure(on_fail)
                    .build()
                    .map_err(build_err)?;
                (TransactWriteItem::builder().condition_check(check).build(), TxJudge::Delete)
            }
            (WriteOp::Delete { key, conditions }, _) => {
                let mut e = Expr::default();
                match expr::conditions(&mut e, conditions).unwrap_or(Cond::False) {
                    Cond::True => (delete(key, None)?, TxJudge::Delete),
                    Cond::False => (probe(key)?, TxJudge::Delete),
                    c => (delete(key, Some((c.render(), e)))?, TxJudge::Delete),
                }
            }
        })
    }

    /// Judge op `op`'s refusal on its returned item: the op's error, or the
    /// fallback to send instead in the next attempt.
    fn tx_verdict(&self, op: &WriteOp, judge: TxJudge, current: Option<Stored>) -> Result<TxFallback, StoreError> {
        match (op, judge) {
            (_, TxJudge::Local(err)) => Err(err),
            (WriteOp::Put { .. }, TxJudge::Put { create: true }) => match current {
                Some(s) => Err(StoreError::condition_failed(Some(s.item))),
                None => Ok(TxFallback::Retry),
            },
            (WriteOp::Update { conditions, mutations, .. }, TxJudge::Update { unencodable }) => {
                let next = self.judge(conditions, mutations, current.as_ref().map(|s| &s.item))?;
                if let Some(msg) = unencodable {
                    return Err(StoreError::invalid(msg));
                }
                Ok(TxFallback::Put { item: next, ver: current.and_then(|s| s.ver) })
            }
            (WriteOp::Delete { conditions, .. }, TxJudge::Delete) => {
                if !conditions_hold(conditions, current.as_ref().map(|s| &s.item)) {
                    return Err(StoreError::condition_failed(current.map(|s| s.item)));
                }
                Ok(match current {
                    Some(s) => TxFallback::Delete { ver: s.ver },
                    None => TxFallback::StillAbsent,
                })
            }
            _ => Ok(TxFallback::Retry),
        }
    }
}

/// How a refused transaction op is judged.
#[derive(Debug)]
enum TxJudge {
    /// An error known before sending (the op was a probe that always fails).
    Local(StoreError),
    /// A `Put`; with `Create`, refused means the item exists.
    Put { create: bool },
    /// An update (native, probe or compare-and-swap).
    Update { unencodable: Option<String> },
    /// A delete (native, probe or compare-and-swap).
    Delete,
}

/// What to send for an op after the reference evaluator overruled its refusal.
#[derive(Clone, Debug)]
enum TxFallback {
    /// The reference's new item, at the version it was computed from.
    Put { item: Item, ver: Option<AttributeValue> },
    /// Delete the item at the version the conditions were checked on.
    Delete { ver: Option<AttributeValue> },
    /// The item was absent and the conditions hold there: check it still is.
    StillAbsent,
    /// Send the op as before.
    Retry,
}

#[async_trait]
impl StateStore for DynamoDbStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities::new(self.inner.max_item_bytes)
            .with_atomic_batch(true)
            .with_update(UpdateStrategy::Native)
            .with_current_on_failure(true)
            .with_max_page(MAX_PAGE)
    }

    fn requests_sent(&self) -> Option<u64> {
        Some(self.requests())
    }

    async fn get(&self, key: &Key) -> StoreResult<Option<Item>> {
        Ok(self.get_stored(key).await?.map(|s| s.item))
    }

    async fn put(&self, key: &Key, item: Item, mode: PutMode) -> StoreResult<()> {
        check_size(&item, self.inner.max_item_bytes)?;
        let attrs = codec::encode(key, &item).map_err(StoreError::invalid)?;
        let mut e = Expr::default();
        let condition = (mode == PutMode::Create).then(|| item_absent(&mut e).render());
        let (names, values) = e.into_parts(&[condition.as_deref().unwrap_or("")]);
        let result = self
            .send(Op::Write, || {
                self.client_()
                    .put_item()
                    .table_name(self.table())
                    .set_item(Some(attrs.clone()))
                    .set_condition_expression(condition.clone())
                    .set_expression_attribute_names(names.clone())
                    .set_expression_attribute_values(values.clone())
                    .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                    .send()
            })
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => match put_refused(&e) {
                Some(old) => Err(StoreError::condition_failed(codec::decode_opt(old)?.map(|s| s.item))),
                None => Err(map_err(e, Op::Write)),
            },
        }
    }

    async fn update(&self, key: &Key, conditions: &[Condition], mutations: &[Mutation]) -> StoreResult<Item> {
        let (condition, update, expr) = match plan_update(conditions, mutations, self.inner.max_item_bytes) {
            UpdatePlan::Native { condition, update, expr } => (condition, update, expr),
            UpdatePlan::Probe { unencodable } => {
                // No item can take it: read the item to name the error in the contract's order.
                let current = self.get_stored(key).await?;
                self.judge(conditions, mutations, current.as_ref().map(|s| &s.item))?;
                if let Some(msg) = unencodable {
                    return Err(StoreError::invalid(msg));
                }
                return self.cas_update(key, conditions, mutations, current).await;
            }
        };
        let (names, values) = expr.into_parts(&[&condition, &update]);
        let result = self
            .send(Op::Write, || {
                self.client_()
                    .update_item()
                    .table_name(self.table())
                    .set_key(Some(codec::key_attrs(key)))
                    .condition_expression(&condition)
                    .update_expression(&update)
                    .set_expression_attribute_names(names.clone())
                    .set_expression_attribute_values(values.clone())
                    .return_values(ReturnValue::AllNew)
                    .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                    .send()
            })
            .await;
        match result {
            Ok(out) => {
                let attrs = out.attributes().ok_or_else(|| StoreError::corrupt("UpdateItem returned no item"))?;
                Ok(codec::decode(attrs)?.item)
            }
            Err(e) => match update_refused(&e) {
                Some(old) => {
                    let current = codec::decode_opt(old)?;
                    // Refused: the reference names the error, or overrules a guard
                    // that was only conservative (absent map, coarse size bound).
                    self.judge(conditions, mutations, current.as_ref().map(|s| &s.item))?;
                    self.cas_update(key, conditions, mutations, current).await
                }
                None => Err(map_err(e, Op::Write)),
            },
        }
    }

    async fn delete(&self, key: &Key, conditions: &[Condition]) -> StoreResult<bool> {
        let mut e = Expr::default();
        let condition = match expr::conditions(&mut e, conditions).unwrap_or(Cond::False) {
            Cond::False => {
                let current = self.get_stored(key).await?;
                return self.cas_delete(key, conditions, current).await;
            }
            Cond::True => None,
            c => Some(c.render()),
        };
        let (names, values) = e.into_parts(&[condition.as_deref().unwrap_or("")]);
        let result = self
            .send(Op::Write, || {
                self.client_()
                    .delete_item()
                    .table_name(self.table())
                    .set_key(Some(codec::key_attrs(key)))
                    .set_condition_expression(condition.clone())
                    .set_expression_attribute_names(names.clone())
                    .set_expression_attribute_values(values.clone())
                    .return_values(ReturnValue::AllOld)
                    .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                    .send()
            })
            .await;
        match result {
            Ok(out) => Ok(out.attributes().is_some_and(|a| !a.is_empty())),
            Err(e) => match delete_refused(&e) {
                Some(old) => {
                    let current = codec::decode_opt(old)?;
                    if !conditions_hold(conditions, current.as_ref().map(|s| &s.item)) {
                        return Err(StoreError::condition_failed(current.map(|s| s.item)));
                    }
                    self.cas_delete(key, conditions, current).await
                }
                None => Err(map_err(e, Op::Write)),
            },
        }
    }

    async fn scan(&self, table: &TableName, partition: &[u8], page: PageRequest) -> StoreResult<Page> {
        let limit = page.limit.clamp(1, MAX_PAGE);
        let mut e = Expr::default();
        let pk = e.name(PK);
        let p = e.value(codec::partition_key(table, partition));
        let mut key_condition = format!("{pk} = {p}");
        if let Some(after) = &page.after {
            let sk = e.name(SK);
            let a = e.value(codec::sort_key(after));
            key_condition.push_str(&format!(" AND {sk} > {a}"));
        }
        let (names, values) = e.into_parts(&[&key_condition]);
        let out = self
            .send(Op::Read, || {
                self.client_()
                    .query()
                    .table_name(self.table())
                    .key_condition_expression(&key_condition)
                    .set_expression_attribute_names(names.clone())
                    .set_expression_attribute_values(values.clone())
                    .consistent_read(true)
                    // One more than asked: an exhausted partition says so now.
                    .limit(i32::try_from(limit).unwrap_or(i32::MAX).saturating_add(1))
                    .send()
            })
            .await
            .map_err(|e| map_err(e, Op::Read))?;
        let mut items = Vec::with_capacity(out.items().len());
        for attrs in out.items() {
            items.push((codec::decode_sort_key(attrs.get(SK))?, codec::decode(attrs)?.item));
        }
        let next = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|(sk, _)| sk.clone())
        } else if let Some(last_key) = out.last_evaluated_key() {
            // DynamoDB stopped early (1 MB per response): resume after what it read.
            match items.last() {
                Some((sk, _)) => Some(sk.clone()),
                None => Some(codec::decode_sort_key(last_key.get(SK))?),
            }
        } else {
            None
        };
        Ok(Page { items, next })
    }

    async fn transact(&self, ops: Vec<WriteOp>) -> StoreResult<()> {
        if ops.is_empty() {
            return Ok(());
        }
        if ops.len() > MAX_TRANSACT_OPS {
            return Err(StoreError::invalid(format!(
                "a DynamoDB transaction holds at most {MAX_TRANSACT_OPS} operations, got {}",
                ops.len()
            )));
        }
        let mut seen = HashSet::new();
        for op in &ops {
            let key = match op {
                WriteOp::Put { key, .. } | WriteOp::Update { key, .. } | WriteOp::Delete { key, .. } => key,
            };
            if !seen.insert(key) {
                return Err(StoreError::invalid(format!(
                    "a DynamoDB transaction allows one operation per item; {key:?} appears twice"
                )));
            }
        }
        let mut fallbacks: Vec<Option<TxFallback>> = vec![None; ops.len()];
        let mut throttles = 0;
        for _ in 0..TRANSACT_ATTEMPTS {
            let mut items = Vec::with_capacity(ops.len());
            let mut judges = Vec::with_capacity(ops.len());
            for (op, fallback) in ops.iter().zip(&fallbacks) {
                let (item, judge) = self.tx_item(op, fallback.as_ref().filter(|f| !matches!(f, TxFallback::Retry)))?;
                items.push(item);
                judges.push(judge);
            }
            let token = uuid::Uuid::new_v4().simple().to_string();
            let result = self
                .send(Op::Write, || {
                    self.client_()
                        .transact_write_items()
                        .set_transact_items(Some(items.clone()))
                        .client_request_token(&token)
                        .send()
                })
                .await;
            let err = match result {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            let Some(reasons) = cancellation_reasons(&err) else { return Err(map_err(err, Op::Write)) };
            let reasons: Vec<CancellationReason> = reasons.to_vec();
            // The first op (in order) with a real error decides. A refusal the
            // reference overrules becomes a fallback for the next attempt; a
            // throttled op leaves the ops after it undecided.
            let (mut overruled, mut throttled) = (false, false);
            for (i, (reason, judge)) in reasons.into_iter().zip(judges).enumerate() {
                let code = reason.code().unwrap_or("None");
                if code == "None" {
                    continue;
                }
                match code_kind(code, reason.message().unwrap_or(""), Op::Write) {
                    Some(ErrorKind::ConditionFailed) => {
                        let current = codec::decode_opt(reason.item())?;
                        fallbacks[i] = Some(self.tx_verdict(&ops[i], judge, current)?);
                        overruled = true;
                    }
                    Some(ErrorKind::Throttled) if throttles < self.inner.throttle_retries => {
                        throttled = true;
                        break;
                    }
                    kind => {
                        let kind = kind.unwrap_or(ErrorKind::Indeterminate);
                        let message = format!(
                            "DynamoDB transaction cancelled at op {i}: {code} {}",
                            reason.message().unwrap_or("")
                        );
                        return Err(StoreError::new(kind, message).with_source(err));
                    }
                }
            }
            if throttled {
                tokio::time::sleep(backoff(throttles)).await;
                throttles += 1;
            } else if overruled {
                self.inner.fallbacks.fetch_add(1, Ordering::Relaxed);
            } else {
                return Err(StoreError::new(
                    ErrorKind::Conflict,
                    "DynamoDB cancelled the transaction without a reason",
                )
                .with_source(err));
            }
        }
        Err(StoreError::new(ErrorKind::Conflict, "the DynamoDB transaction did not settle"))
    }
}

/// `#ver = :v` (or, for items without a version, present and unversioned).
fn version_condition(e: &mut Expr, ver: Option<&AttributeValue>) -> String {
    match ver {
        Some(v) => {
            let n = e.name(VER);
            let v = e.value(v.clone());
            format!("{n} = {v}")
        }
        None => {
            let exists = item_exists(e).render();
            let n = e.name(VER);
            format!("{exists} AND attribute_not_exists({n})")
        }
    }
}

fn backoff(attempt: u32) -> Duration {
    let base = 25u64.saturating_mul(1 << attempt.min(6)).min(1_000);
    // Jitter: 50-100 % of the base, from the random bits uuid already gives us.
    let jitter = 50 + uuid::Uuid::new_v4().as_u128() as u64 % 51;
    Duration::from_millis(base * jitter / 100)
}

fn build_err(e: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::invalid("a DynamoDB transaction item could not be built").with_source(e)
}

fn key_element(name: &str, key_type: KeyType) -> KeySchemaElement {
    KeySchemaElement::builder().attribute_name(name).key_type(key_type).build().expect("name and type are set")
}

fn attr_definition(name: &str) -> AttributeDefinition {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::B)
        .build()
        .expect("name and type are set")
}

fn check_key_schema(table: &str, schema: &[KeySchemaElement]) -> StoreResult<()> {
    let has = |name: &str, t: KeyType| schema.iter().any(|k| k.attribute_name() == name && *k.key_type() == t);
    if schema.len() == 2 && has(PK, KeyType::Hash) && has(SK, KeyType::Range) {
        Ok(())
    } else {
        Err(StoreError::corrupt(format!(
            "DynamoDB table {table:?} exists but its key is not (pk HASH, sk RANGE): not a Flowstate table"
        )))
    }
}

/// The SDK configuration for `config`: the SDK's default HTTPS client,
/// static credentials, SDK retries off (we retry throttling ourselves and
/// report a lost answer as `Indeterminate`), timeouts on.
fn sdk_config(config: &DynamoDbConfig) -> StoreResult<aws_sdk_dynamodb::Config> {
    let credentials = match config.credentials.clone().or_else(StaticCredentials::from_env) {
        Some(c) => Credentials::new(c.access_key_id, c.secret_access_key, c.session_token, None, "flowstate"),
        // Local servers (moto, LocalStack) accept any credentials.
        None if config.endpoint.is_some() => Credentials::new("test", "test", None, None, "flowstate-local"),
        None => {
            return Err(StoreError::invalid(
                "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, put them in the config, \
                 or build a client with aws-config and use DynamoDbStore::from_client",
            ));
        }
    };
    let mut builder = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(config.region.clone()))
        .credentials_provider(credentials)
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(config.connect_timeout())
                .operation_attempt_timeout(config.request_timeout())
                .build(),
        );
    if let Some(endpoint) = &config.endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    Ok(builder.build())
}

/// The old item of a refused `PutItem` (`Some(None)`: refused, item absent).
fn put_refused(e: &SdkError<PutItemError, HttpResponse>) -> Option<Option<&Attrs>> {
    match e.as_service_error() {
        Some(PutItemError::ConditionalCheckFailedException(c)) => Some(c.item()),
        _ => None,
    }
}

fn update_refused(e: &SdkError<UpdateItemError, HttpResponse>) -> Option<Option<&Attrs>> {
    match e.as_service_error() {
        Some(UpdateItemError::ConditionalCheckFailedException(c)) => Some(c.item()),
        _ => None,
    }
}

fn delete_refused(e: &SdkError<DeleteItemError, HttpResponse>) -> Option<Option<&Attrs>> {
    match e.as_service_error() {
        Some(DeleteItemError::ConditionalCheckFailedException(c)) => Some(c.item()),
        _ => None,
    }
}

fn cancellation_reasons(e: &SdkError<TransactWriteItemsError, HttpResponse>) -> Option<&[CancellationReason]> {
    match e.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(t)) => Some(t.cancellation_reasons()),
        _ => None,
    }
}
