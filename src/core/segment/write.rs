//! Writing a run's record: once, with a TTL that fits its status, and the
//! task index of the bare route kept with it. The gate forgets the journal
//! entries it now holds once it knows the write landed.

use super::{
    Clock, GateConfig, Host, Store, TaskIndex, DEADLINE_GRACE_SECS, MAX_TTL_SECS, MIN_TTL_SECS,
    RUNNING_TTL_SECS,
};
use crate::core::error::EngineError;
use crate::core::listing::RunSummary;
use crate::core::record::RunStatus;
use crate::core::run::Run;
use crate::core::stored::encode;

/// Writes the run's record once, with a TTL that fits its status, and
/// indexes the task ids of waits opened since `since` (the previous flush)
/// when the bare route is on. One flush may cover several segments: the
/// gate keeps what they applied durably until it runs. A run too large to
/// store fails here: its next wake is then its final callback's
/// (`Run::next_wake`). The gate numbers the write first
/// (`RunRecord::revision`). Answers when KV forgets the record written.
pub async fn flush<S: Store, C, K: Clock, N>(
    host: &Host<'_, S, C, K, N>,
    run: &mut Run,
    since: u64,
) -> Result<u64, EngineError> {
    let text = encode(run, host.config.max_record_bytes, host.clock.now());
    flush_encoded(host, run, text, since).await
}

/// `flush` of a record already encoded (`stored::encode`) from `run` as it
/// stands: the gate encodes before it answers, so the answer is the run as
/// it will be stored, and writes after.
pub async fn flush_encoded<S: Store, C, K: Clock, N>(
    host: &Host<'_, S, C, K, N>,
    run: &Run,
    text: String,
    since: u64,
) -> Result<u64, EngineError> {
    let now = host.clock.now();
    let config = host.config;
    let ttl = record_ttl(run, config, now);
    host.store
        .save(&run.record.run_id, text, ttl, &RunSummary::of(&run.record))
        .await?;
    index_waits(host, run, since).await?;
    Ok(now + ttl * 1000)
}

/// Indexes the waits opened since `since` under their task ids, for the
/// bare route (when it is enabled). Claiming an entry the index already
/// holds changes nothing, so a wait indexed as its segment ended is
/// indexed again by the write that covers it at no harm.
pub async fn index_waits<S: Store, C, K: Clock, N>(
    host: &Host<'_, S, C, K, N>,
    run: &Run,
    since: u64,
) -> Result<(), EngineError> {
    if !host.config.index_tasks {
        return Ok(());
    }
    let now = host.clock.now();
    for wait in run.record.waits.values().filter(|w| w.since >= since) {
        let ttl = (wait.expires_at.saturating_sub(now) / 1000).max(MIN_TTL_SECS);
        index_task(host, run, &wait.task_id, &wait.wait_id, ttl).await?;
    }
    Ok(())
}

/// Indexes a wait just opened under its task id for the bare route: the
/// wait claims the id; if another open wait — of another run, or of this
/// one — holds it, the id becomes shared. An entry left by a wait since
/// closed (entries live until their deadline) is replaced; telling which
/// costs a read of that run, made only when ids collide.
async fn index_task<S: Store, C, K: Clock, N>(
    host: &Host<'_, S, C, K, N>,
    run: &Run,
    task_id: &str,
    wait_id: &str,
    ttl: u64,
) -> Result<(), EngineError> {
    let run_id = &run.record.run_id;
    let mine = TaskIndex::Wait {
        run_id: run_id.clone(),
        wait_id: wait_id.to_string(),
    };
    let held = host.store.claim_task(task_id, &mine, None, ttl).await?;
    let TaskIndex::Wait {
        run_id: other,
        wait_id: other_wait,
    } = &held
    else {
        return Ok(());
    };
    if held == mine {
        return Ok(());
    }
    let open = if other == run_id {
        run.record
            .waits
            .get(other_wait)
            .is_some_and(|w| w.task_id == task_id)
    } else {
        host.store.wait_open(other, other_wait, task_id).await
    };
    let next = if open { TaskIndex::Shared } else { mine };
    host.store
        .claim_task(task_id, &next, Some(&held), ttl)
        .await
        .map(|_| ())
}

/// How long KV keeps the record: a finished run for the retention period; a
/// paused one past its last deadline by a grace period, so the alarm finds
/// it; a running one briefly, since an alarm continues it at once.
pub fn record_ttl(run: &Run, config: &GateConfig, now: u64) -> u64 {
    let record = &run.record;
    let secs = match record.status {
        RunStatus::Completed { .. } | RunStatus::Failed { .. } | RunStatus::Cancelled { .. } => {
            // Kept while its final callback may still be retried.
            let delivering = run.delivery_due().map_or(0, |due| {
                due.saturating_sub(now).div_ceil(1000) + DEADLINE_GRACE_SECS
            });
            config.retention_secs.max(delivering)
        }
        RunStatus::Running => RUNNING_TTL_SECS,
        RunStatus::Paused { .. } => {
            let last = record.last_deadline().unwrap_or(now);
            last.saturating_sub(now).div_ceil(1000) + DEADLINE_GRACE_SECS
        }
    };
    // KV takes TTLs as 32-bit seconds; no wait is allowed longer than a year
    // (older records may name later deadlines, and keep the longest TTL).
    secs.clamp(MIN_TTL_SECS, MAX_TTL_SECS)
}
