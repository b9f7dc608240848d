//! Components that run in-process, so that plumbing and branching cost no HTTP hop.

use serde_json::{json, Map, Value};

use super::condition::{evaluate, truthy};

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
}

impl Builtin {
    pub fn from_id(id: &str) -> Option<Self> {
        match id {
            "comp_passthrough" | "passthrough" => Some(Self::Passthrough),
            "if_control" | "comp_if" => Some(Self::IfControl),
            "switch" | "comp_switch" => Some(Self::Switch),
            _ => None,
        }
    }

    pub fn run(self, input: Map<String, Value>) -> Value {
        match self {
            Self::Passthrough => Value::Object(input),
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
        }
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

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn if_control_and_switch() {
        let out = Builtin::IfControl.run(obj(json!({"condition": "score > 3", "score": 4})));
        assert_eq!(out["result"], json!(true));
        let out = Builtin::IfControl.run(obj(json!({"condition": "missing"})));
        assert_eq!(out["branch"], json!("false"));
        let out = Builtin::Switch.run(obj(json!({"value": "b", "cases": ["a", "b"]})));
        assert_eq!(out["branch"], json!("b"));
        let out = Builtin::Switch.run(obj(
            json!({"value": "z", "cases": ["a"], "default": "other"}),
        ));
        assert_eq!(out["branch"], json!("other"));
        let out = Builtin::Switch.run(obj(json!({"value": 2})));
        assert_eq!(out["branch"], json!("2"));
    }
}
