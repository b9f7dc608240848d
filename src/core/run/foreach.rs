//! FOREACH: the edge that runs its target once per item of an array. Items
//! are called independently (each may pause on its own wait and time out on
//! its own deadline) and the target finishes when every item has.

use serde_json::{json, Map, Value};

use super::super::dates;
use super::super::graph::{Edge, EdgeKind};
use super::super::plan::ComponentRef;
use super::super::protocol::{failure, is_failure, json_depth, too_deep, MAX_JSON_DEPTH};
use super::super::record::{Arrival, Context, ItemState, Mapping, NodeOutput, NodeState};
use super::super::scope::NodeScope;
use super::super::template::{json_map_size, json_size, Scope};
use super::verdict::{Verdict, Via};
use super::{CallKey, Run};

impl Run {
    pub(super) fn start_mapping(
        &mut self,
        n: usize,
        ctx: Context,
        base: Context,
        iterator: String,
        items: Vec<Value>,
        now: u64,
    ) {
        let limit = self.settings.max_foreach_items;
        if items.len() > limit {
            let msg = format!(
                "FOREACH over {} items exceeds the limit of {limit}",
                items.len()
            );
            let out = failure(None, &msg).into();
            return self.complete_node(n, ctx, out, Verdict::Failure, Via::Engine, now);
        }
        let count = items.len();
        // Every item's input carries the context, and a component's the
        // run's date variables too: refuse what cannot fit in a run.
        let date_layer: Map<String, Value> = dates::layer(&self.record.context)
            .filter(|(k, _)| !base.contains_key(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let per_item = base.json_size() + json_map_size(&date_layer);
        let inputs = per_item.saturating_mul(count);
        if inputs > self.settings.max_run_bytes {
            let msg = format!(
                "FOREACH over {count} items would build about {inputs} bytes of item inputs \
                 (each carries the context), over the run limit of {} bytes",
                self.settings.max_run_bytes
            );
            let out = failure(None, &msg).into();
            return self.complete_node(n, ctx, out, Verdict::Failure, Via::Engine, now);
        }
        // Items are held until started, in item order, as the edge's
        // `max_concurrency` allows; in-process ones finish as they start.
        self.record.nodes[n] = NodeState::Mapping(Box::new(Mapping {
            ctx,
            base,
            iterator,
            items: items.into_iter().map(ItemState::Held).collect(),
            remaining: count,
            next_held: 0,
        }));
        if count == 0 {
            return self.finish_mapping(n, now);
        }
        self.fill_mapping(n, now);
    }

    /// Starts held items while fewer than the edge's `max_concurrency` are
    /// in flight: a remote item's call is queued, a `poll_task` item opens
    /// its wait, an in-process item runs (and so never stays in flight). Called when the mapping starts and whenever an item
    /// finishes. Re-entry (an item that fails as it starts) is a no-op: the
    /// loop that is already filling sees the freed slot.
    pub(super) fn fill_mapping(&mut self, n: usize, now: u64) {
        if self.filling {
            return;
        }
        let limit = self
            .foreach_edge(n)
            .and_then(|e| e.max_concurrency)
            .map_or(usize::MAX, |c| c as usize);
        let remote = matches!(self.plan.components[n], Some(ComponentRef::Http(_)));
        self.filling = true;
        let mut flying = None;
        while let NodeState::Mapping(m) = &mut self.record.nodes[n] {
            let Some(i) =
                (m.next_held..m.items.len()).find(|&i| matches!(m.items[i], ItemState::Held(_)))
            else {
                m.next_held = m.items.len();
                break;
            };
            // Counted once per fill, then kept up to date as items start.
            let in_flight = *flying.get_or_insert_with(|| m.in_flight());
            if in_flight >= limit {
                break;
            }
            m.next_held = i + 1;
            let ItemState::Held(value) =
                std::mem::replace(&mut m.items[i], ItemState::Todo(Value::Null))
            else {
                break;
            };
            if remote {
                m.items[i] = ItemState::Todo(value);
                self.to_call.push_back(CallKey {
                    node: n,
                    item: Some(i),
                });
                flying = Some(in_flight + 1);
                continue;
            }
            let item_ctx = item_context(m, i, value);
            match self.plan.components[n].clone() {
                Some(ComponentRef::Poll) => self.start_poll_item(n, i, item_ctx, now),
                component => {
                    let key = CallKey {
                        node: n,
                        item: Some(i),
                    };
                    let (out, via) = match self.input_from(key, item_ctx) {
                        Ok(input) => match &component {
                            Some(ComponentRef::Builtin(b)) => {
                                (b.run(input).into_value(), Via::InProcess)
                            }
                            _ => (Value::from(input), Via::InProcess),
                        },
                        Err(out) => (out, Via::Engine),
                    };
                    self.finish_item(n, i, out, via, now);
                }
            }
            if self.record.status.is_finished() {
                break;
            }
            if let NodeState::Mapping(m) = &self.record.nodes[n] {
                if matches!(m.items[i], ItemState::Paused { .. }) {
                    flying = Some(in_flight + 1);
                }
            }
        }
        self.filling = false;
    }

    /// The FOREACH edge into `n`, if `n` is a FOREACH target.
    pub(super) fn foreach_edge(&self, n: usize) -> Option<&Edge> {
        self.plan.incoming[n]
            .iter()
            .map(|&e| &self.plan.graph.edges[e])
            .find(|e| e.kind == EdgeKind::Foreach)
    }

    /// One item of a `poll_task` FOREACH target: its own poll and wait.
    fn start_poll_item(&mut self, n: usize, i: usize, item_ctx: Context, now: u64) {
        let key = CallKey {
            node: n,
            item: Some(i),
        };
        match self.open_poll_task(key, item_ctx, now) {
            Ok(wait_id) => {
                if let NodeState::Mapping(m) = &mut self.record.nodes[n] {
                    m.items[i] = ItemState::Paused { wait_id };
                }
            }
            Err(out) => self.finish_item(n, i, out, Via::Engine, now),
        }
    }

    pub(super) fn finish_item(&mut self, n: usize, i: usize, output: Value, via: Via, now: u64) {
        let output = if json_depth(&output) > MAX_JSON_DEPTH {
            too_deep("the item's output")
        } else {
            output
        };
        let what = format!(
            "the result of node '{}' item {i}",
            self.plan.graph.nodes[n].id
        );
        let (output, refused) = match self.within_run_bytes(json_size(&output), &what, via) {
            Ok(()) => (output, false),
            Err(refused) => (refused, true),
        };
        let verdict = match via {
            Via::Engine => Verdict::Failure,
            _ => Verdict::judge(&output),
        };
        let entry = self.trace_entry(n, Some(i), &output, verdict, via, now);
        let NodeState::Mapping(m) = &mut self.record.nodes[n] else {
            return;
        };
        let Some(slot) = m
            .items
            .get_mut(i)
            .filter(|s| !matches!(s, ItemState::Done(_)))
        else {
            return;
        };
        let size = json_size(&output);
        *slot = ItemState::Done(output);
        m.remaining -= 1;
        let done = m.remaining == 0;
        if refused {
            self.output_bytes += size;
        } else if !self.account_bytes(size, now) {
            return;
        }
        self.record.trace.push(entry);
        if done {
            self.finish_mapping(n, now);
        } else {
            self.fill_mapping(n, now);
        }
    }

    /// Every item is in: the target's output is the items' results. It
    /// fails when more items failed than the edge tolerates (by default, any).
    pub(super) fn finish_mapping(&mut self, n: usize, now: u64) {
        let NodeState::Mapping(m) = &self.record.nodes[n] else {
            return;
        };
        let count = m.items.len();
        let failed = m
            .items
            .iter()
            .filter(|i| matches!(i, ItemState::Done(v) if is_failure(v)))
            .count();
        let tolerated = self
            .foreach_edge(n)
            .map_or(failed == 0, |e| e.tolerates(failed, count));
        if !tolerated && !self.routes_failure(n) {
            // The run fails here: the mapping stays as it is, so that a
            // retry runs only the failed items again.
            let ctx = m.ctx.clone();
            let out = json!({
                "success": false,
                "error": format!("{failed} of {count} items failed"),
                "count": count,
                "failed": failed,
            });
            return self.complete_node(n, ctx, out.into(), Verdict::Failure, Via::InProcess, now);
        }
        let NodeState::Mapping(m) = std::mem::replace(&mut self.record.nodes[n], NodeState::Idle)
        else {
            return;
        };
        let results: Vec<Value> = m
            .items
            .into_iter()
            .map(|s| match s {
                ItemState::Done(v) => v,
                _ => Value::Null,
            })
            .collect();
        // Built as a map so the results move in rather than being copied by `json!`.
        let mut output = Map::new();
        output.insert("results".into(), Value::Array(results));
        output.insert("count".into(), json!(count));
        output.insert("failed".into(), json!(failed));
        let verdict = if !tolerated {
            output.insert("success".into(), json!(false));
            output.insert(
                "error".into(),
                json!(format!("{failed} of {count} items failed")),
            );
            Verdict::Failure
        } else {
            Verdict::Success
        };
        self.complete_node(
            n,
            m.ctx,
            Value::Object(output).into(),
            verdict,
            Via::InProcess,
            now,
        );
    }

    /// Whether `ctx["results"]` is an upstream FOREACH target's results (as
    /// opposed to a key of the user's own), found by value among the
    /// finished FOREACH targets.
    fn holds_foreach_results(&self, ctx: &Context) -> bool {
        let Some(results) = ctx.get("results") else {
            return false;
        };
        (0..self.record.nodes.len()).any(|m| {
            let is_target = self.plan.incoming[m]
                .iter()
                .any(|&e| self.plan.graph.edges[e].kind == EdgeKind::Foreach);
            is_target
                && matches!(&self.record.nodes[m],
                    NodeState::Done { output } if output.get("results") == Some(results))
        })
    }
}

/// An item's context: the mapping's base with the item and its index.
fn item_context(m: &Mapping, i: usize, item: Value) -> Context {
    let mut item_ctx = m.base.clone();
    item_ctx.insert(m.iterator.clone(), item);
    item_ctx.insert("index".into(), json!(i));
    item_ctx
}

/// The arrival a fired FOREACH edge delivers: the items, and the context
/// each item starts from.
pub(super) fn foreach_arrival(
    run: &Run,
    edge: &Edge,
    output: &NodeOutput,
    out_ctx: &Context,
) -> Arrival {
    let iterator = edge.iterator.clone().unwrap_or_else(|| "item".into());
    let scope = NodeScope::new(out_ctx, &run.plan, &run.record);
    let (items, path, missing) = match foreach_items(output, edge.items.as_deref(), &scope) {
        Ok((items, path)) => (items, path, None),
        Err(why) => (Vec::new(), None, Some(why)),
    };
    let mut base = out_ctx.clone();
    if let Some(path) = path {
        remove_path(&mut base, &path);
    }
    // An upstream FOREACH's results stay out of each item's context (they
    // remain readable by node id): carried into every item, stages of
    // FOREACH would each multiply the size of the last. A `results` key of
    // the user's own is theirs and stays.
    if run.holds_foreach_results(&base) {
        base.remove("results");
    }
    Arrival::Items {
        ctx: out_ctx.clone(),
        base,
        iterator,
        items,
        missing,
    }
}

/// The array a FOREACH iterates, and the context path it came from (removed
/// from each item's context so items do not each carry the whole array).
type ForeachItems = Result<(Vec<Value>, Option<String>), String>;

pub(super) fn foreach_items(
    output: &NodeOutput,
    path: Option<&str>,
    scope: &dyn Scope,
) -> ForeachItems {
    if let Some(p) = path {
        let p = p
            .trim()
            .trim_start_matches("{{")
            .trim_end_matches("}}")
            .trim();
        return match scope.lookup(p) {
            Some(Value::Array(a)) => Ok((a.clone(), Some(p.to_string()))),
            _ => Err(format!("FOREACH found no array at '{p}'")),
        };
    }
    if let NodeOutput::Other(Value::Array(a)) = output {
        return Ok((a.clone(), None));
    }
    for p in ["items", "data.items", "results", "data"] {
        if let Some(Value::Array(a)) = output.walk(p.split('.')) {
            return Ok((a.clone(), Some(p.to_string())));
        }
    }
    Err(
        "FOREACH found no array to iterate: the source's output is not an array and has no \
         items, data.items, results or data array (name one with the edge's \"items\")"
            .into(),
    )
}

fn remove_path(ctx: &mut Context, path: &str) {
    let Some((first, rest)) = path.split_once('.') else {
        ctx.remove(path);
        return;
    };
    // Below the top level the context holds plain JSON: the one value on
    // the path is copied, changed and put back.
    let Some(Value::Object(mut top)) = ctx.get(first).cloned() else {
        return;
    };
    let mut parts: Vec<&str> = rest.split('.').collect();
    let Some(last) = parts.pop() else { return };
    let mut cur = &mut top;
    for part in parts {
        match cur.get_mut(part) {
            Some(Value::Object(m)) => cur = m,
            _ => return,
        }
    }
    if cur.remove(last).is_some() {
        ctx.insert(first.to_string(), Value::Object(top));
    }
}
