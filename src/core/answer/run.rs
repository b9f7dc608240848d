//! Answers about one run: a trigger's or retry's outcome, `GET /runs/{id}`,
//! what a daemon's callback or heartbeat is told, and the final callback's
//! payload.

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{Map, Value};

use super::{False, GraphDocument, TextOrNull, Timestamp, True};
use crate::core::graph::Graph;
use crate::core::progress::NodeProgress;
use crate::core::record::{ClosedWait, DeliveryAttempt, RunError, RunStatusName, TraceEntry, Wait};
use crate::core::run::Noop;

/// The answer to a trigger or a retry: the run as the request left it.
/// `running` goes on in the background (read it with `GET /runs/{run_id}`).
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RunOutcome<'a> {
    pub run_id: &'a str,
    #[serde(flatten)]
    pub outcome: Outcome<'a>,
    /// From the run's start to its end, or so far (waiting included).
    pub duration_ms: u64,
    /// Retries so far (absent before the first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    pub trace: &'a [TraceEntry],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_truncated: Option<TraceTruncated>,
}

/// A trigger's outcome by the run's status.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome<'a> {
    /// Continuing in the background: it reached the invocation's call budget.
    Running {
        success: True,
    },
    /// Waiting: `task_id` and `paused_node_id` name the newest wait (the one
    /// this request caused), `waits` lists every open one.
    Paused {
        success: True,
        paused: True,
        #[serde(skip_serializing_if = "Option::is_none")]
        task_id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        paused_node_id: Option<&'a str>,
        waits: Vec<&'a Wait>,
    },
    Completed {
        success: True,
        /// The Output node's output (a map by node id if there are several); free-form.
        data: &'a Value,
    },
    Failed {
        success: False,
        error: &'a RunError,
        #[serde(skip_serializing_if = "Option::is_none")]
        failed_node: Option<&'a str>,
    },
    Cancelled {
        success: False,
    },
}

/// How many trace entries were dropped to keep the trace bounded (the oldest go first).
#[derive(Debug, Clone, Copy, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct TraceTruncated {
    #[schemars(range(min = 1))]
    pub dropped_entries: u64,
}

/// `GET /runs/{run_id}`: the run's status, open and closed waits, result,
/// trace, times and final-callback delivery. Always current: it reads
/// through the run's gate.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RunDetails<'a> {
    pub run_id: &'a str,
    #[serde(flatten)]
    pub state: RunState<'a>,
    /// The stored workflow it was started from, or the graph's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow: Option<&'a str>,
    /// Retries so far (absent before the first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// Open waits: nodes (or FOREACH items) waiting for a callback, a poll or a deadline.
    pub waits: Vec<&'a Wait>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub closed_waits: Vec<ClosedWaitView<'a>>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// From the run's start to its end, or so far (waiting included).
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub final_callback: Option<FinalCallbackView>,
    /// Each delivery attempt of the final callback, oldest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliveries: Option<&'a [DeliveryAttempt]>,
    pub trace: &'a [TraceEntry],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_truncated: Option<TraceTruncated>,
    /// The graph the run started with (component URLs shown without their
    /// query or credentials).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<GraphDocument>")]
    pub graph: Option<Graph>,
    /// Where each node of the graph stands, in the graph's order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeProgress>,
}

/// `GET /runs/{run_id}/nodes/{node_id}`: one node, with what it was given
/// and what it gave, while the run holds them.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct NodeDetails<'a> {
    /// `false` when the run failed or was cancelled.
    pub success: bool,
    pub run_id: &'a str,
    #[serde(flatten)]
    pub node: NodeProgress,
    /// The context that reached the node, while it is being called, is
    /// paused, or failed (what its component is given, before the node's
    /// `data` is laid over it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<Map<String, Value>>,
    /// What the node produced, once it has; free-form.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// `false` once the run has completed or been cancelled: a finished run
    /// keeps its result (`data` on `GET /runs/{run_id}`), not each node's
    /// input and output.
    pub kept: bool,
}

/// A run's status, with what each status carries.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RunState<'a> {
    /// A segment is executing, or the run yielded and continues shortly.
    Running { success: True },
    Paused {
        success: True,
        paused_since: Timestamp,
    },
    Completed {
        success: True,
        /// The run's output; free-form.
        data: &'a Value,
        finished_at: Timestamp,
    },
    Failed {
        success: False,
        error: &'a RunError,
        #[serde(skip_serializing_if = "Option::is_none")]
        failed_node: Option<&'a str>,
        finished_at: Timestamp,
    },
    Cancelled {
        success: False,
        finished_at: Timestamp,
    },
}

/// A closed wait, with its id.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "ClosedWait")]
pub struct ClosedWaitView<'a> {
    pub wait_id: &'a str,
    #[serde(flatten)]
    pub wait: &'a ClosedWait,
}

/// Where the final callback stands.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields, rename = "FinalCallbackState")]
pub struct FinalCallbackView {
    /// The `final_callback_url` without its query.
    pub url: String,
    #[serde(flatten)]
    pub state: DeliveryView,
}

#[derive(Debug, Clone, Copy, Serialize, JsonSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum DeliveryView {
    /// Nothing sent yet: due as soon as the run finishes.
    Waiting,
    /// An attempt failed; the next is at `next_attempt_at`.
    Retrying { next_attempt_at: Timestamp },
    /// The receiver answered 2xx.
    Delivered { at: Timestamp },
    /// The receiver answered `410 Gone`: it does not want this delivery.
    Refused { at: Timestamp },
    /// Every attempt in the retry window failed.
    GaveUp { at: Timestamp },
}

/// What a daemon is told when its callback resumed a wait: small, and of a
/// size that does not grow with the run (the trace, waits and output are at
/// `GET /runs/{run_id}`). Keeps the fields clients of the engine arcrun
/// descends from read.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct CallbackAnswer<'a> {
    /// `false` when the run is now failed or cancelled.
    pub success: bool,
    pub resumed: True,
    pub status: RunStatusName,
    pub run_id: &'a str,
    /// The task this callback ended; when the run went on and paused again
    /// on a wait this callback's segment opened, that wait's task (with
    /// `paused_again` and `paused_node_id`).
    pub task_id: &'a str,
    /// The run went on and paused again on a new wait. A FOREACH item's
    /// callback that leaves the run waiting on other items is answered
    /// `status: paused` without it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_again: Option<True>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_node_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a RunError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_node: Option<&'a str>,
    pub duration_ms: u64,
}

/// A callback kept durably in the run's Durable Object and applied later; do
/// not send it again. Either it arrived while a segment of its run was
/// executing and applying it took longer than 3 s (it is applied when the
/// segment ends; `status` is `running`), or it arrived before its wait opened
/// (the call that opens it was lost to a crash and is made again): it is held
/// and applied the moment the wait opens (`held`, `status` is the run's).
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct CallbackAccepted<'a> {
    pub success: True,
    pub accepted: True,
    /// The wait was not open yet: the callback is held until it opens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<True>,
    pub status: RunStatusName,
    pub run_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<&'a str>,
}

/// A callback, heartbeat or legacy resume that changed nothing, and why.
/// `success` follows the run: `false` when it failed or was cancelled.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields, rename = "Noop")]
pub struct NoopAnswer<'a> {
    pub success: bool,
    pub noop: True,
    pub reason: Noop,
    /// Where the run stands (absent when there is no such run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<RunStatusName>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<&'a str>,
    /// The task id the request carried.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<&'a str>,
}

/// A heartbeat applied to an open wait.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct HeartbeatAccepted {
    pub success: True,
    /// The wait's deadline now.
    pub expires_at: Timestamp,
    /// The wait's callback URL: the one the component was handed, good while
    /// the wait may last (`null` when it cannot be signed again).
    #[schemars(with = "TextOrNull")]
    pub callback_url: Option<String>,
    /// The wait's heartbeat URL, good while the wait may last.
    #[schemars(with = "TextOrNull")]
    pub heartbeat_url: Option<String>,
}

/// The final callback's payload: the run's outcome, POSTed to the
/// `final_callback_url` when the run ends, signed per Standard Webhooks.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct FinalEvent<'a> {
    /// `run.completed`, `run.failed` or `run.cancelled`.
    #[serde(rename = "type")]
    pub event_type: &'a str,
    pub run_id: &'a str,
    #[serde(flatten)]
    pub outcome: FinalOutcome<'a>,
    /// The stored workflow it was started from, or the graph's name (`null` if neither).
    #[schemars(with = "TextOrNull")]
    pub workflow: Option<&'a str>,
    pub created_at: Timestamp,
    pub finished_at: Timestamp,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum FinalOutcome<'a> {
    Completed {
        success: True,
        /// The run's output; free-form.
        data: &'a Value,
    },
    Failed {
        success: False,
        error: &'a RunError,
    },
    Cancelled {
        success: False,
    },
}
