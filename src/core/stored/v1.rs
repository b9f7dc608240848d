//! Version 1 of the stored run record, written by the first release, read
//! by rewriting it into a version-2 document (JSON to JSON) that the v2
//! reader then loads — so there is one reader of typed records, and the
//! migration adds no deserializers of its own to the bundle.
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
    let mut delta = |ctx: Value, at: String| -> Result<Value, EngineError> {
        let Value::Object(ctx) = ctx else {
            return Err(corrupt("a context is not an object"));
        };
        let removed = if compacted {
            unset.remove(&at).unwrap_or_else(|| json!([]))
        } else {
            json!(base_keys
                .iter()
                .filter(|k| !ctx.contains_key(*k))
                .collect::<Vec<_>>())
        };
        Ok(json!({ "set": ctx, "unset": removed }))
    };
    let whole = |ctx: Value| -> Result<Value, EngineError> {
        let Value::Object(ctx) = ctx else {
            return Err(corrupt("a context is not an object"));
        };
        let removed: Vec<&String> = base_keys.iter().filter(|k| !ctx.contains_key(*k)).collect();
        Ok(json!({ "set": ctx, "unset": removed }))
    };
    let waits = record.get("waits").cloned().unwrap_or_else(|| json!({}));
    let graph_nodes = record
        .get("graph")
        .and_then(|g| g.get("nodes"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut converted = Vec::with_capacity(nodes.len());
    for (n, node) in nodes.into_iter().enumerate() {
        let Value::Object(mut state) = node else {
            converted.push(node); // "idle", "skipped"
            continue;
        };
        let Some((kind, Value::Object(mut inner))) =
            state.iter_mut().next().map(|(k, v)| (k.clone(), v.take()))
        else {
            return Err(corrupt("a node state has no fields"));
        };
        let take =
            |inner: &mut Map<String, Value>, key: &str| inner.remove(key).unwrap_or(Value::Null);
        let new = match kind.as_str() {
            "done" => json!({ "done": inner }),
            "calling" => {
                json!({ "calling": { "ctx": delta(take(&mut inner, "ctx"), n.to_string())? } })
            }
            "paused" => json!({ "paused": {
                "ctx": delta(take(&mut inner, "ctx"), n.to_string())?,
                "wait_id": take(&mut inner, "wait_id"),
            } }),
            "mapping" => {
                let node_id = graph_nodes
                    .get(n)
                    .and_then(|g| g.get("id"))
                    .cloned()
                    .unwrap_or(Value::Null);
                let Value::Array(slots) = take(&mut inner, "slots") else {
                    return Err(corrupt("a FOREACH node has no slots"));
                };
                let items = slots
                    .into_iter()
                    .enumerate()
                    .map(|(i, slot)| match slot {
                        Value::Null => waits
                            .as_object()
                            .and_then(|w| {
                                w.values().find(|w| {
                                    w.get("node_id") == Some(&node_id)
                                        && w.get("item") == Some(&json!(i))
                                })
                            })
                            .map(|w| json!({ "paused": { "wait_id": w["wait_id"] } }))
                            .ok_or_else(|| corrupt("a FOREACH item is neither done nor waiting")),
                        output => Ok(json!({ "done": { "output": output } })),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                json!({ "mapping": {
                    "ctx": delta(take(&mut inner, "ctx"), n.to_string())?,
                    // Every open item is already paused: nothing is built from it.
                    "base": {},
                    "iterator": "item",
                    "items": items,
                } })
            }
            "waiting" => {
                let Value::Array(arrivals) = take(&mut inner, "arrivals") else {
                    return Err(corrupt("a waiting node has no arrivals"));
                };
                let mut out = Vec::with_capacity(arrivals.len());
                for (slot, arrival) in arrivals.into_iter().enumerate() {
                    out.push(match arrival {
                        Value::Object(mut a) if a.contains_key("delivered") => {
                            let ctx = a["delivered"].get_mut("ctx").map(Value::take);
                            let ctx = delta(ctx.unwrap_or(Value::Null), format!("{n}.{slot}"))?;
                            json!({ "delivered": { "ctx": ctx } })
                        }
                        Value::Object(mut a) if a.contains_key("items") => {
                            let items = a["items"]
                                .as_object_mut()
                                .ok_or_else(|| corrupt("bad FOREACH arrival"))?;
                            // Version 1 never compacted these: they are whole.
                            let ctx = whole(items.remove("ctx").unwrap_or(Value::Null))?;
                            let base = whole(items.remove("base").unwrap_or(Value::Null))?;
                            items.insert("ctx".into(), ctx);
                            items.insert("base".into(), base);
                            Value::Object(a)
                        }
                        other => other, // "pending", "skipped"
                    });
                }
                json!({ "waiting": { "arrivals": out } })
            }
            other => return Err(corrupt(&format!("unknown node state '{other}'"))),
        };
        converted.push(new);
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
