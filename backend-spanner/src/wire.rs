//! Rows and keys as Spanner's wire values.
//!
//! The table is `(ns STRING, tbl STRING, pk BYTES, sk BYTES, body BYTES)`
//! with primary key `(ns, tbl, pk, sk)` (see `docs/adr/0006-spanner-layout.md`).
//! On the wire a `STRING` is a JSON-style string value and a `BYTES` value is
//! the base64 of its bytes, also carried as a string value.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use flowstate_core::store::{Item, Key, Namespace, StoreError, StoreResult, TableName};
use prost_types::value::Kind;
use prost_types::{ListValue, Value};

/// Every column, in the order mutations write them.
pub(crate) const ALL_COLUMNS: [&str; 5] = ["ns", "tbl", "pk", "sk", "body"];

/// The columns a read returns (the namespace is known to the caller).
pub(crate) const READ_COLUMNS: [&str; 4] = ["tbl", "pk", "sk", "body"];

/// The columns of a scan page.
pub(crate) const SCAN_COLUMNS: [&str; 2] = ["sk", "body"];

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
