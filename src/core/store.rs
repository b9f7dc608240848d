//! What a segment stores through, split by role: the run's record (KV, the
//! store of record), the bare route's task index, the journal of call
//! outcomes and the events turned away from waits (both in the gate's own
//! storage). `Store` is all four; the gate composes it from KV and its
//! object storage (`core::gate::GateStore`), tests from memory
//! (`core::memory::MemoryStore`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::error::EngineError;
use super::listing::RunSummary;
use super::record::WaitEvent;
use super::run::Journaled;

/// The store of record: one KV key per run.
#[allow(async_fn_in_trait)]
pub trait Records {
    async fn load(&self, run_id: &str) -> Result<Option<String>, EngineError>;
    /// What is known of the record's writes, to tell a lagging read (KV
    /// at another location) from the run.
    fn writes(&self) -> Writes {
        Writes::default()
    }
    /// Writes the record, with the summary a listing shows beside its key
    /// (KV metadata: it costs no write of its own).
    async fn save(
        &self,
        run_id: &str,
        text: String,
        ttl_secs: u64,
        summary: &RunSummary,
    ) -> Result<(), EngineError>;
}

/// A write of a run's record that landed: its revision
/// (`RunRecord::revision`), when it began, and when KV forgets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Written {
    pub revision: u64,
    pub at: u64,
    pub expires_at: u64,
}

/// What a run's gate knows of the writes of its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Writes {
    /// The last write seen to land. (One begun since and not seen to land
    /// holds nothing that is not also kept in the gate's storage.)
    pub landed: Option<Written>,
}

impl Writes {
    /// Whether a load at `now` that found no record may be lagging: one was
    /// seen to land and KV has not forgotten it.
    pub fn absence_doubtful(&self, now: u64) -> bool {
        self.landed.is_some_and(|w| now < w.expires_at)
    }

    /// Whether a record of `revision` is older than one seen to land.
    pub fn outdated(&self, revision: u64) -> bool {
        self.landed.is_some_and(|w| revision < w.revision)
    }
}

/// The legacy bare resume route's index of task ids.
#[allow(async_fn_in_trait)]
pub trait TaskIndexStore {
    /// Indexes a task id, atomically: sets `entry` if the index holds
    /// nothing live for the id (or holds `replaces`), and answers what it
    /// holds after.
    async fn claim_task(
        &self,
        task_id: &str,
        entry: &TaskIndex,
        replaces: Option<&TaskIndex>,
        ttl_secs: u64,
    ) -> Result<TaskIndex, EngineError>;
    /// Whether another run's wait is still open with this task id, as that
    /// run stands now (its gate, not KV, which may lag).
    async fn wait_open(&self, run_id: &str, wait_id: &str, task_id: &str) -> bool;
}

/// The journal of call outcomes, so a segment that dies before its change
/// is written runs again without repeating the calls that were answered.
#[allow(async_fn_in_trait)]
pub trait JournalStore {
    /// Journaled outcomes the run about to be driven may lack (those of
    /// segments whose change was lost); none when the store knows the run
    /// it serves has applied every outcome it recorded.
    async fn recorded_outcomes(&self) -> Result<BTreeMap<String, Journaled>, EngineError>;
    /// A recorded outcome was used in place of a call: the run now holds it.
    fn outcome_replayed(&self, _key: &str) {}
    async fn record_outcome(&self, key: &str, entry: &Journaled) -> Result<(), EngineError>;
    /// Forgets the journaled outcomes the record just written holds.
    async fn forget_journal(&self) -> Result<(), EngineError>;
}

/// What reached a wait without changing the run (a duplicate, a late
/// callback, a task mismatch), kept beside it so that costs no KV write.
#[allow(async_fn_in_trait)]
pub trait WaitNotes {
    async fn note_event(&self, wait_id: &str, event: WaitEvent) -> Result<(), EngineError>;
    /// The events kept by `note_event`, by wait id.
    async fn noted_events(&self) -> Result<BTreeMap<String, Vec<WaitEvent>>, EngineError>;
}

/// Everything a segment stores through.
pub trait Store: Records + TaskIndexStore + JournalStore + WaitNotes {}

impl<T: Records + TaskIndexStore + JournalStore + WaitNotes> Store for T {}

/// An entry of the bare route's task index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskIndex {
    /// The open wait this task id resumes.
    Wait { run_id: String, wait_id: String },
    /// Open waits of different runs were given this task id: a body that
    /// names only the task cannot say which it is for, so the route refuses
    /// it (the signed `callback_url` of each still works).
    Shared,
}
