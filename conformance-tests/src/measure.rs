//! Round trips per engine operation, counted with
//! [`CountingStore`] in steady state
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
    /// Requests on the wire, where the backend counts them
    /// ([`StateStore::requests_sent`]): more than `measured` where a store
    /// call is a multi-request transaction.
    pub requests: Option<u64>,
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
    let measured: Arc<Mutex<BTreeMap<&'static str, Tally>>> = Arc::default();
    let (c, m) = (counting.clone(), measured.clone());
    let rt = Runtime::builder(counting.clone())
        .register("noop", |_: Context, (): ()| async { Ok(()) })
        .register("one_write", |ctx: Context, (): ()| async move { ctx.write("rt", "one", &1).await })
        .register("probe", move |ctx: Context, measure: bool| {
            let (c, m) = (c.clone(), m.clone());
            async move {
                let note = |name: &'static str, before: Tally| {
                    if measure {
                        m.lock().unwrap_or_else(|e| e.into_inner()).insert(name, since(&c, before));
                    }
                };
                let b = snapshot(&c);
                ctx.write("rt", "k", &1).await?;
                note("write", b);
                let b = snapshot(&c);
                if !ctx.cond_write("rt", "k", &2, Predicate::value().eq(1)).await? {
                    return Err(Error::handler("cond_write expected to succeed"));
                }
                note("cond_write (true)", b);
                let b = snapshot(&c);
                if ctx.cond_write("rt", "k", &3, Predicate::value().eq(1)).await? {
                    return Err(Error::handler("cond_write expected to fail"));
                }
                note("cond_write (false)", b);
                let b = snapshot(&c);
                let _: Option<i64> = ctx.read("rt", "k").await?;
                note("read", b);
                let b = snapshot(&c);
                ctx.invoke::<_, ()>("noop", &()).await?;
                note("sync invoke (caller + callee)", b);
                let b = snapshot(&c);
                ctx.step("effect", |_| async { Ok::<_, String>(1) }).await?;
                note("step", b);
                Ok(())
            }
        })
        .build();
    let run = uuid::Uuid::new_v4().simple().to_string();
    rt.invoke::<_, ()>("probe", &false, Some(&format!("warm-up-{run}"))).await?;
    rt.invoke::<_, ()>("probe", &true, Some(&format!("measured-{run}"))).await?;
    let before = snapshot(&counting);
    rt.invoke::<_, ()>("noop", &(), Some(&format!("noop-{run}"))).await?;
    let mut measured = measured.lock().unwrap_or_else(|e| e.into_inner()).clone();
    measured.insert("instance start + finish", since(&counting, before));
    // Bookkeeping of an instance that writes: its total minus the write's 1
    // (where the store has atomic batches, the first write carries the intent).
    rt.invoke::<_, ()>("one_write", &(), Some(&format!("one-warm-{run}"))).await?;
    // On the wire, the write's requests are those of a plain write.
    let write_requests = measured.get("write").and_then(|w| w.1).unwrap_or(0);
    let before = snapshot(&counting);
    rt.invoke::<_, ()>("one_write", &(), Some(&format!("one-{run}"))).await?;
    let (calls, requests) = since(&counting, before);
    measured.insert("instance start + finish, with a write", (calls - 1, requests.map(|r| r - write_requests)));
    Ok(TARGETS
        .iter()
        .map(|&(op, target, beldi)| {
            let (measured, requests) = measured.get(op).copied().unwrap_or((0, None));
            RoundTrip { op, measured, requests, target, beldi }
        })
        .collect())
}

/// Store calls, and wire requests where the backend counts them.
type Tally = (u64, Option<u64>);

/// Store calls and wire requests so far.
fn snapshot(store: &CountingStore<Arc<dyn StateStore>>) -> Tally {
    (store.counts().total(), store.requests_sent())
}

/// Calls and requests since `before`.
fn since(store: &CountingStore<Arc<dyn StateStore>>, before: Tally) -> Tally {
    let now = snapshot(store);
    (now.0 - before.0, now.1.zip(before.1).map(|(n, b)| n - b))
}

/// The table as text.
pub fn render(rows: &[RoundTrip]) -> String {
    let wire = rows.iter().any(|r| r.requests.is_some());
    let mut out = format!("{:<40} {:>9} {:>7} {:>6}", "operation", "flowstate", "target", "beldi");
    out.push_str(if wire { " requests\n" } else { "\n" });
    for r in rows {
        let _ = write!(out, "{:<40} {:>9} {:>7} {:>6}", r.op, r.measured, r.target, r.beldi);
        match r.requests {
            Some(n) if wire => writeln!(out, " {n:>8}"),
            _ => writeln!(out),
        }
        .expect("writing to a String");
    }
    out
}
