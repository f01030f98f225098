//! Keys and documents: how a contract item is laid out in Cosmos DB.
//!
//! - **Partition key** (container path `/pk`): `"{table}.{hex(partition)}"`.
//!   Table names are validated identifiers (`^[a-z][a-z0-9_]*$`, no `.`), so the
//!   encoding is injective across tables.
//! - **Id**: `"k{hex(sort)}"`. Ids may not be empty and may not contain
//!   `/ \ ? #`; lowercase hex has none of them, and because every byte becomes
//!   exactly two characters of `[0-9a-f]` (ASCII, so UTF-8 and UTF-16 order
//!   agree), string order of ids is byte order of sort keys, a shorter prefix
//!   first. The `k` keeps the empty sort key a valid id.
//! - **Body**: `{"id": …, "pk": …, "v": {…item attributes…}}`. The item is
//!   nested so that user attribute names (`id`, `pk`, `_etag`, `_ts`, …) can
//!   never collide with the document's own or the service's system properties.

use flowstate_core::store::{Item, Key, StoreError, StoreResult, TableName};
use serde_json::{Map, Value};

/// Cosmos DB's limit on an id, in bytes.
const MAX_ID_BYTES: usize = 1023;
/// Cosmos DB's limit on a (hash v2) partition key value, in bytes.
const MAX_PK_BYTES: usize = 2048;

/// Longest sort key that fits an id.
pub(crate) const MAX_SORT_BYTES: usize = (MAX_ID_BYTES - 1) / 2;

/// Property of the document holding the item.
pub(crate) const BODY: &str = "v";

/// The partition-key value of `partition` in `table`.
pub(crate) fn partition_key(table: &TableName, partition: &[u8]) -> StoreResult<String> {
    let pk = format!("{table}.{}", hex(partition));
    if pk.len() > MAX_PK_BYTES {
        return Err(StoreError::invalid(format!(
            "partition key of {} bytes is too long for Cosmos DB (at most {} bytes with table {table})",
            partition.len(),
            (MAX_PK_BYTES - table.as_str().len() - 1) / 2
        )));
    }
    Ok(pk)
}

/// The document id of sort key `sort`.
pub(crate) fn id(sort: &[u8]) -> StoreResult<String> {
    if sort.len() > MAX_SORT_BYTES {
        return Err(StoreError::invalid(format!(
            "sort key of {} bytes is too long for a Cosmos DB id (at most {MAX_SORT_BYTES} bytes)",
            sort.len()
        )));
    }
    Ok(format!("k{}", hex(sort)))
}

/// The sort key encoded in a document id.
pub(crate) fn sort_of_id(id: &str) -> StoreResult<Vec<u8>> {
    let hexed =
        id.strip_prefix('k').ok_or_else(|| StoreError::corrupt(format!("document id {id:?} is not Flowstate's")))?;
    unhex(hexed).ok_or_else(|| StoreError::corrupt(format!("document id {id:?} is not Flowstate's")))
}

/// Both parts of a key.
pub(crate) fn key_parts(key: &Key) -> StoreResult<(String, String)> {
    Ok((partition_key(&key.table, &key.partition)?, id(&key.sort)?))
}

/// The document stored for `item`.
pub(crate) fn document(pk: &str, id: &str, item: &Item) -> Value {
    let mut doc = Map::with_capacity(3);
    doc.insert("id".to_owned(), Value::String(id.to_owned()));
    doc.insert("pk".to_owned(), Value::String(pk.to_owned()));
    doc.insert(BODY.to_owned(), Value::Object(item.clone().into_json_object()));
    Value::Object(doc)
}

/// The item inside a stored document (or a query row `{id, v, …}`).
pub(crate) fn item_of(doc: Value) -> StoreResult<Item> {
    match doc {
        Value::Object(mut map) => match map.remove(BODY) {
            Some(Value::Object(body)) => Ok(body.into_iter().collect()),
            _ => Err(StoreError::corrupt("stored document has no item object (not written by Flowstate)")),
        },
        _ => Err(StoreError::corrupt("stored document is not a JSON object")),
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    s.as_bytes().chunks(2).map(|p| Some(digit(p[0])? << 4 | digit(p[1])?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_like_their_sort_keys() {
        let mut keys: Vec<Vec<u8>> = vec![
            vec![],
            vec![0],
            vec![0, 0],
            vec![0, 255],
            vec![1],
            vec![15],
            vec![16],
            vec![127],
            vec![128],
            vec![255],
        ];
        keys.push(b"a".to_vec());
        keys.push(b"a\x00".to_vec());
        keys.push("é".as_bytes().to_vec());
        let mut by_bytes = keys.clone();
        by_bytes.sort();
        let mut by_id = keys.clone();
        by_id.sort_by_key(|k| id(k).unwrap());
        assert_eq!(by_bytes, by_id);
        // UTF-16 code-unit order (what a JavaScript server compares) agrees too.
        by_id.sort_by_key(|k| id(k).unwrap().encode_utf16().collect::<Vec<_>>());
        assert_eq!(by_bytes, by_id);
        for k in keys {
            let i = id(&k).unwrap();
            assert!(!i.contains(['/', '\\', '?', '#']));
            assert_eq!(sort_of_id(&i).unwrap(), k);
        }
    }

    #[test]
    fn limits_are_invalid_input() {
        assert!(id(&[7; MAX_SORT_BYTES]).unwrap().len() <= MAX_ID_BYTES);
        assert!(id(&[7; MAX_SORT_BYTES + 1]).is_err());
        let t = TableName::new("t").unwrap();
        assert!(partition_key(&t, &[1; 1023]).is_ok());
        assert!(partition_key(&t, &[1; 1024]).is_err());
        assert!(sort_of_id("x00").is_err() && sort_of_id("k0").is_err() && sort_of_id("kzz").is_err());
    }

    #[test]
    fn documents_nest_the_item() {
        let item = Item::new().with("id", "user id").with("pk", 1).with("_etag", true);
        let doc = document("t.00", "k01", &item);
        assert_eq!(doc["id"], "k01");
        assert_eq!(doc["pk"], "t.00");
        assert_eq!(item_of(doc).unwrap(), item);
        assert!(item_of(serde_json::json!({"id": "k"})).is_err());
    }
}
