//! A caller's redelivery: a new round of final-callback attempts.

use super::Applied;
use crate::core::error::EngineError;
use crate::core::run::Run;

pub(super) struct OnRedeliver;

impl OnRedeliver {
    pub(super) fn apply(self, run: &mut Run, now: u64) -> Result<Applied, EngineError> {
        run.redeliver(now).map(|()| Applied::Redelivery)
    }
}
