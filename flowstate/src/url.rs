//! Store URLs: which backend a URL names, whether it is compiled in, and how
//! to print a URL without its secrets.

use std::fmt;

use crate::error::OpenError;

/// A storage backend Flowstate knows by URL scheme, compiled in or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// Embedded SQLite: `sqlite://PATH?synchronous=full&...` (feature `sqlite`).
    Sqlite,
    /// The in-memory reference store: `memory://` (feature `memory`).
    Memory,
    /// PostgreSQL: `postgres://user:password@host:port/db` (feature `postgres`).
    Postgres,
    /// Amazon DynamoDB: `dynamodb://?endpoint=...` (feature `dynamodb`).
    DynamoDb,
    /// Azure Cosmos DB: `cosmos://...` (feature `cosmos`).
    Cosmos,
    /// Google Cloud Spanner: `spanner://...` (feature `spanner`).
    Spanner,
}

impl Backend {
    /// Every backend Flowstate knows, compiled in or not.
    pub const ALL: [Backend; 6] =
        [Self::Sqlite, Self::Memory, Self::Postgres, Self::DynamoDb, Self::Cosmos, Self::Spanner];

    /// The URL scheme (`postgresql` is accepted for `postgres` too).
    pub fn scheme(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Memory => "memory",
            Self::Postgres => "postgres",
            Self::DynamoDb => "dynamodb",
            Self::Cosmos => "cosmos",
            Self::Spanner => "spanner",
        }
    }

    /// The Cargo feature of the `flowstate` crate that compiles it in.
    pub fn feature(self) -> &'static str {
        self.scheme()
    }

    /// Whether this build of `flowstate` can open it.
    pub fn is_compiled(self) -> bool {
        match self {
            Self::Sqlite => cfg!(feature = "sqlite"),
            Self::Memory => cfg!(feature = "memory"),
            Self::Postgres => cfg!(feature = "postgres"),
            Self::Cosmos => cfg!(feature = "cosmos"),
            Self::DynamoDb => cfg!(feature = "dynamodb"),
            Self::Spanner => cfg!(feature = "spanner"),
        }
    }

    /// The backends this build can open.
    pub fn compiled() -> Vec<Backend> {
        Self::ALL.into_iter().filter(|b| b.is_compiled()).collect()
    }

    fn from_scheme(scheme: &str) -> Option<Self> {
        match scheme {
            "postgresql" => Some(Self::Postgres),
            s => Self::ALL.into_iter().find(|b| b.scheme() == s),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.scheme())
    }
}

/// A store URL whose scheme names a compiled-in backend.
///
/// `Debug` and `Display` print it with passwords and secret query parameters
/// replaced by `***`; [`StoreUrl::expose`] is the only way to the raw text.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreUrl {
    raw: String,
    backend: Backend,
}

impl StoreUrl {
    /// Parse a URL: `sqlite://PATH?...`, `memory://`, ... Fails with
    /// [`OpenError::Malformed`] (no or bad scheme), [`OpenError::UnknownScheme`]
    /// or [`OpenError::NotCompiled`] (a known backend this build lacks).
    /// Backend-specific parts (path, parameters) are checked when opening.
    pub fn parse(url: &str) -> Result<Self, OpenError> {
        let raw = url.trim();
        let malformed = |reason: String| OpenError::Malformed { url: redact(raw), reason };
        if raw.is_empty() {
            return Err(malformed("the URL is empty (expected e.g. sqlite://flowstate.db)".into()));
        }
        let Some((scheme, rest)) = raw.split_once(':') else {
            return Err(malformed("it has no scheme (expected e.g. sqlite://flowstate.db or memory://)".into()));
        };
        let valid_scheme = scheme.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if !valid_scheme {
            return Err(malformed(format!(
                "{:?} is not a URL scheme (expected e.g. sqlite://flowstate.db or memory://)",
                redact(scheme)
            )));
        }
        let scheme_lc = scheme.to_ascii_lowercase();
        let Some(backend) = Backend::from_scheme(&scheme_lc) else {
            let known: Vec<&str> = Backend::ALL.iter().map(|b| b.scheme()).collect();
            return Err(OpenError::UnknownScheme { scheme: scheme_lc, known: known.join(", ") });
        };
        if backend != Backend::Sqlite && !rest.starts_with("//") {
            return Err(malformed(format!("expected {}://...", backend.scheme())));
        }
        if !backend.is_compiled() {
            return Err(OpenError::NotCompiled { backend });
        }
        if backend == Backend::Memory && rest != "//" {
            return Err(malformed("memory:// takes no path or parameters".into()));
        }
        Ok(Self { raw: raw.to_string(), backend })
    }

    /// The backend the URL names.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The raw URL, secrets included: hand it to a driver, never to a log.
    pub fn expose(&self) -> &str {
        &self.raw
    }

    /// The URL with its secrets replaced by `***` (what `Display` prints).
    pub fn redacted(&self) -> String {
        redact(&self.raw)
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreUrl({:?})", self.redacted())
    }
}

impl std::str::FromStr for StoreUrl {
    type Err = OpenError;
    fn from_str(s: &str) -> Result<Self, OpenError> {
        Self::parse(s)
    }
}

/// Query parameters whose values are secrets (`password`, `access_key`, `sas_token`, ...).
fn is_secret_param(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["password", "passwd", "pwd", "secret", "token", "key", "sig", "signature", "credential", "credentials"]
        .iter()
        .any(|s| n.ends_with(s))
}

/// `url` with the password of its user info and the values of secret query
/// parameters (`password`, `*_key`, `token`, ...) replaced by `***`. Works on
/// any text, well-formed or not.
pub fn redact(url: &str) -> String {
    let (before_query, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = String::with_capacity(url.len());
    match before_query.split_once("://") {
        Some((scheme, rest)) => {
            out.push_str(scheme);
            out.push_str("://");
            let authority_end = rest.find(['/', '#']).unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            match authority.rsplit_once('@') {
                Some((userinfo, host)) => {
                    match userinfo.split_once(':') {
                        Some((user, _password)) => {
                            out.push_str(user);
                            out.push_str(":***");
                        }
                        None => out.push_str(userinfo),
                    }
                    out.push('@');
                    out.push_str(host);
                }
                None => out.push_str(authority),
            }
            out.push_str(path);
        }
        None => out.push_str(before_query),
    }
    if let Some(query) = query {
        out.push('?');
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if is_secret_param(k) => format!("{k}=***"),
                _ => pair.to_string(),
            })
            .collect();
        out.push_str(&pairs.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_secret_parameters_are_redacted() {
        assert_eq!(redact("postgres://app:s3cret@db:5432/x"), "postgres://app:***@db:5432/x");
        assert_eq!(redact("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(redact("postgres://a:b:c@db/x?sslmode=require"), "postgres://a:***@db/x?sslmode=require");
        assert_eq!(
            redact("cosmos://acct?key=abc&db=d&access_key=zz&auth_token=t&max_item_bytes=9"),
            "cosmos://acct?key=***&db=d&access_key=***&auth_token=***&max_item_bytes=9"
        );
        assert_eq!(redact("postgres://h/db?password=p"), "postgres://h/db?password=***");
        assert_eq!(redact("sqlite:///tmp/a.db?synchronous=normal"), "sqlite:///tmp/a.db?synchronous=normal");
        assert_eq!(redact("not a url:pw@x"), "not a url:pw@x");
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn scheme_decides_the_backend() {
        assert_eq!(StoreUrl::parse("sqlite://a.db").unwrap().backend(), Backend::Sqlite);
        assert_eq!(StoreUrl::parse("  sqlite:a.db\n").unwrap().expose(), "sqlite:a.db");
        assert_eq!(StoreUrl::parse("SQLITE://a.db").unwrap().backend(), Backend::Sqlite);
    }

    #[test]
    fn known_backends_not_compiled_name_their_feature() {
        for (url, feature) in [
            ("dynamodb://?endpoint=http://127.0.0.1:5000", "dynamodb"),
            ("cosmos://acct?key=k", "cosmos"),
            ("spanner://projects/p/instances/i/databases/d", "spanner"),
            ("postgres://u:p@127.0.0.1/x", "postgres"),
            ("postgresql://127.0.0.1/x", "postgres"),
        ] {
            if Backend::from_scheme(url.split(':').next().unwrap()).unwrap().is_compiled() {
                continue;
            }
            let msg = StoreUrl::parse(url).unwrap_err().to_string();
            assert!(
                msg.contains(&format!("backend {feature} is not compiled in: enable feature `{feature}`")),
                "{msg}"
            );
            assert!(!msg.contains("p@"), "no secrets in {msg}");
        }
    }

    #[test]
    fn malformed_urls_say_what_is_wrong() {
        let cases = [
            ("", "empty"),
            ("flowstate.db", "no scheme"),
            ("1abc://x", "not a URL scheme"),
            ("mysql://u:hunter2@h/db", "unknown store URL scheme \"mysql\""),
            ("dynamodb:endpoint", "expected dynamodb://"),
        ];
        for (url, expected) in cases {
            let msg = StoreUrl::parse(url).unwrap_err().to_string();
            assert!(msg.contains(expected), "{url:?}: {msg}");
            assert!(!msg.contains("hunter2"), "{msg}");
        }
    }

    #[test]
    fn debug_and_display_hide_secrets() {
        let url = StoreUrl { raw: "postgres://u:hunter2@h/db?password=hunter2".into(), backend: Backend::Postgres };
        assert!(!format!("{url:?}").contains("hunter2"));
        assert!(!format!("{url}").contains("hunter2"));
        assert!(url.expose().contains("hunter2"));
    }
}
