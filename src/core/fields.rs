//! A JSON object held as a persistent map, for the contexts that flow along
//! edges and the object outputs of nodes.
//!
//! A chain of nodes that each add a key to what they were given would, with
//! plain maps, copy the whole context at every node and hold every copy as an
//! output: quadratic time, memory and byte accounting. A `Fields` is cloned
//! by taking a reference, and changed by copying only the path of the B-tree
//! that leads to the change; two maps that came from one another share every
//! other node, and `changes_from` walks past what they share without
//! comparing it. So a node's input is its context plus its data without a
//! copy, a pass-through's output is that input, and what a node adds costs
//! what it adds.
//!
//! Keys and values are held behind `Rc`: copying a path copies pointers,
//! never the JSON under them, so a large value (a scraped page, a model's
//! answer) is held once however many contexts and outputs carry it. Keys
//! are kept sorted, as `serde_json::Map` keeps them, so a `Fields`
//! serializes exactly as the map it replaced.

use std::cell::OnceCell;
use std::fmt;
use std::rc::Rc;

use imbl::ordmap::DiffItem;
use imbl::shared_ptr::RcK;
use imbl::GenericOrdMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::template::{json_size, walk, Scope};

/// `Rc` rather than `Arc`: a run lives on one thread (one isolate).
type Tree = GenericOrdMap<Rc<str>, Rc<Value>, RcK>;

#[derive(Clone, Default)]
pub struct Fields {
    tree: Tree,
    whole: Whole,
}

/// The map as one JSON object, built the first time something reads the
/// whole of it (a template's `{{node_id}}`), and dropped by any change.
#[derive(Clone, Default)]
struct Whole(OnceCell<Rc<Value>>);

impl PartialEq for Fields {
    fn eq(&self, other: &Self) -> bool {
        self.tree == other.tree
    }
}

/// One difference between two `Fields`: a key with a new or changed value,
/// or a key that is gone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change<'a> {
    Set(&'a str, &'a Value),
    Unset(&'a str),
}

impl Fields {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.tree.get(key).map(|v| &**v)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.tree.contains_key(key)
    }

    pub fn insert(&mut self, key: String, value: Value) {
        self.whole = Whole::default();
        self.tree.insert(key.into(), Rc::new(value));
    }

    /// Whether there was such a key.
    pub fn remove(&mut self, key: &str) -> bool {
        self.whole = Whole::default();
        self.tree.remove(key).is_some()
    }

    /// The whole map as a JSON object, copied out once and kept until the
    /// map changes (clones share it).
    pub fn as_value(&self) -> &Value {
        self.whole
            .0
            .get_or_init(|| Rc::new(Value::Object(self.to_map())))
    }

    pub fn len(&self) -> usize {
        self.tree.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.tree.iter().map(|(k, v)| (&**k, &**v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.tree.keys().map(|k| &**k)
    }

    /// A plain map with the same entries (for what leaves the run: a
    /// component's request body, an answer).
    pub fn to_map(&self) -> Map<String, Value> {
        self.iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    /// Its size as JSON text, as `template::json_map_size` counts a map.
    pub fn json_size(&self) -> usize {
        2 + self
            .iter()
            .map(|(k, v)| k.len() + 4 + json_size(v))
            .sum::<usize>()
    }

    /// Whether the two are one map (not merely equal): nothing to compare.
    pub fn same(&self, other: &Self) -> bool {
        self.tree.ptr_eq(&other.tree)
    }

    /// `self` with `top`'s fields laid on, those `skip` names aside: a merge
    /// adds and replaces, never removes. When `top` only adds to `self`
    /// (what a pass-through does), the result is `top` itself, its tree
    /// shared, so what is built on either compares cheaply with the other.
    pub fn merged_with(&self, top: &Fields, skip: impl Fn(&str) -> bool) -> Fields {
        if top.len() < self.len() {
            // Smaller, so it cannot hold all of `self`: its entries are laid
            // on one by one (comparing the two would walk all of `self`).
            let mut merged = self.clone();
            merged.whole = Whole::default();
            for (k, v) in top.tree.iter() {
                if !skip(k) && self.tree.get(&**k) != Some(v) {
                    merged.tree.insert(Rc::clone(k), Rc::clone(v));
                }
            }
            return merged;
        }
        let changes: Vec<Change> = top.changes_from(self).collect();
        self.merged_by(top, &changes, skip)
    }

    /// `merged_with` for a caller that has `top.changes_from(self)` already.
    pub fn merged_by(
        &self,
        top: &Fields,
        changes: &[Change],
        skip: impl Fn(&str) -> bool,
    ) -> Fields {
        let laid_on = |c: &Change| matches!(c, Change::Set(k, _) if !skip(k));
        if changes.iter().all(laid_on) {
            return top.clone();
        }
        let mut merged = self.clone();
        merged.apply(top, changes.iter().copied().filter(laid_on));
        merged
    }

    /// `changes_from(before)`, if there are at most `most` of them; the walk
    /// stops at the first one past that.
    pub fn changes_within<'a>(&'a self, before: &'a Self, most: usize) -> Option<Vec<Change<'a>>> {
        let mut changes = Vec::new();
        for change in self.changes_from(before) {
            if changes.len() == most {
                return None;
            }
            changes.push(change);
        }
        Some(changes)
    }

    /// What `self` changes from `before`, in key order. Subtrees the two
    /// share are skipped without being compared, so the cost follows the
    /// changes (and the paths to them), not the size of either map.
    pub fn changes_from<'a>(&'a self, before: &'a Self) -> impl Iterator<Item = Change<'a>> {
        before.tree.diff(&self.tree).map(|d| match d {
            DiffItem::Add(k, v) | DiffItem::Update { new: (k, v), .. } => Change::Set(k, v),
            DiffItem::Remove(k, _) => Change::Unset(k),
        })
    }

    /// `self` with the entries of `other` that `changes_from` named, shared
    /// rather than copied: `Change`s borrowed from `other` are laid on.
    pub fn apply<'a>(&mut self, other: &'a Self, changes: impl IntoIterator<Item = Change<'a>>) {
        self.whole = Whole::default();
        for change in changes {
            match change {
                Change::Set(k, _) => {
                    if let Some((k, v)) = other.tree.get_key_value(k) {
                        self.tree.insert(Rc::clone(k), Rc::clone(v));
                    }
                }
                Change::Unset(k) => {
                    self.tree.remove(k);
                }
            }
        }
    }
}

impl From<Map<String, Value>> for Fields {
    fn from(map: Map<String, Value>) -> Self {
        map.into_iter().collect()
    }
}

impl From<Fields> for Map<String, Value> {
    fn from(fields: Fields) -> Self {
        fields.into_iter().collect()
    }
}

impl From<Fields> for Value {
    fn from(fields: Fields) -> Self {
        Value::Object(fields.into())
    }
}

impl FromIterator<(String, Value)> for Fields {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(iter: I) -> Self {
        Self {
            tree: iter
                .into_iter()
                .map(|(k, v)| (Rc::from(k), Rc::new(v)))
                .collect(),
            whole: Whole::default(),
        }
    }
}

impl Extend<(String, Value)> for Fields {
    fn extend<I: IntoIterator<Item = (String, Value)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

type Entry = (Rc<str>, Rc<Value>);

impl IntoIterator for Fields {
    type Item = (String, Value);
    type IntoIter = std::iter::Map<
        imbl::ordmap::ConsumingIter<Rc<str>, Rc<Value>, RcK>,
        fn(Entry) -> (String, Value),
    >;
    /// Values no other map shares are moved out, the others copied.
    fn into_iter(self) -> Self::IntoIter {
        self.tree
            .into_iter()
            .map(|(k, v)| (k.to_string(), Rc::unwrap_or_clone(v)))
    }
}

impl fmt::Debug for Fields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for Fields {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Map::<String, Value>::deserialize(deserializer).map(Self::from)
    }
}

impl Scope for Fields {
    fn lookup(&self, path: &str) -> Option<&Value> {
        let mut parts = path.split('.');
        let first = self.get(parts.next()?)?;
        walk(first, parts)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(v: Value) -> Fields {
        match v {
            Value::Object(m) => m.into(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn serializes_as_the_map_it_holds() {
        let v = json!({"b": 1, "a": {"z": [1, 2]}, "c": null});
        let f = fields(v.clone());
        assert_eq!(serde_json::to_string(&f).unwrap(), v.to_string());
        let back: Fields = serde_json::from_str(&v.to_string()).unwrap();
        assert_eq!(back, f);
        assert_eq!(Value::from(f), v);
    }

    #[test]
    fn changes_are_what_was_set_and_unset() {
        let before = fields(json!({"a": 1, "b": 2, "c": 3}));
        let mut after = before.clone();
        after.insert("b".into(), json!(20));
        after.insert("d".into(), json!(4));
        after.remove("a");
        let changes: Vec<_> = after.changes_from(&before).collect();
        assert_eq!(
            changes,
            vec![
                Change::Unset("a"),
                Change::Set("b", &json!(20)),
                Change::Set("d", &json!(4)),
            ]
        );
        // Equal maps built apart have no changes either.
        let rebuilt = fields(json!({"a": 1, "b": 2, "c": 3}));
        assert_eq!(rebuilt.changes_from(&before).count(), 0);
        assert!(before.clone().same(&before) && !rebuilt.same(&before));
    }

    #[test]
    fn merging_adds_and_replaces_and_an_output_that_only_adds_is_taken_whole() {
        let ctx = fields(json!({"a": 1, "b": 2}));
        let mut out = ctx.clone();
        out.insert("c".into(), json!(3));
        let merged = ctx.merged_with(&out, |_| false);
        assert!(merged.same(&out), "only adds: the output itself");
        let small = fields(json!({"b": 20, "success": true}));
        let merged = ctx.merged_with(&small, |k| k == "success");
        assert_eq!(Value::from(merged), json!({"a": 1, "b": 20}));
        let other = fields(json!({"a": 1, "x": 9, "y": 8, "success": false}));
        let merged = ctx.merged_with(&other, |k| k == "success");
        assert_eq!(Value::from(merged), json!({"a": 1, "b": 2, "x": 9, "y": 8}));
    }

    #[test]
    fn a_large_map_and_its_one_key_successor_share_what_they_do_not_change() {
        let big: Fields = (0..10_000)
            .map(|i| (format!("k{i:05}"), json!(i)))
            .collect();
        let mut next = big.clone();
        next.insert("k05000".into(), json!("changed"));
        let changes: Vec<_> = next.changes_from(&big).collect();
        assert_eq!(changes.len(), 1);
        assert!(big.get("k05000") == Some(&json!(5000)));
    }
}
