//! The engine's error type.

use std::fmt;

use crate::store::{ErrorKind, StoreError};

/// An error from the Flowstate engine or from a handler.
///
/// Errors are *final* (recorded as the instance's outcome and returned to every
/// later invocation of the same instance id) or *transient* (the instance stays
/// unfinished and is re-driven by the collector). See [`Error::is_final`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store failed; transient unless the store error is a permanent kind.
    #[error("store error: {0}")]
    Store(#[from] StoreError),
    /// No function of that name is registered.
    #[error("unknown function {0:?}")]
    UnknownFunction(String),
    /// A re-execution asked for a different operation than the log holds.
    #[error(
        "non-deterministic replay of instance {instance:?} at step {step}: the log holds {logged}, the handler asked for {requested}"
    )]
    NonDeterministic {
        /// The instance being replayed.
        instance: String,
        /// The step number where the handler diverged.
        step: u32,
        /// What the log recorded at that step.
        logged: String,
        /// What the handler asked for now.
        requested: String,
    },
    /// A caller-supplied argument is invalid (instance id, key, reused id, ...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A value could not be (de)serialized.
    #[error("serialization error: {0}")]
    Serde(#[from] serde_json::Error),
    /// A value is larger than one stored item can hold.
    #[error("value too large: {0}")]
    TooLarge(String),
    /// Another execution holds a live lease on the instance and did not finish
    /// within the wait bound.
    #[error("instance {0:?} is running elsewhere and did not finish in time")]
    InstanceBusy(String),
    /// The handler failed; recorded as the instance's outcome.
    #[error("handler failed: {0}")]
    Handler(String),
    /// Another execution of this instance finished it while this one was
    /// starting; the runtime returns that execution's outcome instead.
    #[error("instance {0:?} was finished by another execution")]
    AlreadyFinished(String),
    /// Stored log or data rows are not what Flowstate wrote.
    #[error("corrupt or foreign log data: {0}")]
    Corrupt(String),
}

impl Error {
    /// A handler failure with a message (recorded as the instance's outcome).
    pub fn handler(message: impl fmt::Display) -> Self {
        Self::Handler(message.to_string())
    }

    /// Whether the error is the instance's final outcome (recorded, never
    /// retried) rather than a transient failure the collector will retry.
    pub fn is_final(&self) -> bool {
        match self {
            Error::Store(e) => matches!(e.kind(), ErrorKind::InvalidInput | ErrorKind::TooLarge),
            // A divergent replay is a code or deployment bug: fail loudly on
            // every attempt rather than record a verdict a fix could not undo.
            Error::InstanceBusy(_) | Error::Corrupt(_) | Error::NonDeterministic { .. } | Error::AlreadyFinished(_) => {
                false
            }
            Error::UnknownFunction(_)
            | Error::InvalidInput(_)
            | Error::Serde(_)
            | Error::TooLarge(_)
            | Error::Handler(_) => true,
        }
    }

    /// The store error kind, if this is a store error.
    pub fn store_kind(&self) -> Option<ErrorKind> {
        match self {
            Error::Store(e) => Some(e.kind()),
            _ => None,
        }
    }
}

/// Result alias for the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;
