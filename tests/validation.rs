//! Graph validation: every problem listed, nothing accepted that cannot run.

use arcrun::core::error::EngineError;
use arcrun::core::plan::{plan_from_json, Directory, GraphLimits};
use serde_json::{json, Value};
use std::collections::BTreeMap;

fn problems(graph: Value) -> Vec<String> {
    let directory = Directory::new(BTreeMap::from([(
        "summarize".to_string(),
        "https://x.test/s".to_string(),
    )]));
    match plan_from_json(&graph, &directory, GraphLimits::default()) {
        Err(EngineError::InvalidGraph(p)) => p
            .into_iter()
            .map(|p| format!("{}: {}", p.at, p.message))
            .collect(),
        Err(other) => panic!("unexpected error {other:?}"),
        Ok(_) => Vec::new(),
    }
}

fn node(id: &str) -> Value {
    json!({"id": id, "type": "Component", "componentId": "comp_passthrough"})
}

#[test]
fn every_problem_is_listed_together() {
    let found = problems(json!({
        "nodes": [node("a"), node("a"), {"id": "c", "type": "Component"}, {"id": "d", "type": "Component", "componentId": "nope"}],
        "edges": [
            {"from": "a", "to": "ghost", "type": "PIPE"},
            {"from": "a", "to": "c", "type": "IF"},
            {"from": "a", "to": "d", "type": "ON_BRANCH"}
        ]
    }));
    let all = found.join("\n");
    for needle in [
        "duplicate node id",
        "no componentId",
        "unknown component 'nope'",
        "unknown node 'ghost'",
        "needs a condition",
        "needs a branch",
    ] {
        assert!(all.contains(needle), "missing '{needle}' in:\n{all}");
    }
}

#[test]
fn shape_errors_are_reported_not_panicked() {
    for bad in [
        json!(null),
        json!([]),
        json!("x"),
        json!({"nodes": 3}),
        json!({"nodes": [1, {"id": 5}]}),
        json!({"nodes": [node("a")], "edges": [{"from": "a", "to": "a", "type": "WARP"}]}),
        json!({"nodes": []}),
    ] {
        assert!(
            !problems(bad.clone()).is_empty(),
            "{bad} should be rejected"
        );
    }
}

#[test]
fn cycles_and_self_loops_are_rejected() {
    let found = problems(json!({"nodes": [node("a"), node("b")], "edges": [
        {"from": "a", "to": "b", "type": "PIPE"}, {"from": "b", "to": "a", "type": "PIPE"}]}));
    assert!(found.iter().any(|p| p.contains("cycle")), "{found:?}");
    let found = problems(
        json!({"nodes": [node("a")], "edges": [{"from": "a", "to": "a", "type": "PIPE"}]}),
    );
    assert!(found.iter().any(|p| p.contains("cycle")), "{found:?}");
}

#[test]
fn ten_thousand_duplicates_give_one_bounded_report() {
    let nodes: Vec<Value> = (0..10_000).map(|_| node("same")).collect();
    let found = problems(json!({"nodes": nodes, "edges": []}));
    assert_eq!(found.len(), 1);
    assert!(found[0].contains("10000 times"));
}

#[test]
fn named_urls_and_builtins_resolve() {
    assert!(problems(json!({"nodes": [
        {"id": "a", "type": "Component", "componentId": "summarize"},
        {"id": "b", "type": "Component", "componentId": "https://example.test/x"},
        {"id": "c", "type": "Component", "componentId": "if_control"},
        {"id": "i", "type": "input"}, {"id": "o", "type": "OUTPUT"}
    ], "edges": [{"from": "i", "to": "a"}, {"from": "a", "to": "b", "type": "on_success"}]}))
    .is_empty());
}

#[test]
fn shape_and_structure_problems_are_reported_in_one_answer() {
    let found = problems(json!({
        "nodes": [node("a"), node("a"), {"id": "b", "type": "Gadget"}],
        "edges": [{"from": "a", "to": "b", "type": "TELEPORT"}, {"from": "b", "to": "nowhere"}]
    }))
    .join("\n");
    for needle in [
        "unknown node type 'Gadget'",
        "unknown edge type 'TELEPORT'",
        "duplicate node id",
        "edges[1].to: unknown node 'nowhere'",
    ] {
        assert!(found.contains(needle), "missing '{needle}' in:\n{found}");
    }
}
