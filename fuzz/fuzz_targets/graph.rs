//! Graph validation and the run state machine, driven natively.
//!
//! Input: a stream of JSON values. The first is the graph; `parse_graph`
//! ignores unknown keys, so it may also carry a `"context"` object (the
//! trigger context) and a `"limits"` object overriding `max_template_bytes`,
//! `max_foreach_items`, `max_run_bytes` and the stored record's
//! `max_record_bytes` (defaults: the adapter's), to reach the limit paths. Every further value scripts, in order, the answer to
//! the next component call or the body of the next callback:
//!   "echo"    → the call's own input            "pending" → {pending, task_id}
//!   "fail"    → a transport failure (HTTP 500)  "timeout" → a failure without status
//!   anything else → answered (or sent as a callback body) as written.
//! When the script runs out, calls are echoed and callbacks get `{}`.
//!
//! Invariants checked: no panic; every run settles (never `Running` after
//! `step` returns no calls) within a bounded number of steps; each node (and
//! each FOREACH item) is called at most once and completed at most once in the
//! trace; settled states agree with the node states and waits; the record
//! stored the adapter's way (`to_stored_json`: contexts compacted to deltas,
//! trace trimmed to the size limit) loads back (`Run::load`) equal to the run
//! in memory, and the reloaded run resumes.

#![no_main]

use std::collections::{BTreeMap, HashSet};

use arcrun::core::executor::{Call, CallKey, CallOutcome, Noop, Run, Settings};
use arcrun::core::plan::{plan_from_json, Directory, GraphLimits};
use arcrun::core::record::{NodeState, RunRecord, RunStatus, TraceStatus};
use arcrun::core::template::json_map_size;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};

/// Upper bound on pause/resume rounds; each round consumes one wait and waits
/// are bounded by calls, so this is never reached by a correct engine.
const MAX_ROUNDS: usize = 10_000;
/// The adapter's default `MAX_RUN_RECORD_BYTES`.
const MAX_RECORD_BYTES: usize = 24 << 20;
/// The executor's per-step batch cut (`MAX_BATCH_BYTES` in executor.rs).
const MAX_BATCH_BYTES: usize = 8 << 20;

struct Script {
    values: Vec<Value>,
    next: usize,
}

impl Script {
    fn take(&mut self) -> Option<Value> {
        let v = self.values.get(self.next).cloned();
        self.next += 1;
        v
    }

    fn answer(&mut self, call: &Call) -> CallOutcome {
        let echo = || CallOutcome::Answered(Value::Object(call.input.clone()));
        match self.take() {
            None => echo(),
            Some(Value::String(s)) => match s.as_str() {
                "echo" => echo(),
                "pending" => CallOutcome::Answered(
                    json!({"pending": true, "task_id": format!("t-{}", call.wait_id)}),
                ),
                "fail" => CallOutcome::Failed {
                    status: Some(500),
                    error: "HTTP 500".into(),
                },
                "timeout" => CallOutcome::Failed {
                    status: None,
                    error: "timed out".into(),
                },
                _ => CallOutcome::Answered(Value::String(s)),
            },
            Some(v) => CallOutcome::Answered(v),
        }
    }

    fn callback_body(&mut self) -> Value {
        match self.take() {
            Some(v @ Value::Object(_)) => v,
            _ => json!({}),
        }
    }
}

struct Harness {
    settings: Settings,
    max_record_bytes: usize,
    now: u64,
    /// Every (node, item) instance ever called; an instance is called once.
    called: HashSet<(usize, Option<usize>)>,
    wait_ids: HashSet<String>,
}

impl Harness {
    fn tick(&mut self) -> u64 {
        self.now += 1;
        self.now
    }

    /// Steps until the run settles, answering every call.
    fn drive(&mut self, run: &mut Run, script: &mut Script) {
        let n = run.plan.graph.nodes.len();
        // A step issues the calls of every node made ready by the previous
        // step's answers, so each step after the first goes one component
        // deeper: there can be no more steps than nodes, plus the settling one
        // (plus one for each step the executor cut short at its batch limit).
        let mut max_steps = n + 1;
        let mut steps = 0;
        loop {
            steps += 1;
            assert!(steps <= max_steps, "run did not settle within {max_steps} steps");
            let now = self.tick();
            let calls = run.step(now, &self.settings);
            if calls.is_empty() {
                break;
            }
            let batch: usize = calls.iter().map(|c| json_map_size(&c.input)).sum();
            if batch >= MAX_BATCH_BYTES {
                max_steps += 1;
            }
            for call in &calls {
                let CallKey { node, item } = call.key;
                assert!(node < n, "call for node index {node} out of range");
                assert_eq!(call.node_id, run.plan.graph.nodes[node].id);
                assert!(
                    self.called.insert((node, item)),
                    "node {} item {item:?} called twice",
                    call.node_id
                );
                assert!(
                    self.wait_ids.insert(call.wait_id.clone()),
                    "wait id {} issued twice",
                    call.wait_id
                );
            }
            for call in &calls {
                let outcome = script.answer(call);
                let now = self.tick();
                run.complete_call(call.key, outcome, now);
            }
        }
        check_settled(run);
    }
}

fn check_settled(run: &Run) {
    let rec = &run.record;
    let plan = &run.plan;
    let n = plan.graph.nodes.len();
    assert_eq!(rec.nodes.len(), n);
    // A record over the stored size limit is failed and its node states dropped.
    let dropped_states = matches!(&rec.status,
        RunStatus::Failed { error, .. } if error.code == "record_too_large");
    // The oldest trace entries may have been trimmed to fit the size limit.
    let whole_trace = rec.trace_dropped == 0 && !dropped_states;
    match &rec.status {
        RunStatus::Running => panic!("run still Running after step returned no calls"),
        RunStatus::Completed { .. } => {
            assert!(rec.waits.is_empty(), "completed run has open waits");
            for (i, s) in rec.nodes.iter().enumerate() {
                assert!(
                    matches!(s, NodeState::Done { .. } | NodeState::Skipped),
                    "completed run left node {} in state {s:?}",
                    plan.graph.nodes[i].id
                );
            }
        }
        RunStatus::Failed { .. } => {
            assert!(rec.waits.is_empty(), "failed run has open waits");
            if dropped_states {
                assert!(rec.nodes.iter().all(|s| matches!(s, NodeState::Idle)));
            }
        }
        RunStatus::Paused { .. } => {
            assert!(!rec.waits.is_empty(), "paused run has no open wait");
            for (id, w) in &rec.waits {
                assert_eq!(id, &w.wait_id);
                let node = plan
                    .node_index(&w.node_id)
                    .unwrap_or_else(|| panic!("wait {id} names unknown node {}", w.node_id));
                match (w.item, &rec.nodes[node]) {
                    (None, NodeState::Paused { wait_id, .. }) => assert_eq!(wait_id, id),
                    (Some(i), NodeState::Mapping { slots, .. }) => {
                        assert!(i < slots.len(), "wait {id} for item {i} out of range");
                        assert!(slots[i].is_none(), "wait {id} for an item already done");
                    }
                    (item, state) => {
                        panic!("wait {id} (item {item:?}) but node is {state:?}")
                    }
                }
            }
        }
    }
    for (id, w) in &rec.resumed {
        assert!(!rec.waits.contains_key(id), "wait {id} both open and resumed");
        assert!(plan.node_index(&w.node_id).is_some());
    }

    // Trace: one completion per instance, a skip only for a never-completed
    // node, and a node is Done exactly when its completion is in the trace.
    let mut completed: BTreeMap<(&str, Option<usize>), usize> = BTreeMap::new();
    let mut paused: BTreeMap<(&str, Option<usize>), usize> = BTreeMap::new();
    let mut skipped: BTreeMap<&str, usize> = BTreeMap::new();
    for t in &rec.trace {
        assert!(plan.node_index(&t.node_id).is_some(), "trace names unknown node");
        let key = (t.node_id.as_str(), t.item);
        match t.status {
            TraceStatus::Succeeded | TraceStatus::Failed => {
                *completed.entry(key).or_default() += 1;
            }
            TraceStatus::Paused => *paused.entry(key).or_default() += 1,
            TraceStatus::Skipped => {
                assert!(t.item.is_none(), "an item was skipped");
                *skipped.entry(t.node_id.as_str()).or_default() += 1;
            }
        }
        if t.resumed && whole_trace {
            assert!(
                paused.contains_key(&key),
                "resumed completion of {key:?} without a pause before it"
            );
        }
    }
    for (key, count) in &completed {
        assert_eq!(*count, 1, "{key:?} completed {count} times in the trace");
    }
    for (key, count) in &paused {
        assert_eq!(*count, 1, "{key:?} paused {count} times in the trace");
    }
    for (id, count) in &skipped {
        assert_eq!(*count, 1, "{id} skipped {count} times");
        assert!(!completed.contains_key(&(*id, None)), "{id} both skipped and completed");
    }
    if !whole_trace {
        return;
    }
    for (i, node) in plan.graph.nodes.iter().enumerate() {
        let done = matches!(rec.nodes[i], NodeState::Done { .. });
        let in_trace = completed.contains_key(&(node.id.as_str(), None));
        assert_eq!(done, in_trace, "node {} Done={done} but completion in trace={in_trace}", node.id);
        let skip = matches!(rec.nodes[i], NodeState::Skipped);
        assert_eq!(skip, skipped.contains_key(node.id.as_str()), "node {} skip state", node.id);
    }
}

fn same_but_float_ulps(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x != y => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) if x.is_finite() && x.signum() == y.signum() => {
                x.to_bits().abs_diff(y.to_bits()) <= 4
            }
            _ => false,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_but_float_ulps(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same_but_float_ulps(v, w)))
        }
        _ => a == b,
    }
}

/// Stores the run as the adapter does, reads it back and rebuilds the run.
fn reload(run: &mut Run, max_record_bytes: usize, now: u64) -> Run {
    let before = run.record.clone();
    let text = run.to_stored_json(max_record_bytes, now);
    let trimmed = run.record.trace_dropped != before.trace_dropped
        || run.record.status != before.status;
    if !trimmed {
        assert_eq!(run.record, before, "storing the record changed the run in memory");
        assert!(text.len() <= max_record_bytes, "stored record over the limit");
    }
    let back: RunRecord = serde_json::from_str(&text).expect("stored record deserialises");
    let loaded = Run::load(back, &Directory::default()).expect("a stored record loads");
    assert!(!loaded.record.contexts_compacted && loaded.record.ctx_unset.is_empty());
    if loaded.record != run.record {
        // Known: without serde_json's `float_roundtrip` feature a float can
        // read back a few ulps off (see the fuzz report). Anything else —
        // above all a context not rebuilt exactly from its delta — is a bug.
        let a = serde_json::to_value(&run.record).expect("record to value");
        let b = serde_json::to_value(&loaded.record).expect("record to value");
        assert!(
            same_but_float_ulps(&a, &b),
            "record changed through store and load:\n{a}\n{b}"
        );
    }
    assert_eq!(loaded.plan.order, run.plan.order);
    loaded
}

fn limit(limits: Option<&Value>, key: &str, default: usize) -> usize {
    limits
        .and_then(|l| l.get(key))
        .and_then(Value::as_u64)
        .map_or(default, |v| v as usize)
}

fuzz_target!(|data: &[u8]| {
    let mut values = serde_json::Deserializer::from_slice(data).into_iter::<Value>();
    let Some(Ok(graph)) = values.next() else {
        return;
    };
    let Ok(plan) = plan_from_json(&graph, &Directory::default(), GraphLimits::default()) else {
        return;
    };
    let order_len = plan.order.len();
    assert_eq!(order_len, plan.graph.nodes.len(), "plan accepted with nodes outside the order");

    let context: Map<String, Value> = graph
        .get("context")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut script = Script {
        values: values.map_while(Result::ok).collect(),
        next: 0,
    };
    let limits = graph.get("limits");
    let defaults = Settings::default();
    let settings = Settings {
        max_template_bytes: limit(limits, "max_template_bytes", defaults.max_template_bytes),
        max_foreach_items: limit(limits, "max_foreach_items", defaults.max_foreach_items),
        max_run_bytes: limit(limits, "max_run_bytes", defaults.max_run_bytes),
        ..defaults
    };
    let mut h = Harness {
        settings,
        max_record_bytes: limit(limits, "max_record_bytes", MAX_RECORD_BYTES),
        now: 1_000,
        called: HashSet::new(),
        wait_ids: HashSet::new(),
    };

    let mut run = Run::start(plan, "r".into(), context, h.now);
    h.drive(&mut run, &mut script);

    let mut rounds = 0;
    while matches!(run.status(), RunStatus::Paused { .. }) {
        rounds += 1;
        assert!(rounds <= MAX_ROUNDS, "pause/resume did not end");
        // What the adapter does: store the paused record, load it on callback.
        let now = h.tick();
        run = reload(&mut run, h.max_record_bytes, now);
        check_settled(&run);
        if !matches!(run.status(), RunStatus::Paused { .. }) {
            break; // failed on the way to storage (record too large)
        }
        let wait = run.record.waits.values().next().cloned().expect("paused with a wait");
        let body = script.callback_body();
        let now = h.tick();
        let applied = match run.resume(&wait.wait_id, body, now) {
            Ok(Ok(())) => true,
            Ok(Err(noop)) => panic!("resume of open wait {} was a no-op: {noop:?}", wait.wait_id),
            // A body naming another task is refused without changing anything.
            Err(_) => false,
        };
        if !applied {
            assert!(run.record.waits.contains_key(&wait.wait_id), "refused resume consumed the wait");
            let now = h.tick();
            let body = json!({ "task_id": wait.task_id });
            assert_eq!(run.resume(&wait.wait_id, body, now).ok(), Some(Ok(())));
        }
        let now = h.tick();
        assert_eq!(
            run.resume(&wait.wait_id, json!({}), now).ok(),
            Some(Err(Noop::AlreadyResumed)),
            "a repeated callback must be recognised"
        );
        h.drive(&mut run, &mut script);
    }

    // A settled record stores and loads too (reload compares the two).
    let now = h.tick();
    let finished = reload(&mut run, h.max_record_bytes, now);
    check_settled(&finished);
});
