//! Everything that knows about Workers: routing, configuration, KV, the
//! per-run Durable Object, outbound fetch, the clock and randomness.

mod catalog;
mod claims;
mod components;
mod config;
mod cors;
mod gate;
mod http;
mod mcp;
mod routes;
mod store;
mod subflow;
mod trigger;

use worker::{event, Context, Env, Request, Response, Result};

#[event(start)]
fn start() {
    console_error_panic_hook::set_once();
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    Ok(routes::handle(req, env).await)
}

/// Milliseconds since the Unix epoch, from the runtime's clock.
pub(crate) fn now_ms() -> u64 {
    worker::Date::now().as_millis()
}

/// A fresh unguessable identifier (128 bits, hex).
pub(crate) fn random_id() -> std::result::Result<String, getrandom::Error> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes)?;
    Ok(crate::core::auth::encode_hex(&bytes))
}
