//! Claims in the simulation: callers that trigger with an
//! `Idempotency-Key` and sub-workflow calls issued again after a crash,
//! both through the real `core::claim` (`claim_run`, `settle_start`, the
//! claim objects' `ClaimKeeper`). The Worker request that holds a claim
//! is a task of its own, which can crash between any two steps; what it
//! asks of a claim object or a gate is a sub-request, a task on that
//! object, which crashes with the object and outlives its asker.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use serde_json::json;

use super::world::{after, Shared};
use crate::core::claim::{
    claim_run, settle_start, Claim, ClaimName, ClaimStorage, Claimant, Claimed, GateRead,
    StartOutcome,
};
use crate::core::error::EngineError;
use crate::core::gate::{command_run_id, Answer};
use crate::core::segment::Command;

/// The owner id claim names are made under (64 hex digits, as `core::auth`
/// makes them); the gates' commands name the owner `owner`.
pub const OWNER_ID: &str = "0000000000000000000000000000000000000000000000000000000000000a11";
/// What claim objects' names start with in the world.
pub const CLAIM_OBJECT: &str = "claim/";
/// What the Worker requests holding claims are named in the world.
pub const WORKER_OBJECT: &str = "worker/";

/// What kind of name a keyed start is claimed under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// A caller's `Idempotency-Key`.
    Trigger,
    /// A sub-workflow call's child, issued again as a parent whose segment
    /// died mid-call issues it.
    Subflow,
}

/// A request one task makes of another object.
#[derive(Debug, Clone)]
pub enum Rpc {
    Claim(Claim),
    Gate(Command),
}

#[derive(Debug, Clone)]
pub enum RpcAnswer {
    Claim(Claim),
    Gate(Answer),
    /// The gate refused the request: the edge answers this status.
    Refused(u16),
}

/// Sends `rpc` to `object` and waits for its answer (an error when the
/// object crashed on it).
fn rpc(world: &Shared, object: String, rpc: Rpc) -> Reply {
    let id = {
        let mut w = world.borrow_mut();
        let id = w.id();
        w.rpcs.push((id, object, rpc));
        w.progress += 1;
        id
    };
    Reply {
        world: Rc::clone(world),
        id,
    }
}

pub struct Reply {
    world: Shared,
    id: u64,
}

impl Future for Reply {
    type Output = Result<RpcAnswer, String>;

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
        let mut world = self.world.borrow_mut();
        match world.rpc_answers.remove(&self.id) {
            Some(answer) => {
                world.progress += 1;
                Poll::Ready(answer)
            }
            None => Poll::Pending,
        }
    }
}

/// The Worker's side of claiming, as `adapter::claims::Claimant` is.
pub struct SimClaimant {
    pub world: Shared,
}

fn lost(e: String) -> EngineError {
    EngineError::Storage(e)
}

impl Claimant for SimClaimant {
    type View = Answer;

    async fn ask(&self, name: &ClaimName<'_>, claim: &Claim) -> Result<Claim, EngineError> {
        let object = format!("{CLAIM_OBJECT}{}", name.object_name()?);
        match rpc(&self.world, object, Rpc::Claim(claim.clone()))
            .await
            .map_err(lost)?
        {
            RpcAnswer::Claim(claim) => Ok(claim),
            _ => Err(lost("a claim object answered as a gate".into())),
        }
    }

    async fn read(&self, run_id: &str) -> Result<GateRead<Answer>, EngineError> {
        let read = Command::Read {
            run_id: run_id.to_string(),
            owner: Some("owner".into()),
            node: None,
        };
        let view = gate(&self.world, read).await?;
        Ok(GateRead {
            known: view.status != 404,
            view,
        })
    }

    fn now(&self) -> u64 {
        self.world.borrow().now
    }
}

async fn gate(world: &Shared, command: Command) -> Result<Answer, EngineError> {
    let object = command_run_id(&command).to_string();
    match rpc(world, object, Rpc::Gate(command)).await.map_err(lost)? {
        RpcAnswer::Refused(status) => Ok(Answer {
            status,
            body: json!({"success": false}),
        }),
        RpcAnswer::Gate(answer) => Ok(answer),
        RpcAnswer::Claim(_) => Err(lost("a gate answered as a claim object".into())),
    }
}

/// A start under a claim, as `adapter::trigger::start` (a caller's key) and
/// `adapter::subflow` (a call's child) make it: `start` names the fresh
/// run id this request would start.
pub async fn keyed_start(
    world: Shared,
    kind: KeyKind,
    key: String,
    start: Command,
) -> Result<Answer, EngineError> {
    let claimant = SimClaimant {
        world: Rc::clone(&world),
    };
    let name = match kind {
        KeyKind::Trigger => ClaimName::Trigger {
            owner: OWNER_ID,
            key: &key,
        },
        KeyKind::Subflow => ClaimName::Subflow {
            owner: OWNER_ID,
            call: &key,
        },
    };
    // A caller's body is hashed; a call's child is claimed with none.
    let hash = match kind {
        KeyKind::Trigger => "body",
        KeyKind::Subflow => "",
    };
    let fresh = command_run_id(&start).to_string();
    match claim_run(&claimant, &name, &fresh, hash).await? {
        Claimed::Start(claim) => {
            let start = with_run_id(start, &claim.run_id, claim.taken > 0);
            let answer = gate(&world, start).await;
            let outcome = match &answer {
                Ok(a) if a.status < 400 => StartOutcome::Started,
                Ok(a) if a.status < 500 => StartOutcome::Refused,
                _ => StartOutcome::Unsure,
            };
            settle_start(&claimant, &name, &claim, outcome).await;
            answer
        }
        Claimed::Replay {
            run_id,
            view,
            starting,
        } => Ok(match starting {
            true => Answer {
                status: 200,
                body: json!({"success": true, "run_id": run_id, "status": "running"}),
            },
            false => view,
        }),
        Claimed::Conflict(held) => Ok(Answer {
            status: 422,
            body: json!({"success": false, "run_id": held.run_id}),
        }),
    }
}

/// `command`, a trigger, naming run `id` (as a restart or not).
pub(super) fn with_run_id(mut command: Command, id: &str, again: bool) -> Command {
    if let Command::Start {
        run_id, restart, ..
    } = &mut command
    {
        *run_id = id.to_string();
        *restart = again;
    }
    command
}

/// A claim object's storage in the world: one key and the alarm, both
/// surviving crashes.
pub struct SimClaimStorage {
    pub world: Shared,
    pub object: String,
}

const CLAIM_KEY: &str = "claim";

impl SimClaimStorage {
    async fn settle(&self) {
        let ms = self.world.borrow_mut().source.between(0, 3);
        after(&self.world, ms).await;
    }
}

impl ClaimStorage for SimClaimStorage {
    async fn get(&self) -> Result<Option<String>, EngineError> {
        let value = {
            let world = self.world.borrow();
            world
                .objects
                .get(&self.object)
                .and_then(|o| o.storage.get(CLAIM_KEY).cloned())
        };
        self.settle().await;
        Ok(value)
    }

    async fn put(&self, text: String) -> Result<(), EngineError> {
        {
            let mut world = self.world.borrow_mut();
            world.note(|| format!("  {} put {text}", self.object));
            let object = world.objects.entry(self.object.clone()).or_default();
            object.storage.insert(CLAIM_KEY.into(), text);
        }
        self.settle().await;
        Ok(())
    }

    async fn forget(&self) -> Result<(), EngineError> {
        {
            let mut world = self.world.borrow_mut();
            world.note(|| format!("  {} forgets its claim", self.object));
            let object = world.objects.entry(self.object.clone()).or_default();
            object.storage.clear();
            object.alarm = None;
        }
        self.settle().await;
        Ok(())
    }

    async fn set_alarm(&self, at: u64) -> Result<(), EngineError> {
        {
            let mut world = self.world.borrow_mut();
            world.objects.entry(self.object.clone()).or_default().alarm = Some(at);
        }
        self.settle().await;
        Ok(())
    }
}
