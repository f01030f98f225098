//! Exactly-once engine scenarios, run on every backend: replay of each
//! operation, row chaining under concurrent writers, collector recovery,
//! garbage collection, divergence detection, bad input, round-trip targets,
//! crash-point sweeps over reference workflows, concurrent duplicates, and a
//! property test of concurrent crashing writers against a sequential model.
//!
//! Each case gets a fresh store (namespace) and its own [`ManualClock`], so
//! lease expiry and GC windows are moved by hand instead of slept through.

#![allow(clippy::print_stdout, reason = "the sweep and round-trip reports belong in the test output")]

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowstate_core::layout::{self, InstanceId};
use flowstate_core::retry::RetryPolicy;
use flowstate_core::store::{
    Condition, ErrorKind, Item, Key, Mutation, PutMode, StateStore, StoreError, StoreResult, UpdateStrategy, WriteOp,
};
use flowstate_core::testing::{FaultMode, FaultPlan, FaultyStore};
use flowstate_core::{Clock, Config, Context, Error, ManualClock, Predicate, Runtime, RuntimeBuilder};
use serde_json::{Value, json};

use crate::intercept::{Hooks, Intercept};
use crate::workflows::{self, ACCOUNTS, COUNTERS, Effects, Transfer, TransferResult};

/// The engine case list (see the module docs).
#[doc(hidden)]
#[macro_export]
macro_rules! __engine_cases {
    ($factory:path) => {
        $crate::__stamp_cases!($factory; engine_cases;
            finished_instance_returns_its_result_without_running_again,
            a_duplicate_that_ignores_already_finished_makes_no_effect,
            read_replays_the_logged_value,
            write_is_replayed_not_repeated,
            indeterminate_write_is_not_reapplied_over_a_later_write,
            a_racing_twin_s_logged_result_wins,
            cond_write_outcome_is_recorded_and_replayed,
            deterministic_values_are_stable_across_replays,
            sync_invoke_runs_the_callee_once,
            rows_chain_under_concurrent_writers,
            collector_recovers_crashed_sync_and_async_callees,
            collector_leaves_live_leases_alone,
            a_panicking_handler_lets_its_lease_lapse,
            gc_collects_finished_instances_and_keeps_results,
            divergent_read_replay_is_rejected,
            divergent_write_replay_is_rejected,
            bad_input_gets_typed_errors,
            corrupt_or_foreign_rows_are_typed_errors,
            round_trips_meet_targets,
            crash_point_sweep_bank_transfer,
            crash_point_sweep_counter,
            transient_faults_are_retried_transparently,
            duplicate_invocations_wait_for_the_live_execution,
            concurrent_transfers_on_shared_accounts_conserve_money,
            concurrent_executions_of_one_instance_stay_exactly_once,
            concurrent_crashing_writers_match_a_sequential_model,
            crash_point_sweep_bank_transfer_without_batches,
            collector_recovers_crashed_sync_and_async_callees_without_batches,
            gc_collects_finished_instances_and_keeps_results_without_batches,
        );
    };
}

const LEASE: Duration = Duration::from_secs(30);

fn test_config() -> Config {
    Config::default()
        .lease(LEASE)
        .retry(RetryPolicy { attempts: 4, base_delay: Duration::from_millis(1), max_delay: Duration::from_millis(8) })
        .duplicate_wait(Duration::from_secs(20))
}

/// Everything one case shares between its runtimes.
struct Harness {
    store: Arc<dyn StateStore>,
    clock: Arc<ManualClock>,
    effects: Arc<Effects>,
}

impl Harness {
    fn new(store: Arc<dyn StateStore>) -> Self {
        Self { effects: Effects::new(store.clone()), store, clock: Arc::new(ManualClock::new()) }
    }

    /// A runtime (fresh caches, like a new process) on `store` with the reference workflows.
    /// A runtime builder on the shared store and clock with `config`, for
    /// cases that register their own handlers.
    fn builder(&self, config: Config) -> RuntimeBuilder {
        Runtime::builder(self.store.clone()).clock(self.clock.clone()).config(config)
    }

    fn runtime_on(&self, store: Arc<dyn StateStore>, config: Config) -> Runtime {
        let builder = Runtime::builder(store).clock(self.clock.clone()).config(config);
        workflows::register(builder, self.effects.clone()).build()
    }

    fn runtime(&self) -> Runtime {
        self.runtime_on(self.store.clone(), test_config())
    }

    /// A runtime whose store "dies" at call `k` in `mode`.
    fn crashing_runtime(&self, k: u64, mode: FaultMode) -> (Runtime, Arc<FaultyStore<Arc<dyn StateStore>>>) {
        let faulty =
            Arc::new(FaultyStore::new(self.store.clone(), FaultPlan::At { call: k, mode }).crash_after_fault());
        (self.runtime_on(faulty.clone(), test_config()), faulty)
    }

    /// Let every lease expire.
    fn expire_leases(&self) {
        self.clock.advance(LEASE + Duration::from_secs(1));
    }
}

fn store_error(kind: ErrorKind) -> Error {
    Error::Store(StoreError::new(kind, "simulated transient failure"))
}

pub async fn finished_instance_returns_its_result_without_running_again(store: Arc<dyn StateStore>) {
    let h = Harness::new(store);
    let runs = Arc::new(AtomicU64::new(0));
    let r = runs.clone();
    let rt = h
        .builder(test_config())
        .register("hello", move |ctx: Context, name: String| {
            let r = r.clone();
            async move {
                // With lazy intents a duplicate may run the handler up to its
                // first context operation; count what runs after it.
                ctx.write("greetings", &name, &format!("hello {name}")).await?;
                r.fetch_add(1, Ordering::SeqCst);
                let stamp = ctx.uuid().await?;
                Ok(format!("hello {name} {stamp}"))
            }
        })
        .build();
    let first: String = rt.invoke("hello", "ann", Some("req-1")).await.unwrap();
    let second: String = rt.invoke("hello", "ann", Some("req-1")).await.unwrap();
    assert!(first.starts_with("hello ann "), "{first}");
    assert_eq!(second, first);
    assert_eq!(runs.load(Ordering::SeqCst), 1, "a finished instance must not run again");
    // A new runtime (another process) gets the recorded result too.
    let rt2 = Runtime::builder(h.store.clone())
        .clock(h.clock.clone())
        .register("hello", |_: Context, _: String| async { Ok::<_, Error>("must not run".to_string()) });
    let third: String = rt2.build().invoke("hello", "ann", Some("req-1")).await.unwrap();
    assert_eq!(third, first);
    // Minted ids are distinct instances.
    let _: String = rt.invoke("hello", "bob", None).await.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

pub async fn a_duplicate_that_ignores_already_finished_makes_no_effect(store: Arc<dyn StateStore>) {
    let h = Harness::new(store);
    let runs = Arc::new(AtomicU64::new(0));
    let r = runs.clone();
    let rt = h
        .builder(test_config())
        .register("stubborn", move |ctx: Context, (): ()| {
            let r = r.clone();
            async move {
                let run = r.fetch_add(1, Ordering::SeqCst);
                // Ignores every error of its first write, then writes elsewhere
                // on later runs (a handler bug): a duplicate must still do nothing.
                let _ = ctx.write("t", "first", &run).await;
                ctx.write("t", &format!("second-{run}"), &run).await?;
                Ok(run)
            }
        })
        .build();
    let first: u64 = rt.invoke("stubborn", &(), Some("stubborn-1")).await.unwrap();
    let again: u64 = rt.invoke("stubborn", &(), Some("stubborn-1")).await.unwrap();
    assert_eq!((first, again), (0, 0), "the duplicate returns the recorded outcome");
    assert_eq!(rt.peek("t", "first").await.unwrap(), Some(json!(0)));
    for run in 1..runs.load(Ordering::SeqCst) {
        assert_eq!(rt.peek("t", &format!("second-{run}")).await.unwrap(), None, "duplicate run {run} wrote");
    }
}

/// A handler that does `op` then fails transiently on its first execution,
/// so the instance stays unfinished and the next execution replays.
fn replay_runtime<F, Fut>(h: &Harness, op: F) -> (Runtime, Arc<AtomicU64>)
where
    F: Fn(Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, Error>> + Send + 'static,
{
    let executions = Arc::new(AtomicU64::new(0));
    let e = executions.clone();
    let op = Arc::new(op);
    let rt = h
        .builder(test_config())
        .register("replayed", move |ctx: Context, (): ()| {
            let (e, op) = (e.clone(), op.clone());
            async move {
                let v = op(ctx).await?;
                if e.fetch_add(1, Ordering::SeqCst) == 0 {
                    return Err(store_error(ErrorKind::Unavailable));
                }
                Ok(v)
            }
        })
        .register("seed", workflows::seed)
        .build();
    (rt, executions)
}

pub async fn read_replays_the_logged_value(store: Arc<dyn StateStore>) {
    let h = Harness::new(store);
    let (rt, _) = replay_runtime(&h, |ctx| async move {
        let v: Option<i64> = ctx.read("t", "k").await?;
        Ok(json!(v))
    });
    rt.invoke::<_, ()>("seed", &("t", "k", json!(1)), None).await.unwrap();
    let first = rt.invoke::<_, Value>("replayed", &(), Some("r1")).await;
    assert!(first.is_err());
    // Someone changes the value before the replay.
    rt.invoke::<_, ()>("seed", &("t", "k", json!(2)), None).await.unwrap();
    h.expire_leases();
    let replayed: Value = rt.invoke("replayed", &(), Some("r1")).await.unwrap();
    assert_eq!(replayed, json!(1), "a replayed read returns the logged value, not the current one");
    assert_eq!(rt.peek("t", "k").await.unwrap(), Some(json!(2)));
}

pub async fn write_is_replayed_not_repeated(store: Arc<dyn StateStore>) {
    let h = Harness::new(store);
    let (rt, _) = replay_runtime(&h, |ctx| async move {
        ctx.write("t", "k", &json!("first")).await?;
        Ok(Value::Null)
    });
    let first = rt.invoke::<_, Value>("replayed", &(), Some("w1")).await;
    assert!(first.is_err());
    // Another instance overwrites; the replayed write must not clobber it.
    rt.invoke::<_, ()>("seed", &("t", "k", json!("second")), None).await.unwrap();
    h.expire_leases();
    let _: Value = rt.invoke("replayed", &(), Some("w1")).await.unwrap();
    assert_eq!(rt.peek("t", "k").await.unwrap(), Some(json!("second")));
    let rows = rt.key_rows("t", "k").await.unwrap();
    let entries: usize = rows.iter().map(|r| r.entries.keys().filter(|e| e.ends_with(":w1")).count()).sum();
    assert_eq!(entries, 1, "exactly one write-log entry for the instance's step");
}

/// Applies the first update of a DAAL row, lets another writer overwrite the
/// row, then reports `Indeterminate`: the engine's retry must find its entry
/// and not apply its (now stale) value again.
#[derive(Debug)]
struct Interleaving {
    armed: AtomicBool,
}

#[async_trait::async_trait]
impl Hooks for Interleaving {
    async fn update(
        &self,
        inner: &dyn StateStore,
        key: &Key,
        conditions: &[Condition],
        mutations: &[Mutation],
    ) -> StoreResult<Item> {
        let out = inner.update(key, conditions, mutations).await?;
        if key.table == *layout::DATA {
            self.intrude(inner, key).await?;
        }
        Ok(out)
    }
    async fn transact(&self, inner: &dyn StateStore, ops: Vec<WriteOp>) -> StoreResult<()> {
        let data_key = ops.iter().find_map(|op| match op {
            WriteOp::Update { key, .. } if key.table == *layout::DATA => Some(key.clone()),
            _ => None,
        });
        inner.transact(ops).await?;
        match data_key {
            Some(key) => self.intrude(inner, &key).await,
            None => Ok(()),
        }
    }
}

impl Interleaving {
    /// Once armed: another writer overwrites the row, and our reply is lost.
    async fn intrude(&self, inner: &dyn StateStore, key: &Key) -> StoreResult<()> {
        if !self.armed.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        let intruder = [
            Mutation::Set(layout::row::VALUE.into(), json!("intruder")),
            Mutation::SetEntry { map: layout::row::LOG.into(), entry: "1:intruder".into(), value: json!({"k": "w"}) },
            Mutation::Add(layout::row::COUNT.into(), 1),
        ];
        inner.update(key, &[], &intruder).await?;
        Err(StoreError::new(ErrorKind::Indeterminate, "injected: reply lost"))
    }
}

pub async fn indeterminate_write_is_not_reapplied_over_a_later_write(store: Arc<dyn StateStore>) {
    let h = Harness::new(store);
    let rt = h.runtime();
    rt.invoke::<_, ()>("seed", &("t", "aba", json!("before")), None).await.unwrap();
    let interleaving = Arc::new(Intercept::new(h.store.clone(), Interleaving { armed: AtomicBool::new(false) }));
    let rt = h.runtime_on(interleaving.clone(), test_config());
    // Warm the tail cache so the write is the plain one-round-trip path.
    rt.invoke::<_, ()>("seed", &("t", "aba", json!("warm")), None).await.unwrap();
    interleaving.hooks().armed.store(true, Ordering::SeqCst);
    rt.invoke::<_, ()>("seed", &("t", "aba", json!("mine")), Some("aba-writer")).await.unwrap();
    assert!(!interleaving.hooks().armed.load(Ordering::SeqCst), "the fault was not injected");
    assert_eq!(rt.peek("t", "aba").await.unwrap(), Some(json!("intruder")), "a retried write clobbered a later write");
}

/// Before the first op-log entry is created, a "twin" execution records the
/// same step with another value: the put-if-absent must lose and the handler
/// must see the twin's value.
#[derive(Debug)]
struct RacingTwin {
    armed: AtomicBool,
}

#[async_trait::async_trait]
impl Hooks for RacingTwin {
    async fn put(&self, inner: &dyn StateStore, key: &Key, item: Item, mode: PutMode) -> StoreResult<()> {
        if key.table == *layout::OPLOG && mode == PutMode::Create && self.armed.swap(false, Ordering::SeqCst) {
            let mut twin = item.clone();
            twin.insert("v", json!(999));
            inner.put(key, twin, PutMode::Create).await?;
        }
        inner.put(key, item, mode).await
    }
    async fn transact(&self, inner: &dyn StateStore, ops: Vec<WriteOp>) -> StoreResult<()> {
        // Let the batch carrying the intent fail like a refused one would, so
        // the entry goes through `put` above.
        if self.armed.load(Ordering::SeqCst)
            && ops.iter().any(|op| matches!(op, WriteOp::Put { key, .. } if key.table == *layout::OPLOG))
        {
            return Err(StoreError::condition_failed(None));
        }
        inner.transact(ops).await
    }
}

pub async fn a_racing_twin_s_logged_result_wins(store: Arc<dyn StateStore>) {
    let h = Harness::new(store);
    h.runtime().invoke::<_, ()>("seed", &("t", "twin", json!(1)), None).await.unwrap();
    let racing = Arc::new(Intercept::new(h.store.clone(), RacingTwin { armed: AtomicBool::new(true) }));
    let rt = Runtime::builder(racing.clone())
        .clock(h.clock.clone())
        .config(test_config())
        .register("reader", |ctx: Context, (): ()| async move {
            let v: Option<i64> = ctx.read("t", "twin").await?;
            let again: Option<i64> = ctx.read("t", "twin").await?;
            Ok((v, again))
        })
        .build();
    let (v, again): (Option<i64>, Option<i64>) = rt.invoke("reader", &(), Some("twin-1")).await.unwrap();
    assert!(!racing.hooks().armed.load(Ordering::SeqCst), "the twin never raced");
    assert_eq!(v, Some(999), "the first logged value wins over this execution's own read");
    assert_eq!(again, Some(1));
}

pub async fn cond_write_outcome_is_recorded_and_replayed(store: Arc<dyn StateStore>) {
    let h = Harness::new(store);
    let (rt, _) = replay_runtime(&h, |ctx| async move {
        let took = ctx.cond_write("seats", "f1", &json!(4), Predicate::value().eq(5)).await?;
        let refused = ctx.cond_write("seats", "f1", &json!(0), Predicate::value().gt(100)).await?;
        Ok(json!([took, refused]))
    });
    rt.invoke::<_, ()>("seed", &("seats", "f1", json!(5)), None).await.unwrap();
    assert!(rt.invoke::<_, Value>("replayed", &(), Some("c1")).await.is_err());
    // Make the first condition false now: the replay must still report true.
    rt.invoke::<_, ()>("seed", &("seats", "f1", json!(200)), None).await.unwrap();
    h.expire_leases();
    let out: Value = rt.invoke("replayed", &(), Some("c1")).await.unwrap();
    assert_eq!(out, json!([true, false]), "cond_write outcomes are replayed from the log");
    assert_eq!(rt.peek("seats", "f1").await.unwrap(), Some(json!(200)), "no write repeated");
}

pub async fn deterministic_values_are_stable_across_replays(store: Arc<dyn StateStore>) {
    let h = Harness::new(store);
    let (rt, _) = replay_runtime(&h, |ctx| async move {
        let t = ctx.now().await?;
        let u = ctx.uuid().await?;
        let r = ctx.random().await?;
        Ok(json!([t, u.to_string(), r]))
    });
    let first = rt.invoke::<_, Value>("replayed", &(), Some("d1")).await;
    assert!(first.is_err());
    let report = rt.inspect(&InstanceId::new("d1").unwrap()).await.unwrap();
    let logged: Vec<Value> = report.steps.iter().map(|(_, item)| item.get("v").cloned().unwrap()).collect();
    h.clock.advance(Duration::from_secs(3600));
    let out: Value = rt.invoke("replayed", &(), Some("d1")).await.unwrap();
    assert_eq!(out, Value::Array(logged), "now/uuid/random replay their logged values");
}

pub async fn sync_invoke_runs_the_callee_once(store: Arc<dyn StateStore>) {
    let h = Harness::new(store);
    let callee_runs = Arc::new(AtomicU64::new(0));
    let caller_runs = Arc::new(AtomicU64::new(0));
    let (cr, kr) = (callee_runs.clone(), caller_runs.clone());
    let rt = h
        .builder(test_config())
        .register("caller", move |ctx: Context, n: i64| {
            let kr = kr.clone();
            async move {
                let doubled: i64 = ctx.invoke("callee", &n).await?;
                if kr.fetch_add(1, Ordering::SeqCst) == 0 {
                    return Err(store_error(ErrorKind::Unavailable));
                }
                Ok(doubled)
            }
        })
        .register("callee", move |ctx: Context, n: i64| {
            let cr = cr.clone();
            async move {
                cr.fetch_add(1, Ordering::SeqCst);
                ctx.write("callee", "last", &n).await?;
                Ok(n * 2)
            }
        })
        .build();
    assert!(rt.invoke::<_, i64>("caller", &21, Some("s1")).await.is_err());
    h.expire_leases();
    let out: i64 = rt.invoke("caller", &21, Some("s1")).await.unwrap();
    assert_eq!(out, 42);
    assert_eq!(caller_runs.load(Ordering::SeqCst), 2);
    assert_eq!(callee_runs.load(Ordering::SeqCst), 1, "a finished callee is never re-run by a replaying caller");
    // The callee's result lives in the caller's log entry (the callback).
    let report = rt.inspect(&InstanceId::new("s1").unwrap()).await.unwrap();
    let entry = &report.steps.iter().find(|(s, _)| *s == 1).expect("invoke entry").1;
    assert_eq!(entry.get("result"), Some(&json!({"ok": 42})));
}

pub async fn rows_chain_under_concurrent_writers(store: Arc<dyn StateStore>) {
    let h = Harness::new(store);
    let config = test_config().row_capacity(4);
    let rt = h
        .builder(config.clone())
        .register("writer", |ctx: Context, w: u32| async move {
            for j in 0..10u32 {
                ctx.write("hot", "key", &json!([w, j])).await?;
            }
            Ok(())
        })
        .build();
    // 8 writers, each on its own runtime (own tail cache), all on one key.
    let mut tasks = Vec::new();
    for w in 0..8u32 {
        let rt = h
            .builder(config.clone())
            .register("writer", |ctx: Context, w: u32| async move {
                for j in 0..10u32 {
                    ctx.write("hot", "key", &json!([w, j])).await?;
                }
                Ok(())
            })
            .build();
        tasks.push(tokio::spawn(async move { rt.invoke::<_, ()>("writer", &w, Some(&format!("writer-{w}"))).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let rows = rt.key_rows("hot", "key").await.unwrap();
    let linked: Vec<_> = rows.iter().filter(|r| r.linked).collect();
    let total: usize = linked.iter().map(|r| r.entries.len()).sum();
    assert_eq!(total, 80, "every write logged exactly once across the chain");
    let mut seen = HashSet::new();
    for r in &linked {
        assert!(r.entries.len() <= 4, "row {} holds {} entries over capacity 4", r.id, r.entries.len());
        for e in r.entries.keys() {
            assert!(seen.insert(e.clone()), "entry {e} logged twice");
        }
    }
    assert!(linked.len() >= 20, "80 writes at capacity 4 need at least 20 rows, got {}", linked.len());
    for orphan in rows.iter().filter(|r| !r.linked) {
        assert!(orphan.entries.is_empty(), "an unlinked row holds live entries: {orphan:?}");
    }
    // The tail's value is the last write that landed in the last row with entries.
    let last = linked.iter().rev().find(|r| !r.entries.is_empty()).unwrap();
    let tail_value = linked.last().unwrap().value.clone();
    let (w, j) = (tail_value[0].as_u64().unwrap(), tail_value[1].as_u64().unwrap());
    assert!(
        last.entries.contains_key(&format!("{}:writer-{w}", j + 1)),
        "tail value {tail_value} not from the last row"
    );
}

pub async fn collector_recovers_crashed_sync_and_async_callees(store: Arc<dyn StateStore>) {
    let h = Harness::new(store);
    let register = |b: flowstate_core::RuntimeBuilder| {
        b.register("parent", |ctx: Context, tag: String| async move {
            let a: i64 = ctx.invoke("child", &format!("{tag}-sync")).await?;
            ctx.invoke_async("child", &format!("{tag}-async")).await?;
            Ok(a)
        })
        .register("child", workflows::counter)
    };
    // Count the calls of one clean run.
    let probe = Arc::new(FaultyStore::new(h.store.clone(), FaultPlan::None));
    let rt = register(Runtime::builder(probe.clone()).clock(h.clock.clone()).config(test_config())).build();
    rt.invoke::<_, i64>("parent", "probe", Some("probe")).await.unwrap();
    let calls = probe.calls();
    let mut recovered = 0;
    for k in 1..=calls + 1 {
        let tag = format!("k{k}");
        let faulty = Arc::new(
            FaultyStore::new(h.store.clone(), FaultPlan::At { call: k, mode: FaultMode::AfterApplied })
                .crash_after_fault(),
        );
        let rt1 = register(Runtime::builder(faulty).clock(h.clock.clone()).config(test_config())).build();
        let _ = rt1.invoke::<_, i64>("parent", &tag, Some(&tag)).await;
        h.expire_leases();
        let rt2 = register(h.builder(test_config())).build();
        recovered += rt2.recover().await.unwrap().completed;
        // The client retries (the crash may have hit before the intent existed).
        let a: i64 = rt2.invoke("parent", &tag, Some(&tag)).await.unwrap();
        assert_eq!(a, 1);
        // The async child finishes through dispatch or the collector.
        let mut done = false;
        for _ in 0..200 {
            if rt2.peek(COUNTERS, &format!("{tag}-async")).await.unwrap().is_some() {
                let child = InstanceId::new(&tag).unwrap().child(2);
                let intent = rt2.inspect(&child).await.unwrap().intent.unwrap();
                if intent.get_str("status") == Some("done") {
                    done = true;
                    break;
                }
            }
            h.expire_leases();
            rt2.recover().await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(done, "async child of {tag} never finished");
        for suffix in ["sync", "async"] {
            let v = rt2.peek(COUNTERS, &format!("{tag}-{suffix}")).await.unwrap();
            assert_eq!(v, Some(json!(1)), "{suffix} child of {tag} ran {v:?} times in effect");
        }
    }
    assert!(recovered > 0, "the collector re-drove no instance in {calls} crash points");
}

pub async fn a_panicking_handler_lets_its_lease_lapse(store: Arc<dyn StateStore>) {
    // Real time here: the lease renewal task runs on wall-clock sleeps.
    let lease = Duration::from_millis(150);
    let panics = Arc::new(AtomicBool::new(true));
    let p = panics.clone();
    let rt = Runtime::builder(store)
        .config(test_config().lease(lease).clock_skew(Duration::from_millis(10)))
        .register("fragile", move |ctx: Context, (): ()| {
            let p = p.clone();
            async move {
                let n: i64 = ctx.read(COUNTERS, "fragile").await?.unwrap_or(0);
                ctx.write(COUNTERS, "fragile", &(n + 1)).await?;
                assert!(!p.load(Ordering::SeqCst), "handler bug: panics after its write");
                Ok(n + 1)
            }
        })
        .build();
    let task = {
        let rt = rt.clone();
        tokio::spawn(async move { rt.invoke::<_, i64>("fragile", &(), Some("fragile-1")).await })
    };
    assert!(task.await.unwrap_err().is_panic());
    // Several renewal periods later the lease must have lapsed, not been renewed.
    tokio::time::sleep(lease * 3).await;
    let id = InstanceId::new("fragile-1").unwrap();
    let intent = rt.inspect(&id).await.unwrap().intent.expect("intent written");
    let lease_until = intent.get("lease_until").and_then(Value::as_u64).unwrap();
    let now = flowstate_core::SystemClock.now_ms();
    assert!(lease_until <= now, "a dead execution kept renewing its lease ({lease_until} > {now})");
    // The collector finishes it once the bug is fixed, and the write happened once.
    panics.store(false, Ordering::SeqCst);
    assert_eq!(rt.recover().await.unwrap().completed, 1);
    assert_eq!(rt.peek(COUNTERS, "fragile").await.unwrap(), Some(json!(1)));
}

pub async fn collector_leaves_live_leases_alone(store: Arc<dyn StateStore>) {
    let h = Harness::new(store);
    let (rt, executions) = replay_runtime(&h, |ctx| async move {
        ctx.write("t", "live", &1).await?;
        Ok(Value::Null)
    });
    assert!(rt.invoke::<_, Value>("replayed", &(), Some("live-1")).await.is_err());
    // Lease not expired yet: a collector pass must not take the instance.
    let report = rt.recover().await.unwrap();
    assert_eq!((report.expired, report.completed), (0, 0));
    assert_eq!(executions.load(Ordering::SeqCst), 1);
    h.expire_leases();
    let report = rt.recover().await.unwrap();
    assert_eq!((report.expired, report.completed), (1, 1));
    // A second collector right after finds nothing to do.
    assert_eq!(rt.recover().await.unwrap().expired, 0);
}

pub async fn gc_collects_finished_instances_and_keeps_results(store: Arc<dyn StateStore>) {
    let h = Harness::new(store);
    let window = Duration::from_secs(60);
    let retention = window * 10;
    let config = test_config().row_capacity(2).gc_window(window).tombstone_retention(Some(retention));
    let rt = h.runtime_on(h.store.clone(), config.clone());
    for i in 0..6 {
        let n: i64 = rt.invoke("counter", "gc-key", Some(&format!("inc-{i}"))).await.unwrap();
        assert_eq!(n, i + 1);
    }
    workflows::seed_accounts(&rt, &[("gc-a", 100), ("gc-b", 0)]).await.unwrap();
    let t = Transfer { from: "gc-a".into(), to: "gc-b".into(), amount: 10 };
    let result: TransferResult = rt.invoke("transfer", &t, Some("gc-transfer")).await.unwrap();
    // Nothing is collected inside the window.
    let early = rt.gc().await.unwrap();
    assert_eq!(early.instances_collected, 0);
    h.clock.advance(window + Duration::from_secs(1));
    let report = rt.gc().await.unwrap();
    assert!(!report.skipped);
    // 6 counters + 2 seeds + transfer + its audit callee.
    assert_eq!(report.instances_collected, 10, "{report:?}");
    assert_eq!(report.write_entries_removed, 6 + 2 + 2 + 1, "{report:?}");
    assert!(report.rows_unlinked >= 1, "full middle rows must be unlinked: {report:?}");
    for row in rt.key_rows(COUNTERS, "gc-key").await.unwrap() {
        assert!(row.entries.is_empty(), "write-log entries left in {row:?}");
    }
    for id in ["inc-0", "inc-5", "gc-transfer"] {
        let report = rt.inspect(&InstanceId::new(id).unwrap()).await.unwrap();
        assert!(report.steps.is_empty(), "operation log of {id} not collected");
        assert_eq!(report.intent.unwrap().get("compacted"), Some(&json!(true)));
    }
    assert_eq!(workflows::audit_writes(&rt, &InstanceId::new("gc-transfer").unwrap()).await.unwrap(), 0);
    // A late duplicate of a collected instance gets the recorded result, runs nothing.
    let again: TransferResult = rt.invoke("transfer", &t, Some("gc-transfer")).await.unwrap();
    assert_eq!(again, result);
    let n: i64 = rt.invoke("counter", "gc-key", Some("inc-3")).await.unwrap();
    assert_eq!(n, 4, "recorded result of inc-3");
    assert_eq!(rt.peek(COUNTERS, "gc-key").await.unwrap(), Some(json!(6)));
    assert_eq!(workflows::balance(&rt, "gc-a").await.unwrap(), 90);
    // One window later the unlinked rows are deleted; the chain still works.
    h.clock.advance(window + Duration::from_secs(1));
    let later = rt.gc().await.unwrap();
    assert_eq!(later.rows_deleted, report.rows_unlinked, "{later:?}");
    assert!(rt.key_rows(COUNTERS, "gc-key").await.unwrap().iter().all(|r| r.linked));
    let fresh = h.runtime_on(h.store.clone(), config);
    let n: i64 = fresh.invoke("counter", "gc-key", Some("inc-6")).await.unwrap();
    assert_eq!(n, 7);
    // After the retention the tombstones go too: 6 counters, 2 seeds, the
    // transfer, and inc-6 (collected first; its tombstone goes in this pass
    // or the next).
    h.clock.advance(retention);
    let last = fresh.gc().await.unwrap();
    let next = fresh.gc().await.unwrap();
    assert_eq!(last.instances_collected, 1, "{last:?}");
    assert_eq!(last.tombstones_deleted + next.tombstones_deleted, 10, "{last:?} then {next:?}");
    assert!(fresh.inspect(&InstanceId::new("inc-0").unwrap()).await.unwrap().intent.is_none());
    assert_eq!(fresh.peek(COUNTERS, "gc-key").await.unwrap(), Some(json!(7)));
}

pub async fn divergent_read_replay_is_rejected(store: Arc<dyn StateStore>) {
    let h = Harness::new(store);
    let target = Arc::new(Mutex::new("a".to_string()));
    let t = target.clone();
    let (rt, _) = replay_runtime(&h, move |ctx| {
        let key = t.lock().unwrap().clone();
        async move {
            let _: Option<i64> = ctx.read("t", &key).await?;
            Ok(Value::Null)
        }
    });
    assert!(rt.invoke::<_, Value>("replayed", &(), Some("div-r")).await.is_err());
    *target.lock().unwrap() = "b".to_string();
    h.expire_leases();
    match rt.invoke::<_, Value>("replayed", &(), Some("div-r")).await {
        Err(Error::NonDeterministic { step, .. }) => assert_eq!(step, 1),
        other => panic!("expected NonDeterministic at step 1, got {other:?}"),
    }
}

pub async fn divergent_write_replay_is_rejected(store: Arc<dyn StateStore>) {
    let h = Harness::new(store);
    let target = Arc::new(Mutex::new("a".to_string()));
    let t = target.clone();
    let (rt, _) = replay_runtime(&h, move |ctx| {
        let key = t.lock().unwrap().clone();
        async move {
            ctx.write("t", &key, &1).await?;
            let _: Option<i64> = ctx.read("t", "other").await?;
            Ok(Value::Null)
        }
    });
    assert!(rt.invoke::<_, Value>("replayed", &(), Some("div-w")).await.is_err());
    *target.lock().unwrap() = "b".to_string();
    h.expire_leases();
    match rt.invoke::<_, Value>("replayed", &(), Some("div-w")).await {
        Err(Error::NonDeterministic { step, .. }) => assert_eq!(step, 1),
        other => panic!("expected NonDeterministic at step 1, got {other:?}"),
    }
    assert_eq!(rt.peek("t", "b").await.unwrap(), None, "the divergent write must not be applied");
    // Same key, other operation kind: a read where a write was logged.
    let flip = Arc::new(AtomicBool::new(false));
    let f = flip.clone();
    let rt = h
        .builder(test_config())
        .register("kind", move |ctx: Context, (): ()| {
            let f = f.clone();
            async move {
                if f.load(Ordering::SeqCst) {
                    let _: Option<i64> = ctx.read("t", "same").await?;
                } else {
                    ctx.write("t", "same", &1).await?;
                    return Err(store_error(ErrorKind::Unavailable));
                }
                Ok(())
            }
        })
        .build();
    assert!(rt.invoke::<_, ()>("kind", &(), Some("div-k")).await.is_err());
    flip.store(true, Ordering::SeqCst);
    h.expire_leases();
    // The read at step 1 finds no read entry; the replay must not silently read.
    let r = rt.invoke::<_, ()>("kind", &(), Some("div-k")).await;
    assert!(r.is_ok() || matches!(r, Err(Error::NonDeterministic { .. })), "{r:?}");
}

pub async fn bad_input_gets_typed_errors(store: Arc<dyn StateStore>) {
    let h = Harness::new(store);
    let rt = h.runtime();
    assert!(matches!(rt.invoke::<_, ()>("nope", &1, None).await, Err(Error::UnknownFunction(f)) if f == "nope"));
    assert!(matches!(rt.invoke::<_, i64>("counter", "k", Some("")).await, Err(Error::InvalidInput(_))));
    assert!(matches!(rt.invoke::<_, i64>("counter", "k", Some("a\u{1f}1")).await, Err(Error::InvalidInput(_))));
    rt.invoke::<_, i64>("counter", "k", Some("reused")).await.unwrap();
    assert!(matches!(rt.invoke::<_, i64>("counter", "other", Some("reused")).await, Err(Error::InvalidInput(_))));
    assert!(matches!(rt.invoke::<_, ()>("audit", &json!({}), Some("reused")).await, Err(Error::InvalidInput(_))));
    // Wrong input shape for the handler: a recorded, typed failure.
    let bad = rt.invoke::<_, i64>("counter", &json!({"not": "a string"}), Some("bad-shape")).await;
    assert!(matches!(bad, Err(Error::Handler(ref m)) if m.contains("serialization")), "{bad:?}");
    // An input larger than one item: a typed error before anything runs.
    let max = h.store.capabilities().max_item_bytes;
    let big = "x".repeat(max + 1);
    let out = rt.invoke::<_, ()>("seed", &("t", "big", json!(big)), Some("too-big")).await;
    assert!(matches!(out, Err(Error::TooLarge(_))), "{out:?}");
    // A value larger than one item, made inside the handler: TooLarge, nothing written.
    let rt = h
        .builder(test_config())
        .register("big_write", move |ctx: Context, n: usize| async move {
            match ctx.write("t", "big", &"x".repeat(n)).await {
                Err(Error::TooLarge(msg)) => Ok(msg),
                other => Err(Error::handler(format!("expected TooLarge, got {other:?}"))),
            }
        })
        .register("counter", workflows::counter)
        .build();
    let msg: String = rt.invoke("big_write", &(max + 1), Some("too-big-value")).await.unwrap();
    assert!(msg.contains("does not fit"), "{msg}");
    assert_eq!(rt.peek("t", "big").await.unwrap(), None);
    // Oversize key.
    let long_key = "k".repeat(5000);
    let r = rt.invoke::<_, i64>("counter", &long_key, Some("long-key")).await;
    assert!(matches!(r, Err(Error::Handler(ref m)) if m.contains("key must be at most")), "{r:?}");
}

pub async fn corrupt_or_foreign_rows_are_typed_errors(store: Arc<dyn StateStore>) {
    let h = Harness::new(store);
    // A foreign item where an operation-log entry should be: the replay refuses it.
    let (rt, _) = replay_runtime(&h, |ctx| async move {
        let v: Option<i64> = ctx.read("t", "k").await?;
        Ok(json!(v))
    });
    assert!(rt.invoke::<_, Value>("replayed", &(), Some("foreign-log")).await.is_err());
    let key = layout::oplog_key(&InstanceId::new("foreign-log").unwrap(), 1);
    h.store.put(&key, Item::new().with("foo", 1), PutMode::Overwrite).await.unwrap();
    h.expire_leases();
    let r = rt.invoke::<_, Value>("replayed", &(), Some("foreign-log")).await;
    assert!(matches!(r, Err(Error::Corrupt(ref m)) if m.contains("kind")), "{r:?}");
    // A damaged DAAL row (next pointer of the wrong type): reads and writes refuse it.
    let row = layout::row_key(&layout::data_partition(COUNTERS, "damaged"), layout::HEAD_ROW);
    h.store.put(&row, Item::new().with("v", 1).with("next", 5), PutMode::Overwrite).await.unwrap();
    let rt = h.runtime();
    let r = rt.invoke::<_, i64>("counter", "damaged", Some("damaged-1")).await;
    assert!(matches!(r, Err(Error::Corrupt(_))), "{r:?}");
    assert!(matches!(rt.peek(COUNTERS, "damaged").await, Err(Error::Corrupt(_))));
    let rt2 = h
        .builder(test_config())
        .register("reader", |ctx: Context, (): ()| async move { ctx.read::<i64>(COUNTERS, "damaged").await })
        .build();
    let r = rt2.invoke::<_, Option<i64>>("reader", &(), Some("damaged-2")).await;
    assert!(matches!(r, Err(Error::Corrupt(ref m)) if m.contains("next")), "{r:?}");
}

pub async fn round_trips_meet_targets(store: Arc<dyn StateStore>) {
    let strategy = store.capabilities().update;
    let rows = crate::measure::round_trips(store).await.unwrap();
    println!(
        "round trips per operation (steady state), update strategy {strategy:?}:\n{}",
        crate::measure::render(&rows)
    );
    // Stores that update natively (or in one embedded transaction) must meet
    // the targets; compare-and-swap stores report their real counts.
    if matches!(strategy, UpdateStrategy::Native | UpdateStrategy::Transaction { round_trips: 1 }) {
        for r in &rows {
            assert!(r.measured <= r.target, "{}: {} round trips, target {}", r.op, r.measured, r.target);
        }
    }
}

/// One crash-sweep run's invariant violations (empty = exactly once held).
type Violations = Vec<String>;

async fn bank_run(h: &Harness, k: u64, mode: FaultMode, tag: &str) -> Violations {
    let setup = h.runtime();
    let (a, b) = (format!("{tag}-a"), format!("{tag}-b"));
    workflows::seed_accounts(&setup, &[(&a, 100), (&b, 0)]).await.unwrap();
    let t = Transfer { from: a.clone(), to: b.clone(), amount: 30 };
    let id = format!("{tag}-transfer");
    let (rt1, _) = h.crashing_runtime(k, mode);
    let first = rt1.invoke::<_, TransferResult>("transfer", &t, Some(&id)).await;
    h.expire_leases();
    let rt2 = h.runtime();
    rt2.recover().await.unwrap();
    let mut v = Violations::new();
    let result: TransferResult = match rt2.invoke("transfer", &t, Some(&id)).await {
        Ok(r) => r,
        Err(e) => return vec![format!("{tag}: retry failed: {e}")],
    };
    if let Ok(first) = first
        && first != result
    {
        v.push(format!("{tag}: results differ: {first:?} vs {result:?}"));
    }
    let (ba, bb) = (workflows::balance(&rt2, &a).await.unwrap(), workflows::balance(&rt2, &b).await.unwrap());
    if ba + bb != 100 {
        v.push(format!("{tag}: money not conserved: {ba} + {bb}"));
    }
    if (ba, bb) != (70, 30) || !result.ok {
        v.push(format!("{tag}: transfer not applied exactly once: {ba}/{bb} {result:?}"));
    }
    let audits = workflows::audit_writes(&rt2, &InstanceId::new(&id).unwrap()).await.unwrap();
    if audits != 1 {
        v.push(format!("{tag}: audit record written {audits} times"));
    }
    if result.receipt.as_deref() != Some(&format!("receipt-{id}:5")) {
        v.push(format!("{tag}: unexpected receipt {:?}", result.receipt));
    }
    v
}

async fn counter_run(h: &Harness, k: u64, mode: FaultMode, tag: &str) -> Violations {
    let (rt1, _) = h.crashing_runtime(k, mode);
    let id = format!("{tag}-inc");
    let first = rt1.invoke::<_, i64>("counter", tag, Some(&id)).await;
    h.expire_leases();
    let rt2 = h.runtime();
    rt2.recover().await.unwrap();
    let mut v = Violations::new();
    match rt2.invoke::<_, i64>("counter", tag, Some(&id)).await {
        Ok(1) => {}
        other => v.push(format!("{tag}: retry returned {other:?}")),
    }
    if let Ok(first) = first
        && first != 1
    {
        v.push(format!("{tag}: first run returned {first}"));
    }
    match rt2.peek(COUNTERS, tag).await.unwrap() {
        Some(n) if n == json!(1) => {}
        other => v.push(format!("{tag}: counter is {other:?}, expected exactly 1")),
    }
    // A second instance increments exactly once more.
    match rt2.invoke::<_, i64>("counter", tag, Some(&format!("{tag}-inc2"))).await {
        Ok(2) => {}
        other => v.push(format!("{tag}: second increment returned {other:?}")),
    }
    v
}

/// Run `workflow` with a crash at every store call index in every fault mode.
async fn sweep<'a, F, Fut>(h: &'a Harness, name: &str, calls: u64, workflow: F)
where
    F: Fn(&'a Harness, u64, FaultMode, String) -> Fut,
    Fut: Future<Output = Violations> + 'a,
{
    let mut runs = 0;
    let mut violations = Vec::new();
    for mode in FaultMode::ALL {
        for k in 1..=calls + 2 {
            runs += 1;
            violations.extend(workflow(h, k, mode, format!("{name}-{mode:?}-{k}")).await);
        }
    }
    let late = h.effects.late_runs();
    println!(
        "crash sweep {name}: {calls} store calls x {} fault modes = {runs} runs, {} violations, side effect re-run after being recorded {late} times",
        FaultMode::ALL.len(),
        violations.len()
    );
    assert!(violations.is_empty(), "exactly-once violated:\n{}", violations.join("\n"));
    assert_eq!(late, 0, "a side-effect step ran again after its result was recorded");
}

/// Store calls of one clean run of a workflow.
async fn count_calls<F, Fut>(h: &Harness, run: F) -> u64
where
    F: FnOnce(Runtime) -> Fut,
    Fut: Future<Output = ()>,
{
    let probe = Arc::new(FaultyStore::new(h.store.clone(), FaultPlan::None));
    run(h.runtime_on(probe.clone(), test_config())).await;
    probe.calls()
}

pub async fn crash_point_sweep_bank_transfer(store: Arc<dyn StateStore>) {
    let h = Harness::new(store);
    let setup = h.runtime();
    workflows::seed_accounts(&setup, &[("probe-a", 100), ("probe-b", 0)]).await.unwrap();
    let calls = count_calls(&h, |rt| async move {
        let t = Transfer { from: "probe-a".into(), to: "probe-b".into(), amount: 30 };
        let r: TransferResult = rt.invoke("transfer", &t, Some("probe")).await.unwrap();
        assert!(r.ok);
    })
    .await;
    assert!(calls >= 10, "the transfer makes at least 10 store calls, counted {calls}");
    sweep(&h, "bank", calls, |h, k, mode, tag| async move { bank_run(h, k, mode, &tag).await }).await;
}

pub async fn crash_point_sweep_counter(store: Arc<dyn StateStore>) {
    let h = Harness::new(store);
    let calls = count_calls(&h, |rt| async move {
        let n: i64 = rt.invoke("counter", "probe", Some("probe")).await.unwrap();
        assert_eq!(n, 1);
    })
    .await;
    sweep(&h, "counter", calls, |h, k, mode, tag| async move { counter_run(h, k, mode, &tag).await }).await;
}

pub async fn transient_faults_are_retried_transparently(store: Arc<dyn StateStore>) {
    let h = Harness::new(store);
    let setup = h.runtime();
    let mut violations = Vec::new();
    for (i, mode) in FaultMode::ALL.into_iter().enumerate() {
        let faulty =
            Arc::new(FaultyStore::new(h.store.clone(), FaultPlan::Seeded { seed: 7 + i as u64, per_mille: 150, mode }));
        let rt = h.runtime_on(
            faulty.clone(),
            test_config().retry(RetryPolicy {
                attempts: 8,
                base_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(4),
            }),
        );
        for j in 0..5 {
            let tag = format!("transient-{mode:?}-{j}");
            let (a, b) = (format!("{tag}-a"), format!("{tag}-b"));
            workflows::seed_accounts(&setup, &[(&a, 100), (&b, 0)]).await.unwrap();
            let t = Transfer { from: a.clone(), to: b.clone(), amount: 25 };
            let mut result = None;
            for _ in 0..10 {
                match rt.invoke::<_, TransferResult>("transfer", &t, Some(&tag)).await {
                    Ok(r) => {
                        result = Some(r);
                        break;
                    }
                    Err(_) => h.expire_leases(),
                }
            }
            let ok = result.is_some_and(|r| r.ok);
            let (ba, bb) =
                (workflows::balance(&setup, &a).await.unwrap(), workflows::balance(&setup, &b).await.unwrap());
            let audits = workflows::audit_writes(&setup, &InstanceId::new(&tag).unwrap()).await.unwrap();
            if !ok || (ba, bb) != (75, 25) || audits != 1 {
                violations.push(format!("{tag}: ok={ok} balances {ba}/{bb} audits {audits}"));
            }
        }
        assert!(faulty.faults() > 0, "no fault injected in mode {mode:?}");
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
    assert_eq!(h.effects.late_runs(), 0);
}

pub async fn concurrent_transfers_on_shared_accounts_conserve_money(store: Arc<dyn StateStore>) {
    let h = Harness::new(store);
    let setup = h.runtime();
    let accounts = ["shared-a", "shared-b", "shared-c"];
    workflows::seed_accounts(&setup, &[(accounts[0], 100), (accounts[1], 100), (accounts[2], 100)]).await.unwrap();
    // 12 transfers around the ring, each from its own runtime (own caches), all at once.
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let rt = h.runtime();
            let t = Transfer { from: accounts[i % 3].into(), to: accounts[(i + 1) % 3].into(), amount: 5 + i as i64 };
            tokio::spawn(async move {
                (t.clone(), rt.invoke::<_, TransferResult>("transfer", &t, Some(&format!("ring-{i}"))).await)
            })
        })
        .collect();
    let mut expected = std::collections::HashMap::from(accounts.map(|a| (a.to_string(), 100i64)));
    for task in tasks {
        let (t, r) = task.await.unwrap();
        let r = r.unwrap();
        assert!(r.ok, "{t:?} refused: {r:?}");
        *expected.get_mut(&t.from).unwrap() -= t.amount;
        *expected.get_mut(&t.to).unwrap() += t.amount;
    }
    let mut total = 0;
    for a in accounts {
        let b = workflows::balance(&setup, a).await.unwrap();
        assert_eq!(b, expected[a], "account {a}");
        total += b;
    }
    assert_eq!(total, 300, "money conserved");
}

pub async fn duplicate_invocations_wait_for_the_live_execution(store: Arc<dyn StateStore>) {
    let h = Harness::new(store);
    let runs = Arc::new(AtomicU64::new(0));
    let r = runs.clone();
    let rt = h
        .builder(test_config())
        .register("slow", move |ctx: Context, (): ()| {
            let r = r.clone();
            async move {
                let n: u64 = ctx
                    .step("slow effect", |_| async {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Ok::<_, String>(r.fetch_add(1, Ordering::SeqCst) + 1)
                    })
                    .await?;
                let c: i64 = ctx.read(COUNTERS, "dup").await?.unwrap_or(0);
                ctx.write(COUNTERS, "dup", &(c + 1)).await?;
                Ok(n)
            }
        })
        .build();
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let rt = rt.clone();
            tokio::spawn(async move { rt.invoke::<_, u64>("slow", &(), Some("dup-1")).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 1, "every duplicate gets the one execution's result");
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1, "duplicates wait instead of running the effect again");
    assert_eq!(rt.peek(COUNTERS, "dup").await.unwrap(), Some(json!(1)));
}

pub async fn concurrent_executions_of_one_instance_stay_exactly_once(store: Arc<dyn StateStore>) {
    let h = Harness::new(store);
    let setup = h.runtime();
    // A lease of 1 ms makes every duplicate take the instance over at once:
    // up to 6 executions run the same instance concurrently.
    let config = test_config().lease(Duration::from_millis(1)).row_capacity(3);
    for round in 0..3 {
        let (a, b) = (format!("conc{round}-a"), format!("conc{round}-b"));
        workflows::seed_accounts(&setup, &[(&a, 100), (&b, 0)]).await.unwrap();
        let t = Transfer { from: a.clone(), to: b.clone(), amount: 40 };
        let id = format!("conc{round}");
        let tasks: Vec<_> = (0..6)
            .map(|_| {
                let rt = Runtime::builder(h.store.clone()).config(config.clone());
                let rt = workflows::register(rt, h.effects.clone()).build();
                let (t, id) = (t.clone(), id.clone());
                tokio::spawn(async move { rt.invoke::<_, TransferResult>("transfer", &t, Some(&id)).await })
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                Ok(r) => results.push(r),
                Err(Error::InstanceBusy(_)) => {}
                Err(e) => panic!("execution failed: {e}"),
            }
        }
        assert!(!results.is_empty());
        assert!(results.windows(2).all(|w| w[0] == w[1]), "executions disagree: {results:?}");
        let (ba, bb) = (workflows::balance(&setup, &a).await.unwrap(), workflows::balance(&setup, &b).await.unwrap());
        assert_eq!((ba, bb), (60, 40), "round {round}: transfer applied exactly once");
        let audits = workflows::audit_writes(&setup, &InstanceId::new(&id).unwrap()).await.unwrap();
        assert_eq!(audits, 1, "round {round}: audit written exactly once");
    }
}

pub async fn concurrent_crashing_writers_match_a_sequential_model(store: Arc<dyn StateStore>) {
    use proptest::prelude::*;
    use proptest::test_runner::{Config as PtConfig, RngAlgorithm, TestRng, TestRunner};

    let h = Arc::new(Harness::new(store));
    let handle = tokio::runtime::Handle::current();
    let case_no = Arc::new(AtomicU64::new(0));
    // writers: (writes, crash point, fault mode index); capacity 1..=3
    let strategy = (prop::collection::vec((1u32..5, prop::option::of(1u64..12), 0usize..3), 2..6), 1usize..4);
    let config = PtConfig { cases: 12, failure_persistence: None, ..PtConfig::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &[42; 32]));
    let result = tokio::task::block_in_place(|| {
        runner.run(&strategy, |(writers, capacity)| {
            let n = case_no.fetch_add(1, Ordering::SeqCst);
            let h = h.clone();
            handle.block_on(async move { model_case(&h, n, &writers, capacity).await });
            Ok(())
        })
    });
    result.unwrap();
}

async fn model_case(h: &Harness, case: u64, writers: &[(u32, Option<u64>, usize)], capacity: usize) {
    let key = format!("model-{case}");
    let config = test_config().row_capacity(capacity);
    let register = |b: flowstate_core::RuntimeBuilder, key: String| {
        b.register("multi_write", move |ctx: Context, (w, n): (usize, u32)| {
            let key = key.clone();
            async move {
                for j in 0..n {
                    ctx.write("model", &key, &json!([w, j])).await?;
                }
                Ok(())
            }
        })
    };
    let mut tasks = Vec::new();
    for (w, (n, crash, mode)) in writers.iter().copied().enumerate() {
        let store: Arc<dyn StateStore> = match crash {
            Some(k) => Arc::new(
                FaultyStore::new(h.store.clone(), FaultPlan::At { call: k, mode: FaultMode::ALL[mode] })
                    .crash_after_fault(),
            ),
            None => h.store.clone(),
        };
        let rt = register(Runtime::builder(store).clock(h.clock.clone()).config(config.clone()), key.clone()).build();
        let id = format!("m{case}-w{w}");
        tasks.push(tokio::spawn(async move { rt.invoke::<_, ()>("multi_write", &(w, n), Some(&id)).await }));
    }
    for t in tasks {
        let _ = t.await.unwrap();
    }
    h.expire_leases();
    let rt = register(h.builder(config), key.clone()).build();
    rt.recover().await.unwrap();
    for (w, (n, _, _)) in writers.iter().enumerate() {
        rt.invoke::<_, ()>("multi_write", &(w, *n), Some(&format!("m{case}-w{w}"))).await.unwrap();
    }
    // The model: every (writer, write) logged exactly once, in the chain order
    // the rows impose; the current value is a write from the last row with entries.
    let rows = rt.key_rows("model", &key).await.unwrap();
    let linked: Vec<_> = rows.iter().filter(|r| r.linked).collect();
    let mut expected: HashSet<String> = HashSet::new();
    for (w, (n, _, _)) in writers.iter().enumerate() {
        for j in 0..*n {
            expected.insert(format!("{}:m{case}-w{w}", j + 1));
        }
    }
    let mut seen = HashSet::new();
    for r in &linked {
        assert!(r.entries.len() <= capacity, "case {case}: row over capacity: {r:?}");
        for e in r.entries.keys() {
            assert!(seen.insert(e.clone()), "case {case}: entry {e} logged twice");
        }
    }
    assert_eq!(seen, expected, "case {case}: logged writes differ from the writes made");
    for r in rows.iter().filter(|r| !r.linked) {
        assert!(r.entries.is_empty(), "case {case}: off-chain row with entries {r:?}");
    }
    let last = linked.iter().rev().find(|r| !r.entries.is_empty()).expect("some row has entries");
    let value = &linked.last().unwrap().value;
    let (w, j) = (value[0].as_u64().unwrap(), value[1].as_u64().unwrap());
    assert!(
        last.entries.contains_key(&format!("{}:m{case}-w{w}", j + 1)),
        "case {case}: current value {value} was not written into the last row with entries"
    );
    // Every row's value is its last write's (or the copied predecessor value).
    assert_eq!(rt.peek("model", &key).await.unwrap().as_ref(), Some(value));
    let _ = ACCOUNTS;
}

/// The store as a backend without atomic batches would be: the engine then
/// registers intents eagerly, keeps no instance index, and its collector and
/// GC scan the intent shards.
#[derive(Debug)]
struct NoBatches;

#[async_trait::async_trait]
impl Hooks for NoBatches {
    fn capabilities(&self, inner: &dyn StateStore) -> flowstate_core::store::Capabilities {
        inner.capabilities().with_atomic_batch(false)
    }
    async fn transact(&self, _inner: &dyn StateStore, _ops: Vec<WriteOp>) -> StoreResult<()> {
        Err(StoreError::new(ErrorKind::Unsupported, "this store has no atomic batches"))
    }
}

/// `store` as a backend without atomic batches.
fn without_batches(store: Arc<dyn StateStore>) -> Arc<dyn StateStore> {
    Arc::new(Intercept::new(store, NoBatches))
}

pub async fn crash_point_sweep_bank_transfer_without_batches(store: Arc<dyn StateStore>) {
    crash_point_sweep_bank_transfer(without_batches(store)).await;
}

pub async fn collector_recovers_crashed_sync_and_async_callees_without_batches(store: Arc<dyn StateStore>) {
    collector_recovers_crashed_sync_and_async_callees(without_batches(store)).await;
}

pub async fn gc_collects_finished_instances_and_keeps_results_without_batches(store: Arc<dyn StateStore>) {
    gc_collects_finished_instances_and_keeps_results(without_batches(store)).await;
}
