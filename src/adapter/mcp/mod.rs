//! `POST /mcp`: a Model Context Protocol server over Streamable HTTP, JSON
//! responses only and no sessions, so an AI agent can start a workflow, get
//! `paused` with its `run_id` and `task_id`, and read the result later. The
//! tools are the API's own routes (`tools`), described by the API's own
//! documents (`list`); the same API keys authenticate. This module is the
//! JSON-RPC around them and the shape of a tool's result.

mod list;
mod tools;

use serde_json::{json, Value};
use worker::{Env, Response};

use super::config::Config;
use super::http::{json_response, ApiError};
use super::ops::Ops;
use crate::core::answer::{
    JsonRpcVersion, McpOutcome, McpResponse, McpText, McpToolResult, RpcError, TextKind,
};

/// Protocol revisions this server speaks; the newest is offered when the
/// client asks for one it does not know.
const VERSIONS: [&str; 3] = ["2025-06-18", "2025-03-26", "2024-11-05"];

const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
const INTERNAL_ERROR: i64 = -32603;

fn rpc_error(id: &Value, code: i64, message: &str) -> McpResponse {
    McpResponse {
        jsonrpc: JsonRpcVersion::V2,
        id: id.clone(),
        outcome: McpOutcome::Error(RpcError {
            code,
            message: message.to_string(),
        }),
    }
}

/// One JSON-RPC message, already authenticated as `owner`.
pub async fn handle(
    body: Result<Value, ApiError>,
    structured: bool,
    url: &worker::Url,
    config: &Config,
    env: &Env,
    owner: String,
) -> Response {
    let message = match body {
        Ok(Value::Object(m)) => m,
        Ok(_) => {
            let e = rpc_error(
                &Value::Null,
                INVALID_REQUEST,
                "send one JSON-RPC request object",
            );
            return json_response(400, &e);
        }
        // Too large is not malformed: the same 413 the routes answer.
        Err(e @ ApiError::PayloadTooLarge(_)) => {
            let e = rpc_error(&Value::Null, INVALID_REQUEST, &e.message());
            return json_response(413, &e);
        }
        Err(e) => {
            let e = rpc_error(&Value::Null, PARSE_ERROR, &e.message());
            return json_response(400, &e);
        }
    };
    // JSON-RPC 2.0 exactly, as MCP requires: the version named, and an id
    // that is a string or an integer (never null, a fraction or an object).
    if message.get("jsonrpc") != Some(&json!("2.0")) {
        let e = rpc_error(&Value::Null, INVALID_REQUEST, "\"jsonrpc\" must be \"2.0\"");
        return json_response(400, &e);
    }
    let id = message.get("id").cloned();
    if let Some(id) = &id {
        let valid = id.is_string() || id.is_i64() || id.is_u64();
        if !valid {
            let e = rpc_error(
                &Value::Null,
                INVALID_REQUEST,
                "\"id\" must be a string or an integer",
            );
            return json_response(400, &e);
        }
    }
    let method = message.get("method").and_then(Value::as_str);
    let (Some(id), Some(method)) = (id, method) else {
        // A notification (or a response) wants no answer.
        return match method {
            Some(_) => Response::empty()
                .map(|r| r.with_status(202))
                .unwrap_or_else(|_| json_response(202, &json!({}))),
            None => json_response(400, &rpc_error(&Value::Null, INVALID_REQUEST, "no method")),
        };
    };
    let params = message.get("params").cloned().unwrap_or(Value::Null);
    let mut cost = Vec::new();
    let result = match method {
        "initialize" => {
            let asked = params["protocolVersion"].as_str().unwrap_or_default();
            let version = VERSIONS
                .iter()
                .find(|v| **v == asked)
                .unwrap_or(&VERSIONS[0]);
            Ok(json!({
                "protocolVersion": version,
                "capabilities": { "tools": {} },
                "serverInfo": { "name": "arcrun", "version": env!("CARGO_PKG_VERSION") },
                "instructions": "Run workflow graphs that may pause for long-running components; \
                    a paused run finishes on its own — read it with get_run. The graph format is \
                    in execute_workflow's input schema, with an example in its description; \
                    save_workflow keeps a graph under a name to run again."
            }))
        }
        "ping" => Ok(json!({})),
        "tools/list" => match list::tools(structured) {
            Ok(tools) => Ok(json!({ "tools": tools })),
            Err(e) => Err((
                INTERNAL_ERROR,
                format!("the tools cannot be described: {e}"),
            )),
        },
        "tools/call" => call_tool(&params, structured, url, config, env, owner)
            .await
            .map(|(result, spent)| {
                cost = spent;
                result
            }),
        _ => Err((METHOD_NOT_FOUND, format!("no method '{method}'"))),
    };
    let answer = match result {
        Ok(Value::Object(result)) => McpResponse {
            jsonrpc: JsonRpcVersion::V2,
            id,
            outcome: McpOutcome::Result(result),
        },
        Ok(_) => rpc_error(&id, INTERNAL_ERROR, "a result that is not an object"),
        Err((code, message)) => rpc_error(&id, code, &message),
    };
    let response = json_response(200, &answer);
    for (name, value) in cost {
        let _ = response.headers().set(name, &value);
    }
    response
}

/// A tool's result, and the cost headers of the route that produced it.
type ToolAnswer = (Value, Vec<(&'static str, String)>);

async fn call_tool(
    params: &Value,
    structured: bool,
    url: &worker::Url,
    config: &Config,
    env: &Env,
    owner: String,
) -> Result<ToolAnswer, (i64, String)> {
    let name = params["name"].as_str().unwrap_or_default();
    let arguments = params["arguments"].as_object().cloned().unwrap_or_default();
    let mut response = tools::call(name, arguments, url, config, env, owner)
        .await
        .map_err(|tools::Refused(message)| (INVALID_PARAMS, message))?;
    let failed = response.status_code() >= 400;
    // What the tool's route cost is what this answer cost.
    let mut cost = Vec::new();
    for name in [Ops::HEADER, Ops::DO_HEADER] {
        if let Ok(Some(value)) = response.headers().get(name) {
            cost.push((name, value));
        }
    }
    let body = response.json::<Value>().await.unwrap_or_default();
    // One copy of the answer: as structured content (its shape is each
    // tool's outputSchema) beside a line for a person, to a client that
    // speaks a revision with structured content; as the text otherwise,
    // and always for an error (which the outputSchema does not describe).
    let text = |text: String| McpText {
        kind: TextKind::Text,
        text,
    };
    let result = match structured && !failed {
        true => McpToolResult {
            content: vec![text(summary(&body))],
            structured_content: Some(body),
            is_error: failed,
        },
        false => McpToolResult {
            content: vec![text(body.to_string())],
            structured_content: None,
            is_error: failed,
        },
    };
    Ok((serde_json::to_value(result).unwrap_or_default(), cost))
}

/// One line saying what a tool's answer says: the run's status (and what
/// it waits on), how many runs or workflows a listing holds, or what became
/// of a stored workflow.
fn summary(body: &Value) -> String {
    let more = match body.get("next_cursor").and_then(Value::as_str) {
        Some(_) => " (more with next_cursor)",
        None => "",
    };
    if let Some(runs) = body.get("runs").and_then(Value::as_array) {
        return format!("{} runs{more}", runs.len());
    }
    if let Some(workflows) = body.get("workflows").and_then(Value::as_array) {
        return format!("{} stored workflows{more}", workflows.len());
    }
    if let Some(name) = body.get("deleted").and_then(Value::as_str) {
        return format!("workflow {name} is deleted");
    }
    if let Some(workflow) = body.get("workflow").filter(|w| w.is_object()) {
        let name = workflow["name"].as_str().unwrap_or("?");
        return match workflow["graph"]["nodes"].as_array() {
            Some(nodes) => format!("workflow {name}, {} nodes", nodes.len()),
            None => format!("workflow {name} is stored ({} nodes)", workflow["nodes"]),
        };
    }
    let run_id = body["run_id"].as_str().unwrap_or("?");
    let status = body["status"].as_str().unwrap_or("unknown");
    match body.get("task_id").and_then(Value::as_str) {
        Some(task) if status == "paused" => {
            format!("run {run_id} is paused, waiting on task {task}")
        }
        _ => format!("run {run_id} is {status}"),
    }
}

/// Whether the client speaks a protocol revision with structured tool
/// results (2025-06-18 on). Clients name it on every request after
/// initialize, in the `MCP-Protocol-Version` header; one that does not
/// speaks 2025-03-26 or older.
pub fn speaks_structured(version: Option<&str>) -> bool {
    version.is_some_and(|v| v >= "2025-06-18")
}
