//! `public/schema/graph.json`: the graph types' schema (`core::graph`), the
//! node and edge types accepted in every spelling the parser takes
//! (`EdgeKind::SPELLINGS`), and the rules between fields that the parser
//! checks, made from the same spellings.

use std::borrow::Cow;

use schemars::generate::SchemaSettings;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde_json::{json, Value};

use crate::core::graph::{EdgeKind, Graph, NodeKind};

const DESCRIPTION: &str = "A workflow graph as POST /execute and PUT /workflows/{name} take it (the format of the TypeScript engine arcrun descends from). This schema checks the shape of a graph; the Worker checks the rest when it plans the graph and answers `400 invalid_graph` listing every problem: edges naming unknown nodes, duplicate node ids, cycles, a FOREACH target with other incoming edges, `join: \"any\"` on a node with fewer than two incoming edges, conditions the IF language cannot read, component ids that are not a built-in, an http(s) URL, `workflow://{name}` or a name in the deployment's COMPONENTS, and the deployment's MAX_NODES / MAX_EDGES. Unknown fields are kept with the graph and ignored. Generated from the Worker's graph types (`cargo run --bin gen-docs`).";

pub fn graph_schema() -> Value {
    let mut settings = SchemaSettings::draft2020_12();
    settings.definitions_path = "/$defs".into();
    let generator = SchemaGenerator::new(settings);
    let mut root = generator.into_root_schema_for::<Graph>().to_value();
    root["title"] = json!("arcrun workflow graph");
    root["description"] = json!(DESCRIPTION);
    // A graph's optional fields may be sent as null: not answers.
    super::tidy(&mut root, false);
    let defs = root["$defs"].as_object_mut().expect("$defs");
    defs["Node"]["allOf"] = json!([
        {
            "description": "A Component node needs a componentId.",
            "if": { "required": ["type"], "properties": { "type": spelled(&["Component"], false) } },
            "then": { "required": ["componentId"], "properties": { "componentId": { "type": "string" } } }
        },
        {
            "description": "poll_task's done_when and failed_when are conditions (strings).",
            "if": { "required": ["componentId"], "properties": { "componentId": { "const": "poll_task" } } },
            "then": { "properties": { "data": { "properties": {
                "done_when": { "type": ["string", "null"] },
                "failed_when": { "type": ["string", "null"] }
            } } } }
        }
    ]);
    let only_foreach = [
        "max_concurrency",
        "tolerated_failures",
        "tolerated_failure_percent",
    ];
    defs["Edge"]["allOf"] = json!([
        {
            "description": "An IF edge needs a condition.",
            "if": { "required": ["type"], "properties": { "type": edge_spelled(&[EdgeKind::If]) } },
            "then": { "required": ["condition"], "properties": { "condition": { "type": "string", "minLength": 1 } } }
        },
        {
            "description": "An ON_BRANCH edge needs a branch.",
            "if": { "required": ["type"], "properties": { "type": edge_spelled(&[EdgeKind::OnBranch]) } },
            "then": { "required": ["branch"], "properties": { "branch": {
                "anyOf": [{ "type": "string", "minLength": 1 }, { "type": ["boolean", "number"] }]
            } } }
        },
        {
            "description": "max_concurrency, tolerated_failures and tolerated_failure_percent belong on FOREACH edges (or structural ones, which are never run).",
            "if": { "anyOf": only_foreach.iter().map(|field| json!({
                "required": [field], "properties": { *field: { "not": { "type": "null" } } }
            })).collect::<Vec<_>>() },
            "then": { "required": ["type"], "properties": { "type": edge_spelled(
                &[EdgeKind::Foreach, EdgeKind::Contains, EdgeKind::HasStyle, EdgeKind::HasBehavior, EdgeKind::IsA, EdgeKind::Continue]
            ) } }
        }
    ]);
    root
}

/// A string pattern matching any of `words` in any letter case (and, for
/// edge types, with spaces around).
fn spelled(words: &[&str], padded: bool) -> Value {
    let alternatives: Vec<String> = words
        .iter()
        .map(|w| {
            w.chars()
                .map(|c| {
                    if c.is_ascii_alphabetic() {
                        format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase())
                    } else {
                        c.to_string()
                    }
                })
                .collect()
        })
        .collect();
    let space = if padded { "\\s*" } else { "" };
    json!({ "type": "string", "pattern": format!("^{space}(?:{}){space}$", alternatives.join("|")) })
}

fn edge_spelled(kinds: &[EdgeKind]) -> Value {
    let words: Vec<&str> = EdgeKind::SPELLINGS
        .iter()
        .filter(|(_, kind)| kinds.contains(kind))
        .map(|(word, _)| *word)
        .collect();
    spelled(&words, true)
}

const NODE_TYPES: [&str; 3] = ["Input", "Component", "Output"];

impl JsonSchema for NodeKind {
    fn schema_name() -> Cow<'static, str> {
        "NodeType".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Input, Component or Output, in any letter case.",
            "anyOf": [{ "enum": NODE_TYPES }, spelled(&NODE_TYPES, false)]
        })
    }
}

impl JsonSchema for EdgeKind {
    fn schema_name() -> Cow<'static, str> {
        "EdgeType".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let words: Vec<&str> = EdgeKind::SPELLINGS.iter().map(|(w, _)| *w).collect();
        json_schema!({
            "description": "The edge's kind, in any letter case and with surrounding spaces ignored: PIPE, ON_SUCCESS, ON_FAIL, IF, ON_TRUE, ON_FALSE, ON_BRANCH, FOREACH, ON_CLICK, CALLS_SUBFLOW; the structural CONTAINS, HAS_STYLE, HAS_BEHAVIOR, IS_A and CONTINUE (kept with the graph, never executed); the aliases and Chinese words the engine arcrun descends from takes, each listed in the enum.",
            "anyOf": [{ "enum": words }, spelled(&words, true)]
        })
    }
}
