//! The JSON bodies callers and daemons receive, built from a run.

use serde_json::{json, Map, Value};

use std::collections::{BTreeMap, BTreeSet};

use super::progress::{node_progress, shown_graph};
use super::record::{DeliveryState, RunRecord, RunStatus, Wait, WaitEvent, MAX_WAIT_EVENTS};
use super::redact::Redactor;
use super::run::Noop;
use super::webhook::shown_url;

/// What a daemon is answered when its callback resumed a wait: small and of
/// a size that does not grow with the run (no trace, waits or output — those
/// are at `GET /runs/{id}`), with the fields clients of the engine we descend
/// from read: `task_id` (the task it ended, or, when the run went on and
/// paused again on a wait it opened since `resumed_at`, that wait's task,
/// with `paused_again`), `duration_ms`, and on a failed run `error` and
/// `failed_node`. A FOREACH item's callback that leaves the run waiting on
/// other items is answered with its own task and `status: "paused"`.
pub fn callback_answer(
    record: &RunRecord,
    task_id: &str,
    resumed_at: u64,
    open_before: &BTreeSet<String>,
    redactor: &Redactor,
) -> Value {
    let mut body = Map::new();
    body.insert(
        "success".into(),
        json!(!matches!(
            record.status,
            RunStatus::Failed { .. } | RunStatus::Cancelled { .. }
        )),
    );
    body.insert("resumed".into(), json!(true));
    body.insert("status".into(), json!(record.status.name()));
    body.insert("run_id".into(), json!(record.run_id));
    let mut task_id = task_id;
    if matches!(record.status, RunStatus::Paused { .. }) {
        // A wait another segment opened (one that ran while this callback
        // was kept) is not this callback's doing, even within the same ms.
        let new = |w: &&Wait| w.since >= resumed_at && !open_before.contains(&w.wait_id);
        if let Some(w) = latest_wait(record).filter(new) {
            body.insert("paused_again".into(), json!(true));
            task_id = &w.task_id;
            body.insert("paused_node_id".into(), json!(w.node_id));
        }
    }
    body.insert("task_id".into(), json!(task_id));
    if let RunStatus::Failed { error, .. } = &record.status {
        body.insert("error".into(), json!(error));
        if let Some(node) = &error.node_id {
            body.insert("failed_node".into(), json!(node));
        }
    }
    body.insert("duration_ms".into(), json!(duration_ms(record)));
    let mut body = Value::Object(body);
    redactor.redact(&mut body);
    body
}

/// The wait opened last: the one a request that paused the run caused.
fn latest_wait(record: &RunRecord) -> Option<&Wait> {
    record
        .waits
        .values()
        .max_by_key(|w| (w.since, w.wait_id.len(), &w.wait_id))
}

/// A callback or heartbeat that changed nothing: why, and where the run
/// stands (`status` absent when there is no such run).
pub fn noop_answer(reason: Noop, run: Option<&RunRecord>, task_id: Option<&str>) -> Value {
    let mut body = noop(reason);
    if let Some(record) = run {
        body["status"] = json!(record.status.name());
        body["run_id"] = json!(record.run_id);
    }
    if let Some(task_id) = task_id {
        body["task_id"] = json!(task_id);
    }
    body
}

/// The answer to a trigger or a retry.
pub fn run_outcome(record: &RunRecord, redactor: &Redactor) -> Value {
    let mut body = Map::new();
    match &record.status {
        RunStatus::Completed { output, .. } => {
            body.insert("success".into(), json!(true));
            body.insert("data".into(), output.clone());
        }
        RunStatus::Failed { error, .. } => {
            body.insert("success".into(), json!(false));
            body.insert("error".into(), json!(error));
            if let Some(node) = &error.node_id {
                body.insert("failed_node".into(), json!(node));
            }
        }
        RunStatus::Cancelled { .. } => {
            body.insert("success".into(), json!(false));
        }
        // Continuing in the background (it yielded): read it with GET /runs/{id}.
        RunStatus::Running => {
            body.insert("success".into(), json!(true));
        }
        RunStatus::Paused { .. } => {
            body.insert("success".into(), json!(true));
            body.insert("paused".into(), json!(true));
            // The most recent wait first: that is the one this request caused.
            if let Some(w) = latest_wait(record) {
                body.insert("task_id".into(), json!(w.task_id));
                body.insert("paused_node_id".into(), json!(w.node_id));
            }
            body.insert(
                "waits".into(),
                json!(record.waits.values().collect::<Vec<_>>()),
            );
        }
    }
    body.insert("duration_ms".into(), json!(duration_ms(record)));
    body.insert("status".into(), json!(record.status.name()));
    body.insert("run_id".into(), json!(record.run_id));
    if record.attempt > 0 {
        body.insert("attempt".into(), json!(record.attempt));
    }
    insert_trace(&mut body, record);
    let mut body = Value::Object(body);
    redactor.redact(&mut body);
    body
}

/// `GET /runs/{id}`.
pub fn run_details(record: &RunRecord, redactor: &Redactor) -> Value {
    let mut body = Map::new();
    body.insert("success".into(), json!(true));
    body.insert("run_id".into(), json!(record.run_id));
    body.insert("status".into(), json!(record.status.name()));
    if let Some(name) = record.workflow.as_ref().or(record.graph.name.as_ref()) {
        body.insert("workflow".into(), json!(name));
    }
    if record.attempt > 0 {
        body.insert("attempt".into(), json!(record.attempt));
    }
    body.insert(
        "waits".into(),
        json!(record.waits.values().collect::<Vec<_>>()),
    );
    if !record.closed.is_empty() {
        let closed: Vec<Value> = record
            .closed
            .iter()
            .map(|(wait_id, c)| {
                let mut shown = json!(c);
                shown["wait_id"] = json!(wait_id);
                shown
            })
            .collect();
        body.insert("closed_waits".into(), Value::Array(closed));
    }
    match &record.status {
        RunStatus::Completed {
            output,
            finished_at,
        } => {
            body.insert("data".into(), output.clone());
            body.insert("finished_at".into(), json!(finished_at));
        }
        RunStatus::Failed { error, finished_at } => {
            body.insert("error".into(), json!(error));
            if let Some(node) = &error.node_id {
                body.insert("failed_node".into(), json!(node));
            }
            body.insert("finished_at".into(), json!(finished_at));
        }
        RunStatus::Cancelled { finished_at } => {
            body.insert("finished_at".into(), json!(finished_at));
        }
        RunStatus::Paused { since } => {
            body.insert("paused_since".into(), json!(since));
        }
        RunStatus::Running => {}
    }
    body.insert("created_at".into(), json!(record.created_at));
    body.insert("updated_at".into(), json!(record.updated_at));
    body.insert("duration_ms".into(), json!(duration_ms(record)));
    if let Some(callback) = &record.final_callback {
        let mut shown = json!({ "url": shown_url(&callback.url) });
        shown["state"] = json!(callback.state.name());
        match callback.state {
            DeliveryState::Retrying { next_at } => shown["next_attempt_at"] = json!(next_at),
            DeliveryState::Delivered { at }
            | DeliveryState::Refused { at }
            | DeliveryState::GaveUp { at } => shown["at"] = json!(at),
            DeliveryState::Waiting => {}
        }
        body.insert("final_callback".into(), shown);
        body.insert("deliveries".into(), json!(callback.attempts));
    }
    insert_trace(&mut body, record);
    body.insert("graph".into(), json!(shown_graph(&record.graph)));
    body.insert("nodes".into(), json!(node_progress(record)));
    let mut body = Value::Object(body);
    redactor.redact(&mut body);
    body
}

/// Adds the events kept beside the run (turned-away callbacks and
/// heartbeats) to the waits they reached, in time order, the most recent
/// `MAX_WAIT_EVENTS` per wait.
pub fn merge_noted(details: &mut Value, noted: &BTreeMap<String, Vec<WaitEvent>>) {
    if noted.is_empty() {
        return;
    }
    for list in ["waits", "closed_waits"] {
        let Some(waits) = details.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for wait in waits {
            let Some(extra) = wait
                .get("wait_id")
                .and_then(Value::as_str)
                .and_then(|id| noted.get(id))
            else {
                continue;
            };
            // Both lists are in time order: merge them, keep the most recent.
            let own: Vec<Value> = wait
                .get("events")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let at = |e: &Value| e.get("at").and_then(Value::as_u64).unwrap_or(0);
            let mut events = Vec::with_capacity(own.len() + extra.len());
            let (mut a, mut b) = (
                own.into_iter().peekable(),
                extra.iter().map(|e| json!(e)).peekable(),
            );
            loop {
                let next = match (a.peek(), b.peek()) {
                    (Some(x), Some(y)) if at(y) < at(x) => b.next(),
                    (Some(_), _) => a.next(),
                    (None, _) => b.next(),
                };
                match next {
                    Some(e) => events.push(e),
                    None => break,
                }
            }
            let excess = events.len().saturating_sub(MAX_WAIT_EVENTS);
            events.drain(..excess);
            wait["events"] = Value::Array(events);
        }
    }
}

/// The final callback's body: the run's outcome, as the caller would read it.
pub fn final_event(record: &RunRecord, event_type: &str, redactor: &Redactor) -> Value {
    let mut body = Map::new();
    body.insert("type".into(), json!(event_type));
    body.insert("run_id".into(), json!(record.run_id));
    body.insert(
        "workflow".into(),
        json!(record.workflow.as_ref().or(record.graph.name.as_ref())),
    );
    body.insert("status".into(), json!(record.status.name()));
    match &record.status {
        RunStatus::Completed { output, .. } => {
            body.insert("data".into(), output.clone());
        }
        RunStatus::Failed { error, .. } => {
            body.insert("error".into(), json!(error));
        }
        _ => {}
    }
    body.insert("created_at".into(), json!(record.created_at));
    body.insert("finished_at".into(), json!(record.status.finished_at()));
    let mut body = Value::Object(body);
    redactor.redact(&mut body);
    body
}

/// What a finished sub-workflow's run hands its parent, in the shape of a
/// daemon's callback (the task is the child run).
pub fn child_result(record: &RunRecord, redactor: &Redactor) -> Value {
    let mut body = match &record.status {
        RunStatus::Completed { output, .. } => {
            subflow_answer(&record.run_id, "completed", Some(output), None)
        }
        RunStatus::Failed { error, .. } => {
            subflow_answer(&record.run_id, "failed", None, Some(&json!(error)))
        }
        other => subflow_answer(&record.run_id, other.name(), None, None),
    };
    redactor.redact(&mut body);
    body
}

/// A sub-workflow's result as its calling node's output: when the child
/// completed, its output's fields merged in (as the engine we descend from
/// does) and the whole output under `data`; when it failed, its error; while
/// it is unfinished, a pending answer whose task is the child run.
pub fn subflow_answer(
    child_run_id: &str,
    status: &str,
    output: Option<&Value>,
    error: Option<&Value>,
) -> Value {
    let mut body = Map::new();
    match status {
        "completed" => {
            let output = output.cloned().unwrap_or(Value::Null);
            if let Value::Object(fields) = &output {
                body.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            body.insert("success".into(), json!(true));
            body.insert("data".into(), output);
        }
        "running" | "paused" => {
            body.insert("pending".into(), json!(true));
        }
        other => {
            body.insert("success".into(), json!(false));
            let error = error
                .cloned()
                .unwrap_or_else(|| json!(format!("the sub-workflow's run was {other}")));
            body.insert("error".into(), error);
        }
    }
    body.insert("task_id".into(), json!(child_run_id));
    body.insert("subflow_run_id".into(), json!(child_run_id));
    Value::Object(body)
}

/// How long the run has taken: from its start to its end, or so far to its
/// last change while it is unfinished (waiting time included).
fn duration_ms(record: &RunRecord) -> u64 {
    record
        .status
        .finished_at()
        .unwrap_or(record.updated_at)
        .saturating_sub(record.created_at)
}

pub fn noop(reason: Noop) -> Value {
    json!({ "success": true, "noop": true, "reason": reason.reason() })
}

fn insert_trace(body: &mut Map<String, Value>, record: &RunRecord) {
    body.insert("trace".into(), json!(record.trace));
    if record.trace_dropped > 0 {
        body.insert(
            "trace_truncated".into(),
            json!({ "dropped_entries": record.trace_dropped }),
        );
    }
}
