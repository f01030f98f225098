//! The one place where Cosmos DB SDK errors become [`StoreError`] kinds.

use azure_data_cosmos::CosmosError;
use flowstate_core::store::{ErrorKind, StoreError};

/// What kind of request failed: the same status means different things for a
/// read (nothing can have changed) and a write (it may have applied).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// Point read or query.
    Read,
    /// Create, replace, upsert or delete of an item.
    Write,
    /// Creating or resolving the database and containers.
    Setup,
}

/// Sub-statuses the SDK synthesizes for transport failures where the request
/// certainly did not leave the process (connection refused, DNS).
const NOT_SENT_SUBSTATUS: [u16; 2] = [20010, 20012];
/// The SDK's sub-status for a request body it could not encode (with 400).
const SERIALIZATION_REQUEST_BODY_INVALID: u16 = 20021;
/// The SDK's sub-status for a response body it could not decode (with 500).
const SERIALIZATION_RESPONSE_BODY_INVALID: u16 = 20020;

/// Map an SDK error to a store error, keeping it as the source.
///
/// | native | kind |
/// |---|---|
/// | `404` (no sub-status) | `NotFound` (`get` turns it into `None`, `delete` into `false`) |
/// | `409` Conflict, `412` Precondition Failed | `ConditionFailed` — unless an earlier attempt of the same operation may have applied (the SDK retries writes after ambiguous transport failures), then `Indeterminate` |
/// | `413` Request Entity Too Large | `TooLarge` |
/// | `429` after the SDK's own bounded retries, which wait the service's `x-ms-retry-after-ms` | `Throttled` |
/// | `449` Retry With | `Conflict` |
/// | `400` and client-side request errors | `InvalidInput` |
/// | `401`, `403` (auth, write-forbidden region), `404` with a sub-status (missing database/container, session not available), `410` | `Unavailable`: the service answered and applied nothing |
/// | `408`, `500`, `503`, transport failures, end-to-end timeouts | reads: `Unavailable`; writes: `Indeterminate` unless the request certainly was not sent (connection refused, DNS), then `Unavailable` |
/// | an undecodable response | `Corrupt` |
pub(crate) fn map_err(err: CosmosError, op: Op) -> StoreError {
    let status = err.status();
    let code = u16::from(status.status_code());
    let sub = status.sub_status().map(|s| s.value()).unwrap_or(0);
    let write = op == Op::Write;
    let unsure = if write && may_have_been_sent(&err) {
        (ErrorKind::Indeterminate, "no answer after a write was sent: it may have applied; re-read before acting")
    } else {
        (ErrorKind::Unavailable, "cosmos db could not be reached or did not answer; nothing was applied")
    };
    let (kind, what): (ErrorKind, &str) = match code {
        404 if sub == 0 => (ErrorKind::NotFound, "no such item"),
        409 | 412 if write && earlier_attempt_ambiguous(&err) => (
            ErrorKind::Indeterminate,
            "a retried write lost its precondition, possibly to its own first attempt; re-read before acting",
        ),
        409 => (ErrorKind::ConditionFailed, "the item already exists"),
        412 => (ErrorKind::ConditionFailed, "the item changed (ETag mismatch)"),
        413 => (ErrorKind::TooLarge, "cosmos db rejected the document as too large"),
        429 => (ErrorKind::Throttled, "cosmos db is throttling (429) after the SDK's bounded retries"),
        449 => (ErrorKind::Conflict, "cosmos db asked to retry (449)"),
        400 if sub == SERIALIZATION_REQUEST_BODY_INVALID => {
            (ErrorKind::InvalidInput, "the item could not be serialized")
        }
        400 => (ErrorKind::InvalidInput, "cosmos db rejected the request (400)"),
        401 | 403 => (ErrorKind::Unavailable, "cosmos db refused the request (authorization or region)"),
        404 | 410 => (ErrorKind::Unavailable, "cosmos db resource unavailable (database, container or partition)"),
        500 if sub == SERIALIZATION_RESPONSE_BODY_INVALID => {
            (ErrorKind::Corrupt, "cosmos db returned a response that does not decode")
        }
        408 | 500 | 503 => unsure,
        _ if op == Op::Setup => (ErrorKind::Unavailable, "cosmos db setup failed"),
        _ => unsure,
    };
    let message = format!("{what} (cosmos status {code}{})", if sub == 0 { String::new() } else { format!("/{sub}") });
    StoreError::new(kind, message).with_source(err)
}

/// Whether the failed request may have reached the service.
fn may_have_been_sent(err: &CosmosError) -> bool {
    let sub = err.status().sub_status().map(|s| s.value()).unwrap_or(0);
    if NOT_SENT_SUBSTATUS.contains(&sub) {
        return false;
    }
    match err.diagnostics() {
        Some(d) => {
            let requests = d.requests();
            requests.is_empty() || requests.iter().any(|r| r.request_sent().may_have_been_sent())
        }
        None => true,
    }
}

/// Whether an attempt before the last one of this operation may have been
/// applied without the SDK learning the outcome (a timeout, a transport
/// failure, or a 5xx after sending): the final 409/412 may then be our own
/// first attempt's doing.
fn earlier_attempt_ambiguous(err: &CosmosError) -> bool {
    let Some(d) = err.diagnostics() else {
        return false;
    };
    let requests = d.requests();
    let Some((_, earlier)) = requests.split_last() else {
        return false;
    };
    earlier.iter().any(|r| {
        let code = u16::from(r.status().status_code());
        r.request_sent().may_have_been_sent() && (r.timed_out() || matches!(code, 408 | 500 | 503))
    })
}
