//! The bodies the API takes, as documented. The routes read them leniently
//! (to name every field that is wrong); these types are their shape.

use std::borrow::Cow;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::Deserialize;
use serde_json::{Map, Value};

/// The graph format, served on its own at `GET /schema/graph.json` and
/// generated from the graph types (`core::graph::GraphInput`).
pub struct GraphDocument;

impl JsonSchema for GraphDocument {
    fn schema_name() -> Cow<'static, str> {
        "Graph".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "$ref": "schema/graph.json",
            "description": "The graph format, also served on its own at GET /schema/graph.json."
        })
    }
}

/// `POST /execute`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ExecuteRequest {
    pub graph: GraphField,
    #[serde(default)]
    pub context: Context,
    #[serde(default)]
    pub final_callback_url: FinalCallbackUrl,
}

/// `POST /workflows/{name}/execute`: a stored workflow runs its own graph,
/// so a `graph` here is refused.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(extend("not" = { "required": ["graph"] }))]
pub struct WorkflowExecuteRequest {
    #[serde(default)]
    pub context: Context,
    #[serde(default)]
    pub final_callback_url: FinalCallbackUrl,
}

/// `PUT /workflows/{name}`: the graph, or `{"graph": ...}`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum WorkflowPutRequest {
    Wrapped { graph: GraphField },
    Bare(GraphField),
}

/// A graph in a request body.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct GraphField(#[schemars(with = "GraphDocument")] pub Value);

/// The trigger context: what start nodes receive (free-form).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Context(pub Option<Map<String, Value>>);

/// Where to POST the run's outcome when it ends (signed per Standard
/// Webhooks; see `webhooks.run-finished`): https, or http to a loopback host
/// (anywhere with `ALLOW_HTTP_CALLBACKS=true`); no credentials in it.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct FinalCallbackUrl(pub Option<String>);

/// The daemon's result, as the engine arcrun descends from takes it. A result
/// fails the node when `success` is false or `error` is present and not null.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct CallbackRequest {
    pub task_id: TaskId,
    pub success: Option<bool>,
    /// The task's output (any JSON).
    pub data: Option<Value>,
    /// The task's error (any JSON).
    pub error: Option<Value>,
}

/// Must be the wait's task (another is `409 task_mismatch`). A daemon that
/// numbers its tasks may send the number: it is taken as its decimal text.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum TaskId {
    Text(String),
    Number(serde_json::Number),
}

/// A daemon's report on a wait it is still working on.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct HeartbeatRequest {
    /// Any JSON, at most 4 KiB: shown on the wait as `progress` (the latest only).
    pub progress: Option<Value>,
    /// Moves the deadline to now + this (never earlier, never past a year
    /// after the wait began).
    #[schemars(range(min = 1))]
    pub extend_seconds: Option<u64>,
}
