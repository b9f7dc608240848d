//! Memory stays bounded whatever the graph: hostile fan-outs, FOREACH over a
//! large context, and many large calls at once fail clearly or are batched.

mod support;

use arcrun::core::record::RunStatus;
use arcrun::core::run::{CallOutcome, Run, Settings};
use serde_json::{json, Map, Value};
use support::*;

fn fan_out(width: usize, component: &str) -> Value {
    let mut nodes = vec![json!({"id": "in", "type": "Input"})];
    let mut edges = Vec::new();
    for i in 0..width {
        nodes.push(json!({"id": format!("b{i}"), "type": "Component", "componentId": component}));
        edges.push(json!({"from": "in", "to": format!("b{i}"), "type": "PIPE"}));
    }
    json!({"nodes": nodes, "edges": edges})
}

fn failure_code(run: &Run) -> String {
    match run.status() {
        RunStatus::Failed { error, .. } => error.code.clone(),
        other => panic!("expected a failed run, got {other:?}"),
    }
}

#[test]
fn outputs_past_the_run_limit_fail_the_run_instead_of_growing() {
    let net = Network::echo_with_async();
    let clock = Clock::new();
    let settings = Settings {
        max_run_bytes: 2 << 20,
        ..Settings::default()
    };
    // 5,000 pass-through branches each echoing a 100 KB context: the
    // outputs share the context, but the result gathering them would be
    // ~500 MB, and is refused.
    let run = run_graph_with(
        fan_out(5_000, "comp_passthrough"),
        json!({"pad": "x".repeat(100_000)}),
        &net,
        &clock,
        &settings,
    );
    assert_eq!(failure_code(&run), "run_too_large");
    let RunStatus::Failed { error, .. } = run.status() else {
        unreachable!()
    };
    assert!(
        error.message.contains("the outputs of 5000 nodes together"),
        "{}",
        error.message
    );
    // The same branches each adding 100 KB of their own hold ~500 MB: the
    // run stops early.
    let net = Network::echo_with_async();
    let mut graph = fan_out(5_000, "comp_passthrough");
    for node in graph["nodes"].as_array_mut().unwrap().iter_mut().skip(1) {
        node["data"] = json!({"own": format!("{}{{{{pad}}}}", node["id"].as_str().unwrap())});
    }
    let run = run_graph_with(
        graph,
        json!({"pad": "x".repeat(100_000)}),
        &net,
        &clock,
        &settings,
    );
    assert_eq!(failure_code(&run), "run_too_large");
    let done = run
        .record
        .trace
        .iter()
        .filter(|t| t.node_id.starts_with('b'))
        .count();
    assert!(done < 30, "stopped early, after {done} branches");
}

#[test]
fn foreach_over_a_large_context_is_refused_before_building_inputs() {
    let net = Network::echo_with_async();
    let clock = Clock::new();
    let settings = Settings {
        max_run_bytes: 1 << 20,
        ..Settings::default()
    };
    let graph = json!({
        "nodes": [{"id": "list", "type": "Input"}, {"id": "each", "type": "Component", "componentId": "http://c/each"}],
        "edges": [{"from": "list", "to": "each", "type": "FOREACH"}]
    });
    let items: Vec<Value> = (0..1000).map(|i| json!(i)).collect();
    let run = run_graph_with(
        graph,
        json!({"items": items, "pad": "x".repeat(50_000)}),
        &net,
        &clock,
        &settings,
    );
    assert_eq!(net.hits("http://c/each"), 0);
    assert_eq!(failure_code(&run), "node_failed");
    let RunStatus::Failed { error, .. } = run.status() else {
        unreachable!()
    };
    assert!(
        error.message.contains("FOREACH over 1000 items"),
        "{}",
        error.message
    );
}

#[test]
fn large_calls_are_issued_in_bounded_batches() {
    let clock = Clock::new();
    let ctx: Map<String, Value> = json!({"pad": "x".repeat(200_000)})
        .as_object()
        .unwrap()
        .clone();
    // A budget that does not bind, so only the batch bound can split the calls.
    let settings = Settings {
        max_calls_per_segment: 1000,
        ..Settings::default()
    };
    let mut run = Run::start(
        plan(fan_out(100, "http://c/echo")),
        "r".into(),
        ctx,
        clock.now(),
        settings,
    );
    let first: Vec<_> = run
        .step(clock.now())
        .into_iter()
        .filter_map(|e| e.as_call().cloned())
        .collect();
    assert!(
        !first.is_empty() && first.len() < 100,
        "first batch has {} calls",
        first.len()
    );
    // Every call still happens, batch after batch.
    let net = Network::echo_with_async();
    for call in first {
        run.complete_call(
            call.key,
            CallOutcome::Answered(json!({"ok": true})),
            clock.now(),
        );
    }
    continue_run(&mut run, &net, &clock);
    assert!(matches!(run.status(), RunStatus::Completed { .. }));
    assert!(net.hits("http://c/echo") > 0);
    let succeeded = run
        .record
        .trace
        .iter()
        .filter(|t| t.node_id.starts_with('b'))
        .count();
    assert_eq!(succeeded, 100);
}

#[test]
fn consecutive_foreach_stages_do_not_multiply_in_size() {
    // list → each0 → pass0 → each1 → pass1 → …: every stage iterates the same
    // `items` again, and must not carry the previous stage's results into each item.
    let size_after = |stages: usize| {
        let net = Network::echo_with_async();
        let clock = Clock::new();
        let mut nodes = vec![json!({"id": "list", "type": "Input"})];
        let mut edges = Vec::new();
        let mut prev = "list".to_string();
        for s in 0..stages {
            let (each, pass) = (format!("each{s}"), format!("pass{s}"));
            nodes.push(json!({"id": each, "type": "Component", "componentId": "comp_passthrough"}));
            nodes.push(json!({"id": pass, "type": "Component", "componentId": "comp_passthrough"}));
            edges.push(json!({"from": prev, "to": each, "type": "FOREACH", "items": "items"}));
            edges.push(json!({"from": each, "to": pass, "type": "PIPE"}));
            prev = pass;
        }
        let run = run_graph(
            json!({"nodes": nodes, "edges": edges}),
            json!({"items": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}),
            &net,
            &clock,
        );
        assert!(
            matches!(run.status(), RunStatus::Completed { .. }),
            "{:?}",
            run.status()
        );
        match run.status() {
            RunStatus::Completed { output, .. } => serde_json::to_string(output).unwrap().len(),
            _ => unreachable!(),
        }
    };
    let (two, eight) = (size_after(2), size_after(8));
    assert!(
        eight < two * 8,
        "8 stages answer {eight} bytes against {two} for 2"
    );
}

#[test]
fn no_more_than_six_calls_are_in_flight_at_once() {
    let clock = Clock::new();
    let graph = json!({
        "nodes": [
            {"id": "in", "type": "Input"},
            {"id": "each", "type": "Component", "componentId": "http://c/each"},
            {"id": "out", "type": "Output"}
        ],
        "edges": [{"from": "in", "to": "each", "type": "FOREACH", "items": "list"}, {"from": "each", "to": "out"}]
    });
    let list: Vec<u32> = (0..20).collect();
    let ctx = json!({"list": list}).as_object().unwrap().clone();
    let mut run = Run::start(
        plan(graph),
        "r".into(),
        ctx,
        clock.now(),
        Settings::default(),
    );
    run.begin_segment(None);
    let mut batches = Vec::new();
    loop {
        let calls: Vec<_> = run
            .step(clock.now())
            .into_iter()
            .filter_map(|e| e.as_call().cloned())
            .collect();
        if calls.is_empty() {
            break;
        }
        batches.push(calls.len());
        for call in calls {
            run.complete_call(
                call.key,
                CallOutcome::Answered(json!({"ok": 1})),
                clock.now(),
            );
        }
    }
    assert_eq!(batches, vec![6, 6, 6, 2]);
    assert!(matches!(run.status(), RunStatus::Completed { .. }));
}

fn nested(depth: usize) -> Value {
    let mut v = json!(1);
    for _ in 0..depth {
        v = json!([v]);
    }
    v
}

/// Found end to end: a context nested near the JSON reader's limit (128) was
/// stored about ten levels deeper and could not be read back, stranding the
/// run. Everything taken in is bounded at 100 levels; what is under it stores
/// and loads.
#[test]
fn deep_json_is_bounded_so_stored_runs_read_back() {
    let net = Network::new(|call| {
        if call.url.ends_with("/deep") {
            return CallOutcome::Answered(json!({"v": nested(100)}));
        }
        if call.url.ends_with("/async") {
            return CallOutcome::Answered(json!({"pending": true, "task_id": "t"}));
        }
        CallOutcome::Answered(Value::Object(call.input.clone()))
    });
    let clock = Clock::new();
    let graph = json!({
        "nodes": [
            {"id": "in", "type": "Input"},
            {"id": "wait", "type": "Component", "componentId": "http://c/async"},
            {"id": "deep", "type": "Component", "componentId": "http://c/deep"},
            {"id": "why", "type": "Output", "data": {"error": "{{deep.error}}"}}
        ],
        "edges": [
            {"from": "in", "to": "wait"}, {"from": "in", "to": "deep"},
            {"from": "deep", "to": "why", "type": "ON_FAIL"}
        ]
    });
    // The deepest context a request may carry (the body itself is one level more).
    let run = run_graph(graph, json!({"ctx": nested(98)}), &net, &clock);
    assert!(matches!(run.status(), RunStatus::Paused { .. }));
    let mut reloaded = reload(&run);
    let wait = reloaded.record.waits.keys().next().unwrap().clone();
    let too_deep = json!({"task_id": "t", "data": nested(100)});
    assert!(matches!(
        reloaded.resume(&wait, too_deep, None, clock.now()),
        Err(arcrun::core::error::EngineError::InvalidRequest(_))
    ));
    reloaded
        .resume(&wait, json!({"task_id": "t"}), None, clock.now())
        .unwrap()
        .unwrap();
    continue_run(&mut reloaded, &net, &clock);
    let out = output(&reloaded);
    assert_eq!(
        out["error"],
        json!("the component's answer nests JSON more than 100 levels deep")
    );
}
