//! The reference semantics of conditions, predicates and mutations.
//!
//! The memory and SQLite backends evaluate with these functions; backends that
//! translate into a native language must agree with them (the conformance
//! suite's model test compares every backend against this module). The engine
//! also uses [`predicate_holds`] to explain a failed user condition.

use std::cmp::Ordering;

use serde_json::Value;

use super::value::CmpOp;
use super::{Condition, Item, Mutation, Predicate, StoreError, StoreResult};

/// Whether every condition holds on `current` (`None`: the item is absent).
pub fn conditions_hold(conditions: &[Condition], current: Option<&Item>) -> bool {
    conditions.iter().all(|c| condition_holds(c, current))
}

/// Whether one condition holds on `current`.
pub fn condition_holds(condition: &Condition, current: Option<&Item>) -> bool {
    match (condition, current) {
        (Condition::ItemExists, item) => item.is_some(),
        (Condition::ItemAbsent, item) => item.is_none(),
        (Condition::EntryAbsent { .. }, None) => true,
        (Condition::AttrAbsent(_), None) => true,
        (Condition::Below { bound, .. }, None) => 0 < *bound,
        (Condition::Value { predicate, .. }, None) => predicate_holds(predicate, &Value::Null),
        (_, None) => false,
        (Condition::AttrExists(a), Some(item)) => item.get(a).is_some(),
        (Condition::AttrAbsent(a), Some(item)) => item.get(a).is_none(),
        (Condition::AttrEquals(a, v), Some(item)) => item.get(a).is_some_and(|x| json_eq(x, v)),
        (Condition::EntryExists { map, entry }, Some(item)) => item.entry(map, entry).is_some(),
        (Condition::EntryAbsent { map, entry }, Some(item)) => item.entry(map, entry).is_none(),
        (Condition::Below { attr, bound }, Some(item)) => match item.get(attr) {
            None => 0 < *bound,
            Some(v) => v.as_i64().is_some_and(|n| n < *bound),
        },
        (Condition::Value { attr, predicate }, Some(item)) => {
            predicate_holds(predicate, item.get(attr).unwrap_or(&Value::Null))
        }
    }
}

/// Whether a user predicate holds on a JSON value.
pub fn predicate_holds(predicate: &Predicate, value: &Value) -> bool {
    match predicate {
        Predicate::Exists(path) => lookup(value, path).is_some_and(|v| !v.is_null()),
        Predicate::Missing(path) => lookup(value, path).is_none_or(Value::is_null),
        Predicate::Compare { path, op, operand } => match lookup(value, path) {
            None => false,
            Some(v) => compare(v, *op, operand),
        },
        Predicate::And(all) => all.iter().all(|p| predicate_holds(p, value)),
        Predicate::Or(any) => any.iter().any(|p| predicate_holds(p, value)),
        Predicate::Not(p) => !predicate_holds(p, value),
    }
}

fn lookup<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut v = value;
    for field in path {
        v = v.as_object()?.get(field)?;
    }
    Some(v)
}

/// JSON equality where numbers compare by value (`1 == 1.0`).
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => num_cmp(a, b) == Some(Ordering::Equal),
        _ => a == b,
    }
}

fn num_cmp(a: &Value, b: &Value) -> Option<Ordering> {
    match (a.as_i64(), b.as_i64()) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

fn compare(v: &Value, op: CmpOp, operand: &Value) -> bool {
    match op {
        CmpOp::Eq => json_eq(v, operand),
        CmpOp::Ne => !json_eq(v, operand),
        _ => {
            let ord = match (v, operand) {
                (Value::Number(_), Value::Number(_)) => num_cmp(v, operand),
                (Value::String(a), Value::String(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
                _ => None,
            };
            match (ord, op) {
                (None, _) => false,
                (Some(o), CmpOp::Lt) => o == Ordering::Less,
                (Some(o), CmpOp::Le) => o != Ordering::Greater,
                (Some(o), CmpOp::Gt) => o == Ordering::Greater,
                (Some(o), CmpOp::Ge) => o != Ordering::Less,
                (Some(_), CmpOp::Eq | CmpOp::Ne) => unreachable!("handled above"),
            }
        }
    }
}

/// Check mutations for type errors against the item, without applying them.
pub fn check_mutations(item: &Item, mutations: &[Mutation]) -> StoreResult<()> {
    let mut copy = item.clone();
    apply_mutations(&mut copy, mutations)
}

/// Apply mutations in order. On error the item may be partly changed: callers
/// apply to a copy (as [`check_mutations`] does) or discard it.
pub fn apply_mutations(item: &mut Item, mutations: &[Mutation]) -> StoreResult<()> {
    for m in mutations {
        match m {
            Mutation::Set(attr, v) => {
                item.insert(attr.clone(), v.clone());
            }
            Mutation::Remove(attr) => {
                item.remove(attr);
            }
            Mutation::SetEntry { map, entry, value } => {
                let slot = match item.get_mut(map) {
                    Some(slot) => slot,
                    None => {
                        item.insert(map.clone(), Value::Object(Default::default()));
                        item.get_mut(map).expect("just inserted")
                    }
                };
                match slot {
                    Value::Object(m) => {
                        m.insert(entry.clone(), value.clone());
                    }
                    _ => return Err(StoreError::invalid(format!("attribute {map:?} is not a map"))),
                }
            }
            Mutation::RemoveEntry { map, entry } => match item.get_mut(map) {
                None => {}
                Some(Value::Object(m)) => {
                    m.remove(entry);
                }
                Some(_) => return Err(StoreError::invalid(format!("attribute {map:?} is not a map"))),
            },
            Mutation::Add(attr, delta) => {
                let current = match item.get(attr) {
                    None => 0,
                    Some(v) => v
                        .as_i64()
                        .ok_or_else(|| StoreError::invalid(format!("attribute {attr:?} is not an integer")))?,
                };
                let next = current
                    .checked_add(*delta)
                    .ok_or_else(|| StoreError::invalid(format!("attribute {attr:?} would overflow")))?;
                item.insert(attr.clone(), next);
            }
        }
    }
    Ok(())
}

/// The item a conditional update of `current` writes, or the error the
/// contract names, checked in this order: missing item (`NotFound`), a false
/// condition (`ConditionFailed` carrying `current`), a mutation type error
/// (`InvalidInput`), an oversize result (`TooLarge`). Backends that evaluate
/// client-side (SQLite, Spanner, the memory store, DynamoDB's judge of a
/// refusal) call this, so their answers are the reference's by construction.
pub fn updated(
    current: Option<&Item>,
    conditions: &[Condition],
    mutations: &[Mutation],
    max_bytes: usize,
) -> StoreResult<Item> {
    let Some(current) = current else {
        return Err(StoreError::new(super::ErrorKind::NotFound, "update of a missing item"));
    };
    if !conditions_hold(conditions, Some(current)) {
        return Err(StoreError::condition_failed(Some(current.clone())));
    }
    let mut next = current.clone();
    apply_mutations(&mut next, mutations)?;
    check_size(&next, max_bytes)?;
    Ok(next)
}

/// Fail with [`ErrorKind::TooLarge`](super::ErrorKind::TooLarge) if the item
/// is over `max_bytes`.
pub fn check_size(item: &Item, max_bytes: usize) -> StoreResult<()> {
    let len = item.encoded_len();
    if len > max_bytes {
        Err(StoreError::new(
            super::ErrorKind::TooLarge,
            format!("item of {len} bytes exceeds the store's limit of {max_bytes} bytes"),
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn predicates_follow_documented_semantics() {
        let v = json!({"balance": 10, "name": "bob", "nested": {"x": 1.5}});
        assert!(predicate_holds(&Predicate::field("balance").ge(10), &v));
        assert!(predicate_holds(&Predicate::field("balance").eq(10.0), &v));
        assert!(!predicate_holds(&Predicate::field("balance").lt(10), &v));
        assert!(predicate_holds(&Predicate::field("name").gt("alice"), &v));
        assert!(!predicate_holds(&Predicate::field("name").gt(1), &v));
        assert!(!predicate_holds(&Predicate::field("missing").ne(1), &v));
        assert!(predicate_holds(&Predicate::field("missing").missing(), &v));
        assert!(predicate_holds(&Predicate::at(["nested", "x"]).gt(1), &v));
        assert!(predicate_holds(&Predicate::value().exists(), &v));
        assert!(predicate_holds(&Predicate::value().missing(), &Value::Null));
        let both = Predicate::field("balance").gt(5).and(Predicate::field("name").eq("bob"));
        assert!(predicate_holds(&both, &v));
        assert!(!predicate_holds(&both.not(), &v));
    }

    #[test]
    fn conditions_on_absent_items() {
        assert!(condition_holds(&Condition::ItemAbsent, None));
        assert!(!condition_holds(&Condition::ItemExists, None));
        assert!(condition_holds(&Condition::EntryAbsent { map: "m".into(), entry: "e".into() }, None));
        assert!(!condition_holds(&Condition::AttrExists("a".into()), None));
        assert!(condition_holds(&Condition::AttrAbsent("a".into()), None));
    }

    #[test]
    fn mutations_apply_in_order_and_type_check() {
        let mut item = Item::new().with("n", 1).with("s", "x");
        apply_mutations(
            &mut item,
            &[
                Mutation::Add("n".into(), 2),
                Mutation::SetEntry { map: "log".into(), entry: "1:a".into(), value: json!(true) },
                Mutation::Remove("s".into()),
            ],
        )
        .unwrap();
        assert_eq!(item.get_i64("n"), Some(3));
        assert_eq!(item.entry("log", "1:a"), Some(&json!(true)));
        assert!(item.get("s").is_none());
        let err = check_mutations(&item, &[Mutation::Add("log".into(), 1)]).unwrap_err();
        assert_eq!(err.kind(), crate::store::ErrorKind::InvalidInput);
    }
}
