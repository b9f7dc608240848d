//! Writing the kept run to KV, from the alarm's turn: the meta and the
//! alarm first (a crash mid-write must leave the requests it covers
//! replayed soon, and a paused run's deadline taken), the write numbered,
//! and — once it is seen to land — the journal and the kept requests it
//! covered forgotten.

use std::collections::BTreeSet;

use futures::lock::MutexGuard;

use super::storage::{GateMeta, ObjectStorage, INBOX_PREFIX};
use super::{host, Gate, GateLog, Platform, Sleep, DRAIN_PER_TURN, KEPT_ALARM_SLACK_MS};
use crate::core::driver::Components;
use crate::core::error::EngineError;
use crate::core::listing::RunSummary;
use crate::core::pacing::earliest;
use crate::core::segment::{flush, flush_encoded, record_ttl, Clock, Notifier};
use crate::core::store::{Records, TaskIndexStore, Written};
use crate::core::stored::encode;

/// A write numbered, its number stored: what it goes on with.
struct Numbered {
    run_id: String,
    started: u64,
    revision: u64,
    /// The record encoded before an answer, numbered `revision`, when the
    /// run is still as it was then.
    encoded: Option<Encoded>,
}

/// The kept run's record as encoded before a request's answer.
pub struct Encoded {
    /// `Gate::changes` when it was encoded.
    changes: u64,
    /// The revision it was numbered with.
    revision: u64,
    text: String,
}

impl Gate {
    /// Numbers and encodes the kept run's record as the next write will
    /// store it, applying to the run what encoding does (a trace too long
    /// truncated, a run too large failed), and holds the text for that
    /// write. No storage is touched: a crash loses it with the run.
    pub(super) fn encode<R, C, K, N, O>(&self, p: &Platform<'_, R, C, K, N, O>)
    where
        K: Clock,
    {
        let mut kept = self.kept.borrow_mut();
        let Some(run) = kept.as_mut() else {
            return;
        };
        let stored = self.meta.borrow().as_ref().map_or(0, |m| m.revision);
        let revision = stored.max(run.record.revision) + 1;
        run.record.revision = revision;
        let text = encode(run, p.config.max_record_bytes, p.clock.now());
        *self.encoded.borrow_mut() = Some(Encoded {
            changes: self.changes.get(),
            revision,
            text,
        });
    }

    /// The record encoded before an answer, if the kept run is still as it
    /// was then.
    fn take_encoded(&self, revision: u64) -> Option<Encoded> {
        let encoded = self.encoded.borrow_mut().take()?;
        (encoded.changes == self.changes.get() && encoded.revision == revision).then_some(encoded)
    }

    /// Writes the kept run to KV with everything applied since the last
    /// write, then forgets the kept requests that write covers. The time
    /// of the write is stored first, so a gate started again after a crash
    /// waits out KV's limit whether or not the write landed.
    pub(super) async fn write<R, C, K, N, O>(
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
        match self.number(p).await? {
            Some(numbered) => self.write_numbered(p, numbered).await,
            None => Ok(()),
        }
    }

    /// The alarm's write. A record encoded before an answer, of a run
    /// unchanged since, is written with the turn let go: a request that
    /// arrives meanwhile runs its segment (its change waits for the next
    /// write) instead of waiting on KV. Answers the turn, taken again.
    pub(super) async fn publish<'g, R, C, K, N, O>(
        &'g self,
        p: &Platform<'_, R, C, K, N, O>,
        turn: MutexGuard<'g, ()>,
    ) -> Result<MutexGuard<'g, ()>, EngineError>
    where
        R: Records + TaskIndexStore,
        C: Components,
        K: Clock + Sleep,
        N: Notifier,
        O: ObjectStorage,
    {
        let Some(mut numbered) = self.number(p).await? else {
            return Ok(turn);
        };
        // The bare route's index needs the run itself as it is written.
        let encoded = match numbered.encoded.take() {
            Some(e) if !p.config.index_tasks => e,
            other => {
                numbered.encoded = other;
                self.write_numbered(p, numbered).await?;
                return Ok(turn);
            }
        };
        let Numbered {
            run_id, started, ..
        } = numbered;
        let Some((ttl, summary)) = self.kept.borrow().as_ref().map(|run| {
            (
                record_ttl(run, p.config, started),
                RunSummary::of(&run.record),
            )
        }) else {
            return Ok(turn);
        };
        // What this write holds: the changes, kept requests and journaled
        // outcomes applied until now. Those applied meanwhile stay.
        let changes = self.changes.get();
        // Begun, as far as KV's second goes: a change made meanwhile waits
        // for the next (it is not encoded for a write due at once).
        let mut pacer = self.pacer.get();
        pacer.learned_write(started);
        self.pacer.set(pacer);
        let covered = self.inbox.borrow_mut().take_applied();
        let outcomes = std::mem::take(&mut self.journal.borrow_mut().applied);
        let writing = self.writing.lock().await;
        drop(turn);
        (p.log)(GateLog::Begins);
        // Callbacks queued while this turn held the lock are applied while
        // KV writes, rather than after: their senders wait for answers.
        let meanwhile = async {
            if !self.inbox.borrow().queued.is_empty() {
                let _turn = self.lock.lock().await;
                self.drain(p, DRAIN_PER_TURN, None).await;
            }
        };
        let save = p.records.save(&run_id, encoded.text, ttl, &summary);
        let (saved, ()) = futures::join!(save, meanwhile);
        drop(writing);
        match saved {
            Ok(()) => {
                (p.log)(GateLog::Write {
                    run_id: &run_id,
                    kept_requests: covered.len(),
                    started,
                });
                let mut pacer = self.pacer.get();
                match self.changes.get() == changes {
                    true => pacer.wrote(p.clock.now()),
                    // Changed while it was written: still to write.
                    false => pacer.learned_write(p.clock.now()),
                }
                self.pacer.set(pacer);
                let written = Written {
                    revision: encoded.revision,
                    at: started,
                    expires_at: started + ttl * 1000,
                };
                self.landed(p, written, covered, outcomes).await;
            }
            Err(e) => {
                // Still to write, with all it would have held: the run in
                // memory has every change, its storage every request.
                let mut inbox = self.inbox.borrow_mut();
                let later = std::mem::replace(&mut inbox.applied, covered);
                inbox.applied.extend(later);
                drop(inbox);
                self.journal.borrow_mut().applied.extend(outcomes);
                self.changed(started);
                return Err(e);
            }
        }
        Ok(self.lock.lock().await)
    }

    /// Numbers the next write and stores that (and the alarm the written
    /// run needs) before it begins; `None` when no run is kept.
    async fn number<R, C, K, N, O>(
        &self,
        p: &Platform<'_, R, C, K, N, O>,
    ) -> Result<Option<Numbered>, EngineError>
    where
        R: Records + TaskIndexStore,
        C: Components,
        K: Clock + Sleep,
        N: Notifier,
        O: ObjectStorage,
    {
        if self.kept.borrow().is_none() {
            return Ok(None);
        }
        self.meta(p).await?;
        let started = p.clock.now();
        let Some((run_id, wake, revision)) = self.kept.borrow().as_ref().map(|run| {
            let id = run.record.run_id.clone();
            (id, run.next_wake(started), run.record.revision)
        }) else {
            return Ok(None);
        };
        // The alarm the written run needs is set before the write: an
        // object that dies after writing a paused run must still take its
        // deadline, though nothing may ever reach it again.
        // No later than an alarm asked for and not yet landed (a queued
        // callback's): whichever lands last must still cover both.
        let wanted = wake.map(|w| earliest(Some(w), self.alarm.get().flatten()).unwrap_or(w));
        // A write that covers kept requests may die before it lands: they
        // are then applied by the next alarm, which must come soon, not at
        // the run's own wake (a deadline hours away). A turn that goes on
        // sets it to the wake once the write has landed.
        let covers_kept = !self.inbox.borrow().applied.is_empty();
        let wanted = match covers_kept {
            true => earliest(wanted, Some(started + KEPT_ALARM_SLACK_MS)),
            false => wanted,
        }
        .map(|at| self.after_firing(at));
        // An alarm that landed covers it only while it is still to come: one
        // whose time has passed may have fired already, and is spent.
        let alarm = wanted.filter(
            |w| !matches!(self.alarm_landed.get(), Some(Some(at)) if at > started && at <= *w),
        );
        let stored = self.meta.borrow().as_ref().map_or(0, |m| m.revision);
        // Numbered as it was encoded, if that is past every write begun;
        // otherwise encoded again by the write.
        let encoded = self.take_encoded(revision).filter(|e| e.revision > stored);
        let meta = {
            let mut meta = self.meta.borrow_mut();
            let meta = meta.get_or_insert_with(GateMeta::default);
            meta.run_id.clone_from(&run_id);
            meta.last_write = Some(started);
            meta.revision = match &encoded {
                Some(e) => e.revision,
                None => meta.revision.max(revision) + 1,
            };
            if alarm.is_some() {
                meta.wake_at = alarm;
            }
            meta.clone()
        };
        if let Err(e) = self.put_meta(p, &meta).await {
            self.drop_kept();
            return Err(e);
        }
        if let Some(at) = alarm {
            self.alarm.set(Some(Some(at)));
            if let Err(e) = p.object.set_alarm(Some(at)).await {
                self.alarm.set(None);
                self.alarm_landed.set(None);
                self.drop_kept();
                return Err(e);
            }
            self.alarm_landed.set(Some(Some(at)));
        }
        Ok(Some(Numbered {
            run_id,
            started,
            revision: meta.revision,
            encoded,
        }))
    }

    /// Writes the kept run, numbered, holding the turn throughout: the run
    /// is out while KV writes it.
    async fn write_numbered<R, C, K, N, O>(
        &self,
        p: &Platform<'_, R, C, K, N, O>,
        numbered: Numbered,
    ) -> Result<(), EngineError>
    where
        R: Records + TaskIndexStore,
        C: Components,
        K: Clock + Sleep,
        N: Notifier,
        O: ObjectStorage,
    {
        let Numbered {
            run_id,
            started,
            revision,
            encoded,
        } = numbered;
        let _writing = self.writing.lock().await;
        let Some(mut run) = self.kept.borrow_mut().take() else {
            return Ok(());
        };
        run.record.revision = revision;
        let since = self.pacer.get().dirty_since().unwrap_or(0);
        let covered = self.inbox.borrow_mut().take_applied();
        let store = self.store(p);
        (p.log)(GateLog::Begins);
        let result = match encoded {
            Some(e) => flush_encoded(&host(p, &store), &run, e.text, since).await,
            None => flush(&host(p, &store), &mut run, since).await,
        };
        match result {
            Ok(expires_at) => {
                (p.log)(GateLog::Write {
                    run_id: &run_id,
                    kept_requests: covered.len(),
                    started,
                });
                let mut pacer = self.pacer.get();
                pacer.wrote(p.clock.now());
                self.pacer.set(pacer);
                *self.kept.borrow_mut() = Some(run);
                let outcomes = std::mem::take(&mut self.journal.borrow_mut().applied);
                let written = Written {
                    revision,
                    at: started,
                    expires_at,
                };
                self.landed(p, written, covered, outcomes).await;
                Ok(())
            }
            Err(e) => {
                self.drop_kept();
                Err(e)
            }
        }
    }

    /// A write known to have landed: a later read of KV that returns an
    /// older record lags. Only then may what the write covered go
    /// (journaled outcomes, kept requests): until it is known, a read at
    /// another location may still show the record before it, and they are
    /// applied again to that.
    async fn landed<R, C, K, N, O>(
        &self,
        p: &Platform<'_, R, C, K, N, O>,
        written: Written,
        covered: Vec<String>,
        outcomes: BTreeSet<String>,
    ) where
        O: ObjectStorage,
    {
        let meta = {
            let mut meta = self.meta.borrow_mut();
            let meta = meta.get_or_insert_with(GateMeta::default);
            meta.written = Some(written);
            meta.clone()
        };
        if self.put_meta(p, &meta).await.is_ok() {
            // Failing to clear them costs nothing but storage: left behind,
            // outcomes the record holds are never asked for, and kept
            // requests are applied again as no-ops.
            let _ = self.store(p).forget_outcomes(outcomes).await;
            if !covered.is_empty() {
                let _ = p.object.delete(INBOX_PREFIX, &covered).await;
            }
        }
    }

    /// Keeps the request of the segment that just ran, whose change waits
    /// for the next write: once kept, it may be answered.
    pub(super) async fn keep<R, C, K, N, O>(
        &self,
        p: &Platform<'_, R, C, K, N, O>,
        key: String,
        text: String,
    ) -> Result<(), EngineError>
    where
        O: ObjectStorage,
    {
        match p.object.put(&format!("{INBOX_PREFIX}{key}"), text).await {
            Ok(()) => {
                self.inbox.borrow_mut().applied.push(key);
                Ok(())
            }
            Err(e) => {
                // Not durable, so not applied: rebuild from what is.
                self.drop_kept();
                Err(e)
            }
        }
    }
}
