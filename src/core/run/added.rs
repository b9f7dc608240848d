//! What a node's output adds to the run: an object output that mostly
//! repeats the context its node was given is held over that context
//! (sharing it, see `core::fields`), and only what it changes is counted
//! against the run's size and checked for depth.
//!
//! This is what keeps a chain whose nodes each add a key and pass the rest
//! on linear: with every output counted and checked whole, the work and the
//! byte count grew with the square of the chain's length, and a long chain
//! failed `run_too_large` holding copies of one context.

use super::super::fields::Change;
use super::super::protocol::{json_depth, MAX_JSON_DEPTH};
use serde_json::{Map, Value};

use super::super::plan::Plan;
use super::super::record::{Context, NodeOutput, NodeState};
use super::super::stored::delta;
use super::super::template::json_size;

pub(super) struct Added {
    /// The output, over the context when it mostly repeats it.
    pub output: NodeOutput,
    /// The bytes it adds to what the run holds.
    pub bytes: usize,
    /// It is nested deeper than a stored output may be.
    pub too_deep: bool,
}

impl Added {
    pub fn over(ctx: &Context, output: NodeOutput) -> Self {
        let fields = match output {
            NodeOutput::Object(fields) => fields,
            other @ NodeOutput::Other(_) => return Self::whole(other),
        };
        // Up to half the output's keys may differ from the context; past
        // that it is held as it came. For an output built on the context (a
        // pass-through) this looks only at what changed.
        let budget = fields.len() / 2;
        if fields.changes_from(ctx).nth(budget).is_some() {
            return Self::whole(NodeOutput::Object(fields));
        }
        let mut shared = ctx.clone();
        let mut bytes = 2;
        let mut too_deep = false;
        for change in fields.changes_from(ctx) {
            match change {
                Change::Set(k, v) => {
                    bytes += k.len() + 4 + json_size(v);
                    too_deep |= json_depth(v) + 1 > MAX_JSON_DEPTH;
                    shared.insert(k.clone(), v.clone());
                }
                Change::Unset(k) => {
                    shared.remove(k);
                }
            }
        }
        Self {
            output: NodeOutput::Object(shared),
            bytes,
            too_deep,
        }
    }

    fn whole(output: NodeOutput) -> Self {
        Self {
            bytes: output.json_size(),
            too_deep: output.json_depth() > MAX_JSON_DEPTH,
            output,
        }
    }
}

/// What the finished nodes' outputs of a run read back hold, counted as
/// `Added` counted them while it ran: an output stored as a delta over the
/// outputs before it (`stored::delta`) adds that delta, any other output
/// all of it. Along a chain the two counts agree; where branches meet, the
/// baseline of the stored form differs a little from each node's context.
pub(super) fn held_bytes(context: &Map<String, Value>, plan: &Plan, nodes: &[NodeState]) -> usize {
    let output = |n: usize| match &nodes[n] {
        NodeState::Done { output } => Some(output),
        _ => None,
    };
    let (deltas, _) = delta::output_deltas(context, plan, output);
    deltas
        .iter()
        .enumerate()
        .filter_map(|(n, d)| match d {
            Some(d) => Some(d.json_size()),
            None => output(n).map(NodeOutput::json_size),
        })
        .sum()
}
