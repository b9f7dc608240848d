//! `join: "any"` — a node that fires once, on the first incoming edge that
//! fires, and supersedes the work that only fed it: that work's open waits
//! close as `superseded` (their callbacks are then answered so), its queued
//! calls and FOREACH items are never started, and nothing on it fires again.
//! Branches that also lead elsewhere carry on; what they later deliver to
//! the node is ignored.

use serde_json::Value;

use super::super::record::{
    Arrival, ClosedWait, ItemState, NodeState, TraceEntry, TraceStatus, WaitClosed,
};
use super::{CallKey, Run};

impl Run {
    /// An incoming edge of the `any` node `target` resolved. The first that
    /// fires wins: the node is ready with that edge's context alone (the
    /// other slots count as skipped, so a record saved now reloads it as
    /// ready) and its feeders are superseded. If every edge is skipped the
    /// node is skipped, as a join of all would be.
    pub(super) fn deliver_to_any(
        &mut self,
        target: usize,
        slot: usize,
        arrival: Arrival,
        now: u64,
    ) {
        let width = self.plan.incoming[target].len();
        if let NodeState::Idle = self.record.nodes[target] {
            self.record.nodes[target] = NodeState::Waiting {
                arrivals: vec![Arrival::Pending; width],
            };
        }
        // Fired, skipped or superseded already: nothing more reaches it.
        let NodeState::Waiting { arrivals } = &mut self.record.nodes[target] else {
            return;
        };
        if arrivals.iter().any(fired) {
            return;
        }
        if fired(&arrival) {
            arrivals.fill(Arrival::Skipped);
            arrivals[slot] = arrival;
            self.ready.push_back(target);
            self.supersede_feeders_of(target, now);
            return;
        }
        arrivals[slot] = arrival;
        if arrivals.iter().all(|a| !matches!(a, Arrival::Pending)) {
            self.ready.push_back(target);
        }
    }

    /// Supersedes every unfinished node whose every path leads into `join`.
    fn supersede_feeders_of(&mut self, join: usize, now: u64) {
        for n in self.plan.feeding_only(join) {
            self.supersede(n, now);
        }
    }

    /// Node `n` will never be wanted: it becomes `Skipped` (so a later
    /// arrival, a queued call or a call's answer finds nothing to act on) and
    /// its open waits close.
    fn supersede(&mut self, n: usize, now: u64) {
        let state = std::mem::replace(&mut self.record.nodes[n], NodeState::Skipped);
        // Its calls still queued are dropped with it: left queued, they would
        // make the segment yield for nothing, and a run read back would not
        // have them (found by fuzzing a join of a FOREACH held to one item at
        // a time).
        if !matches!(state, NodeState::Done { .. } | NodeState::Skipped) {
            self.to_call.retain(|key| key.node != n);
        }
        let waits: Vec<String> = match state {
            NodeState::Done { .. } | NodeState::Skipped | NodeState::Failed { .. } => {
                self.record.nodes[n] = state;
                return;
            }
            NodeState::Paused { wait_id, .. } => vec![wait_id],
            NodeState::Mapping(m) => m
                .items
                .into_iter()
                .filter_map(|item| match item {
                    ItemState::Paused { wait_id } => Some(wait_id),
                    _ => None,
                })
                .collect(),
            NodeState::Idle | NodeState::Waiting { .. } | NodeState::Calling { .. } => Vec::new(),
        };
        for wait_id in waits {
            // Held by the node, so open (`check_shape`); closing cannot fail.
            let _ = self.close_wait(&wait_id, WaitClosed::Superseded, now);
        }
        self.supersede_early(n, now);
        self.record.trace.push(TraceEntry {
            attempt: self.record.attempt,
            node_id: self.plan.graph.nodes[n].id.clone(),
            item: None,
            status: TraceStatus::Superseded,
            at: now,
            duration_ms: None,
            task_id: None,
            resumed: false,
            error: None,
            error_code: None,
            warnings: Vec::new(),
        });
    }

    /// Callbacks held for waits of `n` that will now never open: each is
    /// kept as a superseded wait, so its repeats are answered `superseded`.
    fn supersede_early(&mut self, n: usize, now: u64) {
        let attempt = self.record.attempt;
        let held: Vec<String> = self
            .record
            .early
            .keys()
            .filter(|w| CallKey::from_wait_id(w, attempt).is_some_and(|k| k.node == n))
            .cloned()
            .collect();
        for wait_id in held {
            let Some(early) = self.record.early.remove(&wait_id) else {
                continue;
            };
            let task_id = early.body.get("task_id").and_then(Value::as_str);
            self.close_superseded(&wait_id, task_id, now);
        }
    }

    /// A call answered `pending` for a node that no longer takes it. If the
    /// node was superseded while the call was in flight (a node is skipped
    /// with a call in flight no other way), the wait it would have opened is
    /// kept as superseded, so the daemon's callback is answered with the reason.
    pub(super) fn superseded_pending(&mut self, key: CallKey, task_id: &str, now: u64) {
        if matches!(self.record.nodes[key.node], NodeState::Skipped) {
            let wait_id = key.wait_id(self.record.attempt);
            self.close_superseded(&wait_id, Some(task_id), now);
        }
    }

    fn close_superseded(&mut self, wait_id: &str, task_id: Option<&str>, now: u64) {
        let Some(key) = CallKey::from_wait_id(wait_id, self.record.attempt) else {
            return;
        };
        self.record.closed.insert(
            wait_id.to_string(),
            ClosedWait {
                task_id: task_id.unwrap_or_default().to_string(),
                node_id: self.plan.graph.nodes[key.node].id.clone(),
                item: key.item,
                at: now,
                how: WaitClosed::Superseded,
                events: Vec::new(),
            },
        );
    }
}

/// Whether an edge's arrival carries a context (it fired).
fn fired(arrival: &Arrival) -> bool {
    matches!(arrival, Arrival::Delivered { .. } | Arrival::Items { .. })
}
