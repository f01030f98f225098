//! [`DynamoDbConfig`]: region, endpoint, table prefix, credentials.

use std::fmt;
use std::time::Duration;

use flowstate_core::store::{StoreError, StoreResult, validate_identifier};
use flowstate_core::url_params::{self, UrlParams};
use serde::{Deserialize, Serialize};

/// Default item limit, in bytes of the contract's JSON encoding
/// ([`Item::encoded_len`](flowstate_core::store::Item::encoded_len)).
///
/// DynamoDB limits an item to 400 KB of *its* size: names and values, a
/// list or map element costing 1 byte beyond its value and a 1-digit number
/// 2 bytes. The densest JSON for DynamoDB is a list of 1-digit numbers,
/// where `1,` (2 JSON bytes) costs 3 DynamoDB bytes: 1.5 times. So
/// 256 KiB of JSON is at most 384 KiB in DynamoDB, plus the keys (at most
/// about 3 KiB) and the hidden attributes (under 100 bytes): below 400 KB
/// for every item, whatever its shape (ADR 0004).
pub const DEFAULT_MAX_ITEM_BYTES: usize = 256 * 1024;

/// Default prefix of table names.
pub const DEFAULT_TABLE_PREFIX: &str = "flowstate_";

/// Environment variable read by [`DynamoDbConfig::from_env`]: a `dynamodb://` URL.
pub const ENV_URL: &str = "FLOWSTATE_DYNAMODB_URL";

/// Environment variable for the namespace, read by [`DynamoDbConfig::from_env`].
pub const ENV_NAMESPACE: &str = "FLOWSTATE_DYNAMODB_NAMESPACE";

/// Static AWS credentials. `Debug` shows the key id only.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StaticCredentials {
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: String,
    /// `AWS_SECRET_ACCESS_KEY` (never printed).
    pub secret_access_key: String,
    /// `AWS_SESSION_TOKEN`, for temporary credentials (never printed).
    #[serde(default)]
    pub session_token: Option<String>,
}

impl StaticCredentials {
    /// Credentials from a key id and secret.
    pub fn new(access_key_id: impl Into<String>, secret_access_key: impl Into<String>) -> Self {
        Self { access_key_id: access_key_id.into(), secret_access_key: secret_access_key.into(), session_token: None }
    }

    /// Add a session token.
    pub fn with_session_token(mut self, token: impl Into<String>) -> Self {
        self.session_token = Some(token.into());
        self
    }

    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and optionally
    /// `AWS_SESSION_TOKEN`, when the first two are set.
    pub fn from_env() -> Option<Self> {
        let id = std::env::var("AWS_ACCESS_KEY_ID").ok().filter(|s| !s.is_empty())?;
        let secret = std::env::var("AWS_SECRET_ACCESS_KEY").ok().filter(|s| !s.is_empty())?;
        let token = std::env::var("AWS_SESSION_TOKEN").ok().filter(|s| !s.is_empty());
        Some(Self { access_key_id: id, secret_access_key: secret, session_token: token })
    }
}

impl fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"***")
            .field("session_token", &self.session_token.as_ref().map(|_| "***"))
            .finish()
    }
}

/// How to open a [`DynamoDbStore`](crate::DynamoDbStore).
///
/// `Debug` hides the secret key and session token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct DynamoDbConfig {
    /// AWS region (`us-east-1`, ...). Any value works with a local server.
    pub region: String,
    /// Endpoint override: `http://127.0.0.1:PORT` for moto or LocalStack;
    /// `None` for AWS itself.
    pub endpoint: Option<String>,
    /// Prefix of the DynamoDB table name; the table of a namespace is
    /// `{table_prefix}{namespace}`.
    pub table_prefix: String,
    /// Namespace of the opened store (a validated identifier): one DynamoDB table.
    pub namespace: String,
    /// Static credentials. `None`: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`
    /// from the environment, or placeholder credentials when `endpoint` is set
    /// (local servers accept any). For the full AWS credential chain (profiles,
    /// SSO, instance roles) build a client with `aws-config` and use
    /// [`DynamoDbStore::from_client`](crate::DynamoDbStore::from_client).
    pub credentials: Option<StaticCredentials>,
    /// Create the table (on-demand billing) when it does not exist.
    pub create_table: bool,
    /// How long `open` waits for a new table to become `ACTIVE`, in milliseconds.
    pub table_wait_ms: u64,
    /// Timeout of one request (connect + send + response), in milliseconds.
    /// A write that times out is `Indeterminate`.
    pub request_timeout_ms: u64,
    /// Timeout of establishing a connection, in milliseconds.
    pub connect_timeout_ms: u64,
    /// How often a throttled request is retried (with exponential backoff
    /// from 25 ms, at most 1 s per pause) before `Throttled` is returned.
    pub throttle_retries: u32,
    /// Largest encoded item accepted (see [`DEFAULT_MAX_ITEM_BYTES`]).
    pub max_item_bytes: usize,
}

impl Default for DynamoDbConfig {
    fn default() -> Self {
        Self {
            region: "us-east-1".to_owned(),
            endpoint: None,
            table_prefix: DEFAULT_TABLE_PREFIX.to_owned(),
            namespace: "flowstate".to_owned(),
            credentials: None,
            create_table: true,
            table_wait_ms: 120_000,
            request_timeout_ms: 10_000,
            connect_timeout_ms: 3_000,
            throttle_retries: 6,
            max_item_bytes: DEFAULT_MAX_ITEM_BYTES,
        }
    }
}

impl DynamoDbConfig {
    /// Defaults for `region`.
    pub fn new(region: impl Into<String>) -> Self {
        Self { region: region.into(), ..Self::default() }
    }

    /// Set [`DynamoDbConfig::endpoint`].
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Set [`DynamoDbConfig::table_prefix`].
    pub fn with_table_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.table_prefix = prefix.into();
        self
    }

    /// Set [`DynamoDbConfig::namespace`].
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Set [`DynamoDbConfig::credentials`].
    pub fn with_credentials(mut self, credentials: StaticCredentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Set [`DynamoDbConfig::create_table`].
    pub fn with_create_table(mut self, yes: bool) -> Self {
        self.create_table = yes;
        self
    }

    /// Set [`DynamoDbConfig::request_timeout_ms`].
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX).max(1);
        self
    }

    /// Set [`DynamoDbConfig::throttle_retries`].
    pub fn with_throttle_retries(mut self, retries: u32) -> Self {
        self.throttle_retries = retries;
        self
    }

    /// Set [`DynamoDbConfig::max_item_bytes`].
    pub fn with_max_item_bytes(mut self, max_item_bytes: usize) -> Self {
        self.max_item_bytes = max_item_bytes;
        self
    }

    /// The DynamoDB table holding this namespace.
    pub fn table_name(&self) -> String {
        format!("{}{}", self.table_prefix, self.namespace)
    }

    /// Check names and numbers; called by `open`.
    pub fn validate(&self) -> StoreResult<()> {
        validate_identifier("namespace", &self.namespace)?;
        let table = self.table_name();
        let ok_chars = table.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !ok_chars || !(3..=255).contains(&table.len()) {
            return Err(StoreError::invalid(format!(
                "DynamoDB table name {table:?} (prefix + namespace) must be 3 to 255 characters of a-z, A-Z, 0-9, '_', '-', '.'"
            )));
        }
        if self.region.is_empty() {
            return Err(StoreError::invalid("DynamoDB region is empty"));
        }
        if let Some(ep) = &self.endpoint
            && !(ep.starts_with("http://") || ep.starts_with("https://"))
        {
            return Err(StoreError::invalid(format!("DynamoDB endpoint {ep:?} must start with http:// or https://")));
        }
        if self.max_item_bytes < 64 {
            return Err(StoreError::invalid("max_item_bytes must be at least 64"));
        }
        Ok(())
    }

    /// Parse `dynamodb://[REGION]?key=value&...`. Keys: `region`, `endpoint`,
    /// `prefix` (also `table_prefix`), `namespace`, `access_key_id`,
    /// `secret_access_key`, `session_token`, `create_table`,
    /// `request_timeout_ms`, `connect_timeout_ms`, `throttle_retries`,
    /// `max_item_bytes`. Values are `%`-decoded; unknown keys are rejected.
    ///
    /// `dynamodb://?endpoint=http://127.0.0.1:8000&region=us-east-1&prefix=fs_`
    pub fn from_url(url: &str) -> StoreResult<Self> {
        let rest = url
            .strip_prefix("dynamodb://")
            .ok_or_else(|| StoreError::invalid(format!("not a DynamoDB URL: {url:?} (expected dynamodb://...)")))?;
        let (host, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut config = Self::default();
        let host = host.trim_end_matches('/');
        if !host.is_empty() {
            config.region = url_params::percent_decode("DynamoDB", "region", host)?;
        }
        let (mut key_id, mut secret, mut token) = (None, None, None);
        let params = UrlParams::parse("DynamoDB", query)?;
        for (k, v) in params.iter() {
            match k {
                "region" => config.region = v.to_owned(),
                "endpoint" => config.endpoint = Some(v.to_owned()).filter(|e| !e.is_empty()),
                "prefix" | "table_prefix" => config.table_prefix = v.to_owned(),
                "namespace" => config.namespace = v.to_owned(),
                "access_key_id" => key_id = Some(v.to_owned()),
                "secret_access_key" => secret = Some(v.to_owned()),
                "session_token" => token = Some(v.to_owned()),
                "create_table" => config.create_table = params.boolean(k, v)?,
                "request_timeout_ms" => config.request_timeout_ms = params.number(k, v)?,
                "connect_timeout_ms" => config.connect_timeout_ms = params.number(k, v)?,
                "throttle_retries" => config.throttle_retries = params.number(k, v)?,
                "max_item_bytes" => config.max_item_bytes = params.number(k, v)?,
                _ => return Err(params.unknown(k)),
            }
        }
        match (key_id, secret) {
            (Some(id), Some(secret)) => {
                config.credentials =
                    Some(StaticCredentials { access_key_id: id, secret_access_key: secret, session_token: token })
            }
            (None, None) if token.is_none() => {}
            _ => {
                return Err(StoreError::invalid(
                    "DynamoDB URL: access_key_id and secret_access_key go together (session_token needs both)",
                ));
            }
        }
        Ok(config)
    }

    /// From the environment: `FLOWSTATE_DYNAMODB_URL` (a `dynamodb://` URL)
    /// if set, then the standard `AWS_REGION` (or `AWS_DEFAULT_REGION`),
    /// `AWS_ENDPOINT_URL_DYNAMODB` (or `AWS_ENDPOINT_URL`) where the URL did
    /// not set them, and `FLOWSTATE_DYNAMODB_NAMESPACE`. Credentials: the
    /// URL's, else `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`
    /// when `open` runs.
    pub fn from_env() -> StoreResult<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let url = var(ENV_URL);
        let mut config = match &url {
            Some(url) => Self::from_url(url)?,
            None => Self::default(),
        };
        let url_has = |key: &str| url.as_deref().is_some_and(|u| u.contains(&format!("{key}=")));
        let url_has_region =
            url_has("region") || url.as_deref().is_some_and(|u| !u["dynamodb://".len()..].starts_with('?'));
        if !url_has_region && let Some(region) = var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION")) {
            config.region = region;
        }
        if !url_has("endpoint")
            && let Some(ep) = var("AWS_ENDPOINT_URL_DYNAMODB").or_else(|| var("AWS_ENDPOINT_URL"))
        {
            config.endpoint = Some(ep);
        }
        if let Some(ns) = var(ENV_NAMESPACE) {
            config.namespace = ns;
        }
        Ok(config)
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms.max(1))
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms.max(1))
    }

    pub(crate) fn table_wait(&self) -> Duration {
        Duration::from_millis(self.table_wait_ms)
    }
}

#[cfg(test)]
mod tests {
    use flowstate_core::store::ErrorKind;

    use super::*;

    #[test]
    fn url_sets_endpoint_region_prefix() {
        let c =
            DynamoDbConfig::from_url("dynamodb://?endpoint=http://127.0.0.1:8000&region=eu-west-1&prefix=fs_").unwrap();
        assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:8000"));
        assert_eq!(c.region, "eu-west-1");
        assert_eq!(c.table_name(), "fs_flowstate");
        assert_eq!(c.credentials, None);
        c.validate().unwrap();

        let c = DynamoDbConfig::from_url(
            "dynamodb://us-west-2?namespace=app&access_key_id=AK&secret_access_key=s%2Fecret&max_item_bytes=1000",
        )
        .unwrap();
        assert_eq!(c.region, "us-west-2");
        assert_eq!(c.table_name(), "flowstate_app");
        assert_eq!(c.credentials, Some(StaticCredentials::new("AK", "s/ecret")));
        assert_eq!(c.max_item_bytes, 1000);
    }

    #[test]
    fn debug_hides_secrets() {
        let c = DynamoDbConfig::default()
            .with_credentials(StaticCredentials::new("AKIDEXAMPLE", "hunter2").with_session_token("tok3n"));
        let shown = format!("{c:?}");
        assert!(shown.contains("AKIDEXAMPLE"), "{shown}");
        assert!(!shown.contains("hunter2") && !shown.contains("tok3n"), "{shown}");
    }

    #[test]
    fn bad_urls_and_names_are_rejected() {
        for bad in [
            "postgres://x",
            "dynamodb://?endpoint=http://x&prefx=a",
            "dynamodb://?create_table=maybe",
            "dynamodb://?access_key_id=only",
            "dynamodb://?max_item_bytes=big",
            "dynamodb://?region=%zz",
        ] {
            let err = DynamoDbConfig::from_url(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad}");
        }
        for bad in [
            DynamoDbConfig::default().with_namespace("Bad-NS"),
            DynamoDbConfig::default().with_table_prefix("a b"),
            DynamoDbConfig::default().with_endpoint("127.0.0.1:8000"),
        ] {
            assert_eq!(bad.validate().unwrap_err().kind(), ErrorKind::InvalidInput, "{bad:?}");
        }
    }

    #[test]
    fn serde_fills_defaults() {
        let c: DynamoDbConfig =
            serde_json::from_str(r#"{"endpoint": "http://127.0.0.1:1", "namespace": "x"}"#).unwrap();
        assert_eq!(c, DynamoDbConfig::default().with_endpoint("http://127.0.0.1:1").with_namespace("x"));
    }
}
