//! Sub-workflows: a node whose component is `workflow://{name}` runs the
//! caller's stored workflow of that name as a child run, in a gate of its
//! own. The call answers at once with the child's result when the child
//! finishes in its first segment; otherwise it answers pending with the
//! child's run id as the task, and the child's gate resumes the parent's
//! wait when the child ends (`run://{parent}/{wait}`, delivered like a final
//! callback, with its retries). A call issued again (after a crash or a
//! yield) finds the child it started, through a claim on its idempotency key
//! (`ClaimName::Subflow`, a name no caller can claim); a child that was
//! claimed but never stored — the runtime died during its first segment —
//! is started again under the same run id.

use std::time::Duration;

use serde_json::Value;
use worker::{Delay, Env};

use super::claims::{claim_run, draw_child, settle_start, Claimant, Claimed};
use super::gate_stub::gate;
use super::runtime::{now_ms, random_id};
use super::store::RunStore;
use crate::core::budget::{ChildBudget, Grant};
use crate::core::claim::ClaimName;
use crate::core::listing::{new_run_id, workflow_prefix, StoredWorkflow};
use crate::core::plan::SUBFLOW_SCHEME;
use crate::core::run::{Call, CallOutcome, DeliveryOutcome};
use crate::core::segment::{Command, PARENT_SCHEME};
use crate::core::view::subflow_answer;

/// How deep sub-workflows may nest: a workflow that calls itself, directly
/// or through others, fails the calling node here instead of running away.
pub const MAX_SUBFLOW_DEPTH: u32 = 8;

fn failed(error: String) -> CallOutcome {
    CallOutcome::Failed {
        status: None,
        error,
        code: None,
    }
}

/// Starts (or finds) the child run for a `workflow://` call, within the
/// budget of child runs of the call's root run.
pub async fn call(env: &Env, call: &Call, budget: ChildBudget) -> CallOutcome {
    match start_child(env, call, budget).await {
        Ok(outcome) => outcome,
        Err(error) => failed(error),
    }
}

async fn start_child(env: &Env, call: &Call, budget: ChildBudget) -> Result<CallOutcome, String> {
    let name = call.url.strip_prefix(SUBFLOW_SCHEME).unwrap_or_default();
    if call.depth >= MAX_SUBFLOW_DEPTH {
        return Err(format!(
            "sub-workflows nest more than {MAX_SUBFLOW_DEPTH} deep at '{name}': does it call itself?"
        ));
    }
    let Some(owner) = call.owner.clone() else {
        return Err(
            "a sub-workflow runs under the API key of its parent run, which has none".into(),
        );
    };
    let Some((parent_run, wait_id)) = call.idempotency_key.split_once('.') else {
        return Err("the call has no parent wait".into());
    };
    let store = RunStore::new(env).map_err(|e| e.message())?;
    let key = format!("{}{name}", workflow_prefix(&owner));
    let text = store.get_text(&key).await.map_err(|e| e.message())?;
    let graph = text
        .as_deref()
        .and_then(|t| StoredWorkflow::read(t, &owner))
        .map(|w| w.graph)
        .ok_or_else(|| format!("no stored workflow '{name}' for this run's API key"))?;
    let random = random_id().map_err(|e| e.to_string())?;
    let child = new_run_id(&owner, now_ms(), &random);
    // One child per call, however often the call is issued: claimed under
    // a name of its own kind, which no caller's Idempotency-Key can name.
    let claim_name = ClaimName::Subflow {
        owner: &owner,
        call: &call.idempotency_key,
    };
    let claimant = Claimant { env, owner: &owner };
    let claimed = claim_run(&claimant, &claim_name, &child, "")
        .await
        .map_err(|e| e.message())?;
    let (child, mut response) = match claimed {
        // The call was issued before: its child is under way (or done).
        Claimed::Replay { run_id, view, .. } => (run_id, view),
        Claimed::Conflict(held) => {
            return Err(format!(
                "the call's child is claimed by another request (run '{}')",
                held.run_id
            ))
        }
        // A fresh child, or — the call's child never stored (the runtime
        // died during its first segment) — the same child started again.
        Claimed::Start(claim) => {
            // A child is counted once: its start again under the claim (it
            // was never stored) drew already.
            if claim.taken == 0 {
                draw(env, &call.root, budget).await?;
            }
            let base = call
                .callback_url
                .as_deref()
                .and_then(|u| u.split_once("/callbacks/"))
                .map_or_else(String::new, |(base, _)| base.to_string());
            let request = Command::Start {
                run_id: claim.run_id.clone(),
                graph,
                context: call.input.clone(),
                base_url: base,
                owner: Some(owner.clone()),
                final_callback_url: None,
                workflow: Some(name.to_string()),
                depth: call.depth + 1,
                parent: Some(format!("{PARENT_SCHEME}{parent_run}/{wait_id}")),
                root: Some(call.root.clone()),
                restart: claim.taken > 0,
            };
            let answer = gate(env, &claim.run_id, &request).await;
            settle_start(&claimant, &claim_name, &claim, &answer).await;
            (claim.run_id, answer.map_err(|e| e.message())?)
        }
    };
    let status = response.status_code();
    let body: Value = response.json().await.map_err(|e| e.to_string())?;
    if status >= 400 {
        let message = body["error"]["message"].as_str().unwrap_or("refused");
        return Ok(CallOutcome::Failed {
            status: Some(status),
            error: format!("sub-workflow '{name}' could not start: {message}"),
            code: None,
        });
    }
    let run_status = body["status"].as_str().unwrap_or("running");
    Ok(CallOutcome::Answered(subflow_answer(
        &child,
        run_status,
        body.get("data"),
        body.get("error"),
    )))
}

/// Waits for the root's budget to grant a child run: within the second's
/// share at once, else when the next second begins (so a FOREACH of
/// sub-workflows starts its children at the configured rate); refused once
/// the root's tree has started its limit.
async fn draw(env: &Env, root: &str, budget: ChildBudget) -> Result<(), String> {
    loop {
        match draw_child(env, root, budget)
            .await
            .map_err(|e| e.message())?
        {
            Grant::Granted { .. } => return Ok(()),
            Grant::Exhausted { limit } => {
                return Err(format!(
                    "the budget of child runs is spent: run '{root}' and its sub-workflows \
                     have started {limit}, the most MAX_CHILD_RUNS allows"
                ))
            }
            Grant::Later { at } => {
                let wait = at.saturating_sub(now_ms()).clamp(1, 1000);
                Delay::from(Duration::from_millis(wait)).await;
            }
        }
    }
}

/// Cancels a child whose parent was cancelled, through the child's gate,
/// whose own cancel reaches its children in turn. Whatever it answers — the
/// child cancelled, or already finished — there is nothing more to do.
pub async fn cancel(env: &Env, run_id: &str, owner: Option<&str>) {
    let request = Command::Cancel {
        run_id: run_id.to_string(),
        owner: owner.map(str::to_string),
    };
    if let Err(e) = gate(env, run_id, &request).await {
        worker::console_warn!("cancelling child run {run_id} failed: {}", e.message());
    }
}

/// Resumes the parent's wait with a finished child's result, through the
/// parent's gate. Any answer from the gate (resumed, or a noop because the
/// wait already ended) means it was delivered.
pub async fn notify_parent(env: &Env, url: &str, body: &str) -> DeliveryOutcome {
    let started = now_ms();
    let elapsed = || now_ms().saturating_sub(started);
    let target = url.strip_prefix(PARENT_SCHEME).unwrap_or_default();
    let Some((run_id, wait_id)) = target.split_once('/') else {
        return DeliveryOutcome::Answered {
            status: 410,
            duration_ms: 0,
        };
    };
    let body: Value = serde_json::from_str(body).unwrap_or_default();
    let request = Command::Callback {
        run_id: run_id.to_string(),
        wait_id: wait_id.to_string(),
        body,
        base_url: String::new(),
        token_expires_at: None,
    };
    match gate(env, run_id, &request).await {
        Ok(response) => DeliveryOutcome::Answered {
            status: response.status_code(),
            duration_ms: elapsed(),
        },
        Err(e) => DeliveryOutcome::Failed {
            error: e.message(),
            code: None,
            duration_ms: elapsed(),
        },
    }
}
