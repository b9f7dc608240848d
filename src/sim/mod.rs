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
mod senders;
pub mod source;
mod tasks;
pub mod world;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use self::check::Observed;
use self::claims::{Rpc, RpcAnswer, CLAIM_OBJECT, WORKER_OBJECT};
use self::scenario::Plan;
pub use self::senders::Sent;
use self::senders::{with_fresh_id, Keyed, Sender};
use self::source::Source;
use self::tasks::{Origin, Task, TaskFuture};
use self::world::{Shared, World};
use crate::core::claim::ClaimKeeper;
use crate::core::error::EngineError;
use crate::core::gate::{Answer, Gate};
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
/// Where callers that ask for a final callback want it.
const RECEIVER: &str = "https://receiver.sim/hook";
/// The reference daemon's waits before each retry of a callback.
pub(super) const DAEMON_RETRY_MS: [u64; 4] = [0, 1_000, 5_000, 30_000];

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

enum Event {
    Send(Box<(Sender, Command)>),
    Crash(String),
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
            // Short enough that a receiver that keeps failing is given up on
            // well inside the horizon.
            delivery_window_ms: 10 * 60 * 1000,
            redactor: Redactor::with_extra(Vec::<String>::new()),
        };
        let mut world = World::new(source, T0);
        world.daemon_knobs = plan.knobs;
        world.receiver_fails = plan.receiver_fails;
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
                final_callback_url: run.notify.then(|| RECEIVER.to_string()),
                workflow: None,
                depth: 0,
                parent: None,
                root: None,
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
                o.firing = o.alarm.take();
                o.moved = false;
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
                let lost = {
                    let mut world = self.world.borrow_mut();
                    let o = world.objects.entry(task.object.clone()).or_default();
                    let fired = o.firing.take();
                    let lost = result.is_ok() && fired.is_some() && o.alarm == fired && !o.moved;
                    if lost {
                        o.alarm = None;
                    }
                    lost
                };
                if lost {
                    self.note(format!(
                        "alarm of {} set again to the time that fired: deleted with it",
                        task.object
                    ));
                }
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
                    if let Some(o) = self.world.borrow_mut().objects.get_mut(object) {
                        o.firing = None;
                    }
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
