//! How a node's (or a FOREACH item's) result is judged and how it came to
//! be: what every transition that finishes a call — a component's answer,
//! a callback, a deadline, a poll, the engine itself — hands to `complete`.
//! Its own module, below all of them, so that none imports another for it.

use serde_json::Value;

use super::super::protocol::is_failure;

/// Whether a node's result counts as success. Remote answers are judged by
/// the result protocol; in-process nodes succeed unless the engine itself
/// failed them — their output echoes upstream context, which may legitimately
/// carry an `error` routed to them by `ON_FAIL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Success,
    Failure,
}

impl Verdict {
    pub(super) fn judge(output: &Value) -> Self {
        if is_failure(output) {
            Self::Failure
        } else {
            Self::Success
        }
    }
}

/// How a result came to be, for the trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Via {
    /// Computed in-process (a built-in, an Input or Output node).
    InProcess,
    /// The engine failed the node before or instead of calling it.
    Engine,
    /// A component's answer to a call started at this time.
    Call { started: u64 },
    /// A callback for a wait open since this time.
    Callback { since: u64 },
    /// A wait open since this time passed its deadline.
    Deadline { since: u64 },
    /// A wait open since this time was ended by polling its status URL.
    Poll { since: u64 },
}

impl Via {
    pub(super) fn duration(self, now: u64) -> Option<u64> {
        match self {
            Self::InProcess => Some(0),
            Self::Engine => None,
            Self::Call { started: t }
            | Self::Callback { since: t }
            | Self::Deadline { since: t }
            | Self::Poll { since: t } => Some(now.saturating_sub(t)),
        }
    }
}
