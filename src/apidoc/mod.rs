//! The API documents, generated: `public/openapi.json` from the answer,
//! request and error types (`core::answer`) and the route table
//! (`operations`), and `public/schema/graph.json` from the graph types
//! (`core::graph`). `cargo run --bin gen-docs` writes them; `tests/docs.rs`
//! fails when the checked-in files differ from what this produces.

mod graph;
mod operations;
mod statics;

use schemars::generate::SchemaSettings;
use schemars::SchemaGenerator;
use serde_json::{json, Map, Value};

use crate::core::answer::*;
use crate::core::run::Noop;
use operations::{Ans, Auth, Gate, Method, Op, Shape, Std, OPERATIONS};

pub use graph::graph_schema;

/// Where the documents live in the repository.
pub const OPENAPI_PATH: &str = "public/openapi.json";
pub const GRAPH_SCHEMA_PATH: &str = "public/schema/graph.json";

/// Both documents as written to disk (pretty JSON and a final newline).
pub fn documents() -> Vec<(&'static str, String)> {
    let text = |v: Value| serde_json::to_string_pretty(&v).expect("JSON") + "\n";
    vec![
        (OPENAPI_PATH, text(openapi())),
        (GRAPH_SCHEMA_PATH, text(graph_schema())),
    ]
}

/// The request bodies: optional fields there may also be sent as `null`.
const REQUESTS: &[&str] = &[
    "ExecuteRequest",
    "WorkflowExecuteRequest",
    "WorkflowPutRequest",
    "CallbackRequest",
    "HeartbeatRequest",
    "McpRequest",
];

pub fn openapi() -> Value {
    let mut settings = SchemaSettings::draft2020_12();
    settings.definitions_path = "/components/schemas".into();
    let mut generator = SchemaGenerator::new(settings);
    // Every named schema the paths refer to, registered by its type (which
    // registers those it uses).
    generator.subschema_for::<RunOutcome>();
    generator.subschema_for::<RunDetails>();
    generator.subschema_for::<NodeDetails>();
    generator.subschema_for::<CallbackAnswer>();
    generator.subschema_for::<CallbackAccepted>();
    generator.subschema_for::<NoopAnswer>();
    generator.subschema_for::<HeartbeatAccepted>();
    generator.subschema_for::<FinalEvent>();
    generator.subschema_for::<RunList>();
    generator.subschema_for::<WorkflowList>();
    generator.subschema_for::<WorkflowStored>();
    generator.subschema_for::<WorkflowShown>();
    generator.subschema_for::<WorkflowDeleted>();
    generator.subschema_for::<Health>();
    generator.subschema_for::<ErrorAnswer>();
    generator.subschema_for::<ExecuteRequest>();
    generator.subschema_for::<WorkflowExecuteRequest>();
    generator.subschema_for::<WorkflowPutRequest>();
    generator.subschema_for::<CallbackRequest>();
    generator.subschema_for::<HeartbeatRequest>();
    generator.subschema_for::<McpRequest>();
    generator.subschema_for::<McpResponse>();
    generator.subschema_for::<McpToolResult>();
    let mut schemas = generator.take_definitions(true);
    for (name, schema) in schemas.iter_mut() {
        tidy(schema, !REQUESTS.contains(&name.as_str()));
    }
    schemas.insert("RunId".into(), run_id_schema());

    let mut paths = Map::new();
    for op in OPERATIONS {
        let item = paths
            .entry(op.path)
            .or_insert_with(|| path_item(op.path))
            .as_object_mut()
            .expect("path item");
        item.insert(method_name(op.method).into(), operation(op));
        if op.method == Method::Get {
            item.insert("head".into(), head_of(op));
        }
        item.entry("options").or_insert_with(|| preflight(op));
    }
    for (path, item) in statics::items() {
        paths.insert(path.into(), item);
    }

    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "arcrun",
            "version": env!("CARGO_PKG_VERSION"),
            "summary": "A resumable workflow engine for Cloudflare Workers.",
            "license": { "name": "MIT", "identifier": "MIT" },
            "description": description(),
        },
        "servers": [{ "url": "/", "description": "The Worker this document is served by." }],
        "tags": tags(),
        "paths": paths,
        "webhooks": webhooks(),
        "components": {
            "schemas": schemas,
            "responses": std_responses(),
            "parameters": parameters(),
            "headers": headers(),
            "securitySchemes": security_schemes(),
        },
        "x-arcrun-unmatched": {
            "description": "What the Worker answers for a path no entry of `paths` matches, and for a method a matched path does not list.",
            "path": {
                "OPTIONS": {
                    "204": { "$ref": "#/components/responses/PreflightAllowed" },
                    "403": { "$ref": "#/components/responses/PreflightRefused" }
                },
                "*": { "404": { "$ref": "#/components/responses/NotFound" } }
            },
            "method": { "*": { "405": { "$ref": "#/components/responses/MethodNotAllowed" } } }
        }
    })
}

/// What the generated schemas (answers, requests and the graph) need to be
/// strict, portable and readable:
/// - a doc comment's line wrapping is not kept in descriptions;
/// - schemars' integer formats (`uint64`, ...) are not JSON Schema formats
///   (validators in strict mode refuse them): the `minimum` says it instead;
/// - an answer leaves an empty optional field out, never sends it as
///   `null`, so an optional answer field is not nullable (`answer`).
pub(crate) fn tidy(schema: &mut Value, answer: bool) {
    fn walk(v: &mut Value, answer: bool) {
        match v {
            Value::Object(map) => {
                if let Some(Value::String(text)) = map.get_mut("description") {
                    *text = unwrap_lines(text);
                }
                if matches!(map.get("format").and_then(Value::as_str),
                    Some(f) if f.starts_with("int") || f.starts_with("uint") || f == "double" || f == "float")
                {
                    map.remove("format");
                }
                if answer {
                    let required: Vec<String> = map
                        .get("required")
                        .and_then(Value::as_array)
                        .map(|r| {
                            r.iter()
                                .filter_map(|s| s.as_str().map(String::from))
                                .collect()
                        })
                        .unwrap_or_default();
                    if let Some(Value::Object(props)) = map.get_mut("properties") {
                        for (name, prop) in props.iter_mut() {
                            if !required.contains(name) {
                                drop_null(prop);
                            }
                        }
                    }
                }
                for (_, child) in map.iter_mut() {
                    walk(child, answer);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| walk(i, answer)),
            _ => {}
        }
    }
    walk(schema, answer);
}

/// A doc comment's text as one paragraph per blank-line-separated block
/// (its line breaks are the source's wrapping, not the prose's).
pub(crate) fn unwrap_lines(text: &str) -> String {
    text.split("\n\n")
        .map(|paragraph| {
            paragraph
                .split('\n')
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// `["string", "null"]` → `"string"`; `anyOf: [X, {type: null}]` → X.
fn drop_null(prop: &mut Value) {
    let Some(map) = prop.as_object_mut() else {
        return;
    };
    if let Some(Value::Array(types)) = map.get("type") {
        let kept: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
        let kept = match kept.len() {
            1 => kept[0].clone(),
            _ => Value::Array(kept),
        };
        map.insert("type".into(), kept);
    }
    if let Some(Value::Array(any)) = map.get("anyOf") {
        let kept: Vec<Value> = any
            .iter()
            .filter(|s| s.get("type") != Some(&json!("null")))
            .cloned()
            .collect();
        if kept.len() == 1 {
            map.remove("anyOf");
            if let Value::Object(only) = &kept[0] {
                for (k, v) in only {
                    map.entry(k.clone()).or_insert(v.clone());
                }
            }
        } else {
            map.insert("anyOf".into(), Value::Array(kept));
        }
    }
}

fn run_id_schema() -> Value {
    json!({
        "type": "string",
        "pattern": "^[A-Za-z0-9_-]{1,64}$",
        "description": "`{key tag}-{time}-{random}` for runs of this release (listable); 32 hex digits for runs stored by the first release."
    })
}

fn method_name(m: Method) -> &'static str {
    match m {
        Method::Get => "get",
        Method::Post => "post",
        Method::Put => "put",
        Method::Delete => "delete",
    }
}

/// The path's own parameters, from its `{placeholders}`.
fn path_item(path: &str) -> Value {
    let params: Vec<Value> = path
        .split('/')
        .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| {
            let component = match name {
                "run_id" => "RunId",
                "wait_id" => "WaitId",
                "name" => "WorkflowName",
                "task_id" => "TaskId",
                "node_id" => "NodeId",
                other => panic!("no parameter component for {{{other}}}"),
            };
            json!({ "$ref": format!("#/components/parameters/{component}") })
        })
        .collect();
    match params.is_empty() {
        true => json!({}),
        false => json!({ "parameters": params }),
    }
}

fn security(auth: Auth) -> Value {
    match auth {
        Auth::ApiKey => json!([{ "bearerAuth": [] }, { "apiKeyHeader": [] }]),
        Auth::Token => json!([{ "callbackToken": [] }]),
        Auth::Open => json!([]),
    }
}

fn header_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/headers/{name}") })
}

/// The headers every answer of the Worker carries, in the document's order.
fn common_headers(extra: &[(&str, &str)]) -> Map<String, Value> {
    let mut h = Map::new();
    h.insert("x-arcrun-kv-ops".into(), header_ref("KvOps"));
    for (name, component) in extra {
        h.insert((*name).into(), header_ref(component));
    }
    h.insert(
        "access-control-allow-origin".into(),
        header_ref("AccessControlAllowOrigin"),
    );
    h.insert(
        "access-control-expose-headers".into(),
        header_ref("AccessControlExposeHeaders"),
    );
    h.insert("vary".into(), header_ref("Vary"));
    h
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn error_schema(codes: &[ErrorCode]) -> Value {
    let code = match codes {
        [one] => json!({ "const": one.as_str() }),
        many => json!({ "enum": many.iter().map(|c| c.as_str()).collect::<Vec<_>>() }),
    };
    json!({ "allOf": [
        schema_ref("Error"),
        { "properties": { "error": { "properties": { "code": code } } } }
    ] })
}

fn json_content(schema: Value) -> Value {
    json!({ "application/json": { "schema": schema } })
}

fn answer(op: &Op, ans: &Ans, with_body: bool) -> (String, Value) {
    match ans {
        Ans::Std(s) => (
            std_status(*s).to_string(),
            json!({ "$ref": format!("#/components/responses/{}", std_name(*s)) }),
        ),
        Ans::Ok(status, description, shape) => {
            let mut extra: Vec<(&str, &str)> = Vec::new();
            if *status < 300 && !matches!(shape, Shape::RpcError) {
                match op.reaches_gate {
                    Gate::Always => extra.push(("x-arcrun-do-ops", "DoOpsRequired")),
                    Gate::Sometimes => extra.push(("x-arcrun-do-ops", "DoOps")),
                    Gate::Never => {}
                }
            }
            if op.replayable && *status == 200 {
                extra.push(("idempotent-replayed", "IdempotentReplayed"));
            }
            if op.deprecated && *status == 200 {
                extra.push(("deprecation", "Deprecation"));
                extra.push(("link", "Link"));
            }
            let mut r = json!({ "description": description, "headers": common_headers(&extra) });
            let schema = match shape {
                Shape::One(name) => Some(schema_ref(name)),
                Shape::AnyOf(names) => Some(
                    json!({ "anyOf": names.iter().map(|n| schema_ref(n)).collect::<Vec<_>>() }),
                ),
                Shape::OrSignedNoop(name) => Some(json!({ "anyOf": [
                    schema_ref(name),
                    { "allOf": [
                        schema_ref("Noop"),
                        { "properties": { "reason": { "not": { "const": Noop::UnknownTask.reason() } } } }
                    ] }
                ] })),
                Shape::RpcError => Some(json!({ "allOf": [
                    schema_ref("McpResponse"),
                    { "required": ["error"], "properties": { "id": { "type": "null" } } }
                ] })),
                Shape::Empty => None,
            };
            if let (Some(schema), true) = (schema, with_body) {
                r["content"] = json_content(schema);
            }
            (status.to_string(), r)
        }
        Ans::Err(status, description, codes) => {
            let mut r = json!({ "description": description, "headers": common_headers(&[]) });
            if with_body {
                r["content"] = json_content(error_schema(codes));
            }
            (status.to_string(), r)
        }
    }
}

fn operation(op: &Op) -> Value {
    described(
        op,
        op.id.to_string(),
        op.summary.to_string(),
        op.description,
        true,
    )
}

/// HEAD is accepted wherever GET is: the same status and headers, no body.
fn head_of(op: &Op) -> Value {
    described(
        op,
        format!("{}Head", op.id),
        format!("{} (headers only)", op.summary),
        "HEAD is accepted wherever GET is: the same status and headers, no body.",
        false,
    )
}

/// An operation object; `with_body` false for a HEAD twin, whose answers
/// (shared ones included) are their headers alone.
fn described(op: &Op, id: String, summary: String, description: &str, with_body: bool) -> Value {
    let mut o = Map::new();
    o.insert("operationId".into(), json!(id));
    o.insert("summary".into(), json!(summary));
    if !description.is_empty() {
        o.insert("description".into(), json!(description));
    }
    o.insert("tags".into(), json!([op.tag]));
    if op.deprecated {
        o.insert("deprecated".into(), json!(true));
    }
    o.insert("security".into(), security(op.auth));
    let params: Vec<Value> = op
        .params
        .iter()
        .map(|p| json!({ "$ref": format!("#/components/parameters/{p}") }))
        .collect();
    if !params.is_empty() {
        o.insert("parameters".into(), Value::Array(params));
    }
    if let (Some(body), true) = (op.body, with_body) {
        o.insert(
            "requestBody".into(),
            json!({
                "required": true,
                "description": "JSON, sent as `application/json` (or `text/plain`, what `fetch` and browsers send a string body as when no type is set, or with no `Content-Type`); anything else is `415`.",
                "content": request_content(body),
            }),
        );
    }
    let responses: Map<String, Value> = op
        .answers
        .iter()
        .map(|a| match a {
            Ans::Std(s) if !with_body => {
                let description = std_parts(*s).1;
                let r = json!({ "description": description, "headers": common_headers(&[]) });
                (std_status(*s).to_string(), r)
            }
            other => answer(op, other, with_body),
        })
        .collect();
    o.insert("responses".into(), Value::Object(responses));
    Value::Object(o)
}

/// The media types a JSON body may be sent as (anything else is `415`).
fn request_content(schema: &str) -> Value {
    json!({
        "application/json": { "schema": schema_ref(schema) },
        "text/plain": { "schema": schema_ref(schema) }
    })
}

fn preflight(op: &Op) -> Value {
    let base = op.id.trim_end_matches("Head");
    json!({
        "operationId": format!("{base}Preflight"),
        "summary": "CORS preflight",
        "tags": ["cors"],
        "security": [],
        "responses": {
            "204": { "$ref": "#/components/responses/PreflightAllowed" },
            "403": { "$ref": "#/components/responses/PreflightRefused" }
        }
    })
}

fn std_name(s: Std) -> &'static str {
    match s {
        Std::Unauthorized => "Unauthorized",
        Std::PayloadTooLarge => "PayloadTooLarge",
        Std::UnsupportedMediaType => "UnsupportedMediaType",
        Std::Internal => "Internal",
        Std::Misconfigured => "Misconfigured",
        Std::RunNotFound => "RunNotFound",
        Std::WorkflowNotFound => "WorkflowNotFound",
    }
}

fn std_status(s: Std) -> u16 {
    std_parts(s).0[0].status()
}

fn std_parts(s: Std) -> (&'static [ErrorCode], &'static str) {
    match s {
        Std::Unauthorized => (
            &[ErrorCode::Unauthorized],
            "No API key (send `Authorization: Bearer <key>` or `X-Arcrun-API-Key: <key>`), or not a valid one.",
        ),
        Std::PayloadTooLarge => (&[ErrorCode::PayloadTooLarge], "The body is over MAX_BODY_BYTES."),
        Std::UnsupportedMediaType => (
            &[ErrorCode::UnsupportedMediaType],
            "The body is sent as something other than JSON: `Content-Type` must be `application/json`, an `application/*+json` type, `text/plain` (taken as JSON), or absent.",
        ),
        Std::Internal => (
            &[ErrorCode::Internal, ErrorCode::StorageUnavailable, ErrorCode::CorruptRecord],
            "A storage or runtime failure (the caller may retry), or a stored record that cannot be read.",
        ),
        Std::Misconfigured => (
            &[ErrorCode::Misconfigured, ErrorCode::RecordLagging],
            "`misconfigured`: the deployment lacks a required secret (API_KEY_HASHES, CALLBACK_SECRET, WEBHOOK_SECRET for final callbacks) or has an unreadable setting; the message says how to fix it. `record_lagging`: KV answered an older record than the run wrote; send the request again.",
        ),
        Std::RunNotFound => (
            &[ErrorCode::NotFound],
            "No such run for this key (another key's run reads as absent), or not a valid run id.",
        ),
        Std::WorkflowNotFound => (&[ErrorCode::NotFound], "No workflow of that name for this key."),
    }
}

fn std_responses() -> Value {
    let all = [
        Std::Unauthorized,
        Std::Misconfigured,
        Std::Internal,
        Std::PayloadTooLarge,
        Std::UnsupportedMediaType,
        Std::RunNotFound,
        Std::WorkflowNotFound,
    ];
    let mut out = Map::new();
    for s in all {
        let (codes, description) = std_parts(s);
        out.insert(
            std_name(s).into(),
            json!({
                "description": description,
                "headers": common_headers(&[]),
                "content": json_content(error_schema(codes)),
            }),
        );
    }
    out.insert(
        "NotFound".into(),
        json!({
            "description": "No route for this path.",
            "headers": common_headers(&[]),
            "content": json_content(error_schema(&[ErrorCode::NotFound])),
        }),
    );
    let allow = common_headers(&[("allow", "Allow")]);
    out.insert(
        "MethodNotAllowed".into(),
        json!({
            "description": "This path does not take this method.",
            "headers": allow,
            "content": json_content(error_schema(&[ErrorCode::MethodNotAllowed])),
        }),
    );
    out.insert(
        "PreflightAllowed".into(),
        json!({
            "description": "A preflight from an origin in ALLOWED_ORIGINS: what it may send.",
            "headers": {
                "x-arcrun-kv-ops": header_ref("KvOps"),
                "access-control-allow-origin": { "required": true, "schema": { "type": "string" }, "description": "The requesting origin." },
                "access-control-allow-methods": { "required": true, "schema": { "type": "string" } },
                "access-control-allow-headers": { "required": true, "schema": { "type": "string" } },
                "access-control-max-age": { "required": true, "schema": { "type": "string", "pattern": "^\\d+$" } },
                "vary": { "required": true, "schema": { "type": "string" } }
            }
        }),
    );
    out.insert(
        "PreflightRefused".into(),
        json!({
            "description": "No Origin, or one not in ALLOWED_ORIGINS.",
            "headers": common_headers(&[]),
            "content": json_content(error_schema(&[ErrorCode::OriginNotAllowed])),
        }),
    );
    Value::Object(out)
}

fn tags() -> Value {
    json!([
        { "name": "runs", "description": "Start, read, list, cancel, retry runs." },
        { "name": "callbacks", "description": "What daemons call: results and heartbeats on signed URLs." },
        { "name": "workflows", "description": "Graphs stored under a name, per API key." },
        { "name": "legacy", "description": "Routes kept for clients of the engine arcrun descends from." },
        { "name": "service", "description": "Liveness and static files." },
        { "name": "mcp", "description": "The Model Context Protocol server for AI agents." },
        { "name": "cors", "description": "Browser preflights (ALLOWED_ORIGINS)." }
    ])
}

/// The document's introduction; the error codes and their statuses are
/// listed from `ErrorCode` itself.
fn description() -> String {
    let mut by_status: std::collections::BTreeMap<u16, Vec<&str>> = Default::default();
    for code in ErrorCode::ALL {
        by_status
            .entry(code.status())
            .or_default()
            .push(code.as_str());
    }
    let codes: Vec<String> = by_status
        .iter()
        .map(|(status, codes)| match codes.as_slice() {
            [one] => format!("{status} {one}"),
            many => format!("{status} ({})", many.join(", ")),
        })
        .collect();
    format!(
        "arcrun runs workflow graphs (JSON graphs of nodes that call components over HTTP). A component that answers `{{\"pending\": true, \"task_id\"}}` pauses its node; the run resumes when the daemon POSTs its result to the signed `callback_url` it was handed.\n\n\
         **Conventions.** Bodies are JSON, sent as `application/json` (an `application/*+json` type, `text/plain` or no `Content-Type` are taken as JSON too; anything else is `415`); timestamps are Unix milliseconds. Every answer has `success`: `false` exactly when the request failed (an error) or the run the answer reports on has failed or been cancelled. Every error is `{{\"success\": false, \"error\": {{\"code\", \"message\", ...}}}}` with one status per code: {}.\n\n\
         **Authentication.** An API key, as `Authorization: Bearer <key>` or `X-Arcrun-API-Key: <key>`; daemons use the signed `token` in the `callback_url` they were handed instead.\n\n\
         **Cost headers.** Every response carries `x-arcrun-kv-ops: reads=…;writes=…;lists=…` (the KV operations that request cost); requests that reach a run's gate also `x-arcrun-do-ops: reads=…;writes=…;deletes=…`.\n\n\
         **Final callbacks.** A run started with a `final_callback_url` POSTs its outcome there when it ends: see `webhooks`.\n\n\
         **Paths and methods not listed.** On the Worker's paths trailing and doubled slashes are ignored. A path the Worker does not know answers `404 not_found`; a method a path does not take answers `405 method_not_allowed` with `Allow` (HEAD is accepted wherever GET is). OPTIONS is a CORS preflight everywhere: `204` for an origin in ALLOWED_ORIGINS, else `403`. Paths marked `x-arcrun-static` are files from `public/` served by Workers Static Assets ahead of the Worker (no Worker invocation, no KV operation): they match exactly and answer other methods `405` without a body. `x-arcrun-unmatched` (below) and each path's `x-arcrun-other-methods` state this for tools; the end-to-end tests check every response against this document, those rules included.\n\n\
         This document is generated from the Worker's own types (`cargo run --bin gen-docs`).",
        codes.join(", ")
    )
}

/// The final callback, as OpenAPI 3.1 describes calls the API makes.
fn webhooks() -> Value {
    let header = |name: &str, description: &str, pattern: &str| {
        json!({ "name": name, "in": "header", "required": true, "description": description,
                "schema": { "type": "string", "pattern": pattern } })
    };
    json!({
        "run-finished": {
            "post": {
                "operationId": "runFinished",
                "summary": "A run has ended (the final callback)",
                "description": "POSTed to the `final_callback_url` a run was started with, once it completes, fails or is cancelled (a sub-workflow's run tells its parent instead). Signed per Standard Webhooks (https://www.standardwebhooks.com): the signature is HMAC-SHA256, keyed with the base64 key after `whsec_` in the deployment's WEBHOOK_SECRET, over `{webhook-id}.{webhook-timestamp}.{body}`, sent base64 as `v1,<signature>` (while keys rotate, one per key — WEBHOOK_SECRET, then WEBHOOK_SECRET_PREVIOUS — space-separated). To verify: recompute it over the raw body, compare in constant time, and refuse a `webhook-timestamp` more than a few minutes from now (any Standard Webhooks library does all three). `webhook-id` is the same for every attempt of one outcome (`msg_{run_id}_{status}`, `_{attempt}` after a retry of the run), so a receiver can drop repeats. Retries: any answer but 2xx or 410 (or no answer within 10 s) is tried again — at once, then 1 s, 5 s, 30 s, 5 min, 30 min, 2 h and 6 h apart — for FINAL_CALLBACK_RETRY_SECONDS (24 hours by default), then the delivery gives up; `410 Gone` refuses it (no more attempts); redirects are not followed. Every attempt is listed in `deliveries` on `GET /runs/{run_id}`, and `POST /runs/{run_id}/redeliver` starts a new round.",
                "tags": ["runs"],
                "security": [],
                "parameters": [
                    header("webhook-id", "The message id: the same for every attempt of this outcome.", "^msg_[A-Za-z0-9_-]+$"),
                    header("webhook-timestamp", "When this attempt was signed, in Unix seconds.", "^\\d+$"),
                    header("webhook-signature", "`v1,<base64 HMAC-SHA256>`, one per signing key, space-separated.", "^v1,[A-Za-z0-9+/=]+( v1,[A-Za-z0-9+/=]+)*$")
                ],
                "requestBody": { "required": true, "content": json_content(schema_ref("FinalEvent")) },
                "responses": {
                    "2XX": { "description": "Delivered: no more attempts." },
                    "410": { "description": "Refused: no more attempts (the delivery is `refused`)." },
                    "default": { "description": "Not delivered: tried again later, within FINAL_CALLBACK_RETRY_SECONDS." }
                }
            }
        }
    })
}

fn parameters() -> Value {
    json!({
        "RunId": { "name": "run_id", "in": "path", "required": true, "schema": schema_ref("RunId"),
            "description": "A run id; anything that is not 1–64 of `A-Z a-z 0-9 - _` is `404`." },
        "WaitId": { "name": "wait_id", "in": "path", "required": true,
            "schema": { "type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$" },
            "description": "The wait's id, as in its callback_url." },
        "WorkflowName": { "name": "name", "in": "path", "required": true,
            "schema": { "type": "string", "pattern": "^[A-Za-z0-9._-]{1,100}$", "not": { "enum": [".", ".."] } },
            "description": "1–100 of `A-Z a-z 0-9 - _ .` (not `.` or `..`); anything else is `400 invalid_workflow_name`." },
        "NodeId": { "name": "node_id", "in": "path", "required": true, "schema": { "type": "string" },
            "description": "A node id of the run's graph, percent-encoded." },
        "TaskId": { "name": "task_id", "in": "path", "required": true, "schema": { "type": "string" },
            "description": "A task id a run of this key waits or waited on." },
        "Token": { "name": "token", "in": "query", "required": true,
            "schema": { "type": "string", "pattern": "^\\d+\\.[A-Za-z0-9_-]+$" },
            "description": "The signature from the wait's callback_url: `{expires_at}.{base64url HMAC}`. Good for as long as the wait may last: the call's time plus MAX_WAIT_SECONDS, or its deadline if later." },
        "IdempotencyKey": { "name": "Idempotency-Key", "in": "header", "required": false,
            "schema": { "type": "string", "pattern": "^[\\x21-\\x7E]{1,255}$" },
            "description": "1–255 visible ASCII characters. The same key from the same API key within 24 hours answers the run the first request started (`200`, its current view, `idempotent-replayed: true`) instead of starting another; with a different body, `422 idempotency_key_reused`. A request that fails before its run starts leaves the key free." },
        "StatusFilter": { "name": "status", "in": "query", "required": false,
            "schema": { "type": "string", "pattern": "^\\s*(running|paused|completed|failed|cancelled)?\\s*(,\\s*(running|paused|completed|failed|cancelled)?\\s*)*$" },
            "description": "One or more of running, paused, completed, failed, cancelled, comma-separated." },
        "WorkflowFilter": { "name": "workflow", "in": "query", "required": false, "schema": { "type": "string" },
            "description": "Only runs of this workflow: the stored workflow a run was started from, or its graph's name, matched exactly (a name past 120 bytes is compared by its first 120, as the listing keeps it). Runs started from an unnamed graph never match. Filters the summaries the listing already reads: no extra KV read." },
        "RunLimit": { "name": "limit", "in": "query", "required": false,
            "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 50 } },
        "WorkflowLimit": { "name": "limit", "in": "query", "required": false,
            "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 1000 } },
        "Cursor": { "name": "cursor", "in": "query", "required": false, "schema": { "type": "string" },
            "description": "A `next_cursor` this API returned." }
    })
}

fn headers() -> Value {
    let ops = |description: &str, required: bool, pattern: &str| json!({ "description": description, "required": required, "schema": { "type": "string", "pattern": pattern } });
    json!({
        "KvOps": ops("The KV operations this request cost (every response, static files included, where it is always zero).", true, "^reads=\\d+;writes=\\d+;lists=\\d+$"),
        "DoOps": ops("The Durable Object storage operations (the call journal) of the run's gate, on requests that reached it.", false, "^reads=\\d+;writes=\\d+;deletes=\\d+$"),
        "DoOpsRequired": ops("The Durable Object storage operations (the call journal) of the run's gate, which this answer always reaches.", true, "^reads=\\d+;writes=\\d+;deletes=\\d+$"),
        "IdempotentReplayed": { "description": "`true` when the answer is the run an earlier request with the same Idempotency-Key started (its current view), not a new run.", "required": false, "schema": { "type": "string", "const": "true" } },
        "Deprecation": { "description": "This route is kept for clients of the engine arcrun descends from.", "required": true, "schema": { "type": "string", "const": "true" } },
        "Link": ops("The route that replaces this one.", true, "^<[^>]+>; rel=\"successor-version\"$"),
        "AccessControlAllowOrigin": { "description": "On answers to a request whose Origin is in ALLOWED_ORIGINS: that origin.", "required": false, "schema": { "type": "string" } },
        "AccessControlExposeHeaders": { "description": "On answers to an allowed origin: the headers a browser may read.", "required": false, "schema": { "type": "string" } },
        "Vary": { "description": "`Origin` on answers to an allowed origin.", "required": false, "schema": { "type": "string" } },
        "ETag": { "description": "The static file's entity tag.", "required": false, "schema": { "type": "string" } },
        "Location": { "description": "Where the file is served.", "required": true, "schema": { "type": "string" } },
        "Allow": ops("The methods the path takes (RFC 9110), HEAD included wherever GET is.", true, "^[A-Z]+(, [A-Z]+)*$")
    })
}

fn security_schemes() -> Value {
    json!({
        "bearerAuth": { "type": "http", "scheme": "bearer",
            "description": "An API key: `Authorization: Bearer <key>` (the deployment holds SHA-256 hashes of its keys in API_KEY_HASHES)." },
        "apiKeyHeader": { "type": "apiKey", "in": "header", "name": "X-Arcrun-API-Key",
            "description": "The same API key in a header of its own, for clients that cannot set `Authorization`." },
        "callbackToken": { "type": "apiKey", "in": "query", "name": "token",
            "description": "The HMAC signature in a wait's callback_url (`?token=`), bound to the run, the wait and a deadline." }
    })
}
