//! Items and keys as DynamoDB attribute values.
//!
//! One DynamoDB table per namespace holds every logical table:
//!
//! | attribute | type | holds |
//! |---|---|---|
//! | `pk` | B | logical table name, `0x00`, partition key bytes (table names never contain NUL, so the encoding is injective) |
//! | `sk` | B | `0x00`, sort key bytes (key attributes cannot be empty; the contract allows an empty sort key) |
//! | `sz` | N | an upper bound of the item's [`Item::encoded_len`], exact after every whole-item write |
//! | `ver` | N | a random version, new on every write: the compare-and-swap token of the fallback paths |
//! | `_NAME` | native | user attribute `NAME`: JSON translated to `M`/`L`/`S`/`N`/`BOOL`/`NULL` |
//! | `~NAME` | BOOL | present iff `_NAME` is a number that is not an `i64` (a float, or an integer above `i64::MAX`) |
//!
//! The `~` tags let condition expressions tell integers from other numbers,
//! which DynamoDB cannot: the contract's `Below` is false and `Add` is
//! `InvalidInput` on `1.5`, while DynamoDB's `<` and `ADD` would accept it.

use std::collections::HashMap;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use flowstate_core::store::{Item, Key, StoreError, StoreResult, TableName};
use serde_json::{Number, Value};

/// Partition key attribute.
pub(crate) const PK: &str = "pk";
/// Sort key attribute.
pub(crate) const SK: &str = "sk";
/// Size bound attribute.
pub(crate) const SZ: &str = "sz";
/// Version attribute.
pub(crate) const VER: &str = "ver";
/// Prefix of user attributes.
pub(crate) const USER: char = '_';
/// Prefix of the "not an i64" tags of top-level numbers.
pub(crate) const TAG: char = '~';

/// Byte between the logical table name and the partition key in `pk`.
const PK_SEPARATOR: u8 = 0x00;
/// First byte of every `sk`.
const SK_PREFIX: u8 = 0x00;

/// The smallest and largest magnitudes DynamoDB numbers hold (38 digits of
/// precision, exponents from -130 to +125).
const MIN_MAGNITUDE: f64 = 1e-130;
const MAX_MAGNITUDE: f64 = 1e126;

/// A DynamoDB item as the SDK holds it.
pub(crate) type Attrs = HashMap<String, AttributeValue>;

/// The name of user attribute `name` in DynamoDB.
pub(crate) fn user_attr(name: &str) -> String {
    let mut s = String::with_capacity(name.len() + 1);
    s.push(USER);
    s.push_str(name);
    s
}

/// The name of the "not an i64" tag of user attribute `name`.
pub(crate) fn tag_attr(name: &str) -> String {
    let mut s = String::with_capacity(name.len() + 1);
    s.push(TAG);
    s.push_str(name);
    s
}

/// `pk` of a partition.
pub(crate) fn partition_key(table: &TableName, partition: &[u8]) -> AttributeValue {
    let mut pk = Vec::with_capacity(table.as_str().len() + 1 + partition.len());
    pk.extend_from_slice(table.as_str().as_bytes());
    pk.push(PK_SEPARATOR);
    pk.extend_from_slice(partition);
    AttributeValue::B(Blob::new(pk))
}

/// `sk` of a sort key.
pub(crate) fn sort_key(sort: &[u8]) -> AttributeValue {
    let mut sk = Vec::with_capacity(sort.len() + 1);
    sk.push(SK_PREFIX);
    sk.extend_from_slice(sort);
    AttributeValue::B(Blob::new(sk))
}

/// The sort key back from an `sk` value.
pub(crate) fn decode_sort_key(sk: Option<&AttributeValue>) -> StoreResult<Vec<u8>> {
    match sk {
        Some(AttributeValue::B(b)) if b.as_ref().first() == Some(&SK_PREFIX) => Ok(b.as_ref()[1..].to_vec()),
        _ => Err(StoreError::corrupt("a DynamoDB item has no Flowstate sort key (sk)")),
    }
}

/// The primary key attributes of `key`.
pub(crate) fn key_attrs(key: &Key) -> Attrs {
    HashMap::from([(PK.to_owned(), partition_key(&key.table, &key.partition)), (SK.to_owned(), sort_key(&key.sort))])
}

/// Whether the top-level value needs a `~` tag.
pub(crate) fn needs_tag(v: &Value) -> bool {
    matches!(v, Value::Number(n) if n.as_i64().is_none())
}

/// A number as DynamoDB's `N` string; floats in Rust's shortest round-trip
/// form (`1.5`, `2.0`, `1e-7`). Numbers DynamoDB cannot hold are an error.
pub(crate) fn number(n: &Number) -> Result<String, String> {
    if let Some(i) = n.as_i64() {
        return Ok(i.to_string());
    }
    if let Some(u) = n.as_u64() {
        return Ok(u.to_string());
    }
    let f = n.as_f64().ok_or_else(|| format!("number {n} is not representable"))?;
    let magnitude = f.abs();
    if f != 0.0 && !(MIN_MAGNITUDE..MAX_MAGNITUDE).contains(&magnitude) {
        return Err(format!("number {f:e} is outside DynamoDB's range (magnitudes from 1e-130 to below 1e126)"));
    }
    Ok(format!("{f:?}"))
}

/// A JSON value as a DynamoDB attribute value.
pub(crate) fn to_av(v: &Value) -> Result<AttributeValue, String> {
    Ok(match v {
        Value::Null => AttributeValue::Null(true),
        Value::Bool(b) => AttributeValue::Bool(*b),
        Value::Number(n) => AttributeValue::N(number(n)?),
        Value::String(s) => AttributeValue::S(s.clone()),
        Value::Array(a) => AttributeValue::L(a.iter().map(to_av).collect::<Result<_, _>>()?),
        Value::Object(o) => {
            AttributeValue::M(o.iter().map(|(k, v)| Ok((k.clone(), to_av(v)?))).collect::<Result<_, String>>()?)
        }
    })
}

/// A DynamoDB attribute value as JSON. `float` says the value is a tagged
/// top-level number: DynamoDB normalizes `2.0` to `2`, the tag restores the float.
pub(crate) fn from_av(av: &AttributeValue, float: bool) -> StoreResult<Value> {
    Ok(match av {
        AttributeValue::Null(_) => Value::Null,
        AttributeValue::Bool(b) => Value::Bool(*b),
        AttributeValue::N(s) => Value::Number(parse_number(s, float)?),
        AttributeValue::S(s) => Value::String(s.clone()),
        AttributeValue::L(l) => Value::Array(l.iter().map(|v| from_av(v, false)).collect::<StoreResult<_>>()?),
        AttributeValue::M(m) => {
            Value::Object(m.iter().map(|(k, v)| Ok((k.clone(), from_av(v, false)?))).collect::<StoreResult<_>>()?)
        }
        _ => {
            return Err(StoreError::corrupt(
                "a DynamoDB attribute holds a type Flowstate never writes (binary or set)",
            ));
        }
    })
}

fn parse_number(s: &str, float: bool) -> StoreResult<Number> {
    let corrupt = || StoreError::corrupt(format!("DynamoDB number {s:?} is not a JSON number"));
    let integral = !s.contains(['.', 'e', 'E']);
    if integral {
        if let Ok(i) = s.parse::<i64>() {
            if !float {
                return Ok(Number::from(i));
            }
        } else if let Ok(u) = s.parse::<u64>() {
            return Ok(Number::from(u));
        }
    }
    let f: f64 = s.parse().map_err(|_| corrupt())?;
    Number::from_f64(f).ok_or_else(corrupt)
}

/// A stored item: the user's item plus the hidden attributes.
#[derive(Clone, Debug)]
pub(crate) struct Stored {
    /// The user's item.
    pub item: Item,
    /// `ver`, as stored (`None` on items written by something else).
    pub ver: Option<AttributeValue>,
}

/// Decode a whole DynamoDB item.
pub(crate) fn decode(attrs: &Attrs) -> StoreResult<Stored> {
    let mut item = Item::new();
    for (name, av) in attrs {
        if let Some(user) = name.strip_prefix(USER) {
            let float = attrs.contains_key(&tag_attr(user));
            item.insert(user, from_av(av, float)?);
        } else if !(name.starts_with(TAG) || [PK, SK, SZ, VER].contains(&name.as_str())) {
            return Err(StoreError::corrupt(format!(
                "DynamoDB item has attribute {name:?}, which Flowstate never writes"
            )));
        }
    }
    Ok(Stored { item, ver: attrs.get(VER).cloned() })
}

/// Decode an optional DynamoDB item.
pub(crate) fn decode_opt(attrs: Option<&Attrs>) -> StoreResult<Option<Stored>> {
    attrs.map(decode).transpose()
}

/// A fresh random version.
pub(crate) fn new_version() -> AttributeValue {
    let v = uuid::Uuid::new_v4().as_u64_pair().0 >> 1;
    AttributeValue::N(v.to_string())
}

/// The whole DynamoDB item for `item` at `key`, with an exact `sz` and a new `ver`.
pub(crate) fn encode(key: &Key, item: &Item) -> Result<Attrs, String> {
    let mut attrs = key_attrs(key);
    for (name, v) in item.attrs() {
        attrs.insert(user_attr(name), to_av(v)?);
        if needs_tag(v) {
            attrs.insert(tag_attr(name), AttributeValue::Bool(true));
        }
    }
    attrs.insert(SZ.to_owned(), AttributeValue::N(item.encoded_len().to_string()));
    attrs.insert(VER.to_owned(), new_version());
    Ok(attrs)
}

/// Length of `s` as a JSON string (quotes and escapes included).
pub(crate) fn json_str_len(s: &str) -> usize {
    serde_json::to_string(s).map_or(usize::MAX / 4, |j| j.len())
}

/// Length of `v`'s compact JSON encoding.
pub(crate) fn json_len(v: &Value) -> usize {
    serde_json::to_vec(v).map_or(usize::MAX / 4, |j| j.len())
}

/// DynamoDB's own size of an item as encoded here, by the rules AWS
/// documents ("Item sizes and formats"): names and strings count their UTF-8
/// bytes, a number 1 byte per 2 significant digits plus 1, booleans and nulls
/// 1, a list or map 3 bytes plus 1 per element plus its elements. Used by the
/// tests that justify [`DEFAULT_MAX_ITEM_BYTES`](crate::DEFAULT_MAX_ITEM_BYTES).
pub fn dynamodb_item_size(attrs: &HashMap<String, AttributeValue>) -> usize {
    attrs.iter().map(|(name, v)| name.len() + av_size(v)).sum()
}

fn av_size(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => {
            let digits = n.split(['e', 'E']).next().unwrap_or("");
            let significant = digits.trim_start_matches('-').replace('.', "");
            let significant = significant.trim_start_matches('0').trim_end_matches('0').len().max(1);
            significant.div_ceil(2) + 1
        }
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::L(l) => 3 + l.iter().map(|e| 1 + av_size(e)).sum::<usize>(),
        AttributeValue::M(m) => 3 + m.iter().map(|(k, e)| 1 + k.len() + av_size(e)).sum::<usize>(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn round_trip(v: Value) {
        let av = to_av(&v).unwrap();
        assert_eq!(from_av(&av, needs_tag(&v)).unwrap(), v, "{av:?}");
    }

    #[test]
    fn json_values_round_trip() {
        for v in [
            json!(null),
            json!(true),
            json!(0),
            json!(-1),
            json!(i64::MAX),
            json!(i64::MIN),
            json!(u64::MAX),
            json!(1.5),
            json!(2.0),
            json!(-0.25),
            json!(1e-7),
            json!(1e100),
            json!(""),
            json!("ü🦀"),
            json!([]),
            json!({}),
            json!({"a": [1, "two", null, {"b": 2.5}], "": false}),
        ] {
            round_trip(v);
        }
    }

    #[test]
    fn tags_restore_floats_normalized_by_dynamodb() {
        // DynamoDB returns 2.0 as "2": the tag keeps it a float.
        assert_eq!(from_av(&AttributeValue::N("2".into()), true).unwrap(), json!(2.0));
        assert_eq!(from_av(&AttributeValue::N("2".into()), false).unwrap(), json!(2));
        assert!(needs_tag(&json!(1.5)) && needs_tag(&json!(u64::MAX)) && !needs_tag(&json!(-3)));
    }

    #[test]
    fn out_of_range_numbers_are_refused() {
        assert!(to_av(&json!(1e300)).is_err());
        assert!(to_av(&json!(1e-200)).is_err());
        assert!(to_av(&json!(0.0)).is_ok());
    }

    #[test]
    fn keys_are_injective_and_ordered() {
        let t = |s: &str| TableName::new(s.to_owned()).unwrap();
        assert_ne!(partition_key(&t("a"), b"b\x00c"), partition_key(&t("a_b"), b"c"));
        assert_ne!(partition_key(&t("a"), b""), partition_key(&t("a"), b"\x00"));
        let sk = |s: &[u8]| match sort_key(s) {
            AttributeValue::B(b) => b.into_inner(),
            _ => unreachable!(),
        };
        assert!(sk(b"") < sk(b"\x00") && sk(b"\x00") < sk(b"\x00\x00") && sk(b"a") < sk(b"\xff"));
        assert_eq!(decode_sort_key(Some(&sort_key(b"\xffz"))).unwrap(), b"\xffz");
    }

    #[test]
    fn items_round_trip_through_encode_and_decode() {
        let key = Key::new(TableName::new("t").unwrap(), "p", "");
        let item = Item::new().with("n", 1).with("f", 2.0).with("pk", "user pk").with("~x", json!({"y": [1]}));
        let attrs = encode(&key, &item).unwrap();
        assert!(attrs.contains_key("~f") && !attrs.contains_key("~n"));
        let stored = decode(&attrs).unwrap();
        assert_eq!(stored.item, item);
        assert!(stored.ver.is_some());
    }

    /// The worst shapes for DynamoDB's size per JSON byte, built to exactly
    /// the default limit, stay under DynamoDB's 400 KB with their keys.
    #[test]
    fn default_limit_fits_dynamodb_for_the_densest_shapes() {
        let max = crate::DEFAULT_MAX_ITEM_BYTES;
        let fill = |unit: Value| {
            // A list of `unit`s as long as fits, padded to exactly `max` with a string.
            let base = Item::new().with("l", json!([])).with("p", "");
            let per = json_len(&unit) + 1;
            let n = (max - base.encoded_len()) / per;
            let item = Item::new().with("l", Value::Array(vec![unit; n]));
            let pad = max - item.clone().with("p", "").encoded_len();
            let item = item.with("p", "x".repeat(pad));
            assert_eq!(item.encoded_len(), max);
            item
        };
        let long_key = Key::new(TableName::new("a".repeat(40)).unwrap(), vec![0xffu8; 2048 - 41], vec![7u8; 1023]);
        for unit in [json!(1), json!(-1), json!(true), json!(null), json!([]), json!({}), json!(""), json!({"": 0})] {
            let item = fill(unit.clone());
            let attrs = encode(&long_key, &item).unwrap();
            let size = dynamodb_item_size(&attrs);
            assert!(size < 400 * 1024, "a list of {unit}: {size} DynamoDB bytes");
        }
    }
}
