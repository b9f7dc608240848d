//! What closes a wait, and what ends a run from outside: a callback, a
//! deadline passing, a cancel.

use serde_json::Value;

use super::super::error::EngineError;
use super::super::plan::{ComponentRef, SUBFLOW_SCHEME};
use super::super::protocol::{json_depth, wait_timeout, MAX_JSON_DEPTH};
use super::super::record::{
    ClosedWait, EarlyCallback, EventKind, EventOutcome, ItemState, NodeState, RunStatus, Wait,
    WaitClosed,
};
use super::verdict::Via;
use super::{CallKey, Noop, Resume, Run};

/// The most a heartbeat's `progress` may hold, as JSON text.
pub const MAX_PROGRESS_BYTES: usize = 4 * 1024;
impl Run {
    /// Applies a callback to an open wait. On success the run is `Running`
    /// again and `step` continues it; a `Noop` means nothing was changed.
    /// `token_expires_at` is the expiry the callback URL was signed with
    /// (`None` for the legacy bare route).
    pub fn resume(
        &mut self,
        wait_id: &str,
        body: Value,
        token_expires_at: Option<u64>,
        now: u64,
    ) -> Result<Result<Resume, Noop>, EngineError> {
        self.resume_arrived(wait_id, body, token_expires_at, now, now)
    }

    /// `resume` for a callback that arrived at `arrived` and is applied
    /// now (the gate kept it while a segment ran): its deadlines are judged
    /// at its arrival. A callback for a wait that is not open yet, but whose
    /// call was made (its pending answer not yet taken), is held until the
    /// wait opens (`RunRecord::early`).
    pub fn resume_arrived(
        &mut self,
        wait_id: &str,
        body: Value,
        token_expires_at: Option<u64>,
        arrived: u64,
        now: u64,
    ) -> Result<Result<Resume, Noop>, EngineError> {
        match self.check_wait(wait_id, &body, token_expires_at, arrived)? {
            Err(Noop::UnknownWait) if self.may_open(wait_id) => {
                if !body.is_object() || json_depth(&body) > MAX_JSON_DEPTH {
                    return Err(EngineError::InvalidRequest(
                        "a callback body must be a JSON object no more than \
                         100 levels deep"
                            .into(),
                    ));
                }
                // The first arrival is held; a repeat is the same callback.
                self.record
                    .early
                    .entry(wait_id.to_string())
                    .or_insert(EarlyCallback {
                        body,
                        arrived,
                        token_expires_at,
                    });
                return Ok(Ok(Resume::Held));
            }
            Err(noop) => return Ok(Err(noop)),
            Ok(()) => {}
        }
        let Some(wait) = self.record.waits.get_mut(wait_id) else {
            return Ok(Err(Noop::UnknownWait));
        };
        wait.note(now, EventKind::Callback, EventOutcome::Accepted);
        let wait = self.close_wait(wait_id, WaitClosed::Resumed, now)?;
        self.record.status = RunStatus::Running;
        let since = wait.since;
        self.finish_instance(self.key_of(&wait)?, body, Via::Callback { since }, now);
        Ok(Ok(Resume::Applied))
    }

    /// Whether `wait_id` may still open in this attempt: it names a node
    /// (or FOREACH item) not reached yet, calling, or held for a slot. A
    /// callback URL for it is signed only into its call, so a callback that
    /// names it came from that call — made by a segment whose change was
    /// lost (a crash), and to be made again, its answer from the journal.
    fn may_open(&self, wait_id: &str) -> bool {
        let Some(key) = CallKey::from_wait_id(wait_id, self.record.attempt) else {
            return false;
        };
        match (self.record.nodes.get(key.node), key.item) {
            (Some(NodeState::Idle | NodeState::Waiting { .. }), _) => true,
            (Some(NodeState::Calling { .. }), None) => true,
            (Some(NodeState::Mapping(m)), Some(i)) => matches!(
                m.items.get(i),
                Some(ItemState::Todo(_) | ItemState::Held(_))
            ),
            _ => false,
        }
    }

    /// A wait just opened: a callback held for it is applied now, judged at
    /// its arrival; one naming another task is dropped (it was not for
    /// this call).
    pub(super) fn take_early(&mut self, wait_id: &str, now: u64) {
        let Some(early) = self.record.early.remove(wait_id) else {
            return;
        };
        let result = self.resume_arrived(
            wait_id,
            early.body,
            early.token_expires_at,
            early.arrived,
            now,
        );
        if let (Err(EngineError::TaskMismatch { .. }), Some(wait)) =
            (result, self.record.waits.get_mut(wait_id))
        {
            wait.note(
                early.arrived,
                EventKind::Callback,
                EventOutcome::TaskMismatch,
            );
        }
    }

    /// When a callback URL for a wait whose deadline is `expires_at` stops
    /// being good, its call made at `called`: as long as the wait may last
    /// (it begins within the call's timeout, and heartbeats extend it at
    /// most `max_wait_ms` from then), or its deadline if later.
    pub fn url_expiry_from(&self, called: u64, expires_at: u64) -> u64 {
        let longest = self.settings.max_wait_ms + self.settings.call_timeout_ms;
        expires_at.max(called.saturating_add(longest))
    }

    /// `url_expiry_from` for an open wait, counted from when it began: for
    /// URLs handed out to a request that came without one (the bare route).
    pub fn url_expiry_of(&self, wait_id: &str, expires_at: u64) -> u64 {
        self.record
            .waits
            .get(wait_id)
            .map_or(expires_at, |w| self.url_expiry_from(w.since, expires_at))
    }

    /// A heartbeat for an open wait: records its `progress` and, with
    /// `extend_seconds`, moves the deadline later — never earlier, never
    /// past `max_wait_ms` from when the wait began (unless it already was),
    /// and never past the expiry of the URL it came by, so the wait never
    /// outlives the URL the daemon holds. Answers the deadline.
    pub fn heartbeat(
        &mut self,
        wait_id: &str,
        body: Value,
        token_expires_at: Option<u64>,
        now: u64,
    ) -> Result<Result<u64, Noop>, EngineError> {
        let max_wait_ms = self.settings.max_wait_ms;
        let extend_ms = match body.get("extend_seconds") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) if n.as_u64().is_some_and(|s| s >= 1) => {
                n.as_u64().map(|s| s.saturating_mul(1000))
            }
            Some(_) => {
                return Err(EngineError::InvalidRequest(
                    "extend_seconds must be a whole number of seconds, at least 1".into(),
                ))
            }
        };
        // Each heartbeat replaces the last one's progress, so this bounds
        // what a daemon can make a wait hold however often it beats.
        if let Some(progress) = body.get("progress") {
            let size = progress.to_string().len();
            if size > MAX_PROGRESS_BYTES {
                return Err(EngineError::InvalidRequest(format!(
                    "progress is {size} bytes of JSON; a heartbeat may report at most \
                     {MAX_PROGRESS_BYTES} (send a summary, and the result with the callback)"
                )));
            }
        }
        if let Err(noop) = self.check_wait(wait_id, &body, token_expires_at, now)? {
            return Ok(Err(noop));
        }
        let Some(wait) = self.record.waits.get_mut(wait_id) else {
            return Ok(Err(Noop::UnknownWait));
        };
        if let Some(progress) = body.get("progress") {
            wait.progress = Some(progress.clone());
        }
        wait.heartbeat_at = Some(now);
        if let Some(extend) = extend_ms {
            let limit = wait
                .since
                .saturating_add(max_wait_ms)
                .min(token_expires_at.unwrap_or(u64::MAX));
            let wanted = now.saturating_add(extend).min(limit);
            wait.expires_at = wait.expires_at.max(wanted);
        }
        wait.note(now, EventKind::Heartbeat, EventOutcome::Accepted);
        Ok(Ok(wait.expires_at))
    }

    /// What a callback or heartbeat for `wait_id` is refused with, if anything.
    fn check_wait(
        &self,
        wait_id: &str,
        body: &Value,
        token_expires_at: Option<u64>,
        now: u64,
    ) -> Result<Result<(), Noop>, EngineError> {
        let Some(wait) = self.record.waits.get(wait_id) else {
            return Ok(Err(match self.record.closed.get(wait_id).map(|c| c.how) {
                Some(WaitClosed::Resumed | WaitClosed::Polled) => Noop::AlreadyResumed,
                Some(WaitClosed::TimedOut) => Noop::Expired,
                Some(WaitClosed::Cancelled) => Noop::RunFinished,
                Some(WaitClosed::Superseded) => Noop::Superseded,
                None if self.record.status.is_finished() => Noop::RunFinished,
                None => Noop::UnknownWait,
            }));
        };
        if let Some(got) = body.get("task_id") {
            let got = got.as_str().map_or_else(|| got.to_string(), str::to_string);
            if got != wait.task_id {
                return Err(EngineError::TaskMismatch {
                    expected: wait.task_id.clone(),
                    got,
                });
            }
        }
        if !body.is_object() {
            return Err(EngineError::InvalidRequest(
                "a callback body must be a JSON object".into(),
            ));
        }
        if json_depth(body) > MAX_JSON_DEPTH {
            return Err(EngineError::InvalidRequest(format!(
                "the callback body nests JSON more than {MAX_JSON_DEPTH} levels deep"
            )));
        }
        // A URL is good until the deadline it was signed with (the route
        // refuses it past that without reading anything; this keeps the rule
        // whoever calls), and never past the wait's own.
        let stale_url = token_expires_at.is_some_and(|t| now >= t);
        if now >= wait.expires_at || stale_url {
            return Ok(Err(Noop::Expired));
        }
        Ok(Ok(()))
    }

    /// Closes every open wait whose deadline has passed: each node (or item)
    /// finishes with a `wait_timeout` failure and takes its failure path.
    /// Returns how many closed; `step` then continues the run.
    pub fn expire(&mut self, now: u64) -> Result<usize, EngineError> {
        if self.record.status.is_finished() {
            return Ok(0);
        }
        let due: Vec<String> = self
            .record
            .waits
            .values()
            .filter(|w| w.expires_at <= now)
            .map(|w| w.wait_id.clone())
            .collect();
        let mut closed = 0;
        for wait_id in &due {
            // A timeout that failed the run dropped the other waits with it.
            if self.record.status.is_finished() {
                break;
            }
            // One whose timeout path fired a `join: "any"` node superseded
            // the waits that only fed it: those are closed already.
            if !self.record.waits.contains_key(wait_id) {
                continue;
            }
            let wait = self.close_wait(wait_id, WaitClosed::TimedOut, now)?;
            closed += 1;
            self.record.status = RunStatus::Running;
            let output = wait_timeout(&wait.task_id, wait.expires_at.saturating_sub(wait.since));
            let via = Via::Deadline { since: wait.since };
            self.finish_instance(self.key_of(&wait)?, output, via, now);
        }
        Ok(closed)
    }

    /// The child runs this run waits on: the open waits of its
    /// `workflow://` nodes, whose task is the child's run id. A cancel
    /// reaches them too.
    pub fn open_children(&self) -> Vec<String> {
        self.record
            .waits
            .values()
            .filter(|wait| {
                self.plan.node_index(&wait.node_id).is_some_and(|n| {
                    matches!(&self.plan.components[n], Some(ComponentRef::Http(url))
                        if url.starts_with(SUBFLOW_SCHEME))
                })
            })
            .map(|wait| wait.task_id.clone())
            .collect()
    }

    /// Of `children` (open when a segment began), those whose waits it
    /// closed as no longer wanted: cancelled, or superseded.
    pub fn unwanted_children(&self, children: &[String]) -> Vec<String> {
        children
            .iter()
            .filter(|child| {
                self.record.closed.values().any(|closed| {
                    &closed.task_id == *child
                        && matches!(closed.how, WaitClosed::Cancelled | WaitClosed::Superseded)
                })
            })
            .cloned()
            .collect()
    }

    /// Cancels the run: open waits close (later callbacks are told the run
    /// finished), nothing more is called. A finished run cannot be
    /// cancelled; the error carries its status.
    pub fn cancel(&mut self, now: u64) -> Result<(), EngineError> {
        if self.record.status.is_finished() {
            return Err(EngineError::RunFinished {
                status: self.record.status.name(),
            });
        }
        let open: Vec<String> = self.record.waits.keys().cloned().collect();
        for wait_id in open {
            self.close_wait(&wait_id, WaitClosed::Cancelled, now)?;
        }
        self.record.status = RunStatus::Cancelled { finished_at: now };
        self.record.updated_at = now;
        self.release();
        Ok(())
    }

    /// When the run must next act with no request arriving: now when it is
    /// running (it yielded, or was stored mid-segment), at its earliest
    /// deadline when paused, when its final callback is due once finished.
    pub fn next_wake(&self, now: u64) -> Option<u64> {
        match self.record.status {
            RunStatus::Running => Some(now),
            RunStatus::Paused { .. } => self.record.next_timer(),
            _ => self.delivery_due(),
        }
    }

    pub(super) fn close_wait(
        &mut self,
        wait_id: &str,
        how: WaitClosed,
        now: u64,
    ) -> Result<Wait, EngineError> {
        let wait = self
            .record
            .waits
            .remove(wait_id)
            .ok_or_else(|| EngineError::CorruptRecord(format!("no open wait '{wait_id}'")))?;
        self.record.closed.insert(
            wait.wait_id.clone(),
            ClosedWait {
                task_id: wait.task_id.clone(),
                node_id: wait.node_id.clone(),
                item: wait.item,
                at: now,
                how,
                events: wait.events.clone(),
            },
        );
        Ok(wait)
    }

    fn key_of(&self, wait: &Wait) -> Result<CallKey, EngineError> {
        let node = self.plan.node_index(&wait.node_id).ok_or_else(|| {
            EngineError::CorruptRecord(format!("wait names an unknown node '{}'", wait.node_id))
        })?;
        Ok(CallKey {
            node,
            item: wait.item,
        })
    }
}
