//! JSON responses, and the one mapping from errors to HTTP statuses.

use serde_json::{json, Value};
use worker::{Headers, Response};

use crate::core::error::EngineError;

/// Set on the answer to a repeated `Idempotency-Key` (`trigger.rs`): this is
/// the run an earlier request started. Here rather than in `trigger`
/// because `ops::with_kv_ops`, below it, keeps it on the answers it rebuilds.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

#[derive(Debug)]
pub enum ApiError {
    Engine(EngineError),
    BadRequest(&'static str, String),
    Unauthorized(String),
    Forbidden(String),
    NotFound(String),
    MethodNotAllowed(&'static str),
    PayloadTooLarge(usize),
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
        let (_, code, message, _) = self.parts();
        format!("{code}: {message}")
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
        let (status, code, message, extra) = self.parts();
        let mut error = json!({ "code": code, "message": message });
        if let Some(Value::Object(extra)) = extra {
            error.as_object_mut().expect("object").extend(extra);
        }
        let response = json_response(status, &json!({ "success": false, "error": error }));
        if let Some(allow) = allow {
            let _ = response.headers().set("allow", &allow);
        }
        response
    }

    /// The one mapping: HTTP status, error code, message, and any fields
    /// the error object carries besides.
    fn parts(self) -> (u16, &'static str, String, Option<Value>) {
        match self {
            Self::Engine(EngineError::InvalidGraph(problems)) => {
                let message = EngineError::InvalidGraph(problems.clone()).to_string();
                (
                    400,
                    "invalid_graph",
                    message,
                    Some(json!({ "problems": problems })),
                )
            }
            Self::Engine(
                e @ (EngineError::RunFinished { status }
                | EngineError::RunNotFinished { status }
                | EngineError::NotRetryable { status, .. }),
            ) => (
                e.status(),
                e.code(),
                e.to_string(),
                Some(json!({ "status": status })),
            ),
            Self::Engine(e) => (e.status(), e.code(), e.to_string(), None),
            Self::BadRequest(code, m) => (400, code, m, None),
            Self::Unauthorized(m) => (401, "unauthorized", m, None),
            Self::Forbidden(m) => (403, "origin_not_allowed", m, None),
            Self::NotFound(m) => (404, "not_found", m, None),
            Self::MethodNotAllowed(allowed) => (
                405,
                "method_not_allowed",
                format!("this path accepts {allowed}"),
                None,
            ),
            Self::PayloadTooLarge(limit) => (
                413,
                "payload_too_large",
                format!("the request body exceeds {limit} bytes"),
                None,
            ),
            Self::Misconfigured(m) => (503, "misconfigured", m, None),
            Self::Internal(m) => (500, "internal", m, None),
        }
    }
}

pub fn json_response(status: u16, body: &Value) -> Response {
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
