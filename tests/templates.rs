//! Template references that name nothing: left as written with a warning in
//! the node's trace entry, or — in a graph with `strict_templates` — a failure
//! of the node that names them. Natively, through the real executor.

mod support;

use arcrun::core::error::EngineError;
use arcrun::core::plan::{plan_from_json, Directory, GraphLimits};
use arcrun::core::record::{RunStatus, TraceEntry};
use arcrun::core::run::CallOutcome;
use arcrun::core::template::MAX_UNRESOLVED_KEPT;
use serde_json::{json, Value};
use support::*;

fn graph(strict: Option<Value>) -> Value {
    let mut graph = json!({
        "nodes": [
            {"id": "i", "type": "Input", "data": {"seed": "{{topic}}"}},
            {"id": "c", "type": "Component", "componentId": "http://c/llm",
             "data": {"prompt": "about {{i.seed}} and {{i.nope.deep}}", "ok": "{{topic}}"}},
            {"id": "out", "type": "Output", "data": {"answer": "{{c.prompt}}", "gone": "{{missing}}"}}
        ],
        "edges": [{"from": "i", "to": "c", "type": "PIPE"}, {"from": "c", "to": "out", "type": "PIPE"}]
    });
    if let Some(strict) = strict {
        graph["strict_templates"] = strict;
    }
    graph
}

fn entry<'a>(run: &'a arcrun::core::run::Run, node: &str) -> &'a TraceEntry {
    run.record
        .trace
        .iter()
        .find(|e| e.node_id == node)
        .unwrap_or_else(|| panic!("no trace entry for {node}"))
}

#[test]
fn unresolved_references_stay_as_written_and_are_warned_of_where_written() {
    let net = Network::echo_with_async();
    let clock = Clock::new();
    let run = run_graph(graph(None), json!({"topic": "owls"}), &net, &clock);
    let out = output(&run);
    // The output is what it always was: the text stays as written.
    assert_eq!(out["answer"], json!("about owls and {{i.nope.deep}}"));
    assert_eq!(out["gone"], json!("{{missing}}"));
    assert_eq!(
        net.calls.borrow()[0].input["prompt"],
        json!("about owls and {{i.nope.deep}}")
    );
    assert!(entry(&run, "i").warnings.is_empty());
    assert_eq!(
        entry(&run, "c").warnings,
        vec!["unresolved template reference {{i.nope.deep}} at data.prompt"]
    );
    assert_eq!(
        entry(&run, "out").warnings,
        vec!["unresolved template reference {{missing}} at data.gone"]
    );
}

#[test]
fn strict_templates_fails_the_node_naming_the_reference() {
    let net = Network::echo_with_async();
    let clock = Clock::new();
    let run = run_graph(
        graph(Some(json!(true))),
        json!({"topic": "owls"}),
        &net,
        &clock,
    );
    let RunStatus::Failed { error, .. } = run.status() else {
        panic!("expected a failed run, got {:?}", run.status());
    };
    let expected = "unresolved template reference {{i.nope.deep}} at data.prompt (the graph has \
                    strict_templates)";
    assert_eq!(error.node_id.as_deref(), Some("c"));
    assert_eq!(error.code, "node_failed");
    assert_eq!(error.message, expected);
    let c = entry(&run, "c");
    assert_eq!(c.error.as_deref(), Some(expected));
    assert_eq!(c.error_code.as_deref(), Some("unresolved_template"));
    // Refused before anything was sent.
    assert!(net.calls.borrow().is_empty());
    assert_eq!(executed(&run), vec!["i:ok", "c:failed"]);
}

#[test]
fn strict_failures_route_on_fail_and_false_is_the_default() {
    let net = Network::echo_with_async();
    let clock = Clock::new();
    let graph = json!({
        "strict_templates": true,
        "nodes": [
            {"id": "o", "type": "Output", "data": {"x": "{{nothing.here}}"}},
            {"id": "caught", "type": "Output", "data": {"why": "{{o.error}}", "code": "{{o.error_code}}"}}
        ],
        "edges": [{"from": "o", "to": "caught", "type": "ON_FAIL"}]
    });
    let run = run_graph(graph, json!({}), &net, &clock);
    // Two Output nodes finished (the failed one too): the result is by id.
    let caught = &output(&run)["caught"];
    assert_eq!(
        caught["why"],
        json!(
            "unresolved template reference {{nothing.here}} at data.x (the graph has \
             strict_templates)"
        )
    );
    assert_eq!(caught["code"], json!("unresolved_template"));
    // Stated false, the graph runs as one without the field.
    let run = run_graph(
        self::graph(Some(json!(false))),
        json!({"topic": "t"}),
        &net,
        &clock,
    );
    assert!(matches!(run.status(), RunStatus::Completed { .. }));
    assert!(!run.record.graph.strict_templates);
}

#[test]
fn strict_templates_must_be_a_boolean() {
    for bad in [json!("yes"), json!(1), json!({})] {
        let mut graph = graph(None);
        graph["strict_templates"] = bad.clone();
        let Err(EngineError::InvalidGraph(problems)) =
            plan_from_json(&graph, &Directory::default(), GraphLimits::default())
        else {
            panic!("{bad} was accepted");
        };
        let found: Vec<String> = problems
            .iter()
            .map(|p| format!("{}: {}", p.at, p.message))
            .collect();
        assert_eq!(
            found,
            vec![
                "graph.strict_templates: must be true or false (true: a template reference that \
                 names nothing fails its node)"
            ]
        );
    }
    let mut graph = graph(None);
    graph["strict_templates"] = Value::Null;
    assert!(plan_from_json(&graph, &Directory::default(), GraphLimits::default()).is_ok());
}

#[test]
fn foreach_items_warn_each_and_a_strict_item_fails_alone() {
    let net = Network::echo_with_async();
    let clock = Clock::new();
    let foreach = |strict: bool| {
        json!({
            "strict_templates": strict,
            "nodes": [
                {"id": "src", "type": "Input"},
                {"id": "each", "type": "Component", "componentId": "http://c/each",
                 "data": {"q": "{{item.name}} {{item.extra}}"}},
                {"id": "out", "type": "Output"}
            ],
            "edges": [
                {"from": "src", "to": "each", "type": "FOREACH", "items": "rows", "tolerated_failures": 1},
                {"from": "each", "to": "out", "type": "PIPE"}
            ]
        })
    };
    let rows = json!({"rows": [{"name": "a", "extra": "x"}, {"name": "b"}]});
    let run = run_graph(foreach(false), rows.clone(), &net, &clock);
    let items: Vec<&TraceEntry> = run
        .record
        .trace
        .iter()
        .filter(|e| e.node_id == "each" && e.item.is_some())
        .collect();
    assert_eq!(items.len(), 2);
    let by_item = |i| items.iter().find(|e| e.item == Some(i)).unwrap();
    assert!(by_item(0).warnings.is_empty());
    assert_eq!(
        by_item(1).warnings,
        vec!["unresolved template reference {{item.extra}} at data.q"]
    );
    assert_eq!(output(&run)["results"][1]["q"], json!("b {{item.extra}}"));

    let calls_before = net.calls.borrow().len();
    let run = run_graph(foreach(true), rows, &net, &clock);
    assert_eq!(
        net.calls.borrow().len(),
        calls_before + 1,
        "item 1 is never sent"
    );
    let results = &output(&run)["results"];
    assert_eq!(results[0]["q"], json!("a x"));
    assert_eq!(results[1]["error_code"], json!("unresolved_template"));
    assert_eq!(output(&run)["failed"], json!(1));
}

#[test]
fn a_paused_call_carries_its_warnings_and_they_are_stored() {
    let net = Network::echo_with_async();
    let clock = Clock::new();
    let graph = json!({
        "nodes": [
            {"id": "job", "type": "Component", "componentId": "http://c/async",
             "data": {"p": "{{who.name}}"}},
            {"id": "out", "type": "Output"}
        ],
        "edges": [{"from": "job", "to": "out", "type": "PIPE"}]
    });
    let mut run = run_graph(graph, json!({}), &net, &clock);
    assert!(matches!(run.status(), RunStatus::Paused { .. }));
    let paused = entry(&run, "job");
    assert_eq!(
        paused.warnings,
        vec!["unresolved template reference {{who.name}} at data.p"]
    );
    // The warnings and the strict flag survive the stored form.
    let reloaded = reload(&run);
    assert_eq!(reloaded.record.trace, run.record.trace);
    let (wait_id, task_id) = run
        .record
        .waits
        .values()
        .map(|w| (w.wait_id.clone(), w.task_id.clone()))
        .next()
        .unwrap();
    run = reloaded;
    run.resume(
        &wait_id,
        json!({"task_id": task_id, "done": true}),
        None,
        clock.now(),
    )
    .unwrap()
    .unwrap();
    continue_run(&mut run, &net, &clock);
    assert!(matches!(run.status(), RunStatus::Completed { .. }));
    // Reported once, with the call its data went into; not again on resume.
    let warned = run
        .record
        .trace
        .iter()
        .filter(|e| !e.warnings.is_empty())
        .count();
    assert_eq!(warned, 1);
}

#[test]
fn the_strict_flag_survives_the_stored_form() {
    let net = Network::new(|_| CallOutcome::Answered(json!({"pending": true, "task_id": "t"})));
    let clock = Clock::new();
    let graph = json!({
        "strict_templates": true,
        "nodes": [{"id": "job", "type": "Component", "componentId": "http://c/async"}],
        "edges": []
    });
    let run = run_graph(graph, json!({}), &net, &clock);
    assert!(run.record.graph.strict_templates);
    assert!(reload(&run).record.graph.strict_templates);
}

#[test]
fn warnings_are_bounded_however_many_references_fail() {
    let net = Network::echo_with_async();
    let clock = Clock::new();
    let many: serde_json::Map<String, Value> = (0..50)
        .map(|i| (format!("k{i:02}"), json!(format!("{{{{nope{i}}}}}"))))
        .collect();
    let graph = json!({
        "nodes": [{"id": "out", "type": "Output", "data": many}],
        "edges": []
    });
    let run = run_graph(graph, json!({}), &net, &clock);
    let warnings = &entry(&run, "out").warnings;
    assert_eq!(warnings.len(), MAX_UNRESOLVED_KEPT + 1);
    assert_eq!(
        warnings.last().unwrap(),
        "and 45 more unresolved template references"
    );
}
