//! [`OpenError`]: why a store could not be chosen or opened.

use std::time::Duration;

use flowstate_core::store::StoreError;

use crate::url::Backend;

/// Why a store could not be chosen or opened. Every URL in it is redacted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The URL (or one of its parameters) is not well formed.
    #[error("malformed store URL {url:?}: {reason}")]
    Malformed {
        /// The URL, redacted.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The scheme names no backend Flowstate knows.
    #[error("unknown store URL scheme {scheme:?}: expected one of {known}")]
    UnknownScheme {
        /// The scheme as given (lower-cased).
        scheme: String,
        /// The known schemes, comma-separated.
        known: String,
    },
    /// A known backend that this build does not include.
    #[error("backend {backend} is not compiled in: enable feature `{}` of the `flowstate` crate (this build has: {})",
        backend.feature(), compiled_list())]
    NotCompiled {
        /// The backend the URL names.
        backend: Backend,
    },
    /// An environment variable the configuration needs is not set.
    #[error("{var} is not set: set it to a store URL such as sqlite://flowstate.db")]
    MissingEnv {
        /// The variable.
        var: &'static str,
    },
    /// A configuration file could not be read or parsed.
    #[error("config {path}: {reason}")]
    Config {
        /// The file (or `<string>` for in-memory text).
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The store was chosen but opening it failed (unreachable server,
    /// unwritable file, bad credentials, ...).
    #[error("could not open store {url}: {source}")]
    Open {
        /// The URL, redacted.
        url: String,
        /// The store's error, with the driver's native error as its source.
        #[source]
        source: StoreError,
    },
    /// Opening the store did not finish within the connect timeout.
    #[error("could not open store {url}: no answer within {}", humanize(*.after))]
    Timeout {
        /// The URL, redacted.
        url: String,
        /// The timeout that expired.
        after: Duration,
    },
}

fn compiled_list() -> String {
    let names: Vec<&str> = Backend::compiled().into_iter().map(Backend::scheme).collect();
    if names.is_empty() { "none".into() } else { names.join(", ") }
}

/// `1.5s`, `200ms`, `2m`: short, for messages.
pub(crate) fn humanize(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else {
        format!("{}s", d.as_secs_f64())
    }
}
