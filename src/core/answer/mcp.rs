//! The MCP endpoint's JSON-RPC messages, as documented.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A JSON-RPC id: a string or an integer (null only on an error answering a
/// message whose id could not be read).
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum JsonRpcId {
    Text(String),
    Number(i64),
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub enum JsonRpcVersion {
    #[serde(rename = "2.0")]
    V2,
}

/// The id of the request answered, or `null` when it could not be read.
pub struct RpcIdOrNull;

impl JsonSchema for RpcIdOrNull {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "RpcIdOrNull".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "oneOf": [{ "type": "string" }, { "type": "integer" }, { "type": "null" }]
        })
    }
}

/// One JSON-RPC 2.0 message: `initialize`, `ping`, `tools/list` or
/// `tools/call` (tools: execute_workflow, get_run, list_runs, cancel_run,
/// retry_run, redeliver_final_callback, list_workflows, get_workflow,
/// save_workflow, delete_workflow). Without an `id` it is a notification.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct McpRequest {
    pub jsonrpc: JsonRpcVersion,
    pub id: Option<JsonRpcId>,
    pub method: String,
    pub params: Option<Map<String, Value>>,
}

/// A JSON-RPC 2.0 answer: a `result`, or an `error`.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct McpResponse {
    pub jsonrpc: JsonRpcVersion,
    #[schemars(with = "RpcIdOrNull")]
    pub id: Value,
    #[serde(flatten)]
    pub outcome: McpOutcome,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum McpOutcome {
    /// initialize: `{protocolVersion, capabilities, serverInfo,
    /// instructions}`; ping: `{}`; tools/list: `{tools}`; tools/call: a tool
    /// result (`content`, `isError`, and for clients of protocol revision
    /// 2025-06-18 or later `structuredContent`, as the tool's `outputSchema`
    /// says).
    Result(Map<String, Value>),
    Error(RpcError),
}

#[derive(Debug, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RpcError {
    /// -32700 parse error, -32600 invalid request, -32601 no such method,
    /// -32602 invalid params (a tool's arguments: the message names what it
    /// needs), -32603 internal error (the tools could not be described).
    pub code: i64,
    pub message: String,
}

/// `tools/call`: the route's own answer, once. To a client of protocol
/// revision 2025-06-18 or later (its `MCP-Protocol-Version` header) a success
/// is `structuredContent` (the tool's `outputSchema`) beside a one-line
/// summary in `content`; to an older client, and for any error (`isError`:
/// the route answered 4xx/5xx), the answer is the JSON text in `content`.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
#[serde(rename_all = "camelCase")]
pub struct McpToolResult {
    pub content: Vec<McpText>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<ToolAnswer>")]
    pub structured_content: Option<Value>,
    pub is_error: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct McpText {
    #[serde(rename = "type")]
    pub kind: TextKind,
    pub text: String,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TextKind {
    Text,
}

/// What a tool answers: the answer of the route it stands for.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code, clippy::large_enum_variant)]
enum ToolAnswer<'a> {
    Outcome(super::RunOutcome<'a>),
    Details(super::RunDetails<'a>),
    Runs(super::RunList),
    Workflows(super::WorkflowList),
    Workflow(super::WorkflowShown<'a>),
    Stored(super::WorkflowStored),
    Deleted(super::WorkflowDeleted<'a>),
}
