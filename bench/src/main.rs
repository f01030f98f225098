//! `flowstate-bench`: what exactly-once costs, measured against the raw store.
//!
//! For each backend, in one run on one machine:
//! 1. store round trips per engine operation (counted), next to Beldi's;
//! 2. latency of a 3-write workflow through Flowstate vs the same 3 writes as
//!    raw conditional updates on the same store — median of `--runs` runs,
//!    runs alternating so drift hits both sides — reported as a ratio;
//! 3. throughput at 1, 4 and 16 concurrent instances, on distinct keys and
//!    on one hot key, Flowstate vs raw.
//!
//! `cargo run --release -p flowstate-bench -- --store memory:// --store sqlite://`

#![allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use conformance_tests::measure;
use flowstate_core::store::{Condition, Item, Key, Mutation, PutMode, StateStore, TableName};
use flowstate_core::{Context, Runtime};
use serde::Serialize;

/// Command-line options.
#[derive(Debug, Parser)]
#[command(name = "flowstate-bench", about = "Flowstate vs raw store: round trips, latency, throughput")]
struct Args {
    /// Stores to measure, by URL: `memory://`, `sqlite://` (a temporary file),
    /// `sqlite://PATH`, `postgres://…`, `dynamodb://?endpoint=…`, `cosmos://…`,
    /// `spanner://projects/P/instances/I/databases/D`.
    #[arg(long = "store", default_values = ["memory://", "sqlite://"])]
    stores: Vec<String>,
    /// Runs per side for the latency median (at least 5).
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// Workflow instances per latency run.
    #[arg(long, default_value_t = 200)]
    iterations: usize,
    /// Instances per throughput measurement.
    #[arg(long, default_value_t = 400)]
    instances: usize,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

#[derive(Debug, Serialize)]
struct Report {
    store: String,
    round_trips: Vec<RoundTripRow>,
    latency_us: Latency,
    throughput: Vec<Throughput>,
}

/// One operation's round trips: store calls, wire requests (where the
/// backend counts them), our target and Beldi's cost.
#[derive(Debug, Serialize)]
struct RoundTripRow {
    op: String,
    store_calls: u64,
    requests: Option<u64>,
    target: u64,
    beldi: u64,
}

#[derive(Debug, Serialize)]
struct Latency {
    flowstate_median_us: f64,
    raw_median_us: f64,
    ratio: f64,
}

#[derive(Debug, Serialize)]
struct Throughput {
    concurrency: usize,
    hot_key: bool,
    flowstate_per_s: f64,
    raw_per_s: f64,
    ratio: f64,
}

/// Open a store through the facade; `sqlite://` alone means a fresh file in
/// a temporary directory.
async fn open(url: &str, dir: &tempfile::TempDir) -> Result<Arc<dyn StateStore>, String> {
    let url =
        if url == "sqlite://" { format!("sqlite://{}", dir.path().join("bench.db").display()) } else { url.into() };
    flowstate::open_store(&url).await.map_err(|e| e.to_string())
}

const TABLE: &str = "bench";

/// The 3-write workflow: write `value` to `key-0..2`.
fn runtime(store: Arc<dyn StateStore>) -> Runtime {
    Runtime::builder(store)
        .register("three_writes", |ctx: Context, (prefix, value): (String, u64)| async move {
            for k in 0..3 {
                ctx.write(TABLE, &format!("{prefix}-{k}"), &value).await?;
            }
            Ok(())
        })
        .build()
}

fn raw_key(prefix: &str, k: usize) -> Key {
    Key::new(TableName::new("raw").expect("valid"), format!("{prefix}-{k}").into_bytes(), b"v".to_vec())
}

/// The same 3 writes as raw conditional updates (item must exist).
async fn raw_three_writes(store: &dyn StateStore, prefix: &str, value: u64) {
    for k in 0..3 {
        let muts = [Mutation::Set("v".into(), value.into())];
        store.update(&raw_key(prefix, k), &[Condition::ItemExists], &muts).await.expect("raw update");
    }
}

async fn prepare_raw(store: &dyn StateStore, prefix: &str) {
    for k in 0..3 {
        store.put(&raw_key(prefix, k), Item::new().with("v", 0), PutMode::Overwrite).await.expect("raw put");
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

async fn latency(store: Arc<dyn StateStore>, runs: usize, iterations: usize) -> Latency {
    let rt = runtime(store.clone());
    prepare_raw(&*store, "lat").await;
    // Warm up both paths (heads created, tails cached, connections open).
    for i in 0..10 {
        rt.invoke::<_, ()>("three_writes", &("lat", i), None).await.expect("warm-up");
        raw_three_writes(&*store, "lat", i).await;
    }
    let (mut fs, mut raw) = (Vec::new(), Vec::new());
    for run in 0..runs.max(5) {
        let t = Instant::now();
        for i in 0..iterations {
            rt.invoke::<_, ()>("three_writes", &("lat", (run * iterations + i) as u64), None).await.expect("invoke");
        }
        fs.push(t.elapsed().as_secs_f64() * 1e6 / iterations as f64);
        let t = Instant::now();
        for i in 0..iterations {
            raw_three_writes(&*store, "lat", (run * iterations + i) as u64).await;
        }
        raw.push(t.elapsed().as_secs_f64() * 1e6 / iterations as f64);
    }
    let (f, r) = (median(fs), median(raw));
    Latency { flowstate_median_us: f, raw_median_us: r, ratio: f / r }
}

async fn throughput(store: Arc<dyn StateStore>, concurrency: usize, hot_key: bool, instances: usize) -> Throughput {
    let rt = runtime(store.clone());
    let prefix = |task: usize| if hot_key { "hot".to_string() } else { format!("cold{concurrency}-{task}") };
    for task in 0..concurrency {
        prepare_raw(&*store, &prefix(task)).await;
        rt.invoke::<_, ()>("three_writes", &(prefix(task), 0u64), None).await.expect("warm-up");
    }
    let per_task = instances.div_ceil(concurrency);
    let timed = |flowstate: bool| {
        let (rt, store) = (rt.clone(), store.clone());
        async move {
            let t = Instant::now();
            let tasks: Vec<_> = (0..concurrency)
                .map(|task| {
                    let (rt, store, p) = (rt.clone(), store.clone(), prefix(task));
                    tokio::spawn(async move {
                        for i in 0..per_task as u64 {
                            if flowstate {
                                rt.invoke::<_, ()>("three_writes", &(p.clone(), i), None).await.expect("invoke");
                            } else {
                                raw_three_writes(&*store, &p, i).await;
                            }
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.expect("task");
            }
            (per_task * concurrency) as f64 / t.elapsed().as_secs_f64()
        }
    };
    let flowstate_per_s = timed(true).await;
    let raw_per_s = timed(false).await;
    Throughput { concurrency, hot_key, flowstate_per_s, raw_per_s, ratio: raw_per_s / flowstate_per_s }
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut reports = Vec::new();
    for url in &args.stores {
        let store = open(url, &dir).await?;
        // Store URLs carry credentials: print them redacted.
        println!("== {} (update strategy {:?})", flowstate::redact(url), store.capabilities().update);
        let rows = measure::round_trips(store.clone()).await.map_err(|e| e.to_string())?;
        print!("{}", measure::render(&rows));
        let lat = latency(store.clone(), args.runs, args.iterations).await;
        println!(
            "3-write workflow latency (median of {} runs x {} instances): flowstate {:.1} us, raw {:.1} us, ratio {:.2}",
            args.runs.max(5),
            args.iterations,
            lat.flowstate_median_us,
            lat.raw_median_us,
            lat.ratio
        );
        let mut tput = Vec::new();
        println!("{:<12} {:<9} {:>14} {:>12} {:>11}", "concurrency", "keys", "flowstate/s", "raw/s", "raw/fs");
        for hot_key in [false, true] {
            for c in [1, 4, 16] {
                let t = throughput(store.clone(), c, hot_key, args.instances).await;
                println!(
                    "{:<12} {:<9} {:>14.0} {:>12.0} {:>11.2}",
                    c,
                    if hot_key { "hot" } else { "distinct" },
                    t.flowstate_per_s,
                    t.raw_per_s,
                    t.ratio
                );
                tput.push(t);
            }
        }
        reports.push(Report {
            store: flowstate::redact(url),
            round_trips: rows
                .iter()
                .map(|r| RoundTripRow {
                    op: r.op.to_string(),
                    store_calls: r.measured,
                    requests: r.requests,
                    target: r.target,
                    beldi: r.beldi,
                })
                .collect(),
            latency_us: lat,
            throughput: tput,
        });
        println!();
    }
    if let Some(path) = args.json {
        let json = serde_json::to_string_pretty(&reports).map_err(|e| e.to_string())?;
        std::fs::write(&path, json).map_err(|e| format!("writing {}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
