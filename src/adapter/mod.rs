//! Everything that knows about Workers: routing, configuration, KV, the
//! per-run Durable Object, outbound fetch, the clock and randomness.
//!
//! The modules import one another without a circle (`tests/architecture.rs`
//! checks it): the entry points and `routes` at the top, the routes'
//! handlers (`mcp`, `catalog`, `trigger`, `cors`) below them, then the
//! run's gate and what it reaches (`components`, `subflow`, `store`,
//! `claims`), and at the bottom what everything uses (`gate_stub`,
//! `config`, `ops`, `http`, `runtime`).

mod catalog;
mod claims;
mod components;
mod config;
mod cors;
mod gate;
mod gate_stub;
mod http;
mod mcp;
mod ops;
mod routes;
mod runtime;
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
