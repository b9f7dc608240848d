//! The run record: everything needed to continue a run, and everything a
//! reader is shown. One record per run, stored as one KV value.

use std::collections::BTreeMap;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::graph::Graph;

/// Bumped when the stored shape changes incompatibly.
pub const RECORD_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub version: u32,
    pub run_id: String,
    /// Who started the run (a hash of their API key), when keys are in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    pub graph: Graph,
    /// The context the run was triggered with.
    pub context: Map<String, Value>,
    pub status: RunStatus,
    /// Per node, aligned with `graph.nodes`. Outputs live here, once each.
    pub nodes: Vec<NodeState>,
    /// Open waits by wait id.
    #[serde(default)]
    pub waits: BTreeMap<String, Wait>,
    /// Waits already resumed, so that a repeated callback is recognised.
    #[serde(default)]
    pub resumed: BTreeMap<String, ResumedWait>,
    pub trace: Vec<TraceEntry>,
    /// Entries dropped from the front of `trace` to respect the size limit.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub trace_dropped: usize,
    pub next_wait: u64,
    /// Whether stored contexts are deltas (see `compact.rs`), and the keys
    /// each delta removes, by location (`"{node}"` or `"{node}.{arrival}"`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub contexts_compacted: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ctx_unset: BTreeMap<String, Vec<String>>,
    pub created_at: u64,
    pub updated_at: u64,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Paused { since: u64 },
    Completed { output: Value, finished_at: u64 },
    Failed { error: RunError, finished_at: u64 },
}

impl RunStatus {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused { .. } => "paused",
            Self::Completed { .. } => "completed",
            Self::Failed { .. } => "failed",
        }
    }

    pub fn is_finished(&self) -> bool {
        matches!(self, Self::Completed { .. } | Self::Failed { .. })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunError {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Wait {
    pub wait_id: String,
    pub task_id: String,
    pub node_id: String,
    /// The FOREACH item this wait belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<usize>,
    pub since: u64,
    pub expires_at: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResumedWait {
    pub task_id: String,
    pub node_id: String,
    pub at: u64,
}

/// Where a node stands. Contexts are kept only while a node still needs one
/// (waiting to fire, calling, paused, mapping); finished nodes keep just their output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Nothing has reached the node yet — or the run has finished and its
    /// node states were released.
    Idle,
    /// Some incoming edges have resolved; one slot per incoming edge.
    Waiting {
        arrivals: Vec<Arrival>,
    },
    /// A component call is in flight; `ctx` is the node's incoming context.
    Calling {
        ctx: Map<String, Value>,
    },
    /// The component answered pending; the run waits for `wait_id`.
    Paused {
        ctx: Map<String, Value>,
        wait_id: String,
    },
    /// A FOREACH target running once per item; `slots` fill as items finish.
    Mapping {
        ctx: Map<String, Value>,
        slots: Vec<Option<Value>>,
        remaining: usize,
    },
    Done {
        output: Value,
    },
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arrival {
    Pending,
    Skipped,
    /// Shared: fanning out to many edges does not copy the context per edge.
    Delivered {
        ctx: Rc<Map<String, Value>>,
    },
    /// A FOREACH edge fired: run the target once per item.
    Items {
        ctx: Rc<Map<String, Value>>,
        /// The context each item starts from (the iterated array removed).
        base: Map<String, Value>,
        iterator: String,
        items: Vec<Value>,
        /// Set when no array was found to iterate: the target fails with it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        missing: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TraceStatus {
    Succeeded,
    Failed,
    Paused,
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceEntry {
    pub node_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<usize>,
    pub status: TraceStatus,
    pub at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// True for the record written when a callback completed the node.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resumed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl RunRecord {
    /// Serializes the record within `max_bytes` (KV refuses values over
    /// 25 MiB). Oldest trace entries go first, counted in `trace_dropped` so
    /// readers see the truncation. If the record is still too large, the run
    /// is failed with `record_too_large` and its node state dropped: a clear,
    /// stored failure instead of a write that KV would refuse.
    pub fn to_json_within(&mut self, max_bytes: usize, now: u64) -> String {
        let mut text = self.to_json();
        while text.len() > max_bytes && !self.trace.is_empty() {
            let drop = self.trace.len().div_ceil(2);
            self.trace.drain(..drop);
            self.trace_dropped += drop;
            text = self.to_json();
        }
        if text.len() > max_bytes {
            let size = text.len();
            self.nodes.iter_mut().for_each(|n| *n = NodeState::Idle);
            self.waits.clear();
            self.status = RunStatus::Failed {
                error: RunError {
                    code: "record_too_large".into(),
                    message: format!(
                        "the run's state grew to {size} bytes, over the {max_bytes}-byte limit for a stored run"
                    ),
                    node_id: None,
                },
                finished_at: now,
            };
            text = self.to_json();
        }
        text
    }

    fn to_json(&self) -> String {
        // A record holds only JSON values and plain fields; serializing it cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}
