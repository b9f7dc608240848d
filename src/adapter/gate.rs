//! `RunGate`: one Durable Object per run, through which every segment and
//! read of that run passes. It holds what the core's segment logic cannot:
//! the lock that serialises segments (so two callbacks never resume one wait
//! twice, and an early callback waits for the pause to be stored), the run
//! as it last left it (so it never depends on KV catching up with its own
//! write), the journal of call outcomes in its storage, and the alarm that
//! makes the run act with no request arriving: deadlines, continuation after
//! a yield. Everything else is `core::segment`.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use futures::lock::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use worker::{durable_object, js_sys, DurableObject, Env, Request, Response, Result, State};

use super::components::{HttpComponents, HttpNotifier};
use super::config::Config;
use super::http::{json_response, ApiError};
use super::now_ms;
use super::store::{GateStore, Ops, RunStore};
use crate::core::error::EngineError;
use crate::core::run::Run;
use crate::core::segment::{
    add_noted, details, read, run_segment, Clock, Command, GateConfig, Host, Reply, Segment,
};
use crate::core::view::noop;

/// The gate's own record of its run, kept beside the alarm so an alarm
/// knows which run it is for and whether anything is due — without a KV read.
const META_KEY: &str = "gate";

/// What the front Worker asks of a run's gate.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateRequest {
    Start {
        run_id: String,
        graph: Value,
        context: Map<String, Value>,
        base_url: String,
        owner: Option<String>,
        #[serde(default)]
        final_callback_url: Option<String>,
        #[serde(default)]
        workflow: Option<String>,
        #[serde(default)]
        depth: u32,
        #[serde(default)]
        parent: Option<String>,
    },
    Callback {
        run_id: String,
        wait_id: String,
        body: Value,
        base_url: String,
        #[serde(default)]
        token_expires_at: Option<u64>,
    },
    Heartbeat {
        run_id: String,
        wait_id: String,
        body: Value,
        token_expires_at: u64,
    },
    Read {
        run_id: String,
        owner: Option<String>,
    },
    Cancel {
        run_id: String,
        owner: Option<String>,
    },
    Redeliver {
        run_id: String,
        owner: Option<String>,
    },
    Retry {
        run_id: String,
        owner: Option<String>,
    },
}

/// Final callbacks get this long to answer.
const DELIVERY_TIMEOUT_MS: u64 = 10_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct GateMeta {
    run_id: String,
    wake_at: u64,
}

struct WorkerClock;

impl Clock for WorkerClock {
    fn now(&self) -> u64 {
        now_ms()
    }
}

#[durable_object]
pub struct RunGate {
    state: State,
    env: Env,
    lock: Mutex<()>,
    /// Parsed on first use; vars and secrets do not change under a live object.
    config: RefCell<Option<Rc<(Config, GateConfig)>>>,
    /// The run as the last segment left it (what KV holds), taken out while
    /// a segment executes.
    cached: RefCell<Option<Run>>,
    /// The run id and owner of the segment executing now, if any.
    active: RefCell<Option<(String, Option<String>)>>,
    /// The alarm as this object last set it: `None` until known.
    alarm: Cell<Option<Option<u64>>>,
    /// Whether the call journal is known to be empty (unknown when cold).
    journal_clean: Rc<Cell<bool>>,
}

impl DurableObject for RunGate {
    fn new(state: State, env: Env) -> Self {
        Self {
            state,
            env,
            lock: Mutex::new(()),
            config: RefCell::new(None),
            cached: RefCell::new(None),
            active: RefCell::new(None),
            alarm: Cell::new(None),
            journal_clean: Rc::new(Cell::new(false)),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let message: GateRequest = match req.json().await {
            Ok(m) => m,
            Err(e) => {
                return Ok(ApiError::Internal(format!("bad gate request: {e}")).into_response())
            }
        };
        let store = match self.store() {
            Ok(s) => s,
            Err(e) => return Ok(e.into_response()),
        };
        let response = self
            .handle(message, &store)
            .await
            .unwrap_or_else(ApiError::into_response);
        let _ = response
            .headers()
            .set(Ops::HEADER, &store.kv.ops().header_value());
        let _ = response
            .headers()
            .set(Ops::DO_HEADER, &store.do_ops.get().do_header_value());
        Ok(response)
    }

    async fn alarm(&self) -> Result<Response> {
        let store = match self.store() {
            Ok(s) => s,
            Err(e) => return Err(worker::Error::RustError(e.message())),
        };
        match self.wake(&store).await {
            Ok(()) => Response::ok("ok"),
            // Failing the handler makes the platform retry the alarm.
            Err(e) => Err(worker::Error::RustError(e.message())),
        }
    }
}

impl RunGate {
    fn store(&self) -> std::result::Result<GateStore, ApiError> {
        Ok(GateStore {
            kv: RunStore::new(&self.env)?,
            storage: self.state.storage(),
            do_ops: Cell::new(Ops::default()),
            journal_clean: Rc::clone(&self.journal_clean),
        })
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

    async fn handle(
        &self,
        message: GateRequest,
        store: &GateStore,
    ) -> std::result::Result<Response, ApiError> {
        let config = self.config()?;
        let (components, notifier) = outbound(&config.0, &self.env);
        let host = Host {
            store,
            components: &components,
            clock: &WorkerClock,
            notifier: &notifier,
            config: &config.1,
        };
        let (command, owner, is_start) = match message {
            GateRequest::Read { run_id, owner } => {
                let active =
                    self.active.borrow().as_ref().is_some_and(|(id, who)| {
                        *id == run_id && (owner.is_none() || *who == owner)
                    });
                // The kept run is read in place (no await while borrowed);
                // otherwise the stored record is.
                let kept = self.cached.borrow().as_ref().and_then(|run| {
                    (run.record.run_id == run_id).then(|| {
                        details(run, owner.as_deref(), active, &config.1.redactor, now_ms())
                    })
                });
                let (details, wake) = match kept {
                    Some(Some((mut body, wake))) => {
                        add_noted(store, &mut body).await;
                        (body, wake)
                    }
                    Some(None) => return Err(not_found(&run_id)),
                    None => read(&host, &run_id, owner.as_deref(), active).await?,
                };
                // A cold object learns whether its alarm survived (a restart
                // of a local runtime may lose it) and re-arms it.
                if !active && self.alarm.get().is_none() && wake.is_some() {
                    self.ensure_alarm(&run_id, wake).await;
                }
                return Ok(json_response(200, &details));
            }
            GateRequest::Start {
                run_id,
                graph,
                context,
                base_url,
                owner,
                final_callback_url,
                workflow,
                depth,
                parent,
            } => (
                Command::Start {
                    run_id,
                    graph,
                    context,
                    owner: owner.clone(),
                    callback_base: base_url,
                    final_callback_url,
                    workflow,
                    depth,
                    parent,
                },
                owner,
                true,
            ),
            GateRequest::Callback {
                run_id,
                wait_id,
                body,
                base_url,
                token_expires_at,
            } => (
                Command::Callback {
                    run_id,
                    wait_id,
                    body,
                    callback_base: base_url,
                    token_expires_at,
                },
                None,
                false,
            ),
            GateRequest::Heartbeat {
                run_id,
                wait_id,
                body,
                token_expires_at,
            } => (
                Command::Heartbeat {
                    run_id,
                    wait_id,
                    body,
                    token_expires_at: Some(token_expires_at),
                },
                None,
                false,
            ),
            GateRequest::Cancel { run_id, owner } => (
                Command::Cancel {
                    run_id,
                    owner: owner.clone(),
                },
                owner,
                false,
            ),
            GateRequest::Redeliver { run_id, owner } => (
                Command::Redeliver {
                    run_id,
                    owner: owner.clone(),
                },
                owner,
                false,
            ),
            GateRequest::Retry { run_id, owner } => (
                Command::Retry {
                    run_id,
                    owner: owner.clone(),
                },
                owner,
                false,
            ),
        };
        // A trigger or retry that goes on past this invocation answers 202.
        let may_continue = is_start || matches!(command, Command::Retry { .. });
        let _turn = self.lock.lock().await;
        if is_start {
            // A fresh run id names a fresh object: it has no alarm yet.
            self.alarm.set(Some(None));
        }
        let run_id = command_run_id(&command).to_string();
        let segment = self.segment(&host, command, owner).await?;
        self.ensure_alarm(&run_id, segment.wake).await;
        Ok(match segment.reply {
            Reply::Outcome { body, running } => {
                json_response(if running && may_continue { 202 } else { 200 }, &body)
            }
            Reply::Noop(reason) => json_response(200, &noop(reason)),
            Reply::Details(body) => json_response(200, &body),
            Reply::Accepted(body) => json_response(202, &body),
            Reply::Heartbeat {
                expires_at,
                callback_url,
                heartbeat_url,
            } => json_response(
                200,
                &serde_json::json!({
                    "success": true,
                    "expires_at": expires_at,
                    "callback_url": callback_url,
                    "heartbeat_url": heartbeat_url,
                }),
            ),
            Reply::Idle => json_response(200, &serde_json::json!({"success": true})),
        })
    }

    /// The alarm fired: take due deadlines and continue a yielded run. An
    /// alarm with nothing due re-arms from the gate's own storage and costs
    /// no KV operation.
    async fn wake(&self, store: &GateStore) -> std::result::Result<(), ApiError> {
        let _turn = self.lock.lock().await;
        // Whatever is decided below sets the alarm again if needed.
        self.alarm.set(Some(None));
        let meta = self
            .state
            .storage()
            .get::<String>(META_KEY)
            .await
            .map_err(ApiError::from)?
            .and_then(|text| serde_json::from_str::<GateMeta>(&text).ok());
        let Some(meta) = meta else {
            return Ok(());
        };
        let now = now_ms();
        if self.cached.borrow().is_none() && meta.wake_at > now {
            self.ensure_alarm(&meta.run_id, Some(meta.wake_at)).await;
            return Ok(());
        }
        let config = self.config()?;
        let (components, notifier) = outbound(&config.0, &self.env);
        let host = Host {
            store,
            components: &components,
            clock: &WorkerClock,
            notifier: &notifier,
            config: &config.1,
        };
        let command = Command::Wake {
            run_id: meta.run_id.clone(),
        };
        match self.segment(&host, command, None).await {
            Ok(segment) => {
                self.ensure_alarm(&meta.run_id, segment.wake).await;
                Ok(())
            }
            Err(e) => {
                // Try again shortly; the platform also retries a failed handler.
                self.ensure_alarm(&meta.run_id, Some(now + 5_000)).await;
                Err(ApiError::Engine(e))
            }
        }
    }

    /// Runs one segment with the kept run, marking it active meanwhile, and
    /// logs it. The caller holds the lock.
    async fn segment(
        &self,
        host: &Host<'_, GateStore, HttpComponents, WorkerClock, HttpNotifier>,
        command: Command,
        owner: Option<String>,
    ) -> std::result::Result<Segment, EngineError> {
        let run_id = command_run_id(&command).to_string();
        *self.active.borrow_mut() = Some((run_id.clone(), owner));
        let cached = self.cached.borrow_mut().take();
        let started = now_ms();
        let (kept, result) = run_segment(host, cached, command).await;
        *self.cached.borrow_mut() = kept;
        *self.active.borrow_mut() = None;
        log_segment(&run_id, &result, host.store, started);
        result
    }

    /// Sets (or clears) the alarm to `wake`, unless it is already so.
    async fn ensure_alarm(&self, run_id: &str, wake: Option<u64>) {
        if self.alarm.get() == Some(wake) {
            return;
        }
        let storage = self.state.storage();
        let set = match wake {
            Some(at) => {
                let meta = GateMeta {
                    run_id: run_id.to_string(),
                    wake_at: at,
                };
                let when = js_sys::Date::new(&js_sys::Number::from(at as f64));
                // Kept as JSON text, like everything else this object stores.
                let text = serde_json::to_string(&meta).unwrap_or_default();
                match storage.put_raw(META_KEY, text).await {
                    Ok(()) => storage
                        .set_alarm(worker::ScheduledTime::new(when))
                        .await
                        .is_ok(),
                    Err(_) => false,
                }
            }
            // The meta may stay: with no alarm nothing reads it, and the next
            // alarm set rewrites it.
            None => storage.delete_alarm().await.is_ok(),
        };
        // Unknown after a failure, so the next request tries again.
        self.alarm.set(set.then_some(wake));
    }
}

/// How a run's gate reaches components and the caller's receiver.
fn outbound(config: &Config, env: &Env) -> (HttpComponents, HttpNotifier) {
    (
        HttpComponents {
            timeout_ms: config.component_timeout_ms,
            max_response_bytes: config.max_component_response_bytes,
            env: env.clone(),
        },
        HttpNotifier {
            timeout_ms: DELIVERY_TIMEOUT_MS,
            env: env.clone(),
        },
    )
}

/// One JSON line per segment for Workers Logs: what ran, for which run, at
/// what cost. Ids and counts only — never a context, an output or a message
/// that could carry one.
fn log_segment(
    run_id: &str,
    result: &std::result::Result<Segment, EngineError>,
    store: &GateStore,
    started: u64,
) {
    let kv = store.kv.ops();
    let dos = store.do_ops.get();
    // Written by hand: every field is a number or one of our own words, and
    // run ids are URL-safe (checked at the edge), so nothing needs escaping.
    let what = match result {
        Ok(segment) => {
            let report = &segment.report;
            let status = report
                .status
                .map_or_else(|| "null".to_string(), |s| format!("\"{s}\""));
            format!(
                r#""kind":"{}","status":{status},"calls":{}"#,
                report.kind, report.calls
            )
        }
        Err(e) => format!(r#""error":"{}""#, e.code()),
    };
    worker::console_log!(
        r#"{{"event":"segment","run_id":"{run_id}",{what},"kv":{{"reads":{},"writes":{},"lists":{}}},"do":{{"reads":{},"writes":{},"deletes":{}}},"duration_ms":{}}}"#,
        kv.reads,
        kv.writes,
        kv.lists,
        dos.reads,
        dos.writes,
        dos.deletes,
        now_ms().saturating_sub(started)
    );
}

fn command_run_id(command: &Command) -> &str {
    match command {
        Command::Start { run_id, .. }
        | Command::Callback { run_id, .. }
        | Command::Wake { run_id }
        | Command::Cancel { run_id, .. }
        | Command::Redeliver { run_id, .. }
        | Command::Retry { run_id, .. }
        | Command::Heartbeat { run_id, .. } => run_id,
    }
}

fn not_found(run_id: &str) -> ApiError {
    ApiError::Engine(EngineError::NotFound(format!("no run '{run_id}'")))
}
