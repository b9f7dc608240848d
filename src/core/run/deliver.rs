//! The final callback's delivery: when it is due, what each attempt's
//! outcome does, and the retry schedule. Sending it is the driver's job;
//! every decision is here, so it is tested with a manual clock.

use super::super::error::EngineError;
use super::super::protocol::CallFailure;
use super::super::record::{
    DeliveryAttempt, DeliveryState, FinalCallback, RunStatus, MAX_DELIVERY_ATTEMPTS_KEPT,
};
use super::Run;

/// Waits between attempts, in seconds: the reference daemon's policy
/// (at once, 1 s, 5 s, 30 s), then backing off further; the last repeats
/// until the retry window is used up.
pub const RETRY_DELAYS_SECS: [u64; 8] = [0, 1, 5, 30, 300, 1800, 7200, 21600];

/// How one attempt went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The receiver answered with this status (or no answer came: `None`).
    Answered { status: u16, duration_ms: u64 },
    Failed {
        error: String,
        /// Why, as a stable code, when the sender could tell.
        code: Option<CallFailure>,
        duration_ms: u64,
    },
}

/// When the attempt after `attempts` attempts of a round begun at
/// `round_started` is due, or `None` when the window is used up.
pub fn next_attempt(round_started: u64, attempts: usize, window_ms: u64) -> Option<u64> {
    let elapsed: u64 = (0..=attempts)
        .map(|i| RETRY_DELAYS_SECS[i.min(RETRY_DELAYS_SECS.len() - 1)] * 1000)
        .sum();
    (elapsed <= window_ms).then(|| round_started + elapsed)
}

impl Run {
    /// Asks for the final callback to `url` when the run finishes.
    pub fn notify_on_finish(&mut self, url: String) {
        self.record.final_callback = Some(FinalCallback {
            url,
            state: DeliveryState::Waiting,
            attempts: Vec::new(),
            round_started_at: None,
        });
    }

    /// When the final callback is next due: once the run has finished and
    /// until it is delivered, refused or given up on.
    pub fn delivery_due(&self) -> Option<u64> {
        let finished_at = self.record.status.finished_at()?;
        match self.record.final_callback.as_ref()?.state {
            DeliveryState::Waiting => Some(finished_at),
            DeliveryState::Retrying { next_at } => Some(next_at),
            _ => None,
        }
    }

    /// Applies one attempt's outcome: `2xx` delivered, `410` refused, anything
    /// else retried on the schedule until `window_ms` from the round's start.
    pub fn record_delivery(&mut self, outcome: DeliveryOutcome, now: u64, window_ms: u64) {
        let Some(callback) = self.record.final_callback.as_mut() else {
            return;
        };
        let round_started = *callback.round_started_at.get_or_insert(now);
        let (status, error, error_code, duration_ms) = match &outcome {
            DeliveryOutcome::Answered {
                status,
                duration_ms,
            } => (Some(*status), None, None, *duration_ms),
            DeliveryOutcome::Failed {
                error,
                code,
                duration_ms,
            } => (None, Some(error.clone()), *code, *duration_ms),
        };
        callback.attempts.push(DeliveryAttempt {
            at: now,
            status,
            error,
            error_code,
            duration_ms,
        });
        let excess = callback
            .attempts
            .len()
            .saturating_sub(MAX_DELIVERY_ATTEMPTS_KEPT);
        callback.attempts.drain(..excess);
        let in_round = callback
            .attempts
            .iter()
            .filter(|a| a.at >= round_started)
            .count();
        callback.state = match status {
            Some(200..=299) => DeliveryState::Delivered { at: now },
            Some(410) => DeliveryState::Refused { at: now },
            _ => match next_attempt(round_started, in_round, window_ms) {
                Some(next_at) => DeliveryState::Retrying {
                    next_at: next_at.max(now),
                },
                None => DeliveryState::GaveUp { at: now },
            },
        };
    }

    /// Sends the final callback again, as a new round of attempts.
    pub fn redeliver(&mut self, now: u64) -> Result<(), EngineError> {
        if !self.record.status.is_finished() {
            return Err(EngineError::RunNotFinished {
                status: self.record.status.name(),
            });
        }
        let Some(callback) = self.record.final_callback.as_mut() else {
            return Err(EngineError::InvalidRequest(
                "this run was started without a final_callback_url: there is nothing to redeliver"
                    .into(),
            ));
        };
        callback.round_started_at = Some(now);
        callback.state = DeliveryState::Retrying { next_at: now };
        Ok(())
    }

    /// The event type of the final callback for the run's status.
    pub fn final_event_type(&self) -> Option<&'static str> {
        Some(match self.record.status {
            RunStatus::Completed { .. } => "run.completed",
            RunStatus::Failed { .. } => "run.failed",
            RunStatus::Cancelled { .. } => "run.cancelled",
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_backs_off_and_stops_at_the_window() {
        let day = 24 * 3600 * 1000;
        let offsets: Vec<u64> = (0..12)
            .map_while(|n| next_attempt(0, n, day))
            .map(|t| t / 1000)
            .collect();
        // At once, then 1 s, 5 s, 30 s, 5 min, 30 min, 2 h, 6 h, 6 h… apart.
        assert_eq!(
            offsets,
            vec![0, 1, 6, 36, 336, 2136, 9336, 30936, 52536, 74136]
        );
        assert_eq!(
            next_attempt(0, 3, 10_000),
            None,
            "a short window stops early"
        );
    }
}
