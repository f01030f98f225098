//! The one place where PostgreSQL / sqlx errors become [`StoreError`] kinds.

use flowstate_core::store::{ErrorKind, StoreError};

/// Where a call was when it failed: the same native error means different
/// things before anything was sent, during a read, during an autocommitted
/// write, inside an explicit transaction, or at its `COMMIT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Connecting, taking a pooled connection, or `BEGIN`: nothing was sent
    /// that could change data.
    Connect,
    /// A read-only statement: whatever happened, nothing was changed.
    Read,
    /// A single autocommitted write statement: once sent, it may have applied.
    Write,
    /// A statement inside `BEGIN … COMMIT` before `COMMIT` was sent: if the
    /// connection breaks, the server rolls the transaction back.
    InTransaction,
    /// `COMMIT` itself: it may have been applied.
    Commit,
}

/// Map a sqlx error to a store error, keeping it as the source.
///
/// | native | kind |
/// |---|---|
/// | SQLSTATE `40001` serialization failure, `40P01` deadlock, `55P03` lock not available | `Conflict` (nothing applied; retry) |
/// | `23505` unique violation | `ConditionFailed` (a create lost to an existing row) |
/// | `57014` query canceled (statement timeout) | `Indeterminate` on a write or `COMMIT`, `Unavailable` elsewhere |
/// | class `08` connection exception, `57P01..03` shutdown, I/O, TLS, protocol errors, a crashed worker | `Unavailable` before a write was sent, in a read and inside a transaction; `Indeterminate` after a write or `COMMIT` was sent |
/// | class `53` insufficient resources, `42501` insufficient privilege | `Unavailable` on connect/read/transaction, `Indeterminate` on a write |
/// | pool timed out or closed (we acquire before sending) | `Unavailable` |
/// | class `22` data exception, `54000` program limit | `InvalidInput`, `TooLarge` |
/// | class `42` (other than `42501`), `XX001`/`XX002`, undecodable rows | `Corrupt` |
/// | a bad URL or option | `InvalidInput` |
/// | anything else | `Indeterminate` after a write or `COMMIT` was sent, else `Unavailable` |
pub(crate) fn map_err(err: sqlx::Error, phase: Phase) -> StoreError {
    let sent_write = matches!(phase, Phase::Write | Phase::Commit);
    // "Transport" failures: their meaning depends only on the phase.
    let transport = if sent_write {
        (ErrorKind::Indeterminate, "the connection failed after a write was sent: it may have applied")
    } else {
        (ErrorKind::Unavailable, "postgres could not be reached, or the connection failed: nothing was applied")
    };
    let (kind, what) = match &err {
        sqlx::Error::Database(db) => {
            let code = db.code();
            let code = code.as_deref().unwrap_or("");
            match code {
                "40001" | "40P01" | "55P03" => {
                    (ErrorKind::Conflict, "postgres conflict: serialization failure or deadlock")
                }
                "23505" => (ErrorKind::ConditionFailed, "the item already exists"),
                "57014" if sent_write => (ErrorKind::Indeterminate, "statement timeout or cancel: it may have applied"),
                "57014" => (ErrorKind::Unavailable, "statement timeout or cancel"),
                "54000" => (ErrorKind::TooLarge, "postgres program limit exceeded"),
                "42501" if phase == Phase::Write => transport,
                "42501" => (ErrorKind::Unavailable, "postgres permission denied"),
                "XX001" | "XX002" => (ErrorKind::Corrupt, "postgres reports corrupted data"),
                c if c.starts_with("08") || c.starts_with("57P") || c.starts_with("53") => transport,
                c if c.starts_with("22") => (ErrorKind::InvalidInput, "postgres rejected a value"),
                c if c.starts_with("42") => (ErrorKind::Corrupt, "the flowstate table is not as expected"),
                _ if sent_write => (ErrorKind::Indeterminate, "postgres error after a write was sent"),
                _ => (ErrorKind::Unavailable, "postgres error"),
            }
        }
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => transport,
        sqlx::Error::PoolTimedOut => (ErrorKind::Unavailable, "no postgres connection free before the acquire timeout"),
        sqlx::Error::PoolClosed => (ErrorKind::Unavailable, "the postgres store was closed"),
        sqlx::Error::Configuration(_) | sqlx::Error::InvalidArgument(_) => {
            (ErrorKind::InvalidInput, "bad postgres configuration")
        }
        sqlx::Error::Encode(_) => (ErrorKind::InvalidInput, "cannot encode a parameter"),
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. } => (ErrorKind::Corrupt, "unexpected postgres row"),
        _ => transport,
    };
    let mut out = StoreError::new(kind, what);
    if let sqlx::Error::Database(db) = &err
        && let Some(code) = db.code()
    {
        out = StoreError::new(kind, format!("{what} (SQLSTATE {code})"));
    }
    out.with_source(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_errors_depend_on_the_phase() {
        let io = || sqlx::Error::Io(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset"));
        assert_eq!(map_err(io(), Phase::Connect).kind(), ErrorKind::Unavailable);
        assert_eq!(map_err(io(), Phase::Read).kind(), ErrorKind::Unavailable);
        assert_eq!(map_err(io(), Phase::InTransaction).kind(), ErrorKind::Unavailable);
        assert_eq!(map_err(io(), Phase::Write).kind(), ErrorKind::Indeterminate);
        assert_eq!(map_err(io(), Phase::Commit).kind(), ErrorKind::Indeterminate);
        assert_eq!(map_err(sqlx::Error::PoolTimedOut, Phase::Connect).kind(), ErrorKind::Unavailable);
        let e = map_err(io(), Phase::Write);
        assert!(std::error::Error::source(&e).is_some(), "native error kept as source");
    }
}
