//! The contract's conditions and mutations as DynamoDB expressions.
//!
//! Every attribute name and every value goes through a placeholder
//! (`#n0`, `:v0`): user names may contain dots, `#`, `:` or anything else.
//!
//! Conditions translate exactly (see the table in ADR 0004). Mutations are
//! folded per attribute first, because DynamoDB evaluates all actions of an
//! `UpdateExpression` against the old item and refuses two actions on
//! overlapping paths, while the contract applies mutations in order:
//!
//! - a whole-attribute `Set`/`Remove` fixes the value: the mutations after it
//!   are applied here and one `SET #a = :final` (or `REMOVE #a`) is sent; the
//!   mutations before it only have to be valid on the current value, which
//!   becomes a type guard in the condition;
//! - only entry mutations: `SET #m.#e = :v` / `REMOVE #m.#e` per entry
//!   (the last one per entry wins), guarded by `attribute_type(#m, M)`;
//! - only `Add`s: one `ADD #a :sum`, guarded by "absent, or an `i64` whose
//!   every partial sum stays in range";
//! - entry mutations and `Add`s mixed: valid only on an absent attribute,
//!   whose result is known, so `SET` it under `attribute_not_exists`.
//!
//! Guards are conservative: when one fails, DynamoDB returns the old item
//! (`ReturnValuesOnConditionCheckFailure`) and the reference evaluator tells
//! the true outcome (see `lib.rs`). Two cases only reach the fallback there:
//! `SetEntry`/`RemoveEntry` on an absent map (DynamoDB cannot address
//! `#m.#e` under a missing `#m`) and the size bound being too coarse.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use aws_sdk_dynamodb::types::AttributeValue;
use flowstate_core::store::eval::{apply_mutations, predicate_holds};
use flowstate_core::store::{CmpOp, Condition, Item, Mutation, Predicate};
use serde_json::Value;

use crate::codec::{self, PK, SZ, VER, json_len, json_str_len, to_av};

/// Longest `i64` in JSON (`-9223372036854775808`).
const I64_JSON_LEN: usize = 20;

/// A boolean expression with constants folded away before rendering.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Cond {
    True,
    False,
    Leaf(String),
    And(Vec<Cond>),
    Or(Vec<Cond>),
    Not(Box<Cond>),
}

impl Cond {
    pub(crate) fn and(items: impl IntoIterator<Item = Cond>) -> Cond {
        let mut out = Vec::new();
        for c in items {
            match c {
                Cond::True => {}
                Cond::False => return Cond::False,
                Cond::And(inner) => out.extend(inner),
                c => out.push(c),
            }
        }
        match out.len() {
            0 => Cond::True,
            1 => out.pop().expect("one"),
            _ => Cond::And(out),
        }
    }

    pub(crate) fn or(items: impl IntoIterator<Item = Cond>) -> Cond {
        let mut out = Vec::new();
        for c in items {
            match c {
                Cond::False => {}
                Cond::True => return Cond::True,
                Cond::Or(inner) => out.extend(inner),
                c => out.push(c),
            }
        }
        match out.len() {
            0 => Cond::False,
            1 => out.pop().expect("one"),
            _ => Cond::Or(out),
        }
    }

    #[allow(clippy::should_implement_trait)]
    pub(crate) fn not(c: Cond) -> Cond {
        match c {
            Cond::True => Cond::False,
            Cond::False => Cond::True,
            Cond::Not(inner) => *inner,
            c => Cond::Not(Box::new(c)),
        }
    }

    fn constant(b: bool) -> Cond {
        if b { Cond::True } else { Cond::False }
    }

    /// The expression text; constants must have been folded away (a
    /// top-level `True`/`False` is the caller's business).
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        self.render_into(&mut out);
        out
    }

    fn render_into(&self, out: &mut String) {
        match self {
            // Only reachable inside a Not/And/Or that folding left intact, which
            // cannot happen; render something valid and false/true anyway.
            Cond::True => out.push_str("attribute_exists(#pk)"),
            Cond::False => out.push_str("attribute_not_exists(#pk)"),
            Cond::Leaf(s) => out.push_str(s),
            Cond::And(items) | Cond::Or(items) => {
                let op = if matches!(self, Cond::And(_)) { " AND " } else { " OR " };
                out.push('(');
                for (i, c) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(op);
                    }
                    c.render_into(out);
                }
                out.push(')');
            }
            Cond::Not(c) => {
                out.push_str("(NOT ");
                c.render_into(out);
                out.push(')');
            }
        }
    }
}

/// One step of a document path below a top-level attribute.
#[derive(Clone, Debug)]
enum Step<'a> {
    Field(&'a str),
    Index(usize),
}

/// Placeholders of one request.
#[derive(Debug, Default)]
pub(crate) struct Expr {
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Expr {
    /// `#nK` for a raw DynamoDB attribute name.
    pub(crate) fn name(&mut self, raw: &str) -> String {
        let next = self.names.len();
        self.names.entry(raw.to_owned()).or_insert_with(|| format!("#n{next}")).clone()
    }

    /// `:vK` for a value.
    pub(crate) fn value(&mut self, v: AttributeValue) -> String {
        let p = format!(":v{}", self.values.len());
        self.values.insert(p.clone(), v);
        p
    }

    /// `:vK` for a JSON value; values DynamoDB cannot hold are an error.
    fn json(&mut self, v: &Value) -> Result<String, String> {
        Ok(self.value(to_av(v)?))
    }

    fn num(&mut self, n: impl ToString) -> String {
        self.value(AttributeValue::N(n.to_string()))
    }

    fn type_name(&mut self, t: &str) -> String {
        self.value(AttributeValue::S(t.to_owned()))
    }

    /// The placeholder path of user attribute `attr`.
    fn attr(&mut self, attr: &str) -> String {
        self.name(&codec::user_attr(attr))
    }

    fn tag(&mut self, attr: &str) -> String {
        self.name(&codec::tag_attr(attr))
    }

    fn path(&mut self, attr: &str, steps: &[Step<'_>]) -> String {
        let mut p = self.attr(attr);
        for s in steps {
            match s {
                Step::Field(f) => {
                    let n = self.name(f);
                    p.push('.');
                    p.push_str(&n);
                }
                Step::Index(i) => {
                    let _ = write!(p, "[{i}]");
                }
            }
        }
        p
    }

    /// `(names, values)` used by `expressions` (`None` when empty). Constant
    /// folding can drop sub-expressions whose placeholders were already
    /// registered, and DynamoDB rejects unused placeholders and empty maps.
    #[allow(clippy::type_complexity)]
    pub(crate) fn into_parts(
        self,
        expressions: &[&str],
    ) -> (Option<HashMap<String, String>>, Option<HashMap<String, AttributeValue>>) {
        let used = placeholders(expressions);
        let names: HashMap<String, String> =
            self.names.into_iter().filter(|(_, p)| used.contains(p.as_str())).map(|(raw, p)| (p, raw)).collect();
        let values: HashMap<String, AttributeValue> =
            self.values.into_iter().filter(|(p, _)| used.contains(p.as_str())).collect();
        ((!names.is_empty()).then_some(names), (!values.is_empty()).then_some(values))
    }
}

/// Every `#nK` and `:vK` token in `expressions`.
fn placeholders(expressions: &[&str]) -> std::collections::HashSet<String> {
    let mut out = std::collections::HashSet::new();
    for text in expressions {
        let bytes = text.as_bytes();
        let mut i = 0;
        while i + 1 < bytes.len() {
            if matches!((bytes[i], bytes[i + 1]), (b'#', b'n') | (b':', b'v')) {
                let start = i;
                i += 2;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
                out.insert(text[start..i].to_owned());
            } else {
                i += 1;
            }
        }
    }
    out
}

fn exists(p: &str) -> Cond {
    Cond::Leaf(format!("attribute_exists({p})"))
}

fn not_exists(p: &str) -> Cond {
    Cond::Leaf(format!("attribute_not_exists({p})"))
}

fn has_type(e: &mut Expr, p: &str, t: &str) -> Cond {
    let v = e.type_name(t);
    Cond::Leaf(format!("attribute_type({p}, {v})"))
}

/// `attribute_exists(#pk)`: the item exists.
pub(crate) fn item_exists(e: &mut Expr) -> Cond {
    exists(&e.name(PK))
}

/// `attribute_not_exists(#pk)`: the item is absent.
pub(crate) fn item_absent(e: &mut Expr) -> Cond {
    not_exists(&e.name(PK))
}

/// A condition that is false on every item and still makes DynamoDB return
/// the item (a probe inside a transaction).
pub(crate) fn always_false(e: &mut Expr) -> String {
    let pk = e.name(PK);
    format!("(attribute_exists({pk}) AND attribute_not_exists({pk}))")
}

/// The top-level attribute `attr` is a number that is an `i64`.
fn is_i64(e: &mut Expr, attr: &str) -> Cond {
    let a = e.attr(attr);
    let tag = e.tag(attr);
    Cond::and([has_type(e, &a, "N"), not_exists(&tag)])
}

/// The value at document path `p` equals `v` under the contract's JSON
/// equality (numbers by value). `leaf` builds sub-paths for the type guards.
fn equals(e: &mut Expr, attr: &str, steps: &[Step<'_>], v: &Value) -> Result<Cond, String> {
    let p = e.path(attr, steps);
    Ok(match v {
        Value::Null => has_type(e, &p, "NULL"),
        Value::Number(_) => {
            let val = e.json(v)?;
            Cond::and([has_type(e, &p, "N"), Cond::Leaf(format!("{p} = {val}"))])
        }
        Value::Bool(_) => {
            let val = e.json(v)?;
            Cond::and([has_type(e, &p, "BOOL"), Cond::Leaf(format!("{p} = {val}"))])
        }
        Value::String(_) => {
            let val = e.json(v)?;
            Cond::Leaf(format!("{p} = {val}"))
        }
        Value::Array(_) | Value::Object(_) => {
            // DynamoDB compares lists and maps deeply and by type. moto
            // compares them as Python values, where `true == 1`: guard every
            // boolean and number leaf of the operand by type, which is
            // redundant on DynamoDB and exact on moto.
            let val = e.json(v)?;
            let mut all = vec![Cond::Leaf(format!("{p} = {val}"))];
            let mut steps = steps.to_vec();
            leaf_guards(e, attr, &mut steps, v, &mut all);
            Cond::and(all)
        }
    })
}

fn leaf_guards<'a>(e: &mut Expr, attr: &str, steps: &mut Vec<Step<'a>>, v: &'a Value, out: &mut Vec<Cond>) {
    match v {
        Value::Bool(_) | Value::Number(_) => {
            let p = e.path(attr, steps);
            let t = if v.is_boolean() { "BOOL" } else { "N" };
            out.push(has_type(e, &p, t));
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                steps.push(Step::Index(i));
                leaf_guards(e, attr, steps, item, out);
                steps.pop();
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                steps.push(Step::Field(k));
                leaf_guards(e, attr, steps, item, out);
                steps.pop();
            }
        }
        Value::Null | Value::String(_) => {}
    }
}

/// `p <op> v` for the ordering operators: numbers with numbers, strings with
/// strings (DynamoDB compares strings by UTF-8 bytes); anything else is false.
/// The type guard comes first: moto (not DynamoDB) fails with a 500 when
/// asked to order a string against a number.
fn ordered(e: &mut Expr, attr: &str, steps: &[Step<'_>], op: CmpOp, v: &Value) -> Result<Cond, String> {
    let t = match v {
        Value::Number(_) => "N",
        Value::String(_) => "S",
        _ => return Ok(Cond::False),
    };
    let p = e.path(attr, steps);
    let val = e.json(v)?;
    let sym = match op {
        CmpOp::Lt => "<",
        CmpOp::Le => "<=",
        CmpOp::Gt => ">",
        CmpOp::Ge => ">=",
        CmpOp::Eq | CmpOp::Ne => unreachable!("equality is not an ordering"),
    };
    Ok(Cond::and([has_type(e, &p, t), Cond::Leaf(format!("{p} {sym} {val}"))]))
}

/// The path holds a value that is not null.
fn present_not_null(e: &mut Expr, attr: &str, steps: &[Step<'_>]) -> Cond {
    let p = e.path(attr, steps);
    Cond::and([exists(&p), Cond::not(has_type(e, &p, "NULL"))])
}

/// A user predicate on attribute `attr`'s value (an absent attribute is JSON null).
fn predicate(e: &mut Expr, attr: &str, pred: &Predicate) -> Result<Cond, String> {
    Ok(match pred {
        Predicate::Exists(path) => present_not_null(e, attr, &steps(path)),
        Predicate::Missing(path) => Cond::not(present_not_null(e, attr, &steps(path))),
        Predicate::Compare { path, op, operand } => {
            let steps = steps(path);
            let p = e.path(attr, &steps);
            let on_value = match op {
                CmpOp::Eq => equals(e, attr, &steps, operand)?,
                CmpOp::Ne => Cond::not(equals(e, attr, &steps, operand)?),
                _ => ordered(e, attr, &steps, *op, operand)?,
            };
            let present = Cond::and([exists(&p), on_value]);
            if path.is_empty() {
                // An absent attribute is null: the comparison with null is a constant.
                let on_null = predicate_holds(pred, &Value::Null);
                Cond::or([present, Cond::and([not_exists(&p), Cond::constant(on_null)])])
            } else {
                present
            }
        }
        Predicate::And(all) => Cond::and(all.iter().map(|p| predicate(e, attr, p)).collect::<Result<Vec<_>, _>>()?),
        Predicate::Or(any) => Cond::or(any.iter().map(|p| predicate(e, attr, p)).collect::<Result<Vec<_>, _>>()?),
        Predicate::Not(p) => Cond::not(predicate(e, attr, p)?),
    })
}

fn steps(path: &[String]) -> Vec<Step<'_>> {
    path.iter().map(|f| Step::Field(f)).collect()
}

/// One contract condition. Exact on present and absent items alike (delete
/// evaluates conditions on an absent item).
pub(crate) fn condition(e: &mut Expr, c: &Condition) -> Result<Cond, String> {
    Ok(match c {
        Condition::ItemExists => item_exists(e),
        Condition::ItemAbsent => item_absent(e),
        Condition::AttrExists(a) => exists(&e.attr(a)),
        Condition::AttrAbsent(a) => not_exists(&e.attr(a)),
        Condition::AttrEquals(a, v) => equals(e, a, &[], v)?,
        Condition::EntryExists { map, entry } => {
            let m = e.attr(map);
            let me = e.path(map, &[Step::Field(entry)]);
            Cond::and([has_type(e, &m, "M"), exists(&me)])
        }
        Condition::EntryAbsent { map, entry } => {
            let m = e.attr(map);
            let me = e.path(map, &[Step::Field(entry)]);
            Cond::or([Cond::not(has_type(e, &m, "M")), not_exists(&me)])
        }
        Condition::Below { attr, bound } => {
            let a = e.attr(attr);
            let k = e.num(bound);
            let number = Cond::and([is_i64(e, attr), Cond::Leaf(format!("{a} < {k}"))]);
            if *bound > 0 { Cond::or([not_exists(&a), number]) } else { number }
        }
        Condition::Value { attr, predicate: p } => predicate(e, attr, p)?,
    })
}

/// The conjunction of `conditions`.
pub(crate) fn conditions(e: &mut Expr, conditions: &[Condition]) -> Result<Cond, String> {
    Ok(Cond::and(conditions.iter().map(|c| condition(e, c)).collect::<Result<Vec<_>, _>>()?))
}

// ---------------------------------------------------------------- updates

/// What one update becomes.
#[derive(Debug)]
pub(crate) enum UpdatePlan {
    /// One `UpdateItem`.
    Native { condition: String, update: String, expr: Expr },
    /// No item can take this update (a type error that does not depend on
    /// the item, or a value DynamoDB cannot hold, in `unencodable`): read the
    /// item and let the reference evaluator name the error.
    Probe { unencodable: Option<String> },
}

/// What happens to one top-level attribute.
#[derive(Debug)]
enum Effect {
    /// Its final value (or absence) is known here.
    Known(Option<Value>),
    /// Entry mutations on the current map: entry → new value or removal.
    Entries(BTreeMap<String, Option<Value>>),
    /// One `ADD` of `sum` to the current integer.
    Add(i128),
}

/// Plan an update: the condition (`conditions` plus guards and the size
/// bound) and the update expression. `max_item_bytes` is the contract's limit.
pub(crate) fn plan_update(conditions_: &[Condition], mutations: &[Mutation], max_item_bytes: usize) -> UpdatePlan {
    match try_plan(conditions_, mutations, max_item_bytes) {
        Ok(Some(plan)) => plan,
        Ok(None) => UpdatePlan::Probe { unencodable: None },
        Err(msg) => UpdatePlan::Probe { unencodable: Some(msg) },
    }
}

fn touched(m: &Mutation) -> &str {
    match m {
        Mutation::Set(a, _) | Mutation::Remove(a) | Mutation::Add(a, _) => a,
        Mutation::SetEntry { map, .. } | Mutation::RemoveEntry { map, .. } => map,
    }
}

fn is_whole(m: &Mutation) -> bool {
    matches!(m, Mutation::Set(..) | Mutation::Remove(..))
}

/// Apply `muts` (all on `attr`) to a known value; `None` on a type error.
fn simulate(attr: &str, start: Option<Value>, muts: &[&Mutation]) -> Option<Option<Value>> {
    let mut item = Item::new();
    if let Some(v) = start {
        item.insert(attr, v);
    }
    let owned: Vec<Mutation> = muts.iter().map(|m| (*m).clone()).collect();
    apply_mutations(&mut item, &owned).ok()?;
    Some(item.remove(attr))
}

/// Guard under which the `Add` deltas are valid on the current value, or
/// `None` if no current value can take them.
fn add_guard(e: &mut Expr, attr: &str, deltas: &[i64]) -> Cond {
    let (mut sum, mut lo_sum, mut hi_sum) = (0i128, 0i128, 0i128);
    for d in deltas {
        sum += i128::from(*d);
        lo_sum = lo_sum.min(sum);
        hi_sum = hi_sum.max(sum);
    }
    let lo = (i128::from(i64::MIN) - lo_sum).max(i128::from(i64::MIN));
    let hi = (i128::from(i64::MAX) - hi_sum).min(i128::from(i64::MAX));
    if lo > hi {
        return Cond::False;
    }
    let a = e.attr(attr);
    let absent_ok = lo <= 0 && 0 <= hi;
    let bounded = if lo == i128::from(i64::MIN) && hi == i128::from(i64::MAX) {
        Cond::True
    } else {
        let (l, h) = (e.num(lo), e.num(hi));
        Cond::Leaf(format!("{a} BETWEEN {l} AND {h}"))
    };
    let number = Cond::and([is_i64(e, attr), bounded]);
    Cond::or([if absent_ok { not_exists(&a) } else { Cond::False }, number])
}

fn try_plan(
    conditions_: &[Condition],
    mutations: &[Mutation],
    max_item_bytes: usize,
) -> Result<Option<UpdatePlan>, String> {
    let mut e = Expr::default();
    let mut guards = vec![item_exists(&mut e), conditions(&mut e, conditions_)?];

    // Mutations grouped by attribute, in order of first touch.
    let mut order: Vec<&str> = Vec::new();
    let mut by_attr: HashMap<&str, Vec<&Mutation>> = HashMap::new();
    for m in mutations {
        let a = touched(m);
        by_attr.entry(a).or_insert_with(|| {
            order.push(a);
            Vec::new()
        });
        by_attr.get_mut(a).expect("inserted").push(m);
    }

    let mut effects: Vec<(&str, Effect)> = Vec::new();
    for attr in order {
        let muts = &by_attr[attr];
        let first_whole = muts.iter().position(|m| is_whole(m));
        let prefix = &muts[..first_whole.unwrap_or(muts.len())];
        let has_entries = prefix.iter().any(|m| matches!(m, Mutation::SetEntry { .. } | Mutation::RemoveEntry { .. }));
        let deltas: Vec<i64> =
            prefix.iter().filter_map(|m| if let Mutation::Add(_, d) = m { Some(*d) } else { None }).collect();
        match first_whole {
            Some(i) => {
                // The prefix must be valid on the current value; the rest is static.
                let guard = match (has_entries, !deltas.is_empty()) {
                    (false, false) => Cond::True,
                    (true, false) => {
                        let a = e.attr(attr);
                        let is_map = has_type(&mut e, &a, "M");
                        Cond::or([not_exists(&a), is_map])
                    }
                    (false, true) => add_guard(&mut e, attr, &deltas),
                    (true, true) => match simulate(attr, None, prefix) {
                        Some(_) => not_exists(&e.attr(attr)),
                        None => Cond::False,
                    },
                };
                guards.push(guard);
                let Some(final_value) = simulate(attr, None, &muts[i..]) else { return Ok(None) };
                effects.push((attr, Effect::Known(final_value)));
            }
            None if has_entries && deltas.is_empty() => {
                let a = e.attr(attr);
                guards.push(has_type(&mut e, &a, "M"));
                let mut entries = BTreeMap::new();
                for m in prefix {
                    match m {
                        Mutation::SetEntry { entry, value, .. } => entries.insert(entry.clone(), Some(value.clone())),
                        Mutation::RemoveEntry { entry, .. } => entries.insert(entry.clone(), None),
                        _ => unreachable!("entries only"),
                    };
                }
                effects.push((attr, Effect::Entries(entries)));
            }
            None if !has_entries => {
                guards.push(add_guard(&mut e, attr, &deltas));
                effects.push((attr, Effect::Add(deltas.iter().map(|d| i128::from(*d)).sum())));
            }
            None => match simulate(attr, None, prefix) {
                // Entries and adds mixed: only an absent attribute takes them.
                Some(result) => {
                    guards.push(not_exists(&e.attr(attr)));
                    effects.push((attr, Effect::Known(result)));
                }
                None => return Ok(None),
            },
        }
    }

    // The update expression and the growth bound of the encoded item.
    let (mut set, mut remove, mut add) = (Vec::new(), Vec::new(), Vec::new());
    let mut growth = 0usize;
    for (attr, effect) in &effects {
        let a = e.attr(attr);
        match effect {
            Effect::Known(Some(v)) => {
                let val = e.json(v)?;
                set.push(format!("{a} = {val}"));
                growth += json_str_len(attr) + 2 + json_len(v);
                let tag = e.tag(attr);
                if codec::needs_tag(v) {
                    let t = e.value(AttributeValue::Bool(true));
                    set.push(format!("{tag} = {t}"));
                } else {
                    remove.push(tag);
                }
            }
            Effect::Known(None) => {
                remove.push(a);
                remove.push(e.tag(attr));
            }
            Effect::Entries(entries) => {
                for (entry, v) in entries {
                    let p = e.path(attr, &[Step::Field(entry)]);
                    match v {
                        Some(v) => {
                            let val = e.json(v)?;
                            set.push(format!("{p} = {val}"));
                            growth += json_str_len(entry) + 2 + json_len(v);
                        }
                        None => remove.push(p),
                    }
                }
            }
            Effect::Add(sum) => {
                let d = e.num(sum);
                add.push(format!("{a} {d}"));
                growth += json_str_len(attr) + 2 + I64_JSON_LEN;
            }
        }
    }
    if growth > 0 {
        // The stored bound must leave room for the largest possible growth;
        // a refusal here is re-judged exactly on the returned item.
        let limit = i128::try_from(max_item_bytes).unwrap_or(i128::MAX) - i128::try_from(growth).unwrap_or(i128::MAX);
        let sz = e.name(SZ);
        let l = e.num(limit);
        guards.push(Cond::Leaf(format!("{sz} <= {l}")));
        let g = e.num(growth);
        add.push(format!("{sz} {g}"));
    }
    let ver = e.name(VER);
    let v = e.value(codec::new_version());
    set.push(format!("{ver} = {v}"));

    let condition = match Cond::and(guards) {
        Cond::False => return Ok(None),
        // item_exists is always among the guards, so True cannot happen.
        c => c.render(),
    };
    let mut update = format!("SET {}", set.join(", "));
    if !remove.is_empty() {
        let _ = write!(update, " REMOVE {}", remove.join(", "));
    }
    if !add.is_empty() {
        let _ = write!(update, " ADD {}", add.join(", "));
    }
    Ok(Some(UpdatePlan::Native { condition, update, expr: e }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn native(conditions: &[Condition], mutations: &[Mutation]) -> (String, String) {
        match plan_update(conditions, mutations, 1000) {
            UpdatePlan::Native { condition, update, .. } => (condition, update),
            p => panic!("expected a native plan, got {p:?}"),
        }
    }

    #[test]
    fn constants_fold() {
        assert_eq!(Cond::and([Cond::True, Cond::Leaf("a".into())]), Cond::Leaf("a".into()));
        assert_eq!(Cond::and([Cond::False, Cond::Leaf("a".into())]), Cond::False);
        assert_eq!(Cond::or([Cond::True, Cond::Leaf("a".into())]), Cond::True);
        assert_eq!(Cond::not(Cond::not(Cond::Leaf("a".into()))), Cond::Leaf("a".into()));
        assert_eq!(Cond::or(Vec::new()), Cond::False);
    }

    #[test]
    fn the_daal_write_is_one_native_update() {
        let (cond, update) = native(
            &[
                Condition::EntryAbsent { map: "log".into(), entry: "i-1".into() },
                Condition::AttrAbsent("next".into()),
                Condition::Below { attr: "n".into(), bound: 32 },
            ],
            &[
                Mutation::Set("v".into(), json!(5)),
                Mutation::SetEntry { map: "log".into(), entry: "i-1".into(), value: json!({"k": "w"}) },
                Mutation::Add("n".into(), 1),
            ],
        );
        assert!(cond.contains("attribute_exists(#n0)"), "{cond}");
        assert!(update.starts_with("SET ") && update.contains(" ADD "), "{update}");
    }

    #[test]
    fn overlapping_mutations_fold_into_one_action_per_attribute() {
        let (_, update) = native(
            &[],
            &[
                Mutation::Set("m".into(), json!({})),
                Mutation::SetEntry { map: "m".into(), entry: "e".into(), value: json!(1) },
                Mutation::Add("c".into(), 1),
                Mutation::Add("c".into(), 2),
            ],
        );
        // SET m (folded) and ver; REMOVE m's tag; ADD c (summed) and sz.
        assert_eq!(update.matches(" = ").count(), 2, "{update}");
        let add = update.split(" ADD ").nth(1).expect("an ADD clause");
        assert_eq!(add.split(", ").count(), 2, "{update}");
    }

    #[test]
    fn static_type_errors_probe() {
        for muts in [
            vec![Mutation::Set("a".into(), json!("x")), Mutation::Add("a".into(), 1)],
            vec![
                Mutation::Add("a".into(), i64::MAX),
                Mutation::Add("a".into(), i64::MAX),
                Mutation::Add("a".into(), i64::MAX),
            ],
            vec![
                Mutation::SetEntry { map: "a".into(), entry: "e".into(), value: json!(1) },
                Mutation::Add("a".into(), 1),
            ],
        ] {
            assert!(matches!(plan_update(&[], &muts, 1000), UpdatePlan::Probe { unencodable: None }), "{muts:?}");
        }
        let big = [Mutation::Set("a".into(), json!(1e300))];
        assert!(matches!(plan_update(&[], &big, 1000), UpdatePlan::Probe { unencodable: Some(_) }));
    }
}
