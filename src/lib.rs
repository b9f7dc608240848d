//! arcrun: a resumable workflow engine for Cloudflare Workers.
//!
//! `core` is plain Rust (graph, validation, templating, run state machine);
//! `adapter` binds it to Workers (routes, KV, Durable Objects, fetch, clock).

pub mod core;

/// The API documents (OpenAPI, graph schema), generated from the types.
pub mod apidoc;

/// The deterministic simulation of gates under crashes and races: a test
/// instrument, built natively only.
#[cfg(not(target_arch = "wasm32"))]
pub mod sim;

#[cfg(target_arch = "wasm32")]
mod adapter;
