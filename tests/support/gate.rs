//! A gate without the platform, for tests of the segment logic: the kept
//! run, an in-memory store, a manual clock, a fake network and receiver.

use std::cell::RefCell;
use std::rc::Rc;

use arcrun::core::error::EngineError;
use arcrun::core::memory::{ManualClock, MemoryNotifier, MemoryStore};
use arcrun::core::plan::{Directory, GraphLimits};
use arcrun::core::redact::Redactor;
use arcrun::core::run::{Run, Settings};
use arcrun::core::segment::{flush, run_segment, Clock, Command, GateConfig, Host, Segment};
use arcrun::core::store::JournalStore;
use arcrun::core::stored::decode;
use futures::executor::block_on;
use serde_json::Value;

use super::Network;

pub const T0: u64 = 1_800_000_000_000;
pub const OWNER: &str = "owner-a";

/// What a test varies when it starts a run (`Gate::start_with`).
#[derive(Debug, Default)]
pub struct Start {
    pub context: Value,
    pub final_callback_url: Option<String>,
    pub workflow: Option<String>,
    pub depth: u32,
    /// A sub-workflow's parent link (`run://{run}/{wait}`).
    pub parent: Option<String>,
}

/// The configuration native tests run gates with.
pub fn config(settings: Settings, directory: Directory) -> GateConfig {
    GateConfig {
        settings,
        directory,
        limits: GraphLimits::default(),
        max_record_bytes: 24 << 20,
        retention_secs: 3600,
        index_tasks: false,
        callback_secret: Some(Rc::from("secret")),
        webhook_keys: vec![b"webhook-key-for-tests-0123456789".to_vec()],
        delivery_window_ms: 24 * 3600 * 1000,
        redactor: Redactor::with_extra(Vec::<String>::new()),
    }
}

/// A gate without the platform: the kept run, the store, a clock, a network.
pub struct Gate {
    pub store: MemoryStore,
    pub clock: ManualClock,
    pub net: Network,
    pub notifier: MemoryNotifier,
    pub config: GateConfig,
    pub cached: RefCell<Option<Run>>,
}

impl Gate {
    pub fn new(net: Network) -> Self {
        Self::with(net, Settings::default(), Directory::default())
    }

    pub fn with(net: Network, settings: Settings, directory: Directory) -> Self {
        Self {
            store: MemoryStore::new(),
            clock: ManualClock::at(T0),
            net,
            notifier: MemoryNotifier::default(),
            config: config(settings, directory),
            cached: RefCell::new(None),
        }
    }

    /// Runs a segment and writes its change at once.
    pub fn send(&self, command: Command) -> Result<Segment, EngineError> {
        let since = self.clock.now();
        let (kept, result) = self.segment(command);
        // This double writes every change at once, as the gate does when its
        // last write is a second old (the pacing is `core::pacing`'s, tested
        // there and end to end under KV's limit).
        let (kept, result) = match (kept, result) {
            (Some(run), Ok(mut segment)) if segment.dirty => {
                *self.cached.borrow_mut() = Some(run);
                match self.write(since) {
                    Ok(()) => {
                        // As the gate takes them from the run as written
                        // (writing may fail a run too large to store).
                        if let Some(run) = self.cached.borrow().as_ref() {
                            segment.wake = run.next_wake(Clock::now(&self.clock));
                            segment.refresh(run, &self.config);
                        }
                        (self.cached.borrow_mut().take(), Ok(segment))
                    }
                    Err(e) => (None, Err(e)),
                }
            }
            other => other,
        };
        *self.cached.borrow_mut() = kept;
        result
    }

    fn host(&self) -> Host<'_, MemoryStore, Network, ManualClock, MemoryNotifier> {
        Host {
            store: &self.store,
            components: &self.net,
            clock: &self.clock,
            notifier: &self.notifier,
            config: &self.config,
        }
    }

    fn segment(&self, command: Command) -> (Option<Run>, Result<Segment, EngineError>) {
        self.segment_arrived(command, None)
    }

    fn segment_arrived(
        &self,
        command: Command,
        arrived: Option<u64>,
    ) -> (Option<Run>, Result<Segment, EngineError>) {
        let cached = self.cached.borrow_mut().take();
        block_on(run_segment(&self.host(), cached, command, arrived))
    }

    /// Runs a segment for a request the gate received at `arrived` (kept
    /// while another ran, or replayed), and keeps its change unwritten.
    pub fn send_arrived(
        &self,
        command: Command,
        arrived: Option<u64>,
    ) -> Result<Segment, EngineError> {
        let (kept, result) = self.segment_arrived(command, arrived);
        *self.cached.borrow_mut() = kept;
        result
    }

    /// `send_arrived` of a (request, arrival) pair.
    pub fn send_arrived_pair(
        &self,
        (command, arrived): (Command, Option<u64>),
    ) -> Result<Segment, EngineError> {
        self.send_arrived(command, arrived)
    }

    /// Runs a segment and keeps its change unwritten, as the gate does
    /// within a second of its last write.
    pub fn send_unwritten(&self, command: Command) -> Result<Segment, EngineError> {
        let (kept, result) = self.segment(command);
        *self.cached.borrow_mut() = kept;
        result
    }

    /// Writes the kept run with everything applied since `since`.
    pub fn write(&self, since: u64) -> Result<(), EngineError> {
        let mut run = self.cached.borrow_mut().take().expect("a kept run");
        let result = block_on(flush(&self.host(), &mut run, since)).map(|_| ());
        *self.cached.borrow_mut() = Some(run);
        if result.is_ok() {
            // As the gate does once it knows the write landed.
            let _ = block_on(self.store.forget_journal());
        }
        result
    }

    /// The kept run (ahead of the store until it is written).
    pub fn kept(&self) -> Run {
        self.cached.borrow().clone().expect("a kept run")
    }

    /// As if the Durable Object were evicted: the next segment reads KV.
    pub fn forget(&self) {
        *self.cached.borrow_mut() = None;
    }

    pub fn start(&self, graph: Value, context: Value) -> Segment {
        self.start_with(
            graph,
            Start {
                context,
                ..Start::default()
            },
        )
        .expect("the run starts")
    }

    /// Starts `run-1` for `OWNER` as a trigger would, with what the test varies.
    pub fn start_with(&self, graph: Value, start: Start) -> Result<Segment, EngineError> {
        self.send(Command::Start {
            run_id: "run-1".into(),
            graph,
            context: start.context.as_object().cloned().unwrap_or_default(),
            owner: Some(OWNER.into()),
            base_url: "https://engine.test".into(),
            final_callback_url: start.final_callback_url,
            workflow: start.workflow,
            depth: start.depth,
            parent: start.parent,
            root: None,
            restart: false,
        })
    }

    pub fn callback(&self, wait_id: &str, body: Value) -> Result<Segment, EngineError> {
        self.send(Command::Callback {
            run_id: "run-1".into(),
            wait_id: wait_id.into(),
            body,
            base_url: "https://engine.test".into(),
            token_expires_at: None,
        })
    }

    pub fn wake(&self) -> Segment {
        self.send(Command::Wake {
            run_id: "run-1".into(),
        })
        .expect("the alarm runs")
    }

    /// The run as stored in KV.
    pub fn stored(&self) -> Run {
        let text = self.store.record("run-1").expect("a stored record");
        decode(&text, &Directory::default(), self.config.settings).expect("it loads")
    }

    pub fn saves(&self) -> u32 {
        self.store.ops.get().saves
    }
}
