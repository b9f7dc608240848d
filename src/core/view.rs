//! The JSON bodies callers and daemons receive, built from a run as the
//! typed answers of `core::answer` (which the OpenAPI document is generated
//! from), then redacted.

use serde::Serialize;
use serde_json::{json, Map, Value};

use std::collections::{BTreeMap, BTreeSet};

use super::answer::{
    CallbackAnswer, ClosedWaitView, DeliveryView, False, FinalCallbackView, FinalEvent,
    FinalOutcome, NodeDetails, NoopAnswer, Outcome, RunDetails, RunOutcome, RunState,
    TraceTruncated, True,
};
use super::progress::{node_progress, one_node, shown_graph};
use super::record::{
    DeliveryState, NodeState, RunRecord, RunStatus, Wait, WaitEvent, MAX_WAIT_EVENTS,
};
use super::redact::Redactor;
use super::run::Noop;
use super::webhook::shown_url;

/// An answer as sent, for one that holds nothing of the run's to redact.
pub fn answer_value(answer: &impl Serialize) -> Value {
    serde_json::to_value(answer).unwrap_or(Value::Null)
}

/// An answer as sent: serialized, then with secrets the run was given redacted.
fn redacted(answer: &impl Serialize, redactor: &Redactor) -> Value {
    let mut body = serde_json::to_value(answer).unwrap_or(Value::Null);
    redactor.redact(&mut body);
    body
}

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
    let mut answer = CallbackAnswer {
        success: record.status.is_success(),
        resumed: True,
        status: record.status.kind(),
        run_id: &record.run_id,
        task_id,
        paused_again: None,
        paused_node_id: None,
        error: None,
        failed_node: None,
        duration_ms: duration_ms(record),
    };
    if matches!(record.status, RunStatus::Paused { .. }) {
        // A wait another segment opened (one that ran while this callback
        // was kept) is not this callback's doing, even within the same ms.
        let new = |w: &&Wait| w.since >= resumed_at && !open_before.contains(&w.wait_id);
        if let Some(w) = latest_wait(record).filter(new) {
            answer.paused_again = Some(True);
            answer.task_id = &w.task_id;
            answer.paused_node_id = Some(&w.node_id);
        }
    }
    if let RunStatus::Failed { error, .. } = &record.status {
        answer.error = Some(error);
        answer.failed_node = error.node_id.as_deref();
    }
    redacted(&answer, redactor)
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
    let answer = NoopAnswer {
        success: run.is_none_or(|r| r.status.is_success()),
        noop: True,
        reason,
        status: run.map(|r| r.status.kind()),
        run_id: run.map(|r| r.run_id.as_str()),
        task_id,
    };
    answer_value(&answer)
}

/// A noop for no run in particular.
pub fn noop(reason: Noop) -> Value {
    noop_answer(reason, None, None)
}

/// The answer to a trigger or a retry.
pub fn run_outcome(record: &RunRecord, redactor: &Redactor) -> Value {
    let outcome = match &record.status {
        RunStatus::Completed { output, .. } => Outcome::Completed {
            success: True,
            data: output,
        },
        RunStatus::Failed { error, .. } => Outcome::Failed {
            success: False,
            error,
            failed_node: error.node_id.as_deref(),
        },
        RunStatus::Cancelled { .. } => Outcome::Cancelled { success: False },
        // Continuing in the background (it yielded): read it with GET /runs/{id}.
        RunStatus::Running => Outcome::Running { success: True },
        RunStatus::Paused { .. } => {
            // The most recent wait first: that is the one this request caused.
            let latest = latest_wait(record);
            Outcome::Paused {
                success: True,
                paused: True,
                task_id: latest.map(|w| w.task_id.as_str()),
                paused_node_id: latest.map(|w| w.node_id.as_str()),
                waits: record.waits.values().collect(),
            }
        }
    };
    let answer = RunOutcome {
        run_id: &record.run_id,
        outcome,
        duration_ms: duration_ms(record),
        attempt: (record.attempt > 0).then_some(record.attempt),
        trace: &record.trace,
        trace_truncated: trace_truncated(record),
    };
    redacted(&answer, redactor)
}

/// `GET /runs/{id}`.
pub fn run_details(record: &RunRecord, redactor: &Redactor) -> Value {
    redacted(&details(record, false), redactor)
}

/// `GET /runs/{id}` while a segment of the run executes: it reads
/// `running`, whatever the record it last stored says.
pub fn run_details_running(record: &RunRecord, redactor: &Redactor) -> Value {
    redacted(&details(record, true), redactor)
}

/// `GET /runs/{id}/nodes/{node}`: the node's progress, and its input and
/// output while the run holds them; `None` when the graph has no such node.
pub fn node_details(record: &RunRecord, node_id: &str, redactor: &Redactor) -> Option<Value> {
    let (i, node) = one_node(record, node_id)?;
    let (input, output) = match record.nodes.get(i) {
        Some(NodeState::Calling { ctx })
        | Some(NodeState::Paused { ctx, .. })
        | Some(NodeState::Failed { ctx }) => (Some(ctx.to_map()), None),
        Some(NodeState::Done { output }) => (None, Some(output.to_value())),
        _ => (None, None),
    };
    let kept = !matches!(
        record.status,
        RunStatus::Completed { .. } | RunStatus::Cancelled { .. }
    );
    let answer = NodeDetails {
        success: record.status.is_success(),
        run_id: &record.run_id,
        node,
        input,
        output,
        kept,
    };
    Some(redacted(&answer, redactor))
}

/// What a read shows of a run whose first segment is executing, before
/// anything of it is stored.
pub fn starting_details(run_id: &str, now: u64) -> Value {
    answer_value(&RunDetails {
        run_id,
        state: RunState::Running { success: True },
        workflow: None,
        attempt: None,
        waits: Vec::new(),
        closed_waits: Vec::new(),
        created_at: now,
        updated_at: now,
        duration_ms: 0,
        final_callback: None,
        deliveries: None,
        trace: &[],
        trace_truncated: None,
        graph: None,
        nodes: Vec::new(),
    })
}

fn details(record: &RunRecord, running: bool) -> RunDetails<'_> {
    let state = match &record.status {
        _ if running => RunState::Running { success: True },
        RunStatus::Completed {
            output,
            finished_at,
        } => RunState::Completed {
            success: True,
            data: output,
            finished_at: *finished_at,
        },
        RunStatus::Failed { error, finished_at } => RunState::Failed {
            success: False,
            error,
            failed_node: error.node_id.as_deref(),
            finished_at: *finished_at,
        },
        RunStatus::Cancelled { finished_at } => RunState::Cancelled {
            success: False,
            finished_at: *finished_at,
        },
        RunStatus::Paused { since } => RunState::Paused {
            success: True,
            paused_since: *since,
        },
        RunStatus::Running => RunState::Running { success: True },
    };
    let final_callback = record
        .final_callback
        .as_ref()
        .map(|callback| FinalCallbackView {
            url: shown_url(&callback.url),
            state: match callback.state {
                DeliveryState::Waiting => DeliveryView::Waiting,
                DeliveryState::Retrying { next_at } => DeliveryView::Retrying {
                    next_attempt_at: next_at,
                },
                DeliveryState::Delivered { at } => DeliveryView::Delivered { at },
                DeliveryState::Refused { at } => DeliveryView::Refused { at },
                DeliveryState::GaveUp { at } => DeliveryView::GaveUp { at },
            },
        });
    RunDetails {
        run_id: &record.run_id,
        state,
        workflow: workflow_name(record),
        attempt: (record.attempt > 0).then_some(record.attempt),
        waits: record.waits.values().collect(),
        closed_waits: record
            .closed
            .iter()
            .map(|(wait_id, wait)| ClosedWaitView { wait_id, wait })
            .collect(),
        created_at: record.created_at,
        updated_at: record.updated_at,
        duration_ms: duration_ms(record),
        final_callback,
        deliveries: record
            .final_callback
            .as_ref()
            .map(|c| c.attempts.as_slice()),
        trace: &record.trace,
        trace_truncated: trace_truncated(record),
        graph: Some(shown_graph(&record.graph)),
        nodes: node_progress(record),
    }
}

/// The stored workflow a run was started from, or its graph's name.
fn workflow_name(record: &RunRecord) -> Option<&str> {
    record
        .workflow
        .as_ref()
        .or(record.graph.name.as_ref())
        .map(String::as_str)
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

/// The final callback's body: the run's outcome, as the caller would read
/// it. `None` while the run is unfinished (nothing is due then).
pub fn final_event(record: &RunRecord, event_type: &str, redactor: &Redactor) -> Option<Value> {
    let outcome = match &record.status {
        RunStatus::Completed { output, .. } => FinalOutcome::Completed {
            success: True,
            data: output,
        },
        RunStatus::Failed { error, .. } => FinalOutcome::Failed {
            success: False,
            error,
        },
        RunStatus::Cancelled { .. } => FinalOutcome::Cancelled { success: False },
        RunStatus::Running | RunStatus::Paused { .. } => return None,
    };
    let answer = FinalEvent {
        event_type,
        run_id: &record.run_id,
        outcome,
        workflow: workflow_name(record),
        created_at: record.created_at,
        finished_at: record.status.finished_at()?,
    };
    Some(redacted(&answer, redactor))
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

fn trace_truncated(record: &RunRecord) -> Option<TraceTruncated> {
    (record.trace_dropped > 0).then_some(TraceTruncated {
        dropped_entries: record.trace_dropped as u64,
    })
}
