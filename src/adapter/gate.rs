//! `RunGate`: one Durable Object per run, through which every execution of
//! that run passes. It serialises a run's segments — the first one and every
//! resume — so two callbacks can never resume the same wait twice, a callback
//! that arrives before the pause is stored waits for it instead of missing
//! it, and parallel waits cannot overwrite each other's record. The record
//! itself lives in KV; the object keeps only the last one it wrote, in memory.

use std::cell::RefCell;

use futures::lock::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use worker::{durable_object, DurableObject, Env, Request, Response, Result, State};

use super::components::HttpComponents;
use super::config::Config;
use super::http::{json_response, ApiError};
use super::now_ms;
use super::store::{KvOps, RunStore};
use crate::core::driver::drive;
use crate::core::executor::{Noop, Run};
use crate::core::graph::Graph;
use crate::core::plan::build_plan;
use crate::core::record::RunRecord;
use crate::core::view::{noop, run_details, run_outcome};

/// What the front Worker asks of a run's gate.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum GateRequest {
    Start {
        run_id: String,
        graph: Graph,
        context: Map<String, Value>,
        base_url: String,
        owner: Option<String>,
    },
    Callback {
        run_id: String,
        wait_id: String,
        body: Value,
        base_url: String,
    },
    Read {
        run_id: String,
        owner: Option<String>,
    },
}

#[durable_object]
pub struct RunGate {
    env: Env,
    lock: Mutex<()>,
    /// The record this object last wrote to KV, so it never depends on KV
    /// having caught up with its own write.
    saved: RefCell<Option<RunRecord>>,
    /// Set while a segment of the run is executing: the run id and its owner.
    running: RefCell<Option<(String, Option<String>)>>,
}

impl DurableObject for RunGate {
    fn new(_state: State, env: Env) -> Self {
        Self {
            env,
            lock: Mutex::new(()),
            saved: RefCell::new(None),
            running: RefCell::new(None),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let message: GateRequest = match req.json().await {
            Ok(m) => m,
            Err(e) => {
                return Ok(ApiError::Internal(format!("bad gate request: {e}")).into_response())
            }
        };
        let store = match RunStore::new(&self.env) {
            Ok(s) => s,
            Err(e) => return Ok(e.into_response()),
        };
        let response = self
            .handle(message, &store)
            .await
            .unwrap_or_else(ApiError::into_response);
        let _ = response
            .headers()
            .set(KvOps::HEADER, &store.ops().header_value());
        Ok(response)
    }
}

impl RunGate {
    async fn handle(
        &self,
        message: GateRequest,
        store: &RunStore,
    ) -> std::result::Result<Response, ApiError> {
        let config = Config::from_env(&self.env).map_err(ApiError::Misconfigured)?;
        match message {
            GateRequest::Read { run_id, owner } => {
                self.read(&run_id, owner.as_deref(), &config, store).await
            }
            GateRequest::Start {
                run_id,
                graph,
                context,
                base_url,
                owner,
            } => {
                let _turn = self.lock.lock().await;
                let plan = build_plan(graph, &config.directory, config.limits)?;
                let mut run = Run::start(plan, run_id, context, now_ms());
                run.record.owner = owner;
                self.execute(run, &config, &base_url, false, store).await
            }
            GateRequest::Callback {
                run_id,
                wait_id,
                body,
                base_url,
            } => {
                let _turn = self.lock.lock().await;
                let Some(record) = self.take_record(&run_id, store).await? else {
                    return Ok(json_response(200, &noop(Noop::UnknownRun)));
                };
                let mut run = Run::load(record, &config.directory)?;
                let outcome = run.resume(&wait_id, body, now_ms());
                match outcome {
                    Ok(Ok(())) => self.execute(run, &config, &base_url, true, store).await,
                    Ok(Err(reason)) => {
                        self.keep(run.record);
                        Ok(json_response(200, &noop(reason)))
                    }
                    Err(e) => {
                        self.keep(run.record);
                        Err(e.into())
                    }
                }
            }
        }
    }

    /// Runs one segment to its end, then writes the record once.
    async fn execute(
        &self,
        mut run: Run,
        config: &Config,
        base_url: &str,
        resumed: bool,
        store: &RunStore,
    ) -> std::result::Result<Response, ApiError> {
        let secret = config.signing_secret()?;
        let segment_start = now_ms();
        *self.running.borrow_mut() = Some((run.record.run_id.clone(), run.record.owner.clone()));
        let components = HttpComponents {
            run_id: &run.record.run_id.clone(),
            base_url,
            secret,
            timeout_ms: config.component_timeout_ms,
        };
        drive(&mut run, &components, &now_ms, &config.settings).await;
        let saved = store.save(&mut run, config, now_ms(), segment_start).await;
        *self.running.borrow_mut() = None;
        saved?;
        let body = run_outcome(&run.record, resumed, &config.redactor);
        self.keep(run.record);
        Ok(json_response(200, &body))
    }

    async fn read(
        &self,
        run_id: &str,
        owner: Option<&str>,
        config: &Config,
        store: &RunStore,
    ) -> std::result::Result<Response, ApiError> {
        let running =
            self.running.borrow().as_ref().is_some_and(|(id, who)| {
                id == run_id && (owner.is_none() || who.as_deref() == owner)
            });
        // Another key's run reads as absent, exactly like a run that never was.
        let visible = |r: &RunRecord| owner.is_none() || r.owner.as_deref() == owner;
        let cached = self
            .saved
            .borrow()
            .as_ref()
            .filter(|r| r.run_id == run_id)
            .map(|r| visible(r).then(|| run_details(r, &config.redactor)));
        let details = match cached {
            Some(d) => d,
            None => store
                .load(run_id)
                .await?
                .and_then(|r| visible(&r).then(|| run_details(&r, &config.redactor))),
        };
        match (details, running) {
            (Some(mut d), true) => {
                d["status"] = json!("running");
                Ok(json_response(200, &d))
            }
            (Some(d), false) => Ok(json_response(200, &d)),
            (None, true) => Ok(json_response(
                200,
                &json!({
                    "success": true, "run_id": run_id, "status": "running", "waits": [], "trace": []
                }),
            )),
            (None, false) => Err(ApiError::NotFound(format!("no run '{run_id}'"))),
        }
    }

    /// The run's latest record: the one this object wrote, else KV's. Taken
    /// out of the cache so that a failed segment cannot leave a half-applied
    /// record behind; `keep` puts the settled one back.
    async fn take_record(
        &self,
        run_id: &str,
        store: &RunStore,
    ) -> std::result::Result<Option<RunRecord>, ApiError> {
        let cached = self
            .saved
            .borrow_mut()
            .take()
            .filter(|r| r.run_id == run_id);
        match cached {
            Some(r) => Ok(Some(r)),
            None => store.load(run_id).await,
        }
    }

    fn keep(&self, record: RunRecord) {
        *self.saved.borrow_mut() = Some(record);
    }
}
