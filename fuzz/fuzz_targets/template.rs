//! Template rendering against a scope.
//!
//! Input: a stream of JSON values — the template, then the scope (an object;
//! `{}` when absent or not an object), then optionally a number capping the
//! expansion limit (at most 64 KiB, the default).
//!
//! Checked against a plain reference expansion written here, which has no
//! limit: the result keeps the template's shape; strings without `{{` pass
//! through; a string that is exactly one resolvable placeholder takes the
//! value; every other string is expanded exactly as the reference expands it
//! and is never longer than the limit; and `render` fails exactly when some
//! string's full expansion exceeds the limit. Conditions are also evaluated on
//! every template string (they must not panic).

#![no_main]

use arcrun::core::condition::evaluate;
use arcrun::core::template::{render, Scope};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

const MAX_BYTES: usize = 64 << 10;

fn ref_is_path(p: &str) -> bool {
    // Non-empty segments of letters/digits (any script) and `_`, `-`, `$`.
    !p.is_empty()
        && p.split('.').all(|seg| {
            !seg.is_empty()
                && seg
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '-' || c == '$')
        })
}

fn ref_lookup<'a>(scope: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut segs = path.split('.');
    let mut cur = scope.get(segs.next()?)?;
    for seg in segs {
        cur = match cur {
            Value::Object(m) => m.get(seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// How a single template string renders.
enum Expected {
    Same,
    Value(Value),
    /// Interpolated text, at full length (no limit applied).
    Text(String),
}

fn ref_whole(s: &str) -> Option<&str> {
    let t = s.trim();
    if t.len() < 4 || !t.starts_with("{{") || !t.ends_with("}}") {
        return None;
    }
    let inner = &t[2..t.len() - 2];
    if inner.contains("{{") || inner.contains("}}") {
        return None;
    }
    let path = inner.trim();
    ref_is_path(path).then_some(path)
}

fn ref_string(s: &str, scope: &Map<String, Value>) -> Expected {
    if !s.contains("{{") {
        return Expected::Same;
    }
    if let Some(path) = ref_whole(s) {
        return match ref_lookup(scope, path) {
            Some(v) => Expected::Value(v.clone()),
            None => Expected::Same,
        };
    }
    // Scan once, left to right; substituted text is never looked at again.
    let mut out = String::new();
    let mut i = 0;
    while i < s.len() {
        if s[i..].starts_with("{{") {
            if let Some(rel) = s[i + 2..].find("}}") {
                let inner = &s[i + 2..i + 2 + rel];
                let path = inner.trim();
                let sub = if ref_is_path(path) { ref_lookup(scope, path) } else { None };
                match sub {
                    Some(Value::String(v)) => out.push_str(v),
                    Some(v) => out.push_str(&v.to_string()),
                    None => out.push_str(&s[i..i + 2 + rel + 2]),
                }
                i += 2 + rel + 2;
                continue;
            }
            out.push_str(&s[i..]);
            break;
        }
        let c = s[i..].chars().next().unwrap();
        out.push(c);
        i += c.len_utf8();
    }
    Expected::Text(out)
}

/// Does any interpolated string of `t` expand past `max`?
fn ref_overflows(t: &Value, scope: &Map<String, Value>, max: usize) -> bool {
    match t {
        Value::String(s) => matches!(ref_string(s, scope), Expected::Text(o) if o.len() > max),
        Value::Array(a) => a.iter().any(|v| ref_overflows(v, scope, max)),
        Value::Object(m) => m.values().any(|v| ref_overflows(v, scope, max)),
        _ => false,
    }
}

fn check(t: &Value, out: &Value, scope: &Map<String, Value>, max: usize) {
    match (t, out) {
        (Value::String(s), _) => match ref_string(s, scope) {
            Expected::Same => assert_eq!(out, t, "string changed though nothing resolved"),
            Expected::Value(v) => assert_eq!(out, &v, "whole placeholder {s:?}"),
            Expected::Text(o) => {
                let Value::String(got) = out else {
                    panic!("interpolated {s:?} rendered as non-string {out}");
                };
                assert!(got.len() <= max, "{} bytes rendered; limit {max}", got.len());
                assert_eq!(got, &o, "interpolation of {s:?}");
            }
        },
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len());
            for (x, y) in a.iter().zip(b) {
                check(x, y, scope, max);
            }
        }
        (Value::Object(a), Value::Object(b)) => {
            assert_eq!(a.len(), b.len());
            for (k, x) in a {
                let y = b.get(k).unwrap_or_else(|| panic!("key {k:?} lost"));
                check(x, y, scope, max);
            }
        }
        _ => assert_eq!(out, t, "a non-string scalar changed"),
    }
}

fn each_string(v: &Value, f: &mut dyn FnMut(&str)) {
    match v {
        Value::String(s) => f(s),
        Value::Array(a) => a.iter().for_each(|x| each_string(x, f)),
        Value::Object(m) => m.values().for_each(|x| each_string(x, f)),
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let mut values = serde_json::Deserializer::from_slice(data)
        .into_iter::<Value>()
        .map_while(Result::ok);
    let Some(template) = values.next() else {
        return;
    };
    let scope = match values.next() {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let max = match values.next() {
        Some(Value::Number(n)) => n.as_u64().map_or(MAX_BYTES, |m| (m as usize).min(MAX_BYTES)),
        _ => MAX_BYTES,
    };

    // The scope as the engine sees it agrees with the reference lookup.
    each_string(&template, &mut |s| {
        let p = s.trim();
        assert_eq!(scope.lookup(p), ref_lookup(&scope, p), "lookup of {p:?}");
        let _ = evaluate(s, &scope);
    });

    match render(&template, &scope, max) {
        Ok(out) => check(&template, &out, &scope, max),
        Err(e) => {
            assert_eq!(e.limit, max);
            assert!(!e.to_string().is_empty());
            assert!(
                ref_overflows(&template, &scope, max),
                "render refused though no string expands past {max} bytes"
            );
        }
    }
});
