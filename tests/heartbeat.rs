//! Heartbeats move a wait's deadline and report progress; everything that
//! reaches a wait is recorded on it, whether it was taken or turned away.

mod support;

use arcrun::core::error::EngineError;
use arcrun::core::record::{EventKind, EventOutcome, RunStatus};
use arcrun::core::run::Noop;
use arcrun::core::segment::{read, Command, Host, Reply, View};
use futures::executor::block_on;
use serde_json::{json, Value};
use support::gate::{Gate, OWNER, T0};
use support::Network;

fn slow_graph(timeout: u64) -> Value {
    json!({
        "nodes": [
            {"id": "slow", "type": "Component", "componentId": "http://c/async", "wait_timeout_seconds": timeout},
            {"id": "after", "type": "Component", "componentId": "http://c/after"}
        ],
        "edges": [{"from": "slow", "to": "after", "type": "ON_SUCCESS"}]
    })
}

fn heartbeat(gate: &Gate, body: Value, signed: u64) -> Result<Reply, EngineError> {
    gate.send(Command::Heartbeat {
        run_id: "run-1".into(),
        wait_id: "n0".into(),
        body,
        token_expires_at: Some(signed),
    })
    .map(|s| s.reply)
}

fn callback(gate: &Gate, body: Value, signed: u64) -> Result<Reply, EngineError> {
    gate.send(Command::Callback {
        run_id: "run-1".into(),
        wait_id: "n0".into(),
        body,
        base_url: "https://engine.test".into(),
        token_expires_at: Some(signed),
    })
    .map(|s| s.reply)
}

/// The deadline a heartbeat answered, checking the URLs it answered with:
/// the ones the daemon holds, good until `signed`.
fn deadline(reply: Reply, signed: u64) -> u64 {
    let Reply::Heartbeat {
        expires_at,
        callback_url,
        heartbeat_url,
    } = reply
    else {
        panic!("a heartbeat answer expected, got {reply:?}");
    };
    let callback_url = callback_url.expect("a callback URL");
    assert!(
        callback_url.starts_with("https://engine.test/callbacks/run-1/n0?token=")
            && callback_url.contains(&format!("token={signed}.")),
        "{callback_url}"
    );
    assert_eq!(
        heartbeat_url.as_deref(),
        Some(callback_url.replace("n0?", "n0/heartbeat?").as_str())
    );
    expires_at
}

/// When the URLs handed to a component called at `T0` stop being good.
fn first_url_expiry(gate: &Gate) -> u64 {
    let settings = gate.config.settings;
    T0 + settings.max_wait_ms + settings.call_timeout_ms
}

/// `GET /runs/{id}` as the gate answers it from the store.
fn shown(gate: &Gate) -> Value {
    let host = Host {
        store: &gate.store,
        components: &gate.net,
        clock: &gate.clock,
        notifier: &gate.notifier,
        config: &gate.config,
    };
    let view = View {
        owner: Some(OWNER),
        node: None,
        active: false,
    };
    block_on(read(&host, "run-1", &view)).unwrap().0
}

#[test]
fn a_heartbeat_extends_a_deadline_that_would_have_fired() {
    let gate = Gate::new(Network::echo_with_async());
    gate.start(slow_graph(10), json!({}));
    // The daemon keeps the URLs it was handed with the task throughout.
    let signed = first_url_expiry(&gate);
    gate.clock.set(T0 + 8_000);
    let beat = heartbeat(
        &gate,
        json!({"progress": {"pct": 40}, "extend_seconds": 20}),
        signed,
    )
    .unwrap();
    let extended = deadline(beat, signed);
    assert_eq!(extended, T0 + 28_000);
    // The first deadline passes: nothing happens, the alarm now waits for the new one.
    gate.clock.set(T0 + 10_000);
    assert_eq!(gate.wake().wake, Some(T0 + 28_000));
    assert!(matches!(
        gate.stored().record.status,
        RunStatus::Paused { .. }
    ));
    let view = shown(&gate);
    assert_eq!(view["waits"][0]["progress"], json!({"pct": 40}));
    assert_eq!(view["waits"][0]["expires_at"], json!(T0 + 28_000));

    // Past the first deadline, heartbeats by the first URL keep working, and
    // so does the result posted to it.
    gate.clock.set(T0 + 25_000);
    let again = heartbeat(&gate, json!({"extend_seconds": 10}), signed).unwrap();
    assert_eq!(deadline(again, signed), T0 + 35_000);
    gate.clock.set(T0 + 33_000);
    let resumed = callback(&gate, json!({"task_id": "t-slow", "data": 1}), signed).unwrap();
    assert!(matches!(resumed, Reply::Outcome { .. }), "{resumed:?}");
    assert_eq!(gate.net.hits("http://c/after"), 1);
    let events = &gate.stored().record.closed["n0"].events;
    let kinds: Vec<_> = events.iter().map(|e| (e.kind, e.outcome)).collect();
    assert_eq!(
        kinds,
        vec![
            (EventKind::Heartbeat, EventOutcome::Accepted),
            (EventKind::Heartbeat, EventOutcome::Accepted),
            (EventKind::Callback, EventOutcome::Accepted)
        ]
    );
}

#[test]
fn a_callback_past_the_current_deadline_is_expired_though_its_url_is_good() {
    let gate = Gate::new(Network::echo_with_async());
    gate.start(slow_graph(10), json!({}));
    let signed = first_url_expiry(&gate);
    gate.clock.set(T0 + 10_000);
    let late = callback(&gate, json!({"task_id": "t-slow"}), signed).unwrap();
    assert_eq!(late, Reply::Noop(Noop::Expired));
    assert_eq!(gate.net.hits("http://c/after"), 0);
}

#[test]
fn extensions_are_capped_and_never_shorten() {
    let gate = Gate::new(Network::echo_with_async());
    gate.start(slow_graph(60), json!({}));
    let signed = first_url_expiry(&gate);
    let short = heartbeat(&gate, json!({"extend_seconds": 5}), signed).unwrap();
    assert_eq!(deadline(short, signed), T0 + 60_000, "never earlier");
    // Never past the URL it came by: the wait does not outlive the URL.
    let older = T0 + 90_000;
    let by_old_url = heartbeat(&gate, json!({"extend_seconds": 600}), older).unwrap();
    assert_eq!(deadline(by_old_url, older), T0 + 90_000);
    let huge = heartbeat(&gate, json!({"extend_seconds": 100_000_000}), signed).unwrap();
    assert_eq!(
        deadline(huge, signed),
        T0 + gate.config.settings.max_wait_ms,
        "at most MAX_WAIT_SECONDS from when the wait began"
    );
    for bad in [
        json!({"extend_seconds": 0}),
        json!({"extend_seconds": "5"}),
        json!({"extend_seconds": 1.5}),
    ] {
        assert!(matches!(
            heartbeat(&gate, bad, signed),
            Err(EngineError::InvalidRequest(_))
        ));
    }
    assert!(matches!(
        heartbeat(&gate, json!({"task_id": "other"}), signed),
        Err(EngineError::TaskMismatch { .. })
    ));
}

#[test]
fn turned_away_callbacks_are_recorded_without_a_kv_write() {
    let gate = Gate::new(Network::echo_with_async());
    gate.start(slow_graph(10), json!({}));
    let signed = T0 + 10_000;
    gate.clock.advance(1);
    let mismatch = callback(&gate, json!({"task_id": "someone-else"}), signed);
    assert!(matches!(mismatch, Err(EngineError::TaskMismatch { .. })));
    gate.clock.advance(1);
    callback(&gate, json!({"task_id": "t-slow"}), signed).unwrap();
    gate.clock.advance(1);
    let saves = gate.saves();
    let before = gate.store.record("run-1");
    let again = callback(&gate, json!({"task_id": "t-slow"}), signed).unwrap();
    assert_eq!(again, Reply::Noop(Noop::AlreadyResumed));
    gate.clock.advance(1);
    let beat = heartbeat(&gate, json!({}), signed).unwrap();
    assert_eq!(beat, Reply::Noop(Noop::AlreadyResumed));
    assert_eq!(gate.saves(), saves, "no KV write for what changed nothing");
    assert_eq!(gate.store.record("run-1"), before);

    let view = shown(&gate);
    let closed = &view["closed_waits"][0];
    assert_eq!(closed["wait_id"], json!("n0"));
    let events: Vec<(String, String)> = closed["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        events,
        [
            ("callback", "task_mismatch"),
            ("callback", "accepted"),
            ("callback", "duplicate"),
            ("heartbeat", "duplicate")
        ]
        .map(|(k, o)| (k.to_string(), o.to_string()))
    );
}

#[test]
fn events_are_bounded_per_wait() {
    let gate = Gate::new(Network::echo_with_async());
    gate.start(slow_graph(100), json!({}));
    for i in 0..30 {
        gate.clock.set(T0 + i);
        heartbeat(&gate, json!({"progress": i}), T0 + 100_000).unwrap();
    }
    let run = gate.stored();
    let events = &run.record.waits["n0"].events;
    assert_eq!(events.len(), 20);
    assert_eq!(events[0].at, T0 + 10, "the most recent are kept");
}

fn two_waits_in_a_row() -> Value {
    json!({
        "nodes": [
            {"id": "first", "type": "Component", "componentId": "http://c/async-1"},
            {"id": "second", "type": "Component", "componentId": "http://c/async-2"}
        ],
        "edges": [{"from": "first", "to": "second"}]
    })
}

fn early_callback(gate: &Gate, body: Value) -> Reply {
    gate.send(Command::Callback {
        run_id: "run-1".into(),
        wait_id: "n1".into(),
        body,
        base_url: "https://engine.test".into(),
        token_expires_at: None,
    })
    .unwrap()
    .reply
}

/// A callback whose wait has not opened — its call was made by a segment a
/// crash lost, so the run will make it again (its answer from the journal) —
/// is held, answered accepted, and applied the moment the wait opens.
#[test]
fn a_callback_before_its_wait_opened_is_held_until_it_opens() {
    let gate = Gate::new(Network::echo_with_async());
    gate.start(two_waits_in_a_row(), json!({}));
    gate.clock.advance(1);
    let Reply::Accepted(body) = early_callback(&gate, json!({"task_id": "t-second", "data": 7}))
    else {
        panic!("held, not refused");
    };
    assert_eq!(body["accepted"], json!(true));
    assert_eq!(body["task_id"], json!("t-second"));
    // A repeat is the same callback, still held once.
    assert!(matches!(
        early_callback(&gate, json!({"task_id": "t-second", "data": 8})),
        Reply::Accepted(_)
    ));
    assert_eq!(gate.kept().record.early.len(), 1);
    // It survives a write and a reload.
    assert_eq!(gate.stored().record.early.len(), 1);
    gate.clock.advance(1);
    callback(&gate, json!({"task_id": "t-first"}), T0 + 86_400_000).unwrap();
    let run = gate.stored();
    assert!(run.record.waits.is_empty(), "{:?}", run.record.waits);
    assert!(run.record.early.is_empty());
    let RunStatus::Completed { output, .. } = &run.record.status else {
        panic!("completed by the held callback: {:?}", run.record.status);
    };
    assert_eq!(output["data"], json!(7));
}

/// A held callback naming another task than the one its wait opens for was
/// not for this call: it is dropped, and the wait stays open.
#[test]
fn a_held_callback_for_another_task_is_dropped_when_the_wait_opens() {
    let gate = Gate::new(Network::echo_with_async());
    gate.start(two_waits_in_a_row(), json!({}));
    gate.clock.advance(1);
    early_callback(&gate, json!({"task_id": "t-someone-else"}));
    gate.clock.advance(1);
    callback(&gate, json!({"task_id": "t-first"}), T0 + 86_400_000).unwrap();
    let view = shown(&gate);
    assert_eq!(view["status"], json!("paused"));
    assert_eq!(view["waits"][0]["wait_id"], json!("n1"));
    assert!(gate.stored().record.early.is_empty());
}

/// A callback for a wait that can no longer open (its node finished) is
/// turned away and recorded as early on nothing: a noop.
#[test]
fn a_callback_for_a_wait_that_cannot_open_is_a_noop() {
    let gate = Gate::new(Network::echo_with_async());
    gate.start(two_waits_in_a_row(), json!({}));
    let reply = gate
        .send(Command::Callback {
            run_id: "run-1".into(),
            wait_id: "n7".into(),
            body: json!({"task_id": "t"}),
            base_url: "https://engine.test".into(),
            token_expires_at: None,
        })
        .unwrap()
        .reply;
    assert_eq!(reply, Reply::Noop(Noop::UnknownWait));
}

#[test]
fn progress_past_its_bound_is_refused_and_changes_nothing() {
    use arcrun::core::run::MAX_PROGRESS_BYTES;
    let gate = Gate::new(Network::echo_with_async());
    gate.start(slow_graph(10), json!({}));
    let signed = first_url_expiry(&gate);
    gate.clock.set(T0 + 2_000);
    let fits = "x".repeat(MAX_PROGRESS_BYTES - 2);
    let beat = heartbeat(&gate, json!({"progress": fits}), signed).unwrap();
    assert_eq!(deadline(beat, signed), T0 + 10_000);
    let before = gate.stored().record;

    // A daemon that sends its whole result as progress, and asks for more time.
    let huge = "x".repeat(MAX_PROGRESS_BYTES - 1);
    let refused = heartbeat(
        &gate,
        json!({"progress": huge, "extend_seconds": 60}),
        signed,
    );
    let Err(EngineError::InvalidRequest(message)) = refused else {
        panic!("refused as invalid expected, got {refused:?}");
    };
    assert!(
        message.contains("progress") && message.contains(&MAX_PROGRESS_BYTES.to_string()),
        "{message}"
    );
    // Nothing changed: not the progress, not the deadline, no event noted.
    assert_eq!(gate.stored().record, before);
    let view = shown(&gate);
    assert_eq!(view["waits"][0]["progress"], json!(fits));
    assert_eq!(view["waits"][0]["expires_at"], json!(T0 + 10_000));
}
