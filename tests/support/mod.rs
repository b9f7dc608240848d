//! Shared fixtures for the native core tests: graphs from JSON, a fake
//! network of components, and a manual clock.

#![allow(dead_code)]

use std::cell::{Cell, RefCell};

use arcrun::core::driver::{drive, Components, NoJournal};
use arcrun::core::effect::Effect;
use arcrun::core::plan::Directory as Dir;
use arcrun::core::plan::{plan_from_json, Directory, GraphLimits, Plan};
use arcrun::core::record::{RunStatus, TraceStatus};
use arcrun::core::run::{Call, CallOutcome, Run, Settings};
use arcrun::core::stored::{decode, encode};
use futures::executor::block_on;
use serde_json::{json, Map, Value};

pub mod gate;

pub type Handler = Box<dyn Fn(&Call) -> CallOutcome>;

/// Components reachable at `http://c/<name>`: each answers through `handler`
/// and every call is recorded.
pub struct Network {
    handler: Handler,
    pub calls: RefCell<Vec<Call>>,
    /// Child runs asked to cancel (a cancelled parent's), with the owner.
    pub cancelled: RefCell<Vec<(String, Option<String>)>>,
}

impl Network {
    pub fn new(handler: impl Fn(&Call) -> CallOutcome + 'static) -> Self {
        Self {
            handler: Box::new(handler),
            calls: RefCell::new(Vec::new()),
            cancelled: RefCell::new(Vec::new()),
        }
    }

    /// Every component echoes its input, except `http://c/async*`, which
    /// answers pending with task id `t-<node>` (plus `-<item>` in a FOREACH).
    pub fn echo_with_async() -> Self {
        Self::new(|call| {
            if call.url.starts_with("http://c/async") {
                let task = match call.key.item {
                    Some(i) => format!("t-{}-{i}", call.node_id),
                    None => format!("t-{}", call.node_id),
                };
                return CallOutcome::Answered(json!({"pending": true, "task_id": task}));
            }
            CallOutcome::Answered(Value::Object(call.input.clone()))
        })
    }

    pub fn hits(&self, url: &str) -> usize {
        self.calls.borrow().iter().filter(|c| c.url == url).count()
    }
}

impl Components for Network {
    async fn call(&self, call: &Call) -> CallOutcome {
        self.calls.borrow_mut().push(call.clone());
        (self.handler)(call)
    }

    async fn cancel_child(&self, run_id: &str, owner: Option<&str>) {
        self.cancelled
            .borrow_mut()
            .push((run_id.to_string(), owner.map(str::to_string)));
    }
}

pub struct Clock(pub Cell<u64>);

impl Clock {
    pub fn new() -> Self {
        Self(Cell::new(1_000_000))
    }
    pub fn now(&self) -> u64 {
        self.0.get()
    }
    pub fn advance(&self, ms: u64) {
        self.0.set(self.0.get() + ms);
    }
}

pub fn plan(graph: Value) -> Plan {
    plan_from_json(&graph, &Directory::default(), GraphLimits::default()).expect("valid graph")
}

pub fn settings() -> Settings {
    Settings::default()
}

/// Starts a run of `graph` and drives it until it settles.
pub fn run_graph(graph: Value, context: Value, net: &Network, clock: &Clock) -> Run {
    run_graph_with(graph, context, net, clock, &settings())
}

/// Drives the run until it pauses or finishes, starting a fresh segment
/// whenever it yields (as the gate's alarm does). Returns how many segments ran.
pub fn continue_run(run: &mut Run, net: &Network, clock: &Clock) -> usize {
    let now = || clock.now();
    let mut segments = 0;
    loop {
        run.begin_segment(None);
        segments += 1;
        let effects = block_on(drive(run, net, &NoJournal, &now));
        if !effects.contains(&Effect::Yield) {
            return segments;
        }
    }
}

/// Stores the run exactly as the Worker does and loads it back.
pub fn reload(run: &Run) -> Run {
    let text = encode(&mut run.clone(), usize::MAX, 0);
    decode(&text, &Dir::default(), *run.settings()).expect("a stored run loads back")
}

/// The size of the run as stored.
pub fn stored_len(run: &Run) -> usize {
    encode(&mut run.clone(), usize::MAX, 0).len()
}

pub fn run_graph_with(
    graph: Value,
    context: Value,
    net: &Network,
    clock: &Clock,
    settings: &Settings,
) -> Run {
    let ctx: Map<String, Value> = context.as_object().cloned().unwrap_or_default();
    let mut run = Run::start(plan(graph), "run-1".into(), ctx, clock.now(), *settings);
    continue_run(&mut run, net, clock);
    run
}

pub fn output(run: &Run) -> &Value {
    match run.status() {
        RunStatus::Completed { output, .. } => output,
        other => panic!("run is not completed: {other:?}"),
    }
}

/// Node ids in trace order with their status, for compact assertions.
pub fn trace(run: &Run) -> Vec<String> {
    run.record
        .trace
        .iter()
        .map(|t| {
            let status = match t.status {
                TraceStatus::Succeeded => "ok",
                TraceStatus::Failed => "failed",
                TraceStatus::Paused => "paused",
                TraceStatus::Skipped => "skipped",
                TraceStatus::Superseded => "superseded",
            };
            match t.item {
                Some(i) => format!("{}[{i}]:{status}", t.node_id),
                None => format!("{}:{status}", t.node_id),
            }
        })
        .collect()
}

pub fn executed(run: &Run) -> Vec<String> {
    trace(run)
        .into_iter()
        .filter(|t| t.ends_with(":ok") || t.ends_with(":failed"))
        .collect()
}

/// A chain `n0 → n1 → … → n{len-1}` of pass-through components between an
/// Input and an Output.
pub fn chain(len: usize, component: &str) -> Value {
    let mut nodes = vec![json!({"id": "in", "type": "Input"})];
    let mut edges = Vec::new();
    let mut prev = "in".to_string();
    for i in 0..len {
        let id = format!("n{i}");
        nodes.push(json!({"id": id, "type": "Component", "componentId": component}));
        edges.push(json!({"from": prev, "to": id, "type": "PIPE"}));
        prev = id;
    }
    nodes.push(json!({"id": "out", "type": "Output"}));
    edges.push(json!({"from": prev, "to": "out", "type": "PIPE"}));
    json!({"id": "chain", "nodes": nodes, "edges": edges})
}
