//! [`CosmosConfig`]: which account, which key, which database and containers.

use std::fmt;
use std::net::IpAddr;

use flowstate_core::store::{StoreError, StoreResult, validate_identifier};
use flowstate_core::url_params::{self, UrlParams};
use serde::{Deserialize, Serialize};

/// Default item limit. Cosmos DB accepts documents up to 2 MB (2 097 152
/// bytes of JSON); a stored document wraps the item with its `id` (≤ 1 023
/// bytes), partition key (≤ 2 048 bytes) and the service's system properties,
/// so the item itself is held to 2 000 000 bytes of compact JSON.
pub const DEFAULT_MAX_ITEM_BYTES: usize = 2_000_000;

/// Environment variable read by [`CosmosConfig::from_env`]: the account
/// endpoint (`https://account.documents.azure.com:443/`) or a `cosmos://` URL.
pub const ENV_ENDPOINT: &str = "FLOWSTATE_COSMOS_ENDPOINT";

/// Environment variable holding the account key, read by [`CosmosConfig::from_env`].
pub const ENV_KEY: &str = "FLOWSTATE_COSMOS_KEY";

/// Environment variable for the namespace, read by [`CosmosConfig::from_env`].
pub const ENV_NAMESPACE: &str = "FLOWSTATE_COSMOS_NAMESPACE";

/// Longest container-name prefix accepted.
const MAX_PREFIX_LEN: usize = 40;

/// How to open a [`CosmosStore`](crate::CosmosStore).
///
/// `Debug` never shows the key (it prints `***` when one is set); nothing in
/// this crate logs it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct CosmosConfig {
    /// Account endpoint, `https://host:port/`.
    pub endpoint: String,
    /// Account key (primary or secondary, base64), for shared-key auth.
    pub key: String,
    /// Database holding Flowstate's containers (created on first use).
    pub database: String,
    /// Prefix of every container name: a namespace `ns` lives in container
    /// `{container_prefix}{ns}` (created on first use).
    pub container_prefix: String,
    /// Namespace of the opened store (a validated identifier); other
    /// namespaces are reached with `with_namespace`.
    pub namespace: String,
    /// Accept a TLS certificate that does not validate (the local emulators'
    /// self-signed ones). Allowed only when the endpoint's host is a loopback
    /// address (`localhost`, `127.0.0.1`, `[::1]`): `validate` rejects it elsewhere.
    pub accept_invalid_certs: bool,
    /// Whether the transport may use HTTP/2 (the gateway speaks both; some
    /// local servers only HTTP/1.1).
    pub http2: bool,
    /// Preferred region for routing (`"East US"`, `"westeurope"`, ...); empty:
    /// the account's own region order.
    pub region: String,
    /// Largest encoded item accepted.
    pub max_item_bytes: usize,
}

impl Default for CosmosConfig {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            key: String::new(),
            database: "flowstate".to_owned(),
            container_prefix: "fs_".to_owned(),
            namespace: "flowstate".to_owned(),
            accept_invalid_certs: false,
            http2: true,
            region: String::new(),
            max_item_bytes: DEFAULT_MAX_ITEM_BYTES,
        }
    }
}

impl fmt::Debug for CosmosConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CosmosConfig")
            .field("endpoint", &self.endpoint)
            .field("key", &if self.key.is_empty() { "" } else { "***" })
            .field("database", &self.database)
            .field("container_prefix", &self.container_prefix)
            .field("namespace", &self.namespace)
            .field("accept_invalid_certs", &self.accept_invalid_certs)
            .field("http2", &self.http2)
            .field("region", &self.region)
            .field("max_item_bytes", &self.max_item_bytes)
            .finish()
    }
}

impl CosmosConfig {
    /// Defaults for the account at `endpoint` with shared key `key`.
    pub fn new(endpoint: impl Into<String>, key: impl Into<String>) -> Self {
        Self { endpoint: endpoint.into(), key: key.into(), ..Self::default() }
    }

    /// Set [`CosmosConfig::database`].
    pub fn with_database(mut self, database: impl Into<String>) -> Self {
        self.database = database.into();
        self
    }

    /// Set [`CosmosConfig::container_prefix`].
    pub fn with_container_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.container_prefix = prefix.into();
        self
    }

    /// Set [`CosmosConfig::namespace`].
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Set [`CosmosConfig::accept_invalid_certs`] (loopback hosts only).
    pub fn with_accept_invalid_certs(mut self, yes: bool) -> Self {
        self.accept_invalid_certs = yes;
        self
    }

    /// Set [`CosmosConfig::http2`].
    pub fn with_http2(mut self, yes: bool) -> Self {
        self.http2 = yes;
        self
    }

    /// Set [`CosmosConfig::region`].
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = region.into();
        self
    }

    /// Set [`CosmosConfig::max_item_bytes`].
    pub fn with_max_item_bytes(mut self, max_item_bytes: usize) -> Self {
        self.max_item_bytes = max_item_bytes;
        self
    }

    /// The container holding namespace `ns`.
    pub fn container_name(&self, ns: &str) -> String {
        format!("{}{ns}", self.container_prefix)
    }

    /// Check names, endpoint and the certificate rule; called by `open`.
    pub fn validate(&self) -> StoreResult<()> {
        validate_identifier("namespace", &self.namespace)?;
        validate_name("cosmos database", &self.database, 1)?;
        validate_name("cosmos container prefix", &self.container_prefix, 0)?;
        if self.key.is_empty() {
            return Err(StoreError::invalid(format!("no cosmos account key (set `key`, or {ENV_KEY})")));
        }
        let host = endpoint_host(&self.endpoint)?;
        if self.accept_invalid_certs && !is_loopback(&host) {
            return Err(StoreError::invalid(format!(
                "accept_invalid_certs is allowed only for loopback hosts, not {host:?}"
            )));
        }
        if self.max_item_bytes == 0 || self.max_item_bytes > DEFAULT_MAX_ITEM_BYTES {
            return Err(StoreError::invalid(format!(
                "max_item_bytes must be between 1 and {DEFAULT_MAX_ITEM_BYTES} (Cosmos DB's 2 MB document limit)"
            )));
        }
        Ok(())
    }

    /// Parse `cosmos://host:port?key=…&database=…` (`cosmoss://` is accepted
    /// as a synonym). The endpoint becomes `https://host:port/`. Keys:
    /// `key` (percent-encoded: base64 keys contain `+`, `/` and `=`),
    /// `database`, `container_prefix`, `namespace`, `accept_invalid_certs`,
    /// `http2`, `region`, `max_item_bytes`; any other key is rejected so typos
    /// do not pass silently.
    pub fn from_url(url: &str) -> StoreResult<Self> {
        let config = Self::parse_url(url)?;
        config.validate()?;
        Ok(config)
    }

    /// [`CosmosConfig::from_url`] without the final validation.
    fn parse_url(url: &str) -> StoreResult<Self> {
        let rest = url
            .strip_prefix("cosmos://")
            .or_else(|| url.strip_prefix("cosmoss://"))
            .ok_or_else(|| StoreError::invalid(format!("not a cosmos URL: {} (expected cosmos://…)", redact(url))))?;
        let (authority, query) = match rest.split_once('?') {
            Some((a, q)) => (a, q),
            None => (rest, ""),
        };
        let authority = authority.trim_end_matches('/');
        if authority.is_empty() || authority.contains(['/', '@']) {
            return Err(StoreError::invalid(format!("cosmos URL {} needs host[:port] and nothing else", redact(url))));
        }
        let mut config = Self { endpoint: format!("https://{authority}/"), ..Self::default() };
        let params = UrlParams::parse("cosmos", query)?;
        for (k, v) in params.iter() {
            match k {
                "key" => config.key = v.to_owned(),
                "database" => config.database = v.to_owned(),
                "container_prefix" => config.container_prefix = v.to_owned(),
                "namespace" => config.namespace = v.to_owned(),
                "accept_invalid_certs" => config.accept_invalid_certs = params.boolean(k, v)?,
                "http2" => config.http2 = params.boolean(k, v)?,
                "region" => config.region = v.to_owned(),
                "max_item_bytes" => config.max_item_bytes = params.number(k, v)?,
                _ => return Err(params.unknown(k)),
            }
        }
        Ok(config)
    }

    /// From `FLOWSTATE_COSMOS_ENDPOINT` (an `https://` endpoint, or a
    /// `cosmos://` URL as for [`CosmosConfig::from_url`]), `FLOWSTATE_COSMOS_KEY`
    /// (overrides a key in the URL) and optionally `FLOWSTATE_COSMOS_NAMESPACE`.
    pub fn from_env() -> StoreResult<Self> {
        let endpoint = std::env::var(ENV_ENDPOINT).map_err(|_| StoreError::invalid(format!("set {ENV_ENDPOINT}")))?;
        let mut config = if endpoint.starts_with("cosmos://") || endpoint.starts_with("cosmoss://") {
            Self::parse_url(&endpoint)?
        } else {
            Self::new(endpoint, String::new())
        };
        if let Ok(key) = std::env::var(ENV_KEY) {
            config.key = key;
        }
        if let Ok(ns) = std::env::var(ENV_NAMESPACE) {
            config.namespace = ns;
        }
        config.validate()?;
        Ok(config)
    }
}

/// `url` with the value of a `key=` parameter replaced by `***`.
pub fn redact(url: &str) -> String {
    match url.split_once('?') {
        Some((base, query)) => format!("{base}?{}", redact_query(query)),
        None => url.to_owned(),
    }
}

/// `query` (without `?`) with the value of a `key=` parameter (also spelled
/// `%6Bey=`) replaced by `***`.
fn redact_query(query: &str) -> String {
    let is_key = |name: &str| url_params::percent_decode("cosmos", "parameter name", name).is_ok_and(|n| n == "key");
    let pairs: Vec<&str> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((name, _)) if is_key(name) => "key=***",
            _ => p,
        })
        .collect();
    pairs.join("&")
}

/// The host of an `https://host[:port]/…` (or `http://`) endpoint.
fn endpoint_host(endpoint: &str) -> StoreResult<String> {
    let rest = endpoint
        .strip_prefix("https://")
        .or_else(|| endpoint.strip_prefix("http://"))
        .ok_or_else(|| StoreError::invalid(format!("cosmos endpoint {endpoint:?} is not an https:// URL")))?;
    let authority = rest.split('/').next().unwrap_or("");
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("").to_owned()
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h).to_owned()
    };
    if host.is_empty() {
        return Err(StoreError::invalid(format!("cosmos endpoint {endpoint:?} has no host")));
    }
    Ok(host)
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Cosmos resource ids: no `/ \ ? #`, no control characters, no trailing space.
fn validate_name(what: &str, name: &str, min_len: usize) -> StoreResult<()> {
    let ok = name.len() >= min_len
        && name.len() <= MAX_PREFIX_LEN
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(StoreError::invalid(format!(
            "invalid {what} {name:?}: {min_len} to {MAX_PREFIX_LEN} characters of [A-Za-z0-9_-]"
        )))
    }
}

#[cfg(test)]
mod tests {
    use flowstate_core::store::ErrorKind;

    use super::*;

    #[test]
    fn url_sets_endpoint_key_and_names() {
        let c = CosmosConfig::from_url(
            "cosmos://127.0.0.1:8081?key=a%2Bb%2F%3D%3D&database=app&container_prefix=t_&namespace=orders&accept_invalid_certs=true&http2=false",
        )
        .unwrap();
        assert_eq!(c.endpoint, "https://127.0.0.1:8081/");
        assert_eq!(c.key, "a+b/==");
        assert_eq!((c.database.as_str(), c.container_prefix.as_str()), ("app", "t_"));
        assert_eq!(c.container_name("orders"), "t_orders");
        assert!(c.accept_invalid_certs && !c.http2);
        assert_eq!(c.max_item_bytes, DEFAULT_MAX_ITEM_BYTES);
    }

    #[test]
    fn invalid_certs_only_on_loopback() {
        let ok = ["cosmos://localhost:8081", "cosmos://127.0.0.1", "cosmos://[::1]:8081", "cosmos://127.0.0.2:1"];
        for base in ok {
            CosmosConfig::from_url(&format!("{base}?key=k&accept_invalid_certs=true")).unwrap();
        }
        for base in ["cosmos://acct.documents.azure.com:443", "cosmos://10.0.0.1:8081", "cosmos://localhost.evil.com"] {
            let err = CosmosConfig::from_url(&format!("{base}?key=k&accept_invalid_certs=true")).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{base}");
        }
    }

    #[test]
    fn bad_urls_are_invalid_input() {
        for bad in [
            "postgres://h/db",
            "cosmos://h:1",
            "cosmos://h:1?key=k&namespace=Bad",
            "cosmos://h:1?key=k&database=a/b",
            "cosmos://h:1?key=k&container_prefix=a%23",
            "cosmos://h:1?key=k&http2=maybe",
            "cosmos://h:1?key=k&size=3",
            "cosmos://h:1?key=k&max_item_bytes=3000000",
            "cosmos://u@h:1?key=k",
        ] {
            let err = CosmosConfig::from_url(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad}");
        }
    }

    #[test]
    fn debug_and_redact_hide_the_key() {
        let c = CosmosConfig::from_url("cosmos://h:1?key=s3cretKEY%3D%3D").unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("***"), "{shown}");
        assert_eq!(redact("cosmos://h:1?database=d&key=s3cret"), "cosmos://h:1?database=d&key=***");
        let err = CosmosConfig::from_url("cosmos://h:1?key=s3cret&bogus=1").unwrap_err();
        assert!(!err.to_string().contains("s3cret"));
    }

    #[test]
    fn undecodable_parameters_are_named_but_the_key_is_not_shown() {
        for url in ["cosmos://h:1?key=s3cret%zz", "cosmos://h:1?%6Bey=s3cret%ff", "cosmos://h:1?key=s3cret%FF%FE"] {
            let err = CosmosConfig::from_url(url).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{url}");
            assert!(!err.to_string().contains("s3cret") && err.message().contains("key"), "{url}: {err}");
        }
        let err = CosmosConfig::from_url("cosmos://h:1?key=s3cret&database=d%zz").unwrap_err();
        assert!(!err.to_string().contains("s3cret") && err.message().contains("parameter database"), "{err}");
        assert_eq!(redact("cosmos://h:1?%6Bey=s3cret"), "cosmos://h:1?key=***");
    }

    #[test]
    fn serde_fills_defaults() {
        let c: CosmosConfig =
            serde_json::from_str(r#"{"endpoint": "https://h:1/", "key": "k", "http2": false}"#).unwrap();
        assert_eq!(c, CosmosConfig::new("https://h:1/", "k").with_http2(false));
    }
}
