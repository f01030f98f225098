//! Reference workflows the engine scenarios, crash sweeps, multi-process kill
//! tests and benchmarks share: a bank transfer (read and conditionally debit
//! one account, read and conditionally credit the other, a side-effect step, a
//! synchronous audit call) and a counter (read, then write the increment).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use flowstate_core::layout::{self, InstanceId};
use flowstate_core::runtime::RuntimeBuilder;
use flowstate_core::store::StateStore;
use flowstate_core::{Context, Predicate, Result, Runtime, StepKey};
use serde::{Deserialize, Serialize};

/// Table of account balances.
pub const ACCOUNTS: &str = "accounts";
/// Table of audit records, keyed by transfer instance id.
pub const AUDIT: &str = "audit";
/// Table of counters.
pub const COUNTERS: &str = "counters";

/// Input of `transfer`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// Debited account.
    pub from: String,
    /// Credited account.
    pub to: String,
    /// Amount moved.
    pub amount: i64,
}

/// Output of `transfer`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferResult {
    /// Whether money moved (false: insufficient funds or a concurrent change).
    pub ok: bool,
    /// The debited account's balance after the transfer.
    pub from_balance: i64,
    /// The side-effect step's receipt.
    pub receipt: Option<String>,
    /// The audit function's logged timestamp.
    pub audited_at: Option<u64>,
}

/// One audit record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// The transfer's instance id.
    pub transfer: String,
    /// Debited account.
    pub from: String,
    /// Credited account.
    pub to: String,
    /// Amount moved.
    pub amount: i64,
}

/// Watches the side-effect step: how often its closure ran, and how often it
/// ran although its result was already recorded (must stay 0).
#[derive(Debug)]
pub struct Effects {
    store: Arc<dyn StateStore>,
    runs: AtomicU64,
    late_runs: AtomicU64,
}

impl Effects {
    /// An observer checking the log in `store` (the raw store, without fault injection).
    pub fn new(store: Arc<dyn StateStore>) -> Arc<Self> {
        Arc::new(Self { store, runs: AtomicU64::new(0), late_runs: AtomicU64::new(0) })
    }

    /// Closure runs so far.
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::SeqCst)
    }

    /// Runs that happened after the step's result was recorded (violations).
    pub fn late_runs(&self) -> u64 {
        self.late_runs.load(Ordering::SeqCst)
    }

    async fn charge(&self, key: StepKey) -> std::result::Result<String, String> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let logged = self.store.get(&layout::oplog_key(&key.instance, key.step)).await.map_err(|e| e.to_string())?;
        if logged.is_some() {
            self.late_runs.fetch_add(1, Ordering::SeqCst);
        }
        Ok(format!("receipt-{key}"))
    }
}

/// Most compare-and-swap attempts per account before the transfer gives up
/// (a deterministic, recorded outcome like any other).
const MAX_CAS_ATTEMPTS: usize = 1000;

/// The condition "the balance is still what we read" (absent reads as 0).
fn unchanged(read: Option<i64>) -> Predicate {
    match read {
        Some(v) => Predicate::value().eq(v),
        None => Predicate::value().missing(),
    }
}

/// The transfer handler. Both balance changes are compare-and-swap loops on
/// the value read, so concurrent transfers touching one account serialize
/// instead of losing updates; every attempt is logged, so a replay retraces
/// the same path.
pub async fn transfer(ctx: Context, t: Transfer, effects: Arc<Effects>) -> Result<TransferResult> {
    let mut from_balance = None;
    for _ in 0..MAX_CAS_ATTEMPTS {
        let read: Option<i64> = ctx.read(ACCOUNTS, &t.from).await?;
        let from = read.unwrap_or(0);
        if from < t.amount {
            return Ok(TransferResult { ok: false, from_balance: from, receipt: None, audited_at: None });
        }
        if ctx.cond_write(ACCOUNTS, &t.from, &(from - t.amount), unchanged(read)).await? {
            from_balance = Some(from - t.amount);
            break;
        }
    }
    let Some(from_balance) = from_balance else {
        return Err(flowstate_core::Error::handler("debit kept conflicting"));
    };
    let mut credited = false;
    for _ in 0..MAX_CAS_ATTEMPTS {
        let read: Option<i64> = ctx.read(ACCOUNTS, &t.to).await?;
        if ctx.cond_write(ACCOUNTS, &t.to, &(read.unwrap_or(0) + t.amount), unchanged(read)).await? {
            credited = true;
            break;
        }
    }
    if !credited {
        return Err(flowstate_core::Error::handler("credit kept conflicting"));
    }
    let receipt: String = ctx.step("charge", |key| async move { effects.charge(key).await }).await?;
    let record =
        AuditRecord { transfer: ctx.instance_id().as_str().to_string(), from: t.from, to: t.to, amount: t.amount };
    let audited_at: u64 = ctx.invoke("audit", &record).await?;
    Ok(TransferResult { ok: true, from_balance, receipt: Some(receipt), audited_at: Some(audited_at) })
}

/// The audit handler: writes the record under the transfer's id.
pub async fn audit(ctx: Context, record: AuditRecord) -> Result<u64> {
    ctx.write(AUDIT, &record.transfer.clone(), &record).await?;
    ctx.now().await
}

/// The counter handler: increments `counters[key]` and returns the new value.
pub async fn counter(ctx: Context, key: String) -> Result<i64> {
    let n: i64 = ctx.read(COUNTERS, &key).await?.unwrap_or(0);
    ctx.write(COUNTERS, &key, &(n + 1)).await?;
    Ok(n + 1)
}

/// Sets `table[key] = value` (test set-up through the engine).
pub async fn seed(ctx: Context, (table, key, value): (String, String, serde_json::Value)) -> Result<()> {
    ctx.write(&table, &key, &value).await
}

/// Register `transfer`, `audit`, `counter` and `seed`.
pub fn register(builder: RuntimeBuilder, effects: Arc<Effects>) -> RuntimeBuilder {
    builder
        .register("transfer", move |ctx, t: Transfer| transfer(ctx, t, effects.clone()))
        .register("audit", audit)
        .register("counter", counter)
        .register("seed", seed)
}

/// Set balances through the engine (so the data has the DAAL layout).
pub async fn seed_accounts(rt: &Runtime, balances: &[(&str, i64)]) -> Result<()> {
    for (account, balance) in balances {
        let input = (ACCOUNTS, *account, serde_json::json!(balance));
        rt.invoke::<_, ()>("seed", &input, None).await?;
    }
    Ok(())
}

/// The balance of an account (unlogged read).
pub async fn balance(rt: &Runtime, account: &str) -> Result<i64> {
    Ok(rt.peek(ACCOUNTS, account).await?.and_then(|v| v.as_i64()).unwrap_or(0))
}

/// How many write-log entries the audit record of `transfer` has across its
/// rows (exactly one if it was written exactly once and not yet collected).
pub async fn audit_writes(rt: &Runtime, transfer: &InstanceId) -> Result<usize> {
    let rows = rt.key_rows(AUDIT, transfer.as_str()).await?;
    Ok(rows.iter().map(|r| r.entries.len()).sum())
}
