//! Running many runs and many items: FOREACH `max_concurrency` and failure
//! tolerance, retry from failure, and the summary a listing shows — through
//! the segment logic the gate runs, reloading from the store between segments.

mod support;

use std::cell::Cell;
use std::rc::Rc;

use arcrun::core::error::EngineError;
use arcrun::core::record::{ItemState, NodeState, RunStatus};
use arcrun::core::run::CallOutcome;
use arcrun::core::segment::Command;
use serde_json::{json, Value};
use support::gate::{Gate, Start, OWNER};
use support::Network;

fn foreach_graph(count: usize, edge_extra: Value, component: &str) -> Value {
    let mut edge = json!({"from": "in", "to": "each", "type": "FOREACH", "items": "things"});
    edge.as_object_mut()
        .unwrap()
        .extend(edge_extra.as_object().unwrap().clone());
    let _ = count;
    json!({
        "nodes": [
            {"id": "in", "type": "Input"},
            {"id": "each", "type": "Component", "componentId": component},
            {"id": "out", "type": "Output"}
        ],
        "edges": [edge, {"from": "each", "to": "out", "type": "PIPE"}]
    })
}

fn things(count: usize) -> Value {
    json!({ "things": (0..count).collect::<Vec<_>>() })
}

fn open_items(gate: &Gate) -> usize {
    gate.stored().record.waits.len()
}

fn retry(gate: &Gate) -> Result<(), EngineError> {
    gate.send(Command::Retry {
        run_id: "run-1".into(),
        owner: Some(OWNER.into()),
    })
    .map(|_| ())
}

#[test]
fn max_concurrency_keeps_at_most_n_items_open_across_segments() {
    let gate = Gate::new(Network::echo_with_async());
    gate.start(
        foreach_graph(20, json!({"max_concurrency": 3}), "http://c/async"),
        things(20),
    );
    assert_eq!(gate.net.calls.borrow().len(), 3, "only three items start");
    assert_eq!(open_items(&gate), 3);
    let mut finished = 0;
    while let Some(wait) = gate.stored().record.waits.values().next().cloned() {
        // Every segment starts from the stored record, as after an eviction.
        gate.forget();
        gate.callback(
            &wait.wait_id,
            json!({"task_id": wait.task_id, "success": true, "data": {"i": wait.item}}),
        )
        .unwrap();
        finished += 1;
        let open = open_items(&gate);
        assert!(open <= 3, "{open} items open after {finished} callbacks");
        assert_eq!(gate.net.calls.borrow().len(), (3 + finished).min(20));
    }
    assert_eq!(finished, 20);
    let run = gate.stored();
    let RunStatus::Completed { output, .. } = &run.record.status else {
        panic!("{:?}", run.record.status)
    };
    assert_eq!(output["count"], json!(20));
    assert_eq!(output["failed"], json!(0));
    assert_eq!(output["results"][7]["data"]["i"], json!(7));
}

#[test]
fn max_concurrency_also_bounds_items_that_answer_at_once() {
    let gate = Gate::new(Network::echo_with_async());
    gate.start(
        foreach_graph(10, json!({"max_concurrency": 2}), "http://c/echo"),
        things(10),
    );
    // Each call answers at once; the next starts as one finishes.
    let calls = gate.net.calls.borrow();
    assert_eq!(calls.len(), 10);
    let items: Vec<usize> = calls.iter().map(|c| c.key.item.unwrap()).collect();
    assert_eq!(items, (0..10).collect::<Vec<_>>(), "items start in order");
    drop(calls);
    assert!(matches!(
        gate.stored().record.status,
        RunStatus::Completed { .. }
    ));
}

/// Items whose value is in `bad` fail.
fn failing(bad: &'static [u64]) -> Network {
    Network::new(move |call| {
        let v = call.input.get("item").and_then(Value::as_u64).unwrap_or(0);
        if bad.contains(&v) {
            CallOutcome::Answered(json!({"success": false, "error": format!("item {v} broke")}))
        } else {
            CallOutcome::Answered(json!({"ok": v}))
        }
    })
}

#[test]
fn tolerated_failures_at_below_and_above_the_limit() {
    let cases: [(Value, &'static [u64], bool); 7] = [
        (json!({}), &[], true),
        (json!({}), &[3], false),
        (json!({"tolerated_failures": 2}), &[3, 5], true),
        (json!({"tolerated_failures": 2}), &[1, 3, 5], false),
        (json!({"tolerated_failure_percent": 20}), &[3, 5], true),
        (json!({"tolerated_failure_percent": 20}), &[1, 3, 5], false),
        (
            json!({"tolerated_failures": 5, "tolerated_failure_percent": 10}),
            &[3, 5],
            false,
        ),
    ];
    for (extra, bad, succeeds) in cases {
        let gate = Gate::new(failing(bad));
        gate.start(foreach_graph(10, extra.clone(), "http://c/x"), things(10));
        let run = gate.stored();
        match (&run.record.status, succeeds) {
            (RunStatus::Completed { output, .. }, true) => {
                assert_eq!(output["failed"], json!(bad.len()), "{extra} {bad:?}");
                assert_eq!(output["count"], json!(10));
                for &b in bad {
                    assert_eq!(output["results"][b as usize]["success"], json!(false));
                }
            }
            (RunStatus::Failed { error, .. }, false) => {
                assert_eq!(error.node_id.as_deref(), Some("each"), "{extra} {bad:?}");
                assert!(error.message.contains(&format!("{} of 10", bad.len())));
            }
            (status, _) => panic!("{extra} {bad:?}: {status:?}"),
        }
    }
}

#[test]
fn foreach_options_are_validated() {
    let gate = Gate::new(Network::echo_with_async());
    for (extra, field) in [
        (json!({"max_concurrency": 0}), "max_concurrency"),
        (json!({"tolerated_failures": -1}), "tolerated_failures"),
        (
            json!({"tolerated_failure_percent": 101}),
            "tolerated_failure_percent",
        ),
    ] {
        let result = gate.start_with(foreach_graph(1, extra, "http://c/x"), Start::default());
        let Err(EngineError::InvalidGraph(problems)) = result else {
            panic!("{field}: {result:?}")
        };
        assert!(
            problems.iter().any(|p| p.at.ends_with(field)),
            "{problems:?}"
        );
    }
    let pipe_with_limit = json!({
        "nodes": [{"id": "a", "type": "Input"}, {"id": "b", "type": "Output"}],
        "edges": [{"from": "a", "to": "b", "max_concurrency": 2}]
    });
    let result = gate.start_with(pipe_with_limit, Start::default());
    assert!(matches!(result, Err(EngineError::InvalidGraph(_))));
}

#[test]
fn retry_runs_only_the_failed_node_and_keeps_completed_outputs() {
    let attempts = Rc::new(Cell::new(0));
    let seen = Rc::clone(&attempts);
    let net = Network::new(move |call| {
        if call.url == "http://c/flaky" {
            seen.set(seen.get() + 1);
            if seen.get() == 1 {
                return CallOutcome::Answered(json!({"success": false, "error": "down"}));
            }
            return CallOutcome::Answered(json!({"flaky": "fine"}));
        }
        CallOutcome::Answered(json!({"first": "done"}))
    });
    let gate = Gate::new(net);
    let graph = json!({
        "nodes": [
            {"id": "in", "type": "Input"},
            {"id": "first", "type": "Component", "componentId": "http://c/first"},
            {"id": "flaky", "type": "Component", "componentId": "http://c/flaky"},
            {"id": "out", "type": "Output", "data": {"a": "{{first.first}}", "b": "{{flaky.flaky}}"}}
        ],
        "edges": [
            {"from": "in", "to": "first"},
            {"from": "first", "to": "flaky"},
            {"from": "flaky", "to": "out"}
        ]
    });
    gate.start(graph, json!({}));
    let failed = gate.stored();
    assert!(matches!(failed.record.status, RunStatus::Failed { .. }));
    assert!(matches!(failed.record.nodes[2], NodeState::Failed { .. }));
    gate.forget();
    retry(&gate).unwrap();
    let run = gate.stored();
    let RunStatus::Completed { output, .. } = &run.record.status else {
        panic!("{:?}", run.record.status)
    };
    assert_eq!(output["a"], json!("done"));
    assert_eq!(output["b"], json!("fine"));
    assert_eq!(
        gate.net.hits("http://c/first"),
        1,
        "completed nodes are not called again"
    );
    assert_eq!(gate.net.hits("http://c/flaky"), 2);
    assert_eq!(run.record.attempt, 1);
    let flaky: Vec<(u32, String)> = run
        .record
        .trace
        .iter()
        .filter(|t| t.node_id == "flaky")
        .map(|t| (t.attempt, format!("{:?}", t.status)))
        .collect();
    assert_eq!(flaky, vec![(0, "Failed".into()), (1, "Succeeded".into())]);
    // A completed run is not retried.
    assert!(matches!(
        retry(&gate),
        Err(EngineError::NotRetryable {
            status: "completed",
            ..
        })
    ));
}

#[test]
fn retry_runs_only_the_failed_foreach_items() {
    let broken = Rc::new(Cell::new(true));
    let state = Rc::clone(&broken);
    let net = Network::new(move |call| {
        let v = call.input.get("item").and_then(Value::as_u64).unwrap_or(0);
        if state.get() && (v == 2 || v == 4) {
            return CallOutcome::Answered(json!({"success": false, "error": "not yet"}));
        }
        CallOutcome::Answered(json!({"ok": v}))
    });
    let gate = Gate::new(net);
    gate.start(foreach_graph(6, json!({}), "http://c/x"), things(6));
    let failed = gate.stored();
    let NodeState::Mapping(m) = &failed.record.nodes[1] else {
        panic!("the failed mapping is kept: {:?}", failed.record.nodes[1])
    };
    assert!(matches!(m.items[0], ItemState::Done(_)));
    assert_eq!(gate.net.calls.borrow().len(), 6);
    broken.set(false);
    gate.forget();
    retry(&gate).unwrap();
    let calls: Vec<usize> = gate.net.calls.borrow()[6..]
        .iter()
        .map(|c| c.key.item.unwrap())
        .collect();
    assert_eq!(calls, vec![2, 4], "only the failed items are called again");
    let retried = &gate.net.calls.borrow()[6];
    assert_eq!(
        retried.wait_id, "n1r1-2",
        "a fresh wait id for the new attempt"
    );
    let run = gate.stored();
    let RunStatus::Completed { output, .. } = &run.record.status else {
        panic!("{:?}", run.record.status)
    };
    assert_eq!(output["failed"], json!(0));
    assert_eq!(output["results"][4]["ok"], json!(4));
    assert_eq!(output["results"][5]["ok"], json!(5));
}

#[test]
fn a_callback_for_the_failed_attempt_cannot_resume_the_retry() {
    // Two branches: one pauses, the other fails the run.
    let net = Network::new(|call| {
        if call.url == "http://c/async" {
            return CallOutcome::Answered(json!({"pending": true, "task_id": "t1"}));
        }
        CallOutcome::Answered(json!({"success": false, "error": "boom"}))
    });
    let gate = Gate::new(net);
    let graph = json!({
        "nodes": [
            {"id": "in", "type": "Input"},
            {"id": "slow", "type": "Component", "componentId": "http://c/async"},
            {"id": "bad", "type": "Component", "componentId": "http://c/bad"},
            {"id": "out", "type": "Output"}
        ],
        "edges": [
            {"from": "in", "to": "slow"},
            {"from": "in", "to": "bad"},
            {"from": "slow", "to": "out"},
            {"from": "bad", "to": "out"}
        ]
    });
    gate.start(graph, json!({}));
    let run = gate.stored();
    assert!(
        matches!(run.record.status, RunStatus::Failed { .. }),
        "{:?}",
        run.record.status
    );
    assert!(run.record.waits.is_empty());
    gate.forget();
    retry(&gate).unwrap();
    let run = gate.stored();
    assert!(
        matches!(run.record.status, RunStatus::Failed { .. }),
        "bad fails again"
    );
    assert_eq!(run.record.attempt, 1);
    // The slow branch was called again under a new wait id; the old one is gone.
    let slow_waits: Vec<String> = gate
        .net
        .calls
        .borrow()
        .iter()
        .filter(|c| c.url == "http://c/async")
        .map(|c| c.wait_id.clone())
        .collect();
    assert_eq!(slow_waits, vec!["n1".to_string(), "n1r1".to_string()]);
    let stale = gate
        .callback("n1", json!({"task_id": "t1", "success": true}))
        .unwrap();
    assert!(
        format!("{:?}", stale.reply).contains("Noop"),
        "{:?}",
        stale.reply
    );
}

#[test]
fn every_save_carries_the_listing_summary() {
    let gate = Gate::new(Network::echo_with_async());
    gate.start(
        foreach_graph(4, json!({"max_concurrency": 2}), "http://c/async"),
        things(4),
    );
    let summary = gate.store.summaries.borrow()["run-1"].clone();
    assert_eq!(summary.status, "paused");
    assert_eq!(summary.open_waits, 2);
    assert_eq!(gate.saves(), 1, "the summary costs no write of its own");
    let cancel = gate.send(Command::Cancel {
        run_id: "run-1".into(),
        owner: Some(OWNER.into()),
    });
    assert!(cancel.is_ok());
    let summary = gate.store.summaries.borrow()["run-1"].clone();
    assert_eq!(summary.status, "cancelled");
    assert_eq!(summary.open_waits, 0);
}

#[test]
fn outputs_outgrowing_the_run_fail_it_with_run_too_large_and_keep_the_trace() {
    use arcrun::core::plan::Directory;
    use arcrun::core::run::Settings;
    let settings = Settings {
        max_run_bytes: 20_000,
        ..Settings::default()
    };
    let gate = Gate::with(Network::echo_with_async(), settings, Directory::default());
    let mut nodes = vec![json!({"id": "in", "type": "Input"})];
    let mut edges = Vec::new();
    // Each node adds 300 bytes of its own to what it passes on (the pad it
    // repeats is shared, not counted again).
    for i in 0..100 {
        nodes.push(json!({
            "id": format!("p{i}"), "type": "Component", "componentId": "comp_passthrough",
            "data": {format!("k{i}"): "{{pad}}"}
        }));
        let from = if i == 0 {
            "in".to_string()
        } else {
            format!("p{}", i - 1)
        };
        edges.push(json!({"from": from, "to": format!("p{i}")}));
    }
    gate.start(
        json!({"nodes": nodes, "edges": edges}),
        json!({"pad": "x".repeat(300)}),
    );
    let run = gate.stored();
    let RunStatus::Failed { error, .. } = &run.record.status else {
        panic!("{:?}", run.record.status)
    };
    assert_eq!(error.code, "run_too_large");
    assert!(!run.record.trace.is_empty(), "the trace is kept");
    assert!(
        run.record.nodes.iter().all(|n| *n == NodeState::Idle),
        "outputs released"
    );
    assert!(matches!(
        retry(&gate),
        Err(EngineError::NotRetryable { .. })
    ));
}

#[test]
fn one_callback_too_large_for_the_run_fails_its_node_not_the_run_for_good() {
    use arcrun::core::plan::Directory;
    use arcrun::core::run::Settings;
    let settings = Settings {
        max_run_bytes: 40_000,
        ..Settings::default()
    };
    let gate = Gate::with(Network::echo_with_async(), settings, Directory::default());
    gate.start(
        json!({
            "nodes": [
                {"id": "slow", "type": "Component", "componentId": "http://c/async"},
                {"id": "after", "type": "Component", "componentId": "http://c/after"}
            ],
            "edges": [{"from": "slow", "to": "after", "type": "ON_SUCCESS"}]
        }),
        json!({}),
    );
    // A daemon sends a result of 50 KB: more than a quarter of what the run
    // may hold, and more than all of it.
    let huge = json!({"task_id": "t-slow", "success": true, "data": {"blob": "x".repeat(50_000)}});
    gate.callback("n0", huge).expect("answered");
    let run = gate.stored();
    let RunStatus::Failed { error, .. } = &run.record.status else {
        panic!("{:?}", run.record.status)
    };
    assert_eq!(error.code, "node_failed");
    assert_eq!(error.node_id.as_deref(), Some("slow"));
    assert!(
        error
            .message
            .starts_with("the result of node 'slow' (sent with its callback) is 50")
            && error
                .message
                .ends_with("would pass 40000, the most one run may hold and store"),
        "{}",
        error.message
    );
    assert_eq!(gate.net.hits("http://c/after"), 0);
    // Not a dead end: a retry calls the component again, and a result that
    // fits completes the run.
    retry(&gate).expect("retryable");
    let again = gate.stored();
    assert!(
        matches!(again.record.status, RunStatus::Paused { .. }),
        "{:?}",
        again.record.status
    );
    let wait = again
        .record
        .waits
        .keys()
        .next()
        .cloned()
        .expect("a new wait");
    gate.callback(
        &wait,
        json!({"task_id": "t-slow", "success": true, "data": {"ok": 1}}),
    )
    .expect("answered");
    assert!(matches!(
        gate.stored().record.status,
        RunStatus::Completed { .. }
    ));
    assert_eq!(gate.net.hits("http://c/after"), 1);
}
