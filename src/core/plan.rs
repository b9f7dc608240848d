//! Validation, and the index the executor walks: adjacency by node index and
//! a topological order computed iteratively (no recursion on graph size).

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde_json::Value;

use super::builtins::Builtin;
use super::condition::check as check_condition;
use super::error::{EngineError, Problem};
use super::graph::{parse_graph, EdgeKind, Graph, Join, NodeKind};
use super::listing::valid_workflow_name;

/// At most this many problems are listed; the rest are counted.
const MAX_PROBLEMS: usize = 100;

/// How a component id resolves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComponentRef {
    Builtin(Builtin),
    Http(String),
    /// `poll_task`: polls a status URL from alarms until the job is done.
    Poll,
}

/// Component ids naming a stored workflow: `workflow://{name}`.
pub const SUBFLOW_SCHEME: &str = "workflow://";

/// The component id of the built-in poller.
pub const POLL_TASK: &str = "poll_task";

/// Named components configured for the deployment (name → URL).
#[derive(Debug, Clone, Default)]
pub struct Directory {
    named: BTreeMap<String, String>,
}

impl Directory {
    pub fn new(named: BTreeMap<String, String>) -> Self {
        Self { named }
    }

    pub fn resolve(&self, component_id: &str) -> Option<ComponentRef> {
        if let Some(b) = Builtin::from_id(component_id) {
            return Some(ComponentRef::Builtin(b));
        }
        if component_id == POLL_TASK {
            return Some(ComponentRef::Poll);
        }
        // A sub-workflow is called through the driver like a remote
        // component: the adapter starts the stored workflow as a child run.
        let subflow = component_id
            .strip_prefix(SUBFLOW_SCHEME)
            .is_some_and(valid_workflow_name);
        if is_http_url(component_id) || subflow {
            return Some(ComponentRef::Http(component_id.to_string()));
        }
        self.named
            .get(component_id)
            .map(|url| ComponentRef::Http(url.clone()))
    }
}

fn is_http_url(s: &str) -> bool {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    matches!(rest, Some(r) if !r.is_empty() && !r.starts_with('/'))
}

/// Size limits applied during validation.
#[derive(Debug, Clone, Copy)]
pub struct GraphLimits {
    pub max_nodes: usize,
    pub max_edges: usize,
}

impl GraphLimits {
    /// For records already accepted once: limits may have been lowered since,
    /// and a stored run must stay resumable.
    pub fn unbounded() -> Self {
        Self {
            max_nodes: usize::MAX,
            max_edges: usize::MAX,
        }
    }
}

impl Default for GraphLimits {
    fn default() -> Self {
        Self {
            max_nodes: 20_000,
            max_edges: 40_000,
        }
    }
}

/// A validated graph plus the indexes the executor needs.
#[derive(Debug, Clone)]
pub struct Plan {
    pub graph: Graph,
    pub components: Vec<Option<ComponentRef>>,
    /// Edge indices leaving each node, in graph order.
    pub outgoing: Vec<Vec<usize>>,
    /// Edge indices entering each node, in graph order.
    pub incoming: Vec<Vec<usize>>,
    pub edge_to: Vec<usize>,
    /// Position of each edge among its target's incoming edges.
    pub edge_slot: Vec<usize>,
    /// Nodes in a topological order.
    pub order: Vec<usize>,
    index: HashMap<String, usize>,
}

impl Plan {
    pub fn node_index(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// Named components as they resolved for this run (`componentId` → URL).
    /// Stored with the run, so a change to `COMPONENTS` neither breaks nor
    /// redirects a run that has already started.
    pub fn pinned_components(&self) -> BTreeMap<String, String> {
        self.graph
            .nodes
            .iter()
            .zip(&self.components)
            .filter_map(|(node, resolved)| match (&node.component_id, resolved) {
                (Some(cid), Some(ComponentRef::Http(url))) if cid != url => {
                    Some((cid.clone(), url.clone()))
                }
                _ => None,
            })
            .collect()
    }

    /// The nodes whose every path leads into `join` (and nowhere else):
    /// once a `join: "any"` node has fired, their work is superseded. Walks
    /// the nodes before `join` in topological order backwards, so each
    /// node's successors are decided before it; O(nodes + edges), computed
    /// only when such a node fires.
    pub fn feeding_only(&self, join: usize) -> Vec<usize> {
        let mut only = vec![false; self.graph.nodes.len()];
        let Some(at) = self.order.iter().position(|&n| n == join) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        for &u in self.order[..at].iter().rev() {
            let out = &self.outgoing[u];
            let leads_only_into = !out.is_empty()
                && out.iter().all(|&e| {
                    let t = self.edge_to[e];
                    t == join || only[t]
                });
            if leads_only_into {
                only[u] = true;
                found.push(u);
            }
        }
        found
    }

    pub fn starts(&self) -> impl Iterator<Item = usize> + '_ {
        self.order
            .iter()
            .copied()
            .filter(|&n| self.incoming[n].is_empty())
    }
}

/// Parses and validates a graph given as JSON.
pub fn plan_from_json(
    value: &Value,
    directory: &Directory,
    limits: GraphLimits,
) -> Result<Plan, EngineError> {
    let mut problems = Vec::new();
    let Some(graph) = parse_graph(value, &mut problems) else {
        return Err(EngineError::InvalidGraph(problems));
    };
    // Structural checks run even after shape problems, so one answer lists everything.
    match (build_plan(graph, directory, limits), problems.is_empty()) {
        (Ok(plan), true) => Ok(plan),
        (Ok(_), false) => Err(EngineError::InvalidGraph(cap(problems))),
        (Err(EngineError::InvalidGraph(more)), _) => {
            problems.extend(more);
            Err(EngineError::InvalidGraph(cap(problems)))
        }
        (Err(other), _) => Err(other),
    }
}

/// Validates an already-parsed graph: ids, edges, components, cycles.
pub fn build_plan(
    graph: Graph,
    directory: &Directory,
    limits: GraphLimits,
) -> Result<Plan, EngineError> {
    let mut problems = Vec::new();
    if graph.nodes.is_empty() {
        problems.push(Problem::new(
            "graph.nodes",
            "must contain at least one node",
        ));
    }
    if graph.nodes.len() > limits.max_nodes {
        problems.push(Problem::new(
            "graph.nodes",
            format!(
                "has {} nodes; the limit is {}",
                graph.nodes.len(),
                limits.max_nodes
            ),
        ));
    }
    if graph.edges.len() > limits.max_edges {
        problems.push(Problem::new(
            "graph.edges",
            format!(
                "has {} edges; the limit is {}",
                graph.edges.len(),
                limits.max_edges
            ),
        ));
    }
    if !problems.is_empty() {
        return Err(EngineError::InvalidGraph(problems));
    }

    let mut index = HashMap::with_capacity(graph.nodes.len());
    let mut duplicates: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, node) in graph.nodes.iter().enumerate() {
        if index.insert(node.id.clone(), i).is_some() {
            *duplicates.entry(node.id.as_str()).or_insert(1) += 1;
        }
    }
    for (id, count) in duplicates {
        problems.push(Problem::new(
            format!("nodes[id={id}]"),
            format!("duplicate node id (used {count} times)"),
        ));
    }

    let mut components = Vec::with_capacity(graph.nodes.len());
    for (i, node) in graph.nodes.iter().enumerate() {
        let resolved = match (&node.kind, &node.component_id) {
            (NodeKind::Component, None) => {
                problems.push(Problem::new(
                    format!("nodes[{i}]"),
                    format!("Component node '{}' has no componentId", node.id),
                ));
                None
            }
            (_, Some(cid)) => {
                let r = directory.resolve(cid);
                if r.is_none() && node.kind == NodeKind::Component {
                    problems.push(Problem::new(
                        format!("nodes[{i}].componentId"),
                        format!(
                            "unknown component '{cid}': not a built-in, not an http(s) URL, \
                             and not in the configured COMPONENTS map"
                        ),
                    ));
                }
                r
            }
            (_, None) => None,
        };
        if resolved == Some(ComponentRef::Poll) {
            for key in ["done_when", "failed_when"] {
                match node.data.get(key) {
                    None | Some(Value::Null) => {}
                    Some(Value::String(c)) => {
                        if let Err(why) = check_condition(c) {
                            problems.push(Problem::new(format!("nodes[{i}].data.{key}"), why));
                        }
                    }
                    Some(_) => problems.push(Problem::new(
                        format!("nodes[{i}].data.{key}"),
                        "must be a condition (a string)",
                    )),
                }
            }
        }
        components.push(resolved);
    }

    let n = graph.nodes.len();
    let mut outgoing = vec![Vec::new(); n];
    let mut incoming = vec![Vec::new(); n];
    let mut edge_to = Vec::with_capacity(graph.edges.len());
    let mut edge_slot = Vec::with_capacity(graph.edges.len());
    for (e, edge) in graph.edges.iter().enumerate() {
        if edge.kind.is_structural() {
            // Kept with the graph, left out of execution: its ends may even
            // name things that are not nodes (a style, a behaviour).
            edge_to.push(usize::MAX);
            edge_slot.push(usize::MAX);
            continue;
        }
        let from = index.get(&edge.from).copied();
        let to = index.get(&edge.to).copied();
        if from.is_none() {
            problems.push(Problem::new(
                format!("edges[{e}].from"),
                format!("unknown node '{}'", edge.from),
            ));
        }
        if to.is_none() {
            problems.push(Problem::new(
                format!("edges[{e}].to"),
                format!("unknown node '{}'", edge.to),
            ));
        }
        let foreach_only = [
            ("max_concurrency", edge.max_concurrency.is_some()),
            ("tolerated_failures", edge.tolerated_failures.is_some()),
            (
                "tolerated_failure_percent",
                edge.tolerated_failure_percent.is_some(),
            ),
        ];
        for (field, set) in foreach_only {
            if set && edge.kind != EdgeKind::Foreach {
                problems.push(Problem::new(
                    format!("edges[{e}].{field}"),
                    "only a FOREACH edge takes this field",
                ));
            }
        }
        match edge.kind {
            EdgeKind::If if edge.condition.as_deref().is_none_or(str::is_empty) => {
                problems.push(Problem::new(
                    format!("edges[{e}].condition"),
                    "an IF edge needs a condition",
                ));
            }
            EdgeKind::If => {
                if let Err(why) = check_condition(edge.condition.as_deref().unwrap_or_default()) {
                    problems.push(Problem::new(format!("edges[{e}].condition"), why));
                }
            }
            EdgeKind::OnBranch if edge.branch.as_deref().is_none_or(str::is_empty) => {
                problems.push(Problem::new(
                    format!("edges[{e}].branch"),
                    "an ON_BRANCH edge needs a branch",
                ));
            }
            _ => {}
        }
        if let (Some(f), Some(t)) = (from, to) {
            outgoing[f].push(e);
            edge_slot.push(incoming[t].len());
            incoming[t].push(e);
            edge_to.push(t);
        } else {
            edge_to.push(usize::MAX);
            edge_slot.push(usize::MAX);
        }
    }
    for (t, inc) in incoming.iter().enumerate() {
        // "First of N" needs an N: on one edge `any` would only mislead.
        if graph.nodes[t].join == Join::Any && inc.len() < 2 {
            problems.push(Problem::new(
                format!("nodes[{t}].join"),
                format!(
                    "node '{}' has {} incoming edge(s); join \"any\" needs at least two",
                    graph.nodes[t].id,
                    inc.len()
                ),
            ));
        }
        let foreach = inc
            .iter()
            .filter(|&&e| graph.edges[e].kind == EdgeKind::Foreach)
            .count();
        if foreach > 0 && inc.len() > 1 {
            problems.push(Problem::new(
                format!("nodes[{t}]"),
                format!(
                    "node '{}' is the target of a FOREACH edge and must have no other incoming edge",
                    graph.nodes[t].id
                ),
            ));
        }
    }

    let order = topological_order(&outgoing, &incoming, &edge_to);
    if order.len() < n && problems.is_empty() {
        let mut in_order = vec![false; n];
        for &i in &order {
            in_order[i] = true;
        }
        let stuck: Vec<&str> = (0..n)
            .filter(|&i| !in_order[i])
            .map(|i| graph.nodes[i].id.as_str())
            .take(20)
            .collect();
        problems.push(Problem::new(
            "graph.edges",
            format!(
                "the graph has a cycle through these nodes: {}",
                stuck.join(", ")
            ),
        ));
    }

    if !problems.is_empty() {
        return Err(EngineError::InvalidGraph(cap(problems)));
    }
    Ok(Plan {
        graph,
        components,
        outgoing,
        incoming,
        edge_to,
        edge_slot,
        order,
        index,
    })
}

/// Kahn's algorithm; nodes on or behind a cycle are left out.
fn topological_order(
    outgoing: &[Vec<usize>],
    incoming: &[Vec<usize>],
    edge_to: &[usize],
) -> Vec<usize> {
    let mut remaining: Vec<usize> = incoming.iter().map(Vec::len).collect();
    let mut queue: VecDeque<usize> = (0..remaining.len())
        .filter(|&i| remaining[i] == 0)
        .collect();
    let mut order = Vec::with_capacity(remaining.len());
    while let Some(n) = queue.pop_front() {
        order.push(n);
        for &e in &outgoing[n] {
            let t = edge_to[e];
            remaining[t] -= 1;
            if remaining[t] == 0 {
                queue.push_back(t);
            }
        }
    }
    order
}

fn cap(mut problems: Vec<Problem>) -> Vec<Problem> {
    if problems.len() > MAX_PROBLEMS {
        let more = problems.len() - MAX_PROBLEMS;
        problems.truncate(MAX_PROBLEMS);
        problems.push(Problem::new("graph", format!("and {more} more problems")));
    }
    problems
}
