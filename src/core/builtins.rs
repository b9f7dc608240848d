//! Components that run in-process, so that plumbing and branching cost no HTTP hop.

use serde_json::{json, Value};

use super::condition::{evaluate, truthy};
use super::fields::Fields;
use super::record::NodeOutput;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// Returns its input unchanged.
    Passthrough,
    /// `{"condition": "<expr>"}` evaluated against its input, or the
    /// truthiness of `value`; answers `{"result": bool, "branch": "true"|"false"}`.
    IfControl,
    /// `{"value": x, "cases": [..]?, "default": ".."?}`; answers
    /// `{"branch": "<x as text>"}`, or the default branch when `x` is not a case.
    Switch,
    /// Upper-cases text: `{"text": "hi"}` → `{"text": "HI"}`; a `text` object
    /// has each of its string fields upper-cased; with no `text`, every
    /// top-level string field of the input is (other values pass as they are).
    Uppercase,
    /// Counts: `{"count": n}` → `{"count": n + 1}`, starting at 1 when the
    /// input has no whole-number `count`.
    Counter,
}

impl Builtin {
    pub fn from_id(id: &str) -> Option<Self> {
        match id {
            "comp_passthrough" | "passthrough" => Some(Self::Passthrough),
            "if_control" | "comp_if" => Some(Self::IfControl),
            "switch" | "comp_switch" => Some(Self::Switch),
            "comp_uppercase" | "uppercase" => Some(Self::Uppercase),
            "comp_counter" | "counter" => Some(Self::Counter),
            _ => None,
        }
    }

    /// The builtin's output for `input`; a pass-through's is its input,
    /// shared rather than copied (`Fields`).
    pub fn run(self, input: Fields) -> NodeOutput {
        let out = match self {
            Self::Passthrough => return NodeOutput::Object(input),
            Self::IfControl => {
                let result = match input.get("condition") {
                    Some(Value::String(c)) => evaluate(c, &input),
                    Some(Value::Bool(b)) => *b,
                    _ => input.get("value").is_some_and(truthy),
                };
                json!({ "success": true, "result": result, "branch": result.to_string() })
            }
            Self::Switch => {
                let value = input.get("value").cloned().unwrap_or(Value::Null);
                let text = as_branch(&value);
                let known = match input.get("cases") {
                    Some(Value::Array(cases)) => cases.iter().any(|c| as_branch(c) == text),
                    _ => !text.is_empty(),
                };
                let branch = if known {
                    text
                } else {
                    input
                        .get("default")
                        .and_then(Value::as_str)
                        .unwrap_or("default")
                        .to_string()
                };
                json!({ "success": true, "branch": branch, "value": value })
            }
            Self::Uppercase => match input.get("text") {
                Some(text) => json!({ "text": upper(text) }),
                None => Value::Object(
                    input
                        .into_iter()
                        .map(|(k, v)| {
                            let v = if v.is_string() { upper(&v) } else { v };
                            (k, v)
                        })
                        .collect(),
                ),
            },
            Self::Counter => {
                let count = input.get("count").and_then(|c| match c {
                    Value::Number(n) => n.as_u64(),
                    Value::String(s) => s.trim().parse().ok(),
                    _ => None,
                });
                json!({ "count": count.map_or(1, |n| n.saturating_add(1)) })
            }
        };
        out.into()
    }
}

/// A string upper-cased; an object's string fields upper-cased; anything
/// else as it is.
fn upper(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(s.to_uppercase()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| match v {
                    Value::String(s) => (k.clone(), Value::String(s.to_uppercase())),
                    other => (k.clone(), other.clone()),
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Branch labels are text: strings as written, other values as JSON.
fn as_branch(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Fields {
        v.as_object().unwrap().clone().into()
    }

    #[test]
    fn if_control_and_switch() {
        let out = Builtin::IfControl
            .run(obj(json!({"condition": "score > 3", "score": 4})))
            .into_value();
        assert_eq!(out["result"], json!(true));
        let out = Builtin::IfControl
            .run(obj(json!({"condition": "missing"})))
            .into_value();
        assert_eq!(out["branch"], json!("false"));
        let out = Builtin::Switch
            .run(obj(json!({"value": "b", "cases": ["a", "b"]})))
            .into_value();
        assert_eq!(out["branch"], json!("b"));
        let out = Builtin::Switch
            .run(obj(
                json!({"value": "z", "cases": ["a"], "default": "other"}),
            ))
            .into_value();
        assert_eq!(out["branch"], json!("other"));
        let out = Builtin::Switch.run(obj(json!({"value": 2}))).into_value();
        assert_eq!(out["branch"], json!("2"));
    }

    #[test]
    fn uppercase_and_counter() {
        let up = |v: Value| Builtin::Uppercase.run(obj(v)).into_value();
        assert_eq!(
            up(json!({"text": "héllo", "n": 1})),
            json!({"text": "HÉLLO"})
        );
        assert_eq!(
            up(json!({"text": {"a": "x", "b": 2}})),
            json!({"text": {"a": "X", "b": 2}})
        );
        assert_eq!(
            up(json!({"title": "t", "n": 1})),
            json!({"title": "T", "n": 1})
        );
        let count = |v: Value| Builtin::Counter.run(obj(v)).into_value()["count"].clone();
        assert_eq!(count(json!({})), json!(1));
        assert_eq!(count(json!({"count": 1})), json!(2));
        assert_eq!(count(json!({"count": "41"})), json!(42));
        assert_eq!(count(json!({"count": "x"})), json!(1));
    }
}
