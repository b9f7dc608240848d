//! The run's gate itself (`core::gate::Gate`), the code the Durable Object
//! runs, driven natively over in-memory storage with a manual clock: writes
//! paced to one a second, what is kept meanwhile, a gate started again after
//! a crash, and the alarm. Scripted scenarios, each readable on its own;
//! `tests/sim.rs` explores the interleavings and crashes these leave out.

mod support;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use arcrun::core::error::EngineError;
use arcrun::core::gate::storage::{INBOX_PREFIX, OUTCOME_PREFIX};
use arcrun::core::gate::{Answer, Gate, GateLog, Platform};
use arcrun::core::memory::{ManualClock, MemoryNotifier, MemoryObject, MemoryStore};
use arcrun::core::plan::Directory;
use arcrun::core::record::RunStatus;
use arcrun::core::run::Settings;
use arcrun::core::segment::{Clock, Command, GateConfig};
use arcrun::core::stored::decode;
use futures::executor::block_on;
use serde_json::{json, Value};
use support::Network;

const T0: u64 = 1_800_000_000_000;

/// A run's object: its storage and KV outlive the `Gate`, which a crash
/// replaces with a fresh one.
struct Object {
    store: MemoryStore,
    object: MemoryObject,
    clock: ManualClock,
    net: Network,
    notifier: MemoryNotifier,
    config: GateConfig,
    gate: RefCell<Rc<Gate>>,
    /// How many times the object has started.
    lives: Cell<u32>,
}

impl Object {
    fn new() -> Self {
        Self {
            store: MemoryStore::new(),
            object: MemoryObject::default(),
            clock: ManualClock::at(T0),
            net: Network::echo_with_async(),
            notifier: MemoryNotifier::default(),
            config: support::gate::config(Settings::default(), Directory::default()),
            gate: RefCell::new(Rc::new(Gate::starting(1))),
            lives: Cell::new(1),
        }
    }

    fn platform<'a>(
        &'a self,
        log: &'a dyn Fn(GateLog<'_>),
    ) -> Platform<'a, MemoryStore, Network, ManualClock, MemoryNotifier, MemoryObject> {
        Platform {
            records: &self.store,
            components: &self.net,
            clock: &self.clock,
            notifier: &self.notifier,
            object: &self.object,
            config: &self.config,
            log,
        }
    }

    fn send(&self, command: Command) -> Result<Answer, EngineError> {
        let gate = Rc::clone(&self.gate.borrow());
        let log = |_: GateLog<'_>| {};
        block_on(gate.handle(&self.platform(&log), command))
    }

    /// The platform fires the alarm if it is due (it is consumed as it fires).
    fn fire_alarm(&self) -> bool {
        match self.object.alarm.get() {
            Some(at) if at <= Clock::now(&self.clock) => {
                self.object.alarm.set(None);
                let gate = Rc::clone(&self.gate.borrow());
                let log = |_: GateLog<'_>| {};
                block_on(gate.alarm(&self.platform(&log))).expect("the alarm's handler succeeds");
                true
            }
            _ => false,
        }
    }

    /// The object dies: its memory goes, its storage, alarm and KV stay.
    fn crash(&self) {
        self.lives.set(self.lives.get() + 1);
        *self.gate.borrow_mut() = Rc::new(Gate::starting(self.lives.get()));
    }

    fn start(&self, graph: Value, context: Value) -> Answer {
        self.send(Command::Start {
            run_id: "run-1".into(),
            graph,
            context: context.as_object().cloned().unwrap_or_default(),
            owner: Some("owner".into()),
            base_url: "https://engine.test".into(),
            final_callback_url: None,
            workflow: None,
            depth: 0,
            parent: None,
            root: None,
            restart: false,
        })
        .expect("the run starts")
    }

    fn callback(&self, wait_id: &str, data: Value) -> Answer {
        let task_id = format!("t-each-{}", &wait_id[wait_id.len() - 1..]);
        self.send(Command::Callback {
            run_id: "run-1".into(),
            wait_id: wait_id.into(),
            body: json!({"task_id": task_id, "success": true, "data": data}),
            base_url: "https://engine.test".into(),
            token_expires_at: None,
        })
        .expect("the callback is answered")
    }

    fn read(&self) -> Value {
        self.send(Command::Read {
            run_id: "run-1".into(),
            owner: None,
            node: None,
        })
        .expect("the run reads")
        .body
    }

    /// The run as KV holds it.
    fn stored(&self) -> Value {
        let text = self.store.record("run-1").expect("a stored record");
        let run = decode(&text, &Directory::default(), self.config.settings).expect("it loads");
        arcrun::core::view::run_details(&run.record, &self.config.redactor)
    }

    /// The trigger is answered once its request is kept; the alarm it set
    /// for now writes the run to KV.
    fn publish(&self) {
        let saves = self.saves();
        assert_eq!(
            self.object.alarm.get(),
            Some(Clock::now(&self.clock)),
            "an alarm for the write, due now"
        );
        assert!(self.fire_alarm());
        assert_eq!(self.saves(), saves + 1, "the alarm wrote it");
    }

    fn saves(&self) -> u32 {
        self.store.ops.get().saves
    }

    fn advance(&self, ms: u64) {
        self.clock.advance(ms);
    }
}

fn three_items() -> (Value, Value) {
    let graph = json!({
        "nodes": [
            {"id": "in", "type": "Input"},
            {"id": "each", "type": "Component", "componentId": "http://c/async"},
            {"id": "out", "type": "Output"}
        ],
        "edges": [
            {"from": "in", "to": "each", "type": "FOREACH", "items": "things"},
            {"from": "each", "to": "out", "type": "PIPE"}
        ]
    });
    (graph, json!({"things": [0, 1, 2]}))
}

/// What a run's details say happened: its status, waits, closings, trace.
fn history(details: &Value) -> Value {
    json!([
        details["status"],
        details["waits"],
        details["closed_waits"],
        details["trace"]
    ])
}

fn status(details: &Value) -> &str {
    details["status"].as_str().unwrap_or_default()
}

#[test]
fn changes_within_a_second_of_a_write_are_kept_and_written_by_the_alarm() {
    let object = Object::new();
    let (graph, context) = three_items();
    assert_eq!(status(&object.start(graph, context).body), "paused");
    assert_eq!(object.saves(), 0, "answered once kept, before KV");
    assert_eq!(
        object.object.keys(INBOX_PREFIX).len(),
        1,
        "the trigger, kept"
    );
    object.publish();
    assert!(
        object.object.keys(INBOX_PREFIX).is_empty(),
        "the write covered it"
    );

    object.advance(100);
    let answer = object.callback("n1-0", json!({"v": 0}));
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body["resumed"], json!(true));
    // Applied, shown at once, but not yet in KV: the request is kept.
    assert_eq!(object.read()["waits"].as_array().map(Vec::len), Some(2));
    assert_eq!(object.saves(), 1, "no second write within the second");
    assert_eq!(object.object.keys(INBOX_PREFIX).len(), 1);
    assert_eq!(object.stored()["waits"].as_array().map(Vec::len), Some(3));
    let alarm = object.object.alarm.get().expect("an alarm for the write");
    assert_eq!(alarm, T0 + 1_000, "a second after the trigger's write");

    object.advance(alarm - Clock::now(&object.clock));
    assert!(object.fire_alarm());
    assert_eq!(object.saves(), 2);
    assert!(
        object.object.keys(INBOX_PREFIX).is_empty(),
        "the write covered it"
    );
    assert!(object.object.keys(OUTCOME_PREFIX).is_empty());
    assert_eq!(object.stored(), object.read(), "KV caught up with the gate");
}

#[test]
fn a_crash_before_the_write_loses_nothing_the_alarm_replays_it() {
    let object = Object::new();
    let (graph, context) = three_items();
    object.start(graph, context);
    object.publish();
    object.advance(100);
    object.callback("n1-0", json!({"v": 0}));
    object.advance(100);
    object.callback("n1-1", json!({"v": 1}));
    let before = object.read();
    assert_eq!(object.object.keys(INBOX_PREFIX).len(), 2);

    object.crash();
    // Nothing reaches the run: its alarm, set before it died, replays what
    // its storage kept, each request judged as of its arrival — and writes
    // once the new gate may (the last write's second, plus a margin for a
    // write that was under way when the old one died).
    object.advance(1_000);
    assert!(object.fire_alarm());
    assert_eq!(object.saves(), 1, "not yet: the margin");
    let alarm = object.object.alarm.get().expect("set again for the write");
    assert_eq!(alarm, T0 + 2_000);
    object.advance(alarm - Clock::now(&object.clock));
    assert!(object.fire_alarm());
    assert_eq!(object.saves(), 2);
    // Rebuilt as it was: every wait, closing and trace entry at the times
    // the requests arrived. Only the run's own `updated_at` (and what is
    // counted from it) says when it was rebuilt.
    let (stored, now) = (history(&object.stored()), history(&object.read()));
    assert_eq!(stored, history(&before), "rebuilt as it was");
    assert_eq!(now, stored);

    // The last item completes the run; a repeat changes nothing.
    object.advance(1_000);
    let answer = object.callback("n1-2", json!({"v": 2}));
    assert_eq!(answer.body["status"], json!("completed"), "{}", answer.body);
    let repeat = object.callback("n1-2", json!({"v": 2}));
    assert_eq!(repeat.body["reason"], json!("already_resumed"));
}

#[test]
fn a_trigger_answered_then_a_crash_before_its_write_is_started_again_by_the_alarm() {
    let object = Object::new();
    let (graph, context) = three_items();
    let answered = object.start(graph, context);
    assert_eq!(status(&answered.body), "paused");
    let shown = history(&answered.body);
    object.crash();
    // Nothing reaches it: the alarm set before its request was kept starts
    // it again from storage, its three calls answered from the journal.
    assert!(object.fire_alarm());
    assert_eq!(object.saves(), 1, "written once");
    assert_eq!(object.net.hits("http://c/async"), 3, "no call made twice");
    assert_eq!(
        history(&object.stored()),
        shown,
        "stored as it was answered"
    );
    assert!(object.object.keys(INBOX_PREFIX).is_empty());
    let answer = object.callback("n1-0", json!({"v": 0}));
    assert_eq!(answer.body["resumed"], json!(true), "{}", answer.body);
}

#[test]
fn a_gate_started_again_waits_out_the_last_write_it_stored() {
    let object = Object::new();
    let (graph, context) = three_items();
    object.start(graph, context);
    object.publish();
    // Dies at once, and a callback comes 200 ms after the trigger's write:
    // the new gate reads when that write began, so KV is not written again
    // within the second (with a margin for a write under way at the crash).
    object.crash();
    object.advance(200);
    let answer = object.callback("n1-0", json!({"v": 0}));
    assert_eq!(answer.body["resumed"], json!(true));
    assert_eq!(object.saves(), 1);
    let alarm = object.object.alarm.get().expect("an alarm for the write");
    assert!(alarm >= T0 + 1_000, "alarm at {} ms", alarm - T0);

    object.advance(alarm - Clock::now(&object.clock));
    assert!(object.fire_alarm());
    assert_eq!(object.saves(), 2);
    assert_eq!(object.stored(), object.read());
}

#[test]
fn a_restart_of_a_run_stored_after_all_answers_it_as_it_stands() {
    let object = Object::new();
    let (graph, context) = three_items();
    let first = object.start(graph.clone(), context.clone());
    assert_eq!(status(&first.body), "paused");
    object.publish();
    object.crash();
    object.advance(40_000);
    // Its claim taken over by a request that could not find it (say, two
    // takeovers raced): starting it over would lose what it did.
    let again = object
        .send(Command::Start {
            run_id: "run-1".into(),
            graph,
            context: context.as_object().cloned().unwrap_or_default(),
            owner: Some("owner".into()),
            base_url: "https://engine.test".into(),
            final_callback_url: None,
            workflow: None,
            depth: 0,
            parent: None,
            root: None,
            restart: true,
        })
        .expect("answered");
    assert_eq!(again.body["status"], json!("paused"), "{}", again.body);
    assert_eq!(history(&again.body), history(&object.stored()));
    assert_eq!(object.saves(), 1, "nothing written again");
}

#[test]
fn a_refused_trigger_leaves_a_fresh_object_untouched() {
    let object = Object::new();
    let refused = object.send(Command::Start {
        run_id: "run-1".into(),
        graph: json!({"nodes": [{"id": "x", "type": "Nope"}], "edges": []}),
        context: Default::default(),
        owner: None,
        base_url: "https://engine.test".into(),
        final_callback_url: None,
        workflow: None,
        depth: 0,
        parent: None,
        root: None,
        restart: false,
    });
    assert!(
        matches!(refused, Err(EngineError::InvalidGraph(_))),
        "{refused:?}"
    );
    assert_eq!(object.object.alarm.get(), None, "no alarm");
    assert!(object.object.storage.borrow().is_empty(), "nothing stored");
    assert_eq!(object.saves(), 0);
}

#[test]
fn a_deadline_is_taken_by_the_alarm_with_no_request() {
    let object = Object::new();
    let graph = json!({
        "nodes": [
            {"id": "slow", "type": "Component", "componentId": "http://c/async",
             "wait_timeout_seconds": 5},
            {"id": "fallback", "type": "Component", "componentId": "http://c/echo"}
        ],
        "edges": [{"from": "slow", "to": "fallback", "type": "ON_FAIL"}]
    });
    object.start(graph, json!({}));
    object.publish();
    let alarm = object.object.alarm.get().expect("an alarm at the deadline");
    assert_eq!(alarm, T0 + 5_000);
    object.crash();
    object.advance(5_000);
    assert!(object.fire_alarm());
    let stored = object.stored();
    assert_eq!(status(&stored), "completed", "{stored}");
    assert_eq!(object.net.hits("http://c/echo"), 1, "ON_FAIL ran once");
    assert!(matches!(
        decode(
            &object.store.record("run-1").unwrap(),
            &Directory::default(),
            object.config.settings
        )
        .unwrap()
        .record
        .status,
        RunStatus::Completed { .. }
    ));
}
