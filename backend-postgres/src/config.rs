//! [`PostgresConfig`]: which server, which schema, how many connections.

use std::fmt;
use std::time::Duration;

use flowstate_core::store::{StoreError, StoreResult, validate_identifier};
use flowstate_core::url_params::UrlParams;
use serde::{Deserialize, Serialize};

/// Default item limit: the memory store's and DynamoDB's 400 KB, so code
/// tested on one backend fits on the others.
pub const DEFAULT_MAX_ITEM_BYTES: usize = 400 * 1024;

/// Environment variable read by [`PostgresConfig::from_env`]: a `postgres://` URL.
pub const ENV_URL: &str = "FLOWSTATE_POSTGRES_URL";

/// Environment variable for the namespace, read by [`PostgresConfig::from_env`].
pub const ENV_NAMESPACE: &str = "FLOWSTATE_POSTGRES_NAMESPACE";

/// URL parameters the sqlx driver understands; they stay in [`PostgresConfig::url`].
const DRIVER_PARAMS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// How to open a [`PostgresStore`](crate::PostgresStore).
///
/// `Debug` shows the URL with its password replaced by `***`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct PostgresConfig {
    /// Connection URL for the driver (`postgres://user:pass@host:port/db`,
    /// plus driver parameters such as `sslmode` or `application_name`).
    pub url: String,
    /// Schema holding Flowstate's table (a validated identifier; created if missing).
    pub schema: String,
    /// Namespace of the opened store (a validated identifier); other
    /// namespaces in the same table are reached with `with_namespace`.
    pub namespace: String,
    /// Most pooled connections.
    pub pool_max: u32,
    /// Server-side `statement_timeout` in milliseconds; 0 = none.
    pub statement_timeout_ms: u64,
    /// How long a call waits for a free pooled connection, in milliseconds.
    pub acquire_timeout_ms: u64,
    /// Largest encoded item accepted.
    pub max_item_bytes: usize,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            url: "postgres://localhost/postgres".to_owned(),
            schema: "flowstate".to_owned(),
            namespace: "flowstate".to_owned(),
            pool_max: 10,
            statement_timeout_ms: 30_000,
            acquire_timeout_ms: 10_000,
            max_item_bytes: DEFAULT_MAX_ITEM_BYTES,
        }
    }
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &redact(&self.url))
            .field("schema", &self.schema)
            .field("namespace", &self.namespace)
            .field("pool_max", &self.pool_max)
            .field("statement_timeout_ms", &self.statement_timeout_ms)
            .field("acquire_timeout_ms", &self.acquire_timeout_ms)
            .field("max_item_bytes", &self.max_item_bytes)
            .finish()
    }
}

impl PostgresConfig {
    /// Defaults for the server at `url` (a driver URL without Flowstate's parameters).
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into(), ..Self::default() }
    }

    /// Set [`PostgresConfig::schema`].
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Set [`PostgresConfig::namespace`].
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Set [`PostgresConfig::pool_max`] (at least 1).
    pub fn with_pool_max(mut self, pool_max: u32) -> Self {
        self.pool_max = pool_max.max(1);
        self
    }

    /// Set [`PostgresConfig::statement_timeout_ms`] (`None`: no timeout).
    pub fn with_statement_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.statement_timeout_ms = timeout.map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1));
        self
    }

    /// Set [`PostgresConfig::acquire_timeout_ms`].
    pub fn with_acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Set [`PostgresConfig::max_item_bytes`].
    pub fn with_max_item_bytes(mut self, max_item_bytes: usize) -> Self {
        self.max_item_bytes = max_item_bytes;
        self
    }

    /// The statement timeout, if any.
    pub fn statement_timeout(&self) -> Option<Duration> {
        (self.statement_timeout_ms > 0).then(|| Duration::from_millis(self.statement_timeout_ms))
    }

    /// The acquire timeout.
    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.acquire_timeout_ms)
    }

    /// Check the identifiers and numbers; called by `open`.
    pub fn validate(&self) -> StoreResult<()> {
        validate_identifier("postgres schema", &self.schema)?;
        validate_identifier("namespace", &self.namespace)?;
        if !(self.url.starts_with("postgres://") || self.url.starts_with("postgresql://")) {
            return Err(StoreError::invalid(format!(
                "not a postgres URL: {} (expected postgres://…)",
                redact(&self.url)
            )));
        }
        Ok(())
    }

    /// Parse `postgres://user:pass@host:port/db?key=value&…` (or
    /// `postgresql://`). Flowstate's keys: `schema`, `namespace`, `pool_max`,
    /// `statement_timeout_ms`, `acquire_timeout_ms`, `max_item_bytes`; the
    /// driver's keys (`sslmode`, `application_name`, `options`, …) stay in
    /// [`PostgresConfig::url`]; any other key is rejected so typos do not pass
    /// silently.
    pub fn from_url(url: &str) -> StoreResult<Self> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(StoreError::invalid(format!("not a postgres URL: {} (expected postgres://…)", redact(url))));
        }
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut config = Self::new(base);
        // The driver's parameters stay in the URL exactly as written (sqlx
        // decodes them itself); Flowstate's own are decoded and typed here.
        let (driver, own): (Vec<&str>, Vec<&str>) = query
            .split('&')
            .filter(|p| !p.is_empty())
            .partition(|pair| is_driver_param(pair.split_once('=').map_or(*pair, |(k, _)| k)));
        let params = UrlParams::parse("postgres", &own.join("&"))?;
        for (k, v) in params.iter() {
            match k {
                "schema" => config.schema = v.to_owned(),
                "namespace" => config.namespace = v.to_owned(),
                "pool_max" => config = config.with_pool_max(params.number(k, v)?),
                "statement_timeout_ms" => config.statement_timeout_ms = params.number(k, v)?,
                "acquire_timeout_ms" => config.acquire_timeout_ms = params.number(k, v)?,
                "max_item_bytes" => config.max_item_bytes = params.number(k, v)?,
                _ => return Err(params.unknown(k)),
            }
        }
        if !driver.is_empty() {
            config.url = format!("{base}?{}", driver.join("&"));
        }
        config.validate()?;
        Ok(config)
    }

    /// From `FLOWSTATE_POSTGRES_URL` (a URL as for [`PostgresConfig::from_url`])
    /// and optionally `FLOWSTATE_POSTGRES_NAMESPACE`.
    pub fn from_env() -> StoreResult<Self> {
        let url = std::env::var(ENV_URL).map_err(|_| StoreError::invalid(format!("set {ENV_URL}")))?;
        let mut config = Self::from_url(&url)?;
        if let Ok(ns) = std::env::var(ENV_NAMESPACE) {
            config.namespace = ns;
        }
        config.validate()?;
        Ok(config)
    }
}

/// `url` with the password (in the user info or a `password=` parameter)
/// replaced by `***`.
pub fn redact(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = match base.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            let authority = match authority.rsplit_once('@') {
                Some((userinfo, host)) => match userinfo.split_once(':') {
                    Some((user, _)) => format!("{user}:***@{host}"),
                    None => format!("{userinfo}@{host}"),
                },
                None => authority.to_owned(),
            };
            format!("{scheme}://{authority}{path}")
        }
        None => base.to_owned(),
    };
    if let Some(q) = query {
        let pairs: Vec<String> = q
            .split('&')
            .map(|p| match p.split_once('=') {
                Some(("password", _)) => "password=***".to_owned(),
                _ => p.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

/// Whether `key` (as written in the URL) is one of the driver's parameters.
fn is_driver_param(key: &str) -> bool {
    DRIVER_PARAMS.contains(&key) || (key.starts_with("options[") && key.ends_with(']'))
}

#[cfg(test)]
mod tests {
    use flowstate_core::store::ErrorKind;

    use super::*;

    #[test]
    fn url_splits_flowstate_and_driver_parameters() {
        let c = PostgresConfig::from_url(
            "postgres://app:s3cret@db.example:6543/prod?schema=fs&pool_max=3&sslmode=disable&statement_timeout_ms=250&namespace=orders&application_name=x",
        )
        .unwrap();
        assert_eq!(c.url, "postgres://app:s3cret@db.example:6543/prod?sslmode=disable&application_name=x");
        assert_eq!((c.schema.as_str(), c.namespace.as_str()), ("fs", "orders"));
        assert_eq!(c.pool_max, 3);
        assert_eq!(c.statement_timeout(), Some(Duration::from_millis(250)));
        assert_eq!(c.max_item_bytes, DEFAULT_MAX_ITEM_BYTES);
        let plain = PostgresConfig::from_url("postgresql://u@h/db").unwrap();
        assert_eq!(plain.url, "postgresql://u@h/db");
        assert_eq!(plain.schema, "flowstate");
    }

    #[test]
    fn driver_parameters_are_passed_through_undecoded() {
        let c = PostgresConfig::from_url("postgres://h/db?options=-c%20search_path%3Dx&pool_max=%32&password=50%off")
            .unwrap();
        assert_eq!(c.url, "postgres://h/db?options=-c%20search_path%3Dx&password=50%off");
        assert_eq!(c.pool_max, 2);
    }

    #[test]
    fn bad_urls_and_identifiers_are_invalid_input() {
        for bad in [
            "sqlite://x.db",
            "postgres://h/db?schema=Bad-Name",
            "postgres://h/db?schema=a%22b",
            "postgres://h/db?namespace=1x",
            "postgres://h/db?pool_max=many",
            "postgres://h/db?pool_size=3",
            "postgres://h/db?schema=%zz",
        ] {
            let err = PostgresConfig::from_url(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad}");
        }
        let err = PostgresConfig::from_url("postgres://h/db?schema=Bad").unwrap_err();
        assert!(err.message().contains("\"Bad\""), "the error names the identifier: {err}");
    }

    #[test]
    fn debug_redacts_the_password() {
        let c = PostgresConfig::from_url("postgres://app:s3cret@h:5432/db?password=other&sslmode=disable").unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret") && !shown.contains("other"), "{shown}");
        assert!(shown.contains("app:***@h:5432/db"), "{shown}");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }

    #[test]
    fn serde_fills_defaults() {
        let c: PostgresConfig = serde_json::from_str(r#"{"url": "postgres://h/db", "pool_max": 2}"#).unwrap();
        assert_eq!(c, PostgresConfig::new("postgres://h/db").with_pool_max(2));
    }
}
