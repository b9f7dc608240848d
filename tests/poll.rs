//! Polling status URLs on the run's own timers: `poll_task` nodes, and
//! pending answers that name a `status_url` beside their callback.

mod support;

use std::cell::Cell;
use std::rc::Rc;

use arcrun::core::error::EngineError;
use arcrun::core::plan::{plan_from_json, Directory, GraphLimits};
use arcrun::core::protocol::CallFailure;
use arcrun::core::record::{RunStatus, WaitClosed};
use arcrun::core::run::{CallOutcome, Noop};
use arcrun::core::segment::Reply;
use serde_json::{json, Value};
use support::gate::{Gate, T0};
use support::Network;

/// A status URL that answers each poll from `answers` in turn (the last repeats),
/// and echoes every other call.
fn network(answers: Vec<CallOutcome>) -> (Network, Rc<Cell<usize>>) {
    let polls = Rc::new(Cell::new(0));
    let seen = Rc::clone(&polls);
    let net = Network::new(move |call| {
        if call.poll.is_some() {
            let n = seen.get();
            seen.set(n + 1);
            return answers[n.min(answers.len() - 1)].clone();
        }
        if call.url.ends_with("/async") {
            return CallOutcome::Answered(json!({
                "pending": true, "task_id": "t1",
                "status_url": "http://c/status/t1", "poll_interval_seconds": 3
            }));
        }
        CallOutcome::Answered(Value::Object(call.input.clone()))
    });
    (net, polls)
}

fn answer(body: Value) -> CallOutcome {
    CallOutcome::Answered(body)
}

fn poll_graph(extra: Value) -> Value {
    let mut data = json!({"url": "http://c/status/{{job}}", "interval_seconds": 2, "headers": {"authorization": "Bearer s3cret"}});
    data.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    json!({
        "nodes": [
            {"id": "in", "type": "Input"},
            {"id": "poll", "type": "Component", "componentId": "poll_task", "data": data},
            {"id": "after", "type": "Component", "componentId": "http://c/after", "data": {"got": "{{poll.result}}"}},
            {"id": "failed", "type": "Output", "data": {"why": "{{poll.error}}"}}
        ],
        "edges": [
            {"from": "in", "to": "poll"},
            {"from": "poll", "to": "after", "type": "ON_SUCCESS"},
            {"from": "poll", "to": "failed", "type": "ON_FAIL"}
        ]
    })
}

/// Fires alarms until the run no longer wakes; returns the times they fired at.
fn run_alarms(gate: &Gate, mut wake: Option<u64>) -> Vec<u64> {
    let mut fired = Vec::new();
    while let Some(t) = wake {
        assert!(fired.len() < 50, "the run never settles");
        gate.clock.set(t);
        fired.push(t - T0);
        gate.forget();
        wake = gate.wake().wake;
    }
    fired
}

#[test]
fn polls_until_done_then_runs_downstream_once() {
    let (net, polls) = network(vec![
        answer(json!({"status": "running"})),
        answer(json!({"status": "running", "progress": 0.5})),
        answer(json!({"status": "Done", "result": 42})),
    ]);
    let gate = Gate::new(net);
    let started = gate.start(poll_graph(json!({})), json!({"job": "j-7"}));
    assert_eq!(polls.get(), 1, "the first poll is at once");
    let run = gate.stored();
    assert!(matches!(run.record.status, RunStatus::Paused { .. }));
    let wait = run.record.waits.values().next().unwrap();
    let poll = wait.poll.as_ref().unwrap();
    assert_eq!((poll.attempts, poll.next_at), (1, T0 + 2_000));
    assert_eq!(started.wake, Some(T0 + 2_000));
    let Reply::Outcome { body, .. } = &started.reply else {
        panic!("outcome expected");
    };
    assert_eq!(
        body["waits"][0]["poll"]["url"],
        json!("http://c/status/j-7")
    );
    assert_ne!(
        body["waits"][0]["poll"]["headers"]["authorization"],
        json!("Bearer s3cret"),
        "credentials in poll headers are redacted when shown"
    );

    let fired = run_alarms(&gate, started.wake);
    assert_eq!(fired, vec![2_000, 4_000], "one poll per alarm invocation");
    assert_eq!(polls.get(), 3);
    assert_eq!(gate.net.hits("http://c/after"), 1);
    let sent = gate.net.calls.borrow();
    let first_poll = sent.iter().find(|c| c.poll.is_some()).unwrap();
    assert_eq!(
        first_poll.poll.as_ref().unwrap().headers["authorization"],
        "Bearer s3cret",
        "the status URL gets the real header"
    );
    let after = sent.iter().find(|c| c.url == "http://c/after").unwrap();
    assert_eq!(after.input["got"], json!(42));
    drop(sent);
    let run = gate.stored();
    assert!(matches!(run.record.status, RunStatus::Completed { .. }));
    assert_eq!(run.record.closed["n1"].how, WaitClosed::Polled);
}

#[test]
fn a_failed_status_takes_on_fail() {
    let (net, _) = network(vec![answer(json!({"status": "failed", "reason": "quota"}))]);
    let gate = Gate::new(net);
    gate.start(poll_graph(json!({})), json!({"job": "j"}));
    let run = gate.stored();
    let RunStatus::Completed { output, .. } = &run.record.status else {
        panic!(
            "expected completed via ON_FAIL, got {:?}",
            run.record.status
        );
    };
    assert!(output["why"].as_str().unwrap().contains("failed"));
    assert_eq!(gate.net.hits("http://c/after"), 0);
}

#[test]
fn custom_conditions_decide_done_and_failed() {
    let (net, polls) = network(vec![
        answer(json!({"state": "queued"})),
        answer(json!({"state": "ready", "result": 1})),
    ]);
    let gate = Gate::new(net);
    let started = gate.start(
        poll_graph(json!({"done_when": "state === 'ready'", "failed_when": "state === 'broken'"})),
        json!({"job": "j"}),
    );
    run_alarms(&gate, started.wake);
    assert_eq!(polls.get(), 2);
    assert_eq!(gate.net.hits("http://c/after"), 1);
}

#[test]
fn a_job_that_never_finishes_times_out() {
    let (net, polls) = network(vec![answer(json!({"status": "running"}))]);
    let gate = Gate::new(net);
    let started = gate.start(
        poll_graph(json!({"timeout_seconds": 7})),
        json!({"job": "j"}),
    );
    let fired = run_alarms(&gate, started.wake);
    assert_eq!(fired, vec![2_000, 4_000, 6_000, 7_000]);
    assert_eq!(polls.get(), 4);
    let run = gate.stored();
    let RunStatus::Completed { output, .. } = &run.record.status else {
        panic!("expected the ON_FAIL path, got {:?}", run.record.status);
    };
    assert!(output["why"]["message"]
        .as_str()
        .unwrap()
        .contains("deadline"));
    assert_eq!(run.record.closed["n1"].how, WaitClosed::TimedOut);
}

#[test]
fn a_status_url_that_keeps_failing_fails_the_poll_task() {
    let (net, polls) = network(vec![CallOutcome::Failed {
        status: Some(503),
        error: "component answered HTTP 503".into(),
        code: Some(CallFailure::HttpStatus),
    }]);
    let gate = Gate::new(net);
    let started = gate.start(poll_graph(json!({})), json!({"job": "j"}));
    run_alarms(&gate, started.wake);
    assert_eq!(polls.get(), 3);
    let run = gate.stored();
    let RunStatus::Completed { output, .. } = &run.record.status else {
        panic!("expected the ON_FAIL path, got {:?}", run.record.status);
    };
    assert!(output["why"].as_str().unwrap().contains("3 times"));
}

#[test]
fn a_bad_poll_spec_fails_the_node_and_bad_conditions_the_graph() {
    let (net, polls) = network(vec![answer(json!({}))]);
    let gate = Gate::new(net);
    gate.start(
        poll_graph(json!({"url": "ftp://nope", "interval_seconds": 0})),
        json!({}),
    );
    assert_eq!(polls.get(), 0);
    let run = gate.stored();
    let RunStatus::Completed { output, .. } = &run.record.status else {
        panic!("expected the ON_FAIL path, got {:?}", run.record.status);
    };
    assert!(output["why"].as_str().unwrap().contains("data.url"));

    let bad = plan_from_json(
        &poll_graph(json!({"done_when": "status ==="})),
        &Directory::default(),
        GraphLimits::default(),
    );
    let Err(EngineError::InvalidGraph(problems)) = bad else {
        panic!("expected invalid_graph");
    };
    assert!(problems.iter().any(|p| p.at == "nodes[1].data.done_when"));
}

fn callback_or_poll_graph() -> Value {
    json!({
        "nodes": [
            {"id": "in", "type": "Input"},
            {"id": "slow", "type": "Component", "componentId": "http://c/async"},
            {"id": "after", "type": "Component", "componentId": "http://c/after", "data": {"v": "{{slow.v}}"}}
        ],
        "edges": [{"from": "in", "to": "slow"}, {"from": "slow", "to": "after"}]
    })
}

#[test]
fn a_status_url_poll_can_resume_before_the_callback() {
    let (net, polls) = network(vec![
        answer(json!({"status": "running"})),
        answer(json!({"status": "succeeded", "v": "from poll"})),
    ]);
    let gate = Gate::new(net);
    let started = gate.start(callback_or_poll_graph(), json!({}));
    assert_eq!(
        polls.get(),
        0,
        "polling starts one interval after the pause"
    );
    assert_eq!(started.wake, Some(T0 + 3_000));
    run_alarms(&gate, started.wake);
    assert_eq!(polls.get(), 2);
    assert_eq!(gate.net.hits("http://c/after"), 1);
    let late = gate
        .callback("n1", json!({"task_id": "t1", "v": "from callback"}))
        .unwrap();
    assert_eq!(late.reply, Reply::Noop(Noop::AlreadyResumed));
    assert_eq!(gate.net.hits("http://c/after"), 1);
    let after = gate.net.calls.borrow();
    let after = after.iter().find(|c| c.url == "http://c/after").unwrap();
    assert_eq!(after.input["v"], json!("from poll"));
}

#[test]
fn a_callback_before_the_poll_ends_the_polling() {
    let (net, polls) = network(vec![answer(json!({"status": "running"}))]);
    let gate = Gate::new(net);
    gate.start(callback_or_poll_graph(), json!({}));
    gate.clock.advance(1_000);
    let resumed = gate
        .callback("n1", json!({"task_id": "t1", "v": "from callback"}))
        .unwrap();
    assert!(matches!(resumed.reply, Reply::Outcome { .. }));
    assert_eq!(resumed.wake, None, "no poll left to make");
    assert_eq!(polls.get(), 0);
    assert_eq!(gate.net.hits("http://c/after"), 1);
}

#[test]
fn a_failing_status_url_stops_polling_but_the_callback_still_counts() {
    let (net, polls) = network(vec![CallOutcome::Failed {
        status: None,
        error: "refused".into(),
        code: Some(CallFailure::ConnectionFailed),
    }]);
    let gate = Gate::new(net);
    let mut wake = gate.start(callback_or_poll_graph(), json!({})).wake;
    for _ in 0..3 {
        gate.clock.set(wake.unwrap());
        wake = gate.wake().wake;
    }
    assert_eq!(polls.get(), 3);
    assert_eq!(
        wake,
        Some(T0 + 24 * 3600 * 1000),
        "only the deadline is left"
    );
    assert!(gate.stored().record.waits["n1"].poll.is_none());
    let resumed = gate
        .callback("n1", json!({"task_id": "t1", "v": "late but fine"}))
        .unwrap();
    assert!(matches!(resumed.reply, Reply::Outcome { .. }));
    assert_eq!(gate.net.hits("http://c/after"), 1);
}
