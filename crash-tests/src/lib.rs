//! Multi-process crash tests: real worker processes run the reference
//! bank-transfer workflow ([`conformance_tests::workflows`]) against one
//! durable store (SQLite file or PostgreSQL), get SIGKILLed at random
//! moments, are restarted with the same instance-id sequence (so
//! re-invocations of interrupted instances are duplicates that must replay,
//! not repeat), and finally all killed; a fresh runtime then runs the
//! collector and the business invariants are checked:
//!
//! - every started instance is finished after recovery (nothing left running,
//!   and a second collector pass finds nothing expired);
//! - every finished transfer is applied exactly once: an `ok` transfer has
//!   exactly one audit write-log entry, a refused one none; an instance that
//!   never registered an intent has no effects;
//! - every account's balance is its seed plus exactly the finished `ok`
//!   transfers in and out (so money is conserved and nothing is lost or
//!   doubled), and no balance is negative;
//! - what a worker acknowledged (`acked <id> <ok>`) is what was recorded.
//!
//! Not checked across processes: that the side-effect step never ran after
//! its result was recorded (the in-process crash sweeps check that).
//!
//! Every process is started by this harness, killed by PID (`Child::kill`
//! sends SIGKILL to that PID), and reaped; the store is on loopback or a file.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backend_postgres::{PostgresConfig, PostgresStore};
use backend_sqlite::{SqliteConfig, SqliteStore};
use conformance_tests::workflows::{self, Effects, Transfer, TransferResult};
use flowstate_core::intent::{attr, status};
use flowstate_core::store::{StateStore, StoreError, StoreResult};
use flowstate_core::{Config, InstanceId, Runtime};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Lease of every worker execution: short, so a killed execution's instances
/// can be taken over (by a restarted worker or the collector) within a second.
pub const LEASE: Duration = Duration::from_secs(1);

/// Open the store a URL names (`sqlite://PATH`, `postgres://…` or
/// `spanner://…`, the emulator from `SPANNER_EMULATOR_HOST`) under `namespace`.
pub async fn open_store(url: &str, namespace: &str) -> StoreResult<Arc<dyn StateStore>> {
    if url.starts_with("sqlite:") {
        let config = SqliteConfig::from_url(url)?.with_namespace(namespace);
        Ok(Arc::new(SqliteStore::open(config).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let config = PostgresConfig::from_url(url)?.with_namespace(namespace).with_pool_max(8);
        Ok(Arc::new(PostgresStore::open(config).await?))
    } else if url.starts_with("spanner://") {
        let config = backend_spanner::SpannerConfig::from_url(url)?.with_namespace(namespace);
        Ok(Arc::new(backend_spanner::SpannerStore::open(config).await?))
    } else {
        Err(StoreError::invalid(format!("unsupported store URL {:?}", backend_postgres::redact(url))))
    }
}

/// The engine settings of workers and of the recovering runtime: a short
/// lease, and small DAAL rows so concurrent transfers also chain rows.
pub fn engine_config() -> Config {
    Config::default().lease(LEASE).row_capacity(8).duplicate_wait(Duration::from_secs(30))
}

/// A runtime with the reference workflows registered.
pub fn runtime(store: Arc<dyn StateStore>) -> Runtime {
    let effects = Effects::new(Arc::clone(&store));
    workflows::register(Runtime::builder(store).config(engine_config()), effects).build()
}

/// Name of account `i` of worker `worker`.
pub fn account(worker: u32, i: u32) -> String {
    format!("w{worker}-acct{i}")
}

/// Instance id of transfer `n` of worker `worker`.
pub fn instance_id(worker: u32, n: u32) -> String {
    format!("w{worker}-{n}")
}

/// The input of transfer `n` of worker `worker`: a fixed function of both, so
/// a restarted worker re-invokes each id with the same input.
///
/// Each worker moves money among its own `accounts` only. The reference
/// transfer credits with a plain write of the balance it read, so two
/// *concurrent* transfers touching one account would lose an update even
/// without any crash (a serializability matter, not an exactly-once one).
/// Within one worker, instances run one after another, and after a kill a
/// worker has at most one unfinished instance, which the restarted worker or
/// the collector finishes before anything else touches its accounts.
pub fn transfer_input(worker: u32, n: u32, accounts: u32) -> Transfer {
    let from = (n * 3) % accounts;
    let to = (from + 1 + n % (accounts - 1)) % accounts;
    Transfer { from: account(worker, from), to: account(worker, to), amount: i64::from(1 + (worker + n) % 7) }
}

/// The kill test every backend runs: 3 workers, 5 000 transfers each over 5
/// accounts of 20, at most 12 SIGKILLs in 30 s, on a fresh namespace, with
/// the kill schedule of `FLOWSTATE_CRASH_SEED` (default `0x5eed_c0de`).
/// `url` gets a temporary directory (for a database file); worker logs go there
/// too. Asserts that workers were killed mid-run and transfers finished (the
/// invariants themselves are checked by [`run`]).
pub fn run_standard(name: &str, worker_bin: &str, url: impl FnOnce(&Path) -> String) -> KillReport {
    let dir = tempfile::tempdir().expect("temp dir");
    let plan = KillPlan {
        worker_bin: worker_bin.into(),
        url: url(dir.path()),
        namespace: conformance_tests::random_namespace().to_string(),
        workers: 3,
        transfers: 5_000,
        accounts: 5,
        initial_balance: 20,
        max_kills: 12,
        max_duration: Duration::from_secs(30),
        seed: std::env::var("FLOWSTATE_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_c0de),
        log_dir: dir.path().to_owned(),
    };
    let report = run(&plan);
    eprintln!("{name} kill test (seed {}): {report:?}", plan.seed);
    assert!(report.kills > 0, "no worker was killed mid-run: {report:?}");
    assert!(report.finished > 0, "no transfer finished: {report:?}");
    report
}

/// What one kill test does.
#[derive(Clone, Debug)]
pub struct KillPlan {
    /// The `worker` binary.
    pub worker_bin: PathBuf,
    /// Store URL (`sqlite://…`, `postgres://…` or `spanner://…`).
    pub url: String,
    /// Namespace shared by the workers and the checker.
    pub namespace: String,
    /// Worker processes running at once.
    pub workers: u32,
    /// Transfers each worker runs (ids `w{worker}-0 … w{worker}-{transfers-1}`).
    pub transfers: u32,
    /// Accounts of each worker (at least 2) that its transfers move money between.
    pub accounts: u32,
    /// Seed balance of every account.
    pub initial_balance: i64,
    /// Most SIGKILLs during the run (restarting the victim each time).
    pub max_kills: u32,
    /// Time bound of the kill phase.
    pub max_duration: Duration,
    /// Seed of the kill schedule.
    pub seed: u64,
    /// Where worker logs go.
    pub log_dir: PathBuf,
}

/// What a kill test did and checked.
#[derive(Clone, Debug, Default)]
pub struct KillReport {
    /// SIGKILLs during the run, each followed by a restart.
    pub kills: u32,
    /// Workers still running at the end and killed without a restart.
    pub final_kills: u32,
    /// Worker processes started (first starts and restarts).
    pub starts: u32,
    /// Transfers acknowledged by some worker.
    pub acked: usize,
    /// Instances with an intent (started), all finished after recovery.
    pub finished: usize,
    /// Of those, transfers that moved money.
    pub moved: usize,
    /// Instances taken over from a killed execution (intent attempts > 1).
    pub taken_over: usize,
    /// Instances the collector completed after the final kill.
    pub recovered: usize,
    /// Individual invariant checks that passed.
    pub checks: usize,
}

struct Worker {
    id: u32,
    child: Option<Child>,
    done: bool,
    generation: u32,
}

/// Kills every still-running worker on drop (a failing test must not leak processes).
struct Workers(Vec<Worker>);

impl Drop for Workers {
    fn drop(&mut self) {
        for w in &mut self.0 {
            if let Some(mut child) = w.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

type Acks = Arc<Mutex<BTreeMap<String, bool>>>;

fn spawn_worker(plan: &KillPlan, worker: &mut Worker, acks: &Acks) -> Child {
    worker.generation += 1;
    let log = plan.log_dir.join(format!("worker-{}-{}.log", worker.id, worker.generation));
    let stderr = std::fs::File::create(&log).expect("worker log file");
    let mut child = Command::new(&plan.worker_bin)
        .args([
            plan.url.as_str(),
            plan.namespace.as_str(),
            &worker.id.to_string(),
            &plan.transfers.to_string(),
            &plan.accounts.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn worker");
    let stdout = child.stdout.take().expect("piped stdout");
    let acks = Arc::clone(acks);
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let mut parts = line.split_whitespace();
            if let (Some("acked"), Some(id), Some(ok)) = (parts.next(), parts.next(), parts.next()) {
                let ok = ok == "true";
                let previous = acks.lock().expect("acks").insert(id.to_owned(), ok);
                assert!(previous.is_none_or(|p| p == ok), "instance {id} was acknowledged with different outcomes");
            }
        }
    });
    child
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Run the plan: seed, run and kill workers, recover, check. Panics on any
/// violated invariant; returns what it did.
pub fn run(plan: &KillPlan) -> KillReport {
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio");
    let mut report = KillReport::default();
    let acks: Acks = Arc::default();

    // Seed the accounts through the engine (so they have the DAAL layout).
    tokio.block_on(async {
        let store = open_store(&plan.url, &plan.namespace).await.expect("open store");
        let rt = runtime(store);
        let names: Vec<String> =
            (0..plan.workers).flat_map(|w| (0..plan.accounts).map(move |i| account(w, i))).collect();
        let balances: Vec<(&str, i64)> = names.iter().map(|n| (n.as_str(), plan.initial_balance)).collect();
        workflows::seed_accounts(&rt, &balances).await.expect("seed accounts");
    });

    // Run the workers; SIGKILL one at random moments and restart it.
    let mut workers =
        Workers((0..plan.workers).map(|id| Worker { id, child: None, done: false, generation: 0 }).collect());
    for w in &mut workers.0 {
        w.child = Some(spawn_worker(plan, w, &acks));
        report.starts += 1;
    }
    let mut rng = StdRng::seed_from_u64(plan.seed);
    let deadline = Instant::now() + plan.max_duration;
    while report.kills < plan.max_kills && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(rng.random_range(150..900)));
        for w in &mut workers.0 {
            let Some(child) = w.child.as_mut() else { continue };
            if let Some(exit) = child.try_wait().expect("try_wait") {
                let log = plan.log_dir.join(format!("worker-{}-{}.log", w.id, w.generation));
                assert!(exit.success(), "worker {} failed on its own ({exit}):\n{}", w.id, log_tail(&log));
                w.child = None;
                w.done = true;
            }
        }
        let running: Vec<usize> = (0..workers.0.len()).filter(|&i| workers.0[i].child.is_some()).collect();
        if running.is_empty() {
            break;
        }
        let victim = &mut workers.0[running[rng.random_range(0..running.len())]];
        let mut child = victim.child.take().expect("running");
        child.kill().expect("SIGKILL worker");
        child.wait().expect("reap worker");
        report.kills += 1;
        victim.child = Some(spawn_worker(plan, victim, &acks));
        report.starts += 1;
    }
    // The final crash: whoever is still running dies without a restart, so
    // the collector has interrupted instances to finish.
    for w in &mut workers.0 {
        if let Some(mut child) = w.child.take() {
            if child.try_wait().expect("try_wait").is_none() {
                child.kill().expect("SIGKILL worker");
                report.final_kills += 1;
            }
            child.wait().expect("reap worker");
        }
    }
    drop(workers);
    // Let the killed executions' leases expire.
    std::thread::sleep(LEASE + Duration::from_millis(500));

    tokio.block_on(check(plan, &acks, &mut report));
    report
}

async fn check(plan: &KillPlan, acks: &Acks, report: &mut KillReport) {
    let store = open_store(&plan.url, &plan.namespace).await.expect("open store");
    let rt = runtime(store);

    // Recovery from a fresh runtime: passes until nothing is expired (bounded).
    for pass in 0.. {
        assert!(pass < 20, "the collector still finds expired instances after 20 passes");
        let r = rt.recover().await.expect("recover");
        report.recovered += r.completed;
        if r.expired == 0 {
            break;
        }
        assert_eq!(r.errors, 0, "collector pass {pass} failed to re-drive instances: {r:?}");
        tokio::time::sleep(LEASE).await;
    }
    let again = rt.recover().await.expect("recover");
    assert_eq!(again.expired, 0, "a second collector pass still found expired instances: {again:?}");
    report.checks += 1;

    let acks = acks.lock().expect("acks").clone();
    report.acked = acks.len();
    let mut expected: BTreeMap<String, i64> = (0..plan.workers)
        .flat_map(|w| (0..plan.accounts).map(move |i| (account(w, i), plan.initial_balance)))
        .collect();
    let mut seen = BTreeSet::new();
    for worker in 0..plan.workers {
        // A worker runs its ids in order and acknowledges each, so only the
        // one after its last acknowledged id can have started unacknowledged;
        // one more is checked to have no trace.
        let prefix = format!("w{worker}-");
        let last_acked = acks.keys().filter_map(|id| id.strip_prefix(&prefix)?.parse::<u32>().ok()).max();
        let until = last_acked.map_or(2, |n| n + 3).min(plan.transfers);
        for n in 0..until {
            let id = instance_id(worker, n);
            let iid = InstanceId::new(id.clone()).expect("instance id");
            let input = transfer_input(worker, n, plan.accounts);
            let intent = rt.inspect(&iid).await.expect("inspect").intent;
            let audits = workflows::audit_writes(&rt, &iid).await.expect("audit writes");
            let Some(intent) = intent else {
                assert!(!acks.contains_key(&id), "{id} was acknowledged but has no intent");
                assert_eq!(audits, 0, "{id} never registered but has an audit record");
                report.checks += 2;
                continue;
            };
            let state = intent.get_str(attr::STATUS);
            assert_eq!(state, Some(status::DONE), "{id} is not finished after recovery: {intent:?}");
            if intent.get_i64(attr::ATTEMPTS).unwrap_or(1) > 1 {
                report.taken_over += 1;
            }
            // A finished instance returns its recorded result without running.
            let result: TransferResult = rt.invoke("transfer", &input, Some(&id)).await.expect("recorded result");
            if let Some(acked) = acks.get(&id) {
                assert_eq!(*acked, result.ok, "{id}: acknowledged {acked}, recorded {}", result.ok);
                report.checks += 1;
            }
            let want_audits = usize::from(result.ok);
            assert_eq!(audits, want_audits, "{id} (ok = {}) has {audits} audit write-log entries", result.ok);
            report.checks += 2;
            if result.ok {
                *expected.get_mut(&input.from).expect("account") -= input.amount;
                *expected.get_mut(&input.to).expect("account") += input.amount;
                report.moved += 1;
            }
            report.finished += 1;
            seen.insert(id);
        }
    }
    for id in acks.keys() {
        assert!(seen.contains(id), "{id} was acknowledged but is not a finished instance");
    }
    let mut total = 0;
    for (account, want) in &expected {
        let got = workflows::balance(&rt, account).await.expect("balance");
        assert_eq!(got, *want, "{account}: balance {got}, but finished transfers say {want}");
        assert!(got >= 0, "{account} is negative: {got}");
        total += got;
        report.checks += 2;
    }
    assert_eq!(total, i64::from(plan.workers * plan.accounts) * plan.initial_balance, "money was created or destroyed");
    report.checks += 1;
}
