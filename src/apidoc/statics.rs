//! The files `public/` serves through Workers Static Assets, ahead of the
//! Worker: GET and HEAD only, no Worker invocation, no KV operation.

use serde_json::{json, Value};

struct File {
    path: &'static str,
    id: &'static str,
    summary: &'static str,
    /// Said besides what every static file is.
    note: &'static str,
    media_type: &'static str,
    /// What the body must at least be, for a JSON file.
    required: &'static [&'static str],
}

const FILES: &[File] = &[
    File {
        path: "/openapi.json",
        id: "openapi",
        summary: "This document",
        note: "",
        media_type: "application/json",
        required: &["openapi", "paths"],
    },
    File {
        path: "/schema/graph.json",
        id: "graphSchema",
        summary: "The graph format as a JSON Schema (2020-12)",
        note: "",
        media_type: "application/json",
        required: &["$schema", "properties"],
    },
    File {
        path: "/ui",
        id: "ui",
        summary: "The run viewer (public/ui.html: one page, no API key needed to load it)",
        note: " It runs only its own script (/ui.js) and styles (/ui.css): Content-Security-Policy `script-src 'self'` and `frame-ancestors 'none'`, X-Frame-Options DENY (no other page may frame it).",
        media_type: "text/html",
        required: &[],
    },
    File {
        path: "/ui.js",
        id: "uiScript",
        summary: "The run viewer's script (public/ui.js)",
        note: "",
        media_type: "text/javascript",
        required: &[],
    },
    File {
        path: "/ui.css",
        id: "uiStyles",
        summary: "The run viewer's styles (public/ui.css)",
        note: "",
        media_type: "text/css",
        required: &[],
    },
    File {
        path: "/vendor/dagre.min.js",
        id: "uiLayoutLibrary",
        summary: "The run viewer's layout library (dagre, copied into public/vendor/ by scripts/build.sh)",
        note: "",
        media_type: "text/javascript",
        required: &[],
    },
];

fn file_headers() -> Value {
    json!({
        "x-arcrun-kv-ops": { "$ref": "#/components/headers/KvOps" },
        "etag": { "$ref": "#/components/headers/ETag" }
    })
}

fn other_methods() -> Value {
    json!({ "405": {
        "description": "Static files answer GET and HEAD only (no body).",
        "headers": { "x-arcrun-kv-ops": { "$ref": "#/components/headers/KvOps" } }
    } })
}

fn get_and_head(
    id: &str,
    summary: &str,
    description: Option<&str>,
    ok: (&str, Value),
    more: Option<(&str, Value)>,
) -> Value {
    let op = |op_id: String, summary: String, description: Option<&str>, with_body: bool| {
        let mut responses = serde_json::Map::new();
        let mut first = ok.1.clone();
        if !with_body {
            first.as_object_mut().expect("response").remove("content");
        }
        responses.insert(ok.0.into(), first);
        if let Some((status, r)) = &more {
            responses.insert((*status).into(), r.clone());
        }
        let mut o = json!({ "operationId": op_id, "summary": summary, "tags": ["service"], "security": [], "responses": responses });
        if let Some(d) = description {
            o["description"] = json!(d);
        }
        o
    };
    json!({
        "get": op(id.to_string(), summary.to_string(), description, true),
        "head": op(format!("{id}Head"), format!("{summary} (headers only)"),
            Some("HEAD is accepted wherever GET is: the same status and headers, no body."), false),
        "x-arcrun-static": true,
        "x-arcrun-other-methods": other_methods(),
    })
}

pub fn items() -> Vec<(&'static str, Value)> {
    let mut out: Vec<(&'static str, Value)> = FILES
        .iter()
        .map(|f| {
            let schema = match f.required {
                [] => json!({ "type": "string" }),
                required => json!({ "type": "object", "required": required }),
            };
            let description = format!(
                "A static file, served as it is ahead of the Worker: no Worker invocation and no KV operation.{}",
                f.note
            );
            let ok = json!({ "description": f.summary, "headers": file_headers(),
                "content": { f.media_type: { "schema": schema } } });
            let not_modified = json!({ "description": "Not modified (If-None-Match).", "headers": file_headers() });
            (f.path, get_and_head(f.id, f.summary, Some(&description), ("200", ok), Some(("304", not_modified))))
        })
        .collect();
    let redirect = json!({ "description": "To /ui.", "headers": {
        "x-arcrun-kv-ops": { "$ref": "#/components/headers/KvOps" },
        "location": { "$ref": "#/components/headers/Location" }
    } });
    out.push((
        "/ui.html",
        get_and_head(
            "uiFile",
            "The run viewer's file name (redirects to /ui)",
            None,
            ("307", redirect),
            None,
        ),
    ));
    out
}
