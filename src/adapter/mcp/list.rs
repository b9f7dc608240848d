//! `tools/list`: the tools `tools.json` declares, each schema made
//! self-contained from the API's own documents, compiled in. An input
//! schema's `$ref`s are read as if written in `openapi.json` (so the graph is
//! `schema/graph.json`); a tool's `"output"` names the component of
//! `openapi.json` its route answers with, which becomes its `outputSchema`.
//! When those documents change, the tools follow.

use std::sync::OnceLock;

use serde_json::Value;

use crate::core::schema::Bundle;

const API: &str = include_str!("../../../public/openapi.json");
const GRAPH: &str = include_str!("../../../public/schema/graph.json");
const TOOLS: &str = include_str!("tools.json");

const API_NAME: &str = "openapi.json";
const GRAPH_NAME: &str = "schema/graph.json";

/// The tools, each with its `outputSchema` only for a client that is sent
/// structured content (`structured`, by its protocol revision): a client told
/// of an output schema expects every success to carry structured content.
pub fn tools(structured: bool) -> Result<Value, String> {
    // Built once per isolate: bundling reads a few hundred kilobytes of
    // documents, which no request should pay for twice.
    static TOOL_LIST: OnceLock<Result<Value, String>> = OnceLock::new();
    let mut tools = TOOL_LIST.get_or_init(build).clone()?;
    if !structured {
        for tool in tools.as_array_mut().into_iter().flatten() {
            if let Value::Object(tool) = tool {
                tool.remove("outputSchema");
            }
        }
    }
    Ok(tools)
}

fn build() -> Result<Value, String> {
    let parse = |name: &str, text: &str| {
        serde_json::from_str::<Value>(text).map_err(|e| format!("{name} is not JSON: {e}"))
    };
    let documents = [
        (API_NAME, parse(API_NAME, API)?),
        (GRAPH_NAME, parse(GRAPH_NAME, GRAPH)?),
    ];
    let Value::Array(mut tools) = parse("tools.json", TOOLS)? else {
        return Err("tools.json is not a list".into());
    };
    for tool in &mut tools {
        let Value::Object(tool) = tool else {
            return Err("tools.json holds a tool that is not an object".into());
        };
        let input = tool.remove("inputSchema").unwrap_or_default();
        let input = Bundle::new(&documents)
            .bundle(API_NAME, &input)
            .map_err(|e| e.to_string())?;
        tool.insert("inputSchema".into(), input);
        if let Some(Value::String(component)) = tool.remove("output") {
            let pointer = format!("/components/schemas/{component}");
            let output = Bundle::new(&documents)
                .at(API_NAME, &pointer)
                .map_err(|e| e.to_string())?;
            tool.insert("outputSchema".into(), output);
        }
    }
    Ok(Value::Array(tools))
}
