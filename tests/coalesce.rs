//! Writes gathered across segments (issue 13): the gate applies requests as
//! they come and writes the record at most once a second, keeping what it
//! applied meanwhile in its own storage. These tests drive the segment logic
//! the gate runs, with the write (`flush`) separate, and check what the
//! gate relies on: one write covers many segments; applying the kept
//! requests again to the older record rebuilds the same run; applying them
//! again after the write changes nothing; a kept callback is judged by when
//! it arrived; a task id shared by open waits is marked so in the index.

mod support;

use arcrun::core::record::RunStatus;
use arcrun::core::segment::{Clock, Command, Reply, TaskIndex};
use arcrun::core::stored::encode;
use serde_json::{json, Value};
use support::gate::{Gate, T0};
use support::Network;

fn foreach(count: usize) -> (Value, Value) {
    let graph = json!({
        "nodes": [
            {"id": "in", "type": "Input"},
            {"id": "each", "type": "Component", "componentId": "http://c/async"},
            {"id": "out", "type": "Output"}
        ],
        "edges": [
            {"from": "in", "to": "each", "type": "FOREACH", "items": "things"},
            {"from": "each", "to": "out", "type": "PIPE"}
        ]
    });
    (graph, json!({ "things": (0..count).collect::<Vec<_>>() }))
}

/// A callback, and when the gate received it if that was before its turn.
fn callback(wait_id: &str, task_id: &str, at: Option<u64>) -> (Command, Option<u64>) {
    let command = Command::Callback {
        run_id: "run-1".into(),
        wait_id: wait_id.into(),
        body: json!({"task_id": task_id, "success": true, "data": {"item": wait_id}}),
        base_url: "https://engine.test".into(),
        token_expires_at: None,
    };
    (command, at)
}

/// The open waits as (wait id, task id), in order.
fn waits(gate: &Gate) -> Vec<(String, String)> {
    gate.kept()
        .record
        .waits
        .values()
        .map(|w| (w.wait_id.clone(), w.task_id.clone()))
        .collect()
}

fn text(gate: &Gate) -> String {
    encode(&mut gate.kept(), 24 << 20, T0)
}

#[test]
fn one_write_covers_many_applied_callbacks() {
    let gate = Gate::new(Network::echo_with_async());
    let (graph, context) = foreach(5);
    gate.start(graph, context);
    assert_eq!(gate.saves(), 1);
    let open = waits(&gate);
    for (wait_id, task_id) in &open[..4] {
        gate.clock.advance(50);
        let segment = gate
            .send_arrived_pair(callback(wait_id, task_id, None))
            .unwrap();
        assert!(segment.dirty, "a resumed wait changes the run");
        let Reply::Outcome { body, .. } = segment.reply else {
            panic!("resumed");
        };
        assert_eq!(body["resumed"], json!(true));
        assert_eq!(body["status"], json!("paused"));
    }
    // Nothing written yet: the store still has all five open.
    assert_eq!(gate.saves(), 1);
    assert_eq!(gate.stored().record.waits.len(), 5);
    gate.write(T0).unwrap();
    assert_eq!(gate.saves(), 2, "four callbacks, one write");
    let stored = gate.stored();
    assert_eq!(stored.record.waits.len(), 1);
    assert_eq!(stored.record.closed.len(), 4);
}

#[test]
fn kept_requests_applied_again_to_the_older_record_rebuild_the_same_run() {
    let gate = Gate::new(Network::echo_with_async());
    let (graph, context) = foreach(4);
    gate.start(graph, context);
    let open = waits(&gate);
    let mut kept = Vec::new();
    for (wait_id, task_id) in &open {
        gate.clock.advance(100);
        let at = Clock::now(&gate.clock);
        kept.push((at, callback(wait_id, task_id, Some(at))));
        let (command, at) = kept.last().unwrap().1.clone();
        gate.send_arrived(command, at).unwrap();
    }
    let ahead = text(&gate);
    assert!(matches!(
        gate.kept().record.status,
        RunStatus::Completed { .. }
    ));
    // The object dies before its write: its successor has the older record
    // and the kept requests, and applies them at the times they arrived.
    gate.forget();
    let now = Clock::now(&gate.clock);
    for (at, (command, arrived)) in &kept {
        gate.clock.set(*at);
        gate.send_arrived(command.clone(), *arrived).unwrap();
    }
    gate.clock.set(now);
    assert_eq!(text(&gate), ahead, "the same run, byte for byte");
    gate.write(T0).unwrap();
    // Kept requests the write covered but that were not forgotten (the
    // delete failed) are applied again as no-ops.
    for (_, (command, arrived)) in &kept {
        let segment = gate.send_arrived(command.clone(), *arrived).unwrap();
        assert!(!segment.dirty);
        assert!(matches!(segment.reply, Reply::Noop(_)));
    }
    assert_eq!(text(&gate), ahead);
}

#[test]
fn a_kept_callback_is_judged_by_when_it_arrived() {
    let gate = Gate::new(Network::echo_with_async());
    let (graph, context) = foreach(2);
    gate.start(graph, context);
    let open = waits(&gate);
    let deadline = gate.kept().record.waits[&open[0].0].expires_at;
    // It arrived a second before the deadline; its turn came after it.
    gate.clock.set(deadline + 5_000);
    let segment = gate
        .send_arrived_pair(callback(&open[0].0, &open[0].1, Some(deadline - 1_000)))
        .unwrap();
    let Reply::Outcome { body, .. } = segment.reply else {
        panic!("applied, not expired: {:?}", segment.reply);
    };
    assert_eq!(body["resumed"], json!(true));
    // The other wait's deadline passed too; it is taken by the alarm, not
    // by a callback that came before it.
    assert_eq!(gate.kept().record.waits.len(), 1);
    // Without an arrival time, the same callback now would be too late.
    let late = gate
        .send_arrived_pair(callback(&open[1].0, &open[1].1, None))
        .unwrap();
    assert!(matches!(late.reply, Reply::Noop(_)), "{:?}", late.reply);
}

#[test]
fn the_callback_answer_does_not_grow_with_the_run() {
    let sizes: Vec<usize> = [3, 300]
        .iter()
        .map(|&count| {
            let gate = Gate::new(Network::echo_with_async());
            let (graph, context) = foreach(count);
            gate.start(graph, context);
            // Every item called (a segment's calls are budgeted).
            while gate.kept().record.status == RunStatus::Running {
                gate.wake();
            }
            assert_eq!(waits(&gate).len(), count);
            let (wait_id, task_id) = waits(&gate)[0].clone();
            gate.clock.advance(10);
            let segment = gate.send(callback(&wait_id, &task_id, None).0).unwrap();
            let Reply::Outcome { body, .. } = segment.reply else {
                panic!("resumed");
            };
            let keys: Vec<&str> = body
                .as_object()
                .unwrap()
                .keys()
                .map(|k| k.as_str())
                .collect();
            // Still paused on the other items, not paused again: its own task.
            assert_eq!(
                keys,
                [
                    "duration_ms",
                    "resumed",
                    "run_id",
                    "status",
                    "success",
                    "task_id"
                ]
            );
            assert_eq!(body["task_id"], json!(task_id));
            assert_eq!(body["status"], json!("paused"));
            body.to_string().len()
        })
        .collect();
    assert!(sizes[1] <= sizes[0] + 8, "{sizes:?}");
}

#[test]
fn a_task_id_held_by_open_waits_of_two_runs_is_marked_shared() {
    let component = "http://c/same";
    let net = Network::new(|_| {
        arcrun::core::run::CallOutcome::Answered(json!({"pending": true, "task_id": "same-id"}))
    });
    let mut gate = Gate::new(net);
    gate.config.index_tasks = true;
    let graph = json!({
        "nodes": [
            {"id": "in", "type": "Input"},
            {"id": "slow", "type": "Component", "componentId": component}
        ],
        "edges": [{"from": "in", "to": "slow", "type": "PIPE"}]
    });
    gate.start(graph.clone(), json!({}));
    let first = TaskIndex::Wait {
        run_id: "run-1".into(),
        wait_id: "n1".into(),
    };
    assert_eq!(gate.store.tasks.borrow()["same-id"], first);
    // The same wait indexed again (a later write) stays its own.
    gate.write(T0).unwrap();
    assert_eq!(gate.store.tasks.borrow()["same-id"], first);
    // Another run, stored with the same task id on a wait still open, had
    // the index entry first: the id is now shared.
    let copy = gate.store.record("run-1").unwrap();
    gate.store
        .put_record("run-0", copy.replace("\"run-1\"", "\"run-0\""));
    gate.store.tasks.borrow_mut().insert(
        "same-id".into(),
        TaskIndex::Wait {
            run_id: "run-0".into(),
            wait_id: "n1".into(),
        },
    );
    gate.write(T0).unwrap();
    assert_eq!(gate.store.tasks.borrow()["same-id"], TaskIndex::Shared);
    // A stale entry (that wait closed) is replaced by the wait that asks now.
    gate.store.records.borrow_mut().remove("run-0");
    gate.store.tasks.borrow_mut().insert(
        "same-id".into(),
        TaskIndex::Wait {
            run_id: "run-0".into(),
            wait_id: "n1".into(),
        },
    );
    gate.write(T0).unwrap();
    assert_eq!(gate.store.tasks.borrow()["same-id"], first);
}
