//! Requests from outside the objects, and who sends them again: daemons
//! (callbacks and heartbeats, retried as the reference daemon retries),
//! callers (cancels and retries), and starts under a claim (a caller's
//! `Idempotency-Key`, a sub-workflow call issued again), sent until their
//! run is had.

use std::rc::Rc;

use serde_json::json;

use super::claims::{keyed_start, with_run_id, KeyKind, WORKER_OBJECT};
use super::world::{callback_body, DaemonAct, Dispatch};
use super::{Event, Origin, Simulation, Task, TaskFuture, DAEMON_RETRY_MS};
use crate::core::claim::START_GRACE_MS;
use crate::core::gate::{command_run_id, Answer};
use crate::core::segment::Command;

/// Who sent a request, so the right party retries it.
#[derive(Debug, Clone)]
pub(super) enum Sender {
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
pub(super) struct Keyed {
    pub(super) kind: KeyKind,
    pub(super) key: String,
    /// Names the run id this request would start (each request makes its
    /// own).
    pub(super) start: Command,
    /// Sent again after an error so far.
    pub(super) attempt: usize,
    /// Sent again after the run it was told was not found so far.
    pub(super) checks: usize,
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

    pub(super) fn send(self) -> Event {
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
pub(super) fn with_fresh_id(start: &Command, run_id: &str) -> Command {
    with_run_id(start.clone(), run_id, false)
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

impl Simulation {
    /// Daemons that components set in motion become scheduled requests.
    pub(super) fn take_dispatches(&mut self) {
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

    /// When the schedule goes quiet, every keyed start is sent once more,
    /// as a caller that lost its answer would: the claim must still name
    /// the run, and that run must exist (started again, if it never was
    /// stored). False when that was done already.
    pub(super) fn probe(&mut self) -> bool {
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

    /// A request reaches the Worker: the route refuses a callback whose
    /// token has expired without reaching the gate; the rest go to the
    /// run's gate.
    pub(super) fn send(&mut self, sender: Sender, command: Command) {
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

    /// A daemon tries again after an error, as the reference daemon does;
    /// so does a caller with an `Idempotency-Key` (and a parent issuing its
    /// call again), as a new request, until it has its run; callers without
    /// one do not (their run may or may not have started).
    pub(super) fn retry(&mut self, sender: Sender) {
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
    pub(super) fn check_later(&mut self, keyed: &Keyed, run_id: String) {
        let read = Command::Read {
            run_id,
            owner: Some("owner".into()),
            node: None,
        };
        let at = self.world.borrow().now + START_GRACE_MS + 1;
        let check = Sender::Check(keyed.clone());
        self.schedule(at, Event::Send(Box::new((check, read))));
    }
}
