//! JSON responses, and the one mapping from errors to HTTP statuses.

use serde::Serialize;
use worker::{Headers, Response};

use crate::core::answer::{ErrorAnswer, ErrorCode};
use crate::core::error::EngineError;

/// Set on the answer to a repeated `Idempotency-Key` (`trigger.rs`): this is
/// the run an earlier request started. Here rather than in `trigger`
/// because `ops::with_kv_ops`, below it, keeps it on the answers it rebuilds.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

#[derive(Debug)]
pub enum ApiError {
    Engine(EngineError),
    BadRequest(ErrorCode, String),
    Unauthorized(String),
    Forbidden(String),
    NotFound(String),
    MethodNotAllowed(&'static str),
    PayloadTooLarge(usize),
    /// A body sent as something other than JSON (its `Content-Type`).
    UnsupportedMediaType(String),
    /// The deployment is missing configuration; the message says how to fix it.
    Misconfigured(String),
    /// A runtime failure (KV, Durable Object); the caller may retry.
    Internal(String),
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        Self::Engine(e)
    }
}

impl From<worker::Error> for ApiError {
    fn from(e: worker::Error) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<worker::kv::KvError> for ApiError {
    fn from(e: worker::kv::KvError) -> Self {
        Self::Internal(format!("KV: {e}"))
    }
}

impl ApiError {
    /// A one-line description, for logs and the runtime's error reports.
    pub fn message(self) -> String {
        let answer = self.answer();
        format!("{}: {}", answer.error.code.as_str(), answer.error.message)
    }

    pub fn into_response(self) -> Response {
        // A 405 names what the path does accept (RFC 9110).
        let allow = match &self {
            Self::MethodNotAllowed(methods) if methods.contains("GET") => {
                Some(format!("{methods}, HEAD"))
            }
            Self::MethodNotAllowed(methods) => Some(methods.to_string()),
            _ => None,
        };
        let answer = self.answer();
        let response = json_response(answer.error.code.status(), &answer);
        if let Some(allow) = allow {
            let _ = response.headers().set("allow", &allow);
        }
        response
    }

    /// The one mapping: the error's code (which fixes its HTTP status), its
    /// message, and any fields the error object carries besides.
    fn answer(self) -> ErrorAnswer {
        match self {
            Self::Engine(EngineError::InvalidGraph(problems)) => {
                let message = EngineError::InvalidGraph(problems.clone()).to_string();
                let mut answer = ErrorAnswer::new(ErrorCode::InvalidGraph, message);
                answer.error.problems = Some(problems);
                answer
            }
            Self::Engine(
                e @ (EngineError::RunFinished { status }
                | EngineError::RunNotFinished { status }
                | EngineError::NotRetryable { status, .. }),
            ) => {
                let mut answer = ErrorAnswer::new(e.code(), e.to_string());
                answer.error.status = Some(status);
                answer
            }
            Self::Engine(e) => ErrorAnswer::new(e.code(), e.to_string()),
            Self::BadRequest(code, m) => ErrorAnswer::new(code, m),
            Self::Unauthorized(m) => ErrorAnswer::new(ErrorCode::Unauthorized, m),
            Self::Forbidden(m) => ErrorAnswer::new(ErrorCode::OriginNotAllowed, m),
            Self::NotFound(m) => ErrorAnswer::new(ErrorCode::NotFound, m),
            Self::MethodNotAllowed(allowed) => ErrorAnswer::new(
                ErrorCode::MethodNotAllowed,
                format!("this path accepts {allowed}"),
            ),
            Self::PayloadTooLarge(limit) => ErrorAnswer::new(
                ErrorCode::PayloadTooLarge,
                format!("the request body exceeds {limit} bytes"),
            ),
            Self::UnsupportedMediaType(got) => ErrorAnswer::new(
                ErrorCode::UnsupportedMediaType,
                format!(
                    "the body is sent as {got}; send JSON as application/json (an \
                     application/*+json type or text/plain is taken as JSON too)"
                ),
            ),
            Self::Misconfigured(m) => ErrorAnswer::new(ErrorCode::Misconfigured, m),
            Self::Internal(m) => ErrorAnswer::new(ErrorCode::Internal, m),
        }
    }
}

pub fn json_response(status: u16, body: &impl Serialize) -> Response {
    let text = serde_json::to_string(body).unwrap_or_else(|_| "{}".into());
    let headers = Headers::new();
    let _ = headers.set("content-type", "application/json; charset=utf-8");
    match Response::ok(text) {
        Ok(r) => r.with_status(status).with_headers(headers),
        Err(_) => Response::empty().expect("empty response").with_status(500),
    }
}

/// Run and wait ids are ours: short, URL-safe. Anything else cannot exist.
pub fn valid_id(id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::NotFound("no such run or wait".into()))
    }
}
