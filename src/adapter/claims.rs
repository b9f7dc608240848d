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

/// A claim: asked for (the run about to start, `at` = now), and answered
/// (the claim in force — this one if it was made, else the earlier one).
/// One type both ways keeps the bundle small.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    pub run_id: String,
    pub body_hash: String,
    pub at: u64,
    /// Asks to forget the claim for `run_id` (its start failed, so a retry
    /// of the request may start it afresh).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub release: bool,
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
        let asked: Claim = serde_json::from_str(&req.text().await?)?;
        let storage = self.state.storage();
        let held: Option<Claim> = storage
            .get::<String>(CLAIM_KEY)
            .await
            .ok()
            .flatten()
            .and_then(|text| serde_json::from_str(&text).ok())
            .filter(|c: &Claim| asked.at < c.at.saturating_add(CLAIM_TTL_MS));
        let answer = match held {
            Some(claim) if asked.release && claim.run_id == asked.run_id => {
                storage.delete_all().await?;
                asked
            }
            Some(claim) => claim,
            None if asked.release => asked,
            None => {
                storage
                    .put_raw(CLAIM_KEY, serde_json::to_string(&asked)?)
                    .await?;
                let forget_at = (asked.at + CLAIM_TTL_MS) as f64;
                let when = js_sys::Date::new(&js_sys::Number::from(forget_at));
                storage.set_alarm(worker::ScheduledTime::new(when)).await?;
                asked
            }
        };
        Response::ok(serde_json::to_string(&answer)?)
    }

    async fn alarm(&self) -> Result<Response> {
        self.state.storage().delete_all().await?;
        Response::ok("forgotten")
    }
}

/// Sends `claim` to the object of (`owner`, `key`) and answers the claim in
/// force: `claim` itself when it was made, else the one made before.
pub async fn ask(
    env: &Env,
    owner: &str,
    key: &str,
    claim: &Claim,
) -> std::result::Result<Claim, ApiError> {
    let stub = env
        .durable_object(TRIGGER_CLAIM)?
        .id_from_name(&format!("{owner}/{key}"))?
        .get_stub()?;
    let body = serde_json::to_string(claim).map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut init = worker::RequestInit::new();
    init.with_method(worker::Method::Post)
        .with_body(Some(body.into()));
    let request = Request::new_with_init("https://claim.internal/", &init)?;
    let mut response = stub.fetch_with_request(request).await?;
    let text = response.text().await?;
    serde_json::from_str(&text).map_err(|e| ApiError::Internal(format!("idempotency claim: {e}")))
}
