//! The public HTTP surface. Requests are checked here (size, JSON shape,
//! callback token) before anything reaches a run's gate or storage.

use std::time::Duration;

use futures::future::select;
use futures::StreamExt;
use percent_encoding::percent_decode_str;
use serde_json::Value;
use worker::{ByteStream, Delay, Env, Request, Response};

use super::catalog;
use super::config::Config;
use super::cors::{allowed_origin, preflight, with_cors, Origin};
use super::gate_stub::gate;
use super::http::{json_response, valid_id, ApiError};
use super::mcp;
use super::ops::{with_kv_ops, KvOps};
use super::runtime::now_ms;
use super::store::{find_task, RunStore};
use super::trigger::{execute, idempotency_key};
use crate::core::answer::{ErrorCode, Health};
use crate::core::auth::owner_of;
use crate::core::callback::{verify, TokenError};
use crate::core::error::EngineError;
use crate::core::listing::{ListCursor, ListQuery, MAX_LIMIT};
use crate::core::protocol::{json_depth, task_id_text, MAX_JSON_DEPTH, MAX_TASK_ID_BYTES};
use crate::core::run::Noop;
use crate::core::segment::Command;
use crate::core::segment::TaskIndex;
use crate::core::view::noop;

/// A refused body is still read and thrown away — up to this many bytes and
/// this long — before answering: a client that is still uploading when the
/// answer comes would otherwise see its connection reset, not the error.
const DRAIN_BYTES: usize = 4 << 20;
const DRAIN_MS: u64 = 2_000;

pub async fn handle(mut req: Request, env: Env) -> Response {
    let origin = allowed_origin(&req, &env);
    if req.inner().method() == "OPTIONS" {
        return preflight(origin);
    }
    let response = match route(&mut req, &env).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    if !req.inner().body_used() && declared_length(&req).is_none_or(|n| n <= DRAIN_BYTES as u64) {
        if let Ok(mut stream) = req.stream() {
            drain(&mut stream, DRAIN_BYTES).await;
        }
    }
    // Every answer says what it cost: those that never reached storage cost
    // nothing (relayed answers carry the gate's own count).
    if !response.headers().has(KvOps::HEADER).unwrap_or(true) {
        let _ = response
            .headers()
            .set(KvOps::HEADER, &KvOps::default().header_value());
    }
    match origin {
        Some(Origin::Allowed(origin)) => with_cors(response, &origin).await,
        _ => response,
    }
}

fn declared_length(req: &Request) -> Option<u64> {
    req.headers()
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|len| len.trim().parse::<u64>().ok())
}

/// Reads and discards up to `budget` bytes, for at most `DRAIN_MS`.
async fn drain(stream: &mut ByteStream, mut budget: usize) {
    let reading = async {
        while let Some(Ok(chunk)) = stream.next().await {
            if chunk.len() >= budget {
                break;
            }
            budget -= chunk.len();
        }
    };
    let timeout = Delay::from(Duration::from_millis(DRAIN_MS));
    let _ = select(Box::pin(reading), Box::pin(timeout)).await;
}

async fn route(req: &mut Request, env: &Env) -> Result<Response, ApiError> {
    let url = req.url()?;
    let path = url.path().trim_end_matches('/').to_string();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    // The raw method: workers-rs maps methods it does not know to GET.
    let method = req.inner().method();
    match segments.as_slice() {
        [] | ["health"] => {
            require(&method, "GET")?;
            Ok(json_response(200, &Health::now()))
        }
        ["execute"] => {
            require(&method, "POST")?;
            let config = config(env)?;
            let owner = authenticate(req, &config)?;
            let body = read_json(req, &config).await?;
            let key = idempotency_key(req)?;
            execute(key, body, &url, &config, env, owner).await
        }
        ["mcp"] => {
            // Streamable HTTP without a server-to-client stream: POST only.
            require(&method, "POST")?;
            let config = config(env)?;
            let owner = authenticate(req, &config)?;
            let body = read_json(req, &config).await;
            let version = req.headers().get("mcp-protocol-version").ok().flatten();
            let structured = mcp::speaks_structured(version.as_deref());
            Ok(mcp::handle(body, structured, &url, &config, env, owner).await)
        }
        ["runs"] => {
            require(&method, "GET")?;
            let config = config(env)?;
            let owner = authenticate(req, &config)?;
            catalog::list_runs(&catalog::list_query(&url)?, env, &owner).await
        }
        ["executions", "paused"] => {
            require(&method, "GET")?;
            let config = config(env)?;
            let owner = authenticate(req, &config)?;
            let paused = ListQuery {
                statuses: vec!["paused".into()],
                workflow: None,
                limit: MAX_LIMIT,
                cursor: ListCursor::default(),
            };
            let response = catalog::list_runs(&paused, env, &owner).await?;
            deprecated(response, "/runs?status=paused")
        }
        ["executions", task_id] => {
            require(&method, "GET")?;
            let config = config(env)?;
            let owner = authenticate(req, &config)?;
            let task_id = percent_decode_str(task_id).decode_utf8_lossy();
            let (found, mut ops) = catalog::find_task_run(env, &owner, &task_id).await?;
            let Some(run_id) = found else {
                let e = ApiError::NotFound(format!(
                    "no run of this key waits or waited on task '{}'",
                    excerpt(&task_id, 100)
                ));
                return with_kv_ops(e.into_response(), ops).await;
            };
            let read = Command::Read {
                run_id: run_id.clone(),
                owner: Some(owner),
                node: None,
            };
            let response = gate(env, &run_id, &read).await?;
            if let Ok(Some(inner)) = response.headers().get(KvOps::HEADER) {
                ops.absorb(&inner);
            }
            let response = with_kv_ops(response, ops).await?;
            deprecated(response, &format!("/runs/{run_id}"))
        }
        ["runs", run_id, "retry"] => {
            for_owner(req, env, &method, "POST", run_id, |run_id, owner| {
                Command::Retry { run_id, owner }
            })
            .await
        }
        ["workflows"] => {
            require(&method, "GET")?;
            let config = config(env)?;
            let owner = authenticate(req, &config)?;
            let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
            catalog::list_workflows(&query, env, &owner).await
        }
        ["workflows", name] if !(*name == "resume" && method == "POST") => {
            let config = config(env)?;
            match method.as_str() {
                "GET" | "HEAD" => {
                    let owner = authenticate(req, &config)?;
                    catalog::get_workflow(name, env, &owner).await
                }
                "PUT" => {
                    let owner = authenticate(req, &config)?;
                    let body = read_json(req, &config).await?;
                    catalog::put_workflow(body, name, &config, env, &owner).await
                }
                "DELETE" => {
                    let owner = authenticate(req, &config)?;
                    catalog::delete_workflow(name, env, &owner).await
                }
                _ => Err(ApiError::MethodNotAllowed("GET, PUT, DELETE")),
            }
        }
        ["workflows", name, "execute"] => {
            require(&method, "POST")?;
            let config = config(env)?;
            let owner = authenticate(req, &config)?;
            let body = read_json(req, &config).await?;
            let key = idempotency_key(req)?;
            catalog::execute_workflow(key, body, name, &url, &config, env, owner).await
        }
        ["runs", run_id] => {
            for_owner(req, env, &method, "GET", run_id, |run_id, owner| {
                Command::Read {
                    run_id,
                    owner,
                    node: None,
                }
            })
            .await
        }
        ["runs", run_id, "nodes", node_id] => {
            // Node ids are the graph's own: any text, sent percent-encoded
            // (the run's gate says whether its graph has one).
            let node = percent_decode_str(node_id).decode_utf8_lossy().into_owned();
            for_owner(req, env, &method, "GET", run_id, |run_id, owner| {
                Command::Read {
                    run_id,
                    owner,
                    node: Some(node),
                }
            })
            .await
        }
        ["runs", run_id, "cancel"] => {
            for_owner(req, env, &method, "POST", run_id, |run_id, owner| {
                Command::Cancel { run_id, owner }
            })
            .await
        }
        ["runs", run_id, "redeliver"] => {
            for_owner(req, env, &method, "POST", run_id, |run_id, owner| {
                Command::Redeliver { run_id, owner }
            })
            .await
        }
        ["callbacks", run_id, wait_id] => {
            require(&method, "POST")?;
            let config = config(env)?;
            let Some((expires_at, body)) = signed_body(req, &url, &config, run_id, wait_id).await?
            else {
                return Ok(json_response(200, &noop(Noop::Expired)));
            };
            gate(
                env,
                run_id,
                &Command::Callback {
                    run_id: run_id.to_string(),
                    wait_id: wait_id.to_string(),
                    body,
                    base_url: config.base_url(&url),
                    token_expires_at: Some(expires_at),
                },
            )
            .await
        }
        ["callbacks", run_id, wait_id, "heartbeat"] => {
            require(&method, "POST")?;
            let config = config(env)?;
            let Some((expires_at, body)) = signed_body(req, &url, &config, run_id, wait_id).await?
            else {
                return Ok(json_response(200, &noop(Noop::Expired)));
            };
            gate(
                env,
                run_id,
                &Command::Heartbeat {
                    run_id: run_id.to_string(),
                    wait_id: wait_id.to_string(),
                    body,
                    token_expires_at: Some(expires_at),
                },
            )
            .await
        }
        ["workflows", "resume"] => {
            require(&method, "POST")?;
            let config = config(env)?;
            if !config.bare_resume {
                return Err(ApiError::Unauthorized(
                    "callbacks must use the signed callback_url they were given; the bare \
                     /workflows/resume route is disabled (ALLOW_BARE_RESUME)"
                        .into(),
                ));
            }
            let body = read_json(req, &config).await?;
            let task_id = match body.get("task_id").and_then(task_id_text) {
                Some(t) if !t.is_empty() && t.len() <= MAX_TASK_ID_BYTES => t,
                _ => {
                    return Err(ApiError::BadRequest(
                        ErrorCode::InvalidRequest,
                        "task_id must be a non-empty string (or a number)".into(),
                    ))
                }
            };
            let store = RunStore::new(env)?;
            let (run_id, wait_id) = match find_task(env, &store, &task_id).await? {
                Some(TaskIndex::Wait { run_id, wait_id }) => (run_id, wait_id),
                Some(TaskIndex::Shared) => {
                    let response = ApiError::Engine(EngineError::TaskShared).into_response();
                    return with_kv_ops(response, store.ops()).await;
                }
                None => {
                    let response = json_response(200, &noop(Noop::UnknownTask));
                    return with_kv_ops(response, store.ops()).await;
                }
            };
            let base_url = config.base_url(&url);
            let response = gate(
                env,
                &run_id.clone(),
                &Command::Callback {
                    run_id,
                    wait_id,
                    body,
                    base_url,
                    token_expires_at: None,
                },
            )
            .await?;
            // Report this route's own lookup together with the gate's operations.
            let mut ops = store.ops();
            if let Ok(Some(inner)) = response.headers().get(KvOps::HEADER) {
                ops.absorb(&inner);
            }
            with_kv_ops(response, ops).await
        }
        _ => Err(ApiError::NotFound(format!(
            "no route for {}",
            excerpt(&path, 100)
        ))),
    }
}

/// A request about one run by the key that started it: method, key and id
/// checked here, the rest decided by the run's gate.
async fn for_owner(
    req: &mut Request,
    env: &Env,
    method: &str,
    expected: &'static str,
    run_id: &str,
    message: impl FnOnce(String, Option<String>) -> Command,
) -> Result<Response, ApiError> {
    require(method, expected)?;
    let config = config(env)?;
    let owner = authenticate(req, &config)?;
    valid_id(run_id)?;
    gate(env, run_id, &message(run_id.to_string(), Some(owner))).await
}

/// Checks a wait's signed URL (before anything else is read, so a forged one
/// costs no storage work) and reads its JSON object body. Returns the expiry
/// the URL was signed with, or `None` when that has passed: the URL is then
/// refused without reaching the run (a heartbeat that extends a wait answers
/// new URLs to use instead).
async fn signed_body(
    req: &mut Request,
    url: &worker::Url,
    config: &Config,
    run_id: &str,
    wait_id: &str,
) -> Result<Option<(u64, Value)>, ApiError> {
    valid_id(run_id)?;
    valid_id(wait_id)?;
    let token = url
        .query_pairs()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned());
    let secrets: Vec<&[u8]> = config
        .callback_secrets
        .iter()
        .map(|s| s.as_bytes())
        .collect();
    config.signing_secret()?;
    let expires_at = verify(&secrets, run_id, wait_id, token.as_deref()).map_err(unauthorized)?;
    let body = read_json(req, config).await?;
    if !body.is_object() {
        return Err(ApiError::BadRequest(
            ErrorCode::InvalidRequest,
            "the callback body must be a JSON object".into(),
        ));
    }
    Ok((now_ms() < expires_at).then_some((expires_at, body)))
}

fn config(env: &Env) -> Result<Config, ApiError> {
    Config::from_env(env).map_err(ApiError::Misconfigured)
}

/// Marks an answer of a route kept for clients of the engine we descend
/// from, naming the route that replaces it.
fn deprecated(response: Response, successor: &str) -> Result<Response, ApiError> {
    response.headers().set("deprecation", "true")?;
    response
        .headers()
        .set("link", &format!("<{successor}>; rel=\"successor-version\""))?;
    Ok(response)
}

/// `HEAD` is accepted wherever `GET` is.
fn require(method: &str, expected: &'static str) -> Result<(), ApiError> {
    if method == expected || (expected == "GET" && method == "HEAD") {
        Ok(())
    } else {
        Err(ApiError::MethodNotAllowed(expected))
    }
}

/// The owner id of the request's API key (`Authorization: Bearer <key>` or
/// `X-Arcrun-API-Key: <key>`). Fails closed when no keys are configured.
fn authenticate(req: &Request, config: &Config) -> Result<String, ApiError> {
    if config.api_key_hashes.is_empty() {
        return Err(ApiError::Misconfigured(
            "no API keys are configured, so runs cannot be triggered or read: set the \
             API_KEY_HASHES secret to the SHA-256 hex of each key \
             (`npm run hash-key -- <key>`, then `wrangler secret put API_KEY_HASHES`)"
                .into(),
        ));
    }
    let headers = req.headers();
    let bearer = headers.get("authorization").ok().flatten().and_then(|h| {
        let (scheme, key) = h.trim().split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| key.trim().to_string())
    });
    let key = bearer
        .or_else(|| headers.get("x-arcrun-api-key").ok().flatten().map(|k| k.trim().to_string()))
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            ApiError::Unauthorized(
                "an API key is required: send `Authorization: Bearer <key>` or `X-Arcrun-API-Key: <key>`".into(),
            )
        })?;
    owner_of(&key, &config.api_key_hashes)
        .ok_or_else(|| ApiError::Unauthorized("the API key is not valid".into()))
}

fn unauthorized(e: TokenError) -> ApiError {
    ApiError::Unauthorized(e.message().into())
}

/// Reads the body as JSON, never holding more than `MAX_BODY_BYTES` of it:
/// a declared length over the limit is refused unread, and an undeclared one
/// is read in chunks only until it passes the limit.
async fn read_json(req: &mut Request, config: &Config) -> Result<Value, ApiError> {
    json_media_type(req)?;
    let limit = config.max_body_bytes;
    if declared_length(req).is_some_and(|n| n > limit as u64) {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    let mut bytes = Vec::new();
    if req.inner().body().is_some() {
        let mut stream = req
            .stream()
            .map_err(|e| ApiError::BadRequest(ErrorCode::InvalidJson, e.to_string()))?;
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| ApiError::BadRequest(ErrorCode::InvalidJson, e.to_string()))?;
            if bytes.len() + chunk.len() > limit {
                drain(&mut stream, DRAIN_BYTES).await;
                return Err(ApiError::PayloadTooLarge(limit));
            }
            bytes.extend_from_slice(&chunk);
        }
    }
    if bytes.is_empty() {
        return Err(ApiError::BadRequest(
            ErrorCode::InvalidJson,
            "the request body is empty".into(),
        ));
    }
    let body: Value = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::BadRequest(
            ErrorCode::InvalidJson,
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    // Stored with a run, a body nests deeper still; keep it readable back.
    if json_depth(&body) > MAX_JSON_DEPTH {
        return Err(ApiError::BadRequest(
            ErrorCode::InvalidJson,
            format!("the body nests JSON more than {MAX_JSON_DEPTH} levels deep"),
        ));
    }
    Ok(body)
}

/// Bodies are JSON: sent as `application/json` or an `application/*+json`
/// type, or as `text/plain` (what `fetch` and browsers send a string body
/// as when no type is set), or with no type at all. Anything else — a form,
/// XML, bytes — is refused before it is read.
pub(super) fn json_media_type(req: &Request) -> Result<(), ApiError> {
    let Some(value) = req.headers().get("content-type").ok().flatten() else {
        return Ok(());
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let json = essence == "application/json"
        || essence == "text/plain"
        || essence.is_empty()
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    match json {
        true => Ok(()),
        false => Err(ApiError::UnsupportedMediaType(excerpt(&essence, 100))),
    }
}

fn excerpt(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}
