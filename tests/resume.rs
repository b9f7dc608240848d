//! Pause → serialize → reload → resume, and every way a callback can be
//! repeated, late, or wrong.

mod support;

use arcrun::core::error::EngineError;
use arcrun::core::plan::Directory;
use arcrun::core::record::RunStatus;
use arcrun::core::run::Settings;
use arcrun::core::run::{Noop, Run};
use arcrun::core::stored::{decode, encode};
use serde_json::{json, Value};
use support::*;

/// in → a (sync) → slow (async) → b (sync) → slow2 (async) → out, with a failure path.
fn async_chain() -> Value {
    json!({
        "nodes": [
            {"id": "in", "type": "Input"},
            {"id": "a", "type": "Component", "componentId": "http://c/a", "data": {"step": "a"}},
            {"id": "slow", "type": "Component", "componentId": "http://c/async1", "data": {"q": "{{topic}}"}},
            {"id": "b", "type": "Component", "componentId": "comp_passthrough", "data": {"got": "{{slow.data.answer}}"}},
            {"id": "slow2", "type": "Component", "componentId": "http://c/async2"},
            {"id": "out", "type": "Output", "data": {"first": "{{slow.data.answer}}", "second": "{{slow2.data.answer}}"}},
            {"id": "failed", "type": "Output", "data": {"failed": true, "why": "{{slow.error}}"}}
        ],
        "edges": [
            {"from": "in", "to": "a", "type": "PIPE"},
            {"from": "a", "to": "slow", "type": "PIPE"},
            {"from": "slow", "to": "b", "type": "ON_SUCCESS"},
            {"from": "slow", "to": "failed", "type": "ON_FAIL"},
            {"from": "b", "to": "slow2", "type": "PIPE"},
            {"from": "slow2", "to": "out", "type": "PIPE"}
        ]
    })
}

fn open_wait(run: &Run) -> (String, String) {
    let w = run.record.waits.values().next().expect("an open wait");
    (w.wait_id.clone(), w.task_id.clone())
}

/// Drives the run through each pause by answering `answers` in turn, reloading
/// from JSON before every resume when `persist` is set.
fn run_through(persist: bool, answers: &[Value]) -> Run {
    let net = Network::echo_with_async();
    let clock = Clock::new();
    let mut run = run_graph(async_chain(), json!({"topic": "rust"}), &net, &clock);
    for answer in answers {
        if !matches!(run.status(), RunStatus::Paused { .. }) {
            break;
        }
        if persist {
            run = reload(&run);
        }
        clock.advance(1000);
        let (wait_id, task_id) = open_wait(&run);
        let mut body = answer.clone();
        body["task_id"] = json!(task_id);
        run.resume(&wait_id, body, None, clock.now())
            .unwrap()
            .unwrap();
        continue_run(&mut run, &net, &clock);
    }
    run
}

#[test]
fn paused_then_resumed_equals_an_uninterrupted_run() {
    let answers = [
        json!({"success": true, "data": {"answer": 41}}),
        json!({"success": true, "data": {"answer": 42}}),
    ];
    let persisted = run_through(true, &answers);
    let in_memory = run_through(false, &answers);
    assert_eq!(output(&persisted), output(&in_memory));
    assert_eq!(trace(&persisted), trace(&in_memory));
    assert_eq!(output(&persisted)["first"], json!(41));
    assert_eq!(output(&persisted)["second"], json!(42));
    assert_eq!(
        trace(&persisted),
        vec![
            "in:ok",
            "a:ok",
            "slow:paused",
            "slow:ok",
            "b:ok",
            "failed:skipped",
            "slow2:paused",
            "slow2:ok",
            "out:ok"
        ]
    );
}

#[test]
fn callback_with_success_false_takes_on_fail() {
    let run = run_through(
        true,
        &[json!({"success": false, "error": "daemon crashed"})],
    );
    assert_eq!(output(&run)["failed"], json!(true));
    assert_eq!(output(&run)["why"], json!("daemon crashed"));
    assert!(
        trace(&run).contains(&"b:skipped".to_string()),
        "{:?}",
        trace(&run)
    );
}

#[test]
fn repeated_late_and_foreign_callbacks_change_nothing() {
    let net = Network::echo_with_async();
    let clock = Clock::new();
    let mut run = run_graph(async_chain(), json!({}), &net, &clock);
    let (wait_id, task_id) = open_wait(&run);

    // Wrong task id for this wait: an error, and nothing changes.
    let before = run.record.clone();
    let err = run
        .resume(
            &wait_id,
            json!({"task_id": "someone-else"}),
            None,
            clock.now(),
        )
        .unwrap_err();
    assert!(matches!(err, EngineError::TaskMismatch { .. }));
    assert_eq!(run.record, before);

    // Unknown wait.
    assert_eq!(
        run.resume("w999", json!({}), None, clock.now()).unwrap(),
        Err(Noop::UnknownWait)
    );

    // Expired.
    let expires = run.record.waits[&wait_id].expires_at;
    assert_eq!(
        run.resume(&wait_id, json!({"task_id": task_id}), None, expires)
            .unwrap(),
        Err(Noop::Expired)
    );
    assert_eq!(run.record, before);

    // The real callback resumes; the repeat is a noop and runs nothing.
    run.resume(
        &wait_id,
        json!({"task_id": task_id, "data": {"answer": 1}}),
        None,
        clock.now(),
    )
    .unwrap()
    .unwrap();
    continue_run(&mut run, &net, &clock);
    let hits = net.calls.borrow().len();
    let again = run
        .resume(&wait_id, json!({"task_id": task_id}), None, clock.now())
        .unwrap();
    assert_eq!(again, Err(Noop::AlreadyResumed));
    continue_run(&mut run, &net, &clock);
    assert_eq!(net.calls.borrow().len(), hits);
}

#[test]
fn terminal_runs_ignore_late_callbacks() {
    let run = run_through(
        true,
        &[
            json!({"data": {"answer": 1}}),
            json!({"data": {"answer": 2}}),
        ],
    );
    let mut run = reload(&run);
    assert!(matches!(run.status(), RunStatus::Completed { .. }));
    let before = run.record.clone();
    let resumed = run.record.closed.keys().last().unwrap().clone();
    assert_eq!(
        run.resume(&resumed, json!({}), None, 0).unwrap(),
        Err(Noop::AlreadyResumed)
    );
    assert_eq!(
        run.resume("w77", json!({}), None, 0).unwrap(),
        Err(Noop::RunFinished)
    );
    assert_eq!(run.record, before);
}

#[test]
fn parallel_branches_pause_and_resume_independently() {
    let net = Network::echo_with_async();
    let clock = Clock::new();
    let graph = json!({
        "nodes": [
            {"id": "in", "type": "Input"},
            {"id": "left", "type": "Component", "componentId": "http://c/async-l"},
            {"id": "right", "type": "Component", "componentId": "http://c/async-r"},
            {"id": "join", "type": "Output", "data": {"l": "{{left.data.v}}", "r": "{{right.data.v}}"}}
        ],
        "edges": [
            {"from": "in", "to": "left", "type": "PIPE"}, {"from": "in", "to": "right", "type": "PIPE"},
            {"from": "left", "to": "join", "type": "PIPE"}, {"from": "right", "to": "join", "type": "PIPE"}
        ]
    });
    let mut run = run_graph(graph, json!({}), &net, &clock);
    assert_eq!(run.record.waits.len(), 2);
    let waits: Vec<_> = run.record.waits.values().cloned().collect();
    run = reload(&run);
    run.resume(
        &waits[1].wait_id,
        json!({"data": {"v": "R"}}),
        None,
        clock.now(),
    )
    .unwrap()
    .unwrap();
    continue_run(&mut run, &net, &clock);
    assert!(matches!(run.status(), RunStatus::Paused { .. }));
    run = reload(&run);
    run.resume(
        &waits[0].wait_id,
        json!({"data": {"v": "L"}}),
        None,
        clock.now(),
    )
    .unwrap()
    .unwrap();
    continue_run(&mut run, &net, &clock);
    assert_eq!(output(&run)["l"], json!("L"));
    assert_eq!(output(&run)["r"], json!("R"));
}

#[test]
fn foreach_items_pause_independently() {
    let net = Network::echo_with_async();
    let clock = Clock::new();
    let graph = json!({
        "nodes": [
            {"id": "list", "type": "Input"},
            {"id": "each", "type": "Component", "componentId": "http://c/async-each"},
            {"id": "out", "type": "Output"}
        ],
        "edges": [
            {"from": "list", "to": "each", "type": "FOREACH"},
            {"from": "each", "to": "out", "type": "PIPE"}
        ]
    });
    let mut run = run_graph(graph, json!({"items": ["a", "b", "c"]}), &net, &clock);
    assert_eq!(run.record.waits.len(), 3);
    let waits: Vec<_> = run.record.waits.values().cloned().collect();
    for w in waits.iter().rev() {
        run = reload(&run);
        let item = w.item.unwrap();
        run.resume(&w.wait_id, json!({"data": {"n": item}}), None, clock.now())
            .unwrap()
            .unwrap();
        continue_run(&mut run, &net, &clock);
    }
    let results = output(&run)["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 3);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["data"]["n"], json!(i), "results stay in item order");
    }
}

#[test]
fn oversized_records_drop_old_trace_first_then_fail_visibly() {
    let net = Network::echo_with_async();
    let clock = Clock::new();
    let mut run = run_graph(chain(50, "comp_passthrough"), json!({"v": 1}), &net, &clock);
    let full = stored_len(&run);
    let trace_len = run.record.trace.len();
    let text = encode(&mut run, full - 500, clock.now());
    assert!(text.len() <= full - 500);
    assert!(run.record.trace_dropped > 0);
    assert_eq!(run.record.trace.len() + run.record.trace_dropped, trace_len);
    assert!(matches!(run.status(), RunStatus::Completed { .. }));

    let text = encode(&mut run, 500, clock.now());
    let RunStatus::Failed { error, .. } = run.status() else {
        panic!("expected a visible failure");
    };
    assert_eq!(error.code, "record_too_large");
    let reread = decode(&text, &Directory::default(), Settings::default()).unwrap();
    assert_eq!(reread.record.status, run.record.status);
}

#[test]
fn a_paused_run_is_stored_at_about_its_context_plus_outputs() {
    let net = Network::new(|call| {
        if call.url.ends_with("/async") {
            return arcrun::core::run::CallOutcome::Answered(
                json!({"pending": true, "task_id": "t"}),
            );
        }
        // Each step adds a sizable field of its own.
        arcrun::core::run::CallOutcome::Answered(
            json!({format!("from_{}", call.node_id): "o".repeat(2000)}),
        )
    });
    let clock = Clock::new();
    let mut nodes = vec![json!({"id": "in", "type": "Input"})];
    let mut edges = Vec::new();
    for i in 0..10 {
        nodes.push(
            json!({"id": format!("s{i}"), "type": "Component", "componentId": "http://c/step"}),
        );
        edges.push(json!({"from": if i == 0 { "in".to_string() } else { format!("s{}", i - 1) }, "to": format!("s{i}")}));
    }
    nodes.push(json!({"id": "wait", "type": "Component", "componentId": "http://c/async"}));
    edges.push(json!({"from": "s9", "to": "wait"}));
    // An edge out of the paused node, so that it must keep its context.
    nodes.push(json!({"id": "out", "type": "Output"}));
    edges.push(json!({"from": "wait", "to": "out"}));
    let run = run_graph(
        json!({"nodes": nodes, "edges": edges}),
        json!({"doc": "d".repeat(5000)}),
        &net,
        &clock,
    );
    assert!(matches!(run.status(), RunStatus::Paused { .. }));
    let stored = stored_len(&run);
    // Without deltas the paused node would store its whole context again.
    let paused_ctx = run
        .record
        .nodes
        .iter()
        .find_map(|n| match n {
            arcrun::core::record::NodeState::Paused { ctx, .. } => {
                Some(serde_json::to_string(ctx).unwrap().len())
            }
            _ => None,
        })
        .unwrap();
    let plain = stored + paused_ctx;
    let payload = serde_json::to_string(&run.record.context).unwrap().len()
        + run
            .record
            .nodes
            .iter()
            .map(|n| match n {
                arcrun::core::record::NodeState::Done { output } => {
                    serde_json::to_string(output).unwrap().len()
                }
                _ => 0,
            })
            .sum::<usize>();
    let ratio = stored as f64 / payload as f64;
    assert!(
        ratio <= 1.2,
        "stored {stored} B for {payload} B of context and outputs ({ratio:.2}×)"
    );
    assert!(
        stored * 10 < plain * 7,
        "compaction saves the paused node's copy of the context ({stored} vs {plain})"
    );
}
