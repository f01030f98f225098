//! The one error type every [`StateStore`](super::StateStore) returns.
//!
//! Kinds are data, not strings: the engine decides what to do from [`ErrorKind`]
//! alone, and keeps the backend's native error as [`std::error::Error::source`].

use std::borrow::Cow;
use std::fmt;

use super::Item;

/// What went wrong, as far as the caller needs to act on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The item does not exist (an `update` of a missing item).
    NotFound,
    /// A condition evaluated to false: an *answer*, not a failure. The error
    /// carries the current item when the store returned it in the same round trip.
    ConditionFailed,
    /// A transient conflict with another transaction (serialization failure,
    /// deadlock, busy database). Safe to retry.
    Conflict,
    /// The store asked us to slow down. Safe to retry after a pause.
    Throttled,
    /// The store could not be reached and the request was certainly not applied.
    Unavailable,
    /// The item (or value) exceeds what the store accepts in one item.
    TooLarge,
    /// The request is malformed: bad identifier, wrong attribute type, ...
    InvalidInput,
    /// No answer: the request may or may not have been applied. Re-read before acting.
    Indeterminate,
    /// The backend does not offer this primitive (see its capabilities).
    Unsupported,
    /// Stored data is not what Flowstate wrote (foreign or damaged rows).
    Corrupt,
}

impl ErrorKind {
    /// Whether repeating the same request may succeed. `Indeterminate` is
    /// excluded on purpose: the caller must first find out whether it applied.
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Conflict | Self::Throttled | Self::Unavailable)
    }

    /// Whether the request may have been applied although it reported an error.
    pub fn may_have_applied(self) -> bool {
        matches!(self, Self::Indeterminate)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Self::NotFound => "not found",
            Self::ConditionFailed => "condition failed",
            Self::Conflict => "conflict",
            Self::Throttled => "throttled",
            Self::Unavailable => "unavailable",
            Self::TooLarge => "too large",
            Self::InvalidInput => "invalid input",
            Self::Indeterminate => "indeterminate",
            Self::Unsupported => "unsupported",
            Self::Corrupt => "corrupt",
        };
        f.write_str(s)
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error from a [`StateStore`](super::StateStore).
pub struct StoreError {
    kind: ErrorKind,
    message: Cow<'static, str>,
    current: Option<Box<Item>>,
    source: Option<BoxError>,
}

/// Result alias for store calls.
pub type StoreResult<T> = Result<T, StoreError>;

impl StoreError {
    /// A new error of `kind` with a human-readable message.
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self { kind, message: message.into(), current: None, source: None }
    }

    /// A failed condition, carrying the item as it is now (`None`: absent, or
    /// the store could not return it in the same round trip).
    pub fn condition_failed(current: Option<Item>) -> Self {
        Self {
            kind: ErrorKind::ConditionFailed,
            message: Cow::Borrowed("condition failed"),
            current: current.map(Box::new),
            source: None,
        }
    }

    /// Shorthand for an [`ErrorKind::InvalidInput`] error.
    pub fn invalid(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }

    /// Shorthand for an [`ErrorKind::Corrupt`] error.
    pub fn corrupt(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Corrupt, message)
    }

    /// Attach the backend's native error.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Attach the current item (for [`ErrorKind::ConditionFailed`]).
    pub fn with_current(mut self, current: Option<Item>) -> Self {
        self.current = current.map(Box::new);
        self
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, without the source chain.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The current item returned with a failed condition, if any.
    pub fn current(&self) -> Option<&Item> {
        self.current.as_deref()
    }

    /// Take the current item out of the error.
    pub fn into_current(self) -> Option<Item> {
        self.current.map(|b| *b)
    }

    /// Whether this is a failed condition (the store answered "no").
    pub fn is_condition_failed(&self) -> bool {
        self.kind == ErrorKind::ConditionFailed
    }
}

impl fmt::Debug for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("StoreError");
        d.field("kind", &self.kind).field("message", &self.message);
        if let Some(c) = &self.current {
            d.field("current_bytes", &c.encoded_len());
        }
        if let Some(s) = &self.source {
            d.field("source", s);
        }
        d.finish()
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}
