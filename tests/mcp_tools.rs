//! The MCP tools as `src/adapter/mcp/list.rs` builds them from
//! `src/adapter/mcp/tools.json` and the API's documents, checked natively so
//! that a change to `public/openapi.json` or `public/schema/graph.json` that
//! the tools cannot follow (a component renamed, a `$ref` that leads nowhere)
//! fails `cargo test`, not an agent's `tools/list`. The end-to-end tests
//! (`tests/e2e/mcp-agent.test.mjs`) check the same against the built Worker.

use arcrun::core::plan::{plan_from_json, Directory, GraphLimits};
use arcrun::core::schema::Bundle;
use serde_json::Value;

const API: &str = include_str!("../public/openapi.json");
const GRAPH: &str = include_str!("../public/schema/graph.json");
const TOOLS: &str = include_str!("../src/adapter/mcp/tools.json");

fn documents() -> Vec<(&'static str, Value)> {
    vec![
        ("openapi.json", serde_json::from_str(API).unwrap()),
        ("schema/graph.json", serde_json::from_str(GRAPH).unwrap()),
    ]
}

fn tools() -> Vec<Value> {
    serde_json::from_str(TOOLS).unwrap()
}

/// Every `$ref` outside data points into the schema's own `$defs`.
fn refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    ("enum" | "const" | "default" | "examples", _) => {}
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

fn assert_self_contained(tool: &str, schema: &Value) {
    assert_eq!(
        schema["type"], "object",
        "{tool}: MCP wants an object at the root"
    );
    let mut found = Vec::new();
    refs(schema, &mut found);
    for r in found {
        let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("{tool}: {r}"));
        assert!(pointer.starts_with("/$defs/"), "{tool}: {r}");
        assert!(schema.pointer(pointer).is_some(), "{tool}: {r} resolves");
    }
}

#[test]
fn every_tool_bundles_its_input_and_output_schemas_from_the_documents() {
    let docs = documents();
    let tools = tools();
    assert_eq!(tools.len(), 10);
    for tool in &tools {
        let name = tool["name"].as_str().unwrap();
        let input = Bundle::new(&docs)
            .bundle("openapi.json", &tool["inputSchema"])
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_self_contained(name, &input);
        let component = tool["output"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: output"));
        let output = Bundle::new(&docs)
            .at("openapi.json", &format!("/components/schemas/{component}"))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_self_contained(name, &output);
        let hints = &tool["annotations"];
        for hint in ["readOnlyHint", "destructiveHint", "openWorldHint"] {
            assert!(hints[hint].is_boolean(), "{name}: {hint}");
        }
    }
}

#[test]
fn the_graph_is_described_where_a_tool_takes_one() {
    let docs = documents();
    for tool in tools() {
        let name = tool["name"].as_str().unwrap();
        if tool["inputSchema"]["properties"].get("graph").is_none() {
            continue;
        }
        let input = Bundle::new(&docs)
            .bundle("openapi.json", &tool["inputSchema"])
            .unwrap();
        let graph = &input["properties"]["graph"];
        assert_eq!(
            graph["required"][0], "nodes",
            "{name}: the graph schema itself"
        );
        let text = graph["description"].as_str().unwrap();
        for word in [
            "Input",
            "ON_FAIL",
            "FOREACH",
            "join",
            "{{node_id.field}}",
            "wait_timeout_seconds",
        ] {
            assert!(
                text.contains(word),
                "{name}: the description speaks of {word}"
            );
        }
        for def in ["Node", "Edge", "NodeType", "EdgeType"] {
            assert!(input["$defs"].get(def).is_some(), "{name}: $defs/{def}");
        }
    }
}

#[test]
fn the_example_in_execute_workflows_description_is_a_valid_graph() {
    let tools = tools();
    let execute = tools
        .iter()
        .find(|t| t["name"] == "execute_workflow")
        .unwrap();
    let description = execute["description"].as_str().unwrap();
    let at = description.find("{\"nodes\"").expect("an example graph");
    let example: Value = serde_json::from_str(&description[at..]).unwrap();
    let limits = GraphLimits {
        max_nodes: 100,
        max_edges: 100,
    };
    plan_from_json(&example, &Directory::default(), limits).expect("the example plans");
}
