//! Round trips per engine operation, counted with
//! [`CountingStore`](flowstate_core::testing::CountingStore) in steady state
//! (tails cached, heads existing). The conformance case asserts the targets;
//! the bench prints the same table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use flowstate_core::store::StateStore;
use flowstate_core::testing::CountingStore;
use flowstate_core::{Context, Error, Predicate, Result, Runtime};

/// One row of the round-trip table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoundTrip {
    /// The operation.
    pub op: &'static str,
    /// Store calls counted.
    pub measured: u64,
    /// Our target.
    pub target: u64,
    /// Beldi's cost in DynamoDB requests (OSDI 2020).
    pub beldi: u64,
}

/// (operation, target, Beldi) in display order.
pub const TARGETS: [(&str, u64, u64); 8] = [
    ("write", 1, 2),
    ("cond_write (true)", 1, 2),
    ("cond_write (false)", 2, 3),
    ("read", 2, 3),
    ("sync invoke (caller + callee)", 3, 4),
    ("step", 1, 1),
    ("instance start + finish", 2, 2),
    ("instance start + finish, with a write", 2, 2),
];

/// Count the store calls of each operation on `store` (any backend).
pub async fn round_trips(store: Arc<dyn StateStore>) -> Result<Vec<RoundTrip>> {
    let counting = Arc::new(CountingStore::new(store));
    let measured: Arc<Mutex<BTreeMap<&'static str, u64>>> = Arc::default();
    let (c, m) = (counting.clone(), measured.clone());
    let rt = Runtime::builder(counting.clone())
        .register("noop", |_: Context, (): ()| async { Ok(()) })
        .register("one_write", |ctx: Context, (): ()| async move { ctx.write("rt", "one", &1).await })
        .register("probe", move |ctx: Context, measure: bool| {
            let (c, m) = (c.clone(), m.clone());
            async move {
                let note = |name: &'static str, before: u64| {
                    if measure {
                        m.lock().unwrap_or_else(|e| e.into_inner()).insert(name, c.counts().total() - before);
                    }
                };
                let b = c.counts().total();
                ctx.write("rt", "k", &1).await?;
                note("write", b);
                let b = c.counts().total();
                if !ctx.cond_write("rt", "k", &2, Predicate::value().eq(1)).await? {
                    return Err(Error::handler("cond_write expected to succeed"));
                }
                note("cond_write (true)", b);
                let b = c.counts().total();
                if ctx.cond_write("rt", "k", &3, Predicate::value().eq(1)).await? {
                    return Err(Error::handler("cond_write expected to fail"));
                }
                note("cond_write (false)", b);
                let b = c.counts().total();
                let _: Option<i64> = ctx.read("rt", "k").await?;
                note("read", b);
                let b = c.counts().total();
                ctx.invoke::<_, ()>("noop", &()).await?;
                note("sync invoke (caller + callee)", b);
                let b = c.counts().total();
                ctx.step("effect", |_| async { Ok::<_, String>(1) }).await?;
                note("step", b);
                Ok(())
            }
        })
        .build();
    let run = uuid::Uuid::new_v4().simple().to_string();
    rt.invoke::<_, ()>("probe", &false, Some(&format!("warm-up-{run}"))).await?;
    rt.invoke::<_, ()>("probe", &true, Some(&format!("measured-{run}"))).await?;
    let before = counting.counts().total();
    rt.invoke::<_, ()>("noop", &(), Some(&format!("noop-{run}"))).await?;
    let mut measured = measured.lock().unwrap_or_else(|e| e.into_inner()).clone();
    measured.insert("instance start + finish", counting.counts().total() - before);
    // Bookkeeping of an instance that writes: its total minus the write's 1
    // (where the store has atomic batches, the first write carries the intent).
    rt.invoke::<_, ()>("one_write", &(), Some(&format!("one-warm-{run}"))).await?;
    let before = counting.counts().total();
    rt.invoke::<_, ()>("one_write", &(), Some(&format!("one-{run}"))).await?;
    measured.insert("instance start + finish, with a write", counting.counts().total() - before - 1);
    Ok(TARGETS
        .iter()
        .map(|&(op, target, beldi)| RoundTrip { op, measured: measured.get(op).copied().unwrap_or(0), target, beldi })
        .collect())
}

/// The table as text.
pub fn render(rows: &[RoundTrip]) -> String {
    let mut out = format!("{:<40} {:>9} {:>7} {:>6}\n", "operation", "flowstate", "target", "beldi");
    for r in rows {
        let _ = writeln!(out, "{:<40} {:>9} {:>7} {:>6}", r.op, r.measured, r.target, r.beldi);
    }
    out
}
