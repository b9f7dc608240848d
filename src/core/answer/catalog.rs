//! Answers about many runs and about stored workflows, and `/health`.

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

use super::{GraphDocument, TextOrNull, Timestamp, True};
use crate::core::listing::WorkflowSummary;
use crate::core::record::RunStatusName;

/// `GET /runs`: the key's runs, newest first.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RunList {
    pub success: True,
    pub runs: Vec<ListedRun>,
    /// Where the next page starts; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A listed run, from its KV metadata (a run stored without one shows only `run_id`).
#[derive(Debug, PartialEq, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields, rename = "RunSummary")]
pub struct ListedRun {
    pub run_id: String,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub summary: Option<ListedSummary>,
}

#[derive(Debug, PartialEq, Serialize, JsonSchema)]
pub struct ListedSummary {
    /// The stored workflow it was started from, or the graph's name; `null` if neither.
    #[schemars(with = "TextOrNull")]
    pub workflow: Option<String>,
    #[schemars(with = "RunStatusName")]
    pub status: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub open_waits: usize,
}

/// `GET /workflows`: the key's stored workflows, by name.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct WorkflowList {
    pub success: True,
    pub workflows: Vec<ListedWorkflow>,
    /// Where the next page starts; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A listed workflow (one stored without a summary shows only `name`).
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields, rename = "WorkflowSummary")]
pub struct ListedWorkflow {
    pub name: String,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub summary: Option<WorkflowSummary>,
}

/// `PUT /workflows/{name}`: the workflow as stored.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct WorkflowStored {
    pub success: True,
    pub workflow: SavedWorkflow,
}

#[derive(Debug, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct SavedWorkflow {
    pub name: String,
    #[serde(flatten)]
    pub summary: WorkflowSummary,
}

/// `GET /workflows/{name}`: the stored graph.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields, rename = "StoredWorkflow")]
pub struct WorkflowShown<'a> {
    pub success: True,
    pub workflow: WorkflowBody<'a>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct WorkflowBody<'a> {
    pub name: &'a str,
    #[schemars(with = "GraphDocument")]
    pub graph: &'a Value,
    pub updated_at: Timestamp,
}

/// `DELETE /workflows/{name}`.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct WorkflowDeleted<'a> {
    pub success: True,
    /// The deleted workflow's name.
    pub deleted: &'a str,
}

/// `GET /health`.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Health {
    pub success: True,
    pub ok: True,
    #[schemars(with = "ServiceName")]
    pub service: &'static str,
    /// The deployed release.
    pub version: &'static str,
}

#[derive(JsonSchema)]
#[allow(dead_code)]
enum ServiceName {
    #[serde(rename = "arcrun")]
    Arcrun,
}

impl Health {
    pub fn now() -> Self {
        Self {
            success: True,
            ok: True,
            service: "arcrun",
            version: env!("CARGO_PKG_VERSION"),
        }
    }
}
