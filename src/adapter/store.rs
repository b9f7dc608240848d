//! Run records in Workers KV. Keys:
//! - `run:{run_id}` → the run record (JSON), expiring with its last open wait
//!   while paused, or after the retention period once finished.
//! - `task:{task_id}` → `{run_id, wait_id}`, written only when the legacy bare
//!   `POST /workflows/resume` route is enabled, expiring with the wait.

use std::cell::Cell;

use serde::{Deserialize, Serialize};
use worker::kv::KvStore;
use worker::Env;

use super::config::{Config, RUNS_KV};
use super::http::ApiError;
use crate::core::executor::Run;
use crate::core::record::{RunRecord, RunStatus};

const MIN_TTL_SECS: u64 = 60;

#[derive(Debug, Serialize, Deserialize)]
pub struct TaskRef {
    pub run_id: String,
    pub wait_id: String,
}

/// KV operations performed for one request, reported in the
/// `x-arcrun-kv-ops` response header so cost is measured, not estimated.
#[derive(Debug, Default, Clone, Copy)]
pub struct KvOps {
    pub reads: u32,
    pub writes: u32,
    pub lists: u32,
}

impl KvOps {
    pub const HEADER: &'static str = "x-arcrun-kv-ops";

    pub fn header_value(self) -> String {
        format!(
            "reads={};writes={};lists={}",
            self.reads, self.writes, self.lists
        )
    }

    /// Adds the counts found in another response's header.
    pub fn absorb(&mut self, header: &str) {
        for part in header.split(';') {
            let Some((k, v)) = part.split_once('=') else {
                continue;
            };
            let n: u32 = v.trim().parse().unwrap_or(0);
            match k.trim() {
                "reads" => self.reads += n,
                "writes" => self.writes += n,
                "lists" => self.lists += n,
                _ => {}
            }
        }
    }
}

pub struct RunStore {
    kv: KvStore,
    ops: Cell<KvOps>,
}

impl RunStore {
    pub fn new(env: &Env) -> Result<Self, ApiError> {
        Ok(Self {
            kv: env.kv(RUNS_KV)?,
            ops: Cell::new(KvOps::default()),
        })
    }

    pub fn ops(&self) -> KvOps {
        self.ops.get()
    }

    fn count(&self, f: impl FnOnce(&mut KvOps)) {
        let mut ops = self.ops.get();
        f(&mut ops);
        self.ops.set(ops);
    }

    pub async fn load(&self, run_id: &str) -> Result<Option<RunRecord>, ApiError> {
        self.count(|o| o.reads += 1);
        let Some(text) = self.kv.get(&run_key(run_id)).text().await? else {
            return Ok(None);
        };
        serde_json::from_str(&text).map(Some).map_err(|e| {
            ApiError::Engine(crate::core::error::EngineError::CorruptRecord(
                e.to_string(),
            ))
        })
    }

    /// Writes the record once, with a TTL that fits its status. Waits opened
    /// at or after `segment_start` are new and get their task index entry.
    pub async fn save(
        &self,
        run: &mut Run,
        config: &Config,
        now: u64,
        segment_start: u64,
    ) -> Result<(), ApiError> {
        let text = run.to_stored_json(config.max_record_bytes, now);
        let record = &run.record;
        let ttl = record_ttl(record, config, now);
        self.count(|o| o.writes += 1);
        self.kv
            .put(&run_key(&record.run_id), text)?
            .expiration_ttl(ttl)
            .execute()
            .await?;
        if config.bare_resume {
            for wait in record.waits.values().filter(|w| w.since >= segment_start) {
                let task = TaskRef {
                    run_id: record.run_id.clone(),
                    wait_id: wait.wait_id.clone(),
                };
                let ttl = (wait.expires_at.saturating_sub(now) / 1000).max(MIN_TTL_SECS);
                self.count(|o| o.writes += 1);
                self.kv
                    .put(
                        &task_key(&wait.task_id),
                        serde_json::to_string(&task).unwrap_or_default(),
                    )?
                    .expiration_ttl(ttl)
                    .execute()
                    .await?;
            }
        }
        Ok(())
    }

    pub async fn find_task(&self, task_id: &str) -> Result<Option<TaskRef>, ApiError> {
        self.count(|o| o.reads += 1);
        let Some(text) = self.kv.get(&task_key(task_id)).text().await? else {
            return Ok(None);
        };
        Ok(serde_json::from_str(&text).ok())
    }
}

fn run_key(run_id: &str) -> String {
    format!("run:{run_id}")
}

fn task_key(task_id: &str) -> String {
    format!("task:{task_id}")
}

fn record_ttl(record: &RunRecord, config: &Config, now: u64) -> u64 {
    let secs = match record.status {
        RunStatus::Completed { .. } | RunStatus::Failed { .. } => config.retention_secs,
        RunStatus::Paused { .. } | RunStatus::Running => {
            let last = record
                .waits
                .values()
                .map(|w| w.expires_at)
                .max()
                .unwrap_or(now);
            last.saturating_sub(now).div_ceil(1000)
        }
    };
    secs.max(MIN_TTL_SECS)
}
