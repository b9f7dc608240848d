//! Typed errors of the core. The adapter maps each to one HTTP response.

use std::fmt;

use serde::Serialize;

use super::answer::ErrorCode;

/// One thing wrong with a submitted graph or request, located by a JSON-ish path.
/// One problem found in a graph or request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Problem {
    /// Where: `graph.nodes`, `nodes[2].componentId`, `edges[0].condition`, ...
    pub at: String,
    pub message: String,
}

impl Problem {
    pub fn new(at: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            at: at.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum EngineError {
    /// The graph failed validation; every problem found is listed.
    InvalidGraph(Vec<Problem>),
    /// The request body is not what the route expects.
    InvalidRequest(String),
    /// A callback names a task other than the one the wait is for.
    TaskMismatch { expected: String, got: String },
    /// A stored run record could not be read back (corrupt or from an
    /// incompatible version); never a client's fault.
    CorruptRecord(String),
    /// No run (or none visible to this caller) by that id.
    NotFound(String),
    /// The run has already finished (completed, failed or cancelled).
    RunFinished { status: &'static str },
    /// The run has not finished yet.
    RunNotFinished { status: &'static str },
    /// A retry was asked of a run that cannot take one (not failed, or
    /// failed in a way running again cannot fix).
    NotRetryable {
        status: &'static str,
        reason: String,
    },
    /// The store of record or the gate's own storage failed; the caller may retry.
    Storage(String),
    /// KV answered a record older than one the run's object wrote (a read
    /// at a location the write has not reached yet); the caller may retry.
    StaleRead(String),
    /// The bare resume route was given a task id that open waits of more
    /// than one run hold.
    TaskShared,
}

impl EngineError {
    /// The HTTP status the edge answers with: the client's mistake (4xx),
    /// or the engine's storage failing (5xx, worth retrying).
    pub fn status(&self) -> u16 {
        self.code().status()
    }

    /// A stable machine-readable code for clients.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidGraph(_) => ErrorCode::InvalidGraph,
            Self::InvalidRequest(_) => ErrorCode::InvalidRequest,
            Self::TaskMismatch { .. } => ErrorCode::TaskMismatch,
            Self::CorruptRecord(_) => ErrorCode::CorruptRecord,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::RunFinished { .. } => ErrorCode::RunFinished,
            Self::RunNotFinished { .. } => ErrorCode::RunNotFinished,
            Self::NotRetryable { .. } => ErrorCode::NotRetryable,
            Self::Storage(_) => ErrorCode::StorageUnavailable,
            Self::StaleRead(_) => ErrorCode::RecordLagging,
            Self::TaskShared => ErrorCode::TaskIdShared,
        }
    }
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidGraph(problems) => {
                write!(f, "the graph has {} problem(s): ", problems.len())?;
                for (i, p) in problems.iter().take(5).enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{p}")?;
                }
                if problems.len() > 5 {
                    write!(f, "; and {} more", problems.len() - 5)?;
                }
                Ok(())
            }
            Self::InvalidRequest(m) => f.write_str(m),
            Self::TaskMismatch { expected, got } => write!(
                f,
                "this callback URL is for task '{expected}', but the body names task '{got}'"
            ),
            Self::CorruptRecord(m) => write!(f, "stored run record is unreadable: {m}"),
            Self::NotFound(m) => f.write_str(m),
            Self::RunFinished { status } => {
                write!(f, "the run has already finished: it is {status}")
            }
            Self::RunNotFinished { status } => {
                write!(f, "the run has not finished: it is {status}")
            }
            Self::NotRetryable { reason, .. } => f.write_str(reason),
            Self::Storage(m) => write!(f, "storage failed: {m}"),
            Self::StaleRead(m) => write!(f, "{m}"),
            Self::TaskShared => f.write_str(
                "this task_id is held by open waits of more than one run, so a body naming only \
                 the task cannot say which it is for; call back through the signed callback_url \
                 the component was given",
            ),
        }
    }
}

impl std::error::Error for EngineError {}
