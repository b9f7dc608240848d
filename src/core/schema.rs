//! JSON Schemas made self-contained. The API's documents (`openapi.json` and
//! the graph schema it refers to) describe each answer once, with `$ref`s
//! between and across them; a client handed one schema alone — an MCP tool's
//! input or output schema — cannot follow those. [`Bundle`] copies a schema
//! out of the documents with everything it reaches under its own `$defs`,
//! each `$ref` rewritten to point there, so the copy follows the documents
//! whenever they change.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use percent_encoding::percent_decode_str;
use serde_json::{Map, Value};

/// A `$ref` that leads nowhere in the documents given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved(pub String);

impl fmt::Display for Unresolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "schema reference {} does not resolve", self.0)
    }
}

/// Keywords whose value is a map of names to schemas: the names are not
/// keywords, so a property called `$ref` or `$defs` is left alone.
const NAMED_SCHEMAS: [&str; 3] = ["properties", "patternProperties", "dependentSchemas"];
/// Keywords whose value is data, never a schema.
const DATA: [&str; 5] = ["enum", "const", "default", "examples", "example"];
/// Keywords dropped from every copied schema: what they held is reached by
/// pointer into the original document and carried in the bundle's `$defs`
/// only if used; an `$id` would change where the copy's `$ref`s point.
const DROPPED: [&str; 4] = ["$schema", "$id", "$defs", "definitions"];
/// A document that, through whole-document references, includes itself.
const MAX_INLINE_DEPTH: usize = 8;

/// The documents a bundle draws from, each named by its path (as `$ref`s
/// between them spell it: `openapi.json`, `schema/graph.json`), and the
/// definitions gathered so far.
pub struct Bundle<'a> {
    documents: &'a [(&'a str, Value)],
    /// `(document, pointer)` of each definition → its name in `$defs`.
    names: BTreeMap<(String, String), String>,
    taken: BTreeSet<String>,
    pending: Vec<(String, String, String)>,
}

impl<'a> Bundle<'a> {
    pub fn new(documents: &'a [(&'a str, Value)]) -> Self {
        Self {
            documents,
            names: BTreeMap::new(),
            taken: BTreeSet::new(),
            pending: Vec::new(),
        }
    }

    /// The schema at `pointer` (a JSON pointer, `""` for the whole) in
    /// `document`, self-contained. A root that is itself a reference is
    /// followed, so the answer is the schema, not a pointer to it.
    pub fn at(self, document: &str, pointer: &str) -> Result<Value, Unresolved> {
        let (mut doc, mut schema) = (
            document.to_string(),
            self.resolve(document, pointer)?.clone(),
        );
        for _ in 0..MAX_INLINE_DEPTH {
            let Some(reference) = schema.get("$ref").and_then(Value::as_str) else {
                return self.bundle(&doc, &schema);
            };
            let (next_doc, next_pointer) = self.target(&doc, reference)?;
            let mut followed = self.resolve(&next_doc, &next_pointer)?.clone();
            overlay(&mut followed, &schema);
            (doc, schema) = (next_doc, followed);
        }
        Err(Unresolved(format!(
            "{document}#{pointer} (a circle of references)"
        )))
    }

    /// `schema`, written as if it were in `document` (its `$ref`s are read
    /// from there), with every definition it reaches under `$defs`.
    pub fn bundle(mut self, document: &str, schema: &Value) -> Result<Value, Unresolved> {
        let mut root = self.rewrite(document, schema, 0)?;
        let mut defs = Map::new();
        while let Some((doc, pointer, name)) = self.pending.pop() {
            let target = self.resolve(&doc, &pointer)?.clone();
            let copied = self.rewrite(&doc, &target, 0)?;
            defs.insert(name, copied);
        }
        if let (Value::Object(root), false) = (&mut root, defs.is_empty()) {
            root.insert("$defs".into(), Value::Object(defs));
        }
        Ok(root)
    }

    fn resolve(&self, document: &str, pointer: &str) -> Result<&'a Value, Unresolved> {
        let (_, doc) = self
            .documents
            .iter()
            .find(|(name, _)| *name == document)
            .ok_or_else(|| Unresolved(format!("{document}#{pointer}")))?;
        doc.pointer(pointer)
            .ok_or_else(|| Unresolved(format!("{document}#{pointer}")))
    }

    /// The document and pointer a `$ref` written in `document` names.
    fn target(&self, document: &str, reference: &str) -> Result<(String, String), Unresolved> {
        let unresolved = || Unresolved(format!("{reference} (in {document})"));
        let (path, fragment) = reference.split_once('#').unwrap_or((reference, ""));
        let doc = if path.is_empty() {
            document.to_string()
        } else if let Some((_, after_scheme)) = path.split_once("://") {
            // An absolute URL names a document by where it is served.
            let served = after_scheme.split_once('/').map_or("", |(_, p)| p);
            self.documents
                .iter()
                .map(|(name, _)| *name)
                .find(|name| served == *name || served.ends_with(&format!("/{name}")))
                .ok_or_else(unresolved)?
                .to_string()
        } else {
            relative(document, path)
        };
        let pointer = percent_decode_str(fragment).decode_utf8_lossy();
        if !(pointer.is_empty() || pointer.starts_with('/')) {
            return Err(unresolved()); // an anchor: the documents use none
        }
        self.resolve(&doc, &pointer)?;
        Ok((doc, pointer.into_owned()))
    }

    /// The name a definition goes by in `$defs`: its own (the pointer's last
    /// step, or the document's name), made unique.
    fn name_of(&mut self, doc: &str, pointer: &str) -> String {
        let key = (doc.to_string(), pointer.to_string());
        if let Some(name) = self.names.get(&key) {
            return name.clone();
        }
        let base = match pointer.rsplit('/').next() {
            Some(step) if !pointer.is_empty() => step.replace("~1", "/").replace("~0", "~"),
            _ => doc
                .rsplit('/')
                .next()
                .unwrap_or(doc)
                .trim_end_matches(".json")
                .to_string(),
        };
        let mut name = base.clone();
        let mut n = 1;
        while self.taken.contains(&name) {
            n += 1;
            name = format!("{base}_{n}");
        }
        self.taken.insert(name.clone());
        self.names.insert(key, name.clone());
        self.pending
            .push((doc.to_string(), pointer.to_string(), name.clone()));
        name
    }

    fn rewrite(
        &mut self,
        document: &str,
        value: &Value,
        depth: usize,
    ) -> Result<Value, Unresolved> {
        match value {
            Value::Array(items) => items
                .iter()
                .map(|item| self.rewrite(document, item, depth))
                .collect(),
            Value::Object(schema) => self.rewrite_object(document, schema, depth),
            other => Ok(other.clone()),
        }
    }

    fn rewrite_object(
        &mut self,
        document: &str,
        schema: &Map<String, Value>,
        depth: usize,
    ) -> Result<Value, Unresolved> {
        let mut out = Map::new();
        for (key, value) in schema {
            if DROPPED.contains(&key.as_str()) || key == "$ref" {
                continue;
            }
            let copied = match (key.as_str(), value) {
                (k, _) if DATA.contains(&k) => value.clone(),
                (k, Value::Object(named)) if NAMED_SCHEMAS.contains(&k) => {
                    let mut map = Map::new();
                    for (name, sub) in named {
                        map.insert(name.clone(), self.rewrite(document, sub, depth)?);
                    }
                    Value::Object(map)
                }
                _ => self.rewrite(document, value, depth)?,
            };
            out.insert(key.clone(), copied);
        }
        let Some(reference) = schema.get("$ref").and_then(Value::as_str) else {
            return Ok(Value::Object(out));
        };
        let (doc, pointer) = self.target(document, reference)?;
        // A whole other document (the graph, from the API's) is copied in
        // place: it is the thing described there, not a shared definition.
        let whole_document = pointer.is_empty() && doc != document;
        if whole_document {
            if depth >= MAX_INLINE_DEPTH {
                return Err(Unresolved(format!("{reference} (includes itself)")));
            }
            let target = self.resolve(&doc, &pointer)?.clone();
            let mut inlined = self.rewrite(&doc, &target, depth + 1)?;
            overlay(&mut inlined, &Value::Object(out));
            return Ok(inlined);
        }
        let name = self.name_of(&doc, &pointer);
        out.insert("$ref".into(), Value::from(format!("#/$defs/{name}")));
        Ok(Value::Object(out))
    }
}

/// The keywords written beside a `$ref` laid over the schema it was
/// followed to; a description beside it comes first, the target's after.
fn overlay(target: &mut Value, beside: &Value) {
    let (Value::Object(target), Value::Object(beside)) = (target, beside) else {
        return;
    };
    for (key, value) in beside {
        if key == "$ref" {
            continue;
        }
        let joined = match (key.as_str(), value, target.get(key)) {
            ("description", Value::String(first), Some(Value::String(then))) => {
                Value::from(format!("{first}\n\n{then}"))
            }
            _ => value.clone(),
        };
        target.insert(key.clone(), joined);
    }
}

/// `path` read from the directory `document` is in (`./` and `../` steps
/// taken).
fn relative(document: &str, path: &str) -> String {
    let mut steps: Vec<&str> = document.split('/').collect();
    steps.pop();
    for step in path.split('/') {
        match step {
            "." | "" => {}
            ".." => {
                steps.pop();
            }
            step => steps.push(step),
        }
    }
    steps.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const API: &str = include_str!("../../public/openapi.json");
    const GRAPH: &str = include_str!("../../public/schema/graph.json");

    fn documents() -> Vec<(&'static str, Value)> {
        vec![
            ("openapi.json", serde_json::from_str(API).unwrap()),
            ("schema/graph.json", serde_json::from_str(GRAPH).unwrap()),
        ]
    }

    /// Every `$ref` in `schema` points into its own `$defs`, and resolves.
    fn assert_self_contained(schema: &Value) {
        fn walk(value: &Value, root: &Value, under_data: bool) {
            match value {
                Value::Object(map) => {
                    if let (Some(Value::String(r)), false) = (map.get("$ref"), under_data) {
                        let pointer = r.strip_prefix('#').expect("a local reference");
                        assert!(pointer.starts_with("/$defs/"), "{r}");
                        assert!(root.pointer(pointer).is_some(), "{r} resolves");
                    }
                    for (k, v) in map {
                        walk(v, root, under_data || DATA.contains(&k.as_str()));
                    }
                }
                Value::Array(items) => items.iter().for_each(|v| walk(v, root, under_data)),
                _ => {}
            }
        }
        walk(schema, schema, false);
    }

    #[test]
    fn every_component_of_the_api_bundles_self_contained() {
        let docs = documents();
        let components = docs[0].1["components"]["schemas"].as_object().unwrap();
        assert!(components.len() > 10);
        for name in components.keys() {
            let pointer = format!("/components/schemas/{name}");
            let schema = Bundle::new(&docs).at("openapi.json", &pointer).unwrap();
            assert_self_contained(&schema);
            assert!(
                schema.get("$ref").is_none(),
                "{name}: a root is a schema, not a pointer"
            );
        }
    }

    #[test]
    fn the_graph_document_is_copied_in_place_with_its_definitions() {
        let docs = documents();
        let stored = Bundle::new(&docs)
            .at("openapi.json", "/components/schemas/StoredWorkflow")
            .unwrap();
        assert_self_contained(&stored);
        // The graph is inlined where the answer holds it, so its nodes'
        // definitions are reached from the answer's own `$defs`.
        let graph = stored.pointer("/$defs/Graph").expect("the Graph component");
        assert_eq!(graph["required"], json!(["nodes"]));
        let node = stored.pointer("/$defs/Node").expect("the graph's Node");
        assert!(node["properties"]["join"].is_object());
        assert!(stored.get("$schema").is_none() && graph.get("$defs").is_none());
        // Its description says where it comes from, then what it is.
        let description = graph["description"].as_str().unwrap();
        assert!(description.starts_with("The graph format"), "{description}");
    }

    #[test]
    fn a_schema_written_beside_the_documents_reads_its_references_from_there() {
        let docs = documents();
        let input = json!({
            "type": "object",
            "properties": {
                "graph": { "$ref": "schema/graph.json", "description": "Run this." },
                "context": { "$ref": "#/components/schemas/Context" },
                "$ref": { "type": "string", "description": "a property, not a reference" }
            },
            "examples": [{ "$ref": "data, not a reference" }]
        });
        let bundled = Bundle::new(&docs).bundle("openapi.json", &input).unwrap();
        assert_self_contained(&bundled);
        let graph = &bundled["properties"]["graph"];
        assert_eq!(graph["type"], "object");
        assert!(graph["description"]
            .as_str()
            .unwrap()
            .starts_with("Run this.\n\n"));
        assert_eq!(
            graph["properties"]["nodes"]["items"]["$ref"],
            "#/$defs/Node"
        );
        assert_eq!(bundled["properties"]["context"]["$ref"], "#/$defs/Context");
        assert_eq!(bundled["properties"]["$ref"]["type"], "string");
        assert_eq!(bundled["examples"][0]["$ref"], "data, not a reference");
    }

    #[test]
    fn names_that_clash_are_told_apart_and_missing_targets_refused() {
        let docs = vec![
            ("a.json", json!({ "$defs": { "X": { "type": "string" } } })),
            (
                "b/c.json",
                json!({ "$defs": { "X": { "type": "integer" } }, "up": { "$ref": "../a.json#/$defs/X" } }),
            ),
        ];
        let both = json!({ "anyOf": [
            { "$ref": "#/$defs/X" },
            { "$ref": "b/c.json#/$defs/X" },
            { "$ref": "b/c.json#/up" }
        ] });
        let bundled = Bundle::new(&docs).bundle("a.json", &both).unwrap();
        assert_self_contained(&bundled);
        assert_eq!(bundled["$defs"]["X"]["type"], "string");
        assert_eq!(bundled["$defs"]["X_2"]["type"], "integer");
        assert_eq!(bundled["$defs"]["up"]["$ref"], "#/$defs/X");
        for missing in ["#/$defs/Y", "nowhere.json", "#anchor"] {
            let err = Bundle::new(&docs)
                .bundle("a.json", &json!({ "$ref": missing }))
                .unwrap_err();
            assert!(err.to_string().contains(missing), "{err}");
        }
    }
}
