//! A claim object's turn: read the claim it holds, decide, store what the
//! decision keeps. The Worker's `TriggerClaim` and the simulation perform
//! it over their own storage.

use std::cell::Cell;

use super::{decide, Claim, Verdict, START_GRACE_MS};
use crate::core::error::EngineError;

/// The storage of one claim object: durable per put, with an alarm.
#[allow(async_fn_in_trait)]
pub trait ClaimStorage {
    async fn get(&self) -> Result<Option<String>, EngineError>;
    async fn put(&self, text: String) -> Result<(), EngineError>;
    /// Forgets everything the object stored.
    async fn forget(&self) -> Result<(), EngineError>;
    async fn set_alarm(&self, at: u64) -> Result<(), EngineError>;
}

/// One life of a claim object. Requests to it run one at a time between
/// awaits on its own storage (input gates), so a read followed by a write
/// is atomic.
#[derive(Debug, Default)]
pub struct ClaimKeeper {
    /// When this object, in its current life, handed its claim out to a
    /// request that is to start its run, until that request reports back.
    /// Memory, not storage, on purpose: after a restart of the runtime the
    /// holder is gone too, and the claim is for the run's gate to judge.
    handed_out: Cell<Option<u64>>,
}

impl ClaimKeeper {
    /// Answers `asked` at `now` with the claim in force.
    pub async fn handle<S: ClaimStorage>(
        &self,
        storage: &S,
        asked: Claim,
        now: u64,
    ) -> Result<Claim, EngineError> {
        let held = storage
            .get()
            .await?
            .and_then(|text| serde_json::from_str::<Claim>(&text).ok())
            .filter(|c| asked.at < c.ends_at());
        let handed_out = self
            .handed_out
            .get()
            .is_some_and(|at| now < at.saturating_add(START_GRACE_MS));
        Ok(match decide(asked, held, handed_out) {
            Verdict::Tell(claim) => claim,
            Verdict::Abandon(claim) => {
                self.handed_out.set(None);
                claim
            }
            Verdict::Forget(claim) => {
                storage.forget().await?;
                self.handed_out.set(None);
                claim
            }
            Verdict::Keep {
                claim,
                hand_out,
                new,
            } => {
                let text = serde_json::to_string(&claim)
                    .map_err(|e| EngineError::Storage(format!("claim not serialized: {e}")))?;
                storage.put(text).await?;
                if new {
                    storage.set_alarm(claim.ends_at()).await?;
                }
                self.handed_out.set(hand_out.then_some(now));
                Claim {
                    made: hand_out,
                    ..claim
                }
            }
        })
    }

    /// The alarm: the claim's time is up.
    pub async fn expire<S: ClaimStorage>(&self, storage: &S) -> Result<(), EngineError> {
        storage.forget().await?;
        self.handed_out.set(None);
        Ok(())
    }
}
