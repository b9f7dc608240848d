//! `join: "any"`: a node that fires on the first incoming edge that fires,
//! and supersedes the work that only fed it — across pauses, reloads and
//! retries.

mod support;

use std::cell::Cell;
use std::rc::Rc;

use arcrun::core::error::EngineError;
use arcrun::core::plan::{plan_from_json, Directory, GraphLimits};
use arcrun::core::record::{RunStatus, WaitClosed};
use arcrun::core::redact::Redactor;
use arcrun::core::run::{CallOutcome, Noop};
use arcrun::core::segment::{Command, Reply};
use arcrun::core::stored::encode;
use arcrun::core::view::run_details;
use serde_json::{json, Value};
use support::gate::{Gate, OWNER};
use support::*;

/// `in` → `a` → `first` ← `b` ← `in`, then `first` → `out`: `first` takes
/// whichever of `a` and `b` comes first. Node indices: in 0, a 1, b 2,
/// first 3, out 4 — so `a`'s wait is `n1` and `b`'s `n2`.
fn race(a: &str, b: &str) -> Value {
    json!({
        "nodes": [
            {"id": "in", "type": "Input"},
            {"id": "a", "type": "Component", "componentId": a, "data": {"from": "a", "a_only": true}},
            {"id": "b", "type": "Component", "componentId": b, "data": {"from": "b", "b_only": true}},
            {"id": "first", "type": "Component", "componentId": "comp_passthrough", "join": "any"},
            {"id": "out", "type": "Output", "data": {"winner": "{{first.from}}"}}
        ],
        "edges": [
            {"from": "in", "to": "a"},
            {"from": "in", "to": "b"},
            {"from": "a", "to": "first"},
            {"from": "b", "to": "first"},
            {"from": "first", "to": "out"}
        ]
    })
}

fn callback(gate: &Gate, wait_id: &str, body: Value) -> Reply {
    gate.callback(wait_id, body)
        .expect("the callback is judged")
        .reply
}

fn closed_how(gate: &Gate, wait_id: &str) -> Option<WaitClosed> {
    gate.stored().record.closed.get(wait_id).map(|c| c.how)
}

fn count(run: &arcrun::core::run::Run, entry: &str) -> usize {
    trace(run).iter().filter(|t| *t == entry).count()
}

#[test]
fn both_branches_immediate_the_first_wins_alone() {
    let net = Network::echo_with_async();
    let run = run_graph(
        race("http://c/a", "http://c/b"),
        json!({"topic": "x"}),
        &net,
        &Clock::new(),
    );
    let out = output(&run);
    assert_eq!(out["winner"], json!("a"));
    assert_eq!(out["a_only"], json!(true));
    assert_eq!(
        out["topic"],
        json!("x"),
        "the trigger context flows through"
    );
    assert!(
        out.get("b_only").is_none(),
        "b's context never reached it: {out}"
    );
    assert_eq!(count(&run, "first:ok"), 1, "{:?}", trace(&run));
    assert!(trace(&run).contains(&"b:superseded".to_string()));
}

#[test]
fn a_call_in_flight_when_superseded_that_answers_pending_is_closed_as_superseded() {
    // `a` and `b` are called together; `a` answers first (in issue order),
    // so `b`'s pending answer arrives for a node already superseded.
    let gate = Gate::new(Network::echo_with_async());
    gate.start(race("http://c/a", "http://c/async"), json!({}));
    let run = gate.stored();
    assert_eq!(output(&run)["winner"], json!("a"));
    assert_eq!(closed_how(&gate, "n2"), Some(WaitClosed::Superseded));
    assert_eq!(run.record.closed["n2"].task_id, "t-b");
    assert_eq!(
        callback(&gate, "n2", json!({"task_id": "t-b", "success": true})),
        Reply::Noop(Noop::Superseded)
    );
}

#[test]
fn an_immediate_branch_beats_a_paused_one() {
    let gate = Gate::new(Network::echo_with_async());
    gate.start(race("http://c/async", "http://c/b"), json!({}));
    let run = gate.stored();
    assert_eq!(output(&run)["winner"], json!("b"));
    assert!(run.record.waits.is_empty(), "a's wait closed");
    assert_eq!(closed_how(&gate, "n1"), Some(WaitClosed::Superseded));
    assert_eq!(run.record.closed["n1"].task_id, "t-a");

    // a's daemon calls back anyway: told why nothing happens, then again.
    gate.forget();
    for _ in 0..2 {
        let late = callback(&gate, "n1", json!({"task_id": "t-a", "success": true}));
        assert_eq!(late, Reply::Noop(Noop::Superseded));
    }
    let run = gate.stored();
    assert_eq!(output(&run)["winner"], json!("b"), "nothing ran again");
    assert_eq!(count(&run, "first:ok"), 1);
}

#[test]
fn both_paused_the_first_callback_wins_and_the_other_is_superseded() {
    let gate = Gate::new(Network::echo_with_async());
    gate.start(race("http://c/async1", "http://c/async2"), json!({}));
    let run = gate.stored();
    assert!(matches!(run.record.status, RunStatus::Paused { .. }));
    assert_eq!(run.record.waits.len(), 2);

    // b's daemon is first; the run is read back from KV for each request.
    gate.forget();
    gate.clock.advance(1_000);
    let won = callback(
        &gate,
        "n2",
        json!({"task_id": "t-b", "success": true, "data": {"picked": "b"}}),
    );
    let Reply::Outcome { body, .. } = &won else {
        panic!("resumed: {won:?}");
    };
    assert_eq!(body["status"], json!("completed"), "{body}");
    let run = gate.stored();
    assert_eq!(output(&run)["data"], json!({"picked": "b"}));
    assert_eq!(closed_how(&gate, "n1"), Some(WaitClosed::Superseded));
    assert_eq!(closed_how(&gate, "n2"), Some(WaitClosed::Resumed));

    // a's callback, and its duplicate, are superseded; b's repeat is a repeat.
    gate.forget();
    gate.clock.advance(1_000);
    let a = json!({"task_id": "t-a", "success": true, "data": {"picked": "a"}});
    assert_eq!(
        callback(&gate, "n1", a.clone()),
        Reply::Noop(Noop::Superseded)
    );
    assert_eq!(callback(&gate, "n1", a), Reply::Noop(Noop::Superseded));
    assert_eq!(
        callback(&gate, "n2", json!({"task_id": "t-b", "success": true})),
        Reply::Noop(Noop::AlreadyResumed)
    );
    let run = gate.stored();
    assert_eq!(output(&run)["data"], json!({"picked": "b"}));
    assert_eq!(count(&run, "first:ok"), 1);
    assert_eq!(count(&run, "a:superseded"), 1, "{:?}", trace(&run));

    // Shown in the run's closed waits, stored as such, and read back.
    let details = run_details(&run.record, &Redactor::with_extra(Vec::<String>::new()));
    let closed = details["closed_waits"].as_array().expect("closed waits");
    let superseded: Vec<&Value> = closed
        .iter()
        .filter(|c| c["how"] == json!("superseded"))
        .collect();
    assert_eq!(superseded.len(), 1, "{details}");
    assert_eq!(superseded[0]["wait_id"], json!("n1"));
    assert_eq!(superseded[0]["node_id"], json!("a"));
    let text = encode(&mut run.clone(), usize::MAX, 0);
    assert!(text.contains(r#""how":"superseded""#), "{text}");
    assert!(text.contains(r#""join":"any""#), "{text}");
    assert_eq!(reload(&run).record, run.record);
}

#[test]
fn a_branch_that_also_leads_elsewhere_carries_on() {
    // `a` feeds `first` and `report`: it is not superseded when `b` wins,
    // and what it later delivers to `first` is ignored.
    let graph = json!({
        "nodes": [
            {"id": "in", "type": "Input"},
            {"id": "a", "type": "Component", "componentId": "http://c/async", "data": {"from": "a"}},
            {"id": "b", "type": "Component", "componentId": "http://c/b", "data": {"from": "b"}},
            {"id": "first", "type": "Component", "componentId": "comp_passthrough", "join": "any"},
            {"id": "out", "type": "Output", "data": {"winner": "{{first.from}}"}},
            {"id": "report", "type": "Output", "data": {"report": "{{a.data.r}}"}}
        ],
        "edges": [
            {"from": "in", "to": "a"},
            {"from": "in", "to": "b"},
            {"from": "a", "to": "first"},
            {"from": "b", "to": "first"},
            {"from": "first", "to": "out"},
            {"from": "a", "to": "report"}
        ]
    });
    let gate = Gate::new(Network::echo_with_async());
    gate.start(graph, json!({}));
    let run = gate.stored();
    assert!(matches!(run.record.status, RunStatus::Paused { .. }));
    assert!(run.record.waits.contains_key("n1"), "a still waits");
    assert_eq!(count(&run, "first:ok"), 1);

    gate.forget();
    let reply = callback(
        &gate,
        "n1",
        json!({"task_id": "t-a", "success": true, "data": {"r": 7}}),
    );
    assert!(matches!(reply, Reply::Outcome { .. }), "{reply:?}");
    let run = gate.stored();
    let out = output(&run);
    assert_eq!(out["out"]["winner"], json!("b"));
    assert_eq!(out["report"]["report"], json!(7));
    assert_eq!(count(&run, "first:ok"), 1, "{:?}", trace(&run));
    assert_eq!(closed_how(&gate, "n1"), Some(WaitClosed::Resumed));
}

#[test]
fn every_incoming_edge_skipped_skips_the_node_and_one_skipped_waits_for_the_other() {
    // Both edges are ON_FAIL from components that succeed: skipped.
    let skipped = json!({
        "nodes": [
            {"id": "in", "type": "Input"},
            {"id": "a", "type": "Component", "componentId": "http://c/a"},
            {"id": "b", "type": "Component", "componentId": "http://c/b"},
            {"id": "first", "type": "Component", "componentId": "comp_passthrough", "join": "any"},
            {"id": "out", "type": "Output"},
            {"id": "done", "type": "Output", "data": {"ok": true}}
        ],
        "edges": [
            {"from": "in", "to": "a"},
            {"from": "in", "to": "b"},
            {"from": "a", "to": "first", "type": "ON_FAIL"},
            {"from": "b", "to": "first", "type": "ON_FAIL"},
            {"from": "first", "to": "out"},
            {"from": "b", "to": "done"}
        ]
    });
    let net = Network::echo_with_async();
    let run = run_graph(skipped, json!({}), &net, &Clock::new());
    assert_eq!(output(&run)["ok"], json!(true));
    assert!(trace(&run).contains(&"first:skipped".to_string()));
    assert!(trace(&run).contains(&"out:skipped".to_string()));

    // One edge skipped at once, the other delivered after a pause: it fires.
    let one = json!({
        "nodes": [
            {"id": "in", "type": "Input"},
            {"id": "a", "type": "Component", "componentId": "http://c/a"},
            {"id": "b", "type": "Component", "componentId": "http://c/async", "data": {"from": "b"}},
            {"id": "first", "type": "Component", "componentId": "comp_passthrough", "join": "any"},
            {"id": "out", "type": "Output", "data": {"winner": "{{first.from}}"}}
        ],
        "edges": [
            {"from": "in", "to": "a"},
            {"from": "in", "to": "b"},
            {"from": "a", "to": "first", "type": "ON_FAIL"},
            {"from": "b", "to": "first"},
            {"from": "first", "to": "out"}
        ]
    });
    let gate = Gate::new(Network::echo_with_async());
    gate.start(one, json!({}));
    gate.forget();
    callback(
        &gate,
        "n2",
        json!({"task_id": "t-b", "success": true, "from": "b"}),
    );
    assert_eq!(output(&gate.stored())["winner"], json!("b"));
}

#[test]
fn queued_foreach_items_of_a_superseded_branch_never_start() {
    // `each` runs one item at a time; `fast` wins while item 0 waits.
    let graph = json!({
        "nodes": [
            {"id": "in", "type": "Input"},
            {"id": "fast", "type": "Component", "componentId": "http://c/async-fast", "data": {"from": "fast"}},
            {"id": "each", "type": "Component", "componentId": "http://c/async-each"},
            {"id": "first", "type": "Component", "componentId": "comp_passthrough", "join": "any"},
            {"id": "out", "type": "Output", "data": {"winner": "{{first.from}}"}}
        ],
        "edges": [
            {"from": "in", "to": "fast"},
            {"from": "in", "to": "each", "type": "FOREACH", "items": "things", "max_concurrency": 1},
            {"from": "fast", "to": "first"},
            {"from": "each", "to": "first"},
            {"from": "first", "to": "out"}
        ]
    });
    let gate = Gate::new(Network::echo_with_async());
    gate.start(graph, json!({"things": [1, 2, 3]}));
    assert_eq!(
        gate.net.hits("http://c/async-each"),
        1,
        "one item in flight"
    );
    assert!(gate.stored().record.waits.contains_key("n2-0"));

    gate.forget();
    callback(
        &gate,
        "n1",
        json!({"task_id": "t-fast", "success": true, "from": "fast"}),
    );
    let run = gate.stored();
    assert_eq!(output(&run)["winner"], json!("fast"));
    assert_eq!(
        gate.net.hits("http://c/async-each"),
        1,
        "items 1 and 2 never start"
    );
    assert_eq!(closed_how(&gate, "n2-0"), Some(WaitClosed::Superseded));
    assert_eq!(run.record.closed["n2-0"].item, Some(0));
    assert_eq!(
        callback(
            &gate,
            "n2-0",
            json!({"task_id": "t-each-0", "success": true})
        ),
        Reply::Noop(Noop::Superseded)
    );
    assert_eq!(count(&gate.stored(), "each:superseded"), 1);
}

#[test]
fn everything_that_only_fed_the_node_is_superseded_and_never_fires() {
    // b1 → b2 → first: when `a` wins while b1 waits, b2 never runs, even
    // after b1's callback.
    let graph = json!({
        "nodes": [
            {"id": "in", "type": "Input"},
            {"id": "a", "type": "Component", "componentId": "http://c/async-a"},
            {"id": "b1", "type": "Component", "componentId": "http://c/async-b"},
            {"id": "b2", "type": "Component", "componentId": "http://c/b2"},
            {"id": "first", "type": "Component", "componentId": "comp_passthrough", "join": "any"},
            {"id": "out", "type": "Output"}
        ],
        "edges": [
            {"from": "in", "to": "a"},
            {"from": "in", "to": "b1"},
            {"from": "b1", "to": "b2"},
            {"from": "a", "to": "first"},
            {"from": "b2", "to": "first"},
            {"from": "first", "to": "out"}
        ]
    });
    let gate = Gate::new(Network::echo_with_async());
    gate.start(graph, json!({}));
    callback(&gate, "n1", json!({"task_id": "t-a", "success": true}));
    assert_eq!(
        callback(&gate, "n2", json!({"task_id": "t-b1", "success": true})),
        Reply::Noop(Noop::Superseded)
    );
    let run = gate.stored();
    assert!(matches!(run.record.status, RunStatus::Completed { .. }));
    assert_eq!(gate.net.hits("http://c/b2"), 0);
    let t = trace(&run);
    assert!(t.contains(&"b1:superseded".to_string()), "{t:?}");
    assert!(t.contains(&"b2:superseded".to_string()), "{t:?}");
}

#[test]
fn join_is_validated_and_problems_name_it() {
    let problems = |graph: Value| -> Vec<String> {
        match plan_from_json(&graph, &Directory::default(), GraphLimits::default()) {
            Err(EngineError::InvalidGraph(p)) => p
                .into_iter()
                .map(|p| format!("{}: {}", p.at, p.message))
                .collect(),
            other => panic!("not refused: {other:?}"),
        }
    };
    let mut unknown = race("http://c/a", "http://c/b");
    unknown["nodes"][3]["join"] = json!("first");
    let got = problems(unknown);
    assert!(
        got.iter().any(|p| p.starts_with("nodes[3].join")),
        "{got:?}"
    );

    let mut not_a_string = race("http://c/a", "http://c/b");
    not_a_string["nodes"][3]["join"] = json!(2);
    let got = problems(not_a_string);
    assert!(
        got.iter().any(|p| p.starts_with("nodes[3].join")),
        "{got:?}"
    );

    // `any` on a node with one incoming edge: nothing to race.
    let mut single = race("http://c/a", "http://c/b");
    single["nodes"][4]["join"] = json!("any");
    let got = problems(single);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with("nodes[4].join") && got[0].contains("'out'"),
        "{got:?}"
    );

    // `all` is the default, allowed anywhere; absent or null too.
    let mut all = race("http://c/a", "http://c/b");
    all["nodes"][4]["join"] = json!("all");
    all["nodes"][3]["join"] = Value::Null;
    assert!(plan_from_json(&all, &Directory::default(), GraphLimits::default()).is_ok());
}

#[test]
fn a_retried_run_keeps_what_was_superseded_and_races_again() {
    // `c`, after `first`, fails on its first call only.
    let c_calls = Rc::new(Cell::new(0));
    let seen = Rc::clone(&c_calls);
    let net = Network::new(move |call| {
        if call.url == "http://c/c" {
            seen.set(seen.get() + 1);
            if seen.get() == 1 {
                return CallOutcome::Answered(json!({"success": false, "error": "flaky"}));
            }
            return CallOutcome::Answered(json!({"success": true, "c": "ok"}));
        }
        if call.url.starts_with("http://c/async") {
            let task = format!("t-{}", call.node_id);
            return CallOutcome::Answered(json!({"pending": true, "task_id": task}));
        }
        CallOutcome::Answered(Value::Object(call.input.clone()))
    });
    let graph = json!({
        "nodes": [
            {"id": "in", "type": "Input"},
            {"id": "a", "type": "Component", "componentId": "http://c/async-a", "data": {"from": "a"}},
            {"id": "b", "type": "Component", "componentId": "http://c/async-b", "data": {"from": "b"}},
            {"id": "first", "type": "Component", "componentId": "comp_passthrough", "join": "any"},
            {"id": "c", "type": "Component", "componentId": "http://c/c"},
            {"id": "out", "type": "Output", "data": {"winner": "{{first.from}}"}}
        ],
        "edges": [
            {"from": "in", "to": "a"},
            {"from": "in", "to": "b"},
            {"from": "a", "to": "first"},
            {"from": "b", "to": "first"},
            {"from": "first", "to": "c"},
            {"from": "c", "to": "out"}
        ]
    });
    let gate = Gate::new(net);
    gate.start(graph, json!({}));
    let failed = callback(
        &gate,
        "n2",
        json!({"task_id": "t-b", "success": true, "from": "b"}),
    );
    assert!(matches!(failed, Reply::Outcome { .. }), "{failed:?}");
    assert!(matches!(
        gate.stored().record.status,
        RunStatus::Failed { .. }
    ));
    assert_eq!(closed_how(&gate, "n1"), Some(WaitClosed::Superseded));

    gate.forget();
    gate.send(Command::Retry {
        run_id: "run-1".into(),
        owner: Some(OWNER.into()),
    })
    .expect("the retry runs");
    let run = gate.stored();
    assert_eq!(run.record.attempt, 1);
    assert_eq!(output(&run)["winner"], json!("b"));
    assert_eq!(output(&run)["c"], json!("ok"));
    assert_eq!(gate.net.hits("http://c/async-a"), 1, "a is not run again");
    assert_eq!(count(&run, "first:ok"), 1, "{:?}", trace(&run));
    assert_eq!(
        callback(&gate, "n1", json!({"task_id": "t-a", "success": true})),
        Reply::Noop(Noop::Superseded)
    );
}

#[test]
fn a_retry_after_a_branch_failed_races_both_branches_again() {
    // `b` fails on its first call, which fails the run while `a` waits.
    let b_calls = Rc::new(Cell::new(0));
    let seen = Rc::clone(&b_calls);
    let net = Network::new(move |call| {
        if call.node_id == "b" {
            seen.set(seen.get() + 1);
            if seen.get() == 1 {
                return CallOutcome::Answered(json!({"success": false, "error": "flaky"}));
            }
        }
        let task = format!("t-{}-{}", call.node_id, call.wait_id);
        CallOutcome::Answered(json!({"pending": true, "task_id": task}))
    });
    let gate = Gate::new(net);
    gate.start(race("http://c/async-a", "http://c/async-b"), json!({}));
    assert!(matches!(
        gate.stored().record.status,
        RunStatus::Failed { .. }
    ));

    gate.send(Command::Retry {
        run_id: "run-1".into(),
        owner: Some(OWNER.into()),
    })
    .expect("the retry runs");
    let run = gate.stored();
    let mut open: Vec<&String> = run.record.waits.keys().collect();
    open.sort();
    assert_eq!(open, ["n1r1", "n2r1"], "both branches race again");

    gate.forget();
    callback(
        &gate,
        "n1r1",
        json!({"task_id": "t-a-n1r1", "success": true, "data": {"w": "a"}}),
    );
    let run = gate.stored();
    assert_eq!(output(&run)["data"], json!({"w": "a"}));
    assert_eq!(closed_how(&gate, "n2r1"), Some(WaitClosed::Superseded));
    assert_eq!(
        callback(
            &gate,
            "n2r1",
            json!({"task_id": "t-b-n2r1", "success": true})
        ),
        Reply::Noop(Noop::Superseded)
    );
}

#[test]
fn a_timeout_that_fires_the_node_supersedes_the_waits_due_with_it() {
    // Both branches wait with the same deadline and route their timeouts
    // into `first`: the first timeout taken fires it, and the other wait,
    // due at the same moment, is superseded rather than timed out.
    let graph = json!({
        "nodes": [
            {"id": "in", "type": "Input"},
            {"id": "a", "type": "Component", "componentId": "http://c/async-a", "wait_timeout_seconds": 5},
            {"id": "b", "type": "Component", "componentId": "http://c/async-b", "wait_timeout_seconds": 5},
            {"id": "first", "type": "Component", "componentId": "comp_passthrough", "join": "any"},
            {"id": "out", "type": "Output", "data": {"why": "{{a.error.code}}"}}
        ],
        "edges": [
            {"from": "in", "to": "a"},
            {"from": "in", "to": "b"},
            {"from": "a", "to": "first", "type": "ON_FAIL"},
            {"from": "b", "to": "first", "type": "ON_FAIL"},
            {"from": "first", "to": "out"}
        ]
    });
    let net = Network::echo_with_async();
    let clock = Clock::new();
    let mut run = run_graph(graph, json!({}), &net, &clock);
    assert_eq!(run.record.waits.len(), 2);
    clock.advance(5_000);
    assert_eq!(
        run.expire(clock.now()),
        Ok(1),
        "one timed out, one superseded"
    );
    continue_run(&mut run, &net, &clock);
    assert_eq!(output(&run)["why"], json!("wait_timeout"));
    assert_eq!(run.record.closed["n1"].how, WaitClosed::TimedOut);
    assert_eq!(run.record.closed["n2"].how, WaitClosed::Superseded);
    assert_eq!(count(&run, "first:ok"), 1, "{:?}", trace(&run));
}

#[test]
fn a_superseded_sub_workflow_child_is_cancelled() {
    // `a` starts a child run that pauses; `b` waits on a daemon. `b`'s
    // callback fires `first`, which supersedes `a`'s wait on its child: the
    // child is asked to cancel (nothing would take its result).
    let net = Network::new(|call| {
        if call.url.starts_with("workflow://") {
            let child = "child-of-a".to_string();
            return CallOutcome::Answered(
                json!({"pending": true, "task_id": child, "subflow_run_id": child}),
            );
        }
        if call.url.starts_with("http://c/async") {
            return CallOutcome::Answered(json!({"pending": true, "task_id": "t-b"}));
        }
        CallOutcome::Answered(Value::Object(call.input.clone()))
    });
    let gate = Gate::new(net);
    gate.start(race("workflow://kid", "http://c/async-b"), json!({}));
    assert!(gate.net.cancelled.borrow().is_empty());
    gate.callback(
        "n2",
        json!({"task_id": "t-b", "success": true, "data": {"from": "b"}}),
    )
    .expect("resumed");
    let run = gate.stored();
    assert!(
        matches!(run.record.status, RunStatus::Completed { .. }),
        "{:?}",
        run.record.status
    );
    assert_eq!(run.record.closed["n1"].how, WaitClosed::Superseded);
    assert_eq!(
        *gate.net.cancelled.borrow(),
        vec![("child-of-a".to_string(), Some(OWNER.to_string()))]
    );
}

#[test]
fn a_call_still_queued_when_its_branch_is_superseded_is_dropped_with_it() {
    // One call a segment: `a` is called, `b`'s call waits for the next
    // segment; `a` answers at once and wins. The run completes in that
    // segment, with nothing left queued (before, `b`'s key stayed queued and
    // the run yielded for a segment that did nothing).
    let net = Network::echo_with_async();
    let clock = Clock::new();
    let settings = arcrun::core::run::Settings {
        max_calls_per_segment: 1,
        ..settings()
    };
    let mut run = arcrun::core::run::Run::start(
        plan(race("http://c/a", "http://c/b")),
        "run-1".into(),
        Default::default(),
        clock.now(),
        settings,
    );
    let segments = continue_run(&mut run, &net, &clock);
    assert_eq!(segments, 1, "no continuation");
    assert_eq!(output(&run)["winner"], json!("a"));
    assert_eq!(run.calls_due(), 0);
    assert_eq!(net.hits("http://c/b"), 0, "b is never called");
    assert_eq!(count(&run, "b:superseded"), 1);
}
