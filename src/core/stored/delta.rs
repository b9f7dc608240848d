//! Stored contexts as deltas. A context held by a paused, mapping or waiting
//! node is, almost always, the trigger context with upstream outputs merged
//! in — data the record already holds once, as node outputs. In the stored
//! record each such context is its difference from that baseline, rebuilt on
//! load, so a paused run costs about its context plus its outputs rather than
//! twice that.
//!
//! The baseline is a pure function of the record and the graph (the trigger
//! context, then every finished node's output in topological order), so it is
//! the same when the record is written and when it is read back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::super::dates;
use super::super::plan::Plan;
use super::super::protocol::RESULT_STATUS_KEYS;

/// One stored context: the keys that differ from the baseline, and the
/// baseline keys it lacks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub set: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unset: Vec<String>,
}

pub struct Baseline<'a>(BTreeMap<&'a str, &'a Value>);

impl<'a> Baseline<'a> {
    /// The trigger context with every finished node's output merged in, in
    /// topological order. `output(n)` is node `n`'s output if it is done.
    pub fn new(
        context: &'a Map<String, Value>,
        plan: &Plan,
        output: impl Fn(usize) -> Option<&'a Value>,
    ) -> Self {
        // The date variables do not flow (`core::dates`): they are left out,
        // so a context without them stores no `unset` for them. A record
        // from before, whose contexts held them, reads back with them only
        // where a context's value differed from the run's — the same values
        // its readers see through the run's date layer.
        let mut base: BTreeMap<&str, &Value> = context
            .iter()
            .filter(|(k, _)| !dates::is_date_var(k))
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        for &n in &plan.order {
            if let Some(Value::Object(fields)) = output(n) {
                base.extend(
                    fields
                        .iter()
                        .filter(|(k, _)| !RESULT_STATUS_KEYS.contains(&k.as_str()))
                        .map(|(k, v)| (k.as_str(), v)),
                );
            }
        }
        Self(base)
    }

    pub fn delta(&self, ctx: &Map<String, Value>) -> Delta {
        Delta {
            set: ctx
                .iter()
                .filter(|(k, v)| self.0.get(k.as_str()) != Some(v))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            unset: self
                .0
                .keys()
                .filter(|k| !ctx.contains_key(**k))
                .map(|k| k.to_string())
                .collect(),
        }
    }

    /// An owned copy, for rebuilding contexts while the values it was built
    /// from are moved elsewhere.
    pub fn to_map(&self) -> Map<String, Value> {
        self.0
            .iter()
            .map(|(k, v)| (k.to_string(), (*v).clone()))
            .collect()
    }
}

/// The context a delta stands for, over the baseline `base`.
pub fn expand(base: &Map<String, Value>, delta: Delta) -> Map<String, Value> {
    let mut full = base.clone();
    for k in delta.unset {
        full.remove(&k);
    }
    full.extend(delta.set);
    full
}

/// Outputs stored as deltas (format version 4). A node that passes on what
/// it received (an Input or Output node, a pass-through component) answers
/// with an object that is, nearly always, the outputs before it merged over
/// the trigger context. Such an output is stored as its difference from
/// that running baseline — the trigger context (without the date
/// variables), then each earlier node's output in topological order — when
/// at most half its keys differ; any other output is stored as it is.
///
/// Linear in the outputs' sizes: the running baseline is extended, never
/// rebuilt, and a candidate delta is given up as soon as it is too large.
pub fn output_deltas<'a>(
    context: &'a Map<String, Value>,
    plan: &Plan,
    output: impl Fn(usize) -> Option<&'a Value>,
) -> Vec<Option<Delta>> {
    let mut deltas = vec![None; plan.graph.nodes.len()];
    let mut base: BTreeMap<&str, &Value> = context
        .iter()
        .filter(|(k, _)| !dates::is_date_var(k))
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    for &n in &plan.order {
        let Some(Value::Object(fields)) = output(n) else {
            continue;
        };
        deltas[n] = small_delta(&base, fields);
        base.extend(
            fields
                .iter()
                .filter(|(k, _)| !RESULT_STATUS_KEYS.contains(&k.as_str()))
                .map(|(k, v)| (k.as_str(), v)),
        );
    }
    deltas
}

/// `fields` as a delta over `base`, if at most half its keys' worth differs.
fn small_delta(base: &BTreeMap<&str, &Value>, fields: &Map<String, Value>) -> Option<Delta> {
    let budget = fields.len() / 2;
    let mut set = Map::new();
    for (k, v) in fields {
        if base.get(k.as_str()) != Some(&v) {
            set.insert(k.clone(), v.clone());
            if set.len() > budget {
                return None;
            }
        }
    }
    let mut unset = Vec::new();
    // Hits are at most `fields.len()`, misses at most the budget.
    for k in base.keys() {
        if !fields.contains_key(*k) {
            unset.push(k.to_string());
            if set.len() + unset.len() > budget {
                return None;
            }
        }
    }
    Some(Delta { set, unset })
}

/// Expands the outputs stored as deltas, in topological order over the
/// same running baseline `output_deltas` used. `output(n)` is node `n`'s
/// output if it is stored whole; `delta(n)` takes node `n`'s delta if it is
/// stored as one. Returns the expanded outputs by node.
pub fn expand_outputs<'a>(
    context: &Map<String, Value>,
    plan: &Plan,
    output: impl Fn(usize) -> Option<&'a Value>,
    mut delta: impl FnMut(usize) -> Option<Delta>,
) -> Vec<Option<Value>> {
    let mut expanded: Vec<Option<Value>> = vec![None; plan.graph.nodes.len()];
    let mut base: Map<String, Value> = context
        .iter()
        .filter(|(k, _)| !dates::is_date_var(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let extend = |base: &mut Map<String, Value>, v: &Value| {
        if let Value::Object(fields) = v {
            base.extend(
                fields
                    .iter()
                    .filter(|(k, _)| !RESULT_STATUS_KEYS.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
        }
    };
    for &n in &plan.order {
        if let Some(d) = delta(n) {
            let value = Value::Object(expand(&base, d));
            extend(&mut base, &value);
            expanded[n] = Some(value);
        } else if let Some(v) = output(n) {
            extend(&mut base, v);
        }
    }
    expanded
}
