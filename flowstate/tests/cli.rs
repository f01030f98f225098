//! The `flowstate` binary, run as a user would: exit codes and output.
#![cfg(feature = "cli")]

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flowstate::{Config, Context};
use serde_json::{Value, json};

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

/// Run `flowstate ARGS` with the `FLOWSTATE_*` variables cleared (plus
/// `envs`), killing it after `timeout`.
fn flowstate_with(args: &[&str], envs: &[(&str, &str)], timeout: Duration) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flowstate"));
    cmd.args(args)
        .env_remove("FLOWSTATE_STORE")
        .env_remove("FLOWSTATE_CONFIG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let mut child = cmd.spawn().expect("start flowstate");
    let mut out_pipe = child.stdout.take().expect("stdout");
    let mut err_pipe = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for flowstate") {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("flowstate {args:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.code(),
        stdout: out_reader.join().expect("stdout reader"),
        stderr: err_reader.join().expect("stderr reader"),
        elapsed: started.elapsed(),
    }
}

fn flowstate(args: &[&str]) -> Run {
    flowstate_with(args, &[], Duration::from_secs(120))
}

fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

#[test]
fn demo_with_40_requests_verifies_zero_violations_and_its_instances_can_be_inspected() {
    let dir = tempfile::tempdir().unwrap();
    let dir_arg = dir.path().to_str().unwrap();
    let run = flowstate(&["demo", "--requests", "40", "--seed", "7", "--crash-rate", "20", "--dir", dir_arg]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(run.stdout.contains("violations: 0"), "{}", run.stdout);
    assert!(run.stdout.contains("40 / 40"), "{}", run.stdout);
    assert!(!run.stdout.contains("FAIL"), "{}", run.stdout);

    let url = sqlite_url(&dir.path().join("flowstate-demo.db"));
    let run = flowstate(&["inspect", "--store", &url, "reservation-0001"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    for expected in ["instance reservation-0001", "function     reserve", "status       done", "read", "users/user-"] {
        assert!(run.stdout.contains(expected), "missing {expected:?} in\n{}", run.stdout);
    }
    // The payment is a synchronously called child: find it from the invoke step.
    let callee = run
        .stdout
        .lines()
        .find(|l| l.contains(" invoke ") && l.contains(" pay "))
        .and_then(|l| l.split("callee ").nth(1))
        .and_then(|rest| rest.split(':').next())
        .unwrap_or_else(|| panic!("no pay invocation in\n{}", run.stdout))
        .to_string();
    let run = flowstate(&["inspect", "--store", &url, &callee]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(run.stdout.contains("called synchronously"), "{}", run.stdout);
    assert!(run.stdout.contains("charge"), "{}", run.stdout);
    assert!(run.stdout.contains("ledger/reservation-0001"), "{}", run.stdout);

    // Operations commands on the same database, through FLOWSTATE_STORE.
    let env = [("FLOWSTATE_STORE", url.as_str())];
    let run = flowstate_with(&["recover"], &env, Duration::from_secs(60));
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(run.stdout.contains("0 unfinished"), "{}", run.stdout);
    let run = flowstate_with(&["gc", "--window", "0s"], &env, Duration::from_secs(60));
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(run.stdout.contains("instances collected"), "{}", run.stdout);
    let run = flowstate_with(&["gc", "--full", "--window", "0s"], &env, Duration::from_secs(60));
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(run.stdout.contains("full: every intent scanned"), "{}", run.stdout);
    let run = flowstate_with(&["inspect", "reservation-0001"], &env, Duration::from_secs(60));
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(run.stdout.contains("compacted"), "{}", run.stdout);
}

#[test]
fn unknown_option_exits_2_with_clap_message() {
    let run = flowstate(&["demo", "--bogus"]);
    assert_eq!(run.code, Some(2), "{run:#?}");
    assert!(run.stderr.contains("unexpected argument '--bogus'"), "{}", run.stderr);
    assert!(run.stderr.contains("Usage:"), "{}", run.stderr);

    let run = flowstate(&["explode"]);
    assert_eq!(run.code, Some(2), "{run:#?}");
    assert!(run.stderr.contains("unrecognized subcommand 'explode'"), "{}", run.stderr);
}

#[test]
fn malformed_url_is_named_clearly() {
    let mut cases: Vec<(String, Vec<String>)> = [
        ("flowstate.db", &["malformed store URL", "no scheme"][..]),
        ("sqlite://x.db?synchronous=sometimes", &["malformed store URL", "unknown synchronous mode"]),
        ("mysql://app:hunter2@127.0.0.1/db", &["unknown store URL scheme \"mysql\"", "sqlite"]),
    ]
    .iter()
    .map(|(url, expected)| (url.to_string(), expected.iter().map(|e| e.to_string()).collect()))
    .collect();
    // A known backend this build leaves out (feature unification in a
    // workspace build may compile them all in; then there is none to test).
    let examples =
        [("spanner", "spanner://projects/p/instances/i/databases/d"), ("cosmos", "cosmos://127.0.0.1:1?key=k")];
    if let Some((name, url)) =
        examples.into_iter().find(|(name, _)| !flowstate::Backend::compiled().iter().any(|b| b.scheme() == *name))
    {
        cases.push((url.to_string(), vec![format!("backend {name} is not compiled in: enable feature `{name}`")]));
    }
    for (url, expected) in &cases {
        let run = flowstate(&["inspect", "--store", url, "some-instance"]);
        assert_eq!(run.code, Some(1), "{url}: {run:#?}");
        for e in expected {
            assert!(run.stderr.contains(e), "{url}: missing {e:?} in {}", run.stderr);
        }
        assert!(!run.stderr.contains("hunter2") && !run.stdout.contains("hunter2"), "{run:#?}");
    }
}

#[test]
fn secrets_in_a_url_are_never_printed() {
    let run = flowstate(&["recover", "--store", "postgres://app:hunter2@127.0.0.1:1/x?password=hunter2"]);
    assert_ne!(run.code, Some(0), "{run:#?}");
    assert!(!run.stderr.contains("hunter2") && !run.stdout.contains("hunter2"), "{run:#?}");
}

#[test]
fn unreachable_store_fails_with_a_clear_message_within_a_bounded_time() {
    // Nothing listens on port 1; a database file cannot be created in a
    // missing directory, or in one that does not accept files.
    for (url, expected) in [
        ("postgres://flowstate@127.0.0.1:1/app", "could not open store postgres://flowstate@127.0.0.1:1/app"),
        ("sqlite:///nonexistent-flowstate-dir/sub/app.db", "directory /nonexistent-flowstate-dir/sub does not exist"),
        (
            "sqlite:///proc/flowstate-cannot-be-here.db",
            "could not open store sqlite:///proc/flowstate-cannot-be-here.db",
        ),
    ] {
        let run = flowstate_with(&["recover", "--store", url], &[], Duration::from_secs(60));
        assert_eq!(run.code, Some(1), "{url}: {run:#?}");
        assert!(run.stderr.contains("could not open store"), "{url}: {}", run.stderr);
        assert!(run.stderr.contains(expected), "{url}: {}", run.stderr);
        // The default connect timeout is 10 s.
        assert!(run.elapsed < Duration::from_secs(25), "{url}: took {:?}", run.elapsed);
    }
    let url = "postgres://flowstate@127.0.0.1:1/app";
    let run = flowstate_with(&["gc", "--store", url, "--connect-timeout", "1s"], &[], Duration::from_secs(60));
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stderr.contains("could not open store postgres://flowstate@127.0.0.1:1/app"), "{}", run.stderr);
    assert!(run.elapsed < Duration::from_secs(10), "took {:?}", run.elapsed);
}

#[test]
fn inspect_of_an_unknown_instance_says_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir.path().join("empty.db"));
    let run = flowstate(&["inspect", "--store", &url, "no-such-instance"]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stderr.contains("instance \"no-such-instance\" not found"), "{}", run.stderr);
}

#[test]
fn a_store_is_required() {
    let run = flowstate(&["gc"]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stderr.contains("no store given: pass --store URL"), "{}", run.stderr);
}

#[test]
fn a_toml_config_file_names_the_store_and_engine_settings() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("flowstate.toml");
    let db = dir.path().join("app.db");
    std::fs::write(&config, format!("store = \"{}\"\n[engine]\nlease = \"1s\"\ngc_window = \"5m\"\n", sqlite_url(&db)))
        .unwrap();
    let run = flowstate(&["gc", "--config", config.to_str().unwrap()]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(run.stdout.contains("finished more than 5m 0s ago"), "{}", run.stdout);

    std::fs::write(&config, "store = \"sqlite://x.db\"\n[engine]\nleas = \"1s\"\n").unwrap();
    let run = flowstate(&["gc", "--config", config.to_str().unwrap()]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stderr.contains("leas"), "{}", run.stderr);
}

/// Leave an unfinished `reserve` instance behind, as a crashed process
/// would: it logged one read, then the process died (its runtime is shut
/// down, so its lease is no longer renewed).
fn abandon_instance(url: &str, id: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    rt.block_on(async {
        let runtime = flowstate::open(url)
            .await
            .unwrap()
            .config(Config::default().lease(Duration::from_millis(200)))
            .register("reserve", |ctx: Context, req: Value| async move {
                let user = req["user"].as_str().unwrap_or_default().to_string();
                let _profile: Option<Value> = ctx.read("users", &user).await?;
                std::future::pending::<()>().await;
                Ok(())
            })
            .build();
        let probe = runtime.clone();
        let input = json!({"user": "nobody", "trip": "package"});
        let id_owned = id.to_string();
        let task = tokio::spawn(async move { runtime.invoke::<_, ()>("reserve", &input, Some(&id_owned)).await });
        let id = flowstate::InstanceId::new(id).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while probe.inspect(&id).await.unwrap().steps.is_empty() {
            assert!(Instant::now() < deadline, "the read was never logged");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        task.abort();
    });
    rt.shutdown_background();
    std::thread::sleep(Duration::from_millis(400)); // past the 200 ms lease
}

/// The recover/inspect round trip of a crashed instance on the store at `url`.
fn recover_round_trip(url: &str) {
    abandon_instance(url, "stuck-1");

    let run = flowstate(&["recover", "--store", url]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stdout.contains("1 unfinished, 1 of them with an expired lease"), "{}", run.stdout);
    assert!(run.stdout.contains("functions this CLI does not have: reserve ×1"), "{}", run.stdout);
    assert!(run.stderr.contains("need functions this CLI does not register"), "{}", run.stderr);

    // The demo's `reserve` replays the logged read and finishes: unknown user.
    let run = flowstate(&["recover", "--store", url, "--demo-functions"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(run.stdout.contains("re-driven to completion 1"), "{}", run.stdout);
    let run = flowstate(&["inspect", "--store", url, "stuck-1"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(run.stdout.contains("status       done"), "{}", run.stdout);
    assert!(run.stdout.contains("attempts     2"), "{}", run.stdout);
    assert!(run.stdout.contains("rejected"), "{}", run.stdout);
    let run = flowstate(&["inspect", "--store", url, "stuck-2"]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stderr.contains("not found"), "{}", run.stderr);
}

#[test]
fn recover_names_functions_it_cannot_run_and_runs_the_demo_functions_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    recover_round_trip(&sqlite_url(&dir.path().join("crashed.db")));
}

/// The same on PostgreSQL, in a fresh namespace of the server named by
/// `FLOWSTATE_TEST_POSTGRES_URL` (`scripts/test.sh` starts one).
#[test]
fn recover_and_inspect_work_on_postgres() {
    let Some(base) = std::env::var("FLOWSTATE_TEST_POSTGRES_URL").ok().filter(|u| !u.is_empty()) else {
        assert_ne!(
            std::env::var("FLOWSTATE_TEST_REQUIRE").as_deref(),
            Ok("1"),
            "FLOWSTATE_TEST_REQUIRE=1 but FLOWSTATE_TEST_POSTGRES_URL is not set"
        );
        eprintln!("skipping: set FLOWSTATE_TEST_POSTGRES_URL");
        return;
    };
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let sep = if base.contains('?') { '&' } else { '?' };
    recover_round_trip(&format!("{base}{sep}namespace=cli{nanos}"));
}
