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
