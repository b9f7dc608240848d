//! In-memory implementations of the segment's platform traits, for native
//! tests and benchmarks: a store that counts its operations and fails on
//! request (the way a Worker dies between driving a run and saving it), and
//! a manual clock.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use super::error::EngineError;
use super::gate::storage::ObjectStorage;
use super::gate::Sleep;
use super::listing::RunSummary;
use super::plan::Directory;
use super::record::{WaitEvent, MAX_WAIT_EVENTS};
use super::run::Settings;
use super::run::{DeliveryOutcome, Journaled};
use super::segment::{Clock, Notifier};
use super::store::{JournalStore, Records, TaskIndex, TaskIndexStore, WaitNotes};
use super::stored::decode;

/// Operations performed, by kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StoreOps {
    pub loads: u32,
    pub saves: u32,
    pub journal_writes: u32,
    pub journal_reads: u32,
    pub journal_deletes: u32,
}

#[derive(Debug, Default)]
pub struct MemoryStore {
    /// KV: run id → (record text, TTL in seconds).
    pub records: RefCell<BTreeMap<String, (String, u64)>>,
    /// The bare route's task index.
    pub tasks: RefCell<BTreeMap<String, TaskIndex>>,
    /// The summary saved beside each record (KV metadata), by run id.
    pub summaries: RefCell<BTreeMap<String, RunSummary>>,
    /// The gate's Durable Object storage: the outcome journal.
    pub journal: RefCell<BTreeMap<String, Journaled>>,
    /// Events kept beside the run (the gate's storage too).
    pub events: RefCell<BTreeMap<String, Vec<WaitEvent>>>,
    pub ops: Cell<StoreOps>,
    /// The next this-many saves fail, as if the Worker died before writing.
    pub fail_saves: Cell<u32>,
    /// The next this-many loads fail, as if KV were unreachable.
    pub fail_loads: Cell<u32>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn record(&self, run_id: &str) -> Option<String> {
        self.records.borrow().get(run_id).map(|(t, _)| t.clone())
    }

    pub fn ttl(&self, run_id: &str) -> Option<u64> {
        self.records.borrow().get(run_id).map(|(_, ttl)| *ttl)
    }

    pub fn put_record(&self, run_id: &str, text: String) {
        self.records
            .borrow_mut()
            .insert(run_id.to_string(), (text, 0));
    }

    fn count(&self, f: impl FnOnce(&mut StoreOps)) {
        let mut ops = self.ops.get();
        f(&mut ops);
        self.ops.set(ops);
    }

    fn injected(counter: &Cell<u32>) -> bool {
        let left = counter.get();
        if left > 0 {
            counter.set(left - 1);
        }
        left > 0
    }
}

impl Records for MemoryStore {
    async fn load(&self, run_id: &str) -> Result<Option<String>, EngineError> {
        self.count(|o| o.loads += 1);
        if Self::injected(&self.fail_loads) {
            return Err(EngineError::Storage("injected load failure".into()));
        }
        Ok(self.record(run_id))
    }

    async fn save(
        &self,
        run_id: &str,
        text: String,
        ttl_secs: u64,
        summary: &RunSummary,
    ) -> Result<(), EngineError> {
        if Self::injected(&self.fail_saves) {
            return Err(EngineError::Storage("injected save failure".into()));
        }
        self.count(|o| o.saves += 1);
        self.summaries
            .borrow_mut()
            .insert(run_id.to_string(), summary.clone());
        self.records
            .borrow_mut()
            .insert(run_id.to_string(), (text, ttl_secs));
        Ok(())
    }
}

impl TaskIndexStore for MemoryStore {
    async fn claim_task(
        &self,
        task_id: &str,
        entry: &TaskIndex,
        replaces: Option<&TaskIndex>,
        _ttl_secs: u64,
    ) -> Result<TaskIndex, EngineError> {
        let mut tasks = self.tasks.borrow_mut();
        let held = tasks.get(task_id);
        if held.is_none() || held == replaces {
            tasks.insert(task_id.to_string(), entry.clone());
        }
        Ok(tasks[task_id].clone())
    }

    async fn wait_open(&self, run_id: &str, wait_id: &str, task_id: &str) -> bool {
        let Some(text) = self.record(run_id) else {
            return false;
        };
        decode(&text, &Directory::default(), Settings::default())
            .ok()
            .and_then(|run| run.record.waits.get(wait_id).map(|w| w.task_id == task_id))
            .unwrap_or(false)
    }
}

impl JournalStore for MemoryStore {
    async fn recorded_outcomes(&self) -> Result<BTreeMap<String, Journaled>, EngineError> {
        self.count(|o| o.journal_reads += 1);
        Ok(self.journal.borrow().clone())
    }

    async fn record_outcome(&self, key: &str, entry: &Journaled) -> Result<(), EngineError> {
        self.count(|o| o.journal_writes += 1);
        self.journal
            .borrow_mut()
            .insert(key.to_string(), entry.clone());
        Ok(())
    }

    async fn forget_journal(&self) -> Result<(), EngineError> {
        let mut journal = self.journal.borrow_mut();
        self.count(|o| o.journal_deletes += journal.len() as u32);
        journal.clear();
        Ok(())
    }
}

impl WaitNotes for MemoryStore {
    async fn note_event(&self, wait_id: &str, event: WaitEvent) -> Result<(), EngineError> {
        let mut events = self.events.borrow_mut();
        let list = events.entry(wait_id.to_string()).or_default();
        list.push(event);
        let excess = list.len().saturating_sub(MAX_WAIT_EVENTS);
        list.drain(..excess);
        Ok(())
    }

    async fn noted_events(&self) -> Result<BTreeMap<String, Vec<WaitEvent>>, EngineError> {
        Ok(self.events.borrow().clone())
    }
}

/// A clock that moves only when told.
#[derive(Debug)]
pub struct ManualClock(pub Cell<u64>);

impl ManualClock {
    pub fn at(ms: u64) -> Self {
        Self(Cell::new(ms))
    }
    pub fn advance(&self, ms: u64) {
        self.0.set(self.0.get() + ms);
    }
    pub fn set(&self, ms: u64) {
        self.0.set(ms);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> u64 {
        self.0.get()
    }
}

/// One delivery as a receiver saw it: url, headers, body.
pub type Delivered = (String, Vec<(String, String)>, String);

/// A receiver of final callbacks that records what it was sent and answers
/// from a script (then `200`).
#[derive(Debug, Default)]
pub struct MemoryNotifier {
    pub answers: RefCell<std::collections::VecDeque<DeliveryOutcome>>,
    /// (url, headers, body) of every delivery.
    pub sent: RefCell<Vec<Delivered>>,
}

impl Notifier for MemoryNotifier {
    async fn deliver(&self, url: &str, headers: &[(&str, String)], body: &str) -> DeliveryOutcome {
        self.sent.borrow_mut().push((
            url.to_string(),
            headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            body.to_string(),
        ));
        self.answers
            .borrow_mut()
            .pop_front()
            .unwrap_or(DeliveryOutcome::Answered {
                status: 200,
                duration_ms: 1,
            })
    }
}

/// A Durable Object's storage and alarm in memory, for driving the real
/// gate (`core::gate::Gate`) in native tests; it outlives the `Gate` the
/// way storage outlives an evicted object.
#[derive(Debug, Default)]
pub struct MemoryObject {
    pub storage: RefCell<BTreeMap<String, String>>,
    pub alarm: Cell<Option<u64>>,
}

impl MemoryObject {
    /// The keys stored under `prefix`.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        self.storage
            .borrow()
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect()
    }
}

impl ObjectStorage for MemoryObject {
    async fn get(&self, key: &str) -> Result<Option<String>, EngineError> {
        Ok(self.storage.borrow().get(key).cloned())
    }

    async fn put(&self, key: &str, value: String) -> Result<(), EngineError> {
        self.storage.borrow_mut().insert(key.to_string(), value);
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, String)>, EngineError> {
        Ok(self
            .storage
            .borrow()
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v.clone())))
            .collect())
    }

    async fn delete(&self, prefix: &str, keys: &[String]) -> Result<(), EngineError> {
        let mut storage = self.storage.borrow_mut();
        for key in keys {
            storage.remove(&format!("{prefix}{key}"));
        }
        Ok(())
    }

    async fn set_alarm(&self, at: Option<u64>) -> Result<(), EngineError> {
        self.alarm.set(at);
        Ok(())
    }
}

impl Sleep for ManualClock {
    /// Time passes only when a test says so; a sleep moves it.
    async fn sleep(&self, ms: u64) {
        self.advance(ms);
    }
}
