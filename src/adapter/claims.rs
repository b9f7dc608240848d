//! `TriggerClaim`: one Durable Object per claimed name, which makes a claim
//! race-free. The first request to claim a name names the run it is about
//! to start; every request after it, even one arriving at the same instant,
//! is told that run instead (or that its body differs). A claim lasts 24
//! hours (or its own `ttl_ms`), then the object forgets it (an alarm deletes
//! its storage). It costs Durable Object storage, never KV.
//!
//! Three kinds of name (`ClaimName`), which can never name the same object:
//! a caller's `Idempotency-Key`, the child run of a sub-workflow call, and
//! the bare resume route's task index (`store.rs`, with `peek` and
//! `replaces`).
//!
//! A claim that starts a run is confirmed (`started`) once the run's first
//! segment has answered, which means its record was written. Until then the
//! run may be in flight — or may never be stored, if the runtime died
//! during that segment or its gate failed. `claim_run` tells the two apart
//! by asking the run's gate (which answers `running` while a segment is
//! active) and, for a run that is neither there nor in flight, takes the
//! claim over and starts the same run again; `settle_start` confirms or
//! releases the claim once the start has answered.

use std::cell::Cell;

use serde::{Deserialize, Serialize};
use serde_json::json;
use worker::{durable_object, js_sys, DurableObject, Env, Request, Response, Result, State};

use super::config::TRIGGER_CLAIM;
use super::gate_stub::gate;
use super::http::{json_response, ApiError};
use super::ops::Ops;
use super::runtime::now_ms;
use crate::core::segment::Command;

/// How long a key keeps naming its run.
pub const CLAIM_TTL_MS: u64 = 24 * 3600 * 1000;
const CLAIM_KEY: &str = "claim";

/// How long a claim this object handed out stays "being started" without
/// news from the request that holds it. The holder reaches the run's gate
/// within milliseconds, after which the gate itself answers `running`; a
/// holder not heard of past this died before it got there.
const START_GRACE_MS: u64 = 30_000;

/// Length of an owner id: lower-case hex of a SHA-256 (`core::auth`).
const OWNER_ID_LEN: usize = 64;

/// What a claim object is named after. Every kind has a name scheme of its
/// own, and no name of one kind is a name of another, whatever bytes a
/// caller puts in its `Idempotency-Key`:
/// - a caller's key: `{owner}/{key}` — 64 lower-case hex digits, then `/`;
/// - a sub-workflow call: `subflow/{owner}/{call key}`;
/// - a task id of the bare route: `task/{sha256 hex}`.
///
/// The internal kinds start with a letter that is not a hex digit, so no
/// caller's name (which starts with an owner id) can equal one.
///
/// Callers' names are those of every earlier release, so a key claimed
/// before an upgrade still answers its run; so are the task index's, whose
/// entries last as long as their waits. Sub-workflow calls were claimed
/// under `{owner}/subflow:{call key}`, among callers' names, which is what
/// let a caller choose a call's child: those entries are no longer read
/// by calls (each object forgets its entry within 24 hours; meanwhile a
/// caller sending that name as its key is told `422`, its body differing).
/// A call issued again across the upgrade — its parent's segment died
/// mid-call just before it — starts a second child; the first one's end,
/// delivered to the same wait, is turned away (the wait is closed, or
/// waits on the other child's run id).
#[derive(Debug, Clone, Copy)]
pub enum ClaimName<'a> {
    /// An `Idempotency-Key` sent by a caller with its API key's owner id.
    Trigger { owner: &'a str, key: &'a str },
    /// The child run of a `workflow://` call, by the call's idempotency key.
    Subflow { owner: &'a str, call: &'a str },
    /// A task id of the bare resume route, by its hash.
    Task { hash: &'a str },
}

impl ClaimName<'_> {
    /// The name of the object that holds this claim.
    fn object_name(&self) -> std::result::Result<String, ApiError> {
        let owned = |owner: &str| {
            if is_owner_id(owner) {
                Ok(())
            } else {
                Err(ApiError::Internal(
                    "a claim under an API key needs its owner id".into(),
                ))
            }
        };
        Ok(match self {
            Self::Trigger { owner, key } => {
                owned(owner)?;
                format!("{owner}/{key}")
            }
            Self::Subflow { owner, call } => {
                owned(owner)?;
                format!("subflow/{owner}/{call}")
            }
            Self::Task { hash } => format!("task/{hash}"),
        })
    }
}

/// An owner id as `core::auth` makes them: what a caller's name starts with.
fn is_owner_id(owner: &str) -> bool {
    owner.len() == OWNER_ID_LEN
        && owner
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A claim: what is stored, what is asked, and what is answered (the claim
/// in force — the one asked for if it was made, else the one held). Fields
/// say which of the three they are part of. Stored as JSON; entries of
/// earlier releases (`run_id`, `body_hash`, `at`, maybe `ttl_ms`) read as
/// claims that were neither confirmed nor taken over.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    pub run_id: String,
    pub body_hash: String,
    /// Stored: when the claim was first made (its 24 hours run from here).
    /// Asked: now.
    pub at: u64,
    /// Asked: forget the claim for `run_id` (its start failed, so a retry of
    /// the request may start it afresh).
    #[serde(default, skip_serializing_if = "is_false")]
    pub release: bool,
    /// Asked: only the claim in force (answered as this one, with an empty
    /// `run_id`, when there is none).
    #[serde(default, skip_serializing_if = "is_false")]
    pub peek: bool,
    /// Asked: replace the claim in force if it is this one (`run_id`,
    /// `body_hash`) — a compare-and-swap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<(String, String)>,
    /// Stored and asked: how long it lasts, when not `CLAIM_TTL_MS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    /// Stored: the run's first segment answered, so it was stored; a run
    /// not found behind it since has expired, and is never started again.
    /// Asked: record that (for `run_id` as taken over `taken` times).
    #[serde(default, skip_serializing_if = "is_false")]
    pub started: bool,
    /// Stored: how often the claim was taken over (its run started again).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub taken: u32,
    /// Asked: take the claim over if it is still this one (`run_id`,
    /// `body_hash`, taken over this many times), unconfirmed, and not
    /// being started — a compare-and-swap exactly one asker wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub take_over: Option<u32>,
    /// Answered: this request made the claim, or took it over.
    #[serde(default, skip_serializing_if = "is_false")]
    pub made: bool,
    /// Answered: this object handed the claim out moments ago and has not
    /// heard since whether its run started: its holder may not have reached
    /// the run's gate yet.
    #[serde(default, skip_serializing_if = "is_false")]
    pub starting: bool,
}

fn is_false(flag: &bool) -> bool {
    !flag
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Claim {
    fn ttl(&self) -> u64 {
        self.ttl_ms.unwrap_or(CLAIM_TTL_MS)
    }
}

#[durable_object]
pub struct TriggerClaim {
    state: State,
    // The binding is required by the macro; the object needs nothing from it.
    #[allow(dead_code)]
    env: Env,
    /// When this object, in its current life, handed its claim out to a
    /// request that is to start its run, until that request reports back.
    /// Memory, not storage, on purpose: after a restart of the runtime the
    /// holder is gone too, and the claim is for the run's gate to judge.
    handed_out: Cell<Option<u64>>,
}

impl DurableObject for TriggerClaim {
    fn new(state: State, env: Env) -> Self {
        Self {
            state,
            env,
            handed_out: Cell::new(None),
        }
    }

    // Requests to one object run one at a time between awaits on its own
    // storage (input gates), so a read followed by a write is atomic here.
    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let Ok(asked) = serde_json::from_str::<Claim>(&req.text().await?) else {
            return Response::error("not a claim", 400);
        };
        let storage = self.state.storage();
        let held: Option<Claim> = storage
            .get::<String>(CLAIM_KEY)
            .await
            .ok()
            .flatten()
            .and_then(|text| serde_json::from_str(&text).ok())
            .filter(|c: &Claim| asked.at < c.at.saturating_add(c.ttl()));
        let handed_out = self
            .handed_out
            .get()
            .is_some_and(|at| now_ms() < at.saturating_add(START_GRACE_MS));
        let answer = match decide(asked, held, handed_out) {
            Verdict::Tell(claim) => claim,
            Verdict::Forget(claim) => {
                storage.delete_all().await?;
                self.handed_out.set(None);
                claim
            }
            Verdict::Keep {
                claim,
                hand_out,
                new,
            } => {
                storage
                    .put_raw(CLAIM_KEY, serde_json::to_string(&claim)?)
                    .await?;
                if new {
                    let forget_at = claim.at.saturating_add(claim.ttl()) as f64;
                    let when = js_sys::Date::new(&js_sys::Number::from(forget_at));
                    storage.set_alarm(worker::ScheduledTime::new(when)).await?;
                }
                self.handed_out.set(hand_out.then(now_ms));
                Claim {
                    made: hand_out,
                    ..claim
                }
            }
        };
        Response::ok(serde_json::to_string(&answer)?)
    }

    async fn alarm(&self) -> Result<Response> {
        self.state.storage().delete_all().await?;
        self.handed_out.set(None);
        Response::ok("forgotten")
    }
}

/// What a claim object does with a request.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// Answers this, changing nothing.
    Tell(Claim),
    /// Forgets the claim it holds, and answers this.
    Forget(Claim),
    /// Stores `claim` (a `new` one with the alarm that forgets it) and
    /// answers it; `hand_out`: to the asker, who is to start its run.
    Keep {
        claim: Claim,
        hand_out: bool,
        new: bool,
    },
}

/// The claim object's decision on `asked`, given the claim it `held` in
/// force and whether it `handed_out` that claim moments ago (its holder may
/// still be on its way to the run's gate). No I/O: the object performs it.
fn decide(asked: Claim, held: Option<Claim>, handed_out: bool) -> Verdict {
    let starting = |c: &Claim| handed_out && !c.started;
    let told = |c: Claim| {
        Verdict::Tell(Claim {
            starting: starting(&c),
            ..c
        })
    };
    let Some(held) = held else {
        return match asked.release || asked.started || asked.peek {
            true => Verdict::Tell(Claim {
                run_id: String::new(),
                ..asked
            }),
            false => Verdict::Keep {
                claim: Claim {
                    run_id: asked.run_id,
                    body_hash: asked.body_hash,
                    at: asked.at,
                    ttl_ms: asked.ttl_ms,
                    // A claim taken over after its object forgot it keeps
                    // counting, so an asker that lost stays lost.
                    taken: asked.take_over.map_or(0, |n| n + 1),
                    ..Claim::default()
                },
                hand_out: true,
                new: true,
            },
        };
    };
    let same = asked.run_id == held.run_id && asked.taken == held.taken;
    if asked.release {
        return match same {
            true => Verdict::Forget(asked),
            false => told(held),
        };
    }
    if asked.started {
        return match same {
            true => Verdict::Keep {
                claim: Claim {
                    started: true,
                    ..held
                },
                hand_out: false,
                new: false,
            },
            false => told(held),
        };
    }
    if let Some(taken) = asked.take_over {
        let takes = taken == held.taken
            && asked.run_id == held.run_id
            && asked.body_hash == held.body_hash
            && !held.started
            && !starting(&held);
        return match takes {
            // The first time stays: the key's 24 hours (and the alarm set
            // for their end) are unchanged.
            true => Verdict::Keep {
                claim: Claim {
                    taken: held.taken + 1,
                    ..held
                },
                hand_out: true,
                new: false,
            },
            false => told(held),
        };
    }
    let replaced = asked
        .replaces
        .as_ref()
        .is_some_and(|(run, what)| held.run_id == *run && held.body_hash == *what);
    match replaced && !asked.peek {
        true => Verdict::Keep {
            claim: Claim {
                run_id: asked.run_id,
                body_hash: asked.body_hash,
                at: asked.at,
                ttl_ms: asked.ttl_ms,
                ..Claim::default()
            },
            hand_out: true,
            new: true,
        },
        false => told(held),
    }
}

/// Sends `claim` to the object of `name` and answers the claim in force:
/// the one asked for when it was made (`made`), else the one made before
/// (for a `peek`, `release` or `started` with none in force, one with an
/// empty `run_id`).
pub async fn ask_named(
    env: &Env,
    name: &ClaimName<'_>,
    claim: &Claim,
) -> std::result::Result<Claim, ApiError> {
    let stub = env
        .durable_object(TRIGGER_CLAIM)?
        .id_from_name(&name.object_name()?)?
        .get_stub()?;
    let body = serde_json::to_string(claim).map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut init = worker::RequestInit::new();
    init.with_method(worker::Method::Post)
        .with_body(Some(body.into()));
    let request = Request::new_with_init("https://claim.internal/", &init)?;
    let mut response = stub.fetch_with_request(request).await?;
    let text = response.text().await?;
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

/// What claiming the start of a run came to.
pub enum Claimed {
    /// This request holds the claim and starts its run: a fresh one, or —
    /// taken over — the run an earlier request claimed and never stored,
    /// under the same run id.
    Start(Claim),
    /// An earlier request claimed the name with another body.
    Conflict(Claim),
    /// An earlier request started the run: its gate's answer to a read
    /// (`running` while that request is still starting it).
    Replay { run_id: String, view: Response },
}

/// Claims `name` for a new run `run_id` (of a request hashed `body_hash`),
/// and, when an earlier request holds it, finds that request's run — in
/// its gate, which knows a run in flight, not in KV, which may lag. A run
/// neither stored nor in flight there, behind a claim never confirmed and
/// not being started, was never stored: the claim is taken over with a
/// compare-and-swap, so of any number of requests doing this at once one
/// starts it again, and the rest are told that one's run.
pub async fn claim_run(
    env: &Env,
    name: &ClaimName<'_>,
    run_id: &str,
    body_hash: &str,
    owner: &str,
) -> std::result::Result<Claimed, ApiError> {
    let asked = Claim {
        run_id: run_id.to_string(),
        body_hash: body_hash.to_string(),
        at: now_ms(),
        ..Claim::default()
    };
    let held = ask_named(env, name, &asked).await?;
    if held.made {
        return Ok(Claimed::Start(held));
    }
    if held.body_hash != body_hash {
        return Ok(Claimed::Conflict(held));
    }
    let view = read(env, &held.run_id, owner).await?;
    if view.status_code() != 404 || held.started {
        return Ok(Claimed::Replay {
            run_id: held.run_id,
            view,
        });
    }
    if held.starting {
        return Ok(Claimed::Replay {
            view: starting_view(&held.run_id, &view),
            run_id: held.run_id,
        });
    }
    let take = Claim {
        run_id: held.run_id,
        body_hash: held.body_hash,
        at: now_ms(),
        take_over: Some(held.taken),
        ..Claim::default()
    };
    let held = ask_named(env, name, &take).await?;
    if held.made {
        return Ok(Claimed::Start(held));
    }
    if held.body_hash != body_hash {
        return Ok(Claimed::Conflict(held));
    }
    // Another request took it over first, and starts it.
    let view = read(env, &held.run_id, owner).await?;
    let view = match view.status_code() {
        404 => starting_view(&held.run_id, &view),
        _ => view,
    };
    Ok(Claimed::Replay {
        run_id: held.run_id,
        view,
    })
}

/// Settles the claim `claimed` for by the start of its run, with the gate's
/// answer: confirmed once the first segment answered (its record is
/// written); released when the start was refused (nothing was stored, so
/// the request may be sent again). When the answer says nothing sure — the
/// gate failed, or could not be reached — the gate is asked: released if it
/// does not know the run, else left as it is (in flight, or stored), for
/// the run's gate to judge when the name comes again. Never released while
/// the run is in flight.
pub async fn settle_start(
    env: &Env,
    name: &ClaimName<'_>,
    claimed: &Claim,
    owner: &str,
    answer: &std::result::Result<Response, ApiError>,
) {
    let release = match answer.as_ref().map(Response::status_code) {
        Ok(status) if status < 400 => false,
        Ok(status) if status < 500 => true,
        _ => {
            let unknown = read(env, &claimed.run_id, owner)
                .await
                .is_ok_and(|view| view.status_code() == 404);
            if !unknown {
                return;
            }
            true
        }
    };
    let settle = Claim {
        run_id: claimed.run_id.clone(),
        body_hash: claimed.body_hash.clone(),
        at: now_ms(),
        taken: claimed.taken,
        release,
        started: !release,
        ..Claim::default()
    };
    // Best effort: a claim left unsettled is judged by the run's gate when
    // the name comes again, once the object's memory of handing it out has
    // lapsed.
    let _ = ask_named(env, name, &settle).await;
}

/// The run's gate's answer to a read on behalf of `owner`.
async fn read(env: &Env, run_id: &str, owner: &str) -> std::result::Result<Response, ApiError> {
    let read = Command::Read {
        run_id: run_id.to_string(),
        owner: Some(owner.to_string()),
    };
    gate(env, run_id, &read).await
}

/// What a replay shows of a run still being started by the request that
/// claimed it, before its gate has heard of it (`unknown`, the gate's
/// answer): what the gate itself shows of a run whose first segment is
/// executing, with what asking it cost.
fn starting_view(run_id: &str, unknown: &Response) -> Response {
    let view = json_response(
        200,
        &json!({"success": true, "run_id": run_id, "status": "running", "waits": [], "trace": []}),
    );
    if let Ok(Some(ops)) = unknown.headers().get(Ops::DO_HEADER) {
        let _ = view.headers().set(Ops::DO_HEADER, &ops);
    }
    view
}
