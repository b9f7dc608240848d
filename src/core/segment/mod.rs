//! One segment of a run, start to end: load the run (or take the one the
//! gate kept) → take the deadlines due at the request's arrival → apply
//! what arrived, one module per transition (`start`, `callback`,
//! `heartbeat`, `wake`, `cancel`, `redeliver`, `retry`) → drive it →
//! answer, marked `dirty`; `write::flush` then writes the record once, for
//! this segment and any before it not yet written (`core::gate` decides
//! when). Storage, components and the clock are traits, so it runs
//! natively against in-memory doubles that can fail on purpose
//! (`memory.rs`) and inside the simulation (`sim`).

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::answer::{CallbackAccepted, True};
use super::driver::{drive, Components, Journal};
use super::effect::next_wake;
use super::error::EngineError;
use super::graph::MAX_WAIT_SECONDS;
use super::plan::{Directory, GraphLimits};
use super::record::{DeliveryState, EventKind, EventOutcome, RunStatus, WaitEvent};
use super::redact::Redactor;
use super::run::{DeliveryOutcome, Journaled, Noop, Run, Settings, Signer};
use super::view::{answer_value, callback_answer, run_details, run_outcome};

mod callback;
mod cancel;
mod heartbeat;
mod read;
mod redeliver;
mod retry;
mod start;
mod wake;
mod write;

pub use read::{add_noted, details, read, View};
pub use write::{flush, flush_encoded, index_waits, record_ttl};

/// Where a sub-workflow's run reports its end: `run://{parent run}/{wait}`.
pub const PARENT_SCHEME: &str = "run://";

/// KV TTLs have a floor of 60 seconds.
pub const MIN_TTL_SECS: u64 = 60;
/// A paused record outlives its last deadline by this much, so it is still
/// there when the alarm acts on the deadline (alarms may retry).
pub const DEADLINE_GRACE_SECS: u64 = 3600;
/// The longest TTL a record gets: the longest wait plus the grace period.
pub const MAX_TTL_SECS: u64 = MAX_WAIT_SECONDS + DEADLINE_GRACE_SECS;
/// A record stored `running` is continued by an alarm within moments, but
/// it must outlive a gate that keeps failing for a while (its kept requests
/// are applied to this record when it recovers): the grace period too.
pub const RUNNING_TTL_SECS: u64 = DEADLINE_GRACE_SECS;

pub use super::store::{JournalStore, Records, Store, TaskIndex, TaskIndexStore, WaitNotes};

pub trait Clock {
    fn now(&self) -> u64;
}

/// Sends the final callback to the caller's receiver.
#[allow(async_fn_in_trait)]
pub trait Notifier {
    async fn deliver(&self, url: &str, headers: &[(&str, String)], body: &str) -> DeliveryOutcome;
}

/// Configuration a gate needs, parsed once.
#[derive(Debug, Clone)]
pub struct GateConfig {
    pub settings: Settings,
    pub directory: Directory,
    pub limits: GraphLimits,
    pub max_record_bytes: usize,
    pub retention_secs: u64,
    /// Write `task:{id}` entries for the legacy bare resume route.
    pub index_tasks: bool,
    /// Signs callback URLs; `None` leaves calls without one.
    pub callback_secret: Option<Rc<str>>,
    /// Standard Webhooks keys that sign the final callback (current first).
    pub webhook_keys: Vec<Vec<u8>>,
    /// How long failed final callbacks are retried, from the first attempt.
    pub delivery_window_ms: u64,
    pub redactor: Redactor,
}

/// What arrives at a run's gate: the one message between the front Worker
/// and the run's Durable Object, serialized once by the sender and kept as
/// it came (an `inbox:` entry) when its change waits for the next write.
/// Externally tagged in snake case, as kept requests of earlier releases are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    Start {
        run_id: String,
        graph: Value,
        context: Map<String, Value>,
        owner: Option<String>,
        /// Where the trigger arrived: the base of the run's callback URLs.
        base_url: String,
        /// Where to POST the run's outcome when it finishes (already checked).
        #[serde(default)]
        final_callback_url: Option<String>,
        /// The stored workflow it runs, if it was started by name.
        #[serde(default)]
        workflow: Option<String>,
        /// For a sub-workflow's run: how deep it is, and the parent's wait
        /// to resume when it finishes (`run://{run_id}/{wait_id}`).
        #[serde(default)]
        depth: u32,
        #[serde(default)]
        parent: Option<String>,
        /// For a sub-workflow's run: the run at the top of its tree.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        root: Option<String>,
        /// Started again under its claim, which was taken over: the run was
        /// claimed before and, as far as anyone could tell, never stored. Its
        /// object may hold requests that came for it meanwhile (callbacks
        /// from its calls), applied once it starts; and a run stored after
        /// all is answered as it stands, not started over.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        restart: bool,
    },
    Callback {
        run_id: String,
        wait_id: String,
        body: Value,
        /// Where this request arrived: the callback origin for runs stored
        /// before the origin was kept with the run.
        base_url: String,
        /// The expiry the callback URL was signed with (none on the bare route).
        #[serde(default)]
        token_expires_at: Option<u64>,
    },
    /// A daemon reports progress on a wait, and may extend its deadline.
    Heartbeat {
        run_id: String,
        wait_id: String,
        body: Value,
        #[serde(default)]
        token_expires_at: Option<u64>,
    },
    /// `GET /runs/{id}` (or, with `node`, `GET /runs/{id}/nodes/{node}`):
    /// not a segment; the gate answers it from the run it keeps, or the
    /// stored record.
    Read {
        run_id: String,
        owner: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<String>,
    },
    /// The alarm fired: take due deadlines, continue a yielded run.
    Wake { run_id: String },
    Cancel {
        run_id: String,
        owner: Option<String>,
    },
    /// Send the final callback again.
    Redeliver {
        run_id: String,
        owner: Option<String>,
    },
    /// Run a failed run's failed parts again.
    Retry {
        run_id: String,
        owner: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// The run after a trigger (`resumed: false`) or a callback; `running`
    /// when it yielded and goes on in the background.
    Outcome {
        body: Value,
        running: bool,
    },
    Noop(Noop),
    /// The run's details (after a cancel).
    Details(Value),
    /// The run's details, with work accepted to happen in the background.
    Accepted(Value),
    /// A heartbeat was applied: the wait's deadline now, and its URLs signed
    /// with it (the daemon uses these from now on).
    Heartbeat {
        expires_at: u64,
        callback_url: Option<String>,
        heartbeat_url: Option<String>,
    },
    /// An alarm with nothing to do.
    Idle,
}

#[derive(Debug)]
pub struct Segment {
    pub reply: Reply,
    /// When the run must next act on its own (`None`: never; no alarm).
    pub wake: Option<u64>,
    /// What happened, for the operator's log.
    pub report: Report,
    /// The run changed and its record must be written (`flush`). The gate
    /// decides when: at once, or within a second with what follows.
    pub dirty: bool,
    answer: Answer,
}

/// What an outcome reply is built from, so it can be built again from the
/// run as written (`Segment::refresh`).
#[derive(Debug, Clone, Default)]
pub(super) enum Answer {
    #[default]
    Fixed,
    Run,
    Callback {
        task_id: String,
        resumed_at: u64,
        /// Waits open before it was applied: none of them paused the run again.
        open_before: BTreeSet<String>,
    },
}

impl Segment {
    /// A segment that changed nothing worth reporting beyond its reply.
    fn unreported(reply: Reply, wake: Option<u64>) -> Self {
        Self {
            reply,
            wake,
            report: Report::default(),
            dirty: false,
            answer: Answer::Fixed,
        }
    }

    /// Builds an outcome reply again from the run as written at once after
    /// the segment: writing drops the oldest trace entries of a record past
    /// its size limit, or fails a run too large to store.
    pub fn refresh(&mut self, run: &Run, config: &GateConfig) {
        let body = match &self.answer {
            Answer::Fixed => return,
            Answer::Run => run_outcome(&run.record, &config.redactor),
            Answer::Callback {
                task_id,
                resumed_at,
                open_before,
            } => callback_answer(
                &run.record,
                task_id,
                *resumed_at,
                open_before,
                &config.redactor,
            ),
        };
        self.reply = Reply::Outcome {
            body,
            running: run.status() == &RunStatus::Running,
        };
    }
}

/// One segment, as the operator's log shows it: no data, only what ran.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// `trigger`, `callback`, `heartbeat`, `cancel`, `redeliver`, or for an
    /// alarm `deadline`, `continuation`, `poll`, `delivery` or `idle`.
    pub kind: &'static str,
    /// The run's status after the segment.
    pub status: Option<&'static str>,
    /// Component calls (and polls) made.
    pub calls: usize,
}

/// The platform pieces a segment uses.
pub struct Host<'a, S, C, K, N> {
    pub store: &'a S,
    pub components: &'a C,
    pub clock: &'a K,
    pub notifier: &'a N,
    pub config: &'a GateConfig,
}

/// Runs one segment. `cached` is the run as the gate last left it (it is
/// never stale: every segment of the run passes through the gate). Returns
/// the run to keep — `None` after a failure, so the next segment reloads the
/// stored record instead of a half-applied one.
///
/// `arrived` is when the gate received the request, when that was before
/// now (it was kept while a segment ran, or is replayed after a restart):
/// deadlines are judged at arrival, so a callback that came in time is
/// applied even if its turn comes later.
pub async fn run_segment<S: Store, C: Components, K: Clock, N: Notifier>(
    host: &Host<'_, S, C, K, N>,
    cached: Option<Run>,
    command: Command,
    arrived: Option<u64>,
) -> (Option<Run>, Result<Segment, EngineError>) {
    let kind = match &command {
        Command::Read { .. } => {
            let e = EngineError::InvalidRequest("a read is not a segment".into());
            return (cached, Err(e));
        }
        Command::Start { .. } => "trigger",
        Command::Callback { .. } => "callback",
        Command::Heartbeat { .. } => "heartbeat",
        Command::Cancel { .. } => "cancel",
        Command::Redeliver { .. } => "redeliver",
        Command::Retry { .. } => "retry",
        // Named by what the alarm found to do.
        Command::Wake { .. } => "idle",
    };
    let (kept, mut result) = apply(host, cached, command, arrived).await;
    if let Ok(segment) = &mut result {
        if segment.report.kind.is_empty() {
            segment.report.kind = kind;
        }
        segment.report.status = kept.as_ref().map(|r| r.status().name());
    }
    (kept, result)
}

async fn apply<S: Store, C: Components, K: Clock, N: Notifier>(
    host: &Host<'_, S, C, K, N>,
    cached: Option<Run>,
    command: Command,
    arrived: Option<u64>,
) -> (Option<Run>, Result<Segment, EngineError>) {
    let now = host.clock.now();
    let config = host.config;
    let (run_id, fallback_base) = match &command {
        Command::Start { .. } => {
            return match start::run(config, command, now) {
                Ok(run) => finish(host, run, Applied::Started).await,
                Err(e) => (cached, Err(e)),
            };
        }
        Command::Callback {
            run_id, base_url, ..
        } => (run_id, Some(base_url)),
        Command::Read { run_id, .. }
        | Command::Wake { run_id }
        | Command::Cancel { run_id, .. }
        | Command::Redeliver { run_id, .. }
        | Command::Retry { run_id, .. }
        | Command::Heartbeat { run_id, .. } => (run_id, None),
    };
    let mut run = match read::load(host, cached, run_id).await {
        Ok(Some(run)) => run,
        Ok(None) => {
            let result = match command {
                Command::Callback { .. } | Command::Heartbeat { .. } => {
                    Ok(Reply::Noop(Noop::UnknownRun))
                }
                Command::Cancel { .. } | Command::Redeliver { .. } | Command::Retry { .. } => {
                    Err(EngineError::NotFound(format!("no run '{run_id}'")))
                }
                _ => Ok(Reply::Idle),
            };
            return (None, result.map(|reply| Segment::unreported(reply, None)));
        }
        Err(e) => return (None, Err(e)),
    };
    if run.record.callback_base.is_none() {
        run.record.callback_base = fallback_base.cloned();
    }
    if let Command::Cancel {
        owner: Some(owner), ..
    }
    | Command::Redeliver {
        owner: Some(owner), ..
    }
    | Command::Retry {
        owner: Some(owner), ..
    } = &command
    {
        if run.record.owner.as_ref() != Some(owner) {
            let e = EngineError::NotFound(format!("no run '{}'", run.record.run_id));
            return (Some(run), Err(e));
        }
    }
    // Every request is judged, and takes effect, as of its arrival: one kept
    // while a segment ran, or replayed after a restart, does what it did (or
    // would have done) then — its deadlines, its trace times. What the run
    // then does on its own (calls, their deadlines) happens now.
    let judged_at = arrived.map_or(now, |at| at.min(now));
    // A failed run is retried before anything else: its deadlines were
    // dropped when it failed.
    if matches!(command, Command::Retry { .. }) {
        return match retry::OnRetry.apply(&mut run, judged_at) {
            Ok(applied) => finish(host, run, applied).await,
            Err(e) => (Some(run), Err(e)),
        };
    }
    // A finished run acts on its own only to deliver its final callback.
    if run.status().is_finished() && matches!(command, Command::Wake { .. }) {
        if run.delivery_due().is_some_and(|due| due <= now) {
            return wake::deliver(host, run).await;
        }
        let wake = run.next_wake(now);
        return (Some(run), Ok(Segment::unreported(Reply::Idle, wake)));
    }
    // Deadlines that passed are taken first, whatever arrived: a callback
    // after its deadline is answered `expired`, never applied. Later
    // deadlines wait for the alarm.
    let expired = match run.expire(judged_at) {
        Ok(n) => n,
        Err(e) => return (None, Err(e)),
    };
    // The children the run waits on: those whose waits this segment closes
    // unwanted (a cancel, a `join: "any"` that fired on another branch) are
    // cancelled in turn, and through their own cancels, their children —
    // nothing would take their results.
    let children = run.open_children();
    let asked_by = match &command {
        Command::Cancel { owner, .. } => owner.clone(),
        _ => None,
    };
    let (applied, noted) = match command {
        Command::Start { .. } | Command::Retry { .. } | Command::Read { .. } => {
            unreachable!("handled above")
        }
        Command::Callback {
            wait_id,
            body,
            token_expires_at,
            ..
        } => callback::OnCallback {
            wait_id,
            body,
            token_expires_at,
        }
        .apply(&mut run, judged_at, judged_at),
        Command::Heartbeat {
            wait_id,
            body,
            token_expires_at,
            ..
        } => heartbeat::OnHeartbeat {
            wait_id,
            body,
            token_expires_at,
        }
        .apply(&mut run, judged_at),
        Command::Wake { .. } => (Ok(wake::OnWake { expired }.apply(&run, now)), None),
        Command::Cancel { .. } => (cancel::OnCancel.apply(&mut run, judged_at), None),
        Command::Redeliver { .. } => (redeliver::OnRedeliver.apply(&mut run, judged_at), None),
    };
    if let Some((wait_id, event)) = noted {
        let event = WaitEvent {
            at: judged_at,
            ..event
        };
        // Best effort: the answer does not depend on it.
        let _ = host.store.note_event(&wait_id, event).await;
    }
    let applied = match applied {
        Ok(applied) => applied,
        // The request is refused and changed nothing. A deadline taken on
        // the way is dropped with the kept run: the stored one still has it
        // open, and the alarm takes it again.
        Err(e) if expired > 0 => return (None, Err(e)),
        Err(e) => return (Some(run), Err(e)),
    };
    let changed = expired > 0
        || matches!(
            applied,
            Applied::Resumed { .. }
                | Applied::Held { .. }
                | Applied::Cancelled
                | Applied::Redelivery
                | Applied::Heartbeat { .. }
        )
        || (matches!(applied, Applied::Woken(_))
            && (run.status() == &RunStatus::Running || run.polls_due_at(now)));
    if !changed {
        let wake = run.next_wake(now);
        let reply = match applied {
            Applied::Noop(noop) => Reply::Noop(noop),
            _ => Reply::Idle,
        };
        return (Some(run), Ok(Segment::unreported(reply, wake)));
    }
    let finished = finish(host, run, applied).await;
    if let (Some(run), Ok(_)) = (&finished.0, &finished.1) {
        let owner = asked_by.or_else(|| run.record.owner.clone());
        for child in run.unwanted_children(&children) {
            host.components.cancel_child(&child, owner.as_deref()).await;
        }
    }
    finished
}

/// What a segment applied before driving the run.
#[derive(Debug, Clone)]
pub(super) enum Applied {
    Started,
    /// A callback resumed this wait.
    Resumed {
        wait_id: String,
    },
    Retried,
    /// By the alarm, to do this (see `Report::kind`).
    Woken(&'static str),
    Cancelled,
    Redelivery,
    /// A heartbeat moved or kept the wait's deadline (this one).
    Heartbeat {
        wait_id: String,
        expires_at: u64,
        url_expires_at: u64,
    },
    /// Nothing from the request, but a deadline was taken.
    Noop(Noop),
    /// A callback came before its wait opened: held until it does.
    Held {
        task_id: Option<String>,
    },
}

/// What reached a wait and was turned away, to keep beside the run (the
/// time is the segment's, set when it is noted).
pub(super) fn turned_away(
    wait_id: &str,
    kind: EventKind,
    result: &Result<Applied, EngineError>,
) -> Option<(String, WaitEvent)> {
    let outcome = match result {
        Ok(Applied::Noop(Noop::AlreadyResumed)) => EventOutcome::Duplicate,
        Ok(Applied::Noop(Noop::Expired | Noop::RunFinished | Noop::Superseded)) => {
            EventOutcome::Late
        }
        Ok(Applied::Noop(Noop::UnknownWait)) => EventOutcome::Early,
        Err(EngineError::TaskMismatch { .. }) => EventOutcome::TaskMismatch,
        _ => return None,
    };
    Some((
        wait_id.to_string(),
        WaitEvent {
            at: 0,
            kind,
            outcome,
        },
    ))
}

/// Drives the run to the end of the segment and answers; the run is left
/// for `flush` to write.
async fn finish<S: Store, C: Components, K: Clock, N>(
    host: &Host<'_, S, C, K, N>,
    mut run: Run,
    applied: Applied,
) -> (Option<Run>, Result<Segment, EngineError>) {
    let config = host.config;
    let segment_start = host.clock.now();
    let open_before: BTreeSet<String> = match &applied {
        Applied::Resumed { .. } => run.record.waits.keys().cloned().collect(),
        _ => BTreeSet::new(),
    };
    let wake;
    let mut calls = 0;
    if !run.status().is_finished() && !matches!(applied, Applied::Heartbeat { .. }) {
        run.begin_segment(signer(config, &run));
        let recorded = match host.store.recorded_outcomes().await {
            Ok(r) => r,
            Err(e) => return (None, Err(e)),
        };
        let journal = StoreJournal {
            store: host.store,
            recorded,
        };
        let now = || host.clock.now();
        let effects = drive(&mut run, host.components, &journal, &now).await;
        calls = run.calls_made();
        if matches!(applied, Applied::Started) {
            answered_parent(&mut run, host.clock.now());
        }
        // A finished run wakes only for its final callback, in an
        // invocation of its own.
        wake = if run.status().is_finished() {
            run.delivery_due()
        } else {
            next_wake(&effects, host.clock.now())
        };
    } else {
        wake = run.next_wake(host.clock.now());
    }
    let kind = match applied {
        Applied::Woken(kind) => kind,
        _ => "",
    };
    let answer = match &applied {
        Applied::Resumed { wait_id } => Answer::Callback {
            task_id: run
                .record
                .closed
                .get(wait_id)
                .map_or_else(String::new, |c| c.task_id.clone()),
            resumed_at: segment_start,
            open_before: open_before.clone(),
        },
        Applied::Started | Applied::Retried => Answer::Run,
        _ => Answer::Fixed,
    };
    let reply = match applied {
        Applied::Resumed { .. } => Reply::Idle,
        // Built by `refresh`, below.
        Applied::Started | Applied::Retried => Reply::Idle,
        Applied::Cancelled => Reply::Details(run_details(&run.record, &config.redactor)),
        Applied::Redelivery => Reply::Accepted(run_details(&run.record, &config.redactor)),
        Applied::Heartbeat {
            wait_id,
            expires_at,
            url_expires_at,
        } => {
            let callback_url =
                signer(config, &run).map(|s| s.url(&run.record.run_id, &wait_id, url_expires_at));
            Reply::Heartbeat {
                expires_at,
                heartbeat_url: callback_url.as_deref().map(heartbeat_url),
                callback_url,
            }
        }
        Applied::Woken(_) => Reply::Idle,
        Applied::Noop(noop) => Reply::Noop(noop),
        Applied::Held { task_id } => Reply::Accepted(held_answer(&run, task_id)),
    };
    let report = Report {
        kind,
        status: None,
        calls,
    };
    let mut segment = Segment {
        reply,
        wake,
        report,
        dirty: true,
        answer,
    };
    segment.refresh(&run, config);
    (Some(run), Ok(segment))
}

/// The answer to a callback held until its wait opens: accepted, as one
/// kept while a segment runs is (do not send it again).
fn held_answer(run: &Run, task_id: Option<String>) -> Value {
    answer_value(&CallbackAccepted {
        success: True,
        accepted: True,
        held: Some(True),
        status: run.status().kind(),
        run_id: &run.record.run_id,
        task_id: task_id.as_deref(),
    })
}

/// A sub-workflow's run that finished in the segment that started it has
/// answered its parent's call with its result: nothing is left to deliver.
fn answered_parent(run: &mut Run, now: u64) {
    let finished = run.status().is_finished();
    if let Some(callback) = run.record.final_callback.as_mut() {
        if finished && callback.url.starts_with(PARENT_SCHEME) {
            callback.state = DeliveryState::Delivered { at: now };
        }
    }
}

/// Signs the run's callback URLs, when the deployment has a secret.
pub(super) fn signer(config: &GateConfig, run: &Run) -> Option<Signer> {
    match (&config.callback_secret, &run.record.callback_base) {
        (Some(secret), Some(base)) => Some(Signer {
            base: base.clone(),
            secret: Rc::clone(secret),
        }),
        _ => None,
    }
}

/// A wait's heartbeat URL: its callback URL with `/heartbeat` before the query.
pub fn heartbeat_url(callback_url: &str) -> String {
    match callback_url.split_once('?') {
        Some((path, query)) => format!("{path}/heartbeat?{query}"),
        None => format!("{callback_url}/heartbeat"),
    }
}

/// The journal over the store: outcomes recorded by earlier attempts are
/// replayed, new ones written as they arrive.
struct StoreJournal<'a, S> {
    store: &'a S,
    recorded: BTreeMap<String, Journaled>,
}

impl<S: Store> Journal for StoreJournal<'_, S> {
    fn replay(&self, key: &str) -> Option<Journaled> {
        let outcome = self.recorded.get(key).cloned();
        if outcome.is_some() {
            self.store.outcome_replayed(key);
        }
        outcome
    }

    async fn record(&self, key: &str, entry: &Journaled) {
        // Best effort: without it, a crash before the flush calls again.
        let _ = self.store.record_outcome(key, entry).await;
    }
}
