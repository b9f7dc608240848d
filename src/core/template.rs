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

/// How many unresolved references one rendering keeps by name; the rest are
/// only counted. A node's data may repeat a bad reference thousands of times
/// (or a FOREACH item render it again for every item), and what is kept goes
/// into the run's trace, which must stay small.
pub const MAX_UNRESOLVED_KEPT: usize = 5;

/// The longest reference or data path kept in a note, in bytes; longer ones
/// are cut (at a character boundary) and end in `…`.
pub const MAX_NOTE_PART_BYTES: usize = 120;

/// A `{{path}}` that named nothing in scope, and where in the node's data it
/// was written (`data.prompt`, `data.messages.0.content`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnresolvedRef {
    /// The placeholder as written, cut to `MAX_NOTE_PART_BYTES`.
    pub reference: String,
    /// Where in the data it was written, cut the same way.
    pub at: String,
}

impl std::fmt::Display for UnresolvedRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at {}", self.reference, self.at)
    }
}

/// The unresolved references one rendering met: the first few by name,
/// and how many there were in all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unresolved {
    pub kept: Vec<UnresolvedRef>,
    pub total: usize,
}

impl Unresolved {
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    fn note(&mut self, placeholder: &str, at: &[String]) {
        self.total += 1;
        if self.kept.len() < MAX_UNRESOLVED_KEPT {
            self.kept.push(UnresolvedRef {
                reference: cut(placeholder),
                at: cut(&at.join(".")),
            });
        }
    }

    /// One line per kept reference, plus one that counts the rest: the
    /// warnings a node's trace entry carries.
    pub fn warnings(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .kept
            .iter()
            .map(|r| format!("unresolved template reference {r}"))
            .collect();
        let more = self.total - self.kept.len();
        if more > 0 {
            lines.push(format!("and {more} more unresolved template references"));
        }
        lines
    }

    /// The failure text of a node in a graph with `strict_templates`.
    pub fn refusal(&self) -> String {
        let named: Vec<String> = self.kept.iter().map(ToString::to_string).collect();
        let more = self.total - self.kept.len();
        let tail = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        format!(
            "unresolved template reference{} {}{tail} (the graph has strict_templates)",
            if self.total == 1 { "" } else { "s" },
            named.join(", ")
        )
    }
}

/// `text` cut to `MAX_NOTE_PART_BYTES` at a character boundary.
fn cut(text: &str) -> String {
    if text.len() <= MAX_NOTE_PART_BYTES {
        return text.to_string();
    }
    let mut end = MAX_NOTE_PART_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Where the renderer is in the data, and what it found unresolved.
struct Walk<'u> {
    at: Vec<String>,
    unresolved: &'u mut Unresolved,
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
    let mut unresolved = Unresolved::default();
    let mut walk = Walk {
        at: Vec::new(),
        unresolved: &mut unresolved,
    };
    render_value(value, scope, &mut Budget::new(max_bytes), &mut walk)
}

/// Renders a node's `data` under one shared budget. Placeholders naming
/// nothing in scope stay as written (as in the engine we descend from) and
/// are noted in `unresolved`, located from `data`.
pub fn render_map(
    map: &Map<String, Value>,
    scope: &dyn Scope,
    max_bytes: usize,
    unresolved: &mut Unresolved,
) -> Result<Map<String, Value>, ExpansionTooLarge> {
    let mut budget = Budget::new(max_bytes);
    let mut walk = Walk {
        at: vec!["data".into()],
        unresolved,
    };
    render_entries(map, scope, &mut budget, &mut walk)
}

fn render_entries(
    map: &Map<String, Value>,
    scope: &dyn Scope,
    budget: &mut Budget,
    walk: &mut Walk,
) -> Result<Map<String, Value>, ExpansionTooLarge> {
    map.iter()
        .map(|(k, v)| {
            walk.at.push(k.clone());
            let rendered = render_value(v, scope, budget, walk);
            walk.at.pop();
            Ok((k.clone(), rendered?))
        })
        .collect()
}

fn render_value(
    value: &Value,
    scope: &dyn Scope,
    budget: &mut Budget,
    walk: &mut Walk,
) -> Result<Value, ExpansionTooLarge> {
    Ok(match value {
        Value::String(s) => render_str(s, scope, budget, walk)?,
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    walk.at.push(i.to_string());
                    let rendered = render_value(v, scope, budget, walk);
                    walk.at.pop();
                    rendered
                })
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(render_entries(map, scope, budget, walk)?),
        other => other.clone(),
    })
}

fn render_str(
    s: &str,
    scope: &dyn Scope,
    budget: &mut Budget,
    walk: &mut Walk,
) -> Result<Value, ExpansionTooLarge> {
    if !s.contains("{{") {
        return Ok(Value::String(s.to_string()));
    }
    if let Some(path) = whole_placeholder(s) {
        if let Some(v) = scope.lookup(path) {
            budget.spend(json_size(v))?;
            return Ok(v.clone());
        }
        walk.unresolved.note(&format!("{{{{{path}}}}}"), &walk.at);
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
        let is_reference = is_path(path);
        match (is_reference, scope.lookup(path)) {
            (true, Some(Value::String(v))) => {
                budget.spend(v.len())?;
                out.push_str(v);
            }
            (true, Some(v)) => {
                budget.spend(json_size(v))?;
                out.push_str(&v.to_string());
            }
            _ => {
                // Text that is not a path (`{{ two words }}`) is not a
                // reference at all, so only a path that named nothing is noted.
                if is_reference {
                    walk.unresolved.note(&format!("{{{{{path}}}}}"), &walk.at);
                }
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
        let mut unresolved = Unresolved::default();
        assert!(render_map(data, &s, 2500, &mut unresolved).is_err());
        assert!(render_map(data, &s, 3100, &mut unresolved).is_ok());
        assert!(unresolved.is_empty());
    }

    #[test]
    fn unresolved_references_are_noted_where_written_and_left_as_text() {
        let s = scope(json!({"i": {"ok": 1}, "name": "Ada"}));
        // Keys in sorted order, which is also the order they are written in.
        let data = json!({
            "list": [{"deep": ["x", "{{i.ok}} {{gone}}"]}],
            "prompt": "Hi {{name}} {{ i.nope.deep }} {{ two words }}",
            "whole": "{{missing}}",
        });
        let mut unresolved = Unresolved::default();
        let out = render_map(data.as_object().unwrap(), &s, BIG, &mut unresolved).unwrap();
        // The output is what it always was: unresolved text stays as written.
        assert_eq!(
            out["prompt"],
            json!("Hi Ada {{ i.nope.deep }} {{ two words }}")
        );
        assert_eq!(out["whole"], json!("{{missing}}"));
        assert_eq!(out["list"], json!([{"deep": ["x", "1 {{gone}}"]}]));
        assert_eq!(
            unresolved.warnings(),
            vec![
                "unresolved template reference {{gone}} at data.list.0.deep.1",
                "unresolved template reference {{i.nope.deep}} at data.prompt",
                "unresolved template reference {{missing}} at data.whole",
            ]
        );
        assert_eq!(
            unresolved.refusal(),
            "unresolved template references {{gone}} at data.list.0.deep.1, {{i.nope.deep}} at \
             data.prompt, {{missing}} at data.whole (the graph has strict_templates)"
        );
    }

    #[test]
    fn unresolved_notes_are_bounded_in_count_and_length() {
        let s = scope(json!({}));
        let long = "k".repeat(500);
        let text = format!("{{{{{long}}}}} {}", "{{a}} ".repeat(10_000));
        let data = json!({ "p": text });
        let mut unresolved = Unresolved::default();
        render_map(data.as_object().unwrap(), &s, BIG, &mut unresolved).unwrap();
        assert_eq!(unresolved.total, 10_001);
        let warnings = unresolved.warnings();
        assert_eq!(warnings.len(), MAX_UNRESOLVED_KEPT + 1);
        assert!(warnings
            .iter()
            .all(|w| w.len() < 2 * MAX_NOTE_PART_BYTES + 64));
        assert!(warnings[0].contains('…'), "{}", warnings[0]);
        assert_eq!(warnings[5], "and 9996 more unresolved template references");
        assert!(unresolved
            .refusal()
            .ends_with("and 9996 more (the graph has strict_templates)"));
    }
}
