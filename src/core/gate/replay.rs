//! A gate coming back: its meta read (and with it when the record was last
//! written), and the requests its storage kept applied again to KV's
//! record, each as of its arrival.

use super::storage::{GateMeta, ObjectStorage, INBOX_PREFIX, META_KEY};
use super::{command_run_id, inbox, Gate, Platform, Sleep, WRITE_MARGIN_MS};
use crate::core::driver::Components;
use crate::core::error::EngineError;
use crate::core::segment::{Clock, Command, Notifier};
use crate::core::store::{Records, TaskIndexStore};

/// How long requests kept for a run that was never stored are kept: as long
/// as the claim that may start it again lasts.
const UNSTORED_KEPT_MS: u64 = crate::core::claim::CLAIM_TTL_MS;

impl Gate {
    /// Applies the requests kept in storage that the kept run lacks (a cold
    /// object, or one whose run was dropped), each at the time it arrived.
    pub(super) async fn catch_up<R, C, K, N, O>(
        &self,
        p: &Platform<'_, R, C, K, N, O>,
        run_id: &str,
    ) -> Result<(), EngineError>
    where
        R: Records + TaskIndexStore,
        C: Components,
        K: Clock + Sleep,
        N: Notifier,
        O: ObjectStorage,
    {
        if !self.inbox.borrow().unchecked {
            return Ok(());
        }
        // The last write's time first: nothing is written before it is known.
        self.meta(p).await?;
        // Unchecked, there is no kept run and nothing applied (`drop_kept`).
        let kept = p.object.list(INBOX_PREFIX).await?;
        {
            let mut inbox = self.inbox.borrow_mut();
            inbox.unchecked = false;
            // Queued callbacks the listing holds are applied below, in their
            // place; one whose write had not landed when storage was listed
            // stays queued, for `settle`.
            inbox
                .queued
                .retain(|q| !kept.iter().any(|(key, _)| *key == q.key));
        }
        // A restart (`Command::Start::restart`) comes first: what was kept
        // before it arrived came for the run it starts again.
        let (starts, rest): (Vec<_>, Vec<_>) = kept
            .into_iter()
            .partition(|(_, text)| text.starts_with("{\"start\""));
        // Requests for a run that was never stored (its trigger died before
        // its first write): nothing to apply them to yet.
        let mut moot = Vec::new();
        for (key, text) in starts.into_iter().chain(rest) {
            let at = inbox::arrival(&key).unwrap_or(0);
            let command = serde_json::from_str::<Command>(&text)
                .ok()
                .filter(|c| command_run_id(c) == run_id && !matches!(c, Command::Read { .. }));
            let Some(command) = command else {
                self.inbox.borrow_mut().applied.push(key);
                continue;
            };
            if matches!(command, Command::Start { .. }) && self.seen_written(p).await? {
                // Written since (the write that covered it died before it
                // forgot it): starting it over would lose what it did. Not
                // seen written, it is started again, its calls answered
                // from the journal — whatever a read of KV shows, which may
                // lag a write that landed unseen (that write held nothing
                // the requests kept here do not).
                self.inbox.borrow_mut().applied.push(key);
                continue;
            }
            let result = self.segment(p, command, Some(at)).await;
            let held = self.kept.borrow().is_some();
            match result {
                Ok(segment) if held => {
                    self.inbox.borrow_mut().applied.push(key);
                    if segment.dirty {
                        self.changed(at);
                    }
                }
                // Kept a while: the run's claim may start it again under
                // this id (`Command::Start::restart`), and then they apply.
                Ok(_) if p.clock.now().saturating_sub(at) < UNSTORED_KEPT_MS => {}
                Ok(_) => moot.push(key),
                // Refused, it changed nothing; the next write covers it.
                Err(_) if held => self.inbox.borrow_mut().applied.push(key),
                Err(e) => {
                    // The record could not be read: try again next turn.
                    self.drop_kept();
                    return Err(e);
                }
            }
        }
        if !moot.is_empty() {
            let _ = p.object.delete(INBOX_PREFIX, &moot).await;
        }
        Ok(())
    }

    /// Whether the run exists already: kept here, seen written (a read of
    /// KV may lag it), or stored.
    pub(super) async fn started<R, C, K, N, O>(
        &self,
        p: &Platform<'_, R, C, K, N, O>,
        run_id: &str,
    ) -> Result<bool, EngineError>
    where
        R: Records,
        O: ObjectStorage,
    {
        Ok(self.seen_written(p).await? || p.records.load(run_id).await?.is_some())
    }

    /// Whether the run is kept here, or a write of it was seen to land.
    async fn seen_written<R, C, K, N, O>(
        &self,
        p: &Platform<'_, R, C, K, N, O>,
    ) -> Result<bool, EngineError>
    where
        O: ObjectStorage,
    {
        if self.kept.borrow().is_some() {
            return Ok(true);
        }
        Ok(self.meta(p).await?.is_some_and(|m| m.written.is_some()))
    }

    /// The meta, read from storage the first time it is needed; the pacer
    /// learns from it when the record was last written.
    pub(super) async fn meta<R, C, K, N, O>(
        &self,
        p: &Platform<'_, R, C, K, N, O>,
    ) -> Result<Option<GateMeta>, EngineError>
    where
        O: ObjectStorage,
    {
        if let Some(meta) = self.meta.borrow().as_ref() {
            return Ok((!meta.run_id.is_empty()).then(|| meta.clone()));
        }
        let text = p.object.get(META_KEY).await?;
        // Another turn may have read it meanwhile, and changed it since.
        if let Some(meta) = self.meta.borrow().as_ref() {
            return Ok((!meta.run_id.is_empty()).then(|| meta.clone()));
        }
        let meta: GateMeta = text
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default();
        if let Some(at) = meta.last_write {
            let mut pacer = self.pacer.get();
            pacer.learned_write(at.saturating_add(WRITE_MARGIN_MS));
            self.pacer.set(pacer);
        }
        *self.meta.borrow_mut() = Some(meta.clone());
        Ok((!meta.run_id.is_empty()).then_some(meta))
    }

    pub(super) async fn put_meta<R, C, K, N, O>(
        &self,
        p: &Platform<'_, R, C, K, N, O>,
        meta: &GateMeta,
    ) -> Result<(), EngineError>
    where
        O: ObjectStorage,
    {
        let text = serde_json::to_string(meta)
            .map_err(|e| EngineError::Storage(format!("meta not serialized: {e}")))?;
        p.object.put(META_KEY, text).await
    }
}
