//! Callbacks that find a segment running: kept, queued for the lock's
//! holder, answered when applied or `202` after a while; and the holder's
//! draining of that queue.

use futures::channel::oneshot;
use futures::future::{select, Either};

use super::storage::{ObjectStorage, INBOX_PREFIX};
use super::{
    command_run_id, Answer, Gate, Platform, Queued, Sleep, KEPT_ALARM_SLACK_MS,
    QUEUED_ANSWER_WAIT_MS,
};
use crate::core::answer::{CallbackAccepted, True};
use crate::core::driver::Components;
use crate::core::error::EngineError;
use crate::core::record::RunStatusName;
use crate::core::segment::{Clock, Command, Notifier};
use crate::core::store::{Records, TaskIndexStore};
use crate::core::view::answer_value;

impl Gate {
    /// A callback that arrived while a segment runs: kept in storage (that
    /// is what makes it safe to answer), with the alarm set to apply it if
    /// this object dies first, and queued for the segment's holder to apply
    /// when it ends. It is answered as it was applied, or, if that takes
    /// longer than `QUEUED_ANSWER_WAIT_MS`, `202 accepted`.
    pub(super) async fn queue<R, C, K, N, O>(
        &self,
        p: &Platform<'_, R, C, K, N, O>,
        command: Command,
        task_id: Option<String>,
    ) -> Result<Answer, EngineError>
    where
        K: Clock + Sleep,
        O: ObjectStorage,
    {
        let run_id = command_run_id(&command).to_string();
        let text = serde_json::to_string(&command).unwrap_or_default();
        // Its key holds its arrival time, at which it is judged.
        let now = p.clock.now();
        let key = self.inbox.borrow_mut().next_key(now);
        let (answer, answered) = oneshot::channel();
        // Queued before the write is awaited: the holder may finish meanwhile.
        self.inbox.borrow_mut().queued.push_back(Queued {
            key: key.clone(),
            at: now,
            command,
            task_id: task_id.clone(),
            answer,
        });
        p.object.put(&format!("{INBOX_PREFIX}{key}"), text).await?;
        let soon = now + KEPT_ALARM_SLACK_MS;
        if !matches!(self.alarm.get(), Some(Some(at)) if at <= soon) {
            self.ensure_alarm(p, &run_id, Some(now)).await;
        }
        let waited = p.clock.sleep(QUEUED_ANSWER_WAIT_MS);
        if let Either::Left((Ok(answer), _)) = select(answered, Box::pin(waited)).await {
            return answer;
        }
        let body = answer_value(&CallbackAccepted {
            success: True,
            accepted: True,
            held: None,
            status: RunStatusName::Running,
            run_id: &run_id,
            task_id: task_id.as_deref(),
        });
        Ok(Answer { status: 202, body })
    }

    /// Applies up to `limit` queued callbacks, each judged at its arrival,
    /// and answers their senders if they still wait; stops early if the
    /// kept run is dropped (the alarm then replays the queue from storage).
    /// Answers how many it took from the queue.
    /// With `before`, only those keyed before it: a request that took the
    /// turn applies, ahead of its own change, the callbacks queued while it
    /// caught up — keyed, so replayed, before it.
    pub(super) async fn drain<R, C, K, N, O>(
        &self,
        p: &Platform<'_, R, C, K, N, O>,
        limit: usize,
        before: Option<&str>,
    ) -> usize
    where
        R: Records + TaskIndexStore,
        C: Components,
        K: Clock + Sleep,
        N: Notifier,
        O: ObjectStorage,
    {
        let mut applied = 0;
        while applied < limit {
            let next = {
                let mut inbox = self.inbox.borrow_mut();
                let due = inbox
                    .queued
                    .front()
                    .is_some_and(|q| before.is_none_or(|b| q.key.as_str() < b));
                due.then(|| inbox.queued.pop_front()).flatten()
            };
            let Some(queued) = next else { break };
            applied += 1;
            let started = p.clock.now();
            let result = self.segment(p, queued.command, Some(queued.at)).await;
            let held = self.kept.borrow().is_some();
            let failed = result.is_err();
            let answer = result.map(|segment| {
                if segment.dirty {
                    self.changed(started);
                }
                self.render(segment.reply, false, queued.task_id.as_deref())
            });
            // Its sender may have stopped waiting (answered 202).
            let _ = queued.answer.send(answer);
            match (held, failed) {
                (true, _) => self.inbox.borrow_mut().applied.push(queued.key),
                // No such run, yet: it stays kept, for a restart of the run
                // under its claim (`catch_up` forgets it after a day).
                (false, false) => {}
                (false, true) => {
                    // The kept run was dropped: the queue is in storage, and
                    // the alarm replays all of it, whoever comes next.
                    self.drop_kept();
                    break;
                }
            }
        }
        applied
    }
}
