//! `TriggerClaim`: one Durable Object per claimed name, which makes a claim
//! race-free. For an idempotent trigger, one per (API key,
//! `Idempotency-Key`): the first request to claim the key names the run it
//! is about to start; every request after it, even one arriving at the same
//! instant, is told that run instead (or that its body differs). A claim
//! lasts 24 hours (or its own `ttl_ms`), then the object forgets it (an
//! alarm deletes its storage). It costs Durable Object storage, never KV.
//! The bare resume route's task index uses the same objects, one per task
//! id (`task/{sha256}`), with `peek` and `replaces` (see `store.rs`).

use serde::Serialize;
use serde_json::Value;
use worker::{durable_object, js_sys, DurableObject, Env, Request, Response, Result, State};

use super::config::TRIGGER_CLAIM;
use super::http::ApiError;

/// How long a key keeps naming its run.
pub const CLAIM_TTL_MS: u64 = 24 * 3600 * 1000;
const CLAIM_KEY: &str = "claim";

/// A claim: asked for (the run about to start, `at` = now), and answered
/// (the claim in force — this one if it was made, else the earlier one).
/// One type both ways keeps the bundle small; it is read by hand through
/// `Value` (`Claim::parse`), which costs no parser of its own.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Claim {
    pub run_id: String,
    pub body_hash: String,
    pub at: u64,
    /// Asks to forget the claim for `run_id` (its start failed, so a retry
    /// of the request may start it afresh).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub release: bool,
    /// Asks only for the claim in force (answered as this one, with an
    /// empty `run_id`, when there is none).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub peek: bool,
    /// Replaces the claim in force if it is this one (`run_id`,
    /// `body_hash`): a compare-and-swap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<(String, String)>,
    /// How long it lasts, when not `CLAIM_TTL_MS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
}

impl Claim {
    fn ttl(&self) -> u64 {
        self.ttl_ms.unwrap_or(CLAIM_TTL_MS)
    }

    /// Reads what `serde_json::to_string(&claim)` wrote.
    pub fn parse(text: &str) -> Option<Self> {
        let value: Value = serde_json::from_str(text).ok()?;
        let text = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_string);
        let flag = |name: &str| value.get(name).and_then(Value::as_bool).unwrap_or(false);
        let replaces = match value.get("replaces") {
            Some(Value::Array(pair)) => match pair.as_slice() {
                [Value::String(run), Value::String(what)] => Some((run.clone(), what.clone())),
                _ => return None,
            },
            _ => None,
        };
        Some(Self {
            run_id: text("run_id")?,
            body_hash: text("body_hash")?,
            at: value.get("at")?.as_u64()?,
            release: flag("release"),
            peek: flag("peek"),
            replaces,
            ttl_ms: value.get("ttl_ms").and_then(Value::as_u64),
        })
    }
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
        let Some(asked) = Claim::parse(&req.text().await?) else {
            return Response::error("not a claim", 400);
        };
        let storage = self.state.storage();
        let held: Option<Claim> = storage
            .get::<String>(CLAIM_KEY)
            .await
            .ok()
            .flatten()
            .and_then(|text| Claim::parse(&text))
            .filter(|c: &Claim| asked.at < c.at.saturating_add(c.ttl()));
        let replaced = |c: &Claim| {
            asked
                .replaces
                .as_ref()
                .is_some_and(|(run, what)| c.run_id == *run && c.body_hash == *what)
        };
        let answer = match held {
            Some(claim) if asked.release && claim.run_id == asked.run_id => {
                storage.delete_all().await?;
                asked
            }
            Some(claim) if asked.peek || !replaced(&claim) => claim,
            None if asked.release || asked.peek => Claim {
                run_id: String::new(),
                ..asked
            },
            _ => {
                let claim = Claim {
                    replaces: None,
                    ..asked
                };
                storage
                    .put_raw(CLAIM_KEY, serde_json::to_string(&claim)?)
                    .await?;
                let forget_at = claim.at.saturating_add(claim.ttl()) as f64;
                let when = js_sys::Date::new(&js_sys::Number::from(forget_at));
                storage.set_alarm(worker::ScheduledTime::new(when)).await?;
                claim
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
/// force: `claim` itself when it was made, else the one made before (for a
/// `peek` or `release` with none in force, one with an empty `run_id`).
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
    Claim::parse(&text)
        .ok_or_else(|| ApiError::Internal("the claim object answered no claim".into()))
}
