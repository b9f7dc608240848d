//! A daemon's heartbeat: progress on its wait and, asked for, a later
//! deadline (never earlier; at most the longest wait from its call, and
//! never past the URL the daemon holds).

use serde_json::Value;

use super::{turned_away, Applied};
use crate::core::error::EngineError;
use crate::core::record::{EventKind, WaitEvent};
use crate::core::run::Run;

pub(super) struct OnHeartbeat {
    pub wait_id: String,
    pub body: Value,
    pub token_expires_at: Option<u64>,
}

impl OnHeartbeat {
    /// Applies it as of `judged_at` (its arrival: a replay moves the
    /// deadline exactly as the first application did).
    pub(super) fn apply(
        self,
        run: &mut Run,
        judged_at: u64,
    ) -> (Result<Applied, EngineError>, Option<(String, WaitEvent)>) {
        let Self {
            wait_id,
            body,
            token_expires_at,
        } = self;
        let result = match run.heartbeat(&wait_id, body, token_expires_at, judged_at) {
            Ok(Ok(expires_at)) => Ok(Applied::Heartbeat {
                wait_id: wait_id.clone(),
                expires_at,
                // The URLs answered are the ones the daemon holds (or, on
                // the bare route, good as long as the wait may last).
                url_expires_at: token_expires_at
                    .unwrap_or_else(|| run.url_expiry_of(&wait_id, expires_at)),
            }),
            Ok(Err(noop)) => Ok(Applied::Noop(noop)),
            Err(e) => Err(e),
        };
        let noted = turned_away(&wait_id, EventKind::Heartbeat, &result);
        (result, noted)
    }
}
