//! `TriggerClaim`: the Durable Object that holds one claim (`core::claim`),
//! and the Worker's side of claiming. The object performs the core's
//! `ClaimKeeper` over its storage; a claim lasts 24 hours (or its own
//! `ttl_ms`), then its alarm forgets it. It costs Durable Object storage,
//! never KV.

use worker::{durable_object, js_sys, DurableObject, Env, Request, Response, Result, State};

use super::config::TRIGGER_CLAIM;
use super::gate_stub::gate;
use super::http::{json_response, ApiError};
use super::ops::Ops;
use super::runtime::now_ms;
use crate::core::budget::{self, ChildBudget, Drawn, Grant};
use crate::core::claim::{self, Claim, ClaimKeeper, ClaimName, ClaimStorage, GateRead};
use crate::core::error::EngineError;
use crate::core::segment::Command;
use crate::core::view::starting_details;

pub use crate::core::claim::{Claimed, StartOutcome};

const CLAIM_KEY: &str = "claim";

#[durable_object]
pub struct TriggerClaim {
    state: State,
    // The binding is required by the macro; the object needs nothing from it.
    #[allow(dead_code)]
    env: Env,
    keeper: ClaimKeeper,
}

impl DurableObject for TriggerClaim {
    fn new(state: State, env: Env) -> Self {
        Self {
            state,
            env,
            keeper: ClaimKeeper::default(),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        if req.path() == BUDGET_PATH {
            return self.draw(&mut req).await;
        }
        let Ok(asked) = serde_json::from_str::<Claim>(&req.text().await?) else {
            return Response::error("not a claim", 400);
        };
        let storage = ClaimObject(self.state.storage());
        match self.keeper.handle(&storage, asked, now_ms()).await {
            Ok(answer) => Response::ok(serde_json::to_string(&answer)?),
            Err(e) => Response::error(e.to_string(), 500),
        }
    }

    async fn alarm(&self) -> Result<Response> {
        let storage = ClaimObject(self.state.storage());
        self.keeper
            .expire(&storage)
            .await
            .map_err(|e| worker::Error::RustError(e.to_string()))?;
        Response::ok("forgotten")
    }
}

impl TriggerClaim {
    /// One child run asks to start under a root run's budget: the object
    /// named `budget/{root}` keeps what the root's tree has drawn. Its
    /// storage reads and writes hold the object's input gate, so two
    /// draws never interleave. Forgotten by its alarm long after any run
    /// of the tree can still start one.
    async fn draw(&self, req: &mut Request) -> Result<Response> {
        let Ok(asked) = serde_json::from_str::<BudgetAsk>(&req.text().await?) else {
            return Response::error("not a budget", 400);
        };
        let storage = self.state.storage();
        let stored = storage.get::<Drawn>(BUDGET_KEY).await.ok().flatten();
        let first = stored.is_none();
        let mut drawn = stored.unwrap_or_default();
        let now = now_ms();
        let grant = budget::draw(&mut drawn, asked.budget(), now);
        if matches!(grant, Grant::Granted { .. }) {
            storage.put(BUDGET_KEY, drawn).await?;
            if first {
                let until = now.saturating_add(BUDGET_KEPT_MS);
                let when = js_sys::Date::new(&js_sys::Number::from(until as f64));
                storage.set_alarm(worker::ScheduledTime::new(when)).await?;
            }
        }
        Response::ok(serde_json::to_string(&grant)?)
    }
}

/// The path a budget draw is sent to (a claim is sent to `/`).
const BUDGET_PATH: &str = "/budget";
const BUDGET_KEY: &str = "budget";
/// How long a root's count is kept: longer than any wait may last.
const BUDGET_KEPT_MS: u64 = 400 * 24 * 3600 * 1000;

/// A draw as sent to the budget object: the deployment's bounds.
#[derive(serde::Serialize, serde::Deserialize)]
struct BudgetAsk {
    limit: u32,
    per_second: u32,
}

impl BudgetAsk {
    fn budget(&self) -> ChildBudget {
        ChildBudget {
            limit: self.limit,
            per_second: self.per_second,
        }
    }
}

/// Draws one child run from the budget of the tree under `root`.
pub async fn draw_child(
    env: &Env,
    root: &str,
    budget: ChildBudget,
) -> std::result::Result<Grant, ApiError> {
    let ask = BudgetAsk {
        limit: budget.limit,
        per_second: budget.per_second,
    };
    let text = post(env, &format!("budget/{root}"), BUDGET_PATH, &ask).await?;
    serde_json::from_str(&text)
        .map_err(|_| ApiError::Internal(format!("the budget object answered no grant: {text}")))
}

/// POSTs `body` as JSON to `path` of the claim-namespace object `object`,
/// and answers the text it answers.
async fn post(
    env: &Env,
    object: &str,
    path: &str,
    body: &impl serde::Serialize,
) -> std::result::Result<String, ApiError> {
    let stub = env
        .durable_object(TRIGGER_CLAIM)?
        .id_from_name(object)?
        .get_stub()?;
    let body = serde_json::to_string(body).map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut init = worker::RequestInit::new();
    init.with_method(worker::Method::Post)
        .with_body(Some(body.into()));
    let request = Request::new_with_init(&format!("https://claim.internal{path}"), &init)?;
    let mut response = stub.fetch_with_request(request).await?;
    Ok(response.text().await?)
}

/// A claim object's storage: its one key and its alarm.
struct ClaimObject(worker::Storage);

fn storage_error(e: worker::Error) -> EngineError {
    EngineError::Storage(e.to_string())
}

impl ClaimStorage for ClaimObject {
    async fn get(&self) -> std::result::Result<Option<String>, EngineError> {
        Ok(self.0.get::<String>(CLAIM_KEY).await.ok().flatten())
    }
    async fn put(&self, text: String) -> std::result::Result<(), EngineError> {
        self.0.put_raw(CLAIM_KEY, text).await.map_err(storage_error)
    }
    async fn forget(&self) -> std::result::Result<(), EngineError> {
        self.0.delete_all().await.map_err(storage_error)
    }
    async fn set_alarm(&self, at: u64) -> std::result::Result<(), EngineError> {
        let when = js_sys::Date::new(&js_sys::Number::from(at as f64));
        self.0
            .set_alarm(worker::ScheduledTime::new(when))
            .await
            .map_err(storage_error)
    }
}

/// Sends `claim` to the object of `name` and answers the claim in force.
pub async fn ask_named(
    env: &Env,
    name: &ClaimName<'_>,
    claim: &Claim,
) -> std::result::Result<Claim, ApiError> {
    // Only a bug names a claim without an owner id: not the caller's fault.
    let object = name
        .object_name()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let text = post(env, &object, "/", claim).await?;
    serde_json::from_str(&text)
        .map_err(|_| ApiError::Internal("the claim object answered no claim".into()))
}

/// `ask_named` for the names the task index (`store.rs`) gives: `scope`
/// `task` and the task id's hash, or else an owner id and a caller's key.
pub async fn ask(
    env: &Env,
    scope: &str,
    key: &str,
    claim: &Claim,
) -> std::result::Result<Claim, ApiError> {
    let name = match scope {
        "task" => ClaimName::Task { hash: key },
        owner => ClaimName::Trigger { owner, key },
    };
    ask_named(env, &name, claim).await
}

/// The Worker starting a run under a claim on behalf of `owner`: claim
/// objects, and reads through the run's gate.
pub struct Claimant<'a> {
    pub env: &'a Env,
    pub owner: &'a str,
}

impl claim::Claimant for Claimant<'_> {
    type View = Response;

    async fn ask(
        &self,
        name: &ClaimName<'_>,
        claim: &Claim,
    ) -> std::result::Result<Claim, EngineError> {
        ask_named(self.env, name, claim)
            .await
            .map_err(|e| EngineError::Storage(e.message()))
    }

    async fn read(&self, run_id: &str) -> std::result::Result<GateRead<Response>, EngineError> {
        let read = Command::Read {
            run_id: run_id.to_string(),
            owner: Some(self.owner.to_string()),
            node: None,
        };
        let view = gate(self.env, run_id, &read)
            .await
            .map_err(|e| EngineError::Storage(e.message()))?;
        Ok(GateRead {
            known: view.status_code() != 404,
            view,
        })
    }

    fn now(&self) -> u64 {
        now_ms()
    }
}

/// `core::claim::claim_run`, with a run still being started by the request
/// that claimed it shown as its gate shows a run whose first segment is
/// executing.
pub async fn claim_run(
    claimant: &Claimant<'_>,
    name: &ClaimName<'_>,
    run_id: &str,
    body_hash: &str,
) -> std::result::Result<Claimed<Response>, ApiError> {
    Ok(
        match claim::claim_run(claimant, name, run_id, body_hash).await? {
            Claimed::Replay {
                run_id,
                view,
                starting: true,
            } => Claimed::Replay {
                view: starting_view(&run_id, &view),
                run_id,
                starting: true,
            },
            other => other,
        },
    )
}

/// Settles a claim by its gate's answer to the start.
pub async fn settle_start(
    claimant: &Claimant<'_>,
    name: &ClaimName<'_>,
    claimed: &Claim,
    answer: &std::result::Result<Response, ApiError>,
) {
    let outcome = match answer.as_ref().map(Response::status_code) {
        Ok(status) if status < 400 => StartOutcome::Started,
        Ok(status) if status < 500 => StartOutcome::Refused,
        _ => StartOutcome::Unsure,
    };
    claim::settle_start(claimant, name, claimed, outcome).await;
}

/// What a replay shows of a run still being started by the request that
/// claimed it, before its gate has heard of it (`unknown`, the gate's
/// answer): what the gate itself shows of a run whose first segment is
/// executing, with what asking it cost.
fn starting_view(run_id: &str, unknown: &Response) -> Response {
    let view = json_response(200, &starting_details(run_id, now_ms()));
    if let Ok(Some(ops)) = unknown.headers().get(Ops::DO_HEADER) {
        let _ = view.headers().set(Ops::DO_HEADER, &ops);
    }
    view
}
