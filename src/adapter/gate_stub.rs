//! Sending a command to a run's gate (its `RunGate` Durable Object, named
//! by the run id) and relaying the answer. Routes, triggers, claims, the
//! task index and sub-workflows all reach runs this way. Apart from
//! `gate.rs`, the object itself: that is built on `store`, which asks other
//! gates too (whether a wait is still open).

use worker::{Env, Method, Request, RequestInit, Response};

use super::config::RUN_GATE;
use super::http::ApiError;
use crate::core::segment::Command;

/// Forwards a command to the run's Durable Object and relays its answer.
pub async fn gate(env: &Env, run_id: &str, message: &Command) -> Result<Response, ApiError> {
    let stub = env
        .durable_object(RUN_GATE)?
        .id_from_name(run_id)?
        .get_stub()?;
    let body = serde_json::to_string(message).map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_body(Some(body.into()));
    let request = Request::new_with_init("https://gate.internal/", &init)?;
    Ok(stub.fetch_with_request(request).await?)
}
