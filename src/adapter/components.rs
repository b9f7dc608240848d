//! Component calls over `fetch`, each with a signed callback URL and a timeout.

use std::time::Duration;

use futures::future::{select, Either};
use serde_json::Value;
use worker::{AbortController, Delay, Fetch, Headers, Method, Request, RequestInit};

use crate::core::callback::sign;
use crate::core::driver::Components;
use crate::core::executor::{Call, CallOutcome};

/// Longest excerpt of a failing component's body kept in the error.
const ERROR_EXCERPT: usize = 200;

pub struct HttpComponents<'a> {
    pub run_id: &'a str,
    pub base_url: &'a str,
    pub secret: &'a str,
    pub timeout_ms: u64,
}

impl HttpComponents<'_> {
    pub fn callback_url(&self, wait_id: &str, expires_at: u64) -> String {
        let token = sign(self.secret.as_bytes(), self.run_id, wait_id, expires_at);
        format!(
            "{}/callbacks/{}/{}?token={}",
            self.base_url, self.run_id, wait_id, token
        )
    }

    async fn post(&self, call: &Call) -> Result<CallOutcome, String> {
        let mut input = call.input.clone();
        input.insert(
            "callback_url".into(),
            Value::String(self.callback_url(&call.wait_id, call.expires_at)),
        );
        let body = serde_json::to_string(&input).map_err(|e| e.to_string())?;
        let headers = Headers::new();
        headers
            .set("content-type", "application/json")
            .map_err(|e| e.to_string())?;
        headers
            .set("accept", "application/json")
            .map_err(|e| e.to_string())?;
        let mut init = RequestInit::new();
        init.with_method(Method::Post)
            .with_headers(headers)
            .with_body(Some(body.into()));
        let request = Request::new_with_init(&call.url, &init).map_err(|e| e.to_string())?;
        let controller = AbortController::default();
        let signal = controller.signal();
        let fetch = Fetch::Request(request);
        let sending = Box::pin(fetch.send_with_signal(&signal));
        let timeout = Box::pin(Delay::from(Duration::from_millis(self.timeout_ms)));
        let mut response = match select(sending, timeout).await {
            Either::Left((result, _)) => result.map_err(|e| format!("request failed: {e}"))?,
            Either::Right(_) => {
                controller.abort();
                return Ok(CallOutcome::Failed {
                    status: None,
                    error: format!("timed out after {} ms", self.timeout_ms),
                });
            }
        };
        let status = response.status_code();
        let text = response
            .text()
            .await
            .map_err(|e| format!("reading the response failed: {e}"))?;
        if !(200..300).contains(&status) {
            return Ok(CallOutcome::Failed {
                status: Some(status),
                error: format!("component answered HTTP {status}: {}", excerpt(&text)),
            });
        }
        match serde_json::from_str::<Value>(&text) {
            Ok(v) => Ok(CallOutcome::Answered(v)),
            Err(_) => Ok(CallOutcome::Failed {
                status: Some(status),
                error: format!(
                    "component answered with something other than JSON: {}",
                    excerpt(&text)
                ),
            }),
        }
    }
}

impl Components for HttpComponents<'_> {
    async fn call(&self, call: &Call) -> CallOutcome {
        self.post(call)
            .await
            .unwrap_or_else(|error| CallOutcome::Failed {
                status: None,
                error,
            })
    }
}

fn excerpt(text: &str) -> String {
    let mut end = text.len().min(ERROR_EXCERPT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}
