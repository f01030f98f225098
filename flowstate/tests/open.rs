//! Choosing and opening a store through the facade: by URL, from the
//! environment and from a TOML file; and what goes wrong, said clearly.
#![cfg(feature = "sqlite")]

use std::time::Duration;

use flowstate::{Backend, Context, OpenError, Settings};

async fn counter(ctx: Context, key: String) -> flowstate::Result<i64> {
    let n: i64 = ctx.read("counters", &key).await?.unwrap_or(0);
    ctx.write("counters", &key, &(n + 1)).await?;
    Ok(n + 1)
}

#[tokio::test]
async fn a_sqlite_url_opens_a_durable_store_that_a_second_open_sees() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?synchronous=normal", dir.path().join("app.db").display());
    let rt = flowstate::open(&url).await.unwrap().register("counter", counter).build();
    assert_eq!(rt.invoke::<_, i64>("counter", "k", Some("c-1")).await.unwrap(), 1);
    assert_eq!(rt.invoke::<_, i64>("counter", "k", Some("c-1")).await.unwrap(), 1, "replayed, not repeated");
    drop(rt);

    let store = flowstate::open_store(&url).await.unwrap();
    let rt = flowstate::Runtime::builder(store).register("counter", counter).build();
    assert_eq!(rt.invoke::<_, i64>("counter", "k", Some("c-2")).await.unwrap(), 2);
    assert_eq!(rt.peek("counters", "k").await.unwrap(), Some(serde_json::json!(2)));
}

#[tokio::test]
async fn a_toml_file_sets_the_store_and_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flowstate.toml");
    let db = dir.path().join("app.db");
    std::fs::write(
        &path,
        format!(
            "store = \"sqlite://{}\"\nconnect_timeout = \"3s\"\n\n[engine]\nlease = \"200ms\"\nrow_capacity = 4\nintent_shards = 2\n",
            db.display()
        ),
    )
    .unwrap();
    let settings = Settings::from_toml_file(&path).unwrap();
    assert_eq!(settings.store.backend(), Backend::Sqlite);
    assert_eq!(settings.engine.lease, Duration::from_millis(200));
    assert_eq!(settings.engine.row_capacity, Some(4));
    assert_eq!(settings.engine.intent_shards, 2);
    assert_eq!(settings.connect_timeout, Duration::from_secs(3));
    let rt = settings.open().await.unwrap().register("counter", counter).build();
    assert_eq!(rt.config().lease, Duration::from_millis(200));
    for i in 0..6 {
        rt.invoke::<_, i64>("counter", "k", Some(&format!("c-{i}"))).await.unwrap();
    }
    // Capacity 4 forced a second row.
    assert!(rt.key_rows("counters", "k").await.unwrap().len() >= 2);

    let err = Settings::from_toml_file(&dir.path().join("missing.toml")).unwrap_err();
    assert!(matches!(err, OpenError::Config { .. }), "{err}");
}

#[test]
fn environment_names_the_store_or_says_what_to_set() {
    // Each case runs `env_probe` in a child process with its own environment.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("f.toml");
    std::fs::write(&config, "store = \"sqlite://from-file.db\"\n[engine]\nlease = \"5s\"\n").unwrap();
    let probe = |store: Option<&str>, cfg: Option<&std::path::Path>| {
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "env_probe", "--nocapture"]);
        cmd.env_remove("FLOWSTATE_STORE").env_remove("FLOWSTATE_CONFIG").env("FLOWSTATE_ENV_PROBE", "1");
        if let Some(s) = store {
            cmd.env("FLOWSTATE_STORE", s);
        }
        if let Some(c) = cfg {
            cmd.env("FLOWSTATE_CONFIG", c);
        }
        String::from_utf8_lossy(&cmd.output().unwrap().stdout).to_string()
    };
    let none = probe(None, None);
    assert!(none.contains("probe: err FLOWSTATE_STORE is not set"), "{none}");
    let url = probe(Some("sqlite://a.db"), None);
    assert!(url.contains("probe: ok sqlite://a.db lease 30s"), "{url}");
    let file = probe(None, Some(&config));
    assert!(file.contains("probe: ok sqlite://from-file.db lease 5s"), "{file}");
    let both = probe(Some("sqlite://b.db"), Some(&config));
    assert!(both.contains("probe: ok sqlite://b.db lease 5s"), "{both}");
}

/// Run in a child process by `environment_names_the_store_or_says_what_to_set`
/// (so the environment is the child's own); a no-op otherwise.
#[test]
#[allow(clippy::print_stdout)]
fn env_probe() {
    if std::env::var_os("FLOWSTATE_ENV_PROBE").is_none() {
        return;
    }
    match Settings::from_env() {
        Ok(s) => println!("probe: ok {} lease {}s", s.store, s.engine.lease.as_secs()),
        Err(e) => println!("probe: err {e}"),
    }
}

#[test]
fn backends_not_in_this_build_name_their_feature() {
    for (url, backend) in [
        ("memory://", "memory"),
        ("postgres://app:hunter2@127.0.0.1:5432/db", "postgres"),
        ("dynamodb://?endpoint=http://127.0.0.1:8000", "dynamodb"),
        ("cosmos://127.0.0.1:8081?key=c2VjcmV0", "cosmos"),
        ("spanner://projects/p/instances/i/databases/d", "spanner"),
    ] {
        let parsed = Settings::from_url(url);
        let compiled = Backend::compiled().iter().any(|b| b.scheme() == backend);
        if compiled {
            assert!(parsed.is_ok(), "{url}");
            continue;
        }
        let msg = parsed.unwrap_err().to_string();
        assert!(msg.contains(&format!("backend {backend} is not compiled in: enable feature `{backend}`")), "{msg}");
        assert!(!msg.contains("hunter2") && !msg.contains("c2VjcmV0"), "{msg}");
    }
}

#[tokio::test]
async fn malformed_sqlite_parameters_are_named() {
    let err = flowstate::open_store("sqlite://x.db?pool_size=many").await.unwrap_err();
    assert!(matches!(err, OpenError::Malformed { .. }), "{err}");
    assert!(err.to_string().contains("pool_size"), "{err}");
}

#[test]
fn the_readme_shows_the_crate_example() {
    // The example in the crate docs is compiled and run as a doctest; the
    // README must show the same code (the doctest's visible lines).
    let lib = include_str!("../src/lib.rs");
    let readme = include_str!("../../README.md");
    let example: Vec<&str> = lib
        .lines()
        .skip_while(|l| !l.starts_with("//! ```rust"))
        .skip(1)
        .take_while(|l| *l != "//! ```")
        .map(|l| l.strip_prefix("//!").unwrap_or(l))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .filter(|l| !l.trim_start().starts_with("# ") && l.trim() != "#")
        .collect();
    assert!(example.len() > 10, "example not found in lib.rs");
    let expected = example.join("\n");
    assert!(readme.contains(&expected), "README.md must contain the crate example:\n{expected}");
}

#[cfg(feature = "memory")]
#[tokio::test]
async fn memory_url_opens_a_fresh_in_process_store() {
    let rt = flowstate::open("memory://").await.unwrap().register("counter", counter).build();
    assert_eq!(rt.invoke::<_, i64>("counter", "k", Some("c-1")).await.unwrap(), 1);
    let err = flowstate::open_store("memory://somewhere").await.unwrap_err();
    assert!(err.to_string().contains("memory:// takes no path or parameters"), "{err}");
}
