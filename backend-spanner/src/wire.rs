//! Rows and keys as Spanner's wire values.
//!
//! The table is `(ns STRING, tbl STRING, pk BYTES, sk BYTES, body BYTES)`
//! with primary key `(ns, tbl, pk, sk)` (see `docs/adr/0006-spanner-layout.md`).
//! On the wire a `STRING` is a JSON-style string value and a `BYTES` value is
//! the base64 of its bytes, also carried as a string value.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use flowstate_core::store::{Item, Key, Namespace, StoreError, StoreResult, TableName};
use gcloud_gax::grpc::{Code, Status};
use gcloud_googleapis::spanner::v1::transaction_options::read_only::TimestampBound;
use gcloud_googleapis::spanner::v1::transaction_options::{Mode, ReadOnly, ReadWrite};
use gcloud_googleapis::spanner::v1::transaction_selector::Selector;
use gcloud_googleapis::spanner::v1::{ReadRequest, ResultSet, TransactionOptions, TransactionSelector};
use gcloud_spanner::apiv1::spanner_client::Client as GrpcClient;
use prost_types::value::Kind;
use prost_types::{ListValue, Value};

use crate::session::no_retry;

/// Every column, in the order mutations write them.
pub(crate) const ALL_COLUMNS: [&str; 5] = ["ns", "tbl", "pk", "sk", "body"];

/// The columns a read returns (the namespace is known to the caller).
pub(crate) const READ_COLUMNS: [&str; 4] = ["tbl", "pk", "sk", "body"];

/// The columns of a scan page.
pub(crate) const SCAN_COLUMNS: [&str; 2] = ["sk", "body"];

/// Column names as the requests take them.
pub(crate) fn columns(names: &[&str]) -> Vec<String> {
    names.iter().map(|c| (*c).to_owned()).collect()
}

/// A single-use, strongly consistent read-only transaction (one read sees
/// every commit acknowledged before it).
pub(crate) fn strong_single_use() -> Option<TransactionSelector> {
    let strong = TransactionOptions {
        mode: Some(Mode::ReadOnly(ReadOnly {
            return_read_timestamp: false,
            timestamp_bound: Some(TimestampBound::Strong(true)),
        })),
        ..TransactionOptions::default()
    };
    Some(TransactionSelector { selector: Some(Selector::SingleUse(strong)) })
}

/// Read-write transaction options (for an inline begin or a single-use commit).
pub(crate) fn read_write() -> TransactionOptions {
    TransactionOptions { mode: Some(Mode::ReadWrite(ReadWrite::default())), ..TransactionOptions::default() }
}

pub(crate) fn string(s: &str) -> Value {
    Value { kind: Some(Kind::StringValue(s.to_owned())) }
}

pub(crate) fn bytes(b: &[u8]) -> Value {
    Value { kind: Some(Kind::StringValue(STANDARD.encode(b))) }
}

/// The primary-key prefix `(ns, tbl, pk)` of a partition.
pub(crate) fn partition_prefix(ns: &Namespace, table: &TableName, partition: &[u8]) -> ListValue {
    ListValue { values: vec![string(ns.as_str()), string(table.as_str()), bytes(partition)] }
}

/// The full primary key `(ns, tbl, pk, sk)` of an item.
pub(crate) fn primary_key(ns: &Namespace, key: &Key) -> ListValue {
    let mut prefix = partition_prefix(ns, &key.table, &key.partition);
    prefix.values.push(bytes(&key.sort));
    prefix
}

/// A whole row, in [`ALL_COLUMNS`] order, holding `body` (the item's compact JSON).
pub(crate) fn row(ns: &Namespace, key: &Key, body: &[u8]) -> ListValue {
    let mut values = primary_key(ns, key);
    values.values.push(bytes(body));
    values
}

/// A `Read` as a stream (`StreamingRead`), gathered into whole rows: one
/// round trip like the unary `Read`, without its 10 MiB limit on the whole
/// reply (a page of large items would exceed it). Values the server splits
/// across messages (`chunked_value`) are joined. The first message's
/// metadata (the row type, and the transaction an inline begin started)
/// is kept.
pub(crate) async fn read(
    client: &mut GrpcClient,
    request: ReadRequest,
    route_to_leader: bool,
) -> Result<ResultSet, Status> {
    let columns = request.columns.len().max(1);
    let mut stream = client.streaming_read(request, !route_to_leader, Some(no_retry())).await?.into_inner();
    let mut metadata = None;
    let mut values: Vec<Value> = Vec::new();
    let mut continues = false;
    while let Some(part) = stream.message().await? {
        if metadata.is_none() {
            metadata = part.metadata;
        }
        let mut incoming = part.values.into_iter();
        if continues && let Some(rest) = incoming.next() {
            let last = values.last_mut().ok_or_else(|| Status::new(Code::Internal, "chunk continues nothing"))?;
            join_chunk(last, rest)?;
        }
        values.extend(incoming);
        continues = part.chunked_value;
    }
    if continues || !values.len().is_multiple_of(columns) {
        return Err(Status::new(Code::Internal, "spanner read stream ended inside a row"));
    }
    let mut rows = Vec::with_capacity(values.len() / columns);
    let mut values = values.into_iter();
    while values.len() > 0 {
        rows.push(ListValue { values: values.by_ref().take(columns).collect() });
    }
    Ok(ResultSet { metadata, rows, ..ResultSet::default() })
}

/// Append the continuation of a chunked value (strings concatenate; lists
/// join their last element with the continuation's first).
fn join_chunk(head: &mut Value, rest: Value) -> Result<(), Status> {
    match (&mut head.kind, rest.kind) {
        (Some(Kind::StringValue(a)), Some(Kind::StringValue(b))) => a.push_str(&b),
        (Some(Kind::ListValue(a)), Some(Kind::ListValue(b))) => {
            let mut more = b.values.into_iter();
            match (a.values.last_mut(), more.next()) {
                (Some(last), Some(first)) if matches!(first.kind, Some(Kind::StringValue(_) | Kind::ListValue(_))) => {
                    join_chunk(last, first)?
                }
                (_, Some(first)) => a.values.push(first),
                (_, None) => {}
            }
            a.values.extend(more);
        }
        _ => return Err(Status::new(Code::Internal, "spanner sent a chunk of a value that cannot be chunked")),
    }
    Ok(())
}

/// Column `i` of a returned row as a string.
pub(crate) fn column_string(row: &ListValue, i: usize) -> StoreResult<&str> {
    match row.values.get(i).and_then(|v| v.kind.as_ref()) {
        Some(Kind::StringValue(s)) => Ok(s),
        other => Err(StoreError::corrupt(format!("spanner row column {i}: expected a string, got {other:?}"))),
    }
}

/// Column `i` of a returned row as bytes (base64 on the wire).
pub(crate) fn column_bytes(row: &ListValue, i: usize) -> StoreResult<Vec<u8>> {
    let s = column_string(row, i)?;
    STANDARD.decode(s).map_err(|e| StoreError::corrupt(format!("spanner row column {i}: bad base64: {e}")))
}

/// A stored body back to an item; anything but a JSON object is `Corrupt`
/// (a foreign row, or one written by something else).
pub(crate) fn item(body: &[u8]) -> StoreResult<Item> {
    Item::from_json(body).map_err(|e| StoreError::corrupt(format!("spanner row body is not an item: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_values_are_joined() {
        let mut head = string("ab");
        join_chunk(&mut head, string("cd")).unwrap();
        assert_eq!(head, string("abcd"));
        let list = |vs: Vec<Value>| Value { kind: Some(Kind::ListValue(ListValue { values: vs })) };
        let mut head = list(vec![string("x"), string("ab")]);
        join_chunk(&mut head, list(vec![string("cd"), string("y")])).unwrap();
        assert_eq!(head, list(vec![string("x"), string("abcd"), string("y")]));
        let number = Value { kind: Some(Kind::NumberValue(1.0)) };
        assert!(join_chunk(&mut number.clone(), number).is_err());
    }

    #[test]
    fn bytes_round_trip_through_base64_and_bad_rows_are_corrupt() {
        let key = Key::new(TableName::new("daal").unwrap(), vec![0u8, 255, b'/'], Vec::new());
        let ns = Namespace::new("ns").unwrap();
        let r = row(&ns, &key, br#"{"a":1}"#);
        assert_eq!(column_string(&r, 0).unwrap(), "ns");
        assert_eq!(column_bytes(&r, 2).unwrap(), vec![0u8, 255, b'/']);
        assert_eq!(column_bytes(&r, 3).unwrap(), Vec::<u8>::new());
        assert_eq!(item(&column_bytes(&r, 4).unwrap()).unwrap().get_i64("a"), Some(1));
        assert!(column_bytes(&r, 9).unwrap_err().kind() == flowstate_core::store::ErrorKind::Corrupt);
        assert!(item(b"[1]").unwrap_err().kind() == flowstate_core::store::ErrorKind::Corrupt);
    }
}
