//! The alarm: what its handler does, how the gate sets it, and the pure
//! decision of where a turn leaves it.

use std::cell::Cell;

use super::storage::{GateMeta, ObjectStorage};
use super::{Gate, Platform, Publish, Sleep};
use crate::core::driver::Components;
use crate::core::error::EngineError;
use crate::core::pacing::{earliest, WritePacer};
use crate::core::segment::{Clock, Command, Notifier};
use crate::core::store::{Records, TaskIndexStore};

impl Gate {
    /// The alarm fired: write what waits to be written, apply what was
    /// kept, take due deadlines, continue a yielded run, deliver. An alarm
    /// with nothing due re-arms from the meta and costs no KV operation. An
    /// error asks the platform to retry the alarm.
    pub async fn alarm<R, C, K, N, O>(
        &self,
        p: &Platform<'_, R, C, K, N, O>,
    ) -> Result<(), EngineError>
    where
        R: Records + TaskIndexStore,
        C: Components,
        K: Clock + Sleep,
        N: Notifier,
        O: ObjectStorage,
    {
        // Firing from the first await on: a request that sets the alarm
        // meanwhile (a callback queued while this waits for the lock or
        // reads the meta) must not ask for the time that fired, or the
        // platform deletes it with this one. Made exact below.
        self.firing.set(Some(p.clock.now()));
        // However the turn ends, no alarm fires once it has.
        let _firing = Firing(&self.firing);
        let mut turn = self.lock.lock().await;
        // Whatever is decided below sets the alarm again if needed.
        self.alarm.set(Some(None));
        self.alarm_landed.set(Some(None));
        let Some(meta) = self.meta(p).await? else {
            return Ok(());
        };
        let now = p.clock.now();
        // The alarm that fired is the one the meta names if that is due (the
        // clock may read a little behind the platform's); an alarm fired
        // again by the platform, early or retried, is due by now, whenever
        // it was set for.
        let fired = match meta.wake_at {
            Some(at) if at <= now.saturating_add(FIRED_CLOCK_SLACK_MS) => at.max(now),
            _ => now,
        };
        self.firing.set(Some(fired));
        let cold = self.kept.borrow().is_none();
        let idle = self.inbox.borrow().queued.is_empty() && !self.inbox.borrow().unchecked;
        if let (true, Some(at)) = (cold && idle, meta.wake_at) {
            if at > now {
                self.ensure_alarm(p, &meta.run_id, Some(at)).await;
                return Ok(());
            }
        }
        let run_id = meta.run_id;
        self.catch_up(p, &run_id).await?;
        // Callbacks that arrived meanwhile go before the deadlines the
        // alarm takes: they are judged at their arrival.
        self.drain(p, usize::MAX, None).await;
        // What the requests answered before left to write goes first: the
        // run acting next (a continuation's calls) may take a while, and
        // reads meanwhile show what KV holds.
        let pacer = self.pacer.get();
        if pacer.dirty_since().is_some() && pacer.may_write(p.clock.now()) {
            turn = self.publish(p, turn).await?;
        }
        // The run acts when it is due — a deadline, a continuation, a poll —
        // even within the second of its last write: its change is kept like
        // a request (`wake`), replayed in its place if this object dies, its
        // calls answered from the journal; the write follows when KV allows.
        let now = p.clock.now();
        let due = self
            .run_wake(now)
            .is_none_or(|wake| wake.is_some_and(|w| w <= now));
        if due {
            let command = Command::Wake {
                run_id: run_id.clone(),
            };
            let key = self.inbox.borrow_mut().next_key(now);
            match self.segment(p, command.clone(), None).await {
                Ok(segment) => {
                    if segment.dirty {
                        self.changed(now);
                        if !self.pacer.get().may_write(p.clock.now()) {
                            let text = serde_json::to_string(&command).unwrap_or_default();
                            self.keep(p, key, text).await?;
                        }
                    }
                }
                Err(e) => {
                    // Try again shortly; the platform also retries a failed handler.
                    self.ensure_alarm(p, &run_id, Some(now + 5_000)).await;
                    self.settle(p, &run_id, usize::MAX, Publish::Now).await?;
                    return Err(e);
                }
            }
        }
        // No one waits on an alarm: it applies all that is queued.
        let settled = self.settle(p, &run_id, usize::MAX, Publish::Now).await;
        drop(turn);
        settled
    }

    /// Sets (or clears) the alarm to `wake`, unless it is already so. The
    /// meta is stored first, so an alarm always finds its run.
    pub(super) async fn ensure_alarm<R, C, K, N, O>(
        &self,
        p: &Platform<'_, R, C, K, N, O>,
        run_id: &str,
        wake: Option<u64>,
    ) where
        O: ObjectStorage,
    {
        let backoff = self.lag_backoff.get().unwrap_or(0);
        let wake = wake.map(|at| self.after_firing(at.max(backoff)));
        if self.alarm.get() == Some(wake) {
            return;
        }
        // Known before the first await: a concurrent caller sees it.
        self.alarm.set(Some(wake));
        let set = match wake {
            // The stored meta is read first if unknown: rewriting it from
            // nothing would forget when the record was last written.
            Some(_) if self.meta(p).await.is_err() => false,
            Some(at) => {
                let meta = {
                    let mut meta = self.meta.borrow_mut();
                    let meta = meta.get_or_insert_with(GateMeta::default);
                    meta.run_id = run_id.to_string();
                    meta.wake_at = Some(at);
                    meta.clone()
                };
                self.put_meta(p, &meta).await.is_ok() && p.object.set_alarm(Some(at)).await.is_ok()
            }
            // The meta may stay: with no alarm nothing reads it, and the next
            // alarm set rewrites it.
            None => p.object.set_alarm(None).await.is_ok(),
        };
        if set {
            self.alarm_landed.set(Some(wake));
        } else if self.alarm.get() == Some(wake) {
            // Unknown after a failure, so the next request tries again.
            self.alarm.set(None);
        }
    }
}

/// Clears the gate's note of the alarm firing when the handler's turn ends,
/// on every path out of it.
struct Firing<'a>(&'a Cell<Option<u64>>);

impl Drop for Firing<'_> {
    fn drop(&mut self) {
        self.0.set(None);
    }
}

/// How far the clock a handler reads may lag the time its alarm was due.
const FIRED_CLOCK_SLACK_MS: u64 = 1_000;

impl Gate {
    /// The time to ask the alarm for, given that one fires now. workerd
    /// deletes an alarm whose handler succeeds unless the handler changed
    /// it, and an alarm set again to the very time that fired is no change:
    /// it went with the one that fired, and the final callback it was set
    /// for was never sent (seen in CI). So a handler never asks for that
    /// time or earlier; a millisecond later fires as soon.
    pub(super) fn after_firing(&self, at: u64) -> u64 {
        match self.firing.get() {
            Some(fired) if at <= fired => fired + 1,
            _ => at,
        }
    }
}

/// What decides the alarm at the end of a turn.
#[derive(Debug, Clone, Copy)]
pub struct AlarmInputs {
    pub now: u64,
    /// Requests are kept but not applied (queued, or storage unchecked).
    pub unapplied: bool,
    /// When the kept run next acts on its own; `None` when no run is kept.
    pub run_wake: Option<Option<u64>>,
    pub pacer: WritePacer,
}

/// What a turn does to the alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlarmPlan {
    /// Set it for this time, or clear it (`None`).
    Set(Option<u64>),
    /// Leave it: with no run kept, when it must act is not known here.
    Leave,
}

/// The alarm a turn leaves: now while anything kept is unapplied (so it is
/// applied whoever comes next); else the earlier of the run's own wake — a
/// deadline, a continuation, a poll, a delivery: taken when due, its change
/// kept until KV allows the write — and the moment the changes waiting to be
/// written may be.
pub fn alarm_after_turn(inputs: AlarmInputs) -> AlarmPlan {
    let AlarmInputs {
        now,
        unapplied,
        run_wake,
        pacer,
    } = inputs;
    if unapplied {
        return AlarmPlan::Set(Some(now));
    }
    let Some(wake) = run_wake else {
        return AlarmPlan::Leave;
    };
    AlarmPlan::Set(earliest(wake, pacer.flush_at()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(now: u64) -> AlarmInputs {
        AlarmInputs {
            now,
            unapplied: false,
            run_wake: Some(None),
            pacer: WritePacer::default(),
        }
    }

    #[test]
    fn anything_kept_but_unapplied_sets_the_alarm_for_now() {
        let plan = alarm_after_turn(AlarmInputs {
            unapplied: true,
            run_wake: Some(Some(90_000)),
            ..inputs(10_000)
        });
        assert_eq!(plan, AlarmPlan::Set(Some(10_000)));
    }

    #[test]
    fn a_deadline_is_taken_when_due_even_within_the_second_of_a_write() {
        let mut pacer = WritePacer::default();
        pacer.wrote(10_000);
        let deadline = AlarmInputs {
            run_wake: Some(Some(10_200)),
            pacer,
            ..inputs(10_100)
        };
        assert_eq!(alarm_after_turn(deadline), AlarmPlan::Set(Some(10_200)));
    }

    #[test]
    fn changes_waiting_to_be_written_bring_the_alarm_forward() {
        let mut pacer = WritePacer::default();
        pacer.wrote(10_000);
        pacer.changed(10_100);
        let plan = alarm_after_turn(AlarmInputs {
            run_wake: Some(Some(60_000)),
            pacer,
            ..inputs(10_100)
        });
        assert_eq!(plan, AlarmPlan::Set(Some(11_000)));
    }

    #[test]
    fn a_finished_run_with_nothing_to_write_clears_it_and_no_run_leaves_it() {
        assert_eq!(alarm_after_turn(inputs(5)), AlarmPlan::Set(None));
        let cold = AlarmInputs {
            run_wake: None,
            ..inputs(5)
        };
        assert_eq!(alarm_after_turn(cold), AlarmPlan::Leave);
    }
}
