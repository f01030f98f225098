//! The one place where DynamoDB and SDK errors become [`StoreError`] kinds.

use std::borrow::Cow;
use std::error::Error;

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use flowstate_core::store::{ErrorKind, StoreError};

/// Whether the failed request could have changed data: it decides between
/// `Unavailable` (retry) and `Indeterminate` (re-read first) when no answer came.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// Get, query, describe: never changes data.
    Read,
    /// Put, update, delete, transaction, create table.
    Write,
}

/// Map an SDK error to a store error, keeping it as the source.
///
/// | what happened | kind |
/// |---|---|
/// | `ConditionalCheckFailedException` | `ConditionFailed` (callers attach the returned item first) |
/// | `ProvisionedThroughputExceededException`, `ThrottlingException`, `RequestLimitExceeded`, `LimitExceededException` | `Throttled` (retried inside the backend first) |
/// | `TransactionConflictException`, `TransactionInProgressException`, `ResourceInUseException` | `Conflict` |
/// | `ValidationException` "Item size ... exceeded" | `TooLarge` |
/// | other `ValidationException`, other 4xx, refused credentials, a request the SDK cannot build | `InvalidInput` |
/// | `ResourceNotFoundException` (table missing) | `Unavailable` |
/// | no connection made (refused, DNS, TLS handshake, connect timeout) | `Unavailable`: certainly not applied |
/// | timeout, broken connection or 5xx after the request was sent | writes: `Indeterminate`; reads: `Unavailable` |
pub(crate) fn map_err<E>(err: SdkError<E, HttpResponse>, op: Op) -> StoreError
where
    E: ProvideErrorMetadata + Error + Send + Sync + 'static,
{
    let (kind, message) = classify(&err, op);
    StoreError::new(kind, message).with_source(err)
}

/// The kind of an error without consuming it (the throttle retry loop asks).
pub(crate) fn kind_of<E: ProvideErrorMetadata + Error + 'static>(err: &SdkError<E, HttpResponse>, op: Op) -> ErrorKind {
    classify(err, op).0
}

fn classify<E>(err: &SdkError<E, HttpResponse>, op: Op) -> (ErrorKind, Cow<'static, str>)
where
    E: ProvideErrorMetadata + Error + 'static,
{
    let no_answer = |what: &'static str| match op {
        Op::Read => (ErrorKind::Unavailable, Cow::Borrowed(what)),
        Op::Write => (ErrorKind::Indeterminate, Cow::Owned(format!("{what}: the write may or may not have applied"))),
    };
    match err {
        SdkError::ConstructionFailure(_) => (ErrorKind::InvalidInput, "the DynamoDB request could not be built".into()),
        SdkError::TimeoutError(_) => no_answer("DynamoDB request timed out"),
        SdkError::DispatchFailure(d) => {
            if d.is_user() {
                (ErrorKind::InvalidInput, "the DynamoDB request was refused by the HTTP client".into())
            } else if never_sent(err) {
                (ErrorKind::Unavailable, "could not connect to DynamoDB".into())
            } else {
                no_answer("DynamoDB connection failed")
            }
        }
        SdkError::ResponseError(_) => no_answer("unreadable DynamoDB response"),
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let code = err.code().unwrap_or("");
            let message = err.message().unwrap_or("");
            match code_kind(code, message, op) {
                Some(kind) => (kind, format!("DynamoDB {code}: {message}").into()),
                None if (400..500).contains(&status) => (
                    ErrorKind::InvalidInput,
                    format!("DynamoDB refused the request ({status} {code}): {message}").into(),
                ),
                None => no_answer("DynamoDB failed"),
            }
        }
        _ => no_answer("DynamoDB request failed"),
    }
}

/// The kind of a DynamoDB error code (also a transaction's cancellation
/// reason code); `None` for codes that only the HTTP status can classify.
pub(crate) fn code_kind(code: &str, message: &str, op: Op) -> Option<ErrorKind> {
    Some(match code {
        "ConditionalCheckFailedException" | "ConditionalCheckFailed" => ErrorKind::ConditionFailed,
        "ProvisionedThroughputExceededException"
        | "ProvisionedThroughputExceeded"
        | "ThrottlingException"
        | "ThrottlingError"
        | "Throttling"
        | "RequestLimitExceeded"
        | "LimitExceededException" => ErrorKind::Throttled,
        "TransactionConflictException"
        | "TransactionConflict"
        | "TransactionInProgressException"
        | "ResourceInUseException" => ErrorKind::Conflict,
        "ValidationException" | "ValidationError" if message.contains("size") && message.contains("exceeded") => {
            ErrorKind::TooLarge
        }
        "ItemCollectionSizeLimitExceededException" | "ItemCollectionSizeLimitExceeded" => ErrorKind::TooLarge,
        "ValidationException"
        | "ValidationError"
        | "SerializationException"
        | "IdempotentParameterMismatchException"
        | "UnrecognizedClientException"
        | "AccessDeniedException"
        | "InvalidSignatureException"
        | "MissingAuthenticationTokenException"
        | "IncompleteSignatureException"
        | "ExpiredTokenException" => ErrorKind::InvalidInput,
        "ResourceNotFoundException" => ErrorKind::Unavailable,
        "InternalServerError" | "ServiceUnavailable" | "InternalFailure" => match op {
            Op::Read => ErrorKind::Unavailable,
            Op::Write => ErrorKind::Indeterminate,
        },
        _ => return None,
    })
}

/// Whether the chain shows a failure to connect: the request never left.
fn never_sent(err: &(dyn Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(h) = e.downcast_ref::<hyper_util::client::legacy::Error>()
            && h.is_connect()
        {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as Io;
            if matches!(
                io.kind(),
                Io::ConnectionRefused | Io::AddrNotAvailable | Io::HostUnreachable | Io::NetworkUnreachable
            ) {
                return true;
            }
            next = io.get_ref().map(|inner| inner as &(dyn Error + 'static));
            continue;
        }
        next = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_kinds() {
        let k = |code, msg| code_kind(code, msg, Op::Write);
        assert_eq!(k("ConditionalCheckFailedException", ""), Some(ErrorKind::ConditionFailed));
        assert_eq!(k("ProvisionedThroughputExceededException", ""), Some(ErrorKind::Throttled));
        assert_eq!(k("ThrottlingException", ""), Some(ErrorKind::Throttled));
        assert_eq!(k("RequestLimitExceeded", ""), Some(ErrorKind::Throttled));
        assert_eq!(k("TransactionConflict", ""), Some(ErrorKind::Conflict));
        assert_eq!(
            k("ValidationException", "Item size has exceeded the maximum allowed size"),
            Some(ErrorKind::TooLarge)
        );
        assert_eq!(
            k("ValidationException", "Item size to update has exceeded the maximum allowed size"),
            Some(ErrorKind::TooLarge)
        );
        assert_eq!(k("ValidationException", "Invalid UpdateExpression"), Some(ErrorKind::InvalidInput));
        assert_eq!(k("InternalServerError", ""), Some(ErrorKind::Indeterminate));
        assert_eq!(code_kind("InternalServerError", "", Op::Read), Some(ErrorKind::Unavailable));
        assert_eq!(k("SomethingNew", ""), None);
    }

    #[test]
    fn refused_connections_were_never_sent() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(never_sent(&refused));
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(!never_sent(&reset));
    }
}
