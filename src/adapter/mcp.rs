//! `POST /mcp`: a Model Context Protocol server over Streamable HTTP, JSON
//! responses only and no sessions, so an AI agent can start a workflow, get
//! `paused` with its `run_id` and `task_id`, and read the result later. The
//! tools are the API's own routes; the same API keys authenticate.

use serde_json::{json, Map, Value};
use worker::{Env, Response};

use super::catalog;
use super::config::Config;
use super::gate_stub::gate;
use super::http::{json_response, ApiError};
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
        Err(e) => {
            let e = rpc_error(&Value::Null, PARSE_ERROR, &e.message());
            return json_response(400, &e);
        }
    };
    let id = message.get("id").cloned();
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
        "tools/call" => call_tool(&params, url, config, env, owner)
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
    url: &worker::Url,
    config: &Config,
    env: &Env,
    owner: String,
) -> Result<ToolAnswer, (i64, String)> {
    let args = params["arguments"].as_object().cloned().unwrap_or_default();
    let text = |key: &str| args.get(key).and_then(Value::as_str).map(str::to_string);
    let run_id = || {
        text("run_id")
            .filter(|id| !id.is_empty() && id.len() <= 64)
            .ok_or((INVALID_PARAMS, "run_id is required".to_string()))
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
    let result = json!({
        "content": [{ "type": "text", "text": body.to_string() }],
        "structuredContent": body,
        "isError": failed,
    });
    Ok((result, cost))
}
