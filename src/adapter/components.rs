//! Component calls over `fetch`: the input plus its signed `callback_url`,
//! an `Idempotency-Key` stable across re-issues of the same call, a timeout,
//! and a bound on how much of the answer is read.

use std::time::Duration;

use futures::future::{select, Either};
use futures::StreamExt;
use serde_json::Value;
use worker::{
    AbortController, Delay, Env, Fetch, Headers, Method, Request, RequestInit, RequestRedirect,
};

use super::runtime::now_ms;
use super::subflow;
use crate::core::budget::ChildBudget;
use crate::core::driver::Components;
use crate::core::outbound;
use crate::core::plan::SUBFLOW_SCHEME;
use crate::core::protocol::CallFailure;
use crate::core::run::{Call, CallOutcome, DeliveryOutcome};
use crate::core::segment::{Notifier, PARENT_SCHEME};

/// Longest excerpt of a failing component's body kept in the error.
const ERROR_EXCERPT: usize = 200;

pub struct HttpComponents {
    pub timeout_ms: u64,
    pub max_response_bytes: usize,
    /// What a `workflow://` call's root run may start (`core::budget`).
    pub child_budget: ChildBudget,
    /// For `workflow://` calls, which start child runs.
    pub env: Env,
}

/// Why no JSON answer was had.
enum Trouble {
    Failed(CallOutcome),
    /// The request could not be built: nothing was sent.
    Error(String),
    /// `fetch` threw, or the body could not be read: what the runtime said.
    Network(String),
}

impl From<worker::Error> for Trouble {
    fn from(e: worker::Error) -> Self {
        Self::Error(e.to_string())
    }
}

/// A failure with its code.
fn failed(status: Option<u16>, error: String, code: CallFailure) -> CallOutcome {
    CallOutcome::Failed {
        status,
        error,
        code: Some(code),
    }
}

impl HttpComponents {
    async fn post(&self, call: &Call) -> Result<CallOutcome, Trouble> {
        let headers = Headers::new();
        headers.set("accept", "application/json")?;
        headers.set("idempotency-key", &call.idempotency_key)?;
        headers.set("x-arcrun-segment", &call.segment.to_string())?;
        let mut init = RequestInit::new();
        if let Some(poll) = &call.poll {
            // A status URL: the request as the graph (or the component) gave it.
            for (name, value) in &poll.headers {
                headers.set(name, value)?;
            }
            let method = Method::from(poll.method.clone());
            if let Some(body) = &poll.body {
                if !poll
                    .headers
                    .keys()
                    .any(|k| k.eq_ignore_ascii_case("content-type"))
                {
                    headers.set("content-type", "application/json")?;
                }
                let text = match body {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                init.with_body(Some(text.into()));
            }
            init.with_method(method).with_headers(headers);
        } else {
            let body = if let Some(url) = &call.callback_url {
                let mut input = call.input.clone();
                input.insert("callback_url".into(), Value::String(url.clone()));
                serde_json::to_string(&input)
            } else {
                serde_json::to_string(&call.input)
            }
            .map_err(|e| Trouble::Error(e.to_string()))?;
            headers.set("content-type", "application/json")?;
            init.with_method(Method::Post)
                .with_headers(headers)
                .with_body(Some(body.into()));
        }
        // A redirect is not followed: its target never passed the checks
        // the graph's URL did (https, not a private address).
        init.with_redirect(RequestRedirect::Manual);
        let request = Request::new_with_init(&call.url, &init)?;
        let controller = AbortController::default();
        let signal = controller.signal();
        let exchange = async {
            let mut response = Fetch::Request(request)
                .send_with_signal(&signal)
                .await
                .map_err(|e| Trouble::Network(e.to_string()))?;
            let status = response.status_code();
            let location = response.headers().get("location").ok().flatten();
            let bytes = self.read_bounded(&mut response).await?;
            Ok::<_, Trouble>((status, location, bytes))
        };
        let timeout = Delay::from(Duration::from_millis(self.timeout_ms));
        let (status, location, bytes) = match select(Box::pin(exchange), Box::pin(timeout)).await {
            Either::Left((result, _)) => result?,
            // Our own deadline: whatever the runtime would say of the
            // aborted request, it timed out.
            Either::Right(_) => {
                controller.abort();
                let (code, error) = outbound::timed_out(self.timeout_ms);
                return Ok(failed(None, error, code));
            }
        };
        let text = String::from_utf8_lossy(&bytes);
        if (300..400).contains(&status) {
            let error = format!(
                "component answered a redirect (HTTP {status}{}); redirects are not followed",
                location
                    .map(|l| format!(" to {}", excerpt(&l)))
                    .unwrap_or_default()
            );
            return Ok(failed(Some(status), error, CallFailure::Redirect));
        }
        if !(200..300).contains(&status) {
            let error = format!("component answered HTTP {status}: {}", excerpt(&text));
            return Ok(failed(Some(status), error, CallFailure::HttpStatus));
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(v) => Ok(CallOutcome::Answered(v)),
            Err(_) => {
                let error = format!(
                    "component answered with something other than JSON: {}",
                    excerpt(&text)
                );
                Ok(failed(Some(status), error, CallFailure::NotJson))
            }
        }
    }

    /// The response body, refused past `max_response_bytes` without reading
    /// the rest: a component cannot make a run hold an unbounded answer.
    async fn read_bounded(&self, response: &mut worker::Response) -> Result<Vec<u8>, Trouble> {
        let limit = self.max_response_bytes;
        let too_large = |status: u16| {
            Trouble::Failed(failed(
                Some(status),
                format!("component response exceeds MAX_COMPONENT_RESPONSE_BYTES ({limit} bytes)"),
                CallFailure::ResponseTooLarge,
            ))
        };
        let status = response.status_code();
        let declared = response
            .headers()
            .get("content-length")
            .ok()
            .flatten()
            .and_then(|l| l.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large(status));
        }
        let mut bytes = Vec::new();
        let Ok(mut stream) = response.stream() else {
            return Ok(bytes);
        };
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| Trouble::Network(e.to_string()))?;
            if bytes.len() + chunk.len() > limit {
                return Err(too_large(status));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }
}

impl Components for HttpComponents {
    async fn cancel_child(&self, run_id: &str, owner: Option<&str>) {
        subflow::cancel(&self.env, run_id, owner).await;
    }

    async fn call(&self, call: &Call) -> CallOutcome {
        if call.url.starts_with(SUBFLOW_SCHEME) {
            return subflow::call(&self.env, call, self.child_budget).await;
        }
        match self.post(call).await {
            Ok(outcome) | Err(Trouble::Failed(outcome)) => outcome,
            Err(Trouble::Error(error)) => CallOutcome::Failed {
                status: None,
                error,
                code: None,
            },
            Err(Trouble::Network(said)) => {
                let (code, error) = outbound::classify(&call.url, &said);
                failed(None, error, code)
            }
        }
    }
}

fn excerpt(text: &str) -> String {
    let mut end = text.len().min(ERROR_EXCERPT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// Sends final callbacks: the answer's status is all that matters, so the
/// body is not read.
pub struct HttpNotifier {
    pub timeout_ms: u64,
    /// For a sub-workflow's run, whose end resumes its parent's wait.
    pub env: Env,
}

impl Notifier for HttpNotifier {
    async fn deliver(&self, url: &str, headers: &[(&str, String)], body: &str) -> DeliveryOutcome {
        if url.starts_with(PARENT_SCHEME) {
            return subflow::notify_parent(&self.env, url, body).await;
        }
        let started = now_ms();
        let elapsed = || now_ms().saturating_sub(started);
        let sending = async {
            let h = Headers::new();
            for (name, value) in headers {
                h.set(name, value)?;
            }
            let mut init = RequestInit::new();
            // A redirect is answered, not followed (its target never passed
            // the checks the URL did): a 3xx is a failed attempt.
            init.with_method(Method::Post)
                .with_headers(h)
                .with_redirect(RequestRedirect::Manual)
                .with_body(Some(body.to_string().into()));
            let request = Request::new_with_init(url, &init)?;
            Fetch::Request(request).send().await
        };
        let timeout = Delay::from(Duration::from_millis(self.timeout_ms));
        match select(Box::pin(sending), Box::pin(timeout)).await {
            Either::Left((Ok(response), _)) => DeliveryOutcome::Answered {
                status: response.status_code(),
                duration_ms: elapsed(),
            },
            Either::Left((Err(e), _)) => {
                let (code, error) = outbound::classify(url, &e.to_string());
                DeliveryOutcome::Failed {
                    error,
                    code: Some(code),
                    duration_ms: elapsed(),
                }
            }
            Either::Right(_) => {
                let (code, error) = outbound::timed_out(self.timeout_ms);
                DeliveryOutcome::Failed {
                    error,
                    code: Some(code),
                    duration_ms: elapsed(),
                }
            }
        }
    }
}
