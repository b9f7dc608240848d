//! Stored contexts as deltas. A context held by a paused, mapping or waiting
//! node is, almost always, the trigger context with upstream outputs merged
//! in — data the record already holds once, as node outputs. Before a record
//! is written each such context is replaced by its difference from that
//! baseline, and rebuilt when the record is loaded, so a paused run costs
//! about its context plus its outputs rather than twice that.
//!
//! The baseline is a pure function of the record and the graph (the trigger
//! context, then every finished node's output in topological order), so it is
//! the same when the record is written and when it is read back.

use std::collections::BTreeMap;
use std::rc::Rc;

use serde_json::{Map, Value};

use super::executor::RESULT_STATUS_KEYS;
use super::plan::Plan;
use super::record::{Arrival, NodeState, RunRecord};

type Baseline<'a> = BTreeMap<&'a str, &'a Value>;

/// One stored context's difference from the baseline.
struct Delta {
    node: usize,
    slot: Option<usize>,
    changed: Map<String, Value>,
    unset: Vec<String>,
}

fn baseline<'a>(record: &'a RunRecord, plan: &Plan) -> Baseline<'a> {
    let mut base: Baseline = record
        .context
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    for &n in &plan.order {
        if let Some(NodeState::Done {
            output: Value::Object(fields),
        }) = record.nodes.get(n)
        {
            base.extend(
                fields
                    .iter()
                    .filter(|(k, _)| !RESULT_STATUS_KEYS.contains(&k.as_str()))
                    .map(|(k, v)| (k.as_str(), v)),
            );
        }
    }
    base
}

/// Replaces every stored context by its delta from the baseline.
pub fn compact(record: &mut RunRecord, plan: &Plan) {
    if record.contexts_compacted || !holds_contexts(record) {
        return;
    }
    // The baseline borrows the record; deltas are computed first, applied after.
    let mut deltas: Vec<Delta> = Vec::new();
    {
        let base = baseline(record, plan);
        let delta_of = |node: usize, slot: Option<usize>, ctx: &Map<String, Value>| {
            let unset: Vec<String> = base
                .keys()
                .filter(|k| !ctx.contains_key(**k))
                .map(|k| k.to_string())
                .collect();
            let changed: Map<String, Value> = ctx
                .iter()
                .filter(|(k, v)| base.get(k.as_str()) != Some(v))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            Delta {
                node,
                slot,
                changed,
                unset,
            }
        };
        for (n, state) in record.nodes.iter().enumerate() {
            match state {
                NodeState::Paused { ctx, .. } | NodeState::Mapping { ctx, .. } => {
                    deltas.push(delta_of(n, None, ctx));
                }
                NodeState::Waiting { arrivals } => {
                    for (slot, arrival) in arrivals.iter().enumerate() {
                        if let Arrival::Delivered { ctx } = arrival {
                            deltas.push(delta_of(n, Some(slot), ctx));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    for d in deltas {
        replace_ctx(&mut record.nodes[d.node], d.slot, |_| d.changed);
        if !d.unset.is_empty() {
            record.ctx_unset.insert(location(d.node, d.slot), d.unset);
        }
    }
    record.contexts_compacted = true;
}

/// Rebuilds every stored context from its delta; the inverse of `compact`.
pub fn expand(record: &mut RunRecord, plan: &Plan) {
    if !record.contexts_compacted {
        return;
    }
    let base: Map<String, Value> = baseline(record, plan)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let mut unset = std::mem::take(&mut record.ctx_unset);
    for n in 0..record.nodes.len() {
        let slots: Vec<Option<usize>> = match &record.nodes[n] {
            NodeState::Paused { .. } | NodeState::Mapping { .. } => vec![None],
            NodeState::Waiting { arrivals } => (0..arrivals.len()).map(Some).collect(),
            _ => continue,
        };
        for slot in slots {
            let removed = unset.remove(&location(n, slot)).unwrap_or_default();
            replace_ctx(&mut record.nodes[n], slot, |delta| {
                let mut full = base.clone();
                for k in removed {
                    full.remove(&k);
                }
                full.extend(delta.iter().map(|(k, v)| (k.clone(), v.clone())));
                full
            });
        }
    }
    record.contexts_compacted = false;
}

/// Replaces the context stored at `slot` of a node by `f(old)`. Shared
/// arrival contexts are swapped for a new `Rc`, never copied first.
fn replace_ctx(
    state: &mut NodeState,
    slot: Option<usize>,
    f: impl FnOnce(&Map<String, Value>) -> Map<String, Value>,
) {
    match (state, slot) {
        (NodeState::Paused { ctx, .. } | NodeState::Mapping { ctx, .. }, None) => {
            *ctx = f(ctx);
        }
        (NodeState::Waiting { arrivals }, Some(s)) => {
            if let Some(Arrival::Delivered { ctx }) = arrivals.get_mut(s) {
                *ctx = Rc::new(f(ctx));
            }
        }
        _ => {}
    }
}

/// Whether any node keeps a context; finished and never-paused runs do not,
/// and skip building the baseline altogether.
fn holds_contexts(record: &RunRecord) -> bool {
    record.nodes.iter().any(|n| match n {
        NodeState::Paused { .. } | NodeState::Mapping { .. } => true,
        NodeState::Waiting { arrivals } => arrivals
            .iter()
            .any(|a| matches!(a, Arrival::Delivered { .. })),
        _ => false,
    })
}

fn location(n: usize, slot: Option<usize>) -> String {
    match slot {
        Some(s) => format!("{n}.{s}"),
        None => n.to_string(),
    }
}
