//! Translation of the contract's vocabulary into SQL over `jsonb`.
//!
//! Every statement is assembled from fixed fragments chosen by the *shape* of
//! the request (which condition and mutation variants, which operand types,
//! how long a path is); every name and value is a bound parameter (`$n`). No
//! user string ever becomes SQL text, and the only identifier in the text is
//! the validated, quoted schema name.
//!
//! Rules the translations keep (see `flowstate_core::store::eval`):
//! - Conditions and predicates are two-valued: every leaf is wrapped so that a
//!   missing path is `false`, never SQL `NULL` (which `NOT` would keep `NULL`).
//! - Casts that can raise (`::numeric`) sit only in a `CASE` branch guarded by
//!   `jsonb_typeof`, because `AND` operands may be evaluated in any order.
//! - Mutations never raise: a type error (`SetEntry` on a non-map, `Add` on a
//!   non-integer or past `i64`) yields SQL `NULL`, which every later mutation
//!   propagates, so the statement reports it and the backend answers
//!   `InvalidInput` after re-checking on the returned item.
//! - Numbers compare as the reference does: as integers when both sides are
//!   `i64`, otherwise as `f64` (`::float8`); strings compare by bytes
//!   (`COLLATE "C"`); `Eq` on objects and arrays compares the canonical `jsonb`
//!   text, so `{"a":1}` ≠ `{"a":1.0}` as with serde's equality.

use flowstate_core::store::{CmpOp, Condition, Mutation, Predicate, StoreError, StoreResult};
use serde_json::Value;
use sqlx::Arguments;
use sqlx::postgres::PgArguments;

use crate::codec::{encode_value, escape};

/// A statement under construction: SQL text plus its bound arguments.
pub(crate) struct Stmt {
    pub sql: String,
    pub args: PgArguments,
    next: usize,
    /// First parameter that must appear as `$n::` (the preset key is `$1`–`$4`).
    check_from: usize,
}

impl Stmt {
    /// A statement whose first four parameters are the key: `$1` namespace,
    /// `$2` table, `$3` partition, `$4` sort.
    pub fn with_key(ns: &str, table: &str, partition: &[u8], sort: &[u8]) -> StoreResult<Self> {
        let mut st = Self { sql: String::new(), args: PgArguments::default(), next: 1, check_from: 5 };
        st.bind(ns.to_owned())?;
        st.bind(table.to_owned())?;
        st.bind(partition.to_vec())?;
        st.bind(sort.to_vec())?;
        Ok(st)
    }

    /// A statement with no preset parameters (keys are bound with [`Stmt::key`]).
    pub fn empty() -> Self {
        Self { sql: String::new(), args: PgArguments::default(), next: 1, check_from: 1 }
    }

    /// Bind one key; returns `ns = $a::text AND tbl = $b::text AND pk = $c::bytea AND sk = $d::bytea`.
    pub fn key(&mut self, ns: &str, table: &str, partition: &[u8], sort: &[u8]) -> StoreResult<String> {
        let ns = self.bind(ns.to_owned())?;
        let tbl = self.bind(table.to_owned())?;
        let pk = self.bind(partition.to_vec())?;
        let sk = self.bind(sort.to_vec())?;
        Ok(format!("ns = ${ns}::text AND tbl = ${tbl}::text AND pk = ${pk}::bytea AND sk = ${sk}::bytea"))
    }

    /// Bind a key's four parts as a value list: `$a::text, $b::text, $c::bytea, $d::bytea`.
    pub fn key_values(&mut self, ns: &str, table: &str, partition: &[u8], sort: &[u8]) -> StoreResult<String> {
        let ns = self.bind(ns.to_owned())?;
        let tbl = self.bind(table.to_owned())?;
        let pk = self.bind(partition.to_vec())?;
        let sk = self.bind(sort.to_vec())?;
        Ok(format!("${ns}::text, ${tbl}::text, ${pk}::bytea, ${sk}::bytea"))
    }

    /// Bind an encoded item body: `$n::jsonb`.
    pub fn body(&mut self, encoded: String) -> StoreResult<String> {
        let n = self.bind(encoded)?;
        Ok(format!("${n}::jsonb"))
    }

    fn bind<T>(&mut self, value: T) -> StoreResult<usize>
    where
        T: for<'q> sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send,
    {
        self.args.add(value).map_err(|e| StoreError::invalid("cannot encode a parameter").with_source(e))?;
        let n = self.next;
        self.next += 1;
        Ok(n)
    }

    /// Every parameter past the key must appear in the text: PostgreSQL
    /// infers a prepared statement's parameter count from the text, and a
    /// bound but unreferenced parameter fails the `Bind`.
    pub fn all_params_referenced(&self) -> bool {
        (self.check_from..self.next).all(|n| self.sql.contains(&format!("${n}::")))
    }

    /// Bind a (escaped) name or string: `$n::text`.
    pub fn text(&mut self, s: &str) -> StoreResult<String> {
        let n = self.bind(escape(s).into_owned())?;
        Ok(format!("${n}::text"))
    }

    /// Bind a JSON value: `$n::jsonb`.
    pub fn json(&mut self, v: &Value) -> StoreResult<String> {
        let n = self.bind(encode_value(v))?;
        Ok(format!("${n}::jsonb"))
    }

    /// Bind an integer: `$n::int8`.
    pub fn int(&mut self, v: i64) -> StoreResult<String> {
        let n = self.bind(v)?;
        Ok(format!("${n}::int8"))
    }

    fn float(&mut self, v: f64) -> StoreResult<String> {
        let n = self.bind(v)?;
        Ok(format!("${n}::float8"))
    }

    /// The conjunction of `conditions` on the present item `body` (a `jsonb`
    /// SQL expression); `true` when empty.
    pub fn conditions(&mut self, conditions: &[Condition], body: &str) -> StoreResult<String> {
        if conditions.is_empty() {
            return Ok("true".to_owned());
        }
        let parts = conditions.iter().map(|c| self.condition(c, body)).collect::<StoreResult<Vec<_>>>()?;
        Ok(format!("({})", parts.join(" AND ")))
    }

    fn condition(&mut self, condition: &Condition, b: &str) -> StoreResult<String> {
        Ok(match condition {
            Condition::ItemExists => "true".to_owned(),
            Condition::ItemAbsent => "false".to_owned(),
            Condition::AttrExists(a) => format!("jsonb_exists({b}, {})", self.text(a)?),
            Condition::AttrAbsent(a) => format!("(NOT jsonb_exists({b}, {}))", self.text(a)?),
            Condition::AttrEquals(a, v) => {
                let l = format!("({b} -> {})", self.text(a)?);
                self.equals(&l, v)?
            }
            Condition::EntryExists { map, entry } => self.entry_exists(b, map, entry)?,
            Condition::EntryAbsent { map, entry } => format!("(NOT {})", self.entry_exists(b, map, entry)?),
            Condition::Below { attr, bound } => {
                let a = self.text(attr)?;
                let x = format!("({b} -> {a})");
                let k = self.int(*bound)?;
                let absent = if 0 < *bound { "true" } else { "false" };
                format!(
                    "(CASE WHEN NOT jsonb_exists({b}, {a}) THEN {absent} WHEN {} THEN {x}::numeric < {k} ELSE false END)",
                    is_i64(&x)
                )
            }
            Condition::Value { attr, predicate } => {
                // The attribute is bound on first use only: a constant
                // predicate (`Or([])`) must not leave an unreferenced parameter.
                let mut root = Root { body: b, attr, expr: None };
                self.predicate(predicate, &mut root)?
            }
        })
    }

    fn entry_exists(&mut self, b: &str, map: &str, entry: &str) -> StoreResult<String> {
        let m = format!("({b} -> {})", self.text(map)?);
        let e = self.text(entry)?;
        Ok(format!("(CASE WHEN jsonb_typeof({m}) = 'object' THEN jsonb_exists({m}, {e}) ELSE false END)"))
    }

    /// A user predicate on the JSON value `v` (never SQL NULL itself).
    fn predicate(&mut self, predicate: &Predicate, v: &mut Root<'_>) -> StoreResult<String> {
        Ok(match predicate {
            Predicate::Exists(path) => {
                let l = self.lookup(v, path)?;
                format!("coalesce(jsonb_typeof({l}) <> 'null', false)")
            }
            Predicate::Missing(path) => {
                let l = self.lookup(v, path)?;
                format!("(NOT coalesce(jsonb_typeof({l}) <> 'null', false))")
            }
            Predicate::Compare { op, operand, .. }
                if !matches!(op, CmpOp::Eq | CmpOp::Ne) && !matches!(operand, Value::Number(_) | Value::String(_)) =>
            {
                // Ordering other JSON types is false, as in the reference.
                "false".to_owned()
            }
            Predicate::Compare { path, op, operand } => {
                let l = self.lookup(v, path)?;
                self.compare(&l, *op, operand)?
            }
            Predicate::And(all) if all.is_empty() => "true".to_owned(),
            Predicate::Or(any) if any.is_empty() => "false".to_owned(),
            Predicate::And(all) => {
                let parts = all.iter().map(|p| self.predicate(p, v)).collect::<StoreResult<Vec<_>>>()?;
                format!("({})", parts.join(" AND "))
            }
            Predicate::Or(any) => {
                let parts = any.iter().map(|p| self.predicate(p, v)).collect::<StoreResult<Vec<_>>>()?;
                format!("({})", parts.join(" OR "))
            }
            Predicate::Not(p) => format!("(NOT {})", self.predicate(p, v)?),
        })
    }

    /// Object-field lookups only: `->` with a text key is NULL on arrays and
    /// scalars, as the reference's `as_object()?.get(field)`.
    fn lookup(&mut self, v: &mut Root<'_>, path: &[String]) -> StoreResult<String> {
        let mut expr = match &v.expr {
            Some(expr) => expr.clone(),
            None => {
                let expr = format!("coalesce({} -> {}, 'null'::jsonb)", v.body, self.text(v.attr)?);
                v.expr = Some(expr.clone());
                expr
            }
        };
        for field in path {
            expr = format!("({expr} -> {})", self.text(field)?);
        }
        Ok(expr)
    }

    /// `l` (a jsonb expression, SQL NULL when missing) compared with `operand`.
    fn compare(&mut self, l: &str, op: CmpOp, operand: &Value) -> StoreResult<String> {
        let sql_op = match op {
            CmpOp::Eq => return self.equals(l, operand),
            CmpOp::Ne => {
                let eq = self.equals(l, operand)?;
                return Ok(format!("({l} IS NOT NULL AND NOT {eq})"));
            }
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        };
        Ok(match operand {
            Value::Number(_) => {
                let cmp = self.numeric(l, sql_op, operand)?;
                format!("(CASE WHEN jsonb_typeof({l}) = 'number' THEN {cmp} ELSE false END)")
            }
            Value::String(s) => {
                let s = self.text(s)?;
                format!(
                    "(CASE WHEN jsonb_typeof({l}) = 'string' THEN ({l} #>> '{{}}') COLLATE \"C\" {sql_op} {s} ELSE false END)"
                )
            }
            _ => "false".to_owned(),
        })
    }

    /// JSON equality with numbers by value (never SQL NULL).
    fn equals(&mut self, l: &str, operand: &Value) -> StoreResult<String> {
        Ok(match operand {
            Value::Number(_) => {
                let cmp = self.numeric(l, "=", operand)?;
                format!("(CASE WHEN jsonb_typeof({l}) = 'number' THEN {cmp} ELSE false END)")
            }
            Value::Object(_) | Value::Array(_) => {
                let kind = if operand.is_object() { "object" } else { "array" };
                let v = self.json(operand)?;
                format!(
                    "(CASE WHEN jsonb_typeof({l}) = '{kind}' THEN {l}::text COLLATE \"C\" = ({v})::text ELSE false END)"
                )
            }
            _ => {
                let v = self.json(operand)?;
                format!("coalesce({l} = {v}, false)")
            }
        })
    }

    /// `l <op> operand` for a number `l`: integers when both are `i64`, else `f64`.
    fn numeric(&mut self, l: &str, sql_op: &str, operand: &Value) -> StoreResult<String> {
        let f = self.float(operand.as_f64().unwrap_or(f64::NAN))?;
        Ok(match operand.as_i64() {
            Some(n) => {
                let n = self.int(n)?;
                format!("(CASE WHEN {} THEN {l}::numeric {sql_op} {n} ELSE {l}::float8 {sql_op} {f} END)", is_i64(l))
            }
            None => format!("({l}::float8 {sql_op} {f})"),
        })
    }

    /// One mutation applied to `b` (SQL NULL in, SQL NULL out; NULL on a type error).
    pub fn mutation(&mut self, mutation: &Mutation, b: &str) -> StoreResult<String> {
        Ok(match mutation {
            Mutation::Set(a, v) => format!("({b} || jsonb_build_object({}, {}))", self.text(a)?, self.json(v)?),
            Mutation::Remove(a) => format!("({b} - {})", self.text(a)?),
            Mutation::SetEntry { map, entry, value } => {
                let (m, e, v) = (self.text(map)?, self.text(entry)?, self.json(value)?);
                format!(
                    "(CASE WHEN NOT jsonb_exists({b}, {m}) THEN {b} || jsonb_build_object({m}, jsonb_build_object({e}, {v})) \
                     WHEN jsonb_typeof({b} -> {m}) = 'object' THEN {b} || jsonb_build_object({m}, ({b} -> {m}) || jsonb_build_object({e}, {v})) END)"
                )
            }
            Mutation::RemoveEntry { map, entry } => {
                let (m, e) = (self.text(map)?, self.text(entry)?);
                format!(
                    "(CASE WHEN NOT jsonb_exists({b}, {m}) THEN {b} \
                     WHEN jsonb_typeof({b} -> {m}) = 'object' THEN {b} || jsonb_build_object({m}, ({b} -> {m}) - {e}) END)"
                )
            }
            Mutation::Add(attr, delta) => {
                let (a, d) = (self.text(attr)?, self.int(*delta)?);
                let x = format!("({b} -> {a})");
                format!(
                    "(CASE WHEN NOT jsonb_exists({b}, {a}) THEN {b} || jsonb_build_object({a}, {d}) \
                     WHEN {is} THEN CASE WHEN {x}::numeric + {d} BETWEEN {MIN} AND {MAX} \
                     THEN {b} || jsonb_build_object({a}, ({x}::numeric + {d})::int8) END END)",
                    is = is_i64(&x),
                    MIN = i64::MIN,
                    MAX = i64::MAX,
                )
            }
        })
    }
}

/// The value a `Condition::Value` predicate looks at: the attribute of the
/// body, or JSON null when absent; bound when first referenced.
struct Root<'a> {
    body: &'a str,
    attr: &'a str,
    expr: Option<String>,
}

/// Whether the jsonb expression `x` is a number serde reads as an `i64`
/// (no fractional digits written, within range); false for non-numbers.
fn is_i64(x: &str) -> String {
    format!(
        "(CASE WHEN jsonb_typeof({x}) = 'number' THEN scale({x}::numeric) = 0 AND {x}::numeric BETWEEN {} AND {} ELSE false END)",
        i64::MIN,
        i64::MAX
    )
}

/// Whether the new body `new` fits in `max` (a bound `int8`) as the contract
/// counts size (compact JSON). `jsonb`'s text adds one space after every `:`
/// and every `,`; they are counted (only when the text is over the limit at
/// all) by walking every container, and subtracted.
pub(crate) fn fits(new: &str, max: &str) -> String {
    format!(
        "(CASE WHEN {new} IS NULL THEN false WHEN octet_length({new}::text) <= {max} THEN true \
         ELSE octet_length({new}::text) - (SELECT coalesce(sum(CASE jsonb_typeof(x) \
             WHEN 'object' THEN greatest(2 * (SELECT count(*) FROM jsonb_object_keys(x)) - 1, 0) \
             WHEN 'array' THEN greatest(jsonb_array_length(x) - 1, 0) ELSE 0 END), 0) \
           FROM jsonb_path_query({new}, 'strict $.**') AS x) <= {max} END)"
    )
}
