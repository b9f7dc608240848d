//! The small condition language of `IF` edges, and how branch outcomes are read
//! from a node's output for `ON_TRUE`, `ON_FALSE` and `ON_BRANCH`.
//!
//! Conditions: `key === value`, `key !== value` (also `==`, `!=`), `key > n`,
//! `>=`, `<`, `<=`, a bare `key` (truthy) and `!key` (falsy). Keys are dotted
//! paths, optionally written as `{{key}}`. Values are numbers, `true`, `false`,
//! `null`, quoted strings, or bare words taken as strings. A comparison whose
//! key is missing is false, whatever the operator.

use serde_json::Value;

use super::protocol::Fielded;
use super::template::Scope;

const OPERATORS: [&str; 8] = ["===", "!==", "==", "!=", ">=", "<=", ">", "<"];

pub fn evaluate(condition: &str, scope: &dyn Scope) -> bool {
    let condition = condition.trim();
    for op in OPERATORS {
        if let Some(pos) = condition.find(op) {
            let key = strip_braces(condition[..pos].trim());
            let literal = parse_literal(condition[pos + op.len()..].trim());
            let Some(actual) = scope.lookup(key) else {
                return false;
            };
            return compare(actual, op, &literal);
        }
    }
    if let Some(key) = condition.strip_prefix('!') {
        return !scope.lookup(strip_braces(key.trim())).is_some_and(truthy);
    }
    scope.lookup(strip_braces(condition)).is_some_and(truthy)
}

/// Checks that a condition is one the language can evaluate, so a typo is a
/// validation error instead of an edge that silently never fires.
pub fn check(condition: &str) -> Result<(), String> {
    let condition = condition.trim();
    if condition.is_empty() {
        return Err("the condition is empty".into());
    }
    // The first run of operator characters after the key is the operator:
    // one the language does not know (`=>`, `=`, `<>`) is named as such,
    // rather than read as part of a key that then fails as a key.
    let key_end = condition.trim_start_matches('!');
    if let Some(start) = key_end.find(['=', '!', '<', '>']) {
        let run: String = key_end[start..]
            .chars()
            .take_while(|c| "=!<>".contains(*c))
            .collect();
        if !OPERATORS.contains(&run.as_str()) {
            return Err(format!(
                "'{run}' in '{condition}' is not an operator the language knows \
                 (===, !==, ==, !=, >=, <=, >, <)"
            ));
        }
    }
    for op in OPERATORS {
        if let Some(pos) = condition.find(op) {
            check_key(condition[..pos].trim())?;
            let literal = condition[pos + op.len()..].trim();
            if literal.is_empty() {
                return Err(format!("nothing to compare with after '{op}'"));
            }
            if OPERATORS.iter().any(|o| literal.starts_with(o)) {
                return Err(format!(
                    "'{condition}' is not a comparison the language knows"
                ));
            }
            let opens = ['\'', '"', '`'].contains(&literal.chars().next().unwrap_or(' '));
            if opens && parse_literal(literal) == Value::String(literal.to_string()) {
                return Err(format!("unterminated quoted value {literal}"));
            }
            return Ok(());
        }
    }
    check_key(condition.strip_prefix('!').unwrap_or(condition).trim())
}

fn check_key(key: &str) -> Result<(), String> {
    let bare = key.starts_with("{{") == key.ends_with("}}") || key.len() < 4;
    let inner = strip_braces(key);
    if !bare || inner.contains("{{") || inner.contains("}}") {
        return Err(format!("unbalanced braces in '{key}'"));
    }
    if inner.is_empty() {
        return Err("the condition names no key to test".into());
    }
    if inner.chars().any(char::is_whitespace) || inner.split('.').any(str::is_empty) {
        return Err(format!(
            "'{inner}' is not a key path (dotted names, no spaces)"
        ));
    }
    Ok(())
}

fn strip_braces(key: &str) -> &str {
    key.strip_prefix("{{")
        .and_then(|k| k.strip_suffix("}}"))
        .map_or(key, str::trim)
}

fn parse_literal(s: &str) -> Value {
    let quoted = ['\'', '"', '`']
        .iter()
        .find_map(|q| s.strip_prefix(*q).and_then(|r| r.strip_suffix(*q)));
    if let Some(inner) = quoted {
        return Value::String(inner.to_string());
    }
    match s {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        "null" => Value::Null,
        _ => s
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or_else(|| Value::String(s.to_string()), Value::Number),
    }
}

fn compare(actual: &Value, op: &str, literal: &Value) -> bool {
    match op {
        "===" | "==" => equal(actual, literal),
        "!==" | "!=" => !equal(actual, literal),
        _ => match (number(actual), number(literal)) {
            (Some(a), Some(b)) => match op {
                ">" => a > b,
                ">=" => a >= b,
                "<" => a < b,
                _ => a <= b,
            },
            _ => false,
        },
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    match (number(a), number(b)) {
        (Some(x), Some(y)) if a.is_number() && b.is_number() => x == y,
        _ => a == b,
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// JavaScript truthiness, which existing workflows rely on.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// The boolean outcome of a branching node: `result`, or `data.result`.
pub fn boolean_result(output: &(impl Fielded + ?Sized)) -> Option<bool> {
    field(output, "result").and_then(Value::as_bool)
}

/// The branch a node chose: `branch` or `data.branch`; a boolean result
/// counts as the branch `"true"` / `"false"`.
pub fn chosen_branch(output: &(impl Fielded + ?Sized)) -> Option<String> {
    match field(output, "branch") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(v @ (Value::Number(_) | Value::Bool(_))) => Some(v.to_string()),
        _ => boolean_result(output).map(|b| b.to_string()),
    }
}

fn field<'a>(output: &'a (impl Fielded + ?Sized), key: &str) -> Option<&'a Value> {
    output
        .field(key)
        .filter(|v| !v.is_null())
        .or_else(|| output.field("data")?.get(key).filter(|v| !v.is_null()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map};

    fn s(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn comparisons() {
        let sc = s(json!({"status": "ok", "score": 7, "nested": {"n": "3"}, "flag": false}));
        assert!(evaluate("status === 'ok'", &sc));
        assert!(evaluate("status == ok", &sc));
        assert!(!evaluate("status !== \"ok\"", &sc));
        assert!(evaluate("score > 5", &sc));
        assert!(!evaluate("score > 7", &sc));
        assert!(evaluate("score >= 7", &sc));
        assert!(evaluate("score < 7.5", &sc));
        assert!(evaluate("{{nested.n}} <= 3", &sc));
        assert!(evaluate("score === 7", &sc));
        assert!(evaluate("flag === false", &sc));
        assert!(!evaluate("flag", &sc));
        assert!(evaluate("!flag", &sc));
        assert!(evaluate("score", &sc));
    }

    #[test]
    fn malformed_conditions_are_refused() {
        for good in [
            "a === 1",
            "{{a.b}} > 2",
            "!flag",
            "flag",
            "s == 'x y'",
            "n <= -1",
        ] {
            assert_eq!(check(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "score >",
            "=== 3",
            "a b === 1",
            "{{a === 1",
            "a. === 1",
            "x === 'open",
            "a === === b",
            "!",
            "{{}}",
        ] {
            assert!(check(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn an_operator_the_language_does_not_know_is_named() {
        for (bad, op) in [
            ("score => 5", "=>"),
            ("score = 5", "="),
            ("a <> b", "<>"),
            ("a =< 3", "=<"),
            ("a >== 3", ">=="),
        ] {
            let message = check(bad).expect_err(bad);
            assert!(
                message.starts_with(&format!("'{op}' in '{bad}' is not an operator")),
                "{bad}: {message}"
            );
        }
        // A value may hold operator characters; the key's operator is the first.
        assert_eq!(check("s == 'a=>b'"), Ok(()));
        assert_eq!(check("!done"), Ok(()));
    }

    #[test]
    fn missing_key_is_false_for_every_operator() {
        let sc = s(json!({"a": 1}));
        for cond in [
            "missing",
            "missing === undefined",
            "missing !== 'x'",
            "missing > 0",
            "missing < 0",
            "missing == null",
            "{{missing.deep}}",
        ] {
            assert!(!evaluate(cond, &sc), "{cond} should be false");
        }
    }

    #[test]
    fn branches_and_results() {
        assert_eq!(chosen_branch(&json!({"branch": "a"})).as_deref(), Some("a"));
        assert_eq!(
            chosen_branch(&json!({"data": {"branch": 2}})).as_deref(),
            Some("2")
        );
        assert_eq!(
            chosen_branch(&json!({"result": false})).as_deref(),
            Some("false")
        );
        assert_eq!(
            boolean_result(&json!({"data": {"result": true}})),
            Some(true)
        );
        assert_eq!(boolean_result(&json!({"result": "yes"})), None);
        assert_eq!(chosen_branch(&json!({})), None);
    }
}
