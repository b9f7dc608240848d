//! Version 1 of the stored run record, written by the first release, read
//! by rewriting it into a version-2 document (JSON to JSON), which `v2`
//! rewrites into a version-3 one that the v3 reader then loads — so there
//! is one reader of typed records, and the migrations add no deserializers
//! of their own to the bundle.
//!
//! What the rewrite papers over: contexts were deltas only when a flag said
//! so, with removed keys in a side table (version 2's baseline is the same
//! function, so a version-1 delta is a version-2 delta); FOREACH items were
//! bare slots (an empty slot was always an item paused on a wait, since
//! version 1 only stored settled runs); resumed waits were a separate map;
//! and named components were not pinned, so they resolve through the
//! deployment's current `COMPONENTS` once and are pinned from then on.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use super::super::error::EngineError;
use super::super::graph::parse_graph;
use super::super::plan::{ComponentRef, Directory};
use super::super::protocol::RESULT_STATUS_KEYS;

pub const VERSION: u32 = 1;

fn corrupt(why: &str) -> EngineError {
    EngineError::CorruptRecord(format!("version-1 record: {why}"))
}

/// Rewrites a version-1 record as a version-2 document.
pub fn to_v2(mut old: Value, directory: &Directory) -> Result<Value, EngineError> {
    let record = old
        .as_object_mut()
        .ok_or_else(|| corrupt("not an object"))?;
    let compacted = record
        .remove("contexts_compacted")
        .is_some_and(|v| v == Value::Bool(true));
    let mut unset: BTreeMap<String, Value> = match record.remove("ctx_unset") {
        Some(Value::Object(m)) => m.into_iter().collect(),
        _ => BTreeMap::new(),
    };
    record.remove("next_wait");
    record.insert("version".into(), json!(2));

    // Keys of the baseline: the trigger context's and every finished node's
    // output's (the values do not matter here, only which keys it has).
    let mut base_keys: BTreeSet<String> = record
        .get("context")
        .and_then(Value::as_object)
        .map(|c| c.keys().cloned().collect())
        .unwrap_or_default();
    let nodes = match record.remove("nodes") {
        Some(Value::Array(nodes)) => nodes,
        _ => return Err(corrupt("no node states")),
    };
    for node in &nodes {
        if let Some(Value::Object(output)) = node.pointer("/done/output") {
            base_keys.extend(
                output
                    .keys()
                    .filter(|k| !RESULT_STATUS_KEYS.contains(&k.as_str()))
                    .cloned(),
            );
        }
    }
    // A stored context as a version-2 delta: as written when compacted (its
    // removed keys from the side table), else the whole context, unsetting
    // the baseline keys it lacks.
    let delta_of = |ctx: Map<String, Value>, removed: Value| {
        let mut delta = Map::new();
        delta.insert("set".into(), Value::Object(ctx));
        delta.insert("unset".into(), removed);
        Value::Object(delta)
    };
    let whole = |ctx: Value| -> Result<Value, EngineError> {
        let Value::Object(ctx) = ctx else {
            return Err(corrupt("a context is not an object"));
        };
        let removed = base_keys
            .iter()
            .filter(|k| !ctx.contains_key(*k))
            .map(|k| Value::String(k.clone()))
            .collect();
        Ok(delta_of(ctx, Value::Array(removed)))
    };
    // Rewrites the context under `key` of `state` in place.
    let mut rewrite = |state: &mut Map<String, Value>, key: &str, at: String| {
        let ctx = state.remove(key).unwrap_or(Value::Null);
        let delta = if compacted {
            let Value::Object(ctx) = ctx else {
                return Err(corrupt("a context is not an object"));
            };
            delta_of(ctx, unset.remove(&at).unwrap_or(Value::Array(Vec::new())))
        } else {
            whole(ctx)?
        };
        state.insert(key.into(), delta);
        Ok(())
    };
    let waits = record.get("waits").cloned().unwrap_or_default();
    let graph_nodes = record
        .get("graph")
        .and_then(|g| g.get("nodes"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut converted = Vec::with_capacity(nodes.len());
    for (n, mut node) in nodes.into_iter().enumerate() {
        // The node states keep their shape ({"<kind>": {...}}); what changes is inside.
        let Some((kind, Value::Object(inner))) = node
            .as_object_mut()
            .and_then(|state| state.iter_mut().next())
            .map(|(k, v)| (k.clone(), v))
        else {
            converted.push(node); // "idle", "skipped"
            continue;
        };
        match kind.as_str() {
            "done" => {}
            "calling" | "paused" => rewrite(inner, "ctx", n.to_string())?,
            "mapping" => {
                rewrite(inner, "ctx", n.to_string())?;
                let node_id = graph_nodes.get(n).and_then(|g| g.get("id"));
                let Some(Value::Array(slots)) = inner.remove("slots") else {
                    return Err(corrupt("a FOREACH node has no slots"));
                };
                inner.remove("remaining");
                let mut items = Vec::with_capacity(slots.len());
                for (i, slot) in slots.into_iter().enumerate() {
                    let mut item = Map::new();
                    let mut state = Map::new();
                    if slot.is_null() {
                        let wait = waits.as_object().and_then(|w| {
                            w.values().find(|w| {
                                w.get("node_id") == node_id
                                    && w.get("item").and_then(Value::as_u64) == Some(i as u64)
                            })
                        });
                        let wait = wait
                            .ok_or_else(|| corrupt("a FOREACH item is neither done nor waiting"))?;
                        state.insert("wait_id".into(), wait["wait_id"].clone());
                        item.insert("paused".into(), Value::Object(state));
                    } else {
                        state.insert("output".into(), slot);
                        item.insert("done".into(), Value::Object(state));
                    }
                    items.push(Value::Object(item));
                }
                // Every open item is already paused: nothing is built from `base`.
                inner.insert("base".into(), Value::Object(Map::new()));
                inner.insert("iterator".into(), Value::String("item".into()));
                inner.insert("items".into(), Value::Array(items));
            }
            "waiting" => {
                let Some(Value::Array(arrivals)) = inner.get_mut("arrivals") else {
                    return Err(corrupt("a waiting node has no arrivals"));
                };
                for (slot, arrival) in arrivals.iter_mut().enumerate() {
                    if let Some(Value::Object(delivered)) = arrival.get_mut("delivered") {
                        rewrite(delivered, "ctx", format!("{n}.{slot}"))?;
                    } else if let Some(Value::Object(items)) = arrival.get_mut("items") {
                        // Version 1 never compacted these: they are whole.
                        for key in ["ctx", "base"] {
                            let whole_ctx = whole(items.remove(key).unwrap_or(Value::Null))?;
                            items.insert(key.into(), whole_ctx);
                        }
                    }
                }
            }
            other => return Err(corrupt(&format!("unknown node state '{other}'"))),
        }
        converted.push(node);
    }
    record.insert("nodes".into(), Value::Array(converted));

    if let Some(Value::Object(resumed)) = record.remove("resumed") {
        let closed: Map<String, Value> = resumed
            .into_iter()
            .map(|(wait_id, mut r)| {
                r["how"] = json!("resumed");
                (wait_id, r)
            })
            .collect();
        record.insert("closed".into(), Value::Object(closed));
    }
    // Pin named components as the deployment resolves them today.
    let graph = parse_graph(record.get("graph").unwrap_or(&Value::Null), &mut Vec::new())
        .ok_or_else(|| corrupt("no graph"))?;
    let pinned: Map<String, Value> = graph
        .nodes
        .iter()
        .filter_map(|node| {
            let cid = node.component_id.as_ref()?;
            match directory.resolve(cid)? {
                ComponentRef::Http(url) if &url != cid => Some((cid.clone(), json!(url))),
                _ => None,
            }
        })
        .collect();
    record.insert("components".into(), Value::Object(pinned));
    Ok(old)
}
