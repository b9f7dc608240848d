//! Stored contexts and outputs as deltas.
//!
//! A context held by a paused, mapping or waiting node is, almost always,
//! the trigger context with upstream outputs merged in — data the record
//! already holds once, as node outputs. And a node that passes on what it
//! received (an Input or Output node, a pass-through) answers with an
//! object that is, nearly always, the outputs before it merged over the
//! trigger context. Both are stored as their difference from a *baseline*:
//! the trigger context (without the date variables, which do not flow:
//! `core::dates`), then each finished node's output, its status keys aside,
//! merged on in topological order. An output is stored as its difference
//! from the baseline as it stood before it (the *running* baseline) when at
//! most half its keys differ; a context, from the baseline after every
//! finished output. The baseline is a pure function of the record and the
//! graph, so it is the same when the record is written and when it is read.
//!
//! Linear in what changes: the baseline is a `Fields`, and as it takes in
//! an output that only adds to it, it becomes that output (shares its
//! tree). The next output along a chain was built on the same tree, so
//! comparing the two walks only the paths where they differ.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::super::dates;
use super::super::fields::{Change, Fields};
use super::super::plan::Plan;
use super::super::protocol::RESULT_STATUS_KEYS;
use super::super::record::NodeOutput;
use super::super::template::json_size;

/// One stored context or output: the keys that differ from the baseline,
/// and the baseline keys it lacks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub set: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unset: Vec<String>,
}

impl Delta {
    /// The bytes it stands for beyond the baseline: what an output held as
    /// one adds to the run (`run::added`).
    pub fn json_size(&self) -> usize {
        2 + self
            .set
            .iter()
            .map(|(k, v)| k.len() + 4 + json_size(v))
            .sum::<usize>()
    }
}

#[derive(Clone)]
pub struct Baseline(Fields);

impl Baseline {
    /// The trigger context without the date variables. A record from
    /// before, whose contexts held them, reads back with them only where a
    /// context's value differed from the run's — the same values its
    /// readers see through the run's date layer.
    pub fn start(context: &Map<String, Value>) -> Self {
        Self(dates::flowing(context).into())
    }

    /// Merges a finished node's output on top, its status keys aside.
    pub fn absorb(&mut self, output: &NodeOutput) {
        if let NodeOutput::Object(fields) = output {
            self.0 = self
                .0
                .merged_with(fields, |k| RESULT_STATUS_KEYS.contains(&k));
        }
    }

    /// `ctx` as its difference from the baseline.
    pub fn delta(&self, ctx: &Fields) -> Delta {
        delta_of(ctx.changes_from(&self.0))
    }

    /// `fields` as a delta, if at most half its keys' worth differs.
    fn small_delta(&self, fields: &Fields) -> Option<Delta> {
        fields
            .changes_within(&self.0, fields.len() / 2)
            .map(delta_of)
    }

    /// The context or output a delta stands for.
    pub fn expand(&self, delta: Delta) -> Fields {
        let mut full = self.0.clone();
        for k in delta.unset {
            full.remove(&k);
        }
        full.extend(delta.set);
        full
    }
}

/// The delta the changes from a baseline make.
fn delta_of<'a>(changes: impl IntoIterator<Item = Change<'a>>) -> Delta {
    let mut delta = Delta::default();
    for change in changes {
        match change {
            Change::Set(k, v) => {
                delta.set.insert(k.to_string(), v.clone());
            }
            Change::Unset(k) => delta.unset.push(k.to_string()),
        }
    }
    delta
}

/// The outputs worth storing as deltas over the running baseline, by node,
/// and the baseline after them all (what stored contexts are deltas of).
/// `output(n)` is node `n`'s output if it is done.
pub fn output_deltas<'a>(
    context: &Map<String, Value>,
    plan: &Plan,
    output: impl Fn(usize) -> Option<&'a NodeOutput>,
) -> (Vec<Option<Delta>>, Baseline) {
    let mut deltas = vec![None; plan.graph.nodes.len()];
    let mut base = Baseline::start(context);
    for &n in &plan.order {
        let Some(out) = output(n) else {
            continue;
        };
        if let NodeOutput::Object(fields) = out {
            deltas[n] = base.small_delta(fields);
        }
        base.absorb(out);
    }
    (deltas, base)
}

/// Expands the outputs stored as deltas, in topological order over the
/// same running baseline `output_deltas` used. `output(n)` is node `n`'s
/// output if it is stored whole; `delta(n)` takes node `n`'s delta if it is
/// stored as one. Returns the expanded outputs by node, and the baseline
/// after every output.
pub fn expand_outputs<'a>(
    context: &Map<String, Value>,
    plan: &Plan,
    output: impl Fn(usize) -> Option<&'a NodeOutput>,
    mut delta: impl FnMut(usize) -> Option<Delta>,
) -> (Vec<Option<NodeOutput>>, Baseline) {
    let mut expanded: Vec<Option<NodeOutput>> = vec![None; plan.graph.nodes.len()];
    let mut base = Baseline::start(context);
    for &n in &plan.order {
        if let Some(d) = delta(n) {
            let out = NodeOutput::Object(base.expand(d));
            base.absorb(&out);
            expanded[n] = Some(out);
        } else if let Some(out) = output(n) {
            base.absorb(out);
        }
    }
    (expanded, base)
}
