//! What a node's output adds to the run: an object output that mostly
//! repeats the context its node was given is held over that context
//! (sharing it, see `core::fields`), and only what it changes is counted
//! against the run's size and checked for depth.
//!
//! This is what keeps a chain whose nodes each add a key and pass the rest
//! on linear: with every output counted and checked whole, the work and the
//! byte count grew with the square of the chain's length, and a long chain
//! failed `run_too_large` holding copies of one context.

use serde_json::{Map, Value};

use super::super::fields::Change;
use super::super::plan::Plan;
use super::super::protocol::{json_depth, MAX_JSON_DEPTH, RESULT_STATUS_KEYS};
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
    /// What flows on along its edges: the context with the output's
    /// fields on top, status keys aside (`flows_on`).
    pub flows: Context,
}

impl Added {
    /// `built_on_context`: the output was made from the context in process
    /// (a pass-through's is its input), so it shares it already; an answer
    /// from outside that repeats the context is rebuilt over it.
    pub fn over(ctx: &Context, output: NodeOutput, built_on_context: bool) -> Self {
        let fields = match output {
            NodeOutput::Object(fields) => fields,
            other @ NodeOutput::Other(_) => return Self::whole(ctx, other),
        };
        // Up to half the output's keys may differ from the context; past
        // that it is held as it came. For an output built on the context
        // this walks only what changed.
        let Some(changes) = fields.changes_within(ctx, fields.len() / 2) else {
            return Self::whole(ctx, NodeOutput::Object(fields));
        };
        let mut bytes = 2;
        let mut too_deep = false;
        for change in &changes {
            if let Change::Set(k, v) = change {
                bytes += k.len() + 4 + json_size(v);
                too_deep |= json_depth(v) + 1 > MAX_JSON_DEPTH;
            }
        }
        let shared = if built_on_context {
            None
        } else {
            // The answer's own values, laid on the context.
            let mut shared = ctx.clone();
            shared.apply(&fields, changes.iter().copied());
            Some(shared)
        };
        // The context with what the output changed laid on: when it only
        // added to the context, the output itself.
        let flows = ctx.merged_by(shared.as_ref().unwrap_or(&fields), &changes, is_status);
        drop(changes);
        Self {
            output: NodeOutput::Object(shared.unwrap_or(fields)),
            bytes,
            too_deep,
            flows,
        }
    }

    fn whole(ctx: &Context, output: NodeOutput) -> Self {
        Self {
            bytes: output.json_size(),
            too_deep: output.json_depth() > MAX_JSON_DEPTH,
            flows: flows_on(ctx, &output),
            output,
        }
    }
}

/// The context that flows on from a node given `ctx` that answered
/// `output`: its object fields laid on the context, status keys aside.
pub(super) fn flows_on(ctx: &Context, output: &NodeOutput) -> Context {
    match output {
        NodeOutput::Object(fields) => ctx.merged_with(fields, is_status),
        NodeOutput::Other(_) => ctx.clone(),
    }
}

fn is_status(key: &str) -> bool {
    RESULT_STATUS_KEYS.contains(&key)
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
