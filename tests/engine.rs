//! Edge semantics, joins, templating in context, and the fixes over the
//! engine we descend from — natively, through the real executor and driver.

mod support;

use arcrun::core::protocol::CallFailure;
use arcrun::core::record::RunStatus;
use arcrun::core::run::CallOutcome;
use serde_json::{json, Value};
use support::*;

fn branch_graph(edge_kind: &str, extra: Value) -> Value {
    let mut edge = json!({"from": "src", "to": "yes", "type": edge_kind});
    edge.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    json!({
        "nodes": [
            {"id": "src", "type": "Component", "componentId": "comp_passthrough"},
            {"id": "yes", "type": "Component", "componentId": "comp_passthrough", "data": {"took": "yes"}},
            {"id": "out", "type": "Output"}
        ],
        "edges": [edge, {"from": "yes", "to": "out", "type": "PIPE"}]
    })
}

#[test]
fn pipe_carries_context_and_outputs_by_id() {
    let net = Network::echo_with_async();
    let clock = Clock::new();
    let graph = json!({
        "nodes": [
            {"id": "in", "type": "Input", "data": {"greeting": "hi {{name}}"}},
            {"id": "a", "type": "Component", "componentId": "http://c/a", "data": {"n": "{{count}}"}},
            {"id": "out", "type": "Output", "data": {"from_a": "{{a.n}}", "g": "{{in.greeting}}"}}
        ],
        "edges": [{"from": "in", "to": "a", "type": "PIPE"}, {"from": "a", "to": "out", "type": "PIPE"}]
    });
    let run = run_graph(graph, json!({"name": "Ada", "count": 3}), &net, &clock);
    let out = output(&run);
    assert_eq!(out["from_a"], json!(3), "single placeholder keeps its type");
    assert_eq!(out["g"], json!("hi Ada"));
    assert_eq!(
        out["greeting"],
        json!("hi Ada"),
        "upstream output merged at top level"
    );
    let sent = &net.calls.borrow()[0].input;
    assert_eq!(sent["n"], json!(3));
    assert_eq!(
        sent["name"],
        json!("Ada"),
        "component input carries the upstream context"
    );
}

#[test]
fn on_success_and_on_fail_route_by_result() {
    let clock = Clock::new();
    for (answer, expect) in [
        (json!({"ok": 1}), "good"),
        (json!({"ok": 1, "error": null}), "good"),
        (json!({"success": false}), "bad"),
        (json!({"error": "boom"}), "bad"),
    ] {
        let a = answer.clone();
        let net = Network::new(move |_| CallOutcome::Answered(a.clone()));
        let graph = json!({
            "nodes": [
                {"id": "c", "type": "Component", "componentId": "http://c/x"},
                {"id": "good", "type": "Output", "data": {"path": "good"}},
                {"id": "bad", "type": "Output", "data": {"path": "bad"}}
            ],
            "edges": [
                {"from": "c", "to": "good", "type": "ON_SUCCESS"},
                {"from": "c", "to": "bad", "type": "ON_FAIL"}
            ]
        });
        let run = run_graph(graph, json!({}), &net, &clock);
        assert_eq!(output(&run)["path"], json!(expect), "answer {answer}");
    }
}

#[test]
fn transport_failures_become_failed_results_that_on_fail_routes() {
    let clock = Clock::new();
    let net = Network::new(|_| CallOutcome::Failed {
        status: Some(502),
        error: "component answered HTTP 502".into(),
        code: Some(CallFailure::HttpStatus),
    });
    let graph = json!({
        "nodes": [
            {"id": "c", "type": "Component", "componentId": "http://c/x"},
            {"id": "recover", "type": "Output", "data": {"why": "{{c.error}}", "status": "{{c.status}}", "code": "{{c.error_code}}"}}
        ],
        "edges": [{"from": "c", "to": "recover", "type": "ON_FAIL"}]
    });
    let run = run_graph(graph, json!({}), &net, &clock);
    assert_eq!(output(&run)["why"], json!("component answered HTTP 502"));
    assert_eq!(output(&run)["status"], json!(502));
    assert_eq!(output(&run)["code"], json!("http_status"));
}

#[test]
fn unrouted_failure_fails_the_run_with_the_node_and_reason() {
    let clock = Clock::new();
    let net = Network::new(|_| CallOutcome::Failed {
        status: None,
        error: "timed out after 120000 ms".into(),
        code: Some(CallFailure::Timeout),
    });
    let graph = json!({
        "nodes": [
            {"id": "c", "type": "Component", "componentId": "http://c/x"},
            {"id": "next", "type": "Output"}
        ],
        "edges": [{"from": "c", "to": "next", "type": "PIPE"}]
    });
    let run = run_graph(graph, json!({}), &net, &clock);
    let RunStatus::Failed { error, .. } = run.status() else {
        panic!("expected failure, got {:?}", run.status());
    };
    assert_eq!(error.node_id.as_deref(), Some("c"));
    assert!(error.message.contains("timed out"));
    // The run's code stays `node_failed`; the trace says what happened.
    assert_eq!(error.code, "node_failed");
    assert_eq!(run.record.trace[0].error_code.as_deref(), Some("timeout"));
    assert_eq!(executed(&run), vec!["c:failed"]);
}

#[test]
fn if_edges_evaluate_conditions_and_missing_keys_are_false() {
    let net = Network::echo_with_async();
    let clock = Clock::new();
    let cases = [
        ("status === 'ok'", json!({"status": "ok"}), true),
        ("status === 'ok'", json!({"status": "no"}), false),
        ("score > 5", json!({"score": 9}), true),
        ("score > 5", json!({"score": 2}), false),
        ("flag", json!({"flag": true}), true),
        ("flag", json!({}), false),
        ("missing !== 'x'", json!({}), false),
    ];
    for (cond, ctx, fires) in cases {
        let run = run_graph(
            branch_graph("IF", json!({"condition": cond})),
            ctx.clone(),
            &net,
            &clock,
        );
        let took = executed(&run).contains(&"yes:ok".to_string());
        assert_eq!(took, fires, "{cond} with {ctx}");
        assert!(matches!(run.status(), RunStatus::Completed { .. }));
    }
}

#[test]
fn on_true_on_false_follow_if_control() {
    let net = Network::echo_with_async();
    let clock = Clock::new();
    for (score, expect) in [(9, "high"), (1, "low")] {
        let graph = json!({
            "nodes": [
                {"id": "check", "type": "Component", "componentId": "if_control", "data": {"condition": "score > 5"}},
                {"id": "high", "type": "Output", "data": {"path": "high"}},
                {"id": "low", "type": "Output", "data": {"path": "low"}}
            ],
            "edges": [
                {"from": "check", "to": "high", "type": "ON_TRUE"},
                {"from": "check", "to": "low", "type": "ON_FALSE"}
            ]
        });
        let run = run_graph(graph, json!({"score": score}), &net, &clock);
        assert_eq!(output(&run)["path"], json!(expect));
        assert!(trace(&run).iter().any(|t| t.ends_with(":skipped")));
    }
}

#[test]
fn on_branch_follows_switch_and_branch_fields() {
    let net = Network::echo_with_async();
    let clock = Clock::new();
    let graph = json!({
        "nodes": [
            {"id": "route", "type": "Component", "componentId": "switch",
             "data": {"value": "{{kind}}", "cases": ["email", "sms"], "default": "other"}},
            {"id": "email", "type": "Output", "data": {"via": "email"}},
            {"id": "sms", "type": "Output", "data": {"via": "sms"}},
            {"id": "other", "type": "Output", "data": {"via": "other"}}
        ],
        "edges": [
            {"from": "route", "to": "email", "type": "ON_BRANCH", "branch": "email"},
            {"from": "route", "to": "sms", "type": "ON_BRANCH", "branch": "sms"},
            {"from": "route", "to": "other", "type": "ON_BRANCH", "branch": "other"}
        ]
    });
    for (kind, via) in [("sms", "sms"), ("email", "email"), ("fax", "other")] {
        let run = run_graph(graph.clone(), json!({"kind": kind}), &net, &clock);
        assert_eq!(output(&run)["via"], json!(via), "kind {kind}");
    }
    // A remote component choosing its branch through data.branch.
    let net = Network::new(|_| CallOutcome::Answered(json!({"data": {"branch": "b"}})));
    let graph = json!({
        "nodes": [
            {"id": "r", "type": "Component", "componentId": "http://c/r"},
            {"id": "a", "type": "Output", "data": {"went": "a"}},
            {"id": "b", "type": "Output", "data": {"went": "b"}}
        ],
        "edges": [
            {"from": "r", "to": "a", "type": "ON_BRANCH", "branch": "a"},
            {"from": "r", "to": "b", "type": "ON_BRANCH", "branch": "b"}
        ]
    });
    let run = run_graph(graph, json!({}), &net, &clock);
    assert_eq!(output(&run)["went"], json!("b"));
}

#[test]
fn foreach_runs_the_target_once_per_item_even_when_items_look_alike() {
    let net = Network::echo_with_async();
    let clock = Clock::new();
    let graph = json!({
        "nodes": [
            {"id": "list", "type": "Component", "componentId": "comp_passthrough"},
            {"id": "each", "type": "Component", "componentId": "http://c/each", "data": {"doubled": "{{row.v}}"}},
            {"id": "out", "type": "Output"}
        ],
        "edges": [
            {"from": "list", "to": "each", "type": "FOREACH", "iterator": "row"},
            {"from": "each", "to": "out", "type": "PIPE"}
        ]
    });
    let items = json!([{"v": 1}, {"v": 1}, {"v": 1}, {"v": 2}]);
    let run = run_graph(graph, json!({"items": items}), &net, &clock);
    assert_eq!(net.hits("http://c/each"), 4);
    let out = output(&run);
    assert_eq!(out["count"], json!(4));
    let results = out["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    assert_eq!(results[3]["doubled"], json!(2));
    assert_eq!(results[1]["index"], json!(1));
    assert!(
        results[0].get("items").is_none(),
        "items do not each carry the whole array"
    );
}

#[test]
fn join_fires_once_after_all_branches_deliver_or_skip() {
    let net = Network::echo_with_async();
    let clock = Clock::new();
    // start → left (IF true) → join; start → right (IF false) → join; start → join directly.
    let graph = json!({
        "nodes": [
            {"id": "start", "type": "Input"},
            {"id": "left", "type": "Component", "componentId": "http://c/left", "data": {"l": 1}},
            {"id": "right", "type": "Component", "componentId": "http://c/right", "data": {"r": 1}},
            {"id": "join", "type": "Component", "componentId": "http://c/join"},
            {"id": "out", "type": "Output"}
        ],
        "edges": [
            {"from": "start", "to": "left", "type": "IF", "condition": "go === 'left'"},
            {"from": "start", "to": "right", "type": "IF", "condition": "go === 'right'"},
            {"from": "left", "to": "join", "type": "PIPE"},
            {"from": "right", "to": "join", "type": "PIPE"},
            {"from": "start", "to": "join", "type": "PIPE"},
            {"from": "join", "to": "out", "type": "PIPE"}
        ]
    });
    let run = run_graph(graph.clone(), json!({"go": "left"}), &net, &clock);
    assert_eq!(net.hits("http://c/join"), 1, "join fires exactly once");
    assert_eq!(net.hits("http://c/right"), 0);
    assert_eq!(
        output(&run)["l"],
        json!(1),
        "the delivered branch's context reaches the join"
    );
    assert!(trace(&run).contains(&"right:skipped".to_string()));

    // Both branches skipped, and no direct edge: the join is skipped, not stalled.
    let graph = json!({
        "nodes": [
            {"id": "start", "type": "Input"},
            {"id": "a", "type": "Component", "componentId": "comp_passthrough"},
            {"id": "b", "type": "Component", "componentId": "comp_passthrough"},
            {"id": "join", "type": "Component", "componentId": "http://c/join2"},
            {"id": "other", "type": "Output", "data": {"done": true}}
        ],
        "edges": [
            {"from": "start", "to": "a", "type": "IF", "condition": "nope"},
            {"from": "start", "to": "b", "type": "IF", "condition": "nope"},
            {"from": "a", "to": "join", "type": "PIPE"},
            {"from": "b", "to": "join", "type": "PIPE"},
            {"from": "start", "to": "other", "type": "PIPE"}
        ]
    });
    let run = run_graph(graph, json!({}), &net, &clock);
    assert_eq!(net.hits("http://c/join2"), 0);
    assert!(trace(&run).contains(&"join:skipped".to_string()));
    assert_eq!(output(&run)["done"], json!(true));
}

#[test]
fn fan_out_fan_in_merges_every_branch_once() {
    let net = Network::echo_with_async();
    let clock = Clock::new();
    let mut nodes = vec![json!({"id": "in", "type": "Input"})];
    let mut edges = Vec::new();
    for i in 0..50 {
        let id = format!("b{i}");
        nodes.push(json!({"id": id, "type": "Component", "componentId": "comp_passthrough", "data": {id.clone(): i}}));
        edges.push(json!({"from": "in", "to": id, "type": "PIPE"}));
        edges.push(json!({"from": id, "to": "join", "type": "PIPE"}));
    }
    nodes.push(json!({"id": "join", "type": "Component", "componentId": "http://c/join"}));
    nodes.push(json!({"id": "out", "type": "Output"}));
    edges.push(json!({"from": "join", "to": "out", "type": "PIPE"}));
    let run = run_graph(
        json!({"nodes": nodes, "edges": edges}),
        json!({}),
        &net,
        &clock,
    );
    assert_eq!(net.hits("http://c/join"), 1);
    let out = output(&run);
    assert_eq!(out["b0"], json!(0));
    assert_eq!(out["b49"], json!(49));
}

#[test]
fn thousand_node_chain_grows_linearly() {
    let clock = Clock::new();
    let net = Network::echo_with_async();
    let size = |len: usize| {
        let run = run_graph(
            chain(len, "comp_passthrough"),
            json!({"payload": "x".repeat(100)}),
            &net,
            &clock,
        );
        assert!(matches!(run.status(), RunStatus::Completed { .. }));
        stored_len(&run)
    };
    let small = size(100);
    let large = size(1000);
    let ratio = large as f64 / small as f64;
    assert!(
        ratio < 11.0,
        "stored size grew {ratio:.1}× for 10× the nodes ({small} → {large} bytes)"
    );
    // The same passes through remote components, whose input is posted whole.
    let run = run_graph(
        chain(1000, "http://c/echo"),
        json!({"payload": "p"}),
        &net,
        &clock,
    );
    let longest = net
        .calls
        .borrow()
        .iter()
        .map(|c| serde_json::to_string(&c.input).unwrap().len())
        .max()
        .unwrap();
    assert!(
        longest < 200,
        "a component input stays small along the chain ({longest} bytes)"
    );
    assert!(matches!(run.status(), RunStatus::Completed { .. }));
}

#[test]
fn ten_thousand_node_chain_does_not_overflow_the_stack() {
    let clock = Clock::new();
    let net = Network::echo_with_async();
    let run = run_graph(
        chain(10_000, "comp_passthrough"),
        json!({"v": 1}),
        &net,
        &clock,
    );
    assert_eq!(output(&run)["v"], json!(1));
    assert_eq!(run.record.trace.len(), 10_002);
}

#[test]
fn pending_without_task_id_is_a_failure() {
    let clock = Clock::new();
    let net = Network::new(|_| CallOutcome::Answered(json!({"pending": true, "task_id": ""})));
    let graph = json!({
        "nodes": [{"id": "c", "type": "Component", "componentId": "http://c/x"},
                  {"id": "f", "type": "Output", "data": {"why": "{{c.error}}"}}],
        "edges": [{"from": "c", "to": "f", "type": "ON_FAIL"}]
    });
    let run = run_graph(graph, json!({}), &net, &clock);
    assert!(output(&run)["why"].as_str().unwrap().contains("task_id"));
}

#[test]
fn template_explosion_is_a_node_failure_not_a_crash() {
    let clock = Clock::new();
    let net = Network::echo_with_async();
    let big = "y".repeat(600_000);
    let graph = json!({
        "nodes": [{"id": "c", "type": "Component", "componentId": "comp_passthrough",
                   "data": {"boom": "{{big}}{{big}}{{big}}"}}],
        "edges": []
    });
    let run = run_graph(graph, json!({"big": big}), &net, &clock);
    let RunStatus::Failed { error, .. } = run.status() else {
        panic!("expected failure");
    };
    assert!(error.message.contains("bytes"));
}

#[test]
fn without_output_nodes_the_sinks_are_the_result() {
    let clock = Clock::new();
    let net = Network::echo_with_async();
    let graph = json!({
        "nodes": [
            {"id": "a", "type": "Component", "componentId": "comp_passthrough", "data": {"x": 1}},
            {"id": "b", "type": "Component", "componentId": "comp_passthrough", "data": {"y": 2}}
        ],
        "edges": []
    });
    let run = run_graph(graph, json!({}), &net, &clock);
    assert_eq!(output(&run)["a"]["x"], json!(1));
    assert_eq!(output(&run)["b"]["y"], json!(2));
}

#[test]
fn foreach_without_an_array_fails_the_target_clearly() {
    let net = Network::echo_with_async();
    let clock = Clock::new();
    let graph = json!({
        "nodes": [
            {"id": "src", "type": "Input"},
            {"id": "each", "type": "Component", "componentId": "comp_passthrough"},
            {"id": "why", "type": "Output", "data": {"reason": "{{each.error}}"}}
        ],
        "edges": [
            {"from": "src", "to": "each", "type": "FOREACH", "items": "links"},
            {"from": "each", "to": "why", "type": "ON_FAIL"}
        ]
    });
    let run = run_graph(
        graph.clone(),
        json!({"links": "not an array"}),
        &net,
        &clock,
    );
    assert_eq!(
        output(&run)["reason"],
        json!("FOREACH found no array at 'links'")
    );
    let run = run_graph(graph, json!({"links": ["a", "b"]}), &net, &clock);
    assert!(executed(&run).contains(&"each:ok".to_string()));
}

#[test]
fn a_huge_task_id_fails_the_node_instead_of_growing_the_run() {
    let net = Network::new(|_| {
        CallOutcome::Answered(json!({"pending": true, "task_id": "t".repeat(10_000)}))
    });
    let clock = Clock::new();
    let graph = json!({
        "nodes": [
            {"id": "slow", "type": "Component", "componentId": "http://c/slow"},
            {"id": "why", "type": "Output", "data": {"error": "{{slow.error}}"}}
        ],
        "edges": [{"from": "slow", "to": "why", "type": "ON_FAIL"}]
    });
    let run = run_graph(graph, json!({}), &net, &clock);
    assert!(run.record.waits.is_empty());
    assert_eq!(
        output(&run)["error"],
        json!("component answered pending with a 10000-byte task_id; the limit is 1024 bytes")
    );
}
