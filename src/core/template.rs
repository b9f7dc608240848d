//! `{{a.b.c}}` placeholders in node data, resolved once against a scope.
//!
//! Expansion is a single pass: text substituted into a string is never scanned
//! again, so no input can make expansion recurse or loop.

use serde_json::{Map, Value};

/// What placeholders resolve against.
pub trait Scope {
    fn lookup(&self, path: &str) -> Option<&Value>;
}

impl Scope for Map<String, Value> {
    fn lookup(&self, path: &str) -> Option<&Value> {
        let mut parts = path.split('.');
        let first = self.get(parts.next()?)?;
        walk(first, parts)
    }
}

/// Follows the remaining dot-separated segments; numeric segments index arrays.
pub fn walk<'a, 'p>(
    mut value: &'a Value,
    parts: impl Iterator<Item = &'p str>,
) -> Option<&'a Value> {
    for part in parts {
        value = match value {
            Value::Object(m) => m.get(part)?,
            Value::Array(a) => a.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(value)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpansionTooLarge {
    pub limit: usize,
}

impl std::fmt::Display for ExpansionTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "templates expanded to more than {} bytes (MAX_TEMPLATE_BYTES)",
            self.limit
        )
    }
}

/// How many bytes substitutions may still produce. Counted before anything
/// is copied, so an oversized expansion allocates nothing.
struct Budget {
    limit: usize,
    left: usize,
}

impl Budget {
    fn new(limit: usize) -> Self {
        Self { limit, left: limit }
    }

    fn spend(&mut self, bytes: usize) -> Result<(), ExpansionTooLarge> {
        self.left = self
            .left
            .checked_sub(bytes)
            .ok_or(ExpansionTooLarge { limit: self.limit })?;
        Ok(())
    }
}

/// Resolves every placeholder in `value`. A string that is exactly one
/// placeholder takes the referenced value with its JSON type; placeholders
/// inside longer strings are rendered as text. Unresolved placeholders stay as
/// written. Everything substituted — text and whole values alike — counts
/// against one budget of `max_bytes`.
pub fn render(
    value: &Value,
    scope: &dyn Scope,
    max_bytes: usize,
) -> Result<Value, ExpansionTooLarge> {
    render_value(value, scope, &mut Budget::new(max_bytes))
}

/// Renders a node's `data` under one shared budget.
pub fn render_map(
    map: &Map<String, Value>,
    scope: &dyn Scope,
    max_bytes: usize,
) -> Result<Map<String, Value>, ExpansionTooLarge> {
    let mut budget = Budget::new(max_bytes);
    render_entries(map, scope, &mut budget)
}

fn render_entries(
    map: &Map<String, Value>,
    scope: &dyn Scope,
    budget: &mut Budget,
) -> Result<Map<String, Value>, ExpansionTooLarge> {
    map.iter()
        .map(|(k, v)| Ok((k.clone(), render_value(v, scope, budget)?)))
        .collect()
}

fn render_value(
    value: &Value,
    scope: &dyn Scope,
    budget: &mut Budget,
) -> Result<Value, ExpansionTooLarge> {
    Ok(match value {
        Value::String(s) => render_str(s, scope, budget)?,
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| render_value(v, scope, budget))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(render_entries(map, scope, budget)?),
        other => other.clone(),
    })
}

fn render_str(s: &str, scope: &dyn Scope, budget: &mut Budget) -> Result<Value, ExpansionTooLarge> {
    if !s.contains("{{") {
        return Ok(Value::String(s.to_string()));
    }
    if let Some(path) = whole_placeholder(s) {
        if let Some(v) = scope.lookup(path) {
            budget.spend(json_size(v))?;
            return Ok(v.clone());
        }
        return Ok(Value::String(s.to_string()));
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            out.push_str(&rest[open..]);
            rest = "";
            break;
        };
        let inner = &after[..close];
        let path = inner.trim();
        match (is_path(path), scope.lookup(path)) {
            (true, Some(Value::String(v))) => {
                budget.spend(v.len())?;
                out.push_str(v);
            }
            (true, Some(v)) => {
                budget.spend(json_size(v))?;
                out.push_str(&v.to_string());
            }
            _ => {
                out.push_str("{{");
                out.push_str(inner);
                out.push_str("}}");
            }
        }
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    Ok(Value::String(out))
}

/// The size of `v` as compact JSON, give or take escapes; walked without
/// recursion or allocation beyond a stack of references.
pub fn json_size(v: &Value) -> usize {
    let mut size = 0;
    let mut stack = vec![v];
    walk_sizes(&mut size, &mut stack);
    size
}

/// `json_size` of an object given as its map.
pub fn json_map_size(map: &Map<String, Value>) -> usize {
    let mut size = 2 + map.keys().map(|k| k.len() + 4).sum::<usize>();
    let mut stack: Vec<&Value> = map.values().collect();
    walk_sizes(&mut size, &mut stack);
    size
}

fn walk_sizes(size: &mut usize, stack: &mut Vec<&Value>) {
    while let Some(v) = stack.pop() {
        *size += match v {
            Value::Null => 4,
            Value::Bool(_) => 5,
            Value::Number(_) => 8,
            Value::String(s) => s.len() + 2,
            Value::Array(items) => {
                stack.extend(items.iter());
                2 + items.len()
            }
            Value::Object(map) => {
                stack.extend(map.values());
                2 + map.keys().map(|k| k.len() + 4).sum::<usize>()
            }
        };
    }
}

/// `"{{ a.b }}"` → `Some("a.b")`; anything else → `None`.
fn whole_placeholder(s: &str) -> Option<&str> {
    let inner = s.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    if inner.contains("{{") || inner.contains("}}") {
        return None;
    }
    let path = inner.trim();
    is_path(path).then_some(path)
}

fn is_path(p: &str) -> bool {
    !p.is_empty()
        && p.split('.').all(|seg| {
            !seg.is_empty()
                && seg
                    .chars()
                    .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '$'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    const BIG: usize = 1 << 20;

    #[test]
    fn single_placeholder_keeps_json_type() {
        let s = scope(json!({"a": {"b": {"c": [1, 2]}}, "n": 5, "t": true}));
        assert_eq!(render(&json!("{{a.b.c}}"), &s, BIG).unwrap(), json!([1, 2]));
        assert_eq!(render(&json!("{{ n }}"), &s, BIG).unwrap(), json!(5));
        assert_eq!(render(&json!("{{t}}"), &s, BIG).unwrap(), json!(true));
        assert_eq!(render(&json!("{{a.b.c.1}}"), &s, BIG).unwrap(), json!(2));
    }

    #[test]
    fn interpolation_renders_text_and_leaves_unresolved_as_written() {
        let s = scope(json!({"name": "Ada", "n": 3, "o": {"k": 1}}));
        let out = render(
            &json!("Hi {{name}}, {{n}} {{o}} {{missing.x}} {{ bad path }}"),
            &s,
            BIG,
        )
        .unwrap();
        assert_eq!(
            out,
            json!("Hi Ada, 3 {\"k\":1} {{missing.x}} {{ bad path }}")
        );
        assert_eq!(
            render(&json!("{{missing}}"), &s, BIG).unwrap(),
            json!("{{missing}}")
        );
        assert_eq!(
            render(&json!("open {{name"), &s, BIG).unwrap(),
            json!("open {{name")
        );
    }

    #[test]
    fn nested_structures_are_rendered_and_substitutions_not_rescanned() {
        let s = scope(json!({"x": "{{x}}{{x}}", "y": 1}));
        let out = render(&json!({"a": ["{{y}}", {"b": "{{x}}-{{x}}"}]}), &s, BIG).unwrap();
        assert_eq!(out, json!({"a": [1, {"b": "{{x}}{{x}}-{{x}}{{x}}"}]}));
    }

    #[test]
    fn expansion_is_bounded() {
        let s = scope(json!({"big": "x".repeat(1000)}));
        let err = render(&json!("{{big}}{{big}}{{big}}"), &s, 2500).unwrap_err();
        assert_eq!(err.limit, 2500);
        assert!(render(&json!("{{big}}{{big}}"), &s, 2500).is_ok());
    }

    #[test]
    fn whole_value_copies_share_one_budget_per_node() {
        let s = scope(json!({"big": "x".repeat(1000)}));
        let data = json!({"a": "{{big}}", "b": "{{big}}", "c": ["{{big}}"]});
        let data = data.as_object().unwrap();
        assert!(render_map(data, &s, 2500).is_err());
        assert!(render_map(data, &s, 3100).is_ok());
    }
}
