//! Graph validation and the run state machine, driven natively the way the
//! gate drives it: segment after segment, the run stored and read back at
//! every segment boundary.
//!
//! Input: a stream of JSON values. The first is the graph; `parse_graph`
//! ignores unknown keys, so it may also carry a `"context"` object (the
//! trigger context) and a `"limits"` object overriding `max_template_bytes`,
//! `max_foreach_items` (at most 256 here, to keep runs fast), `max_run_bytes`,
//! `wait_ttl_ms`, `max_calls_per_segment` (brought into 1..=8; when absent it
//! is picked from the input's length) and the stored record's `max_record_bytes`.
//! Every further value scripts, in order, the answer to the next component
//! call, or what arrives when the run is paused:
//!   calls:  "echo"    → the call's own input      "pending" → {pending, task_id}
//!           "polled"  → pending, with a status URL polled every second
//!           "fail"    → HTTP 500                  "timeout" → a failure without status
//!           anything else → answered as written (polls are answered the same way).
//!   paused: "expire"  → time moves to the earliest deadline, which is taken
//!           "late"    → time moves past it: a callback is refused, then it is taken
//!           "cancel"  → the run is cancelled
//!           "wake"    → time moves to the next timer (deadline or poll): the alarm
//!           anything else → the callback body for the first open wait.
//! At a yield a scripted control word acts too; anything else is left for
//! the next call. When the script runs out, calls are echoed and
//! callbacks get `{}`.
//!
//! Invariants checked: no panic; every segment ends in exactly one terminal
//! effect that agrees with the status (`Yield` only with the budget spent,
//! `WakeAt` the next deadline or poll, nothing once finished); no segment
//! issues more calls than its budget; each node (and FOREACH item) is called
//! at most once over the whole run — across yields, pauses and reloads — and
//! each idempotency key, polls' included, is issued once; calls carry the
//! derived wait id, key, segment, deadline and a signed callback URL, polls
//! only for a due poll of an open wait; settled states agree with
//! waits, closed waits and the trace; a deadline closes exactly the waits
//! past it, and a timed-out node takes ON_FAIL or fails the run with
//! `wait_timeout`; the stored record decodes equal to the run in memory, with
//! the same calls due, and encodes back to the same text; after cancel or
//! finish every callback is a no-op and `step` issues nothing.
//!

#![no_main]

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::rc::Rc;

use arcrun::core::effect::Effect;
use arcrun::core::graph::EdgeKind;
use arcrun::core::plan::{plan_from_json, Directory, GraphLimits};
use arcrun::core::protocol::{error_code, CallFailure};
use arcrun::core::record::{Arrival, ItemState, NodeState, RunStatus, TraceStatus, WaitClosed};
use arcrun::core::run::{Call, CallKey, CallOutcome, Noop, Resume, Run, Settings, Signer};
use arcrun::core::stored::{decode, encode};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};

/// The adapter's default `MAX_RUN_RECORD_BYTES`.
const MAX_RECORD_BYTES: usize = 24 << 20;
/// With budgets of a few calls and a reload per segment, a run costs about
/// items² / budget: more items would only make the fuzzer slow.
const MAX_FOREACH_ITEMS: usize = 256;
const RUN_ID: &str = "r";
const CALLBACK_BASE: &str = "https://gate.test";

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

    /// Takes the next value only if it is a control word.
    fn take_control(&mut self) -> Option<Value> {
        let word = self.values.get(self.next).and_then(Value::as_str);
        matches!(word, Some("expire" | "late" | "cancel" | "wake")).then(|| self.take())?
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
                "polled" => CallOutcome::Answered(json!({"pending": true,
                    "task_id": format!("t-{}", call.wait_id),
                    "status_url": "https://status.test/", "poll_interval_seconds": 1})),
                "fail" => CallOutcome::Failed {
                    status: Some(500),
                    error: "HTTP 500".into(),
                    code: Some(CallFailure::HttpStatus),
                },
                "timeout" => CallOutcome::Failed {
                    status: None,
                    error: "timed out".into(),
                    code: Some(CallFailure::Timeout),
                },
                _ => CallOutcome::Answered(Value::String(s)),
            },
            Some(v) => CallOutcome::Answered(v),
        }
    }
}

#[derive(Default)]
struct Harness {
    settings: Settings,
    max_record_bytes: usize,
    now: u64,
    /// Every (node, item) instance ever called, and every idempotency key.
    called: HashSet<CallKey>,
    keys: HashSet<String>,
    /// The deadline each call was issued with, by wait id: its wait must keep it.
    deadlines: HashMap<String, u64>,
    /// Every wait that was ever open.
    waits_seen: BTreeSet<String>,
    calls: usize,
    segments: usize,
    /// The run's attempt: wait ids carry it after a retry.
    attempt: u32,
}

impl Harness {
    fn tick(&mut self) -> u64 {
        self.now += 1;
        self.now
    }

    /// The expiry a wait's callback URL was signed with (none for a
    /// `poll_task` wait, which has no URL: the bare route's `None`).
    fn token(&self, wait_id: &str) -> Option<u64> {
        self.deadlines.get(wait_id).copied()
    }

    /// One segment, as the gate's `finish` runs it: a fresh budget, then
    /// steps until the run asks for nothing more, answering every call.
    fn segment(&mut self, run: &mut Run, script: &mut Script) {
        self.segments += 1;
        // Each segment either spends its whole budget (a yield) or follows a
        // closed wait, and waits come from calls: this bounds the segments
        // (each retry starts over with one more).
        let bound = 2 * self.calls + 2 + 2 * self.attempt as usize;
        assert!(self.segments <= bound, "segments do not end");
        let budget = self.settings.max_calls_per_segment;
        let secret: Rc<str> = Rc::from("s3cret");
        run.begin_segment(Some(Signer { base: CALLBACK_BASE.into(), secret }));
        let segment = run.record.segments;
        let mut issued = 0;
        loop {
            let now = self.tick();
            let effects = run.step(now);
            let calls: Vec<&Call> = effects.iter().filter_map(Effect::as_call).collect();
            if calls.is_empty() {
                return end_of_segment(run, &effects, issued == budget, now);
            }
            assert_eq!(calls.len(), effects.len(), "calls mixed with terminal effects");
            issued += calls.len();
            assert!(issued <= budget, "segment issued {issued} calls, budget {budget}");
            for call in &calls {
                self.check_call(run, call, now, segment);
            }
            for call in calls {
                let outcome = script.answer(call);
                let now = self.tick();
                run.complete_call(call.key, outcome, now);
            }
        }
    }

    fn check_call(&mut self, run: &Run, call: &Call, now: u64, segment: u64) {
        let CallKey { node, item } = call.key;
        assert!(node < run.plan.graph.nodes.len(), "call for node {node} out of range");
        let spec = &run.plan.graph.nodes[node];
        assert_eq!(call.node_id, spec.id);
        assert_eq!(call.segment, segment);
        self.calls += 1;
        if call.poll.is_some() {
            // A poll of an open wait's status URL: one per wait at a time, each
            // with a key of its own, never replayed for a later poll.
            let wait = &run.record.waits[&call.wait_id];
            assert_eq!((wait.node_id.as_str(), wait.item), (spec.id.as_str(), item));
            assert!(wait.poll.as_ref().is_some_and(|p| p.next_at <= now), "poll not due");
            assert_eq!(call.expires_at, wait.expires_at);
            assert!(self.keys.insert(call.idempotency_key.clone()), "poll key issued twice");
            return;
        }
        assert!(self.called.insert(call.key), "node {} item {item:?} called twice", spec.id);
        assert_eq!(call.wait_id, call.key.wait_id(self.attempt));
        assert_eq!(call.idempotency_key, format!("{RUN_ID}.{}", call.wait_id));
        assert!(
            self.keys.insert(call.idempotency_key.clone()),
            "idempotency key {} issued twice",
            call.idempotency_key
        );
        let ttl = spec.wait_timeout_seconds.map_or(self.settings.wait_ttl_ms, |s| s * 1000);
        assert_eq!(call.expires_at, now + ttl, "deadline of {}", call.wait_id);
        let url = call.callback_url.as_deref().expect("a signed callback URL");
        let prefix = format!("{CALLBACK_BASE}/callbacks/{RUN_ID}/{}?token=", call.wait_id);
        assert!(url.starts_with(&prefix), "callback URL {url}");
        self.deadlines.insert(call.wait_id.clone(), call.expires_at);
    }

    /// Stores the run as the gate does at the end of a segment, reads it back
    /// and goes on with the run read back.
    fn reload(&mut self, run: &mut Run) -> Run {
        let now = self.tick();
        let before = run.record.clone();
        let text = encode(run, self.max_record_bytes, now);
        let trimmed = run.record.trace_dropped != before.trace_dropped
            || run.record.status != before.status;
        if !trimmed {
            assert_eq!(run.record, before, "storing the record changed the run in memory");
            assert!(text.len() <= self.max_record_bytes, "stored record over the limit");
        }
        let loaded = decode(&text, &Directory::default(), self.settings)
            .unwrap_or_else(|e| panic!("a stored record decodes: {e:?}\n{text}"));
        // serde_json's `float_roundtrip` is on: the record must come back exactly.
        assert_eq!(loaded.record, run.record, "record changed through store and load:\n{text}");
        assert_eq!(loaded.plan.order, run.plan.order);
        if !run.status().is_finished() {
            // Calls due at a yield are rebuilt from node states, none lost or added.
            assert_eq!(loaded.calls_due(), run.calls_due(), "calls due after reload");
        }
        if text.len() <= self.max_record_bytes {
            assert_eq!(encode(&mut loaded.clone(), self.max_record_bytes, now), text);
        }
        check_settled(&loaded, now);
        for (id, w) in &loaded.record.waits {
            self.waits_seen.insert(id.clone());
            if let Some(d) = self.deadlines.get(id) {
                assert_eq!(w.expires_at, *d, "wait {id} keeps its call's deadline");
            }
        }
        loaded
    }

    /// Takes every deadline at or before `now`, as the gate does first
    /// whatever arrives, and checks what it closed.
    fn expire(&mut self, run: &mut Run, now: u64) {
        let due: Vec<_> = run.record.waits.values().filter(|w| w.expires_at <= now).cloned().collect();
        let was_finished = run.status().is_finished();
        let closed = run.expire(now).expect("expire");
        if was_finished {
            return assert_eq!(closed, 0);
        }
        // A timeout that fires a `join: "any"` node supersedes the due
        // waits that only fed it: closed, but not by their deadline.
        let superseded = due
            .iter()
            .filter(|w| run.record.closed.get(&w.wait_id).is_some_and(|c| c.how == WaitClosed::Superseded))
            .count();
        // A timeout that fails the run drops the waits after it unclosed.
        if matches!(run.status(), RunStatus::Failed { .. }) {
            assert!((1..=due.len()).contains(&closed), "{closed} of {} closed", due.len());
        } else {
            assert_eq!(closed + superseded, due.len());
        }
        if let RunStatus::Failed { error, .. } = run.status() {
            // Failing on the way drops the remaining waits, so there is no more to check.
            assert!(run.record.waits.is_empty());
            let code = error.code.as_str();
            assert!(matches!(code, "wait_timeout" | "node_failed" | "run_too_large"), "{code}");
            if code == "wait_timeout" {
                let node = error.node_id.as_deref();
                assert!(due.iter().any(|w| w.item.is_none() && Some(w.node_id.as_str()) == node));
            }
            return;
        }
        assert!(run.record.waits.values().all(|w| w.expires_at > now), "a due wait stayed open");
        for w in &due {
            let c = &run.record.closed[&w.wait_id];
            if c.how == WaitClosed::Superseded {
                assert_eq!(c.at, now);
                continue;
            }
            assert_eq!((c.how, c.at), (WaitClosed::TimedOut, now));
            if w.item.is_some() {
                continue;
            }
            // The run goes on, so a timed-out node must have had a failure path.
            let n = run.plan.node_index(&w.node_id).expect("wait names a node");
            let routed = run.plan.outgoing[n]
                .iter()
                .any(|&e| run.plan.graph.edges[e].kind == EdgeKind::OnFail);
            assert!(routed, "node {} timed out unrouted but the run goes on", w.node_id);
            match &run.record.nodes[n] {
                NodeState::Done { output } => assert_eq!(error_code(output), Some("wait_timeout")),
                s => panic!("timed-out node {} is {s:?}", w.node_id),
            }
        }
    }

    /// What arrives between segments: a control word, a callback, or (at a
    /// yield) the alarm that continues the run.
    fn arrive(&mut self, run: &mut Run, script: &mut Script) {
        let paused = matches!(run.status(), RunStatus::Paused { .. });
        let value = if paused { script.take() } else { script.take_control() };
        let earliest = run.record.next_deadline();
        match (value.as_ref().and_then(Value::as_str), earliest) {
            (Some("cancel"), _) => {
                let now = self.tick();
                self.expire(run, now);
                let open: Vec<String> = run.record.waits.keys().cloned().collect();
                if run.status().is_finished() {
                    assert!(run.cancel(now).is_err(), "a finished run was cancelled");
                    return;
                }
                run.cancel(now).expect("cancel an unfinished run");
                assert_eq!(run.status(), &RunStatus::Cancelled { finished_at: now });
                assert!(run.record.waits.is_empty() && run.calls_due() == 0);
                assert!(run.record.nodes.iter().all(|s| *s == NodeState::Idle));
                for id in open {
                    assert_eq!(run.record.closed[&id].how, WaitClosed::Cancelled);
                }
            }
            (Some("wake"), _) => {
                // The alarm, at the run's next timer: a deadline or a poll.
                self.now = self.now.max(run.record.next_timer().unwrap_or(0));
                self.expire(run, self.now);
            }
            (Some("expire"), Some(deadline)) => {
                self.now = self.now.max(deadline);
                self.expire(run, self.now);
            }
            (Some("late"), Some(deadline)) => {
                self.now = self.now.max(deadline + 1);
                let wait = run.record.waits.values().find(|w| w.expires_at == deadline).cloned();
                let wait = wait.expect("the earliest wait");
                let before = run.record.clone();
                let body = json!({ "task_id": wait.task_id });
                let token = self.token(&wait.wait_id);
                let late = run.resume(&wait.wait_id, body, token, self.now);
                assert_eq!(late, Ok(Err(Noop::Expired)));
                assert_eq!(run.record, before, "a late callback changed the run");
                self.expire(run, self.now);
            }
            _ if paused => {
                let now = self.tick();
                self.expire(run, now);
                if matches!(run.status(), RunStatus::Paused { .. }) {
                    self.callback(run, value, now);
                }
            }
            _ => {
                let now = self.tick();
                self.expire(run, now);
            }
        }
    }

    /// Delivers a callback for the first open wait. Refused bodies (not an
    /// object, another task's id) change nothing; the right one then applies once.
    fn callback(&mut self, run: &mut Run, value: Option<Value>, now: u64) {
        let wait = run.record.waits.values().next().cloned().expect("paused with a wait");
        let id = &wait.wait_id;
        let token = self.token(id);
        let mut body = value.unwrap_or_else(|| json!({}));
        if !body.is_object() {
            let before = run.record.clone();
            assert!(run.resume(id, body, token, now).is_err(), "a non-object body was applied");
            assert_eq!(run.record, before, "a refused callback changed the run");
            body = json!({});
        }
        let before = run.record.clone();
        match run.resume(id, body, token, now) {
            Ok(Ok(Resume::Applied)) => {}
            Ok(Ok(Resume::Held)) => panic!("a callback for open wait {id} was held"),
            Ok(Err(noop)) => panic!("resume of open wait {id} was a no-op: {noop:?}"),
            Err(_) => {
                assert_eq!(run.record, before, "a refused callback changed the run");
                let body = json!({ "task_id": wait.task_id });
                assert_eq!(run.resume(id, body, token, now), Ok(Ok(Resume::Applied)));
            }
        }
        assert_eq!(run.record.closed[id].how, WaitClosed::Resumed);
        let again = run.resume(id, json!({}), token, now);
        assert_eq!(again, Ok(Err(Noop::AlreadyResumed)), "a repeated callback must be recognised");
    }

    /// A finished (or cancelled) run ignores everything that may still arrive.
    fn check_finished(&mut self, run: &mut Run) {
        let now = self.tick();
        let mut ids = self.waits_seen.clone();
        ids.extend(["n0".into(), "n0-0".into(), "n999999".into()]);
        for id in &ids {
            let expected = match run.record.closed.get(id).map(|c| c.how) {
                Some(WaitClosed::Resumed | WaitClosed::Polled) => Noop::AlreadyResumed,
                Some(WaitClosed::TimedOut) => Noop::Expired,
                Some(WaitClosed::Superseded) => Noop::Superseded,
                Some(WaitClosed::Cancelled) | None => Noop::RunFinished,
            };
            let got = run.resume(id, json!({}), self.token(id), now);
            assert_eq!(got, Ok(Err(expected)), "callback for {id}");
        }
        assert_eq!(run.expire(now + (1 << 40)), Ok(0));
        assert!(run.cancel(now).is_err(), "a finished run was cancelled");
        assert_eq!(run.next_wake(now), None);
        run.begin_segment(None);
        assert!(run.step(now).is_empty(), "a finished run stepped");
        finished_states(run);
    }
}

/// A completed or cancelled run holds its result once: node states are
/// released. A failed one keeps them for a retry, but none of them points at
/// a wait or a call: its waits were closed.
fn finished_states(run: &Run) {
    if !matches!(run.status(), RunStatus::Failed { .. }) {
        let kept = run.record.nodes.iter().position(|s| *s != NodeState::Idle);
        assert_eq!(kept, None, "a finished run kept node states: {:?}", run.record.nodes);
        return;
    }
    assert!(run.record.waits.is_empty(), "a failed run kept open waits");
    for s in &run.record.nodes {
        let live = match s {
            NodeState::Calling { .. } | NodeState::Paused { .. } => true,
            NodeState::Mapping(m) => m
                .items
                .iter()
                .any(|i| matches!(i, ItemState::Todo(_) | ItemState::Paused { .. })),
            _ => false,
        };
        assert!(!live, "a failed run kept a live state: {s:?}");
    }
}

/// The effects that ended a segment agree with the status they leave.
fn end_of_segment(run: &Run, effects: &[Effect], budget_spent: bool, now: u64) {
    match (run.status(), effects) {
        (RunStatus::Running, [Effect::Yield]) => {
            assert!(budget_spent, "yielded with budget left");
            assert!(run.calls_due() > 0 || run.polls_due_at(now), "yielded with nothing due");
        }
        (RunStatus::Paused { .. }, [Effect::WakeAt(t)]) => {
            assert_eq!(Some(*t), run.record.next_timer(), "wakes at the earliest deadline or poll");
            assert!(!run.polls_due_at(now), "paused with a poll due");
        }
        (s, []) if s.is_finished() => finished_states(run),
        (s, e) => panic!("segment ended {} with {e:?}", s.name()),
    }
    assert_eq!(run.next_wake(0).is_some(), !run.status().is_finished());
}

fn check_settled(run: &Run, now: u64) {
    let rec = &run.record;
    let plan = &run.plan;
    let nodes = &plan.graph.nodes;
    assert_eq!(rec.nodes.len(), nodes.len());
    let node_of = |id: &str| plan.node_index(id).unwrap_or_else(|| panic!("unknown node {id}"));
    match &rec.status {
        RunStatus::Running => {
            assert!(run.calls_due() > 0 || run.polls_due_at(now), "stored running, nothing due");
        }
        RunStatus::Paused { .. } => {
            assert!(!rec.waits.is_empty(), "paused run has no open wait");
            // Paused means nothing is left to do but wait.
            for (i, s) in rec.nodes.iter().enumerate() {
                let stuck = match s {
                    NodeState::Calling { .. } => true,
                    NodeState::Waiting { arrivals } => !arrivals.contains(&Arrival::Pending),
                    // Nothing queued, and nothing held back with no item in flight.
                    NodeState::Mapping(m) => {
                        m.items.iter().any(|i| matches!(i, ItemState::Todo(_)))
                            || (m.in_flight() == 0
                                && m.items.iter().any(|i| matches!(i, ItemState::Held(_))))
                    }
                    _ => false,
                };
                assert!(!stuck, "paused run with work left at {}: {s:?}", nodes[i].id);
            }
        }
        _ => assert!(rec.waits.is_empty(), "finished run has open waits"),
    }
    for (id, w) in &rec.waits {
        assert_eq!(id, &w.wait_id);
        let n = node_of(&w.node_id);
        assert_eq!(id, &CallKey { node: n, item: w.item }.wait_id(rec.attempt), "wait id not derived");
        let held = match (w.item, &rec.nodes[n]) {
            (None, NodeState::Paused { wait_id, .. }) => wait_id == id,
            (Some(i), NodeState::Mapping(m)) => {
                matches!(m.items.get(i), Some(ItemState::Paused { wait_id }) if wait_id == id)
            }
            _ => false,
        };
        assert!(held, "wait {id} not held by node {}: {:?}", w.node_id, rec.nodes[n]);
        assert!(!rec.closed.contains_key(id), "wait {id} both open and closed");
    }
    for c in rec.closed.values() {
        node_of(&c.node_id);
    }

    // Trace: one completion and at most one pause per instance and attempt,
    // a skip only for a never-completed node, a callback's completion after
    // its pause.
    let mut completed: BTreeMap<(&str, Option<usize>, u32), usize> = BTreeMap::new();
    let mut paused: BTreeMap<(&str, Option<usize>, u32), usize> = BTreeMap::new();
    let mut skipped: BTreeMap<(&str, u32), usize> = BTreeMap::new();
    let whole_trace = rec.trace_dropped == 0;
    for t in &rec.trace {
        node_of(&t.node_id);
        let key = (t.node_id.as_str(), t.item, t.attempt);
        match t.status {
            TraceStatus::Succeeded | TraceStatus::Failed => *completed.entry(key).or_default() += 1,
            TraceStatus::Paused => *paused.entry(key).or_default() += 1,
            // A superseded node is left `Skipped`, and counted as a skip.
            TraceStatus::Skipped | TraceStatus::Superseded => {
                assert!(t.item.is_none(), "an item was skipped");
                *skipped.entry((t.node_id.as_str(), t.attempt)).or_default() += 1;
            }
        }
        if t.resumed && whole_trace {
            assert!(paused.contains_key(&key), "resumed {key:?} without a pause before it");
        }
    }
    for (key, count) in completed.iter().chain(&paused) {
        assert_eq!(*count, 1, "{key:?} completed or paused {count} times in the trace");
    }
    for ((id, attempt), count) in &skipped {
        assert_eq!(*count, 1, "{id} skipped {count} times");
        let done = (*id, None, *attempt);
        assert!(!completed.contains_key(&done), "{id} both skipped and completed");
    }
    // Finished runs release their node states; the rest must match the trace.
    if !whole_trace || rec.status.is_finished() {
        return;
    }
    // After a retry an instance may have completed in an earlier attempt
    // (and, failed, be running again): Done must still have a completion.
    let completed_in = |id: &str, item: Option<usize>| {
        completed.keys().any(|(n, i, _)| *n == id && *i == item)
    };
    let exact = rec.attempt == 0;
    for (i, node) in nodes.iter().enumerate() {
        let id = node.id.as_str();
        let done = matches!(rec.nodes[i], NodeState::Done { .. });
        if exact || done {
            assert_eq!(done, completed_in(id, None), "node {id} Done vs trace");
        }
        let skip = matches!(rec.nodes[i], NodeState::Skipped);
        if exact || skip {
            let skipped_in = skipped.keys().any(|(n, _)| *n == id);
            assert_eq!(skip, skipped_in, "node {id} skip state vs trace");
        }
        if let NodeState::Mapping(m) = &rec.nodes[i] {
            for (j, item) in m.items.iter().enumerate() {
                let done = matches!(item, ItemState::Done(_));
                if exact || done {
                    assert_eq!(done, completed_in(id, Some(j)), "{id} item {j} vs trace");
                }
            }
        }
    }
}

fn limit(limits: Option<&Value>, key: &str) -> Option<usize> {
    limits?.get(key)?.as_u64().map(|v| v as usize)
}

fuzz_target!(|data: &[u8]| {
    let mut values = serde_json::Deserializer::from_slice(data).into_iter::<Value>();
    let Some(Ok(graph)) = values.next() else {
        return;
    };
    let Ok(plan) = plan_from_json(&graph, &Directory::default(), GraphLimits::default()) else {
        return;
    };
    assert_eq!(plan.order.len(), plan.graph.nodes.len(), "plan accepted with nodes outside the order");

    let context: Map<String, Value> =
        graph.get("context").and_then(Value::as_object).cloned().unwrap_or_default();
    let mut script = Script { values: values.map_while(Result::ok).collect(), next: 0 };
    let limits = graph.get("limits");
    let d = Settings::default();
    let settings = Settings {
        max_template_bytes: limit(limits, "max_template_bytes").unwrap_or(d.max_template_bytes),
        max_foreach_items: limit(limits, "max_foreach_items")
            .unwrap_or(d.max_foreach_items)
            .min(MAX_FOREACH_ITEMS),
        max_run_bytes: limit(limits, "max_run_bytes").unwrap_or(d.max_run_bytes),
        wait_ttl_ms: limit(limits, "wait_ttl_ms").map_or(d.wait_ttl_ms, |t| t.clamp(1, 1 << 40) as u64),
        // Small budgets, so that runs yield and continue often.
        max_calls_per_segment: limit(limits, "max_calls_per_segment")
            .unwrap_or(data.len())
            .wrapping_sub(1)
            % 8
            + 1,
        ..d
    };
    let mut h = Harness {
        settings,
        max_record_bytes: limit(limits, "max_record_bytes").unwrap_or(MAX_RECORD_BYTES),
        now: 1_000_000,
        ..Harness::default()
    };

    let mut run = Run::start(plan, RUN_ID.into(), context, h.now, settings);
    loop {
        loop {
            h.segment(&mut run, &mut script);
            run = h.reload(&mut run);
            if run.status().is_finished() {
                break;
            }
            h.arrive(&mut run, &mut script);
            if run.status().is_finished() {
                // Cancelled, or failed by a callback or a deadline: the gate
                // saves it as it is, without stepping it again (a failed run
                // once kept node states naming the waits it had dropped, and
                // did not read back: seeds regress_unstepped_fail_*).
                run = h.reload(&mut run);
                break;
            }
        }
        // A failed run is retried (twice at most): only what failed runs
        // again, under new wait ids, and every invariant holds again.
        if h.attempt >= 2 || !matches!(run.status(), RunStatus::Failed { .. }) {
            break;
        }
        let now = h.tick();
        if run.retry(now).is_err() {
            break;
        }
        h.attempt += 1;
        assert_eq!(run.record.attempt, h.attempt);
        // What failed is called again, once more per attempt.
        h.called.clear();
    }
    h.check_finished(&mut run);
    // What `check_finished` did changed nothing worth storing, but it stores and loads too.
    h.reload(&mut run);
});
