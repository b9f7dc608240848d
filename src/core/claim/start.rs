//! Starting a run under a claim, as a request that triggers one does (a
//! caller's `Idempotency-Key`, a sub-workflow call's child): claim the
//! name, or find the run an earlier request started under it, and settle
//! the claim once the start has answered.
//!
//! A claim that starts a run is confirmed (`started`) once the run's first
//! segment has answered, which means its record was written. Until then
//! the run may be in flight — or may never be stored, if the runtime died
//! during that segment or its gate failed. `claim_run` tells the two apart
//! by asking the run's gate (which answers `running` while a segment is
//! active) and, for a run that is neither there nor in flight, takes the
//! claim over and starts the same run again; `settle_start` confirms or
//! releases the claim once the start has answered.

use super::{Claim, ClaimName};
use crate::core::error::EngineError;

/// What starting under a claim needs from the platform: the name's claim
/// object, the run's gate, and the time.
#[allow(async_fn_in_trait)]
pub trait Claimant {
    /// What the run's gate answers to a read.
    type View;
    /// Sends `claim` to the object of `name`, and answers the claim in
    /// force: the one asked for when it was made (`made`), else the one
    /// made before (for a `peek`, `release` or `started` with none in
    /// force, one with an empty `run_id`).
    async fn ask(&self, name: &ClaimName<'_>, claim: &Claim) -> Result<Claim, EngineError>;
    /// The run's gate's answer to a read on behalf of the claimant.
    async fn read(&self, run_id: &str) -> Result<GateRead<Self::View>, EngineError>;
    fn now(&self) -> u64;
}

/// A gate's answer to a read, and whether it knows the run (stored, or in
/// flight in it).
#[derive(Debug, Clone, PartialEq)]
pub struct GateRead<V> {
    pub known: bool,
    pub view: V,
}

/// What claiming the start of a run came to.
#[derive(Debug, PartialEq)]
pub enum Claimed<V> {
    /// This request holds the claim and starts its run: a fresh one, or —
    /// taken over — the run an earlier request claimed and never stored,
    /// under the same run id.
    Start(Claim),
    /// An earlier request claimed the name with another body.
    Conflict(Claim),
    /// An earlier request started the run. `view` is its gate's answer to a
    /// read; `starting` when the gate does not know it yet because the
    /// request that holds the claim is still on its way there (a run that
    /// shows as `running`).
    Replay {
        run_id: String,
        view: V,
        starting: bool,
    },
}

/// Claims `name` for a new run `run_id` (of a request hashed `body_hash`),
/// and, when an earlier request holds it, finds that request's run — in
/// its gate, which knows a run in flight, not in KV, which may lag. A run
/// neither stored nor in flight there, behind a claim never confirmed and
/// not being started, was never stored: the claim is taken over with a
/// compare-and-swap, so of any number of requests doing this at once one
/// starts it again, and the rest are told that one's run.
pub async fn claim_run<P: Claimant>(
    p: &P,
    name: &ClaimName<'_>,
    run_id: &str,
    body_hash: &str,
) -> Result<Claimed<P::View>, EngineError> {
    let asked = Claim {
        run_id: run_id.to_string(),
        body_hash: body_hash.to_string(),
        at: p.now(),
        ..Claim::default()
    };
    let held = p.ask(name, &asked).await?;
    if held.made {
        return Ok(Claimed::Start(held));
    }
    if held.body_hash != body_hash {
        return Ok(Claimed::Conflict(held));
    }
    let read = p.read(&held.run_id).await?;
    if read.known || held.started || held.starting {
        return Ok(Claimed::Replay {
            starting: !read.known && !held.started,
            run_id: held.run_id,
            view: read.view,
        });
    }
    let take = Claim {
        run_id: held.run_id,
        body_hash: held.body_hash,
        at: p.now(),
        take_over: Some(held.taken),
        ..Claim::default()
    };
    let held = p.ask(name, &take).await?;
    if held.made {
        return Ok(Claimed::Start(held));
    }
    if held.body_hash != body_hash {
        return Ok(Claimed::Conflict(held));
    }
    // Another request took it over first, and starts it.
    let read = p.read(&held.run_id).await?;
    Ok(Claimed::Replay {
        starting: !read.known,
        run_id: held.run_id,
        view: read.view,
    })
}

/// How the start of a claimed run answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOutcome {
    /// Its first segment answered: the record is written.
    Started,
    /// The gate refused it (a bad graph, say): nothing was stored.
    Refused,
    /// Nothing sure: the gate failed, or could not be reached.
    Unsure,
}

/// Settles the claim `claimed` for by the start of its run: confirmed once
/// the first segment answered; released when the start was refused
/// (nothing was stored, and the same request would be refused again).
/// When the answer says nothing sure, the gate is asked: a run it does not
/// know is abandoned — the next request with the name starts it again,
/// under the same id — and one it knows (in flight, or stored) is left for
/// the run's gate to judge when the name comes again.
///
/// Best effort: a claim left unsettled is judged by the run's gate when
/// the name comes again, once the object's memory of handing it out has
/// lapsed.
pub async fn settle_start<P: Claimant>(
    p: &P,
    name: &ClaimName<'_>,
    claimed: &Claim,
    outcome: StartOutcome,
) {
    let settle = Claim {
        run_id: claimed.run_id.clone(),
        body_hash: claimed.body_hash.clone(),
        at: p.now(),
        taken: claimed.taken,
        ..Claim::default()
    };
    let settle = match outcome {
        StartOutcome::Started => Claim {
            started: true,
            ..settle
        },
        StartOutcome::Refused => Claim {
            release: true,
            ..settle
        },
        StartOutcome::Unsure => match p.read(&claimed.run_id).await {
            Ok(read) if !read.known => Claim {
                abandon: true,
                ..settle
            },
            _ => return,
        },
    };
    let _ = p.ask(name, &settle).await;
}
