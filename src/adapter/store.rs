//! Storage on Workers: run records in KV (the store of record); a gate's
//! Durable Object storage and alarm (what the gate keeps there is
//! `core::gate::storage`'s); the bare route's task index in claim objects.
//! KV keys:
//! - `runs/{owner tag}/{run_id}` → the stored run record (`core::stored`),
//!   with its `RunSummary` as the key's metadata, expiring as
//!   `core::segment::record_ttl` says (`core::listing` forms the key; runs
//!   of the first release stay at `run:{run_id}`).
//! - `workflows/{owner tag}/{name}` → a stored workflow (`catalog.rs`).
//! - `task:{sha256 hex of task_id}` and, older, `task:{task_id}` →
//!   `{run_id, wait_id}`: the task index of earlier releases, still read
//!   by the bare route until those waits end; nothing writes them now.

use std::cell::Cell;

use worker::kv::KvStore;
use worker::{js_sys, wasm_bindgen::JsCast, wasm_bindgen::JsValue, Env, ListOptions, Storage};

use sha2::Digest;

use super::claims::ask;
use super::config::RUNS_KV;
use super::gate_stub::gate;
use super::http::ApiError;
use super::ops::Ops;
use super::runtime::now_ms;
use crate::core::auth::encode_hex;
use crate::core::claim::Claim;
use crate::core::error::EngineError;
use crate::core::gate::storage::ObjectStorage;
use crate::core::listing::{record_key, RunSummary};
use crate::core::segment::Command;
use crate::core::store::{Records, TaskIndex, TaskIndexStore};

/// The bare route's task index: one `TriggerClaim` object per task id,
/// named by its hash (`task/{sha256 hex}`), whose claim names the wait
/// (`run_id`, and the wait id as `body_hash`) or, for a shared id, the run
/// `*`. An object, not KV: two runs given the same id at the same moment
/// are told apart atomically, and KV's one write a second per key does not
/// apply. Entries written to KV by earlier releases are still read.
const SHARED: &str = "*";

fn task_claim(entry: &TaskIndex) -> Claim {
    let (run_id, wait_id) = match entry {
        TaskIndex::Wait { run_id, wait_id } => (run_id.clone(), wait_id.clone()),
        TaskIndex::Shared => (SHARED.to_string(), String::new()),
    };
    Claim {
        run_id,
        body_hash: wait_id,
        at: now_ms(),
        ..Claim::default()
    }
}

fn task_index(claim: Claim) -> Option<TaskIndex> {
    match claim.run_id.as_str() {
        "" => None,
        SHARED => Some(TaskIndex::Shared),
        _ => Some(TaskIndex::Wait {
            run_id: claim.run_id,
            wait_id: claim.body_hash,
        }),
    }
}

/// A task id as the index names it: any id (up to the 1 KB a pending
/// answer may carry) in 64 characters.
fn task_hash(task_id: &str) -> String {
    encode_hex(&sha2::Sha256::digest(task_id.as_bytes()))
}

async fn ask_task(
    env: &Env,
    task_id: &str,
    claim: &Claim,
) -> Result<Option<TaskIndex>, EngineError> {
    let answer = ask(env, "task", &task_hash(task_id), claim)
        .await
        .map_err(|e| EngineError::Storage(e.message()))?;
    Ok(task_index(answer))
}

/// What the index holds for a task id (the bare route's lookup).
pub async fn find_task(
    env: &Env,
    store: &RunStore,
    task_id: &str,
) -> Result<Option<TaskIndex>, EngineError> {
    let peek = Claim {
        peek: true,
        ..task_claim(&TaskIndex::Shared)
    };
    if let Some(found) = ask_task(env, task_id, &peek).await? {
        return Ok(Some(found));
    }
    store.find_legacy_task(task_id).await
}

fn count(ops: &Cell<Ops>, f: impl FnOnce(&mut Ops)) {
    let mut o = ops.get();
    f(&mut o);
    ops.set(o);
}

fn storage_error(e: impl std::fmt::Display) -> EngineError {
    EngineError::Storage(e.to_string())
}

/// Run records in KV.
pub struct RunStore {
    kv: KvStore,
    /// The binding object, for `put_raw`.
    binding: JsValue,
    ops: Cell<Ops>,
}

impl RunStore {
    pub fn new(env: &Env) -> Result<Self, ApiError> {
        let binding = js_sys::Reflect::get(env, &RUNS_KV.into())
            .map_err(|_| ApiError::Internal(format!("no KV binding {RUNS_KV}")))?;
        Ok(Self {
            kv: env.kv(RUNS_KV)?,
            binding,
            ops: Cell::new(Ops::default()),
        })
    }

    pub fn ops(&self) -> Ops {
        self.ops.get()
    }

    /// A task indexed in KV by an earlier release (`task:{sha256 hex}`, or
    /// before that `task:{task_id}`): `{"run_id", "wait_id"}`, expiring
    /// with its wait.
    async fn find_legacy_task(&self, task_id: &str) -> Result<Option<TaskIndex>, EngineError> {
        count(&self.ops, |o| o.reads += 1);
        let get = |key: String| async move { self.kv.get(&key).text().await };
        let hashed = format!("task:{}", task_hash(task_id));
        let mut text = get(hashed).await.map_err(storage_error)?;
        let legacy = format!("task:{task_id}");
        if text.is_none() && legacy.len() <= MAX_KV_KEY_BYTES {
            count(&self.ops, |o| o.reads += 1);
            text = get(legacy).await.map_err(storage_error)?;
        }
        let value: serde_json::Value = match text {
            Some(text) => serde_json::from_str(&text).map_err(storage_error)?,
            None => return Ok(None),
        };
        let field = |name: &str| value.get(name)?.as_str().map(str::to_string);
        Ok(field("run_id")
            .zip(field("wait_id"))
            .map(|(run_id, wait_id)| TaskIndex::Wait { run_id, wait_id }))
    }
}

/// What a gate reaches outside itself: KV for records, claim objects for
/// the bare route's task index, other gates to ask whether a wait is open.
pub struct GateRecords {
    pub env: Env,
    pub kv: RunStore,
}

impl Records for GateRecords {
    async fn load(&self, run_id: &str) -> Result<Option<String>, EngineError> {
        count(&self.kv.ops, |o| o.reads += 1);
        self.kv
            .kv
            .get(&record_key(run_id))
            .text()
            .await
            .map_err(storage_error)
    }

    async fn save(
        &self,
        run_id: &str,
        text: String,
        ttl_secs: u64,
        summary: &RunSummary,
    ) -> Result<(), EngineError> {
        count(&self.kv.ops, |o| o.writes += 1);
        let metadata = serde_json::to_string(summary).map_err(storage_error)?;
        self.kv
            .put_raw(&record_key(run_id), &text, Some(&metadata), Some(ttl_secs))
            .await
            .map_err(storage_error)
    }
}

impl TaskIndexStore for GateRecords {
    async fn claim_task(
        &self,
        task_id: &str,
        entry: &TaskIndex,
        replaces: Option<&TaskIndex>,
        ttl_secs: u64,
    ) -> Result<TaskIndex, EngineError> {
        let claim = Claim {
            replaces: replaces.map(task_claim).map(|c| (c.run_id, c.body_hash)),
            ttl_ms: Some(ttl_secs.saturating_mul(1000)),
            ..task_claim(entry)
        };
        Ok(ask_task(&self.env, task_id, &claim)
            .await?
            .unwrap_or_else(|| entry.clone()))
    }

    async fn wait_open(&self, run_id: &str, wait_id: &str, task_id: &str) -> bool {
        let read = Command::Read {
            run_id: run_id.to_string(),
            owner: None,
            node: None,
        };
        let Ok(mut response) = gate(&self.env, run_id, &read).await else {
            return false;
        };
        let text = response.text().await.unwrap_or_default();
        let details: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        details["waits"].as_array().is_some_and(|waits| {
            waits
                .iter()
                .any(|w| w["wait_id"] == wait_id && w["task_id"] == task_id)
        })
    }
}

/// A gate's Durable Object storage and alarm, counting its operations.
pub struct ObjectStore {
    pub storage: Storage,
    /// The same storage as JavaScript sees it, for the put options
    /// `Storage` does not expose.
    pub raw: JsValue,
    pub ops: Cell<Ops>,
}

impl ObjectStorage for ObjectStore {
    async fn get(&self, key: &str) -> Result<Option<String>, EngineError> {
        count(&self.ops, |o| o.reads += 1);
        self.storage.get::<String>(key).await.map_err(storage_error)
    }

    async fn put(&self, key: &str, value: String) -> Result<(), EngineError> {
        count(&self.ops, |o| o.writes += 1);
        self.storage
            .put_raw(key, value)
            .await
            .map_err(storage_error)
    }

    async fn put_unconfirmed(&self, key: &str, value: String) -> Result<(), EngineError> {
        count(&self.ops, |o| o.writes += 1);
        let js = |e: JsValue| storage_error(format!("{e:?}"));
        let put: js_sys::Function = js_sys::Reflect::get(&self.raw, &JsValue::from_str("put"))
            .map_err(js)?
            .dyn_into()
            .map_err(js)?;
        let options = js_sys::Object::new();
        js_sys::Reflect::set(
            &options,
            &JsValue::from_str("allowUnconfirmed"),
            &JsValue::TRUE,
        )
        .map_err(js)?;
        let promise = put
            .call3(
                &self.raw,
                &JsValue::from_str(key),
                &JsValue::from_str(&value),
                &options,
            )
            .map_err(js)?;
        worker::wasm_bindgen_futures::JsFuture::from(js_sys::Promise::from(promise))
            .await
            .map(|_| ())
            .map_err(js)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, String)>, EngineError> {
        count(&self.ops, |o| o.reads += 1);
        let listed = self
            .storage
            .list_with_options(ListOptions::new().prefix(prefix))
            .await
            .map_err(storage_error)?;
        let mut found = Vec::new();
        let entries = js_sys::try_iter(&listed.entries())
            .ok()
            .flatten()
            .into_iter()
            .flatten();
        for entry in entries.flatten() {
            let Ok(pair) = entry.dyn_into::<js_sys::Array>() else {
                continue;
            };
            if let (Some(key), Some(text)) = (pair.get(0).as_string(), pair.get(1).as_string()) {
                let key = key.strip_prefix(prefix).unwrap_or(&key).to_string();
                found.push((key, text));
            }
        }
        Ok(found)
    }

    async fn delete(&self, prefix: &str, keys: &[String]) -> Result<(), EngineError> {
        count(&self.ops, |o| o.deletes += keys.len() as u32);
        // The storage API deletes at most 128 keys per call.
        for chunk in keys.chunks(128) {
            let chunk: Vec<String> = chunk.iter().map(|k| format!("{prefix}{k}")).collect();
            self.storage
                .delete_multiple(chunk)
                .await
                .map_err(storage_error)?;
        }
        Ok(())
    }

    async fn set_alarm(&self, at: Option<u64>) -> Result<(), EngineError> {
        match at {
            Some(at) => {
                let when = js_sys::Date::new(&js_sys::Number::from(at as f64));
                self.storage
                    .set_alarm(worker::ScheduledTime::new(when))
                    .await
            }
            None => self.storage.delete_alarm().await,
        }
        .map_err(storage_error)
    }
}

/// Waits out KV's limit of one write a second to a key.
async fn after_write_limit() {
    worker::Delay::from(std::time::Duration::from_millis(1_100)).await;
}

/// KV refuses keys longer than this.
const MAX_KV_KEY_BYTES: usize = 512;

/// One page of a KV listing: its keys (with their metadata) and the cursor
/// of the next page, if there is one.
pub struct KvPage {
    pub keys: Vec<(String, Option<serde_json::Value>)>,
    pub next: Option<String>,
}

impl RunStore {
    /// Lists up to `limit` keys under `prefix`: one KV list operation.
    pub async fn list(
        &self,
        prefix: &str,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<KvPage, ApiError> {
        count(&self.ops, |o| o.lists += 1);
        let mut builder = self
            .kv
            .list()
            .prefix(prefix.to_string())
            .limit(limit as u64);
        if let Some(cursor) = cursor {
            builder = builder.cursor(cursor);
        }
        let listed = builder.execute().await?;
        let next = if listed.list_complete {
            None
        } else {
            listed.cursor.filter(|c| !c.is_empty())
        };
        Ok(KvPage {
            keys: listed
                .keys
                .into_iter()
                .map(|k| (k.name, k.metadata))
                .collect(),
            next,
        })
    }

    pub async fn get_text(&self, key: &str) -> Result<Option<String>, ApiError> {
        count(&self.ops, |o| o.reads += 1);
        Ok(self.kv.get(key).text().await?)
    }

    pub async fn put_text(
        &self,
        key: &str,
        text: String,
        metadata: &serde_json::Value,
    ) -> Result<(), ApiError> {
        count(&self.ops, |o| o.writes += 1);
        let metadata = metadata.to_string();
        if self
            .put_raw(key, &text, Some(&metadata), None)
            .await
            .is_ok()
        {
            return Ok(());
        }
        // KV refuses a second write to a key within a second (a stored
        // workflow put and deleted at once): tried again when it has passed.
        after_write_limit().await;
        count(&self.ops, |o| o.writes += 1);
        self.put_raw(key, &text, Some(&metadata), None)
            .await
            .map_err(|e| ApiError::Engine(storage_error(e)))
    }

    /// KV's `put`, called on the binding itself: the text as it is, the
    /// metadata as JSON text parsed on the JS side. (`KvStore::put` passes
    /// every value through a generic serializer whose number formatting
    /// alone is several KB of the module.)
    async fn put_raw(
        &self,
        key: &str,
        text: &str,
        metadata: Option<&str>,
        ttl_secs: Option<u64>,
    ) -> Result<(), String> {
        let failed = |e: JsValue| e.as_string().unwrap_or_else(|| format!("{e:?}"));
        let options = js_sys::Object::new();
        if let Some(metadata) = metadata {
            let value = js_sys::JSON::parse(metadata).map_err(failed)?;
            js_sys::Reflect::set(&options, &"metadata".into(), &value).map_err(failed)?;
        }
        if let Some(ttl) = ttl_secs {
            let ttl = JsValue::from(ttl as f64);
            js_sys::Reflect::set(&options, &"expirationTtl".into(), &ttl).map_err(failed)?;
        }
        let put: js_sys::Function = js_sys::Reflect::get(&self.binding, &"put".into())
            .map_err(failed)?
            .dyn_into()
            .map_err(failed)?;
        let promise: js_sys::Promise = put
            .call3(&self.binding, &key.into(), &text.into(), &options)
            .map_err(failed)?
            .dyn_into()
            .map_err(failed)?;
        worker::wasm_bindgen_futures::JsFuture::from(promise)
            .await
            .map(|_| ())
            .map_err(failed)
    }

    /// KV bills a delete as a write; the header counts it as one.
    pub async fn delete(&self, key: &str) -> Result<(), ApiError> {
        count(&self.ops, |o| o.writes += 1);
        if self.kv.delete(key).await.is_ok() {
            return Ok(());
        }
        after_write_limit().await;
        count(&self.ops, |o| o.writes += 1);
        self.kv.delete(key).await?;
        Ok(())
    }
}
