//! The workflow graph as existing workflows write it, parsed leniently so that
//! validation can report every problem at once instead of the first serde error.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::Problem;

/// The longest wait a node may ask for (one year): deadlines are alarm times
/// and KV TTLs, both of which want sane bounds.
pub const MAX_WAIT_SECONDS: u64 = 365 * 24 * 3600;

/// The schema, accepting any letter case: `apidoc::graph`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeKind {
    Input,
    Component,
    Output,
}

/// The schema, accepting every spelling: `apidoc::graph`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EdgeKind {
    #[default]
    Pipe,
    OnSuccess,
    OnFail,
    If,
    OnTrue,
    OnFalse,
    OnBranch,
    Foreach,
    /// A UI event's edge: flows like `PIPE`.
    OnClick,
    /// Into a node whose component is `workflow://{name}`: flows like `PIPE`.
    CallsSubflow,
    // Structural edges record how a graph is organised; they are kept with
    // the graph and never executed (nothing is delivered along them and no
    // join waits for them).
    Contains,
    HasStyle,
    HasBehavior,
    IsA,
    Continue,
}

impl EdgeKind {
    /// Every spelling of every edge type the engine we descend from accepts
    /// (aliases and Chinese words included), in any letter case and with
    /// surrounding spaces ignored. The graph schema's patterns are made from
    /// this table too.
    pub const SPELLINGS: &'static [(&'static str, Self)] = &[
        ("PIPE", Self::Pipe),
        ("完成後", Self::Pipe),
        ("ON_SUCCESS", Self::OnSuccess),
        ("SUCCESS", Self::OnSuccess),
        ("ON_FAIL", Self::OnFail),
        ("FAIL", Self::OnFail),
        ("失敗時", Self::OnFail),
        ("IF", Self::If),
        ("條件滿足時", Self::If),
        ("ON_TRUE", Self::OnTrue),
        ("TRUE", Self::OnTrue),
        ("成立時", Self::OnTrue),
        ("為真時", Self::OnTrue),
        ("ON_FALSE", Self::OnFalse),
        ("FALSE", Self::OnFalse),
        ("ELSE", Self::OnFalse),
        ("不成立時", Self::OnFalse),
        ("為假時", Self::OnFalse),
        ("否則", Self::OnFalse),
        ("ON_BRANCH", Self::OnBranch),
        ("BRANCH", Self::OnBranch),
        ("FOREACH", Self::Foreach),
        ("對每個", Self::Foreach),
        ("ON_CLICK", Self::OnClick),
        ("CLICK", Self::OnClick),
        ("CALLS_SUBFLOW", Self::CallsSubflow),
        ("SUBFLOW", Self::CallsSubflow),
        ("CONTAINS", Self::Contains),
        ("HAS_STYLE", Self::HasStyle),
        ("HAS_BEHAVIOR", Self::HasBehavior),
        ("IS_A", Self::IsA),
        ("CONTINUE", Self::Continue),
    ];

    /// The type as written.
    fn parse(s: &str) -> Option<Self> {
        let wanted = s.trim().to_ascii_uppercase();
        Self::SPELLINGS
            .iter()
            .find(|(spelling, _)| *spelling == wanted)
            .map(|(_, kind)| *kind)
    }

    /// Whether the edge is only a record of the graph's organisation.
    pub fn is_structural(self) -> bool {
        matches!(
            self,
            Self::Contains | Self::HasStyle | Self::HasBehavior | Self::IsA | Self::Continue
        )
    }
}

/// When a node with several incoming edges fires.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Join {
    /// Once every incoming edge has resolved, on the contexts of those that fired.
    #[default]
    All,
    /// Once, on the first incoming edge that fires, with that edge's context
    /// alone: the work that only fed the node is superseded then.
    Any,
}

impl Join {
    /// Left out of the stored graph, so graphs without `join` stay as they were.
    pub fn is_all(&self) -> bool {
        *self == Self::All
    }
}

/// One step of the workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Node {
    /// Unique within the graph; `{{id.field}}` reads the node's output.
    #[schemars(length(min = 1))]
    pub id: String,
    #[serde(rename = "type")]
    pub kind: NodeKind,
    /// What a Component node calls: an http(s) URL (POSTed the node's input
    /// plus `callback_url`), `workflow://{name}` (a stored workflow run as a
    /// child run), a built-in (`comp_passthrough`, `if_control`, `switch`,
    /// `poll_task`, ...) or a name in the deployment's COMPONENTS map.
    #[serde(
        rename = "componentId",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub component_id: Option<String>,
    /// Laid over the node's incoming context; `{{a.b.c}}` placeholders are
    /// resolved against upstream outputs, then the context.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    #[schemars(with = "Option<Map<String, Value>>")]
    pub data: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// How long a pending answer may wait for its callback before the node
    /// fails with `wait_timeout` (default: the deployment's
    /// PAUSED_RUN_TTL_SECONDS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_WAIT_SECONDS))]
    pub wait_timeout_seconds: Option<u64>,
    /// When a node with several incoming edges fires. `all` (the default):
    /// once every incoming edge has resolved, on the contexts of those that
    /// fired. `any`: once, on the first incoming edge that fires, with that
    /// branch's context alone; the work that only fed the node (every path
    /// from it leads into this node) is then superseded: its open waits close
    /// as `superseded` (their callbacks are answered `200 {"noop": true,
    /// "reason": "superseded"}`), its queued calls and FOREACH items never
    /// start, and nothing after it runs. Branches that also lead elsewhere
    /// carry on. If every incoming edge is skipped, the node is skipped.
    /// `any` needs at least two incoming edges.
    #[serde(default, skip_serializing_if = "Join::is_all")]
    pub join: Join,
}

/// A directed link that fires or is skipped when its source finishes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Edge {
    #[schemars(length(min = 1))]
    pub from: String,
    #[schemars(length(min = 1))]
    pub to: String,
    /// Absent or null: PIPE.
    #[serde(rename = "type", default)]
    #[schemars(with = "Option<EdgeKind>")]
    pub kind: EdgeKind,
    /// IF: `key === value`, `!==`, `==`, `!=`, `>`, `>=`, `<`, `<=`, truthy `key`, `!key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// ON_BRANCH: fires when the source's `branch` (or `data.branch`, or a
    /// boolean result as "true"/"false") equals this, compared as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<BranchLabel>")]
    pub branch: Option<String>,
    /// FOREACH: the name each item is bound to (default `item`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterator: Option<String>,
    /// FOREACH: a context path to the array to iterate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<String>,
    /// FOREACH only: at most this many items in flight (called or paused) at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_concurrency: Option<u32>,
    /// FOREACH only: the target still succeeds with up to this many failed items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerated_failures: Option<u32>,
    /// FOREACH only: the target still succeeds while failed items are at
    /// most this percentage of all items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub tolerated_failure_percent: Option<f64>,
}

impl Edge {
    /// Whether a FOREACH that had `failed` of `count` items fail still
    /// succeeds. With no tolerance set, any failed item fails it; with both
    /// set, passing either fails it.
    pub fn tolerates(&self, failed: usize, count: usize) -> bool {
        if failed == 0 {
            return true;
        }
        if self.tolerated_failures.is_none() && self.tolerated_failure_percent.is_none() {
            return false;
        }
        let by_count = self.tolerated_failures.is_none_or(|n| failed <= n as usize);
        let by_percent = self
            .tolerated_failure_percent
            .is_none_or(|p| failed as f64 * 100.0 <= p * count as f64);
        by_count && by_percent
    }
}

/// A workflow graph as `POST /execute` and `PUT /workflows/{name}` take it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Graph {
    /// The graph's id (free text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The graph's name; a run started from it is listed under this name
    /// unless it was started by a stored workflow's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[schemars(length(min = 1))]
    pub nodes: Vec<Node>,
    /// May be left out on single-node graphs.
    #[serde(default)]
    #[schemars(with = "Option<Vec<Edge>>")]
    pub edges: Vec<Edge>,
    /// A template reference that names nothing fails its node, instead of
    /// staying as written with a warning in the trace. Off (and left out of
    /// the stored graph) by default, as the engine we descend from has it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[schemars(with = "Option<bool>")]
    pub strict_templates: bool,
}

/// An ON_BRANCH edge's label: text, or a boolean or number taken as its text.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum BranchLabel {
    Text(String),
    Flag(bool),
    Number(f64),
}

/// Parses a graph from JSON, collecting every shape problem (wrong types,
/// missing fields, unknown node or edge types) rather than stopping at the first.
pub fn parse_graph(value: &Value, problems: &mut Vec<Problem>) -> Option<Graph> {
    let Some(obj) = value.as_object() else {
        problems.push(Problem::new("graph", "must be a JSON object"));
        return None;
    };
    let id = optional_string(obj, "id", "graph.id", problems);
    let name = optional_string(obj, "name", "graph.name", problems);
    let nodes = parse_list(obj, "nodes", true, problems, parse_node);
    // Existing workflows omit `edges` on single-node graphs.
    let edges = parse_list(obj, "edges", false, problems, parse_edge);
    let strict_templates = match obj.get("strict_templates") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(strict)) => *strict,
        Some(_) => {
            problems.push(Problem::new(
                "graph.strict_templates",
                "must be true or false (true: a template reference that names nothing fails \
                 its node)",
            ));
            false
        }
    };
    Some(Graph {
        id,
        name,
        nodes,
        edges,
        strict_templates,
    })
}

/// Parses the array under `key`, item by item, reporting each bad item at `key[i]`.
fn parse_list<T>(
    obj: &Map<String, Value>,
    key: &str,
    required: bool,
    problems: &mut Vec<Problem>,
    parse: fn(&Value, &str, &mut Vec<Problem>) -> Option<T>,
) -> Vec<T> {
    match obj.get(key) {
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .filter_map(|(i, v)| parse(v, &format!("{key}[{i}]"), problems))
            .collect(),
        None | Some(Value::Null) if !required => Vec::new(),
        None => {
            problems.push(Problem::new(format!("graph.{key}"), "is required"));
            Vec::new()
        }
        Some(_) => {
            problems.push(Problem::new(format!("graph.{key}"), "must be an array"));
            Vec::new()
        }
    }
}

fn parse_node(value: &Value, at: &str, problems: &mut Vec<Problem>) -> Option<Node> {
    let Some(obj) = value.as_object() else {
        problems.push(Problem::new(at, "must be an object"));
        return None;
    };
    let id = required_string(obj, "id", at, problems);
    let kind = match obj.get("type").and_then(Value::as_str) {
        Some(t) if t.eq_ignore_ascii_case("input") => Some(NodeKind::Input),
        Some(t) if t.eq_ignore_ascii_case("component") => Some(NodeKind::Component),
        Some(t) if t.eq_ignore_ascii_case("output") => Some(NodeKind::Output),
        Some(t) => {
            problems.push(Problem::new(
                format!("{at}.type"),
                format!("unknown node type '{t}' (expected Input, Component or Output)"),
            ));
            None
        }
        None => {
            problems.push(Problem::new(format!("{at}.type"), "is required (a string)"));
            None
        }
    };
    let component_id = optional_string(obj, "componentId", &format!("{at}.componentId"), problems);
    let label = optional_string(obj, "label", &format!("{at}.label"), problems);
    let data = match obj.get("data") {
        Some(Value::Object(m)) => m.clone(),
        Some(Value::Null) | None => Map::new(),
        Some(_) => {
            problems.push(Problem::new(format!("{at}.data"), "must be an object"));
            Map::new()
        }
    };
    let wait_timeout_seconds = match obj.get("wait_timeout_seconds") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n))
            if n.as_u64()
                .is_some_and(|s| (1..=MAX_WAIT_SECONDS).contains(&s)) =>
        {
            n.as_u64()
        }
        Some(_) => {
            problems.push(Problem::new(
                format!("{at}.wait_timeout_seconds"),
                format!("must be a whole number of seconds from 1 to {MAX_WAIT_SECONDS}"),
            ));
            None
        }
    };
    let join = match obj.get("join") {
        None | Some(Value::Null) => Join::All,
        Some(Value::String(j)) if j == "all" => Join::All,
        Some(Value::String(j)) if j == "any" => Join::Any,
        Some(_) => {
            problems.push(Problem::new(
                format!("{at}.join"),
                "must be \"all\" (the default) or \"any\"",
            ));
            Join::All
        }
    };
    // Keep a node that has an id even when other fields are wrong, so that
    // validation can still report the graph's structural problems with it.
    // Its problems are already recorded; the stand-in kind adds none.
    Some(Node {
        id: id?,
        kind: kind.unwrap_or(NodeKind::Input),
        component_id,
        data,
        label,
        wait_timeout_seconds,
        join,
    })
}

fn parse_edge(value: &Value, at: &str, problems: &mut Vec<Problem>) -> Option<Edge> {
    let Some(obj) = value.as_object() else {
        problems.push(Problem::new(at, "must be an object"));
        return None;
    };
    let from = required_string(obj, "from", at, problems);
    let to = required_string(obj, "to", at, problems);
    let kind = match obj.get("type") {
        // Existing workflows omit the type on plain data-flow edges.
        None | Some(Value::Null) => Some(EdgeKind::Pipe),
        Some(Value::String(t)) => {
            let kind = EdgeKind::parse(t);
            if kind.is_none() {
                problems.push(Problem::new(
                    format!("{at}.type"),
                    format!("unknown edge type '{t}'"),
                ));
            }
            kind
        }
        Some(_) => {
            problems.push(Problem::new(format!("{at}.type"), "must be a string"));
            None
        }
    };
    let condition = optional_string(obj, "condition", &format!("{at}.condition"), problems);
    let branch = match obj.get("branch") {
        // Branch labels are compared as strings; accept `true`/`3` as written.
        Some(Value::Bool(b)) => Some(b.to_string()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => optional_string(obj, "branch", &format!("{at}.branch"), problems),
    };
    let iterator = optional_string(obj, "iterator", &format!("{at}.iterator"), problems);
    let items = optional_string(obj, "items", &format!("{at}.items"), problems);
    let max_concurrency = optional_count(obj, "max_concurrency", 1, at, problems);
    let tolerated_failures = optional_count(obj, "tolerated_failures", 0, at, problems);
    let tolerated_failure_percent = match obj.get("tolerated_failure_percent") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_f64().is_some_and(|p| (0.0..=100.0).contains(&p)) => {
            n.as_f64()
        }
        Some(_) => {
            problems.push(Problem::new(
                format!("{at}.tolerated_failure_percent"),
                "must be a number from 0 to 100",
            ));
            None
        }
    };
    Some(Edge {
        from: from?,
        to: to?,
        kind: kind.unwrap_or(EdgeKind::Pipe),
        condition,
        branch,
        iterator,
        items,
        max_concurrency,
        tolerated_failures,
        tolerated_failure_percent,
    })
}

/// A whole number field of at least `min` (and at most `u32::MAX`).
fn optional_count(
    obj: &Map<String, Value>,
    key: &str,
    min: u64,
    at: &str,
    problems: &mut Vec<Problem>,
) -> Option<u32> {
    match obj.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_u64().is_some_and(|v| v >= min) => Some(
            n.as_u64()
                .map_or(u32::MAX, |v| v.min(u32::MAX as u64) as u32),
        ),
        Some(_) => {
            problems.push(Problem::new(
                format!("{at}.{key}"),
                format!("must be a whole number of at least {min}"),
            ));
            None
        }
    }
}

fn required_string(
    obj: &Map<String, Value>,
    key: &str,
    at: &str,
    problems: &mut Vec<Problem>,
) -> Option<String> {
    match obj.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::String(_)) => {
            problems.push(Problem::new(format!("{at}.{key}"), "must not be empty"));
            None
        }
        Some(_) => {
            problems.push(Problem::new(format!("{at}.{key}"), "must be a string"));
            None
        }
        None => {
            problems.push(Problem::new(format!("{at}.{key}"), "is required"));
            None
        }
    }
}

fn optional_string(
    obj: &Map<String, Value>,
    key: &str,
    at: &str,
    problems: &mut Vec<Problem>,
) -> Option<String> {
    match obj.get(key) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Null) | None => None,
        Some(_) => {
            problems.push(Problem::new(at, "must be a string"));
            None
        }
    }
}
