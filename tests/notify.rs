//! The final callback to the caller: due once the run finishes, sent in an
//! invocation of its own after the record is saved, signed per Standard
//! Webhooks, retried on the schedule, and shown with every attempt.

mod support;

use arcrun::core::error::EngineError;
use arcrun::core::protocol::CallFailure;
use arcrun::core::record::DeliveryState;
use arcrun::core::run::DeliveryOutcome;
use arcrun::core::segment::{record_ttl, Command, Reply};
use arcrun::core::webhook::signature;
use serde_json::{json, Value};
use support::gate::{Gate, Start, OWNER, T0};
use support::Network;

const RECEIVER: &str = "https://receiver.test/hooks?token=abc";

fn start_notifying(gate: &Gate, graph: Value) -> Option<u64> {
    let start = Start {
        final_callback_url: Some(RECEIVER.into()),
        ..Start::default()
    };
    gate.start_with(graph, start).expect("the run starts").wake
}

fn quick_graph() -> Value {
    json!({
        "name": "quick",
        "nodes": [{"id": "in", "type": "Input"}, {"id": "out", "type": "Output", "data": {"api_key": "sk-1", "n": 1}}],
        "edges": [{"from": "in", "to": "out"}]
    })
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} header"))
}

fn answer(status: u16) -> DeliveryOutcome {
    DeliveryOutcome::Answered {
        status,
        duration_ms: 3,
    }
}

#[test]
fn a_finished_run_delivers_once_after_its_save_signed_and_redacted() {
    let gate = Gate::new(Network::echo_with_async());
    let wake = start_notifying(&gate, quick_graph());
    assert_eq!(wake, Some(T0), "due at once, in an invocation of its own");
    assert!(
        gate.notifier.sent.borrow().is_empty(),
        "the trigger's answer is not held up"
    );
    let saves = gate.saves();
    let woke = gate.wake();
    assert_eq!(woke.wake, None, "delivered: nothing more to do");
    assert_eq!(
        (woke.report.kind, woke.report.status, woke.report.calls),
        ("delivery", Some("completed"), 1)
    );
    assert_eq!(gate.saves(), saves + 1, "one write records the delivery");

    let sent = gate.notifier.sent.borrow();
    let (url, headers, body) = &sent[0];
    assert_eq!(url, RECEIVER);
    let id = header(headers, "webhook-id");
    assert_eq!(id, "msg_run-1_completed");
    let ts: u64 = header(headers, "webhook-timestamp").parse().unwrap();
    assert_eq!(ts, T0 / 1000);
    assert_eq!(
        header(headers, "webhook-signature"),
        signature(&gate.config.webhook_keys, id, ts, body)
    );
    let event: Value = serde_json::from_str(body).unwrap();
    assert_eq!(event["type"], json!("run.completed"));
    assert_eq!(event["run_id"], json!("run-1"));
    assert_eq!(event["workflow"], json!("quick"));
    assert_eq!(event["status"], json!("completed"));
    assert_eq!(event["data"]["n"], json!(1));
    assert_ne!(
        event["data"]["api_key"],
        json!("sk-1"),
        "redacted like any response"
    );
    assert_eq!(event["finished_at"], json!(T0));

    let run = gate.stored();
    let callback = run.record.final_callback.as_ref().unwrap();
    assert_eq!(callback.state, DeliveryState::Delivered { at: T0 });
    assert_eq!(callback.attempts.len(), 1);
    assert_eq!(callback.attempts[0].status, Some(200));
}

#[test]
fn failures_are_retried_on_the_schedule_until_delivered() {
    let gate = Gate::new(Network::echo_with_async());
    gate.notifier.answers.borrow_mut().extend([
        answer(500),
        DeliveryOutcome::Failed {
            error: "connection refused".into(),
            code: Some(CallFailure::ConnectionFailed),
            duration_ms: 1,
        },
        answer(204),
    ]);
    let mut wake = start_notifying(&gate, quick_graph());
    let mut at = Vec::new();
    while let Some(t) = wake {
        gate.clock.set(t);
        gate.forget();
        at.push(t - T0);
        wake = gate.wake().wake;
    }
    assert_eq!(
        at,
        vec![0, 1_000, 6_000],
        "at once, then 1 s, then 5 s more"
    );
    let run = gate.stored();
    let callback = run.record.final_callback.as_ref().unwrap();
    let statuses: Vec<_> = callback.attempts.iter().map(|a| a.status).collect();
    assert_eq!(statuses, vec![Some(500), None, Some(204)]);
    assert_eq!(
        callback.attempts[1].error.as_deref(),
        Some("connection refused")
    );
    let ids: Vec<String> = gate
        .notifier
        .sent
        .borrow()
        .iter()
        .map(|(_, h, _)| header(h, "webhook-id").to_string())
        .collect();
    assert!(ids.iter().all(|id| id == &ids[0]), "one id for every retry");
}

#[test]
fn gone_stops_and_the_window_gives_up() {
    let gate = Gate::new(Network::echo_with_async());
    gate.notifier.answers.borrow_mut().push_back(answer(410));
    start_notifying(&gate, quick_graph());
    assert_eq!(gate.wake().wake, None);
    assert!(matches!(
        gate.stored().record.final_callback.unwrap().state,
        DeliveryState::Refused { .. }
    ));

    let mut gate = Gate::new(Network::echo_with_async());
    gate.config.delivery_window_ms = 10_000;
    gate.notifier
        .answers
        .borrow_mut()
        .extend((0..10).map(|_| answer(503)));
    let mut wake = start_notifying(&gate, quick_graph());
    let mut attempts = 0;
    while let Some(t) = wake {
        gate.clock.set(t);
        attempts += 1;
        wake = gate.wake().wake;
    }
    assert_eq!(
        attempts, 3,
        "at 0, 1 s and 6 s; the next (36 s) is past the window"
    );
    assert!(matches!(
        gate.stored().record.final_callback.unwrap().state,
        DeliveryState::GaveUp { .. }
    ));
}

#[test]
fn cancelled_and_timed_out_runs_are_told_too() {
    let gate = Gate::new(Network::echo_with_async());
    let waiting = json!({
        "nodes": [{"id": "slow", "type": "Component", "componentId": "http://c/async", "wait_timeout_seconds": 5}],
        "edges": []
    });
    assert_eq!(start_notifying(&gate, waiting.clone()), Some(T0 + 5_000));
    gate.send(Command::Cancel {
        run_id: "run-1".into(),
        owner: Some(OWNER.into()),
    })
    .unwrap();
    gate.wake();
    let body = gate.notifier.sent.borrow()[0].2.clone();
    let event: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(event["type"], json!("run.cancelled"));

    let gate = Gate::new(Network::echo_with_async());
    start_notifying(&gate, waiting);
    gate.clock.set(T0 + 5_000);
    let after_deadline = gate.wake();
    assert_eq!(after_deadline.wake, Some(T0 + 5_000), "then the delivery");
    assert!(gate.notifier.sent.borrow().is_empty());
    gate.wake();
    let sent = gate.notifier.sent.borrow();
    let event: Value = serde_json::from_str(&sent[0].2).unwrap();
    assert_eq!(event["type"], json!("run.failed"));
    assert_eq!(event["error"]["code"], json!("wait_timeout"));
    assert_eq!(header(&sent[0].1, "webhook-id"), "msg_run-1_failed");
}

#[test]
fn redeliver_sends_again_as_a_new_round() {
    let gate = Gate::new(Network::echo_with_async());
    let redeliver = |owner: &str| {
        gate.send(Command::Redeliver {
            run_id: "run-1".into(),
            owner: Some(owner.into()),
        })
    };
    start_notifying(&gate, quick_graph());
    gate.wake();
    assert!(matches!(
        redeliver("someone-else"),
        Err(EngineError::NotFound(_))
    ));
    gate.clock.advance(60_000);
    let accepted = redeliver(OWNER).unwrap();
    let Reply::Accepted(details) = &accepted.reply else {
        panic!("accepted expected, got {:?}", accepted.reply);
    };
    assert_eq!(details["final_callback"]["state"], json!("retrying"));
    assert_eq!(
        details["final_callback"]["url"],
        json!("https://receiver.test/hooks"),
        "the query, where a token may sit, is not shown"
    );
    assert_eq!(accepted.wake, Some(T0 + 60_000));
    gate.wake();
    assert_eq!(gate.notifier.sent.borrow().len(), 2);
    let run = gate.stored();
    let callback = run.record.final_callback.as_ref().unwrap();
    assert_eq!(callback.attempts.len(), 2);
    assert_eq!(callback.state, DeliveryState::Delivered { at: T0 + 60_000 });
}

#[test]
fn redeliver_needs_a_finished_run_with_a_receiver() {
    let gate = Gate::new(Network::echo_with_async());
    start_notifying(
        &gate,
        json!({"nodes": [{"id": "slow", "type": "Component", "componentId": "http://c/async"}], "edges": []}),
    );
    let early = gate.send(Command::Redeliver {
        run_id: "run-1".into(),
        owner: Some(OWNER.into()),
    });
    assert!(matches!(
        early,
        Err(EngineError::RunNotFinished { status: "paused" })
    ));

    let gate = Gate::new(Network::echo_with_async());
    gate.start(quick_graph(), json!({}));
    let none = gate.send(Command::Redeliver {
        run_id: "run-1".into(),
        owner: Some(OWNER.into()),
    });
    assert!(matches!(none, Err(EngineError::InvalidRequest(_))));
    assert!(gate.notifier.sent.borrow().is_empty());
}

#[test]
fn a_finished_record_is_kept_while_its_callback_may_be_retried() {
    let mut gate = Gate::new(Network::echo_with_async());
    gate.config.retention_secs = 60;
    gate.notifier.answers.borrow_mut().push_back(answer(500));
    start_notifying(&gate, quick_graph());
    gate.wake();
    let run = gate.stored();
    // The next attempt is 1 s away, well inside the retention: the grace period holds it.
    assert!(record_ttl(&run, &gate.config, gate.clock.0.get()) >= 3600);
}
