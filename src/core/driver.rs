//! Performs the effects a run asks for and feeds the outcomes back, until
//! the segment ends. Generic over how components are reached, how outcomes
//! are journaled and how time is read, so the same loop runs natively in
//! tests and on Workers.

use futures::future::join_all;

use super::effect::Effect;
use super::run::{Call, CallOutcome, Journaled, Run};

/// Reaches components over the network (or a test double of the network).
// Workers run single-threaded, so the returned futures need not be `Send`.
#[allow(async_fn_in_trait)]
pub trait Components {
    async fn call(&self, call: &Call) -> CallOutcome;

    /// Cancels a child run (a sub-workflow's) whose wait its parent closed
    /// unwanted — the parent cancelled, or the wait superseded — on behalf
    /// of `owner`. Best effort: a child that is not reached ends by its own
    /// deadline, and its end is answered as a noop by its parent.
    async fn cancel_child(&self, _run_id: &str, _owner: Option<&str>) {}
}

/// Where call outcomes are written as they arrive, so that a segment that
/// dies before its record is saved can be run again without calling the
/// components that already answered.
#[allow(async_fn_in_trait)]
pub trait Journal {
    /// The outcome recorded for this call by an earlier, unfinished attempt.
    fn replay(&self, idempotency_key: &str) -> Option<Journaled>;
    /// Records an outcome. Best effort: a failure here only means the call
    /// may be made again if the segment dies.
    async fn record(&self, idempotency_key: &str, entry: &Journaled);
}

/// No journal: every call is made.
pub struct NoJournal;

impl Journal for NoJournal {
    fn replay(&self, _: &str) -> Option<Journaled> {
        None
    }
    async fn record(&self, _: &str, _: &Journaled) {}
}

/// Steps `run` until the segment ends and returns the effects that ended it
/// (`WakeAt`, `Yield`, or none when the run finished). Calls that become due
/// together are performed concurrently, and their outcomes applied in the
/// order the calls were issued so the trace is deterministic.
pub async fn drive<C: Components, J: Journal>(
    run: &mut Run,
    components: &C,
    journal: &J,
    now: &dyn Fn() -> u64,
) -> Vec<Effect> {
    loop {
        let effects = run.step(now());
        let calls: Vec<&Call> = effects.iter().filter_map(Effect::as_call).collect();
        if calls.is_empty() {
            return effects;
        }
        let outcomes = join_all(calls.iter().map(|call| async move {
            if let Some(entry) = journal.replay(&call.idempotency_key) {
                return entry;
            }
            let entry = Journaled {
                outcome: components.call(call).await,
                expires_at: Some(call.expires_at),
            };
            journal.record(&call.idempotency_key, &entry).await;
            entry
        }))
        .await;
        for (call, entry) in calls.into_iter().zip(outcomes) {
            run.complete_replayed(call.key, entry, now());
        }
    }
}
