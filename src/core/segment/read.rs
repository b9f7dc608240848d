//! Reading a run: the record loaded (or the run the gate keeps), and what
//! `GET /runs/{id}` shows of it, with the events turned away from its waits.

use serde_json::Value;

use super::{Clock, Host, Store};
use crate::core::error::EngineError;
use crate::core::redact::Redactor;
use crate::core::run::Run;
use crate::core::stored::decode;
use crate::core::view::{
    merge_noted, node_details, run_details, run_details_running, starting_details,
};

pub(super) async fn load<S: Store, C, K: Clock, N>(
    host: &Host<'_, S, C, K, N>,
    cached: Option<Run>,
    run_id: &str,
) -> Result<Option<Run>, EngineError> {
    if let Some(run) = cached.filter(|r| r.record.run_id == run_id) {
        return Ok(Some(run));
    }
    let writes = host.store.writes();
    let Some(text) = host.store.load(run_id).await? else {
        if writes.absence_doubtful(host.clock.now()) {
            return Err(lagging(run_id, None));
        }
        return Ok(None);
    };
    let run = decode(&text, &host.config.directory, host.config.settings)?;
    if writes.outdated(run.record.revision) {
        return Err(lagging(run_id, Some(run.record.revision)));
    }
    if run.record.run_id != run_id {
        return Err(EngineError::CorruptRecord(format!(
            "the record stored for '{run_id}' is for '{}'",
            run.record.run_id
        )));
    }
    Ok(Some(run))
}

/// A load of KV that returned less than this object knows it wrote: a read
/// at a location the write has not reached yet. Taken as the run, it would
/// lose what the write held; the request fails and is tried again.
fn lagging(run_id: &str, got: Option<u64>) -> EngineError {
    let got = got.map_or_else(|| "no record".to_string(), |r| format!("revision {r}"));
    EngineError::StaleRead(format!(
        "KV answered {got} for run '{run_id}', older than a write this run's object made: \
         a read that lags the last write; try again"
    ))
}

/// What a read asks for: whose run it must be (none: any), one node of it
/// or the whole run, and whether a segment of it is executing now.
pub struct View<'a> {
    pub owner: Option<&'a str>,
    pub node: Option<&'a str>,
    pub active: bool,
}

/// What `GET /runs/{id}` (or one node of it) shows of a run, and when the
/// run next wakes. Another key's run is not found, exactly like a run that
/// never was. While a segment of the run is executing (`active`), its status
/// reads `running`.
pub fn details(
    run: &Run,
    view: &View<'_>,
    redactor: &Redactor,
    now: u64,
) -> Result<(Value, Option<u64>), EngineError> {
    let run_id = &run.record.run_id;
    if view.owner.is_some() && run.record.owner.as_deref() != view.owner {
        return Err(EngineError::NotFound(format!("no run '{run_id}'")));
    }
    let body = match (view.node, view.active) {
        (Some(node), _) => node_details(&run.record, node, redactor)
            .ok_or_else(|| EngineError::NotFound(format!("run '{run_id}' has no node '{node}'")))?,
        (None, true) => run_details_running(&run.record, redactor),
        (None, false) => run_details(&run.record, redactor),
    };
    Ok((body, run.next_wake(now)))
}

/// Adds to a run's details the events kept beside it (turned-away callbacks
/// and heartbeats), reading them only when the run shows a wait to put them on.
pub async fn add_noted<S: Store>(store: &S, details: &mut Value) {
    let shows_waits = details["waits"].as_array().is_some_and(|w| !w.is_empty())
        || details.get("closed_waits").is_some();
    if shows_waits {
        if let Ok(noted) = store.noted_events().await {
            merge_noted(details, &noted);
        }
    }
}

/// `details` of the stored record.
pub async fn read<S: Store, C, K: Clock, N>(
    host: &Host<'_, S, C, K, N>,
    run_id: &str,
    view: &View<'_>,
) -> Result<(Value, Option<u64>), EngineError> {
    let now = host.clock.now();
    match load(host, None, run_id).await? {
        Some(run) => {
            let (mut body, wake) = details(&run, view, &host.config.redactor, now)?;
            if view.node.is_none() {
                add_noted(host.store, &mut body).await;
            }
            Ok((body, wake))
        }
        None if view.active && view.node.is_none() => Ok((starting_details(run_id, now), None)),
        None => Err(EngineError::NotFound(format!("no run '{run_id}'"))),
    }
}
