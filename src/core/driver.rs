//! Performs the calls a run asks for and feeds the outcomes back, until the
//! run settles. Generic over how components are reached and how time is read,
//! so the same loop runs natively in tests and on Workers.

use futures::future::join_all;

use super::executor::{Call, CallOutcome, Run, Settings};

/// Reaches components over the network (or a test double of the network).
// Workers run single-threaded, so the returned futures need not be `Send`.
#[allow(async_fn_in_trait)]
pub trait Components {
    async fn call(&self, call: &Call) -> CallOutcome;
}

/// Steps `run` until it is paused, completed or failed. Calls that become
/// ready together are performed concurrently, and their outcomes applied in
/// the order the calls were issued so the trace is deterministic.
pub async fn drive<C: Components>(
    run: &mut Run,
    components: &C,
    now: &dyn Fn() -> u64,
    settings: &Settings,
) {
    loop {
        let calls = run.step(now(), settings);
        if calls.is_empty() {
            return;
        }
        let outcomes = join_all(calls.iter().map(|c| components.call(c))).await;
        for (call, outcome) in calls.iter().zip(outcomes) {
            run.complete_call(call.key, outcome, now());
        }
    }
}
