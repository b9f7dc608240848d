//! `RunGate`: one Durable Object per run, through which every segment and
//! read of that run passes. It holds what the core's segment logic cannot:
//! - the lock that serialises segments, so two callbacks never resume one
//!   wait twice;
//! - the run as it last left it, so it never depends on KV catching up;
//! - the pace of KV writes (`core::pacing`): at most one a second per run,
//!   the requests applied meanwhile kept in its storage until the write;
//! - callbacks that arrive while a segment runs (its component may await
//!   its own callback before it answers): kept, answered `202`, and applied
//!   when the segment ends — a callback never waits on a component call;
//! - the journal of call outcomes, and the alarm that makes the run act
//!   with no request arriving: deadlines, continuation after a yield,
//!   delivery, and the write that is due.
//!
//! Everything else is `core::segment`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use std::time::Duration;

use futures::channel::oneshot;
use futures::future::{select, Either};
use futures::lock::Mutex;
use serde_json::Value;
use worker::{durable_object, js_sys, Delay, DurableObject, Env, Request, Response, Result, State};

use super::components::{HttpComponents, HttpNotifier};
use super::config::Config;
use super::http::{json_response, ApiError};
use super::now_ms;
use super::store::{GateStore, JournalMemory, Ops, RunStore};
use crate::core::error::EngineError;
use crate::core::pacing::{earliest, WritePacer};
use crate::core::record::RunStatus;
use crate::core::run::Run;
use crate::core::segment::{
    add_noted, details, flush, read, run_segment, Clock, Command, GateConfig, Host, Reply, Segment,
};
use crate::core::view::noop_answer;

pub use super::gate_request::GateRequest;

/// The gate's own record of its run, kept beside the alarm so an alarm
/// knows which run it is for and whether anything is due — without a KV read.
const META_KEY: &str = "gate";

/// Final callbacks get this long to answer.
const DELIVERY_TIMEOUT_MS: u64 = 10_000;

/// `{"run_id", "wake_at"}` under `META_KEY`: read and written through
/// `Value`, which costs the module no parser of its own.
struct GateMeta {
    run_id: String,
    wake_at: u64,
}

impl GateMeta {
    fn parse(text: &str) -> Option<Self> {
        let value: Value = serde_json::from_str(text).ok()?;
        Some(Self {
            run_id: value.get("run_id")?.as_str()?.to_string(),
            wake_at: value.get("wake_at")?.as_u64()?,
        })
    }

    fn text(&self) -> String {
        // Run ids are URL-safe (checked at the edge): nothing to escape.
        format!(
            r#"{{"run_id":"{}","wake_at":{}}}"#,
            self.run_id, self.wake_at
        )
    }
}

/// The platform's clock, or, while kept requests are applied again after a
/// restart, the time each arrived.
struct WorkerClock {
    fixed: Cell<Option<u64>>,
}

impl Clock for WorkerClock {
    fn now(&self) -> u64 {
        self.fixed.get().unwrap_or_else(now_ms)
    }
}

#[durable_object]
pub struct RunGate {
    state: State,
    env: Env,
    /// Held by one segment at a time (and by the write that follows it).
    lock: Mutex<()>,
    /// Parsed on first use; vars and secrets do not change under a live object.
    config: RefCell<Option<Rc<(Config, GateConfig)>>>,
    /// The run as the last segment left it — possibly ahead of KV by what
    /// the kept requests hold — taken out while a segment executes.
    cached: RefCell<Option<Run>>,
    /// The run id and owner of the segment executing now, if any.
    active: RefCell<Option<(String, Option<String>)>>,
    /// The alarm as this object last set it: `None` until known.
    alarm: Cell<Option<Option<u64>>>,
    /// What the object knows of its call journal (nothing when cold).
    journal: Rc<RefCell<JournalMemory>>,
    clock: WorkerClock,
    /// When the record may next be written to KV, and whether it must be.
    pacer: Cell<WritePacer>,
    inbox: RefCell<Inbox>,
}

/// Requests kept in the object's storage until the KV record holds them.
struct Inbox {
    /// Storage may hold requests the kept run has not applied: true when
    /// cold, and again whenever the kept run is dropped.
    unchecked: bool,
    /// Kept requests the kept run has applied: forgotten after the next write.
    applied: Vec<String>,
    /// Callbacks that arrived while a segment ran: kept, not yet applied.
    queued: VecDeque<Queued>,
    /// Orders keys kept in the same millisecond.
    counter: u32,
}

/// A callback kept while a segment ran, and where its answer goes if its
/// sender is still waiting for it.
struct Queued {
    key: String,
    /// When it arrived.
    at: u64,
    request: GateRequest,
    task_id: Option<String>,
    answer: oneshot::Sender<Response>,
}

/// How long a callback that found a segment running waits for its own
/// answer before it is told `202 accepted` (it is kept either way). Long
/// enough for a burst of callbacks to be answered in full; short enough
/// that a component awaiting its own callback is not held up for long.
const QUEUED_ANSWER_WAIT_MS: u64 = 3_000;

/// How many queued callbacks one holder of the lock applies before it lets
/// go (and answers its own request).
const DRAIN_PER_TURN: usize = 16;

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
            journal: Rc::default(),
            clock: WorkerClock {
                fixed: Cell::new(None),
            },
            pacer: Cell::new(WritePacer::default()),
            inbox: RefCell::new(Inbox {
                unchecked: true,
                applied: Vec::new(),
                queued: VecDeque::new(),
                counter: 0,
            }),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        // Parsed from text with the same deserializer that reads kept requests.
        let message: GateRequest = match req
            .text()
            .await
            .map_err(|e| e.to_string())
            .and_then(|text| GateRequest::parse(&text).ok_or_else(|| "not understood".into()))
        {
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

type GateHost<'a> = Host<'a, GateStore, HttpComponents, WorkerClock, HttpNotifier>;

impl RunGate {
    fn store(&self) -> std::result::Result<GateStore, ApiError> {
        Ok(GateStore {
            env: self.env.clone(),
            kv: RunStore::new(&self.env)?,
            storage: self.state.storage(),
            do_ops: Cell::new(Ops::default()),
            journal: Rc::clone(&self.journal),
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
            clock: &self.clock,
            notifier: &notifier,
            config: &config.1,
        };
        if let GateRequest::Read { run_id, owner } = &message {
            return self.read(&host, run_id, owner.as_deref()).await;
        }
        let task_id = match &message {
            GateRequest::Callback { body, .. } | GateRequest::Heartbeat { body, .. } => body
                .get("task_id")
                .and_then(Value::as_str)
                .map(str::to_string),
            _ => None,
        };
        // A callback never waits for a segment (whose component may be
        // waiting for this very callback before it answers): it is kept and
        // applied when the segment ends. Everything else takes its turn.
        let _turn = match self.lock.try_lock() {
            Some(turn) => turn,
            None if matches!(message, GateRequest::Callback { .. }) => {
                return self.queue(&host, message, task_id).await;
            }
            None => self.lock.lock().await,
        };
        let is_start = matches!(message, GateRequest::Start { .. });
        if is_start {
            // A fresh run id names a fresh object: no alarm, nothing kept.
            self.alarm.set(Some(None));
            self.inbox.borrow_mut().unchecked = false;
        }
        // Kept only if its change cannot be written at once.
        let text = (!is_start).then(|| serde_json::to_string(&message).unwrap_or_default());
        let Some((command, owner)) = command_of(message, None) else {
            return Err(ApiError::Internal("not a segment".into()));
        };
        // A trigger or retry that goes on past this invocation answers 202.
        let may_continue = is_start || matches!(command, Command::Retry { .. });
        let run_id = command_run_id(&command).to_string();
        self.catch_up(&host, &run_id).await?;
        let started = now_ms();
        // Taken before the segment: callbacks it queues sort after it.
        let key = self.next_key(started);
        let segment = self.segment(&host, command, owner).await;
        let mut segment = match segment {
            Ok(segment) => segment,
            Err(e) => {
                self.settle(&host, &run_id, DRAIN_PER_TURN).await?;
                return Err(ApiError::Engine(e));
            }
        };
        if segment.dirty {
            self.changed(started);
            if self.pacer.get().may_write(now_ms()) {
                // Written before it is answered, so the answer is the run as
                // stored (writing may truncate its trace, or fail it).
                self.write(&host).await?;
                if let Some(run) = self.cached.borrow().as_ref() {
                    segment.refresh(run, &config.1);
                }
            } else if let Some(text) = text {
                self.keep(&host, key, text).await?;
            }
        }
        // Rendered now: what the queue applies next is not this request's.
        let response = self.render(segment.reply, may_continue, task_id.as_deref());
        self.settle(&host, &run_id, DRAIN_PER_TURN).await?;
        Ok(response)
    }

    /// The answer to a segment's request, from its reply and the kept run.
    fn render(&self, reply: Reply, may_continue: bool, task_id: Option<&str>) -> Response {
        match reply {
            Reply::Outcome { body, running } => {
                json_response(if running && may_continue { 202 } else { 200 }, &body)
            }
            Reply::Noop(reason) => {
                let kept = self.cached.borrow();
                let run = kept.as_ref().map(|run| &run.record);
                json_response(200, &noop_answer(reason, run, task_id))
            }
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
        }
    }

    /// `GET /runs/{id}`: the kept run when there is one, else KV's record.
    /// A read never waits for a segment: while one runs, the record stored
    /// last is shown as `running`.
    async fn read(
        &self,
        host: &GateHost<'_>,
        run_id: &str,
        owner: Option<&str>,
    ) -> std::result::Result<Response, ApiError> {
        let active =
            self.active.borrow().as_ref().is_some_and(|(id, who)| {
                id == run_id && (owner.is_none() || who.as_deref() == owner)
            });
        // A cold object may hold requests newer than KV's record: those are
        // applied first, so a read never goes back in time.
        if !active && self.cached.borrow().is_none() && self.inbox.borrow().unchecked {
            let _turn = self.lock.lock().await;
            self.catch_up(host, run_id).await?;
            self.settle(host, run_id, DRAIN_PER_TURN).await?;
        }
        // The kept run is read in place (no await while borrowed);
        // otherwise the stored record is.
        let kept = self.cached.borrow().as_ref().and_then(|run| {
            (run.record.run_id == run_id)
                .then(|| details(run, owner, active, &host.config.redactor, now_ms()))
        });
        let (details, wake) = match kept {
            Some(Some((mut body, wake))) => {
                add_noted(host.store, &mut body).await;
                (body, wake)
            }
            Some(None) => return Err(not_found(run_id)),
            None => read(host, run_id, owner, active).await?,
        };
        // A cold object learns whether its alarm survived (a restart of a
        // local runtime may lose it) and re-arms it.
        if !active && self.alarm.get().is_none() && wake.is_some() {
            self.ensure_alarm(run_id, wake).await;
        }
        Ok(json_response(200, &details))
    }

    /// A callback that arrived while a segment runs: kept in storage (that
    /// is what makes it safe to answer) and queued for the segment's holder
    /// to apply when it ends. It is answered as it was applied, or, if that
    /// takes longer than `QUEUED_ANSWER_WAIT_MS`, `202 accepted`.
    async fn queue(
        &self,
        host: &GateHost<'_>,
        message: GateRequest,
        task_id: Option<String>,
    ) -> std::result::Result<Response, ApiError> {
        let GateRequest::Callback { run_id, .. } = &message else {
            return Err(ApiError::Internal("only callbacks are queued".into()));
        };
        let run_id = run_id.clone();
        let text = serde_json::to_string(&message).unwrap_or_default();
        // Its key holds its arrival time, at which it is judged.
        let now = now_ms();
        let key = self.next_key(now);
        let (answer, answered) = oneshot::channel();
        // Queued before the write is awaited: the holder may finish meanwhile.
        self.inbox.borrow_mut().queued.push_back(Queued {
            key: key.clone(),
            at: now,
            request: message,
            task_id: task_id.clone(),
            answer,
        });
        host.store
            .keep_request(&key, text)
            .await
            .map_err(ApiError::Engine)?;
        // Answered by whoever holds the lock when it applies the callback:
        // the holder of the segment under way (up to `DRAIN_PER_TURN`), or
        // the alarm it set to apply the rest.
        let waited = Delay::from(Duration::from_millis(QUEUED_ANSWER_WAIT_MS));
        if let Either::Left((Ok(response), _)) = select(answered, waited).await {
            return Ok(response);
        }
        let mut answer = serde_json::json!({
            "success": true,
            "accepted": true,
            "status": "running",
            "run_id": run_id,
        });
        if let Some(task_id) = task_id {
            answer["task_id"] = Value::from(task_id);
        }
        Ok(json_response(202, &answer))
    }

    /// The alarm fired: write what waits to be written, take due deadlines,
    /// continue a yielded run, deliver. An alarm with nothing due re-arms
    /// from the gate's own storage and costs no KV operation.
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
            .and_then(|text| GateMeta::parse(&text));
        let Some(meta) = meta else {
            return Ok(());
        };
        let now = now_ms();
        let cold = self.cached.borrow().is_none();
        if cold && meta.wake_at > now && self.inbox.borrow().queued.is_empty() {
            self.ensure_alarm(&meta.run_id, Some(meta.wake_at)).await;
            return Ok(());
        }
        let config = self.config()?;
        let (components, notifier) = outbound(&config.0, &self.env);
        let host = Host {
            store,
            components: &components,
            clock: &self.clock,
            notifier: &notifier,
            config: &config.1,
        };
        let run_id = meta.run_id;
        self.catch_up(&host, &run_id).await?;
        // The run acts when it is due and a write may follow at once (a
        // deadline is taken at most a second late) — except a continuation,
        // which goes on at once and is kept like a request: replayed in its
        // place, it makes the same calls, their outcomes from the journal.
        let due = self
            .run_wake()
            .is_none_or(|wake| wake.is_some_and(|w| w <= now));
        if due && (self.pacer.get().may_write(now) || self.continuing()) {
            let command = Command::Wake {
                run_id: run_id.clone(),
            };
            let key = self.next_key(now);
            match self.segment(&host, command, None).await {
                Ok(segment) => {
                    if segment.dirty {
                        self.changed(now);
                        if !self.pacer.get().may_write(now_ms()) {
                            let wake = GateRequest::Wake {
                                run_id: run_id.clone(),
                            };
                            let text = serde_json::to_string(&wake).unwrap_or_default();
                            self.keep(&host, key, text).await?;
                        }
                    }
                }
                Err(e) => {
                    // Try again shortly; the platform also retries a failed handler.
                    self.ensure_alarm(&run_id, Some(now + 5_000)).await;
                    self.settle(&host, &run_id, usize::MAX).await?;
                    return Err(ApiError::Engine(e));
                }
            }
        }
        // No one waits on an alarm: it applies all that is queued.
        self.settle(&host, &run_id, usize::MAX).await
    }

    /// Applies up to `limit` queued callbacks, writes the record when it is
    /// due, and sets the alarm. Every holder of the lock ends with this
    /// before it lets go (no await after it): whatever stays queued is
    /// applied by the alarm, set for now while anything is queued — so no
    /// queued callback is left behind, and no holder's own answer waits
    /// behind a stream of arrivals.
    async fn settle(
        &self,
        host: &GateHost<'_>,
        run_id: &str,
        limit: usize,
    ) -> std::result::Result<(), ApiError> {
        let mut applied = 0;
        loop {
            while applied < limit {
                applied += 1;
                let next = self.inbox.borrow_mut().queued.pop_front();
                let Some(queued) = next else { break };
                let Some((command, owner)) = command_of(queued.request, Some(queued.at)) else {
                    continue;
                };
                let started = now_ms();
                let result = self.segment(host, command, owner).await;
                self.inbox.borrow_mut().applied.push(queued.key);
                let response = match result {
                    Ok(segment) => {
                        if segment.dirty {
                            self.changed(started);
                        }
                        self.render(segment.reply, false, queued.task_id.as_deref())
                    }
                    Err(e) => ApiError::Engine(e).into_response(),
                };
                // Its sender may have stopped waiting (answered 202).
                let _ = queued.answer.send(response);
                if self.cached.borrow().is_none() {
                    // The kept run was dropped: the queue is in storage, and
                    // the next turn replays all of it.
                    self.drop_kept();
                    break;
                }
            }
            let pacer = self.pacer.get();
            if pacer.dirty_since().is_some() && pacer.may_write(now_ms()) {
                self.write(host).await?;
            }
            if !self.inbox.borrow().queued.is_empty() {
                self.ensure_alarm(run_id, Some(now_ms())).await;
            } else if let Some(wake) = self.run_wake() {
                // Unknown without a kept run (it was dropped): the alarm stays.
                // The run acts when its change can be written at once, or
                // needs no writing to be safe (`wake`).
                let pacer = self.pacer.get();
                let wake = match self.continuing() {
                    true => wake,
                    false => wake.map(|w| w.max(pacer.allowed_at())),
                };
                let wake = earliest(wake, pacer.flush_at());
                self.ensure_alarm(run_id, wake).await;
            }
            if self.inbox.borrow().queued.is_empty() || applied >= limit {
                return Ok(());
            }
        }
    }

    /// Writes the kept run to KV with everything applied since the last
    /// write, then forgets the kept requests that write covers.
    async fn write(&self, host: &GateHost<'_>) -> std::result::Result<(), ApiError> {
        let Some(mut run) = self.cached.borrow_mut().take() else {
            return Ok(());
        };
        let since = self.pacer.get().dirty_since().unwrap_or(0);
        let covered = std::mem::take(&mut self.inbox.borrow_mut().applied);
        let started = now_ms();
        let writes_before = host.store.kv.ops().writes;
        let result = flush(host, &mut run, since).await;
        match result {
            Ok(_) => {
                // The write, for the operator's log: segments report none
                // when theirs came later, with what followed them.
                worker::console_log!(
                    r#"{{"event":"write","run_id":"{}","kept_requests":{},"kv_writes":{},"duration_ms":{}}}"#,
                    run.record.run_id,
                    covered.len(),
                    host.store.kv.ops().writes - writes_before,
                    now_ms().saturating_sub(started)
                );
                let mut pacer = self.pacer.get();
                pacer.wrote(now_ms());
                self.pacer.set(pacer);
                *self.cached.borrow_mut() = Some(run);
                if !covered.is_empty() {
                    // Left behind, they are applied again as no-ops.
                    let _ = host.store.forget_requests(&covered).await;
                }
                Ok(())
            }
            Err(e) => {
                self.drop_kept();
                Err(ApiError::Engine(e))
            }
        }
    }

    /// Applies the requests kept in storage that the kept run lacks (a cold
    /// object, or one whose run was dropped), each at the time it arrived.
    async fn catch_up(
        &self,
        host: &GateHost<'_>,
        run_id: &str,
    ) -> std::result::Result<(), ApiError> {
        if !self.inbox.borrow().unchecked {
            return Ok(());
        }
        // Unchecked, there is no kept run and nothing applied (`drop_kept`).
        let kept = host.store.kept_requests().await.map_err(ApiError::Engine)?;
        {
            let mut inbox = self.inbox.borrow_mut();
            inbox.unchecked = false;
            // Queued callbacks the listing holds are applied below, in their
            // place; one whose write had not landed when storage was listed
            // stays queued, for `settle`.
            inbox
                .queued
                .retain(|q| !kept.iter().any(|(key, _)| *key == q.key));
        }
        for (key, text) in kept {
            let at = key
                .get(..13)
                .and_then(|t| t.parse::<u64>().ok())
                .unwrap_or(0);
            self.inbox.borrow_mut().applied.push(key);
            let Some((command, owner)) = GateRequest::parse(&text)
                .and_then(|request| command_of(request, Some(at)))
                .filter(|(c, _)| command_run_id(c) == run_id)
            else {
                continue;
            };
            self.clock.fixed.set(Some(at));
            // Each replayed segment may need any of the journal's outcomes.
            self.journal.borrow_mut().known = false;
            let result = self.segment(host, command, owner).await;
            self.clock.fixed.set(None);
            if let Ok(segment) = result {
                if segment.dirty {
                    self.changed(at);
                }
            }
            if self.cached.borrow().is_none() {
                // Its record could not be read: try again next turn.
                self.drop_kept();
                return Err(ApiError::Engine(EngineError::Storage(
                    "the run could not be loaded to apply what it was sent".into(),
                )));
            }
        }
        Ok(())
    }

    /// Keeps the request of the segment that just ran, whose change waits
    /// for the next write.
    async fn keep(
        &self,
        host: &GateHost<'_>,
        key: String,
        text: String,
    ) -> std::result::Result<(), ApiError> {
        match host.store.keep_request(&key, text).await {
            Ok(()) => {
                self.inbox.borrow_mut().applied.push(key);
                Ok(())
            }
            Err(e) => {
                // Not durable, so not applied: rebuild from what is.
                self.drop_kept();
                Err(ApiError::Engine(e))
            }
        }
    }

    /// When the kept run must next act on its own (deadline, continuation,
    /// delivery); `None` when no run is kept, so it is not known.
    fn run_wake(&self) -> Option<Option<u64>> {
        self.cached
            .borrow()
            .as_ref()
            .map(|run| run.next_wake(now_ms()))
    }

    /// The kept run yielded and goes on as soon as the alarm fires.
    fn continuing(&self) -> bool {
        self.cached
            .borrow()
            .as_ref()
            .is_some_and(|run| run.status() == &RunStatus::Running)
    }

    fn changed(&self, at: u64) {
        let mut pacer = self.pacer.get();
        pacer.changed(at);
        self.pacer.set(pacer);
    }

    /// Forgets the kept run: the next turn rebuilds it from KV and the kept
    /// requests.
    fn drop_kept(&self) {
        *self.cached.borrow_mut() = None;
        // The run rebuilt from KV needs the journal's outcomes again.
        self.journal.borrow_mut().known = false;
        let mut pacer = self.pacer.get();
        pacer.forget_changes();
        self.pacer.set(pacer);
        let mut inbox = self.inbox.borrow_mut();
        inbox.unchecked = true;
        inbox.queued.clear();
        inbox.applied.clear();
    }

    /// A storage key that sorts by arrival: the time, then a counter.
    fn next_key(&self, now: u64) -> String {
        let mut inbox = self.inbox.borrow_mut();
        inbox.counter = inbox.counter.wrapping_add(1);
        format!("{now:013}-{:010}", inbox.counter)
    }

    /// Runs one segment with the kept run, marking it active meanwhile, and
    /// logs it. The caller holds the lock.
    async fn segment(
        &self,
        host: &GateHost<'_>,
        command: Command,
        owner: Option<String>,
    ) -> std::result::Result<Segment, EngineError> {
        let run_id = command_run_id(&command).to_string();
        *self.active.borrow_mut() = Some((run_id.clone(), owner));
        let cached = self.cached.borrow_mut().take();
        let before = (now_ms(), host.store.kv.ops(), host.store.do_ops.get());
        let (kept, result) = run_segment(host, cached, command).await;
        if kept.is_none() {
            self.drop_kept();
        }
        *self.cached.borrow_mut() = kept;
        *self.active.borrow_mut() = None;
        log_segment(&run_id, &result, host.store, before);
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
                let text = meta.text();
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

/// The segment a request asks for, and the key it came with (`None` for a
/// read); a callback kept for later is judged at `arrived`.
fn command_of(message: GateRequest, arrived: Option<u64>) -> Option<(Command, Option<String>)> {
    Some(match message {
        GateRequest::Read { .. } => return None,
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
                received_at: arrived,
            },
            None,
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
        ),
        GateRequest::Cancel { run_id, owner } => (
            Command::Cancel {
                run_id,
                owner: owner.clone(),
            },
            owner,
        ),
        GateRequest::Redeliver { run_id, owner } => (
            Command::Redeliver {
                run_id,
                owner: owner.clone(),
            },
            owner,
        ),
        GateRequest::Retry { run_id, owner } => (
            Command::Retry {
                run_id,
                owner: owner.clone(),
            },
            owner,
        ),
        GateRequest::Wake { run_id } => (Command::Wake { run_id }, None),
    })
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
    (started, kv_before, do_before): (u64, Ops, Ops),
) {
    // This segment's own: a request may apply several (queued callbacks).
    let kv = store.kv.ops().since(kv_before);
    let dos = store.do_ops.get().since(do_before);
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
