//! [`SpannerConfig`]: which database, which table, which namespace, and the
//! connection's bounds.

use std::time::Duration;

use flowstate_core::store::{StoreError, StoreResult, validate_identifier};
use flowstate_core::url_params::UrlParams;
use serde::{Deserialize, Serialize};

/// Default item limit: 1 MiB of compact JSON. Spanner holds up to 10 MiB in a
/// `BYTES` cell, but values travel base64-encoded inside gRPC messages, which
/// many peers (the emulator among them) cap at 4 MiB; 1 MiB leaves room for a
/// whole transaction's mutations. Raise it with `max_item_bytes` up to
/// [`MAX_ITEM_BYTES_LIMIT`] where the server allows larger messages.
pub const DEFAULT_MAX_ITEM_BYTES: usize = 1 << 20;

/// Largest accepted `max_item_bytes`: under Spanner's 10 MiB cell limit with
/// room for the row's key columns.
pub const MAX_ITEM_BYTES_LIMIT: usize = 9 << 20;

/// The standard variable naming a Cloud Spanner emulator (`host:port`, plain
/// gRPC, no credentials), read when the config names none.
pub const ENV_EMULATOR_HOST: &str = "SPANNER_EMULATOR_HOST";

/// Default table holding every namespace's items.
pub const DEFAULT_TABLE: &str = "flowstate_items";

/// How to open a [`SpannerStore`](crate::SpannerStore).
///
/// Holds no secret: credentials come from Google's standard chain
/// (`GOOGLE_APPLICATION_CREDENTIALS`, the metadata server, gcloud's
/// application-default login) when not on an emulator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct SpannerConfig {
    /// `projects/P/instances/I/databases/D`; the database must exist.
    pub database: String,
    /// Table holding the items (a validated identifier; created on first use).
    pub table: String,
    /// Namespace of the opened store; other namespaces are reached with
    /// `with_namespace`.
    pub namespace: String,
    /// `host:port` of a Cloud Spanner emulator. Empty: [`ENV_EMULATOR_HOST`]
    /// if set, otherwise the real service with Google credentials.
    pub emulator_host: String,
    /// Largest encoded item accepted.
    pub max_item_bytes: usize,
    /// Most sessions (concurrent transactions) this store holds.
    pub sessions: usize,
    /// Deadline of each request, in milliseconds.
    pub timeout_ms: u64,
    /// How many times a transaction Spanner aborted (lock conflict, or the
    /// emulator's one-transaction-at-a-time rule) is retried before the call
    /// fails with the retryable `Conflict` kind.
    pub abort_retries: u32,
}

impl Default for SpannerConfig {
    fn default() -> Self {
        Self {
            database: String::new(),
            table: DEFAULT_TABLE.to_owned(),
            namespace: "flowstate".to_owned(),
            emulator_host: String::new(),
            max_item_bytes: DEFAULT_MAX_ITEM_BYTES,
            sessions: 64,
            timeout_ms: 30_000,
            abort_retries: 100,
        }
    }
}

impl SpannerConfig {
    /// Defaults for `database` (`projects/P/instances/I/databases/D`).
    pub fn new(database: impl Into<String>) -> Self {
        Self { database: database.into(), ..Self::default() }
    }

    /// Set [`SpannerConfig::table`].
    pub fn with_table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// Set [`SpannerConfig::namespace`].
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Set [`SpannerConfig::emulator_host`].
    pub fn with_emulator_host(mut self, host: impl Into<String>) -> Self {
        self.emulator_host = host.into();
        self
    }

    /// Set [`SpannerConfig::max_item_bytes`].
    pub fn with_max_item_bytes(mut self, max_item_bytes: usize) -> Self {
        self.max_item_bytes = max_item_bytes;
        self
    }

    /// Set [`SpannerConfig::sessions`].
    pub fn with_sessions(mut self, sessions: usize) -> Self {
        self.sessions = sessions;
        self
    }

    /// The emulator to use: [`SpannerConfig::emulator_host`], else
    /// [`ENV_EMULATOR_HOST`]; `None` means the real service.
    pub fn effective_emulator_host(&self) -> Option<String> {
        if !self.emulator_host.is_empty() {
            return Some(self.emulator_host.clone());
        }
        std::env::var(ENV_EMULATOR_HOST).ok().filter(|h| !h.is_empty())
    }

    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(1))
    }

    /// Check every field; called by `open`.
    pub fn validate(&self) -> StoreResult<()> {
        validate_database_path(&self.database)?;
        validate_identifier("spanner table", &self.table)?;
        validate_identifier("namespace", &self.namespace)?;
        if self.max_item_bytes == 0 || self.max_item_bytes > MAX_ITEM_BYTES_LIMIT {
            return Err(StoreError::invalid(format!(
                "max_item_bytes must be between 1 and {MAX_ITEM_BYTES_LIMIT} (Spanner's 10 MiB cell limit)"
            )));
        }
        if self.sessions == 0 || self.sessions > 400 {
            return Err(StoreError::invalid("sessions must be between 1 and 400"));
        }
        if self.emulator_host.contains(['/', '?', '#', '@']) {
            return Err(StoreError::invalid(format!(
                "emulator_host {:?} must be host:port, without a scheme or path",
                self.emulator_host
            )));
        }
        Ok(())
    }

    /// Parse `spanner://projects/P/instances/I/databases/D?…`. Keys: `table`,
    /// `namespace`, `emulator_host`, `max_item_bytes`, `sessions`,
    /// `timeout_ms`, `abort_retries`; any other key is rejected so typos do not
    /// pass silently.
    pub fn from_url(url: &str) -> StoreResult<Self> {
        let rest = url
            .strip_prefix("spanner://")
            .ok_or_else(|| StoreError::invalid(format!("not a spanner URL: {url} (expected spanner://projects/…)")))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut config = Self::new(path.trim_end_matches('/'));
        let params = UrlParams::parse("spanner", query)?;
        for (k, v) in params.iter() {
            match k {
                "table" => config.table = v.to_owned(),
                "namespace" => config.namespace = v.to_owned(),
                "emulator_host" => config.emulator_host = v.to_owned(),
                "max_item_bytes" => config.max_item_bytes = params.number(k, v)?,
                "sessions" => config.sessions = params.number(k, v)?,
                "timeout_ms" => config.timeout_ms = params.number(k, v)?,
                "abort_retries" => config.abort_retries = params.number(k, v)?,
                _ => return Err(params.unknown(k)),
            }
        }
        config.validate()?;
        Ok(config)
    }
}

/// `projects/P/instances/I/databases/D` with Spanner's id alphabets (ids are
/// lowercase letters, digits, `-`, `_`; projects may also hold `:` and `.`).
fn validate_database_path(path: &str) -> StoreResult<()> {
    let parts: Vec<&str> = path.split('/').collect();
    let shape_ok = parts.len() == 6 && parts[0] == "projects" && parts[2] == "instances" && parts[4] == "databases";
    let id_ok = |id: &str, extra: &[char]| {
        !id.is_empty()
            && id.len() <= 64
            && id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' || extra.contains(&c))
    };
    if shape_ok && id_ok(parts[1], &[':', '.']) && id_ok(parts[3], &[]) && id_ok(parts[5], &[]) {
        Ok(())
    } else {
        Err(StoreError::invalid(format!(
            "spanner database {path:?} is not projects/PROJECT/instances/INSTANCE/databases/DATABASE"
        )))
    }
}

#[cfg(test)]
mod tests {
    use flowstate_core::store::ErrorKind;

    use super::*;

    const DB: &str = "projects/p-1/instances/inst/databases/app_db";

    #[test]
    fn url_sets_database_and_parameters() {
        let c = SpannerConfig::from_url(&format!(
            "spanner://{DB}?table=fs_items&namespace=orders&emulator_host=127.0.0.1:9010&max_item_bytes=4096&sessions=8&timeout_ms=500&abort_retries=3"
        ))
        .unwrap();
        assert_eq!(c.database, DB);
        assert_eq!(c.table, "fs_items");
        assert_eq!(c.namespace, "orders");
        assert_eq!(c.emulator_host, "127.0.0.1:9010");
        assert_eq!((c.max_item_bytes, c.sessions, c.timeout_ms, c.abort_retries), (4096, 8, 500, 3));
        assert_eq!(c.effective_emulator_host().as_deref(), Some("127.0.0.1:9010"));
    }

    #[test]
    fn bad_urls_are_invalid_input() {
        for url in [
            "postgres://x",
            "spanner://projects/p/instances/i",
            "spanner://projects/P/instances/inst/databases/db",
            "spanner://projects/p/instances/inst/databases/db/extra",
            &format!("spanner://{DB}?tabel=x"),
            &format!("spanner://{DB}?table=drop%20table"),
            &format!("spanner://{DB}?namespace=a;b"),
            &format!("spanner://{DB}?max_item_bytes=0"),
            &format!("spanner://{DB}?max_item_bytes=99999999"),
            &format!("spanner://{DB}?sessions=0"),
            &format!("spanner://{DB}?timeout_ms=soon"),
            &format!("spanner://{DB}?emulator_host=http://x:1"),
        ] {
            let e = SpannerConfig::from_url(url).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{url}: {e}");
        }
    }
}
