//! CORS for browsers: origins in `ALLOWED_ORIGINS` get preflight answers and
//! `Access-Control-Allow-*` headers on every answer; a preflight from any
//! other origin is refused. Requests without an `Origin` are not browsers'
//! cross-origin calls and are answered as they are.

use serde_json::json;
use worker::{Env, Headers, Request, Response};

use super::config::Config;
use super::http::{json_response, ApiError};
use super::ops::KvOps;

/// Where a browser request comes from, as far as CORS is concerned.
pub(super) enum Origin {
    Allowed(String),
    Refused,
}

/// The request's `Origin`, if it sent one, checked against `ALLOWED_ORIGINS`.
pub(super) fn allowed_origin(req: &Request, env: &Env) -> Option<Origin> {
    let origin = req.headers().get("origin").ok().flatten()?;
    let allowed = Config::from_env(env)
        .map(|c| c.allowed_origins)
        .unwrap_or_default();
    let ok = allowed.iter().any(|a| a == "*" || *a == origin);
    Some(if ok {
        Origin::Allowed(origin)
    } else {
        Origin::Refused
    })
}

const CORS_METHODS: &str = "GET, HEAD, POST, PUT, DELETE, OPTIONS";
const CORS_HEADERS: &str = "authorization, content-type, x-arcrun-api-key, idempotency-key";
const CORS_EXPOSED: &str =
    "x-arcrun-kv-ops, x-arcrun-do-ops, idempotent-replayed, deprecation, link";

/// An `OPTIONS` request: a preflight from an allowed origin is answered with
/// what it may send; from any other origin it is refused.
pub(super) fn preflight(origin: Option<Origin>) -> Response {
    let Some(Origin::Allowed(origin)) = origin else {
        let refused = ApiError::Forbidden(
            "this origin may not call the API from a browser (ALLOWED_ORIGINS)".into(),
        )
        .into_response();
        let _ = refused
            .headers()
            .set(KvOps::HEADER, &KvOps::default().header_value());
        return refused;
    };
    let response = Response::empty()
        .map(|r| r.with_status(204))
        .unwrap_or_else(|_| json_response(204, &json!({})));
    let headers = response.headers();
    let _ = headers.set("access-control-allow-origin", &origin);
    let _ = headers.set("access-control-allow-methods", CORS_METHODS);
    let _ = headers.set("access-control-allow-headers", CORS_HEADERS);
    let _ = headers.set("access-control-max-age", "600");
    let _ = headers.set("vary", "Origin");
    let _ = headers.set(KvOps::HEADER, &KvOps::default().header_value());
    response
}

/// The answer with CORS headers for an allowed origin (rebuilt: an answer
/// relayed from a gate has headers that cannot be changed).
pub(super) async fn with_cors(mut response: Response, origin: &str) -> Response {
    let status = response.status_code();
    let headers = Headers::new();
    for (name, value) in response.headers().entries() {
        let _ = headers.set(&name, &value);
    }
    let _ = headers.set("access-control-allow-origin", origin);
    let _ = headers.set("access-control-expose-headers", CORS_EXPOSED);
    let _ = headers.set("vary", "Origin");
    let text = response.text().await.unwrap_or_default();
    match Response::ok(text) {
        Ok(r) => r.with_status(status).with_headers(headers),
        Err(_) => response,
    }
}
