//! Where each node of a run stands, for `GET /runs/{id}`: a status per node,
//! the component it calls, and for a FOREACH target how its items are going.
//!
//! While a run can still move (running, paused, failed and kept for a
//! retry) the node states say where each node is. A completed or cancelled
//! run has released its node states (see `Run::release`), so its nodes are
//! read from the trace instead: the last entry of each node (and item) is
//! where it ended.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;

use super::graph::{EdgeKind, Graph};
use super::protocol::is_failure;
use super::record::{ItemState, NodeState, RunRecord, RunStatus, TraceStatus, WaitClosed};
use super::webhook::shown_url;

/// A node's status as a caller sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Not reached yet (or, in a finished run, never reached).
    Waiting,
    /// Its call is made or due, or some of its FOREACH items are.
    Running,
    /// Waiting for a callback (or a poll): every item still open is paused.
    Paused,
    Succeeded,
    /// It failed: the run failed there, it was cut short when the run
    /// failed, or its failure flowed on along an `ON_FAIL` edge.
    Failed,
    /// Its edges did not fire, or it was superseded by a `join: "any"`.
    Skipped,
    /// It was running or paused when the run was cancelled.
    Cancelled,
}

/// How a FOREACH target's items stand. `total` is the sum of the others.
/// In a cancelled run, items that never started left no trace and are not
/// counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ItemCounts {
    pub total: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub paused: usize,
    /// Called, or due to be called.
    pub running: usize,
    /// Not started yet: held back by `max_concurrency` (or, in a failed
    /// run, left for a retry).
    pub queued: usize,
}

/// One node of the run, in the graph's order.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct NodeProgress {
    pub id: String,
    pub status: NodeStatus,
    /// What the node calls, as the graph names it; an HTTP URL without its
    /// query, fragment or credentials (where tokens sit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// Present on a FOREACH target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<ItemCounts>,
}

/// Every node of the run with where it stands, in the graph's order.
pub fn node_progress(record: &RunRecord) -> Vec<NodeProgress> {
    let graph = &record.graph;
    let index: HashMap<&str, usize> = graph
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    let mut foreach_target = vec![false; graph.nodes.len()];
    for edge in graph.edges.iter().filter(|e| e.kind == EdgeKind::Foreach) {
        if let Some(&i) = index.get(edge.to.as_str()) {
            foreach_target[i] = true;
        }
    }
    let trace = TraceSummary::of(record, &index);
    // A record whose states were released holds `Idle` everywhere.
    let released = match record.status {
        RunStatus::Completed { .. } | RunStatus::Cancelled { .. } => true,
        RunStatus::Failed { .. } => record.nodes.iter().all(|s| *s == NodeState::Idle),
        RunStatus::Running | RunStatus::Paused { .. } => false,
    };
    let cancelled = matches!(record.status, RunStatus::Cancelled { .. });
    graph
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let state = record.nodes.get(i).unwrap_or(&NodeState::Idle);
            let status = if released {
                trace.status_after_release(i, cancelled)
            } else {
                live_status(state, trace.last[i], &record.status)
            };
            let items = foreach_target[i].then(|| {
                if released {
                    trace.items[i]
                } else {
                    live_items(state)
                }
            });
            NodeProgress {
                id: node.id.clone(),
                status,
                component: node.component_id.as_deref().map(shown_component),
                items,
            }
        })
        .collect()
}

/// One node of the run with where it stands, by its id.
pub fn one_node(record: &RunRecord, node_id: &str) -> Option<(usize, NodeProgress)> {
    let i = record.graph.nodes.iter().position(|n| n.id == node_id)?;
    node_progress(record).into_iter().nth(i).map(|p| (i, p))
}

/// The run's graph as callers are shown it: component URLs as in
/// `NodeProgress::component`, the rest as the run holds it.
pub fn shown_graph(graph: &Graph) -> Graph {
    let mut shown = graph.clone();
    for node in &mut shown.nodes {
        if let Some(id) = &mut node.component_id {
            *id = shown_component(id);
        }
    }
    shown
}

/// A component as shown: names and `workflow://` references as written; an
/// HTTP URL as final callback URLs are shown (`shown_url`), and without a
/// user or password, which would be a credential in plain sight.
pub fn shown_component(id: &str) -> String {
    match url::Url::parse(id) {
        Ok(mut url) if matches!(url.scheme(), "http" | "https") => {
            // Only fails for URLs that cannot have credentials at all.
            let _ = url.set_username("");
            let _ = url.set_password(None);
            shown_url(url.as_str())
        }
        _ => id.to_string(),
    }
}

/// A node whose state the run still holds.
fn live_status(state: &NodeState, last: Option<TraceStatus>, run: &RunStatus) -> NodeStatus {
    match state {
        NodeState::Idle | NodeState::Waiting { .. } => NodeStatus::Waiting,
        NodeState::Calling { .. } => NodeStatus::Running,
        NodeState::Paused { .. } => NodeStatus::Paused,
        // A failure that flowed on along `ON_FAIL` is kept as the node's
        // output; its trace entry tells it from a success.
        NodeState::Done { .. } if last == Some(TraceStatus::Failed) => NodeStatus::Failed,
        NodeState::Done { .. } => NodeStatus::Succeeded,
        NodeState::Skipped => NodeStatus::Skipped,
        NodeState::Failed { .. } => NodeStatus::Failed,
        // A failed run keeps its FOREACH target's mapping for a retry.
        NodeState::Mapping(_) if matches!(run, RunStatus::Failed { .. }) => NodeStatus::Failed,
        NodeState::Mapping(m) => {
            let calling = m.items.iter().any(|i| matches!(i, ItemState::Todo(_)));
            let paused = m
                .items
                .iter()
                .any(|i| matches!(i, ItemState::Paused { .. }));
            if paused && !calling {
                NodeStatus::Paused
            } else {
                NodeStatus::Running
            }
        }
    }
}

/// Item counts of a FOREACH target whose state the run still holds.
fn live_items(state: &NodeState) -> ItemCounts {
    let mut counts = ItemCounts::default();
    match state {
        NodeState::Mapping(m) => {
            for item in &m.items {
                match item {
                    ItemState::Held(_) => counts.queued += 1,
                    ItemState::Todo(_) => counts.running += 1,
                    ItemState::Paused { .. } => counts.paused += 1,
                    ItemState::Done(v) if is_failure(v) => counts.failed += 1,
                    ItemState::Done(_) => counts.succeeded += 1,
                }
            }
        }
        // Finished: its output counts them (`count`, `failed`).
        NodeState::Done { output } => {
            let field = |k: &str| output.get(k).and_then(Value::as_u64).unwrap_or(0) as usize;
            counts.failed = field("failed");
            counts.succeeded = field("count").saturating_sub(counts.failed);
        }
        _ => {}
    }
    counts.total =
        counts.succeeded + counts.failed + counts.paused + counts.running + counts.queued;
    counts
}

/// What the trace says of each node, read once: the status of its last
/// entry, its items' counts by their last entries, and whether a wait of
/// it was closed by a cancel.
struct TraceSummary {
    last: Vec<Option<TraceStatus>>,
    items: Vec<ItemCounts>,
    cancelled_wait: Vec<bool>,
}

impl TraceSummary {
    fn of(record: &RunRecord, index: &HashMap<&str, usize>) -> Self {
        let n = record.graph.nodes.len();
        let mut last = vec![None; n];
        let mut item_last: HashMap<(usize, usize), TraceStatus> = HashMap::new();
        for entry in &record.trace {
            let Some(&i) = index.get(entry.node_id.as_str()) else {
                continue;
            };
            match entry.item {
                None => last[i] = Some(entry.status),
                Some(item) => {
                    item_last.insert((i, item), entry.status);
                }
            }
        }
        let mut items = vec![ItemCounts::default(); n];
        for ((i, _), status) in item_last {
            let counts = &mut items[i];
            match status {
                TraceStatus::Succeeded => counts.succeeded += 1,
                TraceStatus::Failed => counts.failed += 1,
                TraceStatus::Paused => counts.paused += 1,
                // Items that never ran are not counted.
                TraceStatus::Skipped | TraceStatus::Superseded => continue,
            }
            counts.total += 1;
        }
        let mut cancelled_wait = vec![false; n];
        for closed in record.closed.values() {
            if closed.how == WaitClosed::Cancelled {
                if let Some(&i) = index.get(closed.node_id.as_str()) {
                    cancelled_wait[i] = true;
                }
            }
        }
        Self {
            last,
            items,
            cancelled_wait,
        }
    }

    /// A node of a run whose states were released: where its last entry
    /// left it; in a cancelled run, what was open when it was cancelled
    /// reads `cancelled`.
    fn status_after_release(&self, i: usize, cancelled: bool) -> NodeStatus {
        let open_at_cancel = cancelled
            && (self.cancelled_wait[i]
                || (self.last[i].is_none() && self.items[i].total > 0)
                || self.last[i] == Some(TraceStatus::Paused));
        if open_at_cancel {
            return NodeStatus::Cancelled;
        }
        match self.last[i] {
            None => NodeStatus::Waiting,
            Some(TraceStatus::Succeeded) => NodeStatus::Succeeded,
            Some(TraceStatus::Failed) => NodeStatus::Failed,
            Some(TraceStatus::Paused) => NodeStatus::Paused,
            Some(TraceStatus::Skipped | TraceStatus::Superseded) => NodeStatus::Skipped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::record::TraceEntry;
    use serde_json::json;

    fn graph(value: Value) -> Graph {
        serde_json::from_value(value).unwrap()
    }

    fn record(graph: Graph, status: RunStatus, nodes: Vec<NodeState>) -> RunRecord {
        RunRecord {
            run_id: "r".into(),
            owner: None,
            graph,
            context: Default::default(),
            callback_base: None,
            status,
            nodes,
            waits: Default::default(),
            closed: Default::default(),
            early: Default::default(),
            trace: Vec::new(),
            trace_dropped: 0,
            segments: 1,
            final_callback: None,
            workflow: None,
            attempt: 0,
            depth: 0,
            root: None,
            created_at: 0,
            updated_at: 0,
            revision: 0,
        }
    }

    fn entry(node: &str, item: Option<usize>, status: TraceStatus) -> TraceEntry {
        TraceEntry {
            node_id: node.into(),
            item,
            status,
            at: 1,
            duration_ms: None,
            task_id: None,
            resumed: false,
            error: None,
            error_code: None,
            warnings: Vec::new(),
            attempt: 0,
        }
    }

    fn chain() -> Graph {
        graph(json!({
            "nodes": [
                {"id": "in", "type": "Input"},
                {"id": "work", "type": "Component",
                 "componentId": "https://bot:pw@svc.example/run?token=abc#x"},
                {"id": "named", "type": "Component", "componentId": "comp_uppercase"},
                {"id": "out", "type": "Output"}
            ],
            "edges": [
                {"from": "in", "to": "work", "type": "PIPE"},
                {"from": "work", "to": "named", "type": "ON_SUCCESS"},
                {"from": "named", "to": "out", "type": "PIPE"}
            ]
        }))
    }

    fn statuses(progress: &[NodeProgress]) -> Vec<NodeStatus> {
        progress.iter().map(|p| p.status).collect()
    }

    #[test]
    fn a_paused_run_shows_where_it_waits_and_what_is_not_reached() {
        let nodes = vec![
            NodeState::Done {
                output: json!({}).into(),
            },
            NodeState::Paused {
                ctx: Default::default(),
                wait_id: "n1".into(),
            },
            NodeState::Idle,
            NodeState::Waiting {
                arrivals: Vec::new(),
            },
        ];
        let run = record(chain(), RunStatus::Paused { since: 1 }, nodes);
        let progress = node_progress(&run);
        use NodeStatus::*;
        assert_eq!(statuses(&progress), [Succeeded, Paused, Waiting, Waiting]);
        assert_eq!(progress[0].component, None);
        // The URL's query, fragment and credentials are not shown; a name is.
        assert_eq!(
            progress[1].component.as_deref(),
            Some("https://svc.example/run")
        );
        assert_eq!(progress[2].component.as_deref(), Some("comp_uppercase"));
        assert!(progress.iter().all(|p| p.items.is_none()));
        let shown = shown_graph(&run.graph);
        assert_eq!(
            shown.nodes[1].component_id.as_deref(),
            Some("https://svc.example/run")
        );
        assert_eq!(shown.edges, run.graph.edges);
    }

    #[test]
    fn a_failure_routed_on_reads_failed_and_a_failed_run_marks_its_node() {
        let nodes = vec![
            NodeState::Done {
                output: json!({}).into(),
            },
            NodeState::Done {
                output: json!({"success": false, "error": "x"}).into(),
            },
            NodeState::Failed {
                ctx: Default::default(),
            },
            NodeState::Skipped,
        ];
        let mut run = record(
            chain(),
            RunStatus::Failed {
                error: crate::core::record::RunError {
                    code: "c".into(),
                    message: "m".into(),
                    node_id: Some("named".into()),
                },
                finished_at: 2,
            },
            nodes,
        );
        run.trace = vec![
            entry("in", None, TraceStatus::Succeeded),
            entry("work", None, TraceStatus::Failed),
            entry("named", None, TraceStatus::Failed),
        ];
        use NodeStatus::*;
        assert_eq!(
            statuses(&node_progress(&run)),
            [Succeeded, Failed, Failed, Skipped]
        );
    }

    #[test]
    fn a_completed_run_is_read_from_its_trace() {
        let mut run = record(
            chain(),
            RunStatus::Completed {
                output: json!({}),
                finished_at: 3,
            },
            vec![NodeState::Idle; 4],
        );
        run.trace = vec![
            entry("in", None, TraceStatus::Succeeded),
            entry("work", None, TraceStatus::Paused),
            entry("work", None, TraceStatus::Succeeded),
            entry("named", None, TraceStatus::Superseded),
            entry("out", None, TraceStatus::Skipped),
        ];
        use NodeStatus::*;
        assert_eq!(
            statuses(&node_progress(&run)),
            [Succeeded, Succeeded, Skipped, Skipped]
        );
    }

    #[test]
    fn a_cancelled_run_marks_what_was_open() {
        let mut run = record(
            chain(),
            RunStatus::Cancelled { finished_at: 3 },
            vec![NodeState::Idle; 4],
        );
        run.trace = vec![
            entry("in", None, TraceStatus::Succeeded),
            entry("work", None, TraceStatus::Paused),
        ];
        use NodeStatus::*;
        assert_eq!(
            statuses(&node_progress(&run)),
            [Succeeded, Cancelled, Waiting, Waiting]
        );
    }

    fn fan_out() -> Graph {
        graph(json!({
            "nodes": [
                {"id": "in", "type": "Input"},
                {"id": "each", "type": "Component", "componentId": "https://svc.example/item"},
                {"id": "out", "type": "Output"}
            ],
            "edges": [
                {"from": "in", "to": "each", "type": "FOREACH", "max_concurrency": 2},
                {"from": "each", "to": "out", "type": "PIPE"}
            ]
        }))
    }

    #[test]
    fn a_foreach_target_counts_its_items() {
        let mapping = crate::core::record::Mapping {
            ctx: Default::default(),
            base: Default::default(),
            iterator: "item".into(),
            items: vec![
                ItemState::Done(json!({"ok": 1})),
                ItemState::Done(json!({"success": false, "error": "no"})),
                ItemState::Paused {
                    wait_id: "n1-2".into(),
                },
                ItemState::Todo(json!(3)),
                ItemState::Held(json!(4)),
                ItemState::Held(json!(5)),
            ],
            remaining: 4,
            next_held: 4,
        };
        let nodes = vec![
            NodeState::Done {
                output: json!({}).into(),
            },
            NodeState::Mapping(Box::new(mapping.clone())),
            NodeState::Idle,
        ];
        let run = record(fan_out(), RunStatus::Running, nodes);
        let progress = node_progress(&run);
        assert_eq!(progress[1].status, NodeStatus::Running);
        assert_eq!(
            progress[1].items,
            Some(ItemCounts {
                total: 6,
                succeeded: 1,
                failed: 1,
                paused: 1,
                running: 1,
                queued: 2,
            })
        );
        assert_eq!(progress[2].items, None);
        // With only paused items open, the node is paused.
        let mut waiting = mapping;
        waiting.items.truncate(3);
        let nodes = vec![
            NodeState::Done {
                output: json!({}).into(),
            },
            NodeState::Mapping(Box::new(waiting)),
            NodeState::Idle,
        ];
        let run = record(fan_out(), RunStatus::Paused { since: 1 }, nodes);
        assert_eq!(node_progress(&run)[1].status, NodeStatus::Paused);
    }

    #[test]
    fn a_finished_foreach_counts_from_its_output_or_its_trace() {
        let nodes = vec![
            NodeState::Done {
                output: json!({}).into(),
            },
            NodeState::Done {
                output: json!({"results": [], "count": 5, "failed": 1}).into(),
            },
            NodeState::Calling {
                ctx: Default::default(),
            },
        ];
        let run = record(fan_out(), RunStatus::Running, nodes);
        let items = node_progress(&run)[1].items.unwrap();
        assert_eq!((items.total, items.succeeded, items.failed), (5, 4, 1));

        let mut run = record(
            fan_out(),
            RunStatus::Completed {
                output: json!({}),
                finished_at: 9,
            },
            vec![NodeState::Idle; 3],
        );
        run.trace = vec![
            entry("in", None, TraceStatus::Succeeded),
            entry("each", Some(0), TraceStatus::Paused),
            entry("each", Some(1), TraceStatus::Failed),
            entry("each", Some(0), TraceStatus::Succeeded),
            entry("each", Some(2), TraceStatus::Succeeded),
            entry("each", None, TraceStatus::Succeeded),
            entry("out", None, TraceStatus::Succeeded),
        ];
        let progress = node_progress(&run);
        assert_eq!(progress[1].status, NodeStatus::Succeeded);
        let items = progress[1].items.unwrap();
        assert_eq!((items.total, items.succeeded, items.failed), (3, 2, 1));
    }

    #[test]
    fn the_view_serialises_in_snake_case_and_leaves_out_what_is_absent() {
        let run = record(chain(), RunStatus::Running, vec![NodeState::Idle; 4]);
        let shown = serde_json::to_value(node_progress(&run)).unwrap();
        assert_eq!(shown[0], json!({"id": "in", "status": "waiting"}));
        let counts = serde_json::to_value(ItemCounts::default()).unwrap();
        assert_eq!(
            counts,
            json!({"total": 0, "succeeded": 0, "failed": 0, "paused": 0, "running": 0, "queued": 0})
        );
    }
}
