//! Mapping gRPC statuses from Spanner to [`StoreError`] kinds.
//!
//! What a failure means depends on the request: a read that fails changed
//! nothing, while a `Commit` whose answer is lost (timeout, dropped
//! connection, `UNKNOWN`, `INTERNAL`) may have applied, which the contract
//! calls `Indeterminate` (the caller re-reads instead of retrying blindly).

use flowstate_core::store::{ErrorKind, StoreError};
use gcloud_gax::grpc::{Code, Status};

/// Which request failed: decides whether a lost answer may have applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Connecting, creating sessions or the table.
    Setup,
    /// A read or a query (read-only, or the first request of a read-write
    /// transaction): nothing is applied by it.
    Read,
    /// A `Commit`: a lost answer may mean it applied.
    Commit,
}

/// Whether Spanner aborted the transaction (lock conflict, or the emulator
/// refusing a second concurrent read-write transaction): retry it whole.
pub(crate) fn is_aborted(status: &Status) -> bool {
    status.code() == Code::Aborted
}

/// Whether the session is gone (deleted after an hour idle, or by an admin):
/// drop it and retry on a new one; no request ran in it.
pub(crate) fn is_session_gone(status: &Status) -> bool {
    status.code() == Code::NotFound && status.message().contains("Session not found")
}

/// The contract error for a failed request of `phase`.
pub(crate) fn from_status(status: Status, phase: Phase) -> StoreError {
    let kind = match status.code() {
        Code::Aborted => ErrorKind::Conflict,
        Code::ResourceExhausted => ErrorKind::Throttled,
        Code::InvalidArgument | Code::OutOfRange => ErrorKind::InvalidInput,
        // Only an `insert` of an existing row; the caller fetches the item.
        Code::AlreadyExists => ErrorKind::ConditionFailed,
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Internal | Code::Cancelled
            if phase == Phase::Commit =>
        {
            ErrorKind::Indeterminate
        }
        Code::NotFound if phase == Phase::Setup => ErrorKind::InvalidInput,
        _ => ErrorKind::Unavailable,
    };
    let message = format!("spanner {}: {:?}: {}", phase.describe(), status.code(), status.message());
    StoreError::new(kind, message).with_source(status)
}

/// The contract error for a failed connection or credential set-up.
pub(crate) fn from_setup(error: impl std::error::Error + Send + Sync + 'static, what: &str) -> StoreError {
    StoreError::new(ErrorKind::Unavailable, format!("spanner {what}: {error}")).with_source(error)
}

impl Phase {
    fn describe(self) -> &'static str {
        match self {
            Phase::Setup => "set-up",
            Phase::Read => "read",
            Phase::Commit => "commit",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_commit_answers_are_indeterminate_and_lost_reads_are_not() {
        for code in [Code::Unavailable, Code::DeadlineExceeded, Code::Unknown, Code::Internal] {
            assert_eq!(from_status(Status::new(code, "x"), Phase::Commit).kind(), ErrorKind::Indeterminate);
            assert_eq!(from_status(Status::new(code, "x"), Phase::Read).kind(), ErrorKind::Unavailable);
        }
        assert_eq!(from_status(Status::new(Code::Aborted, "x"), Phase::Commit).kind(), ErrorKind::Conflict);
        assert_eq!(from_status(Status::new(Code::ResourceExhausted, "x"), Phase::Read).kind(), ErrorKind::Throttled);
        assert_eq!(from_status(Status::new(Code::InvalidArgument, "x"), Phase::Read).kind(), ErrorKind::InvalidInput);
        // Refused for another reason (an expired transaction, a schema change):
        // nothing applied, and it is not an answer about the data.
        assert_eq!(
            from_status(Status::new(Code::FailedPrecondition, "x"), Phase::Commit).kind(),
            ErrorKind::Unavailable
        );
        assert!(is_session_gone(&Status::new(Code::NotFound, "Session not found: projects/p/…")));
        assert!(!is_session_gone(&Status::new(Code::NotFound, "Database not found")));
    }
}
