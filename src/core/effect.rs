//! What the run state machine asks its driver to do. The core decides every
//! effect — a component call, when to wake up, when to stop for this
//! invocation — and the driver (natively in tests, on Workers in the gate)
//! only performs them.

use super::run::Call;

#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Perform this component call and feed its outcome back with
    /// `Run::complete_call`.
    Call(Box<Call>),
    /// The run is paused; act on it at this time (Unix ms) even if no
    /// request arrives: the earliest open wait's deadline.
    WakeAt(u64),
    /// This invocation's call budget is spent and work is left: store the
    /// run as `running` and continue it in a fresh invocation.
    Yield,
}

impl Effect {
    pub fn as_call(&self) -> Option<&Call> {
        match self {
            Self::Call(c) => Some(c),
            _ => None,
        }
    }
}

/// When the run next needs to act on its own, from the effects that ended a
/// segment: now (it yielded), at a deadline, or never (it finished).
pub fn next_wake(effects: &[Effect], now: u64) -> Option<u64> {
    effects.iter().find_map(|e| match e {
        Effect::Yield => Some(now),
        Effect::WakeAt(t) => Some(*t),
        Effect::Call(_) => None,
    })
}
