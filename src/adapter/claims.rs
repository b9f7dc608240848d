//! `TriggerClaim`: one Durable Object per (API key, `Idempotency-Key`),
//! which makes idempotent triggers race-free. The first request to claim the
//! key names the run it is about to start; every request after it, even one
//! arriving at the same instant, is told that run instead (or that its body
//! differs). A claim lasts 24 hours, then the object forgets it (an alarm
//! deletes its storage). It costs Durable Object storage, never KV.

use serde::{Deserialize, Serialize};
use worker::{durable_object, js_sys, DurableObject, Env, Request, Response, Result, State};

use super::config::TRIGGER_CLAIM;
use super::http::ApiError;

/// How long a key keeps naming its run.
pub const CLAIM_TTL_MS: u64 = 24 * 3600 * 1000;
const CLAIM_KEY: &str = "claim";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimRequest {
    /// Claim the key for `run_id`, unless it names a run already.
    Claim {
        run_id: String,
        body_hash: String,
        now: u64,
    },
    /// Forget the claim for `run_id` (its start failed, so a retry of the
    /// request may start it afresh).
    Release { run_id: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    pub run_id: String,
    pub body_hash: String,
    pub at: u64,
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimAnswer {
    /// The key is now this request's: start the run.
    Claimed,
    /// An earlier request holds the key, for this run and body.
    Held {
        run_id: String,
        body_hash: String,
    },
    Released,
}

#[durable_object]
pub struct TriggerClaim {
    state: State,
    // The binding is required by the macro; the object needs nothing from it.
    #[allow(dead_code)]
    env: Env,
}

impl DurableObject for TriggerClaim {
    fn new(state: State, env: Env) -> Self {
        Self { state, env }
    }

    // Requests to one object run one at a time between awaits on its own
    // storage (input gates), so a read followed by a write is atomic here.
    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let request: ClaimRequest = req.json().await?;
        let storage = self.state.storage();
        let held: Option<Claim> = storage
            .get::<String>(CLAIM_KEY)
            .await
            .ok()
            .flatten()
            .and_then(|text| serde_json::from_str(&text).ok());
        let answer = match request {
            ClaimRequest::Claim {
                run_id,
                body_hash,
                now,
            } => match held {
                Some(claim) if now < claim.at.saturating_add(CLAIM_TTL_MS) => ClaimAnswer::Held {
                    run_id: claim.run_id,
                    body_hash: claim.body_hash,
                },
                _ => {
                    let claim = Claim {
                        run_id,
                        body_hash,
                        at: now,
                    };
                    storage
                        .put_raw(CLAIM_KEY, serde_json::to_string(&claim)?)
                        .await?;
                    let forget_at = (now + CLAIM_TTL_MS) as f64;
                    let when = js_sys::Date::new(&js_sys::Number::from(forget_at));
                    storage.set_alarm(worker::ScheduledTime::new(when)).await?;
                    ClaimAnswer::Claimed
                }
            },
            ClaimRequest::Release { run_id } => {
                if held.is_some_and(|c| c.run_id == run_id) {
                    storage.delete_all().await?;
                }
                ClaimAnswer::Released
            }
        };
        Response::from_json(&answer)
    }

    async fn alarm(&self) -> Result<Response> {
        self.state.storage().delete_all().await?;
        Response::ok("forgotten")
    }
}

/// Sends `request` to the claim object of (`owner`, `key`).
pub async fn ask(
    env: &Env,
    owner: &str,
    key: &str,
    request: &ClaimRequest,
) -> std::result::Result<ClaimAnswer, ApiError> {
    let stub = env
        .durable_object(TRIGGER_CLAIM)?
        .id_from_name(&format!("{owner}/{key}"))?
        .get_stub()?;
    let body = serde_json::to_string(request).map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut init = worker::RequestInit::new();
    init.with_method(worker::Method::Post)
        .with_body(Some(body.into()));
    let request = Request::new_with_init("https://claim.internal/", &init)?;
    let mut response = stub.fetch_with_request(request).await?;
    response
        .json()
        .await
        .map_err(|e| ApiError::Internal(format!("idempotency claim: {e}")))
}
