//! How items become `jsonb` and back.
//!
//! Two things a JSON value can hold do not survive `jsonb` unchanged, so every
//! value (and every attribute, entry and path name bound as a parameter) goes
//! through this module:
//!
//! - **U+0000.** PostgreSQL `text` and `jsonb` cannot hold it (`\u0000` is
//!   rejected). Strings are escaped with a prefix-free, order-preserving code:
//!   U+0000 → U+0001 U+0001, U+0001 → U+0001 U+0002, everything else
//!   unchanged. Equal strings stay equal and byte order (what `COLLATE "C"`
//!   compares) is preserved, so conditions on escaped strings give the same
//!   answers as on the originals.
//! - **Float type.** serde writes `1e17` for the `f64` 10¹⁷; `jsonb` stores it
//!   as the numeric `100000000000000000` and would give back an integer.
//!   Floats are therefore written in plain decimal with at least one fractional
//!   digit (`100000000000000000.0`), which `jsonb` keeps as written, so a float
//!   reads back as a float and an integer as an integer.

use std::borrow::Cow;

use flowstate_core::store::{Item, StoreError, StoreResult};
use serde_json::{Map, Value};

const ESC: char = '\u{1}';

fn needs_escape(s: &str) -> bool {
    s.contains(['\u{0}', ESC])
}

/// Escape one string for PostgreSQL (see the module docs).
pub(crate) fn escape(s: &str) -> Cow<'_, str> {
    if !needs_escape(s) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        match c {
            '\u{0}' => out.push_str("\u{1}\u{1}"),
            ESC => out.push_str("\u{1}\u{2}"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Undo [`escape`]; a stray escape character means the row was not written by us.
pub(crate) fn unescape(s: &str) -> StoreResult<Cow<'_, str>> {
    if !s.contains(ESC) {
        return Ok(Cow::Borrowed(s));
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != ESC {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some(ESC) => out.push('\u{0}'),
            Some('\u{2}') => out.push(ESC),
            _ => return Err(StoreError::corrupt("stored string has a malformed U+0001 escape")),
        }
    }
    Ok(Cow::Owned(out))
}

/// The JSON text PostgreSQL is given for `value` (cast to `jsonb` in SQL).
pub(crate) fn encode_value(value: &Value) -> String {
    let mut out = String::new();
    write_value(value, &mut out);
    out
}

/// The JSON text of a whole item.
pub(crate) fn encode_item(item: &Item) -> String {
    let mut out = String::with_capacity(64);
    out.push('{');
    for (i, (name, value)) in item.attrs().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(name, &mut out);
        out.push(':');
        write_value(value, &mut out);
    }
    out.push('}');
    out
}

fn write_value(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) if n.is_i64() || n.is_u64() => out.push_str(&n.to_string()),
        Value::Number(n) => {
            // Rust's `Display` for f64 is the shortest round-tripping plain
            // decimal (never an exponent); add ".0" so jsonb keeps a scale.
            let f = n.as_f64().unwrap_or(0.0);
            let text = f.to_string();
            out.push_str(&text);
            if !text.contains('.') {
                out.push_str(".0");
            }
        }
        Value::String(s) => write_str(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(v, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(k, out);
                out.push(':');
                write_value(v, out);
            }
            out.push('}');
        }
    }
}

fn write_str(s: &str, out: &mut String) {
    let escaped = escape(s);
    // serde_json's string escaping of a `&str` cannot fail.
    out.push_str(&serde_json::to_string(escaped.as_ref()).unwrap_or_default());
}

/// Decode an item from the `jsonb` text PostgreSQL returns.
pub(crate) fn decode_item(text: &str) -> StoreResult<Item> {
    let item: Item = serde_json::from_str(text)
        .map_err(|e| StoreError::corrupt("stored body is not a JSON object").with_source(e))?;
    // jsonb prints U+0001 as `\u0001`: without it, nothing is escaped.
    if !text.contains("\\u0001") {
        return Ok(item);
    }
    let mut out = Item::new();
    for (name, value) in item.into_json_object() {
        out.insert(unescape(&name)?.into_owned(), unescape_value(value)?);
    }
    Ok(out)
}

fn unescape_value(value: Value) -> StoreResult<Value> {
    Ok(match value {
        Value::String(s) => match unescape(&s)? {
            Cow::Borrowed(_) => Value::String(s),
            Cow::Owned(o) => Value::String(o),
        },
        Value::Array(items) => Value::Array(items.into_iter().map(unescape_value).collect::<StoreResult<_>>()?),
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                out.insert(unescape(&k)?.into_owned(), unescape_value(v)?);
            }
            Value::Object(out)
        }
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn escape_is_order_preserving_and_reversible() {
        let mut strings =
            vec!["", "\u{0}", "\u{0}\u{0}", "\u{0}a", "\u{1}", "\u{1}\u{0}", "\u{2}", "a", "a\u{0}", "ab"];
        strings.sort();
        let escaped: Vec<String> = strings.iter().map(|s| escape(s).into_owned()).collect();
        let mut resorted = escaped.clone();
        resorted.sort();
        assert_eq!(escaped, resorted, "escaping must keep byte order");
        for (s, e) in strings.iter().zip(&escaped) {
            assert!(!e.contains('\u{0}'));
            assert_eq!(unescape(e).unwrap(), *s);
        }
        assert!(unescape("a\u{1}x").is_err());
    }

    #[test]
    fn floats_keep_a_fraction_and_integers_stay_integers() {
        assert_eq!(encode_value(&json!(1e17)), "100000000000000000.0");
        assert_eq!(encode_value(&json!(1.5)), "1.5");
        assert_eq!(encode_value(&json!(1e-7)), "0.0000001");
        assert_eq!(encode_value(&json!(-3)), "-3");
        assert_eq!(encode_value(&json!(u64::MAX)), u64::MAX.to_string());
        assert_eq!(
            encode_value(&json!({"a\u{0}": ["\u{1}", null, true]})),
            "{\"a\\u0001\\u0001\":[\"\\u0001\\u0002\",null,true]}"
        );
    }

    #[test]
    fn decode_undoes_encode() {
        let item = Item::new().with("k\u{0}", json!({"x\u{1}": "v\u{0}"})).with("n", 1).with("f", 2.5);
        let text = encode_item(&item);
        assert_eq!(decode_item(&text).unwrap(), item);
    }
}
