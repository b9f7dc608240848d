//! Template rendering against a scope.
//!
//! Input: a stream of JSON values — the template, then the scope (an object;
//! `{}` when absent or not an object), then optionally a number capping the
//! expansion limit (at most 64 KiB, the default).
//!
//! Checked against a plain reference expansion written here, which has no
//! limit: the result keeps the template's shape; strings without `{{` pass
//! through; a string that is exactly one resolvable placeholder takes the
//! value; every other string is expanded exactly as the reference expands it.
//! Everything substituted counts against one budget (text by its length,
//! values by their estimated JSON size): `render` fails exactly when the
//! reference's total exceeds the limit, and when it succeeds the output is
//! never more than the template plus a constant factor of the limit (so memory
//! stays bounded whatever the scope holds). Conditions are also evaluated on
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

/// The budget a substituted value costs: its compact JSON size, counting
/// every string by its raw length plus quotes and every number as 8 bytes.
fn ref_cost(v: &Value) -> usize {
    match v {
        Value::Null => 4,
        Value::Bool(_) => 5,
        Value::Number(_) => 8,
        Value::String(s) => s.len() + 2,
        Value::Array(a) => 2 + a.len() + a.iter().map(ref_cost).sum::<usize>(),
        Value::Object(m) => 2 + m.iter().map(|(k, v)| k.len() + 4 + ref_cost(v)).sum::<usize>(),
    }
}

/// What rendering `s` spends from the budget.
fn ref_string_cost(s: &str, scope: &Map<String, Value>) -> usize {
    if !s.contains("{{") {
        return 0;
    }
    if let Some(path) = ref_whole(s) {
        return ref_lookup(scope, path).map_or(0, ref_cost);
    }
    let mut cost = 0;
    let mut rest = s;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else { break };
        let path = after[..close].trim();
        if ref_is_path(path) {
            cost += match ref_lookup(scope, path) {
                Some(Value::String(v)) => v.len(),
                Some(v) => ref_cost(v),
                None => 0,
            };
        }
        rest = &after[close + 2..];
    }
    cost
}

/// Total budget spent rendering every string of `t`.
fn ref_spend(t: &Value, scope: &Map<String, Value>) -> usize {
    match t {
        Value::String(s) => ref_string_cost(s, scope),
        Value::Array(a) => a.iter().map(|v| ref_spend(v, scope)).sum(),
        Value::Object(m) => m.values().map(|v| ref_spend(v, scope)).sum(),
        _ => 0,
    }
}

fn check(t: &Value, out: &Value, scope: &Map<String, Value>) {
    match (t, out) {
        (Value::String(s), _) => match ref_string(s, scope) {
            Expected::Same => assert_eq!(out, t, "string changed though nothing resolved"),
            Expected::Value(v) => assert_eq!(out, &v, "whole placeholder {s:?}"),
            Expected::Text(o) => {
                let Value::String(got) = out else {
                    panic!("interpolated {s:?} rendered as non-string {out}");
                };
                assert_eq!(got, &o, "interpolation of {s:?}");
            }
        },
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len());
            for (x, y) in a.iter().zip(b) {
                check(x, y, scope);
            }
        }
        (Value::Object(a), Value::Object(b)) => {
            assert_eq!(a.len(), b.len());
            for (k, x) in a {
                let y = b.get(k).unwrap_or_else(|| panic!("key {k:?} lost"));
                check(x, y, scope);
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

    let spend = ref_spend(&template, &scope);
    match render(&template, &scope, max) {
        Ok(out) => {
            assert!(spend <= max, "render accepted {spend} bytes of substitutions; limit {max}");
            check(&template, &out, &scope);
            // The estimate undercounts escapes (a control character is 1 byte
            // but `\u0001` in JSON) and long numbers (8 vs. up to 24), never
            // by more than 6x: output stays within template + 6 x budget.
            let (tlen, olen) = (template.to_string().len(), out.to_string().len());
            assert!(
                olen <= tlen + 6 * spend,
                "output {olen} bytes from a {tlen}-byte template and {spend} bytes of budget"
            );
        }
        Err(e) => {
            assert_eq!(e.limit, max);
            assert!(!e.to_string().is_empty());
            assert!(spend > max, "render refused {spend} bytes of substitutions; limit {max}");
        }
    }
});
