//! The alarm: deadlines that passed (taken before anything else by every
//! segment), a continuation after a yield, polls that are due, and the
//! final callback of a finished run.

use super::{Answer, Applied, Clock, Host, Notifier, Reply, Report, Segment, Store, PARENT_SCHEME};
use crate::core::error::EngineError;
use crate::core::record::RunStatus;
use crate::core::run::{DeliveryOutcome, Run};
use crate::core::view::{child_result, final_event};
use crate::core::webhook::signature;

pub(super) struct OnWake {
    /// Deadlines the segment took before this.
    pub expired: usize,
}

impl OnWake {
    /// What the alarm found to do, named for the operator's log.
    pub(super) fn apply(self, run: &Run, now: u64) -> Applied {
        Applied::Woken(if self.expired > 0 {
            "deadline"
        } else if run.status() == &RunStatus::Running {
            "continuation"
        } else if run.polls_due_at(now) {
            "poll"
        } else {
            "idle"
        })
    }
}

/// Sends the final callback once and records the attempt, for `flush` to
/// write: the one KV write delivery costs when the receiver accepts at
/// once, one more per retry.
pub(super) async fn deliver<S: Store, C, K: Clock, N: Notifier>(
    host: &Host<'_, S, C, K, N>,
    mut run: Run,
) -> (Option<Run>, Result<Segment, EngineError>) {
    let config = host.config;
    let now = host.clock.now();
    let (Some(event_type), Some(callback)) =
        (run.final_event_type(), run.record.final_callback.as_ref())
    else {
        return (Some(run), Ok(Segment::unreported(Reply::Idle, None)));
    };
    let outcome = if callback.url.starts_with(PARENT_SCHEME) {
        // A sub-workflow's end resumes its parent's wait, as a daemon's
        // callback would, through the parent's gate (no signature: it never
        // leaves the deployment).
        let body =
            serde_json::to_string(&child_result(&run.record, &config.redactor)).unwrap_or_default();
        let headers = [("content-type", "application/json".to_string())];
        host.notifier.deliver(&callback.url, &headers, &body).await
    } else if config.webhook_keys.is_empty() {
        DeliveryOutcome::Failed {
            error: "WEBHOOK_SECRET is not set, so the final callback cannot be signed".into(),
            code: None,
            duration_ms: 0,
        }
    } else {
        // Due only once the run has finished, so there is always an event.
        let event = final_event(&run.record, event_type, &config.redactor);
        let body = serde_json::to_string(&event).unwrap_or_default();
        // Stable per run, status and attempt, so a receiver can deduplicate retries.
        let id = match run.record.attempt {
            0 => format!("msg_{}_{}", run.record.run_id, run.record.status.name()),
            n => format!("msg_{}_{}_{n}", run.record.run_id, run.record.status.name()),
        };
        let timestamp = now / 1000;
        let headers = [
            ("content-type", "application/json".to_string()),
            ("webhook-id", id.clone()),
            ("webhook-timestamp", timestamp.to_string()),
            (
                "webhook-signature",
                signature(&config.webhook_keys, &id, timestamp, &body),
            ),
        ];
        host.notifier.deliver(&callback.url, &headers, &body).await
    };
    run.record_delivery(outcome, host.clock.now(), config.delivery_window_ms);
    let wake = run.delivery_due();
    let report = Report {
        kind: "delivery",
        status: None,
        calls: 1,
    };
    (
        Some(run),
        Ok(Segment {
            reply: Reply::Idle,
            wake,
            report,
            dirty: true,
            answer: Answer::Fixed,
        }),
    )
}
