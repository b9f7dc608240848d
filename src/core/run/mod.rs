//! The run state machine. It executes in-process work itself and returns
//! everything else it wants done as data (`Effect`): component calls, when to
//! wake up, when to stop for this invocation. A driver performs the effects
//! and feeds outcomes back. Time comes in as arguments; nothing here does I/O.
//!
//! - `schedule` — the ready queue, firing nodes, issuing calls, settling
//! - `complete` — a node's (or item's) result: trace, edges, joins
//! - `foreach` — FOREACH targets, one call per item
//! - `join` — `join: "any"` nodes: the first arrival wins, what only fed them is superseded
//! - `timers` — callbacks, deadlines and cancel
//! - `verdict` — how a result is judged, and how it came (`Verdict`, `Via`)
//!
//! Scheduling is a work queue over node indices, never recursion, so graph
//! size cannot overflow the stack. A node fires once every incoming edge has
//! resolved — delivered, or skipped because its source was skipped or the edge
//! did not fire — which is what keeps joins from stalling or firing twice; a
//! `join: "any"` node fires on the first edge delivered instead.

mod added;
mod complete;
mod deliver;
mod foreach;
mod join;
mod poll;
mod retry;
mod schedule;
mod timers;
mod verdict;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;

pub use deliver::{next_attempt, DeliveryOutcome, RETRY_DELAYS_SECS};
pub use poll::{verdict as poll_verdict, PollVerdict, MAX_POLL_ERRORS};
pub use timers::MAX_PROGRESS_BYTES;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::callback::sign;
use super::error::EngineError;
use super::plan::{ComponentRef, Plan};
use super::protocol::CallFailure;
use super::record::{Arrival, Context, ItemState, NodeState, RunRecord, RunStatus};
use super::template::json_size;

/// Knobs the executor needs; the adapter fills them from configuration.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// How long a pending answer waits for its callback when its node sets
    /// no `wait_timeout_seconds`.
    pub wait_ttl_ms: u64,
    /// How far heartbeats may extend a wait, from when it began
    /// (`MAX_WAIT_SECONDS`).
    pub max_wait_ms: u64,
    /// The longest a component call may take (`COMPONENT_TIMEOUT_SECONDS`):
    /// a wait begins no later than this after its call, so a callback URL
    /// signed at the call for `max_wait_ms` past it and this is good for as
    /// long as the wait may last.
    pub call_timeout_ms: u64,
    /// Upper bound on the text one template string may expand to.
    pub max_template_bytes: usize,
    /// Upper bound on the items one FOREACH may iterate.
    pub max_foreach_items: usize,
    /// Upper bound on the node outputs one run may hold (they are all stored,
    /// so this is at most the stored record's limit). Keeps a hostile graph
    /// from growing memory without bound before the write would fail anyway.
    pub max_run_bytes: usize,
    /// Component calls one segment may issue (the platform's subrequest limit
    /// per invocation, with room for the engine's own requests). Past it the
    /// run yields and continues in a fresh invocation.
    pub max_calls_per_segment: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            wait_ttl_ms: 24 * 3600 * 1000,
            max_wait_ms: 7 * 24 * 3600 * 1000,
            call_timeout_ms: 120 * 1000,
            max_template_bytes: 1 << 20,
            max_foreach_items: 10_000,
            max_run_bytes: 24 << 20,
            max_calls_per_segment: 45,
        }
    }
}

/// Which execution a call belongs to: a node, or one item of a FOREACH node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallKey {
    pub node: usize,
    pub item: Option<usize>,
}

impl CallKey {
    /// The id of the wait this call becomes if answered pending. Derived from
    /// the call's identity, so a call issued again after a crash or a yield
    /// carries the same callback URL and idempotency key as the first time.
    /// Within a retry (`attempt` > 0) the id names the attempt too, so a
    /// callback for the failed attempt's wait can never resume the new one.
    /// The call a wait id names in `attempt`, if it names one (the inverse
    /// of `wait_id`).
    pub fn from_wait_id(wait_id: &str, attempt: u32) -> Option<Self> {
        let rest = wait_id.strip_prefix('n')?;
        let (node_part, item) = match rest.split_once('-') {
            Some((node, item)) => (node, Some(item.parse().ok()?)),
            None => (rest, None),
        };
        let node = match node_part.split_once('r') {
            Some((node, a)) if a.parse::<u32>().ok()? == attempt && attempt > 0 => node,
            Some(_) => return None,
            None if attempt == 0 => node_part,
            None => return None,
        };
        let key = Self {
            node: node.parse().ok()?,
            item,
        };
        // Only the canonical spelling: `n01` is not a wait id this run made.
        (key.wait_id(attempt) == wait_id).then_some(key)
    }

    pub fn wait_id(&self, attempt: u32) -> String {
        let retry = if attempt == 0 {
            String::new()
        } else {
            format!("r{attempt}")
        };
        match self.item {
            None => format!("n{}{retry}", self.node),
            Some(i) => format!("n{}{retry}-{i}", self.node),
        }
    }
}

/// A component call the driver must perform.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub key: CallKey,
    pub node_id: String,
    pub url: String,
    pub input: Map<String, Value>,
    /// The wait this call becomes if the component answers pending.
    pub wait_id: String,
    pub expires_at: u64,
    /// Stable for every issue of this node's (or item's) call within the run,
    /// so a component can recognise a repeat.
    pub idempotency_key: String,
    /// The segment issuing the call (1 for the trigger's).
    pub segment: u64,
    /// The signed URL to call back, when the run has a signer.
    pub callback_url: Option<String>,
    /// Set for a poll of a status URL: sent as given instead of POSTing the input.
    pub poll: Option<Box<PollRequest>>,
    /// Who the run belongs to, and how deep in sub-workflows it is: a
    /// `workflow://` call starts its child run with them.
    pub owner: Option<String>,
    pub depth: u32,
    /// The run at the top of this run's sub-workflow tree (this run, if it
    /// was started by a caller): a `workflow://` call draws on its budget.
    pub root: String,
}

/// How a status URL is polled.
#[derive(Debug, Clone, PartialEq)]
pub struct PollRequest {
    pub method: String,
    pub headers: std::collections::BTreeMap<String, String>,
    pub body: Option<Value>,
}

/// What came back from a component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallOutcome {
    /// A JSON answer (which may itself report failure or pending).
    Answered(Value),
    /// No usable answer: non-2xx, not JSON, too large, refused, timed out.
    Failed {
        status: Option<u16>,
        error: String,
        /// Why, as a stable code (the node's `error_code`). Journal entries
        /// of earlier releases have none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<CallFailure>,
    },
}

/// A call's outcome as the journal keeps it, with the deadline the call
/// was made with: a wait opened from it after a crash keeps the deadline
/// its callback URL was signed with, whenever the call is replayed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Journaled {
    pub outcome: CallOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

impl Journaled {
    /// Reads an entry, or the bare outcome earlier releases journaled.
    pub fn parse(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok().or_else(|| {
            serde_json::from_str(text).ok().map(|outcome| Self {
                outcome,
                expires_at: None,
            })
        })
    }
}

/// What a callback did to its wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// The wait closed with the callback's result.
    Applied,
    /// The wait is not open yet (its call's pending answer is not taken):
    /// held, and applied when it opens.
    Held,
}

/// Why a callback, heartbeat or legacy resume changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "NoopReason")]
pub enum Noop {
    /// A repeat: the wait was resumed already.
    AlreadyResumed,
    /// No such wait, or one closed by a failed run.
    UnknownWait,
    /// The run was cancelled or failed elsewhere.
    RunFinished,
    /// After the wait's deadline.
    Expired,
    /// No stored run: it expired from KV, or never existed.
    UnknownRun,
    /// The legacy route found no wait for the task id.
    UnknownTask,
    /// The wait only fed a `join: "any"` node that fired on another branch first.
    Superseded,
}

impl Noop {
    pub fn reason(self) -> &'static str {
        match self {
            Self::AlreadyResumed => "already_resumed",
            Self::UnknownWait => "unknown_wait",
            Self::RunFinished => "run_finished",
            Self::Expired => "expired",
            Self::UnknownRun => "unknown_run",
            Self::UnknownTask => "unknown_task",
            Self::Superseded => "superseded",
        }
    }
}

/// Signs the callback URLs of a run's calls.
#[derive(Debug, Clone)]
pub struct Signer {
    /// Origin the URLs start with.
    pub base: String,
    pub secret: Rc<str>,
}

impl Signer {
    pub fn url(&self, run_id: &str, wait_id: &str, expires_at: u64) -> String {
        let token = sign(self.secret.as_bytes(), run_id, wait_id, expires_at);
        format!("{}/callbacks/{run_id}/{wait_id}?token={token}", self.base)
    }
}

#[derive(Debug, Clone)]
struct InFlight {
    started_at: u64,
    expires_at: u64,
    /// The wait whose status URL this call polls.
    poll_of: Option<String>,
}

/// A run being executed: its record plus the derived plan and queues. The
/// queues are never stored: `from_record` derives them from node states.
#[derive(Debug, Clone)]
pub struct Run {
    pub plan: Plan,
    pub record: RunRecord,
    settings: Settings,
    /// Nodes whose every incoming edge has resolved, to fire.
    ready: VecDeque<usize>,
    /// Calls due to be issued, waiting for the segment's budget.
    to_call: VecDeque<CallKey>,
    in_flight: HashMap<CallKey, InFlight>,
    /// Calls this segment may still issue.
    calls_left: usize,
    /// Approximate JSON size of all outputs held by the run.
    output_bytes: usize,
    signer: Option<Signer>,
    /// Set while `fill_mapping` starts items, so an item that finishes as it
    /// starts does not fill again from inside the loop.
    filling: bool,
    /// Warnings from rendering a node's (or item's) data, held from the
    /// rendering until the trace entry that reports it: a call's is written
    /// when its answer comes, which may be a pause. Never stored: a call
    /// issued again renders again.
    warnings: HashMap<CallKey, Vec<String>>,
}

impl Run {
    /// A new run from a validated plan; start nodes are queued.
    pub fn start(
        plan: Plan,
        run_id: String,
        context: Map<String, Value>,
        now: u64,
        settings: Settings,
    ) -> Self {
        let n = plan.graph.nodes.len();
        let starts: Vec<usize> = plan.starts().collect();
        let record = RunRecord {
            run_id,
            owner: None,
            graph: plan.graph.clone(),
            context,
            callback_base: None,
            status: RunStatus::Running,
            nodes: vec![NodeState::Idle; n],
            waits: BTreeMap::new(),
            closed: BTreeMap::new(),
            early: BTreeMap::new(),
            trace: Vec::new(),
            trace_dropped: 0,
            segments: 0,
            final_callback: None,
            workflow: None,
            attempt: 0,
            depth: 0,
            root: None,
            created_at: now,
            updated_at: now,
            revision: 0,
        };
        let mut run = Self::assemble(plan, record, settings);
        // Start nodes get a single synthetic arrival carrying the trigger
        // context, without the date variables: those are read from the run.
        let shared = Context::from(super::dates::flowing(&run.record.context));
        for s in starts {
            run.record.nodes[s] = NodeState::Waiting {
                arrivals: vec![Arrival::Delivered {
                    ctx: shared.clone(),
                }],
            };
            run.ready.push_back(s);
        }
        run
    }

    /// A run from a record read back from storage. The record's shape is
    /// checked against its graph (a mismatch is `CorruptRecord`, never a
    /// panic later) and the queues are derived from node states: nodes whose
    /// edges have all resolved are ready, and calls that were issued but never
    /// answered are issued again.
    pub fn from_record(
        plan: Plan,
        record: RunRecord,
        settings: Settings,
    ) -> Result<Self, EngineError> {
        check_shape(&plan, &record).map_err(EngineError::CorruptRecord)?;
        let mut run = Self::assemble(plan, record, settings);
        run.output_bytes = added::held_bytes(&run.record.context, &run.plan, &run.record.nodes)
            + run
                .record
                .nodes
                .iter()
                .map(|n| match n {
                    NodeState::Mapping(m) => m
                        .items
                        .iter()
                        .map(|i| match i {
                            ItemState::Done(v) => json_size(v),
                            _ => 0,
                        })
                        .sum::<usize>(),
                    _ => 0,
                })
                .sum::<usize>();
        if run.record.status.is_finished() {
            return Ok(run);
        }
        for &n in &run.plan.order {
            match &run.record.nodes[n] {
                NodeState::Waiting { arrivals }
                    if arrivals.iter().all(|a| !matches!(a, Arrival::Pending)) =>
                {
                    run.ready.push_back(n)
                }
                NodeState::Calling { .. } => run.to_call.push_back(CallKey {
                    node: n,
                    item: None,
                }),
                NodeState::Mapping(m) => {
                    for (i, item) in m.items.iter().enumerate() {
                        if let ItemState::Todo(_) = item {
                            run.to_call.push_back(CallKey {
                                node: n,
                                item: Some(i),
                            });
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(run)
    }

    fn assemble(plan: Plan, record: RunRecord, settings: Settings) -> Self {
        Self {
            plan,
            record,
            settings,
            ready: VecDeque::new(),
            to_call: VecDeque::new(),
            in_flight: HashMap::new(),
            calls_left: settings.max_calls_per_segment,
            output_bytes: 0,
            signer: None,
            filling: false,
            warnings: HashMap::new(),
        }
    }

    pub fn status(&self) -> &RunStatus {
        &self.record.status
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Starts a segment: a fresh call budget, and the signer for this
    /// segment's callback URLs.
    pub fn begin_segment(&mut self, signer: Option<Signer>) {
        self.record.segments = self.record.segments.saturating_add(1);
        self.calls_left = self.settings.max_calls_per_segment;
        self.signer = signer;
    }

    /// Calls (and polls) this segment has made.
    pub fn calls_made(&self) -> usize {
        self.settings
            .max_calls_per_segment
            .saturating_sub(self.calls_left)
    }

    /// Calls waiting for budget: non-zero only when the run has yielded.
    pub fn calls_due(&self) -> usize {
        self.to_call.len()
    }
}

/// Checks that a record's node states fit its graph, so that nothing the
/// state machine indexes later can be out of range.
fn check_shape(plan: &Plan, record: &RunRecord) -> Result<(), String> {
    let nodes = &plan.graph.nodes;
    if record.nodes.len() != nodes.len() {
        return Err(format!(
            "{} node states for {} nodes",
            record.nodes.len(),
            nodes.len()
        ));
    }
    let http = |n: usize| matches!(plan.components[n], Some(ComponentRef::Http(_)));
    for (n, state) in record.nodes.iter().enumerate() {
        let id = &nodes[n].id;
        match state {
            NodeState::Waiting { arrivals } if arrivals.len() != plan.incoming[n].len() => {
                return Err(format!("node '{id}' has a wrong number of arrivals"));
            }
            NodeState::Calling { .. } if !http(n) => {
                return Err(format!("node '{id}' is calling but has no HTTP component"));
            }
            NodeState::Paused { wait_id, .. } => {
                let ok = record
                    .waits
                    .get(wait_id)
                    .is_some_and(|w| &w.node_id == id && w.item.is_none());
                if !ok {
                    return Err(format!("node '{id}' waits for an unknown wait"));
                }
            }
            NodeState::Mapping(m) => {
                let open = m
                    .items
                    .iter()
                    .filter(|i| !matches!(i, ItemState::Done(_)))
                    .count();
                if open != m.remaining {
                    return Err(format!("node '{id}' miscounts its remaining items"));
                }
                for (i, item) in m.items.iter().enumerate() {
                    match item {
                        ItemState::Todo(_) if !http(n) => {
                            return Err(format!("node '{id}' item {i} has no HTTP component"))
                        }
                        ItemState::Paused { wait_id } => {
                            let ok = record
                                .waits
                                .get(wait_id)
                                .is_some_and(|w| &w.node_id == id && w.item == Some(i));
                            if !ok {
                                return Err(format!(
                                    "node '{id}' item {i} waits for an unknown wait"
                                ));
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    for wait in record.waits.values() {
        let Some(n) = plan.node_index(&wait.node_id) else {
            return Err(format!(
                "wait '{}' names an unknown node '{}'",
                wait.wait_id, wait.node_id
            ));
        };
        let held = match (&record.nodes[n], wait.item) {
            (NodeState::Paused { wait_id, .. }, None) => *wait_id == wait.wait_id,
            (NodeState::Mapping(m), Some(i)) => matches!(
                m.items.get(i),
                Some(ItemState::Paused { wait_id }) if *wait_id == wait.wait_id
            ),
            _ => false,
        };
        if !held {
            return Err(format!(
                "wait '{}' is not held by node '{}'",
                wait.wait_id, wait.node_id
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod wait_id_tests {
    use super::CallKey;

    #[test]
    fn a_wait_id_names_its_call_in_its_attempt_only() {
        for (node, item, attempt) in [
            (0, None, 0),
            (12, Some(3), 0),
            (4, None, 2),
            (7, Some(0), 1),
        ] {
            let key = CallKey { node, item };
            let id = key.wait_id(attempt);
            assert_eq!(CallKey::from_wait_id(&id, attempt), Some(key), "{id}");
            assert_eq!(CallKey::from_wait_id(&id, attempt + 1), None, "{id}");
        }
        for junk in [
            "", "n", "x1", "n01", "n1r0", "n1-", "n1-x", "n-1", "n1r2-3-4",
        ] {
            assert_eq!(CallKey::from_wait_id(junk, 0), None, "{junk}");
        }
    }
}
