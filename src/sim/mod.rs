//! A deterministic simulation of runs' gates against simulated Cloudflare,
//! in the spirit of FoundationDB's simulator and TigerBeetle's VOPR: the
//! real gate (`core::gate`) and run state machine, driven by a scheduler
//! that decides from one source every interleaving of concurrent requests
//! (at every await), every latency, every daemon's habit and every crash.
//! Invariants are checked as the schedule runs and when it is quiet
//! (`check`); a failing seed replays exactly.
//!
//! Native only: it is a test instrument, never part of the Worker.

pub mod check;
pub mod claims;
pub mod scenario;
pub mod source;
pub mod world;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use serde_json::{json, Value};

use self::check::Observed;
use self::claims::{
    keyed_start, KeyKind, Rpc, RpcAnswer, SimClaimStorage, CLAIM_OBJECT, WORKER_OBJECT,
};
use self::scenario::Plan;
use self::source::Source;
use self::world::{
    callback_body, DaemonAct, Dispatch, Shared, SimClock, SimComponents, SimNotifier, SimObject,
    SimRecords, World,
};
use crate::core::claim::{ClaimKeeper, START_GRACE_MS};
use crate::core::error::EngineError;
use crate::core::gate::{command_run_id, Answer, Gate, GateLog, Platform};
use crate::core::plan::{Directory, GraphLimits};
use crate::core::redact::Redactor;
use crate::core::run::Settings;
use crate::core::segment::{Command, GateConfig};

/// When every schedule starts (simulated Unix ms).
pub const T0: u64 = 1_800_000_000_000;
/// A schedule that has not gone quiet after this much simulated time is stuck.
const HORIZON_MS: u64 = 30 * 60 * 1000;
/// Crashes stop after this much simulated time: a storm of them can keep
/// a run from ever finishing a replay, and what is checked is that
/// everything comes right once they stop.
const STORMS_END_MS: u64 = 15 * 60 * 1000;
/// Or after this many scheduling steps.
const MAX_STEPS: u64 = 400_000;
/// The reference daemon's waits before each retry of a callback.
const DAEMON_RETRY_MS: [u64; 4] = [0, 1_000, 5_000, 30_000];

/// What one schedule did, and what it found wrong.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub steps: u64,
    pub crashes: u64,
    pub requests: u64,
    pub alarms: u64,
    pub violations: Vec<String>,
    /// What happened, line by line, when asked for (`simulate_traced`).
    pub trace: Vec<String>,
}

/// Who sent a request, so the right party retries it.
#[derive(Debug, Clone)]
enum Sender {
    Daemon {
        dispatch: Dispatch,
        attempt: usize,
    },
    Caller,
    /// A start under a claim: a caller with an `Idempotency-Key`, or a
    /// sub-workflow call issued again.
    Keyed(Keyed),
    /// The sender of a keyed start that was answered reading its run: not
    /// found, it sends the start again.
    Check(Keyed),
}

/// A start under a claim, as its sender sends it again.
#[derive(Debug, Clone)]
struct Keyed {
    kind: KeyKind,
    key: String,
    /// Names the run id this request would start (each request makes its
    /// own).
    start: Command,
    /// Sent again after an error so far.
    attempt: usize,
    /// Sent again after the run it was told was not found so far.
    checks: usize,
}

impl Keyed {
    /// The same start as a new request sends it, with a run id of its own.
    fn again(&self, mark: &str, attempt: usize, checks: usize) -> Self {
        let id = format!("{}{mark}", command_run_id(&self.start));
        Self {
            start: with_fresh_id(&self.start, &id),
            attempt,
            checks,
            ..self.clone()
        }
    }

    fn send(self) -> Event {
        let start = self.start.clone();
        Event::Send(Box::new((Sender::Keyed(self), start)))
    }
}

/// A request as sent and answered.
#[derive(Debug, Clone)]
pub struct Sent {
    pub at: u64,
    pub command: Command,
    /// The daemon's callback id, for a callback.
    pub callback: Option<u64>,
    /// The claimed name, for a start under one.
    pub key: Option<String>,
    pub answer: Option<Result<Answer, String>>,
    pub answered_at: Option<u64>,
}

enum Event {
    Send(Box<(Sender, Command)>),
    Crash(String),
}

type TaskFuture = Pin<Box<dyn Future<Output = Result<Answer, EngineError>>>>;

struct Task {
    object: String,
    origin: Origin,
    future: TaskFuture,
}

/// What a task is doing on its object.
enum Origin {
    /// Answering a request from outside.
    Request(u64, Box<Sender>),
    /// Answering a sub-request of another task (`claims::Rpc`).
    Rpc(u64),
    Alarm,
}

/// One schedule in motion.
pub struct Simulation {
    world: Shared,
    config: Rc<GateConfig>,
    gates: BTreeMap<String, Rc<Gate>>,
    /// Claim objects' memory, by object: lost when one crashes.
    keepers: BTreeMap<String, Rc<ClaimKeeper>>,
    /// Keyed starts, to send once more when the schedule goes quiet.
    keyed: Vec<Keyed>,
    probed: bool,
    tasks: Vec<Task>,
    events: Vec<(u64, u64, Event)>,
    alarm_running: BTreeSet<String>,
    pub sent: BTreeMap<u64, Sent>,
    pub observed: Observed,
    report: Report,
    seq: u64,
}

/// Runs one schedule to quiet (or to its horizon) and checks it.
pub fn simulate(source: Source) -> Report {
    simulate_traced(source, false)
}

/// `simulate`, keeping a line for every request, answer, crash and alarm.
pub fn simulate_traced(mut source: Source, tracing: bool) -> Report {
    let plan = scenario::plan(&mut source, T0);
    let mut sim = Simulation::new(source, &plan);
    if tracing {
        sim.world.borrow_mut().trace = Some(Vec::new());
        sim.note(format!("plan: {plan:?}"));
    }
    sim.run(&plan);
    sim.finish()
}

impl Simulation {
    fn new(source: Source, plan: &Plan) -> Self {
        let settings = Settings {
            max_calls_per_segment: plan.max_calls_per_segment,
            call_timeout_ms: world::COMPONENT_TIMEOUT_MS,
            ..Settings::default()
        };
        let config = GateConfig {
            settings,
            directory: Directory::default(),
            limits: GraphLimits::default(),
            max_record_bytes: 24 << 20,
            retention_secs: 24 * 3600,
            index_tasks: false,
            callback_secret: Some(Rc::from("sim-secret")),
            webhook_keys: vec![b"sim-webhook-key-0123456789abcdef".to_vec()],
            delivery_window_ms: 3600 * 1000,
            redactor: Redactor::with_extra(Vec::<String>::new()),
        };
        let mut world = World::new(source, T0);
        world.daemon_knobs = plan.knobs;
        Self {
            world: Rc::new(RefCell::new(world)),
            config: Rc::new(config),
            gates: BTreeMap::new(),
            keepers: BTreeMap::new(),
            keyed: Vec::new(),
            probed: false,
            tasks: Vec::new(),
            events: Vec::new(),
            alarm_running: BTreeSet::new(),
            sent: BTreeMap::new(),
            observed: Observed::default(),
            report: Report::default(),
            seq: 0,
        }
    }

    fn schedule(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.events.push((at, self.seq, event));
    }

    fn run(&mut self, plan: &Plan) {
        for run in &plan.runs {
            let start = Command::Start {
                run_id: run.run_id.clone(),
                graph: run.graph.clone(),
                context: run.context.clone(),
                owner: Some("owner".into()),
                base_url: "https://engine.sim".into(),
                final_callback_url: None,
                workflow: None,
                depth: 0,
                parent: None,
                restart: false,
            };
            match run.keyed {
                Some(kind) => {
                    let key = format!("key-{}", run.run_id);
                    // Each request makes its own run id; the first sent
                    // names the plan's.
                    for n in 0..=run.duplicates {
                        let start = match n {
                            0 => start.clone(),
                            n => with_fresh_id(&start, &format!("{}k{n}", run.run_id)),
                        };
                        let keyed = Keyed {
                            kind,
                            key: key.clone(),
                            start,
                            attempt: 0,
                            checks: 0,
                        };
                        if n == 0 {
                            self.keyed.push(keyed.clone());
                        }
                        let at = run.start_at + n * self.below(300);
                        self.schedule(at, keyed.send());
                    }
                }
                None => self.schedule(run.start_at, Event::Send(Box::new((Sender::Caller, start)))),
            }
            let owner = Some("owner".to_string());
            if let Some(at) = run.cancel_at {
                let cancel = Command::Cancel {
                    run_id: run.run_id.clone(),
                    owner: owner.clone(),
                };
                self.schedule(at, Event::Send(Box::new((Sender::Caller, cancel))));
            }
            if let Some(at) = run.retry_at {
                let retry = Command::Retry {
                    run_id: run.run_id.clone(),
                    owner,
                };
                self.schedule(at, Event::Send(Box::new((Sender::Caller, retry))));
            }
        }
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        loop {
            self.report.steps += 1;
            let now = self.world.borrow().now;
            if self.report.steps > MAX_STEPS || now > T0 + HORIZON_MS {
                self.violation("the schedule did not go quiet: a run is stuck".into());
                return;
            }
            self.take_dispatches();
            self.take_rpcs();
            self.fire_due();
            if plan.crash > 0 && now < T0 + STORMS_END_MS && self.chance(plan.crash) {
                self.crash_someone();
            }
            if self.poll_one(&mut cx) {
                continue;
            }
            if !self.advance() && !self.probe() {
                return;
            }
        }
    }

    fn note(&mut self, line: String) {
        self.world.borrow_mut().note(|| line);
    }

    fn chance(&self, per_mille: u64) -> bool {
        self.world.borrow_mut().source.chance(per_mille)
    }

    fn below(&self, n: u64) -> u64 {
        self.world.borrow_mut().source.below(n)
    }

    fn violation(&mut self, what: String) {
        self.world.borrow_mut().violation(what);
    }

    /// Daemons that components set in motion become scheduled requests.
    fn take_dispatches(&mut self) {
        let dispatched = std::mem::take(&mut self.world.borrow_mut().dispatched);
        for dispatch in dispatched {
            let at = dispatch.at;
            let command = daemon_command(&dispatch);
            let sender = Sender::Daemon {
                dispatch,
                attempt: 0,
            };
            self.schedule(at, Event::Send(Box::new((sender, command))));
        }
    }

    /// Sub-requests become tasks on their objects. A claim object takes one
    /// at a time, as its input gate holds others while it awaits its own
    /// storage.
    fn take_rpcs(&mut self) -> bool {
        let queued = std::mem::take(&mut self.world.borrow_mut().rpcs);
        let begun = queued.len();
        let mut waiting = Vec::new();
        for (id, object, rpc) in queued {
            let busy = |tasks: &[Task]| tasks.iter().any(|t| t.object == object);
            let future = match rpc {
                Rpc::Claim(claim) if busy(&self.tasks) => {
                    waiting.push((id, object, Rpc::Claim(claim)));
                    continue;
                }
                Rpc::Claim(claim) => self.claim_future(&object, claim),
                Rpc::Gate(command) => {
                    if let Command::Start { restart: true, .. } = &command {
                        let now = self.world.borrow().now;
                        self.observed.restart(&object, now);
                    }
                    self.request_future(&object, command)
                }
            };
            self.tasks.push(Task {
                object,
                origin: Origin::Rpc(id),
                future,
            });
        }
        let begun = begun > waiting.len();
        self.world.borrow_mut().rpcs.extend(waiting);
        begun
    }

    /// When the schedule goes quiet, every keyed start is sent once more,
    /// as a caller that lost its answer would: the claim must still name
    /// the run, and that run must exist (started again, if it never was
    /// stored). False when that was done already.
    fn probe(&mut self) -> bool {
        if self.probed || self.keyed.is_empty() {
            return false;
        }
        self.probed = true;
        // After a claim object's memory of handing its claim out has
        // lapsed: until then it answers that the run is being started.
        let at = self.world.borrow().now + START_GRACE_MS + 1;
        for keyed in std::mem::take(&mut self.keyed) {
            self.schedule(at, keyed.again("p", 0, 0).send());
        }
        self.world.borrow_mut().now = at;
        true
    }

    /// Sends what is due, and fires due alarms.
    fn fire_due(&mut self) {
        let now = self.world.borrow().now;
        self.events.sort_by_key(|(at, seq, _)| (*at, *seq));
        while self.events.first().is_some_and(|(at, _, _)| *at <= now) {
            let (_, _, event) = self.events.remove(0);
            match event {
                Event::Send(message) => self.send(message.0, message.1),
                Event::Crash(object) => self.crash(&object),
            }
        }
        let due: Vec<String> = self
            .world
            .borrow()
            .objects
            .iter()
            .filter(|(id, o)| {
                o.alarm.is_some_and(|at| at <= now) && !self.alarm_running.contains(*id)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for object in due {
            // Consumed as it fires; the handler sets the next one.
            if let Some(o) = self.world.borrow_mut().objects.get_mut(&object) {
                o.alarm = None;
            }
            self.report.alarms += 1;
            self.note(format!("alarm fires for {object}"));
            self.alarm_running.insert(object.clone());
            let future = match object.starts_with(CLAIM_OBJECT) {
                true => self.claim_alarm_future(&object),
                false => self.alarm_future(&object),
            };
            self.tasks.push(Task {
                object,
                origin: Origin::Alarm,
                future,
            });
        }
    }

    /// A request reaches the Worker: the route refuses a callback whose
    /// token has expired without reaching the gate; the rest go to the
    /// run's gate.
    fn send(&mut self, sender: Sender, command: Command) {
        self.report.requests += 1;
        let now = self.world.borrow().now;
        let id = self.world.borrow_mut().id();
        let callback = match &sender {
            Sender::Daemon { dispatch, .. } => match dispatch.what {
                DaemonAct::Callback { id, .. } => Some(id),
                DaemonAct::Heartbeat { .. } => None,
            },
            Sender::Caller | Sender::Keyed(_) | Sender::Check(_) => None,
        };
        let key = match &sender {
            Sender::Keyed(keyed) => Some(keyed.key.clone()),
            _ => None,
        };
        self.sent.insert(
            id,
            Sent {
                at: now,
                command: command.clone(),
                callback,
                key,
                answer: None,
                answered_at: None,
            },
        );
        self.note(format!("#{id} sent: {}", brief(&command)));
        if let Sender::Daemon { dispatch, .. } = &sender {
            if now >= dispatch.token_expires_at {
                let body = json!({"success": true, "noop": true, "reason": "expired"});
                self.answered(id, Ok(Answer { status: 200, body }));
                return;
            }
        }
        let (object, future) = match &sender {
            Sender::Keyed(keyed) => {
                let world = Rc::clone(&self.world);
                let future = keyed_start(world, keyed.kind, keyed.key.clone(), command);
                (
                    format!("{WORKER_OBJECT}{id}"),
                    Box::pin(future) as TaskFuture,
                )
            }
            _ => {
                let object = command_run_id(&command).to_string();
                let future = self.request_future(&object, command);
                (object, future)
            }
        };
        self.tasks.push(Task {
            object,
            origin: Origin::Request(id, Box::new(sender)),
            future,
        });
    }

    fn gate(&mut self, object: &str) -> Rc<Gate> {
        if !self.gates.contains_key(object) {
            let gate = self.fresh_gate();
            self.gates.insert(object.to_string(), gate);
        }
        Rc::clone(&self.gates[object])
    }

    /// A new life of an object: its memory empty, its keys its own.
    fn fresh_gate(&self) -> Rc<Gate> {
        let life = self.world.borrow_mut().source.below(u64::from(u32::MAX)) as u32;
        Rc::new(Gate::starting(life))
    }

    fn request_future(&mut self, object: &str, command: Command) -> TaskFuture {
        let gate = self.gate(object);
        let world = Rc::clone(&self.world);
        let config = Rc::clone(&self.config);
        let object = object.to_string();
        Box::pin(async move {
            let parts = Parts::new(&world, &object);
            let log = |event: GateLog<'_>| trace_log(&world, event);
            gate.handle(&parts.platform(&config, &log), command).await
        })
    }

    fn alarm_future(&mut self, object: &str) -> TaskFuture {
        let gate = self.gate(object);
        let world = Rc::clone(&self.world);
        let config = Rc::clone(&self.config);
        let object = object.to_string();
        Box::pin(async move {
            let parts = Parts::new(&world, &object);
            let log = |event: GateLog<'_>| trace_log(&world, event);
            gate.alarm(&parts.platform(&config, &log)).await?;
            Ok(Answer {
                status: 200,
                body: Value::Null,
            })
        })
    }

    fn keeper(&mut self, object: &str) -> Rc<ClaimKeeper> {
        Rc::clone(self.keepers.entry(object.to_string()).or_default())
    }

    fn claim_future(&mut self, object: &str, claim: crate::core::claim::Claim) -> TaskFuture {
        let keeper = self.keeper(object);
        let world = Rc::clone(&self.world);
        let storage = SimClaimStorage {
            world: Rc::clone(&self.world),
            object: object.to_string(),
        };
        Box::pin(async move {
            let now = world.borrow().now;
            let answer = keeper.handle(&storage, claim, now).await?;
            Ok(Answer {
                status: 200,
                body: serde_json::to_value(answer).unwrap_or_default(),
            })
        })
    }

    fn claim_alarm_future(&mut self, object: &str) -> TaskFuture {
        let keeper = self.keeper(object);
        let storage = SimClaimStorage {
            world: Rc::clone(&self.world),
            object: object.to_string(),
        };
        Box::pin(async move {
            keeper.expire(&storage).await?;
            Ok(Answer {
                status: 200,
                body: Value::Null,
            })
        })
    }

    /// Polls tasks in a random order until one moves; false if none can
    /// until time passes.
    fn poll_one(&mut self, cx: &mut Context<'_>) -> bool {
        let n = self.tasks.len();
        if n == 0 {
            return false;
        }
        let first = self.below(n as u64) as usize;
        for k in 0..n {
            let i = (first + k) % n;
            let before = self.world.borrow().progress;
            let poll = self.tasks[i].future.as_mut().poll(cx);
            let object = self.tasks[i].object.clone();
            let moved = self.world.borrow().progress != before;
            match poll {
                Poll::Ready(result) => {
                    let task = self.tasks.remove(i);
                    self.finished(task, result);
                    self.observe(&object);
                    return true;
                }
                Poll::Pending if moved => {
                    self.observe(&object);
                    return true;
                }
                Poll::Pending => {}
            }
        }
        false
    }

    fn finished(&mut self, task: Task, result: Result<Answer, EngineError>) {
        if let Err(EngineError::StaleRead(_)) = &result {
            // Refused until KV is known to have caught up: late, not lost.
            let mut world = self.world.borrow_mut();
            let now = world.now;
            world
                .lagged
                .entry(task.object.clone())
                .or_default()
                .push(now);
        }
        match task.origin {
            Origin::Rpc(id) => {
                let answer = match result {
                    Ok(answer) if task.object.starts_with(CLAIM_OBJECT) => {
                        serde_json::from_value(answer.body)
                            .map(RpcAnswer::Claim)
                            .map_err(|e| e.to_string())
                    }
                    Ok(answer) => Ok(RpcAnswer::Gate(answer)),
                    Err(e) if e.status() < 500 => Ok(RpcAnswer::Refused(e.status())),
                    Err(e) => Err(e.to_string()),
                };
                let mut world = self.world.borrow_mut();
                world.rpc_answers.insert(id, answer);
                world.progress += 1;
            }
            Origin::Request(id, sender) => {
                let sender = *sender;
                let retry = match (&result, &sender) {
                    // A caller retries what failed, not what was refused.
                    (Ok(answer), Sender::Keyed(_)) => answer.status >= 500,
                    (_, Sender::Check(_)) => true,
                    (Ok(answer), _) => !(200..300).contains(&answer.status),
                    (Err(_), _) => true,
                };
                let told = match (&result, &sender) {
                    (Ok(answer), Sender::Keyed(_)) if answer.status < 300 => {
                        answer.body["run_id"].as_str().map(str::to_string)
                    }
                    _ => None,
                };
                let found = match (&result, &sender) {
                    (Ok(answer), Sender::Check(_)) => answer.status != 404,
                    _ => false,
                };
                self.answered(id, result.map_err(|e| e.to_string()));
                if let (Some(run_id), Sender::Keyed(keyed)) = (told, &sender) {
                    self.check_later(keyed, run_id);
                }
                if retry && !found {
                    self.retry(sender);
                }
            }
            Origin::Alarm => {
                self.alarm_running.remove(&task.object);
                let line = format!("alarm of {} ends: {:?}", task.object, result.as_ref().err());
                self.note(line);
                let now = self.world.borrow().now;
                match result {
                    // At least once: now and then an alarm fires again.
                    Ok(_) if self.chance(30) => {
                        let again = now + self.below(1_500);
                        self.set_alarm_if_later(&task.object, again);
                    }
                    Ok(_) => {}
                    // A failed handler is retried by the platform.
                    Err(_) => self.set_alarm_if_later(&task.object, now + 2_000),
                }
            }
        }
    }

    fn set_alarm_if_later(&mut self, object: &str, at: u64) {
        let mut world = self.world.borrow_mut();
        let o = world.objects.entry(object.to_string()).or_default();
        if o.alarm.is_none_or(|set| set > at) {
            o.alarm = Some(at);
        }
    }

    fn answered(&mut self, id: u64, answer: Result<Answer, String>) {
        let now = self.world.borrow().now;
        let line = match &answer {
            Ok(a) => format!(
                "#{id} answered {} {}",
                a.status,
                a.body.to_string().chars().take(160).collect::<String>()
            ),
            Err(e) => format!("#{id} failed: {e}"),
        };
        self.note(line);
        if let Some(sent) = self.sent.get_mut(&id) {
            sent.answer = Some(answer);
            sent.answered_at = Some(now);
        }
    }

    /// A daemon tries again after an error, as the reference daemon does;
    /// so does a caller with an `Idempotency-Key` (and a parent issuing its
    /// call again), as a new request, until it has its run; callers without
    /// one do not (their run may or may not have started).
    fn retry(&mut self, sender: Sender) {
        match sender {
            // It needs its run: it tries until it has it, backing off as
            // a daemon does.
            Sender::Keyed(keyed) => {
                let last = DAEMON_RETRY_MS.len() - 1;
                let at = self.world.borrow().now + DAEMON_RETRY_MS[keyed.attempt.min(last)];
                let again = keyed.again("r", keyed.attempt + 1, keyed.checks);
                self.schedule(at, again.send());
                return;
            }
            // Not found (or the read failed): the start is sent again.
            Sender::Check(keyed) => {
                let now = self.world.borrow().now;
                let again = keyed.again("c", 0, keyed.checks + 1);
                self.schedule(now, again.send());
                return;
            }
            _ => {}
        }
        let Sender::Daemon { dispatch, attempt } = sender else {
            return;
        };
        let Some(wait) = DAEMON_RETRY_MS.get(attempt) else {
            return;
        };
        let at = self.world.borrow().now + wait;
        let command = daemon_command(&dispatch);
        let sender = Sender::Daemon {
            dispatch,
            attempt: attempt + 1,
        };
        self.schedule(at, Event::Send(Box::new((sender, command))));
    }

    /// A caller told of a run reads it once a claim object's memory of
    /// handing the claim out has lapsed (until then a run being started is
    /// shown as running before its gate knows it).
    fn check_later(&mut self, keyed: &Keyed, run_id: String) {
        let read = Command::Read {
            run_id,
            owner: Some("owner".into()),
        };
        let at = self.world.borrow().now + START_GRACE_MS + 1;
        let check = Sender::Check(keyed.clone());
        self.schedule(at, Event::Send(Box::new((check, read))));
    }

    /// An object crashes (or is evicted): its requests fail (their senders
    /// see a dropped connection), a running alarm handler counts as failed,
    /// KV writes under way land or not, and its memory is gone. Its storage
    /// and alarm stay.
    fn crash(&mut self, object: &str) {
        self.report.crashes += 1;
        self.note(format!("{object} crashes"));
        self.observed.crash(object, self.world.borrow().now);
        let (dead, alive): (Vec<Task>, Vec<Task>) = std::mem::take(&mut self.tasks)
            .into_iter()
            .partition(|t| t.object == object);
        self.tasks = alive;
        for task in dead {
            drop(task.future);
            match task.origin {
                Origin::Request(id, sender) => {
                    let sender = *sender;
                    self.answered(id, Err("connection lost: the object crashed".into()));
                    self.retry(sender);
                }
                Origin::Rpc(id) => {
                    let mut world = self.world.borrow_mut();
                    let lost = Err("connection lost: the object crashed".to_string());
                    world.rpc_answers.insert(id, lost);
                    world.progress += 1;
                }
                Origin::Alarm => {
                    self.alarm_running.remove(object);
                    let now = self.world.borrow().now;
                    self.set_alarm_if_later(object, now + 2_000);
                }
            }
        }
        let in_flight: Vec<u64> = self
            .world
            .borrow()
            .kv_in_flight
            .iter()
            .filter(|(_, (o, _, _))| o == object)
            .map(|(id, _)| *id)
            .collect();
        for id in in_flight {
            let lands = self.chance(500);
            let mut world = self.world.borrow_mut();
            if let Some((_, key, entry)) = world.kv_in_flight.remove(&id) {
                if lands {
                    let _ = world.kv_land(object, &key, entry);
                }
            }
        }
        // Now and then an object comes back in another location, where KV
        // may not show its latest writes for a while.
        if self.chance(100) {
            let mut world = self.world.borrow_mut();
            let moved = world.location(object) + 1;
            world.locations.insert(object.to_string(), moved);
            world.note(|| format!("{object} comes back in location {moved}"));
        }
        if object.starts_with(CLAIM_OBJECT) {
            self.keepers.remove(object);
        } else if !object.starts_with(WORKER_OBJECT) {
            let gate = self.fresh_gate();
            self.gates.insert(object.to_string(), gate);
        }
    }

    fn crash_someone(&mut self) {
        let busy: Vec<String> = self.tasks.iter().map(|t| t.object.clone()).collect();
        let candidates: Vec<String> = if busy.is_empty() {
            self.gates.keys().cloned().collect()
        } else {
            busy
        };
        if candidates.is_empty() {
            return;
        }
        let i = self.below(candidates.len() as u64) as usize;
        let object = candidates[i].clone();
        let now = self.world.borrow().now;
        self.schedule(now, Event::Crash(object));
    }

    /// Moves the clock to the next thing that can happen; false when
    /// nothing ever will (the schedule is quiet).
    fn advance(&mut self) -> bool {
        // A sub-request held back by a busy object that has since crashed
        // begins now.
        if self.take_rpcs() {
            return true;
        }
        let now = self.world.borrow().now;
        let next_event = self.events.iter().map(|(at, _, _)| *at).min();
        let next_alarm = self
            .world
            .borrow()
            .objects
            .iter()
            .filter(|(id, _)| !self.alarm_running.contains(*id))
            // A claim's alarm forgets it a day later: no work of the schedule.
            .filter(|(id, _)| !id.starts_with(CLAIM_OBJECT))
            .filter_map(|(_, o)| o.alarm)
            .min();
        let next_wakeup = self.next_wakeup(now);
        let next = [next_event, next_alarm, next_wakeup]
            .into_iter()
            .flatten()
            .min();
        let Some(next) = next else {
            return !self.tasks.is_empty() && {
                self.violation("tasks wait on nothing that will ever happen".into());
                false
            };
        };
        // Alarms and timers run a little late at times.
        let jitter = if self.chance(200) { self.below(200) } else { 0 };
        self.world.borrow_mut().now = next.max(now + 1) + jitter;
        true
    }

    /// The earliest time a task waiting on time is due.
    fn next_wakeup(&self, now: u64) -> Option<u64> {
        let mut world = self.world.borrow_mut();
        let later = world.wakeups.split_off(&(now + 1));
        world.wakeups = later;
        world.wakeups.first().copied()
    }

    /// Notes what the gate's run shows now: waits opened and closed.
    fn observe(&mut self, object: &str) {
        let Some(gate) = self.gates.get(object) else {
            return;
        };
        let now = self.world.borrow().now;
        let observed = &mut self.observed;
        let mut lines = Vec::new();
        gate.inspect(|run| {
            if let Some(run) = run {
                lines = observed.run(object, run, now);
            }
        });
        for line in lines {
            self.note(line);
        }
    }

    fn finish(mut self) -> Report {
        let gates = std::mem::take(&mut self.gates);
        check::at_quiet(&self, &gates);
        let mut world = self.world.borrow_mut();
        self.report.violations.clone_from(&world.violations);
        self.report.trace = world.trace.take().unwrap_or_default();
        drop(world);
        self.report
    }

    pub fn world(&self) -> std::cell::Ref<'_, World> {
        self.world.borrow()
    }

    pub fn config(&self) -> &GateConfig {
        &self.config
    }

    pub fn record_violation(&self, what: String) {
        self.world.borrow_mut().violation(what);
    }
}

/// The gate's own log, in the trace.
fn trace_log(world: &Shared, event: GateLog<'_>) {
    if let GateLog::Segment {
        run_id,
        outcome,
        started,
    } = event
    {
        let line = match outcome {
            Ok(report) => format!("  segment {run_id} {} from {}", report.kind, started - T0),
            Err(e) => format!("  segment {run_id} failed: {e}"),
        };
        world.borrow_mut().note(|| line);
    }
}

/// A request in a trace line.
fn brief(command: &Command) -> String {
    match command {
        Command::Callback {
            run_id,
            wait_id,
            body,
            ..
        } => {
            format!("callback {run_id}/{wait_id} {body}")
        }
        Command::Heartbeat {
            run_id, wait_id, ..
        } => format!("heartbeat {run_id}/{wait_id}"),
        other => format!(
            "{} {}",
            serde_json::to_value(other)
                .ok()
                .and_then(|v| v.as_object().and_then(|o| o.keys().next().cloned()))
                .unwrap_or_default(),
            command_run_id(other)
        ),
    }
}

/// `start` as another request would send it: with a run id of its own.
fn with_fresh_id(start: &Command, run_id: &str) -> Command {
    let mut value = serde_json::to_value(start).unwrap_or_default();
    value["start"]["run_id"] = json!(run_id);
    serde_json::from_value(value).unwrap_or_else(|_| start.clone())
}

/// The request a daemon's act becomes, as the route hands it to the gate.
fn daemon_command(dispatch: &Dispatch) -> Command {
    match dispatch.what {
        DaemonAct::Callback { id, success } => Command::Callback {
            run_id: dispatch.run_id.clone(),
            wait_id: dispatch.wait_id.clone(),
            body: callback_body(&dispatch.task_id, id, success),
            base_url: "https://engine.sim".into(),
            token_expires_at: Some(dispatch.token_expires_at),
        },
        DaemonAct::Heartbeat { extend_seconds } => Command::Heartbeat {
            run_id: dispatch.run_id.clone(),
            wait_id: dispatch.wait_id.clone(),
            body: json!({"task_id": dispatch.task_id, "extend_seconds": extend_seconds}),
            token_expires_at: Some(dispatch.token_expires_at),
        },
    }
}

/// The platform pieces of one object, owned by the task that uses them.
struct Parts {
    records: SimRecords,
    components: SimComponents,
    clock: SimClock,
    object: SimObject,
}

impl Parts {
    fn new(world: &Shared, object: &str) -> Self {
        Self {
            records: SimRecords {
                world: Rc::clone(world),
                object: object.to_string(),
            },
            components: SimComponents {
                world: Rc::clone(world),
                run_id: object.to_string(),
            },
            clock: SimClock {
                world: Rc::clone(world),
            },
            object: SimObject {
                world: Rc::clone(world),
                run_id: object.to_string(),
            },
        }
    }

    #[allow(clippy::type_complexity)]
    fn platform<'a>(
        &'a self,
        config: &'a GateConfig,
        log: &'a dyn Fn(GateLog<'_>),
    ) -> Platform<'a, SimRecords, SimComponents, SimClock, SimNotifier, SimObject> {
        Platform {
            records: &self.records,
            components: &self.components,
            clock: &self.clock,
            notifier: &SimNotifier,
            object: &self.object,
            config,
            log,
        }
    }
}
