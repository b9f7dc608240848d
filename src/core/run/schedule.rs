//! The ready queue: firing nodes whose edges have resolved, issuing the
//! calls that are due within the segment's budget, and settling the run when
//! nothing is left to do in this invocation.

use serde_json::{json, Map, Value};

use super::super::dates;
use super::super::effect::Effect;
use super::super::graph::NodeKind;
use super::super::plan::ComponentRef;
use super::super::protocol::{coded_failure, failure, UNRESOLVED_TEMPLATE};
use super::super::record::{Arrival, Context, ItemState, NodeOutput, NodeState, RunStatus};
use super::super::scope::NodeScope;
use super::super::template::{json_map_size, render_map, Scope, Unresolved};
use super::verdict::{Verdict, Via};
use super::{Call, CallKey, InFlight, Run};

/// Calls issued by one `step` stop growing past this many input bytes; the
/// rest are issued in the next step. Bounds the memory held by in-flight
/// inputs without limiting what a run may do.
const MAX_BATCH_BYTES: usize = 8 << 20;

/// Calls in flight at once. Workers open at most six connections at a time
/// per invocation and queue the rest — with their timeouts already running —
/// so more would only make slow components look like timeouts (and a
/// native driver open thousands of sockets).
pub const MAX_CALLS_AT_ONCE: usize = 6;

impl Run {
    /// Runs all in-process work that is ready and returns what the driver
    /// must do next: the component calls now due, or — when none are — the
    /// effects that end the segment (`WakeAt` for a paused run, `Yield` when
    /// the call budget is spent, nothing for a finished run).
    pub fn step(&mut self, now: u64) -> Vec<Effect> {
        // A finished run has nothing left to do, and is left as it was.
        if self.record.status.is_finished() && self.ready.is_empty() && self.to_call.is_empty() {
            return Vec::new();
        }
        loop {
            while let Some(n) = self.ready.pop_front() {
                if self.record.status.is_finished() {
                    break;
                }
                self.fire(n, now);
            }
            if self.record.status.is_finished() {
                break;
            }
            let mut calls = Vec::new();
            let mut batch_bytes = 0;
            while self.calls_left > 0
                && batch_bytes < MAX_BATCH_BYTES
                && calls.len() < MAX_CALLS_AT_ONCE
            {
                let Some(key) = self.to_call.pop_front() else {
                    break;
                };
                if let Some(call) = self.issue(key, now) {
                    batch_bytes += json_map_size(&call.input);
                    self.calls_left -= 1;
                    calls.push(Effect::Call(Box::new(call)));
                }
                if self.record.status.is_finished() {
                    return Vec::new();
                }
            }
            // Status URLs due a poll, within the same budget.
            for wait_id in self.polls_due(now) {
                if self.calls_left == 0 || calls.len() >= MAX_CALLS_AT_ONCE {
                    break;
                }
                if let Some(call) = self.issue_poll(&wait_id, now) {
                    self.calls_left -= 1;
                    calls.push(Effect::Call(Box::new(call)));
                }
            }
            if !calls.is_empty() {
                return calls;
            }
            // A call that failed before it was sent (its templates) may have
            // made more nodes ready.
            if self.ready.is_empty() {
                break;
            }
        }
        if !self.in_flight.is_empty() {
            return Vec::new();
        }
        self.settle(now)
    }

    fn fire(&mut self, n: usize, now: u64) {
        let arrivals = match std::mem::replace(&mut self.record.nodes[n], NodeState::Idle) {
            NodeState::Waiting { arrivals } => arrivals,
            other => {
                // Queued twice would be a scheduling bug; keep the state and move on.
                self.record.nodes[n] = other;
                return;
            }
        };
        self.fire_with(n, arrivals, now);
    }

    /// Runs node `n` on what arrived: skips it if nothing was delivered,
    /// starts its mapping, queues its call, or computes it in-process.
    pub(super) fn fire_with(&mut self, n: usize, arrivals: Vec<Arrival>, now: u64) {
        let mut ctx: Option<Context> = None;
        let mut foreach = None;
        for arrival in arrivals {
            match arrival {
                Arrival::Delivered { ctx: c } => merge_into(&mut ctx, c),
                Arrival::Items {
                    ctx: c,
                    base,
                    iterator,
                    items,
                    missing,
                } => {
                    merge_into(&mut ctx, c);
                    foreach = Some((base, iterator, items, missing));
                }
                Arrival::Pending | Arrival::Skipped => {}
            }
        }
        let Some(ctx) = ctx else {
            self.skip(n, now);
            return;
        };
        if let Some((base, iterator, items, missing)) = foreach {
            if let Some(why) = missing {
                let out = failure(None, &why).into();
                return self.complete_node(n, ctx, out, Verdict::Failure, Via::Engine, now);
            }
            return self.start_mapping(n, ctx, base, iterator, items, now);
        }
        let component = self.plan.components[n].clone();
        if let (NodeKind::Component, Some(ComponentRef::Poll)) =
            (self.plan.graph.nodes[n].kind, &component)
        {
            return self.start_poll_node(n, ctx, now);
        }
        if let (NodeKind::Component, Some(ComponentRef::Http(_))) =
            (self.plan.graph.nodes[n].kind, &component)
        {
            // The input is built when the call is issued, which may be in a
            // later invocation; until then the node holds its context.
            self.record.nodes[n] = NodeState::Calling { ctx };
            self.to_call.push_back(CallKey {
                node: n,
                item: None,
            });
            return;
        }
        // Only outgoing edges need the incoming context once the input is
        // built; a sink's (an Output node's, typically) is taken, not copied.
        let key = CallKey {
            node: n,
            item: None,
        };
        // The context is shared with the input built on it (`Fields`): a
        // pass-through's output is that input, and only what its data added
        // is new.
        let input = match self.input_from(key, ctx.clone()) {
            Ok(input) => input,
            Err(out) => {
                return self.complete_node(n, ctx, out.into(), Verdict::Failure, Via::Engine, now)
            }
        };
        let out = match component {
            Some(ComponentRef::Builtin(b)) => b.run(input),
            // Input and Output nodes pass their merged context and data on.
            _ => NodeOutput::Object(input),
        };
        self.complete_node(n, ctx, out, Verdict::Success, Via::InProcess, now);
    }

    /// Builds the call for `key` from the state that holds it. `None` when
    /// the call is not needed after all (its input failed to render: the
    /// node or item is then finished with that failure).
    fn issue(&mut self, key: CallKey, now: u64) -> Option<Call> {
        let url = match &self.plan.components[key.node] {
            Some(ComponentRef::Http(url)) => url.clone(),
            _ => return None,
        };
        let ctx = match (&self.record.nodes[key.node], key.item) {
            (NodeState::Calling { ctx }, None) => ctx.clone(),
            (NodeState::Mapping(m), Some(i)) => {
                let ItemState::Todo(item) = m.items.get(i)? else {
                    return None;
                };
                let mut item_ctx = m.base.clone();
                item_ctx.insert(m.iterator.clone(), item.clone());
                item_ctx.insert("index".into(), json!(i));
                item_ctx
            }
            _ => return None,
        };
        let input = self.input_from(key, ctx);
        let mut input = match input {
            Ok(input) => input.to_map(),
            Err(out) => {
                self.finish_instance(key, out, Via::Engine, now);
                return None;
            }
        };
        // The component sees the date variables in its input, as in the
        // engine we descend from; the run holds them once.
        dates::lay_under(&mut input, &self.record.context);
        let node = &self.plan.graph.nodes[key.node];
        let wait_ms = node
            .wait_timeout_seconds
            .map_or(self.settings.wait_ttl_ms, |s| s.saturating_mul(1000));
        let expires_at = now.saturating_add(wait_ms);
        let wait_id = key.wait_id(self.record.attempt);
        self.in_flight.insert(
            key,
            InFlight {
                started_at: now,
                expires_at,
                poll_of: None,
            },
        );
        let run_id = &self.record.run_id;
        Some(Call {
            key,
            node_id: node.id.clone(),
            url,
            input,
            idempotency_key: format!("{run_id}.{wait_id}"),
            // Good for as long as the wait may last, however often
            // heartbeats move its deadline: a daemon keeps the URL it was
            // handed. Past the deadline the gate answers `expired`.
            callback_url: self
                .signer
                .as_ref()
                .map(|s| s.url(run_id, &wait_id, self.url_expiry_from(now, expires_at))),
            wait_id,
            expires_at,
            segment: self.record.segments,
            poll: None,
            owner: self.record.owner.clone(),
            depth: self.record.depth,
            root: self.record.root_run().to_string(),
        })
    }

    /// A `poll_task` node fires: its rendered data is the poll, and it waits.
    fn start_poll_node(&mut self, n: usize, ctx: Context, now: u64) {
        let key = CallKey {
            node: n,
            item: None,
        };
        match self.open_poll_task(key, ctx.clone(), now) {
            Ok(wait_id) => self.record.nodes[n] = NodeState::Paused { ctx, wait_id },
            Err(out) => self.complete_node(n, ctx, out.into(), Verdict::Failure, Via::Engine, now),
        }
    }

    /// The input of `key`'s node (or item): the context given with its
    /// rendered `data` on top. References that name nothing stay as written
    /// and are held as warnings for the instance's next trace entry — or,
    /// in a graph with `strict_templates`, fail it naming them.
    pub(super) fn input_from(&mut self, key: CallKey, mut ctx: Context) -> Result<Context, Value> {
        self.warnings.remove(&key);
        let data = &self.plan.graph.nodes[key.node].data;
        if data.is_empty() {
            return Ok(ctx);
        }
        let scope = NodeScope::new(&ctx, &self.plan, &self.record);
        let mut unresolved = Unresolved::default();
        let rendered = render_map(
            data,
            &scope as &dyn Scope,
            self.settings.max_template_bytes,
            &mut unresolved,
        )
        .map_err(|e| failure(None, &e.to_string()))?;
        if !unresolved.is_empty() {
            if self.plan.graph.strict_templates {
                return Err(coded_failure(
                    None,
                    &unresolved.refusal(),
                    UNRESOLVED_TEMPLATE,
                ));
            }
            self.warnings.insert(key, unresolved.warnings());
        }
        ctx.extend(rendered);
        Ok(ctx)
    }

    /// The warnings held for `key` since its data was rendered, taken for
    /// the trace entry that reports them.
    pub(super) fn take_warnings(&mut self, key: CallKey) -> Vec<String> {
        self.warnings.remove(&key).unwrap_or_default()
    }

    /// Ends the segment's work: the run is finished, yields with calls still
    /// due, waits for callbacks, or has completed.
    fn settle(&mut self, now: u64) -> Vec<Effect> {
        self.record.updated_at = now;
        if self.record.status.is_finished() {
            // A failed run keeps its states for a retry (see `fail`).
            if !matches!(self.record.status, RunStatus::Failed { .. }) {
                self.release();
            }
            return Vec::new();
        }
        if !self.to_call.is_empty() || self.polls_due_at(now) {
            self.record.status = RunStatus::Running;
            return vec![Effect::Yield];
        }
        if let Some(at) = self.record.next_timer() {
            self.record.status = RunStatus::Paused { since: now };
            return vec![Effect::WakeAt(at)];
        }
        let chosen = self.result_nodes();
        // Outputs share what they repeat (`Fields`); a result gathered from
        // many of them would not: it must fit in a run like any output.
        let size: usize = chosen
            .iter()
            .map(|&i| match &self.record.nodes[i] {
                NodeState::Done { output } => output.json_size(),
                _ => 0,
            })
            .sum();
        if size > self.settings.max_run_bytes {
            let message = format!(
                "the run's result, the outputs of {} nodes together, would be {size} bytes of \
                 JSON, over {}, the most one run may hold and store",
                chosen.len(),
                self.settings.max_run_bytes
            );
            self.fail_too_large(message, now);
            return Vec::new();
        }
        self.record.status = RunStatus::Completed {
            output: self.take_final_output(&chosen),
            finished_at: now,
        };
        self.release();
        Vec::new()
    }

    /// A completed or cancelled run never runs again: its node states are
    /// released, so the stored record holds the result once, plus the trace.
    /// (A failed run keeps them for a retry; see `fail`.)
    pub(super) fn release(&mut self) {
        for state in &mut self.record.nodes {
            *state = NodeState::Idle;
        }
        self.record.early.clear();
        self.output_bytes = 0;
        self.ready.clear();
        self.to_call.clear();
        self.in_flight.clear();
        self.warnings.clear();
    }

    /// The nodes whose outputs make the run's result: the completed Output
    /// nodes; when none completed (there are none, or a branch skipped
    /// them), the completed sink nodes.
    fn result_nodes(&self) -> Vec<usize> {
        let nodes = &self.plan.graph.nodes;
        let done = |i: &usize| matches!(self.record.nodes[*i], NodeState::Done { .. });
        let chosen: Vec<usize> = (0..nodes.len())
            .filter(|&i| nodes[i].kind == NodeKind::Output)
            .filter(done)
            .collect();
        if !chosen.is_empty() {
            return chosen;
        }
        (0..nodes.len())
            .filter(|&i| self.plan.outgoing[i].is_empty())
            .filter(done)
            .collect()
    }

    /// The run's result, moved out of the node states: the one result
    /// node's output, or a map by id when there are several.
    fn take_final_output(&mut self, chosen: &[usize]) -> Value {
        let nodes = &self.plan.graph.nodes;
        // An Input or Output node passes on the context it received, which
        // in the engine we descend from holds the date variables: its output
        // as the run's result has them again (once, here, not in every
        // stored context).
        let mut take = |i: usize| {
            let pass = matches!(nodes[i].kind, NodeKind::Input | NodeKind::Output);
            match std::mem::replace(&mut self.record.nodes[i], NodeState::Idle) {
                NodeState::Done {
                    output: NodeOutput::Object(fields),
                } if pass => {
                    let mut fields = Map::from(fields);
                    dates::lay_under(&mut fields, &self.record.context);
                    Value::Object(fields)
                }
                NodeState::Done { output } => output.into_value(),
                _ => Value::Null,
            }
        };
        match chosen {
            [] => Value::Null,
            [only] => take(*only),
            many => Value::Object(
                many.iter()
                    .map(|&i| (self.plan.graph.nodes[i].id.clone(), take(i)))
                    .collect(),
            ),
        }
    }
}

fn merge_into(acc: &mut Option<Context>, ctx: Context) {
    match acc {
        None => *acc = Some(ctx),
        // A join: what the later edge brought goes on top.
        Some(existing) => *existing = existing.merged_with(&ctx, |_| false),
    }
}
