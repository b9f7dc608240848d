//! The invariants a schedule must keep, checked as it runs (`World` counts
//! KV writes refused and journaled calls made again) and when it is quiet:
//! - every run whose trigger was answered, or that was stored, settles
//!   (completed, failed or cancelled), and its record is in KV;
//! - the run a gate holds in memory equals the record KV holds;
//! - every callback answered `resumed` or `accepted` is applied — its wait
//!   closes as resumed, never by its deadline — within 2 s of arrival
//!   (more only while a component call of the run is in flight, or after a
//!   crash, when the alarm's retry applies it);
//! - no two callbacks of one wait are both answered `resumed`, and one
//!   answered `resumed` is never superseded;
//! - a noop names a documented reason;
//! - a deadline is taken within 2 s of being due (the same allowances);
//! - a finished run whose caller asked to be told has told them how it
//!   ended (or been refused, or given up after its retries).

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use serde_json::Value;

use super::world::record_key;
use super::Simulation;
use crate::core::gate::Gate;
use crate::core::record::{DeliveryState, RunStatus, WaitClosed};
use crate::core::run::{CallKey, Run};
use crate::core::segment::Command;
use crate::core::stored::decode;
use crate::core::view::run_details;

/// How late an answered callback or a deadline may be applied when nothing
/// holds it up.
pub const PROMPT_MS: u64 = 2_000;
/// Extra allowance after a crash: the alarm's retry comes within seconds.
const AFTER_CRASH_MS: u64 = 6_000;

/// The documented reasons a request changes nothing.
const NOOP_REASONS: [&str; 7] = [
    "already_resumed",
    "unknown_wait",
    "run_finished",
    "expired",
    "unknown_run",
    "unknown_task",
    "superseded",
];

/// What the scheduler saw of the gates' runs as it went.
#[derive(Debug, Default)]
pub struct Observed {
    /// The latest deadline seen of each open wait, by (run, wait).
    open: BTreeMap<(String, String), u64>,
    /// When each wait was first seen open since its object last crashed
    /// (a crash may lose an opening; the replay opens it again, later), and
    /// in which of the object's lives.
    opened: BTreeMap<(String, String), (u64, usize)>,

    /// Waits a callback was seen held for (it came before they opened).
    held: std::collections::BTreeSet<(String, String)>,
    /// When each wait was first seen closed, and how.
    closed: BTreeMap<(String, String), (u64, WaitClosed)>,
    crashes: BTreeMap<String, Vec<u64>>,
    /// When each run was seen failed or cancelled (a retry may follow).
    cut: BTreeMap<String, Vec<u64>>,
    /// When each run was started again under its claim, having been
    /// claimed and never stored.
    restarts: BTreeMap<String, Vec<u64>>,
}

impl Observed {
    /// A start taken over under its claim reaches the run's gate.
    pub fn restart(&mut self, run_id: &str, at: u64) {
        self.restarts
            .entry(run_id.to_string())
            .or_default()
            .push(at);
    }

    /// `from`, or the latest restart of the run between it and `to`.
    fn restarted(&self, run_id: &str, from: u64, to: u64) -> u64 {
        self.restarts
            .get(run_id)
            .and_then(|at| at.iter().filter(|t| **t >= from && **t <= to).max())
            .map_or(from, |t| *t)
    }

    /// Notes what `run` shows now; answers a line per change, for traces.
    pub fn run(&mut self, object: &str, run: &Run, now: u64) -> Vec<String> {
        let mut lines = Vec::new();
        if matches!(
            run.status(),
            RunStatus::Failed { .. } | RunStatus::Cancelled { .. }
        ) {
            self.cut.entry(object.to_string()).or_default().push(now);
        }
        for wait in run.record.waits.values() {
            let key = (object.to_string(), wait.wait_id.clone());
            let life = self.crashes.get(object).map_or(0, Vec::len);
            let seen = self.opened.entry(key.clone()).or_insert((now, life));
            if seen.1 < life {
                *seen = (now, life);
            }
            let before = self.open.insert(key, wait.expires_at);
            if before != Some(wait.expires_at) {
                let due = wait.expires_at - super::T0;
                lines.push(format!("  seen {object}/{} open until {due}", wait.wait_id));
            }
        }
        for wait_id in run.record.early.keys() {
            self.held.insert((object.to_string(), wait_id.clone()));
        }
        for (wait_id, closed) in &run.record.closed {
            let key = (object.to_string(), wait_id.clone());
            if let std::collections::btree_map::Entry::Vacant(entry) = self.closed.entry(key) {
                lines.push(format!("  seen {object}/{wait_id} closed {:?}", closed.how));
                entry.insert((now, closed.how));
            }
        }
        lines
    }

    pub fn crash(&mut self, object: &str, at: u64) {
        self.crashes.entry(object.to_string()).or_default().push(at);
    }
}

/// How late something of `object` may be between `from` and `to`: 2 s,
/// plus the time the run's component calls held its lock meanwhile (a
/// segment runs to its end before anything else is applied); after a
/// crash, counted from the last crash, plus the alarm's retry.
fn allowance(sim: &Simulation, object: &str, from: u64, to: u64) -> u64 {
    let world = sim.world();
    let mut spans: Vec<(u64, u64)> = world
        .calls
        .iter()
        .filter(|c| c.run_id == object && c.at <= to && c.ends_at >= from)
        .map(|c| (c.at.max(from), c.ends_at.min(to)))
        .collect();
    spans.sort_unstable();
    let mut busy = 0;
    let mut covered_to = from;
    for (start, end) in spans {
        let start = start.max(covered_to);
        if end > start {
            busy += end - start;
            covered_to = end;
        }
    }
    // After a crash the clock starts again: the alarm's retry comes within
    // seconds of the last crash (a storm of them postpones everything). So
    // after a read of KV that lagged (it is failed, and tried again).
    let last_lag = world.lagged.get(object).and_then(|at| {
        at.iter()
            .filter(|t| **t + AFTER_CRASH_MS >= from && **t <= to)
            .max()
    });
    let last_crash = sim.observed.crashes.get(object).and_then(|at| {
        at.iter()
            .filter(|t| **t + AFTER_CRASH_MS >= from && **t <= to)
            .max()
    });
    let last_crash = last_crash.max(last_lag);
    match last_crash {
        Some(crash) => crash.saturating_sub(from) + AFTER_CRASH_MS + PROMPT_MS + busy,
        None => PROMPT_MS + busy,
    }
}

pub fn at_quiet(sim: &Simulation, gates: &BTreeMap<String, Rc<Gate>>) {
    let config = sim.config();
    let mut stored: BTreeMap<String, Run> = BTreeMap::new();
    // Runs whose trigger was answered must exist; stored ones must settle.
    let mut must_exist: Vec<String> = Vec::new();
    for sent in sim.sent.values() {
        if let (Command::Start { run_id, .. }, Some(Ok(answer))) = (&sent.command, &sent.answer) {
            if (200..300).contains(&answer.status) {
                // A start under a claim may answer the run another began.
                let named = answer.body["run_id"].as_str().unwrap_or(run_id);
                must_exist.push(named.to_string());
            }
        }
    }
    claims(sim);
    let keys: Vec<(String, String)> = sim
        .world()
        .kv
        .iter()
        .map(|(k, e)| (k.clone(), e.text.clone()))
        .collect();
    for (key, text) in keys {
        let run_id = key.trim_start_matches("runs/").to_string();
        match decode(&text, &config.directory, config.settings) {
            Ok(run) => {
                if !run.status().is_finished() {
                    let status = run.status().name();
                    sim.record_violation(format!(
                        "{run_id} is {status} at quiet: it never settled"
                    ));
                }
                stored.insert(run_id, run);
            }
            Err(e) => sim.record_violation(format!("{run_id}'s record does not load: {e}")),
        }
    }
    for run_id in must_exist {
        if sim.world().kv_read(&record_key(&run_id)).is_none() {
            sim.record_violation(format!("{run_id} was answered but is not stored: lost"));
        }
    }
    // The gate's memory and KV agree.
    for (run_id, gate) in gates {
        gate.inspect(|kept| {
            let Some(kept) = kept else { return };
            let Some(run) = stored.get(run_id) else {
                sim.record_violation(format!("{run_id} is held by its gate but not in KV"));
                return;
            };
            let a = run_details(&kept.record, &config.redactor);
            let b = run_details(&run.record, &config.redactor);
            if a != b {
                sim.record_violation(format!(
                    "{run_id}: the gate holds {} but KV holds {}",
                    short(&a),
                    short(&b)
                ));
            }
        });
    }
    callbacks(sim, &stored);
    deadlines(sim);
    final_callbacks(sim, &stored);
}

/// A caller who asked to be told is told: every finished run with a final
/// callback has had it answered (or given it up, or been refused), and the
/// last outcome its receiver accepted is how the run ended (a run retried
/// after it failed tells each ending).
fn final_callbacks(sim: &Simulation, stored: &BTreeMap<String, Run>) {
    let deliveries = sim.world().deliveries.clone();
    for (run_id, run) in stored {
        let (Some(callback), Some(kind)) =
            (run.record.final_callback.as_ref(), run.final_event_type())
        else {
            continue;
        };
        let accepted = deliveries
            .iter()
            .filter(|d| &d.run_id == run_id && d.status == 200)
            .max_by_key(|d| d.at);
        match (&callback.state, accepted) {
            (DeliveryState::Waiting | DeliveryState::Retrying { .. }, _) => {
                sim.record_violation(format!(
                    "{run_id} ended {kind} and its final callback is still {} at quiet: \
                     nothing will send it",
                    callback.state.name()
                ));
            }
            (DeliveryState::Delivered { .. }, None) => {
                sim.record_violation(format!(
                    "{run_id}'s final callback is recorded delivered, but its receiver \
                     never answered 200"
                ));
            }
            (DeliveryState::Delivered { .. }, Some(last)) if last.kind != kind => {
                sim.record_violation(format!(
                    "{run_id} ended {kind} but its receiver was last told {} at {}",
                    last.kind,
                    last.at - super::T0
                ));
            }
            _ => {}
        }
    }
}

/// One name, one run: every start under a claimed name that was answered
/// names the same run, and the last one (sent when the schedule had gone
/// quiet) is answered — so a run the name was given to and never stored
/// was started again, not left behind a claim that answers `404`.
fn claims(sim: &Simulation) {
    let mut named: BTreeMap<&str, Vec<(u64, u16, String)>> = BTreeMap::new();
    for sent in sim.sent.values() {
        let (Some(key), Some(Ok(answer))) = (&sent.key, &sent.answer) else {
            continue;
        };
        let run = answer.body["run_id"].as_str().unwrap_or_default();
        named
            .entry(key)
            .or_default()
            .push((sent.at, answer.status, run.to_string()));
    }
    for (key, answers) in named {
        let runs: BTreeSet<&str> = answers
            .iter()
            .filter(|(_, status, _)| (200..300).contains(status))
            .map(|(_, _, run)| run.as_str())
            .collect();
        if runs.len() > 1 {
            sim.record_violation(format!("{key} named more than one run: {runs:?}"));
        }
        let last = answers.iter().max_by_key(|(at, _, _)| *at);
        if let Some((_, status, run)) = last.filter(|(_, status, _)| !(200..300).contains(status)) {
            sim.record_violation(format!(
                "{key}'s last start was answered {status} (run {run:?}): the name holds a run \
                 that cannot be had"
            ));
        }
    }
}

fn short(v: &Value) -> String {
    let text = v.to_string();
    text.chars().take(600).collect()
}

fn callbacks(sim: &Simulation, stored: &BTreeMap<String, Run>) {
    let promised = promised(sim);
    let mut resumed: BTreeMap<(String, String), usize> = BTreeMap::new();
    for sent in sim.sent.values() {
        let Command::Callback {
            run_id, wait_id, ..
        } = &sent.command
        else {
            if let Some(Ok(answer)) = &sent.answer {
                noop_reason(sim, answer);
            }
            continue;
        };
        let Some(Ok(answer)) = &sent.answer else {
            continue;
        };
        noop_reason(sim, answer);
        let is_resumed = answer.body["resumed"] == Value::Bool(true);
        let accepted = answer.status == 202 && answer.body["accepted"] == Value::Bool(true);
        if is_resumed {
            *resumed
                .entry((run_id.clone(), wait_id.clone()))
                .or_default() += 1;
        }
        if !(is_resumed || accepted) || !stored.contains_key(run_id) {
            continue;
        }
        let key = (run_id.clone(), wait_id.clone());
        let what = format!(
            "callback {:?} to {run_id}/{wait_id} (arrived t={})",
            sent.callback, sent.at
        );
        // A run that failed or was cancelled cuts its open waits short:
        // the callback then meets a finished run, as it should.
        let cut_short = sim
            .observed
            .cut
            .get(run_id)
            .is_some_and(|at| at.iter().any(|t| *t >= sent.at));
        // A wait of an attempt the run has since retried past: its callback
        // meets a run that no longer waits for it, and is turned away.
        let superseded = CallKey::from_wait_id(wait_id, stored[run_id].record.attempt).is_none();
        match sim.observed.closed.get(&key) {
            None if cut_short || superseded => {}
            None => sim.record_violation(format!("{what} was answered but never applied")),
            // Its URL outlives the deadline (a daemon keeps it across
            // heartbeats): one kept while the run was busy, and judged as of
            // its arrival, may find it came too late.
            Some((_, WaitClosed::TimedOut))
                if promised.get(&key).is_some_and(|due| sent.at >= *due) => {}
            Some((_, WaitClosed::TimedOut)) => sim.record_violation(format!(
                "{what} was answered but its wait timed out instead"
            )),
            // Kept while a segment ran that found another branch first at a
            // `join: "any"` node: applied then, and turned away, as a run cut
            // short turns it away.
            Some((_, WaitClosed::Superseded)) if accepted => {}
            // A callback answered `resumed` won the race: its wait was seen
            // superseded only in a life of the object lost with a crash (the
            // other branch's callback, applied and never kept), and the run
            // as it ended says resumed.
            Some((_, WaitClosed::Superseded)) => {
                let ended = stored[run_id].record.closed.get(wait_id).map(|c| c.how);
                if ended != Some(WaitClosed::Resumed) {
                    sim.record_violation(format!(
                        "{what} was answered resumed but its wait closed {ended:?}"
                    ));
                }
            }
            Some((seen, _)) => {
                // A callback that came before its wait opened is held and
                // applied as the wait opens (when a slot, an upstream result
                // or the call's replay comes): no promptness is promised.
                if answer.body["held"] == Value::Bool(true) || sim.observed.held.contains(&key) {
                    continue;
                }
                // A run that was not stored when it came could not apply it
                // before it was started again.
                let from = sim.observed.restarted(run_id, sent.at, *seen);
                let allowed = allowance(sim, run_id, from, *seen);
                if *seen > from + allowed {
                    sim.record_violation(format!(
                        "{what} was applied {} ms after it arrived (allowed {allowed})",
                        seen - from
                    ));
                }
            }
        }
    }
    for ((run_id, wait_id), n) in resumed {
        if n > 1 {
            sim.record_violation(format!("{run_id}/{wait_id} was answered resumed {n} times"));
        }
    }
}

fn noop_reason(sim: &Simulation, answer: &crate::core::gate::Answer) {
    if answer.body["noop"] == Value::Bool(true) {
        let reason = answer.body["reason"].as_str().unwrap_or("");
        if !NOOP_REASONS.contains(&reason) {
            sim.record_violation(format!(
                "a noop with an undocumented reason: {}",
                answer.body
            ));
        }
    }
}

/// The deadline each wait was promised: the one its call was made with, or
/// a later one a heartbeat's answer gave (a heartbeat whose answer was lost
/// to a crash promised nothing).
fn promised(sim: &Simulation) -> BTreeMap<(String, String), u64> {
    let mut promised: BTreeMap<(String, String), u64> = BTreeMap::new();
    for call in &sim.world().calls {
        let key = (call.run_id.clone(), call.wait_id.clone());
        let at = promised.entry(key).or_default();
        *at = (*at).max(call.expires_at);
    }
    for sent in sim.sent.values() {
        let (
            Command::Heartbeat {
                run_id, wait_id, ..
            },
            Some(Ok(answer)),
        ) = (&sent.command, &sent.answer)
        else {
            continue;
        };
        if let Some(expires_at) = answer.body["expires_at"].as_u64() {
            let at = promised
                .entry((run_id.clone(), wait_id.clone()))
                .or_default();
            *at = (*at).max(expires_at);
        }
    }
    promised
}

fn deadlines(sim: &Simulation) {
    let promised = promised(sim);
    for ((run_id, wait_id), (seen, how)) in &sim.observed.closed {
        if *how != WaitClosed::TimedOut {
            continue;
        }
        let key = (run_id.clone(), wait_id.clone());
        let Some(deadline) = sim.observed.open.get(&key) else {
            continue;
        };
        // A wait can be taken no earlier than it opened: one whose call was
        // made again from the journal may open past the deadline its call
        // was made with (and is taken at once).
        let opened = sim.observed.opened.get(&key).map_or(0, |(at, _)| *at);
        // Nor before the run, never stored, was started again.
        let due = &sim
            .observed
            .restarted(run_id, (*deadline).max(opened), *seen);
        let allowed = allowance(sim, run_id, *due, *seen);
        if *seen > due + allowed {
            sim.record_violation(format!(
                "{run_id}/{wait_id}'s deadline was taken {} ms late (allowed {allowed})",
                seen - due
            ));
        }
        let promise = promised.get(&(run_id.clone(), wait_id.clone()));
        if let Some(promise) = promise.filter(|p| *seen < **p) {
            sim.record_violation(format!(
                "{run_id}/{wait_id} timed out {} ms before the deadline it was promised",
                promise - seen
            ));
        }
    }
}
