//! The one shape of every error answer, and its codes.

use schemars::JsonSchema;
use serde::Serialize;

use super::False;
use crate::core::error::Problem;
use crate::core::record::RunStatusName;

/// Every error: one shape, one mapping from error to HTTP status (at the
/// adapter's edge).
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields, rename = "Error")]
pub struct ErrorAnswer {
    pub success: False,
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    /// What went wrong, for a person.
    pub message: String,
    /// `invalid_graph`: every problem found (at most 100 listed, the rest
    /// counted in a last entry).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problems: Option<Vec<Problem>>,
    /// `run_finished`, `run_not_finished`, `not_retryable`: the run's status.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<RunStatusName>")]
    pub status: Option<&'static str>,
    /// `idempotency_key_reused`: the run the key started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
}

/// One code per kind of problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The graph failed validation (`problems` lists every problem found).
    InvalidGraph,
    /// The body is JSON, but not what the route takes (a missing or
    /// mistyped field, a bad query parameter or cursor).
    InvalidRequest,
    /// The body is not JSON: empty, malformed, or nested too deep.
    InvalidJson,
    /// `final_callback_url` is not a URL the engine will call.
    InvalidFinalCallbackUrl,
    /// `Idempotency-Key` is not 1 to 255 visible ASCII characters.
    InvalidIdempotencyKey,
    /// A stored workflow's name is not one the API takes.
    InvalidWorkflowName,
    /// No API key, an unknown one, or a callback token that is not valid.
    Unauthorized,
    /// A CORS preflight from an origin not in `ALLOWED_ORIGINS`.
    OriginNotAllowed,
    /// No such run, wait, workflow or path (for this API key).
    NotFound,
    /// The path does not take this method (`Allow` lists those it does).
    MethodNotAllowed,
    /// The body is not sent as JSON (`Content-Type` other than
    /// `application/json`, `application/*+json` or `text/plain`).
    UnsupportedMediaType,
    /// A callback names a task other than the wait's.
    TaskMismatch,
    /// The bare resume route was given a task id open waits of more than one run hold.
    TaskIdShared,
    /// The run has already finished.
    RunFinished,
    /// The run has not finished yet.
    RunNotFinished,
    /// The run cannot be retried (not failed, or failed in a way running again cannot fix).
    NotRetryable,
    /// The body is larger than the deployment's `MAX_BODY_BYTES`.
    PayloadTooLarge,
    /// The `Idempotency-Key` started a run with a different request.
    IdempotencyKeyReused,
    /// A runtime failure; the request may be sent again.
    Internal,
    /// The store of record failed; the request may be sent again.
    StorageUnavailable,
    /// KV answered a record older than one the run wrote; the request may be sent again.
    RecordLagging,
    /// A stored run record could not be read back.
    CorruptRecord,
    /// The deployment is missing configuration (the message says which).
    Misconfigured,
}

impl ErrorCode {
    pub const ALL: [Self; 23] = [
        Self::InvalidGraph,
        Self::InvalidRequest,
        Self::InvalidJson,
        Self::InvalidFinalCallbackUrl,
        Self::InvalidIdempotencyKey,
        Self::InvalidWorkflowName,
        Self::Unauthorized,
        Self::OriginNotAllowed,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::UnsupportedMediaType,
        Self::TaskMismatch,
        Self::TaskIdShared,
        Self::RunFinished,
        Self::RunNotFinished,
        Self::NotRetryable,
        Self::PayloadTooLarge,
        Self::IdempotencyKeyReused,
        Self::Internal,
        Self::StorageUnavailable,
        Self::RecordLagging,
        Self::CorruptRecord,
        Self::Misconfigured,
    ];

    /// The one HTTP status each code is answered with.
    pub fn status(self) -> u16 {
        match self {
            Self::InvalidGraph
            | Self::InvalidRequest
            | Self::InvalidJson
            | Self::InvalidFinalCallbackUrl
            | Self::InvalidIdempotencyKey
            | Self::InvalidWorkflowName => 400,
            Self::Unauthorized => 401,
            Self::OriginNotAllowed => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::TaskMismatch
            | Self::TaskIdShared
            | Self::RunFinished
            | Self::RunNotFinished
            | Self::NotRetryable => 409,
            Self::PayloadTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::IdempotencyKeyReused => 422,
            Self::Internal | Self::StorageUnavailable | Self::CorruptRecord => 500,
            Self::Misconfigured | Self::RecordLagging => 503,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidGraph => "invalid_graph",
            Self::InvalidRequest => "invalid_request",
            Self::InvalidJson => "invalid_json",
            Self::InvalidFinalCallbackUrl => "invalid_final_callback_url",
            Self::InvalidIdempotencyKey => "invalid_idempotency_key",
            Self::InvalidWorkflowName => "invalid_workflow_name",
            Self::Unauthorized => "unauthorized",
            Self::OriginNotAllowed => "origin_not_allowed",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::TaskMismatch => "task_mismatch",
            Self::TaskIdShared => "task_id_shared",
            Self::RunFinished => "run_finished",
            Self::RunNotFinished => "run_not_finished",
            Self::NotRetryable => "not_retryable",
            Self::PayloadTooLarge => "payload_too_large",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::Internal => "internal",
            Self::StorageUnavailable => "storage_unavailable",
            Self::RecordLagging => "record_lagging",
            Self::CorruptRecord => "corrupt_record",
            Self::Misconfigured => "misconfigured",
        }
    }
}

impl ErrorAnswer {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            success: False,
            error: ErrorDetail {
                code,
                message: message.into(),
                problems: None,
                status: None,
                run_id: None,
            },
        }
    }
}
