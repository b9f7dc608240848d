//! Version 3 of the stored run record: the shape written to KV today.
//! Contexts are always deltas from the record's own baseline (no mode flag),
//! nothing is shared (`Rc` is an in-memory concern), item counts are derived
//! rather than stored, and named components are pinned to the URLs they had
//! when the run started. Every enum is externally tagged (`"running"`,
//! `{"paused": {"since": 5}}`), and `revision` counts the record's writes.
//! Big values (graph, outputs, trace) are borrowed when writing, so saving a
//! run does not copy it.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::super::error::EngineError;
use super::super::graph::Graph;
use super::super::plan::{build_plan, Directory, GraphLimits, Plan};
use super::super::record::EarlyCallback;
use super::super::record::{
    Arrival, ClosedWait, FinalCallback, ItemState, Mapping, NodeOutput, NodeState, RunRecord,
    RunStatus, TraceEntry, Wait,
};
use super::super::run::{Run, Settings};
use super::delta::{self, Delta};

/// Version 4 is version 3 with outputs that may be stored as deltas
/// (`StoredNode::DoneDelta`); this module reads both, and writes 4.
pub const VERSION: u32 = 4;

#[derive(Debug, Serialize, Deserialize)]
pub struct StoredRun<'a> {
    pub version: u32,
    /// Writes of the record so far (`RunRecord::revision`); 0 when read
    /// from an earlier version.
    #[serde(default)]
    pub revision: u64,
    pub run_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    pub graph: Cow<'a, Graph>,
    pub context: Cow<'a, Map<String, Value>>,
    /// Named components as they resolved when the run started.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub components: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_base: Option<String>,
    pub status: Cow<'a, RunStatus>,
    pub nodes: Vec<StoredNode<'a>>,
    #[serde(default)]
    pub waits: Cow<'a, BTreeMap<String, Wait>>,
    #[serde(default)]
    pub closed: Cow<'a, BTreeMap<String, ClosedWait>>,
    #[serde(default, skip_serializing_if = "no_early")]
    pub early: Cow<'a, BTreeMap<String, EarlyCallback>>,
    pub trace: Cow<'a, [TraceEntry]>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub trace_dropped: usize,
    #[serde(default)]
    pub segments: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_callback: Cow<'a, Option<FinalCallback>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub depth: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    pub created_at: u64,
    pub updated_at: u64,
}

// serde hands `skip_serializing_if` the field as it is: a `&Cow`.
#[allow(clippy::ptr_arg)]
fn no_early(early: &Cow<'_, BTreeMap<String, EarlyCallback>>) -> bool {
    early.is_empty()
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoredNode<'a> {
    Idle,
    Waiting {
        arrivals: Vec<StoredArrival<'a>>,
    },
    Calling {
        ctx: Delta,
    },
    Paused {
        ctx: Delta,
        wait_id: String,
    },
    Mapping {
        ctx: Delta,
        base: Delta,
        iterator: String,
        items: Vec<StoredItem<'a>>,
    },
    Done {
        output: Cow<'a, Value>,
    },
    /// Done, its output stored as a delta over the outputs before it
    /// (`delta::output_deltas`; version 4).
    DoneDelta {
        output: Delta,
    },
    Skipped,
    Failed {
        ctx: Delta,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoredArrival<'a> {
    Pending,
    Skipped,
    Delivered {
        ctx: Delta,
    },
    Items {
        ctx: Delta,
        base: Delta,
        iterator: String,
        items: Cow<'a, [Value]>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        missing: Option<String>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoredItem<'a> {
    Todo { item: Cow<'a, Value> },
    Paused { wait_id: String },
    Done { output: Cow<'a, Value> },
    Held { item: Cow<'a, Value> },
}

/// The stored form of a run, borrowing from it.
pub fn from_run(run: &Run) -> StoredRun<'_> {
    let record = &run.record;
    let done = |n: usize| match &record.nodes[n] {
        NodeState::Done { output } => Some(output),
        _ => None,
    };
    let (mut output_deltas, base) = delta::output_deltas(&record.context, &run.plan, done);
    let nodes = record
        .nodes
        .iter()
        .enumerate()
        .map(|(n, state)| match state {
            NodeState::Idle => StoredNode::Idle,
            NodeState::Skipped => StoredNode::Skipped,
            NodeState::Done { output } => match output_deltas.get_mut(n).and_then(Option::take) {
                Some(delta) => StoredNode::DoneDelta { output: delta },
                None => StoredNode::Done {
                    output: match output {
                        NodeOutput::Other(v) => Cow::Borrowed(v),
                        NodeOutput::Object(_) => Cow::Owned(output.to_value()),
                    },
                },
            },
            NodeState::Calling { ctx } => StoredNode::Calling {
                ctx: base.delta(ctx),
            },
            NodeState::Failed { ctx } => StoredNode::Failed {
                ctx: base.delta(ctx),
            },
            NodeState::Paused { ctx, wait_id } => StoredNode::Paused {
                ctx: base.delta(ctx),
                wait_id: wait_id.clone(),
            },
            NodeState::Mapping(m) => StoredNode::Mapping {
                ctx: base.delta(&m.ctx),
                base: base.delta(&m.base),
                iterator: m.iterator.clone(),
                items: m
                    .items
                    .iter()
                    .map(|i| match i {
                        ItemState::Todo(item) => StoredItem::Todo {
                            item: Cow::Borrowed(item),
                        },
                        ItemState::Paused { wait_id } => StoredItem::Paused {
                            wait_id: wait_id.clone(),
                        },
                        ItemState::Done(output) => StoredItem::Done {
                            output: Cow::Borrowed(output),
                        },
                        ItemState::Held(item) => StoredItem::Held {
                            item: Cow::Borrowed(item),
                        },
                    })
                    .collect(),
            },
            NodeState::Waiting { arrivals } => StoredNode::Waiting {
                arrivals: arrivals
                    .iter()
                    .map(|a| match a {
                        Arrival::Pending => StoredArrival::Pending,
                        Arrival::Skipped => StoredArrival::Skipped,
                        Arrival::Delivered { ctx } => StoredArrival::Delivered {
                            ctx: base.delta(ctx),
                        },
                        Arrival::Items {
                            ctx,
                            base: item_base,
                            iterator,
                            items,
                            missing,
                        } => StoredArrival::Items {
                            ctx: base.delta(ctx),
                            base: base.delta(item_base),
                            iterator: iterator.clone(),
                            items: Cow::Borrowed(items),
                            missing: missing.clone(),
                        },
                    })
                    .collect(),
            },
        })
        .collect();
    StoredRun {
        version: VERSION,
        revision: record.revision,
        run_id: record.run_id.clone(),
        owner: record.owner.clone(),
        graph: Cow::Borrowed(&record.graph),
        context: Cow::Borrowed(&record.context),
        components: run.plan.pinned_components(),
        callback_base: record.callback_base.clone(),
        status: Cow::Borrowed(&record.status),
        nodes,
        waits: Cow::Borrowed(&record.waits),
        closed: Cow::Borrowed(&record.closed),
        early: Cow::Borrowed(&record.early),
        trace: Cow::Borrowed(&record.trace),
        trace_dropped: record.trace_dropped,
        segments: record.segments,
        final_callback: Cow::Borrowed(&record.final_callback),
        workflow: record.workflow.clone(),
        attempt: record.attempt,
        depth: record.depth,
        root: record.root.clone(),
        created_at: record.created_at,
        updated_at: record.updated_at,
    }
}

/// Rebuilds a run from its stored form. The plan comes from the record's own
/// graph and pinned components, never from the deployment's current ones.
pub fn into_run(stored: StoredRun<'_>, settings: Settings) -> Result<Run, EngineError> {
    let directory = Directory::new(stored.components.clone());
    let plan = plan_for(stored.graph.into_owned(), &directory)?;
    let context = stored.context.into_owned();
    let nodes = expand_nodes(stored.nodes, &context, &plan)?;
    let record = RunRecord {
        run_id: stored.run_id,
        owner: stored.owner,
        graph: plan.graph.clone(),
        context,
        callback_base: stored.callback_base,
        status: stored.status.into_owned(),
        nodes,
        waits: stored.waits.into_owned(),
        closed: stored.closed.into_owned(),
        early: stored.early.into_owned(),
        trace: stored.trace.into_owned(),
        trace_dropped: stored.trace_dropped,
        segments: stored.segments,
        final_callback: stored.final_callback.into_owned(),
        workflow: stored.workflow,
        attempt: stored.attempt,
        depth: stored.depth,
        root: stored.root,
        created_at: stored.created_at,
        updated_at: stored.updated_at,
        revision: stored.revision,
    };
    Run::from_record(plan, record, settings)
}

pub(super) fn plan_for(graph: Graph, directory: &Directory) -> Result<Plan, EngineError> {
    // Limits may have been lowered since the run was accepted; it stays loadable.
    build_plan(graph, directory, GraphLimits::unbounded())
        .map_err(|e| EngineError::CorruptRecord(e.to_string()))
}

fn expand_nodes(
    stored: Vec<StoredNode<'_>>,
    context: &Map<String, Value>,
    plan: &Plan,
) -> Result<Vec<NodeState>, EngineError> {
    if stored.len() != plan.graph.nodes.len() {
        return Err(EngineError::CorruptRecord(format!(
            "{} node states for {} nodes",
            stored.len(),
            plan.graph.nodes.len()
        )));
    }
    let mut stored = stored;
    // Outputs first, in topological order: those stored as deltas are
    // expanded over the outputs before them, and the contexts' baseline is
    // the baseline after them all.
    let mut deltas: Vec<Option<Delta>> = Vec::with_capacity(stored.len());
    let mut outputs: Vec<Option<NodeOutput>> = Vec::with_capacity(stored.len());
    for state in &mut stored {
        let (delta, output) = match state {
            StoredNode::DoneDelta { output } => (Some(std::mem::take(output)), None),
            StoredNode::Done { output } => (
                None,
                Some(NodeOutput::from(std::mem::take(output).into_owned())),
            ),
            _ => (None, None),
        };
        deltas.push(delta);
        outputs.push(output);
    }
    let (expanded, base) =
        delta::expand_outputs(context, plan, |n| outputs[n].as_ref(), |n| deltas[n].take());
    for (slot, out) in outputs.iter_mut().zip(expanded) {
        if out.is_some() {
            *slot = out;
        }
    }
    let ctx = |d: Delta| base.expand(d);
    let nodes = stored
        .into_iter()
        .zip(outputs)
        .map(|(state, output)| match state {
            StoredNode::Idle => NodeState::Idle,
            // Read above.
            StoredNode::Done { .. } | StoredNode::DoneDelta { .. } => match output {
                Some(output) => NodeState::Done { output },
                None => NodeState::Idle,
            },
            StoredNode::Skipped => NodeState::Skipped,
            StoredNode::Calling { ctx: c } => NodeState::Calling { ctx: ctx(c) },
            StoredNode::Failed { ctx: c } => NodeState::Failed { ctx: ctx(c) },
            StoredNode::Paused { ctx: c, wait_id } => NodeState::Paused {
                ctx: ctx(c),
                wait_id,
            },
            StoredNode::Mapping {
                ctx: c,
                base: item_base,
                iterator,
                items,
            } => {
                let items: Vec<ItemState> = items
                    .into_iter()
                    .map(|i| match i {
                        StoredItem::Todo { item } => ItemState::Todo(item.into_owned()),
                        StoredItem::Paused { wait_id } => ItemState::Paused { wait_id },
                        StoredItem::Done { output } => ItemState::Done(output.into_owned()),
                        StoredItem::Held { item } => ItemState::Held(item.into_owned()),
                    })
                    .collect();
                let remaining = items
                    .iter()
                    .filter(|i| !matches!(i, ItemState::Done(_)))
                    .count();
                NodeState::Mapping(Box::new(Mapping {
                    ctx: ctx(c),
                    base: ctx(item_base),
                    iterator,
                    items,
                    remaining,
                    next_held: 0,
                }))
            }
            StoredNode::Waiting { arrivals } => NodeState::Waiting {
                arrivals: arrivals
                    .into_iter()
                    .map(|a| match a {
                        StoredArrival::Pending => Arrival::Pending,
                        StoredArrival::Skipped => Arrival::Skipped,
                        StoredArrival::Delivered { ctx: c } => Arrival::Delivered { ctx: ctx(c) },
                        StoredArrival::Items {
                            ctx: c,
                            base: item_base,
                            iterator,
                            items,
                            missing,
                        } => Arrival::Items {
                            ctx: ctx(c),
                            base: ctx(item_base),
                            iterator,
                            items: items.into_owned(),
                            missing,
                        },
                    })
                    .collect(),
            },
        })
        .collect();
    Ok(nodes)
}
