//! Claims: a name that, once claimed, keeps naming one run. Three kinds of
//! name use them (`ClaimName`): a caller's `Idempotency-Key`, the child run
//! of a sub-workflow call, and the bare resume route's task index. Each
//! name has an object of its own (a Durable Object in the Worker), which
//! makes a claim race-free: the first request to claim a name names the
//! run it is about to start; every request after it, even one arriving at
//! the same instant, is told that run instead (or that its body differs).
//!
//! This module holds what a claim object decides (`decide`, performed by
//! `ClaimKeeper` over its storage) and how a request that starts a run
//! uses a claim (`start::claim_run`, `start::settle_start`). Time comes in
//! with every request; nothing here reads a clock.

mod keeper;
mod start;

pub use keeper::{ClaimKeeper, ClaimStorage};
pub use start::{claim_run, settle_start, Claimant, Claimed, GateRead, StartOutcome};

use serde::{Deserialize, Serialize};

use super::error::EngineError;

/// How long a name keeps naming its run.
pub const CLAIM_TTL_MS: u64 = 24 * 3600 * 1000;

/// How long a claim an object handed out stays "being started" without
/// news from the request that holds it. The holder reaches the run's gate
/// within milliseconds, after which the gate itself answers `running`; a
/// holder not heard of past this died before it got there.
pub const START_GRACE_MS: u64 = 30_000;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    pub fn object_name(&self) -> Result<String, EngineError> {
        let owned = |owner: &str| match is_owner_id(owner) {
            true => Ok(()),
            false => Err(EngineError::InvalidRequest(
                "a claim under an API key needs its owner id".into(),
            )),
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
    /// Asked: the start of `run_id` came to nothing sure and its gate does
    /// not know the run: stop answering that it is being started, so the
    /// next request with the name takes it over and starts it again under
    /// the same id. (Releasing it would let that request start another
    /// run, and the name would have named two.)
    #[serde(default, skip_serializing_if = "is_false")]
    pub abandon: bool,
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
    /// How long the claim lasts from `at`.
    pub fn ttl(&self) -> u64 {
        self.ttl_ms.unwrap_or(CLAIM_TTL_MS)
    }

    /// When the claim is forgotten.
    pub fn ends_at(&self) -> u64 {
        self.at.saturating_add(self.ttl())
    }
}

/// What a claim object does with a request.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Answers this, changing nothing.
    Tell(Claim),
    /// Forgets the claim it holds, and answers this.
    Forget(Claim),
    /// Forgets only that it handed its claim out, and answers this.
    Abandon(Claim),
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
/// still be on its way to the run's gate).
pub fn decide(asked: Claim, held: Option<Claim>, handed_out: bool) -> Verdict {
    let starting = |c: &Claim| handed_out && !c.started;
    let told = |c: Claim| {
        Verdict::Tell(Claim {
            starting: starting(&c),
            ..c
        })
    };
    let Some(held) = held else {
        return match asked.release || asked.started || asked.peek || asked.abandon {
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
    if asked.abandon {
        return match same {
            true => Verdict::Abandon(held),
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

#[cfg(test)]
mod tests;
