//! The gate's own storage (a Durable Object's, on Workers) and what the
//! gate keeps in it: the requests applied since the last write (`inbox:`),
//! the call journal (`outcome:`), the events turned away from waits
//! (`event:`), and its meta beside the alarm (`gate`). The platform only
//! gets, puts, lists and deletes; what the keys mean is decided here.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::core::error::EngineError;
use crate::core::listing::RunSummary;
use crate::core::record::{WaitEvent, MAX_WAIT_EVENTS};
use crate::core::run::Journaled;
use crate::core::store::{
    JournalStore, Records, TaskIndex, TaskIndexStore, WaitNotes, Writes, Written,
};

/// Journal entries, by the call's idempotency key.
pub const OUTCOME_PREFIX: &str = "outcome:";
/// Turned-away callbacks and heartbeats, per wait.
pub const EVENT_PREFIX: &str = "event:";
/// Requests applied but not yet in the KV record, by arrival.
pub const INBOX_PREFIX: &str = "inbox:";
/// The gate's meta, beside its alarm.
pub const META_KEY: &str = "gate";
/// Outcomes larger than this are not journaled (Durable Object values are
/// limited); such a call is made again if its segment dies.
pub const MAX_JOURNALED_BYTES: usize = 1 << 20;

/// A Durable Object's storage and alarm, as the gate uses them. Each put is
/// durable once it returns; the alarm survives restarts and fires at least
/// once (maybe late, maybe twice).
#[allow(async_fn_in_trait)]
pub trait ObjectStorage {
    async fn get(&self, key: &str) -> Result<Option<String>, EngineError>;
    async fn put(&self, key: &str, value: String) -> Result<(), EngineError>;
    /// A put whose loss in a crash is acceptable (a note for people, which
    /// no decision reads): the platform may answer requests before it is
    /// confirmed durable. Otherwise like `put`.
    async fn put_unconfirmed(&self, key: &str, value: String) -> Result<(), EngineError> {
        self.put(key, value).await
    }
    /// Every entry whose key starts with `prefix`, sorted by key, keys
    /// without the prefix.
    async fn list(&self, prefix: &str) -> Result<Vec<(String, String)>, EngineError>;
    /// Deletes these keys (each with `prefix` before it).
    async fn delete(&self, prefix: &str, keys: &[String]) -> Result<(), EngineError>;
    /// Sets the alarm, or clears it (`None`).
    async fn set_alarm(&self, at: Option<u64>) -> Result<(), EngineError>;
}

/// The gate's own record, kept beside the alarm so that an alarm knows its
/// run and whether anything is due without a KV read, and so that a gate
/// started again knows when the record was last written (KV refuses a
/// second write to a key within a second, whatever the writer remembers).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateMeta {
    pub run_id: String,
    /// When the alarm was last set for.
    #[serde(default)]
    pub wake_at: Option<u64>,
    /// When the record's last write began: stored before the write starts,
    /// so a crash during the write errs on the side of waiting.
    #[serde(default)]
    pub last_write: Option<u64>,
    /// The write of the record this object last saw land. Stored after the
    /// write, so a crash in between leaves it behind KV (harmless: the
    /// requests the write covered are still kept, and apply again), never
    /// ahead of it.
    #[serde(default)]
    pub written: Option<Written>,
    /// The revision of the last write begun (stored before it starts): the
    /// next is numbered above it, so no two records written ever share a
    /// revision, landed or not.
    #[serde(default)]
    pub revision: u64,
}

impl GateMeta {
    /// What the meta tells of the record's writes.
    pub fn writes(&self) -> Writes {
        Writes {
            landed: self.written,
        }
    }
}

/// The gate's memory of its call journal, so that a segment lists it only
/// when the kept run was (re)built, and a write deletes exactly the entries
/// the run it wrote holds — never one a lost segment left for a request
/// still to come (a callback whose segment died is sent again later, and
/// its calls must find their outcomes then).
#[derive(Debug, Default)]
pub struct JournalMemory {
    /// The journal was listed since the kept run was built: `unapplied`
    /// holds every entry the run has not used.
    pub known: bool,
    /// Entries listed but not yet used by the kept run.
    pub unapplied: BTreeMap<String, Journaled>,
    /// Entries the kept run has used (recorded or replayed): the next write
    /// holds them, and then they are deleted.
    pub applied: BTreeSet<String>,
}

impl JournalMemory {
    /// A fresh object's: it has journaled nothing.
    pub fn fresh() -> Self {
        Self {
            known: true,
            ..Self::default()
        }
    }
}

/// The gate's memory of the events it turned away (`event:` keys), so that
/// a duplicate or late callback on a gate that knows them writes its event
/// without reading first, and a read of the run lists nothing.
#[derive(Debug, Default)]
pub struct EventsMemory {
    /// `by_wait` holds every `event:` entry in storage: the object was
    /// fresh (a trigger's), or they were listed since it started. Cleared
    /// when a put fails (it may or may not have landed).
    pub known: bool,
    pub by_wait: BTreeMap<String, Vec<WaitEvent>>,
}

impl EventsMemory {
    /// A fresh object's: it has stored no event.
    pub fn fresh() -> Self {
        Self {
            known: true,
            by_wait: BTreeMap::new(),
        }
    }
}

/// What a gate's segments store through: the records (and task index) of
/// the platform, and the journal and wait events in the object's storage.
pub struct GateStore<'a, R, O> {
    pub records: &'a R,
    pub object: &'a O,
    pub journal: &'a RefCell<JournalMemory>,
    pub events: &'a RefCell<EventsMemory>,
    /// What this object knows of the record's writes (from its meta).
    pub writes: Writes,
}

impl<R: Records, O> Records for GateStore<'_, R, O> {
    async fn load(&self, run_id: &str) -> Result<Option<String>, EngineError> {
        self.records.load(run_id).await
    }

    fn writes(&self) -> Writes {
        self.writes
    }

    async fn save(
        &self,
        run_id: &str,
        text: String,
        ttl_secs: u64,
        summary: &RunSummary,
    ) -> Result<(), EngineError> {
        self.records.save(run_id, text, ttl_secs, summary).await
    }
}

impl<R: TaskIndexStore, O> TaskIndexStore for GateStore<'_, R, O> {
    async fn claim_task(
        &self,
        task_id: &str,
        entry: &TaskIndex,
        replaces: Option<&TaskIndex>,
        ttl_secs: u64,
    ) -> Result<TaskIndex, EngineError> {
        self.records
            .claim_task(task_id, entry, replaces, ttl_secs)
            .await
    }

    async fn wait_open(&self, run_id: &str, wait_id: &str, task_id: &str) -> bool {
        self.records.wait_open(run_id, wait_id, task_id).await
    }
}

impl<R, O: ObjectStorage> JournalStore for GateStore<'_, R, O> {
    async fn recorded_outcomes(&self) -> Result<BTreeMap<String, Journaled>, EngineError> {
        if !self.journal.borrow().known {
            let mut listed = BTreeMap::new();
            for (key, text) in self.object.list(OUTCOME_PREFIX).await? {
                // An entry that does not parse is skipped: the call is made again.
                if let Some(entry) = Journaled::parse(&text) {
                    listed.insert(key, entry);
                }
            }
            let mut journal = self.journal.borrow_mut();
            listed.retain(|key, _| !journal.applied.contains(key));
            journal.unapplied = listed;
            journal.known = true;
        }
        Ok(self.journal.borrow().unapplied.clone())
    }

    fn outcome_replayed(&self, key: &str) {
        let mut journal = self.journal.borrow_mut();
        journal.unapplied.remove(key);
        journal.applied.insert(key.to_string());
    }

    async fn record_outcome(&self, key: &str, entry: &Journaled) -> Result<(), EngineError> {
        let text = serde_json::to_string(entry)
            .map_err(|e| EngineError::Storage(format!("outcome not serialized: {e}")))?;
        if text.len() > MAX_JOURNALED_BYTES {
            return Err(EngineError::Storage("outcome too large to journal".into()));
        }
        self.journal.borrow_mut().applied.insert(key.to_string());
        let key = format!("{OUTCOME_PREFIX}{key}");
        self.object.put(&key, text).await
    }

    async fn forget_journal(&self) -> Result<(), EngineError> {
        let keys = std::mem::take(&mut self.journal.borrow_mut().applied);
        self.forget_outcomes(keys).await
    }
}

impl<R, O: ObjectStorage> GateStore<'_, R, O> {
    /// Deletes these journaled outcomes (the ones a write just landed
    /// holds; others applied since stay for the next).
    pub async fn forget_outcomes(&self, keys: BTreeSet<String>) -> Result<(), EngineError> {
        if keys.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = keys.into_iter().collect();
        self.object.delete(OUTCOME_PREFIX, &keys).await
    }
}

impl<R, O: ObjectStorage> WaitNotes for GateStore<'_, R, O> {
    async fn note_event(&self, wait_id: &str, event: WaitEvent) -> Result<(), EngineError> {
        let key = format!("{EVENT_PREFIX}{wait_id}");
        let known = {
            let memory = self.events.borrow();
            memory
                .known
                .then(|| memory.by_wait.get(wait_id).cloned().unwrap_or_default())
        };
        let mut events: Vec<WaitEvent> = match known {
            Some(events) => events,
            None => match self.object.get(&key).await {
                Ok(Some(text)) => serde_json::from_str(&text).unwrap_or_default(),
                _ => Vec::new(),
            },
        };
        events.push(event);
        let excess = events.len().saturating_sub(MAX_WAIT_EVENTS);
        events.drain(..excess);
        let text = serde_json::to_string(&events)
            .map_err(|e| EngineError::Storage(format!("events not serialized: {e}")))?;
        // Best effort, like the note itself: a duplicate's answer need not
        // wait for its note to be confirmed.
        let put = self.object.put_unconfirmed(&key, text).await;
        let mut memory = self.events.borrow_mut();
        match &put {
            Ok(()) if memory.known => {
                memory.by_wait.insert(wait_id.to_string(), events);
            }
            Ok(()) => {}
            Err(_) => *memory = EventsMemory::default(),
        }
        put
    }

    async fn noted_events(&self) -> Result<BTreeMap<String, Vec<WaitEvent>>, EngineError> {
        if self.events.borrow().known {
            return Ok(self.events.borrow().by_wait.clone());
        }
        let mut noted = BTreeMap::new();
        for (key, text) in self.object.list(EVENT_PREFIX).await? {
            if let Ok(events) = serde_json::from_str(&text) {
                noted.insert(key, events);
            }
        }
        Ok(noted)
    }
}
