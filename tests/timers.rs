//! Time in the engine, through the segment logic the gate runs, with a
//! manual clock and an in-memory store that can fail: wait deadlines, cancel,
//! yield and continuation past the call budget, records stored `running`,
//! version-1 records, and a Worker dying between driving a run and saving it.

mod support;

use std::collections::BTreeMap;

use arcrun::core::effect::Effect;
use arcrun::core::error::EngineError;
use arcrun::core::plan::Directory;
use arcrun::core::record::{RunStatus, WaitClosed};
use arcrun::core::run::{CallOutcome, Noop, Run, Settings};
use arcrun::core::segment::{
    record_ttl, Command, Reply, DEADLINE_GRACE_SECS, MAX_TTL_SECS, RUNNING_TTL_SECS,
};
use arcrun::core::stored::decode;
use serde_json::{json, Map, Value};
use support::gate::{Gate, OWNER, T0};
use support::Network;

fn wait_graph(timeout: Option<u64>, on_fail: bool) -> Value {
    let mut slow = json!({"id": "slow", "type": "Component", "componentId": "http://c/async"});
    if let Some(t) = timeout {
        slow["wait_timeout_seconds"] = json!(t);
    }
    let mut nodes = vec![
        json!({"id": "in", "type": "Input"}),
        slow,
        json!({"id": "out", "type": "Output", "data": {"answer": "{{slow.data.answer}}"}}),
    ];
    let mut edges = vec![
        json!({"from": "in", "to": "slow"}),
        json!({"from": "slow", "to": "out", "type": "ON_SUCCESS"}),
    ];
    if on_fail {
        nodes.push(
            json!({"id": "fallback", "type": "Component", "componentId": "http://c/fallback",
                          "data": {"why": "{{slow.error.code}}"}}),
        );
        edges.push(json!({"from": "slow", "to": "fallback", "type": "ON_FAIL"}));
    }
    json!({"nodes": nodes, "edges": edges})
}

fn only_wait(run: &Run) -> (String, String, u64) {
    let w = run.record.waits.values().next().expect("an open wait");
    (w.wait_id.clone(), w.task_id.clone(), w.expires_at)
}

#[test]
fn a_pause_asks_to_wake_at_its_deadline() {
    let plan = support::plan(wait_graph(Some(2), false));
    let mut run = Run::start(plan, "r".into(), Map::new(), T0, Settings::default());
    run.begin_segment(None);
    let effects = run.step(T0);
    let [Effect::Call(call)] = effects.as_slice() else {
        panic!("one call expected, got {effects:?}");
    };
    assert_eq!(call.expires_at, T0 + 2_000);
    assert_eq!(call.wait_id, "n1");
    assert_eq!(call.idempotency_key, "r.n1");
    assert_eq!(call.segment, 1);
    run.complete_call(
        call.key,
        CallOutcome::Answered(json!({"pending": true, "task_id": "t1"})),
        T0 + 5,
    );
    assert_eq!(run.step(T0 + 5), vec![Effect::WakeAt(T0 + 2_000)]);
    assert!(matches!(run.status(), RunStatus::Paused { .. }));
}

#[test]
fn a_spent_budget_yields_and_a_fresh_segment_goes_on() {
    let settings = Settings {
        max_calls_per_segment: 1,
        ..Settings::default()
    };
    let plan = support::plan(support::chain(2, "http://c/step"));
    let mut run = Run::start(plan, "r".into(), Map::new(), T0, settings);
    run.begin_segment(None);
    let first = run.step(T0);
    let [Effect::Call(call)] = first.as_slice() else {
        panic!("one call expected, got {first:?}");
    };
    run.complete_call(call.key, CallOutcome::Answered(json!({"a": 1})), T0 + 1);
    assert_eq!(run.step(T0 + 1), vec![Effect::Yield]);
    assert_eq!(run.status(), &RunStatus::Running);
    assert_eq!(run.next_wake(T0 + 1), Some(T0 + 1));
    assert_eq!(run.calls_due(), 1);
    // Stored and loaded in between, as the alarm's invocation would.
    let mut run = support::reload(&run);
    run.begin_segment(None);
    let second = run.step(T0 + 2);
    let [Effect::Call(call)] = second.as_slice() else {
        panic!("the due call is issued, got {second:?}");
    };
    assert_eq!((call.node_id.as_str(), call.segment), ("n1", 2));
    assert_eq!(
        call.input["a"],
        json!(1),
        "the context carried across the yield"
    );
    run.complete_call(call.key, CallOutcome::Answered(json!({})), T0 + 3);
    assert_eq!(run.step(T0 + 3), vec![]);
    assert!(matches!(run.status(), RunStatus::Completed { .. }));
}

#[test]
fn a_deadline_takes_the_fail_path_with_no_request() {
    let gate = Gate::new(Network::echo_with_async());
    let started = gate.start(wait_graph(Some(2), true), json!({}));
    assert_eq!(started.wake, Some(T0 + 2_000));
    let paused = gate.stored();
    assert_eq!(
        record_ttl(&paused, &gate.config, T0),
        2 + DEADLINE_GRACE_SECS,
        "the record outlives its deadline"
    );

    // Early alarm (or a stale one): nothing due, nothing read or written.
    gate.clock.set(T0 + 1_000);
    let ops = gate.store.ops.get();
    let early = gate.wake();
    assert_eq!(early.reply, Reply::Idle);
    assert_eq!(early.wake, Some(T0 + 2_000));
    assert_eq!(
        gate.store.ops.get(),
        ops,
        "an alarm with nothing due costs nothing"
    );

    gate.clock.set(T0 + 2_000);
    let saves = gate.saves();
    let woke = gate.wake();
    assert_eq!(woke.wake, None, "finished: no alarm left");
    assert_eq!(
        gate.saves(),
        saves + 1,
        "one write for the deadline segment"
    );
    let run = gate.stored();
    let RunStatus::Completed { output, .. } = &run.record.status else {
        panic!("expected completed, got {:?}", run.record.status);
    };
    assert_eq!(output["why"], json!("wait_timeout"));
    assert_eq!(gate.net.hits("http://c/fallback"), 1);
    let slow = run.record.trace.iter().rev().find(|t| t.node_id == "slow");
    assert!(slow.unwrap().error.as_deref().unwrap().contains("deadline"));
    assert_eq!(run.record.closed["n1"].how, WaitClosed::TimedOut);
}

#[test]
fn an_unrouted_deadline_fails_the_run_and_late_callbacks_change_nothing() {
    let gate = Gate::new(Network::echo_with_async());
    gate.start(wait_graph(Some(3), false), json!({}));
    let (wait_id, task_id, expires_at) = only_wait(&gate.stored());
    gate.clock.set(expires_at);
    gate.wake();
    let run = gate.stored();
    let RunStatus::Failed { error, .. } = &run.record.status else {
        panic!("expected failed, got {:?}", run.record.status);
    };
    assert_eq!(error.code, "wait_timeout");
    assert_eq!(error.node_id.as_deref(), Some("slow"));

    let before = gate.store.record("run-1");
    let saves = gate.saves();
    let late = gate
        .callback(&wait_id, json!({"task_id": task_id, "data": {"answer": 1}}))
        .unwrap();
    assert_eq!(late.reply, Reply::Noop(Noop::Expired));
    assert_eq!(gate.store.record("run-1"), before);
    assert_eq!(gate.saves(), saves);
}

#[test]
fn a_callback_after_the_deadline_but_before_the_alarm_is_expired() {
    let gate = Gate::new(Network::echo_with_async());
    gate.start(wait_graph(Some(2), true), json!({}));
    let (wait_id, task_id, expires_at) = only_wait(&gate.stored());
    gate.clock.set(expires_at + 10);
    let late = gate
        .callback(&wait_id, json!({"task_id": task_id, "data": {"answer": 1}}))
        .unwrap();
    // The deadline is taken first: the timeout path runs, the callback does not apply.
    assert_eq!(late.reply, Reply::Noop(Noop::Expired));
    assert_eq!(gate.net.hits("http://c/fallback"), 1);
    assert!(matches!(
        gate.stored().record.status,
        RunStatus::Completed { .. }
    ));
}

#[test]
fn deadlines_apply_per_foreach_item() {
    let net = Network::new(|call| {
        let item = call.input["item"].as_i64().unwrap();
        CallOutcome::Answered(json!({"pending": true, "task_id": format!("t{item}")}))
    });
    let gate = Gate::new(net);
    let graph = json!({
        "nodes": [
            {"id": "in", "type": "Input"},
            {"id": "each", "type": "Component", "componentId": "http://c/each", "wait_timeout_seconds": 5},
            {"id": "out", "type": "Output"},
            {"id": "partial", "type": "Output", "data": {"failed": "{{each.failed}}"}}
        ],
        "edges": [
            {"from": "in", "to": "each", "type": "FOREACH", "items": "list"},
            {"from": "each", "to": "out"},
            {"from": "each", "to": "partial", "type": "ON_FAIL"}
        ]
    });
    gate.start(graph, json!({"list": [0, 1, 2]}));
    assert_eq!(gate.stored().record.waits.len(), 3);
    gate.clock.advance(1_000);
    gate.callback("n1-1", json!({"task_id": "t1", "data": {"ok": 1}}))
        .unwrap();
    gate.clock.advance(4_000);
    gate.wake();
    let run = gate.stored();
    let RunStatus::Completed { output, .. } = &run.record.status else {
        panic!("expected completed, got {:?}", run.record.status);
    };
    assert_eq!(
        output["failed"],
        json!(2),
        "two items timed out, one answered"
    );
    let timed_out: Vec<_> = run
        .record
        .closed
        .iter()
        .filter(|(_, c)| c.how == WaitClosed::TimedOut)
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(timed_out, vec!["n1-0", "n1-2"]);
}

#[test]
fn cancel_closes_waits_and_refuses_finished_runs() {
    let gate = Gate::new(Network::echo_with_async());
    gate.start(wait_graph(None, false), json!({}));
    let (wait_id, task_id, _) = only_wait(&gate.stored());

    let other = gate.send(Command::Cancel {
        run_id: "run-1".into(),
        owner: Some("owner-b".into()),
    });
    assert!(matches!(other, Err(EngineError::NotFound(_))));

    let saves = gate.saves();
    let cancelled = gate
        .send(Command::Cancel {
            run_id: "run-1".into(),
            owner: Some(OWNER.into()),
        })
        .unwrap();
    assert_eq!(gate.saves(), saves + 1, "one write for the cancel");
    assert_eq!(cancelled.wake, None);
    let Reply::Details(details) = &cancelled.reply else {
        panic!("details expected");
    };
    assert_eq!(details["status"], json!("cancelled"));
    assert_eq!(details["waits"], json!([]));
    let run = gate.stored();
    assert!(matches!(run.record.status, RunStatus::Cancelled { .. }));
    assert_eq!(run.record.closed[&wait_id].how, WaitClosed::Cancelled);

    let late = gate
        .callback(&wait_id, json!({"task_id": task_id}))
        .unwrap();
    assert_eq!(late.reply, Reply::Noop(Noop::RunFinished));
    let again = gate.send(Command::Cancel {
        run_id: "run-1".into(),
        owner: Some(OWNER.into()),
    });
    assert!(matches!(
        again,
        Err(EngineError::RunFinished {
            status: "cancelled"
        })
    ));
    let missing = gate.send(Command::Cancel {
        run_id: "nope".into(),
        owner: Some(OWNER.into()),
    });
    assert!(matches!(missing, Err(EngineError::NotFound(_))));
}

fn budget(calls: usize) -> Settings {
    Settings {
        max_calls_per_segment: calls,
        ..Settings::default()
    }
}

/// Drives alarms until the run no longer asks to wake now; returns how many.
fn continue_until_settled(gate: &Gate, mut wake: Option<u64>) -> usize {
    let mut alarms = 0;
    while wake == Some(gate.clock.0.get()) {
        alarms += 1;
        assert!(alarms < 100, "the run never settled");
        gate.forget();
        wake = gate.wake().wake;
    }
    alarms
}

/// Component calls per segment, from the segment number each call carried.
fn calls_per_segment(net: &Network) -> BTreeMap<u64, usize> {
    let mut per = BTreeMap::new();
    for call in net.calls.borrow().iter() {
        *per.entry(call.segment).or_default() += 1;
    }
    per
}

#[test]
fn a_long_chain_yields_and_continues_within_the_budget() {
    let gate = Gate::with(Network::echo_with_async(), budget(5), Directory::default());
    let graph = support::chain(12, "http://c/step");
    let started = gate.start(graph, json!({"v": 1}));
    let Reply::Outcome { running, body } = &started.reply else {
        panic!("outcome expected");
    };
    assert!(running);
    assert_eq!(body["status"], json!("running"));
    assert_eq!(started.wake, Some(T0), "continue at once");
    let stored = gate.stored();
    assert_eq!(stored.record.status, RunStatus::Running);
    assert_eq!(gate.store.ttl("run-1"), Some(RUNNING_TTL_SECS));
    let saves = gate.saves();
    let alarms = continue_until_settled(&gate, started.wake);
    assert_eq!(alarms, 2, "12 calls at 5 per invocation: 3 segments");
    assert_eq!(gate.saves(), saves + alarms as u32, "one write per segment");
    assert!(matches!(
        gate.stored().record.status,
        RunStatus::Completed { .. }
    ));
    assert_eq!(gate.net.calls.borrow().len(), 12, "every node called once");
    let per = calls_per_segment(&gate.net);
    assert_eq!(per.values().copied().collect::<Vec<_>>(), vec![5, 5, 2]);
}

#[test]
fn foreach_items_count_toward_the_budget() {
    let gate = Gate::with(Network::echo_with_async(), budget(5), Directory::default());
    let graph = json!({
        "nodes": [
            {"id": "in", "type": "Input"},
            {"id": "each", "type": "Component", "componentId": "http://c/item", "data": {"n": "{{item}}"}},
            {"id": "out", "type": "Output", "data": {"count": "{{each.count}}", "results": "{{each.results}}"}}
        ],
        "edges": [
            {"from": "in", "to": "each", "type": "FOREACH", "items": "list"},
            {"from": "each", "to": "out"}
        ]
    });
    let list: Vec<u32> = (0..30).collect();
    let started = gate.start(graph, json!({"list": list}));
    continue_until_settled(&gate, started.wake);
    let run = gate.stored();
    let RunStatus::Completed { output, .. } = &run.record.status else {
        panic!("expected completed, got {:?}", run.record.status);
    };
    assert_eq!(output["count"], json!(30));
    let ns: Vec<Value> = output["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["n"].clone())
        .collect();
    assert_eq!(ns, list.iter().map(|n| json!(n)).collect::<Vec<_>>());
    let per = calls_per_segment(&gate.net);
    assert_eq!(per.len(), 6);
    assert!(per.values().all(|&n| n <= 5));
    let mut keys: Vec<String> = gate
        .net
        .calls
        .borrow()
        .iter()
        .map(|c| c.idempotency_key.clone())
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(
        keys.len(),
        30,
        "every item called once, each with its own key"
    );
}

#[test]
fn a_callback_between_continuations_is_applied() {
    // Three pending items, then a chain: the run yields while items wait.
    let net = Network::new(|call| {
        if call.url.ends_with("/each") {
            let item = call.input["item"].as_i64().unwrap();
            return CallOutcome::Answered(json!({"pending": true, "task_id": format!("t{item}")}));
        }
        CallOutcome::Answered(Value::Object(call.input.clone()))
    });
    let gate = Gate::with(net, budget(2), Directory::default());
    let graph = json!({
        "nodes": [
            {"id": "in", "type": "Input"},
            {"id": "each", "type": "Component", "componentId": "http://c/each"},
            {"id": "a", "type": "Component", "componentId": "http://c/a"},
            {"id": "b", "type": "Component", "componentId": "http://c/b"},
            {"id": "out", "type": "Output", "data": {"n": "{{each.count}}"}}
        ],
        "edges": [
            {"from": "in", "to": "each", "type": "FOREACH", "items": "list"},
            {"from": "in", "to": "a"}, {"from": "a", "to": "b"},
            {"from": "each", "to": "out"}, {"from": "b", "to": "out"}
        ]
    });
    let started = gate.start(graph, json!({"list": [0, 1, 2]}));
    assert_eq!(started.wake, Some(T0));
    // Item 0 was called in the first segment; its callback arrives before the alarm.
    let run = gate.stored();
    let open: Vec<String> = run.record.waits.keys().cloned().collect();
    assert!(!open.is_empty());
    for wait_id in &open {
        let task = run.record.waits[wait_id].task_id.clone();
        let r = gate.callback(wait_id, json!({"task_id": task})).unwrap();
        assert!(matches!(r.reply, Reply::Outcome { .. }));
    }
    let mut wake = Some(gate.clock.0.get());
    for _ in 0..20 {
        wake = gate.wake().wake;
        let run = gate.stored();
        for (wait_id, w) in run.record.waits.clone() {
            gate.callback(&wait_id, json!({"task_id": w.task_id}))
                .unwrap();
        }
        if gate.stored().record.status.is_finished() {
            break;
        }
    }
    let _ = wake;
    let run = gate.stored();
    assert!(
        matches!(run.record.status, RunStatus::Completed { .. }),
        "{:?}",
        run.record.status
    );
    for url in ["http://c/a", "http://c/b"] {
        assert_eq!(gate.net.hits(url), 1);
    }
    assert_eq!(gate.net.hits("http://c/each"), 3);
}

#[test]
fn a_worker_dying_before_the_save_repeats_no_answered_call() {
    let gate = Gate::new(Network::echo_with_async());
    let graph = json!({
        "nodes": [
            {"id": "in", "type": "Input"},
            {"id": "slow", "type": "Component", "componentId": "http://c/async"},
            {"id": "down1", "type": "Component", "componentId": "http://c/down1"},
            {"id": "down2", "type": "Component", "componentId": "http://c/down2"},
            {"id": "out", "type": "Output"}
        ],
        "edges": [
            {"from": "in", "to": "slow"}, {"from": "slow", "to": "down1"},
            {"from": "down1", "to": "down2"}, {"from": "down2", "to": "out"}
        ]
    });
    gate.start(graph, json!({}));
    let paused = gate.store.record("run-1");
    let (wait_id, task_id, _) = only_wait(&gate.stored());

    gate.store.fail_saves.set(1);
    let died = gate.callback(&wait_id, json!({"task_id": task_id}));
    assert!(matches!(died, Err(EngineError::Storage(_))));
    assert_eq!(
        gate.store.record("run-1"),
        paused,
        "KV still holds the pause"
    );
    assert_eq!(gate.net.hits("http://c/down1"), 1);
    assert_eq!(
        gate.store.journal.borrow().len(),
        2,
        "both answers journaled"
    );

    // The daemon retries; the segment runs again from the stored pause.
    let retried = gate
        .callback(&wait_id, json!({"task_id": task_id}))
        .unwrap();
    assert!(matches!(retried.reply, Reply::Outcome { .. }));
    assert_eq!(
        gate.net.hits("http://c/down1"),
        1,
        "replayed, not called again"
    );
    assert_eq!(gate.net.hits("http://c/down2"), 1);
    assert!(matches!(
        gate.stored().record.status,
        RunStatus::Completed { .. }
    ));
    assert!(
        gate.store.journal.borrow().is_empty(),
        "the journal is spent"
    );
    let again = gate
        .callback(&wait_id, json!({"task_id": task_id}))
        .unwrap();
    assert_eq!(again.reply, Reply::Noop(Noop::AlreadyResumed));
}

#[test]
fn a_record_stored_running_continues_in_a_fresh_gate() {
    let gate = Gate::with(Network::echo_with_async(), budget(3), Directory::default());
    gate.start(support::chain(4, "http://c/step"), json!({}));
    assert_eq!(gate.stored().record.status, RunStatus::Running);
    // A different object instance (restart): only KV is left.
    let fresh = Gate::with(Network::echo_with_async(), budget(3), Directory::default());
    fresh.store.put_record(
        "run-1",
        gate.store.record("run-1").expect("stored while running"),
    );
    let woke = fresh.wake();
    assert_eq!(woke.wake, None);
    assert!(matches!(
        fresh.stored().record.status,
        RunStatus::Completed { .. }
    ));
    assert_eq!(gate.net.calls.borrow().len(), 3);
    assert_eq!(
        fresh.net.calls.borrow().len(),
        1,
        "only the call not yet made"
    );
}

#[test]
fn a_record_stored_mid_call_issues_the_call_again_with_the_same_key() {
    let plan = support::plan(wait_graph(None, false));
    let mut run = Run::start(plan, "r".into(), Map::new(), T0, Settings::default());
    run.begin_segment(None);
    let first = run.step(T0);
    let key = first[0].as_call().unwrap().idempotency_key.clone();
    // Stored with the call in flight (as a crash mid-segment would leave it).
    let mut reloaded = support::reload(&run);
    reloaded.begin_segment(None);
    let again = reloaded.step(T0 + 50);
    let call = again[0].as_call().expect("the call is issued again");
    assert_eq!(call.idempotency_key, key);
    assert_eq!(call.wait_id, "n1");
}

#[test]
fn components_stay_pinned_to_their_urls_when_the_directory_changes() {
    let named = |url: &str| Directory::new(BTreeMap::from([("svc".to_string(), url.to_string())]));
    let gate = Gate::with(Network::echo_with_async(), budget(1), named("http://c/old"));
    let graph = json!({
        "nodes": [
            {"id": "in", "type": "Input"},
            {"id": "a", "type": "Component", "componentId": "svc"},
            {"id": "b", "type": "Component", "componentId": "svc"},
            {"id": "out", "type": "Output"}
        ],
        "edges": [{"from": "in", "to": "a"}, {"from": "a", "to": "b"}, {"from": "b", "to": "out"}]
    });
    let started = gate.start(graph, json!({}));
    assert_eq!(started.wake, Some(T0));
    assert_eq!(gate.net.hits("http://c/old"), 1);
    // The deployment now names another URL for `svc`, or none at all; the
    // run goes on (from KV, in a fresh gate) with the URL it started with.
    for directory in [named("http://c/new"), Directory::default()] {
        let moved = Gate::with(Network::echo_with_async(), budget(1), directory);
        moved
            .store
            .put_record("run-1", gate.store.record("run-1").unwrap());
        moved.clock.set(gate.clock.0.get());
        let mut wake = moved.wake().wake;
        while wake.is_some() {
            wake = moved.wake().wake;
        }
        assert!(matches!(
            moved.stored().record.status,
            RunStatus::Completed { .. }
        ));
        assert_eq!(
            moved.net.hits("http://c/old"),
            1,
            "b called at its pinned URL"
        );
        assert_eq!(moved.net.hits("http://c/new"), 0);
    }
}

fn v1_fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/v1/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn v1_directory() -> Directory {
    Directory::new(BTreeMap::from([
        ("daemon_task".to_string(), "http://c/daemon".to_string()),
        ("after_component".to_string(), "http://c/after".to_string()),
    ]))
}

#[test]
fn a_paused_version_1_record_resumes_and_is_stored_as_the_current_version() {
    let gate = Gate::with(
        Network::echo_with_async(),
        Settings::default(),
        v1_directory(),
    );
    let text = v1_fixture("paused-chain.json");
    let record: Value = serde_json::from_str(&text).unwrap();
    let run_id = record["run_id"].as_str().unwrap();
    gate.store.put_record(run_id, text.clone());
    gate.clock.set(1_790_000_100_000);
    let resumed = gate
        .send(Command::Callback {
            run_id: run_id.into(),
            wait_id: "w1".into(),
            body: json!({"task_id": "task-slow", "success": true, "data": {"answer": 42}}),
            base_url: "https://engine.test".into(),
            token_expires_at: None,
        })
        .unwrap();
    let Reply::Outcome { body, .. } = resumed.reply else {
        panic!("outcome expected");
    };
    // The daemon is answered briefly; the output is in the stored record.
    assert_eq!(body["status"], json!("completed"));
    assert_eq!(body["resumed"], json!(true));
    assert_eq!(body["task_id"], json!("task-slow"));
    assert_eq!(body.get("data"), None);
    assert_eq!(gate.net.hits("http://c/after"), 1);
    let stored: Value = serde_json::from_str(&gate.store.record(run_id).unwrap()).unwrap();
    let output = &stored["status"]["completed"]["output"];
    assert_eq!(output["answer"], json!(42), "{stored}");
    assert_eq!(output["prepared"], json!("migrations"));
    assert_eq!(
        stored["version"],
        json!(arcrun::core::stored::CURRENT_VERSION)
    );
    assert!(stored["revision"].is_u64(), "{stored}");
    assert_eq!(stored["closed"]["w1"]["how"], json!("resumed"));
}

#[test]
fn a_version_1_foreach_with_a_waiting_join_resumes_item_by_item() {
    let text = v1_fixture("paused-foreach-join.json");
    let mut run = decode(&text, &v1_directory(), Settings::default()).unwrap();
    assert_eq!(run.record.waits.len(), 3);
    // Its deadlines are a century away; KV's TTL (32-bit seconds) is capped.
    let config = Gate::new(Network::echo_with_async()).config;
    assert_eq!(record_ttl(&run, &config, T0), MAX_TTL_SECS);
    let net = Network::echo_with_async();
    let clock = support::Clock::new();
    clock.0.set(1_790_000_100_000);
    for (i, wait_id) in ["w3", "w1", "w2"].iter().enumerate() {
        run = support::reload(&run);
        let task = run.record.waits[*wait_id].task_id.clone();
        run.resume(
            wait_id,
            json!({"task_id": task, "data": {"v": i}}),
            None,
            clock.now(),
        )
        .unwrap()
        .unwrap();
        support::continue_run(&mut run, &net, &clock);
    }
    let out = support::output(&run);
    assert_eq!(out["count"], json!(3));
    assert_eq!(out["side"], json!("side"));
    assert_eq!(net.calls.borrow().len(), 0, "nothing was called twice");
}

#[test]
fn records_that_do_not_fit_their_graph_are_corrupt_not_panics() {
    let text = v1_fixture("paused-chain.json");
    let dir = v1_directory();
    let good: Value = serde_json::from_str(&text).unwrap();
    let mut cases: Vec<Value> = Vec::new();
    let mut c = good.clone();
    c["nodes"].as_array_mut().unwrap().pop();
    cases.push(c);
    let mut c = good.clone();
    c["nodes"][2] = json!({"mapping": 7});
    cases.push(c);
    let mut c = good.clone();
    c["waits"]["w1"]["node_id"] = json!("ghost");
    cases.push(c);
    let mut c = good.clone();
    c["nodes"][2] = json!("idle");
    cases.push(c);
    let mut c = good.clone();
    c["version"] = json!(99);
    cases.push(c);
    let mut c = good.clone();
    c["graph"]["nodes"][3]["componentId"] = json!("unknown_component");
    cases.push(c);
    // Version 3: a mapping whose item waits on a wait that is not open.
    let plan = support::plan(json!({
        "nodes": [{"id": "in", "type": "Input"}, {"id": "each", "type": "Component", "componentId": "http://c/async"}],
        "edges": [{"from": "in", "to": "each", "type": "FOREACH", "items": "list"}]
    }));
    let mut run = Run::start(
        plan,
        "r".into(),
        json!({"list": [1, 2]}).as_object().unwrap().clone(),
        T0,
        Settings::default(),
    );
    support::continue_run(
        &mut run,
        &Network::echo_with_async(),
        &support::Clock::new(),
    );
    let v3: Value =
        serde_json::from_str(&arcrun::core::stored::encode(&mut run, usize::MAX, T0)).unwrap();
    assert!(decode(&v3.to_string(), &dir, Settings::default()).is_ok());
    let mut c = v3.clone();
    c["waits"] = json!({});
    cases.push(c);
    let mut c = v3.clone();
    c["nodes"][1]["mapping"]["items"][0] = json!({"paused": {"wait_id": "n9"}});
    cases.push(c);
    for (i, case) in cases.iter().enumerate() {
        match decode(&case.to_string(), &dir, Settings::default()) {
            Err(EngineError::CorruptRecord(_)) => {}
            other => panic!(
                "case {i}: expected corrupt_record, got {:?}",
                other.map(|r| r.record.status)
            ),
        }
    }
    assert!(matches!(
        decode("{not json", &dir, Settings::default()),
        Err(EngineError::CorruptRecord(_))
    ));
}

#[test]
fn a_users_own_results_key_reaches_foreach_items() {
    let net = Network::echo_with_async();
    let clock = support::Clock::new();
    let graph = json!({
        "nodes": [
            {"id": "in", "type": "Input"},
            {"id": "each", "type": "Component", "componentId": "http://c/each"},
            {"id": "again", "type": "Component", "componentId": "http://c/again"},
            {"id": "out", "type": "Output"}
        ],
        "edges": [
            {"from": "in", "to": "each", "type": "FOREACH", "items": "list"},
            {"from": "each", "to": "again", "type": "FOREACH", "items": "list"},
            {"from": "again", "to": "out"}
        ]
    });
    let run = support::run_graph(
        graph,
        json!({"results": "mine", "list": [1, 2]}),
        &net,
        &clock,
    );
    assert!(matches!(run.status(), RunStatus::Completed { .. }));
    let calls = net.calls.borrow();
    for call in calls.iter().filter(|c| c.url.ends_with("/each")) {
        assert_eq!(call.input["results"], json!("mine"));
    }
    // Downstream of a FOREACH, `results` is that node's results: left out of items.
    for call in calls.iter().filter(|c| c.url.ends_with("/again")) {
        assert!(call.input.get("results").is_none(), "{:?}", call.input);
    }
}

/// Found by fuzzing: a run failed while another node still waited was stored
/// pointing at a wait it had dropped, and never loaded again.
#[test]
fn a_run_failed_beside_an_open_wait_stores_and_loads() {
    let parallel = json!({
        "nodes": [
            {"id": "a", "type": "Component", "componentId": "http://c/async-a", "wait_timeout_seconds": 5},
            {"id": "b", "type": "Component", "componentId": "http://c/async-b"}
        ],
        "edges": []
    });
    // By a callback that reports failure.
    let gate = Gate::new(Network::echo_with_async());
    gate.start(parallel.clone(), json!({}));
    let failed = gate
        .callback("n1", json!({"task_id": "t-b", "success": false}))
        .unwrap();
    assert!(matches!(failed.reply, Reply::Outcome { .. }));
    assert!(matches!(
        gate.stored().record.status,
        RunStatus::Failed { .. }
    ));
    // By a deadline.
    let gate = Gate::new(Network::echo_with_async());
    gate.start(parallel, json!({}));
    gate.clock.advance(5_000);
    gate.wake();
    let run = gate.stored();
    let RunStatus::Failed { error, .. } = &run.record.status else {
        panic!("expected failed, got {:?}", run.record.status);
    };
    assert_eq!(error.code, "wait_timeout");
    assert_eq!(run.record.updated_at, T0 + 5_000);
    // By a call whose input fails to render as it is issued.
    let tight = Settings {
        max_template_bytes: 16,
        max_calls_per_segment: 2,
        ..Settings::default()
    };
    let gate = Gate::with(Network::echo_with_async(), tight, Directory::default());
    gate.start(
        json!({
            "nodes": [
                {"id": "a", "type": "Component", "componentId": "http://c/async-a"},
                {"id": "x", "type": "Component", "componentId": "http://c/x"},
                {"id": "b", "type": "Component", "componentId": "http://c/b", "data": {"v": "{{big}}-{{big}}"}}
            ],
            "edges": [{"from": "x", "to": "b"}]
        }),
        json!({"big": "0123456789abcdef"}),
    );
    // The budget (2) went to `a` and `x`: `b` is issued in the next invocation.
    assert_eq!(gate.stored().record.status, RunStatus::Running);
    gate.forget();
    gate.wake();
    assert!(matches!(
        gate.stored().record.status,
        RunStatus::Failed { .. }
    ));
}

#[test]
fn every_segment_reports_what_ran() {
    use arcrun::core::segment::Report;
    let report = |kind, status, calls| Report {
        kind,
        status: Some(status),
        calls,
    };
    let gate = Gate::with(Network::echo_with_async(), budget(2), Directory::default());
    let started = gate.start(support::chain(3, "http://c/step"), json!({}));
    assert_eq!(started.report, report("trigger", "running", 2));
    assert_eq!(gate.wake().report, report("continuation", "completed", 1));

    let gate = Gate::new(Network::echo_with_async());
    gate.start(wait_graph(Some(2), false), json!({}));
    assert_eq!(gate.wake().report, report("idle", "paused", 0));
    gate.clock.advance(2_000);
    assert_eq!(gate.wake().report, report("deadline", "failed", 0));

    let gate = Gate::new(Network::echo_with_async());
    gate.start(wait_graph(None, false), json!({}));
    let cancelled = gate
        .send(Command::Cancel {
            run_id: "run-1".into(),
            owner: Some(OWNER.into()),
        })
        .unwrap();
    assert_eq!(cancelled.report, report("cancel", "cancelled", 0));
}
