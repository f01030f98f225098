//! Validated identifiers: namespaces and table names end up in SQL table
//! names, DynamoDB table names and Cosmos container names, so they are held to
//! one strict pattern that is safe everywhere.

use std::borrow::Cow;
use std::fmt;

use super::StoreError;

/// Longest identifier accepted (fits every backend's name limits once prefixed).
pub const MAX_IDENTIFIER_LEN: usize = 40;

/// Check `name` against `^[a-z][a-z0-9_]{0,39}$`; `what` names it in the error.
pub fn validate_identifier(what: &str, name: &str) -> Result<(), StoreError> {
    let mut chars = name.chars();
    let ok = name.len() <= MAX_IDENTIFIER_LEN
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::invalid(format!(
            "invalid {what} {name:?}: must match ^[a-z][a-z0-9_]{{0,{}}}$",
            MAX_IDENTIFIER_LEN - 1
        )))
    }
}

macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Cow<'static, str>);

        impl $name {
            /// Validate and wrap.
            pub fn new(name: impl Into<Cow<'static, str>>) -> Result<Self, StoreError> {
                let name = name.into();
                validate_identifier($what, &name)?;
                Ok(Self(name))
            }

            /// The identifier as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

identifier!(
    /// A logical table name within a namespace (validated identifier).
    TableName,
    "table name"
);
identifier!(
    /// A namespace: one independent set of tables in a store (validated identifier).
    Namespace,
    "namespace"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_strict() {
        assert!(TableName::new("daal").is_ok());
        assert!(TableName::new("a1_b").is_ok());
        for bad in ["", "1a", "A", "a-b", "a b", "a;drop", "ä", &"a".repeat(41)] {
            let err = TableName::new(bad.to_string()).unwrap_err();
            assert_eq!(err.kind(), crate::store::ErrorKind::InvalidInput, "{bad}");
        }
    }
}
