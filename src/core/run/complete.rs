//! A node's (or a FOREACH item's) result arrives: judge it, record it in the
//! trace, and resolve the node's outgoing edges, delivering to joins (a
//! `join: "any"` node's arrivals are `join`'s).

use serde_json::Value;

use super::super::condition::{boolean_result, chosen_branch, evaluate};
use super::super::graph::{EdgeKind, Join};
use super::super::protocol::{
    coded_failure, error_code, error_text, failure, json_depth, pending, too_deep, Fielded,
    Pending, MAX_JSON_DEPTH, MAX_TASK_ID_BYTES,
};
use super::super::record::{
    Arrival, Context, ItemState, NodeOutput, NodeState, Poll, RunError, RunStatus, TraceEntry,
    TraceStatus, Wait,
};
use super::super::scope::NodeScope;
use super::added::{flows_on, Added};
use super::foreach::foreach_arrival;
use super::poll::status_url_poll;
use super::verdict::{Verdict, Via};
use super::{CallKey, CallOutcome, InFlight, Journaled, Run};

impl Run {
    /// Feeds back an outcome the journal kept for a call returned by
    /// `step`: the wait it opens keeps the deadline the call was made with.
    pub fn complete_replayed(&mut self, key: CallKey, journaled: Journaled, now: u64) {
        if let (Some(flight), Some(at)) = (self.in_flight.get_mut(&key), journaled.expires_at) {
            flight.expires_at = at;
        }
        self.complete_call(key, journaled.outcome, now);
    }

    /// Feeds back the outcome of a call returned by `step`.
    pub fn complete_call(&mut self, key: CallKey, outcome: CallOutcome, now: u64) {
        let Some(flight) = self.in_flight.remove(&key) else {
            return;
        };
        if self.record.status.is_finished() {
            return;
        }
        if let Some(wait_id) = flight.poll_of {
            return self.complete_poll(key, &wait_id, outcome, now);
        }
        let output = match outcome {
            CallOutcome::Answered(v) if json_depth(&v) > MAX_JSON_DEPTH => {
                too_deep("the component's answer")
            }
            CallOutcome::Answered(v) => v,
            CallOutcome::Failed {
                status,
                error,
                code: Some(code),
            } => coded_failure(status, &error, code.code()),
            CallOutcome::Failed {
                status,
                error,
                code: None,
            } => failure(status, &error),
        };
        let via = Via::Call {
            started: flight.started_at,
        };
        match pending(&output) {
            Some(Pending::Task(task_id)) => {
                let poll = status_url_poll(&output, now);
                self.pause(key, flight, task_id, poll, now)
            }
            Some(Pending::NoTaskId) => {
                let out = failure(
                    None,
                    "component answered pending without a non-empty task_id",
                );
                self.finish_instance(key, out, via, now);
            }
            Some(Pending::TaskIdTooLong(len)) => {
                let out = failure(
                    None,
                    &format!(
                        "component answered pending with a {len}-byte task_id; the limit is \
                         {MAX_TASK_ID_BYTES} bytes"
                    ),
                );
                self.finish_instance(key, out, via, now);
            }
            None => {
                // Answered at once: a callback held for it was not needed.
                self.record.early.remove(&key.wait_id(self.record.attempt));
                self.finish_instance(key, output, via, now)
            }
        }
    }

    fn pause(
        &mut self,
        key: CallKey,
        flight: InFlight,
        task_id: String,
        poll: Option<Poll>,
        now: u64,
    ) {
        let n = key.node;
        let node_id = self.plan.graph.nodes[n].id.clone();
        let wait_id = key.wait_id(self.record.attempt);
        // The paused entry is the one written for the call its data went into.
        let warnings = self.take_warnings(key);
        match (&mut self.record.nodes[n], key.item) {
            (state @ NodeState::Calling { .. }, None) => {
                let NodeState::Calling { ctx } = std::mem::replace(state, NodeState::Idle) else {
                    return;
                };
                *state = NodeState::Paused {
                    ctx,
                    wait_id: wait_id.clone(),
                };
            }
            (NodeState::Mapping(m), Some(i)) => match m.items.get_mut(i) {
                Some(item @ ItemState::Todo(_)) => {
                    *item = ItemState::Paused {
                        wait_id: wait_id.clone(),
                    }
                }
                _ => return,
            },
            _ => return self.superseded_pending(key, &task_id, now),
        }
        self.record.trace.push(TraceEntry {
            attempt: self.record.attempt,
            node_id: node_id.clone(),
            item: key.item,
            status: TraceStatus::Paused,
            at: now,
            duration_ms: Some(now.saturating_sub(flight.started_at)),
            task_id: Some(task_id.clone()),
            resumed: false,
            error: None,
            error_code: None,
            warnings,
        });
        self.record.waits.insert(
            wait_id.clone(),
            Wait {
                wait_id: wait_id.clone(),
                task_id,
                node_id,
                item: key.item,
                since: now,
                expires_at: flight.expires_at,
                poll,
                progress: None,
                heartbeat_at: None,
                events: Vec::new(),
            },
        );
        self.take_early(&wait_id, now);
    }

    /// A node (or one FOREACH item) has its output.
    pub(super) fn finish_instance(&mut self, key: CallKey, output: Value, via: Via, now: u64) {
        let n = key.node;
        if let Some(i) = key.item {
            return self.finish_item(n, i, output, via, now);
        }
        let ctx = match std::mem::replace(&mut self.record.nodes[n], NodeState::Idle) {
            NodeState::Calling { ctx } | NodeState::Paused { ctx, .. } => ctx,
            other => {
                self.record.nodes[n] = other;
                return;
            }
        };
        let verdict = match via {
            Via::Engine => Verdict::Failure,
            _ => Verdict::judge(&output),
        };
        self.complete_node(n, ctx, output.into(), verdict, via, now);
    }

    /// The trace entry for a result.
    pub(super) fn trace_entry(
        &mut self,
        n: usize,
        item: Option<usize>,
        output: &(impl Fielded + ?Sized),
        verdict: Verdict,
        via: Via,
        now: u64,
    ) -> TraceEntry {
        let task_id = match via {
            Via::Callback { .. } | Via::Deadline { .. } => output
                .field("task_id")
                .and_then(Value::as_str)
                .map(str::to_string),
            _ => None,
        };
        TraceEntry {
            attempt: self.record.attempt,
            node_id: self.plan.graph.nodes[n].id.clone(),
            item,
            status: match verdict {
                Verdict::Success => TraceStatus::Succeeded,
                Verdict::Failure => TraceStatus::Failed,
            },
            at: now,
            duration_ms: via.duration(now),
            task_id,
            resumed: matches!(via, Via::Callback { .. }),
            error: match verdict {
                Verdict::Failure => error_text(output),
                Verdict::Success => None,
            },
            error_code: match verdict {
                Verdict::Failure => error_code(output).map(str::to_string),
                Verdict::Success => None,
            },
            warnings: self.take_warnings(CallKey { node: n, item }),
        }
    }

    /// Records a node's output and resolves each of its outgoing edges.
    pub(super) fn complete_node(
        &mut self,
        n: usize,
        ctx: Context,
        output: NodeOutput,
        verdict: Verdict,
        via: Via,
        now: u64,
    ) {
        let Added {
            output,
            bytes,
            too_deep: deep,
            flows,
        } = Added::over(&ctx, output, via == Via::InProcess);
        // Whatever built it (a template can nest values), an output stays
        // shallow enough to be stored and read back.
        let (output, verdict, bytes, flows) = if deep {
            let out = NodeOutput::from(too_deep("the node's output"));
            let size = out.json_size();
            (out, Verdict::Failure, size, None)
        } else {
            (output, verdict, bytes, Some(flows))
        };
        let what = format!("the result of node '{}'", self.plan.graph.nodes[n].id);
        let (output, verdict, flows, refused) = match self.within_run_bytes(bytes, &what, via) {
            Ok(()) => (output, verdict, flows, false),
            Err(refused) => (NodeOutput::from(refused), Verdict::Failure, None, true),
        };
        // A refusal is a line of text: held past the limit, it is what
        // keeps the run retryable.
        if refused {
            self.output_bytes += output.json_size();
        } else if !self.account_bytes(bytes, now) {
            return;
        }
        let entry = self.trace_entry(n, None, &output, verdict, via, now);
        self.record.trace.push(entry);
        let failed = verdict == Verdict::Failure;
        if failed && !self.routes_failure(n) {
            // Kept for a retry (a failed FOREACH target keeps its mapping).
            if let NodeState::Idle = self.record.nodes[n] {
                self.record.nodes[n] = NodeState::Failed { ctx };
            }
            let code = error_code(&output)
                .filter(|c| *c == "wait_timeout")
                .unwrap_or("node_failed");
            self.fail(
                RunError {
                    code: code.into(),
                    message: error_text(&output)
                        .unwrap_or_else(|| "the component reported failure".into()),
                    node_id: Some(self.plan.graph.nodes[n].id.clone()),
                },
                now,
            );
            return;
        }
        let edges = self.plan.outgoing[n].clone();
        if edges.is_empty() {
            self.record.nodes[n] = NodeState::Done { output };
            return;
        }
        // What flows on: computed with the output, unless the output was
        // replaced by a failure.
        let out_ctx = flows.unwrap_or_else(|| flows_on(&ctx, &output));
        self.record.nodes[n] = NodeState::Done { output };
        for e in edges {
            let arrival = self.resolve_edge(e, n, &out_ctx, failed);
            self.deliver(e, arrival, now);
        }
    }

    /// Decides whether edge `e` fires for the finished node `n`.
    fn resolve_edge(&self, e: usize, n: usize, out_ctx: &Context, failed: bool) -> Arrival {
        let edge = &self.plan.graph.edges[e];
        let NodeState::Done { output } = &self.record.nodes[n] else {
            return Arrival::Skipped;
        };
        let fires = match edge.kind {
            EdgeKind::OnFail => failed,
            _ if failed => false,
            EdgeKind::Pipe
            | EdgeKind::OnSuccess
            | EdgeKind::Foreach
            | EdgeKind::OnClick
            | EdgeKind::CallsSubflow => true,
            EdgeKind::If => {
                let scope = NodeScope::new(out_ctx, &self.plan, &self.record);
                evaluate(edge.condition.as_deref().unwrap_or_default(), &scope)
            }
            EdgeKind::OnTrue => boolean_result(output) == Some(true),
            EdgeKind::OnFalse => boolean_result(output) == Some(false),
            EdgeKind::OnBranch => chosen_branch(output).as_deref() == edge.branch.as_deref(),
            // Never in a node's outgoing edges (see `plan`).
            _ => false,
        };
        if !fires {
            return Arrival::Skipped;
        }
        if edge.kind != EdgeKind::Foreach {
            return Arrival::Delivered {
                ctx: out_ctx.clone(),
            };
        }
        foreach_arrival(self, edge, output, out_ctx)
    }

    fn deliver(&mut self, e: usize, arrival: Arrival, now: u64) {
        let target = self.plan.edge_to[e];
        let slot = self.plan.edge_slot[e];
        if self.plan.graph.nodes[target].join == Join::Any {
            return self.deliver_to_any(target, slot, arrival, now);
        }
        let width = self.plan.incoming[target].len();
        if let NodeState::Idle = self.record.nodes[target] {
            self.record.nodes[target] = NodeState::Waiting {
                arrivals: vec![Arrival::Pending; width],
            };
        }
        let NodeState::Waiting { arrivals } = &mut self.record.nodes[target] else {
            return;
        };
        arrivals[slot] = arrival;
        if arrivals.iter().all(|a| !matches!(a, Arrival::Pending)) {
            self.ready.push_back(target);
        }
    }

    pub(super) fn skip(&mut self, n: usize, now: u64) {
        self.record.nodes[n] = NodeState::Skipped;
        self.record.trace.push(TraceEntry {
            attempt: self.record.attempt,
            node_id: self.plan.graph.nodes[n].id.clone(),
            item: None,
            status: TraceStatus::Skipped,
            at: now,
            duration_ms: None,
            task_id: None,
            resumed: false,
            error: None,
            error_code: None,
            warnings: Vec::new(),
        });
        for e in self.plan.outgoing[n].clone() {
            self.deliver(e, Arrival::Skipped, now);
        }
    }

    /// The output, or — if it alone is over a quarter of what one run may
    /// hold, and would take the run past it — a failure in its place that
    /// says what was too large and by how much. The node (or item) fails,
    /// routable by `ON_FAIL`, and the run stays retryable: one component or
    /// daemon sending a huge result cannot make the run unrecoverable.
    /// Smaller outputs that add up past the limit still fail the run as a
    /// whole (`account_bytes`): no one of them is to blame, and the record
    /// must leave room for the graph, contexts and trace beside them.
    /// `size` is what the output adds to the run (`Added`).
    pub(super) fn within_run_bytes(&self, size: usize, what: &str, via: Via) -> Result<(), Value> {
        let limit = self.settings.max_run_bytes;
        if size <= limit / 4 || self.output_bytes.saturating_add(size) <= limit {
            return Ok(());
        }
        let came = match via {
            Via::Callback { .. } => " (sent with its callback)",
            Via::Call { .. } => " (the component's answer)",
            Via::Poll { .. } => " (its status URL's answer)",
            _ => "",
        };
        Err(failure(
            None,
            &format!(
                "{what}{came} is {size} bytes of JSON: with the {} bytes the run holds already it \
                 would pass {limit}, the most one run may hold and store",
                self.output_bytes
            ),
        ))
    }

    /// Counts a new output against `max_run_bytes`; fails the run past it.
    pub(super) fn account_bytes(&mut self, size: usize, now: u64) -> bool {
        self.output_bytes += size;
        if self.output_bytes <= self.settings.max_run_bytes {
            return true;
        }
        let message = format!(
            "the run's node outputs grew past {} bytes, the most one run may hold and store",
            self.settings.max_run_bytes
        );
        self.fail_too_large(message, now);
        false
    }

    /// Fails the run with `run_too_large`. Not retryable (the same outputs
    /// would outgrow it again), and its outputs are what is too large: they
    /// are released, so the record keeps its error and trace.
    pub(super) fn fail_too_large(&mut self, message: String, now: u64) {
        self.fail(
            RunError {
                code: "run_too_large".into(),
                message,
                node_id: None,
            },
            now,
        );
        self.release();
    }

    /// Whether a failure of `n` flows on (it has an `ON_FAIL` edge) rather
    /// than failing the run.
    pub(super) fn routes_failure(&self, n: usize) -> bool {
        self.plan.outgoing[n]
            .iter()
            .any(|&e| self.plan.graph.edges[e].kind == EdgeKind::OnFail)
    }

    /// Fails the run. Open waits are dropped (a later callback for one finds
    /// the run finished) and node states set for a retry at once: a failed
    /// run may be saved before any later step, and must not hold states that
    /// point at the waits it dropped (found by fuzzing the stored form).
    /// Completed outputs stay; what was calling or paused is marked to run
    /// again — a node as `Failed`, a FOREACH item as a failed result.
    pub(super) fn fail(&mut self, error: RunError, now: u64) {
        self.record.status = RunStatus::Failed {
            error,
            finished_at: now,
        };
        self.record.updated_at = now;
        self.record.waits.clear();
        self.record.early.clear();
        self.ready.clear();
        self.to_call.clear();
        self.in_flight.clear();
        self.warnings.clear();
        for (n, state) in self.record.nodes.iter_mut().enumerate() {
            match state {
                NodeState::Calling { ctx } | NodeState::Paused { ctx, .. } => {
                    let ctx = std::mem::take(ctx);
                    *state = NodeState::Failed { ctx };
                }
                // A start node not yet fired holds the trigger's context as
                // an arrival no edge made (found by fuzzing the stored form):
                // it is kept as a node to fire on retry instead.
                NodeState::Waiting { arrivals } if self.plan.incoming[n].is_empty() => {
                    let ctx = arrivals.iter().find_map(|a| match a {
                        Arrival::Delivered { ctx } => Some(Context::clone(ctx)),
                        _ => None,
                    });
                    *state = NodeState::Failed {
                        ctx: ctx.unwrap_or_default(),
                    };
                }
                NodeState::Mapping(m) => {
                    for item in &mut m.items {
                        match item {
                            ItemState::Todo(value) => *item = ItemState::Held(value.take()),
                            ItemState::Paused { .. } => {
                                *item = ItemState::Done(failure(
                                    None,
                                    "the run failed while this item was waiting",
                                ));
                                m.remaining -= 1;
                            }
                            ItemState::Done(_) | ItemState::Held(_) => {}
                        }
                    }
                    m.next_held = 0;
                }
                _ => {}
            }
        }
    }
}
