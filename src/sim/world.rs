//! Simulated Cloudflare, as the gate sees it: KV with its limit of one
//! write a second per key (remembered whatever restarts), Durable Object
//! storage durable per put, alarms that fire at least once, components and
//! a clock. Every operation is an await point at which the scheduler may
//! run another task or crash the object.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use serde_json::{json, Value};

use super::claims::{Rpc, RpcAnswer};
use super::source::Source;
use crate::core::driver::Components;
use crate::core::error::EngineError;
use crate::core::gate::storage::{ObjectStorage, OUTCOME_PREFIX};
use crate::core::gate::Sleep;
use crate::core::listing::RunSummary;
use crate::core::pacing::MIN_WRITE_INTERVAL_MS;
use crate::core::protocol::CallFailure;
use crate::core::run::{Call, CallOutcome, DeliveryOutcome};
use crate::core::segment::{Clock, Notifier};
use crate::core::store::{Records, TaskIndex, TaskIndexStore};

/// How long a write may stay unseen at locations other than its own
/// (Cloudflare: "up to 60 seconds or more"; reads cached at the edge).
pub const KV_LAG_MS: u64 = 60_000;

/// How long a component may take before the gate's fetch gives up.
pub const COMPONENT_TIMEOUT_MS: u64 = 10_000;

pub type Shared = Rc<RefCell<World>>;

/// A KV value with its expiry.
#[derive(Debug, Clone)]
pub struct KvEntry {
    pub text: String,
    pub expires_at: u64,
}

/// One run's Durable Object: its storage and alarm survive crashes.
#[derive(Debug, Default)]
pub struct ObjectState {
    pub storage: BTreeMap<String, String>,
    pub alarm: Option<u64>,
    /// The time of the alarm whose handler runs now. workerd deletes the
    /// alarm when its handler succeeds unless it was set meanwhile: set to
    /// this very time (and to nothing else first), it counts as unchanged
    /// and goes with it.
    pub firing: Option<u64>,
    /// Set to another time while the handler ran.
    pub moved: bool,
}

/// A component call as the component saw it.
#[derive(Debug, Clone)]
pub struct CallSeen {
    pub at: u64,
    pub run_id: String,
    pub wait_id: String,
    pub idempotency_key: String,
    pub ends_at: u64,
    /// The deadline the component was given with its callback URL.
    pub expires_at: u64,
}

/// Something a component set in motion: a daemon's callback or heartbeat.
#[derive(Debug, Clone)]
pub struct Dispatch {
    pub at: u64,
    pub run_id: String,
    pub wait_id: String,
    pub task_id: String,
    pub token_expires_at: u64,
    pub what: DaemonAct,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DaemonAct {
    /// The result, with an id that tells this callback's data apart.
    Callback {
        id: u64,
        success: bool,
    },
    Heartbeat {
        extend_seconds: u64,
    },
}

/// The simulated world: every store, the clock, and what was seen.
pub struct World {
    pub now: u64,
    pub source: Source,
    pub kv: BTreeMap<String, KvEntry>,
    /// When each key was last written: KV refuses a second write within a
    /// second, and this outlives every restart of the gates.
    pub kv_written: BTreeMap<String, u64>,
    pub objects: BTreeMap<String, ObjectState>,
    /// KV writes under way, by the object that issued them: a crash lands
    /// each or not.
    pub kv_in_flight: BTreeMap<u64, (String, String, KvEntry)>,
    /// Per key, what it held before its latest write, and when and where
    /// that write was made: for `KV_LAG_MS` a read elsewhere may see it.
    pub kv_before: BTreeMap<String, (Option<KvEntry>, u64, u32)>,
    /// Where each object runs now. It stays put, except that after a crash
    /// it may come back in another location.
    pub locations: BTreeMap<String, u32>,
    /// When each object's reads of KV lagged.
    pub lagged: BTreeMap<String, Vec<u64>>,
    pub calls: Vec<CallSeen>,
    /// Idempotency keys whose outcome reached the journal, ever.
    pub journaled: BTreeSet<String>,
    /// What components set in motion, for the scenario to schedule.
    pub dispatched: Vec<Dispatch>,
    pub violations: Vec<String>,
    /// Counts anything that moved: the scheduler advances time only when
    /// a full round of polls moves nothing.
    pub progress: u64,
    pub next_id: u64,
    /// How components and their daemons behave in this schedule.
    pub daemon_knobs: DaemonKnobs,
    /// Per mille: the final callback's receiver does not answer `200`.
    pub receiver_fails: u64,
    pub deliveries: Vec<Delivery>,
    /// When tasks waiting on time are due.
    pub wakeups: BTreeSet<u64>,
    /// What each component answered, by idempotency key: a repeat of a call
    /// (after a crash lost its outcome) gets the same answer, as a
    /// component that recognises the key gives.
    pub answers: BTreeMap<String, (u64, CallOutcome)>,
    /// A line per operation, when tracing.
    pub trace: Option<Vec<String>>,
    /// Sub-requests a task has sent another object, not yet begun there.
    pub rpcs: Vec<(u64, String, Rpc)>,
    /// Their answers, until their asker takes them.
    pub rpc_answers: BTreeMap<u64, Result<RpcAnswer, String>>,
}

/// How pending components' daemons behave in this schedule, per mille.
#[derive(Debug, Clone, Copy, Default)]
pub struct DaemonKnobs {
    pub early: u64,
    pub late: u64,
    pub never: u64,
    pub duplicate: u64,
    pub heartbeat: u64,
    pub fail_result: u64,
    /// Components that hang past the timeout, answer a failure.
    pub hang: u64,
    pub fail: u64,
}

impl World {
    pub fn new(source: Source, now: u64) -> Self {
        Self {
            now,
            source,
            kv: BTreeMap::new(),
            kv_written: BTreeMap::new(),
            objects: BTreeMap::new(),
            kv_in_flight: BTreeMap::new(),
            kv_before: BTreeMap::new(),
            locations: BTreeMap::new(),
            lagged: BTreeMap::new(),
            calls: Vec::new(),
            journaled: BTreeSet::new(),
            dispatched: Vec::new(),
            violations: Vec::new(),
            progress: 0,
            next_id: 0,
            daemon_knobs: DaemonKnobs::default(),
            receiver_fails: 0,
            deliveries: Vec::new(),
            wakeups: BTreeSet::new(),
            answers: BTreeMap::new(),
            trace: None,
            rpcs: Vec::new(),
            rpc_answers: BTreeMap::new(),
        }
    }

    pub fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn note(&mut self, line: impl FnOnce() -> String) {
        if let Some(trace) = self.trace.as_mut() {
            let at = self.now - super::T0;
            trace.push(format!("{at:>8} {}", line()));
        }
    }

    pub fn violation(&mut self, what: String) {
        self.violations.push(format!("t={} {what}", self.now));
    }

    /// A KV write by `object` landing now: refused within a second of the
    /// last.
    pub fn kv_land(&mut self, object: &str, key: &str, entry: KvEntry) -> Result<(), EngineError> {
        if let Some(last) = self.kv_written.get(key) {
            if self.now < last + MIN_WRITE_INTERVAL_MS {
                let gap = self.now - last;
                self.violation(format!("second KV write to {key} within {gap} ms"));
                return Err(EngineError::Storage(
                    "429: one write a second per key".into(),
                ));
            }
        }
        self.note(|| format!("  kv write {key}"));
        self.kv_written.insert(key.to_string(), self.now);
        let location = self.location(object);
        let before = self.kv.insert(key.to_string(), entry);
        self.kv_before
            .insert(key.to_string(), (before, self.now, location));
        Ok(())
    }

    pub fn location(&self, object: &str) -> u32 {
        self.locations.get(object).copied().unwrap_or(0)
    }

    /// KV as read by `object`: where the key was last written, the latest
    /// value; elsewhere, for a while after a write, maybe the one before.
    pub fn kv_read_from(&mut self, object: &str, key: &str) -> Option<String> {
        let here = self.location(object);
        let lagging = match self.kv_before.get(key) {
            Some((_, at, there)) => *there != here && self.now < at + KV_LAG_MS,
            None => false,
        };
        if lagging && self.source.chance(500) {
            self.note(|| format!("  kv read of {key} lags"));
            let now = self.now;
            self.lagged.entry(object.to_string()).or_default().push(now);
            return self.kv_before[key]
                .0
                .as_ref()
                .filter(|e| e.expires_at > self.now)
                .map(|e| e.text.clone());
        }
        self.kv_read(key)
    }

    pub fn kv_read(&self, key: &str) -> Option<String> {
        self.kv
            .get(key)
            .filter(|e| e.expires_at > self.now)
            .map(|e| e.text.clone())
    }
}

/// An await point: pending once (another task may run, or the object may
/// crash here), then ready when the clock reaches `ready_at`.
pub struct Until {
    world: Shared,
    ready_at: u64,
    yielded: bool,
}

impl Future for Until {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        let mut world = self.world.borrow_mut();
        if !self.yielded {
            world.progress += 1;
            let at = self.ready_at;
            world.wakeups.insert(at);
            drop(world);
            self.yielded = true;
            return Poll::Pending;
        }
        if world.now >= self.ready_at {
            world.progress += 1;
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// Waits `ms` of simulated time (at least one scheduling point).
pub fn after(world: &Shared, ms: u64) -> Until {
    let ready_at = world.borrow().now + ms;
    Until {
        world: Rc::clone(world),
        ready_at,
        yielded: false,
    }
}

/// A latency drawn from the world's source.
fn latency(world: &Shared, lo: u64, hi: u64) -> u64 {
    world.borrow_mut().source.between(lo, hi)
}

/// KV as the gate reaches it: records by run id.
pub struct SimRecords {
    pub world: Shared,
    /// The object issuing the operations (its in-flight writes land or not
    /// when it crashes).
    pub object: String,
}

pub fn record_key(run_id: &str) -> String {
    format!("runs/{run_id}")
}

impl Records for SimRecords {
    async fn load(&self, run_id: &str) -> Result<Option<String>, EngineError> {
        after(&self.world, latency(&self.world, 1, 30)).await;
        let key = record_key(run_id);
        Ok(self.world.borrow_mut().kv_read_from(&self.object, &key))
    }

    async fn save(
        &self,
        run_id: &str,
        text: String,
        ttl_secs: u64,
        _summary: &RunSummary,
    ) -> Result<(), EngineError> {
        let key = record_key(run_id);
        let id = {
            let mut world = self.world.borrow_mut();
            let entry = KvEntry {
                text,
                expires_at: world.now + ttl_secs * 1000,
            };
            let id = world.id();
            world
                .kv_in_flight
                .insert(id, (self.object.clone(), key.clone(), entry));
            id
        };
        after(&self.world, latency(&self.world, 1, 40)).await;
        let mut world = self.world.borrow_mut();
        let Some((_, key, entry)) = world.kv_in_flight.remove(&id) else {
            return Err(EngineError::Storage("lost".into()));
        };
        world.kv_land(&self.object, &key, entry)
    }
}

impl TaskIndexStore for SimRecords {
    async fn claim_task(
        &self,
        _: &str,
        entry: &TaskIndex,
        _: Option<&TaskIndex>,
        _: u64,
    ) -> Result<TaskIndex, EngineError> {
        Ok(entry.clone())
    }

    async fn wait_open(&self, _: &str, _: &str, _: &str) -> bool {
        false
    }
}

/// A run's Durable Object storage: each put durable as it is made.
pub struct SimObject {
    pub world: Shared,
    pub run_id: String,
}

impl SimObject {
    fn with<T>(&self, f: impl FnOnce(&mut ObjectState, &mut World) -> T) -> T {
        let mut world = self.world.borrow_mut();
        let mut object = world.objects.remove(&self.run_id).unwrap_or_default();
        let out = f(&mut object, &mut world);
        world.objects.insert(self.run_id.clone(), object);
        out
    }
}

impl ObjectStorage for SimObject {
    async fn get(&self, key: &str) -> Result<Option<String>, EngineError> {
        let value = self.with(|o, _| o.storage.get(key).cloned());
        after(&self.world, latency(&self.world, 0, 2)).await;
        Ok(value)
    }

    /// Applied as it is issued, as Durable Object storage applies writes in
    /// the order they are made (a list that follows sees them).
    async fn put(&self, key: &str, value: String) -> Result<(), EngineError> {
        self.with(|o, world| {
            world.note(|| format!("  {} put {key}", self.run_id));
            if let Some(call_key) = key.strip_prefix(OUTCOME_PREFIX) {
                world.journaled.insert(call_key.to_string());
            }
            o.storage.insert(key.to_string(), value);
        });
        after(&self.world, latency(&self.world, 0, 3)).await;
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, String)>, EngineError> {
        let found = self.with(|o, _| {
            o.storage
                .range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k[prefix.len()..].to_string(), v.clone()))
                .collect()
        });
        after(&self.world, latency(&self.world, 0, 3)).await;
        Ok(found)
    }

    async fn delete(&self, prefix: &str, keys: &[String]) -> Result<(), EngineError> {
        self.with(|o, world| {
            world.note(|| format!("  {} delete {prefix}{keys:?}", self.run_id));
            for key in keys {
                o.storage.remove(&format!("{prefix}{key}"));
            }
        });
        after(&self.world, latency(&self.world, 0, 3)).await;
        Ok(())
    }

    async fn set_alarm(&self, at: Option<u64>) -> Result<(), EngineError> {
        self.with(|o, world| {
            world.note(|| {
                format!(
                    "  {} alarm set {:?}",
                    self.run_id,
                    at.map(|t| t - super::T0)
                )
            });
            o.alarm = at;
            if o.firing.is_some() && at != o.firing {
                o.moved = true;
            }
        });
        after(&self.world, latency(&self.world, 0, 2)).await;
        Ok(())
    }
}

/// The simulated clock: moves only when the scheduler moves it.
pub struct SimClock {
    pub world: Shared,
}

impl Clock for SimClock {
    fn now(&self) -> u64 {
        self.world.borrow().now
    }
}

impl Sleep for SimClock {
    async fn sleep(&self, ms: u64) {
        after(&self.world, ms).await;
    }
}

/// A final callback as its receiver saw it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub at: u64,
    pub run_id: String,
    /// The event's type: `run.completed`, `run.failed`, `run.cancelled`.
    pub kind: String,
    pub status: u16,
}

/// Final callbacks: the receiver notes each delivery, and answers `200`
/// unless the schedule's knob makes it fail (`500`) or refuse (`410`).
pub struct SimNotifier {
    pub world: Shared,
}

impl Notifier for SimNotifier {
    async fn deliver(&self, _: &str, _: &[(&str, String)], body: &str) -> DeliveryOutcome {
        let event: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        let (status, took) = {
            let mut world = self.world.borrow_mut();
            let fails = world.receiver_fails;
            let status = match world.source.chance(fails) {
                true if world.source.chance(100) => 410,
                true => 500,
                false => 200,
            };
            let took = world.source.between(1, 200);
            (status, took)
        };
        after(&self.world, took).await;
        let mut world = self.world.borrow_mut();
        let delivery = Delivery {
            at: world.now,
            run_id: event["run_id"].as_str().unwrap_or_default().to_string(),
            kind: event["type"].as_str().unwrap_or_default().to_string(),
            status,
        };
        world.note(|| format!("  final callback {delivery:?}"));
        world.deliveries.push(delivery);
        DeliveryOutcome::Answered {
            status,
            duration_ms: took,
        }
    }
}

/// Components: `http://ok.sim/` answers, `http://pend.sim/` hands the task to a daemon
/// that calls back later (or early, twice, never, after the deadline); any
/// of them may fail or hang past the timeout, as the knobs say.
pub struct SimComponents {
    pub world: Shared,
    pub run_id: String,
}

impl SimComponents {
    /// The component's answer and how long it takes, noted in the world.
    fn answer(&self, call: &Call) -> (u64, CallOutcome) {
        let mut world = self.world.borrow_mut();
        let w = &mut *world;
        let key = call.idempotency_key.clone();
        if w.journaled.contains(&key) {
            w.violation(format!(
                "call {key} made again after its outcome was journaled"
            ));
        }
        w.note(|| format!("  call {key}"));
        let (duration, outcome) = w
            .answers
            .get(&key)
            .cloned()
            .unwrap_or_else(|| first_answer(w, call));
        w.calls.push(CallSeen {
            at: w.now,
            run_id: self.run_id.clone(),
            wait_id: call.wait_id.clone(),
            idempotency_key: key,
            ends_at: w.now + duration,
            expires_at: call.expires_at,
        });
        (duration, outcome)
    }
}

impl Components for SimComponents {
    async fn call(&self, call: &Call) -> CallOutcome {
        let (duration, outcome) = self.answer(call);
        after(&self.world, duration).await;
        outcome
    }
}

/// How a component answers a call it has not seen before, remembered by
/// its idempotency key.
fn first_answer(w: &mut World, call: &Call) -> (u64, CallOutcome) {
    {
        {
            let knobs = w.daemon_knobs;
            let hang = w.source.chance(knobs.hang);
            let duration = if hang {
                COMPONENT_TIMEOUT_MS
            } else {
                w.source.between(2, 200)
            };
            let outcome = if hang {
                CallOutcome::Failed {
                    status: None,
                    error: format!("timed out after {COMPONENT_TIMEOUT_MS} ms"),
                    code: Some(CallFailure::Timeout),
                }
            } else if w.source.chance(knobs.fail) {
                CallOutcome::Failed {
                    status: Some(503),
                    error: "HTTP 503".into(),
                    code: Some(CallFailure::HttpStatus),
                }
            } else if call.url.contains("pend.sim") {
                let task_id = format!("task-{}", call.idempotency_key);
                plan_daemon(w, call, &task_id, duration);
                CallOutcome::Answered(json!({"pending": true, "task_id": task_id}))
            } else {
                CallOutcome::Answered(json!({"success": true, "data": {"at": call.node_id}}))
            };
            w.answers
                .insert(call.idempotency_key.clone(), (duration, outcome.clone()));
            (duration, outcome)
        }
    }
}

/// What the daemon behind a pending answer will do, from when the
/// component answers.
fn plan_daemon(w: &mut World, call: &Call, task_id: &str, answer_in: u64) {
    let knobs = w.daemon_knobs;
    let start = w.now;
    let window = call.expires_at.saturating_sub(start);
    let mut acts = Vec::new();
    if w.source.chance(knobs.heartbeat) {
        let at = start + answer_in + w.source.below(window / 2 + 1);
        acts.push((
            at,
            DaemonAct::Heartbeat {
                extend_seconds: w.source.between(1, 20),
            },
        ));
    }
    if !w.source.chance(knobs.never) {
        let at = if w.source.chance(knobs.early) {
            // Before the pending answer is even back: the segment still runs.
            start + w.source.below(answer_in + 1)
        } else if w.source.chance(knobs.late) {
            call.expires_at + w.source.between(1, 3_000)
        } else {
            start + answer_in + w.source.below(window.max(1))
        };
        let success = !w.source.chance(knobs.fail_result);
        let id = w.id();
        acts.push((at, DaemonAct::Callback { id, success }));
        if w.source.chance(knobs.duplicate) {
            let again = at + w.source.below(400);
            let id = w.id();
            acts.push((again, DaemonAct::Callback { id, success }));
        }
    }
    for (at, what) in acts {
        w.dispatched.push(Dispatch {
            at,
            run_id: call_run_id(call),
            wait_id: call.wait_id.clone(),
            task_id: task_id.to_string(),
            token_expires_at: url_expiry(call),
            what,
        });
    }
}

/// When the callback URL a call was handed stops being good: the daemon
/// keeps it however often it heartbeats.
fn url_expiry(call: &Call) -> u64 {
    call.callback_url
        .as_deref()
        .and_then(|url| url.split_once("token=")?.1.split_once('.'))
        .and_then(|(at, _)| at.parse().ok())
        .unwrap_or(call.expires_at)
}

/// The run a call belongs to: its idempotency key is `{run_id}.{wait_id}`.
fn call_run_id(call: &Call) -> String {
    call.idempotency_key
        .rsplit_once('.')
        .map_or_else(String::new, |(run, _)| run.to_string())
}

/// The body a daemon sends for a callback.
pub fn callback_body(task_id: &str, id: u64, success: bool) -> Value {
    if success {
        json!({"task_id": task_id, "success": true, "data": {"callback": id}})
    } else {
        json!({"task_id": task_id, "success": false, "error": {"message": "daemon failed", "callback": id}})
    }
}
