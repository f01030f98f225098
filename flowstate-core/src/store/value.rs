//! Items, conditions and mutations: the vocabulary of the contract.
//!
//! It is deliberately small — just what the linked DAAL needs — so that every
//! backend can translate each variant into its native condition language.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One stored item: named attributes holding JSON values.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Item(BTreeMap<String, Value>);

impl Item {
    /// An empty item.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builder-style attribute set.
    pub fn with(mut self, attr: impl Into<String>, value: impl Into<Value>) -> Self {
        self.0.insert(attr.into(), value.into());
        self
    }

    /// The attribute's value, if present.
    pub fn get(&self, attr: &str) -> Option<&Value> {
        self.0.get(attr)
    }

    /// The attribute as an `i64`, if present and integral.
    pub fn get_i64(&self, attr: &str) -> Option<i64> {
        self.0.get(attr).and_then(Value::as_i64)
    }

    /// The attribute as a string, if present and a string.
    pub fn get_str(&self, attr: &str) -> Option<&str> {
        self.0.get(attr).and_then(Value::as_str)
    }

    /// One entry of a map attribute.
    pub fn entry(&self, map: &str, entry: &str) -> Option<&Value> {
        self.0.get(map).and_then(Value::as_object).and_then(|m| m.get(entry))
    }

    /// Set an attribute, returning the previous value.
    pub fn insert(&mut self, attr: impl Into<String>, value: impl Into<Value>) -> Option<Value> {
        self.0.insert(attr.into(), value.into())
    }

    /// Remove an attribute, returning its value.
    pub fn remove(&mut self, attr: &str) -> Option<Value> {
        self.0.remove(attr)
    }

    /// Mutable access to an attribute.
    pub fn get_mut(&mut self, attr: &str) -> Option<&mut Value> {
        self.0.get_mut(attr)
    }

    /// All attributes in name order.
    pub fn attrs(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.0.iter()
    }

    /// Number of attributes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the item has no attributes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Size of the item as the contract counts it: its compact JSON encoding.
    /// Backends compare this with [`Capabilities::max_item_bytes`](super::Capabilities).
    ///
    /// Counted while serializing, without building the encoding: every write
    /// checks its size and most backends then encode the item once more to
    /// store it, so the check should not allocate a copy.
    pub fn encoded_len(&self) -> usize {
        /// A writer that only counts bytes.
        struct Count(usize);
        impl std::io::Write for Count {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0 += buf.len();
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut count = Count(0);
        match serde_json::to_writer(&mut count, &self.0) {
            Ok(()) => count.0,
            Err(_) => usize::MAX,
        }
    }

    /// The compact JSON encoding (what the SQL backends store).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.0).unwrap_or_default()
    }

    /// Decode an item from its JSON encoding.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The attributes as a JSON object.
    pub fn into_json_object(self) -> serde_json::Map<String, Value> {
        self.0.into_iter().collect()
    }
}

impl FromIterator<(String, Value)> for Item {
    fn from_iter<T: IntoIterator<Item = (String, Value)>>(iter: T) -> Self {
        Self(iter.into_iter().collect())
    }
}

/// A path of object field names into a JSON value; empty = the value itself.
pub type Path = Vec<String>;

/// Comparison operators for [`Predicate::Compare`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CmpOp {
    /// Equal (numbers compare numerically).
    Eq,
    /// Not equal (false when the path is missing, like every comparison).
    Ne,
    /// Less than (numbers or strings).
    Lt,
    /// Less than or equal.
    Le,
    /// Greater than.
    Gt,
    /// Greater than or equal.
    Ge,
}

/// A user condition on a JSON value, portable to every backend's native
/// condition language (DynamoDB condition expressions, SQL JSON operators,
/// Cosmos filter predicates).
///
/// A comparison on a missing path, or between values of different JSON types
/// (other than `Eq`/`Ne`), is false — for every operator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Predicate {
    /// The path exists and is not null.
    Exists(Path),
    /// The path is absent or null.
    Missing(Path),
    /// Compare the value at a path with a constant.
    Compare { path: Path, op: CmpOp, operand: Value },
    /// All hold.
    And(Vec<Predicate>),
    /// At least one holds.
    Or(Vec<Predicate>),
    /// Negation.
    Not(Box<Predicate>),
}

impl Predicate {
    /// Start a comparison on a field of the value (`"a.b"` is one field name,
    /// not a path; use [`Predicate::at`] for nested fields).
    pub fn field(name: impl Into<String>) -> PathBuilder {
        PathBuilder(vec![name.into()])
    }

    /// Start a comparison on a nested path.
    pub fn at<I, S>(path: I) -> PathBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        PathBuilder(path.into_iter().map(Into::into).collect())
    }

    /// Start a comparison on the whole value.
    pub fn value() -> PathBuilder {
        PathBuilder(Vec::new())
    }

    /// Conjunction.
    pub fn and(self, other: Predicate) -> Predicate {
        match self {
            Predicate::And(mut all) => {
                all.push(other);
                Predicate::And(all)
            }
            p => Predicate::And(vec![p, other]),
        }
    }

    /// Disjunction.
    pub fn or(self, other: Predicate) -> Predicate {
        Predicate::Or(vec![self, other])
    }

    /// Negation.
    #[allow(clippy::should_implement_trait)]
    pub fn not(self) -> Predicate {
        Predicate::Not(Box::new(self))
    }
}

/// Builds a [`Predicate`] on one path: `Predicate::field("balance").ge(100)`.
#[derive(Clone, Debug)]
pub struct PathBuilder(Path);

impl PathBuilder {
    fn cmp(self, op: CmpOp, operand: impl Into<Value>) -> Predicate {
        Predicate::Compare { path: self.0, op, operand: operand.into() }
    }
    /// `== operand`
    pub fn eq(self, operand: impl Into<Value>) -> Predicate {
        self.cmp(CmpOp::Eq, operand)
    }
    /// `!= operand`
    pub fn ne(self, operand: impl Into<Value>) -> Predicate {
        self.cmp(CmpOp::Ne, operand)
    }
    /// `< operand`
    pub fn lt(self, operand: impl Into<Value>) -> Predicate {
        self.cmp(CmpOp::Lt, operand)
    }
    /// `<= operand`
    pub fn le(self, operand: impl Into<Value>) -> Predicate {
        self.cmp(CmpOp::Le, operand)
    }
    /// `> operand`
    pub fn gt(self, operand: impl Into<Value>) -> Predicate {
        self.cmp(CmpOp::Gt, operand)
    }
    /// `>= operand`
    pub fn ge(self, operand: impl Into<Value>) -> Predicate {
        self.cmp(CmpOp::Ge, operand)
    }
    /// The path exists and is not null.
    pub fn exists(self) -> Predicate {
        Predicate::Exists(self.0)
    }
    /// The path is absent or null.
    pub fn missing(self) -> Predicate {
        Predicate::Missing(self.0)
    }
}

/// One condition of a conditional write; a write's conditions are a conjunction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// The item exists.
    ItemExists,
    /// The item does not exist.
    ItemAbsent,
    /// The attribute is present (null counts as present).
    AttrExists(String),
    /// The attribute is absent (true on an absent item, like DynamoDB's `attribute_not_exists`).
    AttrAbsent(String),
    /// The attribute is present and equal to the value.
    AttrEquals(String, Value),
    /// The map attribute has this entry.
    EntryExists { map: String, entry: String },
    /// The map attribute is absent or lacks this entry.
    EntryAbsent { map: String, entry: String },
    /// The numeric attribute is below `bound` (an absent attribute counts as 0).
    Below { attr: String, bound: i64 },
    /// A user predicate on the attribute's value (absent attribute = JSON null).
    Value { attr: String, predicate: Predicate },
}

/// One mutation of an update; an update's mutations apply together.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mutation {
    /// Set (create or replace) an attribute.
    Set(String, Value),
    /// Remove an attribute (no-op if absent).
    Remove(String),
    /// Set an entry of a map attribute (the map is created if absent).
    SetEntry { map: String, entry: String, value: Value },
    /// Remove an entry of a map attribute (no-op if absent).
    RemoveEntry { map: String, entry: String },
    /// Add to a numeric attribute (absent counts as 0).
    Add(String, i64),
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn encoded_len_is_the_length_of_the_encoding() {
        for item in [
            Item::new(),
            Item::new().with("a", 1).with("b", "é\u{0}\"").with("c", json!({"x": [1.5, null, true]})),
            Item::new().with("big", "x".repeat(100_000)),
        ] {
            assert_eq!(item.encoded_len(), item.to_json().len());
        }
    }
}
