//! The stored-record decoder (`stored::decode`), which reads whatever KV
//! hands back: records of every version, and anything else.
//!
//! Input, by its first byte:
//!   `{`  → the whole input is the record text (seeds: real records, v1 and
//!          v2, which libFuzzer mutates byte-wise; what they become once
//!          written is v3);
//!   else → the rest drives structured mutations of a valid record: one of
//!          a few version-3 records built here by running small graphs
//!          (paused on a chain, paused mid-FOREACH with a join waiting,
//!          yielded with calls due, completed, cancelled, with a timed-out
//!          wait, paused on polling waits) or the v1 fixtures, parsed as
//!          JSON, edited (node states deleted, duplicated,
//!          replaced or renamed; numbers changed; wait keys dropped; items and
//!          arrivals edited; the version changed; any value replaced or
//!          deleted), written back and decoded.
//!
//! Checked: `decode` never panics, whatever the text — corrupt input is
//! `Err(CorruptRecord)`, no other error; a record it accepts encodes and
//! decodes back equal (what was read can be written), and still reads back
//! when stored over its size limit (trace trimmed, or failed as too large);
//! and driving what it accepts — segments stepped with echoed answers, every
//! open wait resumed, deadlines taken, sometimes a cancel — never panics
//! either, and leaves a record that reads back.

#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use arcrun::core::effect::Effect;
use arcrun::core::error::EngineError;
use arcrun::core::plan::{plan_from_json, Directory, GraphLimits};
use arcrun::core::run::{CallOutcome, Run, Settings};
use arcrun::core::stored::{decode, encode};
use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};

const V1_CHAIN: &str = include_str!("../seeds/stored/v1-paused-chain.json");
const V1_FOREACH: &str = include_str!("../seeds/stored/v1-paused-foreach-join.json");
/// Segments a decoded run is driven for; enough to finish the base records.
const MAX_ROUNDS: usize = 16;

/// The v1 fixtures name components that only the deployment's directory knows.
fn directory() -> Directory {
    Directory::new(BTreeMap::from([
        ("daemon_task".to_string(), "http://c/daemon".to_string()),
        ("after_component".to_string(), "http://c/after".to_string()),
    ]))
}

fn settings() -> Settings {
    Settings { max_calls_per_segment: 3, max_foreach_items: 64, ..Settings::default() }
}

/// Runs `graph` from a trigger, answering calls from `answers` in order
/// ("pending" → a pending answer, "polled" → one with a status URL; then
/// echo), for at most `segments`
/// segments, applies `then` and returns the run's stored text.
fn build(graph: Value, answers: &[&str], segments: usize, then: fn(&mut Run, u64)) -> String {
    let plan = plan_from_json(&graph, &Directory::default(), GraphLimits::default())
        .expect("a base graph is valid");
    let ctx = graph.get("context").and_then(Value::as_object).cloned().unwrap_or_default();
    let mut now = 1_000;
    let mut run = Run::start(plan, "base".into(), ctx, now, settings());
    let mut answers = answers.iter();
    for _ in 0..segments {
        run.begin_segment(None);
        loop {
            now += 1;
            let effects = run.step(now);
            let calls: Vec<_> = effects.iter().filter_map(Effect::as_call).cloned().collect();
            if calls.is_empty() {
                break;
            }
            for call in calls {
                let out = match answers.next() {
                    Some(&"pending") => {
                        json!({"pending": true, "task_id": format!("t-{}", call.wait_id)})
                    }
                    Some(&"polled") => json!({"pending": true, "task_id": "t",
                        "status_url": "https://status.test/", "poll_interval_seconds": 1}),
                    _ => Value::Object(call.input.clone()),
                };
                run.complete_call(call.key, CallOutcome::Answered(out), now);
            }
        }
        if run.status().is_finished() {
            break;
        }
    }
    then(&mut run, now + 1);
    encode(&mut run, usize::MAX, now + 2)
}

fn bases() -> &'static [String] {
    static BASES: OnceLock<Vec<String>> = OnceLock::new();
    BASES.get_or_init(|| {
        let chain = json!({"context": {"q": "x"}, "nodes": [
            {"id": "in", "type": "Input", "data": {"n": 1}},
            {"id": "job", "type": "Component", "componentId": "http://c/job", "data": {"q": "{{q}}"}, "wait_timeout_seconds": 5},
            {"id": "after", "type": "Component", "componentId": "http://c/after", "data": {"r": "{{job.q}}"}},
            {"id": "handler", "type": "Output", "data": {"why": "{{job.error}}"}},
            {"id": "out", "type": "Output"}],
          "edges": [{"from": "in", "to": "job"}, {"from": "job", "to": "after", "type": "ON_SUCCESS"},
            {"from": "job", "to": "handler", "type": "ON_FAIL"}, {"from": "after", "to": "out"}]});
        let foreach = json!({"context": {"items": [1, 2, 3, 4], "tag": "t"}, "nodes": [
            {"id": "src", "type": "Input"},
            {"id": "each", "type": "Component", "componentId": "http://c/each", "data": {"v": "{{item}}", "i": "{{index}}"}},
            {"id": "side", "type": "Component", "componentId": "http://c/side", "wait_timeout_seconds": 1},
            {"id": "join", "type": "Output", "data": {"n": "{{each.count}}", "s": "{{side.tag}}"}}],
          "edges": [{"from": "src", "to": "each", "type": "FOREACH", "items": "{{items}}"},
            {"from": "src", "to": "side"}, {"from": "each", "to": "join"}, {"from": "side", "to": "join"}]});
        let polls = json!({"nodes": [
            {"id": "in", "type": "Input"},
            {"id": "job", "type": "Component", "componentId": "http://c/job"},
            {"id": "watch", "type": "Component", "componentId": "poll_task",
             "data": {"url": "https://status.test/w", "interval_seconds": 2, "done_when": "state === 'ok'"}},
            {"id": "out", "type": "Output"}],
          "edges": [{"from": "in", "to": "job"}, {"from": "in", "to": "watch"},
            {"from": "job", "to": "out"}, {"from": "watch", "to": "out"}]});
        vec![
            // Paused on a chain.
            build(chain.clone(), &["pending"], 1, |_, _| {}),
            // Paused mid-FOREACH: items paused and done, the join waiting.
            build(foreach.clone(), &["pending", "echo", "pending", "echo", "echo"], 2, |_, _| {}),
            // Yielded: calls due (FOREACH items to do), status running.
            build(foreach.clone(), &[], 1, |_, _| {}),
            // A wait timed out and took ON_FAIL; completed.
            build(chain.clone(), &["pending"], 1, |run, now| {
                let _ = run.expire(now + 10_000);
                run.begin_segment(None);
                while run.step(now + 10_001).iter().any(|e| e.as_call().is_some()) {}
            }),
            // Resumed item, then cancelled with waits open.
            build(foreach.clone(), &["pending", "pending", "echo", "echo", "pending"], 2, |run, now| {
                let _ = run.resume("n1-0", json!({}), None, now);
                let _ = run.cancel(now);
            }),
            // Completed.
            build(chain, &[], 4, |_, _| {}),
            V1_CHAIN.to_string(),
            V1_FOREACH.to_string(),
            // Waits that poll: a `poll_task` node, and a status URL beside a callback.
            build(polls, &["polled"], 1, |_, _| {}),
        ]
    })
}

/// A small JSON value to put somewhere.
#[derive(Debug, Arbitrary)]
enum Small {
    Null,
    Bool(bool),
    Int(i64),
    Max,
    Float(f64),
    Str(String),
    /// A string the record uses as a name: a state, a wait id, a node id.
    Name(Name),
    EmptyArray,
    EmptyObject,
    Array(Vec<u8>),
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Name {
    Idle, Waiting, Calling, Paused, Mapping, Done, Skipped, Pending, Delivered, Items, Todo,
    Running, Completed, Failed, Cancelled, N0, N1, N1Item0, N2, W1, In, Each, Job,
}

impl Name {
    fn as_str(self) -> &'static str {
        use Name::*;
        match self {
            Idle => "idle", Waiting => "waiting", Calling => "calling", Paused => "paused",
            Mapping => "mapping", Done => "done", Skipped => "skipped", Pending => "pending",
            Delivered => "delivered", Items => "items", Todo => "todo", Running => "running",
            Completed => "completed", Failed => "failed", Cancelled => "cancelled", N0 => "n0",
            N1 => "n1", N1Item0 => "n1-0", N2 => "n2", W1 => "w1", In => "in", Each => "each",
            Job => "job",
        }
    }
}

impl Small {
    fn value(self) -> Value {
        match self {
            Small::Null => Value::Null,
            Small::Bool(b) => json!(b),
            Small::Int(i) => json!(i),
            Small::Max => json!(u64::MAX),
            Small::Float(f) => json!(f), // non-finite becomes null
            Small::Str(s) => json!(s),
            Small::Name(n) => json!(n.as_str()),
            Small::EmptyArray => json!([]),
            Small::EmptyObject => json!({}),
            Small::Array(v) => json!(v),
        }
    }
}

/// Numbers the record keeps, at the top or in a wait or the status.
#[derive(Debug, Arbitrary)]
enum Field {
    Version, CreatedAt, UpdatedAt, Segments, TraceDropped, StatusSince, StatusFinishedAt,
    WaitSince(u8), WaitExpiresAt(u8), WaitItem(u8), MappingRemaining(u8),
}

/// A node state as written by either version.
#[derive(Debug, Arbitrary)]
enum State {
    Idle,
    Skipped,
    Done(Small),
    Calling,
    Paused(Name),
    /// Items: 0 todo, 1 paused on the named wait, 2 done (v2); v1 slots: done or null.
    Mapping(Vec<(u8, Name)>),
    /// Arrivals: 0 pending, 1 skipped, 2 delivered, 3 items.
    Waiting(Vec<u8>),
}

impl State {
    fn value(self, v1: bool) -> Value {
        let ctx = if v1 { json!({"k": 1}) } else { json!({"set": {"k": 1}, "unset": ["q"]}) };
        match self {
            State::Idle => json!("idle"),
            State::Skipped => json!("skipped"),
            State::Done(out) => json!({"done": {"output": out.value()}}),
            State::Calling => json!({"calling": {"ctx": ctx}}),
            State::Paused(w) => json!({"paused": {"ctx": ctx, "wait_id": w.as_str()}}),
            State::Mapping(items) if v1 => {
                let slot = |k: u8| if k % 2 == 0 { json!(null) } else { json!(k) };
                let slots: Vec<Value> = items.iter().map(|(k, _)| slot(*k)).collect();
                json!({"mapping": {"ctx": ctx, "slots": slots, "remaining": items.len()}})
            }
            State::Mapping(items) => {
                let items: Vec<Value> = items
                    .iter()
                    .map(|(k, w)| match k % 3 {
                        0 => json!({"todo": {"item": k}}),
                        1 => json!({"paused": {"wait_id": w.as_str()}}),
                        _ => json!({"done": {"output": {"k": k}}}),
                    })
                    .collect();
                json!({"mapping": {"ctx": ctx, "base": ctx, "iterator": "item", "items": items}})
            }
            State::Waiting(arrivals) => {
                let arrivals: Vec<Value> = arrivals
                    .iter()
                    .map(|a| match a % 4 {
                        0 => json!("pending"),
                        1 => json!("skipped"),
                        2 => json!({"delivered": {"ctx": ctx}}),
                        _ => json!({"items": {"ctx": ctx, "base": ctx, "iterator": "i", "items": [a]}}),
                    })
                    .collect();
                json!({"waiting": {"arrivals": arrivals}})
            }
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Op {
    DeleteNode(u8),
    DuplicateNode(u8),
    ReplaceNode(u8, State),
    /// The node's state name changed, its fields kept.
    RenameState(u8, Name),
    SetNumber(Field, Small),
    DropWaitKey(u8, u8),
    DropWait(u8),
    SetVersion(u8),
    /// Any value in the record, reached by child indices.
    Replace(Vec<u8>, Small),
    Delete(Vec<u8>),
}

fn nth_key(map: &Map<String, Value>, i: u8) -> Option<String> {
    (!map.is_empty()).then(|| map.keys().nth(i as usize % map.len()).cloned())?
}

/// The value at the end of `path`, each step choosing a child by index.
fn walk<'a>(root: &'a mut Value, path: &[u8]) -> &'a mut Value {
    // The route is found on a shared borrow, then followed on the mutable one.
    let mut route: Vec<Result<String, usize>> = Vec::new();
    let mut at: &Value = root;
    for &step in path {
        at = match at {
            Value::Object(m) if !m.is_empty() => {
                let k = nth_key(m, step).unwrap_or_default();
                route.push(Ok(k.clone()));
                &m[&k]
            }
            Value::Array(a) if !a.is_empty() => {
                let i = step as usize % a.len();
                route.push(Err(i));
                &a[i]
            }
            _ => break,
        };
    }
    route.into_iter().fold(root, |cur, step| match step {
        Ok(k) => &mut cur[k.as_str()],
        Err(i) => &mut cur[i],
    })
}

fn apply(root: &mut Value, op: Op) {
    let v1 = root.get("version") == Some(&json!(1));
    let Some(obj) = root.as_object_mut() else { return };
    let nodes = obj.get_mut("nodes").and_then(Value::as_array_mut);
    match op {
        Op::DeleteNode(i) => {
            if let Some(n) = nodes.filter(|n| !n.is_empty()) {
                n.remove(i as usize % n.len());
            }
        }
        Op::DuplicateNode(i) => {
            if let Some(n) = nodes.filter(|n| !n.is_empty()) {
                let i = i as usize % n.len();
                n.insert(i, n[i].clone());
            }
        }
        Op::ReplaceNode(i, state) => {
            if let Some(n) = nodes.filter(|n| !n.is_empty()) {
                let i = i as usize % n.len();
                n[i] = state.value(v1);
            }
        }
        Op::RenameState(i, name) => {
            if let Some(n) = nodes.filter(|n| !n.is_empty()) {
                let i = i as usize % n.len();
                n[i] = match n[i].take() {
                    Value::Object(m) if m.len() == 1 => {
                        let body = m.into_iter().next().map(|(_, b)| b).unwrap_or_default();
                        json!({ name.as_str(): body })
                    }
                    _ => json!(name.as_str()),
                };
            }
        }
        Op::SetNumber(field, value) => {
            if let Some((target, key)) = number_at(obj, field) {
                target.insert(key.into(), value.value());
            }
        }
        Op::DropWaitKey(i, k) => {
            let Some(waits) = obj.get_mut("waits").and_then(Value::as_object_mut) else { return };
            let Some(id) = nth_key(waits, i) else { return };
            if let Some(w) = waits.get_mut(&id).and_then(Value::as_object_mut) {
                if let Some(key) = nth_key(w, k) {
                    w.remove(&key);
                }
            }
        }
        Op::DropWait(i) => {
            let Some(waits) = obj.get_mut("waits").and_then(Value::as_object_mut) else { return };
            if let Some(id) = nth_key(waits, i) {
                waits.remove(&id);
            }
        }
        Op::SetVersion(v) => {
            obj.insert("version".into(), json!(if v < 200 { 1 } else { v as u64 % 4 }));
        }
        Op::Replace(path, value) => *walk(root, &path) = value.value(),
        Op::Delete(path) => {
            let Some((last, parent)) = path.split_last() else { return };
            match walk(root, parent) {
                Value::Object(m) => {
                    if let Some(k) = nth_key(m, *last) {
                        m.remove(&k);
                    }
                }
                Value::Array(a) if !a.is_empty() => {
                    a.remove(*last as usize % a.len());
                }
                _ => {}
            }
        }
    }
}

fn nth_wait(obj: &mut Map<String, Value>, i: u8) -> Option<&mut Map<String, Value>> {
    let waits = obj.get_mut("waits")?.as_object_mut()?;
    let k = nth_key(waits, i)?;
    waits.get_mut(&k)?.as_object_mut()
}

/// The status's fields: beside its `state` up to version 2, inside its one
/// key from version 3 (`{"paused": {"since": 5}}`).
fn status_fields(obj: &mut Map<String, Value>) -> Option<&mut Map<String, Value>> {
    let status = obj.get_mut("status")?.as_object_mut()?;
    if status.contains_key("state") {
        return Some(status);
    }
    status.values_mut().next()?.as_object_mut()
}

/// The object holding `field`, and its key.
type Slot<'a> = (&'a mut Map<String, Value>, &'static str);

fn number_at(obj: &mut Map<String, Value>, field: Field) -> Option<Slot<'_>> {
    Some(match field {
        Field::Version => (obj, "version"),
        Field::CreatedAt => (obj, "created_at"),
        Field::UpdatedAt => (obj, "updated_at"),
        Field::Segments => (obj, "segments"),
        Field::TraceDropped => (obj, "trace_dropped"),
        Field::StatusSince => (status_fields(obj)?, "since"),
        Field::StatusFinishedAt => (status_fields(obj)?, "finished_at"),
        Field::WaitSince(i) => (nth_wait(obj, i)?, "since"),
        Field::WaitExpiresAt(i) => (nth_wait(obj, i)?, "expires_at"),
        Field::WaitItem(i) => (nth_wait(obj, i)?, "item"),
        Field::MappingRemaining(i) => {
            let nodes = obj.get_mut("nodes")?.as_array_mut()?;
            let len = nodes.len().max(1);
            (nodes.get_mut(i as usize % len)?.get_mut("mapping")?.as_object_mut()?, "remaining")
        }
    })
}

/// What `decode` accepted must be writable, and drivable without a panic.
fn exercise(text: &str) {
    let mut run = match decode(text, &directory(), settings()) {
        Ok(run) => run,
        Err(EngineError::CorruptRecord(_)) => return,
        Err(e) => panic!("decode failed with {e:?}, not CorruptRecord"),
    };
    let stored = encode(&mut run.clone(), usize::MAX, run.record.updated_at);
    let again = decode(&stored, &Directory::default(), settings())
        .unwrap_or_else(|e| panic!("a record decode accepted does not read back: {e:?}\n{stored}"));
    assert_eq!(again.record, run.record, "a decoded record changed through encode and decode");
    // Over the size limit the trace is trimmed, or the run failed: still readable.
    let trimmed = encode(&mut run.clone(), stored.len() / 2, run.record.updated_at);
    if let Err(e) = decode(&trimmed, &Directory::default(), settings()) {
        panic!("a record trimmed to its limit does not read back: {e:?}\n{trimmed}");
    }

    let mut now = run.record.updated_at;
    for round in 0..MAX_ROUNDS {
        if run.status().is_finished() {
            break;
        }
        run.begin_segment(None);
        // Every step issues at least one call of the budget, or ends the segment.
        for _ in 0..=settings().max_calls_per_segment {
            now = now.saturating_add(1);
            let effects = run.step(now);
            let calls: Vec<_> = effects.iter().filter_map(Effect::as_call).cloned().collect();
            if calls.is_empty() {
                break;
            }
            for call in calls {
                run.complete_call(call.key, CallOutcome::Answered(Value::Object(call.input)), now);
            }
        }
        let waits: Vec<_> = run.record.waits.values().cloned().collect();
        for w in waits {
            let _ = run.resume(&w.wait_id, json!({"task_id": w.task_id}), None, now);
        }
        if round % 4 == 3 {
            now = now.saturating_add(1 << 40);
            let _ = run.expire(now);
        }
        if round == MAX_ROUNDS - 2 {
            let _ = run.cancel(now);
        }
    }
    // And what it became stores and loads too.
    let text = encode(&mut run, usize::MAX, now);
    if let Err(e) = decode(&text, &Directory::default(), settings()) {
        panic!("a driven run does not read back: {e:?}\n{text}");
    }
}

fuzz_target!(|data: &[u8]| {
    if data.first() == Some(&b'{') {
        return exercise(&String::from_utf8_lossy(data));
    }
    let mut u = Unstructured::new(data.get(1..).unwrap_or_default());
    let bases = bases();
    let base = &bases[*data.first().unwrap_or(&0) as usize % bases.len()];
    let mut root: Value = serde_json::from_str(base).expect("a base record is JSON");
    let Ok(ops) = Vec::<Op>::arbitrary(&mut u) else { return };
    for op in ops.into_iter().take(16) {
        apply(&mut root, op);
    }
    exercise(&root.to_string());
});
