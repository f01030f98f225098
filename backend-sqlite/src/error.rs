//! The one place where SQLite / sqlx errors become [`StoreError`] kinds.

use flowstate_core::store::{ErrorKind, Item, StoreError};

// Primary SQLite result codes (https://www.sqlite.org/rescode.html); the low
// byte of an extended code is its primary code.
const SQLITE_ERROR: i32 = 1;
const SQLITE_PERM: i32 = 3;
const SQLITE_ABORT: i32 = 4;
const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;
const SQLITE_NOMEM: i32 = 7;
const SQLITE_READONLY: i32 = 8;
const SQLITE_INTERRUPT: i32 = 9;
const SQLITE_IOERR: i32 = 10;
const SQLITE_CORRUPT: i32 = 11;
const SQLITE_FULL: i32 = 13;
const SQLITE_CANTOPEN: i32 = 14;
const SQLITE_SCHEMA: i32 = 17;
const SQLITE_TOOBIG: i32 = 18;
const SQLITE_CONSTRAINT: i32 = 19;
const SQLITE_MISMATCH: i32 = 20;
const SQLITE_NOLFS: i32 = 22;
const SQLITE_NOTADB: i32 = 26;

/// Map a sqlx error to a store error, keeping it as the source.
///
/// - busy/locked (another writer held the lock past the busy timeout),
///   interrupted or aborted statements: `Conflict` — nothing was applied, retry.
/// - I/O, disk full, cannot open, read-only, pool exhausted or closed:
///   `Unavailable` — nothing was applied.
/// - a damaged file, or a table that is not the one we created: `Corrupt`.
/// - anything else (a crashed worker thread, an unknown code): `Indeterminate`,
///   because we cannot say whether the statement ran.
///
/// A failing `COMMIT` goes through [`commit_err`], which differs in one case.
pub(crate) fn map_err(err: sqlx::Error) -> StoreError {
    map(err, false)
}

/// Map an error of `COMMIT`: an I/O failure there may come after the commit
/// record reached the WAL, so the write may or may not be durable:
/// `Indeterminate` rather than `Unavailable`.
pub(crate) fn commit_err(err: sqlx::Error) -> StoreError {
    map(err, true)
}

fn map(err: sqlx::Error, committing: bool) -> StoreError {
    let (mut kind, mut what) = match &err {
        sqlx::Error::Database(db) => {
            let code = db.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(-1);
            let kind = match code & 0xff {
                SQLITE_BUSY | SQLITE_LOCKED | SQLITE_INTERRUPT | SQLITE_ABORT => ErrorKind::Conflict,
                SQLITE_IOERR | SQLITE_FULL | SQLITE_CANTOPEN | SQLITE_READONLY | SQLITE_PERM | SQLITE_NOMEM
                | SQLITE_NOLFS => ErrorKind::Unavailable,
                SQLITE_CORRUPT | SQLITE_NOTADB | SQLITE_ERROR | SQLITE_SCHEMA | SQLITE_MISMATCH | SQLITE_CONSTRAINT => {
                    ErrorKind::Corrupt
                }
                SQLITE_TOOBIG => ErrorKind::TooLarge,
                _ => ErrorKind::Indeterminate,
            };
            (kind, "sqlite error")
        }
        sqlx::Error::Io(_) => (ErrorKind::Unavailable, "sqlite I/O error"),
        sqlx::Error::PoolTimedOut => (ErrorKind::Unavailable, "no sqlite connection free before the timeout"),
        sqlx::Error::PoolClosed => (ErrorKind::Unavailable, "the sqlite store was closed"),
        sqlx::Error::Configuration(_) => (ErrorKind::InvalidInput, "bad sqlite configuration"),
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) | sqlx::Error::ColumnNotFound(_) => {
            (ErrorKind::Corrupt, "unexpected sqlite row")
        }
        _ => (ErrorKind::Indeterminate, "sqlite failed"),
    };
    if committing && kind == ErrorKind::Unavailable {
        (kind, what) = (ErrorKind::Indeterminate, "sqlite commit failed: the write may have applied");
    }
    StoreError::new(kind, what).with_source(err)
}

/// Decode a stored body; a body that is not an item is `Corrupt`.
pub(crate) fn decode_body(body: &[u8]) -> Result<Item, StoreError> {
    Item::from_json(body).map_err(|e| StoreError::corrupt("stored item is not valid item JSON").with_source(e))
}
