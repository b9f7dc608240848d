//! Polling status URLs from the run's own timers: `poll_task` nodes, and
//! pending answers that name a `status_url`. Each poll is one call, issued by
//! `step` when due (so one invocation makes at most one poll per wait, and a
//! poll loop never spends an invocation's budget); its answer finishes the
//! wait, fails it, or schedules the next poll.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::super::condition::evaluate;
use super::super::graph::MAX_WAIT_SECONDS;
use super::super::protocol::{coded_failure, failure};
use super::super::record::{
    Context, EventKind, EventOutcome, Poll, PollKind, TraceEntry, TraceStatus, Wait, WaitClosed,
};
use super::verdict::Via;
use super::{Call, CallKey, CallOutcome, InFlight, PollRequest, Run};

/// Polls in a row without a usable answer before a `poll_task` fails (a
/// `status_url` poll just stops; the callback may still come).
pub const MAX_POLL_ERRORS: u32 = 3;
const DEFAULT_INTERVAL_SECS: u64 = 10;
const DEFAULT_TIMEOUT_SECS: u64 = 3600;
const DONE: [&str; 5] = ["completed", "succeeded", "success", "done", "finished"];
const FAILED: [&str; 4] = ["failed", "error", "canceled", "cancelled"];

/// What a status body says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollVerdict {
    Done,
    Failed,
    Running,
}

/// Reads a status body: `failed_when` / `done_when` when given (the `IF`
/// language over the body), else `success: false` or a failed `status`,
/// `done: true` or a finished `status` (any case).
pub fn verdict(body: &Value, done_when: Option<&str>, failed_when: Option<&str>) -> PollVerdict {
    let empty = Map::new();
    let fields = body.as_object().unwrap_or(&empty);
    let status = fields
        .get("status")
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase);
    let is = |set: &[&str]| status.as_deref().is_some_and(|s| set.contains(&s));
    let failed = match failed_when {
        Some(c) => evaluate(c, fields),
        None => fields.get("success") == Some(&Value::Bool(false)) || is(&FAILED),
    };
    let done = match done_when {
        Some(c) => evaluate(c, fields),
        None => fields.get("done") == Some(&Value::Bool(true)) || is(&DONE),
    };
    if failed {
        PollVerdict::Failed
    } else if done {
        PollVerdict::Done
    } else {
        PollVerdict::Running
    }
}

/// Status URLs are stored with the run: a component cannot hand it a huge one.
const MAX_STATUS_URL_BYTES: usize = 2048;

fn http_url(v: Option<&Value>) -> Option<String> {
    let url = v?.as_str()?.trim();
    let http = url.starts_with("https://") || url.starts_with("http://");
    (http && url.len() <= MAX_STATUS_URL_BYTES).then(|| url.to_string())
}

fn seconds(v: Option<&Value>, name: &str, default: u64) -> Result<u64, String> {
    match v {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n))
            if n.as_u64()
                .is_some_and(|s| (1..=MAX_WAIT_SECONDS).contains(&s)) =>
        {
            Ok(n.as_u64().unwrap_or(default))
        }
        Some(_) => Err(format!(
            "poll_task: {name} must be a whole number of seconds from 1 to {MAX_WAIT_SECONDS}"
        )),
    }
}

/// A `poll_task` node's poll from its rendered input; the conditions come
/// from its data as written (they are not templates). `Err` says what is
/// wrong, and fails the node.
pub fn poll_task_spec(
    input: &Context,
    data: &Map<String, Value>,
    now: u64,
) -> Result<(Poll, u64), String> {
    let url = http_url(input.get("url"))
        .ok_or("poll_task needs data.url: the http(s) status URL to poll")?;
    let method = match input.get("method") {
        None | Some(Value::Null) => "GET".to_string(),
        Some(Value::String(m))
            if ["GET", "POST", "PUT", "PATCH", "DELETE"]
                .contains(&m.to_ascii_uppercase().as_str()) =>
        {
            m.to_ascii_uppercase()
        }
        Some(_) => return Err("poll_task: method must be GET, POST, PUT, PATCH or DELETE".into()),
    };
    let headers = match input.get("headers") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(h)) => h
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(format!("poll_task: header '{k}' must be a string")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("poll_task: headers must be an object of strings".into()),
    };
    let interval = seconds(
        input.get("interval_seconds"),
        "interval_seconds",
        DEFAULT_INTERVAL_SECS,
    )?;
    let timeout = seconds(
        input.get("timeout_seconds"),
        "timeout_seconds",
        DEFAULT_TIMEOUT_SECS,
    )?;
    let condition = |key: &str| data.get(key).and_then(Value::as_str).map(str::to_string);
    let poll = Poll {
        url,
        method,
        headers,
        body: input.get("body").filter(|b| !b.is_null()).cloned(),
        interval_ms: interval * 1000,
        // The first poll is at once: the job may already be done.
        next_at: now,
        attempts: 0,
        errors: 0,
        done_when: condition("done_when"),
        failed_when: condition("failed_when"),
        last_status: None,
        kind: PollKind::Task,
    };
    Ok((poll, timeout * 1000))
}

/// The poll a pending answer asks for with `status_url` (and
/// `poll_interval_seconds`), beside its callback.
pub fn status_url_poll(answer: &Value, now: u64) -> Option<Poll> {
    let url = http_url(answer.get("status_url"))?;
    let interval = seconds(
        answer.get("poll_interval_seconds"),
        "poll_interval_seconds",
        DEFAULT_INTERVAL_SECS,
    )
    .unwrap_or(DEFAULT_INTERVAL_SECS);
    Some(Poll {
        url,
        method: "GET".into(),
        headers: BTreeMap::new(),
        body: None,
        interval_ms: interval * 1000,
        next_at: now + interval * 1000,
        attempts: 0,
        errors: 0,
        done_when: None,
        failed_when: None,
        last_status: None,
        kind: PollKind::StatusUrl,
    })
}

impl Run {
    /// Starts a `poll_task` node or item from the context it fired with: its
    /// rendered data is the poll, and it waits. `Err` is the failure to
    /// finish it with (its data did not render, or is not a poll).
    pub(super) fn open_poll_task(
        &mut self,
        key: CallKey,
        ctx: Context,
        now: u64,
    ) -> Result<String, Value> {
        let input = self.input_from(key, ctx)?;
        let (poll, timeout_ms) = poll_task_spec(&input, &self.plan.graph.nodes[key.node].data, now)
            .map_err(|why| failure(None, &why))?;
        Ok(self.open_poll_wait(key, poll, timeout_ms, now))
    }

    /// Opens the wait of a `poll_task` node or item; returns its id.
    fn open_poll_wait(&mut self, key: CallKey, poll: Poll, timeout_ms: u64, now: u64) -> String {
        let wait_id = key.wait_id(self.record.attempt);
        let node_id = self.plan.graph.nodes[key.node].id.clone();
        let task_id = format!("poll-{wait_id}");
        let warnings = self.take_warnings(key);
        self.record.trace.push(TraceEntry {
            attempt: self.record.attempt,
            node_id: node_id.clone(),
            item: key.item,
            status: TraceStatus::Paused,
            at: now,
            duration_ms: Some(0),
            task_id: Some(task_id.clone()),
            resumed: false,
            error: None,
            error_code: None,
            warnings,
        });
        self.record.waits.insert(
            wait_id.clone(),
            Wait {
                wait_id: wait_id.clone(),
                task_id,
                node_id,
                item: key.item,
                since: now,
                expires_at: now.saturating_add(timeout_ms),
                poll: Some(poll),
                progress: None,
                heartbeat_at: None,
                events: Vec::new(),
            },
        );
        wait_id
    }

    /// Whether a status URL is due a poll: the alarm's invocation makes it.
    pub fn polls_due_at(&self, now: u64) -> bool {
        self.due_polls(now).next().is_some()
    }

    /// Waits whose poll is due and not already being made.
    pub(super) fn polls_due(&self, now: u64) -> Vec<String> {
        self.due_polls(now).map(|w| w.wait_id.clone()).collect()
    }

    fn due_polls(&self, now: u64) -> impl Iterator<Item = &Wait> {
        self.record.waits.values().filter(move |w| {
            let due = w.poll.as_ref().is_some_and(|p| p.next_at <= now);
            // An open wait's own call has been answered: what is in flight
            // under its key is its poll.
            due && self
                .plan
                .node_index(&w.node_id)
                .is_some_and(|node| !self.in_flight.contains_key(&CallKey { node, item: w.item }))
        })
    }

    pub(super) fn issue_poll(&mut self, wait_id: &str, now: u64) -> Option<Call> {
        let wait = self.record.waits.get(wait_id)?;
        let poll = wait.poll.as_ref()?;
        let node = self.plan.node_index(&wait.node_id)?;
        let key = CallKey {
            node,
            item: wait.item,
        };
        let call = Call {
            key,
            node_id: wait.node_id.clone(),
            url: poll.url.clone(),
            input: Map::new(),
            wait_id: wait_id.to_string(),
            expires_at: wait.expires_at,
            // A new key per poll: a journaled answer is never replayed for a later poll.
            idempotency_key: format!(
                "{}.{wait_id}.poll{}",
                self.record.run_id,
                poll.attempts.saturating_add(poll.errors)
            ),
            segment: self.record.segments,
            owner: None,
            depth: self.record.depth,
            root: self.record.root_run().to_string(),
            callback_url: None,
            poll: Some(Box::new(PollRequest {
                method: poll.method.clone(),
                headers: poll.headers.clone(),
                body: poll.body.clone(),
            })),
        };
        self.in_flight.insert(
            key,
            InFlight {
                started_at: now,
                expires_at: wait.expires_at,
                poll_of: Some(wait_id.to_string()),
            },
        );
        Some(call)
    }

    /// A poll's answer: the wait finishes, fails, or polls again later.
    pub(super) fn complete_poll(
        &mut self,
        key: CallKey,
        wait_id: &str,
        outcome: CallOutcome,
        now: u64,
    ) {
        let Some(wait) = self.record.waits.get_mut(wait_id) else {
            return;
        };
        let since = wait.since;
        let Some(poll) = wait.poll.as_mut() else {
            return;
        };
        let outcome_event = match &outcome {
            CallOutcome::Answered(_) => EventOutcome::Accepted,
            CallOutcome::Failed { .. } => EventOutcome::Failed,
        };
        let finished = match outcome {
            CallOutcome::Answered(body) => {
                poll.attempts = poll.attempts.saturating_add(1);
                poll.errors = 0;
                match verdict(
                    &body,
                    poll.done_when.as_deref(),
                    poll.failed_when.as_deref(),
                ) {
                    PollVerdict::Running => {
                        // A record read back may hold any interval.
                        poll.next_at = now.saturating_add(poll.interval_ms);
                        None
                    }
                    PollVerdict::Done => Some(body),
                    PollVerdict::Failed => Some(failed_status(body)),
                }
            }
            CallOutcome::Failed {
                status,
                error,
                code,
            } => {
                poll.errors = poll.errors.saturating_add(1);
                poll.last_status = status;
                if poll.errors < MAX_POLL_ERRORS {
                    poll.next_at = now.saturating_add(poll.interval_ms);
                    None
                } else if poll.kind == PollKind::StatusUrl {
                    // The callback may still come; stop polling, keep waiting.
                    wait.poll = None;
                    None
                } else {
                    let error =
                        format!("the status URL failed {MAX_POLL_ERRORS} times in a row: {error}");
                    Some(match code {
                        Some(code) => coded_failure(status, &error, code.code()),
                        None => failure(status, &error),
                    })
                }
            }
        };
        wait.note(now, EventKind::Poll, outcome_event);
        if let Some(output) = finished {
            if self.close_wait(wait_id, WaitClosed::Polled, now).is_ok() {
                self.finish_instance(key, output, Via::Poll { since }, now);
            }
        }
    }
}

/// A status body that reports failure, as a failed result.
fn failed_status(body: Value) -> Value {
    let mut out = match body {
        Value::Object(m) => m,
        other => {
            let mut m = Map::new();
            m.insert("body".into(), other);
            m
        }
    };
    out.insert("success".into(), json!(false));
    if out.get("error").is_none_or(Value::is_null) {
        let status = out.get("status").cloned().unwrap_or(Value::Null);
        out.insert(
            "error".into(),
            json!(format!(
                "the status URL reported the task failed (status: {status})"
            )),
        );
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_and_custom_readings() {
        let v = |body: Value| verdict(&body, None, None);
        assert_eq!(v(json!({"status": "Running"})), PollVerdict::Running);
        assert_eq!(v(json!({"status": "SUCCEEDED"})), PollVerdict::Done);
        assert_eq!(v(json!({"done": true})), PollVerdict::Done);
        assert_eq!(v(json!({"status": "cancelled"})), PollVerdict::Failed);
        assert_eq!(
            v(json!({"success": false, "done": true})),
            PollVerdict::Failed
        );
        assert_eq!(v(json!([1, 2])), PollVerdict::Running);
        let custom = |body: Value| verdict(&body, Some("state === 'ready'"), Some("code >= 500"));
        assert_eq!(custom(json!({"state": "ready"})), PollVerdict::Done);
        assert_eq!(
            custom(json!({"status": "done"})),
            PollVerdict::Running,
            "overrides the defaults"
        );
        assert_eq!(
            custom(json!({"code": 503, "state": "ready"})),
            PollVerdict::Failed
        );
    }
}
