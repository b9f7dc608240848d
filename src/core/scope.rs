//! What a node's templates and conditions see: upstream outputs by node id,
//! then the context that flowed along its incoming edges.

use serde_json::{Map, Value};

use super::plan::Plan;
use super::record::NodeState;
use super::template::{walk, Scope};

pub struct NodeScope<'a> {
    ctx: &'a Map<String, Value>,
    plan: &'a Plan,
    nodes: &'a [NodeState],
}

impl<'a> NodeScope<'a> {
    pub fn new(ctx: &'a Map<String, Value>, plan: &'a Plan, nodes: &'a [NodeState]) -> Self {
        Self { ctx, plan, nodes }
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
            return walk(output, parts);
        }
        walk(self.ctx.get(first)?, parts)
    }
}
