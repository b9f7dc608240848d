//! A caller's retry of a failed run: its failed parts fire again, with new
//! wait ids. Taken before deadlines: a failed run dropped its waits.

use super::Applied;
use crate::core::error::EngineError;
use crate::core::run::Run;

pub(super) struct OnRetry;

impl OnRetry {
    pub(super) fn apply(self, run: &mut Run, now: u64) -> Result<Applied, EngineError> {
        run.retry(now).map(|()| Applied::Retried)
    }
}
