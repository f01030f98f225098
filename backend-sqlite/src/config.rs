//! [`SqliteConfig`]: where the database file is and how hard it syncs.

use std::path::PathBuf;
use std::time::Duration;

use flowstate_core::store::{StoreError, StoreResult};
use flowstate_core::url_params::{self, UrlParams};
use serde::{Deserialize, Serialize};

/// Default item limit: the same as the memory store (DynamoDB's 400 KB), so
/// code tested on one backend fits on the others.
pub const DEFAULT_MAX_ITEM_BYTES: usize = 400 * 1024;

/// Environment variable read by [`SqliteConfig::from_env`].
pub const ENV_PATH: &str = "FLOWSTATE_SQLITE_PATH";

/// Environment variable for the namespace, read by [`SqliteConfig::from_env`].
pub const ENV_NAMESPACE: &str = "FLOWSTATE_SQLITE_NAMESPACE";

/// SQLite's `PRAGMA synchronous`: how often commits wait for the disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Synchronous {
    /// Never fsync: fast, loses data on an OS crash or power loss.
    Off,
    /// In WAL mode: durable across process crashes, the last commits may be
    /// lost on power loss.
    Normal,
    /// fsync the WAL on every commit: durable across power loss (the default).
    #[default]
    Full,
    /// As `Full`, and also sync the directory.
    Extra,
}

impl Synchronous {
    fn parse(s: &str) -> StoreResult<Self> {
        match s.to_ascii_lowercase().as_str() {
            "off" => Ok(Self::Off),
            "normal" => Ok(Self::Normal),
            "full" => Ok(Self::Full),
            "extra" => Ok(Self::Extra),
            _ => Err(StoreError::invalid(format!("unknown synchronous mode {s:?}: use off, normal, full or extra"))),
        }
    }
}

/// How to open a [`SqliteStore`](crate::SqliteStore).
///
/// There is nothing secret in it, so `Debug` shows everything.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct SqliteConfig {
    /// Database file; created if missing (its directory must exist).
    pub path: PathBuf,
    /// Namespace of the opened store (a validated identifier); other
    /// namespaces of the same file are reached with `with_namespace`.
    pub namespace: String,
    /// `PRAGMA synchronous`.
    pub synchronous: Synchronous,
    /// How long a write waits for another process's write lock before
    /// failing with `Conflict`, in milliseconds.
    pub busy_timeout_ms: u64,
    /// Connections in the pool (SQLite runs one writer at a time; more
    /// connections let reads proceed beside it).
    pub pool_size: u32,
    /// Largest encoded item accepted.
    pub max_item_bytes: usize,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("flowstate.db"),
            namespace: "flowstate".to_owned(),
            synchronous: Synchronous::Full,
            busy_timeout_ms: 5_000,
            pool_size: 4,
            max_item_bytes: DEFAULT_MAX_ITEM_BYTES,
        }
    }
}

impl SqliteConfig {
    /// Defaults for the database at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), ..Self::default() }
    }

    /// Set [`SqliteConfig::namespace`].
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Set [`SqliteConfig::synchronous`].
    pub fn with_synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// Set [`SqliteConfig::busy_timeout_ms`].
    pub fn with_busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Set [`SqliteConfig::pool_size`] (at least 1).
    pub fn with_pool_size(mut self, pool_size: u32) -> Self {
        self.pool_size = pool_size.max(1);
        self
    }

    /// Set [`SqliteConfig::max_item_bytes`].
    pub fn with_max_item_bytes(mut self, max_item_bytes: usize) -> Self {
        self.max_item_bytes = max_item_bytes;
        self
    }

    /// The busy timeout as a duration.
    pub fn busy_timeout(&self) -> Duration {
        Duration::from_millis(self.busy_timeout_ms)
    }

    /// Parse `sqlite://PATH?key=value&...` (also `sqlite:PATH`); `sqlite:///abs/file.db`
    /// is an absolute path. Keys: `synchronous`, `busy_timeout_ms`, `pool_size`,
    /// `max_item_bytes`, `namespace`; unknown keys are rejected so typos do
    /// not silently weaken durability. `%XX` escapes in the path are decoded.
    pub fn from_url(url: &str) -> StoreResult<Self> {
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(|| StoreError::invalid(format!("not a sqlite URL: {url:?} (expected sqlite://PATH)")))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let path = url_params::percent_decode("sqlite", "path", path)?;
        if path.is_empty() || path == ":memory:" || path.starts_with("file:") {
            return Err(StoreError::invalid(format!(
                "sqlite URL {url:?} must name a database file: the store is durable and pooled"
            )));
        }
        let mut config = Self::new(path);
        let params = UrlParams::parse("sqlite", query)?;
        for (k, v) in params.iter() {
            match k {
                "synchronous" => config.synchronous = Synchronous::parse(v)?,
                "busy_timeout_ms" => config.busy_timeout_ms = params.number(k, v)?,
                "pool_size" => config = config.with_pool_size(params.number(k, v)?),
                "max_item_bytes" => config.max_item_bytes = params.number(k, v)?,
                "namespace" => config.namespace = v.to_owned(),
                _ => return Err(params.unknown(k)),
            }
        }
        Ok(config)
    }

    /// From `FLOWSTATE_SQLITE_PATH` (a path, or a `sqlite:` URL with
    /// parameters) and optionally `FLOWSTATE_SQLITE_NAMESPACE`.
    pub fn from_env() -> StoreResult<Self> {
        let path = std::env::var(ENV_PATH).map_err(|_| StoreError::invalid(format!("set {ENV_PATH}")))?;
        let mut config = if path.starts_with("sqlite:") { Self::from_url(&path)? } else { Self::new(path) };
        if let Ok(ns) = std::env::var(ENV_NAMESPACE) {
            config.namespace = ns;
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use flowstate_core::store::ErrorKind;

    use super::*;

    #[test]
    fn url_sets_path_and_parameters() {
        let c = SqliteConfig::from_url("sqlite:///tmp/a%20b.db?synchronous=normal&busy_timeout_ms=250&pool_size=2")
            .unwrap();
        assert_eq!(c.path, PathBuf::from("/tmp/a b.db"));
        assert_eq!(c.synchronous, Synchronous::Normal);
        assert_eq!(c.busy_timeout(), Duration::from_millis(250));
        assert_eq!(c.pool_size, 2);
        assert_eq!(c.max_item_bytes, DEFAULT_MAX_ITEM_BYTES);

        let c = SqliteConfig::from_url("sqlite:rel.db?namespace=app&max_item_bytes=10").unwrap();
        assert_eq!(c.path, PathBuf::from("rel.db"));
        assert_eq!(c.namespace, "app");
        assert_eq!(c.max_item_bytes, 10);
        assert_eq!(c.synchronous, Synchronous::Full, "durable by default");
    }

    #[test]
    fn bad_urls_are_rejected() {
        for bad in [
            "postgres://x",
            "sqlite://",
            "sqlite::memory:",
            "sqlite://a.db?synchronous=sometimes",
            "sqlite://a.db?sync=off",
            "sqlite://a.db?pool_size=many",
            "sqlite://a%zz.db",
        ] {
            let err = SqliteConfig::from_url(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad}");
        }
    }

    #[test]
    fn serde_fills_defaults() {
        let c: SqliteConfig = serde_json::from_str(r#"{"path": "x.db", "synchronous": "normal"}"#).unwrap();
        assert_eq!(c, SqliteConfig::new("x.db").with_synchronous(Synchronous::Normal));
    }
}
