//! A caller's cancel: open waits close as `cancelled`, the run ends.

use super::Applied;
use crate::core::error::EngineError;
use crate::core::run::Run;

pub(super) struct OnCancel;

impl OnCancel {
    pub(super) fn apply(self, run: &mut Run, now: u64) -> Result<Applied, EngineError> {
        run.cancel(now).map(|()| Applied::Cancelled)
    }
}
