//! Store wrappers for tests and benchmarks: a round-trip counter and a fault
//! injector. Both wrap any [`StateStore`] and are themselves stores.

use std::fmt;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use rand::{Rng, SeedableRng, rngs::SmallRng};

use crate::store::{
    Capabilities, Condition, ErrorKind, Item, Key, Mutation, Page, PageRequest, PutMode, StateStore, StoreError,
    StoreResult, TableName, WriteOp,
};

/// The primitives of the contract, for counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Primitive {
    /// [`StateStore::get`]
    Get,
    /// [`StateStore::put`]
    Put,
    /// [`StateStore::update`]
    Update,
    /// [`StateStore::delete`]
    Delete,
    /// [`StateStore::scan`]
    Scan,
    /// [`StateStore::transact`]
    Transact,
}

impl Primitive {
    /// All primitives, in display order.
    pub const ALL: [Primitive; 6] = [Self::Get, Self::Put, Self::Update, Self::Delete, Self::Scan, Self::Transact];

    fn index(self) -> usize {
        self as usize
    }
}

/// Round trips per primitive, as counted by [`CountingStore`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts(pub [u64; 6]);

impl Counts {
    /// Round trips of one primitive.
    pub fn of(&self, p: Primitive) -> u64 {
        self.0[p.index()]
    }

    /// All round trips.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// `self - earlier`, per primitive.
    pub fn since(&self, earlier: &Counts) -> Counts {
        let mut out = [0; 6];
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.0[i] - earlier.0[i];
        }
        Counts(out)
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for p in Primitive::ALL {
            let n = self.of(p);
            if n > 0 {
                if !first {
                    f.write_str(" + ")?;
                }
                write!(f, "{n} {p:?}")?;
                first = false;
            }
        }
        if first {
            f.write_str("0")?;
        }
        Ok(())
    }
}

/// Counts every call to the inner store, per primitive.
#[derive(Debug)]
pub struct CountingStore<S> {
    inner: S,
    counts: [AtomicU64; 6],
}

impl<S: StateStore> CountingStore<S> {
    /// Wrap a store.
    pub fn new(inner: S) -> Self {
        Self { inner, counts: Default::default() }
    }

    /// A snapshot of the counts so far.
    pub fn counts(&self) -> Counts {
        let mut out = [0; 6];
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.counts[i].load(Ordering::SeqCst);
        }
        Counts(out)
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn tick(&self, p: Primitive) {
        self.counts[p.index()].fetch_add(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl<S: StateStore> StateStore for CountingStore<S> {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn requests_sent(&self) -> Option<u64> {
        self.inner.requests_sent()
    }
    async fn get(&self, key: &Key) -> StoreResult<Option<Item>> {
        self.tick(Primitive::Get);
        self.inner.get(key).await
    }
    async fn put(&self, key: &Key, item: Item, mode: PutMode) -> StoreResult<()> {
        self.tick(Primitive::Put);
        self.inner.put(key, item, mode).await
    }
    async fn update(&self, key: &Key, conditions: &[Condition], mutations: &[Mutation]) -> StoreResult<Item> {
        self.tick(Primitive::Update);
        self.inner.update(key, conditions, mutations).await
    }
    async fn delete(&self, key: &Key, conditions: &[Condition]) -> StoreResult<bool> {
        self.tick(Primitive::Delete);
        self.inner.delete(key, conditions).await
    }
    async fn scan(&self, table: &TableName, partition: &[u8], page: PageRequest) -> StoreResult<Page> {
        self.tick(Primitive::Scan);
        self.inner.scan(table, partition, page).await
    }
    async fn transact(&self, ops: Vec<WriteOp>) -> StoreResult<()> {
        self.tick(Primitive::Transact);
        self.inner.transact(ops).await
    }
}

/// How an injected fault behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultMode {
    /// Fail before the call reaches the store ([`ErrorKind::Unavailable`]): nothing applied.
    Before,
    /// Apply the call, then report [`ErrorKind::Unavailable`] as if the reply was lost.
    AfterApplied,
    /// Apply the call, then report [`ErrorKind::Indeterminate`].
    Indeterminate,
}

impl FaultMode {
    /// All modes.
    pub const ALL: [FaultMode; 3] = [Self::Before, Self::AfterApplied, Self::Indeterminate];
}

/// When faults fire.
#[derive(Clone, Debug)]
pub enum FaultPlan {
    /// Never.
    None,
    /// At exactly the call with this 1-based index.
    At { call: u64, mode: FaultMode },
    /// At each call with probability `per_mille`/1000, from a seeded generator.
    Seeded { seed: u64, per_mille: u32, mode: FaultMode },
}

/// Injects faults into calls to the inner store.
///
/// With `crash_after_fault`, every call after the first fault fails with
/// [`ErrorKind::Unavailable`] too: the process "died" at the fault, and the
/// instance it was running is abandoned mid-way, as in a real crash.
pub struct FaultyStore<S> {
    inner: S,
    calls: AtomicU64,
    plan: FaultPlan,
    crash_after_fault: bool,
    crashed: AtomicBool,
    faults: AtomicU64,
    rng: Mutex<SmallRng>,
}

impl<S> fmt::Debug for FaultyStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyStore")
            .field("plan", &self.plan)
            .field("calls", &self.calls.load(Ordering::SeqCst))
            .field("crashed", &self.crashed.load(Ordering::SeqCst))
            .finish()
    }
}

impl<S: StateStore> FaultyStore<S> {
    /// Wrap a store with a fault plan.
    pub fn new(inner: S, plan: FaultPlan) -> Self {
        let seed = match &plan {
            FaultPlan::Seeded { seed, .. } => *seed,
            _ => 0,
        };
        Self {
            inner,
            calls: AtomicU64::new(0),
            plan,
            crash_after_fault: false,
            crashed: AtomicBool::new(false),
            faults: AtomicU64::new(0),
            rng: Mutex::new(SmallRng::seed_from_u64(seed)),
        }
    }

    /// Make the first fault a crash: all later calls fail too.
    pub fn crash_after_fault(mut self) -> Self {
        self.crash_after_fault = true;
        self
    }

    /// Calls seen so far (including failed ones).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Faults injected so far.
    pub fn faults(&self) -> u64 {
        self.faults.load(Ordering::SeqCst)
    }

    /// Whether the simulated process has crashed.
    pub fn crashed(&self) -> bool {
        self.crashed.load(Ordering::SeqCst)
    }

    /// Decide this call's fate: `Some(mode)` injects a fault.
    fn decide(&self) -> Result<Option<FaultMode>, StoreError> {
        if self.crashed.load(Ordering::SeqCst) {
            return Err(StoreError::new(ErrorKind::Unavailable, "injected: process crashed"));
        }
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let fault = match &self.plan {
            FaultPlan::None => None,
            FaultPlan::At { call, mode } => (n == *call).then_some(*mode),
            FaultPlan::Seeded { per_mille, mode, .. } => {
                let roll: u32 = self.rng.lock().expect("rng lock").random_range(0..1000);
                (roll < *per_mille).then_some(*mode)
            }
        };
        if fault.is_some() {
            self.faults.fetch_add(1, Ordering::SeqCst);
            if self.crash_after_fault {
                self.crashed.store(true, Ordering::SeqCst);
            }
        }
        Ok(fault)
    }

    async fn run<T, F>(&self, f: F) -> StoreResult<T>
    where
        F: Future<Output = StoreResult<T>>,
    {
        match self.decide()? {
            None => f.await,
            Some(FaultMode::Before) => Err(StoreError::new(ErrorKind::Unavailable, "injected: failed before the call")),
            Some(FaultMode::AfterApplied) => {
                let _ = f.await;
                Err(StoreError::new(ErrorKind::Unavailable, "injected: reply lost after the call applied"))
            }
            Some(FaultMode::Indeterminate) => {
                let _ = f.await;
                Err(StoreError::new(ErrorKind::Indeterminate, "injected: outcome unknown"))
            }
        }
    }
}

#[async_trait]
impl<S: StateStore> StateStore for FaultyStore<S> {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn requests_sent(&self) -> Option<u64> {
        self.inner.requests_sent()
    }
    async fn get(&self, key: &Key) -> StoreResult<Option<Item>> {
        self.run(self.inner.get(key)).await
    }
    async fn put(&self, key: &Key, item: Item, mode: PutMode) -> StoreResult<()> {
        self.run(self.inner.put(key, item, mode)).await
    }
    async fn update(&self, key: &Key, conditions: &[Condition], mutations: &[Mutation]) -> StoreResult<Item> {
        self.run(self.inner.update(key, conditions, mutations)).await
    }
    async fn delete(&self, key: &Key, conditions: &[Condition]) -> StoreResult<bool> {
        self.run(self.inner.delete(key, conditions)).await
    }
    async fn scan(&self, table: &TableName, partition: &[u8], page: PageRequest) -> StoreResult<Page> {
        self.run(self.inner.scan(table, partition, page)).await
    }
    async fn transact(&self, ops: Vec<WriteOp>) -> StoreResult<()> {
        self.run(self.inner.transact(ops)).await
    }
}

/// A shared handle to a store, for wrappers that must outlive a test's borrow.
pub type SharedStore = Arc<dyn StateStore>;
