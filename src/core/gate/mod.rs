//! A run's gate: the one place every segment and read of a run passes
//! through (on Workers, the run's Durable Object). It holds what a single
//! segment cannot:
//! - the lock that serialises segments, so two callbacks never resume one
//!   wait twice;
//! - the run as it last left it, so it never depends on KV catching up;
//! - the pace of KV writes (`core::pacing`): at most one a second per run,
//!   across restarts, with the requests applied meanwhile kept in its
//!   storage until the write (`inbox`);
//! - callbacks that arrive while a segment runs (its component may await
//!   its own callback before it answers): kept, answered `202` after a
//!   while, and applied when the segment ends — a callback never waits on a
//!   component call, and the alarm applies it if this object dies first;
//! - the journal of call outcomes, and the alarm that makes the run act
//!   with no request arriving: deadlines, continuation after a yield,
//!   delivery, the write that is due, and callbacks kept but not applied.
//!
//! It is platform-free: storage, components, the clock and sleeping are
//! traits. `adapter::gate` performs them on Workers; `sim` performs
//! them in a deterministic simulation that crashes it at every await.
//!
//! Its parts: this module (requests, segments, writes), `queue` (callbacks
//! that find a segment running), `replay` (a gate coming back after a
//! crash or eviction), `alarm` (the alarm's handler, and where each turn
//! leaves it), `inbox` and `storage` (what is kept, and where).

mod alarm;
pub mod inbox;
mod queue;
mod replay;
pub mod storage;
mod write;

pub use alarm::{alarm_after_turn, AlarmInputs, AlarmPlan};

use std::cell::{Cell, RefCell};

use futures::channel::oneshot;
use futures::lock::Mutex;
use serde_json::{json, Value};

use self::inbox::Inbox;
use self::storage::{EventsMemory, GateMeta, GateStore, JournalMemory, ObjectStorage};
use super::answer::{HeartbeatAccepted, True};
use super::driver::Components;
use super::error::EngineError;
use super::pacing::{earliest, WritePacer, MIN_WRITE_INTERVAL_MS};
use super::run::Run;
use super::segment::{
    add_noted, details, index_waits, read, run_segment, Clock, Command, GateConfig, Host, Notifier,
    Reply, Report, Segment, View,
};
use super::store::{Records, TaskIndexStore};
use super::view::{answer_value, noop_answer};

/// How long a callback that found a segment running waits for its own
/// answer before it is told `202 accepted` (it is kept either way). Long
/// enough for a burst of callbacks to be answered in full; short enough
/// that a component awaiting its own callback is not held up for long.
pub const QUEUED_ANSWER_WAIT_MS: u64 = 3_000;

/// After a read of KV refused as lagging, how long before the alarm tries
/// again.
pub const LAG_RETRY_MS: u64 = 2_000;

/// How many queued callbacks one holder of the lock applies before it lets
/// go (and answers its own request).
pub const DRAIN_PER_TURN: usize = 16;

/// A kept callback not yet applied has the alarm set no later than this
/// after its arrival, so it is applied even if nothing else reaches the run.
pub const KEPT_ALARM_SLACK_MS: u64 = 1_000;

/// A gate started again does not know when a write that was under way at
/// the crash reached KV; it waits this long past its start as well.
pub const WRITE_MARGIN_MS: u64 = MIN_WRITE_INTERVAL_MS;

/// Who writes the record a turn leaves due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publish {
    /// The turn itself (the alarm's: no one waits on it).
    Now,
    /// The alarm, set for when the write is due: a request is answered
    /// once its change is kept, without waiting on KV.
    ByAlarm,
}

/// Sleeping, for the time a queued callback waits for its answer.
#[allow(async_fn_in_trait)]
pub trait Sleep {
    async fn sleep(&self, ms: u64);
}

/// What a gate reports for the operator's log.
pub enum GateLog<'a> {
    /// A segment, or a write, is about to run.
    Begins,
    Segment {
        run_id: &'a str,
        outcome: Result<&'a Report, &'a EngineError>,
        started: u64,
    },
    /// The record was written, covering this many kept requests.
    Write {
        run_id: &'a str,
        kept_requests: usize,
        started: u64,
    },
}

/// The platform pieces a gate works through, for one request.
pub struct Platform<'a, R, C, K, N, O> {
    /// KV's records, and the bare route's task index.
    pub records: &'a R,
    pub components: &'a C,
    pub clock: &'a K,
    pub notifier: &'a N,
    /// The object's own storage and alarm.
    pub object: &'a O,
    pub config: &'a GateConfig,
    pub log: &'a dyn Fn(GateLog<'_>),
}

/// An answer to a request: an HTTP status and its JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    fn ok(body: Value) -> Self {
        Self { status: 200, body }
    }
}

/// A callback kept while a segment ran, and where its answer goes if its
/// sender is still waiting for it.
pub struct Queued {
    key: String,
    at: u64,
    command: Command,
    task_id: Option<String>,
    answer: oneshot::Sender<Result<Answer, EngineError>>,
}

/// The gate of one run: everything it holds in memory, lost when the
/// object is evicted or crashes; its storage keeps the rest.
#[derive(Default)]
pub struct Gate {
    /// Held by one segment at a time (and by the write that follows it).
    lock: Mutex<()>,
    /// Held while the kept run is out being written: a read waits for it
    /// rather than show KV's older record.
    writing: Mutex<()>,
    /// The run as the last segment left it — possibly ahead of KV by what
    /// the kept requests hold — taken out while a segment executes.
    kept: RefCell<Option<Run>>,
    /// The run id and owner of the segment executing now, if any.
    active: RefCell<Option<(String, Option<String>)>>,
    /// The alarm as this object last asked for it (the ask may not have
    /// landed yet): `None` until known.
    alarm: Cell<Option<Option<u64>>>,
    /// The alarm as storage is known to hold it: what a write relies on.
    alarm_landed: Cell<Option<Option<u64>>>,
    /// While an alarm's handler runs: the time that fired (see
    /// `after_firing`).
    firing: Cell<Option<u64>>,
    /// The meta as this object last stored it: `None` until read.
    meta: RefCell<Option<GateMeta>>,
    journal: RefCell<JournalMemory>,
    events: RefCell<EventsMemory>,
    /// When the record may next be written to KV, and whether it must be.
    pacer: Cell<WritePacer>,
    inbox: RefCell<Inbox<Queued>>,
    /// After a read of KV refused as lagging, no alarm before this: trying
    /// again at once would only meet the same lag, as fast as alarms fire.
    lag_backoff: Cell<Option<u64>>,
    /// How many changes the kept run has taken: a record encoded before
    /// its answer is written as it is only while none came since.
    changes: Cell<u64>,
    /// The kept run's record, encoded (and numbered) before a request was
    /// answered, for the alarm's write that follows.
    encoded: RefCell<Option<write::Encoded>>,
}

impl Gate {
    pub fn new() -> Self {
        Self::default()
    }

    /// A gate whose kept requests are told apart from those of the
    /// object's earlier lives by `life` (random, from the platform).
    pub fn starting(life: u32) -> Self {
        let gate = Self::default();
        gate.inbox.borrow_mut().life = life;
        gate
    }

    /// Answers one request. A callback that finds a segment running is
    /// queued instead of waiting; a read never waits for a segment.
    pub async fn handle<R, C, K, N, O>(
        &self,
        p: &Platform<'_, R, C, K, N, O>,
        command: Command,
    ) -> Result<Answer, EngineError>
    where
        R: Records + TaskIndexStore,
        C: Components,
        K: Clock + Sleep,
        N: Notifier,
        O: ObjectStorage,
    {
        if let Command::Read {
            run_id,
            owner,
            node,
        } = &command
        {
            return self
                .read(p, run_id, owner.as_deref(), node.as_deref())
                .await;
        }
        // Judged at its arrival, like everything kept or queued before it:
        // a deadline that passes while it waits for the lock is taken after
        // what arrived before it.
        let arrived = p.clock.now();
        let task_id = match &command {
            Command::Callback { body, .. } | Command::Heartbeat { body, .. } => body
                .get("task_id")
                .and_then(Value::as_str)
                .map(str::to_string),
            _ => None,
        };
        let turn = match self.lock.try_lock() {
            Some(turn) => turn,
            None if matches!(command, Command::Callback { .. }) => {
                return self.queue(p, command, task_id).await;
            }
            None => self.lock.lock().await,
        };
        let is_start = matches!(command, Command::Start { .. });
        let restart = matches!(command, Command::Start { restart: true, .. });
        if restart {
            // Taken over because no one could find the run: if it was
            // started after all (two takeovers raced, say), it is answered
            // as it stands.
            let run_id = command_run_id(&command).to_string();
            if self.started(p, &run_id).await? {
                let owner = command_owner(&command);
                // A read takes the turn itself when it must catch up.
                drop(turn);
                return self.read(p, &run_id, owner.as_deref(), None).await;
            }
        }
        if is_start && !restart {
            // A fresh run id names a fresh object: no alarm, nothing kept,
            // no write yet.
            self.alarm.set(Some(None));
            self.alarm_landed.set(Some(None));
            self.inbox.borrow_mut().unchecked = false;
            *self.meta.borrow_mut() = Some(GateMeta::default());
            *self.events.borrow_mut() = EventsMemory::fresh();
            // Nor a journal: its first call need not list one.
            *self.journal.borrow_mut() = JournalMemory::fresh();
        }
        if restart {
            // Not fresh: what its storage kept is applied once it starts.
            self.inbox.borrow_mut().unchecked = false;
        }
        // A trigger or retry that goes on past this invocation answers 202.
        let may_continue = is_start || matches!(command, Command::Retry { .. });
        let run_id = command_run_id(&command).to_string();
        if let Err(e) = self.catch_up(p, &run_id).await {
            // What stays kept is applied by the alarm this sets.
            self.settle(p, &run_id, DRAIN_PER_TURN, Publish::ByAlarm)
                .await?;
            return Err(e);
        }
        // Keyed by its arrival, like every kept request: a replay applies
        // them in the order they arrived, each judged as of then.
        let key = self.inbox.borrow_mut().next_key(arrived);
        // Callbacks queued while it caught up are keyed before it: applied
        // before it too, so what a replay does is what was done (else a
        // callback answered `resumed` here could be superseded in replay).
        self.drain(p, usize::MAX, Some(&key)).await;
        let started = p.clock.now();
        // Every change is kept until a write that holds it is seen to land:
        // a crash before then, or a read of KV at another location that
        // does not show the write yet, finds it here and applies it again.
        let text = serde_json::to_string(&command).unwrap_or_default();
        let mut segment = match self.segment(p, command, Some(arrived)).await {
            Ok(segment) => segment,
            Err(e) => {
                self.settle(p, &run_id, DRAIN_PER_TURN, Publish::ByAlarm)
                    .await?;
                return Err(e);
            }
        };
        if restart && self.kept.borrow().is_some() {
            // Callbacks that came while the run was never stored were kept
            // for it: applied now, each as of its arrival.
            self.inbox.borrow_mut().unchecked = true;
            self.catch_up(p, &run_id).await?;
        }
        if segment.dirty {
            // Kept, then answered; KV is written after the answer, by the
            // alarm set here for when the pacer allows (at once for a run
            // not written within the second). The gate's storage is what
            // makes the answer durable: a crash before the write replays
            // the kept request. The alarm is set before the request is
            // kept: an object that dies in between leaves nothing waiting
            // on a later alarm (a deadline the change opened comes due).
            self.changed(started);
            if self.pacer.get().may_write(p.clock.now()) {
                // Encoded now, so that the answer is the run as it will be
                // stored (encoding may truncate its trace, or fail it).
                self.encode(p);
                if let Some(run) = self.kept.borrow().as_ref() {
                    segment.refresh(run, p.config);
                }
            }
            if let Some(at) = self.pacer.get().flush_at() {
                let now = p.clock.now();
                let at = earliest(Some(at), self.alarm.get().flatten()).unwrap_or(at);
                let covered =
                    matches!(self.alarm_landed.get(), Some(Some(a)) if a > now && a <= at);
                if !covered {
                    self.ensure_alarm(p, &run_id, Some(at)).await;
                }
            }
            self.keep(p, key, text).await?;
        }
        // Rendered now: what the queue applies next is not this request's.
        let answer = self.render(segment.reply, may_continue, task_id.as_deref());
        self.settle(p, &run_id, DRAIN_PER_TURN, Publish::ByAlarm)
            .await?;
        Ok(answer)
    }

    /// The id of the run this gate serves, once it knows it.
    pub fn run_id(&self) -> Option<String> {
        self.meta
            .borrow()
            .as_ref()
            .map(|m| m.run_id.clone())
            .filter(|id| !id.is_empty())
    }

    /// Looks at the run this gate holds in memory, if any (for checks).
    pub fn inspect<T>(&self, f: impl FnOnce(Option<&Run>) -> T) -> T {
        f(self.kept.borrow().as_ref())
    }

    /// The answer to a segment's request, from its reply and the kept run.
    fn render(&self, reply: Reply, may_continue: bool, task_id: Option<&str>) -> Answer {
        match reply {
            Reply::Outcome { body, running } => Answer {
                status: if running && may_continue { 202 } else { 200 },
                body,
            },
            Reply::Noop(reason) => {
                let kept = self.kept.borrow();
                let run = kept.as_ref().map(|run| &run.record);
                Answer::ok(noop_answer(reason, run, task_id))
            }
            Reply::Details(body) => Answer::ok(body),
            Reply::Accepted(body) => Answer { status: 202, body },
            Reply::Heartbeat {
                expires_at,
                callback_url,
                heartbeat_url,
            } => Answer::ok(answer_value(&HeartbeatAccepted {
                success: True,
                expires_at,
                callback_url,
                heartbeat_url,
            })),
            Reply::Idle => Answer::ok(json!({"success": true})),
        }
    }

    /// `GET /runs/{id}`: the kept run when there is one, else KV's record.
    /// A read never waits for a segment: while one runs, the record stored
    /// last is shown as `running`.
    async fn read<R, C, K, N, O>(
        &self,
        p: &Platform<'_, R, C, K, N, O>,
        run_id: &str,
        owner: Option<&str>,
        node: Option<&str>,
    ) -> Result<Answer, EngineError>
    where
        R: Records + TaskIndexStore,
        C: Components,
        K: Clock + Sleep,
        N: Notifier,
        O: ObjectStorage,
    {
        let active =
            self.active.borrow().as_ref().is_some_and(|(id, who)| {
                id == run_id && (owner.is_none() || who.as_deref() == owner)
            });
        // A cold object may hold requests newer than KV's record: those are
        // applied first, so a read never goes back in time.
        if !active && self.kept.borrow().is_none() && self.inbox.borrow().unchecked {
            let _turn = self.lock.lock().await;
            // Settled even when catching up failed (a lagging read): what
            // stays kept then needs the alarm soon, not the record's.
            let caught_up = self.catch_up(p, run_id).await;
            self.settle(p, run_id, DRAIN_PER_TURN, Publish::ByAlarm)
                .await?;
            caught_up?;
        }
        if !active && self.kept.borrow().is_none() {
            // A write under way has the run out for a moment.
            drop(self.writing.lock().await);
        }
        let store = self.store(p);
        let host = host(p, &store);
        let now = p.clock.now();
        // The kept run is read in place (no await while borrowed);
        // otherwise the stored record is.
        let view = View {
            owner,
            node,
            active,
        };
        let kept = self.kept.borrow().as_ref().and_then(|run| {
            (run.record.run_id == run_id).then(|| details(run, &view, &p.config.redactor, now))
        });
        let (details, wake) = match kept {
            Some(shown) => {
                let (mut body, wake) = shown?;
                if node.is_none() {
                    add_noted(&store, &mut body).await;
                }
                (body, wake)
            }
            None => read(&host, run_id, &view).await?,
        };
        // A cold object learns whether its alarm survived (a restart of a
        // local runtime may lose it) and re-arms it — unless a turn is under
        // way: it may be applying kept requests the record shown lacks, and
        // sets the alarm they need as it ends (the record's own wake could
        // be a deadline hours away). If storage may hold requests no turn
        // applied (one failed since this read began), they need it now.
        if !active && self.alarm.get().is_none() && wake.is_some() {
            if let Some(_turn) = self.lock.try_lock() {
                let wake = match self.inbox.borrow().unchecked {
                    true => Some(p.clock.now()),
                    false => wake,
                };
                self.ensure_alarm(p, run_id, wake).await;
            }
        }
        Ok(Answer::ok(details))
    }

    /// Applies up to `limit` queued callbacks, writes the record when it is
    /// due and `publish` says the write is this turn's (the alarm's: a
    /// request's turn leaves it to the alarm, so as not to keep its sender
    /// waiting on KV), and sets the alarm. Every holder of the lock ends with this
    /// before it lets go: whatever stays queued is applied by the alarm, set
    /// for now while anything is queued — so no queued callback is left
    /// behind, and no holder's own answer waits behind a stream of arrivals.
    async fn settle<R, C, K, N, O>(
        &self,
        p: &Platform<'_, R, C, K, N, O>,
        run_id: &str,
        limit: usize,
        publish: Publish,
    ) -> Result<(), EngineError>
    where
        R: Records + TaskIndexStore,
        C: Components,
        K: Clock + Sleep,
        N: Notifier,
        O: ObjectStorage,
    {
        let mut applied = 0;
        loop {
            applied += self.drain(p, limit - applied, None).await;
            let now = p.clock.now();
            let pacer = self.pacer.get();
            if publish == Publish::Now && pacer.dirty_since().is_some() && pacer.may_write(now) {
                self.write(p).await?;
            }
            let now = p.clock.now();
            let unapplied = {
                let inbox = self.inbox.borrow();
                !inbox.queued.is_empty() || inbox.unchecked
            };
            let plan = alarm_after_turn(AlarmInputs {
                now,
                unapplied,
                run_wake: self.run_wake(now),
                pacer: self.pacer.get(),
            });
            if let AlarmPlan::Set(wake) = plan {
                self.ensure_alarm(p, run_id, wake).await;
            }
            let inbox = self.inbox.borrow();
            if inbox.queued.is_empty() || applied >= limit || inbox.unchecked {
                return Ok(());
            }
        }
    }

    /// Runs one segment with the kept run, marking it active meanwhile, and
    /// logs it. The caller holds the lock.
    async fn segment<R, C, K, N, O>(
        &self,
        p: &Platform<'_, R, C, K, N, O>,
        command: Command,
        arrived: Option<u64>,
    ) -> Result<Segment, EngineError>
    where
        R: Records + TaskIndexStore,
        C: Components,
        K: Clock + Sleep,
        N: Notifier,
        O: ObjectStorage,
    {
        let run_id = command_run_id(&command).to_string();
        let is_start = matches!(command, Command::Start { .. });
        let restart = matches!(command, Command::Start { restart: true, .. });
        *self.active.borrow_mut() = Some((run_id.clone(), command_owner(&command)));
        let cached = self.kept.borrow_mut().take();
        let rebuilt = cached.is_none();
        let store = self.store(p);
        let started = p.clock.now();
        (p.log)(GateLog::Begins);
        let (kept, result) = run_segment(&host(p, &store), cached, command, arrived).await;
        // The bare route finds a wait by its task id from the moment the
        // wait's request is answered, before the write that indexes it for
        // sure: a daemon may call back at once. Best effort: the write
        // claims the same entries again, and fails if it cannot.
        if let (Some(run), Ok(_)) = (&kept, &result) {
            let _ = index_waits(&host(p, &store), run, started).await;
        }
        // Rebuilt from a record older than a write begun since (one that
        // landed unseen, and a read of KV that lags it): KV may hold another
        // rebuild of the same changes, stamped when it ran. Written again,
        // so KV holds what the gate holds.
        let begun = self.meta.borrow().as_ref().map_or(0, |m| m.revision);
        if rebuilt && kept.as_ref().is_some_and(|run| run.record.revision < begun) {
            self.changed(started);
        }
        // No run after a failure: what memory held is not to be trusted.
        // (No run after a success: there is none to hold. A trigger refused
        // — an invalid graph — found a fresh object and leaves it so; a
        // restart did not, and what its storage kept waits to be applied.)
        if kept.is_none() && result.is_err() && (!is_start || restart) {
            self.drop_kept();
        }
        if let Err(EngineError::StaleRead(_)) = &result {
            let now = p.clock.now();
            self.lag_backoff.set(Some(now.saturating_add(LAG_RETRY_MS)));
        }
        *self.kept.borrow_mut() = kept;
        *self.active.borrow_mut() = None;
        (p.log)(GateLog::Segment {
            run_id: &run_id,
            outcome: result.as_ref().map(|s| &s.report),
            started,
        });
        result
    }

    /// When the kept run must next act on its own (deadline, continuation,
    /// delivery); `None` when no run is kept, so it is not known.
    fn run_wake(&self, now: u64) -> Option<Option<u64>> {
        self.kept.borrow().as_ref().map(|run| run.next_wake(now))
    }

    fn changed(&self, at: u64) {
        self.changes.set(self.changes.get().wrapping_add(1));
        let mut pacer = self.pacer.get();
        pacer.changed(at);
        self.pacer.set(pacer);
    }

    /// Forgets the kept run: the next turn rebuilds it from KV and the kept
    /// requests.
    fn drop_kept(&self) {
        *self.kept.borrow_mut() = None;
        *self.encoded.borrow_mut() = None;
        // The run rebuilt from KV needs the journal's outcomes again.
        *self.journal.borrow_mut() = JournalMemory::default();
        let mut pacer = self.pacer.get();
        pacer.forget_changes();
        self.pacer.set(pacer);
        self.inbox.borrow_mut().forget();
    }

    fn store<'a, R, C, K, N, O>(&'a self, p: &Platform<'a, R, C, K, N, O>) -> GateStore<'a, R, O> {
        GateStore {
            records: p.records,
            object: p.object,
            journal: &self.journal,
            events: &self.events,
            writes: self
                .meta
                .borrow()
                .as_ref()
                .map(GateMeta::writes)
                .unwrap_or_default(),
        }
    }
}

/// The segment's view of the platform: the gate's store over its storage.
fn host<'a, R, C, K, N, O>(
    p: &Platform<'a, R, C, K, N, O>,
    store: &'a GateStore<'a, R, O>,
) -> Host<'a, GateStore<'a, R, O>, C, K, N> {
    Host {
        store,
        components: p.components,
        clock: p.clock,
        notifier: p.notifier,
        config: p.config,
    }
}

pub fn command_run_id(command: &Command) -> &str {
    match command {
        Command::Start { run_id, .. }
        | Command::Callback { run_id, .. }
        | Command::Wake { run_id }
        | Command::Read { run_id, .. }
        | Command::Cancel { run_id, .. }
        | Command::Redeliver { run_id, .. }
        | Command::Retry { run_id, .. }
        | Command::Heartbeat { run_id, .. } => run_id,
    }
}

/// The API key's owner a request came with, if it names one.
fn command_owner(command: &Command) -> Option<String> {
    match command {
        Command::Start { owner, .. }
        | Command::Read { owner, .. }
        | Command::Cancel { owner, .. }
        | Command::Redeliver { owner, .. }
        | Command::Retry { owner, .. } => owner.clone(),
        _ => None,
    }
}
