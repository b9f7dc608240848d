//! A trigger: the run is built from its graph (validated against the
//! deployment's components and limits), its context with the date
//! variables, and what the caller asked of it.

use super::{Command, GateConfig};
use crate::core::dates::with_date_vars;
use crate::core::error::EngineError;
use crate::core::plan::plan_from_json;
use crate::core::run::Run;

/// The run a `Command::Start` begins, not yet driven.
pub(super) fn run(config: &GateConfig, command: Command, now: u64) -> Result<Run, EngineError> {
    let Command::Start {
        run_id,
        graph,
        context,
        owner,
        base_url,
        final_callback_url,
        workflow,
        depth,
        parent,
        root,
        restart: _,
    } = command
    else {
        return Err(EngineError::InvalidRequest("not a trigger".into()));
    };
    let plan = plan_from_json(&graph, &config.directory, config.limits)?;
    let context = with_date_vars(context, now);
    let mut run = Run::start(plan, run_id, context, now, config.settings);
    run.record.owner = owner;
    run.record.workflow = workflow.or_else(|| run.record.graph.name.clone());
    run.record.callback_base = Some(base_url);
    run.record.depth = depth;
    run.record.root = root;
    if let Some(url) = final_callback_url.or(parent) {
        run.notify_on_finish(url);
    }
    Ok(run)
}
