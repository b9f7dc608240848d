//! Version 1 of the stored run record, written by the first release: read
//! only, and migrated to today's run on load (the next save writes version
//! 2). Differences it papers over: contexts were deltas only when a flag
//! said so, with removed keys in a side table; FOREACH items were bare slots
//! (an empty slot was always an item paused on a wait, since version 1 only
//! stored settled runs); resumed waits were a separate map; and named
//! components were not pinned, so they resolve through the deployment's
//! current `COMPONENTS` and are pinned from then on.

use std::collections::BTreeMap;
use std::rc::Rc;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::super::error::EngineError;
use super::super::graph::Graph;
use super::super::plan::{Directory, Plan};
use super::super::record::{
    Arrival, ClosedWait, ItemState, Mapping, NodeState, RunRecord, RunStatus, TraceEntry, Wait,
    WaitClosed,
};
use super::super::run::{Run, Settings};
use super::delta::{expand, Baseline, Delta};
use super::v2::plan_for;

pub const VERSION: u32 = 1;

#[derive(Debug, Deserialize)]
pub struct StoredRunV1 {
    pub run_id: String,
    #[serde(default)]
    pub owner: Option<String>,
    pub graph: Graph,
    pub context: Map<String, Value>,
    /// Today's statuses are a superset of version 1's (it had no `cancelled`).
    pub status: RunStatus,
    pub nodes: Vec<NodeV1>,
    #[serde(default)]
    pub waits: BTreeMap<String, Wait>,
    #[serde(default)]
    pub resumed: BTreeMap<String, ResumedV1>,
    pub trace: Vec<TraceEntry>,
    #[serde(default)]
    pub trace_dropped: usize,
    #[serde(default)]
    pub contexts_compacted: bool,
    #[serde(default)]
    pub ctx_unset: BTreeMap<String, Vec<String>>,
    pub created_at: u64,
    pub updated_at: u64,
}

#[derive(Debug, Deserialize)]
pub struct ResumedV1 {
    pub task_id: String,
    pub node_id: String,
    pub at: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeV1 {
    Idle,
    Waiting {
        arrivals: Vec<ArrivalV1>,
    },
    Calling {
        ctx: Map<String, Value>,
    },
    Paused {
        ctx: Map<String, Value>,
        wait_id: String,
    },
    Mapping {
        ctx: Map<String, Value>,
        slots: Vec<Option<Value>>,
        #[allow(dead_code)]
        remaining: usize,
    },
    Done {
        output: Value,
    },
    Skipped,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArrivalV1 {
    Pending,
    Skipped,
    Delivered {
        ctx: Map<String, Value>,
    },
    Items {
        ctx: Map<String, Value>,
        base: Map<String, Value>,
        iterator: String,
        items: Vec<Value>,
        #[serde(default)]
        missing: Option<String>,
    },
}

/// Migrates a version-1 record. `directory` is the deployment's current one.
pub fn into_run(
    old: StoredRunV1,
    directory: &Directory,
    settings: Settings,
) -> Result<Run, EngineError> {
    let plan = plan_for(old.graph, directory)?;
    let status = old.status;
    let nodes = migrate_nodes(
        old.nodes,
        &old.context,
        &plan,
        &old.waits,
        old.contexts_compacted,
        old.ctx_unset,
    )?;
    let closed = old
        .resumed
        .into_iter()
        .map(|(wait_id, r)| {
            let closed = ClosedWait {
                task_id: r.task_id,
                node_id: r.node_id,
                at: r.at,
                how: WaitClosed::Resumed,
                events: Vec::new(),
            };
            (wait_id, closed)
        })
        .collect();
    let record = RunRecord {
        run_id: old.run_id,
        owner: old.owner,
        graph: plan.graph.clone(),
        context: old.context,
        callback_base: None,
        status,
        nodes,
        waits: old.waits,
        closed,
        trace: old.trace,
        trace_dropped: old.trace_dropped,
        segments: 0,
        final_callback: None,
        created_at: old.created_at,
        updated_at: old.updated_at,
    };
    Run::from_record(plan, record, settings)
}

fn migrate_nodes(
    old: Vec<NodeV1>,
    context: &Map<String, Value>,
    plan: &Plan,
    waits: &BTreeMap<String, Wait>,
    compacted: bool,
    mut unset: BTreeMap<String, Vec<String>>,
) -> Result<Vec<NodeState>, EngineError> {
    if old.len() != plan.graph.nodes.len() {
        return Err(EngineError::CorruptRecord(format!(
            "{} node states for {} nodes",
            old.len(),
            plan.graph.nodes.len()
        )));
    }
    let base = if compacted {
        Baseline::new(context, plan, |n| match &old[n] {
            NodeV1::Done { output } => Some(output),
            _ => None,
        })
        .to_map()
    } else {
        Map::new()
    };
    // A stored context is a delta only when the record says so; its removed
    // keys sit in `ctx_unset` under "{node}" or "{node}.{arrival}".
    let mut full = |n: usize, slot: Option<usize>, ctx: Map<String, Value>| {
        if !compacted {
            return ctx;
        }
        let at = match slot {
            Some(s) => format!("{n}.{s}"),
            None => n.to_string(),
        };
        let delta = Delta {
            set: ctx,
            unset: unset.remove(&at).unwrap_or_default(),
        };
        expand(&base, delta)
    };
    let mut nodes = Vec::with_capacity(old.len());
    for (n, state) in old.into_iter().enumerate() {
        nodes.push(match state {
            NodeV1::Idle => NodeState::Idle,
            NodeV1::Skipped => NodeState::Skipped,
            NodeV1::Done { output } => NodeState::Done { output },
            NodeV1::Calling { ctx } => NodeState::Calling {
                ctx: full(n, None, ctx),
            },
            NodeV1::Paused { ctx, wait_id } => NodeState::Paused {
                ctx: full(n, None, ctx),
                wait_id,
            },
            NodeV1::Mapping { ctx, slots, .. } => {
                let node_id = &plan.graph.nodes[n].id;
                let items: Vec<ItemState> = slots
                    .into_iter()
                    .enumerate()
                    .map(|(i, slot)| match slot {
                        Some(output) => Ok(ItemState::Done(output)),
                        None => waits
                            .values()
                            .find(|w| &w.node_id == node_id && w.item == Some(i))
                            .map(|w| ItemState::Paused {
                                wait_id: w.wait_id.clone(),
                            })
                            .ok_or_else(|| {
                                EngineError::CorruptRecord(format!(
                                    "item {i} of node '{node_id}' is neither done nor waiting"
                                ))
                            }),
                    })
                    .collect::<Result<_, _>>()?;
                let remaining = items
                    .iter()
                    .filter(|i| !matches!(i, ItemState::Done(_)))
                    .count();
                NodeState::Mapping(Box::new(Mapping {
                    ctx: full(n, None, ctx),
                    // Every open item is already paused: nothing is built from these.
                    base: Map::new(),
                    iterator: "item".into(),
                    items,
                    remaining,
                }))
            }
            NodeV1::Waiting { arrivals } => NodeState::Waiting {
                arrivals: arrivals
                    .into_iter()
                    .enumerate()
                    .map(|(slot, a)| match a {
                        ArrivalV1::Pending => Arrival::Pending,
                        ArrivalV1::Skipped => Arrival::Skipped,
                        ArrivalV1::Delivered { ctx } => Arrival::Delivered {
                            ctx: Rc::new(full(n, Some(slot), ctx)),
                        },
                        ArrivalV1::Items {
                            ctx,
                            base,
                            iterator,
                            items,
                            missing,
                        } => Arrival::Items {
                            ctx: Rc::new(ctx),
                            base,
                            iterator,
                            items,
                            missing,
                        },
                    })
                    .collect(),
            },
        });
    }
    Ok(nodes)
}
