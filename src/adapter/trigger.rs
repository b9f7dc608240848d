//! Starting runs: `POST /execute` with a graph, `POST /workflows/{name}/execute`
//! with a stored one, both honouring `Idempotency-Key` — the same key from
//! the same API key within 24 hours answers the run it started (its current
//! view, `200`) instead of starting another; with a different body, `422`.
//! A run the key names that was never stored (the runtime died during its
//! first segment) is started again, under the same id, by the next request
//! with the key; one whose start was refused leaves the key free.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use worker::{Env, Request, Response};

use super::claims::{claim_run, settle_start, Claimant, Claimed};
use super::config::Config;
use super::gate_stub::gate;
use super::http::{json_response, ApiError, REPLAYED_HEADER};
use super::ops::{with_kv_ops, KvOps};
use super::runtime::{now_ms, random_id};
use crate::core::answer::{ErrorAnswer, ErrorCode};
use crate::core::auth::encode_hex;
use crate::core::claim::ClaimName;
use crate::core::listing::new_run_id;
use crate::core::segment::Command;
use crate::core::webhook::check_receiver_url;

pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// What a trigger asks for, read from its body.
pub struct Trigger {
    pub context: Map<String, Value>,
    pub final_callback_url: Option<String>,
}

/// Reads `context` and `final_callback_url` from a trigger's body.
pub fn trigger_fields(body: &mut Map<String, Value>, config: &Config) -> Result<Trigger, ApiError> {
    let context = match body.remove("context") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => {
            return Err(ApiError::BadRequest(
                ErrorCode::InvalidRequest,
                "\"context\" must be a JSON object".into(),
            ))
        }
    };
    let final_callback_url = match body.remove("final_callback_url") {
        None | Some(Value::Null) => None,
        Some(Value::String(url)) => Some(
            check_receiver_url(&url, config.allow_http_callbacks)
                .map_err(|m| ApiError::BadRequest(ErrorCode::InvalidFinalCallbackUrl, m))?,
        ),
        Some(_) => {
            return Err(ApiError::BadRequest(
                ErrorCode::InvalidFinalCallbackUrl,
                "\"final_callback_url\" must be a string".into(),
            ))
        }
    };
    if final_callback_url.is_some() && config.webhook_keys.is_empty() {
        return Err(ApiError::Misconfigured(
            "WEBHOOK_SECRET is not set, so final callbacks cannot be signed: run \
             `wrangler secret put WEBHOOK_SECRET` with a whsec_<base64> value (locally, put it in \
             .dev.vars)"
                .into(),
        ));
    }
    Ok(Trigger {
        context,
        final_callback_url,
    })
}

/// The request's `Idempotency-Key`, checked.
pub fn idempotency_key(req: &Request) -> Result<Option<String>, ApiError> {
    let Some(key) = req.headers().get(IDEMPOTENCY_HEADER).ok().flatten() else {
        return Ok(None);
    };
    let key = key.trim().to_string();
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ApiError::BadRequest(
            ErrorCode::InvalidIdempotencyKey,
            format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
        ));
    }
    Ok(Some(key))
}

/// `POST /execute` (and the MCP tool `execute_workflow` without a stored
/// workflow): the body's graph, started as a new run.
pub async fn execute(
    idempotency_key: Option<String>,
    body: Value,
    url: &worker::Url,
    config: &Config,
    env: &Env,
    owner: String,
) -> Result<Response, ApiError> {
    let Value::Object(mut body) = body else {
        return Err(ApiError::BadRequest(
            ErrorCode::InvalidRequest,
            "the body must be a JSON object".into(),
        ));
    };
    let hash = request_hash(&[&Value::Object(body.clone())]);
    let idempotency = idempotency_key.map(|k| (k, hash));
    let graph = body.remove("graph").ok_or_else(|| {
        ApiError::BadRequest(
            ErrorCode::InvalidRequest,
            "the body needs a \"graph\"".into(),
        )
    })?;
    let trigger = trigger_fields(&mut body, config)?;
    start(Start {
        env,
        config,
        url,
        owner,
        graph,
        trigger,
        workflow: None,
        idempotency,
    })
    .await
}

/// Everything a new run starts from.
pub struct Start<'a> {
    pub env: &'a Env,
    pub config: &'a Config,
    pub url: &'a worker::Url,
    pub owner: String,
    pub graph: Value,
    pub trigger: Trigger,
    pub workflow: Option<String>,
    /// The key and a hash of what the request asked for.
    pub idempotency: Option<(String, String)>,
}

/// Starts a run — or, for an idempotency key already used, answers the run
/// it started (starting it again, under the same run id, if it was claimed
/// and never stored: see `claims::claim_run`).
pub async fn start(start: Start<'_>) -> Result<Response, ApiError> {
    // The graph is validated once, by the gate that plans and runs it.
    start.config.signing_secret()?;
    let random =
        random_id().map_err(|e| ApiError::Internal(format!("randomness unavailable: {e}")))?;
    let run_id = new_run_id(&start.owner, now_ms(), &random);
    let Some((key, body_hash)) = &start.idempotency else {
        return gate(
            start.env,
            &run_id.clone(),
            &start_request(&start, run_id, false),
        )
        .await;
    };
    let name = ClaimName::Trigger {
        owner: &start.owner,
        key,
    };
    let claimant = Claimant {
        env: start.env,
        owner: &start.owner,
    };
    match claim_run(&claimant, &name, &run_id, body_hash).await? {
        Claimed::Conflict(held) => {
            let mut answer = ErrorAnswer::new(
                ErrorCode::IdempotencyKeyReused,
                "this Idempotency-Key was used within the last 24 hours with a different \
                 request body",
            );
            answer.error.run_id = Some(held.run_id);
            Ok(json_response(answer.error.code.status(), &answer))
        }
        Claimed::Replay { view, .. } => replayed(view).await,
        Claimed::Start(claim) => {
            let request = start_request(&start, claim.run_id.clone(), claim.taken > 0);
            let answer = gate(start.env, &claim.run_id, &request).await;
            settle_start(&claimant, &name, &claim, &answer).await;
            answer
        }
    }
}

fn start_request(start: &Start<'_>, run_id: String, restart: bool) -> Command {
    Command::Start {
        run_id,
        graph: start.graph.clone(),
        context: start.trigger.context.clone(),
        base_url: start.config.base_url(start.url),
        owner: Some(start.owner.clone()),
        final_callback_url: start.trigger.final_callback_url.clone(),
        workflow: start.workflow.clone(),
        depth: 0,
        parent: None,
        root: None,
        restart,
    }
}

/// The answer for a repeated key: the run's view, marked as a replay.
async fn replayed(response: Response) -> Result<Response, ApiError> {
    let mut ops = KvOps::default();
    if let Ok(Some(spent)) = response.headers().get(KvOps::HEADER) {
        ops.absorb(&spent);
    }
    let out = with_kv_ops(response, ops).await?;
    out.headers().set(REPLAYED_HEADER, "true")?;
    Ok(out)
}

/// A hash of what a trigger asks for, to tell a repeat from a different
/// request under the same key (JSON object keys are compared sorted).
pub fn request_hash(parts: &[&Value]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(serde_json::to_vec(part).unwrap_or_default());
        hasher.update([0]);
    }
    encode_hex(&hasher.finalize())
}
