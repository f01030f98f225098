//! [`Settings`]: a store URL plus engine settings, from a URL, the
//! environment or a TOML file; and opening the store they name.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use flowstate_core::store::StateStore;
use flowstate_core::{Config, Runtime, RuntimeBuilder};
use serde::Deserialize;

use crate::error::OpenError;
use crate::url::StoreUrl;

/// Environment variable holding the store URL (read by [`Settings::from_env`]).
pub const ENV_STORE: &str = "FLOWSTATE_STORE";
/// Environment variable naming a TOML settings file (read by [`Settings::from_env`]).
pub const ENV_CONFIG: &str = "FLOWSTATE_CONFIG";
/// How long opening a store may take before [`OpenError::Timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the state lives and how the engine runs.
///
/// A TOML file holds the same (every `[engine]` key is optional; unknown keys
/// are errors, so a typo cannot silently fall back to a default):
///
/// ```toml
/// store = "sqlite://flowstate.db?synchronous=full"
/// connect_timeout = "10s"
///
/// [engine]
/// lease = "30s"                 # claim on a running instance; the collector takes over after it
/// row_capacity = 1000           # write-log entries per data row before a new row is chained
/// clock_skew = "2s"
/// intent_shards = 16            # must be the same for every runtime on one store
/// duplicate_wait = "60s"
/// gc_window = "15m"
/// tombstone_retention = "7d"    # or "forever"
/// recovery_concurrency = 8
/// ```
///
/// `Debug` redacts the store URL's secrets.
#[derive(Clone)]
#[non_exhaustive]
pub struct Settings {
    /// The store.
    pub store: StoreUrl,
    /// Engine settings.
    pub engine: Config,
    /// Bound on how long opening the store may take.
    pub connect_timeout: Duration,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("store", &self.store)
            .field("engine", &self.engine)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl Settings {
    /// Default engine settings on the store at `url`.
    pub fn from_url(url: &str) -> Result<Self, OpenError> {
        Ok(Self { store: StoreUrl::parse(url)?, engine: Config::default(), connect_timeout: DEFAULT_CONNECT_TIMEOUT })
    }

    /// From the environment: the TOML file named by `FLOWSTATE_CONFIG` if set,
    /// with its store replaced by `FLOWSTATE_STORE` if that is set too; else
    /// default engine settings on `FLOWSTATE_STORE`.
    pub fn from_env() -> Result<Self, OpenError> {
        let store = std::env::var(ENV_STORE).ok().filter(|s| !s.trim().is_empty());
        match (std::env::var_os(ENV_CONFIG).filter(|p| !p.is_empty()), store) {
            (Some(path), store) => {
                let mut settings = Self::from_toml_file(Path::new(&path))?;
                if let Some(url) = store {
                    settings.store = StoreUrl::parse(&url)?;
                }
                Ok(settings)
            }
            (None, Some(url)) => Self::from_url(&url),
            (None, None) => Err(OpenError::MissingEnv { var: ENV_STORE }),
        }
    }

    /// From a TOML file (see the type's docs for the keys).
    pub fn from_toml_file(path: &Path) -> Result<Self, OpenError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| OpenError::Config { path: path.display().to_string(), reason: e.to_string() })?;
        Self::parse_toml(&text, &path.display().to_string())
    }

    /// From TOML text (see the type's docs for the keys).
    pub fn from_toml(text: &str) -> Result<Self, OpenError> {
        Self::parse_toml(text, "<string>")
    }

    fn parse_toml(text: &str, origin: &str) -> Result<Self, OpenError> {
        let config_err = |reason: String| OpenError::Config { path: origin.to_string(), reason };
        // toml's own Display quotes the offending line, which may hold a
        // password: report the message and the position only.
        let file: FileSettings = toml::from_str(text).map_err(|e| {
            let at = e.span().map(|s| line_col(text, s.start)).unwrap_or_default();
            config_err(format!("{at}{}", e.message().trim_end()))
        })?;
        let store = StoreUrl::parse(&file.store)?;
        let mut engine = Config::default();
        let e = file.engine;
        let dur = |key: &str, v: &str| parse_duration(v).map_err(|r| config_err(format!("engine.{key}: {r}")));
        if let Some(v) = &e.lease {
            engine.lease = dur("lease", v)?;
        }
        if let Some(n) = e.row_capacity {
            if n < 2 {
                return Err(config_err("engine.row_capacity must be at least 2".into()));
            }
            engine.row_capacity = Some(n);
        }
        if let Some(v) = &e.clock_skew {
            engine.clock_skew = dur("clock_skew", v)?;
        }
        if let Some(n) = e.intent_shards {
            if n == 0 {
                return Err(config_err("engine.intent_shards must be at least 1".into()));
            }
            engine.intent_shards = n;
        }
        if let Some(v) = &e.duplicate_wait {
            engine.duplicate_wait = dur("duplicate_wait", v)?;
        }
        if let Some(v) = &e.gc_window {
            engine.gc_window = dur("gc_window", v)?;
        }
        if let Some(v) = &e.tombstone_retention {
            engine.tombstone_retention = match v.as_str() {
                "forever" | "never" => None,
                v => Some(dur("tombstone_retention", v)?),
            };
        }
        if let Some(n) = e.recovery_concurrency {
            engine.recovery_concurrency = n.max(1);
        }
        let connect_timeout = match &file.connect_timeout {
            Some(v) => parse_duration(v).map_err(|r| config_err(format!("connect_timeout: {r}")))?,
            None => DEFAULT_CONNECT_TIMEOUT,
        };
        Ok(Self { store, engine, connect_timeout })
    }

    /// Open the store, within [`Settings::connect_timeout`].
    pub async fn open_store(&self) -> Result<Arc<dyn StateStore>, OpenError> {
        match tokio::time::timeout(self.connect_timeout, open_backend(&self.store)).await {
            Ok(result) => result,
            Err(_) => Err(OpenError::Timeout { url: self.store.redacted(), after: self.connect_timeout }),
        }
    }

    /// Open the store and start a runtime builder on it with these engine
    /// settings: register handlers, then `build()`.
    pub async fn open(&self) -> Result<RuntimeBuilder, OpenError> {
        Ok(Runtime::builder(self.open_store().await?).config(self.engine.clone()))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    store: String,
    connect_timeout: Option<String>,
    #[serde(default)]
    engine: EngineFile,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EngineFile {
    lease: Option<String>,
    row_capacity: Option<usize>,
    clock_skew: Option<String>,
    intent_shards: Option<u16>,
    duplicate_wait: Option<String>,
    gc_window: Option<String>,
    tombstone_retention: Option<String>,
    recovery_concurrency: Option<usize>,
}

fn line_col(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("line {line}, column {col}: ")
}

/// Parse a duration such as `250ms`, `30s`, `15m`, `2h` or `7d` (an integer
/// and a unit, no spaces).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a duration: expected a whole number and a unit, e.g. 250ms, 30s, 15m"))?;
    let ms_per = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "" => return Err(format!("{s:?} has no unit: write e.g. {n}ms or {n}s")),
        u => return Err(format!("{s:?} has an unknown unit {u:?}: use ms, s, m, h or d")),
    };
    n.checked_mul(ms_per).map(Duration::from_millis).ok_or_else(|| format!("{s:?} is too long"))
}

/// Open the backend a URL names (the URL is already known to be compiled in).
async fn open_backend(url: &StoreUrl) -> Result<Arc<dyn StateStore>, OpenError> {
    // A config the URL does not make, and a store that does not open; both
    // name the URL without its secrets (the backends' messages redact too).
    #[allow(unused_variables, reason = "unused in builds without a server backend")]
    let malformed = |e: flowstate_core::store::StoreError| OpenError::Malformed {
        url: url.redacted(),
        reason: e.message().to_string(),
    };
    #[allow(unused_variables, reason = "unused in builds without a server backend")]
    let open_err = |source| OpenError::Open { url: url.redacted(), source };
    match url.backend() {
        #[cfg(feature = "sqlite")]
        crate::url::Backend::Sqlite => {
            use backend_sqlite::{SqliteConfig, SqliteStore};
            use flowstate_core::store::{ErrorKind, StoreError};
            let config = SqliteConfig::from_url(url.expose()).map_err(malformed)?;
            if let Some(dir) = config.path.parent().filter(|d| !d.as_os_str().is_empty())
                && !dir.is_dir()
            {
                let what = format!(
                    "directory {} does not exist (the database file is created, its directory is not)",
                    dir.display()
                );
                return Err(open_err(StoreError::new(ErrorKind::Unavailable, what)));
            }
            Ok(Arc::new(SqliteStore::open(config).await.map_err(open_err)?))
        }
        #[cfg(feature = "postgres")]
        crate::url::Backend::Postgres => {
            let config = backend_postgres::PostgresConfig::from_url(url.expose()).map_err(malformed)?;
            Ok(Arc::new(backend_postgres::PostgresStore::open(config).await.map_err(open_err)?))
        }
        #[cfg(feature = "dynamodb")]
        crate::url::Backend::DynamoDb => {
            let config = backend_dynamodb::DynamoDbConfig::from_url(url.expose()).map_err(malformed)?;
            Ok(Arc::new(backend_dynamodb::DynamoDbStore::open(config).await.map_err(open_err)?))
        }
        #[cfg(feature = "cosmos")]
        crate::url::Backend::Cosmos => {
            let config = backend_cosmos::CosmosConfig::from_url(url.expose()).map_err(malformed)?;
            Ok(Arc::new(backend_cosmos::CosmosStore::open(config).await.map_err(open_err)?))
        }
        #[cfg(feature = "spanner")]
        crate::url::Backend::Spanner => {
            let config = backend_spanner::SpannerConfig::from_url(url.expose()).map_err(malformed)?;
            Ok(Arc::new(backend_spanner::SpannerStore::open(config).await.map_err(open_err)?))
        }
        #[cfg(feature = "memory")]
        crate::url::Backend::Memory => Ok(Arc::new(backend_memory::MemoryStore::new())),
        // Reached only in builds that leave a backend out.
        #[allow(unreachable_patterns)]
        other => Err(OpenError::NotCompiled { backend: other }),
    }
}

/// Open the store at `url` (`sqlite://PATH?...`, `memory://`, ...).
pub async fn open_store(url: &str) -> Result<Arc<dyn StateStore>, OpenError> {
    Settings::from_url(url)?.open_store().await
}

/// Open the store at `url` and start a runtime builder on it with default
/// engine settings: register handlers, then `build()`.
pub async fn open(url: &str) -> Result<RuntimeBuilder, OpenError> {
    Settings::from_url(url)?.open().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse_duration("30").unwrap_err().contains("no unit"));
        assert!(parse_duration("3 weeks").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("s").unwrap_err().contains("not a duration"));
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn toml_sets_store_and_engine() {
        let s = Settings::from_toml(
            "store = \"sqlite://x.db\"\nconnect_timeout = \"2s\"\n[engine]\nlease = \"200ms\"\nrow_capacity = 8\ntombstone_retention = \"forever\"\n",
        )
        .unwrap();
        assert_eq!(s.store.backend(), crate::url::Backend::Sqlite);
        assert_eq!(s.engine.lease, Duration::from_millis(200));
        assert_eq!(s.engine.row_capacity, Some(8));
        assert_eq!(s.engine.tombstone_retention, None);
        assert_eq!(s.connect_timeout, Duration::from_secs(2));
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn toml_errors_name_the_problem_without_quoting_secrets() {
        let err = Settings::from_toml("store = \"postgres://u:hunter2@h/db\nlease = 1").unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let err = Settings::from_toml("store = \"sqlite://x.db\"\n[engine]\nleas = \"1s\"").unwrap_err().to_string();
        assert!(err.contains("leas"), "{err}");
        let err = Settings::from_toml("store = \"sqlite://x.db\"\n[engine]\nlease = \"1\"").unwrap_err().to_string();
        assert!(err.contains("engine.lease") && err.contains("no unit"), "{err}");
    }
}
