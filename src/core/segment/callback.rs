//! A daemon's callback: it resumes its wait, is held until the wait opens
//! (a call lost with a crashed segment, to be made again), or changes
//! nothing and says why.

use serde_json::Value;

use super::{turned_away, Applied};
use crate::core::error::EngineError;
use crate::core::record::{EventKind, WaitEvent};
use crate::core::run::{Resume, Run};

pub(super) struct OnCallback {
    pub wait_id: String,
    pub body: Value,
    /// The expiry its URL was signed with (none on the bare route).
    pub token_expires_at: Option<u64>,
}

impl OnCallback {
    /// Applies it, judged at `judged_at` (its arrival); answers what it did
    /// and, if it was turned away, the event to keep beside the wait.
    pub(super) fn apply(
        self,
        run: &mut Run,
        judged_at: u64,
        now: u64,
    ) -> (Result<Applied, EngineError>, Option<(String, WaitEvent)>) {
        let Self {
            wait_id,
            body,
            token_expires_at,
        } = self;
        let task_id = body
            .get("task_id")
            .and_then(Value::as_str)
            .map(str::to_string);
        let result = match run.resume_arrived(&wait_id, body, token_expires_at, judged_at, now) {
            Ok(Ok(Resume::Applied)) => Ok(Applied::Resumed {
                wait_id: wait_id.clone(),
            }),
            Ok(Ok(Resume::Held)) => Ok(Applied::Held { task_id }),
            Ok(Err(noop)) => Ok(Applied::Noop(noop)),
            Err(e) => Err(e),
        };
        let noted = turned_away(&wait_id, EventKind::Callback, &result);
        (result, noted)
    }
}
