//! `RunGate`: one Durable Object per run, through which every segment and
//! read of that run passes. The gate's logic — the lock, the kept run, the
//! pace of writes, kept and queued requests, replay after a restart, the
//! alarm's decisions — is `core::gate`; this object only performs it on
//! Workers: KV and claim objects (`store::GateRecords`), its own storage and
//! alarm (`store::ObjectStore`), `fetch` (`components`), the clock, and one
//! log line per segment and per write.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use worker::{durable_object, Delay, DurableObject, Env, Request, Response, Result, State};

use super::components::{HttpComponents, HttpNotifier};
use super::config::Config;
use super::http::{json_response, ApiError};
use super::ops::Ops;
use super::runtime::now_ms;
use super::store::{GateRecords, ObjectStore, RunStore};
use crate::core::gate::{Answer, Gate, GateLog, Platform, Sleep};
use crate::core::segment::{Clock, Command, GateConfig};

/// Final callbacks get this long to answer.
const DELIVERY_TIMEOUT_MS: u64 = 10_000;

/// The runtime's clock, and its timers.
struct WorkerClock;

impl Clock for WorkerClock {
    fn now(&self) -> u64 {
        now_ms()
    }
}

impl Sleep for WorkerClock {
    async fn sleep(&self, ms: u64) {
        Delay::from(Duration::from_millis(ms)).await;
    }
}

#[durable_object]
pub struct RunGate {
    state: State,
    env: Env,
    /// Parsed on first use; vars and secrets do not change under a live object.
    config: RefCell<Option<Rc<(Config, GateConfig)>>>,
    gate: Gate,
}

impl DurableObject for RunGate {
    fn new(state: State, env: Env) -> Self {
        Self {
            state,
            env,
            config: RefCell::new(None),
            gate: Gate::starting(life()),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let command = match req
            .text()
            .await
            .map_err(|e| e.to_string())
            .and_then(|text| serde_json::from_str::<Command>(&text).map_err(|e| e.to_string()))
        {
            Ok(command) => command,
            Err(e) => {
                return Ok(ApiError::Internal(format!("bad gate request: {e}")).into_response())
            }
        };
        let (records, object) = match self.stores() {
            Ok(s) => s,
            Err(e) => return Ok(e.into_response()),
        };
        let result = match self.config() {
            Ok(config) => {
                let (components, notifier) = outbound(&config.0, &self.env);
                let log = logger(&records, &object);
                let platform = Platform {
                    records: &records,
                    components: &components,
                    clock: &WorkerClock,
                    notifier: &notifier,
                    object: &object,
                    config: &config.1,
                    log: &log,
                };
                self.gate
                    .handle(&platform, command)
                    .await
                    .map_err(ApiError::Engine)
            }
            Err(e) => Err(e),
        };
        let response = match result {
            Ok(Answer { status, body }) => json_response(status, &body),
            Err(e) => e.into_response(),
        };
        let _ = response
            .headers()
            .set(Ops::HEADER, &records.kv.ops().header_value());
        let _ = response
            .headers()
            .set(Ops::DO_HEADER, &object.ops.get().do_header_value());
        Ok(response)
    }

    async fn alarm(&self) -> Result<Response> {
        let fail = |e: ApiError| worker::Error::RustError(e.message());
        let (records, object) = self.stores().map_err(fail)?;
        let config = self.config().map_err(fail)?;
        let (components, notifier) = outbound(&config.0, &self.env);
        let log = logger(&records, &object);
        let platform = Platform {
            records: &records,
            components: &components,
            clock: &WorkerClock,
            notifier: &notifier,
            object: &object,
            config: &config.1,
            log: &log,
        };
        let started = now_ms();
        let result = self.gate.alarm(&platform).await;
        // An alarm has no response to carry its costs in headers: its
        // line says them (the record's writes after answers are made here).
        let mut line = serde_json::json!({
            "event": "alarm",
            "kv": records.kv.ops().kv_log(),
            "do": object.ops.get().do_log(),
            "duration_ms": now_ms().saturating_sub(started),
        });
        if let Some(run_id) = self.gate.run_id() {
            line["run_id"] = run_id.into();
        }
        if let Err(e) = &result {
            line["error"] = e.code().as_str().into();
        }
        worker::console_log!("{line}");
        // Failing the handler makes the platform retry the alarm.
        result.map_err(|e| fail(ApiError::Engine(e)))?;
        Response::ok("ok")
    }
}

impl RunGate {
    fn stores(&self) -> std::result::Result<(GateRecords, ObjectStore), ApiError> {
        let records = GateRecords {
            env: self.env.clone(),
            kv: RunStore::new(&self.env)?,
        };
        let raw = self
            .state
            .as_raw()
            .storage()
            .map_err(|e| ApiError::Internal(format!("no storage: {e:?}")))?;
        let object = ObjectStore {
            storage: self.state.storage(),
            raw: raw.into(),
            ops: Cell::new(Ops::default()),
        };
        Ok((records, object))
    }

    fn config(&self) -> std::result::Result<Rc<(Config, GateConfig)>, ApiError> {
        if let Some(c) = self.config.borrow().as_ref() {
            return Ok(Rc::clone(c));
        }
        let config = Config::from_env(&self.env).map_err(ApiError::Misconfigured)?;
        let gate = config.gate_config();
        let both = Rc::new((config, gate));
        *self.config.borrow_mut() = Some(Rc::clone(&both));
        Ok(both)
    }
}

/// A number for this life of the object, so its kept requests never take
/// the keys of an earlier life's (a crash loses the counter, not storage).
fn life() -> u32 {
    let mut bytes = [0u8; 4];
    // Without randomness, the clock's milliseconds still tell lives apart.
    match getrandom::getrandom(&mut bytes) {
        Ok(()) => u32::from_le_bytes(bytes),
        Err(_) => now_ms() as u32,
    }
}

/// How a run's gate reaches components and the caller's receiver.
fn outbound(config: &Config, env: &Env) -> (HttpComponents, HttpNotifier) {
    (
        HttpComponents {
            timeout_ms: config.component_timeout_ms,
            max_response_bytes: config.max_component_response_bytes,
            child_budget: config.child_budget,
            env: env.clone(),
        },
        HttpNotifier {
            timeout_ms: DELIVERY_TIMEOUT_MS,
            env: env.clone(),
        },
    )
}

/// One JSON line per segment and per write for Workers Logs: what ran, for
/// which run, at what cost. Ids and counts only — never a context, an
/// output or a message that could carry one. A segment's operations are
/// those counted since it began (a request may apply several: queued
/// callbacks).
fn logger<'a>(records: &'a GateRecords, object: &'a ObjectStore) -> impl Fn(GateLog<'_>) + 'a {
    let before = Cell::new((records.kv.ops(), object.ops.get()));
    move |event| match event {
        GateLog::Begins => before.set((records.kv.ops(), object.ops.get())),
        GateLog::Segment {
            run_id,
            outcome,
            started,
        } => {
            let (kv_before, do_before) = before.get();
            let mut line = serde_json::json!({
                "event": "segment",
                "run_id": run_id,
                "kv": records.kv.ops().since(kv_before).kv_log(),
                "do": object.ops.get().since(do_before).do_log(),
                "duration_ms": now_ms().saturating_sub(started),
            });
            match outcome {
                Ok(report) => {
                    line["kind"] = report.kind.into();
                    line["status"] = report.status.into();
                    line["calls"] = report.calls.into();
                }
                Err(e) => line["error"] = e.code().as_str().into(),
            }
            worker::console_log!("{line}");
        }
        GateLog::Write {
            run_id,
            kept_requests,
            started,
        } => {
            let kv_writes = records.kv.ops().since(before.get().0).writes;
            let line = serde_json::json!({
                "event": "write",
                "run_id": run_id,
                "kept_requests": kept_requests,
                "kv_writes": kv_writes,
                "duration_ms": now_ms().saturating_sub(started),
            });
            worker::console_log!("{line}");
        }
    }
}
