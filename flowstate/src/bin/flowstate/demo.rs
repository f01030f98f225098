//! `flowstate demo`: travel reservations on embedded SQLite, with real
//! crashes injected, then recovery and a verification of every effect.
//!
//! Workers run `reserve` instances through runtimes whose store dies at a
//! random call (`FaultyStore` with `crash_after_fault`: every later call fails
//! too, as if the process had died). The worker's in-flight instance is then
//! abandoned mid-way, and the worker is replaced by a fresh runtime (fresh
//! caches) on the real store. The abandoned request is re-delivered with the
//! same instance id later, as a client retry would be, or left for the
//! collector. After all requests: collector passes until nothing is left
//! unfinished, late client retries, duplicate deliveries; then the checks.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowstate::core::intent::status;
use flowstate::testing::{FaultMode, FaultPlan, FaultyStore};
use flowstate::{Config, Error, Runtime, RuntimeBuilder, StateStore};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::ops::{self, humanize};
use crate::travel::{
    self, INVENTORY, LEDGER, LedgerEntry, ORDERS, Order, PaymentProvider, Profile, ROOMS, Reservation, ReserveRequest,
    SEATS, Setup, Tier, Trip,
};
use crate::{CliError, CliResult};

/// Lease of the demo's engine: short, so crashed instances are taken over quickly.
const LEASE: Duration = Duration::from_millis(250);
/// Users in the demo.
const USERS: usize = 40;
/// Every request id is `reservation-NNNN`.
const ID_PREFIX: &str = "reservation-";
/// File name of the demo database.
pub const DB_FILE: &str = "flowstate-demo.db";
/// Give up waiting for recovery after this long (a violation).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);
/// A request failing this often without a crash is given up (a violation).
const MAX_UNEXPLAINED_FAILURES: u32 = 5;

/// What `flowstate demo` was asked to do.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Keep the database here (default: a temporary directory, removed at exit).
    pub dir: Option<PathBuf>,
    /// Reservation requests.
    pub requests: usize,
    /// Probability that a worker's store call crashes the worker, per mille.
    pub crash_rate: u32,
    /// Seed of the workload and the crash points.
    pub seed: u64,
    /// Concurrent workers.
    pub workers: usize,
    /// Hotel rooms.
    pub rooms: i64,
    /// Flight seats.
    pub seats: i64,
}

/// SplitMix64: a tiny deterministic generator for the workload.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn mix(a: u64, b: u64) -> u64 {
    Rng::new(a ^ b.wrapping_mul(0x2545_f491_4f6c_dd1d)).next()
}

fn engine_config() -> Config {
    // One process, one clock: a small skew bound keeps the fast paths on.
    Config::default().lease(LEASE).clock_skew(Duration::from_millis(20)).duplicate_wait(Duration::from_secs(30))
}

fn mode_name(mode: FaultMode) -> &'static str {
    match mode {
        FaultMode::Before => "before the call",
        FaultMode::AfterApplied => "after it applied",
        FaultMode::Indeterminate => "indeterminate",
    }
}

type Faulty = Arc<FaultyStore<Arc<dyn StateStore>>>;

/// State the workers share.
struct Run {
    real: Arc<dyn StateStore>,
    provider: Arc<PaymentProvider>,
    requests: Vec<(String, ReserveRequest)>,
    queue: Mutex<VecDeque<usize>>,
    answers: Mutex<Vec<Option<Result<Reservation, String>>>>,
    /// Every worker store ever made, with its fault mode.
    stores: Mutex<Vec<(FaultMode, Faulty)>>,
    abandoned: Mutex<Vec<usize>>,
    redelivered: AtomicU64,
    replaced: AtomicU64,
    unexplained: Mutex<Vec<String>>,
    failures: Mutex<HashMap<usize, u32>>,
    opts: DemoOptions,
    bar: ProgressBar,
}

impl Run {
    fn worker_runtime(&self, worker: usize, generation: u64) -> (Runtime, Faulty) {
        let seed = mix(self.opts.seed, (worker as u64) << 32 | generation);
        let mode = FaultMode::ALL[(seed % 3) as usize];
        let plan = FaultPlan::Seeded { seed, per_mille: self.opts.crash_rate, mode };
        let faulty: Faulty = Arc::new(FaultyStore::new(self.real.clone(), plan).crash_after_fault());
        self.stores.lock().expect("stores lock").push((mode, faulty.clone()));
        let store: Arc<dyn StateStore> = faulty.clone();
        (register(Runtime::builder(store), &self.provider).build(), faulty)
    }

    fn answer(&self, i: usize, answer: Result<Reservation, String>) {
        let mut answers = self.answers.lock().expect("answers lock");
        if answers[i].is_none() {
            self.bar.inc(1);
        }
        answers[i] = Some(answer);
    }

    fn crashes(&self) -> u64 {
        self.stores.lock().expect("stores lock").iter().map(|(_, s)| s.faults()).sum()
    }
}

fn register(builder: RuntimeBuilder, provider: &Arc<PaymentProvider>) -> RuntimeBuilder {
    travel::register(builder.config(engine_config()), provider.clone())
}

async fn worker(run: Arc<Run>, w: usize) {
    let mut rng = Rng::new(mix(run.opts.seed ^ 0x5eed, w as u64));
    let mut generation = 0;
    let (mut rt, mut faulty) = run.worker_runtime(w, generation);
    loop {
        if faulty.crashed() {
            // Died in a background task (an async child or a lease renewal).
            generation += 1;
            run.replaced.fetch_add(1, Ordering::SeqCst);
            (rt, faulty) = run.worker_runtime(w, generation);
        }
        let Some(i) = run.queue.lock().expect("queue lock").pop_front() else { break };
        let (id, req) = &run.requests[i];
        match rt.invoke::<_, Reservation>("reserve", req, Some(id)).await {
            Ok(r) => run.answer(i, Ok(r)),
            Err(Error::Handler(msg)) => run.answer(i, Err(msg)),
            Err(_) if faulty.crashed() => {
                // The worker died mid-instance: the client saw an error.
                if rng.below(3) == 0 {
                    run.abandoned.lock().expect("abandoned lock").push(i);
                } else {
                    run.redelivered.fetch_add(1, Ordering::SeqCst);
                    run.queue.lock().expect("queue lock").push_back(i);
                }
                generation += 1;
                run.replaced.fetch_add(1, Ordering::SeqCst);
                (rt, faulty) = run.worker_runtime(w, generation);
            }
            Err(e) => {
                run.unexplained.lock().expect("unexplained lock").push(format!("{id}: {e}"));
                let mut failures = run.failures.lock().expect("failures lock");
                let n = failures.entry(i).or_default();
                *n += 1;
                if *n < MAX_UNEXPLAINED_FAILURES {
                    run.queue.lock().expect("queue lock").push_back(i);
                }
            }
        }
        run.bar.set_message(format!("{} crashes", run.crashes()));
    }
}

/// Users with their profiles, and requests with their instance ids.
type Workload = (Vec<(String, Profile)>, Vec<(String, ReserveRequest)>);

/// The demo's requests: deterministic from the seed.
fn workload(opts: &DemoOptions) -> Workload {
    let mut rng = Rng::new(opts.seed);
    let users: Vec<(String, Profile)> = (0..USERS)
        .map(|u| {
            let tier = if rng.below(4) == 0 { Tier::Gold } else { Tier::Standard };
            (format!("user-{u:03}"), Profile { name: format!("Traveller {u}"), tier })
        })
        .collect();
    let requests = (0..opts.requests)
        .map(|i| {
            let user = users[rng.below(USERS as u64) as usize].0.clone();
            let trip = match rng.below(6) {
                0..=2 => Trip::Package,
                3 => Trip::HotelOnly,
                _ => Trip::FlightOnly,
            };
            (format!("{ID_PREFIX}{:04}", i + 1), ReserveRequest { user, trip })
        })
        .collect();
    (users, requests)
}

fn sqlite_url(path: &Path) -> String {
    let p = path.display().to_string().replace('%', "%25").replace('?', "%3F");
    format!("sqlite://{p}")
}

/// Per-function counts of unfinished intents; `(expired, all unfinished)`.
async fn unfinished(store: &dyn StateStore) -> CliResult<(BTreeMap<String, Vec<String>>, usize)> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let census = ops::intents(store, engine_config().intent_shards).await?;
    let mut expired: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut running = 0;
    for i in census.into_iter().filter(|i| i.status == status::RUNNING) {
        running += 1;
        if i.lease_until <= now {
            expired.entry(i.function).or_default().push(i.id);
        }
    }
    Ok((expired, running))
}

/// What the collector did, over all passes.
#[derive(Default)]
struct Recovery {
    passes: usize,
    completed: usize,
    errors: usize,
    by_function: BTreeMap<String, usize>,
    timed_out: bool,
}

/// Run collector passes (after letting leases expire) until no instance is
/// unfinished.
async fn settle(rt: &Runtime, store: &dyn StateStore, rec: &mut Recovery) -> CliResult<()> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let (expired, running) = unfinished(store).await?;
        if running == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            rec.timed_out = true;
            return Ok(());
        }
        if expired.is_empty() {
            // Live leases (e.g. async children just dispatched): wait them out.
            tokio::time::sleep(LEASE / 2).await;
            continue;
        }
        let report = rt.recover().await?;
        rec.passes += 1;
        rec.completed += report.completed;
        rec.errors += report.errors;
        let (still, _) = unfinished(store).await?;
        for (function, ids) in expired {
            let left = still.get(&function).map_or(0, |s| ids.iter().filter(|id| s.contains(id)).count());
            *rec.by_function.entry(function).or_default() += ids.len() - left;
        }
        if report.expired == 0 {
            tokio::time::sleep(LEASE / 2).await;
        }
    }
}

/// One verification line.
struct Check {
    name: String,
    expected: String,
    actual: String,
    ok: bool,
}

fn check(name: &str, expected: impl ToString, actual: impl ToString, ok: bool) -> Check {
    Check { name: name.to_string(), expected: expected.to_string(), actual: actual.to_string(), ok }
}

fn eq_check(name: &str, expected: usize, actual: usize) -> Check {
    check(name, expected, actual, expected == actual)
}

/// The current value of a key and its write-log entry count, across its rows.
async fn key_state(rt: &Runtime, table: &str, key: &str) -> CliResult<(Option<serde_json::Value>, usize)> {
    let rows = rt.key_rows(table, key).await?;
    let value = rows.iter().rfind(|r| r.linked).map(|r| r.value.clone()).filter(|v| !v.is_null());
    Ok((value, rows.iter().map(|r| r.entries.len()).sum()))
}

/// Run the demo; `Ok(true)` when every check passed.
pub async fn run(opts: DemoOptions, out: &mut dyn Write) -> CliResult<bool> {
    let started = Instant::now();
    let (_tmp, dir) = match &opts.dir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|e| CliError::msg(format!("cannot create {}: {e}", d.display())))?;
            let d = d.canonicalize().map_err(|e| CliError::msg(format!("{}: {e}", d.display())))?;
            for suffix in ["", "-wal", "-shm"] {
                let f = d.join(format!("{DB_FILE}{suffix}"));
                if f.exists() {
                    std::fs::remove_file(&f)
                        .map_err(|e| CliError::msg(format!("cannot replace {}: {e}", f.display())))?;
                }
            }
            (None, d)
        }
        None => {
            let t =
                tempfile::tempdir().map_err(|e| CliError::msg(format!("cannot create a temporary directory: {e}")))?;
            let d = t.path().to_path_buf();
            (Some(t), d)
        }
    };
    let url = sqlite_url(&dir.join(DB_FILE));
    let real = flowstate::open_store(&url).await?;
    let (users, requests) = workload(&opts);

    writeln!(out, "Flowstate demo: travel reservations, exactly once, with crashes injected")?;
    writeln!(out, "  store     {url}")?;
    writeln!(
        out,
        "  workload  {} requests by {} users for {} rooms and {} seats; {} workers",
        opts.requests, USERS, opts.rooms, opts.seats, opts.workers
    )?;
    writeln!(
        out,
        "  crashes   a worker's store call kills the worker with probability {}‰ (seed {});\n            its instance is abandoned mid-way and a fresh worker takes its place",
        opts.crash_rate, opts.seed
    )?;
    out.flush()?;

    let provider = PaymentProvider::new(real.clone());
    let rt = register(Runtime::builder(real.clone()), &provider).build();
    rt.invoke::<_, ()>("setup", &Setup { users, rooms: opts.rooms, seats: opts.seats }, Some("demo-setup")).await?;

    let bar = if std::io::stdout().is_terminal() {
        ProgressBar::with_draw_target(Some(opts.requests as u64), ProgressDrawTarget::stdout())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("  {bar:30} {pos}/{len} answered, {msg}, {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("0 crashes");
    let n = requests.len();
    let run = Arc::new(Run {
        real: real.clone(),
        provider: provider.clone(),
        requests,
        queue: Mutex::new((0..n).collect()),
        answers: Mutex::new(vec![None; n]),
        stores: Mutex::default(),
        abandoned: Mutex::default(),
        redelivered: AtomicU64::new(0),
        replaced: AtomicU64::new(0),
        unexplained: Mutex::default(),
        failures: Mutex::default(),
        opts: opts.clone(),
        bar: bar.clone(),
    });
    let work_started = Instant::now();
    let handles: Vec<_> = (0..opts.workers.max(1)).map(|w| tokio::spawn(worker(run.clone(), w))).collect();
    for h in handles {
        h.await.map_err(|e| CliError::msg(format!("a demo worker panicked: {e}")))?;
    }
    bar.finish_and_clear();
    let work_time = work_started.elapsed();

    // Recovery: let the leases of abandoned instances expire, then collect.
    let mut rec = Recovery::default();
    settle(&rt, real.as_ref(), &mut rec).await?;

    // Clients that gave up retry late: recorded outcomes come back.
    let unanswered: Vec<usize> = run
        .answers
        .lock()
        .expect("answers lock")
        .iter()
        .enumerate()
        .filter(|(_, a)| a.is_none())
        .map(|(i, _)| i)
        .collect();
    let mut from_record = 0;
    let mut ran_late = 0;
    for &i in &unanswered {
        let (id, req) = &run.requests[i];
        let done =
            rt.inspect(&flowstate::InstanceId::new(id.as_str())?).await?.intent.is_some_and(|it| {
                it.get_str(flowstate::core::intent::attr::STATUS).is_some_and(|s| s != status::RUNNING)
            });
        if done {
            from_record += 1
        } else {
            ran_late += 1
        }
        match rt.invoke::<_, Reservation>("reserve", req, Some(id)).await {
            Ok(r) => run.answer(i, Ok(r)),
            Err(Error::Handler(msg)) => run.answer(i, Err(msg)),
            Err(e) => run.unexplained.lock().expect("unexplained lock").push(format!("{id} (late retry): {e}")),
        }
    }
    settle(&rt, real.as_ref(), &mut rec).await?;

    // Duplicate deliveries of answered requests: the recorded result, nothing re-run.
    let calls_before = provider.calls();
    let answers: Vec<Option<Result<Reservation, String>>> = run.answers.lock().expect("answers lock").clone();
    let mut duplicates = 0;
    let mut duplicates_matched = 0;
    for (i, (id, req)) in run.requests.iter().enumerate().step_by(10) {
        let Some(first) = &answers[i] else { continue };
        duplicates += 1;
        let again = match rt.invoke::<_, Reservation>("reserve", req, Some(id)).await {
            Ok(r) => Ok(r),
            Err(Error::Handler(msg)) => Err(msg),
            Err(e) => Err(format!("error: {e}")),
        };
        if &again == first {
            duplicates_matched += 1;
        }
    }
    let duplicate_charges = provider.calls() - calls_before;

    // ---- verification ------------------------------------------------------
    let answered = answers.iter().filter(|a| a.is_some()).count();
    let failures: Vec<(&str, &String)> = answers
        .iter()
        .zip(&run.requests)
        .filter_map(|(a, (id, _))| match a {
            Some(Err(msg)) => Some((id.as_str(), msg)),
            _ => None,
        })
        .collect();
    let mut confirmed: BTreeMap<&str, (&ReserveRequest, i64, &str)> = BTreeMap::new();
    let (mut sold_out_hotel, mut sold_out_flight, mut rejected) = (0, 0, 0);
    for (a, (id, req)) in answers.iter().zip(&run.requests) {
        match a {
            Some(Ok(Reservation::Confirmed { amount, receipt, .. })) => {
                confirmed.insert(id, (req, *amount, receipt));
            }
            Some(Ok(Reservation::SoldOut { what })) if what == "hotel" => sold_out_hotel += 1,
            Some(Ok(Reservation::SoldOut { .. })) => sold_out_flight += 1,
            Some(Ok(Reservation::Rejected { .. })) => rejected += 1,
            _ => {}
        }
    }
    let rooms_sold = confirmed.values().filter(|(r, ..)| r.trip.hotel()).count();
    let seats_sold = confirmed.values().filter(|(r, ..)| r.trip.flight()).count();
    let left = |v: Option<serde_json::Value>| v.and_then(|v| v.as_i64()).unwrap_or(i64::MIN);
    let rooms_left = left(rt.peek(INVENTORY, ROOMS).await?);
    let seats_left = left(rt.peek(INVENTORY, SEATS).await?);

    let charges = provider.charges();
    let mut charges_per_reservation: HashMap<&str, Vec<&travel::Charge>> = HashMap::new();
    for c in &charges {
        charges_per_reservation.entry(c.reservation.as_str()).or_default().push(c);
    }
    let charged_once = confirmed
        .iter()
        .filter(|(id, (_, amount, receipt))| {
            charges_per_reservation
                .get(**id)
                .is_some_and(|cs| cs.len() == 1 && cs[0].amount == *amount && cs[0].receipt == *receipt)
        })
        .count();

    let (mut ledger_entries, mut ledger_once, mut orders_once, mut stray) = (0, 0, 0, 0);
    for (id, _) in &run.requests {
        let (ledger, ledger_writes) = key_state(&rt, LEDGER, id).await?;
        let (order, order_writes) = key_state(&rt, ORDERS, id).await?;
        match confirmed.get(id.as_str()) {
            Some((req, amount, receipt)) => {
                if ledger.is_some() {
                    ledger_entries += 1;
                }
                let ledger: Option<LedgerEntry> = ledger.and_then(|v| serde_json::from_value(v).ok());
                if ledger_writes == 1 && ledger.is_some_and(|l| l.amount == *amount && l.receipt == *receipt) {
                    ledger_once += 1;
                }
                let order: Option<Order> = order.and_then(|v| serde_json::from_value(v).ok());
                if order_writes == 1
                    && order.is_some_and(|o| o.receipt == *receipt && o.amount == *amount && o.trip == req.trip)
                {
                    orders_once += 1;
                }
            }
            None => {
                if ledger.is_some() {
                    ledger_entries += 1;
                }
                if ledger.is_some() || order.is_some() || ledger_writes + order_writes > 0 {
                    stray += 1;
                }
            }
        }
    }
    let (_, still_running) = unfinished(real.as_ref()).await?;
    let crashes = run.crashes();
    let mut crash_modes: BTreeMap<&str, u64> = BTreeMap::new();
    for (mode, s) in run.stores.lock().expect("stores lock").iter() {
        if s.faults() > 0 {
            *crash_modes.entry(mode_name(*mode)).or_default() += s.faults();
        }
    }
    let c = confirmed.len();
    let checks = vec![
        eq_check("requests answered", n, answered),
        eq_check("recorded failures", 0, failures.len()),
        check(
            "rooms sold within capacity",
            format!("≤ {}", opts.rooms),
            rooms_sold,
            rooms_sold as i64 <= opts.rooms && rooms_left >= 0,
        ),
        check(
            "rooms sold = rooms taken from inventory",
            rooms_sold,
            opts.rooms - rooms_left,
            rooms_sold as i64 == opts.rooms - rooms_left,
        ),
        check(
            "seats sold within capacity",
            format!("≤ {}", opts.seats),
            seats_sold,
            seats_sold as i64 <= opts.seats && seats_left >= 0,
        ),
        check(
            "seats sold = seats taken from inventory",
            seats_sold,
            opts.seats - seats_left,
            seats_sold as i64 == opts.seats - seats_left,
        ),
        eq_check("payments charged", c, charges.len()),
        eq_check("reservations charged exactly once", c, charged_once),
        check("charges run after their result was recorded", 0, provider.late_calls(), provider.late_calls() == 0),
        eq_check("ledger entries", c, ledger_entries),
        eq_check("ledger entries written exactly once", c, ledger_once),
        eq_check("orders confirmed exactly once", c, orders_once),
        eq_check("ledger or order rows of unconfirmed requests", 0, stray),
        eq_check("instances left unfinished", 0, still_running),
        eq_check("duplicate deliveries given the recorded result", duplicates, duplicates_matched),
        check("charges run by duplicate deliveries", 0, duplicate_charges, duplicate_charges == 0),
    ];
    let violations = checks.iter().filter(|c| !c.ok).count() + usize::from(rec.timed_out);

    // ---- summary -----------------------------------------------------------
    let modes: Vec<String> = crash_modes.iter().map(|(m, n)| format!("{m} {n}")).collect();
    let by_fn: Vec<String> = rec.by_function.iter().map(|(f, n)| format!("{f} {n}")).collect();
    let rows: Vec<(String, String, String)> = vec![
        ("requests answered".into(), format!("{answered} / {n}"), String::new()),
        ("  confirmed".into(), c.to_string(), format!("{rooms_sold} rooms, {seats_sold} seats")),
        (
            "  sold out".into(),
            (sold_out_hotel + sold_out_flight).to_string(),
            format!("hotel {sold_out_hotel}, flight {sold_out_flight}"),
        ),
        ("  rejected".into(), rejected.to_string(), String::new()),
        ("crashes injected".into(), crashes.to_string(), modes.join(", ")),
        ("workers replaced".into(), run.replaced.load(Ordering::SeqCst).to_string(), String::new()),
        (
            "crashed requests re-delivered".into(),
            run.redelivered.load(Ordering::SeqCst).to_string(),
            "same instance id, by the client".into(),
        ),
        (
            "left for the collector".into(),
            run.abandoned.lock().expect("abandoned lock").len().to_string(),
            "the client gave up".into(),
        ),
        (
            "recovered by the collector".into(),
            rec.by_function.values().sum::<usize>().to_string(),
            format!(
                "{}{} collector pass{}",
                if by_fn.is_empty() { String::new() } else { format!("{}; ", by_fn.join(", ")) },
                rec.passes,
                if rec.passes == 1 { "" } else { "es" }
            ),
        ),
        (
            "late client retries".into(),
            unanswered.len().to_string(),
            format!("{from_record} answered from the record, {ran_late} ran"),
        ),
        (
            "charge retries deduplicated".into(),
            provider.deduplicated().to_string(),
            "crash between charge and log; the provider's idempotency key held".into(),
        ),
        ("duplicate deliveries".into(), duplicates.to_string(), "every 10th request delivered again".into()),
        (
            "time".into(),
            humanize(started.elapsed()),
            format!(
                "{} requests, {} recovery and checks",
                humanize(work_time),
                humanize(started.elapsed() - work_time)
            ),
        ),
    ];
    writeln!(out)?;
    writeln!(out, "Run")?;
    let w = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    for (name, value, note) in &rows {
        if note.is_empty() {
            writeln!(out, "  {name:<w$}  {value:>9}")?;
        } else {
            writeln!(out, "  {name:<w$}  {value:>9}   {note}")?;
        }
    }
    writeln!(out)?;
    let w = checks.iter().map(|c| c.name.chars().count()).max().unwrap_or(0);
    writeln!(out, "Checks      {:<w$}  {:>9}  {:>9}", "", "expected", "actual")?;
    for c in &checks {
        let mark = if c.ok { "ok  " } else { "FAIL" };
        writeln!(out, "  {mark}      {:<w$}  {:>9}  {:>9}", c.name, c.expected, c.actual)?;
    }
    if rec.timed_out {
        writeln!(out, "  FAIL      instances still unfinished after {}", humanize(SETTLE_TIMEOUT))?;
    }
    for (id, msg) in failures.iter().take(5) {
        writeln!(out, "  failure   {id}: {msg}")?;
    }
    let unexplained = run.unexplained.lock().expect("unexplained lock");
    if !unexplained.is_empty() {
        writeln!(out, "  note      {} errors without an injected crash (retried), e.g.:", unexplained.len())?;
        for e in unexplained.iter().take(3) {
            writeln!(out, "              {e}")?;
        }
    }
    writeln!(out)?;
    writeln!(out, "violations: {violations}")?;
    match &opts.dir {
        Some(_) => {
            let sample = confirmed.keys().next().copied().unwrap_or("reservation-0001");
            writeln!(out, "database kept: inspect an instance with")?;
            writeln!(out, "  flowstate inspect --store {url} {sample}")?;
        }
        None => writeln!(out, "(the database was temporary; keep it with --dir DIR, then `flowstate inspect`)")?,
    }
    Ok(violations == 0)
}
