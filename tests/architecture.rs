//! The shape of the module graph, checked from the source text.
//!
//! - The modules of `src/adapter` import one another without a circle, and
//!   so do those of `src/core/run`: each group reads top to bottom (routes
//!   first, pure helpers last; `complete` above the `verdict` every
//!   transition shares), so a helper is found where its concern is, not in
//!   whichever module happened to need it first.
//! - `src/core` never imports `src/adapter`: the core knows nothing of
//!   Workers, and runs natively.
//!
//! An edge is any path that names another module: `use` trees (nested
//! groups, `self`, globs, `as`) and paths in code (`super::subflow::call(…)`),
//! written from `crate::`, `super::`, `self::` or a child module's name.
//! Inline modules (`mod tests { … }`) count as their file, with `super`
//! resolved from where they are. A parent's `pub use child::…` is its public
//! face, not a dependency of its own, and is not an edge. Comments and
//! string literals are skipped.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::path::Path;

/// Module groups that must import without circles.
const ACYCLIC: [&[&str]; 2] = [&["adapter"], &["core", "run"]];

type ModPath = Vec<String>;

/// A source file: the module it is, and its text.
struct Source {
    module: ModPath,
    file: String,
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Edge {
    from: ModPath,
    to: ModPath,
    /// Where it is written: `file:line`, and the path as written.
    at: String,
    path: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    PathSep,
    Punct(char),
}

/// The tokens of Rust source that matter for paths, each with its line;
/// comments, strings, characters, lifetimes and numbers are dropped.
fn tokens(text: &str) -> Vec<(Tok, usize)> {
    let c: Vec<char> = text.chars().collect();
    let (mut out, mut i, mut line) = (Vec::new(), 0, 1);
    let ident_start = |ch: char| ch.is_alphabetic() || ch == '_';
    let ident_char = |ch: char| ch.is_alphanumeric() || ch == '_';
    while i < c.len() {
        let ch = c[i];
        let next = c.get(i + 1).copied().unwrap_or('\0');
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && next == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && next == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    line += usize::from(c[i] == '\n');
                    i += 1;
                }
            }
        } else if let Some(end) = raw_string_end(&c, i) {
            line += c[i..end].iter().filter(|&&ch| ch == '\n').count();
            i = end;
        } else if ch == '"' || (ch == 'b' && next == '"') {
            i += if ch == 'b' { 2 } else { 1 };
            while i < c.len() && c[i] != '"' {
                line += usize::from(c[i] == '\n');
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if ch == '\'' || (ch == 'b' && next == '\'') {
            let at = if ch == 'b' { i + 1 } else { i };
            if c.get(at + 1) == Some(&'\\') {
                // An escaped character literal: up to its closing quote.
                i = at + 2;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if c.get(at + 2) == Some(&'\'') {
                i = at + 3;
            } else {
                // A lifetime or a label: its name is no path.
                i = at + 1;
                while i < c.len() && ident_char(c[i]) {
                    i += 1;
                }
            }
        } else if ch == 'r' && next == '#' && c.get(i + 2).is_some_and(|&ch| ident_start(ch)) {
            i += 2; // a raw identifier
        } else if ident_start(ch) {
            let start = i;
            while i < c.len() && ident_char(c[i]) {
                i += 1;
            }
            out.push((Tok::Ident(c[start..i].iter().collect()), line));
        } else if ch.is_ascii_digit() {
            while i < c.len()
                && (ident_char(c[i])
                    || c[i] == '.' && c.get(i + 1).is_some_and(char::is_ascii_digit))
            {
                i += 1;
            }
        } else if ch == ':' && next == ':' {
            out.push((Tok::PathSep, line));
            i += 2;
        } else {
            out.push((Tok::Punct(ch), line));
            i += 1;
        }
    }
    out
}

/// Where a raw string literal starting at `i` (`r"…"`, `r#"…"#`, `br#"…"#`)
/// ends, if one does.
fn raw_string_end(c: &[char], i: usize) -> Option<usize> {
    let mut at = i + usize::from(c[i] == 'b');
    if c.get(at) != Some(&'r') {
        return None;
    }
    at += 1;
    let hashes = c[at..].iter().take_while(|&&ch| ch == '#').count();
    at += hashes;
    if c.get(at) != Some(&'"') {
        return None;
    }
    at += 1;
    while at < c.len() {
        if c[at] == '"'
            && c[at + 1..]
                .iter()
                .take(hashes)
                .filter(|&&ch| ch == '#')
                .count()
                == hashes
        {
            return Some(at + 1 + hashes);
        }
        at += 1;
    }
    Some(c.len())
}

/// The flat paths of the `use` tree at `t[i..]`, under `prefix`; returns
/// where the tree ends.
fn use_tree(
    t: &[(Tok, usize)],
    mut i: usize,
    prefix: &[String],
    out: &mut Vec<Vec<String>>,
) -> usize {
    let mut path = prefix.to_vec();
    while i < t.len() {
        match &t[i].0 {
            Tok::Ident(name) => {
                path.push(name.clone());
                i += 1;
                if t.get(i).map(|t| &t.0) == Some(&Tok::PathSep) {
                    i += 1;
                    continue;
                }
                if t.get(i).map(|t| &t.0) == Some(&Tok::Ident("as".into())) {
                    i += 2;
                }
                out.push(path);
                return i;
            }
            Tok::Punct('{') => {
                i += 1;
                while i < t.len() && t[i].0 != Tok::Punct('}') {
                    i = use_tree(t, i, &path, out);
                    if t.get(i).map(|t| &t.0) == Some(&Tok::Punct(',')) {
                        i += 1;
                    }
                }
                return i + 1;
            }
            Tok::Punct('*') => {
                out.push(path);
                return i + 1;
            }
            Tok::PathSep => i += 1,
            Tok::Punct(_) => return i,
        }
    }
    i
}

/// Every module-to-module edge written in `sources` (among modules they
/// define; paths into other crates are not edges).
fn edges(sources: &[Source]) -> Vec<Edge> {
    let known: BTreeSet<ModPath> = sources.iter().map(|s| s.module.clone()).collect();
    let mut found = BTreeSet::new();
    for source in sources {
        let t = tokens(&source.text);
        let ident = |i: usize| match t.get(i) {
            Some((Tok::Ident(name), _)) => Some(name.as_str()),
            _ => None,
        };
        let is = |i: usize, tok: Tok| t.get(i).map(|t| &t.0) == Some(&tok);
        // Inline modules open here, each with the brace depth inside it.
        let mut inline: Vec<(String, usize)> = Vec::new();
        let mut depth = 0;
        let mut i = 0;
        while i < t.len() {
            let line = t[i].1;
            let here: ModPath = source
                .module
                .iter()
                .cloned()
                .chain(inline.iter().map(|m| m.0.clone()))
                .collect();
            let mut paths = Vec::new();
            let mut facade = false;
            match &t[i].0 {
                Tok::Punct('{') => depth += 1,
                Tok::Punct('}') => {
                    depth -= 1;
                    inline.retain(|m| m.1 <= depth);
                }
                Tok::Ident(kw)
                    if kw == "mod" && ident(i + 1).is_some() && is(i + 2, Tok::Punct('{')) =>
                {
                    depth += 1;
                    inline.push((ident(i + 1).unwrap_or_default().to_string(), depth));
                    i += 3;
                    continue;
                }
                Tok::Ident(kw) if kw == "use" => {
                    facade = ident(i.wrapping_sub(1)) == Some("pub")
                        || (is(i.wrapping_sub(1), Tok::Punct(')'))
                            && (2..6).any(|back| {
                                is(i.wrapping_sub(back), Tok::Punct('('))
                                    && ident(i.wrapping_sub(back + 1)) == Some("pub")
                            }));
                    i = use_tree(&t, i + 1, &[], &mut paths);
                }
                Tok::Ident(_)
                    if is(i + 1, Tok::PathSep) && !is(i.wrapping_sub(1), Tok::PathSep) =>
                {
                    let mut path = Vec::new();
                    while let Some(name) = ident(i) {
                        path.push(name.to_string());
                        if !(is(i + 1, Tok::PathSep) && ident(i + 2).is_some()) {
                            break;
                        }
                        i += 2;
                    }
                    paths.push(path);
                }
                _ => {}
            }
            i += 1;
            for path in paths {
                let Some(to) = resolve(&path, &here, &known) else {
                    continue;
                };
                let inward = to.len() > source.module.len() && to.starts_with(&source.module);
                if to == source.module || (facade && inward) {
                    continue;
                }
                found.insert(Edge {
                    from: source.module.clone(),
                    to,
                    at: format!("{}:{line}", source.file),
                    path: path.join("::"),
                });
            }
        }
    }
    found.into_iter().collect()
}

/// The module a path written in `here` names (the longest known module it
/// starts with), if it names one of ours.
fn resolve(path: &[String], here: &[String], known: &BTreeSet<ModPath>) -> Option<ModPath> {
    let first = path.first()?.as_str();
    let mut absolute: ModPath = match first {
        "crate" => Vec::new(),
        "self" | "super" => here.to_vec(),
        _ => {
            let mut child = here.to_vec();
            child.push(first.to_string());
            if !known.contains(&child) {
                return None; // another crate, or an item in scope
            }
            here.to_vec()
        }
    };
    let mut rest = path
        .iter()
        .skip(usize::from(first == "crate" || first == "self"))
        .peekable();
    while rest.peek().is_some_and(|s| *s == "super") {
        absolute.pop()?;
        rest.next();
    }
    // `self` further in (`use a::{self, B}`) is the path before it.
    absolute.extend(rest.filter(|s| *s != "self").cloned());
    (0..=absolute.len())
        .rev()
        .map(|n| absolute[..n].to_vec())
        .find(|m| known.contains(m))
}

fn name(module: &[String]) -> String {
    if module.is_empty() {
        "crate".into()
    } else {
        module.join("::")
    }
}

/// The circles among the modules under `group`: one report per set of
/// modules that all reach one another, with its shortest circle and the
/// lines that make it. Empty when there is none.
fn circles(edges: &[Edge], group: &[&str]) -> Vec<String> {
    let inside = |m: &ModPath| m.len() >= group.len() && m.iter().zip(group).all(|(a, b)| a == b);
    let mut next: BTreeMap<&ModPath, Vec<&Edge>> = BTreeMap::new();
    for e in edges.iter().filter(|e| inside(&e.from) && inside(&e.to)) {
        next.entry(&e.from).or_default().push(e);
    }
    // The shortest way from `start` back to itself, breadth first.
    let shortest = |start: &ModPath| -> Option<Vec<&Edge>> {
        let mut came: BTreeMap<&ModPath, &Edge> = BTreeMap::new();
        let mut queue = VecDeque::from([start]);
        while let Some(at) = queue.pop_front() {
            for &e in next.get(at).into_iter().flatten() {
                if &e.to == start {
                    let mut cycle = vec![e];
                    while &cycle[cycle.len() - 1].from != start {
                        cycle.push(came[&cycle[cycle.len() - 1].from]);
                    }
                    cycle.reverse();
                    return Some(cycle);
                }
                if !came.contains_key(&e.to) {
                    came.insert(&e.to, e);
                    queue.push_back(&e.to);
                }
            }
        }
        None
    };
    let reach = |start: &ModPath| -> BTreeSet<ModPath> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![start.clone()];
        while let Some(at) = stack.pop() {
            for e in next.get(&at).into_iter().flatten() {
                if seen.insert(e.to.clone()) {
                    stack.push(e.to.clone());
                }
            }
        }
        seen
    };
    let reached: BTreeMap<&ModPath, BTreeSet<ModPath>> =
        next.keys().map(|&m| (m, reach(m))).collect();
    let mut reported = BTreeSet::new();
    let mut out = Vec::new();
    for (&module, reaches) in &reached {
        let knot: BTreeSet<&ModPath> = reaches
            .iter()
            .filter_map(|m| reached.get_key_value(m).map(|(&k, _)| k))
            .filter(|m| reached[m].contains(module))
            .collect();
        if !knot.contains(module) || !reported.insert(knot.clone()) {
            continue;
        }
        let Some(cycle) = knot.iter().filter_map(|m| shortest(m)).min_by_key(Vec::len) else {
            continue;
        };
        let mut text = cycle
            .iter()
            .map(|e| name(&e.from))
            .collect::<Vec<_>>()
            .join(" → ");
        let _ = write!(text, " → {}", name(&cycle[0].from));
        if knot.len() > cycle.len() {
            let all: Vec<String> = knot.iter().map(|m| name(m)).collect();
            let _ = write!(
                text,
                " (one circle of {} modules that all reach one another: {})",
                knot.len(),
                all.join(", ")
            );
        }
        for e in cycle {
            let _ = write!(
                text,
                "\n    {} → {}: {} `{}`",
                name(&e.from),
                name(&e.to),
                e.at,
                e.path
            );
        }
        out.push(text);
    }
    out
}

/// Every `.rs` file under `src/`, as the module it is.
fn crate_sources() -> Vec<Source> {
    fn walk(dir: &Path, module: &ModPath, out: &mut Vec<Source>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .expect("read src")
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for path in entries {
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string();
            if path.is_dir() {
                let mut inner = module.clone();
                inner.push(stem);
                walk(&path, &inner, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let mut this = module.clone();
                if !matches!(stem.as_str(), "mod" | "lib" | "main") {
                    this.push(stem);
                }
                let file = path
                    .strip_prefix(env!("CARGO_MANIFEST_DIR"))
                    .unwrap_or(&path)
                    .display()
                    .to_string();
                let text = std::fs::read_to_string(&path).expect("read source");
                out.push(Source {
                    module: this,
                    file,
                    text,
                });
            }
        }
    }
    let mut out = Vec::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &Vec::new(),
        &mut out,
    );
    out
}

#[test]
fn adapter_and_run_modules_import_without_circles() {
    let sources = crate_sources();
    assert!(
        sources.iter().any(|s| s.module == ["adapter", "routes"]),
        "src/ was not found"
    );
    let edges = edges(&sources);
    let mut found = Vec::new();
    for group in ACYCLIC {
        found.extend(circles(&edges, group));
    }
    assert!(
        found.is_empty(),
        "modules import one another in a circle; move what both need to the module that owns \
         its concern, below both:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_core_never_imports_the_adapter() {
    let edges = edges(&crate_sources());
    let up: Vec<String> = edges
        .iter()
        .filter(|e| {
            e.from.first().is_some_and(|m| m == "core")
                && e.to.first().is_some_and(|m| m == "adapter")
        })
        .map(|e| format!("{} → {}: {} `{}`", name(&e.from), name(&e.to), e.at, e.path))
        .collect();
    assert!(
        up.is_empty(),
        "the core imports the adapter:\n{}",
        up.join("\n")
    );
}

// The checker itself, on sources written to trip it.

fn source(module: &[&str], text: &str) -> Source {
    Source {
        module: module.iter().map(|s| s.to_string()).collect(),
        file: format!("{}.rs", module.join("/")),
        text: text.into(),
    }
}

fn pairs(edges: &[Edge]) -> BTreeSet<(String, String)> {
    edges.iter().map(|e| (name(&e.from), name(&e.to))).collect()
}

#[test]
fn edges_are_read_from_use_trees_and_paths_but_not_comments_or_strings() {
    let sources = [
        source(
            &["a"],
            "mod b;\nmod c;\npub use b::Thing;\nfn main() { c::go(); }",
        ),
        source(
            &["a", "b"],
            r####"
            use super::{c::{self, Deep as D}, Item};
            use crate::{x::y::*, other_crate};
            // use super::d;
            /* use super::d; /* nested */ use super::d; */
            const S: &str = "super::d::f()";
            const R: &str = r#"super::d::f() "quoted" "#;
            const C: char = '"';
            fn f<'a>(x: &'a str) -> char { let _ = "\"super::d"; 'x' }
            mod tests { use super::super::d as _; fn t() { super::Thing; } }
            "####,
        ),
        source(
            &["a", "c"],
            "fn go() { crate::x::y::z(); std::mem::drop(1); }",
        ),
        source(&["a", "d"], ""),
        source(&["x", "y"], ""),
        source(&["x"], "use std::fmt; fn f() { let v = Vec::<u8>::new(); }"),
    ];
    let want: BTreeSet<(String, String)> = [
        ("a", "a::c"),
        ("a::b", "a::c"),
        ("a::b", "a"),
        ("a::b", "x::y"),
        ("a::b", "crate"),
        ("a::b", "a::d"),
        ("a::c", "x::y"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    let sources: Vec<Source> = sources.into_iter().chain([source(&[], "")]).collect();
    assert_eq!(pairs(&edges(&sources)), want);
}

#[test]
fn a_back_edge_is_reported_as_a_circle_with_its_lines() {
    let tree = |store: &str| {
        vec![
            source(&["adapter"], "mod routes; mod store; mod gate_stub;"),
            source(
                &["adapter", "routes"],
                "use super::store::find;\nuse super::gate_stub::gate;",
            ),
            source(&["adapter", "gate_stub"], "use super::{http::ApiError};"),
            source(&["adapter", "http"], ""),
            source(&["adapter", "store"], store),
        ]
    };
    let fine = edges(&tree("use super::gate_stub::gate;"));
    assert!(circles(&fine, &["adapter"]).is_empty());
    // The store reaching up into the router, inside a nested group.
    let back = edges(&tree("use super::{gate_stub::gate, routes::{self}};"));
    let found = circles(&back, &["adapter"]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("adapter::routes → adapter::store → adapter::routes"),
        "{}",
        found[0]
    );
    assert!(
        found[0].contains("adapter/store.rs:1 `super::routes::self`"),
        "{}",
        found[0]
    );
    // And through a path in code.
    let inline = edges(&tree("fn f() { super::routes::handle(); }"));
    assert_eq!(circles(&inline, &["adapter"]).len(), 1);
    // A circle elsewhere is not this group's.
    assert!(circles(&back, &["core", "run"]).is_empty());
}
