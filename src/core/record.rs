//! The run record as held in memory while a run executes: status, node
//! states with their contexts, waits and trace. What is written to KV is a
//! separate, versioned type (`stored`), converted on save and load.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::fields::Fields;
use super::graph::Graph;
use super::protocol::{json_depth, CallFailure, Fielded};
use super::template::{json_size, walk};

/// The JSON object that flows along edges: held as `Fields`, so contexts
/// along a chain share what they have in common.
pub type Context = Fields;

#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub run_id: String,
    /// Who started the run (a hash of their API key), when keys are in use.
    pub owner: Option<String>,
    pub graph: Graph,
    /// The context the run was triggered with, with the date variables
    /// (`core::dates`) it holds once for every node.
    pub context: Map<String, Value>,
    /// Origin of the callback URLs handed to this run's components, fixed when
    /// the run starts so that alarms (which have no request) can sign them.
    pub callback_base: Option<String>,
    pub status: RunStatus,
    /// Per node, aligned with `graph.nodes`. Outputs live here, once each.
    pub nodes: Vec<NodeState>,
    /// Open waits by wait id.
    pub waits: BTreeMap<String, Wait>,
    /// Waits that are closed — resumed, timed out, cancelled or superseded — so a late or
    /// repeated callback is answered with the reason.
    pub closed: BTreeMap<String, ClosedWait>,
    /// Callbacks that came for waits not open yet, by wait id: their call
    /// was made and the daemon answered before the run took the pending
    /// answer (a crash lost it, and the call is due again). Applied the
    /// moment the wait opens, judged at their arrival.
    pub early: BTreeMap<String, EarlyCallback>,
    pub trace: Vec<TraceEntry>,
    /// Entries dropped from the front of `trace` to respect the size limit.
    pub trace_dropped: usize,
    /// Segments begun so far; the current one's number is sent to components.
    pub segments: u64,
    /// Where to tell the caller that the run finished, if they asked.
    pub final_callback: Option<FinalCallback>,
    /// The stored workflow the run was started from, or the graph's own name.
    pub workflow: Option<String>,
    /// Retries so far (`POST /runs/{id}/retry`): 0 for the first attempt.
    /// Wait ids carry it, so a callback meant for an earlier attempt can
    /// never resume a later one.
    pub attempt: u32,
    /// 0 for a run started by a caller; a sub-workflow's run is one deeper
    /// than the run that called it.
    pub depth: u32,
    /// A sub-workflow's run: the run at the top of its tree, whose budget
    /// of child runs it draws on (`core::budget`). `None` for a run started
    /// by a caller, which is its own root.
    pub root: Option<String>,
    pub created_at: u64,
    pub updated_at: u64,
    /// How many times the record has been written to KV: the gate stores the
    /// number it last wrote in its own storage, so a read of KV that returns
    /// an older record (a lagging read) is recognised instead of taken as the
    /// run.
    pub revision: u64,
}

/// Stored externally tagged, like every other enum of the record:
/// `"running"`, `{"paused": {"since": 5}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Executing now, or stopped at the end of an invocation's call budget
    /// and due to continue in the next.
    Running,
    Paused {
        since: u64,
    },
    Completed {
        output: Value,
        finished_at: u64,
    },
    Failed {
        error: RunError,
        finished_at: u64,
    },
    Cancelled {
        finished_at: u64,
    },
}

/// A run's status, as every answer names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatusName {
    Running,
    Paused,
    Completed,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub fn kind(&self) -> RunStatusName {
        match self {
            Self::Running => RunStatusName::Running,
            Self::Paused { .. } => RunStatusName::Paused,
            Self::Completed { .. } => RunStatusName::Completed,
            Self::Failed { .. } => RunStatusName::Failed,
            Self::Cancelled { .. } => RunStatusName::Cancelled,
        }
    }

    /// Whether answers about the run say `success: true`: it has not failed
    /// and was not cancelled.
    pub fn is_success(&self) -> bool {
        !matches!(self, Self::Failed { .. } | Self::Cancelled { .. })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused { .. } => "paused",
            Self::Completed { .. } => "completed",
            Self::Failed { .. } => "failed",
            Self::Cancelled { .. } => "cancelled",
        }
    }

    pub fn is_finished(&self) -> bool {
        matches!(
            self,
            Self::Completed { .. } | Self::Failed { .. } | Self::Cancelled { .. }
        )
    }

    pub fn finished_at(&self) -> Option<u64> {
        match self {
            Self::Completed { finished_at, .. }
            | Self::Failed { finished_at, .. }
            | Self::Cancelled { finished_at } => Some(*finished_at),
            Self::Running | Self::Paused { .. } => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunError {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Wait {
    pub wait_id: String,
    pub task_id: String,
    pub node_id: String,
    /// The FOREACH item this wait belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<usize>,
    pub since: u64,
    /// The deadline: past it the wait closes and the node takes its timeout path.
    pub expires_at: u64,
    /// A status URL the engine polls while it waits (`poll_task`, or a
    /// pending answer's `status_url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll: Option<Poll>,
    /// The latest progress a heartbeat reported, and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_at: Option<u64>,
    /// What reached the wait — callbacks, heartbeats, polls — and how each
    /// was taken; the most recent 20 (`MAX_WAIT_EVENTS`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<WaitEvent>,
}

pub const MAX_WAIT_EVENTS: usize = 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WaitEvent {
    pub at: u64,
    pub kind: EventKind,
    pub outcome: EventOutcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Callback,
    Heartbeat,
    Poll,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventOutcome {
    /// It resumed the wait, or (a heartbeat) was applied, or (a poll) was answered.
    Accepted,
    /// The wait had already been resumed.
    Duplicate,
    /// After the wait's deadline, after the run finished, or after the
    /// wait was superseded.
    Late,
    /// Before the run had opened the wait (say, the segment that made the
    /// call died before it was saved; the call is made again and a retry of
    /// the callback then finds the wait).
    Early,
    /// The body named another task.
    TaskMismatch,
    /// A poll that got no usable answer.
    Failed,
}

impl Wait {
    /// Records what reached the wait, keeping the most recent few.
    pub fn note(&mut self, at: u64, kind: EventKind, outcome: EventOutcome) {
        self.events.push(WaitEvent { at, kind, outcome });
        let excess = self.events.len().saturating_sub(MAX_WAIT_EVENTS);
        self.events.drain(..excess);
    }
}

/// Polling a status URL: what to send, when next, and how it has gone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Poll {
    pub url: String,
    pub method: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    pub interval_ms: u64,
    pub next_at: u64,
    /// Polls answered so far.
    #[serde(default)]
    pub attempts: u32,
    /// Polls in a row that got no usable answer.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub errors: u32,
    /// Conditions (the `IF` language, over the status body) that override
    /// the default reading of done and failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_when: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_when: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
    pub kind: PollKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PollKind {
    /// A `poll_task` node: polling is the only way the wait ends (or its deadline).
    Task,
    /// A pending answer's `status_url`: polled beside the callback; whichever
    /// reports first resumes the wait, and polling gives up quietly on errors.
    StatusUrl,
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WaitClosed {
    Resumed,
    /// Its status URL reported the task finished.
    Polled,
    TimedOut,
    Cancelled,
    /// A `join: "any"` node it only fed fired on another branch first: its
    /// result is no longer wanted.
    // Added after v3 first shipped; records without it read as before.
    Superseded,
}

/// A callback held until its wait opens (`RunRecord::early`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EarlyCallback {
    pub body: Value,
    pub arrived: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_expires_at: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ClosedWait {
    pub task_id: String,
    pub node_id: String,
    /// The FOREACH item the wait belonged to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<usize>,
    pub at: u64,
    pub how: WaitClosed,
    /// What reached the wait while it was open.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<WaitEvent>,
}

/// Where a node stands. Contexts are kept only while a node still needs one
/// (waiting to fire, calling, paused, mapping); finished nodes keep just their output.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeState {
    /// Nothing has reached the node yet — or the run has completed or been
    /// cancelled and its node states were released.
    Idle,
    /// Some incoming edges have resolved; one slot per incoming edge.
    Waiting {
        arrivals: Vec<Arrival>,
    },
    /// The node's component call is issued, or due to be (after a yield or a
    /// crash the call is issued again); `ctx` is the node's incoming context.
    Calling {
        ctx: Context,
    },
    /// The component answered pending; the run waits for `wait_id`.
    Paused {
        ctx: Context,
        wait_id: String,
    },
    /// A FOREACH target running once per item.
    Mapping(Box<Mapping>),
    Done {
        output: NodeOutput,
    },
    Skipped,
    /// In a failed run: the node failed, or was cut short (calling or
    /// paused) when the run failed. A retry fires it again with `ctx`.
    Failed {
        ctx: Context,
    },
}

/// A finished node's output. An object is held as `Fields`, so an output
/// that repeats the context its node was given (an Input or Output node, a
/// pass-through) is that context, not a copy of it.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeOutput {
    Object(Fields),
    Other(Value),
}

impl NodeOutput {
    /// A top-level field of an object output.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Self::Object(fields) => fields.get(key),
            Self::Other(v) => v.get(key),
        }
    }

    /// What `path`'s segments name inside the output (the first is a
    /// top-level field), as templates read `{{node_id.path}}`.
    pub fn walk<'a, 'p>(&'a self, mut parts: impl Iterator<Item = &'p str>) -> Option<&'a Value> {
        match self {
            Self::Object(fields) => match parts.next() {
                Some(first) => walk(fields.get(first)?, parts),
                None => Some(fields.as_value()),
            },
            Self::Other(v) => walk(v, parts),
        }
    }

    /// Its size as JSON text (`template::json_size`).
    pub fn json_size(&self) -> usize {
        match self {
            Self::Object(fields) => fields.json_size(),
            Self::Other(v) => json_size(v),
        }
    }

    /// How deeply it nests (`protocol::json_depth`).
    pub fn json_depth(&self) -> usize {
        match self {
            Self::Object(fields) => {
                1 + fields.iter().map(|(_, v)| json_depth(v)).max().unwrap_or(0)
            }
            Self::Other(v) => json_depth(v),
        }
    }

    pub fn as_fields(&self) -> Option<&Fields> {
        match self {
            Self::Object(fields) => Some(fields),
            Self::Other(_) => None,
        }
    }

    /// The output as plain JSON; an object is copied out of its shared form.
    pub fn to_value(&self) -> Value {
        match self {
            Self::Object(fields) => Value::Object(fields.to_map()),
            Self::Other(v) => v.clone(),
        }
    }

    pub fn into_value(self) -> Value {
        match self {
            Self::Object(fields) => fields.into(),
            Self::Other(v) => v,
        }
    }
}

impl Fielded for NodeOutput {
    fn field(&self, key: &str) -> Option<&Value> {
        self.get(key)
    }
}

impl From<Value> for NodeOutput {
    fn from(v: Value) -> Self {
        match v {
            Value::Object(map) => Self::Object(map.into()),
            other => Self::Other(other),
        }
    }
}

impl From<Fields> for NodeOutput {
    fn from(fields: Fields) -> Self {
        Self::Object(fields)
    }
}

impl Serialize for NodeOutput {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Object(fields) => fields.serialize(serializer),
            Self::Other(v) => v.serialize(serializer),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Mapping {
    /// The node's incoming context (flows on once every item is done).
    pub ctx: Context,
    /// What each item's context starts from: `ctx` without the iterated array.
    pub base: Context,
    /// The name each item is bound to.
    pub iterator: String,
    pub items: Vec<ItemState>,
    /// Items not yet `Done`.
    pub remaining: usize,
    /// No `Held` item comes before this index (a search hint, not stored).
    pub next_held: usize,
}

/// Equal when the stored parts are: `next_held` is a search hint, rebuilt
/// on load, and two equal mappings may hold different hints.
impl PartialEq for Mapping {
    fn eq(&self, other: &Self) -> bool {
        self.ctx == other.ctx
            && self.base == other.base
            && self.iterator == other.iterator
            && self.items == other.items
            && self.remaining == other.remaining
    }
}

impl Mapping {
    /// Items called or paused: started and not yet done.
    pub fn in_flight(&self) -> usize {
        self.items
            .iter()
            .filter(|i| matches!(i, ItemState::Todo(_) | ItemState::Paused { .. }))
            .count()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ItemState {
    /// Not finished: its call is issued or due to be. Holds the item value
    /// so the call can be built (again).
    Todo(Value),
    Paused {
        wait_id: String,
    },
    Done(Value),
    /// Not started: held back by the edge's `max_concurrency` until an item
    /// in flight finishes (or, in a failed run, until a retry).
    Held(Value),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Arrival {
    Pending,
    Skipped,
    /// Fanning out to many edges shares the context (`Fields`).
    Delivered {
        ctx: Context,
    },
    /// A FOREACH edge fired: run the target once per item.
    Items {
        ctx: Context,
        /// The context each item starts from (the iterated array removed).
        base: Context,
        iterator: String,
        items: Vec<Value>,
        /// Set when no array was found to iterate: the target fails with it.
        missing: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TraceStatus {
    Succeeded,
    Failed,
    Paused,
    Skipped,
    /// Not run, or cut short: it only fed a `join: "any"` node that fired
    /// on another branch.
    Superseded,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
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
    /// Present on the entry written when a callback (or poll) completed the node.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resumed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The failure's machine-readable code, when it has one: the engine's
    /// own (`wait_timeout`, `connection_refused`, … see
    /// `protocol::CallFailure`) or a component's `error.code`. (Added after
    /// v3 first shipped; records without it read as before.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        description = "A failed node's error as a stable code: the engine's own (`wait_timeout`, `connection_failed`, `dns_failure`, `tls_failure`, `timeout`, `http_status`, `redirect`, `not_json`, `response_too_large`, `unresolved_template`, ...) or the component's `error.code`."
    )]
    pub error_code: Option<String>,
    /// What went wrong short of failing: template references in the node's
    /// data that named nothing (left as written). At most
    /// `template::MAX_UNRESOLVED_KEPT` lines, plus one counting the rest,
    /// each of bounded length. (Added after v3 first shipped.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        description = "Template references in the node's data that named nothing (left as written): at most five, then one line counting the rest.",
        length(max = 6)
    )]
    pub warnings: Vec<String>,
    /// The attempt this entry belongs to (0, omitted, for the first).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub attempt: u32,
}

impl RunRecord {
    /// The run at the top of this run's sub-workflow tree.
    pub fn root_run(&self) -> &str {
        self.root.as_deref().unwrap_or(&self.run_id)
    }

    /// The earliest deadline among open waits.
    pub fn next_deadline(&self) -> Option<u64> {
        self.waits.values().map(|w| w.expires_at).min()
    }

    /// The earliest time a paused run must act: a deadline or a poll.
    pub fn next_timer(&self) -> Option<u64> {
        let polls = self
            .waits
            .values()
            .filter_map(|w| w.poll.as_ref())
            .map(|p| p.next_at);
        self.waits.values().map(|w| w.expires_at).chain(polls).min()
    }

    /// The latest deadline among open waits.
    pub fn last_deadline(&self) -> Option<u64> {
        self.waits.values().map(|w| w.expires_at).max()
    }
}

/// The final callback to the caller who triggered the run: where it goes and
/// how delivery has gone so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinalCallback {
    pub url: String,
    pub state: DeliveryState,
    /// Attempts, oldest first; the most recent `MAX_DELIVERY_ATTEMPTS_KEPT`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<DeliveryAttempt>,
    /// When the current round of attempts began: the retry window counts
    /// from it, and a redelivery starts a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round_started_at: Option<u64>,
}

pub const MAX_DELIVERY_ATTEMPTS_KEPT: usize = 50;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Nothing sent yet: due as soon as the run finishes.
    Waiting,
    Retrying {
        next_at: u64,
    },
    Delivered {
        at: u64,
    },
    /// The receiver answered `410 Gone`: it does not want this delivery.
    Refused {
        at: u64,
    },
    /// Every attempt in the retry window failed.
    GaveUp {
        at: u64,
    },
}

impl DeliveryState {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Retrying { .. } => "retrying",
            Self::Delivered { .. } => "delivered",
            Self::Refused { .. } => "refused",
            Self::GaveUp { .. } => "gave_up",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeliveryAttempt {
    pub at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why no answer came, as a stable code (see `protocol::CallFailure`).
    /// (Added after v3 first shipped; records without it read as before.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(description = "Why no answer came, as a stable code.")]
    pub error_code: Option<CallFailure>,
    pub duration_ms: u64,
}
