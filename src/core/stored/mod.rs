//! The run record as written to KV: a versioned format of its own, separate
//! from the in-memory run. `encode` writes the current version; `decode`
//! reads every version ever written, migrating old ones.
//!
//! - `v3` — today's format, version 4 (contexts as deltas, pinned
//!   components, every enum tagged outside, a `revision`; outputs that
//!   repeat what came before them stored as deltas), and version 3 (the
//!   same without output deltas), read as it is
//! - `v2` — the previous format (the status tagged inside), read and migrated
//! - `v1` — the first release's format, read and migrated through v2
//! - `delta` — contexts and outputs stored as differences from the
//!   record's baseline

pub mod delta;
pub mod v1;
pub mod v2;
pub mod v3;

use serde::Deserialize;

use super::error::EngineError;
use super::plan::Directory;
use super::record::{NodeState, RunError, RunStatus};
use super::run::{Run, Settings};

pub use v3::VERSION as CURRENT_VERSION;

/// Serializes the run within `max_bytes` (KV refuses values over 25 MiB).
/// Oldest trace entries go first, counted in `trace_dropped` so readers see
/// the truncation. If the record is still too large, the run is failed with
/// `record_too_large` and its node state dropped: a clear, stored failure
/// instead of a write that KV would refuse.
pub fn encode(run: &mut Run, max_bytes: usize, now: u64) -> String {
    let mut text = to_json(run);
    while text.len() > max_bytes && !run.record.trace.is_empty() {
        let drop = run.record.trace.len().div_ceil(2);
        run.record.trace.drain(..drop);
        run.record.trace_dropped = run.record.trace_dropped.saturating_add(drop);
        text = to_json(run);
    }
    if text.len() > max_bytes {
        let size = text.len();
        let record = &mut run.record;
        record.nodes.iter_mut().for_each(|n| *n = NodeState::Idle);
        record.waits.clear();
        record.status = RunStatus::Failed {
            error: RunError {
                code: "record_too_large".into(),
                message: format!(
                    "the run's state grew to {size} bytes, over the {max_bytes}-byte limit for a stored run"
                ),
                node_id: None,
            },
            finished_at: now,
        };
        text = to_json(run);
    }
    text
}

fn to_json(run: &Run) -> String {
    // A record holds only JSON values and plain fields; serializing it cannot fail.
    serde_json::to_string(&v3::from_run(run)).unwrap_or_default()
}

#[derive(Deserialize)]
struct Version {
    version: u32,
}

/// Reads a stored record of any version. `directory` resolves named
/// components only for records from before they were pinned (version 1).
/// Anything that does not fit — unknown version, bad JSON, states that do
/// not match the graph — is `CorruptRecord`.
pub fn decode(text: &str, directory: &Directory, settings: Settings) -> Result<Run, EngineError> {
    let corrupt = |e: serde_json::Error| EngineError::CorruptRecord(e.to_string());
    let Version { version } = serde_json::from_str(text).map_err(corrupt)?;
    // Older versions are rewritten as a version-3 document, then read as one.
    let migrated = match version {
        // Version 3 is version 4 without outputs stored as deltas.
        3 | v3::VERSION => {
            return v3::into_run(serde_json::from_str(text).map_err(corrupt)?, settings)
        }
        v2::VERSION => v2::to_v3(serde_json::from_str(text).map_err(corrupt)?)?,
        v1::VERSION => v2::to_v3(v1::to_v2(
            serde_json::from_str(text).map_err(corrupt)?,
            directory,
        )?)?,
        other => {
            return Err(EngineError::CorruptRecord(format!(
                "record version {other} is not one this release reads (1 to {CURRENT_VERSION})"
            )))
        }
    };
    v3::into_run(
        serde_json::from_str(&migrated.to_string()).map_err(corrupt)?,
        settings,
    )
}
