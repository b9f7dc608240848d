//! The run state machine. It executes in-process work itself and returns the
//! component calls it needs as data (`Call`); a driver performs them and feeds
//! the outcomes back. Time comes in as arguments; nothing here does I/O.
//!
//! Scheduling is a work queue over node indices, never recursion, so graph
//! size cannot overflow the stack. A node fires once every incoming edge has
//! resolved — delivered, or skipped because its source was skipped or the edge
//! did not fire — which is what keeps joins from stalling or firing twice.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;

use serde_json::{json, Map, Value};

use super::condition::{boolean_result, chosen_branch, evaluate};
use super::error::EngineError;
use super::graph::{EdgeKind, NodeKind};
use super::plan::{build_plan, ComponentRef, Directory, GraphLimits, Plan};
use super::record::{
    Arrival, NodeState, ResumedWait, RunError, RunRecord, RunStatus, TraceEntry, TraceStatus, Wait,
    RECORD_VERSION,
};
use super::scope::NodeScope;
use super::template::{json_map_size, json_size, render_map, Scope};

/// A result's status fields describe that one node's outcome. They stay out
/// of the context that flows downstream (read them by node id, e.g.
/// `{{fetch.error}}`), or one failure would make every later node that echoes
/// its input look failed too.
pub(crate) const RESULT_STATUS_KEYS: [&str; 3] = ["success", "error", "pending"];

/// Knobs the executor needs; the adapter fills them from configuration.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// How long a paused wait stays open.
    pub wait_ttl_ms: u64,
    /// Upper bound on the text one template string may expand to.
    pub max_template_bytes: usize,
    /// Upper bound on the items one FOREACH may iterate.
    pub max_foreach_items: usize,
    /// Upper bound on the node outputs one run may hold (they are all stored,
    /// so this is at most the stored record's limit). Keeps a hostile graph
    /// from growing memory without bound before the write would fail anyway.
    pub max_run_bytes: usize,
}

/// Calls queued by one `step` stop growing past this many input bytes; the
/// rest of the ready nodes fire in the next step. Bounds the memory held by
/// in-flight inputs without limiting what a run may do.
const MAX_BATCH_BYTES: usize = 8 << 20;

impl Default for Settings {
    fn default() -> Self {
        Self {
            wait_ttl_ms: 24 * 3600 * 1000,
            max_template_bytes: 1 << 20,
            max_foreach_items: 10_000,
            max_run_bytes: 24 << 20,
        }
    }
}

/// Which execution a call belongs to: a node, or one item of a FOREACH node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CallKey {
    pub node: usize,
    pub item: Option<usize>,
}

/// A component call the driver must perform.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub key: CallKey,
    pub node_id: String,
    pub url: String,
    pub input: Map<String, Value>,
    /// The wait this call becomes if the component answers pending; its
    /// callback URL names it.
    pub wait_id: String,
    pub expires_at: u64,
}

/// What came back from a component.
#[derive(Debug, Clone, PartialEq)]
pub enum CallOutcome {
    /// A JSON answer (which may itself report failure or pending).
    Answered(Value),
    /// No usable answer: non-2xx, not JSON, refused, timed out.
    Failed { status: Option<u16>, error: String },
}

/// Why a callback changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Noop {
    AlreadyResumed,
    UnknownWait,
    RunFinished,
    Expired,
    /// No stored run: it expired from KV, or never existed.
    UnknownRun,
    /// The legacy route found no wait for the task id.
    UnknownTask,
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
        }
    }
}

#[derive(Debug, Clone)]
struct InFlight {
    wait_id: String,
    started_at: u64,
    expires_at: u64,
}

/// A run being executed: its record plus the derived plan and transient queues.
#[derive(Debug, Clone)]
pub struct Run {
    pub plan: Plan,
    pub record: RunRecord,
    ready: VecDeque<usize>,
    /// Calls queued by the current `step`, handed to the driver at its end.
    calls: Vec<Call>,
    /// Input bytes of `calls`.
    batch_bytes: usize,
    in_flight: HashMap<CallKey, InFlight>,
    /// Approximate JSON size of all outputs held by the run, and its limit
    /// (`Settings::max_run_bytes`, taken at each `step`).
    output_bytes: usize,
    max_run_bytes: usize,
}

impl Run {
    /// A new run from a validated plan; start nodes are queued.
    pub fn start(plan: Plan, run_id: String, context: Map<String, Value>, now: u64) -> Self {
        let n = plan.graph.nodes.len();
        let starts: Vec<usize> = plan.starts().collect();
        let record = RunRecord {
            version: RECORD_VERSION,
            run_id,
            owner: None,
            graph: plan.graph.clone(),
            context: context.clone(),
            status: RunStatus::Running,
            nodes: vec![NodeState::Idle; n],
            waits: BTreeMap::new(),
            resumed: BTreeMap::new(),
            trace: Vec::new(),
            trace_dropped: 0,
            next_wait: 1,
            contexts_compacted: false,
            ctx_unset: BTreeMap::new(),
            created_at: now,
            updated_at: now,
        };
        let mut run = Self::assemble(plan, record, 0);
        // Start nodes get a single synthetic arrival carrying the trigger context.
        let shared = Rc::new(context);
        for s in starts {
            run.record.nodes[s] = NodeState::Waiting {
                arrivals: vec![Arrival::Delivered {
                    ctx: Rc::clone(&shared),
                }],
            };
            run.ready.push_back(s);
        }
        run
    }

    /// Rebuilds a run from its stored record (the plan is derived, not stored).
    pub fn load(record: RunRecord, directory: &Directory) -> Result<Self, EngineError> {
        if record.version != RECORD_VERSION {
            return Err(EngineError::CorruptRecord(format!(
                "record version {} is not {}",
                record.version, RECORD_VERSION
            )));
        }
        let plan = build_plan(record.graph.clone(), directory, GraphLimits::unbounded())
            .map_err(|e| EngineError::CorruptRecord(e.to_string()))?;
        if plan.graph.nodes.len() != record.nodes.len() {
            return Err(EngineError::CorruptRecord("node count mismatch".into()));
        }
        let mut record = record;
        super::compact::expand(&mut record, &plan);
        let output_bytes = record
            .nodes
            .iter()
            .map(|n| match n {
                NodeState::Done { output } => json_size(output),
                NodeState::Mapping { slots, .. } => slots.iter().flatten().map(json_size).sum(),
                _ => 0,
            })
            .sum();
        Ok(Self::assemble(plan, record, output_bytes))
    }

    fn assemble(plan: Plan, record: RunRecord, output_bytes: usize) -> Self {
        Self {
            plan,
            record,
            ready: VecDeque::new(),
            calls: Vec::new(),
            batch_bytes: 0,
            in_flight: HashMap::new(),
            output_bytes,
            max_run_bytes: Settings::default().max_run_bytes,
        }
    }

    pub fn status(&self) -> &RunStatus {
        &self.record.status
    }

    /// The record as stored: contexts compacted to deltas (see `compact`),
    /// within `max_bytes` (see `RunRecord::to_json_within`). The run in
    /// memory is left as it was.
    pub fn to_stored_json(&mut self, max_bytes: usize, now: u64) -> String {
        super::compact::compact(&mut self.record, &self.plan);
        let text = self.record.to_json_within(max_bytes, now);
        super::compact::expand(&mut self.record, &self.plan);
        text
    }

    /// Runs all in-process work that is ready and returns the component calls
    /// now needed. An empty answer means the run has settled: it is paused,
    /// completed or failed.
    pub fn step(&mut self, now: u64, settings: &Settings) -> Vec<Call> {
        self.batch_bytes = 0;
        self.max_run_bytes = settings.max_run_bytes;
        while self.batch_bytes < MAX_BATCH_BYTES {
            let Some(n) = self.ready.pop_front() else {
                break;
            };
            if self.record.status.is_finished() {
                self.ready.clear();
                break;
            }
            self.fire(n, now, settings);
        }
        let calls = std::mem::take(&mut self.calls);
        if calls.is_empty() && self.in_flight.is_empty() {
            self.settle(now);
        }
        calls
    }

    /// Feeds back the outcome of a call returned by `step`.
    pub fn complete_call(&mut self, key: CallKey, outcome: CallOutcome, now: u64) {
        let Some(flight) = self.in_flight.remove(&key) else {
            return;
        };
        if self.record.status.is_finished() {
            return;
        }
        let output = match outcome {
            CallOutcome::Answered(v) => v,
            CallOutcome::Failed { status, error } => failure(status, &error),
        };
        match pending_task(&output) {
            Some(Ok(task_id)) => self.pause(key, flight, task_id, now),
            Some(Err(())) => {
                let out = failure(
                    None,
                    "component answered pending without a non-empty task_id",
                );
                self.finish_instance(key, out, Some(flight.started_at), false, now);
            }
            None => self.finish_instance(key, output, Some(flight.started_at), false, now),
        }
    }

    /// Applies a callback to an open wait. On success the run is `Running`
    /// again and `step` continues it; a `Noop` means nothing was changed.
    pub fn resume(
        &mut self,
        wait_id: &str,
        body: Value,
        now: u64,
    ) -> Result<Result<(), Noop>, EngineError> {
        let Some(wait) = self.record.waits.get(wait_id) else {
            return Ok(Err(if self.record.resumed.contains_key(wait_id) {
                Noop::AlreadyResumed
            } else if self.record.status.is_finished() {
                Noop::RunFinished
            } else {
                Noop::UnknownWait
            }));
        };
        if self.record.status.is_finished() {
            return Ok(Err(Noop::RunFinished));
        }
        if let Some(got) = body.get("task_id") {
            let got = got.as_str().map_or_else(|| got.to_string(), str::to_string);
            if got != wait.task_id {
                return Err(EngineError::TaskMismatch {
                    expected: wait.task_id.clone(),
                    got,
                });
            }
        }
        if !body.is_object() {
            return Err(EngineError::InvalidRequest(
                "a callback body must be a JSON object".into(),
            ));
        }
        if now >= wait.expires_at {
            return Ok(Err(Noop::Expired));
        }
        let wait = self.record.waits.remove(wait_id).expect("checked above");
        let Some(node) = self.plan.node_index(&wait.node_id) else {
            return Err(EngineError::CorruptRecord(
                "wait names an unknown node".into(),
            ));
        };
        self.record.resumed.insert(
            wait.wait_id.clone(),
            ResumedWait {
                task_id: wait.task_id.clone(),
                node_id: wait.node_id.clone(),
                at: now,
            },
        );
        self.record.status = RunStatus::Running;
        let key = CallKey {
            node,
            item: wait.item,
        };
        self.finish_instance(key, body, Some(wait.since), true, now);
        Ok(Ok(()))
    }

    fn next_wait_id(&mut self) -> String {
        let id = format!("w{}", self.record.next_wait);
        self.record.next_wait += 1;
        id
    }

    fn fire(&mut self, n: usize, now: u64, settings: &Settings) {
        let arrivals = match std::mem::replace(&mut self.record.nodes[n], NodeState::Idle) {
            NodeState::Waiting { arrivals } => arrivals,
            other => {
                // Queued twice would be a scheduling bug; keep the state and move on.
                self.record.nodes[n] = other;
                return;
            }
        };
        let mut ctx: Option<Map<String, Value>> = None;
        let mut foreach = None;
        for arrival in arrivals {
            match arrival {
                Arrival::Delivered { ctx: c } => merge_into(&mut ctx, c),
                Arrival::Items {
                    ctx: c,
                    base,
                    iterator,
                    items,
                    missing,
                } => {
                    merge_into(&mut ctx, c);
                    foreach = Some((base, iterator, items, missing));
                }
                Arrival::Pending | Arrival::Skipped => {}
            }
        }
        let Some(ctx) = ctx else {
            self.skip(n, now);
            return;
        };
        if let Some((base, iterator, items, missing)) = foreach {
            if let Some(why) = missing {
                return self.complete_node(n, ctx, failure(None, &why), true, None, false, now);
            }
            self.start_mapping(n, ctx, base, iterator, items, now, settings);
            return;
        }
        // Only outgoing edges need the incoming context once the input is
        // built; a sink's (an Output node's, typically) is taken, not copied.
        let (input, ctx) = if self.plan.outgoing[n].is_empty() {
            (self.input_from(n, ctx, settings), Map::new())
        } else {
            (self.node_input(n, &ctx, settings), ctx)
        };
        let input = match input {
            Ok(input) => input,
            Err(out) => return self.complete_node(n, ctx, out, true, None, false, now),
        };
        let key = CallKey {
            node: n,
            item: None,
        };
        match (
            self.plan.graph.nodes[n].kind,
            self.plan.components[n].clone(),
        ) {
            (NodeKind::Component, Some(ComponentRef::Builtin(b))) => {
                let out = b.run(input);
                self.complete_node(n, ctx, out, false, Some(now), false, now);
            }
            (NodeKind::Component, Some(ComponentRef::Http(url))) => {
                self.record.nodes[n] = NodeState::Calling { ctx };
                self.queue_call(key, url, input, now, settings);
            }
            // Input and Output nodes pass their merged context and data on.
            _ => self.complete_node(n, ctx, Value::Object(input), false, Some(now), false, now),
        }
    }

    /// The node's input: its incoming context with its rendered `data` on top.
    fn node_input(
        &self,
        n: usize,
        ctx: &Map<String, Value>,
        settings: &Settings,
    ) -> Result<Map<String, Value>, Value> {
        self.input_from(n, ctx.clone(), settings)
    }

    /// `node_input` for a context the caller no longer needs: no copy.
    fn input_from(
        &self,
        n: usize,
        mut ctx: Map<String, Value>,
        settings: &Settings,
    ) -> Result<Map<String, Value>, Value> {
        let data = &self.plan.graph.nodes[n].data;
        if data.is_empty() {
            return Ok(ctx);
        }
        let scope = NodeScope::new(&ctx, &self.plan, &self.record.nodes);
        let rendered = render_map(data, &scope as &dyn Scope, settings.max_template_bytes)
            .map_err(|e| failure(None, &e.to_string()))?;
        ctx.extend(rendered);
        Ok(ctx)
    }

    fn queue_call(
        &mut self,
        key: CallKey,
        url: String,
        input: Map<String, Value>,
        now: u64,
        settings: &Settings,
    ) {
        let wait_id = self.next_wait_id();
        let expires_at = now.saturating_add(settings.wait_ttl_ms);
        self.batch_bytes += json_map_size(&input);
        self.in_flight.insert(
            key,
            InFlight {
                wait_id: wait_id.clone(),
                started_at: now,
                expires_at,
            },
        );
        self.calls.push(Call {
            key,
            node_id: self.plan.graph.nodes[key.node].id.clone(),
            url,
            input,
            wait_id,
            expires_at,
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn start_mapping(
        &mut self,
        n: usize,
        ctx: Map<String, Value>,
        base: Map<String, Value>,
        iterator: String,
        items: Vec<Value>,
        now: u64,
        settings: &Settings,
    ) {
        if items.len() > settings.max_foreach_items {
            let msg = format!(
                "FOREACH over {} items exceeds the limit of {}",
                items.len(),
                settings.max_foreach_items
            );
            return self.complete_node(n, ctx, failure(None, &msg), true, None, false, now);
        }
        let count = items.len();
        // Every item's input carries the context: refuse what cannot fit in a run.
        let inputs = json_map_size(&base).saturating_mul(count);
        if inputs > settings.max_run_bytes {
            let msg = format!(
                "FOREACH over {count} items would build about {inputs} bytes of item inputs \
                 (each carries the context), over the run limit of {} bytes",
                settings.max_run_bytes
            );
            return self.complete_node(n, ctx, failure(None, &msg), true, None, false, now);
        }
        self.record.nodes[n] = NodeState::Mapping {
            ctx,
            slots: vec![None; count],
            remaining: count,
        };
        if count == 0 {
            return self.finish_mapping(n, now);
        }
        let component = self.plan.components[n].clone();
        for (i, item) in items.into_iter().enumerate() {
            let mut item_ctx = base.clone();
            item_ctx.insert(iterator.clone(), item);
            item_ctx.insert("index".into(), json!(i));
            let key = CallKey {
                node: n,
                item: Some(i),
            };
            let input = match self.input_from(n, item_ctx, settings) {
                Ok(input) => input,
                Err(out) => {
                    self.finish_instance(key, out, None, false, now);
                    continue;
                }
            };
            match &component {
                Some(ComponentRef::Http(url)) => {
                    self.queue_call(key, url.clone(), input, now, settings)
                }
                Some(ComponentRef::Builtin(b)) => {
                    self.finish_instance(key, b.run(input), Some(now), false, now)
                }
                None => self.finish_instance(key, Value::Object(input), Some(now), false, now),
            }
        }
    }

    fn pause(&mut self, key: CallKey, flight: InFlight, task_id: String, now: u64) {
        let node_id = self.plan.graph.nodes[key.node].id.clone();
        if key.item.is_none() {
            let state = std::mem::replace(&mut self.record.nodes[key.node], NodeState::Idle);
            let NodeState::Calling { ctx } = state else {
                self.record.nodes[key.node] = state;
                return;
            };
            self.record.nodes[key.node] = NodeState::Paused {
                ctx,
                wait_id: flight.wait_id.clone(),
            };
        }
        self.record.trace.push(TraceEntry {
            node_id: node_id.clone(),
            item: key.item,
            status: TraceStatus::Paused,
            at: now,
            duration_ms: Some(now.saturating_sub(flight.started_at)),
            task_id: Some(task_id.clone()),
            resumed: false,
            error: None,
        });
        self.record.waits.insert(
            flight.wait_id.clone(),
            Wait {
                wait_id: flight.wait_id,
                task_id,
                node_id,
                item: key.item,
                since: now,
                expires_at: flight.expires_at,
            },
        );
    }

    /// A node (or one FOREACH item) has its output.
    fn finish_instance(
        &mut self,
        key: CallKey,
        output: Value,
        started: Option<u64>,
        resumed: bool,
        now: u64,
    ) {
        let n = key.node;
        let Some(i) = key.item else {
            let ctx = match std::mem::replace(&mut self.record.nodes[n], NodeState::Idle) {
                NodeState::Calling { ctx } | NodeState::Paused { ctx, .. } => ctx,
                other => {
                    self.record.nodes[n] = other;
                    return;
                }
            };
            let failed = is_failure(&output);
            return self.complete_node(n, ctx, output, failed, started, resumed, now);
        };
        let task_id = resumed
            .then(|| {
                output
                    .get("task_id")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .flatten();
        let entry = TraceEntry {
            node_id: self.plan.graph.nodes[n].id.clone(),
            item: Some(i),
            status: if is_failure(&output) {
                TraceStatus::Failed
            } else {
                TraceStatus::Succeeded
            },
            at: now,
            duration_ms: started.map(|s| now.saturating_sub(s)),
            task_id,
            resumed,
            error: error_text(&output),
        };
        let NodeState::Mapping {
            slots, remaining, ..
        } = &mut self.record.nodes[n]
        else {
            return;
        };
        let Some(slot) = slots.get_mut(i).filter(|s| s.is_none()) else {
            return;
        };
        let size = json_size(&output);
        *slot = Some(output);
        *remaining -= 1;
        let done = *remaining == 0;
        if !self.account_bytes(size, now) {
            return;
        }
        self.record.trace.push(entry);
        if done {
            self.finish_mapping(n, now);
        }
    }

    fn finish_mapping(&mut self, n: usize, now: u64) {
        let NodeState::Mapping { ctx, slots, .. } =
            std::mem::replace(&mut self.record.nodes[n], NodeState::Idle)
        else {
            return;
        };
        let results: Vec<Value> = slots.into_iter().map(Option::unwrap_or_default).collect();
        let failed = results.iter().filter(|r| is_failure(r)).count();
        let count = results.len();
        // Built as a map so the results move in rather than being copied by `json!`.
        let mut output = Map::new();
        output.insert("results".into(), Value::Array(results));
        output.insert("count".into(), json!(count));
        output.insert("failed".into(), json!(failed));
        if failed > 0 {
            output.insert("success".into(), json!(false));
            output.insert(
                "error".into(),
                json!(format!("{failed} of {count} items failed")),
            );
        }
        self.complete_node(n, ctx, Value::Object(output), failed > 0, None, false, now);
    }

    /// Records a node's output and resolves each of its outgoing edges.
    /// `failed` is the verdict on this node's own result: remote answers are
    /// judged by `is_failure`, while in-process nodes succeed unless the engine
    /// itself failed them — their output echoes upstream context, which may
    /// legitimately carry an `error` routed here by `ON_FAIL`.
    #[allow(clippy::too_many_arguments)]
    fn complete_node(
        &mut self,
        n: usize,
        ctx: Map<String, Value>,
        output: Value,
        failed: bool,
        started: Option<u64>,
        resumed: bool,
        now: u64,
    ) {
        if !self.account(&output, now) {
            return;
        }
        let node_id = self.plan.graph.nodes[n].id.clone();
        self.record.trace.push(TraceEntry {
            node_id: node_id.clone(),
            item: None,
            status: if failed {
                TraceStatus::Failed
            } else {
                TraceStatus::Succeeded
            },
            at: now,
            duration_ms: started.map(|s| now.saturating_sub(s)),
            task_id: resumed
                .then(|| {
                    output
                        .get("task_id")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .flatten(),
            resumed,
            error: failed.then(|| error_text(&output)).flatten(),
        });
        let edges = self.plan.outgoing[n].clone();
        let routed = edges
            .iter()
            .any(|&e| self.plan.graph.edges[e].kind == EdgeKind::OnFail);
        if failed && !routed {
            self.fail(
                RunError {
                    code: "node_failed".into(),
                    message: error_text(&output)
                        .unwrap_or_else(|| "the component reported failure".into()),
                    node_id: Some(node_id),
                },
                now,
            );
            self.record.nodes[n] = NodeState::Done { output };
            return;
        }
        if edges.is_empty() {
            self.record.nodes[n] = NodeState::Done { output };
            return;
        }
        let mut out_ctx = ctx;
        if let Value::Object(fields) = &output {
            out_ctx.extend(
                fields
                    .iter()
                    .filter(|(k, _)| !RESULT_STATUS_KEYS.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
        }
        self.record.nodes[n] = NodeState::Done { output };
        let out_ctx = Rc::new(out_ctx);
        for e in edges {
            let arrival = self.resolve_edge(e, n, &out_ctx, failed);
            self.deliver(e, arrival);
        }
    }

    /// Decides whether edge `e` fires for the finished node `n`.
    fn resolve_edge(
        &self,
        e: usize,
        n: usize,
        out_ctx: &Rc<Map<String, Value>>,
        failed: bool,
    ) -> Arrival {
        let edge = &self.plan.graph.edges[e];
        let NodeState::Done { output } = &self.record.nodes[n] else {
            return Arrival::Skipped;
        };
        let fires = match edge.kind {
            EdgeKind::OnFail => failed,
            _ if failed => false,
            EdgeKind::Pipe | EdgeKind::OnSuccess | EdgeKind::Foreach => true,
            EdgeKind::If => {
                let scope = NodeScope::new(out_ctx, &self.plan, &self.record.nodes);
                evaluate(edge.condition.as_deref().unwrap_or_default(), &scope)
            }
            EdgeKind::OnTrue => boolean_result(output) == Some(true),
            EdgeKind::OnFalse => boolean_result(output) == Some(false),
            EdgeKind::OnBranch => chosen_branch(output).as_deref() == edge.branch.as_deref(),
        };
        if !fires {
            return Arrival::Skipped;
        }
        if edge.kind != EdgeKind::Foreach {
            return Arrival::Delivered {
                ctx: Rc::clone(out_ctx),
            };
        }
        let iterator = edge.iterator.clone().unwrap_or_else(|| "item".into());
        let scope = NodeScope::new(out_ctx, &self.plan, &self.record.nodes);
        let (items, path, missing) = match foreach_items(output, edge.items.as_deref(), &scope) {
            Ok((items, path)) => (items, path, None),
            Err(why) => (Vec::new(), None, Some(why)),
        };
        let mut base = Map::clone(out_ctx);
        if let Some(path) = path {
            remove_path(&mut base, &path);
        }
        // An upstream FOREACH's results stay out of each item's context (they
        // remain readable by node id): carried into every item, stages of
        // FOREACH would each multiply the size of the last.
        base.remove("results");
        Arrival::Items {
            ctx: Rc::clone(out_ctx),
            base,
            iterator,
            items,
            missing,
        }
    }

    fn deliver(&mut self, e: usize, arrival: Arrival) {
        let target = self.plan.edge_to[e];
        let slot = self.plan.edge_slot[e];
        let width = self.plan.incoming[target].len();
        if let NodeState::Idle = self.record.nodes[target] {
            self.record.nodes[target] = NodeState::Waiting {
                arrivals: vec![Arrival::Pending; width],
            };
        }
        let NodeState::Waiting { arrivals } = &mut self.record.nodes[target] else {
            return;
        };
        arrivals[slot] = arrival;
        if arrivals.iter().all(|a| !matches!(a, Arrival::Pending)) {
            self.ready.push_back(target);
        }
    }

    fn skip(&mut self, n: usize, now: u64) {
        self.record.nodes[n] = NodeState::Skipped;
        self.record.trace.push(TraceEntry {
            node_id: self.plan.graph.nodes[n].id.clone(),
            item: None,
            status: TraceStatus::Skipped,
            at: now,
            duration_ms: None,
            task_id: None,
            resumed: false,
            error: None,
        });
        for e in self.plan.outgoing[n].clone() {
            self.deliver(e, Arrival::Skipped);
        }
    }

    /// Counts a new output against `max_run_bytes`; fails the run past it.
    fn account(&mut self, output: &Value, now: u64) -> bool {
        self.account_bytes(json_size(output), now)
    }

    fn account_bytes(&mut self, size: usize, now: u64) -> bool {
        self.output_bytes += size;
        if self.output_bytes <= self.max_run_bytes {
            return true;
        }
        let message = format!(
            "the run's node outputs grew past {} bytes, the most one run may hold and store",
            self.max_run_bytes
        );
        self.fail(
            RunError {
                code: "run_too_large".into(),
                message,
                node_id: None,
            },
            now,
        );
        false
    }

    fn fail(&mut self, error: RunError, now: u64) {
        self.record.status = RunStatus::Failed {
            error,
            finished_at: now,
        };
        self.record.waits.clear();
        self.ready.clear();
        self.in_flight.clear();
        self.calls.clear();
    }

    fn settle(&mut self, now: u64) {
        self.record.updated_at = now;
        if !self.record.status.is_finished() {
            if !self.record.waits.is_empty() {
                self.record.status = RunStatus::Paused { since: now };
                return;
            }
            self.record.status = RunStatus::Completed {
                output: self.take_final_output(),
                finished_at: now,
            };
        }
        // A finished run never resumes: its node states are released, so
        // the stored record holds the result once, plus the trace.
        for state in &mut self.record.nodes {
            *state = NodeState::Idle;
        }
        self.output_bytes = 0;
    }

    /// The run's result, moved out of the node states: the completed Output
    /// node's output, or a map by id when several completed. When no Output
    /// node completed (there are none, or a branch skipped them), the same
    /// rule over the completed sink nodes.
    fn take_final_output(&mut self) -> Value {
        let nodes = &self.plan.graph.nodes;
        let done = |i: &usize| matches!(self.record.nodes[*i], NodeState::Done { .. });
        let mut chosen: Vec<usize> = (0..nodes.len())
            .filter(|&i| nodes[i].kind == NodeKind::Output)
            .filter(done)
            .collect();
        if chosen.is_empty() {
            chosen = (0..nodes.len())
                .filter(|&i| self.plan.outgoing[i].is_empty())
                .filter(done)
                .collect();
        }
        let mut take =
            |i: usize| match std::mem::replace(&mut self.record.nodes[i], NodeState::Idle) {
                NodeState::Done { output } => output,
                _ => Value::Null,
            };
        match chosen.as_slice() {
            [] => Value::Null,
            [only] => take(*only),
            many => Value::Object(
                many.iter()
                    .map(|&i| (self.plan.graph.nodes[i].id.clone(), take(i)))
                    .collect(),
            ),
        }
    }
}

fn merge_into(acc: &mut Option<Map<String, Value>>, ctx: Rc<Map<String, Value>>) {
    match acc {
        // The last holder of a context takes it without copying.
        None => *acc = Some(Rc::unwrap_or_clone(ctx)),
        Some(existing) => existing.extend(ctx.iter().map(|(k, v)| (k.clone(), v.clone()))),
    }
}

/// A result is a failure when `success === false`, or `error` is present and not null.
pub fn is_failure(output: &Value) -> bool {
    output.get("success") == Some(&Value::Bool(false))
        || output.get("error").is_some_and(|e| !e.is_null())
}

fn error_text(output: &Value) -> Option<String> {
    if !is_failure(output) {
        return None;
    }
    Some(match output.get("error") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) => o
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| Value::Object(o.clone()).to_string(), str::to_string),
        Some(v) if !v.is_null() => v.to_string(),
        _ => "the component reported success: false".into(),
    })
}

fn failure(status: Option<u16>, error: &str) -> Value {
    let mut out = json!({ "success": false, "error": error });
    if let Some(s) = status {
        out["status"] = json!(s);
    }
    out
}

/// `Some(Ok(task_id))` for a valid pending answer, `Some(Err)` for a pending
/// answer without a usable task id, `None` when the answer is not pending.
fn pending_task(output: &Value) -> Option<Result<String, ()>> {
    if output.get("pending") != Some(&Value::Bool(true)) {
        return None;
    }
    Some(match output.get("task_id") {
        Some(Value::String(t)) if !t.trim().is_empty() => Ok(t.clone()),
        _ => Err(()),
    })
}

/// The array a FOREACH iterates, and the context path it came from (removed
/// from each item's context so items do not each carry the whole array).
type ForeachItems = Result<(Vec<Value>, Option<String>), String>;

fn foreach_items(output: &Value, path: Option<&str>, scope: &dyn Scope) -> ForeachItems {
    if let Some(p) = path {
        let p = p
            .trim()
            .trim_start_matches("{{")
            .trim_end_matches("}}")
            .trim();
        return match scope.lookup(p) {
            Some(Value::Array(a)) => Ok((a.clone(), Some(p.to_string()))),
            _ => Err(format!("FOREACH found no array at '{p}'")),
        };
    }
    if let Value::Array(a) = output {
        return Ok((a.clone(), None));
    }
    for p in ["items", "data.items", "results", "data"] {
        if let Some(Value::Array(a)) = super::template::walk(output, p.split('.')) {
            return Ok((a.clone(), Some(p.to_string())));
        }
    }
    Err(
        "FOREACH found no array to iterate: the source's output is not an array and has no \
         items, data.items, results or data array (name one with the edge's \"items\")"
            .into(),
    )
}

fn remove_path(map: &mut Map<String, Value>, path: &str) {
    let mut parts: Vec<&str> = path.split('.').collect();
    let Some(last) = parts.pop() else { return };
    let mut cur = map;
    for part in parts {
        match cur.get_mut(part) {
            Some(Value::Object(m)) => cur = m,
            _ => return,
        }
    }
    cur.remove(last);
}
