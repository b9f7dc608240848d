//! Contexts and outputs share what they repeat (`core::fields`): a chain
//! whose nodes each add a key and pass the rest on completes at lengths
//! where copies would not fit in a run, and its stored record grows with
//! what the nodes add, not with the square of the chain's length.

mod support;

use arcrun::core::plan::Directory;
use arcrun::core::record::RunStatus;
use arcrun::core::run::Settings;
use arcrun::core::stored::{decode, encode};
use serde_json::{json, Value};
use support::gate::Gate;
use support::*;

/// Input → `len` pass-throughs, each adding `k{i}` → (a component that
/// pauses →) Output.
fn growing(len: usize, pause: bool) -> Value {
    let mut nodes = vec![json!({"id": "in", "type": "Input"})];
    let mut edges = Vec::new();
    let mut prev = "in".to_string();
    for i in 0..len {
        let id = format!("g{i}");
        nodes.push(json!({
            "id": id, "type": "Component", "componentId": "comp_passthrough",
            "data": {format!("k{i}"): format!("value of step {i}")}
        }));
        edges.push(json!({"from": prev, "to": id}));
        prev = id;
    }
    if pause {
        nodes.push(json!({"id": "slow", "type": "Component", "componentId": "http://c/async"}));
        edges.push(json!({"from": prev, "to": "slow"}));
        prev = "slow".into();
    }
    nodes.push(json!({"id": "out", "type": "Output"}));
    edges.push(json!({"from": prev, "to": "out"}));
    json!({"nodes": nodes, "edges": edges})
}

#[test]
fn a_growing_chain_of_2000_nodes_completes() {
    let net = Network::echo_with_async();
    let clock = Clock::new();
    // Held as copies, 2,000 outputs of this context would be about 90 MB;
    // what the nodes add is about 60 KB.
    let settings = Settings {
        max_run_bytes: 1 << 20,
        ..Settings::default()
    };
    let run = run_graph_with(
        growing(2_000, false),
        json!({"pad": "x".repeat(5_000)}),
        &net,
        &clock,
        &settings,
    );
    let RunStatus::Completed { output, .. } = run.status() else {
        panic!("{:?}", run.status().name())
    };
    assert_eq!(output["k0"], json!("value of step 0"));
    assert_eq!(output["k1999"], json!("value of step 1999"));
    assert_eq!(output["pad"], json!("x".repeat(5_000)));
    let keys = output.as_object().unwrap().keys();
    assert_eq!(keys.filter(|k| k.starts_with('k')).count(), 2_000);
}

#[test]
fn a_paused_growing_chain_is_stored_in_proportion_to_its_length_and_resumes() {
    let mut sizes = Vec::new();
    for len in [200, 2_000] {
        let gate = Gate::new(Network::echo_with_async());
        gate.start(growing(len, true), json!({"pad": "x".repeat(1_000)}));
        let text = gate.store.record("run-1").expect("stored");
        sizes.push(text.len());
        // It reads back as it was, and writes back the same.
        let run = decode(&text, &Directory::default(), *gate.stored().settings()).unwrap();
        assert_eq!(run.record.nodes, gate.stored().record.nodes);
        let mut again = run;
        assert_eq!(encode(&mut again, usize::MAX, 0), text);
        // The callback resumes it to the end, every key reaching the Output.
        let wait_id = gate.stored().record.waits.keys().next().unwrap().clone();
        gate.callback(
            &wait_id,
            json!({"task_id": "t-slow", "success": true, "data": {"ok": 1}}),
        )
        .expect("resumed");
        let run = gate.stored();
        let RunStatus::Completed { output, .. } = run.status() else {
            panic!("{:?}", run.status().name())
        };
        assert_eq!(
            output[format!("k{}", len - 1)],
            json!(format!("value of step {}", len - 1))
        );
        assert_eq!(output["pad"], json!("x".repeat(1_000)));
    }
    let growth = sizes[1] as f64 / sizes[0] as f64;
    assert!(
        growth <= 11.0,
        "10× the nodes, {growth:.2}× the record: {sizes:?}"
    );
}

#[test]
fn a_template_naming_a_node_reads_its_whole_output_however_it_is_held() {
    let net = Network::echo_with_async();
    let clock = Clock::new();
    let graph = json!({
        "nodes": [
            {"id": "in", "type": "Input"},
            {"id": "p", "type": "Component", "componentId": "comp_passthrough", "data": {"a": 1}},
            {"id": "q", "type": "Component", "componentId": "comp_passthrough", "data": {"b": "{{p.a}}"}},
            {"id": "out", "type": "Output", "data": {"whole": "{{p}}", "a": "{{p.a}}", "q": "{{q}}"}}
        ],
        "edges": [
            {"from": "in", "to": "p"}, {"from": "p", "to": "q"}, {"from": "q", "to": "out"}
        ]
    });
    let run = run_graph(graph, json!({"topic": "t"}), &net, &clock);
    let RunStatus::Completed { output, .. } = run.status() else {
        panic!("{:?}", run.status().name())
    };
    assert_eq!(output["whole"], json!({"topic": "t", "a": 1}));
    assert_eq!(output["a"], json!(1));
    assert_eq!(output["q"], json!({"topic": "t", "a": 1, "b": 1}));
}
