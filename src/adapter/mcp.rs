//! `POST /mcp`: a Model Context Protocol server over Streamable HTTP, JSON
//! responses only and no sessions, so an AI agent can start a workflow, get
//! `paused` with its `run_id` and `task_id`, and read the result later. The
//! tools are the API's own routes; the same API keys authenticate.

use serde_json::{json, Map, Value};
use worker::{Env, Response};

use super::catalog;
use super::config::Config;
use super::gate_stub::gate;
use super::http::{json_response, valid_id, ApiError};
use super::ops::Ops;
use super::trigger::execute;
use crate::core::listing::ListQuery;
use crate::core::segment::Command;

/// Protocol revisions this server speaks; the newest is offered when the
/// client asks for one it does not know.
const VERSIONS: [&str; 3] = ["2025-06-18", "2025-03-26", "2024-11-05"];
const TOOLS: &str = include_str!("mcp_tools.json");

const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;

fn rpc_error(id: &Value, code: i64, message: &str) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } })
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
                    a paused run finishes on its own — read it with get_run."
            }))
        }
        "ping" => Ok(json!({})),
        "tools/list" => {
            let tools: Value = serde_json::from_str(TOOLS).unwrap_or_default();
            Ok(json!({ "tools": tools }))
        }
        "tools/call" => call_tool(&params, structured, url, config, env, owner)
            .await
            .map(|(result, spent)| {
                cost = spent;
                result
            }),
        _ => Err((METHOD_NOT_FOUND, format!("no method '{method}'"))),
    };
    let answer = match result {
        Ok(result) => json!({ "jsonrpc": "2.0", "id": id, "result": result }),
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
    let args = params["arguments"].as_object().cloned().unwrap_or_default();
    let text = |key: &str| args.get(key).and_then(Value::as_str).map(str::to_string);
    // Checked as the routes check it, before any gate is asked: a string
    // that cannot be a run id costs nothing.
    let run_id = || {
        let id = text("run_id").ok_or((INVALID_PARAMS, "run_id is required".to_string()))?;
        valid_id(&id).map_err(|_| {
            (
                INVALID_PARAMS,
                "run_id is not a run id (letters, digits, '-' and '_', at most 64)".to_string(),
            )
        })?;
        Ok(id)
    };
    let response = match params["name"].as_str().unwrap_or_default() {
        "execute_workflow" => {
            let mut body: Map<String, Value> = args.clone();
            match body.remove("workflow") {
                Some(Value::String(name)) => {
                    catalog::execute_workflow(
                        None,
                        Value::Object(body),
                        &name,
                        url,
                        config,
                        env,
                        owner,
                    )
                    .await
                }
                _ => execute(None, Value::Object(body), url, config, env, owner).await,
            }
        }
        "get_run" => {
            let run_id = run_id()?;
            let read = Command::Read {
                run_id: run_id.clone(),
                owner: Some(owner),
            };
            gate(env, &run_id, &read).await
        }
        "cancel_run" => {
            let run_id = run_id()?;
            let cancel = Command::Cancel {
                run_id: run_id.clone(),
                owner: Some(owner),
            };
            gate(env, &run_id, &cancel).await
        }
        "list_runs" => {
            // The tool's arguments read as the route's query string would.
            let limit = args
                .get("limit")
                .and_then(Value::as_u64)
                .map(|n| n.to_string());
            let pairs: Vec<(&str, String)> = [
                ("status", text("status")),
                ("cursor", text("cursor")),
                ("limit", limit),
            ]
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect();
            match ListQuery::parse(pairs.iter().map(|(k, v)| (*k, v.as_str()))) {
                Ok(query) => catalog::list_runs(&query, env, &owner).await,
                Err(e) => Err(e.into()),
            }
        }
        other => return Err((INVALID_PARAMS, format!("no tool '{other}'"))),
    };
    let mut response = response.unwrap_or_else(ApiError::into_response);
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
    let result = match structured && !failed {
        true => json!({
            "content": [{ "type": "text", "text": summary(&body) }],
            "structuredContent": body,
            "isError": failed,
        }),
        false => json!({
            "content": [{ "type": "text", "text": body.to_string() }],
            "isError": failed,
        }),
    };
    Ok((result, cost))
}

/// One line saying what a tool's answer says: the run's status (and what
/// it waits on), or how many runs a listing holds.
fn summary(body: &Value) -> String {
    if let Some(runs) = body.get("runs").and_then(Value::as_array) {
        let more = match body.get("cursor").and_then(Value::as_str) {
            Some(_) => " (more with the cursor)",
            None => "",
        };
        return format!("{} runs{more}", runs.len());
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
