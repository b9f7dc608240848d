//! What workflows of the engine we descend from rely on: date variables,
//! `comp_uppercase` and `comp_counter`, edge aliases (Chinese words
//! included) and structural edges, a resumed task's id kept to its node, and
//! a sub-workflow's child run resuming its parent's wait.

mod support;

use arcrun::core::record::RunStatus;
use arcrun::core::run::CallOutcome;
use arcrun::core::segment::{Command, PARENT_SCHEME};
use serde_json::{json, Value};
use support::gate::{Gate, Start, OWNER, T0};
use support::Network;

fn completed(gate: &Gate) -> Value {
    match gate.stored().record.status {
        RunStatus::Completed { output, .. } => output,
        other => panic!("not completed: {other:?}"),
    }
}

#[test]
fn date_variables_are_set_at_start_and_kept_across_a_resume() {
    let gate = Gate::new(Network::echo_with_async());
    let graph = json!({
        "nodes": [
            {"id": "in", "type": "Input"},
            {"id": "slow", "type": "Component", "componentId": "http://c/async", "wait_timeout_seconds": 172800},
            {"id": "out", "type": "Output", "data": {"page": "report-{{_today}}", "week": "{{_iso_week}}"}}
        ],
        "edges": [{"from": "in", "to": "slow"}, {"from": "slow", "to": "out"}]
    });
    gate.start(graph, json!({"_year": "mine"}));
    let sent = gate.net.calls.borrow()[0].input.clone();
    // T0 is 2027-01-15T08:00:00Z.
    assert_eq!(sent["_today"], json!("2027-01-15"));
    assert_eq!(sent["_year"], json!("mine"), "the trigger's context wins");
    // A day later the callback arrives, and the run reads as it started.
    gate.clock.advance(24 * 3600 * 1000);
    gate.forget();
    gate.callback("n1", json!({"task_id": "t-slow", "success": true}))
        .unwrap();
    let out = completed(&gate);
    assert_eq!(out["page"], json!("report-2027-01-15"));
    assert_eq!(out["week"], json!("2027-W02"));
}

#[test]
fn builtins_uppercase_and_counter() {
    let gate = Gate::new(Network::echo_with_async());
    let graph = json!({
        "nodes": [
            {"id": "in", "type": "Input"},
            {"id": "up", "type": "Component", "componentId": "comp_uppercase"},
            {"id": "c1", "type": "Component", "componentId": "comp_counter"},
            {"id": "c2", "type": "Component", "componentId": "comp_counter"},
            {"id": "out", "type": "Output"}
        ],
        "edges": [
            {"from": "in", "to": "up"}, {"from": "up", "to": "c1"},
            {"from": "c1", "to": "c2"}, {"from": "c2", "to": "out"}
        ]
    });
    gate.start(graph, json!({"text": "hello"}));
    let out = completed(&gate);
    assert_eq!(out["text"], json!("HELLO"));
    assert_eq!(out["count"], json!(2));
}

#[test]
fn aliases_and_chinese_edge_words_route_like_their_edges() {
    for (ok_edge, fail_edge) in [
        ("SUCCESS", "FAIL"),
        ("完成後", "失敗時"),
        ("ON_CLICK", "ON_FAIL"),
        ("CLICK", "FAIL"),
    ] {
        let net = Network::new(|_| CallOutcome::Answered(json!({"success": false, "error": "x"})));
        let gate = Gate::new(net);
        let graph = json!({
            "nodes": [
                {"id": "c", "type": "Component", "componentId": "http://c/x"},
                {"id": "good", "type": "Output", "data": {"path": "good"}},
                {"id": "bad", "type": "Output", "data": {"path": "bad"}}
            ],
            "edges": [
                {"from": "c", "to": "good", "type": ok_edge},
                {"from": "c", "to": "bad", "type": fail_edge}
            ]
        });
        gate.start(graph, json!({}));
        assert_eq!(
            completed(&gate)["path"],
            json!("bad"),
            "{ok_edge}/{fail_edge}"
        );
    }
    for (yes, no) in [
        ("TRUE", "ELSE"),
        ("成立時", "否則"),
        ("為真時", "為假時"),
        ("TRUE", "不成立時"),
    ] {
        let gate = Gate::new(Network::echo_with_async());
        let graph = json!({
            "nodes": [
                {"id": "in", "type": "Input"},
                {"id": "check", "type": "Component", "componentId": "if_control", "data": {"condition": "n > 1"}},
                {"id": "yes", "type": "Output", "data": {"path": "yes"}},
                {"id": "no", "type": "Output", "data": {"path": "no"}}
            ],
            "edges": [
                {"from": "in", "to": "check", "type": "條件滿足時", "condition": "n > 0"},
                {"from": "check", "to": "yes", "type": yes},
                {"from": "check", "to": "no", "type": no}
            ]
        });
        gate.start(graph, json!({"n": 5}));
        assert_eq!(completed(&gate)["path"], json!("yes"), "{yes}/{no}");
    }
    // 對每個 is FOREACH.
    let gate = Gate::new(Network::echo_with_async());
    let graph = json!({
        "nodes": [
            {"id": "in", "type": "Input"},
            {"id": "each", "type": "Component", "componentId": "comp_passthrough"},
            {"id": "out", "type": "Output"}
        ],
        "edges": [{"from": "in", "to": "each", "type": "對每個", "items": "xs"}, {"from": "each", "to": "out"}]
    });
    gate.start(graph, json!({"xs": [1, 2, 3]}));
    assert_eq!(completed(&gate)["count"], json!(3));
}

#[test]
fn structural_edges_are_kept_but_never_executed() {
    let gate = Gate::new(Network::echo_with_async());
    let graph = json!({
        "nodes": [
            {"id": "in", "type": "Input"},
            {"id": "a", "type": "Component", "componentId": "comp_passthrough"},
            {"id": "out", "type": "Output"}
        ],
        "edges": [
            {"from": "in", "to": "a"},
            {"from": "a", "to": "out"},
            // A join would wait for these if they were executed; `out` →
            // `in` would even make a cycle; `style-1` is not a node at all.
            {"from": "out", "to": "in", "type": "CONTAINS"},
            {"from": "a", "to": "style-1", "type": "HAS_STYLE"},
            {"from": "a", "to": "out", "type": "HAS_BEHAVIOR"},
            {"from": "in", "to": "out", "type": "IS_A"},
            {"from": "a", "to": "out", "type": "CONTINUE"}
        ]
    });
    gate.start(graph, json!({"v": 1}));
    let run = gate.stored();
    assert!(matches!(run.record.status, RunStatus::Completed { .. }));
    assert_eq!(run.record.graph.edges.len(), 7, "kept with the graph");
    let ran: Vec<&str> = run
        .record
        .trace
        .iter()
        .map(|t| t.node_id.as_str())
        .collect();
    assert_eq!(ran, vec!["in", "a", "out"]);
}

#[test]
fn a_resumed_task_id_does_not_flow_to_the_next_component() {
    let gate = Gate::new(Network::echo_with_async());
    let graph = json!({
        "nodes": [
            {"id": "in", "type": "Input"},
            {"id": "first", "type": "Component", "componentId": "http://c/async-1"},
            {"id": "second", "type": "Component", "componentId": "http://c/async-2",
             "data": {"previous": "{{first.task_id}}"}},
            {"id": "out", "type": "Output"}
        ],
        "edges": [{"from": "in", "to": "first"}, {"from": "first", "to": "second"}, {"from": "second", "to": "out"}]
    });
    gate.start(graph, json!({}));
    gate.callback(
        "n1",
        json!({"task_id": "t-first", "success": true, "data": {"a": 1}}),
    )
    .unwrap();
    let calls = gate.net.calls.borrow();
    let second = &calls[1].input;
    assert_eq!(second.get("task_id"), None, "{second:?}");
    assert_eq!(
        second["previous"],
        json!("t-first"),
        "still readable by node id"
    );
    assert_eq!(second["data"], json!({"a": 1}));
}

/// How a sub-workflow's run starts: one level down, resuming `parent-run`'s wait `n2`.
fn child_of_parent() -> Start {
    Start {
        workflow: Some("child".into()),
        depth: 1,
        parent: Some(format!("{PARENT_SCHEME}parent-run/n2")),
        ..Start::default()
    }
}

#[test]
fn a_child_run_answers_its_parent_through_the_parent_link() {
    // The child: started as a sub-workflow would be, it pauses, then ends.
    let child = Gate::new(Network::echo_with_async());
    child
        .start_with(
            json!({
                "nodes": [
                    {"id": "in", "type": "Input"},
                    {"id": "slow", "type": "Component", "componentId": "http://c/async"},
                    {"id": "out", "type": "Output", "data": {"made": "by child"}}
                ],
                "edges": [{"from": "in", "to": "slow"}, {"from": "slow", "to": "out"}]
            }),
            child_of_parent(),
        )
        .unwrap();
    assert_eq!(child.stored().record.depth, 1);
    let done = child
        .callback("n1", json!({"task_id": "t-slow", "success": true}))
        .unwrap();
    // The parent is told on the next wake, like a final callback.
    assert!(done.wake.is_some());
    child.wake();
    let sent = child.notifier.sent.borrow();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, format!("{PARENT_SCHEME}parent-run/n2"));
    let body: Value = serde_json::from_str(&sent[0].2).unwrap();
    assert_eq!(body["task_id"], json!("run-1"));
    assert_eq!(body["success"], json!(true));
    assert_eq!(
        body["made"],
        json!("by child"),
        "the child's data is merged in"
    );
    assert_eq!(body["data"]["made"], json!("by child"));
    let _ = T0;
}

#[test]
fn a_child_that_finishes_at_once_owes_its_parent_nothing() {
    let child = Gate::new(Network::echo_with_async());
    let started = child
        .start_with(
            json!({"nodes": [{"id": "in", "type": "Input"}, {"id": "out", "type": "Output"}],
                          "edges": [{"from": "in", "to": "out"}]}),
            child_of_parent(),
        )
        .unwrap();
    assert_eq!(started.wake, None, "no delivery is due");
    assert_eq!(child.saves(), 1);
}

#[test]
fn a_cancel_reaches_the_children_the_run_waits_on_and_only_those() {
    // Two sub-workflow calls answer pending (their children pause), and an
    // HTTP component pends too: a cancel asks the two children to cancel.
    let net = Network::new(|call| {
        if call.url.starts_with("workflow://") {
            let child = format!("child-of-{}", call.node_id);
            return CallOutcome::Answered(
                json!({"pending": true, "task_id": child, "subflow_run_id": child}),
            );
        }
        CallOutcome::Answered(json!({"pending": true, "task_id": "t-http"}))
    });
    let gate = Gate::new(net);
    gate.start(
        json!({
            "nodes": [
                {"id": "a", "type": "Component", "componentId": "workflow://kid"},
                {"id": "b", "type": "Component", "componentId": "workflow://kid"},
                {"id": "h", "type": "Component", "componentId": "http://c/slow"}
            ],
            "edges": []
        }),
        json!({}),
    );
    assert!(matches!(
        gate.stored().record.status,
        RunStatus::Paused { .. }
    ));
    assert!(
        gate.net.cancelled.borrow().is_empty(),
        "nothing cancelled before the cancel"
    );
    gate.send(Command::Cancel {
        run_id: "run-1".into(),
        owner: Some(OWNER.into()),
    })
    .expect("cancelled");
    let mut asked = gate.net.cancelled.borrow().clone();
    asked.sort();
    assert_eq!(
        asked,
        vec![
            ("child-of-a".to_string(), Some(OWNER.to_string())),
            ("child-of-b".to_string(), Some(OWNER.to_string())),
        ]
    );
    // A cancel refused (the run is finished) asks nothing more.
    assert!(gate
        .send(Command::Cancel {
            run_id: "run-1".into(),
            owner: Some(OWNER.into()),
        })
        .is_err());
    assert_eq!(gate.net.cancelled.borrow().len(), 2);
}

#[test]
fn date_variables_are_held_once_not_copied_into_contexts_items_or_outputs() {
    let gate = Gate::new(Network::echo_with_async());
    let graph = json!({
        "nodes": [
            {"id": "in", "type": "Input"},
            {"id": "list", "type": "Component", "componentId": "comp_passthrough"},
            {"id": "each", "type": "Component", "componentId": "comp_passthrough",
             "data": {"label": "{{item}} on {{_today}}"}},
            {"id": "slow", "type": "Component", "componentId": "http://c/async"},
            {"id": "out", "type": "Output", "data": {"week": "{{_iso_week}}"}}
        ],
        "edges": [
            {"from": "in", "to": "list"},
            {"from": "list", "to": "each", "type": "FOREACH", "items": "items", "iterator": "item"},
            {"from": "each", "to": "slow"},
            {"from": "slow", "to": "out"}
        ]
    });
    gate.start(graph, json!({"items": ["a", "b", "c"], "_year": "mine"}));
    // The component's POSTed input carries them, the trigger's value winning.
    let sent = gate.net.calls.borrow()[0].input.clone();
    assert_eq!(sent["_today"], json!("2027-01-15"));
    assert_eq!(sent["_year"], json!("mine"));
    // The stored record names each variable once: in the run's context.
    let text = gate.store.record("run-1").expect("stored");
    for name in arcrun::core::dates::NAMES {
        assert_eq!(
            text.matches(&format!("\"{name}\"")).count(),
            1,
            "{name} in {text}"
        );
    }
    assert!(
        text.contains("a on 2027-01-15"),
        "templates see them: {text}"
    );
    gate.forget();
    gate.callback("n3", json!({"task_id": "t-slow", "success": true}))
        .unwrap();
    let out = completed(&gate);
    assert_eq!(out["week"], json!("2027-W02"));
    // The result of an Output node shows them, as the context it passed on did.
    assert_eq!(out["_today"], json!("2027-01-15"));
    assert_eq!(out["_year"], json!("mine"));
    // The items' results do not repeat them.
    let results = out["results"].as_array().expect("results");
    assert_eq!(results.len(), 3);
    assert!(
        results.iter().all(|r| r.get("_today").is_none()),
        "{results:?}"
    );
}
