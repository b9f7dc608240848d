//! What a node's templates and conditions see: upstream outputs by node id,
//! then the context that flowed along its incoming edges, then the run's
//! date variables (held once, in the run's trigger context: `core::dates`).

use serde_json::{Map, Value};

use super::dates;
use super::plan::Plan;
use super::record::{Context, NodeState, RunRecord};
use super::template::{walk, Scope};

pub struct NodeScope<'a> {
    ctx: &'a Context,
    plan: &'a Plan,
    nodes: &'a [NodeState],
    run_context: &'a Map<String, Value>,
}

impl<'a> NodeScope<'a> {
    pub fn new(ctx: &'a Context, plan: &'a Plan, record: &'a RunRecord) -> Self {
        Self {
            ctx,
            plan,
            nodes: &record.nodes,
            run_context: &record.context,
        }
    }
}

impl Scope for NodeScope<'_> {
    fn lookup(&self, path: &str) -> Option<&Value> {
        let mut parts = path.split('.');
        let first = parts.next()?;
        // A finished node's id names its output, so `{{scrape.text}}` reads
        // the scrape node's result without copying it into every context.
        if let Some(NodeState::Done { output }) =
            self.plan.node_index(first).map(|i| &self.nodes[i])
        {
            return output.walk(parts);
        }
        let value = self
            .ctx
            .get(first)
            .or_else(|| dates::lookup(self.run_context, first))?;
        walk(value, parts)
    }
}
