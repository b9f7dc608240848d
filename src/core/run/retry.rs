//! Retry from failure: a failed run runs again only what failed — its failed
//! (or cut short) nodes, and in a FOREACH only the failed items — keeping
//! every completed output. The attempt number goes into wait ids, so a
//! callback for the failed attempt cannot resume the new one.

use serde_json::Value;

use super::super::error::EngineError;
use super::super::protocol::{failure, is_failure};
use super::super::record::{
    Arrival, Context, DeliveryState, ItemState, NodeOutput, NodeState, RunStatus,
};
use super::super::scope::NodeScope;
use super::foreach::{foreach_arrival, foreach_items};
use super::Run;

/// Failures a retry cannot fix: the run as a whole outgrew its limits.
const FINAL_CODES: [&str; 2] = ["run_too_large", "record_too_large"];

impl Run {
    /// Starts the next attempt of a failed run. Nodes marked `Failed` fire
    /// again with the context they had; FOREACH targets run their failed
    /// items again (their values taken afresh from the FOREACH source).
    pub fn retry(&mut self, now: u64) -> Result<(), EngineError> {
        let RunStatus::Failed { error, .. } = &self.record.status else {
            return Err(EngineError::NotRetryable {
                status: self.record.status.name(),
                reason: format!(
                    "only a failed run can be retried; this one is {}",
                    self.record.status.name()
                ),
            });
        };
        if FINAL_CODES.contains(&error.code.as_str()) {
            return Err(EngineError::NotRetryable {
                status: "failed",
                reason: format!(
                    "the run failed with {}: running it again would fail the same way",
                    error.code
                ),
            });
        }
        self.record.attempt = self.record.attempt.saturating_add(1);
        self.record.status = RunStatus::Running;
        // The caller hears again when the new attempt ends.
        if let Some(callback) = &mut self.record.final_callback {
            callback.state = DeliveryState::Waiting;
            callback.round_started_at = None;
        }
        self.record.updated_at = now;
        let mut again: Vec<(usize, Context)> = Vec::new();
        let mut mappings = Vec::new();
        for &n in &self.plan.order {
            match &mut self.record.nodes[n] {
                NodeState::Failed { ctx } => {
                    again.push((n, std::mem::take(ctx)));
                    self.record.nodes[n] = NodeState::Idle;
                }
                NodeState::Mapping(_) => mappings.push(n),
                _ => {}
            }
        }
        for n in mappings {
            self.reopen_items(n);
        }
        // Nodes whose edges had all resolved but that had not fired yet.
        for &n in &self.plan.order {
            if let NodeState::Waiting { arrivals } = &self.record.nodes[n] {
                if arrivals.iter().all(|a| !matches!(a, Arrival::Pending)) {
                    self.ready.push_back(n);
                }
            }
        }
        for (n, ctx) in again {
            let arrival = match self.foreach_edge(n).cloned() {
                // A FOREACH target that failed before its items started
                // takes its items from the source again.
                Some(edge) => match self.source_output(n) {
                    Some(output) => foreach_arrival(self, &edge, &output, &ctx),
                    None => Arrival::Items {
                        ctx,
                        base: Context::new(),
                        iterator: String::new(),
                        items: Vec::new(),
                        missing: Some("the FOREACH source's output is no longer held".into()),
                    },
                },
                None => Arrival::Delivered { ctx },
            };
            self.fire_with(n, vec![arrival], now);
            if self.record.status.is_finished() {
                return Ok(());
            }
        }
        for n in 0..self.record.nodes.len() {
            if let NodeState::Mapping(m) = &self.record.nodes[n] {
                if m.remaining == 0 {
                    // Nothing could be started again: it fails as before.
                    self.finish_mapping(n, now);
                } else {
                    self.fill_mapping(n, now);
                }
            }
            if self.record.status.is_finished() {
                break;
            }
        }
        Ok(())
    }

    /// Turns a FOREACH target's failed items back into held ones, with the
    /// values they had.
    fn reopen_items(&mut self, n: usize) {
        let values = self.item_values(n);
        let NodeState::Mapping(m) = &mut self.record.nodes[n] else {
            return;
        };
        for (i, item) in m.items.iter_mut().enumerate() {
            let failed = matches!(item, ItemState::Done(v) if is_failure(v));
            match values.as_ref().and_then(|v| v.get(i)) {
                Some(value) if failed => {
                    *item = ItemState::Held(value.clone());
                    m.remaining += 1;
                }
                None if failed => {
                    *item = ItemState::Done(failure(
                        None,
                        "this item's value is no longer held by the FOREACH source",
                    ));
                }
                _ => {}
            }
        }
        m.next_held = 0;
    }

    /// The items a FOREACH target iterates, taken again from its source's
    /// output (the failed items' own values were replaced by their results).
    fn item_values(&self, n: usize) -> Option<Vec<Value>> {
        let edge = self.foreach_edge(n)?;
        let NodeState::Mapping(m) = &self.record.nodes[n] else {
            return None;
        };
        let output = self.source_output(n)?;
        let scope = NodeScope::new(&m.ctx, &self.plan, &self.record);
        foreach_items(&output, edge.items.as_deref(), &scope)
            .ok()
            .map(|(items, _)| items)
            .filter(|items| items.len() == m.items.len())
    }

    /// The output of the node whose FOREACH edge leads to `n`.
    fn source_output(&self, n: usize) -> Option<NodeOutput> {
        let edge = self.foreach_edge(n)?;
        let source = self.plan.node_index(&edge.from)?;
        match &self.record.nodes[source] {
            NodeState::Done { output } => Some(output.clone()),
            _ => None,
        }
    }
}
