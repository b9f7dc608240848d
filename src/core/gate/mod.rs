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
//! traits. `adapter::gate` performs them on Workers; `tests/sim` performs
//! them in a deterministic simulation that crashes it at every await.

pub mod inbox;
pub mod storage;

use std::cell::{Cell, RefCell};

use futures::channel::oneshot;
use futures::future::{select, Either};
use futures::lock::Mutex;
use serde_json::{json, Value};

use self::inbox::Inbox;
use self::storage::{GateMeta, GateStore, JournalMemory, ObjectStorage, INBOX_PREFIX, META_KEY};
use super::driver::Components;
use super::error::EngineError;
use super::pacing::{earliest, WritePacer, MIN_WRITE_INTERVAL_MS};
use super::run::Run;
use super::segment::{
    add_noted, details, flush, read, run_segment, Clock, Command, GateConfig, Host, Notifier,
    Reply, Report, Segment,
};
use super::store::{Records, TaskIndexStore};
use super::view::noop_answer;

/// How long a callback that found a segment running waits for its own
/// answer before it is told `202 accepted` (it is kept either way). Long
/// enough for a burst of callbacks to be answered in full; short enough
/// that a component awaiting its own callback is not held up for long.
pub const QUEUED_ANSWER_WAIT_MS: u64 = 3_000;

/// How many queued callbacks one holder of the lock applies before it lets
/// go (and answers its own request).
pub const DRAIN_PER_TURN: usize = 16;

/// A kept callback not yet applied has the alarm set no later than this
/// after its arrival, so it is applied even if nothing else reaches the run.
pub const KEPT_ALARM_SLACK_MS: u64 = 1_000;

/// A gate started again does not know when a write that was under way at
/// the crash reached KV; it waits this long past its start as well.
pub const WRITE_MARGIN_MS: u64 = MIN_WRITE_INTERVAL_MS;

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
    /// The meta as this object last stored it: `None` until read.
    meta: RefCell<Option<GateMeta>>,
    journal: RefCell<JournalMemory>,
    /// When the record may next be written to KV, and whether it must be.
    pacer: Cell<WritePacer>,
    inbox: RefCell<Inbox<Queued>>,
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
        if let Command::Read { run_id, owner } = &command {
            return self.read(p, run_id, owner.as_deref()).await;
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
        let _turn = match self.lock.try_lock() {
            Some(turn) => turn,
            None if matches!(command, Command::Callback { .. }) => {
                return self.queue(p, command, task_id).await;
            }
            None => self.lock.lock().await,
        };
        let is_start = matches!(command, Command::Start { .. });
        if is_start {
            // A fresh run id names a fresh object: no alarm, nothing kept,
            // no write yet.
            self.alarm.set(Some(None));
            self.alarm_landed.set(Some(None));
            self.inbox.borrow_mut().unchecked = false;
            *self.meta.borrow_mut() = Some(GateMeta::default());
        }
        // A trigger or retry that goes on past this invocation answers 202.
        let may_continue = is_start || matches!(command, Command::Retry { .. });
        let run_id = command_run_id(&command).to_string();
        self.catch_up(p, &run_id).await?;
        let started = p.clock.now();
        // Keyed by its arrival, like every kept request: a replay applies
        // them in the order they arrived, each judged as of then.
        let key = self.inbox.borrow_mut().next_key(arrived);
        // Kept only if its change cannot be written at once.
        let text = (!is_start).then(|| serde_json::to_string(&command).unwrap_or_default());
        let mut segment = match self.segment(p, command, Some(arrived)).await {
            Ok(segment) => segment,
            Err(e) => {
                self.settle(p, &run_id, DRAIN_PER_TURN).await?;
                return Err(e);
            }
        };
        if segment.dirty {
            self.changed(started);
            if self.pacer.get().may_write(p.clock.now()) {
                // Written before it is answered, so the answer is the run as
                // stored (writing may truncate its trace, or fail it).
                self.write(p).await?;
                if let Some(run) = self.kept.borrow().as_ref() {
                    segment.refresh(run, p.config);
                }
            } else if let Some(text) = text {
                self.keep(p, key, text).await?;
            }
        }
        // Rendered now: what the queue applies next is not this request's.
        let answer = self.render(segment.reply, may_continue, task_id.as_deref());
        self.settle(p, &run_id, DRAIN_PER_TURN).await?;
        Ok(answer)
    }

    /// The alarm fired: write what waits to be written, apply what was
    /// kept, take due deadlines, continue a yielded run, deliver. An alarm
    /// with nothing due re-arms from the meta and costs no KV operation. An
    /// error asks the platform to retry the alarm.
    pub async fn alarm<R, C, K, N, O>(
        &self,
        p: &Platform<'_, R, C, K, N, O>,
    ) -> Result<(), EngineError>
    where
        R: Records + TaskIndexStore,
        C: Components,
        K: Clock + Sleep,
        N: Notifier,
        O: ObjectStorage,
    {
        let _turn = self.lock.lock().await;
        // Whatever is decided below sets the alarm again if needed.
        self.alarm.set(Some(None));
        self.alarm_landed.set(Some(None));
        let Some(meta) = self.meta(p).await? else {
            return Ok(());
        };
        let now = p.clock.now();
        let cold = self.kept.borrow().is_none();
        let idle = self.inbox.borrow().queued.is_empty() && !self.inbox.borrow().unchecked;
        if let (true, Some(at)) = (cold && idle, meta.wake_at) {
            if at > now {
                self.ensure_alarm(p, &meta.run_id, Some(at)).await;
                return Ok(());
            }
        }
        let run_id = meta.run_id;
        self.catch_up(p, &run_id).await?;
        // Callbacks that arrived meanwhile go before the deadlines the
        // alarm takes: they are judged at their arrival.
        self.drain(p, usize::MAX).await;
        // The run acts when it is due — a deadline, a continuation, a poll —
        // even within the second of its last write: its change is kept like
        // a request (`wake`), replayed in its place if this object dies, its
        // calls answered from the journal; the write follows when KV allows.
        let now = p.clock.now();
        let due = self
            .run_wake(now)
            .is_none_or(|wake| wake.is_some_and(|w| w <= now));
        if due {
            let command = Command::Wake {
                run_id: run_id.clone(),
            };
            let key = self.inbox.borrow_mut().next_key(now);
            match self.segment(p, command.clone(), None).await {
                Ok(segment) => {
                    if segment.dirty {
                        self.changed(now);
                        if !self.pacer.get().may_write(p.clock.now()) {
                            let text = serde_json::to_string(&command).unwrap_or_default();
                            self.keep(p, key, text).await?;
                        }
                    }
                }
                Err(e) => {
                    // Try again shortly; the platform also retries a failed handler.
                    self.ensure_alarm(p, &run_id, Some(now + 5_000)).await;
                    self.settle(p, &run_id, usize::MAX).await?;
                    return Err(e);
                }
            }
        }
        // No one waits on an alarm: it applies all that is queued.
        self.settle(p, &run_id, usize::MAX).await
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
            } => Answer::ok(json!({
                "success": true,
                "expires_at": expires_at,
                "callback_url": callback_url,
                "heartbeat_url": heartbeat_url,
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
            self.catch_up(p, run_id).await?;
            self.settle(p, run_id, DRAIN_PER_TURN).await?;
        }
        let store = self.store(p);
        let host = host(p, &store);
        let now = p.clock.now();
        // The kept run is read in place (no await while borrowed);
        // otherwise the stored record is.
        let kept = self.kept.borrow().as_ref().and_then(|run| {
            (run.record.run_id == run_id)
                .then(|| details(run, owner, active, &p.config.redactor, now))
        });
        let (details, wake) = match kept {
            Some(Some((mut body, wake))) => {
                add_noted(&store, &mut body).await;
                (body, wake)
            }
            Some(None) => return Err(EngineError::NotFound(format!("no run '{run_id}'"))),
            None => read(&host, run_id, owner, active).await?,
        };
        // A cold object learns whether its alarm survived (a restart of a
        // local runtime may lose it) and re-arms it.
        if !active && self.alarm.get().is_none() && wake.is_some() {
            self.ensure_alarm(p, run_id, wake).await;
        }
        Ok(Answer::ok(details))
    }

    /// A callback that arrived while a segment runs: kept in storage (that
    /// is what makes it safe to answer), with the alarm set to apply it if
    /// this object dies first, and queued for the segment's holder to apply
    /// when it ends. It is answered as it was applied, or, if that takes
    /// longer than `QUEUED_ANSWER_WAIT_MS`, `202 accepted`.
    async fn queue<R, C, K, N, O>(
        &self,
        p: &Platform<'_, R, C, K, N, O>,
        command: Command,
        task_id: Option<String>,
    ) -> Result<Answer, EngineError>
    where
        K: Clock + Sleep,
        O: ObjectStorage,
    {
        let run_id = command_run_id(&command).to_string();
        let text = serde_json::to_string(&command).unwrap_or_default();
        // Its key holds its arrival time, at which it is judged.
        let now = p.clock.now();
        let key = self.inbox.borrow_mut().next_key(now);
        let (answer, answered) = oneshot::channel();
        // Queued before the write is awaited: the holder may finish meanwhile.
        self.inbox.borrow_mut().queued.push_back(Queued {
            key: key.clone(),
            at: now,
            command,
            task_id: task_id.clone(),
            answer,
        });
        p.object.put(&format!("{INBOX_PREFIX}{key}"), text).await?;
        let soon = now + KEPT_ALARM_SLACK_MS;
        if !matches!(self.alarm.get(), Some(Some(at)) if at <= soon) {
            self.ensure_alarm(p, &run_id, Some(now)).await;
        }
        let waited = p.clock.sleep(QUEUED_ANSWER_WAIT_MS);
        if let Either::Left((Ok(answer), _)) = select(answered, Box::pin(waited)).await {
            return answer;
        }
        let mut body = json!({
            "success": true,
            "accepted": true,
            "status": "running",
            "run_id": run_id,
        });
        if let Some(task_id) = task_id {
            body["task_id"] = Value::from(task_id);
        }
        Ok(Answer { status: 202, body })
    }

    /// Applies up to `limit` queued callbacks, writes the record when it is
    /// due, and sets the alarm. Every holder of the lock ends with this
    /// before it lets go: whatever stays queued is applied by the alarm, set
    /// for now while anything is queued — so no queued callback is left
    /// behind, and no holder's own answer waits behind a stream of arrivals.
    async fn settle<R, C, K, N, O>(
        &self,
        p: &Platform<'_, R, C, K, N, O>,
        run_id: &str,
        limit: usize,
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
            applied += self.drain(p, limit - applied).await;
            let now = p.clock.now();
            let pacer = self.pacer.get();
            if pacer.dirty_since().is_some() && pacer.may_write(now) {
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

    /// Applies up to `limit` queued callbacks, each judged at its arrival,
    /// and answers their senders if they still wait; stops early if the
    /// kept run is dropped (the alarm then replays the queue from storage).
    /// Answers how many it took from the queue.
    async fn drain<R, C, K, N, O>(&self, p: &Platform<'_, R, C, K, N, O>, limit: usize) -> usize
    where
        R: Records + TaskIndexStore,
        C: Components,
        K: Clock + Sleep,
        N: Notifier,
        O: ObjectStorage,
    {
        let mut applied = 0;
        while applied < limit {
            let next = self.inbox.borrow_mut().queued.pop_front();
            let Some(queued) = next else { break };
            applied += 1;
            let started = p.clock.now();
            let result = self.segment(p, queued.command, Some(queued.at)).await;
            let held = self.kept.borrow().is_some();
            let failed = result.is_err();
            let answer = result.map(|segment| {
                if segment.dirty {
                    self.changed(started);
                }
                self.render(segment.reply, false, queued.task_id.as_deref())
            });
            // Its sender may have stopped waiting (answered 202).
            let _ = queued.answer.send(answer);
            match (held, failed) {
                (true, _) => self.inbox.borrow_mut().applied.push(queued.key),
                // No such run: nothing will ever cover it.
                (false, false) => {
                    let _ = p.object.delete(INBOX_PREFIX, &[queued.key]).await;
                }
                (false, true) => {
                    // The kept run was dropped: the queue is in storage, and
                    // the alarm replays all of it, whoever comes next.
                    self.drop_kept();
                    break;
                }
            }
        }
        applied
    }

    /// Writes the kept run to KV with everything applied since the last
    /// write, then forgets the kept requests that write covers. The time
    /// of the write is stored first, so a gate started again after a crash
    /// waits out KV's limit whether or not the write landed.
    async fn write<R, C, K, N, O>(&self, p: &Platform<'_, R, C, K, N, O>) -> Result<(), EngineError>
    where
        R: Records + TaskIndexStore,
        C: Components,
        K: Clock + Sleep,
        N: Notifier,
        O: ObjectStorage,
    {
        if self.kept.borrow().is_none() {
            return Ok(());
        }
        self.meta(p).await?;
        let started = p.clock.now();
        let (run_id, wake) = self
            .kept
            .borrow()
            .as_ref()
            .map(|run| (run.record.run_id.clone(), run.next_wake(started)))
            .unwrap_or_default();
        // The alarm the written run needs is set before the write: an
        // object that dies after writing a paused run must still take its
        // deadline, though nothing may ever reach it again.
        // No later than an alarm asked for and not yet landed (a queued
        // callback's): whichever lands last must still cover both.
        let wanted = wake.map(|w| earliest(Some(w), self.alarm.get().flatten()).unwrap_or(w));
        let alarm =
            wanted.filter(|w| !matches!(self.alarm_landed.get(), Some(Some(at)) if at <= *w));
        let meta = {
            let mut meta = self.meta.borrow_mut();
            let meta = meta.get_or_insert_with(GateMeta::default);
            meta.run_id.clone_from(&run_id);
            meta.last_write = Some(started);
            if alarm.is_some() {
                meta.wake_at = alarm;
            }
            meta.clone()
        };
        if let Err(e) = self.put_meta(p, &meta).await {
            self.drop_kept();
            return Err(e);
        }
        if let Some(at) = alarm {
            self.alarm.set(Some(Some(at)));
            if let Err(e) = p.object.set_alarm(Some(at)).await {
                self.alarm.set(None);
                self.alarm_landed.set(None);
                self.drop_kept();
                return Err(e);
            }
            self.alarm_landed.set(Some(Some(at)));
        }
        let Some(mut run) = self.kept.borrow_mut().take() else {
            return Ok(());
        };
        let since = self.pacer.get().dirty_since().unwrap_or(0);
        let covered = self.inbox.borrow_mut().take_applied();
        let store = self.store(p);
        (p.log)(GateLog::Begins);
        let result = flush(&host(p, &store), &mut run, since).await;
        match result {
            Ok(()) => {
                (p.log)(GateLog::Write {
                    run_id: &run_id,
                    kept_requests: covered.len(),
                    started,
                });
                let mut pacer = self.pacer.get();
                pacer.wrote(p.clock.now());
                self.pacer.set(pacer);
                *self.kept.borrow_mut() = Some(run);
                if !covered.is_empty() {
                    // Left behind, they are applied again as no-ops.
                    let _ = p.object.delete(INBOX_PREFIX, &covered).await;
                }
                Ok(())
            }
            Err(e) => {
                self.drop_kept();
                Err(e)
            }
        }
    }

    /// Applies the requests kept in storage that the kept run lacks (a cold
    /// object, or one whose run was dropped), each at the time it arrived.
    async fn catch_up<R, C, K, N, O>(
        &self,
        p: &Platform<'_, R, C, K, N, O>,
        run_id: &str,
    ) -> Result<(), EngineError>
    where
        R: Records + TaskIndexStore,
        C: Components,
        K: Clock + Sleep,
        N: Notifier,
        O: ObjectStorage,
    {
        if !self.inbox.borrow().unchecked {
            return Ok(());
        }
        // The last write's time first: nothing is written before it is known.
        self.meta(p).await?;
        // Unchecked, there is no kept run and nothing applied (`drop_kept`).
        let kept = p.object.list(INBOX_PREFIX).await?;
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
        // Requests for a run that was never stored (its trigger died before
        // its first write): nothing to apply them to, nothing will cover them.
        let mut moot = Vec::new();
        for (key, text) in kept {
            let at = inbox::arrival(&key).unwrap_or(0);
            let command = serde_json::from_str::<Command>(&text)
                .ok()
                .filter(|c| command_run_id(c) == run_id && !matches!(c, Command::Read { .. }));
            let Some(command) = command else {
                self.inbox.borrow_mut().applied.push(key);
                continue;
            };
            let result = self.segment(p, command, Some(at)).await;
            let held = self.kept.borrow().is_some();
            match result {
                Ok(segment) if held => {
                    self.inbox.borrow_mut().applied.push(key);
                    if segment.dirty {
                        self.changed(at);
                    }
                }
                Ok(_) => moot.push(key),
                // Refused, it changed nothing; the next write covers it.
                Err(_) if held => self.inbox.borrow_mut().applied.push(key),
                Err(e) => {
                    // The record could not be read: try again next turn.
                    self.drop_kept();
                    return Err(e);
                }
            }
        }
        if !moot.is_empty() {
            let _ = p.object.delete(INBOX_PREFIX, &moot).await;
        }
        Ok(())
    }

    /// Keeps the request of the segment that just ran, whose change waits
    /// for the next write.
    async fn keep<R, C, K, N, O>(
        &self,
        p: &Platform<'_, R, C, K, N, O>,
        key: String,
        text: String,
    ) -> Result<(), EngineError>
    where
        O: ObjectStorage,
    {
        match p.object.put(&format!("{INBOX_PREFIX}{key}"), text).await {
            Ok(()) => {
                self.inbox.borrow_mut().applied.push(key);
                Ok(())
            }
            Err(e) => {
                // Not durable, so not applied: rebuild from what is.
                self.drop_kept();
                Err(e)
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
        *self.active.borrow_mut() = Some((run_id.clone(), command_owner(&command)));
        let cached = self.kept.borrow_mut().take();
        let store = self.store(p);
        let started = p.clock.now();
        (p.log)(GateLog::Begins);
        let (kept, result) = run_segment(&host(p, &store), cached, command, arrived).await;
        // No run after a failure: what memory held is not to be trusted.
        // (No run after a success: there is none to hold. A trigger refused
        // — an invalid graph — found a fresh object and leaves it so.)
        if kept.is_none() && result.is_err() && !is_start {
            self.drop_kept();
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

    /// The meta, read from storage the first time it is needed; the pacer
    /// learns from it when the record was last written.
    async fn meta<R, C, K, N, O>(
        &self,
        p: &Platform<'_, R, C, K, N, O>,
    ) -> Result<Option<GateMeta>, EngineError>
    where
        O: ObjectStorage,
    {
        if let Some(meta) = self.meta.borrow().as_ref() {
            return Ok((!meta.run_id.is_empty()).then(|| meta.clone()));
        }
        let text = p.object.get(META_KEY).await?;
        // Another turn may have read it meanwhile, and changed it since.
        if let Some(meta) = self.meta.borrow().as_ref() {
            return Ok((!meta.run_id.is_empty()).then(|| meta.clone()));
        }
        let meta: GateMeta = text
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default();
        if let Some(at) = meta.last_write {
            let mut pacer = self.pacer.get();
            pacer.learned_write(at.saturating_add(WRITE_MARGIN_MS));
            self.pacer.set(pacer);
        }
        *self.meta.borrow_mut() = Some(meta.clone());
        Ok((!meta.run_id.is_empty()).then_some(meta))
    }

    async fn put_meta<R, C, K, N, O>(
        &self,
        p: &Platform<'_, R, C, K, N, O>,
        meta: &GateMeta,
    ) -> Result<(), EngineError>
    where
        O: ObjectStorage,
    {
        let text = serde_json::to_string(meta)
            .map_err(|e| EngineError::Storage(format!("meta not serialized: {e}")))?;
        p.object.put(META_KEY, text).await
    }

    /// Sets (or clears) the alarm to `wake`, unless it is already so. The
    /// meta is stored first, so an alarm always finds its run.
    async fn ensure_alarm<R, C, K, N, O>(
        &self,
        p: &Platform<'_, R, C, K, N, O>,
        run_id: &str,
        wake: Option<u64>,
    ) where
        O: ObjectStorage,
    {
        if self.alarm.get() == Some(wake) {
            return;
        }
        // Known before the first await: a concurrent caller sees it.
        self.alarm.set(Some(wake));
        let set = match wake {
            // The stored meta is read first if unknown: rewriting it from
            // nothing would forget when the record was last written.
            Some(_) if self.meta(p).await.is_err() => false,
            Some(at) => {
                let meta = {
                    let mut meta = self.meta.borrow_mut();
                    let meta = meta.get_or_insert_with(GateMeta::default);
                    meta.run_id = run_id.to_string();
                    meta.wake_at = Some(at);
                    meta.clone()
                };
                self.put_meta(p, &meta).await.is_ok() && p.object.set_alarm(Some(at)).await.is_ok()
            }
            // The meta may stay: with no alarm nothing reads it, and the next
            // alarm set rewrites it.
            None => p.object.set_alarm(None).await.is_ok(),
        };
        if set {
            self.alarm_landed.set(Some(wake));
        } else if self.alarm.get() == Some(wake) {
            // Unknown after a failure, so the next request tries again.
            self.alarm.set(None);
        }
    }

    /// When the kept run must next act on its own (deadline, continuation,
    /// delivery); `None` when no run is kept, so it is not known.
    fn run_wake(&self, now: u64) -> Option<Option<u64>> {
        self.kept.borrow().as_ref().map(|run| run.next_wake(now))
    }

    fn changed(&self, at: u64) {
        let mut pacer = self.pacer.get();
        pacer.changed(at);
        self.pacer.set(pacer);
    }

    /// Forgets the kept run: the next turn rebuilds it from KV and the kept
    /// requests.
    fn drop_kept(&self) {
        *self.kept.borrow_mut() = None;
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
        }
    }
}

/// What decides the alarm at the end of a turn.
#[derive(Debug, Clone, Copy)]
pub struct AlarmInputs {
    pub now: u64,
    /// Requests are kept but not applied (queued, or storage unchecked).
    pub unapplied: bool,
    /// When the kept run next acts on its own; `None` when no run is kept.
    pub run_wake: Option<Option<u64>>,
    pub pacer: WritePacer,
}

/// What a turn does to the alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlarmPlan {
    /// Set it for this time, or clear it (`None`).
    Set(Option<u64>),
    /// Leave it: with no run kept, when it must act is not known here.
    Leave,
}

/// The alarm a turn leaves: now while anything kept is unapplied (so it is
/// applied whoever comes next); else the earlier of the run's own wake — a
/// deadline, a continuation, a poll, a delivery: taken when due, its change
/// kept until KV allows the write — and the moment the changes waiting to be
/// written may be.
pub fn alarm_after_turn(inputs: AlarmInputs) -> AlarmPlan {
    let AlarmInputs {
        now,
        unapplied,
        run_wake,
        pacer,
    } = inputs;
    if unapplied {
        return AlarmPlan::Set(Some(now));
    }
    let Some(wake) = run_wake else {
        return AlarmPlan::Leave;
    };
    AlarmPlan::Set(earliest(wake, pacer.flush_at()))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(now: u64) -> AlarmInputs {
        AlarmInputs {
            now,
            unapplied: false,
            run_wake: Some(None),
            pacer: WritePacer::default(),
        }
    }

    #[test]
    fn anything_kept_but_unapplied_sets_the_alarm_for_now() {
        let plan = alarm_after_turn(AlarmInputs {
            unapplied: true,
            run_wake: Some(Some(90_000)),
            ..inputs(10_000)
        });
        assert_eq!(plan, AlarmPlan::Set(Some(10_000)));
    }

    #[test]
    fn a_deadline_is_taken_when_due_even_within_the_second_of_a_write() {
        let mut pacer = WritePacer::default();
        pacer.wrote(10_000);
        let deadline = AlarmInputs {
            run_wake: Some(Some(10_200)),
            pacer,
            ..inputs(10_100)
        };
        assert_eq!(alarm_after_turn(deadline), AlarmPlan::Set(Some(10_200)));
    }

    #[test]
    fn changes_waiting_to_be_written_bring_the_alarm_forward() {
        let mut pacer = WritePacer::default();
        pacer.wrote(10_000);
        pacer.changed(10_100);
        let plan = alarm_after_turn(AlarmInputs {
            run_wake: Some(Some(60_000)),
            pacer,
            ..inputs(10_100)
        });
        assert_eq!(plan, AlarmPlan::Set(Some(11_000)));
    }

    #[test]
    fn a_finished_run_with_nothing_to_write_clears_it_and_no_run_leaves_it() {
        assert_eq!(alarm_after_turn(inputs(5)), AlarmPlan::Set(None));
        let cold = AlarmInputs {
            run_wake: None,
            ..inputs(5)
        };
        assert_eq!(alarm_after_turn(cold), AlarmPlan::Leave);
    }
}
