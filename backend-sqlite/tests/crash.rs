//! Crash test: a child process (this binary, switched by an environment
//! variable) moves money between two accounts in a loop and prints each
//! acknowledged write; the parent SIGKILLs it mid-stream, reopens the file and
//! checks the business invariants:
//!
//! - every acknowledged write is present (durability),
//! - the two balances always sum to the initial total (atomic batches),
//! - the ledger count equals the number of receipts and of money moved,
//! - a counter updated outside the batch is at least its last acknowledged value.
//!
//! Three kill cycles, each child resuming where the file says it stopped.
//! Loops are bounded in count and time; the child also stops on its own.
#![allow(clippy::print_stdout)] // stdout is the child's acknowledgement channel

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use backend_sqlite::{SqliteConfig, SqliteStore};
use flowstate_core::store::{
    Condition, ErrorKind, Item, Key, Mutation, PutMode, StateStore, StateStoreExt, TableName, WriteOp,
};

const CHILD_ENV: &str = "FLOWSTATE_CRASH_CHILD_DB";
const TOTAL: i64 = 1_000_000;
/// Kill after this many acknowledged transfers in each cycle (varied so the
/// kill lands at different points).
const KILL_AFTER: [u64; 3] = [40, 117, 233];
const CHILD_MAX_ITERATIONS: u64 = 100_000;
const CHILD_MAX_TIME: Duration = Duration::from_secs(60);
const PARENT_WAIT: Duration = Duration::from_secs(60);

fn table(name: &str) -> TableName {
    TableName::new(name.to_owned()).unwrap()
}
fn account(name: &str) -> Key {
    Key::new(table("accounts"), name, "")
}
fn ledger() -> Key {
    Key::new(table("ledger"), "l", "count")
}
fn plain() -> Key {
    Key::new(table("ledger"), "l", "plain")
}
fn receipt(i: i64) -> Key {
    Key::new(table("receipts"), "r", i.to_be_bytes())
}

async fn open(path: &Path) -> SqliteStore {
    SqliteStore::open(SqliteConfig::new(path)).await.expect("open")
}

/// Retry a write while another process holds the lock.
async fn retry<T, F: AsyncFnMut() -> flowstate_core::store::StoreResult<T>>(mut f: F) -> T {
    loop {
        match f().await {
            Err(e) if e.kind().is_retryable() => tokio::time::sleep(Duration::from_millis(5)).await,
            other => return other.expect("write"),
        }
    }
}

async fn child(path: &Path) {
    let store = open(path).await;
    for (k, item) in [
        (account("a"), Item::new().with("balance", TOTAL)),
        (account("b"), Item::new().with("balance", 0)),
        (ledger(), Item::new().with("n", 0)),
        (plain(), Item::new().with("n", 0)),
    ] {
        match store.put(&k, item, PutMode::Create).await {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::ConditionFailed => {}
            Err(e) => panic!("setup: {e:?}"),
        }
    }
    let start = Instant::now();
    let mut next = store.get(&ledger()).await.unwrap().unwrap().get_i64("n").unwrap();
    let mut out = std::io::stdout().lock();
    for _ in 0..CHILD_MAX_ITERATIONS {
        if start.elapsed() > CHILD_MAX_TIME {
            break;
        }
        let i = next;
        let ops = vec![
            WriteOp::Update {
                key: account("a"),
                conditions: vec![Condition::Below { attr: "balance".into(), bound: TOTAL + 1 }],
                mutations: vec![Mutation::Add("balance".into(), -1)],
            },
            WriteOp::Update {
                key: account("b"),
                conditions: vec![Condition::ItemExists],
                mutations: vec![Mutation::Add("balance".into(), 1)],
            },
            WriteOp::Update {
                key: ledger(),
                conditions: vec![Condition::AttrEquals("n".into(), i.into())],
                mutations: vec![Mutation::Add("n".into(), 1)],
            },
            WriteOp::Put { key: receipt(i), item: Item::new().with("i", i), mode: PutMode::Create },
        ];
        retry(async || store.transact(ops.clone()).await).await;
        writeln!(out, "tx {i}").unwrap();
        out.flush().unwrap();
        next += 1;
        let v = retry(async || store.update(&plain(), &[], &[Mutation::Add("n".into(), 1)]).await).await;
        writeln!(out, "up {}", v.get_i64("n").unwrap()).unwrap();
        out.flush().unwrap();
    }
}

/// The highest acknowledged values of one child run.
#[derive(Debug, Default)]
struct Acks {
    tx: Option<i64>,
    up: Option<i64>,
    count: u64,
}

fn run_and_kill(path: &Path, kill_after: u64) -> Acks {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .env(CHILD_ENV, path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut acks = Acks::default();
    let record = |line: String, acks: &mut Acks| {
        let (what, n) = line.split_once(' ').unwrap_or_else(|| panic!("bad child line {line:?}"));
        let n: i64 = n.parse().unwrap();
        match what {
            "tx" => {
                assert!(acks.tx.is_none_or(|t| n == t + 1), "tx acks out of order");
                acks.tx = Some(n);
                acks.count += 1;
            }
            "up" => acks.up = Some(n),
            _ => panic!("bad child line {line:?}"),
        }
    };
    let deadline = Instant::now() + PARENT_WAIT;
    while acks.count < kill_after {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => record(line, &mut acks),
            Err(_) => {
                let _ = child.kill();
                panic!("child acknowledged only {} writes in {PARENT_WAIT:?}", acks.count);
            }
        }
    }
    child.kill().expect("SIGKILL the child");
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child was killed, not finished: {status:?}");
    // Lines already in the pipe were acknowledged before the kill.
    for line in rx {
        record(line, &mut acks);
    }
    reader.join().unwrap();
    acks
}

async fn check(path: &Path, acks: &Acks, last_plain: &mut i64) {
    let store = open(path).await;
    let a = store.get(&account("a")).await.unwrap().unwrap().get_i64("balance").unwrap();
    let b = store.get(&account("b")).await.unwrap().unwrap().get_i64("balance").unwrap();
    assert_eq!(a + b, TOTAL, "money was created or destroyed: a={a} b={b}");
    let n = store.get(&ledger()).await.unwrap().unwrap().get_i64("n").unwrap();
    let receipts = store.scan_all(&table("receipts"), b"r", 1_000_000).await.unwrap();
    assert_eq!(receipts.len() as i64, n, "ledger count and receipts disagree");
    assert_eq!(b, n, "money moved and ledger count disagree");
    for (i, (sk, item)) in receipts.iter().enumerate() {
        assert_eq!(sk, &(i as i64).to_be_bytes().to_vec(), "receipts are not 0..n");
        assert_eq!(item.get_i64("i"), Some(i as i64));
    }
    let acked_tx = acks.tx.expect("some transfer was acknowledged");
    assert!(n > acked_tx, "acknowledged transfer {acked_tx} lost: ledger at {n}");
    let p = store.get(&plain()).await.unwrap().unwrap().get_i64("n").unwrap();
    if let Some(up) = acks.up {
        assert!(p >= up, "acknowledged counter value {up} lost: counter at {p}");
    }
    assert!(p >= *last_plain && p <= n, "counter {p} outside [{last_plain}, {n}]");
    *last_plain = p;
    store.close().await;
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    if let Ok(path) = std::env::var(CHILD_ENV) {
        rt.block_on(child(Path::new(&path)));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db");
    let mut last_plain = 0;
    let mut total_acks = 0;
    for (cycle, kill_after) in KILL_AFTER.into_iter().enumerate() {
        let acks = run_and_kill(&path, kill_after);
        total_acks += acks.count;
        rt.block_on(check(&path, &acks, &mut last_plain));
        println!("crash cycle {cycle}: killed after {} acknowledged transfers; invariants hold", acks.count);
    }
    println!("sqlite crash test: {} kill cycles, {total_acks} acknowledged transfers, all present", KILL_AFTER.len());
}
