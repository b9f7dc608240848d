//! What a key has: `GET /runs` (its runs, newest first, from the KV key
//! prefix and metadata — one list operation per page, no reads) and its
//! stored workflows (`/workflows/{name}`: put, get, list, delete, execute).

use serde::de::DeserializeOwned;
use serde_json::Value;
use worker::{Env, Response};

use super::config::Config;
use super::http::{json_response, ApiError};
use super::ops::{with_kv_ops, KvOps};
use super::runtime::now_ms;
use super::store::RunStore;
use super::trigger::{request_hash, start, trigger_fields, Start};
use crate::core::answer::{
    ErrorCode, ListedWorkflow, RunList, SavedWorkflow, True, WorkflowBody, WorkflowDeleted,
    WorkflowList, WorkflowShown, WorkflowStored,
};
use crate::core::error::EngineError;
use crate::core::listing::{
    owner_prefix, take_page, valid_workflow_name, workflow_prefix, ListCursor, ListQuery,
    ListedKey, PageEnd, RunSummary, StoredWorkflow, WorkflowSummary, KV_PAGE,
    MAX_PAGES_PER_REQUEST,
};
use crate::core::plan::plan_from_json;

/// A listing query from a request's query string.
pub fn list_query(url: &worker::Url) -> Result<ListQuery, ApiError> {
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    Ok(ListQuery::parse(
        pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    )?)
}

/// `GET /runs`: the caller's runs, filtered by status, a page at a time.
pub async fn list_runs(query: &ListQuery, env: &Env, owner: &str) -> Result<Response, ApiError> {
    let store = RunStore::new(env)?;
    let prefix = owner_prefix(owner);
    let mut runs = Vec::new();
    let mut at = query.cursor.clone();
    let mut next_cursor = None;
    for _ in 0..MAX_PAGES_PER_REQUEST {
        // Unfiltered, a page is exactly what was asked for; filtered (or
        // resuming inside a page), KV's largest page, skipping what was shown.
        let size = if !query.is_filtered() && at.skip == 0 {
            query.limit
        } else {
            KV_PAGE
        };
        let page = store.list(&prefix, at.kv.clone(), size).await?;
        let keys: Vec<ListedKey> = page
            .keys
            .into_iter()
            .map(|(name, meta)| ListedKey {
                name,
                summary: summary(meta),
            })
            .collect();
        match take_page(query, &at, &keys, page.next, &mut runs) {
            PageEnd::Done(cursor) => {
                next_cursor = cursor;
                break;
            }
            PageEnd::Next(cursor) => {
                // Out of pages for this request: the caller goes on from here.
                next_cursor = Some(cursor.clone());
                at = cursor;
            }
        }
    }
    let body = RunList {
        success: True,
        runs,
        next_cursor: next_cursor.map(|c| c.encode()),
    };
    with_ops(json_response(200, &body), &store)
}

/// The deprecated `GET /executions/{task_id}`: the run of this key that
/// waits (or waited) on the task, found through the listing's summaries.
pub async fn find_task_run(
    env: &Env,
    owner: &str,
    task_id: &str,
) -> Result<(Option<String>, KvOps), ApiError> {
    let store = RunStore::new(env)?;
    let prefix = owner_prefix(owner);
    let mut cursor = None;
    for _ in 0..MAX_PAGES_PER_REQUEST {
        let page = store.list(&prefix, cursor, KV_PAGE).await?;
        for (name, meta) in page.keys {
            let summary: Option<RunSummary> = summary(meta);
            if summary.is_some_and(|s| s.tasks.iter().any(|t| t == task_id)) {
                return Ok((name.rsplit('/').next().map(str::to_string), store.ops()));
            }
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    Ok((None, store.ops()))
}

/// A listed key's metadata as the summary it was written as: none when the
/// key has none, or metadata of another shape (one not written by us).
fn summary<T: DeserializeOwned>(metadata: Option<Value>) -> Option<T> {
    metadata.and_then(|m| serde_json::from_value(m).ok())
}

fn with_ops(response: Response, store: &RunStore) -> Result<Response, ApiError> {
    response
        .headers()
        .set(KvOps::HEADER, &store.ops().header_value())?;
    Ok(response)
}

fn workflow_key(owner: &str, name: &str) -> Result<String, ApiError> {
    if !valid_workflow_name(name) {
        return Err(ApiError::BadRequest(
            ErrorCode::InvalidWorkflowName,
            "a workflow name is 1 to 100 characters of letters, digits, '-', '_' and '.'".into(),
        ));
    }
    Ok(format!("{}{name}", workflow_prefix(owner)))
}

fn no_workflow(name: &str) -> ApiError {
    ApiError::NotFound(format!("no workflow '{name}'"))
}

/// `PUT /workflows/{name}`: validates the graph and stores it (one KV write).
pub async fn put_workflow(
    body: Value,
    name: &str,
    config: &Config,
    env: &Env,
    owner: &str,
) -> Result<Response, ApiError> {
    let key = workflow_key(owner, name)?;
    // The body is the graph, or `{"graph": …}`.
    let graph = match body {
        Value::Object(mut m) if m.contains_key("graph") && !m.contains_key("nodes") => {
            m.remove("graph").unwrap_or_default()
        }
        other => other,
    };
    let plan = plan_from_json(&graph, &config.directory, config.limits)?;
    let now = now_ms();
    let nodes = plan.graph.nodes.len();
    let stored = StoredWorkflow {
        owner: owner.to_string(),
        name: name.to_string(),
        graph,
        updated_at: now,
    };
    let summary = WorkflowSummary {
        updated_at: now,
        nodes,
    };
    let unwritable = |e: serde_json::Error| ApiError::Internal(e.to_string());
    let text = serde_json::to_string(&stored).map_err(unwritable)?;
    let meta = serde_json::to_value(summary).map_err(unwritable)?;
    let store = RunStore::new(env)?;
    store.put_text(&key, text, &meta).await?;
    let body = WorkflowStored {
        success: True,
        workflow: SavedWorkflow {
            name: name.to_string(),
            summary,
        },
    };
    with_ops(json_response(200, &body), &store)
}

/// `GET /workflows/{name}`.
pub async fn get_workflow(name: &str, env: &Env, owner: &str) -> Result<Response, ApiError> {
    let key = workflow_key(owner, name)?;
    let store = RunStore::new(env)?;
    let text = store.get_text(&key).await?;
    let Some(stored) = text.as_deref().and_then(|t| StoredWorkflow::read(t, owner)) else {
        return Err(no_workflow(name));
    };
    // Everything stored but the owner, which is the caller.
    let body = WorkflowShown {
        success: True,
        workflow: WorkflowBody {
            name: &stored.name,
            graph: &stored.graph,
            updated_at: stored.updated_at,
        },
    };
    with_ops(json_response(200, &body), &store)
}

/// `DELETE /workflows/{name}`. Runs started from it keep their own copy.
pub async fn delete_workflow(name: &str, env: &Env, owner: &str) -> Result<Response, ApiError> {
    let key = workflow_key(owner, name)?;
    let store = RunStore::new(env)?;
    let text = store.get_text(&key).await?;
    if text
        .as_deref()
        .and_then(|t| StoredWorkflow::read(t, owner))
        .is_none()
    {
        return Err(no_workflow(name));
    }
    store.delete(&key).await?;
    let body = WorkflowDeleted {
        success: True,
        deleted: name,
    };
    with_ops(json_response(200, &body), &store)
}

/// `GET /workflows` (and MCP's `list_workflows`, its arguments as the
/// query): names and summaries, one KV list operation per page.
pub async fn list_workflows(
    query: &[(String, String)],
    env: &Env,
    owner: &str,
) -> Result<Response, ApiError> {
    let mut limit = KV_PAGE;
    let mut cursor = ListCursor::default();
    for (k, v) in query {
        match k.as_str() {
            "limit" => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=KV_PAGE).contains(n))
                    .ok_or_else(|| {
                        EngineError::InvalidRequest(format!(
                            "limit must be a whole number from 1 to {KV_PAGE}"
                        ))
                    })?
            }
            "cursor" => cursor = ListCursor::decode(v)?,
            _ => {}
        }
    }
    let store = RunStore::new(env)?;
    let prefix = workflow_prefix(owner);
    let page = store.list(&prefix, cursor.kv, limit).await?;
    let workflows: Vec<ListedWorkflow> = page
        .keys
        .into_iter()
        .map(|(key, meta)| ListedWorkflow {
            name: key.strip_prefix(&prefix).unwrap_or(&key).to_string(),
            summary: summary::<WorkflowSummary>(meta),
        })
        .collect();
    let body = WorkflowList {
        success: True,
        workflows,
        next_cursor: page.next.map(|next| {
            ListCursor {
                kv: Some(next),
                skip: 0,
            }
            .encode()
        }),
    };
    with_ops(json_response(200, &body), &store)
}

/// `POST /workflows/{name}/execute`: runs the stored graph as it is now; the
/// run keeps that graph even if the stored one changes later.
pub async fn execute_workflow(
    idempotency_key: Option<String>,
    body: Value,
    name: &str,
    url: &worker::Url,
    config: &Config,
    env: &Env,
    owner: String,
) -> Result<Response, ApiError> {
    let key = workflow_key(&owner, name)?;
    let Value::Object(mut fields) = body else {
        return Err(ApiError::BadRequest(
            ErrorCode::InvalidRequest,
            "the body must be a JSON object".into(),
        ));
    };
    if fields.contains_key("graph") {
        return Err(ApiError::BadRequest(
            ErrorCode::InvalidRequest,
            "a stored workflow runs its own graph: send only \"context\" and \"final_callback_url\"".into(),
        ));
    }
    let hash = request_hash(&[&Value::from(name), &Value::Object(fields.clone())]);
    let idempotency = idempotency_key.map(|k| (k, hash));
    let trigger = trigger_fields(&mut fields, config)?;
    let store = RunStore::new(env)?;
    let text = store.get_text(&key).await?;
    let Some(stored) = text
        .as_deref()
        .and_then(|t| StoredWorkflow::read(t, &owner))
    else {
        return Err(no_workflow(name));
    };
    let response = start(Start {
        env,
        config,
        url,
        owner,
        graph: stored.graph,
        trigger,
        workflow: Some(name.to_string()),
        idempotency,
    })
    .await?;
    // This route's own read, with the gate's operations.
    let mut ops = store.ops();
    if let Ok(Some(inner)) = response.headers().get(KvOps::HEADER) {
        ops.absorb(&inner);
    }
    with_kv_ops(response, ops).await
}
