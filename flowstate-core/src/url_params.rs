//! Parsing of the `?key=value&…` part of a store URL, shared by the backends'
//! `from_url` so that every scheme decodes, names and rejects parameters alike.
//!
//! Names and values are percent-decoded (a key or password may hold
//! `+ / = &`); a malformed escape, a non-UTF-8 value or a value of the wrong
//! type is an [`ErrorKind::InvalidInput`](crate::store::ErrorKind::InvalidInput)
//! that names the scheme and the parameter. A value that cannot be decoded is
//! never quoted in the error: it may be a secret.

use std::str::FromStr;

use crate::store::{StoreError, StoreResult};

/// The decoded `key=value` pairs of a URL's query, in order, for one scheme
/// (used in error messages: "spanner URL parameter …").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlParams {
    scheme: &'static str,
    pairs: Vec<(String, String)>,
}

impl UrlParams {
    /// Split and decode `query` (the text after `?`, without it). A pair
    /// without `=` has an empty value; empty pairs (`a=1&&b=2`) are skipped.
    pub fn parse(scheme: &'static str, query: &str) -> StoreResult<Self> {
        let mut pairs = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let key = percent_decode(scheme, "parameter name", k)?;
            let value = percent_decode(scheme, &format!("parameter {key}"), v)?;
            pairs.push((key, value));
        }
        Ok(Self { scheme, pairs })
    }

    /// The pairs, in URL order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// `value` parsed as a number (any `FromStr` type), or an error naming `key`.
    pub fn number<T: FromStr>(&self, key: &str, value: &str) -> StoreResult<T> {
        value
            .parse()
            .map_err(|_| StoreError::invalid(format!("{} URL parameter {key}={value:?} is not a number", self.scheme)))
    }

    /// `value` as a boolean (`true`/`1`/`yes`, `false`/`0`/`no`).
    pub fn boolean(&self, key: &str, value: &str) -> StoreResult<bool> {
        match value {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            _ => Err(StoreError::invalid(format!("{} URL parameter {key}={value:?} is not true/false", self.scheme))),
        }
    }

    /// The error for a parameter this scheme does not know (typos must not
    /// pass silently).
    pub fn unknown(&self, key: &str) -> StoreError {
        StoreError::invalid(format!("unknown {} URL parameter {key:?}", self.scheme))
    }
}

/// Decode `%XX` escapes; the result must be UTF-8. Errors name `what` (the
/// part of the URL: "path", "parameter password", ...), never the text.
pub fn percent_decode(scheme: &str, what: &str, s: &str) -> StoreResult<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let byte = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| StoreError::invalid(format!("{scheme} URL {what} has a bad %-escape")))?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| StoreError::invalid(format!("{scheme} URL {what} is not UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ErrorKind;

    #[test]
    fn pairs_are_decoded_in_order() {
        let p = UrlParams::parse("x", "key=a%2Bb%2F%3D&&flag&n=42").unwrap();
        let pairs: Vec<_> = p.iter().collect();
        assert_eq!(pairs, vec![("key", "a+b/="), ("flag", ""), ("n", "42")]);
        assert_eq!(p.number::<u32>("n", "42").unwrap(), 42);
        assert!(p.boolean("b", "yes").unwrap());
        assert!(!p.boolean("b", "0").unwrap());
    }

    #[test]
    fn bad_input_is_invalid_and_names_the_scheme() {
        for query in ["pasword=s3cret%zz", "pasword=s3cret%4", "pasword=s3cret%ff"] {
            let e = UrlParams::parse("spanner", query).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{query}");
            assert!(e.message().contains("spanner URL parameter pasword"), "{e}");
            assert!(!e.message().contains("s3cret"), "the undecodable value is never shown: {e}");
        }
        assert!(UrlParams::parse("x", "%zz=1").unwrap_err().message().contains("parameter name"));
        let p = UrlParams::parse("spanner", "").unwrap();
        assert!(p.number::<u32>("n", "-1").unwrap_err().message().contains("n=\"-1\""));
        assert_eq!(p.boolean("b", "maybe").unwrap_err().kind(), ErrorKind::InvalidInput);
        assert!(p.unknown("tabel").message().contains("tabel"));
    }
}
